#!/usr/bin/env bash
# bench/profile.sh: where the CPU time of a verifying pull goes, and how the gzip
# backends compare. bench/bench.sh compares tools; this looks inside vicpull.
#
# Starts a loopback registry in a temp dir, pushes the big bench image (seeded, the
# same as bench.sh's), then runs the parts asked for:
#   --stages      each stage alone over the image's layers, in memory, fed in 64 KiB
#                 chunks (bench/hashbench): sha256 of the blob, sha256 of the tar,
#                 inflate per backend, and the whole BlobHasher per backend. CPU
#                 seconds, median of --runs; MiB/s of compressed input per CPU second.
#   --callgrind   instruction counts per stage and backend over one layer (valgrind;
#                 reproducible, but valgrind has no SHA-NI, so its sha256 is the
#                 software one and counts far more than on the CPU)
#   --perf        perf cpu-clock samples of real pulls (default and isal builds),
#                 sorted into stages by call stack
#   --e2e         whole pulls, alternating: vicpull default build, vicpull isal build,
#                 skopeo; median (min-max) of wall, CPU (user, sys) and peak RSS over
#                 --runs. Sys time is the noisy part: on this VM, page-cache writes
#                 into memory the guest has not touched lately cost 0.1-0.8 s more.
# With none of them: --stages. Backends: zlib-rs (the default), zlib-ng (flate2's
# C backend, built with cmake), isal (vicpull's `isal` feature; needs libisal-dev).
#
#   bench/profile.sh --stages --runs 5
#   bench/profile.sh --all --layer-bytes 64M
set -euo pipefail
export LC_ALL=C

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RUNS=5 LAYERS=4 LAYER_BYTES=256M SEED=20240601 KEEP=0
DO_STAGES=0 DO_CALLGRIND=0 DO_PERF=0 DO_E2E=0

die() {
    echo "profile: $*" >&2
    exit 1
}

while [ $# -gt 0 ]; do
    case $1 in
    --stages) DO_STAGES=1 ;;
    --callgrind) DO_CALLGRIND=1 ;;
    --perf) DO_PERF=1 ;;
    --e2e) DO_E2E=1 ;;
    --all) DO_STAGES=1 DO_CALLGRIND=1 DO_PERF=1 DO_E2E=1 ;;
    --runs) RUNS=${2:?}; shift ;;
    --layers) LAYERS=${2:?}; shift ;;
    --layer-bytes) LAYER_BYTES=${2:?}; shift ;;
    --keep) KEEP=1 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
    esac
    shift
done
[ $((DO_STAGES + DO_CALLGRIND + DO_PERF + DO_E2E)) -gt 0 ] || DO_STAGES=1
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "--runs wants a positive number"
for tool in curl jq python3 /usr/bin/time; do
    command -v "$tool" >/dev/null || die "missing $tool"
done
[ "$DO_CALLGRIND" = 0 ] || command -v valgrind >/dev/null || die "--callgrind needs valgrind"
[ "$DO_PERF" = 0 ] || command -v perf >/dev/null || die "--perf needs perf (linux-perf)"
[ "$DO_E2E" = 0 ] || command -v skopeo >/dev/null || die "--e2e needs skopeo"
HAVE_ISAL=0
[ -e /usr/include/isa-l/igzip_lib.h ] && HAVE_ISAL=1
[ "$HAVE_ISAL" = 1 ] || echo "profile: no libisal-dev; the isal backend is skipped" >&2

