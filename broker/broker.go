// Package broker runs the embedded MQTT broker (mochi-mqtt): its
// listeners, authentication and ACL, and the hook that hands every message on
// "toserver" to the actions service.
package broker

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"gatehouse/actions"
)

// Limits chosen for ESP32-class devices on a home or building network.
const (
	// MaxPacketSize fits a 256 KiB picture plus its header words.
	MaxPacketSize = 256*1024 + 1024
	// DefaultConnectTimeout is how long a new connection may take to send
	// CONNECT.
	DefaultConnectTimeout = 10 * time.Second
	// maxWritesPending bounds the messages queued to one slow client.
	maxWritesPending = 128
	// clientReadBuffer is each connection's read buffer (mochi's default
	// is 2 KiB): a device's messages are a few dozen bytes, and a larger
	// packet is read into its own buffer whatever this size.
	clientReadBuffer = 1024
	// maxInflight bounds the QoS 1 messages kept for one client.
	maxInflight = 64
	// maxSessionExpiry bounds how long a disconnected session is kept.
	maxSessionExpiry = 24 * 60 * 60
	// MaxConnectSize bounds the CONNECT packet, the only one read before a
	// login is accepted: ids, a user name, a token and a few properties.
	MaxConnectSize = 4096
)

// Options configures a Broker.
type Options struct {
	// Addr is the TCP listen address, like ":1883".
	Addr   string
	Logger *slog.Logger
	// Listener and TLSListener, when set, are already bound for Addr and
	// TLSAddr (plain TCP; the broker adds TLS): main binds every port
	// before it creates anything, so a busy port leaves nothing behind.
	Listener, TLSListener net.Listener
	// ConnectTimeout closes connections that send no CONNECT in time
	// (default DefaultConnectTimeout).
	ConnectTimeout time.Duration
	// TLS, when set, adds a listener on TLSAddr that speaks MQTT over TLS.
	TLS     *tls.Config
	TLSAddr string
	// MessageTTL is the expiry of the server's messages published without
	// one of their own (replies, notifications); default
	// actions.DefaultCommandTTL. No server message waits for a client for
	// longer.
	MessageTTL time.Duration
	// Limits bound connections and messages; zero fields are defaults.
	Limits Limits
}

// Broker is the MQTT side of Gatehouse. It implements actions.Publisher.
type Broker struct {
	srv    *mqtt.Server
	inline *mqtt.Client
	hook   *hook
	gate   *gate
	tcp    *tcpListener
	tls    *tcpListener
	ws     *wsListener
	opts   Options
	addr   string
	wait   time.Duration // connect timeout
	log    *slog.Logger

	// retainMu orders the server's retained publishes and their refresh
	// (keepRetained).
	retainMu  sync.Mutex
	stopKeep  chan struct{}
	keepEnded chan struct{}
}

var (
	_ actions.Publisher         = (*Broker)(nil)
	_ actions.RetainedPublisher = (*Broker)(nil)
)

// New builds a broker for svc; it does no I/O until Listen.
func New(svc *actions.Service, opts Options) (*Broker, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.ConnectTimeout <= 0 {
		opts.ConnectTimeout = DefaultConnectTimeout
	}
	if opts.MessageTTL <= 0 {
		opts.MessageTTL = actions.DefaultCommandTTL
	}
	caps := mqtt.NewDefaultServerCapabilities()
	caps.MaximumPacketSize = MaxPacketSize
	caps.MaximumConnectPacketSize = MaxConnectSize
	opts.Limits = opts.Limits.withDefaults()
	// mochi's own cap, above ours: the hook refuses logins past
	// MaxConnections with a reason code, except reconnects.
	caps.MaximumClients = int64(opts.Limits.MaxConnections) + int64(opts.Limits.MaxPending)
	caps.MaximumClientWritesPending = maxWritesPending
	caps.MaximumInflight = maxInflight
	caps.ReceiveMaximum = maxInflight
	caps.MaximumSessionExpiryInterval = maxSessionExpiry
	// Also the bound for QoS 1 messages queued to v3 clients: no command
	// lives longer than the longest time to live.
	caps.MaximumMessageExpiryInterval = int64(actions.MaxCommandTTL / time.Second)
	caps.Compatibilities.ObscureNotAuthorized = false

	srv := mqtt.New(&mqtt.Options{
		Capabilities:            caps,
		ClientNetReadBufferSize: clientReadBuffer,
		Logger:                  opts.Logger.With("subsystem", "mochi"),
		SysTopicResendInterval:  60,
	})
	b := &Broker{
		srv:  srv,
		addr: opts.Addr,
		wait: opts.ConnectTimeout,
		opts: opts,
		log:  opts.Logger,
		gate: newGate(opts.Limits),
	}
	b.hook = &hook{svc: svc, log: opts.Logger, srv: srv, gate: b.gate, limits: opts.Limits}
	b.inline = srv.NewClient(nil, mqtt.LocalListener, mqtt.InlineClientId, true)
	// The server's messages are stamped with its client's protocol
	// version, and mochi honours a message expiry for queued messages only
	// on version 5 packets: without this, a command queued for a device that
	// dropped off would still be delivered after its not-after time.
	b.inline.Properties.ProtocolVersion = 5
	if err := srv.AddHook(b.hook, nil); err != nil {
		return nil, fmt.Errorf("add hook: %w", err)
	}
	return b, nil
}

