package actions

import (
	"cmp"
	"encoding/json"
	"strings"
	"sync"
	"time"
)

// Home Assistant MQTT discovery (DESIGN §3, §6; docs/home-assistant.md).
//
// A person points Home Assistant's MQTT integration at the broker with
// their own name and token and sets its discovery prefix to
// HomeAssistantPrefix(name), "ha/<name>", a tree only they may read and only
// the server writes. From their first subscription there the server keeps,
// retained, for every device they may see:
//
//	ha/<name>/<component>/<object>/config        discovery config (JSON)
//	ha/<name>/<component>/<object>/state         LOCKED, UNLOCKED, … / on, off (not for cameras)
//	ha/<name>/<component>/<object>/availability  online or offline
//	ha/<name>/image/<object>/image               a camera's latest stranger picture
//
// with component lock (locks), switch (lights) or image (cameras), and
// object the device id escaped to Home Assistant's [a-zA-Z0-9_-]. Commands
// go the way every person's do: command_topic is "toserver" and the
// payloads are "lock <id>", "unlock <id>", "on <id>", "off <id>", so grants
// and windows apply unchanged.
//
// Which devices: an admin's, every device; anyone else's, every device they
// hold a grant for that has not ended (its until is in the future or
// unset). A guest outside every window of their grants keeps the entity,
// shown unavailable with an unknown state, as everywhere else (viewer.show).
// When a grant ends or is deleted, the device is deleted, or the person is,
// its config is cleared (an empty retained message, which Home Assistant
// reads as "remove this entity"), with its state and availability.
//
// The trees are kept in memory from a person's first subscription until
// the server stops, and follow every committed event (haCommitted) and, for
// time windows opening, closing and ending, a sweep every haSweep.

// HomeAssistantPrefix is the discovery prefix only person name reads.
func HomeAssistantPrefix(name string) string { return "ha/" + name }

// HomeAssistantTopic reports whether topic (or subscription filter) lies in
// person name's own discovery tree: the prefix itself or anything below it.
// A filter with a wildcard before or in the name is not.
func HomeAssistantTopic(name, topic string) bool {
	prefix := HomeAssistantPrefix(name)
	return topic == prefix || strings.HasPrefix(topic, prefix+"/")
}

// RetainedPublisher is the part of a Publisher that keeps retained
// messages, for Home Assistant; a Publisher without it gets no trees.
type RetainedPublisher interface {
	// PublishRetained publishes payload retained on topic, kept until
	// replaced or cleared.
	PublishRetained(topic string, payload []byte) error
	// ClearRetained removes topic's retained message.
	ClearRetained(topic string) error
}

// haSweep is how often every tree is checked against the clock: grant
// windows open and close, grants end.
const haSweep = time.Minute

// homeAssistant holds what has been published in each person's tree.
type homeAssistant struct {
	mu sync.Mutex
	// trees: person → device id → topic → what was published there (the
	// payload; for a picture, "picture <stranger id>").
	trees map[string]map[string]map[string]string
	// dirty and dirtyAll are what commits changed since the worker last
	// synced; kick wakes the worker. Commits only mark them, so a report
	// never waits for the trees' reads and publishes.
	dirty    map[string]bool
	dirtyAll bool
	kick     chan struct{}
	stop     chan struct{}
	done     chan struct{}
}

// WatchHomeAssistant starts keeping p's tree, publishing it now the first
// time: the broker calls it when p subscribes within their prefix.
func (s *Service) WatchHomeAssistant(p Principal) {
	if p.Kind != PrincipalUser {
		return
	}
	if _, ok := s.pub.(RetainedPublisher); !ok {
		return
	}
	s.ha.mu.Lock()
	defer s.ha.mu.Unlock()
	if _, ok := s.ha.trees[p.ID]; ok {
		return
	}
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return
	}
	if s.ha.trees == nil {
		s.ha.trees = map[string]map[string]map[string]string{}
		s.ha.stop, s.ha.done, s.ha.kick = make(chan struct{}), make(chan struct{}), make(chan struct{}, 1)
		s.ha.dirty = map[string]bool{}
		go s.haSweeper(s.ha.stop, s.ha.kick, s.ha.done)
	}
	s.ha.trees[p.ID] = map[string]map[string]string{}
	s.log.Info("home assistant discovery started", "user", p.ID)
	s.haSync(p.ID, "")
}

// haSweeper syncs what commits marked as changed when kicked, and every
// tree every haSweep, until stopHomeAssistant.
func (s *Service) haSweeper(stop <-chan struct{}, kick <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	t := time.NewTicker(haSweep)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			s.haSyncAll()
		case <-kick:
			s.ha.mu.Lock()
			all, devices := s.ha.dirtyAll, s.ha.dirty
			s.ha.dirtyAll, s.ha.dirty = false, map[string]bool{}
			s.ha.mu.Unlock()
			if all {
				s.haSyncAll()
				continue
			}
			for id := range devices {
				s.haSyncDevice(id)
			}
		}
	}
}

