//! Integration tests of the file source, on local disk and on the S3 server, alone and
//! loading a lake.

use std::sync::Arc;

use arrow::record_batch::RecordBatch;
use etl_connectors::files::FileSource;
use etl_core::conformance::{self, render_sorted};
use etl_core::deps::object_store::ObjectStoreExt;
use etl_core::{
    BadRows, CsvOptions, Error, FileFormat, LoadMode, Location, NullCursors, ObjectStoreWatermarkStore, Pipeline,
    ReadRequest, Source, TableSpec, TableStatus,
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
        until: None,
        keys: None,
        files: None,
    };
    source.read(req).await?.stream.try_collect().await
}

/// The one rejects file of `table`'s runs.
async fn rejects_text(loc: &Location, table: &str) -> String {
    let rejects = loc.list(&format!("_etl/rejects/{table}")).await.unwrap();
    assert_eq!(rejects.len(), 1, "{rejects:?}");
    let bytes = loc
        .store()
        .get(&rejects[0].location)
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    String::from_utf8(bytes.to_vec()).unwrap()
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
        (t.read_count, t.written_count),
        (Some(1), 1),
        "only the new file is read"
    );
    assert_eq!(
        (t.source_count, t.difference),
        (None, None),
        "the rows of the new file are not the source's count"
    );
    assert!(t.warnings.is_empty(), "a new file is no reason to warn: {t:?}");

    put(&loc, "in/a.csv", "id,name\n1,ann\n2,bob\n5,eve\n").await;
    let r = p.run().await.unwrap().into_result().unwrap();
    let t = r.table("people").unwrap();
    assert_eq!(t.written_count, 3, "a changed file is read again");
    assert_eq!(t.warnings.len(), 1, "{t:?}");
    assert!(
        t.warnings[0].contains("file `in/a.csv` changed since it was loaded")
            && t.warnings[0].contains("earlier rows are appended again"),
        "the report says so: {t:?}"
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
    assert_eq!(
        rejects_text(&loc, "m").await,
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
    assert_eq!(
        (t.source_count, t.read_count, t.extracted_count, t.written_count),
        (None, Some(2), 1, 1)
    );
    assert_eq!(
        t.watermark_after.as_ref().unwrap().cursor.as_ref().unwrap().to_string(),
        "2025-01-03 00:00:00"
    );
}

/// A row of a new file without a cursor value is refused by default, or left out and counted;
/// a first run's whole read loads it only when the rule says so.
#[tokio::test]
async fn null_cursors_in_files_follow_the_stated_rule() {
    let (_d, loc) = local();
    put(&loc, "n/1.csv", "id,updated_at\n1,2025-01-01 00:00:00\n2,\n").await;
    let lake = LakeSink::new(loc.child("lake"));
    let p = |rule: NullCursors| {
        Pipeline::builder("nul")
            .source(FileSource::new(loc.clone()))
            .sink(lake.clone())
            .watermarks(ObjectStoreWatermarkStore::new(loc.child("wm")))
            .table(
                TableSpec::new("n")
                    .from_files("n/", FileFormat::csv())
                    .mode(LoadMode::Incremental)
                    .cursor(["updated_at"])
                    .null_cursors(rule),
            )
            .build()
            .unwrap()
    };
    let r = p(NullCursors::Fail).run().await.unwrap();
    let t = r.table("n").unwrap();
    assert_eq!(t.status, TableStatus::Failed);
    assert!(
        t.error
            .as_deref()
            .unwrap()
            .contains("1 rows have NULL in every cursor column (`updated_at`)"),
        "{t:?}"
    );
    assert!(lake.read_table("n").await.unwrap().is_empty());

    let r = p(NullCursors::WholeReadsOnly)
        .run()
        .await
        .unwrap()
        .into_result()
        .unwrap();
    let t = r.table("n").unwrap();
    assert_eq!((t.written_count, t.null_cursor_count), (2, 1));
    put(&loc, "n/2.csv", "id,updated_at\n3,\n4,2025-01-04 00:00:00\n").await;
    let err = p(NullCursors::Fail).run().await.unwrap();
    assert_eq!(err.table("n").unwrap().status, TableStatus::Failed);
    let r = p(NullCursors::WholeReadsOnly)
        .run()
        .await
        .unwrap()
        .into_result()
        .unwrap();
    let t = r.table("n").unwrap();
    assert_eq!((t.written_count, t.null_cursor_count), (1, 1));
    assert_eq!(
        render_sorted(
            &lake.read_table("n").await.unwrap(),
            &["etl_processed_at", "updated_at"]
        ),
        "+----+\n| id |\n+----+\n| 1  |\n| 2  |\n| 4  |\n+----+"
    );
}

/// The bytes of `text` gzip-compressed by the system's `gzip`.
fn gzip(text: &str) -> Vec<u8> {
    use std::io::Write;
    let mut child = std::process::Command::new("gzip")
        .arg("-c")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("gzip is installed");
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    out.stdout
}

async fn put_bytes(loc: &Location, rel: &str, body: Vec<u8>) {
    loc.store().put(&loc.path(rel), body.into()).await.expect("put");
}

/// How a database source splits the 100 rows of `orders` (`order_id` 1–100, `updated_at` one
/// minute apart from 2025-07-01, `label` text) for a shard plan: a whole read, a window past a
/// stored cursor, nothing new, sized by rows and by bytes; and `by_label` (a text key) and a table of no key,
/// one shard of every key each, saying why.
pub(crate) async fn split_cases(source: &dyn etl_core::Source, orders: &str, by_label: &str) {
    use etl_core::shard::ShardSizing;
    use etl_core::{CursorValue, LoadMode, Position, ReadRequest, TableSpec};
    let at = |m: i64| {
        CursorValue::Timestamp(
            chrono::NaiveDate::from_ymd_opt(2025, 7, 1)
                .unwrap()
                .and_hms_opt(0, 0, 0)
                .unwrap()
                + chrono::Duration::minutes(m),
        )
    };
    let spec = TableSpec::new("orders")
        .from_table(orders)
        .mode(LoadMode::Incremental)
        .primary_key(["order_id"])
        .cursor(["updated_at"]);
    let split = |mode: LoadMode, from: Option<Position>, sizing: ShardSizing, spec: TableSpec| async move {
        source
            .split(
                ReadRequest {
                    spec: &spec,
                    mode,
                    from: from.as_ref(),
                    run_id: "plan",
                    batch_size: 1000,
                    limit: None,
                    until: None,
                    keys: None,
                    files: None,
                },
                sizing,
            )
            .await
    };
    let whole = split(LoadMode::Full, None, ShardSizing::Count(4), spec.clone())
        .await
        .unwrap();
    assert_eq!(
        (whole.keys, whole.high.cursor, whole.no_new_data),
        (
            vec![(i64::MIN, 25), (26, 50), (51, 75), (76, i64::MAX)],
            Some(at(100)),
            false
        )
    );
    let past = |m| {
        Some(Position {
            cursor: Some(at(m)),
            ..Position::default()
        })
    };
    // Past minute 60: rows 61–100 only.
    let window = split(LoadMode::Incremental, past(60), ShardSizing::Count(2), spec.clone())
        .await
        .unwrap();
    assert_eq!(window.keys, vec![(i64::MIN, 80), (81, i64::MAX)]);
    let none = split(LoadMode::Incremental, past(100), ShardSizing::Count(2), spec.clone())
        .await
        .unwrap();
    assert!(none.no_new_data && none.keys.is_empty(), "{none:?}");
    let by_rows = split(LoadMode::Full, None, ShardSizing::Rows(30), spec.clone())
        .await
        .unwrap();
    assert_eq!(by_rows.keys.len(), 4, "100 rows in shards of 30: {by_rows:?}");
    // By bytes: the rows times their mean size, from the database: a byte each is a key
    // each; a terabyte, one shard.
    let tiny = split(LoadMode::Full, None, ShardSizing::Bytes(1), spec.clone())
        .await
        .unwrap();
    assert_eq!(tiny.keys.len(), 100, "{tiny:?}");
    let huge = split(LoadMode::Full, None, ShardSizing::Bytes(1 << 40), spec.clone())
        .await
        .unwrap();
    assert_eq!(huge.keys, vec![(i64::MIN, i64::MAX)]);
    // Each row is some tens of bytes: shards of 1 000 bytes are a few.
    let some = split(LoadMode::Full, None, ShardSizing::Bytes(1000), spec.clone())
        .await
        .unwrap();
    assert!((2..=20).contains(&some.keys.len()), "{some:?}");
    // A table that cannot be split by key is one shard of every key, saying why.
    let text_key = spec.clone().from_table(by_label).primary_key(["label"]);
    let one = split(LoadMode::Full, None, ShardSizing::Count(2), text_key)
        .await
        .unwrap();
    assert_eq!(one.keys, vec![(i64::MIN, i64::MAX)]);
    let why = one.unsplit.unwrap_or_default();
    assert!(why.contains("`label` is not an integer column"), "{why}");
    let no_key = TableSpec {
        primary_key: Vec::new(),
        ..spec
    };
    let one = split(LoadMode::Full, None, ShardSizing::Rows(10), no_key)
        .await
        .unwrap();
    assert_eq!((one.keys, one.no_new_data), (vec![(i64::MIN, i64::MAX)], false));
    assert!(one.unsplit.unwrap_or_default().contains("and it has none"));
}

/// A files table splits into file sets of about equal bytes: a whole read takes every file,
/// a window past stored bookmarks the new ones only; a shard reads its set alone, and a file
/// of the set that is gone is an error naming it. A plan over the files, run shard by shard
/// into a lake, loads every row once, and the next plan takes only the file added since.
#[tokio::test]
async fn a_files_table_splits_into_file_sets() {
    use etl_core::shard::{PlanDir, ShardSizing, Split};
    use etl_core::{ModeOverrides, Position};
    let (_d, loc) = local();
    let csv = |from: usize, rows: usize| {
        let mut s = String::from("id,name\n");
        for i in from..from + rows {
            s.push_str(&format!("{i},name{i:05}\n"));
        }
        s
    };
    for (name, from, rows) in [("a", 1, 100), ("b", 101, 60), ("c", 161, 30), ("d", 191, 20)] {
        put(&loc, &format!("orders/{name}.csv"), &csv(from, rows)).await;
    }
    let spec = TableSpec::new("orders")
        .from_files("orders/", FileFormat::csv())
        .mode(LoadMode::Incremental)
        .primary_key(["id"]);
    let source = FileSource::new(loc.clone());
    let req = |from: Option<&Position>, files: Option<&[String]>| {
        let (spec, from) = (&spec, from.cloned());
        let files = files.map(|f| f.to_vec());
        let source = &source;
        async move {
            let req = ReadRequest {
                spec,
                mode: LoadMode::Incremental,
                from: from.as_ref(),
                run_id: "t",
                batch_size: 1024,
                limit: None,
                until: None,
                keys: None,
                files: files.as_deref(),
            };
            (source.split(req, ShardSizing::Count(2)).await, source.read(req).await)
        }
    };
    let names = |split: &Split| split.files.clone().unwrap();
    let (whole, _) = req(None, None).await;
    let whole = whole.unwrap();
    // Largest first, each into the lighter set: a | b, c, d.
    assert_eq!(
        names(&whole),
        vec![
            vec!["orders/a.csv".to_string()],
            vec!["orders/b.csv".into(), "orders/c.csv".into(), "orders/d.csv".into()]
        ]
    );
    assert_eq!(whole.high.files.len(), 4);
    let by = |sizing| {
        let source = &source;
        let spec = &spec;
        async move {
            source
                .split(
                    ReadRequest {
                        spec,
                        mode: LoadMode::Full,
                        from: None,
                        run_id: "t",
                        batch_size: 1024,
                        limit: None,
                        until: None,
                        keys: None,
                        files: None,
                    },
                    sizing,
                )
                .await
        }
    };
    assert_eq!(
        by(ShardSizing::Bytes(1)).await.unwrap().files.unwrap().len(),
        4,
        "a file is never split"
    );
    assert_eq!(by(ShardSizing::Bytes(1 << 30)).await.unwrap().files.unwrap().len(), 1);
    let err = by(ShardSizing::Rows(10)).await.unwrap_err().to_string();
    assert!(err.contains("sized by count or by bytes"), "{err}");
    // Past a and b as read: c and d only; past all four, nothing.
    let mut past = whole.high.clone();
    past.files.retain(|f, _| f.ends_with("a.csv") || f.ends_with("b.csv"));
    let (window, _) = req(Some(&past), None).await;
    assert_eq!(
        names(&window.unwrap()),
        vec![vec!["orders/c.csv".to_string()], vec!["orders/d.csv".to_string()]]
    );
    let (none, _) = req(Some(&whole.high), None).await;
    let none = none.unwrap();
    assert!(none.no_new_data && names(&none).is_empty(), "{none:?}");
    // A shard's set alone, whatever the window says; a file gone is named.
    let (_, read) = req(Some(&whole.high), Some(&["orders/b.csv".to_string()])).await;
    let rows: usize = read
        .unwrap()
        .stream
        .try_collect::<Vec<_>>()
        .await
        .unwrap()
        .iter()
        .map(|b| b.num_rows())
        .sum();
    assert_eq!(rows, 60);
    let (_, read) = req(None, Some(&["orders/gone.csv".to_string()])).await;
    let err = read.err().unwrap().to_string();
    assert!(
        err.contains("orders/gone.csv") && err.contains("not there any more"),
        "{err}"
    );

    // A plan of two shards into a lake, run in reverse, then committed: 210 rows, once.
    let (_l, lake, _) = temp_lake();
    let p = lake_pipeline(&loc, &lake, spec.clone());
    let plans = loc.child("plans");
    let plan = p
        .plan_shards("orders", ShardSizing::Count(2), &ModeOverrides::new())
        .await
        .unwrap();
    let dir = PlanDir::create(&plans, &plan).await.unwrap();
    for i in [1, 0] {
        assert!(p.run_shard(&dir, i).await.unwrap().recorded);
    }
    let r = p.commit_shards(&dir).await.unwrap();
    let t = r.table("orders").unwrap();
    assert_eq!((t.status, t.written_count), (TableStatus::Committed, 210), "{t:?}");
    let ids = |batches: Vec<RecordBatch>| {
        let mut ids: Vec<i64> = batches
            .iter()
            .flat_map(|b| {
                let c =
                    arrow::compute::cast(b.column_by_name("id").unwrap(), &arrow::datatypes::DataType::Int64).unwrap();
                c.as_any()
                    .downcast_ref::<arrow::array::Int64Array>()
                    .unwrap()
                    .values()
                    .to_vec()
            })
            .collect();
        ids.sort();
        ids
    };
    assert_eq!(
        ids(lake.read_table("orders").await.unwrap()),
        (1..=210).collect::<Vec<i64>>()
    );
    // A file lands: the next plan reads it alone.
    put(&loc, "orders/e.csv", &csv(211, 5)).await;
    let plan = p
        .plan_shards("orders", ShardSizing::Count(4), &ModeOverrides::new())
        .await
        .unwrap();
    assert_eq!(plan.shards.len(), 1);
    assert_eq!(plan.shards[0].files.as_deref(), Some(&["orders/e.csv".to_string()][..]));
    let dir = PlanDir::create(&plans, &plan).await.unwrap();
    p.run_shard(&dir, 0).await.unwrap();
    p.commit_shards(&dir).await.unwrap();
    assert_eq!(
        ids(lake.read_table("orders").await.unwrap()),
        (1..=215).collect::<Vec<i64>>()
    );
    let plan = p
        .plan_shards("orders", ShardSizing::Count(4), &ModeOverrides::new())
        .await
        .unwrap();
    assert!(plan.shards.is_empty(), "nothing new: {plan:?}");
}

/// A lake in a temporary folder, and a watermark store beside its tables (`_etl/wm`).
pub(crate) fn temp_lake() -> (tempfile::TempDir, LakeSink, ObjectStoreWatermarkStore) {
    let dir = tempfile::tempdir().unwrap();
    let lake = LakeSink::new(Location::local(dir.path()).unwrap());
    let wm = ObjectStoreWatermarkStore::new(Location::local(dir.path().join("_etl/wm")).unwrap());
    (dir, lake, wm)
}

fn lake_pipeline(loc: &Location, lake: &LakeSink, spec: TableSpec) -> Pipeline {
    Pipeline::builder("files")
        .source(FileSource::new(loc.clone()))
        .sink(lake.clone())
        .watermarks(ObjectStoreWatermarkStore::new(loc.child("wm")))
        .table(spec.mode(LoadMode::Incremental).processed_at(false))
        .build()
        .unwrap()
}

/// Gzip files are decompressed, by name and by their bytes; other compressions and binary
/// bytes are refused naming the file, never decoded into column names.
#[tokio::test]
async fn compressed_files_are_decompressed_or_refused() {
    let (_d, loc) = local();
    put(&loc, "g/a.csv", "id,name\n1,ann\n").await;
    put_bytes(&loc, "g/b.csv.gz", gzip("id,name\n2,bob\n3,cy\n")).await;
    put_bytes(&loc, "g/c.csv", gzip("id,name\n4,dan\n")).await;
    put_bytes(&loc, "j/a.jsonl.gz", gzip("{\"id\":1}\n{\"id\":2}\n")).await;
    let lake = LakeSink::new(loc.child("lake"));
    let r = lake_pipeline(&loc, &lake, TableSpec::new("g").from_files("g/", FileFormat::csv()))
        .run()
        .await
        .unwrap()
        .into_result()
        .unwrap();
    assert_eq!(r.table("g").unwrap().written_count, 4);
    let rows = lake.read_table("g").await.unwrap();
    assert_eq!(
        render_sorted(&rows, &[]),
        "+----+------+\n| id | name |\n+----+------+\n| 1  | ann  |\n| 2  | bob  |\n| 3  | cy   |\n| 4  | dan  |\n+----+------+"
    );
    let r = lake_pipeline(&loc, &lake, TableSpec::new("j").from_files("j/", FileFormat::JsonLines))
        .run()
        .await
        .unwrap()
        .into_result()
        .unwrap();
    assert_eq!(r.table("j").unwrap().written_count, 2);

    // A compression that is not read stops the run before anything is written.
    put_bytes(&loc, "g/d.csv.zst", b"\x28\xb5\x2f\xfd junk".to_vec()).await;
    let err = lake_pipeline(&loc, &lake, TableSpec::new("g").from_files("g/", FileFormat::csv()))
        .run()
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("g/d.csv.zst") && err.contains("zstd-compressed"), "{err}");
    std::fs::remove_file(_d.path().join("g/d.csv.zst")).unwrap();
    for (name, body, says) in [
        ("g/e.csv", b"\x28\xb5\x2f\xfd\x00\x01".to_vec(), "zstd-compressed"),
        ("g/f.csv.gz", b"id,name\n5,eve\n".to_vec(), "its bytes are not gzip"),
        (
            "g/h.csv",
            vec![0x89, b'P', b'N', b'G', 0, 0, 0x1a, b'\n', b'1', b'\n'],
            "header field 1 is not text",
        ),
    ] {
        put_bytes(&loc, name, body).await;
        let r = lake_pipeline(&loc, &lake, TableSpec::new("g").from_files("g/", FileFormat::csv()))
            .run()
            .await
            .unwrap();
        let t = r.table("g").unwrap();
        assert_eq!(t.status, TableStatus::Failed, "{name}");
        let e = t.error.as_deref().unwrap();
        assert!(e.contains(name) && e.contains(says), "{name}: {e}");
        std::fs::remove_file(_d.path().join(name)).unwrap();
    }
    let rows = lake.read_table("g").await.unwrap();
    assert_eq!(
        rows.iter().map(|b| b.num_rows()).sum::<usize>(),
        4,
        "nothing more was written"
    );
    assert_eq!(rows[0].schema().fields().len(), 2, "no column named with raw bytes");
}

