package store_test

import (
	"bytes"
	"testing"
	"time"

	"gatehouse/actions"
	"gatehouse/store"
)

func TestLoginAddrs(t *testing.T) {
	db := mustOpen(t)
	at := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	alice := actions.LoginIdentity(actions.PrincipalUser, "alice")
	door := actions.LoginIdentity(actions.PrincipalDevice, "door")
	want := []actions.LoginAddr{{Addr: "192.0.2.1", At: at}, {Addr: "2001:db8::/64", At: at.Add(-time.Hour)}}
	err := db.Update(func(tx actions.Tx) error {
		if _, err := tx.LoginAddrs(alice); actions.ErrorCode(err) != actions.ENotFound {
			t.Errorf("no record yet: %v, want not found", err)
		}
		if err := tx.PutUser(actions.User{Name: "alice", Role: actions.RoleMember, Created: at}); err != nil {
			return err
		}
		if err := tx.PutDevice(actions.Device{ID: "door", Kind: actions.KindLock, Created: at}); err != nil {
			return err
		}
		if err := tx.PutLoginAddrs(alice, want); err != nil {
			return err
		}
		return tx.PutLoginAddrs(door, want[:1])
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Run("OK", func(t *testing.T) {
		db.View(func(tx actions.Tx) error {
			got, err := tx.LoginAddrs(alice)
			if err != nil || len(got) != 2 || got[0] != want[0] || !got[1].At.Equal(want[1].At) || got[1].Addr != want[1].Addr {
				t.Errorf("LoginAddrs = %+v, %v; want %+v", got, err, want)
			}
			return nil
		})
	})
	t.Run("Exported", func(t *testing.T) {
		var buf bytes.Buffer
		if err := db.Export(&buf); err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(buf.Bytes(), []byte(`"name": "logins"`)) || !bytes.Contains(buf.Bytes(), []byte("2001:db8::/64")) {
			t.Errorf("export has no logins bucket:\n%s", buf.Bytes())
		}
	})
	t.Run("DeletedWithTheirUserOrDevice", func(t *testing.T) {
		err := db.Update(func(tx actions.Tx) error {
			if err := tx.DeleteUser("alice"); err != nil {
				return err
			}
			return tx.DeleteDevice("door")
		})
		if err != nil {
			t.Fatal(err)
		}
		db.View(func(tx actions.Tx) error {
			for _, id := range []string{alice, door} {
				if got, err := tx.LoginAddrs(id); actions.ErrorCode(err) != actions.ENotFound {
					t.Errorf("%s after its deletion: %+v, %v", id, got, err)
				}
			}
			return nil
		})
	})
	t.Run("EmptyListDeletes", func(t *testing.T) {
		bob := actions.LoginIdentity(actions.PrincipalUser, "bob")
		db.Update(func(tx actions.Tx) error {
			if err := tx.PutLoginAddrs(bob, want); err != nil {
				t.Fatal(err)
			}
			return tx.PutLoginAddrs(bob, nil)
		})
		db.View(func(tx actions.Tx) error {
			if _, err := tx.LoginAddrs(bob); actions.ErrorCode(err) != actions.ENotFound {
				t.Errorf("after an empty list: %v, want not found", err)
			}
			return nil
		})
	})
	if store.SchemaVersion < 5 {
		t.Errorf("schema version %d: the logins bucket came with 5", store.SchemaVersion)
	}
}
