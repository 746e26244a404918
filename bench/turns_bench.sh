#!/usr/bin/env bash
# turns_bench.sh - build the services, the model server and corral-turns-bench
# (Release, in build/bench) and run every turn measurement; about 4 minutes
# after the build.
#
#   bench/turns_bench.sh                      # everything, tables on stdout
#   BENCH_DIR=/mnt/disk bench/turns_bench.sh  # the store's data on another disk
#
# 1. stream: sessions running streaming turns back to back through
#    corral-worker and the scripted model server; events/s persisted and
#    published, CPU of every process, worker CPU per 1 000 events;
# 2. stream with the bench as the worker (session + store alone), to see what
#    the spine itself sustains, sync=full and sync=os;
# 3. hold: 250 ... 3000 long turns open at once in one worker.
# Results and their analysis: docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."

build=${BUILD:-build/bench}
data=${BENCH_DIR:-/var/tmp}
bench=$build/bench/corral-turns-bench

echo "== build ($build, Release)"
mkdir -p "$build"
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release >"$build/bench-cmake.log" 2>&1 ||
    { cat "$build/bench-cmake.log"; exit 1; }
cmake --build "$build" -j"$(nproc)" --target corral-store corral-session corral-worker \
    corral-fake-model corral-turns-bench >"$build/bench-build.log" 2>&1 ||
    { tail -40 "$build/bench-build.log"; exit 1; }

echo "== machine"
echo "cpus:   $(nproc) x $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
echo "kernel: $(uname -sr)"
echo "memory: $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
echo "disk:   $(df -T "$data" | awk 'NR==2 {print $1, $2, $7}')"
echo "nofile: $(ulimit -Sn) soft, $(ulimit -Hn) hard (the bench raises soft to hard)"
echo "load:   $(cut -d' ' -f1-3 /proc/loadavg) (1/5/15 min, before the run)"
echo

run() { # every run prints one table row on stdout, details on stderr
    "$bench" --dir "$data" --warmup 2 --duration 6 "$@" || echo "(run failed: $*)"
}

echo "== 1. stream through corral-worker and the model server (6 s after 2 s)"
run --header --sessions 100 --chunks 500
run --sessions 100 --chunks 500 --sync os
run --sessions 1000 --chunks 200 --chunk-delay 20   # offered 50 000/s, 50 ev/s a turn
run --sessions 1000 --chunks 200 --chunk-delay 5    # offered 200 000/s: the target shape
echo

echo "== 2. stream, the bench as the worker: session + store alone"
run --header --worker synthetic --sessions 1000 --chunks 200
run --worker synthetic --sessions 1000 --chunks 200 --sync os
run --worker synthetic --sessions 100 --chunks 2000
run --worker synthetic --sessions 100 --chunks 2000 --sync os
run --worker synthetic --sessions 1000 --chunks 200 --rate 100000
echo

echo "== 3. hold: long turns open at once in one corral-worker"
echo "(40 pieces 150 ms apart around a 4 s pause: ~10 s a turn)"
"$bench" --dir "$data" --mode hold --levels 250,500,1000,1500,2000,3000 || echo "(hold run failed)"
echo
echo "load:   $(cut -d' ' -f1-3 /proc/loadavg) (after; other work on the machine skews the figures)"
