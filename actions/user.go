package actions

import "time"

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
}

// IsAdmin reports whether p is an administrator.
func (p Principal) IsAdmin() bool { return p.Kind == PrincipalUser && p.Role == RoleAdmin }
