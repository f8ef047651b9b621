package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"time"

	"go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// A damaged file must be refused in words before bbolt reads it: bbolt
// trusts its file and panics (or faults on its memory map) on a truncated
// or overwritten one. checkFile reads the file with plain reads, never
// through a map, following bbolt's on-disk layout (go.etcd.io/bbolt
// internal/common: page.go and meta.go).
const (
	boltMagic      = 0xED0CDAED
	boltVersion    = 2
	pageHeaderSize = 16 // id u64, flags u16, count u16, overflow u32
	elementSize    = 16 // branch: pos u32, ksize u32, pgid u64; leaf: flags u32, pos u32, ksize u32, vsize u32
	bucketHeader   = 16 // a bucket value: root pgid u64, sequence u64, then an inline page when root is 0
	metaChecked    = 56 // the meta fields the checksum covers
	noFreelist     = ^uint64(0)

	flagBranch   = 0x01
	flagLeaf     = 0x02
	flagMeta     = 0x04
	flagFreelist = 0x10
	flagBucket   = 0x01 // on a leaf element: the value is a bucket

	minPages = 4 // two meta pages, the freelist and the root leaf of a new file
	maxDepth = 64
)

// ErrDamaged is matched (errors.Is) by every error about a data or backup
// file that cannot be used as it is.
var ErrDamaged = errors.New("data file is damaged")

// ErrNoStore is returned by OpenWith with Options.MustExist when there is no
// data file, so that offline commands never make an empty store by mistake.
var ErrNoStore = errors.New("no data file")

// DamagedError says what is wrong with a file, in words a person can act on.
type DamagedError struct {
	Path    string
	Problem string // like "truncated: 12288 bytes, expected at least 20480"
	foreign bool   // bbolt without Gatehouse's buckets, or (with unknown) no bbolt page at all
	unknown bool   // nothing of bbolt in it: another kind of file, or overwritten
}

func (e *DamagedError) Error() string {
	switch {
	case e.unknown:
		return fmt.Sprintf("%s is damaged or not a Gatehouse data file (%s)", e.Path, e.Problem)
	case e.foreign:
		return fmt.Sprintf("%s is not a Gatehouse data file (%s)", e.Path, e.Problem)
	}
	return fmt.Sprintf("%s is damaged (%s)", e.Path, e.Problem)
}

// Is makes errors.Is(err, ErrDamaged) true, and ErrForeign for a file that
// is not a Gatehouse store at all.
func (e *DamagedError) Is(target error) bool {
	return target == ErrDamaged || (e.foreign && target == ErrForeign)
}

// dataFileError is the one line start-up and the offline commands print for
// a damaged data file: what is wrong and how to get going again.
func dataFileError(path string, err error) error {
	return fmt.Errorf("data file %w; restore a backup with: gatehouse restore --data %s FILE (or move the file away to start empty)",
		err, filepath.Dir(path))
}

// fileStats is what checkFile learnt about a sound file.
type fileStats struct {
	size      int64
	pageSize  int
	pages     uint64 // the high-water mark: pages in use or free
	freePages int
	txid      uint64
	warnings  []string // damage bbolt works around, such as one bad meta page
}

// meta is one of bbolt's two meta pages.
type meta struct {
	pageSize                   uint32
	root, freelist, pgid, txid uint64
	problem                    string // why it is not valid; "" when it is
	hasMagic                   bool
}

// readMeta decodes the meta page at the start of b. bbolt writes it in the
// machine's byte order, right after the page header.
func readMeta(b []byte) meta {
	if len(b) < pageHeaderSize+metaChecked+8 {
		return meta{problem: "too short"}
	}
	ne := binary.NativeEndian
	m := b[pageHeaderSize:]
	out := meta{
		pageSize: ne.Uint32(m[8:]),
		root:     ne.Uint64(m[16:]),
		freelist: ne.Uint64(m[32:]),
		pgid:     ne.Uint64(m[40:]),
		txid:     ne.Uint64(m[48:]),
		hasMagic: ne.Uint32(m[0:]) == boltMagic,
	}
	h := fnv.New64a()
	h.Write(m[:metaChecked])
	switch {
	case !out.hasMagic:
		out.problem = "no bbolt magic number"
	case ne.Uint32(m[4:]) != boltVersion:
		out.problem = fmt.Sprintf("bbolt format version %d, want %d", ne.Uint32(m[4:]), boltVersion)
	case ne.Uint64(m[56:]) != h.Sum64():
		out.problem = "bad checksum"
	}
	return out
}

