package broker

import (
	"net"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"gatehouse/actions"
)

// Limits bound what MQTT clients can make the broker spend (docs/security.md).
// Zero fields take the defaults below.
type Limits struct {
	// MaxConnections bounds logged-in connections. A login over it is
	// refused with "server busy", unless its client id already holds a
	// session: a device or person reconnecting is never the one refused.
	MaxConnections int
	// MaxPending and MaxPendingPerAddress bound connections that have not
	// logged in yet, in total and from one address; more are closed as soon
	// as they are accepted, before anything is read.
	MaxPending           int
	MaxPendingPerAddress int
	// ConnectRate and ConnectBurst bound how many new connections one
	// address may open per second; more are closed as soon as they are
	// accepted. The burst lets a site's devices behind one NAT reconnect
	// together after an outage.
	ConnectRate  float64
	ConnectBurst int
	// MaxSessionsPerUser bounds one person's live connections (a device has
	// one: its client id is its id).
	MaxSessionsPerUser int
	// MaxPersistentPerUser bounds the sessions one person keeps after their
	// connections end (MQTT 5 session expiry, or 3.1.1 without clean
	// session), each holding queued messages for up to 24 h.
	MaxPersistentPerUser int
	// MessageRate and MessageBurst are the token bucket of messages one
	// identity may publish per second; past it publishes are refused.
	MessageRate  float64
	MessageBurst int
}

// Default limits, for a building or a small fleet on one machine.
const (
	DefaultMaxConnections       = 10000
	DefaultMaxPending           = 1024
	DefaultMaxPendingPerAddress = 32
	DefaultConnectRate          = 20
	DefaultConnectBurst         = 200
	DefaultMaxSessionsPerUser   = 16
	DefaultMaxPersistentPerUser = 4
	// A lock reports a state change, acks commands and shakes hands: a
	// few messages a minute. Two a second, in bursts of 20, leaves room
	// for a camera's pictures and a person's app, and bounds what a
	// misbehaving device can make the store write.
	DefaultMessageRate  = 2
	DefaultMessageBurst = 20
	// MaxClientIDLength bounds client ids: device ids and person client ids
	// are short, and the id is kept for as long as its session.
	MaxClientIDLength = 64
	// ackRatio sizes the bucket of acks against the message rate.
	ackRatio = 10
)

func (l Limits) withDefaults() Limits {
	if l.MaxConnections <= 0 {
		l.MaxConnections = DefaultMaxConnections
	}
	if l.MaxPending <= 0 {
		l.MaxPending = DefaultMaxPending
	}
	if l.MaxPendingPerAddress <= 0 {
		l.MaxPendingPerAddress = DefaultMaxPendingPerAddress
	}
	if l.ConnectRate <= 0 {
		l.ConnectRate = DefaultConnectRate
	}
	if l.ConnectBurst <= 0 {
		l.ConnectBurst = DefaultConnectBurst
	}
	if l.MaxSessionsPerUser <= 0 {
		l.MaxSessionsPerUser = DefaultMaxSessionsPerUser
	}
	if l.MaxPersistentPerUser <= 0 {
		l.MaxPersistentPerUser = DefaultMaxPersistentPerUser
	}
	if l.MessageRate <= 0 {
		l.MessageRate = DefaultMessageRate
	}
	if l.MessageBurst <= 0 {
		l.MessageBurst = DefaultMessageBurst
	}
	return l
}

// gate counts the connections of every listener that have not logged in
// yet, per address and in total.
type gate struct {
	mu      sync.Mutex
	limits  Limits
	total   int
	perAddr map[string]int
	pending map[net.Conn]string // connection → its address, until it logs in or ends
	rates   map[string]*rate.Limiter
}

// maxRates bounds the per-address connection buckets kept; past it, full
// buckets (addresses quiet for a while) are forgotten.
const maxRates = 10_000

func newGate(l Limits) *gate {
	return &gate{limits: l, perAddr: map[string]int{}, pending: map[net.Conn]string{}, rates: map[string]*rate.Limiter{}}
}

// admit counts a new connection as pending, or reports false when its
// address or the broker has too many pending already.
func (g *gate) admit(conn net.Conn) bool {
	addr := actions.AddrKey(conn.RemoteAddr().String())
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.total >= g.limits.MaxPending || g.perAddr[addr] >= g.limits.MaxPendingPerAddress {
		return false
	}
	r := g.rates[addr]
	if r == nil {
		if len(g.rates) >= maxRates {
			for a, q := range g.rates {
				if q.Tokens() >= float64(g.limits.ConnectBurst) {
					delete(g.rates, a)
				}
			}
		}
		r = rate.NewLimiter(rate.Limit(g.limits.ConnectRate), g.limits.ConnectBurst)
		g.rates[addr] = r
	}
	if !r.Allow() {
		return false
	}
	g.total++
	g.perAddr[addr]++
	g.pending[conn] = addr
	return true
}

// release stops counting conn as pending: it logged in, or it ended.
func (g *gate) release(conn net.Conn) {
	if sc, ok := conn.(*screenedConn); ok {
		conn = sc.Conn
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	addr, ok := g.pending[conn]
	if !ok {
		return
	}
	delete(g.pending, conn)
	g.total--
	if g.perAddr[addr]--; g.perAddr[addr] <= 0 {
		delete(g.perAddr, addr)
	}
}

// identity is what the hook counts per logged-in identity: its live
// connections and the token bucket its messages share.
type identity struct {
	live int
	// rate is the bucket of the identity's messages; acks, the answers to
	// the commands the server sent, have their own, ackRatio times larger,
	// so that a device commanded often can answer every command.
	rate     *rate.Limiter // safe for concurrent use
	acks     *rate.Limiter
	refused  int // publishes over the rate since reported
	reported time.Time
}
