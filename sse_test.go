package main

import (
	"encoding/json"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// waitEvent reads an SSE channel until an event with the wanted type and
// detail prefix arrives, or d passes.
func waitEvent(msgs chan string, typ, detail string, d time.Duration) (eventJSON, bool) {
	deadline := time.After(d)
	for {
		select {
		case m, ok := <-msgs:
			if !ok {
				return eventJSON{}, false
			}
			if strings.HasPrefix(m, ":") {
				continue
			}
			_, data, _ := strings.Cut(m, " ")
			var e eventJSON
			json.Unmarshal([]byte(data), &e)
			if e.Type == typ && strings.HasPrefix(e.Detail, detail) {
				return e, true
			}
		case <-deadline:
			return eventJSON{}, false
		}
	}
}

// streamEnds waits up to d for the stream to close and returns the events
// it delivered before it did; it fails the test when the stream stays open.
func streamEnds(t *testing.T, msgs chan string, d time.Duration) []eventJSON {
	t.Helper()
	var got []eventJSON
	deadline := time.After(d)
	for {
		select {
		case m, ok := <-msgs:
			if !ok {
				return got
			}
			if strings.HasPrefix(m, ":") {
				continue
			}
			_, data, _ := strings.Cut(m, " ")
			var e eventJSON
			json.Unmarshal([]byte(data), &e)
			got = append(got, e)
		case <-deadline:
			t.Fatalf("stream still open %s after access ended; it delivered %+v", d, got)
			return got
		}
	}
}

// An event stream lasts as long as the access it was opened with: it ends
// when its token is revoked, its user deleted or its token expires, and
// delivers nothing from that moment on (not even the event recording it),
// while the person's other streams go on.
func TestStreamEndsWithAccess(t *testing.T) {
	clk := newClock(tuesday10)
	s := startServerWith(t, "", func(c *config) {
		c.now = clk.now
		c.heartbeat = 100 * time.Millisecond
	})
	eve := s.createUser("eve", "admin") // an admin reads every event
	watch, stopWatch := s.stream(eve, "")
	defer stopWatch()

	t.Run("RevokeToken", func(t *testing.T) {
		var laptop struct{ ID, Token string }
		s.apiJSON("POST", "/api/v1/users/eve/tokens", map[string]any{"name": "laptop"}, http.StatusCreated, &laptop)
		msgs, stop := s.stream(laptop.Token, "")
		defer stop()
		s.apiJSON("DELETE", "/api/v1/tokens/"+laptop.ID, nil, http.StatusNoContent, nil)
		s.createDevice("door", "lock") // an admin event after the revocation
		for _, e := range streamEnds(t, msgs, 5*time.Second) {
			if strings.Contains(e.Detail, laptop.ID) || e.Detail == "device created: lock" {
				t.Errorf("revoked token's stream delivered %+v", e)
			}
		}
		// Eve's other token and its stream are untouched.
		if _, ok := waitEvent(watch, "admin", "device created: lock", 5*time.Second); !ok {
			t.Error("the stream of eve's other token stopped too")
		}
	})
	t.Run("TokenExpires", func(t *testing.T) {
		var day, week struct{ ID, Token string }
		s.apiJSON("POST", "/api/v1/users/eve/tokens", map[string]any{"name": "day", "expires": clk.now().Add(24 * time.Hour)}, http.StatusCreated, &day)
		s.apiJSON("POST", "/api/v1/users/eve/tokens", map[string]any{"name": "week", "expires": clk.now().Add(7 * 24 * time.Hour)}, http.StatusCreated, &week)
		quiet, stopQuiet := s.stream(day.Token, "")
		defer stopQuiet()
		busy, stopBusy := s.stream(week.Token, "")
		defer stopBusy()

		clk.add(25 * time.Hour) // no event: the stream ends at a heartbeat
		streamEnds(t, quiet, 5*time.Second)

		clk.add(7 * 24 * time.Hour)
		s.createDevice("light", "light") // an admin event after the expiry
		for _, e := range streamEnds(t, busy, 5*time.Second) {
			if e.Detail == "device created: light" {
				t.Errorf("expired token's stream delivered %+v", e)
			}
		}
	})
	t.Run("DeleteUser", func(t *testing.T) {
		s.apiJSON("DELETE", "/api/v1/users/eve", nil, http.StatusNoContent, nil)
		s.createDevice("cam", "camera") // an admin event after eve is gone
		for _, e := range streamEnds(t, watch, 5*time.Second) {
			if e.Detail == "user eve deleted" || e.Detail == "device created: camera" {
				t.Errorf("deleted user's stream delivered %+v", e)
			}
		}
	})
}

// A stranger event is dated on arrival, so a camera whose clock is behind
// the server's still reaches live streams, which skip only events older
// than the last one they sent.
func TestStreamDeliversBackdatedStranger(t *testing.T) {
	s := startServer(t, "")
	camSecret := s.createDevice("cam", "camera")
	msgs, stop := s.stream(testAdminToken, "")
	defer stop()
	s.createDevice("other", "lock") // the stream's last id is now "now"
	if _, ok := waitEvent(msgs, "admin", "device created", 5*time.Second); !ok {
		t.Fatal("stream did not deliver the admin event")
	}
	taken := time.Now().Add(-10 * time.Second).Unix() // the camera's clock, 10 s behind
	st, body := s.upload("/api/v1/strangers?time="+strconv.FormatInt(taken, 10), "cam", camSecret, "image/jpeg", testImage(t, "jpeg", 10))
	if st != http.StatusCreated {
		t.Fatalf("upload: %d %s", st, body)
	}
	if _, ok := waitEvent(msgs, "stranger", "picture", 5*time.Second); !ok {
		t.Error("live stream never delivered the stranger event")
	}
}

// Stopping the server ends open streams first, so an open dashboard does
// not hold the HTTP shutdown until its deadline.
func TestShutdownEndsOpenStream(t *testing.T) {
	s := startServer(t, "")
	msgs, stop := s.stream(testAdminToken, "")
	defer stop()
	a := s.app
	s.app = nil
	if err := a.close(); err != nil {
		t.Errorf("close with an open stream: %v", err)
	}
	streamEnds(t, msgs, 5*time.Second)
}

// TestShutdownClosesSilentConnections: a connection that never sent a
// request (a browser's preconnect) does not hold a stop for Shutdown's 5 s
// and turn it into an error.
func TestShutdownClosesSilentConnections(t *testing.T) {
	s := startServer(t, "")
	c, err := net.Dial("tcp", strings.TrimPrefix(s.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		s.app.fresh.mu.Lock()
		n := len(s.app.fresh.conns)
		s.app.fresh.mu.Unlock()
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the server never accepted the connection")
		}
	}
	a := s.app
	s.app = nil
	if err := a.close(); err != nil {
		t.Errorf("close with a silent connection open: %v", err)
	}
}
