//! The conformance suite every source, sink and watermark store runs (feature `test-utils`).
//!
//! Each check panics with a message saying which guarantee broke. Connector tests call them
//! against the real service:
//!
//! - [`watermark_store`]: a missing watermark means first run; commit is compare-and-swap;
//!   history is kept. [`watermark_store_race`]: of many concurrent commits exactly one wins.
//! - [`sink`]: modes the sink refuses are refused; stage then commit is atomic; abort
//!   changes nothing; of two writers from the same state only one commits.
//! - [`pipeline_replay`]: a rerun of the same window changes nothing; a missing required
//!   table stops the run before anything is written; a mode the sink refuses is refused when
//!   the pipeline is built.
//! - [`source`]: a full read yields the expected rows; a read from the returned high-water
//!   mark yields nothing; a missing table is an error naming it.

use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use async_trait::async_trait;
use chrono::Utc;
use futures::TryStreamExt;

use crate::{
    Checkpoint, Error, LoadMode, Location, MemorySource, ModeOverrides, ObjectStoreWatermarkStore, Pipeline, Position,
    ReadRequest, Sink, Source, TableSpec, TableStatus, Watermark, WatermarkStore, WriteRequest,
};

/// Reads what a target holds, for the checks to compare.
#[async_trait]
pub trait TargetProbe: Send + Sync {
    /// Every row of `target` (any order); empty when it does not exist.
    async fn rows(&self, target: &str) -> Vec<RecordBatch>;
}

/// A TCP server on 127.0.0.1 that accepts connections and never says a word, for tests of
/// timeouts: returns its port. Its connections are held open for the life of the process.
pub fn silent_server() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a local port");
    let port = listener.local_addr().expect("local address").port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming().flatten() {
            held.push(conn);
        }
    });
    port
}

/// Checks that `err` is the retryable [`Error::Timeout`] of `phase`, naming `host`.
pub fn assert_timeout(err: &Error, host: &str, phase: &str) {
    match err {
        Error::Timeout { host: h, phase: p, .. } if h.contains(host) && p == phase => {
            assert!(err.is_retryable(), "a timeout may pass: {err}");
        }
        other => panic!("expected a timeout while {phase} naming {host}, got: {other}"),
    }
}

/// A unique name for a test's pipeline, table or prefix.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}_{}", &uuid::Uuid::new_v4().simple().to_string()[..10])
}

/// Renders batches as a table with rows sorted and the named columns dropped, so results
/// compare regardless of file order and of volatile columns.
pub fn render_sorted(batches: &[RecordBatch], drop: &[&str]) -> String {
    let kept: Vec<RecordBatch> = batches
        .iter()
        .map(|b| {
            let idx: Vec<usize> = (0..b.num_columns())
                .filter(|i| !drop.contains(&b.schema().field(*i).name().as_str()))
                .collect();
            b.project(&idx).expect("projection")
        })
        .filter(|b| b.num_rows() > 0)
        .collect();
    if kept.is_empty() {
        return String::from("(no rows)");
    }
    let text = arrow::util::pretty::pretty_format_batches(&kept)
        .expect("render")
        .to_string();
    let lines: Vec<&str> = text.lines().collect();
    // border, header, border, rows…, border
    let mut rows: Vec<&str> = lines[3..lines.len() - 1].to_vec();
    rows.sort_unstable();
    let mut out: Vec<&str> = lines[..3].to_vec();
    out.extend(rows);
    out.push(lines[lines.len() - 1]);
    out.join("\n")
}

/// The schema of the suite's sample table: `id`, `name`, `updated_at`.
pub fn sample_schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, true),
        Field::new("updated_at", DataType::Timestamp(TimeUnit::Microsecond, None), true),
    ]))
}

