//! The Postgres sink against the real server named by `ETL_TEST_PG`
//! (`scripts/services.sh` starts one and prints it), and the Redshift sink's transactional
//! path on the same server (`RedshiftLoad::PostgresStandIn`: the staged Parquet files loaded
//! by `COPY FROM STDIN`, every other statement as Redshift gets it). Tests marked `on_both!`
//! run once per sink.

use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, StringArray};
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use etl_connectors::postgres::PostgresSource;
use etl_core::conformance::{self, TargetProbe, render_sorted, unique};
use etl_core::{
    Error, LoadMode, Location, MemorySource, NullCursors, ObjectStoreWatermarkStore, Pipeline, ReadRequest, Sink,
    Source, TableSpec, WatermarkStore,
};
use etl_sinks::postgres::PostgresSink;
use futures::TryStreamExt;
use tokio_postgres::NoTls;

use super::scenarios::customers;

fn conn() -> String {
    std::env::var("ETL_TEST_PG").unwrap_or_else(|_| {
        panic!("ETL_TEST_PG is not set: run `scripts/services.sh start` and `eval \"$(scripts/services.sh env)\"`")
    })
}

/// The sink a test writes with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Postgres,
    /// The Redshift sink, Postgres standing in for Redshift.
    #[cfg(feature = "redshift")]
    Redshift,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Postgres => "postgres",
            #[cfg(feature = "redshift")]
            Kind::Redshift => "redshift",
        }
    }

    fn parse(s: &str) -> Kind {
        match s {
            #[cfg(feature = "redshift")]
            "redshift" => Kind::Redshift,
            _ => Kind::Postgres,
        }
    }
}

/// The sink of `kind` writing into `schema`; the Redshift sink stages its files in `staging`.
fn sink_of(kind: Kind, schema: &str, staging: &std::path::Path) -> Arc<dyn Sink> {
    let _ = staging;
    match kind {
        Kind::Postgres => Arc::new(PostgresSink::new(&conn()).unwrap().with_schema(schema)),
        #[cfg(feature = "redshift")]
        Kind::Redshift => {
            use etl_sinks::redshift::{RedshiftLoad, RedshiftSink};
            let staging = Location::local(staging).unwrap();
            Arc::new(
                RedshiftSink::new(&conn(), staging, RedshiftLoad::PostgresStandIn)
                    .unwrap()
                    .with_schema(schema),
            )
        }
    }
}

/// One run of a pipeline of one table: `batch` as table `spec.name` of a memory source into
/// `sink`, watermarks in `wm`.
async fn run_one(
    pipeline: impl Into<String>,
    sink: Arc<dyn Sink>,
    wm: ObjectStoreWatermarkStore,
    spec: TableSpec,
    batch: RecordBatch,
) -> etl_core::RunReport {
    let source = Arc::new(MemorySource::new());
    source.append(&spec.name, batch).unwrap();
    Pipeline::builder(pipeline)
        .source_arc(source)
        .sink_arc(sink)
        .watermarks(wm)
        .table(spec)
        .build()
        .unwrap()
        .run()
        .await
        .unwrap()
}

/// Runs a test body once per sink: `<name>::postgres` and `<name>::redshift`.
macro_rules! on_both {
    ($name:ident) => {
        mod $name {
            #[tokio::test]
            async fn postgres() {
                super::$name(super::Kind::Postgres).await
            }

            #[cfg(feature = "redshift")]
            #[tokio::test]
            async fn redshift() {
                super::$name(super::Kind::Redshift).await
            }
        }
    };
}

/// A schema of the test's own, its sink, and a probe reading its tables back.
struct Wh {
    schema: String,
    client: tokio_postgres::Client,
    kind: Kind,
    staging: tempfile::TempDir,
}

impl Wh {
    async fn new() -> Wh {
        Wh::of(Kind::Postgres).await
    }

    async fn of(kind: Kind) -> Wh {
        let (client, c) = tokio_postgres::connect(&conn(), NoTls).await.unwrap_or_else(|e| {
            panic!("cannot connect to Postgres at ETL_TEST_PG ({e}): run scripts/services.sh start")
        });
        tokio::spawn(c);
        let wh = Wh {
            schema: unique("wh"),
            client,
            kind,
            staging: tempfile::tempdir().unwrap(),
        };
        #[cfg(feature = "redshift")]
        if kind == Kind::Redshift {
            // Redshift's built-in `STRTOL` (text content digests), which Postgres lacks.
            wh.exec(
                "DO $$ BEGIN
                   CREATE FUNCTION public.strtol(t text, base int) RETURNS bigint LANGUAGE sql IMMUTABLE
                     AS 'SELECT (''x'' || lpad(t, 16, ''0''))::bit(64)::bigint';
                 EXCEPTION WHEN duplicate_function OR unique_violation THEN NULL; END $$",
            )
            .await;
        }
        wh
    }

    fn sink(&self) -> Arc<dyn Sink> {
        sink_of(self.kind, &self.schema, self.staging.path())
    }

    /// Files left in the staging folder.
    fn staged_files(&self) -> usize {
        super::files_under(self.staging.path())
    }

    async fn exec(&self, sql: &str) {
        let sql = sql.replace("$S", &self.schema);
        self.client
            .batch_execute(&sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// The rows of `table` in the test's schema, or of `schema.table`.
    async fn rows(&self, table: &str, order: &str) -> String {
        let table = if table.contains('.') {
            table.to_string()
        } else {
            format!("{}.{table}", self.schema)
        };
        self.query(&format!("SELECT * FROM {table} ORDER BY {order}")).await
    }

    /// A query's rows, read through the Postgres source and rendered.
    async fn query(&self, sql: &str) -> String {
        let spec = TableSpec::new("probe").from_query(sql);
        let req = ReadRequest {
            spec: &spec,
            mode: LoadMode::Full,
            from: None,
            run_id: "probe",
            batch_size: 1000,
            limit: None,
            until: None,
            keys: None,
            files: None,
        };
        let batches: Vec<RecordBatch> = PostgresSource::new(&conn())
            .unwrap()
            .read(req)
            .await
            .unwrap()
            .stream
            .try_collect()
            .await
            .unwrap();
        render_sorted(&batches, &[])
    }
}

impl Drop for Wh {
    fn drop(&mut self) {
        let schema = self.schema.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok((c, conn)) = tokio_postgres::connect(&conn(), NoTls).await {
                    tokio::spawn(conn);
                    let _ = c
                        .batch_execute(&format!(
                            "SET lock_timeout = '10s'; DROP SCHEMA IF EXISTS {schema} CASCADE; \
                             DROP SCHEMA IF EXISTS {schema}_x CASCADE"
                        ))
                        .await;
                }
            });
        })
        .join()
        .ok();
    }
}

#[async_trait]
impl super::scenarios::Warehouse for Wh {
    fn sink(&self) -> Arc<dyn Sink> {
        Wh::sink(self)
    }

    fn schema(&self) -> &str {
        &self.schema
    }

    async fn rows(&self, table: &str) -> String {
        Wh::rows(self, table, "1").await
    }

    async fn exec(&self, sql: &str) {
        Wh::exec(self, sql).await
    }

