package actions

import "sync"

// subscriberBuffer is how many events a live subscriber may lag behind
// before it is dropped.
const subscriberBuffer = 256

// Subscription receives every event committed after it was made. Its
// channel is closed when the subscriber fell too far behind (a slow client
// is dropped rather than slowing the server) or the service closed.
type Subscription struct {
	C <-chan Event
	c chan Event
}

// bus hands committed events to live subscribers (SSE streams).
type bus struct {
	mu     sync.Mutex
	subs   map[*Subscription]struct{}
	closed bool
}

// Subscribe starts a subscription; end it with Unsubscribe.
func (s *Service) Subscribe() *Subscription {
	c := make(chan Event, subscriberBuffer)
	sub := &Subscription{C: c, c: c}
	s.bus.mu.Lock()
	defer s.bus.mu.Unlock()
	if s.bus.closed {
		close(c)
		return sub
	}
	if s.bus.subs == nil {
		s.bus.subs = map[*Subscription]struct{}{}
	}
	s.bus.subs[sub] = struct{}{}
	return sub
}

// Unsubscribe ends sub.
func (s *Service) Unsubscribe(sub *Subscription) {
	s.bus.mu.Lock()
	defer s.bus.mu.Unlock()
	if _, ok := s.bus.subs[sub]; ok {
		delete(s.bus.subs, sub)
		close(sub.c)
	}
}

func (b *bus) publish(events []Event) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for sub := range b.subs {
		for _, e := range events {
			select {
			case sub.c <- e:
			default: // too slow: drop it, it can resume with Last-Event-ID
				delete(b.subs, sub)
				close(sub.c)
			}
			if _, ok := b.subs[sub]; !ok {
				break
			}
		}
	}
}

func (b *bus) close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	for sub := range b.subs {
		delete(b.subs, sub)
		close(sub.c)
	}
}

// recordingTx notes the events a transaction appends, so they can be
// published once (and only if) it commits.
type recordingTx struct {
	Tx
	events []Event
}

func (r *recordingTx) AppendEvent(e *Event) error {
	if err := r.Tx.AppendEvent(e); err != nil {
		return err
	}
	r.events = append(r.events, *e)
	return nil
}

// update is store.Update that publishes the events fn appended after the
// commit. Every write of the service goes through it.
func (s *Service) update(fn func(Tx) error) error {
	var rec *recordingTx
	err := s.store.Update(func(tx Tx) error {
		rec = &recordingTx{Tx: tx} // fn may run again: start afresh
		return fn(rec)
	})
	if err == nil && len(rec.events) > 0 {
		s.bus.publish(rec.events)
	}
	return err
}

// EndStreams closes every live subscription now, so that streaming
// requests end before the HTTP server waits for them at shutdown.
func (s *Service) EndStreams() { s.bus.close() }
