package actions

import (
	"errors"
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"go.starlark.net/resolve"
	"go.starlark.net/starlark"
	"go.starlark.net/syntax"
)

// Script is an action added at run time (DESIGN §8): Starlark source that
// defines action(msg, server), stored under the payload word that runs it.
type Script struct {
	Name string `json:"name"`
	// Source is served on its own, as text, never inside the metadata.
	Source string `json:"-"`
	// Version counts the uploads under this name, from 1.
	Version int       `json:"version"`
	Size    int       `json:"size"`
	Created time.Time `json:"created"`
	Updated time.Time `json:"updated"`
	// By is the user who uploaded this version.
	By string `json:"by"`
}

// Fixed limits of scripts; ScriptLimits holds the ones a server may tune.
const (
	// MaxScriptSource is the longest source accepted, in bytes.
	MaxScriptSource = 16 << 10
	// maxScriptOutput bounds a reply, a published payload and a
	// notification text.
	maxScriptOutput = 4 << 10
	// maxScriptPublishes bounds publish() and notify() calls in one run.
	maxScriptPublishes = 10
	// maxScriptCommands bounds command() calls in one run.
	maxScriptCommands = 100
	// maxScriptsRunning bounds the runs under way at once, stuck ones
	// included (see scriptSlots); one more waits for a slot at most the
	// time limit.
	maxScriptsRunning = 16
	// maxScriptsStuck is how many runs may be stuck in a built-in past
	// their time limit; while they are, no script starts.
	maxScriptsStuck = 2
	// scriptGrace is how long a cancelled run gets to stop before it
	// counts as stuck.
	scriptGrace = 100 * time.Millisecond
	// scriptCheckEvery is how many steps pass between memory checks.
	scriptCheckEvery = 100
	// scriptEventEvery spaces out the events of one script being stopped.
	scriptEventEvery = time.Second
)

// ScriptLimits bound every run of a script, and the top-level code run when
// it is compiled. Zero fields take the defaults.
type ScriptLimits struct {
	// Steps is the number of Starlark execution steps (default 100 000).
	Steps uint64
	// Time is the wall time (default 1 s).
	Time time.Duration
	// Memory is how many bytes the process may allocate while the run is
	// under way (default 64 MiB). It is read from the Go runtime's
	// counters, so it also counts what other goroutines allocate meanwhile.
	Memory uint64
}

func (l ScriptLimits) withDefaults() ScriptLimits {
	if l.Steps == 0 {
		l.Steps = 100_000
	}
	if l.Time <= 0 {
		l.Time = time.Second
	}
	if l.Memory == 0 {
		l.Memory = 64 << 20
	}
	return l
}

// scriptTable holds the scripts in memory, compiled, next to the copy in
// the store, and what runs them.
type scriptTable struct {
	enabled bool
	limits  ScriptLimits
	// predeclared holds the sandbox's guards and replaced built-ins, and
	// server the object every run gets; both are frozen and shared.
	predeclared starlark.StringDict
	server      starlark.Value

	// write serialises changes, so the table follows the store's order.
	write  sync.Mutex
	mu     sync.RWMutex
	byName map[string]*compiledScript
	// lastStop is when each script last had a stop event.
	lastStop map[string]time.Time

	// running holds one token per run under way, stuck runs included, so
	// its size bounds the CPUs runs that cannot be interrupted can take.
	running chan struct{}
	stuck   atomic.Int32 // runs stuck past their time limit and counted
	// stuckRuns are the runs stuck and counted, so that deleting or
	// replacing their script can stop counting them (writeOff).
	runMu     sync.Mutex
	stuckRuns map[*scriptRun]struct{}
}

// scriptSlots is how many runs may be under way at once, stuck ones
// included: half the CPUs Go uses, at least maxScriptsStuck and at most
// maxScriptsRunning. A run stuck in a built-in cannot be stopped (Go has no
// way to end a goroutine), so this is the most CPUs such runs can burn,
// however many are triggered at once.
func scriptSlots() int {
	return min(maxScriptsRunning, max(maxScriptsStuck, runtime.GOMAXPROCS(0)/2))
}

// compiledScript is a stored script and, when scripts are enabled and it
// compiles, its action function.
type compiledScript struct {
	Script
	action *starlark.Function
	broken error // why action is nil while scripts are enabled
}

