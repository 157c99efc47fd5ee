#!/usr/bin/env bash
# A two-node Ray cluster on this machine, on 127.0.0.1 only, with token authentication, for trying the
# distributed paths (a Ray Train worker per node, Ray Data across nodes, `ray job submit`).
#
#   cluster/local-cluster.sh start    # a head and a second node; prints the address to use
#   cluster/local-cluster.sh stop     # stops the two nodes this script started, and nothing else
#   cluster/local-cluster.sh status   # whether they are running
#
# Both nodes are held by one process, cluster/local_cluster.py (Ray's ray.cluster_utils.Cluster: `ray start`
# cannot put two nodes on 127.0.0.1). Its PID is recorded, and `stop` sends SIGTERM to exactly that process,
# which shuts both nodes down. `ray stop` is not used: it stops every Ray on the machine.
#
# Settings (environment):
#   EROSION_CLUSTER_DIR    state: PID, log, address and Ray's temp dir (default /tmp/erosion-cluster; keep the
#                          path short, Ray's socket paths live under it)
#   EROSION_CLUSTER_PORT   the head's port P (default 6390); the dashboard (and job API) takes P+1, its agent P+2
#   EROSION_CPUS_PER_NODE  logical CPUs of each node (default 3: a Ray Train worker of 2 CPUs, `--cpus-per-worker 2`,
#                          then fits once per node and leaves a CPU on each for Ray Data's tasks)
#   RAY_AUTH_MODE          token (default) or disabled; the token comes from RAY_AUTH_TOKEN or ~/.ray/auth_token,
#                          and is generated there (readable by you only) when neither exists
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
dir=${EROSION_CLUSTER_DIR:-/tmp/erosion-cluster}
port=${EROSION_CLUSTER_PORT:-6390}
cpus=${EROSION_CPUS_PER_NODE:-3}
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 # Ray listens on 127.0.0.1 only
export RAY_AUTH_MODE=${RAY_AUTH_MODE:-token}
export RAY_TMPDIR=$dir # Ray's temp files (and its "last cluster" record) stay out of /tmp/ray

running() { # true when the recorded PID is alive and still our holder (not a reused PID)
    [[ -f "$dir/pid" ]] && ps -o args= -p "$(cat "$dir/pid")" 2>/dev/null | grep -q local_cluster.py
}

ensure_token() {
    [[ $RAY_AUTH_MODE == token && -z ${RAY_AUTH_TOKEN:-} && ! -f ~/.ray/auth_token ]] || return 0
    ray get-auth-token --generate >/dev/null
    chmod 600 ~/.ray/auth_token
}

start() {
    if running; then
        echo "already running (pid $(cat "$dir/pid")); RAY_ADDRESS=$(cat "$dir/address")" >&2
        return 1
    fi
    mkdir -p "$dir"
    rm -f "$dir/address"
    ensure_token
    python "$here/local_cluster.py" --dir "$dir" --port "$port" --cpus "$cpus" >"$dir/log" 2>&1 &
    echo $! >"$dir/pid"
    for _ in $(seq 360); do
        if [[ -f "$dir/address" ]]; then
            echo "two nodes running: RAY_ADDRESS=$(cat "$dir/address"), jobs at http://127.0.0.1:$((port + 1))"
            echo "clients need RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 and RAY_AUTH_MODE=$RAY_AUTH_MODE set"
            return 0
        fi
        running || break
        sleep 0.5
    done
    echo "the cluster did not start; see $dir/log" >&2
    tail -n 20 "$dir/log" >&2
    stop
    return 1
}

stop() { # SIGTERM to the recorded holder, which shuts down both nodes; SIGKILL if it hangs
    local pid
    if running; then
        pid=$(cat "$dir/pid")
        kill -TERM "$pid"
        for _ in $(seq 60); do
            running || break
            sleep 0.5
        done
        if running; then kill -KILL "$pid"; fi # Ray's reaper processes then end the nodes' processes
        echo "stopped (pid $pid)"
    fi
    rm -f "$dir/pid" "$dir/address"
}

case ${1:-} in
start) start ;;
stop) stop ;;
status) if running; then echo "running (pid $(cat "$dir/pid")): RAY_ADDRESS=$(cat "$dir/address")"; else echo "stopped"; fi ;;
*)
    echo "usage: $0 start|stop|status" >&2
    exit 2
    ;;
esac
