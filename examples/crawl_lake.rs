//! Crawls a lake folder (the quickstart's `./lake` by default) and prints what it holds: each
//! table's format, schema, typed partitions with their files and rows, and the Athena/Hive
//! DDL that lets other engines read it (each statement ending with `;`).
//!
//! ```text
//! cargo run --example quickstart -- ./lake
//! cargo run --example crawl_lake -- ./lake [s3://bucket/lake]
//! ```
//!
//! The second argument is the lake's location as other engines see it (for `LOCATION` in
//! the DDL; default: the folder's `file://` URL). The crawl is stored in the lake's catalog
//! (`_etl/catalog/`): a second run reads only new files, and a changed schema shows as a new
//! version.

use etl::Location;
use etl::catalog::Catalog;
use etl::crawler::Crawler;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args().nth(1).unwrap_or_else(|| "./lake".into());
    let root = Location::local(&dir)?;
    let url = std::env::args().nth(2).unwrap_or_else(|| root.url().to_string());
    let crawl = Crawler::new(root.clone()).crawl_into(&Catalog::new(root)).await?;
    println!(
        "-- {} tables, {} Parquet footers read",
        crawl.tables.len(),
        crawl.footers_read
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
