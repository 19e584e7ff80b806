package vicpull

// The commit hook: the library offers each verified layer, in manifest
// order, and waits for the answer before it commits the layer. The offer
// goes through the same queue as progress events, so OnCommit runs on the
// dispatcher goroutine, after every event that came before it and never
// at the same time as OnProgress.

// #include "shim.h"
import "C"

import (
	"errors"
	"runtime/debug"
	"unicode/utf8"
	"unsafe"
)

// LayerCommit is a verified layer offered to Options.OnCommit.
type LayerCommit struct {
	// Layer has the digest, the diffID ("" when SkipDiffIDCheck is set),
	// the size and the media type.
	Layer
	// Index is the layer's position in the manifest; a digest listed twice
	// is offered twice.
	Index int
	// Path is the verified blob's file in the store: read it during the
	// hook, do not move or change it.
	Path string
}

// commitOffer is one layer waiting for the hook's answer.
type commitOffer struct {
	layer LayerCommit
	// answer gets the hook's verdict (nil accepts); room for one, so the
	// dispatcher never waits for the trampoline.
	answer chan error
}

// errNoAnswer refuses a layer whose offer the dispatcher will never see:
// the pull is being closed, or OnProgress panicked.
var errNoAnswer = errors.New("vicpull: the pull was closed before OnCommit answered")

// answer runs the hook for one offer and hands its verdict back; a refusal
// is kept for Wait.
func (s *pullState) answer(hook func(LayerCommit) error, o *commitOffer) {
	err := runHook(hook, o.layer)
	if err != nil {
		s.mu.Lock()
		if s.veto == nil {
			s.veto = err
		}
		s.mu.Unlock()
	}
	o.answer <- err
}

// runHook calls the hook, turning a panic into a refusal.
func runHook(hook func(LayerCommit) error, l LayerCommit) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = &CallbackPanicError{Callback: "OnCommit", Value: r, Stack: debug.Stack()}
		}
	}()
	if hook == nil { // the C side only wires the hook when it is set
		return nil
	}
	return hook(l)
}

// await blocks the library thread until the dispatcher answers the offer,
// or has returned without it.
func (s *pullState) await(o *commitOffer) error {
	select {
	case err := <-o.answer:
		return err
	case <-s.dispatched:
	}
	select {
	case err := <-o.answer: // answered just before the dispatcher returned
		return err
	default:
		return errNoAnswer
	}
}

// writeReason copies text into the library's buffer of n bytes, cut at a
// character boundary and NUL-terminated.
func writeReason(buf *C.char, n C.size_t, text string) {
	if buf == nil || n == 0 {
		return
	}
	dst := unsafe.Slice((*byte)(unsafe.Pointer(buf)), int(n))
	end := len(text)
	if end > len(dst)-1 {
		end = len(dst) - 1
	}
	for end > 0 && end < len(text) && !utf8.RuneStart(text[end]) {
		end--
	}
	copy(dst, text[:end])
	dst[end] = 0
}

//export vicgoCommit
func vicgoCommit(h C.uintptr_t, l *C.vic_layer_commit, buf *C.char, n C.size_t) (rc C.int32_t) {
	rc = 1 // a fault in this trampoline refuses the layer (Wait reports it)
	defer guardTrampoline(h)
	offer := &commitOffer{
		layer: LayerCommit{
			Layer: Layer{
				Digest:    C.GoString(l.digest),
				Size:      uint64(l.size),
				MediaType: C.GoString(l.media_type),
			},
			Index: int(l.index),
			Path:  C.GoString(l.path),
		},
		answer: make(chan error, 1),
	}
	if l.diff_id != nil {
		offer.layer.DiffID = C.GoString(l.diff_id)
	}
	s := state(h)
	s.push(item{commit: offer})
	if err := s.await(offer); err != nil {
		writeReason(buf, n, err.Error())
		return 1
	}
	return 0
}
