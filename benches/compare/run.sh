#!/usr/bin/env bash
# Strata against Redis Streams and NATS JetStream on this machine, same workload, durability
# stated per row, one table.
#
#   benches/compare/run.sh [RECORDS]        (default 200000 records of 1 KiB)
#
# Workload: produce RECORDS records of 1 KiB to one stream/partition from one client, then
# read them all back. Durability: every write fsynced before it is acknowledged (Strata
# `--fsync every`, acks=all; Redis AOF `appendfsync always`), and Redis also with AOF
# `everysec` (at most a second of acknowledged writes lost on a crash), the setting the
# comparison in the performance issue quotes, against Strata with `--fsync interval:1s`, its
# counterpart.
# NATS JetStream is Debian's nats-server 2.9.10 with a file-backed stream at its default
# durability: it fsyncs in the background every 2 minutes and has no per-write fsync option
# before 2.10 (an acknowledged message can be lost on a power cut, as with Redis everysec).
# Clients: `strata-bench` for Strata; `redis-benchmark` (pipelined XADD, then XRANGE of
# 1,000 entries per call) for Redis; `nats-bench` (benches/compare/nats-bench, async-nats:
# pipelined publishes with 256 acknowledgements outstanding, then a pull consumer) for NATS.
# Then end-to-end latency at a fixed rate (E2E_RATE, default 5,000 records/s), send to
# receipt: `strata-bench e2e` for Strata, benches/compare/redis_e2e.py (one XADD per entry,
# XREAD BLOCK) for Redis at both AOF settings; a second table.
# Installs Debian's redis-server and nats-server, and the `redis` Python package, if missing. Everything runs on loopback in
# temporary directories and is stopped by PID at the end.
set -euo pipefail
cd "$(dirname "$0")/../.."
RECORDS="${1:-200000}"
# End-to-end latency runs: records per second and records (as `strata-bench e2e`).
E2E_RATE="${E2E_RATE:-5000}"
E2E_RECORDS="${E2E_RECORDS:-25000}"
TARGET="${CARGO_TARGET_DIR:-target}"

