#!/usr/bin/env bash
# End-to-end test of the C example build/pull against a loopback registry.
#
# Needs target/$PROFILE/testkit and build/pull + build/pull-asan
# (cargo build [--release] --workspace; make -C examples all asan).
# Everything listens on 127.0.0.1 and lives in one temp directory.
# Prints one line per check and exits non-zero if any failed.
# With CI=true, skopeo and umoci are required instead of optional.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PROFILE=${PROFILE:-release}
TESTKIT=$ROOT/target/$PROFILE/testkit
PULL=$ROOT/build/pull
PULL_ASAN=$ROOT/build/pull-asan
# Every pull here is small and local; a hang must not eat the CI budget.
LIMIT="timeout 120"

for f in "$TESTKIT" "$PULL" "$PULL_ASAN"; do
    [[ -x $f ]] || { echo "missing $f (build it first)" >&2; exit 2; }
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/vicpull-c-e2e.XXXXXX")
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    done
    rm -rf "$WORK"
}
trap cleanup EXIT

passed=0
failed=0
pass() { echo "ok   $1"; passed=$((passed + 1)); }
# fail NAME FILE...: show what the program printed, for the CI log.
fail() {
    local name=$1 f
    shift
    echo "FAIL $name"
    for f in "$@"; do
        [[ -s $f ]] && sed "s|^|     $(basename "$f"): |" "$f" | tail -40
    done
    failed=$((failed + 1))
}
# count_ids FILE TEXT: distinct layer ids whose line ends in TEXT.
count_ids() {
    grep -E "^[0-9a-f]{12}: $2\$" "$1" | cut -c1-12 | sort -u | wc -l
}

# ---- registry and images -------------------------------------------------

"$TESTKIT" registry --dir "$WORK/registry" >"$WORK/registry.addr" \
    2>"$WORK/registry.log" &
PIDS+=($!)
for _ in $(seq 1 300); do
    [[ -s $WORK/registry.addr ]] && break
    sleep 0.1
done
ADDR=$(head -n1 "$WORK/registry.addr")
if [[ ! $ADDR =~ ^127\.0\.0\.1:[0-9]+$ ]]; then
    echo "the registry did not start" >&2
    cat "$WORK/registry.log" >&2
    exit 1
fi

