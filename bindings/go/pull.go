package vicpull

// #include <stdlib.h>
// #include "shim.h"
import "C"

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"runtime/cgo"
	"sync"
	"unsafe"
)

// Pull pulls an image into opts.Store and returns what was pulled.
//
// It blocks until the pull ends. Progress events go to opts.OnProgress, in
// order; all of them have been delivered when Pull returns. When ctx is
// done first, the pull is cancelled and Pull returns promptly with an
// *Error of code CodeCancelled that wraps ctx.Err(), so both
// errors.Is(err, context.Canceled) and errors.Is(err, ErrCancelled) hold.
// A library failure is an *Error matching one of the Err* sentinels.
func Pull(ctx context.Context, opts Options) (*Result, error) {
	if err := ctx.Err(); err != nil {
		msg := "context done before the pull started"
		return nil, &Error{Code: CodeCancelled, Message: msg, cause: err}
	}
	h, err := Start(opts)
	if err != nil {
		return nil, err
	}
	defer h.Close()
	return h.Wait(ctx)
}

// Handle is a pull started with Start. Its methods may be called from any
// goroutine. Close it when done; a Handle that becomes unreachable is
// closed by the garbage collector, which cancels the pull.
type Handle struct {
	c  *cpull
	st *pullState

	waitMu sync.Mutex
	waited bool
	result *Result
	err    error
}

// cpull owns the C handle. It is shared with the dispatcher goroutine
// (which may cancel), so that goroutine does not keep the Handle alive.
type cpull struct {
	mu sync.Mutex // held across every C call that uses p, and by free
	p  *C.vic_pull
}

// with runs f with the live C handle under the lock; false after Close.
func (c *cpull) with(f func(p *C.vic_pull)) bool {
	debugGC()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.p == nil {
		return false
	}
	f(c.p)
	return true
}

func (c *cpull) cancel() { c.with(func(p *C.vic_pull) { C.vic_pull_cancel(p) }) }

// free releases the C handle. It takes the handle under the lock but
// frees it outside: vic_pull_free waits for a running callback, and the
// commit trampoline may be waiting for the dispatcher, which may be
// waiting for this lock to cancel.
func (c *cpull) free() {
	c.mu.Lock()
	p := c.p
	c.p = nil
	c.mu.Unlock()
	if p != nil {
		C.vic_pull_free(p)
	}
}

// Start begins a pull and returns at once; see Pull for the blocking form.
// The options are checked by the library: a bad option is an *Error with
// CodeInvalidArgument (or CodeBadReference) and the library's message.
func Start(opts Options) (*Handle, error) {
	js, err := opts.json()
	if err != nil {
		return nil, &Error{Code: CodeInvalidArgument, Message: err.Error()}
	}
	st := newPullState()
	handle := cgo.NewHandle(st)
	cjs := C.CString(string(js))
	defer C.free(unsafe.Pointer(cjs))

	var p *C.vic_pull
	var cerr *C.char
	wantProgress, wantCommit := C.int(0), C.int(0)
	if opts.OnProgress != nil {
		wantProgress = 1
	}
	if opts.OnCommit != nil {
		wantCommit = 1
	}
	rc := C.vicgo_pull_start(cjs, C.uintptr_t(handle), wantProgress, wantCommit, &p, &cerr)
	if rc != C.VIC_RESULT_OK {
		// The library never saw the handle, so no finalizer will run.
		handle.Delete()
		msg := C.GoString(cerr)
		C.free(unsafe.Pointer(cerr))
		return nil, newError(Code(rc), msg)
	}

	h := &Handle{c: &cpull{p: p}, st: st}
	if opts.OnProgress != nil || opts.OnCommit != nil {
		go st.dispatch(hooks{progress: opts.OnProgress, commit: opts.OnCommit}, h.c)
	} else {
		close(st.dispatched)
	}
	runtime.SetFinalizer(h, (*Handle).Close)
	return h, nil
}

// Cancel asks the pull to stop; it returns at once and is idempotent.
// Wait then reports CodeCancelled (unless the pull had already finished).
func (h *Handle) Cancel() {
	h.c.cancel()
	runtime.KeepAlive(h)
}

