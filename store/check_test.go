package store_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.etcd.io/bbolt"

	"gatehouse/actions"
	"gatehouse/store"
)

// putPictures stores n pictures of size bytes and returns their ids.
func putPictures(tb testing.TB, db *store.DB, n, size int) []string {
	tb.Helper()
	var ids []string
	for i := 0; i < n; i++ {
		mustUpdate(tb, db, func(tx actions.Tx) error {
			e := actions.Event{Time: t0, Type: "stranger", Device: "cam"}
			if err := tx.AppendEvent(&e); err != nil {
				return err
			}
			ids = append(ids, e.ID)
			pic := bytes.Repeat([]byte{byte(i)}, size)
			return tx.PutPicture(actions.Stranger{ID: e.ID, Device: "cam", Time: t0, Type: "image/webp"}, pic)
		})
	}
	return ids
}

// sample writes a closed store of a few hundred KiB and returns its path and
// bytes.
func sample(t *testing.T) (string, []byte) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "gatehouse.db")
	db, err := store.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	fill(t, db)
	putPictures(t, db, 40, 6000)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return path, data
}

// metaOf reads the page size and the root and freelist page ids of the
// newest meta page of the bbolt file b (bbolt's layout, machine byte
// order).
func metaOf(b []byte) (pageSize int, root, freelist, pgid uint64) {
	ne := binary.NativeEndian
	m := b[16:]
	pageSize = int(ne.Uint32(m[8:]))
	if m1 := b[pageSize+16:]; ne.Uint64(m1[48:]) > ne.Uint64(m[48:]) {
		m = m1
	}
	return pageSize, ne.Uint64(m[16:]), ne.Uint64(m[32:]), ne.Uint64(m[40:])
}

// wantRefused checks err is one line that says the file is damaged and how
// to restore, with no trace of a panic.
func wantRefused(t *testing.T, err error, want string) {
	t.Helper()
	if err == nil {
		t.Fatal("opened a damaged file")
	}
	msg := err.Error()
	if !errors.Is(err, store.ErrDamaged) {
		t.Errorf("err %q does not match ErrDamaged", msg)
	}
	if strings.Contains(msg, "\n") || strings.Contains(msg, "goroutine") || strings.Contains(msg, "panic") {
		t.Errorf("err is not one plain line: %q", msg)
	}
	if !strings.Contains(msg, "restore a backup with: gatehouse restore --data ") {
		t.Errorf("err %q does not say how to restore", msg)
	}
	if !strings.Contains(msg, want) {
		t.Errorf("err %q, want it to contain %q", msg, want)
	}
}

