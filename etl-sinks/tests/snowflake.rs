//! The Snowflake sink against the fakesnow emulator (`ETL_TEST_SNOWFLAKE_URL`, started by
//! `scripts/services.sh`), through `SnowflakeSink::with_emulator` (which points
//! `snowflake-api` at it and fills in the answer fields the emulator leaves out); the external
//! stage reads the staged Parquet from a local folder (`file:///…`).

use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, StringArray};
use arrow::record_batch::RecordBatch;
use etl_core::conformance::{render_sorted, unique};
use etl_core::{LoadMode, Location, MemorySource, NullCursors, ObjectStoreWatermarkStore, Pipeline, TableSpec};
use etl_sinks::snowflake::{SnowflakeAuth, SnowflakeSecret, SnowflakeSink, SnowflakeStage};
use reqwest_middleware::{ClientBuilder, ClientWithMiddleware, Middleware, Next};

use super::scenarios::customers;

fn emulator() -> url::Url {
    let url = std::env::var("ETL_TEST_SNOWFLAKE_URL").unwrap_or_else(|_| {
        panic!("ETL_TEST_SNOWFLAKE_URL is not set: run `scripts/services.sh start` and `eval \"$(scripts/services.sh env)\"`")
    });
    url.parse().expect("ETL_TEST_SNOWFLAKE_URL is a URL")
}

/// The batches of a query's raw result (Arrow IPC chunks).
fn batches(raw: snowflake_api::RawQueryResult) -> Vec<RecordBatch> {
    match raw {
        snowflake_api::RawQueryResult::Bytes(chunks) => chunks
            .into_iter()
            .flat_map(|c| {
                arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(c), None)
                    .unwrap()
                    .map(Result::unwrap)
            })
            .collect(),
        snowflake_api::RawQueryResult::Empty => Vec::new(),
        snowflake_api::RawQueryResult::Json(j) => panic!("unexpected JSON rows: {}", j.value),
    }
}

fn client() -> ClientWithMiddleware {
    etl_sinks::snowflake::emulator_client(emulator())
}

fn auth() -> SnowflakeAuth {
    SnowflakeAuth {
        account: "etl".into(),
        user: "etl".into(),
        secret: SnowflakeSecret::Password("not-a-secret".into()),
        database: "ETL_TEST".into(),
        warehouse: None,
        role: None,
    }
}

/// A session of the test's own on the emulator.
fn api() -> snowflake_api::SnowflakeApi {
    snowflake_api::SnowflakeApiBuilder::new(snowflake_api::AuthArgs {
        account_identifier: "etl".into(),
        warehouse: None,
        database: Some("ETL_TEST".into()),
        schema: None,
        username: "etl".into(),
        role: None,
        auth_type: snowflake_api::AuthType::Password(snowflake_api::PasswordArgs {
            password: "not-a-secret".into(),
        }),
    })
    .with_client(client())
    .build()
    .unwrap()
}

/// The column names `information_schema` holds for a table, spelled exactly as given.
async fn column_names(api: &snowflake_api::SnowflakeApi, schema: &str, table: &str) -> Vec<String> {
    batches(
        api.exec_raw(&format!(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = '{schema}' \
             AND table_name = '{table}' ORDER BY ordinal_position"
        ))
        .await
        .unwrap(),
    )
    .iter()
    .flat_map(|b| {
        (0..b.num_rows())
            .map(|i| arrow::util::display::array_value_to_string(b.column(0), i).unwrap())
            .collect::<Vec<_>>()
    })
    .collect()
}

/// A schema of the test's own and a folder the emulator reads staged files from.
struct Wh {
    schema: String,
    staging: tempfile::TempDir,
}

#[async_trait::async_trait]
impl super::scenarios::Warehouse for Wh {
    fn sink(&self) -> Arc<dyn etl_core::Sink> {
        Arc::new(Wh::sink(self))
    }

    fn schema(&self) -> &str {
        &self.schema
    }

    async fn rows(&self, table: &str) -> String {
        Wh::rows(self, table).await
    }

