package actions_test

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gatehouse/actions"
	"gatehouse/store"
)

// TestGrantWindowRefused: every malformed window is refused with a message
// that says what is wrong, never read as "no limit" or as a wrong window.
func TestGrantWindowRefused(t *testing.T) {
	e := newEnv(t, 0)
	e.newDevice(t, "door", actions.KindLock)
	if _, _, _, err := e.svc.CreateUser(e.admin, "bob", actions.RoleGuest); err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	tests := []struct {
		name string
		g    actions.Grant
		want string // in the message
	}{
		{"NegativeHour", actions.Grant{Hours: "10:00--1:00"}, `hours must look like "09:00-12:00"`},
		{"PlusSign", actions.Grant{Hours: "+9:00-10:00"}, `hours must look like "09:00-12:00"`},
		{"PlusSignEnd", actions.Grant{Hours: "09:00-+9:00"}, `hours must look like "09:00-12:00"`},
		{"SpaceForZero", actions.Grant{Hours: " 9:00-10:00"}, `hours must look like "09:00-12:00"`},
		{"StartAt24", actions.Grant{Hours: "24:00-01:00"}, "24:00 is only an end"},
		{"Past24", actions.Grant{Hours: "09:00-24:01"}, `hours must look like "09:00-12:00"`},
		{"Minute60", actions.Grant{Hours: "09:60-10:00"}, `hours must look like "09:00-12:00"`},
		{"SameMinute", actions.Grant{Hours: "09:00-09:00"}, "same minute"},
		{"EmptyWeekdays", actions.Grant{Weekdays: []string{}}, "weekdays is empty"},
		{"UnknownWeekday", actions.Grant{Weekdays: []string{"funday"}}, `weekday "funday"`},
		{"WeekdayTwice", actions.Grant{Weekdays: []string{"tue", "TUE"}}, "given twice"},
		{"FromAfterUntil", actions.Grant{From: at, Until: at.Add(-time.Hour)}, "from must be before until"},
		{"FromIsUntil", actions.Grant{From: at, Until: at}, "from must be before until"},
		{"UntilYear1", actions.Grant{Until: time.Date(1, 1, 1, 0, 0, 1, 0, time.UTC)}, "until 0001-01-01: the year must be between 2000 and 9999"},
		{"FromYear1999", actions.Grant{From: time.Date(1999, 12, 31, 0, 0, 0, 0, time.UTC)}, "from 1999-12-31"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.g.User, tt.g.Device = "bob", "door"
			_, err := e.svc.CreateGrant(e.admin, tt.g)
			wantCode(t, err, actions.EInvalid)
			if msg := actions.ErrorMessage(err); !strings.Contains(msg, tt.want) {
				t.Errorf("message %q, want it to say %q", msg, tt.want)
			}
		})
	}
	for _, h := range []string{"22:00-06:00", "09:00-24:00", "00:00-23:59"} {
		if _, err := e.svc.CreateGrant(e.admin, actions.Grant{User: "bob", Device: "door", Hours: h}); err != nil {
			t.Errorf("hours %q: %v", h, err)
		}
	}
}

func TestParseGrantTime(t *testing.T) {
	e := newEnv(t, 0) // its time zone is UTC
	ok := []struct{ in, want string }{
		{"2026-12-24", "2026-12-24T00:00:00Z"},
		{"2026-12-24T18:30:00+01:00", "2026-12-24T17:30:00Z"},
		{"2026-12-24T18:30:00.5Z", "2026-12-24T18:30:00.5Z"},
		{"", "0001-01-01T00:00:00Z"}, // no limit
	}
	for _, tt := range ok {
		got, err := e.svc.ParseGrantTime("until", tt.in)
		if err != nil || got.UTC().Format(time.RFC3339Nano) != tt.want {
			t.Errorf("ParseGrantTime(%q) = %v, %v; want %s", tt.in, got, err, tt.want)
		}
	}
	bad := []struct{ in, want string }{
		{"0001-01-01", "until 0001-01-01: the year must be between 2000 and 9999; omit until for no limit"},
		{"0001-01-01T00:00:00Z", "the year must be between"},
		{"24/12/2026", `until "24/12/2026": want a date like 2026-12-24 or an RFC 3339 time`},
		{"2026-12-24 18:00", "want a date like 2026-12-24"},
		{"tomorrow", "want a date like 2026-12-24"},
	}
	for _, tt := range bad {
		_, err := e.svc.ParseGrantTime("until", tt.in)
		if actions.ErrorCode(err) != actions.EInvalid || !strings.Contains(actions.ErrorMessage(err), tt.want) {
			t.Errorf("ParseGrantTime(%q): %v, want invalid saying %q", tt.in, err, tt.want)
		}
		if strings.Contains(actions.ErrorMessage(err), "2006-01-02T15:04") {
			t.Errorf("ParseGrantTime(%q): %v shows Go's layout", tt.in, err)
		}
	}
}

// TestOneNamespaceForDevicesAndUsers: a device id and a user name are both
// an MQTT username, so neither may take the other's.
func TestOneNamespaceForDevicesAndUsers(t *testing.T) {
	e := newEnv(t, 0)
	e.newDevice(t, "door", actions.KindLock)
	if _, _, _, err := e.svc.CreateUser(e.admin, "bob", actions.RoleMember); err != nil {
		t.Fatal(err)
	}
	_, _, _, err := e.svc.CreateUser(e.admin, "door", actions.RoleMember)
	wantCode(t, err, actions.EConflict)
	_, _, err = e.svc.CreateDevice(e.admin, actions.NewDevice{ID: "bob", Kind: actions.KindLock})
	wantCode(t, err, actions.EConflict)
	_, err = e.svc.IssueToken("door", actions.RoleMember)
	wantCode(t, err, actions.EConflict)
	code, _, err := e.svc.CreatePairing(e.admin, actions.KindLock)
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.svc.AuthenticateMQTT("bob", actions.PairUsername, []byte(code), remote)
	wantCode(t, err, actions.EUnauthorized)
	if evs := e.events(t, actions.EventQuery{Type: actions.EventLoginRefused}); len(evs) == 0 || !strings.Contains(evs[0].Detail, `"bob" is a user name`) {
		t.Errorf("refused pairing not recorded with its reason: %+v", evs)
	}
}

// TestShortAdminTokenOnlyWarnsOnAStoreWithUsers: a short
// GATEHOUSE_ADMIN_TOKEN is refused when it would become admin's token, and
// ignored when the store already has users.
func TestShortAdminTokenOnlyWarnsOnAStoreWithUsers(t *testing.T) {
	e := newEnv(t, 0) // has admin
	if tok, err := e.svc.EnsureAdmin("short"); err != nil || tok != "" {
		t.Errorf("short token on a store with users: %q, %v; want no error", tok, err)
	}
	if _, err := e.svc.AuthenticateBearer("short", remote); err == nil {
		t.Error("the short token was made a token")
	}
	db, err := store.Open(filepath.Join(t.TempDir(), "g.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	fresh, err := actions.New(actions.Config{Store: db})
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	_, err = fresh.EnsureAdmin("short")
	wantCode(t, err, actions.EInvalid)
}
