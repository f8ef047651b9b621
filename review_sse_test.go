package main

import (
	"encoding/json"
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

// Revoking a token, deleting a user or letting a token expire ends their
// MQTT sessions, but not an event stream opened with it: a leaked admin
// token keeps reading every event after it was revoked.
func TestReviewStreamOutlivesRevokedToken(t *testing.T) {
	t.Skip("BUG: SSE streams keep running after their token is revoked, its user deleted or the token expired (web/event.go)")
	s := startServer(t, "")
	eve := s.createUser("eve", "admin")
	msgs, stop := s.stream(eve, "")
	defer stop()
	time.Sleep(100 * time.Millisecond)
	s.apiJSON("DELETE", "/api/v1/users/eve", nil, http.StatusNoContent, nil)
	if st, _ := s.as(eve, "GET", "/api/v1/devices", nil); st != http.StatusUnauthorized {
		t.Fatalf("deleted user's token on REST: %d", st)
	}
	s.createDevice("door", "lock") // an admin event after eve is gone
	if e, ok := waitEvent(msgs, "admin", "device created", 2*time.Second); ok {
		t.Errorf("the stream of a deleted admin still receives events: %+v", e)
	}
}

// Event ids are time-ordered by the event's own time, but the stream skips
// every event whose id is not above the last one it sent. A camera that
// dates its picture (find_stranger <unix-time>, POST ?time=) a little
// before the last event sent is never shown to live dashboards; so is any
// event whose commit lost a race with a later-stamped one.
func TestReviewStreamDropsBackdatedStranger(t *testing.T) {
	s := startServer(t, "")
	camSecret := s.createDevice("cam", "camera")
	msgs, stop := s.stream(testAdminToken, "")
	defer stop()
	time.Sleep(100 * time.Millisecond)
	s.createDevice("other", "lock") // the stream's last id is now "now"
	if _, ok := waitEvent(msgs, "admin", "device created", 2*time.Second); !ok {
		t.Fatal("stream did not deliver the admin event")
	}
	taken := time.Now().Add(-10 * time.Second).Unix() // the camera's clock, 10 s behind
	st, body := s.upload("/api/v1/strangers?time="+strconv.FormatInt(taken, 10), "cam", camSecret, "image/jpeg", testImage(t, "jpeg", 10))
	if st != http.StatusCreated {
		t.Fatalf("upload: %d %s", st, body)
	}
	if _, ok := waitEvent(msgs, "stranger", "picture", 2*time.Second); !ok {
		t.Error("live stream never delivered the stranger event")
	}
}

// http.Server.Shutdown does not cancel request contexts, and the SSE
// handler only ends when its context does or the bus closes, which happens
// after the HTTP shutdown: one open dashboard makes every stop wait the full
// 5 s deadline and fail, so the process exits with status 1 on SIGTERM.
func TestReviewShutdownWithOpenStream(t *testing.T) {
	s := startServer(t, "")
	_, stop := s.stream(testAdminToken, "")
	defer stop()
	time.Sleep(100 * time.Millisecond)
	a := s.app
	s.app = nil
	start := time.Now()
	err := a.close()
	if took := time.Since(start); err != nil || took > 2*time.Second {
		t.Errorf("close with an open stream: %v after %s", err, took.Round(time.Millisecond))
	}
}
