#!/usr/bin/env bash
# Installs, starts, stops and prints the environment of the services the tests use: PostgreSQL,
# MariaDB, an S3 server (moto) and the Snowflake emulator (fakesnow). Own data dirs and
# non-default ports, so it never fights the machine's own instances. Idempotent.
#   scripts/services.sh install|start|stop|env        (runs as root on Debian 12; binds 127.0.0.1)
set -euo pipefail
SVC_DIR=${SVC_DIR:-/tmp/etl-ci-services}     # keep outside /root: initdb/mariadbd run as postgres/mysql and must traverse it
PG_PORT=${PG_PORT:-55432}; MY_PORT=${MY_PORT:-33306}; S3_PORT=${S3_PORT:-9000}; SF_PORT=${SF_PORT:-9103}
S3FS_PORT=${S3FS_PORT:-9004}; WITH_S3S_FS=${WITH_S3S_FS:-0}
PGBIN=/usr/lib/postgresql/15/bin
VENV=$SVC_DIR/venv
DELTA_VENV=$SVC_DIR/delta-venv

install() {
  local need=()
  [ -x $PGBIN/postgres ] || need+=(postgresql)
  [ -x /usr/sbin/mariadbd ] || need+=(mariadb-server)
  command -v curl >/dev/null || need+=(curl)
  command -v socat >/dev/null || need+=(socat)
  if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
  fi
  mkdir -p "$SVC_DIR"
  if [ ! -x "$VENV/bin/fakesnow" ] || [ ! -x "$VENV/bin/moto_server" ] || ! "$VENV/bin/python" -c 'import duckdb' 2>/dev/null; then
    python3 -m venv "$VENV"
    # snowflake-connector-python 5.x removed snowflake.connector.converter, which fakesnow 0.12.1 imports
    "$VENV/bin/pip" install -q 'fakesnow[server]==0.12.1' 'snowflake-connector-python>=4.8,<5' 'moto[server]==5.2.5' 'duckdb~=2.0.0'
  fi
  patch_fakesnow >/dev/null
  # The engine the shard plans' end-to-end run uses (scripts/shards_e2e.sh).
  "$VENV/bin/python" -c 'import ray' 2>/dev/null || "$VENV/bin/pip" install -q 'ray==2.60.0'
  command -v ip >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iproute2; }
  # The Delta readers no one here wrote: the deltalake Python package (delta-rs's Python
  # side), and DuckDB's delta extension, which PyPI carries only for DuckDB 1.5 (the
  # extension server is out of reach here): a venv of their own.
  if ! "$DELTA_VENV/bin/python" -c 'import deltalake, duckdb_extension_delta, duckdb_extension_httpfs' 2>/dev/null; then
    python3 -m venv "$DELTA_VENV"
    "$DELTA_VENV/bin/pip" install -q 'deltalake==1.6.6' 'pyarrow>=20' 'pandas' 'duckdb==1.5.5' \
      'duckdb-extension-delta==1.5.5' 'duckdb-extension-httpfs==1.5.5'
  fi
  if [ "$WITH_S3S_FS" = 1 ] && ! command -v s3s-fs >/dev/null; then
    cargo install s3s-fs --version 0.14.1 --features binary --locked   # >=0.15 needs rustc 1.96
  fi
}

# fakesnow 0.12.1 records a 'None' comment in its _fs_global database for every CREATE TABLE
# with properties (TEMPORARY, TRANSIENT), and its MERGE creates a temporary table: inside a
# transaction DuckDB then refuses the write to a second database ("Attempting to write to
# database _fs_global in a transaction that has already modified database …"), so Snowflake's
# MERGE INTO inside BEGIN … COMMIT failed on the emulator only. The patch records a comment
# only when the statement has one. Prints "patched" when it changed the file.
patch_fakesnow() {
  "$VENV/bin/python" - <<'PY'
import pathlib, fakesnow.transforms.transforms as t
p = pathlib.Path(t.__file__)
s = p.read_text()
old = '            new.args["table_comment"] = (table, comment)\n'
new = '            if comment is not None:  # etl: patched, see scripts/services.sh\n    ' + old
if new not in s:
    assert s.count(old) == 1, "fakesnow's extract_comment_on_table changed: review the patch"
    p.write_text(s.replace(old, new))
    print("patched")
PY
}

