#!/usr/bin/env bash
# The whole local stack: Kafka + ClickHouse. Usage: stack.sh up|down|status|reset
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
HERE="$(dirname "${BASH_SOURCE[0]}")"
case "${1:-}" in
  up) "$HERE/kafka.sh" up; "$HERE/clickhouse.sh" up ;;
  down) "$HERE/kafka.sh" down; "$HERE/clickhouse.sh" down ;;
  status) rc=0; "$HERE/kafka.sh" status || rc=$?; "$HERE/clickhouse.sh" status || rc=$?; exit $rc ;;
  reset) "$HERE/kafka.sh" reset; "$HERE/clickhouse.sh" reset ;;
  # the replicated ClickHouse's ZooKeeper too (chcluster.sh: the replication tests start it)
  install) "$HERE/kafka.sh" install; "$HERE/clickhouse.sh" install; "$HERE/chcluster.sh" install ;;
  *) die "usage: $0 up|down|status|reset|install" ;;
esac
