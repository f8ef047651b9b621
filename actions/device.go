package actions

import (
	"slices"
	"time"
)

// Device kinds.
const (
	KindLock   = "lock"
	KindLight  = "light"
	KindCamera = "camera"
)

// Device is a lock, light or camera known to the server.
type Device struct {
	ID       string    `json:"id"`
	Kind     string    `json:"kind"`
	Name     string    `json:"name"`
	State    string    `json:"state"`
	Online   bool      `json:"online"`
	LastSeen time.Time `json:"last_seen,omitzero"`
	Firmware string    `json:"firmware"`
	Created  time.Time `json:"created"`
	// Desired is the state the server last asked for, told to the device in
	// its welcome. An unlock never becomes a desired state: a door must not
	// open because a device reconnected long after somebody asked.
	Desired string `json:"desired"`
	// Owner is the user who created or paired the device.
	Owner string `json:"owner,omitempty"`
	// SecretHash is the SHA-256 of the device's secret.
	SecretHash []byte `json:"-"`
}

// kindStates lists the states each kind may report, and kindVerbs the
// commands each kind accepts with the state each one leads to.
var (
	kindStates = map[string][]string{
		KindLock:   {"locked", "unlocked", "locking", "unlocking", "jammed", "open", "unknown"},
		KindLight:  {"on", "off", "unknown"},
		KindCamera: {"on", "off", "unknown"},
	}
	kindVerbs = map[string]map[string]string{
		KindLock:  {"lock": "locked", "unlock": "unlocked"},
		KindLight: {"on": "on", "off": "off"},
	}
)

// ValidKind reports whether kind is a device kind.
func ValidKind(kind string) bool {
	_, ok := kindStates[kind]
	return ok
}

// ValidState reports whether a device of kind may report state.
func ValidState(kind, state string) bool {
	return slices.Contains(kindStates[kind], state)
}

// ValidID reports whether id is usable as a device id: 1 to 64 characters
// of letters, digits, '-', '_' and '.', so that it is one MQTT topic level
// and one word of a payload.
func ValidID(id string) bool {
	if len(id) == 0 || len(id) > 64 || id == "all" || id == "inline" || id == "pair" {
		return false
	}
	for _, r := range id {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_', r == '.':
		default:
			return false
		}
	}
	return true
}

// DeviceTopic is the topic only device id reads.
func DeviceTopic(id string) string { return "todevice/" + id }

// AppTopic is the topic only user name reads.
func AppTopic(name string) string { return "toapp/" + name }

// ServerTopic is the one topic devices and apps publish to.
const ServerTopic = "toserver"

// deviceNotFound is the error for a device that does not exist or that the
// caller may not see: the two are not told apart.
func deviceNotFound(id string) error {
	return Errorf(ENotFound, "device %q not found", id)
}

// visibleDevice loads device id for p, hiding devices p may not see.
func (s *Service) visibleDevice(tx Tx, p Principal, id string) (Device, viewer, error) {
	v, err := s.viewer(tx, p)
	if err != nil {
		return Device{}, v, err
	}
	d, err := tx.Device(id)
	if ErrorCode(err) == ENotFound || (err == nil && !v.sees(d)) {
		return Device{}, v, deviceNotFound(id)
	}
	if err != nil {
		return Device{}, v, err
	}
	return s.withPresence(d), v, nil
}

func (s *Service) withPresence(d Device) Device {
	d.Online = s.isOnline(d.ID)
	return d
}

func (s *Service) isOnline(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.online[id] > 0
}

// NewDevice is what an admin gives to create a device.
type NewDevice struct {
	ID   string
	Kind string
	Name string
}

