//! The seed's walkthrough: customer CSV drops in a landing prefix (a local folder, or an S3
//! prefix with the `s3` feature), merged on `customer_id` into a warehouse table without
//! duplicates — day 1 with customers 1–10, then day 2 with 11–15 where customer 15 appears
//! twice (the later row wins).
//!
//! ```text
//! # Postgres standing in for Redshift (staging in <landing>/_staging):
//! ETL_WAREHOUSE="host=127.0.0.1 user=postgres dbname=test" \
//!   cargo run --example s3_csv_to_redshift --features redshift -- ./landing
//!
//! # Redshift: staging on S3, loaded by COPY with the cluster's IAM role:
//! ETL_WAREHOUSE="host=….redshift.amazonaws.com port=5439 user=etl dbname=dw sslmode=require" \
//! ETL_STAGING_BUCKET=my-bucket ETL_REDSHIFT_IAM_ROLE=arn:aws:iam::123456789012:role/copy \
//!   cargo run --example s3_csv_to_redshift --features redshift,s3,tls -- ./landing
//! ```
//!
//! The Redshift sink stages each run's rows as Parquet, then in one transaction `COPY`s them
//! into a staging table, collapses repeated keys to the latest row, `MERGE`s into
//! `etl_demo.customers` and stores the run's checkpoint; the staged files are removed after
//! the commit. Without `ETL_REDSHIFT_IAM_ROLE`, Postgres (15+) stands in for Redshift: the
//! same statements, the staged Parquet loaded by `COPY FROM STDIN`. Both days are landed
//! under the folder given (default `./landing`) and run one after the other; the watermarks
//! live in `<landing>/_etl/watermarks`.

use etl::sinks::redshift::{RedshiftLoad, RedshiftSink};
use etl::{FileFormat, FileSource, LoadMode, Location, ObjectStoreWatermarkStore, Pipeline, TableSpec};

/// The staging location and how Redshift loads it, from the environment.
fn staging(landing: &Location) -> Result<(Location, RedshiftLoad), Box<dyn std::error::Error>> {
    match std::env::var("ETL_REDSHIFT_IAM_ROLE") {
        Ok(role) => {
            #[cfg(feature = "s3")]
            {
                let bucket = std::env::var("ETL_STAGING_BUCKET").map_err(|_| "set ETL_STAGING_BUCKET")?;
                Ok((Location::s3(&bucket, "etl-staging", None)?, RedshiftLoad::IamRole(role)))
            }
            #[cfg(not(feature = "s3"))]
            {
                let _ = role;
                Err("staging on S3 needs the `s3` feature".into())
            }
        }
        Err(_) => Ok((landing.child("_staging"), RedshiftLoad::PostgresStandIn)),
    }
}

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
    let conn = std::env::var("ETL_WAREHOUSE")
        .map_err(|_| "set ETL_WAREHOUSE to a Redshift (or Postgres) connection string")?;
    std::fs::create_dir_all(&dir)?;
    let landing = Location::local(&dir)?;
    let (staging, load) = staging(&landing)?;
    let sink = RedshiftSink::new(&conn, staging, load)?.with_schema("etl_demo");
    let pipeline = Pipeline::builder("crm_daily")
        .source(FileSource::new(landing.clone()))
        .watermarks(ObjectStoreWatermarkStore::new(landing.child("_etl/watermarks")))
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
