//! Integration tests of the file source, on local disk and on the S3 server, alone and
//! loading a lake.

use std::sync::Arc;

use arrow::record_batch::RecordBatch;
use etl_connectors::files::FileSource;
use etl_core::conformance::{self, render_sorted};
use etl_core::deps::object_store::ObjectStoreExt;
use etl_core::{
    BadRows, CsvOptions, Error, FileFormat, LoadMode, Location, ObjectStoreWatermarkStore, Pipeline, ReadRequest,
    Source, TableSpec, TableStatus,
};
use etl_sinks::lake::LakeSink;
use futures::TryStreamExt;

async fn put(loc: &Location, rel: &str, body: &str) {
    loc.store()
        .put(&loc.path(rel), body.to_string().into())
        .await
        .expect("put");
}

async fn read_all(source: &FileSource, spec: &TableSpec) -> Result<Vec<RecordBatch>, Error> {
    let req = ReadRequest {
        spec,
        mode: LoadMode::Full,
        from: None,
        run_id: "t",
        batch_size: 1024,
        limit: None,
    };
    source.read(req).await?.stream.try_collect().await
}

fn local() -> (tempfile::TempDir, Location) {
    let dir = tempfile::tempdir().unwrap();
    let loc = Location::local(dir.path()).unwrap();
    (dir, loc)
}

const PEOPLE: &str =
    "+----+------+\n| id | name |\n+----+------+\n| 1  | ann  |\n| 2  | bob  |\n| 3  |      |\n+----+------+";

/// The same checks on any location.
async fn file_source_suite(loc: Location) {
    put(&loc, "in/a.csv", "id,name\n1,ann\n2,bob\n").await;
    put(&loc, "in/b.csv", "id,name\n3,\n").await;
    put(&loc, "in/_SUCCESS", "").await;
    let source = FileSource::new(loc.clone());
    let spec = TableSpec::new("people").from_files("in/", FileFormat::csv());
    let missing = TableSpec::new("ghosts").from_files("absent/", FileFormat::csv());
    conformance::source(&source, &spec, &missing, PEOPLE, &[]).await;

    // Incremental by file bookmark, into a lake on the same store.
    let lake = LakeSink::new(loc.child("lake"));
    let p = Pipeline::builder("files")
        .source(source.clone())
        .sink(lake.clone())
        .watermarks(ObjectStoreWatermarkStore::new(loc.child("wm")))
        .table(spec.clone().mode(LoadMode::Incremental))
        .build()
        .unwrap();
    let r = p.run().await.unwrap().into_result().unwrap();
    let t = r.table("people").unwrap();
    assert_eq!((t.source_count, t.written_count), (Some(3), 3));
    assert_eq!(t.watermark_after.as_ref().unwrap().files, 2, "both files bookmarked");
    let r = p.run().await.unwrap();
    assert_eq!(r.table("people").unwrap().status, TableStatus::NoNewData);

    put(&loc, "in/c.csv", "id,name\n4,dan\n").await;
    let r = p.run().await.unwrap().into_result().unwrap();
    let t = r.table("people").unwrap();
    assert_eq!(
        (t.source_count, t.written_count),
        (Some(1), 1),
        "only the new file is read"
    );

    put(&loc, "in/a.csv", "id,name\n1,ann\n2,bob\n5,eve\n").await;
    let r = p.run().await.unwrap().into_result().unwrap();
    assert_eq!(
        r.table("people").unwrap().written_count,
        3,
        "a changed file is read again"
    );
    let rows = lake.read_table("people").await.unwrap();
    assert_eq!(
        render_sorted(&rows, &["etl_processed_at"]),
        "+----+------+\n| id | name |\n+----+------+\n| 1  | ann  |\n| 1  | ann  |\n| 2  | bob  |\n| 2  | bob  |\n| 3  |      |\n| 4  | dan  |\n| 5  | eve  |\n+----+------+"
    );
}

#[tokio::test]
async fn file_source_on_local_disk() {
    let (_d, loc) = local();
    file_source_suite(loc).await;
}

#[cfg(feature = "s3")]
#[tokio::test]
async fn file_source_on_s3() {
    file_source_suite(conformance::s3_location()).await;
}

