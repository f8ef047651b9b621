// Command baremochi is the floor of the side-by-side benchmark
// (bench/compare): a bare mochi-mqtt v2 server with no authentication, no
// ACL, no store and no actions, but the same capabilities Gatehouse gives
// mochi in broker/broker.go New(), so that what Gatehouse costs above it is
// Gatehouse's own.
//
//	go run ./bench/cmd/baremochi -addr 127.0.0.1:1883
//
// It builds github.com/mochi-mqtt/server/v2, which the repository's go.mod
// replaces with the patched copy in third_party/mochi-mqtt-server (v2.7.9
// plus the fixes in its PATCHES.md), the same code Gatehouse runs. That copy
// leaves out mochi's hooks/auth package, so the allow-all hook here is a
// copy of its AllowHook. Like upstream mochi (and unlike Gatehouse, which
// wraps its listener), there is no deadline for the CONNECT packet.
//
// With -status ADDR it also answers GET /api/v1/status on ADDR with
// {"goroutines":N}, the field Gatehouse's own status route has, so the
// benchmark can compare goroutines per connection. It exits on SIGINT or
// SIGTERM.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"syscall"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
)

// The values broker/broker.go New() sets; keep them in step with it.
const (
	maxPacketSize     = 256*1024 + 1024 // broker.MaxPacketSize
	maxConnectSize    = 4096            // broker.MaxConnectSize
	clientReadBuffer  = 1024            // broker.clientReadBuffer
	maxWritesPending  = 128             // broker.maxWritesPending
	maxInflight       = 64              // broker.maxInflight
	maxSessionExpiry  = 24 * 60 * 60    // broker.maxSessionExpiry
	maxMessageExpiry  = 5 * 60          // actions.MaxCommandTTL in seconds
	sysResendInterval = 60
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "baremochi:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("baremochi", flag.ContinueOnError)
	addr := fs.String("addr", "127.0.0.1:1883", "MQTT TCP listen address")
	status := fs.String("status", "", "also answer GET /api/v1/status with the goroutine count on this address")
	logLevel := fs.String("log-level", "error", "debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("no arguments expected, got %q", fs.Args())
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("-log-level %q: want debug, info, warn or error", *logLevel)
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	caps := mqtt.NewDefaultServerCapabilities()
	caps.MaximumPacketSize = maxPacketSize
	caps.MaximumConnectPacketSize = maxConnectSize
	caps.MaximumClientWritesPending = maxWritesPending
	caps.MaximumInflight = maxInflight
	caps.ReceiveMaximum = maxInflight
	caps.MaximumSessionExpiryInterval = maxSessionExpiry
	caps.MaximumMessageExpiryInterval = maxMessageExpiry
	caps.Compatibilities.ObscureNotAuthorized = false
	srv := mqtt.New(&mqtt.Options{
		Capabilities:            caps,
		ClientNetReadBufferSize: clientReadBuffer,
		Logger:                  logger,
		SysTopicResendInterval:  sysResendInterval,
	})
	if err := srv.AddHook(new(allowHook), nil); err != nil {
		return fmt.Errorf("add hook: %w", err)
	}
	// Bound here, so that a busy port fails at start-up.
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", *addr, err)
	}
	if err := srv.AddListener(listeners.NewNet("tcp", ln)); err != nil {
		ln.Close()
		return err
	}
	if *status != "" {
		sln, err := net.Listen("tcp", *status)
		if err != nil {
			return fmt.Errorf("status listen on %s: %w", *status, err)
		}
		hs := &http.Server{Handler: http.HandlerFunc(handleStatus), ReadHeaderTimeout: 5 * time.Second}
		go hs.Serve(sln)
		defer hs.Close()
	}
	if err := srv.Serve(); err != nil {
		return err
	}
	<-ctx.Done()
	if err := srv.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
		return err
	}
	return nil
}

func handleStatus(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/api/v1/status" {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]int{"goroutines": runtime.NumGoroutine()})
}

// allowHook lets every client in and allows every topic: a copy of mochi's
// hooks/auth.AllowHook, which the trimmed copy in third_party/ leaves out.
type allowHook struct {
	mqtt.HookBase
}

func (h *allowHook) ID() string { return "allow-all-auth" }

func (h *allowHook) Provides(b byte) bool {
	return bytes.Contains([]byte{mqtt.OnConnectAuthenticate, mqtt.OnACLCheck}, []byte{b})
}

func (h *allowHook) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool { return true }

func (h *allowHook) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool { return true }
