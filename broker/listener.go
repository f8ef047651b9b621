package broker

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/mochi-mqtt/server/v2/listeners"
)

// tcpListener is mochi's TCP listener made safe for the internet: it is
// bound before the server starts, a connection must send CONNECT within
// the connect timeout (mochi sets the keep-alive deadline after CONNECT), and
// Accept errors are logged and retried instead of ending the listener.
type tcpListener struct {
	id    string
	ln    net.Listener
	wait  time.Duration // for CONNECT
	gate  *gate         // connections not logged in yet
	log   *slog.Logger
	conns conns
}

var _ listeners.Listener = (*tcpListener)(nil)

func (l *tcpListener) ID() string                  { return l.id }
func (l *tcpListener) Address() string             { return l.ln.Addr().String() }
func (l *tcpListener) Protocol() string            { return l.id }
func (l *tcpListener) Init(log *slog.Logger) error { l.log = log; return nil }

func (l *tcpListener) Serve(establish listeners.EstablishFn) {
	backoff := 5 * time.Millisecond
	for {
		conn, err := l.ln.Accept()
		if err != nil {
			if l.conns.isClosed() || errors.Is(err, net.ErrClosed) {
				return
			}
			l.log.Warn("accept failed, retrying", "error", err, "retry_in", backoff)
			time.Sleep(backoff)
			backoff = min(2*backoff, time.Second)
			continue
		}
		backoff = 5 * time.Millisecond
		if !l.gate.admit(conn) {
			conn.Close() // too many connections not logged in yet: refused before any read
			continue
		}
		if !l.conns.add(conn) {
			l.gate.release(conn)
			conn.Close()
			return
		}
		_ = conn.SetDeadline(time.Now().Add(l.wait))
		go func() {
			defer l.conns.done(conn)
			defer l.gate.release(conn)
			defer conn.Close()
			c, err := screen(conn)
			if err == nil {
				err = establish(l.id, c)
			}
			if err != nil {
				l.log.Debug("connection ended", "remote", conn.RemoteAddr().String(), "error", err)
			}
		}()
	}
}

func (l *tcpListener) Close(closeClients listeners.CloseFn) {
	_ = l.ln.Close()
	l.conns.close(func() { closeClients(l.id) })
}

// conns tracks the connections of a listener, so that Close returns only
// once every one has left mochi: mochi counts clients with a WaitGroup that
// its Close waits on, and a connection still arriving then would race it.
type conns struct {
	mu     sync.Mutex
	wg     sync.WaitGroup
	closed bool
	live   map[net.Conn]struct{}
}

func (c *conns) add(conn net.Conn) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return false
	}
	if c.live == nil {
		c.live = map[net.Conn]struct{}{}
	}
	c.live[conn] = struct{}{}
	c.wg.Add(1)
	return true
}

func (c *conns) done(conn net.Conn) {
	c.mu.Lock()
	delete(c.live, conn)
	c.mu.Unlock()
	c.wg.Done()
}

func (c *conns) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

// close refuses new connections, lets closeClients end the sessions
// politely, closes what is left (connections that never sent CONNECT) and
// waits for all of them.
func (c *conns) close(closeClients func()) {
	c.mu.Lock()
	already := c.closed
	c.closed = true
	c.mu.Unlock()
	if !already {
		closeClients()
	}
	c.mu.Lock()
	for conn := range c.live {
		conn.Close()
	}
	c.mu.Unlock()
	c.wg.Wait()
}

// wsListener serves MQTT over WebSocket through an http.Handler mounted by
// the web server at /mqtt, so MQTT and HTTP share one port.
type wsListener struct {
	id        string
	wait      time.Duration // for CONNECT
	gate      *gate         // connections not logged in yet
	log       *slog.Logger
	establish atomic.Pointer[listeners.EstablishFn]
	conns     conns
	upgrader  websocket.Upgrader
}

var _ listeners.Listener = (*wsListener)(nil)

