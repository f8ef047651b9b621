package actions

import (
	"sync"
	"time"
)

// Notifications and presence leave the connection loop of the device that
// caused them. A device's report returns once its event is committed; who
// is told about it, and how, is the notifier's work, on its own goroutine.
// A connect returns once its counter is up; the online event is committed
// by the presence worker, which takes every presence change queued so far
// into one transaction, so a storm of connects costs a few commits, not
// one each.
//
// Both queues keep order: notifications are published in the order they
// were queued (an app sees "locked" then "unlocked", never the reverse),
// and a device's online and offline events are committed in the order its
// connections came and went. Neither loses anything: when the notification
// queue is full the caller waits for room (back-pressure on the device
// that reports faster than people can be told). The presence queue grows
// with connects and disconnects while the store is slow to commit, which
// the connection limits bound (broker/limit.go); it is taken 1,024 changes
// per transaction.
//
// At shutdown the presence worker stops first (committing and announcing
// what was queued), then the notifier (publishing what was queued); from
// then on a notification is published by its caller, and a presence change
// or login address is dropped (the server is stopping).

// notifyQueue bounds the notifications waiting for the notifier.
const notifyQueue = 4096

// maxPresenceBatch bounds the presence changes committed in one
// transaction.
const maxPresenceBatch = 1024

type notification struct{ device, payload string }

// loginWrite is an address a device logged in from correctly, to keep in
// the store (auth.go rememberAddr).
type loginWrite struct {
	key, addr string
	at        time.Time
}

type presenceChange struct{ device, typ, remote string }

// background runs the notifier and the presence worker.
type background struct {
	notes chan notification

	mu       sync.Mutex
	presence []presenceChange // guarded by mu
	logins   []loginWrite     // guarded by mu
	ended    bool             // guarded by mu: the presence worker is gone
	kick     chan struct{}    // a presence change or login is queued

	// notesMu orders notifyDevice's sends before the notifier's end:
	// senders hold it for reading, the shutdown for writing.
	notesMu    sync.RWMutex
	notesEnded bool // guarded by notesMu

	// busy counts queued work not yet done, for Settle.
	busy counter

	stopPresence, stopNotes       chan struct{}
	presenceStopped, notesStopped chan struct{}
	once                          sync.Once
}

// counter counts work in progress; Wait returns when there is none.
type counter struct {
	mu   sync.Mutex
	n    int
	zero *sync.Cond
}

func (c *counter) Add(d int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n += d
	if c.n == 0 && c.zero != nil {
		c.zero.Broadcast()
	}
}

func (c *counter) Done() { c.Add(-1) }

func (c *counter) Wait() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.zero == nil {
		c.zero = sync.NewCond(&c.mu)
	}
	for c.n > 0 {
		c.zero.Wait()
	}
}

func (s *Service) startBackground() {
	b := &s.bg
	b.notes = make(chan notification, notifyQueue)
	b.kick = make(chan struct{}, 1)
	b.stopPresence, b.stopNotes = make(chan struct{}), make(chan struct{})
	b.presenceStopped, b.notesStopped = make(chan struct{}), make(chan struct{})
	go s.notifier()
	go s.presenceWorker()
}

// stopBackground commits the presence changes and publishes the
// notifications queued so far, then ends both workers: the presence
// worker first, since it notifies.
func (s *Service) stopBackground() {
	b := &s.bg
	b.once.Do(func() {
		close(b.stopPresence)
		<-b.presenceStopped
		b.notesMu.Lock() // no send under way
		b.notesEnded = true
		b.notesMu.Unlock()
		close(b.stopNotes)
	})
	<-b.notesStopped
}

// Settle waits until every notification and presence change queued before
// the call has been handed to the publisher and committed. Shutdown and
// tests use it; nothing on a request path needs to.
func (s *Service) Settle() { s.bg.busy.Wait() }

// notifyDevice queues payload for every person who may see device id.
func (s *Service) notifyDevice(id, payload string) {
	b := &s.bg
	b.notesMu.RLock()
	if b.notesEnded {
		b.notesMu.RUnlock()
		s.fanOut(id, payload) // shutting down: no notifier any more
		return
	}
	b.busy.Add(1)
	b.notes <- notification{id, payload} // waits while the queue is full
	b.notesMu.RUnlock()
}

func (s *Service) notifier() {
	defer close(s.bg.notesStopped)
	for {
		select {
		case n := <-s.bg.notes:
			s.fanOut(n.device, n.payload)
			s.bg.busy.Done()
		case <-s.bg.stopNotes:
			for { // no sender is left (stopBackground)
				select {
				case n := <-s.bg.notes:
					s.fanOut(n.device, n.payload)
					s.bg.busy.Done()
				default:
					return
				}
			}
		}
	}
}

// fanOut publishes payload to every person who may see device id. It
// reads the in-memory access index, no store, and skips people with no app
// listening (when the publisher can tell), so a device report costs
// nothing per person who cannot or does not listen.
func (s *Service) fanOut(id, payload string) {
	if s.pub == nil {
		return
	}
	ix := s.index.cur.Load()
	if ix == nil {
		if err := s.store.View(func(tx Tx) (err error) { ix, err = s.access(tx); return err }); err != nil {
			return
		}
	}
	listens, _ := s.pub.(interface{ Subscribed(topic string) bool })
	for _, p := range s.readers(ix, id) {
		topic := AppTopic(p.ID)
		if listens != nil && !listens.Subscribed(topic) {
			continue
		}
		if err := s.publish(topic, payload, 0); err != nil {
			s.log.Debug("notify", "user", p.ID, "error", err)
		}
	}
}

