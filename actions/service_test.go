package actions_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"gatehouse/actions"
	"gatehouse/store"
)

// adminToken is the bootstrap admin's token in every test.
const adminToken = "test-admin-token-0123456789"

// remote is the address tests connect from.
const remote = "192.0.2.7:40000"

// published is one message the service handed to the broker.
type published struct {
	Topic   string
	Payload string
	TTL     time.Duration
}

func (p published) String() string {
	s := p.Payload
	if len(s) > 80 {
		s = s[:80] + "…"
	}
	return fmt.Sprintf("%s %q (ttl %s)", p.Topic, s, p.TTL)
}

// recorder is the network seen from the service: it records what would be
// published and which sessions would be ended. It is safe for concurrent
// use, since expiry timers publish from their own goroutines.
type recorder struct {
	mu          sync.Mutex
	msgs        []published
	disconnects []string // kind/id/token
	err         error    // when set, Publish fails with it
	changed     chan struct{}
	// settle, when set, waits for the service's queued notifications, so
	// that take sees what the calls before it caused.
	settle func()
}

var _ actions.Publisher = (*recorder)(nil)

func newRecorder() *recorder { return &recorder{changed: make(chan struct{})} }

func (r *recorder) Publish(topic string, payload []byte, ttl time.Duration) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err != nil {
		return r.err
	}
	r.msgs = append(r.msgs, published{Topic: topic, Payload: string(payload), TTL: ttl})
	close(r.changed)
	r.changed = make(chan struct{})
	return nil
}

func (r *recorder) Disconnect(p actions.Principal) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.disconnects = append(r.disconnects, p.Kind+"/"+p.ID+"/"+p.Token)
}

func (r *recorder) setErr(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.err = err
}

// take returns the messages published so far and forgets them.
func (r *recorder) take() []published {
	if r.settle != nil {
		r.settle()
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	msgs := r.msgs
	r.msgs = nil
	return msgs
}

func (r *recorder) takeDisconnects() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	d := r.disconnects
	r.disconnects = nil
	return d
}

// waitFor returns the first message, published or still to come, that want
// accepts; it fails tb after a few seconds. Used only for what timers send.
func (r *recorder) waitFor(tb testing.TB, want func(published) bool) published {
	tb.Helper()
	deadline := time.After(5 * time.Second)
	for {
		r.mu.Lock()
		for _, m := range r.msgs {
			if want(m) {
				r.mu.Unlock()
				return m
			}
		}
		changed := r.changed
		r.mu.Unlock()
		select {
		case <-changed:
		case <-deadline:
			tb.Fatalf("no matching message published; have %v", r.snapshot())
		}
	}
}

func (r *recorder) snapshot() []published {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]published(nil), r.msgs...)
}

// clock is the real clock moved forward by advance: the one outside effect
// tests need to control (token and pairing expiry, login throttling).
type clock struct{ offset atomic.Int64 }

func (c *clock) Now() time.Time          { return time.Now().Add(time.Duration(c.offset.Load())) }
func (c *clock) advance(d time.Duration) { c.offset.Add(int64(d)) }

// env is a service on a real store in a temporary directory, with the
// recorder as its broker.
type env struct {
	db    *store.DB
	svc   *actions.Service
	pub   *recorder
	clock *clock
	path  string
	admin actions.Principal
}

// newEnv opens a service on a new store; ttl 0 is the default.
func newEnv(tb testing.TB, ttl time.Duration) *env {
	tb.Helper()
	return openEnv(tb, filepath.Join(tb.TempDir(), "g.db"), ttl)
}

// openEnv opens a service on the store at path, the way main does:
// construct, wire, Open, EnsureAdmin. Both are closed when tb ends.
func openEnv(tb testing.TB, path string, ttl time.Duration) *env {
	tb.Helper()
	return openEnvWith(tb, path, store.Options{}, actions.Config{CommandTTL: ttl})
}

// openEnvWith is openEnv with store options and a service configuration
// (its Store, Now and Location are the environment's).
func openEnvWith(tb testing.TB, path string, opts store.Options, cfg actions.Config) *env {
	tb.Helper()
	db, err := store.OpenWith(path, opts)
	if err != nil {
		tb.Fatalf("store.Open: %v", err)
	}
	tb.Cleanup(func() { db.Close() })
	clk := &clock{}
	cfg.Store, cfg.Now, cfg.Location = db, clk.Now, time.UTC
	svc, err := actions.New(cfg)
	if err != nil {
		tb.Fatalf("actions.New: %v", err)
	}
	tb.Cleanup(svc.Close) // runs before db.Close
	pub := newRecorder()
	pub.settle = svc.Settle
	svc.SetPublisher(pub)
	if err := svc.Open(); err != nil {
		tb.Fatalf("Open: %v", err)
	}
	if _, err := svc.EnsureAdmin(adminToken); err != nil {
		tb.Fatalf("EnsureAdmin: %v", err)
	}
	admin, err := svc.AuthenticateBearer(adminToken, remote)
	if err != nil {
		tb.Fatalf("AuthenticateBearer(admin): %v", err)
	}
	return &env{db: db, svc: svc, pub: pub, clock: clk, path: path, admin: admin}
}

// close stops the service and closes the store, as a shutdown does.
func (e *env) close(tb testing.TB) {
	tb.Helper()
	e.svc.Close()
	if err := e.db.Close(); err != nil {
		tb.Fatalf("store Close: %v", err)
	}
}

func dev(id string) actions.Principal {
	return actions.Principal{Kind: actions.PrincipalDevice, ID: id}
}

// newDevice creates a device as the admin and returns its secret.
func (e *env) newDevice(tb testing.TB, id, kind string) string {
	tb.Helper()
	_, secret, err := e.svc.CreateDevice(e.admin, actions.NewDevice{ID: id, Kind: kind, Name: id})
	if err != nil {
		tb.Fatalf("CreateDevice(%q, %q): %v", id, kind, err)
	}
	return secret
}

// newOnline creates a device and connects it.
func (e *env) newOnline(tb testing.TB, id, kind string) string {
	tb.Helper()
	secret := e.newDevice(tb, id, kind)
	e.svc.Connected(dev(id), remote)
	e.pub.take()
	return secret
}

// addUser creates a person through the API and returns their principal
// and token.
func (e *env) addUser(tb testing.TB, name, role string) (actions.Principal, string) {
	tb.Helper()
	_, tok, secret, err := e.svc.CreateUser(e.admin, name, role)
	if err != nil {
		tb.Fatalf("CreateUser(%q, %q): %v", name, role, err)
	}
	return actions.Principal{Kind: actions.PrincipalUser, ID: name, Role: role, Token: tok.ID}, secret
}

// grant lets user use device through the API; g may hold a window.
func (e *env) grant(tb testing.TB, user, device string, g actions.Grant) actions.Grant {
	tb.Helper()
	g.User, g.Device = user, device
	g, err := e.svc.CreateGrant(e.admin, g)
	if err != nil {
		tb.Fatalf("CreateGrant(%q, %q): %v", user, device, err)
	}
	return g
}

func (e *env) dispatch(p actions.Principal, payload string) error {
	return e.svc.Dispatch(p, actions.ViaMQTT, []byte(payload))
}

func (e *env) device(tb testing.TB, id string) actions.Device {
	tb.Helper()
	d, err := e.svc.Device(e.admin, id)
	if err != nil {
		tb.Fatalf("Device(%q): %v", id, err)
	}
	return d
}

func (e *env) command(tb testing.TB, id string) actions.Command {
	tb.Helper()
	c, err := e.svc.Command(e.admin, id)
	if err != nil {
		tb.Fatalf("Command(%q): %v", id, err)
	}
	return c
}

func (e *env) events(tb testing.TB, q actions.EventQuery) []actions.Event {
	tb.Helper()
	if q.Limit == 0 {
		q.Limit = 1000
	}
	evs, _, err := e.svc.Events(e.admin, q)
	if err != nil {
		tb.Fatalf("Events(%+v): %v", q, err)
	}
	return evs
}

func (e *env) pending(tb testing.TB) []actions.Command {
	tb.Helper()
	var cmds []actions.Command
	if err := e.db.View(func(tx actions.Tx) (err error) { cmds, err = tx.PendingCommands(); return err }); err != nil {
		tb.Fatalf("PendingCommands: %v", err)
	}
	return cmds
}

// send sends verb to device id as the admin and returns the command with
// the message the device got.
func (e *env) send(tb testing.TB, id, verb string) (actions.Command, published) {
	tb.Helper()
	c, err := e.svc.SendCommand(e.admin, id, verb, actions.ViaREST)
	if err != nil {
		tb.Fatalf("SendCommand(%q, %q): %v", id, verb, err)
	}
	msgs := e.pub.take()
	if len(msgs) != 1 {
		tb.Fatalf("SendCommand published %v, want one message", msgs)
	}
	return c, msgs[0]
}

// wait waits at most max for command id to finish.
func (e *env) wait(tb testing.TB, id string, max time.Duration) actions.Command {
	tb.Helper()
	done := make(chan struct{})
	t := time.AfterFunc(max, func() { close(done) })
	defer t.Stop()
	c, err := e.svc.Wait(done, id)
	if err != nil {
		tb.Fatalf("Wait(%q): %v", id, err)
	}
	return c
}

func wantCode(tb testing.TB, err error, want string) {
	tb.Helper()
	if got := actions.ErrorCode(err); got != want {
		tb.Fatalf("error code = %q (%v), want %q", got, err, want)
	}
}

// wantOnly fails tb unless msgs is exactly one message, to topic, whose
// payload starts with prefix; it returns that payload.
func wantOnly(tb testing.TB, msgs []published, topic, prefix string) string {
	tb.Helper()
	if len(msgs) != 1 || msgs[0].Topic != topic || !strings.HasPrefix(msgs[0].Payload, prefix) {
		tb.Fatalf("published %v, want only %s %q…", msgs, topic, prefix)
	}
	return msgs[0].Payload
}

var welcomeRE = regexp.MustCompile(`^welcome (\d+) (\S+)$`)

// handShake sends a hand_shake from lock device id and returns the
// desired state of its welcome.
func (e *env) handShake(tb testing.TB, id, kind string) string {
	tb.Helper()
	if err := e.dispatch(dev(id), "hand_shake "+kind); err != nil {
		tb.Fatalf("hand_shake: %v", err)
	}
	p := wantOnly(tb, e.pub.take(), "todevice/"+id, "welcome ")
	m := welcomeRE.FindStringSubmatch(p)
	if m == nil {
		tb.Fatalf("welcome %q does not match %s", p, welcomeRE)
	}
	return m[2]
}

