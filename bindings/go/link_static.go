//go:build !vicpull_shared

package vicpull

// Static linking (the default): the Go program carries libvicpull inside it.
// Build the archive first with `cargo build --release` at the repository
// root; the extra libraries are the ones `rustc --print native-static-libs`
// lists for the staticlib.

// #cgo LDFLAGS: -L${SRCDIR}/../../target/release -l:libvicpull.a
// #cgo LDFLAGS: -lgcc_s -lutil -lrt -lpthread -lm -ldl
import "C"