func TestOpenDamaged(t *testing.T) {
	_, good := sample(t)
	ps, root, freelist, pgid := metaOf(good)
	if int64(pgid)*int64(ps) > int64(len(good)) || pgid < 20 {
		t.Fatalf("sample too small: %d pages of %d in %d bytes", pgid, ps, len(good))
	}
	random := func(n int) []byte {
		b := make([]byte, n)
		r := rand.New(rand.NewPCG(1, uint64(n)))
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		return b
	}
	overwrite := func(pages ...uint64) []byte {
		b := bytes.Clone(good)
		for _, p := range pages {
			copy(b[int(p)*ps:], random(ps))
		}
		return b
	}
	inUse := int(pgid) * ps
	cases := []struct {
		name string
		data []byte
		want string
	}{
		{"Empty", nil, "empty file: 0 bytes"},
		{"Truncated100", good[:100], "truncated: 100 bytes"},
		{"TruncatedOnePage", good[:ps], "truncated"},
		{"TruncatedThreePages", good[:3*ps], "truncated"},
		{"TruncatedFourPages", good[:4*ps], "truncated"},
		{"TruncatedHalf", good[:inUse/2/ps*ps], "truncated"},
		{"TruncatedMidPage", good[:inUse-ps/2], "truncated"},
		{"TruncatedLastPage", good[:inUse-ps], "truncated"},
		{"BothMetaPages", overwrite(0, 1), "damaged or not a Gatehouse data file (no bbolt meta page"},
		{"RootPage", overwrite(root), "page"},
		{"FreelistPage", overwrite(freelist), "freelist"},
		{"AllButMeta", overwrite(func() (p []uint64) {
			for i := uint64(2); i < pgid; i++ {
				p = append(p, i)
			}
			return p
		}()...), "page"},
		{"RandomBytes", random(len(good)), "damaged or not a Gatehouse data file (no bbolt meta page"},
		{"Text", bytes.Repeat([]byte("not a database\n"), 1000), "damaged or not a Gatehouse data file (no bbolt meta page"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "gatehouse.db")
			if err := os.WriteFile(p, tc.data, 0o600); err != nil {
				t.Fatal(err)
			}
			db, err := store.Open(p)
			if err == nil {
				db.Close()
			}
			wantRefused(t, err, tc.want)
			t.Log(err)
			if !strings.HasPrefix(err.Error(), "data file "+p+" ") {
				t.Errorf("err %q does not start with the file's path", err)
			}
			// The file is left as it was: an empty file is not made a new
			// store, a damaged one is not "repaired".
			if after, _ := os.ReadFile(p); !bytes.Equal(after, tc.data) {
				t.Errorf("refused file changed from %d to %d bytes", len(tc.data), len(after))
			}
		})
	}
	t.Run("OneMetaPage", func(t *testing.T) {
		// bbolt falls back to the other meta page (the previous commit),
		// as after a torn meta write; Open accepts it, Check reports it.
		p := filepath.Join(t.TempDir(), "gatehouse.db")
		os.WriteFile(p, overwrite(0), 0o600)
		db, err := store.Open(p)
		if err != nil {
			t.Fatalf("open with one good meta page: %v", err)
		}
		db.Close()
		os.WriteFile(p, overwrite(0), 0o600)
		r, err := store.Check(p)
		if err != nil || len(r.Problems) == 0 || !strings.Contains(r.Problems[0], "meta page 0 is invalid") {
			t.Errorf("check: %+v %v", r, err)
		}
	})
	t.Run("ForeignBolt", func(t *testing.T) {
		p := filepath.Join(t.TempDir(), "gatehouse.db")
		setForeign(t, p)
		_, err := store.Open(p)
		if !errors.Is(err, store.ErrForeign) || !strings.Contains(err.Error(), "without Gatehouse's meta bucket") {
			t.Errorf("bbolt file of another program: %v", err)
		}
	})
	t.Run("MustExist", func(t *testing.T) {
		p := filepath.Join(t.TempDir(), "gatehouse.db")
		if _, err := store.OpenWith(p, store.Options{MustExist: true}); !errors.Is(err, store.ErrNoStore) {
			t.Errorf("missing file: %v", err)
		}
		if _, err := os.Stat(p); err == nil {
			t.Error("OpenWith(MustExist) created the file")
		}
	})
}

func TestCheck(t *testing.T) {
	t.Run("OK", func(t *testing.T) {
		path, good := sample(t)
		r, err := store.Check(path)
		if err != nil || len(r.Problems) > 0 {
			t.Fatalf("check: %+v %v", r, err)
		}
		if r.Size != int64(len(good)) || r.Schema != store.SchemaVersion || r.PageSize == 0 || r.Pages < 20 {
			t.Errorf("report %+v", r)
		}
	})
	t.Run("ErrDamagedLeaf", func(t *testing.T) {
		// Damage deep inside a bucket, past what Open reads: the element
		// count of a leaf page of the strangers bucket. A page that holds
		// picture metadata may also be a freed page with stale contents,
		// which no check need see: damage each such page in turn, and the
		// live one must be found.
		path, good := sample(t)
		ps, _, _, pgid := metaOf(good)
		candidates, found := 0, false
		for p := 2; p < int(pgid) && !found; p++ {
			page := good[p*ps : (p+1)*ps]
			if binary.NativeEndian.Uint16(page[8:]) != 0x02 || !bytes.Contains(page, []byte("image/webp")) {
				continue
			}
			candidates++
			b := bytes.Clone(good)
			binary.NativeEndian.PutUint16(b[p*ps+10:], 0x7FFF)
			os.WriteFile(path, b, 0o600)
			r, err := store.Check(path)
			if err != nil {
				t.Fatalf("check of a damaged leaf: %v", err)
			}
			found = len(r.Problems) > 0 && strings.Contains(r.Problems[0], "do not fit")
		}
		if candidates == 0 {
			t.Fatal("no leaf page of the strangers bucket")
		}
		if !found {
			t.Errorf("damage to the strangers bucket's leaf pages went unseen (%d pages tried)", candidates)
		}
	})
	t.Run("ErrKeyOrder", func(t *testing.T) {
		// A fault only bbolt's own check sees: two keys swapped on a leaf.
		// As above, a page with event keys may be a freed one: damage each
		// in turn, and the live ones must be found.
		path, good := sample(t)
		ps, _, _, pgid := metaOf(good)
		candidates, found := 0, false
		for p := 2; p < int(pgid) && !found; p++ {
			page := good[p*ps : (p+1)*ps]
			if binary.NativeEndian.Uint16(page[8:]) != 0x02 || binary.NativeEndian.Uint16(page[10:]) < 3 {
				continue
			}
			// The last byte of the first key becomes 0xFF: still inside the
			// page, but no longer in order.
			pos := binary.NativeEndian.Uint32(page[16+4:])
			ksize := binary.NativeEndian.Uint32(page[16+8:])
			if ksize != 16 { // an event key: time + sequence
				continue
			}
			candidates++
			b := bytes.Clone(good)
			b[p*ps+16+int(pos)] = 0xFF
			os.WriteFile(path, b, 0o600)
			r, err := store.Check(path)
			if err != nil {
				t.Fatalf("check of keys out of order: %v", err)
			}
			found = len(r.Problems) > 0
		}
		if candidates == 0 {
			t.Fatal("no leaf page with event keys")
		}
		if !found {
			t.Errorf("keys out of order on event leaf pages went unseen (%d pages tried)", candidates)
		}
	})
	t.Run("ErrInUse", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "gatehouse.db")
		mustOpenAt(t, path)
		if _, err := store.Check(path); !errors.Is(err, store.ErrInUse) {
			t.Errorf("check of an open store: %v", err)
		}
	})
	t.Run("ErrNoStore", func(t *testing.T) {
		if _, err := store.Check(filepath.Join(t.TempDir(), "gatehouse.db")); !errors.Is(err, store.ErrNoStore) {
			t.Errorf("check of no file: %v", err)
		}
	})
}

