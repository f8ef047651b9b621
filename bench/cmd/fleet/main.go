// Command fleet runs the fleet-scale part of the benchmark (package
// bench/fleet) on its own and prints its markdown table: a store of 100k
// devices and 1M events made with a generated export and import, start-up
// on it, list queries at that size and at 10 devices, and REST lock
// latency under an open loop at fixed rates.
//
// Run it from the repository root: it builds the binary there.
//
//	go run ./bench/cmd/fleet [-before /tmp/gatehouse-before] [-devices 100000] [-events 1000000] …
package main

import (
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"gatehouse/bench/fleet"
	"gatehouse/bench/harness"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "fleet:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("fleet", flag.ContinueOnError)
	var o fleet.Options
	bin := fs.String("bin", "", "gatehouse binary to measure (default: build the repository's)")
	before := fs.String("before", "", `a second binary, measured as "gatehouse before" (e.g. /tmp/gatehouse-before)`)
	rates := fs.String("rates", "500,2000,3000", "lock commands per second, comma-separated")
	fs.IntVar(&o.Devices, "devices", 100_000, "devices in the large store")
	fs.IntVar(&o.Events, "events", 1_000_000, "events in the large store")
	fs.IntVar(&o.SmallDevices, "small-devices", 10, "devices in the small store")
	fs.IntVar(&o.SmallEvents, "small-events", 1000, "events in the small store")
	fs.BoolVar(&o.ImportEachRound, "import-each-round", false, "import the large store again in every round")
	fs.IntVar(&o.Rounds, "rounds", 3, "rounds, each running every binary once")
	fs.IntVar(&o.Queries, "queries", 200, "requests per list query")
	fs.DurationVar(&o.QueryBudget, "query-budget", 5*time.Second, "a list query stops early past this")
	fs.DurationVar(&o.RateDuration, "rate-duration", 10*time.Second, "how long each lock rate is held")
	fs.IntVar(&o.LockDevices, "lock-devices", 100, "devices answering lock commands")
	fs.IntVar(&o.MaxOutstanding, "max-outstanding", 20000, "lock requests in flight at once")
	fs.DurationVar(&o.CommandTTL, "command-ttl", 10*time.Second, "--command-ttl of the lock server")
	fs.StringVar(&o.Dir, "dir", "", "work dir, keeps the generated exports for the next run (default: a temporary dir, removed)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	o.Rates = nil
	for _, f := range strings.Split(*rates, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil {
			return fmt.Errorf("-rates: %q is not a number", f)
		}
		o.Rates = append(o.Rates, n)
	}
	if *bin == "" {
		dir, err := os.MkdirTemp("", "gatehouse-fleet-bin-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		if *bin, err = harness.Build(dir); err != nil {
			return err
		}
	}
	o.Bins = []fleet.Bin{{Server: "gatehouse", Path: *bin}}
	if *before != "" {
		o.Bins = append(o.Bins, fleet.Bin{Server: "gatehouse before", Path: *before})
	}
	o.Log = os.Stderr
	start := time.Now()
	samples, err := fleet.Run(o)
	servers := make([]string, len(o.Bins))
	for i, b := range o.Bins {
		servers[i] = b.Server
	}
	if len(samples) > 0 {
		fmt.Printf("fleet: %d rounds in %s\n\n", o.Rounds, time.Since(start).Round(time.Second))
		if terr := harness.Table(os.Stdout, samples, servers, ""); terr != nil {
			return terr
		}
	}
	return err
}
