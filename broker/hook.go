package broker

import (
	"bytes"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"golang.org/x/time/rate"

	"gatehouse/actions"
)

// hook authenticates connections, enforces the topic rules of DESIGN §3 and
// dispatches "toserver" messages to the actions service.
type hook struct {
	mqtt.HookBase
	svc    *actions.Service
	log    *slog.Logger
	srv    *mqtt.Server
	gate   *gate
	limits Limits
	ids    sync.Map // *mqtt.Client → *conn

	// owners maps a client id to the identity whose session it is, for as
	// long as mochi keeps that session: another identity may not take it
	// over and inherit its subscriptions and queued messages. idents
	// counts the live connections of each identity ("kind:id") and holds
	// its message rate; authed is the number of live logged-in connections.
	mu     sync.Mutex
	owners map[string]*owner    // client id → its owner
	idents map[string]*identity // "kind:id" → its connections and rate
	kept   map[string]int       // "kind:id" → its sessions kept after their connection
	authed int

	// messagesIn counts the messages clients published (Broker.Stats).
	messagesIn atomic.Uint64
}

// conn is what the hook knows of one authenticated connection. Its fields
// other than p, who and ident are only touched on that connection's own
// goroutine.
type conn struct {
	p           actions.Principal
	who         string // "kind:id", a pairing device counted as the device
	ident       *identity
	established bool // presence was started for it
}

// owner is the identity holding a client id and how many of its
// connections are live. The entry goes when the last one ends with its
// session (clean session) or when mochi expires the kept session, never
// because one of several overlapping connections ended: under a takeover
// the old connection ends after the new one has logged in.
type owner struct {
	id         string // "kind:id"
	live       int
	persistent bool // its session outlives its connection
}

func (h *hook) ID() string { return "gatehouse" }

func (h *hook) Provides(b byte) bool {
	return bytes.Contains([]byte{
		mqtt.OnConnect,
		mqtt.OnConnectAuthenticate,
		mqtt.OnACLCheck,
		mqtt.OnSessionEstablished,
		mqtt.OnDisconnect,
		mqtt.OnClientExpired,
		mqtt.OnPublish,
		mqtt.OnSubscribe,
	}, []byte{b})
}

func (h *hook) principal(cl *mqtt.Client) (actions.Principal, bool) {
	v, ok := h.ids.Load(cl)
	if !ok {
		return actions.Principal{}, false
	}
	return v.(*conn).p, true
}

// claim records a live connection of who on client id and returns who's
// counters, or nil when another identity holds that id.
func (h *hook) claim(id, who string, persistent bool) *identity {
	h.mu.Lock()
	defer h.mu.Unlock()
	o := h.owners[id]
	if o == nil {
		if h.owners == nil {
			h.owners, h.idents, h.kept = map[string]*owner{}, map[string]*identity{}, map[string]int{}
		}
		o = &owner{id: who}
		h.owners[id] = o
	}
	if o.id != who {
		return nil
	}
	if o.persistent != persistent { // the new connection's session replaces the old one
		o.persistent = persistent
		h.countKept(who, persistent)
	}
	o.live++
	ident := h.idents[who]
	if ident == nil {
		ident = &identity{rate: rate.NewLimiter(rate.Limit(h.limits.MessageRate), h.limits.MessageBurst),
			acks: rate.NewLimiter(rate.Limit(h.limits.MessageRate*ackRatio), h.limits.MessageBurst*ackRatio)}
		h.idents[who] = ident
	}
	ident.live++
	h.authed++
	return ident
}

// release ends one live connection of who on client id; with sessionEnds,
// the id is free once no connection holds it.
func (h *hook) release(id, who string, sessionEnds bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.authed--
	if ident := h.idents[who]; ident != nil {
		if ident.live--; ident.live <= 0 {
			delete(h.idents, who)
		}
	}
	if o := h.owners[id]; o != nil {
		o.live--
		if o.live <= 0 && sessionEnds {
			h.drop(id, o)
		}
	}
}

