package actions

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// Command time-to-live bounds (DESIGN §4).
const (
	DefaultCommandTTL = 30 * time.Second
	MaxCommandTTL     = 5 * time.Minute
)

// Config holds what a Service needs. Store is required; the rest has
// defaults.
type Config struct {
	Store      Store
	Logger     *slog.Logger
	CommandTTL time.Duration
	// Location is the time zone grant windows are read in (default Local).
	Location *time.Location
	// PairingTTL is how long a pairing code lasts (default 10 minutes).
	PairingTTL time.Duration
	// KeepPictures and PictureBytes are the retention quotas of stranger
	// pictures; LinkTTL is how long a signed picture link works.
	KeepPictures int
	PictureBytes int
	LinkTTL      time.Duration
	// Now is the clock; tests replace it.
	Now func() time.Time
	// Scripts runs actions added at run time (DESIGN §8); off, uploads
	// are refused and stored scripts do not run. ScriptLimits bound each
	// run (zero fields: defaults).
	Scripts      bool
	ScriptLimits ScriptLimits
	// MaxStreams bounds one principal's live event streams (default
	// DefaultMaxStreams).
	MaxStreams int
	// KeepEvents and KeepEventsMax bound the log by age and count (0:
	// defaults; KeepEvents < 0: no age limit); commands and pictures go
	// with their events. RetentionInterval is how often the background
	// pass of StartRetention runs (default one minute).
	KeepEvents        time.Duration
	KeepEventsMax     int
	RetentionInterval time.Duration
	// Metrics counts commands, events, refused logins and script runs
	// (default: counted nowhere).
	Metrics Metrics
}

// Service is the domain: every device, person and command goes through it.
type Service struct {
	store    Store
	pub      Publisher
	log      *slog.Logger
	ttl      time.Duration
	now      func() time.Time
	loc      *time.Location
	pairTTL  time.Duration
	throttle *throttle

	keepPictures int
	pictureBytes int
	linkTTL      time.Duration
	signKey      []byte // guarded by mu; loaded on first use
	bus          bus

	registry map[string]Action
	// index is who may see what, in memory (index.go).
	index   indexHolder
	scripts *scriptTable

	retention *retention
	metrics   Metrics
	// ha keeps Home Assistant's discovery trees (homeassistant.go).
	ha homeAssistant

	mu     sync.Mutex
	online map[string]int // device id → live connections
	// goingOffline holds the timers of devices whose last connection
	// ended, until offlineGrace has passed.
	goingOffline map[string]*time.Timer
	waiters      map[string][]chan<- Command // command id → waiting callers
	timers       map[string]*time.Timer      // command id → expiry timer
	closed       bool

	// bg runs notifications and presence off the connection loops
	// (notify.go).
	bg background
}