func TestHandShake(t *testing.T) {
	t.Run("OK", func(t *testing.T) {
		e := newEnv(t, 0)
		e.newOnline(t, "lock1", actions.KindLock)
		before := time.Now().Unix()
		if err := e.dispatch(dev("lock1"), "hand_shake lock 1.2.3 Front  door"); err != nil {
			t.Fatalf("Dispatch: %v", err)
		}
		after := time.Now().Unix()
		p := wantOnly(t, e.pub.take(), "todevice/lock1", "welcome ")
		m := welcomeRE.FindStringSubmatch(p)
		if m == nil || m[2] != "none" {
			t.Fatalf("reply %q, want welcome <unix> none", p)
		}
		if unix, _ := strconv.ParseInt(m[1], 10, 64); unix < before || unix > after {
			t.Errorf("welcome time %s, want between %d and %d", m[1], before, after)
		}
		d := e.device(t, "lock1")
		if d.Firmware != "1.2.3" || d.Name != "Front door" {
			t.Errorf("firmware, name = %q, %q; want 1.2.3, Front door", d.Firmware, d.Name)
		}
		if evs := e.events(t, actions.EventQuery{Type: actions.EventHandShake}); len(evs) != 1 || evs[0].Device != "lock1" {
			t.Errorf("hand_shake events = %+v, want one about lock1", evs)
		}
	})
	t.Run("AddDevice", func(t *testing.T) {
		e := newEnv(t, 0)
		e.newOnline(t, "light1", actions.KindLight)
		if err := e.dispatch(dev("light1"), "add_device"); err != nil {
			t.Fatalf("Dispatch: %v", err)
		}
		wantOnly(t, e.pub.take(), "todevice/light1", "welcome ")
	})
	t.Run("ErrWrongKind", func(t *testing.T) {
		e := newEnv(t, 0)
		e.newOnline(t, "lock1", actions.KindLock)
		wantCode(t, e.dispatch(dev("lock1"), "hand_shake light"), actions.EInvalid)
		wantOnly(t, e.pub.take(), "todevice/lock1", "error ")
		if evs := e.events(t, actions.EventQuery{Type: actions.EventHandShake}); len(evs) != 0 {
			t.Errorf("hand_shake events = %+v, want none", evs)
		}
	})
	t.Run("ErrNoKind", func(t *testing.T) {
		e := newEnv(t, 0)
		e.newOnline(t, "lock1", actions.KindLock)
		wantCode(t, e.dispatch(dev("lock1"), "hand_shake"), actions.EInvalid)
		wantOnly(t, e.pub.take(), "todevice/lock1", "error ")
	})
	t.Run("ErrBadName", func(t *testing.T) {
		e := newEnv(t, 0)
		e.newOnline(t, "lock1", actions.KindLock)
		wantCode(t, e.dispatch(dev("lock1"), "hand_shake lock 1.0 "+strings.Repeat("n", 129)), actions.EInvalid)
		wantOnly(t, e.pub.take(), "todevice/lock1", "error ")
		if d := e.device(t, "lock1"); d.Name != "lock1" || d.Firmware != "" {
			t.Errorf("name, firmware = %q, %q; want them unchanged", d.Name, d.Firmware)
		}
	})
	t.Run("ErrFromUser", func(t *testing.T) {
		e := newEnv(t, 0)
		e.newOnline(t, "lock1", actions.KindLock)
		wantCode(t, e.dispatch(e.admin, "hand_shake lock"), actions.EForbidden)
		wantOnly(t, e.pub.take(), "toapp/admin", "error ")
	})
	t.Run("ErrUnknownDevice", func(t *testing.T) {
		e := newEnv(t, 0)
		wantCode(t, e.dispatch(dev("ghost"), "hand_shake lock"), actions.ENotFound)
		wantOnly(t, e.pub.take(), "todevice/ghost", "error ")
	})
}

func TestDispatchBadInput(t *testing.T) {
	binary := make([]byte, 100<<10)
	for i := range binary {
		binary[i] = byte(i*7 + 0x80) // starts with a byte no action name has
	}
	tests := []struct {
		name    string
		payload []byte
	}{
		{"UnknownWord", []byte("frobnicate now")},
		{"UnknownWordAlone", []byte("open_sesame")},
		{"Empty", nil},
		{"OnlySpaces", []byte("   ")},
		{"Uppercase", []byte("LOCK")},
		{"Binary100KiB", binary},
		{"PictureNotAnImage", append([]byte("find_stranger "), binary...)},
		{"InvalidUTF8", []byte("state \xff\xfe\xfd")},
		{"TextTooLong", []byte("state " + strings.Repeat("x", 5000))},
		{"WordTooLong", []byte(strings.Repeat("a", 40))},
		{"NUL", []byte("\x00")},
	}
	senders := []struct {
		name  string
		p     func(e *env) actions.Principal
		topic string
	}{
		{"Device", func(*env) actions.Principal { return dev("lock1") }, "todevice/lock1"},
		{"User", func(e *env) actions.Principal { return e.admin }, "toapp/admin"},
	}
	for _, s := range senders {
		t.Run(s.name, func(t *testing.T) {
			e := newEnv(t, 0)
			e.newOnline(t, "lock1", actions.KindLock)
			sender := s.p(e)
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					want := actions.EInvalid
					if tt.name == "PictureNotAnImage" && sender.Kind == actions.PrincipalUser {
						want = actions.EForbidden // people send no pictures
					}
					wantCode(t, e.svc.Dispatch(sender, actions.ViaMQTT, tt.payload), want)
					reply := wantOnly(t, e.pub.take(), s.topic, "error ")
					if len(reply) > 256 || !utf8Printable(reply) {
						t.Errorf("error reply %q: want short printable text", reply)
					}
				})
			}
			// The service still works after all that.
			if sender.Kind == actions.PrincipalDevice {
				if got := e.handShake(t, "lock1", "lock"); got != "none" {
					t.Errorf("welcome desired = %q, want none", got)
				}
			} else {
				if err := e.dispatch(sender, "lock lock1"); err != nil {
					t.Fatalf("lock lock1: %v", err)
				}
				wantOnly(t, e.pub.take(), "todevice/lock1", "lock ")
			}
			if evs := e.events(t, actions.EventQuery{Type: actions.EventState}); len(evs) != 0 {
				t.Errorf("state events = %+v, want none", evs)
			}
		})
	}
}

func utf8Printable(s string) bool {
	for _, r := range s {
		if r < 0x20 || r == 0x7f || r == 0xfffd {
			return false
		}
	}
	return true
}

func TestIdentitySpoofing(t *testing.T) {
	t.Run("AckOfAnotherDevicesCommand", func(t *testing.T) {
		e := newEnv(t, 0)
		e.newOnline(t, "lockA", actions.KindLock)
		e.newOnline(t, "lockB", actions.KindLock)
		cmdB, _ := e.send(t, "lockB", "unlock")

		wantCode(t, e.dispatch(dev("lockA"), "ack "+cmdB.ID+" ok unlocked"), actions.ENotFound)
		spoofReply := wantOnly(t, e.pub.take(), "todevice/lockA", "error ")
		if got := e.command(t, cmdB.ID); got.Status != actions.StatusSent || got.State != "" {
			t.Errorf("B's command = %s/%q after A's ack, want sent", got.Status, got.State)
		}
		for _, id := range []string{"lockA", "lockB"} {
			if d := e.device(t, id); d.State != "unknown" {
				t.Errorf("%s state = %q, want unknown", id, d.State)
			}
		}
		if evs := e.events(t, actions.EventQuery{Type: actions.EventAck}); len(evs) != 0 {
			t.Errorf("ack events = %+v, want none", evs)
		}
		// A command of another device and one that does not exist get the
		// same answer: existence is not leaked.
		const none = "0123456789abcdef"
		e.dispatch(dev("lockA"), "ack "+none+" ok unlocked")
		otherReply := wantOnly(t, e.pub.take(), "todevice/lockA", "error ")
		if strings.ReplaceAll(spoofReply, cmdB.ID, none) != otherReply {
			t.Errorf("replies differ: %q for B's command, %q for none", spoofReply, otherReply)
		}
		// B can still answer its own command.
		if err := e.dispatch(dev("lockB"), "ack "+cmdB.ID+" ok unlocked"); err != nil {
			t.Fatalf("B's own ack: %v", err)
		}
		if got := e.wait(t, cmdB.ID, time.Second); got.Status != actions.StatusDone {
			t.Errorf("B's command = %s, want done", got.Status)
		}
	})
	t.Run("LockResponseNamesAnotherDevice", func(t *testing.T) {
		e := newEnv(t, 0)
		e.newOnline(t, "lockA", actions.KindLock)
		e.newOnline(t, "lockB", actions.KindLock)
		cmdB, _ := e.send(t, "lockB", "unlock")
		cmdA, _ := e.send(t, "lockA", "lock")

		if err := e.dispatch(dev("lockA"), "lock_response 0 lockB app"); err != nil {
			t.Fatalf("lock_response: %v", err)
		}
		wantOnly(t, e.pub.take(), "toapp/admin", fmt.Sprintf("lock_response %s lockA 0 locked", cmdA.ID))
		if got := e.command(t, cmdA.ID); got.Status != actions.StatusDone || got.State != "locked" {
			t.Errorf("A's command = %s/%q, want done/locked", got.Status, got.State)
		}
		if got := e.command(t, cmdB.ID); got.Status != actions.StatusSent {
			t.Errorf("B's command = %s, want sent", got.Status)
		}
		if d := e.device(t, "lockB"); d.State != "unknown" {
			t.Errorf("lockB state = %q, want unknown", d.State)
		}
		// Nothing is left for A: a second one is refused, B untouched.
		wantCode(t, e.dispatch(dev("lockA"), "lock_response 0 lockB app"), actions.EConflict)
		wantOnly(t, e.pub.take(), "todevice/lockA", "error ")
		if got := e.command(t, cmdB.ID); got.Status != actions.StatusSent {
			t.Errorf("B's command = %s, want sent", got.Status)
		}
	})
	t.Run("LockResponseFailed", func(t *testing.T) {
		e := newEnv(t, 0)
		e.newOnline(t, "lockA", actions.KindLock)
		cmd, _ := e.send(t, "lockA", "lock")
		if err := e.dispatch(dev("lockA"), "lock_response 1 lockA app"); err != nil {
			t.Fatalf("lock_response: %v", err)
		}
		if got := e.command(t, cmd.ID); got.Status != actions.StatusFailed {
			t.Errorf("command = %s, want failed", got.Status)
		}
	})
	t.Run("UserSendsDeviceWords", func(t *testing.T) {
		e := newEnv(t, 0)
		e.newOnline(t, "lockA", actions.KindLock)
		cmd, _ := e.send(t, "lockA", "unlock")
		for _, p := range []string{"ack " + cmd.ID + " ok unlocked", "lock_response 0 lockA admin", "state unlocked"} {
			wantCode(t, e.dispatch(e.admin, p), actions.EForbidden)
			wantOnly(t, e.pub.take(), "toapp/admin", "error ")
		}
		if got := e.command(t, cmd.ID); got.Status != actions.StatusSent {
			t.Errorf("command = %s, want sent", got.Status)
		}
		if d := e.device(t, "lockA"); d.State != "unknown" {
			t.Errorf("state = %q, want unknown", d.State)
		}
	})
	t.Run("DeviceSendsCommands", func(t *testing.T) {
		e := newEnv(t, 0)
		e.newOnline(t, "lockA", actions.KindLock)
		e.newOnline(t, "lockB", actions.KindLock)
		for _, p := range []string{"unlock lockB", "unlock", "unlock all", "unlock lockA"} {
			wantCode(t, e.dispatch(dev("lockA"), p), actions.EForbidden)
			wantOnly(t, e.pub.take(), "todevice/lockA", "error ")
		}
		if p := e.pending(t); len(p) != 0 {
			t.Errorf("pending commands = %+v, want none", p)
		}
	})
}

