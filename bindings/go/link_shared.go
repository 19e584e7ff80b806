//go:build vicpull_shared

package vicpull

// Shared linking (build tag vicpull_shared): the program records
// libvicpull.so.0 as a dependency. pkg-config finds an installed copy
// (scripts/install.sh writes vicpull.pc); set PKG_CONFIG_PATH to
// PREFIX/lib/pkgconfig and, outside the system paths, LD_LIBRARY_PATH or an
// rpath (CGO_LDFLAGS="-Wl,-rpath,PREFIX/lib") so the loader finds it.

// #cgo pkg-config: vicpull
import "C"
