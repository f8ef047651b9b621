package store_test

import (
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.etcd.io/bbolt"

	"gatehouse/actions"
	"gatehouse/store"
)

// t0 is a fixed time in UTC without a monotonic reading, so values compare
// equal after a round trip through the file.
var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

// mustOpen opens a new store in a temporary directory, closed at the end of
// the test.
func mustOpen(tb testing.TB) *store.DB {
	tb.Helper()
	return mustOpenAt(tb, filepath.Join(tb.TempDir(), "gatehouse.db"))
}

// mustOpenAt opens the store at path, closed at the end of the test.
func mustOpenAt(tb testing.TB, path string) *store.DB {
	tb.Helper()
	db, err := store.Open(path)
	if err != nil {
		tb.Fatalf("Open(%q): %v", path, err)
	}
	tb.Cleanup(func() {
		if err := db.Close(); err != nil {
			tb.Errorf("Close: %v", err)
		}
	})
	return db
}

func mustUpdate(tb testing.TB, db *store.DB, fn func(actions.Tx) error) {
	tb.Helper()
	if err := db.Update(fn); err != nil {
		tb.Fatalf("Update: %v", err)
	}
}

func mustView(tb testing.TB, db *store.DB, fn func(actions.Tx) error) {
	tb.Helper()
	if err := db.View(fn); err != nil {
		tb.Fatalf("View: %v", err)
	}
}

// equal reports whether got and want are deeply equal.
func equal(got, want any) bool { return reflect.DeepEqual(got, want) }

// ids returns the ids of events, in order.
func ids(events []actions.Event) []string {
	out := make([]string, len(events))
	for i, e := range events {
		out[i] = e.ID
	}
	return out
}

// wantCode fails tb unless err carries the application error code want.
func wantCode(tb testing.TB, err error, want string) {
	tb.Helper()
	if got := actions.ErrorCode(err); got != want {
		tb.Fatalf("error code = %q (%v), want %q", got, err, want)
	}
}

