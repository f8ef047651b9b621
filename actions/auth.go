package actions

import (
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"slices"
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
	if err := s.admit(ViaREST, p.ID, remote, p, err, Errorf(EUnauthorized, "invalid or missing bearer token")); err != nil {
		return Principal{}, err
	}
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
	if err := s.admit(ViaMQTT, username, remote, p, err, Errorf(EUnauthorized, "bad username or password")); err != nil {
		return Principal{}, err
	}
	if p.Kind == PrincipalUser {
		s.touchToken(p.Token)
	}
	return p, nil
}

func (s *Service) authenticateMQTT(clientID, username, password string) (Principal, error) {
	if clientID == "" || clientID == "inline" || username == "" || password == "" {
		return Principal{}, Errorf(EUnauthorized, "missing identity")
	}
	if len(username) > maxLoginName {
		return Principal{}, Errorf(EUnauthorized, "username longer than %d bytes", maxLoginName)
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
		return Principal{}, Errorf(EUnauthorized, "client id %q is not a valid device id", clip(clientID))
	}
	if err := idFree(tx, clientID); err != nil {
		return Principal{}, Errorf(EUnauthorized, "%s", ErrorMessage(err))
	}
	return Principal{Kind: PrincipalPair, ID: clientID, Token: hex.EncodeToString(pr.Hash)}, nil
}

// Expired reports whether p logged in with a token that has since expired.
func (s *Service) Expired(p Principal) bool {
	return !p.Expires.IsZero() && !s.now().Before(p.Expires)
}

// RefuseLogin records a login the caller refused for its own reasons (a
// will, a client id in use). These refusals do not count as failed logins,
// but they are recorded at most once per address and reportEvery, with the
// number left out, since anyone can cause them at no cost.
func (s *Service) RefuseLogin(via, username, remote, why string) {
	s.metrics.LoginRefused(via, refusalReason(why))
	if record, note := s.throttle.other(remote); record {
		s.refuse(via, username, remote, why, note)
	}
}

// admit applies the throttle to a login as user from remote whose
// credentials have been checked (checkErr nil: they are right, for p). It
// records what must be recorded and returns nil to let the login in, or the
// error to answer: the throttle's, or wrong for wrong credentials.
func (s *Service) admit(via, user, remote string, p Principal, checkErr, wrong error) error {
	if checkErr != nil {
		p = Principal{}
	}
	v := s.throttle.check(remote, user, p)
	if v.err != nil && v.addrBlock && p.Kind == PrincipalUser && s.learnAddrs(p, AddrKey(remote)) {
		// A person whose addresses were not all in memory (a restart, or
		// forgotten to make room): what the store knows decides.
		v = s.throttle.check(remote, user, p)
	}
	if v.err != nil {
		s.metrics.LoginRefused(via, RefusedThrottled)
		if v.record {
			s.refuse(via, user, remote, v.err.Error(), v.note)
		}
		return v.err
	}
	if checkErr != nil {
		s.metrics.LoginRefused(via, RefusedCredentials)
		note := s.throttle.fail(remote, user)
		s.refuse(via, user, remote, ErrorMessage(checkErr), note)
		return wrong
	}
	s.rememberAddr(p, remote)
	return nil
}

// LoginAddr is an address (IPv4, or an IPv6 /64) an identity logged in
// from correctly, and when that was last written to the store.
type LoginAddr struct {
	Addr string
	At   time.Time
}

// LoginIdentity is the key under which the store keeps the login addresses
// of a person or device: its kind and id, "user:alice" or "device:door1".
func LoginIdentity(kind, id string) string { return kind + ":" + id }

// goodAddrKey is the identity whose good addresses the throttle keeps for
// p, or "" for a principal it keeps none for (a pairing login).
func goodAddrKey(p Principal) string {
	if (p.Kind != PrincipalUser && p.Kind != PrincipalDevice) || !userKey(p.ID) {
		return ""
	}
	return LoginIdentity(p.Kind, p.ID)
}

