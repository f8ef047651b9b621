package store

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"go.etcd.io/bbolt"

	"gatehouse/actions"
)

// Secondary indexes of the event log. Each is a bucket of chunks: a
// chunk's key is a field's value, a zero byte and the first event key it
// holds; its value is up to chunkKeys event keys of that field value, in
// order, 16 bytes each. The chunks of one value sort by event key, so by
// time, and a query walks them backwards from its cursor (newest first), or
// forwards after an id.
//
// Chunks, not one entry per event (schema 6), because of what a write
// costs in bbolt: a commit rewrites every leaf page it touches, and a leaf
// of one-entry keys holds a hundred of them, all decoded and copied for one
// insert. A report from each of a hundred devices touches a hundred leaves
// of the device index; with chunks each of those leaves holds a few keys.
// The indexes are derived data: never exported, rebuilt at Open when
// missing (an import, an upgrade) or unfinished (a crash during the build).
var (
	bucketEventsByDevice = []byte("events_by_device")
	bucketEventsByType   = []byte("events_by_type")
	bucketEventsByUser   = []byte("events_by_user")

	// keyIndexBuild, in meta, is present while the event indexes are
	// being built: the key of the last event indexed (empty: none yet).
	// Queries do not use the indexes while it is there.
	keyIndexBuild = []byte("index_build")
)

// eventIndexes lists the index buckets with the field each one holds.
var eventIndexes = []struct {
	bucket []byte
	field  func(r *eventRecord) string
}{
	{bucketEventsByDevice, func(r *eventRecord) string { return r.Device }},
	{bucketEventsByType, func(r *eventRecord) string { return r.Type }},
	{bucketEventsByUser, func(r *eventRecord) string { return r.User }},
}

// indexSchema is the schema version that brought the event indexes.
const indexSchema = 6

// dropIndexes is migration 7: the indexes of schema 6 had an entry per
// event; dropped, they are rebuilt in chunks at Open (createIndexes,
// buildIndexes).
func dropIndexes(tx *bbolt.Tx) error {
	for _, ix := range eventIndexes {
		if tx.Bucket(ix.bucket) != nil {
			if err := tx.DeleteBucket(ix.bucket); err != nil {
				return fmt.Errorf("drop bucket %s: %w", ix.bucket, err)
			}
		}
	}
	return nil
}

// chunkKeys is the most event keys one index chunk holds.
const chunkKeys = 32

// maxIndexedLen is the longest field value indexed. Longer values (only
// ever sent by a hostile or broken client) are left out, and a query for
// one walks the log instead: an index key must stay far below bbolt's
// key size limit.
const maxIndexedLen = 512

// indexBuildBatch is how many events one transaction of the index build
// indexes, so building the indexes of a large log never holds one huge
// transaction in memory.
const indexBuildBatch = 20_000

// testHookDecode, when set (only by tests), is called for every event and
// device record decoded, so a test can count what a query reads.
var testHookDecode func()

func countDecode() {
	if testHookDecode != nil {
		testHookDecode()
	}
}

// indexable reports whether an index holds value. Values with a zero
// byte (only ever sent by a hostile or broken client, as a user name) are
// left out, so a chunk key's value part ends at its first zero byte.
func indexable(value string) bool {
	return value != "" && len(value) <= maxIndexedLen && !strings.ContainsRune(value, 0)
}

// chunkPrefix is the start of the keys of value's chunks.
func chunkPrefix(value string) []byte { return append([]byte(value), 0) }

// isChunkOf reports whether k is the key of a chunk of prefix.
func isChunkOf(k, prefix []byte) bool {
	return len(k) == len(prefix)+eventKeyLen && bytes.HasPrefix(k, prefix)
}

