package store_test

import (
	"crypto/sha256"
	"testing"
	"time"

	"gatehouse/actions"
)

func TestUser(t *testing.T) {
	t.Run("OK", func(t *testing.T) {
		db := mustOpen(t)
		alice := actions.User{Name: "alice", Role: actions.RoleAdmin, Created: t0}
		bob := actions.User{Name: "bob", Role: actions.RoleMember, Created: t0.Add(time.Second)}
		mustUpdate(t, db, func(tx actions.Tx) error {
			if err := tx.PutUser(bob); err != nil {
				return err
			}
			return tx.PutUser(alice)
		})
		mustView(t, db, func(tx actions.Tx) error {
			got, err := tx.User("alice")
			if err != nil {
				return err
			}
			if got != alice {
				t.Errorf("User = %+v, want %+v", got, alice)
			}
			all, err := tx.Users()
			if err != nil {
				return err
			}
			if want := []actions.User{alice, bob}; !equal(all, want) {
				t.Errorf("Users = %+v, want %+v", all, want)
			}
			return nil
		})
	})

	t.Run("ErrNotFound", func(t *testing.T) {
		db := mustOpen(t)
		mustView(t, db, func(tx actions.Tx) error {
			_, err := tx.User("nobody")
			wantCode(t, err, actions.ENotFound)
			return nil
		})
	})
}

func TestToken(t *testing.T) {
	hash := func(secret string) []byte {
		h := sha256.Sum256([]byte(secret))
		return h[:]
	}

	t.Run("OK", func(t *testing.T) {
		db := mustOpen(t)
		want := actions.Token{
			ID:       "tok1",
			User:     "alice",
			Name:     "phone",
			Created:  t0,
			LastUsed: t0.Add(time.Hour),
			Expires:  t0.Add(24 * time.Hour),
			Hash:     hash("secret-1"),
		}
		mustUpdate(t, db, func(tx actions.Tx) error { return tx.PutToken(want) })
		mustView(t, db, func(tx actions.Tx) error {
			got, err := tx.TokenByHash(hash("secret-1"))
			if err != nil {
				return err
			}
			if !equal(got, want) {
				t.Errorf("TokenByHash = %+v, want %+v", got, want)
			}
			return nil
		})
	})

	t.Run("HashChange", func(t *testing.T) {
		db := mustOpen(t)
		tok := actions.Token{ID: "tok1", User: "alice", Created: t0, Hash: hash("old")}
		mustUpdate(t, db, func(tx actions.Tx) error { return tx.PutToken(tok) })
		tok.Hash = hash("new")
		mustUpdate(t, db, func(tx actions.Tx) error { return tx.PutToken(tok) })
		mustView(t, db, func(tx actions.Tx) error {
			_, err := tx.TokenByHash(hash("old"))
			wantCode(t, err, actions.ENotFound)
			got, err := tx.TokenByHash(hash("new"))
			if err != nil {
				return err
			}
			if !equal(got, tok) {
				t.Errorf("TokenByHash(new) = %+v, want %+v", got, tok)
			}
			return nil
		})

		// Updating other fields keeps the hash working.
		tok.LastUsed = t0.Add(time.Minute)
		mustUpdate(t, db, func(tx actions.Tx) error { return tx.PutToken(tok) })
		mustView(t, db, func(tx actions.Tx) error {
			got, err := tx.TokenByHash(hash("new"))
			if err != nil {
				return err
			}
			if !got.LastUsed.Equal(tok.LastUsed) {
				t.Errorf("LastUsed = %v, want %v", got.LastUsed, tok.LastUsed)
			}
			return nil
		})
	})

	t.Run("ErrNotFound", func(t *testing.T) {
		db := mustOpen(t)
		mustUpdate(t, db, func(tx actions.Tx) error {
			return tx.PutToken(actions.Token{ID: "tok1", User: "alice", Hash: hash("secret")})
		})
		mustView(t, db, func(tx actions.Tx) error {
			for _, h := range [][]byte{hash("other"), nil, {}} {
				_, err := tx.TokenByHash(h)
				wantCode(t, err, actions.ENotFound)
			}
			return nil
		})
	})

	t.Run("ErrConflict", func(t *testing.T) {
		db := mustOpen(t)
		mustUpdate(t, db, func(tx actions.Tx) error {
			return tx.PutToken(actions.Token{ID: "tok1", User: "alice", Hash: hash("secret")})
		})
		err := db.Update(func(tx actions.Tx) error {
			return tx.PutToken(actions.Token{ID: "tok2", User: "bob", Hash: hash("secret")})
		})
		wantCode(t, err, actions.EConflict)
		mustView(t, db, func(tx actions.Tx) error {
			got, err := tx.TokenByHash(hash("secret"))
			if err != nil {
				return err
			}
			if got.ID != "tok1" {
				t.Errorf("TokenByHash.ID = %q, want %q", got.ID, "tok1")
			}
			return nil
		})
	})
}
