package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	paho5 "github.com/eclipse/paho.golang/paho"
	paho "github.com/eclipse/paho.mqtt.golang"

	"gatehouse/broker"
)

// The end-to-end tests run the real server (store, service, broker, HTTP)
// on loopback ports chosen by the kernel, with a data dir in t.TempDir, and
// talk to it with paho clients as devices and apps and net/http as people.

const testAdminToken = "test-admin-token-0123456789abcdef"

type testServer struct {
	t    *testing.T
	app  *app
	dir  string
	mqtt string // host:port
	url  string // http://host:port
}

// startServer starts a server on dir (a fresh temp dir when dir is "").
func startServer(t *testing.T, dir string) *testServer {
	t.Helper()
	return startServerWith(t, dir, nil)
}

// startServerWith is startServer with a change to the configuration.
func startServerWith(t *testing.T, dir string, change func(*config)) *testServer {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	cfg := config{Data: dir, MQTT: "127.0.0.1:0", HTTP: "127.0.0.1:0", CommandTTL: 3 * time.Second,
		LogLevel: "error", AdminToken: testAdminToken, connectTimeout: time.Second, Location: time.UTC,
		// Tests reconnect from one address and publish far faster than a
		// site does; limits_test.go leans on these limits itself.
		MQTTLimits: broker.Limits{ConnectRate: 1e6, ConnectBurst: 1e6, MessageRate: 1e6, MessageBurst: 1e6}}
	if change != nil {
		change(&cfg)
	}
	var logs io.Writer = io.Discard
	if cfg.testLog != nil {
		logs = cfg.testLog
	}
	a, err := start(cfg, logs)
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	s := &testServer{t: t, app: a, dir: dir, mqtt: a.broker.Addr(), url: "http://" + a.httpLn.Addr().String()}
	t.Cleanup(func() { s.stop() })
	return s
}

// settle waits for the server's queued notifications and presence changes.
func (s *testServer) settle() {
	if s.app != nil {
		s.app.svc.Settle()
	}
}

func (s *testServer) stop() {
	if s.app != nil {
		if err := s.app.close(); err != nil {
			s.t.Errorf("close: %v", err)
		}
		s.app = nil
	}
}

// api sends a request with the admin token unless token says otherwise
// ("-" for none) and returns the status and body.
func (s *testServer) api(method, path, token string, body any) (int, []byte) {
	s.t.Helper()
	var r io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		r = strings.NewReader(b)
	default:
		j, _ := json.Marshal(b)
		r = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, s.url+path, r)
	if err != nil {
		s.t.Fatal(err)
	}
	if token == "" {
		token = testAdminToken
	}
	if token != "-" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := (&http.Client{Transport: answerValidator(s.t)}).Do(req)
	if err != nil {
		s.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, out
}