// findChunk positions c on the chunk of prefix that holds, or would hold,
// event key ek: the last one whose first key is at or before ek, else the
// first one; nil when prefix has none.
func findChunk(c *bbolt.Cursor, prefix, ek []byte) (k, v []byte) {
	buf := append(slices.Clip(prefix), ek...)
	k, v = c.Seek(buf)
	if k != nil && bytes.Equal(k, buf) {
		return k, v
	}
	var pk, pv []byte
	if k == nil {
		pk, pv = c.Last()
	} else {
		pk, pv = c.Prev()
	}
	if isChunkOf(pk, prefix) {
		return pk, pv
	}
	if k, v = c.Seek(buf); isChunkOf(k, prefix) {
		return k, v
	}
	return nil, nil
}

// search returns the position of ek in chunk value v (16-byte keys in
// order) and whether it is there.
func search(v, ek []byte) (int, bool) {
	n := len(v) / eventKeyLen
	lo, hi := 0, n
	for lo < hi {
		m := (lo + hi) / 2
		if bytes.Compare(v[m*eventKeyLen:(m+1)*eventKeyLen], ek) < 0 {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo, lo < n && bytes.Equal(v[lo*eventKeyLen:(lo+1)*eventKeyLen], ek)
}

// putChunk writes chunk value v (not empty) under its first key, in place
// of the chunk at old (nil for none).
func putChunk(b *bbolt.Bucket, prefix, old, v []byte) error {
	k := append(slices.Clip(prefix), v[:eventKeyLen]...)
	if old != nil && !bytes.Equal(old, k) {
		if err := b.Delete(old); err != nil {
			return err
		}
	}
	return b.Put(k, v)
}

// indexPut adds event key ek under value to index b.
func indexPut(b *bbolt.Bucket, value string, ek []byte) error {
	prefix := chunkPrefix(value)
	k, v := findChunk(b.Cursor(), prefix, ek)
	if k == nil {
		return b.Put(append(prefix, ek...), bytes.Clone(ek))
	}
	i, found := search(v, ek)
	if found {
		return nil
	}
	n := len(v) / eventKeyLen
	if i == n && n >= chunkKeys {
		// The common case, a newer event: a full chunk stays full and a
		// new one starts.
		return b.Put(append(prefix, ek...), bytes.Clone(ek))
	}
	k = bytes.Clone(k)
	nv := make([]byte, 0, len(v)+eventKeyLen)
	nv = append(append(append(nv, v[:i*eventKeyLen]...), ek...), v[i*eventKeyLen:]...)
	if n+1 <= chunkKeys {
		return putChunk(b, prefix, k, nv)
	}
	half := (n + 1) / 2 * eventKeyLen // an insert into a full chunk splits it
	if err := putChunk(b, prefix, k, nv[:half:half]); err != nil {
		return err
	}
	return putChunk(b, prefix, nil, nv[half:])
}

// indexDelete removes event key ek under value from index b.
func indexDelete(b *bbolt.Bucket, value string, ek []byte) error {
	prefix := chunkPrefix(value)
	k, v := findChunk(b.Cursor(), prefix, ek)
	if k == nil {
		return nil
	}
	i, found := search(v, ek)
	if !found {
		return nil
	}
	k = bytes.Clone(k)
	if len(v) == eventKeyLen {
		return b.Delete(k)
	}
	nv := make([]byte, 0, len(v)-eventKeyLen)
	nv = append(append(nv, v[:i*eventKeyLen]...), v[(i+1)*eventKeyLen:]...)
	return putChunk(b, prefix, k, nv)
}

// indexEntries calls fn with the value and event key of every entry of
// index b, and checks the chunks are well formed.
func indexEntries(b *bbolt.Bucket, fn func(value string, ek []byte)) error {
	return b.ForEach(func(k, v []byte) error {
		z := bytes.IndexByte(k, 0)
		if z < 0 || len(k) != z+1+eventKeyLen || len(v) == 0 || len(v)%eventKeyLen != 0 || len(v) > chunkKeys*eventKeyLen {
			return fmt.Errorf("index chunk %q is malformed", k)
		}
		if !bytes.Equal(k[z+1:], v[:eventKeyLen]) {
			return fmt.Errorf("index chunk %q does not start with its key", k)
		}
		for i := 0; i < len(v); i += eventKeyLen {
			if i > 0 && bytes.Compare(v[i-eventKeyLen:i], v[i:i+eventKeyLen]) >= 0 {
				return fmt.Errorf("index chunk %q is out of order", k)
			}
			fn(string(k[:z]), v[i:i+eventKeyLen])
		}
		return nil
	})
}

// putIndexes adds the index entries of the event r under key k.
func putIndexes(tx *bbolt.Tx, k []byte, r *eventRecord) error {
	for _, ix := range eventIndexes {
		if v := ix.field(r); indexable(v) {
			if err := indexPut(tx.Bucket(ix.bucket), v, k); err != nil {
				return fmt.Errorf("index event %x: %w", k, err)
			}
		}
	}
	return nil
}

// deleteIndexes removes the index entries of the event r under key k.
func deleteIndexes(tx *bbolt.Tx, k []byte, r *eventRecord) error {
	for _, ix := range eventIndexes {
		if v := ix.field(r); indexable(v) {
			if err := indexDelete(tx.Bucket(ix.bucket), v, k); err != nil {
				return fmt.Errorf("unindex event %x: %w", k, err)
			}
		}
	}
	return nil
}

// createIndexes creates the index buckets when one is missing (an
// import, a new schema) and marks them to be built from scratch; a partial
// set is dropped and rebuilt whole.
func createIndexes(tx *bbolt.Tx) error {
	missing := false
	for _, ix := range eventIndexes {
		missing = missing || tx.Bucket(ix.bucket) == nil
	}
	if !missing {
		return nil
	}
	for _, ix := range eventIndexes {
		if tx.Bucket(ix.bucket) != nil {
			if err := tx.DeleteBucket(ix.bucket); err != nil {
				return fmt.Errorf("reset bucket %s: %w", ix.bucket, err)
			}
		}
		if _, err := tx.CreateBucket(ix.bucket); err != nil {
			return fmt.Errorf("create bucket %s: %w", ix.bucket, err)
		}
	}
	return tx.Bucket(bucketMeta).Put(keyIndexBuild, []byte{})
}

// buildIndexes makes sure the event indexes exist and are complete: it
// creates missing ones, then indexes the log in transactions of at most
// batch events each (indexBuildBatch at Open), recording its progress in meta, so a build
// interrupted by a crash resumes where it stopped. It runs at Open, before
// any other write, on a file whose schema has the indexes.
func buildIndexes(b *bbolt.DB, batch int) error {
	err := b.Update(func(btx *bbolt.Tx) error {
		if v, _ := schema(btx); v < indexSchema {
			return nil
		}
		return createIndexes(btx)
	})
	if err != nil {
		return fmt.Errorf("create event indexes: %w", err)
	}
	for {
		done := true
		err := b.Update(func(btx *bbolt.Tx) error {
			meta := btx.Bucket(bucketMeta)
			from := meta.Get(keyIndexBuild)
			if from == nil {
				return nil
			}
			c := btx.Bucket(bucketEvents).Cursor()
			k, v := c.First()
			if len(from) > 0 {
				if k, v = c.Seek(from); k != nil && bytes.Equal(k, from) {
					k, v = c.Next()
				}
			}
			var last []byte
			for n := 0; k != nil && n < batch; k, v = c.Next() {
				var r eventRecord
				if json.Unmarshal(v, &r) == nil {
					if err := putIndexes(btx, k, &r); err != nil {
						return err
					}
				}
				last = k
				n++
			}
			if k == nil {
				return meta.Delete(keyIndexBuild)
			}
			done = false
			return meta.Put(keyIndexBuild, bytes.Clone(last))
		})
		if err != nil {
			return fmt.Errorf("build event indexes: %w", err)
		}
		if done {
			return nil
		}
	}
}

// indexesReady reports whether queries may use the event indexes.
func (t *tx) indexesReady() bool {
	return t.tx.Bucket(bucketEventsByDevice) != nil && t.tx.Bucket(bucketMeta).Get(keyIndexBuild) == nil
}

// keyIter walks event keys in one direction: newest first (desc) or oldest
// first. Keys returned point into the transaction's memory.
type keyIter interface {
	// seek moves to the first key at or beyond target in walk order (at
	// or below it when desc) and returns it, nil at the end.
	seek(target []byte) []byte
	// next moves one key on and returns it, nil at the end.
	next() []byte
}

// logIter walks the events bucket itself.
type logIter struct {
	c    *bbolt.Cursor
	desc bool
}

func (it *logIter) settle(k []byte) []byte {
	for ; k != nil && len(k) != eventKeyLen; k = it.step() {
	}
	return k
}

func (it *logIter) step() []byte {
	if it.desc {
		k, _ := it.c.Prev()
		return k
	}
	k, _ := it.c.Next()
	return k
}

func (it *logIter) next() []byte { return it.settle(it.step()) }

func (it *logIter) seek(target []byte) []byte {
	k, _ := it.c.Seek(target)
	if it.desc {
		if k == nil {
			k, _ = it.c.Last()
		} else if !bytes.Equal(k, target) {
			k, _ = it.c.Prev()
		}
	}
	return it.settle(k)
}

// prefixIter walks the entries of one value in an index: the event keys
// of its chunks. With bound set it stops at the first event key below
// bound (desc) or starts there.
type prefixIter struct {
	c      *bbolt.Cursor
	prefix []byte
	bound  []byte
	desc   bool
	chunk  []byte // the chunk the cursor is on
	i      int    // the position in chunk
}

func newPrefixIter(b *bbolt.Bucket, value string, bound []byte, desc bool) *prefixIter {
	return &prefixIter{c: b.Cursor(), prefix: chunkPrefix(value), bound: bound, desc: desc}
}

// at returns the key at the iterator's position, nil past the bound.
func (it *prefixIter) at() []byte {
	ek := it.chunk[it.i*eventKeyLen : (it.i+1)*eventKeyLen]
	if it.desc && it.bound != nil && bytes.Compare(ek, it.bound) < 0 {
		return nil
	}
	return ek
}

// step moves to the next chunk in walk order; false past the last.
func (it *prefixIter) step() bool {
	var k, v []byte
	if it.desc {
		k, v = it.c.Prev()
	} else {
		k, v = it.c.Next()
	}
	if !isChunkOf(k, it.prefix) {
		it.chunk = nil
		return false
	}
	it.chunk, it.i = v, 0
	if it.desc {
		it.i = len(v)/eventKeyLen - 1
	}
	return true
}

func (it *prefixIter) next() []byte {
	if it.chunk == nil {
		return nil
	}
	if it.desc {
		it.i--
	} else {
		it.i++
	}
	if it.i < 0 || it.i >= len(it.chunk)/eventKeyLen {
		if !it.step() {
			return nil
		}
	}
	return it.at()
}

func (it *prefixIter) seek(target []byte) []byte {
	if !it.desc && it.bound != nil && bytes.Compare(target, it.bound) < 0 {
		target = it.bound
	}
	k, v := findChunk(it.c, it.prefix, target)
	if k == nil {
		it.chunk = nil
		return nil
	}
	it.chunk = v
	i, found := search(v, target)
	n := len(v) / eventKeyLen
	if it.desc {
		if !found {
			i-- // the last key before target
		}
		if i < 0 {
			it.chunk = nil // findChunk's first chunk starts after target
			return nil
		}
		it.i = i
		return it.at()
	}
	it.i = i
	if i >= n {
		if !it.step() {
			return nil
		}
	}
	return it.at()
}

// unionIter walks the keys any of its iterators hold (a person's devices).
type unionIter struct {
	its  []keyIter
	cur  [][]byte
	desc bool
}

func (u *unionIter) best() []byte {
	var b []byte
	for _, k := range u.cur {
		if k != nil && (b == nil || (bytes.Compare(k, b) > 0) == u.desc) {
			b = k
		}
	}
	return b
}

func (u *unionIter) seek(target []byte) []byte {
	for i, it := range u.its {
		u.cur[i] = it.seek(target)
	}
	return u.best()
}

func (u *unionIter) next() []byte {
	b := u.best()
	if b == nil {
		return nil
	}
	b = bytes.Clone(b)
	for i, it := range u.its {
		if u.cur[i] != nil && bytes.Equal(u.cur[i], b) {
			u.cur[i] = it.next()
		}
	}
	return u.best()
}

// joinIter walks the keys all of its iterators hold, by leapfrogging: each
// iterator seeks to the key another one is on, so it reads only the entries
// between matches of the sparsest, never the whole of a large one.
type joinIter struct{ its []keyIter }

func (j *joinIter) seek(target []byte) []byte { return j.align(j.its[0].seek(target)) }
func (j *joinIter) next() []byte              { return j.align(j.its[0].next()) }

func (j *joinIter) align(k []byte) []byte {
	for k != nil {
		agreed := true
		for _, it := range j.its[1:] {
			k2 := it.seek(k)
			if k2 == nil {
				return nil
			}
			if !bytes.Equal(k2, k) {
				k, agreed = j.its[0].seek(k2), false
				break
			}
		}
		if agreed {
			return k
		}
	}
	return nil
}

// eventBound is the smallest event key at or after time at.
func eventBound(at time.Time) []byte {
	if at.IsZero() || at.UnixNano() <= 0 {
		return nil
	}
	return append(u64(uint64(at.UnixNano())), make([]byte, 8)...)
}

// eventIter plans a query: the narrowest walk that yields every event q
// may select, through the indexes when they are ready. The events it
// yields are still checked against q (matches), so a plan only has to
// be a superset. ok is false when no event can match.
func (t *tx) eventIter(q actions.EventQuery, desc bool) (it keyIter, ok bool) {
	log := &logIter{c: t.tx.Bucket(bucketEvents).Cursor(), desc: desc}
	if !t.indexesReady() {
		return log, true
	}
	var its []keyIter
	if q.Scope != nil {
		if q.Device != "" {
			since, in := q.Scope[q.Device]
			if !in {
				return nil, false
			}
			if indexable(q.Device) {
				its = append(its, newPrefixIter(t.tx.Bucket(bucketEventsByDevice), q.Device, eventBound(since), desc))
			}
		} else {
			ids := make([]string, 0, len(q.Scope))
			for id := range q.Scope {
				if !indexable(id) {
					return log, true // only a hostile id; walk the log
				}
				ids = append(ids, id)
			}
			if len(ids) == 0 {
				return nil, false
			}
			slices.Sort(ids)
			u := &unionIter{cur: make([][]byte, len(ids)), desc: desc}
			for _, id := range ids {
				u.its = append(u.its, newPrefixIter(t.tx.Bucket(bucketEventsByDevice), id, eventBound(q.Scope[id]), desc))
			}
			its = append(its, u)
		}
	} else if indexable(q.Device) {
		its = append(its, newPrefixIter(t.tx.Bucket(bucketEventsByDevice), q.Device, nil, desc))
	}
	if indexable(q.User) {
		its = append(its, newPrefixIter(t.tx.Bucket(bucketEventsByUser), q.User, nil, desc))
	}
	if indexable(q.Type) {
		its = append(its, newPrefixIter(t.tx.Bucket(bucketEventsByType), q.Type, nil, desc))
	}
	switch len(its) {
	case 0:
		return log, true
	case 1:
		return its[0], true
	}
	return &joinIter{its: its}, true
}
