package store_test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/bbolt"

	"gatehouse/actions"
	"gatehouse/store"
)

// fill writes a little of everything.
func fill(tb testing.TB, db *store.DB) {
	tb.Helper()
	mustUpdate(tb, db, func(tx actions.Tx) error {
		if err := tx.PutDevice(actions.Device{ID: "door", Kind: "lock", Name: "Front <door> & co", State: "locked", Created: t0, SecretHash: []byte("0123456789abcdef0123456789abcdef")}); err != nil {
			return err
		}
		if err := tx.PutUser(actions.User{Name: "admin", Role: "admin", Created: t0}); err != nil {
			return err
		}
		if err := tx.PutToken(actions.Token{ID: "t1", User: "admin", Name: "first", Created: t0, Hash: actions.Hash("secret")}); err != nil {
			return err
		}
		if err := tx.PutGrant(actions.Grant{ID: "g1", User: "admin", Device: "door", Weekdays: []string{"tue"}, Hours: "09:00-12:00", Created: t0}); err != nil {
			return err
		}
		if err := tx.PutPairing(actions.Pairing{Kind: "lock", User: "admin", Created: t0, Expires: t0.Add(time.Hour), Hash: actions.Hash("CODE")}); err != nil {
			return err
		}
		if err := tx.PutCommand(actions.Command{ID: "c1", Device: "door", Verb: "lock", Status: "sent", Created: t0, NotAfter: t0.Add(time.Minute)}); err != nil {
			return err
		}
		if err := tx.PutCommand(actions.Command{ID: "c2", Device: "door", Verb: "unlock", Status: "done", State: "unlocked", Created: t0}); err != nil {
			return err
		}
		for i := 0; i < 5; i++ {
			if err := tx.AppendEvent(&actions.Event{Time: t0.Add(time.Duration(i) * time.Second), Type: "state", Device: "door", Detail: fmt.Sprint(i)}); err != nil {
				return err
			}
		}
		return nil
	})
}

func TestGroupedWrites(t *testing.T) {
	db := mustOpen(t)
	t.Run("AllCommitted", func(t *testing.T) {
		var wg sync.WaitGroup
		for i := 0; i < 200; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				err := db.Update(func(tx actions.Tx) error {
					return tx.AppendEvent(&actions.Event{Time: t0, Type: "state", Device: fmt.Sprint("d", i)})
				})
				if err != nil {
					t.Errorf("update %d: %v", i, err)
				}
			}()
		}
		wg.Wait()
		events, _ := eventsOf(t, db, actions.EventQuery{Limit: 1000})
		if len(events) != 200 {
			t.Errorf("%d events, want 200", len(events))
		}
	})
	t.Run("FailureIsolated", func(t *testing.T) {
		var wg sync.WaitGroup
		errs := make([]error, 50)
		for i := range errs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[i] = db.Update(func(tx actions.Tx) error {
					if err := tx.PutUser(actions.User{Name: fmt.Sprint("u", i), Role: "member", Created: t0}); err != nil {
						return err
					}
					switch i % 10 {
					case 3:
						return actions.Errorf(actions.EConflict, "no %d", i)
					case 7:
						panic("boom")
					}
					return nil
				})
			}()
		}
		wg.Wait()
		for i, err := range errs {
			want := i%10 != 3 && i%10 != 7
			if (err == nil) != want {
				t.Errorf("update %d: %v", i, err)
			}
			var got error
			db.View(func(tx actions.Tx) error { _, got = tx.User(fmt.Sprint("u", i)); return nil })
			if (got == nil) != want {
				t.Errorf("user u%d stored = %v, want %v", i, got == nil, want)
			}
		}
	})
	t.Run("ErrClosed", func(t *testing.T) {
		db2 := mustOpenAt(t, filepath.Join(t.TempDir(), "x.db"))
		db2.Close()
		if err := db2.Update(func(actions.Tx) error { return nil }); !errors.Is(err, store.ErrClosed) {
			t.Errorf("update after close: %v", err)
		}
	})
}