WORK=$(mktemp -d "${TMPDIR:-/tmp}/vicpull-profile.XXXXXX")
REG_PID=
cleanup() {
    local rc=$?
    [ -z "$REG_PID" ] || { kill "$REG_PID" 2>/dev/null || true; wait "$REG_PID" 2>/dev/null || true; }
    if [ "$KEEP" = 1 ]; then echo "profile: kept $WORK" >&2; else rm -rf "$WORK"; fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

# ---- builds: own target dirs, so nobody else's target/release changes under us --

BIN=$WORK/bin
mkdir -p "$BIN"
build() { # TARGET_SUBDIR CARGO_ARGS...
    local dir=$ROOT/target/$1
    shift
    echo "profile: cargo build $*" >&2
    CARGO_TARGET_DIR=$dir cargo build --release --quiet "$@" || die "build failed: $*"
}
HB=(--manifest-path "$ROOT/bench/hashbench/Cargo.toml")
BACKENDS=(zlib-rs zlib-ng)
build hashbench "${HB[@]}" && cp "$ROOT/target/hashbench/release/vicpull-hashbench" "$BIN/hb-zlib-rs"
build hashbench "${HB[@]}" --features zlib-ng &&
    cp "$ROOT/target/hashbench/release/vicpull-hashbench" "$BIN/hb-zlib-ng"
if [ "$HAVE_ISAL" = 1 ]; then
    build hashbench "${HB[@]}" --features isal &&
        cp "$ROOT/target/hashbench/release/vicpull-hashbench" "$BIN/hb-isal"
    BACKENDS+=(isal)
fi
build profile -p vicpull-testkit --bin testkit && cp "$ROOT/target/profile/release/testkit" "$BIN/"
PULLS=(default)
if [ $((DO_PERF + DO_E2E)) -gt 0 ]; then
    build profile --bin vicpull-pull && cp "$ROOT/target/profile/release/vicpull-pull" "$BIN/pull-default"
    if [ "$HAVE_ISAL" = 1 ]; then
        build profile --bin vicpull-pull --features isal &&
            cp "$ROOT/target/profile/release/vicpull-pull" "$BIN/pull-isal"
        PULLS+=(isal)
    fi
fi

# ---- registry and image ---------------------------------------------------------

"$BIN/testkit" registry --dir "$WORK/registry" >"$WORK/registry.addr" 2>"$WORK/registry.err" &
REG_PID=$!
for _ in $(seq 300); do
    [ -s "$WORK/registry.addr" ] && break
    kill -0 "$REG_PID" 2>/dev/null || { cat "$WORK/registry.err" >&2; die "registry did not start"; }
    sleep 0.1
done
ADDR=$(head -n1 "$WORK/registry.addr")
[[ $ADDR =~ ^127\.[0-9.]+:[0-9]+$ ]] || die "registry printed no loopback address: $ADDR"
echo "profile: pushing $LAYERS x $LAYER_BYTES to $ADDR" >&2
"$BIN/testkit" bench-image --registry "$ADDR" --repo bench/big --tag 1 --seed "$SEED" \
    --layers "$LAYERS" --layer-bytes "$LAYER_BYTES" >/dev/null
REF=$ADDR/bench/big:1
mapfile -t LAYER_FILES < <(
    curl -fsS --noproxy '*' -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
        "http://$ADDR/v2/bench/big/manifests/1" | jq -r '.layers[].digest' |
        while read -r d; do
            h=${d#sha256:}
            echo "$WORK/registry/data/docker/registry/v2/blobs/sha256/${h:0:2}/$h/data"
        done
)
for f in "${LAYER_FILES[@]}"; do [ -f "$f" ] || die "no layer file $f"; done
COMPRESSED=$(cat "${LAYER_FILES[@]}" | wc -c)
echo "profile: $LAYERS layers, $((COMPRESSED / 1048576)) MiB compressed" >&2
echo "Machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs);" \
    "load average $(cut -d' ' -f1-3 /proc/loadavg) at the start."
echo "Image: $LAYERS gzip layers of $LAYER_BYTES raw, $((COMPRESSED / 1048576)) MiB compressed (seed $SEED)."

# median (min-max) of the numbers on stdin, with printf format $1
med() {
    sort -g | awk -v f="$1" '{ v[NR] = $1 } END {
        m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
        printf f " (" f "-" f ")", m, v[1], v[NR] }'
}

# ---- stages ------------------------------------------------------------------------

if [ "$DO_STAGES" = 1 ]; then
    echo "profile: stages, $RUNS runs" >&2
    : >"$WORK/stages.tsv"
    for run in $(seq "$RUNS"); do
        specs=("zlib-rs digest" "zlib-rs tar-sha")
        for b in "${BACKENDS[@]}"; do specs+=("$b hash"); done
        specs+=("zlib-rs inflate" "zlib-ng inflate")
        for spec in "${specs[@]}"; do
            read -r backend mode <<<"$spec"
            line=$("$BIN/hb-$backend" "$mode" "${LAYER_FILES[@]}" 2>/dev/null)
            cpu=$(sed -E 's/.* ([0-9.]+) s cpu.*/\1/' <<<"$line")
            printf '%s\t%s\t%s\n' "$mode" "$backend" "$cpu" >>"$WORK/stages.tsv"
        done
    done
    echo
    echo "| stage | backend | CPU s, median (min-max) of $RUNS | MiB/s of compressed input per core |"
    echo "|---|---|---|---|"
    cut -f1,2 "$WORK/stages.tsv" | awk '!seen[$0]++' | while IFS=$'\t' read -r mode backend; do
        cpus=$(awk -F'\t' -v m="$mode" -v b="$backend" '$1 == m && $2 == b { print $3 }' "$WORK/stages.tsv")
        m=$(med %.3f <<<"$cpus" | cut -d' ' -f1)
        case $mode in
        digest) what="sha256 of the blob" b=- ;;
        tar-sha) what="sha256 of the tar" b=- ;;
        inflate) what="inflate alone" b=$backend ;;
        hash) what="one pass: blob sha256 + inflate + tar sha256" b=$backend ;;
        esac
        printf '| %s | %s | %s | %.0f |\n' "$what" "$b" "$(med %.3f <<<"$cpus")" \
            "$(awk -v c="$COMPRESSED" -v s="$m" 'BEGIN { print c / 1048576 / s }')"
        echo "$mode $backend $m" >>"$WORK/stage-medians"
    done
    # ISA-L inflate alone, from the one-pass figure less the two sha256 stages.
    awk '{ v[$1 " " $2] = $3 } END {
        sha = v["digest zlib-rs"] + v["tar-sha zlib-rs"]
        n = split("zlib-rs zlib-ng isal", b, " ")
        for (i = 1; i <= n; i++) if (("hash " b[i]) in v)
            printf "| inflate, derived (one pass less both sha256) | %s | %.3f | %.0f |\n",
                b[i], v["hash " b[i]] - sha, c / 1048576 / (v["hash " b[i]] - sha)
    }' c="$COMPRESSED" "$WORK/stage-medians"
