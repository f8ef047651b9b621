package actions

import "time"

// viewer is what one principal may see and do at one moment, with the
// principal's grants loaded once. Every read and command path asks it:
//
//   - admins see, read and operate everything;
//   - a device sees and reads itself and operates nothing;
//   - a person sees the devices they hold a grant for (pairing a device
//     grants it to the person who made the code); a member reads (events,
//     notifications, pictures) what happened to a granted device since the
//     grant was made, a guest only what falls inside a grant's window since
//     that grant was made, and only while a window is open; both operate a
//     granted device while a grant's window is open;
//   - a guest learns a device's live state (state, online, last seen,
//     desired state) only while one of their grants for it is open: outside
//     every window, and once a grant has ended, the device is shown without
//     them (see show), so that access ends when the window does.
type viewer struct {
	p      Principal
	grants map[string][]Grant // device id → the principal's grants
	now    time.Time
	loc    *time.Location
}

func (s *Service) viewer(tx Tx, p Principal) (viewer, error) {
	var grants []Grant
	if p.Kind == PrincipalUser && p.Role != RoleAdmin {
		ix, err := s.access(tx)
		if err != nil {
			return viewer{}, err
		}
		grants = ix.byUser[p.ID]
	}
	return newViewer(p, grants, s.now(), s.loc), nil
}

// newViewer keeps the grants among grants that belong to p.
func newViewer(p Principal, grants []Grant, now time.Time, loc *time.Location) viewer {
	v := viewer{p: p, grants: map[string][]Grant{}, now: now, loc: loc}
	for _, g := range grants {
		if p.Kind == PrincipalUser && g.User == p.ID {
			v.grants[g.Device] = append(v.grants[g.Device], g)
		}
	}
	return v
}

// sees reports whether d exists for the principal at all.
func (v viewer) sees(d Device) bool {
	switch {
	case v.p.Kind == PrincipalDevice:
		return v.p.ID == d.ID
	case v.p.Kind != PrincipalUser:
		return false
	case v.p.Role == RoleAdmin:
		return true
	}
	return len(v.grants[d.ID]) > 0
}

// reads reports whether the principal may learn what happened to d at time
// at: its events, notifications and pictures.
func (v viewer) reads(d Device, at time.Time) bool {
	if !v.sees(d) {
		return false
	}
	if v.p.Kind == PrincipalDevice || v.p.Role == RoleAdmin {
		return true
	}
	if v.p.Role == RoleMember { // what happened since they were given the device
		for _, g := range v.grants[d.ID] {
			if !at.Before(g.Created) {
				return true
			}
		}
		return false
	}
	if v.activeGrant(d.ID, v.now) == "" {
		return false
	}
	for _, g := range v.grants[d.ID] { // as members: nothing from before the grant
		if !at.Before(g.Created) && g.ActiveAt(at, v.loc) {
			return true
		}
	}
	return false
}

// live reports whether the principal may learn d's live state now: its
// state, presence, last activity and desired state.
func (v viewer) live(d Device) bool {
	if !v.sees(d) {
		return false
	}
	if v.p.Kind == PrincipalUser && v.p.Role == RoleGuest {
		return v.activeGrant(d.ID, v.now) != ""
	}
	return true
}

// show is d as the principal may see it: without its live state when the
// principal may not learn it now (a guest outside every window).
func (v viewer) show(d Device) Device {
	if !v.live(d) {
		d.State, d.Online, d.LastSeen, d.Desired = "unknown", false, time.Time{}, ""
	}
	return d
}

// activeGrant returns the id of a grant for device id open at t, or "".
func (v viewer) activeGrant(id string, t time.Time) string {
	for _, g := range v.grants[id] {
		if g.ActiveAt(t, v.loc) {
			return g.ID
		}
	}
	return ""
}

// operates returns nil when the principal may command d now, with the id
// of the grant that allows it ("" for admins).
func (v viewer) operates(d Device) (grant string, err error) {
	switch {
	case v.p.Kind != PrincipalUser:
		return "", Errorf(EForbidden, "only people can send commands")
	case !v.sees(d):
		return "", deviceNotFound(d.ID)
	case v.p.Role == RoleAdmin:
		return "", nil
	}
	if g := v.activeGrant(d.ID, v.now); g != "" {
		return g, nil
	}
	return "", Errorf(EForbidden, "your grant for device %q does not allow it now", d.ID)
}
