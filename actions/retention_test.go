package actions_test

import (
	"bytes"
	"fmt"
	"image"
	"image/png"
	"path/filepath"
	"testing"
	"time"

	"gatehouse/actions"
	"gatehouse/store"
)

func TestParseAge(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want time.Duration
		bad  bool
	}{
		{in: "90d", want: 90 * 24 * time.Hour},
		{in: "1d", want: 24 * time.Hour},
		{in: "0", want: 0},
		{in: "0d", want: 0},
		{in: "36h", want: 36 * time.Hour},
		{in: "1h30m", want: 90 * time.Minute},
		{in: "", bad: true},
		{in: "90", bad: true},
		{in: "d", bad: true},
		{in: "1.5d", bad: true},
		{in: "-1d", bad: true},
		{in: "-5h", bad: true},
		{in: "1d12h", bad: true},
		{in: "99999999d", bad: true},
	} {
		got, err := actions.ParseAge(tc.in)
		switch {
		case tc.bad && actions.ErrorCode(err) != actions.EInvalid:
			t.Errorf("ParseAge(%q) = %s, %v; want an invalid error", tc.in, got, err)
		case !tc.bad && (err != nil || got != tc.want):
			t.Errorf("ParseAge(%q) = %s, %v; want %s", tc.in, got, err, tc.want)
		}
	}
}

// retentionEnv is openEnv with retention settings.
func retentionEnv(tb testing.TB, cfg actions.Config) *env {
	tb.Helper()
	cfg.CommandTTL = actions.MaxCommandTTL
	return openEnvWith(tb, filepath.Join(tb.TempDir(), "g.db"), store.Options{}, cfg)
}

// pngPicture is a small valid PNG.
func pngPicture(tb testing.TB) []byte {
	tb.Helper()
	var b bytes.Buffer
	if err := png.Encode(&b, image.NewGray(image.Rect(0, 0, 8, 8))); err != nil {
		tb.Fatal(err)
	}
	return b.Bytes()
}

func TestPruneOnce(t *testing.T) {
	t.Run("ByAge", func(t *testing.T) {
		e := retentionEnv(t, actions.Config{KeepEvents: 24 * time.Hour})
		e.newOnline(t, "door", actions.KindLock)
		e.newOnline(t, "cam", actions.KindCamera)
		done, msg := e.send(t, "door", "lock")
		if err := e.dispatch(dev("door"), "ack "+done.ID+" ok locked"); err != nil {
			t.Fatalf("ack: %v (command message %v)", err, msg)
		}
		e.pub.take()
		pending, _ := e.send(t, "door", "unlock") // never acked: still sent
		st, err := e.svc.AddStranger(dev("cam"), time.Time{}, pngPicture(t), actions.ViaREST)
		if err != nil {
			t.Fatalf("AddStranger: %v", err)
		}

		e.clock.advance(25 * time.Hour)
		if err := e.dispatch(dev("door"), "state unlocked"); err != nil {
			t.Fatalf("state: %v", err)
		}
		p, err := e.svc.PruneOnce()
		if err != nil {
			t.Fatalf("PruneOnce: %v", err)
		}
		left := e.events(t, actions.EventQuery{})
		if len(left) != 1 || left[0].Type != actions.EventState || left[0].Detail == "" {
			t.Errorf("events left = %+v, want only the fresh state report", left)
		}
		if p.Events == 0 || p.Commands != 1 || p.Pictures != 1 {
			t.Errorf("Pruned = %+v, want events, 1 command, 1 picture", p)
		}
		if _, err := e.svc.Command(e.admin, done.ID); actions.ErrorCode(err) != actions.ENotFound {
			t.Errorf("Command(done) = %v, want not_found", err)
		}
		if c := e.command(t, pending.ID); c.Status != actions.StatusSent {
			t.Errorf("pending command = %+v, want it kept and sent", c)
		}
		if _, _, err := e.svc.Picture(&e.admin, st.ID); actions.ErrorCode(err) != actions.ENotFound {
			t.Errorf("Picture of a pruned stranger = %v, want not_found", err)
		}
	})

	t.Run("ByCount", func(t *testing.T) {
		e := retentionEnv(t, actions.Config{KeepEventsMax: 5})
		e.newOnline(t, "door", actions.KindLock)
		for i := range 20 {
			if err := e.dispatch(dev("door"), fmt.Sprintf("state %s", []string{"locked", "unlocked"}[i%2])); err != nil {
				t.Fatalf("state: %v", err)
			}
		}
		newest := e.events(t, actions.EventQuery{Limit: 5})
		if _, err := e.svc.PruneOnce(); err != nil {
			t.Fatalf("PruneOnce: %v", err)
		}
		if left := e.events(t, actions.EventQuery{}); !equalIDs(left, newest) {
			t.Errorf("events left = %d (%v), want the newest 5 (%v)", len(left), eventIDs(left), eventIDs(newest))
		}
	})

	t.Run("NoAgeLimit", func(t *testing.T) {
		e := retentionEnv(t, actions.Config{KeepEvents: -1})
		before := e.events(t, actions.EventQuery{})
		e.clock.advance(10 * 365 * 24 * time.Hour)
		if p, err := e.svc.PruneOnce(); err != nil || p != (actions.Pruned{}) {
			t.Errorf("PruneOnce = %+v, %v; want nothing pruned", p, err)
		}
		if left := e.events(t, actions.EventQuery{}); !equalIDs(left, before) {
			t.Errorf("events left = %v, want %v", eventIDs(left), eventIDs(before))
		}
	})
}

// TestStartRetention checks the background pass prunes on its own and that
// Close stops it.
func TestStartRetention(t *testing.T) {
	e := retentionEnv(t, actions.Config{KeepEventsMax: 3, RetentionInterval: 10 * time.Millisecond})
	e.newOnline(t, "door", actions.KindLock)
	for range 10 {
		if err := e.dispatch(dev("door"), "state locked"); err != nil {
			t.Fatalf("state: %v", err)
		}
	}
	e.svc.StartRetention()
	e.svc.StartRetention() // a second call does nothing
	deadline := time.Now().Add(30 * time.Second)
	for len(e.events(t, actions.EventQuery{})) > 3 {
		if time.Now().After(deadline) {
			t.Fatalf("the background pass left %d events, want 3", len(e.events(t, actions.EventQuery{})))
		}
		time.Sleep(10 * time.Millisecond)
	}
	e.close(t) // returns: the pass is stopped before the store closes
	e.svc.StartRetention()
	e.svc.Close()
}

// TestCloseWithoutRetention checks Close returns, also twice, when the
// background pass never started.
func TestCloseWithoutRetention(t *testing.T) {
	e := retentionEnv(t, actions.Config{})
	done := make(chan struct{})
	go func() {
		e.svc.Close()
		e.svc.Close()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("Close did not return")
	}
}

func eventIDs(events []actions.Event) []string {
	var ids []string
	for _, e := range events {
		ids = append(ids, e.ID)
	}
	return ids
}

func equalIDs(a, b []actions.Event) bool {
	return fmt.Sprint(eventIDs(a)) == fmt.Sprint(eventIDs(b))
}