// queuePresence queues a presence change of device id; the caller holds
// s.mu, which orders the changes of one device.
func (s *Service) queuePresence(id, typ, remote string) {
	s.bg.mu.Lock()
	if s.bg.ended {
		s.bg.mu.Unlock()
		return
	}
	s.bg.busy.Add(1)
	s.bg.presence = append(s.bg.presence, presenceChange{device: id, typ: typ, remote: remote})
	s.bg.mu.Unlock()
	select {
	case s.bg.kick <- struct{}{}:
	default:
	}
}

func (s *Service) presenceWorker() {
	defer close(s.bg.presenceStopped)
	for {
		select {
		case <-s.bg.kick:
			s.recordPresence()
			s.recordLogins()
		case <-s.bg.stopPresence:
			s.bg.mu.Lock()
			s.bg.ended = true // nothing more is queued
			s.bg.mu.Unlock()
			s.recordPresence()
			s.recordLogins()
			return
		}
	}
}

// takeQueued takes up to maxPresenceBatch items from the front of the queue
// q, which mu guards.
func takeQueued[T any](mu *sync.Mutex, q *[]T) []T {
	mu.Lock()
	defer mu.Unlock()
	n := min(len(*q), maxPresenceBatch)
	batch := (*q)[:n:n]
	*q = (*q)[n:]
	if len(*q) == 0 {
		*q = nil // let the array go
	}
	return batch
}

// recordPresence commits the queued presence changes, up to
// maxPresenceBatch per transaction, then logs and announces each. A
// change that cannot be written (a device record that does not decode) is
// taken out and the rest committed without it.
func (s *Service) recordPresence() {
	for {
		batch := takeQueued(&s.bg.mu, &s.bg.presence)
		if len(batch) == 0 {
			return
		}
		written, err := s.writePresence(batch)
		if err != nil && !IsStorageFailure(err) && len(batch) > 1 {
			written = written[:0]
			for _, c := range batch { // one at a time: only the bad one fails
				w, err := s.writePresence([]presenceChange{c})
				if err != nil {
					s.log.Error("record presence", "device_id", c.device, "event", c.typ, "error", err)
				}
				written = append(written, w...)
			}
		} else if err != nil {
			s.log.Error("record presence", "changes", len(batch), "error", err)
		}
		for _, c := range written {
			s.log.Info("device "+c.typ, "device_id", c.device, "remote", c.remote)
			s.notifyDevice(c.device, c.typ+" "+c.device)
		}
		for range batch {
			s.bg.busy.Done()
		}
	}
}

// writePresence commits batch in one transaction and returns the changes
// written: those of devices that still exist. Events take the time of the
// commit, so their keys follow the events committed before them (a stream
// resumed after an id misses none), and a device's last-seen time never
// goes back.
func (s *Service) writePresence(batch []presenceChange) ([]presenceChange, error) {
	var written []presenceChange
	err := s.update(func(tx Tx) error {
		written = written[:0] // fn may run again
		now := s.now()
		for _, c := range batch {
			d, err := tx.Device(c.device)
			if ErrorCode(err) == ENotFound {
				continue // deleted meanwhile
			}
			if err != nil {
				return err
			}
			if now.After(d.LastSeen) {
				d.LastSeen = now
				if err := tx.PutDevice(d); err != nil {
					return err
				}
			}
			if err := tx.AppendEvent(&Event{Time: now, Type: c.typ, Device: c.device, Via: ViaMQTT, Detail: c.remote}); err != nil {
				return err
			}
			written = append(written, c)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return written, nil
}

// queueLogin queues a device's good login address for the presence worker.
func (s *Service) queueLogin(w loginWrite) {
	s.bg.mu.Lock()
	if s.bg.ended {
		s.bg.mu.Unlock()
		return
	}
	s.bg.busy.Add(1)
	s.bg.logins = append(s.bg.logins, w)
	s.bg.mu.Unlock()
	select {
	case s.bg.kick <- struct{}{}:
	default:
	}
}

// recordLogins keeps the queued login addresses, up to maxPresenceBatch
// per transaction, and merges what the store held into the throttle.
func (s *Service) recordLogins() {
	for {
		batch := takeQueued(&s.bg.mu, &s.bg.logins)
		if len(batch) == 0 {
			return
		}
		var stored map[string][]LoginAddr
		err := s.store.Update(func(tx Tx) error {
			stored = map[string][]LoginAddr{} // fn may run again
			for _, w := range batch {
				addrs, ok := stored[w.key]
				if !ok {
					var err error
					addrs, err = tx.LoginAddrs(w.key)
					if err != nil && ErrorCode(err) != ENotFound {
						return err
					}
					stored[w.key] = addrs
				}
				if freshAddr(addrs, w.addr, w.at) {
					continue
				}
				addrs = withAddr(addrs, w.addr, w.at)
				if err := tx.PutLoginAddrs(w.key, addrs); err != nil {
					return err
				}
				stored[w.key] = addrs // a later write of the batch keeps this one
			}
			return nil
		})
		if err != nil {
			s.log.Warn("record login addresses", "identities", len(batch), "error", err)
		}
		for key, addrs := range stored {
			s.throttle.learn(key, addrs)
		}
		for range batch {
			s.bg.busy.Done()
		}
	}
}
