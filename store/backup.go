package store

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"go.etcd.io/bbolt"
)

// Snapshot writes a consistent copy of the whole data file to w while
// writes go on. size is called with the copy's length before the first
// byte is written.
//
// The copy is made first into a temporary file beside the data file, in
// one read transaction that lasts as long as the disk takes, and only then
// streamed to w: a read transaction held open while a slow client reads
// would make every write that grows the file wait for it (bbolt remaps the
// file under a write, and that waits for open readers).
func (db *DB) Snapshot(w io.Writer, size func(int64)) (int64, error) {
	tmp, err := os.CreateTemp(filepath.Dir(db.bolt.Path()), ".gatehouse-backup-*")
	if err != nil {
		return 0, fmt.Errorf("snapshot: %w", err)
	}
	// Unlinked at once where the system allows it, so a crash leaves
	// nothing behind; the open file stays readable until closed.
	os.Remove(tmp.Name())
	defer func() {
		tmp.Close()
		os.Remove(tmp.Name())
	}()
	n, err := db.snapshot(tmp, nil)
	if err != nil {
		return 0, err
	}
	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		return 0, fmt.Errorf("snapshot: %w", err)
	}
	if size != nil {
		size(n)
	}
	m, err := io.CopyN(w, tmp, n)
	if err != nil {
		return m, fmt.Errorf("snapshot: %w", err)
	}
	return m, nil
}

// snapshot writes the copy to w inside one read transaction.
func (db *DB) snapshot(w io.Writer, size func(int64)) (int64, error) {
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
		_, err := db.snapshot(f, nil) // to a file: nothing slow holds the transaction
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

// Inspect checks the file at path (see checkFile) and opens it read-only
// to return its schema version. It refuses anything that is not a
// Gatehouse store this binary can open: a file that is not bbolt, a bbolt
// file without Gatehouse's meta, a newer schema, or a damaged file.
func Inspect(path string) (int, error) {
	if _, err := os.Stat(path); err != nil {
		return 0, err
	}
	b, err := openChecked(path, &bbolt.Options{ReadOnly: true, Timeout: lockTimeout})
	if err != nil {
		return 0, err
	}
	defer b.Close()
	var version int
	err = guard(path, func() error {
		return b.View(func(tx *bbolt.Tx) (err error) {
			version, err = schema(tx)
			if err == nil && version == 0 {
				err = &DamagedError{Problem: "a bbolt file without Gatehouse's meta bucket", foreign: true}
			}
			return err
		})
	})
	if errors.Is(err, errNewer) {
		return version, fmt.Errorf("%s: %w", path, err)
	}
	return version, withPath(path, err)
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
	if v >= 5 {
		out = append(out, bucketLogins)
	}
	return out
}

// Restore replaces the store at path with the backup in from, creating
// the data dir if need be. It runs every check on from first (checkFile,
// bbolt's tx.Check, the schema), so a damaged backup is refused before
// anything changes; it holds the lock of the current file (so it fails
// while a server runs) without reading it, so a damaged current file can be
// replaced; keeps the current file beside it as
// <path>.before-restore-<time>; swaps the new one in with a rename; and
// opens it once to bring its schema up to date. It returns where the old
// file went ("" when there was none).
func Restore(path, from string) (kept string, err error) {
	if _, err := os.Stat(from); err != nil {
		return "", fmt.Errorf("restore: %w", err)
	}
	if _, err := verify(from); err != nil {
		var d *DamagedError
		if errors.As(err, &d) {
			return "", fmt.Errorf("restore: backup %w; nothing was changed", err)
		}
		return "", fmt.Errorf("restore: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return "", fmt.Errorf("restore: data dir: %w", err)
	}
	var current *os.File
	if _, err := os.Stat(path); err == nil {
		current, err = lockCurrent(path)
		if errors.Is(err, ErrInUse) {
			return "", fmt.Errorf("restore: %w; stop the server first", err)
		}
		if err != nil {
			return "", fmt.Errorf("restore: %w", err)
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
	if _, err := checkFile(staged, false); err != nil {
		os.Remove(staged)
		return "", fmt.Errorf("restore: the copy of the backup: %w", err)
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
		current.Close() // releases the lock of the file now kept aside
		current = nil
	}
	db, err := Open(path)
	if err != nil {
		return kept, fmt.Errorf("restore: open the restored file: %w", err)
	}
	return kept, db.Close()
}
