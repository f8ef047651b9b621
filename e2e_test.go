package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// ackLoop makes c behave like a working device: it answers every command
// it receives with "ack <id> ok <state>".
func ackLoop(t *testing.T, c *client, id string, states map[string]string) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-done:
				return
			case m := <-c.msgs:
				f := strings.Fields(m)
				if len(f) >= 3 && f[0] == "todevice/"+id {
					if st, ok := states[f[1]]; ok {
						c.c.Publish("toserver", 1, false, "ack "+f[2]+" ok "+st).WaitTimeout(5 * time.Second)
					}
				}
			}
		}
	}()
	return func() { close(done); wg.Wait() }
}

var lockStates = map[string]string{"lock": "locked", "unlock": "unlocked"}

// roundTripTTL gives commands 30 s to live instead of the harness's 3 s:
// for tests whose commands must be answered, so that a busy machine does
// not turn a slow round trip into an expiry. Tests of expiry keep 3 s.
func roundTripTTL(c *config) { c.CommandTTL = 30 * time.Second }

func TestLockRoundTrip(t *testing.T) {
	s := startServerWith(t, "", roundTripTTL)
	secret := s.createDevice("door", "lock")
	dev := s.device("door", secret, "lock")
	phone := s.appClient("phone")

	type answer struct {
		status int
		body   []byte
	}
	res := make(chan answer, 1)
	go func() {
		st, b := s.api("POST", "/api/v1/devices/door/lock?wait=5s", "", nil)
		res <- answer{st, b}
	}()
	cmdMsg := dev.expect("todevice/door lock ")
	f := strings.Fields(cmdMsg)
	if len(f) != 4 {
		t.Fatalf("command %q: want 'lock <id> <not-after>'", cmdMsg)
	}
	cmdID := f[2]
	notAfter, err := strconv.ParseInt(f[3], 10, 64)
	if err != nil {
		t.Fatalf("not-after %q: %v", f[3], err)
	}
	if d := time.Until(time.Unix(notAfter, 0)); d <= 0 || d > 31*time.Second {
		t.Errorf("not-after is %s from now, want within the 30s ttl", d)
	}
	dev.publish("toserver", false, "ack "+cmdID+" ok locked")

	a := <-res
	if a.status != http.StatusOK {
		t.Fatalf("lock: status %d %s", a.status, a.body)
	}
	var cmd commandJSON
	json.Unmarshal(a.body, &cmd)
	if cmd.ID != cmdID || cmd.Status != "done" || cmd.State != "locked" || cmd.By != "admin" || cmd.Via != "rest" {
		t.Errorf("command = %+v", cmd)
	}
	if cmd.NotAfter.Unix() != notAfter {
		t.Errorf("device told not-after %d, the command says %s", notAfter, cmd.NotAfter)
	}
	phone.expect("toapp/admin lock_response " + cmdID + " door 0 locked")

	var d deviceJSON
	s.apiJSON("GET", "/api/v1/devices/door", nil, http.StatusOK, &d)
	if d.State != "locked" || !d.Online || d.Firmware != "1.0" || d.LastSeen.IsZero() {
		t.Errorf("device = %+v", d)
	}
	s.apiJSON("GET", "/api/v1/commands/"+cmdID, nil, http.StatusOK, &cmd)
	if cmd.Status != "done" {
		t.Errorf("GET command status %q", cmd.Status)
	}
	var types []string
	for _, e := range s.events("device=door") {
		if e.Command == cmdID {
			types = append(types, e.Type)
		}
	}
	if strings.Join(types, ",") != "ack,command" {
		t.Errorf("command events newest first = %v, want ack,command", types)
	}

	// The welcome now carries the desired state.
	dev.publish("toserver", false, "hand_shake lock 1.1")
	if m := dev.expect("todevice/door welcome "); !strings.HasSuffix(m, " locked") {
		t.Errorf("welcome after lock = %q, want desired locked", m)
	}
}

