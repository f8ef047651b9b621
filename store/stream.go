package store

import (
	"bufio"
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

// The export is streamed both ways, entry by entry, so that export and
// import use memory bounded by the largest record (a picture), whatever
// the size of the store: building the whole document in memory took
// 2.1 GB to export a 320 MB store.

// exportEntry is one key and value of a bucket in the export.
type exportEntry struct {
	Key   string          `json:"key"`
	Value json.RawMessage `json:"value"`
}

// Import commits every importBatch bytes of values, so that a large import
// never holds the whole store in one transaction's dirty pages. The file
// being written is a temporary one, renamed into place only when complete,
// so the batches do not make a failed import visible.
const importBatch = 16 << 20

// exportTo writes the export to w from one read transaction. The layout is
// the one json.MarshalIndent gives with a two-space indent, written a
// piece at a time.
func (db *DB) exportTo(w io.Writer) error {
	bw := bufio.NewWriterSize(w, 256<<10)
	err := db.bolt.View(func(btx *bbolt.Tx) error {
		v, err := schemaOf(btx)
		if err != nil {
			return err
		}
		format, _ := json.Marshal(ExportFormat)
		fmt.Fprintf(bw, "{\n  \"format\": %s,\n  \"schema\": %d,\n  \"buckets\": [", format, v)
		for i, name := range bucketsAt(v) {
			b := btx.Bucket(name)
			c := codecs[string(name)]
			if i > 0 {
				bw.WriteByte(',')
			}
			quoted, _ := json.Marshal(string(name))
			fmt.Fprintf(bw, "\n    {\n      \"name\": %s,", quoted)
			if seq := b.Sequence(); seq != 0 {
				fmt.Fprintf(bw, "\n      \"sequence\": %d,", seq)
			}
			bw.WriteString("\n      \"entries\": [")
			n := 0
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
					e.Value = json.RawMessage(v) // copied by MarshalIndent
				}
				out, err := json.MarshalIndent(e, "        ", "  ")
				if err != nil {
					return fmt.Errorf("%s %q: %w", name, e.Key, err)
				}
				if n > 0 {
					bw.WriteByte(',')
				}
				n++
				bw.WriteString("\n        ")
				_, err = bw.Write(out)
				return err
			})
			if err != nil {
				return err
			}
			if n > 0 {
				bw.WriteString("\n      ")
			}
			bw.WriteString("]\n    }")
		}
		_, err = bw.WriteString("\n  ]\n}\n")
		return err
	})
	if err == nil {
		err = bw.Flush()
	}
	if err != nil {
		return fmt.Errorf("export: %w", err)
	}
	return nil
}

// importer writes an export into a new bbolt file as it reads it.
type importer struct {
	dec     *json.Decoder
	b       *bbolt.DB
	tx      *bbolt.Tx // the open batch, nil between batches
	pending int       // bytes written in tx
	schema  int
	want    map[string]bool // buckets of the schema not seen yet
	done    map[string]bool // buckets seen
}

