package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"gatehouse/actions"
	"gatehouse/store"
)

// Restore checks only the meta bucket and the bucket names (store.Inspect)
// before it swaps a file in: a backup with a damaged page is accepted, the
// good data file is moved aside, and the damage surfaces later as failing
// requests (or, for worse damage, a panic or SIGSEGV while bbolt walks a
// page). bbolt's tx.Check finds it at once.
func TestReviewRestoreAcceptsCorruptFile(t *testing.T) {
	t.Skip("BUG: restore swaps in a backup with damaged pages; no tx.Check (store/backup.go Restore/Inspect)")
	dir := t.TempDir()
	src := filepath.Join(dir, "backup.db")
	db, err := store.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	if err := db.Update(func(tx actions.Tx) error {
		for i := 0; i < 3000; i++ {
			if err := tx.AppendEvent(&actions.Event{Time: t0.Add(time.Duration(i) * time.Millisecond), Type: "state",
				Device: "door", Detail: "marker-marker-marker-marker"}); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	db.Close()

	// Damage the element count of one leaf page of the events bucket.
	data, _ := os.ReadFile(src)
	const psize = 4096
	for off := 2 * psize; off+psize <= len(data); off += psize {
		if flags := int(data[off+8]) | int(data[off+9])<<8; flags == 0x02 && bytes.Contains(data[off:off+psize], []byte("marker")) {
			data[off+10], data[off+11] = 0xFF, 0x7F
			break
		}
	}
	os.WriteFile(src, data, 0o600)

	data2 := filepath.Join(dir, "data")
	os.MkdirAll(data2, 0o700) // restore does not create the data dir (see the report)
	err = run(context.Background(), []string{"restore", "--data", data2, src}, noenv, io.Discard, io.Discard)
	if err == nil {
		db, _ := store.Open(filepath.Join(data2, "gatehouse.db"))
		defer db.Close()
		verr := db.View(func(tx actions.Tx) error {
			_, _, err := tx.Events(actions.EventQuery{After: "00000000000000000000000000000000", Limit: 1000})
			return err
		})
		msg := fmt.Sprint(verr)
		t.Errorf("restore accepted a damaged file; listing events then reads a %d-byte key off the page: %.120s…", len(msg), msg)
	}
}

// Disaster recovery on a new machine: `gatehouse restore FILE` into a data
// dir that does not exist yet fails ("open …/.gatehouse.db.restoring.tmp-…:
// no such file or directory"), unlike `import`, which creates it.
func TestReviewRestoreIntoFreshDataDir(t *testing.T) {
	t.Skip("BUG: restore fails when the data dir does not exist yet (main.go offline: no MkdirAll for restore)")
	dir := t.TempDir()
	src := filepath.Join(dir, "backup.db")
	db, err := store.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	if err := run(context.Background(), []string{"restore", "--data", filepath.Join(dir, "new"), src}, noenv, io.Discard, io.Discard); err != nil {
		t.Errorf("restore into a fresh data dir: %v", err)
	}
}