func TestCommandOutcomes(t *testing.T) {
	s := startServer(t, "")
	secret := s.createDevice("door", "lock")
	s.createDevice("away", "lock")
	s.createDevice("lamp", "light")
	dev := s.device("door", secret, "lock")
	phone := s.appClient("phone")

	t.Run("Failed", func(t *testing.T) {
		res := make(chan commandJSON, 1)
		go func() {
			var c commandJSON
			s.apiJSON("POST", "/api/v1/devices/door/unlock?wait=5s", nil, http.StatusOK, &c)
			res <- c
		}()
		id := strings.Fields(dev.expect("todevice/door unlock "))[2]
		dev.publish("toserver", false, "ack "+id+" failed jammed bolt stuck")
		c := <-res
		if c.Status != "failed" || c.State != "jammed" || c.Reason != "bolt stuck" {
			t.Errorf("command = %+v", c)
		}
		phone.expect("toapp/admin lock_response " + id + " door 1 jammed")
		// An unlock is never a desired state.
		dev.publish("toserver", false, "hand_shake lock")
		if m := dev.expect("todevice/door welcome "); !strings.HasSuffix(m, " none") {
			t.Errorf("welcome after unlock = %q, want desired none", m)
		}
	})
	t.Run("Pending", func(t *testing.T) {
		var c commandJSON
		s.apiJSON("POST", "/api/v1/devices/door/lock?wait=0s", nil, http.StatusAccepted, &c)
		if c.Status != "sent" || c.ID == "" {
			t.Fatalf("command = %+v", c)
		}
		id := strings.Fields(dev.expect("todevice/door lock "))[2]
		if id != c.ID {
			t.Fatalf("device got %s, API said %s", id, c.ID)
		}
		dev.publish("toserver", false, "ack "+id+" ok locked")
		deadline := time.Now().Add(5 * time.Second)
		for c.Status == "sent" && time.Now().Before(deadline) {
			s.apiJSON("GET", "/api/v1/commands/"+id, nil, http.StatusOK, &c)
		}
		if c.Status != "done" {
			t.Errorf("after ack status %q", c.Status)
		}
	})
	t.Run("Expired", func(t *testing.T) {
		var c commandJSON
		s.apiJSON("POST", "/api/v1/devices/door/unlock?wait=10s", nil, http.StatusOK, &c)
		if c.Status != "expired" {
			t.Fatalf("unanswered command status %q, want expired", c.Status)
		}
		dev.expect("todevice/door unlock " + c.ID)
		phone.expect("toapp/admin lock_response " + c.ID + " door 1 ") // with the last known state
		// A late ack is recorded but does not change the command.
		dev.publish("toserver", false, "ack "+c.ID+" ok unlocked")
		var d deviceJSON
		deadline := time.Now().Add(5 * time.Second)
		for d.State != "unlocked" && time.Now().Before(deadline) {
			s.apiJSON("GET", "/api/v1/devices/door", nil, http.StatusOK, &d)
		}
		if d.State != "unlocked" {
			t.Errorf("device state after late ack %q", d.State)
		}
		s.apiJSON("GET", "/api/v1/commands/"+c.ID, nil, http.StatusOK, &c)
		if c.Status != "expired" {
			t.Errorf("late ack changed status to %q", c.Status)
		}
	})
	t.Run("Offline", func(t *testing.T) {
		before := len(s.events("type=command&limit=1000"))
		st, body := s.api("POST", "/api/v1/devices/away/lock", "", nil)
		if st != http.StatusConflict || !strings.Contains(string(body), `"code":"conflict"`) {
			t.Errorf("offline lock: %d %s", st, body)
		}
		if after := len(s.events("type=command&limit=1000")); after != before {
			t.Errorf("offline lock queued a command: %d → %d command events", before, after)
		}
	})
	t.Run("WrongVerb", func(t *testing.T) {
		if st, body := s.api("POST", "/api/v1/devices/door/on", "", nil); st != http.StatusBadRequest {
			t.Errorf("on for a lock: %d %s", st, body)
		}
		if st, body := s.api("POST", "/api/v1/devices/door/explode", "", nil); st != http.StatusNotFound {
			t.Errorf("unknown verb: %d %s", st, body)
		}
		if st, body := s.api("POST", "/api/v1/devices/door/lock?wait=forever", "", nil); st != http.StatusBadRequest {
			t.Errorf("bad wait: %d %s", st, body)
		}
	})
	t.Run("UnknownDevice", func(t *testing.T) {
		if st, body := s.api("POST", "/api/v1/devices/nosuch/lock", "", nil); st != http.StatusNotFound {
			t.Errorf("unknown device: %d %s", st, body)
		}
		if st, body := s.api("GET", "/api/v1/commands/nosuch", "", nil); st != http.StatusNotFound {
			t.Errorf("unknown command: %d %s", st, body)
		}
	})
}

