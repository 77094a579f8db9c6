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

# The quickstart, twice on one lake, then every row checked through DuckDB's Hive reader.
lake=$(mktemp -d)/lake
cargo run --quiet --example quickstart -- "$lake" >"$lake.1.jsonl"
cargo run --quiet --example quickstart -- "$lake" >"$lake.2.jsonl"
grep -c '"status":"no_new_data"' "$lake.2.jsonl" | grep -qx 2 || { echo "second quickstart run wrote data" >&2; exit 1; }
"$ETL_TEST_PYTHON" scripts/check_quickstart.py "$lake"
