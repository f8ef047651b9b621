package main

import (
	"io"
	"net/http"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// scrape reads url's metrics with token ("" for none) and parses them.
func scrape(t *testing.T, url, token string) map[string]*dto.MetricFamily {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("scrape %s: status %d: %s", url, resp.StatusCode, b)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse scrape: %v", err)
	}
	return fams
}

// value is the value of the series of family name with labels (a
// counter, gauge, or a histogram's count); -1 when it is missing.
func value(fams map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	f := fams[name]
	if f == nil {
		return -1
	}
next:
	for _, m := range f.Metric {
		for i := 0; i+1 < len(labels); i += 2 {
			found := false
			for _, l := range m.Label {
				if l.GetName() == labels[i] && l.GetValue() == labels[i+1] {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount())
		}
	}
	return -1
}

// TestMetrics scrapes /metrics and checks that a lock round trip, a
// refused login and a device going offline move the right series, and
// that only an admin may scrape.
func TestMetrics(t *testing.T) {
	s := startServerWith(t, "", roundTripTTL)
	url := s.url + "/metrics"

	if st, _ := s.api("GET", "/metrics", "-", nil); st != http.StatusUnauthorized {
		t.Fatalf("scrape without a token: %d, want 401", st)
	}
	member := s.createUser("mia", "member")
	if st, _ := s.api("GET", "/metrics", member, nil); st != http.StatusForbidden {
		t.Fatalf("scrape by a member: %d, want 403", st)
	}

	before := scrape(t, url, testAdminToken)
	for _, name := range []string{"go_goroutines", "process_resident_memory_bytes", "gatehouse_data_file_bytes",
		"gatehouse_event_streams", "gatehouse_mqtt_connections", "gatehouse_store_commit_seconds", "gatehouse_store_commit_writes"} {
		if before[name] == nil {
			t.Errorf("no %s in the scrape", name)
		}
	}
	if got := value(before, "gatehouse_data_file_bytes"); got <= 0 {
		t.Errorf("gatehouse_data_file_bytes = %v", got)
	}
	if got := value(before, "gatehouse_commands_total", "verb", "lock", "status", "done"); got != 0 {
		t.Errorf("lock done before any command = %v, want 0", got)
	}

	door := s.device("door", s.createDevice("door", "lock"), "lock")
	stop := ackLoop(t, door, "door", lockStates)
	var cmd commandJSON
	s.apiJSON("POST", "/api/v1/devices/door/lock?wait=10s", nil, http.StatusOK, &cmd)
	stop()
	if cmd.Status != "done" {
		t.Fatalf("lock: %+v", cmd)
	}
	if st, _ := s.api("GET", "/api/v1/devices", "not-a-token-of-anybody-here", nil); st != http.StatusUnauthorized {
		t.Fatalf("wrong token: %d", st)
	}

	after := scrape(t, url, testAdminToken)
	checks := []struct {
		name   string
		labels []string
		want   float64
	}{
		{"gatehouse_commands_total", []string{"verb", "lock", "status", "done"}, 1},
		{"gatehouse_command_round_trip_seconds", []string{"verb", "lock"}, 1},
		{"gatehouse_devices", []string{"kind", "lock"}, 1},
		{"gatehouse_devices_online", []string{"kind", "lock"}, 1},
		{"gatehouse_devices", []string{"kind", "camera"}, 0},
		{"gatehouse_logins_refused_total", []string{"via", "rest", "reason", "bad_credentials"}, 1},
		{"gatehouse_events_total", []string{"type", "ack"}, 1},
		{"gatehouse_events_total", []string{"type", "command"}, 1},
		{"gatehouse_events_total", []string{"type", "hand_shake"}, 1},
	}
	for _, c := range checks {
		if got := value(after, c.name, c.labels...); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	if got := value(after, "gatehouse_mqtt_connections"); got != 1 {
		t.Errorf("gatehouse_mqtt_connections = %v, want 1 (the door)", got)
	}
	// The door sent a hand-shake and an ack; it was sent a welcome and a command.
	if in, out := value(after, "gatehouse_mqtt_messages_total", "direction", "in"), value(after, "gatehouse_mqtt_messages_total", "direction", "out"); in < 2 || out < 2 {
		t.Errorf("mqtt messages in %v, out %v; want at least 2 each", in, out)
	}
	if got, was := value(after, "gatehouse_store_commit_seconds"), value(before, "gatehouse_store_commit_seconds"); got <= was {
		t.Errorf("store commits %v after, %v before: the lock committed nothing?", got, was)
	}

	door.c.Disconnect(0)
	deadline := time.Now().Add(10 * time.Second)
	for {
		m := scrape(t, url, testAdminToken)
		if value(m, "gatehouse_devices_online", "kind", "lock") == 0 && value(m, "gatehouse_events_total", "type", "offline") == 1 {
			if got := value(m, "gatehouse_devices", "kind", "lock"); got != 1 {
				t.Errorf("known locks after the door left: %v, want 1", got)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("door still online in the metrics 10 s after it disconnected")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestMetricsListener: with --metrics, /metrics is also served there to a
// scraper without a token; /metrics on --http still wants an admin.
func TestMetricsListener(t *testing.T) {
	s := startServerWith(t, "", func(c *config) { c.Metrics = "127.0.0.1:0" })
	fams := scrape(t, "http://"+s.app.metricsAddr()+"/metrics", "")
	if fams["gatehouse_devices"] == nil || fams["go_goroutines"] == nil {
		t.Fatalf("scrape of --metrics lacks series: %d families", len(fams))
	}
	if st, _ := s.api("GET", "/metrics", "-", nil); st != http.StatusUnauthorized {
		t.Fatalf("scrape of --http without a token: %d, want 401", st)
	}
}
