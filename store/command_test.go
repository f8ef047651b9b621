package store_test

import (
	"testing"
	"time"

	"gatehouse/actions"
)

func TestCommand(t *testing.T) {
	t.Run("OK", func(t *testing.T) {
		db := mustOpen(t)
		want := actions.Command{
			ID:       "cmd1",
			Device:   "door",
			Verb:     "unlock",
			Status:   actions.StatusDone,
			State:    "unlocked",
			Reason:   "",
			By:       "alice",
			Via:      actions.ViaREST,
			Created:  t0,
			NotAfter: t0.Add(30 * time.Second),
		}
		mustUpdate(t, db, func(tx actions.Tx) error { return tx.PutCommand(want) })
		mustView(t, db, func(tx actions.Tx) error {
			got, err := tx.Command("cmd1")
			if err != nil {
				return err
			}
			if got != want {
				t.Errorf("Command = %+v, want %+v", got, want)
			}
			return nil
		})
	})

	t.Run("ErrNotFound", func(t *testing.T) {
		db := mustOpen(t)
		mustView(t, db, func(tx actions.Tx) error {
			_, err := tx.Command("nope")
			wantCode(t, err, actions.ENotFound)
			return nil
		})
	})

	t.Run("Pending", func(t *testing.T) {
		db := mustOpen(t)
		put := func(id, status string) {
			t.Helper()
			mustUpdate(t, db, func(tx actions.Tx) error {
				return tx.PutCommand(actions.Command{ID: id, Device: "door", Verb: "lock", Status: status, Created: t0})
			})
		}
		pending := func() []string {
			t.Helper()
			var got []string
			mustView(t, db, func(tx actions.Tx) error {
				cs, err := tx.PendingCommands()
				for _, c := range cs {
					if c.Status != actions.StatusSent {
						t.Errorf("pending command %q has status %q", c.ID, c.Status)
					}
					got = append(got, c.ID)
				}
				return err
			})
			return got
		}

		put("c2", actions.StatusSent)
		put("c1", actions.StatusSent)
		put("c3", actions.StatusFailed)
		if got, want := pending(), []string{"c1", "c2"}; !equal(got, want) {
			t.Fatalf("pending = %v, want %v", got, want)
		}
		put("c1", actions.StatusDone)
		if got, want := pending(), []string{"c2"}; !equal(got, want) {
			t.Fatalf("after c1 done: pending = %v, want %v", got, want)
		}
		put("c2", actions.StatusExpired)
		if got := pending(); len(got) != 0 {
			t.Fatalf("after c2 expired: pending = %v, want none", got)
		}
	})
}
