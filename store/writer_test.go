package store

import (
	"bytes"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.etcd.io/bbolt"

	"gatehouse/actions"
)

func TestCommitErrorClassifies(t *testing.T) {
	const prefix = "the server cannot write to its data file"
	path := "/secret/place/gatehouse.db"
	for _, tc := range []struct {
		name     string
		err      error
		code     string
		message  string
		wantNoSp bool
	}{
		{"ENOSPC", &os.PathError{Op: "write", Path: path, Err: syscall.ENOSPC}, actions.EStorageFull, prefix + ": no space left on device", true},
		{"EDQUOT", &os.PathError{Op: "write", Path: path, Err: syscall.EDQUOT}, actions.EStorageFull, prefix + ": disk quota exceeded", false},
		{"EFBIG", &os.PathError{Op: "write", Path: path, Err: syscall.EFBIG}, actions.EStorageFull, prefix + ": file too large", false},
		// bbolt's grow formats the truncate error with %s.
		{"GrowText", errors.New("file resize error: truncate " + path + ": no space left on device"), actions.EStorageFull, prefix + ": no space left on device", false},
		{"EIO", &os.PathError{Op: "write", Path: path, Err: syscall.EIO}, actions.EStorage, prefix + ": input/output error", false},
		{"EROFS", &os.PathError{Op: "write", Path: path, Err: syscall.EROFS}, actions.EStorage, prefix + ": read-only file system", false},
		{"NoErrno", errors.New("something odd at " + path), actions.EStorage, prefix, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := commitError(tc.err)
			if got := actions.ErrorCode(err); got != tc.code {
				t.Errorf("code = %q, want %q", got, tc.code)
			}
			if got := actions.ErrorMessage(err); got != tc.message {
				t.Errorf("message = %q, want %q", got, tc.message)
			}
			if !actions.IsStorageFailure(err) {
				t.Errorf("IsStorageFailure(%v) = false", err)
			}
			if !errors.Is(err, tc.err) {
				t.Errorf("the cause %v is not in the chain of %v", tc.err, err)
			}
			if tc.wantNoSp != errors.Is(err, syscall.ENOSPC) {
				t.Errorf("errors.Is(ENOSPC) = %v", !tc.wantNoSp)
			}
		})
	}
}

// logLines is a slog handler's output, safe to read while a writer logs.
type logLines struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logLines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

// grep returns the lines holding s.
func (l *logLines) grep(s string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, line := range strings.Split(l.buf.String(), "\n") {
		if strings.Contains(line, s) {
			out = append(out, line)
		}
	}
	return out
}

func (l *logLines) logger() *slog.Logger { return slog.New(slog.NewTextHandler(l, nil)) }

// fakeClock is a clock the test moves.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func TestWriteFailuresLogOncePerInterval(t *testing.T) {
	var logs logLines
	clock := &fakeClock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	h := &writeHealth{log: logs.logger(), now: clock.now}
	full := commitError(&os.PathError{Op: "write", Path: "x", Err: syscall.ENOSPC})

	for range 1000 {
		h.record(full)
	}
	if got := logs.grep("store writes failing"); len(got) != 1 || !strings.Contains(got[0], "failed=1 ") {
		t.Fatalf("after 1000 failures at once: failing lines %q, want one with failed=1", got)
	}
	clock.add(faultLogInterval)
	h.record(full)
	if got := logs.grep("store writes failing"); len(got) != 2 || !strings.Contains(got[1], "failed=1000 ") {
		t.Fatalf("one interval later: failing lines %q, want a second with failed=1000", got)
	}
	h.record(nil)
	h.record(nil)
	if got := logs.grep("store writes recovered"); len(got) != 1 || !strings.Contains(got[0], "failed=1001 ") {
		t.Fatalf("after recovery: recovered lines %q, want one with failed=1001", got)
	}

	// A disk at the edge of full: failures and successes alternate. Within
	// one interval of the last line nothing more is logged; the next line
	// counts them.
	clock.add(time.Second)
	for range 100 {
		h.record(full)
		h.record(nil)
	}
	if got := len(logs.grep("store writes")); got != 3 {
		t.Fatalf("flapping within an interval logged %d lines in all, want still 3:\n%s", got, logs.buf.String())
	}
	clock.add(faultLogInterval)
	h.record(full)
	if got := logs.grep("store writes failing"); len(got) != 3 || !strings.Contains(got[2], "failed=101 ") {
		t.Fatalf("next interval: failing lines %q, want a third with failed=101", got)
	}
}

// mountTmpfs mounts a tmpfs of size bytes at a new temporary directory,
// unmounted at the end of the test (after the cleanups registered later,
// such as closing a store in it). It skips the test when not root.
func mountTmpfs(t *testing.T, size int) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the full-disk test mounts a tmpfs and needs root (CI runs it as root)")
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+strconv.Itoa(size), "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs (%v: %s); the full-disk test needs one", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	return dir
}