func TestSnapshotWhileWriting(t *testing.T) {
	db := mustOpen(t)
	fill(t, db)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				db.Update(func(tx actions.Tx) error {
					return tx.AppendEvent(&actions.Event{Time: time.Now(), Type: "state", Device: "door", Detail: "x"})
				})
			}
		}()
	}
	var buf bytes.Buffer
	var size int64
	n, err := db.Snapshot(&buf, func(s int64) { size = s })
	close(stop)
	wg.Wait()
	if err != nil || n != size || int64(buf.Len()) != n {
		t.Fatalf("snapshot: n=%d size=%d len=%d err=%v", n, size, buf.Len(), err)
	}
	path := filepath.Join(t.TempDir(), "snap.db")
	os.WriteFile(path, buf.Bytes(), 0o600)
	if v, err := store.Inspect(path); err != nil || v != store.SchemaVersion {
		t.Fatalf("inspect snapshot: %d %v", v, err)
	}
	snap := mustOpenAt(t, path)
	var d actions.Device
	snap.View(func(tx actions.Tx) (err error) { d, err = tx.Device("door"); return err })
	if d.State != "locked" {
		t.Errorf("snapshot device %+v", d)
	}
}

// stalledWriter is a backup client that stops reading: its first Write
// blocks until release is closed.
type stalledWriter struct {
	once    sync.Once
	stalled chan struct{} // closed when the first Write starts waiting
	release chan struct{}
	buf     bytes.Buffer
}

func (w *stalledWriter) Write(p []byte) (int, error) {
	w.once.Do(func() {
		close(w.stalled)
		<-w.release
	})
	return w.buf.Write(p)
}

// A snapshot whose reader stalls must not hold up writes. bbolt remaps
// the file when a write makes it grow, and the remap waits for every open
// read transaction, so a snapshot streamed from inside one froze every
// write behind a slow backup client.
func TestSnapshotStalledReaderDoesNotBlockWrites(t *testing.T) {
	path := filepath.Join(t.TempDir(), "gatehouse.db")
	db := mustOpenAt(t, path)
	fill(t, db)
	putPictures(t, db, 4, 64<<10)
	size := func() int64 {
		fi, err := os.Stat(path)
		if err != nil {
			t.Error(err)
			return 1 << 62
		}
		return fi.Size()
	}
	w := &stalledWriter{stalled: make(chan struct{}), release: make(chan struct{})}
	snap := make(chan error, 1)
	go func() {
		_, err := db.Snapshot(w, nil)
		snap <- err
	}()
	select {
	case <-w.stalled:
	case err := <-snap:
		t.Fatalf("snapshot ended before writing: %v", err)
	}
	before := w.buf.Len()

	// While the reader stalls, writes more than double the file, so bbolt
	// must remap it (its map is at most twice the file's size).
	start := size()
	wrote := make(chan struct{})
	go func() {
		defer close(wrote)
		for i := 0; size() <= 2*start; i++ {
			err := db.Update(func(tx actions.Tx) error {
				e := actions.Event{Time: t0, Type: "stranger", Device: "cam"}
				if err := tx.AppendEvent(&e); err != nil {
					return err
				}
				return tx.PutPicture(actions.Stranger{ID: e.ID, Device: "cam", Time: t0, Type: "image/webp"}, make([]byte, 256<<10))
			})
			if err != nil {
				t.Error(err)
				return
			}
		}
	}()
	select {
	case <-wrote:
	case <-time.After(time.Minute):
		close(w.release)
		<-wrote
		t.Fatal("writes waited for the stalled snapshot reader")
	}
	if w.buf.Len() != before {
		t.Fatal("the reader was not stalled while the writes went on")
	}

	// The snapshot then completes with the state from its start.
	close(w.release)
	if err := <-snap; err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "snap.db")
	os.WriteFile(p, w.buf.Bytes(), 0o600)
	if r, err := store.Check(p); err != nil || len(r.Problems) > 0 {
		t.Fatalf("check of the snapshot: %+v %v", r, err)
	}
	copyDB := mustOpenAt(t, p)
	mustView(t, copyDB, func(tx actions.Tx) error {
		all, err := tx.AllStrangers()
		if err != nil || len(all) != 4 {
			t.Errorf("pictures in the snapshot: %d %v, want the 4 from its start", len(all), err)
		}
		return nil
	})
	if left, _ := filepath.Glob(filepath.Join(filepath.Dir(path), ".gatehouse-backup-*")); len(left) > 0 {
		t.Errorf("temporary snapshot left behind: %v", left)
	}
}

