//! Crawls a lake folder (the quickstart's `./lake` by default) and prints what it holds: each
//! table's format, schema, typed partitions with their files and rows, and the Athena/Hive
//! DDL that lets other engines read it (each statement ending with `;`).
//!
//! ```text
//! cargo run --example quickstart -- ./lake
//! cargo run --example crawl_lake -- ./lake [s3://bucket/lake] [--demo]
//! ```
//!
//! `--demo` first lands a small `demo_events` Parquet table and a `demo_visits` CSV table
//! (typed from a sample: integers, decimals, dates, timestamps) in the lake; run it twice and
//! the second run lands a Parquet file with one more column, so the crawl shows schema
//! version 2 and reads only that new file's footer.
//!
//! The second argument is the lake's location as other engines see it (for `LOCATION` in
//! the DDL; default: the folder's `file://` URL). The crawl is stored in the lake's catalog
//! (`_etl/catalog/`): a second run reads only new files, and a changed schema shows as a new
//! version.

use std::sync::Arc;

use etl::catalog::Catalog;
use etl::catalog::Crawler;
use etl::deps::arrow::array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use etl::deps::parquet::arrow::ArrowWriter;
use etl::{CsvOptions, Location};

/// Lands `demo_events/dt=2025-07-24/part-1.parquet` (id, name) and
/// `demo_visits/day=2025-07-24/visits.csv`, or on the next call `part-2.parquet` with a
/// `score` column too.
fn land_demo(lake: &str) -> Result<(), Box<dyn std::error::Error>> {
    let visits = std::path::Path::new(lake).join("demo_visits/day=2025-07-24");
    if !visits.exists() {
        std::fs::create_dir_all(&visits)?;
        std::fs::write(
            visits.join("visits.csv"),
            "visit_id,customer_id,spent,visited_at\n1,11,19.90,2025-07-24 09:15:00\n2,12,5.00,2025-07-24 10:40:00\n",
        )?;
    }
    let dir = std::path::Path::new(lake).join("demo_events/dt=2025-07-24");
    std::fs::create_dir_all(&dir)?;
    let first = dir.join("part-1.parquet");
    let (path, batch) = if !first.exists() {
        let cols: Vec<(&str, ArrayRef)> = vec![
            ("id", Arc::new(Int64Array::from(vec![1, 2]))),
            ("name", Arc::new(StringArray::from(vec!["ada", "alan"]))),
        ];
        (first, RecordBatch::try_from_iter(cols)?)
    } else {
        let cols: Vec<(&str, ArrayRef)> = vec![
            ("id", Arc::new(Int64Array::from(vec![3]))),
            ("name", Arc::new(StringArray::from(vec!["grace"]))),
            ("score", Arc::new(Float64Array::from(vec![9.5]))),
        ];
        (dir.join("part-2.parquet"), RecordBatch::try_from_iter(cols)?)
    };
    if !path.exists() {
        let mut w = ArrowWriter::try_new(std::fs::File::create(&path)?, batch.schema(), None)?;
        w.write(&batch)?;
        w.close()?;
        eprintln!("landed {}", path.display());
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let positional: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    let dir = positional.first().map_or("./lake".to_string(), |d| d.to_string());
    if args.iter().any(|a| a == "--demo") {
        land_demo(&dir)?;
    }
    let root = Location::local(&dir)?;
    let url = positional
        .get(1)
        .map_or_else(|| root.url().to_string(), |u| u.to_string());
    // Fixed-point CSV columns (`19.90`) as exact decimals.
    let csv = CsvOptions {
        decimals: true,
        ..CsvOptions::default()
    };
    let crawl = Crawler::new(root.clone())
        .with_csv_options(csv)
        .crawl_into(&Catalog::new(root))
        .await?;
    println!(
        "-- {} tables, {} Parquet footers read, {} CSV/JSON files sampled",
        crawl.tables.len(),
        crawl.footers_read,
        crawl.samples_read
    );
    for entry in &crawl.tables {
        let t = entry.crawled()?;
        println!(
            "-- table {} ({:?}), catalog generation {}, {} partitions, {:?} rows",
            t.name,
            t.format,
            entry.generation,
            t.partitions.len(),
            t.rows()
        );
        for v in &entry.versions {
            println!("--   schema version {}: {}", v.version, v.changes.join("; "));
        }
        if let Some(schema) = &t.schema {
            for f in schema.fields() {
                println!("--   {}: {}", f.name(), f.data_type());
            }
        }
        for p in &t.partitions {
            println!(
                "--   partition {}: {} files, {:?} rows, {} bytes",
                p.path, p.files, p.rows, p.bytes
            );
        }
        match t.athena_ddl(&url) {
            Ok(ddl) => ddl.iter().for_each(|s| println!("{s}")),
            Err(e) => println!("-- no DDL: {e}"),
        }
        println!();
    }
    Ok(())
}
