package store

import (
	"encoding/json"
	"fmt"
	"time"

	"gatehouse/actions"
)

// loginRecord is the addresses an identity logged in from correctly; its
// key is the identity ("user:alice", "device:door1").
type loginRecord struct {
	Addrs []loginAddrRecord `json:"addrs"`
}

type loginAddrRecord struct {
	Addr string    `json:"addr"`
	At   time.Time `json:"at"`
}

// LoginAddrs returns the addresses identity logged in from, as last
// written by PutLoginAddrs.
func (t *tx) LoginAddrs(identity string) ([]actions.LoginAddr, error) {
	v := t.tx.Bucket(bucketLogins).Get([]byte(identity))
	if v == nil {
		return nil, actions.Errorf(actions.ENotFound, "no login addresses for %q", identity)
	}
	var r loginRecord
	if err := json.Unmarshal(v, &r); err != nil {
		return nil, fmt.Errorf("decode login addresses %q: %w", identity, err)
	}
	out := make([]actions.LoginAddr, 0, len(r.Addrs))
	for _, a := range r.Addrs {
		out = append(out, actions.LoginAddr{Addr: a.Addr, At: a.At})
	}
	return out, nil
}

// PutLoginAddrs replaces the addresses identity logged in from; an empty
// list deletes the record.
func (t *tx) PutLoginAddrs(identity string, addrs []actions.LoginAddr) error {
	if identity == "" {
		return actions.Errorf(actions.EInvalid, "identity is required")
	}
	b := t.tx.Bucket(bucketLogins)
	if len(addrs) == 0 {
		return b.Delete([]byte(identity))
	}
	r := loginRecord{Addrs: make([]loginAddrRecord, 0, len(addrs))}
	for _, a := range addrs {
		r.Addrs = append(r.Addrs, loginAddrRecord{Addr: a.Addr, At: a.At})
	}
	v, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("encode login addresses %q: %w", identity, err)
	}
	return b.Put([]byte(identity), v)
}

// deleteLogins forgets the addresses of identity, when its user or device
// is deleted, so that a later one of the same name starts afresh.
func (t *tx) deleteLogins(identity string) error {
	if b := t.tx.Bucket(bucketLogins); b != nil {
		return b.Delete([]byte(identity))
	}
	return nil
}
