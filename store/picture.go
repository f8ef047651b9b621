package store

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"

	"gatehouse/actions"
)

// strangerRecord is a stranger picture's metadata; the bytes are in the
// pictures bucket under the same key (the stranger event's key).
type strangerRecord struct {
	Device string    `json:"device"`
	Time   time.Time `json:"time"`
	Type   string    `json:"type"`
	Size   int       `json:"size"`
}

func pictureKey(id string) ([]byte, error) {
	k, err := hex.DecodeString(id)
	if err != nil || len(k) != eventKeyLen {
		return nil, actions.Errorf(actions.ENotFound, "picture not found")
	}
	return k, nil
}

func decodeStranger(k, v []byte) (actions.Stranger, error) {
	var r strangerRecord
	if err := json.Unmarshal(v, &r); err != nil {
		return actions.Stranger{}, fmt.Errorf("decode stranger %x: %w", k, err)
	}
	return actions.Stranger{ID: hex.EncodeToString(k), Device: r.Device, Time: r.Time, Type: r.Type, Size: r.Size}, nil
}

// PutPicture stores a picture and its metadata under its event's key.
func (t *tx) PutPicture(st actions.Stranger, data []byte) error {
	k, err := pictureKey(st.ID)
	if err != nil {
		return actions.Errorf(actions.EInvalid, "picture id must be an event id")
	}
	v, err := json.Marshal(strangerRecord{Device: st.Device, Time: st.Time, Type: st.Type, Size: len(data)})
	if err != nil {
		return err
	}
	if err := t.tx.Bucket(bucketStrangers).Put(k, v); err != nil {
		return err
	}
	return t.tx.Bucket(bucketPictures).Put(k, data)
}

// Stranger returns a picture's metadata.
func (t *tx) Stranger(id string) (actions.Stranger, error) {
	k, err := pictureKey(id)
	if err != nil {
		return actions.Stranger{}, err
	}
	v := t.tx.Bucket(bucketStrangers).Get(k)
	if v == nil {
		return actions.Stranger{}, actions.Errorf(actions.ENotFound, "picture not found")
	}
	return decodeStranger(k, v)
}

// Picture returns a copy of a picture's bytes.
func (t *tx) Picture(id string) ([]byte, error) {
	k, err := pictureKey(id)
	if err != nil {
		return nil, err
	}
	v := t.tx.Bucket(bucketPictures).Get(k)
	if v == nil {
		return nil, actions.Errorf(actions.ENotFound, "picture not found")
	}
	return append([]byte(nil), v...), nil
}

// Strangers lists pictures newest first, paged like Events.
func (t *tx) Strangers(q actions.StrangerQuery) ([]actions.Stranger, string, error) {
	return page(t.tx.Bucket(bucketStrangers), q.Cursor, q.Limit,
		func(k, v []byte) (actions.Stranger, bool, error) {
			st, err := decodeStranger(k, v)
			return st, err == nil && (q.Filter == nil || q.Filter(st)), err
		},
		func(st actions.Stranger) string { return st.ID })
}

// AllStrangers lists every picture's metadata, oldest first.
func (t *tx) AllStrangers() ([]actions.Stranger, error) {
	out := []actions.Stranger{}
	err := t.tx.Bucket(bucketStrangers).ForEach(func(k, v []byte) error {
		st, err := decodeStranger(k, v)
		out = append(out, st)
		return err
	})
	return out, err
}

// DeletePicture removes a picture and its metadata.
func (t *tx) DeletePicture(id string) error {
	k, err := pictureKey(id)
	if err != nil {
		return err
	}
	_, err = t.deletePictureKey(k)
	return err
}

// deletePictureKey removes the picture under event key k and its metadata,
// if there is one; it reports whether there was.
func (t *tx) deletePictureKey(k []byte) (bool, error) {
	strangers, pictures := t.tx.Bucket(bucketStrangers), t.tx.Bucket(bucketPictures)
	found := strangers.Get(k) != nil || pictures.Get(k) != nil
	if !found {
		return false, nil
	}
	if err := strangers.Delete(k); err != nil {
		return false, fmt.Errorf("delete picture %x: %w", k, err)
	}
	if err := pictures.Delete(k); err != nil {
		return false, fmt.Errorf("delete picture %x: %w", k, err)
	}
	return true, nil
}

// prunePictures deletes, oldest first, up to limit pictures whose key (the
// arrival time of their event) sorts below cutoff; more reports that it
// stopped at the limit. Their events are normally gone already; this
// catches pictures that outlived them.
func (t *tx) prunePictures(cutoff []byte, limit int) (n int, more bool, err error) {
	var keys [][]byte
	c := t.tx.Bucket(bucketStrangers).Cursor()
	for k, _ := c.First(); k != nil && bytes.Compare(k, cutoff) < 0; k, _ = c.Next() {
		if len(keys) == limit {
			more = true
			break
		}
		keys = append(keys, bytes.Clone(k))
	}
	for _, k := range keys {
		if _, err := t.deletePictureKey(k); err != nil {
			return n, false, err
		}
		n++
	}
	return n, more, nil
}

// Setting returns a copy of a server setting.
func (t *tx) Setting(name string) ([]byte, error) {
	v := t.tx.Bucket(bucketSettings).Get([]byte(name))
	if v == nil {
		return nil, actions.Errorf(actions.ENotFound, "setting %q not set", name)
	}
	return append([]byte(nil), v...), nil
}

// PutSetting sets a server setting.
func (t *tx) PutSetting(name string, value []byte) error {
	return t.tx.Bucket(bucketSettings).Put([]byte(name), value)
}
