package main

import (
	"encoding/json"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// clock is a settable clock for grant windows and expiries.
type clock struct{ ns atomic.Int64 }

func newClock(t time.Time) *clock { c := &clock{}; c.set(t); return c }
func (c *clock) now() time.Time   { return time.Unix(0, c.ns.Load()).UTC() }
func (c *clock) set(t time.Time)  { c.ns.Store(t.UnixNano()) }
func (c *clock) add(d time.Duration) {
	c.ns.Add(int64(d))
}

// tuesday10 is a Tuesday, 10:00 UTC (the test server's time zone).
var tuesday10 = time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)

func (s *testServer) createUser(name, role string) string {
	s.t.Helper()
	var u struct{ Name, Role, Token string }
	s.apiJSON("POST", "/api/v1/users", map[string]string{"name": name, "role": role}, http.StatusCreated, &u)
	if u.Token == "" || u.Role != role {
		s.t.Fatalf("create user %s: %+v", name, u)
	}
	return u.Token
}

func (s *testServer) grant(body map[string]any) string {
	s.t.Helper()
	var g struct{ ID string }
	s.apiJSON("POST", "/api/v1/grants", body, http.StatusCreated, &g)
	return g.ID
}

// as sends a request with token and returns status and body.
func (s *testServer) as(token, method, path string, body any) (int, string) {
	s.t.Helper()
	st, b := s.api(method, path, token, body)
	return st, string(b)
}