/// Sample rows with the given ids; `updated_at` is `id` seconds after 2025-01-01.
pub fn sample_batch(ids: &[i64]) -> RecordBatch {
    let base = chrono::NaiveDate::from_ymd_opt(2025, 1, 1)
        .expect("date")
        .and_hms_opt(0, 0, 0)
        .expect("time")
        .and_utc()
        .timestamp_micros();
    let cols: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(ids.to_vec())),
        Arc::new(StringArray::from(
            ids.iter().map(|i| format!("name {i}")).collect::<Vec<_>>(),
        )),
        Arc::new(TimestampMicrosecondArray::from(
            ids.iter().map(|i| base + i * 1_000_000).collect::<Vec<_>>(),
        )),
    ];
    RecordBatch::try_new(sample_schema(), cols).expect("sample batch")
}

fn watermark(pipeline: &str, table: &str, generation: u64, run: &str, cursor: i64) -> Watermark {
    Watermark {
        pipeline: pipeline.into(),
        table: table.into(),
        generation,
        run_id: run.into(),
        committed_at: Utc::now(),
        mode: Some(LoadMode::Incremental),
        window_low: None,
        position: Position {
            cursor: Some(crate::CursorValue::Int(cursor)),
            files: Default::default(),
            key: None,
        },
        rows: 1,
        reset: false,
    }
}

/// Checks a watermark store's contract: first run, CAS, history.
pub async fn watermark_store(store: &dyn WatermarkStore) {
    let (p, t) = (unique("wm"), "public.orders");
    assert!(
        store.load(&p, t).await.expect("load").is_none(),
        "a missing watermark must mean first run (None)"
    );
    let w1 = watermark(&p, t, 1, "run-1", 10);
    store.commit(None, &w1).await.expect("first commit");
    assert_eq!(
        store.load(&p, t).await.expect("load"),
        Some(w1.clone()),
        "load returns the committed watermark"
    );

    let stale = watermark(&p, t, 1, "run-stale", 99);
    let err = store
        .commit(None, &stale)
        .await
        .expect_err("a commit from a stale generation must lose");
    assert!(err.is_concurrent_run(), "stale commit must be ConcurrentRun, got {err}");
    assert!(err.to_string().contains(t), "the error names the table: {err}");
    assert_eq!(
        store.load(&p, t).await.expect("load"),
        Some(w1.clone()),
        "a lost commit changes nothing"
    );

    let w2 = watermark(&p, t, 2, "run-2", 20);
    store.commit(Some(&w1), &w2).await.expect("second commit");
    let bad = watermark(&p, t, 5, "run-x", 30);
    assert!(
        store.commit(Some(&w2), &bad).await.is_err(),
        "a generation that does not follow the expected one must be refused"
    );
    let hist = store.history(&p, t, 10).await.expect("history");
    assert_eq!(hist, vec![w2.clone(), w1], "history lists the last runs, newest first");
    assert!(
        store.load(&p, "other").await.expect("load").is_none(),
        "tables are independent"
    );
}