func (s *Service) newScriptTable(enabled bool, limits ScriptLimits) *scriptTable {
	t := &scriptTable{
		enabled:     enabled,
		limits:      limits.withDefaults(),
		predeclared: sandboxPredeclared(),
		byName:      map[string]*compiledScript{},
		lastStop:    map[string]time.Time{},
		running:     make(chan struct{}, scriptSlots()),
		stuckRuns:   map[*scriptRun]struct{}{},
	}
	t.server = s.scriptServer()
	t.server.Freeze()
	t.predeclared.Freeze()
	return t
}

func (t *scriptTable) get(name string) *compiledScript {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.byName[name]
}

func (t *scriptTable) set(c *compiledScript) {
	t.mu.Lock()
	old := t.byName[c.Name]
	t.byName[c.Name] = c
	t.mu.Unlock()
	if old != nil {
		t.writeOffScript(old)
	}
}

func (t *scriptTable) remove(name string) {
	t.mu.Lock()
	old := t.byName[name]
	delete(t.byName, name)
	delete(t.lastStop, name)
	t.mu.Unlock()
	if old != nil {
		t.writeOffScript(old)
	}
}

// writeOffScript stops counting the stuck runs of c, a script version an
// admin deleted or replaced: they give back their slots and no longer
// keep new runs from starting. They still run until their built-in
// returns (nothing can end them sooner), and then do nothing.
func (t *scriptTable) writeOffScript(c *compiledScript) {
	t.runMu.Lock()
	var runs []*scriptRun
	for rc := range t.stuckRuns {
		if rc.script == c {
			runs = append(runs, rc)
		}
	}
	t.runMu.Unlock()
	for _, rc := range runs {
		t.writeOff(rc)
	}
}

// writeOff stops counting the stuck run rc, once.
func (t *scriptTable) writeOff(rc *scriptRun) {
	if rc.state.CompareAndSwap(runStuck, runWrittenOff) {
		t.uncount(rc)
	}
}

// uncount gives back the slot and the stuck count of a stuck run.
func (t *scriptTable) uncount(rc *scriptRun) {
	t.runMu.Lock()
	delete(t.stuckRuns, rc)
	t.runMu.Unlock()
	t.stuck.Add(-1)
	<-t.running
}

func errScriptsDisabled() error {
	return Errorf(EConflict, "scripts are disabled (start the server with --scripts)")
}

// checkScriptName: a script is named like an action word, and never like a
// built-in action.
func (s *Service) checkScriptName(name string) error {
	if name == "" || len(name) > maxWordLen {
		return Errorf(EInvalid, "script name must be 1 to %d characters a-z, 0-9 or _", maxWordLen)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_') {
			return Errorf(EInvalid, "script name must be 1 to %d characters a-z, 0-9 or _", maxWordLen)
		}
	}
	if _, ok := s.registry[name]; ok || name == "find_stranger" || name == "add_action" {
		return Errorf(EConflict, "%q is a built-in action", name)
	}
	return nil
}

// PutScript compiles source and stores it as script name, replacing any
// earlier version; created tells whether the name was new. Only admins may,
// and only while scripts are enabled.
func (s *Service) PutScript(p Principal, name, source, via string) (sc Script, created bool, err error) {
	if !p.IsAdmin() {
		return Script{}, false, Errorf(EForbidden, "only admins manage scripts")
	}
	t := s.scripts
	if !t.enabled {
		return Script{}, false, errScriptsDisabled()
	}
	if err := s.checkScriptName(name); err != nil {
		return Script{}, false, err
	}
	switch {
	case len(source) > MaxScriptSource:
		return Script{}, false, Errorf(EInvalid, "script longer than %d bytes", MaxScriptSource)
	case !utf8.ValidString(source):
		return Script{}, false, Errorf(EInvalid, "script is not UTF-8 text")
	case strings.TrimSpace(source) == "":
		return Script{}, false, Errorf(EInvalid, "script is empty")
	}
	fn, err := s.compileScript(name, source)
	if err != nil {
		return Script{}, false, err
	}
	t.write.Lock()
	defer t.write.Unlock()
	now := s.now()
	err = s.update(func(tx Tx) error {
		sc = Script{Name: name, Source: source, Version: 1, Created: now, Updated: now, By: p.ID}
		created = true
		old, err := tx.Script(name)
		switch {
		case err == nil:
			sc.Version, sc.Created, created = old.Version+1, old.Created, false
		case ErrorCode(err) != ENotFound:
			return err
		}
		if err := tx.PutScript(sc); err != nil {
			return err
		}
		verb := "added"
		if !created {
			verb = "replaced"
		}
		return tx.AppendEvent(&Event{Time: now, Type: EventScript, User: p.ID, Via: via,
			Detail: fmt.Sprintf("%s %s (version %d)", name, verb, sc.Version)})
	})
	if err != nil {
		return Script{}, false, err
	}
	sc.Size = len(sc.Source)
	t.set(&compiledScript{Script: sc, action: fn})
	return sc, created, nil
}

