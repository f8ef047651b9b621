package web

import (
	"net"
	"sync"

	"gatehouse/actions"
)

// Connection limits of the HTTP listener (docs/security.md).
const (
	DefaultMaxConnections        = 2048
	DefaultMaxConnectionsPerAddr = 64
)

// LimitListener bounds the open connections ln hands out, in total and per
// client address; a connection over either bound is closed as soon as it
// is accepted, before anything is read from it. Zero limits are defaults.
func LimitListener(ln net.Listener, total, perAddr int) net.Listener {
	if total <= 0 {
		total = DefaultMaxConnections
	}
	if perAddr <= 0 {
		perAddr = DefaultMaxConnectionsPerAddr
	}
	return &limitListener{Listener: ln, total: total, perAddr: perAddr, byAddr: map[string]int{}}
}

type limitListener struct {
	net.Listener
	total, perAddr int

	mu     sync.Mutex
	open   int
	byAddr map[string]int
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		addr := actions.AddrKey(c.RemoteAddr().String())
		l.mu.Lock()
		ok := l.open < l.total && l.byAddr[addr] < l.perAddr
		if ok {
			l.open++
			l.byAddr[addr]++
		}
		l.mu.Unlock()
		if !ok {
			c.Close()
			continue
		}
		return &limitConn{Conn: c, l: l, addr: addr}, nil
	}
}

func (l *limitListener) done(addr string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.open--
	if l.byAddr[addr]--; l.byAddr[addr] <= 0 {
		delete(l.byAddr, addr)
	}
}

type limitConn struct {
	net.Conn
	l     *limitListener
	addr  string
	close sync.Once
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.close.Do(func() { c.l.done(c.addr) })
	return err
}
