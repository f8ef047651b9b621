package fleet

import (
	"context"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gatehouse/bench/harness"
)

// build compiles the repository's binary for a test.
func build(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "gatehouse")
	if out, err := exec.Command("go", "build", "-o", bin, "gatehouse").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	return bin
}

// TestGeneratedStoreHoldsWhatWasAsked imports a generated export and reads
// it back through the API: every device, each device's share of the
// events, the grants, and the template's own records.
func TestGeneratedStoreHoldsWhatWasAsked(t *testing.T) {
	bin := build(t)
	flags, err := flagsOf(bin)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	doc, _, err := template(bin, flags, filepath.Join(dir, "template"))
	if err != nil {
		t.Fatal(err)
	}
	const devices, events = 1200, 2400 // at most 1000 of any type: one page
	file := filepath.Join(dir, "export.json")
	if err := generate(doc, file, devices, events, time.Now()); err != nil {
		t.Fatal(err)
	}
	st, err := importStore(bin, file, filepath.Join(dir, "large"), devices, events)
	if err != nil {
		t.Fatal(err)
	}
	p, err := serve(bin, flags, st.data, time.Minute, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p.stop()
	ctx, client := context.Background(), &http.Client{Timeout: time.Minute}

	type page struct {
		Items []struct{ ID, Device, Type, User string }
		Next  string
	}
	var ids []string
	for cursor := ""; ; {
		var pg page
		if err := get(ctx, client, p.URL+"/api/v1/devices?limit=1000&cursor="+cursor, &pg); err != nil {
			t.Fatal(err)
		}
		for _, d := range pg.Items {
			ids = append(ids, d.ID)
		}
		if cursor = pg.Next; cursor == "" {
			break
		}
	}
	if got, want := len(ids), devices+1; got != want {
		t.Fatalf("devices listed: got %d, want %d (generated + %q)", got, want, tplDevice)
	}
	if ids[0] != deviceID(0) || ids[devices-1] != deviceID(devices-1) || ids[devices] != tplDevice {
		t.Errorf("device ids: got %s … %s, %s", ids[0], ids[devices-1], ids[devices])
	}

	var pg page
	if err := get(ctx, client, p.URL+"/api/v1/events?limit=1000&device="+deviceID(7), &pg); err != nil {
		t.Fatal(err)
	}
	if got, want := len(pg.Items), events/devices; got != want {
		t.Errorf("events of %s: got %d, want %d", deviceID(7), got, want)
	}
	for _, typ := range []string{"state", "command", "ack", "online", "offline", "hand_shake"} {
		var pg page
		if err := get(ctx, client, p.URL+"/api/v1/events?limit=1000&type="+typ, &pg); err != nil {
			t.Fatal(err)
		}
		share := strings.Count(strings.Join(eventMix, " ")+" ", typ+" ")
		// The generated share, and the template's own events of that type.
		if got, want := len(pg.Items), events*share/len(eventMix); got < want || got > want+3 {
			t.Errorf("%s events: got %d, want %d (+ the template's)", typ, got, want)
		}
	}
	var grants page
	if err := get(ctx, client, p.URL+"/api/v1/grants", &grants); err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{tplDevice: true, deviceID(1): true, deviceID(1001): true}
	for _, g := range grants.Items {
		if g.User != grantee || !want[g.Device] {
			t.Errorf("unexpected grant %+v", g)
		}
		delete(want, g.Device)
	}
	if len(want) > 0 {
		t.Errorf("grants missing for %v", want)
	}
}

// TestRunReportsEveryScenario runs the whole benchmark at a tiny size and
// checks that each scenario gave its samples, and that every command sent
// at a rate the server keeps up with ended done.
func TestRunReportsEveryScenario(t *testing.T) {
	bin := build(t)
	samples, err := Run(Options{
		Bins:    []Bin{{Server: "gatehouse", Path: bin}},
		Devices: 300, Events: 3000, SmallDevices: 3, SmallEvents: 30,
		Rounds: 1, Queries: 5, Rates: []int{40}, RateDuration: time.Second,
		LockDevices: 4, Dir: t.TempDir(),
	})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, s := range samples {
		if s.Server != "gatehouse" {
			t.Errorf("sample for server %q", s.Server)
		}
		got[s.Case+" | "+s.Metric] = s.Value
	}
	lock := "REST lock, 4 devices answering, open loop at 40/s for 1s"
	for _, k := range []string{
		"import of a generated export, 300 devices, 3k events | s",
		"start-up to /readyz 200, 300 devices, 3k events | s",
		"RssAnon after start-up, 300 devices, 3k events | MiB",
		"GET /api/v1/devices?limit=50, first page, 300 devices, 3k events | median ms",
		"GET /api/v1/devices?limit=50&cursor=…, a page in the middle, 300 devices, 3k events | p99 ms",
		"GET /api/v1/events?device=…&limit=50, 300 devices, 3k events | median ms",
		"GET /api/v1/events?type=state&limit=50, 3 devices, 30 events | median ms",
		"GET /api/v1/devices?limit=50, first page: 300 devices / 3 devices | × (median ms ratio)",
		lock + " | answer p99 ms (200+202)",
		lock + " | peak RssAnon MiB",
	} {
		if got[k] <= 0 {
			t.Errorf("%s: got %v, want a positive sample", k, got[k])
		}
	}
	// 40 commands in a second, far below --max-commands: none
	// is shed; an answer slower than ?wait= (a busy machine) is a
	// 202 that ends done later.
	for metric, want := range map[string]float64{"commands done": 40, "commands left sent after their TTL": 0, "answered 503": 0} {
		if v, ok := got[lock+" | "+metric]; !ok || v != want {
			t.Errorf("%s: got %v (present %v), want %v", metric, v, ok, want)
		}
	}
	if n := got[lock+" | answered 200"] + got[lock+" | answered 202"]; n != 40 {
		t.Errorf("answered 200 or 202: got %v, want 40", n)
	}
	if t.Failed() {
		var b strings.Builder
		harness.Table(&b, samples, []string{"gatehouse"}, "")
		t.Log("\n" + b.String())
	}
}