/// A CSV column of integers whose next file holds dates: the lake refuses the run, naming the
/// column and both types, and keeps what it had.
#[tokio::test]
async fn a_csv_column_that_changes_type_between_runs_is_refused() {
    let (_d, loc) = local();
    put(&loc, "t/1.csv", "id,amount\n1,10\n").await;
    let lake = LakeSink::new(loc.child("lake"));
    let p = lake_pipeline(&loc, &lake, TableSpec::new("t").from_files("t/", FileFormat::csv()));
    p.run().await.unwrap().into_result().unwrap();
    put(&loc, "t/2.csv", "id,amount\n2,2025-07-24\n").await;
    let r = p.run().await.unwrap();
    let t = r.table("t").unwrap();
    assert_eq!(t.status, TableStatus::Failed);
    let e = t.error.as_deref().unwrap();
    assert!(
        e.contains("column `amount`") && e.contains("Date32") && e.contains("Int64"),
        "{e}"
    );
    assert_eq!(
        render_sorted(&lake.read_table("t").await.unwrap(), &[]),
        "+----+--------+\n| id | amount |\n+----+--------+\n| 1  | 10     |\n+----+--------+"
    );
    assert_eq!(t.watermark_after.as_ref().unwrap().files, 1, "2.csv is not bookmarked");
}

