#!/usr/bin/env bash
# Parity: pull the same images through Rust (src/bin/vicpull-pull.rs), C
# (examples/pull.c), C++ (include/vicpull.hpp), Go and Python into fresh
# stores, then check that every client got the same result JSON (store
# path aside) and wrote byte-identical stores (blobs/, index.json,
# oci-layout). Runs against a loopback registry started with the testkit
# binary. Prints "N passed, N failed" per image.
#
#   tests/parity/run.sh            # builds what it needs first
#   VICPULL_PARITY_NO_BUILD=1 tests/parity/run.sh
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
TESTKIT=${VICPULL_TESTKIT:-$ROOT/target/release/testkit}
PY=${PYTHON:-python3}
cd "$ROOT"

if [ -z "${VICPULL_PARITY_NO_BUILD:-}" ]; then
  cargo build --release --lib --bin vicpull-pull
  cargo build --release -p vicpull-testkit --bin testkit
  make -s -C examples "$ROOT/build/pull"
  make -s -C examples/cpp "$ROOT/build/cpp/pull-cpp"
  mkdir -p build/go
  (cd bindings/go && go build -o "$ROOT/build/go/vicpull-pull" ./cmd/vicpull-pull)
fi

work=$(mktemp -d)
reg_pid=
cleanup() {
  if [ -n "$reg_pid" ]; then kill -TERM "$reg_pid" 2>/dev/null; wait "$reg_pid" || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
"$TESTKIT" registry --dir "$work/registry" >"$work/addr" &
reg_pid=$!
for _ in $(seq 100); do [ -s "$work/addr" ] && break; sleep 0.1; done
addr=$(head -1 "$work/addr")

# client name -> command (REF, --store DIR, --plain-http, --json follow).
declare -A cmd=(
  [rust]="$ROOT/target/release/vicpull-pull"
  [c]="$ROOT/build/pull"
  [cpp]="$ROOT/build/cpp/pull-cpp"
  [go]="$ROOT/build/go/vicpull-pull"
  [python]="env PYTHONPATH=$ROOT/bindings/python/src $PY -m vicpull pull"
)
clients=(rust c cpp go python)

# Three layers of real files as Docker schema2; two as an OCI image.
docker=$("$TESTKIT" seed --registry "$addr" --repo parity/docker --tag 1 \
  --from /usr/share/doc --from /etc --from /usr/include --layer-bytes 2M --format docker)
oci=$("$TESTKIT" seed --registry "$addr" --repo parity/oci --tag v1 \
  --from /usr/share/man --from /usr/share/doc --layer-bytes 1M --format oci)
echo "seeded parity/docker:1 $docker, parity/oci:v1 $oci"

status=0
for pair in "$addr/parity/docker:1=$docker" "$addr/parity/oci:v1=$oci" \
  "$addr/parity/oci@$oci=$oci"; do
  ref=${pair%=*} digest=${pair##*=}
  dir="$work/$(echo "$ref" | tr '/:@' '___')"
  mkdir -p "$dir"
  echo "== $ref"
  for c in "${clients[@]}"; do
    t0=$(date +%s%N)
    # shellcheck disable=SC2086 # cmd holds words on purpose
    if ! ${cmd[$c]} "$ref" --store "$dir/$c" --plain-http --json >"$dir/$c.json" \
        2>"$dir/$c.log"; then
      echo "FAIL $c: pull failed"; cat "$dir/$c.log"; status=1; continue 2
    fi
    printf '     %-7s pulled in %d ms\n' "$c" $((($(date +%s%N) - t0) / 1000000))
  done
  "$PY" tests/parity/compare.py --digest "$digest" "$dir" "${clients[@]}" || status=1
done
exit $status
