package main

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

func TestDevicesAPI(t *testing.T) {
	s := startServer(t, "")
	t.Run("Create", func(t *testing.T) {
		var d deviceJSON
		s.apiJSON("POST", "/api/v1/devices", map[string]string{"id": "door-1", "kind": "lock", "name": "Front door"}, http.StatusCreated, &d)
		if d.ID != "door-1" || d.Kind != "lock" || d.Name != "Front door" || d.State != "unknown" || d.Online || len(d.Secret) != 64 {
			t.Errorf("created %+v", d)
		}
		// The secret is shown once.
		_, body := s.api("GET", "/api/v1/devices/door-1", "", nil)
		if strings.Contains(string(body), d.Secret) || strings.Contains(string(body), "secret") {
			t.Errorf("GET shows the secret: %s", body)
		}
	})
	bad := []struct {
		name string
		body any
		code int
	}{
		{"ErrDuplicate", map[string]string{"id": "door-1", "kind": "lock"}, http.StatusConflict},
		{"ErrBadID", map[string]string{"id": "a/b", "kind": "lock"}, http.StatusBadRequest},
		{"ErrWildcardID", map[string]string{"id": "#", "kind": "lock"}, http.StatusBadRequest},
		{"ErrReservedID", map[string]string{"id": "all", "kind": "lock"}, http.StatusBadRequest},
		{"ErrEmptyID", map[string]string{"kind": "lock"}, http.StatusBadRequest},
		{"ErrBadKind", map[string]string{"id": "x", "kind": "toaster"}, http.StatusBadRequest},
		{"ErrUnknownField", map[string]string{"id": "x", "kind": "lock", "owner": "me"}, http.StatusBadRequest},
		{"ErrNotJSON", "id=x", http.StatusBadRequest},
		{"ErrEmptyBody", "", http.StatusBadRequest},
		{"ErrTooLarge", `{"id":"x","kind":"lock","name":"` + strings.Repeat("a", 100*1024) + `"}`, http.StatusRequestEntityTooLarge},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			st, body := s.api("POST", "/api/v1/devices", "", tc.body)
			var e struct {
				Error struct{ Code, Message string } `json:"error"`
			}
			if st != tc.code || json.Unmarshal(body, &e) != nil || e.Error.Code == "" || e.Error.Message == "" {
				t.Errorf("status %d body %s, want %d with a JSON error", st, body, tc.code)
			}
		})
	}
	t.Run("Patch", func(t *testing.T) {
		var d deviceJSON
		s.apiJSON("PATCH", "/api/v1/devices/door-1", map[string]string{"name": "Back door"}, http.StatusOK, &d)
		if d.Name != "Back door" {
			t.Errorf("patched name %q", d.Name)
		}
		if st, _ := s.api("PATCH", "/api/v1/devices/door-1", "", map[string]string{"name": "bad\x00name"}); st != http.StatusBadRequest {
			t.Errorf("control characters in name: %d", st)
		}
		if st, _ := s.api("PATCH", "/api/v1/devices/nosuch", "", map[string]string{"name": "x"}); st != http.StatusNotFound {
			t.Errorf("patch unknown: %d", st)
		}
	})
	t.Run("ListPages", func(t *testing.T) {
		for _, id := range []string{"a", "b", "c", "d"} {
			s.createDevice(id, "light")
		}
		var all []string
		cursor := ""
		for page := 0; page < 10; page++ {
			var l struct {
				Items []deviceJSON `json:"items"`
				Next  string       `json:"next"`
			}
			s.apiJSON("GET", "/api/v1/devices?limit=2&cursor="+cursor, nil, http.StatusOK, &l)
			for _, d := range l.Items {
				all = append(all, d.ID)
			}
			if l.Next == "" {
				break
			}
			cursor = l.Next
		}
		if got := strings.Join(all, ","); got != "a,b,c,d,door-1" {
			t.Errorf("pages = %s", got)
		}
		if st, _ := s.api("GET", "/api/v1/devices?limit=0", "", nil); st != http.StatusBadRequest {
			t.Errorf("limit=0: %d", st)
		}
	})
	t.Run("DeleteDisconnects", func(t *testing.T) {
		secret := s.createDevice("gone", "lock")
		dev := s.device("gone", secret, "lock")
		s.apiJSON("DELETE", "/api/v1/devices/gone", nil, http.StatusNoContent, nil)
		select {
		case <-dev.lost:
		case <-time.After(5 * time.Second):
			t.Fatal("deleted device still connected")
		}
		if _, err := s.tryConnect("gone", "gone", secret); err == nil {
			t.Error("deleted device logged in again")
		}
		if st, _ := s.api("GET", "/api/v1/devices/gone", "", nil); st != http.StatusNotFound {
			t.Errorf("GET deleted: %d", st)
		}
		if st, _ := s.api("DELETE", "/api/v1/devices/gone", "", nil); st != http.StatusNotFound {
			t.Errorf("DELETE twice: %d", st)
		}
	})
	t.Run("UnknownRoute", func(t *testing.T) {
		st, body := s.api("GET", "/api/v1/nothing", "", nil)
		if st != http.StatusNotFound || !strings.Contains(string(body), `"code":"not_found"`) {
			t.Errorf("unknown route: %d %s", st, body)
		}
		if st, body := s.api("GET", "/nothing", "-", nil); st != http.StatusNotFound {
			t.Errorf("unknown public route: %d %s", st, body)
		}
		if st, body := s.api("PUT", "/hello", "-", nil); st != http.StatusMethodNotAllowed || !strings.Contains(string(body), `"message":"method not allowed"`) {
			t.Errorf("wrong method: %d %s", st, body)
		}
	})
}