func TestInspect(t *testing.T) {
	dir := t.TempDir()
	t.Run("ErrForeignText", func(t *testing.T) {
		p := filepath.Join(dir, "text")
		os.WriteFile(p, bytes.Repeat([]byte("not a database "), 1000), 0o600)
		if _, err := store.Inspect(p); !errors.Is(err, store.ErrForeign) {
			t.Errorf("text file: %v", err)
		}
	})
	t.Run("ErrForeignBolt", func(t *testing.T) {
		p := filepath.Join(dir, "other.db")
		b, _ := bbolt.Open(p, 0o600, nil)
		b.Update(func(tx *bbolt.Tx) error { _, err := tx.CreateBucket([]byte("stuff")); return err })
		b.Close()
		if _, err := store.Inspect(p); !errors.Is(err, store.ErrForeign) {
			t.Errorf("other bolt file: %v", err)
		}
	})
	t.Run("ErrNewer", func(t *testing.T) {
		p := filepath.Join(dir, "newer.db")
		db, _ := store.Open(p)
		db.Close()
		setSchema(t, p, store.SchemaVersion+1)
		if _, err := store.Inspect(p); err == nil || !strings.Contains(err.Error(), "schema version") {
			t.Errorf("newer schema: %v", err)
		}
	})
}

func setSchema(t *testing.T, path string, v int) {
	t.Helper()
	b, err := bbolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	b.Update(func(tx *bbolt.Tx) error {
		return tx.Bucket([]byte("meta")).Put([]byte("schema_version"), []byte{0, 0, 0, 0, 0, 0, 0, byte(v)})
	})
}

func TestRestore(t *testing.T) {
	dir := t.TempDir()
	live := filepath.Join(dir, "gatehouse.db")
	backup := filepath.Join(t.TempDir(), "backup.db")
	db, _ := store.Open(live)
	fill(t, db)
	if err := db.BackupFile(backup); err != nil {
		t.Fatal(err)
	}
	t.Run("ErrServerRunning", func(t *testing.T) {
		if _, err := store.Restore(live, backup); !errors.Is(err, store.ErrInUse) {
			t.Errorf("restore while open: %v", err)
		}
	})
	// Change the live file after the backup, then restore.
	db.Update(func(tx actions.Tx) error { return tx.DeleteDevice("door") })
	db.Close()
	t.Run("OK", func(t *testing.T) {
		kept, err := store.Restore(live, backup)
		if err != nil {
			t.Fatal(err)
		}
		db := mustOpenAt(t, live)
		if err := db.View(func(tx actions.Tx) error { _, err := tx.Device("door"); return err }); err != nil {
			t.Errorf("restored file lacks the device: %v", err)
		}
		old := mustOpenAt(t, kept)
		if err := old.View(func(tx actions.Tx) error { _, err := tx.Device("door"); return err }); actions.ErrorCode(err) != actions.ENotFound {
			t.Errorf("kept file is not the previous one: %v", err)
		}
	})
	t.Run("ErrNewer", func(t *testing.T) {
		p := filepath.Join(t.TempDir(), "newer.db")
		os.WriteFile(p, mustRead(t, backup), 0o600)
		setSchema(t, p, store.SchemaVersion+1)
		if _, err := store.Restore(live, p); err == nil || !strings.Contains(err.Error(), "newer than this binary") || errors.Is(err, store.ErrDamaged) {
			t.Errorf("restore of a newer schema: %v", err)
		}
	})
	t.Run("ErrDamaged", func(t *testing.T) {
		p := filepath.Join(t.TempDir(), "cut.db")
		os.WriteFile(p, mustRead(t, backup)[:3*4096], 0o600)
		before := mustRead(t, live)
		_, err := store.Restore(live, p)
		if !errors.Is(err, store.ErrDamaged) || !strings.Contains(err.Error(), "backup "+p+" is damaged (truncated") {
			t.Errorf("restore of a truncated backup: %v", err)
		}
		if !bytes.Equal(before, mustRead(t, live)) {
			t.Error("a refused restore changed the live file")
		}
	})
	t.Run("ErrForeign", func(t *testing.T) {
		p := filepath.Join(t.TempDir(), "junk")
		os.WriteFile(p, []byte("hello"), 0o600)
		before, _ := os.ReadFile(live)
		if _, err := store.Restore(live, p); err == nil {
			t.Error("restored a junk file")
		}
		if after, _ := os.ReadFile(live); !bytes.Equal(before, after) {
			t.Error("a refused restore changed the live file")
		}
	})
}

