package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"gatehouse/bench/fleet"
	"gatehouse/bench/harness"
)

// fleetOptions are the flags handed to bench/fleet, which measures the
// gatehouse builds only (REST and the store have no mochi equivalent).
type fleetOptions struct {
	enabled      bool
	devices      int
	events       int
	rates        string
	rateDuration time.Duration
}

func fleetFlags(fs *flag.FlagSet) *fleetOptions {
	o := &fleetOptions{}
	fs.BoolVar(&o.enabled, "fleet", true, "also run bench/fleet on the gatehouse builds: REST lock latency at fixed rates, list and event queries, start-up")
	fs.IntVar(&o.devices, "fleet-devices", 100_000, "devices in bench/fleet's large store")
	fs.IntVar(&o.events, "fleet-events", 1_000_000, "events in bench/fleet's large store")
	fs.StringVar(&o.rates, "fleet-rates", "500,2000,3000", "REST lock commands per second bench/fleet holds in turn, comma-separated")
	fs.DurationVar(&o.rateDuration, "fleet-rate-duration", 10*time.Second, "how long bench/fleet holds each rate")
	return o
}

// runFleet runs bench/fleet on the gatehouse contenders, in the same
// number of rounds.
func runFleet(o *fleetOptions, cs []*contender, rounds int, dir string) ([]harness.Sample, error) {
	var rates []int
	for _, s := range strings.Split(o.rates, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil {
			return nil, fmt.Errorf("-fleet-rates %q: want numbers like 500,2000", o.rates)
		}
		rates = append(rates, n)
	}
	opts := fleet.Options{
		Devices:      o.devices,
		Events:       o.events,
		Rates:        rates,
		RateDuration: o.rateDuration,
		Rounds:       rounds,
		Dir:          filepath.Join(dir, "fleet"),
		Log:          os.Stderr,
	}
	for _, c := range cs {
		if c.kind == kindGatehouse {
			opts.Bins = append(opts.Bins, fleet.Bin{Server: c.name, Path: c.bin})
		}
	}
	progress("bench/fleet: %d builds, %d rounds", len(opts.Bins), rounds)
	return fleet.Run(opts)
}