var commandRE = regexp.MustCompile(`^(lock|unlock|on|off) ([0-9a-f]{16}) (\d+)$`)

func TestSendCommand(t *testing.T) {
	// Long enough that no command expires while a busy machine runs a
	// subtest; ExpiredThenLateAck uses its own short one.
	const ttl = time.Minute
	t.Run("ErrOffline", func(t *testing.T) {
		e := newEnv(t, ttl)
		e.newDevice(t, "lock1", actions.KindLock)
		_, err := e.svc.SendCommand(e.admin, "lock1", "unlock", actions.ViaREST)
		wantCode(t, err, actions.EConflict)
		if msgs := e.pub.take(); len(msgs) != 0 {
			t.Errorf("published %v, want nothing", msgs)
		}
		if p := e.pending(t); len(p) != 0 {
			t.Errorf("pending commands = %+v, want none", p)
		}
		if evs := e.events(t, actions.EventQuery{Type: actions.EventCommand}); len(evs) != 0 {
			t.Errorf("command events = %+v, want none", evs)
		}
		if d := e.device(t, "lock1"); d.Desired != "" {
			t.Errorf("desired = %q, want nothing", d.Desired)
		}
	})
	t.Run("OK", func(t *testing.T) {
		e := newEnv(t, ttl)
		e.newOnline(t, "lock1", actions.KindLock)
		c, msg := e.send(t, "lock1", "lock")
		if c.Status != actions.StatusSent || c.Device != "lock1" || c.Verb != "lock" || c.By != "admin" || c.Via != actions.ViaREST {
			t.Errorf("command = %+v", c)
		}
		if got := c.NotAfter.Sub(c.Created); got != ttl {
			t.Errorf("not after - created = %s, want %s", got, ttl)
		}
		m := commandRE.FindStringSubmatch(msg.Payload)
		if msg.Topic != "todevice/lock1" || m == nil || m[1] != "lock" || m[2] != c.ID || m[3] != strconv.FormatInt(c.NotAfter.Unix(), 10) {
			t.Errorf("published %v, want todevice/lock1 \"lock %s %d\"", msg, c.ID, c.NotAfter.Unix())
		}
		// The message expires with the command: what is left of its ttl.
		if msg.TTL <= 0 || msg.TTL > ttl {
			t.Errorf("message ttl = %s, want at most %s", msg.TTL, ttl)
		}
		if p := e.pending(t); len(p) != 1 || p[0].ID != c.ID {
			t.Errorf("pending = %+v, want the command", p)
		}

		if err := e.dispatch(dev("lock1"), "ack "+c.ID+" ok locked"); err != nil {
			t.Fatalf("ack: %v", err)
		}
		got := e.wait(t, c.ID, 5*time.Second)
		if got.Status != actions.StatusDone || got.State != "locked" {
			t.Errorf("after ack: %s/%q, want done/locked", got.Status, got.State)
		}
		wantOnly(t, e.pub.take(), "toapp/admin", fmt.Sprintf("lock_response %s lock1 0 locked", c.ID))
		if d := e.device(t, "lock1"); d.State != "locked" {
			t.Errorf("device state = %q, want locked", d.State)
		}
		if p := e.pending(t); len(p) != 0 {
			t.Errorf("pending = %+v, want none", p)
		}
		// Waiting again returns at once.
		if got := e.wait(t, c.ID, 0); got.Status != actions.StatusDone {
			t.Errorf("second Wait = %s, want done", got.Status)
		}
	})
	t.Run("ViaMQTT", func(t *testing.T) {
		e := newEnv(t, ttl)
		e.newOnline(t, "lock1", actions.KindLock)
		if err := e.dispatch(e.admin, "unlock lock1"); err != nil {
			t.Fatalf("unlock lock1: %v", err)
		}
		p := wantOnly(t, e.pub.take(), "todevice/lock1", "unlock ")
		id := commandRE.FindStringSubmatch(p)[2]
		if c := e.command(t, id); c.Via != actions.ViaMQTT || c.By != "admin" {
			t.Errorf("command = %+v, want by admin via mqtt", c)
		}
		e.dispatch(dev("lock1"), "ack "+id+" ok unlocked")
		wantOnly(t, e.pub.take(), "toapp/admin", "lock_response "+id+" lock1 0 unlocked")
	})
	t.Run("AckFailed", func(t *testing.T) {
		e := newEnv(t, ttl)
		e.newOnline(t, "lock1", actions.KindLock)
		c, _ := e.send(t, "lock1", "lock")
		if err := e.dispatch(dev("lock1"), "ack "+c.ID+" failed jammed bolt  blocked"); err != nil {
			t.Fatalf("ack: %v", err)
		}
		got := e.wait(t, c.ID, 5*time.Second)
		if got.Status != actions.StatusFailed || got.State != "jammed" || got.Reason != "bolt blocked" {
			t.Errorf("after ack: %s/%q/%q, want failed/jammed/bolt blocked", got.Status, got.State, got.Reason)
		}
		wantOnly(t, e.pub.take(), "toapp/admin", fmt.Sprintf("lock_response %s lock1 1 jammed", c.ID))
		if d := e.device(t, "lock1"); d.State != "jammed" {
			t.Errorf("device state = %q, want jammed", d.State)
		}
	})
	t.Run("ErrBadAck", func(t *testing.T) {
		e := newEnv(t, ttl)
		e.newOnline(t, "lock1", actions.KindLock)
		c, _ := e.send(t, "lock1", "lock")
		for _, p := range []string{
			"ack " + c.ID,
			"ack " + c.ID + " ok",
			"ack " + c.ID + " yes locked",
			"ack " + c.ID + " ok on",
			"ack " + c.ID + " ok LOCKED",
			"ack " + c.ID + " failed jammed " + strings.Repeat("r", 200),
			"ack " + c.ID + " failed jammed \x01",
		} {
			if err := e.dispatch(dev("lock1"), p); err == nil {
				t.Errorf("%q accepted", p)
			}
			wantOnly(t, e.pub.take(), "todevice/lock1", "error ")
		}
		if got := e.command(t, c.ID); got.Status != actions.StatusSent {
			t.Errorf("command = %s, want sent", got.Status)
		}
		if d := e.device(t, "lock1"); d.State != "unknown" {
			t.Errorf("state = %q, want unknown", d.State)
		}
	})
	t.Run("ExpiredThenLateAck", func(t *testing.T) {
		t.Parallel()
		const ttl = time.Second
		e := newEnv(t, ttl)
		e.newOnline(t, "lock1", actions.KindLock)
		start := time.Now()
		c, _ := e.send(t, "lock1", "unlock")
		got := e.wait(t, c.ID, 10*ttl)
		if got.Status != actions.StatusExpired {
			t.Fatalf("after ttl: %s, want expired", got.Status)
		}
		if elapsed := time.Since(start); elapsed < ttl-50*time.Millisecond {
			t.Errorf("expired after %s, before its ttl %s", elapsed, ttl)
		}
		e.pub.waitFor(t, func(m published) bool {
			// The state slot holds the device's last known state.
			return m.Topic == "toapp/admin" && m.Payload == fmt.Sprintf("lock_response %s lock1 1 unknown", c.ID)
		})
		e.pub.take()
		if evs := e.events(t, actions.EventQuery{Type: actions.EventCommand}); len(evs) != 2 || evs[0].Command != c.ID ||
			!strings.Contains(evs[0].Detail, "expired") {
			t.Errorf("command events = %+v, want sent then expired", evs)
		}

		if err := e.dispatch(dev("lock1"), "ack "+c.ID+" ok unlocked"); err != nil {
			t.Fatalf("late ack: %v", err)
		}
		wantOnly(t, e.pub.take(), "toapp/admin", "state lock1 unlocked")
		if got := e.command(t, c.ID); got.Status != actions.StatusExpired {
			t.Errorf("after late ack: %s, want expired", got.Status)
		}
		evs := e.events(t, actions.EventQuery{Type: actions.EventAck})
		if len(evs) != 1 || evs[0].Command != c.ID || !strings.Contains(evs[0].Detail, "late") {
			t.Errorf("ack events = %+v, want one late ack", evs)
		}
		if d := e.device(t, "lock1"); d.State != "unlocked" {
			t.Errorf("device state = %q, want unlocked (what the device reported)", d.State)
		}
	})
	t.Run("ErrVerbForKind", func(t *testing.T) {
		e := newEnv(t, ttl)
		e.newOnline(t, "lock1", actions.KindLock)
		e.newOnline(t, "light1", actions.KindLight)
		e.newOnline(t, "cam1", actions.KindCamera)
		for _, c := range []struct{ id, verb string }{
			{"lock1", "on"}, {"lock1", "off"}, {"lock1", "open"}, {"lock1", ""},
			{"light1", "lock"}, {"light1", "unlock"},
			{"cam1", "on"}, {"cam1", "lock"},
		} {
			_, err := e.svc.SendCommand(e.admin, c.id, c.verb, actions.ViaREST)
			if actions.ErrorCode(err) != actions.EInvalid {
				t.Errorf("SendCommand(%q, %q) = %v, want invalid", c.id, c.verb, err)
			}
		}
		if msgs := e.pub.take(); len(msgs) != 0 {
			t.Errorf("published %v, want nothing", msgs)
		}
		if p := e.pending(t); len(p) != 0 {
			t.Errorf("pending = %+v, want none", p)
		}
	})
	t.Run("ErrNotFound", func(t *testing.T) {
		e := newEnv(t, ttl)
		_, err := e.svc.SendCommand(e.admin, "nope", "lock", actions.ViaREST)
		wantCode(t, err, actions.ENotFound)
		_, err = e.svc.Wait(nil, "0123456789abcdef")
		wantCode(t, err, actions.ENotFound)
	})
	t.Run("ErrFromDevice", func(t *testing.T) {
		e := newEnv(t, ttl)
		e.newOnline(t, "lock1", actions.KindLock)
		_, err := e.svc.SendCommand(dev("lock1"), "lock1", "unlock", actions.ViaMQTT)
		wantCode(t, err, actions.EForbidden)
	})
	t.Run("PublishFails", func(t *testing.T) {
		e := newEnv(t, ttl)
		e.newOnline(t, "lock1", actions.KindLock)
		e.pub.setErr(errors.New("broker down"))
		c, err := e.svc.SendCommand(e.admin, "lock1", "unlock", actions.ViaREST)
		if err != nil {
			t.Fatalf("SendCommand: %v", err)
		}
		if c.Status != actions.StatusFailed {
			t.Errorf("status = %s, want failed", c.Status)
		}
		if got := e.command(t, c.ID); got.Status != actions.StatusFailed {
			t.Errorf("stored status = %s, want failed", got.Status)
		}
		if p := e.pending(t); len(p) != 0 {
			t.Errorf("pending = %+v, want none", p)
		}
	})
}

