//go:build !vicpull_debug

package vicpull

// debugGC is a no-op in normal builds; see debug_on.go.
func debugGC() {}
