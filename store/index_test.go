package store

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/bbolt"

	"gatehouse/actions"
)

var ixT0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

func openIx(tb testing.TB, path string) *DB {
	tb.Helper()
	db, err := Open(path)
	if err != nil {
		tb.Fatalf("Open: %v", err)
	}
	return db
}

// longID is longer than maxIndexedLen: never indexed, found by a walk.
var longID = strings.Repeat("x", maxIndexedLen+1)

// randomEvents makes n events over a few devices, types and people, with
// the odd value an index must cope with: a zero byte, an overlong id, no
// device or no person.
func randomEvents(n int, seed uint64) []actions.Event {
	r := rand.New(rand.NewPCG(seed, 1))
	devices := []string{"d0", "d1", "d2", "d3", "a", "a\x00b", longID, ""}
	types := []string{"state", "ack", "command"}
	users := []string{"", "u0", "u1"}
	out := make([]actions.Event, n)
	for i := range out {
		out[i] = actions.Event{
			// Out of order on purpose, and some at the same instant.
			Time:   ixT0.Add(time.Duration(r.IntN(n/2+1)) * time.Second),
			Device: devices[r.IntN(len(devices))],
			Type:   types[r.IntN(len(types))],
			User:   users[r.IntN(len(users))],
			Detail: fmt.Sprint(i),
		}
	}
	return out
}

