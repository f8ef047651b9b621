package store

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"

	"gatehouse/actions"
)

// userRecord is a user as stored.
type userRecord struct {
	Role    string    `json:"role"`
	Created time.Time `json:"created"`
}

// tokenRecord is an API token as stored: the hash of its secret, never the
// secret.
type tokenRecord struct {
	User     string    `json:"user"`
	Name     string    `json:"name"`
	Created  time.Time `json:"created"`
	LastUsed time.Time `json:"last_used,omitzero"`
	Expires  time.Time `json:"expires,omitzero"`
	Hash     []byte    `json:"hash,omitempty"`
}

func newTokenRecord(tk actions.Token) tokenRecord {
	return tokenRecord{
		User:     tk.User,
		Name:     tk.Name,
		Created:  tk.Created,
		LastUsed: tk.LastUsed,
		Expires:  tk.Expires,
		Hash:     tk.Hash,
	}
}

func (r tokenRecord) token(id string) actions.Token {
	return actions.Token{
		ID:       id,
		User:     r.User,
		Name:     r.Name,
		Created:  r.Created,
		LastUsed: r.LastUsed,
		Expires:  r.Expires,
		Hash:     r.Hash,
	}
}

func decodeUser(k, v []byte) (actions.User, error) {
	var r userRecord
	if err := json.Unmarshal(v, &r); err != nil {
		return actions.User{}, fmt.Errorf("decode user %q: %w", k, err)
	}
	return actions.User{Name: string(k), Role: r.Role, Created: r.Created}, nil
}

// User returns the user called name.
func (t *tx) User(name string) (actions.User, error) {
	v := t.tx.Bucket(bucketUsers).Get([]byte(name))
	if v == nil {
		return actions.User{}, actions.Errorf(actions.ENotFound, "user %q not found", name)
	}
	return decodeUser([]byte(name), v)
}

// Users returns every user, ordered by name.
func (t *tx) Users() ([]actions.User, error) {
	users := []actions.User{}
	err := t.tx.Bucket(bucketUsers).ForEach(func(k, v []byte) error {
		u, err := decodeUser(k, v)
		if err != nil {
			return err
		}
		users = append(users, u)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return users, nil
}

// PutUser creates or replaces the user u.Name.
func (t *tx) PutUser(u actions.User) error {
	if u.Name == "" {
		return actions.Errorf(actions.EInvalid, "user name is required")
	}
	v, err := json.Marshal(userRecord{Role: u.Role, Created: u.Created})
	if err != nil {
		return fmt.Errorf("encode user %q: %w", u.Name, err)
	}
	if err := t.tx.Bucket(bucketUsers).Put([]byte(u.Name), v); err != nil {
		return fmt.Errorf("put user %q: %w", u.Name, err)
	}
	return nil
}

// DeleteUser removes the user name; their tokens and grants are the
// caller's to remove in the same transaction.
func (t *tx) DeleteUser(name string) error {
	if _, err := t.User(name); err != nil {
		return err
	}
	if err := t.deleteLogins(actions.LoginIdentity(actions.PrincipalUser, name)); err != nil {
		return err
	}
	return t.tx.Bucket(bucketUsers).Delete([]byte(name))
}

// Token returns the token id.
func (t *tx) Token(id string) (actions.Token, error) { return t.token(id) }

// Tokens returns every token, ordered by id.
func (t *tx) Tokens() ([]actions.Token, error) {
	tokens := []actions.Token{}
	err := t.tx.Bucket(bucketTokens).ForEach(func(k, v []byte) error {
		var r tokenRecord
		if err := json.Unmarshal(v, &r); err != nil {
			return fmt.Errorf("decode token %q: %w", k, err)
		}
		tokens = append(tokens, r.token(string(k)))
		return nil
	})
	return tokens, err
}

// DeleteToken removes the token id and its hash.
func (t *tx) DeleteToken(id string) error {
	tk, err := t.token(id)
	if err != nil {
		return err
	}
	if len(tk.Hash) > 0 {
		if err := t.tx.Bucket(bucketTokenHashes).Delete(tk.Hash); err != nil {
			return fmt.Errorf("delete token hash: %w", err)
		}
	}
	return t.tx.Bucket(bucketTokens).Delete([]byte(id))
}

// token returns the token id.
func (t *tx) token(id string) (actions.Token, error) {
	v := t.tx.Bucket(bucketTokens).Get([]byte(id))
	if v == nil {
		return actions.Token{}, actions.Errorf(actions.ENotFound, "token %q not found", id)
	}
	var r tokenRecord
	if err := json.Unmarshal(v, &r); err != nil {
		return actions.Token{}, fmt.Errorf("decode token %q: %w", id, err)
	}
	return r.token(id), nil
}

// TokenByHash finds a token by the SHA-256 of its secret.
func (t *tx) TokenByHash(hash []byte) (actions.Token, error) {
	var id []byte
	if len(hash) > 0 {
		id = t.tx.Bucket(bucketTokenHashes).Get(hash)
	}
	if id == nil {
		// The message never echoes the hash: it is as good as the secret
		// to anyone who can read the log.
		return actions.Token{}, actions.Errorf(actions.ENotFound, "token not found")
	}
	return t.token(string(id))
}

// PutToken creates or replaces the token tk.ID and keeps the hash index in
// step: the old hash stops working as soon as it is replaced.
func (t *tx) PutToken(tk actions.Token) error {
	if tk.ID == "" {
		return actions.Errorf(actions.EInvalid, "token id is required")
	}
	hashes := t.tx.Bucket(bucketTokenHashes)
	if len(tk.Hash) > 0 {
		if owner := hashes.Get(tk.Hash); owner != nil && string(owner) != tk.ID {
			return actions.Errorf(actions.EConflict, "token hash already in use")
		}
	}
	old, err := t.token(tk.ID)
	switch {
	case actions.ErrorCode(err) == actions.ENotFound:
	case err != nil:
		return err
	case len(old.Hash) > 0 && !bytes.Equal(old.Hash, tk.Hash):
		if err := hashes.Delete(old.Hash); err != nil {
			return fmt.Errorf("delete token hash: %w", err)
		}
	}
	v, err := json.Marshal(newTokenRecord(tk))
	if err != nil {
		return fmt.Errorf("encode token %q: %w", tk.ID, err)
	}
	if err := t.tx.Bucket(bucketTokens).Put([]byte(tk.ID), v); err != nil {
		return fmt.Errorf("put token %q: %w", tk.ID, err)
	}
	if len(tk.Hash) > 0 {
		if err := hashes.Put(tk.Hash, []byte(tk.ID)); err != nil {
			return fmt.Errorf("put token hash: %w", err)
		}
	}
	return nil
}