func TestLockAll(t *testing.T) {
	s := startServerWith(t, "", roundTripTTL)
	for _, id := range []string{"front", "back", "garage"} {
		secret := s.createDevice(id, "lock")
		if id != "garage" { // garage stays offline
			d := s.device(id, secret, "lock")
			t.Cleanup(ackLoop(t, d, id, lockStates))
		}
	}
	s.createDevice("lamp", "light")

	check := func(t *testing.T, path string) {
		var l struct {
			Items []map[string]any `json:"items"`
		}
		s.apiJSON("POST", path+"?wait=5s", nil, http.StatusOK, &l)
		got := map[string]string{}
		for _, it := range l.Items {
			got[it["device"].(string)] = it["status"].(string)
			if it["status"] == "offline" && len(it) != 2 {
				t.Errorf("offline item %v: want only device and status", it)
			}
		}
		want := map[string]string{"front": "done", "back": "done", "garage": "offline"}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%s: %v, want %v", path, got, want)
		}
	}
	t.Run("API", func(t *testing.T) { check(t, "/api/v1/lock") })
	t.Run("Prototype", func(t *testing.T) { check(t, "/unlock") })
	t.Run("Test", func(t *testing.T) {
		st, body := s.api("POST", "/test", "", map[string]string{"name": "lock"})
		if st != http.StatusOK || string(body) != "1" {
			t.Errorf("/test with an offline lock: %d %q, want 1", st, body)
		}
		s.apiJSON("DELETE", "/api/v1/devices/garage", nil, http.StatusNoContent, nil)
		st, body = s.api("POST", "/test", "", map[string]string{"name": "unlock"})
		if st != http.StatusOK || string(body) != "0" {
			t.Errorf("/test with every lock answering: %d %q, want 0", st, body)
		}
		// Any other name is "not done" (DESIGN §11), and sends nothing.
		before := len(s.events("type=command&limit=1000"))
		for _, name := range []string{"open", "", "LOCK"} {
			if st, body := s.api("POST", "/test", "", map[string]string{"name": name}); st != http.StatusOK || string(body) != "1" {
				t.Errorf("/test name %q: %d %q, want 200 1", name, st, body)
			}
		}
		if n := len(s.events("type=command&limit=1000")); n != before {
			t.Errorf("/test with other names sent %d commands", n-before)
		}
		if st, body := s.api("POST", "/test", "", "not json"); st != http.StatusBadRequest {
			t.Errorf("/test with a body that is not JSON: %d %s", st, body)
		}
	})
}

func TestAppCommandsOverMQTT(t *testing.T) {
	s := startServerWith(t, "", roundTripTTL)
	door := s.device("door", s.createDevice("door", "lock"), "lock")
	lamp := s.device("lamp", s.createDevice("lamp", "light"), "light")
	phone := s.appClient("phone")

	phone.publish("toserver", false, "lock door")
	id := strings.Fields(door.expect("todevice/door lock "))[2]
	door.publish("toserver", false, "ack "+id+" ok locked")
	phone.expect("toapp/admin lock_response " + id + " door 0 locked")

	phone.publish("toserver", false, "on lamp")
	id = strings.Fields(lamp.expect("todevice/lamp on "))[2]
	lamp.publish("toserver", false, "ack "+id+" ok on")
	phone.expect("toapp/admin lock_response " + id + " lamp 0 on")

	phone.publish("toserver", false, "unlock") // no id: every lock
	door.expect("todevice/door unlock ")
	lamp.quiet(200 * time.Millisecond)

	phone.publish("toserver", false, "lock nosuch")
	phone.expect(`toapp/admin error device "nosuch" not found`)
	phone.publish("toserver", false, "on")
	phone.expect("toapp/admin error usage: on <device-id>")

	// Devices do not command devices.
	door.publish("toserver", false, "unlock door")
	door.expect("todevice/door error only people can send commands")
}