    async fn exec(&self, sql: &str) {
        let sql = sql.replace("$S", &self.schema);
        api().exec_raw(&sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// The staged files.
    async fn leftovers(&self) -> usize {
        super::files_under(self.staging.path())
    }
}

impl Wh {
    fn new() -> Wh {
        Wh {
            schema: unique("sf"),
            staging: tempfile::tempdir().unwrap(),
        }
    }

    fn sink(&self) -> SnowflakeSink {
        let url = format!("file://{}", self.staging.path().display());
        SnowflakeSink::new(
            auth(),
            Location::local(self.staging.path()).unwrap(),
            SnowflakeStage::Url(url),
        )
        .with_schema(&self.schema)
        .with_emulator(emulator().as_str())
        .unwrap()
    }

    /// A query's rows, rendered sorted, as a Snowflake user reads them: the names unquoted
    /// (so upper-cased), the columns found under their upper-case names in
    /// `information_schema` (compared as text: the emulator's own name lookup ignores case),
    /// and shown in lower case.
    async fn rows(&self, table: &str) -> String {
        let api = api();
        // Every column as text: the emulator's Arrow for a NULL timestamp has a NULL struct
        // with non-nullable children, which arrow's IPC reader refuses.
        let (schema, table) = table.split_once('.').unwrap_or((&self.schema, table));
        let columns = column_names(&api, &schema.to_uppercase(), &table.to_uppercase()).await;
        assert!(!columns.is_empty(), "no columns for {table} (upper case) in {schema}");
        let select: Vec<String> = columns
            .iter()
            .map(|c| format!("TO_VARCHAR({c}) AS \"{}\"", c.to_lowercase()))
            .collect();
        let sql = format!("SELECT {} FROM {schema}.{table}", select.join(", "));
        let batches = batches(api.exec_raw(&sql).await.unwrap());
        render_sorted(&batches, &[])
    }

    fn pipeline(&self, source: Arc<MemorySource>, wm: &ObjectStoreWatermarkStore, spec: TableSpec) -> Pipeline {
        Pipeline::builder(unique("p"))
            .source_arc(source)
            .sink(self.sink())
            .watermarks(wm.clone())
            .table(spec.processed_at(false))
            .build()
            .unwrap()
    }
}

/// A shard plan's commit: one transaction (`scenarios::shard_plan_commits_in_one_transaction`).
#[tokio::test]
async fn snowflake_a_shard_plan_commits_its_shards_in_one_transaction() {
    super::scenarios::shard_plan_commits_in_one_transaction(&Wh::new()).await
}

/// The seed's walkthrough on Snowflake (see `scenarios::seed_upsert`); staged files and
/// tables are gone after the runs.
#[tokio::test]
async fn snowflake_upsert_keeps_one_row_per_key_the_latest() {
    let wh = Wh::new();
    assert_eq!(super::scenarios::seed_upsert(&wh).await, 1, "one staged file");
    assert_eq!(super::files_under(wh.staging.path()), 0, "staged files are removed");
}

/// The three merge strategies with soft deletes (see `scenarios::merge_strategies`).
#[tokio::test]
async fn snowflake_merge_strategies_with_soft_deletes_on_a_composite_key() {
    super::scenarios::merge_strategies(&Wh::new()).await;
}

/// A target naming its schema (see `scenarios::schema_qualified_target`).
#[tokio::test]
async fn snowflake_schema_qualified_target() {
    super::scenarios::schema_qualified_target(&Wh::new()).await;
}

/// Names are stored upper-cased, as Snowflake folds unquoted ones (so `SELECT * FROM
/// crm.orders` finds them), or exactly as given on request; the checkpoint table likewise.
#[tokio::test]
async fn snowflake_names_upper_case_unless_kept_exact() {
    let api = api();
    for exact in [false, true] {
        let wh = Wh::new();
        let source = Arc::new(MemorySource::new());
        source.append("Orders", customers(&[(1, "a", 1)])).unwrap();
        let sink = if exact { wh.sink().with_exact_names() } else { wh.sink() };
        Pipeline::builder(unique("n"))
            .source_arc(source)
            .sink(sink)
            .watermarks(ObjectStoreWatermarkStore::new(Location::memory()))
            .table(
                TableSpec::new("Orders")
                    .mode(LoadMode::Upsert)
                    .primary_key(["customer_id"])
                    .cursor(["updated_at"]),
            )
            .build()
            .unwrap()
            .run()
            .await
            .unwrap()
            .into_result()
            .unwrap();
        let fold = |s: &str| if exact { s.to_string() } else { s.to_uppercase() };
        assert_eq!(
            column_names(&api, &fold(&wh.schema), &fold("Orders")).await,
            ["customer_id", "name", "updated_at", "etl_processed_at"].map(fold),
            "exact names: {exact}"
        );
        let other = |s: &str| if exact { s.to_uppercase() } else { s.to_lowercase() };
        assert!(
            column_names(&api, &other(&wh.schema), &other("Orders"))
                .await
                .is_empty()
        );
        assert!(
            !column_names(&api, &fold(&wh.schema), &fold("_etl_checkpoints"))
                .await
                .is_empty()
        );
    }
    // Read as a Snowflake user writes it: unquoted.
    let wh = Wh::new();
    let source = Arc::new(MemorySource::new());
    source.append("orders", customers(&[(1, "a", 1)])).unwrap();
    wh.pipeline(
        source,
        &ObjectStoreWatermarkStore::new(Location::memory()),
        TableSpec::new("orders"),
    )
    .run()
    .await
    .unwrap()
    .into_result()
    .unwrap();
    let got = batches(
        api.exec_raw(&format!("SELECT customer_id, name FROM {}.orders", wh.schema))
            .await
            .unwrap(),
    );
    assert_eq!(
        render_sorted(&got, &[]),
        "+-------------+------+\n\
         | CUSTOMER_ID | NAME |\n\
         +-------------+------+\n\
         | 1           | a    |\n\
         +-------------+------+"
    );
}

/// FULL, TRUNCATE_INSERT and APPEND; a FULL that fails leaves the old rows; a column type the
/// target cannot hold is an error naming it; a new column is added; a NULL key is refused.
#[tokio::test]
async fn snowflake_modes_and_bad_input() {
    let wh = Wh::new();
    let wm = ObjectStoreWatermarkStore::new(Location::memory());
    let run = |mode: LoadMode, batch: RecordBatch| {
        let source = Arc::new(MemorySource::new());
        source.append("t", batch).unwrap();
        let cursor: &[&str] = if mode == LoadMode::Upsert {
            &["customer_id"]
        } else {
            &[]
        };
        let spec = TableSpec::new("t")
            .mode(mode)
            .primary_key(["customer_id"])
            .cursor(cursor.iter().copied())
            // The key is the cursor here: the sink's refusal of NULL keys is what is tested.
            .null_cursors(NullCursors::WholeReadsOnly);
        let p = wh.pipeline(source, &wm, spec);
        async move { p.run().await.unwrap() }
    };
    let r = run(LoadMode::Full, customers(&[(1, "a", 1), (2, "b", 1)]))
        .await
        .into_result()
        .unwrap();
    assert_eq!(r.tables[0].target_count, Some(2));
    let r = run(LoadMode::TruncateInsert, customers(&[(3, "c", 1)]))
        .await
        .into_result()
        .unwrap();
    assert_eq!((r.tables[0].deleted_count, r.tables[0].target_count), (2, Some(1)));
    let r = run(LoadMode::Append, customers(&[(4, "d", 1)]))
        .await
        .into_result()
        .unwrap();
    assert_eq!(r.tables[0].target_count, Some(2));
    let before = wh.rows("t").await;
    // A FULL that fails leaves the old rows.
    let bad = RecordBatch::try_from_iter([
        ("customer_id", Arc::new(Int64Array::from(vec![5])) as ArrayRef),
        (
            "name",
            Arc::new(arrow::array::DurationSecondArray::from(vec![1])) as ArrayRef,
        ),
    ])
    .unwrap();
    let err = run(LoadMode::Full, bad).await.tables[0].error.clone().unwrap();
    assert!(err.contains("`name`") && err.contains("Duration"), "{err}");
    assert_eq!(wh.rows("t").await, before);
    // An existing text column cannot take integers.
    let wide = RecordBatch::try_from_iter([
        ("customer_id", Arc::new(Int64Array::from(vec![10])) as ArrayRef),
        ("name", Arc::new(Int64Array::from(vec![1])) as ArrayRef),
    ])
    .unwrap();
    let err = run(LoadMode::Append, wide).await.tables[0].error.clone().unwrap();
    assert!(err.contains("`name`") && err.contains("number(38,0)"), "{err}");
    assert_eq!(wh.rows("t").await, before);
    // A new column is added; earlier rows have NULL in it.
    let extra = RecordBatch::try_from_iter([
        ("customer_id", Arc::new(Int64Array::from(vec![11])) as ArrayRef),
        ("name", Arc::new(StringArray::from(vec!["k"])) as ArrayRef),
        ("tier", Arc::new(StringArray::from(vec!["gold"])) as ArrayRef),
    ])
    .unwrap();
    run(LoadMode::Append, extra).await.into_result().unwrap();
    assert_eq!(
        wh.rows("t").await,
        "+-------------+------+---------------------+------+\n\
         | customer_id | name | updated_at          | tier |\n\
         +-------------+------+---------------------+------+\n\
         | 11          | k    |                     | gold |\n\
         | 3           | c    | 2025-07-01 01:00:00 |      |\n\
         | 4           | d    | 2025-07-01 01:00:00 |      |\n\
         +-------------+------+---------------------+------+"
    );
    // A NULL key in an upsert batch is an error naming the count; nothing changes.
    let before = wh.rows("t").await;
    let nulls = RecordBatch::try_from_iter([
        (
            "customer_id",
            Arc::new(Int64Array::from(vec![None, Some(1), None])) as ArrayRef,
        ),
        ("name", Arc::new(StringArray::from(vec!["x", "y", "z"])) as ArrayRef),
    ])
    .unwrap();
    let err = run(LoadMode::Upsert, nulls).await.tables[0].error.clone().unwrap();
    assert!(err.contains("2 rows have a NULL in the primary key"), "{err}");
    assert_eq!(wh.rows("t").await, before);
    assert_eq!(
        super::files_under(wh.staging.path()),
        0,
        "staged files are removed after failures too"
    );
}

/// The crash tests' pipeline: `events` (ids `rows`) into the schema named in `dir/schema`, in
/// the mode named in `dir/mode`, staging under `dir/staging`, watermarks under `dir/wm`.
fn crash_pipeline(dir: &std::path::Path, rows: &[i64]) -> Pipeline {
    let schema = std::fs::read_to_string(dir.join("schema")).unwrap();
    let mode: LoadMode = std::fs::read_to_string(dir.join("mode")).unwrap().parse().unwrap();
    let staging = dir.join("staging");
    std::fs::create_dir_all(&staging).unwrap();
    let sink = SnowflakeSink::new(
        auth(),
        Location::local(&staging).unwrap(),
        SnowflakeStage::Url(format!("file://{}", staging.display())),
    )
    .with_schema(schema)
    .with_emulator(emulator().as_str())
    .unwrap();
    let source = MemorySource::new();
    source
        .append("events", etl_core::conformance::sample_batch(rows))
        .unwrap();
    Pipeline::builder("crash")
        .source(source)
        .sink(sink)
        .watermarks(ObjectStoreWatermarkStore::new(Location::local(dir.join("wm")).unwrap()))
        .table(super::scenarios::crash_table(mode))
        .build()
        .unwrap()
}

/// Run by the crash tests in a child process, which the failpoint kills.
#[tokio::test]
#[ignore = "run as a child process by the crash tests"]
async fn snowflake_crash_child() {
    let dir = std::env::var("ETL_CRASH_DIR").expect("ETL_CRASH_DIR");
    let _ = crash_pipeline(std::path::Path::new(&dir), &[1, 2, 3]).run().await;
    panic!("the failpoint {:?} did not fire", std::env::var("ETL_FAILPOINT"));
}

/// In every mode: a committed run with id 1, then a run with ids 1–3 killed after staging
/// (or after the sink's commit); the rerun (ids 1–4) leaves exactly one clean run's rows.
#[tokio::test]
async fn snowflake_killed_then_rerun_leaves_one_clean_run() {
    for (mode, failpoint, after) in [
        (LoadMode::Upsert, "after_stage", vec![1, 2, 3, 4]),
        (LoadMode::Append, "after_stage", vec![1, 1, 2, 3, 4]),
        (LoadMode::Incremental, "after_stage", vec![1, 2, 3, 4]),
        (LoadMode::Incremental, "after_sink_commit", vec![1, 2, 3, 4]),
        (LoadMode::Full, "after_stage", vec![1, 2, 3, 4]),
        (LoadMode::TruncateInsert, "after_stage", vec![1, 2, 3, 4]),
    ] {
        let wh = Wh::new();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("schema"), &wh.schema).unwrap();
        std::fs::write(dir.path().join("mode"), mode.as_str()).unwrap();
        crash_pipeline(dir.path(), &[1])
            .run()
            .await
            .unwrap()
            .into_result()
            .unwrap();
        let first = wh.rows("events").await;
        super::kill_child_at("snowflake::snowflake_crash_child", dir.path(), failpoint);
        if failpoint == "after_stage" {
            assert_eq!(wh.rows("events").await, first, "{mode}: the dead run changed nothing");
        }
        let r = crash_pipeline(dir.path(), &[1, 2, 3, 4])
            .run()
            .await
            .unwrap()
            .into_result()
            .unwrap();
        if failpoint == "after_sink_commit" {
            assert!(
                r.tables[0].recovered,
                "{mode}: the rerun completes the dead run's watermark"
            );
        }
        let ids: Vec<String> = wh
            .rows("events")
            .await
            .lines()
            .skip(3)
            .filter_map(|l| l.split('|').nth(1).map(|c| c.trim().to_string()))
            .filter(|c| !c.is_empty())
            .collect();
        let want: Vec<String> = after.iter().map(|i| i.to_string()).collect();
        assert_eq!(ids, want, "{mode} after {failpoint}");
    }
}

/// Every `log` record of the process, as text.
static LOGGED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

struct Capture;

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }

    fn log(&self, record: &log::Record) {
        LOGGED
            .lock()
            .unwrap()
            .push(format!("{} {}: {}", record.level(), record.target(), record.args()));
    }

    fn flush(&self) {}
}