// checkFile checks the file at path without trusting it: its size, both
// meta pages, the page ids they hold, the freelist and the root bucket's
// pages. With full it walks every page of every bucket too, which reads the
// whole file; without, it stops at the root page of each top-level bucket,
// which reads a handful of pages. Errors are *DamagedError.
func checkFile(path string, full bool) (fileStats, error) {
	var st fileStats
	bad := func(format string, args ...any) (fileStats, error) {
		return st, &DamagedError{Path: path, Problem: fmt.Sprintf(format, args...)}
	}
	f, err := os.Open(path)
	if err != nil {
		return st, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return st, err
	}
	if !fi.Mode().IsRegular() {
		return bad("not a regular file")
	}
	st.size = fi.Size()
	if st.size == 0 {
		return bad("empty file: 0 bytes")
	}

	// Find the page size the way bbolt does: from the first meta page, or
	// else from the second, at each possible page size.
	head := make([]byte, min(st.size, 4096))
	if _, err := f.ReadAt(head, 0); err != nil {
		return st, fmt.Errorf("read %s: %w", path, err)
	}
	m0 := readMeta(head)
	var m1 meta
	ps := 0
	if m0.problem == "" {
		ps = int(m0.pageSize)
	} else {
		for size := int64(1024); size <= 16<<20 && size+pageHeaderSize+64 <= st.size; size *= 2 {
			buf := make([]byte, pageHeaderSize+64)
			if _, err := f.ReadAt(buf, size); err != nil {
				break
			}
			if m := readMeta(buf); m.problem == "" && int64(m.pageSize) == size {
				ps = int(size)
				break
			}
		}
	}
	if ps == 0 {
		if !m0.hasMagic {
			return st, &DamagedError{Path: path, Problem: fmt.Sprintf("no bbolt meta page in its %d bytes", st.size), foreign: true, unknown: true}
		}
		return bad("both meta pages are invalid; page 0: %s", m0.problem)
	}
	if ps < 1024 || ps > 16<<20 || ps&(ps-1) != 0 {
		return bad("meta page: page size %d is not possible", ps)
	}
	st.pageSize = ps
	if st.size < int64(2*ps) {
		return bad("truncated: %d bytes, expected at least %d", st.size, minPages*ps)
	}
	buf := make([]byte, pageHeaderSize+64)
	if _, err := f.ReadAt(buf, int64(ps)); err != nil {
		return st, fmt.Errorf("read %s: %w", path, err)
	}
	m1 = readMeta(buf)
	if m0.problem == "" && m1.problem == "" && m0.pageSize != m1.pageSize {
		return bad("the meta pages disagree on the page size (%d and %d)", m0.pageSize, m1.pageSize)
	}

	// bbolt uses the valid meta page of the newest transaction.
	var use meta
	switch {
	case m0.problem != "" && m1.problem != "":
		return bad("both meta pages are invalid; page 0: %s; page 1: %s", m0.problem, m1.problem)
	case m0.problem != "":
		use = m1
		st.warnings = append(st.warnings, fmt.Sprintf("meta page 0 is invalid (%s); bbolt uses page 1, from transaction %d", m0.problem, m1.txid))
	case m1.problem != "":
		use = m0
		st.warnings = append(st.warnings, fmt.Sprintf("meta page 1 is invalid (%s); bbolt uses page 0, from transaction %d", m1.problem, m0.txid))
	case m1.txid > m0.txid:
		use = m1
	default:
		use = m0
	}
	st.pages, st.txid = use.pgid, use.txid
	if need := int64(max(use.pgid, minPages)) * int64(ps); st.size < need {
		return bad("truncated: %d bytes, expected at least %d", st.size, need)
	}
	if st.size%int64(ps) != 0 {
		return bad("truncated: %d bytes is not a whole number of %d-byte pages", st.size, ps)
	}
	for i, m := range []meta{m0, m1} {
		if m.problem != "" {
			continue
		}
		if m.pgid < minPages || int64(m.pgid) > st.size/int64(ps) {
			return bad("meta page %d: %d pages in use, the file holds %d", i, m.pgid, st.size/int64(ps))
		}
		if m.root < 2 || m.root >= m.pgid {
			return bad("meta page %d: root page %d is outside pages 2 to %d", i, m.root, m.pgid-1)
		}
		if m.freelist != noFreelist && (m.freelist < 2 || m.freelist >= m.pgid) {
			return bad("meta page %d: freelist page %d is outside pages 2 to %d", i, m.freelist, m.pgid-1)
		}
	}

	w := walker{f: f, ps: ps, pages: use.pgid, full: full, seen: map[uint64]bool{}}
	if use.freelist != noFreelist {
		n, err := w.freelist(use.freelist)
		if err != nil {
			return bad("%v", err)
		}
		st.freePages = n
	}
	if err := w.tree(use.root, 0, 0); err != nil {
		return bad("%v", err)
	}
	return st, nil
}