fi

# ---- callgrind ---------------------------------------------------------------------

if [ "$DO_CALLGRIND" = 1 ]; then
    one=${LAYER_FILES[0]}
    echo "profile: callgrind over one layer ($(($(wc -c <"$one") / 1048576)) MiB)" >&2
    echo
    echo "Instructions (callgrind) over one layer of $(($(wc -c <"$one") / 1048576)) MiB compressed, by stage:"
    echo
    echo "| run | backend | total G | sha256 G | inflate G | memcpy G | other G |"
    echo "|---|---|---|---|---|---|---|"
    specs=("zlib-rs digest")
    for b in "${BACKENDS[@]}"; do specs+=("$b hash"); done
    for spec in "${specs[@]}"; do
        read -r backend mode <<<"$spec"
        out=$WORK/cg.$backend.$mode
        valgrind --tool=callgrind --callgrind-out-file="$out" "$BIN/hb-$backend" "$mode" "$one" \
            >/dev/null 2>&1 || die "callgrind failed on $backend $mode"
        callgrind_annotate --inclusive=no --threshold=100 --auto=no "$out" | python3 -c '
import re, sys
cats = [("sha256", r"sha2::"),
        ("inflate", r"zlib_rs::|libz-ng|zng_|inflate_fast|chunkmemset|libisal|crc32|adler|flate2::|verify::igzip|isal_"),
        ("memcpy", r"memmove|memcpy|memset")]
tot = {}
for line in sys.stdin:
    m = re.match(r"\s*([\d,]+) \(\s*[\d.]+%\)\s+(.*)", line)
    if not m or "PROGRAM TOTALS" in line:
        continue
    cat = next((c for c, r in cats if re.search(r, m.group(2))), "other")
    tot[cat] = tot.get(cat, 0) + int(m.group(1).replace(",", ""))
cols = ["sha256", "inflate", "memcpy", "other"]
print("| %s | %s | %.2f | " % (sys.argv[1], sys.argv[2], sum(tot.values()) / 1e9)
      + " | ".join("%.2f" % (tot.get(c, 0) / 1e9) for c in cols) + " |")
' "$mode" "$backend"
    done
fi

# ---- perf of real pulls ---------------------------------------------------------

