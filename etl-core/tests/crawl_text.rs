//! The crawler and the catalog over CSV and JSON-lines tables: schemas inferred from samples
//! and merged across files, typed partitions, incremental crawls that sample only new files,
//! and scans decoding the files into the catalog's schema.

use arrow::util::pretty::pretty_format_batches;
use etl_core::catalog::Catalog;
use etl_core::catalog::{Crawler, PartitionValue, TableFormat};
use etl_core::{CsvOptions, Location};
use futures::TryStreamExt;

fn write(dir: &std::path::Path, rel: &str, body: &str) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, body).unwrap();
}

fn columns(schema: &arrow::datatypes::Schema) -> Vec<String> {
    schema
        .fields()
        .iter()
        .map(|f| format!("{}:{}", f.name(), f.data_type()))
        .collect()
}

/// A scan of the catalog, pretty-printed.
async fn scan(
    catalog: &Catalog,
    table: &str,
    filter: impl Fn(&[PartitionValue]) -> bool,
    columns: Option<&[&str]>,
) -> String {
    let batches: Vec<_> = catalog
        .scan(table, filter, columns)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    pretty_format_batches(&batches).unwrap().to_string()
}

/// A lake of two CSV partitions (the second file adds `extra`, has a fraction in `amount`
/// and a bare date in `at`) and two JSON-lines partitions.
fn lake() -> (tempfile::TempDir, Location) {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "events/day=2025-07-23/a.csv",
        "id,amount,ok,at,note\n1,10,true,2025-07-23 10:00:00,\n2,12,false,2025-07-23 11:30:00,x\n",
    );
    write(
        dir.path(),
        "events/day=2025-07-24/b.csv",
        "id,amount,ok,at,note,extra\n3,12.75,true,2025-07-24,y,7\n",
    );
    write(
        dir.path(),
        "clicks/hour=1/c.jsonl",
        "{\"user\":\"u1\",\"n\":1,\"seen\":\"2025-07-23\",\"at\":\"2025-07-23T10:00:00\",\"ok\":true}\n\
         {\"user\":\"u2\",\"n\":null,\"seen\":\"2025-07-24\",\"at\":\"2025-07-24 08:00:00.5\",\"ok\":false}\n",
    );
    write(
        dir.path(),
        "clicks/hour=2/d.json",
        "{\"user\":\"u3\",\"n\":2.5,\"seen\":\"2025-07-25\",\"at\":\"2025-07-25\",\"ok\":null}\n",
    );
    let loc = Location::local(dir.path()).unwrap();
    (dir, loc)
}

#[tokio::test]
async fn csv_and_json_tables_are_inferred_merged_and_typed() {
    let (_dir, loc) = lake();
    let tables = Crawler::new(loc.clone()).crawl().await.unwrap();
    let found: Vec<(&str, TableFormat)> = tables.iter().map(|t| (t.name.as_str(), t.format)).collect();
    assert_eq!(
        found,
        [("clicks", TableFormat::JsonLines), ("events", TableFormat::Csv)]
    );

    let (clicks, events) = (&tables[0], &tables[1]);
    assert_eq!(
        columns(events.schema.as_ref().unwrap()),
        [
            "id:Int64",
            "amount:Float64",
            "ok:Boolean",
            "at:Timestamp(µs)",
            "note:Utf8",
            "extra:Int64"
        ]
    );
    assert_eq!(
        columns(clicks.schema.as_ref().unwrap()),
        [
            "user:Utf8",
            "n:Float64",
            "seen:Date32",
            "at:Timestamp(µs)",
            "ok:Boolean"
        ]
    );
    let day = |s: &str| PartitionValue::Date(s.parse().unwrap());
    let values: Vec<Vec<PartitionValue>> = events.partitions.iter().map(|p| p.values.clone()).collect();
    assert_eq!(values, [vec![day("2025-07-23")], vec![day("2025-07-24")]]);
    assert_eq!(clicks.partition_keys[0].1, arrow::datatypes::DataType::Int64);
    assert_eq!(events.rows(), None, "a CSV table's rows are not counted from a sample");

    // Exact values in decimals when asked: integers in one file, cents in the other.
    let opts = CsvOptions {
        decimals: true,
        ..CsvOptions::default()
    };
    let tables = Crawler::new(loc.clone()).with_csv_options(opts).crawl().await.unwrap();
    assert_eq!(
        columns(tables[1].schema.as_ref().unwrap())[1],
        "amount:Decimal128(38, 2)"
    );

    // Athena reads the CSV table past its header line.
    let ddl = events.athena_ddl("s3://lake").unwrap();
    assert_eq!(
        ddl[0],
        "CREATE EXTERNAL TABLE IF NOT EXISTS `events` (\n  `id` bigint,\n  `amount` double,\n  `ok` boolean,\n  \
         `at` timestamp,\n  `note` string,\n  `extra` bigint\n)\nPARTITIONED BY (`day` date)\n\
         ROW FORMAT DELIMITED FIELDS TERMINATED BY ','\nSTORED AS TEXTFILE\nLOCATION 's3://lake/events/'\n\
         TBLPROPERTIES ('skip.header.line.count'='1');"
    );
}