wait_for() { # name, command...
  local name=$1; shift
  for _ in $(seq 1 120); do if "$@" >/dev/null 2>&1; then echo "$name ready"; return 0; fi; sleep 0.5; done
  echo "$name did not become ready" >&2; return 1
}

# A private CA and a certificate for 127.0.0.1/localhost, so both databases also speak TLS.
certs() {
  local d=$SVC_DIR/tls
  [ -f $d/my.key ] && return 0
  mkdir -p $d
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=etl test CA" \
    -keyout $d/ca.key -out $d/ca.pem >/dev/null 2>&1
  openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" -keyout $d/server.key -out $d/server.csr >/dev/null 2>&1
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n' >$d/ext.cnf
  openssl x509 -req -in $d/server.csr -CA $d/ca.pem -CAkey $d/ca.key -CAcreateserial -days 3650 \
    -extfile $d/ext.cnf -out $d/server.pem >/dev/null 2>&1
  chmod 755 $d; chmod 644 $d/*.pem
  cp $d/server.key $d/pg.key && chown postgres:postgres $d/pg.key && chmod 600 $d/pg.key
  cp $d/server.key $d/my.key && chown mysql:mysql $d/my.key && chmod 600 $d/my.key
}

start() {
  mkdir -p "$SVC_DIR"
  certs
  local pg=$SVC_DIR/pg                                   # PostgreSQL 15 (initdb refuses root)
  if [ ! -f $pg/data/PG_VERSION ]; then
    mkdir -p $pg && chown postgres:postgres $pg
    runuser -u postgres -- $PGBIN/initdb -D $pg/data -A trust -U postgres >/dev/null
  fi
  pg_isready -q -h 127.0.0.1 -p $PG_PORT || runuser -u postgres -- $PGBIN/pg_ctl -D $pg/data -l $pg/log -w -o \
    "-p $PG_PORT -k $pg -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off" start >/dev/null
  wait_for postgres pg_isready -h 127.0.0.1 -p $PG_PORT
  if ! psql "host=127.0.0.1 port=$PG_PORT user=postgres sslmode=require" -tAc 'SELECT 1' >/dev/null 2>&1; then  # no restart
    psql -h 127.0.0.1 -p $PG_PORT -U postgres -q -c "ALTER SYSTEM SET ssl_cert_file = '$SVC_DIR/tls/server.pem'" \
      -c "ALTER SYSTEM SET ssl_key_file = '$SVC_DIR/tls/pg.key'" -c "ALTER SYSTEM SET ssl = on" -c "SELECT pg_reload_conf()"
  fi
  local my=$SVC_DIR/mysql                                # MariaDB, root with empty password over TCP
  if [ ! -d $my/data/mysql ]; then
    mkdir -p $my && chown mysql:mysql $my
    mariadb-install-db --user=mysql --datadir=$my/data --auth-root-authentication-method=normal --skip-test-db >/dev/null
  fi
  # A server started before it had TLS is restarted with it.
  if mariadb --no-defaults -h 127.0.0.1 -P $MY_PORT -u root -e 'SELECT 1' >/dev/null 2>&1 &&
     [ "$(mariadb --no-defaults -h 127.0.0.1 -P $MY_PORT -u root -N -e "SELECT @@have_ssl")" != YES ]; then
    start-stop-daemon --stop --oknodo --retry 30 --pidfile $my/ssd.pid >/dev/null || true
  fi
  start-stop-daemon --start --oknodo --background --make-pidfile --pidfile $my/ssd.pid --exec /usr/sbin/mariadbd -- \
    --no-defaults --user=mysql --datadir=$my/data --port=$MY_PORT --bind-address=127.0.0.1 \
    --socket=$my/mysqld.sock --pid-file=$my/mysqld.pid --log-error=$my/err.log --innodb-flush-log-at-trx-commit=0 \
    --ssl-ca=$SVC_DIR/tls/ca.pem --ssl-cert=$SVC_DIR/tls/server.pem --ssl-key=$SVC_DIR/tls/my.key
  wait_for mariadb mariadb --no-defaults -h 127.0.0.1 -P $MY_PORT -u root -e 'SELECT 1'
  curl -sf http://127.0.0.1:$S3_PORT/moto-api/ >/dev/null ||
    { nohup "$VENV/bin/moto_server" -H 127.0.0.1 -p $S3_PORT >$SVC_DIR/moto.log 2>&1 & echo $! >$SVC_DIR/moto.pid; }
  wait_for moto curl -sf http://127.0.0.1:$S3_PORT/moto-api/
  curl -sf -X PUT http://127.0.0.1:$S3_PORT/etl-test >/dev/null      # bucket
  if [ "$WITH_S3S_FS" = 1 ]; then
    mkdir -p $SVC_DIR/s3fs/etl-test
    nohup s3s-fs --host 127.0.0.1 --port $S3FS_PORT --access-key testkey --secret-key testsecret $SVC_DIR/s3fs >$SVC_DIR/s3fs.log 2>&1 & echo $! >$SVC_DIR/s3fs.pid
    wait_for s3s-fs curl -s -o /dev/null http://127.0.0.1:$S3FS_PORT/
  fi
  # An emulator started before the patch is restarted with it.
  if [ "$(patch_fakesnow)" = patched ] && [ -f $SVC_DIR/fakesnow.pid ]; then
    kill "$(cat $SVC_DIR/fakesnow.pid)" 2>/dev/null || true; rm -f $SVC_DIR/fakesnow.pid; sleep 1
  fi
  [ "$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:$SF_PORT/)" = 404 ] ||
    { nohup "$VENV/bin/fakesnow" -s --host 127.0.0.1 -p $SF_PORT >$SVC_DIR/fakesnow.log 2>&1 & echo $! >$SVC_DIR/fakesnow.pid; }
  wait_for fakesnow sh -c "curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:$SF_PORT/ | grep -q 404"
}

stop() {
  local f
  for f in fakesnow s3fs moto; do [ -f $SVC_DIR/$f.pid ] && kill "$(cat $SVC_DIR/$f.pid)" 2>/dev/null || true; rm -f $SVC_DIR/$f.pid; done
  [ -f $SVC_DIR/mysql/ssd.pid ] && start-stop-daemon --stop --oknodo --retry 30 --pidfile $SVC_DIR/mysql/ssd.pid >/dev/null || true
  [ -d $SVC_DIR/pg/data ] && runuser -u postgres -- $PGBIN/pg_ctl -D $SVC_DIR/pg/data -m fast -w stop >/dev/null 2>&1 || true
}

env_() {
  cat <<EOV
export ETL_TEST_PG="host=127.0.0.1 port=$PG_PORT user=postgres dbname=postgres"
export ETL_TEST_MYSQL="mysql://root@127.0.0.1:$MY_PORT/"
export ETL_TEST_S3_ENDPOINT="http://127.0.0.1:$S3_PORT" ETL_TEST_S3_BUCKET=etl-test AWS_ACCESS_KEY_ID=testkey AWS_SECRET_ACCESS_KEY=testsecret AWS_REGION=us-east-1
export ETL_TEST_SNOWFLAKE_URL="http://127.0.0.1:$SF_PORT"
export ETL_TEST_PYTHON="$VENV/bin/python"
export ETL_TEST_DELTA_PYTHON="$DELTA_VENV/bin/python"
export ETL_TEST_TLS_CA="$SVC_DIR/tls/ca.pem"
EOV
}
case "${1:-}" in install) install ;; start) start ;; stop) stop ;; env) env_ ;; *) echo "usage: $0 install|start|stop|env" >&2; exit 2 ;; esac