/// With a logger at the most verbose level, no line holds the password or a session token:
/// the login answer `snowflake-api` logs shows stand-ins, and the session still works.
#[tokio::test]
async fn no_secret_reaches_a_log_line() {
    static CAPTURE: Capture = Capture;
    let _ = log::set_logger(&CAPTURE);
    log::set_max_level(log::LevelFilter::Trace);
    let wh = Wh::new();
    let source = Arc::new(MemorySource::new());
    source.append("t", customers(&[(1, "a", 1)])).unwrap();
    let wm = ObjectStoreWatermarkStore::new(Location::memory());
    let spec = TableSpec::new("t").mode(LoadMode::Full);
    wh.pipeline(source, &wm, spec)
        .run()
        .await
        .unwrap()
        .into_result()
        .unwrap();
    let logged = LOGGED.lock().unwrap().join("\n");
    let auth = logged
        .lines()
        .find(|l| l.contains("Auth response"))
        .unwrap_or_else(|| panic!("the login answer is logged at debug level: {logged}"));
    assert!(!logged.contains("not-a-secret"), "the password is never logged");
    let tokens: Vec<&str> = auth
        .match_indices("token: \"")
        .map(|(i, m)| auth[i + m.len()..].split('"').next().unwrap())
        .collect();
    assert!(tokens.len() >= 2, "{auth}");
    assert!(tokens.iter().all(|t| t.starts_with("etl-redacted-")), "{auth}");
}

