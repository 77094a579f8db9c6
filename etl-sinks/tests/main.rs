//! Integration tests of the lake sink, on local disk and on the S3 server.

use std::process::Command;
use std::sync::Arc;

use arrow::record_batch::RecordBatch;
use etl_core::conformance::{self, TargetProbe, render_sorted, sample_batch};
use etl_core::{
    LoadMode, Location, MemorySource, ObjectStoreWatermarkStore, Partitioning, Pipeline, TableSpec, TableStatus,
    WatermarkStore,
};
use etl_sinks::lake::{LakeOptions, LakeSink};

#[derive(Debug)]
struct Probe(LakeSink);

#[async_trait::async_trait]
impl TargetProbe for Probe {
    async fn rows(&self, target: &str) -> Vec<RecordBatch> {
        self.0.read_table(target).await.expect("read lake table")
    }
}

fn local() -> (tempfile::TempDir, LakeSink) {
    let dir = tempfile::tempdir().unwrap();
    let sink = LakeSink::new(Location::local(dir.path()).unwrap());
    (dir, sink)
}

const REFUSED: &[LoadMode] = &[LoadMode::Upsert];

#[tokio::test]
async fn lake_conformance_local() {
    let (_d, sink) = local();
    conformance::sink(Arc::new(sink.clone()), &Probe(sink.clone()), REFUSED).await;
    conformance::pipeline_replay(Arc::new(sink.clone()), &Probe(sink), REFUSED).await;
}

#[cfg(feature = "s3")]
#[tokio::test]
async fn lake_conformance_s3() {
    let sink = LakeSink::new(conformance::s3_location());
    conformance::sink(Arc::new(sink.clone()), &Probe(sink.clone()), REFUSED).await;
    conformance::pipeline_replay(Arc::new(sink.clone()), &Probe(sink), REFUSED).await;
}

fn pipeline(name: &str, source: Arc<MemorySource>, sink: &LakeSink, spec: TableSpec) -> Pipeline {
    Pipeline::builder(name)
        .source_arc(source)
        .sink(sink.clone())
        .watermarks(ObjectStoreWatermarkStore::new(sink.location().child("_etl/watermarks")))
        .table(spec)
        .build()
        .unwrap()
}

/// Relative paths of every file under `dir`, sorted.
fn files(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    out.sort();
    out
}

