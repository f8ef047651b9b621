package store

import (
	"encoding/json"
	"fmt"
	"time"

	"gatehouse/actions"
)

// grantRecord is a grant as stored; its id is its key.
type grantRecord struct {
	User     string    `json:"user"`
	Device   string    `json:"device"`
	From     time.Time `json:"from,omitzero"`
	Until    time.Time `json:"until,omitzero"`
	Weekdays []string  `json:"weekdays,omitempty"`
	Hours    string    `json:"hours,omitempty"`
	Created  time.Time `json:"created"`
	By       string    `json:"by"`
}

func decodeGrant(k, v []byte) (actions.Grant, error) {
	var r grantRecord
	if err := json.Unmarshal(v, &r); err != nil {
		return actions.Grant{}, fmt.Errorf("decode grant %q: %w", k, err)
	}
	return actions.Grant{ID: string(k), User: r.User, Device: r.Device, From: r.From, Until: r.Until,
		Weekdays: r.Weekdays, Hours: r.Hours, Created: r.Created, By: r.By}, nil
}

// Grant returns the grant id.
func (t *tx) Grant(id string) (actions.Grant, error) {
	v := t.tx.Bucket(bucketGrants).Get([]byte(id))
	if v == nil {
		return actions.Grant{}, actions.Errorf(actions.ENotFound, "grant %q not found", id)
	}
	return decodeGrant([]byte(id), v)
}

// Grants returns every grant, ordered by id.
func (t *tx) Grants() ([]actions.Grant, error) {
	grants := []actions.Grant{}
	err := t.tx.Bucket(bucketGrants).ForEach(func(k, v []byte) error {
		g, err := decodeGrant(k, v)
		grants = append(grants, g)
		return err
	})
	return grants, err
}

// PutGrant creates or replaces grant g.ID.
func (t *tx) PutGrant(g actions.Grant) error {
	if g.ID == "" {
		return actions.Errorf(actions.EInvalid, "grant id is required")
	}
	v, err := json.Marshal(grantRecord{User: g.User, Device: g.Device, From: g.From, Until: g.Until,
		Weekdays: g.Weekdays, Hours: g.Hours, Created: g.Created, By: g.By})
	if err != nil {
		return fmt.Errorf("encode grant %q: %w", g.ID, err)
	}
	return t.tx.Bucket(bucketGrants).Put([]byte(g.ID), v)
}

// DeleteGrant removes grant id.
func (t *tx) DeleteGrant(id string) error {
	if _, err := t.Grant(id); err != nil {
		return err
	}
	return t.tx.Bucket(bucketGrants).Delete([]byte(id))
}

// pairingRecord is a pairing code as stored, under the hash of the code.
type pairingRecord struct {
	Kind    string    `json:"kind"`
	User    string    `json:"user"`
	Created time.Time `json:"created"`
	Expires time.Time `json:"expires"`
}

// PairingByHash finds a pairing by the SHA-256 of its code.
func (t *tx) PairingByHash(hash []byte) (actions.Pairing, error) {
	var v []byte
	if len(hash) > 0 {
		v = t.tx.Bucket(bucketPairings).Get(hash)
	}
	if v == nil {
		return actions.Pairing{}, actions.Errorf(actions.ENotFound, "pairing code not found")
	}
	var r pairingRecord
	if err := json.Unmarshal(v, &r); err != nil {
		return actions.Pairing{}, fmt.Errorf("decode pairing: %w", err)
	}
	return actions.Pairing{Kind: r.Kind, User: r.User, Created: r.Created, Expires: r.Expires,
		Hash: append([]byte(nil), hash...)}, nil
}

// PutPairing stores p under its hash.
func (t *tx) PutPairing(p actions.Pairing) error {
	if len(p.Hash) == 0 {
		return actions.Errorf(actions.EInvalid, "pairing hash is required")
	}
	v, err := json.Marshal(pairingRecord{Kind: p.Kind, User: p.User, Created: p.Created, Expires: p.Expires})
	if err != nil {
		return fmt.Errorf("encode pairing: %w", err)
	}
	return t.tx.Bucket(bucketPairings).Put(p.Hash, v)
}

// DeletePairing removes the pairing with that hash; a missing one is not an
// error, since spending a code twice must fail earlier, at PairingByHash.
func (t *tx) DeletePairing(hash []byte) error {
	return t.tx.Bucket(bucketPairings).Delete(hash)
}
