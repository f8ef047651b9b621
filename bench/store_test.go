package bench

import (
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"gatehouse/actions"
	"gatehouse/store"
)

// BenchmarkEventWrites compares one commit (and fsync) per event with the
// store's group commit, at 1, 16 and 256 concurrent writers. Every write
// returns only after its commit, as an acknowledged device report does.
//
//	go test ./bench -run '^$' -bench EventWrites -benchtime 3000x
func BenchmarkEventWrites(b *testing.B) {
	for _, mode := range []struct {
		name string
		opts store.Options
	}{
		{"OneCommitPerWrite", store.Options{OneCommitPerWrite: true}},
		{"Grouped", store.Options{}},
	} {
		for _, writers := range []int{1, 16, 256} {
			b.Run(fmt.Sprintf("%s/writers=%d", mode.name, writers), func(b *testing.B) {
				db, err := store.OpenWith(filepath.Join(b.TempDir(), "g.db"), mode.opts)
				if err != nil {
					b.Fatal(err)
				}
				defer db.Close()
				var next atomic.Int64
				var wg sync.WaitGroup
				b.ResetTimer()
				start := time.Now()
				for w := 0; w < writers; w++ {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for next.Add(1) <= int64(b.N) {
							err := db.Update(func(tx actions.Tx) error {
								return tx.AppendEvent(&actions.Event{Time: time.Now(), Type: "state", Device: "door", Detail: "locked"})
							})
							if err != nil {
								b.Error(err)
								return
							}
						}
					}()
				}
				wg.Wait()
				b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "writes/s")
			})
		}
	}
}
