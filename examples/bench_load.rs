//! The program `../shared/bench/run_anchors.sh` times as `OUR_CMD` (its contract is at the top
//! of that script):
//!
//! ```text
//! cargo build --release --all-features --example bench_load
//! OUT_DIR=/tmp/out TABLE=orders CURSOR=updated_at PK=order_id PG=postgresql://… \
//!     target/release/examples/bench_load full|incremental
//! ```
//!
//! - `full`: the whole `public.$TABLE` of `$PG` into a Parquet lake under `$OUT_DIR`.
//! - `incremental`: rows past the watermark it keeps in `$OUT_DIR/_etl/`; the first call
//!   loads everything.
//! - `upsert` and `full-mysql` come with the Postgres sink and the MySQL source.
//!
//! Prints the run's report as one JSON line; exits non-zero when the run fails.

use etl::{LakeSink, LoadMode, Location, ObjectStoreWatermarkStore, Pipeline, PostgresSource, TableSpec};

fn env(name: &str) -> Result<String, Box<dyn std::error::Error>> {
    std::env::var(name).map_err(|_| format!("environment variable {name} is not set").into())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cmd = std::env::args().nth(1).unwrap_or_default();
    let mode = match cmd.as_str() {
        "full" => LoadMode::Full,
        "incremental" => LoadMode::Incremental,
        "upsert" | "full-mysql" => return Err(format!("`{cmd}` is not implemented yet").into()),
        _ => return Err("usage: bench_load full|incremental".into()),
    };
    let table = env("TABLE")?;
    let out = Location::local(env("OUT_DIR")?)?;
    let mut spec = TableSpec::new(table.clone())
        .from_table(format!("public.{table}"))
        .mode(mode)
        .primary_key([env("PK")?]);
    if mode == LoadMode::Incremental {
        spec = spec.cursor([env("CURSOR")?]);
    }
    let report = Pipeline::builder("bench")
        .source(PostgresSource::new(&env("PG")?)?)
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
