package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"gatehouse/broker"
)

// logBuffer collects log output written from many goroutines.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// lines decodes every JSON log line so far.
func (l *logBuffer) lines(t *testing.T) []map[string]any {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(l.b.String()), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line is not JSON: %q: %v", line, err)
		}
		out = append(out, m)
	}
	return out
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startLogged starts a server that logs JSON at info to the returned buffer.
func startLogged(t *testing.T) (*testServer, *logBuffer) {
	t.Helper()
	logs := &logBuffer{}
	cfg := config{Data: t.TempDir(), MQTT: "127.0.0.1:0", HTTP: "127.0.0.1:0", CommandTTL: 30 * time.Second,
		LogLevel: "info", LogFormat: "json", AdminToken: testAdminToken, connectTimeout: time.Second, Location: time.UTC,
		MQTTLimits: broker.Limits{ConnectRate: 1e6, ConnectBurst: 1e6, MessageRate: 1e6, MessageBurst: 1e6}}
	a, err := start(cfg, logs)
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	s := &testServer{t: t, app: a, dir: cfg.Data, mqtt: a.broker.Addr(), url: "http://" + a.httpLn.Addr().String()}
	t.Cleanup(s.stop)
	return s, logs
}

// waitLog waits for a line with msg whose fields include want.
func waitLog(t *testing.T, logs *logBuffer, msg string, want map[string]any) map[string]any {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		for _, l := range logs.lines(t) {
			if l["msg"] != msg {
				continue
			}
			ok := true
			for k, v := range want {
				if l[k] != v {
					ok = false
				}
			}
			if ok {
				return l
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no log line %q with %v in:\n%s", msg, want, logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestRequestLogHasRealStatus: the request log line carries the status
// that was sent, also for answers made by the error handler.
func TestRequestLogHasRealStatus(t *testing.T) {
	s, logs := startLogged(t)
	s.createDevice("door", "lock")
	for _, c := range []struct {
		method, path, token string
		want                float64
	}{
		{"GET", "/api/v1/devices/nowhere", "", 404},
		{"GET", "/no/such/route", "", 404},
		{"GET", "/api/v1/devices", "-", 401},
		{"POST", "/api/v1/devices/door/lock", "", 409}, // offline
		{"GET", "/api/v1/devices/door", "", 200},
	} {
		if got, body := s.api(c.method, c.path, c.token, nil); float64(got) != c.want {
			t.Fatalf("%s %s: %d, want %v: %s", c.method, c.path, got, c.want, body)
		}
		waitLog(t, logs, "http request", map[string]any{"method": c.method, "path": c.path, "status": c.want, "level": "INFO"})
	}
}

// TestLogsTellWhatHappened: at info, one line each for a device coming
// online, its hand-shake, a command sent and its outcome, a refused login
// and the device going offline; no token or secret in any line.
func TestLogsTellWhatHappened(t *testing.T) {
	s, logs := startLogged(t)
	secret := s.createDevice("door", "lock")
	door := s.device("door", secret, "lock")
	waitLog(t, logs, "device online", map[string]any{"device_id": "door"})
	waitLog(t, logs, "hand shake", map[string]any{"device_id": "door", "kind": "lock", "firmware": "1.0"})

	stop := ackLoop(t, door, "door", lockStates)
	var cmd commandJSON
	s.apiJSON("POST", "/api/v1/devices/door/lock?wait=10s", nil, http.StatusOK, &cmd)
	stop()
	waitLog(t, logs, "command sent", map[string]any{"device_id": "door", "cmd_id": cmd.ID, "verb": "lock", "by": "admin"})
	waitLog(t, logs, "command answered", map[string]any{"device_id": "door", "cmd_id": cmd.ID, "status": "done", "state": "locked"})

	if _, err := s.tryConnect("door", "door", "wrong-secret"); err == nil {
		t.Fatal("a wrong secret logged in")
	}
	waitLog(t, logs, "login refused", map[string]any{"via": "mqtt", "username": "door"})

	door.c.Disconnect(0)
	waitLog(t, logs, "device offline", map[string]any{"device_id": "door"})

	out := logs.String()
	for _, secretText := range []string{testAdminToken, secret, "wrong-secret"} {
		if strings.Contains(out, secretText) {
			t.Errorf("the log holds a secret %q:\n%s", secretText, out)
		}
	}
}

// TestLogFormatFlag: --log-format takes text or json and nothing else.
func TestLogFormatFlag(t *testing.T) {
	for _, f := range []string{"text", "json"} {
		if _, err := newLogger("info", f, &logBuffer{}); err != nil {
			t.Errorf("--log-format %s: %v", f, err)
		}
	}
	if _, err := newLogger("info", "xml", &logBuffer{}); err == nil || !strings.Contains(err.Error(), "--log-format") {
		t.Errorf("--log-format xml: %v, want an error naming the flag", err)
	}
	cfg, err := parseConfig("serve", []string{"--log-format", "json"}, func(string) string { return "" }, &logBuffer{})
	if err != nil || cfg.LogFormat != "json" {
		t.Errorf("parse --log-format json: %q, %v", cfg.LogFormat, err)
	}
}