// TestPrototypeAppWords: the prototype's shipped app publishes
// `lock|unlock <device> <app> <datetime>`; the words after the device id are
// ignored and the sender's grants decide, as for `unlock <device>`.
func TestPrototypeAppWords(t *testing.T) {
	s := startServerWith(t, "", roundTripTTL)
	door := s.device("door1", s.createDevice("door1", "lock"), "lock")
	lamp := s.device("lamp1", s.createDevice("lamp1", "light"), "light")
	alice := s.createUser("alice", "member")
	mallory := s.createUser("mallory", "member")
	s.grant(map[string]any{"user": "alice", "device": "door1"})
	s.grant(map[string]any{"user": "alice", "device": "lamp1"})
	ap := s.connect("alice-phone", "alice", alice)
	ap.subscribe("toapp/alice")
	mp := s.connect("mallory-phone", "mallory", mallory)
	mp.subscribe("toapp/mallory")

	for _, verb := range []string{"unlock", "lock"} {
		ap.publish("toserver", false, verb+" door1 myapp 2026-12-02T10:00:00")
		id := strings.Fields(door.expect("todevice/door1 " + verb + " "))[2]
		state := map[string]string{"lock": "locked", "unlock": "unlocked"}[verb]
		door.publish("toserver", false, "ack "+id+" ok "+state)
		ap.expect("toapp/alice lock_response " + id + " door1 0 " + state)
	}
	ap.publish("toserver", false, "on lamp1 myapp 2026-12-02T10:00:00")
	lamp.expect("todevice/lamp1 on ")

	// Without a grant the same words are refused, and nothing reaches the door.
	mp.publish("toserver", false, "unlock door1 myapp 2026-12-02T10:00:00")
	mp.expect("toapp/mallory error ")
	mp.publish("toserver", false, "off lamp1 myapp 2026-12-02T10:00:00")
	mp.expect("toapp/mallory error ")
	var cmds []eventJSON
	for _, e := range s.events("type=command&limit=100") {
		if e.User == "mallory" {
			cmds = append(cmds, e)
		}
	}
	if len(cmds) != 0 {
		t.Errorf("mallory's refused words made commands: %+v", cmds)
	}
}

func TestSessionTakeover(t *testing.T) {
	s := startServerWith(t, "", roundTripTTL)
	secret := s.createDevice("door", "lock")
	first := s.device("door", secret, "lock")
	second := s.device("door", secret, "lock") // same client id: takes over
	select {
	case <-first.lost:
	case <-time.After(5 * time.Second):
		t.Fatal("first connection not taken over")
	}
	var d deviceJSON
	s.apiJSON("GET", "/api/v1/devices/door", nil, http.StatusOK, &d)
	if !d.Online {
		t.Fatal("device offline after session takeover")
	}
	for _, e := range s.events("device=door") {
		if e.Type == "offline" {
			t.Fatalf("takeover recorded an offline event: %+v", e)
		}
	}
	// The new session works.
	go s.api("POST", "/api/v1/devices/door/lock?wait=0s", "", nil)
	second.expect("todevice/door lock ")

	second.c.Disconnect(100)
	deadline := time.Now().Add(5 * time.Second)
	for d.Online && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
		s.apiJSON("GET", "/api/v1/devices/door", nil, http.StatusOK, &d)
	}
	if d.Online {
		t.Error("device still online after its last connection closed")
	}
}