/// What DuckDB answers to `sql` (with `{glob}` replaced by `glob`), as Python prints a row.
pub fn duckdb(sql: &str, glob: &std::path::Path) -> Result<String, String> {
    let python = std::env::var("ETL_TEST_PYTHON")
        .expect("ETL_TEST_PYTHON is not set: run `eval \"$(scripts/services.sh env)\"` (DuckDB lives in its venv)");
    let sql = sql.replace("{glob}", &glob.display().to_string());
    let out = Command::new(python)
        .args(["-c", &format!("import duckdb; print(duckdb.sql({sql:?}).fetchall())")])
        .output()
        .unwrap();
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// A column whose type changes between runs: refused naming it, with nothing written, unless
/// the change is a safe widening; a narrower type is written in the table's. DuckDB reads the
/// table after every run.
#[tokio::test]
async fn a_column_whose_type_changes_is_refused_or_widened_safely() {
    use arrow::array::{ArrayRef, Float32Array, Float64Array, Int32Array, Int64Array, StringArray};
    let (dir, sink) = local();
    let batch = |cols: Vec<(&str, ArrayRef)>| RecordBatch::try_from_iter(cols).unwrap();
    let run = |mode: LoadMode, b: RecordBatch| {
        let source = Arc::new(MemorySource::new());
        source.append("t", b).unwrap();
        let sink = sink.clone();
        async move {
            let spec = TableSpec::new("t").mode(mode).processed_at(false);
            pipeline("types", source, &sink, spec).run().await.unwrap()
        }
    };
    let glob = dir.path().join("t/*.parquet");
    let read = || {
        duckdb(
            "SELECT count(*), typeof(min(id)), typeof(min(amount)) FROM read_parquet('{glob}', union_by_name = true)",
            &glob,
        )
    };
    let ints = |ids: Vec<i64>| Arc::new(Int64Array::from(ids)) as ArrayRef;

    let r = run(
        LoadMode::Append,
        batch(vec![("id", ints(vec![1, 2])), ("amount", ints(vec![10, 20]))]),
    )
    .await;
    assert_eq!(r.table("t").unwrap().status, TableStatus::Committed);
    assert_eq!(read().unwrap(), "[(2, 'BIGINT', 'BIGINT')]");

    // Integers, then text (or a float) in the same column: refused, nothing written.
    for (found, col) in [
        ("Utf8", Arc::new(StringArray::from(vec!["2025-07-24"])) as ArrayRef),
        ("Float64", Arc::new(Float64Array::from(vec![1.5])) as ArrayRef),
    ] {
        let r = run(LoadMode::Append, batch(vec![("id", ints(vec![3])), ("amount", col)])).await;
        let t = r.table("t").unwrap();
        assert_eq!((t.status, t.written_count), (TableStatus::Failed, 0));
        let e = t.error.as_deref().unwrap();
        assert!(
            e.contains("column `amount`")
                && e.contains(&format!("type {found} in this run's rows"))
                && e.contains("Int64 (as in the lake table)"),
            "{e}"
        );
        assert_eq!(read().unwrap(), "[(2, 'BIGINT', 'BIGINT')]");
    }

    // A narrower type is written as the table's; a wider one is a safe widening.
    let r = run(
        LoadMode::Append,
        batch(vec![
            ("id", Arc::new(Int32Array::from(vec![3])) as ArrayRef),
            ("amount", ints(vec![30])),
            ("score", Arc::new(Float32Array::from(vec![0.5])) as ArrayRef),
        ]),
    )
    .await;
    assert_eq!(
        r.table("t").unwrap().status,
        TableStatus::Committed,
        "{:?}",
        r.table("t")
    );
    assert_eq!(read().unwrap(), "[(3, 'BIGINT', 'BIGINT')]");
    let r = run(
        LoadMode::Append,
        batch(vec![
            ("id", ints(vec![4])),
            ("amount", ints(vec![40])),
            ("score", Arc::new(Float64Array::from(vec![0.25])) as ArrayRef),
        ]),
    )
    .await;
    assert_eq!(r.table("t").unwrap().status, TableStatus::Committed);
    assert_eq!(
        duckdb(
            "SELECT count(*), sum(score), typeof(sum(score)) FROM read_parquet('{glob}', union_by_name = true)",
            &glob
        )
        .unwrap(),
        "[(4, 0.75, 'DOUBLE')]"
    );
    let types: Vec<String> = sink
        .read_table("t")
        .await
        .unwrap()
        .iter()
        .map(|b| b.schema().field_with_name("id").unwrap().data_type().to_string())
        .collect();
    assert_eq!(types, ["Int64"; 3], "every file holds `id` as the table's Int64");

    // FULL replaces the table, so its types may change.
    let r = run(
        LoadMode::Full,
        batch(vec![
            ("id", ints(vec![9])),
            ("amount", Arc::new(StringArray::from(vec!["x"])) as ArrayRef),
        ]),
    )
    .await;
    assert_eq!(r.table("t").unwrap().status, TableStatus::Committed);
    assert_eq!(read().unwrap(), "[(1, 'BIGINT', 'VARCHAR')]");
    let r = run(
        LoadMode::Append,
        batch(vec![("id", ints(vec![10])), ("amount", ints(vec![1]))]),
    )
    .await;
    assert_eq!(r.table("t").unwrap().status, TableStatus::Failed);
}

#[tokio::test]
async fn partitions_and_file_names_follow_the_layout() {
    let (dir, sink) = local();
    let source = Arc::new(MemorySource::new());
    // ids 1..=3 are 1..3 seconds after 2025-01-01; 86_400 lands on 2025-01-02.
    source.append("orders", sample_batch(&[1, 2, 86_400])).unwrap();
    let spec = TableSpec::new("orders").partition_by(Partitioning::ByDate("updated_at".into()));
    let r = pipeline("layout", source.clone(), &sink, spec).run().await.unwrap();
    let run_id = &r.run_id;
    let t = r.table("orders").unwrap();
    assert_eq!(
        (t.status, t.written_count, t.files_written),
        (TableStatus::Committed, 3, 2)
    );
    let stamp = r.started_at.format("%Y%m%d_%H%M%S").to_string();
    let data: Vec<String> = files(dir.path())
        .into_iter()
        .filter(|f| f.starts_with("orders/"))
        .collect();
    let mut expected = vec![
        format!("orders/year=2025/month=1/day=1/orders_{stamp}_{run_id}_0000"),
        format!("orders/year=2025/month=1/day=2/orders_{stamp}_{run_id}_0000"),
    ];
    expected.sort();
    assert_eq!(data.len(), 2, "{data:?}");
    for (f, e) in data.iter().zip(&expected) {
        assert!(
            f.starts_with(e) && f.ends_with(".parquet"),
            "{f} should look like {e}N.parquet"
        );
    }
    assert!(
        !files(dir.path()).iter().any(|f| f.starts_with("_etl/staging/")),
        "nothing is left in staging after a commit"
    );

    // Processing-date partitions come from the run's start time.
    let spec = TableSpec::new("orders")
        .target("orders_by_run")
        .partition_by(Partitioning::ByProcessingDate);
    let r = pipeline("layout2", source, &sink, spec).run().await.unwrap();
    let day = r
        .started_at
        .format("processing_year=%Y/processing_month=%-m/processing_day=%-d")
        .to_string();
    let data: Vec<String> = files(dir.path())
        .into_iter()
        .filter(|f| f.starts_with("orders_by_run/"))
        .collect();
    assert_eq!(data.len(), 1);
    assert!(
        data[0].starts_with(&format!("orders_by_run/{day}/orders_by_run_")),
        "{data:?}"
    );
}

#[tokio::test]
async fn files_roll_at_the_target_size() {
    let dir = tempfile::tempdir().unwrap();
    let sink = LakeSink::new(Location::local(dir.path()).unwrap()).with_options(LakeOptions {
        target_file_size: 1,
        ..LakeOptions::default()
    });
    let source = Arc::new(MemorySource::new());
    for chunk in (1..=40).collect::<Vec<i64>>().chunks(10) {
        source.append("t", sample_batch(chunk)).unwrap();
    }
    let r = pipeline("roll", source, &sink, TableSpec::new("t"))
        .run()
        .await
        .unwrap();
    let t = r.table("t").unwrap();
    assert_eq!(
        t.files_written, 4,
        "one file per batch once each passes the target size"
    );
    let rows = sink.read_table("t").await.unwrap();
    assert_eq!(
        render_sorted(&rows, &["etl_processed_at"]),
        render_sorted(&[sample_batch(&(1..=40).collect::<Vec<_>>())], &[])
    );
}

#[tokio::test]
async fn every_mode_the_lake_supports() {
    let (_d, sink) = local();
    let source = Arc::new(MemorySource::new());
    source.append("t", sample_batch(&[1, 2])).unwrap();
    let rows = |ids: &[i64]| render_sorted(&[sample_batch(ids)], &[]);
    let read = || async { render_sorted(&sink.read_table("t").await.unwrap(), &["etl_processed_at"]) };

    let append = pipeline(
        "append",
        source.clone(),
        &sink,
        TableSpec::new("t").mode(LoadMode::Append),
    );
    append.run().await.unwrap().into_result().unwrap();
    append.run().await.unwrap().into_result().unwrap();
    assert_eq!(
        read().await,
        rows(&[1, 1, 2, 2]),
        "APPEND inserts blindly, reruns included"
    );

    let trunc = pipeline(
        "trunc",
        source.clone(),
        &sink,
        TableSpec::new("t").mode(LoadMode::TruncateInsert),
    );
    let r = trunc.run().await.unwrap().into_result().unwrap();
    assert_eq!(read().await, rows(&[1, 2]), "TRUNCATE_INSERT empties and refills");
    assert_eq!(r.table("t").unwrap().target_count, Some(2));

    source.append("t", sample_batch(&[3])).unwrap();
    let full = pipeline("full", source.clone(), &sink, TableSpec::new("t").mode(LoadMode::Full));
    let r = full.run().await.unwrap().into_result().unwrap();
    assert_eq!(read().await, rows(&[1, 2, 3]), "FULL replaces the table");
    assert_eq!(r.table("t").unwrap().difference, Some(0));

    let inc = pipeline(
        "inc",
        source.clone(),
        &sink,
        TableSpec::new("t").mode(LoadMode::Incremental).cursor(["updated_at"]),
    );
    let r = inc.run().await.unwrap().into_result().unwrap();
    assert_eq!(
        r.table("t").unwrap().written_count,
        3,
        "first incremental run reads everything"
    );
    source.append("t", sample_batch(&[4])).unwrap();
    let r = inc.run().await.unwrap().into_result().unwrap();
    assert_eq!(r.table("t").unwrap().written_count, 1);
    assert_eq!(
        read().await,
        rows(&[1, 1, 2, 2, 3, 3, 4]),
        "INCREMENTAL appends only what is new"
    );

    let err = Pipeline::builder("up")
        .source_arc(source)
        .sink(sink.clone())
        .watermarks(ObjectStoreWatermarkStore::new(Location::memory()))
        .table(
            TableSpec::new("t")
                .mode(LoadMode::Upsert)
                .primary_key(["id"])
                .cursor(["updated_at"]),
        )
        .build()
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("UPSERT") && err.contains("lake") && err.contains("INCREMENTAL"),
        "{err}"
    );
}

