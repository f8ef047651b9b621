package fleet

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"gatehouse/bench/harness"
)

// flagsOf lists the flags bin accepts, read from its help: the binary
// before the comparison has fewer limits (no --message-rate, no
// --keep-events-max), and passing an unknown flag would stop it.
func flagsOf(bin string) (map[string]bool, error) {
	out, _ := exec.Command(bin, "help").CombinedOutput()
	found := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^\s+--?([a-z][a-z0-9-]+)`).FindAllStringSubmatch(string(out), -1) {
		found[m[1]] = true
	}
	if !found["data"] {
		return nil, fmt.Errorf("%s help lists no --data flag: not a gatehouse binary? %.200s", bin, out)
	}
	return found, nil
}

// proc is a gatehouse server process on a data dir of our choosing.
type proc struct {
	*harness.Server // Cmd, MQTT, HTTP, URL, Data; Call, CreateDevice, Device
	exited          chan error
	started         time.Time
	ready           time.Duration // from exec to /readyz answering 200
	log             string        // the server's stderr
}

// serve runs bin serve on data with loopback ports, GATEHOUSE_ADMIN_TOKEN
// set to harness.Token and, of args (flag name → value), those bin
// knows; it waits up to timeout for /readyz to answer 200, polling every
// 10 ms so the start-up time it records is that precise.
func serve(bin string, flags map[string]bool, data string, timeout time.Duration, args map[string]string) (*proc, error) {
	s := &harness.Server{MQTT: harness.FreeAddr(), HTTP: harness.FreeAddr(), Data: data}
	s.URL = "http://" + s.HTTP
	argv := []string{"serve", "--data", data, "--mqtt", s.MQTT, "--http", s.HTTP, "--log-level", "error"}
	for name, v := range args {
		if flags[name] {
			argv = append(argv, "--"+name+"="+v)
		}
	}
	s.Cmd = exec.Command(bin, argv...)
	s.Cmd.Env = append(os.Environ(), "GATEHOUSE_ADMIN_TOKEN="+harness.Token)
	// The server's log goes to a file beside its data dir: under overload
	// a server may log a line per refused request.
	p := &proc{Server: s, exited: make(chan error, 1), log: filepath.Join(filepath.Dir(data), "server.log")}
	if err := os.MkdirAll(filepath.Dir(data), 0o755); err != nil {
		return nil, err
	}
	logFile, err := os.OpenFile(p.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	s.Cmd.Stderr = logFile
	p.started = time.Now()
	if err := s.Cmd.Start(); err != nil {
		logFile.Close()
		return nil, err
	}
	go func() {
		err := s.Cmd.Wait()
		logFile.Close()
		p.exited <- err
	}()
	client := &http.Client{Timeout: 2 * time.Second}
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		select {
		case err := <-p.exited:
			p.exited <- err
			return nil, fmt.Errorf("%s serve exited before it was ready: %v%s", bin, err, p.logTail())
		default:
		}
		if resp, err := client.Get(s.URL + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				p.ready = time.Since(p.started)
				return p, nil
			}
		}
	}
	p.stop()
	return nil, fmt.Errorf("%s serve: not ready after %s%s", bin, timeout, p.logTail())
}

// logTail returns the last lines of the server's log, for an error.
func (p *proc) logTail() string {
	b, _ := os.ReadFile(p.log)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(b) == 0 {
		return " (its log " + p.log + " is empty)"
	}
	return "; the end of its log " + p.log + ":\n" + strings.Join(lines[max(0, len(lines)-5):], "\n")
}

// stop interrupts the server and waits for it, killing it after 30 s.
func (p *proc) stop() {
	p.Cmd.Process.Signal(os.Interrupt)
	select {
	case err := <-p.exited:
		p.exited <- err
	case <-time.After(30 * time.Second):
		p.Cmd.Process.Kill()
		<-p.exited
	}
}

// rssAnon is the server's own memory now, in MiB.
func (p *proc) rssAnon() float64 { return float64(harness.RSSAnon(p.Cmd.Process.Pid)) / (1 << 20) }

// get sends an admin GET with client and decodes a 200 answer into v.
func get(ctx context.Context, client *http.Client, url string, v any) error {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	req.Header.Set("Authorization", "Bearer "+harness.Token)
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %d %s", url, resp.StatusCode, bytes.TrimSpace(body))
	}
	if v != nil {
		return json.Unmarshal(body, v)
	}
	return nil
}

// run runs bin with args and returns an error with its output when it fails.
func run(bin string, args ...string) error {
	out, err := exec.Command(bin, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %v: %s", bin, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}
