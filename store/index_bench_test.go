package store

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"go.etcd.io/bbolt"

	"gatehouse/actions"
)

// fillLog writes n events straight into the buckets (with their index
// entries) in big transactions: 1,000 devices, a state report most of the
// time, a command every 20th event, a person on commands. It takes seconds
// where n AppendEvents would take minutes.
func fillLog(b *testing.B, db *DB, n int) {
	b.Helper()
	const batch = 200_000
	for start := 0; start < n; start += batch {
		err := db.bolt.Update(func(btx *bbolt.Tx) error {
			events := btx.Bucket(bucketEvents)
			events.FillPercent = 1 // keys only grow: pack the pages
			for _, ix := range eventIndexes {
				btx.Bucket(ix.bucket).FillPercent = 0.9
			}
			for i := start; i < min(n, start+batch); i++ {
				seq, err := events.NextSequence()
				if err != nil {
					return err
				}
				r := eventRecord{Time: ixT0.Add(time.Duration(i) * time.Second), Type: "state", Device: fmt.Sprintf("dev%04d", i%1000), Detail: "locked"}
				if i%20 == 0 {
					r.Type, r.User, r.Command, r.Via = "command", "alice", fmt.Sprintf("cmd%d", i), "rest"
				}
				k := append(u64(uint64(r.Time.UnixNano())), u64(seq)...)
				v, err := json.Marshal(r)
				if err != nil {
					return err
				}
				if err := events.Put(k, v); err != nil {
					return err
				}
				if err := putIndexes(btx, k, &r); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkEventQuery lists a page of 50 events by device, by type, by
// person and by device and type from a log of 1M events, through the
// indexes and, for comparison, by the walk of the log that was the only
// way before them (Scan: seconds per page, so give it few iterations).
//
//	go test ./store -run '^$' -bench 'EventQuery/Indexed|DevicePage' -benchtime 2000x
//	go test ./store -run '^$' -bench 'EventQuery/Scan' -benchtime 3x
func BenchmarkEventQuery(b *testing.B) {
	const n = 1_000_000
	db, err := Open(filepath.Join(b.TempDir(), "gatehouse.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	fillLog(b, db, n)
	for _, tc := range []struct {
		name string
		q    actions.EventQuery
	}{
		{"Device", actions.EventQuery{Device: "dev0042"}},
		{"Type", actions.EventQuery{Type: "command"}},
		{"User", actions.EventQuery{User: "alice"}},
		{"DeviceAndType", actions.EventQuery{Device: "dev0040", Type: "command"}},
		{"MemberOf3Devices", actions.EventQuery{Scope: map[string]time.Time{"dev0001": {}, "dev0500": {}, "dev0999": {}}}},
	} {
		for _, scan := range []bool{false, true} {
			name := "Indexed/" + tc.name
			if scan {
				name = "Scan/" + tc.name
			}
			b.Run(name, func(b *testing.B) {
				if scan {
					db.bolt.Update(func(btx *bbolt.Tx) error { return btx.Bucket(bucketMeta).Put(keyIndexBuild, []byte{}) })
					defer db.bolt.Update(func(btx *bbolt.Tx) error { return btx.Bucket(bucketMeta).Delete(keyIndexBuild) })
				}
				q := tc.q
				q.Limit = 50
				for b.Loop() {
					err := db.View(func(tx actions.Tx) error {
						page, _, err := tx.Events(q)
						if err == nil && len(page) != 50 {
							err = fmt.Errorf("page of %d", len(page))
						}
						return err
					})
					if err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// BenchmarkDevicePage lists the first page of 50 devices of 100, a page
// from the middle of 100,000, and all of 10.
func BenchmarkDevicePage(b *testing.B) {
	for _, n := range []int{10, 100, 100_000} {
		b.Run(fmt.Sprintf("devices=%d", n), func(b *testing.B) {
			db, err := Open(filepath.Join(b.TempDir(), "gatehouse.db"))
			if err != nil {
				b.Fatal(err)
			}
			defer db.Close()
			err = db.bolt.Update(func(btx *bbolt.Tx) error {
				bk := btx.Bucket(bucketDevices)
				for i := range n {
					v, _ := json.Marshal(newDeviceRecord(actions.Device{Kind: "lock", Name: "Door", State: "locked", Created: ixT0, SecretHash: make([]byte, 32)}))
					if err := bk.Put(fmt.Appendf(nil, "dev%06d", i), v); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				b.Fatal(err)
			}
			cursor := fmt.Sprintf("dev%06d", n/2)
			if n < 1000 {
				cursor = ""
			}
			for b.Loop() {
				err := db.View(func(tx actions.Tx) error {
					page, _, err := tx.DevicePage(cursor, 50)
					if err == nil && len(page) != min(50, n) {
						err = fmt.Errorf("page of %d", len(page))
					}
					return err
				})
				if err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