func TestDesiredState(t *testing.T) {
	e := newEnv(t, 0)
	e.newOnline(t, "lock1", actions.KindLock)
	e.newOnline(t, "light1", actions.KindLight)
	if got := e.handShake(t, "lock1", "lock"); got != "none" {
		t.Errorf("new lock: desired %q, want none", got)
	}

	c, _ := e.send(t, "lock1", "lock")
	if got := e.handShake(t, "lock1", "lock"); got != "locked" {
		t.Errorf("lock sent: desired %q, want locked", got)
	}
	e.dispatch(dev("lock1"), "ack "+c.ID+" ok locked")
	e.pub.take()
	if got := e.handShake(t, "lock1", "lock"); got != "locked" {
		t.Errorf("lock done: desired %q, want locked", got)
	}

	c, _ = e.send(t, "lock1", "unlock")
	if got := e.handShake(t, "lock1", "lock"); got != "none" {
		t.Errorf("unlock sent: desired %q, want none", got)
	}
	e.dispatch(dev("lock1"), "ack "+c.ID+" ok unlocked")
	e.pub.take()
	if got := e.handShake(t, "lock1", "lock"); got != "none" {
		t.Errorf("unlock done: desired %q, want none, never unlocked", got)
	}
	if d := e.device(t, "lock1"); d.Desired == "unlocked" {
		t.Errorf("stored desired = %q", d.Desired)
	}

	e.send(t, "light1", "on")
	if got := e.handShake(t, "light1", "light"); got != "on" {
		t.Errorf("light on: desired %q, want on", got)
	}
	e.send(t, "light1", "off")
	if got := e.handShake(t, "light1", "light"); got != "off" {
		t.Errorf("light off: desired %q, want off", got)
	}
}

// TestConnectsDoNotWaitForTheStore: a device's login and connect return
// while the store is busy, and the online events and login addresses of a
// storm of connects are committed together once it is free, each online
// announced to the people who may see the device.
func TestConnectsDoNotWaitForTheStore(t *testing.T) {
	var commits atomic.Int64
	e := openEnvWith(t, filepath.Join(t.TempDir(), "g.db"),
		store.Options{OnCommit: func(time.Duration, int) { commits.Add(1) }}, actions.Config{})
	const n = 300
	secrets := make([]string, n)
	for i := range n {
		secrets[i] = e.newDevice(t, fmt.Sprintf("lock%03d", i), actions.KindLock)
	}
	e.pub.take()

	// Hold the store's writer until every connect has returned.
	started, release, held := make(chan struct{}), make(chan struct{}), make(chan error, 1)
	go func() {
		held <- e.db.Update(func(actions.Tx) error {
			close(started)
			<-release
			return nil
		})
	}()
	<-started
	before := commits.Load()
	for i := range n { // a login and a connect, as the broker does
		id := fmt.Sprintf("lock%03d", i)
		if _, err := e.svc.AuthenticateMQTT(id, id, []byte(secrets[i]), remote); err != nil {
			t.Fatal(err)
		}
		e.svc.Connected(dev(id), remote) // would hang here before
	}
	close(release)
	if err := <-held; err != nil {
		t.Fatal(err)
	}
	e.svc.Settle()
	// The holder's commit, at most one presence change and one login
	// address taken before the others were queued, and the rest of each
	// in one transaction.
	if c := commits.Load() - before; c > 5 {
		t.Errorf("%d logins and connects took %d commits, want at most 5", n, c)
	}
	for i := range n {
		if a := e.loginAddrs(t, actions.LoginIdentity(actions.PrincipalDevice, fmt.Sprintf("lock%03d", i))); len(a) != 1 {
			t.Fatalf("lock%03d: login addresses %v, want one", i, a)
		}
	}
	if on := e.events(t, actions.EventQuery{Type: actions.EventOnline, Limit: 1000}); len(on) != n {
		t.Errorf("%d online events, want %d", len(on), n)
	}
	if msgs := e.pub.take(); len(msgs) != n {
		t.Errorf("%d notifications, want %d", len(msgs), n)
	}
}

// TestShutdownLosesNoNotification: the presence changes queued before
// Close are committed and announced by it, and a notification after Close
// (an action still finishing) is published by its caller; Settle returns.
func TestShutdownLosesNoNotification(t *testing.T) {
	e := newEnv(t, 0)
	e.newDevice(t, "lock1", actions.KindLock)
	e.newDevice(t, "lock2", actions.KindLock)
	e.pub.take()
	e.svc.Connected(dev("lock1"), remote)
	e.svc.Close()
	if on := e.events(t, actions.EventQuery{Type: actions.EventOnline}); len(on) != 1 {
		t.Errorf("online events after Close: %d, want 1", len(on))
	}
	if err := e.dispatch(dev("lock2"), "state locked"); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, m := range e.pub.take() { // take settles: it must return
		got = append(got, m.Topic+" "+m.Payload)
	}
	if want := []string{"toapp/admin online lock1", "toapp/admin state lock2 locked"}; !slices.Equal(got, want) {
		t.Errorf("published %q, want %q", got, want)
	}
}

func TestPresence(t *testing.T) {
	e := newEnv(t, 0)
	e.addUser(t, "bob", actions.RoleMember)
	e.newDevice(t, "lock1", actions.KindLock)
	e.newDevice(t, "lock2", actions.KindLock)
	e.grant(t, "bob", "lock2", actions.Grant{})

	online := func(id string) bool {
		t.Helper()
		b, err := json.Marshal(e.device(t, id))
		if err != nil {
			t.Fatal(err)
		}
		var v struct {
			Online *bool `json:"online"`
		}
		if err := json.Unmarshal(b, &v); err != nil || v.Online == nil {
			t.Fatalf("device JSON %s has no online field", b)
		}
		return *v.Online
	}

	if online("lock1") {
		t.Fatal("online before any connection")
	}
	e.svc.Connected(dev("lock1"), remote)
	wantOnly(t, e.pub.take(), "toapp/admin", "online lock1")
	e.svc.Connected(dev("lock1"), remote) // session takeover: the new one first
	if msgs := e.pub.take(); len(msgs) != 0 {
		t.Errorf("second connection published %v, want nothing", msgs)
	}
	e.svc.Disconnected(dev("lock1"), remote) // then the old one goes
	if !online("lock1") {
		t.Error("offline after a session takeover, want online")
	}
	if msgs := e.pub.take(); len(msgs) != 0 {
		t.Errorf("taken-over connection published %v, want nothing", msgs)
	}
	// A connection that ends and comes back within the grace period is
	// not reported at all.
	e.svc.Disconnected(dev("lock1"), remote)
	e.svc.Connected(dev("lock1"), remote)
	time.Sleep(1500 * time.Millisecond)
	if msgs := e.pub.take(); len(msgs) != 0 {
		t.Errorf("a quick reconnect published %v, want nothing", msgs)
	}
	e.svc.Disconnected(dev("lock1"), remote)
	if online("lock1") {
		t.Error("online after the last connection ended")
	}
	var offline []string
	for deadline := time.Now().Add(5 * time.Second); len(offline) == 0 && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
		for _, m := range e.pub.take() {
			offline = append(offline, m.Topic+" "+m.Payload)
		}
	}
	if len(offline) != 1 || offline[0] != "toapp/admin offline lock1" {
		t.Errorf("after the last connection ended: %v, want the offline notice", offline)
	}
	if on, off := e.events(t, actions.EventQuery{Type: actions.EventOnline}), e.events(t, actions.EventQuery{Type: actions.EventOffline}); len(on) != 1 || len(off) != 1 {
		t.Errorf("online, offline events = %d, %d; want 1, 1", len(on), len(off))
	}
	if d := e.device(t, "lock1"); d.LastSeen.IsZero() {
		t.Error("last seen not recorded")
	}

	// Notifications go to every person who may see the device, and only to them.
	e.svc.Connected(dev("lock2"), remote)
	msgs := e.pub.take()
	if len(msgs) != 2 || msgs[0] != (published{Topic: "toapp/admin", Payload: "online lock2"}) ||
		msgs[1] != (published{Topic: "toapp/bob", Payload: "online lock2"}) {
		t.Errorf("published %v, want online lock2 to admin and bob", msgs)
	}
	// People have no presence.
	e.svc.Connected(e.admin, remote)
	e.svc.Disconnected(e.admin, remote)
	if msgs := e.pub.take(); len(msgs) != 0 {
		t.Errorf("a person's connection published %v", msgs)
	}
}