#[tokio::test]
async fn keep_latest_collapses_versions_and_reports_it() {
    let (_d, sink) = local();
    let source = Arc::new(MemorySource::new());
    let a = sample_batch(&[1, 2]);
    // Key 1 again, later: same id, a newer updated_at.
    let b = sample_batch(&[5]);
    let ids = arrow::array::Int64Array::from(vec![1]);
    let b = RecordBatch::try_new(
        b.schema(),
        vec![Arc::new(ids), b.column(1).clone(), b.column(2).clone()],
    )
    .unwrap();
    source.append("t", a).unwrap();
    source.append("t", b).unwrap();
    let spec = TableSpec::new("t")
        .primary_key(["id"])
        .cursor(["updated_at"])
        .keep_latest();
    let r = pipeline("latest", source, &sink, spec)
        .run()
        .await
        .unwrap()
        .into_result()
        .unwrap();
    let t = r.table("t").unwrap();
    assert_eq!((t.extracted_count, t.collapsed_count, t.written_count), (3, 1, 2));
    let got = render_sorted(&sink.read_table("t").await.unwrap(), &["etl_processed_at"]);
    assert_eq!(
        got,
        "+----+--------+---------------------+\n| id | name   | updated_at          |\n+----+--------+---------------------+\n| 1  | name 5 | 2025-01-01T00:00:05 |\n| 2  | name 2 | 2025-01-01T00:00:02 |\n+----+--------+---------------------+"
    );
}

