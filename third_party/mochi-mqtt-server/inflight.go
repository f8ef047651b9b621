// SPDX-License-Identifier: MIT
// SPDX-FileCopyrightText: 2023 mochi-mqtt, mochi-co
// SPDX-FileContributor: mochi-co

package mqtt

import (
	"sort"
	"sync"
	"sync/atomic"

	"github.com/mochi-mqtt/server/v2/packets"
)

// Inflight is a map of InflightMessage keyed on packet id.
type Inflight struct {
	sync.RWMutex
	internal            map[uint16]packets.Packet // internal contains the inflight packets
	receiveQuota        int32                     // remaining inbound qos quota for flow control
	sendQuota           int32                     // remaining outbound qos quota for flow control
	maximumReceiveQuota int32                     // maximum allowed receive quota
	maximumSendQuota    int32                     // maximum allowed send quota
	// parked holds the ids of outbound messages waiting for send quota
	// (the client's Receive Maximum), in the order they were parked. A
	// parked message keeps its own expiry and holds no quota until it is
	// written (TakeParked). GATEHOUSE PATCH: upstream marks parked messages
	// with Expiry -1, so they never expired, and forgot them once written,
	// so their PUBACK never gave the quota back.
	parked []uint16
}

// NewInflights returns a new instance of an Inflight packets map.
func NewInflights() *Inflight {
	return &Inflight{
		internal: map[uint16]packets.Packet{},
	}
}

// Set adds or updates an inflight packet by packet id.
func (i *Inflight) Set(m packets.Packet) bool {
	i.Lock()
	defer i.Unlock()

	_, ok := i.internal[m.PacketID]
	i.internal[m.PacketID] = m
	return !ok
}

// Get returns an inflight packet by packet id.
func (i *Inflight) Get(id uint16) (packets.Packet, bool) {
	i.RLock()
	defer i.RUnlock()

	if m, ok := i.internal[id]; ok {
		return m, true
	}

	return packets.Packet{}, false
}

// Len returns the size of the inflight messages map.
func (i *Inflight) Len() int {
	i.RLock()
	defer i.RUnlock()
	return len(i.internal)
}

// Clone returns a new instance of Inflight with the same message data.
// This is used when transferring inflights from a taken-over session.
func (i *Inflight) Clone() *Inflight {
	c := NewInflights()
	i.RLock()
	defer i.RUnlock()
	for k, v := range i.internal {
		c.internal[k] = v
	}
	c.parked = append([]uint16(nil), i.parked...)
	return c
}

// GetAll returns all the inflight messages.
func (i *Inflight) GetAll(immediate bool) []packets.Packet {
	i.RLock()
	defer i.RUnlock()

	m := []packets.Packet{}
	for _, v := range i.internal {
		if !immediate || i.isParked(v.PacketID) {
			m = append(m, v)
		}
	}

	sort.Slice(m, func(i, j int) bool {
		return uint16(m[i].Created) < uint16(m[j].Created)
	})

	return m
}

// NextImmediate returns the oldest parked packet (see TakeParked) without
// taking it.
func (i *Inflight) NextImmediate() (packets.Packet, bool) {
	i.RLock()
	defer i.RUnlock()
	for _, id := range i.parked {
		if m, ok := i.internal[id]; ok {
			return m, true
		}
	}
	return packets.Packet{}, false
}

// Park adds an outbound message that must wait for send quota. It returns
// true if the message was not already in flight. GATEHOUSE PATCH.
func (i *Inflight) Park(m packets.Packet) bool {
	i.Lock()
	defer i.Unlock()
	_, ok := i.internal[m.PacketID]
	i.internal[m.PacketID] = m
	if !i.isParked(m.PacketID) {
		i.parked = append(i.parked, m.PacketID)
	}
	return !ok
}

// IsParked reports whether the message with id waits for send quota.
// GATEHOUSE PATCH.
func (i *Inflight) IsParked(id uint16) bool {
	i.RLock()
	defer i.RUnlock()
	return i.isParked(id)
}

