package store

import (
	"encoding/json"
	"fmt"
	"time"

	"gatehouse/actions"
)

// scriptRecord is a script as stored; its name is its key.
type scriptRecord struct {
	Source  string    `json:"source"`
	Version int       `json:"version"`
	Created time.Time `json:"created"`
	Updated time.Time `json:"updated"`
	By      string    `json:"by"`
}

func decodeScript(k, v []byte) (actions.Script, error) {
	var r scriptRecord
	if err := json.Unmarshal(v, &r); err != nil {
		return actions.Script{}, fmt.Errorf("decode script %q: %w", k, err)
	}
	return actions.Script{Name: string(k), Source: r.Source, Version: r.Version, Created: r.Created,
		Updated: r.Updated, By: r.By}, nil
}

// Script returns the script name.
func (t *tx) Script(name string) (actions.Script, error) {
	v := t.tx.Bucket(bucketScripts).Get([]byte(name))
	if v == nil {
		return actions.Script{}, actions.Errorf(actions.ENotFound, "script %q not found", name)
	}
	return decodeScript([]byte(name), v)
}

// Scripts returns every script, ordered by name.
func (t *tx) Scripts() ([]actions.Script, error) {
	scripts := []actions.Script{}
	err := t.tx.Bucket(bucketScripts).ForEach(func(k, v []byte) error {
		sc, err := decodeScript(k, v)
		scripts = append(scripts, sc)
		return err
	})
	return scripts, err
}

// PutScript creates or replaces the script sc.Name.
func (t *tx) PutScript(sc actions.Script) error {
	if sc.Name == "" {
		return actions.Errorf(actions.EInvalid, "script name is required")
	}
	v, err := json.Marshal(scriptRecord{Source: sc.Source, Version: sc.Version, Created: sc.Created,
		Updated: sc.Updated, By: sc.By})
	if err != nil {
		return fmt.Errorf("encode script %q: %w", sc.Name, err)
	}
	return t.tx.Bucket(bucketScripts).Put([]byte(sc.Name), v)
}

// DeleteScript removes the script name.
func (t *tx) DeleteScript(name string) error {
	if _, err := t.Script(name); err != nil {
		return err
	}
	return t.tx.Bucket(bucketScripts).Delete([]byte(name))
}