func TestAccessByRole(t *testing.T) {
	clk := newClock(tuesday10)
	s := startServerWith(t, "", func(c *config) { c.now = clk.now })
	door := s.device("door", s.createDevice("door", "lock"), "lock")
	t.Cleanup(ackLoop(t, door, "door", lockStates))
	back := s.device("back", s.createDevice("back", "lock"), "lock")
	t.Cleanup(ackLoop(t, back, "back", lockStates))

	alice := s.createUser("alice", "member")
	bob := s.createUser("bob", "member")
	carol := s.createUser("carol", "guest")
	aliceGrant := s.grant(map[string]any{"user": "alice", "device": "door"})
	// The cleaner: Tuesdays, 9 to 12.
	s.grant(map[string]any{"user": "carol", "device": "door", "weekdays": []string{"tue"}, "hours": "09:00-12:00"})

	t.Run("MemberWithGrant", func(t *testing.T) {
		st, body := s.as(alice, "GET", "/api/v1/devices", nil)
		if st != http.StatusOK || !strings.Contains(body, `"id":"door"`) || strings.Contains(body, `"id":"back"`) {
			t.Errorf("alice's devices: %d %s", st, body)
		}
		st, body = s.as(alice, "POST", "/api/v1/devices/door/lock?wait=5s", nil)
		var c commandJSON
		json.Unmarshal([]byte(body), &c)
		if st != http.StatusOK || c.Status != "done" || c.By != "alice" {
			t.Errorf("alice locks door: %d %s", st, body)
		}
		if !strings.Contains(body, `"grant":"`+aliceGrant+`"`) {
			t.Errorf("command does not name the grant %s: %s", aliceGrant, body)
		}
		found := false
		for _, e := range s.events("device=door&type=command") {
			found = found || (e.User == "alice" && strings.Contains(e.Detail, "under grant "+aliceGrant))
		}
		if !found {
			t.Error("no command event recording alice's grant")
		}
		if st, body := s.as(alice, "POST", "/api/v1/devices/back/unlock", nil); st != http.StatusNotFound {
			t.Errorf("alice unlocks back: %d %s", st, body)
		}
		if st, body := s.as(alice, "GET", "/api/v1/events?device=back", nil); st != http.StatusOK || strings.Contains(body, `"device":"back"`) {
			t.Errorf("alice reads back's events: %d %s", st, body)
		}
		var l struct{ Items []map[string]any }
		st, body = s.as(alice, "POST", "/api/v1/lock?wait=5s", nil)
		json.Unmarshal([]byte(body), &l)
		if st != http.StatusOK || len(l.Items) != 1 || l.Items[0]["device"] != "door" {
			t.Errorf("alice locks all: %d %s", st, body)
		}
	})
	t.Run("MemberWithoutGrant", func(t *testing.T) {
		for _, r := range []struct{ method, path string }{
			{"GET", "/api/v1/devices/door"}, {"POST", "/api/v1/devices/door/unlock"},
			{"PATCH", "/api/v1/devices/door"}, {"DELETE", "/api/v1/devices/door"},
		} {
			if st, body := s.as(bob, r.method, r.path, map[string]string{}); st != http.StatusNotFound {
				t.Errorf("bob %s %s: %d %s", r.method, r.path, st, body)
			}
		}
		if st, body := s.as(bob, "GET", "/api/v1/devices", nil); st != http.StatusOK || strings.Contains(body, `"id"`) {
			t.Errorf("bob's devices: %d %s", st, body)
		}
		if st, body := s.as(bob, "GET", "/api/v1/events", nil); st != http.StatusOK || strings.Contains(body, `"device"`) {
			t.Errorf("bob's events: %d %s", st, body)
		}
		if st, body := s.as(bob, "POST", "/api/v1/lock", nil); st != http.StatusOK || body != `{"items":[],"next":""}`+"\n" {
			t.Errorf("bob locks all: %d %q", st, body)
		}
		if st, body := s.as(bob, "POST", "/test", map[string]string{"name": "unlock"}); st != http.StatusOK || body != "1" {
			t.Errorf("bob /test: %d %q", st, body)
		}
	})
	t.Run("AdminOnly", func(t *testing.T) {
		for _, r := range []struct {
			method, path string
			body         any
		}{
			{"POST", "/api/v1/devices", map[string]string{"id": "x", "kind": "lock"}},
			{"POST", "/api/v1/users", map[string]string{"name": "eve", "role": "admin"}},
			{"DELETE", "/api/v1/users/bob", nil},
			{"POST", "/api/v1/grants", map[string]any{"user": "bob", "device": "door"}},
		} {
			if st, body := s.as(alice, r.method, r.path, r.body); st != http.StatusForbidden && st != http.StatusNotFound {
				t.Errorf("alice %s %s: %d %s", r.method, r.path, st, body)
			}
		}
		if st, body := s.as(alice, "GET", "/api/v1/users", nil); !strings.Contains(body, `"alice"`) || strings.Contains(body, `"bob"`) {
			t.Errorf("alice lists users: %d %s", st, body)
		}
		if st, body := s.as(alice, "POST", "/api/v1/users/bob/tokens", map[string]string{"name": "x"}); st != http.StatusNotFound {
			t.Errorf("alice makes a token for bob: %d %s", st, body)
		}
	})
	t.Run("GuestInsideWindow", func(t *testing.T) {
		clk.set(tuesday10)
		if st, body := s.as(carol, "POST", "/api/v1/devices/door/unlock?wait=5s", nil); st != http.StatusOK {
			t.Errorf("carol on Tuesday at 10: %d %s", st, body)
		}
		if st, body := s.as(carol, "GET", "/api/v1/events?device=door&type=ack", nil); st != http.StatusOK || !strings.Contains(body, `"ack"`) {
			t.Errorf("carol reads door inside her window: %d %s", st, body)
		}
	})
	for _, tc := range []struct {
		name string
		at   time.Time
	}{
		{"GuestWrongWeekday", tuesday10.AddDate(0, 0, 1)},
		{"GuestBeforeHours", tuesday10.Add(-90 * time.Minute)},
		{"GuestAtEndOfHours", tuesday10.Add(2 * time.Hour)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clk.set(tc.at)
			st, body := s.as(carol, "POST", "/api/v1/devices/door/unlock", nil)
			if st != http.StatusForbidden || !strings.Contains(body, "does not allow it now") {
				t.Errorf("carol at %s: %d %s", tc.at.Format("Mon 15:04"), st, body)
			}
			if st, body := s.as(carol, "GET", "/api/v1/devices/door", nil); st != http.StatusOK {
				t.Errorf("carol sees door outside her window: %d %s", st, body)
			}
			if st, body := s.as(carol, "GET", "/api/v1/events", nil); strings.Contains(body, `"device"`) {
				t.Errorf("carol reads events outside her window: %d %s", st, body)
			}
		})
	}
	t.Run("GuestDateRange", func(t *testing.T) {
		clk.set(tuesday10)
		dave := s.createUser("dave", "guest")
		s.grant(map[string]any{"user": "dave", "device": "back", "from": tuesday10.Add(time.Hour), "until": tuesday10.Add(48 * time.Hour)})
		if st, body := s.as(dave, "POST", "/api/v1/devices/back/unlock", nil); st != http.StatusForbidden {
			t.Errorf("dave before from: %d %s", st, body)
		}
		clk.set(tuesday10.Add(2 * time.Hour))
		if st, body := s.as(dave, "POST", "/api/v1/devices/back/unlock?wait=5s", nil); st != http.StatusOK {
			t.Errorf("dave inside range: %d %s", st, body)
		}
		clk.set(tuesday10.Add(48 * time.Hour))
		if st, body := s.as(dave, "POST", "/api/v1/devices/back/unlock", nil); st != http.StatusForbidden {
			t.Errorf("dave at until: %d %s", st, body)
		}
		if st, body := s.as(dave, "POST", "/api/v1/pairings", map[string]string{"kind": "lock"}); st != http.StatusForbidden {
			t.Errorf("guest pairing: %d %s", st, body)
		}
		if st, body := s.as(alice, "DELETE", "/api/v1/grants/"+aliceGrant, nil); st != http.StatusNotFound && st != http.StatusForbidden {
			t.Errorf("alice revokes her own grant: %d %s", st, body)
		}
	})
	t.Run("BadGrants", func(t *testing.T) {
		for _, g := range []map[string]any{
			{"user": "alice", "device": "nosuch"},
			{"user": "nobody", "device": "door"},
			{"user": "alice", "device": "door", "hours": "9-12"},
			{"user": "alice", "device": "door", "hours": "25:00-26:00"},
			{"user": "alice", "device": "door", "weekdays": []string{"funday"}},
			{"user": "alice", "device": "door", "from": tuesday10, "until": tuesday10.Add(-time.Hour)},
			{"user": "alice", "device": "door", "from": "next tuesday"},
		} {
			if st, body := s.api("POST", "/api/v1/grants", "", g); st != http.StatusBadRequest && st != http.StatusNotFound {
				t.Errorf("grant %v: %d %s", g, st, body)
			}
		}
	})
}

