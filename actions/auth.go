package actions

import (
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"
)

// PrincipalPair is a new device logged in with a pairing code.
const PrincipalPair = "pair"

// PairUsername is the MQTT username of a device pairing itself.
const PairUsername = "pair"

// AuthenticateBearer returns the person a REST bearer token belongs to.
func (s *Service) AuthenticateBearer(token, remote string) (Principal, error) {
	var p Principal
	err := s.store.View(func(tx Tx) (err error) {
		p, err = s.tokenPrincipal(tx, token)
		return err
	})
	if terr := s.throttle.check(remote, p.ID, err == nil); terr != nil {
		s.refuse(ViaREST, p.ID, remote, terr.Error())
		return Principal{}, terr
	}
	if err != nil {
		s.throttle.fail(remote, "")
		s.refuse(ViaREST, "", remote, ErrorMessage(err))
		return Principal{}, Errorf(EUnauthorized, "invalid or missing bearer token")
	}
	s.throttle.ok(remote, p.ID)
	s.touchToken(p.Token)
	return p, nil
}

func (s *Service) tokenPrincipal(tx Tx, token string) (Principal, error) {
	if token == "" {
		return Principal{}, Errorf(EUnauthorized, "no token")
	}
	t, err := tx.TokenByHash(Hash(token))
	if err != nil {
		return Principal{}, Errorf(EUnauthorized, "unknown token")
	}
	if !t.Expires.IsZero() && !s.now().Before(t.Expires) {
		return Principal{}, Errorf(EUnauthorized, "token expired")
	}
	u, err := tx.User(t.User)
	if err != nil {
		return Principal{}, Errorf(EUnauthorized, "token of a deleted user")
	}
	return Principal{Kind: PrincipalUser, ID: u.Name, Role: u.Role, Token: t.ID, Expires: t.Expires}, nil
}

// touchToken records when a token was last used, at most once a minute per
// token so that busy clients do not turn every request into a write.
func (s *Service) touchToken(id string) {
	now := s.now()
	var stale bool
	_ = s.store.View(func(tx Tx) error {
		t, err := tx.Token(id)
		stale = err == nil && now.Sub(t.LastUsed) >= time.Minute
		return nil
	})
	if !stale {
		return
	}
	_ = s.update(func(tx Tx) error {
		t, err := tx.Token(id)
		if err != nil || now.Sub(t.LastUsed) < time.Minute {
			return err
		}
		t.LastUsed = now
		return tx.PutToken(t)
	})
}

// AuthenticateMQTT checks an MQTT CONNECT. A device logs in with client id =
// username = device id and its secret as password; a person with their name
// and an API token; a new device with username "pair", a pairing code as
// password and the id it wants as client id. Everything else is refused, and
// so is the client id "inline", which mochi reserves for its own client.
// Repeated failures from one address or for one username are throttled.
func (s *Service) AuthenticateMQTT(clientID, username string, password []byte, remote string) (Principal, error) {
	p, err := s.authenticateMQTT(clientID, username, string(password))
	if terr := s.throttle.check(remote, username, err == nil); terr != nil {
		s.refuse(ViaMQTT, username, remote, terr.Error())
		return Principal{}, terr
	}
	if err != nil {
		s.throttle.fail(remote, username)
		s.refuse(ViaMQTT, username, remote, ErrorMessage(err))
		return Principal{}, Errorf(EUnauthorized, "bad username or password")
	}
	s.throttle.ok(remote, username)
	if p.Kind == PrincipalUser {
		s.touchToken(p.Token)
	}
	return p, nil
}

