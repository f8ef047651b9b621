package web

import (
	"net/http"
	"runtime"

	"github.com/labstack/echo/v4"

	"gatehouse/actions"
)

// statusJSON is what the server's own process looks like, for operators
// and the soak test (bench/soak); /metrics has the same and more for
// Prometheus.
type statusJSON struct {
	Goroutines int    `json:"goroutines"`
	HeapBytes  uint64 `json:"heap_bytes"`
	SysBytes   uint64 `json:"sys_bytes"`
	NumGC      uint32 `json:"num_gc"`
}

// handleStatus answers an admin with runtime figures of the process.
func (s *server) handleStatus(c echo.Context) error {
	if !principal(c).IsAdmin() {
		return actions.Errorf(actions.EForbidden, "only admins read the server status")
	}
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return c.JSON(http.StatusOK, statusJSON{Goroutines: runtime.NumGoroutine(), HeapBytes: m.HeapAlloc,
		SysBytes: m.Sys, NumGC: m.NumGC})
}
