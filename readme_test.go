package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestReadmeWalkthrough runs the README's five-minute walk-through, block
// by block, with bash, curl, jq and the Mosquitto clients, against the
// binary built with the README's own build command, and compares what each
// command prints with the sample output the README shows under it (ids,
// times and secrets aside). A README command that stops working, or a
// sample that no longer matches, fails it.
//
// The commands run exactly as written: the server gets free ports through
// GATEHOUSE_MQTT and GATEHOUSE_HTTP, and the clients are pointed at them by
// their own configuration files (curl's .curlrc connect-to, the Mosquitto
// clients' $XDG_CONFIG_HOME/mosquitto_*), so `localhost:8080` and the
// default MQTT port in the README stay as a newcomer types them. The one
// substitution is `go run .`, which becomes the built binary.
func TestReadmeWalkthrough(t *testing.T) {
	for _, tool := range []string{"bash", "stdbuf", "curl", "jq", "mosquitto_pub", "mosquitto_sub", "mosquitto_rr"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not found: the README walk-through needs curl, jq and the Mosquitto clients "+
				"(apt-get install curl jq mosquitto-clients; .ci/run installs them)", tool)
		}
	}
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	steps := walkthroughSteps(t, string(readme))
	build := findBlock(t, string(readme), "go build -o gatehouse .")

	work := t.TempDir()
	bin := filepath.Join(t.TempDir(), "gatehouse")
	build = strings.ReplaceAll(strings.Replace(build, "-o gatehouse", "-o "+bin, 1), "./gatehouse", bin)
	cmd := exec.Command("bash", "-c", "set -e\n"+build)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("README build command: %v\n%s", err, out)
	}
	mqttPort, httpPort := freePort(t), freePort(t)
	os.WriteFile(filepath.Join(work, ".curlrc"), fmt.Appendf(nil, "connect-to = localhost:8080:127.0.0.1:%d\n", httpPort), 0o600)
	for _, term := range []string{"t2", "t3", "t4"} {
		conf := filepath.Join(work, ".config-"+term)
		os.Mkdir(conf, 0o700)
		opts := fmt.Sprintf("-h 127.0.0.1\n-p %d\n", mqttPort)
		for _, c := range []string{"mosquitto_pub", "mosquitto_rr"} {
			os.WriteFile(filepath.Join(conf, c), []byte(opts), 0o600)
		}
		if term != "t2" {
			// Debug lines show the SUBACK, so that the next step waits for
			// the subscription as a person would; messageLines drops them.
			opts += "-d\n"
		}
		os.WriteFile(filepath.Join(conf, "mosquitto_sub"), []byte(opts), 0o600)
	}
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "GATEHOUSE_") && !strings.HasPrefix(kv, "CURL_HOME=") && !strings.HasPrefix(kv, "XDG_CONFIG_HOME=") {
			env = append(env, kv)
		}
	}
	env = append(env, "CURL_HOME="+work)
	w := &walk{t: t, dir: work, env: env, procs: map[string]*exec.Cmd{}, out: map[string]*syncBuffer{}}
	defer w.stopAll()

	// Step by step, as the README tells it.
	for _, s := range steps {
		t.Logf("step %s: %d command blocks, %d sample outputs", s.name, len(s.code), len(s.output))
	}
	step := func(name string) walkStep {
		for _, s := range steps {
			if s.name == name {
				return s
			}
		}
		t.Fatalf("README walk-through has no step %q", name)
		return walkStep{}
	}
	covered := map[string]bool{}
	use := func(s walkStep, want int) walkStep {
		if len(s.code) != want {
			t.Fatalf("step %s has %d command blocks; this test runs %d: update readme_test.go with the README", s.name, len(s.code), want)
		}
		covered[s.name] = true
		return s
	}

	s := use(step("1"), 1)
	if !strings.Contains(s.code[0], "go run .") {
		t.Fatalf("step 1 does not start the server with go run .:\n%s", s.code[0])
	}
	w.background("t1", strings.Replace(s.code[0], "go run .", bin, 1),
		fmt.Sprintf("GATEHOUSE_MQTT=127.0.0.1:%d", mqttPort), fmt.Sprintf("GATEHOUSE_HTTP=127.0.0.1:%d", httpPort))
	w.waitFor("t1", "gatehouse started")
	if strings.Contains(w.out["t1"].String(), "admin token:") || strings.Contains(w.out["t1"].String(), "level=WARN") {
		t.Errorf("step 1: the server was not started from a clean state:\n%s", w.out["t1"].String())
	}
	sameLogLine(t, pick(t, w.out["t1"].String(), "gatehouse started"), s.output[0])

	s = use(step("2"), 1)
	compareOutput(t, "step 2", w.run("t2", s.code[0]), s.output[0])

	s = use(step("3"), 1)
	compareOutput(t, "step 3", w.run("t2", s.code[0]), s.output[0])

	// A person takes seconds to open the next terminal: by then the
	// server has seen mosquitto_rr leave, so door1 comes online again below.
	w.waitFor("t1", `msg="device offline"`)
	s = use(step("4"), 1)
	w.background("t3", s.code[0], "XDG_CONFIG_HOME="+filepath.Join(work, ".config-t3"))
	w.waitFor("t3", "received SUBACK")
	s = use(step("5"), 1)
	w.background("t4", s.code[0], "XDG_CONFIG_HOME="+filepath.Join(work, ".config-t4"))
	w.waitFor("t3", "toapp/admin online door1")
	w.waitFor("t4", "received SUBACK")

	s = use(step("6"), 1)
	compareOutput(t, "step 6", w.run("t2", s.code[0]), s.output[0])
	w.wait("t4")
	compareOutput(t, "step 6, terminal 4", w.out["t4"].String(), s.output[1])
	w.waitCount("t1", `msg="device offline"`, 2) // terminal 4's device has left

	s = use(step("7"), 1)
	compareOutput(t, "step 7", w.run("t2", s.code[0]), s.output[0])
	want3 := strings.Count(strings.TrimSpace(s.output[1]), "\n") + 1
	w.waitLines("t3", want3)
	compareOutput(t, "step 7, terminal 3", w.out["t3"].String(), s.output[1])

	s = use(step("8"), 1)
	compareOutput(t, "step 8", w.run("t2", s.code[0]), s.output[0])

	s = use(step("Next: people"), 1)
	for _, line := range strings.Split(strings.TrimSpace(w.run("t2", s.code[0])), "\n") {
		if !json.Valid([]byte(line)) || strings.Contains(line, `"error"`) {
			t.Errorf("next step: %s", line)
		}
	}
	for _, s := range steps {
		if len(s.code) > 0 && !covered[s.name] {
			t.Errorf("README step %q has commands this test does not run: update readme_test.go", s.name)
		}
	}

	// Ctrl-C stops the server cleanly; the README's clean-up starts over.
	syscall.Kill(-w.procs["t1"].Process.Pid, syscall.SIGINT) // Ctrl-C reaches the whole group
	w.wait("t1")
	if !strings.Contains(w.out["t1"].String(), `msg=stopped error=<nil>`) {
		t.Errorf("server stop:\n%s", w.out["t1"].String())
	}
	if !strings.Contains(string(readme), "rm -r data door1.json cmd.json") {
		t.Error("README lost its clean-up command")
	}
	w.run("t2", "rm -r data door1.json cmd.json")
}

