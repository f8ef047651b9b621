package actions

import (
	"errors"
	"fmt"
)

// Error codes. Each maps to one HTTP status and one MQTT error reply.
const (
	EInvalid      = "invalid"
	EUnauthorized = "unauthorized"
	EForbidden    = "forbidden"
	ENotFound     = "not_found"
	EConflict     = "conflict"
	EUnavailable  = "unavailable"
	ETooMany      = "too_many_requests"
	EInternal     = "internal"
	// EBusy: the server is at a bound it keeps for one device or for
	// itself (a device's queue of messages is full, too many commands are
	// waiting); the same request may succeed shortly.
	EBusy = "busy"

	// EStorageFull and EStorage say that a write was not committed because
	// the data file could not be written: its disk is full (or over quota),
	// or it failed otherwise (an I/O error, a read-only file system).
	// Nothing of that write was kept, and nothing may be acknowledged as if
	// it had been; the same request can succeed once the fault is gone.
	EStorageFull = "storage_full"
	EStorage     = "storage_failed"
)

// Error is the application error: Message is safe to show to a client.
type Error struct {
	Code    string
	Message string
}

func (e *Error) Error() string { return e.Message }

// Errorf returns an *Error with the given code and a formatted message.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// ErrorCode returns the code of the first *Error in err's chain, EInternal
// for any other error and "" for nil.
func ErrorCode(err error) string {
	if err == nil {
		return ""
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return EInternal
}

// IsStorageFailure reports whether err says a write could not be committed
// because the data file could not be written (EStorageFull, EStorage), as
// opposed to a write the request itself made fail.
func IsStorageFailure(err error) bool {
	code := ErrorCode(err)
	return code == EStorageFull || code == EStorage
}

// ErrorMessage returns the client-safe message of err: the message of its
// *Error, or "internal error" for anything else.
func ErrorMessage(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Message
	}
	return "internal error"
}
