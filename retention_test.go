package main

import (
	"io"
	"strings"
	"testing"
	"time"
)

// TestRetentionFlags checks --keep-events and --keep-events-max and their
// variables: the defaults, days, "0" for no age limit, and clear refusals.
func TestRetentionFlags(t *testing.T) {
	parse := func(args []string, env map[string]string) (config, error) {
		return parseConfig("serve", args, func(k string) string { return env[k] }, io.Discard)
	}
	for _, tc := range []struct {
		name    string
		args    []string
		env     map[string]string
		age     time.Duration
		max     int
		wantErr string
	}{
		{name: "Defaults", age: 90 * 24 * time.Hour, max: 1_000_000},
		{name: "Days", args: []string{"--keep-events", "30d", "--keep-events-max", "5000"}, age: 30 * 24 * time.Hour, max: 5000},
		{name: "Duration", args: []string{"--keep-events", "36h"}, age: 36 * time.Hour, max: 1_000_000},
		{name: "NoAgeLimit", args: []string{"--keep-events", "0"}, age: -1, max: 1_000_000},
		{name: "Env", env: map[string]string{"GATEHOUSE_KEEP_EVENTS": "7d", "GATEHOUSE_KEEP_EVENTS_MAX": "100"}, age: 7 * 24 * time.Hour, max: 100},
		{name: "FlagBeatsEnv", args: []string{"--keep-events", "2d"}, env: map[string]string{"GATEHOUSE_KEEP_EVENTS": "7d"}, age: 48 * time.Hour, max: 1_000_000},
		{name: "NoUnit", args: []string{"--keep-events", "90"}, wantErr: `--keep-events "90"`},
		{name: "TooShort", args: []string{"--keep-events", "10m"}, wantErr: "at least 1h"},
		{name: "Negative", args: []string{"--keep-events", "-1d"}, wantErr: "--keep-events"},
		{name: "MaxZero", args: []string{"--keep-events-max", "0"}, wantErr: "--keep-events-max 0: want a positive number"},
		{name: "MaxNotANumber", args: []string{"--keep-events-max", "lots"}, wantErr: "invalid value"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := parse(tc.args, tc.env)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Errorf("parse %v = %v, want an error containing %q", tc.args, err, tc.wantErr)
				}
				return
			}
			if err != nil || cfg.KeepEvents != tc.age || cfg.KeepEventsMax != tc.max {
				t.Errorf("parse %v = %s, %d, %v; want %s, %d", tc.args, cfg.KeepEvents, cfg.KeepEventsMax, err, tc.age, tc.max)
			}
		})
	}
}
