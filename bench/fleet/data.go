package fleet

import (
	"bufio"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// The store at size is made from an export rather than through the API
// (100k devices and 1M events through REST and MQTT would take longer than
// the whole benchmark): each binary makes a small store of its own through
// its API (one device, a member owning devices, a member with grants, a
// command, an ack, a state report, online, offline), exports it, and the
// records of that export are cloned under new keys into a large export,
// which the same binary imports. Cloning that binary's own records keeps
// the export valid for its schema, whatever the version.

// Names in the template and the generated store.
const (
	tplDevice = "tpl"
	owner     = "alice" // owns every 100th device
	grantee   = "bob"   // has a grant on every 1000th device
)

// deviceID is the id of generated device i; ids sort as their numbers do.
func deviceID(i int) string { return fmt.Sprintf("dev%06d", i) }

// exportDoc is the shape of a gatehouse export (docs/backup.md), small
// enough to hold in memory for the template.
type exportDoc struct {
	Format  string         `json:"format"`
	Schema  int            `json:"schema"`
	Buckets []exportBucket `json:"buckets"`
}

type exportBucket struct {
	Name     string        `json:"name"`
	Sequence uint64        `json:"sequence,omitempty"`
	Entries  []exportEntry `json:"entries"`
}

type exportEntry struct {
	Key   string          `json:"key"`
	Value json.RawMessage `json:"value"`
}

// template makes the small store with bin in dir and returns its export
// and the device secret, which every generated device shares (the device
// records are clones, secret hash included).
func template(bin string, flags map[string]bool, dir string) (*exportDoc, string, error) {
	data := filepath.Join(dir, "data")
	os.RemoveAll(dir)
	p, err := serve(bin, flags, data, time.Minute, nil)
	if err != nil {
		return nil, "", err
	}
	secret, err := func() (string, error) {
		for _, u := range []string{owner, grantee} {
			if err := p.Call("POST", "/api/v1/users", fmt.Sprintf(`{"name":%q,"role":"member"}`, u), http.StatusCreated, nil); err != nil {
				return "", err
			}
		}
		secret, err := p.CreateDevice(tplDevice, "lock")
		if err != nil {
			return "", err
		}
		if err := p.Call("POST", "/api/v1/grants", fmt.Sprintf(`{"user":%q,"device":%q}`, grantee, tplDevice), http.StatusCreated, nil); err != nil {
			return "", err
		}
		c, err := p.Device("", tplDevice, secret, "lock", true)
		if err != nil {
			return "", err
		}
		if err := p.Call("POST", "/api/v1/devices/"+tplDevice+"/lock", "", http.StatusOK, nil); err != nil {
			return "", err
		}
		if tok := c.Publish("toserver", 1, false, "state unlocked"); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			return "", fmt.Errorf("state report: %v", tok.Error())
		}
		if err := waitEvent(p, "state"); err != nil {
			return "", err
		}
		c.Disconnect(100)
		return secret, waitEvent(p, "offline")
	}()
	p.stop()
	if err != nil {
		return nil, "", fmt.Errorf("template store: %w", err)
	}
	file := filepath.Join(dir, "template.json")
	if err := run(bin, "export", "--data", data, file); err != nil {
		return nil, "", err
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, "", err
	}
	var doc exportDoc
	if err := json.Unmarshal(b, &doc); err != nil {
		return nil, "", fmt.Errorf("template export: %w", err)
	}
	return &doc, secret, nil
}

// waitEvent waits until the server has logged an event of type typ.
func waitEvent(p *proc, typ string) error {
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		var page struct{ Items []json.RawMessage }
		if err := p.Call("GET", "/api/v1/events?type="+typ+"&limit=1", "", http.StatusOK, &page); err != nil {
			return err
		}
		if len(page.Items) > 0 {
			return nil
		}
	}
	return fmt.Errorf("no %s event after 30s", typ)
}

// eventMix is the share of each event type in the generated log, out of
// 20: mostly state reports, then commands with their acks, presence and
// hand-shakes.
var eventMix = []string{
	"state", "state", "state", "state", "state", "state", "state", "state",
	"command", "command", "command", "ack", "ack", "ack",
	"online", "online", "offline", "offline", "hand_shake", "hand_shake",
}