/// Answers a client cannot decode are not worth retrying; a server that cannot be reached, or
/// that never answers (after the login timeout), is.
#[tokio::test]
async fn undecodable_answers_are_final_unreachable_and_silent_servers_transient() {
    struct Garble;
    #[async_trait::async_trait]
    impl Middleware for Garble {
        async fn handle(
            &self,
            req: reqwest::Request,
            ext: &mut http::Extensions,
            next: Next<'_>,
        ) -> reqwest_middleware::Result<reqwest::Response> {
            let query = req.url().path().contains("query-request");
            let resp = next.run(req, ext).await?;
            if !query {
                return Ok(resp);
            }
            Ok(http::Response::builder()
                .status(200)
                .body("{\"success\": true, \"no\": \"snowflake\"}")
                .expect("response")
                .into())
        }
    }
    let wh = Wh::new();
    let s = std::time::Duration::from_secs(1);
    let quick = etl_core::Timeouts {
        connect: s,
        login: s,
        answer: Some(s),
    };
    let run = |client: ClientWithMiddleware, at: url::Url| {
        let source = Arc::new(MemorySource::new());
        source.append("t", customers(&[(1, "a", 1)])).unwrap();
        let url = format!("file://{}", wh.staging.path().display());
        let sink = SnowflakeSink::new(
            auth(),
            Location::local(wh.staging.path()).unwrap(),
            SnowflakeStage::Url(url),
        )
        .with_schema(&wh.schema)
        .with_http_client(client)
        .with_emulator(at.as_str())
        .unwrap()
        .with_timeouts(quick);
        async move {
            Pipeline::builder("garbled")
                .source_arc(source)
                .sink(sink)
                .watermarks(ObjectStoreWatermarkStore::new(Location::memory()))
                .table(TableSpec::new("t"))
                .build()
                .unwrap()
                .run()
                .await
                .unwrap()
        }
    };
    let plain = || ClientBuilder::new(reqwest::Client::new()).build();
    let garbled = ClientBuilder::new(reqwest::Client::new()).with(Garble).build();
    let r = run(garbled, emulator()).await;
    let t = r.table("t").unwrap();
    assert_eq!(t.status, etl_core::TableStatus::Failed);
    assert!(!t.retryable, "{t:?}");

    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut gone = emulator();
    gone.set_port(Some(closed.local_addr().unwrap().port())).unwrap();
    drop(closed);
    let r = run(plain(), gone).await;
    let t = r.table("t").unwrap();
    assert_eq!(t.status, etl_core::TableStatus::Failed);
    assert!(t.retryable, "{t:?}");

    // A server that accepts the connection and never answers: the login times out.
    let mut silent = emulator();
    silent.set_port(Some(etl_core::conformance::silent_server())).unwrap();
    let r = run(plain(), silent).await;
    let t = r.table("t").unwrap();
    assert_eq!(t.status, etl_core::TableStatus::Failed);
    assert!(t.retryable, "{t:?}");
    assert!(
        t.error
            .as_deref()
            .unwrap()
            .contains("no answer from etl.snowflakecomputing.com within 1s while logging in"),
        "{t:?}"
    );
}

