// Command soak runs the real gatehouse binary under a steady, churning load
// for a while and prints, every interval, what the server process holds:
// RSS, goroutines, open files, the data file's size, and commands that were
// lost (still "sent" long after their not-after). It ends non-zero if any
// command was lost or the server failed.
//
//	go run ./bench/soak -duration 10m -devices 50
//
// Devices are paho clients: locks that acknowledge every command and report
// their state, and cameras that send a stranger picture now and then. Every
// device drops its connection and reconnects at random, half of the time by
// taking its own session over. Loopback only; it stops by itself.
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"image"
	"image/color"
	"image/jpeg"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"gatehouse/bench/harness"
)

func main() {
	duration := flag.Duration("duration", 10*time.Minute, "how long to run")
	devices := flag.Int("devices", 50, "devices (every tenth a camera, the rest locks)")
	every := flag.Duration("every", 30*time.Second, "how often to print a line")
	rate := flag.Int("commands", 20, "commands per second")
	keepMax := flag.Int("keep-events-max", 0, "passed to the server as --keep-events-max when set: a small value shows the data file level off")
	flag.Parse()
	if err := run(*duration, *devices, *every, *rate, *keepMax); err != nil {
		fmt.Fprintln(os.Stderr, "soak:", err)
		os.Exit(1)
	}
}

func run(duration time.Duration, devices int, every time.Duration, rate int, keepMax int) error {
	tmp, err := os.MkdirTemp("", "gatehouse-soak-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	bin, err := harness.Build(tmp)
	if err != nil {
		return err
	}
	args := []string{"--log-level", "warn", "--command-ttl", "5s"}
	if keepMax > 0 {
		args = append(args, "--keep-events-max", fmt.Sprint(keepMax))
	}
	srv, err := harness.Start(bin, tmp, args...)
	if err != nil {
		return err
	}
	defer srv.Stop()

	fleet := make([]*device, devices)
	for i := range fleet {
		d := &device{id: fmt.Sprintf("dev%03d", i), kind: "lock", srv: srv}
		if i%10 == 9 {
			d.kind = "camera"
		}
		if d.secret, err = srv.CreateDevice(d.id, d.kind); err != nil {
			return err
		}
		fleet[i] = d
	}

	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i, d := range fleet {
		wg.Add(1)
		go func() { defer wg.Done(); d.live(stop, uint64(i)) }()
	}
	cmds := &ledger{sent: map[string]time.Time{}}
	wg.Add(1)
	go func() { defer wg.Done(); commander(srv, fleet, rate, stop, cmds) }()

	start := time.Now()
	fmt.Printf("| elapsed | RSS MiB (anonymous) | goroutines | open fds | data file MiB | commands sent | done | expired/failed | lost | reports | pictures | reconnects |\n")
	fmt.Printf("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")
	tick := time.NewTicker(every)
	defer tick.Stop()
	var lost int
	for done := false; !done; {
		select {
		case <-tick.C:
		case <-time.After(time.Until(start.Add(duration))):
			done = true
		case err := <-srv.Exited():
			return fmt.Errorf("server exited: %v", err)
		}
		lost = cmds.check(srv)
		var st struct{ Goroutines int }
		_ = srv.Call("GET", "/api/v1/status", "", http.StatusOK, &st)
		fi, _ := os.Stat(filepath.Join(srv.Data, "gatehouse.db"))
		var reports, pictures, reconnects int64
		for _, d := range fleet {
			reports += d.reports.Load()
			pictures += d.pictures.Load()
			reconnects += d.reconnects.Load()
		}
		s, ok, bad := cmds.counts()
		fmt.Printf("| %s | %.1f (%.1f) | %d | %d | %.1f | %d | %d | %d | %d | %d | %d | %d |\n",
			time.Since(start).Round(time.Second), float64(harness.RSS(srv.Cmd.Process.Pid))/(1<<20),
			float64(harness.RSSAnon(srv.Cmd.Process.Pid))/(1<<20), st.Goroutines,
			harness.FDs(srv.Cmd.Process.Pid), float64(fi.Size())/(1<<20), s, ok, bad, lost, reports, pictures, reconnects)
	}
	close(stop)
	wg.Wait()
	if lost > 0 {
		return fmt.Errorf("%d commands lost (still sent long after their not-after)", lost)
	}
	return nil
}

type device struct {
	id, kind, secret string
	srv              *harness.Server
	reports          atomic.Int64
	pictures         atomic.Int64
	reconnects       atomic.Int64
}

// live keeps the device connected, acking commands and reporting, and
// reconnects it every 5 to 60 s until stop.
func (d *device) live(stop chan struct{}, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 42))
	var cur paho.Client
	defer func() {
		if cur != nil {
			cur.Disconnect(0)
		}
	}()
	picture := testJPEG(seed)
	for {
		old := cur
		if old != nil && rng.IntN(2) == 0 {
			old.Disconnect(0)
			old = nil
		}
		c, err := d.connect()
		if old != nil {
			old.Disconnect(0) // already taken over
		}
		if err != nil {
			select {
			case <-stop:
				return
			case <-time.After(time.Second):
				continue
			}
		}
		cur = c
		d.reconnects.Add(1)
		until := time.After(time.Duration(5+rng.IntN(55)) * time.Second)
		for stay := true; stay; {
			select {
			case <-stop:
				return
			case <-until:
				stay = false
			case <-time.After(time.Duration(500+rng.IntN(1500)) * time.Millisecond):
				if d.kind == "camera" && rng.IntN(20) == 0 {
					if tok := c.Publish("toserver", 1, false, append([]byte("find_stranger "), picture...)); tok.WaitTimeout(10*time.Second) && tok.Error() == nil {
						d.pictures.Add(1)
					}
				} else if d.kind == "lock" {
					if tok := c.Publish("toserver", 1, false, "state locked"); tok.WaitTimeout(10*time.Second) && tok.Error() == nil {
						d.reports.Add(1)
					}
				}
			}
		}
	}
}

