package actions

import "time"

// Store keeps everything worth keeping. Each call runs fn in one
// transaction: Update commits only when fn returns nil, so the writes a fn
// makes land together or not at all. fn may be called more than once and
// must not have effects outside tx.
type Store interface {
	View(fn func(Tx) error) error
	Update(fn func(Tx) error) error
}

// Tx is one store transaction. Getters return an *Error with code ENotFound
// when the record does not exist. Values returned are copies the caller owns.
type Tx interface {
	Device(id string) (Device, error)
	Devices() ([]Device, error)
	// DevicePage lists up to limit devices (a default when 0) ordered by
	// id, from the first id after cursor; next is the cursor of the
	// following page, "" at the end.
	DevicePage(cursor string, limit int) (devices []Device, next string, err error)
	PutDevice(d Device) error
	DeleteDevice(id string) error

	User(name string) (User, error)
	Users() ([]User, error)
	PutUser(u User) error
	DeleteUser(name string) error

	Token(id string) (Token, error)
	Tokens() ([]Token, error)
	// TokenByHash finds a token by the SHA-256 of its secret.
	TokenByHash(hash []byte) (Token, error)
	PutToken(t Token) error
	// DeleteToken removes the token and its hash: it stops working at once.
	DeleteToken(id string) error

	Grant(id string) (Grant, error)
	Grants() ([]Grant, error)
	PutGrant(g Grant) error
	DeleteGrant(id string) error

	// PutPicture stores a stranger's metadata and picture under st.ID, the
	// id of its stranger event.
	PutPicture(st Stranger, data []byte) error
	Stranger(id string) (Stranger, error)
	Picture(id string) ([]byte, error)
	// Strangers lists pictures newest first, like Events.
	Strangers(q StrangerQuery) (list []Stranger, next string, err error)
	// AllStrangers lists every picture's metadata, oldest first.
	AllStrangers() ([]Stranger, error)
	DeletePicture(id string) error

	// Setting returns a server setting, ENotFound when unset.
	Setting(name string) ([]byte, error)
	PutSetting(name string, value []byte) error

	// LoginAddrs returns the addresses an identity (LoginIdentity) logged
	// in from correctly; PutLoginAddrs replaces them (an empty list
	// deletes them).
	LoginAddrs(identity string) ([]LoginAddr, error)
	PutLoginAddrs(identity string, addrs []LoginAddr) error

	// PairingByHash finds a pairing by the SHA-256 of its code.
	PairingByHash(hash []byte) (Pairing, error)
	PutPairing(p Pairing) error
	DeletePairing(hash []byte) error

	Script(name string) (Script, error)
	// Scripts lists every script, with its source, ordered by name.
	Scripts() ([]Script, error)
	PutScript(sc Script) error
	DeleteScript(name string) error

	Command(id string) (Command, error)
	// PutCommand saves c; commands whose Status is StatusSent are also
	// kept in an index that PendingCommands reads.
	PutCommand(c Command) error
	PendingCommands() ([]Command, error)

	// AppendEvent gives e a time-ordered ID (from e.Time, which must be set)
	// and appends it to the log.
	AppendEvent(e *Event) error
	// Events lists events newest first, matching q, at most q.Limit of them,
	// starting after q.Cursor; next is the cursor of the following page, ""
	// at the end.
	Events(q EventQuery) (events []Event, next string, err error)
	// PruneEvents deletes the oldest events q selects, with their pictures
	// and the commands they name unless still sent, and pictures older
	// than q.Before; at most q.Limit events and pictures in all.
	PruneEvents(q Prune) (Pruned, error)
}

// Publisher sends a message from the server to MQTT subscribers and ends
// the sessions of identities that lost their right to be connected.
type Publisher interface {
	// Publish sends at QoS 1, never retained; ttl > 0 becomes the MQTT 5
	// message expiry.
	Publish(topic string, payload []byte, ttl time.Duration) error
	// Disconnect closes every live connection of the principal with p's
	// kind and id and, when p.Token is set, only those logged in with that
	// token.
	Disconnect(p Principal)
}