if ! command -v redis-server >/dev/null || ! command -v redis-benchmark >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server redis-tools >/dev/null
fi
# redis_e2e.py's client.
python3 -c 'import redis' 2>/dev/null || pip install -q redis
if ! command -v nats-server >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nats-server >/dev/null
fi
cargo build --release -q -p strata-cli -p strata-bench
case "$TARGET" in /*) target_abs="$TARGET" ;; *) target_abs="$PWD/$TARGET" ;; esac
BENCH="$target_abs/release/strata-bench"
# The NATS client is its own workspace: built here only.
(cd benches/compare/nats-bench && CARGO_TARGET_DIR="$target_abs/nats-bench" cargo build --release -q --locked)
NATS_BENCH="$target_abs/nats-bench/release/nats-bench"

work="$(mktemp -d /var/tmp/strata-compare.XXXXXX)"
redis_pid=""
nats_pid=""
cleanup() {
    if [ -n "$redis_pid" ]; then kill "$redis_pid" 2>/dev/null || true; wait "$redis_pid" 2>/dev/null || true; fi
    if [ -n "$nats_pid" ]; then kill "$nats_pid" 2>/dev/null || true; wait "$nats_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
value="$(head -c 1024 /dev/zero | tr '\0' 'x')"

# Starts redis-server with AOF and the given appendfsync in its own directory (named by the
# second argument); sets redis_port and redis_pid.
redis_start() {
    local fsync="$1" dir="$work/redis-$2"
    redis_port="$(free_port)"
    mkdir -p "$dir"
    redis-server --port "$redis_port" --bind 127.0.0.1 --dir "$dir" --appendonly yes \
        --appendfsync "$fsync" --save "" --daemonize no --logfile "$dir/redis.log" &
    redis_pid=$!
    for _ in $(seq 100); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.1; done
}

redis_stop() {
    kill "$redis_pid"; wait "$redis_pid" 2>/dev/null || true; redis_pid=""
}

# Prints "produce_records_per_s consume_records_per_s" for Redis with the given appendfsync.
redis_run() {
    redis_start "$1" "$1"
    local produce consume
    produce="$(redis-benchmark -p "$redis_port" -c 1 -P 64 -n "$RECORDS" -q XADD bench '*' v "$value" | grep -o '[0-9.]* requests per second' | cut -d' ' -f1)"
    # Each XRANGE returns 1,000 entries of 1 KiB.
    local calls=$(( RECORDS / 1000 ))
    consume="$(redis-benchmark -p "$redis_port" -c 1 -n "$calls" -q XRANGE bench - + COUNT 1000 | grep -o '[0-9.]* requests per second' | cut -d' ' -f1)"
    redis_stop
    echo "$produce $(python3 -c "print(float('$consume') * 1000)")"
}

# Prints "produce_records_per_s consume_records_per_s" for NATS JetStream.
nats_run() {
    local port dir result
    port="$(free_port)"
    dir="$work/nats"
    mkdir -p "$dir"
    nats-server -js -a 127.0.0.1 -p "$port" -sd "$dir" >"$dir/nats.log" 2>&1 &
    nats_pid=$!
    for _ in $(seq 100); do (echo > "/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
    result="$("$NATS_BENCH" "nats://127.0.0.1:$port" "$RECORDS" 1024 256)"
    kill "$nats_pid"; wait "$nats_pid" 2>/dev/null || true; nats_pid=""
    echo "$result"
}

# Prints "p50 p99 p99.9" (ms) of Redis's end-to-end latency at E2E_RATE with the given
# appendfsync: benches/compare/redis_e2e.py, one XADD per entry, read with XREAD BLOCK.
redis_e2e_run() {
    redis_start "$1" "e2e-$1"
    python3 benches/compare/redis_e2e.py "$redis_port" "$E2E_RATE" "$E2E_RECORDS" | tail -n 1 |
        python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["p50_ms"], d["p99_ms"], d["p999_ms"])'
    redis_stop
}

# strata_e2e_run FSYNC: as redis_e2e_run, for a node started with `--fsync FSYNC`.
strata_e2e_run() {
    (cd "$work" && "$BENCH" e2e --spawn 1 --fsync "$1" --rate "$E2E_RATE" --records "$E2E_RECORDS" --format json 2>/dev/null | tail -n 1) |
        python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["p50_ms"], d["p99_ms"], d["p999_ms"])'
}

# strata_run FSYNC: as redis_run, for a node started with `--fsync FSYNC`.
strata_run() {
    local produce consume
    produce="$(cd "$work" && "$BENCH" produce --spawn 1 --fsync "$1" --records "$RECORDS" --format json 2>/dev/null | tail -n 1)"
    consume="$(cd "$work" && "$BENCH" consume --spawn 1 --fsync "$1" --records "$RECORDS" --format json 2>/dev/null | tail -n 1)"
    python3 -c "import json,sys; p=json.loads(sys.argv[1]); c=json.loads(sys.argv[2]); print(p['records_per_s'], c['records_per_s'])" "$produce" "$consume"
}

read -r s_prod s_cons < <(strata_run every)
read -r si_prod si_cons < <(strata_run interval:1s)
read -r ra_prod ra_cons < <(redis_run always)
read -r re_prod re_cons < <(redis_run everysec)
read -r n_prod n_cons < <(nats_run)

python3 - "$RECORDS" "$s_prod" "$s_cons" "$si_prod" "$si_cons" "$ra_prod" "$ra_cons" "$re_prod" "$re_cons" "$n_prod" "$n_cons" <<'PY'
import sys
n, sp, sc, sip, sic, rap, rac, rep, rec, nap, nac = sys.argv[1], *map(float, sys.argv[2:])
mb = lambda r: r * 1024 / 1e6
print(f"{n} records of 1 KiB, one stream/partition, one client, loopback")
print(f"{'system':<44}{'produce rec/s':>14}{'MB/s':>9}{'consume rec/s':>15}{'MB/s':>9}")
for name, p, c in [
    ("Strata (fsync every append, acks=all)", sp, sc),
    ("Strata (fsync every second, acks=all)", sip, sic),
    ("Redis Streams (AOF appendfsync always)", rap, rac),
    ("Redis Streams (AOF appendfsync everysec)", rep, rec),
    ("NATS JetStream 2.9 (file, fsync every 2 min)", nap, nac),
]:
    print(f"{name:<44}{p:>14,.0f}{mb(p):>9.1f}{c:>15,.0f}{mb(c):>9.1f}")
PY

# End-to-end latency at a fixed rate, interleaved so that the machine's drift hits all alike.
read -r s_e50 s_e99 s_e999 < <(strata_e2e_run every)
read -r si_e50 si_e99 si_e999 < <(strata_e2e_run interval:1s)
read -r ra_e50 ra_e99 ra_e999 < <(redis_e2e_run always)
read -r re_e50 re_e99 re_e999 < <(redis_e2e_run everysec)
python3 - "$E2E_RATE" "$E2E_RECORDS" "$s_e50" "$s_e99" "$s_e999" "$si_e50" "$si_e99" "$si_e999" "$ra_e50" "$ra_e99" "$ra_e999" "$re_e50" "$re_e99" "$re_e999" <<'PY'
import sys
rate, n, *v = sys.argv[1], sys.argv[2], *map(float, sys.argv[3:])
print()
print(f"end to end at {rate} records/s, {n} records of 1 KiB, send to receipt, loopback")
print(f"{'system':<44}{'p50 ms':>9}{'p99 ms':>9}{'p99.9 ms':>10}")
for i, name in enumerate([
    "Strata (fsync every append, acks=all)",
    "Strata (fsync every second, acks=all)",
    "Redis Streams (AOF appendfsync always)",
    "Redis Streams (AOF appendfsync everysec)",
]):
    print(f"{name:<44}{v[3 * i]:>9.2f}{v[3 * i + 1]:>9.2f}{v[3 * i + 2]:>10.2f}")
print("(NATS JetStream: no end-to-end client of ours yet)")
PY
