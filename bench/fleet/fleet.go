// Package fleet measures gatehouse binaries at fleet scale, side by side:
// a store of 100k devices and 1M events made fast (a generated export and
// `gatehouse import`), start-up on it, list queries on it and on a store of
// 10 devices, and REST lock latency under an open loop at fixed rates with
// 100 devices answering every command. Run interleaves the binaries round
// by round and returns harness.Sample values for harness.Table.
package fleet

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"gatehouse/bench/harness"
)

// Bin is a gatehouse binary to measure: Server names its column in the
// table ("gatehouse", "gatehouse before"), Path is the executable.
type Bin struct {
	Server string
	Path   string
}

// Options says what Run measures; zero fields take the defaults in
// brackets.
type Options struct {
	Bins []Bin // the binaries, in the order each round runs them (required)

	Devices int // devices in the large store [100000]
	Events  int // events in the large store [1000000]
	// SmallDevices and SmallEvents size the small store the list queries
	// are compared with [10, 1000].
	SmallDevices int
	SmallEvents  int
	// ImportEachRound imports the large store again in every round (an
	// import sample per round); otherwise it is imported in the first round
	// only and later rounds start the server on the same data dir.
	ImportEachRound bool

	Rounds int // rounds; each runs every binary once, in Bins order [3]

	Queries     int           // requests per list query [200]
	QueryBudget time.Duration // a query stops early past this, with at least 3 answers [5s]

	Rates          []int         // lock commands per second, each run in turn [500, 2000, 3000]
	RateDuration   time.Duration // how long each rate is held [10s]
	LockDevices    int           // paho devices answering commands [100]
	MaxOutstanding int           // requests in flight at once; more are counted "not sent" [20000]
	CommandTTL     time.Duration // --command-ttl of the lock server [10s]

	Dir string    // work dir; generated exports are cached here across rounds and runs [a new temp dir, removed after]
	Log io.Writer // progress [io.Discard]
}