func TestOpen(t *testing.T) {
	t.Run("OK", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "gatehouse.db")
		db := mustOpenAt(t, path)
		if err := db.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}

		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := fi.Mode().Perm(), os.FileMode(0o600); got != want {
			t.Errorf("file mode = %v, want %v", got, want)
		}

		b, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		err = b.View(func(tx *bbolt.Tx) error {
			for _, name := range []string{"meta", "devices", "users", "tokens", "token_hashes", "commands", "pending", "events"} {
				if tx.Bucket([]byte(name)) == nil {
					t.Errorf("bucket %q missing", name)
				}
			}
			v := tx.Bucket([]byte("meta")).Get([]byte("schema_version"))
			if len(v) != 8 {
				t.Fatalf("schema_version = %x, want 8 bytes", v)
			}
			if got, want := binary.BigEndian.Uint64(v), uint64(store.SchemaVersion); got != want {
				t.Errorf("schema_version = %d, want %d", got, want)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	})

	t.Run("ErrInUse", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "gatehouse.db")
		mustOpenAt(t, path)

		start := time.Now()
		db, err := store.Open(path)
		if err == nil {
			db.Close()
			t.Fatal("second Open succeeded, want an error")
		}
		if elapsed := time.Since(start); elapsed > 3*time.Second {
			t.Errorf("second Open took %v, want about 1s", elapsed)
		}
		if !errors.Is(err, store.ErrInUse) {
			t.Errorf("err = %v, want ErrInUse", err)
		}
		if !strings.Contains(err.Error(), "in use by another process") {
			t.Errorf("err = %q, want it to say the file is in use", err)
		}
	})

	t.Run("ErrSchemaTooNew", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "gatehouse.db")
		b, err := bbolt.Open(path, 0o600, nil)
		if err != nil {
			t.Fatal(err)
		}
		err = b.Update(func(tx *bbolt.Tx) error {
			meta, err := tx.CreateBucket([]byte("meta"))
			if err != nil {
				return err
			}
			return meta.Put([]byte("schema_version"), binary.BigEndian.AppendUint64(nil, uint64(store.SchemaVersion)+1))
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Close(); err != nil {
			t.Fatal(err)
		}

		db, err := store.Open(path)
		if err == nil {
			db.Close()
			t.Fatal("Open succeeded on a newer schema, want an error")
		}
		if !strings.Contains(err.Error(), "newer") {
			t.Errorf("err = %q, want it to say the schema is newer", err)
		}

		// The refused file is left as it was and is not locked.
		b, err = bbolt.Open(path, 0o600, &bbolt.Options{Timeout: time.Second})
		if err != nil {
			t.Fatalf("reopen with bbolt: %v", err)
		}
		defer b.Close()
		err = b.View(func(tx *bbolt.Tx) error {
			if tx.Bucket([]byte("devices")) != nil {
				t.Error("devices bucket was created in a refused file")
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	})

	t.Run("ErrNotBolt", func(t *testing.T) {
		for _, size := range []int{100, 5000, 64 << 10} {
			path := filepath.Join(t.TempDir(), "notes.txt")
			data := []byte(strings.Repeat("this is not a database\n", size/23+1))
			if err := os.WriteFile(path, data, 0o600); err != nil {
				t.Fatal(err)
			}
			db, err := store.Open(path)
			if err == nil {
				db.Close()
				t.Fatalf("Open succeeded on a %d-byte text file, want an error", len(data))
			}
			if want := "data file " + path + " is damaged or not a Gatehouse data file"; !strings.HasPrefix(err.Error(), want) || !errors.Is(err, store.ErrForeign) {
				t.Errorf("err = %q, want it to start with %q", err, want)
			}
		}
	})
}

func TestReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "gatehouse.db")
	db, err := store.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	device := actions.Device{ID: "door", Kind: actions.KindLock, Name: "Front door", State: "locked", Created: t0, SecretHash: []byte("0123456789abcdef0123456789abcdef")}
	user := actions.User{Name: "alice", Role: actions.RoleAdmin, Created: t0}
	token := actions.Token{ID: "tok1", User: "alice", Name: "phone", Created: t0, Hash: []byte("hash-of-token-1")}
	command := actions.Command{ID: "cmd1", Device: "door", Verb: "unlock", Status: actions.StatusSent, Created: t0, NotAfter: t0.Add(time.Minute)}
	var first actions.Event
	mustUpdate(t, db, func(tx actions.Tx) error {
		first = actions.Event{Time: t0, Type: actions.EventCommand, Device: "door"}
		return errors.Join(
			tx.PutDevice(device), tx.PutUser(user), tx.PutToken(token),
			tx.PutCommand(command), tx.AppendEvent(&first),
		)
	})
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	db = mustOpenAt(t, path)
	var second actions.Event
	mustUpdate(t, db, func(tx actions.Tx) error {
		// Same time as the first: the sequence must carry on after a
		// reopen, or this event would take the first one's key.
		second = actions.Event{Time: t0, Type: actions.EventAck, Device: "door"}
		return tx.AppendEvent(&second)
	})
	mustView(t, db, func(tx actions.Tx) error {
		if got, err := tx.Device("door"); err != nil || !equal(got, device) {
			t.Errorf("Device = %+v, %v; want %+v", got, err, device)
		}
		if got, err := tx.User("alice"); err != nil || got != user {
			t.Errorf("User = %+v, %v; want %+v", got, err, user)
		}
		if got, err := tx.TokenByHash(token.Hash); err != nil || !equal(got, token) {
			t.Errorf("TokenByHash = %+v, %v; want %+v", got, err, token)
		}
		if got, err := tx.PendingCommands(); err != nil || !equal(got, []actions.Command{command}) {
			t.Errorf("PendingCommands = %+v, %v; want [%+v]", got, err, command)
		}
		events, next, err := tx.Events(actions.EventQuery{})
		if err != nil {
			t.Fatal(err)
		}
		if got, want := ids(events), []string{second.ID, first.ID}; !equal(got, want) || next != "" {
			t.Errorf("Events = %v, %q; want %v, \"\"", got, next, want)
		}
		return nil
	})
}

func TestUpdate(t *testing.T) {
	t.Run("Rollback", func(t *testing.T) {
		db := mustOpen(t)
		boom := errors.New("boom")
		err := db.Update(func(tx actions.Tx) error {
			if err := tx.PutDevice(actions.Device{ID: "door", Kind: actions.KindLock}); err != nil {
				return err
			}
			if err := tx.PutCommand(actions.Command{ID: "cmd1", Device: "door", Status: actions.StatusSent}); err != nil {
				return err
			}
			if err := tx.AppendEvent(&actions.Event{Time: t0, Type: actions.EventCommand}); err != nil {
				return err
			}
			return boom
		})
		if !errors.Is(err, boom) {
			t.Fatalf("Update = %v, want %v", err, boom)
		}
		mustView(t, db, func(tx actions.Tx) error {
			_, err := tx.Device("door")
			wantCode(t, err, actions.ENotFound)
			_, err = tx.Command("cmd1")
			wantCode(t, err, actions.ENotFound)
			if pending, err := tx.PendingCommands(); err != nil || len(pending) != 0 {
				t.Errorf("PendingCommands = %v, %v; want none", pending, err)
			}
			if events, _, err := tx.Events(actions.EventQuery{}); err != nil || len(events) != 0 {
				t.Errorf("Events = %v, %v; want none", events, err)
			}
			return nil
		})
	})

	t.Run("ErrReadOnly", func(t *testing.T) {
		db := mustOpen(t)
		err := db.View(func(tx actions.Tx) error {
			return tx.PutDevice(actions.Device{ID: "door"})
		})
		if err == nil {
			t.Fatal("PutDevice in View succeeded, want an error")
		}
	})
}
