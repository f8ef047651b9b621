package actions_test

import (
	"bytes"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"gatehouse/actions"
)

// fuzzTTL is short enough that commands expire while the fuzzer runs, so
// expiry races with acks, and long enough for most acks to find them sent.
const fuzzTTL = 2 * time.Second

// fuzzSenders are who a fuzz input speaks as, picked by its first argument.
// The pairing login is filled in by FuzzDispatch, which makes its code.
var fuzzSenders = []actions.Principal{
	{Kind: actions.PrincipalDevice, ID: "lock1"},  // 0: online lock, admin's
	{Kind: actions.PrincipalDevice, ID: "light1"}, // 1: online light
	{Kind: actions.PrincipalDevice, ID: "cam1"},   // 2: online camera
	{Kind: actions.PrincipalDevice, ID: "lockB"},  // 3: online lock granted to bob
	{Kind: actions.PrincipalUser, ID: "admin", Role: actions.RoleAdmin},
	{Kind: actions.PrincipalUser, ID: "bob", Role: actions.RoleMember},
	{Kind: actions.PrincipalUser, ID: "gus", Role: actions.RoleGuest}, // 6: granted lockG now
	{Kind: actions.PrincipalDevice, ID: "ghost"},                      // 7: not in the store
	{Kind: actions.PrincipalPair, ID: "newdev"},                       // 8: pairing login
}

// cmdPlaceholder in a fuzz payload is replaced by the id of the last command
// sent, so that acks can reach real commands.
const cmdPlaceholder = "$CMD"

