package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"gatehouse/bench/harness"
)

// options are the sizes of the scenarios.
type options struct {
	idle, storm, reports int
	duration             time.Duration // of the report run
	concurrency          int           // dialers at once
	sources              int           // loopback source addresses; 0: one per 5,000 devices
	settle               time.Duration // quiet time before reading idle memory
	timeout              time.Duration // for each step of one client
	phase                time.Duration // after this, connectAll starts no more devices
}

// devices is the outcome of connecting devices: the clients that made it
// (nil where one failed) and why the others failed.
type devices struct {
	clients []*client
	failed  map[string]int
}

func (f *devices) ok() int { return len(f.clients) - f.dropped() }

func (f *devices) dropped() int {
	n := 0
	for _, v := range f.failed {
		n += v
	}
	return n
}

// reasons lists the failures, most frequent first.
func (f *devices) reasons() string {
	var r []string
	for k, v := range f.failed {
		r = append(r, fmt.Sprintf("%d %s", v, k))
	}
	sort.Slice(r, func(i, j int) bool { return r[i] > r[j] })
	return strings.Join(r, ", ")
}

// close ends every connection; call it after the server has stopped, so
// that the server, not this process, holds each TIME_WAIT.
func (f *devices) close() {
	for _, c := range f.clients {
		if c != nil {
			c.close()
		}
	}
}

// connectAll connects devices 0..n-1 to r, conc at a time, each doing its
// hand-shake; a failure is counted, never retried.
func connectAll(c *contender, r *running, o options, n int) *devices {
	f := &devices{clients: make([]*client, n), failed: map[string]int{}}
	sources := o.sources
	if sources <= 0 {
		sources = 1 + n/5000
	}
	dialers := make([]*net.Dialer, sources)
	for i := range dialers {
		src := ""
		if sources > 1 {
			src = fmt.Sprintf("127.0.0.%d", 1+i)
		}
		dialers[i] = dialer(src, o.timeout)
	}
	deadline := time.Now().Add(o.phase)
	var next atomic.Int64
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range min(o.concurrency, n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
				if time.Now().After(deadline) {
					mu.Lock()
					f.failed["not started within -phase"]++
					mu.Unlock()
					continue
				}
				user, pass := c.login(i)
				cl, err := connect(dialers[i%sources], r.mqtt, deviceID(i), user, pass, o.timeout)
				if err == nil {
					if err = c.handshake(cl, deviceID(i), o.timeout); err != nil {
						cl.close()
					}
				}
				if err != nil {
					mu.Lock()
					f.failed[reason(err)]++
					mu.Unlock()
					continue
				}
				f.clients[i] = cl
			}
		}()
	}
	wg.Wait()
	return f
}

// reason names why a client failed, in a few words.
func reason(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connect refused"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return "reset"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "closed by the server"
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		return "no local port (client side)"
	case errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	}
	s := err.Error()
	if i := strings.Index(s, "refused with code"); i >= 0 {
		return "CONNACK " + s[i:]
	}
	return s
}

// idleScenario connects o.idle devices that subscribe and shake hands, and
// measures the server's own memory (RssAnon) per device once it is idle.
func (b *bench) idleScenario(c *contender, r *running) ([]harness.Sample, error) {
	o := b.o
	harness.WaitIdle(r.pid, 10*time.Second)
	rss0, g0 := harness.RSSAnon(r.pid), r.goroutines()
	f := connectAll(c, r, o, o.idle)
	defer f.close()
	defer r.stop()
	if err := r.alive(); err != nil {
		return nil, err
	}
	if !harness.WaitIdle(r.pid, 30*time.Second) {
		progress("  %s did not go idle in 30 s", c.name)
	}
	time.Sleep(o.settle)
	rss1, g1 := harness.RSSAnon(r.pid), r.goroutines()
	ok := f.ok()
	what := fmt.Sprintf("idle devices, %d connected and subscribed, read %s after", o.idle, o.settle)
	var out []harness.Sample
	if ok > 0 {
		out = append(out,
			harness.Sample{Case: what, Metric: "server RssAnon KiB per device", Server: c.name, Value: float64(rss1-rss0) / 1024 / float64(ok)},
			harness.Sample{Case: what, Metric: "server RssAnon MiB with all connected", Server: c.name, Value: float64(rss1) / (1 << 20)})
		if g0 >= 0 && g1 >= 0 {
			out = append(out, harness.Sample{Case: what, Metric: "server goroutines per device", Server: c.name, Value: float64(g1-g0) / float64(ok)})
		}
	}
	if d := f.dropped(); d > 0 {
		out = append(out, harness.Sample{Case: what, Metric: "devices that failed to connect", Server: c.name, Value: float64(d)})
		b.note("%s, idle: %d of %d devices failed to connect (%s); memory is per connected device", c.name, d, o.idle, f.reasons())
	}
	progress("  %s: %d connected, RssAnon %.1f → %.1f MiB, goroutines %d → %d", c.name, ok,
		float64(rss0)/(1<<20), float64(rss1)/(1<<20), g0, g1)
	return out, nil
}

