#!/usr/bin/env bash
# Build the C++ example and tests (-Wall -Wextra -Wpedantic -Werror), then
# run the tests, plain and under ASan/UBSan, against a loopback registry
# started with the testkit binary. Needs: cargo build --release (library
# and testkit). Prints "N passed, N failed" per run.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
TESTKIT=${VICPULL_TESTKIT:-$ROOT/target/release/testkit}
make -s -C "$ROOT/examples/cpp" all asan

work=$(mktemp -d)
reg_pid=
cleanup() {
  [ -n "$reg_pid" ] && kill -TERM "$reg_pid" 2>/dev/null && wait "$reg_pid" || true
  rm -rf "$work"
}
trap cleanup EXIT
"$TESTKIT" registry --dir "$work/registry" >"$work/addr" &
reg_pid=$!
for _ in $(seq 100); do [ -s "$work/addr" ] && break; sleep 0.1; done
addr=$(head -1 "$work/addr")
app=$("$TESTKIT" seed --registry "$addr" --repo cpp/app --tag 1 --from /etc \
  --from /usr/share/doc --layer-bytes 1M)
"$TESTKIT" bench-image --registry "$addr" --repo cpp/big --tag 1 --seed 5 --layers 2 \
  --layer-bytes 16M >/dev/null

"$ROOT/build/cpp/test-vicpull-cpp" "$addr/cpp/app:1" "$app" "$addr/cpp/big:1"
ASAN_OPTIONS=detect_leaks=1 "$ROOT/build/cpp/test-vicpull-cpp-asan" \
  "$addr/cpp/app:1" "$app" "$addr/cpp/big:1"

# The example, end to end.
"$ROOT/build/cpp/pull-cpp" "$addr/cpp/app:1" --store "$work/store" --plain-http --json \
  >"$work/result.json" 2>"$work/progress.txt"
grep -q "\"manifest_digest\": \"$app\"" "$work/result.json"
grep -q "^Status: Downloaded newer image" "$work/progress.txt"
echo "pull-cpp example: ok"