/// A broken quote costs its own line, never the rows after it: an error naming file and line,
/// or the line diverted and the rest loaded.
#[tokio::test]
async fn a_broken_quote_costs_its_line_not_the_rest_of_the_file() {
    let (_d, loc) = local();
    // Line 3 opens a quote that never closes; line 6 opens one that "closes" inside line 8's
    // field; the quoted field on lines 9-10 is fine.
    put(
        &loc,
        "q/a.csv",
        "id,name\n1,ann\n2,\"bob\n3,cy\n4,dan\n5,\"eve\n6,fay\n7,\"gus\"x\n8,\"two\nlines\"\n9,ida\n",
    )
    .await;
    let lake = LakeSink::new(loc.child("lake"));
    let spec = TableSpec::new("q").from_files("q/", FileFormat::csv());
    let r = lake_pipeline(&loc, &lake, spec.clone()).run().await.unwrap();
    let t = r.table("q").unwrap();
    assert_eq!(t.status, TableStatus::Failed);
    let e = t.error.as_deref().unwrap();
    assert!(e.contains("`q/a.csv` at line 3") && e.contains("never closed"), "{e}");
    assert!(lake.read_table("q").await.unwrap().is_empty());

    let r = lake_pipeline(&loc, &lake, spec.bad_rows(BadRows::Divert))
        .run()
        .await
        .unwrap()
        .into_result()
        .unwrap();
    let t = r.table("q").unwrap();
    assert_eq!((t.rejected_count, t.written_count), (2, 7));
    assert_eq!(
        render_sorted(&lake.read_table("q").await.unwrap(), &[]),
        "+----+-------+\n| id | name  |\n+----+-------+\n|    | lines |\n| 1  | ann   |\n| 3  | cy    |\n| 4  | dan   |\n\
         | 6  | fay   |\n| 7  | gusx  |\n| 8  | two   |\n| 9  | ida   |\n+----+-------+"
    );
    let text = rejects_text(&loc, "q").await;
    assert!(
        text.contains("q/a.csv,3,a quoted field opened on this line is never closed"),
        "{text}"
    );
    assert!(text.contains("q/a.csv,6,") && text.contains("\"2,\"\"bob\""), "{text}");
}

