//! The Delta sink on local disk and on the S3 server, read back by readers no one here
//! wrote: the `deltalake` Python package and DuckDB's `delta_scan`.

use std::process::Command;
use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray, Int64Array, StringArray, TimestampMicrosecondArray};
use arrow::record_batch::RecordBatch;
use etl_core::conformance::{self, TargetProbe, render_sorted, sample_batch};
use etl_core::{
    Extract, LoadMode, Location, MemorySource, ObjectStoreWatermarkStore, PartitionKey, Partitioning, Pipeline,
    ReadRequest, RunReport, Source, TableSpec, TableStatus, WatermarkStore,
};
use etl_sinks::delta::DeltaSink;

#[derive(Debug)]
struct Probe(DeltaSink);

#[async_trait::async_trait]
impl TargetProbe for Probe {
    async fn rows(&self, target: &str) -> Vec<RecordBatch> {
        self.0.read_table(target).await.expect("read Delta table")
    }
}

#[tokio::test]
async fn delta_conformance_local() {
    let dir = tempfile::tempdir().unwrap();
    let sink = DeltaSink::new(Location::local(dir.path()).unwrap());
    conformance::sink(Arc::new(sink.clone()), &Probe(sink.clone()), &[]).await;
    conformance::pipeline_replay(Arc::new(sink.clone()), &Probe(sink), &[]).await;
}

#[cfg(feature = "s3")]
#[tokio::test]
async fn delta_conformance_s3() {
    let sink = DeltaSink::new(conformance::s3_location());
    conformance::sink(Arc::new(sink.clone()), &Probe(sink.clone()), &[]).await;
    conformance::pipeline_replay(Arc::new(sink.clone()), &Probe(sink), &[]).await;
}

/// Reads a Delta table with the `deltalake` package and with DuckDB's `delta_scan`; prints
/// one JSON line per reader: the rows of `cols`, each value as text, sorted.
const READ_DELTA: &str = r#"
import json, os, sys
uri, cols, version = sys.argv[1], sys.argv[2].split(","), sys.argv[3]
version = int(version) if version else None
s3 = uri.startswith("s3://")
opts = {"AWS_ENDPOINT_URL": os.environ["ETL_TEST_S3_ENDPOINT"], "AWS_ALLOW_HTTP": "true",
        "AWS_REGION": os.environ["AWS_REGION"], "AWS_ACCESS_KEY_ID": os.environ["AWS_ACCESS_KEY_ID"],
        "AWS_SECRET_ACCESS_KEY": os.environ["AWS_SECRET_ACCESS_KEY"]} if s3 else None
from deltalake import DeltaTable
t = DeltaTable(uri, version=version, storage_options=opts).to_pyarrow_table(columns=cols).to_pylist()
print(json.dumps(sorted([str(r[c]) for c in cols] for r in t), separators=(",", ":")))
import duckdb, duckdb_extension_delta, duckdb_extension_httpfs
def ext(m, name):
    return os.path.join(os.path.dirname(m.__file__), "extensions", "v" + duckdb.__version__, name + ".duckdb_extension")
con = duckdb.connect()
con.sql(f"LOAD '{ext(duckdb_extension_httpfs, 'httpfs')}'")
con.sql(f"LOAD '{ext(duckdb_extension_delta, 'delta')}'")
if s3:
    ep = os.environ["ETL_TEST_S3_ENDPOINT"].split("://")[1]
    con.sql(f"CREATE SECRET (TYPE S3, KEY_ID '{opts['AWS_ACCESS_KEY_ID']}', SECRET '{opts['AWS_SECRET_ACCESS_KEY']}', "
            f"REGION '{opts['AWS_REGION']}', ENDPOINT '{ep}', URL_STYLE 'path', USE_SSL false)")
at = f", version => {version}" if version is not None else ""
rows = con.sql(f"SELECT {', '.join(chr(34) + c + chr(34) for c in cols)} FROM delta_scan('{uri}'{at})").fetchall()
print(json.dumps(sorted([str(v) for v in r] for r in rows), separators=(",", ":")))
"#;

/// What both readers answer for the rows of `cols` of the Delta table at `uri` (at
/// `version`, or the latest): they must agree.
fn read_back(uri: &str, cols: &[&str], version: Option<i64>) -> String {
    let python = std::env::var("ETL_TEST_DELTA_PYTHON").expect(
        "ETL_TEST_DELTA_PYTHON is not set: run `eval \"$(scripts/services.sh env)\"` (the Delta readers live in its venv)",
    );
    let out = Command::new(python)
        .args([
            "-c",
            READ_DELTA,
            uri,
            &cols.join(","),
            &version.map(|v| v.to_string()).unwrap_or_default(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "reading {uri}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "one line per reader: {text}");
    assert_eq!(lines[0], lines[1], "deltalake and DuckDB disagree on {uri}");
    lines[0].to_string()
}

/// `[[id, name], …]` as the readers print them.
fn expect(rows: &[(i64, &str)]) -> String {
    let mut v: Vec<Vec<String>> = rows.iter().map(|(i, n)| vec![i.to_string(), n.to_string()]).collect();
    v.sort();
    serde_json::to_string(&v).unwrap()
}

/// Rows `(id, name, seconds after 2025-01-01 of updated_at)`.
fn batch(rows: &[(i64, &str, i64)]) -> RecordBatch {
    let base = 1_735_689_600_000_000i64;
    RecordBatch::try_from_iter([
        (
            "id",
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))) as ArrayRef,
        ),
        (
            "name",
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.1))) as ArrayRef,
        ),
        (
            "updated_at",
            Arc::new(TimestampMicrosecondArray::from_iter_values(
                rows.iter().map(|r| base + r.2 * 1_000_000),
            )) as ArrayRef,
        ),
    ])
    .unwrap()
}

