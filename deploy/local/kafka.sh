#!/usr/bin/env bash
# deploy/local/kafka.sh {fetch|start|stop|status|release PID|reap}
#
# A local Apache Kafka 3.9.1 broker in KRaft mode (one node, broker+controller) on 127.0.0.1,
# without Docker: the jars come from Maven Central through deploy/local/pom.xml into a cache,
# the broker runs as a plain background JVM. See docs/local-infra.md.
#
#   fetch        download the broker jars into the cache (no-op when the cache is warm)
#   start        fetch, format the data dir once, start, wait until the broker answers metadata
#   stop         SIGTERM, up to 20 s, then SIGKILL
#   status       running or not, pid, port (exit 0 running, 3 not running)
#   release PID  drop PID's lease; stop the broker if it is managed and no lease is left
#   reap         drop dead leases; stop the broker if it is managed and no lease is left
#
# Environment (defaults in brackets):
#   SEGSTREAM_KAFKA_PORT [29092]  SEGSTREAM_KAFKA_CONTROLLER_PORT [29093]
#   SEGSTREAM_KAFKA_DATA [<repo>/.run/kafka]  instance dir: data/, logs/, pid, properties
#   SEGSTREAM_KAFKA_FRESH=1        wipe the instance dir before a start (throwaway instance)
#   SEGSTREAM_LEASE_PID=PID        start as a managed server leased by PID (see lib.sh)
#   SEGSTREAM_KAFKA_HEAP_OPTS [-Xmx768m -Xms256m]  SEGSTREAM_KAFKA_START_TIMEOUT [120] (s)
#   SEGSTREAM_CACHE_DIR [~/.cache/segstream]  SEGSTREAM_MAVEN_REPO (mvn -Dmaven.repo.local)
#   SEGSTREAM_KAFKA_SASL_USERS     "user:password[,user:password...]": adds a SASL_PLAINTEXT
#                                  listener (mechanism PLAIN) with these users; the PLAINTEXT
#                                  listener stays (tools, readiness). Unset: no SASL (default)
#   SEGSTREAM_KAFKA_SASL_PORT [SEGSTREAM_KAFKA_PORT + 2]  port of that listener
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
SEGSTREAM_TAG=kafka

KAFKA_VERSION=3.9.1
CACHE_DIR=${SEGSTREAM_CACHE_DIR:-${HOME:?HOME is not set: set SEGSTREAM_CACHE_DIR}/.cache/segstream}
KAFKA_CACHE=$CACHE_DIR/kafka-$KAFKA_VERSION
LIBS=$KAFKA_CACHE/libs
MARKER=$KAFKA_CACHE/.fetched
POM=$SEGSTREAM_LOCAL_DIR/pom.xml

PORT=${SEGSTREAM_KAFKA_PORT:-29092}
CONTROLLER_PORT=${SEGSTREAM_KAFKA_CONTROLLER_PORT:-29093}
INSTANCE=$(realpath -m "${SEGSTREAM_KAFKA_DATA:-$SEGSTREAM_REPO/.run/kafka}")
DATA_DIR=$INSTANCE/data
LOG_DIR=$INSTANCE/logs
PIDFILE=$INSTANCE/kafka.pid
OUT=$INSTANCE/kafka.out
PROPS=$INSTANCE/server.properties
LEASES=$INSTANCE/leases
MANAGED=$INSTANCE/managed
LOCK=$INSTANCE.lock
# what our JVM's command line carries (see start_locked): tells our broker from a reused pid
PID_PATTERN="-Dsegstream.instance=$INSTANCE "
HEAP_OPTS=${SEGSTREAM_KAFKA_HEAP_OPTS:--Xmx768m -Xms256m}
START_TIMEOUT=${SEGSTREAM_KAFKA_START_TIMEOUT:-120}
SASL_USERS=${SEGSTREAM_KAFKA_SASL_USERS:-}
SASL_PORT=${SEGSTREAM_KAFKA_SASL_PORT:-$(( PORT + 2 ))}

# The pom's checksum is part of the marker: editing the pom (a new version) refetches.
pom_sum() { sha256sum "$POM" | cut -d' ' -f1; }

cache_warm() { [[ -f $MARKER && $(<"$MARKER") == "$(pom_sum)" && -d $LIBS ]]; }

