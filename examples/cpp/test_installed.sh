#!/usr/bin/env bash
# Install into a temporary PREFIX with scripts/install.sh, then build
# against the installed copy only through pkg-config: the C++ example
# (shared), a C program (shared, and static via -Bstatic), and the Go
# binding with -tags vicpull_shared when go is on PATH. Checks the soname
# chain and runs the C++ example against a loopback registry.
# Needs: cargo build --release (library and testkit).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
TESTKIT=${VICPULL_TESTKIT:-$ROOT/target/release/testkit}
work=$(mktemp -d)
reg_pid=
cleanup() {
  if [ -n "$reg_pid" ]; then kill -TERM "$reg_pid" 2>/dev/null; wait "$reg_pid" || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
prefix=$work/prefix
fail() { echo "FAIL: $*" >&2; exit 1; }

"$ROOT/scripts/install.sh" --no-build "$prefix"
export PKG_CONFIG_PATH=$prefix/lib/pkgconfig
version=$(pkg-config --modversion vicpull)
[ "$(readlink "$prefix/lib/libvicpull.so")" = libvicpull.so.0 ] || fail "libvicpull.so link"
[ "$(readlink "$prefix/lib/libvicpull.so.0")" = "libvicpull.so.$version" ] || fail "so.0 link"
readelf -d "$prefix/lib/libvicpull.so.$version" | grep -q 'soname: \[libvicpull.so.0\]' \
  || fail "soname"
echo "ok   installed $version: soname libvicpull.so.0, links, vicpull.pc"

# C++ example, shared, against the installed headers and library.
make -s -C "$ROOT/examples/cpp" installed PREFIX="$prefix" BUILD="$work/bin"
readelf -d "$work/bin/pull-cpp-installed" | grep -q 'NEEDED.*\[libvicpull.so.0\]' \
  || fail "pull-cpp-installed does not need libvicpull.so.0"
echo "ok   C++ example built with pkg-config, needs libvicpull.so.0"

# A C program, shared and static.
cat >"$work/version.c" <<'C'
#include <stdio.h>
#include <string.h>
#include <vicpull.h>
int main(void) {
  printf("%s\n", vic_version());
  return strcmp(vic_version(), VICPULL_VERSION) != 0;
}
C
cc -std=c11 -Wall -Wextra -Wpedantic -Werror "$work/version.c" -o "$work/version-shared" \
  $(pkg-config --cflags --libs vicpull) -Wl,-rpath,"$prefix/lib"
cc -std=c11 -Wall -Wextra -Wpedantic -Werror "$work/version.c" -o "$work/version-static" \
  $(pkg-config --cflags vicpull) -L"$prefix/lib" -Wl,-Bstatic -lvicpull -Wl,-Bdynamic \
  $(pkg-config --libs-only-l --static vicpull | sed 's/-lvicpull//')
[ "$("$work/version-shared")" = "$version" ] || fail "shared C program"
[ "$("$work/version-static")" = "$version" ] || fail "static C program"
readelf -d "$work/version-static" | grep -q libvicpull && fail "static program needs the .so"
echo "ok   C program built with pkg-config, shared and static"

# Pull with the installed C++ example.
"$TESTKIT" registry --dir "$work/registry" >"$work/addr" &
reg_pid=$!
for _ in $(seq 100); do [ -s "$work/addr" ] && break; sleep 0.1; done
addr=$(head -1 "$work/addr")
digest=$("$TESTKIT" seed --registry "$addr" --repo inst/app --tag 1 --from /etc --layer-bytes 1M)
"$work/bin/pull-cpp-installed" "$addr/inst/app:1" --store "$work/store" --plain-http --json \
  2>/dev/null | grep -q "\"manifest_digest\": \"$digest\"" || fail "installed pull"
echo "ok   installed C++ example pulled $digest"

if command -v go >/dev/null; then
  (cd "$ROOT/bindings/go" &&
    CGO_LDFLAGS="-Wl,-rpath,$prefix/lib" go test -count=1 -tags vicpull_shared ./...)
  echo "ok   Go binding tests with -tags vicpull_shared against the installed library"
fi
echo "test_installed: all ok"
