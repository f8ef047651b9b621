package web

import (
	"net/http"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"gatehouse/actions"
)

// The people and access page: users, their tokens, grants and pairing
// codes, each through the Service call REST uses, so a member sees and
// does here exactly what the API lets them.

type personRow struct {
	User   actions.User
	Tokens []actions.Token
}

type peoplePage struct {
	People   []personRow
	Grants   []actions.Grant
	Devices  []actions.Device
	Weekdays []string
	Roles    []string
	Kinds    []string
}

var weekdays = []string{"mon", "tue", "wed", "thu", "fri", "sat", "sun"}

func (s *server) handlePeople(c echo.Context) error {
	p := principal(c)
	users, err := s.svc.Users(p)
	if err != nil {
		return s.pageError(c, err)
	}
	page := peoplePage{Weekdays: weekdays, Roles: []string{actions.RoleMember, actions.RoleGuest, actions.RoleAdmin},
		Kinds: []string{actions.KindLock, actions.KindLight, actions.KindCamera}}
	for _, u := range users {
		row := personRow{User: u}
		if row.Tokens, err = s.svc.Tokens(p, u.Name); err != nil && actions.ErrorCode(err) != actions.EForbidden {
			return s.pageError(c, err)
		}
		page.People = append(page.People, row)
	}
	if page.Grants, err = s.svc.Grants(p); err != nil {
		return s.pageError(c, err)
	}
	if page.Devices, err = s.svc.Devices(p); err != nil {
		return s.pageError(c, err)
	}
	return s.render(c, http.StatusOK, "people", "People and access", page)
}

// tokenShown is the flash that shows a new token once.
func tokenShown(label, secret string) *flash {
	return &flash{Notice: label, Secret: secret, Label: "Token (shown only now; copy it):"}
}

func (s *server) handleUserAdd(c echo.Context) error {
	name := strings.TrimSpace(c.FormValue("name"))
	u, _, secret, err := s.svc.CreateUser(principal(c), name, c.FormValue("role"))
	if err != nil {
		return s.done(c, "/people", err, "")
	}
	s.dash.setFlash(currentSession(c), tokenShown("Created "+u.Role+" "+u.Name+".", secret))
	return c.Redirect(http.StatusSeeOther, "/people")
}

func (s *server) handleUserRemove(c echo.Context) error {
	name := c.Param("name")
	err := s.svc.DeleteUser(principal(c), name)
	return s.done(c, "/people", err, "Deleted "+name+" with their tokens and grants.")
}

func (s *server) handleTokenAdd(c echo.Context) error {
	user := c.Param("name")
	var expires time.Time
	if v := c.FormValue("expires"); v != "" {
		t, err := s.parseLocal(v, "expires")
		if err != nil {
			return s.done(c, "/people", err, "")
		}
		expires = t
	}
	t, secret, err := s.svc.CreateToken(principal(c), user, strings.TrimSpace(c.FormValue("name")), expires)
	if err != nil {
		return s.done(c, "/people", err, "")
	}
	s.dash.setFlash(currentSession(c), tokenShown("New token "+t.Name+" for "+user+".", secret))
	return c.Redirect(http.StatusSeeOther, "/people")
}

func (s *server) handleTokenRevoke(c echo.Context) error {
	err := s.svc.RevokeToken(principal(c), c.Param("id"))
	return s.done(c, "/people", err, "Token revoked: its sessions have ended.")
}

// handleGrantAdd reads the grant form: dates (until is the last day, so
// the grant runs to its end), weekday boxes and an hours range.
func (s *server) handleGrantAdd(c echo.Context) error {
	g := actions.Grant{User: strings.TrimSpace(c.FormValue("user")), Device: c.FormValue("device")}
	var err error
	if g.From, err = s.parseLocal(c.FormValue("from"), "from"); err != nil {
		return s.done(c, "/people", err, "")
	}
	if g.Until, err = s.parseLocal(c.FormValue("until"), "until"); err != nil {
		return s.done(c, "/people", err, "")
	}
	if !g.Until.IsZero() && len(c.FormValue("until")) == len("2006-01-02") {
		g.Until = g.Until.AddDate(0, 0, 1)
	}
	form, _ := c.FormParams()
	for _, d := range weekdays {
		if contains(form["weekday"], d) {
			g.Weekdays = append(g.Weekdays, d)
		}
	}
	start, end := c.FormValue("hours_from"), c.FormValue("hours_until")
	switch {
	case start != "" && end != "":
		g.Hours = start + "-" + end
	case start != "" || end != "":
		return s.done(c, "/people", actions.Errorf(actions.EInvalid, "give both hours, or neither"), "")
	}
	g, err = s.svc.CreateGrant(principal(c), g)
	return s.done(c, "/people", err, "Granted "+g.Device+" to "+g.User+".")
}

func (s *server) handleGrantRemove(c echo.Context) error {
	err := s.svc.DeleteGrant(principal(c), c.Param("id"))
	return s.done(c, "/people", err, "Grant removed.")
}

// handlePairingAdd makes a pairing code and shows it once, as text and as
// a QR code.
func (s *server) handlePairingAdd(c echo.Context) error {
	code, pr, err := s.svc.CreatePairing(principal(c), c.FormValue("kind"))
	if err != nil {
		return s.done(c, "/people", err, "")
	}
	qr, err := qrSVG(code)
	if err != nil {
		return s.done(c, "/people", err, "")
	}
	s.dash.setFlash(currentSession(c), &flash{Notice: "Pairing code for a new " + pr.Kind + ".",
		Label: "Pairing code (one use):", Secret: code, QR: qr, Expires: pr.Expires})
	return c.Redirect(http.StatusSeeOther, "/people")
}
