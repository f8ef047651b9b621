package web

import (
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"gatehouse/actions"
)

// grantCreateRequest holds from and until as text, so that a date the
// server cannot read is refused with the formats it takes, and one it
// reads as the zero time (0001-01-01) is refused rather than taken as
// "no limit".
type grantCreateRequest struct {
	User     string   `json:"user"`
	Device   string   `json:"device"`
	From     string   `json:"from"`
	Until    string   `json:"until"`
	Weekdays []string `json:"weekdays"`
	Hours    string   `json:"hours"`
}

func (s *server) handleGrantCreate(c echo.Context) error {
	var req grantCreateRequest
	if err := decode(c, &req); err != nil {
		return err
	}
	g := actions.Grant{User: req.User, Device: req.Device, Weekdays: req.Weekdays, Hours: req.Hours}
	var err error
	if g.From, err = s.svc.ParseGrantTime("from", req.From); err != nil {
		return err
	}
	if g.Until, err = s.svc.ParseGrantTime("until", req.Until); err != nil {
		return err
	}
	g, err = s.svc.CreateGrant(principal(c), g)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusCreated, g)
}

func (s *server) handleGrantList(c echo.Context) error {
	grants, err := s.svc.Grants(principal(c))
	if err != nil {
		return err
	}
	if grants == nil {
		grants = []actions.Grant{}
	}
	return c.JSON(http.StatusOK, list[actions.Grant]{Items: grants})
}

func (s *server) handleGrantDelete(c echo.Context) error {
	if err := s.svc.DeleteGrant(principal(c), c.Param("id")); err != nil {
		return err
	}
	return c.NoContent(http.StatusNoContent)
}

type pairingRequest struct {
	Kind string `json:"kind"`
}

type pairingResponse struct {
	Code    string    `json:"code"`
	Kind    string    `json:"kind"`
	Expires time.Time `json:"expires"`
}

func (s *server) handlePairingCreate(c echo.Context) error {
	var req pairingRequest
	if err := decode(c, &req); err != nil {
		return err
	}
	code, p, err := s.svc.CreatePairing(principal(c), req.Kind)
	if err != nil {
		return err
	}
	c.Response().Header().Set("Cache-Control", "no-store")
	return c.JSON(http.StatusCreated, pairingResponse{Code: code, Kind: p.Kind, Expires: p.Expires})
}