if [ "$DO_PERF" = 1 ]; then
    for b in "${PULLS[@]}"; do
        echo "profile: perf of a pull, $b build" >&2
        rm -rf "$WORK/store"
        perf record -q -e cpu-clock -F 1999 -g -o "$WORK/perf.$b" -- \
            "$BIN/pull-$b" "{\"reference\":\"$REF\",\"store\":\"$WORK/store\",\"plain_http\":true}" \
            >/dev/null 2>"$WORK/perf.$b.err" || die "pull under perf failed ($b)"
        echo
        echo "perf cpu-clock samples (1999 Hz) of one pull, $b build, by stage:"
        echo
        echo '```'
        perf script -i "$WORK/perf.$b" -F comm,tid,ip,sym,dso 2>/dev/null | awk '
        function stage(s) {
            if (s ~ /sha2::/) return "sha256 (blob and tar)"
            if (s ~ /zlib_rs::|zng_|inflate_fast|chunkmemset|libisal|decode_huffman|crc32|flate2::|verify::igzip/) return "inflate (+ gzip CRC-32)"
            if (s ~ /ext4_sync_file|file_write_and_wait|sys_fsync|sys_fdatasync/) return "fsync"
            if (s ~ /ksys_write|vfs_write|ext4_buffered_write|ext4_file_write_iter|generic_perform_write/) return "file writes (kernel)"
            if (s ~ /renameat|do_sys_openat|mkdirat|unlinkat|do_filp_open|statx|newfstat/) return "file metadata"
            if (s ~ /tcp_|sock_|__sys_recv|__sys_send|net_rx|napi|softirq|skb_|inet_|ip_rcv|ip_finish/) return "network (kernel)"
            if (s ~ /futex|epoll|schedule|finish_task_switch|try_to_wake_up|sched_yield/) return "wakeups (kernel)"
            if (s ~ /execve|elf_load|mmap|munmap|exc_page_fault|do_exit|clone/) return "process start, page faults"
            if (s ~ /memmove|memcpy|memset/) return "memcpy (user)"
            if (s ~ /tokio::|hyper::|reqwest::|h2::|mio::|bytes::|futures_/) return "http, tokio (user)"
            if (s ~ /kallsyms/) return "other kernel"
            return "other user"
        }
        /^[^ \t]/ { if (cur != "") { n[stage(cur)]++; total++ }; cur = " "; next }
        /^[ \t]+[^ \t]/ { cur = cur " " $0; next }
        END {
            if (cur != "") { n[stage(cur)]++; total++ }
            for (k in n) printf "%6d samples %5.1f%%  %5.2f s  %s\n", n[k], 100 * n[k] / total, n[k] / 1999, k | "sort -nr"
            close("sort -nr")
            printf "%6d samples         %5.2f s  all\n", total, total / 1999
        }'
        echo '```'
    done
fi

# ---- end to end ----------------------------------------------------------------------

if [ "$DO_E2E" = 1 ]; then
    echo "profile: end to end, $RUNS runs, tools alternating" >&2
    tools=()
    for b in "${PULLS[@]}"; do tools+=("vicpull-$b"); done
    tools+=(skopeo)
    : >"$WORK/e2e.tsv"
    for run in $(seq "$RUNS"); do
        n=${#tools[@]}
        for i in $(seq 0 $((n - 1))); do
            t=${tools[$(((i + run - 1) % n))]}
            rm -rf "$WORK/store"
            sync
            case $t in
            vicpull-*) cmd=("$BIN/pull-${t#vicpull-}" "{\"reference\":\"$REF\",\"store\":\"$WORK/store\",\"plain_http\":true}") ;;
            skopeo) cmd=(skopeo --insecure-policy copy --src-tls-verify=false "docker://$REF" "oci:$WORK/store:1") ;;
            esac
            s=$(date +%s%N)
            /usr/bin/time -f '%U %S %M' -o "$WORK/time.out" "${cmd[@]}" >/dev/null 2>"$WORK/tool.err" ||
                { tail "$WORK/tool.err" >&2; die "$t failed"; }
            e=$(date +%s%N)
            read -r u sy rss <"$WORK/time.out"
            printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$t" "$(((e - s) / 1000000))" \
                "$(awk -v a="$u" -v b="$sy" 'BEGIN { print a + b }')" "$rss" "$u" "$sy" >>"$WORK/e2e.tsv"
            echo "  $t run $run: $(tail -n1 "$WORK/e2e.tsv" | cut -f2-)" >&2
        done
    done
    echo
    echo "Whole pulls of the image, $RUNS runs each, alternating (load average $(cut -d' ' -f1-3 /proc/loadavg) at the end):"
    echo
    echo "| tool | wall s | CPU s | user s | sys s | peak RSS MiB | wall / skopeo |"
    echo "|---|---|---|---|---|---|---|"
    sk=$(awk -F'\t' '$1 == "skopeo" { print $2 / 1000 }' "$WORK/e2e.tsv" | med %.3f | cut -d' ' -f1)
    for t in "${tools[@]}"; do
        col() { awk -F'\t' -v t="$t" -v c="$1" -v d="$2" '$1 == t { print $c / d }' "$WORK/e2e.tsv"; }
        w=$(col 2 1000 | med %.2f)
        printf '| %s | %s | %s | %s | %s | %s | %.2f |\n' "$t" "$w" "$(col 3 1 | med %.2f)" \
            "$(col 5 1 | med %.2f)" "$(col 6 1 | med %.2f)" "$(col 4 1024 | med %.1f)" \
            "$(awk -v a="${w%% *}" -v b="$sk" 'BEGIN { print a / b }')"
    done
fi
