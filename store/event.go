package store

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"

	"go.etcd.io/bbolt"

	"gatehouse/actions"
)

// Page sizes of Events.
const (
	defaultEventLimit = 50
	maxEventLimit     = 1000
)

// eventKeyLen is the length of an event key: unix nanoseconds and a
// sequence number, both 8 bytes big-endian.
const eventKeyLen = 16

// eventRecord is an event as stored; its id is its key.
type eventRecord struct {
	Time    time.Time `json:"time"`
	Type    string    `json:"type"`
	Device  string    `json:"device,omitempty"`
	User    string    `json:"user,omitempty"`
	Via     string    `json:"via,omitempty"`
	Command string    `json:"command,omitempty"`
	Detail  string    `json:"detail,omitempty"`
}

func decodeEvent(k, v []byte) (actions.Event, error) {
	countDecode()
	var r eventRecord
	if err := json.Unmarshal(v, &r); err != nil {
		return actions.Event{}, fmt.Errorf("decode event %x: %w", k, err)
	}
	return actions.Event{
		ID:      hex.EncodeToString(k),
		Time:    r.Time,
		Type:    r.Type,
		Device:  r.Device,
		User:    r.User,
		Via:     r.Via,
		Command: r.Command,
		Detail:  r.Detail,
	}, nil
}

// AppendEvent stores e under a key made of e.Time and the next sequence
// number of the log, so events sort by time and events with the same time
// keep the order they were appended in. It sets e.ID to the key in hex.
func (t *tx) AppendEvent(e *actions.Event) error {
	if e.Time.IsZero() {
		return actions.Errorf(actions.EInvalid, "event time is required")
	}
	nanos := e.Time.UnixNano()
	if nanos < 0 || !time.Unix(0, nanos).Equal(e.Time) {
		return actions.Errorf(actions.EInvalid, "event time %s is out of range", e.Time.Format(time.RFC3339))
	}
	b := t.tx.Bucket(bucketEvents)
	seq, err := b.NextSequence()
	if err != nil {
		return fmt.Errorf("append event: %w", err)
	}
	key := make([]byte, 0, eventKeyLen)
	key = binary.BigEndian.AppendUint64(key, uint64(nanos))
	key = binary.BigEndian.AppendUint64(key, seq)
	r := eventRecord{
		Time:    e.Time,
		Type:    e.Type,
		Device:  e.Device,
		User:    e.User,
		Via:     e.Via,
		Command: e.Command,
		Detail:  e.Detail,
	}
	v, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("encode event: %w", err)
	}
	if err := b.Put(key, v); err != nil {
		return fmt.Errorf("append event: %w", err)
	}
	if err := putIndexes(t.tx, key, &r); err != nil {
		return err
	}
	e.ID = hex.EncodeToString(key)
	return nil
}

// Events returns up to q.Limit matching events (50 when not set, at most
// 1000), newest first from the end of the log or from just before
// q.Cursor. next is the id of the last event returned when at least one
// more matching event lies beyond it, "" otherwise. With q.After set it
// walks forwards instead, from just after that id, oldest first.
//
// It walks the narrowest index the query allows (device, or q.Scope's
// devices, person, type; several at once by leapfrogging, index.go) and
// decodes only the events those yield: the page, one more to know whether
// another page follows, and those q.Filter turns down.
func (t *tx) Events(q actions.EventQuery) ([]actions.Event, string, error) {
	desc := q.After == ""
	from, msg := q.Cursor, "invalid cursor"
	if !desc {
		from, msg = q.After, "invalid event id"
	}
	var start []byte
	if from != "" {
		k, err := hex.DecodeString(from)
		if err != nil || len(k) != eventKeyLen {
			return nil, "", actions.Errorf(actions.EInvalid, "%s", msg)
		}
		start = k
	}
	it, ok := t.eventIter(q, desc)
	if !ok {
		return []actions.Event{}, "", nil
	}
	var k []byte
	switch {
	case start == nil && desc:
		k = it.seek(bytes.Repeat([]byte{0xff}, eventKeyLen))
	case start == nil:
		k = it.seek(make([]byte, eventKeyLen))
	default:
		// A page starts just past its cursor.
		if k = it.seek(start); k != nil && bytes.Equal(k, start) {
			k = it.next()
		}
	}
	limit := q.Limit
	if limit <= 0 {
		limit = defaultEventLimit
	}
	limit = min(limit, maxEventLimit)
	events := t.tx.Bucket(bucketEvents)
	items := []actions.Event{}
	for ; k != nil; k = it.next() {
		v := events.Get(k)
		if v == nil {
			continue // an index entry whose event is gone: never served
		}
		e, err := decodeEvent(k, v)
		if err != nil {
			return nil, "", err
		}
		if !matches(q, e) {
			continue
		}
		if len(items) == limit {
			return items, items[len(items)-1].ID, nil
		}
		items = append(items, e)
	}
	return items, "", nil
}

// page returns up to limit items of a bucket with time-ordered keys,
// newest first, starting just before the key cursor decodes to.
func page[T any](b *bbolt.Bucket, cursor string, limit int, decode func(k, v []byte) (T, bool, error), id func(T) string) ([]T, string, error) {
	c := b.Cursor()
	k, v := c.Last()
	if cursor != "" {
		start, err := hex.DecodeString(cursor)
		if err != nil || len(start) != eventKeyLen {
			return nil, "", actions.Errorf(actions.EInvalid, "invalid cursor")
		}
		// Seek lands on the first key >= start, or past the end; the
		// page begins at the key before that.
		if k, _ = c.Seek(start); k == nil {
			k, v = c.Last()
		} else {
			k, v = c.Prev()
		}
	}
	return collect(k, v, c.Prev, limit, decode, id)
}