/// A commit log that was edited — its newest record deleted, or a marker that names another
/// run — is a named error: no run reports `Committed` for files that never reach the table.
#[tokio::test]
async fn an_edited_commit_log_is_a_named_error_never_a_lost_commit() {
    let (dir, sink) = local();
    let source = Arc::new(MemorySource::new());
    source.append("t", sample_batch(&[1, 2])).unwrap();
    let spec = TableSpec::new("t").mode(LoadMode::Incremental).cursor(["updated_at"]);
    let p = pipeline("edited", source.clone(), &sink, spec);
    p.run().await.unwrap().into_result().unwrap();
    source.append("t", sample_batch(&[3])).unwrap();
    p.run().await.unwrap().into_result().unwrap();
    let commits = dir.path().join("_etl/commits/t");
    let record = |n: u64| commits.join(format!("{n:020}.json"));
    let wm = ObjectStoreWatermarkStore::new(sink.location().child("_etl/watermarks"));
    let generation = || async { wm.load("edited", "t").await.unwrap().unwrap().generation };
    assert_eq!(generation().await, 2);

    // The newest record removed, its marker left.
    let saved = std::fs::read(record(2)).unwrap();
    std::fs::remove_file(record(2)).unwrap();
    source.append("t", sample_batch(&[4])).unwrap();
    let r = p.run().await.unwrap();
    let t = r.table("t").unwrap();
    assert_eq!((t.status, t.written_count), (TableStatus::Failed, 0), "{t:?}");
    let e = t.error.as_deref().unwrap();
    assert!(
        e.contains("commit record 2 of table `t` is missing but marked applied"),
        "{e}"
    );
    assert_eq!(generation().await, 2, "the watermark did not move");
    assert!(!files(dir.path()).iter().any(|f| f.starts_with("_etl/staging/")));

    // A marker naming another run than its record.
    std::fs::write(record(2), &saved).unwrap();
    std::fs::write(commits.join(format!("{:020}.applied", 2)), "someone-else").unwrap();
    let r = p.run().await.unwrap();
    let e = r.table("t").unwrap().error.clone().unwrap();
    assert!(e.contains("its applied marker names run `someone-else`"), "{e}");
    assert_eq!(generation().await, 2);

    // Restored, the next run loads what was new, once.
    let run2: serde_json::Value = serde_json::from_slice(&saved).unwrap();
    std::fs::write(
        commits.join(format!("{:020}.applied", 2)),
        run2["checkpoint"]["run_id"].as_str().unwrap(),
    )
    .unwrap();
    let r = p.run().await.unwrap().into_result().unwrap();
    assert_eq!(r.table("t").unwrap().written_count, 1);
    assert_eq!(
        render_sorted(
            &sink.read_table("t").await.unwrap(),
            &["etl_processed_at", "name", "updated_at"]
        ),
        "+----+\n| id |\n+----+\n| 1  |\n| 2  |\n| 3  |\n| 4  |\n+----+"
    );
}

// ---------------------------------------------------------------- crashes

fn crash_pipeline(dir: &std::path::Path) -> (Pipeline, LakeSink, ObjectStoreWatermarkStore) {
    let sink = LakeSink::new(Location::local(dir.join("lake")).unwrap());
    let wm = ObjectStoreWatermarkStore::new(Location::local(dir.join("wm")).unwrap());
    let source = MemorySource::new();
    source.append("events", sample_batch(&[1, 2, 3])).unwrap();
    let p = Pipeline::builder("crash")
        .source(source)
        .sink(sink.clone())
        .watermarks(wm.clone())
        .table(
            TableSpec::new("events")
                .mode(LoadMode::Incremental)
                .cursor(["updated_at"])
                .partition_by(Partitioning::ByDate("updated_at".into())),
        )
        .build()
        .unwrap();
    (p, sink, wm)
}

/// Run by the crash tests in a child process, which the failpoint kills.
#[tokio::test]
#[ignore = "run as a child process by the crash tests"]
async fn crash_child() {
    let dir = std::env::var("ETL_CRASH_DIR").expect("ETL_CRASH_DIR");
    let (p, _, _) = crash_pipeline(std::path::Path::new(&dir));
    let _ = p.run().await;
    panic!("the failpoint {:?} did not fire", std::env::var("ETL_FAILPOINT"));
}

fn kill_at(dir: &std::path::Path, failpoint: &str) {
    kill_child_at("crash_child", dir, failpoint);
}

/// Runs the ignored test `child` in a child process with `ETL_FAILPOINT=failpoint` and
/// `ETL_CRASH_DIR=dir`, and checks that the failpoint killed it.
fn kill_child_at(child: &str, dir: &std::path::Path, failpoint: &str) {
    let status = Command::new(std::env::current_exe().unwrap())
        .args([child, "--exact", "--ignored", "--nocapture", "--test-threads=1"])
        .env("ETL_FAILPOINT", failpoint)
        .env("ETL_CRASH_DIR", dir)
        .status()
        .unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        status.signal(),
        Some(6),
        "the child must die by abort at {failpoint}: {status:?}"
    );
}

