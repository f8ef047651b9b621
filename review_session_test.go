package main

import (
	"runtime"
	"strings"
	"testing"
	"time"
)

// broker/hook.go OnDisconnect forgets whose a client id is when a clean
// session ends and !cl.IsTakenOver(). But mochi marks the old client as
// taken over only after DisconnectClient has closed it
// (inheritClientSession), so the old connection's OnDisconnect often runs
// first and deletes the owner of the *new* session. The next login with
// that client id by anyone else passes the ownership check and takes the
// live session over: alice's phone is kicked, and her client id is bob's
// for as long as his session lives (24 h with a persistent session), and a
// persistent session's unacked messages (picture links…) are resent to him
// without an ACL check. Nondeterministic, but reproduced within a few dozen
// reconnects on a 2-core machine.
func TestReviewTakeoverForgetsOwner(t *testing.T) {
	t.Skip("BUG: a reconnect (takeover) can delete the client-id owner of the live session; another user then takes it over (broker/hook.go OnDisconnect)")
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(max(4, runtime.GOMAXPROCS(0))))
	s := startServer(t, "")
	alice := s.createUser("alice", "member")
	bob := s.createUser("bob", "member")
	for i := 0; i < 3000; i++ {
		a := s.connect("alice-phone", "alice", alice) // takes over her previous session
		if c, err := s.tryConnect("alice-phone", "bob", bob); err == nil {
			select {
			case <-a.lost:
				t.Errorf("reconnect %d: bob took over alice's live session and dropped her", i)
			case <-time.After(time.Second):
				t.Errorf("reconnect %d: bob logged in with alice's client id", i)
			}
			c.c.Disconnect(0)
			return
		}
	}
}

// The same mochi takeover race from the device side: when a device
// reconnects, its old (clean) connection's cleanup runs
// UnsubscribeClient and Clients.Delete by client id after the new
// connection has already subscribed, removing the *new* subscription. The
// device stays connected and "online"; every command is accepted (202) and
// none is ever delivered, not even its welcome, until it reconnects again.
// A lock-all at night silently misses that door. Nondeterministic; under
// -race it happens within a few dozen reconnects.
func TestReviewTakeoverLeavesDeviceDeaf(t *testing.T) {
	t.Skip("BUG: a device reconnect can lose the new session's subscription (mochi takeover race): online, connected, and deaf")
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(max(4, runtime.GOMAXPROCS(0))))
	s := startServer(t, "")
	secret := s.createDevice("door", "lock")
	recv := func(d *client, dur time.Duration) bool {
		deadline := time.After(dur)
		for {
			select {
			case m := <-d.msgs:
				if strings.HasPrefix(m, "todevice/door ") {
					return true
				}
			case <-deadline:
				return false
			}
		}
	}
	for i := 0; i < 1000; i++ {
		d := s.connect("door", "door", secret) // takes over the previous connection
		d.subscribe("todevice/door")
		go s.api("POST", "/api/v1/devices/door/lock?wait=0s", "", nil)
		if !recv(d, 2*time.Second) {
			var dj deviceJSON
			s.apiJSON("GET", "/api/v1/devices/door", nil, 200, &dj)
			st, _ := s.api("POST", "/api/v1/devices/door/unlock?wait=0s", "", nil)
			again := recv(d, 2*time.Second)
			t.Errorf("reconnect %d: command lost; online=%v connected=%v; next command %d delivered=%v",
				i, dj.Online, d.c.IsConnectionOpen(), st, again)
			return
		}
	}
}
