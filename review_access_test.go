package main

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

// A member who paired a device stays its Owner for ever. When an admin
// restricts that member to a window (deletes the open grant pairing made,
// gives a Tuesday-morning one), the member grants themselves a new,
// unrestricted grant and unlocks at any time.
func TestReviewOwnerReGrantsThemself(t *testing.T) {
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

// A token with an expiry mints a token without one: handing a contractor or
// a guest a token that expires on Friday does not end their access.
func TestReviewExpiringTokenMintsPermanentOne(t *testing.T) {
	t.Skip("BUG: a user holding an expiring token creates a non-expiring one for themself (actions/user.go CreateToken)")
	clk := newClock(tuesday10)
	s := startServerWith(t, "", func(c *config) { c.now = clk.now })
	s.createUser("carol", "admin")
	var day struct{ Token string }
	s.apiJSON("POST", "/api/v1/users/carol/tokens", map[string]any{"name": "contract", "expires": tuesday10.Add(24 * time.Hour)}, http.StatusCreated, &day)

	st, body := s.as(day.Token, "POST", "/api/v1/users/carol/tokens", map[string]any{"name": "forever"})
	if st != http.StatusCreated {
		return // refused: fine
	}
	forever := jsonField(t, []byte(body), "token")
	clk.add(30 * 24 * time.Hour)
	if st, _ := s.as(day.Token, "GET", "/api/v1/devices", nil); st != http.StatusUnauthorized {
		t.Fatalf("expired token: %d", st)
	}
	if st, _ := s.as(forever, "GET", "/api/v1/devices", nil); st == http.StatusOK {
		t.Error("a token minted with an expiring token outlives it")
	}
}

// A guest whose grant has ended (until in the past) still "sees" the device
// and so reads its live state, presence and last activity for ever.
func TestReviewEndedGuestGrantStillShowsState(t *testing.T) {
	t.Skip("BUG: a guest whose grant ended (or is outside its window) still reads the device's live state, online and last_seen (actions/access.go sees)")
	clk := newClock(tuesday10)
	s := startServerWith(t, "", func(c *config) { c.now = clk.now })
	door := s.device("door", s.createDevice("door", "lock"), "lock")
	dave := s.createUser("dave", "guest")
	s.grant(map[string]any{"user": "dave", "device": "door", "from": tuesday10, "until": tuesday10.Add(time.Hour)})

	clk.set(tuesday10.Add(30 * 24 * time.Hour)) // a month after the grant ended
	door.publish("toserver", false, "state unlocked")
	time.Sleep(100 * time.Millisecond)
	st, body := s.as(dave, "GET", "/api/v1/devices/door", nil)
	if st == http.StatusOK && strings.Contains(body, `"state":"unlocked"`) {
		t.Errorf("a guest a month after their grant ended reads the door's state: %s", body)
	}
}

// A member reads only what happened since their grant was made; a guest
// with a weekly window reads every past event inside that window, long
// before anyone gave them access.
func TestReviewGuestReadsHistoryBeforeGrant(t *testing.T) {
	t.Skip("BUG: a guest reads events from before their grant existed, which a member cannot (actions/access.go reads)")
	clk := newClock(tuesday10.AddDate(0, 0, -7)) // a week earlier, also a Tuesday at 10
	s := startServerWith(t, "", func(c *config) { c.now = clk.now })
	door := s.device("door", s.createDevice("door", "lock"), "lock")
	door.publish("toserver", false, "state open") // a week before the guest exists
	time.Sleep(100 * time.Millisecond)

	clk.set(tuesday10)
	carol := s.createUser("carol", "guest")
	s.grant(map[string]any{"user": "carol", "device": "door", "weekdays": []string{"tue"}, "hours": "09:00-12:00"})
	if _, body := s.as(carol, "GET", "/api/v1/events?device=door&type=state", nil); strings.Contains(body, `"detail":"open"`) {
		t.Errorf("a new guest reads an event from a week before her grant: %s", body)
	}
}
