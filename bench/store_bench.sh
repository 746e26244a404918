#!/usr/bin/env bash
# store_bench.sh - build corral-store and corral-store-bench (Release, in
# build/bench) and run every store measurement; about 70 s after the build.
#
#   bench/store_bench.sh                 # everything, tables on stdout
#   BENCH_DIR=/mnt/disk bench/store_bench.sh   # measure another disk
#
# 1. the default run: 1000 sessions, 100-byte events, 64 events/request,
#    64 requests in flight; sync=full and sync=os, each next to raw LMDB
#    group commits of the same records; range reads; the fdatasync floor;
# 2. a batch sweep at sync=full: events per request from 1 to 256 with the
#    same 4096 events in flight, store next to raw LMDB.
# Results and their analysis: docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."

build=${BUILD:-build/bench}
data=${BENCH_DIR:-$build/bench-data} # on the disk the store would use
bench=$build/bench/corral-store-bench

echo "== build ($build, Release)"
mkdir -p "$build"
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release >"$build/bench-cmake.log" 2>&1 ||
    { cat "$build/bench-cmake.log"; exit 1; }
cmake --build "$build" -j"$(nproc)" --target corral-store corral-store-bench \
    >"$build/bench-build.log" 2>&1 || { tail -40 "$build/bench-build.log"; exit 1; }
mkdir -p "$data"

echo "== machine"
echo "cpus:   $(nproc) x $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
echo "kernel: $(uname -sr)"
echo "memory: $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
echo "disk:   $(df -T "$data" | awk 'NR==2 {print $1, $2, $7}')"
echo "load:   $(cut -d' ' -f1-3 /proc/loadavg) (1/5/15 min, before the run)"
echo

echo "== 1. default run"
echo "\$ $bench --dir $data"
"$bench" --dir "$data"
echo

echo "== 2. batch sweep, sync=full, 4096 events in flight (2 s each after 0.5 s)"
printf '| %5s | %6s | %10s | %9s | %17s | %17s | %9s | %10s | %9s | %7s |\n' \
    batch window "store ev/s" ev/commit "commit p50/p99 us" "reply p50/p99 us" \
    "store CPU" "raw ev/s" "store/raw" "wr B/ev"
echo '|------:|-------:|-----------:|----------:|------------------:|------------------:|----------:|-----------:|----------:|--------:|'
for batch in 1 4 16 64 256; do
    window=$((4096 / batch))
    "$bench" --dir "$data" --sync full --no-range --no-probe --batch "$batch" \
        --window "$window" --warmup 0.5 --duration 2 --tsv |
        awk -F'\t' -v b="$batch" -v w="$window" '
            /^store append/ { ev = $2; epc = $4; c = $5 " / " $6; l = $7 " / " $8
                              cpu = $9; wb = $12 }
            /^raw LMDB/     { raw = $2 }
            /store ÷ raw/   { ratio = $11 }
            END { printf "| %5d | %6d | %10d | %9d | %17s | %17s | %8d%% | %10d | %9.2f | %7d |\n",
                         b, w, ev, epc, c, l, cpu, raw, ratio, wb }'
done
echo
echo "load:   $(cut -d' ' -f1-3 /proc/loadavg) (after; other work on the machine skews the figures)"
