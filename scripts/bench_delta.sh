#!/usr/bin/env bash
# The Delta sink against the Parquet lake and the `deltalake` Python package (issue 15), on the
# harness's `orders`, in one run:
#   bash scripts/bench_delta.sh     # needs ../shared/bench's Postgres and data (gen_data.sh) and
#                                   # the Delta venv of scripts/services.sh install
# 1. full loads, REPS rounds, lake and Delta in turn: wall, peak RSS, bytes written;
# 2. one initial load of each UPSERT target (untimed): our Delta table, a copy of it for
#    deltalake's own merge, our Postgres table;
# 3. REPS days of ../shared/bench/delta.sh (1 % of the orders changed, 1 % new), each picked
#    up by our `upsert-delta`, by deltalake's merge of the same rows (read by connectorx), and
#    by our Postgres `upsert`; then each target's row count is checked against the source.
# Builds nothing: runs target/release/examples/bench_load (cargo build --release
# --all-features --example bench_load). Regenerate the data afterwards (gen_data.sh): the
# days change it.
set -euo pipefail
HERE=$(cd "$(dirname "$0")/.." && pwd)
BENCH=${BENCH:-$HERE/../shared/bench}
. "$BENCH/env.sh"
BIN=${BIN:-$HERE/target/release/examples/bench_load}
REPS=${REPS:-3}
DPY=${DELTA_PYTHON:-/tmp/etl-ci-services/delta-venv/bin/python}
ROOT=${ROOT:-/tmp/etl-bench/out/delta-bench}
export WH_SCHEMA=${WH_SCHEMA:-wh_delta} TABLE=orders CURSOR=updated_at PK=order_id PG
"$DPY" -c 'import connectorx' 2>/dev/null || "$DPY" -m pip install -q 'connectorx==0.4.*'
q() { psql "$PG" -v ON_ERROR_STOP=1 -qAtc "$1"; }
timed() { # label, out dir, then the command
  local label=$1 out=$2; shift 2
  local t0 t1
  t0=$(date +%s.%N)
  OUT_DIR=$out /usr/bin/time -f '%M' -o /tmp/bench_delta.rss "$@" > /tmp/bench_delta.out
  t1=$(date +%s.%N)
  printf '%s wall=%.2f s rss=%s KB bytes=%s\n' "$label" "$(echo "$t1 - $t0" | bc)" "$(cat /tmp/bench_delta.rss)" \
    "$(du -sb --exclude=_etl "$out" 2>/dev/null | cut -f1)"
}
merge_py='
import sys, connectorx as cx
from deltalake import DeltaTable
uri, pg, wm = sys.argv[1:4]
src = cx.read_sql(pg, f"SELECT * FROM orders WHERE updated_at > timestamp \x27{wm}\x27", return_type="arrow")
m = (DeltaTable(uri).merge(src, predicate="t.order_id = s.order_id", source_alias="s", target_alias="t")
     .when_matched_update_all().when_not_matched_insert_all().execute())
print(m)
'
echo "# $(date -u +%FT%TZ) orders=$(q 'SELECT count(*) FROM orders') reps=$REPS deltalake=$("$DPY" -c 'import deltalake; print(deltalake.__version__)')"
for i in $(seq 1 "$REPS"); do
  rm -rf "$ROOT/lake"; timed "full-lake(rep $i)" "$ROOT/lake" "$BIN" full
  rm -rf "$ROOT/dfull"; timed "full-delta(rep $i)" "$ROOT/dfull" "$BIN" full-delta
done
rm -rf "$ROOT/merge" "$ROOT/pymerge" "$ROOT/pg"; q "DROP SCHEMA IF EXISTS $WH_SCHEMA CASCADE"
timed "initial-upsert-delta" "$ROOT/merge" "$BIN" upsert-delta
cp -r "$ROOT/merge/delta/orders" "$ROOT/pymerge"
timed "initial-upsert-pg" "$ROOT/pg" "$BIN" upsert
for i in $(seq 1 "$REPS"); do
  wm=$(q "SELECT max(updated_at) FROM orders")
  SKIP_MARIADB=1 bash "$BENCH/delta.sh" >/dev/null
  timed "merge-delta-ours(day $i)" "$ROOT/merge" "$BIN" upsert-delta
  timed "merge-deltalake-python(day $i)" "$ROOT/pymerge" "$DPY" -c "$merge_py" "$ROOT/pymerge" "$PG" "$wm"
  timed "upsert-pg-ours(day $i)" "$ROOT/pg" "$BIN" upsert
done
n=$(q "SELECT count(*) FROM orders")
counts=$("$DPY" -c 'import sys; from deltalake import DeltaTable; print(*[DeltaTable(u).to_pyarrow_dataset().count_rows() for u in sys.argv[1:]])' \
  "$ROOT/merge/delta/orders" "$ROOT/pymerge")
echo "# rows: source $n, ours (Delta) and deltalake's: $counts, ours (Postgres) $(q "SELECT count(*) FROM $WH_SCHEMA.orders")"