// FuzzDispatch feeds payloads to Dispatch from devices, people and a pairing
// login, against a real store, and checks after each one that nothing was
// published where the sender may not reach and that the stored state is
// still valid.
func FuzzDispatch(f *testing.F) {
	seeds := []struct {
		who      uint8
		payloads []string
	}{
		// The admin first, so that the devices' acks find commands.
		{4, []string{
			"lock lock1", "unlock lock1", "lock", "unlock", "lock all", "unlock all", "on light1", "off light1",
			"on lock1", "off", "on all", "lock lock1 lockB", "lock nope", "lock cam1", "hand_shake lock",
			"ack " + cmdPlaceholder + " ok locked", "state locked", "lock_response 0", "frobnicate", "LOCK",
			"", " ", "lock  lock1", "lock\tlock1", "unlock \xff", strings.Repeat("a", 33), "x" + strings.Repeat(" y", 3000),
		}},
		{0, []string{
			"hand_shake lock", "hand_shake lock 1.0.2 Front door", "hand_shake light", "hand_shake", "add_device",
			"add_device lock 2.0", "ack " + cmdPlaceholder + " ok locked", "ack " + cmdPlaceholder + " failed jammed motor",
			"ack " + cmdPlaceholder + " ok on", "ack " + cmdPlaceholder, "ack 0123456789abcdef ok locked",
			"lock_response 0 lock1 admin", "lock_response 1", "lock_response", "state jammed", "state on", "state",
			"state locked unlocked", "lock lock1", "unlock all", "find_stranger 1700000000 \xff\xd8\xff\xe0",
			"hand_shake lock \xc3\xa9\xc3\xa9 n\x01me",
		}},
		{1, []string{"hand_shake light 3.1", "state on", "state off", "state locked", "ack " + cmdPlaceholder + " ok on", "lock_response 0"}},
		{2, []string{"hand_shake camera", "state on", "find_stranger \x89PNG\r\n\x1a\n", "ack " + cmdPlaceholder + " ok on"}},
		{3, []string{"hand_shake lock", "ack " + cmdPlaceholder + " ok unlocked", "lock_response 0 lock1 admin", "state open"}},
		{5, []string{"unlock lockB", "lock", "unlock all", "unlock lock1", "on light1", "lock lockG", "hand_shake lock"}},
		{6, []string{"unlock lockG", "unlock", "lock all", "unlock lock1", "off light1"}},
		{7, []string{"hand_shake lock", "ack " + cmdPlaceholder + " ok locked", "state locked", "lock_response 0"}},
		{8, []string{"hand_shake lock 1.0 New lock", "hand_shake light", "hand_shake", "add_device", "lock all", "ack " + cmdPlaceholder + " ok locked", "state locked"}},
	}
	for _, s := range seeds {
		for _, p := range s.payloads {
			f.Add(s.who, []byte(p))
		}
	}
	f.Add(uint8(0), bytes.Repeat([]byte{0xff, 0x00}, 50<<10))
	f.Add(uint8(4), append([]byte("lock "), 0xc3))

	e := newEnv(f, fuzzTTL)
	for _, d := range []struct{ id, kind string }{
		{"lock1", actions.KindLock}, {"light1", actions.KindLight}, {"cam1", actions.KindCamera},
		{"lockB", actions.KindLock}, {"lockG", actions.KindLock}, {"lockOff", actions.KindLock},
	} {
		e.newDevice(f, d.id, d.kind)
		if d.id != "lockOff" {
			e.svc.Connected(dev(d.id), remote)
		}
	}
	bob, _ := e.addUser(f, "bob", actions.RoleMember)
	e.addUser(f, "gus", actions.RoleGuest)
	e.grant(f, "bob", "lockB", actions.Grant{})
	e.grant(f, "gus", "lockG", actions.Grant{})
	code, _, err := e.svc.CreatePairing(bob, actions.KindLock)
	if err != nil {
		f.Fatal(err)
	}
	pair, err := e.svc.AuthenticateMQTT("newdev", actions.PairUsername, []byte(code), remote)
	if err != nil {
		f.Fatal(err)
	}
	senders := slices.Clone(fuzzSenders)
	senders[8] = pair
	e.pub.take()

	var lastCmd string
	var recent []string // ids of commands sent by recent inputs

	f.Fuzz(func(t *testing.T, who uint8, payload []byte) {
		sender := senders[int(who)%len(senders)]
		if lastCmd != "" {
			payload = bytes.ReplaceAll(payload, []byte(cmdPlaceholder), []byte(lastCmd))
		}
		e.pub.take()
		err := e.svc.Dispatch(sender, actions.ViaMQTT, payload)
		if actions.ErrorCode(err) == actions.EInternal {
			t.Errorf("Dispatch(%v, %q): internal error %v", sender, trimmed(payload), err)
		}
		devices := fuzzDevices(t, e)
		for _, m := range e.pub.take() {
			if id := checkPublished(t, e, sender, devices, m); id != "" {
				lastCmd = id
				recent = append(recent, id)
			}
		}
		if len(recent) > 64 {
			recent = recent[len(recent)-64:]
		}
		checkStored(t, e, devices, recent)
	})
}

func trimmed(b []byte) []byte {
	if len(b) > 64 {
		return b[:64]
	}
	return b
}

func fuzzDevices(t *testing.T, e *env) map[string]actions.Device {
	t.Helper()
	all, err := e.svc.Devices(e.admin)
	if err != nil {
		t.Fatalf("Devices: %v", err)
	}
	out := map[string]actions.Device{}
	for _, d := range all {
		out[d.ID] = d
	}
	return out
}

// replyTopicOf is where sender hears back.
func replyTopicOf(p actions.Principal) string {
	if p.Kind == actions.PrincipalUser {
		return actions.AppTopic(p.ID)
	}
	return actions.DeviceTopic(p.ID)
}

// mayUse reports whether user holds a grant for device now (the fuzz grants
// have no window), or is the admin.
func mayUse(t *testing.T, e *env, user, device string) bool {
	t.Helper()
	if user == "admin" {
		return true
	}
	grants, err := e.svc.Grants(e.admin)
	if err != nil {
		t.Fatalf("Grants: %v", err)
	}
	for _, g := range grants {
		if g.User == user && g.Device == device {
			return true
		}
	}
	return false
}

