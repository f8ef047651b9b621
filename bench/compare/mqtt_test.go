package main

import (
	"bytes"
	"net"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
)

type allowAll struct{ mqtt.HookBase }

func (h *allowAll) ID() string { return "allow" }
func (h *allowAll) Provides(b byte) bool {
	return bytes.Contains([]byte{mqtt.OnConnectAuthenticate, mqtt.OnACLCheck}, []byte{b})
}
func (h *allowAll) OnConnectAuthenticate(*mqtt.Client, packets.Packet) bool { return true }
func (h *allowAll) OnACLCheck(*mqtt.Client, string, bool) bool              { return true }

// TestClientHandshakeOnMochi runs the benchmark's own MQTT client against a
// real mochi server: CONNECT, SUBSCRIBE, a QoS 1 publish that comes back,
// and reports that are acknowledged one at a time.
func TestClientHandshakeOnMochi(t *testing.T) {
	srv := mqtt.New(&mqtt.Options{InlineClient: true})
	if err := srv.AddHook(new(allowAll), nil); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.AddListener(listeners.NewNet("tcp", ln)); err != nil {
		t.Fatal(err)
	}
	if err := srv.Serve(); err != nil {
		t.Fatal(err)
	}
	defer srv.Close()

	c := &contender{name: "mochi", kind: kindMochi}
	user, pass := c.login(7)
	cl, err := connect(dialer("", 10*time.Second), ln.Addr().String(), deviceID(7), user, pass, 10*time.Second)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer cl.close()
	if err := c.handshake(cl, deviceID(7), 10*time.Second); err != nil {
		t.Fatalf("handshake: %v", err)
	}
	for i := range 5 {
		if err := cl.exchange(c.reportTopic(deviceID(7)), "state locked", "", 10*time.Second); err != nil {
			t.Fatalf("report %d: %v", i, err)
		}
	}
	// A message the server sends is acknowledged and seen.
	go func() {
		time.Sleep(100 * time.Millisecond)
		srv.Publish("todevice/"+deviceID(7), []byte("welcome 1 none"), false, 1)
	}()
	if err := cl.exchange("elsewhere", "x", "welcome", 10*time.Second); err != nil {
		t.Fatalf("wait for a server message: %v", err)
	}
	if err := cl.exchange("elsewhere", "x", "never", time.Second); err == nil {
		t.Fatal("exchange waiting for a message that never comes returned no error")
	}
}
