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

func heap() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// The throttle keeps a strike record per username, keyed by the whole name
// the client sent: an HTTP Basic id can be ~700 KB (1 MB header limit), an
// MQTT username 64 KB. Nothing is pruned below 100 000 entries, so an
// unauthenticated client with many source addresses (an IPv6 /64) pins
// gigabytes: here 12 addresses × 6 attempts pin ~50 MB.
func TestReviewThrottleKeepsHugeUsernames(t *testing.T) {
	t.Skip("BUG: throttle.byUser keys are unbounded client-sent usernames: unauthenticated memory exhaustion (actions/auth.go strike)")
	s := startServer(t, "")
	before := heap()
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
	after := heap()
	if grew := int64(after) - int64(before); grew > 20<<20 {
		t.Errorf("refused logins pinned %d MiB in the throttle", grew>>20)
	}
}

// Every refused login, including those refused only because the source is
// already blocked, is an fsync'd write and a permanent event: a blocked
// client still turns every attempt into disk writes, and the event log has
// no retention.
func TestReviewThrottledLoginsStillWrite(t *testing.T) {
	t.Skip("BUG: each throttled (already blocked) login is still a committed event: unbounded unauthenticated writes (actions/auth.go refuse)")
	s := startServer(t, "")
	for i := 0; i < 200; i++ {
		s.apiFrom("127.0.0.9", "GET", "/api/v1/devices", "wrong-token")
	}
	n := 0
	for _, e := range s.events("type=login_refused&limit=1000") {
		if strings.Contains(e.Detail, "127.0.0.9") {
			n++
		}
	}
	if n > 20 {
		t.Errorf("200 attempts from one blocked address wrote %d events", n)
	}
}
