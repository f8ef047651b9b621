// Command compare runs Gatehouse side by side with a bare mochi server
// that has the same broker settings (bench/cmd/baremochi, the floor) and,
// when it is installed, Mosquitto, and prints a markdown table of medians
// and ratios (issue 14), and a second one for the gatehouse-only
// measurements of bench/fleet:
//
//	go run ./bench/compare                               # from the repository root
//	go run ./bench/compare -bin /tmp/gatehouse-before    # add another gatehouse build as a column
//	go run ./bench/compare -rounds 1 -idle 200 -storm 500 -duration 3s -fleet=false   # a quick look
//	go run ./bench/compare -scenarios storm -storm 19000 -fleet=false                 # the storm
//
// It builds the gatehouse binary and baremochi into a temp dir and measures,
// for every server, in interleaved rounds (each round runs the servers in a
// rotated order) with a fresh server process for every scenario and round:
//
//   - idle memory: -idle devices connect (MQTT 3.1.1), subscribe to
//     todevice/<id> at QoS 1 and shake hands; once the server is idle, the
//     growth of its RssAnon (its own memory, not the mapped data file) per
//     device, and goroutines per device where the server reports them;
//   - connect storm: -storm devices connect and shake hands as fast as
//     -concurrency dialers can, from several loopback source addresses;
//     the time until the last is done, the ones that failed (never
//     retried), and the server's CPU per connect;
//   - report throughput: -reports devices each publish `state locked` /
//     `state unlocked` at QoS 1 with one in flight for -duration; reports
//     per second and server CPU per report; on gatehouse every acknowledged
//     report must then be a stored state event (a loud warning if not);
//   - with -fleet (package bench/fleet): REST lock latency at fixed rates,
//     list and event queries at 100k devices / 1M events, and start-up, for
//     the gatehouse builds only.
//
// On gatehouse a device is a real device (created once per build through
// the REST API; every run starts from a copy of that data dir) and its
// hand-shake is `hand_shake lock` answered by `welcome`; on mochi and
// Mosquitto the same packets flow: the device publishes the same payload to
// its own todevice/<id> and waits for it to come back. Gatehouse runs with
// its connection and message limits raised (1,000,000), since they refuse a
// storm or a flood from one machine by design.
//
// Progress goes to stderr, the table to stdout. Loopback only; every
// server and client is stopped at the end. The MQTT scenarios take about
// 5 minutes with four servers on 2 cores; -fleet adds bench/fleet's time.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"gatehouse/bench/harness"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "compare:", err)
		os.Exit(1)
	}
}

