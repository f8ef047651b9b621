package store

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"go.etcd.io/bbolt"

	"gatehouse/actions"
)

// TestMigrateFromSchema1 writes a file as the first release did (schema 1,
// no grants or pairings buckets) and opens it with this binary.
func TestMigrateFromSchema1(t *testing.T) {
	path := filepath.Join(t.TempDir(), "old.db")
	b, err := bbolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = b.Update(func(tx *bbolt.Tx) error {
		if err := migrate(tx, migrations[:1]); err != nil {
			return err
		}
		return tx.Bucket(bucketDevices).Put([]byte("door"), []byte(`{"kind":"lock","name":"Old door","state":"locked","created":"2025-01-01T00:00:00Z"}`))
	})
	b.Close()
	if err != nil {
		t.Fatal(err)
	}
	if v, err := Inspect(path); err != nil || v != 1 {
		t.Fatalf("fixture schema %d %v", v, err)
	}
	db, err := Open(path)
	if err != nil {
		t.Fatalf("open schema 1: %v", err)
	}
	defer db.Close()
	err = db.Update(func(tx actions.Tx) error {
		d, err := tx.Device("door")
		if err != nil || d.Name != "Old door" {
			t.Errorf("old device %+v %v", d, err)
		}
		return tx.PutGrant(actions.Grant{ID: "g", User: "u", Device: "door"})
	})
	if err != nil {
		t.Errorf("grant on a migrated file: %v", err)
	}
	db.bolt.View(func(tx *bbolt.Tx) error {
		if v, _ := schemaOf(tx); v != SchemaVersion {
			t.Errorf("schema after open %d, want %d", v, SchemaVersion)
		}
		return nil
	})
}

// TestFailedMigrationLeavesFile runs a migration list whose last step fails
// and checks the file is byte for byte what it was.
func TestFailedMigrationLeavesFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "old.db")
	b, _ := bbolt.Open(path, 0o600, nil)
	b.Update(func(tx *bbolt.Tx) error { return migrate(tx, migrations[:1]) })
	b.Close()
	before, _ := os.ReadFile(path)

	b, _ = bbolt.Open(path, 0o600, nil)
	failing := append(migrations[:], func(tx *bbolt.Tx) error {
		tx.CreateBucket([]byte("half_done"))
		return errors.New("disk says no")
	})
	err := b.Update(func(tx *bbolt.Tx) error { return migrate(tx, failing) })
	b.Close()
	if err == nil {
		t.Fatal("failing migration succeeded")
	}
	after, _ := os.ReadFile(path)
	if !bytes.Equal(before, after) {
		t.Error("a failed migration changed the file")
	}
	if v, err := Inspect(path); err != nil || v != 1 {
		t.Errorf("schema after failed migration %d %v, want 1", v, err)
	}
}
