package actions_test

import (
	"testing"
	"time"

	"gatehouse/actions"
)

// TestAccessIndexFollowsGrants: the in-memory index behind event streams,
// notifications and access checks changes with the write that changes
// access, before that write returns: a new grant lets a person read at
// once, a deleted grant, user or device stops it at once.
func TestAccessIndexFollowsGrants(t *testing.T) {
	e := newEnv(t, 0)
	e.newDevice(t, "door", "lock")
	alice, _ := e.addUser(t, "alice", "member")
	later := actions.Event{Device: "door", Type: actions.EventState, Time: e.clock.Now().Add(time.Minute)}

	if e.svc.CanRead(alice, later) {
		t.Fatal("alice reads the door's events before any grant")
	}
	g := e.grant(t, "alice", "door", actions.Grant{})
	if !e.svc.CanRead(alice, later) {
		t.Fatal("a grant did not let alice read at once")
	}
	if err := e.svc.DeleteGrant(e.admin, g.ID); err != nil {
		t.Fatal(err)
	}
	if e.svc.CanRead(alice, later) {
		t.Fatal("a deleted grant still lets alice read")
	}

	e.grant(t, "alice", "door", actions.Grant{})
	if err := e.svc.DeleteDevice(e.admin, "door"); err != nil {
		t.Fatal(err)
	}
	if e.svc.CanRead(alice, later) {
		t.Error("alice reads the events of a deleted device")
	}

	// Notifications follow the same index: bob, granted, hears the state
	// of a device; after his user is deleted he does not.
	e.newOnline(t, "lamp", "light")
	bob, _ := e.addUser(t, "bob", "member")
	e.grant(t, "bob", "lamp", actions.Grant{})
	e.pub.take()
	if err := e.dispatch(dev("lamp"), "state on"); err != nil {
		t.Fatal(err)
	}
	if !hasTopic(e.pub.take(), "toapp/bob") {
		t.Error("a granted person got no notification")
	}
	if err := e.svc.DeleteUser(e.admin, bob.ID); err != nil {
		t.Fatal(err)
	}
	e.pub.take()
	if err := e.dispatch(dev("lamp"), "state off"); err != nil {
		t.Fatal(err)
	}
	if hasTopic(e.pub.take(), "toapp/bob") {
		t.Error("a deleted person still got a notification")
	}
}

func hasTopic(msgs []published, topic string) bool {
	for _, m := range msgs {
		if m.Topic == topic {
			return true
		}
	}
	return false
}
