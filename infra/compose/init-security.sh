#!/usr/bin/env bash
# docker-compose's one-shot security set-up: the same material as the local stack
# (infra/local/security.sh), then one directory per role holding only what that role needs,
# owned by the user its container runs as. Services mount their directory by volume subpath.
# Usage: init-security.sh /security   (runs as root in the flowpipe image; idempotent)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VAR="${1:?usage: init-security.sh DIR}"
log() { printf '[security] %s\n' "$*" >&2; }
die() { printf '[security] ERROR: %s\n' "$*" >&2; exit 1; }
need() { command -v "$1" >/dev/null 2>&1 || die "'$1' is not installed. $2"; }
source "$HERE/../local/security.sh"
SEC="$VAR"   # the material itself lives at the top of the volume

ensure_ca
ensure_server_cert "$SEC/kafka" broker "DNS:kafka,DNS:localhost,IP:127.0.0.1"
for r in $KAFKA_ROLES; do ensure_password "$SEC/kafka" "$r"; done
ensure_clickhouse_security
# A site's blob service (infra/compose/site-store.yml): certificate for the "blobstore" service
# name, the processors' bearer token and the monitoring token. Made always; only that layout
# mounts them.
ensure_blobstore_security "DNS:blobstore,DNS:localhost,IP:127.0.0.1"
[ -s "$SEC/grafana-admin.password" ] || { _private_file "$SEC/grafana-admin.password"; openssl rand -hex 24 > "$SEC/grafana-admin.password"; }

APP_UID=10001      # the flowpipe image's user (Dockerfile)
KAFKA_UID=1000     # apache/kafka's appuser
CH_UID=101         # clickhouse/clickhouse-server's clickhouse user
GRAFANA_UID=472    # grafana/grafana's grafana user

role_dir() {  # role_dir NAME UID FILE... : a fresh directory with copies of FILEs, owned by UID
  local dir="$SEC/roles/$1" uid="$2"; shift 2
  rm -rf "$dir"; mkdir -p "$dir"
  local f; for f in "$@"; do cp "$f" "$dir/"; done
  chown -R "$uid:$uid" "$dir"; chmod 700 "$dir"; chmod 600 "$dir"/*
}

role_dir ca "$APP_UID" "$SEC/ca.crt"
for r in edge processor aggregator sink exporter; do role_dir "kafka-$r" "$APP_UID" "$SEC/kafka/$r.password"; done
role_dir kafka-admin "$APP_UID" "$SEC/kafka/admin.password"
# the provisioner (the one-shot init service) registers every role's SCRAM credentials, as the
# broker: it needs the broker key and the passwords (Kafka derives the salted form itself)
role_dir kafka-provision "$APP_UID" "$SEC/kafka/broker.pem" "$SEC"/kafka/*.password
role_dir kafka-broker "$KAFKA_UID" "$SEC/kafka/broker.pem" "$SEC/ca.crt"
for r in admin sink analyst; do role_dir "clickhouse-$r" "$APP_UID" "$SEC/clickhouse/$r.password"; done
role_dir blobstore "$APP_UID" "$SEC/blobstore/server.pem" "$SEC/blobstore/processor.token" "$SEC/blobstore/monitor.token"
role_dir blobstore-client "$APP_UID" "$SEC/blobstore/processor.token"
role_dir blobstore-monitor "$APP_UID" "$SEC/blobstore/monitor.token"
mkdir -p "$SEC/roles/clickhouse-server"
clickhouse_users_xml "$SEC/clickhouse" merge > "$SEC/roles/clickhouse-server/flowpipe-users.xml"
chown -R "$CH_UID:$CH_UID" "$SEC/roles/clickhouse-server"; chmod 700 "$SEC/roles/clickhouse-server"
chmod 600 "$SEC/roles/clickhouse-server"/*
# The replicated layout (infra/compose/clickhouse-cluster.yml): the servers' cluster secret (the
# replicas authenticate distributed queries and DDL to each other with it), interserver
# credentials for fetching parts, and the digest identity under which ClickHouse creates its
# Keeper nodes (creator-only ACLs). Made always; only the cluster layout mounts them.
ensure_password "$SEC/clickhouse-cluster" secret
ensure_password "$SEC/clickhouse-cluster" interserver
ensure_password "$SEC/clickhouse-cluster" keeper
mkdir -p "$SEC/roles/clickhouse-cluster"
_pw() { tr -d '\n' < "$SEC/clickhouse-cluster/$1.password"; }
# Mounted as the replicas' whole config.d (a directory is what a volume subpath mounts), so it
# also says what the image's own config.d did (listen on the compose network) and which replica
# the server is (FLOW_CH_REPLICA of its container).
cat > "$SEC/roles/clickhouse-cluster/flowpipe-cluster.xml" <<XML
<?xml version="1.0"?>
<clickhouse>
  <listen_host>0.0.0.0</listen_host>
  <macros><shard>01</shard><replica from_env="FLOW_CH_REPLICA"/></macros>
  <zookeeper>
    <node><host>keeper-1</host><port>9181</port></node>
    <node><host>keeper-2</host><port>9181</port></node>
    <node><host>keeper-3</host><port>9181</port></node>
    <identity>clickhouse:$(_pw keeper)</identity>
  </zookeeper>
  <distributed_ddl><path>/clickhouse/task_queue/ddl</path></distributed_ddl>
  <interserver_http_credentials><user>interserver</user><password>$(_pw interserver)</password></interserver_http_credentials>
  <remote_servers>
    <flow>
      <secret>$(_pw secret)</secret>
      <shard>
        <internal_replication>true</internal_replication>
        <replica><host>clickhouse</host><port>9000</port></replica>
        <replica><host>clickhouse-2</host><port>9000</port></replica>
      </shard>
    </flow>
  </remote_servers>
</clickhouse>
XML
chown -R "$CH_UID:$CH_UID" "$SEC/roles/clickhouse-cluster"; chmod 700 "$SEC/roles/clickhouse-cluster"
chmod 600 "$SEC/roles/clickhouse-cluster"/*
role_dir grafana "$GRAFANA_UID" "$SEC/clickhouse/analyst.password" "$SEC/grafana-admin.password"
chmod 755 "$SEC/roles"
log "security material ready in $SEC (one directory per role under roles/)"