// drop forgets owner o of client id; h.mu is held.
func (h *hook) drop(id string, o *owner) {
	delete(h.owners, id)
	if o.persistent {
		h.countKept(o.id, false)
	}
}

// countKept counts one more (or one fewer) kept session of who; h.mu is
// held.
func (h *hook) countKept(who string, more bool) {
	if more {
		h.kept[who]++
	} else if h.kept[who]--; h.kept[who] <= 0 {
		delete(h.kept, who)
	}
}

// OnConnect applies the connection limits that need no login, answering
// with a reason code: an over-long client id; a person at their session
// limit; the broker at its connection limit. A client id that already
// holds a session is never refused for the last two: a device or person
// reconnecting takes their own session over.
func (h *hook) OnConnect(cl *mqtt.Client, pk packets.Packet) error {
	code, why := packets.CodeSuccess, ""
	person := actions.PrincipalUser + ":" + string(pk.Connect.Username)
	h.mu.Lock()
	held := h.owners[cl.ID] != nil
	switch {
	case len(cl.ID) > MaxClientIDLength:
		code, why = packets.ErrClientIdentifierNotValid, "client id longer than 64 bytes"
	case held:
	case h.authed >= h.limits.MaxConnections:
		code, why = packets.ErrServerBusy, "connection limit reached"
	case h.idents[person] != nil && h.idents[person].live >= h.limits.MaxSessionsPerUser:
		code, why = packets.ErrQuotaExceeded, "too many sessions for this user"
	case persistent(cl, pk) && h.kept[person] >= h.limits.MaxPersistentPerUser:
		code, why = packets.ErrQuotaExceeded, "too many persistent sessions for this user"
	}
	h.mu.Unlock()
	if code == packets.CodeSuccess {
		return nil
	}
	if cl.Properties.ProtocolVersion < 5 && code != packets.ErrClientIdentifierNotValid {
		code = packets.ErrServerUnavailable // MQTT 3.1.1 has no busy or quota return code
	}
	h.svc.RefuseLogin(actions.ViaMQTT, string(pk.Connect.Username), cl.Net.Remote, why)
	_ = h.srv.SendConnack(cl, code, false, nil)
	return code
}

// forget frees client id when no connection holds it: its kept session
// has expired.
func (h *hook) forget(id string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if o := h.owners[id]; o != nil && o.live <= 0 {
		h.drop(id, o)
	}
}

// OnConnectAuthenticate admits devices (client id = username = device id,
// password = secret) and people (username = name, password = token).
// A will is refused: mochi publishes wills without OnPublish or the write
// ACL, so a will could reach a topic its client may not publish to.
func (h *hook) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	if pk.Connect.WillFlag {
		h.svc.RefuseLogin(actions.ViaMQTT, string(pk.Connect.Username), cl.Net.Remote, "will messages are not accepted")
		return false
	}
	p, err := h.svc.AuthenticateMQTT(cl.ID, string(pk.Connect.Username), pk.Connect.Password, cl.Net.Remote)
	if err != nil {
		return false
	}
	// A device pairing itself becomes that device: its session is the
	// device's own.
	kind := p.Kind
	if kind == actions.PrincipalPair {
		kind = actions.PrincipalDevice
	}
	who := kind + ":" + p.ID
	ident := h.claim(cl.ID, who, persistent(cl, pk))
	if ident == nil {
		h.svc.RefuseLogin(actions.ViaMQTT, p.ID, cl.Net.Remote, "client id in use by another identity")
		return false
	}
	h.ids.Store(cl, &conn{p: p, who: who, ident: ident})
	if h.gate != nil {
		h.gate.release(cl.Net.Conn) // logged in: no longer pending
	}
	return true
}

// OnClientExpired forgets whose a session was once mochi drops it (the
// patched mochi calls it only for a session nobody has taken over).
func (h *hook) OnClientExpired(cl *mqtt.Client) { h.forget(cl.ID) }