// importFrom creates the store at path from the export read from r, into a
// temporary file renamed into place only once everything is written and
// checked: a failed import leaves nothing behind.
func importFrom(path string, r io.Reader) error {
	if _, err := os.Stat(path); err == nil {
		return fmt.Errorf("import: %s exists: import wants an empty data dir", path)
	}
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".importing")
	os.Remove(tmp)
	defer os.Remove(tmp)
	// NoSync while writing: the file is synced once, whole, before the rename.
	b, err := bbolt.Open(tmp, 0o600, &bbolt.Options{Timeout: lockTimeout, NoSync: true})
	if err != nil {
		return fmt.Errorf("import: %w", err)
	}
	dec := json.NewDecoder(bufio.NewReaderSize(r, 256<<10))
	dec.DisallowUnknownFields()
	im := &importer{dec: dec, b: b}
	err = im.file()
	if err == nil {
		err = im.commit()
	} else if im.tx != nil {
		im.tx.Rollback()
	}
	if err == nil {
		err = b.View(crossCheck)
	}
	if err == nil {
		err = b.Sync()
	}
	if cerr := b.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("write: %w", cerr)
	}
	if err != nil {
		return fmt.Errorf("import: %w", err)
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

func notExport(err error) error {
	return fmt.Errorf("not a gatehouse export: %w", err)
}

// delim reads the JSON delimiter want.
func (im *importer) delim(want json.Delim) error {
	t, err := im.dec.Token()
	if err != nil {
		return notExport(err)
	}
	if d, ok := t.(json.Delim); !ok || d != want {
		return notExport(fmt.Errorf("%v where %v was expected", t, want))
	}
	return nil
}

// key reads an object's next key.
func (im *importer) key() (string, error) {
	t, err := im.dec.Token()
	if err != nil {
		return "", notExport(err)
	}
	k, ok := t.(string)
	if !ok {
		return "", notExport(fmt.Errorf("%v where a key was expected", t))
	}
	return k, nil
}

func (im *importer) value(v any, what string) error {
	if err := im.dec.Decode(v); err != nil {
		return notExport(fmt.Errorf("%s: %w", what, err))
	}
	return nil
}

// file reads the whole export: format and schema first, then the buckets.
func (im *importer) file() error {
	if err := im.delim('{'); err != nil {
		return err
	}
	var format string
	for im.dec.More() {
		k, err := im.key()
		if err != nil {
			return err
		}
		switch k {
		case "format":
			if err := im.value(&format, k); err != nil {
				return err
			}
			if format != ExportFormat {
				return fmt.Errorf("format %q, want %q", format, ExportFormat)
			}
		case "schema":
			if err := im.value(&im.schema, k); err != nil {
				return err
			}
			if err := im.startSchema(); err != nil {
				return err
			}
		case "buckets":
			if format == "" || im.want == nil {
				return errors.New(`"format" and "schema" must come before "buckets"`)
			}
			if err := im.delim('['); err != nil {
				return err
			}
			for im.dec.More() {
				if err := im.bucket(); err != nil {
					return err
				}
			}
			if err := im.delim(']'); err != nil {
				return err
			}
		default:
			return notExport(fmt.Errorf("unknown field %q", k))
		}
	}
	if format != ExportFormat {
		return fmt.Errorf("format %q, want %q", format, ExportFormat)
	}
	if im.want == nil {
		return errors.New("no schema version")
	}
	for name := range im.want {
		return fmt.Errorf("bucket %q is missing", name)
	}
	return im.delim('}')
}

func (im *importer) startSchema() error {
	if im.want != nil {
		return errors.New(`"schema" given twice`)
	}
	if im.schema < 1 || im.schema > SchemaVersion {
		return fmt.Errorf("schema version %d; this binary knows 1 to %d", im.schema, SchemaVersion)
	}
	im.want, im.done = map[string]bool{}, map[string]bool{}
	for _, name := range bucketsAt(im.schema) {
		im.want[string(name)] = true
	}
	return im.update(func(tx *bbolt.Tx) error {
		meta, err := tx.CreateBucket(bucketMeta)
		if err != nil {
			return err
		}
		return meta.Put(keySchemaVersion, u64(uint64(im.schema)))
	})
}

// bucket reads one bucket object: its name, sequence and entries.
func (im *importer) bucket() error {
	if err := im.delim('{'); err != nil {
		return err
	}
	var name string
	var c bucketCodec
	var seq uint64
	for im.dec.More() {
		k, err := im.key()
		if err != nil {
			return err
		}
		switch k {
		case "name":
			if err := im.value(&name, k); err != nil {
				return err
			}
			var ok bool
			if im.done[name] {
				return fmt.Errorf("bucket %q given twice", name)
			}
			if c, ok = codecs[name]; !ok || !im.want[name] {
				return fmt.Errorf("bucket %q is not part of schema %d", name, im.schema)
			}
			delete(im.want, name)
			im.done[name] = true
			if err := im.update(func(tx *bbolt.Tx) error { _, err := tx.CreateBucket([]byte(name)); return err }); err != nil {
				return err
			}
		case "sequence":
			if err := im.value(&seq, k); err != nil {
				return err
			}
		case "entries":
			if name == "" {
				return errors.New(`a bucket's "name" must come before its "entries"`)
			}
			if err := im.entries(name, c); err != nil {
				return err
			}
		default:
			return notExport(fmt.Errorf("unknown field %q in bucket %q", k, name))
		}
	}
	if name == "" {
		return errors.New(`bucket "" is not part of the schema`)
	}
	if err := im.update(func(tx *bbolt.Tx) error { return tx.Bucket([]byte(name)).SetSequence(seq) }); err != nil {
		return err
	}
	return im.delim('}')
}

// entries reads and writes a bucket's entries, each checked as it comes.
func (im *importer) entries(name string, c bucketCodec) error {
	if err := im.delim('['); err != nil {
		return err
	}
	for i := 0; im.dec.More(); i++ {
		var e exportEntry
		if err := im.value(&e, fmt.Sprintf("%s entry %d", name, i)); err != nil {
			return err
		}
		k, v, err := c.decode(e)
		if err != nil {
			return fmt.Errorf("%s entry %d (%q): %w", name, i, e.Key, err)
		}
		err = im.update(func(tx *bbolt.Tx) error {
			bk := tx.Bucket([]byte(name))
			if got, _ := bk.Cursor().Seek(k); bytes.Equal(got, k) {
				return fmt.Errorf("%s: key %q given twice", name, e.Key)
			}
			return bk.Put(k, v)
		})
		if err != nil {
			return err
		}
		im.pending += len(k) + len(v)
	}
	return im.delim(']')
}

// update runs fn in the open batch, committing the batch once it holds
// importBatch bytes.
func (im *importer) update(fn func(*bbolt.Tx) error) error {
	if im.pending >= importBatch {
		if err := im.commit(); err != nil {
			return err
		}
	}
	if im.tx == nil {
		tx, err := im.b.Begin(true)
		if err != nil {
			return fmt.Errorf("write: %w", err)
		}
		im.tx, im.pending = tx, 0
	}
	return fn(im.tx)
}

func (im *importer) commit() error {
	if im.tx == nil {
		return nil
	}
	tx := im.tx
	im.tx = nil
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	return nil
}

// crossCheck checks what one entry cannot: every token hash names a token
// with that hash, every pending command is a sent command.
func crossCheck(tx *bbolt.Tx) error {
	tokens, commands := tx.Bucket([]byte("tokens")), tx.Bucket([]byte("commands"))
	if hashes := tx.Bucket([]byte("token_hashes")); hashes != nil {
		err := hashes.ForEach(func(h, id []byte) error {
			var r tokenRecord
			v := tokens.Get(id)
			if v == nil || json.Unmarshal(v, &r) != nil || !bytes.Equal(r.Hash, h) {
				return fmt.Errorf("token_hashes: %x does not match token %q", h, id)
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	if pending := tx.Bucket([]byte("pending")); pending != nil {
		return pending.ForEach(func(id, _ []byte) error {
			var r commandRecord
			v := commands.Get(id)
			if v == nil || json.Unmarshal(v, &r) != nil || r.Status != "sent" {
				return fmt.Errorf("pending: command %q is not a sent command", id)
			}
			return nil
		})
	}
	return nil
}