func run(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("compare", flag.ContinueOnError)
	before := fs.String("bin", "", "another gatehouse build, measured as the \"gatehouse before\" column (e.g. /tmp/gatehouse-before)")
	mosquitto := fs.String("mosquitto", "mosquitto", "the mosquitto program; the column is left out when it is not found, or with \"\"")
	rounds := fs.Int("rounds", 3, "interleaved rounds; each table cell is the median of its rounds")
	scenarios := fs.String("scenarios", "idle,storm,reports", "which MQTT scenarios to run, comma-separated")
	var o options
	fs.IntVar(&o.idle, "idle", 2000, "devices in the idle memory scenario")
	fs.IntVar(&o.storm, "storm", 5000, "devices in the connect storm (the issue's figure is 19000)")
	fs.IntVar(&o.reports, "reports", 100, "devices in the report throughput scenario")
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "how long the devices report")
	fs.IntVar(&o.concurrency, "concurrency", 500, "connections being dialled at once")
	fs.IntVar(&o.sources, "sources", 0, "loopback source addresses 127.0.0.1..N the devices connect from (0: one per 5,000 devices)")
	fs.DurationVar(&o.settle, "settle", 3*time.Second, "how long the idle devices stay quiet before memory is read (130s: past a Go server's forced GC, the steady state)")
	fs.DurationVar(&o.timeout, "timeout", 30*time.Second, "how long one device may take for each step (dial, CONNECT, SUBSCRIBE, PUBLISH)")
	fs.DurationVar(&o.phase, "phase", 2*time.Minute, "devices not started connecting this long after a scenario began count as failed, so that a stuck server cannot hold the run")
	fo := fleetFlags(fs)
	fs.SetOutput(os.Stderr)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("no arguments expected, got %q", fs.Args())
	}
	run := map[string]bool{}
	for _, s := range strings.Split(*scenarios, ",") {
		switch s = strings.TrimSpace(s); s {
		case "idle", "storm", "reports":
			run[s] = true
		case "":
		default:
			return fmt.Errorf("-scenarios: unknown %q (want idle, storm, reports)", s)
		}
	}
	if *rounds < 1 || o.idle < 1 || o.storm < 1 || o.reports < 1 || o.duration <= 0 || o.concurrency < 1 ||
		o.sources < 0 || o.sources > 254 || o.settle < 0 || o.timeout <= 0 || o.phase <= 0 {
		return errors.New("-rounds, -idle, -storm, -reports, -duration, -concurrency, -timeout and -phase must be positive, -sources from 0 to 254")
	}
	// Each process holds one end of every connection, plus a few files.
	if err := raiseFileLimit(max(o.idle, o.storm, o.reports) + 256); err != nil {
		return err
	}

	tmp, err := os.MkdirTemp("", "gatehouse-compare-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	progress("building gatehouse and bench/cmd/baremochi")
	bin, err := harness.Build(tmp)
	if err != nil {
		return err
	}
	bare := filepath.Join(tmp, "baremochi")
	build := exec.Command("go", "build", "-o", bare, "./bench/cmd/baremochi")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		return fmt.Errorf("build baremochi (run from the repository root): %w", err)
	}

	b := &bench{o: o}
	var cs []*contender
	gh, err := newGatehouse("gatehouse", bin)
	if err != nil {
		return err
	}
	cs = append(cs, gh)
	if *before != "" {
		c, err := newGatehouse("gatehouse before", *before)
		if err != nil {
			return err
		}
		cs = append(cs, c)
	}
	cs = append(cs, &contender{name: "mochi", kind: kindMochi, bin: bare})
	if *mosquitto != "" {
		if p, err := exec.LookPath(*mosquitto); err == nil {
			cs = append(cs, &contender{name: "mosquitto", kind: kindMosquitto, bin: p})
		} else {
			b.note("mosquitto not found (%v): no mosquitto column", err)
		}
	}
	for _, c := range cs {
		if c.kind == kindGatehouse && len(c.args) < len(limitFlags) {
			b.note("%s knows %d of the %d limit flags; the others were not passed (a build without those limits)", c.name, len(c.args)/2, len(limitFlags))
		}
	}

	started := time.Now()
	var samples []harness.Sample
	need := 0
	for s, n := range map[string]int{"idle": o.idle, "storm": o.storm, "reports": o.reports} {
		if run[s] {
			need = max(need, n)
		}
	}
	for _, c := range cs {
		if err := c.prepare(tmp, need); err != nil {
			return err
		}
	}
	type scenario struct {
		name string
		fn   func(*contender, *running) ([]harness.Sample, error)
	}
	var list []scenario
	for _, s := range []scenario{{"idle", b.idleScenario}, {"storm", b.stormScenario}, {"reports", b.reportScenario}} {
		if run[s.name] {
			list = append(list, s)
		}
	}
	for round := range *rounds {
		for _, s := range list {
			for k := range cs {
				c := cs[(k+round)%len(cs)]
				progress("round %d/%d, %s: %s", round+1, *rounds, s.name, c.name)
				r, err := c.start(tmp)
				if err != nil {
					b.note("round %d, %s, %s: did not start: %v", round+1, s.name, c.name, err)
					progress("  %v", err)
					continue
				}
				got, err := s.fn(c, r)
				r.stop()
				samples = append(samples, got...)
				if err != nil {
					b.note("round %d, %s, %s: %v", round+1, s.name, c.name, err)
					progress("  %v", err)
				}
			}
		}
	}
	mqttTime := time.Since(started)

	var servers []string
	for _, c := range cs {
		servers = append(servers, c.name)
	}
	var fleetSamples []harness.Sample
	if fo.enabled {
		got, err := runFleet(fo, cs, *rounds, tmp)
		fleetSamples = got
		if err != nil {
			b.note("bench/fleet: %v", err)
			progress("bench/fleet: %v", err)
		}
	}
	return b.print(stdout, samples, fleetSamples, servers, args, mqttTime)
}

