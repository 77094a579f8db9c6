//! The seed's walkthrough: customer CSV drops in a landing prefix (a local folder, or an S3
//! prefix with the `s3` feature), merged on `customer_id` into a warehouse table without
//! duplicates — day 1 with customers 1–10, then day 2 with 11–15 where customer 15 appears
//! twice (the later row wins).
//!
//! ```text
//! ETL_WAREHOUSE="host=127.0.0.1 user=postgres dbname=test" \
//!   cargo run --example s3_csv_to_redshift --features postgres -- ./landing
//! ```
//!
//! Postgres stands in for Redshift here: the Postgres sink runs the same staging + merge
//! in one transaction (the Redshift sink, which stages Parquet on S3 and runs `COPY`, takes
//! its place when it lands). Both days are landed under the folder given (default
//! `./landing`), run one after the other, and the table is printed; the watermarks and the
//! checkpoint live in the warehouse (`etl_demo._etl_watermarks`).

use etl::{FileFormat, FileSource, LoadMode, Location, Pipeline, PostgresSink, TableSpec};

const DAY1: &str = "customer_id,name,email,updated_at
1,Ada,ada@example.com,2025-07-01 09:00:00
2,Alan,alan@example.com,2025-07-01 09:00:00
3,Grace,grace@example.com,2025-07-01 09:00:00
4,Edsger,edsger@example.com,2025-07-01 09:00:00
5,Barbara,barbara@example.com,2025-07-01 09:00:00
6,Donald,donald@example.com,2025-07-01 09:00:00
7,Frances,frances@example.com,2025-07-01 09:00:00
8,John,john@example.com,2025-07-01 09:00:00
9,Margaret,margaret@example.com,2025-07-01 09:00:00
10,Tony,tony@example.com,2025-07-01 09:00:00
";

const DAY2: &str = "customer_id,name,email,updated_at
11,Ken,ken@example.com,2025-07-02 09:00:00
12,Dennis,dennis@example.com,2025-07-02 09:00:00
13,Niklaus,niklaus@example.com,2025-07-02 09:00:00
15,Leslie,leslie@old.example.com,2025-07-02 09:00:00
14,Robin,robin@example.com,2025-07-02 09:00:00
15,Leslie,leslie@example.com,2025-07-02 17:30:00
";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args().nth(1).unwrap_or_else(|| "./landing".into());
    let conn = std::env::var("ETL_WAREHOUSE").map_err(|_| "set ETL_WAREHOUSE to a Postgres connection string")?;
    let landing = Location::local(&dir)?;
    let sink = PostgresSink::new(&conn)?.with_schema("etl_demo");
    let pipeline = Pipeline::builder("crm_daily")
        .source(FileSource::new(landing))
        .watermarks(sink.watermark_store())
        .sink(sink)
        .table(
            TableSpec::new("customers")
                .from_files("customers/", FileFormat::csv())
                .mode(LoadMode::Upsert)
                .primary_key(["customer_id"])
                .cursor(["updated_at"]),
        )
        .build()?;
    for (day, body) in [("day1", DAY1), ("day2", DAY2)] {
        let path = std::path::Path::new(&dir)
            .join("customers")
            .join(format!("customers_{day}.csv"));
        if !path.exists() {
            std::fs::create_dir_all(path.parent().expect("parent"))?;
            std::fs::write(&path, body)?;
        }
        let report = pipeline.run().await?;
        println!("{}", report.to_json());
        let t = &report.tables[0];
        eprintln!(
            "{day}: {:?}: {} read, {} inserted, {} updated, {} collapsed, {:?} rows in etl_demo.customers",
            t.status, t.extracted_count, t.inserted_count, t.updated_count, t.collapsed_count, t.target_count
        );
        report.into_result()?;
    }
    Ok(())
}