do_fetch() {
    if cache_warm; then
        log "jars for Kafka $KAFKA_VERSION already in $LIBS"
        return 0
    fi
    command -v mvn >/dev/null || die "mvn not found: install Maven (apt-get install maven) and Java 17"
    command -v java >/dev/null || die "java not found: install a JDK 17 (apt-get install openjdk-17-jdk-headless)"
    mkdir -p "$KAFKA_CACHE"
    local tmp=$KAFKA_CACHE/libs.tmp.$$ started=$SECONDS
    rm -rf "$tmp"
    log "fetching Kafka $KAFKA_VERSION jars from Maven Central into $LIBS"
    local -a mvn_args=(-q -B -f "$POM" dependency:copy-dependencies
        "-DoutputDirectory=$tmp" -DincludeScope=runtime)
    [[ -n ${SEGSTREAM_MAVEN_REPO:-} ]] && mvn_args+=("-Dmaven.repo.local=$SEGSTREAM_MAVEN_REPO")
    if ! mvn "${mvn_args[@]}" >"$KAFKA_CACHE/fetch.log" 2>&1; then
        rm -rf "$tmp"
        show_tail "$KAFKA_CACHE/fetch.log"
        die "mvn could not fetch the Kafka jars (log: $KAFKA_CACHE/fetch.log)"
    fi
    [[ -f $tmp/kafka_2.13-$KAFKA_VERSION.jar ]] || die "mvn ran but kafka_2.13-$KAFKA_VERSION.jar is missing in $tmp"
    rm -rf "$LIBS"
    mv "$tmp" "$LIBS"
    pom_sum >"$MARKER"
    log "fetched $(find "$LIBS" -name '*.jar' | wc -l) jars ($(du -sh "$LIBS" | cut -f1)) in $(( SECONDS - started )) s"
}