const MODES: [(&str, LoadMode); 5] = [
    ("t_full", LoadMode::Full),
    ("t_truncate", LoadMode::TruncateInsert),
    ("t_incremental", LoadMode::Incremental),
    ("t_append", LoadMode::Append),
    ("t_upsert", LoadMode::Upsert),
];

fn modes_pipeline(sink: &DeltaSink, wm: &ObjectStoreWatermarkStore, source: Arc<MemorySource>) -> Pipeline {
    let mut b = Pipeline::builder("delta_modes")
        .source_arc(source)
        .sink(sink.clone())
        .watermarks(wm.clone());
    for (name, mode) in MODES {
        let mut spec = TableSpec::new(name)
            .mode(mode)
            .primary_key(["id"])
            .cursor(["updated_at"])
            .processed_at(false);
        if mode == LoadMode::Append {
            spec = spec.partition_by(Partitioning::columns([PartitionKey::column("name")]));
        }
        b = b.table(spec);
    }
    b.build().unwrap()
}

/// Pipeline `name` of one table, `spec`, from a memory source holding `batch`, into `sink`,
/// its watermarks in `wm`.
fn one_table(
    name: &str,
    sink: &DeltaSink,
    wm: &ObjectStoreWatermarkStore,
    spec: TableSpec,
    batch: RecordBatch,
) -> Pipeline {
    let source = Arc::new(MemorySource::new());
    source.append(&spec.name, batch).unwrap();
    Pipeline::builder(name)
        .source_arc(source)
        .sink(sink.clone())
        .watermarks(wm.clone())
        .table(spec)
        .build()
        .unwrap()
}

/// One run of [`one_table`]'s pipeline.
async fn run_one(
    name: &str,
    sink: &DeltaSink,
    wm: &ObjectStoreWatermarkStore,
    spec: TableSpec,
    batch: RecordBatch,
) -> RunReport {
    one_table(name, sink, wm, spec, batch).run().await.unwrap()
}

/// Every mode, twice, read back by both readers after each run, and time travel to the
/// first run's version; UPSERT leaves one row per key, the latest by cursor.
async fn every_mode_reads_back(sink: DeltaSink, uri: impl Fn(&str) -> String) {
    let wm = ObjectStoreWatermarkStore::new(sink.location().child("_etl/watermarks"));
    let source = Arc::new(MemorySource::new());
    let first = [(1, "a", 1), (2, "b", 2), (3, "c", 3)];
    for (name, _) in MODES {
        source.append(name, batch(&first)).unwrap();
    }
    let r1 = modes_pipeline(&sink, &wm, source.clone())
        .run()
        .await
        .unwrap()
        .into_result()
        .unwrap();
    for (name, _) in MODES {
        assert_eq!(
            read_back(&uri(name), &["id", "name"], None),
            expect(&[(1, "a"), (2, "b"), (3, "c")]),
            "{name} after the first run"
        );
        assert_eq!(r1.table(name).unwrap().target_count, Some(3), "{name}");
    }

    // Second run: key 2 changed, key 4 new, key 5 twice (the later cursor wins).
    let second = [(2, "b2", 10), (4, "d", 11), (5, "e-old", 12), (5, "e", 13)];
    for (name, _) in MODES {
        source.append(name, batch(&second)).unwrap();
    }
    let r2 = modes_pipeline(&sink, &wm, source.clone())
        .run()
        .await
        .unwrap()
        .into_result()
        .unwrap();
    let all = [
        (1, "a"),
        (2, "b"),
        (3, "c"),
        (2, "b2"),
        (4, "d"),
        (5, "e-old"),
        (5, "e"),
    ];
    for (name, mode) in MODES {
        let want = match mode {
            // The source holds every row it was given: a reload is all of them.
            LoadMode::Full | LoadMode::TruncateInsert => expect(&all),
            // The run's window appended: every row once.
            LoadMode::Incremental => expect(&all),
            // APPEND reads everything again and adds it.
            LoadMode::Append => {
                let mut rows = vec![(1, "a"), (2, "b"), (3, "c")];
                rows.extend(all);
                expect(&rows)
            }
            LoadMode::Upsert => expect(&[(1, "a"), (2, "b2"), (3, "c"), (4, "d"), (5, "e")]),
        };
        assert_eq!(
            read_back(&uri(name), &["id", "name"], None),
            want,
            "{name} after the second run"
        );
        let t = r2.table(name).unwrap();
        assert_eq!(t.status, TableStatus::Committed, "{name}: {t:?}");
        // Time travel: the first run's version holds the first run's rows.
        let v = sink
            .version_of_run(name, &r1.run_id)
            .await
            .unwrap()
            .expect("the first run's version");
        assert_eq!(
            read_back(&uri(name), &["id", "name"], Some(v)),
            expect(&[(1, "a"), (2, "b"), (3, "c")]),
            "{name} at the first run's version {v}"
        );
    }
    let up = r2.table("t_upsert").unwrap();
    assert_eq!((up.inserted_count, up.updated_count), (2, 1), "{up:?}");
    assert_eq!(up.target_count, Some(5));
}

