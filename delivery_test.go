package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
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
// QoS 1 messages unacknowledged, the broker parks the next one. mochi
// v2.7.9 parked it without its expiry and wrote it as soon as the device
// acked, however late: a device slow to ack its welcome received an unlock
// seconds after its not-after, after the server had recorded the command as
// expired, and a device that reads only the first word (DESIGN §3: naive
// devices "still work") opened the door. The patched mochi drops it.
func TestParkedCommandNeverDeliveredAfterNotAfter(t *testing.T) {
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
	// The PUBACK of the hand-shake may come after the welcome; nothing
	// else may come while the window is full.
	for pk := dev.read(500 * time.Millisecond); pk.FixedHeader.Type != 0; pk = dev.read(500 * time.Millisecond) {
		if pk.FixedHeader.Type != packets.Puback {
			t.Fatalf("unexpected packet type %d: %q", pk.FixedHeader.Type, pk.Payload)
		}
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

// When a QoS 1 command to a v5 device expires unacknowledged, mochi v2.7.9's
// sweep deleted it without giving back the send quota it took: with
// Receive Maximum 1 (64 for a default client, after 64 such losses) every
// later command was parked and never sent, while the device looked online.
// The patched mochi gives the quota back.
func TestExpiredCommandFreesSendQuota(t *testing.T) {
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

// TestDeliveryUnderReconnectChurn: devices reconnect at random (taking
// their own sessions over, or after a clean disconnect) while commands are
// sent to them. In the end every command is done, failed or expired; each
// done command reached its device exactly once; no command reached a
// device after its not-after; and every device still receives commands.
func TestDeliveryUnderReconnectChurn(t *testing.T) {
	s := startServer(t, "") // command ttl 3 s
	const devices = 4
	type receipt struct {
		n    int
		late time.Duration // how long after its not-after it arrived, if it did
	}
	var (
		mu       sync.Mutex
		receipts = map[string]*receipt{}
	)
	// A device's message handler: record the command and ack it at once
	// on the connection it came in on.
	handler := func(c paho.Client, m paho.Message) {
		f := strings.Fields(string(m.Payload()))
		if len(f) != 3 {
			return
		}
		na, _ := strconv.ParseInt(f[2], 10, 64)
		mu.Lock()
		r := receipts[f[1]]
		if r == nil {
			r = &receipt{}
			receipts[f[1]] = r
		}
		r.n++
		// The broker writes a command only before its not-after second
		// (third_party PATCHES.md §3, proven to the second by the parked
		// and queued tests); 1 s covers the hand-off from the socket to
		// this handler on a busy machine, and is still far below the
		// seconds-late delivery the old broker made.
		if late := time.Since(time.Unix(na, 0)); late > time.Second {
			r.late = late
		}
		mu.Unlock()
		c.Publish("toserver", 1, false, "ack "+f[1]+" ok "+lockStates[f[0]])
	}
	secrets := make([]string, devices)
	for i := range secrets {
		secrets[i] = s.createDevice(fmt.Sprintf("d%d", i), "lock")
	}
	dial := func(i int) (paho.Client, error) {
		id := fmt.Sprintf("d%d", i)
		opts := paho.NewClientOptions().AddBroker("tcp://" + s.mqtt).SetClientID(id).SetProtocolVersion(4).
			SetUsername(id).SetPassword(secrets[i]).SetAutoReconnect(false).SetConnectRetry(false).
			SetCleanSession(true).SetConnectTimeout(5 * time.Second).SetDefaultPublishHandler(handler)
		c := paho.NewClient(opts)
		if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			return nil, fmt.Errorf("connect %s: %v", id, tok.Error())
		}
		if tok := c.Subscribe("todevice/"+id, 1, nil); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			c.Disconnect(0)
			return nil, fmt.Errorf("subscribe %s: %v", id, tok.Error())
		}
		return c, nil
	}

	stop := make(chan struct{})
	var churn sync.WaitGroup
	finals := make([]paho.Client, devices)
	for i := 0; i < devices; i++ {
		churn.Add(1)
		go func(i int) {
			defer churn.Done()
			rng := rand.New(rand.NewPCG(uint64(i), 7))
			var cur paho.Client
			for {
				select {
				case <-stop:
					finals[i] = cur
					return
				case <-time.After(time.Duration(20+rng.IntN(200)) * time.Millisecond):
				}
				old := cur
				if old != nil && rng.IntN(2) == 0 {
					old.Disconnect(0) // a clean disconnect first; otherwise a takeover
					old = nil
				}
				c, err := dial(i)
				if err != nil {
					t.Error(err)
					finals[i] = cur
					return
				}
				if old != nil {
					old.Disconnect(0)
				}
				cur = c
			}
		}(i)
	}

	// Commands, sent concurrently from two people's points of view.
	var (
		sent   []string
		sentMu sync.Mutex
		send   sync.WaitGroup
	)
	for w := 0; w < 2; w++ {
		send.Add(1)
		go func(w int) {
			defer send.Done()
			verbs := []string{"lock", "unlock"}
			for k := 0; ; k++ {
				select {
				case <-stop:
					return
				case <-time.After(15 * time.Millisecond):
				}
				var c commandJSON
				st, body := s.api("POST", fmt.Sprintf("/api/v1/devices/d%d/%s?wait=0s", (k+w)%devices, verbs[k%2]), "", nil)
				switch st {
				case http.StatusAccepted, http.StatusOK:
					if err := json.Unmarshal(body, &c); err != nil || c.ID == "" {
						t.Errorf("command answer %s: %v", body, err)
						return
					}
					sentMu.Lock()
					sent = append(sent, c.ID)
					sentMu.Unlock()
				case http.StatusConflict: // offline between two connections: no command
				default:
					t.Errorf("command: %d %s", st, body)
					return
				}
			}
		}(w)
	}
	time.Sleep(6 * time.Second)
	close(stop)
	send.Wait()
	churn.Wait()
	for i, c := range finals {
		if c == nil || !c.IsConnectionOpen() {
			var err error
			if finals[i], err = dial(i); err != nil {
				t.Fatal(err)
			}
		}
		defer finals[i].Disconnect(0)
	}
	if len(sent) < 50 {
		t.Fatalf("only %d commands were sent", len(sent))
	}

	// Every command ends; none stays sent.
	counts := map[string]int{}
	for _, id := range sent {
		var c commandJSON
		deadline := time.Now().Add(30 * time.Second)
		for {
			s.apiJSON("GET", "/api/v1/commands/"+id, nil, http.StatusOK, &c)
			if c.Status != "sent" || time.Now().After(deadline) {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		counts[c.Status]++
		mu.Lock()
		r := receipts[id]
		mu.Unlock()
		switch {
		case c.Status == "done" && r == nil:
			t.Errorf("command %s done but never received", id)
		case c.Status == "done" && r.n != 1:
			t.Errorf("command %s done but received %d times", id, r.n)
		case c.Status != "done" && c.Status != "failed" && c.Status != "expired":
			t.Errorf("command %s ended %q", id, c.Status)
		}
		if r != nil && r.late > 0 {
			t.Errorf("command %s (%s) received %s after its not-after", id, c.Status, r.late)
		}
	}
	t.Logf("%d commands under churn: %v", len(sent), counts)
	if counts["done"] == 0 {
		t.Error("no command was carried out under churn")
	}

	// No device is left deaf.
	for i := 0; i < devices; i++ {
		var c commandJSON
		st, body := s.api("POST", fmt.Sprintf("/api/v1/devices/d%d/lock?wait=10s", i), "", nil)
		if json.Unmarshal(body, &c); st != http.StatusOK || c.Status != "done" {
			t.Errorf("after the churn d%d: %d %s", i, st, body)
		}
	}
}

// TestBusyDeviceFailsCommandAtOnce: a device that holds the most
// unacknowledged messages the broker keeps for one client does not get a
// command handed over to be dropped: the command fails at once, saying the
// device is busy.
func TestBusyDeviceFailsCommandAtOnce(t *testing.T) {
	s := startServerWith(t, "", roundTripTTL)
	secret := s.createDevice("door", "lock")
	dev := s.dialRaw5("door", "door", secret, packets.Properties{}) // never acks
	dev.subscribe("todevice/door")
	for i := 0; ; i++ {
		if i == 200 {
			t.Fatal("200 commands to a device that acks none, none refused as busy")
		}
		var c commandJSON
		st, body := s.api("POST", "/api/v1/devices/door/lock?wait=0s", "", nil)
		if err := json.Unmarshal(body, &c); err != nil {
			t.Fatalf("%d %s", st, body)
		}
		if c.Status == "sent" {
			continue
		}
		if c.Status != "failed" || !strings.Contains(c.Reason, "busy") || i < 64 {
			t.Fatalf("command %d: %d %s, want failed as busy after at least 64 in flight", i, st, body)
		}
		break
	}
}

// TestCommandsShedPastTheBound: past --max-commands requests in progress,
// a command request is answered at once with 503 and Retry-After.
func TestCommandsShedPastTheBound(t *testing.T) {
	var logs syncBuffer
	s := startServerWith(t, "", func(c *config) {
		roundTripTTL(c)
		c.MaxCommands, c.LogLevel, c.testLog = 1, "info", &logs
	})
	s.connect("door", "door", s.createDevice("door", "lock")).subscribe("todevice/door") // never answers
	s.connect("gate", "gate", s.createDevice("gate", "lock")).subscribe("todevice/gate")
	held := make(chan int, 1)
	go func() {
		st, _ := s.api("POST", "/api/v1/devices/door/lock?wait=8s", "", nil)
		held <- st
	}()
	// The first request holds the only slot once its command is sent.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if len(s.events("type=command&device=door")) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the first command was never sent")
		}
	}
	req, _ := http.NewRequest("POST", s.url+"/api/v1/devices/gate/unlock?wait=0s", nil)
	req.Header.Set("Authorization", "Bearer "+testAdminToken)
	firstRefusal := time.Now()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" ||
		!strings.Contains(string(body), "too many commands in progress") {
		t.Errorf("a command past the bound: %d %q %s", resp.StatusCode, resp.Header.Get("Retry-After"), body)
	}
	// Refusals are logged at once, then together every 10 s, never one
	// error line each.
	for range 20 {
		if st, _ := s.api("POST", "/api/v1/devices/gate/unlock?wait=0s", "", nil); st != http.StatusServiceUnavailable {
			t.Fatalf("past the bound: %d", st)
		}
	}
	lines, most := strings.Count(logs.String(), "commands refused"), 1+int(time.Since(firstRefusal)/(10*time.Second))
	if lines < 1 || lines > most || strings.Contains(logs.String(), "level=ERROR") {
		t.Errorf("21 refusals logged %d times as refused, want 1 to %d; log:\n%s", lines, most, logs.String())
	}
	if st := <-held; st != http.StatusAccepted {
		t.Errorf("the waiting command: %d", st)
	}
	// The slot is free again.
	if st, body := s.api("POST", "/api/v1/devices/gate/unlock?wait=0s", "", nil); st != http.StatusAccepted {
		t.Errorf("after the bound frees: %d %s", st, body)
	}
}
