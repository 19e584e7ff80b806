// Package vicpull pulls container images from Docker/OCI registries into
// an OCI image-layout directory, through libvicpull's C API.
//
//	res, err := vicpull.Pull(ctx, vicpull.Options{
//		Reference:  "127.0.0.1:5000/app:1",
//		Store:      "/var/lib/images",
//		PlainHTTP:  true,
//		OnProgress: func(p vicpull.Progress) { log.Println(p.Layer, p.Message) },
//	})
//	if errors.Is(err, vicpull.ErrNotFound) { ... }
//
// # Building
//
// The package links libvicpull statically by default, so a Go program is
// one binary. Build the archive first, at the repository root:
//
//	cargo build --release          # target/release/libvicpull.a
//	cd bindings/go && go build ./...
//
// With the build tag vicpull_shared it links the shared library found by
// pkg-config instead (install it with scripts/install.sh PREFIX):
//
//	PKG_CONFIG_PATH=PREFIX/lib/pkgconfig \
//	CGO_LDFLAGS="-Wl,-rpath,PREFIX/lib" go build -tags vicpull_shared ./...
//
// The build tag vicpull_debug forces a garbage collection before every use
// of a C handle; the tests run with it and GOGC=1 to catch lifetime bugs.
//
// # Threads and callbacks
//
// The library calls back on a thread of its own for each pull. Only a
// cgo.Handle (an integer) is passed to C as user data; the exported
// callbacks copy each event into an unbounded queue and return at once, so
// a slow OnProgress never holds up the library. A goroutine of this package
// then calls OnProgress, in order, one event at a time. A panic there is
// recovered: the pull is cancelled and Pull returns a *CallbackPanicError.
//
// OnCommit runs on that same goroutine, in the same order: the library
// thread queues the offered layer and waits for the hook's answer, since
// the library commits nothing before it. An error (or a recovered panic)
// refuses the layer; Pull then returns an *Error matching ErrHostRejected
// that wraps it.
//
// # Errors
//
// Library failures are *Error values carrying the Code and the library's
// message; errors.Is matches them against the Err* sentinels (one per
// code). A pull stopped through its context returns an *Error with
// CodeCancelled that wraps ctx.Err().
package vicpull
