package actions

import (
	"strings"
	"time"
)

// Metrics receives what the service counts, for monitoring: main wires an
// implementation backed by Prometheus (web/metrics.go), so the domain keeps
// no monitoring library. Methods are called on hot paths and must be quick
// and safe for concurrent use. Label values passed here are bounded sets
// (verbs, statuses, event types, ways and reasons), never ids.
type Metrics interface {
	// CommandFinished counts a command reaching its final status (done,
	// failed, expired); answered is the time from sent to the device's
	// answer, zero when there was none (expired, or never sent).
	CommandFinished(verb, status string, answered time.Duration)
	// EventWritten counts an event committed to the log.
	EventWritten(typ string)
	// LoginRefused counts a refused login by way (rest, mqtt) and reason
	// (see RefusalReasons), every one, also those not recorded as events.
	LoginRefused(via, reason string)
	// ScriptRun counts a script run by result: ok, error or stopped.
	ScriptRun(result string)
}

// noMetrics is the Metrics of a service configured without any.
type noMetrics struct{}

func (noMetrics) CommandFinished(string, string, time.Duration) {}
func (noMetrics) EventWritten(string)                           {}
func (noMetrics) LoginRefused(string, string)                   {}
func (noMetrics) ScriptRun(string)                              {}

// Reasons a login is refused, the bounded values of LoginRefused.
const (
	RefusedCredentials = "bad_credentials" // wrong token, secret or pairing code
	RefusedThrottled   = "throttled"       // too many failures from the address or for the name
	RefusedWill        = "will"            // an MQTT will, which is never accepted
	RefusedClientID    = "client_id"       // a client id held by another identity, or too long
	RefusedLimit       = "limit"           // a connection or session limit
	RefusedOther       = "other"
)

// RefusalReasons lists every reason LoginRefused is called with.
var RefusalReasons = []string{RefusedCredentials, RefusedThrottled, RefusedWill, RefusedClientID, RefusedLimit, RefusedOther}

// refusalReason sorts the free-text reason of RefuseLogin into a bounded
// reason.
func refusalReason(why string) string {
	switch {
	case strings.Contains(why, "will"):
		return RefusedWill
	case strings.Contains(why, "client id"):
		return RefusedClientID
	case strings.Contains(why, "limit"), strings.Contains(why, "too many"):
		return RefusedLimit
	case strings.Contains(why, "token of another user"):
		return RefusedCredentials
	}
	return RefusedOther
}

// DeviceCount is how many devices of one kind the server knows and how
// many of them are online now.
type DeviceCount struct {
	Known, Online int
}

// DeviceCounts counts the devices by kind, every kind present (zero
// counts included), for monitoring. It reads the store once.
func (s *Service) DeviceCounts() (map[string]DeviceCount, error) {
	var all []Device
	if err := s.store.View(func(tx Tx) (err error) { all, err = tx.Devices(); return err }); err != nil {
		return nil, err
	}
	out := make(map[string]DeviceCount, len(kindStates))
	for k := range kindStates {
		out[k] = DeviceCount{}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, d := range all {
		c := out[d.Kind]
		c.Known++
		if s.online[d.ID] > 0 {
			c.Online++
		}
		out[d.Kind] = c
	}
	return out, nil
}

// Streams is the number of live event streams (SSE) of every person.
func (s *Service) Streams() int {
	s.bus.mu.Lock()
	defer s.bus.mu.Unlock()
	return len(s.bus.subs)
}
