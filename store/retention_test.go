package store_test

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"gatehouse/actions"
	"gatehouse/store"
)

// prune runs one PruneEvents transaction.
func prune(tb testing.TB, db *store.DB, q actions.Prune) actions.Pruned {
	tb.Helper()
	var p actions.Pruned
	mustUpdate(tb, db, func(tx actions.Tx) (err error) {
		p, err = tx.PruneEvents(q)
		return err
	})
	return p
}

// pruneAll runs PruneEvents until nothing more is due, as the service does.
func pruneAll(tb testing.TB, db *store.DB, q actions.Prune) actions.Pruned {
	tb.Helper()
	var total actions.Pruned
	for {
		p := prune(tb, db, q)
		total.Events += p.Events
		total.Commands += p.Commands
		total.Pictures += p.Pictures
		if !p.More {
			return total
		}
	}
}

// allEvents lists the whole log, newest first.
func allEvents(tb testing.TB, db *store.DB) []actions.Event {
	tb.Helper()
	var out []actions.Event
	for cursor := ""; ; {
		page, next := eventsOf(tb, db, actions.EventQuery{Limit: 1000, Cursor: cursor})
		out = append(out, page...)
		if next == "" {
			return out
		}
		cursor = next
	}
}

// hourly returns n events one hour apart from t0.
func hourly(n int) []actions.Event {
	events := make([]actions.Event, n)
	for i := range events {
		events[i] = actions.Event{Time: t0.Add(time.Duration(i) * time.Hour), Type: actions.EventState, Device: "door", Detail: fmt.Sprint(i)}
	}
	return events
}

func details(events []actions.Event) []string {
	var out []string
	for _, e := range events {
		out = append(out, e.Detail)
	}
	return out
}

