package store

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"go.etcd.io/bbolt"
)

// ExportFormat names the JSON export format (see docs/backup.md).
const ExportFormat = "gatehouse-export"

// The export is one JSON object: "format", "schema", then "buckets", each
// {"name", "sequence", "entries": [{"key", "value"}]}, every data bucket
// entry by entry in key order, with each value as the record JSON kept in
// the file. Nothing in it depends on when it was made, so export → import
// → export gives the same bytes. Both directions stream (stream.go).

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
// transaction, entry by entry: memory stays bounded whatever the store's
// size.
func (db *DB) Export(w io.Writer) error { return db.exportTo(w) }

func schemaOf(btx *bbolt.Tx) (int, error) {
	meta := btx.Bucket(bucketMeta)
	if meta == nil || len(meta.Get(keySchemaVersion)) != 8 {
		return 0, errors.New("no schema version")
	}
	return int(u64dec(meta.Get(keySchemaVersion))), nil
}

// Import creates the store at path from an export read from r. It refuses
// to overwrite an existing file and checks every entry as it reads it,
// writing to a temporary file that is renamed into place only when the
// whole export is in and checked, so a failed import leaves nothing behind.
// It streams: memory stays bounded whatever the export's size.
func Import(path string, r io.Reader) error { return importFrom(path, r) }

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
