package store

import (
	"encoding/json"
	"fmt"
	"time"

	"gatehouse/actions"
)

// commandRecord is a command as stored.
type commandRecord struct {
	Device   string    `json:"device"`
	Verb     string    `json:"verb"`
	Status   string    `json:"status"`
	State    string    `json:"state,omitempty"`
	Reason   string    `json:"reason,omitempty"`
	By       string    `json:"by,omitempty"`
	Via      string    `json:"via,omitempty"`
	Grant    string    `json:"grant,omitempty"`
	Created  time.Time `json:"created"`
	NotAfter time.Time `json:"not_after,omitzero"`
}

func newCommandRecord(c actions.Command) commandRecord {
	return commandRecord{
		Device:   c.Device,
		Verb:     c.Verb,
		Status:   c.Status,
		State:    c.State,
		Reason:   c.Reason,
		By:       c.By,
		Via:      c.Via,
		Grant:    c.Grant,
		Created:  c.Created,
		NotAfter: c.NotAfter,
	}
}

func (r commandRecord) command(id string) actions.Command {
	return actions.Command{
		ID:       id,
		Device:   r.Device,
		Verb:     r.Verb,
		Status:   r.Status,
		State:    r.State,
		Reason:   r.Reason,
		By:       r.By,
		Via:      r.Via,
		Grant:    r.Grant,
		Created:  r.Created,
		NotAfter: r.NotAfter,
	}
}

// Command returns the command id.
func (t *tx) Command(id string) (actions.Command, error) {
	v := t.tx.Bucket(bucketCommands).Get([]byte(id))
	if v == nil {
		return actions.Command{}, actions.Errorf(actions.ENotFound, "command %q not found", id)
	}
	var r commandRecord
	if err := json.Unmarshal(v, &r); err != nil {
		return actions.Command{}, fmt.Errorf("decode command %q: %w", id, err)
	}
	return r.command(id), nil
}

// PutCommand creates or replaces the command c.ID and adds it to the
// pending index while its status is sent, removing it otherwise.
func (t *tx) PutCommand(c actions.Command) error {
	if c.ID == "" {
		return actions.Errorf(actions.EInvalid, "command id is required")
	}
	v, err := json.Marshal(newCommandRecord(c))
	if err != nil {
		return fmt.Errorf("encode command %q: %w", c.ID, err)
	}
	key := []byte(c.ID)
	if err := t.tx.Bucket(bucketCommands).Put(key, v); err != nil {
		return fmt.Errorf("put command %q: %w", c.ID, err)
	}
	pending := t.tx.Bucket(bucketPending)
	if c.Status == actions.StatusSent {
		err = pending.Put(key, []byte{})
	} else {
		err = pending.Delete(key)
	}
	if err != nil {
		return fmt.Errorf("index command %q: %w", c.ID, err)
	}
	return nil
}

// PendingCommands returns the commands whose status is sent, ordered by id.
func (t *tx) PendingCommands() ([]actions.Command, error) {
	commands := []actions.Command{}
	err := t.tx.Bucket(bucketPending).ForEach(func(k, _ []byte) error {
		c, err := t.Command(string(k))
		if err != nil {
			// The index names a command that is not there: the file
			// is inconsistent, which is never the caller's fault.
			return fmt.Errorf("pending command %q: %s", k, err)
		}
		commands = append(commands, c)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return commands, nil
}

// pruneCommand deletes the command id for retention unless it is still
// sent; it reports whether it deleted one (false too when already gone).
func (t *tx) pruneCommand(id string) (bool, error) {
	key := []byte(id)
	commands := t.tx.Bucket(bucketCommands)
	if t.tx.Bucket(bucketPending).Get(key) != nil || commands.Get(key) == nil {
		return false, nil
	}
	if err := commands.Delete(key); err != nil {
		return false, fmt.Errorf("prune command %q: %w", id, err)
	}
	return true, nil
}
