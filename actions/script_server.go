package actions

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"

	"go.starlark.net/starlark"
)

// record is a read-only Starlark value with named fields, like a struct:
// the msg a script gets, its sender, the server and the devices it reads.
type record struct {
	typ    string
	names  []string // sorted
	values []starlark.Value
}

var (
	_ starlark.HasAttrs = (*record)(nil)
)

func newRecord(typ string, names []string, values ...starlark.Value) *record {
	return &record{typ: typ, names: names, values: values}
}

func (r *record) String() string {
	var b strings.Builder
	b.WriteString(r.typ)
	b.WriteByte('(')
	for i, n := range r.names {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(n)
		b.WriteString(" = ")
		b.WriteString(r.values[i].String())
	}
	b.WriteByte(')')
	return b.String()
}

func (r *record) Type() string { return r.typ }

func (r *record) Freeze() {
	for _, v := range r.values {
		v.Freeze()
	}
}

func (r *record) Truth() starlark.Bool { return starlark.True }

func (r *record) Hash() (uint32, error) { return 0, fmt.Errorf("unhashable type: %s", r.typ) }

func (r *record) Attr(name string) (starlark.Value, error) {
	for i, n := range r.names {
		if n == name {
			return r.values[i], nil
		}
	}
	return nil, nil
}

// AttrNames returns a copy: dir() sorts what it gets in place, and the
// server record is shared by every run.
func (r *record) AttrNames() []string { return slices.Clone(r.names) }

// scriptMsg is the msg a script gets: the payload as text and as words
// (the action's name first), the topic and who sent it. Its fields are
// made when first read; a run reads it from one goroutine only.
type scriptMsg struct {
	m      Message
	words  starlark.Tuple
	sender *record
}

var _ starlark.HasAttrs = (*scriptMsg)(nil)

func scriptMessage(m Message) *scriptMsg { return &scriptMsg{m: m} }

func (*scriptMsg) Type() string          { return "msg" }
func (*scriptMsg) Freeze()               {} // read-only
func (*scriptMsg) Truth() starlark.Bool  { return starlark.True }
func (*scriptMsg) Hash() (uint32, error) { return 0, errors.New("unhashable type: msg") }
func (*scriptMsg) AttrNames() []string   { return []string{"payload", "sender", "topic", "words"} }
func (msg *scriptMsg) String() string    { return msg.record().String() }
func (msg *scriptMsg) record() *record   { return newRecord("msg", msg.AttrNames(), msg.values()...) }
func (msg *scriptMsg) values() []starlark.Value {
	v := make([]starlark.Value, 0, 4)
	for _, n := range msg.AttrNames() {
		x, _ := msg.Attr(n)
		v = append(v, x)
	}
	return v
}

func (msg *scriptMsg) Attr(name string) (starlark.Value, error) {
	switch name {
	case "payload":
		return starlark.String(msg.m.Payload), nil
	case "topic":
		return starlark.String(ServerTopic), nil
	case "words":
		if msg.words == nil {
			msg.words = make(starlark.Tuple, 0, 1+len(msg.m.Args))
			msg.words = append(msg.words, starlark.String(msg.m.Word))
			for _, a := range msg.m.Args {
				msg.words = append(msg.words, starlark.String(a))
			}
		}
		return msg.words, nil
	case "sender":
		if msg.sender == nil {
			p := msg.m.Sender
			msg.sender = newRecord("sender", []string{"id", "kind", "role"},
				starlark.String(p.ID), starlark.String(p.Kind), starlark.String(p.Role))
		}
		return msg.sender, nil
	}
	return nil, nil
}

// scriptServer is the server object of every run. Its functions act for
// the run's sender, with exactly the sender's rights; the run is found in
// the thread.
func (s *Service) scriptServer() *record {
	return newRecord("server", []string{"command", "device", "devices", "notify", "now", "publish"},
		starlark.NewBuiltin("command", s.scriptCommand),
		starlark.NewBuiltin("device", s.scriptDevice),
		starlark.NewBuiltin("devices", s.scriptDevices),
		starlark.NewBuiltin("notify", s.scriptNotify),
		starlark.NewBuiltin("now", s.scriptNow),
		starlark.NewBuiltin("publish", s.scriptPublish),
	)
}

// runOf returns the run a server function was called from.
// enter returns the thread's run, begun (its lock held): the caller must
// unlock rc.mu when done.
func enter(th *starlark.Thread) (*scriptRun, error) {
	rc, err := runOf(th)
	if err != nil {
		return nil, err
	}
	if err := rc.begin(); err != nil {
		return nil, err
	}
	return rc, nil
}

func runOf(th *starlark.Thread) (*scriptRun, error) {
	rc, _ := th.Local(runKey).(*scriptRun)
	if rc == nil || rc.sender.Kind == "" {
		return nil, errors.New("server is only available inside action()")
	}
	return rc, nil
}

// clientError is what a script sees of an error of the service: its
// client-safe message; internal errors are logged.
func (s *Service) clientError(fn string, err error) error {
	if ErrorCode(err) == EInternal {
		s.log.Error("script call failed", "function", fn, "error", err)
	}
	return fmt.Errorf("%s: %s", fn, ErrorMessage(err))
}

