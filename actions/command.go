package actions

import (
	"fmt"
	"time"
)

// Command statuses: sent → done | failed | expired.
const (
	StatusSent    = "sent"
	StatusDone    = "done"
	StatusFailed  = "failed"
	StatusExpired = "expired"
)

// Ways a command or event came in.
const (
	ViaREST   = "rest"
	ViaMQTT   = "mqtt"
	ViaScript = "script"
	ViaServer = "server"
)

// Command is one order sent to one device and what came of it.
type Command struct {
	ID     string `json:"id"`
	Device string `json:"device"`
	Verb   string `json:"verb"`
	Status string `json:"status"`
	State  string `json:"state"`
	Reason string `json:"reason"`
	By     string `json:"by"`
	Via    string `json:"via"`
	// Grant is the id of the grant that allowed the command, "" for an
	// admin or the device's owner.
	Grant    string    `json:"grant,omitempty"`
	Created  time.Time `json:"created"`
	NotAfter time.Time `json:"not_after"`
}

// StatusOffline marks, in a lock-all answer, a device that was offline so
// that no command was sent to it.
const StatusOffline = "offline"

// verbState returns the state a verb leads to on a device of kind, and
// whether the verb applies to that kind at all.
func verbState(kind, verb string) (string, bool) {
	st, ok := kindVerbs[kind][verb]
	return st, ok
}

// desiredAfter is the desired state a device is told in its welcome after
// a command: never "unlocked" (see Device.Desired).
func desiredAfter(verb string) string {
	switch verb {
	case "lock":
		return "locked"
	case "on", "off":
		return verb
	}
	return ""
}

// SendCommand sends verb to one device for p, through via. The command is
// committed before it is sent; its outcome comes later with the device's
// ack (see Wait).
func (s *Service) SendCommand(p Principal, deviceID, verb, via string) (Command, error) {
	var (
		d     Device
		grant string
	)
	err := s.store.View(func(tx Tx) error {
		var v viewer
		var err error
		if d, v, err = s.visibleDevice(tx, p, deviceID); err != nil {
			return err
		}
		grant, err = v.operates(d)
		return err
	})
	if err != nil {
		return Command{}, err
	}
	if _, ok := verbState(d.Kind, verb); !ok {
		return Command{}, Errorf(EInvalid, "a %s does not take %q", d.Kind, verb)
	}
	if !d.Online {
		return Command{}, Errorf(EConflict, "device %q is offline", d.ID)
	}
	cmds, err := s.send(p, []target{{d, grant}}, verb, via)
	if err != nil {
		return Command{}, err
	}
	return cmds[0], nil
}

// target is a device a command goes to, with the grant that allows it.
type target struct {
	Device
	grant string
}