func TestRestartKeepsState(t *testing.T) {
	dir := t.TempDir()
	s := startServer(t, dir)
	secret := s.createDevice("door", "lock")
	dev := s.device("door", secret, "lock")
	dev.publish("toserver", false, "state jammed")
	var pending commandJSON
	s.apiJSON("POST", "/api/v1/devices/door/unlock?wait=0s", nil, http.StatusAccepted, &pending)
	dev.expect("todevice/door unlock " + pending.ID)
	before := s.events("limit=1000")
	s.stop()

	s2 := startServer(t, dir)
	var d deviceJSON
	s2.apiJSON("GET", "/api/v1/devices/door", nil, http.StatusOK, &d)
	if d.State != "jammed" || d.Firmware != "1.0" || d.Online {
		t.Errorf("device after restart = %+v", d)
	}
	var c commandJSON
	s2.apiJSON("GET", "/api/v1/commands/"+pending.ID, nil, http.StatusOK, &c)
	if c.Status != "expired" {
		t.Errorf("pending command after restart: %q, want expired", c.Status)
	}
	after := s2.events("limit=1000")
	if len(after) <= len(before) {
		t.Fatalf("events after restart %d, before %d", len(after), len(before))
	}
	ids := map[string]bool{}
	for _, e := range after {
		ids[e.ID] = true
	}
	for _, e := range before {
		if !ids[e.ID] {
			t.Errorf("event %+v lost in restart", e)
		}
	}
	if e := after[0]; e.Type != "command" || e.Command != pending.ID || !strings.Contains(e.Detail, "expired") {
		t.Errorf("newest event after restart = %+v, want the command's expiry", e)
	}
	// The secret still works and the old admin token too; the late ack of
	// the expired unlock does not revive it.
	dev2 := s2.device("door", secret, "lock")
	dev2.publish("toserver", false, "ack "+pending.ID+" ok unlocked")
	s2.apiJSON("GET", "/api/v1/commands/"+pending.ID, nil, http.StatusOK, &c)
	if c.Status != "expired" {
		t.Errorf("late ack after restart changed status to %q", c.Status)
	}
}

func TestMalformedPayloads(t *testing.T) {
	s := startServerWith(t, "", roundTripTTL)
	dev := s.device("door", s.createDevice("door", "lock"), "lock")
	phone := s.appClient("phone")
	cases := []struct {
		name    string
		payload []byte
		reply   string
	}{
		{"Empty", nil, "error empty payload"},
		{"Binary", bytes.Repeat([]byte{0xff, 0x00, 0x13}, 100*1024/3), "error payload must start with an action name"},
		{"InvalidUTF8", []byte("state \xff\xfe"), "error payload is not UTF-8 text"},
		{"UnknownWord", []byte("explode now"), `error unknown action "explode"`},
		{"MissingArgs", []byte("ack"), "error usage: ack"},
		{"BadState", []byte("state melted"), `error "melted" is not a state of a lock`},
		{"LongText", append([]byte("state "), bytes.Repeat([]byte("a"), 10000)...), "error payload longer than"},
		{"WordOnly", []byte("state"), "error usage: state <state>"},
		{"UnknownCommand", []byte("ack 0123456789abcdef ok locked"), `error unknown command "0123456789abcdef"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dev.publish("toserver", false, tc.payload)
			dev.expect("todevice/door " + tc.reply)
		})
	}
	// The app hears the same kind of error on its own topic.
	phone.publish("toserver", false, []byte{0, 1, 2})
	phone.expect("toapp/admin error payload must start with an action name")

	// And the next round trip still works.
	go s.api("POST", "/api/v1/devices/door/lock?wait=0s", "", nil)
	id := strings.Fields(dev.expect("todevice/door lock "))[2]
	dev.publish("toserver", false, "ack "+id+" ok locked")
	phone.expect("toapp/admin lock_response " + id + " door 0 locked")
	var d deviceJSON
	s.apiJSON("GET", "/api/v1/devices/door", nil, http.StatusOK, &d)
	if d.State != "locked" {
		t.Errorf("state after malformed payloads %q", d.State)
	}
}

func TestPrototypeForms(t *testing.T) {
	s := startServerWith(t, "", roundTripTTL)
	secret := s.createDevice("door", "lock")
	dev := s.connect("door", "door", secret)
	dev.subscribe("todevice/door")
	dev.publish("toserver", false, "add_device")
	dev.expect("todevice/door welcome ")

	res := make(chan commandJSON, 1)
	go func() {
		var c commandJSON
		s.apiJSON("POST", "/api/v1/devices/door/lock?wait=5s", nil, http.StatusOK, &c)
		res <- c
	}()
	dev.expect("todevice/door lock ")
	// The device and app words are the prototype's; the sender is the
	// connection, whatever they say.
	dev.publish("toserver", false, "lock_response 0 otherdoor someapp")
	if c := <-res; c.Status != "done" || c.State != "locked" {
		t.Errorf("lock_response 0 → %+v", c)
	}
	dev.publish("toserver", false, "lock_response 0 door app")
	dev.expect("todevice/door error no command is waiting")

	st, body := s.api("GET", "/hello", "-", nil)
	if st != http.StatusOK || string(body) != "hello" {
		t.Errorf("/hello: %d %q", st, body)
	}
}
