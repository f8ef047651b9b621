package store_test

import (
	"testing"
	"time"

	"gatehouse/actions"
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
