#!/usr/bin/env bash
# Issue 15's figures in one run on one machine, one after the other (nothing else running):
#   1. the harness (../shared/bench/run_anchors.sh) at 5M orders: ours.full, ours.full.part,
#      duckdb.full, duckdb.full.part, REPS rounds — speed, peak RSS and the bytes each
#      writes (the harness's bytes_out), ours beside DuckDB's;
#   2. scripts/bench_delta.sh on the same 5M orders: the Delta full load against the lake, a
#      1 % MERGE against the deltalake Python package's and our Postgres upsert;
#   3. the harness at 50M orders (it regenerates them): ours.full once, its peak RSS.
# Builds nothing: target/release/examples/bench_load (cargo build --release --features
# postgres,mysql,lake,delta --example bench_load). Writes OUT (default
# docs/bench/<date>-lakehouse.log) and the harness's TSVs beside it.
#   bash scripts/bench_lakehouse.sh
set -euo pipefail
HERE=$(cd "$(dirname "$0")/.." && pwd)
BENCH=${BENCH:-$HERE/../shared/bench}
BIN=${BIN:-$HERE/target/release/examples/bench_load}
REPS=${REPS:-3}
DAY=$(date -u +%F)
OUT=${OUT:-$HERE/docs/bench/$DAY-lakehouse.log}
RUNS=$(mktemp -d)
[ -x "$BIN" ] || { echo "build $BIN first" >&2; exit 1; }
{
  echo "# bench_lakehouse $(date -u +%FT%TZ) on $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB; $(git -C "$HERE" rev-parse --short HEAD)"
  echo "## 1. harness, 5M orders, REPS=$REPS"
  OUR_CMD=$BIN ORDERS=5000000 REPS=$REPS SKIP_MARIADB=1 ONLY='^(ours|duckdb)\.full(\.part)?$' RUN_DIR=$RUNS/5m \
    bash "$BENCH/run_anchors.sh" > "$RUNS/5m.out" 2>&1 || { cat "$RUNS/5m.out"; exit 1; }
  cat "$RUNS/5m/results.tsv"
  echo "## 2. scripts/bench_delta.sh, REPS=$REPS"
  BIN=$BIN REPS=$REPS bash "$HERE/scripts/bench_delta.sh"
  echo "## 3. harness, 50M orders, ours.full once"
  OUR_CMD=$BIN ORDERS=50000000 REPS=1 SKIP_MARIADB=1 ONLY='^ours\.full$' RUN_DIR=$RUNS/50m \
    bash "$BENCH/run_anchors.sh" > "$RUNS/50m.out" 2>&1 || { cat "$RUNS/50m.out"; exit 1; }
  cat "$RUNS/50m/results.tsv"
} | tee "$OUT"
cp "$RUNS/5m/results.tsv" "${OUT%.log}-5m.tsv"
cp "$RUNS/50m/results.tsv" "${OUT%.log}-50m.tsv"