func TestSendAll(t *testing.T) {
	e := newEnv(t, 0)
	e.newOnline(t, "lockA", actions.KindLock)
	e.newDevice(t, "lockB", actions.KindLock)
	e.newOnline(t, "lockC", actions.KindLock)
	e.newOnline(t, "light1", actions.KindLight)
	e.newOnline(t, "cam1", actions.KindCamera)

	t.Run("OK", func(t *testing.T) {
		cmds, err := e.svc.SendAll(e.admin, "lock", actions.ViaREST)
		if err != nil {
			t.Fatalf("SendAll: %v", err)
		}
		if len(cmds) != 3 {
			t.Fatalf("SendAll = %+v, want one entry per lock", cmds)
		}
		want := []struct{ device, status string }{{"lockA", actions.StatusSent}, {"lockB", actions.StatusOffline}, {"lockC", actions.StatusSent}}
		for i, w := range want {
			if cmds[i].Device != w.device || cmds[i].Status != w.status || cmds[i].Verb != "lock" {
				t.Errorf("entry %d = %+v, want %s %s", i, cmds[i], w.device, w.status)
			}
		}
		if cmds[1].ID != "" {
			t.Errorf("offline entry has command id %q", cmds[1].ID)
		}
		msgs := e.pub.take()
		if len(msgs) != 2 || msgs[0].Topic != "todevice/lockA" || msgs[1].Topic != "todevice/lockC" {
			t.Fatalf("published %v, want a command to lockA and lockC", msgs)
		}
		for i, m := range msgs {
			if got := commandRE.FindStringSubmatch(m.Payload); got == nil || got[2] != cmds[2*i].ID {
				t.Errorf("published %v, want command %s", m, cmds[2*i].ID)
			}
		}
		if p := e.pending(t); len(p) != 2 {
			t.Errorf("pending = %+v, want two", p)
		}
		if d := e.device(t, "lockB"); d.Desired != "" {
			t.Errorf("offline lockB desired = %q, want unchanged", d.Desired)
		}
	})
	t.Run("Lights", func(t *testing.T) {
		cmds, err := e.svc.SendAll(e.admin, "off", actions.ViaREST)
		if err != nil || len(cmds) != 1 || cmds[0].Device != "light1" {
			t.Fatalf("SendAll(off) = %+v, %v; want light1 only", cmds, err)
		}
		wantOnly(t, e.pub.take(), "todevice/light1", "off ")
	})
	t.Run("MQTT", func(t *testing.T) {
		for _, p := range []string{"unlock", "unlock all"} {
			if err := e.dispatch(e.admin, p); err != nil {
				t.Fatalf("%s: %v", p, err)
			}
			msgs := e.pub.take()
			if len(msgs) != 3 {
				t.Fatalf("%s published %v, want 2 commands and 1 reply", p, msgs)
			}
			if m := msgs[2]; m.Topic != "toapp/admin" || m.Payload != "error offline: lockB" {
				t.Errorf("reply %v, want toapp/admin error offline: lockB", m)
			}
		}
	})
	t.Run("ErrUsage", func(t *testing.T) {
		for _, p := range []string{"on", "off all", "on all myapp 2026-12-02T10:00:00"} {
			wantCode(t, e.dispatch(e.admin, p), actions.EInvalid)
			wantOnly(t, e.pub.take(), "toapp/admin", "error ")
		}
	})
	t.Run("PrototypeWords", func(t *testing.T) {
		// The shipped app's `unlock <device> <app> <datetime>`: the words
		// after the device id are ignored, whatever they are.
		for _, p := range []string{"unlock lockA myapp 2026-12-02T10:00:00", "lock lockA lockC"} {
			if err := e.dispatch(e.admin, p); err != nil {
				t.Fatalf("%s: %v", p, err)
			}
			verb := strings.Fields(p)[0]
			wantOnly(t, e.pub.take(), "todevice/lockA", verb+" ")
		}
	})
	t.Run("ErrFromDevice", func(t *testing.T) {
		_, err := e.svc.SendAll(dev("lockA"), "unlock", actions.ViaMQTT)
		wantCode(t, err, actions.EForbidden)
		if msgs := e.pub.take(); len(msgs) != 0 {
			t.Errorf("published %v", msgs)
		}
	})
}

func TestAuthenticateMQTT(t *testing.T) {
	e := newEnv(t, 0)
	secret1 := e.newDevice(t, "lock1", actions.KindLock)
	secret2 := e.newDevice(t, "lock2", actions.KindLock)
	bob, bobToken := e.addUser(t, "bob", actions.RoleMember)
	_, carolToken := e.addUser(t, "carol", actions.RoleMember)
	_, old, err := e.svc.CreateToken(e.admin, "carol", "short", e.clock.Now().Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	e.clock.advance(2 * time.Minute) // old has expired

	refused := func() []actions.Event { return e.events(t, actions.EventQuery{Type: actions.EventLoginRefused}) }

	tests := []struct {
		name                         string
		clientID, username, password string
		want                         actions.Principal // zero: refused
	}{
		{"DeviceOK", "lock1", "lock1", secret1, dev("lock1")},
		{"UserOK", "phone-1", "bob", bobToken, bob},
		{"AdminOK", "dashboard", "admin", adminToken, e.admin},
		{"ErrWrongSecret", "lock1", "lock1", secret1 + "0", actions.Principal{}},
		{"ErrOtherDevicesSecret", "lock2", "lock2", secret1, actions.Principal{}},
		{"ErrClientIDNotUsername", "lock2", "lock1", secret1, actions.Principal{}},
		{"ErrUsernameNotClientID", "lock1", "lock2", secret2, actions.Principal{}},
		{"ErrInlineClientID", "inline", "bob", bobToken, actions.Principal{}},
		{"ErrInlineDevice", "inline", "inline", secret1, actions.Principal{}},
		{"ErrEmptyPassword", "lock1", "lock1", "", actions.Principal{}},
		{"ErrEmptyPasswordUser", "phone", "bob", "", actions.Principal{}},
		{"ErrEmptyUsername", "phone", "", bobToken, actions.Principal{}},
		{"ErrEmptyClientID", "", "bob", bobToken, actions.Principal{}},
		{"ErrSomeoneElsesToken", "phone", "bob", adminToken, actions.Principal{}},
		{"ErrBobsTokenAsAdmin", "phone", "admin", bobToken, actions.Principal{}},
		{"ErrCarolsTokenAsBob", "phone", "bob", carolToken, actions.Principal{}},
		{"ErrUnknownUser", "phone", "mallory", bobToken, actions.Principal{}},
		{"ErrTokenAsDeviceSecret", "lock1", "lock1", adminToken, actions.Principal{}},
		{"ErrDeviceSecretAsToken", "phone", "admin", secret1, actions.Principal{}},
		{"ErrExpiredToken", "phone", "carol", old, actions.Principal{}},
		{"ErrUnknownDevice", "lock9", "lock9", secret1, actions.Principal{}},
		{"ErrPairWithToken", "lock9", "pair", adminToken, actions.Principal{}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Each case from its own address, so that throttling (tested
			// below) does not decide the outcome.
			from := fmt.Sprintf("192.0.2.%d:5000", i+1)
			before := len(refused())
			got, err := e.svc.AuthenticateMQTT(tt.clientID, tt.username, []byte(tt.password), from)
			if tt.want == (actions.Principal{}) {
				wantCode(t, err, actions.EUnauthorized)
				if got != (actions.Principal{}) {
					t.Errorf("refused login returned %+v", got)
				}
				evs := refused()
				if len(evs) != before+1 {
					t.Fatalf("login_refused events %d → %d, want one more", before, len(evs))
				}
				if ev := evs[0]; ev.Via != actions.ViaMQTT || ev.User != tt.username ||
					tt.password != "" && (strings.Contains(ev.Detail, tt.password) || strings.Contains(ev.User, tt.password)) {
					t.Errorf("event %+v: want via mqtt, the username, and never the password", ev)
				}
				if msg := actions.ErrorMessage(err); tt.password != "" && strings.Contains(msg, tt.password) {
					t.Errorf("error message %q holds the password", msg)
				}
				return
			}
			if err != nil {
				t.Fatalf("AuthenticateMQTT: %v", err)
			}
			if got != tt.want {
				t.Errorf("principal = %+v, want %+v", got, tt.want)
			}
			if n := len(refused()); n != before {
				t.Errorf("accepted login added a login_refused event")
			}
		})
	}
}

func TestAuthenticateThrottled(t *testing.T) {
	e := newEnv(t, 0)
	secret := e.newDevice(t, "lock1", actions.KindLock)
	refused := func() int { return len(e.events(t, actions.EventQuery{Type: actions.EventLoginRefused})) }
	// The device logs in once from its usual address.
	if _, err := e.svc.AuthenticateMQTT("lock1", "lock1", []byte(secret), remote); err != nil {
		t.Fatal(err)
	}

	t.Run("OneAddress", func(t *testing.T) {
		const attacker = "198.51.100.9:1234"
		var err error
		for range 20 {
			_, err = e.svc.AuthenticateMQTT("lock1", "lock1", []byte("guess"), attacker)
		}
		wantCode(t, err, actions.ETooMany)
		// A person's right token does not help while the address is
		// blocked, whatever the port or the way in, and the answer does
		// not say whether it was right.
		before := refused()
		_, err = e.svc.AuthenticateBearer(adminToken, "198.51.100.9:4321")
		wantCode(t, err, actions.ETooMany)
		_, errWrong := e.svc.AuthenticateBearer("guess", "198.51.100.9:4321")
		if actions.ErrorCode(errWrong) != actions.ErrorCode(err) {
			t.Errorf("blocked right token %v, wrong token %v: they differ", err, errWrong)
		}
		_, err = e.svc.AuthenticateMQTT("lock1", "lock1", []byte("guess"), "198.51.100.9:4321")
		wantCode(t, err, actions.ETooMany)
		// A device's secret (32 random bytes) is no guess: the block of
		// the address it comes from does not apply to it.
		if _, err := e.svc.AuthenticateMQTT("lock1", "lock1", []byte(secret), "198.51.100.9:4321"); err != nil {
			t.Errorf("right device secret from a blocked address: %v", err)
		}
		// One refusal per blocked address and interval is recorded, and one
		// was already, during the 20 attempts.
		if n := refused(); n != before {
			t.Errorf("login_refused events %d → %d, want throttled attempts within a minute of the last record left out", before, n)
		}
		if _, err := e.svc.AuthenticateMQTT("lock1", "lock1", []byte(secret), remote); err != nil {
			t.Errorf("device from its usual address: %v", err)
		}
	})
	t.Run("SameNAT", func(t *testing.T) {
		// The attacker shares the device's address (one NAT).
		nat := strings.Replace(remote, ":40000", ":50000", 1)
		for range 20 {
			e.svc.AuthenticateMQTT("lock1", "lock1", []byte("guess"), nat)
		}
		if _, err := e.svc.AuthenticateMQTT("lock1", "lock1", []byte(secret), remote); err != nil {
			t.Errorf("device behind the attacker's NAT locked out: %v", err)
		}
	})
	t.Run("ManyAddresses", func(t *testing.T) {
		for i := range 15 {
			e.svc.AuthenticateMQTT("lock1", "lock1", []byte("guess"), fmt.Sprintf("198.51.100.%d:1", 100+i))
		}
		_, err := e.svc.AuthenticateMQTT("lock1", "lock1", []byte("guess"), "203.0.113.50:1")
		wantCode(t, err, actions.ETooMany)
		if _, err := e.svc.AuthenticateMQTT("lock1", "lock1", []byte(secret), remote); err != nil {
			t.Errorf("device from its usual address: %v", err)
		}
	})
	t.Run("BlockEnds", func(t *testing.T) {
		e.clock.advance(time.Hour + time.Minute)
		for _, from := range []string{"198.51.100.9:1", "203.0.113.50:1"} {
			if _, err := e.svc.AuthenticateMQTT("lock1", "lock1", []byte(secret), from); err != nil {
				t.Errorf("after the block, from %s: %v", from, err)
			}
		}
	})
}

func TestAuthenticateBearer(t *testing.T) {
	e := newEnv(t, 0)
	e.addUser(t, "carol", actions.RoleMember)
	_, old, err := e.svc.CreateToken(e.admin, "carol", "short", e.clock.Now().Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	e.clock.advance(2 * time.Minute)
	_, deleted := e.addUser(t, "dave", actions.RoleAdmin)
	if err := e.svc.DeleteUser(e.admin, "dave"); err != nil {
		t.Fatal(err)
	}
	refused := func() int { return len(e.events(t, actions.EventQuery{Type: actions.EventLoginRefused})) }

	t.Run("OK", func(t *testing.T) {
		p, err := e.svc.AuthenticateBearer(adminToken, remote)
		if err != nil || p.Kind != actions.PrincipalUser || p.ID != "admin" || !p.IsAdmin() || p.Token == "" {
			t.Fatalf("AuthenticateBearer(admin) = %+v, %v", p, err)
		}
	})
	for i, tc := range []struct{ name, token string }{
		{"ErrUnknown", "not-a-token-at-all-0123456789"},
		{"ErrEmpty", ""},
		{"ErrExpired", old},
		{"ErrPrefix", adminToken[:len(adminToken)-1]},
		{"ErrDeletedUser", deleted},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := refused()
			p, err := e.svc.AuthenticateBearer(tc.token, fmt.Sprintf("203.0.113.%d:80", i+1))
			wantCode(t, err, actions.EUnauthorized)
			if p != (actions.Principal{}) {
				t.Errorf("principal = %+v, want none", p)
			}
			if n := refused(); n != before+1 {
				t.Errorf("login_refused events %d → %d, want one more", before, n)
			}
		})
	}
}

func TestRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "g.db")
	e := openEnv(t, path, 0)
	secret := e.newOnline(t, "lock1", actions.KindLock)
	e.newOnline(t, "light1", actions.KindLight)
	if err := e.dispatch(dev("lock1"), "hand_shake lock 2.0 Back door"); err != nil {
		t.Fatal(err)
	}
	e.pub.take()
	done, _ := e.send(t, "light1", "on")
	e.dispatch(dev("light1"), "ack "+done.ID+" ok on")
	if err := e.dispatch(dev("lock1"), "state jammed"); err != nil {
		t.Fatal(err)
	}
	e.pub.take()
	sent, _ := e.send(t, "lock1", "lock") // never answered
	before := e.events(t, actions.EventQuery{})
	e.close(t)

	e = openEnv(t, path, 0)
	if got := e.command(t, sent.ID); got.Status != actions.StatusExpired || got.Reason == "" {
		t.Errorf("pending command after restart = %s/%q, want expired with a reason", got.Status, got.Reason)
	}
	if got := e.command(t, done.ID); got.Status != actions.StatusDone || got.State != "on" {
		t.Errorf("done command after restart = %s/%q, want done/on", got.Status, got.State)
	}
	if p := e.pending(t); len(p) != 0 {
		t.Errorf("pending after restart = %+v, want none", p)
	}
	evs := e.events(t, actions.EventQuery{Type: actions.EventCommand, Device: "lock1"})
	if len(evs) != 2 || evs[0].Command != sent.ID || !strings.Contains(evs[0].Detail, "expired") || evs[0].Via != actions.ViaServer {
		t.Errorf("lock1 command events = %+v, want sent then expired by the server", evs)
	}
	after := e.events(t, actions.EventQuery{})
	if len(after) != len(before)+1 {
		t.Errorf("events %d before restart, %d after, want one more", len(before), len(after))
	}
	for i := range before {
		if after[i+1] != before[i] {
			t.Errorf("event %d = %+v after restart, was %+v", i, after[i+1], before[i])
		}
	}

	d := e.device(t, "lock1")
	if d.Kind != actions.KindLock || d.Name != "Back door" || d.Firmware != "2.0" || d.State != "jammed" || d.Desired != "locked" {
		t.Errorf("lock1 after restart = %+v", d)
	}
	if d.Online {
		t.Error("online after restart, before any connection")
	}
	if l := e.device(t, "light1"); l.State != "on" || l.Desired != "on" {
		t.Errorf("light1 after restart = %+v", l)
	}
	if _, err := e.svc.AuthenticateMQTT("lock1", "lock1", []byte(secret), remote); err != nil {
		t.Errorf("device secret after restart: %v", err)
	}
	if _, err := e.svc.AuthenticateMQTT("lock1", "lock1", []byte("wrong"), remote); err == nil {
		t.Error("wrong secret accepted after restart")
	}
	e.svc.Connected(dev("lock1"), remote)
	e.pub.take()
	if got := e.handShake(t, "lock1", "lock"); got != "locked" {
		t.Errorf("welcome after restart: %q, want locked", got)
	}
	// The expired command is never sent again, and a late ack changes
	// nothing but the device state.
	if msgs := e.pub.take(); len(msgs) != 0 {
		t.Errorf("published after restart: %v", msgs)
	}
	e.dispatch(dev("lock1"), "ack "+sent.ID+" ok locked")
	if got := e.command(t, sent.ID); got.Status != actions.StatusExpired {
		t.Errorf("late ack after restart: %s, want expired", got.Status)
	}
}

func TestPersonWithoutGrant(t *testing.T) {
	e := newEnv(t, 0)
	bob, _ := e.addUser(t, "bob", actions.RoleMember)
	gus, _ := e.addUser(t, "gus", actions.RoleGuest)
	e.newOnline(t, "lock1", actions.KindLock)
	e.newOnline(t, "lockB", actions.KindLock)
	e.grant(t, "bob", "lockB", actions.Grant{})
	e.newOnline(t, "lockG", actions.KindLock)
	// gus's window has closed: he still sees the lock, but may not use it.
	now := e.clock.Now()
	e.grant(t, "gus", "lockG", actions.Grant{From: now.Add(-48 * time.Hour), Until: now.Add(-24 * time.Hour)})
	adminCmd, _ := e.send(t, "lock1", "lock")
	e.dispatch(dev("lock1"), "state jammed")
	e.pub.take()

	plainBob := actions.Principal{Kind: actions.PrincipalUser, ID: "bob", Role: actions.RoleMember}
	for _, p := range []actions.Principal{bob, plainBob, gus} {
		t.Run(p.ID+"/"+p.Role, func(t *testing.T) {
			_, err := e.svc.Device(p, "lock1")
			wantCode(t, err, actions.ENotFound)
			_, errNone := e.svc.Device(p, "nope")
			if actions.ErrorMessage(err) != strings.ReplaceAll(actions.ErrorMessage(errNone), "nope", "lock1") {
				t.Errorf("messages tell a hidden device (%q) from a missing one (%q)", actions.ErrorMessage(err), actions.ErrorMessage(errNone))
			}
			_, err = e.svc.SendCommand(p, "lock1", "unlock", actions.ViaREST)
			wantCode(t, err, actions.ENotFound)
			_, err = e.svc.Command(p, adminCmd.ID)
			wantCode(t, err, actions.ENotFound)
			wantCode(t, e.svc.DeleteDevice(p, "lock1"), actions.ENotFound)
			name := "mine now"
			_, err = e.svc.UpdateDevice(p, "lock1", actions.DevicePatch{Name: &name})
			wantCode(t, err, actions.ENotFound)
			_, _, err = e.svc.CreateDevice(p, actions.NewDevice{ID: "lock9", Kind: actions.KindLock})
			wantCode(t, err, actions.EForbidden)
			_, err = e.svc.CreateGrant(p, actions.Grant{User: p.ID, Device: "lock1"})
			if code := actions.ErrorCode(err); code != actions.ENotFound && code != actions.EForbidden {
				t.Errorf("CreateGrant on a hidden device: %v", err)
			}

			devs, err := e.svc.Devices(p)
			if err != nil || len(devs) != 1 {
				t.Fatalf("Devices = %+v, %v; want only the one granted to %s", devs, err, p.ID)
			}
			for _, q := range []actions.EventQuery{{}, {Device: "lock1"}, {Type: actions.EventCommand}, {Type: actions.EventAdmin}, {Type: actions.EventLoginRefused}} {
				evs, _, err := e.svc.Events(p, q)
				if err != nil {
					t.Fatalf("Events: %v", err)
				}
				for _, ev := range evs {
					if ev.Device != devs[0].ID || p.Role == actions.RoleGuest {
						t.Errorf("Events(%+v) shows %+v", q, ev)
					}
				}
			}

			for _, payload := range []string{"unlock lock1", "lock nope"} {
				wantCode(t, e.dispatch(p, payload), actions.ENotFound)
				wantOnly(t, e.pub.take(), "toapp/"+p.ID, "error ")
			}
			if p := e.pending(t); len(p) != 1 {
				t.Errorf("pending = %+v, want only the admin's command", p)
			}
			if d := e.device(t, "lock1"); d.Name != "lock1" {
				t.Errorf("lock1 renamed to %q", d.Name)
			}
			if d := e.pub.takeDisconnects(); len(d) != 0 {
				t.Errorf("disconnected %v", d)
			}
		})
	}
	t.Run("MemberOperatesGrantedDevice", func(t *testing.T) {
		c, err := e.svc.SendCommand(bob, "lockB", "unlock", actions.ViaREST)
		if err != nil {
			t.Fatalf("SendCommand: %v", err)
		}
		if c.Grant == "" {
			t.Errorf("command %+v does not name the grant that allowed it", c)
		}
		wantOnly(t, e.pub.take(), "todevice/lockB", "unlock "+c.ID)
		// "unlock" alone means every lock bob may operate: lockB only.
		if err := e.dispatch(bob, "unlock"); err != nil {
			t.Fatalf("unlock: %v", err)
		}
		wantOnly(t, e.pub.take(), "todevice/lockB", "unlock ")
	})
	t.Run("GuestOutsideWindow", func(t *testing.T) {
		if _, err := e.svc.Device(gus, "lockG"); err != nil {
			t.Fatalf("Device(lockG): %v", err)
		}
		_, err := e.svc.SendCommand(gus, "lockG", "unlock", actions.ViaREST)
		wantCode(t, err, actions.EForbidden)
		wantCode(t, e.dispatch(gus, "unlock"), actions.ENotFound)
		wantOnly(t, e.pub.take(), "toapp/gus", "error ")
		// Nor does he hear about it.
		e.svc.Disconnected(dev("lockG"), remote)
		for _, m := range e.pub.take() {
			if m.Topic == "toapp/gus" {
				t.Errorf("guest outside his window told %v", m)
			}
		}
	})
	t.Run("GuestInsideWindow", func(t *testing.T) {
		e.grant(t, "gus", "lock1", actions.Grant{From: now.Add(-time.Hour), Until: now.Add(time.Hour)})
		c, err := e.svc.SendCommand(gus, "lock1", "unlock", actions.ViaREST)
		if err != nil {
			t.Fatalf("SendCommand inside the window: %v", err)
		}
		wantOnly(t, e.pub.take(), "todevice/lock1", "unlock "+c.ID)
	})
}

