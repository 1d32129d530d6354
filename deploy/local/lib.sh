# shellcheck shell=bash
# deploy/local/lib.sh — helpers shared by kafka.sh and redis.sh (sourced, never run).
#
# What they give: messages, pid checks, a per-instance lock, graceful stop, and *leases*.
# A lease is a file <instance>/leases/<pid> holding that process's start time. A server started
# with SEGSTREAM_LEASE_PID set is "managed": a watchdog (watchdog.sh) stops it as soon as no
# lease holder is alive any more (a killed pytest or with-infra.sh leaves no orphan server), and
# `release PID` stops it when the last holder lets go. A server started without a lease (make
# infra-up) is never stopped by a test session or with-infra.sh.

SEGSTREAM_LOCAL_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck disable=SC2034 # used by the scripts that source this file
SEGSTREAM_REPO=$(cd "$SEGSTREAM_LOCAL_DIR/../.." && pwd)
SEGSTREAM_TAG=${SEGSTREAM_TAG:-segstream}

log() { printf '[%s] %s\n' "$SEGSTREAM_TAG" "$*" >&2; }
die() { printf '[%s] ERROR: %s\n' "$SEGSTREAM_TAG" "$*" >&2; exit 1; }

# pid_alive PID -> 0 when PID names a live process (zombies count as dead).
pid_alive() {
    local pid=$1 state
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    [[ -r /proc/$pid/stat ]] || return 1
    state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) || return 1
    [[ -n $state && $state != Z ]]
}

# pid_starttime PID -> the process start time (clock ticks since boot), to detect pid reuse.
pid_starttime() {
    # Field 22 of /proc/PID/stat; the command name (field 2) may hold spaces, so cut after ')'.
    sed -e 's/^.*) //' "/proc/$1/stat" 2>/dev/null | awk '{print $20}'
}

# read_pid PIDFILE [PATTERN] -> prints the pid when the file names a live process (whose command
# line contains PATTERN, when given: a stale pidfile whose pid was reused by another program
# must not be taken for our server, let alone be killed), else fails.
read_pid() {
    local pidfile=$1 pattern=${2:-} pid
    [[ -f $pidfile ]] || return 1
    pid=$(<"$pidfile")
    pid_alive "$pid" || return 1
    if [[ -n $pattern ]]; then
        [[ $(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) == *"$pattern"* ]] || return 1
    fi
    printf '%s\n' "$pid"
}

# port_listening PORT -> 0 when something accepts TCP connections on 127.0.0.1:PORT.
port_listening() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# with_lock LOCKFILE CMD... -> run CMD while holding an exclusive flock on LOCKFILE (waits).
# The lock fd is closed for background children (see spawn_detached), so a server never
# inherits it.
with_lock() {
    local lockfile=$1; shift
    mkdir -p "$(dirname "$lockfile")"
    exec {SEGSTREAM_LOCK_FD}>"$lockfile"
    flock -w 600 "$SEGSTREAM_LOCK_FD" || die "could not lock $lockfile within 600 s"
    "$@"
    local rc=$?
    flock -u "$SEGSTREAM_LOCK_FD"
    exec {SEGSTREAM_LOCK_FD}>&-
    unset SEGSTREAM_LOCK_FD
    return "$rc"
}

# spawn_detached LOGFILE CMD... -> start CMD in its own session, in the background, stdin from
# /dev/null, stdout+stderr appended to LOGFILE, without our lock fd; prints its pid.
spawn_detached() {
    local logfile=$1; shift
    if [[ -n ${SEGSTREAM_LOCK_FD:-} ]]; then
        setsid "$@" </dev/null >>"$logfile" 2>&1 {SEGSTREAM_LOCK_FD}>&- &
    else
        setsid "$@" </dev/null >>"$logfile" 2>&1 &
    fi
    printf '%s\n' "$!"
}

# stop_pid NAME PID [GRACE_SECONDS] -> SIGTERM, wait up to GRACE (default 20 s), then SIGKILL.
stop_pid() {
    local name=$1 pid=$2 grace=${3:-20} waited=0
    pid_alive "$pid" || return 0
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    while pid_alive "$pid" && (( waited < grace * 10 )); do
        sleep 0.1
        waited=$(( waited + 1 ))
    done
    if pid_alive "$pid"; then
        log "$name (pid $pid) still running after ${grace} s: sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        while pid_alive "$pid"; do sleep 0.1; done
    fi
    log "$name stopped after $(( waited / 10 )).$(( waited % 10 )) s"
}