func TestAccessOverMQTT(t *testing.T) {
	s := startServer(t, "")
	door := s.device("door", s.createDevice("door", "lock"), "lock")
	t.Cleanup(ackLoop(t, door, "door", lockStates))
	s.createDevice("back", "lock")
	alice := s.createUser("alice", "member")
	bob := s.createUser("bob", "member")
	s.grant(map[string]any{"user": "alice", "device": "door"})

	ap := s.connect("alice-phone", "alice", alice)
	ap.subscribe("toapp/alice")
	bp := s.connect("bob-phone", "bob", bob)
	bp.subscribe("toapp/bob")
	if got := bp.subscribe("toapp/alice"); got != 0x80 {
		t.Errorf("bob subscribes to alice's topic: %#x", got)
	}

	ap.publish("toserver", false, "lock door")
	ap.expect("toapp/alice lock_response ")
	ap.publish("toserver", false, "unlock back")
	ap.expect(`toapp/alice error device "back" not found`)
	bp.publish("toserver", false, "unlock door")
	bp.expect(`toapp/bob error device "door" not found`)
	bp.publish("toserver", false, "lock")
	bp.expect("toapp/bob error no lock you may operate")
	// Bob hears nothing about the door.
	door.publish("toserver", false, "state jammed")
	ap.expect("toapp/alice state door jammed")
	bp.quiet(300 * time.Millisecond)
}