func (s *Service) authenticateMQTT(clientID, username, password string) (Principal, error) {
	if clientID == "" || clientID == "inline" || username == "" || password == "" {
		return Principal{}, Errorf(EUnauthorized, "missing identity")
	}
	var p Principal
	err := s.store.View(func(tx Tx) error {
		if username == PairUsername {
			var err error
			p, err = s.pairPrincipal(tx, clientID, password)
			return err
		}
		if clientID == username {
			d, err := tx.Device(username)
			if err == nil {
				if subtle.ConstantTimeCompare(d.SecretHash, Hash(password)) != 1 {
					return Errorf(EUnauthorized, "wrong device secret")
				}
				p = Principal{Kind: PrincipalDevice, ID: d.ID}
				return nil
			}
			if ErrorCode(err) != ENotFound {
				return err
			}
		}
		tp, err := s.tokenPrincipal(tx, password)
		if err != nil {
			return err
		}
		if tp.ID != username {
			return Errorf(EUnauthorized, "token of another user")
		}
		// A device's client id is its own: taking it would take over the
		// device's session and what is queued for it.
		if _, err := tx.Device(clientID); err == nil {
			return Errorf(EUnauthorized, "client id %q belongs to a device", clip(clientID))
		}
		p = tp
		return nil
	})
	return p, err
}

// pairPrincipal checks a pairing login: the code must exist, be unspent
// and unexpired, and the client id must be a free device id.
func (s *Service) pairPrincipal(tx Tx, clientID, code string) (Principal, error) {
	pr, err := tx.PairingByHash(Hash(normalizeCode(code)))
	if err != nil {
		return Principal{}, Errorf(EUnauthorized, "unknown or already used pairing code")
	}
	if !s.now().Before(pr.Expires) {
		return Principal{}, Errorf(EUnauthorized, "pairing code expired")
	}
	if !ValidID(clientID) {
		return Principal{}, Errorf(EUnauthorized, "client id %q is not a valid device id", clientID)
	}
	if _, err := tx.Device(clientID); err == nil {
		return Principal{}, Errorf(EUnauthorized, "device id %q is taken", clientID)
	} else if ErrorCode(err) != ENotFound {
		return Principal{}, err
	}
	return Principal{Kind: PrincipalPair, ID: clientID, Token: hex.EncodeToString(pr.Hash)}, nil
}

// Expired reports whether p logged in with a token that has since expired.
func (s *Service) Expired(p Principal) bool {
	return !p.Expires.IsZero() && !s.now().Before(p.Expires)
}

// RefuseLogin records a login the caller refused for its own reasons.
func (s *Service) RefuseLogin(via, username, remote, why string) {
	s.refuse(via, username, remote, why)
}

// refuse records a refused login. It is best effort: a failing store must
// not turn a refusal into something else.
func (s *Service) refuse(via, username, remote, why string) {
	username = clip(username)
	detail := fmt.Sprintf("%s from %s: %s", via, remote, why)
	if err := s.update(func(tx Tx) error {
		return tx.AppendEvent(&Event{Time: s.now(), Type: EventLoginRefused, User: username, Via: via, Detail: detail})
	}); err != nil {
		s.log.Warn("record refused login", "error", err)
	}
	s.log.Info("login refused", "via", via, "username", username, "remote", remote, "reason", why)
}

// Throttling limits: past the free failures, each further failure doubles
// the time attempts are refused, up to maxBlock. Strikes are forgotten after
// forgetAfter without a failure.
const (
	freePerAddr = 5
	freePerUser = 10
	maxBlock    = 15 * time.Minute
	forgetAfter = time.Hour
	maxTracked  = 100_000
)

// throttle counts failed logins per source address and per username.
// While an address is over its limit every attempt from it is refused,
// except a correct login of a user who has logged in from that address
// before; while a username is over its limit, wrong guesses at it are
// refused and recorded as throttled. So an attacker cannot lock a person out,
// from another address or even from behind the same NAT. Credentials are
// checked first either way, but a refused attempt never says whether they
// were right.
type throttle struct {
	mu     sync.Mutex
	now    func() time.Time
	byAddr map[string]*strikes
	byUser map[string]*strikes
	good   map[string]map[string]time.Time // user → address → last success
}

type strikes struct {
	n     int
	last  time.Time
	until time.Time
}