// walker reads pages with plain reads and checks that every page id,
// element and key it meets lies inside the file and its page.
type walker struct {
	f     io.ReaderAt
	ps    int
	pages uint64
	full  bool
	seen  map[uint64]bool // pages met so far, so a loop ends
}

// page reads page id with its overflow pages and checks its header.
func (w *walker) page(id uint64, want ...uint16) ([]byte, error) {
	if id < 2 || id >= w.pages {
		return nil, fmt.Errorf("page %d is outside pages 2 to %d", id, w.pages-1)
	}
	if w.seen[id] {
		return nil, fmt.Errorf("page %d is referenced twice", id)
	}
	w.seen[id] = true
	head := make([]byte, w.ps)
	if _, err := w.f.ReadAt(head, int64(id)*int64(w.ps)); err != nil {
		return nil, fmt.Errorf("page %d: %v", id, err)
	}
	ne := binary.NativeEndian
	if got := ne.Uint64(head); got != id {
		return nil, fmt.Errorf("page %d is overwritten: its header names page %d", id, got)
	}
	flags := ne.Uint16(head[8:])
	ok := false
	for _, f := range want {
		ok = ok || flags == f
	}
	if !ok {
		return nil, fmt.Errorf("page %d has type %#x, want %s", id, flags, pageTypes(want))
	}
	overflow := uint64(ne.Uint32(head[12:]))
	if id+overflow >= w.pages {
		return nil, fmt.Errorf("page %d runs %d pages past the last page %d", id, overflow, w.pages-1)
	}
	if overflow == 0 {
		return head, nil
	}
	p := make([]byte, (1+overflow)*uint64(w.ps))
	if _, err := w.f.ReadAt(p, int64(id)*int64(w.ps)); err != nil {
		return nil, fmt.Errorf("page %d: %v", id, err)
	}
	return p, nil
}

func pageTypes(flags []uint16) string {
	names := map[uint16]string{flagBranch: "branch", flagLeaf: "leaf", flagMeta: "meta", flagFreelist: "freelist"}
	var out []string
	for _, f := range flags {
		out = append(out, names[f])
	}
	return strings.Join(out, " or ")
}

// freelist checks the freelist page and returns how many pages are free.
func (w *walker) freelist(id uint64) (int, error) {
	p, err := w.page(id, flagFreelist)
	if err != nil {
		return 0, fmt.Errorf("freelist: %v", err)
	}
	ne := binary.NativeEndian
	count, start := uint64(ne.Uint16(p[10:])), pageHeaderSize
	if count == 0xFFFF {
		count, start = ne.Uint64(p[pageHeaderSize:]), pageHeaderSize+8
	}
	if count > uint64(len(p)-start)/8 {
		return 0, fmt.Errorf("freelist page %d: %d entries do not fit in %d bytes", id, count, len(p))
	}
	for i := range count {
		if free := ne.Uint64(p[start+8*int(i):]); free < 2 || free >= w.pages {
			return 0, fmt.Errorf("freelist page %d: free page %d is outside pages 2 to %d", id, free, w.pages-1)
		}
	}
	return int(count), nil
}

