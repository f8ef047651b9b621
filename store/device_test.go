package store_test

import (
	"errors"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"gatehouse/actions"
	"gatehouse/store"
)

func TestDevice(t *testing.T) {
	t.Run("OK", func(t *testing.T) {
		db := mustOpen(t)
		want := actions.Device{
			ID:         "door",
			Kind:       actions.KindLock,
			Name:       "Front door",
			State:      "locked",
			LastSeen:   t0.Add(time.Hour),
			Firmware:   "1.2.3",
			Created:    t0,
			Desired:    "locked",
			Owner:      "alice",
			SecretHash: []byte{0x01, 0x02, 0xfe, 0xff},
		}
		mustUpdate(t, db, func(tx actions.Tx) error { return tx.PutDevice(want) })

		var got actions.Device
		mustView(t, db, func(tx actions.Tx) error {
			var err error
			got, err = tx.Device("door")
			return err
		})
		if !equal(got, want) {
			t.Errorf("Device = %+v, want %+v", got, want)
		}

		// The caller owns what it got: changing it changes nothing stored.
		got.SecretHash[0] = 0xaa
		mustView(t, db, func(tx actions.Tx) error {
			again, err := tx.Device("door")
			if err != nil {
				return err
			}
			if again.SecretHash[0] != 0x01 {
				t.Errorf("SecretHash changed through a returned copy: %x", again.SecretHash)
			}
			return nil
		})
	})

	t.Run("OnlineNotStored", func(t *testing.T) {
		db := mustOpen(t)
		mustUpdate(t, db, func(tx actions.Tx) error {
			return tx.PutDevice(actions.Device{ID: "lamp", Kind: actions.KindLight, Online: true})
		})
		mustView(t, db, func(tx actions.Tx) error {
			d, err := tx.Device("lamp")
			if err != nil {
				return err
			}
			if d.Online {
				t.Error("Device.Online = true, want false: presence is not stored")
			}
			all, err := tx.Devices()
			if err != nil {
				return err
			}
			if len(all) != 1 || all[0].Online {
				t.Errorf("Devices = %+v, want one device that is not online", all)
			}
			return nil
		})
	})

	t.Run("List", func(t *testing.T) {
		db := mustOpen(t)
		mustView(t, db, func(tx actions.Tx) error {
			got, err := tx.Devices()
			if err != nil {
				return err
			}
			if got == nil || len(got) != 0 {
				t.Errorf("Devices on an empty store = %#v, want an empty slice", got)
			}
			return nil
		})
		mustUpdate(t, db, func(tx actions.Tx) error {
			for _, id := range []string{"c", "a", "b"} {
				if err := tx.PutDevice(actions.Device{ID: id, Kind: actions.KindLight}); err != nil {
					return err
				}
			}
			return nil
		})
		mustView(t, db, func(tx actions.Tx) error {
			all, err := tx.Devices()
			if err != nil {
				return err
			}
			var got []string
			for _, d := range all {
				got = append(got, d.ID)
			}
			if want := []string{"a", "b", "c"}; !equal(got, want) {
				t.Errorf("Devices ids = %v, want %v", got, want)
			}
			return nil
		})
	})

	t.Run("Delete", func(t *testing.T) {
		db := mustOpen(t)
		mustUpdate(t, db, func(tx actions.Tx) error {
			return tx.PutDevice(actions.Device{ID: "door", Kind: actions.KindLock})
		})
		mustUpdate(t, db, func(tx actions.Tx) error { return tx.DeleteDevice("door") })
		mustView(t, db, func(tx actions.Tx) error {
			_, err := tx.Device("door")
			wantCode(t, err, actions.ENotFound)
			return nil
		})
	})

	t.Run("ErrNotFound", func(t *testing.T) {
		db := mustOpen(t)
		mustView(t, db, func(tx actions.Tx) error {
			_, err := tx.Device("nope")
			wantCode(t, err, actions.ENotFound)
			if got, want := actions.ErrorMessage(err), `device "nope" not found`; got != want {
				t.Errorf("message = %q, want %q", got, want)
			}
			return nil
		})
		err := db.Update(func(tx actions.Tx) error { return tx.DeleteDevice("nope") })
		wantCode(t, err, actions.ENotFound)
	})

	t.Run("ErrInvalid", func(t *testing.T) {
		db := mustOpen(t)
		err := db.Update(func(tx actions.Tx) error { return tx.PutDevice(actions.Device{}) })
		wantCode(t, err, actions.EInvalid)
	})
}