// Listen binds the TCP listener, so that a busy port fails at start-up.
func (b *Broker) Listen() error {
	ln, err := b.opts.Listener, error(nil)
	if ln == nil {
		if ln, err = net.Listen("tcp", b.addr); err != nil {
			return fmt.Errorf("mqtt listen on %s: %w", b.addr, err)
		}
	}
	b.tcp = &tcpListener{id: "tcp", ln: ln, wait: b.wait, gate: b.gate}
	b.ws = &wsListener{id: "ws", wait: b.wait, gate: b.gate}
	if err := b.srv.AddListener(b.tcp); err != nil {
		ln.Close()
		return err
	}
	if b.opts.TLS != nil {
		tln := b.opts.TLSListener
		if tln == nil {
			if tln, err = net.Listen("tcp", b.opts.TLSAddr); err != nil {
				return fmt.Errorf("mqtts listen on %s: %w", b.opts.TLSAddr, err)
			}
		}
		b.tls = &tcpListener{id: "tls", ln: tls.NewListener(tln, b.opts.TLS), wait: b.wait, gate: b.gate}
		if err := b.srv.AddListener(b.tls); err != nil {
			tln.Close()
			return err
		}
	}
	return b.srv.AddListener(b.ws)
}

// TLSAddr is the bound MQTT-over-TLS address, "" without TLS.
func (b *Broker) TLSAddr() string {
	if b.tls == nil {
		return ""
	}
	return b.tls.ln.Addr().String()
}

// Sessions is the number of MQTT sessions the broker holds, live or kept
// for a disconnected client.
func (b *Broker) Sessions() int { return b.srv.Clients.Len() }

// Addr is the bound TCP address.
func (b *Broker) Addr() string { return b.tcp.ln.Addr().String() }

// Serve starts accepting connections; it returns at once.
func (b *Broker) Serve() error {
	if err := b.srv.Serve(); err != nil {
		return err
	}
	b.stopKeep, b.keepEnded = make(chan struct{}), make(chan struct{})
	go b.keepRetained(retainRefresh)
	return nil
}

// Close disconnects every client and stops the listeners, waiting at most
// timeout for client goroutines to end.
func (b *Broker) Close(timeout time.Duration) error {
	if b.stopKeep != nil {
		close(b.stopKeep)
		<-b.keepEnded
		b.stopKeep = nil
	}
	done := make(chan struct{})
	go func() {
		b.srv.Close()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-time.After(timeout):
		return errors.New("broker: clients still connected after shutdown deadline")
	}
}

// Publish sends payload to topic from the server itself at QoS 1, never
// retained. Every message expires: after ttl, or Options.MessageTTL when
// ttl <= 0. A message not yet written to its client by then, whether queued
// behind a slow connection or parked behind a full MQTT 5 Receive Maximum
// window, is dropped (third_party/mochi-mqtt-server, PATCHES.md); its
// expiry is also sent as the MQTT 5 message expiry interval.
func (b *Broker) Publish(topic string, payload []byte, ttl time.Duration) error {
	if ttl <= 0 {
		ttl = b.opts.MessageTTL
	}
	// A device's commands are refused, with a reason, rather than handed
	// to mochi to be dropped when its queue or in-flight window is full.
	if id, ok := strings.CutPrefix(topic, actions.DeviceTopic("")); ok {
		if cl, ok := b.srv.Clients.Get(id); ok && !cl.Closed() && cl.Busy() {
			return actions.Errorf(actions.EBusy, "device %q is busy: too many messages waiting for it", id)
		}
	}
	pk := packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1},
		TopicName:   topic,
		Payload:     payload,
		PacketID:    1, // never processed for the inline client, but must be valid
		// The exact last second: a command's not-after, which the device
		// reads from the payload, is this same second.
		Expiry: time.Now().Add(ttl).Unix(),
	}
	pk.Properties.MessageExpiryInterval = uint32((ttl + time.Second - 1) / time.Second)
	return b.srv.InjectPacket(b.inline, pk)
}

