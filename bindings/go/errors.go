package vicpull

import (
	"errors"
	"fmt"
	"strings"
)

// Code is a vic_result value: the outcome of a library call or of a pull.
// Values are fixed by the C API and never reused.
type Code uint32

// The result codes of include/vicpull.h (VIC_RESULT_*).
const (
	CodeOK              Code = 0
	CodePending         Code = 1
	CodeInvalidArgument Code = 2
	CodeBadReference    Code = 3
	CodeAuth            Code = 4
	CodeNotFound        Code = 5
	CodeNetwork         Code = 6
	CodeRegistry        Code = 7
	CodeDigestMismatch  Code = 8
	CodeUnsupported     Code = 9
	CodeStoreIO         Code = 10
	CodeCancelled       Code = 11
	CodeInternal        Code = 12
	CodeRateLimited     Code = 13
	CodeBufferTooSmall  Code = 14
	CodeHostRejected    Code = 15
)

var codeNames = [...]string{
	"OK", "PENDING", "INVALID_ARGUMENT", "BAD_REFERENCE", "AUTH", "NOT_FOUND",
	"NETWORK", "REGISTRY", "DIGEST_MISMATCH", "UNSUPPORTED", "STORE_IO",
	"CANCELLED", "INTERNAL", "RATE_LIMITED", "BUFFER_TOO_SMALL", "HOST_REJECTED",
}

// String is the constant's name as vic_result_name spells it, e.g.
// "DIGEST_MISMATCH"; "UNKNOWN" for a value the C API does not define.
func (c Code) String() string {
	if int(c) < len(codeNames) {
		return codeNames[c]
	}
	return "UNKNOWN"
}

// Sentinels, one per failure code, for errors.Is:
//
//	if errors.Is(err, vicpull.ErrNotFound) { ... }
//
// Every error this package returns for a library failure is an *Error; use
// errors.As to read its Code and the library's Message.
var (
	ErrInvalidArgument = &sentinel{CodeInvalidArgument}
	ErrBadReference    = &sentinel{CodeBadReference}
	ErrAuth            = &sentinel{CodeAuth}
	ErrNotFound        = &sentinel{CodeNotFound}
	ErrNetwork         = &sentinel{CodeNetwork}
	ErrRegistry        = &sentinel{CodeRegistry}
	ErrDigestMismatch  = &sentinel{CodeDigestMismatch}
	ErrUnsupported     = &sentinel{CodeUnsupported}
	ErrStoreIO         = &sentinel{CodeStoreIO}
	ErrCancelled       = &sentinel{CodeCancelled}
	ErrInternal        = &sentinel{CodeInternal}
	ErrRateLimited     = &sentinel{CodeRateLimited}
	ErrBufferTooSmall  = &sentinel{CodeBufferTooSmall}
	// ErrHostRejected: Options.OnCommit refused a layer; the *Error wraps
	// what the hook returned.
	ErrHostRejected = &sentinel{CodeHostRejected}
)

var sentinels = map[Code]*sentinel{}

func init() {
	for _, s := range []*sentinel{
		ErrInvalidArgument, ErrBadReference, ErrAuth, ErrNotFound, ErrNetwork,
		ErrRegistry, ErrDigestMismatch, ErrUnsupported, ErrStoreIO, ErrCancelled,
		ErrInternal, ErrRateLimited, ErrBufferTooSmall, ErrHostRejected,
	} {
		sentinels[s.code] = s
	}
}

// sentinel is the type of the Err* values: comparable by identity, and
// matched by an *Error of the same code.
type sentinel struct{ code Code }

func (s *sentinel) Error() string {
	return "vicpull: " + strings.ToLower(strings.ReplaceAll(s.code.String(), "_", " "))
}

// Error is a failure reported by libvicpull: the result code and the
// library's message (without the "CODE: " prefix the C API puts on
// vic_last_error_message text).
type Error struct {
	Code    Code
	Message string
	// cause is what made the binding cancel (ctx.Err()), or what OnCommit
	// returned when it refused a layer, if anything.
	cause error
}

func (e *Error) Error() string {
	if e.Message == "" {
		return fmt.Sprintf("vicpull: %s", e.Code)
	}
	return fmt.Sprintf("vicpull: %s: %s", e.Code, e.Message)
}

// Is makes errors.Is(err, ErrX) true for an *Error whose Code is X's.
func (e *Error) Is(target error) bool {
	s, ok := target.(*sentinel)
	return ok && s.code == e.Code
}

// Unwrap returns the context error when the pull was cancelled through
// its context, so errors.Is(err, context.Canceled) holds, and the hook's
// error (or *CallbackPanicError) when OnCommit refused a layer.
func (e *Error) Unwrap() error { return e.cause }

// newError builds an *Error from a code and library text, dropping a
// leading "NAME: " that vic_last_error_message adds.
func newError(code Code, message string) *Error {
	message = strings.TrimPrefix(message, code.String()+": ")
	return &Error{Code: code, Message: message}
}

// CallbackPanicError reports that a callback panicked: OnProgress (the
// pull was cancelled and Pull returns this error) or OnCommit (the layer
// was refused and Pull's HOST_REJECTED *Error wraps this error). Value is
// what the callback panicked with and Stack the goroutine's stack then.
type CallbackPanicError struct {
	// Callback is "OnProgress" or "OnCommit".
	Callback string
	Value    any
	Stack    []byte
}

func (e *CallbackPanicError) Error() string {
	if e.Callback == "OnCommit" {
		return fmt.Sprintf("vicpull: commit hook panicked: %v", e.Value)
	}
	return fmt.Sprintf("vicpull: progress callback panicked: %v", e.Value)
}

// Unwrap returns the panic value when it is an error.
func (e *CallbackPanicError) Unwrap() error {
	err, _ := e.Value.(error)
	return err
}

var errClosed = errors.New("vicpull: pull handle used after Close")
