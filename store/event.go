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
	v, err := json.Marshal(eventRecord{
		Time:    e.Time,
		Type:    e.Type,
		Device:  e.Device,
		User:    e.User,
		Via:     e.Via,
		Command: e.Command,
		Detail:  e.Detail,
	})
	if err != nil {
		return fmt.Errorf("encode event: %w", err)
	}
	if err := b.Put(key, v); err != nil {
		return fmt.Errorf("append event: %w", err)
	}
	e.ID = hex.EncodeToString(key)
	return nil
}

// Events walks the log backwards from the end, or from just before
// q.Cursor, and returns up to q.Limit matching events (50 when not set, at
// most 1000). next is the id of the last event returned when at least one
// more matching event lies beyond it, "" otherwise. With q.After set it
// walks forwards instead, from just after that id, oldest first.
func (t *tx) Events(q actions.EventQuery) ([]actions.Event, string, error) {
	decode := func(k, v []byte) (actions.Event, bool, error) {
		e, err := decodeEvent(k, v)
		return e, err == nil && matches(q, e), err
	}
	id := func(e actions.Event) string { return e.ID }
	b := t.tx.Bucket(bucketEvents)
	if q.After != "" {
		return pageForward(b, q.After, q.Limit, decode, id)
	}
	return page(b, q.Cursor, q.Limit, decode, id)
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

// pageForward is page in the other direction: oldest first, starting just
// after the key after decodes to.
func pageForward[T any](b *bbolt.Bucket, after string, limit int, decode func(k, v []byte) (T, bool, error), id func(T) string) ([]T, string, error) {
	start, err := hex.DecodeString(after)
	if err != nil || len(start) != eventKeyLen {
		return nil, "", actions.Errorf(actions.EInvalid, "invalid event id")
	}
	c := b.Cursor()
	k, v := c.Seek(start)
	if k != nil && bytes.Equal(k, start) {
		k, v = c.Next()
	}
	return collect(k, v, c.Next, limit, decode, id)
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
	return q.Filter == nil || q.Filter(e)
}