// generate writes to file an export of the template grown to devices
// devices (every 100th owned by alice, every 1000th granted to bob) and
// events events spread evenly over the devices, the types of eventMix and
// the 30 days before now; the template's own records are kept.
func generate(doc *exportDoc, file string, devices, events int, now time.Time) error {
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	err = writeExport(w, doc, devices, events, now)
	if err == nil {
		err = w.Flush()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(file)
		return fmt.Errorf("generate %s: %w", file, err)
	}
	return nil
}

func writeExport(w *bufio.Writer, doc *exportDoc, devices, events int, now time.Time) error {
	fmt.Fprintf(w, `{"format":%q,"schema":%d,"buckets":[`, doc.Format, doc.Schema)
	for i, b := range doc.Buckets {
		if i > 0 {
			w.WriteByte(',')
		}
		name, _ := json.Marshal(b.Name)
		fmt.Fprintf(w, `{"name":%s,`, name)
		var err error
		seq := b.Sequence
		switch b.Name {
		case "devices":
			err = writeDevices(w, b, devices, now)
		case "grants":
			err = writeGrants(w, b, devices)
		case "events":
			seq, err = writeEvents(w, b, devices, events, now)
		default:
			err = writeEntries(w, b.Entries)
		}
		if err != nil {
			return fmt.Errorf("bucket %s: %w", b.Name, err)
		}
		if seq != 0 {
			fmt.Fprintf(w, `,"sequence":%d`, seq)
		}
		w.WriteByte('}')
	}
	_, err := w.WriteString("]}\n")
	return err
}

// entryWriter writes the entries of one bucket, comma-separated.
type entryWriter struct {
	w *bufio.Writer
	n int
}

func (e *entryWriter) put(key string, value []byte) {
	if e.n > 0 {
		e.w.WriteByte(',')
	}
	e.n++
	k, _ := json.Marshal(key)
	e.w.WriteString(`{"key":`)
	e.w.Write(k)
	e.w.WriteString(`,"value":`)
	e.w.Write(value)
	e.w.WriteByte('}')
}

func writeEntries(w *bufio.Writer, entries []exportEntry) error {
	w.WriteString(`"entries":[`)
	e := &entryWriter{w: w}
	for _, x := range entries {
		e.put(x.Key, x.Value)
	}
	_, err := w.WriteString("]")
	return err
}

// find returns the value of key in b.
func find(b exportBucket, key string) (map[string]json.RawMessage, error) {
	for _, e := range b.Entries {
		if e.Key == key {
			var m map[string]json.RawMessage
			return m, json.Unmarshal(e.Value, &m)
		}
	}
	return nil, fmt.Errorf("no entry %q in the template", key)
}

func writeDevices(w *bufio.Writer, b exportBucket, devices int, now time.Time) error {
	tpl, err := find(b, tplDevice)
	if err != nil {
		return err
	}
	w.WriteString(`"entries":[`)
	e := &entryWriter{w: w}
	// Keys in order, as an export has them: the generated ids sort
	// before the template's "tpl".
	start := now.Add(-60 * 24 * time.Hour)
	for i := range devices {
		id := deviceID(i)
		set(tpl, "name", "device "+id)
		set(tpl, "created", start.Add(time.Duration(i)*time.Second).UTC())
		delete(tpl, "owner")
		if i%100 == 0 {
			set(tpl, "owner", owner)
		}
		v, err := json.Marshal(tpl)
		if err != nil {
			return err
		}
		e.put(id, v)
	}
	for _, x := range b.Entries {
		e.put(x.Key, x.Value)
	}
	_, err = w.WriteString("]")
	return err
}

func set(m map[string]json.RawMessage, k string, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	m[k] = b
}

