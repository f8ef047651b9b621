package main

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	paho5 "github.com/eclipse/paho.golang/paho"
	paho "github.com/eclipse/paho.mqtt.golang"
)

func TestLoginRefused(t *testing.T) {
	s := startServer(t, "")
	secret := s.createDevice("door", "lock")
	cases := []struct{ name, clientID, user, pass string }{
		{"Anonymous", "door", "", ""},
		{"WrongSecret", "door", "door", strings.Repeat("0", 64)},
		{"OtherClientID", "notdoor", "door", secret},
		{"UnknownDevice", "ghost", "ghost", secret},
		{"InlineClientID", "inline", "admin", testAdminToken},
		{"TokenOfOtherUser", "phone", "mallory", testAdminToken},
		{"DeviceSecretAsToken", "phone", "admin", secret},
		{"EmptyPassword", "door", "door", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if c, err := s.tryConnect(tc.clientID, tc.user, tc.pass); err == nil {
				c.c.Disconnect(0)
				t.Fatal("login accepted")
			}
		})
	}
	t.Run("Will", func(t *testing.T) {
		opts := paho.NewClientOptions().AddBroker("tcp://"+s.mqtt).SetClientID("door").
			SetUsername("door").SetPassword(secret).SetAutoReconnect(false).
			SetWill("todevice/other", "unlock x 9999999999", 1, true)
		c := paho.NewClient(opts)
		tok := c.Connect()
		tok.WaitTimeout(5 * time.Second)
		if tok.Error() == nil {
			c.Disconnect(0)
			t.Fatal("connect with a will accepted")
		}
	})
	refused, will := 0, false
	for _, e := range s.events("type=login_refused&limit=100") {
		if e.Via == "mqtt" {
			refused++
		}
		will = will || strings.Contains(e.Detail, "will messages are not accepted")
	}
	if !will {
		t.Error("the refused will left no event")
	}
	if refused < len(cases)-2 { // anonymous and empty password fail before a user is known, but are still recorded
		t.Errorf("login_refused events %d, want at least %d", refused, len(cases)-2)
	}
}

func TestSubscribeACL(t *testing.T) {
	s := startServer(t, "")
	door := s.device("door", s.createDevice("door", "lock"), "lock")
	s.createDevice("other", "lock")
	phone := s.appClient("phone")
	for _, topic := range []string{"todevice/other", "todevice/+", "todevice/#", "#", "toserver",
		"toapp/admin", "$SYS/#", "$share/g/todevice/other", "todevice/door/x"} {
		t.Run("Device "+topic, func(t *testing.T) {
			if got := door.subscribe(topic); got != 0x80 {
				t.Errorf("device subscribe %q granted %#x", topic, got)
			}
		})
	}
	for _, topic := range []string{"todevice/door", "toapp/other", "toapp/+", "toserver", "#"} {
		t.Run("App "+topic, func(t *testing.T) {
			if got := phone.subscribe(topic); got != 0x80 {
				t.Errorf("app subscribe %q granted %#x", topic, got)
			}
		})
	}
	// Both connections stay usable after refusals.
	phone.publish("toserver", false, "lock door")
	door.expect("todevice/door lock ")
}

func TestPublishACL(t *testing.T) {
	s := startServer(t, "")
	doorSecret := s.createDevice("door", "lock")
	door := s.device("door", doorSecret, "lock")
	otherSecret := s.createDevice("other", "lock")
	other := s.device("other", otherSecret, "lock")
	phone := s.appClient("phone")

	// Raw publishes to device and app topics, from a device and from the
	// admin, reach nobody; the connections stay.
	door.publish("todevice/other", false, "unlock 0123456789abcdef 9999999999")
	phone.publish("todevice/other", false, "unlock 0123456789abcdef 9999999999")
	door.publish("toapp/admin", false, "lock_response x door 0 unlocked")
	phone.publish("toapp/admin", false, "lock_response x door 0 unlocked")
	door.publish("sometopic", false, "hello")
	other.quiet(300 * time.Millisecond)
	phone.quiet(0)

	// A retained command is refused and never handed to a later subscriber.
	phone.publish("todevice/other", true, "unlock 0123456789abcdef 9999999999")
	phone.publish("toserver", true, "unlock other")
	other.quiet(300 * time.Millisecond)
	other.c.Disconnect(100)
	late := s.connect("other", "other", otherSecret)
	late.subscribe("todevice/other")
	late.quiet(300 * time.Millisecond)

	// Every connection is still up: a round trip works.
	phone.publish("toserver", false, "lock other")
	late.expect("todevice/other lock ")
	door.publish("toserver", false, "state locked")
	phone.expect("toapp/admin state door locked")
}

