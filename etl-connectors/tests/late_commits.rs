//! Rows a transaction stamps before a run's snapshot but commits after it: read by the next
//! run, once — into an INCREMENTAL lake and an UPSERT Postgres warehouse, from Postgres and
//! from MariaDB (`ETL_TEST_PG`, `ETL_TEST_MYSQL`; `scripts/services.sh` starts both).

use std::sync::Arc;
use std::time::Duration;

use etl_core::conformance::{render_sorted, unique};
use etl_core::{LoadMode, Location, ObjectStoreWatermarkStore, Pipeline, RunReport, Source, TableSpec, TableStatus};
use etl_sinks::lake::LakeSink;
use etl_sinks::postgres::PostgresSink;

/// One of the two databases: a committed connection and a second one for the transaction
/// left open across a run.
#[async_trait::async_trait]
trait Database: Send {
    /// The source, reading the test's table.
    fn source(&self) -> Arc<dyn Source>;
    /// The table's name for a spec.
    fn table(&self) -> String;
    /// Runs statements on the committed connection; `$T` is the table.
    async fn exec(&mut self, sql: &str);
    /// Runs statements on the second connection; `$T` is the table.
    async fn exec_second(&mut self, sql: &str);
    /// The table: `id`, `v`, and `updated_at` stamped by the database's clock by default.
    const DDL: &'static str;
    /// Two rows stamped an hour ago.
    const OLD_ROWS: &'static str;
    /// Opens a transaction.
    const BEGIN: &'static str;
}

fn pg_url() -> String {
    std::env::var("ETL_TEST_PG").unwrap_or_else(|_| {
        panic!("ETL_TEST_PG is not set: run `scripts/services.sh start` and `eval \"$(scripts/services.sh env)\"`")
    })
}