// OnSessionEstablished starts presence.
func (h *hook) OnSessionEstablished(cl *mqtt.Client, _ packets.Packet) {
	if v, ok := h.ids.Load(cl); ok {
		c := v.(*conn)
		c.established = true
		h.svc.Connected(c.p, cl.Net.Remote)
	}
}

// OnDisconnect ends presence for this connection; under a session takeover
// the new connection has already been counted, so the device stays online.
// The patched mochi calls it for every connection whose login was accepted,
// also one that failed before its session was established (a TCP reset
// right after CONNECT), so nothing of it is left behind.
func (h *hook) OnDisconnect(cl *mqtt.Client, _ error, expire bool) {
	v, ok := h.ids.LoadAndDelete(cl)
	if !ok {
		return
	}
	// A session kept after its connection (expire false) keeps its owner
	// until mochi expires it; OnClientExpired then releases it. The
	// connection itself is released either way.
	c := v.(*conn)
	h.release(cl.ID, c.who, expire)
	if c.established {
		h.svc.Disconnected(c.p, cl.Net.Remote)
	}
}

// OnACLCheck runs per subscription and per delivery, in memory only. Reads:
// a device (or a device pairing itself under the id it asked for) reads
// only todevice/<its id>, a person only toapp/<their name>,
// exactly (no wildcards), and nobody reads toserver. Writes are decided in
// OnPublish, so that a refused publish leaves a v3 connection open (mochi
// disconnects a v3 client whose QoS 1 publish fails this check).
func (h *hook) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	if cl.Net.Inline {
		return true
	}
	p, ok := h.principal(cl)
	if !ok {
		return false
	}
	if write {
		return true
	}
	if h.svc.Expired(p) {
		return false // the token this session logged in with has expired
	}
	switch p.Kind {
	case actions.PrincipalDevice, actions.PrincipalPair:
		return topic == actions.DeviceTopic(p.ID)
	case actions.PrincipalUser:
		return topic == actions.AppTopic(p.ID) || actions.HomeAssistantTopic(p.ID, topic)
	}
	return false
}

// OnSubscribe starts keeping a person's Home Assistant tree when they
// subscribe within their own discovery prefix (ha/<name>/…), before the
// subscription's retained messages are sent: the first time, so that it is
// there to be sent. The ACL check that follows decides the subscription
// itself.
func (h *hook) OnSubscribe(cl *mqtt.Client, pk packets.Packet) packets.Packet {
	p, ok := h.principal(cl)
	if !ok || p.Kind != actions.PrincipalUser || h.svc.Expired(p) {
		return pk
	}
	for _, sub := range pk.Filters {
		if actions.HomeAssistantTopic(p.ID, sub.Filter) {
			h.svc.WatchHomeAssistant(p)
			break
		}
	}
	return pk
}

// OnPublish consumes messages to toserver and refuses every other publish
// from a client: only the server writes to todevice/… and toapp/….
func (h *hook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if cl.Net.Inline {
		return pk, nil // the server's own publish: never dispatch again
	}
	h.messagesIn.Add(1)
	v, ok := h.ids.Load(cl)
	if !ok {
		return pk, refuse(cl, pk, packets.ErrNotAuthorized)
	}
	c := v.(*conn)
	p := c.p
	bucket := c.ident.rate
	if bytes.HasPrefix(pk.Payload, []byte("ack ")) {
		bucket = c.ident.acks
	}
	if !bucket.Allow() {
		h.overRate(c)
		return pk, overRate(cl, pk)
	}
	if h.svc.Expired(p) {
		h.log.Debug("publish refused: token expired", "client_id", cl.ID)
		return pk, refuse(cl, pk, packets.ErrNotAuthorized)
	}
	if pk.TopicName != actions.ServerTopic {
		h.log.Debug("publish refused", "client_id", cl.ID, "topic", pk.TopicName)
		return pk, refuse(cl, pk, packets.ErrNotAuthorized)
	}
	if pk.FixedHeader.Retain {
		h.log.Debug("retained publish refused", "client_id", cl.ID, "topic", pk.TopicName)
		return pk, refuse(cl, pk, packets.ErrRetainNotSupported)
	}
	payload := bytes.Clone(pk.Payload)
	if err := h.dispatch(p, payload); err != nil {
		h.log.Debug("dispatch", "client_id", cl.ID, "error", err)
		if actions.IsStorageFailure(err) {
			return pk, notStored(cl, pk, err)
		}
	}
	return pk, packets.CodeSuccessIgnore // consumed: acked, delivered to nobody
}

