package actions

import (
	"fmt"
	"strings"
	"time"
	"unicode/utf8"
)

// Payload limits: the first word is an action name; the text of a message
// (everything but a picture) is short.
const (
	maxWordLen = 32
	maxTextLen = 4096
)

// Message is one payload sent to the server, with who sent it.
type Message struct {
	Sender Principal
	Via    string
	// Word is the first word of the payload, the action's name.
	Word string
	// Args are the space-separated words after Word (text payloads only).
	Args []string
	// Payload is the whole payload as received.
	Payload []byte
}

// Action handles the messages whose first word is its name. It may answer
// with a reply whose first word is the topic to publish the rest to, and
// that topic must be one the action may reach (see Service.mayReach).
type Action func(m Message) (reply string, err error)

func (s *Service) builtins() map[string]Action {
	return map[string]Action{
		"hand_shake":    s.handShake,
		"add_device":    s.handShake,
		"ack":           s.ack,
		"lock_response": s.lockResponse,
		"state":         s.stateReport,
		"lock":          s.operate,
		"unlock":        s.operate,
		"on":            s.operate,
		"off":           s.operate,
		"find_stranger": s.findStranger,
		"add_action":    s.addAction,
	}
}

// Dispatch runs the action named by the first word of payload for sender.
// It never panics on bad input: an unknown word, a binary or empty payload,
// or missing arguments get an "error …" reply on the sender's own topic.
// The returned error is for the caller's debug log only.
func (s *Service) Dispatch(sender Principal, via string, payload []byte) error {
	m, err := parse(sender, via, payload)
	var reply string
	if err == nil && sender.Kind == PrincipalPair && m.Word != "hand_shake" && m.Word != "add_device" {
		err = Errorf(EForbidden, "a pairing login can only send hand_shake")
	}
	if err == nil {
		act, ok := s.registry[m.Word]
		if !ok {
			act, ok = s.scriptAction(m.Word)
		}
		if !ok {
			err = Errorf(EInvalid, "unknown action %q", m.Word)
		} else {
			reply, err = act(m)
		}
	}
	if err != nil {
		if ErrorCode(err) == EInternal {
			s.log.Error("action failed", "action", m.Word, "error", err)
		}
		reply = replyTopic(sender) + " error " + ErrorMessage(err)
	}
	if reply == "" {
		return err
	}
	if perr := s.sendReply(sender, reply); perr != nil && err == nil {
		err = perr
	}
	return err
}

// parse splits a payload into its action word and text arguments.
func parse(sender Principal, via string, payload []byte) (Message, error) {
	m := Message{Sender: sender, Via: via, Payload: payload}
	if len(payload) == 0 {
		return m, Errorf(EInvalid, "empty payload")
	}
	end := min(len(payload), maxWordLen+1)
	n := 0
	for n < end && payload[n] != ' ' {
		c := payload[n]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_') {
			return m, Errorf(EInvalid, "payload must start with an action name")
		}
		n++
	}
	if n == 0 || n > maxWordLen {
		return m, Errorf(EInvalid, "payload must start with an action name")
	}
	m.Word = string(payload[:n])
	if m.Word == "find_stranger" {
		return m, nil // a picture follows; the action reads Payload itself
	}
	rest := payload[n:]
	if len(rest) > maxTextLen {
		return m, Errorf(EInvalid, "payload longer than %d bytes", maxTextLen)
	}
	if !utf8.Valid(rest) {
		return m, Errorf(EInvalid, "payload is not UTF-8 text")
	}
	m.Args = strings.Fields(string(rest))
	return m, nil
}

// replyTopic is where a sender hears back from the server.
func replyTopic(p Principal) string {
	if p.Kind == PrincipalDevice || p.Kind == PrincipalPair {
		return DeviceTopic(p.ID)
	}
	return AppTopic(p.ID)
}

// mayReach reports whether an action triggered by sender may publish to
// topic: the sender's own topic, or the scripts/ tree.
func mayReach(sender Principal, topic string) bool {
	if strings.ContainsAny(topic, "+#\x00") {
		return false
	}
	return topic == replyTopic(sender) || strings.HasPrefix(topic, "scripts/") && len(topic) > len("scripts/")
}

// sendReply applies the reply rule: the first word is the topic.
func (s *Service) sendReply(sender Principal, reply string) error {
	topic, payload, _ := strings.Cut(reply, " ")
	if !mayReach(sender, topic) {
		return Errorf(EForbidden, "action may not publish to %q", topic)
	}
	return s.publish(topic, payload, 0)
}

func (s *Service) publish(topic, payload string, ttl time.Duration) error {
	if s.pub == nil {
		return Errorf(EUnavailable, "broker not connected")
	}
	return s.pub.Publish(topic, []byte(payload), ttl)
}

