#!/usr/bin/env bash
# Failover time of a 3-node cluster on loopback: SIGKILL the leader of a partition, then time
# until a produce with acks=all succeeds (the CLI producer finds the new leader by itself).
#
#   benches/failover/run.sh [path/to/strata] [rounds]
#
# Starts its own nodes in a temp dir (ports 21101-21103), stops them by PID at the end.
set -euo pipefail
bin="${1:-${CARGO_TARGET_DIR:-target}/release/strata}"
rounds="${2:-5}"
dir="$(mktemp -d "${TMPDIR:-/tmp}/strata-failover.XXXXXX")"
peers="1=127.0.0.1:21101,2=127.0.0.1:21102,3=127.0.0.1:21103"
brokers="127.0.0.1:21101,127.0.0.1:21102,127.0.0.1:21103"
declare -A pid

start() {
    local id=$1
    "$bin" server --node-id "$id" --data-dir "$dir/n$id" --listen "127.0.0.1:2110$id" \
        --peers "$peers" >>"$dir/n$id.log" 2>&1 &
    pid[$id]=$!
}
cleanup() {
    for id in 1 2 3; do
        if [[ -n "${pid[$id]:-}" ]]; then kill -9 "${pid[$id]}" 2>/dev/null || true; fi
    done
    wait 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT

for id in 1 2 3; do start "$id"; done
for _ in $(seq 100); do
    "$bin" --brokers "$brokers" topic create failover --partitions 1 >/dev/null 2>&1 && break
    sleep 0.2
done
echo "k:warm-up" | "$bin" --brokers "$brokers" produce failover --key-separator : >/dev/null

for round in $(seq "$rounds"); do
    leader=$("$bin" --brokers "$brokers" --format json cluster status |
        python3 -c 'import json,sys
for l in sys.stdin:
    r=json.loads(l)
    if r.get("kind")=="partition": print(r["leader"])')
    start_ns=$(date +%s%N)
    kill -9 "${pid[$leader]}"
    wait "${pid[$leader]}" 2>/dev/null || true
    echo "k:round-$round" | "$bin" --brokers "$brokers" produce failover --key-separator : >/dev/null
    end_ns=$(date +%s%N)
    echo "round $round: killed leader node $leader; produce succeeded after $(( (end_ns - start_ns) / 1000000 )) ms"
    start "$leader"
    sleep 3 # let it rejoin and catch up before the next round
done