// stopHomeAssistant ends the sweep; the retained messages stay with the
// broker until it stops.
func (s *Service) stopHomeAssistant() {
	s.ha.mu.Lock()
	stop, done := s.ha.stop, s.ha.done
	s.ha.stop = nil
	s.ha.mu.Unlock()
	if stop != nil {
		close(stop)
		<-done
	}
}

// haCommitted marks what a commit changed for the worker (haSweeper) to
// bring up to date: every tree when access changed or an admin changed
// something, otherwise only the entries of the devices the events are
// about. It runs on the committing goroutine (a device's connection loop,
// for a report), so it only marks and wakes.
func (s *Service) haCommitted(events []Event, access bool) {
	s.ha.mu.Lock()
	defer s.ha.mu.Unlock()
	if len(s.ha.trees) == 0 || s.ha.kick == nil {
		return
	}
	changed := access
	for _, e := range events {
		switch e.Type {
		case EventAdmin:
			s.ha.dirtyAll, changed = true, true
		case EventState, EventAck, EventOnline, EventOffline, EventHandShake, EventStranger, EventPairing:
			if e.Device != "" {
				s.ha.dirty[e.Device], changed = true, true
			}
		}
	}
	if access {
		s.ha.dirtyAll = true
	}
	if changed {
		select {
		case s.ha.kick <- struct{}{}:
		default: // the worker is already due to run
		}
	}
}

func (s *Service) haSyncAll() {
	s.ha.mu.Lock()
	defer s.ha.mu.Unlock()
	for name := range s.ha.trees {
		s.haSync(name, "")
	}
}

func (s *Service) haSyncDevice(id string) {
	s.ha.mu.Lock()
	defer s.ha.mu.Unlock()
	for name := range s.ha.trees {
		s.haSync(name, id)
	}
}

// haSync makes person name's tree what it should be now, for every device
// (only "") or for device only; s.ha.mu is held, so the state read last is
// the one published last.
func (s *Service) haSync(name, only string) {
	rp, ok := s.pub.(RetainedPublisher)
	if !ok {
		return
	}
	want, err := s.haWant(name, only)
	if err != nil {
		s.log.Error("home assistant discovery", "user", name, "error", err)
		return
	}
	tree := s.ha.trees[name]
	for id, have := range tree {
		if only != "" && id != only {
			continue
		}
		if _, ok := want[id]; !ok { // gone: config first, so the entity goes before its topics empty
			for _, topic := range haOrder(have, true) {
				if err := rp.ClearRetained(topic); err != nil {
					s.log.Debug("home assistant clear", "topic", topic, "error", err)
				}
			}
			delete(tree, id)
			s.log.Info("home assistant entity removed", "user", name, "device_id", id)
		}
	}
	for id, topics := range want {
		have := tree[id]
		if have == nil {
			have = map[string]string{}
			tree[id] = have
		}
		for _, topic := range haOrder(topics, false) {
			v := topics[topic]
			if have[topic] == v {
				continue
			}
			payload := []byte(v)
			if pid, ok := strings.CutPrefix(v, "picture "); ok {
				if payload, err = s.haPicture(pid); err != nil {
					s.log.Debug("home assistant picture", "device_id", id, "error", err)
					continue
				}
			}
			if err := rp.PublishRetained(topic, payload); err != nil {
				s.log.Debug("home assistant publish", "topic", topic, "error", err)
				continue
			}
			have[topic] = v
		}
		for topic := range have {
			if _, ok := topics[topic]; !ok {
				_ = rp.ClearRetained(topic)
				delete(have, topic)
			}
		}
	}
	if _, ok := s.haUser(name); !ok { // the person is gone: so is their tree
		delete(s.ha.trees, name)
	}
}

// haOrder lists topics with the config last (publishing: its state is
// there when Home Assistant subscribes) or first (clearing).
func haOrder(topics map[string]string, configFirst bool) []string {
	var out []string
	var config string
	for t := range topics {
		if strings.HasSuffix(t, "/config") {
			config = t
			continue
		}
		out = append(out, t)
	}
	if config == "" {
		return out
	}
	if configFirst {
		return append([]string{config}, out...)
	}
	return append(out, config)
}

func (s *Service) haUser(name string) (User, bool) {
	ix := s.index.cur.Load()
	if ix == nil {
		return User{}, false
	}
	u, ok := ix.users[name]
	return u, ok
}

func (s *Service) haPicture(id string) (b []byte, err error) {
	err = s.store.View(func(tx Tx) error { b, err = tx.Picture(id); return err })
	return b, err
}