func TestDeleteDevice(t *testing.T) {
	e := newEnv(t, 0)
	secret := e.newOnline(t, "lock1", actions.KindLock)
	c, _ := e.send(t, "lock1", "lock")

	if err := e.svc.DeleteDevice(e.admin, "lock1"); err != nil {
		t.Fatalf("DeleteDevice: %v", err)
	}
	if got := e.pub.takeDisconnects(); len(got) != 1 || got[0] != "device/lock1/" {
		t.Errorf("disconnected %v, want device/lock1", got)
	}
	_, err := e.svc.Device(e.admin, "lock1")
	wantCode(t, err, actions.ENotFound)
	if _, err := e.svc.AuthenticateMQTT("lock1", "lock1", []byte(secret), remote); err == nil {
		t.Error("a deleted device still logs in")
	}
	if evs := e.events(t, actions.EventQuery{Device: "lock1", Type: actions.EventCommand}); len(evs) != 1 || evs[0].Command != c.ID {
		t.Errorf("command events of the deleted device = %+v, want kept", evs)
	}
	// What the deleted device still says before its session ends is refused.
	e.svc.Disconnected(dev("lock1"), remote)
	if err := e.dispatch(dev("lock1"), "ack "+c.ID+" ok locked"); err == nil {
		t.Error("ack from a deleted device accepted")
	}
	if err := e.dispatch(dev("lock1"), "state open"); err == nil {
		t.Error("state from a deleted device accepted")
	}
	for _, m := range e.pub.take() {
		if m.Topic != "todevice/lock1" {
			t.Errorf("published %v about a deleted device", m)
		}
	}
	wantCode(t, e.svc.DeleteDevice(e.admin, "lock1"), actions.ENotFound)
}

func TestCreateDevice(t *testing.T) {
	e := newEnv(t, 0)
	d, secret, err := e.svc.CreateDevice(e.admin, actions.NewDevice{ID: "lock1", Kind: actions.KindLock, Name: "Front"})
	if err != nil {
		t.Fatalf("CreateDevice: %v", err)
	}
	if d.State != "unknown" || d.Owner != "admin" || d.Online || len(secret) != 64 {
		t.Errorf("device %+v, secret of %d characters", d, len(secret))
	}
	b, _ := json.Marshal(d)
	if bytes.Contains(b, []byte(secret)) || bytes.Contains(b, []byte("secret")) {
		t.Errorf("device JSON %s shows the secret", b)
	}
	_, _, err = e.svc.CreateDevice(e.admin, actions.NewDevice{ID: "lock1", Kind: actions.KindLock})
	wantCode(t, err, actions.EConflict)
	if _, err := e.svc.AuthenticateMQTT("lock1", "lock1", []byte(secret), remote); err != nil {
		t.Errorf("first secret stopped working after a refused duplicate: %v", err)
	}
	for _, nd := range []actions.NewDevice{
		{ID: "all", Kind: actions.KindLock},
		{ID: "inline", Kind: actions.KindLock},
		{ID: "a/b", Kind: actions.KindLock},
		{ID: "#", Kind: actions.KindLock},
		{ID: "", Kind: actions.KindLock},
		{ID: "door1", Kind: "door"},
		{ID: "door1", Kind: actions.KindLock, Name: "bad\x00name"},
	} {
		_, _, err := e.svc.CreateDevice(e.admin, nd)
		if actions.ErrorCode(err) != actions.EInvalid {
			t.Errorf("CreateDevice(%+v) = %v, want invalid", nd, err)
		}
	}
}

func TestStateReport(t *testing.T) {
	e := newEnv(t, 0)
	e.newOnline(t, "lock1", actions.KindLock)
	e.newOnline(t, "light1", actions.KindLight)
	if err := e.dispatch(dev("lock1"), "state jammed"); err != nil {
		t.Fatalf("state jammed: %v", err)
	}
	wantOnly(t, e.pub.take(), "toapp/admin", "state lock1 jammed")
	if d := e.device(t, "lock1"); d.State != "jammed" {
		t.Errorf("state = %q, want jammed", d.State)
	}
	for _, c := range []struct{ id, payload string }{
		{"lock1", "state on"},
		{"lock1", "state"},
		{"lock1", "state locked now"},
		{"light1", "state locked"},
		{"light1", "state expired"},
	} {
		wantCode(t, e.dispatch(dev(c.id), c.payload), actions.EInvalid)
		wantOnly(t, e.pub.take(), "todevice/"+c.id, "error ")
	}
	if d := e.device(t, "lock1"); d.State != "jammed" {
		t.Errorf("state = %q after refused reports, want jammed", d.State)
	}
	if d := e.device(t, "light1"); d.State != "unknown" {
		t.Errorf("light state = %q after refused reports, want unknown", d.State)
	}
}