// learnAddrs loads the addresses the store knows for p into the throttle
// and reports whether addr is one of them.
func (s *Service) learnAddrs(p Principal, addr string) bool {
	key := goodAddrKey(p)
	if key == "" {
		return false
	}
	var addrs []LoginAddr
	if err := s.store.View(func(tx Tx) (err error) {
		addrs, err = tx.LoginAddrs(key)
		return err
	}); err != nil {
		if ErrorCode(err) != ENotFound {
			s.log.Warn("read login addresses", "identity", key, "error", err)
		}
		return false
	}
	s.throttle.learn(key, addrs)
	return slices.ContainsFunc(addrs, func(a LoginAddr) bool { return a.Addr == addr })
}

// rememberAddr records that p logged in correctly from remote: in memory
// always, and in the store when the address is new for p or was last
// written more than goodEvery ago, so a busy or reconnecting client costs
// one write per address and hour, and none after a restart if the store
// already knows. It is best effort: a failing store must not refuse a
// correct login.
func (s *Service) rememberAddr(p Principal, remote string) {
	key := goodAddrKey(p)
	if key == "" {
		return
	}
	addr, stale := s.throttle.ok(remote, key)
	if !stale {
		return
	}
	now := s.now()
	if p.Kind == PrincipalDevice {
		// Off the connect path, with the other devices' (notify.go): a
		// correct device secret never depends on it.
		s.queueLogin(loginWrite{key: key, addr: addr, at: now})
		return
	}
	fresh := func(addrs []LoginAddr) bool { return freshAddr(addrs, addr, now) }
	var stored []LoginAddr
	err := s.store.View(func(tx Tx) (err error) {
		stored, err = tx.LoginAddrs(key)
		return err
	})
	if err != nil && ErrorCode(err) != ENotFound {
		s.log.Warn("read login addresses", "identity", key, "error", err)
		return
	}
	s.throttle.learn(key, stored)
	if fresh(stored) {
		return
	}
	err = s.store.Update(func(tx Tx) error {
		addrs, err := tx.LoginAddrs(key)
		if err != nil && ErrorCode(err) != ENotFound {
			return err
		}
		if fresh(addrs) {
			return nil
		}
		return tx.PutLoginAddrs(key, withAddr(addrs, addr, now))
	})
	if err != nil {
		s.log.Warn("record login address", "identity", key, "error", err)
	}
}

// freshAddr reports whether addrs holds addr written less than goodEvery
// before now.
func freshAddr(addrs []LoginAddr, addr string, now time.Time) bool {
	for _, a := range addrs {
		if a.Addr == addr && now.Sub(a.At) < goodEvery {
			return true
		}
	}
	return false
}

// withAddr is addrs with addr last used at now, newest first, at most
// maxGoodPerUser.
func withAddr(addrs []LoginAddr, addr string, now time.Time) []LoginAddr {
	addrs = slices.DeleteFunc(slices.Clone(addrs), func(a LoginAddr) bool { return a.Addr == addr })
	addrs = append(addrs, LoginAddr{Addr: addr, At: now})
	slices.SortFunc(addrs, func(a, b LoginAddr) int { return b.At.Compare(a.At) })
	return addrs[:min(len(addrs), maxGoodPerUser)]
}

// refuse records a refused login as an event and a log line; note, if any,
// says how many refusals were left out since the last record. It is best
// effort: a failing store must not turn a refusal into something else.
func (s *Service) refuse(via, username, remote, why, note string) {
	username = clip(username)
	detail := fmt.Sprintf("%s from %s: %s", via, clip(remote), why)
	if note != "" {
		detail += " (" + note + ")"
	}
	if err := s.update(func(tx Tx) error {
		return tx.AppendEvent(&Event{Time: s.now(), Type: EventLoginRefused, User: username, Via: via, Detail: detail})
	}); err != nil {
		s.log.Warn("record refused login", "error", err)
	}
	s.log.Info("login refused", "via", via, "username", username, "remote", remote, "reason", why, "note", note)
}

