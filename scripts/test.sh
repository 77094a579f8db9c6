#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs and starts the services the tests need
# (scripts/services.sh), then runs every test against them, the doctests, and the
# quickstart read back by DuckDB.
#
#   bash scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/services.sh install
bash scripts/services.sh start
eval "$(bash scripts/services.sh env)"
command -v cargo-nextest >/dev/null || cargo install cargo-nextest --locked

cargo nextest run --workspace --all-features --no-fail-fast
cargo test --workspace --all-features --doc

# The quickstart, twice on one lake, then every row checked through DuckDB's Hive reader. The
# first run has ETL_FAILPOINT set: a build without the `failpoints` feature ignores it.
lake=$(mktemp -d)/lake
ETL_FAILPOINT=after_stage cargo run --quiet --example quickstart -- "$lake" >"$lake.1.jsonl"
cargo run --quiet --example quickstart -- "$lake" >"$lake.2.jsonl"
grep -c '"status":"no_new_data"' "$lake.2.jsonl" | grep -qx 2 || { echo "second quickstart run wrote data" >&2; exit 1; }
"$ETL_TEST_PYTHON" scripts/check_quickstart.py "$lake"

# The seed's CSV → Redshift walkthrough, Postgres standing in for Redshift (the Redshift
# sink's statements, the staged Parquet loaded by COPY FROM STDIN): one row per key,
# customer 15's later row, and no staged file left.
psql "$ETL_TEST_PG" -qc "DROP SCHEMA IF EXISTS etl_demo CASCADE" 2>/dev/null
landing=$(mktemp -d)/landing
ETL_WAREHOUSE="$ETL_TEST_PG" cargo run --quiet --features redshift --example s3_csv_to_redshift -- "$landing" >/dev/null
got=$(psql "$ETL_TEST_PG" -tAc "SELECT count(*) || ',' || count(DISTINCT customer_id) || ',' ||
  (SELECT email FROM etl_demo.customers WHERE customer_id = 15) FROM etl_demo.customers")
[ "$got" = "15,15,leslie@example.com" ] || { echo "s3_csv_to_redshift: got $got" >&2; exit 1; }
[ -z "$(find "$landing/_staging" -type f 2>/dev/null)" ] || { echo "s3_csv_to_redshift: staged files left" >&2; exit 1; }
echo "s3_csv_to_redshift OK: $got"

# Every row accounted for: a first --demo run loads 100 items; the second deletes one at the
# source and damages two rows of the warehouse, and the run deletes the one and repairs the two.
psql "$ETL_TEST_PG" -qc "DROP SCHEMA IF EXISTS etl_trust CASCADE; DROP SCHEMA IF EXISTS etl_trust_wh CASCADE" 2>/dev/null
state=$(mktemp -d)
ETL_PG="$ETL_TEST_PG" cargo run --quiet --features postgres --example postgres_trust -- "$state" --demo >/dev/null 2>&1
ETL_PG="$ETL_TEST_PG" cargo run --quiet --features postgres --example postgres_trust -- "$state" --demo >"$state/2.json"
got=$(python3 -c 'import json,sys; t=json.load(open(sys.argv[1]))["tables"][0]; r=t["reconciliation"]; print(t["keys"]["deleted_at_source"], r["status"], r["missing_in_target"], r["changed_in_target"], t["target_count"])' "$state/2.json")
want=$(psql "$ETL_TEST_PG" -tAc "SELECT count(*) FROM (SELECT * FROM etl_trust.items EXCEPT SELECT * FROM etl_trust_wh.items) d")
[ "$got" = "1 repaired 1 1 99" ] && [ "$want" = "0" ] || { echo "postgres_trust: got $got, $want rows unlike" >&2; exit 1; }
echo "postgres_trust OK: $got"

# The crawl example on the quickstart's lake: a second --demo run lands a file with a new
# column; the crawl reads only its footer and shows schema version 2; every DDL line ends a
# statement with `;`.
cargo run --quiet --example crawl_lake -- "$lake" --demo >/dev/null
out=$(cargo run --quiet --example crawl_lake -- "$lake" --demo)
echo "$out" | grep -q '^-- 4 tables, 1 Parquet footers read, 0 CSV/JSON files sampled$' || { echo "crawl_lake: $out" >&2; exit 1; }
echo "$out" | grep -q 'schema version 2: added `score` Float64' || { echo "crawl_lake: $out" >&2; exit 1; }
echo "$out" | grep -q '^--   spent: Decimal128(38, 2)$' || { echo "crawl_lake: $out" >&2; exit 1; }
[ "$(echo "$out" | grep -c '^CREATE EXTERNAL TABLE')" = 4 ] || { echo "crawl_lake: $out" >&2; exit 1; }
echo "crawl_lake OK"

# The example configurations, run by the etl command (built by the tests above): the Glue job
# with its join into a lake, twice, read back by DuckDB; the framework table into the Redshift
# stand-in, day 1 then day 2, read back by psql.
etl_bin="${CARGO_TARGET_DIR:-target}/debug/etl"
[ -x "$etl_bin" ] || cargo build --quiet --all-features --bin etl
cfg=$(mktemp -d)
psql "$ETL_TEST_PG" -q -v ON_ERROR_STOP=1 -c "DROP SCHEMA IF EXISTS etl_cfg_demo CASCADE; CREATE SCHEMA etl_cfg_demo;
  CREATE TABLE etl_cfg_demo.customers (customer_id int PRIMARY KEY, name text, updated_at timestamp NOT NULL);
  CREATE TABLE etl_cfg_demo.orders (order_id int PRIMARY KEY, customer_id int, product_name text, quantity int,
    price numeric(10,2), order_date date, updated_at timestamp NOT NULL);
  INSERT INTO etl_cfg_demo.customers VALUES (1, 'Ada', '2025-07-01'), (2, 'Alan', '2025-07-01');
  INSERT INTO etl_cfg_demo.orders VALUES (1, 1, 'Widget', 2, 9.99, '2025-07-22', '2025-07-22 08:00'),
    (2, 2, 'Gadget', 1, 24.50, '2025-07-23', '2025-07-23 09:30');"
ETL_PG="$ETL_TEST_PG" ETL_LAKE="$cfg/lake" "$etl_bin" run examples/config/glue_job.toml >"$cfg/1.json"
ETL_PG="$ETL_TEST_PG" ETL_DELTA="$cfg/delta" "$etl_bin" run examples/config/delta_upsert.toml >"$cfg/d1.json"
psql "$ETL_TEST_PG" -q -v ON_ERROR_STOP=1 -c "UPDATE etl_cfg_demo.customers SET name = 'Ada+', updated_at = '2025-07-24' WHERE customer_id = 1;
  INSERT INTO etl_cfg_demo.orders VALUES (3, 2, 'Gizmo', 3, 3.75, '2025-07-24', '2025-07-24 10:00');"
ETL_PG="$ETL_TEST_PG" ETL_LAKE="$cfg/lake" "$etl_bin" run examples/config/glue_job.toml >"$cfg/2.json"
ETL_PG="$ETL_TEST_PG" ETL_DELTA="$cfg/delta" "$etl_bin" run examples/config/delta_upsert.toml >"$cfg/d2.json"
got=$(python3 -c 'import json,sys; print(*[json.load(open(f))["tables"][0]["written_count"] for f in sys.argv[1:]])' "$cfg/1.json" "$cfg/2.json")
lake_rows=$("$ETL_TEST_PYTHON" -c "import duckdb,sys; print(*duckdb.sql(\"SELECT count(*), count(DISTINCT order_id), max(customer_name) FILTER (WHERE order_id = 1 AND changed_at > '2025-07-23') FROM read_parquet('\" + sys.argv[1] + \"/orders_enriched/**/*.parquet')\").fetchall()[0])" "$cfg/lake")
[ "$got" = "2 2" ] && [ "$lake_rows" = "4 3 Ada+" ] && [ -d "$cfg/lake/_etl/catalog" ] || { echo "glue_job.toml: written $got, lake $lake_rows" >&2; exit 1; }
echo "glue_job.toml OK: written $got, lake rows $lake_rows"
# The same join merged into a Delta table: one row per order (order 1 with its renamed
# customer), read by the deltalake package and by DuckDB's delta_scan; version 0 (the first
# run) still holds the first day.
delta=$("$ETL_TEST_DELTA_PYTHON" - "$cfg/delta/orders_current" <<'PY'
import os, sys, duckdb, duckdb_extension_delta
from deltalake import DeltaTable
uri = sys.argv[1]
now = sorted((r["order_id"], r["customer_name"]) for r in DeltaTable(uri).to_pyarrow_table().to_pylist())
then = sorted((r["order_id"], r["customer_name"]) for r in DeltaTable(uri, version=0).to_pyarrow_table().to_pylist())
ext = os.path.join(os.path.dirname(duckdb_extension_delta.__file__), "extensions", "v" + duckdb.__version__, "delta.duckdb_extension")
con = duckdb.connect(); con.sql(f"LOAD '{ext}'")
duck = con.sql(f"SELECT count(*), count(DISTINCT order_id), max(customer_name) FILTER (WHERE order_id = 1) FROM delta_scan('{uri}')").fetchall()[0]
print(now, then, duck, len(DeltaTable(uri).history()))
PY
)
[ "$delta" = "[(1, 'Ada+'), (2, 'Alan'), (3, 'Alan')] [(1, 'Ada'), (2, 'Alan')] (3, 3, 'Ada+') 2" ] \
  && [ -d "$cfg/delta/orders_current/customer_id=1" ] \
  && grep -q '"format": *"Delta"' "$cfg"/delta/_etl/catalog/orders_current/*.json || { echo "delta_upsert.toml: $delta" >&2; exit 1; }
echo "delta_upsert.toml OK: $delta"
# The same Glue job across two databases (source kind `sql`, DataFusion): the Postgres orders
# joined to customers in MariaDB; a customer renamed in MariaDB re-emits both their orders.
my_port=$(echo "$ETL_TEST_MYSQL" | sed -E 's#.*:([0-9]+)/.*#\1#')
my() { mariadb --no-defaults -h 127.0.0.1 -P "$my_port" -u root -e "$1"; }
my "DROP DATABASE IF EXISTS etl_cfg_crm; CREATE DATABASE etl_cfg_crm;
  CREATE TABLE etl_cfg_crm.customers (customer_id int PRIMARY KEY, name varchar(50), updated_at datetime(6) NOT NULL);
  INSERT INTO etl_cfg_crm.customers VALUES (1, 'Ada', '2025-07-01'), (2, 'Alan', '2025-07-01');"
across() { ETL_PG="$ETL_TEST_PG" ETL_MYSQL="${ETL_TEST_MYSQL%/}/etl_cfg_crm" ETL_LAKE="$cfg/across" "$etl_bin" run examples/config/glue_job_sql.toml; }
across >"$cfg/a1.json"
my "UPDATE etl_cfg_crm.customers SET name = 'Alan T.', updated_at = '2025-07-25' WHERE customer_id = 2"
across >"$cfg/a2.json"
got=$(python3 -c 'import json,sys; print(*[json.load(open(f))["tables"][0]["written_count"] for f in sys.argv[1:]])' "$cfg/a1.json" "$cfg/a2.json")
lake_rows=$("$ETL_TEST_PYTHON" -c "import duckdb,sys; print(*duckdb.sql(\"SELECT count(*), count(DISTINCT order_id), string_agg(DISTINCT customer_name, ',' ORDER BY customer_name), max(customer_name) FILTER (WHERE order_id = 3 AND changed_at = '2025-07-25') FROM read_parquet('\" + sys.argv[1] + \"/orders_enriched/**/*.parquet')\").fetchall()[0])" "$cfg/across")
[ "$got" = "3 2" ] && [ "$lake_rows" = "5 3 Ada,Alan,Alan T. Alan T." ] || { echo "glue_job_sql.toml: written $got, lake $lake_rows" >&2; exit 1; }
echo "glue_job_sql.toml OK: written $got, lake rows $lake_rows"
psql "$ETL_TEST_PG" -qc "DROP SCHEMA IF EXISTS etl_cfg_crm CASCADE" 2>/dev/null
mkdir -p "$cfg/landing/customers"
printf 'customer_id,email,updated_at\n1,a@x.org,2025-07-01 00:00:00\n2,b@x.org,2025-07-01 00:00:00\n3,c@x.org,2025-07-01 00:00:00\n' >"$cfg/landing/customers/day1.csv"
crm() { ETL_LANDING="$cfg/landing" ETL_WAREHOUSE="$ETL_TEST_PG" ETL_STAGING="$cfg/staging" "$etl_bin" run examples/config/csv_to_redshift.toml; }
crm >"$cfg/crm1.json"
printf 'customer_id,email,updated_at\n4,late@x.org,2025-07-02 09:00:00\n2,b2@x.org,2025-07-02 00:00:00\n4,early@x.org,2025-07-02 08:00:00\n' >"$cfg/landing/customers/day2.csv"
crm >"$cfg/crm2.json"
got=$(psql "$ETL_TEST_PG" -tAc "SELECT count(*) || ',' || string_agg(email, ',' ORDER BY customer_id) FROM etl_cfg_crm.dim_customers")
rec=$(python3 -c 'import json,sys; t=json.load(open(sys.argv[1]))["tables"][0]; print(t["status"], t["reconciliation"]["status"])' "$cfg/crm2.json")
[ "$got" = "4,a@x.org,b2@x.org,c@x.org,late@x.org" ] && [ "$rec" = "committed reconciled" ] || { echo "csv_to_redshift.toml: got $got, $rec" >&2; exit 1; }
echo "csv_to_redshift.toml OK: $got, $rec"

# The seed's Snowflake framework: MariaDB into the Snowflake emulator, its secrets from SSM and
# its figures into CloudWatch (moto), day 1 then day 2 with an --OBJ override; Snowflake read
# back with snowflake-connector-python, CloudWatch with boto3.
my "DROP DATABASE IF EXISTS etl_cfg_sales; CREATE DATABASE etl_cfg_sales; USE etl_cfg_sales;
  CREATE TABLE customers (customer_id int PRIMARY KEY, name varchar(50), updated_at datetime(6) NOT NULL);
  CREATE TABLE orders (order_id int PRIMARY KEY, customer_id int, amount decimal(10,2), order_date date,
    updated_at datetime(6) NOT NULL);
  CREATE TABLE order_events (event_id int PRIMARY KEY, order_id int, kind varchar(20), event_at datetime(6) NOT NULL);
  CREATE TABLE products (product_id int PRIMARY KEY, name varchar(50), price decimal(10,2));
  CREATE TABLE regions (region_id int PRIMARY KEY, name varchar(50));
  CREATE TABLE inventory (product_id int PRIMARY KEY, on_hand int);
  INSERT INTO customers VALUES (1, 'Ada', '2025-07-01'), (2, 'Alan', '2025-07-01');
  INSERT INTO orders VALUES (1, 1, 9.99, CURRENT_DATE - INTERVAL 2 DAY, '2025-07-02'), (2, 2, 24.50, '2025-01-05', '2025-07-03');
  INSERT INTO order_events VALUES (1, 1, 'placed', '2025-07-02'), (2, 2, 'placed', '2025-07-03');
  INSERT INTO products VALUES (1, 'Widget', 9.99), (2, 'Gadget', 24.50);
  INSERT INTO regions VALUES (1, 'EU'), (2, 'US');
  INSERT INTO inventory VALUES (1, 10), (2, 5);"
sf_db="ETL_SALES_$$"
"$ETL_TEST_PYTHON" - "$ETL_TEST_MYSQL" <<'PY'
import boto3, os, sys
ssm = boto3.client("ssm", endpoint_url=os.environ["ETL_TEST_S3_ENDPOINT"], region_name=os.environ["AWS_REGION"])
ssm.put_parameter(Name="/etl/sales/mysql_url", Value=sys.argv[1].rstrip("/") + "/etl_cfg_sales", Type="String", Overwrite=True)
ssm.put_parameter(Name="/etl/sales/snowflake_password", Value="sf-pw-never-printed", Type="SecureString", Overwrite=True)
PY
sales() { AWS_ENDPOINT_URL="$ETL_TEST_S3_ENDPOINT" SNOWFLAKE_ACCOUNT=etl SNOWFLAKE_EMULATOR="$ETL_TEST_SNOWFLAKE_URL" \
  ETL_STAGING="$cfg/sf_staging" "$etl_bin" run "$cfg/sales.toml" "$@"; }
sed -e "s/database = \"ANALYTICS\"/database = \"$sf_db\"/" -e "s#\"ETL/Sales\"#\"ETL/Sales/$sf_db\"#" \
  examples/config/snowflake_framework.toml >"$cfg/sales.toml"
sales >"$cfg/sales1.json" 2>"$cfg/sales1.log"
my "USE etl_cfg_sales; UPDATE customers SET name = 'Ada L.', updated_at = '2025-07-05' WHERE customer_id = 1;
  UPDATE orders SET amount = 10.99 WHERE order_id = 1;
  INSERT INTO orders VALUES (3, 2, 3.75, '2025-07-06', '2025-07-06');
  INSERT INTO order_events VALUES (3, 1, 'shipped', '2025-07-06');
  DELETE FROM products WHERE product_id = 2; INSERT INTO products VALUES (3, 'Gizmo', 3.75);
  UPDATE regions SET name = 'Europe' WHERE region_id = 1;
  UPDATE inventory SET on_hand = 7 WHERE product_id = 1;"
sales --OBJ '{"regions":"TRUNCATE_INSERT"}' -vvv >"$cfg/sales2.json" 2>"$cfg/sales2.log"
! grep -q "sf-pw-never-printed" "$cfg"/sales*.json "$cfg"/sales*.log || { echo "snowflake_framework.toml: the password was printed" >&2; exit 1; }
got=$("$ETL_TEST_PYTHON" - "$ETL_TEST_SNOWFLAKE_URL" "$sf_db" "$cfg/sales2.json" <<'PY'
import json, sys, urllib.parse
import snowflake.connector
u = urllib.parse.urlparse(sys.argv[1])
c = snowflake.connector.connect(user="etl", password="x", account="etl", host=u.hostname, port=u.port,
                                protocol=u.scheme, database=sys.argv[2])
q = lambda sql: c.cursor().execute(sql).fetchall()
print("customers", q("SELECT customer_id, name FROM sales.dim_customers ORDER BY 1"))
print("orders", [(i, str(a)) for i, a in q("SELECT order_id, amount FROM sales.fact_orders ORDER BY 1")])
print("events", q("SELECT event_id, kind FROM sales.order_events ORDER BY 1"))
print("products", q("SELECT product_id, name FROM sales.products ORDER BY 1"))
print("regions", q("SELECT region_id, name FROM sales.regions ORDER BY 1"))
print("inventory", q("SELECT product_id, on_hand, count(*) OVER () FROM sales.inventory_history ORDER BY etl_processed_at, 1"))
r = {t["table"]: t for t in json.load(open(sys.argv[3]))["tables"]}
print("day2", {k: (t["mode"], t["written_count"]) for k, t in sorted(r.items())})
PY
)
want="customers [(1, 'Ada L.'), (2, 'Alan')]
orders [(1, '10.99'), (2, '24.50'), (3, '3.75')]
events [(1, 'placed'), (2, 'placed'), (3, 'shipped')]
products [(1, 'Widget'), (3, 'Gizmo')]
regions [(1, 'Europe'), (2, 'US')]
inventory [(1, 10, 4), (2, 5, 4), (1, 7, 4), (2, 5, 4)]
day2 {'customers': ('UPSERT', 1), 'inventory': ('APPEND', 2), 'order_events': ('INCREMENTAL', 1), 'orders': ('UPSERT', 2), 'products': ('TRUNCATE_INSERT', 2), 'regions': ('TRUNCATE_INSERT', 2)}"
[ "$got" = "$want" ] || { printf 'snowflake_framework.toml: got\n%s\nwant\n%s\n' "$got" "$want" >&2; exit 1; }
metrics=$("$ETL_TEST_PYTHON" - "ETL/Sales/$sf_db" <<'PY'
import boto3, os, sys
cw = boto3.client("cloudwatch", endpoint_url=os.environ["ETL_TEST_S3_ENDPOINT"], region_name=os.environ["AWS_REGION"])
dims = [{"Name": "Pipeline", "Value": "sales_to_snowflake"}, {"Name": "Table", "Value": "customers"}]
s = cw.get_metric_statistics(Namespace=sys.argv[1], MetricName="TargetCount", Dimensions=dims,
                             StartTime="2020-01-01", EndTime="2100-01-01", Period=86400 * 365 * 80, Statistics=["Maximum", "SampleCount"])
print([(p["Maximum"], p["SampleCount"]) for p in s["Datapoints"]])
PY
)
[ "$metrics" = "[(2.0, 2.0)]" ] || { echo "snowflake_framework.toml: CloudWatch TargetCount of customers: $metrics" >&2; exit 1; }
echo "snowflake_framework.toml OK: six tables in five modes, --OBJ honoured, TargetCount $metrics"

# The daily workflow, one round at a time: day 1 in full, then day 2 incrementally; the join
# sees every order once (12 after day 2), the crawl catalogues the three tables, and every
# job's attempt is in the run history.
wf=$(mktemp -d)/lake
out1=$(cargo run --quiet --example daily_workflow -- "$wf" "cron(0 2 * * ? *)" --once 2>/dev/null)
out2=$(cargo run --quiet --example daily_workflow -- "$wf" "cron(0 2 * * ? *)" --once 2>/dev/null)
echo "$out1" | grep -q '^join  *Succeeded  *8 orders joined to their customers$' || { echo "daily_workflow: $out1" >&2; exit 1; }
echo "$out2" | grep -q '^extract_orders  *Succeeded  *1 tables, 5 rows written$' || { echo "daily_workflow: $out2" >&2; exit 1; }
echo "$out2" | grep -q '^join  *Succeeded  *12 orders joined to their customers$' || { echo "daily_workflow: $out2" >&2; exit 1; }
echo "$out2" | grep -q '^crawl  *Succeeded  *3 tables' || { echo "daily_workflow: $out2" >&2; exit 1; }
[ "$(ls "$wf/_etl/runs/join" | wc -l)" = 2 ] || { echo "daily_workflow: run history" >&2; exit 1; }
echo "daily_workflow OK"

# A shard plan on an engine: 5M orders in 8 shards run by Ray on two hosts of their own
# (network namespaces), one shard killed mid-shard and rerun by Ray, one commit into a lake
# on the S3 server; checked by psql, DuckDB and boto3 (scripts/shards_e2e.sh says what).
ETL="$etl_bin" bash scripts/shards_e2e.sh

# A plan of a whole pipeline on Ray (a local instance): two tables, one without an integer key
# (one shard of it whole), their shards numbered together and run as one set of Ray tasks,
# then one commit per table; read back by DuckDB.
psql "$ETL_TEST_PG" -q -v ON_ERROR_STOP=1 -c "DROP SCHEMA IF EXISTS etl_raypipe CASCADE; CREATE SCHEMA etl_raypipe;
  CREATE TABLE etl_raypipe.orders (order_id bigint PRIMARY KEY, amount numeric(10,2), updated_at timestamp NOT NULL);
  INSERT INTO etl_raypipe.orders SELECT i, i * 1.5, timestamp '2025-01-01' + i * interval '1 s' FROM generate_series(1, 10000) i;
  CREATE TABLE etl_raypipe.notes (label text, n int);
  INSERT INTO etl_raypipe.notes SELECT 'n' || i, i FROM generate_series(1, 7) i;"
rp=$(mktemp -d)
cat > "$rp/etl.toml" <<TOML
name = "raypipe"
source = { kind = "postgres", url = "\${env:ETL_TEST_PG}" }
sink = { kind = "lake", location = "$rp/lake" }

[[tables]]
name = "orders"
from = "etl_raypipe.orders"
mode = "INCREMENTAL"
primary_key = "order_id"
cursor = "updated_at"

[[tables]]
name = "notes"
from = "etl_raypipe.notes"
mode = "FULL"
TOML
adapter=$PWD/examples/shards/ray_shards.py etl_abs=$(realpath "$etl_bin")
# (RAY_AUTH_MODE: a local instance otherwise writes ~/.ray/auth_token, which the next run's
# cluster of scripts/shards_e2e.sh then demands of its workers.)
(cd "$rp" && RAY_AUTH_MODE=disabled "$ETL_TEST_PYTHON" "$adapter" etl.toml --plans "$rp/plans" --shards 3 \
  --etl "$etl_abs" --address local --env ETL_TEST_PG >"$rp/out.json" 2>"$rp/err.log") \
  || { cat "$rp/err.log" >&2; echo "ray pipeline plan failed" >&2; exit 1; }
got=$("$ETL_TEST_PYTHON" -c "
import json, sys, duckdb
d = json.load(open(sys.argv[1]))
n = lambda t: duckdb.sql(f\"SELECT count(*), count(DISTINCT {t[1]}) FROM read_parquet('{sys.argv[2]}/{t[0]}/**/*.parquet')\").fetchall()[0]
print(d['plan']['shards'], sorted(s['index'] for s in d['shards']), [(t['table'], t['status']) for t in d['report']['tables']],
      n(('orders', 'order_id')), n(('notes', 'n')))" "$rp/out.json" "$rp/lake")
[ "$got" = "4 [0, 1, 2, 3] [('orders', 'committed'), ('notes', 'committed')] (10000, 10000) (7, 7)" ] \
  || { echo "ray pipeline plan: got $got" >&2; exit 1; }
echo "ray pipeline plan OK: $got"