#[tokio::test]
async fn killed_between_stage_and_commit_then_rerun() {
    let dir = tempfile::tempdir().unwrap();
    kill_at(dir.path(), "after_stage");
    let (p, sink, wm) = crash_pipeline(dir.path());
    let lake_files = files(&dir.path().join("lake"));
    assert!(
        lake_files.iter().any(|f| f.starts_with("_etl/staging/")),
        "the dead run staged files"
    );
    assert!(
        sink.read_table("events").await.unwrap().is_empty(),
        "nothing visible after the crash"
    );
    assert!(
        wm.load("crash", "events").await.unwrap().is_none(),
        "watermark untouched"
    );

    let r = p.run().await.unwrap().into_result().unwrap();
    assert_eq!(r.table("events").unwrap().written_count, 3);
    assert_eq!(
        render_sorted(&sink.read_table("events").await.unwrap(), &["etl_processed_at"]),
        render_sorted(&[sample_batch(&[1, 2, 3])], &[]),
        "exactly one clean run's rows"
    );
    assert!(
        !files(&dir.path().join("lake"))
            .iter()
            .any(|f| f.starts_with("_etl/staging/")),
        "the dead run's staged files were cleaned"
    );
    assert_eq!(wm.load("crash", "events").await.unwrap().unwrap().generation, 1);
}