func (d *device) connect() (paho.Client, error) {
	var c paho.Client
	opts := paho.NewClientOptions().AddBroker("tcp://" + d.srv.MQTT).SetClientID(d.id).SetUsername(d.id).
		SetPassword(d.secret).SetAutoReconnect(false).SetProtocolVersion(4).SetCleanSession(true).
		SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) {
			f := strings.Fields(string(m.Payload()))
			if len(f) == 3 && (f[0] == "lock" || f[0] == "unlock") {
				c.Publish("toserver", 1, false, "ack "+f[1]+" ok "+f[0]+"ed")
			}
		})
	c = paho.NewClient(opts)
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		return nil, fmt.Errorf("connect %s: %v", d.id, tok.Error())
	}
	if tok := c.Subscribe("todevice/"+d.id, 1, nil); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		c.Disconnect(0)
		return nil, fmt.Errorf("subscribe %s: %v", d.id, tok.Error())
	}
	if tok := c.Publish("toserver", 1, false, "hand_shake "+d.kind+" 1.0 "+d.id); !tok.WaitTimeout(10 * time.Second) {
		c.Disconnect(0)
		return nil, fmt.Errorf("hand_shake %s: timeout", d.id)
	}
	return c, nil
}

// ledger tracks the commands sent and how they ended.
type ledger struct {
	mu       sync.Mutex
	sent     map[string]time.Time // id → not-after, while not yet final
	total    int
	done     int
	notDone  int
	lostSeen map[string]bool
}

func (l *ledger) add(id string, notAfter time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sent[id] = notAfter
	l.total++
}

func (l *ledger) counts() (total, done, notDone int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.total, l.done, l.notDone
}

// check asks for every command past its not-after by 5 s; one still sent
// then is lost.
func (l *ledger) check(srv *harness.Server) (lost int) {
	l.mu.Lock()
	var due []string
	for id, na := range l.sent {
		if time.Since(na) > 5*time.Second {
			due = append(due, id)
		}
	}
	l.mu.Unlock()
	for _, id := range due {
		var c struct{ Status string }
		if err := srv.Call("GET", "/api/v1/commands/"+id, "", http.StatusOK, &c); err != nil {
			continue
		}
		l.mu.Lock()
		switch c.Status {
		case "done":
			l.done++
			delete(l.sent, id)
		case "failed", "expired":
			l.notDone++
			delete(l.sent, id)
		default:
			if l.lostSeen == nil {
				l.lostSeen = map[string]bool{}
			}
			l.lostSeen[id] = true
		}
		l.mu.Unlock()
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.lostSeen)
}

// commander sends rate lock/unlock commands a second to random locks.
func commander(srv *harness.Server, fleet []*device, rate int, stop chan struct{}, l *ledger) {
	tick := time.NewTicker(time.Second / time.Duration(max(rate, 1)))
	defer tick.Stop()
	verbs := []string{"lock", "unlock"}
	for k := 0; ; k++ {
		select {
		case <-stop:
			return
		case <-tick.C:
		}
		d := fleet[rand.IntN(len(fleet))]
		if d.kind != "lock" {
			continue
		}
		var c struct {
			ID       string    `json:"id"`
			NotAfter time.Time `json:"not_after"`
		}
		req, _ := http.NewRequest("POST", srv.URL+"/api/v1/devices/"+d.id+"/"+verbs[k%2]+"?wait=0s", nil)
		req.Header.Set("Authorization", "Bearer "+harness.Token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			continue
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if (resp.StatusCode == http.StatusAccepted || resp.StatusCode == http.StatusOK) && json.Unmarshal(body, &c) == nil {
			l.add(c.ID, c.NotAfter)
		}
	}
}

// testJPEG is a small camera picture, different per seed.
func testJPEG(seed uint64) []byte {
	img := image.NewRGBA(image.Rect(0, 0, 64, 48))
	for i := range img.Pix {
		img.Pix[i] = byte(int(seed)*31 + i)
	}
	img.Set(0, 0, color.White)
	var b bytes.Buffer
	jpeg.Encode(&b, img, nil)
	return b.Bytes()
}