    /// Postgres's shard tables and Redshift's staged files.
    async fn leftovers(&self) -> usize {
        let tables: i64 = self
            .client
            .query_one(
                "SELECT count(*) FROM information_schema.tables WHERE table_schema = $1 \
                 AND table_name LIKE '\\_etl\\_shard%'",
                &[&self.schema],
            )
            .await
            .unwrap()
            .get(0);
        tables as usize + self.staged_files()
    }
}

#[async_trait]
impl TargetProbe for Wh {
    async fn rows(&self, target: &str) -> Vec<RecordBatch> {
        let spec = TableSpec::new(target).from_table(format!("{}.{target}", self.schema));
        let req = ReadRequest {
            spec: &spec,
            mode: LoadMode::Full,
            from: None,
            run_id: "probe",
            batch_size: 1000,
            limit: None,
            until: None,
            keys: None,
            files: None,
        };
        match PostgresSource::new(&conn()).unwrap().read(req).await {
            Ok(e) => e.stream.try_collect().await.unwrap(),
            Err(Error::TableNotFound { .. }) => Vec::new(),
            Err(e) => panic!("probe: {e}"),
        }
    }
}

/// What a database returns never panics a sink: the Redshift sink (on Postgres) meeting the
/// checkpoint table the Postgres sink made in the same schema, and a checkpoint that does not
/// parse, are errors naming the table.
#[cfg(feature = "redshift")]
#[tokio::test]
async fn another_sinks_checkpoint_table_is_an_error_not_a_panic() {
    let wh = Wh::new().await;
    let wm = ObjectStoreWatermarkStore::new(Location::memory());
    let run = |kind: Kind, table: &str| {
        let sink = sink_of(kind, &wh.schema, wh.staging.path());
        run_one(
            "mixed",
            sink,
            wm.clone(),
            TableSpec::new(table),
            customers(&[(1, "a", 1)]),
        )
    };
    run(Kind::Postgres, "a").await.into_result().unwrap();
    let r = run(Kind::Redshift, "b").await;
    let t = r.table("b").unwrap();
    assert_eq!(t.status, etl_core::TableStatus::Failed);
    let e = t.error.as_deref().unwrap();
    assert!(
        e.contains("_etl_checkpoints")
            && e.contains("as jsonb, not varchar(65535)")
            && e.contains("another sink made it"),
        "{e}"
    );
    wh.exec("UPDATE $S._etl_checkpoints SET checkpoint = '{\"run\": 1}'")
        .await;
    let r = run(Kind::Postgres, "a").await;
    let e = r.table("a").unwrap().error.clone().unwrap();
    assert!(
        e.contains("corrupt metadata document") && e.contains("_etl_checkpoints"),
        "{e}"
    );
}

/// A warehouse that does not answer fails the run with a retryable error naming it: one that
/// never answers the login, and a statement stuck behind a lock another session holds (it is
/// cancelled on the server); target and watermark stay as they were, and the rerun loads the
/// rows once.
async fn warehouses_that_do_not_answer_fail_the_run_instead_of_hanging(kind: Kind) {
    let s = std::time::Duration::from_secs(1);
    let quick = etl_core::Timeouts {
        connect: s,
        login: s,
        answer: Some(s),
    };
    let wh = Wh::of(kind).await;
    let port = conformance::silent_server();
    let silent = format!("host=127.0.0.1 port={port} user=postgres dbname=postgres");
    let sink: Arc<dyn Sink> = match kind {
        Kind::Postgres => Arc::new(PostgresSink::new(&silent).unwrap().with_timeouts(quick)),
        #[cfg(feature = "redshift")]
        Kind::Redshift => Arc::new(
            etl_sinks::redshift::RedshiftSink::new(
                &silent,
                Location::local(wh.staging.path()).unwrap(),
                etl_sinks::redshift::RedshiftLoad::PostgresStandIn,
            )
            .unwrap()
            .with_timeouts(quick),
        ),
    };
    let err = sink.last_checkpoint("p", &TableSpec::new("t")).await.unwrap_err();
    conformance::assert_timeout(&err, &format!("127.0.0.1:{port}"), "logging in");

    let wm = ObjectStoreWatermarkStore::new(Location::memory());
    let run = |sink: Arc<dyn Sink>, ids: &[(i64, &str, i64)]| {
        let spec = TableSpec::new("t").mode(LoadMode::Append).processed_at(false);
        run_one("stuck", sink, wm.clone(), spec, customers(ids))
    };
    let patient = wh.sink();
    run(patient.clone(), &[(1, "a", 1)]).await.into_result().unwrap();
    let (locker, driver) = tokio_postgres::connect(&conn(), NoTls).await.unwrap();
    tokio::spawn(driver);
    locker
        .batch_execute(&format!("BEGIN; LOCK TABLE {}.t IN ACCESS EXCLUSIVE MODE", wh.schema))
        .await
        .unwrap();
    let impatient: Arc<dyn Sink> = match kind {
        Kind::Postgres => Arc::new(
            PostgresSink::new(&conn())
                .unwrap()
                .with_schema(&wh.schema)
                .with_timeouts(quick),
        ),
        #[cfg(feature = "redshift")]
        Kind::Redshift => Arc::new(
            etl_sinks::redshift::RedshiftSink::new(
                &conn(),
                Location::local(wh.staging.path()).unwrap(),
                etl_sinks::redshift::RedshiftLoad::PostgresStandIn,
            )
            .unwrap()
            .with_schema(&wh.schema)
            .with_timeouts(quick),
        ),
    };
    let r = run(impatient, &[(2, "b", 1)]).await;
    let t = r.table("t").unwrap();
    assert_eq!(t.status, etl_core::TableStatus::Failed);
    assert!(t.retryable, "{t:?}");
    assert!(
        t.error
            .as_deref()
            .unwrap()
            .contains("within 1s while waiting for an answer"),
        "{t:?}"
    );
    locker.batch_execute("COMMIT").await.unwrap();
    assert_eq!(
        wm.load("stuck", "t").await.unwrap().unwrap().generation,
        1,
        "the watermark did not move"
    );
    run(patient, &[(2, "b", 1)]).await.into_result().unwrap();
    assert_eq!(
        wh.rows("t", "customer_id")
            .await
            .lines()
            .filter(|l| l.starts_with("| "))
            .count(),
        1 + 2,
        "a header and rows 1 and 2, once each"
    );
}
on_both!(warehouses_that_do_not_answer_fail_the_run_instead_of_hanging);

async fn sink_and_pipeline_conformance(kind: Kind) {
    let wh = Wh::of(kind).await;
    conformance::sink(wh.sink(), &wh, &[]).await;
    conformance::pipeline_replay(wh.sink(), &wh, &[]).await;
}
on_both!(sink_and_pipeline_conformance);

#[tokio::test]
async fn watermark_store_conformance() {
    let wh = Wh::new().await;
    let store = PostgresSink::new(&conn())
        .unwrap()
        .with_schema(&wh.schema)
        .watermark_store();
    conformance::watermark_store(&store).await;
    conformance::watermark_store_race(Arc::new(store)).await;
}

/// The seed's walkthrough (see `scenarios::seed_upsert`).
async fn upsert_keeps_one_row_per_key_the_latest(kind: Kind) {
    let wh = Wh::of(kind).await;
    let files = super::scenarios::seed_upsert(&wh).await;
    // The Redshift sink staged one Parquet file, and removed it after the commit.
    assert_eq!(files, u64::from(kind != Kind::Postgres), "{kind:?}");
    assert_eq!(wh.staged_files(), 0, "staged files are removed after the commit");
}
on_both!(upsert_keeps_one_row_per_key_the_latest);

