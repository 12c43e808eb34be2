# Security material of the local stack, created at first start. Sourced, not executed.
#
# One private CA signs the broker's certificate; every role gets its own random password. All of
# it lives in $VAR/security (0700), every file 0600: nothing is a public default, and nothing
# leaves the machine. The layout (docker-compose.yml mounts the same files per role):
#   ca.crt                      trust anchor every client pins
#   ca.key                      signs the broker certificate (stays here)
#   kafka/broker.pem            broker key + certificate chain (PEM keystore)
#   kafka/<role>.password       SCRAM-SHA-512 password of each Kafka role
#   clickhouse/<role>.password  password of each ClickHouse user
#   blobstore/server.pem        a site blob service's key + certificate chain (flowctl store serve)
#   blobstore/processor.token   the bearer token processors present to blob services
#   blobstore/monitor.token     a token for blob services' stats and metrics only (the exporter's)
SEC="$VAR/security"
KAFKA_ROLES="admin edge processor aggregator sink exporter simulator"
CLICKHOUSE_ROLES="admin sink analyst"

_private_file() {  # _private_file PATH: create empty with 0600 before anything is written to it
  ( umask 077; : > "$1" )
}

ensure_password() {  # ensure_password DIR ROLE
  local f="$1/$2.password"
  [ -s "$f" ] && return 0
  mkdir -p "$1"; chmod 700 "$1"
  _private_file "$f"
  openssl rand -hex 24 > "$f"
}

ensure_ca() {
  mkdir -p "$SEC"; chmod 700 "$SEC"
  [ -s "$SEC/ca.crt" ] && [ -s "$SEC/ca.key" ] && return 0
  need openssl "Install OpenSSL (Debian: apt-get install openssl)."
  log "creating the local certificate authority in $SEC"
  _private_file "$SEC/ca.key"
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$SEC/ca.key" 2>/dev/null
  openssl req -x509 -new -key "$SEC/ca.key" -sha256 -days 825 -subj "/CN=flowpipe local CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out "$SEC/ca.crt" 2>/dev/null
  chmod 600 "$SEC/ca.crt"
}

ensure_server_cert() {  # ensure_server_cert DIR NAME SUBJECT_ALT_NAMES -> DIR/NAME.pem (key + cert + CA)
  local dir="$1" name="$2" sans="$3"
  [ -s "$dir/$name.pem" ] && return 0
  ensure_ca
  mkdir -p "$dir"; chmod 700 "$dir"
  local tmp; tmp="$(mktemp -d)"; chmod 700 "$tmp"
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$tmp/key.pem" 2>/dev/null
  openssl req -new -key "$tmp/key.pem" -subj "/CN=$name" -out "$tmp/req.csr" 2>/dev/null
  printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth,clientAuth\nkeyUsage=critical,digitalSignature,keyAgreement\n' \
    "$sans" > "$tmp/ext.cnf"
  openssl x509 -req -in "$tmp/req.csr" -CA "$SEC/ca.crt" -CAkey "$SEC/ca.key" -CAcreateserial \
    -days 825 -sha256 -extfile "$tmp/ext.cnf" -out "$tmp/cert.pem" 2>/dev/null
  _private_file "$dir/$name.pem"
  cat "$tmp/key.pem" "$tmp/cert.pem" "$SEC/ca.crt" > "$dir/$name.pem"
  rm -rf "$tmp"
}

ensure_kafka_security() {
  ensure_ca
  ensure_server_cert "$SEC/kafka" broker "IP:127.0.0.1,DNS:localhost,DNS:kafka"
  local r; for r in $KAFKA_ROLES; do ensure_password "$SEC/kafka" "$r"; done
}

ensure_blobstore_security() {  # [SANS] a site's blob service: server certificate, processors' and monitoring tokens
  ensure_server_cert "$SEC/blobstore" server "${1:-IP:127.0.0.1,DNS:localhost}"
  local f; for f in "$SEC/blobstore/processor.token" "$SEC/blobstore/monitor.token"; do
    [ -s "$f" ] && continue
    _private_file "$f"
    openssl rand -hex 32 > "$f"
  done
}

ensure_clickhouse_security() {
  local r; for r in $CLICKHOUSE_ROLES; do ensure_password "$SEC/clickhouse" "$r"; done
}

_sha256_of() { tr -d '\n' < "$1" | sha256sum | cut -d' ' -f1; }

clickhouse_users_xml() {  # clickhouse_users_xml PASSWORD_DIR [merge] -> users.xml on stdout (hashes only)
  # "merge": a users.d file over an image's own users.xml, which it strips of its 'default' user
  # Users (18.16 has no SQL grants: users.xml profiles and allow_databases; current servers
  # accept the same file):
  #   admin    migrations, layout and parameter loading, audits, tests; every right
  #   sink     inserts and reads its own offsets; no DDL (cannot create, alter or drop); flow only
  #   analyst  read-only (readonly=2: SELECT and per-query settings such as memory limits, no
  #            INSERT, no DDL); the published databases only (flow, flow_sim of the demo)
  # There is no 'default' user: a client that names none is refused. More databases per user
  # can be granted by files in users.d/ (the tests grant their own, then remove them).
  local d="$1" drop_default=""
  [ "${2:-}" = "merge" ] && drop_default='<default remove="remove"/>'
  cat <<XML
<?xml version="1.0"?>
<yandex>
  <profiles>
    <default>
      <max_memory_usage>4000000000</max_memory_usage>
      <load_balancing>random</load_balancing>
    </default>
    <sink>
      <max_memory_usage>4000000000</max_memory_usage>
      <allow_ddl>0</allow_ddl>
    </sink>
    <analyst>
      <max_memory_usage>4000000000</max_memory_usage>
      <readonly>2</readonly>
      <allow_ddl>0</allow_ddl>
    </analyst>
  </profiles>
  <users>
    $drop_default
    <admin>
      <password_sha256_hex>$(_sha256_of "$d/admin.password")</password_sha256_hex>
      <networks><ip>::/0</ip></networks>
      <profile>default</profile>
      <quota>default</quota>
    </admin>
    <sink>
      <password_sha256_hex>$(_sha256_of "$d/sink.password")</password_sha256_hex>
      <networks><ip>::/0</ip></networks>
      <profile>sink</profile>
      <quota>default</quota>
      <allow_databases><db_flow>flow</db_flow></allow_databases>
    </sink>
    <analyst>
      <password_sha256_hex>$(_sha256_of "$d/analyst.password")</password_sha256_hex>
      <networks><ip>::/0</ip></networks>
      <profile>analyst</profile>
      <quota>default</quota>
      <allow_databases><db_flow>flow</db_flow><db_flow_sim>flow_sim</db_flow_sim></allow_databases>
    </analyst>
  </users>
  <quotas><default><interval><duration>3600</duration><queries>0</queries><errors>0</errors>
    <result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time></interval></default></quotas>
</yandex>
XML
}
