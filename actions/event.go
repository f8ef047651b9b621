package actions

import "time"

// Event types.
const (
	EventCommand      = "command"
	EventAck          = "ack"
	EventState        = "state"
	EventOnline       = "online"
	EventOffline      = "offline"
	EventHandShake    = "hand_shake"
	EventStranger     = "stranger"
	EventLoginRefused = "login_refused"
	EventPairing      = "pairing"
	EventScript       = "script"
	EventAdmin        = "admin"
)

// Event is one entry of the append-only log.
type Event struct {
	ID      string    `json:"id"`
	Time    time.Time `json:"time"`
	Type    string    `json:"type"`
	Device  string    `json:"device,omitempty"`
	User    string    `json:"user,omitempty"`
	Via     string    `json:"via,omitempty"`
	Command string    `json:"command,omitempty"`
	Detail  string    `json:"detail,omitempty"`
}

// EventQuery selects events: empty fields match everything.
type EventQuery struct {
	Device string
	Type   string
	// User selects the events of one person (the event's User).
	User   string
	Limit  int
	Cursor string
	// Filter, when not nil, keeps only the events it returns true for.
	Filter func(Event) bool
	// Scope, when not nil, keeps only the events about its devices, each
	// from its time on (the zero time: all of them): what a person may
	// read, so the store walks only those devices' events. Filter still
	// has the last word.
	Scope map[string]time.Time
	// After, when set, lists the events after that id, oldest first
	// (for resuming a stream), instead of newest first.
	After string
}

// Events lists the events p may read, newest first: admins read all,
// others only the events about devices the access rules let them read.
func (s *Service) Events(p Principal, q EventQuery) ([]Event, string, error) {
	var (
		out  []Event
		next string
	)
	err := s.store.View(func(tx Tx) (err error) {
		if q.Filter, err = s.readFilter(tx, p); err != nil {
			return err
		}
		if q.Scope, err = s.readScope(tx, p); err != nil {
			return err
		}
		out, next, err = tx.Events(q)
		return err
	})
	return out, next, err
}

// readFilter returns whether p may read an event (or a picture), by its
// device and time; nil means everything, for admins.
func (s *Service) readFilter(tx Tx, p Principal) (func(Event) bool, error) {
	if p.IsAdmin() {
		return nil, nil
	}
	v, err := s.viewer(tx, p)
	if err != nil {
		return nil, err
	}
	// A device deleted takes its grants with it, so a grant means the
	// device exists.
	return func(e Event) bool { return e.Device != "" && v.reads(Device{ID: e.Device}, e.Time) }, nil
}

// readScope returns the devices p may read events about, each with the
// earliest time any of p's grants for it lets them read; nil means every
// device, for admins. Nobody reads an event from before their grant
// (see viewer.reads), so the store need not walk past it.
func (s *Service) readScope(tx Tx, p Principal) (map[string]time.Time, error) {
	if p.IsAdmin() {
		return nil, nil
	}
	scope := map[string]time.Time{}
	switch p.Kind {
	case PrincipalDevice:
		scope[p.ID] = time.Time{}
	case PrincipalUser:
		v, err := s.viewer(tx, p)
		if err != nil {
			return nil, err
		}
		for id, grants := range v.grants {
			since := grants[0].Created
			for _, g := range grants[1:] {
				if g.Created.Before(since) {
					since = g.Created
				}
			}
			scope[id] = since
		}
	}
	return scope, nil
}

// CanRead reports whether p may read event e now. It reads the in-memory
// access index, no store: it runs for each event and each live stream.
func (s *Service) CanRead(p Principal, e Event) bool {
	if p.IsAdmin() {
		return true
	}
	var grants []Grant
	if p.Kind == PrincipalUser {
		ix := s.index.cur.Load()
		if ix == nil {
			ok := false
			_ = s.store.View(func(tx Tx) error {
				filter, err := s.readFilter(tx, p)
				ok = err == nil && (filter == nil || filter(e))
				return nil
			})
			return ok
		}
		grants = ix.byUser[p.ID]
	}
	return e.Device != "" && newViewer(p, grants, s.now(), s.loc).reads(Device{ID: e.Device}, e.Time)
}
