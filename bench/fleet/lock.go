package fleet

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"gatehouse/bench/harness"
)

// lockWait is the ?wait= of every command request: the API's default,
// written out so that both versions wait the same.
const lockWait = "5s"

// lockResult is what one rate of the open-loop lock run saw.
type lockResult struct {
	answers   []time.Duration // 200 and 202, from each request's scheduled start
	done      []time.Duration // 200 with status done
	shed      []time.Duration // 503
	codes     map[int]int     // HTTP status → count; 0 for no answer (a transport error)
	notSent   int             // not started: MaxOutstanding requests were in flight
	statuses  map[string]int  // final status of each command: 200 answers as answered, 202 polled
	pending   []sentCommand   // 202 answers, polled after their time to live
	peakRSS   float64         // MiB
	firstErrs []string        // a few transport errors and unexpected answers, for the log
}

type sentCommand struct {
	ID       string    `json:"id"`
	Status   string    `json:"status"`
	NotAfter time.Time `json:"not_after"`
}

// lockClient is a keep-alive client with room for the connections an
// open loop opens: requests beyond MaxConnsPerHost wait in the client, and
// that wait counts in their time (measured from the scheduled start).
func lockClient() *http.Client {
	return &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{
			MaxIdleConns:        4096,
			MaxIdleConnsPerHost: 4096,
			MaxConnsPerHost:     4096,
			IdleConnTimeout:     90 * time.Second,
		},
	}
}

// openLoop sends rate lock commands a second for dur, round-robin over
// devices, each request in its own goroutine at its scheduled time whatever
// the earlier ones got (open loop: a slow server is not given fewer
// requests), at most maxOut at once; it returns once every request has
// its answer. rss samples the server's memory.
func openLoop(ctx context.Context, client *http.Client, url string, devices []string, rate int, dur time.Duration, maxOut int, rss func() float64) *lockResult {
	res := &lockResult{codes: map[int]int{}, statuses: map[string]int{}}
	var mu sync.Mutex
	var outstanding atomic.Int64
	var wg sync.WaitGroup
	stopRSS := make(chan struct{})
	rssDone := make(chan struct{})
	go func() {
		defer close(rssDone)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			res.peakRSS = max(res.peakRSS, rss())
			select {
			case <-stopRSS:
				return
			case <-t.C:
			}
		}
	}()
	send := func(dev string, sched time.Time) {
		defer wg.Done()
		defer outstanding.Add(-1)
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url+"/api/v1/devices/"+dev+"/lock?wait="+lockWait, nil)
		req.Header.Set("Authorization", "Bearer "+harness.Token)
		resp, err := client.Do(req)
		var body []byte
		if err == nil {
			body, err = io.ReadAll(resp.Body)
			resp.Body.Close()
		}
		took := time.Since(sched)
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			res.codes[0]++
			if len(res.firstErrs) < 3 {
				res.firstErrs = append(res.firstErrs, err.Error())
			}
			return
		}
		res.codes[resp.StatusCode]++
		var cmd sentCommand
		switch resp.StatusCode {
		case http.StatusOK, http.StatusAccepted:
			res.answers = append(res.answers, took)
			if err := json.Unmarshal(body, &cmd); err != nil || cmd.ID == "" {
				res.firstErrs = append(res.firstErrs, fmt.Sprintf("%d answer without a command: %.200s", resp.StatusCode, body))
				return
			}
			if resp.StatusCode == http.StatusAccepted {
				res.pending = append(res.pending, cmd)
				return
			}
			res.statuses[cmd.Status]++
			if cmd.Status == "done" {
				res.done = append(res.done, took)
			}
		case http.StatusServiceUnavailable:
			res.shed = append(res.shed, took)
		default:
			if len(res.firstErrs) < 3 {
				res.firstErrs = append(res.firstErrs, fmt.Sprintf("%d %.200s", resp.StatusCode, body))
			}
		}
	}
	total := int(float64(rate) * dur.Seconds())
	start := time.Now()
	for i := 0; i < total; {
		due := min(total, int(time.Since(start).Seconds()*float64(rate))+1)
		for ; i < due; i++ {
			if outstanding.Load() >= int64(maxOut) {
				res.notSent++
				continue
			}
			outstanding.Add(1)
			wg.Add(1)
			go send(devices[i%len(devices)], start.Add(time.Duration(i)*time.Second/time.Duration(rate)))
		}
		time.Sleep(time.Millisecond)
	}
	wg.Wait()
	close(stopRSS)
	<-rssDone
	slices.Sort(res.answers)
	slices.Sort(res.done)
	slices.Sort(res.shed)
	return res
}

// settle waits until every command answered 202 is past its time to live
// (plus a margin for the server's expiry pass) and reads its final status.
func (r *lockResult) settle(ctx context.Context, client *http.Client, url string) error {
	var last time.Time
	for _, c := range r.pending {
		if c.NotAfter.After(last) {
			last = c.NotAfter
		}
	}
	if wait := time.Until(last.Add(3 * time.Second)); wait > 0 {
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	for _, c := range r.pending {
		var got sentCommand
		if err := get(ctx, client, url+"/api/v1/commands/"+c.ID, &got); err != nil {
			return err
		}
		r.statuses[got.Status]++
	}
	return nil
}