func TestNew(t *testing.T) {
	db, err := store.Open(filepath.Join(t.TempDir(), "g.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, tc := range []struct {
		ttl  time.Duration
		want time.Duration // 0: refused
	}{
		{0, actions.DefaultCommandTTL},
		{time.Second, time.Second},
		{actions.MaxCommandTTL, actions.MaxCommandTTL},
		{actions.MaxCommandTTL + time.Second, 0},
		{500 * time.Millisecond, 0},
		{-time.Second, 0},
	} {
		svc, err := actions.New(actions.Config{Store: db, CommandTTL: tc.ttl})
		switch {
		case tc.want == 0 && err == nil:
			t.Errorf("New(ttl %s) accepted", tc.ttl)
		case tc.want != 0 && err != nil:
			t.Errorf("New(ttl %s): %v", tc.ttl, err)
		case tc.want != 0 && svc.CommandTTL() != tc.want:
			t.Errorf("New(ttl %s).CommandTTL() = %s, want %s", tc.ttl, svc.CommandTTL(), tc.want)
		}
	}
	if _, err := actions.New(actions.Config{}); err == nil {
		t.Error("New without a store accepted")
	}
}

func TestPairing(t *testing.T) {
	e := newEnv(t, 0)
	bob, _ := e.addUser(t, "bob", actions.RoleMember)
	gus, _ := e.addUser(t, "gus", actions.RoleGuest)
	e.newDevice(t, "taken", actions.KindLock)
	n := 0
	from := func() string { n++; return fmt.Sprintf("192.0.2.%d:6000", n) }
	login := func(t *testing.T, clientID, code string) (actions.Principal, error) {
		t.Helper()
		return e.svc.AuthenticateMQTT(clientID, actions.PairUsername, []byte(code), from())
	}

	if _, _, err := e.svc.CreatePairing(gus, actions.KindLock); actions.ErrorCode(err) != actions.EForbidden {
		t.Errorf("guest CreatePairing: %v, want forbidden", err)
	}
	if _, _, err := e.svc.CreatePairing(bob, "door"); actions.ErrorCode(err) != actions.EInvalid {
		t.Errorf("CreatePairing(door): %v, want invalid", err)
	}

	t.Run("OK", func(t *testing.T) {
		code, _, err := e.svc.CreatePairing(bob, actions.KindLock)
		if err != nil {
			t.Fatal(err)
		}
		p, err := login(t, "porch", strings.ToLower(strings.ReplaceAll(code, "-", "")))
		if err != nil || p.Kind != actions.PrincipalPair || p.ID != "porch" {
			t.Fatalf("pair login = %+v, %v", p, err)
		}
		// A pairing login does nothing but hand_shake.
		for _, payload := range []string{"unlock taken", "unlock", "state locked", "ack 0123456789abcdef ok locked", "lock_response 0"} {
			if err := e.dispatch(p, payload); err == nil {
				t.Errorf("%q from a pairing login accepted", payload)
			}
			wantOnly(t, e.pub.take(), "todevice/porch", "error ")
		}
		if err := e.dispatch(p, "hand_shake lock 1.0 Porch door"); err != nil {
			t.Fatalf("hand_shake: %v", err)
		}
		reply := wantOnly(t, e.pub.take(), "todevice/porch", "credentials porch ")
		secret := strings.TrimPrefix(reply, "credentials porch ")
		if got, err := e.svc.AuthenticateMQTT("porch", "porch", []byte(secret), from()); err != nil || got != dev("porch") {
			t.Errorf("login with the new secret = %+v, %v", got, err)
		}
		d, err := e.svc.Device(bob, "porch")
		if err != nil || d.Kind != actions.KindLock || d.Owner != "bob" || d.Name != "Porch door" || d.Firmware != "1.0" {
			t.Errorf("Device(bob, porch) = %+v, %v", d, err)
		}
		if evs := e.events(t, actions.EventQuery{Type: actions.EventPairing, Device: "porch"}); len(evs) != 1 {
			t.Errorf("pairing events = %+v, want one", evs)
		}
		// The code is spent.
		if _, err := login(t, "porch2", code); err == nil {
			t.Error("a spent code logs in again")
		}
		if err := e.dispatch(p, "hand_shake lock"); err == nil {
			t.Error("a second hand_shake with a spent code accepted")
		}
		wantOnly(t, e.pub.take(), "todevice/porch", "error ")
	})
	t.Run("ErrWrongKindKeepsCode", func(t *testing.T) {
		code, _, _ := e.svc.CreatePairing(bob, actions.KindLight)
		p, err := login(t, "lamp", code)
		if err != nil {
			t.Fatal(err)
		}
		wantCode(t, e.dispatch(p, "hand_shake lock"), actions.EInvalid)
		wantOnly(t, e.pub.take(), "todevice/lamp", "error ")
		if _, err := e.svc.Device(e.admin, "lamp"); actions.ErrorCode(err) != actions.ENotFound {
			t.Errorf("device made by a refused hand_shake: %v", err)
		}
		if err := e.dispatch(p, "hand_shake light"); err != nil {
			t.Fatalf("hand_shake light: %v", err)
		}
		wantOnly(t, e.pub.take(), "todevice/lamp", "credentials lamp ")
	})
	t.Run("ErrClientID", func(t *testing.T) {
		code, _, _ := e.svc.CreatePairing(bob, actions.KindLock)
		for _, id := range []string{"taken", "all", "inline", "pair", "a/b", "#", "", strings.Repeat("x", 65)} {
			if p, err := login(t, id, code); err == nil {
				t.Errorf("pair login as %q = %+v", id, p)
			}
		}
		// A device created between login and hand_shake keeps its id.
		p, err := login(t, "racer", code)
		if err != nil {
			t.Fatal(err)
		}
		secret := e.newDevice(t, "racer", actions.KindLock)
		wantCode(t, e.dispatch(p, "hand_shake lock"), actions.EConflict)
		wantOnly(t, e.pub.take(), "todevice/racer", "error ")
		if _, err := e.svc.AuthenticateMQTT("racer", "racer", []byte(secret), from()); err != nil {
			t.Errorf("the admin's racer lost its secret: %v", err)
		}
	})
	t.Run("ErrExpired", func(t *testing.T) {
		code, _, _ := e.svc.CreatePairing(bob, actions.KindLock)
		p, err := login(t, "late", code)
		if err != nil {
			t.Fatal(err)
		}
		e.clock.advance(11 * time.Minute)
		if _, err := login(t, "late", code); err == nil {
			t.Error("an expired code logs in")
		}
		wantCode(t, e.dispatch(p, "hand_shake lock"), actions.EConflict)
		e.pub.take()
		if _, err := e.svc.Device(e.admin, "late"); actions.ErrorCode(err) != actions.ENotFound {
			t.Errorf("device made with an expired code: %v", err)
		}
	})
}

func TestDeleteDeviceDropsGrants(t *testing.T) {
	e := newEnv(t, 0)
	bob, _ := e.addUser(t, "bob", actions.RoleMember)
	e.newDevice(t, "door", actions.KindLock)
	e.grant(t, "bob", "door", actions.Grant{})
	if err := e.svc.DeleteDevice(e.admin, "door"); err != nil {
		t.Fatal(err)
	}
	e.newOnline(t, "door", actions.KindLock) // new hardware, same id

	_, err := e.svc.Device(bob, "door")
	wantCode(t, err, actions.ENotFound)
	_, err = e.svc.SendCommand(bob, "door", "unlock", actions.ViaREST)
	wantCode(t, err, actions.ENotFound)
	grants, _ := e.svc.Grants(e.admin)
	for _, g := range grants {
		if g.Device == "door" {
			t.Errorf("grant %+v of a deleted device survives", g)
		}
	}
}

// closed waits up to 5 s for sub's channel to be closed and returns the
// events it held until then; it fails when the channel stays open.
func closed(tb testing.TB, sub *actions.Subscription) []actions.Event {
	tb.Helper()
	var got []actions.Event
	deadline := time.After(5 * time.Second)
	for {
		select {
		case e, ok := <-sub.C:
			if !ok {
				return got
			}
			got = append(got, e)
		case <-deadline:
			tb.Fatalf("subscription still open; it received %+v", got)
			return got
		}
	}
}

// A subscription (an event stream) ends when the access it was made with
// does, and reads nothing from that moment on: a revoked token's at the
// revocation, a deleted user's at the deletion, an expiring token's at
// its expiry (by a timer, with no event to wake it). The person's other
// subscriptions go on.
func TestSubscriptionEndsWithAccess(t *testing.T) {
	e := newEnv(t, 0)
	eve, _ := e.addUser(t, "eve", actions.RoleAdmin)
	other := e.svc.Subscribe(eve)
	defer e.svc.Unsubscribe(other)

	t.Run("RevokeToken", func(t *testing.T) {
		tok, secret, err := e.svc.CreateToken(eve, "eve", "laptop", time.Time{})
		if err != nil {
			t.Fatal(err)
		}
		p, err := e.svc.AuthenticateBearer(secret, remote)
		if err != nil {
			t.Fatal(err)
		}
		sub := e.svc.Subscribe(p)
		defer e.svc.Unsubscribe(sub)
		e.newDevice(t, "before", actions.KindLock) // queued, not yet read
		if err := e.svc.RevokeToken(e.admin, tok.ID); err != nil {
			t.Fatal(err)
		}
		e.newDevice(t, "after", actions.KindLock)
		for _, ev := range closed(t, sub) {
			t.Errorf("revoked token's subscription received %+v", ev)
		}
		if got := e.pub.takeDisconnects(); !slices.Contains(got, "user/eve/"+tok.ID) {
			t.Errorf("MQTT sessions of the token not ended: %v", got)
		}
	})
	t.Run("TokenExpires", func(t *testing.T) {
		_, secret, err := e.svc.CreateToken(eve, "eve", "brief", e.clock.Now().Add(200*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		p, err := e.svc.AuthenticateBearer(secret, remote)
		if err != nil {
			// The machine was slow enough for the token to expire already.
			wantCode(t, err, actions.EUnauthorized)
			return
		}
		sub := e.svc.Subscribe(p)
		defer e.svc.Unsubscribe(sub)
		closed(t, sub)
		if !e.svc.Expired(p) {
			t.Error("subscription ended before its token expired")
		}
	})
	t.Run("ExpiredBeforeSubscribing", func(t *testing.T) {
		p := eve
		p.Expires = e.clock.Now().Add(-time.Second)
		sub := e.svc.Subscribe(p)
		defer e.svc.Unsubscribe(sub)
		e.newDevice(t, "late", actions.KindLock)
		for _, ev := range closed(t, sub) {
			t.Errorf("subscription of an expired token received %+v", ev)
		}
	})
	t.Run("OtherTokenGoesOn", func(t *testing.T) {
		var got []string
		for len(other.C) > 0 {
			got = append(got, (<-other.C).Detail)
		}
		if !slices.Contains(got, "device created: lock") || len(got) < 3 {
			t.Errorf("eve's other subscription received %q", got)
		}
	})
	t.Run("DeleteUser", func(t *testing.T) {
		if err := e.svc.DeleteUser(e.admin, "eve"); err != nil {
			t.Fatal(err)
		}
		e.newDevice(t, "gone", actions.KindLock)
		for _, ev := range closed(t, other) {
			t.Errorf("deleted user's subscription received %+v", ev)
		}
	})
	t.Run("AdminGoesOn", func(t *testing.T) {
		sub := e.svc.Subscribe(e.admin)
		defer e.svc.Unsubscribe(sub)
		e.newDevice(t, "still", actions.KindLock)
		select {
		case ev := <-sub.C:
			if ev.Device != "still" {
				t.Errorf("admin received %+v", ev)
			}
		case <-time.After(5 * time.Second):
			t.Error("admin's subscription received nothing")
		}
	})
}

// A guest reads, like a member, nothing from before their grant was made,
// even inside its window; and sees a device's live state only while a
// grant is open.
func TestGuestAccessEndsWithGrant(t *testing.T) {
	e := newEnv(t, 0)
	e.newOnline(t, "door", actions.KindLock)
	e.dispatch(dev("door"), "state open") // before gus has a grant
	gus, _ := e.addUser(t, "gus", actions.RoleGuest)
	now := e.clock.Now()
	g := e.grant(t, "gus", "door", actions.Grant{From: now.Add(-time.Hour), Until: now.Add(time.Hour)})
	e.clock.advance(time.Millisecond)
	e.dispatch(dev("door"), "state locked")

	evs, _, err := e.svc.Events(gus, actions.EventQuery{Device: "door", Type: actions.EventState})
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 1 || evs[0].Detail != "locked" || evs[0].Time.Before(g.Created) {
		t.Errorf("guest reads %+v, want only the state after the grant", evs)
	}
	if d, err := e.svc.Device(gus, "door"); err != nil || d.State != "locked" || !d.Online || d.LastSeen.IsZero() {
		t.Errorf("inside the window: %+v, %v", d, err)
	}

	e.clock.advance(2 * time.Hour) // the grant has ended
	d, err := e.svc.Device(gus, "door")
	if err != nil || d.State != "unknown" || d.Online || !d.LastSeen.IsZero() || d.Desired != "" {
		t.Errorf("after the grant: %+v, %v; want the device without its live state", d, err)
	}
	if l, err := e.svc.Devices(gus); err != nil || len(l) != 1 || l[0].State != "unknown" || l[0].Online {
		t.Errorf("Devices after the grant: %+v, %v", l, err)
	}
	if d := e.device(t, "door"); d.State != "locked" || !d.Online {
		t.Errorf("the admin reads %+v", d)
	}
}