// handShake: `hand_shake <kind> [firmware] [name…]` from a device.
func (s *Service) handShake(m Message) (string, error) {
	if m.Sender.Kind == PrincipalPair {
		return s.pairDevice(m)
	}
	if m.Sender.Kind != PrincipalDevice {
		return "", Errorf(EForbidden, "hand_shake is for devices")
	}
	var d Device
	now := s.now()
	err := s.update(func(tx Tx) (err error) {
		if d, err = tx.Device(m.Sender.ID); err != nil {
			return err
		}
		args := m.Args
		if len(args) == 0 && m.Word == "add_device" {
			args = []string{d.Kind}
		}
		if len(args) == 0 {
			return Errorf(EInvalid, "usage: hand_shake <kind> [firmware] [name…]")
		}
		if args[0] != d.Kind {
			return Errorf(EInvalid, "device %q is a %s, not a %q", d.ID, d.Kind, clip(args[0]))
		}
		if len(args) > 1 {
			if d.Firmware, err = firmware(args[1]); err != nil {
				return err
			}
		}
		if len(args) > 2 {
			name := strings.Join(args[2:], " ")
			if err := validName(name); err != nil {
				return err
			}
			d.Name = name
		}
		d.LastSeen = now
		if err := tx.PutDevice(d); err != nil {
			return err
		}
		return tx.AppendEvent(&Event{Time: now, Type: EventHandShake, Device: d.ID, Via: m.Via,
			Detail: strings.TrimSpace(d.Kind + " " + d.Firmware)})
	})
	if err != nil {
		return "", err
	}
	s.log.Info("hand shake", "device_id", d.ID, "kind", d.Kind, "firmware", d.Firmware)
	desired := d.Desired
	if desired == "" {
		desired = "none"
	}
	return fmt.Sprintf("%s welcome %d %s", DeviceTopic(d.ID), now.Unix(), desired), nil
}