type walkStep struct {
	name   string
	code   []string // ```sh blocks
	output []string // other fenced blocks: what the commands print
}

// walkthroughSteps cuts the README's walk-through into its bold-titled
// steps and their fenced blocks.
func walkthroughSteps(t *testing.T, readme string) []walkStep {
	t.Helper()
	start := strings.Index(readme, "## Five-minute walk-through")
	end := strings.Index(readme, "\n## Configuration")
	if start < 0 || end < start {
		t.Fatal("README has no walk-through section")
	}
	var steps []walkStep
	title := regexp.MustCompile(`^\*\*(\d+|Next: [a-z]+)\.`)
	lines := strings.Split(readme[start:end], "\n")
	for i := 0; i < len(lines); i++ {
		if m := title.FindStringSubmatch(lines[i]); m != nil {
			steps = append(steps, walkStep{name: m[1]})
			continue
		}
		if !strings.HasPrefix(lines[i], "```") || len(steps) == 0 {
			continue
		}
		lang := strings.TrimPrefix(lines[i], "```")
		var block []string
		for i++; i < len(lines) && lines[i] != "```"; i++ {
			block = append(block, lines[i])
		}
		s := &steps[len(steps)-1]
		if lang == "sh" {
			s.code = append(s.code, strings.Join(block, "\n")+"\n")
		} else {
			s.output = append(s.output, strings.Join(block, "\n")+"\n")
		}
	}
	return steps
}