// tree walks the B+tree of a bucket from its root page. level counts
// buckets (0 is the root bucket, whose entries are the top-level buckets),
// depth pages within the tree.
func (w *walker) tree(id uint64, level, depth int) error {
	if depth > maxDepth {
		return fmt.Errorf("page %d: tree deeper than %d levels", id, maxDepth)
	}
	p, err := w.page(id, flagBranch, flagLeaf)
	if err != nil {
		return err
	}
	ne := binary.NativeEndian
	if ne.Uint16(p[8:]) == flagLeaf {
		return w.leaf(p, fmt.Sprintf("page %d", id), level)
	}
	count := int(ne.Uint16(p[10:]))
	if count == 0 || pageHeaderSize+count*elementSize > len(p) {
		return fmt.Errorf("page %d: %d branch elements do not fit in %d bytes", id, count, len(p))
	}
	for i := range count {
		e := pageHeaderSize + i*elementSize
		pos, ksize := int(ne.Uint32(p[e:])), int(ne.Uint32(p[e+4:]))
		if e+pos+ksize > len(p) || pos < 0 {
			return fmt.Errorf("page %d: key %d lies outside the page", id, i)
		}
		if err := w.tree(ne.Uint64(p[e+8:]), level, depth+1); err != nil {
			return err
		}
	}
	return nil
}

// leaf checks the elements of leaf page p (a page read from the file, or an
// inline bucket's page inside a value) and the buckets it holds.
func (w *walker) leaf(p []byte, where string, level int) error {
	ne := binary.NativeEndian
	count := int(ne.Uint16(p[10:]))
	if pageHeaderSize+count*elementSize > len(p) {
		return fmt.Errorf("%s: %d leaf elements do not fit in %d bytes", where, count, len(p))
	}
	for i := range count {
		e := pageHeaderSize + i*elementSize
		flags, pos := ne.Uint32(p[e:]), int(ne.Uint32(p[e+4:]))
		ksize, vsize := int(ne.Uint32(p[e+8:])), int(ne.Uint32(p[e+12:]))
		end := e + pos + ksize + vsize
		if pos < 0 || ksize < 0 || vsize < 0 || end > len(p) || end < e {
			return fmt.Errorf("%s: element %d lies outside the page", where, i)
		}
		if flags&flagBucket == 0 {
			continue
		}
		v := p[e+pos+ksize : end]
		name := fmt.Sprintf("bucket %q", p[e+pos:e+pos+ksize])
		if len(v) < bucketHeader {
			return fmt.Errorf("%s: %s has a %d-byte header", where, name, len(v))
		}
		if !w.full && level > 0 {
			continue
		}
		root := ne.Uint64(v)
		if root == 0 { // an inline bucket: its page is the rest of the value
			inline := v[bucketHeader:]
			if len(inline) < pageHeaderSize || ne.Uint16(inline[8:]) != flagLeaf {
				return fmt.Errorf("%s: %s has a malformed inline page", where, name)
			}
			if err := w.leaf(inline, name, level+1); err != nil {
				return err
			}
			continue
		}
		if !w.full {
			// The cheap check reads only the root page of a top-level bucket.
			if _, err := w.page(root, flagBranch, flagLeaf); err != nil {
				return fmt.Errorf("%s: %v", name, err)
			}
			continue
		}
		if err := w.tree(root, level+1, 0); err != nil {
			return fmt.Errorf("%s: %v", name, err)
		}
	}
	return nil
}

// probeInUse tells whether another process holds the data file: it is
// asked after a check failed, since a file that a server is writing can
// look inconsistent to plain reads, and "in use" is then the true answer.
func probeInUse(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	if err := tryLock(f, false); err != nil {
		return true
	}
	unlock(f)
	return false
}

// openChecked checks the file cheaply, then opens it with bbolt, turning a
// panic or memory fault inside bbolt into an error.
func openChecked(path string, opts *bbolt.Options) (b *bbolt.DB, err error) {
	if _, err := checkFile(path, false); err != nil {
		if probeInUse(path) {
			return nil, fmt.Errorf("%s: %w", path, ErrInUse)
		}
		return nil, err
	}
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			b, err = nil, &DamagedError{Path: path, Problem: fmt.Sprintf("bbolt: %s", oneLine(r))}
		}
	}()
	b, err = bbolt.Open(path, 0o600, opts)
	switch {
	case errors.Is(err, berrors.ErrTimeout):
		return nil, fmt.Errorf("%s: %w", path, ErrInUse)
	case err != nil:
		return nil, &DamagedError{Path: path, Problem: fmt.Sprintf("bbolt: %s", oneLine(err))}
	}
	return b, nil
}

// guard runs fn on b, turning a panic or memory fault inside bbolt into an
// error about the file.
func guard(path string, fn func() error) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			err = &DamagedError{Path: path, Problem: fmt.Sprintf("bbolt: %s", oneLine(r))}
		}
	}()
	return fn()
}

