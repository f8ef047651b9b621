package actions_test

import (
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"gatehouse/actions"
	"gatehouse/store"
)

// The script tests run the service on a real store in a temporary
// directory; scriptPub stands for the broker.

const scriptAdminToken = "script-admin-token-0123456789"

type scriptPub struct {
	mu   sync.Mutex
	msgs []string // "topic payload"
	// count, for benchmarks, only counts messages.
	count bool
	n     int
	// settle waits for the service's queued notifications.
	settle func()
}

func (p *scriptPub) Publish(topic string, payload []byte, _ time.Duration) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.count {
		p.n++
		return nil
	}
	p.msgs = append(p.msgs, topic+" "+string(payload))
	return nil
}

func (p *scriptPub) Disconnect(actions.Principal) {}

// take returns what was published since the last take.
func (p *scriptPub) take() []string {
	if p.settle != nil {
		p.settle()
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	m := p.msgs
	p.msgs = nil
	return m
}

// scriptClock is a settable clock.
type scriptClock struct{ ns atomic.Int64 }

func (c *scriptClock) now() time.Time         { return time.Unix(0, c.ns.Load()).UTC() }
func (c *scriptClock) set(t time.Time)        { c.ns.Store(t.UnixNano()) }
func newScriptClock(t time.Time) *scriptClock { c := &scriptClock{}; c.set(t); return c }

type scriptEnv struct {
	path  string
	db    *store.DB
	svc   *actions.Service
	pub   *scriptPub
	admin actions.Principal
}

// newScriptEnv opens a service with scripts enabled on a new store; change
// may alter its configuration.
func newScriptEnv(tb testing.TB, change func(*actions.Config)) *scriptEnv {
	tb.Helper()
	return openScriptEnv(tb, filepath.Join(tb.TempDir(), "g.db"), change)
}

func openScriptEnv(tb testing.TB, path string, change func(*actions.Config)) *scriptEnv {
	tb.Helper()
	db, err := store.Open(path)
	if err != nil {
		tb.Fatalf("store.Open: %v", err)
	}
	tb.Cleanup(func() { db.Close() })
	// The time limit is far off unless a test sets it: what stops a script
	// (steps, memory, a guard) must not depend on how busy the machine is.
	// Tests of the time limit set their own.
	cfg := actions.Config{Store: db, Location: time.UTC, Scripts: true, ScriptLimits: actions.ScriptLimits{Time: time.Minute}}
	if change != nil {
		change(&cfg)
	}
	svc, err := actions.New(cfg)
	if err != nil {
		tb.Fatalf("actions.New: %v", err)
	}
	tb.Cleanup(svc.Close)
	pub := &scriptPub{settle: svc.Settle}
	svc.SetPublisher(pub)
	if err := svc.Open(); err != nil {
		tb.Fatalf("Open: %v", err)
	}
	if _, err := svc.EnsureAdmin(scriptAdminToken); err != nil {
		tb.Fatalf("EnsureAdmin: %v", err)
	}
	admin, err := svc.AuthenticateBearer(scriptAdminToken, "192.0.2.1:1")
	if err != nil {
		tb.Fatalf("admin: %v", err)
	}
	return &scriptEnv{path: path, db: db, svc: svc, pub: pub, admin: admin}
}

func (e *scriptEnv) close(tb testing.TB) {
	tb.Helper()
	e.svc.Close()
	if err := e.db.Close(); err != nil {
		tb.Fatal(err)
	}
}

// put uploads a script as the admin.
func (e *scriptEnv) put(tb testing.TB, name, source string) actions.Script {
	tb.Helper()
	sc, _, err := e.svc.PutScript(e.admin, name, source, actions.ViaREST)
	if err != nil {
		tb.Fatalf("PutScript(%s): %v", name, err)
	}
	return sc
}

// online creates a device and connects it.
func (e *scriptEnv) online(tb testing.TB, id, kind string) actions.Principal {
	tb.Helper()
	if _, _, err := e.svc.CreateDevice(e.admin, actions.NewDevice{ID: id, Kind: kind, Name: id}); err != nil {
		tb.Fatalf("CreateDevice(%s): %v", id, err)
	}
	p := actions.Principal{Kind: actions.PrincipalDevice, ID: id}
	e.svc.Connected(p, "192.0.2.2:1")
	e.pub.take()
	return p
}

func (e *scriptEnv) user(tb testing.TB, name, role string) actions.Principal {
	tb.Helper()
	_, tok, _, err := e.svc.CreateUser(e.admin, name, role)
	if err != nil {
		tb.Fatalf("CreateUser(%s): %v", name, err)
	}
	return actions.Principal{Kind: actions.PrincipalUser, ID: name, Role: role, Token: tok.ID}
}

// send dispatches payload from p and returns what was published.
func (e *scriptEnv) send(p actions.Principal, payload string) []string {
	e.svc.Dispatch(p, actions.ViaMQTT, []byte(payload))
	return e.pub.take()
}

// scriptEvents lists the script events, newest first.
func (e *scriptEnv) scriptEvents(tb testing.TB) []actions.Event {
	tb.Helper()
	evs, _, err := e.svc.Events(e.admin, actions.EventQuery{Type: actions.EventScript, Limit: 1000})
	if err != nil {
		tb.Fatal(err)
	}
	return evs
}

func wantScriptCode(tb testing.TB, err error, code, text string) {
	tb.Helper()
	if actions.ErrorCode(err) != code || !strings.Contains(actions.ErrorMessage(err), text) {
		tb.Fatalf("error %q (%s), want %s containing %q", err, actions.ErrorCode(err), code, text)
	}
}

func wantMsgs(tb testing.TB, got []string, want ...string) {
	tb.Helper()
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		tb.Fatalf("published\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// action makes the source of a script whose action has body.
func action(body string) string {
	return "def action(msg, server):\n    " + strings.ReplaceAll(body, "\n", "\n    ") + "\n"
}

func TestPutScript(t *testing.T) {
	clk := newScriptClock(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	e := newScriptEnv(t, func(c *actions.Config) { c.Now = clk.now })
	member := e.user(t, "bob", actions.RoleMember)

	t.Run("OK", func(t *testing.T) {
		src := action(`return None`)
		sc, created, err := e.svc.PutScript(e.admin, "hello", src, actions.ViaREST)
		if err != nil || !created {
			t.Fatalf("PutScript = %v, %v", created, err)
		}
		if sc.Name != "hello" || sc.Version != 1 || sc.By != "admin" || sc.Size != len(src) || !sc.Updated.Equal(clk.now()) {
			t.Errorf("script = %+v", sc)
		}
		clk.set(clk.now().Add(time.Hour))
		sc2, created, err := e.svc.PutScript(e.admin, "hello", action(`return "toapp/admin hi"`), actions.ViaMQTT)
		if err != nil || created || sc2.Version != 2 || !sc2.Created.Equal(sc.Created) || !sc2.Updated.Equal(clk.now()) {
			t.Fatalf("replace = %+v, %v, %v", sc2, created, err)
		}
		got, err := e.svc.Script(e.admin, "hello")
		if err != nil || got.Source != action(`return "toapp/admin hi"`) || got.Version != 2 {
			t.Errorf("Script = %+v, %v", got, err)
		}
		list, err := e.svc.Scripts(e.admin)
		if err != nil || len(list) != 1 || list[0].Name != "hello" {
			t.Errorf("Scripts = %+v, %v", list, err)
		}
		if err := e.svc.DeleteScript(e.admin, "hello", actions.ViaREST); err != nil {
			t.Fatal(err)
		}
		_, err = e.svc.Script(e.admin, "hello")
		wantScriptCode(t, err, actions.ENotFound, `script "hello" not found`)
		wantScriptCode(t, e.svc.DeleteScript(e.admin, "hello", actions.ViaREST), actions.ENotFound, "not found")

		var details []string
		for _, ev := range e.scriptEvents(t) {
			if ev.User != "admin" {
				t.Errorf("event %+v: want user admin", ev)
			}
			details = append(details, ev.Via+": "+ev.Detail)
		}
		want := "rest: hello deleted|mqtt: hello replaced (version 2)|rest: hello added (version 1)"
		if strings.Join(details, "|") != want {
			t.Errorf("events %q, want %q", details, want)
		}
	})
	t.Run("ErrForbidden", func(t *testing.T) {
		_, _, err := e.svc.PutScript(member, "x", action(`return None`), actions.ViaREST)
		wantScriptCode(t, err, actions.EForbidden, "only admins")
		_, err = e.svc.Scripts(member)
		wantScriptCode(t, err, actions.EForbidden, "only admins")
		_, err = e.svc.Script(member, "x")
		wantScriptCode(t, err, actions.EForbidden, "only admins")
		wantScriptCode(t, e.svc.DeleteScript(member, "x", actions.ViaREST), actions.EForbidden, "only admins")
	})
	for _, tc := range []struct {
		name, script, source, code, text string
	}{
		{"Syntax", "bad", "def action(msg, server):\n    return (\n", actions.EInvalid, "script bad: line 3: "},
		{"Indent", "bad", "def action(msg, server):\nreturn 1\n", actions.EInvalid, "line 2: "},
		{"Undefined", "bad", action("return nothing"), actions.EInvalid, "line 2: undefined: nothing"},
		{"NoOpen", "bad", action(`return open("/etc/passwd").read()`), actions.EInvalid, "line 2: undefined: open"},
		{"NoLoad", "bad", "load(\"x.star\", \"y\")\n" + action("return None"), actions.EInvalid, "line 1: load() is not available"},
		{"NoServerAtTopLevel", "bad", "x = server.now()\n" + action("return None"), actions.EInvalid, "undefined: server"},
		{"NoAction", "bad", "def act(msg, server):\n    return None\n", actions.EInvalid, "must define action(msg, server)"},
		{"WrongArity", "bad", "def action(msg):\n    return None\n", actions.EInvalid, "must define action(msg, server)"},
		{"TopLevelFails", "bad", "fail(\"nope\")\n" + action("return None"), actions.EInvalid, "script bad: line 1: fail: nope"},
		{"TopLevelLoops", "bad", "x = [i for i in range(10000) for j in range(10000)]\n" + action("return None"), actions.EInvalid, "stopped: too many steps"},
		{"AugmentedComputedTarget", "bad", action("f = lambda: [0]\nf()[0] += 1"), actions.EInvalid, "line 3: += needs a simple target"},
		{"Empty", "bad", " \n", actions.EInvalid, "script is empty"},
		{"TooLong", "bad", action("return None") + "#" + strings.Repeat("x", actions.MaxScriptSource), actions.EInvalid, "longer than 16384 bytes"},
		{"NotUTF8", "bad", action("return \"\xff\""), actions.EInvalid, "not UTF-8"},
		{"BuiltinName", "lock", action("return None"), actions.EConflict, `"lock" is a built-in action`},
		{"AddActionName", "add_action", action("return None"), actions.EConflict, "built-in"},
		{"FindStrangerName", "find_stranger", action("return None"), actions.EConflict, "built-in"},
		{"BadName", "Bad-Name", action("return None"), actions.EInvalid, "script name must be"},
		{"LongName", strings.Repeat("x", 33), action("return None"), actions.EInvalid, "script name must be"},
	} {
		t.Run("Err"+tc.name, func(t *testing.T) {
			_, _, err := e.svc.PutScript(e.admin, tc.script, tc.source, actions.ViaREST)
			wantScriptCode(t, err, tc.code, tc.text)
			if _, err := e.svc.Script(e.admin, tc.script); actions.ErrorCode(err) != actions.ENotFound {
				t.Errorf("refused script was stored: %v", err)
			}
		})
	}
}

func TestScriptRun(t *testing.T) {
	e := newScriptEnv(t, nil)
	dev := e.online(t, "dev1", actions.KindLock)
	alice := e.user(t, "alice", actions.RoleMember)
	e.put(t, "echo", action(`s = msg.sender
topic = ("todevice/" if s.kind == "device" else "toapp/") + s.id
return topic + " " + "|".join([s.kind, s.id, s.role, msg.topic, str(msg.words), msg.payload])`))

	wantMsgs(t, e.send(dev, "echo a  b"), `todevice/dev1 device|dev1||toserver|("echo", "a", "b")|echo a  b`)
	wantMsgs(t, e.send(alice, "echo"), `toapp/alice user|alice|member|toserver|("echo",)|echo`)
	// A word that is neither built in nor a script is still unknown.
	wantMsgs(t, e.send(dev, "nothing here"), `todevice/dev1 error unknown action "nothing"`)
	// A pairing login reaches no script.
	wantMsgs(t, e.send(actions.Principal{Kind: actions.PrincipalPair, ID: "new"}, "echo"),
		"todevice/new error a pairing login can only send hand_shake")

	e.put(t, "quiet", action("return None"))
	wantMsgs(t, e.send(dev, "quiet"))
	e.put(t, "late", action(`server.publish("scripts/late", "one")
server.publish("scripts/late", "two")
return "todevice/dev1 done"`))
	wantMsgs(t, e.send(dev, "late"), "scripts/late one", "scripts/late two", "todevice/dev1 done")
	// A run that fails publishes nothing it asked for.
	e.put(t, "half", action(`server.publish("scripts/half", "one")
fail("broken")`))
	wantMsgs(t, e.send(dev, "half"), "todevice/dev1 error script half: line 3: fail: broken")
}

// TestScriptLanguage checks that the rewritten operators still mean what
// Starlark says.
func TestScriptLanguage(t *testing.T) {
	e := newScriptEnv(t, nil)
	dev := e.online(t, "dev1", actions.KindLock)
	e.put(t, "lang", `
TABLE = {"a": 1, "b": [1, 2]}

def total(xs, start = 1 + 1):
    n = start
    for x in xs:
        n += x
    return n

def action(msg, server):
    d = {"k": 1}
    d["k"] += 41
    d |= {"z": 0}
    l = [1, 2]
    alias = l
    l += [3]
    l.extend((4,))
    t = (1,) + (2,)
    t *= 2
    s = "ab" * 2
    s += "!"
    s %= ()
    n = 7
    n *= 6
    n <<= 1
    n %= 50
    parts = [
        str(d["k"]), str(len(alias)), repr(t), s, str(n), "-".join(["x", "y"]),
        "a-b".replace("-", "+"), "{}/{}".format(1, "two"), "%d%%" % 5, str(total([1, 2, 3])),
        str(TABLE["b"][-1]), str({"a": 1} | {"b": 2}), str(sorted(TABLE)),
        str([x * 2 for x in range(3)]), str({k: v for k, v in [("q", 1)]}), getattr("x", "join")(["1", "2"]),
        str(getattr(msg, "nope", None)), str(8 | 1), str(1 << 3), str("abc"[1:]), str([1, 2, 3][::-1]),
    ]
    r = [1]
    r.append(r)
    parts.append(repr(r))
    return "scripts/lang " + " ".join(parts)
`)
	wantMsgs(t, e.send(dev, "lang"),
		`scripts/lang 42 4 (1, 2, 1, 2) abab! 34 x-y a+b 1/two 5% 8 2 {"a": 1, "b": 2} ["a", "b"] [0, 2, 4] {"q": 1} 1x2 None 9 8 bc [3, 2, 1] [1, [...]]`)

	// Errors read as in Starlark.
	for _, tc := range []struct{ body, want string }{
		{`return {"a": 1}["b"]`, `key "b" not in dict`},
		{`return [1][5]`, "list index 5 out of range [-1:0]"},
		{`return [][0]`, "index 0 out of range: empty list"},
		{`return {"a": 1, "a": 2}`, `duplicate key: "a"`},
		{`return "x".nope`, "string has no .nope field or method"},
		{`return "x".join(1)`, "got int, want iterable"},
		{`return 1 + "x"`, "unknown binary op: int + string"},
		{`l = (1,)
l.extend([2])`, "tuple has no .extend field or method"},
	} {
		e.put(t, "err", action(tc.body))
		got := e.send(dev, "err")
		if len(got) != 1 || !strings.Contains(got[0], tc.want) {
			t.Errorf("%s: got %q, want %q", tc.body, got, tc.want)
		}
	}
}

// TestScriptSandbox tries to break out of each limit. Each attempt must be
// stopped or refused by the limit it tries (the time limit is a minute
// away, so none is stopped by the clock however busy the machine), tell the
// sender why, and, when the sandbox stopped it, be an event.
func TestScriptSandbox(t *testing.T) {
	e := newScriptEnv(t, nil)
	dev := e.online(t, "dev1", actions.KindLock)
	e.online(t, "other", actions.KindLock)
	alice := e.user(t, "alice", actions.RoleMember)
	for i, tc := range []struct {
		name   string
		source string
		sender actions.Principal
		want   string
		event  bool
	}{
		{"InfiniteLoop", action("while True:\n    pass"), dev, "stopped: too many steps", true},
		{"Recursion", "def f(n):\n    return f(n + 1)\n" + action("return f(0)"), dev, "line 2: function f called recursively", false},
		{"HugeString", action(`return "x" * 1000000000`), dev, "line 2: string of 1000000000 bytes is over the limit of 16384", true},
		{"HugeStringReversed", action(`return 1000000000 * "x"`), dev, "string of 1000000000 bytes is over the limit", true},
		{"DoublingString", action("s = \"x\"\nfor i in range(64):\n    s += s"), dev, "string of 32768 bytes is over the limit", true},
		{"DoublingList", action("l = [1]\nfor i in range(64):\n    l += l"), dev, "list of 16384 elements is over the limit of 10000", true},
		{"DoublingExtend", action("l = [1]\nfor i in range(64):\n    l.extend(l)"), dev, "list of 16384 elements", true},
		{"GrowingDict", action("d = dict(zip(range(10000), range(10000)))\nd = d | {-1: 0}"), dev, "dict of 10001 elements is over the limit of 10000", true},
		{"Join", action(`return ",".join(["x" * 10000] * 10000)`), dev, "string of", true},
		{"JoinMethodValue", action("j = \",\".join\nreturn j([\"x\" * 10000] * 10000)"), dev, "string of", true},
		{"JoinGetattr", action(`return getattr(",", "join")(["x" * 10000] * 10000)`), dev, "string of", true},
		{"Replace", action(`return ("x" * 10000).replace("x", "xxxxxxxxxx")`), dev, "string of 100000 bytes", true},
		{"Format", action(`return ("{0}" * 5000).format("x" * 1000)`), dev, "text over the limit", true},
		{"Percent", action("a = [\"x\" * 1000] * 1000\nreturn \"%s\" % (a,)"), dev, "text over the limit", true},
		{"StrOfShared", action("a = [\"x\" * 100] * 1000\nb = [a] * 1000\nreturn str(b)"), dev, "text over the limit", true},
		{"StrOfNested", action("l = []\nfor i in range(30):\n    l = [l, l]\nreturn str(l)"), dev, "text over the limit", true},
		{"Print", action(`print("x" * 10000, "y" * 10000)`), dev, "text over the limit", true},
		{"Fail", action(`fail(["x" * 1000] * 1000)`), dev, "text over the limit", true},
		{"PrintSep", action(`print(sep = "x" * 16000, *(["a"] * 10000))`), dev, "text over the limit", true},
		{"IntSquaring", action("x = 3\nfor i in range(64):\n    x = x * x"), dev, "integer of", true},
		{"IntShift", action("x = 1\nfor i in range(64):\n    x = x << 500"), dev, "integer of", true},
		{"Range", action(`return len(list(range(1000000000)))`), dev, "range of 1000000000 elements", true},
		{"DictKey", action("t = (\"x\",) * 10000\nu = (t,) * 10000\nreturn {}[u]"), dev, "dict key over the limit", true},
		{"DictLiteralKey", action("t = (\"x\",) * 10000\nu = (t,) * 10000\nreturn {u: 1, u: 2}"), dev, "dict key over the limit", true},
		{"Memory", action("big = list(range(10000))\nkeep = []\nwhile True:\n    keep.append(list(big))"), dev, "stopped: memory limit", true},
		{"PublishOtherDevice", action(`server.publish("todevice/other", "unlock 1 9999999999")`), dev, `publish: may not publish to "todevice/other"`, true},
		{"PublishApp", action(`server.publish("toapp/admin", "x")`), dev, `may not publish to "toapp/admin"`, true},
		{"PublishOtherUser", action(`server.publish("toapp/admin", "x")`), alice, `may not publish to "toapp/admin"`, true},
		{"PublishToServer", action(`server.publish("toserver", "lock all")`), alice, `may not publish to "toserver"`, true},
		{"PublishWildcard", action(`server.publish("scripts/#", "x")`), dev, `may not publish to "scripts/#"`, true},
		{"PublishMany", action("for i in range(11):\n    server.publish(\"scripts/x\", str(i))"), dev, "more than 10 messages", true},
		{"PublishBig", action(`server.publish("scripts/x", "x" * 5000)`), dev, "payload of 5000 bytes is over the limit of 4096", true},
		{"ReplyOther", action(`return "todevice/other unlock"`), dev, `may not reply on "todevice/other"`, true},
		{"ReplyBig", action(`return "todevice/dev1 " + "x" * 5000`), dev, "reply of 5014 bytes", true},
		{"ReplyNotString", action(`return 42`), dev, "action returned a int, want a string or None", false},
		{"NotifyFromUser", action(`server.notify("hello")`), alice, "notify: only a script run by a device may notify", true},
		{"NotifyTwoLines", action(`server.notify("a\nb")`), dev, "notify: text must be one line", false},
		{"CommandFromDevice", action(`server.command("dev1", "unlock")`), dev, "command: only people can send commands", false},
		{"ServerAfterwards", action("def later():\n    return server.now()\nreturn None"), dev, "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			name := fmt.Sprintf("t%d", i)
			e.put(t, name, tc.source)
			got := e.send(tc.sender, name)
			topic := "todevice/" + tc.sender.ID
			if tc.sender.Kind == actions.PrincipalUser {
				topic = "toapp/" + tc.sender.ID
			}
			if tc.want == "" {
				wantMsgs(t, got)
				return
			}
			if len(got) != 1 || !strings.HasPrefix(got[0], topic+" error script "+name+": ") || !strings.Contains(got[0], tc.want) {
				t.Fatalf("published %q, want one error on %s containing %q", got, topic, tc.want)
			}
			found := false
			for _, ev := range e.scriptEvents(t) {
				if strings.HasPrefix(ev.Detail, "script "+name+": ") {
					found = true
					if tc.sender.Kind == actions.PrincipalDevice && ev.Device != tc.sender.ID ||
						tc.sender.Kind == actions.PrincipalUser && ev.User != tc.sender.ID {
						t.Errorf("event %+v does not name the sender", ev)
					}
				}
			}
			if found != tc.event {
				t.Errorf("script event recorded: %v, want %v", found, tc.event)
			}
		})
	}
	// Nothing reached another device.
	for _, ev := range e.scriptEvents(t) {
		if ev.Device == "other" {
			t.Errorf("event about other: %+v", ev)
		}
	}
}

// TestScriptTimeLimit stops a script that spends its time in built-ins,
// where steps are not counted.
func TestScriptTimeLimit(t *testing.T) {
	e := newScriptEnv(t, func(c *actions.Config) { c.ScriptLimits.Time = 300 * time.Millisecond })
	dev := e.online(t, "dev1", actions.KindLock)
	e.put(t, "slow", action(`a = (("x",) * 1000,) * 1000
b = (("x",) * 1000,) * 1000
for i in range(10000):
    a == b`))
	start := time.Now()
	got := e.send(dev, "slow")
	// Not before its time; and long before the loop's own end (minutes),
	// with room for a busy machine.
	if d := time.Since(start); d < 300*time.Millisecond || d > 20*time.Second {
		t.Errorf("stopped after %s, want about 300ms", d)
	}
	if len(got) != 1 || !strings.HasPrefix(got[0], "todevice/dev1 error script slow: ") || !strings.HasSuffix(got[0], "stopped: time limit") {
		t.Errorf("published %q, want the time limit error", got)
	}
}

// TestScriptStuck: a run stuck in a built-in that never looks at the
// cancel holds up only its sender; past its time it can do nothing more,
// other devices go on, and while two runs are stuck no script starts.
func TestScriptStuck(t *testing.T) {
	e := newScriptEnv(t, func(c *actions.Config) { c.ScriptLimits.Time = 200 * time.Millisecond })
	release := make(chan struct{})
	actions.AddScriptBuiltin(e.svc, "block", func() { <-release })
	alice := e.user(t, "alice", actions.RoleAdmin)
	door := e.online(t, "door", actions.KindLock)
	e.put(t, "stuck", action(`block()
server.command("door", "unlock")
server.publish("scripts/stuck", "after")`))

	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			e.svc.Dispatch(alice, actions.ViaMQTT, []byte("stuck"))
		}()
	}
	deadline := time.Now().Add(30 * time.Second)
	for actions.ScriptsStuck(e.svc) != 2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := actions.ScriptsStuck(e.svc); n != 2 {
		t.Fatalf("stuck runs = %d, want 2", n)
	}
	// Built-in actions go on; scripts wait for the stuck runs to end.
	if got := e.send(door, "hand_shake lock"); len(got) != 1 || !strings.HasPrefix(got[0], "todevice/door welcome ") {
		t.Errorf("hand_shake while scripts are stuck: %q", got)
	}
	wantMsgs(t, e.send(alice, "stuck"), "toapp/alice error script stuck: scripts are unavailable while earlier runs are stuck")

	close(release)
	wg.Wait()
	if n := actions.ScriptsStuck(e.svc); n != 0 {
		t.Fatalf("stuck runs after release = %d", n)
	}
	// The stuck runs did nothing when they woke up but report.
	got := e.pub.take()
	if len(got) != 2 {
		t.Fatalf("published %q, want two errors", got)
	}
	for _, m := range got {
		if !strings.HasPrefix(m, "toapp/alice error script stuck: ") || !strings.HasSuffix(m, "stopped: time limit") {
			t.Errorf("published %q, want the time limit error", m)
		}
	}
	evs, _, _ := e.svc.Events(e.admin, actions.EventQuery{Type: actions.EventCommand, Limit: 10})
	if len(evs) != 0 {
		t.Errorf("a stuck run sent a command: %+v", evs)
	}
	// Scripts run again.
	e.put(t, "ping", action(`return "todevice/door pong"`))
	wantMsgs(t, e.send(door, "ping"), "todevice/door pong")
}

// TestScriptResponsive: while one device's script is under way, another
// device's messages are answered: runs hold no lock that others wait for.
// The busy run waits, inside a built-in, until the other device has had
// all its answers, so the test does not depend on the machine's speed: if
// runs were serialised it would never end (the watchdog fails it).
func TestScriptResponsive(t *testing.T) {
	e := newScriptEnv(t, nil)
	entered, release := make(chan struct{}), make(chan struct{})
	actions.AddScriptBuiltin(e.svc, "block", func() {
		close(entered)
		<-release
	})
	busy := e.online(t, "busy", actions.KindLock)
	calm := e.online(t, "calm", actions.KindLock)
	e.put(t, "spin", action("block()\nwhile True:\n    pass"))
	e.put(t, "ping", action(`return "todevice/" + msg.sender.id + " pong"`))
	done := make(chan struct{})
	go func() {
		defer close(done)
		e.svc.Dispatch(busy, actions.ViaMQTT, []byte("spin"))
	}()
	<-entered
	pinged := make(chan struct{})
	go func() {
		defer close(pinged)
		for range 20 {
			e.svc.Dispatch(calm, actions.ViaMQTT, []byte("ping"))
		}
	}()
	select {
	case <-pinged:
	case <-time.After(time.Minute):
		close(release)
		t.Fatal("another device's script held up the pings")
	}
	close(release)
	<-done
	var pongs, stops int
	for _, m := range e.pub.take() {
		switch {
		case m == "todevice/calm pong":
			pongs++
		case strings.HasPrefix(m, "todevice/busy error script spin: ") && strings.HasSuffix(m, "stopped: too many steps"):
			stops++
		default:
			t.Errorf("unexpected %q", m)
		}
	}
	if pongs != 20 || stops != 1 {
		t.Errorf("pongs %d, stops %d", pongs, stops)
	}
}

func TestScriptCommand(t *testing.T) {
	tuesday10 := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	clk := newScriptClock(tuesday10)
	e := newScriptEnv(t, func(c *actions.Config) { c.Now = clk.now })
	e.online(t, "door", actions.KindLock)
	e.online(t, "back", actions.KindLock)
	e.online(t, "lamp", actions.KindLight)
	if _, _, err := e.svc.CreateDevice(e.admin, actions.NewDevice{ID: "shed", Kind: actions.KindLock}); err != nil {
		t.Fatal(err)
	}
	carol := e.user(t, "carol", actions.RoleGuest)
	if _, err := e.svc.CreateGrant(e.admin, actions.Grant{User: "carol", Device: "door", Weekdays: []string{"tue"}, Hours: "09:00-12:00"}); err != nil {
		t.Fatal(err)
	}
	e.put(t, "open", action(`id = server.command(msg.words[1], "unlock")
return "toapp/%s sent %s" % (msg.sender.id, id)`))

	t.Run("GuestInsideWindow", func(t *testing.T) {
		got := e.send(carol, "open door")
		if len(got) != 2 || !strings.HasPrefix(got[0], "todevice/door unlock ") || !strings.HasPrefix(got[1], "toapp/carol sent ") {
			t.Fatalf("published %q", got)
		}
		id := strings.Fields(got[1])[2]
		c, err := e.svc.Command(e.admin, id)
		if err != nil || c.By != "carol" || c.Via != actions.ViaScript || c.Verb != "unlock" || c.Grant == "" {
			t.Errorf("command = %+v, %v", c, err)
		}
	})
	t.Run("GuestOutsideWindow", func(t *testing.T) {
		clk.set(tuesday10.Add(3 * time.Hour))
		defer clk.set(tuesday10)
		wantMsgs(t, e.send(carol, "open door"),
			`toapp/carol error script open: line 2: command: your grant for device "door" does not allow it now`)
	})
	t.Run("GuestOtherDevice", func(t *testing.T) {
		wantMsgs(t, e.send(carol, "open back"), `toapp/carol error script open: line 2: command: device "back" not found`)
	})
	t.Run("GuestReadsOnlyHers", func(t *testing.T) {
		e.put(t, "look", action(`return "toapp/carol %s %s %s" % (server.devices(), server.device("door").state, server.device("back"))`))
		wantMsgs(t, e.send(carol, "look"), `toapp/carol ["door"] unknown None`)
	})
	t.Run("Lockdown", func(t *testing.T) {
		e.put(t, "lockdown", action(`sent = []
for id in server.devices():
    d = server.device(id)
    if d.kind == "lock" and d.online:
        server.command(id, "lock")
        sent.append(id)
return "toapp/%s lockdown %s" % (msg.sender.id, " ".join(sent))`))
		got := e.send(e.admin, "lockdown")
		wantCmds := []string{"todevice/back lock ", "todevice/door lock ", "toapp/admin lockdown back door"}
		if len(got) != len(wantCmds) {
			t.Fatalf("published %q", got)
		}
		for i, w := range wantCmds {
			if !strings.HasPrefix(got[i], w) {
				t.Errorf("published %q, want %q…", got[i], w)
			}
		}
		// carol may lock only the door; her lockdown says so.
		got = e.send(carol, "lockdown")
		if len(got) != 2 || !strings.HasPrefix(got[0], "todevice/door lock ") || got[1] != "toapp/carol lockdown door" {
			t.Errorf("carol's lockdown published %q", got)
		}
	})
}

func TestScriptNotify(t *testing.T) {
	e := newScriptEnv(t, nil)
	dev := e.online(t, "door", actions.KindLock)
	e.online(t, "back", actions.KindLock)
	e.user(t, "alice", actions.RoleMember)
	e.user(t, "bob", actions.RoleMember)
	if _, err := e.svc.CreateGrant(e.admin, actions.Grant{User: "alice", Device: "door"}); err != nil {
		t.Fatal(err)
	}
	e.put(t, "battery", action(`if int(msg.words[1]) < 20:
    server.notify("battery low: %s%%" % msg.words[1])`))
	wantMsgs(t, e.send(dev, "battery 50"))
	// Every person who may read the door: the admin and alice, not bob.
	wantMsgs(t, e.send(dev, "battery 10"), "toapp/admin script battery battery low: 10%", "toapp/alice script battery battery low: 10%")
}

func TestScriptRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "g.db")
	e := openScriptEnv(t, path, nil)
	e.put(t, "ping", action(`return "todevice/" + msg.sender.id + " pong"`))
	e.put(t, "ping", action(`return "todevice/" + msg.sender.id + " pong 2"`))
	e.close(t)

	e = openScriptEnv(t, path, nil)
	dev := e.online(t, "dev1", actions.KindLock)
	wantMsgs(t, e.send(dev, "ping"), "todevice/dev1 pong 2")
	if sc, err := e.svc.Script(e.admin, "ping"); err != nil || sc.Version != 2 {
		t.Errorf("after restart: %+v, %v", sc, err)
	}
	e.close(t)

	// Disabled: stored scripts stay, do not run, and cannot be uploaded;
	// they can still be read and deleted.
	e = openScriptEnv(t, path, func(c *actions.Config) { c.Scripts = false })
	wantMsgs(t, e.send(dev, "ping"), "todevice/dev1 error scripts are disabled (start the server with --scripts)")
	_, _, err := e.svc.PutScript(e.admin, "ping", action("return None"), actions.ViaREST)
	wantScriptCode(t, err, actions.EConflict, "scripts are disabled")
	wantMsgs(t, e.send(e.admin, "add_action x "+action("return None")), "toapp/admin error scripts are disabled (start the server with --scripts)")
	if list, err := e.svc.Scripts(e.admin); err != nil || len(list) != 1 || list[0].Version != 2 {
		t.Errorf("Scripts while disabled = %+v, %v", list, err)
	}
	if err := e.svc.DeleteScript(e.admin, "ping", actions.ViaREST); err != nil {
		t.Fatal(err)
	}
	wantMsgs(t, e.send(dev, "ping"), `todevice/dev1 error unknown action "ping"`)
}

