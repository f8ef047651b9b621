package web

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"gatehouse/actions"
)

var verbs = map[string]bool{"lock": true, "unlock": true, "on": true, "off": true}

// waitParam reads ?wait= as a Go duration ("5s") or whole seconds ("5").
func waitParam(c echo.Context) (time.Duration, error) {
	v := c.QueryParam("wait")
	if v == "" {
		return defaultWait, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		n, nerr := strconv.Atoi(v)
		if nerr != nil {
			return 0, actions.Errorf(actions.EInvalid, "wait must be a duration like 5s")
		}
		d = time.Duration(n) * time.Second
	}
	if d < 0 || d > maxWait {
		return 0, actions.Errorf(actions.EInvalid, "wait must be between 0s and %s", maxWait)
	}
	return d, nil
}

// handleDeviceCommand sends a command and waits up to ?wait= for the
// device's answer: 200 when it came, 202 while the command is still sent.
func (s *server) handleDeviceCommand(c echo.Context) error {
	verb := c.Param("verb")
	if !verbs[verb] {
		return echo.ErrNotFound
	}
	wait, err := waitParam(c)
	if err != nil {
		return err
	}
	cmd, err := s.svc.SendCommand(principal(c), c.Param("id"), verb, actions.ViaREST)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(c.Request().Context(), wait)
	defer cancel()
	if cmd, err = s.svc.Wait(ctx.Done(), cmd.ID); err != nil {
		return err
	}
	if cmd.Status == actions.StatusSent {
		return c.JSON(http.StatusAccepted, cmd)
	}
	return c.JSON(http.StatusOK, cmd)
}

func (s *server) handleCommandGet(c echo.Context) error {
	cmd, err := s.svc.Command(principal(c), c.Param("id"))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, cmd)
}

// result is one item of a lock-all answer: the command, or, for an offline
// device, only {"device","status":"offline"}.
type result actions.Command

func (r result) MarshalJSON() ([]byte, error) {
	if r.Status == actions.StatusOffline {
		return json.Marshal(struct {
			Device string `json:"device"`
			Status string `json:"status"`
		}{r.Device, r.Status})
	}
	return json.Marshal(actions.Command(r))
}

// lockAll sends verb to every lock the caller may operate and waits up to
// ?wait= for all of them.
func (s *server) lockAll(c echo.Context, verb string) ([]result, error) {
	wait, err := waitParam(c)
	if err != nil {
		return nil, err
	}
	cmds, err := s.svc.SendAll(principal(c), verb, actions.ViaREST)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(c.Request().Context(), wait)
	defer cancel()
	out := make([]result, len(cmds))
	for i, cmd := range cmds {
		if cmd.ID != "" {
			if cmd, err = s.svc.Wait(ctx.Done(), cmd.ID); err != nil {
				return nil, err
			}
		}
		out[i] = result(cmd)
	}
	return out, nil
}

// handleLockAll serves POST /api/v1/lock|unlock and the prototype's
// POST /lock|unlock: the verb is the last element of the path.
func (s *server) handleLockAll(c echo.Context) error {
	path := c.Path()
	verb := path[strings.LastIndexByte(path, '/')+1:]
	items, err := s.lockAll(c, verb)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, list[result]{Items: items})
}

type testRequest struct {
	Name string `json:"name"`
}

// handleTest is the prototype's POST /test {"name":"lock"|"unlock"}: text
// "0" when every lock confirmed, "1" otherwise: also when there is no lock,
// and for any other name, which sends nothing (DESIGN §11; the prototype
// answered "1" to what it did not do). A body that is not JSON is a 400.
func (s *server) handleTest(c echo.Context) error {
	var req testRequest
	if err := decode(c, &req); err != nil {
		return err
	}
	if req.Name != "lock" && req.Name != "unlock" {
		return c.String(http.StatusOK, "1")
	}
	items, err := s.lockAll(c, req.Name)
	if err != nil {
		return err
	}
	answer := "0"
	if len(items) == 0 {
		answer = "1"
	}
	for _, it := range items {
		if it.Status != actions.StatusDone {
			answer = "1"
		}
	}
	return c.String(http.StatusOK, answer)
}

// DefaultMaxCommands bounds the command requests in progress at once.
const DefaultMaxCommands = 512

// shed admits a command request while fewer than MaxCommands are in
// progress and answers the others at once with 503 and Retry-After, so
// that past its capacity the server says so instead of queueing commands
// that would only expire (docs/security.md).
func (s *server) shed(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		select {
		case s.commands <- struct{}{}:
			defer func() { <-s.commands }()
			return next(c)
		default:
			s.shedOne()
			return actions.Errorf(actions.EBusy, "too many commands in progress (%d): retry shortly", cap(s.commands))
		}
	}
}

// shedLogEvery: commands refused past the bound are logged at most this
// often, with their count.
const shedLogEvery = 10 * time.Second

// shedOne counts a refused command. The first refusal after a quiet spell
// is logged at once; those that follow are logged together every
// shedLogEvery while refusals go on, and once more after they stop.
func (s *server) shedOne() {
	s.shedN.Add(1)
	if s.shedLogging.CompareAndSwap(false, true) {
		s.logShed()
	}
}

func (s *server) logShed() {
	n := s.shedN.Swap(0)
	if n == 0 {
		s.shedLogging.Store(false)
		if s.shedN.Load() > 0 && s.shedLogging.CompareAndSwap(false, true) {
			s.logShed() // one came in between
		}
		return
	}
	s.log.Warn("commands refused: too many in progress", "refused", n, "bound", cap(s.commands))
	time.AfterFunc(shedLogEvery, s.logShed)
}