#[tokio::test]
async fn every_mode_reads_back_local() {
    let dir = tempfile::tempdir().unwrap();
    let sink = DeltaSink::new(Location::local(dir.path()).unwrap());
    let root = dir.path().to_path_buf();
    every_mode_reads_back(sink, |t| root.join(t).display().to_string()).await;
    assert!(
        dir.path().join("t_append/name=b2").is_dir(),
        "APPEND's table is partitioned by name"
    );
}

#[cfg(feature = "s3")]
#[tokio::test]
async fn every_mode_reads_back_s3() {
    let loc = conformance::s3_location();
    let sink = DeltaSink::new(loc.clone());
    let base = loc.url().to_string();
    every_mode_reads_back(sink, |t| format!("{base}/{t}")).await;
}

/// A new source column is added to the table; a changed type is refused by name with the
/// table and the watermark as they were; UPSERT deletes the keys a soft-delete column marks.
#[tokio::test]
async fn schema_changes_and_soft_deletes() {
    let dir = tempfile::tempdir().unwrap();
    let sink = DeltaSink::new(Location::local(dir.path()).unwrap());
    let wm = ObjectStoreWatermarkStore::new(Location::local(dir.path().join("wm")).unwrap());
    let uri = dir.path().join("people").display().to_string();
    let spec = TableSpec::new("people")
        .mode(LoadMode::Upsert)
        .primary_key(["id"])
        .cursor(["seq"])
        .soft_delete("gone")
        .processed_at(false);
    let run = |b: RecordBatch| run_one("delta_schema", &sink, &wm, spec.clone(), b);
    let seq = std::sync::atomic::AtomicI64::new(0);
    let with = |ids: &[i64], names: &[&str], gone: &[bool], extra: Option<(&str, ArrayRef)>| {
        let seqs: Vec<i64> = ids
            .iter()
            .map(|_| seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1)
            .collect();
        let mut cols: Vec<(&str, ArrayRef)> = vec![
            ("id", Arc::new(Int64Array::from(ids.to_vec()))),
            ("seq", Arc::new(Int64Array::from(seqs))),
            ("name", Arc::new(StringArray::from(names.to_vec()))),
            ("gone", Arc::new(BooleanArray::from(gone.to_vec()))),
        ];
        cols.extend(extra);
        RecordBatch::try_from_iter(cols).unwrap()
    };
    run(with(&[1, 2, 3], &["a", "b", "c"], &[false, false, true], None))
        .await
        .into_result()
        .unwrap();
    assert_eq!(
        read_back(&uri, &["id", "name"], None),
        expect(&[(1, "a"), (2, "b")]),
        "a first run leaves out the rows marked deleted"
    );

    // A new column, and key 2 marked deleted.
    let email: ArrayRef = Arc::new(StringArray::from(vec![Some("a@x"), None, Some("d@x")]));
    let r = run(with(
        &[1, 2, 4],
        &["a", "b", "d"],
        &[false, true, false],
        Some(("email", email)),
    ))
    .await
    .into_result()
    .unwrap();
    assert_eq!(r.table("people").unwrap().deleted_count, 1);
    assert_eq!(
        read_back(&uri, &["id", "name", "email"], None),
        serde_json::to_string(&[["1", "a", "a@x"], ["4", "d", "d@x"]]).unwrap(),
        "the new column is added and key 2 deleted"
    );
    let watermark = wm.load("delta_schema", "people").await.unwrap().unwrap();

    // `email` as a number: refused by name, nothing written, the watermark unchanged.
    let email: ArrayRef = Arc::new(Int64Array::from(vec![7]));
    let r = run(with(&[9], &["z"], &[false], Some(("email", email)))).await;
    let t = r.table("people").unwrap();
    assert_eq!(t.status, TableStatus::Failed);
    let err = t.error.clone().unwrap();
    assert!(err.contains("email") && err.contains("people"), "{err}");
    assert_eq!(
        read_back(&uri, &["id", "name", "email"], None),
        serde_json::to_string(&[["1", "a", "a@x"], ["4", "d", "d@x"]]).unwrap()
    );
    assert_eq!(
        wm.load("delta_schema", "people").await.unwrap().unwrap().generation,
        watermark.generation
    );
}

// ---------------------------------------------------------------- crashes

