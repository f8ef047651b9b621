package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	paho5 "github.com/eclipse/paho.golang/paho"
	paho "github.com/eclipse/paho.mqtt.golang"
)

// The full-disk test runs the real server with its data dir on a small
// tmpfs and fills the rest of it. It needs root to mount; CI runs as root.

// diskWait bounds every poll of the full-disk test: generous, since the
// test only waits that long when something is wrong.
const diskWait = 60 * time.Second

// mountTmpfs mounts a tmpfs of size bytes on a new temporary directory and
// unmounts it at the end of the test, after the cleanups registered later
// (the server's stop among them).
func mountTmpfs(t *testing.T, size int) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the full-disk test mounts a tmpfs and needs root (CI runs it as root)")
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%d,mode=0700", size), "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs (%v: %s); the full-disk test needs one", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	return dir
}

// fillDisk writes path until its file system is full.
func fillDisk(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 64<<10)
	for len(chunk) > 0 {
		if _, err := f.Write(chunk); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("filling %s: %v, want ENOSPC", path, err)
			}
			chunk = chunk[:len(chunk)/2] // use up what is left
		}
	}
}

// diskPoll calls f until it returns "" and fails the test with f's last
// answer after diskWait.
func diskPoll(t *testing.T, what string, f func() string) {
	t.Helper()
	deadline := time.Now().Add(diskWait)
	for {
		msg := f()
		if msg == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still %s after %s", what, msg, diskWait)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// countEvents counts the events of type typ of device, all pages.
func (s *testServer) countEvents(device, typ string) int {
	s.t.Helper()
	n, cursor := 0, ""
	for {
		var l struct {
			Items []eventJSON `json:"items"`
			Next  string      `json:"next"`
		}
		s.apiJSON("GET", "/api/v1/events?limit=1000&device="+device+"&type="+typ+"&cursor="+cursor, nil, http.StatusOK, &l)
		n += len(l.Items)
		if l.Next == "" {
			return n
		}
		cursor = l.Next
	}
}

// diskRequest sends an admin request and returns the status, the Retry-After
// header and the decoded error body, if any.
func (s *testServer) diskRequest(method, path string, body string) (status int, retryAfter string, e diskErrorJSON) {
	s.t.Helper()
	req, _ := http.NewRequest(method, s.url+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+testAdminToken)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	var wrapped struct {
		Error diskErrorJSON `json:"error"`
	}
	_ = json.Unmarshal(out, &wrapped)
	return resp.StatusCode, resp.Header.Get("Retry-After"), wrapped.Error
}

type diskErrorJSON struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// v3Reporter is a paho 3.1.1 device with a persistent session that
// publishes QoS 1 reports without waiting and remembers each token, and
// counts the "error …" replies the server sends it.
type v3Reporter struct {
	c      paho.Client
	store  *paho.MemoryStore
	tokens []paho.Token
	errors atomic.Int64
}

func connectV3Reporter(t *testing.T, s *testServer, id, secret string) *v3Reporter {
	t.Helper()
	r := &v3Reporter{store: paho.NewMemoryStore()}
	opts := paho.NewClientOptions().AddBroker("tcp://" + s.mqtt).SetClientID(id).
		SetProtocolVersion(4).SetUsername(id).SetPassword(secret).
		SetCleanSession(false).SetStore(r.store). // unacknowledged reports are kept and resent
		SetAutoReconnect(false).SetConnectRetry(false).SetConnectTimeout(5 * time.Second).
		SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) {
			if strings.HasPrefix(string(m.Payload()), "error ") {
				r.errors.Add(1)
			}
		})
	r.c = paho.NewClient(opts)
	r.connect(t)
	if tok := r.c.Subscribe("todevice/"+id, 1, nil); !tok.WaitTimeout(diskWait) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	t.Cleanup(func() { r.c.Disconnect(0) })
	return r
}

func (r *v3Reporter) connect(t *testing.T) {
	t.Helper()
	if tok := r.c.Connect(); !tok.WaitTimeout(diskWait) || tok.Error() != nil {
		t.Fatalf("connect v3 device: %v", tok.Error())
	}
}