#[tokio::test]
async fn killed_between_commit_and_watermark_then_rerun() {
    let dir = tempfile::tempdir().unwrap();
    kill_at(dir.path(), "after_sink_commit");
    let (p, sink, wm) = crash_pipeline(dir.path());
    assert_eq!(
        sink.read_table("events")
            .await
            .unwrap()
            .iter()
            .map(|b| b.num_rows())
            .sum::<usize>(),
        3
    );
    assert!(
        wm.load("crash", "events").await.unwrap().is_none(),
        "the dead run did not store its watermark"
    );

    let r = p.run().await.unwrap().into_result().unwrap();
    let t = r.table("events").unwrap();
    assert!(t.recovered, "the rerun completes the dead run's watermark");
    assert_eq!(t.status, TableStatus::NoNewData, "and then finds nothing new: {t:?}");
    assert_eq!(
        render_sorted(&sink.read_table("events").await.unwrap(), &["etl_processed_at"]),
        render_sorted(&[sample_batch(&[1, 2, 3])], &[]),
        "exactly one clean run's rows, none twice"
    );
    let w = wm.load("crash", "events").await.unwrap().unwrap();
    assert_eq!(w.generation, 1);
    assert_eq!(w.rows, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_concurrent_runs_write_the_window_once() {
    for round in 0..5 {
        let dir = tempfile::tempdir().unwrap();
        let (a, sink, wm) = crash_pipeline(dir.path());
        let (b, _, _) = crash_pipeline(dir.path());
        let (ra, rb) = tokio::join!(a.run(), b.run());
        let mut statuses: Vec<(TableStatus, Option<String>)> = [ra.unwrap(), rb.unwrap()]
            .into_iter()
            .map(|r| (r.tables[0].status, r.tables[0].error.clone()))
            .collect();
        statuses.sort_by_key(|(s, _)| format!("{s:?}"));
        // One run commits; the other either lost the race (ConcurrentRun, even when the
        // winner's tidy removed its doomed staging files under it) and changed nothing, or
        // started after the commit point and found nothing new.
        assert_eq!(statuses[0].0, TableStatus::Committed, "round {round}: {statuses:?}");
        match &statuses[1] {
            (TableStatus::Failed, Some(e)) if e.contains("another run") => {}
            (TableStatus::NoNewData, None) => {}
            other => panic!("round {round}: unexpected second outcome {other:?}"),
        }
        assert_eq!(
            render_sorted(&sink.read_table("events").await.unwrap(), &["etl_processed_at"]),
            render_sorted(&[sample_batch(&[1, 2, 3])], &[]),
            "round {round}: the window is written exactly once"
        );
        assert_eq!(wm.load("crash", "events").await.unwrap().unwrap().generation, 1);
    }
}

mod crawl;

#[cfg(feature = "delta")]
mod delta;

#[cfg(feature = "postgres")]
mod postgres;

/// Files under `dir`, at any depth (none when it is not there).
#[cfg(any(feature = "postgres", feature = "snowflake", feature = "delta"))]
fn files_under(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |rd| {
        rd.flatten()
            .map(|e| if e.path().is_dir() { files_under(&e.path()) } else { 1 })
            .sum()
    })
}

/// A connection to the test Postgres and a schema name of the test's own.
async fn pg_source(prefix: &str) -> (tokio_postgres::Client, String, String) {
    let url = std::env::var("ETL_TEST_PG").unwrap_or_else(|_| {
        panic!("ETL_TEST_PG is not set: run `scripts/services.sh start` and `eval \"$(scripts/services.sh env)\"`")
    });
    let (pg, c) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(c);
    (pg, url, conformance::unique(prefix))
}

/// `src.items` read INCREMENTAL by `updated_at`, keyed by `id`.
fn items_of(src: &str) -> TableSpec {
    TableSpec::new("items")
        .from_table(format!("{src}.items"))
        .mode(LoadMode::Incremental)
        .primary_key(["id"])
        .cursor(["updated_at"])
}

/// A pipeline from the test Postgres into the lake, its watermarks in the lake.
fn pg_to_lake(name: &str, url: &str, sink: &LakeSink, spec: TableSpec) -> Pipeline {
    Pipeline::builder(name)
        .source(etl_connectors::postgres::PostgresSource::new(url).unwrap())
        .sink(sink.clone())
        .watermarks(ObjectStoreWatermarkStore::new(sink.location().child("_etl/watermarks")))
        .table(spec)
        .build()
        .unwrap()
}

/// Rows deleted at a Postgres source are marked in an INCREMENTAL lake by tombstone rows,
/// which DuckDB filters out of the current rows; a key the source inserts again is live again.
#[tokio::test]
async fn deletes_at_the_source_are_marked_in_the_lake() {
    let (pg, url, src) = pg_source("lake_del").await;
    let sql = |s: &str| s.replace("$Q", &src);
    pg.batch_execute(&sql(
        "CREATE SCHEMA $Q; CREATE TABLE $Q.items (id bigint PRIMARY KEY, name text, updated_at timestamp NOT NULL);
         INSERT INTO $Q.items SELECT i, 'n' || i, '2025-07-01'::timestamp + i * interval '1 minute'
           FROM generate_series(1, 100) i;",
    ))
    .await
    .unwrap();
    let (dir, sink) = local();
    let p = pg_to_lake(
        "lake_del",
        &url,
        &sink,
        items_of(&src).detect_deletes(etl_core::Deletes {
            ranges: 16,
            ..Default::default()
        }),
    );
    let glob = dir.path().join("items/*.parquet");
    // The current rows: per key the newest row by etl_processed_at, unless it is a tombstone.
    let current = || {
        duckdb(
            "SELECT count(*), count(*) FILTER (WHERE id IN (5, 60)), max(name) FILTER (WHERE id = 60) FROM \
             (SELECT id, name, _etl_deleted_at, row_number() OVER (PARTITION BY id ORDER BY etl_processed_at DESC, \
             _etl_deleted_at DESC NULLS LAST) AS rn FROM read_parquet('{glob}', union_by_name = true)) \
             WHERE rn = 1 AND _etl_deleted_at IS NULL",
            &glob,
        )
        .unwrap()
    };
    let tombstones = || {
        duckdb(
            "SELECT list(id ORDER BY id), count(name) FROM read_parquet('{glob}', union_by_name = true) \
             WHERE _etl_deleted_at IS NOT NULL",
            &glob,
        )
        .unwrap()
    };
    let r = p.run().await.unwrap().into_result().unwrap();
    assert_eq!(r.table("items").unwrap().written_count, 100);

    pg.batch_execute(&sql("DELETE FROM $Q.items WHERE id IN (5, 60)"))
        .await
        .unwrap();
    let r = p.run().await.unwrap().into_result().unwrap();
    let t = r.table("items").unwrap();
    assert_eq!(
        (t.status, t.deleted_count, t.keys.as_ref().unwrap().deleted_at_source),
        (TableStatus::NoNewData, 2, 2),
        "{t:?}"
    );
    assert_eq!(current(), "[(98, 0, None)]");
    assert_eq!(tombstones(), "[([5, 60], 0)]", "tombstones hold the key, nothing else");

    // The tombstones count: nothing is deleted twice, and the target is not taken for lost.
    let r = p.run().await.unwrap().into_result().unwrap();
    let t = r.table("items").unwrap();
    assert_eq!(
        (t.deleted_count, t.keys.as_ref().unwrap().ranges_differing),
        (0, 0),
        "{t:?}"
    );

    // Inserted again at the source: live again.
    pg.batch_execute(&sql("INSERT INTO $Q.items VALUES (60, 'back', '2025-08-01 00:00:00')"))
        .await
        .unwrap();
    let r = p.run().await.unwrap().into_result().unwrap();
    let t = r.table("items").unwrap();
    assert_eq!(
        (
            t.written_count,
            t.deleted_count,
            t.keys.as_ref().unwrap().ranges_differing
        ),
        (1, 0, 0),
        "{t:?}"
    );
    assert_eq!(current(), "[(99, 1, 'back')]");
    pg.batch_execute(&sql("DROP SCHEMA $Q CASCADE")).await.unwrap();
}

/// A lake reconciles with its Postgres source by keys, counts and the content of every
/// column type: the lake's rows valued in Rust, the source's in SQL, alike. Rows changed,
/// deleted and inserted at the source behind the watermark are found, each by its key.
#[tokio::test]
async fn a_lake_reconciles_content_with_its_postgres_source() {
    use etl_core::{Reconcile, ReconcilePolicy, ReconcileStatus};
    let (pg, url, src) = pg_source("lake_rec").await;
    let sql = |s: &str| s.replace("$Q", &src);
    pg.batch_execute(&sql(
        "CREATE SCHEMA $Q; CREATE TABLE $Q.items (id bigint PRIMARY KEY, name text, price numeric(10,2), qty int,
           day date, active boolean, score double precision, paid_at timestamptz, updated_at timestamp NOT NULL);
         INSERT INTO $Q.items SELECT i, CASE WHEN i % 7 = 0 THEN NULL ELSE 'n' || i || ' é' END, i * 1.25 - 100,
           i % 5, DATE '1960-01-01' + i * 100, i % 2 = 0, i / 8.0 - 3,
           '2025-07-01 12:00:00+02'::timestamptz + i * interval '1.000001 second',
           '2025-07-01'::timestamp + i * interval '1.5 second'
           FROM generate_series(1, 300) i;",
    ))
    .await
    .unwrap();
    let (_dir, sink) = local();
    let columns = [
        "name",
        "price",
        "qty",
        "day",
        "active",
        "score",
        "paid_at",
        "updated_at",
    ];
    let p = pg_to_lake(
        "lake_rec",
        &url,
        &sink,
        items_of(&src).reconcile(Reconcile {
            ranges: 64,
            ..Reconcile::new(ReconcilePolicy::Report).content(columns)
        }),
    );
    let r = p.run().await.unwrap().into_result().unwrap();
    let t = r.table("items").unwrap();
    let rec = t.reconciliation.as_ref().unwrap();
    assert_eq!(
        (rec.status, rec.source_rows, rec.target_rows, t.difference),
        (ReconcileStatus::Reconciled, 300, 300, Some(0)),
        "every column hashes alike in Rust and in Postgres: {t:?}"
    );

    // Behind the watermark: a row changed, one deleted, one inserted with an old cursor.
    pg.batch_execute(&sql(
        "UPDATE $Q.items SET price = price + 0.01 WHERE id = 42;
         UPDATE $Q.items SET name = 'n99 è' WHERE id = 99;
         DELETE FROM $Q.items WHERE id = 77;
         INSERT INTO $Q.items (id, name, updated_at) VALUES (500, 'late', '2025-06-01 00:00:00');",
    ))
    .await
    .unwrap();
    let r = p.run().await.unwrap().into_result().unwrap();
    let t = r.table("items").unwrap();
    let rec = t.reconciliation.as_ref().unwrap();
    assert_eq!(
        (
            t.status,
            rec.status,
            rec.missing_in_target,
            rec.extra_in_target,
            rec.changed_in_target
        ),
        (TableStatus::NoNewData, ReconcileStatus::Mismatched, 1, 1, 2),
        "{t:?}"
    );
    for k in [42, 77, 99, 500] {
        assert!(
            rec.mismatched.iter().any(|(lo, hi)| *lo <= k && k <= *hi),
            "key {k} in a mismatched range: {rec:?}"
        );
    }
    assert!(t.warnings.iter().any(|w| w.contains("does not reconcile")), "{t:?}");
    pg.batch_execute(&sql("DROP SCHEMA $Q CASCADE")).await.unwrap();
}

