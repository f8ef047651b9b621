package store

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"go.etcd.io/bbolt"
)

// ExportFormat names the JSON export format (see docs/export.md).
const ExportFormat = "gatehouse-export"

// exportFile is the JSON export: every data bucket, entry by entry in key
// order, with each value as the record JSON kept in the file. Nothing in it
// depends on when it was made, so export → import → export gives the same
// bytes.
type exportFile struct {
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

// bucketCodec says how a bucket's keys and values appear in an export, and
// how an imported value is checked.
type bucketCodec struct {
	hexKey bool // binary keys, written in hex
	keyLen int  // exact key length in bytes, 0 for any
	value  func() any
	text   bool // the value is a plain string (a token id)
	empty  bool // the value is empty (an index)
	binary bool // the value is raw bytes, written as a base64 string
}

var codecs = map[string]bucketCodec{
	"devices":      {value: func() any { return new(deviceRecord) }},
	"users":        {value: func() any { return new(userRecord) }},
	"tokens":       {value: func() any { return new(tokenRecord) }},
	"token_hashes": {hexKey: true, keyLen: 32, text: true},
	"commands":     {value: func() any { return new(commandRecord) }},
	"pending":      {empty: true},
	"events":       {hexKey: true, keyLen: eventKeyLen, value: func() any { return new(eventRecord) }},
	"grants":       {value: func() any { return new(grantRecord) }},
	"pairings":     {hexKey: true, keyLen: 32, value: func() any { return new(pairingRecord) }},
	"strangers":    {hexKey: true, keyLen: eventKeyLen, value: func() any { return new(strangerRecord) }},
	"pictures":     {hexKey: true, keyLen: eventKeyLen, binary: true},
	"settings":     {binary: true},
	"scripts":      {value: func() any { return new(scriptRecord) }},
	"logins":       {value: func() any { return new(loginRecord) }},
}

// Export writes the whole state as indented JSON to w, from one read
// transaction.
func (db *DB) Export(w io.Writer) error {
	var out exportFile
	err := db.bolt.View(func(btx *bbolt.Tx) error {
		v, err := schemaOf(btx)
		if err != nil {
			return err
		}
		out = exportFile{Format: ExportFormat, Schema: v}
		for _, name := range bucketsAt(v) {
			b := btx.Bucket(name)
			c := codecs[string(name)]
			eb := exportBucket{Name: string(name), Sequence: b.Sequence(), Entries: []exportEntry{}}
			err := b.ForEach(func(k, v []byte) error {
				e := exportEntry{Key: string(k)}
				if c.hexKey {
					e.Key = hex.EncodeToString(k)
				}
				switch {
				case c.empty:
					e.Value = json.RawMessage("null")
				case c.text:
					e.Value, _ = json.Marshal(string(v))
				case c.binary:
					e.Value, _ = json.Marshal(v) // []byte → base64
				default:
					e.Value = append(json.RawMessage(nil), v...)
				}
				eb.Entries = append(eb.Entries, e)
				return nil
			})
			if err != nil {
				return err
			}
			out.Buckets = append(out.Buckets, eb)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("export: %w", err)
	}
	b, err := json.MarshalIndent(out, "", "  ")
	if err != nil {
		return fmt.Errorf("export: %w", err)
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

func schemaOf(btx *bbolt.Tx) (int, error) {
	meta := btx.Bucket(bucketMeta)
	if meta == nil || len(meta.Get(keySchemaVersion)) != 8 {
		return 0, errors.New("no schema version")
	}
	return int(u64dec(meta.Get(keySchemaVersion))), nil
}

// Import creates the store at path from an export read from r. It refuses
// to overwrite an existing file, checks the whole export before writing
// anything, and writes it in one transaction to a temporary file that is
// renamed into place, so a failed import leaves nothing behind.
func Import(path string, r io.Reader) error {
	if _, err := os.Stat(path); err == nil {
		return fmt.Errorf("import: %s exists: import wants an empty data dir", path)
	}
	var in exportFile
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&in); err != nil {
		return fmt.Errorf("import: not a gatehouse export: %w", err)
	}
	plan, err := checkImport(in)
	if err != nil {
		return fmt.Errorf("import: %w", err)
	}
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".importing")
	os.Remove(tmp)
	defer os.Remove(tmp)
	b, err := bbolt.Open(tmp, 0o600, &bbolt.Options{Timeout: lockTimeout})
	if err != nil {
		return fmt.Errorf("import: %w", err)
	}
	err = b.Update(func(btx *bbolt.Tx) error {
		meta, err := btx.CreateBucket(bucketMeta)
		if err != nil {
			return err
		}
		if err := meta.Put(keySchemaVersion, u64(uint64(in.Schema))); err != nil {
			return err
		}
		for _, eb := range plan {
			bk, err := btx.CreateBucket([]byte(eb.name))
			if err != nil {
				return err
			}
			for _, kv := range eb.entries {
				if err := bk.Put(kv[0], kv[1]); err != nil {
					return err
				}
			}
			if err := bk.SetSequence(eb.sequence); err != nil {
				return err
			}
		}
		return nil
	})
	if cerr := b.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("import: write: %w", err)
	}
	db, err := Open(tmp) // brings an older export's schema up to date
	if err != nil {
		return fmt.Errorf("import: %w", err)
	}
	if err := db.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("import: %w", err)
	}
	return syncDir(filepath.Dir(path))
}

type plannedBucket struct {
	name     string
	sequence uint64
	entries  [][2][]byte
}

// checkImport validates an export completely and returns what to write.
func checkImport(in exportFile) ([]plannedBucket, error) {
	if in.Format != ExportFormat {
		return nil, fmt.Errorf("format %q, want %q", in.Format, ExportFormat)
	}
	if in.Schema < 1 || in.Schema > SchemaVersion {
		return nil, fmt.Errorf("schema version %d; this binary knows 1 to %d", in.Schema, SchemaVersion)
	}
	want := map[string]bool{}
	for _, name := range bucketsAt(in.Schema) {
		want[string(name)] = true
	}
	var plan []plannedBucket
	keys := map[string]map[string][]byte{} // bucket → key → value, for cross checks
	for _, eb := range in.Buckets {
		c, ok := codecs[eb.Name]
		if !ok || !want[eb.Name] {
			return nil, fmt.Errorf("bucket %q is not part of schema %d", eb.Name, in.Schema)
		}
		if keys[eb.Name] != nil {
			return nil, fmt.Errorf("bucket %q given twice", eb.Name)
		}
		delete(want, eb.Name)
		keys[eb.Name] = map[string][]byte{}
		pb := plannedBucket{name: eb.Name, sequence: eb.Sequence}
		for i, e := range eb.Entries {
			k, v, err := c.decode(e)
			if err != nil {
				return nil, fmt.Errorf("%s entry %d (%q): %w", eb.Name, i, e.Key, err)
			}
			if _, dup := keys[eb.Name][string(k)]; dup {
				return nil, fmt.Errorf("%s: key %q given twice", eb.Name, e.Key)
			}
			keys[eb.Name][string(k)] = v
			pb.entries = append(pb.entries, [2][]byte{k, v})
		}
		plan = append(plan, pb)
	}
	for name := range want {
		return nil, fmt.Errorf("bucket %q is missing", name)
	}
	for h, id := range keys["token_hashes"] {
		v, ok := keys["tokens"][string(id)]
		var r tokenRecord
		if !ok || json.Unmarshal(v, &r) != nil || !bytes.Equal(r.Hash, []byte(h)) {
			return nil, fmt.Errorf("token_hashes: %x does not match token %q", h, id)
		}
	}
	for id := range keys["pending"] {
		v, ok := keys["commands"][id]
		var r commandRecord
		if !ok || json.Unmarshal(v, &r) != nil || r.Status != "sent" {
			return nil, fmt.Errorf("pending: command %q is not a sent command", id)
		}
	}
	return plan, nil
}

// decode turns an export entry back into the key and value stored.
func (c bucketCodec) decode(e exportEntry) (k, v []byte, err error) {
	k = []byte(e.Key)
	if c.hexKey {
		if k, err = hex.DecodeString(e.Key); err != nil {
			return nil, nil, errors.New("key is not hex")
		}
	}
	if len(k) == 0 || (c.keyLen > 0 && len(k) != c.keyLen) {
		return nil, nil, fmt.Errorf("key of %d bytes", len(k))
	}
	switch {
	case c.empty:
		if string(e.Value) != "null" {
			return nil, nil, errors.New("value must be null")
		}
		return k, []byte{}, nil
	case c.text:
		var s string
		if err := json.Unmarshal(e.Value, &s); err != nil || s == "" {
			return nil, nil, errors.New("value must be a non-empty string")
		}
		return k, []byte(s), nil
	case c.binary:
		var b []byte
		if err := json.Unmarshal(e.Value, &b); err != nil || len(b) == 0 {
			return nil, nil, errors.New("value must be non-empty base64")
		}
		return k, b, nil
	}
	if len(bytes.TrimSpace(e.Value)) == 0 || bytes.TrimSpace(e.Value)[0] != '{' {
		return nil, nil, errors.New("value must be a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(e.Value))
	dec.DisallowUnknownFields()
	if err := dec.Decode(c.value()); err != nil {
		return nil, nil, fmt.Errorf("value: %w", err)
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, e.Value); err != nil {
		return nil, nil, err
	}
	return k, buf.Bytes(), nil
}
