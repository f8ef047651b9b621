package actions

import (
	"cmp"
	"sync"
	"time"
)

// subscriberBuffer is how many events a live subscriber may lag behind
// before it is dropped.
const subscriberBuffer = 256

// Subscription receives every event committed after it was made, for one
// principal. Its channel is closed when the subscriber fell too far behind
// (a slow client is dropped rather than slowing the server), when the
// principal's access ended (its token revoked or expired, its user
// deleted) or when the service closed. Access ending also discards the
// events still queued, so nothing committed after that moment is read.
type Subscription struct {
	C   <-chan Event
	c   chan Event
	p   Principal
	err error // why it was refused, if it was
	// expiry ends the subscription when p's token expires.
	expiry *time.Timer
}

// bus hands committed events to live subscribers (SSE streams).
type bus struct {
	mu     sync.Mutex
	subs   map[*Subscription]struct{}
	per    map[string]int // "kind:id" → live subscriptions
	max    int            // per principal
	closed bool
}

// DefaultMaxStreams bounds one person's live event streams.
const DefaultMaxStreams = 16

// Err says why the subscription was refused (ETooMany: the principal has
// too many already), nil for one that was made.
func (sub *Subscription) Err() error { return sub.err }

func subKey(p Principal) string { return p.Kind + ":" + p.ID }

// Subscribe starts a subscription for p; end it with Unsubscribe. It is
// ended by the service when p may no longer read: at once when p's token
// is revoked or p's user deleted, and when the token expires.
func (s *Service) Subscribe(p Principal) *Subscription {
	c := make(chan Event, subscriberBuffer)
	sub := &Subscription{C: c, c: c, p: p}
	s.bus.mu.Lock()
	defer s.bus.mu.Unlock()
	if s.bus.closed || s.Expired(p) {
		close(c)
		return sub
	}
	if s.bus.subs == nil {
		s.bus.subs, s.bus.per = map[*Subscription]struct{}{}, map[string]int{}
	}
	if max := cmp.Or(s.bus.max, DefaultMaxStreams); s.bus.per[subKey(p)] >= max {
		sub.err = Errorf(ETooMany, "too many live event streams for %s (at most %d): close one first", clip(p.ID), max)
		close(c)
		return sub
	}
	s.bus.per[subKey(p)]++
	s.bus.subs[sub] = struct{}{}
	if !p.Expires.IsZero() {
		sub.expiry = time.AfterFunc(p.Expires.Sub(s.now()), func() { s.expireSubscription(sub) })
	}
	return sub
}

// expireSubscription ends sub once its token has expired by the service's
// clock; a timer that fired early (the clock was set back) is armed again.
func (s *Service) expireSubscription(sub *Subscription) {
	s.bus.mu.Lock()
	defer s.bus.mu.Unlock()
	if _, ok := s.bus.subs[sub]; !ok {
		return
	}
	if left := sub.p.Expires.Sub(s.now()); left > 0 {
		sub.expiry.Reset(left)
		return
	}
	s.bus.drop(sub, true)
}

// Unsubscribe ends sub.
func (s *Service) Unsubscribe(sub *Subscription) {
	s.bus.mu.Lock()
	defer s.bus.mu.Unlock()
	if _, ok := s.bus.subs[sub]; ok {
		s.bus.drop(sub, false)
	}
}

// drop removes sub and closes its channel; discard also empties it, for
// a principal whose access ended. The caller holds b.mu.
func (b *bus) drop(sub *Subscription, discard bool) {
	delete(b.subs, sub)
	if b.per[subKey(sub.p)]--; b.per[subKey(sub.p)] <= 0 {
		delete(b.per, subKey(sub.p))
	}
	if sub.expiry != nil {
		sub.expiry.Stop()
	}
	for discard && len(sub.c) > 0 {
		<-sub.c
	}
	close(sub.c)
}

// end ends, at once, the subscriptions of every principal that matches.
func (b *bus) end(match func(Principal) bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for sub := range b.subs {
		if match(sub.p) {
			b.drop(sub, true)
		}
	}
}

func (b *bus) publish(events []Event) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for sub := range b.subs {
		for _, e := range events {
			select {
			case sub.c <- e:
				continue
			default: // too slow: drop it, it can resume with Last-Event-ID
				b.drop(sub, false)
			}
			break
		}
	}
}

func (b *bus) close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	for sub := range b.subs {
		b.drop(sub, false)
	}
}

// recordingTx notes the events a transaction appends, so they can be
// published once (and only if) it commits.
type recordingTx struct {
	Tx
	events []Event
	access bool // a person or a grant changed
}

// The writes that change who may see what: the access index is rebuilt
// after a commit that made one.
func (r *recordingTx) PutUser(u User) error         { r.access = true; return r.Tx.PutUser(u) }
func (r *recordingTx) DeleteUser(name string) error { r.access = true; return r.Tx.DeleteUser(name) }
func (r *recordingTx) PutGrant(g Grant) error       { r.access = true; return r.Tx.PutGrant(g) }
func (r *recordingTx) DeleteGrant(id string) error  { r.access = true; return r.Tx.DeleteGrant(id) }
func (r *recordingTx) DeleteDevice(id string) error { r.access = true; return r.Tx.DeleteDevice(id) }

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
	return s.updateEnding(fn, nil)
}

// updateEnding is update that, once fn has committed and before its events
// are published, ends the subscriptions of the principals that lost their
// access in it (ends, which may read what fn set, says which). So a revoked
// or deleted principal's stream reads nothing from its own revocation on.
func (s *Service) updateEnding(fn func(Tx) error, ends func(Principal) bool) error {
	var rec *recordingTx
	err := s.store.Update(func(tx Tx) error {
		rec = &recordingTx{Tx: tx} // fn may run again: start afresh
		return fn(rec)
	})
	if err == nil && rec.access {
		s.reindex()
	}
	if err == nil && ends != nil {
		s.bus.end(ends)
	}
	if err == nil && len(rec.events) > 0 {
		s.bus.publish(rec.events)
		for _, e := range rec.events {
			s.metrics.EventWritten(e.Type)
		}
	}
	if err == nil {
		s.haCommitted(rec.events, rec.access)
	}
	return err
}

// EndStreams closes every live subscription now, so that streaming
// requests end before the HTTP server waits for them at shutdown.
func (s *Service) EndStreams() { s.bus.close() }