// stormScenario connects o.storm devices as fast as o.concurrency dialers
// can, each shaking hands, and measures the time until the last is done,
// how many failed, and the server's CPU per connect (until it is idle
// again, so work it deferred is counted).
func (b *bench) stormScenario(c *contender, r *running) ([]harness.Sample, error) {
	o := b.o
	harness.WaitIdle(r.pid, 10*time.Second)
	cpu0 := harness.CPU(r.pid)
	start := time.Now()
	f := connectAll(c, r, o, o.storm)
	elapsed := time.Since(start)
	defer f.close()
	defer r.stop()
	if err := r.alive(); err != nil {
		return nil, err
	}
	if !harness.WaitIdle(r.pid, 30*time.Second) {
		progress("  %s did not go idle in 30 s", c.name)
	}
	cpu := harness.CPU(r.pid) - cpu0
	what := fmt.Sprintf("connect + hand-shake storm, %d devices", o.storm)
	out := []harness.Sample{
		{Case: what, Metric: "s until all done", Server: c.name, Value: elapsed.Seconds()},
		{Case: what, Metric: "dropped", Server: c.name, Value: float64(f.dropped())},
	}
	if ok := f.ok(); ok > 0 {
		out = append(out, harness.Sample{Case: what, Metric: "server CPU ms per connect", Server: c.name,
			Value: float64(cpu) / float64(time.Millisecond) / float64(ok)})
	}
	if d := f.dropped(); d > 0 {
		b.note("%s, storm: %d of %d dropped (%s)", c.name, d, o.storm, f.reasons())
	}
	progress("  %s: %d done in %.1f s, %d dropped, server CPU %s", c.name, f.ok(), elapsed.Seconds(), f.dropped(), cpu)
	return out, nil
}

// reportScenario has o.reports devices each publish `state locked` and
// `state unlocked` in turn at QoS 1, one in flight, for o.duration, and
// measures reports per second and the server's CPU per report. On
// gatehouse it then checks that every acknowledged report is a stored
// state event.
func (b *bench) reportScenario(c *contender, r *running) ([]harness.Sample, error) {
	o := b.o
	f := connectAll(c, r, o, o.reports)
	defer f.close()
	defer r.stop()
	if d := f.dropped(); d > 0 {
		return nil, fmt.Errorf("%d of %d reporting devices failed to connect: %s", d, o.reports, f.reasons())
	}
	harness.WaitIdle(r.pid, 10*time.Second)
	before := 0
	if r.gh != nil {
		var err error
		if before, err = r.stateEvents(); err != nil {
			return nil, fmt.Errorf("count state events: %w", err)
		}
	}
	var acked atomic.Int64
	var lost atomic.Int64
	var wg sync.WaitGroup
	begin := make(chan struct{})
	var end time.Time
	for i, cl := range f.clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			topic := c.reportTopic(deviceID(i))
			<-begin
			for k := 0; time.Now().Before(end); k++ {
				payload := "state locked"
				if k%2 == 1 {
					payload = "state unlocked"
				}
				if err := cl.exchange(topic, payload, "", o.timeout); err != nil {
					lost.Add(1)
					progress("  %s: %s: %v", c.name, deviceID(i), err)
					return
				}
				acked.Add(1)
			}
		}()
	}
	cpu0 := harness.CPU(r.pid)
	start := time.Now()
	end = start.Add(o.duration)
	close(begin)
	wg.Wait()
	elapsed := time.Since(start)
	cpu := harness.CPU(r.pid) - cpu0
	if err := r.alive(); err != nil {
		return nil, err
	}
	n := acked.Load()
	what := fmt.Sprintf("device reports, %d devices, QoS 1, one in flight each, %s", o.reports, o.duration)
	out := []harness.Sample{{Case: what, Metric: "reports/s", Server: c.name, Value: float64(n) / elapsed.Seconds()}}
	if n > 0 {
		out = append(out, harness.Sample{Case: what, Metric: "server CPU µs per report", Server: c.name,
			Value: float64(cpu) / float64(time.Microsecond) / float64(n)})
	}
	if l := lost.Load(); l > 0 {
		b.note("%s, reports: %d devices stopped on an error (see the progress lines)", c.name, l)
	}
	if r.gh != nil {
		harness.WaitIdle(r.pid, 30*time.Second)
		after, err := r.stateEvents()
		if err != nil {
			return out, fmt.Errorf("count state events: %w", err)
		}
		stored := after - before
		out = append(out, harness.Sample{Case: what, Metric: "state events stored per PUBACK", Server: c.name, Value: float64(stored) / float64(max(n, 1))})
		if int64(stored) < n {
			warn := fmt.Sprintf("WARNING: %s stored %d state events for %d acknowledged reports: %d acknowledged reports are NOT in the event log", c.name, stored, n, n-int64(stored))
			progress("!!!!!!!! %s", warn)
			b.note("%s", warn)
		}
		progress("  %s: %d reports acknowledged in %.1f s, %d state events stored, server CPU %s", c.name, n, elapsed.Seconds(), stored, cpu)
	} else {
		progress("  %s: %d reports acknowledged in %.1f s, server CPU %s", c.name, n, elapsed.Seconds(), cpu)
	}
	return out, nil
}

// bench is one run of the comparison: its sizes and the notes it gathers.
type bench struct {
	o     options
	mu    sync.Mutex
	notes []string
}

// note adds a line to the notes printed under the table.
func (b *bench) note(format string, args ...any) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.notes = append(b.notes, fmt.Sprintf(format, args...))
}

// progress prints a line to stderr.
func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, time.Now().Format("15:04:05 ")+format+"\n", args...)
}
