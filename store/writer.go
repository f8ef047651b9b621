package store

import (
	"errors"
	"fmt"

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
// rest are committed together again.
func (db *DB) commit(group []write) {
	for len(group) > 0 {
		failed := -1
		err := db.bolt.Update(func(btx *bbolt.Tx) error {
			for i, w := range group {
				if err := safeRun(w.fn, btx); err != nil {
					failed = i
					return err
				}
			}
			return nil
		})
		switch {
		case failed >= 0:
			w := group[failed]
			w.done <- db.bolt.Update(func(btx *bbolt.Tx) error { return safeRun(w.fn, btx) })
			group = append(group[:failed:failed], group[failed+1:]...)
		default:
			for _, w := range group {
				w.done <- err // nil, or the commit's own error for all
			}
			return
		}
	}
}

// safeRun runs fn, turning a panic into an error so one bad write cannot
// take the writer down with every caller waiting on it.
func safeRun(fn func(actions.Tx) error, btx *bbolt.Tx) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("store write panicked: %v", r)
		}
	}()
	return fn(&tx{btx})
}