// Scripts lists every script, ordered by name, for an admin.
func (s *Service) Scripts(p Principal) ([]Script, error) {
	if !p.IsAdmin() {
		return nil, Errorf(EForbidden, "only admins manage scripts")
	}
	var list []Script
	err := s.store.View(func(tx Tx) (err error) {
		list, err = tx.Scripts()
		return err
	})
	for i := range list {
		list[i].Size = len(list[i].Source)
	}
	return list, err
}

// Script returns one script, with its source, for an admin.
func (s *Service) Script(p Principal, name string) (Script, error) {
	if !p.IsAdmin() {
		return Script{}, Errorf(EForbidden, "only admins manage scripts")
	}
	var sc Script
	err := s.store.View(func(tx Tx) (err error) {
		sc, err = tx.Script(name)
		return err
	})
	sc.Size = len(sc.Source)
	return sc, err
}

// DeleteScript removes a script; its word is unknown from then on. It
// works while scripts are disabled too, so they can be cleaned up.
func (s *Service) DeleteScript(p Principal, name, via string) error {
	if !p.IsAdmin() {
		return Errorf(EForbidden, "only admins manage scripts")
	}
	t := s.scripts
	t.write.Lock()
	defer t.write.Unlock()
	now := s.now()
	err := s.update(func(tx Tx) error {
		if err := tx.DeleteScript(name); err != nil {
			return err
		}
		return tx.AppendEvent(&Event{Time: now, Type: EventScript, User: p.ID, Via: via, Detail: name + " deleted"})
	})
	if err != nil {
		return err
	}
	t.remove(name)
	return nil
}

// loadScripts reads the stored scripts at Open and, when scripts are
// enabled, compiles them. One that no longer compiles is logged and kept
// out of service; it is still listed, so it can be fixed or deleted.
func (s *Service) loadScripts() error {
	var list []Script
	if err := s.store.View(func(tx Tx) (err error) { list, err = tx.Scripts(); return err }); err != nil {
		return fmt.Errorf("load scripts: %w", err)
	}
	t := s.scripts
	for _, sc := range list {
		c := &compiledScript{Script: sc}
		c.Size = len(sc.Source)
		if t.enabled {
			if c.action, c.broken = s.compileScript(sc.Name, sc.Source); c.broken != nil {
				s.log.Error("stored script does not compile; it will not run", "script", sc.Name, "error", c.broken)
			}
		}
		t.set(c)
	}
	return nil
}

// addAction: `add_action <name> <source…>` from an admin. The source is the
// rest of the payload as sent, newlines included (at most 4 KiB over MQTT;
// larger scripts go through the API).
func (s *Service) addAction(m Message) (string, error) {
	if !m.Sender.IsAdmin() {
		return "", Errorf(EForbidden, "add_action is for admins")
	}
	rest := strings.TrimLeft(string(m.Payload[len(m.Word):]), " ")
	i := strings.IndexAny(rest, " \t\r\n")
	if i <= 0 {
		return "", Errorf(EInvalid, "usage: add_action <name> <source…>")
	}
	name, source := rest[:i], strings.TrimLeft(rest[i+1:], " \t")
	if _, _, err := s.PutScript(m.Sender, name, source, m.Via); err != nil {
		return "", err
	}
	return AppTopic(m.Sender.ID) + " action_added " + name, nil
}

// scriptAction returns the action that runs script word, if there is one.
func (s *Service) scriptAction(word string) (Action, bool) {
	c := s.scripts.get(word)
	if c == nil {
		return nil, false
	}
	return func(m Message) (string, error) { return s.runScript(c, m) }, true
}