// findBlock returns the README's ```sh block holding line.
func findBlock(t *testing.T, readme, line string) string {
	for _, b := range strings.Split(readme, "```sh\n")[1:] {
		b, _, _ = strings.Cut(b, "```")
		if strings.Contains(b, line) {
			return b
		}
	}
	t.Fatalf("README has no block with %q", line)
	return ""
}

func freePort(t *testing.T) int {
	addr := freeAddr(t)
	var port int
	fmt.Sscanf(addr[strings.LastIndex(addr, ":")+1:], "%d", &port)
	return port
}

// walk is the walk-through's terminals: each a bash that keeps its
// exported variables from one block to the next, as a terminal does.
type walk struct {
	t     *testing.T
	dir   string
	env   []string
	procs map[string]*exec.Cmd
	out   map[string]*syncBuffer
}

func (w *walk) command(term, code string, env ...string) *exec.Cmd {
	state := filepath.Join(w.dir, ".state-"+term)
	script := fmt.Sprintf("set -eo pipefail\n[ -f %[1]q ] && source %[1]q\n%s\nexport -p > %[1]q\n", state, code)
	// Line-buffered output, as on a terminal: mosquitto_sub writes into a
	// pipe in blocks otherwise, and a waiting subscriber would show nothing.
	cmd := exec.Command("stdbuf", "-oL", "-eL", "bash", "-c", script)
	cmd.Dir = w.dir
	cmd.Env = append(slices.Clone(w.env), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // stopped with its children
	return cmd
}

// run runs a block to its end and returns its stdout.
func (w *walk) run(term, code string) string {
	w.t.Helper()
	cmd := w.command(term, code, "XDG_CONFIG_HOME="+filepath.Join(w.dir, ".config-"+term))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		w.t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			w.t.Fatalf("%s: %v\n%s\nstdout:\n%s\nstderr:\n%s", term, err, code, stdout.String(), stderr.String())
		}
	case <-time.After(60 * time.Second):
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		w.t.Fatalf("%s: still running after 60s:\n%s", term, code)
	}
	return stdout.String()
}

// background starts a block that keeps running (a server, a subscriber).
func (w *walk) background(term, code string, env ...string) {
	w.t.Helper()
	cmd := w.command(term, code, env...)
	buf := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = buf, buf
	if err := cmd.Start(); err != nil {
		w.t.Fatal(err)
	}
	w.procs[term], w.out[term] = cmd, buf
}

