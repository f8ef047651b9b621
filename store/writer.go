package store

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.etcd.io/bbolt"

	"gatehouse/actions"
)

// maxGroup bounds how many writes share one commit.
const maxGroup = 512

// ErrClosed is returned by writes after Close.
var ErrClosed = errors.New("store is closed")

// write is one Update waiting for its commit.
type write struct {
	fn   func(actions.Tx) error
	done chan error
}

// writer commits concurrent writes together ("group commit"): while one
// commit is being synced to disk, the writes that arrive queue up, and the
// next commit takes all of them in one transaction and one fsync. A lone
// write waits for nothing but its own commit, so latency at low load is that
// of a plain Update, and throughput grows with the number of writers.
//
// Every caller still returns only after the commit that holds its write,
// so "acknowledged = committed" holds. A write whose fn fails is taken out
// and run alone, so it rolls back only itself, as with bbolt's Batch.
func (db *DB) writer() {
	defer close(db.stopped)
	for first := range db.queue {
		group := []write{first}
	fill:
		for len(group) < maxGroup {
			select {
			case w, ok := <-db.queue:
				if !ok {
					break fill
				}
				group = append(group, w)
			default:
				break fill
			}
		}
		db.commit(group)
	}
}

// commit runs group in one transaction. If a fn fails, the transaction is
// rolled back, that fn runs alone to give its caller its error, and the
// rest are committed together again. If the commit itself fails, every
// write of the group gets that failure (see commitError).
func (db *DB) commit(group []write) {
	for len(group) > 0 {
		failed := -1
		start := time.Now()
		err := db.bolt.Update(func(btx *bbolt.Tx) error {
			for i, w := range group {
				if err := safeRun(w.fn, db.tx(btx)); err != nil {
					failed = i
					return err
				}
			}
			return nil
		})
		switch {
		case failed >= 0:
			w := group[failed]
			w.done <- db.updateOne(w.fn)
			group = append(group[:failed:failed], group[failed+1:]...)
		default:
			err = db.committed(err, time.Since(start), len(group))
			for _, w := range group {
				w.done <- err // nil, or the commit's own error for all
			}
			return
		}
	}
}

// updateOne runs fn in a transaction of its own. An error of fn is
// returned as it is; a failed commit is classified and recorded.
func (db *DB) updateOne(fn func(actions.Tx) error) error {
	ran := false
	start := time.Now()
	err := db.bolt.Update(func(btx *bbolt.Tx) error {
		if err := safeRun(fn, db.tx(btx)); err != nil {
			return err
		}
		ran = true
		return nil
	})
	if !ran {
		return err
	}
	return db.committed(err, time.Since(start), 1)
}

// committed records the outcome of a commit of writes that all succeeded
// in memory and took took, and returns err classified by commitError.
func (db *DB) committed(err error, took time.Duration, writes int) error {
	if err != nil {
		err = commitError(err)
	} else {
		db.onCommit(took, writes)
	}
	db.health.record(err)
	return err
}

// commitError turns the error of a failed commit into an *actions.Error
// a client may read: EStorageFull when the disk is full, over quota or the
// file over its size limit, EStorage for any other write failure (an I/O
// error, a read-only file system). The client sees the errno's text, never
// the file's path; the whole error stays in the chain for the log.
//
// A failed bbolt commit rolls back: the pages it wrote are free space the
// last good meta page does not point to, so the file stays consistent and
// the next commit succeeds once the disk has room again.
func commitError(err error) error {
	code, reason := actions.EStorage, ""
	var errno syscall.Errno
	if errors.As(err, &errno) {
		reason = errno.Error()
	}
	switch {
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT), errors.Is(err, syscall.EFBIG):
		code = actions.EStorageFull
	case strings.Contains(err.Error(), syscall.ENOSPC.Error()):
		// bbolt reports a failure to grow the file with %s, which drops
		// the errno from the chain but keeps its text.
		code, reason = actions.EStorageFull, syscall.ENOSPC.Error()
	}
	msg := "the server cannot write to its data file"
	if reason != "" {
		msg += ": " + reason
	}
	return fmt.Errorf("%w (commit: %w)", actions.Errorf(code, "%s", msg), err)
}

// faultLogInterval is the least time between two log lines about failing
// writes: a full disk under load fails thousands of writes a minute, and
// each line carries the count since the one before.
const faultLogInterval = 10 * time.Second

