#!/usr/bin/env bash
# deploy/local/demo.sh — what `make demo` runs, inside deploy/local/with-infra.sh (which starts
# Kafka and Redis when they are not running and stops what it started).
#
# Starts, in the background, with logs in .run/demo/: the segstream worker (ingest +
# segmentation, API and /metrics), the HTTP collector, and the shopper simulator posting to the
# collector; then shows `segstream watch` (a live view of segment changes) in the foreground.
# Ctrl-C (or the end of DEMO_DURATION) stops everything this script started.
#
# Knobs: DEMO_CUSTOMERS [2000], DEMO_RATE events/s [200], DEMO_DURATION (e.g. 2m; default: until
# Ctrl-C), DEMO_WATCH_ONCE (seconds: print one view and exit — for scripted runs).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
cd "$repo"
py="$repo/.venv/bin/python"
logs="$repo/.run/demo"
mkdir -p "$logs"

: "${SEGSTREAM_KAFKA_BOOTSTRAP:?run me through deploy/local/with-infra.sh (make demo)}"
: "${SEGSTREAM_REDIS_URL:?run me through deploy/local/with-infra.sh (make demo)}"
token="demo-token-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
write_key="demo-key-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
export SEGSTREAM_TOPIC_PREFIX="${SEGSTREAM_TOPIC_PREFIX:-demo-}"
export SEGSTREAM_REDIS_NAMESPACE="${SEGSTREAM_REDIS_NAMESPACE:-demo:}"
export SEGSTREAM_WEB_PORT="${SEGSTREAM_WEB_PORT:-6066}"
export SEGSTREAM_COLLECTOR_PORT="${SEGSTREAM_COLLECTOR_PORT:-8088}"
export SEGSTREAM_API_TOKENS="$token"
export SEGSTREAM_COLLECTOR_WRITE_KEYS="web=$write_key"
export SEGSTREAM_DATA_DIR="$logs/worker-data"
export SEGSTREAM_LOG_LEVEL="${SEGSTREAM_LOG_LEVEL:-warning}"
# custom event types (processors/event_types.yaml) and the default catalogue plus the example
# segments that use them (processors/custom_segments.yaml), merged into one definitions file
export SEGSTREAM_TYPES_FILE="${SEGSTREAM_TYPES_FILE:-$repo/processors/event_types.yaml}"
if [[ -z ${SEGSTREAM_SEGMENTS_FILE:-} ]]; then
    "$py" - "$logs/segments.yaml" <<'MERGE'
import sys
import yaml
base = yaml.safe_load(open("processors/catalogue.yaml", encoding="utf-8"))
extra = yaml.safe_load(open("processors/custom_segments.yaml", encoding="utf-8"))
base["version"] = f"{base['version']}+{extra['version']}"
base["segments"] += extra["segments"]
with open(sys.argv[1], "w", encoding="utf-8") as out:
    yaml.safe_dump(base, out, sort_keys=False)
MERGE
    export SEGSTREAM_SEGMENTS_FILE="$logs/segments.yaml"
fi

pids=()
# shellcheck disable=SC2317 # called by the trap
stop_all() {
    trap - EXIT INT TERM
    local pid
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do
        for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    done
    echo "demo: stopped worker, collector and simulator (logs in $logs)"
}
trap stop_all EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

wait_http() {  # wait_http URL NAME LOG
    for _ in $(seq 1 120); do
        if curl -fsS -o /dev/null "$1" 2>/dev/null; then return 0; fi
        sleep 0.5
    done
    echo "demo: $2 did not come up; last lines of $3:" >&2
    tail -n 30 "$3" >&2
    exit 1
}

echo "demo: starting the worker (logs: $logs/worker.log)"
"$py" -m stream.cli worker >"$logs/worker.log" 2>&1 &
pids+=($!)
echo "demo: starting the collector (logs: $logs/collector.log)"
"$py" -m stream.cli collector >"$logs/collector.log" 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:$SEGSTREAM_WEB_PORT/health" worker "$logs/worker.log"
wait_http "http://127.0.0.1:$SEGSTREAM_COLLECTOR_PORT/ready" collector "$logs/collector.log"

collector="http://127.0.0.1:$SEGSTREAM_COLLECTOR_PORT/v1/events"
echo "demo: starting the simulator -> $collector (logs: $logs/simulator.log)"
"$py" -m stream.cli simulate --customers "${DEMO_CUSTOMERS:-2000}" --rate "${DEMO_RATE:-200}" \
    ${DEMO_DURATION:+--duration "$DEMO_DURATION"} --to "$collector" --write-key "$write_key" \
    --late-share 0.01 --duplicate-share 0.01 --malformed-share 0.005 --custom-share 0.05 \
    >"$logs/simulator.log" 2>&1 &
pids+=($!)

cat <<INFO
demo: running. API token: $token
  curl -H 'Authorization: Bearer $token' http://127.0.0.1:$SEGSTREAM_WEB_PORT/segments
  curl http://127.0.0.1:$SEGSTREAM_WEB_PORT/metrics
  curl -H 'Authorization: Bearer $write_key' -d '{"event_id":"e1","type":"page_view","customer_id":"me","timestamp":'"\$(date +%s000)"',"properties":{"url":"/"}}' $collector
INFO
sleep 2
if [[ -n ${DEMO_WATCH_ONCE:-} ]]; then
    "$py" -m stream.cli watch --once "$DEMO_WATCH_ONCE"
else
    "$py" -m stream.cli watch
fi
