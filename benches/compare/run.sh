#!/usr/bin/env bash
# Strata against Redis Streams on this machine, same workload, same durability, one table.
#
#   benches/compare/run.sh [RECORDS]        (default 200000 records of 1 KiB)
#
# Workload: produce RECORDS records of 1 KiB to one stream/partition from one client, then
# read them all back. Durability: every write fsynced before it is acknowledged (Strata
# `--fsync every`, acks=all; Redis AOF `appendfsync always`), and Redis also with AOF
# `everysec` (at most a second of acknowledged writes lost on a crash), the setting the
# comparison in the performance issue quotes.
# Clients: `strata-bench` for Strata; `redis-benchmark` (pipelined XADD, then XRANGE of
# 1,000 entries per call) for Redis. Installs Debian's redis-server if missing. Everything runs
# on loopback in temporary directories and is stopped by PID at the end.
set -euo pipefail
cd "$(dirname "$0")/../.."
RECORDS="${1:-200000}"
TARGET="${CARGO_TARGET_DIR:-target}"

if ! command -v redis-server >/dev/null || ! command -v redis-benchmark >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server redis-tools >/dev/null
fi
cargo build --release -q -p strata-cli -p strata-bench
BENCH="$TARGET/release/strata-bench"

work="$(mktemp -d /var/tmp/strata-compare.XXXXXX)"
redis_pid=""
cleanup() {
    if [ -n "$redis_pid" ]; then kill "$redis_pid" 2>/dev/null || true; wait "$redis_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
value="$(head -c 1024 /dev/zero | tr '\0' 'x')"

# Prints "produce_records_per_s consume_records_per_s" for Redis with the given appendfsync.
redis_run() {
    local fsync="$1" port dir
    port="$(free_port)"
    dir="$work/redis-$fsync"
    mkdir -p "$dir"
    redis-server --port "$port" --bind 127.0.0.1 --dir "$dir" --appendonly yes --appendfsync "$fsync" \
        --save "" --daemonize no --logfile "$dir/redis.log" &
    redis_pid=$!
    for _ in $(seq 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
    local produce consume
    produce="$(redis-benchmark -p "$port" -c 1 -P 64 -n "$RECORDS" -q XADD bench '*' v "$value" | grep -o '[0-9.]* requests per second' | cut -d' ' -f1)"
    # Each XRANGE returns 1,000 entries of 1 KiB.
    local calls=$(( RECORDS / 1000 ))
    consume="$(redis-benchmark -p "$port" -c 1 -n "$calls" -q XRANGE bench - + COUNT 1000 | grep -o '[0-9.]* requests per second' | cut -d' ' -f1)"
    kill "$redis_pid"; wait "$redis_pid" 2>/dev/null || true; redis_pid=""
    echo "$produce $(python3 -c "print(float('$consume') * 1000)")"
}

strata_run() {
    local produce consume
    produce="$(cd "$work" && "$OLDPWD/$BENCH" produce --spawn 1 --records "$RECORDS" --format json 2>/dev/null | tail -n 1)"
    consume="$(cd "$work" && "$OLDPWD/$BENCH" consume --spawn 1 --records "$RECORDS" --format json 2>/dev/null | tail -n 1)"
    python3 -c "import json,sys; p=json.loads(sys.argv[1]); c=json.loads(sys.argv[2]); print(p['records_per_s'], c['records_per_s'])" "$produce" "$consume"
}

read -r s_prod s_cons < <(strata_run)
read -r ra_prod ra_cons < <(redis_run always)
read -r re_prod re_cons < <(redis_run everysec)

python3 - "$RECORDS" "$s_prod" "$s_cons" "$ra_prod" "$ra_cons" "$re_prod" "$re_cons" <<'PY'
import sys
n, sp, sc, rap, rac, rep, rec = sys.argv[1], *map(float, sys.argv[2:])
mb = lambda r: r * 1024 / 1e6
print(f"{n} records of 1 KiB, one stream/partition, one client, loopback")
print(f"{'system':<44}{'produce rec/s':>14}{'MB/s':>9}{'consume rec/s':>15}{'MB/s':>9}")
for name, p, c in [
    ("Strata (fsync every append, acks=all)", sp, sc),
    ("Redis Streams (AOF appendfsync always)", rap, rac),
    ("Redis Streams (AOF appendfsync everysec)", rep, rec),
]:
    print(f"{name:<44}{p:>14,.0f}{mb(p):>9.1f}{c:>15,.0f}{mb(c):>9.1f}")
PY
