package store_test

import (
	"fmt"
	"regexp"
	"slices"
	"testing"
	"time"

	"gatehouse/actions"
	"gatehouse/store"
)

// appendEvents appends events in one transaction, sets their ids and
// returns them.
func appendEvents(tb testing.TB, db *store.DB, events ...actions.Event) []actions.Event {
	tb.Helper()
	err := db.Update(func(tx actions.Tx) error {
		for i := range events {
			if err := tx.AppendEvent(&events[i]); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		tb.Fatalf("AppendEvent: %v", err)
	}
	return events
}

// eventsOf runs one Events query.
func eventsOf(tb testing.TB, db *store.DB, q actions.EventQuery) ([]actions.Event, string) {
	tb.Helper()
	var events []actions.Event
	var next string
	err := db.View(func(tx actions.Tx) error {
		var err error
		events, next, err = tx.Events(q)
		return err
	})
	if err != nil {
		tb.Fatalf("Events(%+v): %v", q, err)
	}
	return events, next
}

func TestAppendEvent(t *testing.T) {
	t.Run("OK", func(t *testing.T) {
		db := mustOpen(t)
		e := actions.Event{
			Time:    t0,
			Type:    actions.EventCommand,
			Device:  "door",
			User:    "alice",
			Via:     actions.ViaREST,
			Command: "cmd1",
			Detail:  "unlock",
		}
		e = appendEvents(t, db, e)[0]
		if !regexp.MustCompile(`^[0-9a-f]{32}$`).MatchString(e.ID) {
			t.Errorf("ID = %q, want 32 lowercase hex digits", e.ID)
		}
		if want := fmt.Sprintf("%016x", t0.UnixNano()); e.ID[:16] != want {
			t.Errorf("ID = %q, want it to start with the time %s", e.ID, want)
		}
		got, _ := eventsOf(t, db, actions.EventQuery{})
		if want := []actions.Event{e}; !equal(got, want) {
			t.Errorf("Events = %+v, want %+v", got, want)
		}
	})

	t.Run("ErrInvalid", func(t *testing.T) {
		db := mustOpen(t)
		for _, tm := range []time.Time{{}, time.Date(1969, 12, 31, 0, 0, 0, 0, time.UTC)} {
			e := actions.Event{Time: tm, Type: actions.EventState}
			err := db.Update(func(tx actions.Tx) error { return tx.AppendEvent(&e) })
			wantCode(t, err, actions.EInvalid)
			if e.ID != "" {
				t.Errorf("ID = %q after a refused append, want \"\"", e.ID)
			}
		}
	})
}

func TestEvents(t *testing.T) {
	t.Run("NewestFirst", func(t *testing.T) {
		db := mustOpen(t)
		// Appended out of time order: the log sorts by event time.
		var in []actions.Event
		for _, m := range []int{3, 1, 4, 0, 2} {
			in = append(in, actions.Event{Time: t0.Add(time.Duration(m) * time.Minute), Type: actions.EventState, Detail: fmt.Sprint(m)})
		}
		appendEvents(t, db, in...)
		got, next := eventsOf(t, db, actions.EventQuery{})
		var details []string
		for _, e := range got {
			details = append(details, e.Detail)
		}
		if want := []string{"4", "3", "2", "1", "0"}; !equal(details, want) || next != "" {
			t.Errorf("Events details = %v, next %q; want %v, \"\"", details, next, want)
		}
	})

	t.Run("SameTime", func(t *testing.T) {
		db := mustOpen(t)
		var in []actions.Event
		for i := range 5 {
			in = append(in, actions.Event{Time: t0, Type: actions.EventState, Detail: fmt.Sprint(i)})
		}
		// Two transactions, so the order holds across commits too.
		in = append(appendEvents(t, db, in[:2]...), appendEvents(t, db, in[2:]...)...)
		got, _ := eventsOf(t, db, actions.EventQuery{})
		want := slices.Clone(in)
		slices.Reverse(want)
		if !equal(got, want) {
			t.Errorf("Events = %v, want %v", ids(got), ids(want))
		}
	})

	t.Run("Pages", func(t *testing.T) {
		// 9 events fill the third page exactly: its next is still "",
		// since no event follows it.
		for _, n := range []int{7, 9} {
			t.Run(fmt.Sprint(n), func(t *testing.T) {
				db := mustOpen(t)
				var in []actions.Event
				for i := range n {
					in = append(in, actions.Event{Time: t0.Add(time.Duration(i) * time.Second), Type: actions.EventState})
				}
				in = appendEvents(t, db, in...)
				want := ids(in)
				slices.Reverse(want)

				var got []string
				q := actions.EventQuery{Limit: 3}
				for page := 1; ; page++ {
					events, next := eventsOf(t, db, q)
					if page > 3 {
						t.Fatalf("page %d: more than three pages", page)
					}
					if page < 3 && (len(events) != 3 || next != events[2].ID) {
						t.Fatalf("page %d = %d events, next %q; want 3, the last id", page, len(events), next)
					}
					got = append(got, ids(events)...)
					if next == "" {
						if page != 3 {
							t.Fatalf("page %d: next = \"\", want three pages", page)
						}
						break
					}
					q.Cursor = next
				}
				if !equal(got, want) {
					t.Errorf("paged ids = %v, want %v", got, want)
				}
			})
		}
	})

	t.Run("Limit", func(t *testing.T) {
		db := mustOpen(t)
		var in []actions.Event
		for i := range 1001 {
			in = append(in, actions.Event{Time: t0.Add(time.Duration(i) * time.Millisecond), Type: actions.EventState})
		}
		appendEvents(t, db, in...)
		for _, tt := range []struct{ limit, want int }{{0, 50}, {-1, 50}, {10, 10}, {5000, 1000}} {
			got, next := eventsOf(t, db, actions.EventQuery{Limit: tt.limit})
			if len(got) != tt.want || next != got[len(got)-1].ID {
				t.Errorf("Limit %d: %d events, next %q; want %d, the last id", tt.limit, len(got), next, tt.want)
			}
		}
	})

	t.Run("Filter", func(t *testing.T) {
		db := mustOpen(t)
		type ev struct{ device, typ string }
		var in []actions.Event
		for i, e := range []ev{
			{"door", actions.EventState},
			{"lamp", actions.EventState},
			{"", actions.EventAck},
			{"door", actions.EventAck},
			{"cam", actions.EventOnline},
			{"door", actions.EventState},
			{"lamp", actions.EventAck},
		} {
			in = append(in, actions.Event{Time: t0.Add(time.Duration(i) * time.Second), Device: e.device, Type: e.typ, Detail: fmt.Sprint(i)})
		}
		appendEvents(t, db, in...)

		for _, tt := range []struct {
			name string
			q    actions.EventQuery
			want []string // details, newest first
		}{
			{"Device", actions.EventQuery{Device: "door"}, []string{"5", "3", "0"}},
			{"Type", actions.EventQuery{Type: actions.EventAck}, []string{"6", "3", "2"}},
			{"DeviceAndType", actions.EventQuery{Device: "door", Type: actions.EventState}, []string{"5", "0"}},
			{"Filter", actions.EventQuery{Filter: onDevices("lamp", "cam")}, []string{"6", "4", "1"}},
			{"FilterNone", actions.EventQuery{Filter: onDevices()}, nil},
			{"FilterAndType", actions.EventQuery{Filter: onDevices("lamp", "door"), Type: actions.EventAck}, []string{"6", "3"}},
			{"NoMatch", actions.EventQuery{Device: "nope"}, nil},
		} {
			t.Run(tt.name, func(t *testing.T) {
				events, next := eventsOf(t, db, tt.q)
				var got []string
				for _, e := range events {
					got = append(got, e.Detail)
				}
				if !equal(got, tt.want) || next != "" {
					t.Errorf("Events = %v, next %q; want %v, \"\"", got, next, tt.want)
				}
			})
		}

		t.Run("Pages", func(t *testing.T) {
			// door has three events: a page of two has a next, and the
			// page after it has one event and no next.
			q := actions.EventQuery{Device: "door", Limit: 2}
			events, next := eventsOf(t, db, q)
			if len(events) != 2 || next != events[1].ID {
				t.Fatalf("first page = %d events, next %q", len(events), next)
			}
			q.Cursor = next
			events, next = eventsOf(t, db, q)
			if len(events) != 1 || events[0].Detail != "0" || next != "" {
				t.Fatalf("second page = %+v, next %q; want event 0, \"\"", events, next)
			}

			// The only older events are not door's: no next.
			q = actions.EventQuery{Device: "door", Limit: 1, Cursor: events[0].ID}
			if events, next = eventsOf(t, db, q); len(events) != 0 || next != "" {
				t.Fatalf("past the end = %+v, next %q; want none", events, next)
			}
		})
	})

	t.Run("CursorBetweenKeys", func(t *testing.T) {
		// A cursor need not be an existing id: the page starts at the
		// newest event older than it.
		db := mustOpen(t)
		in := appendEvents(t, db,
			actions.Event{Time: t0, Type: actions.EventState, Detail: "old"},
			actions.Event{Time: t0.Add(2 * time.Second), Type: actions.EventState, Detail: "new"},
		)
		between := fmt.Sprintf("%016x%016x", t0.Add(time.Second).UnixNano(), 0)
		got, _ := eventsOf(t, db, actions.EventQuery{Cursor: between})
		if len(got) != 1 || got[0].ID != in[0].ID {
			t.Errorf("Events after %s = %v, want [%s]", between, ids(got), in[0].ID)
		}
		after := fmt.Sprintf("%016x%016x", t0.Add(time.Hour).UnixNano(), 0)
		got, _ = eventsOf(t, db, actions.EventQuery{Cursor: after})
		if len(got) != 2 {
			t.Errorf("Events after %s = %v, want both", after, ids(got))
		}
	})

	t.Run("ErrInvalidCursor", func(t *testing.T) {
		db := mustOpen(t)
		appendEvents(t, db, actions.Event{Time: t0, Type: actions.EventState})
		for _, cursor := range []string{"zz", "abc", "0011", "0123456789abcdef0123456789abcdef00", "0123456789abcdef0123456789abcdeg"} {
			err := db.View(func(tx actions.Tx) error {
				_, _, err := tx.Events(actions.EventQuery{Cursor: cursor})
				return err
			})
			wantCode(t, err, actions.EInvalid)
		}
	})
}

// onDevices is a filter keeping the events about the given devices.
func onDevices(ids ...string) func(actions.Event) bool {
	return func(e actions.Event) bool {
		for _, id := range ids {
			if e.Device == id {
				return true
			}
		}
		return false
	}
}
