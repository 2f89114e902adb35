#!/usr/bin/env bash
# Idle CPU of a 3-node cluster holding many partitions: create a topic of N partitions at
# replication factor 3, wait for the groups to settle, then read each server's utime+stime
# from /proc/PID/stat over a window with no traffic.
#
#   benches/idle/run.sh [path/to/strata] [partitions] [seconds]
#
# Starts its own nodes in a temp dir (ports 21301-21303), stops them by PID at the end.
set -euo pipefail
bin="${1:-${CARGO_TARGET_DIR:-target}/release/strata}"
partitions="${2:-1000}"
seconds="${3:-20}"
dir="$(mktemp -d "${TMPDIR:-/var/tmp}/strata-idle.XXXXXX")"
peers="1=127.0.0.1:21301,2=127.0.0.1:21302,3=127.0.0.1:21303"
brokers="127.0.0.1:21301,127.0.0.1:21302,127.0.0.1:21303"
declare -A pid

cleanup() {
    for id in 1 2 3; do
        if [[ -n "${pid[$id]:-}" ]]; then kill -9 "${pid[$id]}" 2>/dev/null || true; fi
    done
    wait 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

for id in 1 2 3; do
    "$bin" server --node-id "$id" --data-dir "$dir/n$id" --listen "127.0.0.1:2130$id" \
        --peers "$peers" >>"$dir/n$id.log" 2>&1 &
    pid[$id]=$!
done
for _ in $(seq 100); do
    "$bin" --brokers "$brokers" topic create idle --partitions "$partitions" \
        --replication-factor 3 >/dev/null 2>&1 && break
    sleep 0.2
done
sleep 15 # elections and the first leader reports settle
declare -A before
for id in 1 2 3; do before[$id]=$(cpu_ticks "${pid[$id]}"); done
sleep "$seconds"
hz=$(getconf CLK_TCK)
for id in 1 2 3; do
    used=$(($(cpu_ticks "${pid[$id]}") - before[$id]))
    echo "node $id: $used ticks in ${seconds} s = $(python3 -c "print(f'{100 * $used / ($hz * $seconds):.1f}')") % of a core"
done
