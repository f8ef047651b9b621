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

// TestStreamsPerPrincipal: a principal's subscriptions past MaxStreams are
// refused with ETooMany; ending one makes room; others are not counted.
func TestStreamsPerPrincipal(t *testing.T) {
	e := newEnv(t, 0)
	alice, _ := e.addUser(t, "alice", "member")
	a := e.svc.Subscribe(alice)
	var subs []*actions.Subscription
	for i := 0; i < actions.DefaultMaxStreams-1; i++ {
		subs = append(subs, e.svc.Subscribe(alice))
	}
	over := e.svc.Subscribe(alice)
	if actions.ErrorCode(over.Err()) != actions.ETooMany {
		t.Fatalf("subscription %d: %v, want too many", actions.DefaultMaxStreams+1, over.Err())
	}
	if _, open := <-over.C; open {
		t.Error("a refused subscription's channel is open")
	}
	if err := e.svc.Subscribe(e.admin).Err(); err != nil {
		t.Errorf("another principal: %v", err)
	}
	e.svc.Unsubscribe(a)
	if err := e.svc.Subscribe(alice).Err(); err != nil {
		t.Errorf("after ending one: %v", err)
	}
	for _, s := range subs {
		e.svc.Unsubscribe(s)
	}
}
