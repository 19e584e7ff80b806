#!/usr/bin/env bash
# bench/bench.sh: vicpull against skopeo, side by side, on a loopback registry.
#
# Builds release, starts docker-registry (access log on) on 127.0.0.1 in a temp
# dir, pushes seeded benchmark images, then pulls them alternately with each tool
# into fresh stores. Prints medians (min-max) of wall time, CPU time, peak RSS and
# the blob GETs each pull made, with ratios against skopeo, and writes the same
# between the markers in BENCHMARKS.md. A benchmark, not a test: CI never runs it.
#
#   bench/bench.sh                 # 5 runs per tool and workload; updates BENCHMARKS.md
#   bench/bench.sh --runs 9 --warmup 2
#   bench/bench.sh --quick         # 1 run, smaller big image; prints only
#   bench/bench.sh --workloads big,small --no-build --keep
#
# Workloads (layers are tar files of mixed text and random blocks, gzip ~2.6x):
#   big     4 layers of 256 MiB raw (~394 MiB gzip)
#   small   40 layers of 1 MiB raw (~0.39 MiB gzip each)
#   shared  8 images of 4 layers of 16 MiB raw; the first 3 are the same in all,
#           so 11 distinct layers (~68 MiB gzip); pulled concurrently in one process
#
# Tools:
#   vicpull              examples/pull.c (the C example), diffIDs verified (default)
#   vicpull-rs           target/release/vicpull-pull (Rust API), diffIDs verified
#   vicpull-rs digest    the same with verify_diff_ids=false (skopeo's amount of work)
#   skopeo               skopeo copy docker://... oci:DIR:TAG
#   vicpull warm store   one more vicpull pull into the last run's store: must GET no blob
# For shared, vicpull is one process pulling 8 refs into one store; skopeo is 8
# concurrent processes, each into its own oci dir (one shared dir would race on
# index.json). Its peak RSS is the sum of the 8 processes' peaks.
set -euo pipefail
export LC_ALL=C

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CMDLINE="bench/bench.sh${*:+ $*}"

RUNS=5
WARMUP=
QUICK=0
BUILD=1
KEEP=0
WRITE=auto
WORKLOADS=big,small,shared
SEED=20240601

usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
    echo "options: --runs N  --warmup N (untimed rounds first, default 1)  --quick"
    echo "         --no-build  --keep  --workloads LIST"
    echo "         --write FILE | --no-write   (default: BENCHMARKS.md unless --quick)"
}

die() {
    echo "bench: $*" >&2
    exit 1
}

while [ $# -gt 0 ]; do
    case $1 in
    --runs) RUNS=${2:?--runs needs N}; shift ;;
    --runs=*) RUNS=${1#*=} ;;
    --warmup) WARMUP=${2:?--warmup needs N}; shift ;;
    --quick) QUICK=1 ;;
    --no-build) BUILD=0 ;;
    --keep) KEEP=1 ;;
    --write) WRITE=${2:?--write needs FILE}; shift ;;
    --no-write) WRITE=none ;;
    --workloads) WORKLOADS=${2:?--workloads needs a list}; shift ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument $1" ;;
    esac
    shift
done
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "--runs wants a positive number, not $RUNS"

if [ "$QUICK" = 1 ]; then
    RUNS=1 WARMUP=${WARMUP:-0}
    BIG_BYTES=24M SMALL_BYTES=1M SHARED_BYTES=2M
else
    BIG_BYTES=256M SMALL_BYTES=1M SHARED_BYTES=16M
fi
WARMUP=${WARMUP:-1}
[[ $WARMUP =~ ^[0-9]+$ ]] || die "--warmup wants a number, not $WARMUP"
BIG_LAYERS=4 SMALL_LAYERS=40 SHARED_IMAGES=8 SHARED_BASE=3 SHARED_LAYERS=4
if [ "$WRITE" = auto ]; then
    if [ "$QUICK" = 1 ]; then WRITE=none; else WRITE=$ROOT/BENCHMARKS.md; fi
fi