func TestTokens(t *testing.T) {
	clk := newClock(tuesday10)
	s := startServerWith(t, "", func(c *config) { c.now = clk.now })
	first := s.createUser("alice", "member")
	var tk struct{ ID, Token string }
	st, body := s.as(first, "POST", "/api/v1/users/alice/tokens", map[string]any{"name": "tablet"})
	json.Unmarshal([]byte(body), &tk)
	if st != http.StatusCreated || tk.Token == "" || tk.ID == "" {
		t.Fatalf("alice makes a token: %d %s", st, body)
	}
	if st, body := s.as(tk.Token, "GET", "/api/v1/devices", nil); st != http.StatusOK {
		t.Fatalf("new token: %d %s", st, body)
	}
	if st, body := s.as(first, "GET", "/api/v1/users/alice/tokens", nil); st != http.StatusOK || strings.Contains(body, tk.Token) || !strings.Contains(body, "tablet") {
		t.Errorf("token list: %d %s", st, body)
	}
	live := s.connect("tablet", "alice", tk.Token)
	other := s.connect("phone", "alice", first)

	t.Run("Revoke", func(t *testing.T) {
		if st, body := s.as(first, "DELETE", "/api/v1/tokens/"+tk.ID, nil); st != http.StatusNoContent {
			t.Fatalf("revoke: %d %s", st, body)
		}
		if st, _ := s.as(tk.Token, "GET", "/api/v1/devices", nil); st != http.StatusUnauthorized {
			t.Errorf("revoked token on REST: %d", st)
		}
		select {
		case <-live.lost:
		case <-time.After(5 * time.Second):
			t.Error("MQTT session of a revoked token still connected")
		}
		if _, err := s.tryConnect("tablet", "alice", tk.Token); err == nil {
			t.Error("revoked token logs in over MQTT")
		}
		// Her other token and session are untouched.
		if st, _ := s.as(first, "GET", "/api/v1/devices", nil); st != http.StatusOK {
			t.Errorf("other token after revoke: %d", st)
		}
		if !other.c.IsConnectionOpen() {
			t.Error("session of another token was disconnected")
		}
	})
	t.Run("Expiry", func(t *testing.T) {
		if st, body := s.as(first, "POST", "/api/v1/users/alice/tokens", map[string]any{"name": "old", "expires": tuesday10.Add(-time.Hour)}); st != http.StatusBadRequest {
			t.Errorf("token expiring in the past: %d %s", st, body)
		}
		_, body := s.as(first, "POST", "/api/v1/users/alice/tokens", map[string]any{"name": "day", "expires": tuesday10.Add(24 * time.Hour)})
		json.Unmarshal([]byte(body), &tk)
		if st, _ := s.as(tk.Token, "GET", "/api/v1/devices", nil); st != http.StatusOK {
			t.Errorf("token before expiry: %d", st)
		}
		session := s.connect("alice-day", "alice", tk.Token)
		session.subscribe("toapp/alice")
		session.publish("toserver", false, "lock nosuch")
		session.expect("toapp/alice error ")
		clk.add(24 * time.Hour)
		if st, _ := s.as(tk.Token, "GET", "/api/v1/devices", nil); st != http.StatusUnauthorized {
			t.Errorf("token after expiry: %d", st)
		}
		// A session opened before the expiry can do nothing after it.
		session.publish("toserver", false, "lock nosuch")
		session.quiet(300 * time.Millisecond)
	})
	t.Run("DeleteUser", func(t *testing.T) {
		s.createDevice("door", "lock")
		s.grant(map[string]any{"user": "alice", "device": "door"})
		if st, body := s.as(testAdminToken, "DELETE", "/api/v1/users/alice", nil); st != http.StatusNoContent {
			t.Fatalf("delete alice: %d %s", st, body)
		}
		select {
		case <-other.lost:
		case <-time.After(5 * time.Second):
			t.Error("deleted user's MQTT session still connected")
		}
		if st, _ := s.as(first, "GET", "/api/v1/devices", nil); st != http.StatusUnauthorized {
			t.Errorf("deleted user's token: %d", st)
		}
		if _, body := s.api("GET", "/api/v1/grants", "", nil); strings.Contains(string(body), `"alice"`) {
			t.Errorf("deleted user's grants remain: %s", body)
		}
		if st, body := s.as(testAdminToken, "DELETE", "/api/v1/users/admin", nil); st != http.StatusConflict {
			t.Errorf("delete the last admin: %d %s", st, body)
		}
	})
}