func (r *v3Reporter) report(payload string) {
	r.tokens = append(r.tokens, r.c.Publish("toserver", 1, false, payload))
}

// acked counts the reports that got their PUBACK.
func (r *v3Reporter) acked() int {
	n := 0
	for _, tok := range r.tokens {
		select {
		case <-tok.Done():
			if tok.Error() == nil {
				n++
			}
		default:
		}
	}
	return n
}

// unsent counts the publishes paho still holds for lack of a PUBACK.
func (r *v3Reporter) unsent() int {
	n := 0
	for _, key := range r.store.All() {
		if strings.HasPrefix(key, "o.") {
			n++
		}
	}
	return n
}

// TestFullDiskAcknowledgesOnlyWhatIsStored fills the disk under a running
// server while an MQTT 3.1.1 and an MQTT 5 device send QoS 1 state reports
// and a person calls the API. Nothing acknowledged may be missing: a report
// that could not be stored gets no PUBACK (3.1.1) or a PUBACK with 0x97
// Quota exceeded (5), the API answers 507 with a readable message, and
// /readyz reports the fault. When space returns the server recovers by
// itself: ready without any write coming, new reports are stored, and the
// 3.1.1 device's unacknowledged reports, resent when it reconnects, are
// stored too.
func TestFullDiskAcknowledgesOnlyWhatIsStored(t *testing.T) {
	dir := mountTmpfs(t, 8<<20)
	s := startServer(t, dir)
	secret3 := s.createDevice("door3", "lock")
	secret5 := s.createDevice("door5", "lock")
	d3 := connectV3Reporter(t, s, "door3", secret3)
	d5, err := s.connect5("door5", "door5", secret5)
	if err != nil {
		t.Fatalf("connect v5 device: %v", err)
	}
	var acked5, refused5 int
	report5 := func(payload string) byte {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), diskWait)
		defer cancel()
		pr, err := d5.c.Publish(ctx, &paho5.Publish{Topic: "toserver", QoS: 1, Payload: []byte(payload)})
		if pr == nil {
			t.Fatalf("v5 publish %q: %v", payload, err)
		}
		if pr.ReasonCode < 0x80 {
			acked5++
		} else {
			refused5++
		}
		return pr.ReasonCode
	}
	states := []string{"locked", "unlocked"}
	for i := range 4 {
		if code := report5("state " + states[i%2]); code != 0 {
			t.Fatalf("v5 report before the disk is full: reason %#x", code)
		}
		d3.report("state " + states[i%2])
	}
	diskPoll(t, "v3 reports before the disk is full", func() string {
		if n := d3.acked(); n != len(d3.tokens) {
			return fmt.Sprintf("%d of %d acknowledged", n, len(d3.tokens))
		}
		return ""
	})
	if st, _ := s.api("GET", "/readyz", "-", nil); st != http.StatusOK {
		t.Fatalf("readyz before the disk is full: %d", st)
	}

	filler := filepath.Join(dir, "filler")
	fillDisk(t, filler)

	// Reports go on until the store cannot take them: writes that fit in
	// pages the data file already has still commit for a while.
	firstRefusal := -1
	for i := 0; firstRefusal < 0 || i < firstRefusal+20; i++ {
		if i > 5000 {
			t.Fatalf("5000 reports on a full disk, none refused (%d acknowledged)", acked5)
		}
		code := report5("state " + states[i%2])
		if code >= 0x80 && firstRefusal < 0 {
			firstRefusal = i
			if code != 0x97 {
				t.Fatalf("v5 PUBACK of a report the full disk could not take: %#x, want 0x97 quota exceeded", code)
			}
		}
		d3.report("state " + states[i%2])
	}
	t.Logf("full disk: v5 device %d reports acknowledged, %d refused", acked5, refused5)

	// The API: writes answer 507 with the reason, reads still work.
	var created []string
	for i := 0; ; i++ {
		if i == 50 {
			t.Fatalf("50 device creations on a full disk, none refused")
		}
		id := fmt.Sprintf("extra%d", i)
		st, retry, e := s.diskRequest("POST", "/api/v1/devices", `{"id":"`+id+`","kind":"lock","name":"x"}`)
		if st == http.StatusCreated {
			created = append(created, id)
			continue
		}
		const msg = "the server cannot write to its data file: no space left on device"
		if st != http.StatusInsufficientStorage || e.Code != "storage_full" || e.Message != msg || retry == "" {
			t.Fatalf("create a device on a full disk: %d %+v Retry-After %q; want 507 storage_full %q with Retry-After", st, e, retry, msg)
		}
		break
	}
	if st, _ := s.api("GET", "/api/v1/devices", "", nil); st != http.StatusOK {
		t.Fatalf("list devices on a full disk: %d", st)
	}

	// /readyz reports the fault while writes fail.
	diskPoll(t, "readyz on a full disk", func() string {
		st, _, e := s.diskRequest("GET", "/readyz", "")
		if st == http.StatusServiceUnavailable && e.Code == "storage_full" &&
			strings.Contains(e.Message, "no space left on device") && strings.Contains(e.Message, "writes failing since") {
			return ""
		}
		report5("state locked") // a write that commits makes it ready again
		return fmt.Sprintf("%d %+v", st, e)
	})

	// Every v3 report was handled: acknowledged, or answered "error …"
	// and not acknowledged.
	diskPoll(t, "v3 reports on a full disk", func() string {
		if a, e := d3.acked(), int(d3.errors.Load()); a+e != len(d3.tokens) {
			return fmt.Sprintf("%d acknowledged + %d error replies of %d reports", a, e, len(d3.tokens))
		}
		return ""
	})
	acked3, sent3 := d3.acked(), len(d3.tokens)
	t.Logf("full disk: v3 device %d of %d reports acknowledged", acked3, sent3)
	if acked3 == sent3 {
		t.Fatal("every v3 report on the full disk was acknowledged")
	}
	// Nothing acknowledged is missing, nothing refused was stored.
	if got := s.countEvents("door3", "state"); got != acked3 {
		t.Fatalf("v3 device: %d state events stored, %d reports acknowledged", got, acked3)
	}
	if got := s.countEvents("door5", "state"); got != acked5 {
		t.Fatalf("v5 device: %d state events stored, %d reports acknowledged", got, acked5)
	}
	for _, id := range created {
		if st, _ := s.api("GET", "/api/v1/devices/"+id, "", nil); st != http.StatusOK {
			t.Fatalf("device %s, created (201) on the full disk: GET %d", id, st)
		}
	}

	// Space returns. With no write coming, the server turns ready.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	diskPoll(t, "readyz after space returned", func() string {
		if st, body := s.api("GET", "/readyz", "-", nil); st != http.StatusOK {
			return fmt.Sprintf("%d %s", st, body)
		}
		return ""
	})
	for i := range 5 {
		if code := report5("state " + states[i%2]); code != 0 {
			t.Fatalf("v5 report after space returned: reason %#x", code)
		}
	}
	if got := s.countEvents("door5", "state"); got != acked5 {
		t.Fatalf("v5 device after recovery: %d state events stored, %d reports acknowledged", got, acked5)
	}
	if st, body := s.api("POST", "/api/v1/devices", "", map[string]string{"id": "after", "kind": "lock", "name": "x"}); st != http.StatusCreated {
		t.Fatalf("create a device after space returned: %d %s", st, body)
	}

	// The v3 device reconnects and resends what was never acknowledged.
	d3.c.Disconnect(250)
	d3.connect(t)
	diskPoll(t, "v3 resent reports", func() string {
		if n := d3.unsent(); n > 0 {
			return fmt.Sprintf("%d reports not yet acknowledged", n)
		}
		return ""
	})
	if got := s.countEvents("door3", "state"); got != sent3 {
		t.Fatalf("v3 device after reconnecting: %d state events stored, %d reports sent", got, sent3)
	}
}
