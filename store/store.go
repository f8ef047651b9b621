package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"sync"
	"time"

	"go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"gatehouse/actions"
)

// Bucket names and meta keys.
var (
	bucketMeta        = []byte("meta")
	bucketDevices     = []byte("devices")
	bucketUsers       = []byte("users")
	bucketTokens      = []byte("tokens")
	bucketTokenHashes = []byte("token_hashes")
	bucketCommands    = []byte("commands")
	bucketPending     = []byte("pending")
	bucketEvents      = []byte("events")
	bucketGrants      = []byte("grants")
	bucketPairings    = []byte("pairings")
	bucketStrangers   = []byte("strangers")
	bucketPictures    = []byte("pictures")
	bucketSettings    = []byte("settings")
	bucketScripts     = []byte("scripts")
	bucketLogins      = []byte("logins")

	keySchemaVersion = []byte("schema_version")
)

// ErrInUse is returned by Open when another process holds the data file.
// bbolt locks the file for the life of the DB, so two servers can never
// write to one file.
var ErrInUse = errors.New("data file is in use by another process")

// migrations bring a file from schema version i to i+1; migrations[0] makes
// a new file. The list is append-only: never change or reorder an entry
// that has shipped, since files in the field have already run it.
var migrations = [...]func(*bbolt.Tx) error{
	// 1: the initial buckets.
	func(tx *bbolt.Tx) error {
		for _, name := range [][]byte{
			bucketDevices, bucketUsers, bucketTokens, bucketTokenHashes,
			bucketCommands, bucketPending, bucketEvents,
		} {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return fmt.Errorf("create bucket %s: %w", name, err)
			}
		}
		return nil
	},
	// 2: grants of devices to people, and device pairing codes.
	func(tx *bbolt.Tx) error { return createBuckets(tx, bucketGrants, bucketPairings) },
	// 3: stranger pictures (metadata and bytes apart, so lists never read
	// the bytes) and server settings such as the link signing key.
	func(tx *bbolt.Tx) error { return createBuckets(tx, bucketStrangers, bucketPictures, bucketSettings) },
	// 4: actions added at run time (Starlark scripts).
	func(tx *bbolt.Tx) error { return createBuckets(tx, bucketScripts) },
	// 5: the addresses each person and device logged in from correctly,
	// so that login throttling survives a restart (see actions/auth.go).
	func(tx *bbolt.Tx) error { return createBuckets(tx, bucketLogins) },
	// 6: secondary indexes of the event log by device, type and person
	// (index.go). The migration only creates them and marks them unbuilt;
	// Open then fills them in bounded transactions (buildIndexes).
	createIndexes,
	// 7: the event indexes in chunks of event keys (index.go); the old
	// ones are dropped and Open rebuilds them.
	dropIndexes,
}

// SchemaVersion is the schema version this binary writes: the number of
// migrations it knows. Open refuses files with a higher version.
const SchemaVersion = len(migrations)

// lockTimeout bounds how long Open waits for another process to release the
// data file before giving up.
const lockTimeout = time.Second

// DB is the bbolt-backed store. It is safe for concurrent use.
type DB struct {
	bolt *bbolt.DB

	// Writes go through one writer goroutine that groups them into shared
	// commits (see writer.go), unless the store was opened with Options.
	// OneCommitPerWrite.
	grouped bool
	mu      sync.RWMutex // guards closed against sends on queue
	closed  bool
	queue   chan write
	stopped chan struct{}
	health  writeHealth // whether the last commit failed (writer.go)
	// onCommit is Options.OnCommit, never nil.
	onCommit func(took time.Duration, writes int)
	// devices keeps decoded devices (device.go).
	devices deviceCache
}

// Options tunes Open.
type Options struct {
	// OneCommitPerWrite makes every Update its own bbolt transaction and
	// fsync instead of grouping concurrent writes (for comparison in
	// benchmarks).
	OneCommitPerWrite bool
	// MustExist refuses a missing file with ErrNoStore instead of creating
	// a new store: offline commands work on an existing store only.
	MustExist bool
	// Logger receives failing and recovering writes (at most one line per
	// faultLogInterval); nil discards them.
	Logger *slog.Logger
	// OnCommit, when set, is told the time and the number of writes of
	// every successful commit, for monitoring (writer.go).
	OnCommit func(took time.Duration, writes int)
}

var _ actions.Store = (*DB)(nil)

// Open opens or creates the data file at path (mode 0600), brings its schema
// up to date and returns the store. It fails within about a second if
// another process has the file open.
//
// An existing file is checked before bbolt reads it (size, both meta pages,
// the pages they point at, the schema; see check.go), and a damaged one is
// refused with one line saying what is wrong and how to restore a backup;
// an empty file is damaged too, never silently made a new store.
func Open(path string) (*DB, error) { return OpenWith(path, Options{}) }