// New returns a Service; it does no I/O. Call SetPublisher and then Open.
func New(cfg Config) (*Service, error) {
	if cfg.Store == nil {
		return nil, errors.New("actions: no store")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Location == nil {
		cfg.Location = time.Local
	}
	if cfg.PairingTTL <= 0 {
		cfg.PairingTTL = 10 * time.Minute
	}
	if cfg.KeepPictures <= 0 {
		cfg.KeepPictures = DefaultKeepPictures
	}
	if cfg.PictureBytes <= 0 {
		cfg.PictureBytes = DefaultPictureBytes
	}
	if cfg.LinkTTL <= 0 {
		cfg.LinkTTL = DefaultLinkTTL
	}
	switch {
	case cfg.CommandTTL == 0:
		cfg.CommandTTL = DefaultCommandTTL
	case cfg.CommandTTL < time.Second || cfg.CommandTTL > MaxCommandTTL:
		return nil, fmt.Errorf("actions: command ttl %s outside 1s..%s", cfg.CommandTTL, MaxCommandTTL)
	}
	s := &Service{
		store:        cfg.Store,
		log:          cfg.Logger,
		ttl:          cfg.CommandTTL,
		now:          cfg.Now,
		loc:          cfg.Location,
		pairTTL:      cfg.PairingTTL,
		keepPictures: cfg.KeepPictures,
		pictureBytes: cfg.PictureBytes,
		linkTTL:      cfg.LinkTTL,
		throttle:     newThrottle(cfg.Now),
		online:       map[string]int{},
		goingOffline: map[string]*time.Timer{},
		waiters:      map[string][]chan<- Command{},
		timers:       map[string]*time.Timer{},
	}
	s.bus.max = cfg.MaxStreams
	s.metrics = cfg.Metrics
	if s.metrics == nil {
		s.metrics = noMetrics{}
	}
	s.registry = s.builtins()
	s.retention = newRetention(cfg)
	s.scripts = s.newScriptTable(cfg.Scripts, cfg.ScriptLimits)
	s.startBackground()
	return s, nil
}

// SetPublisher connects the service to the broker. Until it is called,
// messages to MQTT are dropped.
func (s *Service) SetPublisher(p Publisher) { s.pub = p }

// CommandTTL is the time to live of new commands.
func (s *Service) CommandTTL() time.Duration { return s.ttl }

// Open makes the stored state consistent for a fresh start: every command
// still waiting for its device from an earlier run becomes expired, since an
// unlock is never replayed after a restart (DESIGN §4). It then loads the
// stored scripts.
func (s *Service) Open() error {
	now := s.now()
	err := s.update(func(tx Tx) error {
		pending, err := tx.PendingCommands()
		if err != nil {
			return err
		}
		for _, c := range pending {
			c.Status, c.Reason = StatusExpired, "server restarted"
			if err := tx.PutCommand(c); err != nil {
				return err
			}
			if err := tx.AppendEvent(&Event{Time: now, Type: EventCommand, Device: c.Device, User: c.By,
				Via: ViaServer, Command: c.ID, Detail: c.Verb + " expired: server restarted"}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	s.reindex()
	return s.loadScripts()
}

// Close stops the background retention (waiting for its transaction under
// way), the expiry timers, and wakes every waiting caller.
func (s *Service) Close() {
	s.stopRetention()
	s.stopHomeAssistant()
	s.mu.Lock()
	s.closed = true // no more presence changes are queued
	for id, t := range s.goingOffline {
		t.Stop()
		delete(s.goingOffline, id)
	}
	s.mu.Unlock()
	s.stopBackground() // commits and announces what was queued
	s.mu.Lock()
	defer s.mu.Unlock()
	s.bus.close()
	for id, t := range s.timers {
		t.Stop()
		delete(s.timers, id)
	}
	for id, ws := range s.waiters {
		for _, w := range ws {
			close(w)
		}
		delete(s.waiters, id)
	}
}

// Ready reports whether the store answers and, for a store that tracks it
// (store.DB), whether its last commit succeeded: while writes fail
// (EStorageFull, EStorage) the server is not ready, and it is again after
// the next successful commit.
func (s *Service) Ready() error {
	if f, ok := s.store.(interface{ WriteFault() error }); ok {
		if err := f.WriteFault(); err != nil {
			return err
		}
	}
	return s.store.View(func(tx Tx) error {
		_, err := tx.Users()
		return err
	})
}

// EnsureAdmin creates the user "admin" when the store has no user yet, with
// token as its API token, or a random one when token is empty. It returns
// the token it made up, "" when it made none. A token shorter than 16
// characters is refused when it would be used; when the store already has
// users it is not used, and only logged as a warning, so that a leftover
// setting never keeps a working server from starting.
func (s *Service) EnsureAdmin(token string) (generated string, err error) {
	short := token != "" && len(token) < 16
	err = s.update(func(tx Tx) error {
		users, err := tx.Users()
		if err != nil || len(users) > 0 {
			return err
		}
		if short {
			return Errorf(EInvalid, "admin token must be at least 16 characters")
		}
		secret := token
		if secret == "" {
			secret = NewSecret()
		}
		now := s.now()
		if err := tx.PutUser(User{Name: "admin", Role: RoleAdmin, Created: now}); err != nil {
			return err
		}
		if err := tx.PutToken(Token{ID: newID(), User: "admin", Name: "bootstrap", Created: now, Hash: Hash(secret)}); err != nil {
			return err
		}
		if token == "" {
			generated = secret
		}
		return tx.AppendEvent(&Event{Time: now, Type: EventAdmin, User: "admin", Via: ViaServer, Detail: "bootstrap admin created"})
	})
	if err == nil && short {
		s.log.Warn("GATEHOUSE_ADMIN_TOKEN is shorter than 16 characters and was not used: the store already has users")
	}
	return generated, err
}

// Hash is how secrets and tokens are kept: their SHA-256.
func Hash(secret string) []byte {
	h := sha256.Sum256([]byte(secret))
	return h[:]
}

// NewSecret returns 32 random bytes in hex, for device secrets and tokens.
func NewSecret() string {
	b := make([]byte, 32)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// newID returns a random 16-character hex id.
func newID() string {
	b := make([]byte, 8)
	rand.Read(b)
	return hex.EncodeToString(b)
}