async fn pg_client() -> tokio_postgres::Client {
    let (client, c) = tokio_postgres::connect(&pg_url(), tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to Postgres at ETL_TEST_PG ({e}): run scripts/services.sh start"));
    tokio::spawn(c);
    client
}

#[cfg(feature = "postgres")]
struct Pg {
    first: tokio_postgres::Client,
    second: tokio_postgres::Client,
    schema: String,
}

#[cfg(feature = "postgres")]
impl Pg {
    async fn new() -> Pg {
        let first = pg_client().await;
        let schema = unique("late");
        first.batch_execute(&format!("CREATE SCHEMA {schema}")).await.unwrap();
        Pg {
            first,
            second: pg_client().await,
            schema,
        }
    }
}

#[cfg(feature = "postgres")]
#[async_trait::async_trait]
impl Database for Pg {
    const DDL: &'static str =
        "CREATE TABLE $T (id int PRIMARY KEY, v text, updated_at timestamptz NOT NULL DEFAULT now())";
    const OLD_ROWS: &'static str =
        "INSERT INTO $T VALUES (1, 'a', now() - interval '1 hour'), (2, 'b', now() - interval '1 hour')";
    const BEGIN: &'static str = "BEGIN";

    fn source(&self) -> Arc<dyn Source> {
        Arc::new(etl_connectors::postgres::PostgresSource::new(&pg_url()).unwrap())
    }

    fn table(&self) -> String {
        format!("{}.events", self.schema)
    }

    async fn exec(&mut self, sql: &str) {
        let sql = sql.replace("$T", &self.table());
        self.first
            .batch_execute(&sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    async fn exec_second(&mut self, sql: &str) {
        let sql = sql.replace("$T", &self.table());
        self.second
            .batch_execute(&sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
}

#[cfg(feature = "mysql")]
struct My {
    first: mysql_async::Conn,
    second: mysql_async::Conn,
    url: String,
    name: String,
}

#[cfg(feature = "mysql")]
impl My {
    async fn new() -> My {
        use mysql_async::prelude::Queryable;
        let base = std::env::var("ETL_TEST_MYSQL").unwrap_or_else(|_| {
            panic!(
                "ETL_TEST_MYSQL is not set: run `scripts/services.sh start` and `eval \"$(scripts/services.sh env)\"`"
            )
        });
        let base = base.trim_end_matches('/').to_string();
        let connect = || async {
            mysql_async::Conn::from_url(&base).await.unwrap_or_else(|e| {
                panic!("cannot connect to MariaDB at ETL_TEST_MYSQL ({e}): run scripts/services.sh start")
            })
        };
        let (mut first, second) = (connect().await, connect().await);
        let name = unique("late");
        first.query_drop(format!("CREATE DATABASE {name}")).await.unwrap();
        My {
            first,
            second,
            url: format!("{base}/{name}"),
            name,
        }
    }
}

#[cfg(feature = "mysql")]
#[async_trait::async_trait]
impl Database for My {
    const DDL: &'static str = "CREATE TABLE $T (id INT PRIMARY KEY, v VARCHAR(10), \
                               updated_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6))";
    const OLD_ROWS: &'static str =
        "INSERT INTO $T VALUES (1, 'a', NOW(6) - INTERVAL 1 HOUR), (2, 'b', NOW(6) - INTERVAL 1 HOUR)";
    const BEGIN: &'static str = "START TRANSACTION";

    fn source(&self) -> Arc<dyn Source> {
        Arc::new(etl_connectors::mysql::MySqlSource::new(&self.url).unwrap())
    }

    fn table(&self) -> String {
        format!("{}.events", self.name)
    }

    async fn exec(&mut self, sql: &str) {
        use mysql_async::prelude::Queryable;
        let sql = sql.replace("$T", &self.table());
        self.first
            .query_drop(&sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    async fn exec_second(&mut self, sql: &str) {
        use mysql_async::prelude::Queryable;
        let sql = sql.replace("$T", &self.table());
        self.second
            .query_drop(&sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
}

/// Where the rows go, and how to read back the ids and values there.
#[allow(clippy::large_enum_variant)]
enum Target {
    Lake { _dir: tempfile::TempDir, sink: LakeSink },
    Warehouse(PostgresSink, String, tokio_postgres::Client),
}

impl Target {
    fn lake() -> Target {
        let dir = tempfile::tempdir().unwrap();
        let sink = LakeSink::new(Location::local(dir.path()).unwrap());
        Target::Lake { _dir: dir, sink }
    }

    async fn warehouse() -> Target {
        let schema = unique("late_wh");
        let sink = PostgresSink::new(&pg_url()).unwrap().with_schema(schema.clone());
        Target::Warehouse(sink, schema, pg_client().await)
    }

    fn pipeline(&self, name: &str, source: Arc<dyn Source>, spec: TableSpec, wm: &tempfile::TempDir) -> Pipeline {
        let builder = Pipeline::builder(name)
            .source_arc(source)
            .watermarks(ObjectStoreWatermarkStore::new(Location::local(wm.path()).unwrap()));
        match self {
            Target::Lake { sink, .. } => builder.sink(sink.clone()),
            Target::Warehouse(sink, ..) => builder.sink(sink.clone()),
        }
        .table(spec)
        .build()
        .unwrap()
    }

    /// `id v` per row, sorted, repeats kept.
    async fn rows(&self) -> Vec<String> {
        let mut rows: Vec<String> = match self {
            Target::Lake { sink, .. } => {
                let batches = sink.read_table("events").await.unwrap();
                render_sorted(&batches, &["etl_processed_at", "updated_at"])
                    .lines()
                    .filter(|l| l.starts_with("| ") && !l.starts_with("| id"))
                    .map(|l| {
                        l.split('|')
                            .map(str::trim)
                            .filter(|c| !c.is_empty())
                            .collect::<Vec<_>>()
                            .join(" ")
                    })
                    .collect()
            }
            Target::Warehouse(_, schema, client) => client
                .query(&format!("SELECT id, v FROM {schema}.events"), &[])
                .await
                .unwrap()
                .iter()
                .map(|r| format!("{} {}", r.get::<_, i32>(0), r.get::<_, String>(1)))
                .collect(),
        };
        rows.sort();
        rows
    }
}

/// How a test reads the table: by its own source, or as an input of a query across sources
/// (whose window the same transaction must hold back).
#[derive(Clone, Copy)]
enum Read {
    Direct,
    #[cfg(feature = "sql")]
    Sql,
}

impl Read {
    fn of<D: Database>(self, db: &D) -> (Arc<dyn Source>, TableSpec) {
        let table = TableSpec::new("events").from_table(db.table());
        match self {
            Read::Direct => (db.source(), table),
            #[cfg(feature = "sql")]
            Read::Sql => (
                Arc::new(etl_connectors::sql::SqlSource::new().input_arc("events", db.source(), table)),
                TableSpec::new("events").from_query("SELECT id, v, updated_at FROM events"),
            ),
        }
    }
}

/// A transaction inserts row 3 (stamped by the database when it begins) and stays open; row
/// 4 commits after it, stamped later; a run reads. Then the transaction commits and the next
/// runs read. Every row must arrive exactly once. Other tests' transactions in the same
/// database may hold a window back further, so the runs after the commit repeat until none
/// is held.
async fn late_row_read_once<D: Database>(mut db: D, target: Target, mode: LoadMode, read: Read) {
    db.exec(D::DDL).await;
    db.exec(D::OLD_ROWS).await;
    db.exec_second(D::BEGIN).await;
    db.exec_second("INSERT INTO $T (id, v) VALUES (3, 'late')").await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    db.exec("INSERT INTO $T (id, v) VALUES (4, 'd')").await;

    let wm = tempfile::tempdir().unwrap();
    let (source, spec) = read.of(&db);
    let spec = spec.mode(mode).primary_key(["id"]).cursor(["updated_at"]);
    let p = target.pipeline("late", source, spec, &wm);
    let first = p.run().await.unwrap().into_result().unwrap();
    let t = first.table("events").unwrap();
    let held = t
        .held_back
        .as_ref()
        .unwrap_or_else(|| panic!("the window is held back while the transaction is open: {t:?}"));
    // Held by the open transaction's start, or (MariaDB, whose transaction list may lag by
    // up to 100 ms) by its clock, taken a second early.
    assert!(
        held.reason.contains("transaction in progress") || held.reason.contains("clock"),
        "{held:?}"
    );
    assert!(held.by_ms.unwrap() >= 0, "{held:?}");
    let rows = target.rows().await;
    assert!(
        rows.iter().all(|r| r == "1 a" || r == "2 b"),
        "row 4 commits after the open transaction began, so it waits with row 3: {rows:?}"
    );

    db.exec_second("COMMIT").await;
    let mut last: Option<RunReport> = None;
    for _ in 0..50 {
        let r = p.run().await.unwrap().into_result().unwrap();
        let done = r.table("events").unwrap().held_back.is_none();
        last = Some(r);
        if done {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let last = last.unwrap();
    let t = last.table("events").unwrap();
    assert!(t.held_back.is_none(), "still held after 50 runs: {t:?}");
    assert!(matches!(t.status, TableStatus::Committed | TableStatus::NoNewData));
    assert_eq!(target.rows().await, ["1 a", "2 b", "3 late", "4 d"], "every row once");
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn postgres_late_commit_reaches_an_incremental_lake_once() {
    late_row_read_once(Pg::new().await, Target::lake(), LoadMode::Incremental, Read::Direct).await;
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn postgres_late_commit_reaches_an_upsert_warehouse_once() {
    late_row_read_once(
        Pg::new().await,
        Target::warehouse().await,
        LoadMode::Upsert,
        Read::Direct,
    )
    .await;
}

#[cfg(feature = "mysql")]
#[tokio::test]
async fn mariadb_late_commit_reaches_an_incremental_lake_once() {
    late_row_read_once(My::new().await, Target::lake(), LoadMode::Incremental, Read::Direct).await;
}

#[cfg(feature = "mysql")]
#[tokio::test]
async fn mariadb_late_commit_reaches_an_upsert_warehouse_once() {
    late_row_read_once(
        My::new().await,
        Target::warehouse().await,
        LoadMode::Upsert,
        Read::Direct,
    )
    .await;
}

#[cfg(feature = "sql")]
#[tokio::test]
async fn postgres_late_commit_through_a_query_across_sources_reaches_a_lake_once() {
    late_row_read_once(Pg::new().await, Target::lake(), LoadMode::Incremental, Read::Sql).await;
}

#[cfg(feature = "sql")]
#[tokio::test]
async fn mariadb_late_commit_through_a_query_across_sources_reaches_a_warehouse_once() {
    late_row_read_once(My::new().await, Target::warehouse().await, LoadMode::Upsert, Read::Sql).await;
}

/// Without waiting for commits, the same open transaction's row is lost: the run's
/// high-water mark passes its stamp, and the next run starts past it. (What the default
/// prevents, shown on the real server.)
#[cfg(feature = "postgres")]
#[tokio::test]
async fn without_waiting_the_late_row_is_lost() {
    let mut db = Pg::new().await;
    db.exec(Pg::DDL).await;
    db.exec(Pg::OLD_ROWS).await;
    db.exec_second("BEGIN; INSERT INTO $T (id, v) VALUES (3, 'late')").await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    db.exec("INSERT INTO $T (id, v) VALUES (4, 'd')").await;
    let (target, wm) = (Target::lake(), tempfile::tempdir().unwrap());
    let spec = TableSpec::new("events")
        .from_table(db.table())
        .mode(LoadMode::Incremental)
        .cursor(["updated_at"])
        .wait_for_commits(false);
    let p = target.pipeline("lossy", db.source(), spec, &wm);
    let r = p.run().await.unwrap().into_result().unwrap();
    assert!(r.table("events").unwrap().held_back.is_none());
    db.exec_second("COMMIT").await;
    let r = p.run().await.unwrap().into_result().unwrap();
    assert_eq!(r.table("events").unwrap().status, TableStatus::NoNewData);
    assert_eq!(target.rows().await, ["1 a", "2 b", "4 d"], "row 3 never arrives");
}

/// An application-clock cursor: rows are read once they are older than the settle age by
/// the database's clock; a settle age on an integer cursor is refused, naming the table.
#[cfg(feature = "postgres")]
#[tokio::test]
async fn settle_reads_rows_once_they_are_old_enough() {
    let mut db = Pg::new().await;
    db.exec(Pg::DDL).await;
    db.exec(Pg::OLD_ROWS).await;
    // Stamped by "an application" whose clock runs a second ahead of the database's.
    db.exec("INSERT INTO $T VALUES (3, 'c', now() + interval '1 second')")
        .await;
    let (target, wm) = (Target::lake(), tempfile::tempdir().unwrap());
    let spec = TableSpec::new("events")
        .from_table(db.table())
        .mode(LoadMode::Incremental)
        .cursor(["updated_at"])
        .settle(chrono::TimeDelta::seconds(2));
    let p = target.pipeline("settle", db.source(), spec, &wm);
    let r = p.run().await.unwrap().into_result().unwrap();
    let t = r.table("events").unwrap();
    assert_eq!(t.written_count, 2, "row 3 is not 2 s old yet");
    let held = t.held_back.as_ref().unwrap();
    assert!(held.reason.contains("settle"), "{held:?}");
    assert!(
        held.by_ms.unwrap() >= 2_900,
        "held from 1 s ahead to 2 s behind the clock: {held:?}"
    );
    // Once the database's clock is 2 s past its stamp, row 3 is read, once.
    tokio::time::sleep(Duration::from_millis(3_300)).await;
    let r = p.run().await.unwrap().into_result().unwrap();
    assert_eq!(r.table("events").unwrap().written_count, 1);
    assert_eq!(target.rows().await, ["1 a", "2 b", "3 c"]);

    let spec = TableSpec::new("events")
        .from_table(db.table())
        .mode(LoadMode::Incremental)
        .cursor(["id"])
        .settle(chrono::TimeDelta::minutes(5));
    let err = target
        .pipeline("settle_int", db.source(), spec, &wm)
        .run()
        .await
        .unwrap()
        .into_result()
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("events") && err.contains("`settle` needs a date or timestamp cursor; id is an integer"),
        "{err}"
    );
}

/// A MariaDB role without the PROCESS privilege cannot see the transactions in progress: the
/// window stays at the stored cursor (a first run reads nothing), saying to grant it, rather
/// than pass rows a transaction it cannot see may still commit below. Granted, the next run
/// reads every row, once.
#[cfg(feature = "mysql")]
#[tokio::test]
async fn mariadb_without_process_privilege_holds_the_window() {
    let mut db = My::new().await;
    db.exec(My::DDL).await;
    db.exec(My::OLD_ROWS).await;
    let user = db.name.clone();
    db.exec(&format!("CREATE USER '{user}'@'%' IDENTIFIED BY 'pw'")).await;
    db.exec(&format!("GRANT SELECT ON {user}.* TO '{user}'@'%'")).await;
    let at = db.url.replacen("://root@", &format!("://{user}:pw@"), 1);
    assert_ne!(at, db.url, "ETL_TEST_MYSQL names root: {}", db.url);
    let (target, wm) = (Target::lake(), tempfile::tempdir().unwrap());
    let spec = TableSpec::new("events")
        .from_table(db.table())
        .mode(LoadMode::Incremental)
        .cursor(["updated_at"]);
    let run = |source: Arc<dyn Source>| {
        let p = target.pipeline("no_process", source, spec.clone(), &wm);
        async move { p.run().await.unwrap().into_result().unwrap() }
    };
    let source = || -> Arc<dyn Source> { Arc::new(etl_connectors::mysql::MySqlSource::new(&at).unwrap()) };
    let r = run(source()).await;
    let t = r.table("events").unwrap();
    let held = t.held_back.as_ref().unwrap_or_else(|| panic!("{t:?}"));
    assert!(held.reason.contains("PROCESS privilege"), "{held:?}");
    assert_eq!((t.status, t.written_count), (TableStatus::NoNewData, 0), "{t:?}");
    assert!(target.rows().await.is_empty());

    db.exec(&format!("GRANT PROCESS ON *.* TO '{user}'@'%'")).await;
    let mut rows = Vec::new();
    for _ in 0..50 {
        // A new source: the grant is the next connection's.
        run(source()).await;
        rows = target.rows().await;
        if rows.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(rows, ["1 a", "2 b"], "every row once");
    db.exec(&format!("DROP USER '{user}'@'%'")).await;
}
