package store

import (
	"encoding/json"
	"fmt"
	"time"

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
	return decodeDevice([]byte(id), v)
}

// Devices returns every device, ordered by id.
func (t *tx) Devices() ([]actions.Device, error) {
	devices := []actions.Device{}
	err := t.tx.Bucket(bucketDevices).ForEach(func(k, v []byte) error {
		d, err := decodeDevice(k, v)
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
		d, err := decodeDevice(k, v)
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
	return nil
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