#[tokio::test]
async fn text_tables_crawl_incrementally_and_scan_in_the_catalog_schema() {
    let (dir, loc) = lake();
    let catalog = Catalog::new(loc.clone());
    let crawler = Crawler::new(loc.clone());
    let first = crawler.crawl_into(&catalog).await.unwrap();
    assert_eq!((first.samples_read, first.footers_read), (4, 0));
    let again = crawler.crawl_into(&catalog).await.unwrap();
    assert_eq!(again.samples_read, 0, "an unchanged lake is not sampled again");

    // A later file holds text in the boolean column: the guess widens, as a new version.
    write(dir.path(), "events/day=2025-07-25/c.csv", "id,ok\n4,maybe\n");
    let third = crawler.crawl_into(&catalog).await.unwrap();
    assert_eq!(third.samples_read, 1);
    let events = catalog.get("events").await.unwrap().unwrap();
    let versions: Vec<(u32, Vec<String>)> = events.versions.iter().map(|v| (v.version, v.changes.clone())).collect();
    assert_eq!(
        versions,
        [
            (1, vec!["first seen".to_string()]),
            (2, vec!["widened `ok` Boolean → Utf8".to_string()])
        ]
    );

    // Scans: the kept partitions only, columns by name, NULLs where a file lacks one.
    let day24 = PartitionValue::Date("2025-07-24".parse().unwrap());
    let events = scan(
        &catalog,
        "events",
        |v| v[0] >= day24,
        Some(&["id", "amount", "ok", "at", "extra", "day"]),
    )
    .await;
    assert_eq!(
        events,
        "+----+--------+-------+---------------------+-------+------------+\n\
         | id | amount | ok    | at                  | extra | day        |\n\
         +----+--------+-------+---------------------+-------+------------+\n\
         | 3  | 12.75  | true  | 2025-07-24T00:00:00 | 7     | 2025-07-24 |\n\
         | 4  |        | maybe |                     |       | 2025-07-25 |\n\
         +----+--------+-------+---------------------+-------+------------+"
    );

    assert_eq!(
        scan(&catalog, "clicks", |_| true, None).await,
        "+------+-----+------------+-------------------------+-------+------+\n\
         | user | n   | seen       | at                      | ok    | hour |\n\
         +------+-----+------------+-------------------------+-------+------+\n\
         | u1   | 1.0 | 2025-07-23 | 2025-07-23T10:00:00     | true  | 1    |\n\
         | u2   |     | 2025-07-24 | 2025-07-24T08:00:00.500 | false | 1    |\n\
         | u3   | 2.5 | 2025-07-25 | 2025-07-25T00:00:00     |       | 2    |\n\
         +------+-----+------------+-------------------------+-------+------+"
    );
}