// collect walks from k with step, keeping up to limit decoded items (50
// when not set, at most 1000); next is the id of the last one when more
// follow.
func collect[T any](k, v []byte, step func() ([]byte, []byte), limit int, decode func(k, v []byte) (T, bool, error), id func(T) string) ([]T, string, error) {
	if limit <= 0 {
		limit = defaultEventLimit
	}
	limit = min(limit, maxEventLimit)
	items := []T{}
	for ; k != nil; k, v = step() {
		item, ok, err := decode(k, v)
		if err != nil {
			return nil, "", err
		}
		if !ok {
			continue
		}
		if len(items) == limit {
			return items, id(items[len(items)-1]), nil
		}
		items = append(items, item)
	}
	return items, "", nil
}

// matches reports whether e is selected by q.
func matches(q actions.EventQuery, e actions.Event) bool {
	if q.Device != "" && e.Device != q.Device {
		return false
	}
	if q.Type != "" && e.Type != q.Type {
		return false
	}
	if q.User != "" && e.User != q.User {
		return false
	}
	if q.Scope != nil {
		since, ok := q.Scope[e.Device]
		if !ok || e.Time.Before(since) {
			return false
		}
	}
	return q.Filter == nil || q.Filter(e)
}

// keyEventCount, in the meta bucket, is the number of events at some
// moment and the events bucket's sequence at that moment, 8 bytes
// big-endian each. Every append takes exactly one sequence number in the
// transaction that adds its key (a rolled-back append gives its number
// back), so the count now is the stored count plus how far the sequence
// has moved since: appends never touch it, and retention reads it in O(1).
// Anything that deletes events other than PruneEvents must lower it, or
// the count limit would delete too many.
var keyEventCount = []byte("event_count")

// eventCount returns the number of events, and whether it was known
// without counting. A file without the entry (written before retention,
// or imported) is counted once, by a cursor walk.
func (t *tx) eventCount() (n uint64, known bool) {
	seq := t.tx.Bucket(bucketEvents).Sequence()
	if v := t.tx.Bucket(bucketMeta).Get(keyEventCount); len(v) == 16 {
		if n, at := u64dec(v[:8]), u64dec(v[8:]); at <= seq {
			return n + (seq - at), true
		}
	}
	c := t.tx.Bucket(bucketEvents).Cursor()
	for k, _ := c.First(); k != nil; k, _ = c.Next() {
		n++
	}
	return n, false
}

// putEventCount records n as the number of events now.
func (t *tx) putEventCount(n uint64) error {
	v := append(u64(n), u64(t.tx.Bucket(bucketEvents).Sequence())...)
	if err := t.tx.Bucket(bucketMeta).Put(keyEventCount, v); err != nil {
		return fmt.Errorf("record event count: %w", err)
	}
	return nil
}

// PruneEvents deletes, oldest first, the events older than q.Before or
// beyond the newest q.Keep, at most q.Limit of them. It walks the log from
// its first key and stops at the first event it keeps, so it reads only
// what it deletes. With each event go its picture (a stranger event's key
// is its picture's) and the command it names, unless that command is still
// sent: a pending command is never pruned. Then pictures older than
// q.Before go too, within what is left of q.Limit. More is set when it
// stopped at the limit.
func (t *tx) PruneEvents(q actions.Prune) (actions.Pruned, error) {
	var out actions.Pruned
	if q.Limit <= 0 {
		return out, actions.Errorf(actions.EInvalid, "prune limit must be positive")
	}
	var cutoff []byte // event keys below it are older than q.Before
	if !q.Before.IsZero() && q.Before.UnixNano() > 0 {
		cutoff = u64(uint64(q.Before.UnixNano()))
	}
	count, known := t.eventCount()
	var excess uint64 // how many the count limit removes
	if q.Keep > 0 && count > uint64(q.Keep) {
		excess = count - uint64(q.Keep)
	}
	type victim struct {
		key    []byte
		record eventRecord
	}
	var victims []victim
	c := t.tx.Bucket(bucketEvents).Cursor()
	k, v := c.First()
	for ; k != nil && len(victims) < q.Limit; k, v = c.Next() {
		old := cutoff != nil && bytes.Compare(k, cutoff) < 0
		if !old && uint64(len(victims)) >= excess {
			break
		}
		var r eventRecord
		_ = json.Unmarshal(v, &r) // a record that does not decode is still due
		victims = append(victims, victim{key: bytes.Clone(k), record: r})
	}
	if k == nil {
		count = uint64(len(victims)) // the whole log goes: whatever the count said
	}
	b := t.tx.Bucket(bucketEvents)
	for _, vi := range victims {
		if err := b.Delete(vi.key); err != nil {
			return out, fmt.Errorf("prune event %x: %w", vi.key, err)
		}
		if err := deleteIndexes(t.tx, vi.key, &vi.record); err != nil {
			return out, err
		}
		out.Events++
		gone, err := t.deletePictureKey(vi.key)
		if err != nil {
			return out, err
		}
		if gone {
			out.Pictures++
		}
		if vi.record.Command != "" {
			gone, err := t.pruneCommand(vi.record.Command)
			if err != nil {
				return out, err
			}
			if gone {
				out.Commands++
			}
		}
	}
	out.More = len(victims) == q.Limit
	if cutoff != nil && !out.More {
		n, more, err := t.prunePictures(cutoff, q.Limit-len(victims))
		if err != nil {
			return out, err
		}
		out.Pictures += n
		out.More = more
	}
	if len(victims) > 0 || !known {
		if err := t.putEventCount(count - uint64(len(victims))); err != nil {
			return out, err
		}
	}
	return out, nil
}
