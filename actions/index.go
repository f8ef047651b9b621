package actions

import (
	"sync"
	"sync/atomic"
)

// accessIndex is the in-memory copy of who may see what: every person's
// role and every grant, by person and by device. The hot paths (each event
// for each live stream, each notification, each request's access check)
// read it instead of running a transaction and a scan of all grants.
//
// It is built at Open and rebuilt, from a fresh read transaction, after
// every commit that changed a person or a grant (recordingTx notes which),
// before that write returns to its caller; a device deleted takes its
// grants with it, so devices need no entry. An index is never changed once
// built: readers take the current one without a lock.
type accessIndex struct {
	users    map[string]User    // name → person
	byUser   map[string][]Grant // person → their grants
	byDevice map[string][]Grant // device id → its grants
	admins   []string
}

func buildIndex(tx Tx) (*accessIndex, error) {
	users, err := tx.Users()
	if err != nil {
		return nil, err
	}
	grants, err := tx.Grants()
	if err != nil {
		return nil, err
	}
	ix := &accessIndex{users: make(map[string]User, len(users)), byUser: map[string][]Grant{}, byDevice: map[string][]Grant{}}
	for _, u := range users {
		ix.users[u.Name] = u
		if u.Role == RoleAdmin {
			ix.admins = append(ix.admins, u.Name)
		}
	}
	for _, g := range grants {
		ix.byUser[g.User] = append(ix.byUser[g.User], g)
		ix.byDevice[g.Device] = append(ix.byDevice[g.Device], g)
	}
	return ix, nil
}

// indexHolder is the service's current index.
type indexHolder struct {
	cur     atomic.Pointer[accessIndex]
	rebuild sync.Mutex // one rebuild at a time, in commit order
}

// access returns the current index, building it from tx when the service
// has none yet (a Service used without Open).
func (s *Service) access(tx Tx) (*accessIndex, error) {
	if ix := s.index.cur.Load(); ix != nil {
		return ix, nil
	}
	ix, err := buildIndex(tx)
	if err != nil {
		return nil, err
	}
	s.index.cur.CompareAndSwap(nil, ix)
	return ix, nil
}

// reindex rebuilds the index from a fresh read transaction, after a commit
// that changed people or grants. It must not run inside a transaction.
func (s *Service) reindex() {
	s.index.rebuild.Lock()
	defer s.index.rebuild.Unlock()
	var ix *accessIndex
	err := s.store.View(func(tx Tx) (err error) {
		ix, err = buildIndex(tx)
		return err
	})
	if err != nil {
		// Keep no stale index: the next access check builds one from its
		// own transaction.
		s.log.Error("rebuild access index", "error", err)
		s.index.cur.Store(nil)
		return
	}
	s.index.cur.Store(ix)
}

// readers returns the people who may read what happens to device id at
// time at, by the index: admins, and grantees whose grants let them.
func (s *Service) readers(ix *accessIndex, id string) []Principal {
	now := s.now()
	out := make([]Principal, 0, len(ix.admins)+len(ix.byDevice[id]))
	for _, name := range ix.admins {
		out = append(out, Principal{Kind: PrincipalUser, ID: name, Role: RoleAdmin})
	}
	seen := map[string]bool{}
	for _, g := range ix.byDevice[id] {
		u, ok := ix.users[g.User]
		if !ok || u.Role == RoleAdmin || seen[u.Name] {
			continue
		}
		seen[u.Name] = true
		p := Principal{Kind: PrincipalUser, ID: u.Name, Role: u.Role}
		if newViewer(p, ix.byUser[u.Name], now, s.loc).reads(Device{ID: id}, now) {
			out = append(out, p)
		}
	}
	return out
}