// TestMQTT5 checks what only an MQTT 5 client sees: reason codes on
// refused publishes and the expiry of commands.
func TestMQTT5(t *testing.T) {
	s := startServer(t, "")
	secret := s.createDevice("door", "lock")
	dev, err := s.connect5("door", "door", secret)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sub, err := dev.c.Subscribe(ctx, &paho5.Subscribe{Subscriptions: []paho5.SubscribeOptions{{Topic: "todevice/door", QoS: 1}}})
	if err != nil || sub.Reasons[0] != 1 {
		t.Fatalf("subscribe: %v %v", err, sub)
	}
	sub, err = dev.c.Subscribe(ctx, &paho5.Subscribe{Subscriptions: []paho5.SubscribeOptions{{Topic: "todevice/other", QoS: 1}}})
	if err == nil && sub.Reasons[0] < 0x80 {
		t.Errorf("subscribe to another device granted %v", sub.Reasons)
	}

	t.Run("RefusedPublish", func(t *testing.T) {
		resp, err := dev.c.Publish(ctx, &paho5.Publish{Topic: "todevice/other", QoS: 1, Payload: []byte("unlock x 1")})
		if err == nil || resp == nil || resp.ReasonCode != 0x87 {
			t.Errorf("publish to todevice/other: %v %+v, want reason 0x87", err, resp)
		}
		resp, err = dev.c.Publish(ctx, &paho5.Publish{Topic: "toserver", QoS: 1, Retain: true, Payload: []byte("state locked")})
		if err == nil || resp == nil || resp.ReasonCode != 0x9A {
			t.Errorf("retained publish to toserver: %v %+v, want reason 0x9A", err, resp)
		}
	})
	t.Run("CommandExpiry", func(t *testing.T) {
		go s.api("POST", "/api/v1/devices/door/lock?wait=0s", "", nil)
		select {
		case pk := <-dev.msgs:
			if pk.Topic != "todevice/door" || !strings.HasPrefix(string(pk.Payload), "lock ") {
				t.Fatalf("got %s %q", pk.Topic, pk.Payload)
			}
			if pk.QoS != 1 || pk.Retain {
				t.Errorf("command QoS %d retain %v, want QoS 1, not retained", pk.QoS, pk.Retain)
			}
			if pk.Properties == nil || pk.Properties.MessageExpiry == nil {
				t.Fatal("command has no message expiry")
			}
			if e := *pk.Properties.MessageExpiry; e < 1 || e > 3 {
				t.Errorf("message expiry %ds, want the 3s ttl", e)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("no command")
		}
	})
	t.Run("ConnectionStays", func(t *testing.T) {
		if _, err := dev.c.Publish(ctx, &paho5.Publish{Topic: "toserver", QoS: 1, Payload: []byte("state locked")}); err != nil {
			t.Errorf("publish after refusals: %v", err)
		}
	})
	t.Run("BadLogin", func(t *testing.T) {
		_, err := s.connect5("door", "door", "wrong")
		var ce *connackError
		if !errors.As(err, &ce) || ce.code != 0x86 {
			t.Errorf("bad password: %v, want CONNACK 0x86", err)
		}
	})
}

func TestConnectTimeout(t *testing.T) {
	s := startServer(t, "")
	conn, err := net.Dial("tcp", s.mqtt)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	start := time.Now()
	if _, err := io.ReadAll(conn); err != nil {
		t.Fatalf("silent connection: %v, want closed by the server", err)
	}
	if time.Since(start) > 5*time.Second {
		t.Errorf("silent connection closed after %s", time.Since(start))
	}
	// The listener still accepts.
	s.appClient("phone")
}

func TestRESTAuth(t *testing.T) {
	s := startServer(t, "")
	for _, path := range []string{"/api/v1/devices", "/api/v1/events", "/api/v1/commands/x"} {
		for _, token := range []string{"-", "wrong-token"} {
			st, body := s.api("GET", path, token, nil)
			if st != http.StatusUnauthorized || !strings.Contains(string(body), `"code":"unauthorized"`) {
				t.Errorf("GET %s with token %q: %d %s", path, token, st, body)
			}
		}
	}
	for _, r := range []struct{ method, path string }{{"POST", "/lock"}, {"POST", "/unlock"}, {"POST", "/test"},
		{"POST", "/api/v1/lock"}, {"POST", "/api/v1/devices"}, {"DELETE", "/api/v1/devices/x"}} {
		if st, body := s.api(r.method, r.path, "-", nil); st != http.StatusUnauthorized {
			t.Errorf("%s %s without token: %d %s", r.method, r.path, st, body)
		}
	}
	for _, path := range []string{"/hello", "/healthz", "/readyz"} {
		if st, body := s.api("GET", path, "-", nil); st != http.StatusOK {
			t.Errorf("GET %s: %d %s", path, st, body)
		}
	}
	if n := len(s.events("type=login_refused")); n == 0 {
		t.Error("refused REST logins left no event")
	}
}

func TestClientIDOwnership(t *testing.T) {
	s := startServer(t, "")
	s.createDevice("door", "lock")
	alice := s.createUser("alice", "member")
	bob := s.createUser("bob", "member")
	phone := s.connect("alice-phone", "alice", alice)
	phone.subscribe("toapp/alice")
	t.Run("ErrOtherPersonsClientID", func(t *testing.T) {
		if c, err := s.tryConnect("alice-phone", "bob", bob); err == nil {
			c.c.Disconnect(0)
			t.Fatal("bob took over alice's session")
		}
		if !phone.c.IsConnectionOpen() {
			t.Error("alice's session was dropped by bob's attempt")
		}
	})
	t.Run("ErrDeviceClientID", func(t *testing.T) {
		if c, err := s.tryConnect("door", "alice", alice); err == nil {
			c.c.Disconnect(0)
			t.Fatal("a person logged in with a device's client id")
		}
	})
	t.Run("SamePersonTakesOver", func(t *testing.T) {
		again := s.connect("alice-phone", "alice", alice)
		again.c.Disconnect(0)
	})
}