// writeHealth remembers whether the last commit failed, for readiness
// (WriteFault) and for logging failures once per interval rather than once
// per write. A successful commit while nothing is failing costs one atomic
// load.
type writeHealth struct {
	log     *slog.Logger     // nil: discard
	now     func() time.Time // nil: time.Now
	failing atomic.Bool      // the last commit failed

	mu       sync.Mutex
	err      error     // the last failed commit's error
	since    time.Time // when the current fault began
	failed   int       // failed commits since then
	unlogged int       // failed commits not yet counted in a log line
	lastLog  time.Time // of the last "failing" line
	told     bool      // a "failing" line was logged during this fault
	lastTry  time.Time // of the last failed commit or probe
}

// record notes the outcome of one commit (err nil: committed).
func (h *writeHealth) record(err error) {
	if err == nil && !h.failing.Load() {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	now := h.clock()
	log := h.log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err != nil {
		if !h.failing.Load() {
			h.failing.Store(true)
			h.since, h.failed = now, 0
		}
		h.err, h.lastTry = err, now
		h.failed++
		h.unlogged++
		if h.lastLog.IsZero() || now.Sub(h.lastLog) >= faultLogInterval {
			log.Error("store writes failing: nothing of these writes was saved", "error", err,
				"failed", h.unlogged, "since", h.since)
			h.unlogged, h.lastLog, h.told = 0, now, true
		}
		return
	}
	if !h.failing.Load() {
		return
	}
	h.failing.Store(false)
	// A fault that began and ended within the interval of the previous
	// line is told by the next line, so that a disk at the edge of full
	// cannot log a pair of lines per write.
	if h.told || now.Sub(h.lastLog) >= faultLogInterval {
		log.Info("store writes recovered", "failing_for", now.Sub(h.since), "failed", h.failed,
			"last_error", h.err)
		h.unlogged, h.told = 0, false
	}
}

// WriteFault returns nil when the last commit succeeded (or none was
// tried yet), and otherwise an *actions.Error (EStorageFull or EStorage)
// saying what fails and since when. Readiness reports it: the server is
// unready until a commit succeeds again.
//
// So that a quiet server (or one a load balancer stopped sending requests
// to because it is unready) recovers by itself, WriteFault probes while
// writes fail and no write failed for probeInterval: it writes and syncs a
// small temporary file next to the data file and, if the file system took
// it, commits an empty transaction, whose success ends the fault.
func (db *DB) WriteFault() error {
	h := &db.health
	if !h.failing.Load() {
		return nil
	}
	if h.probeDue() {
		db.probe()
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.failing.Load() {
		return nil
	}
	return actions.Errorf(actions.ErrorCode(h.err), "%s (writes failing since %s, %d failed)",
		actions.ErrorMessage(h.err), h.since.UTC().Format(time.RFC3339), h.failed)
}

// probeInterval is the least time between a failed write and a probe, and
// between two probes.
const probeInterval = 5 * time.Second

// probeSize is what a probe writes: more than the pages a commit usually
// adds, so that a disk with room for a probe has room for writes.
const probeSize = 64 << 10

// probeDue reports whether a probe should run now, and if so claims it.
func (h *writeHealth) probeDue() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	now := h.clock()
	if !h.failing.Load() || now.Sub(h.lastTry) < probeInterval {
		return false
	}
	h.lastTry = now
	return true
}

func (h *writeHealth) clock() time.Time {
	if h.now != nil {
		return h.now()
	}
	return time.Now()
}

// probe tests whether the file system takes writes again and, if it
// does, commits an empty transaction (bbolt still writes its freelist and
// meta page), recorded like any other commit. A failed file write is not
// counted as a failed commit.
func (db *DB) probe() {
	f, err := os.CreateTemp(filepath.Dir(db.bolt.Path()), ".write-probe-*")
	if err != nil {
		return
	}
	_, err = f.Write(make([]byte, probeSize))
	if err == nil {
		err = f.Sync()
	}
	f.Close()
	os.Remove(f.Name())
	if err != nil {
		return
	}
	_ = db.Update(func(actions.Tx) error { return nil })
}

// safeRun runs fn, turning a panic into an error so one bad write cannot
// take the writer down with every caller waiting on it.
func safeRun(fn func(actions.Tx) error, t *tx) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("store write panicked: %v", r)
		}
	}()
	return fn(t)
}
