package main

import (
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"gatehouse/bench/harness"
)

// Kinds of server.
const (
	kindGatehouse = "gatehouse"
	kindMochi     = "mochi"
	kindMosquitto = "mosquitto"
)

// contender is one column of the table: a program and how to run it.
type contender struct {
	name string // the column
	kind string
	bin  string
	// args are the limit flags this gatehouse build knows (see limitFlags).
	args []string
	// tmpl is a data dir holding the devices, made once and copied for
	// every run so that each run starts a fresh process on the same data.
	tmpl    string
	secrets []string
}

// limitFlags are raised so that the broker's limits, which refuse a storm
// or a flood from one address by design, measure nothing here: each is
// passed only if the build lists it in `help serve` (the build before the
// limits has none).
var limitFlags = []string{
	"max-connections", "max-pending", "max-pending-per-address", "connect-rate", "connect-burst",
	"message-rate", "message-burst",
}

func newGatehouse(name, bin string) (*contender, error) {
	out, _ := exec.Command(bin, "help", "serve").CombinedOutput()
	if !strings.Contains(string(out), "-mqtt") {
		return nil, fmt.Errorf("%s help serve: no flag list in %q", bin, firstLine(string(out)))
	}
	c := &contender{name: name, kind: kindGatehouse, bin: bin}
	for _, f := range limitFlags {
		if regexp.MustCompile(`(?m)^\s+--?` + regexp.QuoteMeta(f) + `(\s|$)`).MatchString(string(out)) {
			c.args = append(c.args, "--"+f, "1000000")
		}
	}
	return c, nil
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return s
}

// deviceID is the id of device i, on every server.
func deviceID(i int) string { return fmt.Sprintf("dev%05d", i) }

// login is what device i sends in CONNECT: on gatehouse its id and secret;
// elsewhere the same id and a password of the same length, so that every
// server reads the same bytes.
func (c *contender) login(i int) (user, pass string) {
	if c.kind == kindGatehouse {
		return deviceID(i), c.secrets[i]
	}
	return deviceID(i), "bench-password-of-the-same-length-as-a-secret"
}

// handshake is what a device does after CONNECT. On gatehouse: subscribe
// to its topic, send `hand_shake lock` and wait for the PUBACK and the
// `welcome` reply. Elsewhere the same packets in both directions: subscribe
// to todevice/<id>, publish the same payload there at QoS 1, and wait for
// the PUBACK and for the message to come back.
func (c *contender) handshake(cl *client, id string, timeout time.Duration) error {
	if err := cl.subscribe("todevice/"+id, timeout); err != nil {
		return err
	}
	payload := "hand_shake lock 1.0 " + id
	if c.kind == kindGatehouse {
		return cl.exchange("toserver", payload, "welcome", timeout)
	}
	return cl.exchange("todevice/"+id, payload, "hand_shake", timeout)
}

// reportTopic is where device id sends its state reports: on gatehouse
// the server consumes and commits them; elsewhere nobody subscribes.
func (c *contender) reportTopic(id string) string {
	if c.kind == kindGatehouse {
		return "toserver"
	}
	return "fromdevice/" + id
}

// running is a started server process.
type running struct {
	mqtt   string
	pid    int
	gh     *harness.Server // gatehouse only
	status string          // baremochi's status URL
	stop   func()
	exited <-chan error
}

// prepare makes the contender's template data dir with n devices (once).
func (c *contender) prepare(dir string, n int) error {
	if c.kind != kindGatehouse || len(c.secrets) >= n {
		return nil
	}
	if c.tmpl != "" {
		os.RemoveAll(c.tmpl)
	}
	tmpl, err := os.MkdirTemp(dir, "template-")
	if err != nil {
		return err
	}
	c.tmpl = tmpl
	progress("%s: creating %d devices (once; every run starts from a copy)", c.name, n)
	s, err := harness.Start(c.bin, tmpl, c.args...)
	if err != nil {
		return fmt.Errorf("%s: %w", c.name, err)
	}
	defer s.Stop()
	c.secrets = make([]string, n)
	var next atomic.Int64
	var firstErr error
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
				secret, err := s.CreateDevice(deviceID(i), "lock")
				mu.Lock()
				if err != nil && firstErr == nil {
					firstErr = err
				}
				c.secrets[i] = secret
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		c.secrets = nil
		return fmt.Errorf("%s: create devices: %w", c.name, firstErr)
	}
	return nil
}