// A guest learns a device's live state (state, online, last seen) only
// while one of their grants for it is open: outside their window, and once
// their grant has ended, they still see the device exists (a command is
// refused with 403, not 404) but not what it is doing. A member with a
// window sees the live state at any time.
func TestGuestSeesLiveStateOnlyInsideGrant(t *testing.T) {
	clk := newClock(tuesday10)
	s := startServerWith(t, "", func(c *config) { c.now = clk.now })
	door := s.device("door", s.createDevice("door", "lock"), "lock")
	door.publish("toserver", false, "state unlocked")
	dave := s.createUser("dave", "guest") // Tuesday 10:00-11:00 only, once
	cleo := s.createUser("cleo", "guest") // Tuesday mornings
	mia := s.createUser("mia", "member")  // Tuesday mornings, as a member
	s.grant(map[string]any{"user": "dave", "device": "door", "from": tuesday10, "until": tuesday10.Add(time.Hour)})
	s.grant(map[string]any{"user": "cleo", "device": "door", "weekdays": []string{"tue"}, "hours": "09:00-12:00"})
	s.grant(map[string]any{"user": "mia", "device": "door", "weekdays": []string{"tue"}, "hours": "09:00-12:00"})

	// live reports what token reads of the door in GET /devices/door and in
	// GET /devices.
	live := func(token string) (one, listed deviceJSON) {
		t.Helper()
		st, body := s.as(token, "GET", "/api/v1/devices/door", nil)
		if st != http.StatusOK {
			t.Fatalf("GET /devices/door: %d %s", st, body)
		}
		json.Unmarshal([]byte(body), &one)
		var l struct{ Items []deviceJSON }
		_, body = s.as(token, "GET", "/api/v1/devices", nil)
		json.Unmarshal([]byte(body), &l)
		if len(l.Items) != 1 || l.Items[0].ID != "door" {
			t.Fatalf("GET /devices: %s", body)
		}
		return one, l.Items[0]
	}
	// hidden fails unless token reads the door without its live state.
	hidden := func(who, token string) {
		t.Helper()
		one, listed := live(token)
		for _, d := range []deviceJSON{one, listed} {
			if d.State != "unknown" || d.Online || !d.LastSeen.IsZero() || d.Name != "door" {
				t.Errorf("%s, a guest outside every window, reads %+v", who, d)
			}
		}
		if st, body := s.as(token, "POST", "/api/v1/devices/door/unlock", nil); st != http.StatusForbidden {
			t.Errorf("%s unlocks outside the window: %d %s", who, st, body)
		}
	}
	// shown fails unless token reads the door in the state want.
	shown := func(who, token, want string) {
		t.Helper()
		one, listed := live(token)
		for _, d := range []deviceJSON{one, listed} {
			if d.State != want || !d.Online || d.LastSeen.IsZero() {
				t.Errorf("%s reads %+v, want the live state %q", who, d, want)
			}
		}
	}

	shown("dave", dave, "unlocked")
	shown("cleo", cleo, "unlocked")
	shown("mia", mia, "unlocked")

	clk.set(tuesday10.Add(24 * time.Hour)) // Wednesday: dave's grant over, the window closed
	door.publish("toserver", false, "state locked")
	hidden("dave", dave)
	hidden("cleo", cleo)
	shown("mia", mia, "locked")

	clk.set(tuesday10.AddDate(0, 0, 28).Add(30 * time.Minute)) // four weeks later, Tuesday 10:30
	door.publish("toserver", false, "state open")
	hidden("dave", dave)
	shown("cleo", cleo, "open")
}

// A guest, like a member, reads nothing of what happened before their
// grant was made, even when it falls inside the grant's window.
func TestGuestReadsNothingBeforeGrant(t *testing.T) {
	clk := newClock(tuesday10.AddDate(0, 0, -7)) // a week earlier, also a Tuesday at 10
	s := startServerWith(t, "", func(c *config) { c.now = clk.now })
	door := s.device("door", s.createDevice("door", "lock"), "lock")
	door.publish("toserver", false, "state open") // a week before the guest exists

	clk.set(tuesday10)
	carol := s.createUser("carol", "guest")
	s.grant(map[string]any{"user": "carol", "device": "door", "weekdays": []string{"tue"}, "hours": "09:00-12:00"})
	clk.add(time.Minute)
	door.publish("toserver", false, "state locked") // inside her window, after her grant

	var l struct{ Items []eventJSON }
	st, body := s.as(carol, "GET", "/api/v1/events?device=door&type=state", nil)
	if st != http.StatusOK {
		t.Fatalf("events: %d %s", st, body)
	}
	json.Unmarshal([]byte(body), &l)
	if len(l.Items) != 1 || l.Items[0].Detail != "locked" {
		t.Errorf("a new guest reads %s, want only the state after her grant", body)
	}
}