# Real files from this machine; the first three of these that exist.
SOURCES=()
for p in /usr/share/doc /usr/include /usr/lib/gcc /usr/bin /usr/share; do
    [[ -d $p && ${#SOURCES[@]} -lt 3 ]] && SOURCES+=("$p")
done
LAYERS=${#SOURCES[@]}
FROM=()
for p in "${SOURCES[@]}"; do FROM+=(--from "$p"); done

REF=$ADDR/demo/app:1
REF2=$ADDR/demo/other:2
# demo/other shares its first layer with demo/app.
if ! DIGEST=$("$TESTKIT" seed --registry "$ADDR" --repo demo/app --tag 1 \
        "${FROM[@]}" --layer-bytes 2M 2>"$WORK/seed.err") ||
    ! "$TESTKIT" seed --registry "$ADDR" --repo demo/other --tag 2 \
        --from "${SOURCES[0]}" --from /usr/lib/os-release --layer-bytes 2M \
        >/dev/null 2>>"$WORK/seed.err"; then
    echo "seeding failed" >&2
    cat "$WORK/seed.err" >&2
    exit 1
fi
echo "registry $ADDR, $REF ($LAYERS layers, $DIGEST)"

# ---- pulls ---------------------------------------------------------------

STORE=$WORK/store
out=$WORK/first.out err=$WORK/first.err
$LIMIT "$PULL" --plain-http --store "$STORE" "$REF" >"$out" 2>"$err"
rc=$?
if [[ $rc -eq 0 ]] &&
    [[ $(count_ids "$out" "Pull complete") -eq $LAYERS ]] &&
    grep -qx "Digest: $DIGEST" "$out" &&
    grep -qx "Status: Downloaded newer image for $REF" "$out" &&
    grep -q "^$REF: digest $DIGEST ($LAYERS layers, " "$out"; then
    pass "first pull: Pull complete x$LAYERS, Digest, Status, summary"
else
    fail "first pull (exit $rc)" "$out" "$err"
fi

out=$WORK/second.out err=$WORK/second.err
$LIMIT "$PULL" --plain-http --store "$STORE" "$REF" >"$out" 2>"$err"
rc=$?
if [[ $rc -eq 0 ]] &&
    [[ $(count_ids "$out" "Already exists") -eq $LAYERS ]] &&
    ! grep -q "Pull complete" "$out" &&
    grep -qx "Status: Image is up to date for $REF" "$out"; then
    pass "second pull: Already exists x$LAYERS, Image is up to date"
else
    fail "second pull (exit $rc)" "$out" "$err"
fi

out=$WORK/bad.out err=$WORK/bad.err
$LIMIT "$PULL" --store "$STORE" UPPER/case >"$out" 2>"$err"
rc=$?
if [[ $rc -ne 0 ]] && grep -q "^UPPER/case: BAD_REFERENCE: " "$err"; then
    pass "bad reference: exit $rc, BAD_REFERENCE"
else
    fail "bad reference (exit $rc)" "$out" "$err"
fi

out=$WORK/usage.out err=$WORK/usage.err
"$PULL" --store "$STORE" >"$out" 2>"$err"
rc=$?
if [[ $rc -eq 2 ]] && grep -q "^usage: pull" "$err"; then
    pass "usage error: exit 2"
else
    fail "usage error (exit $rc)" "$out" "$err"
fi

out=$WORK/two.out err=$WORK/two.err
$LIMIT "$PULL" --plain-http --store "$WORK/store2" "$REF" "$REF2" \
    >"$out" 2>"$err"
rc=$?
if [[ $rc -eq 0 ]] &&
    grep -q "^$REF: digest sha256:" "$out" &&
    grep -q "^$REF2: digest sha256:" "$out" &&
    grep -qx "$REF: Status: Downloaded newer image for $REF" "$out" &&
    grep -qx "$REF2: Status: Downloaded newer image for $REF2" "$out" &&
    grep -qF "\"$REF2\"" "$WORK/store2/index.json"; then
    pass "two references in one process"
else
    fail "two references (exit $rc)" "$out" "$err"
fi

# script(1) (bsdutils, essential on Debian) gives the pull a terminal.
out=$WORK/tty.out
cmd=$(printf '%q ' "$PULL" --plain-http --store "$WORK/store-tty" "$REF")
$LIMIT script -qec "$cmd" /dev/null >"$out" 2>&1
rc=$?
if [[ $rc -eq 0 ]] &&
    grep -qa $'\e\\[2K[0-9a-f]\\{12\\}: Pull complete' "$out" &&
    grep -qa "Status: Downloaded newer image for $REF" "$out"; then
    pass "terminal: lines redrawn in place"
else
    fail "terminal (exit $rc)" "$out"
fi

out=$WORK/json.out err=$WORK/json.err
$LIMIT "$PULL" --plain-http --json --store "$STORE" "$REF" \
    >"$out" 2>"$err"
rc=$?
if [[ $rc -eq 0 ]] && [[ $(head -c1 "$out") == "{" ]] &&
    grep -qF "\"reference\": \"$REF\"" "$out" &&
    grep -qF "\"up_to_date\": true" "$out" &&
    grep -q "^$REF: digest $DIGEST" "$err"; then
    pass "--json: result JSON alone on stdout"
else
    fail "--json (exit $rc)" "$out" "$err"
fi

# ---- the store -----------------------------------------------------------

want="\"org.opencontainers.image.ref.name\": \"$REF\""
if grep -qF "$want" "$STORE/index.json" &&
    [[ -z $(ls -A "$STORE/.vicpull/ingest") ]]; then
    pass "index.json names $REF; ingest area empty"
else
    fail "store layout" "$STORE/index.json"
fi

# A tool we need in CI but may skip on a developer machine.
have() {
    command -v "$1" >/dev/null && return 0
    if [[ ${CI:-} == true ]]; then
        fail "$1 is not installed (CI needs it)"
    else
        echo "skip $1 checks: not installed"
    fi
    return 1
}

if have skopeo; then
    out=$WORK/skopeo.out err=$WORK/skopeo.err
    skopeo inspect "oci:$STORE:$REF" >"$out" 2>"$err"
    rc=$?
    n=$(grep -cE '^ +"sha256:[0-9a-f]{64}",?$' "$out")
    if [[ $rc -eq 0 && $n -eq $LAYERS ]]; then
        pass "skopeo inspect oci:STORE:$REF ($n layers)"
    else
        fail "skopeo inspect (exit $rc, $n layers)" "$out" "$err"
    fi
fi

if have umoci; then
    out=$WORK/umoci.out
    # umoci unpacks every layer: proves the blobs are real, whole tars.
    umoci unpack --image "$STORE:$REF" "$WORK/bundle" >"$out" 2>&1
    rc=$?
    if [[ $rc -eq 0 && -d $WORK/bundle/rootfs${SOURCES[0]} ]]; then
        pass "umoci unpack: rootfs has ${SOURCES[0]}"
    else
        fail "umoci unpack (exit $rc)" "$out"
    fi
fi

# ---- sanitizers ----------------------------------------------------------

out=$WORK/asan.out err=$WORK/asan.err
$LIMIT "$PULL_ASAN" --plain-http --store "$WORK/store-asan" "$REF" "$REF2" \
    >"$out" 2>"$err"
rc=$?
if [[ $rc -eq 0 ]] &&
    grep -q "^$REF: digest $DIGEST" "$out" &&
    ! grep -qE "AddressSanitizer|LeakSanitizer|runtime error" "$err"; then
    pass "ASan/UBSan build pulls two references cleanly"
else
    fail "ASan/UBSan pull (exit $rc)" "$out" "$err"
fi

# ---- Ctrl-C --------------------------------------------------------------

# A loopback server that accepts and never answers, so the pull is
# reliably still running when SIGINT arrives. perl-base is essential on
# Debian, so this needs nothing extra.
perl -MIO::Socket::INET -e '
    my $s = IO::Socket::INET->new(LocalAddr => "127.0.0.1",
        LocalPort => 0, Listen => 16, ReuseAddr => 1) or die "listen: $!";
    $| = 1; print $s->sockport, "\n";
    my @keep; while (my $c = $s->accept) { push @keep, $c }
' >"$WORK/stall.port" &
PIDS+=($!)
for _ in $(seq 1 100); do
    [[ -s $WORK/stall.port ]] && break
    sleep 0.1
done
STALL_REF=127.0.0.1:$(head -n1 "$WORK/stall.port")/stall/app:1

for bin in "$PULL" "$PULL_ASAN"; do
    name=$(basename "$bin")
    out=$WORK/int-$name.out err=$WORK/int-$name.err
    $LIMIT "$bin" --plain-http --store "$WORK/store-int" "$STALL_REF" "$REF" \
        >"$out" 2>"$err" &
    pid=$!
    # Wait until the pull is under way, then press "Ctrl-C".
    for _ in $(seq 1 100); do
        grep -q "Pulling from stall/app" "$out" && break
        sleep 0.1
    done
    sleep 0.3
    kill -INT "$pid"
    wait "$pid"
    rc=$?
    if [[ $rc -eq 130 ]] &&
        grep -q "^$STALL_REF: CANCELLED: " "$err" &&
        ! grep -qE "AddressSanitizer|LeakSanitizer|runtime error" "$err"; then
        pass "SIGINT cancels every pull: $name exits 130"
    else
        fail "SIGINT ($name, exit $rc)" "$out" "$err"
    fi
done

echo "pull example: $passed passed, $failed failed"
[[ $failed -eq 0 ]]
