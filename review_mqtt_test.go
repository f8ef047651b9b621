package main

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// raw5 is a hand-driven MQTT 5 client: it sends exactly the packets a test
// writes and acknowledges nothing by itself.
type raw5 struct {
	t *testing.T
	c net.Conn
	r *bufio.Reader
}

func (s *testServer) dialRaw5(id, user, pass string, props packets.Properties) *raw5 {
	s.t.Helper()
	c, err := net.DialTimeout("tcp", s.mqtt, 5*time.Second)
	if err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(func() { c.Close() })
	r := &raw5{t: s.t, c: c, r: bufio.NewReader(c)}
	r.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, ProtocolVersion: 5,
		Connect: packets.ConnectParams{ProtocolName: []byte("MQTT"), Clean: true, Keepalive: 60, ClientIdentifier: id,
			UsernameFlag: true, Username: []byte(user), PasswordFlag: true, Password: []byte(pass)},
		Properties: props})
	if pk := r.read(5 * time.Second); pk.FixedHeader.Type != packets.Connack || pk.ReasonCode != 0 {
		s.t.Fatalf("connect %s: %+v", id, pk)
	}
	return r
}

func (r *raw5) send(pk packets.Packet) {
	r.t.Helper()
	pk.ProtocolVersion = 5
	var buf bytes.Buffer
	var err error
	switch pk.FixedHeader.Type {
	case packets.Connect:
		err = pk.ConnectEncode(&buf)
	case packets.Subscribe:
		err = pk.SubscribeEncode(&buf)
	case packets.Publish:
		err = pk.PublishEncode(&buf)
	case packets.Puback:
		err = pk.PubackEncode(&buf)
	}
	if err != nil {
		r.t.Fatalf("encode: %v", err)
	}
	if _, err := r.c.Write(buf.Bytes()); err != nil {
		r.t.Fatalf("write: %v", err)
	}
}

// read returns the next packet, or a zero packet when none came within d.
func (r *raw5) read(d time.Duration) packets.Packet {
	r.t.Helper()
	r.c.SetReadDeadline(time.Now().Add(d))
	hb, err := r.r.ReadByte()
	if err != nil {
		return packets.Packet{}
	}
	pk := packets.Packet{ProtocolVersion: 5}
	if err := pk.FixedHeader.Decode(hb); err != nil {
		r.t.Fatalf("header: %v", err)
	}
	n, _, err := packets.DecodeLength(r.r)
	if err != nil {
		r.t.Fatalf("length: %v", err)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r.r, body); err != nil {
		r.t.Fatalf("body: %v", err)
	}
	switch pk.FixedHeader.Type {
	case packets.Connack:
		err = pk.ConnackDecode(body)
	case packets.Publish:
		err = pk.PublishDecode(body)
	case packets.Suback:
		err = pk.SubackDecode(body)
	case packets.Puback:
		err = pk.PubackDecode(body)
	}
	if err != nil {
		r.t.Fatalf("decode type %d: %v", pk.FixedHeader.Type, err)
	}
	return pk
}

func (r *raw5) subscribe(topic string) {
	r.t.Helper()
	r.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, PacketID: 1,
		Filters: packets.Subscriptions{{Filter: topic, Qos: 1}}})
	if pk := r.read(5 * time.Second); pk.FixedHeader.Type != packets.Suback || len(pk.ReasonCodes) != 1 || pk.ReasonCodes[0] != 1 {
		r.t.Fatalf("subscribe %s: %+v", topic, pk)
	}
}

func (r *raw5) publish(id uint16, topic, payload string) {
	r.t.Helper()
	r.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, PacketID: id,
		TopicName: topic, Payload: []byte(payload)})
}

// A v5 device may announce a small Receive Maximum. While it has that many
// QoS 1 messages unacknowledged, mochi parks the next one in the session
// with Expiry -1, which its message-expiry sweep never removes (only the
// 5-minute MaximumMessageExpiryInterval does), and writes it unchanged as
// soon as the device acks. The server's own replies (welcome, error …) are
// published without a ttl, so they stay in flight for up to 5 minutes.
// Here a device slow to ack its welcome receives an unlock seconds after
// its not-after, after the server recorded the command as expired. A device
// that reads only the first word (DESIGN §3: naive devices "still work")
// opens the door.
func TestReviewParkedUnlockDeliveredAfterNotAfter(t *testing.T) {
	t.Skip("BUG: an unlock parked behind a v5 device's Receive Maximum is delivered after its not-after (mochi Expiry=-1; broker/broker.go Publish)")
	s := startServer(t, "") // command ttl 3 s
	secret := s.createDevice("door", "lock")
	dev := s.dialRaw5("door", "door", secret, packets.Properties{ReceiveMaximum: 1})
	dev.subscribe("todevice/door")
	dev.publish(2, "toserver", "hand_shake lock 1.0")
	var welcome packets.Packet
	for welcome.FixedHeader.Type != packets.Publish {
		if welcome = dev.read(5 * time.Second); welcome.FixedHeader.Type == 0 {
			t.Fatal("no welcome")
		}
	}
	// The device has not acked the welcome yet; someone unlocks meanwhile.
	var cmd commandJSON
	s.apiJSON("POST", "/api/v1/devices/door/unlock?wait=0s", nil, 202, &cmd)
	if pk := dev.read(500 * time.Millisecond); pk.FixedHeader.Type != 0 {
		t.Fatalf("unexpected %+v", pk)
	}
	time.Sleep(time.Until(cmd.NotAfter) + 2*time.Second)
	s.apiJSON("GET", "/api/v1/commands/"+cmd.ID, nil, 200, &cmd)
	if cmd.Status != "expired" {
		t.Fatalf("unlock status %q, want expired", cmd.Status)
	}

	dev.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: welcome.PacketID})
	if pk := dev.read(2 * time.Second); pk.FixedHeader.Type == packets.Publish {
		f := strings.Fields(string(pk.Payload))
		na, _ := strconv.ParseInt(f[len(f)-1], 10, 64)
		t.Errorf("device received %q %s after its not-after", pk.Payload, time.Since(time.Unix(na, 0)).Round(time.Second))
	}
}

// When a QoS 1 command to a v5 device expires unacknowledged, mochi's sweep
// deletes it from the session without giving back the send quota it took.
// With Receive Maximum 1 (64 for a default client, after 64 such losses)
// every later command is parked and never sent: the device is deaf until it
// reconnects, while it looks online and every lock/unlock "expires".
func TestReviewExpiredCommandLeaksSendQuota(t *testing.T) {
	t.Skip("BUG: an expired unacked command leaks the v5 device's send quota; later commands are never delivered (mochi ClearExpiredInflights)")
	s := startServer(t, "")
	secret := s.createDevice("door", "lock")
	dev := s.dialRaw5("door", "door", secret, packets.Properties{ReceiveMaximum: 1})
	dev.subscribe("todevice/door")
	go s.api("POST", "/api/v1/devices/door/lock?wait=0s", "", nil)
	first := dev.read(5 * time.Second)
	if first.FixedHeader.Type != packets.Publish {
		t.Fatalf("first command: %+v", first)
	}
	time.Sleep(5 * time.Second) // lost ack: the command expires (ttl 3 s) and is swept
	dev.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: first.PacketID})
	var cmd commandJSON
	s.apiJSON("POST", "/api/v1/devices/door/lock?wait=0s", nil, 202, &cmd)
	if pk := dev.read(2 * time.Second); pk.FixedHeader.Type != packets.Publish {
		t.Errorf("an online, responsive device never received command %s", cmd.ID)
	}
}