func appendIx(tb testing.TB, db *DB, events []actions.Event) {
	tb.Helper()
	for len(events) > 0 {
		n := min(len(events), 20_000)
		err := db.Update(func(t actions.Tx) error {
			for i := range events[:n] {
				if err := t.AppendEvent(&events[i]); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			tb.Fatal(err)
		}
		events = events[n:]
	}
}

// checkIndexes fails unless every index holds exactly the entries a full
// scan of the log gives, and the build is finished.
func checkIndexes(tb testing.TB, db *DB, when string) {
	tb.Helper()
	err := db.bolt.View(func(btx *bbolt.Tx) error {
		if btx.Bucket(bucketMeta).Get(keyIndexBuild) != nil {
			tb.Errorf("%s: index build unfinished", when)
		}
		want := map[string]map[string]bool{}
		for _, ix := range eventIndexes {
			want[string(ix.bucket)] = map[string]bool{}
		}
		err := btx.Bucket(bucketEvents).ForEach(func(k, v []byte) error {
			var r eventRecord
			if err := json.Unmarshal(v, &r); err != nil {
				return err
			}
			for _, ix := range eventIndexes {
				if f := ix.field(&r); indexable(f) {
					want[string(ix.bucket)][f+"\x00"+string(k)] = true
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, ix := range eventIndexes {
			b := btx.Bucket(ix.bucket)
			if b == nil {
				tb.Errorf("%s: bucket %s missing", when, ix.bucket)
				continue
			}
			got := 0
			err := indexEntries(b, func(value string, ek []byte) {
				got++
				if !want[string(ix.bucket)][value+"\x00"+string(ek)] {
					tb.Errorf("%s: %s holds %q under %q, which no event has", when, ix.bucket, ek, value)
				}
			})
			if err != nil {
				tb.Errorf("%s: %s: %v", when, ix.bucket, err)
			}
			if w := len(want[string(ix.bucket)]); got != w {
				tb.Errorf("%s: %s holds %d entries, the log gives %d", when, ix.bucket, got, w)
			}
		}
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
}

// scanAll lists every event newest first.
func scanAll(tb testing.TB, db *DB) []actions.Event {
	tb.Helper()
	var all []actions.Event
	err := db.View(func(t actions.Tx) error {
		for cursor := ""; ; {
			page, next, err := t.Events(actions.EventQuery{Limit: 1000, Cursor: cursor})
			if err != nil {
				return err
			}
			all = append(all, page...)
			if next == "" {
				return nil
			}
			cursor = next
		}
	})
	if err != nil {
		tb.Fatal(err)
	}
	return all
}

// eventIDs is the ids of events.
func eventIDs(events []actions.Event) []string {
	out := make([]string, len(events))
	for i, e := range events {
		out[i] = e.ID
	}
	return out
}

// checkQueries fails unless every indexed query, paged newest first and
// walked forwards, gives what filtering a full scan gives.
func checkQueries(tb testing.TB, db *DB, when string) {
	tb.Helper()
	all := scanAll(tb, db)
	if len(all) == 0 {
		tb.Fatalf("%s: empty log", when)
	}
	mid := all[len(all)/2].Time
	scopes := []map[string]time.Time{nil, {}, {"d0": {}, "d2": mid, "a": {}}, {"d1": mid}}
	for _, device := range []string{"", "d0", "d1", "a", "a\x00b", longID, "none"} {
		for _, typ := range []string{"", "ack"} {
			for _, user := range []string{"", "u1"} {
				for si, scope := range scopes {
					q := actions.EventQuery{Device: device, Type: typ, User: user, Scope: scope}
					if si == 3 {
						q.Filter = func(e actions.Event) bool { return e.User != "u0" }
					}
					var want []actions.Event
					for _, e := range all {
						since, in := scope[e.Device]
						if (device == "" || e.Device == device) && (typ == "" || e.Type == typ) &&
							(user == "" || e.User == user) && (scope == nil || in && !e.Time.Before(since)) &&
							(q.Filter == nil || q.Filter(e)) {
							want = append(want, e)
						}
					}
					name := fmt.Sprintf("%s: device %.8q type %q user %q scope %d", when, device, typ, user, si)
					var got []actions.Event
					err := db.View(func(t actions.Tx) error {
						for cursor := ""; ; {
							q.Cursor, q.Limit = cursor, 7
							page, next, err := t.Events(q)
							if err != nil {
								return err
							}
							got = append(got, page...)
							if next == "" {
								return nil
							}
							cursor = next
						}
					})
					if err != nil {
						tb.Fatalf("%s: %v", name, err)
					}
					if !slices.Equal(eventIDs(got), eventIDs(want)) {
						tb.Errorf("%s: got %d events, want %d", name, len(got), len(want))
					}
					// Forwards from the oldest event.
					var fwd []actions.Event
					db.View(func(t actions.Tx) error {
						q.Cursor, q.Limit, q.After = "", 1000, all[len(all)-1].ID
						fwd, _, err = t.Events(q)
						q.After = ""
						return err
					})
					wantFwd := slices.Clone(want)
					slices.Reverse(wantFwd)
					if len(wantFwd) > 0 && wantFwd[0].ID == all[len(all)-1].ID {
						wantFwd = wantFwd[1:]
					}
					if err != nil || !slices.Equal(eventIDs(fwd), eventIDs(wantFwd)) {
						tb.Errorf("%s: forwards got %d events, want %d (%v)", name, len(fwd), len(wantFwd), err)
					}
				}
			}
		}
	}
}

// TestIndexesFollowTheLog checks that the event indexes hold exactly what
// a full scan of the log gives, and that queries through them answer what
// a scan does, after appends, a restart, retention, an import, a restore,
// an upgrade from schema 5 and the loss of an index.
func TestIndexesFollowTheLog(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "gatehouse.db")
	db := openIx(t, path)
	appendIx(t, db, randomEvents(600, 1))
	checkIndexes(t, db, "appended")
	checkQueries(t, db, "appended")

	t.Run("Restart", func(t *testing.T) {
		db.Close()
		db = openIx(t, path)
		appendIx(t, db, randomEvents(100, 2))
		checkIndexes(t, db, "reopened")
		checkQueries(t, db, "reopened")
	})

	t.Run("Retention", func(t *testing.T) {
		before := len(scanAll(t, db))
		for more := true; more; {
			err := db.Update(func(tx actions.Tx) error {
				p, err := tx.PruneEvents(actions.Prune{Keep: 400, Before: ixT0.Add(20 * time.Second), Limit: 37})
				more = p.More
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
		}
		if after := len(scanAll(t, db)); after != 400 || before <= after {
			t.Fatalf("pruned %d events to %d, want 400", before, after)
		}
		checkIndexes(t, db, "pruned")
		checkQueries(t, db, "pruned")
	})

	t.Run("Import", func(t *testing.T) {
		var first bytes.Buffer
		if err := db.Export(&first); err != nil {
			t.Fatal(err)
		}
		if strings.Contains(first.String(), "events_by_") {
			t.Error("the export holds an index")
		}
		p := filepath.Join(t.TempDir(), "gatehouse.db")
		if err := Import(p, bytes.NewReader(first.Bytes())); err != nil {
			t.Fatal(err)
		}
		imported := openIx(t, p)
		defer imported.Close()
		checkIndexes(t, imported, "imported")
		checkQueries(t, imported, "imported")
		var second bytes.Buffer
		if err := imported.Export(&second); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(first.Bytes(), second.Bytes()) {
			t.Error("export → import → export differs")
		}
	})

	t.Run("Restore", func(t *testing.T) {
		backup := filepath.Join(t.TempDir(), "backup.db")
		if err := db.BackupFile(backup); err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(t.TempDir(), "data", "gatehouse.db")
		if _, err := Restore(p, backup); err != nil {
			t.Fatal(err)
		}
		if r, err := Check(p); err != nil || len(r.Problems) > 0 {
			t.Errorf("check of the restored file: %v %v", r.Problems, err)
		}
		restored := openIx(t, p)
		defer restored.Close()
		checkIndexes(t, restored, "restored")
		checkQueries(t, restored, "restored")
	})

	t.Run("LostIndex", func(t *testing.T) {
		db.Close()
		b, err := bbolt.Open(path, 0o600, nil)
		if err != nil {
			t.Fatal(err)
		}
		err = b.Update(func(tx *bbolt.Tx) error { return tx.DeleteBucket(bucketEventsByType) })
		b.Close()
		if err != nil {
			t.Fatal(err)
		}
		db = openIx(t, path)
		checkIndexes(t, db, "rebuilt")
		checkQueries(t, db, "rebuilt")
	})
	db.Close()
}

// TestIndexBuildFromSchema5 upgrades a file written before the indexes,
// whose log is larger than one build transaction, and an interrupted
// build resumes where it stopped.
func TestIndexBuildFromSchema5(t *testing.T) {
	path := filepath.Join(t.TempDir(), "old.db")
	b, err := bbolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	events := randomEvents(500, 3)
	err = b.Update(func(btx *bbolt.Tx) error {
		if err := migrate(btx, migrations[:5]); err != nil {
			return err
		}
		// As the older binary appended: the record alone.
		bk := btx.Bucket(bucketEvents)
		for _, e := range events {
			seq, _ := bk.NextSequence()
			k := append(u64(uint64(e.Time.UnixNano())), u64(seq)...)
			v, _ := json.Marshal(eventRecord{Time: e.Time, Type: e.Type, Device: e.Device, User: e.User, Detail: e.Detail})
			if err := bk.Put(k, v); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// Migrate, then build 60 events at a time and stop half way, as a
	// crash would.
	err = b.Update(func(btx *bbolt.Tx) error { return migrate(btx, migrations[:]) })
	if err != nil {
		t.Fatal(err)
	}
	var half []byte
	b.View(func(btx *bbolt.Tx) error {
		c := btx.Bucket(bucketEvents).Cursor()
		k, _ := c.First()
		for range 250 {
			k, _ = c.Next()
		}
		half = bytes.Clone(k)
		return nil
	})
	if err := buildIndexes(b, 60); err != nil {
		t.Fatal(err)
	}
	// Take back what was built past the half, and mark the build there.
	b.Update(func(btx *bbolt.Tx) error {
		for _, ix := range eventIndexes {
			btx.DeleteBucket(ix.bucket)
			btx.CreateBucket(ix.bucket)
		}
		c := btx.Bucket(bucketEvents).Cursor()
		for k, v := c.First(); k != nil && bytes.Compare(k, half) <= 0; k, v = c.Next() {
			var r eventRecord
			json.Unmarshal(v, &r)
			putIndexes(btx, k, &r)
		}
		return btx.Bucket(bucketMeta).Put(keyIndexBuild, half)
	})
	b.View(func(btx *bbolt.Tx) error {
		db := &tx{tx: btx}
		if db.indexesReady() {
			t.Error("indexes used while the build is unfinished")
		}
		return nil
	})
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	db := openIx(t, path)
	defer db.Close()
	checkIndexes(t, db, "upgraded")
	checkQueries(t, db, "upgraded")
}

// countDecodes counts the records decoded while fn runs.
func countDecodes(t *testing.T, fn func()) int64 {
	var n atomic.Int64
	testHookDecode = func() { n.Add(1) }
	defer func() { testHookDecode = nil }()
	fn()
	return n.Load()
}

// TestListPageDecodesOnlyItsPage counts the records a page of 50 decodes
// from a log of 100,000 events (and from 20,000 devices): the page, one
// more to know a next page exists, and nothing else.
func TestListPageDecodesOnlyItsPage(t *testing.T) {
	if testing.Short() {
		t.Skip("writes 100,000 events")
	}
	db := openIx(t, filepath.Join(t.TempDir(), "gatehouse.db"))
	defer db.Close()
	const n = 100_000
	events := make([]actions.Event, n)
	for i := range events {
		e := actions.Event{Time: ixT0.Add(time.Duration(i) * time.Second), Type: "state", Device: fmt.Sprintf("d%d", i%50)}
		if i%100 == 0 {
			e.Device, e.Type = "rare", "ack"
		}
		if i%1000 == 0 {
			e.User = "alice"
		}
		events[i] = e
	}
	appendIx(t, db, events)
	page := func(q actions.EventQuery) (got []actions.Event, next string) {
		t.Helper()
		err := db.View(func(tx actions.Tx) (err error) {
			got, next, err = tx.Events(q)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		return got, next
	}
	const slack = 1 // the one event past the page that says another follows
	for _, tc := range []struct {
		name string
		q    actions.EventQuery
		want int
	}{
		{"Device", actions.EventQuery{Device: "rare"}, 50},
		{"Type", actions.EventQuery{Type: "ack"}, 50},
		{"User", actions.EventQuery{User: "alice"}, 50},
		{"DeviceAndType", actions.EventQuery{Device: "d7", Type: "state"}, 50},
		{"DeviceAndUser", actions.EventQuery{Device: "rare", User: "alice"}, 50},
		{"Scope", actions.EventQuery{Scope: map[string]time.Time{"rare": {}, "d3": {}}}, 50},
		{"ScopeSince", actions.EventQuery{Scope: map[string]time.Time{"rare": ixT0.Add((n - 2000) * time.Second)}}, 20},
		{"NoMatch", actions.EventQuery{Device: "d7", Type: "ack"}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []actions.Event
			var next string
			decodes := countDecodes(t, func() { got, next = page(tc.q) })
			if len(got) != tc.want {
				t.Fatalf("page of %d, want %d", len(got), tc.want)
			}
			max := int64(tc.want)
			if tc.want == 50 {
				max += slack
			}
			if decodes > max {
				t.Errorf("decoded %d records for a page of %d (want at most %d)", decodes, len(got), max)
			}
			if tc.want < 50 {
				return
			}
			q := tc.q
			q.Cursor = next
			var second []actions.Event
			decodes = countDecodes(t, func() { second, _ = page(q) })
			if len(second) == 0 || decodes > int64(len(second))+slack {
				t.Errorf("second page: %d events, %d decodes", len(second), decodes)
			}
			if second[0].ID >= got[len(got)-1].ID {
				t.Errorf("second page does not follow the first")
			}
		})
	}

	t.Run("WithoutIndexesItScans", func(t *testing.T) {
		// The counter counts: the same page from the log alone decodes
		// a hundred times more.
		db.bolt.Update(func(btx *bbolt.Tx) error { return btx.Bucket(bucketMeta).Put(keyIndexBuild, []byte{}) })
		defer db.bolt.Update(func(btx *bbolt.Tx) error { return btx.Bucket(bucketMeta).Delete(keyIndexBuild) })
		decodes := countDecodes(t, func() { page(actions.EventQuery{Device: "rare"}) })
		if decodes < 5000 {
			t.Errorf("a scan decoded only %d records", decodes)
		}
	})

	t.Run("Devices", func(t *testing.T) {
		err := db.Update(func(tx actions.Tx) error {
			for i := range 20_000 {
				if err := tx.PutDevice(actions.Device{ID: fmt.Sprintf("dev%05d", i), Kind: "lock", Created: ixT0}); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		var got []actions.Device
		var next string
		decodes := countDecodes(t, func() {
			db.View(func(tx actions.Tx) (err error) {
				got, next, err = tx.DevicePage("dev10000", 50)
				return err
			})
		})
		if len(got) != 50 || got[0].ID != "dev10001" || next != "dev10050" {
			t.Fatalf("page %d devices from %v, next %q", len(got), eventIDsOf(got), next)
		}
		if decodes > 50 { // fewer when the device cache holds some
			t.Errorf("decoded %d devices for a page of 50", decodes)
		}
	})
}

func eventIDsOf(devices []actions.Device) []string {
	var out []string
	for _, d := range devices[:min(3, len(devices))] {
		out = append(out, d.ID)
	}
	return out
}

// TestDevicePage pages through devices by id.
func TestDevicePage(t *testing.T) {
	db := openIx(t, filepath.Join(t.TempDir(), "gatehouse.db"))
	defer db.Close()
	var want []string
	db.Update(func(tx actions.Tx) error {
		for i := range 7 {
			id := fmt.Sprintf("d%d", i)
			want = append(want, id)
			tx.PutDevice(actions.Device{ID: id, Kind: "lock", Created: ixT0})
		}
		return nil
	})
	for _, limit := range []int{1, 3, 7, 10} {
		var got []string
		pages := 0
		for cursor := ""; ; pages++ {
			var page []actions.Device
			var next string
			db.View(func(tx actions.Tx) (err error) {
				page, next, err = tx.DevicePage(cursor, limit)
				return err
			})
			for _, d := range page {
				got = append(got, d.ID)
			}
			if next == "" {
				break
			}
			cursor = next
		}
		if !slices.Equal(got, want) || pages != (len(want)-1)/limit {
			t.Errorf("limit %d: %v in %d pages", limit, got, pages+1)
		}
	}
	// A cursor between ids, or past the end.
	db.View(func(tx actions.Tx) error {
		if page, next, _ := tx.DevicePage("d3x", 2); len(page) != 2 || page[0].ID != "d4" || next != "d5" {
			t.Errorf("from d3x: %v %q", page, next)
		}
		if page, next, _ := tx.DevicePage("zz", 2); len(page) != 0 || next != "" {
			t.Errorf("past the end: %v %q", page, next)
		}
		return nil
	})
}

// TestIndexChunksMatchAModel drives one index bucket with random inserts
// (mostly newest, some older: out-of-order event times) and deletions,
// across several transactions, and checks after each that its chunks are
// well formed and hold exactly what a plain sorted set holds, and that
// walks in both directions from random places, with and without a bound,
// yield what the set gives.
func TestIndexChunksMatchAModel(t *testing.T) {
	b, err := bbolt.Open(filepath.Join(t.TempDir(), "ix.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	name := []byte("ix")
	rng := rand.New(rand.NewPCG(7, 14))
	values := []string{"a", "ab", "b", "door"} // "a" is a prefix of "ab"
	model := map[string][][]byte{}
	key := func(n uint64) []byte { return append(u64(n), u64(n%7)...) }
	var clock uint64 = 1000
	for round := range 40 {
		err := b.Update(func(tx *bbolt.Tx) error {
			bk, err := tx.CreateBucketIfNotExists(name)
			if err != nil {
				return err
			}
			for range 50 {
				v := values[rng.IntN(len(values))]
				switch r := rng.IntN(10); {
				case r < 6: // newest
					clock += uint64(1 + rng.IntN(3))
					k := key(clock)
					if err := indexPut(bk, v, k); err != nil {
						return err
					}
					model[v] = append(model[v], k)
				case r < 8: // older than some: lands inside a chunk
					k := key(uint64(1000 + rng.IntN(int(clock-999))))
					if err := indexPut(bk, v, k); err != nil {
						return err
					}
					if !slices.ContainsFunc(model[v], func(m []byte) bool { return bytes.Equal(m, k) }) {
						model[v] = append(model[v], k)
					}
				default: // delete one, mostly the oldest (retention)
					if len(model[v]) == 0 {
						continue
					}
					slices.SortFunc(model[v], bytes.Compare)
					i := 0
					if rng.IntN(3) == 0 {
						i = rng.IntN(len(model[v]))
					}
					if err := indexDelete(bk, v, model[v][i]); err != nil {
						return err
					}
					model[v] = slices.Delete(model[v], i, i+1)
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		for v := range model {
			slices.SortFunc(model[v], bytes.Compare)
		}
		err = b.View(func(tx *bbolt.Tx) error {
			bk := tx.Bucket(name)
			got := map[string][][]byte{}
			if err := indexEntries(bk, func(v string, ek []byte) { got[v] = append(got[v], bytes.Clone(ek)) }); err != nil {
				return err
			}
			for _, v := range values {
				if !slices.EqualFunc(got[v], model[v], bytes.Equal) {
					t.Fatalf("round %d: %q holds %d keys, the model %d", round, v, len(got[v]), len(model[v]))
				}
			}
			for range 30 {
				v := values[rng.IntN(len(values))]
				target := key(uint64(990 + rng.IntN(int(clock-980))))
				var bound []byte
				if rng.IntN(2) == 0 {
					bound = key(uint64(990 + rng.IntN(int(clock-980))))
				}
				for _, desc := range []bool{true, false} {
					var want [][]byte
					for _, k := range model[v] {
						if desc && bytes.Compare(k, target) <= 0 && (bound == nil || bytes.Compare(k, bound) >= 0) ||
							!desc && bytes.Compare(k, target) >= 0 && (bound == nil || bytes.Compare(k, bound) >= 0) {
							want = append(want, k)
						}
					}
					if desc {
						slices.Reverse(want)
					}
					it := newPrefixIter(bk, v, bound, desc)
					var walked [][]byte
					for k := it.seek(target); k != nil; k = it.next() {
						walked = append(walked, bytes.Clone(k))
					}
					if !slices.EqualFunc(walked, want, bytes.Equal) {
						t.Fatalf("round %d: walk of %q from %x (desc %v, bound %x): %d keys, want %d", round, v, target, desc, bound, len(walked), len(want))
					}
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := len(model["door"]); n < 2*chunkKeys {
		t.Fatalf("only %d keys for door: the test never filled a chunk", n)
	}
}