fn crash_pipeline(dir: &std::path::Path, mode: LoadMode) -> (Pipeline, DeltaSink, ObjectStoreWatermarkStore) {
    let (sink, wm, spec) = crash_setup(dir, mode);
    let p = one_table("delta_crash", &sink, &wm, spec, sample_batch(&[1, 2, 3]));
    (p, sink, wm)
}

/// The crash tests' sink, watermarks and table in `dir`.
fn crash_setup(dir: &std::path::Path, mode: LoadMode) -> (DeltaSink, ObjectStoreWatermarkStore, TableSpec) {
    let sink = DeltaSink::new(Location::local(dir.join("delta")).unwrap());
    let wm = ObjectStoreWatermarkStore::new(Location::local(dir.join("wm")).unwrap());
    let spec = TableSpec::new("events")
        .mode(mode)
        .primary_key(["id"])
        .cursor(["updated_at"])
        .processed_at(false);
    (sink, wm, spec)
}

/// Run by the crash tests in a child process, which the failpoint kills; the mode is in the
/// crash folder's file `mode`.
#[tokio::test]
#[ignore = "run as a child process by the crash tests"]
async fn delta_crash_child() {
    let dir = std::path::PathBuf::from(std::env::var("ETL_CRASH_DIR").expect("ETL_CRASH_DIR"));
    let mode = std::fs::read_to_string(dir.join("mode")).unwrap().parse().unwrap();
    let (p, _, _) = crash_pipeline(&dir, mode);
    let _ = p.run().await;
    panic!("the failpoint {:?} did not fire", std::env::var("ETL_FAILPOINT"));
}

fn kill_at(dir: &std::path::Path, failpoint: &str, mode: LoadMode) {
    std::fs::write(dir.join("mode"), mode.as_str()).unwrap();
    super::kill_child_at("delta::delta_crash_child", dir, failpoint);
}

