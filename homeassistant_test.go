package main

import (
	"bytes"
	"encoding/json"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// The keys Home Assistant's MQTT platforms accept in a discovery config,
// from its documentation (MQTT lock, switch and image; the device block),
// with the ones each requires.
var (
	haCommonKeys = []string{"availability", "availability_mode", "availability_template", "availability_topic",
		"default_entity_id", "device", "enabled_by_default", "encoding", "entity_category", "entity_picture", "icon",
		"json_attributes_template", "json_attributes_topic", "name", "object_id", "origin", "payload_available",
		"payload_not_available", "platform", "unique_id"}
	haPlatformKeys = map[string][]string{
		"lock": {"code_format", "command_template", "command_topic", "optimistic", "payload_lock", "payload_open",
			"payload_reset", "payload_unlock", "qos", "retain", "state_jammed", "state_locked", "state_locking",
			"state_open", "state_opening", "state_topic", "state_unlocked", "state_unlocking", "value_template"},
		"switch": {"command_template", "command_topic", "device_class", "optimistic", "payload_off", "payload_on",
			"qos", "retain", "state_off", "state_on", "state_topic", "value_template"},
		"image": {"content_type", "image_encoding", "image_topic", "url_template", "url_topic"},
	}
	haRequired   = map[string][]string{"lock": {"command_topic"}, "switch": {"command_topic"}, "image": {"image_topic"}}
	haDeviceKeys = []string{"configuration_url", "connections", "hw_version", "identifiers", "manufacturer", "model",
		"model_id", "name", "serial_number", "suggested_area", "sw_version", "via_device"}
)

// haClient is a paho client set up the way Home Assistant's MQTT
// integration connects: MQTT 3.1.1, its own client id, the person's name
// and token, clean session, no will (Gatehouse refuses wills).
type haClient struct {
	t    *testing.T
	c    paho.Client
	mu   sync.Mutex
	msgs []haMsg
}

type haMsg struct {
	topic    string
	payload  []byte
	retained bool
}

func (s *testServer) haConnect(t *testing.T, clientID, user, token string) *haClient {
	t.Helper()
	h := &haClient{t: t}
	opts := paho.NewClientOptions().AddBroker("tcp://" + s.mqtt).SetClientID(clientID).
		SetDialer(&net.Dialer{Timeout: 5 * time.Second}).SetProtocolVersion(4).
		SetUsername(user).SetPassword(token).SetAutoReconnect(false).SetCleanSession(true).
		SetConnectTimeout(5 * time.Second).SetOrderMatters(false).
		SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) {
			h.mu.Lock()
			h.msgs = append(h.msgs, haMsg{m.Topic(), bytes.Clone(m.Payload()), m.Retained()})
			h.mu.Unlock()
		})
	h.c = paho.NewClient(opts)
	if tok := h.c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("connect %s: %v", user, tok.Error())
	}
	t.Cleanup(func() { h.c.Disconnect(0) })
	return h
}

func (h *haClient) subscribe(filter string) byte {
	h.t.Helper()
	tok := h.c.Subscribe(filter, 0, nil) // Home Assistant subscribes to discovery at QoS 0
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		h.t.Fatalf("subscribe %s: %v", filter, tok.Error())
	}
	return tok.(*paho.SubscribeToken).Result()[filter]
}

