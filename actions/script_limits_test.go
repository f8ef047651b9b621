package actions_test

import (
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"gatehouse/actions"
)

// waitUntil polls cond for up to 30 s (a busy machine is slow, not wrong).
func waitUntil(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	for deadline := time.Now().Add(30 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestScriptCapHoldsForStuckRuns: twenty runs of a script that gets stuck
// in a built-in, triggered at once, never have more than scriptSlots of
// them inside it: the others are refused. Deleting the script stops its
// stuck runs from counting against new ones, and when the stuck runs end
// at last no slot is left taken (none is given back twice).
func TestScriptCapHoldsForStuckRuns(t *testing.T) {
	e := newScriptEnv(t, func(c *actions.Config) { c.ScriptLimits.Time = 200 * time.Millisecond })
	release := make(chan struct{})
	var inside, most atomic.Int32
	actions.AddScriptBuiltin(e.svc, "block", func() {
		n := inside.Add(1)
		for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
		}
		<-release
		inside.Add(-1)
	})
	alice := e.user(t, "alice", actions.RoleAdmin)
	e.online(t, "door", actions.KindLock)
	e.put(t, "stuck", action(`block()
server.command("door", "unlock")`))

	const runs = 20
	slots := actions.ScriptSlots()
	var wg sync.WaitGroup
	var returned atomic.Int32
	for range runs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			e.svc.Dispatch(alice, actions.ViaMQTT, []byte("stuck"))
			returned.Add(1)
		}()
	}
	// The runs that got a slot are stuck; the others were refused.
	waitUntil(t, "the runs without a slot are refused", func() bool { return int(returned.Load()) == runs-slots })
	waitUntil(t, "the runs with a slot are stuck", func() bool { return actions.ScriptsStuck(e.svc) == slots })
	if n := most.Load(); int(n) != slots {
		t.Errorf("%d runs inside the built-in at once, want the cap %d", n, slots)
	}
	refused := 0
	for _, m := range e.pub.take() {
		if strings.HasPrefix(m, "toapp/alice error script stuck: ") {
			refused++
		}
	}
	if refused != runs-slots {
		t.Errorf("%d refusals published, want %d", refused, runs-slots)
	}
	wantMsgs(t, e.send(alice, "stuck"), "toapp/alice error script stuck: scripts are unavailable while earlier runs are stuck")

	// Deleted: its stuck runs no longer count, and scripts run again.
	if err := e.svc.DeleteScript(e.admin, "stuck", actions.ViaREST); err != nil {
		t.Fatal(err)
	}
	if n, used := actions.ScriptsStuck(e.svc), actions.ScriptSlotsUsed(e.svc); n != 0 || used != 0 {
		t.Errorf("after the delete: %d stuck counted, %d slots used; want 0 and 0", n, used)
	}
	e.put(t, "ping", action(`return "toapp/alice pong"`))
	wantMsgs(t, e.send(alice, "ping"), "toapp/alice pong")

	close(release)
	wg.Wait()
	for _, m := range e.pub.take() { // they only report
		if !strings.HasSuffix(m, "stopped: time limit") {
			t.Errorf("a stuck run published %q when it woke", m)
		}
	}
	if n, used := actions.ScriptsStuck(e.svc), actions.ScriptSlotsUsed(e.svc); n != 0 || used != 0 {
		t.Errorf("after the stuck runs ended: %d stuck counted, %d slots used; want 0 and 0", n, used)
	}
	evs, _, _ := e.svc.Events(e.admin, actions.EventQuery{Type: actions.EventCommand, Limit: 10})
	if len(evs) != 0 {
		t.Errorf("a stuck run sent a command: %+v", evs)
	}
}

// TestReplacedScriptStuckRunWrittenOff: a run that gets stuck after its
// script was replaced is not counted at all.
func TestReplacedScriptStuckRunWrittenOff(t *testing.T) {
	e := newScriptEnv(t, func(c *actions.Config) { c.ScriptLimits.Time = 200 * time.Millisecond })
	release, entered := make(chan struct{}), make(chan struct{}, 1)
	actions.AddScriptBuiltin(e.svc, "block", func() { entered <- struct{}{}; <-release })
	alice := e.user(t, "alice", actions.RoleAdmin)
	e.put(t, "slow", action(`block()`))
	done := make(chan struct{})
	go func() {
		defer close(done)
		e.svc.Dispatch(alice, actions.ViaMQTT, []byte("slow"))
	}()
	<-entered
	e.put(t, "slow", action(`return "toapp/alice fixed"`))
	// Past its time and grace the run would be counted as stuck; it is
	// written off instead, and the slot it held is given back.
	waitUntil(t, "the old run is written off", func() bool { return actions.ScriptSlotsUsed(e.svc) == 0 })
	if n := actions.ScriptsStuck(e.svc); n != 0 {
		t.Errorf("%d stuck runs counted", n)
	}
	wantMsgs(t, e.send(alice, "slow"), "toapp/alice fixed")
	close(release)
	<-done
	if n, used := actions.ScriptsStuck(e.svc), actions.ScriptSlotsUsed(e.svc); n != 0 || used != 0 {
		t.Errorf("at the end: %d stuck, %d slots used", n, used)
	}
}
