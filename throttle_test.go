package main

import (
	"encoding/base64"
	"fmt"
	"net"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"
)

// basicFrom posts to the camera upload route with HTTP Basic id:secret from
// loopback address src.
func (s *testServer) basicFrom(src, id, secret string) int {
	s.t.Helper()
	d := &net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	client := &http.Client{Transport: &http.Transport{DialContext: d.DialContext}}
	defer client.CloseIdleConnections()
	req, _ := http.NewRequest("POST", s.url+"/api/v1/strangers", strings.NewReader("x"))
	req.Header.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(id+":"+secret)))
	resp, err := client.Do(req)
	if err != nil {
		s.t.Fatalf("basic from %s: %v", src, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// TestThrottleMemoryBoundedWhateverUsernames: an HTTP Basic id can be
// ~700 KB (1 MB header limit) and an MQTT username 64 KB. No name that long
// can log in, so the throttle keeps nothing of it: 12 addresses × 6 huge
// names once pinned ~50 MB. Nor does the event log keep the name whole.
func TestThrottleMemoryBoundedWhateverUsernames(t *testing.T) {
	s := startServer(t, "")
	before := heapInUse()
	const big = 700 << 10
	for a := 2; a < 14; a++ {
		src := fmt.Sprintf("127.0.0.%d", a)
		for i := 0; i < 6; i++ {
			id := strings.Repeat(string(rune('a'+i)), big-3) + fmt.Sprintf("%03d", a)
			if st := s.basicFrom(src, id, "x"); st != http.StatusUnauthorized && st != http.StatusTooManyRequests {
				t.Fatalf("status %d", st)
			}
		}
	}
	// An MQTT username of 60 KB, a few times.
	for i := 0; i < 6; i++ {
		if c, err := s.tryConnectFrom("127.0.0.20", "x", strings.Repeat("m", 60<<10)+fmt.Sprint(i), "x"); err == nil {
			c.c.Disconnect(0)
			t.Fatal("a huge username logged in")
		}
	}
	after := heapInUse()
	if grew := int64(after) - int64(before); grew > 20<<20 {
		t.Errorf("refused logins pinned %d MiB in the throttle", grew>>20)
	}
	evs := s.events("type=login_refused&limit=1000")
	if len(evs) == 0 {
		t.Fatal("no refused login recorded")
	}
	for _, e := range evs {
		if len(e.User) > 100 || len(e.Detail) > 1000 {
			t.Fatalf("event keeps a huge username: user %d bytes, detail %d bytes", len(e.User), len(e.Detail))
		}
	}
}

// TestBlockedLoginsRecordedOncePerInterval: wrong logins are each recorded
// until their address is blocked; while it is, one refused attempt per
// interval is, and the next record says how many were left out. So a
// blocked client cannot turn its attempts into disk writes.
func TestBlockedLoginsRecordedOncePerInterval(t *testing.T) {
	clk := newClock(tuesday10)
	s := startServerWith(t, "", func(c *config) { c.now = clk.now })
	from := func() []eventJSON {
		var out []eventJSON
		for _, e := range s.events("type=login_refused&limit=1000") {
			if strings.Contains(e.Detail, "127.0.0.9") {
				out = append(out, e)
			}
		}
		return out
	}
	for i := 0; i < 200; i++ {
		s.apiFrom("127.0.0.9", "GET", "/api/v1/devices", "wrong-token")
	}
	// The clock stands still: 5 free failures, the 6th that blocks, and
	// one record of the 194 attempts refused while blocked.
	evs := from()
	if len(evs) != 7 {
		t.Fatalf("200 attempts from one blocked address wrote %d events, want 7", len(evs))
	}
	if !strings.Contains(evs[0].Detail, "too many failed logins") {
		t.Errorf("newest event %q: want the throttled refusal", evs[0].Detail)
	}
	// The block (1 s) ends: the next wrong login is checked and recorded,
	// with the count of those left out.
	clk.add(2 * time.Second)
	if st := s.apiFrom("127.0.0.9", "GET", "/api/v1/devices", "wrong-token"); st != http.StatusUnauthorized {
		t.Fatalf("after the block: %d, want 401", st)
	}
	evs = from()
	if len(evs) != 8 || !strings.Contains(evs[0].Detail, "193 more throttled attempts from 127.0.0.9 not recorded") {
		t.Fatalf("%d events, newest %q: want the count of those left out", len(evs), evs[0].Detail)
	}
	// Blocked again (2 s): left out until a minute after the last record.
	for i := 0; i < 10; i++ {
		s.apiFrom("127.0.0.9", "GET", "/api/v1/devices", "wrong-token")
	}
	if n := len(from()); n != 8 {
		t.Errorf("blocked again within the interval: %d events, want 8", n)
	}
	clk.add(time.Second)
	if st := s.apiFrom("127.0.0.9", "GET", "/api/v1/devices", testAdminToken); st != http.StatusTooManyRequests {
		t.Fatalf("right token from the blocked address: %d, want 429", st)
	}
	clk.add(time.Minute)
	s.apiFrom("127.0.0.9", "GET", "/api/v1/devices", "wrong-token")
	if evs = from(); len(evs) != 9 || !strings.Contains(evs[0].Detail, "11 more throttled attempts") {
		t.Errorf("%d events, newest %q: want 9, with 11 left out", len(evs), evs[0].Detail)
	}
}
