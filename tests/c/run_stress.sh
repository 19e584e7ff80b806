#!/usr/bin/env bash
# Build tests/c/stress.c with AddressSanitizer and run it against a loopback
# registry holding three images that share layers.
#   tests/c/run_stress.sh [THREADS] [PULLS]     (CI: 8 200; by hand: 8 2000)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PROFILE=${PROFILE:-release}
THREADS=${1:-8}
PULLS=${2:-200}
LIB=$ROOT/target/$PROFILE
TESTKIT=$LIB/testkit
WORK=$(mktemp -d "${TMPDIR:-/tmp}/vicpull-stress.XXXXXX")
REG_PID=
cleanup() {
    [[ -n $REG_PID ]] && kill "$REG_PID" 2>/dev/null && wait "$REG_PID" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT

# The library's soname is libvicpull.so.0; cargo writes only libvicpull.so.
mkdir -p "$WORK/lib" "$WORK/store"
ln -s "$LIB/libvicpull.so" "$WORK/lib/libvicpull.so.0"
cc -std=c11 -Wall -Wextra -Wpedantic -Werror -O1 -g \
    -fsanitize=address,undefined -fno-omit-frame-pointer \
    -I"$ROOT/include" "$ROOT/tests/c/stress.c" -o "$WORK/stress" \
    -L"$LIB" -Wl,-rpath,"$WORK/lib" -lvicpull -lpthread

"$TESTKIT" registry --dir "$WORK/registry" >"$WORK/addr" 2>"$WORK/registry.log" &
REG_PID=$!
for _ in $(seq 1 100); do [[ -s $WORK/addr ]] && break; sleep 0.1; done
ADDR=$(cat "$WORK/addr")
SRC=/usr/share/doc
refs=()
for i in 1 2 3; do
    "$TESTKIT" seed --registry "$ADDR" --repo "stress/img$i" --tag 1 \
        --from "$SRC" --from /etc --from "/usr/share/doc/$(ls /usr/share/doc | sed -n "${i}p")" \
        --layer-bytes 6M >/dev/null
    refs+=("$ADDR/stress/img$i:1")
done
# Rust's runtime keeps some allocations for the life of the process.
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
timeout 600 "$WORK/stress" "$WORK/store" "$THREADS" "$PULLS" "${refs[@]}"
# Every pull ended; the ingest area must hold no lock or temp file.
left=$(find "$WORK/store" -path '*/.vicpull/ingest/*' \( -name '*.lock' -o -name '*.tmp' \) | wc -l)
if [[ $left != 0 ]]; then
    echo "stress: $left lock/temp files left in the ingest area" >&2
    exit 1
fi
echo "stress: store clean"
