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
//! the DDL; default: the folder's `file://` URL). Schema versions and the stored catalog come
//! with the catalog; this prints one crawl.

use etl::Location;
use etl::crawler::Crawler;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args().nth(1).unwrap_or_else(|| "./lake".into());
    let root = Location::local(&dir)?;
    let url = std::env::args().nth(2).unwrap_or_else(|| root.url().to_string());
    for t in Crawler::new(root).crawl().await? {
        println!(
            "-- table {} ({:?}), {} partitions, {:?} rows",
            t.name,
            t.format,
            t.partitions.len(),
            t.rows()
        );
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