func (s *Service) send(p Principal, targets []target, verb, via string) ([]Command, error) {
	if len(targets) == 0 {
		return nil, nil
	}
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return nil, Errorf(EUnavailable, "the server is shutting down")
	}
	now := s.now()
	cmds := make([]Command, len(targets))
	for i, d := range targets {
		cmds[i] = Command{ID: newID(), Device: d.ID, Verb: verb, Status: StatusSent, By: p.ID, Via: via,
			Grant: d.grant, Created: now, NotAfter: now.Add(s.ttl)}
	}
	// One transaction for all: locking fifty doors is one commit.
	err := s.update(func(tx Tx) error {
		for _, c := range cmds {
			cur, err := tx.Device(c.Device)
			if err != nil {
				return err
			}
			if desired := desiredAfter(verb); desired != "" || verb == "unlock" {
				cur.Desired = desired
				if err := tx.PutDevice(cur); err != nil {
					return err
				}
			}
			if err := tx.PutCommand(c); err != nil {
				return err
			}
			detail := verb + " sent"
			if c.Grant != "" {
				detail += " under grant " + c.Grant
			}
			if err := tx.AppendEvent(&Event{Time: now, Type: EventCommand, Device: c.Device, User: p.ID, Via: via,
				Command: c.ID, Detail: detail}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	for _, c := range cmds {
		if !s.closed {
			id := c.ID
			s.timers[id] = time.AfterFunc(s.ttl, func() { s.expire(id) })
		}
	}
	s.mu.Unlock()
	for i, c := range cmds {
		payload := fmt.Sprintf("%s %s %d", verb, c.ID, c.NotAfter.Unix())
		// The message expires with the command: never written to the
		// device at or after its not-after, even if it waits in the broker.
		ttl := max(c.NotAfter.Sub(s.now()), time.Millisecond)
		if err := s.publish(DeviceTopic(c.Device), payload, ttl); err != nil {
			s.log.Error("send command", "device_id", c.Device, "cmd_id", c.ID, "error", err)
			reason := "could not be sent"
			if ErrorCode(err) == EBusy {
				reason = ErrorMessage(err)
			}
			if cmds[i], err = s.finish(c.ID, StatusFailed, "", reason, "send failed"); err != nil {
				return nil, err
			}
			continue
		}
		s.log.Info("command sent", "device_id", c.Device, "cmd_id", c.ID, "verb", verb, "by", p.ID, "via", via)
	}
	return cmds, nil
}

// SendAll sends verb to every device of the verb's kind that p may operate.
// Offline devices get no command; they are listed with StatusOffline.
func (s *Service) SendAll(p Principal, verb, via string) ([]Command, error) {
	var targets []target
	err := s.store.View(func(tx Tx) error {
		v, err := s.viewer(tx, p)
		if err != nil {
			return err
		}
		all, err := tx.Devices()
		for _, d := range all {
			if _, ok := verbState(d.Kind, verb); ok {
				if grant, err := v.operates(d); err == nil {
					targets = append(targets, target{s.withPresence(d), grant})
				}
			}
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	if p.Kind != PrincipalUser {
		return nil, Errorf(EForbidden, "only people can send commands")
	}
	var online []target
	for _, d := range targets {
		if d.Online {
			online = append(online, d)
		}
	}
	sent, err := s.send(p, online, verb, via)
	if err != nil {
		return nil, err
	}
	out := make([]Command, 0, len(targets))
	for _, d := range targets {
		if d.Online {
			out, sent = append(out, sent[0]), sent[1:]
		} else {
			out = append(out, Command{Device: d.ID, Verb: verb, Status: StatusOffline})
		}
	}
	return out, nil
}

// Command returns a command on a device p may see.
func (s *Service) Command(p Principal, id string) (Command, error) {
	var c Command
	err := s.store.View(func(tx Tx) (err error) {
		c, err = tx.Command(id)
		if err == nil && !p.IsAdmin() { // admins also read the commands of deleted devices
			_, _, err = s.visibleDevice(tx, p, c.Device)
		}
		if ErrorCode(err) == ENotFound {
			return Errorf(ENotFound, "command %q not found", id)
		}
		return err
	})
	return c, err
}

// Wait returns command id once it is no longer sent, or as it is when done
// is closed first.
func (s *Service) Wait(done <-chan struct{}, id string) (Command, error) {
	ch := make(chan Command, 1)
	s.mu.Lock()
	s.waiters[id] = append(s.waiters[id], ch)
	s.mu.Unlock()
	defer s.unwait(id, ch)

	var c Command
	if err := s.store.View(func(tx Tx) (err error) { c, err = tx.Command(id); return err }); err != nil {
		return Command{}, err
	}
	if c.Status != StatusSent {
		return c, nil
	}
	select {
	case got, ok := <-ch:
		if ok {
			return got, nil
		}
	case <-done:
	}
	err := s.store.View(func(tx Tx) (err error) { c, err = tx.Command(id); return err })
	return c, err
}

func (s *Service) unwait(id string, ch chan<- Command) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ws := s.waiters[id]
	for i, w := range ws {
		if w == ch {
			s.waiters[id] = append(ws[:i], ws[i+1:]...)
			break
		}
	}
	if len(s.waiters[id]) == 0 {
		delete(s.waiters, id)
	}
}

// expire ends a command whose time to live has passed without an ack.
func (s *Service) expire(id string) {
	c, err := s.finish(id, StatusExpired, "", "no answer before not-after", "expired")
	if err != nil {
		if ErrorCode(err) != EConflict {
			s.log.Error("expire command", "cmd_id", id, "error", err)
		}
		return
	}
	s.log.Info("command expired", "cmd_id", id, "device_id", c.Device)
	state := "unknown"
	_ = s.store.View(func(tx Tx) error {
		if d, err := tx.Device(c.Device); err == nil {
			state = d.State
		}
		return nil
	})
	s.notifyDevice(c.Device, fmt.Sprintf("lock_response %s %s 1 %s", c.ID, c.Device, state))
}

// finish moves a sent command to status, commits it with its event, and
// wakes whoever waits for it. It returns EConflict when the command was
// no longer sent.
func (s *Service) finish(id, status, state, reason, detail string) (Command, error) {
	var c Command
	now := s.now()
	err := s.update(func(tx Tx) (err error) {
		if c, err = tx.Command(id); err != nil {
			return err
		}
		if c.Status != StatusSent {
			return Errorf(EConflict, "command %q is already %s", id, c.Status)
		}
		c.Status, c.State, c.Reason = status, state, reason
		if err := tx.PutCommand(c); err != nil {
			return err
		}
		typ := EventCommand
		if status == StatusDone || (status == StatusFailed && state != "") {
			typ = EventAck
		}
		return tx.AppendEvent(&Event{Time: now, Type: typ, Device: c.Device, User: c.By, Via: c.Via,
			Command: c.ID, Detail: c.Verb + " " + detail})
	})
	if err != nil {
		return Command{}, err
	}
	s.wake(c)
	s.metrics.CommandFinished(c.Verb, c.Status, 0)
	return c, nil
}

func (s *Service) wake(c Command) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if t := s.timers[c.ID]; t != nil {
		t.Stop()
		delete(s.timers, c.ID)
	}
	for _, w := range s.waiters[c.ID] {
		select {
		case w <- c:
		default:
		}
	}
}
