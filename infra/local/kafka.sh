#!/usr/bin/env bash
# Apache Kafka in KRaft mode (every node a combined broker+controller) on 127.0.0.1, assembled
# from the official jars on Maven Central. One node by default (the quick development stack);
# FLOW_KAFKA_BROKERS=3 runs a three-node cluster whose node i listens on the base ports + 100*(i-1)
# (clients 19092/19192/19292), with replicated internal topics and min.insync.replicas 2; point
# the pipeline at it with FLOW_KAFKA__BOOTSTRAP, FLOW_KAFKA__REPLICATION_FACTOR=3 and
# FLOW_KAFKA__MIN_INSYNC_REPLICAS=2. Usage: kafka.sh up|down|status|reset|install|kill NODE
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
source "$(dirname "${BASH_SOURCE[0]}")/security.sh"
LIBS="$CACHE/kafka-$KAFKA_VERSION/libs"
KVAR="$VAR/kafka"
NODES="${FLOW_KAFKA_BROKERS:-1}"
case "$NODES" in 1|2|3|4|5) ;; *) die "FLOW_KAFKA_BROKERS must be 1 to 5, not '$NODES'" ;; esac
RF=$(( NODES < 3 ? NODES : 3 ))
MIN_ISR=$(( NODES >= 3 ? 2 : 1 ))

nport() { echo $(( $1 + 100 * ($2 - 1) )); }                 # nport BASE NODE
ndir() { if [ "$NODES" = 1 ]; then echo "$KVAR"; else echo "$KVAR/node$1"; fi; }   # one node: the old layout