#[tokio::test]
async fn killed_after_staging_then_rerun() {
    for mode in [LoadMode::Incremental, LoadMode::Upsert, LoadMode::Full] {
        let dir = tempfile::tempdir().unwrap();
        kill_at(dir.path(), "after_stage", mode);
        let (p, sink, wm) = crash_pipeline(dir.path(), mode);
        assert!(
            sink.read_table("events").await.unwrap().is_empty(),
            "{mode}: nothing visible"
        );
        assert!(
            wm.load("delta_crash", "events").await.unwrap().is_none(),
            "{mode}: no watermark"
        );
        let r = p.run().await.unwrap().into_result().unwrap();
        assert_eq!(r.table("events").unwrap().written_count, 3, "{mode}");
        assert_eq!(
            render_sorted(&sink.read_table("events").await.unwrap(), &[]),
            render_sorted(&[sample_batch(&[1, 2, 3])], &[]),
            "{mode}: exactly one clean run's rows"
        );
        let uri = dir.path().join("delta/events").display().to_string();
        assert_eq!(read_back(&uri, &["id"], None), r#"[["1"],["2"],["3"]]"#, "{mode}");
        assert_eq!(wm.load("delta_crash", "events").await.unwrap().unwrap().generation, 1);
    }
}

#[tokio::test]
async fn killed_after_the_delta_commit_then_rerun() {
    for mode in [LoadMode::Incremental, LoadMode::Upsert, LoadMode::Full] {
        let dir = tempfile::tempdir().unwrap();
        kill_at(dir.path(), "after_sink_commit", mode);
        let (p, sink, wm) = crash_pipeline(dir.path(), mode);
        assert!(
            wm.load("delta_crash", "events").await.unwrap().is_none(),
            "{mode}: no watermark"
        );
        let r = p.run().await.unwrap().into_result().unwrap();
        let t = r.table("events").unwrap();
        assert!(
            t.recovered,
            "{mode}: the rerun completes the dead run's watermark: {t:?}"
        );
        assert_eq!(
            render_sorted(&sink.read_table("events").await.unwrap(), &[]),
            render_sorted(&[sample_batch(&[1, 2, 3])], &[]),
            "{mode}: exactly one clean run's rows, none twice"
        );
        let uri = dir.path().join("delta/events").display().to_string();
        assert_eq!(read_back(&uri, &["id"], None), r#"[["1"],["2"],["3"]]"#, "{mode}");
        // FULL reloads on every run; the others find nothing new after the recovery.
        let generation = if mode == LoadMode::Full { 2 } else { 1 };
        assert_eq!(
            wm.load("delta_crash", "events").await.unwrap().unwrap().generation,
            generation,
            "{mode}"
        );
    }
}

/// A memory source whose first read waits until every run sharing the gate is reading, so
/// that two runs truly overlap: each has loaded its watermark and the table's checkpoint
/// before either writes. (Without it, one run may end before the other starts, and two APPEND
/// runs one after the other rightly both commit.)
#[derive(Debug)]
struct Gated {
    inner: Arc<MemorySource>,
    gate: Arc<tokio::sync::Barrier>,
    passed: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl Source for Gated {
    fn name(&self) -> &str {
        "gated"
    }

    async fn check(&self, spec: &TableSpec) -> etl_core::Result<()> {
        self.inner.check(spec).await
    }

    async fn read(&self, req: ReadRequest<'_>) -> etl_core::Result<Extract> {
        if !self.passed.swap(true, std::sync::atomic::Ordering::SeqCst) {
            self.gate.wait().await;
        }
        self.inner.read(req).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_concurrent_runs_leave_one_commit() {
    for mode in [LoadMode::Append, LoadMode::Upsert] {
        for round in 0..3 {
            let dir = tempfile::tempdir().unwrap();
            let gate = Arc::new(tokio::sync::Barrier::new(2));
            let run = || {
                let (sink, wm, spec) = crash_setup(dir.path(), mode);
                let inner = Arc::new(MemorySource::new());
                inner.append("events", sample_batch(&[1, 2, 3])).unwrap();
                let source = Gated {
                    inner,
                    gate: gate.clone(),
                    passed: Default::default(),
                };
                let p = Pipeline::builder("delta_crash")
                    .source(source)
                    .sink(sink.clone())
                    .watermarks(wm)
                    .table(spec)
                    .build()
                    .unwrap();
                (p, sink)
            };
            let ((a, sink), (b, _)) = (run(), run());
            let (ra, rb) = tokio::join!(a.run(), b.run());
            let mut statuses: Vec<(TableStatus, Option<String>)> = [ra.unwrap(), rb.unwrap()]
                .into_iter()
                .map(|r| (r.tables[0].status, r.tables[0].error.clone()))
                .collect();
            statuses.sort_by_key(|(s, _)| format!("{s:?}"));
            assert_eq!(
                statuses[0].0,
                TableStatus::Committed,
                "{mode} round {round}: {statuses:?}"
            );
            // Both read the same state, so the second to commit lost the race.
            match &statuses[1] {
                (TableStatus::Failed, Some(e)) if e.contains("another run") => {}
                other => panic!("{mode} round {round}: unexpected second outcome {other:?}"),
            }
            assert_eq!(
                render_sorted(&sink.read_table("events").await.unwrap(), &[]),
                render_sorted(&[sample_batch(&[1, 2, 3])], &[]),
                "{mode} round {round}: the window once"
            );
            let t = sink.open("events").await.unwrap().unwrap();
            let commits = futures::StreamExt::count(t.history(None)).await;
            assert_eq!(commits, 1, "{mode} round {round}: one Delta commit");
        }
    }
}

/// Keys deleted at a Postgres source are deleted from the Delta table, and a row changed
/// behind the watermark is found by its content and repaired; the first run's version still
/// holds what it wrote (time travel).
#[tokio::test]
async fn deletes_and_repairs_reach_the_delta_table() {
    use etl_core::{Deletes, Reconcile, ReconcilePolicy, ReconcileStatus};
    let (pg, url, src) = super::pg_source("delta_del").await;
    let sql = |s: &str| s.replace("$Q", &src);
    pg.batch_execute(&sql(
        "CREATE SCHEMA $Q; CREATE TABLE $Q.items (id bigint PRIMARY KEY, name text, price numeric(10,2),
           updated_at timestamp NOT NULL);
         INSERT INTO $Q.items SELECT i, 'n' || i, i * 1.25, '2025-07-01'::timestamp + i * interval '1 minute'
           FROM generate_series(1, 100) i;",
    ))
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sink = DeltaSink::new(Location::local(dir.path()).unwrap());
    let spec = super::items_of(&src)
        .mode(LoadMode::Upsert)
        .detect_deletes(Deletes {
            ranges: 16,
            ..Default::default()
        })
        .reconcile(Reconcile {
            ranges: 16,
            ..Reconcile::new(ReconcilePolicy::Repair).content(["name", "price"])
        });
    let p = Pipeline::builder("delta_del")
        .source(etl_connectors::postgres::PostgresSource::new(&url).unwrap())
        .sink(sink.clone())
        .watermarks(ObjectStoreWatermarkStore::new(sink.location().child("_etl/watermarks")))
        .table(spec)
        .build()
        .unwrap();
    let uri = dir.path().join("items").display().to_string();
    let r1 = p.run().await.unwrap().into_result().unwrap();
    let t = r1.table("items").unwrap();
    assert_eq!(
        (t.written_count, t.reconciliation.as_ref().unwrap().status),
        (100, ReconcileStatus::Reconciled),
        "{t:?}"
    );

    // Behind the watermark: two rows deleted, one renamed without touching its cursor.
    pg.batch_execute(&sql(
        "DELETE FROM $Q.items WHERE id IN (5, 60); UPDATE $Q.items SET name = 'fixed' WHERE id = 42;",
    ))
    .await
    .unwrap();
    let r = p.run().await.unwrap().into_result().unwrap();
    let t = r.table("items").unwrap();
    assert_eq!(t.deleted_count, 2, "{t:?}");
    assert_eq!(
        t.reconciliation.as_ref().unwrap().status,
        ReconcileStatus::Repaired,
        "{t:?}"
    );
    let rows = read_back(&uri, &["id", "name"], None);
    let rows: Vec<Vec<String>> = serde_json::from_str(&rows).unwrap();
    assert_eq!(rows.len(), 98);
    assert!(
        !rows.iter().any(|r| r[0] == "5" || r[0] == "60"),
        "deleted keys are gone"
    );
    assert!(
        rows.contains(&vec!["42".to_string(), "fixed".to_string()]),
        "the repaired row"
    );

    // The first run's version holds its 100 rows.
    let v = sink.version_of_run("items", &r1.run_id).await.unwrap().unwrap();
    let then: Vec<Vec<String>> = serde_json::from_str(&read_back(&uri, &["id", "name"], Some(v))).unwrap();
    assert_eq!(then.len(), 100);
    assert!(then.contains(&vec!["42".to_string(), "n42".to_string()]));

    // Nothing differs any more: a run deletes and repairs nothing.
    let r = p.run().await.unwrap().into_result().unwrap();
    let t = r.table("items").unwrap();
    assert_eq!(
        (t.deleted_count, t.reconciliation.as_ref().unwrap().status),
        (0, ReconcileStatus::Reconciled),
        "{t:?}"
    );
    pg.batch_execute(&sql("DROP SCHEMA $Q CASCADE")).await.unwrap();
}

/// A first UPSERT into a new table whose rows repeat keys keeps the latest row of each key
/// (greatest cursor, whatever the arrival order); one that repeats none takes its rows as
/// they are (the first run of `every_mode_reads_back`).
#[tokio::test]
async fn a_first_upsert_keeps_the_latest_row_of_each_key() {
    let dir = tempfile::tempdir().unwrap();
    let sink = DeltaSink::new(Location::local(dir.path()).unwrap());
    let wm = ObjectStoreWatermarkStore::new(sink.location().child("_etl/watermarks"));
    let spec = TableSpec::new("events")
        .mode(LoadMode::Upsert)
        .primary_key(["id"])
        .cursor(["updated_at"])
        .processed_at(false);
    let rows = batch(&[
        (1, "a-new", 5),
        (1, "a-old", 1),
        (2, "b", 1),
        (3, "c", 2),
        (3, "c-new", 3),
    ]);
    let r = run_one("delta_first_upsert", &sink, &wm, spec, rows)
        .await
        .into_result()
        .unwrap();
    let t = r.table("events").unwrap();
    assert_eq!((t.written_count, t.target_count), (5, Some(3)), "{t:?}");
    let uri = dir.path().join("events").display().to_string();
    assert_eq!(
        read_back(&uri, &["id", "name"], None),
        expect(&[(1, "a-new"), (2, "b"), (3, "c-new")])
    );
}

/// A run that reads no rows still commits its checkpoint, so the next run neither loses the
/// race nor takes the table for restored; the tables live under a child of the location.
#[tokio::test]
async fn a_run_without_rows_keeps_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let root = Location::local(dir.path()).unwrap().child("warehouse");
    let sink = DeltaSink::new(root.clone());
    let wm = ObjectStoreWatermarkStore::new(root.child("_etl/watermarks"));
    let spec = TableSpec::new("events").mode(LoadMode::Append).processed_at(false);
    let run = |ids: &[i64]| {
        let p = one_table("delta_empty", &sink, &wm, spec.clone(), sample_batch(ids));
        async move { p.run().await.unwrap().into_result().unwrap() }
    };
    run(&[1, 2]).await;
    let r = run(&[]).await;
    assert_eq!(r.table("events").unwrap().status, TableStatus::Committed, "{r:?}");
    let r = run(&[3]).await;
    let t = r.table("events").unwrap();
    assert!(t.warnings.is_empty(), "{t:?}");
    let uri = dir.path().join("warehouse/events").display().to_string();
    assert_eq!(read_back(&uri, &["id"], None), r#"[["1"],["2"],["3"]]"#);
}

/// The crawler reads a Delta table through its log: the current version's files, rows,
/// partitions and schema (a schema version per change), not the files earlier versions left
/// in the folder; its DDL is Athena's Delta table. Without the Delta reader the table is an
/// error naming it.
#[tokio::test]
async fn the_crawler_reads_delta_tables_from_their_log() {
    use etl_core::catalog::{Catalog, Crawler, PartitionValue, TableFormat};
    let dir = tempfile::tempdir().unwrap();
    let lake = Location::local(dir.path()).unwrap();
    let sink = DeltaSink::new(lake.clone());
    let wm = ObjectStoreWatermarkStore::new(Location::local(dir.path().join("_wm")).unwrap());
    let spec = TableSpec::new("events")
        .mode(LoadMode::Full)
        .processed_at(false)
        .partition_by(Partitioning::columns([PartitionKey::column("name")]));
    let run = |b: RecordBatch| {
        let p = one_table("delta_crawl", &sink, &wm, spec.clone(), b);
        async move { p.run().await.unwrap().into_result().unwrap() }
    };
    run(batch(&[(1, "a", 1), (2, "a", 2), (3, "b", 3)])).await;
    run(batch(&[(1, "a", 1), (4, "c", 4)])).await; // the first version's files stay in the folder
    let crawler = Crawler::new(lake.clone()).with_table_log(Arc::new(etl_sinks::delta::DeltaLog));
    let catalog = Catalog::new(lake.clone());
    let crawl = crawler.crawl_into(&catalog).await.unwrap();
    let t = &crawl.tables[0];
    assert_eq!((t.name.as_str(), t.format), ("events", TableFormat::Delta));
    let crawled = t.crawled().unwrap();
    assert_eq!(crawled.rows(), Some(2), "the current version's rows only");
    let values: Vec<_> = crawled.partitions.iter().map(|p| p.values.clone()).collect();
    assert_eq!(
        values,
        vec![
            vec![PartitionValue::Text("a".into())],
            vec![PartitionValue::Text("c".into())]
        ]
    );
    let columns: Vec<&str> = t.columns.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        columns,
        ["id", "updated_at"],
        "data columns; `name` is the partition key"
    );
    assert_eq!(crawl.footers_read, 0, "the log, not the files, says what they hold");
    assert_eq!(
        crawled.athena_ddl("s3://bucket/lake").unwrap(),
        [
            "CREATE EXTERNAL TABLE IF NOT EXISTS `events`\nLOCATION 's3://bucket/lake/events/'\nTBLPROPERTIES ('table_type' = 'DELTA');"
        ]
    );

    // A new column: a second schema version.
    let email: ArrayRef = Arc::new(StringArray::from(vec!["x@y"]));
    let b = batch(&[(5, "c", 5)]);
    let schema = b.schema();
    let mut cols: Vec<(&str, ArrayRef)> = schema
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .zip(b.columns().iter().cloned())
        .collect();
    cols.push(("email", email));
    run(RecordBatch::try_from_iter(cols).unwrap()).await;
    let crawl = crawler.crawl_into(&catalog).await.unwrap();
    let t = &crawl.tables[0];
    assert_eq!(t.versions.len(), 2, "{:?}", t.versions);
    assert_eq!(t.crawled().unwrap().rows(), Some(1));

    let err = Crawler::new(lake).crawl().await.unwrap_err().to_string();
    assert!(err.contains("`events` is a Delta table"), "{err}");
}

/// UPSERT refuses rows with a NULL key, naming how many, with the table and the watermark as
/// they were (such a row would match no key and be inserted again on every run).
#[tokio::test]
async fn a_null_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let sink = DeltaSink::new(Location::local(dir.path()).unwrap());
    let wm = ObjectStoreWatermarkStore::new(Location::local(dir.path().join("_wm")).unwrap());
    let spec = TableSpec::new("keyed")
        .mode(LoadMode::Upsert)
        .primary_key(["id"])
        .cursor(["seq"])
        .processed_at(false);
    let run = |ids: Vec<Option<i64>>| {
        let n = ids.len() as i64;
        let b = RecordBatch::try_from_iter([
            ("id", Arc::new(Int64Array::from(ids)) as ArrayRef),
            ("seq", Arc::new(Int64Array::from_iter_values(0..n)) as ArrayRef),
        ])
        .unwrap();
        run_one("delta_nulls", &sink, &wm, spec.clone(), b)
    };
    run(vec![Some(1)]).await.into_result().unwrap();
    let r = run(vec![Some(2), None, None, Some(3)]).await;
    let t = r.table("keyed").unwrap();
    assert_eq!(t.status, TableStatus::Failed);
    let err = t.error.clone().unwrap();
    assert!(err.contains("2 rows have a NULL in the primary key (id)"), "{err}");
    let uri = dir.path().join("keyed").display().to_string();
    assert_eq!(read_back(&uri, &["id"], None), r#"[["1"]]"#);
    assert_eq!(wm.load("delta_nulls", "keyed").await.unwrap().unwrap().generation, 1);
}

/// The crawler reads a Delta table on the S3 server through its log too.
#[cfg(feature = "s3")]
#[tokio::test]
async fn the_crawler_reads_delta_tables_on_s3() {
    use etl_core::catalog::{Crawler, TableFormat};
    let lake = conformance::s3_location();
    let sink = DeltaSink::new(lake.clone());
    let wm = ObjectStoreWatermarkStore::new(lake.child("_etl/watermarks"));
    for ids in [vec![1, 2, 3], vec![4, 5]] {
        let spec = TableSpec::new("events").mode(LoadMode::Full).processed_at(false);
        run_one("delta_crawl_s3", &sink, &wm, spec, sample_batch(&ids))
            .await
            .into_result()
            .unwrap();
    }
    let tables = Crawler::new(lake)
        .with_table_log(Arc::new(etl_sinks::delta::DeltaLog))
        .crawl()
        .await
        .unwrap();
    let found: Vec<_> = tables.iter().map(|t| (t.name.as_str(), t.format, t.rows())).collect();
    assert_eq!(
        found,
        [("events", TableFormat::Delta, Some(2))],
        "the second version's rows"
    );
}

/// A shard plan into Delta, in every mode: shards run in any order, one twice, an UPSERT
/// attempt that staged and never recorded its manifest; nothing is in the table before the
/// commit, which is one Delta commit of every shard's rows (read back by `deltalake` and
/// DuckDB), the dead attempt's rows not among them. A second plan changes five keys and adds
/// five.
#[tokio::test]
async fn a_shard_plan_is_one_delta_commit() {
    use etl_core::ModeOverrides;
    use etl_core::shard::{PlanDir, ShardSizing};
    let dir = tempfile::tempdir().unwrap();
    let sink = DeltaSink::new(Location::local(dir.path()).unwrap());
    let wm = ObjectStoreWatermarkStore::new(Location::memory());
    let plans = Location::memory();
    let first: Vec<(i64, String, i64)> = (1..=300).map(|i| (i, format!("n{i}"), i)).collect();
    let second: Vec<(i64, String, i64)> = (1..=5)
        .map(|i| (i, format!("changed{i}"), 1000 + i))
        .chain((301..=305).map(|i| (i, format!("n{i}"), 1000 + i)))
        .collect();
    let rows = |r: &[(i64, String, i64)]| batch(&r.iter().map(|(i, n, s)| (*i, n.as_str(), *s)).collect::<Vec<_>>());
    let shown = |r: &[(i64, String, i64)]| r.iter().map(|(i, n, _)| (*i, n.clone())).collect::<Vec<_>>();
    let source = Arc::new(MemorySource::new());
    for (name, _) in MODES {
        source.append(name, rows(&first)).unwrap();
    }
    let p = modes_pipeline(&sink, &wm, source.clone());
    for (name, mode) in MODES {
        let plan = p
            .plan_shards(name, ShardSizing::Count(3), &ModeOverrides::new())
            .await
            .unwrap();
        assert_eq!(plan.shards.len(), 3, "{mode}");
        let pd = PlanDir::create(&plans, &plan).await.unwrap();
        if mode == LoadMode::Upsert {
            let spec = TableSpec::new(name)
                .mode(mode)
                .primary_key(["id"])
                .cursor(["updated_at"]);
            let mut dead = etl_core::Sink::shard_sink(&sink)
                .unwrap()
                .begin_shard(etl_core::WriteRequest {
                    pipeline: "delta_modes",
                    spec: &spec,
                    mode,
                    run_id: &format!("{}-0-deadbeef0000", plan.id),
                    started_at: plan.planned_at,
                    last_checkpoint: None,
                    watermark_home: None,
                })
                .await
                .unwrap();
            dead.write(batch(&[(1, "never", 5000)])).await.unwrap();
            std::mem::forget(dead.stage().await.unwrap());
        }
        for i in [2, 0, 1] {
            assert!(p.run_shard(&pd, i).await.unwrap().recorded, "{mode}");
        }
        assert!(
            !p.run_shard(&pd, 1).await.unwrap().recorded,
            "{mode}: a shard run twice stages once"
        );
        assert!(
            sink.open(name).await.unwrap().is_none(),
            "{mode}: no table before the commit"
        );
        let r = p.commit_shards(&pd).await.unwrap();
        let t = r.table(name).unwrap();
        assert_eq!(
            (t.status, t.written_count, t.target_count),
            (TableStatus::Committed, 300, Some(300)),
            "{mode}: {t:?}"
        );
        let uri = dir.path().join(name).display().to_string();
        assert_eq!(
            read_back(&uri, &["id", "name"], None),
            expect(&as_str(&shown(&first))),
            "{mode}"
        );
        assert_eq!(p.watermark(name).await.unwrap().unwrap().run_id, plan.id);
    }
    let staged = |name: &str| {
        let d = dir.path().join(name).join("_etl_staging");
        super::files_under(&d)
    };
    assert_eq!(
        staged("t_upsert"),
        0,
        "the dead attempt's staged rows are deleted with the commit"
    );

    for (name, _) in MODES {
        source.append(name, rows(&second)).unwrap();
    }
    for (name, mode) in MODES {
        let plan = p
            .plan_shards(name, ShardSizing::Count(2), &ModeOverrides::new())
            .await
            .unwrap();
        let pd = PlanDir::create(&plans, &plan).await.unwrap();
        for i in 0..plan.shards.len() {
            p.run_shard(&pd, i).await.unwrap();
        }
        let r = p.commit_shards(&pd).await.unwrap();
        let t = r.table(name).unwrap();
        let mut want = shown(&first);
        match mode {
            LoadMode::Full | LoadMode::TruncateInsert | LoadMode::Incremental => want.extend(shown(&second)),
            LoadMode::Append => want.extend(shown(&first).into_iter().chain(shown(&second))),
            LoadMode::Upsert => {
                want.retain(|(i, _)| *i > 5);
                want.extend(shown(&second));
            }
        }
        assert_eq!(t.target_count, Some(want.len() as u64), "{mode}: {t:?}");
        let uri = dir.path().join(name).display().to_string();
        assert_eq!(read_back(&uri, &["id", "name"], None), expect(&as_str(&want)), "{mode}");
        let table = sink.open(name).await.unwrap().unwrap();
        let commits = futures::StreamExt::count(table.history(None)).await;
        assert_eq!(commits, 2, "{mode}: one Delta commit per plan");
    }
    assert_eq!(staged("t_upsert"), 0);
}

fn as_str(rows: &[(i64, String)]) -> Vec<(i64, &str)> {
    rows.iter().map(|(i, n)| (*i, n.as_str())).collect()
}