async fn modes_replace_truncate_and_append(kind: Kind) {
    let wh = Wh::of(kind).await;
    let run = |mode: LoadMode, batch: RecordBatch| {
        let spec = TableSpec::new("t")
            .mode(mode)
            .primary_key(["customer_id"])
            .cursor(if mode == LoadMode::Upsert {
                vec!["customer_id"]
            } else {
                vec![]
            })
            // The key is the cursor here: the sink's refusal of NULL keys is what is tested.
            .null_cursors(NullCursors::WholeReadsOnly)
            .processed_at(false);
        let wm = ObjectStoreWatermarkStore::new(Location::memory());
        run_one(unique("p"), wh.sink(), wm, spec, batch)
    };
    let r = run(LoadMode::Full, customers(&[(1, "a", 1), (2, "b", 1)]))
        .await
        .into_result()
        .unwrap();
    assert_eq!(r.tables[0].target_count, Some(2));
    // TRUNCATE_INSERT keeps the table's definition: an index and a comment survive.
    wh.exec("CREATE INDEX t_name ON $S.t (name); COMMENT ON TABLE $S.t IS 'kept'")
        .await;
    let r = run(LoadMode::TruncateInsert, customers(&[(3, "c", 1)]))
        .await
        .into_result()
        .unwrap();
    assert_eq!((r.tables[0].deleted_count, r.tables[0].target_count), (2, Some(1)));
    let kept: String = wh
        .client
        .query_one(
            &format!(
                "SELECT obj_description('{s}.t'::regclass) || ',' || count(*) FROM pg_indexes
                  WHERE schemaname = '{s}' AND indexname = 't_name'",
                s = wh.schema
            ),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(kept, "kept,1");
    let r = run(LoadMode::Append, customers(&[(4, "d", 1)]))
        .await
        .into_result()
        .unwrap();
    assert_eq!(r.tables[0].target_count, Some(2));
    // A FULL that fails part way leaves the old rows whole; a successful one replaces them.
    let bad = customers(&[(5, "e", 1)]);
    let bad = RecordBatch::try_from_iter([
        ("customer_id", bad.column(0).clone()),
        (
            "name",
            Arc::new(arrow::array::DurationSecondArray::from(vec![1])) as ArrayRef,
        ),
    ])
    .unwrap();
    let r = run(LoadMode::Full, bad).await;
    let err = r.tables[0].error.clone().unwrap();
    assert!(err.contains("`name`") && err.contains("Duration"), "{err}");
    assert_eq!(
        wh.rows("t", "customer_id").await,
        "+-------------+------+---------------------+\n\
         | customer_id | name | updated_at          |\n\
         +-------------+------+---------------------+\n\
         | 3           | c    | 2025-07-01T01:00:00 |\n\
         | 4           | d    | 2025-07-01T01:00:00 |\n\
         +-------------+------+---------------------+"
    );
    let r = run(LoadMode::Full, customers(&[(9, "z", 2)]))
        .await
        .into_result()
        .unwrap();
    assert_eq!((r.tables[0].deleted_count, r.tables[0].target_count), (2, Some(1)));
    // A column type the target cannot hold names table, column and both types; nothing moves.
    let wide = RecordBatch::try_from_iter([
        ("customer_id", Arc::new(Int64Array::from(vec![10])) as ArrayRef),
        ("name", Arc::new(Int64Array::from(vec![1])) as ArrayRef),
    ])
    .unwrap();
    let r = run(LoadMode::Append, wide).await;
    let err = r.tables[0].error.clone().unwrap();
    assert!(
        err.contains("`name`") && (err.contains("text") || err.contains("character varying")) && err.contains("bigint"),
        "{err}"
    );
    // A new source column is added to the target; earlier rows have NULL in it.
    let extra = RecordBatch::try_from_iter([
        ("customer_id", Arc::new(Int64Array::from(vec![11])) as ArrayRef),
        ("name", Arc::new(StringArray::from(vec!["k"])) as ArrayRef),
        ("tier", Arc::new(StringArray::from(vec!["gold"])) as ArrayRef),
    ])
    .unwrap();
    run(LoadMode::Append, extra).await.into_result().unwrap();
    assert_eq!(
        wh.rows("t", "customer_id").await,
        "+-------------+------+---------------------+------+\n\
         | customer_id | name | updated_at          | tier |\n\
         +-------------+------+---------------------+------+\n\
         | 11          | k    |                     | gold |\n\
         | 9           | z    | 2025-07-01T02:00:00 |      |\n\
         +-------------+------+---------------------+------+"
    );
    wh.exec("DELETE FROM $S.t WHERE customer_id = 11").await;
    // A NULL key in an upsert batch is an error naming the count.
    let nulls = RecordBatch::try_from_iter([
        (
            "customer_id",
            Arc::new(Int64Array::from(vec![None, Some(1), None])) as ArrayRef,
        ),
        ("name", Arc::new(StringArray::from(vec!["x", "y", "z"])) as ArrayRef),
    ])
    .unwrap();
    let r = run(LoadMode::Upsert, nulls).await;
    let err = r.tables[0].error.clone().unwrap();
    assert!(err.contains("2 rows have a NULL in the primary key"), "{err}");
    assert_eq!(wh.rows("t", "customer_id").await.lines().count(), 1 + 4);
    assert_eq!(
        wh.staged_files(),
        0,
        "staged files are removed after failed commits too"
    );
}
on_both!(modes_replace_truncate_and_append);

/// A first upsert creates the target and its key; repeated keys keep their latest row, a NULL
/// key fails the run and leaves no table behind.
async fn first_upsert_collapses_repeated_keys(kind: Kind) {
    let wh = Wh::of(kind).await;
    let run = |table: &str, batch: RecordBatch| {
        let spec = TableSpec::new(table)
            .mode(LoadMode::Upsert)
            .primary_key(["customer_id"])
            .cursor(["updated_at"])
            .processed_at(false);
        let wm = ObjectStoreWatermarkStore::new(Location::memory());
        run_one(unique("p"), wh.sink(), wm, spec, batch)
    };
    let r = run("c", customers(&[(1, "late", 3), (2, "only", 1), (1, "early", 2)]))
        .await
        .into_result()
        .unwrap();
    let t = &r.tables[0];
    assert_eq!((t.inserted_count, t.collapsed_count, t.target_count), (2, 1, Some(2)));
    assert_eq!(
        wh.rows("c", "customer_id").await,
        "+-------------+------+---------------------+\n\
         | customer_id | name | updated_at          |\n\
         +-------------+------+---------------------+\n\
         | 1           | late | 2025-07-01T03:00:00 |\n\
         | 2           | only | 2025-07-01T01:00:00 |\n\
         +-------------+------+---------------------+"
    );
    let with_null = RecordBatch::try_from_iter([
        (
            "customer_id",
            Arc::new(Int64Array::from(vec![Some(1), None])) as ArrayRef,
        ),
        ("updated_at", customers(&[(1, "x", 1), (2, "y", 1)]).column(2).clone()),
    ])
    .unwrap();
    let r = run("n", with_null).await;
    let err = r.tables[0].error.clone().unwrap();
    assert!(err.contains("1 rows have a NULL in the primary key"), "{err}");
    let exists: bool = wh
        .client
        .query_one(&format!("SELECT to_regclass('{}.n') IS NOT NULL", wh.schema), &[])
        .await
        .unwrap()
        .get(0);
    assert!(!exists, "a failed first run leaves no table");
}
on_both!(first_upsert_collapses_repeated_keys);

// ---------------------------------------------------------------- crashes

/// The crash tests' pipeline: `events` into the schema named in `dir/schema`, in the mode
/// named in `dir/mode` (default UPSERT), with watermarks on local disk, or in the warehouse
/// when `dir/in_warehouse` exists.
fn crash_pipeline(dir: &std::path::Path, rows: &[i64]) -> Pipeline {
    let mode: LoadMode = std::fs::read_to_string(dir.join("mode"))
        .map(|m| m.parse().unwrap())
        .unwrap_or(LoadMode::Upsert);
    let schema = std::fs::read_to_string(dir.join("schema")).unwrap();
    let source = MemorySource::new();
    source.append("events", conformance::sample_batch(rows)).unwrap();
    let kind = Kind::parse(&std::fs::read_to_string(dir.join("kind")).unwrap_or_default());
    let sink = sink_of(kind, &schema, &dir.join("staging"));
    let wm: Arc<dyn etl_core::WatermarkStore> = if dir.join("in_warehouse").exists() {
        Arc::new(
            PostgresSink::new(&conn())
                .unwrap()
                .with_schema(schema)
                .watermark_store(),
        )
    } else {
        Arc::new(ObjectStoreWatermarkStore::new(Location::local(dir.join("wm")).unwrap()))
    };
    Pipeline::builder("crash")
        .source(source)
        .sink_arc(sink)
        .watermarks_arc(wm)
        .table(super::scenarios::crash_table(mode))
        .build()
        .unwrap()
}

/// In every other mode: a committed run with id 1, then a run with ids 1–3 killed after
/// staging leaves the target as it was; the rerun (ids 1–4) leaves one clean run's rows.
async fn killed_after_staging_in_every_mode(kind: Kind) {
    for (mode, after) in [
        (LoadMode::Full, vec![1, 2, 3, 4]),
        (LoadMode::TruncateInsert, vec![1, 2, 3, 4]),
        (LoadMode::Incremental, vec![1, 2, 3, 4]),
        (LoadMode::Append, vec![1, 1, 2, 3, 4]),
    ] {
        let wh = Wh::of(kind).await;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("schema"), &wh.schema).unwrap();
        std::fs::write(dir.path().join("mode"), mode.as_str()).unwrap();
        std::fs::write(dir.path().join("kind"), kind.name()).unwrap();
        crash_pipeline(dir.path(), &[1])
            .run()
            .await
            .unwrap()
            .into_result()
            .unwrap();
        let first = render_sorted(&[conformance::sample_batch(&[1])], &[]);
        super::kill_child_at("postgres::postgres_crash_child", dir.path(), "after_stage");
        assert_eq!(
            wh.rows("events", "id").await,
            first,
            "{mode}: the dead run changed nothing"
        );
        if kind != Kind::Postgres {
            assert!(
                dir.path().join("staging/_etl/redshift/crash/events").is_dir(),
                "{mode}: the dead run staged"
            );
        }
        crash_pipeline(dir.path(), &[1, 2, 3, 4])
            .run()
            .await
            .unwrap()
            .into_result()
            .unwrap();
        assert_eq!(
            wh.rows("events", "id").await,
            render_sorted(&[conformance::sample_batch(&after)], &[]),
            "{mode}"
        );
    }
}
on_both!(killed_after_staging_in_every_mode);

