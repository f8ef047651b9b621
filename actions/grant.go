package actions

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// Grant lets a user see and operate one device, optionally only inside a
// window: a date range, a set of weekdays and a daily time range, read in
// the server's time zone. An omitted part means no limit.
type Grant struct {
	ID       string    `json:"id"`
	User     string    `json:"user"`
	Device   string    `json:"device"`
	From     time.Time `json:"from,omitzero"`
	Until    time.Time `json:"until,omitzero"`
	Weekdays []string  `json:"weekdays,omitempty"`
	// Hours is "HH:MM-HH:MM", start included, end excluded; a range that
	// ends before it starts runs past midnight ("22:00-06:00").
	Hours   string    `json:"hours,omitempty"`
	Created time.Time `json:"created"`
	By      string    `json:"by"`
}

var weekdayNames = []string{"sun", "mon", "tue", "wed", "thu", "fri", "sat"}

// Grant dates: a date alone, or an RFC 3339 time; the years a grant can
// mean (anything else, such as 0001-01-01, is a mistake, never "no limit").
const (
	grantDateLayout = "2006-01-02"
	minGrantYear    = 2000
	maxGrantYear    = 9999
)

// ParseGrantTime reads the from or until of a grant (field names it in
// errors): a date like 2026-12-24, which is midnight at the start of that
// day in the server's time zone, or an RFC 3339 time. "" is no limit.
func (s *Service) ParseGrantTime(field, v string) (time.Time, error) {
	if v == "" {
		return time.Time{}, nil
	}
	t, err := time.ParseInLocation(grantDateLayout, v, s.loc)
	if err != nil {
		t, err = time.Parse(time.RFC3339Nano, v)
	}
	if err != nil {
		return time.Time{}, Errorf(EInvalid, "%s %q: want a date like 2026-12-24 or an RFC 3339 time like 2026-12-24T18:00:00+01:00", field, clip(v))
	}
	// Checked even when t is the zero time (0001-01-01 UTC), which a
	// Grant reads as no limit.
	return t, yearError(field, t)
}

// checkGrantYear refuses a from or until outside the years a grant can
// mean; the zero time is no limit.
func checkGrantYear(field string, t time.Time) error {
	if t.IsZero() {
		return nil
	}
	return yearError(field, t)
}

func yearError(field string, t time.Time) error {
	if y := t.UTC().Year(); y < minGrantYear || y > maxGrantYear {
		return Errorf(EInvalid, "%s %s: the year must be between %d and %d; omit %s for no limit",
			field, t.UTC().Format(grantDateLayout), minGrantYear, maxGrantYear, field)
	}
	return nil
}

// hoursFormat is the message of every malformed hours range.
const hoursFormat = `hours must look like "09:00-12:00": two times HH:MM from 00:00 to 23:59 (24:00 as an end), joined by "-"`

// parseHours reads "HH:MM-HH:MM" into minutes since midnight.
func parseHours(h string) (start, end int, err error) {
	a, b, ok := strings.Cut(h, "-")
	if !ok {
		return 0, 0, Errorf(EInvalid, "%s", hoursFormat)
	}
	if start, err = parseClock(a, false); err == nil {
		end, err = parseClock(b, true)
	}
	if err == nil && start == end {
		err = Errorf(EInvalid, "hours must not start and end at the same minute")
	}
	return start, end, err
}

// parseClock reads "HH:MM", digits only: 00:00 to 23:59, and 24:00 when
// it is the end of a range.
func parseClock(s string, end bool) (int, error) {
	if len(s) != 5 || s[2] != ':' {
		return 0, Errorf(EInvalid, "%s", hoursFormat)
	}
	for _, i := range []int{0, 1, 3, 4} {
		if s[i] < '0' || s[i] > '9' {
			return 0, Errorf(EInvalid, "%s", hoursFormat)
		}
	}
	hh, mm := int(s[0]-'0')*10+int(s[1]-'0'), int(s[3]-'0')*10+int(s[4]-'0')
	switch {
	case mm > 59 || hh > 24 || hh == 24 && mm != 0:
		return 0, Errorf(EInvalid, "%s", hoursFormat)
	case hh == 24 && !end:
		return 0, Errorf(EInvalid, "hours %q: a range starts at 23:59 at the latest (24:00 is only an end)", s)
	}
	return hh*60 + mm, nil
}