func TestAddAction(t *testing.T) {
	e := newScriptEnv(t, nil)
	dev := e.online(t, "dev1", actions.KindLock)
	member := e.user(t, "bob", actions.RoleMember)
	src := "def action(msg, server):\n    return \"todevice/\" + msg.sender.id + \" pong\"\n"

	wantMsgs(t, e.send(e.admin, "add_action ping "+src), "toapp/admin action_added ping")
	wantMsgs(t, e.send(dev, "ping"), "todevice/dev1 pong")
	if sc, err := e.svc.Script(e.admin, "ping"); err != nil || sc.Source != src {
		t.Errorf("stored %q, %v; want the payload's source %q", sc.Source, err, src)
	}
	// The name may end with a newline too.
	wantMsgs(t, e.send(e.admin, "add_action ping\n"+src), "toapp/admin action_added ping")

	wantMsgs(t, e.send(e.admin, "add_action bad def action(msg, server):\n  return ("),
		"toapp/admin error script bad: line 2: got newline, want primary expression")
	wantMsgs(t, e.send(e.admin, "add_action"), "toapp/admin error usage: add_action <name> <source…>")
	wantMsgs(t, e.send(e.admin, "add_action lock "+src), `toapp/admin error "lock" is a built-in action`)
	wantMsgs(t, e.send(member, "add_action x "+src), "toapp/bob error add_action is for admins")
	wantMsgs(t, e.send(dev, "add_action x "+src), "todevice/dev1 error add_action is for admins")
	for _, ev := range e.scriptEvents(t) {
		if ev.Via != actions.ViaMQTT || ev.User != "admin" {
			t.Errorf("event %+v", ev)
		}
	}
}