// clip shortens text that came from a client to at most 64 bytes, on a
// character boundary, before it is stored or echoed.
func clip(s string) string {
	const n = 64
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

// firmware checks a firmware word: printable, at most 64 bytes.
func firmware(s string) (string, error) {
	if err := validName(s); err != nil || len(s) > 64 {
		return "", Errorf(EInvalid, "firmware must be printable text of at most 64 bytes")
	}
	return s, nil
}

// ack: `ack <cmd-id> <ok|failed> <state> [reason…]` from a device.
func (s *Service) ack(m Message) (string, error) {
	if m.Sender.Kind != PrincipalDevice {
		return "", Errorf(EForbidden, "ack is for devices")
	}
	if len(m.Args) < 3 {
		return "", Errorf(EInvalid, "usage: ack <cmd-id> <ok|failed> <state> [reason…]")
	}
	result := m.Args[1]
	if result != "ok" && result != "failed" {
		return "", Errorf(EInvalid, "ack result must be ok or failed")
	}
	return "", s.recordAck(m.Sender.ID, m.Args[0], result == "ok", m.Args[2], strings.Join(m.Args[3:], " "), m.Via)
}

// lockResponse reads the prototype's `lock_response <code> <dev> <app>` as
// an ack of the sender's oldest pending command: code 0 is done. The device
// and app words are ignored: the sender comes from the connection.
func (s *Service) lockResponse(m Message) (string, error) {
	if m.Sender.Kind != PrincipalDevice {
		return "", Errorf(EForbidden, "lock_response is for devices")
	}
	if len(m.Args) < 1 {
		return "", Errorf(EInvalid, "usage: lock_response <code> [device] [app]")
	}
	var oldest Command
	err := s.store.View(func(tx Tx) error {
		pending, err := tx.PendingCommands()
		for _, c := range pending {
			if c.Device == m.Sender.ID && (oldest.ID == "" || c.Created.Before(oldest.Created)) {
				oldest = c
			}
		}
		return err
	})
	if err != nil {
		return "", err
	}
	if oldest.ID == "" {
		return "", Errorf(EConflict, "no command is waiting for an answer")
	}
	if m.Args[0] != "0" && m.Args[0] != "1" {
		return "", Errorf(EInvalid, "lock_response code must be 0 (done) or 1 (failed)")
	}
	ok := m.Args[0] == "0"
	state := "unknown"
	if ok {
		var d Device
		if err := s.store.View(func(tx Tx) (err error) { d, err = tx.Device(m.Sender.ID); return err }); err != nil {
			return "", err
		}
		state, _ = verbState(d.Kind, oldest.Verb)
	}
	return "", s.recordAck(m.Sender.ID, oldest.ID, ok, state, "", m.Via)
}

// recordAck commits a device's answer to a command together with the
// device's new state, then wakes waiters and tells the device's people.
func (s *Service) recordAck(deviceID, cmdID string, ok bool, state, reason, via string) error {
	now := s.now()
	var c Command
	var finished bool
	err := s.update(func(tx Tx) (err error) {
		finished = false
		c, err = tx.Command(cmdID)
		if ErrorCode(err) == ENotFound || (err == nil && c.Device != deviceID) {
			return Errorf(ENotFound, "unknown command %q", cmdID)
		}
		if err != nil {
			return err
		}
		d, err := tx.Device(deviceID)
		if err != nil {
			return err
		}
		if !ValidState(d.Kind, state) {
			return Errorf(EInvalid, "%q is not a state of a %s", state, d.Kind)
		}
		if err := validName(reason); err != nil {
			return Errorf(EInvalid, "reason must be printable text of at most 128 bytes")
		}
		result := "ok"
		if !ok {
			result = "failed"
		}
		detail := strings.TrimSpace(c.Verb + " " + result + " " + state + " " + reason)
		if c.Status == StatusSent {
			finished = true
			c.Status, c.State, c.Reason = StatusDone, state, reason
			if !ok {
				c.Status = StatusFailed
			}
			if err := tx.PutCommand(c); err != nil {
				return err
			}
		} else {
			detail = "late ack, command " + c.Status + ": " + detail
		}
		d.State, d.LastSeen = state, now
		if err := tx.PutDevice(d); err != nil {
			return err
		}
		return tx.AppendEvent(&Event{Time: now, Type: EventAck, Device: deviceID, User: c.By, Via: via,
			Command: c.ID, Detail: detail})
	})
	if err != nil {
		return err
	}
	if finished {
		s.wake(c)
		s.metrics.CommandFinished(c.Verb, c.Status, now.Sub(c.Created))
		s.log.Info("command answered", "cmd_id", c.ID, "device_id", deviceID, "verb", c.Verb, "status", c.Status,
			"state", state, "round_trip", now.Sub(c.Created))
		code := "0"
		if c.Status != StatusDone {
			code = "1"
		}
		s.notifyDevice(deviceID, fmt.Sprintf("lock_response %s %s %s %s", c.ID, deviceID, code, state))
	} else {
		s.notifyDevice(deviceID, fmt.Sprintf("state %s %s", deviceID, state))
	}
	return nil
}

// stateReport: `state <state>` from a device, unsolicited.
func (s *Service) stateReport(m Message) (string, error) {
	if m.Sender.Kind != PrincipalDevice {
		return "", Errorf(EForbidden, "state is for devices")
	}
	if len(m.Args) != 1 {
		return "", Errorf(EInvalid, "usage: state <state>")
	}
	state, now := m.Args[0], s.now()
	err := s.update(func(tx Tx) error {
		d, err := tx.Device(m.Sender.ID)
		if err != nil {
			return err
		}
		if !ValidState(d.Kind, state) {
			return Errorf(EInvalid, "%q is not a state of a %s", state, d.Kind)
		}
		d.State, d.LastSeen = state, now
		if err := tx.PutDevice(d); err != nil {
			return err
		}
		return tx.AppendEvent(&Event{Time: now, Type: EventState, Device: d.ID, Via: m.Via, Detail: state})
	})
	if err != nil {
		return "", err
	}
	s.notifyDevice(m.Sender.ID, fmt.Sprintf("state %s %s", m.Sender.ID, state))
	return "", nil
}

// operate: `lock|unlock [device-id|all]`, `on|off <device-id>` from a
// person. Outcomes arrive later as lock_response on the person's topic.
// Words after the device id are ignored: the prototype's shipped app sends
// `lock <device-id> <app> <datetime>` (DESIGN §3), and who sent a command
// and when is known without them.
func (s *Service) operate(m Message) (string, error) {
	if m.Sender.Kind != PrincipalUser {
		return "", Errorf(EForbidden, "only people can send commands")
	}
	if len(m.Args) > 0 && m.Args[0] != "all" {
		_, err := s.SendCommand(m.Sender, m.Args[0], m.Word, m.Via)
		return "", err
	}
	if m.Word == "on" || m.Word == "off" {
		return "", Errorf(EInvalid, "usage: %s <device-id>", m.Word)
	}
	cmds, err := s.SendAll(m.Sender, m.Word, m.Via)
	if err != nil {
		return "", err
	}
	if len(cmds) == 0 {
		return "", Errorf(ENotFound, "no lock you may operate")
	}
	var offline []string
	for _, c := range cmds {
		if c.Status == StatusOffline {
			offline = append(offline, c.Device)
		}
	}
	if len(offline) > 0 {
		return AppTopic(m.Sender.ID) + " error offline: " + strings.Join(offline, " "), nil
	}
	return "", nil
}
