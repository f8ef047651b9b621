// Package store keeps Gatehouse's state in one bbolt file and implements
// actions.Store.
//
// Every value is the JSON of an unexported record struct, never of an
// actions type, so the API can change without rewriting the file. Keys are
// natural ids as bytes. The buckets are:
//
//	meta          "schema_version" → 8-byte big-endian uint64: how many
//	              migrations have run on this file
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
//
// Events are read newest first with a cursor that starts at the end, or at
// the key just before the one a page cursor decodes to, and walks back.
//
// Open runs an append-only list of migrations inside one Update transaction
// together with the bump of the schema version; a file written by a newer
// binary (a version above SchemaVersion) is refused.
package store
