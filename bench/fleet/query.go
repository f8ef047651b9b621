package fleet

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"time"
)

// query is one list request measured on an imported store.
type query struct {
	name string // what the Case says
	path string
}

// queries returns the list requests to measure on st: the first page of
// devices, a page from the middle of the list through a cursor (when the
// store has more than two pages), events of one device, events of one
// type and the newest events.
func queries(ctx context.Context, client *http.Client, p *proc, st *store) ([]query, error) {
	qs := []query{{"GET /api/v1/devices?limit=50, first page", "/api/v1/devices?limit=50"}}
	var first struct {
		Items []struct{ ID string }
		Next  string
	}
	if err := get(ctx, client, p.URL+"/api/v1/devices?limit=50", &first); err != nil {
		return nil, err
	}
	if first.Next != "" && st.devices > 100 {
		// A page from the middle: when the API's cursor is the last id of
		// the page (as in both versions so far), seek by the id of the
		// device in the middle; otherwise take the second page the cursor
		// gives.
		cursor := first.Next
		if len(first.Items) == 50 && first.Next == first.Items[49].ID {
			cursor = deviceID(st.devices / 2)
		}
		qs = append(qs, query{"GET /api/v1/devices?limit=50&cursor=…, a page in the middle", "/api/v1/devices?limit=50&cursor=" + cursor})
	}
	return append(qs,
		query{"GET /api/v1/events?device=…&limit=50", "/api/v1/events?limit=50&device=" + deviceID(st.devices/3)},
		query{"GET /api/v1/events?type=state&limit=50", "/api/v1/events?limit=50&type=state"},
		query{"GET /api/v1/events?limit=50, newest", "/api/v1/events?limit=50"},
	), nil
}

// latency sends GET path n times in a row (after one warm-up), stopping
// early once budget has passed with at least 3 answers, and returns the
// times of the answers, sorted.
func latency(ctx context.Context, client *http.Client, url string, n int, budget time.Duration) ([]time.Duration, error) {
	if err := get(ctx, client, url, nil); err != nil {
		return nil, err
	}
	var times []time.Duration
	start := time.Now()
	for len(times) < n && (len(times) < 3 || time.Since(start) < budget) {
		t := time.Now()
		if err := get(ctx, client, url, nil); err != nil {
			return nil, err
		}
		times = append(times, time.Since(t))
	}
	slices.Sort(times)
	return times, nil
}

// quantile is the q-quantile of sorted (nearest rank), in milliseconds.
func quantile(sorted []time.Duration, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q*float64(len(sorted))+0.5) - 1
	i = max(0, min(len(sorted)-1, i))
	return float64(sorted[i]) / float64(time.Millisecond)
}

// size says how big a store is, for a Case: "100k devices, 1M events".
func size(devices, events int) string {
	return fmt.Sprintf("%s devices, %s events", count(devices), count(events))
}

func count(n int) string {
	switch {
	case n >= 1_000_000 && n%100_000 == 0:
		return fmt.Sprintf("%gM", float64(n)/1e6)
	case n >= 1000 && n%100 == 0:
		return fmt.Sprintf("%gk", float64(n)/1e3)
	}
	return fmt.Sprint(n)
}