/// Run by the crash tests in a child process, which the failpoint kills.
#[tokio::test]
#[ignore = "run as a child process by the crash tests"]
async fn postgres_crash_child() {
    let dir = std::env::var("ETL_CRASH_DIR").expect("ETL_CRASH_DIR");
    let _ = crash_pipeline(std::path::Path::new(&dir), &[1, 2, 3]).run().await;
    panic!("the failpoint {:?} did not fire", std::env::var("ETL_FAILPOINT"));
}

async fn killed_at_any_point_then_rerun_leaves_one_clean_run(kind: Kind) {
    for (failpoint, in_warehouse) in [
        ("after_stage", false),
        ("after_sink_commit", false),
        ("after_sink_commit", true),
    ] {
        if in_warehouse && kind != Kind::Postgres {
            continue; // the watermark store in the warehouse is the Postgres sink's
        }
        let wh = Wh::of(kind).await;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("schema"), &wh.schema).unwrap();
        std::fs::write(dir.path().join("kind"), kind.name()).unwrap();
        if in_warehouse {
            std::fs::write(dir.path().join("in_warehouse"), "").unwrap();
        }
        // A first run with ids 1–3 dies at the failpoint.
        super::kill_child_at("postgres::postgres_crash_child", dir.path(), failpoint);
        let committed = wh
            .client
            .query_one(&format!("SELECT to_regclass('{}.events') IS NOT NULL", wh.schema), &[])
            .await
            .unwrap()
            .get::<_, bool>(0);
        assert_eq!(committed, failpoint == "after_sink_commit", "{failpoint}");
        // The rerun (whose source also has id 4 by now) leaves exactly one clean run's rows.
        let r = crash_pipeline(dir.path(), &[1, 2, 3, 4])
            .run()
            .await
            .unwrap()
            .into_result()
            .unwrap();
        let t = &r.tables[0];
        if in_warehouse {
            assert!(
                !t.recovered,
                "the watermark committed with the rows: nothing to complete"
            );
            assert_eq!((t.extracted_count, t.inserted_count), (1, 1), "only id 4 is new");
        } else if failpoint == "after_sink_commit" {
            assert!(t.recovered, "the rerun completes the dead run's watermark");
            assert_eq!((t.extracted_count, t.inserted_count), (1, 1), "only id 4 is new");
        } else {
            assert_eq!((t.extracted_count, t.inserted_count), (4, 4));
        }
        assert_eq!(
            wh.rows("events", "id").await,
            render_sorted(&[conformance::sample_batch(&[1, 2, 3, 4])], &[]),
            "{failpoint}"
        );
    }
}
on_both!(killed_at_any_point_then_rerun_leaves_one_clean_run);

/// A target naming its schema (see `scenarios::schema_qualified_target`).
async fn schema_qualified_target(kind: Kind) {
    super::scenarios::schema_qualified_target(&Wh::of(kind).await).await;
}
on_both!(schema_qualified_target);

