package actions

import "fmt"

// EventLimit records a client held back by a limit (docs/security.md): a
// device or person publishing faster than its message rate. Adapters report
// it at most once per interval and client, with the number refused since.
const EventLimit = "limit"

// LimitReached records that p was held back by a limit: what says which,
// refused how many of its requests since the last record.
func (s *Service) LimitReached(p Principal, via, what string, refused int) {
	e := &Event{Time: s.now(), Type: EventLimit, Via: via,
		Detail: fmt.Sprintf("%s: %d refused", what, refused)}
	if p.Kind == PrincipalDevice || p.Kind == PrincipalPair {
		e.Device = p.ID
	} else {
		e.User = p.ID
	}
	if err := s.update(func(tx Tx) error { return tx.AppendEvent(e) }); err != nil {
		s.log.Warn("record limit", "error", err)
	}
	s.log.Warn("limit reached", "kind", p.Kind, "id", p.ID, "via", via, "limit", what, "refused", refused)
}
