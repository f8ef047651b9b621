package broker

import (
	"path/filepath"
	"testing"
	"time"

	"gatehouse/actions"
	"gatehouse/store"
)

func newTestBroker(t *testing.T) *Broker {
	t.Helper()
	db, err := store.Open(filepath.Join(t.TempDir(), "gatehouse.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	svc, err := actions.New(actions.Config{Store: db})
	if err != nil {
		t.Fatal(err)
	}
	b, err := New(svc, Options{Addr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestRetainedKeptPastMessageExpiry: mochi drops a retained message 5 min
// after it was made (MaximumMessageExpiryInterval); the server's own
// retained messages under ha/ are stamped afresh so they stay, and
// nothing else is.
func TestRetainedKeptPastMessageExpiry(t *testing.T) {
	b := newTestBroker(t)
	const topic = "ha/alice/lock/door/config"
	if err := b.PublishRetained(topic, []byte("{}")); err != nil {
		t.Fatal(err)
	}
	pk, ok := b.srv.Topics.Retained.Get(topic)
	if !ok || string(pk.Payload) != "{}" || pk.Expiry != 0 {
		t.Fatalf("retained %v: %+v", ok, pk)
	}
	// Age it, and another retained message outside ha/, past the limit.
	old := time.Now().Unix() - 2*b.srv.Options.Capabilities.MaximumMessageExpiryInterval
	pk.Created = old
	b.srv.Topics.RetainMessage(pk)
	other := pk
	other.TopicName = "elsewhere"
	b.srv.Topics.RetainMessage(other)

	b.refreshRetained()
	if got, _ := b.srv.Topics.Retained.Get(topic); time.Now().Unix()-got.Created > 1 || got.Expiry != 0 || string(got.Payload) != "{}" {
		t.Errorf("after refresh: created %d s ago, expiry %d, payload %q", time.Now().Unix()-got.Created, got.Expiry, got.Payload)
	}
	if got, _ := b.srv.Topics.Retained.Get("elsewhere"); got.Created != old {
		t.Errorf("a retained message outside ha/ was refreshed")
	}

	if err := b.ClearRetained(topic); err != nil {
		t.Fatal(err)
	}
	if _, ok := b.srv.Topics.Retained.Get(topic); ok {
		t.Error("ClearRetained left the message")
	}
}
