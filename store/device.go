package store

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sync"
	"time"
	"unicode/utf8"

	"gatehouse/actions"
)

// deviceRecord is a device as stored. Online is left out on purpose:
// presence is known only to the running broker.
type deviceRecord struct {
	Kind       string    `json:"kind"`
	Name       string    `json:"name"`
	State      string    `json:"state"`
	LastSeen   time.Time `json:"last_seen,omitzero"`
	Firmware   string    `json:"firmware,omitempty"`
	Created    time.Time `json:"created"`
	Desired    string    `json:"desired,omitempty"`
	Owner      string    `json:"owner,omitempty"`
	SecretHash []byte    `json:"secret_hash,omitempty"`
}

func newDeviceRecord(d actions.Device) deviceRecord {
	return deviceRecord{
		Kind:       d.Kind,
		Name:       d.Name,
		State:      d.State,
		LastSeen:   d.LastSeen,
		Firmware:   d.Firmware,
		Created:    d.Created,
		Desired:    d.Desired,
		Owner:      d.Owner,
		SecretHash: d.SecretHash,
	}
}

func (r deviceRecord) device(id string) actions.Device {
	return actions.Device{
		ID:         id,
		Kind:       r.Kind,
		Name:       r.Name,
		State:      r.State,
		LastSeen:   r.LastSeen,
		Firmware:   r.Firmware,
		Created:    r.Created,
		Desired:    r.Desired,
		Owner:      r.Owner,
		SecretHash: r.SecretHash,
	}
}

func decodeDevice(k, v []byte) (actions.Device, error) {
	countDecode()
	var r deviceRecord
	if err := json.Unmarshal(v, &r); err != nil {
		return actions.Device{}, fmt.Errorf("decode device %q: %w", k, err)
	}
	return r.device(string(k)), nil
}

// Device returns the device with id; Online is always false.
func (t *tx) Device(id string) (actions.Device, error) {
	v := t.tx.Bucket(bucketDevices).Get([]byte(id))
	if v == nil {
		return actions.Device{}, actions.Errorf(actions.ENotFound, "device %q not found", id)
	}
	return t.decodeDevice([]byte(id), v)
}

// decodeDevice is decodeDevice through the cache: the device stored as v
// under k.
func (t *tx) decodeDevice(k, v []byte) (actions.Device, error) {
	if d, ok := t.devices.get(string(k), v); ok {
		return d, nil
	}
	d, err := decodeDevice(k, v)
	if err == nil {
		t.devices.put(string(k), bytes.Clone(v), d)
	}
	return d, err
}

// maxCachedDevices bounds the device cache: about 600 bytes each.
const maxCachedDevices = 8192

// deviceCache keeps the devices read or written last, decoded, with the
// record each was decoded from, so that a device reporting again is not
// decoded again. It is never the truth: an entry is used only when its
// record is, byte for byte, the one the transaction reads, so a write that
// was rolled back, a transaction that reads an older version, an import or
// a restore can never see a stale device through it.
type deviceCache struct {
	mu sync.Mutex
	m  map[string]cachedDevice
}

type cachedDevice struct {
	raw []byte
	d   actions.Device
}

func (c *deviceCache) get(id string, raw []byte) (actions.Device, bool) {
	if c == nil {
		return actions.Device{}, false
	}
	c.mu.Lock()
	e, ok := c.m[id]
	c.mu.Unlock()
	if !ok || !bytes.Equal(e.raw, raw) {
		return actions.Device{}, false
	}
	d := e.d
	d.SecretHash = bytes.Clone(d.SecretHash) // the caller's to change
	return d, true
}

// put caches d, decoded from (or encoded as) raw, which the cache keeps.
func (c *deviceCache) put(id string, raw []byte, d actions.Device) {
	if c == nil {
		return
	}
	d.SecretHash = bytes.Clone(d.SecretHash)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]cachedDevice{}
	}
	if _, ok := c.m[id]; !ok && len(c.m) >= maxCachedDevices {
		for k := range c.m { // an arbitrary one
			delete(c.m, k)
			break
		}
	}
	c.m[id] = cachedDevice{raw: raw, d: d}
}

