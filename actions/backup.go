package actions

import "io"

// Snapshotter is a Store that can copy itself consistently while writes go
// on; size is called with the copy's length before it is written.
type Snapshotter interface {
	Snapshot(w io.Writer, size func(int64)) (int64, error)
}

// Backup streams a consistent snapshot of the whole state to w, for admins.
func (s *Service) Backup(p Principal, w io.Writer, size func(int64)) error {
	if !p.IsAdmin() {
		return Errorf(EForbidden, "only admins take backups")
	}
	snap, ok := s.store.(Snapshotter)
	if !ok {
		return Errorf(EUnavailable, "this store cannot take backups")
	}
	if err := s.update(func(tx Tx) error {
		return tx.AppendEvent(&Event{Time: s.now(), Type: EventAdmin, User: p.ID, Via: ViaREST, Detail: "backup taken"})
	}); err != nil {
		return err
	}
	_, err := snap.Snapshot(w, size)
	return err
}
