package actions_test

import (
	"fmt"
	"testing"
	"time"

	"gatehouse/actions"
)

// loginAddrs reads what the store keeps for identity, once the
// background writes of the logins before have been done.
func (e *env) loginAddrs(tb testing.TB, identity string) []actions.LoginAddr {
	tb.Helper()
	e.svc.Settle()
	var addrs []actions.LoginAddr
	e.db.View(func(tx actions.Tx) (err error) {
		addrs, err = tx.LoginAddrs(identity)
		return nil
	})
	return addrs
}

// blockFrom fails logins from remote until its address is blocked.
func (e *env) blockFrom(tb testing.TB, remote string) {
	tb.Helper()
	for range 20 {
		e.svc.AuthenticateBearer("wrong-token", remote)
	}
	if _, err := e.svc.AuthenticateBearer("wrong-token", remote); actions.ErrorCode(err) != actions.ETooMany {
		tb.Fatalf("%s not blocked: %v", remote, err)
	}
}

// TestLoginAddressesWrittenOncePerHour: a correct login's address is kept
// in the store, rewritten at most once an hour however often the identity
// logs in, 16 addresses at most per identity.
func TestLoginAddressesWrittenOncePerHour(t *testing.T) {
	e := newEnv(t, 0)
	secret := e.newDevice(t, "door", actions.KindLock)
	door := actions.LoginIdentity(actions.PrincipalDevice, "door")
	login := func(from string) {
		t.Helper()
		if _, err := e.svc.AuthenticateMQTT("door", "door", []byte(secret), from); err != nil {
			t.Fatalf("login from %s: %v", from, err)
		}
	}
	login("198.51.100.1:1000")
	first := e.loginAddrs(t, door)
	if len(first) != 1 || first[0].Addr != "198.51.100.1" {
		t.Fatalf("stored %+v, want 198.51.100.1", first)
	}
	for i := range 50 {
		e.clock.advance(time.Minute)
		login(fmt.Sprintf("198.51.100.1:%d", 2000+i))
	}
	if got := e.loginAddrs(t, door); len(got) != 1 || !got[0].At.Equal(first[0].At) {
		t.Errorf("within the hour: stored %+v, want %+v unchanged", got, first)
	}
	e.clock.advance(11 * time.Minute)
	login("198.51.100.1:3000")
	if got := e.loginAddrs(t, door); len(got) != 1 || !got[0].At.After(first[0].At) {
		t.Errorf("an hour later: stored %+v, want a later time than %v", got, first[0].At)
	}
	for i := range 40 {
		e.clock.advance(time.Second)
		login(fmt.Sprintf("203.0.113.%d:1", i))
	}
	got := e.loginAddrs(t, door)
	if len(got) != 16 || got[0].Addr != "203.0.113.39" {
		t.Errorf("stored %d addresses, newest %+v; want 16, newest 203.0.113.39", len(got), got[0])
	}
	// A pairing login is not an identity: nothing is kept for "pair".
	if got := e.loginAddrs(t, actions.LoginIdentity(actions.PrincipalUser, "pair")); got != nil {
		t.Errorf("kept %+v for pair", got)
	}
}

// TestKnownAddressSurvivesRestart: after a restart, a person's correct
// token still passes the block of an address they used before (the store
// remembers it), and not that of an address they never used; a device's
// correct secret passes any address block, used before or not.
func TestKnownAddressSurvivesRestart(t *testing.T) {
	e := newEnv(t, 0)
	const home, cafe = "198.51.100.7:1000", "203.0.113.9:1000"
	_, _, bobToken, err := e.svc.CreateUser(e.admin, "bob", actions.RoleMember)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.AuthenticateBearer(bobToken, home); err != nil {
		t.Fatal(err)
	}
	secret := e.newDevice(t, "door", actions.KindLock)
	e.close(t)

	e = openEnv(t, e.path, 0)
	e.blockFrom(t, home)
	e.blockFrom(t, cafe)
	if _, err := e.svc.AuthenticateBearer(bobToken, home); err != nil {
		t.Errorf("bob from home, blocked, after a restart: %v", err)
	}
	_, err = e.svc.AuthenticateBearer(bobToken, cafe)
	if actions.ErrorCode(err) != actions.ETooMany {
		t.Errorf("bob from a blocked address he never used: %v, want too many", err)
	}
	if _, err := e.svc.AuthenticateMQTT("door", "door", []byte(secret), cafe); err != nil {
		t.Errorf("door's right secret from a blocked address it never used: %v", err)
	}
	_, err = e.svc.AuthenticateMQTT("door", "door", []byte("guess"), cafe)
	if actions.ErrorCode(err) != actions.ETooMany {
		t.Errorf("a wrong secret from the blocked address: %v, want too many", err)
	}
}
