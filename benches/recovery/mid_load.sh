#!/usr/bin/env bash
# Restart after `kill -9` in the middle of a load, with the page cache dropped (as after a power
# loss): a keyed produce load on P partitions runs for SECONDS, the node is SIGKILLed while it
# runs, every dirty page is written and the page cache dropped (needs root), and the node is
# started again. Prints the data size, how many partitions recovered from their tail mark, and
# the time from the start until the first produce is acknowledged.
#
#   benches/recovery/mid_load.sh [seconds] [partitions]
#
# Uses the release binaries in ${STRATA_BIN_DIR:-${CARGO_TARGET_DIR:-target}/release}, a temp
# dir under ${TMPDIR:-/var/tmp} on the disk measured, port 21202; stops its processes by PID.
set -euo pipefail
seconds="${1:-25}"
partitions="${2:-100}"
bin_dir="${STRATA_BIN_DIR:-${CARGO_TARGET_DIR:-target}/release}"
strata="$bin_dir/strata"
dir="$(mktemp -d "${TMPDIR:-/var/tmp}/strata-mid-load.XXXXXX")"
addr="127.0.0.1:21202"
pid="" bench=""
source "$(dirname "${BASH_SOURCE[0]}")/../node.sh"

start() { start_node "$dir/data" "$addr" "$dir/server.log"; }
cleanup() {
    exec 2>/dev/null # no "Killed" job notices
    for p in $pid $bench; do kill -9 "$p" || true; done
    wait || true
    rm -rf "$dir"
}
trap cleanup EXIT

start
create_topic "$addr" load "$partitions"
"$bin_dir/strata-bench" produce --brokers "$addr" --topic load --partitions "$partitions" \
    --producers 4 --keys 100000 --records 1000000000 >"$dir/bench.log" 2>&1 &
bench=$!
sleep "$seconds"
kill -9 "$pid"
kill "$bench" 2>/dev/null || true
wait 2>/dev/null || true
pid="" bench=""
size="$(du -sh "$dir/data" | cut -f1)"
sync
echo 3 >/proc/sys/vm/drop_caches

start_ms=$(now_ms)
start
# Listening means every log is open; then one record must be acknowledged.
for _ in $(seq 3000); do (exec 3<>"/dev/tcp/${addr%:*}/${addr#*:}") 2>/dev/null && break; sleep 0.01; done
for _ in $(seq 300); do
    echo x | "$strata" --brokers "$addr" produce load >/dev/null 2>&1 && break
    sleep 0.01
done
produced=$(now_ms)
marked=$(grep -c "recovery scan starts at the tail mark" "$dir/server.log" || true)
echo "restart after kill -9 mid-load with $size of log in $partitions partitions" \
    "($marked recovered from their tail mark): first produce acknowledged after" \
    "$((produced - start_ms)) ms"