func (w *walk) waitFor(term, text string) {
	w.t.Helper()
	for deadline := time.Now().Add(30 * time.Second); !strings.Contains(w.out[term].String(), text); {
		if time.Now().After(deadline) {
			w.t.Fatalf("%s never printed %q; it printed:\n%s%s", term, text, w.out[term].String(), w.dump())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// dump is every background terminal's output, for a failure.
func (w *walk) dump() string {
	var b strings.Builder
	for term, out := range w.out {
		fmt.Fprintf(&b, "\n--- %s:\n%s", term, out.String())
	}
	return b.String()
}

func (w *walk) waitCount(term, text string, n int) {
	w.t.Helper()
	for deadline := time.Now().Add(30 * time.Second); strings.Count(w.out[term].String(), text) < n; {
		if time.Now().After(deadline) {
			w.t.Fatalf("%s printed %q fewer than %d times:%s", term, text, n, w.dump())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (w *walk) waitLines(term string, n int) {
	w.t.Helper()
	for deadline := time.Now().Add(30 * time.Second); len(messageLines(w.out[term].String())) < n; {
		if time.Now().After(deadline) {
			w.t.Fatalf("%s printed fewer than %d lines:\n%s", term, n, w.out[term].String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// wait waits for a background block to end by itself.
func (w *walk) wait(term string) {
	w.t.Helper()
	done := make(chan error, 1)
	go func() { done <- w.procs[term].Wait() }()
	select {
	case <-done:
		delete(w.procs, term)
	case <-time.After(30 * time.Second):
		w.t.Fatalf("%s did not end; it printed:\n%s", term, w.out[term].String())
	}
}

func (w *walk) stopAll() {
	for _, cmd := range w.procs {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		cmd.Wait()
	}
}

// messageLines drops mosquitto_sub's debug lines ("Client … received …",
// "Subscribed (mid: 1): 0").
func messageLines(out string) []string {
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if l != "" && !strings.HasPrefix(l, "Client ") && !strings.HasPrefix(l, "Subscribed (mid") {
			lines = append(lines, l)
		}
	}
	return lines
}

func pick(t *testing.T, out, text string) string {
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, text) {
			return l
		}
	}
	t.Fatalf("no line with %q in:\n%s", text, out)
	return ""
}

// sameLogLine checks a log line has the keys of the README's sample line,
// no more and no fewer, and its msg.
func sameLogLine(t *testing.T, got, sample string) {
	t.Helper()
	keys := func(line string) []string {
		var ks []string
		for _, m := range regexp.MustCompile(`(?:^|\s)([a-z_]+)=`).FindAllStringSubmatch(line, -1) {
			if m[1] != "time" {
				ks = append(ks, m[1])
			}
		}
		return ks
	}
	if g, s := keys(got), keys(strings.TrimSpace(sample)); !slices.Equal(g, s) {
		t.Errorf("start-up line fields %v, README shows %v:\n%s\n%s", g, s, got, sample)
	}
	if !strings.Contains(got, `msg="gatehouse started"`) || !strings.Contains(got, "data=./data") {
		t.Errorf("start-up line %q", got)
	}
}

var (
	longHex    = regexp.MustCompile(`\b[0-9a-f]{16,}\b`)
	longNumber = regexp.MustCompile(`\b\d{6,}\b`)
	// Fields whose values change from run to run.
	volatile = map[string]bool{"id": true, "created": true, "not_after": true, "time": true, "secret": true, "command": true, "detail": true}
)

// compareOutput compares what a block printed with the README's sample,
// line by line: JSON objects by their keys and steady values (a sample
// ending in ",…}" shows some keys only; "…" stands for any value), other
// lines with long numbers and hex ids replaced.
func compareOutput(t *testing.T, what, got, sample string) {
	t.Helper()
	g, s := messageLines(got), messageLines(sample)
	if len(g) != len(s) {
		t.Errorf("%s printed %d lines, the README shows %d:\n%s\n--- README:\n%s", what, len(g), len(s), got, sample)
		return
	}
	for i := range g {
		if strings.HasPrefix(s[i], "{") {
			if err := sameJSON(g[i], s[i]); err != nil {
				t.Errorf("%s, line %d: %v\n got: %s\nREADME: %s", what, i+1, err, g[i], s[i])
			}
			continue
		}
		norm := func(l string) string { return longNumber.ReplaceAllString(longHex.ReplaceAllString(l, "H"), "N") }
		if norm(g[i]) != norm(s[i]) {
			t.Errorf("%s, line %d:\n got: %s\nREADME: %s", what, i+1, g[i], s[i])
		}
	}
}

func sameJSON(got, sample string) error {
	partial := strings.HasSuffix(sample, ",…}")
	if partial {
		sample = strings.TrimSuffix(sample, ",…}") + "}"
	}
	var g, s map[string]any
	if err := json.Unmarshal([]byte(got), &g); err != nil {
		return fmt.Errorf("not JSON: %v", err)
	}
	if err := json.Unmarshal([]byte(sample), &s); err != nil {
		return fmt.Errorf("README sample is not JSON: %v", err)
	}
	for k, sv := range s {
		gv, ok := g[k]
		if !ok {
			return fmt.Errorf("no %q", k)
		}
		if volatile[k] || sv == "…" {
			continue
		}
		if fmt.Sprint(gv) != fmt.Sprint(sv) {
			return fmt.Errorf("%q is %v, README shows %v", k, gv, sv)
		}
	}
	if !partial {
		for k := range g {
			if _, ok := s[k]; !ok {
				return fmt.Errorf("%q is not in the README", k)
			}
		}
	}
	return nil
}
