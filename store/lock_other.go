//go:build !unix

package store

import (
	"errors"
	"os"
)

// errLocked is returned by tryLock when another holder has the lock.
var errLocked = errors.New("locked")

// tryLock is a no-op where flock(2) does not exist: there, a server
// running on the file is detected only when bbolt itself opens it.
func tryLock(*os.File, bool) error { return nil }

func unlock(*os.File) {}
