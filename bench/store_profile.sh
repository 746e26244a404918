#!/usr/bin/env bash
# store_profile.sh - where corral-store's time goes under the append load of
# corral-store-bench.  Needs perf (software cpu-clock is enough: VMs often
# have no hardware counters) and a build from bench/store_bench.sh.
#
#   bench/store_profile.sh [full|os] [batch] [window]     # default: full 64 64
#
# Prints, for the store process:
#   1. per thread: % of wall time on a CPU, waiting for a CPU (runqueue),
#      and blocked (the rest), from /proc/<pid>/task/<tid>/schedstat;
#   2. what the main thread is blocked in, sampling /proc/.../syscall;
#   3. the perf profile of the main thread by library, then the top symbols.
set -euo pipefail
cd "$(dirname "$0")/.."

sync=${1:-full} batch=${2:-64} window=${3:-64}
build=${BUILD:-build/bench}
data=${BENCH_DIR:-$build/bench-data}
bench=$build/bench/corral-store-bench
out=$build/store-profile-$sync-$batch.perf
[ -x "$bench" ] || { echo "build first: bench/store_bench.sh" >&2; exit 1; }
command -v perf >/dev/null || { echo "perf is not installed" >&2; exit 1; }
mkdir -p "$data"

perf record -q -e cpu-clock -F 2999 -o "$out" -- "$bench" --dir "$data" --sync "$sync" \
    --batch "$batch" --window "$window" --no-range --no-raw --no-probe --warmup 1 \
    --duration 4 >"$out.txt" 2>&1 &
perf_pid=$!

store=
for _ in $(seq 50); do
    sleep 0.1
    b=$(pgrep -P "$perf_pid" | head -1 || true)
    [ -n "$b" ] && store=$(pgrep -P "$b" -x corral-store || true)
    [ -n "$store" ] && break
done
[ -n "$store" ] || { wait "$perf_pid"; cat "$out.txt"; exit 1; }
sleep 1.5 # past the warm-up

# 1. thread times over about 2 s
declare -A before
t0=${EPOCHREALTIME/[.,]/}
for t in /proc/"$store"/task/*; do before[$t]=$(<"$t"/schedstat); done
# 2. meanwhile, what the main thread is blocked in (about 1000 samples)
declare -A seen
names=([7]=poll [18]=pwrite64 [20]=writev [74]=fsync [75]=fdatasync [202]=futex
    [232]=epoll_wait [271]=ppoll [296]=pwritev [1]=write [0]=read)
samples=0
while ((${EPOCHREALTIME/[.,]/} - t0 < 2000000)); do
    read -r stat <"/proc/$store/task/$store/stat" || break
    state=${stat##*) } state=${state%% *}
    read -r sc _ <"/proc/$store/task/$store/syscall" || break
    if [ "$state" = R ]; then
        key="running or runnable"
    elif ! [[ $sc =~ ^[0-9]+$ ]]; then
        key="blocked (page fault or kernel work)"
    else
        key="blocked in ${names[$sc]:-syscall $sc}"
    fi
    seen[$key]=$((${seen[$key]:-0} + 1))
    samples=$((samples + 1))
    sleep 0.002
done
us=$((${EPOCHREALTIME/[.,]/} - t0))
echo "== store threads over $((us / 1000)) ms (% of wall time)"
for t in /proc/"$store"/task/*; do
    read -r run wait _ <<<"${before[$t]:-0 0 0}"
    read -r run2 wait2 _ <"$t"/schedstat
    awk -v n="$(<"$t"/comm)" -v r=$((run2 - run)) -v w=$((wait2 - wait)) -v us="$us" 'BEGIN {
        r = r / us / 10; w = w / us / 10
        printf "  %-14s on-cpu %5.1f%%  waiting for a cpu %5.1f%%  blocked %5.1f%%\n",
               n, r, w, 100 - r - w }'
done
echo "== main thread state, $samples samples"
for k in "${!seen[@]}"; do
    awk -v k="$k" -v n="${seen[$k]}" -v s="$samples" 'BEGIN {printf "  %5.1f%%  %s\n", 100*n/s, k}'
done | sort -rn

wait "$perf_pid"
grep -E 'store append|FAILED' "$out.txt" | sed 's/^/  /'
tid=$(perf report -i "$out" --sort pid --stdio 2>/dev/null |
    awk '$2 ~ /:corral-store$/ {split($2, a, ":"); print a[1]; exit}')
echo "== perf: share of all samples per thread"
perf report -i "$out" --sort pid,comm --stdio 2>/dev/null | grep -v '^#' | grep -v '^$' | head -6
echo "== perf: store main thread ($tid) by library (libc split by function)"
perf report -i "$out" --no-children --tid "$tid" --percentage relative --sort dso,sym --stdio \
    2>/dev/null | grep -v '^#' | grep -v '^$' | awk '
    { p = $1; sub("%", "", p); d = $2
      if (d == "libc.so.6") {
          if ($4 ~ /memmove|memcpy|memset/) d = "libc mem copy (LMDB pages)"
          else if ($4 ~ /memcmp/) d = "libc memcmp (LMDB key compare)"
          else if ($4 ~ /malloc|free|_int_/) d = "libc malloc/free"
          else d = "libc other" }
      s[d] += p }
    END { for (d in s) printf "  %6.2f%%  %s\n", s[d], d }' | sort -rn
echo "== perf: store main thread, top symbols"
perf report -i "$out" --no-children --tid "$tid" --percentage relative --sort dso,sym --stdio \
    2>/dev/null | grep -v '^#' | grep -v '^$' | head -20