/// A dropped or truncated target, or its dropped schema (see
/// `scenarios::target_lost_is_detected`).
#[tokio::test]
async fn snowflake_target_lost_is_detected() {
    let store =
        || -> Arc<dyn etl_core::WatermarkStore> { Arc::new(ObjectStoreWatermarkStore::new(Location::memory())) };
    super::scenarios::target_lost_is_detected(&Wh::new(), super::scenarios::DAMAGES, &store).await;
}

/// Deletes at a Postgres source reach the Snowflake target (see
/// `scenarios::deletes_reach_the_target`).
#[tokio::test]
async fn snowflake_deletes_reach_the_target() {
    super::scenarios::deletes_reach_the_target(&Wh::new()).await;
}

/// A complete drop of files deletes the keys it lacks from Snowflake (see
/// `scenarios::a_complete_drop_deletes_the_keys_it_lacks`).
#[tokio::test]
async fn snowflake_a_complete_drop_deletes_the_keys_it_lacks() {
    super::scenarios::a_complete_drop_deletes_the_keys_it_lacks(&Wh::new()).await;
}

/// Marked deletes keep their rows in Snowflake (see
/// `scenarios::marked_deletes_keep_their_rows`).
#[tokio::test]
async fn snowflake_marked_deletes_keep_their_rows() {
    super::scenarios::marked_deletes_keep_their_rows(&Wh::new()).await;
}

/// Reconciliation finds and repairs a damaged Snowflake target (see
/// `scenarios::reconciliation_finds_and_repairs`).
#[tokio::test]
async fn snowflake_reconciliation_finds_and_repairs() {
    super::scenarios::reconciliation_finds_and_repairs(&Wh::new()).await;
}