// oneLine keeps the first line of a panic value or error.
func oneLine(v any) string {
	s := fmt.Sprint(v)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return s
}

// schema checks that tx is a Gatehouse store this binary knows and returns
// its schema version. A bbolt file without any bucket is a new store
// (version 0): the one a crash left between creating the file and the
// first migration.
func schema(tx *bbolt.Tx) (int, error) {
	meta := tx.Bucket(bucketMeta)
	if meta == nil {
		empty := true
		tx.ForEach(func([]byte, *bbolt.Bucket) error { empty = false; return nil })
		if empty {
			return 0, nil
		}
		return 0, &DamagedError{Problem: "a bbolt file without Gatehouse's meta bucket", foreign: true}
	}
	v := meta.Get(keySchemaVersion)
	if len(v) != 8 {
		return 0, &DamagedError{Problem: fmt.Sprintf("malformed schema version (%d bytes)", len(v))}
	}
	version := binary.BigEndian.Uint64(v)
	if version == 0 || version > uint64(SchemaVersion) {
		return int(min(version, 1<<31)), fmt.Errorf("schema version %d; this binary knows 1 to %d: %w", version, SchemaVersion, errNewer)
	}
	for _, name := range bucketsAt(int(version)) {
		if tx.Bucket(name) == nil {
			return int(version), &DamagedError{Problem: fmt.Sprintf("bucket %s is missing at schema version %d", name, version)}
		}
	}
	return int(version), nil
}

// errNewer marks a file written by a newer Gatehouse.
var errNewer = errors.New("upgrade gatehouse")

// withPath fills in the path of a *DamagedError that lacks one.
func withPath(path string, err error) error {
	var d *DamagedError
	if errors.As(err, &d) && d.Path == "" {
		d.Path = path
	}
	return err
}

// Report is the outcome of Check.
type Report struct {
	Size      int64
	PageSize  int
	Pages     uint64 // pages in use or free, the rest of the file is unused
	FreePages int
	Schema    int
	Problems  []string // empty when the file is sound
}

// maxProblems bounds how many problems Check lists.
const maxProblems = 20

// Check runs every check there is on the data file at path while no server
// holds it: the page walk of checkFile, bbolt's own consistency check
// (tx.Check: every page reachable or free exactly once, keys in order) and
// the schema. It returns an error only when it could not look (no file, in
// use); what is wrong with the file is in Report.Problems.
func Check(path string) (Report, error) {
	var r Report
	if _, err := os.Stat(path); err != nil {
		return r, fmt.Errorf("%s: %w", path, ErrNoStore)
	}
	st, err := checkFile(path, true)
	if err != nil {
		if probeInUse(path) {
			return r, fmt.Errorf("%s: %w", path, ErrInUse)
		}
		var d *DamagedError
		if !errors.As(err, &d) {
			return r, err
		}
		r.Size = st.size
		r.Problems = []string{d.Problem}
		return r, nil
	}
	r.Size, r.PageSize, r.Pages, r.FreePages = st.size, st.pageSize, st.pages, st.freePages
	r.Problems = append(r.Problems, st.warnings...)
	b, err := openChecked(path, &bbolt.Options{ReadOnly: true, Timeout: lockTimeout})
	var d *DamagedError
	if errors.As(err, &d) {
		r.Problems = append(r.Problems, d.Problem)
		return r, nil
	}
	if err != nil {
		return r, err
	}
	defer b.Close()
	version, problems := checkBolt(path, b, len(st.warnings) == 0)
	r.Schema = version
	r.Problems = append(r.Problems, problems...)
	return r, nil
}

// checkBolt runs bbolt's tx.Check and the schema check on an open file
// that checkFile(path, true) passed, and lists what is wrong.
func checkBolt(path string, b *bbolt.DB, metasOK bool) (version int, problems []string) {
	more := 0
	add := func(s string) {
		if len(problems) < maxProblems {
			problems = append(problems, s)
		} else {
			more++
		}
	}
	err := guard(path, func() error {
		return b.View(func(tx *bbolt.Tx) error {
			if metasOK {
				for err := range tx.Check() {
					add(oneLine(err))
				}
			} else {
				// tx.Check asserts both meta pages are sound.
				add("bbolt's page check skipped: it needs both meta pages")
			}
			var err error
			version, err = schema(tx)
			if err != nil {
				var d *DamagedError
				if errors.As(err, &d) {
					add(d.Problem)
				} else {
					add(err.Error())
				}
			} else if version == 0 {
				add("no Gatehouse buckets: a bbolt file with nothing in it")
			}
			return nil
		})
	})
	if err != nil {
		add(oneLine(err))
	}
	if more > 0 {
		problems = append(problems, fmt.Sprintf("… and %d more", more))
	}
	return version, problems
}

