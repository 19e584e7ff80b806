#!/usr/bin/env bash
# vicpull demo: build everything, start a registry on 127.0.0.1, push an
# image made of real files from this machine, pull it with build/pull
# (progress like `docker pull`), pull it again ("Already exists"), and
# show the resulting OCI layout. Run from anywhere; run it as often as
# you like: all state lives in a temp dir that is removed on exit.
#
# On Debian it installs what is missing (docker-registry, build-essential,
# pkg-config) with apt-get; Rust (cargo) must already be installed.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

# A step title; bold on a terminal.
say() {
    if [[ -t 1 ]]; then
        printf '\n\033[1m%s\033[0m\n' "$*"
    else
        printf '\n== %s\n' "$*"
    fi
}
# Show a command, then run it.
run() {
    echo "+ $*"
    "$@"
}

# ---- prerequisites ---------------------------------------------------------

missing=()
[[ -x /usr/bin/docker-registry ]] || missing+=(docker-registry)
command -v cc >/dev/null && command -v make >/dev/null ||
    missing+=(build-essential)
command -v pkg-config >/dev/null || missing+=(pkg-config)
if [[ ${#missing[@]} -gt 0 ]]; then
    say "Installing ${missing[*]}"
    sudo=()
    [[ $(id -u) -eq 0 ]] || sudo=(sudo)
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq \
        --no-install-recommends "${missing[@]}"
fi
if ! command -v cargo >/dev/null; then
    echo "cargo not found: install Rust first (https://rustup.rs)" >&2
    exit 1
fi

# ---- build -----------------------------------------------------------------

say "Building libvicpull, the test kit and build/pull"
run cargo build --release --workspace --quiet
run make -C examples PROFILE=release --no-print-directory
TESTKIT=$ROOT/target/release/testkit
PULL=$ROOT/build/pull

# ---- registry ----------------------------------------------------------------

WORK=$(mktemp -d "${TMPDIR:-/tmp}/vicpull-demo.XXXXXX")
REGISTRY_PID=
cleanup() {
    if [[ -n $REGISTRY_PID ]]; then
        kill "$REGISTRY_PID" 2>/dev/null || true
        wait "$REGISTRY_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

say "Starting a registry on 127.0.0.1 (files in $WORK/registry)"
"$TESTKIT" registry --dir "$WORK/registry" >"$WORK/addr" \
    2>"$WORK/registry.log" &
REGISTRY_PID=$!
for _ in $(seq 1 300); do
    [[ -s $WORK/addr ]] && break
    kill -0 "$REGISTRY_PID" 2>/dev/null || break
    sleep 0.1
done
ADDR=$(head -n1 "$WORK/addr" 2>/dev/null || true)
if [[ -z $ADDR ]]; then
    echo "the registry did not start:" >&2
    cat "$WORK/registry.log" >&2
    exit 1
fi
echo "registry at $ADDR"

# ---- image -------------------------------------------------------------------

# Up to four layers of real files, each capped at 32 MiB of content.
# These directories exist on Debian once build-essential is installed.
FROM=()
for p in /usr/share/doc /usr/include /usr/lib/gcc /usr/share/perl \
    /usr/share/zoneinfo /usr/bin; do
    [[ -d $p && ${#FROM[@]} -lt 8 ]] && FROM+=(--from "$p")
done
REF=$ADDR/demo/app:1
say "Pushing $REF"
run "$TESTKIT" seed --registry "$ADDR" --repo demo/app --tag 1 \
    "${FROM[@]}" --layer-bytes 32M

# ---- pulls -------------------------------------------------------------------

STORE=$WORK/store
say "Pulling $REF into $STORE"
run "$PULL" --plain-http --store "$STORE" "$REF"

say "Pulling it again: every layer is already there"
run "$PULL" --plain-http --store "$STORE" "$REF"

# ---- the store ---------------------------------------------------------------

say "The store is an OCI image layout"
run ls -A "$STORE"
run cat "$STORE/index.json"
echo
if command -v skopeo >/dev/null; then
    run skopeo inspect "oci:$STORE:$REF"
else
    echo "(install skopeo to inspect it: apt-get install skopeo)"
fi

say "Done; the registry stops and $WORK is removed now."
