# Sourced by the bench scripts that start a node by hand (`recovery/`, `partitions/`).
# The caller sets $strata, the `strata` binary.

# start_node DATA_DIR ADDR LOG: starts a node in the background, its output appended to LOG;
# its PID is left in $pid.
start_node() {
    "$strata" server --data-dir "$1" --listen "$2" >>"$3" 2>&1 &
    pid=$!
}

# create_topic ADDR TOPIC PARTITIONS: retried for up to 10 s while the node starts.
create_topic() {
    for _ in $(seq 100); do
        "$strata" --brokers "$1" topic create "$2" --partitions "$3" >/dev/null 2>&1 && return
        sleep 0.1
    done
}

now_ms() { echo $(($(date +%s%N) / 1000000)); }