// dispatch runs the action of payload on a goroutine of its own and waits
// for it. The connection's goroutine, which mochi keeps for as long as the
// device is connected, then never runs the deep work of an action (store,
// JSON, scripts) and keeps a small stack: it is most of what an idle
// device costs.
func (h *hook) dispatch(p actions.Principal, payload []byte) error {
	done := make(chan error, 1)
	go func() { done <- h.svc.Dispatch(p, actions.ViaMQTT, payload) }()
	return <-done
}

// persistent reports whether the session cl asks for outlives its
// connection: MQTT 5 with a session expiry, or 3.1.1 without clean session.
func persistent(cl *mqtt.Client, pk packets.Packet) bool {
	if cl.Properties.ProtocolVersion == 5 {
		return pk.Properties.SessionExpiryInterval > 0
	}
	return !pk.Connect.Clean
}

// limitReportEvery: an identity publishing past its message rate is
// recorded (an event and a log line) at most this often.
const limitReportEvery = time.Minute

// overRate counts a publish refused for c's message rate and records it
// once per limitReportEvery for its identity.
func (h *hook) overRate(c *conn) {
	now := time.Now()
	h.mu.Lock()
	c.ident.refused++
	n, report := c.ident.refused, now.Sub(c.ident.reported) >= limitReportEvery
	if report {
		c.ident.reported, c.ident.refused = now, 0
	}
	h.mu.Unlock()
	if report {
		h.svc.LimitReached(c.p, actions.ViaMQTT, "message rate", n)
	}
}

// overRate answers a publish past its identity's message rate: an MQTT 5
// client gets 0x96 Message rate too high; a v3 client gets no PUBACK, so
// it keeps the message and sends it again when it reconnects instead of
// believing it taken; QoS 0 is dropped.
func overRate(cl *mqtt.Client, pk packets.Packet) error {
	if cl.Properties.ProtocolVersion == 5 && pk.FixedHeader.Qos == 1 {
		return packets.ErrMessageRateTooHigh
	}
	return packets.ErrRejectPacket
}

// notStored answers a publish whose action could not commit because the
// data file cannot be written: it must not look acknowledged (DESIGN §7).
// An MQTT 5 client gets a PUBACK with 0x97 Quota exceeded when the disk is
// full, 0x80 Unspecified error for another write failure, and knows that
// its message was not taken. Any other QoS 1 or 2 publish gets no PUBACK
// (PUBREC) at all, so the client still holds it and sends it again when it
// reconnects (MQTT-4.4.0-1); mochi answers nothing for ErrRejectPacket.
// The store logs the failure, once per interval.
func notStored(cl *mqtt.Client, pk packets.Packet, err error) error {
	if cl.Properties.ProtocolVersion == 5 && pk.FixedHeader.Qos == 1 {
		if actions.ErrorCode(err) == actions.EStorageFull {
			return packets.ErrQuotaExceeded
		}
		return packets.ErrUnspecifiedError
	}
	return packets.ErrRejectPacket
}

// refuse drops a publish. An MQTT 5 client gets the reason code in its
// PUBACK; a v3 client cannot be told, so its message is acked and dropped
// and the connection stays (DESIGN §11).
func refuse(cl *mqtt.Client, pk packets.Packet, code packets.Code) error {
	switch {
	case pk.FixedHeader.Qos == 0:
		return packets.ErrRejectPacket
	case cl.Properties.ProtocolVersion == 5 && pk.FixedHeader.Qos == 1:
		return code
	default:
		return packets.CodeSuccessIgnore
	}
}