func TestCompact(t *testing.T) {
	path := filepath.Join(t.TempDir(), "gatehouse.db")
	db, err := store.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	fill(t, db)
	ids := putPictures(t, db, 200, 20<<10)
	mustUpdate(t, db, func(tx actions.Tx) error {
		for _, id := range ids[:190] {
			if err := tx.DeletePicture(id); err != nil {
				return err
			}
		}
		return nil
	})
	t.Run("ErrInUse", func(t *testing.T) {
		if _, _, err := store.Compact(path); !errors.Is(err, store.ErrInUse) {
			t.Errorf("compact of an open store: %v", err)
		}
	})
	db.Close()

	before, after, err := store.Compact(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(path)
	if after >= before/4 || fi.Size() != after {
		t.Errorf("compact: %d → %d bytes (file now %d), want under a quarter", before, after, fi.Size())
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("compacted file mode %v", fi.Mode().Perm())
	}
	if r, err := store.Check(path); err != nil || len(r.Problems) > 0 {
		t.Errorf("check after compact: %+v %v", r, err)
	}
	if left, _ := filepath.Glob(filepath.Join(filepath.Dir(path), ".*")); len(left) > 0 {
		t.Errorf("temporary files left: %v", left)
	}
	db = mustOpenAt(t, path)
	mustView(t, db, func(tx actions.Tx) error {
		if d, err := tx.Device("door"); err != nil || d.State != "locked" {
			t.Errorf("device after compact: %+v %v", d, err)
		}
		for i, id := range ids[190:] {
			pic, err := tx.Picture(id)
			if err != nil || len(pic) != 20<<10 || pic[0] != byte(190+i) {
				t.Errorf("picture %d after compact: %d bytes, %v", 190+i, len(pic), err)
			}
		}
		if _, err := tx.Picture(ids[0]); actions.ErrorCode(err) != actions.ENotFound {
			t.Errorf("deleted picture after compact: %v", err)
		}
		return nil
	})
	// Event ids go on from where they were: bucket sequences are kept.
	var e actions.Event
	mustUpdate(t, db, func(tx actions.Tx) error {
		e = actions.Event{Time: t0, Type: "state", Device: "door"}
		return tx.AppendEvent(&e)
	})
	if e.ID <= ids[len(ids)-1] {
		t.Errorf("event id after compact %s, last before %s", e.ID, ids[len(ids)-1])
	}

	t.Run("ErrDamaged", func(t *testing.T) {
		p := filepath.Join(t.TempDir(), "gatehouse.db")
		os.WriteFile(p, make([]byte, 3*4096), 0o600)
		if _, _, err := store.Compact(p); !errors.Is(err, store.ErrDamaged) {
			t.Errorf("compact of a damaged file: %v", err)
		}
	})
}

// setForeign writes a bbolt file of another program at path.
func setForeign(t *testing.T, path string) {
	t.Helper()
	b, err := bbolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := b.Update(func(tx *bbolt.Tx) error { _, err := tx.CreateBucket([]byte("stuff")); return err }); err != nil {
		t.Fatal(err)
	}
}