func TestPruneEvents(t *testing.T) {
	t.Run("ByAge", func(t *testing.T) {
		db := mustOpen(t)
		appendEvents(t, db, hourly(10)...)
		got := prune(t, db, actions.Prune{Before: t0.Add(5 * time.Hour), Limit: 1000})
		if want := (actions.Pruned{Events: 5}); got != want {
			t.Errorf("Pruned = %+v, want %+v", got, want)
		}
		if got, want := details(allEvents(t, db)), []string{"9", "8", "7", "6", "5"}; !slices.Equal(got, want) {
			t.Errorf("left %q, want %q", got, want)
		}
	})

	t.Run("ByCount", func(t *testing.T) {
		db := mustOpen(t)
		appendEvents(t, db, hourly(10)...)
		if got := prune(t, db, actions.Prune{Keep: 3, Limit: 1000}); got.Events != 7 {
			t.Errorf("Pruned = %+v, want 7 events", got)
		}
		if got, want := details(allEvents(t, db)), []string{"9", "8", "7"}; !slices.Equal(got, want) {
			t.Errorf("left %q, want %q", got, want)
		}
		// The count is kept across appends and prunes, not guessed.
		appendEvents(t, db, actions.Event{Time: t0.Add(20 * time.Hour), Type: actions.EventState, Detail: "20"})
		if got := prune(t, db, actions.Prune{Keep: 3, Limit: 1000}); got.Events != 1 {
			t.Errorf("second Pruned = %+v, want 1 event", got)
		}
		if got := prune(t, db, actions.Prune{Keep: 3, Limit: 1000}); got != (actions.Pruned{}) {
			t.Errorf("third Pruned = %+v, want nothing", got)
		}
		if got, want := details(allEvents(t, db)), []string{"20", "9", "8"}; !slices.Equal(got, want) {
			t.Errorf("left %q, want %q", got, want)
		}
	})

	t.Run("Limit", func(t *testing.T) {
		db := mustOpen(t)
		appendEvents(t, db, hourly(25)...)
		for i, want := range []actions.Pruned{{Events: 10, More: true}, {Events: 10, More: true}, {Events: 3}, {}} {
			if got := prune(t, db, actions.Prune{Keep: 2, Limit: 10}); got != want {
				t.Errorf("prune %d = %+v, want %+v", i, got, want)
			}
		}
		if got, want := details(allEvents(t, db)), []string{"24", "23"}; !slices.Equal(got, want) {
			t.Errorf("left %q, want %q", got, want)
		}
	})

	t.Run("StrangerPicture", func(t *testing.T) {
		db := mustOpen(t)
		old := appendEvents(t, db, actions.Event{Time: t0, Type: actions.EventStranger, Device: "cam"})[0]
		fresh := appendEvents(t, db, actions.Event{Time: t0.Add(time.Hour), Type: actions.EventStranger, Device: "cam"})[0]
		for _, e := range []actions.Event{old, fresh} {
			mustUpdate(t, db, func(tx actions.Tx) error {
				return tx.PutPicture(actions.Stranger{ID: e.ID, Device: "cam", Time: e.Time, Type: "image/jpeg"}, []byte("picture of "+e.ID))
			})
		}
		if got, want := prune(t, db, actions.Prune{Keep: 1, Limit: 1000}), (actions.Pruned{Events: 1, Pictures: 1}); got != want {
			t.Errorf("Pruned = %+v, want %+v", got, want)
		}
		mustView(t, db, func(tx actions.Tx) error {
			_, err := tx.Picture(old.ID)
			wantCode(t, err, actions.ENotFound)
			_, err = tx.Stranger(old.ID)
			wantCode(t, err, actions.ENotFound)
			if b, err := tx.Picture(fresh.ID); err != nil || string(b) != "picture of "+fresh.ID {
				t.Errorf("Picture(fresh) = %q, %v; want it kept", b, err)
			}
			return nil
		})
	})

	t.Run("PictureOutlivingItsEvent", func(t *testing.T) {
		// Pictures whose events are gone (none here) still leave by age.
		db := mustOpen(t)
		appendEvents(t, db, actions.Event{Time: t0.Add(3 * time.Hour), Type: actions.EventState})
		old := fmt.Sprintf("%016x%016x", t0.UnixNano(), 98)
		fresh := fmt.Sprintf("%016x%016x", t0.Add(2*time.Hour).UnixNano(), 99)
		mustUpdate(t, db, func(tx actions.Tx) error {
			for _, id := range []string{old, fresh} {
				if err := tx.PutPicture(actions.Stranger{ID: id, Device: "cam", Time: t0, Type: "image/png"}, []byte("bytes")); err != nil {
					return err
				}
			}
			return nil
		})
		if got, want := prune(t, db, actions.Prune{Before: t0.Add(time.Hour), Limit: 1000}), (actions.Pruned{Pictures: 1}); got != want {
			t.Errorf("Pruned = %+v, want %+v", got, want)
		}
		var list []actions.Stranger
		mustView(t, db, func(tx actions.Tx) (err error) { list, err = tx.AllStrangers(); return err })
		if len(list) != 1 || list[0].ID != fresh {
			t.Errorf("pictures left = %+v, want only %s", list, fresh)
		}
	})

	t.Run("Commands", func(t *testing.T) {
		db := mustOpen(t)
		done := actions.Command{ID: "done1", Device: "door", Verb: "lock", Status: actions.StatusDone, Created: t0}
		sent := actions.Command{ID: "sent1", Device: "door", Verb: "unlock", Status: actions.StatusSent, Created: t0, NotAfter: t0.Add(time.Minute)}
		mustUpdate(t, db, func(tx actions.Tx) error {
			for _, c := range []actions.Command{done, sent} {
				if err := tx.PutCommand(c); err != nil {
					return err
				}
				if err := tx.AppendEvent(&actions.Event{Time: t0, Type: actions.EventCommand, Command: c.ID}); err != nil {
					return err
				}
			}
			return tx.AppendEvent(&actions.Event{Time: t0.Add(time.Hour), Type: actions.EventState})
		})
		if got, want := prune(t, db, actions.Prune{Keep: 1, Limit: 1000}), (actions.Pruned{Events: 2, Commands: 1}); got != want {
			t.Errorf("Pruned = %+v, want %+v", got, want)
		}
		mustView(t, db, func(tx actions.Tx) error {
			_, err := tx.Command(done.ID)
			wantCode(t, err, actions.ENotFound)
			if c, err := tx.Command(sent.ID); err != nil || c.Status != actions.StatusSent {
				t.Errorf("pending command = %+v, %v; want it kept", c, err)
			}
			pending, err := tx.PendingCommands()
			if err != nil || len(pending) != 1 || pending[0].ID != sent.ID {
				t.Errorf("PendingCommands = %+v, %v; want %s", pending, err, sent.ID)
			}
			return nil
		})
		// Once it ends, its last event takes it along when that one goes.
		sent.Status = actions.StatusExpired
		mustUpdate(t, db, func(tx actions.Tx) error {
			if err := tx.PutCommand(sent); err != nil {
				return err
			}
			return tx.AppendEvent(&actions.Event{Time: t0.Add(2 * time.Hour), Type: actions.EventCommand, Command: sent.ID})
		})
		if got, want := prune(t, db, actions.Prune{Before: t0.Add(3 * time.Hour), Limit: 1000}), (actions.Pruned{Events: 2, Commands: 1}); got != want {
			t.Errorf("Pruned = %+v, want %+v", got, want)
		}
		mustView(t, db, func(tx actions.Tx) error {
			_, err := tx.Command(sent.ID)
			wantCode(t, err, actions.ENotFound)
			return nil
		})
	})

	t.Run("CountOfImportedFile", func(t *testing.T) {
		// An import carries no event count: the first prune counts once.
		src := mustOpen(t)
		appendEvents(t, src, hourly(10)...)
		var export bytes.Buffer
		if err := src.Export(&export); err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(t.TempDir(), "gatehouse.db")
		if err := store.Import(path, &export); err != nil {
			t.Fatal(err)
		}
		db := mustOpenAt(t, path)
		if got := prune(t, db, actions.Prune{Keep: 4, Limit: 1000}); got.Events != 6 {
			t.Errorf("Pruned = %+v, want 6 events", got)
		}
		appendEvents(t, db, actions.Event{Time: t0.Add(20 * time.Hour), Type: actions.EventState, Detail: "20"})
		if got := prune(t, db, actions.Prune{Keep: 4, Limit: 1000}); got.Events != 1 {
			t.Errorf("Pruned after an append = %+v, want 1 event", got)
		}
		if got, want := details(allEvents(t, db)), []string{"20", "9", "8", "7"}; !slices.Equal(got, want) {
			t.Errorf("left %q, want %q", got, want)
		}
	})

	t.Run("ErrInvalid", func(t *testing.T) {
		db := mustOpen(t)
		err := db.Update(func(tx actions.Tx) error {
			_, err := tx.PruneEvents(actions.Prune{Keep: 1})
			return err
		})
		wantCode(t, err, actions.EInvalid)
	})
}