// OpenWith is Open with options.
func OpenWith(path string, opts Options) (*DB, error) {
	_, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist) && opts.MustExist:
		return nil, fmt.Errorf("%s: %w", path, ErrNoStore)
	case errors.Is(err, fs.ErrNotExist):
		b, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: lockTimeout})
		if errors.Is(err, berrors.ErrTimeout) {
			return nil, fmt.Errorf("open store: %s: %w", path, ErrInUse)
		}
		if err != nil {
			return nil, fmt.Errorf("open store: %s: %w", path, err)
		}
		return start(path, b, opts)
	case err != nil:
		return nil, fmt.Errorf("open store: %w", err)
	}
	b, err := openChecked(path, &bbolt.Options{Timeout: lockTimeout})
	var d *DamagedError
	if errors.As(err, &d) {
		return nil, dataFileError(path, err)
	}
	if err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	return start(path, b, opts)
}

// start brings the schema of the open file b up to date and starts the
// store on it.
func start(path string, b *bbolt.DB, opts Options) (*DB, error) {
	err := guard(path, func() error {
		return b.Update(func(btx *bbolt.Tx) error { return migrate(btx, migrations[:]) })
	})
	if err != nil {
		b.Close()
		var d *DamagedError
		if errors.As(withPath(path, err), &d) {
			return nil, dataFileError(path, err)
		}
		return nil, fmt.Errorf("open store: %s: %w", path, err)
	}
	if err := guard(path, func() error { return buildIndexes(b, indexBuildBatch) }); err != nil {
		b.Close()
		return nil, fmt.Errorf("open store: %s: %w", path, err)
	}
	db := &DB{bolt: b, grouped: !opts.OneCommitPerWrite, health: writeHealth{log: opts.Logger}, onCommit: opts.OnCommit}
	if db.onCommit == nil {
		db.onCommit = func(time.Duration, int) {}
	}
	if db.grouped {
		db.queue, db.stopped = make(chan write), make(chan struct{})
		go db.writer()
	}
	return db, nil
}

// migrate runs the migrations the file has not seen yet and records the new
// schema version, all in tx, so a failed migration leaves the file as it was.
func migrate(tx *bbolt.Tx, migrations []func(*bbolt.Tx) error) error {
	if _, err := schema(tx); err != nil && !errors.Is(err, errNewer) {
		return err
	}
	meta, err := tx.CreateBucketIfNotExists(bucketMeta)
	if err != nil {
		return fmt.Errorf("create bucket %s: %w", bucketMeta, err)
	}
	var version uint64
	if v := meta.Get(keySchemaVersion); v != nil {
		if len(v) != 8 {
			return fmt.Errorf("malformed schema version (%d bytes)", len(v))
		}
		version = binary.BigEndian.Uint64(v)
	}
	known := uint64(len(migrations))
	if version > known {
		return fmt.Errorf("schema version %d is newer than this binary supports (%d); upgrade gatehouse", version, known)
	}
	for i := version; i < known; i++ {
		if err := migrations[i](tx); err != nil {
			return fmt.Errorf("migrate to schema version %d: %w", i+1, err)
		}
	}
	if version < known {
		if err := meta.Put(keySchemaVersion, u64(known)); err != nil {
			return fmt.Errorf("write schema version: %w", err)
		}
	}
	for _, name := range bucketsAt(int(known)) {
		if tx.Bucket(name) == nil {
			return fmt.Errorf("bucket %s is missing", name)
		}
	}
	return nil
}

// Close waits for the writes under way, then releases the data file. It is
// safe to call more than once.
func (db *DB) Close() error {
	db.mu.Lock()
	first := !db.closed
	db.closed = true
	if first && db.grouped {
		close(db.queue)
	}
	db.mu.Unlock()
	if db.grouped {
		<-db.stopped // the writer has committed what was queued
	}
	if err := db.bolt.Close(); err != nil {
		return fmt.Errorf("close store: %w", err)
	}
	return nil
}

// View runs fn in a read-only transaction.
func (db *DB) View(fn func(actions.Tx) error) error {
	return db.bolt.View(func(btx *bbolt.Tx) error { return fn(db.tx(btx)) })
}

// Update runs fn in a read-write transaction that is committed, and synced
// to disk, only if fn returns nil; it returns once the commit is on disk.
// Concurrent Updates share commits; fn may run more than once.
func (db *DB) Update(fn func(actions.Tx) error) error {
	if !db.grouped {
		return db.updateOne(fn)
	}
	w := write{fn: fn, done: make(chan error, 1)}
	db.mu.RLock()
	if db.closed {
		db.mu.RUnlock()
		return ErrClosed
	}
	db.queue <- w
	db.mu.RUnlock()
	return <-w.done
}

// tx implements actions.Tx on one bbolt transaction. Its methods are the
// private helpers every operation is built from.
type tx struct {
	tx      *bbolt.Tx
	devices *deviceCache
}

func (db *DB) tx(btx *bbolt.Tx) *tx { return &tx{tx: btx, devices: &db.devices} }

var _ actions.Tx = (*tx)(nil)

// u64 encodes v as 8 bytes big-endian, so keys sort in numeric order.
func u64(v uint64) []byte {
	return binary.BigEndian.AppendUint64(make([]byte, 0, 8), v)
}

// u64dec decodes an 8-byte big-endian number.
func u64dec(b []byte) uint64 { return binary.BigEndian.Uint64(b) }

func createBuckets(tx *bbolt.Tx, names ...[]byte) error {
	for _, name := range names {
		if _, err := tx.CreateBucketIfNotExists(name); err != nil {
			return fmt.Errorf("create bucket %s: %w", name, err)
		}
	}
	return nil
}