// verify refuses the file at path unless every check passes; it is run on
// a backup before restore swaps it in. It returns the schema version.
func verify(path string) (int, error) {
	r, err := Check(path)
	if err != nil {
		return 0, err
	}
	if r.Schema > SchemaVersion {
		return r.Schema, fmt.Errorf("%s: schema version %d is newer than this binary knows (%d): %w", path, r.Schema, SchemaVersion, errNewer)
	}
	if len(r.Problems) > 0 {
		problem := r.Problems[0]
		if len(r.Problems) > 1 {
			problem += fmt.Sprintf(", and %d more problems", len(r.Problems)-1)
		}
		return r.Schema, &DamagedError{Path: path, Problem: problem}
	}
	return r.Schema, nil
}

// Compact rewrites the data file at path without its free pages, while no
// server holds it: the file is checked, copied with bbolt.Compact into a
// temporary file beside it, the copy checked and synced, and renamed over
// the original. It returns the sizes before and after.
func Compact(path string) (before, after int64, err error) {
	if _, err := os.Stat(path); err != nil {
		return 0, 0, fmt.Errorf("%s: %w", path, ErrNoStore)
	}
	st, err := checkFile(path, true)
	if err != nil {
		if probeInUse(path) {
			return 0, 0, fmt.Errorf("%s: %w", path, ErrInUse)
		}
		return 0, 0, err
	}
	src, err := openChecked(path, &bbolt.Options{Timeout: lockTimeout})
	if err != nil {
		return 0, 0, err
	}
	defer src.Close()
	if _, problems := checkBolt(path, src, len(st.warnings) == 0); len(problems) > 0 {
		return 0, 0, &DamagedError{Path: path, Problem: problems[0]}
	}
	fi, err := os.Stat(path)
	if err != nil {
		return 0, 0, err
	}
	before = fi.Size()

	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".compact-*")
	if err != nil {
		return before, 0, fmt.Errorf("compact: %w", err)
	}
	tmpPath := tmp.Name()
	tmp.Close()
	defer os.Remove(tmpPath) // gone after the rename; cleans up on failure
	dst, err := bbolt.Open(tmpPath, 0o600, &bbolt.Options{Timeout: lockTimeout})
	if err != nil {
		return before, 0, fmt.Errorf("compact: %w", err)
	}
	err = guard(path, func() error { return bbolt.Compact(dst, src, 64<<20) })
	if cerr := dst.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return before, 0, fmt.Errorf("compact: %w", err)
	}
	if _, err := verify(tmpPath); err != nil {
		return before, 0, fmt.Errorf("compact: the copy failed its check, the original is untouched: %w", err)
	}
	if err := syncFile(tmpPath); err != nil {
		return before, 0, fmt.Errorf("compact: %w", err)
	}
	if fi, err := os.Stat(tmpPath); err == nil {
		after = fi.Size()
	}
	if err := os.Rename(tmpPath, path); err != nil {
		return before, 0, fmt.Errorf("compact: %w", err)
	}
	if err := syncDir(filepath.Dir(path)); err != nil {
		return before, after, fmt.Errorf("compact: %w", err)
	}
	return before, after, nil
}

func syncFile(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// lockCurrent takes the lock a server holds on the data file at path, the
// way bbolt takes it, without reading the file: restore must work on a
// damaged file, which bbolt cannot open. It waits up to lockTimeout.
func lockCurrent(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(lockTimeout)
	for {
		err := tryLock(f, true)
		if err == nil {
			return f, nil
		}
		if !errors.Is(err, errLocked) || time.Now().After(deadline) {
			f.Close()
			if errors.Is(err, errLocked) {
				return nil, fmt.Errorf("%s: %w", path, ErrInUse)
			}
			return nil, err
		}
		time.Sleep(50 * time.Millisecond)
	}
}
