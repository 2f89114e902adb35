#!/usr/bin/env bash
# Fault test of the docker compose cluster (deploy/docker-compose.yml), bounded and
# self-cleaning. Run after deploy/build-image.sh:
#
#   deploy/compose-test.sh [PATH-TO-HOST-strata]
#       default: $CARGO_TARGET_DIR/x86_64-unknown-linux-gnu/release/strata
#                (CARGO_TARGET_DIR defaults to /var/tmp/strata-target)
#
# 1. `up -d` the 3 nodes (project strata-compose-test), wait until all are healthy and a
#    controller is elected; check the published metrics ports answer /ready.
# 2. From the host, through the published ports: create topic t (3 partitions, RF 3).
# 3. Produce 300 keyed records (--acks all); SIGKILL the container leading partition 0;
#    produce 300 more once the others have new leaders; restart it and wait until every
#    node holds the same high watermarks.
# 4. Disconnect another container from the network (the two others keep a majority),
#    produce 300 more, reconnect it, wait until it has caught up.
# 5. Consume everything and check: each of the 900 values exactly once, offsets dense from 0
#    in every partition, each key in one partition and in the order it was produced.
#
# Produce and consume run in throwaway containers of the image on the cluster network:
# clients route to partition leaders at the addresses the cluster advertises (strata-N:10092),
# which resolve only there. Admin commands run on the host with the binary given above.
# `down -v` always runs at the end. Prints PASS/FAIL lines; exits non-zero on failure.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
compose_file="$here/docker-compose.yml"
target_dir="${CARGO_TARGET_DIR:-/var/tmp/strata-target}"
bin="${1:-$target_dir/x86_64-unknown-linux-gnu/release/strata}"
image="${STRATA_IMAGE:-strata:local}" # docker-compose.yml reads the same variable
project="${STRATA_COMPOSE_PROJECT:-strata-compose-test}"
topic=t
partitions=3
per_phase=300
nodes=(strata-1 strata-2 strata-3)
declare -A node_ip=([strata-1]=172.28.0.11 [strata-2]=172.28.0.12 [strata-3]=172.28.0.13)
host_brokers=127.0.0.1:10092,127.0.0.1:10093,127.0.0.1:10094
all_brokers=strata-1:10092,strata-2:10092,strata-3:10092
run_id="$$"
work="$(mktemp -d "${TMPDIR:-/tmp}/strata-compose-test.XXXXXX")"
started=0
net=""
retried_phases=() # first values of phases whose produce had to be retried

log() { printf '%s  %s\n' "$(date +%H:%M:%S)" "$*"; }
pass() { printf 'PASS: %s\n' "$*"; }
# Only call from the main shell (not inside $(...)): it ends the script, and the trap cleans up.
fail() {
    printf 'FAIL: %s\n' "$*"
    exit 1
}

if docker compose version >/dev/null 2>&1; then
    compose=(docker compose)
elif command -v docker-compose >/dev/null; then
    compose=(docker-compose)
else
    fail "neither 'docker compose' nor 'docker-compose' is installed"
fi
dc() { "${compose[@]}" -p "$project" -f "$compose_file" "$@"; }