// Subscribed reports whether any client subscribes to topic, so that the
// service skips notifications nobody would receive.
func (b *Broker) Subscribed(topic string) bool {
	subs := b.srv.Topics.Subscribers(topic)
	return len(subs.Subscriptions) > 0 || len(subs.Shared) > 0
}

// Disconnect ends every live connection authenticated as p's kind and id,
// and, when p.Token is set, only those that used that token.
func (b *Broker) Disconnect(p actions.Principal) {
	for _, cl := range b.srv.Clients.GetAll() {
		got, ok := b.hook.principal(cl)
		if ok && got.Kind == p.Kind && got.ID == p.ID && (p.Token == "" || got.Token == p.Token) {
			_ = b.srv.DisconnectClient(cl, packets.ErrNotAuthorized)
		}
	}
}

// retainedTree is the one tree where the server keeps retained messages:
// Home Assistant's discovery, state and availability (DESIGN §3).
const retainedTree = "ha/"

// retainRefresh is how often the server's retained messages are stamped
// afresh: mochi drops a retained message MaximumMessageExpiryInterval
// (5 min) after it was made, which is right for anybody's messages but the
// server's own kept state.
const retainRefresh = time.Minute

// PublishRetained sends payload to topic from the server itself, retained,
// at QoS 1: subscribers get it now, later subscribers when they subscribe.
// It is kept until replaced or cleared (ClearRetained), however long.
func (b *Broker) PublishRetained(topic string, payload []byte) error {
	if len(payload) == 0 {
		return b.ClearRetained(topic)
	}
	b.retainMu.Lock()
	defer b.retainMu.Unlock()
	if err := b.srv.InjectPacket(b.inline, retainedPacket(topic, payload)); err != nil {
		return err
	}
	b.srv.Topics.RetainMessage(keptPacket(topic, payload))
	return nil
}

// ClearRetained removes the retained message of topic; subscribers get an
// empty message, which Home Assistant reads as "this entity is gone".
func (b *Broker) ClearRetained(topic string) error {
	b.retainMu.Lock()
	defer b.retainMu.Unlock()
	return b.srv.InjectPacket(b.inline, retainedPacket(topic, nil))
}

func retainedPacket(topic string, payload []byte) packets.Packet {
	return packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1, Retain: true},
		TopicName:   topic,
		Payload:     payload,
		PacketID:    1, // never processed for the inline client, but must be valid
	}
}

// keptPacket is the retained copy mochi keeps: made now, no expiry.
func keptPacket(topic string, payload []byte) packets.Packet {
	pk := retainedPacket(topic, payload)
	pk.ProtocolVersion = 5
	pk.Origin = mqtt.InlineClientId
	pk.Created = time.Now().Unix()
	return pk
}

// keepRetained stamps the server's retained messages afresh every
// interval until Close, so that mochi's expiry sweep leaves them.
func (b *Broker) keepRetained(interval time.Duration) {
	defer close(b.keepEnded)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-b.stopKeep:
			return
		case <-t.C:
			b.refreshRetained()
		}
	}
}

func (b *Broker) refreshRetained() {
	b.retainMu.Lock()
	defer b.retainMu.Unlock()
	for topic, pk := range b.srv.Topics.Retained.GetAll() {
		if strings.HasPrefix(topic, retainedTree) && len(pk.Payload) > 0 {
			b.srv.Topics.RetainMessage(keptPacket(topic, pk.Payload))
		}
	}
}

// Stats is what the broker counts, for monitoring.
type Stats struct {
	// Connections is the number of live logged-in connections.
	Connections int
	// MessagesIn counts the messages clients published (refused ones
	// included); MessagesOut the messages written to clients.
	MessagesIn, MessagesOut uint64
}

// Stats returns the broker's counters now.
func (b *Broker) Stats() Stats {
	b.hook.mu.Lock()
	n := b.hook.authed
	b.hook.mu.Unlock()
	return Stats{Connections: n, MessagesIn: b.hook.messagesIn.Load(),
		MessagesOut: uint64(atomic.LoadInt64(&b.srv.Info.MessagesSent))}
}
