// Package bench measures a real Gatehouse binary over loopback: it builds
// the server, starts it on free ports with a temporary data dir, and drives
// it with paho devices and HTTP clients. Run with
//
//	go test ./bench -run '^$' -bench . -benchtime 2000x
//
// Plain `go test ./...` builds this package but runs no benchmark.
package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

const token = "bench-admin-token-0123456789abcdef"

type server struct {
	mqtt, url string
}

// startServer builds and starts the binary; it stops when b ends.
func startServer(b *testing.B, ttl string) *server {
	b.Helper()
	dir := b.TempDir()
	bin := filepath.Join(dir, "gatehouse")
	build := exec.Command("go", "build", "-o", bin, "..")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		b.Fatalf("build: %v", err)
	}
	s := &server{mqtt: freeAddr(b), url: "http://" + freeAddr(b)}
	cmd := exec.Command(bin, "--data", filepath.Join(dir, "data"), "--mqtt", s.mqtt,
		"--http", strings.TrimPrefix(s.url, "http://"), "--command-ttl", ttl, "--log-level", "warn")
	cmd.Env = append(os.Environ(), "GATEHOUSE_ADMIN_TOKEN="+token)
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	go io.Copy(io.Discard, bufio.NewReader(stderr))
	b.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		cmd.Wait()
	})
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if resp, err := http.Get(s.url + "/healthz"); err == nil {
			resp.Body.Close()
			return s
		}
		time.Sleep(20 * time.Millisecond)
	}
	b.Fatal("server did not start")
	return nil
}

func freeAddr(b testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func (s *server) do(b *testing.B, method, path string, body string) []byte {
	req, _ := http.NewRequest(method, s.url+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		b.Fatalf("%s %s: %d %s", method, path, resp.StatusCode, out)
	}
	return out
}

// device creates a lock and connects a paho client that acks every command
// at once, as a fast device would.
func (s *server) device(b *testing.B, id string) paho.Client {
	var d struct{ Secret string }
	json.Unmarshal(s.do(b, "POST", "/api/v1/devices", fmt.Sprintf(`{"id":%q,"kind":"lock"}`, id)), &d)
	var c paho.Client
	opts := paho.NewClientOptions().AddBroker("tcp://" + s.mqtt).SetClientID(id).SetUsername(id).
		SetPassword(d.Secret).SetAutoReconnect(false).
		SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) {
			f := strings.Fields(string(m.Payload()))
			if len(f) == 3 && (f[0] == "lock" || f[0] == "unlock") {
				c.Publish("toserver", 1, false, "ack "+f[1]+" ok "+f[0]+"ed")
			}
		})
	c = paho.NewClient(opts)
	if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		b.Fatalf("connect %s: %v", id, tok.Error())
	}
	c.Subscribe("todevice/"+id, 1, nil).WaitTimeout(5 * time.Second)
	b.Cleanup(func() { c.Disconnect(0) })
	return c
}

// BenchmarkLockRoundTripREST is one person locking one door over REST:
// HTTP request → command committed → MQTT to the device → ack committed →
// HTTP answer.
func BenchmarkLockRoundTripREST(b *testing.B) {
	s := startServer(b, "30s")
	s.device(b, "door")
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		out := s.do(b, "POST", "/api/v1/devices/door/lock?wait=5s", "")
		if !strings.Contains(string(out), `"status":"done"`) {
			b.Fatalf("lock: %s", out)
		}
	}
}

// BenchmarkLockRoundTripMQTT is an app locking over MQTT and waiting for
// lock_response on its own topic.
func BenchmarkLockRoundTripMQTT(b *testing.B) {
	s := startServer(b, "30s")
	s.device(b, "door")
	got := make(chan string, 16)
	app := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + s.mqtt).SetClientID("phone").
		SetUsername("admin").SetPassword(token).SetAutoReconnect(false).
		SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) { got <- string(m.Payload()) }))
	if tok := app.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		b.Fatal(tok.Error())
	}
	defer app.Disconnect(0)
	app.Subscribe("toapp/admin", 1, nil).WaitTimeout(5 * time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		app.Publish("toserver", 1, false, "lock door")
		for {
			select {
			case m := <-got:
				if !strings.HasPrefix(m, "lock_response ") {
					continue
				}
			case <-ctx.Done():
				b.Fatal("timeout")
			}
			break
		}
	}
}

// BenchmarkLockAllREST locks 50 doors with one request.
func BenchmarkLockAllREST(b *testing.B) {
	s := startServer(b, "30s")
	for i := 0; i < 50; i++ {
		s.device(b, fmt.Sprintf("door%02d", i))
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		out := s.do(b, "POST", "/api/v1/lock?wait=10s", "")
		if strings.Count(string(out), `"status":"done"`) != 50 {
			b.Fatalf("lock all: %s", out)
		}
	}
}
