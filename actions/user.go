package actions

import (
	"fmt"
	"time"
)

// Roles.
const (
	RoleAdmin  = "admin"
	RoleMember = "member"
	RoleGuest  = "guest"
)

// User is a person who uses the app or the dashboard.
type User struct {
	Name    string    `json:"name"`
	Role    string    `json:"role"`
	Created time.Time `json:"created"`
}

// Token is an API token of a user; the secret itself is never stored.
type Token struct {
	ID       string    `json:"id"`
	User     string    `json:"user"`
	Name     string    `json:"name"`
	Created  time.Time `json:"created"`
	LastUsed time.Time `json:"last_used,omitzero"`
	Expires  time.Time `json:"expires,omitzero"`
	// Hash is the SHA-256 of the token.
	Hash []byte `json:"-"`
}

// Principal kinds.
const (
	PrincipalDevice = "device"
	PrincipalUser   = "user"
)

// Principal is who is acting: an authenticated device or person. It always
// comes from an authenticated connection or request, never from a payload.
type Principal struct {
	Kind  string // PrincipalDevice or PrincipalUser
	ID    string // device id or user name
	Role  string // for users
	Token string // for users: the id of the token used
	// Expires is when the token used expires (zero: never). A session
	// that outlives its token is refused everything from then on.
	Expires time.Time
}

// IsAdmin reports whether p is an administrator.
func (p Principal) IsAdmin() bool { return p.Kind == PrincipalUser && p.Role == RoleAdmin }

// ValidRole reports whether role is a role.
func ValidRole(role string) bool {
	return role == RoleAdmin || role == RoleMember || role == RoleGuest
}

// validUserName: the rules of device ids, and not the pairing username.
func validUserName(name string) error {
	if !ValidID(name) || name == PairUsername {
		return Errorf(EInvalid, "user name must be 1-64 letters, digits, '-', '_' or '.', and not a reserved word")
	}
	return nil
}

// CreateUser adds a person with a first API token, returned once.
func (s *Service) CreateUser(p Principal, name, role string) (User, Token, string, error) {
	if !p.IsAdmin() {
		return User{}, Token{}, "", Errorf(EForbidden, "only admins create users")
	}
	if err := validUserName(name); err != nil {
		return User{}, Token{}, "", err
	}
	if !ValidRole(role) {
		return User{}, Token{}, "", Errorf(EInvalid, "role must be admin, member or guest")
	}
	now := s.now()
	u := User{Name: name, Role: role, Created: now}
	secret := NewSecret()
	t := Token{ID: newID(), User: name, Name: "first", Created: now, Expires: capExpiry(p, time.Time{}), Hash: Hash(secret)}
	err := s.update(func(tx Tx) error {
		if _, err := tx.User(name); err == nil {
			return Errorf(EConflict, "user %q already exists", name)
		} else if ErrorCode(err) != ENotFound {
			return err
		}
		// One namespace with device ids (see idFree).
		if _, err := tx.Device(name); err == nil {
			return Errorf(EConflict, "%q is a device id; a user needs another name", name)
		} else if ErrorCode(err) != ENotFound {
			return err
		}
		if err := tx.PutUser(u); err != nil {
			return err
		}
		if err := tx.PutToken(t); err != nil {
			return err
		}
		return tx.AppendEvent(&Event{Time: now, Type: EventAdmin, User: p.ID, Via: ViaREST,
			Detail: fmt.Sprintf("user %s created as %s", name, role)})
	})
	if err != nil {
		return User{}, Token{}, "", err
	}
	return u, t, secret, nil
}

// Users lists every user for an admin, and only themselves for others.
func (s *Service) Users(p Principal) ([]User, error) {
	var out []User
	err := s.store.View(func(tx Tx) error {
		all, err := tx.Users()
		for _, u := range all {
			if p.IsAdmin() || u.Name == p.ID {
				out = append(out, u)
			}
		}
		return err
	})
	return out, err
}

// DeleteUser removes a person with their tokens and grants, and ends their
// live MQTT sessions and event streams. The last admin cannot be deleted.
func (s *Service) DeleteUser(p Principal, name string) error {
	if !p.IsAdmin() {
		return Errorf(EForbidden, "only admins delete users")
	}
	ends := func(q Principal) bool { return q.Kind == PrincipalUser && q.ID == name }
	err := s.updateEnding(func(tx Tx) error {
		u, err := tx.User(name)
		if err != nil {
			return err
		}
		if err := keepAnAdmin(tx, u); err != nil {
			return err
		}
		tokens, err := tx.Tokens()
		if err != nil {
			return err
		}
		for _, t := range tokens {
			if t.User == name {
				if err := tx.DeleteToken(t.ID); err != nil {
					return err
				}
			}
		}
		grants, err := tx.Grants()
		if err != nil {
			return err
		}
		for _, g := range grants {
			if g.User == name {
				if err := tx.DeleteGrant(g.ID); err != nil {
					return err
				}
			}
		}
		if err := tx.DeleteUser(name); err != nil {
			return err
		}
		return tx.AppendEvent(&Event{Time: s.now(), Type: EventAdmin, User: p.ID, Via: ViaREST,
			Detail: "user " + name + " deleted"})
	}, ends)
	if err == nil && s.pub != nil {
		s.pub.Disconnect(Principal{Kind: PrincipalUser, ID: name})
	}
	return err
}

