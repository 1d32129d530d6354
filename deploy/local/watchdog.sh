#!/usr/bin/env bash
# deploy/local/watchdog.sh NAME PIDFILE PID_PATTERN LEASE_DIR REAP_CMD...
#
# Runs beside a "managed" local server (see lib.sh): once a second it checks the lease holders
# (pytest, with-infra.sh); when none is alive any more it runs REAP_CMD (e.g. `kafka.sh reap`),
# which, under the instance lock, stops the server if there is still no live lease. Exits as soon
# as the server itself is gone. This is what keeps a `kill -9` of pytest from leaving an orphan
# JVM or redis-server behind.
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

(( $# >= 5 )) || die "usage: watchdog.sh NAME PIDFILE PID_PATTERN LEASE_DIR REAP_CMD..."
name=$1 pidfile=$2 pid_pattern=$3 lease_dir=$4
shift 4
SEGSTREAM_TAG="watchdog $name"
interval=${SEGSTREAM_WATCHDOG_INTERVAL:-1}

# Wait for the server to write its pid (redis daemonizes and writes it a moment later).
for _ in $(seq 1 300); do
    [[ -s $pidfile ]] && break
    sleep 0.1
done

while server_pid=$(read_pid "$pidfile" "$pid_pattern"); do
    if [[ $(lease_prune "$lease_dir") == 0 ]]; then
        log "no live lease holder left for $name (pid $server_pid): reaping"
        "$@" || log "reap command failed: $*"
    fi
    sleep "$interval"
done