// compileScript parses source, puts it in the sandbox (see sandbox), runs
// its top level under the limits and returns its action function.
func (s *Service) compileScript(name, source string) (fn *starlark.Function, err error) {
	defer func() {
		if r := recover(); r != nil { // the compiler panics on what it deems unreachable
			s.log.Error("script compiler panicked", "script", name, "panic", r)
			fn, err = nil, Errorf(EInvalid, "script %s: does not compile", name)
		}
	}()
	file := name + ".star"
	opts := &syntax.FileOptions{Set: true, While: true}
	f, err := opts.Parse(file, source, 0)
	if err != nil {
		return nil, compileError(name, err)
	}
	for _, st := range f.Stmts {
		if l, ok := st.(*syntax.LoadStmt); ok {
			return nil, Errorf(EInvalid, "script %s: line %d: load() is not available in scripts", name, l.Load.Line)
		}
	}
	if err := sandbox(f); err != nil {
		return nil, compileError(name, err)
	}
	prog, err := starlark.FileProgram(f, s.scripts.predeclared.Has)
	if err != nil {
		return nil, compileError(name, err)
	}
	rc := &scriptRun{svc: s, name: name, file: file}
	var globals starlark.StringDict
	_, err = s.execScript(rc, func(th *starlark.Thread) (starlark.Value, error) {
		g, err := prog.Init(th, s.scripts.predeclared)
		globals = g
		return starlark.None, err
	})
	if err != nil {
		return nil, rc.failure(err)
	}
	globals.Freeze()
	fn, ok := globals["action"].(*starlark.Function)
	if !ok || fn.NumParams() != 2 || fn.HasVarargs() || fn.HasKwargs() {
		return nil, Errorf(EInvalid, "script %s: must define action(msg, server)", name)
	}
	return fn, nil
}

// compileError turns a syntax or resolver error into a client error that
// names the line.
func compileError(name string, err error) error {
	var (
		se   syntax.Error
		list resolve.ErrorList
		e    *Error
	)
	switch {
	case errors.As(err, &se):
		return Errorf(EInvalid, "script %s: line %d: %s", name, se.Pos.Line, se.Msg)
	case errors.As(err, &list) && len(list) > 0:
		return Errorf(EInvalid, "script %s: line %d: %s", name, list[0].Pos.Line, list[0].Msg)
	case errors.As(err, &e):
		return Errorf(EInvalid, "script %s: %s", name, e.Message)
	}
	return Errorf(EInvalid, "script %s: %s", name, clipText(err.Error(), 200))
}

// scriptRun is one run of a script: who triggered it, and what it may
// still do. Once the run has ended (returned, or stuck past its time) the
// server functions do nothing more.
type scriptRun struct {
	svc    *Service
	name   string
	file   string
	sender Principal // zero for the top level, run at compile time
	via    string
	// script is the version being run, nil for the top level run at
	// compile time.
	script *compiledScript

	thread *starlark.Thread
	stop   atomic.Pointer[string] // why the run was stopped
	// state: runRunning, runReturned, runStuck or runWrittenOff.
	state atomic.Int32

	mu       sync.Mutex
	ended    bool
	out      []scriptOutput // sent when the run ends well
	commands int
}

// scriptOutput is a message a script asked for, sent after the run.
type scriptOutput struct {
	topic, text string
	notify      bool
}

// Run states. A run holds its slot while running or stuck; a stuck run
// is written off (uncounted) when its script is deleted or replaced.
const (
	runRunning int32 = iota
	runReturned
	runStuck
	runWrittenOff
)

// runKey is the thread-local key of the *scriptRun.
const runKey = "gatehouse.run"

// halt stops the run's Starlark code at its next step.
func (rc *scriptRun) halt(reason string) {
	rc.stop.CompareAndSwap(nil, &reason)
	rc.thread.Cancel(reason)
}

// begin returns an error once the run has ended; otherwise the caller
// holds rc.mu until it calls rc.mu.Unlock.
func (rc *scriptRun) begin() error {
	rc.mu.Lock()
	if rc.ended {
		rc.mu.Unlock()
		return errors.New("the run has ended")
	}
	return nil
}

func (rc *scriptRun) end() {
	rc.mu.Lock()
	rc.ended = true
	rc.mu.Unlock()
}

