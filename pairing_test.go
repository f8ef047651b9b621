package main

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"
)

func (s *testServer) pairingCode(token, kind string) string {
	s.t.Helper()
	st, body := s.as(token, "POST", "/api/v1/pairings", map[string]string{"kind": kind})
	var p struct {
		Code    string
		Expires time.Time
	}
	json.Unmarshal([]byte(body), &p)
	if st != http.StatusCreated || p.Code == "" {
		s.t.Fatalf("pairing: %d %s", st, body)
	}
	return p.Code
}

func TestPairing(t *testing.T) {
	clk := newClock(tuesday10)
	s := startServerWith(t, "", func(c *config) { c.now = clk.now })
	alice := s.createUser("alice", "member")
	s.createDevice("taken", "lock")
	code := s.pairingCode(alice, "lock")

	t.Run("OK", func(t *testing.T) {
		dev := s.connect("newlock", "pair", code)
		if got := dev.subscribe("todevice/newlock"); got != 1 {
			t.Fatalf("pairing device subscribes to its topic: %#x", got)
		}
		for _, topic := range []string{"todevice/taken", "toapp/alice", "#"} {
			if got := dev.subscribe(topic); got != 0x80 {
				t.Errorf("pairing device subscribes to %s: %#x", topic, got)
			}
		}
		dev.publish("toserver", false, "state locked")
		dev.expect("todevice/newlock error a pairing login can only send hand_shake")
		dev.publish("toserver", false, "hand_shake light")
		dev.expect(`todevice/newlock error this pairing code is for a lock, not a "light"`)
		dev.publish("toserver", false, "hand_shake lock 2.0 Garden gate")
		f := strings.Fields(dev.expect("todevice/newlock credentials "))
		if len(f) != 4 || f[2] != "newlock" || len(f[3]) != 64 {
			t.Fatalf("credentials message %v", f)
		}
		secret := f[3]
		dev.c.Disconnect(100)
		var d deviceJSON
		s.apiJSON("GET", "/api/v1/devices/newlock", nil, http.StatusOK, &d)
		if d.Name != "Garden gate" || d.Firmware != "2.0" {
			t.Errorf("paired device %+v", d)
		}

		// The device comes back with its own credentials and its owner
		// can use it.
		real := s.device("newlock", secret, "lock")
		t.Cleanup(ackLoop(t, real, "newlock", lockStates))
		if st, body := s.as(alice, "POST", "/api/v1/devices/newlock/lock?wait=5s", nil); st != http.StatusOK {
			t.Errorf("alice locks her paired device: %d %s", st, body)
		}
		st, body := s.as(alice, "GET", "/api/v1/devices/newlock", nil)
		if st != http.StatusOK || !strings.Contains(body, `"owner":"alice"`) {
			t.Errorf("paired device: %d %s", st, body)
		}
		if ev := s.events("type=pairing&device=newlock"); len(ev) != 1 || ev[0].User != "alice" {
			t.Errorf("pairing events %+v", ev)
		}
	})
	t.Run("ErrSpent", func(t *testing.T) {
		if _, err := s.tryConnect("another", "pair", code); err == nil {
			t.Error("spent code accepted")
		}
	})
	t.Run("ErrWrongCode", func(t *testing.T) {
		if _, err := s.tryConnect("another", "pair", "ABCD-EFGH"); err == nil {
			t.Error("wrong code accepted")
		}
	})
	t.Run("ErrTakenID", func(t *testing.T) {
		code := s.pairingCode(alice, "lock")
		if _, err := s.tryConnect("taken", "pair", code); err == nil {
			t.Error("pairing as an existing device accepted")
		}
		if _, err := s.tryConnect("bad/id", "pair", code); err == nil {
			t.Error("pairing with an invalid id accepted")
		}
		// Lower case and without the dash, as typed on a phone, is fine.
		c, err := s.tryConnect("fresh", "pair", strings.ToLower(strings.ReplaceAll(code, "-", "")))
		if err != nil {
			t.Fatalf("code typed in lower case without dash: %v; events %+v", err, s.events("type=login_refused&limit=3"))
		}
		c.c.Disconnect(0)
	})
	t.Run("ErrExpired", func(t *testing.T) {
		code := s.pairingCode(alice, "camera")
		clk.add(11 * time.Minute)
		if _, err := s.tryConnect("cam", "pair", code); err == nil {
			t.Error("expired code accepted")
		}
	})
	t.Run("ErrUsedTwiceAtOnce", func(t *testing.T) {
		code := s.pairingCode(alice, "light")
		a := s.connect("lamp1", "pair", code)
		b := s.connect("lamp2", "pair", code)
		a.subscribe("todevice/lamp1")
		b.subscribe("todevice/lamp2")
		a.publish("toserver", false, "hand_shake light")
		a.expect("todevice/lamp1 credentials lamp1 ")
		b.publish("toserver", false, "hand_shake light")
		b.expect("todevice/lamp2 error pairing code already used")
	})
	var refused int
	for _, e := range s.events("type=login_refused&limit=100") {
		if e.User == "pair" {
			refused++
		}
	}
	if refused < 4 {
		t.Errorf("refused pairing logins recorded: %d", refused)
	}
}

