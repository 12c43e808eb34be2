#!/usr/bin/env bash
# Machine prerequisites for the local stack, installed only when missing (Debian/apt):
# Java 17+ and Maven (assemble and run Kafka), python3-venv, ClickHouse, and OpenSSL (the stack's
# CA, broker certificate and role passwords: infra/local/security.sh).
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
pkgs=()
command -v java >/dev/null 2>&1 || pkgs+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || pkgs+=(maven)
python3 -c "import venv, ensurepip" >/dev/null 2>&1 || pkgs+=(python3-venv)
[ -x /usr/sbin/clickhouse-server ] || [ -x /usr/bin/clickhouse-server ] || pkgs+=(clickhouse-server clickhouse-client)
command -v dpkg-deb >/dev/null 2>&1 || pkgs+=(dpkg)
command -v openssl >/dev/null 2>&1 || pkgs+=(openssl)
[ ${#pkgs[@]} -eq 0 ] || apt_install "${pkgs[@]}"
python3 - <<'PY' || die "Python 3.11+ is required (found $(python3 --version 2>&1))"
import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)
PY
java -version 2>&1 | awk -F'"' '/version/ { split($2, v, "."); if (v[1] + 0 < 17) exit 1 }' \
  || die "Java 17+ is required for Kafka $KAFKA_VERSION (found: $(java -version 2>&1 | head -n 1))"
log "prerequisites present"
