#!/usr/bin/env bash
# A replicated ClickHouse on loopback: ZooKeeper (Debian's zookeeper package, standalone) and
# two clickhouse-server replicas of one shard, cluster "flow" in remote_servers. The tests of
# replication use it; the quick single-server stack (clickhouse.sh) stays the default.
# Usage: chcluster.sh up|down|status|reset|install|replica N up|down|status
#
# Ports (loopback): ZooKeeper 19181; replica rN: native 19200+N, HTTP 19210+N, interserver
# 19220+N. Each replica is clickhouse.sh with its own directory and ports, plus config.d/
# cluster.xml (this script). ZooKeeper nodes are created under a digest identity, so they are
# readable and writable by the replicas only (ClickHouse sets creator-only ACLs when its
# <identity> is set); the identity's password is in .var/security/zookeeper/ (0600).
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
source "$(dirname "${BASH_SOURCE[0]}")/security.sh"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ZVAR="$VAR/zookeeper"
ZPID="$ZVAR/zookeeper.pid"
ZK_PORT="${FLOW_ZK_PORT:-19181}"
RVAR="$VAR/chcluster"
REPLICAS="${FLOW_CH_REPLICAS:-2}"
CLUSTER="flow"

zk_install() {
  [ -f /usr/share/java/zookeeper.jar ] || apt_install zookeeper
  [ -f /usr/share/java/zookeeper.jar ] || die "zookeeper.jar not found after installing Debian's zookeeper"
  need java "Java 17 is needed for ZooKeeper (apt-get install openjdk-17-jre-headless)."
}

zk_up() {
  if pid_alive "$ZPID" && port_open "$ZK_PORT"; then log "zookeeper already running on 127.0.0.1:$ZK_PORT"; return 0; fi
  zk_install
  mkdir -p "$ZVAR/data" "$ZVAR/log"
  cat > "$ZVAR/zoo.cfg" <<CFG
tickTime=2000
dataDir=$ZVAR/data
clientPort=$ZK_PORT
clientPortAddress=127.0.0.1
admin.enableServer=false
4lw.commands.whitelist=ruok
autopurge.snapRetainCount=3
autopurge.purgeInterval=1
CFG
  port_open "$ZK_PORT" && die "port $ZK_PORT is taken by another process; set FLOW_ZK_PORT"
  log "starting zookeeper on 127.0.0.1:$ZK_PORT"
  (cd "$ZVAR" && exec java -Xmx256m -cp /usr/share/java/zookeeper.jar:/etc/zookeeper/conf_example \
      org.apache.zookeeper.server.ZooKeeperServerMain "$ZVAR/zoo.cfg") </dev/null >"$ZVAR/log/zookeeper.log" 2>&1 &
  echo $! > "$ZPID"
  wait_port "$ZK_PORT" 60 zookeeper "$ZVAR/log/zookeeper.log"
}

replica_ports() {  # replica_ports N -> "native http interserver"
  echo "$((19200 + $1)) $((19210 + $1)) $((19220 + $1))"
}

cluster_xml() {  # cluster_xml N: config.d/cluster.xml of replica N on stdout
  local n="$1" native http inter i
  read -r native http inter <<<"$(replica_ports "$n")"
  local admin_pw zk_pw
  admin_pw="$(tr -d '\n' < "$SEC/clickhouse/admin.password")"
  zk_pw="$(tr -d '\n' < "$SEC/zookeeper/clickhouse.password")"
  cat <<XML
<?xml version="1.0"?>
<yandex>
  <interserver_http_host>127.0.0.1</interserver_http_host>
  <interserver_http_port>$inter</interserver_http_port>
  <zookeeper>
    <node><host>127.0.0.1</host><port>$ZK_PORT</port></node>
    <session_timeout_ms>30000</session_timeout_ms>
    <identity>clickhouse:$zk_pw</identity>
  </zookeeper>
  <macros><shard>01</shard><replica>r$n</replica></macros>
  <distributed_ddl><path>/clickhouse/task_queue/ddl</path></distributed_ddl>
  <remote_servers>
    <$CLUSTER>
      <shard>
        <internal_replication>true</internal_replication>
XML
  for i in $(seq 1 "$REPLICAS"); do
    read -r native _ _ <<<"$(replica_ports "$i")"
    echo "        <replica><host>127.0.0.1</host><port>$native</port><user>admin</user><password>$admin_pw</password></replica>"
  done
  cat <<XML
      </shard>
    </$CLUSTER>
  </remote_servers>
</yandex>
XML
}

replica() {  # replica N up|down|status|reset
  local n="$1" native http inter
  read -r native http inter <<<"$(replica_ports "$n")"
  FLOW_CLICKHOUSE_DIR="$RVAR/r$n" FLOW_CLICKHOUSE_PORT="$native" FLOW_CLICKHOUSE_HTTP_PORT="$http" \
    bash "$HERE/clickhouse.sh" "$2"
}

up() {
  ensure_clickhouse_security
  ensure_password "$SEC/zookeeper" clickhouse
  zk_up
  local n
  for n in $(seq 1 "$REPLICAS"); do
    mkdir -p "$RVAR/r$n/config.d"
    _private_file "$RVAR/r$n/config.d/cluster.xml"   # holds the admin and ZooKeeper passwords
    cluster_xml "$n" > "$RVAR/r$n/config.d/cluster.xml"
    replica "$n" up
  done
  log "clickhouse cluster '$CLUSTER' up: $REPLICAS replicas ($(for n in $(seq 1 "$REPLICAS"); do
    read -r p _ _ <<<"$(replica_ports "$n")"; printf '127.0.0.1:%s ' "$p"; done))"
}

down() {
  local n
  for n in $(seq 1 "$REPLICAS"); do replica "$n" down || true; done
  stop_pid "$ZPID" zookeeper
}

status() {
  local rc=0 n
  if pid_alive "$ZPID" && port_open "$ZK_PORT"; then echo "zookeeper: running (127.0.0.1:$ZK_PORT)"; else echo "zookeeper: stopped"; rc=3; fi
  for n in $(seq 1 "$REPLICAS"); do printf 'replica r%s ' "$n"; replica "$n" status || rc=3; done
  return $rc
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  reset) down; rm -rf "$RVAR" "$ZVAR"; log "clickhouse cluster and zookeeper data removed" ;;
  replica) replica "${2:?replica number}" "${3:?up|down|status}" ;;
  install) zk_install; bash "$HERE/clickhouse.sh" install ;;
  *) die "usage: $0 up|down|status|reset|install|replica N up|down|status" ;;
esac