func newThrottle(now func() time.Time) *throttle {
	return &throttle{now: now, byAddr: map[string]*strikes{}, byUser: map[string]*strikes{},
		good: map[string]map[string]time.Time{}}
}

// host drops the port of a remote address.
func host(remote string) string {
	if h, _, err := net.SplitHostPort(remote); err == nil {
		return h
	}
	return remote
}

// check says whether an attempt by user from remote, whose credentials are
// valid or not, must be refused for throttling. Valid credentials pass a
// username's block (someone else guessed at that name) and pass an
// address's block when the user has logged in from that address before.
func (t *throttle) check(remote, user string, valid bool) error {
	addr, now := host(remote), t.now()
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, known := t.good[user][addr]; valid && known && user != PairUsername {
		return nil
	}
	if s := t.byAddr[addr]; s != nil && now.Before(s.until) {
		return Errorf(ETooMany, "too many failed logins from %s: retry in %s", addr, s.until.Sub(now).Round(time.Second))
	}
	if s := t.byUser[user]; !valid && user != "" && s != nil && now.Before(s.until) {
		return Errorf(ETooMany, "too many failed logins for %q: retry in %s", user, s.until.Sub(now).Round(time.Second))
	}
	return nil
}

func (t *throttle) fail(remote, user string) {
	addr, now := host(remote), t.now()
	t.mu.Lock()
	defer t.mu.Unlock()
	t.prune(now)
	strike(t.byAddr, addr, freePerAddr, now)
	if user != "" && !strings.EqualFold(user, PairUsername) {
		strike(t.byUser, user, freePerUser, now)
	}
}

func strike(m map[string]*strikes, key string, free int, now time.Time) {
	s := m[key]
	if s == nil || now.Sub(s.last) > forgetAfter {
		s = &strikes{}
		m[key] = s
	}
	s.n++
	s.last = now
	if over := s.n - free; over > 0 {
		block := time.Second << min(over-1, 20)
		s.until = now.Add(min(block, maxBlock))
	}
}

func (t *throttle) ok(remote, user string) {
	addr, now := host(remote), t.now()
	t.mu.Lock()
	defer t.mu.Unlock()
	if user == "" || user == PairUsername {
		return
	}
	if len(t.good) >= maxTracked {
		clear(t.good) // forgetting known addresses only makes blocks stricter
	}
	if t.good[user] == nil {
		t.good[user] = map[string]time.Time{}
	}
	t.good[user][addr] = now
}

// prune forgets old strikes once the maps grow large, so that a flood of
// addresses cannot exhaust memory.
func (t *throttle) prune(now time.Time) {
	if len(t.byAddr)+len(t.byUser) < maxTracked {
		return
	}
	for _, m := range []map[string]*strikes{t.byAddr, t.byUser} {
		for k, s := range m {
			if now.Sub(s.last) > forgetAfter || now.After(s.until) {
				delete(m, k)
			}
		}
	}
}

// AuthenticateDevice checks a device's id and secret given over HTTP Basic
// (for picture uploads), throttled like every login.
func (s *Service) AuthenticateDevice(id, secret, remote string) (Principal, error) {
	var p Principal
	err := s.store.View(func(tx Tx) error {
		d, err := tx.Device(id)
		if err != nil || secret == "" || subtle.ConstantTimeCompare(d.SecretHash, Hash(secret)) != 1 {
			return Errorf(EUnauthorized, "wrong device id or secret")
		}
		p = Principal{Kind: PrincipalDevice, ID: d.ID}
		return nil
	})
	if terr := s.throttle.check(remote, id, err == nil); terr != nil {
		s.refuse(ViaREST, id, remote, terr.Error())
		return Principal{}, terr
	}
	if err != nil {
		s.throttle.fail(remote, id)
		s.refuse(ViaREST, id, remote, ErrorMessage(err))
		return Principal{}, Errorf(EUnauthorized, "wrong device id or secret")
	}
	s.throttle.ok(remote, id)
	return p, nil
}
