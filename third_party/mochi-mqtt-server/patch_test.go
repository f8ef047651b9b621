// Regression tests for the Gatehouse patch (PATCHES.md). Standard library
// only, so the module needs no test dependencies.
package mqtt

import (
	"bufio"
	"io"
	"net"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// pipeClient is a client of s on one end of a net.Pipe, with an MQTT 5
// Receive Maximum of window, subscribed to "t"; read returns the next
// PUBLISH written to it.
type pipeClient struct {
	cl   *Client
	peer net.Conn
	r    *bufio.Reader
}

func newPipeClient(t *testing.T, s *Server, id string, window uint16) *pipeClient {
	t.Helper()
	server, peer := net.Pipe()
	t.Cleanup(func() { server.Close(); peer.Close() })
	cl := s.NewClient(server, "pipe", id, false)
	cl.Properties.ProtocolVersion = 5
	cl.Properties.Props.ReceiveMaximum = window
	cl.State.Inflight.ResetSendQuota(int32(window))
	s.Clients.Add(cl)
	s.Topics.Subscribe(id, packets.Subscription{Filter: "t", Qos: 1})
	go cl.WriteLoop()
	return &pipeClient{cl: cl, peer: peer, r: bufio.NewReader(peer)}
}

// read returns the next PUBLISH's payload, or "" when none comes within d.
func (p *pipeClient) read(t *testing.T, d time.Duration) (string, uint16) {
	t.Helper()
	p.peer.SetReadDeadline(time.Now().Add(d))
	b, err := p.r.ReadByte()
	if err != nil {
		return "", 0
	}
	var fh packets.FixedHeader
	if err := fh.Decode(b); err != nil {
		t.Fatal(err)
	}
	n, _, err := packets.DecodeLength(p.r)
	if err != nil {
		t.Fatal(err)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(p.r, body); err != nil {
		t.Fatal(err)
	}
	pk := packets.Packet{FixedHeader: fh, ProtocolVersion: 5}
	if err := pk.PublishDecode(body); err != nil {
		t.Fatal(err)
	}
	return string(pk.Payload), pk.PacketID
}

// allowReads lets every client read every topic.
type allowReads struct{ HookBase }

func (*allowReads) ID() string                            { return "allow-reads" }
func (*allowReads) Provides(b byte) bool                  { return b == OnACLCheck }
func (*allowReads) OnACLCheck(*Client, string, bool) bool { return true }

func newPatchServer(t *testing.T) *Server {
	t.Helper()
	caps := NewDefaultServerCapabilities()
	caps.MaximumMessageExpiryInterval = 300
	s := New(&Options{Capabilities: caps})
	if err := s.AddHook(new(allowReads), nil); err != nil {
		t.Fatal(err)
	}
	return s
}

// publish sends payload to "t" from the server, expiring at expiry (unix
// seconds), as Gatehouse's broker does.
func publish(t *testing.T, s *Server, inline *Client, payload string, expiry int64) {
	t.Helper()
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, TopicName: "t",
		Payload: []byte(payload), PacketID: 1, Expiry: expiry}
	pk.Properties.MessageExpiryInterval = 300
	if err := s.InjectPacket(inline, pk); err != nil {
		t.Fatal(err)
	}
}

func inlineClient(s *Server) *Client {
	cl := s.NewClient(nil, LocalListener, InlineClientId, true)
	cl.Properties.ProtocolVersion = 5
	return cl
}

// A message parked behind a full Receive Maximum window is dropped when it
// expires before a slot frees, never written late; the slot freed by the
// ack then carries the next live message.
func TestParkedMessageExpires(t *testing.T) {
	s := newPatchServer(t)
	inline := inlineClient(s)
	c := newPipeClient(t, s, "dev", 1)

	now := time.Now().Unix()
	publish(t, s, inline, "first", now+60)
	got, id := c.read(t, 5*time.Second)
	if got != "first" {
		t.Fatalf("first message: %q", got)
	}
	publish(t, s, inline, "stale", now-1) // parked, already expired by the time a slot frees
	publish(t, s, inline, "live", now+60) // parked behind it
	if n := c.cl.State.Inflight.ParkedLen(); n != 2 {
		t.Fatalf("%d parked, want 2", n)
	}
	if err := s.processPuback(c.cl, packets.Packet{PacketID: id}); err != nil {
		t.Fatal(err)
	}
	go s.sendParked(c.cl) // net.Pipe: a write waits for the read below
	if got, _ := c.read(t, 5*time.Second); got != "live" {
		t.Fatalf("after the ack the client got %q, want the live message (the expired one dropped)", got)
	}
}

// A written message that expires unacknowledged gives its send quota back,
// so a client with Receive Maximum 1 still receives the next message; a
// late PUBACK for it gives nothing back twice.
func TestExpiredInflightFreesQuota(t *testing.T) {
	s := newPatchServer(t)
	inline := inlineClient(s)
	c := newPipeClient(t, s, "dev", 1)

	publish(t, s, inline, "lost ack", time.Now().Unix()+2)
	_, id := c.read(t, 5*time.Second)
	publish(t, s, inline, "next", time.Now().Unix()+60) // parked: the window is full
	go s.clearExpiredInflights(time.Now().Unix() + 3)   // the first one expires unacked (net.Pipe: the write waits for the read)
	if got, _ := c.read(t, 5*time.Second); got != "next" {
		t.Fatalf("after an expired in-flight message the client got %q, want the next one", got)
	}
	if err := s.processPuback(c.cl, packets.Packet{PacketID: id}); err != nil { // the late ack
		t.Fatal(err)
	}
	if q := c.cl.State.Inflight.sendQuota; q != 0 {
		t.Errorf("send quota %d with one message unacknowledged and a window of 1", q)
	}
}

// A message that expired while queued behind a slow connection is not
// written.
func TestQueuedMessageExpires(t *testing.T) {
	s := newPatchServer(t)
	inline := inlineClient(s)
	c := newPipeClient(t, s, "dev", 0) // no flow control: everything goes to the write queue
	publish(t, s, inline, "stale", time.Now().Unix()-1)
	publish(t, s, inline, "live", time.Now().Unix()+60)
	if got, _ := c.read(t, 5*time.Second); got != "live" {
		t.Fatalf("client got %q first, want the live message", got)
	}
}

// Under the sessions lock, a takeover marks the old client before its own
// clean-up can run, and the clean-up then leaves the new client's
// subscription and Clients entry alone.
func TestTakeoverKeepsNewSession(t *testing.T) {
	s := newPatchServer(t)
	old := newPipeClient(t, s, "dev", 0)
	old.cl.Properties.Clean = true

	server, peer := net.Pipe()
	defer server.Close()
	defer peer.Close()
	cl := s.NewClient(server, "pipe", "dev", false)
	s.sessions.Lock()
	present, taken := s.inheritClientSession(packets.Packet{Connect: packets.ConnectParams{Clean: true}}, cl)
	s.Clients.Add(cl)
	s.sessions.Unlock()
	if present || taken != old.cl || !old.cl.IsTakenOver() {
		t.Fatalf("takeover: present=%v taken=%p (old %p) marked=%v", present, taken, old.cl, old.cl.IsTakenOver())
	}
	s.Topics.Subscribe("dev", packets.Subscription{Filter: "t", Qos: 1}) // the new connection subscribes

	// The old connection's clean-up, as attachClient runs it.
	s.sessions.Lock()
	if !old.cl.IsTakenOver() {
		old.cl.ClearInflights()
		s.UnsubscribeClient(old.cl)
		s.Clients.Delete(old.cl.ID)
	}
	s.sessions.Unlock()

	if got, ok := s.Clients.Get("dev"); !ok || got != cl {
		t.Error("the old connection's clean-up removed the new client")
	}
	if subs := s.Topics.Subscribers("t"); len(subs.Subscriptions) != 1 {
		t.Errorf("subscribers of t: %d, want the new client's", len(subs.Subscriptions))
	}
}