cleanup() {
    local rc=$?
    set +e
    if ((started)); then
        if ((rc != 0)); then
            log "last log lines of each node:"
            for n in "${nodes[@]}"; do
                docker logs --tail 40 "$n" 2>&1 | sed "s/^/  [$n] /"
            done
        fi
        docker ps -aq --filter "label=strata.compose-test=$run_id" | xargs -r docker rm -f >/dev/null 2>&1
        log "down -v"
        dc down -v --remove-orphans >/dev/null 2>&1 || dc down -v
    fi
    rm -rf "$work"
    if ((rc == 0)); then
        echo "PASS: compose fault test"
    else
        echo "FAIL: compose fault test (exit $rc)"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The CLI on the host, against the published ports (admin commands only; see above).
host_cli() { timeout 60 "$bin" --brokers "$host_brokers" "$@" </dev/null; }

# The CLI in a throwaway container on the cluster network: cli_at BROKERS ARGS… (no stdin).
cli_at() {
    local brokers="$1"
    shift
    timeout 120 docker run --rm --label "strata.compose-test=$run_id" --network "$net" \
        --entrypoint /strata "$image" --brokers "$brokers" "$@" </dev/null
}

# `strata produce` in a container on the network, stdin from the given file.
produce_from() {
    timeout 120 docker run --rm -i --label "strata.compose-test=$run_id" --network "$net" \
        --entrypoint /strata "$image" --brokers "$all_brokers" \
        produce "$topic" --key-separator : --acks all <"$1"
}

node_id() { echo "${1#strata-}"; }

# Leader node id of each partition of the topic as NODE sees it: "p:leader" lines.
leaders_seen_by() {
    cli_at "$1:10092" cluster status --format json 2>/dev/null | python3 -c '
import json, sys
for line in sys.stdin:
    r = json.loads(line)
    if r.get("kind") == "partition" and r["topic"] == sys.argv[1]:
        print("%s:%s" % (r["partition"], r["leader"]))
' "$topic"
}

# Waits (bounded) until NODE sees a leader other than node EXCLUDED (0: none) for every
# partition of the topic.
wait_leaders_without() {
    local ask="$1" excluded="$2" deadline=$((SECONDS + 60)) seen=""
    while ((SECONDS < deadline)); do
        seen="$(leaders_seen_by "$ask" | sort | tr '\n' ' ')" || true
        if [[ "$(wc -w <<<"$seen")" -eq "$partitions" ]] &&
            ! grep -Eq "(^| )[0-9]+:(0|$excluded)( |$)" <<<"$seen"; then
            pass "every partition has a live leader (seen by $ask; partition:leader): $seen"
            return 0
        fi
        sleep 1
    done
    fail "partitions without a leader other than node $excluded after 60 s (seen by $ask: ${seen:-nothing})"
}

wait_healthy() {
    local deadline=$((SECONDS + 90)) states all n s
    while :; do
        all=1
        states=""
        for n in "$@"; do
            s="$(docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}' "$n" 2>/dev/null || echo missing)"
            states+="$n=$s "
            [[ "$s" == healthy ]] || all=0
        done
        if ((all)); then
            pass "healthy: $states"
            return 0
        fi
        ((SECONDS < deadline)) || fail "not healthy after 90 s: $states"
        sleep 2
    done
}

# High watermarks of the topic as NODE reports them: "p:hw p:hw …".
watermarks_of() {
    cli_at "$1:10092" topic describe "$topic" --format json 2>/dev/null | python3 -c '
import json, sys
rows = sorted((r["partition"], r["high_watermark"]) for r in map(json.loads, sys.stdin))
print(" ".join(f"{p}:{hw}" for p, hw in rows))
'
}

# Waits (bounded) until every node reports the same high watermarks, totalling at least N.
wait_in_sync() {
    local want="$1" deadline=$((SECONDS + 60)) n marks first same total
    while :; do
        same=1
        first=""
        marks=""
        for n in "${nodes[@]}"; do
            m="$(watermarks_of "$n" || true)"
            marks+="$n=[$m] "
            [[ -z "$first" ]] && first="$m"
            [[ -n "$m" && "$m" == "$first" ]] || same=0
        done
        total=0
        for pair in $first; do total=$((total + ${pair#*:})); done
        if ((same && total >= want)); then
            pass "all nodes hold the same high watermarks ($first; $total records)"
            return 0
        fi
        ((SECONDS < deadline)) || fail "nodes not in sync after 60 s (want >= $want records): $marks"
        sleep 2
    done
}

# Values (one per line) the cluster serves now, read from the beginning.
served_values() {
    cli_at "$all_brokers" consume "$topic" --from-beginning --format json --timeout 5s |
        python3 -c 'import json, sys; [print(json.loads(l)["value"]) for l in sys.stdin if l.strip()]'
}

# Produces values FIRST..FIRST+COUNT-1 as "k<value mod 13>:<value>", with acks=all. When the
# command fails (the cluster is still failing over), waits and sends again only the values
# the cluster does not serve yet; at most 5 attempts. (Within one command the producer is
# idempotent; a new command is a new producer, so a record of a failed command that commits
# late can appear twice: the check below tolerates that, with a WARN, for re-sent phases only.)
produce_phase() {
    local first="$1" count="$2" what="$3" attempt file="$work/produce-$1.txt"
    seq "$first" $((first + count - 1)) | awk '{ print "k" ($1 % 13) ":" $1 }' >"$file"
    for attempt in 1 2 3 4 5; do
        if produce_from "$file" 2>"$work/produce.err"; then
            pass "produced values $first..$((first + count - 1)) $what (attempt $attempt, $(wc -l <"$file") records sent)"
            return 0
        fi
        log "produce attempt $attempt failed: $(tail -n 1 "$work/produce.err")"
        retried_phases+=("$first")
        sleep 3
        if served_values >"$work/served.txt" 2>"$work/consume.err"; then
            python3 - "$file" "$work/served.txt" <<'PY'
import sys
path, served = sys.argv[1], set(open(sys.argv[2]).read().split())
lines = [l for l in open(path).read().splitlines() if l.split(":", 1)[1] not in served]
open(path, "w").write("".join(l + "\n" for l in lines))
PY
            log "$(wc -l <"$file") records of this phase not served yet: sending those again"
            [[ -s "$file" ]] || return 0
        else
            log "could not read what is served ($(tail -n 1 "$work/consume.err")): sending the same records again"
        fi
    done
    fail "produce of values $first..$((first + count - 1)) $what failed 5 times"
}

# ---- preconditions

[[ -x "$bin" ]] || fail "no strata binary at $bin (give its path as \$1)"
docker image inspect "$image" >/dev/null 2>&1 || fail "no image $image: run deploy/build-image.sh first"
command -v python3 >/dev/null || fail "python3 is needed for the checks"
for n in "${nodes[@]}"; do
    if docker container inspect "$n" >/dev/null 2>&1; then
        fail "a container named $n exists (a cluster from deploy/docker-compose.yml?); remove it first"
    fi
done

# ---- 1. start

log "compose: ${compose[*]}; project $project; host binary $bin"
started=1
dc up -d
net="$(docker inspect -f '{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}' strata-1 | awk '{print $1}')"
[[ -n "$net" ]] || fail "cannot find the network of strata-1"
log "network $net"
wait_healthy "${nodes[@]}"

deadline=$((SECONDS + 60))
until host_cli cluster status --format json >"$work/status.json" 2>"$work/status.err" &&
    python3 - "$work/status.json" <<'PY'
import json, sys
nodes = [r for r in map(json.loads, open(sys.argv[1])) if r.get("kind") == "node"]
sys.exit(0 if len(nodes) == 3 and all(n["alive"] for n in nodes) and any(n["controller"] for n in nodes) else 1)
PY
do
    ((SECONDS < deadline)) || fail "no controller with 3 live nodes after 60 s: $(cat "$work/status.json" "$work/status.err")"
    sleep 2
done
pass "cluster formed: 3 nodes up, a controller elected (host ports $host_brokers)"
host_cli cluster status | sed 's/^/    /' || true

for port in 19644 19645 19646; do
    python3 - "$port" <<'PY' 2>"$work/metrics.err" || fail "metrics port $port: $(tail -n 1 "$work/metrics.err")"
import sys, urllib.request
port = sys.argv[1]
for path in ("/ready", "/metrics"):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
        assert r.status == 200, (path, r.status)
PY
done
pass "metrics ports 19644-19646 answer /ready and /metrics"

# ---- 2. topic

created=0
for attempt in 1 2 3 4 5; do
    if host_cli topic create "$topic" --partitions "$partitions" --replication-factor 3 2>"$work/create.err" >/dev/null; then
        created=1
        break
    fi
    # A retried create whose first attempt went through.
    if grep -qi "exist" "$work/create.err"; then
        created=1
        break
    fi
    log "topic create attempt $attempt failed: $(tail -n 1 "$work/create.err")"
    sleep 3
done
((created)) || fail "could not create topic $topic"
pass "topic $topic created from the host: $partitions partitions, replication factor 3"
host_cli topic describe "$topic" | sed 's/^/    /' || true
wait_leaders_without strata-1 0

# ---- 3. a node killed

produce_phase 0 "$per_phase" "with 3 nodes up"
leader0="$(leaders_seen_by strata-1 | awk -F: '$1 == 0 { print $2 }')"
[[ "$leader0" =~ ^[123]$ ]] || fail "no leader for partition 0 (got '${leader0}')"
victim1="strata-$leader0"
log "docker kill $victim1 (leader of partition 0)"
docker kill "$victim1" >/dev/null
for _ in $(seq 20); do
    [[ "$(docker inspect -f '{{.State.Running}}' "$victim1")" == false ]] && break
    sleep 0.5
done
[[ "$(docker inspect -f '{{.State.Running}}' "$victim1")" == false ]] || fail "$victim1 still runs after docker kill"
ask=strata-1
[[ "$victim1" == strata-1 ]] && ask=strata-2
wait_leaders_without "$ask" "$leader0"
produce_phase "$per_phase" "$per_phase" "with $victim1 killed"

log "docker start $victim1"
docker start "$victim1" >/dev/null
wait_healthy "$victim1"
wait_in_sync $((2 * per_phase))

# ---- 4. a node cut off the network

# Another node: preferably one leading a partition now.
victim2=""
while IFS=: read -r _ leader; do
    if [[ "$leader" =~ ^[123]$ && "strata-$leader" != "$victim1" ]]; then
        victim2="strata-$leader"
        break
    fi
done < <(leaders_seen_by "$victim1" | sort)
if [[ -z "$victim2" ]]; then
    for n in "${nodes[@]}"; do [[ "$n" != "$victim1" ]] && victim2="$n" && break; done
fi
log "docker network disconnect $net $victim2"
docker network disconnect "$net" "$victim2"
wait_leaders_without "$victim1" "$(node_id "$victim2")"
produce_phase $((2 * per_phase)) "$per_phase" "with $victim2 cut off"
log "docker network connect $net $victim2"
docker network connect --ip "${node_ip[$victim2]}" --alias "$victim2" "$net" "$victim2"
wait_in_sync $((3 * per_phase))

# ---- 5. read everything back and check

total="$(watermarks_of strata-1 | tr ' ' '\n' | awk -F: '{ s += $2 } END { print s + 0 }')"
((total >= 3 * per_phase)) || fail "strata-1 reports $total records, fewer than $((3 * per_phase))"
log "consume $total records"
cli_at "$all_brokers" consume "$topic" --from-beginning --format json \
    --max-messages "$total" --timeout 30s >"$work/consumed.json" 2>"$work/consume.err" ||
    fail "consume failed: $(tail -n 1 "$work/consume.err")"

python3 - "$work/consumed.json" $((3 * per_phase)) "$per_phase" "${retried_phases[@]}" <<'PY'
import json, sys
from collections import Counter, defaultdict

path, expected, per_phase = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
retried = {int(v) // per_phase for v in sys.argv[4:]}  # phases with a re-sent produce
records = [json.loads(l) for l in open(path) if l.strip()]
failed = False

def check(ok, what):
    global failed
    print(("PASS: " if ok else "FAIL: ") + what)
    failed |= not ok

values = Counter(int(r["value"]) for r in records)
missing = sorted(set(range(expected)) - set(values))
extra = sorted(set(values) - set(range(expected)))
check(not missing, f"all {expected} values served" + (f"; missing {len(missing)}: {missing[:20]}" if missing else ""))
check(not extra, "no value outside 0..%d" % (expected - 1) + (f"; got {extra[:20]}" if extra else ""))
dups = sorted(v for v, c in values.items() if c > 1)
strict_dups = [v for v in dups if v // per_phase not in retried]
check(not strict_dups,
      ("each value served exactly once" if not dups else "values served twice come only from re-sent produce attempts")
      + (f"; duplicated: {strict_dups[:20]}" if strict_dups else ""))
if dups and not strict_dups:
    print(f"WARN: {len(dups)} values served twice, all from re-sent produce attempts "
          f"(a re-run produce command is a new producer, outside the first one's idempotence): {dups[:20]}")

by_partition = defaultdict(list)
for r in records:
    by_partition[r["partition"]].append(r)
for p in sorted(by_partition):
    offsets = sorted(r["offset"] for r in by_partition[p])
    check(offsets == list(range(len(offsets))),
          f"partition {p}: {len(offsets)} records, offsets dense from 0")
print("records per partition: " + ", ".join(f"{p}: {len(by_partition[p])}" for p in sorted(by_partition)))

partitions_of_key = defaultdict(set)
for r in records:
    partitions_of_key[r["key"]].add(r["partition"])
check(all(len(s) == 1 for s in partitions_of_key.values()), "each key in a single partition")

# Per key, values in offset order increase (records of re-sent phases excluded: a retry
# re-sends after later records went through).
order_ok = True
for p, rs in by_partition.items():
    last = {}
    for r in sorted(rs, key=lambda r: r["offset"]):
        v = int(r["value"])
        if v // per_phase in retried:
            continue
        if r["key"] in last and last[r["key"]] >= v:
            order_ok = False
            print(f"  key {r['key']}: value {v} at {p}/{r['offset']} after {last[r['key']]}")
        last[r["key"]] = v
check(order_ok, "each key's values in the order produced")
sys.exit(1 if failed else 0)
PY
