#!/usr/bin/env bash
# Single-node Apache Kafka (KRaft, combined broker+controller) on 127.0.0.1, assembled from
# the official jars on Maven Central. Usage: kafka.sh up|down|status|reset
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
source "$(dirname "${BASH_SOURCE[0]}")/security.sh"
LIBS="$CACHE/kafka-$KAFKA_VERSION/libs"
KVAR="$VAR/kafka"
PIDF="$KVAR/kafka.pid"
LOGF="$KVAR/server.log"

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

write_config() {
  mkdir -p "$KVAR/data"
  local listeners
  if [ "$KAFKA_SECURITY" = "PLAINTEXT" ]; then
    log "WARNING: Kafka without authentication or TLS (FLOW_KAFKA__SECURITY_PROTOCOL=PLAINTEXT, development only)"
    listeners="listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT"
  else
    ensure_kafka_security
    # Clients: SASL/SCRAM-SHA-512 over TLS, one principal per role, least privilege by ACLs
    # (pipeline/ops/acls.py). Broker and controller talk mutual TLS on their own listeners; the
    # broker certificate's CN is the super user "broker". Nothing is allowed without an ACL.
    listeners="listeners=SASL_SSL://127.0.0.1:$KAFKA_PORT,INTERNAL://127.0.0.1:$KAFKA_INTERNAL_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
advertised.listeners=SASL_SSL://127.0.0.1:$KAFKA_PORT,INTERNAL://127.0.0.1:$KAFKA_INTERNAL_PORT
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
  _private_file "$KVAR/server.properties"
  cat > "$KVAR/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$KAFKA_CONTROLLER_PORT
$listeners
controller.listener.names=CONTROLLER
log.dirs=$KVAR/data
num.partitions=1
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
# Short-retention raw topics must really be dropped: check every second, delete at once.
log.retention.check.interval.ms=1000
log.initial.task.delay.ms=0
log.segment.delete.delay.ms=0
log.roll.jitter.ms=0
PROPS
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
  if pid_alive "$PIDF" && port_open "$KAFKA_PORT"; then log "kafka already running on 127.0.0.1:$KAFKA_PORT"; provision; return 0; fi
  install_jars
  write_config
  if [ ! -f "$KVAR/data/meta.properties" ]; then
    log "formatting KRaft log dir"
    [ -s "$KVAR/cluster.id" ] || kjava kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1 > "$KVAR/cluster.id"
    kjava kafka.tools.StorageTool format -t "$(cat "$KVAR/cluster.id")" \
      -c "$KVAR/server.properties" --ignore-formatted >"$KVAR/format.log" 2>&1 || { cat "$KVAR/format.log" >&2; die "kafka storage format failed"; }
  fi
  port_open "$KAFKA_PORT" && die "port $KAFKA_PORT is taken by another process; set FLOW_KAFKA_PORT"
  log "starting kafka $KAFKA_VERSION on 127.0.0.1:$KAFKA_PORT"
  nohup java -Xms256m -Xmx1g -XX:+UseG1GC -Djava.awt.headless=true \
    -Dkafka.logs.dir="$KVAR" -Dlog4j.configuration="file:$KVAR/log4j.properties" \
    -cp "$LIBS/*" kafka.Kafka "$KVAR/server.properties" </dev/null >"$KVAR/stdout.log" 2>&1 &
  echo $! > "$PIDF"
  wait_port "$KAFKA_PORT" 90 kafka "$KVAR/stdout.log"
  provision
  log "kafka up"
}

provision() {  # SCRAM credentials and ACLs of every role (pipeline/ops/kafka_provision.py); idempotent
  [ "$KAFKA_SECURITY" = "PLAINTEXT" ] && return 0
  local py="${FLOW_PYTHON:-$ROOT/.venv/bin/python}"
  [ -x "$py" ] || die "no Python environment at $py to register Kafka credentials: run \`make setup\` (or set FLOW_PYTHON)"
  (cd "$ROOT" && "$py" -m pipeline.ops.kafka_provision) || die "registering Kafka credentials and ACLs failed (see above)"
}

status() {
  if pid_alive "$PIDF" && port_open "$KAFKA_PORT"; then echo "kafka: running (pid $(cat "$PIDF"), 127.0.0.1:$KAFKA_PORT, version $KAFKA_VERSION)"; return 0; fi
  echo "kafka: stopped"; return 3
}

case "${1:-}" in
  up) up ;;
  down) stop_pid "$PIDF" kafka ;;
  status) status ;;
  reset) stop_pid "$PIDF" kafka; rm -rf "$KVAR"; log "kafka data removed" ;;
  install) install_jars ;;
  *) die "usage: $0 up|down|status|reset|install" ;;
esac
