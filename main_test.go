package main

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func noenv(string) string { return "" }

func TestRunArgs(t *testing.T) {
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"FlagAfterArgument", []string{"serve", "extra", "--data", "x"}, "flag --data after an argument"},
		{"Argument", []string{"serve", "extra"}, "takes no arguments"},
		{"UnknownCommand", []string{"frobnicate"}, `unknown command "frobnicate"`},
		{"UnknownFlag", []string{"--nope"}, "flag provided but not defined"},
		{"BadTTL", []string{"--command-ttl", "10m"}, "--command-ttl"},
		{"BadLogLevel", []string{"--log-level", "loud", "--data", "DIR", "--mqtt", "127.0.0.1:0", "--http", "127.0.0.1:0"}, "--log-level"},
		{"EmptyMQTTAddress", []string{"--mqtt", ""}, "--mqtt and --http need an address"},
		{"BackupNoArgs", []string{"backup"}, "usage: gatehouse backup"},
		{"BackupNoDataFile", []string{"backup", "--data", "DIR", "f.db"}, "no data file"},
		{"ImportFlagLate", []string{"import", "f.json", "--data", "x"}, "flag --data after an argument"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			for i, a := range tc.args {
				if a == "DIR" {
					tc.args[i] = dir
				}
			}
			var out, errb bytes.Buffer
			err := run(context.Background(), tc.args, noenv, &out, &errb)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("run %v = %v, want error containing %q", tc.args, err, tc.want)
			}
		})
	}
	t.Run("Version", func(t *testing.T) {
		var out bytes.Buffer
		if err := run(context.Background(), []string{"version"}, noenv, &out, &out); err != nil || !strings.HasPrefix(out.String(), "gatehouse ") {
			t.Errorf("version: %v %q", err, out.String())
		}
	})
}

func TestRunServe(t *testing.T) {
	dir := t.TempDir()
	httpAddr := freeAddr(t)
	env := map[string]string{
		"GATEHOUSE_DATA": dir, "GATEHOUSE_MQTT": "127.0.0.1:0", "GATEHOUSE_HTTP": httpAddr,
		"GATEHOUSE_LOG_LEVEL": "warn",
	}
	ctx, cancel := context.WithCancel(context.Background())
	var stderr syncBuffer
	done := make(chan error, 1)
	go func() { done <- run(ctx, nil, func(k string) string { return env[k] }, &stderr, &stderr) }()

	// The health check command sees it come up.
	deadline := time.Now().Add(10 * time.Second)
	for healthcheck(httpAddr, false) != nil && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if err := run(context.Background(), []string{"healthcheck", "--http", httpAddr}, noenv, &stderr, &stderr); err != nil {
		t.Fatalf("healthcheck: %v", err)
	}
	// Without GATEHOUSE_ADMIN_TOKEN the bootstrap token is printed once.
	if !strings.Contains(stderr.String(), "admin token: ") {
		t.Errorf("no admin token line in %q", stderr.String())
	}
	if _, err := os.Stat(filepath.Join(dir, "gatehouse.db")); err != nil {
		t.Errorf("data file: %v", err)
	}

	t.Run("BusyPort", func(t *testing.T) {
		err := run(context.Background(), []string{"--data", t.TempDir(), "--mqtt", "127.0.0.1:0", "--http", httpAddr}, noenv, &bytes.Buffer{}, &bytes.Buffer{})
		if err == nil || !strings.Contains(err.Error(), "http listen on "+httpAddr) {
			t.Errorf("busy port: %v", err)
		}
	})
	t.Run("DataInUse", func(t *testing.T) {
		err := run(context.Background(), []string{"--data", dir, "--mqtt", "127.0.0.1:0", "--http", "127.0.0.1:0"}, noenv, &bytes.Buffer{}, &bytes.Buffer{})
		if err == nil || !strings.Contains(err.Error(), "in use") {
			t.Errorf("second server on the same data: %v", err)
		}
	})

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("serve returned %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("serve did not stop")
	}
	// Restarting keeps the admin: no new token is printed.
	before := strings.Count(stderr.String(), "admin token: ")
	a, err := start(config{Data: dir, MQTT: "127.0.0.1:0", HTTP: "127.0.0.1:0", CommandTTL: time.Second, LogLevel: "error"}, &stderr)
	if err != nil {
		t.Fatal(err)
	}
	a.close()
	if after := strings.Count(stderr.String(), "admin token: "); after != before {
		t.Errorf("restart printed a new admin token")
	}
}

func TestRunDataDirNotWritable(t *testing.T) {
	// Root writes anywhere, so the test uses a path below a regular file,
	// which fails for everyone.
	file := filepath.Join(t.TempDir(), "file")
	os.WriteFile(file, nil, 0o600)
	err := run(context.Background(), []string{"--data", filepath.Join(file, "data"), "--mqtt", "127.0.0.1:0", "--http", "127.0.0.1:0"}, noenv, &bytes.Buffer{}, &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "data dir") {
		t.Errorf("unusable data dir: %v", err)
	}
}

func freeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// syncBuffer is a bytes.Buffer safe for the server's and the test's
// goroutines.
type syncBuffer struct {
	mu  chan struct{}
	buf bytes.Buffer
}

func (b *syncBuffer) lock() {
	if b.mu == nil {
		b.mu = make(chan struct{}, 1)
	}
	b.mu <- struct{}{}
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.lock()
	defer func() { <-b.mu }()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.lock()
	defer func() { <-b.mu }()
	return b.buf.String()
}

func TestTokenCreate(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	var out bytes.Buffer
	if err := run(ctx, []string{"token", "create", "--data", dir, "--user", "root"}, noenv, &out, &bytes.Buffer{}); err != nil {
		t.Fatalf("token create: %v", err)
	}
	token := strings.TrimSpace(out.String())
	if len(token) != 64 || strings.ContainsAny(token, " \n") {
		t.Fatalf("token create printed %q, want the token alone", out.String())
	}
	s := startServer(t, dir)
	if st, body := s.as(token, "GET", "/api/v1/users", nil); st != http.StatusOK || !strings.Contains(body, `"role":"admin"`) {
		t.Errorf("new admin token: %d %s", st, body)
	}
	if err := run(ctx, []string{"token", "create", "--data", dir, "--user", "x"}, noenv, &out, &bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Errorf("token create while the server runs: %v", err)
	}
	s.stop()
	// The bootstrap admin and root are both admins; demoting one is fine,
	// demoting the last is refused.
	if err := run(ctx, []string{"token", "create", "--data", dir, "--user", "admin", "--role", "member"}, noenv, &out, &bytes.Buffer{}); err != nil {
		t.Errorf("demote one of two admins: %v", err)
	}
	if err := run(ctx, []string{"token", "create", "--data", dir, "--user", "root", "--role", "guest"}, noenv, &out, &bytes.Buffer{}); err == nil {
		t.Error("demoted the last admin")
	}
}