/// The watermark is written in one place. With the object-store store the sink writes none
/// (no `_etl_watermarks` in its schema); with the sink's own store, the sink writes it in the
/// run's transaction, one row per run and generation, and the pipeline nothing more.
#[tokio::test]
async fn the_watermark_is_written_in_one_place() {
    let wh = Wh::new().await;
    let source = Arc::new(MemorySource::new());
    source.append("events", conformance::sample_batch(&[1, 2])).unwrap();
    let spec = super::scenarios::crash_table(LoadMode::Incremental);
    let pipeline = |name: &str, wm: Arc<dyn etl_core::WatermarkStore>| {
        Pipeline::builder(name)
            .source_arc(source.clone())
            .sink_arc(wh.sink())
            .watermarks_arc(wm)
            .table(spec.clone())
            .build()
            .unwrap()
    };
    let elsewhere = ObjectStoreWatermarkStore::new(Location::memory());
    pipeline("elsewhere", Arc::new(elsewhere.clone()))
        .run()
        .await
        .unwrap()
        .into_result()
        .unwrap();
    let wm = elsewhere.load("elsewhere", "events").await.unwrap().unwrap();
    assert_eq!((wm.generation, wm.rows), (1, 2));
    let table = |schema: &str| format!("SELECT to_regclass('{schema}._etl_watermarks') IS NOT NULL");
    let exists: bool = wh.client.query_one(&table(&wh.schema), &[]).await.unwrap().get(0);
    assert!(!exists, "the sink wrote no watermark of its own");

    let store = PostgresSink::new(&conn())
        .unwrap()
        .with_schema(&wh.schema)
        .watermark_store();
    let p = pipeline("inside", Arc::new(store.clone()));
    let first = p.run().await.unwrap().into_result().unwrap();
    source.append("events", conformance::sample_batch(&[3])).unwrap();
    let second = p.run().await.unwrap().into_result().unwrap();
    let rows: Vec<(i64, String)> = wh
        .client
        .query(
            &format!(
                "SELECT generation, run_id FROM {}._etl_watermarks WHERE pipeline = 'inside' ORDER BY generation",
                wh.schema
            ),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(rows, [(1, first.run_id.clone()), (2, second.run_id.clone())]);
    let wm = store.load("inside", "events").await.unwrap().unwrap();
    assert_eq!((wm.generation, wm.rows, wm.run_id), (2, 1, second.run_id));
}

/// The three merge strategies on a composite key, with a soft-delete column.
async fn merge_strategies_with_soft_deletes_on_a_composite_key(kind: Kind) {
    super::scenarios::merge_strategies(&Wh::of(kind).await).await;
}
on_both!(merge_strategies_with_soft_deletes_on_a_composite_key);

/// Every type the Postgres source reads goes back into Postgres unchanged, NULLs and edge
/// values included (the binary COPY encoder against the server's own decoder).
#[tokio::test]
async fn every_type_round_trips_through_the_sink() {
    let wh = Wh::new().await;
    wh.exec(
        "CREATE SCHEMA $S_src;
         CREATE TABLE $S_src.t (id int2, b bool, i4 int4, i8 int8, f4 float4, f8 float8, n numeric(12,3),
           n0 numeric(20,0), t text, by bytea, d date, tm time, ts timestamp, tz timestamptz, iv interval);
         INSERT INTO $S_src.t VALUES
           (1, true, -2147483648, 9223372036854775807, 1.5, -0.25, -123456789.125, 12345678901234567890, 'héllo',
            '\\x00ff', '1999-12-31', '23:59:59.999999', '2025-07-24 01:05:23.123456', '2025-07-24 01:05:23.5+02',
            '1 year 2 mons 3 days 04:05:06.000007'),
           (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
           (3, false, 0, -1, 'NaN', '-Infinity', 0.001, 0, '', '', '1970-01-01', '00:00:00', '1900-01-01 00:00:00',
            '1970-01-01 00:00:00+00', '-1 days'),
           (4, true, 7, 10000, 0, 1e300, 99999.999, 10000, 'x', '\\x01', '2000-01-01', '12:00:00',
            '2000-01-01 00:00:00', '2000-01-01 00:00:00+00', '0');",
    )
    .await;
    let source = PostgresSource::new(&conn()).unwrap();
    let r = Pipeline::builder(unique("rt"))
        .source(source)
        .sink_arc(wh.sink())
        .watermarks(ObjectStoreWatermarkStore::new(Location::memory()))
        .table(
            TableSpec::new("t")
                .from_table(format!("{}_src.t", wh.schema))
                .processed_at(false),
        )
        .build()
        .unwrap()
        .run()
        .await
        .unwrap()
        .into_result()
        .unwrap();
    assert_eq!(r.tables[0].target_count, Some(4));
    let copied = wh.rows("t", "id").await;
    let original = wh
        .query(&format!("SELECT * FROM {}_src.t ORDER BY id", wh.schema))
        .await;
    assert_eq!(copied, original);
    assert!(
        copied.contains("12345678901234567890") && copied.contains("-123456789.125"),
        "{copied}"
    );
    // The column types follow the Arrow types.
    let types: String = wh
        .client
        .query_one(
            &format!(
                "SELECT string_agg(format_type(atttypid, atttypmod), ', ' ORDER BY attnum) FROM pg_attribute
                  WHERE attrelid = '{}.t'::regclass AND attnum > 0",
                wh.schema
            ),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        types,
        "smallint, boolean, integer, bigint, real, double precision, numeric(12,3), numeric(20,0), text, bytea, \
         date, time without time zone, timestamp without time zone, timestamp with time zone, interval"
    );
    wh.exec("DROP SCHEMA $S_src CASCADE").await;
}

/// A pipeline job cancelled by its timeout in the middle of staging (the source stalls after
/// its first batch) leaves the warehouse table and the watermark as they were; the next run
/// merges the window once.
#[tokio::test]
async fn a_timed_out_job_leaves_the_warehouse_and_the_watermark_as_they_were() {
    use etl_core::workflow::{Job, JobStatus, Workflow};
    let wh = Wh::new().await;
    let wm = ObjectStoreWatermarkStore::new(Location::memory());
    let build = |source: Arc<dyn Source>| {
        Pipeline::builder("crm")
            .source_arc(source)
            .sink_arc(wh.sink())
            .watermarks(wm.clone())
            .table(super::scenarios::customers_upsert())
            .build()
            .unwrap()
    };
    let run = |p: Pipeline, timeout: Option<std::time::Duration>| async move {
        let mut job = Job::pipeline("load", p);
        if let Some(t) = timeout {
            job = job.timeout(t);
        }
        Workflow::new("wf").job(job).build().unwrap().run().await
    };
    let day1 = customers(&[(1, "ann", 1), (2, "bob", 1)]);
    let day2 = [customers(&[(2, "bob v2", 2), (3, "cy", 2)]), customers(&[(4, "di", 2)])];

    let source = Arc::new(MemorySource::new());
    source.append("customers", day1.clone()).unwrap();
    assert!(run(build(source.clone()), None).await.is_success());
    let before = wh.rows("customers", "customer_id").await;
    let mark = wm.load("crm", "customers").await.unwrap().unwrap();

    let stalled = Arc::new(super::Stalling(MemorySource::new()));
    for b in std::iter::once(&day1).chain(&day2) {
        stalled.0.append("customers", b.clone()).unwrap();
    }
    let report = run(build(stalled), Some(std::time::Duration::from_millis(500))).await;
    assert_eq!(report.job("load").unwrap().status, JobStatus::TimedOut);
    assert_eq!(
        wh.rows("customers", "customer_id").await,
        before,
        "the target is as it was"
    );
    assert_eq!(
        wm.load("crm", "customers").await.unwrap().unwrap(),
        mark,
        "the watermark did not move"
    );

    for b in &day2 {
        source.append("customers", b.clone()).unwrap();
    }
    let report = run(build(source), Some(std::time::Duration::from_secs(60))).await;
    assert!(report.is_success(), "{report:?}");
    let rows = wh.rows("customers", "customer_id").await;
    assert!(rows.contains("| 2           | bob v2 "), "{rows}");
    assert_eq!(rows.lines().count(), 4 + 4, "one row per key: {rows}");
}

/// The Redshift sink staging on the S3 server: the run's Parquet lands under
/// `_etl/redshift/<pipeline>/<table>/<run>/`, is loaded, and is gone after the commit.
#[cfg(all(feature = "redshift", feature = "s3"))]
#[tokio::test]
async fn redshift_stages_on_s3_and_cleans_up() {
    use etl_sinks::redshift::{RedshiftLoad, RedshiftSink};
    let wh = Wh::of(Kind::Redshift).await;
    let staging = conformance::s3_location();
    let sink = RedshiftSink::new(&conn(), staging.clone(), RedshiftLoad::PostgresStandIn)
        .unwrap()
        .with_schema(&wh.schema);
    let source = MemorySource::new();
    source
        .append(
            "customers",
            customers(&[(1, "ann", 1), (2, "bob", 1), (1, "ann v2", 2)]),
        )
        .unwrap();
    let r = Pipeline::builder("s3stage")
        .source(source)
        .sink(sink)
        .watermarks(ObjectStoreWatermarkStore::new(Location::memory()))
        .table(super::scenarios::customers_upsert())
        .build()
        .unwrap()
        .run()
        .await
        .unwrap()
        .into_result()
        .unwrap();
    let t = &r.tables[0];
    assert_eq!(
        (t.files_written, t.inserted_count, t.collapsed_count, t.target_count),
        (1, 2, 1, Some(2))
    );
    assert!(
        wh.rows("customers", "customer_id")
            .await
            .contains("| 1           | ann v2 |")
    );
    assert!(
        staging.list("_etl/redshift").await.unwrap().is_empty(),
        "staged files removed"
    );
}

/// A dropped or truncated target, or its dropped schema, is detected by the next run (see
/// `scenarios::target_lost_is_detected`), with the object-store watermark store.
async fn target_lost_is_detected(kind: Kind) {
    let wh = Wh::of(kind).await;
    let store =
        || -> Arc<dyn etl_core::WatermarkStore> { Arc::new(ObjectStoreWatermarkStore::new(Location::memory())) };
    super::scenarios::target_lost_is_detected(&wh, super::scenarios::DAMAGES, &store).await;
}
on_both!(target_lost_is_detected);

/// The same with the watermarks kept in the sink's own schema (`PostgresWatermarkStore`):
/// a dropped or truncated table is detected; a dropped schema takes the watermarks with it,
/// so the next run is a first run and reloads every row.
#[tokio::test]
async fn target_lost_is_detected_with_the_postgres_watermark_store() {
    let wh = Wh::new().await;
    let schema = wh.schema.clone();
    let store = move || -> Arc<dyn etl_core::WatermarkStore> {
        Arc::new(
            PostgresSink::new(&conn())
                .unwrap()
                .with_schema(&schema)
                .watermark_store(),
        )
    };
    super::scenarios::target_lost_is_detected(&wh, &super::scenarios::DAMAGES[..2], &store).await;
}

/// Backfill, resync and watermarks set from code, on a Postgres source and warehouse: a
/// backfill of a cursor range restores rows lost from that range and leaves the watermark's
/// position; a resync reloads one table while another keeps its state; a watermark set back
/// re-reads what follows it; a reset one re-reads everything; an appending table refuses a
/// backfill, saying why.
#[tokio::test]
async fn backfill_resync_and_watermarks_from_code() {
    use etl_core::{CursorValue, Position, TableStatus};
    let wh = Wh::new().await;
    wh.exec(
        "CREATE SCHEMA IF NOT EXISTS $S;
         CREATE TABLE $S.src (id int PRIMARY KEY, name text, updated_at timestamp NOT NULL);
         INSERT INTO $S.src SELECT i, 'n' || i, '2025-07-01'::timestamp + i * interval '1 hour'
           FROM generate_series(1, 6) i;
         CREATE TABLE $S.src_other (id int PRIMARY KEY, updated_at timestamp NOT NULL);
         INSERT INTO $S.src_other VALUES (1, '2025-07-01 01:00');",
    )
    .await;
    let hour = |h: u32| {
        CursorValue::Timestamp(
            chrono::NaiveDate::from_ymd_opt(2025, 7, 1)
                .unwrap()
                .and_hms_opt(h, 0, 0)
                .unwrap(),
        )
    };
    let table = |name: &str, from: &str, mode: LoadMode| {
        TableSpec::new(name)
            .from_table(format!("{}.{from}", wh.schema))
            .mode(mode)
            .primary_key(["id"])
            .cursor(["updated_at"])
            .processed_at(false)
    };
    let p = Pipeline::builder(unique("bf"))
        .source(PostgresSource::new(&conn()).unwrap())
        .sink_arc(wh.sink())
        .watermarks(ObjectStoreWatermarkStore::new(Location::memory()))
        .table(table("customers", "src", LoadMode::Upsert))
        .table(table("other", "src_other", LoadMode::Upsert))
        .table(table("log", "src_other", LoadMode::Incremental))
        .build()
        .unwrap();
    p.run().await.unwrap().into_result().unwrap();
    let names = || async {
        wh.query(&format!("SELECT id, name FROM {}.customers ORDER BY id", wh.schema))
            .await
    };
    let all = names().await;
    let generation = |t: &'static str| {
        let p = &p;
        async move { p.watermark(t).await.unwrap().unwrap().generation }
    };
    assert_eq!((generation("customers").await, generation("other").await), (1, 1));

    // Rows lost from the target behind the library's back, inside and outside the range.
    wh.exec("DELETE FROM $S.customers WHERE id IN (2, 3); UPDATE $S.customers SET name = 'x' WHERE id = 5")
        .await;
    let r = p
        .backfill("customers", hour(1), hour(3))
        .await
        .unwrap()
        .into_result()
        .unwrap();
    assert_eq!(r.tables.len(), 1, "only the backfilled table runs");
    let t = r.table("customers").unwrap();
    assert_eq!((t.extracted_count, t.inserted_count), (2, 2), "{t:?}");
    let wm = p.watermark("customers").await.unwrap().unwrap();
    assert_eq!(
        (wm.generation, wm.position.cursor),
        (2, Some(hour(6))),
        "the position stays"
    );
    assert!(names().await.contains("| 5  | x    |"), "outside the range: untouched");
    // The next incremental run finds nothing new: the watermark did not move back.
    let r = p.run().await.unwrap().into_result().unwrap();
    assert_eq!(r.table("customers").unwrap().status, TableStatus::NoNewData);

    let err = p.backfill("log", hour(0), hour(2)).await.unwrap_err().to_string();
    assert!(err.contains("hold them twice") && err.contains("resync"), "{err}");
    let err = p.backfill("customers", hour(3), hour(3)).await.unwrap_err().to_string();
    assert!(err.contains("is empty"), "{err}");

    // A resync reloads one table whole; the other tables keep their state.
    let r = p.resync("customers").await.unwrap().into_result().unwrap();
    assert_eq!(r.tables.len(), 1);
    assert_eq!(r.table("customers").unwrap().mode, LoadMode::Full);
    assert_eq!(names().await, all, "every row as the source has it");
    assert_eq!(generation("other").await, 1, "the other table was not run");
    // The reloaded table has its primary key again, as the one it replaced had.
    let key = format!(
        "SELECT a.attname AS key FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid \
         AND a.attnum = ANY(i.indkey) WHERE i.indrelid = '{}.customers'::regclass AND i.indisprimary",
        wh.schema
    );
    assert_eq!(wh.query(&key).await, "+-----+\n| key |\n+-----+\n| id  |\n+-----+");

    // A watermark set back re-reads what follows it; a reset one re-reads everything.
    p.set_watermark(
        "customers",
        Position {
            cursor: Some(hour(2)),
            ..Position::default()
        },
    )
    .await
    .unwrap();
    let r = p.run().await.unwrap().into_result().unwrap();
    assert_eq!(r.table("customers").unwrap().extracted_count, 4);
    p.reset_watermark("customers").await.unwrap();
    assert!(p.watermark("customers").await.unwrap().unwrap().reset);
    let r = p.run().await.unwrap().into_result().unwrap();
    assert_eq!(r.table("customers").unwrap().extracted_count, 6);
    assert_eq!(names().await, all);
    let err = p.watermark("nope").await.unwrap_err().to_string();
    assert!(err.contains("has no table `nope`"), "{err}");
}

/// Deletes at the source reach the target (see `scenarios::deletes_reach_the_target`).
async fn deletes_reach_the_target(kind: Kind) {
    super::scenarios::deletes_reach_the_target(&Wh::of(kind).await).await;
}
on_both!(deletes_reach_the_target);

/// A complete drop of files deletes the keys it lacks (see
/// `scenarios::a_complete_drop_deletes_the_keys_it_lacks`).
async fn a_complete_drop_deletes_the_keys_it_lacks(kind: Kind) {
    super::scenarios::a_complete_drop_deletes_the_keys_it_lacks(&Wh::of(kind).await).await;
}
on_both!(a_complete_drop_deletes_the_keys_it_lacks);

/// Marked deletes keep their rows (see `scenarios::marked_deletes_keep_their_rows`).
async fn marked_deletes_keep_their_rows(kind: Kind) {
    super::scenarios::marked_deletes_keep_their_rows(&Wh::of(kind).await).await;
}
on_both!(marked_deletes_keep_their_rows);

/// Reconciliation finds and repairs a damaged target (see
/// `scenarios::reconciliation_finds_and_repairs`).
async fn reconciliation_finds_and_repairs(kind: Kind) {
    super::scenarios::reconciliation_finds_and_repairs(&Wh::of(kind).await).await;
}
on_both!(reconciliation_finds_and_repairs);

/// A source text column of a nondeterministic (case-insensitive) collation reconciles with
/// the target its rows were loaded into — both sides hash the text's bytes, not the source's
/// sort key — and a change of case in the target is a change of its content.
#[tokio::test]
async fn text_of_a_case_insensitive_collation_reconciles_by_its_bytes() {
    use etl_core::{ObjectStoreWatermarkStore, Reconcile, ReconcilePolicy, ReconcileStatus};
    let wh = Wh::new().await;
    let src = format!("{}_x", wh.schema);
    let url = conn();
    wh.exec(&format!(
        "CREATE SCHEMA {src};
         DO $$ BEGIN
           CREATE COLLATION public.etl_test_ci (provider = icu, locale = 'und-u-ks-level2', deterministic = false);
         EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$;
         CREATE TABLE {src}.items (id bigint PRIMARY KEY, name text COLLATE public.etl_test_ci,
           updated_at timestamp NOT NULL);
         INSERT INTO {src}.items SELECT i, CASE WHEN i % 2 = 0 THEN 'Name ' || i ELSE 'name ' || i END,
           '2025-07-01'::timestamp + i * interval '1 minute' FROM generate_series(1, 200) i;"
    ))
    .await;
    let store_dir = tempfile::tempdir().unwrap();
    let pipeline = Pipeline::builder(unique("ci"))
        .source(PostgresSource::new(&url).unwrap())
        .sink_arc(wh.sink())
        .watermarks(ObjectStoreWatermarkStore::new(
            Location::local(store_dir.path()).unwrap(),
        ))
        .table(
            TableSpec::new("items")
                .from_table(format!("{src}.items"))
                .mode(LoadMode::Upsert)
                .primary_key(["id"])
                .cursor(["updated_at"])
                .processed_at(false)
                .reconcile(Reconcile {
                    ranges: 16,
                    ..Reconcile::new(ReconcilePolicy::Report).content(["name", "updated_at"])
                }),
        )
        .build()
        .unwrap();
    let r = pipeline.run().await.unwrap().into_result().unwrap();
    let t = r.table("items").unwrap();
    let rec = t.reconciliation.as_ref().unwrap();
    assert_eq!(
        (rec.status, rec.source_rows, rec.target_rows, rec.changed_in_target),
        (ReconcileStatus::Reconciled, 200, 200, 0),
        "the target holds the source's bytes: {t:?}"
    );
    // The same text to the source's collation, other bytes: the target no longer holds the
    // source's value.
    wh.exec("UPDATE $S.items SET name = upper(name) WHERE id = 42").await;
    assert_eq!(
        wh.query(&format!("SELECT name FROM {}.items WHERE id = 42", wh.schema))
            .await,
        wh.query("SELECT 'NAME 42' AS name").await
    );
    let r = pipeline.run().await.unwrap().into_result().unwrap();
    let rec = r.table("items").unwrap().reconciliation.clone().unwrap();
    assert_eq!(
        (
            rec.status,
            rec.changed_in_target,
            rec.missing_in_target,
            rec.extra_in_target
        ),
        (ReconcileStatus::Mismatched, 1, 0, 0),
        "{rec:?}"
    );
    assert!(rec.mismatched.iter().any(|(lo, hi)| *lo <= 42 && 42 <= *hi), "{rec:?}");
}

/// Content digests between two Postgres sides, for keys far from zero: a narrow key space
/// near the top of `bigint` (the count and the key sum packed in one sum, the sum of the
/// keys rebuilt from their offsets) and a wide one across zero (a plain sum): in each, a row
/// deleted at the source and, in the same range, a row changed in the target are found, and
/// the repair leaves the target equal to the source (read back by `EXCEPT`).
#[tokio::test]
async fn digests_of_keys_far_from_zero_name_their_rows() {
    use etl_core::{ObjectStoreWatermarkStore, Reconcile, ReconcilePolicy, ReconcileStatus};
    let wh = Wh::new().await;
    let src = format!("{}_far", wh.schema);
    let url = conn();
    // narrow: 9.1e18 + 7 i; wide: 10^12 i - 2 10^14, ranges of 2.5e13 keys.
    wh.exec(&format!(
        "CREATE SCHEMA {src};
         CREATE TABLE {src}.narrow (id bigint PRIMARY KEY, name text, price numeric(10,2), updated_at timestamp NOT NULL);
         INSERT INTO {src}.narrow SELECT 9100000000000000000 + 7 * i, 'n' || i, i * 1.25,
           '2025-07-01'::timestamp + i * interval '1 minute' FROM generate_series(1, 400) i;
         CREATE TABLE {src}.wide (LIKE {src}.narrow INCLUDING ALL);
         INSERT INTO {src}.wide SELECT 1000000000000 * i - 200000000000000, 'w' || i, i * 0.5,
           '2025-07-01'::timestamp + i * interval '1 minute' FROM generate_series(1, 400) i;"
    ))
    .await;
    let store_dir = tempfile::tempdir().unwrap();
    let pipeline = |policy: ReconcilePolicy| {
        let mut b = Pipeline::builder(format!("far_{}", wh.schema))
            .source(PostgresSource::new(&url).unwrap())
            .sink_arc(wh.sink())
            .watermarks(ObjectStoreWatermarkStore::new(
                Location::local(store_dir.path()).unwrap(),
            ));
        for t in ["narrow", "wide"] {
            b = b.table(
                TableSpec::new(t)
                    .from_table(format!("{src}.{t}"))
                    .mode(LoadMode::Upsert)
                    .primary_key(["id"])
                    .cursor(["updated_at"])
                    .processed_at(false)
                    .reconcile(Reconcile {
                        ranges: 16,
                        ..Reconcile::new(policy).content(["name", "price", "updated_at"])
                    }),
            );
        }
        b.build().unwrap()
    };
    let run = |policy| {
        let p = pipeline(policy);
        async move { p.run().await.unwrap().into_result().unwrap() }
    };
    let r = run(ReconcilePolicy::Report).await;
    for t in ["narrow", "wide"] {
        let rec = r.table(t).unwrap().reconciliation.clone().unwrap();
        assert_eq!(
            (rec.status, rec.source_rows, rec.target_rows),
            (ReconcileStatus::Reconciled, 400, 400),
            "{t}: {rec:?}"
        );
    }
    // In each table: row 110 deleted at the source; rows 111 (in the same range of 25 rows)
    // and 300 changed in the target; row 200 deleted from the target.
    for t in ["narrow", "wide"] {
        let k = |i: i64| match t {
            "narrow" => 9_100_000_000_000_000_000 + 7 * i,
            _ => 1_000_000_000_000 * i - 200_000_000_000_000,
        };
        wh.exec(&format!("DELETE FROM {src}.{t} WHERE id = {}", k(110))).await;
        wh.exec(&format!("UPDATE $S.{t} SET name = 'changed' WHERE id = {}", k(111)))
            .await;
        wh.exec(&format!("UPDATE $S.{t} SET price = price + 1 WHERE id = {}", k(300)))
            .await;
        wh.exec(&format!("DELETE FROM $S.{t} WHERE id = {}", k(200))).await;
    }
    let r = run(ReconcilePolicy::Report).await;
    for t in ["narrow", "wide"] {
        let rec = r.table(t).unwrap().reconciliation.clone().unwrap();
        assert_eq!(
            (
                rec.status,
                rec.missing_in_target,
                rec.extra_in_target,
                rec.changed_in_target
            ),
            (ReconcileStatus::Mismatched, 1, 1, 2),
            "{t}: {rec:?}"
        );
        assert_eq!((rec.source_rows, rec.target_rows), (399, 399), "{t}: {rec:?}");
        // Narrow: each differing range named its keys in its digests (none read key by key):
        // 110 on the target, 200 on the source, 111 and 300 on both. Wide: ranges wider than
        // the key weights' modulus name a deleted key (200) but not a changed row, so the
        // ranges of 110 and 111 (24 and 25 keys) and of 300 (25 and 25) are read.
        let keys = r.table(t).unwrap().keys.clone().unwrap();
        let read = if t == "narrow" { 6 } else { 1 + 49 + 50 };
        assert_eq!(keys.keys_read, read, "{t}: {keys:?}");
    }
    let r = run(ReconcilePolicy::Repair).await;
    for t in ["narrow", "wide"] {
        let rec = r.table(t).unwrap().reconciliation.clone().unwrap();
        assert_eq!(
            (rec.status, rec.deleted_keys, rec.reloaded_rows),
            (ReconcileStatus::Repaired, 1, 3),
            "{t}: {rec:?}"
        );
        let unlike = format!(
            "SELECT count(*) AS unlike FROM ((SELECT * FROM {src}.{t} EXCEPT SELECT * FROM {s}.{t}) UNION ALL \
             (SELECT * FROM {s}.{t} EXCEPT SELECT * FROM {src}.{t})) d",
            s = wh.schema
        );
        assert_eq!(
            wh.query(&unlike).await,
            wh.query("SELECT CAST(0 AS bigint) AS unlike").await,
            "{t}"
        );
    }
    wh.exec(&format!("DROP SCHEMA {src} CASCADE")).await;
}

/// What reconciliation cannot do is refused when the pipeline is built, naming the table.
#[tokio::test]
async fn reconciliation_that_cannot_work_is_refused_at_build() {
    use etl_core::{Reconcile, ReconcilePolicy};
    let wh = Wh::of(Kind::Postgres).await;
    let url = std::env::var("ETL_TEST_PG").unwrap();
    let build = |spec: TableSpec| {
        Pipeline::builder("rec_refused")
            .source(etl_connectors::postgres::PostgresSource::new(&url).unwrap())
            .sink_arc(wh.sink())
            .watermarks(etl_core::ObjectStoreWatermarkStore::new(
                Location::local(std::env::temp_dir()).unwrap(),
            ))
            .table(spec)
            .build()
            .map(|_| ())
            .unwrap_err()
            .to_string()
    };
    let spec = || TableSpec::new("items").primary_key(["id"]).cursor(["updated_at"]);
    let e = build(
        spec()
            .mode(LoadMode::Incremental)
            .reconcile(Reconcile::new(ReconcilePolicy::Repair)),
    );
    assert!(
        e.contains("`items`") && e.contains("only an UPSERT target absorbs them"),
        "{e}"
    );
    let e = build(
        TableSpec::new("items")
            .mode(LoadMode::Full)
            .primary_key(["a", "b"])
            .reconcile(Reconcile::new(ReconcilePolicy::Report)),
    );
    assert!(e.contains("a primary key of one integer column; it has 2"), "{e}");
    let many: Vec<String> = (0..33).map(|i| format!("c{i}")).collect();
    let e = build(
        spec()
            .mode(LoadMode::Upsert)
            .reconcile(Reconcile::new(ReconcilePolicy::Report).content(many)),
    );
    assert!(e.contains("at most 32 columns; 33 are named"), "{e}");
    let e = Pipeline::builder("rec_refused")
        .source(etl_core::MemorySource::new())
        .sink_arc(wh.sink())
        .watermarks(etl_core::ObjectStoreWatermarkStore::new(
            Location::local(std::env::temp_dir()).unwrap(),
        ))
        .table(
            spec()
                .mode(LoadMode::Upsert)
                .reconcile(Reconcile::new(ReconcilePolicy::Report)),
        )
        .build()
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(e.contains("source `memory` does not and sink `postgres` does"), "{e}");
}

/// A shard plan's commit: one transaction (`scenarios::shard_plan_commits_in_one_transaction`).
async fn a_shard_plan_commits_its_shards_in_one_transaction(kind: Kind) {
    super::scenarios::shard_plan_commits_in_one_transaction(&Wh::of(kind).await).await
}

on_both!(a_shard_plan_commits_its_shards_in_one_transaction);

/// A shard plan's commit is reconciled as a whole (`scenarios::a_shard_plan_is_reconciled_as_a_whole`).
async fn a_shard_plan_is_reconciled_as_a_whole(kind: Kind) {
    super::scenarios::a_shard_plan_is_reconciled_as_a_whole(&Wh::of(kind).await).await
}

on_both!(a_shard_plan_is_reconciled_as_a_whole);