// CreateDevice creates a device and returns it with its secret, which is
// not kept and cannot be shown again.
func (s *Service) CreateDevice(p Principal, nd NewDevice) (Device, string, error) {
	if !p.IsAdmin() {
		return Device{}, "", Errorf(EForbidden, "only admins create devices")
	}
	if !ValidID(nd.ID) {
		return Device{}, "", Errorf(EInvalid, "device id must be 1-64 letters, digits, '-', '_' or '.', and not a reserved word")
	}
	if !ValidKind(nd.Kind) {
		return Device{}, "", Errorf(EInvalid, "kind must be lock, light or camera")
	}
	if err := validName(nd.Name); err != nil {
		return Device{}, "", err
	}
	secret := NewSecret()
	now := s.now()
	d := Device{ID: nd.ID, Kind: nd.Kind, Name: nd.Name, State: "unknown", Created: now, Desired: "",
		Owner: p.ID, SecretHash: Hash(secret)}
	err := s.update(func(tx Tx) error {
		if _, err := tx.Device(d.ID); err == nil {
			return Errorf(EConflict, "device %q already exists", d.ID)
		} else if ErrorCode(err) != ENotFound {
			return err
		}
		if err := idFree(tx, d.ID); err != nil { // a user's name (one namespace)
			return err
		}
		if err := tx.PutDevice(d); err != nil {
			return err
		}
		return tx.AppendEvent(&Event{Time: now, Type: EventAdmin, Device: d.ID, User: p.ID, Via: ViaREST,
			Detail: "device created: " + d.Kind})
	})
	if err != nil {
		return Device{}, "", err
	}
	return s.withPresence(d), secret, nil
}

func validName(name string) error {
	if len(name) > 128 {
		return Errorf(EInvalid, "name longer than 128 bytes")
	}
	for _, r := range name {
		if r < 0x20 || r == 0x7f || r == 0xfffd {
			return Errorf(EInvalid, "name must be printable text")
		}
	}
	return nil
}

// Devices lists the devices p may see.
func (s *Service) Devices(p Principal) ([]Device, error) {
	var out []Device
	err := s.store.View(func(tx Tx) error {
		v, err := s.viewer(tx, p)
		if err != nil {
			return err
		}
		all, err := tx.Devices()
		for _, d := range all {
			if v.sees(d) {
				out = append(out, v.show(s.withPresence(d)))
			}
		}
		return err
	})
	return out, err
}

// DevicePage lists one page of the devices p may see, ordered by id, from
// the first id after cursor: up to limit of them (50 when 0, at most
// 1000); next is the last id when more may follow, "" at the end. An
// admin's page is read from the store, which seeks to the cursor; anyone
// else's is looked up id by id from their grants in the in-memory access
// index, so a page costs the same however many devices the server holds.
func (s *Service) DevicePage(p Principal, cursor string, limit int) ([]Device, string, error) {
	if limit <= 0 {
		limit = 50
	}
	limit = min(limit, 1000)
	out := []Device{}
	var next string
	err := s.store.View(func(tx Tx) error {
		v, err := s.viewer(tx, p)
		if err != nil {
			return err
		}
		if p.IsAdmin() {
			page, n, err := tx.DevicePage(cursor, limit)
			if err != nil {
				return err
			}
			for _, d := range page {
				out = append(out, v.show(s.withPresence(d)))
			}
			next = n
			return nil
		}
		var ids []string
		switch p.Kind {
		case PrincipalDevice:
			ids = []string{p.ID}
		case PrincipalUser:
			for id := range v.grants {
				ids = append(ids, id)
			}
			slices.Sort(ids)
		}
		i, found := slices.BinarySearch(ids, cursor)
		if found {
			i++
		}
		for ; i < len(ids); i++ {
			if len(out) == limit {
				next = out[len(out)-1].ID
				break
			}
			d, err := tx.Device(ids[i])
			if ErrorCode(err) == ENotFound {
				continue // deleted with its grants in a later commit
			}
			if err != nil {
				return err
			}
			if v.sees(d) {
				out = append(out, v.show(s.withPresence(d)))
			}
		}
		return nil
	})
	if err != nil {
		return nil, "", err
	}
	return out, next, nil
}