// mayManageTokens: admins manage everyone's tokens, people their own.
func mayManageTokens(p Principal, user string) error {
	if p.IsAdmin() || (p.Kind == PrincipalUser && p.ID == user) {
		return nil
	}
	return Errorf(ENotFound, "user %q not found", user)
}

// capExpiry is the expiry of a token p makes: asked (zero: never), but no
// later than the expiry of the token p is using, so that a token given for
// a day cannot be turned into one that lasts for ever.
func capExpiry(p Principal, asked time.Time) time.Time {
	if !p.Expires.IsZero() && (asked.IsZero() || asked.After(p.Expires)) {
		return p.Expires
	}
	return asked
}

// CreateToken adds an API token for user, returned once; a zero expires
// means it does not expire. A caller whose own token expires gets a token
// that expires no later than theirs (see capExpiry).
func (s *Service) CreateToken(p Principal, user, name string, expires time.Time) (Token, string, error) {
	if err := mayManageTokens(p, user); err != nil {
		return Token{}, "", err
	}
	if err := validName(name); err != nil {
		return Token{}, "", err
	}
	now := s.now()
	if !expires.IsZero() && !expires.After(now) {
		return Token{}, "", Errorf(EInvalid, "expires must be in the future")
	}
	expires = capExpiry(p, expires)
	secret := NewSecret()
	t := Token{ID: newID(), User: user, Name: name, Created: now, Expires: expires, Hash: Hash(secret)}
	err := s.update(func(tx Tx) error {
		if _, err := tx.User(user); err != nil {
			return err
		}
		if err := tx.PutToken(t); err != nil {
			return err
		}
		return tx.AppendEvent(&Event{Time: now, Type: EventAdmin, User: p.ID, Via: ViaREST,
			Detail: fmt.Sprintf("token %s created for %s", t.ID, user)})
	})
	if err != nil {
		return Token{}, "", err
	}
	return t, secret, nil
}

// Tokens lists a user's tokens (never their secrets).
func (s *Service) Tokens(p Principal, user string) ([]Token, error) {
	if err := mayManageTokens(p, user); err != nil {
		return nil, err
	}
	var out []Token
	err := s.store.View(func(tx Tx) error {
		if _, err := tx.User(user); err != nil {
			return err
		}
		all, err := tx.Tokens()
		for _, t := range all {
			if t.User == user {
				out = append(out, t)
			}
		}
		return err
	})
	return out, err
}

// RevokeToken deletes a token: REST requests with it fail at once, and MQTT
// sessions and event streams opened with it are ended.
func (s *Service) RevokeToken(p Principal, id string) error {
	var t Token
	ends := func(q Principal) bool { return q.Kind == PrincipalUser && q.ID == t.User && q.Token == id }
	err := s.updateEnding(func(tx Tx) (err error) {
		if t, err = tx.Token(id); err != nil {
			return err
		}
		if mayManageTokens(p, t.User) != nil {
			return Errorf(ENotFound, "token %q not found", id)
		}
		if err := tx.DeleteToken(id); err != nil {
			return err
		}
		return tx.AppendEvent(&Event{Time: s.now(), Type: EventAdmin, User: p.ID, Via: ViaREST,
			Detail: fmt.Sprintf("token %s of %s revoked", id, t.User)})
	}, ends)
	if err == nil && s.pub != nil {
		s.pub.Disconnect(Principal{Kind: PrincipalUser, ID: t.User, Token: id})
	}
	return err
}

// IssueToken is the offline recovery path (`gatehouse token create`): it
// creates user with role when missing, or sets the role when given, and
// returns a new token for them.
func (s *Service) IssueToken(user, role string) (string, error) {
	if err := validUserName(user); err != nil {
		return "", err
	}
	if role != "" && !ValidRole(role) {
		return "", Errorf(EInvalid, "role must be admin, member or guest")
	}
	secret, now := NewSecret(), s.now()
	err := s.update(func(tx Tx) error {
		u, err := tx.User(user)
		switch {
		case ErrorCode(err) == ENotFound:
			if err := idFree(tx, user); err != nil { // a device's id (one namespace)
				return err
			}
			if role == "" {
				role = RoleAdmin
			}
			u = User{Name: user, Role: role, Created: now}
		case err != nil:
			return err
		case role != "" && role != u.Role:
			if err := keepAnAdmin(tx, u); err != nil {
				return err
			}
			u.Role = role
		case role != "":
			u.Role = role
		}
		if err := tx.PutUser(u); err != nil {
			return err
		}
		if err := tx.PutToken(Token{ID: newID(), User: user, Name: "command line", Created: now, Hash: Hash(secret)}); err != nil {
			return err
		}
		return tx.AppendEvent(&Event{Time: now, Type: EventAdmin, User: user, Via: ViaServer,
			Detail: fmt.Sprintf("token created offline for %s (%s)", user, u.Role)})
	})
	return secret, err
}

// keepAnAdmin refuses to remove or demote u when u is the last admin.
func keepAnAdmin(tx Tx, u User) error {
	if u.Role != RoleAdmin {
		return nil
	}
	users, err := tx.Users()
	if err != nil {
		return err
	}
	admins := 0
	for _, o := range users {
		if o.Role == RoleAdmin {
			admins++
		}
	}
	if admins == 1 {
		return Errorf(EConflict, "%q is the last admin", u.Name)
	}
	return nil
}