func (rc *scriptRun) print(_ *starlark.Thread, msg string) {
	rc.svc.log.Debug("script print", "script", rc.name, "text", clipText(msg, 256))
}

// execScript runs call under the limits on a fresh thread, on the
// caller's goroutine: an MQTT client's, so a slow script holds up only its
// sender. When the time is up the thread is cancelled; Starlark sees that
// at its next step. A built-in can run on past it (comparing or hashing a
// deeply shared structure, say): a run still busy scriptGrace later is
// stuck. It may do nothing more and keeps its slot, so however many are
// triggered at once no more than scriptSlots can be stuck; and while
// maxScriptsStuck runs are stuck no script starts. A stuck run of a script
// an admin then deletes or replaces stops being counted (writeOffScript).
func (s *Service) execScript(rc *scriptRun, call func(*starlark.Thread) (starlark.Value, error)) (v starlark.Value, err error) {
	t := s.scripts
	if t.stuck.Load() >= maxScriptsStuck {
		return nil, Errorf(EUnavailable, "script %s: scripts are unavailable while earlier runs are stuck", rc.name)
	}
	lim := t.limits
	select {
	case t.running <- struct{}{}:
	default:
		wait := time.NewTimer(lim.Time)
		select {
		case t.running <- struct{}{}:
			wait.Stop()
		case <-wait.C:
			return nil, Errorf(EUnavailable, "script %s: too many scripts running", rc.name)
		}
	}
	th := &starlark.Thread{Name: "script " + rc.name, Print: rc.print, Load: refuseLoad}
	th.SetLocal(runKey, rc)
	rc.thread = th
	start := heapAllocs()
	th.OnMaxSteps = func(th *starlark.Thread) {
		switch {
		case th.Steps >= lim.Steps:
			rc.halt("too many steps")
		case heapAllocs()-start > lim.Memory:
			rc.halt("memory limit")
		default:
			th.SetMaxExecutionSteps(min(th.Steps+scriptCheckEvery, lim.Steps))
		}
	}
	th.SetMaxExecutionSteps(min(scriptCheckEvery, lim.Steps))

	cancel := time.AfterFunc(lim.Time, func() { rc.halt("time limit") })
	stuck := time.AfterFunc(lim.Time+scriptGrace, func() {
		t.runMu.Lock()
		counted := rc.state.CompareAndSwap(runRunning, runStuck)
		if counted {
			t.stuck.Add(1)
			t.stuckRuns[rc] = struct{}{}
		}
		t.runMu.Unlock()
		if !counted {
			return
		}
		rc.end()
		s.log.Warn("script stuck in a built-in past its time limit", "script", rc.name)
		if rc.script != nil && t.get(rc.name) != rc.script {
			t.writeOff(rc) // deleted or replaced while it ran
		}
	})
	defer func() {
		cancel.Stop()
		stuck.Stop()
		if p := recover(); p != nil {
			s.log.Error("script panicked", "script", rc.name, "panic", p, "stack", string(debug.Stack()))
			v, err = nil, Errorf(EInternal, "script %s: internal error", rc.name)
		}
		switch {
		case rc.state.CompareAndSwap(runRunning, runReturned):
			<-t.running
		case rc.state.CompareAndSwap(runStuck, runReturned):
			t.uncount(rc)
		}
		rc.end()
	}()
	return call(th)
}

func refuseLoad(*starlark.Thread, string) (starlark.StringDict, error) {
	return nil, errors.New("load() is not available in scripts")
}

// runScript runs script c for message m. Publishes and notifications go
// out only when the run ends well; commands go out as they are made.
func (s *Service) runScript(c *compiledScript, m Message) (string, error) {
	if !s.scripts.enabled {
		return "", errScriptsDisabled()
	}
	if c.action == nil {
		return "", Errorf(EUnavailable, "script %s does not compile; an admin must replace it", c.Name)
	}
	rc := &scriptRun{svc: s, name: c.Name, file: c.Name + ".star", sender: m.Sender, via: m.Via, script: c}
	msg := scriptMessage(m)
	v, err := s.execScript(rc, func(th *starlark.Thread) (starlark.Value, error) {
		return starlark.Call(th, c.action, starlark.Tuple{msg, s.scripts.server}, nil)
	})
	var reply string
	if err == nil && rc.stop.Load() != nil {
		err = errors.New("stopped") // it returned just as it was stopped
	}
	if err == nil {
		reply, err = rc.reply(v)
	}
	if err != nil {
		return "", s.scriptFailed(rc, err)
	}
	s.metrics.ScriptRun("ok")
	for _, o := range rc.out {
		if o.notify {
			s.notifyDevice(m.Sender.ID, "script "+c.Name+" "+o.text)
		} else if err := s.publish(o.topic, o.text, 0); err != nil {
			s.log.Debug("script publish", "script", c.Name, "topic", o.topic, "error", err)
		}
	}
	return reply, nil
}

