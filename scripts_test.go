package main

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"
)

// End-to-end tests of actions added at run time (docs/scripts.md): a real
// server with --scripts, paho clients, the REST API.

// withScripts starts the server with --scripts.
func withScripts(c *config) { c.Scripts = true }

// putScript uploads source as script name with token ("" for the admin).
func (s *testServer) putScript(name, source, token string) (int, string) {
	s.t.Helper()
	req, _ := http.NewRequest("PUT", s.url+"/api/v1/actions/"+name, strings.NewReader(source))
	if token == "" {
		token = testAdminToken
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "text/plain")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatalf("PUT %s: %v", name, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// mustPutScript uploads source and fails unless it was accepted.
func (s *testServer) mustPutScript(name, source string) {
	s.t.Helper()
	if st, body := s.putScript(name, source, ""); st != http.StatusCreated && st != http.StatusOK {
		s.t.Fatalf("PUT %s: %d %s", name, st, body)
	}
}

// docScripts reads the example scripts of docs/scripts.md, each the
// fenced block after a "<!-- script: name -->" line.
func docScripts(t *testing.T) map[string]string {
	t.Helper()
	doc, err := os.ReadFile("docs/scripts.md")
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile("(?s)<!-- script: ([a-z0-9_]+) -->\n```python\n(.*?)```")
	out := map[string]string{}
	for _, m := range re.FindAllStringSubmatch(string(doc), -1) {
		out[m[1]] = m[2]
	}
	for _, name := range []string{"status", "battery", "lockdown"} {
		if out[name] == "" {
			t.Fatalf("docs/scripts.md has no script %q", name)
		}
	}
	return out
}

const pingScript = `def action(msg, server):
    return "todevice/%s pong %s" % (msg.sender.id, " ".join(msg.words[1:]))
`

func TestScriptsREST(t *testing.T) {
	s := startServerWith(t, "", withScripts)
	dev := s.device("dev1", s.createDevice("dev1", "lock"), "lock")
	alice := s.createUser("alice", "member")

	st, body := s.putScript("ping", pingScript, "")
	var meta struct {
		Name    string
		Version int
		Size    int
		By      string
		Source  *string
	}
	json.Unmarshal([]byte(body), &meta)
	if st != http.StatusCreated || meta.Name != "ping" || meta.Version != 1 || meta.Size != len(pingScript) || meta.By != "admin" || meta.Source != nil {
		t.Fatalf("PUT new: %d %s", st, body)
	}
	dev.publish("toserver", false, "ping a b")
	dev.expect("todevice/dev1 pong a b")

	t.Run("Read", func(t *testing.T) {
		resp, err := http.NewRequest("GET", s.url+"/api/v1/actions/ping", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Header.Set("Authorization", "Bearer "+testAdminToken)
		r, err := http.DefaultClient.Do(resp)
		if err != nil {
			t.Fatal(err)
		}
		src, _ := io.ReadAll(r.Body)
		r.Body.Close()
		if r.StatusCode != http.StatusOK || string(src) != pingScript || !strings.HasPrefix(r.Header.Get("Content-Type"), "text/plain") {
			t.Errorf("GET: %d %q %q", r.StatusCode, r.Header.Get("Content-Type"), src)
		}
		st, body := s.api("GET", "/api/v1/actions", "", nil)
		if st != http.StatusOK || !strings.Contains(string(body), `"name":"ping"`) || !strings.HasSuffix(string(body), `],"next":""}`+"\n") {
			t.Errorf("list: %d %s", st, body)
		}
	})
	t.Run("Replace", func(t *testing.T) {
		st, body := s.putScript("ping", strings.Replace(pingScript, "pong", "pong2", 1), "")
		if st != http.StatusOK || !strings.Contains(body, `"version":2`) {
			t.Fatalf("PUT again: %d %s", st, body)
		}
		dev.publish("toserver", false, "ping")
		dev.expect("todevice/dev1 pong2 ")
	})
	t.Run("ErrSyntax", func(t *testing.T) {
		st, body := s.putScript("bad", "def action(msg, server):\n    return open('x')\n", "")
		if st != http.StatusBadRequest || !strings.Contains(body, `"message":"script bad: line 2: undefined: open"`) {
			t.Errorf("PUT bad: %d %s", st, body)
		}
		if st, body := s.putScript("lock", pingScript, ""); st != http.StatusConflict {
			t.Errorf("PUT lock: %d %s", st, body)
		}
		if st, _ := s.putScript("big", pingScript+"#"+strings.Repeat("x", 70<<10), ""); st != http.StatusRequestEntityTooLarge {
			t.Errorf("PUT 70 KiB: %d", st)
		}
	})
	t.Run("ErrForbidden", func(t *testing.T) {
		if st, body := s.putScript("mine", pingScript, alice); st != http.StatusForbidden {
			t.Errorf("member PUT: %d %s", st, body)
		}
		for _, m := range []string{"GET /api/v1/actions", "GET /api/v1/actions/ping", "DELETE /api/v1/actions/ping"} {
			method, path, _ := strings.Cut(m, " ")
			if st, body := s.as(alice, method, path, nil); st != http.StatusForbidden {
				t.Errorf("member %s: %d %s", m, st, body)
			}
		}
		if st, _ := s.api("GET", "/api/v1/actions", "-", nil); st != http.StatusUnauthorized {
			t.Errorf("anonymous list: %d", st)
		}
	})
	t.Run("Delete", func(t *testing.T) {
		if st, body := s.api("DELETE", "/api/v1/actions/ping", "", nil); st != http.StatusNoContent {
			t.Fatalf("DELETE: %d %s", st, body)
		}
		if st, _ := s.api("GET", "/api/v1/actions/ping", "", nil); st != http.StatusNotFound {
			t.Errorf("GET deleted: %d", st)
		}
		dev.publish("toserver", false, "ping")
		dev.expect(`todevice/dev1 error unknown action "ping"`)
	})
	var details []string
	for _, e := range s.events("type=script") {
		details = append(details, e.User+" "+e.Via+" "+e.Detail)
	}
	if want := "admin rest ping deleted|admin rest ping replaced (version 2)|admin rest ping added (version 1)"; strings.Join(details, "|") != want {
		t.Errorf("script events %q, want %q", details, want)
	}
}

func TestScriptsMQTTAndRestart(t *testing.T) {
	dir := t.TempDir()
	s := startServerWith(t, dir, withScripts)
	secret := s.createDevice("dev1", "lock")
	dev := s.device("dev1", secret, "lock")
	app := s.appClient("phone")
	app.publish("toserver", false, "add_action ping "+pingScript)
	app.expect("toapp/admin action_added ping")
	dev.publish("toserver", false, "ping x")
	dev.expect("todevice/dev1 pong x")
	if ev := s.events("type=script"); len(ev) != 1 || ev[0].Via != "mqtt" || ev[0].User != "admin" {
		t.Errorf("events %+v", ev)
	}
	s.stop()

	s = startServerWith(t, dir, withScripts)
	dev = s.device("dev1", secret, "lock")
	dev.publish("toserver", false, "ping again")
	dev.expect("todevice/dev1 pong again")
	s.stop()

	// Without --scripts: stored scripts do not run, uploads are refused,
	// and the admin can still see and delete them.
	s = startServer(t, dir)
	dev = s.device("dev1", secret, "lock")
	dev.publish("toserver", false, "ping")
	dev.expect("todevice/dev1 error scripts are disabled (start the server with --scripts)")
	if st, body := s.putScript("other", pingScript, ""); st != http.StatusConflict || !strings.Contains(body, "scripts are disabled") {
		t.Errorf("PUT while disabled: %d %s", st, body)
	}
	app = s.appClient("phone")
	app.publish("toserver", false, "add_action other "+pingScript)
	app.expect("toapp/admin error scripts are disabled")
	if st, body := s.api("GET", "/api/v1/actions", "", nil); st != http.StatusOK || !strings.Contains(string(body), `"name":"ping"`) {
		t.Errorf("list while disabled: %d %s", st, body)
	}
}

// TestScriptsExamples runs the three examples of docs/scripts.md.
func TestScriptsExamples(t *testing.T) {
	s := startServerWith(t, "", withScripts)
	for name, src := range docScripts(t) {
		s.mustPutScript(name, src)
	}
	door := s.device("door", s.createDevice("door", "lock"), "lock")
	back := s.device("back", s.createDevice("back", "lock"), "lock")
	s.device("lamp", s.createDevice("lamp", "light"), "light")
	s.createDevice("shed", "lock")
	alice := s.createUser("alice", "member")
	bob := s.createUser("bob", "member")
	s.grant(map[string]any{"user": "alice", "device": "door"})
	admin := s.appClient("admin-phone")
	ap := s.connect("alice-phone", "alice", alice)
	ap.subscribe("toapp/alice")
	bp := s.connect("bob-phone", "bob", bob)
	bp.subscribe("toapp/bob")

	t.Run("Status", func(t *testing.T) {
		door.publish("toserver", false, "state locked")
		ap.expect("toapp/alice state door locked")
		ap.publish("toserver", false, "status door")
		ap.expect("toapp/alice status door locked online")
		ap.publish("toserver", false, "status back")
		ap.expect("toapp/alice error status: no device back")
		admin.publish("toserver", false, "status shed")
		admin.expect("toapp/admin status shed unknown offline")
		bp.publish("toserver", false, "status door")
		bp.expect("toapp/bob error status: no device door")
	})
	t.Run("Battery", func(t *testing.T) {
		door.publish("toserver", false, "battery 80")
		door.publish("toserver", false, "battery 15")
		ap.expect("toapp/alice script battery battery_low door 15")
		admin.expect("toapp/admin script battery battery_low door 15")
		door.publish("toserver", false, "battery lots")
		door.expect("todevice/door error usage: battery <percent>")
		bp.quiet(200 * time.Millisecond)
	})
	t.Run("Lockdown", func(t *testing.T) {
		t.Cleanup(ackLoop(t, door, "door", lockStates))
		t.Cleanup(ackLoop(t, back, "back", lockStates))
		admin.publish("toserver", false, "lockdown")
		// The answers of the locks may come before the script's reply.
		got := map[string]bool{}
		deadline := time.After(5 * time.Second)
		for len(got) < 3 {
			select {
			case m := <-admin.msgs:
				if f := strings.Fields(m); len(f) == 6 && f[1] == "lock_response" {
					got[f[3]+" "+f[4]+" "+f[5]] = true
				} else if strings.HasPrefix(m, "toapp/admin lockdown ") {
					got[m] = true
				}
			case <-deadline:
				t.Fatalf("after lockdown, got %v", got)
			}
		}
		if !got["back 0 locked"] || !got["door 0 locked"] || !got["toapp/admin lockdown locked=back,door offline=shed"] {
			t.Errorf("after lockdown, got %v", got)
		}
		var cmds []commandJSON
		for _, e := range s.events("type=command") {
			var c commandJSON
			s.apiJSON("GET", "/api/v1/commands/"+e.Command, nil, http.StatusOK, &c)
			cmds = append(cmds, c)
		}
		if len(cmds) != 2 {
			t.Fatalf("commands %+v", cmds)
		}
		for _, c := range cmds {
			if c.Via != "script" || c.By != "admin" || c.Verb != "lock" || c.Status != "done" {
				t.Errorf("command %+v", c)
			}
		}
		// alice's lockdown locks only what she may operate.
		ap.publish("toserver", false, "lockdown")
		ap.expect("toapp/alice lockdown locked=door offline=-")
	})
}

// TestScriptsSandbox: misbehaving scripts through the real broker are
// stopped or refused, and other devices are served all along.
func TestScriptsSandbox(t *testing.T) {
	clk := newClock(tuesday10)
	s := startServerWith(t, "", func(c *config) { c.Scripts = true; c.now = clk.now })
	busy := s.device("busy", s.createDevice("busy", "lock"), "lock")
	other := s.device("other", s.createDevice("other", "lock"), "lock")
	calm := s.device("calm", s.createDevice("calm", "lock"), "lock")
	s.mustPutScript("ping", pingScript)
	s.mustPutScript("spin", "def action(msg, server):\n    while True:\n        pass\n")
	s.mustPutScript("bomb", "def action(msg, server):\n    return \"x\" * 1000000000\n")
	s.mustPutScript("grab", "def action(msg, server):\n    server.publish(\"todevice/other\", \"unlock 1 9999999999\")\n")
	s.mustPutScript("reply", "def action(msg, server):\n    return \"todevice/other unlock 1 9999999999\"\n")

	start := time.Now()
	for range 3 {
		busy.publish("toserver", false, "spin")
	}
	busy.publish("toserver", false, "bomb")
	busy.publish("toserver", false, "grab")
	busy.publish("toserver", false, "reply")
	// calm's round trip is not held up by busy's scripts.
	calm.publish("toserver", false, "ping")
	calm.expect("todevice/calm pong")
	for range 3 {
		busy.expect("todevice/busy error script spin: ")
	}
	busy.expect("todevice/busy error script bomb: line 2: string of 1000000000 bytes is over the limit of 16384")
	busy.expect(`todevice/busy error script grab: line 2: publish: may not publish to "todevice/other"`)
	busy.expect(`todevice/busy error script reply: may not reply on "todevice/other"`)
	// Each spin stops at its 1 s time limit at the latest; the bound is
	// generous so that a busy machine does not fail the test.
	if d := time.Since(start); d > 30*time.Second {
		t.Errorf("took %s", d)
	}
	other.quiet(200 * time.Millisecond)
	calm.publish("toserver", false, "ping after")
	calm.expect("todevice/calm pong after")
	if st, _ := s.api("GET", "/readyz", "-", nil); st != http.StatusOK {
		t.Errorf("readyz %d", st)
	}
	var stopped int
	for _, e := range s.events("type=script&device=busy") {
		if strings.HasPrefix(e.Detail, "script ") {
			stopped++
		}
	}
	if stopped < 4 { // spin (at most one a second), bomb, grab, reply
		t.Errorf("%d script events about busy, want at least 4", stopped)
	}

	t.Run("GuestOutsideWindow", func(t *testing.T) {
		carol := s.createUser("carol", "guest")
		s.grant(map[string]any{"user": "carol", "device": "other", "weekdays": []string{"tue"}, "hours": "09:00-12:00"})
		t.Cleanup(ackLoop(t, other, "other", lockStates))
		s.mustPutScript("open", "def action(msg, server):\n    return \"toapp/%s sent %s\" % (msg.sender.id, server.command(\"other\", \"unlock\"))\n")
		cp := s.connect("carol-phone", "carol", carol)
		cp.subscribe("toapp/carol")
		cp.publish("toserver", false, "open")
		cp.expect("toapp/carol sent ")
		cp.expect("toapp/carol lock_response ")
		clk.set(tuesday10.Add(3 * time.Hour))
		cp.publish("toserver", false, "open")
		cp.expect(`toapp/carol error script open: line 2: command: your grant for device "other" does not allow it now`)
	})
}

func TestScriptsFlag(t *testing.T) {
	env := func(v string) func(string) string {
		return func(k string) string {
			if k == "GATEHOUSE_SCRIPTS" {
				return v
			}
			return ""
		}
	}
	for _, tc := range []struct {
		args []string
		env  string
		want bool
	}{
		{nil, "", false},
		{[]string{"--scripts"}, "", true},
		{nil, "true", true},
		{nil, "1", true},
		{[]string{"--scripts=false"}, "true", false},
	} {
		cfg, err := parseConfig("serve", tc.args, env(tc.env), io.Discard)
		if err != nil || cfg.Scripts != tc.want {
			t.Errorf("%v with GATEHOUSE_SCRIPTS=%q: scripts %v, %v; want %v", tc.args, tc.env, cfg.Scripts, err, tc.want)
		}
	}
	if _, err := parseConfig("serve", nil, env("maybe"), io.Discard); err == nil || !strings.Contains(err.Error(), "GATEHOUSE_SCRIPTS") {
		t.Errorf("GATEHOUSE_SCRIPTS=maybe: %v", err)
	}
}
