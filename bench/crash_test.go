package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// TestCrashRecovery runs the real binary, drives lock round trips and
// device reports, kills it with SIGKILL at random moments, restarts it on
// the same data dir and checks that everything acknowledged survived:
// every command the REST API answered 200 for, and every report a device
// got a PUBACK for. It is bounded (a few cycles of a second or two) so CI
// runs it; -short skips it.
func TestCrashRecovery(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test skipped in -short mode")
	}
	cycles := 5
	bin := filepath.Join(t.TempDir(), "gatehouse")
	build := exec.Command("go", "build", "-o", bin, "..")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		t.Fatalf("build: %v", err)
	}
	dir := t.TempDir()
	var (
		secrets = map[string]string{}
		mu      sync.Mutex
		acked   []string // command ids answered 200
		puback  []string // report tags a device had a PUBACK for
		ops     int
	)
	for cycle := 0; cycle <= cycles; cycle++ {
		p := startProcess(t, bin, dir)
		if cycle == 0 {
			for _, id := range []string{"door", "meter"} {
				var d struct{ Secret string }
				json.Unmarshal(p.do(t, "POST", "/api/v1/devices", fmt.Sprintf(`{"id":%q,"kind":"lock"}`, id), http.StatusCreated), &d)
				secrets[id] = d.Secret
			}
		}
		// Everything acknowledged before the last crash is there.
		mu.Lock()
		p.verify(t, acked, puback)
		mu.Unlock()
		if cycle == cycles {
			p.stop(t)
			break
		}

		door := p.device(t, "door", secrets["door"], true)
		meter := p.device(t, "meter", secrets["meter"], false)
		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Add(2)
		go func() { // a person locking and unlocking
			defer wg.Done()
			client := &http.Client{Timeout: 5 * time.Second}
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				verb := []string{"lock", "unlock"}[i%2]
				req, _ := http.NewRequest("POST", p.url+"/api/v1/devices/door/"+verb+"?wait=2s", nil)
				req.Header.Set("Authorization", "Bearer "+token)
				resp, err := client.Do(req)
				if err != nil {
					continue
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				var c struct{ ID, Status string }
				if resp.StatusCode == http.StatusOK && json.Unmarshal(body, &c) == nil && c.Status == "done" {
					mu.Lock()
					acked, ops = append(acked, c.ID), ops+1
					mu.Unlock()
				}
			}
		}()
		go func() { // a device reporting
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				tag := fmt.Sprintf("c%dr%d", cycle, i)
				tok := meter.Publish("toserver", 1, false, "hand_shake lock "+tag)
				if tok.WaitTimeout(2*time.Second) && tok.Error() == nil {
					mu.Lock()
					puback, ops = append(puback, tag), ops+1
					mu.Unlock()
				}
			}
		}()
		time.Sleep(time.Duration(300+rand.IntN(1200)) * time.Millisecond)
		p.kill(t)
		close(stop)
		wg.Wait()
		door.Disconnect(0)
		meter.Disconnect(0)
	}
	t.Logf("%d crash cycles, %d acknowledged operations (%d commands, %d reports), lost 0", cycles, ops, len(acked), len(puback))
	if len(acked) == 0 || len(puback) == 0 {
		t.Errorf("the workload acknowledged nothing (%d commands, %d reports): the test proved nothing", len(acked), len(puback))
	}
}

type process struct {
	cmd  *exec.Cmd
	mqtt string
	url  string
}

func startProcess(t *testing.T, bin, dir string) *process {
	t.Helper()
	p := &process{mqtt: freeAddr(t), url: "http://" + freeAddr(t)}
	p.cmd = exec.Command(bin, "--data", dir, "--mqtt", p.mqtt, "--http", strings.TrimPrefix(p.url, "http://"), "--log-level", "error")
	p.cmd.Env = append(os.Environ(), "GATEHOUSE_ADMIN_TOKEN="+token)
	p.cmd.Stderr = os.Stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.cmd.Process.Kill(); p.cmd.Wait() })
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if resp, err := http.Get(p.url + "/readyz"); err == nil {
			resp.Body.Close()
			return p
		}
	}
	t.Fatal("server did not start")
	return nil
}

func (p *process) kill(t *testing.T) {
	p.cmd.Process.Signal(syscall.SIGKILL)
	p.cmd.Wait()
}

func (p *process) stop(t *testing.T) {
	p.cmd.Process.Signal(os.Interrupt)
	if err := p.cmd.Wait(); err != nil {
		t.Errorf("graceful stop: %v", err)
	}
}

func (p *process) do(t *testing.T, method, path, body string, want int) []byte {
	t.Helper()
	req, _ := http.NewRequest(method, p.url+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		t.Fatalf("%s %s: %d %s", method, path, resp.StatusCode, out)
	}
	return out
}

// device connects a paho client; an acking one answers every command.
func (p *process) device(t *testing.T, id, secret string, acks bool) paho.Client {
	t.Helper()
	var c paho.Client
	opts := paho.NewClientOptions().AddBroker("tcp://" + p.mqtt).SetClientID(id).SetUsername(id).
		SetPassword(secret).SetAutoReconnect(false).SetProtocolVersion(4).
		SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) {
			f := strings.Fields(string(m.Payload()))
			if acks && len(f) == 3 {
				c.Publish("toserver", 1, false, "ack "+f[1]+" ok "+f[0]+"ed")
			}
		})
	c = paho.NewClient(opts)
	if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("connect %s: %v", id, tok.Error())
	}
	c.Subscribe("todevice/"+id, 1, nil).WaitTimeout(5 * time.Second)
	return c
}

// verify checks that every acknowledged command is done and every
// acknowledged report is in the event log.
func (p *process) verify(t *testing.T, acked, puback []string) {
	t.Helper()
	for _, id := range acked {
		var c struct{ Status string }
		json.Unmarshal(p.do(t, "GET", "/api/v1/commands/"+id, "", http.StatusOK), &c)
		if c.Status != "done" {
			t.Errorf("command %s answered done is %q after the crash", id, c.Status)
		}
	}
	seen := map[string]bool{}
	for cursor := ""; ; {
		var page struct {
			Items []struct{ Detail string }
			Next  string
		}
		json.Unmarshal(p.do(t, "GET", "/api/v1/events?type=hand_shake&device=meter&limit=1000&cursor="+cursor, "", http.StatusOK), &page)
		for _, e := range page.Items {
			seen[strings.TrimPrefix(e.Detail, "lock ")] = true
		}
		if cursor = page.Next; cursor == "" {
			break
		}
	}
	for _, tag := range puback {
		if !seen[tag] {
			t.Errorf("report %s had a PUBACK but is lost", tag)
		}
	}
}