// BenchmarkScriptDispatch measures one trivial script run from a device's
// payload to its reply, against BenchmarkBuiltinDispatch's unknown word.
func BenchmarkScriptDispatch(b *testing.B) {
	e := newScriptEnv(b, nil)
	dev := e.online(b, "dev1", actions.KindLock)
	e.put(b, "ping", action(`return "todevice/" + msg.sender.id + " pong"`))
	payload := []byte("ping")
	e.svc.Dispatch(dev, actions.ViaMQTT, payload)
	if got := e.pub.take(); len(got) != 1 || got[0] != "todevice/dev1 pong" {
		b.Fatalf("published %q", got)
	}
	e.pub.count = true
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		if err := e.svc.Dispatch(dev, actions.ViaMQTT, payload); err != nil {
			b.Fatal(err)
		}
		n++
	}
	if e.pub.n != n {
		b.Fatalf("%d replies for %d runs", e.pub.n, n)
	}
}

// BenchmarkBuiltinDispatch is the cheapest built-in path, an unknown word,
// for comparison.
func BenchmarkBuiltinDispatch(b *testing.B) {
	e := newScriptEnv(b, nil)
	dev := e.online(b, "dev1", actions.KindLock)
	payload := []byte("nothing")
	e.pub.count = true
	b.ReportAllocs()
	for b.Loop() {
		e.svc.Dispatch(dev, actions.ViaMQTT, payload)
	}
}
