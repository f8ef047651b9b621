// Package store keeps Gatehouse's state in one bbolt file and implements
// actions.Store.
//
// Every value is the JSON of an unexported record struct, never of an
// actions type, so the API can change without rewriting the file. Keys are
// natural ids as bytes. The buckets are:
//
//	meta          "schema_version" → 8-byte big-endian uint64: how many
//	              migrations have run on this file;
//	              "event_count" → the number of events at some moment and
//	              the events bucket's sequence at that moment, 8 bytes
//	              big-endian each: every append takes one sequence number,
//	              so the count now is the stored one plus how far the
//	              sequence has moved; written by PruneEvents, never by
//	              appends, and counted once when missing (an older file,
//	              an import: meta is not exported)
//	devices       device id → deviceRecord (Online is never stored:
//	              presence lives in memory)
//	users         user name → userRecord
//	tokens        token id → tokenRecord
//	token_hashes  SHA-256 of the token secret (32 bytes) → token id
//	commands      command id → commandRecord
//	pending       command id → empty value, present exactly when the
//	              command's status is "sent"; PutCommand maintains it
//	events        8-byte big-endian unix nanoseconds of the event time +
//	              8-byte big-endian NextSequence of the bucket → eventRecord;
//	              the event id (and page cursor) is the key in lowercase hex
//	grants        grant id → grantRecord (schema 2)
//	pairings      SHA-256 of the normalised pairing code → pairingRecord;
//	              a spent code is deleted (schema 2)
//	strangers     event key of the stranger event → strangerRecord (device,
//	              time, type, size, SHA-256) (schema 3)
//	pictures      event key → the picture's bytes (schema 3)
//	settings      name → raw value; "link_key" is the 32-byte HMAC key of
//	              signed picture links (schema 3)
//	scripts       script name → scriptRecord (Starlark source, version,
//	              created, updated, by) (schema 4)
//	logins        identity ("user:<name>" or "device:<id>") → loginRecord:
//	              up to 16 addresses (IPv4, or an IPv6 /64) the identity
//	              logged in from correctly, each with when it was last
//	              written; rewritten at most once per address and hour,
//	              deleted with its user or device (schema 5)
//	events_by_device, events_by_type, events_by_user
//	              the event's device, type or person (User), a zero byte,
//	              then the first event key of a chunk → up to 32 event
//	              keys in order (16 bytes each): secondary indexes of
//	              events, one key per event and non-empty field of at
//	              most 512 bytes without a zero byte (schema 6; in chunks
//	              since schema 7, which rebuilds them). Derived data: written by
//	              AppendEvent and deleted by PruneEvents in the same
//	              transaction as their event, never exported, and rebuilt
//	              by Open when missing (an import) or unfinished. While
//	              Open builds them (a new schema 6 file, an import, a lost
//	              index bucket), meta holds "index_build" → the key of the
//	              last event indexed (empty: none yet); the build goes in
//	              transactions of 20,000 events, resumes there after a
//	              crash, and no query uses the indexes while it exists
//
// Events are read newest first with a cursor that starts at the end, or at
// the key just before the one a page cursor decodes to, and walks back.
// A query by device, type or person walks that index instead (the entries
// of one value sort by event key, so by time); with several of them it
// leapfrogs (each index seeks to the key another is on), and a person's
// query walks the union of their granted devices' entries, each from the
// time their first grant was made. Only the events those walks yield are
// decoded: a page of 50 decodes 51 records, plus those the access filter
// turns down, at any log size. Devices are paged by seeking to the id
// after the cursor.
//
// Retention (PruneEvents) walks the events from the first key, deleting the
// oldest in transactions of a bounded size; with each event go the picture
// under the same key in strangers and pictures, and the command it names
// unless that command is in pending. Pictures older than the age limit go
// by a walk of strangers from its first key. bbolt reuses the freed pages,
// so the file stops growing under a steady load.
//
// Open runs an append-only list of migrations inside one Update transaction
// together with the bump of the schema version; a file written by a newer
// binary (a version above SchemaVersion) is refused. Filling the event
// indexes (migration 6, or an import) follows in transactions of its own.
package store