// print writes the command, the machine, the table and the notes; the
// samples of bench/fleet, which has nothing to measure on mochi or
// mosquitto, go in a second table of the gatehouse builds, where the ratio
// is this build's to the one before it (when -bin gave one).
func (b *bench) print(w io.Writer, samples, fleetSamples []harness.Sample, servers, args []string, took time.Duration) error {
	cmd := "go run ./bench/compare"
	if len(args) > 0 {
		cmd += " " + strings.Join(args, " ")
	}
	fmt.Fprintf(w, "`%s`\n\n", cmd)
	fmt.Fprintf(w, "%s, %d cores (%s), %s %s/%s; sizes: idle %d, storm %d (%d dialers), reports %d devices for %s; MQTT scenarios took %s.\n\n",
		time.Now().Format("2006-01-02"), runtime.NumCPU(), cpuModel(), runtime.Version(), runtime.GOOS, runtime.GOARCH,
		b.o.idle, b.o.storm, b.o.concurrency, b.o.reports, b.o.duration, took.Round(time.Second))
	if err := harness.Table(w, samples, servers, "mochi"); err != nil {
		return err
	}
	fmt.Fprintln(w)
	if len(fleetSamples) > 0 {
		var builds []string
		for _, s := range servers {
			if strings.HasPrefix(s, "gatehouse") {
				builds = append(builds, s)
			}
		}
		floor := ""
		if len(builds) > 1 {
			floor = builds[1]
		}
		if err := harness.Table(w, fleetSamples, builds, floor); err != nil {
			return err
		}
		fmt.Fprintln(w)
	}
	fixed := []string{
		"Each cell is the median of its rounds (n = how many); the last column is gatehouse / mochi (in the bench/fleet table, gatehouse / gatehouse before).",
		"mochi is bench/cmd/baremochi: the same mochi code and capabilities as gatehouse's broker, with an allow-all hook and nothing else (no authentication, store or actions).",
		"Gatehouse runs with --max-connections, --max-pending, --max-pending-per-address, --connect-rate, --connect-burst, --message-rate and --message-burst at 1000000 (those its build knows), so its limits do not refuse the load by design.",
		"Hand-shake: on gatehouse `hand_shake lock` on toserver answered by `welcome` on todevice/<id>; elsewhere the same payload published to the device's own todevice/<id> and received back (one QoS 1 message each way).",
		"Reports on mochi and mosquitto go to fromdevice/<id>, which nobody subscribes to: the broker only acknowledges them; on gatehouse each is a committed event.",
		"Memory is RssAnon (the process's own memory, not the mapped data file), read once the server has used ≤ 10 ms of CPU in 500 ms plus -settle; CPU is utime + stime from /proc, read until the server is idle again for the storm.",
		"An idle Go server keeps the garbage of the connect burst until its next collection, which comes only with the forced GC every 2 minutes: a short -settle reads memory just after the burst, -settle 130s the steady state (same treatment for every server either way).",
		"mosquitto listens with a backlog of 100 (Go servers: net.core.somaxconn), so part of a storm waits for SYN retransmits (1 s); its time is not CPU-bound.",
		"The load generator (a minimal synchronous MQTT 3.1.1 client, no goroutine per connection) runs on the same machine and shares its cores with the server.",
	}
	for _, n := range append(fixed, b.notes...) {
		fmt.Fprintf(w, "- %s\n", n)
	}
	return nil
}

func cpuModel() string {
	data, _ := os.ReadFile("/proc/cpuinfo")
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "model name"); ok {
			return strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
		}
	}
	return "unknown CPU"
}

// raiseFileLimit raises this process's limit on open files to at least
// want; the servers it starts inherit it.
func raiseFileLimit(want int) error {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return fmt.Errorf("getrlimit: %w", err)
	}
	// Always set it: the Go runtime raises its own soft limit at start but
	// gives children the original one unless the program sets it itself.
	target := max(uint64(want), l.Cur)
	if l.Max < target {
		// Only a privileged process may raise the hard limit.
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &syscall.Rlimit{Cur: target, Max: target}); err == nil {
			return nil
		}
		return fmt.Errorf("open files limited to %d, want %d: raise the hard limit (ulimit -Hn) or shrink -idle/-storm", l.Max, want)
	}
	l.Cur = target
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return fmt.Errorf("setrlimit: %w", err)
	}
	return nil
}