// now() → the server's time in unix seconds.
func (s *Service) scriptNow(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	if err := starlark.UnpackPositionalArgs(b.Name(), args, kwargs, 0); err != nil {
		return nil, err
	}
	return starlark.MakeInt64(s.now().Unix()), nil
}

// device(id) → device(id, kind, name, online, state), or None for a device
// the sender may not see.
func (s *Service) scriptDevice(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var id string
	if err := starlark.UnpackPositionalArgs(b.Name(), args, kwargs, 1, &id); err != nil {
		return nil, err
	}
	rc, err := runOf(th)
	if err != nil {
		return nil, err
	}
	if err := rc.begin(); err != nil {
		return nil, err
	}
	rc.mu.Unlock()
	d, err := s.Device(rc.sender, id)
	switch {
	case ErrorCode(err) == ENotFound:
		return starlark.None, nil
	case err != nil:
		return nil, s.clientError(b.Name(), err)
	}
	return newRecord("device", []string{"id", "kind", "name", "online", "state"},
		starlark.String(d.ID), starlark.String(d.Kind), starlark.String(d.Name), starlark.Bool(d.Online),
		starlark.String(d.State)), nil
}

// devices() → the ids of the devices the sender may see, in order.
func (s *Service) scriptDevices(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	if err := starlark.UnpackPositionalArgs(b.Name(), args, kwargs, 0); err != nil {
		return nil, err
	}
	rc, err := runOf(th)
	if err != nil {
		return nil, err
	}
	if err := rc.begin(); err != nil {
		return nil, err
	}
	rc.mu.Unlock()
	list, err := s.Devices(rc.sender)
	if err != nil {
		return nil, s.clientError(b.Name(), err)
	}
	ids := make([]starlark.Value, len(list))
	for i, d := range list {
		ids[i] = starlark.String(d.ID)
	}
	return starlark.NewList(ids), nil
}

// publish(topic, payload) sends payload to topic after the run, if the
// reply rule lets the sender's action reach it.
func (s *Service) scriptPublish(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var topic, payload string
	if err := starlark.UnpackPositionalArgs(b.Name(), args, kwargs, 2, &topic, &payload); err != nil {
		return nil, err
	}
	rc, err := enter(th)
	if err != nil {
		return nil, err
	}
	defer rc.mu.Unlock()
	switch {
	case len(topic) > 256 || !utf8.ValidString(topic) || !mayReach(rc.sender, topic):
		return nil, sandboxErrorf("publish: may not publish to %q", clipText(topic, 64))
	case len(payload) > maxScriptOutput:
		return nil, sandboxErrorf("publish: payload of %d bytes is over the limit of %d", len(payload), maxScriptOutput)
	case len(rc.out) >= maxScriptPublishes:
		return nil, sandboxErrorf("publish: more than %d messages in one run", maxScriptPublishes)
	}
	rc.out = append(rc.out, scriptOutput{topic: topic, text: payload})
	return starlark.None, nil
}

// notify(text) tells every person who may read the sender device, after
// the run, "script <name> <text>" on their toapp/ topic. Only a device's
// run may notify: its people are the only ones it can reach, and they
// learn which script spoke.
func (s *Service) scriptNotify(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var text string
	if err := starlark.UnpackPositionalArgs(b.Name(), args, kwargs, 1, &text); err != nil {
		return nil, err
	}
	rc, err := enter(th)
	if err != nil {
		return nil, err
	}
	defer rc.mu.Unlock()
	switch {
	case rc.sender.Kind != PrincipalDevice:
		return nil, sandboxErrorf("notify: only a script run by a device may notify")
	case len(text) > maxScriptOutput:
		return nil, sandboxErrorf("notify: text of %d bytes is over the limit of %d", len(text), maxScriptOutput)
	case len(rc.out) >= maxScriptPublishes:
		return nil, sandboxErrorf("notify: more than %d messages in one run", maxScriptPublishes)
	case text == "" || !utf8.ValidString(text) || strings.ContainsFunc(text, func(r rune) bool { return r < 0x20 || r == 0x7f }):
		return nil, fmt.Errorf("notify: text must be one line of printable text")
	}
	rc.out = append(rc.out, scriptOutput{text: text, notify: true})
	return starlark.None, nil
}

// command(device, verb) sends verb to device for the sender, through the
// normal command path (grants, windows, presence), recorded with via
// "script"; it returns the command id. The outcome comes later, as for any
// command.
func (s *Service) scriptCommand(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var device, verb string
	if err := starlark.UnpackPositionalArgs(b.Name(), args, kwargs, 2, &device, &verb); err != nil {
		return nil, err
	}
	// Held while the command is sent: once the run has ended, it sends
	// nothing more.
	rc, err := enter(th)
	if err != nil {
		return nil, err
	}
	defer rc.mu.Unlock()
	if rc.commands >= maxScriptCommands {
		return nil, sandboxErrorf("command: more than %d commands in one run", maxScriptCommands)
	}
	rc.commands++
	c, err := s.SendCommand(rc.sender, device, verb, ViaScript)
	if err != nil {
		return nil, s.clientError(b.Name(), err)
	}
	return starlark.String(c.ID), nil
}