#[cfg(any(feature = "postgres", feature = "snowflake"))]
mod scenarios;

#[cfg(feature = "snowflake")]
mod snowflake;

/// A source that hands over its first batch, then stalls for a minute before the rest (a
/// database that hangs mid-read).
#[derive(Debug)]
struct Stalling(MemorySource);

#[async_trait::async_trait]
impl etl_core::Source for Stalling {
    fn name(&self) -> &str {
        "stalling"
    }

    async fn check(&self, spec: &TableSpec) -> etl_core::Result<()> {
        self.0.check(spec).await
    }

    async fn read(&self, req: etl_core::ReadRequest<'_>) -> etl_core::Result<etl_core::Extract> {
        use futures::StreamExt;
        let mut extract = self.0.read(req).await?;
        let mut rest = extract.stream;
        let first = rest.next().await;
        let stall = futures::stream::once(tokio::time::sleep(std::time::Duration::from_secs(60)))
            .filter_map(|()| async { None::<etl_core::Result<RecordBatch>> });
        extract.stream = Box::pin(futures::stream::iter(first).chain(stall).chain(rest));
        Ok(extract)
    }
}

/// A pipeline job cancelled by its timeout mid-read leaves no data visible in the lake and no
/// watermark; the next run loads every row once.
#[tokio::test]
async fn a_timed_out_pipeline_job_leaves_target_and_watermark_as_they_were() {
    use etl_core::workflow::{Job, JobStatus, Workflow};
    let (dir, sink) = local();
    let source = MemorySource::new();
    source.append("events", sample_batch(&[1, 2])).unwrap();
    source.append("events", sample_batch(&[3])).unwrap();
    let wm = ObjectStoreWatermarkStore::new(sink.location().child("_etl/watermarks"));
    let spec = TableSpec::new("events")
        .mode(LoadMode::Incremental)
        .cursor(["updated_at"]);
    let build = |source: Arc<dyn etl_core::Source>| {
        Pipeline::builder("timeout")
            .source_arc(source)
            .sink(sink.clone())
            .watermarks(wm.clone())
            .table(spec.clone())
            .batch_size(2)
            .build()
            .unwrap()
    };
    let stalled = Arc::new(Stalling(MemorySource::new()));
    stalled.0.append("events", sample_batch(&[1, 2])).unwrap();
    stalled.0.append("events", sample_batch(&[3])).unwrap();
    let report = Workflow::new("wf")
        .job(Job::pipeline("load", build(stalled)).timeout(std::time::Duration::from_millis(500)))
        .build()
        .unwrap()
        .run()
        .await;
    assert_eq!(report.job("load").unwrap().status, JobStatus::TimedOut);
    let visible: Vec<String> = files(dir.path())
        .into_iter()
        .filter(|f| !f.starts_with("_etl/"))
        .collect();
    assert!(visible.is_empty(), "nothing half written: {visible:?}");
    assert!(wm.load("timeout", "events").await.unwrap().is_none());

    let report = Workflow::new("wf")
        .job(Job::pipeline("load", build(Arc::new(source))))
        .build()
        .unwrap()
        .run()
        .await;
    assert!(report.is_success(), "{report:?}");
    let rows = sink.read_table("events").await.unwrap();
    assert_eq!(rows.iter().map(|b| b.num_rows()).sum::<usize>(), 3);
    let t = &report
        .job("load")
        .unwrap()
        .output
        .as_ref()
        .unwrap()
        .report
        .as_ref()
        .unwrap()
        .tables[0];
    assert_eq!((t.written_count, t.target_count), (3, Some(3)));
}