has_workload() { [[ ",$WORKLOADS," == *",$1,"* ]]; }
for w in ${WORKLOADS//,/ }; do
    case $w in big | small | shared) ;; *) die "unknown workload $w" ;; esac
done

for tool in skopeo /usr/bin/time /usr/bin/docker-registry curl jq make cc; do
    command -v "$tool" >/dev/null || die "missing $tool (apt-get install skopeo time docker-registry curl jq make gcc)"
done

# ---- work dir and cleanup ---------------------------------------------------

WORK=$(mktemp -d "${TMPDIR:-/tmp}/vicpull-bench.XXXXXX")
REG_PID=
cleanup() {
    local rc=$?
    if [ -n "$REG_PID" ] && kill -0 "$REG_PID" 2>/dev/null; then
        # testkit stops the registry on SIGTERM (and the registry dies with it anyway).
        kill "$REG_PID" 2>/dev/null || true
        wait "$REG_PID" 2>/dev/null || true
    fi
    if [ "$KEEP" = 1 ]; then
        echo "bench: kept $WORK" >&2
    else
        rm -rf "$WORK"
    fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

# ---- build ------------------------------------------------------------------

# Binaries are copied into WORK so that others rebuilding target/ during the run
# cannot change what is measured halfway through.
BIN=$WORK/bin
mkdir -p "$BIN"
if [ "$BUILD" = 1 ]; then
    echo "bench: cargo build --release --workspace" >&2
    (cd "$ROOT" && cargo build --release --workspace --quiet) || die "cargo build failed"
fi
for b in testkit vicpull-pull; do
    [ -x "$ROOT/target/release/$b" ] || die "no target/release/$b: build first"
    cp "$ROOT/target/release/$b" "$BIN/"
done

# The C example, built into WORK against a copy of the library it then loads.
CPULL=
if make -s -C "$ROOT/examples" BUILD="$WORK/cbuild" >"$WORK/make.log" 2>&1; then
    so=$WORK/cbuild/lib/release/libvicpull.so.0
    cp --remove-destination "$ROOT/target/release/libvicpull.so" "$so"
    CPULL=$WORK/cbuild/pull
    # Not "ldd | grep -q": with pipefail, grep quitting early can fail the pipe.
    [[ $(ldd "$CPULL") == *"=> $so "* ]] || die "build/pull does not load $so"
else
    echo "bench: the C example did not build (see below); single pulls use" \
        "vicpull-pull and the shared workload has no vicpull row" >&2
    tail -20 "$WORK/make.log" >&2
fi

# ---- registry -----------------------------------------------------------------

REG_DIR=$WORK/registry
LOG=$REG_DIR/registry.log
"$BIN/testkit" registry --dir "$REG_DIR" --access-log >"$WORK/registry.addr" \
    2>"$WORK/registry.err" &
REG_PID=$!
for _ in $(seq 300); do
    [ -s "$WORK/registry.addr" ] && break
    kill -0 "$REG_PID" 2>/dev/null || { cat "$WORK/registry.err" >&2; die "registry did not start"; }
    sleep 0.1
done
ADDR=$(head -n1 "$WORK/registry.addr")
[[ $ADDR =~ ^127\.[0-9.]+:[0-9]+$ ]] || die "registry printed no loopback address: $ADDR"
echo "bench: registry on $ADDR, work dir $WORK" >&2

push() { # REPO TAG SEED LAYERS BYTES [testkit flags...]
    local repo=$1 tag=$2 seed=$3 layers=$4 bytes=$5
    shift 5
    "$BIN/testkit" bench-image --registry "$ADDR" --repo "$repo" --tag "$tag" \
        --seed "$seed" --layers "$layers" --layer-bytes "$bytes" "$@" >/dev/null
}

manifest() { # REPO TAG
    curl -fsS --noproxy '*' -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
        "http://$ADDR/v2/$1/manifests/$2"
}

# "N blobs, X MiB" for the distinct blobs (config + layers) of REPO:TAG...
blob_summary() { # REPO TAG [TAG...]
    local repo=$1
    shift
    for tag in "$@"; do manifest "$repo" "$tag" | jq -r '.config, .layers[] | "\(.digest) \(.size)"'; done |
        sort -u | awk '{ n++; s += $2 } END { printf "%d blobs, %.1f MiB", n, s / 1048576 }'
}

declare -A REFS DESC
t0=$(date +%s)
if has_workload big; then
    echo "bench: pushing big ($BIG_LAYERS x $BIG_BYTES)" >&2
    push bench/big v1 "$SEED" "$BIG_LAYERS" "$BIG_BYTES"
    REFS[big]=bench/big:v1
    DESC[big]="$BIG_LAYERS layers of $BIG_BYTES raw; $(blob_summary bench/big v1)"
fi
if has_workload small; then
    echo "bench: pushing small ($SMALL_LAYERS x $SMALL_BYTES)" >&2
    push bench/small v1 $((SEED + 1)) "$SMALL_LAYERS" "$SMALL_BYTES"
    REFS[small]=bench/small:v1
    DESC[small]="$SMALL_LAYERS layers of $SMALL_BYTES raw; $(blob_summary bench/small v1)"
fi
if has_workload shared; then
    echo "bench: pushing shared ($SHARED_IMAGES images)" >&2
    tags=()
    for k in $(seq 0 $((SHARED_IMAGES - 1))); do
        push bench/shared "s$k" $((SEED + 100 + k)) "$SHARED_LAYERS" "$SHARED_BYTES" \
            --base-seed $((SEED + 99)) --base-layers "$SHARED_BASE"
        tags+=("s$k")
    done
    REFS[shared]=${tags[*]}
    DESC[shared]="$SHARED_IMAGES images of $SHARED_LAYERS layers of $SHARED_BYTES raw, the first $SHARED_BASE shared; distinct: $(blob_summary bench/shared "${tags[@]}")"
fi
echo "bench: images pushed in $(($(date +%s) - t0)) s" >&2
sync

# ---- one measured run ---------------------------------------------------------

RESULTS=$WORK/results.tsv
: >"$RESULTS"
MARKS=0

# Waits until the registry has logged a marker request, so every request of the
# run before it is in the log (lines are written as each handler returns).
log_barrier() {
    MARKS=$((MARKS + 1))
    curl -s --noproxy '*' -o /dev/null "http://$ADDR/v2/?bench-mark=$MARKS" || true
    for _ in $(seq 200); do
        grep -q "bench-mark=$MARKS " "$LOG" && return
        sleep 0.02
    done
    die "registry log lost marker $MARKS"
}

# measure WORKLOAD TOOL RUN CMD...: runs CMD under GNU time, appends one TSV row:
# workload tool run wall cpu rss_kib requests blob_gets digests max_gets_per_digest
measure() {
    local workload=$1 tool=$2 run=$3
    shift 3
    rm -rf "$WORK/rss"
    mkdir -p "$WORK/rss"
    sync
    log_barrier
    local off start end
    off=$(stat -c %s "$LOG")
    start=$(date +%s%N)
    if ! /usr/bin/time -f '%U %S %M' -o "$WORK/time.out" "$@" >"$WORK/tool.log" 2>&1; then
        tail -30 "$WORK/tool.log" >&2
        die "$tool failed on $workload (run $run): $*"
    fi
    end=$(date +%s%N)
    log_barrier

    local user sys rss
    read -r user sys rss <"$WORK/time.out"
    # Commands that run several processes leave one peak each in WORK/rss.
    if compgen -G "$WORK/rss/*" >/dev/null; then
        rss=$(cat "$WORK/rss"/* | awk '{ s += $1 } END { print s }')
    fi
    tail -c +$((off + 1)) "$LOG" | awk -v w="$workload" -v t="$tool" -v r="$run" \
        -v wall="$(((end - start) / 1000000))" -v cpu="$user $sys" -v rss="$rss" '
        $6 ~ /^"(GET|HEAD|POST|PUT|PATCH|DELETE)$/ && $7 !~ /bench-mark=/ {
            req++
            if ($6 == "\"GET" && $7 ~ /\/blobs\/sha256:/) {
                d = $7; sub(/.*\/blobs\//, "", d); n[d]++; gets++
            }
        }
        END {
            for (d in n) { uniq++; if (n[d] > max) max = n[d] }
            split(cpu, c, " ")
            printf "%s\t%s\t%d\t%.3f\t%.2f\t%d\t%d\t%d\t%d\t%d\n", w, t, r, wall / 1000,
                c[1] + c[2], rss, req, gets, uniq, max
        }' >>"$RESULTS"
    tail -n1 "$RESULTS" | awk -F'\t' '{ printf "  %-7s %-18s run %d: %6.2f s wall %6.2f s cpu %5.1f MiB, %d blob GETs\n", $1, $2, $3, $4, $5, $6 / 1024, $8 }' >&2
}

store() { # WORKLOAD TOOL: a fresh, empty store path
    local d=$WORK/stores/$1-${2// /-}
    rm -rf "$d"
    mkdir -p "$WORK/stores"
    echo "$d"
}

refs_of() { # WORKLOAD: full references
    local out=() r
    if [ "$1" = shared ]; then
        for r in ${REFS[shared]}; do out+=("$ADDR/bench/shared:$r"); done
    else
        out=("$ADDR/${REFS[$1]}")
    fi
    echo "${out[@]}"
}

# run_tool WORKLOAD TOOL RUN [STORE]: one pull of WORKLOAD with TOOL.
run_tool() {
    local w=$1 tool=$2 run=$3 dir=${4:-}
    local -a refs
    read -r -a refs <<<"$(refs_of "$w")"
    [ -n "$dir" ] || dir=$(store "$w" "$tool")
    case $tool in
    vicpull | "vicpull warm store")
        if [ -n "$CPULL" ]; then
            measure "$w" "$tool" "$run" "$CPULL" --plain-http --store "$dir" "${refs[@]}"
        else
            measure "$w" "$tool" "$run" "$BIN/vicpull-pull" \
                "{\"reference\":\"${refs[0]}\",\"store\":\"$dir\",\"plain_http\":true}"
        fi
        ;;
    vicpull-rs)
        measure "$w" "$tool" "$run" "$BIN/vicpull-pull" \
            "{\"reference\":\"${refs[0]}\",\"store\":\"$dir\",\"plain_http\":true,\"verify_diff_ids\":true}"
        ;;
    "vicpull-rs digest")
        measure "$w" "$tool" "$run" "$BIN/vicpull-pull" \
            "{\"reference\":\"${refs[0]}\",\"store\":\"$dir\",\"plain_http\":true,\"verify_diff_ids\":false}"
        ;;
    skopeo)
        # One process per reference, each into its own oci dir, all at once; each
        # leaves its peak RSS in WORK/rss. Progress goes to the tool log.
        measure "$w" "$tool" "$run" bash -c '
            work=$1 dir=$2; shift 2; k=0; pids=()
            mkdir -p "$dir"
            for ref in "$@"; do
                tag=${ref##*:}
                /usr/bin/time -f %M -o "$work/rss/$k" skopeo --insecure-policy copy \
                    --src-tls-verify=false "docker://$ref" "oci:$dir/$k:$tag" &
                pids+=($!); k=$((k + 1))
            done
            for p in "${pids[@]}"; do wait "$p" || exit 1; done' skopeo "$WORK" "$dir" "${refs[@]}"
        ;;
    *) die "unknown tool $tool" ;;
    esac
}

tools_for() { # WORKLOAD
    case $1 in
    big) echo "vicpull|vicpull-rs|vicpull-rs digest|skopeo" ;;
    small) echo "vicpull|vicpull-rs digest|skopeo" ;;
    shared) if [ -n "$CPULL" ]; then echo "vicpull|skopeo"; else echo "skopeo"; fi ;;
    esac
}

# ---- the runs -------------------------------------------------------------------

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
# Rounds numbered below 1 are warm-up: recorded in the raw data, left out of the
# summary (the first pulls after pushing ran 10-70% slower for every tool).
for run in $(seq $((1 - WARMUP)) "$RUNS"); do
    for w in big small shared; do
        has_workload "$w" || continue
        IFS='|' read -r -a tools <<<"$(tools_for "$w")"
        # Rotate the order each run so no tool always goes first (or right after a
        # big write-back).
        n=${#tools[@]}
        for i in $(seq 0 $((n - 1))); do
            run_tool "$w" "${tools[$(((i + run + n * WARMUP - 1) % n))]}" "$run"
        done
    done
done
# The last fresh vicpull store of each workload is now complete: pull again.
for w in big small shared; do
    has_workload "$w" || continue
    [ "$w" != shared ] || [ -n "$CPULL" ] || continue
    run_tool "$w" "vicpull warm store" 1 "$WORK/stores/$w-vicpull"
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

# ---- summary ------------------------------------------------------------------

# One markdown row per workload and tool: medians (min-max), GETs, ratios to skopeo.
summarize() {
    awk -F'\t' '
    function med(v, k,   i, j, t, m) {
        for (i = 2; i <= k; i++) { t = v[i]; for (j = i - 1; j >= 1 && v[j] > t; j--) v[j + 1] = v[j]; v[j + 1] = t }
        m = (k % 2) ? v[(k + 1) / 2] : (v[k / 2] + v[k / 2 + 1]) / 2
        lo = v[1]; hi = v[k]
        return m
    }
    function cell(m, fmt) {
        if (lo == hi) return sprintf(fmt, m)
        return sprintf(fmt " (" fmt "-" fmt ")", m, lo, hi)
    }
    $3 < 1 { next }
    {
        key = $1 SUBSEP $2
        if (!(key in cnt)) { order[++nk] = key }
        k = ++cnt[key]
        wall[key, k] = $4; cpu[key, k] = $5; rss[key, k] = $6 / 1024
        req[key, k] = $7; gets[key, k] = $8
        if ($9 > uniq[key]) uniq[key] = $9
        if ($10 > maxper[key]) maxper[key] = $10
    }
    END {
        print "| workload | tool | runs | wall s | CPU s | peak RSS MiB | blob GETs (digests, max per digest) | requests | wall / skopeo | CPU / skopeo | RSS / skopeo |"
        print "|---|---|---|---|---|---|---|---|---|---|---|"
        for (i = 1; i <= nk; i++) {
            key = order[i]; k = cnt[key]
            for (j = 1; j <= k; j++) { a[j] = wall[key, j] }; mw[key] = med(a, k); cw[key] = cell(mw[key], "%.2f")
            for (j = 1; j <= k; j++) { a[j] = cpu[key, j] }; mc[key] = med(a, k); cc[key] = cell(mc[key], "%.2f")
            for (j = 1; j <= k; j++) { a[j] = rss[key, j] }; mr[key] = med(a, k); cr[key] = cell(mr[key], "%.1f")
            for (j = 1; j <= k; j++) { a[j] = req[key, j] }; cq[key] = cell(med(a, k), "%d")
            for (j = 1; j <= k; j++) { a[j] = gets[key, j] }; cg[key] = cell(med(a, k), "%d")
        }
        # Rows in a fixed order: by workload, then by tool as listed at the top.
        split("big small shared", ws, " "); split("vicpull|vicpull-rs|vicpull-rs digest|skopeo|vicpull warm store", ts, "|")
        n = 0
        for (x = 1; x in ws; x++) for (y = 1; y in ts; y++) if ((ws[x], ts[y]) in cnt) order[++n] = ws[x] SUBSEP ts[y]
        for (i = 1; i <= nk; i++) {
            key = order[i]; split(key, p, SUBSEP)
            s = p[1] SUBSEP "skopeo"
            rw = rc = rr = "-"
            # A warm pull does less than a fresh one: no ratio.
            if ((s in cnt) && p[2] != "skopeo" && p[2] != "vicpull warm store") {
                rw = sprintf("%.2f", mw[key] / mw[s]); rc = sprintf("%.2f", mc[key] / mc[s])
                rr = sprintf("%.2f", mr[key] / mr[s])
            }
            printf "| %s | %s | %d | %s | %s | %s | %s (%d, %d) | %s | %s | %s | %s |\n", p[1], p[2],
                cnt[key], cw[key], cc[key], cr[key], cg[key], uniq[key], maxper[key], cq[key], rw, rc, rr
        }
    }' "$RESULTS"
}

# Checks that a benchmark run can make; one line each.
checks() {
    awk -F'\t' -v big_size="$BIG_LAYERS x $BIG_BYTES" '
    $1 == "big" && $2 == "vicpull" { if ($6 > big) big = $6; seen = 1 }
    $3 < 1 { next }
    $2 == "vicpull warm store" { warm[$1] = $8 }
    $2 == "vicpull" && $10 > 1 { dup[$1] = 1 }
    END {
        if (seen) printf "- issue 2, peak RSS of the vicpull pull of big (%s) < 64 MiB: %s (max %.1f MiB over the runs)\n",
            big_size, (big < 64 * 1024) ? "PASS" : "FAIL", big / 1024
        for (w in warm) printf "- %s, second vicpull pull into a warm store GETs no blob: %s (%d blob GETs)\n",
            w, warm[w] == 0 ? "PASS" : "FAIL", warm[w]
        for (w in dup) printf "- %s: vicpull fetched some digest more than once (see max per digest)\n", w
    }' "$RESULTS" | sort
}

commit() {
    local c dirty
    c=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
    dirty=$(git -C "$ROOT" status --porcelain 2>/dev/null | wc -l)
    if [ "$dirty" -gt 0 ]; then echo "$c + $dirty uncommitted files"; else echo "$c"; fi
}

report() {
    local runs="$RUNS runs"
    [ "$RUNS" != 1 ] || runs="1 run"
    echo "Command: \`$CMDLINE\` ($runs per tool and workload after $WARMUP warm-up round(s), tools"
    echo "alternating), $(date -u '+%Y-%m-%d %H:%M UTC')."
    echo
    local flags
    flags=$(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -x -E 'sha_ni|avx2|avx512f|bmi2|vpclmulqdq' | tr '\n' ' ')
    echo "Machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//') (${flags% }),"
    echo "$(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo) RAM, Linux $(uname -r),"
    echo "work dir on $(df -T "$WORK" | awk 'NR == 2 { print $2 }'); load average $LOAD_BEFORE before, $LOAD_AFTER after."
    echo
    echo "Versions: vicpull $(commit)$([ -z "$CPULL" ] || echo "; C example: $("$CPULL" --version)"),"
    echo "$(skopeo --version), $(/usr/bin/docker-registry --version 2>&1 | head -n1), $(rustc --version 2>/dev/null || echo rustc unknown)."
    echo
    echo "Images (seed $SEED, pushed in docker schema 2):"
    for w in big small shared; do
        has_workload "$w" && echo "- $w: ${DESC[$w]}"
    done
    echo
    if [ -z "$CPULL" ]; then
        echo "The C example did not build: the vicpull and vicpull warm store rows ran vicpull-pull,"
        echo "and shared has no vicpull row (it needs one process pulling 8 refs)."
        echo
    fi
    summarize
    echo
    checks
    echo
    echo "<details><summary>All runs: workload, tool, run, wall s, CPU s, peak RSS KiB, requests, blob GETs, digests, max GETs per digest</summary>"
    echo
    echo '```'
    cat "$RESULTS"
    echo '```'
    echo "</details>"
}

REPORT=$(report)
echo
echo "$REPORT"

if [ "$WRITE" != none ]; then
    begin='<!-- bench:begin (bench/bench.sh writes from here to bench:end) -->'
    end='<!-- bench:end -->'
    if [ ! -f "$WRITE" ] || ! grep -qF "$end" "$WRITE"; then
        printf '# Benchmarks\n\n%s\n%s\n' "$begin" "$end" >>"$WRITE"
    fi
    BODY=$REPORT awk -v begin="$begin" -v end="$end" '
        $0 == begin { print; print ENVIRON["BODY"]; skip = 1; next }
        $0 == end { skip = 0 }
        !skip' "$WRITE" >"$WORK/bench.md"
    cat "$WORK/bench.md" >"$WRITE"
    echo "bench: wrote $WRITE" >&2
fi