func TestThrottle(t *testing.T) {
	clk := newClock(tuesday10)
	s := startServerWith(t, "", func(c *config) { c.now = clk.now })
	alice := s.createUser("alice", "member")
	// Alice has used the address 127.0.0.4 before.
	s.connectFrom("127.0.0.4", "alice-home", "alice", alice).c.Disconnect(0)

	attack := func(src string, n int) {
		for i := 0; i < n; i++ {
			if c, err := s.tryConnectFrom(src, "x", "alice", "guess"+strings.Repeat("x", i)); err == nil {
				c.c.Disconnect(0)
				t.Fatal("a wrong token logged in")
			}
		}
	}
	attack("127.0.0.2", 12)
	t.Run("AttackerAddressBlocked", func(t *testing.T) {
		if _, err := s.tryConnectFrom("127.0.0.2", "alice-x", "alice", alice); err == nil {
			t.Error("right token from the attacker's address accepted while blocked")
		}
		if st := s.apiFrom("127.0.0.2", "GET", "/api/v1/devices", testAdminToken); st != http.StatusTooManyRequests {
			t.Errorf("REST from the blocked address: %d", st)
		}
	})
	t.Run("OtherAddressNotBlocked", func(t *testing.T) {
		c := s.connectFrom("127.0.0.3", "alice-phone", "alice", alice)
		c.c.Disconnect(0)
		if st := s.apiFrom("127.0.0.3", "GET", "/api/v1/devices", alice); st != http.StatusOK {
			t.Errorf("alice over REST from a clean address: %d", st)
		}
	})
	t.Run("SharedAddressKnownUser", func(t *testing.T) {
		attack("127.0.0.4", 12) // the attacker behind alice's own NAT
		c := s.connectFrom("127.0.0.4", "alice-home", "alice", alice)
		c.c.Disconnect(0)
	})
	t.Run("BlockEnds", func(t *testing.T) {
		clk.add(maxBlockForTest)
		c := s.connectFrom("127.0.0.2", "alice-x", "alice", alice)
		c.c.Disconnect(0)
	})
	throttled := 0
	for _, e := range s.events("type=login_refused&limit=1000") {
		if strings.Contains(e.Detail, "too many failed logins") {
			throttled++
		}
	}
	if throttled == 0 {
		t.Error("no throttled refusal recorded as an event")
	}
}

const maxBlockForTest = 16 * time.Minute

func (s *testServer) connectFrom(src, clientID, user, pass string) *client {
	s.t.Helper()
	c, err := s.tryConnectFrom(src, clientID, user, pass)
	if err != nil {
		s.t.Fatalf("connect %s from %s: %v", clientID, src, err)
	}
	return c
}