/// A source whose first read fails with a transient error (a connection reset).
#[derive(Debug)]
struct Flaky(MemorySource, std::sync::atomic::AtomicU32);

#[async_trait::async_trait]
impl etl_core::Source for Flaky {
    fn name(&self) -> &str {
        "flaky"
    }

    async fn check(&self, spec: &TableSpec) -> etl_core::Result<()> {
        self.0.check(spec).await
    }

    async fn read(&self, req: etl_core::ReadRequest<'_>) -> etl_core::Result<etl_core::Extract> {
        if self.1.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
            return Err(etl_core::Error::Connector {
                connector: "flaky",
                message: "connection reset by peer".into(),
                retryable: true,
            });
        }
        self.0.read(req).await
    }
}

/// A pipeline job whose table failed transiently is retried and loads every row once.
#[tokio::test]
async fn a_pipeline_job_is_retried_after_a_transient_table_failure() {
    use etl_core::workflow::{Job, JobStatus, RetryPolicy, Workflow};
    let (_dir, sink) = local();
    let source = Flaky(MemorySource::new(), Default::default());
    source.0.append("events", sample_batch(&[1, 2, 3])).unwrap();
    let p = Pipeline::builder("flaky")
        .source(source)
        .sink(sink.clone())
        .watermarks(ObjectStoreWatermarkStore::new(sink.location().child("_etl/watermarks")))
        .table(
            TableSpec::new("events")
                .mode(LoadMode::Incremental)
                .cursor(["updated_at"]),
        )
        .build()
        .unwrap();
    let report = Workflow::new("wf")
        .job(Job::pipeline("load", p).retry(RetryPolicy::exponential(3, std::time::Duration::from_millis(10))))
        .build()
        .unwrap()
        .run()
        .await;
    let j = report.job("load").unwrap();
    assert_eq!((j.status, j.attempts), (JobStatus::Succeeded, 2), "{report:?}");
    let rows = sink.read_table("events").await.unwrap();
    assert_eq!(rows.iter().map(|b| b.num_rows()).sum::<usize>(), 3);
}

/// A lake table whose files or whole folder were deleted behind the sink's back, or whose
/// commit log went with it, is detected by the next incremental run (with an object-store
/// and an in-memory watermark store); `TargetLost::Reload` reloads it in full.
#[tokio::test]
async fn a_lake_table_that_lost_its_files_is_detected() {
    use etl_core::TargetLost;
    let damages: [(&[&str], &str); 2] = [
        (&["events"], "is empty, though run"),
        (&["events", "_etl/commits/events"], "keeps no checkpoint"),
    ];
    for (remove, expected) in damages {
        let (dir, sink) = local();
        let source = Arc::new(MemorySource::new());
        source.append("events", sample_batch(&[1, 2, 3, 4])).unwrap();
        let store = ObjectStoreWatermarkStore::new(Location::local(dir.path().join("wm")).unwrap());
        let pipeline = |policy: TargetLost| {
            Pipeline::builder("lost")
                .source_arc(source.clone())
                .sink(sink.clone())
                .watermarks(store.clone())
                .table(
                    TableSpec::new("events")
                        .mode(LoadMode::Incremental)
                        .cursor(["updated_at"])
                        .on_target_lost(policy),
                )
                .build()
                .unwrap()
        };
        pipeline(TargetLost::Fail).run().await.unwrap().into_result().unwrap();
        for rel in remove {
            std::fs::remove_dir_all(dir.path().join(rel)).unwrap();
        }
        source.append("events", sample_batch(&[5, 6])).unwrap();
        let r = pipeline(TargetLost::Fail).run().await.unwrap();
        let t = r.table("events").unwrap();
        assert_eq!(t.status, TableStatus::Failed, "{remove:?}");
        let err = t.error.as_deref().unwrap();
        assert!(err.contains(expected), "{remove:?}: {err}");
        let r = pipeline(TargetLost::Reload).run().await.unwrap().into_result().unwrap();
        let t = r.table("events").unwrap();
        assert_eq!((t.mode, t.written_count), (LoadMode::Full, 6), "{remove:?}");
        let rows: usize = sink
            .read_table("events")
            .await
            .unwrap()
            .iter()
            .map(|b| b.num_rows())
            .sum();
        assert_eq!(rows, 6, "every row once after the reload");
    }
}