// A token made while logged in with an expiring token expires with it at
// the latest: a token given for a day cannot be turned into a permanent
// one, for oneself or, by an admin, for a new or existing user.
func TestTokenMadeWithExpiringTokenExpiresWithIt(t *testing.T) {
	clk := newClock(tuesday10)
	s := startServerWith(t, "", func(c *config) { c.now = clk.now })
	s.createUser("carol", "admin")
	until := tuesday10.Add(24 * time.Hour)
	var day struct{ Token string }
	s.apiJSON("POST", "/api/v1/users/carol/tokens", map[string]any{"name": "contract", "expires": until}, http.StatusCreated, &day)

	mint := func(path string, body map[string]any) (token string, expires time.Time) {
		t.Helper()
		st, b := s.as(day.Token, "POST", path, body)
		if st != http.StatusCreated {
			t.Fatalf("POST %s: %d %s", path, st, b)
		}
		var r struct {
			Token   string
			Expires time.Time
		}
		json.Unmarshal([]byte(b), &r)
		return r.Token, r.Expires
	}
	forever, exp := mint("/api/v1/users/carol/tokens", map[string]any{"name": "forever"})
	if !exp.Equal(until) {
		t.Errorf("token without expiry made with a day token expires %v, want %v", exp, until)
	}
	later, exp := mint("/api/v1/users/carol/tokens", map[string]any{"name": "later", "expires": until.Add(time.Hour)})
	if !exp.Equal(until) {
		t.Errorf("token expiring after the day token expires %v, want %v", exp, until)
	}
	_, exp = mint("/api/v1/users/carol/tokens", map[string]any{"name": "sooner", "expires": until.Add(-time.Hour)})
	if !exp.Equal(until.Add(-time.Hour)) {
		t.Errorf("an earlier expiry is kept: %v", exp)
	}
	other, _ := mint("/api/v1/users/admin/tokens", map[string]any{"name": "spare"})
	newUser, _ := mint("/api/v1/users", map[string]any{"name": "sock", "role": "admin"})

	clk.set(until)
	for name, tok := range map[string]string{"day": day.Token, "forever": forever, "later": later,
		"another user's": other, "a new user's": newUser} {
		if st, _ := s.as(tok, "GET", "/api/v1/devices", nil); st != http.StatusUnauthorized {
			t.Errorf("%s token after the day token expired: %d", name, st)
		}
	}
	// A token without expiry still makes tokens without one.
	var perm struct{ Expires time.Time }
	s.apiJSON("POST", "/api/v1/users/carol/tokens", map[string]any{"name": "admin-made"}, http.StatusCreated, &perm)
	if !perm.Expires.IsZero() {
		t.Errorf("a token made with a permanent token expires %v", perm.Expires)
	}
}

// A member who paired a device stays its owner, but when an admin
// restricts them to a window (deletes the open grant pairing made, gives a
// Tuesday-morning one) they cannot grant themself a new, open one.
func TestRestrictedOwnerCannotReGrantThemself(t *testing.T) {
	clk := newClock(tuesday10)
	s := startServerWith(t, "", func(c *config) { c.now = clk.now })
	alice := s.createUser("alice", "member")
	code := s.pairingCode(alice, "lock")
	dev := s.connect("gate", "pair", code)
	dev.subscribe("todevice/gate")
	dev.publish("toserver", false, "hand_shake lock 1.0 Gate")
	f := strings.Fields(dev.expect("todevice/gate credentials "))
	dev.c.Disconnect(100)
	gate := s.device("gate", f[3], "lock")
	t.Cleanup(ackLoop(t, gate, "gate", lockStates))

	// The admin restricts alice: her open grant goes, a window replaces it.
	var l struct{ Items []struct{ ID, User string } }
	s.apiJSON("GET", "/api/v1/grants", nil, http.StatusOK, &l)
	for _, g := range l.Items {
		if g.User == "alice" {
			s.apiJSON("DELETE", "/api/v1/grants/"+g.ID, nil, http.StatusNoContent, nil)
		}
	}
	s.grant(map[string]any{"user": "alice", "device": "gate", "weekdays": []string{"tue"}, "hours": "09:00-12:00"})

	clk.set(tuesday10.Add(24 * time.Hour)) // Wednesday: outside her window
	if st, body := s.as(alice, "POST", "/api/v1/devices/gate/unlock", nil); st != http.StatusForbidden {
		t.Fatalf("alice outside her window: %d %s", st, body)
	}
	st, body := s.as(alice, "POST", "/api/v1/grants", map[string]any{"user": "alice", "device": "gate"})
	if st == http.StatusCreated {
		t.Errorf("alice granted herself an open grant: %s", body)
	}
	if st, body := s.as(alice, "POST", "/api/v1/devices/gate/unlock?wait=5s", nil); st == http.StatusOK {
		t.Errorf("alice unlocks outside the window the admin gave her: %d %s", st, body)
	}
}
