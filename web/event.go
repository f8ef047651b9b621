package web

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"gatehouse/actions"
)

func (s *server) handleEventList(c echo.Context) error {
	limit, cursor, err := pageParams(c)
	if err != nil {
		return err
	}
	q := actions.EventQuery{Device: c.QueryParam("device"), Type: c.QueryParam("type"), User: c.QueryParam("user"), Limit: limit, Cursor: cursor}
	events, next, err := s.svc.Events(principal(c), q)
	if err != nil {
		return err
	}
	if events == nil {
		events = []actions.Event{}
	}
	return c.JSON(http.StatusOK, list[actions.Event]{Items: events, Next: next})
}

// handleEventStream is GET /api/v1/events/stream: Server-Sent Events, one
// event JSON per message with its id, only events the caller may read, a
// comment as heartbeat, and resumption after Last-Event-ID. A client too
// slow to keep up is dropped; it resumes from its last id. The stream ends
// when the caller's access does: the service ends the subscription when the
// token is revoked, expires or its user is deleted, and the expiry is also
// checked at each heartbeat and event, against the service's clock.
func (s *server) handleEventStream(c echo.Context) error {
	p := principal(c)
	sub := s.svc.Subscribe(p) // before the replay, so nothing falls between
	defer s.svc.Unsubscribe(sub)
	if err := sub.Err(); err != nil {
		c.Response().Header().Set("Retry-After", "60")
		return err
	}

	last := c.Request().Header.Get("Last-Event-ID")
	if last == "" {
		last = c.QueryParam("last_event_id")
	}
	var replay []actions.Event
	for after := last; after != ""; {
		page, next, err := s.svc.Events(p, actions.EventQuery{After: after, Limit: 1000})
		if err != nil {
			return err
		}
		replay = append(replay, page...)
		if after = next; len(replay) > 10_000 {
			break // a client that far behind should list events instead
		}
	}

	w := c.Response()
	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set(echo.HeaderContentType, "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	send := func(e actions.Event) error {
		b, err := json.Marshal(e)
		if err != nil {
			return err
		}
		_ = rc.SetWriteDeadline(time.Now().Add(10 * time.Second))
		if _, err := fmt.Fprintf(w, "id: %s\ndata: %s\n\n", e.ID, b); err != nil {
			return err
		}
		last = e.ID
		return rc.Flush()
	}
	for _, e := range replay {
		if err := send(e); err != nil {
			return nil
		}
	}
	if err := rc.Flush(); err != nil {
		return nil
	}
	beat := time.NewTicker(s.heartbeat)
	defer beat.Stop()
	for {
		select {
		case <-c.Request().Context().Done():
			return nil
		case <-beat.C:
			if s.svc.Expired(p) {
				return nil
			}
			_ = rc.SetWriteDeadline(time.Now().Add(10 * time.Second))
			if _, err := io.WriteString(w, ": ping\n\n"); err != nil || rc.Flush() != nil {
				return nil
			}
		case e, ok := <-sub.C:
			if !ok || s.svc.Expired(p) {
				return nil // dropped as too slow, access ended, or the server is stopping
			}
			if e.ID <= last || !s.svc.CanRead(p, e) {
				continue
			}
			if err := send(e); err != nil {
				return nil
			}
		}
	}
}
