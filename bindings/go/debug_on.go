//go:build vicpull_debug

package vicpull

import "runtime"

// debugGC forces a collection before every use of a C handle, so a value
// the binding forgot to keep alive is finalized early and the tests crash
// instead of passing by luck. Build with -tags vicpull_debug.
func debugGC() { runtime.GC() }