// checkPublished fails t unless m went where sender's message may lead, and
// returns the command id when m is a command to a device.
func checkPublished(t *testing.T, e *env, sender actions.Principal, devices map[string]actions.Device, m published) (cmdID string) {
	t.Helper()
	if !utf8.ValidString(m.Payload) {
		t.Errorf("published invalid UTF-8 %v", m)
	}
	words := strings.Fields(m.Payload)
	if len(words) == 0 {
		t.Fatalf("published an empty payload to %s", m.Topic)
	}
	switch {
	case m.Topic == replyTopicOf(sender):
		if sender.Kind == actions.PrincipalUser {
			break // the sender's own notifications come here too
		}
		switch words[0] {
		case "error", "welcome":
		case "credentials":
			if sender.Kind != actions.PrincipalPair || len(words) != 3 || words[1] != sender.ID {
				t.Errorf("%v got %v", sender, m)
			}
		default:
			t.Errorf("reply %v to %v", m, sender)
		}
	case strings.HasPrefix(m.Topic, "toapp/"):
		user := strings.TrimPrefix(m.Topic, "toapp/")
		var device string
		switch {
		case words[0] == "lock_response" && len(words) == 5:
			device = words[2]
		case (words[0] == "state" || words[0] == "online" || words[0] == "offline") && len(words) >= 2:
			device = words[1]
		default:
			t.Fatalf("notification %v is none of lock_response, state, online, offline", m)
		}
		if !mayUse(t, e, user, device) {
			t.Errorf("notification %v to a user who may not see %s", m, device)
		}
	case strings.HasPrefix(m.Topic, "todevice/") && sender.Kind == actions.PrincipalUser:
		device := strings.TrimPrefix(m.Topic, "todevice/")
		c := commandRE.FindStringSubmatch(m.Payload)
		if c == nil {
			t.Fatalf("%v sent %v, not a command", sender, m)
		}
		d, ok := devices[device]
		if !ok {
			t.Fatalf("command %v to a device not in the store", m)
		}
		if !validVerb(d.Kind, c[1]) {
			t.Errorf("command %v to a %s", m, d.Kind)
		}
		if !mayUse(t, e, sender.ID, device) {
			t.Errorf("%v may not operate %s, yet sent %v", sender, device, m)
		}
		if m.TTL <= 0 || m.TTL > fuzzTTL { // what is left of the command's ttl
			t.Errorf("command %v: ttl %s, want at most %s", m, m.TTL, fuzzTTL)
		}
		return c[2]
	default:
		t.Errorf("%v led to %v: not a topic it may reach", sender, m)
	}
	return ""
}

func validVerb(kind, verb string) bool {
	switch kind {
	case actions.KindLock:
		return verb == "lock" || verb == "unlock"
	case actions.KindLight:
		return verb == "on" || verb == "off"
	}
	return false
}

func checkStored(t *testing.T, e *env, devices map[string]actions.Device, recent []string) {
	t.Helper()
	for _, d := range devices {
		if !actions.ValidKind(d.Kind) || !actions.ValidState(d.Kind, d.State) {
			t.Errorf("device %s: kind %q, state %q", d.ID, d.Kind, d.State)
		}
		switch d.Desired {
		case "", "locked", "on", "off":
		default:
			t.Errorf("device %s: desired %q", d.ID, d.Desired)
		}
		if d.Name != "" && (len(d.Name) > 128 || !utf8.ValidString(d.Name)) {
			t.Errorf("device %s: name %q", d.ID, d.Name)
		}
	}
	pending := e.pending(t)
	for _, c := range pending {
		if c.Status != actions.StatusSent {
			t.Errorf("pending command %s has status %q", c.ID, c.Status)
		}
	}
	for _, id := range recent {
		c, err := e.svc.Command(e.admin, id)
		if actions.ErrorCode(err) == actions.ENotFound {
			continue // its device was deleted
		}
		if err != nil {
			t.Fatalf("Command(%s): %v", id, err)
		}
		switch c.Status {
		case actions.StatusSent, actions.StatusDone, actions.StatusFailed, actions.StatusExpired:
		default:
			t.Errorf("command %s: status %q", id, c.Status)
		}
		if c.Status == actions.StatusDone && !actions.ValidState(devices[c.Device].Kind, c.State) {
			t.Errorf("command %s done with state %q", id, c.State)
		}
	}
}