#[tokio::test]
async fn csv_options_types_and_nulls() {
    let (_d, loc) = local();
    put(
        &loc,
        "x/data.txt",
        "id;price;day;at;ok;note\n1;9.5;2025-07-24;2025-07-24 01:05:23.123456;true;\"semi;colon\"\n2;NA;2025-07-25;2025-07-25 00:00:00;false;\"two\nlines\"\n",
    )
    .await;
    let opts = CsvOptions {
        delimiter: b';',
        null_markers: vec!["NA".into(), String::new()],
        ..CsvOptions::default()
    };
    let spec = TableSpec::new("x").from_files("x/", FileFormat::Csv(opts));
    let batches = read_all(&FileSource::new(loc), &spec).await.unwrap();
    let schema = batches[0].schema();
    let types: Vec<String> = schema.fields().iter().map(|f| f.data_type().to_string()).collect();
    assert_eq!(
        types,
        ["Int64", "Float64", "Date32", "Timestamp(µs)", "Boolean", "Utf8"]
    );
    assert_eq!(
        arrow::util::pretty::pretty_format_batches(&batches)
            .unwrap()
            .to_string(),
        "+----+-------+------------+----------------------------+-------+------------+\n\
         | id | price | day        | at                         | ok    | note       |\n\
         +----+-------+------------+----------------------------+-------+------------+\n\
         | 1  | 9.5   | 2025-07-24 | 2025-07-24T01:05:23.123456 | true  | semi;colon |\n\
         | 2  |       | 2025-07-25 | 2025-07-25T00:00:00        | false | two        |\n\
         |    |       |            |                            |       | lines      |\n\
         +----+-------+------------+----------------------------+-------+------------+"
    );
}

#[tokio::test]
async fn malformed_csv_rows_fail_naming_file_and_line_or_are_diverted() {
    let (_d, loc) = local();
    put(&loc, "m/good.csv", "id,amount\n1,10\n").await;
    put(&loc, "m/bad.csv", "id,amount\n2,20\n3,lots\n4,40,extra\n5,50\n").await;
    let schema = Arc::new(arrow::datatypes::Schema::new(vec![
        arrow::datatypes::Field::new("id", arrow::datatypes::DataType::Int64, true),
        arrow::datatypes::Field::new("amount", arrow::datatypes::DataType::Int64, true),
    ]));
    let spec = TableSpec::new("m").from_files("m/", FileFormat::csv()).schema(schema);
    let err = read_all(&FileSource::new(loc.clone()), &spec).await.unwrap_err();
    match &err {
        Error::MalformedRow { file, line, reason } => {
            assert_eq!((file.as_str(), *line), ("m/bad.csv", 3), "{err}");
            assert!(reason.contains("amount") && reason.contains("lots"), "{reason}");
        }
        other => panic!("expected MalformedRow, got {other}"),
    }

    // Through a pipeline: the table fails, nothing is written, the watermark stays.
    let lake = LakeSink::new(loc.child("lake"));
    let wm = ObjectStoreWatermarkStore::new(loc.child("wm"));
    let build = |spec: TableSpec| {
        Pipeline::builder("bad")
            .source(FileSource::new(loc.clone()))
            .sink(lake.clone())
            .watermarks(wm.clone())
            .table(spec.mode(LoadMode::Incremental))
            .build()
            .unwrap()
    };
    let r = build(spec.clone()).run().await.unwrap();
    let t = r.table("m").unwrap();
    assert_eq!(t.status, TableStatus::Failed);
    assert!(
        t.error.as_deref().unwrap().contains("m/bad.csv` at line 3"),
        "{:?}",
        t.error
    );
    assert!(lake.read_table("m").await.unwrap().is_empty(), "nothing written");
    use etl_core::WatermarkStore;
    assert!(wm.load("bad", "m").await.unwrap().is_none(), "watermark untouched");

    // Diverted: the good rows load, the bad ones go to a rejects file and are counted.
    let r = build(spec.bad_rows(BadRows::Divert))
        .run()
        .await
        .unwrap()
        .into_result()
        .unwrap();
    let t = r.table("m").unwrap();
    assert_eq!((t.rejected_count, t.written_count), (2, 3));
    let rejects = loc.list("_etl/rejects/m").await.unwrap();
    assert_eq!(rejects.len(), 1);
    let text = loc
        .store()
        .get(&rejects[0].location)
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(
        std::str::from_utf8(&text).unwrap(),
        "file,line,reason,record\n\
         m/bad.csv,3,column `amount`: `lots` is not a valid Int64,\"3,lots\"\n\
         m/bad.csv,4,\"expected 2 fields, found 3\",\"4,40,extra\"\n"
    );
}