// TestDeviceCacheIsNeverTheTruth: a device read from the cache is the one
// decoding its record gives, whatever its times and fields; a write that
// rolls back and a transaction that reads an older version never see a
// cached device that is not theirs.
func TestDeviceCacheIsNeverTheTruth(t *testing.T) {
	path := filepath.Join(t.TempDir(), "g.db")
	db, err := store.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	paris := time.FixedZone("CET", 3600)
	devices := []actions.Device{
		{ID: "now", Kind: actions.KindLock, State: "locked", LastSeen: time.Now(), Created: time.Now().Add(-time.Hour)},
		{ID: "zones", Kind: actions.KindLight, State: "on", LastSeen: time.Date(2026, 3, 29, 1, 30, 0, 5, paris), Created: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)},
		{ID: "local", Kind: actions.KindLock, State: "unknown", LastSeen: time.Date(2026, 7, 1, 12, 0, 0, 0, time.Local), Owner: "alice", Desired: "locked"},
		{ID: "bare", Kind: actions.KindCamera, SecretHash: []byte{}, Online: true},
		{ID: "odd", Kind: actions.KindLock, Name: "bad \xff name", Firmware: "1.0", SecretHash: []byte{1, 2, 3}},
	}
	cached := map[string]actions.Device{}
	mustUpdate(t, db, func(tx actions.Tx) error {
		for _, d := range devices {
			if err := tx.PutDevice(d); err != nil {
				return err
			}
		}
		return nil
	})
	mustView(t, db, func(tx actions.Tx) error {
		for _, d := range devices {
			got, err := tx.Device(d.ID)
			if err != nil {
				return err
			}
			cached[d.ID] = got
		}
		return nil
	})
	db.Close()
	db, err = store.Open(path) // an empty cache: every device is decoded
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	mustView(t, db, func(tx actions.Tx) error {
		for _, d := range devices {
			decoded, err := tx.Device(d.ID)
			if err != nil {
				return err
			}
			if !reflect.DeepEqual(cached[d.ID], decoded) {
				t.Errorf("%s: cached %#v\ndecoded %#v", d.ID, cached[d.ID], decoded)
			}
		}
		return nil
	})

	// A write rolled back leaves the device as committed.
	state := func() string {
		var d actions.Device
		mustView(t, db, func(tx actions.Tx) (err error) { d, err = tx.Device("now"); return err })
		return d.State
	}
	rolledBack := errors.New("roll back")
	err = db.Update(func(tx actions.Tx) error {
		d, err := tx.Device("now")
		if err != nil {
			return err
		}
		d.State = "unlocked"
		if err := tx.PutDevice(d); err != nil {
			return err
		}
		return rolledBack
	})
	if !errors.Is(err, rolledBack) {
		t.Fatalf("update: %v", err)
	}
	if s := state(); s != "locked" {
		t.Errorf("after a rolled-back write the state is %q, want locked", s)
	}

	// A read transaction begun before a commit reads its own version.
	begun, committed, done := make(chan struct{}), make(chan struct{}), make(chan string)
	go func() {
		_ = db.View(func(tx actions.Tx) error {
			close(begun)
			<-committed
			d, err := tx.Device("now")
			if err != nil {
				done <- err.Error()
				return nil
			}
			done <- d.State
			return nil
		})
	}()
	<-begun
	mustUpdate(t, db, func(tx actions.Tx) error {
		d, err := tx.Device("now")
		if err != nil {
			return err
		}
		d.State = "unlocked"
		return tx.PutDevice(d)
	})
	if s := state(); s != "unlocked" {
		t.Errorf("after the commit the state is %q, want unlocked", s)
	}
	close(committed)
	if s := <-done; s != "locked" {
		t.Errorf("a read begun before the commit saw %q, want locked", s)
	}
}