// start runs a fresh process of the contender, ready for clients.
func (c *contender) start(dir string) (*running, error) {
	run, err := os.MkdirTemp(dir, "run-")
	if err != nil {
		return nil, err
	}
	clean := func() { os.RemoveAll(run) }
	switch c.kind {
	case kindGatehouse:
		if c.tmpl != "" {
			if err := copyDir(filepath.Join(c.tmpl, "data"), filepath.Join(run, "data")); err != nil {
				clean()
				return nil, err
			}
		}
		s, err := harness.Start(c.bin, run, c.args...)
		if err != nil {
			clean()
			return nil, fmt.Errorf("%s: %w", c.name, err)
		}
		var once sync.Once
		return &running{mqtt: s.MQTT, pid: s.Cmd.Process.Pid, gh: s, exited: s.Exited(),
			stop: func() { once.Do(func() { s.Stop(); clean() }) }}, nil
	case kindMochi:
		r := &running{mqtt: harness.FreeAddr(), status: harness.FreeAddr()}
		cmd := exec.Command(c.bin, "-addr", r.mqtt, "-status", r.status)
		r.status = "http://" + r.status + "/api/v1/status"
		return r, r.launch(cmd, clean)
	case kindMosquitto:
		r := &running{mqtt: harness.FreeAddr()}
		_, port, _ := net.SplitHostPort(r.mqtt)
		conf := filepath.Join(run, "mosquitto.conf")
		// Gatehouse's queue bound (max_queued_messages) and in-flight
		// window (max_inflight_messages); anonymous, in memory only.
		text := fmt.Sprintf("listener %s 127.0.0.1\nallow_anonymous true\nmax_queued_messages 128\n"+
			"max_inflight_messages 64\npersistence false\nlog_dest stderr\nlog_type error\n", port)
		if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
			clean()
			return nil, err
		}
		return r, r.launch(exec.Command(c.bin, "-c", conf), clean)
	}
	clean()
	return nil, fmt.Errorf("unknown kind %q", c.kind)
}

// launch starts cmd and waits until its MQTT port accepts connections.
func (r *running) launch(cmd *exec.Cmd, clean func()) error {
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		clean()
		return err
	}
	r.pid = cmd.Process.Pid
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	r.exited = exited
	var once sync.Once
	r.stop = func() {
		once.Do(func() {
			cmd.Process.Signal(os.Interrupt)
			select {
			case err := <-exited:
				exited <- err
			case <-time.After(30 * time.Second):
				cmd.Process.Kill()
			}
			clean()
		})
	}
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if c, err := net.DialTimeout("tcp", r.mqtt, time.Second); err == nil {
			c.Close()
			return nil
		}
		select {
		case err := <-exited:
			exited <- err
			clean()
			return fmt.Errorf("%s exited at start: %v", cmd.Path, err)
		default:
		}
	}
	r.stop()
	return fmt.Errorf("%s: MQTT port %s not open after 30 s", cmd.Path, r.mqtt)
}

// goroutines is the server's goroutine count, -1 where it has no status
// route (mosquitto, gatehouse builds before /api/v1/status).
func (r *running) goroutines() int {
	var st struct{ Goroutines int }
	switch {
	case r.gh != nil:
		if err := r.gh.Call("GET", "/api/v1/status", "", http.StatusOK, &st); err != nil {
			return -1
		}
	case r.status != "":
		resp, err := http.Get(r.status)
		if err != nil {
			return -1
		}
		defer resp.Body.Close()
		if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
			return -1
		}
	default:
		return -1
	}
	return st.Goroutines
}

// alive reports an error if the process has ended.
func (r *running) alive() error {
	select {
	case err := <-r.exited:
		r.exited = nil
		return fmt.Errorf("server exited: %v", err)
	default:
		return nil
	}
}

// stateEvents counts the state events gatehouse has stored, page by page.
func (r *running) stateEvents() (int, error) {
	n, cursor := 0, ""
	for {
		var page struct {
			Items []json.RawMessage
			Next  string
		}
		path := "/api/v1/events?type=state&limit=1000"
		if cursor != "" {
			path += "&cursor=" + url.QueryEscape(cursor)
		}
		if err := r.gh.Call("GET", path, "", http.StatusOK, &page); err != nil {
			return n, err
		}
		n += len(page.Items)
		if page.Next == "" {
			return n, nil
		}
		cursor = page.Next
	}
}

func copyDir(from, to string) error {
	return filepath.WalkDir(from, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(from, p)
		dst := filepath.Join(to, rel)
		if d.IsDir() {
			return os.MkdirAll(dst, 0o700)
		}
		in, err := os.Open(p)
		if err != nil {
			return err
		}
		defer in.Close()
		out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
		if err != nil {
			return err
		}
		if _, err := io.Copy(out, in); err != nil {
			out.Close()
			return err
		}
		return out.Close()
	})
}
