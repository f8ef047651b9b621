package actions

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strings"
	"time"
)

// Pairing is a one-time code with which a new device brings itself in: it
// logs in as "pair" with the code as password and the id it wants as
// client id, and its hand_shake creates it, owned by the code's creator.
type Pairing struct {
	Kind    string    `json:"kind"`
	User    string    `json:"user"`
	Created time.Time `json:"created"`
	Expires time.Time `json:"expires"`
	// Hash is the SHA-256 of the normalised code; the code is not kept.
	Hash []byte `json:"-"`
}

// codeAlphabet has no 0/O or 1/I/L, so codes survive being read aloud and
// typed on a phone.
const codeAlphabet = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"

// newCode returns a code like "K7QM-3XWA": 8 characters, about 40 bits.
func newCode() string {
	out := make([]byte, 0, 9)
	var b [1]byte
	for len(out) < 9 {
		if len(out) == 4 {
			out = append(out, '-')
			continue
		}
		rand.Read(b[:])
		if int(b[0]) >= 256-256%len(codeAlphabet) {
			continue // keep every character equally likely
		}
		out = append(out, codeAlphabet[int(b[0])%len(codeAlphabet)])
	}
	return string(out)
}

// normalizeCode makes what a person typed comparable: upper case, without
// dashes or spaces.
func normalizeCode(code string) string {
	return strings.ToUpper(strings.NewReplacer("-", "", " ", "").Replace(code))
}

// CreatePairing makes a one-time code with which a new device of kind can
// bring itself in; the device will be granted to p. Admins and members may
// pair devices, guests may not.
func (s *Service) CreatePairing(p Principal, kind string) (code string, pr Pairing, err error) {
	if p.Kind != PrincipalUser || (p.Role != RoleAdmin && p.Role != RoleMember) {
		return "", Pairing{}, Errorf(EForbidden, "only admins and members pair devices")
	}
	if !ValidKind(kind) {
		return "", Pairing{}, Errorf(EInvalid, "kind must be lock, light or camera")
	}
	code = newCode()
	now := s.now()
	pr = Pairing{Kind: kind, User: p.ID, Created: now, Expires: now.Add(s.pairTTL), Hash: Hash(normalizeCode(code))}
	err = s.update(func(tx Tx) error {
		if err := tx.PutPairing(pr); err != nil {
			return err
		}
		return tx.AppendEvent(&Event{Time: now, Type: EventPairing, User: p.ID, Via: ViaREST,
			Detail: "pairing code created for a " + kind})
	})
	if err != nil {
		return "", Pairing{}, err
	}
	return code, pr, nil
}

// idFree says whether id can name a new device or user: device ids and
// user names are one namespace, since an MQTT login's client id is its
// username, and a device named like a person (or the other way round)
// would make "alice" mean two identities.
func idFree(tx Tx, id string) error {
	if _, err := tx.Device(id); err == nil {
		return Errorf(EConflict, "device id %q is taken", id)
	} else if ErrorCode(err) != ENotFound {
		return err
	}
	if _, err := tx.User(id); err == nil {
		return Errorf(EConflict, "%q is a user name; a device needs another id", id)
	} else if ErrorCode(err) != ENotFound {
		return err
	}
	return nil
}

// pairDevice is hand_shake from a pair login: it creates the device with a
// new secret, grants it to the code's creator and spends the code, all in
// one transaction, then answers "credentials <id> <secret>".
func (s *Service) pairDevice(m Message) (string, error) {
	if len(m.Args) == 0 {
		return "", Errorf(EInvalid, "usage: hand_shake <kind> [firmware] [name…]")
	}
	hash, err := hex.DecodeString(m.Sender.Token)
	if err != nil {
		return "", Errorf(EUnauthorized, "not a pairing login")
	}
	secret, now := NewSecret(), s.now()
	id := m.Sender.ID
	err = s.update(func(tx Tx) error {
		pr, err := tx.PairingByHash(hash)
		if err != nil {
			return Errorf(EConflict, "pairing code already used")
		}
		if !now.Before(pr.Expires) {
			return Errorf(EConflict, "pairing code expired")
		}
		if m.Args[0] != pr.Kind {
			return Errorf(EInvalid, "this pairing code is for a %s, not a %q", pr.Kind, clip(m.Args[0]))
		}
		if err := idFree(tx, id); err != nil {
			return err
		}
		d := Device{ID: id, Kind: pr.Kind, State: "unknown", Created: now, Owner: pr.User, SecretHash: Hash(secret)}
		if len(m.Args) > 1 {
			if d.Firmware, err = firmware(m.Args[1]); err != nil {
				return err
			}
		}
		if len(m.Args) > 2 {
			if name := strings.Join(m.Args[2:], " "); validName(name) == nil {
				d.Name = name
			}
		}
		if err := tx.PutDevice(d); err != nil {
			return err
		}
		if err := tx.DeletePairing(hash); err != nil {
			return err
		}
		owner, err := tx.User(pr.User)
		if err != nil {
			return Errorf(EConflict, "the person who made this pairing code no longer exists")
		}
		if owner.Role != RoleAdmin {
			if err := tx.PutGrant(Grant{ID: newID(), User: pr.User, Device: id, Created: now, By: pr.User}); err != nil {
				return err
			}
		}
		return tx.AppendEvent(&Event{Time: now, Type: EventPairing, Device: id, User: pr.User, Via: m.Via,
			Detail: "device paired: " + pr.Kind})
	})
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("%s credentials %s %s", DeviceTopic(id), id, secret), nil
}
