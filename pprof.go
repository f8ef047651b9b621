//go:build pprof

// Profiling build: `go build -tags pprof -o gatehouse-pprof .` and run it
// with GATEHOUSE_PPROF=127.0.0.1:6060 to serve net/http/pprof there, no
// authentication, for `go tool pprof` (docs/performance.md). Normal builds
// leave this file out.

package main

import (
	"log/slog"
	"net/http"
	_ "net/http/pprof" // registers /debug/pprof on the default mux
	"os"
)

func init() {
	addr := os.Getenv("GATEHOUSE_PPROF")
	if addr == "" {
		return
	}
	go func() {
		if err := http.ListenAndServe(addr, nil); err != nil {
			slog.Error("pprof listener", "addr", addr, "error", err)
		}
	}()
}
