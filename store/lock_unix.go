//go:build unix

package store

import (
	"errors"
	"os"
	"syscall"
)

// errLocked is returned by tryLock when another holder has the lock.
var errLocked = errors.New("locked")

// tryLock takes the flock(2) lock bbolt takes on its file (exclusive for a
// writer, shared for a read-only open) without waiting.
func tryLock(f *os.File, exclusive bool) error {
	how := syscall.LOCK_SH
	if exclusive {
		how = syscall.LOCK_EX
	}
	err := syscall.Flock(int(f.Fd()), how|syscall.LOCK_NB)
	if errors.Is(err, syscall.EWOULDBLOCK) {
		return errLocked
	}
	return err
}

func unlock(f *os.File) { syscall.Flock(int(f.Fd()), syscall.LOCK_UN) }
