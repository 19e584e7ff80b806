package vicpull

// #include <stdlib.h>
// #include "vicpull.h"
import "C"

import (
	"runtime"
	"time"
	"unsafe"
)

// PurgePartials removes resumable partial downloads from the store at
// path: those older than maxAge, then the oldest until the rest fit in
// maxBytes, plus temp files of processes that died. Partials a pull is
// downloading now are kept. PurgePartials(path, 0, 0) removes every idle
// partial. It returns the number of files and bytes removed.
func PurgePartials(path string, maxAge time.Duration, maxBytes uint64) (
	files, bytes uint64, err error) {
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	var n, b C.uint64_t
	// The library keeps the last error per OS thread: read it on the same
	// thread as the failed call.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	age, limit := C.uint64_t(maxAge/time.Second), C.uint64_t(maxBytes)
	rc := C.vic_store_purge_partials(cpath, age, limit, &n, &b)
	if rc != C.VIC_RESULT_OK {
		return 0, 0, newError(Code(rc), lastError())
	}
	return uint64(n), uint64(b), nil
}

// lastError is vic_last_error_message of the calling OS thread; call it
// with the thread locked, right after the failed call.
func lastError() string {
	var n C.size_t
	C.vic_last_error_message(nil, 0, &n)
	buf := C.malloc(n + 1)
	defer C.free(buf)
	if C.vic_last_error_message((*C.char)(buf), n+1, &n) != C.VIC_RESULT_OK {
		return ""
	}
	return C.GoStringN((*C.char)(buf), C.int(n))
}
