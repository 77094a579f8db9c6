//! Quickstart: CSV drops of customers and orders, loaded into a partitioned Parquet lake —
//! day 1 in full (a first run has no watermark), then day 2 incrementally. No server needed.
//!
//! ```text
//! cargo run --example quickstart -- ./lake
//! ```
//!
//! The lake folder gets `customers/processing_year=…/…` and `orders/year=…/month=…/day=…/`
//! Parquet files, with the landing folder (`_landing/`) and the metadata (`_etl/`) beside
//! them. Each run's report is printed as one JSON line on stdout; progress goes to stderr.
//! Running it again on the same lake finds no new data and leaves the same rows.

use std::path::{Path, PathBuf};

use etl::{
    FileFormat, FileSource, LakeSink, LoadMode, Location, ObjectStoreWatermarkStore, Partitioning, Pipeline, TableSpec,
    TableStatus,
};

/// The sample drops, shipped with the example.
const DROPS: [(&str, &str, &str); 4] = [
    ("day1", "customers", include_str!("data/quickstart/day1/customers.csv")),
    ("day1", "orders", include_str!("data/quickstart/day1/orders.csv")),
    ("day2", "customers", include_str!("data/quickstart/day2/customers.csv")),
    ("day2", "orders", include_str!("data/quickstart/day2/orders.csv")),
];

/// Lands one day's files in `<lake>/_landing/<table>/<table>_<day>.csv` (once).
fn land(lake: &Path, day: &str) -> std::io::Result<()> {
    for (d, table, body) in DROPS.iter().filter(|(d, _, _)| *d == day) {
        let path = lake.join("_landing").join(table).join(format!("{table}_{d}.csv"));
        if !path.exists() {
            std::fs::create_dir_all(path.parent().expect("parent"))?;
            std::fs::write(&path, body)?;
            eprintln!("landed {}", path.display());
        }
    }
    Ok(())
}

fn pipeline(lake: &Path) -> etl::Result<Pipeline> {
    let root = Location::local(lake)?;
    Pipeline::builder("quickstart")
        .source(FileSource::new(root.child("_landing")))
        .sink(LakeSink::new(root.clone()))
        .watermarks(ObjectStoreWatermarkStore::new(root.child("_etl/watermarks")))
        .table(
            TableSpec::new("customers")
                .from_files("customers/", FileFormat::csv())
                .mode(LoadMode::Incremental)
                .primary_key(["customer_id"])
                .cursor(["updated_at"])
                .keep_latest()
                .partition_by(Partitioning::ByProcessingDate),
        )
        .table(
            TableSpec::new("orders")
                .from_files("orders/", FileFormat::csv())
                .mode(LoadMode::Incremental)
                .primary_key(["order_id"])
                .cursor(["updated_at"])
                .keep_latest()
                .partition_by(Partitioning::ByDate("order_date".into())),
        )
        .build()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let lake: PathBuf = std::env::args().nth(1).unwrap_or_else(|| "./lake".into()).into();
    let pipeline = pipeline(&lake)?;
    for day in ["day1", "day2"] {
        land(&lake, day)?;
        eprintln!("== run after the {day} drop");
        let report = pipeline.run().await?;
        for t in &report.tables {
            let line = match t.status {
                TableStatus::NoNewData => "no new data".to_string(),
                TableStatus::Committed if t.watermark_before.as_ref().is_none_or(|w| w.generation == 0) => {
                    format!("first run, no watermark: loaded everything, {} rows", t.written_count)
                }
                TableStatus::Committed => format!(
                    "{} new rows ({} older versions of a key collapsed)",
                    t.written_count, t.collapsed_count
                ),
                _ => format!("{:?}: {}", t.status, t.error.as_deref().unwrap_or("")),
            };
            let count = t
                .target_count
                .map(|n| format!("; {n} rows in the lake"))
                .unwrap_or_default();
            eprintln!("   {:<10} {line}{count}", t.table);
        }
        println!("{}", report.to_json());
        report.into_result()?;
    }
    eprintln!("lake written under {}", lake.display());
    Ok(())
}
