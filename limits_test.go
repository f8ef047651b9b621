package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	paho5 "github.com/eclipse/paho.golang/paho"
	paho "github.com/eclipse/paho.mqtt.golang"
)

// The limits of docs/security.md, each leaned on: what a client over it
// sees, and that devices and people who already hold a session are not the
// ones refused.

// dialFrom opens a TCP connection from loopback address src.
func dialFrom(t *testing.T, src, addr string) net.Conn {
	t.Helper()
	d := &net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// closedByServer reports whether the server closed c (EOF or reset) within
// 5 s without sending anything.
func closedByServer(c net.Conn) bool {
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := c.Read(make([]byte, 16))
	var ne net.Error
	return n == 0 && err != nil && !(errors.As(err, &ne) && ne.Timeout())
}

// isOpen reports whether the server keeps c open for a moment.
func isOpen(c net.Conn) bool {
	c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	_, err := c.Read(make([]byte, 16))
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func TestPendingConnectionsPerAddress(t *testing.T) {
	s := startServerWith(t, "", func(c *config) {
		c.connectTimeout = time.Minute
		c.MQTTLimits.MaxPendingPerAddress = 4
	})
	secret := s.createDevice("door", "lock")
	for i := 0; i < 4; i++ { // idle connections that never log in
		if c := dialFrom(t, "127.0.0.7", s.mqtt); !isOpen(c) {
			t.Fatalf("pending connection %d refused under the limit", i)
		}
	}
	if c := dialFrom(t, "127.0.0.7", s.mqtt); !closedByServer(c) {
		t.Error("a fifth connection that has not logged in was kept from the same address")
	}
	// Another address, and a device: not affected.
	if _, err := s.tryConnectFrom("127.0.0.8", "door", "door", secret); err != nil {
		t.Errorf("a device from another address: %v", err)
	}
}

func TestMaxConnectionsSparesReconnects(t *testing.T) {
	s := startServerWith(t, "", func(c *config) { c.MQTTLimits.MaxConnections = 3 })
	secrets := map[string]string{}
	for i := 0; i < 4; i++ {
		id := fmt.Sprintf("d%d", i)
		secrets[id] = s.createDevice(id, "lock")
	}
	for i := 0; i < 3; i++ {
		id := fmt.Sprintf("d%d", i)
		s.connect(id, id, secrets[id])
	}
	_, err := s.tryConnect("d3", "d3", secrets["d3"])
	if err == nil || !strings.Contains(strings.ToLower(err.Error()), "unavailable") {
		t.Errorf("a fourth device over the limit: %v, want refused as server unavailable", err)
	}
	// d0 reconnecting takes its own session over: never refused.
	if _, err := s.tryConnect("d0", "d0", secrets["d0"]); err != nil {
		t.Errorf("a device reconnecting at the limit: %v", err)
	}
}

func TestSessionsPerUser(t *testing.T) {
	s := startServerWith(t, "", func(c *config) { c.MQTTLimits.MaxSessionsPerUser = 2 })
	alice := s.createUser("alice", "member")
	s.connect("phone", "alice", alice)
	s.connect("tablet", "alice", alice)
	_, err := s.connect5("laptop", "alice", alice)
	var ce *connackError
	if !errors.As(err, &ce) || ce.code != 0x97 {
		t.Errorf("a third session of alice: %v, want CONNACK 0x97 quota exceeded", err)
	}
	if _, err := s.tryConnect("phone", "alice", alice); err != nil {
		t.Errorf("alice's phone reconnecting at her limit: %v", err)
	}
	bob := s.createUser("bob", "member")
	if _, err := s.tryConnect("bob-phone", "bob", bob); err != nil {
		t.Errorf("another person: %v", err)
	}
}

func TestLongClientIDRefused(t *testing.T) {
	s := startServer(t, "")
	alice := s.createUser("alice", "member")
	_, err := s.tryConnect(strings.Repeat("x", 65), "alice", alice)
	if err == nil || !strings.Contains(err.Error(), "identifier") {
		t.Errorf("a 65-byte client id: %v, want refused as an invalid identifier", err)
	}
	if _, err := s.tryConnect(strings.Repeat("x", 64), "alice", alice); err != nil {
		t.Errorf("a 64-byte client id: %v", err)
	}
}

// TestMessageRate: past its burst a device's publishes are refused (MQTT 5:
// 0x96), recorded once, and a quiet device next to it is not slowed.
func TestMessageRate(t *testing.T) {
	s := startServerWith(t, "", func(c *config) {
		c.MQTTLimits.MessageRate = 0.01
		c.MQTTLimits.MessageBurst = 3
	})
	noisy := s.createDevice("noisy", "lock")
	quiet := s.device("quiet", s.createDevice("quiet", "lock"), "lock")
	dev, err := s.connect5("noisy", "noisy", noisy)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var ok, limited int
	for i := 0; i < 10; i++ {
		resp, err := dev.c.Publish(ctx, &paho5.Publish{Topic: "toserver", QoS: 1, Payload: []byte("state locked")})
		switch {
		case err == nil:
			ok++
		case resp != nil && resp.ReasonCode == 0x96:
			limited++
		default:
			t.Fatalf("publish %d: %v %+v", i, err, resp)
		}
	}
	if ok != 3 || limited != 7 {
		t.Errorf("%d accepted, %d refused as too fast; want 3 and 7", ok, limited)
	}
	n := 0
	for _, e := range s.events("type=limit") {
		if e.Device == "noisy" {
			n++
		}
	}
	if n != 1 {
		t.Errorf("%d limit events for 7 refusals, want 1", n)
	}
	t.Cleanup(ackLoop(t, quiet, "quiet", lockStates))
	var c commandJSON
	s.apiJSON("POST", "/api/v1/devices/quiet/lock?wait=10s", nil, http.StatusOK, &c)
	if c.Status != "done" {
		t.Errorf("the quiet device's command: %+v", c)
	}
}

// TestMessageRateV3: a v3 device past its rate gets no PUBACK, so it does
// not believe its report taken.
func TestMessageRateV3(t *testing.T) {
	s := startServerWith(t, "", func(c *config) {
		c.MQTTLimits.MessageRate = 0.01
		c.MQTTLimits.MessageBurst = 1
	})
	d := s.connect("door", "door", s.createDevice("door", "lock"))
	d.publish("toserver", false, "state locked") // within the burst
	tok := d.c.Publish("toserver", 1, false, "state open")
	if tok.WaitTimeout(time.Second) {
		t.Errorf("a report past the rate was acknowledged (err %v)", tok.Error())
	}
}

func TestHTTPConnectionsPerAddress(t *testing.T) {
	s := startServerWith(t, "", func(c *config) { c.HTTPMaxConnsPer = 3 })
	addr := strings.TrimPrefix(s.url, "http://")
	for i := 0; i < 3; i++ {
		if c := dialFrom(t, "127.0.0.9", addr); !isOpen(c) {
			t.Fatalf("HTTP connection %d refused under the limit", i)
		}
	}
	c := dialFrom(t, "127.0.0.9", addr)
	io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
	if !closedByServer(c) {
		t.Error("a fourth HTTP connection from one address was served")
	}
	if st, _ := s.api("GET", "/healthz", "-", nil); st != http.StatusOK {
		t.Errorf("another address: %d", st)
	}
}

// TestPersistentSessionsPerUser: a person keeps at most
// --max-persistent-per-user sessions after their connections end; taking
// one of them over again is never refused.
func TestPersistentSessionsPerUser(t *testing.T) {
	s := startServerWith(t, "", func(c *config) { c.MQTTLimits.MaxPersistentPerUser = 2 })
	alice := s.createUser("alice", "member")
	keep := func(id string) error {
		opts := paho.NewClientOptions().AddBroker("tcp://" + s.mqtt).SetClientID(id).SetProtocolVersion(4).
			SetUsername("alice").SetPassword(alice).SetCleanSession(false).SetAutoReconnect(false).
			SetConnectRetry(false).SetConnectTimeout(5 * time.Second)
		c := paho.NewClient(opts)
		tok := c.Connect()
		if !tok.WaitTimeout(10 * time.Second) {
			return context.DeadlineExceeded
		}
		if tok.Error() != nil {
			return tok.Error()
		}
		c.Disconnect(0) // the session stays
		return nil
	}
	for _, id := range []string{"p1", "p2"} {
		if err := keep(id); err != nil {
			t.Fatalf("persistent session %s: %v", id, err)
		}
	}
	if err := keep("p3"); err == nil {
		t.Error("a third persistent session was kept")
	}
	if err := keep("p1"); err != nil {
		t.Errorf("resuming a kept session: %v", err)
	}
	if _, err := s.tryConnect("p4", "alice", alice); err != nil { // clean: not limited by this
		t.Errorf("a clean session: %v", err)
	}
}

// TestStreamsPerUser: past --max-streams-per-user a person's new event
// stream is refused with 429 and Retry-After; closing one makes room, and
// other people are not affected.
func TestStreamsPerUser(t *testing.T) {
	s := startServerWith(t, "", func(c *config) { c.MaxStreams = 2 })
	alice := s.createUser("alice", "member")
	_, stop1 := s.stream(alice, "")
	_, stop2 := s.stream(alice, "")
	defer stop2()
	req, _ := http.NewRequest("GET", s.url+"/api/v1/events/stream", nil)
	req.Header.Set("Authorization", "Bearer "+alice)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" || !strings.Contains(string(body), "too many live event streams") {
		t.Errorf("a third stream: %d %q %s", resp.StatusCode, resp.Header.Get("Retry-After"), body)
	}
	_, stopAdmin := s.stream(testAdminToken, "") // someone else
	defer stopAdmin()
	stop1()
	// The server notices the closed stream when it next writes to it (a
	// heartbeat or an event): make an event, then wait for the slot.
	deadline := time.Now().Add(20 * time.Second)
	for {
		s.createDevice(fmt.Sprintf("d%d", time.Now().UnixNano()), "lock")
		req, _ := http.NewRequest("GET", s.url+"/api/v1/events/stream", nil)
		req.Header.Set("Authorization", "Bearer "+alice)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a stream slot never came back after one was closed: %d", resp.StatusCode)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestConnectRatePerAddress: past --connect-burst new connections from one
// address, more are closed at once until the bucket refills at
// --connect-rate; another address is not affected.
func TestConnectRatePerAddress(t *testing.T) {
	s := startServerWith(t, "", func(c *config) {
		c.MQTTLimits.ConnectRate = 0.01
		c.MQTTLimits.ConnectBurst = 5
	})
	secret := s.createDevice("door", "lock")
	for i := 0; i < 5; i++ {
		c, err := s.tryConnectFrom("127.0.0.11", "door", "door", secret)
		if err != nil {
			t.Fatalf("connection %d within the burst: %v", i, err)
		}
		c.c.Disconnect(0)
	}
	if c := dialFrom(t, "127.0.0.11", s.mqtt); !closedByServer(c) {
		t.Error("a sixth new connection within the second was kept")
	}
	if _, err := s.tryConnectFrom("127.0.0.12", "door", "door", secret); err != nil {
		t.Errorf("another address: %v", err)
	}
}
