#!/usr/bin/env bash
# ClickHouse server from Debian's clickhouse-server package, run as the current user with a
# config this script generates, on loopback ports, data under .var/clickhouse.
# Usage: clickhouse.sh up|down|status|reset
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
source "$(dirname "${BASH_SOURCE[0]}")/security.sh"
CVAR="${FLOW_CLICKHOUSE_DIR:-$VAR/clickhouse}"   # one instance's directory (chcluster.sh runs several)
PIDF="$CVAR/clickhouse.pid"
LOGF="$CVAR/log/server.log"
BIN="${FLOW_CLICKHOUSE_BIN:-}"

find_bin() {
  [ -n "$BIN" ] && return 0
  for b in /usr/bin/clickhouse-server /usr/sbin/clickhouse-server /usr/bin/clickhouse; do
    [ -x "$b" ] && { BIN="$b"; return 0; }
  done
  return 1
}

install_server() {
  find_bin && return 0
  apt_install clickhouse-server clickhouse-client
  find_bin || die "clickhouse-server binary not found after install"
}

write_config() {
  mkdir -p "$CVAR/data" "$CVAR/tmp" "$CVAR/user_files" "$CVAR/log" "$CVAR/format_schemas"
  ensure_clickhouse_security
  mkdir -p "$CVAR/users.d"
  _private_file "$CVAR/users.xml"
  clickhouse_users_xml "$SEC/clickhouse" > "$CVAR/users.xml"
  cat > "$CVAR/config.xml" <<XML
<?xml version="1.0"?>
<yandex>
  <logger>
    <level>warning</level>
    <log>$CVAR/log/server.log</log>
    <errorlog>$CVAR/log/server.err.log</errorlog>
    <size>50M</size>
    <count>2</count>
  </logger>
  <listen_host>127.0.0.1</listen_host>
  <tcp_port>$CH_TCP_PORT</tcp_port>
  <http_port>$CH_HTTP_PORT</http_port>
  <max_connections>256</max_connections>
  <keep_alive_timeout>3</keep_alive_timeout>
  <max_concurrent_queries>64</max_concurrent_queries>
  <uncompressed_cache_size>268435456</uncompressed_cache_size>
  <mark_cache_size>268435456</mark_cache_size>
  <path>$CVAR/data/</path>
  <tmp_path>$CVAR/tmp/</tmp_path>
  <user_files_path>$CVAR/user_files/</user_files_path>
  <format_schema_path>$CVAR/format_schemas/</format_schema_path>
  <users_config>$CVAR/users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <timezone>UTC</timezone>
  <mlock_executable>false</mlock_executable>
  <builtin_dictionaries_reload_interval>3600</builtin_dictionaries_reload_interval>
  <max_session_timeout>3600</max_session_timeout>
  <default_session_timeout>60</default_session_timeout>
</yandex>
XML
}

up() {
  if pid_alive "$PIDF" && port_open "$CH_TCP_PORT"; then log "clickhouse already running on 127.0.0.1:$CH_TCP_PORT"; return 0; fi
  install_server
  write_config
  port_open "$CH_TCP_PORT" && die "port $CH_TCP_PORT is taken by another process; set FLOW_CLICKHOUSE_PORT"
  log "starting clickhouse ($BIN) on 127.0.0.1:$CH_TCP_PORT"
  rm -f "$PIDF"
  # exec: the server replaces the subshell, so no shell lingers holding the caller's pipes
  (cd "$CVAR" && exec "$BIN" --config-file="$CVAR/config.xml" --pidfile="$PIDF") </dev/null >"$CVAR/stdout.log" 2>&1 &
  echo $! > "$PIDF"
  wait_port "$CH_TCP_PORT" 60 clickhouse "$CVAR/stdout.log"
  log "clickhouse up"
}

stray() {  # a server of ours whose pid file was lost
  local p; p="$(pgrep -f -- "--config-file=$CVAR/config.xml" || true)"
  [ -n "$p" ] && { kill $p 2>/dev/null || true; sleep 2; kill -9 $p 2>/dev/null || true; log "stopped stray clickhouse $p"; }
  return 0
}

status() {
  if pid_alive "$PIDF" && port_open "$CH_TCP_PORT"; then echo "clickhouse: running (pid $(cat "$PIDF"), 127.0.0.1:$CH_TCP_PORT)"; return 0; fi
  echo "clickhouse: stopped"; return 3
}

case "${1:-}" in
  up) up ;;
  down) stop_pid "$PIDF" clickhouse; stray ;;
  status) status ;;
  reset) stop_pid "$PIDF" clickhouse; stray; rm -rf "$CVAR"; log "clickhouse data removed" ;;
  install) install_server ;;
  *) die "usage: $0 up|down|status|reset|install" ;;
esac