func TestExportImport(t *testing.T) {
	db := mustOpen(t)
	fill(t, db)
	var first bytes.Buffer
	if err := db.Export(&first); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "gatehouse.db")
	if err := store.Import(path, bytes.NewReader(first.Bytes())); err != nil {
		t.Fatal(err)
	}
	imported := mustOpenAt(t, path)
	var second bytes.Buffer
	if err := imported.Export(&second); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(first.Bytes(), second.Bytes()) {
		t.Errorf("export → import → export differs:\n%s\n---\n%s", first.String(), second.String())
	}
	// Everything works on the imported file: tokens by hash, pending,
	// event order and the next event id.
	imported.View(func(tx actions.Tx) error {
		if tk, err := tx.TokenByHash(actions.Hash("secret")); err != nil || tk.ID != "t1" {
			t.Errorf("token by hash: %+v %v", tk, err)
		}
		if p, err := tx.PendingCommands(); err != nil || len(p) != 1 || p[0].ID != "c1" {
			t.Errorf("pending %+v %v", p, err)
		}
		return nil
	})
	appendEvents(t, imported, actions.Event{Time: t0.Add(time.Hour), Type: "state", Detail: "new"})
	if ev, _ := eventsOf(t, imported, actions.EventQuery{Limit: 10}); len(ev) != 6 || ev[0].Detail != "new" {
		t.Errorf("events after import %+v", ev)
	}

	bad := func(name, from, to string) {
		t.Run(name, func(t *testing.T) {
			in := strings.Replace(first.String(), from, to, 1)
			if in == first.String() {
				t.Fatalf("%q not in the export", from)
			}
			p := filepath.Join(t.TempDir(), "gatehouse.db")
			if err := store.Import(p, strings.NewReader(in)); err == nil {
				t.Error("imported")
			}
			if _, err := os.Stat(p); !os.IsNotExist(err) {
				t.Errorf("a refused import left a file: %v", err)
			}
		})
	}
	bad("ErrFormat", `"gatehouse-export"`, `"something-else"`)
	bad("ErrNewerSchema", fmt.Sprintf(`"schema": %d`, store.SchemaVersion), `"schema": 99`)
	bad("ErrUnknownBucket", `"name": "grants"`, `"name": "grunts"`)
	bad("ErrBadRecord", `"role": "admin"`, `"role": "admin", "extra": 1`)
	bad("ErrBadHash", `"key": "`+fmt.Sprintf("%x", actions.Hash("secret")), `"key": "`+fmt.Sprintf("%x", actions.Hash("other")))
	bad("ErrNotJSON", `{`, `[`)
	t.Run("ErrExists", func(t *testing.T) {
		if err := store.Import(path, bytes.NewReader(first.Bytes())); err == nil {
			t.Error("imported over an existing file")
		}
	})
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
