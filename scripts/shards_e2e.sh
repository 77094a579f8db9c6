#!/usr/bin/env bash
# A shard plan end to end on an engine (issue 16): ROWS orders (default 5M) in the real
# Postgres, planned as SHARDS shards (default 8) and run by Ray on two worker hosts — network
# namespaces etlw1 and etlw2 with addresses of their own on a bridge, each reaching Postgres
# and the S3 server at 10.77.0.1 — while a shard's process and its Ray worker are killed
# mid-shard (Ray runs the task again); then one commit. Checked by psql and by DuckDB over
# S3: every row once, count and sum as the source's; one commit record, no staged file left;
# one watermark generation; shards ran on both hosts.
#   eval "$(bash scripts/services.sh env)"; ETL=target/debug/etl bash scripts/shards_e2e.sh
# Root only (ip netns). Prints one line: the figures checked, and the run's wall time.
set -euo pipefail
HERE=$(cd "$(dirname "$0")/.." && pwd)
ETL=$(realpath "${ETL:-$HERE/target/debug/etl}")
ROWS=${ROWS:-5000000}
SHARDS=${SHARDS:-8}
PY=${ETL_TEST_PYTHON:?run: eval \"\$(bash scripts/services.sh env)\"}
DPY=${ETL_TEST_DELTA_PYTHON:?}
RAY=$(dirname "$PY")/ray
HOST=10.77.0.1 BR=etlbr0 RAY_PORT=6390
WORK=$(mktemp -d)
PREFIX=shards-e2e-$$
LAKE=s3://$ETL_TEST_S3_BUCKET/$PREFIX/lake
PLANS=s3://$ETL_TEST_S3_BUCKET/$PREFIX/plans
PG_LOCAL=$ETL_TEST_PG
PG_HOST="host=$HOST port=55432 user=postgres dbname=postgres"

cleanup() (
  set +e
  for ns in etlw1 etlw2; do ip netns exec $ns "$RAY" stop --force >/dev/null 2>&1; done
  "$RAY" stop --force >/dev/null 2>&1
  [ -f "$WORK/socat.pids" ] && kill $(cat "$WORK/socat.pids") 2>/dev/null
  for ns in etlw1 etlw2; do ip netns pids $ns 2>/dev/null | xargs -r kill -9; ip netns del $ns 2>/dev/null; done
  ip link del $BR 2>/dev/null
  [ -n "${KEEP:-}" ] || rm -rf "$WORK"
)
trap cleanup EXIT
cleanup; WORK=$(mktemp -d)

# Two hosts on a bridge; the services reached at the bridge's address.
ip link add $BR type bridge && ip addr add $HOST/24 dev $BR && ip link set $BR up
for i in 1 2; do
  ns=etlw$i
  ip netns add $ns
  ip link add veth-etlw$i type veth peer name eth0 netns $ns
  ip link set veth-etlw$i master $BR up
  ip netns exec $ns ip addr add 10.77.0.1$i/24 dev eth0
  ip netns exec $ns ip link set eth0 up
  ip netns exec $ns ip link set lo up
  ip netns exec $ns ip route add default via $HOST
done
for port in 55432 9000; do
  # (A killed worker's connection makes socat say "Broken pipe": its log, not the output.)
  socat TCP-LISTEN:$port,bind=$HOST,fork,reuseaddr TCP:127.0.0.1:$port 2>>"$WORK/socat.log" &
  echo $! >> "$WORK/socat.pids"
done

# The table, and the configuration every host reads (the same path on each: one disk here).
psql "$PG_LOCAL" -v ON_ERROR_STOP=1 -q <<SQL
DROP SCHEMA IF EXISTS etl_shards_demo CASCADE;
CREATE SCHEMA etl_shards_demo;
CREATE TABLE etl_shards_demo.orders (order_id bigint PRIMARY KEY, customer_id int, product_name text,
  quantity int, price numeric(10,2), order_date date, updated_at timestamp NOT NULL);
INSERT INTO etl_shards_demo.orders
  SELECT i, i % 50000, 'product ' || (i % 500), 1 + i % 7, (i % 10000) / 100.0, date '2024-01-01' + (i % 30),
         timestamp '2024-01-01' + i * interval '1 second'
    FROM generate_series(1, $ROWS) i;
SQL
cp "$HERE/examples/shards/orders.toml" "$WORK/orders.toml"
export ETL_PG="$PG_HOST" ETL_LAKE="$LAKE" AWS_ENDPOINT_URL="http://$HOST:9000"
export AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_REGION

# The Ray cluster: the head here (no CPU: it runs no shard), a worker on each host.
export RAY_health_check_period_ms=1000 RAY_health_check_failure_threshold=3
# (A failed start says why: a stale ~/.ray/auth_token, for one, makes the head refuse workers.)
"$RAY" start --head --node-ip-address=$HOST --port=$RAY_PORT --num-cpus=0 --include-dashboard=false \
  --disable-usage-stats >"$WORK/ray-head.log" 2>&1 || { tail -5 "$WORK/ray-head.log" >&2; exit 1; }
for i in 1 2; do
  ip netns exec etlw$i "$RAY" start --address=$HOST:$RAY_PORT --node-ip-address=10.77.0.1$i --num-cpus=1 \
    --disable-usage-stats >"$WORK/ray-w$i.log" 2>&1 || { tail -5 "$WORK/ray-w$i.log" >&2; exit 1; }
done

# Kills the first shard seen running on etlw2, and the Ray worker running it, mid-shard.
kill_one() {
  for _ in $(seq 1 2400); do
    for pid in $(ip netns pids etlw2); do
      cmd=$(tr '\0' ' ' < /proc/$pid/cmdline 2>/dev/null || true)
      case $cmd in
        "$ETL shard "*)
          sleep 0.2
          parent=$(ps -o ppid= -p "$pid" | tr -d ' ')
          if kill -9 "$pid" 2>/dev/null; then
            kill -9 "$parent" 2>/dev/null || true
            idx=${cmd##*--index }
            echo "${idx%% *}" > "$WORK/killed"
            return 0
          fi;;
      esac
    done
    sleep 0.05
  done
}
kill_one &
killer=$!

t0=$(date +%s.%N)
"$PY" "$HERE/examples/shards/ray_shards.py" "$WORK/orders.toml" orders --plans "$PLANS" --shards "$SHARDS" \
  --etl "$ETL" --address "$HOST:$RAY_PORT" --env ETL_PG --env ETL_LAKE --env AWS_ENDPOINT_URL \
  --env AWS_ACCESS_KEY_ID --env AWS_SECRET_ACCESS_KEY --env AWS_REGION > "$WORK/out.json"
t1=$(date +%s.%N)
wait $killer || true
[ -s "$WORK/killed" ] || { echo "shards_e2e: no shard was killed mid-shard (did they all finish first?)" >&2; exit 1; }

# What Ray ran, what the commit said, what the lake and the watermark hold.
"$PY" - "$WORK/out.json" "$ROWS" "$SHARDS" "$(cat "$WORK/killed")" <<'PY'
import json, sys
# The last line: Ray's raylet says on the driver's stdout that a worker died.
out = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
rows, shards = int(sys.argv[2]), int(sys.argv[3])
t = out["report"]["tables"][0]
assert t["status"] == "committed" and t["written_count"] == rows and t["target_count"] == rows, t
got = sorted(s["index"] for s in out["shards"])
assert got == list(range(shards)), got
assert sum(s["rows"] for s in out["shards"]) == rows
# The killed shard's manifest is its rerun's: the kill came before the shard recorded one.
killed = [s for s in out["shards"] if s["index"] == int(sys.argv[4])]
assert killed[0]["recorded"], killed
nodes = {s["node"] for s in out["shards"]}
assert nodes == {"10.77.0.11", "10.77.0.12"}, nodes
PY
want=$(psql "$PG_LOCAL" -tAc "SELECT count(*) || ',' || count(DISTINCT order_id) || ',' || sum(price) FROM etl_shards_demo.orders")
got=$("$DPY" - "$LAKE" <<'PY'
import os, sys, duckdb, duckdb_extension_httpfs
ext = os.path.join(os.path.dirname(duckdb_extension_httpfs.__file__), "extensions", "v" + duckdb.__version__, "httpfs.duckdb_extension")
con = duckdb.connect()
con.sql(f"LOAD '{ext}'")
ep = os.environ["AWS_ENDPOINT_URL"].split("://")[1]
con.sql(f"CREATE SECRET (TYPE S3, KEY_ID '{os.environ['AWS_ACCESS_KEY_ID']}', SECRET '{os.environ['AWS_SECRET_ACCESS_KEY']}', "
        f"REGION '{os.environ['AWS_REGION']}', ENDPOINT '{ep}', URL_STYLE 'path', USE_SSL false)")
n, d, s = con.sql(f"SELECT count(*), count(DISTINCT order_id), sum(price) FROM read_parquet('{sys.argv[1]}/orders/**/*.parquet')").fetchone()
print(f"{n},{d},{s}")
PY
)
[ "$got" = "$want" ] || { echo "shards_e2e: the lake holds $got, the source $want" >&2; exit 1; }
listing=$("$PY" - "$ETL_TEST_S3_BUCKET" "$PREFIX" <<'PY'
import os, sys, boto3
s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
keys = [o["Key"] for p in s3.get_paginator("list_objects_v2").paginate(Bucket=sys.argv[1], Prefix=sys.argv[2] + "/lake/_etl/")
        for o in p.get("Contents", [])]
commits = [k for k in keys if "/_etl/commits/orders/" in k and k.endswith(".json")]
staged = [k for k in keys if "/_etl/staging/" in k]
print(len(commits), len(staged))
PY
)
[ "$listing" = "1 0" ] || { echo "shards_e2e: commit records and staged files: $listing (want 1 0)" >&2; exit 1; }
gen=$("$ETL" watermark show "$WORK/orders.toml" orders | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["watermark"]["generation"])')
[ "$gen" = 1 ] || { echo "shards_e2e: watermark generation $gen" >&2; exit 1; }
printf 'shards_e2e OK: %s rows (count, distinct keys, sum of price: %s) in %s shards on 2 hosts, shard %s killed and rerun, 1 commit, watermark generation 1, %.1f s\n' \
  "$ROWS" "$got" "$SHARDS" "$(cat "$WORK/killed")" "$(echo "$t1 - $t0" | bc)"