// Throttling limits: past the free failures, each further failure doubles
// the time attempts are refused, up to maxBlock. Strikes are forgotten after
// forgetAfter without a failure.
const (
	freePerAddr = 5
	freePerUser = 10
	maxBlock    = 15 * time.Minute
	forgetAfter = time.Hour
	// reportEvery: while an address or a username is blocked, one refused
	// attempt per reportEvery is recorded (an event and a log line); the
	// others are counted, and the count goes into the next record for that
	// address or name. So a blocked client cannot turn its attempts into
	// disk writes.
	reportEvery = time.Minute
	// maxTracked bounds each strike table and the table of known
	// addresses; maxGoodPerUser bounds the addresses kept for one login.
	maxTracked     = 50_000
	maxGoodPerUser = 16
	// goodEvery: a correct login's address is written to the store when
	// it is new for its identity or was last written goodEvery ago.
	goodEvery = time.Hour
	// maxLoginName is the longest user name or device id (ValidID): a
	// longer name can never log in, is refused without a look-up and is
	// never kept.
	maxLoginName = 64
)

// throttle counts failed logins per source address and per username.
// While an address is over its limit every attempt from it is refused,
// except a correct device secret (never refused by the throttle: 32 random
// bytes are not guessed, so an address block would only lock correct
// devices out behind one misconfigured neighbour) and a correct token of a
// person who has logged in from that address before (known from memory or
// from the store, so it holds across restarts). While a username is over
// its limit, wrong guesses at it are refused and recorded as throttled. So
// an attacker cannot lock a person or a device out, from another address
// or even from behind the same NAT. Credentials are checked first either
// way, and a refused attempt never says whether a person's token or a
// pairing code was right.
//
// Its memory is bounded whatever clients send: an IPv6 address counts as
// its /64 (what one subscriber gets, so a host cannot pose as 2^64
// sources), only names that could log in (maxLoginName) are kept, and each
// table holds at most limit entries (see makeRoom for what goes first).
type throttle struct {
	mu     sync.Mutex
	now    func() time.Time
	limit  int // entries per table: maxTracked, smaller in tests
	byAddr map[string]*strikes
	byUser map[string]*strikes
	// good holds, per identity (LoginIdentity), the addresses it logged
	// in from correctly and when each was last written to the store.
	good  map[string]map[string]time.Time
	nGood int // entries in good, all identities together
}

type strikes struct {
	n     int
	last  time.Time
	until time.Time
	// blocked limits the records of attempts refused by this block; other
	// those of refusals that are not failed logins (RefuseLogin).
	blocked, other report
}

// report limits how often something is recorded: at most once per
// reportEvery, with the number of occurrences left out since.
type report struct {
	at    time.Time // last record
	quiet int       // left out since
}

// due says whether an occurrence at now is recorded; if so, note tells how
// many were left out before it.
func (r *report) due(now time.Time, what string) (bool, string) {
	if !r.at.IsZero() && now.Sub(r.at) < reportEvery {
		r.quiet++
		return false, ""
	}
	r.at = now
	return true, r.take(what)
}

// take returns the note for the occurrences left out, if any, and forgets them.
func (r *report) take(what string) string {
	if r.quiet == 0 {
		return ""
	}
	n := r.quiet
	r.quiet = 0
	return fmt.Sprintf("%d more %s not recorded", n, what)
}

// verdict is what the throttle decides about one attempt.
type verdict struct {
	err       error  // non-nil: refused for throttling
	addrBlock bool   // refused for its address's block
	record    bool   // the refusal is to be recorded
	note      string // what was left out before it
}

func newThrottle(now func() time.Time) *throttle {
	return &throttle{now: now, limit: maxTracked, byAddr: map[string]*strikes{}, byUser: map[string]*strikes{},
		good: map[string]map[string]time.Time{}}
}

// host drops the port of a remote address.
func host(remote string) string {
	if h, _, err := net.SplitHostPort(remote); err == nil {
		return h
	}
	return remote
}

// AddrKey is the source a remote address ("host:port" or a bare host) is
// throttled and limited as: an IPv4 address, or the /64 network of an IPv6
// address, so a host cannot pose as 2^64 sources. The adapters' connection
// limits count by it too.
func AddrKey(remote string) string {
	a, err := netip.ParseAddr(host(remote))
	if err != nil {
		return clip(host(remote))
	}
	a = a.Unmap().WithZone("")
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.String()
	}
	return a.String()
}

