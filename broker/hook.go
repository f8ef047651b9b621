package broker

import (
	"bytes"
	"log/slog"
	"sync"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"gatehouse/actions"
)

// hook authenticates connections, enforces the topic rules of DESIGN §3 and
// dispatches "toserver" messages to the actions service.
type hook struct {
	mqtt.HookBase
	svc *actions.Service
	log *slog.Logger
	ids sync.Map // *mqtt.Client → actions.Principal
	// owners maps a client id to the identity whose session it is, for as
	// long as mochi keeps that session: another identity may not take it
	// over and inherit its subscriptions and queued messages.
	owners sync.Map // client id → "kind:id"
}

func (h *hook) ID() string { return "gatehouse" }

func (h *hook) Provides(b byte) bool {
	return bytes.Contains([]byte{
		mqtt.OnConnectAuthenticate,
		mqtt.OnACLCheck,
		mqtt.OnSessionEstablished,
		mqtt.OnDisconnect,
		mqtt.OnClientExpired,
		mqtt.OnPublish,
	}, []byte{b})
}

func (h *hook) principal(cl *mqtt.Client) (actions.Principal, bool) {
	v, ok := h.ids.Load(cl)
	if !ok {
		return actions.Principal{}, false
	}
	return v.(actions.Principal), true
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
	owner := kind + ":" + p.ID
	if prev, loaded := h.owners.LoadOrStore(cl.ID, owner); loaded && prev != owner {
		h.svc.RefuseLogin(actions.ViaMQTT, p.ID, cl.Net.Remote, "client id in use by another identity")
		return false
	}
	h.ids.Store(cl, p)
	return true
}

// OnClientExpired forgets whose a session was once mochi drops it.
func (h *hook) OnClientExpired(cl *mqtt.Client) { h.owners.Delete(cl.ID) }

// OnSessionEstablished starts presence.
func (h *hook) OnSessionEstablished(cl *mqtt.Client, _ packets.Packet) {
	if p, ok := h.principal(cl); ok {
		h.svc.Connected(p, cl.Net.Remote)
	}
}

// OnDisconnect ends presence for this connection; under a session takeover
// the new connection has already been counted, so the device stays online.
func (h *hook) OnDisconnect(cl *mqtt.Client, _ error, expire bool) {
	if expire && !cl.IsTakenOver() {
		h.owners.Delete(cl.ID) // the session ends with the connection
	}
	if v, ok := h.ids.LoadAndDelete(cl); ok {
		h.svc.Disconnected(v.(actions.Principal), cl.Net.Remote)
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
		return topic == actions.AppTopic(p.ID)
	}
	return false
}

// OnPublish consumes messages to toserver and refuses every other publish
// from a client: only the server writes to todevice/… and toapp/….
func (h *hook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if cl.Net.Inline {
		return pk, nil // the server's own publish: never dispatch again
	}
	p, ok := h.principal(cl)
	if !ok {
		return pk, refuse(cl, pk, packets.ErrNotAuthorized)
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
	if err := h.svc.Dispatch(p, actions.ViaMQTT, payload); err != nil {
		h.log.Debug("dispatch", "client_id", cl.ID, "error", err)
	}
	return pk, packets.CodeSuccessIgnore // consumed: acked, delivered to nobody
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