// apiFrom is api from the loopback address src.
func (s *testServer) apiFrom(src, method, path, token string) int {
	s.t.Helper()
	d := &net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	client := &http.Client{Transport: &http.Transport{DialContext: d.DialContext}}
	defer client.CloseIdleConnections()
	req, _ := http.NewRequest(method, s.url+path, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := client.Do(req)
	if err != nil {
		s.t.Fatalf("%s %s from %s: %v", method, path, src, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// apiJSON is api that wants status and decodes the body into v.
func (s *testServer) apiJSON(method, path string, body any, want int, v any) {
	s.t.Helper()
	got, out := s.api(method, path, "", body)
	if got != want {
		s.t.Fatalf("%s %s: status %d, want %d; body %s", method, path, got, want, out)
	}
	if v != nil {
		if err := json.Unmarshal(out, v); err != nil {
			s.t.Fatalf("%s %s: decode %s: %v", method, path, out, err)
		}
	}
}

type deviceJSON struct {
	ID       string    `json:"id"`
	Kind     string    `json:"kind"`
	Name     string    `json:"name"`
	State    string    `json:"state"`
	Online   bool      `json:"online"`
	LastSeen time.Time `json:"last_seen"`
	Firmware string    `json:"firmware"`
	Secret   string    `json:"secret"`
}

type commandJSON struct {
	ID       string    `json:"id"`
	Device   string    `json:"device"`
	Verb     string    `json:"verb"`
	Status   string    `json:"status"`
	State    string    `json:"state"`
	Reason   string    `json:"reason"`
	By       string    `json:"by"`
	Via      string    `json:"via"`
	NotAfter time.Time `json:"not_after"`
}

type eventJSON struct {
	ID      string `json:"id"`
	Type    string `json:"type"`
	Device  string `json:"device"`
	User    string `json:"user"`
	Via     string `json:"via"`
	Command string `json:"command"`
	Detail  string `json:"detail"`
}

// createDevice creates a device through the API and returns its secret.
func (s *testServer) createDevice(id, kind string) string {
	s.t.Helper()
	var d deviceJSON
	s.apiJSON("POST", "/api/v1/devices", map[string]string{"id": id, "kind": kind, "name": id}, http.StatusCreated, &d)
	if d.Secret == "" {
		s.t.Fatalf("create %s: no secret", id)
	}
	return d.Secret
}

func (s *testServer) events(query string) []eventJSON {
	s.t.Helper()
	var l struct {
		Items []eventJSON `json:"items"`
	}
	s.apiJSON("GET", "/api/v1/events?"+query, nil, http.StatusOK, &l)
	return l.Items
}

// client is a paho v3.1.1 client that records every message it receives.
type client struct {
	t    *testing.T
	c    paho.Client
	msgs chan string // "topic payload"
	lost chan error
	// settle waits for the server's queued notifications and presence
	// changes (actions.Service.Settle).
	settle func()
}

// connect logs in to the test server; it fails the test when refused.
func (s *testServer) connect(clientID, user, pass string) *client {
	s.t.Helper()
	c, err := s.tryConnect(clientID, user, pass)
	if err != nil {
		s.t.Fatalf("connect %s: %v", clientID, err)
	}
	return c
}

func (s *testServer) tryConnect(clientID, user, pass string) (*client, error) {
	return s.tryConnectFrom("127.0.0.1", clientID, user, pass)
}

// tryConnectFrom connects from the loopback address src (any of
// 127.0.0.0/8), so tests can play several machines.
func (s *testServer) tryConnectFrom(src, clientID, user, pass string) (*client, error) {
	c := &client{t: s.t, msgs: make(chan string, 100), lost: make(chan error, 1), settle: s.settle}
	opts := paho.NewClientOptions().AddBroker("tcp://" + s.mqtt).SetClientID(clientID).
		SetDialer(&net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}).
		SetProtocolVersion(4). // no silent retry as MQTT 3.1 after a refusal
		SetUsername(user).SetPassword(pass).SetAutoReconnect(false).SetConnectRetry(false).
		SetCleanSession(true).SetConnectTimeout(5 * time.Second).
		SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) {
			c.msgs <- m.Topic() + " " + string(m.Payload())
		}).
		SetConnectionLostHandler(func(_ paho.Client, err error) {
			select {
			case c.lost <- err:
			default:
			}
		})
	c.c = paho.NewClient(opts)
	tok := c.c.Connect()
	if !tok.WaitTimeout(5 * time.Second) {
		return nil, context.DeadlineExceeded
	}
	if err := tok.Error(); err != nil {
		return nil, err
	}
	s.t.Cleanup(func() { c.c.Disconnect(0) })
	return c, nil
}

// subscribe subscribes at QoS 1 and returns the granted QoS (0x80 = refused).
// An app topic is subscribed once the notifications already queued (a
// device's online, announced off its connect) are out, so that it hears
// what happens from then on, as a test expects.
func (c *client) subscribe(topic string) byte {
	c.t.Helper()
	if strings.HasPrefix(topic, "toapp/") && c.settle != nil {
		c.settle()
	}
	tok := c.c.Subscribe(topic, 1, nil)
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		c.t.Fatalf("subscribe %s: %v", topic, tok.Error())
	}
	// paho keys a shared subscription's result without its $share/ prefix.
	for _, granted := range tok.(*paho.SubscribeToken).Result() {
		return granted
	}
	c.t.Fatalf("subscribe %s: no result", topic)
	return 0
}