// Device returns one device p may see.
func (s *Service) Device(p Principal, id string) (Device, error) {
	var d Device
	err := s.store.View(func(tx Tx) (err error) {
		var v viewer
		d, v, err = s.visibleDevice(tx, p, id)
		d = v.show(d)
		return err
	})
	return d, err
}

// DevicePatch holds the fields of a device an admin may change; nil means
// unchanged.
type DevicePatch struct {
	Name *string
}

// UpdateDevice changes a device's editable fields.
func (s *Service) UpdateDevice(p Principal, id string, patch DevicePatch) (Device, error) {
	var d Device
	err := s.update(func(tx Tx) (err error) {
		if d, _, err = s.visibleDevice(tx, p, id); err != nil {
			return err
		}
		if !p.IsAdmin() {
			return Errorf(EForbidden, "only admins change devices")
		}
		if patch.Name != nil {
			if err := validName(*patch.Name); err != nil {
				return err
			}
			d.Name = *patch.Name
		}
		if err := tx.PutDevice(d); err != nil {
			return err
		}
		return tx.AppendEvent(&Event{Time: s.now(), Type: EventAdmin, Device: id, User: p.ID, Via: ViaREST, Detail: "device updated"})
	})
	return d, err
}

// DeleteDevice removes a device and ends its live connections; its events
// and commands stay in the log.
func (s *Service) DeleteDevice(p Principal, id string) error {
	err := s.update(func(tx Tx) error {
		if _, _, err := s.visibleDevice(tx, p, id); err != nil {
			return err
		}
		if !p.IsAdmin() {
			return Errorf(EForbidden, "only admins delete devices")
		}
		if err := tx.DeleteDevice(id); err != nil {
			return err
		}
		// Its grants go with it: a device made later under the same id
		// must not open for the people this one was granted to.
		grants, err := tx.Grants()
		if err != nil {
			return err
		}
		for _, g := range grants {
			if g.Device == id {
				if err := tx.DeleteGrant(g.ID); err != nil {
					return err
				}
			}
		}
		return tx.AppendEvent(&Event{Time: s.now(), Type: EventAdmin, Device: id, User: p.ID, Via: ViaREST, Detail: "device deleted"})
	})
	if err == nil && s.pub != nil {
		s.pub.Disconnect(Principal{Kind: PrincipalDevice, ID: id})
	}
	return err
}

// offlineGrace is how long a device may be without a connection before
// it is reported offline: a device that reconnects at once (a session
// takeover, a flaky link) shows no offline/online pair.
const offlineGrace = time.Second

// Connected records that principal p opened a connection. For devices this
// is presence: the first live connection makes the device online. Several
// connections are counted, so a session takeover, where the new connection
// may be counted before or after the old one is gone, never reports the
// device offline. It returns at once: the online event is committed and
// announced by the presence worker (notify.go).
func (s *Service) Connected(p Principal, remote string) {
	if p.Kind != PrincipalDevice {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.online[p.ID]++
	if t := s.goingOffline[p.ID]; t != nil {
		t.Stop() // back before anyone was told it left
		delete(s.goingOffline, p.ID)
		return
	}
	if s.online[p.ID] == 1 && !s.closed {
		s.queuePresence(p.ID, EventOnline, remote)
	}
}

// Disconnected records that a connection of p ended. The device is
// reported offline once it has had no connection for offlineGrace.
func (s *Service) Disconnected(p Principal, remote string) {
	if p.Kind != PrincipalDevice {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.online[p.ID]--
	if s.online[p.ID] > 0 || s.closed {
		return
	}
	delete(s.online, p.ID)
	id := p.ID
	var t *time.Timer
	t = time.AfterFunc(offlineGrace, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.goingOffline[id] != t || s.closed {
			return // back meanwhile, or shutting down
		}
		delete(s.goingOffline, id)
		s.queuePresence(id, EventOffline, remote)
	})
	s.goingOffline[id] = t
}