// haWant computes person name's tree: device id → topic → value.
func (s *Service) haWant(name, only string) (map[string]map[string]string, error) {
	want := map[string]map[string]string{}
	u, ok := s.haUser(name)
	if !ok {
		return want, nil
	}
	p := Principal{Kind: PrincipalUser, ID: u.Name, Role: u.Role}
	err := s.store.View(func(tx Tx) error {
		v, err := s.viewer(tx, p)
		if err != nil {
			return err
		}
		var devices []Device
		if only != "" {
			d, err := tx.Device(only)
			switch {
			case ErrorCode(err) == ENotFound:
			case err != nil:
				return err
			default:
				devices = []Device{d}
			}
		} else if devices, err = tx.Devices(); err != nil {
			return err
		}
		for _, d := range devices {
			if !haShown(v, d) {
				continue
			}
			topics, err := s.haEntity(tx, v, name, s.withPresence(d))
			if err != nil {
				return err
			}
			want[d.ID] = topics
		}
		return nil
	})
	return want, err
}

// haShown reports whether v's tree holds device d: any device for an
// admin, otherwise one with a grant that has not ended.
func haShown(v viewer, d Device) bool {
	if !v.sees(d) {
		return false
	}
	if v.p.Role == RoleAdmin {
		return true
	}
	for _, g := range v.grants[d.ID] {
		if g.Until.IsZero() || v.now.Before(g.Until) {
			return true
		}
	}
	return false
}

// haComponents is the Home Assistant platform of each kind.
var haComponents = map[string]string{KindLock: "lock", KindLight: "switch", KindCamera: "image"}

// haObjectID escapes a device id into Home Assistant's object id
// alphabet, [a-zA-Z0-9_-], one to one: "_" becomes "__" and "." "_d".
func haObjectID(id string) string {
	return strings.NewReplacer("_", "__", ".", "_d").Replace(id)
}

// haEntity is the topics of device d in person name's tree.
func (s *Service) haEntity(tx Tx, v viewer, name string, d Device) (map[string]string, error) {
	component, ok := haComponents[d.Kind]
	if !ok {
		return nil, nil
	}
	d = v.show(d)
	base := HomeAssistantPrefix(name) + "/" + component + "/" + haObjectID(d.ID)
	availability := "offline"
	if d.Online {
		availability = "online"
	}
	topics := map[string]string{base + "/availability": availability}
	config := map[string]any{
		"name":                  nil, // the entity is the device's main feature: it takes the device's name
		"unique_id":             "gatehouse_" + d.ID,
		"availability_topic":    base + "/availability",
		"payload_available":     "online",
		"payload_not_available": "offline",
		"device": map[string]any{
			"identifiers":   []string{"gatehouse_" + d.ID},
			"name":          cmp.Or(d.Name, d.ID),
			"manufacturer":  "Gatehouse",
			"model":         d.Kind,
			"serial_number": d.ID,
			"sw_version":    d.Firmware,
		},
		"origin": map[string]any{"name": "Gatehouse"},
	}
	switch d.Kind {
	case KindLock:
		topics[base+"/state"] = haLockState(d.State)
		config["command_topic"] = ServerTopic
		config["payload_lock"] = "lock " + d.ID
		config["payload_unlock"] = "unlock " + d.ID
		config["state_topic"] = base + "/state"
		config["state_locked"] = "LOCKED"
		config["state_unlocked"] = "UNLOCKED"
		config["state_locking"] = "LOCKING"
		config["state_unlocking"] = "UNLOCKING"
		config["state_jammed"] = "JAMMED"
		config["state_open"] = "OPEN"
		config["payload_reset"] = "None"
		config["optimistic"] = false
		config["qos"] = 1
	case KindLight:
		topics[base+"/state"] = haSwitchState(d.State)
		config["command_topic"] = ServerTopic
		config["payload_on"] = "on " + d.ID
		config["payload_off"] = "off " + d.ID
		config["state_topic"] = base + "/state"
		config["state_on"] = "on"
		config["state_off"] = "off"
		config["optimistic"] = false
		config["qos"] = 1
	case KindCamera:
		config["image_topic"] = base + "/image"
		config["content_type"] = "image/jpeg"
		st, ok, err := haLatestPicture(tx, v, d.ID)
		if err != nil {
			return nil, err
		}
		if ok {
			config["content_type"] = st.Type
			topics[base+"/image"] = "picture " + st.ID
		}
	}
	b, err := json.Marshal(config)
	if err != nil {
		return nil, err
	}
	topics[base+"/config"] = string(b)
	return topics, nil
}

// haLatestPicture finds camera id's newest picture that v may read.
func haLatestPicture(tx Tx, v viewer, id string) (Stranger, bool, error) {
	list, _, err := tx.Strangers(StrangerQuery{Limit: 1, Filter: func(st Stranger) bool {
		return st.Device == id && v.reads(Device{ID: id}, st.Time)
	}})
	if err != nil || len(list) == 0 {
		return Stranger{}, false, err
	}
	return list[0], true, nil
}

// haLockState is a lock state as Home Assistant's lock reads it; "None"
// resets it to unknown.
func haLockState(state string) string {
	if state == "" || state == "unknown" {
		return "None"
	}
	return strings.ToUpper(state)
}

func haSwitchState(state string) string {
	if state == "on" || state == "off" {
		return state
	}
	return "None"
}
