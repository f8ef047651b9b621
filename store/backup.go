package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// Snapshot writes a consistent copy of the whole data file to w while
// writes go on: it is one read transaction. size is called with the
// copy's length before the first byte is written.
func (db *DB) Snapshot(w io.Writer, size func(int64)) (int64, error) {
	var n int64
	err := db.bolt.View(func(btx *bbolt.Tx) error {
		if size != nil {
			size(btx.Size())
		}
		var err error
		n, err = btx.WriteTo(w)
		return err
	})
	if err != nil {
		return n, fmt.Errorf("snapshot: %w", err)
	}
	return n, nil
}

// BackupFile writes a snapshot of the store to path atomically: a
// temporary file beside it, synced, then renamed.
func (db *DB) BackupFile(path string) error {
	return writeAtomic(path, func(f *os.File) error {
		_, err := db.Snapshot(f, nil)
		return err
	})
}

// writeAtomic creates path through a synced temporary file in the same
// folder, so a crash leaves either the old file or the whole new one.
func writeAtomic(path string, write func(*os.File) error) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := write(tmp); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	return syncDir(filepath.Dir(path))
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// ErrForeign is returned for a file that is not a Gatehouse store.
var ErrForeign = errors.New("not a gatehouse data file")

// Inspect opens path read-only and returns its schema version. It refuses
// anything that is not a Gatehouse store this binary can open: a file that
// is not bbolt, a bbolt file without Gatehouse's meta, or a newer schema.
func Inspect(path string) (int, error) {
	if _, err := os.Stat(path); err != nil {
		return 0, err
	}
	b, err := bbolt.Open(path, 0o600, &bbolt.Options{ReadOnly: true, Timeout: lockTimeout})
	if errors.Is(err, berrors.ErrTimeout) {
		return 0, fmt.Errorf("%s: %w", path, ErrInUse)
	}
	if err != nil {
		return 0, fmt.Errorf("%s: %w: %v", path, ErrForeign, err)
	}
	defer b.Close()
	var version uint64
	err = b.View(func(tx *bbolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		if meta == nil {
			return fmt.Errorf("%s: %w: no meta bucket", path, ErrForeign)
		}
		v := meta.Get(keySchemaVersion)
		if len(v) != 8 {
			return fmt.Errorf("%s: %w: no schema version", path, ErrForeign)
		}
		version = binary.BigEndian.Uint64(v)
		if version == 0 || version > uint64(SchemaVersion) {
			return fmt.Errorf("%s: schema version %d; this binary knows 1 to %d", path, version, SchemaVersion)
		}
		for _, name := range bucketsAt(int(version)) {
			if tx.Bucket(name) == nil {
				return fmt.Errorf("%s: %w: bucket %s missing", path, ErrForeign, name)
			}
		}
		return nil
	})
	return int(version), err
}

// bucketsAt lists the data buckets a file of schema version v has.
func bucketsAt(v int) [][]byte {
	out := [][]byte{bucketDevices, bucketUsers, bucketTokens, bucketTokenHashes, bucketCommands, bucketPending, bucketEvents}
	if v >= 2 {
		out = append(out, bucketGrants, bucketPairings)
	}
	if v >= 3 {
		out = append(out, bucketStrangers, bucketPictures, bucketSettings)
	}
	if v >= 4 {
		out = append(out, bucketScripts)
	}
	return out
}

// Restore replaces the store at path with the snapshot in from. It checks
// from with Inspect, holds the lock of the current file (so it fails while
// a server runs), keeps the current file beside it as
// <path>.before-restore-<time>, swaps the new one in with a rename, and
// opens it once to bring its schema up to date. It returns where the old
// file went ("" when there was none).
func Restore(path, from string) (kept string, err error) {
	if _, err := Inspect(from); err != nil {
		return "", fmt.Errorf("restore: %w", err)
	}
	var current *bbolt.DB
	if _, err := os.Stat(path); err == nil {
		current, err = bbolt.Open(path, 0o600, &bbolt.Options{Timeout: lockTimeout})
		if errors.Is(err, berrors.ErrTimeout) {
			return "", fmt.Errorf("restore: %s: %w; stop the server first", path, ErrInUse)
		}
		if err != nil {
			return "", fmt.Errorf("restore: %s: %w", path, err)
		}
		defer func() {
			if current != nil {
				current.Close()
			}
		}()
	}
	src, err := os.Open(from)
	if err != nil {
		return "", fmt.Errorf("restore: %w", err)
	}
	defer src.Close()
	staged := path + ".restoring"
	if err := writeAtomic(staged, func(f *os.File) error { _, err := io.Copy(f, src); return err }); err != nil {
		return "", fmt.Errorf("restore: copy: %w", err)
	}
	if current != nil {
		kept = fmt.Sprintf("%s.before-restore-%s", path, time.Now().UTC().Format("20060102T150405Z"))
		if err := os.Link(path, kept); err != nil {
			os.Remove(staged)
			return "", fmt.Errorf("restore: keep the current file: %w", err)
		}
	}
	if err := os.Rename(staged, path); err != nil {
		os.Remove(staged)
		return "", fmt.Errorf("restore: swap: %w", err)
	}
	if err := syncDir(filepath.Dir(path)); err != nil {
		return kept, fmt.Errorf("restore: %w", err)
	}
	if current != nil {
		current.Close()
		current = nil
	}
	db, err := Open(path)
	if err != nil {
		return kept, fmt.Errorf("restore: open the restored file: %w", err)
	}
	return kept, db.Close()
}
