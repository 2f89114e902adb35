#!/usr/bin/env bash
# Restart time after `kill -9` with a large log: fill one node with GiB of 1 KiB records
# (fsync on every append), SIGKILL it, start it again and time until it serves the last record
# of every partition and accepts a produce.
#
#   benches/recovery/run.sh [GiB] [partitions] [--cold]
#
# --cold drops the page cache (needs root) after the kill, as after a power loss.
# Uses the release binaries in ${CARGO_TARGET_DIR:-target}/release (strata, strata-bench),
# a temp dir under ${TMPDIR:-/var/tmp} on the disk measured, port 21201; stops its server by PID.
set -euo pipefail
gib="${1:-10}"
partitions="${2:-4}"
cold="${3:-}"
bin_dir="${STRATA_BIN_DIR:-${CARGO_TARGET_DIR:-target}/release}"
strata="$bin_dir/strata"
bench="$bin_dir/strata-bench"
dir="$(mktemp -d "${TMPDIR:-/var/tmp}/strata-recovery.XXXXXX")"
addr="127.0.0.1:21201"
pid=""
source "$(dirname "${BASH_SOURCE[0]}")/../node.sh"

start() { start_node "$dir/data" "$addr" "$dir/server.log"; }
cleanup() {
    if [[ -n "$pid" ]]; then kill -9 "$pid" 2>/dev/null || true; fi
    wait 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT

start
create_topic "$addr" recovery "$partitions"
records=$((gib * 1024 * 1024))
echo "filling: $records records of 1 KiB over $partitions partitions"
"$bench" produce --brokers "$addr" --topic recovery --partitions "$partitions" \
    --producers "$partitions" --records "$records" --batch-bytes 1048576 | tail -n 2
du -sh "$dir/data"

# The last offset of each partition, to read back after the restart.
declare -A last
while read -r p end; do last[$p]=$((end - 1)); done < <(
    "$strata" --brokers "$addr" --format json topic describe recovery |
        python3 -c 'import json,sys
for l in sys.stdin:
    r=json.loads(l)
    if "partition" in r: print(r["partition"], r["high_watermark"])')

kill -9 "$pid"
wait "$pid" 2>/dev/null || true
if [[ "$cold" == "--cold" ]]; then
    sync
    echo 3 >/proc/sys/vm/drop_caches
    echo "page cache dropped"
fi

start_ms=$(now_ms)
start
served=""
for _ in $(seq 600); do
    ok=1
    for p in "${!last[@]}"; do
        if ! "$strata" --brokers "$addr" consume recovery --partition "$p" --offset "${last[$p]}" \
            --max-messages 1 --timeout 1s >/dev/null 2>&1; then
            ok=""
            break
        fi
    done
    if [[ -n "$ok" ]]; then served=$(now_ms); break; fi
    sleep 0.05
done
echo "k:after-restart" | "$strata" --brokers "$addr" produce recovery --key-separator : >/dev/null 2>&1
produced=$(now_ms)
[[ -n "$served" ]] || { echo "the restarted node never served the tail" >&2; exit 1; }
echo "restart after kill -9 with $(du -sh "$dir/data" | cut -f1) of log:" \
    "last record of every partition served after $((served - start_ms)) ms," \
    "first produce acknowledged after $((produced - start_ms)) ms"
grep -i "recover" "$dir/server.log" | tail -n 5 || true
