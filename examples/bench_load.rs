//! The program `../shared/bench/run_anchors.sh` times as `OUR_CMD` (its contract is at the top
//! of that script):
//!
//! ```text
//! cargo build --release --all-features --example bench_load
//! OUT_DIR=/tmp/out TABLE=orders CURSOR=updated_at PK=order_id PG=postgresql://… \
//!     target/release/examples/bench_load full|incremental|full-mysql
//! ```
//!
//! - `full`: the whole `public.$TABLE` of `$PG` into a Parquet lake under `$OUT_DIR`.
//! - `incremental`: rows past the watermark it keeps in `$OUT_DIR/_etl/`; the first call
//!   loads everything.
//! - `full-mysql`: the whole `$TABLE` of `$MYSQL_URL`'s database into the lake.
//! - `upsert` comes with the Postgres sink.
//!
//! Prints the run's report as one JSON line; exits non-zero when the run fails.

use std::sync::Arc;

use etl::{
    LakeSink, LoadMode, Location, MySqlSource, ObjectStoreWatermarkStore, Pipeline, PostgresSource, Source, TableSpec,
};

fn env(name: &str) -> Result<String, Box<dyn std::error::Error>> {
    std::env::var(name).map_err(|_| format!("environment variable {name} is not set").into())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cmd = std::env::args().nth(1).unwrap_or_default();
    let table = env("TABLE")?;
    let (mode, source, relation): (_, Arc<dyn Source>, _) = match cmd.as_str() {
        "full" => (
            LoadMode::Full,
            Arc::new(PostgresSource::new(&env("PG")?)?),
            format!("public.{table}"),
        ),
        "incremental" => (
            LoadMode::Incremental,
            Arc::new(PostgresSource::new(&env("PG")?)?),
            format!("public.{table}"),
        ),
        "full-mysql" => (
            LoadMode::Full,
            Arc::new(MySqlSource::new(&env("MYSQL_URL")?)?),
            table.clone(),
        ),
        "upsert" => return Err(format!("`{cmd}` is not implemented yet").into()),
        _ => return Err("usage: bench_load full|incremental|full-mysql".into()),
    };
    let out = Location::local(env("OUT_DIR")?)?;
    let mut spec = TableSpec::new(table.clone())
        .from_table(relation)
        .mode(mode)
        .primary_key([env("PK")?]);
    if mode == LoadMode::Incremental {
        spec = spec.cursor([env("CURSOR")?]);
    }
    let report = Pipeline::builder("bench")
        .source_arc(source)
        .sink(LakeSink::new(out.clone()))
        .watermarks(ObjectStoreWatermarkStore::new(out.child("_etl/watermarks")))
        .table(spec)
        .build()?
        .run()
        .await?;
    println!("{}", report.to_json());
    report.into_result()?;
    Ok(())
}
