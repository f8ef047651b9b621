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
	// Devices, when not nil, limits the result to events about these
	// devices (events without a device are then left out).
	Devices map[string]bool
}

// Events lists the events p may see, newest first: admins see all, others
// only the events about devices they can see.
func (s *Service) Events(p Principal, q EventQuery) ([]Event, string, error) {
	var (
		out  []Event
		next string
	)
	err := s.store.View(func(tx Tx) (err error) {
		if !p.IsAdmin() {
			all, err := tx.Devices()
			if err != nil {
				return err
			}
			q.Devices = map[string]bool{}
			for _, d := range all {
				if canSee(p, d) {
					q.Devices[d.ID] = true
				}
			}
		}
		out, next, err = tx.Events(q)
		return err
	})
	return out, next, err
}