func (o *Options) defaults() error {
	if len(o.Bins) == 0 {
		return errors.New("fleet: no binaries to measure")
	}
	seen := map[string]bool{}
	for _, b := range o.Bins {
		if b.Server == "" || b.Path == "" {
			return fmt.Errorf("fleet: binary %+v needs a Server name and a Path", b)
		}
		if seen[b.Server] {
			return fmt.Errorf("fleet: server %q given twice", b.Server)
		}
		seen[b.Server] = true
		if _, err := os.Stat(b.Path); err != nil {
			return fmt.Errorf("fleet: %s: %w", b.Server, err)
		}
	}
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	def(&o.Devices, 100_000)
	def(&o.Events, 1_000_000)
	def(&o.SmallDevices, 10)
	def(&o.SmallEvents, 1000)
	def(&o.Rounds, 3)
	def(&o.Queries, 200)
	def(&o.LockDevices, 100)
	def(&o.MaxOutstanding, 20000)
	if o.QueryBudget == 0 {
		o.QueryBudget = 5 * time.Second
	}
	if o.Rates == nil {
		o.Rates = []int{500, 2000, 3000}
	}
	if o.RateDuration == 0 {
		o.RateDuration = 10 * time.Second
	}
	if o.CommandTTL == 0 {
		o.CommandTTL = 10 * time.Second
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
	for _, v := range []int{o.Devices, o.Events, o.SmallDevices, o.SmallEvents, o.Rounds, o.Queries, o.LockDevices, o.MaxOutstanding} {
		if v < 0 {
			return fmt.Errorf("fleet: negative count in options: %d", v)
		}
	}
	if o.Devices < 1 || o.SmallDevices < 1 {
		return errors.New("fleet: a store needs at least one device")
	}
	for _, r := range o.Rates {
		if r < 1 {
			return fmt.Errorf("fleet: rate %d: want at least 1 command/s", r)
		}
	}
	if o.QueryBudget < 0 || o.RateDuration < 0 || o.CommandTTL < time.Second {
		return errors.New("fleet: QueryBudget and RateDuration must be positive, CommandTTL at least 1s")
	}
	return nil
}

// Run measures every binary of o, round by round, and returns the samples:
// one per case, metric, round and binary. A scenario that fails for a
// binary (an older version without some API, say) is logged and skipped,
// and the rest still run; the returned error then lists each failure,
// alongside the samples of everything that worked.
func Run(o Options) ([]harness.Sample, error) {
	if err := o.defaults(); err != nil {
		return nil, err
	}
	if o.Dir == "" {
		dir, err := os.MkdirTemp("", "gatehouse-fleet-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(dir)
		o.Dir = dir
	}
	r := &runner{o: o, ctx: context.Background()}
	bins := make([]*binState, len(o.Bins))
	for i, b := range o.Bins {
		flags, err := flagsOf(b.Path)
		if err != nil {
			return nil, err
		}
		bins[i] = &binState{Bin: b, flags: flags, dir: filepath.Join(o.Dir, slug(b.Server))}
	}
	start := time.Now()
	for round := 1; round <= o.Rounds; round++ {
		for _, b := range bins {
			r.logf("round %d/%d, %s (%s since the start)", round, o.Rounds, b.Server, time.Since(start).Round(time.Second))
			r.round(b, round)
		}
	}
	r.logf("done in %s", time.Since(start).Round(time.Second))
	return r.samples, errors.Join(r.errs...)
}

// binState is what Run keeps of a binary across rounds.
type binState struct {
	Bin
	flags      map[string]bool
	dir        string
	prepared   bool
	prepErr    error
	large      string // the generated exports
	small      string
	largeStore *store
	smallStore *store
}

type runner struct {
	o       Options
	ctx     context.Context
	samples []harness.Sample
	errs    []error
}

func (r *runner) logf(format string, args ...any) {
	fmt.Fprintf(r.o.Log, "fleet: "+format+"\n", args...)
}

func (r *runner) add(b *binState, c, metric string, v float64) {
	r.samples = append(r.samples, harness.Sample{Case: c, Metric: metric, Server: b.Server, Value: v})
}

// fail logs and records a scenario that failed for b.
func (r *runner) fail(b *binState, what string, err error) {
	err = fmt.Errorf("%s: %s: %w", b.Server, what, err)
	r.logf("skip: %v", err)
	r.errs = append(r.errs, err)
}

func slug(s string) string {
	return strings.Map(func(c rune) rune {
		if c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c >= 'A' && c <= 'Z' {
			return c
		}
		return '-'
	}, s)
}

// prepare makes b's template store and the two exports grown from it,
// reusing exports of the same size already in b.dir.
func (r *runner) prepare(b *binState) error {
	if b.prepared {
		return b.prepErr
	}
	b.prepared = true
	// Cached exports are named after the binary (a hash of its bytes) and
	// their size: another binary, whose schema may differ, makes new ones.
	tag, err := hashFile(b.Path)
	if err != nil {
		b.prepErr = err
		return err
	}
	b.large = filepath.Join(b.dir, fmt.Sprintf("export-%s-%d-%d.json", tag, r.o.Devices, r.o.Events))
	b.small = filepath.Join(b.dir, fmt.Sprintf("export-%s-%d-%d.json", tag, r.o.SmallDevices, r.o.SmallEvents))
	if exists(b.large) && exists(b.small) {
		r.logf("%s: reusing %s and %s", b.Server, b.large, b.small)
		return nil
	}
	t := time.Now()
	doc, _, err := template(b.Path, b.flags, filepath.Join(b.dir, "template"))
	if err != nil {
		b.prepErr = err
		return err
	}
	now := time.Now()
	for _, f := range []struct {
		file            string
		devices, events int
	}{{b.small, r.o.SmallDevices, r.o.SmallEvents}, {b.large, r.o.Devices, r.o.Events}} {
		if exists(f.file) {
			continue
		}
		if err := generate(doc, f.file, f.devices, f.events, now); err != nil {
			b.prepErr = err
			return err
		}
	}
	st, _ := os.Stat(b.large)
	r.logf("%s: template and exports made in %s (%s: %.0f MiB)", b.Server, time.Since(t).Round(time.Millisecond), filepath.Base(b.large), float64(st.Size())/(1<<20))
	return nil
}

// hashFile returns the first 12 hex digits of the SHA-256 of a file.
func hashFile(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil))[:12], nil
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// serverArgs are the flags every server of the run gets, where the binary
// has them: retention that keeps the whole generated log, limits wide
// enough for one client address to send thousands of requests and for
// devices to ack thousands of commands a second. --max-commands keeps its
// default so that shedding shows.
func (r *runner) serverArgs() map[string]string {
	return map[string]string{
		"keep-events-max":         fmt.Sprint(2 * max(r.o.Events, 1_000_000)),
		"command-ttl":             r.o.CommandTTL.String(),
		"message-rate":            "1000000",
		"message-burst":           "1000000",
		"http-max-connections":    "16384",
		"http-max-per-address":    "16384",
		"connect-rate":            "10000",
		"connect-burst":           "10000",
		"max-pending-per-address": "1024",
		"max-connections":         fmt.Sprint(max(10000, 2*r.o.LockDevices)),
	}
}

func (r *runner) round(b *binState, round int) {
	if err := r.prepare(b); err != nil {
		if round == 1 {
			r.fail(b, "make the stores", err)
		}
		return
	}
	large := size(r.o.Devices, r.o.Events)
	if b.largeStore == nil || r.o.ImportEachRound {
		st, err := importStore(b.Path, b.large, filepath.Join(b.dir, "large"), r.o.Devices, r.o.Events)
		if err != nil {
			b.largeStore = nil
			r.fail(b, "import "+large, err)
		} else {
			b.largeStore = st
			r.add(b, "import of a generated export, "+large, "s", st.took.Seconds())
			r.logf("%s: imported %s in %s", b.Server, large, st.took.Round(time.Millisecond))
		}
	}
	if b.smallStore == nil {
		st, err := importStore(b.Path, b.small, filepath.Join(b.dir, "small"), r.o.SmallDevices, r.o.SmallEvents)
		if err != nil {
			r.fail(b, "import "+size(r.o.SmallDevices, r.o.SmallEvents), err)
		} else {
			b.smallStore = st
		}
	}
	var largeFirst, smallFirst float64
	if b.largeStore != nil {
		largeFirst = r.storeRound(b, b.largeStore, true)
	}
	if b.smallStore != nil {
		smallFirst = r.storeRound(b, b.smallStore, false)
	}
	if largeFirst > 0 && smallFirst > 0 {
		r.add(b, fmt.Sprintf("GET /api/v1/devices?limit=50, first page: %s devices / %s devices", count(r.o.Devices), count(r.o.SmallDevices)), "× (median ms ratio)", largeFirst/smallFirst)
	}
	r.lockRound(b)
}

// storeRound starts b's server on st, measures its start-up (when
// startup) and the list queries, and returns the median ms of the first
// devices page (0 when it could not be measured).
func (r *runner) storeRound(b *binState, st *store, startup bool) float64 {
	sz := size(st.devices, st.events)
	p, err := serve(b.Path, b.flags, st.data, 5*time.Minute, r.serverArgs())
	if err != nil {
		r.fail(b, "start on "+sz, err)
		return 0
	}
	defer p.stop()
	if startup {
		rss := p.rssAnon()
		r.add(b, "start-up to /readyz 200, "+sz, "s", p.ready.Seconds())
		r.add(b, "RssAnon after start-up, "+sz, "MiB", rss)
		r.logf("%s: ready on %s in %s, RssAnon %.0f MiB", b.Server, sz, p.ready.Round(time.Millisecond), rss)
	}
	client := &http.Client{Timeout: time.Minute}
	qs, err := queries(r.ctx, client, p, st)
	if err != nil {
		r.fail(b, "queries on "+sz, err)
		return 0
	}
	var first float64
	for i, q := range qs {
		times, err := latency(r.ctx, client, p.URL+q.path, r.o.Queries, r.o.QueryBudget)
		if err != nil {
			r.fail(b, q.name+", "+sz, err)
			continue
		}
		c := q.name + ", " + sz
		med, p99 := quantile(times, 0.5), quantile(times, 0.99)
		r.add(b, c, "median ms", med)
		r.add(b, c, "p99 ms", p99)
		r.logf("%s: %s: median %.2f ms, p99 %.2f ms (%d requests)", b.Server, c, med, p99, len(times))
		if i == 0 {
			first = med
		}
	}
	if startup {
		r.add(b, "RssAnon after the list queries, "+sz, "MiB", p.rssAnon())
	}
	return first
}

// lockRound starts b's server on a fresh data dir with LockDevices devices
// connected and answering, and runs the open loop at each rate.
func (r *runner) lockRound(b *binState) {
	what := fmt.Sprintf("REST lock, %d devices answering", r.o.LockDevices)
	data := filepath.Join(b.dir, "lock", "data")
	os.RemoveAll(filepath.Dir(data))
	p, err := serve(b.Path, b.flags, data, time.Minute, r.serverArgs())
	if err != nil {
		r.fail(b, what, err)
		return
	}
	defer p.stop()
	devices := make([]string, r.o.LockDevices)
	for i := range devices {
		devices[i] = fmt.Sprintf("lock%04d", i)
		secret, err := p.CreateDevice(devices[i], "lock")
		if err != nil {
			r.fail(b, what, err)
			return
		}
		c, err := p.Device("", devices[i], secret, "lock", true)
		if err != nil {
			r.fail(b, what, err)
			return
		}
		defer c.Disconnect(0)
	}
	client := lockClient()
	defer client.CloseIdleConnections()
	results := make([]*lockResult, len(r.o.Rates))
	for i, rate := range r.o.Rates {
		t := time.Now()
		results[i] = openLoop(r.ctx, client, p.URL, devices, rate, r.o.RateDuration, r.o.MaxOutstanding, p.rssAnon)
		r.logf("%s: lock at %d/s for %s: answers %v, %d not sent, in %s; errors: %q", b.Server, rate, r.o.RateDuration, results[i].codes, results[i].notSent, time.Since(t).Round(time.Millisecond), results[i].firstErrs)
	}
	for i, rate := range r.o.Rates {
		res := results[i]
		c := fmt.Sprintf("%s, open loop at %d/s for %s", what, rate, r.o.RateDuration)
		if err := res.settle(r.ctx, client, p.URL); err != nil {
			r.fail(b, c+": read the commands answered 202", err)
			continue
		}
		r.add(b, c, "answer p50 ms (200+202)", quantile(res.answers, 0.5))
		r.add(b, c, "answer p99 ms (200+202)", quantile(res.answers, 0.99))
		r.add(b, c, "p99 ms to done (answered 200)", quantile(res.done, 0.99))
		r.add(b, c, "answered 200", float64(res.codes[http.StatusOK]))
		r.add(b, c, "answered 202", float64(res.codes[http.StatusAccepted]))
		r.add(b, c, "answered 503", float64(res.codes[http.StatusServiceUnavailable]))
		if len(res.shed) > 0 {
			r.add(b, c, "503 p99 ms", quantile(res.shed, 0.99))
		}
		other := 0
		for code, n := range res.codes {
			if code != http.StatusOK && code != http.StatusAccepted && code != http.StatusServiceUnavailable {
				other += n
			}
		}
		r.add(b, c, "other answers or no answer", float64(other))
		r.add(b, c, "not sent (max outstanding)", float64(res.notSent))
		for _, s := range []string{"done", "failed", "expired"} {
			r.add(b, c, "commands "+s, float64(res.statuses[s]))
		}
		r.add(b, c, "commands left sent after their TTL", float64(res.statuses["sent"]))
		r.add(b, c, "peak RssAnon MiB", res.peakRSS)
		r.logf("%s: %s: answer p50 %.1f ms p99 %.1f ms, final statuses %v", b.Server, c, quantile(res.answers, 0.5), quantile(res.answers, 0.99), res.statuses)
	}
}
