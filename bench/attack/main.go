// Command attack leans on the real gatehouse binary the way a hostile
// client would, one attack at a time, and measures whether the doors are
// still served meanwhile: how long a correct device takes to connect, the
// REST lock round trip against its unloaded p99, and the server's RSS and
// open files during the attack and after it stops.
//
//	go run ./bench/attack                      # every attack, 10 s each
//	go run ./bench/attack -bin ./old-gatehouse # the same against another build
//
// Attacks (docs/security.md has the limits that answer them):
//   - http-idle: one client without credentials opens thousands of idle
//     HTTP connections;
//   - half-connect: connections that announce a 256 KiB CONNECT and send a
//     few bytes of it, over TCP and over WebSocket;
//   - streams: a guest with no grant opens 500 event streams while devices
//     report;
//   - flood: 50 devices publish reports as fast as they can.
//
// Loopback only; each attack stops by itself.
package main

import (
	"bufio"
	"encoding/base64"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"gatehouse/bench/harness"
)

func main() {
	bin := flag.String("bin", "", "gatehouse binary to attack (default: build this repository)")
	each := flag.Duration("duration", 10*time.Second, "how long each attack runs")
	only := flag.String("attack", "all", "http-idle, half-connect, streams, flood or all")
	flag.Parse()
	if err := run(*bin, *each, *only); err != nil {
		fmt.Fprintln(os.Stderr, "attack:", err)
		os.Exit(1)
	}
}

type attack struct {
	name string
	// start begins the attack and returns a function that stops it and
	// says what it achieved.
	start func(s *harness.Server, stop chan struct{}) func() string
}

func run(bin string, each time.Duration, only string) error {
	tmp, err := os.MkdirTemp("", "gatehouse-attack-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	if bin == "" {
		if bin, err = harness.Build(tmp); err != nil {
			return err
		}
	}
	attacks := []attack{{"http-idle", httpIdle}, {"half-connect", halfConnect}, {"streams", streams}, {"flood", flood}}
	fmt.Println("| attack | achieved | device connect max (ms) | lock RTT p50 / p99 (ms) | p99 vs unloaded | server CPU | RSS MiB before / during / after | fds before / during / after |")
	fmt.Println("| --- | --- | --- | --- | --- | --- | --- | --- |")
	for _, a := range attacks {
		if only != "all" && only != a.name {
			continue
		}
		if err := runOne(bin, tmp, a, each); err != nil {
			return fmt.Errorf("%s: %w", a.name, err)
		}
	}
	return nil
}

