package actions

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// fakeNow is a clock that moves only when told.
type fakeNow struct{ t time.Time }

func (c *fakeNow) now() time.Time { return c.t }

func newTestThrottle(limit int) (*throttle, *fakeNow) {
	clk := &fakeNow{t: time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)}
	t := newThrottle(clk.now)
	t.limit = limit
	return t, clk
}

// blockAddr fails logins from remote until it is blocked.
func blockAddr(t *throttle, remote string) {
	for range freePerAddr + 1 {
		t.fail(remote, "")
	}
}

func TestThrottleTablesBounded(t *testing.T) {
	const limit = 64
	t.Run("LongNamesNotKept", func(t *testing.T) {
		th, _ := newTestThrottle(limit)
		for i := range 1000 {
			th.fail(fmt.Sprintf("192.0.2.%d:1", i%10), strings.Repeat("x", maxLoginName)+fmt.Sprint(i))
		}
		if n := len(th.byUser); n != 0 {
			t.Errorf("%d names longer than %d bytes kept", n, maxLoginName)
		}
		if v := th.check("192.0.2.1:1", strings.Repeat("x", maxLoginName)+"1", Principal{}); v.err == nil {
			t.Error("the address that sent them is not blocked")
		}
	})
	t.Run("IPv6CountsAsItsSlash64", func(t *testing.T) {
		th, _ := newTestThrottle(limit)
		for i := range 1000 {
			th.fail(fmt.Sprintf("[2001:db8:1:2::%x]:1", i), "")
		}
		if n := len(th.byAddr); n != 1 {
			t.Errorf("%d entries for one /64, want 1", n)
		}
		if v := th.check("[2001:db8:1:2:ffff::1]:1", "", Principal{}); v.err == nil {
			t.Error("another host of the /64 is not blocked")
		}
		if v := th.check("[2001:db8:1:3::1]:1", "", Principal{}); v.err != nil {
			t.Errorf("the next /64 is blocked: %v", v.err)
		}
	})
	t.Run("RunningBlockOutlivesAFlood", func(t *testing.T) {
		th, clk := newTestThrottle(limit)
		blockAddr(th, "198.51.100.1:1")
		for i := range 5 * limit {
			th.fail(fmt.Sprintf("10.0.%d.%d:1", i/256, i%256), fmt.Sprintf("user%d", i))
			clk.t = clk.t.Add(time.Millisecond)
		}
		if len(th.byAddr) > limit || len(th.byUser) > limit {
			t.Errorf("tables hold %d addresses and %d names, limit %d", len(th.byAddr), len(th.byUser), limit)
		}
		if v := th.check("198.51.100.1:2", "", Principal{}); v.err == nil {
			t.Error("a flood of single failures unblocked the attacker")
		}
	})
	t.Run("FullOfBlocks", func(t *testing.T) {
		th, clk := newTestThrottle(limit)
		blockAddr(th, "198.51.100.1:1")
		for range 6 { // a long block: ~1 minute
			clk.t = clk.t.Add(maxBlock)
			th.fail("198.51.100.1:1", "")
		}
		for i := range 3 * limit {
			blockAddr(th, fmt.Sprintf("10.0.%d.%d:1", i/256, i%256))
		}
		if len(th.byAddr) > limit {
			t.Errorf("table holds %d addresses, limit %d", len(th.byAddr), limit)
		}
		if v := th.check("198.51.100.1:2", "", Principal{}); v.err == nil {
			t.Error("shorter blocks pushed out the longest one")
		}
	})
	t.Run("GoodAddresses", func(t *testing.T) {
		th, clk := newTestThrottle(limit)
		for i := range 100 {
			clk.t = clk.t.Add(time.Second)
			th.ok(fmt.Sprintf("10.1.0.%d:1", i), "user:alice")
		}
		if n := len(th.good["user:alice"]); n != maxGoodPerUser {
			t.Errorf("alice keeps %d addresses, want %d", n, maxGoodPerUser)
		}
		for i := range 10 * limit {
			clk.t = clk.t.Add(time.Second)
			th.ok(fmt.Sprintf("10.2.%d.%d:1", i/256, i%256), fmt.Sprintf("user:u%d", i))
		}
		total := 0
		for _, addrs := range th.good {
			total += len(addrs)
		}
		if total > limit || total != th.nGood {
			t.Errorf("%d known addresses (counted %d), limit %d", total, th.nGood, limit)
		}
		// The rule that matters holds for what is kept: a right login from
		// an address its user used before passes that address's block.
		last := fmt.Sprintf("10.2.%d.%d:1", (10*limit-1)/256, (10*limit-1)%256)
		blockAddr(th, last)
		if v := th.check(last, fmt.Sprintf("u%d", 10*limit-1), Principal{Kind: PrincipalUser, ID: fmt.Sprintf("u%d", 10*limit-1)}); v.err != nil {
			t.Errorf("known user from its own blocked address: %v", v.err)
		}
		if v := th.check(last, "alice", Principal{Kind: PrincipalUser, ID: "alice"}); v.err == nil {
			t.Error("another user passed the block")
		}
	})
}

func TestThrottleRecordsOncePerInterval(t *testing.T) {
	th, clk := newTestThrottle(maxTracked)
	const from = "203.0.113.5:1"
	blockAddr(th, from)
	recorded := 0
	for range 50 {
		v := th.check(from, "", Principal{})
		if v.err == nil {
			t.Fatal("blocked address let through")
		}
		if v.record {
			recorded++
		}
	}
	if recorded != 1 {
		t.Errorf("%d of 50 blocked attempts recorded, want 1", recorded)
	}
	clk.t = clk.t.Add(reportEvery)
	th.fail(from, "") // not blocked at the moment: a checked failure
	if v := th.check(from, "", Principal{}); !v.record || v.note != "" {
		t.Errorf("first refusal a minute later: record %v, note %q", v.record, v.note)
	}
	// Other refusals (a will) are limited the same way, on their own.
	if rec, _ := th.other(from); !rec {
		t.Error("first refusal of another kind not recorded")
	}
	for range 3 {
		if rec, _ := th.other(from); rec {
			t.Error("another refusal recorded within the interval")
		}
	}
	clk.t = clk.t.Add(reportEvery)
	if rec, note := th.other(from); !rec || note != "3 more refusals from 203.0.113.5 not recorded" {
		t.Errorf("after the interval: record %v, note %q", rec, note)
	}
}