// validate checks the window's parts and normalises weekdays.
func (g *Grant) validate() error {
	if err := checkGrantYear("from", g.From); err != nil {
		return err
	}
	if err := checkGrantYear("until", g.Until); err != nil {
		return err
	}
	if !g.From.IsZero() && !g.Until.IsZero() && !g.From.Before(g.Until) {
		return Errorf(EInvalid, "from must be before until")
	}
	if g.Weekdays != nil && len(g.Weekdays) == 0 {
		return Errorf(EInvalid, "weekdays is empty: omit it for every day, or list the days (sun, mon, tue, wed, thu, fri, sat)")
	}
	seen := map[string]bool{}
	for i, w := range g.Weekdays {
		w = strings.ToLower(w)
		if !slices.Contains(weekdayNames, w) {
			return Errorf(EInvalid, "weekday %q: use sun, mon, tue, wed, thu, fri or sat", g.Weekdays[i])
		}
		if seen[w] {
			return Errorf(EInvalid, "weekday %q given twice", w)
		}
		seen[w] = true
		g.Weekdays[i] = w
	}
	if g.Hours != "" {
		if _, _, err := parseHours(g.Hours); err != nil {
			return err
		}
	}
	return nil
}

// ActiveAt reports whether the grant's window contains t, with weekdays and
// hours read in loc. For hours past midnight, the early part belongs to
// the weekday on which the range started.
func (g Grant) ActiveAt(t time.Time, loc *time.Location) bool {
	if !g.From.IsZero() && t.Before(g.From) {
		return false
	}
	if !g.Until.IsZero() && !t.Before(g.Until) {
		return false
	}
	lt := t.In(loc)
	day := lt.Weekday()
	if g.Hours != "" {
		start, end, err := parseHours(g.Hours)
		if err != nil {
			return false
		}
		m := lt.Hour()*60 + lt.Minute()
		switch {
		case start < end:
			if m < start || m >= end {
				return false
			}
		case m >= start: // before midnight of a range that wraps
		case m < end: // after midnight: it started the day before
			day = (day + 6) % 7
		default:
			return false
		}
	}
	if len(g.Weekdays) > 0 && !slices.Contains(g.Weekdays, weekdayNames[day]) {
		return false
	}
	return true
}

// CreateGrant lets g.User use g.Device. Admins grant any device; a member
// grants the devices they own (paired) to others.
func (s *Service) CreateGrant(p Principal, g Grant) (Grant, error) {
	if p.Kind != PrincipalUser || p.Role == RoleGuest {
		return Grant{}, Errorf(EForbidden, "guests cannot grant access")
	}
	if !p.IsAdmin() && g.User == p.ID {
		return Grant{}, Errorf(EForbidden, "only an admin can grant you access")
	}
	if err := g.validate(); err != nil {
		return Grant{}, err
	}
	now := s.now()
	g.ID, g.Created, g.By = newID(), now, p.ID
	err := s.update(func(tx Tx) error {
		d, _, err := s.visibleDevice(tx, p, g.Device)
		if err != nil {
			return err
		}
		if !p.IsAdmin() && d.Owner != p.ID {
			return Errorf(EForbidden, "only admins and the device's owner grant it")
		}
		if _, err := tx.User(g.User); err != nil {
			return err
		}
		if err := tx.PutGrant(g); err != nil {
			return err
		}
		return tx.AppendEvent(&Event{Time: now, Type: EventAdmin, Device: g.Device, User: p.ID, Via: ViaREST,
			Detail: fmt.Sprintf("grant %s to %s", g.ID, g.User)})
	})
	if err != nil {
		return Grant{}, err
	}
	return g, nil
}

// Grants lists every grant for admins; for others, the grants they hold or
// gave.
func (s *Service) Grants(p Principal) ([]Grant, error) {
	var out []Grant
	err := s.store.View(func(tx Tx) error {
		all, err := tx.Grants()
		for _, g := range all {
			if p.IsAdmin() || g.User == p.ID || g.By == p.ID {
				out = append(out, g)
			}
		}
		return err
	})
	return out, err
}

// DeleteGrant revokes a grant; admins and whoever gave it may.
func (s *Service) DeleteGrant(p Principal, id string) error {
	return s.update(func(tx Tx) error {
		g, err := tx.Grant(id)
		if err != nil {
			return err
		}
		if !p.IsAdmin() && g.By != p.ID {
			return Errorf(ENotFound, "grant %q not found", id)
		}
		if !p.IsAdmin() && g.User == p.ID {
			return Errorf(EForbidden, "you cannot revoke your own access; ask an admin")
		}
		if err := tx.DeleteGrant(id); err != nil {
			return err
		}
		return tx.AppendEvent(&Event{Time: s.now(), Type: EventAdmin, Device: g.Device, User: p.ID, Via: ViaREST,
			Detail: fmt.Sprintf("grant %s of %s revoked", id, g.User)})
	})
}