// TestRetentionPlateau is the steady-load test of issue 9: a server that
// keeps writing events, commands and pictures while retention keeps the
// log within its limits has a data file that stops growing, because bbolt
// reuses the pages retention frees.
func TestRetentionPlateau(t *testing.T) {
	const (
		rounds   = 60
		perRound = 200  // events per round
		keep     = 1000 // the count limit
	)
	path := filepath.Join(t.TempDir(), "gatehouse.db")
	db := mustOpenAt(t, path)
	detail := strings.Repeat("x", 400)
	picture := bytes.Repeat([]byte{0xAB}, 8<<10)
	pending := actions.Command{ID: "pending", Device: "door", Verb: "unlock", Status: actions.StatusSent, Created: t0, NotAfter: t0.Add(time.Minute)}
	mustUpdate(t, db, func(tx actions.Tx) error {
		if err := tx.PutCommand(pending); err != nil {
			return err
		}
		return tx.AppendEvent(&actions.Event{Time: t0, Type: actions.EventCommand, Command: pending.ID})
	})
	var now time.Time
	var sizes []int64
	var strangers []string // ids of stranger events, oldest first
	for round := range rounds {
		var added []string
		mustUpdate(t, db, func(tx actions.Tx) error {
			added = added[:0] // fn may run again
			for i := range perRound {
				now = t0.Add(time.Duration(round*perRound+i+1) * time.Second)
				e := actions.Event{Time: now, Type: actions.EventState, Device: "door", Detail: detail}
				switch i % 20 {
				case 0: // a finished command with its event
					id := fmt.Sprintf("c%d-%d", round, i)
					if err := tx.PutCommand(actions.Command{ID: id, Device: "door", Verb: "lock", Status: actions.StatusDone, Created: now}); err != nil {
						return err
					}
					e.Type, e.Command = actions.EventCommand, id
				case 1: // a stranger with its picture
					e.Type, e.Device = actions.EventStranger, "cam"
				}
				if err := tx.AppendEvent(&e); err != nil {
					return err
				}
				if e.Type == actions.EventStranger {
					added = append(added, e.ID)
					if err := tx.PutPicture(actions.Stranger{ID: e.ID, Device: "cam", Time: now, Type: "image/jpeg"}, picture); err != nil {
						return err
					}
				}
			}
			return nil
		})
		strangers = append(strangers, added...)
		pruneAll(t, db, actions.Prune{Keep: keep, Limit: 100})
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		sizes = append(sizes, fi.Size())
	}
	t.Logf("data file size by round: %v", sizes)
	// Written: 12,000 events, 600 pictures of 8 KiB (about 10 MiB in all).
	if half, end := sizes[rounds/2-1], sizes[rounds-1]; end > half {
		t.Errorf("data file grew from %d bytes at round %d to %d at round %d; sizes: %v", half, rounds/2, end, rounds, sizes)
	}
	events := allEvents(t, db)
	if len(events) != keep {
		t.Errorf("%d events left, want %d", len(events), keep)
	}
	if events[0].Time != now {
		t.Errorf("newest event at %s, want %s", events[0].Time, now)
	}
	oldest := events[len(events)-1]
	mustView(t, db, func(tx actions.Tx) error {
		if _, err := tx.Command(pending.ID); err != nil {
			t.Errorf("pending command: %v; want it kept", err)
		}
		list, err := tx.AllStrangers()
		if err != nil {
			return err
		}
		var kept []string
		for _, id := range strangers {
			if id >= oldest.ID {
				kept = append(kept, id)
				continue
			}
			if _, err := tx.Picture(id); actions.ErrorCode(err) != actions.ENotFound {
				t.Errorf("picture of pruned event %s: %v; want it gone", id, err)
				break
			}
		}
		var listed []string
		for _, st := range list {
			listed = append(listed, st.ID)
		}
		if !slices.Equal(listed, kept) {
			t.Errorf("pictures left = %d, want the %d of the events left", len(listed), len(kept))
		}
		return nil
	})
}