// last waits for a message on topic matching ok and returns it.
func (h *haClient) last(topic string, ok func(haMsg) bool) haMsg {
	h.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		h.mu.Lock()
		for i := len(h.msgs) - 1; i >= 0; i-- {
			if m := h.msgs[i]; m.topic == topic {
				if ok == nil || ok(m) {
					h.mu.Unlock()
					return m
				}
				break // only the latest counts
			}
		}
		h.mu.Unlock()
		if time.Now().After(deadline) {
			h.t.Fatalf("no message on %s as wanted; have %s", topic, h.topics())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (h *haClient) topics() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for _, m := range h.msgs {
		out = append(out, m.topic)
	}
	return out
}

// configs reads the discovery configs received so far: config topic →
// config.
func (h *haClient) configs() map[string]map[string]any {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := map[string]map[string]any{}
	for _, m := range h.msgs {
		if !strings.HasSuffix(m.topic, "/config") {
			continue
		}
		if len(m.payload) == 0 {
			delete(out, m.topic)
			continue
		}
		var c map[string]any
		if err := json.Unmarshal(m.payload, &c); err != nil {
			h.t.Fatalf("config %s is not JSON: %v", m.topic, err)
		}
		out[m.topic] = c
	}
	return out
}

func checkHAConfig(t *testing.T, topic string, c map[string]any) {
	t.Helper()
	platform := strings.Split(topic, "/")[2] // ha/<user>/<platform>/<object>/config
	allowed := append(slices.Clone(haCommonKeys), haPlatformKeys[platform]...)
	if haPlatformKeys[platform] == nil {
		t.Fatalf("%s: platform %q is not lock, switch or image", topic, platform)
	}
	for k := range c {
		if !slices.Contains(allowed, k) {
			t.Errorf("%s: key %q is not in Home Assistant's MQTT %s schema", topic, k, platform)
		}
	}
	for _, k := range haRequired[platform] {
		if _, ok := c[k]; !ok {
			t.Errorf("%s: no %q, which Home Assistant requires", topic, k)
		}
	}
	dev, _ := c["device"].(map[string]any)
	for k := range dev {
		if !slices.Contains(haDeviceKeys, k) {
			t.Errorf("%s: device key %q is not in Home Assistant's schema", topic, k)
		}
	}
	for _, k := range []string{"identifiers", "name", "sw_version"} {
		if dev[k] == nil {
			t.Errorf("%s: device block has no %s: %v", topic, k, dev)
		}
	}
	if c["unique_id"] == nil || c["availability_topic"] == nil {
		t.Errorf("%s: no unique_id or availability_topic", topic)
	}
}

// TestHomeAssistantDiscovery: a person's Home Assistant, connected as
// that person with their discovery prefix, finds a config for each device
// they may see, operates a lock and a light with the topics and payloads
// the configs name, sees their states follow; another person's prefix is
// refused; a grant ending removes its device's config.
func TestHomeAssistantDiscovery(t *testing.T) {
	s := startServerWith(t, "", roundTripTTL)
	doorSecret := s.createDevice("door", "lock")
	lampSecret := s.createDevice("lamp.1", "light")
	camSecret := s.createDevice("cam", "camera")
	s.createDevice("vault", "lock") // not granted: must not appear
	haToken := s.createUser("homeassistant", "member")
	otherToken := s.createUser("other", "member")
	s.grant(map[string]any{"user": "homeassistant", "device": "door"})
	lampGrant := s.grant(map[string]any{"user": "homeassistant", "device": "lamp.1"})
	s.grant(map[string]any{"user": "homeassistant", "device": "cam"})

	door := s.device("door", doorSecret, "lock")
	t.Cleanup(ackLoop(t, door, "door", lockStates))
	lamp := s.device("lamp.1", lampSecret, "light")
	t.Cleanup(ackLoop(t, lamp, "lamp.1", map[string]string{"on": "on", "off": "off"}))
	pic := testImage(t, "png", 9)
	if st, body := s.upload("/api/v1/strangers", "cam", camSecret, "image/png", pic); st != http.StatusCreated {
		t.Fatalf("upload: %d %s", st, body)
	}

	ha := s.haConnect(t, "homeassistant-01", "homeassistant", haToken)
	if got := ha.subscribe("ha/homeassistant/#"); got != 0 {
		t.Fatalf("subscribe to own prefix: granted %#x", got)
	}
	prefix := "ha/homeassistant/"
	ha.last(prefix+"lock/door/config", nil)
	ha.last(prefix+"switch/lamp_d1/config", nil)
	ha.last(prefix+"image/cam/config", nil)
	configs := ha.configs()
	if len(configs) != 3 {
		t.Fatalf("configs %v, want door, lamp.1 and cam", keys(configs))
	}
	for topic, c := range configs {
		checkHAConfig(t, topic, c)
	}

	// The lock, as Home Assistant would drive it.
	lock := configs[prefix+"lock/door/config"]
	str := func(c map[string]any, k string) string { v, _ := c[k].(string); return v }
	if m := ha.last(str(lock, "availability_topic"), nil); string(m.payload) != str(lock, "payload_available") {
		t.Errorf("door availability %q, want %q", m.payload, str(lock, "payload_available"))
	}
	if tok := ha.c.Publish(str(lock, "command_topic"), 1, false, str(lock, "payload_lock")); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("publish lock: %v", tok.Error())
	}
	ha.last(str(lock, "state_topic"), func(m haMsg) bool { return string(m.payload) == str(lock, "state_locked") })
	if tok := ha.c.Publish(str(lock, "command_topic"), 1, false, str(lock, "payload_unlock")); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("publish unlock: %v", tok.Error())
	}
	ha.last(str(lock, "state_topic"), func(m haMsg) bool { return string(m.payload) == str(lock, "state_unlocked") })

	// The light, as a switch.
	sw := configs[prefix+"switch/lamp_d1/config"]
	ha.c.Publish(str(sw, "command_topic"), 1, false, str(sw, "payload_on")).WaitTimeout(5 * time.Second)
	ha.last(str(sw, "state_topic"), func(m haMsg) bool { return string(m.payload) == str(sw, "state_on") })

	// The camera's latest picture.
	img := configs[prefix+"image/cam/config"]
	if m := ha.last(str(img, "image_topic"), nil); !bytes.Equal(m.payload, pic) || str(img, "content_type") != "image/png" {
		t.Errorf("image: %d bytes, content type %q; want the %d bytes uploaded, image/png", len(m.payload), str(img, "content_type"), len(pic))
	}

	// Availability follows presence.
	door.c.Disconnect(0)
	ha.last(str(lock, "availability_topic"), func(m haMsg) bool { return string(m.payload) == str(lock, "payload_not_available") })

	// Another person's tree is theirs alone, and nobody else writes to it.
	if got := ha.subscribe("ha/other/#"); got != 0x80 {
		t.Errorf("subscribe to another person's prefix: granted %#x, want 0x80", got)
	}
	if got := ha.subscribe("ha/#"); got != 0x80 {
		t.Errorf("subscribe to ha/#: granted %#x, want 0x80", got)
	}
	other := s.connect("other-app", "other", otherToken)
	other.publish(prefix+"lock/evil/config", true, `{"command_topic":"toserver"}`)

	// Retained: a Home Assistant that connects later gets the same
	// configs, and nothing from anyone else.
	later := s.haConnect(t, "homeassistant-02", "homeassistant", haToken)
	later.subscribe("ha/homeassistant/#")
	later.last(prefix+"lock/door/config", func(m haMsg) bool { return m.retained })
	later.last(prefix+"switch/lamp_d1/config", func(m haMsg) bool { return m.retained })
	later.last(prefix+"image/cam/config", func(m haMsg) bool { return m.retained })
	later.last(prefix+"lock/door/state", func(m haMsg) bool { return m.retained && string(m.payload) == "UNLOCKED" })
	for _, topic := range later.topics() {
		if strings.Contains(topic, "evil") || strings.Contains(topic, "vault") {
			t.Errorf("retained %s in the tree", topic)
		}
	}

	// The lamp's grant ends: its config goes (an empty retained message).
	s.apiJSON("DELETE", "/api/v1/grants/"+lampGrant, nil, http.StatusNoContent, nil)
	ha.last(prefix+"switch/lamp_d1/config", func(m haMsg) bool { return len(m.payload) == 0 })
	if _, ok := ha.configs()[prefix+"switch/lamp_d1/config"]; ok {
		t.Error("lamp config still there after its grant was deleted")
	}
	gone := s.haConnect(t, "homeassistant-03", "homeassistant", haToken)
	gone.subscribe("ha/homeassistant/#")
	gone.last(prefix+"lock/door/config", nil)
	time.Sleep(200 * time.Millisecond) // retained messages come in one burst after the SUBACK
	for _, topic := range gone.topics() {
		if strings.Contains(topic, "lamp") {
			t.Errorf("after the grant ended, %s is still retained", topic)
		}
	}
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
