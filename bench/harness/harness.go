// Package harness runs the real gatehouse binary for the load tools in
// bench/ (soak, attack): build it, start it on loopback ports with a fresh
// data dir, call its API, connect paho devices to it, and read what the
// process holds from /proc.
package harness

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// Token is the admin token the server is started with.
const Token = "bench-admin-token-0123456789abcdef"

// Build compiles the repository's binary (run from the repository root)
// into dir and returns its path.
func Build(dir string) (string, error) {
	bin := filepath.Join(dir, "gatehouse")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		return "", fmt.Errorf("build (run from the repository root): %w", err)
	}
	return bin, nil
}

// Server is a running gatehouse process.
type Server struct {
	Cmd    *exec.Cmd
	MQTT   string // host:port
	HTTP   string // host:port
	URL    string // http://host:port
	Data   string
	exited chan error
}

// Start runs bin with a data dir under dir, loopback ports and args, and
// waits until it is ready.
func Start(bin, dir string, args ...string) (*Server, error) {
	s := &Server{MQTT: FreeAddr(), HTTP: FreeAddr(), Data: filepath.Join(dir, "data"), exited: make(chan error, 1)}
	s.URL = "http://" + s.HTTP
	all := append([]string{"--data", s.Data, "--mqtt", s.MQTT, "--http", s.HTTP, "--log-level", "error"}, args...)
	s.Cmd = exec.Command(bin, all...)
	s.Cmd.Env = append(os.Environ(), "GATEHOUSE_ADMIN_TOKEN="+Token)
	s.Cmd.Stderr = os.Stderr
	if err := s.Cmd.Start(); err != nil {
		return nil, err
	}
	go func() { s.exited <- s.Cmd.Wait() }()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if resp, err := http.Get(s.URL + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return s, nil
			}
		}
	}
	s.Stop()
	return nil, fmt.Errorf("server not ready")
}

// Exited returns the process's exit once it has ended.
func (s *Server) Exited() <-chan error { return s.exited }

// Stop interrupts the server and waits for it (killing it after 30 s).
func (s *Server) Stop() {
	s.Cmd.Process.Signal(os.Interrupt)
	select {
	case err := <-s.exited:
		s.exited <- err
	case <-time.After(30 * time.Second):
		s.Cmd.Process.Kill()
	}
}

// Call sends an admin request and decodes the answer into v when the
// status is want.
func (s *Server) Call(method, path, body string, want int, v any) error {
	req, _ := http.NewRequest(method, s.URL+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+Token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		return fmt.Errorf("%s %s: %d %s", method, path, resp.StatusCode, out)
	}
	if v != nil {
		return json.Unmarshal(out, v)
	}
	return nil
}

// CreateDevice creates a device and returns its secret.
func (s *Server) CreateDevice(id, kind string) (string, error) {
	var d struct{ Secret string }
	err := s.Call("POST", "/api/v1/devices", fmt.Sprintf(`{"id":%q,"kind":%q,"name":%q}`, id, kind, id), http.StatusCreated, &d)
	return d.Secret, err
}

// Device connects a paho v3 client as device id from the loopback address
// src ("" for any), subscribes to its topic and shakes hands; with acks it
// acknowledges every lock/unlock command at once.
func (s *Server) Device(src, id, secret, kind string, acks bool) (paho.Client, error) {
	var c paho.Client
	opts := paho.NewClientOptions().AddBroker("tcp://" + s.MQTT).SetClientID(id).SetUsername(id).
		SetPassword(secret).SetAutoReconnect(false).SetProtocolVersion(4).SetCleanSession(true).
		SetConnectTimeout(10 * time.Second).
		SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) {
			f := strings.Fields(string(m.Payload()))
			if acks && len(f) == 3 && (f[0] == "lock" || f[0] == "unlock") {
				c.Publish("toserver", 1, false, "ack "+f[1]+" ok "+f[0]+"ed")
			}
		})
	if src != "" {
		opts.SetDialer(&net.Dialer{Timeout: 10 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}})
	}
	c = paho.NewClient(opts)
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		return nil, fmt.Errorf("connect %s: %v", id, tok.Error())
	}
	if tok := c.Subscribe("todevice/"+id, 1, nil); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		c.Disconnect(0)
		return nil, fmt.Errorf("subscribe %s: %v", id, tok.Error())
	}
	if tok := c.Publish("toserver", 1, false, "hand_shake "+kind+" 1.0 "+id); !tok.WaitTimeout(10 * time.Second) {
		c.Disconnect(0)
		return nil, fmt.Errorf("hand_shake %s: timeout", id)
	}
	return c, nil
}

// RSS is the resident memory of process pid, in bytes.
func RSS(pid int) int64 { return status(pid, "VmRSS:") }

// RSSAnon is the part of RSS that is the process's own memory, not pages of
// files it maps (bbolt maps the data file, so RSS grows with it).
func RSSAnon(pid int) int64 { return status(pid, "RssAnon:") }

func status(pid int, field string) int64 {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field); ok {
			var kb int64
			fmt.Sscan(strings.TrimSuffix(strings.TrimSpace(v), " kB"), &kb)
			return kb << 10
		}
	}
	return 0
}

// CPU is the processor time process pid has used so far (user + system).
func CPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command name, which ends with ')': state is the
	// first, utime the 12th and stime the 13th; both in clock ticks (100/s).
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	var utime, stime int64
	fmt.Sscan(f[11], &utime)
	fmt.Sscan(f[12], &stime)
	return time.Duration(utime+stime) * 10 * time.Millisecond
}

// FDs is the number of open files of process pid.
func FDs(pid int) int {
	entries, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	return len(entries)
}

// FreeAddr returns a loopback address with a port free at the moment.
func FreeAddr() string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// WaitIdle waits until process pid has used at most 10 ms of CPU in the
// last 500 ms (work a burst left behind, like batched commits, is then
// done), or until max has passed; it reports whether the process went
// idle.
func WaitIdle(pid int, max time.Duration) bool {
	const window, quiet = 500 * time.Millisecond, 10 * time.Millisecond
	deadline := time.Now().Add(max)
	last := CPU(pid)
	for time.Now().Before(deadline) {
		time.Sleep(window)
		now := CPU(pid)
		if now-last <= quiet {
			return true
		}
		last = now
	}
	return false
}