// reply applies the reply rule to what action returned.
func (rc *scriptRun) reply(v starlark.Value) (string, error) {
	switch v := v.(type) {
	case starlark.NoneType:
		return "", nil
	case starlark.String:
		if len(v) > maxScriptOutput {
			return "", sandboxErrorf("reply of %d bytes is over the limit of %d", len(v), maxScriptOutput)
		}
		topic, _, _ := strings.Cut(string(v), " ")
		if !mayReach(rc.sender, topic) {
			return "", sandboxErrorf("may not reply on %q", clipText(topic, 64))
		}
		return string(v), nil
	}
	return "", &runError{msg: fmt.Sprintf("action returned a %s, want a string or None", v.Type())}
}

// scriptFailed turns a failed run into the error the sender gets, and
// records an event when the sandbox stopped or refused it.
func (s *Service) scriptFailed(rc *scriptRun, err error) error {
	e := rc.failure(err)
	s.log.Debug("script failed", "script", rc.name, "error", e)
	var re *runError
	if rc.stop.Load() == nil && !(errors.As(err, &re) && re.sandbox) {
		s.metrics.ScriptRun("error")
		return e
	}
	s.metrics.ScriptRun("stopped")
	now := s.now()
	t := s.scripts
	t.mu.Lock()
	last, seen := t.lastStop[rc.name]
	quiet := seen && now.Sub(last) < scriptEventEvery && now.After(last)
	if !quiet {
		t.lastStop[rc.name] = now
	}
	t.mu.Unlock()
	if quiet {
		return e
	}
	ev := &Event{Time: now, Type: EventScript, Via: rc.via, Detail: clipText(ErrorMessage(e), 200)}
	if rc.sender.Kind == PrincipalDevice {
		ev.Device = rc.sender.ID
	} else {
		ev.User = rc.sender.ID
	}
	if werr := s.update(func(tx Tx) error { return tx.AppendEvent(ev) }); werr != nil {
		s.log.Error("record script event", "script", rc.name, "error", werr)
	}
	return e
}

// failure is the client-safe error for a run that failed with err:
// "script <name>: [line <n>: ]<reason>".
func (rc *scriptRun) failure(err error) error {
	var (
		ee  *starlark.EvalError
		re  *runError
		ae  *Error
		msg string
	)
	code, eval := EInvalid, errors.As(err, &ee)
	switch {
	case rc.stop.Load() != nil:
		msg = "stopped: " + *rc.stop.Load()
	case errors.As(err, &re):
		msg = re.msg
	case !eval && errors.As(err, &ae):
		return err // from the runner (busy, panicked): already for the client
	case eval:
		msg = ee.Msg
	default:
		rc.svc.log.Error("script failed", "script", rc.name, "error", err)
		msg, code = "internal error", EInternal
	}
	if eval {
		for i := len(ee.CallStack) - 1; i >= 0; i-- {
			if pos := ee.CallStack[i].Pos; pos.Filename() == rc.file {
				msg = fmt.Sprintf("line %d: %s", pos.Line, msg)
				break
			}
		}
	}
	return Errorf(code, "script %s: %s", rc.name, clipText(msg, 200))
}

// clipText makes s one line of at most n bytes.
func clipText(s string, n int) string {
	if len(s) > n {
		cut := n
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "…"
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
}

// runError is an error of a run found outside Starlark's own checks. When
// sandbox is set, it is a limit or rule of the sandbox that the script
// broke, and the event log records it.
type runError struct {
	msg     string
	sandbox bool
}

func (e *runError) Error() string { return e.msg }

func sandboxErrorf(format string, args ...any) error {
	return &runError{msg: fmt.Sprintf(format, args...), sandbox: true}
}
