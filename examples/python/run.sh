#!/usr/bin/env bash
# Runs the Python example against a fresh single-node Strata server.
#
#   bash examples/python/run.sh [PATH_TO_STRATA_BINARY]
#
# The binary defaults to ${CARGO_TARGET_DIR:-target}/debug/strata (relative to the repo root).
# STRATA_PY_VENV=DIR reuses (or creates) a virtualenv there instead of a throwaway one.
# Exits with the example's exit code.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"

strata="${1:-${CARGO_TARGET_DIR:-target}/debug/strata}"
if [[ ! -x "$strata" ]]; then
    echo "run.sh: no strata binary at $strata (build it with cargo build, or pass its path)" >&2
    exit 1
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/strata-py-example.XXXXXX")"
server_pid=""

cleanup() {
    local rc=$?
    if [[ -n "$server_pid" ]] && kill -0 "$server_pid" 2>/dev/null; then
        kill "$server_pid" 2>/dev/null || true
        # Give it a bounded time to shut down cleanly, then force it.
        for _ in $(seq 50); do
            kill -0 "$server_pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- Python environment -----------------------------------------------------------------------
venv="${STRATA_PY_VENV:-$work/venv}"
if [[ ! -x "$venv/bin/python" ]]; then
    echo "creating virtualenv in $venv"
    python3 -m venv "$venv"
fi
py="$venv/bin/python"
"$py" -m pip install --quiet --disable-pip-version-check -r "$here/requirements.txt"

# --- gRPC stubs, generated from the protos (never committed) ------------------------------------
# -I proto makes admin.proto's `import "strata/v1/client.proto"` resolve, and gives the modules
# the import path strata.v1.*.
stubs="$work/stubs"
mkdir -p "$stubs"
"$py" -m grpc_tools.protoc -I proto --python_out="$stubs" --grpc_python_out="$stubs" \
    proto/strata/v1/client.proto proto/strata/v1/admin.proto

# --- server -----------------------------------------------------------------------------------
# Ask the kernel for a free port. Another process could take it before the server binds; the
# wait below would then see the server exit and say so.
port="$("$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
server_log="$work/server.log"
"$strata" server --listen "127.0.0.1:$port" --data-dir "$work/data" 2>"$server_log" &
server_pid=$!

ready=""
for _ in $(seq 100); do # 100 x 0.2 s = at most 20 s
    if ! kill -0 "$server_pid" 2>/dev/null; then
        echo "run.sh: strata server exited during startup; its log:" >&2
        cat "$server_log" >&2
        exit 1
    fi
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        ready=1
        break
    fi
    sleep 0.2
done
if [[ -z "$ready" ]]; then
    echo "run.sh: strata server did not accept connections on port $port within 20 s; its log:" >&2
    cat "$server_log" >&2
    exit 1
fi
echo "strata server running on 127.0.0.1:$port (pid $server_pid)"

# --- example ----------------------------------------------------------------------------------
export PYTHONPATH="$stubs:$here"
"$py" "$here/recordbatch.py"
rc=0
"$py" "$here/example.py" --brokers "127.0.0.1:$port" || rc=$?
if [[ "$rc" -ne 0 ]]; then
    echo "run.sh: example failed with exit code $rc; server log (last 40 lines):" >&2
    tail -n 40 "$server_log" >&2
fi
exit "$rc"