func writeGrants(w *bufio.Writer, b exportBucket, devices int) error {
	if len(b.Entries) == 0 {
		return fmt.Errorf("no grant in the template")
	}
	tplKey := b.Entries[0].Key
	tpl, err := find(b, tplKey)
	if err != nil {
		return err
	}
	var entries []exportEntry
	for i := 1; i < devices; i += 1000 {
		set(tpl, "device", deviceID(i))
		v, err := json.Marshal(tpl)
		if err != nil {
			return err
		}
		// Ids like the template's (16 hex digits), its first 10 kept.
		key := fmt.Sprintf("%.10s%06x", tplKey, i)
		if len(tplKey) < 10 {
			key = fmt.Sprintf("%s-%06x", tplKey, i)
		}
		entries = append(entries, exportEntry{Key: key, Value: v})
	}
	entries = append(entries, b.Entries...)
	slices.SortFunc(entries, func(a, b exportEntry) int { return strings.Compare(a.Key, b.Key) })
	return writeEntries(w, entries)
}

// writeEvents writes events generated events, oldest first (their keys in
// order), then the template's, and returns the bucket sequence to record:
// the generated events take the sequence numbers after the template's.
func writeEvents(w *bufio.Writer, b exportBucket, devices, events int, now time.Time) (uint64, error) {
	// One value template per type: the rest of a template event of that
	// type (or of a state report, retyped), without time, device and
	// command, which each event sets or leaves out.
	var first time.Time
	rest := map[string]string{}
	byType := map[string]map[string]json.RawMessage{}
	for _, x := range b.Entries {
		var m map[string]json.RawMessage
		if err := json.Unmarshal(x.Value, &m); err != nil {
			return 0, err
		}
		var typ string
		var t time.Time
		json.Unmarshal(m["type"], &typ)
		json.Unmarshal(m["time"], &t)
		if first.IsZero() || t.Before(first) {
			first = t
		}
		if byType[typ] == nil {
			byType[typ] = m
		}
	}
	if byType["state"] == nil {
		return 0, fmt.Errorf("no state event in the template")
	}
	for _, typ := range eventMix {
		m := byType[typ]
		if m == nil {
			m = byType["state"]
		}
		c := map[string]json.RawMessage{}
		for k, v := range m {
			c[k] = v
		}
		delete(c, "time")
		delete(c, "device")
		delete(c, "command")
		set(c, "type", typ)
		v, _ := json.Marshal(c)
		rest[typ] = strings.TrimPrefix(string(v), "{")
	}
	// Generated events end an hour before the template's first.
	end := first.Add(-time.Hour)
	if end.After(now) {
		end = now.Add(-time.Hour)
	}
	start := end.Add(-30 * 24 * time.Hour)
	var step time.Duration
	if events > 0 {
		step = end.Sub(start) / time.Duration(events)
	}
	w.WriteString(`"entries":[`)
	e := &entryWriter{w: w}
	var key [16]byte
	seq := b.Sequence
	for i := range events {
		t := start.Add(time.Duration(i) * step).UTC()
		seq++
		binary.BigEndian.PutUint64(key[:8], uint64(t.UnixNano()))
		binary.BigEndian.PutUint64(key[8:], seq)
		typ := eventMix[i%len(eventMix)]
		r := rest[typ]
		v := make([]byte, 0, 64+len(r))
		v = append(v, `{"time":"`...)
		v = t.AppendFormat(v, time.RFC3339Nano)
		v = append(v, `","device":"`...)
		v = append(v, deviceID(i%devices)...)
		v = append(v, `"`...)
		if r != "}" {
			v = append(v, ',')
		}
		v = append(v, r...)
		e.put(hex.EncodeToString(key[:]), v)
	}
	for _, x := range b.Entries {
		e.put(x.Key, x.Value)
	}
	_, err := w.WriteString("]")
	return seq, err
}

// store is an imported data dir and what the queries need to know of it.
type store struct {
	data    string
	devices int
	events  int
	took    time.Duration // the import
}

// importStore imports file with bin into a new data dir under dir.
func importStore(bin, file, dir string, devices, events int) (*store, error) {
	data := filepath.Join(dir, "data")
	os.RemoveAll(dir)
	start := time.Now()
	if err := run(bin, "import", "--data", data, file); err != nil {
		return nil, err
	}
	return &store{data: data, devices: devices, events: events, took: time.Since(start)}, nil
}
