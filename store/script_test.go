package store_test

import (
	"bytes"
	"path/filepath"
	"testing"

	"gatehouse/actions"
	"gatehouse/store"
)

func TestScript(t *testing.T) {
	db := mustOpen(t)
	ping := actions.Script{Name: "ping", Source: "def action(msg, server):\n    return None\n", Version: 2,
		Created: t0, Updated: t0.Add(1), By: "admin"}
	beep := actions.Script{Name: "beep", Source: "x", Version: 1, Created: t0, Updated: t0, By: "root"}
	mustUpdate(t, db, func(tx actions.Tx) error {
		if err := tx.PutScript(ping); err != nil {
			return err
		}
		return tx.PutScript(beep)
	})

	t.Run("OK", func(t *testing.T) {
		mustView(t, db, func(tx actions.Tx) error {
			got, err := tx.Script("ping")
			if err != nil || !equal(got, ping) {
				t.Errorf("Script = %+v, %v; want %+v", got, err, ping)
			}
			list, err := tx.Scripts()
			if err != nil || !equal(list, []actions.Script{beep, ping}) {
				t.Errorf("Scripts = %+v, %v; want beep, ping", list, err)
			}
			return nil
		})
	})
	t.Run("ErrNotFound", func(t *testing.T) {
		mustView(t, db, func(tx actions.Tx) error {
			_, err := tx.Script("nope")
			wantCode(t, err, actions.ENotFound)
			return nil
		})
		err := db.Update(func(tx actions.Tx) error { return tx.DeleteScript("nope") })
		wantCode(t, err, actions.ENotFound)
	})
	t.Run("ErrInvalid", func(t *testing.T) {
		err := db.Update(func(tx actions.Tx) error { return tx.PutScript(actions.Script{Source: "x"}) })
		wantCode(t, err, actions.EInvalid)
	})
	t.Run("Delete", func(t *testing.T) {
		mustUpdate(t, db, func(tx actions.Tx) error { return tx.DeleteScript("beep") })
		mustView(t, db, func(tx actions.Tx) error {
			if list, err := tx.Scripts(); err != nil || !equal(list, []actions.Script{ping}) {
				t.Errorf("Scripts after delete = %+v, %v", list, err)
			}
			return nil
		})
	})
	t.Run("ExportImport", func(t *testing.T) {
		var out bytes.Buffer
		if err := db.Export(&out); err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(t.TempDir(), "imported.db")
		if err := store.Import(path, bytes.NewReader(out.Bytes())); err != nil {
			t.Fatalf("Import: %v", err)
		}
		mustView(t, mustOpenAt(t, path), func(tx actions.Tx) error {
			if got, err := tx.Script("ping"); err != nil || !equal(got, ping) {
				t.Errorf("imported Script = %+v, %v; want %+v", got, err, ping)
			}
			return nil
		})
	})
}