// fill writes a file at path until the file system is full.
func fill(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 64<<10)
	for {
		if _, err := f.Write(chunk); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("filling %s: %v, want ENOSPC", path, err)
			}
			break
		}
	}
	// The last partial chunk may have left a few bytes: use them up.
	for {
		if _, err := f.Write(chunk[:1]); err != nil {
			return
		}
	}
}

// TestWriteOnFullDiskFailsAndRecovers fills the file system under a real
// store: a write that cannot commit returns EStorageFull with a readable
// message, keeps nothing of itself, makes WriteFault report the fault (one
// log line, not one per write); once the filler is deleted WriteFault's
// probe commits with no other write coming, writes commit again, the file
// passes bbolt's check and everything committed before is there, also
// after reopening.
func TestWriteOnFullDiskFailsAndRecovers(t *testing.T) {
	dir := mountTmpfs(t, 4<<20)
	path := filepath.Join(dir, "gatehouse.db")
	var logs logLines
	db, err := OpenWith(path, Options{Logger: logs.logger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	clock := &fakeClock{t: time.Now()}
	db.health.now = clock.now // before any write reaches the writer

	put := func(name string, size int) error {
		return db.Update(func(tx actions.Tx) error {
			return tx.PutSetting(name, bytes.Repeat([]byte{'x'}, size))
		})
	}
	if err := put("before", 1000); err != nil {
		t.Fatalf("write before filling: %v", err)
	}
	filler := filepath.Join(dir, "filler")
	fill(t, filler)

	// Writes that fit in pages the file already has may still commit;
	// 64 KiB values need new ones.
	var failed error
	var committed []string
	for i := 0; i < 100 && failed == nil; i++ {
		name := "big" + strconv.Itoa(i)
		if err := put(name, 64<<10); err != nil {
			failed = err
			break
		}
		committed = append(committed, name)
	}
	if failed == nil {
		t.Fatal("100 writes of 64 KiB on a full 4 MiB file system all committed")
	}
	const want = "the server cannot write to its data file: no space left on device"
	if code, msg := actions.ErrorCode(failed), actions.ErrorMessage(failed); code != actions.EStorageFull || msg != want {
		t.Fatalf("failed write: code %q message %q (%v), want %q %q", code, msg, failed, actions.EStorageFull, want)
	}
	for range 5 {
		if err := put("more", 64<<10); actions.ErrorCode(err) != actions.EStorageFull {
			t.Fatalf("another write while full: %v, want %s", err, actions.EStorageFull)
		}
	}
	t.Logf("failed after %d commits: %v", len(committed), failed)
	fault := db.WriteFault()
	if actions.ErrorCode(fault) != actions.EStorageFull || !strings.HasPrefix(actions.ErrorMessage(fault), want+" (writes failing since ") {
		t.Fatalf("WriteFault while full = %v", fault)
	}
	if got := logs.grep("store writes failing"); len(got) != 1 {
		t.Fatalf("failing lines while full: %q, want exactly one", got)
	}
	if err := db.View(func(tx actions.Tx) error { _, err := tx.Setting("more"); return err }); actions.ErrorCode(err) != actions.ENotFound {
		t.Fatalf("a write that failed to commit left its value: %v", err)
	}

	// A probe while the disk is still full fails and changes nothing.
	clock.add(probeInterval)
	if err := db.WriteFault(); actions.ErrorCode(err) != actions.EStorageFull {
		t.Fatalf("WriteFault after a probe on the full disk = %v", err)
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	// No write comes: within probeInterval of the last probe the fault
	// stays; after it the probe finds room and commits.
	if err := db.WriteFault(); err == nil {
		t.Fatal("WriteFault probed again within probeInterval")
	}
	clock.add(probeInterval)
	if err := db.WriteFault(); err != nil {
		t.Fatalf("WriteFault once the probe could commit = %v", err)
	}
	if got := logs.grep("store writes recovered"); len(got) != 1 {
		t.Fatalf("recovered lines: %q, want exactly one", got)
	}
	if err := put("after", 64<<10); err != nil {
		t.Fatalf("write after space returned: %v", err)
	}
	if got := logs.grep("store writes"); len(got) != 2 {
		t.Fatalf("log lines about writes: %q, want one failing and one recovered", got)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".write-probe-*")); len(left) > 0 {
		t.Fatalf("probe files left behind: %q", left)
	}
	check := func(db *DB) {
		t.Helper()
		err := db.bolt.View(func(tx *bbolt.Tx) error {
			for err := range tx.Check() {
				return err
			}
			return nil
		})
		if err != nil {
			t.Fatalf("bbolt check after the full disk: %v", err)
		}
		for _, name := range append([]string{"before", "after"}, committed...) {
			if err := db.View(func(tx actions.Tx) error { _, err := tx.Setting(name); return err }); err != nil {
				t.Fatalf("setting %s committed before: %v", name, err)
			}
		}
	}
	check(db)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db, err = Open(path)
	if err != nil {
		t.Fatalf("reopen after the full disk: %v", err)
	}
	check(db)
}
