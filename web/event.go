package web

import (
	"net/http"

	"github.com/labstack/echo/v4"

	"gatehouse/actions"
)

func (s *server) handleEventList(c echo.Context) error {
	limit, cursor, err := pageParams(c)
	if err != nil {
		return err
	}
	q := actions.EventQuery{Device: c.QueryParam("device"), Type: c.QueryParam("type"), Limit: limit, Cursor: cursor}
	events, next, err := s.svc.Events(principal(c), q)
	if err != nil {
		return err
	}
	if events == nil {
		events = []actions.Event{}
	}
	return c.JSON(http.StatusOK, list[actions.Event]{Items: events, Next: next})
}
