package main

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"
	"time"
)

// client is a minimal MQTT 3.1.1 client: one connection, no goroutine of
// its own, every call synchronous. Thousands of them must fit next to the
// servers on a 2-core machine without the load generator's own cost
// (paho runs several goroutines per client) swamping what is measured; the
// same client talks to every server, so the comparison stays fair.
type client struct {
	conn net.Conn
	r    *bufio.Reader
	pid  uint16
}

// Packet types (MQTT 3.1.1 §2.2.1).
const (
	pConnect  = 1
	pConnack  = 2
	pPublish  = 3
	pPuback   = 4
	pSubscrib = 8
	pSuback   = 9
)

// ipBindAddressNoPort is IP_BIND_ADDRESS_NO_PORT (linux/in.h): with a
// local address set, the port is chosen at connect time for the whole
// 4-tuple rather than reserved at bind, so many source addresses give many
// more ports.
const ipBindAddressNoPort = 24

// dialer returns a dialer from the loopback source address src ("" for
// the default).
func dialer(src string, timeout time.Duration) *net.Dialer {
	d := &net.Dialer{Timeout: timeout}
	if src != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(src)}
		d.Control = func(_, _ string, c syscall.RawConn) error {
			var serr error
			if err := c.Control(func(fd uintptr) {
				serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, ipBindAddressNoPort, 1)
			}); err != nil {
				return err
			}
			return serr
		}
	}
	return d
}

// connect dials addr and logs in with a clean session; every step must end
// before timeout.
func connect(d *net.Dialer, addr, id, user, pass string, timeout time.Duration) (*client, error) {
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("dial: %w", err)
	}
	c := &client{conn: conn, r: bufio.NewReaderSize(conn, 512)}
	conn.SetDeadline(time.Now().Add(timeout))
	var b []byte
	b = appendString(b, "MQTT")
	flags := byte(0x02) // clean session
	if user != "" {
		flags |= 0x80
	}
	if pass != "" {
		flags |= 0x40
	}
	b = append(b, 4, flags, 0x01, 0x2c) // level 4 (3.1.1), keep alive 300 s
	b = appendString(b, id)
	if user != "" {
		b = appendString(b, user)
	}
	if pass != "" {
		b = appendString(b, pass)
	}
	if err := c.write(pConnect<<4, b); err != nil {
		conn.Close()
		return nil, fmt.Errorf("send connect: %w", err)
	}
	typ, body, err := c.read()
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("read connack: %w", err)
	}
	if typ>>4 != pConnack || len(body) != 2 {
		conn.Close()
		return nil, fmt.Errorf("connack: got packet type %d", typ>>4)
	}
	if body[1] != 0 {
		conn.Close()
		return nil, fmt.Errorf("connack: refused with code %d", body[1])
	}
	return c, nil
}

// subscribe subscribes to topic at QoS 1 and waits for the SUBACK.
func (c *client) subscribe(topic string, timeout time.Duration) error {
	c.conn.SetDeadline(time.Now().Add(timeout))
	c.pid++
	b := binary.BigEndian.AppendUint16(nil, c.pid)
	b = appendString(b, topic)
	b = append(b, 1)
	if err := c.write(pSubscrib<<4|0x02, b); err != nil {
		return fmt.Errorf("send subscribe: %w", err)
	}
	var code = -1
	err := c.until(func(typ byte, pid uint16, body []byte) bool {
		if typ>>4 == pSuback && pid == c.pid && len(body) == 3 {
			code = int(body[2])
			return true
		}
		return false
	}, nil)
	if err != nil {
		return fmt.Errorf("read suback: %w", err)
	}
	if code == 0x80 {
		return errors.New("subscribe refused")
	}
	return nil
}

// exchange publishes payload to topic at QoS 1 and waits for its PUBACK
// and, when want is not "", for a message whose payload starts with want.
func (c *client) exchange(topic, payload, want string, timeout time.Duration) error {
	c.conn.SetDeadline(time.Now().Add(timeout))
	c.pid++
	if c.pid == 0 {
		c.pid = 1
	}
	b := appendString(nil, topic)
	b = binary.BigEndian.AppendUint16(b, c.pid)
	b = append(b, payload...)
	if err := c.write(pPublish<<4|0x02, b); err != nil {
		return fmt.Errorf("send publish: %w", err)
	}
	acked, got := false, want == ""
	err := c.until(func(typ byte, pid uint16, _ []byte) bool {
		if typ>>4 == pPuback && pid == c.pid {
			acked = true
		}
		return acked && got
	}, func(p string) bool {
		if !got && strings.HasPrefix(p, want) {
			got = true
		}
		return acked && got
	})
	if err != nil {
		if !acked {
			return fmt.Errorf("wait for puback: %w", err)
		}
		return fmt.Errorf("wait for %q: %w", want, err)
	}
	return nil
}

// until reads packets until done says so; incoming messages are
// acknowledged (QoS 1) and handed to msg, which may also end the wait.
func (c *client) until(done func(typ byte, pid uint16, body []byte) bool, msg func(payload string) bool) error {
	for {
		typ, body, err := c.read()
		if err != nil {
			return err
		}
		if typ>>4 == pPublish {
			qos := (typ >> 1) & 3
			if len(body) < 2 {
				return errors.New("short publish")
			}
			n := int(binary.BigEndian.Uint16(body))
			if len(body) < 2+n {
				return errors.New("short publish")
			}
			rest := body[2+n:]
			if qos > 0 {
				if len(rest) < 2 {
					return errors.New("short publish")
				}
				if err := c.write(pPuback<<4, rest[:2]); err != nil {
					return err
				}
				rest = rest[2:]
			}
			if msg != nil && msg(string(rest)) {
				return nil
			}
			continue
		}
		var pid uint16
		if len(body) >= 2 {
			pid = binary.BigEndian.Uint16(body)
		}
		if done(typ, pid, body) {
			return nil
		}
	}
}

// idle drops the read buffer and any deadline: the connection stays open
// and nothing reads it.
func (c *client) idle() {
	c.conn.SetDeadline(time.Time{})
	c.r = nil
}

func (c *client) close() { c.conn.Close() }

func (c *client) write(header byte, body []byte) error {
	b := make([]byte, 0, len(body)+5)
	b = append(b, header)
	for n := len(body); ; {
		d := byte(n % 128)
		n /= 128
		if n > 0 {
			d |= 0x80
		}
		b = append(b, d)
		if n == 0 {
			break
		}
	}
	_, err := c.conn.Write(append(b, body...))
	return err
}

func (c *client) read() (byte, []byte, error) {
	typ, err := c.r.ReadByte()
	if err != nil {
		return 0, nil, err
	}
	n, mul := 0, 1
	for i := 0; ; i++ {
		d, err := c.r.ReadByte()
		if err != nil {
			return 0, nil, err
		}
		n += int(d&0x7f) * mul
		if d&0x80 == 0 {
			break
		}
		if mul *= 128; i == 3 {
			return 0, nil, errors.New("bad remaining length")
		}
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(c.r, body); err != nil {
		return 0, nil, err
	}
	return typ, body, nil
}

func appendString(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(s)))
	return append(b, s...)
}