#[tokio::test]
async fn json_lines_and_parquet_files() {
    let (_d, loc) = local();
    put(&loc, "j/a.jsonl", "{\"id\":1,\"tags\":\"x\"}\n\n{\"id\":2}\n").await;
    let spec = TableSpec::new("j").from_files("j/", FileFormat::JsonLines);
    let source = FileSource::new(loc.clone());
    let batches = read_all(&source, &spec).await.unwrap();
    assert_eq!(
        render_sorted(&batches, &[]),
        "+----+------+\n| id | tags |\n+----+------+\n| 1  | x    |\n| 2  |      |\n+----+------+"
    );
    put(&loc, "j/b.jsonl", "{\"id\":3}\n{\"id\":\"three\"\n").await;
    let err = read_all(&source, &spec).await.unwrap_err().to_string();
    assert!(err.contains("j/b.jsonl") && err.contains("line 2"), "{err}");

    // Parquet files written by the lake are read back by the file source.
    let lake = LakeSink::new(loc.child("pq"));
    Pipeline::builder("pq")
        .source(FileSource::new(loc.clone()))
        .sink(lake)
        .watermarks(ObjectStoreWatermarkStore::new(Location::memory()))
        .table(
            TableSpec::new("t")
                .from_files("j/a.jsonl", FileFormat::JsonLines)
                .processed_at(false),
        )
        .build()
        .unwrap()
        .run()
        .await
        .unwrap()
        .into_result()
        .unwrap();
    let spec = TableSpec::new("p").from_files("pq/t/", FileFormat::Parquet);
    let batches = read_all(&source, &spec).await.unwrap();
    assert_eq!(
        render_sorted(&batches, &[]),
        "+----+------+\n| id | tags |\n+----+------+\n| 1  | x    |\n| 2  |      |\n+----+------+"
    );
}

#[tokio::test]
async fn cursor_inside_files_keeps_only_newer_rows() {
    let (_d, loc) = local();
    put(
        &loc,
        "c/1.csv",
        "id,updated_at\n1,2025-01-01 00:00:00\n2,2025-01-02 00:00:00\n",
    )
    .await;
    let lake = LakeSink::new(loc.child("lake"));
    let p = Pipeline::builder("cur")
        .source(FileSource::new(loc.clone()))
        .sink(lake.clone())
        .watermarks(ObjectStoreWatermarkStore::new(loc.child("wm")))
        .table(
            TableSpec::new("c")
                .from_files("c/", FileFormat::csv())
                .mode(LoadMode::Incremental)
                .cursor(["updated_at"]),
        )
        .build()
        .unwrap();
    p.run().await.unwrap().into_result().unwrap();
    // A new file repeats an old row and brings a newer one.
    put(
        &loc,
        "c/2.csv",
        "id,updated_at\n2,2025-01-02 00:00:00\n3,2025-01-03 00:00:00\n",
    )
    .await;
    let r = p.run().await.unwrap().into_result().unwrap();
    let t = r.table("c").unwrap();
    assert_eq!((t.source_count, t.extracted_count, t.written_count), (Some(2), 1, 1));
    assert_eq!(
        t.watermark_after.as_ref().unwrap().cursor.as_ref().unwrap().to_string(),
        "2025-01-03 00:00:00"
    );
}

#[tokio::test]
async fn csv_without_header_reads_by_position() {
    let (_d, loc) = local();
    put(&loc, "h/a.csv", "1,ann\n2,bob\n3,cy\n").await;
    let opts = CsvOptions {
        header: false,
        ..CsvOptions::default()
    };
    let spec = TableSpec::new("h").from_files("h/", FileFormat::Csv(opts));
    let batches = read_all(&FileSource::new(loc), &spec).await.unwrap();
    assert_eq!(
        render_sorted(&batches, &[]),
        "+----------+----------+\n| column_1 | column_2 |\n+----------+----------+\n| 1        | ann      |\n| 2        | bob      |\n| 3        | cy       |\n+----------+----------+"
    );
}

#[cfg(any(feature = "postgres", feature = "mysql"))]
mod chunked;
#[cfg(feature = "postgres")]
mod postgres;

#[cfg(feature = "mysql")]
mod mysql;
