#!/usr/bin/env bash
# The partition-count target: keyed produce throughput over 1,000 partitions against 10, in
# interleaved rounds on a fresh node each run (fsync on every append), with each process's CPU
# time. Prints one line per run, then the mean MB/s of each count and their ratio.
#
#   benches/partitions/run.sh [rounds] [producers] [records] [extra strata-bench args...]
#
# Uses the release binaries in ${STRATA_BIN_DIR:-${CARGO_TARGET_DIR:-target}/release}, a temp
# dir under ${TMPDIR:-/var/tmp} on the disk measured, port 21203; stops its processes by PID.
set -euo pipefail
rounds="${1:-3}"
producers="${2:-1}"
records="${3:-2000000}"
shift $(($# < 3 ? $# : 3))
bin_dir="${STRATA_BIN_DIR:-${CARGO_TARGET_DIR:-target}/release}"
strata="$bin_dir/strata"
addr="127.0.0.1:21203"
pid="" dir=""
source "$(dirname "${BASH_SOURCE[0]}")/../node.sh"

cleanup() {
    if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
    if [ -n "$dir" ]; then rm -rf "$dir"; fi
}
trap cleanup EXIT
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# One run: a fresh node, a topic of $1 partitions, the load (further arguments go to
# strata-bench). Prints "MB/s node-CPU-s bench-CPU-s".
run() {
    local partitions=$1
    shift
    dir="$(mktemp -d "${TMPDIR:-/var/tmp}/strata-partitions.XXXXXX")"
    start_node "$dir/data" "$addr" "$dir/server.log"
    create_topic "$addr" load "$partitions"
    sync
    local before after summary
    before=$(cpu_ticks "$pid")
    # bash's own `time` reports the bench's user and system CPU on stderr.
    summary=$( { TIMEFORMAT='bench-cpu %U %S'; time "$bin_dir/strata-bench" produce \
        --brokers "$addr" --topic load --partitions "$partitions" --producers "$producers" \
        --keys 100000 --records "$records" --format json "$@"; } 2>&1 )
    after=$(cpu_ticks "$pid")
    cleanup
    pid="" dir=""
    local mb
    mb=$(grep '^{' <<<"$summary" | tail -n 1 | sed 's/.*"mb_per_s":\([0-9.]*\).*/\1/')
    awk -v mb="$mb" -v node=$((after - before)) '/^bench-cpu/ {
        printf "%.1f %.2f %.2f\n", mb, node / 100, $2 + $3 }' <<<"$summary"
}

echo "partitions MB/s node-cpu-s bench-cpu-s ($producers producers, $records keyed records of 1 KiB)"
results=""
for _ in $(seq "$rounds"); do
    for partitions in 10 1000; do
        line="$partitions $(run "$partitions" "$@")"
        echo "$line"
        results+="$line"$'\n'
    done
done
awk '{ sum[$1] += $2; n[$1]++ } END {
    ten = sum[10] / n[10]; thousand = sum[1000] / n[1000]
    printf "mean MB/s: 10 partitions %.1f, 1,000 partitions %.1f, ratio %.2f\n", ten, thousand, thousand / ten
}' <<<"$results"
