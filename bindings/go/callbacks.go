package vicpull

// The exported functions below are the Go ends of the C trampolines in
// shim.c. They run on the pull's library thread, so they only copy the
// event and hand it over, and never call the user. Only the commit
// trampoline (commit.go) blocks: the library waits for the hook's answer.

// #cgo CFLAGS: -I${SRCDIR}/../../include
// #include "shim.h"
import "C"

import (
	"fmt"
	"runtime/cgo"
	"runtime/debug"
	"sync"
)

// pullState is what user_data points at (through a cgo.Handle): the
// hand-over point between the library thread and Go.
type pullState struct {
	mu sync.Mutex
	// queue holds events and commit offers not yet given to the user's
	// hooks. It is unbounded so the library thread never waits for a slow
	// OnProgress.
	queue []item
	// notify has room for one token: "queue may be non-empty".
	notify chan struct{}
	// code and message are set by on_done, before done is closed.
	code    Code
	message string
	// done is closed by on_done: the outcome is known and the result JSON
	// readable.
	done chan struct{}
	// finalized is closed by the finalizer: no event will follow.
	finalized chan struct{}
	// stop is closed to make the dispatcher drop what is left.
	stop     chan struct{}
	stopOnce sync.Once
	// dispatched is closed when the dispatcher goroutine has returned.
	dispatched chan struct{}
	// userFailed is closed when OnProgress panicked (see panicked).
	userFailed chan struct{}
	panicked   *CallbackPanicError
	// veto is what OnCommit returned (or its recovered panic) when it
	// refused a layer; Wait wraps it in the HOST_REJECTED error.
	veto error
	// fault is a panic inside a trampoline (a bug in this package).
	fault any
}

func newPullState() *pullState {
	return &pullState{
		notify:     make(chan struct{}, 1),
		done:       make(chan struct{}),
		finalized:  make(chan struct{}),
		stop:       make(chan struct{}),
		dispatched: make(chan struct{}),
		userFailed: make(chan struct{}),
	}
}

// item is one thing for the dispatcher: a progress event, or a layer
// offered to OnCommit when commit is set.
type item struct {
	progress Progress
	commit   *commitOffer
}

// hooks are the user's callbacks; either may be nil.
type hooks struct {
	progress func(Progress)
	commit   func(LayerCommit) error
}

func (s *pullState) push(it item) {
	s.mu.Lock()
	s.queue = append(s.queue, it)
	s.mu.Unlock()
	select {
	case s.notify <- struct{}{}:
	default: // a token is already there
	}
}

func (s *pullState) take() []item {
	s.mu.Lock()
	defer s.mu.Unlock()
	q := s.queue
	s.queue = nil
	return q
}

func (s *pullState) empty() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.queue) == 0
}

func (s *pullState) stopDispatch() { s.stopOnce.Do(func() { close(s.stop) }) }

func closed(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// dispatch runs the user's hooks for each item, in order, until the pull
// is finalized and the queue is empty, stop is closed, or OnProgress
// panics (then it cancels the pull through c). A commit offer still
// queued when it returns is refused by the waiting trampoline.
func (s *pullState) dispatch(h hooks, c *cpull) {
	defer close(s.dispatched)
	for {
		select {
		case <-s.notify:
		case <-s.finalized:
		case <-s.stop:
			return
		}
		for _, it := range s.take() {
			if closed(s.stop) {
				return
			}
			if it.commit != nil {
				s.answer(h.commit, it.commit)
				continue
			}
			if h.progress == nil {
				continue
			}
			if p := deliver(h.progress, it.progress); p != nil {
				s.mu.Lock()
				s.panicked = p
				s.mu.Unlock()
				close(s.userFailed)
				c.cancel()
				return
			}
		}
		// Everything was pushed before finalized closed: once it is closed
		// and the queue is empty, nothing more can come.
		if closed(s.finalized) && s.empty() {
			return
		}
	}
}

func deliver(cb func(Progress), ev Progress) (p *CallbackPanicError) {
	defer func() {
		if r := recover(); r != nil {
			p = &CallbackPanicError{Callback: "OnProgress", Value: r, Stack: debug.Stack()}
		}
	}()
	cb(ev)
	return nil
}

// state finds the pullState of a handle value from C.
func state(h C.uintptr_t) *pullState {
	return cgo.Handle(h).Value().(*pullState)
}

// guardTrampoline keeps a panic in this package's trampoline code from
// unwinding into the library's thread (which would kill the process): it
// is recorded and Wait reports it as an INTERNAL error.
func guardTrampoline(h C.uintptr_t) {
	r := recover()
	if r == nil {
		return
	}
	defer func() { _ = recover() }() // the handle itself may be bad
	s := state(h)
	s.mu.Lock()
	s.fault = fmt.Sprintf("%v\n%s", r, debug.Stack())
	s.mu.Unlock()
}

//export vicgoProgress
func vicgoProgress(h C.uintptr_t, p *C.vic_progress) {
	defer guardTrampoline(h)
	ev := Progress{
		Kind:    ProgressKind(p.kind),
		Current: uint64(p.current),
		Total:   uint64(p.total),
		Message: C.GoString(p.message),
	}
	if p.layer_digest != nil {
		ev.Layer = C.GoString(p.layer_digest)
	}
	state(h).push(item{progress: ev})
}

//export vicgoDone
func vicgoDone(h C.uintptr_t, code C.uint32_t, message *C.char) {
	defer guardTrampoline(h)
	s := state(h)
	defer close(s.done) // even if copying panicked: Wait must not hang
	s.mu.Lock()
	s.code = Code(code)
	if message != nil {
		s.message = C.GoString(message)
	}
	s.mu.Unlock()
}

//export vicgoFinalize
func vicgoFinalize(h C.uintptr_t) {
	defer guardTrampoline(h)
	s := state(h)
	defer close(s.finalized)
	cgo.Handle(h).Delete()
}
