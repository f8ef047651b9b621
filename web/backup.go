package web

import (
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"

	"gatehouse/actions"
)

// backupWriteTimeout bounds each write of a backup download: the snapshot
// is already on disk (the store copies it before streaming, so no write of
// the server waits for the client), and a client that stops reading for
// this long is dropped so its copy is freed.
const backupWriteTimeout = 5 * time.Minute

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
	rc := http.NewResponseController(c.Response())
	defer rc.SetWriteDeadline(time.Time{}) // the connection may serve more requests
	started := false
	w := deadlineWriter{w: c.Response(), rc: rc}
	var sent int64
	err := s.svc.Backup(principal(c), w, func(size int64) {
		h.Set(echo.HeaderContentLength, strconv.FormatInt(size, 10))
		c.Response().WriteHeader(http.StatusOK)
		started, sent = true, size
	})
	if err != nil && started {
		// Too late for an error body: the client sees a short file, which
		// the Content-Length makes detectable.
		s.log.Error("backup interrupted", "user", principal(c).ID, "error", err)
		return nil
	}
	if err == nil {
		s.log.Info("backup sent", "user", principal(c).ID, "bytes", sent)
	}
	return err
}

// deadlineWriter gives each write to the client backupWriteTimeout.
type deadlineWriter struct {
	w  io.Writer
	rc *http.ResponseController
}

func (d deadlineWriter) Write(p []byte) (int, error) {
	d.rc.SetWriteDeadline(time.Now().Add(backupWriteTimeout)) // unsupported: no deadline, as before
	return d.w.Write(p)
}
