//! The program `../shared/bench/run_anchors.sh` times as `OUR_CMD` (its contract is at the top
//! of that script):
//!
//! ```text
//! cargo build --release --all-features --example bench_load
//! OUT_DIR=/tmp/out TABLE=orders CURSOR=updated_at PK=order_id PG=postgresql://… \
//!     target/release/examples/bench_load full|full-partitioned|full-delta|incremental|upsert|upsert-delta|full-mysql
//! ```
//!
//! - `full`: the whole `public.$TABLE` of `$PG` into a Parquet lake under `$OUT_DIR`.
//! - `full-partitioned`: the same in Hive folders `year=/month=/day=` of the date column
//!   `$PARTITION_BY`.
//! - `incremental`: rows past the watermark it keeps in `$OUT_DIR/_etl/`; the first call
//!   loads everything.
//! - `upsert`: rows past the watermark (kept in `$OUT_DIR/_etl/`) merged by `$PK` into
//!   `$WH_SCHEMA.$TABLE` of the same Postgres; the first call loads everything.
//! - `full-mysql`: the whole `$TABLE` of `$MYSQL_URL`'s database into the lake.
//! - `full-delta`: the whole `public.$TABLE` into the Delta table `$OUT_DIR/delta/$TABLE`
//!   (an overwrite commit).
//! - `upsert-delta`: rows past the watermark merged by `$PK` into the Delta table
//!   `$OUT_DIR/delta/$TABLE`; the first call loads everything.
//!
//! `PARALLELISM` (default 2) sets the connections of a whole-table read. `DETECT_DELETES=1`
//! makes `upsert` and `upsert-delta` also delete from the target the keys gone from the source
//! (`TableSpec::detect_deletes`). `RECONCILE=col,col…` (or `RECONCILE=keys`) makes `upsert`
//! reconcile the target with the source after the run, comparing those columns' content
//! (or keys and counts only); `RECONCILE_POLICY=report|fail|repair` (default `report`).
//! `RESYNC=1` makes `upsert` reload the whole table into the target it has
//! (`Pipeline::resync`: what a user runs to mend a table without reconciliation).
//!
//! Prints the run's report as one JSON line; exits non-zero when the run fails.

use std::sync::Arc;

use etl::{
    Deletes, DeltaSink, LakeSink, LoadMode, Location, MySqlSource, ObjectStoreWatermarkStore, Pipeline, PostgresSink,
    PostgresSource, Reconcile, ReconcilePolicy, Sink, Source, TableSpec,
};

fn env(name: &str) -> Result<String, Box<dyn std::error::Error>> {
    std::env::var(name).map_err(|_| format!("environment variable {name} is not set").into())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cmd = std::env::args().nth(1).unwrap_or_default();
    let table = env("TABLE")?;
    // Connections per whole-table read (default: the sources' own default, 2).
    let parallelism: usize = std::env::var("PARALLELISM")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let pg = || -> Result<PostgresSource, Box<dyn std::error::Error>> {
        Ok(PostgresSource::new(&env("PG")?)?.with_parallelism(parallelism))
    };
    let (mode, source, relation): (_, Arc<dyn Source>, _) = match cmd.as_str() {
        "full" | "full-partitioned" => (LoadMode::Full, Arc::new(pg()?), format!("public.{table}")),
        "incremental" => (LoadMode::Incremental, Arc::new(pg()?), format!("public.{table}")),
        "full-mysql" => (
            LoadMode::Full,
            Arc::new(MySqlSource::new(&env("MYSQL_URL")?)?.with_parallelism(parallelism)),
            table.clone(),
        ),
        "upsert" | "upsert-delta" => (LoadMode::Upsert, Arc::new(pg()?), format!("public.{table}")),
        "full-delta" => (LoadMode::Full, Arc::new(pg()?), format!("public.{table}")),
        _ => {
            return Err(
                "usage: bench_load full|full-partitioned|full-delta|incremental|upsert|upsert-delta|full-mysql".into(),
            );
        }
    };
    let out = Location::local(env("OUT_DIR")?)?;
    let mut spec = TableSpec::new(table.clone())
        .from_table(relation)
        .mode(mode)
        .primary_key([env("PK")?]);
    if mode.reads_incrementally() {
        spec = spec.cursor([env("CURSOR")?]);
    }
    // full-partitioned: Hive folders year=/month=/day= of the date column $PARTITION_BY.
    if cmd == "full-partitioned" {
        spec = spec.partition_by(etl::Partitioning::ByDate(env("PARTITION_BY")?));
    }
    // DETECT_DELETES=1: after the run, the keys gone from the source leave the target.
    if mode == LoadMode::Upsert && std::env::var("DETECT_DELETES").is_ok_and(|v| v == "1") {
        spec = spec.detect_deletes(Deletes::default());
    }
    // RECONCILE=keys or RECONCILE=col,col…: after the run, the target compared with the source.
    if let (LoadMode::Upsert, Ok(columns)) = (mode, std::env::var("RECONCILE")) {
        let policy = match std::env::var("RECONCILE_POLICY").as_deref() {
            Ok("fail") => ReconcilePolicy::Fail,
            Ok("repair") => ReconcilePolicy::Repair,
            Ok("report") | Err(_) => ReconcilePolicy::Report,
            Ok(other) => return Err(format!("RECONCILE_POLICY={other}: expected report, fail or repair").into()),
        };
        let columns: Vec<&str> = columns.split(',').filter(|c| !c.is_empty() && *c != "keys").collect();
        spec = spec.reconcile(Reconcile::new(policy).content(columns));
    }
    let sink: Arc<dyn Sink> = if cmd.ends_with("-delta") {
        spec = spec.processed_at(false);
        Arc::new(DeltaSink::new(out.child("delta")))
    } else if mode == LoadMode::Upsert {
        // The same columns as the source: no etl_processed_at.
        spec = spec.processed_at(false);
        Arc::new(PostgresSink::new(&env("PG")?)?.with_schema(env("WH_SCHEMA")?))
    } else {
        Arc::new(LakeSink::new(out.clone()))
    };
    let pipeline = Pipeline::builder("bench")
        .source_arc(source)
        .sink_arc(sink)
        .watermarks(ObjectStoreWatermarkStore::new(out.child("_etl/watermarks")))
        .table(spec)
        .build()?;
    let report = if mode == LoadMode::Upsert && std::env::var("RESYNC").is_ok_and(|v| v == "1") {
        pipeline.resync(&table).await?
    } else {
        pipeline.run().await?
    };
    println!("{}", report.to_json());
    report.into_result()?;
    Ok(())
}