func (l *wsListener) ID() string       { return l.id }
func (l *wsListener) Address() string  { return "/mqtt" }
func (l *wsListener) Protocol() string { return "ws" }
func (l *wsListener) Init(log *slog.Logger) error {
	l.log = log
	l.upgrader = websocket.Upgrader{
		Subprotocols: []string{"mqtt"},
		// Browsers send no ambient credentials over MQTT: the CONNECT
		// packet carries them, so any origin may connect.
		CheckOrigin: func(*http.Request) bool { return true },
	}
	return nil
}

func (l *wsListener) Serve(establish listeners.EstablishFn) { l.establish.Store(&establish) }

func (l *wsListener) Close(closeClients listeners.CloseFn) {
	l.conns.close(func() { closeClients(l.id) })
}

// ServeHTTP upgrades the request and runs an MQTT connection over it until
// the client leaves.
func (l *wsListener) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	est := l.establish.Load()
	if est == nil || l.conns.isClosed() {
		http.Error(w, "mqtt over websocket is not available", http.StatusServiceUnavailable)
		return
	}
	c, err := l.upgrader.Upgrade(w, r, nil)
	if err != nil {
		return // the upgrader has answered
	}
	defer c.Close()
	// Only the frames of the CONNECT packet are read before the login.
	c.SetReadLimit(MaxPacketSize + 16)
	conn := &wsConn{Conn: c.NetConn(), c: c}
	if !l.gate.admit(conn) {
		return // too many connections not logged in yet
	}
	defer l.gate.release(conn)
	if !l.conns.add(conn) {
		return
	}
	defer l.conns.done(conn)
	_ = conn.SetDeadline(time.Now().Add(l.wait))
	sc, err := screen(conn)
	if err == nil {
		err = (*est)(l.id, sc)
	}
	if err != nil {
		l.log.Debug("connection ended", "remote", r.RemoteAddr, "error", err)
	}
}

// screen reads the fixed header of a connection's first packet and hands
// the connection on only if it announces a CONNECT of at most
// MaxConnectSize bytes; anything else is refused here, before mochi sets
// up a client for it. The connection handed on reads the header again.
func screen(conn net.Conn) (net.Conn, error) {
	head := make([]byte, 0, 5)
	var b [1]byte
	for len(head) < 5 {
		if _, err := io.ReadFull(conn, b[:]); err != nil {
			return nil, err
		}
		head = append(head, b[0])
		if len(head) == 1 {
			if b[0] != 0x10 { // CONNECT, no flags [MQTT-3.1.0-1]
				return nil, errors.New("first packet is not CONNECT")
			}
			continue
		}
		if b[0]&0x80 == 0 { // the last byte of the remaining length
			n, mult := 0, 1
			for _, d := range head[1:] {
				n += int(d&0x7f) * mult
				mult *= 128
			}
			if n > MaxConnectSize {
				return nil, fmt.Errorf("CONNECT of %d bytes, more than %d", n, MaxConnectSize)
			}
			return &screenedConn{Conn: conn, head: head}, nil
		}
	}
	return nil, errors.New("malformed remaining length")
}

// screenedConn is a connection whose first bytes were read by screen.
type screenedConn struct {
	net.Conn
	head []byte
}

func (c *screenedConn) Read(p []byte) (int, error) {
	if len(c.head) > 0 {
		n := copy(p, c.head)
		c.head = c.head[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// WebSocketHandler is the handler for MQTT over WebSocket.
func (b *Broker) WebSocketHandler() http.Handler { return b.ws }

// wsConn is a WebSocket connection as a net.Conn of binary messages.
type wsConn struct {
	net.Conn
	c *websocket.Conn
	r io.Reader // the message being read, nil between messages
}

func (ws *wsConn) Read(p []byte) (int, error) {
	for {
		if ws.r == nil {
			op, r, err := ws.c.NextReader()
			if err != nil {
				return 0, err
			}
			if op != websocket.BinaryMessage {
				return 0, errors.New("websocket: mqtt needs binary messages")
			}
			ws.r = r
		}
		n, err := ws.r.Read(p)
		if errors.Is(err, io.EOF) {
			ws.r = nil
			if n == 0 {
				continue
			}
			err = nil
		}
		return n, err
	}
}

func (ws *wsConn) Write(p []byte) (int, error) {
	if err := ws.c.WriteMessage(websocket.BinaryMessage, p); err != nil {
		return 0, err
	}
	return len(p), nil
}
