#!/usr/bin/env bash
# deploy/local/with-infra.sh CMD [ARGS...]
#
# Run CMD with a local Kafka broker and Redis available: starts each one that is not running
# (as a server leased by this script, see lib.sh), exports
#   SEGSTREAM_KAFKA_BOOTSTRAP=127.0.0.1:<kafka port>
#   SEGSTREAM_REDIS_URL=redis://[:password@]127.0.0.1:<redis port>/0
# runs CMD, then stops only what it started (and only when no other lease holder, e.g. a
# concurrent pytest session, still uses it). Exits with CMD's exit code. On Ctrl-C / SIGTERM the
# servers are released too; on SIGKILL the watchdog stops them within about a second.
# The ports and instance dirs follow kafka.sh / redis.sh (SEGSTREAM_KAFKA_PORT, ...).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$here/lib.sh"
SEGSTREAM_TAG=with-infra
(( $# > 0 )) || { echo "usage: with-infra.sh CMD [ARGS...]" >&2; exit 64; }

kafka_port=${SEGSTREAM_KAFKA_PORT:-29092}
redis_port=${SEGSTREAM_REDIS_PORT:-26379}

started=()
# shellcheck disable=SC2317 # called by the traps
release_all() {
    local s
    for s in "${started[@]}"; do
        "$here/$s.sh" release "$$" || log "could not release $s"
    done
    started=()
}
# shellcheck disable=SC2317 # called by the traps
on_signal() {
    trap - EXIT INT TERM
    release_all
    exit "$1"
}
trap release_all EXIT
trap 'on_signal 130' INT
trap 'on_signal 143' TERM

declare -A port=([kafka]=$kafka_port [redis]=$redis_port)
for s in kafka redis; do
    if "$here/$s.sh" status >/dev/null; then
        log "$s already running: using it"
    elif port_listening "${port[$s]}"; then
        # e.g. a pytest session's own server (another instance dir) on the same port
        log "something already listens on 127.0.0.1:${port[$s]}: using it as $s"
    else
        started+=("$s")
        SEGSTREAM_LEASE_PID=$$ "$here/$s.sh" start
    fi
done

export SEGSTREAM_KAFKA_BOOTSTRAP="127.0.0.1:$kafka_port"
if [[ -n ${SEGSTREAM_REDIS_PASSWORD:-} ]]; then
    export SEGSTREAM_REDIS_URL="redis://:${SEGSTREAM_REDIS_PASSWORD}@127.0.0.1:$redis_port/0"
else
    export SEGSTREAM_REDIS_URL="redis://127.0.0.1:$redis_port/0"
fi

rc=0
"$@" || rc=$?
exit "$rc"
