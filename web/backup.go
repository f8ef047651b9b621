package web

import (
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"

	"gatehouse/actions"
)

// handleBackup streams a consistent copy of the data file; the server keeps
// running and writing meanwhile.
func (s *server) handleBackup(c echo.Context) error {
	if !principal(c).IsAdmin() {
		return actions.Errorf(actions.EForbidden, "only admins take backups")
	}
	h := c.Response().Header()
	h.Set(echo.HeaderContentType, "application/octet-stream")
	h.Set(echo.HeaderContentDisposition, `attachment; filename="gatehouse-`+time.Now().UTC().Format("20060102T150405Z")+`.db"`)
	h.Set("Cache-Control", "no-store")
	started := false
	err := s.svc.Backup(principal(c), c.Response(), func(size int64) {
		h.Set(echo.HeaderContentLength, strconv.FormatInt(size, 10))
		c.Response().WriteHeader(http.StatusOK)
		started = true
	})
	if err != nil && started {
		// Too late for an error body: the client sees a short file, which
		// the Content-Length makes detectable.
		s.log.Error("backup interrupted", "error", err)
		return nil
	}
	return err
}