install_jars() {
  [ -f "$LIBS/.complete" ] && return 0
  need java "Install Java 17+ (Debian: apt-get install openjdk-17-jre-headless)."
  need mvn "Install Maven (Debian: apt-get install maven); it fetches the Kafka jars from Maven Central."
  log "fetching Apache Kafka $KAFKA_VERSION jars from Maven Central (once)"
  mkdir -p "$LIBS"
  (cd "$ROOT/infra/local/kafka" && mvn -q -B -Dkafka.version="$KAFKA_VERSION" \
      dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$LIBS") \
    || die "Maven could not fetch the Kafka jars (see output above)"
  touch "$LIBS/.complete"
}

write_config() {  # write_config NODE
  local i="$1" d; d="$(ndir "$1")"
  local port ctrl internal voters="" j
  port="$(nport "$KAFKA_PORT" "$i")"; ctrl="$(nport "$KAFKA_CONTROLLER_PORT" "$i")"
  internal="$(nport "$KAFKA_INTERNAL_PORT" "$i")"
  for j in $(seq 1 "$NODES"); do voters="$voters${voters:+,}$j@127.0.0.1:$(nport "$KAFKA_CONTROLLER_PORT" "$j")"; done
  mkdir -p "$d/data"
  local listeners
  if [ "$KAFKA_SECURITY" = "PLAINTEXT" ]; then
    log "WARNING: Kafka without authentication or TLS (FLOW_KAFKA__SECURITY_PROTOCOL=PLAINTEXT, development only)"
    listeners="listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$ctrl
advertised.listeners=PLAINTEXT://127.0.0.1:$port
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT"
  else
    ensure_kafka_security
    ensure_blobstore_security   # not the broker's: created with the rest so a site's blob service can start
    # Clients: SASL/SCRAM-SHA-512 over TLS, one principal per role, least privilege by ACLs
    # (pipeline/ops/acls.py). Brokers and controllers talk mutual TLS on their own listeners;
    # the broker certificate's CN is the super user "broker". Nothing is allowed without an ACL.
    listeners="listeners=SASL_SSL://127.0.0.1:$port,INTERNAL://127.0.0.1:$internal,CONTROLLER://127.0.0.1:$ctrl
advertised.listeners=SASL_SSL://127.0.0.1:$port,INTERNAL://127.0.0.1:$internal
listener.security.protocol.map=SASL_SSL:SASL_SSL,INTERNAL:SSL,CONTROLLER:SSL
inter.broker.listener.name=INTERNAL
sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
ssl.keystore.type=PEM
ssl.keystore.location=$SEC/kafka/broker.pem
ssl.truststore.type=PEM
ssl.truststore.location=$SEC/ca.crt
listener.name.internal.ssl.client.auth=required
listener.name.controller.ssl.client.auth=required
ssl.principal.mapping.rules=RULE:^CN=([A-Za-z0-9._-]+)\$/\$1/,DEFAULT
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
super.users=User:broker;User:admin
allow.everyone.if.no.acl.found=false"
  fi
  _private_file "$d/server.properties"
  cat > "$d/server.properties" <<PROPS
process.roles=broker,controller
node.id=$i
controller.quorum.voters=$voters
$listeners
controller.listener.names=CONTROLLER
log.dirs=$d/data
num.partitions=1
# Durability on a cluster: internal topics on up to 3 nodes, writes acknowledged by 2.
default.replication.factor=$RF
min.insync.replicas=$MIN_ISR
offsets.topic.replication.factor=$RF
transaction.state.log.replication.factor=$RF
transaction.state.log.min.isr=$MIN_ISR
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
# Short-retention raw topics must really be dropped: check every second, delete at once.
log.retention.check.interval.ms=1000
log.initial.task.delay.ms=0
log.segment.delete.delay.ms=0
log.roll.jitter.ms=0
PROPS
}

write_log_config() {
  cat > "$KVAR/log4j.properties" <<'L4J'
log4j.rootLogger=INFO, file
log4j.appender.file=org.apache.log4j.RollingFileAppender
log4j.appender.file.File=${kafka.logs.dir}/server.log
log4j.appender.file.MaxFileSize=20MB
log4j.appender.file.MaxBackupIndex=2
log4j.appender.file.layout=org.apache.log4j.PatternLayout
log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.log.LogCleaner=WARN
log4j.logger.org.apache.kafka.controller=WARN
L4J
}

kjava() {
  java -Xms256m -Xmx1g -XX:+UseG1GC -Djava.awt.headless=true \
    -Dkafka.logs.dir="$KVAR" -Dlog4j.configuration="file:$KVAR/log4j.properties" \
    -cp "$LIBS/*" "$@"
}

up() {
  local i d port running=0
  for i in $(seq 1 "$NODES"); do
    d="$(ndir "$i")"; pid_alive "$d/kafka.pid" && port_open "$(nport "$KAFKA_PORT" "$i")" && running=$((running + 1))
  done
  if [ "$running" = "$NODES" ]; then log "kafka already running ($NODES node(s) from 127.0.0.1:$KAFKA_PORT)"; provision; return 0; fi
  install_jars
  [ "$NODES" != 1 ] && [ -f "$KVAR/data/meta.properties" ] && die "$KVAR holds a single-node stack: \`stack.sh reset\` it before starting $NODES nodes"
  mkdir -p "$KVAR"
  write_log_config
  [ -s "$KVAR/cluster.id" ] || kjava kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1 > "$KVAR/cluster.id"
  for i in $(seq 1 "$NODES"); do
    d="$(ndir "$i")"; port="$(nport "$KAFKA_PORT" "$i")"
    pid_alive "$d/kafka.pid" && port_open "$port" && continue
    write_config "$i"
    if [ ! -f "$d/data/meta.properties" ]; then
      log "formatting KRaft log dir of node $i"
      kjava kafka.tools.StorageTool format -t "$(cat "$KVAR/cluster.id")" \
        -c "$d/server.properties" --ignore-formatted >"$d/format.log" 2>&1 || { cat "$d/format.log" >&2; die "kafka storage format failed"; }
    fi
    port_open "$port" && die "port $port is taken by another process; set FLOW_KAFKA_PORT"
    log "starting kafka $KAFKA_VERSION node $i on 127.0.0.1:$port"
    nohup java -Xms256m -Xmx1g -XX:+UseG1GC -Djava.awt.headless=true \
      -Dkafka.logs.dir="$d" -Dlog4j.configuration="file:$KVAR/log4j.properties" \
      -cp "$LIBS/*" kafka.Kafka "$d/server.properties" </dev/null >"$d/stdout.log" 2>&1 &
    echo $! > "$d/kafka.pid"
  done
  for i in $(seq 1 "$NODES"); do
    wait_port "$(nport "$KAFKA_PORT" "$i")" 90 "kafka node $i" "$(ndir "$i")/stdout.log"
  done
  provision
  log "kafka up ($NODES node(s))"
}

provision() {  # SCRAM credentials and ACLs of every role (pipeline/ops/kafka_provision.py); idempotent
  [ "$KAFKA_SECURITY" = "PLAINTEXT" ] && return 0
  local py="${FLOW_PYTHON:-$ROOT/.venv/bin/python}"
  [ -x "$py" ] || die "no Python environment at $py to register Kafka credentials: run \`make setup\` (or set FLOW_PYTHON)"
  (cd "$ROOT" && "$py" -m pipeline.ops.kafka_provision) || die "registering Kafka credentials and ACLs failed (see above)"
}

status() {
  local i d rc=0 port
  for i in $(seq 1 "$NODES"); do
    d="$(ndir "$i")"; port="$(nport "$KAFKA_PORT" "$i")"
    if pid_alive "$d/kafka.pid" && port_open "$port"; then
      echo "kafka node $i: running (pid $(cat "$d/kafka.pid"), 127.0.0.1:$port, version $KAFKA_VERSION)"
    else
      echo "kafka node $i: stopped"; rc=3
    fi
  done
  return $rc
}

down() { local i; for i in $(seq 1 "$NODES"); do stop_pid "$(ndir "$i")/kafka.pid" "kafka node $i"; done; }

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  reset) down; rm -rf "$KVAR"; log "kafka data removed" ;;
  install) install_jars ;;
  kill) [ -n "${2:-}" ] || die "usage: $0 kill NODE"; d="$(ndir "$2")"   # a crash, for fault tests
        pid_alive "$d/kafka.pid" && kill -9 "$(cat "$d/kafka.pid")"; log "kafka node $2 killed" ;;
  *) die "usage: $0 up|down|status|reset|install|kill NODE" ;;
esac