func (i *Inflight) isParked(id uint16) bool {
	for _, p := range i.parked {
		if p == id {
			return true
		}
	}
	return false
}

// ParkedLen is the number of messages waiting for send quota.
// GATEHOUSE PATCH.
func (i *Inflight) ParkedLen() int {
	i.RLock()
	defer i.RUnlock()
	return len(i.parked)
}

// TakeParked unparks the oldest parked message that has not expired at now
// (unix seconds) and returns it; it stays in flight until acknowledged.
// Parked messages found expired on the way are deleted and returned in
// dropped. GATEHOUSE PATCH.
func (i *Inflight) TakeParked(now int64) (pk packets.Packet, ok bool, dropped []packets.Packet) {
	i.Lock()
	defer i.Unlock()
	for len(i.parked) > 0 {
		id := i.parked[0]
		i.parked = i.parked[1:]
		m, found := i.internal[id]
		if !found {
			continue
		}
		if Expired(m, now) {
			delete(i.internal, id)
			dropped = append(dropped, m)
			continue
		}
		return m, true, dropped
	}
	i.parked = nil
	return packets.Packet{}, false, dropped
}

// Expired reports whether an outbound message must no longer be written at
// now (unix seconds): from its expiry second on, so that a message is never
// written at or after the time its sender gave. GATEHOUSE PATCH.
func Expired(pk packets.Packet, now int64) bool {
	return pk.Expiry > 0 && now >= pk.Expiry
}

// TakeSendQuota takes one unit of send quota, reporting false when none is
// left. GATEHOUSE PATCH: a compare-and-swap, since publishers, acks and the
// expiry sweep run on different goroutines.
func (i *Inflight) TakeSendQuota() bool {
	for {
		q := atomic.LoadInt32(&i.sendQuota)
		if q <= 0 {
			return false
		}
		if atomic.CompareAndSwapInt32(&i.sendQuota, q, q-1) {
			return true
		}
	}
}

// Delete removes an in-flight message from the map. Returns true if the message existed.
func (i *Inflight) Delete(id uint16) bool {
	i.Lock()
	defer i.Unlock()

	_, ok := i.internal[id]
	delete(i.internal, id)
	for k, p := range i.parked { // GATEHOUSE PATCH
		if p == id {
			i.parked = append(i.parked[:k:k], i.parked[k+1:]...)
			break
		}
	}

	return ok
}

// TakeRecieveQuota reduces the receive quota by 1.
func (i *Inflight) DecreaseReceiveQuota() {
	if atomic.LoadInt32(&i.receiveQuota) > 0 {
		atomic.AddInt32(&i.receiveQuota, -1)
	}
}

// TakeRecieveQuota increases the receive quota by 1.
func (i *Inflight) IncreaseReceiveQuota() {
	if atomic.LoadInt32(&i.receiveQuota) < atomic.LoadInt32(&i.maximumReceiveQuota) {
		atomic.AddInt32(&i.receiveQuota, 1)
	}
}

// ResetReceiveQuota resets the receive quota to the maximum allowed value.
func (i *Inflight) ResetReceiveQuota(n int32) {
	atomic.StoreInt32(&i.receiveQuota, n)
	atomic.StoreInt32(&i.maximumReceiveQuota, n)
}

// DecreaseSendQuota reduces the send quota by 1.
func (i *Inflight) DecreaseSendQuota() {
	i.TakeSendQuota()
}

// IncreaseSendQuota increases the send quota by 1.
func (i *Inflight) IncreaseSendQuota() {
	for { // GATEHOUSE PATCH: compare-and-swap, see TakeSendQuota
		q := atomic.LoadInt32(&i.sendQuota)
		if q >= atomic.LoadInt32(&i.maximumSendQuota) || atomic.CompareAndSwapInt32(&i.sendQuota, q, q+1) {
			return
		}
	}
}

// ResetSendQuota resets the send quota to the maximum allowed value.
func (i *Inflight) ResetSendQuota(n int32) {
	atomic.StoreInt32(&i.sendQuota, n)
	atomic.StoreInt32(&i.maximumSendQuota, n)
}