// runOne starts a fresh server, measures it unloaded, under the attack and
// after it.
func runOne(bin, tmp string, a attack, each time.Duration) error {
	dir, err := os.MkdirTemp(tmp, a.name)
	if err != nil {
		return err
	}
	s, err := harness.Start(bin, dir)
	if err != nil {
		return err
	}
	defer s.Stop()
	for i := 0; i < doors; i++ {
		id := fmt.Sprintf("door%d", i)
		secret, err := s.CreateDevice(id, "lock")
		if err != nil {
			return err
		}
		door, err := s.Device("127.0.0.1", id, secret, "lock", true)
		if err != nil {
			return err
		}
		defer door.Disconnect(0)
	}
	probeSecret, err := s.CreateDevice("probe", "lock")
	if err != nil {
		return err
	}
	pid := s.Cmd.Process.Pid

	base := measure(s, probeSecret, 5*time.Second)
	rssBefore, fdsBefore := harness.RSS(pid), harness.FDs(pid)

	stop := make(chan struct{})
	end := a.start(s, stop)
	time.Sleep(each / 3) // let it build up
	var peakRSS int64
	var peakFDs int
	sampling := make(chan struct{})
	go func() {
		defer close(sampling)
		for {
			peakRSS, peakFDs = max(peakRSS, harness.RSS(pid)), max(peakFDs, harness.FDs(pid))
			select {
			case <-stop:
				return
			case <-time.After(200 * time.Millisecond):
			}
		}
	}()
	cpu0, t0 := harness.CPU(pid), time.Now()
	under := measure(s, probeSecret, each*2/3)
	cpu := float64(harness.CPU(pid)-cpu0) / float64(time.Since(t0)) * 100
	close(stop)
	achieved := end()
	<-sampling
	time.Sleep(3 * time.Second) // connections close, memory is returned
	rssAfter, fdsAfter := harness.RSS(pid), harness.FDs(pid)

	ratio := "-"
	if base.p99 > 0 {
		ratio = fmt.Sprintf("%.1f×", float64(under.p99)/float64(base.p99))
	}
	fmt.Printf("| %s | %s | %s | %s | %s | %.0f %% | %.0f / %.0f / %.0f | %d / %d / %d |\n", a.name, achieved,
		under.connect, under.rtt(), ratio, cpu, mib(rssBefore), mib(peakRSS), mib(rssAfter), fdsBefore, peakFDs, fdsAfter)
	return nil
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

// probe is what a correct client saw over a while.
type probe struct {
	p50, p99 time.Duration
	connect  string // the slowest connect of a correct device, or why it failed
	failed   int
}

func (p probe) rtt() string {
	if p.failed > 0 {
		return fmt.Sprintf("%.1f / %.1f (%d failed)", ms(p.p50), ms(p.p99), p.failed)
	}
	return fmt.Sprintf("%.1f / %.1f", ms(p.p50), ms(p.p99))
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// doors is how many acking locks the probe commands in turn (50 locks a
// second in all, each within its message rate).
const doors = 5

// measure locks a door over REST every 20 ms and connects a correct device
// every second, for d.
func measure(s *harness.Server, probeSecret string, d time.Duration) probe {
	var (
		rtts    []time.Duration
		failed  int
		slowest time.Duration
		connErr string
	)
	client := &http.Client{Timeout: 10 * time.Second}
	nextConnect := time.Now()
	for k, deadline := 0, time.Now().Add(d); time.Now().Before(deadline); k++ {
		if time.Now().After(nextConnect) {
			nextConnect = time.Now().Add(time.Second)
			t0 := time.Now()
			c, err := s.Device("127.0.0.1", "probe", probeSecret, "lock", false)
			if err != nil {
				connErr = err.Error()
			} else {
				slowest = max(slowest, time.Since(t0))
				c.Disconnect(0)
			}
		}
		req, _ := http.NewRequest("POST", fmt.Sprintf("%s/api/v1/devices/door%d/lock?wait=5s", s.URL, k%doors), nil)
		req.Header.Set("Authorization", "Bearer "+harness.Token)
		t0 := time.Now()
		resp, err := client.Do(req)
		if err != nil {
			failed++
			fmt.Fprintln(os.Stderr, "lock:", err)
		} else {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				rtts = append(rtts, time.Since(t0))
			} else {
				failed++
				fmt.Fprintf(os.Stderr, "lock: %d %s\n", resp.StatusCode, body)
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	p := probe{connect: fmt.Sprintf("%.0f", ms(slowest)), failed: failed}
	if connErr != "" {
		p.connect = "failed: " + connErr
	}
	if len(rtts) > 0 {
		slices.Sort(rtts)
		p.p50, p.p99 = rtts[len(rtts)/2], rtts[min(len(rtts)-1, len(rtts)*99/100)]
	}
	return p
}

// httpIdle opens idle HTTP connections from one address, as fast as the
// server takes them, and keeps them open.
func httpIdle(s *harness.Server, stop chan struct{}) func() string {
	var held, opened atomic.Int64
	var wg sync.WaitGroup
	var mu sync.Mutex
	conns := map[net.Conn]bool{}
	wg.Add(1)
	go func() {
		defer wg.Done()
		d := &net.Dialer{Timeout: time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}}
		for i := 0; i < 20000; i++ {
			select {
			case <-stop:
				return
			default:
			}
			c, err := d.Dial("tcp", s.HTTP)
			if err != nil {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			// A request that keeps the connection alive, then silence.
			io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
			opened.Add(1)
			held.Add(1)
			mu.Lock()
			conns[c] = true
			mu.Unlock()
			go func() {
				defer func() { mu.Lock(); delete(conns, c); mu.Unlock(); c.Close() }()
				defer held.Add(-1)
				r := bufio.NewReader(c)
				if resp, err := http.ReadResponse(r, nil); err == nil {
					resp.Body.Close()
					r.ReadByte() // wait until the server closes it
				}
			}()
			if held.Load() > 5000 { // enough to make the point; keep this process's files
				time.Sleep(10 * time.Millisecond)
			}
		}
	}()
	return func() string {
		wg.Wait()
		n := held.Load()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		return fmt.Sprintf("%d connections opened, %d open at the end", opened.Load(), n)
	}
}

// halfConnect opens MQTT connections over TCP and WebSocket that announce
// a 256 KiB CONNECT and send 16 bytes of it, from 16 addresses.
func halfConnect(s *harness.Server, stop chan struct{}) func() string {
	var opened, open atomic.Int64
	var wg sync.WaitGroup
	header := []byte{0x10, 0x80, 0x80, 0x10} // CONNECT, remaining length 256 KiB
	partial := append(header, []byte("\x00\x04MQTT\x04\xc2\x00\x3c\x00\x04abcd")...)
	for a := 0; a < 16; a++ {
		wg.Add(1)
		go func(a int) {
			defer wg.Done()
			d := &net.Dialer{Timeout: time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(fmt.Sprintf("127.0.1.%d", a+1))}}
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				var c net.Conn
				var err error
				if i%2 == 0 {
					c, err = d.Dial("tcp", s.MQTT)
					if err == nil {
						_, err = c.Write(partial)
					}
				} else {
					c, err = wsDial(d, s.HTTP)
					if err == nil {
						err = wsWriteBinary(c, partial)
					}
				}
				if err != nil {
					if c != nil {
						c.Close()
					}
					time.Sleep(5 * time.Millisecond)
					continue
				}
				opened.Add(1)
				open.Add(1)
				go func() {
					c.Read(make([]byte, 1)) // until the server closes it
					open.Add(-1)
					c.Close()
				}()
				if open.Load() > 5000 { // keep this process's files
					time.Sleep(10 * time.Millisecond)
				}
			}
		}(a)
	}
	return func() string {
		wg.Wait()
		return fmt.Sprintf("%d half CONNECTs sent, %d still open at the end", opened.Load(), open.Load())
	}
}

// wsDial opens MQTT over WebSocket at /mqtt by hand.
func wsDial(d *net.Dialer, addr string) (net.Conn, error) {
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	key := make([]byte, 16)
	for i := range key {
		key[i] = byte(rand.IntN(256))
	}
	fmt.Fprintf(c, "GET /mqtt HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n", base64.StdEncoding.EncodeToString(key))
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	c.SetReadDeadline(time.Time{})
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		c.Close()
		return nil, fmt.Errorf("websocket upgrade: %v", err)
	}
	return c, nil
}

// wsWriteBinary writes p as one masked binary frame.
func wsWriteBinary(c net.Conn, p []byte) error {
	frame := []byte{0x82, 0x80 | byte(len(p)), 1, 2, 3, 4}
	for i, b := range p {
		frame = append(frame, b^frame[2+i%4])
	}
	_, err := c.Write(frame)
	return err
}

// streams opens 500 event streams as a guest with no grant while 10
// devices report their state.
func streams(s *harness.Server, stop chan struct{}) func() string {
	var u struct{ Token string }
	if err := s.Call("POST", "/api/v1/users", `{"name":"mallory","role":"guest"}`, http.StatusCreated, &u); err != nil {
		return func() string { return "create guest: " + err.Error() }
	}
	var open, refused atomic.Int64
	var conns []io.Closer
	for i := 0; i < 500; i++ {
		req, _ := http.NewRequest("GET", s.URL+"/api/v1/events/stream", nil)
		req.Header.Set("Authorization", "Bearer "+u.Token)
		resp, err := (&http.Client{Transport: &http.Transport{}}).Do(req)
		if err != nil {
			refused.Add(1)
			continue
		}
		if resp.StatusCode != http.StatusOK {
			refused.Add(1)
			resp.Body.Close()
			continue
		}
		open.Add(1)
		conns = append(conns, resp.Body)
		go io.Copy(io.Discard, resp.Body)
	}
	const reporters = 40
	wait := report(s, "reporter", reporters, 5*time.Second, 550*time.Millisecond, stop) // within the default message rate
	start := time.Now()
	return func() string {
		_, acked := wait()
		rate := float64(acked) / time.Since(start).Seconds()
		for _, c := range conns {
			c.Close()
		}
		return fmt.Sprintf("%d streams open, %d refused; %.0f reports/s from %d devices", open.Load(), refused.Load(), rate, reporters)
	}
}

// flood connects 50 devices that publish reports as fast as they can.
func flood(s *harness.Server, stop chan struct{}) func() string {
	wait := report(s, "noisy", 50, 100*time.Millisecond, 0, stop)
	return func() string {
		sent, acked := wait()
		return fmt.Sprintf("%d reports sent by 50 devices, %d acknowledged", sent, acked)
	}
}

// report connects n devices that publish "state locked" at QoS 1 until
// stop, each waiting up to ackWait for its PUBACK and then pause; the
// function returned waits for them and says how many were sent and
// acknowledged.
func report(s *harness.Server, prefix string, n int, ackWait, pause time.Duration, stop chan struct{}) func() (sent, acked int64) {
	var sentN, ackedN atomic.Int64
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		id := fmt.Sprintf("%s%d", prefix, i)
		secret, err := s.CreateDevice(id, "lock")
		if err != nil {
			continue
		}
		c, err := s.Device("127.0.0.1", id, secret, "lock", false)
		if err != nil {
			continue
		}
		wg.Add(1)
		go func(c paho.Client) {
			defer wg.Done()
			defer c.Disconnect(0)
			for {
				select {
				case <-stop:
					return
				case <-time.After(pause):
				}
				sentN.Add(1)
				if tok := c.Publish("toserver", 1, false, "state locked"); tok.WaitTimeout(ackWait) && tok.Error() == nil {
					ackedN.Add(1)
				}
			}
		}(c)
	}
	return func() (int64, int64) {
		wg.Wait()
		return sentN.Load(), ackedN.Load()
	}
}