// publish sends at QoS 1 and waits for the PUBACK.
func (c *client) publish(topic string, retained bool, payload any) {
	c.t.Helper()
	tok := c.c.Publish(topic, 1, retained, payload)
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		c.t.Fatalf("publish %s: %v", topic, tok.Error())
	}
}

// expect waits for a message starting with prefix ("topic word…"),
// skipping others, and returns it.
func (c *client) expect(prefix string) string {
	c.t.Helper()
	deadline := time.After(5 * time.Second)
	var seen []string
	for {
		select {
		case m := <-c.msgs:
			if strings.HasPrefix(m, prefix) {
				return m
			}
			seen = append(seen, m)
		case <-deadline:
			c.t.Fatalf("no message %q; saw %q", prefix, seen)
			return ""
		}
	}
}

// quiet fails when a message arrives within d.
func (c *client) quiet(d time.Duration) {
	c.t.Helper()
	select {
	case m := <-c.msgs:
		c.t.Fatalf("unexpected message %q", m)
	case <-time.After(d):
	}
}

// device connects as device id, subscribes to its topic and shakes hands.
func (s *testServer) device(id, secret, kind string) *client {
	s.t.Helper()
	c := s.connect(id, id, secret)
	if got := c.subscribe("todevice/" + id); got != 1 {
		s.t.Fatalf("device %s subscribe granted %#x", id, got)
	}
	c.publish("toserver", false, "hand_shake "+kind+" 1.0 "+id)
	c.expect("todevice/" + id + " welcome ")
	return c
}

// appClient connects as the admin with the admin token and listens on toapp/admin.
func (s *testServer) appClient(clientID string) *client {
	s.t.Helper()
	c := s.connect(clientID, "admin", testAdminToken)
	if got := c.subscribe("toapp/admin"); got != 1 {
		s.t.Fatalf("app subscribe granted %#x", got)
	}
	return c
}

// client5 is a paho.golang MQTT 5 client.
type client5 struct {
	c    *paho5.Client
	mu   sync.Mutex
	msgs chan *paho5.Publish
}

func (s *testServer) connect5(clientID, user, pass string) (*client5, error) {
	conn, err := net.DialTimeout("tcp", s.mqtt, 5*time.Second)
	if err != nil {
		return nil, err
	}
	c := &client5{msgs: make(chan *paho5.Publish, 100)}
	c.c = paho5.NewClient(paho5.ClientConfig{
		Conn: conn,
		OnPublishReceived: []func(paho5.PublishReceived) (bool, error){func(pr paho5.PublishReceived) (bool, error) {
			c.msgs <- pr.Packet
			return true, nil
		}},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ack, err := c.c.Connect(ctx, &paho5.Connect{ClientID: clientID, Username: user, Password: []byte(pass),
		UsernameFlag: true, PasswordFlag: true, CleanStart: true, KeepAlive: 30})
	if err != nil {
		conn.Close()
		if ack != nil {
			return nil, &connackError{code: ack.ReasonCode}
		}
		return nil, err
	}
	s.t.Cleanup(func() { _ = c.c.Disconnect(&paho5.Disconnect{}) })
	return c, nil
}

type connackError struct{ code byte }

func (e *connackError) Error() string { return "connack refused" }

func stringsReader(s string) io.Reader { return strings.NewReader(s) }

// jsonField reads one string field of a JSON object.
func jsonField(t *testing.T, body []byte, name string) string {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatalf("decode %s: %v", body, err)
	}
	v, _ := m[name].(string)
	return v
}