/// Checks that of many concurrent commits from the same generation exactly one wins. Run it
/// on stores whose conditional put is atomic.
pub async fn watermark_store_race(store: Arc<dyn WatermarkStore>) {
    let (p, t) = (unique("race"), "t");
    let base = watermark(&p, t, 1, "base", 0);
    store.commit(None, &base).await.expect("base");
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let store = store.clone();
            let (base, next) = (base.clone(), watermark(&p, t, 2, &format!("r{i}"), i));
            tokio::spawn(async move { (store.commit(Some(&base), &next).await, next) })
        })
        .collect();
    let mut winners = Vec::new();
    for task in tasks {
        let (res, next) = task.await.expect("task");
        match res {
            Ok(()) => winners.push(next),
            Err(e) => assert!(e.is_concurrent_run(), "a losing commit must be ConcurrentRun, got {e}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one concurrent commit wins");
    assert_eq!(
        store.load(&p, t).await.expect("load").as_ref(),
        winners.first(),
        "the winner is stored"
    );
}

fn checkpoint(run: &str, parent: Option<&str>, mode: LoadMode, rows: u64) -> Checkpoint {
    Checkpoint {
        run_id: run.into(),
        parent_run_id: parent.map(Into::into),
        mode,
        position: Position::default(),
        window_low: None,
        rows,
        committed_at: Utc::now(),
    }
}

/// Checks a sink's contract on a fresh target. `refused` lists the modes the sink must
/// refuse.
pub async fn sink(sink: Arc<dyn Sink>, probe: &dyn TargetProbe, refused: &[LoadMode]) {
    let target = unique("conf");
    let spec = TableSpec::new(target.clone())
        .primary_key(["id"])
        .cursor(["updated_at"]);
    for mode in LoadMode::ALL {
        let res = sink.check_mode(&spec, mode);
        if refused.contains(&mode) {
            let err = res.expect_err("a refused mode must be an error");
            assert!(
                matches!(err, Error::UnsupportedMode { .. }) && err.to_string().contains(mode.as_str()),
                "refusing {mode} must be UnsupportedMode naming it: {err}"
            );
        } else {
            res.unwrap_or_else(|e| panic!("mode {mode} must be accepted: {e}"));
        }
    }
    let req = |mode, run_id, last_checkpoint| WriteRequest {
        pipeline: "conformance",
        spec: &spec,
        mode,
        run_id,
        started_at: Utc::now(),
        last_checkpoint,
        watermark_home: None,
    };
    let empty = "(no rows)";
    let base_mode = if refused.contains(&LoadMode::Full) {
        LoadMode::Append
    } else {
        LoadMode::Full
    };

    // Stage, then commit.
    let mut w = sink.begin(req(base_mode, "c1", None)).await.expect("begin");
    w.write(sample_batch(&[1, 2, 3])).await.expect("write");
    let staged = w.stage().await.expect("stage");
    assert_eq!(staged.summary().rows, 3, "stage reports the rows written");
    assert_eq!(
        render_sorted(&probe.rows(&target).await, &[]),
        empty,
        "staged rows must be invisible"
    );
    staged
        .commit(checkpoint("c1", None, base_mode, 3))
        .await
        .expect("commit");
    let after_first = render_sorted(&probe.rows(&target).await, &[]);
    assert_eq!(
        after_first,
        render_sorted(&[sample_batch(&[1, 2, 3])], &[]),
        "committed rows are visible"
    );

    // Abort changes nothing.
    let mut w = sink
        .begin(req(LoadMode::Append, "c2", Some("c1")))
        .await
        .expect("begin");
    w.write(sample_batch(&[4])).await.expect("write");
    w.stage().await.expect("stage").abort().await.expect("abort");
    assert_eq!(
        render_sorted(&probe.rows(&target).await, &[]),
        after_first,
        "abort must change nothing"
    );

    // Two writers from the same state: one commits, the other loses and changes nothing.
    let mut a = sink
        .begin(req(LoadMode::Append, "c3", Some("c1")))
        .await
        .expect("begin a");
    let mut b = sink
        .begin(req(LoadMode::Append, "c4", Some("c1")))
        .await
        .expect("begin b");
    a.write(sample_batch(&[5])).await.expect("write a");
    b.write(sample_batch(&[6])).await.expect("write b");
    let a = a.stage().await.expect("stage a");
    let b = b.stage().await.expect("stage b");
    a.commit(checkpoint("c3", Some("c1"), LoadMode::Append, 1))
        .await
        .expect("commit a");
    let err = b
        .commit(checkpoint("c4", Some("c1"), LoadMode::Append, 1))
        .await
        .expect_err("the second of two concurrent commits must lose");
    assert!(err.is_concurrent_run(), "it must be ConcurrentRun: {err}");
    assert_eq!(
        render_sorted(&probe.rows(&target).await, &[]),
        render_sorted(&[sample_batch(&[1, 2, 3, 5])], &[]),
        "only the winner's rows are added"
    );
    let cp = sink.last_checkpoint("conformance", &spec).await.expect("checkpoint");
    assert_eq!(
        cp.map(|c| c.run_id),
        Some("c3".to_string()),
        "the last checkpoint is the winner's"
    );

    // A run that started before another committed cannot commit after it.
    let stale = async {
        let mut w = sink.begin(req(LoadMode::Append, "c5", Some("c1"))).await?;
        w.write(sample_batch(&[7])).await?;
        w.stage()
            .await?
            .commit(checkpoint("c5", Some("c1"), LoadMode::Append, 1))
            .await
    };
    let err = stale
        .await
        .expect_err("a writer from a stale checkpoint must not commit");
    assert!(err.is_concurrent_run(), "it must be ConcurrentRun: {err}");
    assert_eq!(
        render_sorted(&probe.rows(&target).await, &[]),
        render_sorted(&[sample_batch(&[1, 2, 3, 5])], &[]),
        "a stale writer changes nothing"
    );
}

/// Checks the runner with this sink: incremental runs, a rerun that changes nothing, a
/// missing required table, the override map, and a refused mode at build time.
pub async fn pipeline_replay(sink: Arc<dyn Sink>, probe: &dyn TargetProbe, refused: &[LoadMode]) {
    let name = unique("pipe");
    let target = unique("events");
    let source = Arc::new(MemorySource::new());
    source.append("events", sample_batch(&[1, 2])).expect("append");
    let spec = TableSpec::new("events")
        .target(target.clone())
        .mode(LoadMode::Incremental)
        .primary_key(["id"])
        .cursor(["updated_at"]);
    let wm = Arc::new(ObjectStoreWatermarkStore::new(Location::memory()));
    let build = |spec: TableSpec| {
        Pipeline::builder(name.clone())
            .source_arc(source.clone())
            .sink_arc(sink.clone())
            .watermarks_arc(wm.clone())
            .table(spec)
            .build()
    };
    let p = build(spec.clone()).expect("build");
    let drop = ["etl_processed_at"];

    let r1 = p.run().await.expect("run 1");
    let t1 = r1.table("events").expect("report");
    assert_eq!(t1.status, TableStatus::Committed, "first run commits: {:?}", t1.error);
    assert_eq!(
        (t1.extracted_count, t1.written_count),
        (2, 2),
        "first run reads everything"
    );
    let after1 = render_sorted(&probe.rows(&target).await, &drop);
    assert_eq!(after1, render_sorted(&[sample_batch(&[1, 2])], &[]));

    let r2 = p.run().await.expect("run 2");
    let t2 = r2.table("events").expect("report");
    assert_eq!(
        t2.status,
        TableStatus::NoNewData,
        "a rerun of the same window finds nothing new"
    );
    assert_eq!(t2.written_count, 0);
    assert_eq!(
        t2.watermark_after, t1.watermark_after,
        "no new data leaves the watermark"
    );
    assert_eq!(
        render_sorted(&probe.rows(&target).await, &drop),
        after1,
        "a rerun changes nothing"
    );

    source.append("events", sample_batch(&[3])).expect("append");
    let r3 = p.run().await.expect("run 3");
    let t3 = r3.table("events").expect("report");
    assert_eq!(
        (t3.status, t3.written_count),
        (TableStatus::Committed, 1),
        "only the new row: {:?}",
        t3.error
    );
    assert_eq!(
        render_sorted(&probe.rows(&target).await, &drop),
        render_sorted(&[sample_batch(&[1, 2, 3])], &[])
    );

    // A missing required table stops the run before anything is written.
    let p2 = Pipeline::builder(name.clone())
        .source_arc(source.clone())
        .sink_arc(sink.clone())
        .watermarks_arc(wm.clone())
        .table(spec.clone())
        .table(TableSpec::new("nope").mode(LoadMode::Append))
        .build()
        .expect("build");
    source.append("events", sample_batch(&[4])).expect("append");
    let err = p2.run().await.expect_err("a missing required table must fail the run");
    assert!(
        matches!(err, Error::TableNotFound { ref table, .. } if table == "nope"),
        "{err}"
    );
    assert_eq!(
        render_sorted(&probe.rows(&target).await, &drop),
        render_sorted(&[sample_batch(&[1, 2, 3])], &[]),
        "nothing is written when a required table is missing"
    );

    // The override map: an unknown table is refused; a refused mode is refused.
    let err = p
        .run_with(&ModeOverrides::new().with("ghost", LoadMode::Full))
        .await
        .expect_err("unknown table");
    assert!(err.to_string().contains("ghost"), "{err}");
    for mode in refused {
        let err = p
            .run_with(&ModeOverrides::new().with("events", *mode))
            .await
            .expect_err("a refused mode in the override map must fail the run");
        assert!(matches!(err, Error::UnsupportedMode { .. }), "{err}");
        let err = build(spec.clone().mode(*mode)).expect_err("a refused mode must fail the build");
        assert!(matches!(err, Error::UnsupportedMode { .. }), "{err}");
    }
    if !refused.contains(&LoadMode::Full) {
        let r = p
            .run_with(&ModeOverrides::from_json(r#"{"events":"full"}"#).expect("json"))
            .await
            .expect("override run");
        let t = r.table("events").expect("report");
        assert_eq!(
            (t.mode, t.status, t.written_count),
            (LoadMode::Full, TableStatus::Committed, 4)
        );
        assert_eq!(
            render_sorted(&probe.rows(&target).await, &drop),
            render_sorted(&[sample_batch(&[1, 2, 3, 4])], &[]),
            "FULL replaces the target with the whole source"
        );
        assert_eq!(t.target_count, Some(4), "the report counts the target after commit");
        assert_eq!(t.difference, Some(0));
    }
}

/// Checks a source: a full read of `spec` yields `expected` (as [`render_sorted`] prints it,
/// without `drop` columns); a read from the high-water mark yields nothing; a table that does
/// not exist is [`Error::TableNotFound`] naming the table it looked for (for
/// [`crate::SourceRef::Table`], that name, qualified or not).
pub async fn source(source: &dyn Source, spec: &TableSpec, missing: &TableSpec, expected: &str, drop: &[&str]) {
    source.check(spec).await.expect("the table exists");
    let read = |mode, from| ReadRequest {
        spec,
        mode,
        from,
        run_id: "conformance",
        batch_size: 2,
        limit: None,
        until: None,
        keys: None,
        files: None,
    };
    let full = source.read(read(LoadMode::Full, None)).await.expect("read");
    let high = full.high.clone();
    let batches: Vec<RecordBatch> = full.stream.try_collect().await.expect("stream");
    assert_eq!(render_sorted(&batches, drop), expected, "a full read yields the table");
    assert!(
        batches.iter().all(|b| b.num_rows() <= 2),
        "batches respect the batch size"
    );

    let again = source
        .read(read(LoadMode::Incremental, Some(&high)))
        .await
        .expect("read");
    let rows: usize = again
        .stream
        .try_collect::<Vec<_>>()
        .await
        .expect("stream")
        .iter()
        .map(|b| b.num_rows())
        .sum();
    assert_eq!(rows, 0, "a read from the high-water mark yields nothing");

    let err = source
        .check(missing)
        .await
        .expect_err("a missing table must be an error");
    match (&err, &missing.source) {
        (Error::TableNotFound { table, .. }, crate::SourceRef::Table(t)) => {
            let last = crate::kit::sql::split_qualified(t).pop().unwrap_or_default();
            assert!(
                table == t || table.ends_with(&format!(".{last}")),
                "the error names the table looked for ({t}), not the spec: {err}"
            );
        }
        (Error::TableNotFound { .. }, _) => {}
        _ => panic!("expected TableNotFound: {err}"),
    }
}

/// A fresh prefix on the test S3 server named by `ETL_TEST_S3_ENDPOINT` and
/// `ETL_TEST_S3_BUCKET` (started by `scripts/services.sh`). Panics, naming what to start,
/// when they are not set.
#[cfg(feature = "s3")]
pub fn s3_location() -> Location {
    let endpoint = std::env::var("ETL_TEST_S3_ENDPOINT").unwrap_or_else(|_| {
        panic!("ETL_TEST_S3_ENDPOINT is not set: start the S3 server with `scripts/services.sh start` and `eval \"$(scripts/services.sh env)\"`")
    });
    let bucket = std::env::var("ETL_TEST_S3_BUCKET").expect("ETL_TEST_S3_BUCKET is not set (scripts/services.sh env)");
    Location::s3(&bucket, &unique("t"), Some(&endpoint)).expect("S3 location")
}