/// With bad rows diverted, a broken JSON line among the first lines (the schema's sample) is
/// diverted like one further down.
#[tokio::test]
async fn broken_json_lines_in_the_sample_are_diverted_too() {
    let (_d, loc) = local();
    put(&loc, "b/a.jsonl", "{\"id\":1}\n{\"id\":2\n[3]\n{\"id\":4}\n").await;
    put_bytes(&loc, "b/b.jsonl", b"{\"id\":5}\n{\"id\":\"\xff\"}\n".to_vec()).await;
    let lake = LakeSink::new(loc.child("lake"));
    let spec = TableSpec::new("b").from_files("b/", FileFormat::JsonLines);
    let r = lake_pipeline(&loc, &lake, spec.clone()).run().await.unwrap();
    let e = r.table("b").unwrap().error.clone().unwrap();
    assert!(e.contains("`b/a.jsonl` at line 2"), "{e}");
    let r = lake_pipeline(&loc, &lake, spec.bad_rows(BadRows::Divert))
        .run()
        .await
        .unwrap()
        .into_result()
        .unwrap();
    let t = r.table("b").unwrap();
    assert_eq!((t.rejected_count, t.written_count), (3, 3));
    assert_eq!(
        render_sorted(&lake.read_table("b").await.unwrap(), &[]),
        "+----+\n| id |\n+----+\n| 1  |\n| 4  |\n| 5  |\n+----+"
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

/// A query that places the watermark itself, as the seed's orders rule does: orders of the
/// last seven days (at or after the watermark's day) every run, and any order updated past the
/// watermark. `query` names `{watermark}` and reads `orders(order_id, order_date,
/// updated_at)`; `exec` runs a statement at the database. The watermark moves to the greatest
/// cursor read, never back; the bound is the stored value.
#[cfg(any(feature = "postgres", feature = "mysql"))]
async fn a_query_places_the_watermark(source: Arc<dyn Source>, query: String, exec: impl AsyncFn(&str)) {
    let recent = (chrono::Utc::now().date_naive() - chrono::TimeDelta::days(2)).to_string();
    exec(&format!(
        "INSERT INTO orders VALUES (1, '{recent}', '2025-07-01 00:00:00'), (2, '2025-01-01', '2025-07-01 00:00:00'), \
         (3, '2025-01-01', '2025-07-02 00:00:00')"
    ))
    .await;
    let (_dir, lake, wm) = temp_lake();
    let p = Pipeline::builder("q")
        .source_arc(source.clone())
        .sink(lake.clone())
        .watermarks(wm)
        .table(
            TableSpec::new("orders")
                .from_query(query)
                .mode(LoadMode::Incremental)
                .cursor(["updated_at"])
                .processed_at(false),
        )
        .build()
        .unwrap();
    // Chunks start where the last one ended: a query placing the lower end is refused.
    let chunked = Pipeline::builder("q2")
        .source_arc(source)
        .sink(lake.clone())
        .watermarks(ObjectStoreWatermarkStore::new(Location::memory()))
        .table(p.tables()[0].clone().primary_key(["order_id"]).chunk_rows(2))
        .build()
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(
        chunked.contains("chunked reads (TableSpec::chunk_rows) need a query that leaves the lower end"),
        "{chunked}"
    );
    let run = async || {
        let r = p.run().await.unwrap().into_result().unwrap();
        let t = r.table("orders").unwrap();
        let wm = t.watermark_after.as_ref().unwrap().cursor.as_ref().unwrap().to_string();
        (t.extracted_count, wm)
    };
    // The first run starts from the least timestamp: every row.
    assert_eq!(run().await, (3, "2025-07-02 00:00:00".to_string()));
    // The recent order again (the seven-day rule), and nothing else; the watermark stays.
    assert_eq!(run().await, (1, "2025-07-02 00:00:00".to_string()));
    exec("UPDATE orders SET updated_at = '2025-08-01 00:00:00' WHERE order_id = 2").await;
    assert_eq!(run().await, (2, "2025-08-01 00:00:00".to_string()));
    let rows = lake.read_table("orders").await.unwrap();
    let ids = etl_core::conformance::render_sorted(&rows, &["order_date", "updated_at"]);
    assert_eq!(
        ids,
        "+----------+\n| order_id |\n+----------+\n| 1        |\n| 1        |\n| 1        |\n| 2        |\n| 2        |\n\
         | 3        |\n+----------+"
    );
}

#[cfg(any(feature = "postgres", feature = "mysql"))]
mod chunked;
#[cfg(feature = "postgres")]
mod postgres;

#[cfg(feature = "mysql")]
mod mysql;

#[cfg(all(feature = "postgres", feature = "mysql"))]
mod late_commits;

#[cfg(all(feature = "postgres", feature = "mysql", feature = "sql"))]
mod sql;