# show_tail FILE... -> print the last lines of each existing file, for error messages.
show_tail() {
    local f
    for f in "$@"; do
        [[ -s $f ]] || continue
        printf -- '----- last 40 lines of %s -----\n' "$f" >&2
        tail -n 40 "$f" >&2
    done
}

# wipe_instance DIR MARKER_FILE -> rm -rf DIR, but only if it looks like one of our instance dirs
# (absent, empty, or holding MARKER_FILE): a mistyped SEGSTREAM_*_DATA must not erase a home.
wipe_instance() {
    local dir=$1 marker=$2
    [[ -e $dir ]] || return 0
    if [[ -f $dir/$marker ]] || [[ -z $(ls -A "$dir") ]]; then
        rm -rf "$dir"
    else
        die "refusing to wipe $dir: it has no $marker, so it is not an instance dir of ours"
    fi
}

# ---- leases -------------------------------------------------------------------------------

# lease_add DIR PID -> record PID as a holder of the instance whose lease dir is DIR.
lease_add() {
    local dir=$1 pid=$2
    pid_alive "$pid" || die "lease pid $pid is not a live process"
    mkdir -p "$dir"
    pid_starttime "$pid" >"$dir/$pid"
}

# lease_remove DIR PID
lease_remove() { rm -f "$1/$2"; }

# lease_prune DIR -> delete leases whose process is gone (or whose pid was reused); prints the
# number of live leases left.
lease_prune() {
    local dir=$1 f pid live=0
    if [[ -d $dir ]]; then
        for f in "$dir"/*; do
            [[ -e $f ]] || continue
            pid=${f##*/}
            if pid_alive "$pid" && [[ $(pid_starttime "$pid") == "$(<"$f")" ]]; then
                live=$(( live + 1 ))
            else
                rm -f "$f"
            fi
        done
    fi
    printf '%s\n' "$live"
}

# --- the lifecycle kafka.sh, redis.sh and prometheus.sh share --------------------------------
# shellcheck disable=SC2153 # PIDFILE, PORT... are set by the sourcing script
# A script sets INSTANCE, PIDFILE, PID_PATTERN, LEASES, MANAGED and PORT, names itself in
# SEGSTREAM_TAG, and may define server_address PORT (default 127.0.0.1:PORT) for `status`.

# server_stop_locked: stop the instance's server (SIGTERM, then SIGKILL after 20 s).
server_stop_locked() {
    local pid
    if pid=$(read_pid "$PIDFILE" "$PID_PATTERN"); then
        stop_pid "$SEGSTREAM_TAG" "$pid" 20
    else
        log "not running ($INSTANCE)"
    fi
    rm -rf "$PIDFILE" "$LEASES" "$MANAGED"
}

# server_reap_locked [PID]: drop PID's lease (if given) and dead ones; stop a managed server
# nobody holds any more (one started by `make infra-up`, without a lease, is left alone).
server_reap_locked() {
    [[ -n ${1:-} ]] && lease_remove "$LEASES" "$1"
    local live
    live=$(lease_prune "$LEASES")
    if ! read_pid "$PIDFILE" "$PID_PATTERN" >/dev/null; then
        return 0
    fi
    if [[ ! -f $MANAGED ]]; then
        log "not stopping: this server was started without a lease (make infra-up); use stop"
    elif (( live > 0 )); then
        log "not stopping: $live other lease holder(s) still use it"
    else
        server_stop_locked
    fi
}

# server_status: one line; exit 0 when running, 3 when not.
# shellcheck disable=SC2153 # PORT is set by the sourcing script
server_status() {
    local pid
    if pid=$(read_pid "$PIDFILE" "$PID_PATTERN"); then
        local kind=unmanaged port address
        port=$(cat "$INSTANCE/port" 2>/dev/null || echo "$PORT")
        [[ -f $MANAGED ]] && kind="managed, $(lease_prune "$LEASES") lease(s)"
        if declare -F server_address >/dev/null; then
            address=$(server_address "$port")
        else
            address="127.0.0.1:$port"
        fi
        printf '%s: running, pid %s, %s, %s, instance %s\n' \
            "$SEGSTREAM_TAG" "$pid" "$address" "$kind" "$INSTANCE"
        return 0
    fi
    printf '%s: not running (instance %s, port %s)\n' "$SEGSTREAM_TAG" "$INSTANCE" "$PORT"
    return 3
}