# sasl_jaas: the JAAS line of the SASL_PLAINTEXT listener's PLAIN users (from SASL_USERS)
sasl_jaas() {
    local entry user password jaas="org.apache.kafka.common.security.plain.PlainLoginModule required"
    local -a entries
    IFS=, read -r -a entries <<<"$SASL_USERS"
    for entry in "${entries[@]}"; do
        user=${entry%%:*}
        password=${entry#*:}
        [[ $entry == *:* && $user =~ ^[A-Za-z0-9._-]+$ && $password =~ ^[A-Za-z0-9._~+=@%^-]+$ ]] \
            || die "SEGSTREAM_KAFKA_SASL_USERS: entries must be user:password (user of [A-Za-z0-9._-], password of [A-Za-z0-9._~+=@%^-])"
        jaas+=" user_$user=\"$password\""
    done
    printf '%s;' "$jaas"
}

write_properties() {
    local listeners="PLAINTEXT://127.0.0.1:$PORT,CONTROLLER://127.0.0.1:$CONTROLLER_PORT"
    local advertised="PLAINTEXT://127.0.0.1:$PORT"
    local protocols="CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT" sasl=""
    if [[ -n $SASL_USERS ]]; then
        listeners+=",SASL_PLAINTEXT://127.0.0.1:$SASL_PORT"
        advertised+=",SASL_PLAINTEXT://127.0.0.1:$SASL_PORT"
        protocols+=",SASL_PLAINTEXT:SASL_PLAINTEXT"
        sasl="# SEGSTREAM_KAFKA_SASL_USERS: a SASL_PLAINTEXT listener with PLAIN users
sasl.enabled.mechanisms=PLAIN
listener.name.sasl_plaintext.sasl.enabled.mechanisms=PLAIN
listener.name.sasl_plaintext.plain.sasl.jaas.config=$(sasl_jaas)"
    fi
    ( umask 077; cat >"$PROPS" <<EOF
# Generated by deploy/local/kafka.sh on each start; edit the script, not this file.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$CONTROLLER_PORT
listeners=$listeners
advertised.listeners=$advertised
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=$protocols
$sasl
log.dirs=$DATA_DIR
# one node: every replication factor is 1
num.partitions=4
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=8
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=true
delete.topic.enable=true
# a 2-core machine shared with the workers
num.network.threads=2
num.io.threads=4
background.threads=4
num.recovery.threads.per.data.dir=1
log.retention.hours=168
log.segment.bytes=268435456
EOF
    )
}

format_once() {
    if [[ -f $DATA_DIR/meta.properties ]]; then
        return 0
    fi
    mkdir -p "$DATA_DIR"
    local cluster_id
    cluster_id=$(python3 -c 'import base64, uuid; print(base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("="))')
    log "formatting $DATA_DIR (cluster id $cluster_id)"
    if ! java -cp "$LIBS/*" -Dlog4j.configuration="file:$SEGSTREAM_LOCAL_DIR/log4j.properties" \
        -Dkafka.logs.dir="$LOG_DIR/format" kafka.tools.StorageTool format \
        -t "$cluster_id" -c "$PROPS" >>"$OUT" 2>&1; then
        show_tail "$OUT"
        die "kafka-storage format failed for $DATA_DIR"
    fi
}

ready_python() {
    if [[ -x $SEGSTREAM_REPO/.venv/bin/python ]]; then
        printf '%s\n' "$SEGSTREAM_REPO/.venv/bin/python"
    else
        printf '%s\n' python3
    fi
}

start_locked() {
    local pid
    if pid=$(read_pid "$PIDFILE" "$PID_PATTERN"); then
        local running_port
        running_port=$(cat "$INSTANCE/port" 2>/dev/null || echo "?")
        [[ $running_port == "$PORT" ]] || die "instance $INSTANCE already runs (pid $pid) on port $running_port, not $PORT: stop it first or use another SEGSTREAM_KAFKA_DATA"
        log "already running (pid $pid, 127.0.0.1:$PORT)"
        [[ -n ${SEGSTREAM_LEASE_PID:-} ]] && lease_add "$LEASES" "$SEGSTREAM_LEASE_PID"
        return 0
    fi
    local p
    local -a ports=("$PORT" "$CONTROLLER_PORT")
    [[ -n $SASL_USERS ]] && ports+=("$SASL_PORT")
    for p in "${ports[@]}"; do
        port_listening "$p" && die "port $p on 127.0.0.1 is taken by another process (not this instance, $INSTANCE); stop it or set SEGSTREAM_KAFKA_PORT / SEGSTREAM_KAFKA_CONTROLLER_PORT / SEGSTREAM_KAFKA_SASL_PORT"
    done
    cache_warm || die "no Kafka jars in $LIBS: run kafka.sh fetch"
    if [[ ${SEGSTREAM_KAFKA_FRESH:-0} == 1 ]]; then
        log "SEGSTREAM_KAFKA_FRESH=1: wiping $INSTANCE"
        wipe_instance "$INSTANCE" server.properties
    fi
    mkdir -p "$INSTANCE" "$LOG_DIR"
    rm -rf "$LEASES" "$MANAGED" "$PIDFILE"
    : >"$OUT"
    printf '%s\n' "$PORT" >"$INSTANCE/port"
    write_properties
    format_once

    local started=$SECONDS log_from
    log_from=$(stat -c %s "$LOG_DIR/server.log" 2>/dev/null || echo 0)
    # shellcheck disable=SC2086 # HEAP_OPTS is a list of JVM flags
    pid=$(spawn_detached "$OUT" java $HEAP_OPTS -server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
        -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent \
        -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true \
        -Dlog4j.configuration="file:$SEGSTREAM_LOCAL_DIR/log4j.properties" \
        -Dkafka.logs.dir="$LOG_DIR" -Dsegstream.instance="$INSTANCE" \
        -cp "$LIBS/*" kafka.Kafka "$PROPS")
    printf '%s\n' "$pid" >"$PIDFILE"
    log "started pid $pid on 127.0.0.1:$PORT (controller $CONTROLLER_PORT${SASL_USERS:+, SASL_PLAINTEXT $SASL_PORT}), data $DATA_DIR"

    if [[ -n ${SEGSTREAM_LEASE_PID:-} ]]; then
        lease_add "$LEASES" "$SEGSTREAM_LEASE_PID"
        : >"$MANAGED"
        spawn_detached "$LOG_DIR/watchdog.log" "$SEGSTREAM_LOCAL_DIR/watchdog.sh" kafka \
            "$PIDFILE" "$PID_PATTERN" "$LEASES" "$SEGSTREAM_LOCAL_DIR/kafka.sh" reap >/dev/null
        log "managed: stops when lease holder pid $SEGSTREAM_LEASE_PID (and any later one) is gone"
    fi

    if ! "$(ready_python)" "$SEGSTREAM_LOCAL_DIR/kafka_ready.py" "127.0.0.1:$PORT" \
        "$START_TIMEOUT" --pid "$pid" --log "$LOG_DIR/server.log" --log-from "$log_from"; then
        show_tail "$OUT" "$LOG_DIR/server.log"
        stop_pid kafka "$pid" 5
        rm -f "$PIDFILE"
        die "Kafka did not become ready on 127.0.0.1:$PORT within $START_TIMEOUT s (logs above; instance $INSTANCE)"
    fi
    log "ready on 127.0.0.1:$PORT after $(( SECONDS - started )) s"
}

stop_locked() { server_stop_locked; }
reap_locked() { server_reap_locked "$@"; }
server_address() {
    local controller
    controller=$(grep -oP '^controller.quorum.voters=1@127.0.0.1:\K[0-9]+' "$PROPS" 2>/dev/null \
        || echo "$CONTROLLER_PORT")
    printf '127.0.0.1:%s (controller %s)' "$1" "$controller"
}
status() { server_status; }

case ${1:-} in
    fetch) mkdir -p "$KAFKA_CACHE"; with_lock "$KAFKA_CACHE/.lock" do_fetch ;;
    start)
        # The cache lock first (fetch), then the instance lock: never the other way round.
        if ! read_pid "$PIDFILE" "$PID_PATTERN" >/dev/null; then
            mkdir -p "$KAFKA_CACHE"; with_lock "$KAFKA_CACHE/.lock" do_fetch
        fi
        with_lock "$LOCK" start_locked ;;
    stop) with_lock "$LOCK" stop_locked ;;
    status) status ;;
    release) [[ -n ${2:-} ]] || die "usage: kafka.sh release PID"; with_lock "$LOCK" reap_locked "$2" ;;
    reap) with_lock "$LOCK" reap_locked ;;
    *) die "usage: kafka.sh {fetch|start|stop|status|release PID|reap}" ;;
esac