func TestEventsAPI(t *testing.T) {
	s := startServer(t, "")
	dev := s.device("door", s.createDevice("door", "lock"), "lock")
	for _, st := range []string{"locked", "unlocked", "jammed", "locked"} {
		dev.publish("toserver", false, "state "+st)
	}
	got := s.events("device=door&type=state")
	var details []string
	for _, e := range got {
		details = append(details, e.Detail)
	}
	if strings.Join(details, ",") != "locked,jammed,unlocked,locked" {
		t.Errorf("state events newest first = %v", details)
	}
	var page struct {
		Items []eventJSON `json:"items"`
		Next  string      `json:"next"`
	}
	s.apiJSON("GET", "/api/v1/events?type=state&limit=3", nil, http.StatusOK, &page)
	if len(page.Items) != 3 || page.Next == "" {
		t.Fatalf("first page %d items, next %q", len(page.Items), page.Next)
	}
	s.apiJSON("GET", "/api/v1/events?type=state&limit=3&cursor="+page.Next, nil, http.StatusOK, &page)
	if len(page.Items) != 1 || page.Next != "" || page.Items[0].Detail != "locked" {
		t.Errorf("second page = %+v", page)
	}
	if st, _ := s.api("GET", "/api/v1/events?cursor=zz", "", nil); st != http.StatusBadRequest {
		t.Errorf("bad cursor: %d", st)
	}
	types := map[string]bool{}
	s.settle() // the online event is committed off the connect
	for _, e := range s.events("limit=1000") {
		types[e.Type] = true
	}
	for _, want := range []string{"admin", "online", "hand_shake", "state"} {
		if !types[want] {
			t.Errorf("no %s event in %v", want, types)
		}
	}
}

func TestWebSocket(t *testing.T) {
	s := startServer(t, "")
	secret := s.createDevice("door", "lock")
	msgs := make(chan string, 10)
	opts := paho.NewClientOptions().AddBroker("ws://" + strings.TrimPrefix(s.url, "http://") + "/mqtt").
		SetClientID("door").SetUsername("door").SetPassword(secret).SetAutoReconnect(false).
		SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) { msgs <- string(m.Payload()) })
	c := paho.NewClient(opts)
	if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("connect over websocket: %v", tok.Error())
	}
	defer c.Disconnect(0)
	c.Subscribe("todevice/door", 1, nil).WaitTimeout(5 * time.Second)
	c.Publish("toserver", 1, false, "hand_shake lock").WaitTimeout(5 * time.Second)
	select {
	case m := <-msgs:
		if !strings.HasPrefix(m, "welcome ") {
			t.Errorf("got %q, want welcome", m)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no welcome over websocket")
	}
	var d deviceJSON
	s.apiJSON("GET", "/api/v1/devices/door", nil, http.StatusOK, &d)
	if !d.Online {
		t.Error("websocket device not online")
	}
	// Bad credentials over WebSocket are refused too.
	bad := paho.NewClient(paho.NewClientOptions().AddBroker("ws://" + strings.TrimPrefix(s.url, "http://") + "/mqtt").
		SetClientID("door").SetUsername("door").SetPassword("nope").SetAutoReconnect(false))
	if tok := bad.Connect(); tok.WaitTimeout(5*time.Second) && tok.Error() == nil {
		bad.Disconnect(0)
		t.Error("websocket login with a wrong secret accepted")
	}
}

// TestStatusAPI: an admin reads the process's runtime figures; nobody else.
func TestStatusAPI(t *testing.T) {
	s := startServer(t, "")
	var st struct {
		Goroutines int    `json:"goroutines"`
		HeapBytes  uint64 `json:"heap_bytes"`
	}
	s.apiJSON("GET", "/api/v1/status", nil, http.StatusOK, &st)
	if st.Goroutines <= 0 || st.HeapBytes == 0 {
		t.Errorf("status %+v", st)
	}
	alice := s.createUser("alice", "member")
	if code, body := s.as(alice, "GET", "/api/v1/status", nil); code != http.StatusForbidden {
		t.Errorf("a member reads the status: %d %s", code, body)
	}
	if code, _ := s.api("GET", "/api/v1/status", "-", nil); code != http.StatusUnauthorized {
		t.Errorf("anonymous status: %d", code)
	}
}