// userKey says whether user is a name the throttle keeps strikes for.
func userKey(user string) bool {
	return user != "" && len(user) <= maxLoginName && !strings.EqualFold(user, PairUsername)
}

// check says whether an attempt by user from remote must be refused for
// throttling, and whether the refusal is to be recorded. ok is the
// principal the credentials are right for, zero when they are wrong.
// Right credentials pass a username's block (someone else guessed at that
// name); a device's pass every block; a person's pass an address's block
// when that person has logged in from that address before; a pairing
// code passes no address block.
func (t *throttle) check(remote, user string, ok Principal) verdict {
	if ok.Kind == PrincipalDevice {
		return verdict{}
	}
	valid := ok.Kind != ""
	addr, now := AddrKey(remote), t.now()
	t.mu.Lock()
	defer t.mu.Unlock()
	if key := goodAddrKey(ok); key != "" {
		if _, known := t.good[key][addr]; known {
			return verdict{}
		}
	}
	if s := t.byAddr[addr]; s != nil && now.Before(s.until) {
		v := verdict{err: Errorf(ETooMany, "too many failed logins from %s: retry in %s", addr, s.until.Sub(now).Round(time.Second)), addrBlock: true}
		v.record, v.note = s.blocked.due(now, "throttled attempts from "+addr)
		return v
	}
	if s := t.byUser[user]; !valid && userKey(user) && s != nil && now.Before(s.until) {
		v := verdict{err: Errorf(ETooMany, "too many failed logins for %q: retry in %s", user, s.until.Sub(now).Round(time.Second))}
		v.record, v.note = s.blocked.due(now, fmt.Sprintf("throttled attempts for %q", user))
		return v
	}
	return verdict{}
}

// fail counts a failed login and returns the note of the refusals of its
// address and name left out since their last record.
func (t *throttle) fail(remote, user string) string {
	addr, now := AddrKey(remote), t.now()
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.strike(t.byAddr, addr, freePerAddr, now)
	notes := []string{s.blocked.take("throttled attempts from " + addr)}
	if userKey(user) {
		s := t.strike(t.byUser, user, freePerUser, now)
		notes = append(notes, s.blocked.take(fmt.Sprintf("throttled attempts for %q", user)))
	}
	return strings.Join(slices.DeleteFunc(notes, func(n string) bool { return n == "" }), "; ")
}

// other says whether a refusal from remote that is not a failed login is
// recorded, and with what note.
func (t *throttle) other(remote string) (bool, string) {
	addr, now := AddrKey(remote), t.now()
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.byAddr[addr]
	if s == nil {
		t.makeRoom(t.byAddr, now)
		s = &strikes{}
		t.byAddr[addr] = s
	}
	return s.other.due(now, "refusals from "+addr)
}

// strike counts a failure against key in m and returns its record.
func (t *throttle) strike(m map[string]*strikes, key string, free int, now time.Time) *strikes {
	s := m[key]
	if s == nil {
		t.makeRoom(m, now)
		s = &strikes{}
		m[key] = s
	}
	if now.Sub(s.last) > forgetAfter {
		s.n, s.until = 0, time.Time{}
	}
	s.n++
	s.last = now
	if over := s.n - free; over > 0 {
		block := time.Second << min(over-1, 20)
		s.until = now.Add(min(block, maxBlock))
	}
	return s
}