#[tokio::test]
async fn a_malformed_text_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "t/a.jsonl", "{\"id\":1}\n{\"id\":\n");
    let err = Crawler::new(Location::local(dir.path()).unwrap())
        .crawl()
        .await
        .unwrap_err();
    match &err {
        etl_core::Error::MalformedRow { file, line, .. } => assert_eq!((file.as_str(), *line), ("t/a.jsonl", 2)),
        other => panic!("expected MalformedRow, got {other}"),
    }
}

fn parquet(dir: &std::path::Path, rel: &str, batch: &arrow::record_batch::RecordBatch) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(std::fs::File::create(p).unwrap(), batch.schema(), None).unwrap();
    w.write(batch).unwrap();
    w.close().unwrap();
}

#[tokio::test]
async fn a_parquet_column_widens_as_a_new_version_and_scans_widened() {
    use arrow::array::{ArrayRef, Float32Array, Float64Array, Int32Array, Int64Array, RecordBatch};
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let narrow = RecordBatch::try_from_iter([
        ("qty", Arc::new(Int32Array::from(vec![1, 2])) as ArrayRef),
        ("price", Arc::new(Float32Array::from(vec![0.5, 1.5])) as ArrayRef),
    ])
    .unwrap();
    parquet(dir.path(), "stock/a.parquet", &narrow);
    let loc = Location::local(dir.path()).unwrap();
    let catalog = Catalog::new(loc.clone());
    Crawler::new(loc.clone()).crawl_into(&catalog).await.unwrap();

    let wide = RecordBatch::try_from_iter([
        ("qty", Arc::new(Int64Array::from(vec![5_000_000_000])) as ArrayRef),
        ("price", Arc::new(Float64Array::from(vec![2.25])) as ArrayRef),
    ])
    .unwrap();
    parquet(dir.path(), "stock/b.parquet", &wide);
    let crawl = Crawler::new(loc.clone()).crawl_into(&catalog).await.unwrap();
    assert_eq!(crawl.footers_read, 1);
    let t = catalog.get("stock").await.unwrap().unwrap();
    assert_eq!(
        t.versions[1].changes,
        ["widened `qty` Int32 → Int64", "widened `price` Float32 → Float64"]
    );
    assert_eq!(
        scan(&catalog, "stock", |_| true, None).await,
        "+------------+-------+\n\
         | qty        | price |\n\
         +------------+-------+\n\
         | 1          | 0.5   |\n\
         | 2          | 1.5   |\n\
         | 5000000000 | 2.25  |\n\
         +------------+-------+"
    );
}

/// Gzip-compressed text (`.csv.gz`, as Athena reads it) is crawled and scanned like plain text.
#[tokio::test]
async fn gzip_text_files_are_crawled_and_scanned() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("sales")).unwrap();
    let mut child = std::process::Command::new("gzip")
        .arg("-c")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("gzip is installed");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"id,amount\n1,9.5\n2,20\n")
        .unwrap();
    let gz = child.wait_with_output().unwrap().stdout;
    std::fs::write(dir.path().join("sales/a.csv.gz"), gz).unwrap();
    write(dir.path(), "sales/b.csv", "id,amount\n3,1.25\n");
    let loc = Location::local(dir.path()).unwrap();
    let catalog = Catalog::new(loc.clone());
    Crawler::new(loc).crawl_into(&catalog).await.unwrap();
    let entry = catalog.get("sales").await.unwrap().unwrap();
    assert_eq!(
        columns(&entry.schema().unwrap().unwrap()),
        ["id:Int64", "amount:Float64"]
    );
    assert_eq!(
        scan(&catalog, "sales", |_| true, None).await,
        "+----+--------+\n| id | amount |\n+----+--------+\n| 1  | 9.5    |\n| 2  | 20.0   |\n| 3  | 1.25   |\n+----+--------+"
    );
}
