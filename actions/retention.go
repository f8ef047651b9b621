package actions

import (
	"strconv"
	"strings"
	"sync"
	"time"
)

// Retention defaults (DESIGN §6): the log keeps 90 days and at most a
// million events. Commands and pictures follow the events that name them.
const (
	DefaultKeepEvents        = 90 * 24 * time.Hour
	DefaultKeepEventsMax     = 1_000_000
	DefaultRetentionInterval = time.Minute
	// MinKeepEvents is the shortest age limit accepted: shorter would
	// take events from under a person still reading today's log.
	MinKeepEvents = time.Hour
	// pruneBatch bounds the deletions of one retention transaction, so
	// the writes queued behind it wait milliseconds, not seconds.
	pruneBatch = 1000
)

// Prune says what one retention transaction deletes: the oldest events
// that are older than Before (zero: none by age) or beyond the newest
// Keep (0: none by count), at most Limit of them, with the pictures of the
// stranger events among them and the commands they name unless a command
// is still sent; then pictures older than Before, within the same Limit.
type Prune struct {
	Before time.Time
	Keep   int
	Limit  int
}

// Pruned is what retention deleted. More reports that a transaction
// stopped at its Limit, so more may be due.
type Pruned struct {
	Events   int
	Commands int
	Pictures int
	More     bool
}

func (p *Pruned) add(q Pruned) {
	p.Events += q.Events
	p.Commands += q.Commands
	p.Pictures += q.Pictures
}

// ParseAge reads a retention age: a Go duration ("36h", "90m") or a whole
// number of days ("90d"). "0" means no age limit.
func ParseAge(s string) (time.Duration, error) {
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(days)
		if err != nil || n < 0 || n > 100*365 {
			return 0, Errorf(EInvalid, "age %q: want a number of days like 90d, or a duration like 36h", s)
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, Errorf(EInvalid, "age %q: want a number of days like 90d, or a duration like 36h", s)
	}
	return d, nil
}

// retention is the background pruning of the log (see StartRetention).
type retention struct {
	maxAge   time.Duration // <= 0: no age limit
	maxCount int
	interval time.Duration

	mu      sync.Mutex
	started bool // guarded by mu
	stopped bool // guarded by mu
	stop    chan struct{}
	done    chan struct{} // closed when the goroutine has returned
}

func newRetention(cfg Config) *retention {
	r := &retention{maxAge: cfg.KeepEvents, maxCount: cfg.KeepEventsMax, interval: cfg.RetentionInterval,
		stop: make(chan struct{}), done: make(chan struct{})}
	if r.maxAge == 0 {
		r.maxAge = DefaultKeepEvents
	}
	if r.maxCount <= 0 {
		r.maxCount = DefaultKeepEventsMax
	}
	if r.interval <= 0 {
		r.interval = DefaultRetentionInterval
	}
	return r
}

// StartRetention prunes the log in the background: at once, then every
// retention interval, until Close. Each pass deletes events past the age
// and count limits (with their pictures, and their commands unless still
// sent) in transactions of at most a thousand deletions, so other writes
// never wait long for it. Calling it again does nothing.
func (s *Service) StartRetention() {
	r := s.retention
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.started || r.stopped {
		return
	}
	r.started = true
	go func() {
		defer close(r.done)
		t := time.NewTicker(r.interval)
		defer t.Stop()
		for {
			s.prune(r.stop)
			select {
			case <-r.stop:
				return
			case <-t.C:
			}
		}
	}()
}

// stopRetention ends the background pruning and waits for the transaction
// under way. Safe to call whether or not it started, and more than once.
func (s *Service) stopRetention() {
	r := s.retention
	r.mu.Lock()
	started := r.started
	if !r.stopped {
		r.stopped = true // never start after a stop
		close(r.stop)
	}
	r.mu.Unlock()
	if started {
		<-r.done
	}
}

// prune runs one retention pass and logs what it deleted; errors are
// logged once per pass.
func (s *Service) prune(stop <-chan struct{}) {
	p, err := s.pruneUntil(stop)
	if p.Events+p.Commands+p.Pictures > 0 {
		s.log.Info("retention pruned the log", "events", p.Events, "commands", p.Commands, "pictures", p.Pictures)
	}
	if err != nil {
		s.log.Error("retention pass failed", "error", err)
	}
}

// PruneOnce runs one retention pass now, by the service's clock, and
// returns what it deleted. The background pass (StartRetention) is the
// same; tests call this to prune at a time of their choosing.
func (s *Service) PruneOnce() (Pruned, error) { return s.pruneUntil(nil) }

// pruneUntil deletes in small transactions until nothing is due, an error,
// or stop closes.
func (s *Service) pruneUntil(stop <-chan struct{}) (Pruned, error) {
	r := s.retention
	q := Prune{Keep: r.maxCount, Limit: pruneBatch}
	if r.maxAge > 0 {
		q.Before = s.now().Add(-r.maxAge)
	}
	var total Pruned
	for {
		var p Pruned
		err := s.update(func(tx Tx) (err error) {
			p, err = tx.PruneEvents(q)
			return err
		})
		if err != nil {
			return total, err
		}
		total.add(p)
		if !p.More {
			return total, nil
		}
		select {
		case <-stop:
			return total, nil
		default:
		}
	}
}
