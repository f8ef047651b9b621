package main

import (
	"encoding/json"
	"net/http"
	"slices"
	"testing"
)

// TestListsFollowAccess pages the device list of a member (looked up from
// their grants, not from every device) and filters events by person.
func TestListsFollowAccess(t *testing.T) {
	s := startServer(t, "")
	for _, id := range []string{"a", "b", "c", "d", "e"} {
		s.createDevice(id, "lock")
	}
	alice := s.createUser("alice", "member")
	for _, id := range []string{"e", "b", "d"} {
		s.grant(map[string]any{"user": "alice", "device": id})
	}

	t.Run("MemberDevicePages", func(t *testing.T) {
		var got []string
		cursor, pages := "", 0
		for ; pages < 10; pages++ {
			st, body := s.as(alice, "GET", "/api/v1/devices?limit=2&cursor="+cursor, nil)
			var l struct {
				Items []deviceJSON `json:"items"`
				Next  string       `json:"next"`
			}
			if err := json.Unmarshal([]byte(body), &l); st != http.StatusOK || err != nil || len(l.Items) > 2 {
				t.Fatalf("page %d: %d %s", pages, st, body)
			}
			for _, d := range l.Items {
				got = append(got, d.ID)
			}
			if l.Next == "" {
				break
			}
			cursor = l.Next
		}
		if !slices.Equal(got, []string{"b", "d", "e"}) || pages != 1 {
			t.Errorf("alice's devices %v in %d pages, want [b d e] in 2", got, pages+1)
		}
	})

	t.Run("MemberEvents", func(t *testing.T) {
		st, body := s.as(alice, "GET", "/api/v1/events?limit=1000", nil)
		var l struct{ Items []eventJSON }
		if err := json.Unmarshal([]byte(body), &l); st != http.StatusOK || err != nil || len(l.Items) == 0 {
			t.Fatalf("alice's events: %d %s", st, body)
		}
		for _, e := range l.Items {
			if !slices.Contains([]string{"b", "d", "e"}, e.Device) {
				t.Errorf("alice reads an event of device %q", e.Device)
			}
		}
	})

	t.Run("ByUser", func(t *testing.T) {
		created := 0
		for _, e := range s.events("user=admin&type=admin&limit=1000") {
			if e.User != "admin" || e.Type != "admin" {
				t.Errorf("user=admin gave %+v", e)
			}
			if e.Detail == "device created: lock" {
				created++
			}
		}
		if created != 5 {
			t.Errorf("%d device creations by admin, want 5", created)
		}
		if l := s.events("user=nobody"); len(l) != 0 {
			t.Errorf("user=nobody gave %d events", len(l))
		}
	})
}
