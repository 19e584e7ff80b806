#!/usr/bin/env bash
# Every check vicpull has, in order, stopping at the first section that
# fails. The last line is always "N passed, M failed" (CI reads it).
#
#   scripts/test.sh            all sections
#   scripts/test.sh --c-only   build the library, then only the C sections
#
# Needs Rust, a C/C++ compiler, make, cbindgen 0.29.0, docker-registry
# (tests start loopback registries); skopeo and umoci when CI=true.
# .ci/run installs all of them on Debian.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

CBINDGEN_VERSION=0.29.0
C_ONLY=false
case "${1:-}" in
"") ;;
--c-only) C_ONLY=true ;;
*)
    echo "usage: scripts/test.sh [--c-only]" >&2
    exit 2
    ;;
esac

WORK=$(mktemp -d "${TMPDIR:-/tmp}/vicpull-test.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

passed=0
failed=0

summary() {
    echo
    echo "$passed passed, $failed failed"
}

# section NAME FUNCTION: run FUNCTION in a subshell with set -e, so any
# failing command fails the section; stop at the first failed section.
section() {
    local name=$1 start=$SECONDS rc
    shift
    echo
    echo "==== $name"
    (
        set -euo pipefail
        "$@"
    )
    rc=$?
    if [[ $rc -ne 0 ]]; then
        echo "==== FAILED: $name (exit $rc)"
        failed=$((failed + 1))
        summary
        exit 1
    fi
    echo "==== ok: $name ($((SECONDS - start))s)"
    passed=$((passed + 1))
}

rust_fmt() {
    if ! cargo fmt --version >/dev/null 2>&1; then
        echo "rustfmt is not installed: skipped (rustup component add rustfmt)"
        return 0
    fi
    cargo fmt --all --check
}

header_drift() {
    local have
    have=$(cbindgen --version 2>/dev/null || true)
    if [[ $have != "cbindgen $CBINDGEN_VERSION" ]]; then
        echo "need cbindgen $CBINDGEN_VERSION exactly, found: ${have:-none}"
        echo "install it with:"
        echo "  cargo install cbindgen --version $CBINDGEN_VERSION --locked"
        return 1
    fi
    cbindgen --quiet --config cbindgen.toml --output "$WORK/vicpull.h"
    if ! diff -u include/vicpull.h "$WORK/vicpull.h"; then
        echo "include/vicpull.h differs from the Rust sources (above)."
        echo "Regenerate it: cbindgen --config cbindgen.toml" \
            "--output include/vicpull.h"
        return 1
    fi
    # The version macros come from cbindgen.toml, not from Cargo.toml.
    local version
    version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n1)
    if ! grep -qx "#define VICPULL_VERSION \"$version\"" include/vicpull.h
    then
        echo "VICPULL_VERSION in include/vicpull.h is not $version" \
            "(Cargo.toml); update after_includes in cbindgen.toml"
        return 1
    fi
    echo "include/vicpull.h matches the sources (version $version)"
}

cargo_build() {
    cargo build --release --workspace
}

cargo_test() {
    cargo test --release --workspace
}

c_build() {
    # -Werror comes from the Makefile; build from clean so no stale
    # object hides a new warning.
    make -C examples PROFILE=release clean
    make -C examples PROFILE=release all asan static api-check
    build/pull --version
    # Proves the static link flags the README gives.
    build/pull-static --version
}

c_header() {
    local flags=(-Wall -Wextra -Wpedantic -Werror -Iinclude)
    # api_check.c includes vicpull.h twice; as C++ it checks cpp_compat.
    g++ -std=c++17 -x c++ -fsyntax-only "${flags[@]}" tests/c/api_check.c
    echo "vicpull.h compiles as C++17 (and twice in one file)"
    mkdir -p "$WORK/api"
    build/api_check "$WORK/api"
    build/api_check-asan "$WORK/api"
}

c_end_to_end() {
    PROFILE=release tests/c/run_pull_example.sh
}

c_stress() {
    # 8 host threads, 200 pulls sharing a store, many cancelled; ASan.
    PROFILE=release tests/c/run_stress.sh 8 200
}

cpp_wrapper() { examples/cpp/test.sh; }

install_pkg_config() { examples/cpp/test_installed.sh; }

# Go's build cache does not notice a rebuilt libvicpull.a (it is named in a
# #cgo directive, not an input Go hashes): put the archive's hash into
# CGO_LDFLAGS, which Go does hash, so a new library means a new link.
go_cache_key() {
    local sum
    sum=$(sha256sum target/release/libvicpull.a | cut -c1-16)
    export CGO_LDFLAGS="${CGO_LDFLAGS:-} -Wl,--defsym,vicpull_archive_$sum=0"
}

go_binding() {
    go_cache_key
    cd bindings/go
    local unformatted
    unformatted=$(gofmt -l .)
    [[ -z $unformatted ]] || {
        echo "gofmt needed: $unformatted"
        return 1
    }
    go vet ./... && go vet -tags vicpull_debug ./...
    go test -count=1 -race ./...
    GOGC=1 go test -count=1 -tags vicpull_debug ./...
}

python_binding() {
    cd bindings/python
    python3 -m mypy --strict src/vicpull
    python3 -m pytest -q
}

parity() {
    go_cache_key
    tests/parity/run.sh
}

command -v cargo >/dev/null || {
    echo "cargo not found: install Rust (https://rustup.rs)" >&2
    exit 1
}

if ! $C_ONLY; then
    section "cargo fmt --check" rust_fmt
    section "header drift (cbindgen $CBINDGEN_VERSION)" header_drift
fi
section "cargo build --release" cargo_build
if ! $C_ONLY; then
    section "cargo test --release --workspace" cargo_test
fi
section "C: build examples (-Werror, ASan/UBSan, static)" c_build
section "C: header as C++, double include, API checks" c_header
section "C: end to end (tests/c/run_pull_example.sh)" c_end_to_end
section "C: stress under ASan (tests/c/run_stress.sh)" c_stress
section "C++ wrapper: -Werror build, tests, ASan/UBSan" cpp_wrapper
section "install.sh + pkg-config: shared, static, Go shared" install_pkg_config
if ! $C_ONLY; then
    section "Go binding: vet, test -race, GOGC=1 debug GC" go_binding
    section "Python binding: mypy --strict, pytest" python_binding
    section "parity: Rust, C, C++, Go, Python pull identically" parity
fi

summary
