#!/usr/bin/env bash
# Finding deletes and mismatches against a full reload (issue 13), on the harness's `orders`:
#   bash scripts/bench_trust.sh            # needs ../shared/bench's Postgres and its data (gen_data.sh)
# Two full reloads are timed: into an empty target (UPSERT) and over the loaded one (resync).
# Builds nothing: runs target/release/examples/bench_load (cargo build --release --all-features
# --example bench_load). Prints one line per timed run; the source is restored at the end.
set -euo pipefail
HERE=$(cd "$(dirname "$0")/.." && pwd)
BENCH=${BENCH:-$HERE/../shared/bench}
. "$BENCH/env.sh"
BIN=${BIN:-$HERE/target/release/examples/bench_load}
REPS=${REPS:-3}
export OUT_DIR=${OUT_DIR:-/tmp/etl-bench/out/trust} WH_SCHEMA=${WH_SCHEMA:-wh_trust} TABLE=orders CURSOR=updated_at PK=order_id PG
CONTENT=${CONTENT:-customer_id,product_name,quantity,price,order_date,updated_at}
LOG=${LOG:-/tmp/bench_trust.log}; : > "$LOG"
q() { psql "$PG" -v ON_ERROR_STOP=1 -qAtc "$1"; }
timed() { # label, then the command's environment and arguments
  local label=$1; shift
  local t0 t1 rss
  t0=$(date +%s.%N)
  /usr/bin/time -f '%M' -o /tmp/bench_trust.rss env "$@" "$BIN" upsert > /tmp/bench_trust.out
  t1=$(date +%s.%N)
  rss=$(cat /tmp/bench_trust.rss)
  printf '%s wall=%.2f s rss=%s KB %s\n' "$label" "$(echo "$t1 - $t0" | bc)" "$rss" \
    "$(python3 -c 'import json,sys; t=json.load(open("/tmp/bench_trust.out"))["tables"][0]; r=t.get("reconciliation") or {}; k=t.get("keys") or {}; print("status=%s deleted=%s keys_read=%s ranges_differing=%s missing=%s extra=%s changed=%s reloaded=%s rec=%s" % (t["status"], t["deleted_count"], k.get("keys_read"), k.get("ranges_differing"), r.get("missing_in_target"), r.get("extra_in_target"), r.get("changed_in_target"), r.get("reloaded_rows"), r.get("status")))')" | tee -a "$LOG"
}
fresh() { q "DROP SCHEMA IF EXISTS $WH_SCHEMA CASCADE"; rm -rf "$OUT_DIR"; mkdir -p "$OUT_DIR"; }
restore() { q "INSERT INTO orders SELECT * FROM bench_trust_deleted ON CONFLICT DO NOTHING; DROP TABLE IF EXISTS bench_trust_deleted" || true; }
trap restore EXIT
q "SELECT 1 FROM orders LIMIT 1" >/dev/null
echo "# $(date -u +%FT%TZ) orders=$(q 'SELECT count(*) FROM orders') content=$CONTENT reps=$REPS"
for i in $(seq 1 "$REPS"); do fresh; timed "full-load(rep $i)"; done
# Behind the target's back, 0.1 % each: rows deleted at the source, rows changed in the target.
q "CREATE TABLE bench_trust_deleted AS SELECT * FROM orders WHERE order_id % 1000 = 7; DELETE FROM orders WHERE order_id % 1000 = 7"
q "UPDATE $WH_SCHEMA.orders SET price = price + 1 WHERE order_id % 1000 = 3"
rm -rf "$OUT_DIR.saved"; cp -r "$OUT_DIR" "$OUT_DIR.saved"; q "DROP TABLE IF EXISTS bench_trust_target; CREATE TABLE bench_trust_target AS SELECT * FROM $WH_SCHEMA.orders"
# The sink's checkpoint too, which a resync moves on (the watermark restored with an older one
# would be told apart from it as a restored target).
q "DROP TABLE IF EXISTS bench_trust_checkpoints; CREATE TABLE bench_trust_checkpoints AS SELECT * FROM $WH_SCHEMA._etl_checkpoints"
# The target restored, then vacuumed as autovacuum would after 5M inserted rows (a restored
# table's first scan would otherwise set every row's hint bits, which a settled target has),
# and checkpointed.
again() {
  rm -rf "$OUT_DIR"; cp -r "$OUT_DIR.saved" "$OUT_DIR"
  q "TRUNCATE $WH_SCHEMA.orders; INSERT INTO $WH_SCHEMA.orders SELECT * FROM bench_trust_target"
  q "TRUNCATE $WH_SCHEMA._etl_checkpoints; INSERT INTO $WH_SCHEMA._etl_checkpoints SELECT * FROM bench_trust_checkpoints"
  q "VACUUM ANALYZE $WH_SCHEMA.orders"
  # Its pages written out before the timed run, not by the checkpointer during it.
  q "CHECKPOINT"
}
for i in $(seq 1 "$REPS"); do again; timed "find-keys(rep $i)" DETECT_DELETES=0 RECONCILE=keys; done
# Each content comparison is followed by a full reload of the same table (Pipeline::resync:
# FULL into the target it compared), so that each pair ran on the machine at one speed (the
# VMs here change speed by a third from minute to minute).
for i in $(seq 1 "$REPS"); do
  again; timed "find-content(rep $i)" RECONCILE="$CONTENT"
  timed "resync(rep $i)" RESYNC=1
done
for i in $(seq 1 "$REPS"); do again; timed "find+delete+content(rep $i)" DETECT_DELETES=1 RECONCILE="$CONTENT"; done
again; timed "repair(rep 1)" DETECT_DELETES=1 RECONCILE="$CONTENT" RECONCILE_POLICY=repair
timed "after-repair(rep 1)" RECONCILE="$CONTENT"
q "DROP TABLE IF EXISTS bench_trust_target, bench_trust_checkpoints"; rm -rf "$OUT_DIR.saved"
# Medians, and the ratios the issue asks for: against the median full load, and each content
# comparison against the reload that followed it.
python3 - "$LOG" <<'PY'
import re, statistics, sys
runs = {}
for line in open(sys.argv[1]):
    m = re.match(r"(\S+)\(rep (\d+)\) wall=([\d.]+) s", line)
    if m:
        runs.setdefault(m[1], {})[int(m[2])] = float(m[3])
med = {k: statistics.median(v.values()) for k, v in runs.items()}
for k, v in med.items():
    print(f"# median {k}: {v:.2f} s")
full = med["full-load"]
for k in ("find-keys", "find-content"):
    print(f"# {k}: {med[k] / full:.2f}x the median full load")
pairs = [runs["find-content"][i] / runs["resync"][i] for i in runs["find-content"] if i in runs["resync"]]
print(f"# find-content: {statistics.median(pairs):.2f}x the reload that followed it (median of {len(pairs)} pairs)")
PY
