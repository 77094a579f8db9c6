#!/usr/bin/env bash
# A shard plan's overhead (issue 16): the harness's 5M orders (../shared/bench, Postgres on
# this machine) loaded FULL into a local Parquet lake by one process (`etl run`), against the
# same load as 8 shards over 2 workers (`etl plan`, `etl shard` two at a time, `etl commit`),
# REPS rounds each, the lake wiped before each. Prints one line per round and phase, then the
# medians and the overhead: (plan + commit) over the one process's wall.
#   cargo build --release --features cli,postgres,lake --bin etl && bash scripts/bench_shards.sh
set -euo pipefail
HERE=$(cd "$(dirname "$0")/.." && pwd)
BENCH=${BENCH:-$HERE/../shared/bench}
. "$BENCH/env.sh"
ETL=${ETL:-$HERE/target/release/etl}
REPS=${REPS:-3} SHARDS=${SHARDS:-8} WORKERS=${WORKERS:-2} ORDERS=${ORDERS:-5000000}
WORK=${WORK:-$BENCH_DATA/out/shards-bench}
n=$(psql "$PG" -tAc "SELECT count(*) FROM orders" 2>/dev/null || echo 0)
[ "$n" = "$ORDERS" ] || ORDERS=$ORDERS SKIP_MARIADB=1 bash "$BENCH/gen_data.sh" >/dev/null 2>&1
mkdir -p "$WORK"
cat > "$WORK/orders.toml" <<TOML
name = "orders_bench"
source = { kind = "postgres", url = "\${env:PG}" }
sink = { kind = "lake", location = "lake" }

[[tables]]
name = "orders"
from = "public.orders"
mode = "FULL"
primary_key = "order_id"
cursor = "updated_at"
processed_at = false
TOML
cd "$WORK"
now() { date +%s.%N; }
secs() { echo "$2 - $1" | bc; }
echo "# bench_shards $(date -u +%FT%TZ) $(nproc) cores; $(git -C "$HERE" rev-parse --short HEAD); orders=$(psql "$PG" -tAc 'SELECT count(*) FROM orders') shards=$SHARDS workers=$WORKERS"
for r in $(seq 1 "$REPS"); do
  rm -rf lake plans
  t0=$(now); "$ETL" run orders.toml >/dev/null; t1=$(now)
  echo "single rep=$r wall=$(secs "$t0" "$t1")"
  rm -rf lake plans
  t0=$(now)
  "$ETL" plan orders.toml --table orders --shards "$SHARDS" --plans plans > plan.json
  t1=$(now)
  plan=$(python3 -c 'import json; print(json.load(open("plan.json"))["plan"])')
  seq 0 $((SHARDS - 1)) | xargs -P "$WORKERS" -I{} "$ETL" shard orders.toml --plan "$plan" --index {} >/dev/null
  t2=$(now)
  "$ETL" commit orders.toml --plan "$plan" > commit.json
  t3=$(now)
  rows=$(python3 -c 'import json; print(json.load(open("commit.json"))["tables"][0]["written_count"])')
  echo "sharded rep=$r plan=$(secs "$t0" "$t1") shards=$(secs "$t1" "$t2") commit=$(secs "$t2" "$t3") wall=$(secs "$t0" "$t3") rows=$rows"
done | tee "$WORK/rounds.txt"
python3 - "$WORK/rounds.txt" <<'PY'
import re, statistics, sys
rows = [dict(re.findall(r"(\w+)=([\d.]+)", l)) | {"kind": l.split()[0]} for l in open(sys.argv[1])]
med = lambda kind, k: statistics.median(float(r[k]) for r in rows if r["kind"] == kind)
single, plan, shards, commit, wall = med("single", "wall"), med("sharded", "plan"), med("sharded", "shards"), med("sharded", "commit"), med("sharded", "wall")
print(f"# medians: one process {single:.2f} s; sharded {wall:.2f} s = plan {plan:.3f} + shards {shards:.2f} + commit {commit:.3f}")
print(f"# overhead (plan + commit) = {(plan + commit) / single * 100:.1f} % of the one process; sharded wall / one process = {wall / single:.2f}")
PY
