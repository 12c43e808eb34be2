# Shared helpers for the local stack scripts. Sourced, not executed.
# Everything lives under the repo: jars in .cache/, data, configs, logs and pids in .var/.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CACHE="${FLOW_CACHE_DIR:-$ROOT/.cache}"
VAR="${FLOW_VAR_DIR:-$ROOT/.var}"
KAFKA_VERSION="${FLOW_KAFKA_VERSION:-3.9.1}"
KAFKA_PORT="${FLOW_KAFKA_PORT:-19092}"
KAFKA_CONTROLLER_PORT="${FLOW_KAFKA_CONTROLLER_PORT:-19093}"
KAFKA_INTERNAL_PORT="${FLOW_KAFKA_INTERNAL_PORT:-19094}"
# SASL_SSL (default) or PLAINTEXT (explicit development option); the same variable the Python
# settings read (kafka.security_protocol).
KAFKA_SECURITY="${FLOW_KAFKA__SECURITY_PROTOCOL:-SASL_SSL}"
CH_TCP_PORT="${FLOW_CLICKHOUSE_PORT:-19000}"
CH_HTTP_PORT="${FLOW_CLICKHOUSE_HTTP_PORT:-18123}"

log() { printf '[stack] %s\n' "$*" >&2; }
die() { printf '[stack] ERROR: %s\n' "$*" >&2; exit 1; }

need() {  # need CMD "how to get it"
  command -v "$1" >/dev/null 2>&1 || die "'$1' is not installed. $2"
}

apt_install() {  # apt_install PKG... ; only when missing
  local missing=()
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  command -v apt-get >/dev/null 2>&1 || die "apt-get not found: install ${missing[*]} with your package manager."
  local sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
  log "installing Debian packages: ${missing[*]}"
  $sudo apt-get update -qq >/dev/null 2>&1 || $sudo apt-get update
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null \
    || die "apt-get install ${missing[*]} failed"
}

opencv_doc_deb() {  # prints the path of Debian's opencv-doc .deb, downloaded once into $CACHE/debs
  local dir="$CACHE/debs" f
  f="$(ls "$dir"/opencv-doc_*.deb 2>/dev/null | head -n 1)"
  if [ -z "$f" ]; then
    need apt-get "Download Debian's opencv-doc .deb by hand into $dir."
    mkdir -p "$dir"
    log "fetching opencv-doc .deb (sample footage and face images; once)"
    (cd "$dir" && apt-get download opencv-doc >/dev/null 2>&1) || {
      apt-get update -qq >/dev/null 2>&1 || true
      (cd "$dir" && apt-get download opencv-doc >/dev/null) || die "apt-get download opencv-doc failed"
    }
    f="$(ls "$dir"/opencv-doc_*.deb | head -n 1)"
  fi
  echo "$f"
}

pid_alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() {  # wait_port PORT SECONDS NAME LOGFILE
  local i=0
  while ! port_open "$1"; do
    i=$((i + 1))
    [ "$i" -gt $(($2 * 5)) ] && { tail -n 40 "$4" >&2 || true; die "$3 did not open port $1 within $2 s (log: $4)"; }
    sleep 0.2
  done
}

stop_pid() {  # stop_pid PIDFILE NAME
  if pid_alive "$1"; then
    local pid; pid="$(cat "$1")"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -9 "$pid" 2>/dev/null || true
    log "$2 stopped"
  fi
  rm -f "$1"
}
