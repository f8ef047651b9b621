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
	Limit  int
	Cursor string
	// Filter, when not nil, keeps only the events it returns true for.
	Filter func(Event) bool
}

// Events lists the events p may read, newest first: admins read all,
// others only the events about devices the access rules let them read.
func (s *Service) Events(p Principal, q EventQuery) ([]Event, string, error) {
	var (
		out  []Event
		next string
	)
	err := s.store.View(func(tx Tx) (err error) {
		if !p.IsAdmin() {
			v, err := s.viewer(tx, p)
			if err != nil {
				return err
			}
			all, err := tx.Devices()
			if err != nil {
				return err
			}
			devices := map[string]Device{}
			for _, d := range all {
				if v.sees(d) {
					devices[d.ID] = d
				}
			}
			q.Filter = func(e Event) bool {
				d, ok := devices[e.Device]
				return ok && v.reads(d, e.Time)
			}
		}
		out, next, err = tx.Events(q)
		return err
	})
	return out, next, err
}