// Status reports the pull's state and counters without blocking.
func (h *Handle) Status() (Status, error) {
	var s C.vic_pull_status
	var rc C.vic_result
	if !h.c.with(func(p *C.vic_pull) { rc = C.vic_pull_poll(p, 0, &s) }) {
		return Status{}, errClosed
	}
	runtime.KeepAlive(h)
	if rc != C.VIC_RESULT_OK {
		return Status{}, &Error{Code: Code(rc), Message: "vic_pull_poll failed"}
	}
	return Status{
		State:       State(s.state),
		Result:      Code(s.result),
		LayersTotal: uint32(s.layers_total),
		LayersDone:  uint32(s.layers_done),
		BytesTotal:  uint64(s.bytes_total),
		BytesDone:   uint64(s.bytes_done),
	}, nil
}

// Wait blocks until the pull ends, ctx is done, or OnProgress panics,
// and returns the outcome (see Pull). It may be called again: later calls
// return the same outcome.
func (h *Handle) Wait(ctx context.Context) (*Result, error) {
	h.waitMu.Lock()
	defer h.waitMu.Unlock()
	defer runtime.KeepAlive(h)
	if !h.waited {
		h.result, h.err = h.wait(ctx)
		h.waited = true
	}
	return h.result, h.err
}

func (h *Handle) wait(ctx context.Context) (*Result, error) {
	st := h.st
	var cause error
	select {
	case <-st.done:
	case <-st.userFailed: // the dispatcher has cancelled the pull
	case <-ctx.Done():
		cause = ctx.Err()
		h.c.cancel()
	}
	// After a cancel the library ends within milliseconds; on_done is
	// always delivered, even by vic_pull_free.
	<-st.done
	if cause != nil {
		st.stopDispatch()
	}
	<-st.dispatched

	st.mu.Lock()
	code, message, panicked, fault, veto := st.code, st.message, st.panicked, st.fault, st.veto
	st.mu.Unlock()
	switch {
	case panicked != nil:
		return nil, panicked
	case fault != nil:
		return nil, &Error{Code: CodeInternal, Message: fmt.Sprintf("go binding: %v", fault)}
	case code == CodeCancelled && cause != nil:
		return nil, &Error{Code: code, Message: message, cause: cause}
	case code == CodeHostRejected && veto != nil:
		return nil, &Error{Code: code, Message: message, cause: veto}
	case code != CodeOK:
		return nil, newError(code, message)
	}
	return h.readResult()
}

func (h *Handle) readResult() (*Result, error) {
	var text []byte
	var rc C.vic_result
	ok := h.c.with(func(p *C.vic_pull) {
		var n C.size_t
		rc = C.vic_pull_result_json(p, nil, 0, &n)
		if rc != C.VIC_RESULT_BUFFER_TOO_SMALL {
			return
		}
		buf := C.malloc(n + 1)
		defer C.free(buf)
		rc = C.vic_pull_result_json(p, (*C.char)(buf), n+1, &n)
		text = C.GoBytes(buf, C.int(n))
	})
	if !ok {
		return nil, errClosed
	}
	if rc != C.VIC_RESULT_OK {
		return nil, &Error{Code: Code(rc), Message: "cannot read the result JSON"}
	}
	var r Result
	if err := json.Unmarshal(text, &r); err != nil {
		return nil, &Error{Code: CodeInternal, Message: "bad result JSON: " + err.Error()}
	}
	r.JSON = text
	return &r, nil
}

// Close cancels the pull if it still runs and releases the library handle;
// no callback starts after it returns (one already running may finish; a
// running OnCommit is waited for, and a layer not yet offered is refused).
// Close is idempotent and always returns nil.
func (h *Handle) Close() error {
	runtime.SetFinalizer(h, nil)
	h.st.stopDispatch()
	h.c.free()
	return nil
}

// Version is the library's version, e.g. "0.1.0".
func Version() string { return C.GoString(C.vic_version()) }

// codeName is vic_result_name, for tests that check Code.String.
func codeName(c Code) string { return C.GoString(C.vic_result_name(C.uint32_t(c))) }