// makeRoom makes space for a new entry in m once it holds limit entries,
// by dropping an eighth of them at once (so that a flood costs one sort per
// limit/8 new sources, not one scan per attempt). First go the entries that
// block nothing now, the oldest failure first: forgetting one gives a source
// back at most its free attempts, which a new address gets anyway. Only if
// every entry is a running block do blocks go, those ending soonest first:
// to free one of its own sources an attacker must hold limit others blocked
// at once (for a username, about limit × freePerUser refused logins), and
// gains no more than the shortest block left. The other way round, refusing
// every new source while the table is full, would let that same attacker
// lock everyone out, which is worse for a door.
func (t *throttle) makeRoom(m map[string]*strikes, now time.Time) {
	if len(m) < t.limit {
		return
	}
	type entry struct {
		key     string
		running bool
		at      time.Time
	}
	all := make([]entry, 0, len(m))
	for k, s := range m {
		if now.Before(s.until) {
			all = append(all, entry{k, true, s.until})
		} else {
			all = append(all, entry{k, false, s.last})
		}
	}
	slices.SortFunc(all, func(a, b entry) int {
		if a.running != b.running {
			if a.running {
				return 1
			}
			return -1
		}
		return a.at.Compare(b.at)
	})
	for _, e := range all[:len(m)-t.limit+max(t.limit/8, 1)] {
		delete(m, e.key)
	}
}

// ok remembers that identity key logged in from remote. It returns the
// address as the throttle keeps it, and stale: the address is new for key
// or was last written goodEvery ago, so the caller is to write it to the
// store. It counts as written from now on, so concurrent logins write once.
func (t *throttle) ok(remote, key string) (addr string, stale bool) {
	addr, now := AddrKey(remote), t.now()
	t.mu.Lock()
	defer t.mu.Unlock()
	if at, known := t.good[key][addr]; known && now.Sub(at) < goodEvery {
		return addr, false
	}
	t.put(key, addr, now)
	return addr, true
}

// learn merges the addresses the store holds for key into memory.
func (t *throttle) learn(key string, addrs []LoginAddr) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, a := range addrs {
		if at, known := t.good[key][a.Addr]; !known || at.Before(a.At) {
			t.put(key, a.Addr, a.At)
		}
	}
}

// put sets when key's address addr was last written. Each identity keeps
// its maxGoodPerUser latest addresses, and all together limit; past that
// the oldest are forgotten from memory (the store still has each
// identity's latest).
func (t *throttle) put(key, addr string, at time.Time) {
	addrs := t.good[key]
	if _, known := addrs[addr]; known {
		addrs[addr] = at
		return
	}
	if len(addrs) >= maxGoodPerUser {
		var oldest string
		for a, when := range addrs {
			if oldest == "" || when.Before(addrs[oldest]) {
				oldest = a
			}
		}
		delete(addrs, oldest)
		t.nGood--
	}
	if t.nGood >= t.limit {
		t.forgetGood()
	}
	if t.good[key] == nil {
		t.good[key] = map[string]time.Time{}
	}
	t.good[key][addr] = at
	t.nGood++
}

// forgetGood drops the oldest eighth of the known addresses.
func (t *throttle) forgetGood() {
	type entry struct {
		user, addr string
		at         time.Time
	}
	all := make([]entry, 0, t.nGood)
	for u, addrs := range t.good {
		for a, at := range addrs {
			all = append(all, entry{u, a, at})
		}
	}
	slices.SortFunc(all, func(a, b entry) int { return a.at.Compare(b.at) })
	for _, e := range all[:min(len(all), max(t.limit/8, 1))] {
		delete(t.good[e.user], e.addr)
		if len(t.good[e.user]) == 0 {
			delete(t.good, e.user)
		}
		t.nGood--
	}
}

// AuthenticateDevice checks a device's id and secret given over HTTP Basic
// (for picture uploads), throttled like every login.
func (s *Service) AuthenticateDevice(id, secret, remote string) (Principal, error) {
	var p Principal
	err := s.store.View(func(tx Tx) error {
		if len(id) > maxLoginName {
			return Errorf(EUnauthorized, "device id longer than %d bytes", maxLoginName)
		}
		d, err := tx.Device(id)
		if err != nil || secret == "" || subtle.ConstantTimeCompare(d.SecretHash, Hash(secret)) != 1 {
			return Errorf(EUnauthorized, "wrong device id or secret")
		}
		p = Principal{Kind: PrincipalDevice, ID: d.ID}
		return nil
	})
	if err := s.admit(ViaREST, id, remote, p, err, Errorf(EUnauthorized, "wrong device id or secret")); err != nil {
		return Principal{}, err
	}
	return p, nil
}