// Devices returns every device, ordered by id.
func (t *tx) Devices() ([]actions.Device, error) {
	devices := []actions.Device{}
	err := t.tx.Bucket(bucketDevices).ForEach(func(k, v []byte) error {
		d, err := t.decodeDevice(k, v)
		if err != nil {
			return err
		}
		devices = append(devices, d)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return devices, nil
}

// Page sizes of DevicePage.
const (
	defaultDeviceLimit = 50
	maxDeviceLimit     = 1000
)

// DevicePage returns up to limit devices (50 when not set, at most 1000)
// ordered by id, the first with an id after cursor ("" for the start). It
// seeks to the cursor and decodes only the devices it returns; next is the
// last id returned when another device follows, "" otherwise.
func (t *tx) DevicePage(cursor string, limit int) ([]actions.Device, string, error) {
	if limit <= 0 {
		limit = defaultDeviceLimit
	}
	limit = min(limit, maxDeviceLimit)
	c := t.tx.Bucket(bucketDevices).Cursor()
	k, v := c.First()
	if cursor != "" {
		if k, v = c.Seek([]byte(cursor)); k != nil && string(k) == cursor {
			k, v = c.Next()
		}
	}
	devices := []actions.Device{}
	for ; k != nil; k, v = c.Next() {
		if len(devices) == limit {
			return devices, devices[len(devices)-1].ID, nil
		}
		d, err := t.decodeDevice(k, v)
		if err != nil {
			return nil, "", err
		}
		devices = append(devices, d)
	}
	return devices, "", nil
}

// PutDevice creates or replaces the device d.ID; d.Online is not stored.
func (t *tx) PutDevice(d actions.Device) error {
	if d.ID == "" {
		return actions.Errorf(actions.EInvalid, "device id is required")
	}
	v, err := json.Marshal(newDeviceRecord(d))
	if err != nil {
		return fmt.Errorf("encode device %q: %w", d.ID, err)
	}
	if err := t.tx.Bucket(bucketDevices).Put([]byte(d.ID), v); err != nil {
		return fmt.Errorf("put device %q: %w", d.ID, err)
	}
	// Cached as a read would decode it, used only if this commit holds v.
	if r := newDeviceRecord(d); r.plain() {
		t.devices.put(d.ID, v, r.decoded(d.ID))
	}
	return nil
}

// plain reports whether r's text fields are valid UTF-8, which JSON keeps
// as they are (it replaces invalid bytes).
func (r deviceRecord) plain() bool {
	for _, s := range []string{r.Kind, r.Name, r.State, r.Firmware, r.Desired, r.Owner} {
		if !utf8.ValidString(s) {
			return false
		}
	}
	return true
}

// decoded is what decoding r's JSON gives: the device without its
// monotonic clock readings and with the times' locations as parsing them
// gives, so a cached device is the one a read would return.
func (r deviceRecord) decoded(id string) actions.Device {
	d := r.device(id)
	d.LastSeen, d.Created = asParsed(d.LastSeen), asParsed(d.Created)
	if len(d.SecretHash) == 0 {
		d.SecretHash = nil // omitted when empty
	}
	return d
}

func asParsed(t time.Time) time.Time {
	if t.IsZero() {
		return time.Time{}
	}
	p, err := time.Parse(time.RFC3339Nano, t.Format(time.RFC3339Nano))
	if err != nil {
		return t
	}
	return p
}

// DeleteDevice removes the device id. Its commands and events stay: they
// are history.
func (t *tx) DeleteDevice(id string) error {
	b := t.tx.Bucket(bucketDevices)
	if b.Get([]byte(id)) == nil {
		return actions.Errorf(actions.ENotFound, "device %q not found", id)
	}
	if err := b.Delete([]byte(id)); err != nil {
		return fmt.Errorf("delete device %q: %w", id, err)
	}
	return t.deleteLogins(actions.LoginIdentity(actions.PrincipalDevice, id))
}
