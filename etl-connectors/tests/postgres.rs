//! The Postgres source against the real server named by `ETL_TEST_PG`
//! (`scripts/services.sh` starts one and prints it).

use etl_connectors::postgres::PostgresSource;
use etl_core::conformance::{self, render_sorted, unique};
use etl_core::{
    Error, LoadMode, Location, ObjectStoreWatermarkStore, Pipeline, ReadRequest, Source, TableSpec, TableStatus,
};
use etl_sinks::lake::LakeSink;
use futures::TryStreamExt;
use tokio_postgres::{Client, NoTls};

/// A connection and a fresh schema of the test's own.
pub(crate) struct Db {
    client: Client,
    schema: String,
    conn: String,
}

impl Db {
    pub(crate) async fn new() -> Db {
        let conn = std::env::var("ETL_TEST_PG").unwrap_or_else(|_| {
            panic!("ETL_TEST_PG is not set: run `scripts/services.sh start` and `eval \"$(scripts/services.sh env)\"`")
        });
        let (client, c) = tokio_postgres::connect(&conn, NoTls).await.unwrap_or_else(|e| {
            panic!("cannot connect to Postgres at ETL_TEST_PG ({e}): run scripts/services.sh start")
        });
        tokio::spawn(c);
        let schema = unique("t");
        client.batch_execute(&format!("CREATE SCHEMA {schema}")).await.unwrap();
        Db { client, schema, conn }
    }

    pub(crate) async fn exec(&self, sql: &str) {
        let sql = sql.replace("$S", &self.schema);
        self.client
            .batch_execute(&sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    pub(crate) async fn exec_owned(&self, sql: String) {
        self.exec(&sql).await
    }

    pub(crate) fn source(&self) -> PostgresSource {
        PostgresSource::new(&self.conn).unwrap()
    }

    pub(crate) fn table(&self, t: &str) -> String {
        format!("{}.{t}", self.schema)
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        let (conn, schema) = (self.conn.clone(), self.schema.clone());
        // Best effort: a fresh connection on a fresh thread, so Drop needs no runtime.
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok((c, conn)) = tokio_postgres::connect(&conn, NoTls).await {
                    tokio::spawn(conn);
                    let _ = c
                        .batch_execute(&format!("SET lock_timeout = '10s'; DROP SCHEMA {schema} CASCADE"))
                        .await;
                }
            });
        })
        .join()
        .ok();
    }
}

async fn read(source: &PostgresSource, spec: &TableSpec) -> Result<Vec<arrow::record_batch::RecordBatch>, Error> {
    let req = ReadRequest {
        spec,
        mode: LoadMode::Full,
        from: None,
        run_id: "t",
        batch_size: 1000,
        limit: None,
        until: None,
        keys: None,
        files: None,
    };
    let out = source.read(req).await?.stream.try_collect().await;
    if out.is_err() {
        // Let the runtime close the dropped connections (and their locks) before Db's drop
        // blocks this thread on DROP SCHEMA.
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    out
}

#[tokio::test]
async fn every_mapped_type_round_trips_with_nulls_and_edges() {
    let db = Db::new().await;
    db.exec(
        "CREATE TYPE $S.mood AS ENUM ('sad', 'happy');
         CREATE TABLE $S.t (
           id int2, b bool, i4 int4, i8 int8, f4 float4, f8 float8, n numeric(12,3), nu numeric,
           t text, v varchar(5), c char(3), by bytea, d date, tm time, ts timestamp, tz timestamptz,
           iv interval, u uuid, j json, jb jsonb, m $S.mood);
         INSERT INTO $S.t VALUES
           (1, true, -2147483648, 9223372036854775807, 1.5, -0.25, -123456789.125, 3.14159265358979323846264338327950288419716939937510,
            'héllo', 'abc', 'x', '\\x00ff', '1999-12-31', '23:59:59.999999', '2025-07-24 01:05:23.123456',
            '2025-07-24 01:05:23.5+02', '1 year 2 mons 3 days 04:05:06.000007', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
            '{\"a\": [1, 2]}', '{\"b\": null}', 'happy'),
           (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
            NULL, NULL, NULL),
           (3, false, 0, -1, 'NaN', '-Infinity', 0, -0.0000001, '', '', '', '', '0001-01-01', '00:00:00',
            '1970-01-01 00:00:00', '1970-01-01 00:00:00+00', '-1 days', '00000000-0000-0000-0000-000000000000',
            'null', '[]', 'sad');",
    )
    .await;
    let spec = TableSpec::new("t").from_table(db.table("t"));
    let batches = read(&db.source(), &spec).await.unwrap();
    let schema = batches[0].schema();
    let types: Vec<String> = schema.fields().iter().map(|f| f.data_type().to_string()).collect();
    assert_eq!(
        types.join(", "),
        "Int16, Boolean, Int32, Int64, Float32, Float64, Decimal128(12, 3), Utf8, Utf8, Utf8, Utf8, Binary, Date32, \
         Time64(µs), Timestamp(µs), Timestamp(µs, \"+00:00\"), Interval(MonthDayNano), Utf8, Utf8, Utf8, Utf8"
    );
    let text = arrow::util::pretty::pretty_format_batches(&batches)
        .unwrap()
        .to_string();
    let expected = [
        "+----+-------+-------------+---------------------+-----+-------+----------------+------------------------------------------------------+-------+-----+-----+------+------------+-----------------+----------------------------+--------------------------+------------------------------------------------+--------------------------------------+---------------+-------------+-------+",
        "| id | b     | i4          | i8                  | f4  | f8    | n              | nu                                                   | t     | v   | c   | by   | d          | tm              | ts                         | tz                       | iv                                             | u                                    | j             | jb          | m     |",
        "+----+-------+-------------+---------------------+-----+-------+----------------+------------------------------------------------------+-------+-----+-----+------+------------+-----------------+----------------------------+--------------------------+------------------------------------------------+--------------------------------------+---------------+-------------+-------+",
        r#"| 1  | true  | -2147483648 | 9223372036854775807 | 1.5 | -0.25 | -123456789.125 | 3.14159265358979323846264338327950288419716939937510 | héllo | abc | x   | 00ff | 1999-12-31 | 23:59:59.999999 | 2025-07-24T01:05:23.123456 | 2025-07-23T23:05:23.500Z | 14 mons 3 days 4 hours 5 mins 6.000007000 secs | a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11 | {"a": [1, 2]} | {"b": null} | happy |"#,
        "| 2  |       |             |                     |     |       |                |                                                      |       |     |     |      |            |                 |                            |                          |                                                |                                      |               |             |       |",
        "| 3  | false | 0           | -1                  | NaN | -inf  | 0.000          | -0.0000001                                           |       |     |     |      | 0001-01-01 | 00:00:00        | 1970-01-01T00:00:00        | 1970-01-01T00:00:00Z     | -1 days                                        | 00000000-0000-0000-0000-000000000000 | null          | []          | sad   |",
        "+----+-------+-------------+---------------------+-----+-------+----------------+------------------------------------------------------+-------+-----+-----+------+------------+-----------------+----------------------------+--------------------------+------------------------------------------------+--------------------------------------+---------------+-------------+-------+",
    ]
    .join("\n");
    assert_eq!(text, expected, "every value comes back as it went in");
    // Row 2: every column but id is NULL.
    let nulls: Vec<usize> = batches[0].columns().iter().map(|c| c.null_count()).collect();
    assert_eq!(nulls[0], 0);
    assert!(nulls[1..].iter().all(|n| *n == 1), "{nulls:?}");
}

#[tokio::test]
async fn unmapped_types_are_named_or_read_as_text() {
    let db = Db::new().await;
    db.exec("CREATE TABLE $S.g (id int, p point); INSERT INTO $S.g VALUES (1, '(1,2)');")
        .await;
    let spec = TableSpec::new("g").from_table(db.table("g"));
    let err = read(&db.source(), &spec).await.unwrap_err().to_string();
    assert!(
        err.contains("`g`") && err.contains("`p`") && err.contains("point"),
        "{err}"
    );
    let batches = read(&db.source().with_unmapped_as_text(true), &spec).await.unwrap();
    assert_eq!(
        render_sorted(&batches, &[]),
        "+----+-------+\n| id | p     |\n+----+-------+\n| 1  | (1,2) |\n+----+-------+"
    );
}

#[tokio::test]
async fn source_conformance_and_missing_tables() {
    let db = Db::new().await;
    db.exec("CREATE TABLE $S.people (id int PRIMARY KEY, name text); INSERT INTO $S.people VALUES (1,'ann'),(2,'bob'),(3,NULL);")
        .await;
    let spec = TableSpec::new("people").from_table(db.table("people")).cursor(["id"]);
    let missing = TableSpec::new("g").from_table(db.table("ghosts"));
    let expected =
        "+----+------+\n| id | name |\n+----+------+\n| 1  | ann  |\n| 2  | bob  |\n| 3  |      |\n+----+------+";
    conformance::source(&db.source(), &spec, &missing, expected, &[]).await;
    // A whole read counts the table as it streams.
    let req = ReadRequest {
        spec: &spec,
        mode: LoadMode::Full,
        from: None,
        run_id: "t",
        batch_size: 2,
        limit: None,
        until: None,
        keys: None,
        files: None,
    };
    let e = db.source().read(req).await.unwrap();
    let stats = e.stats.clone();
    assert_eq!(stats.source_count(), None, "not counted before the rows stream");
    let n: usize = e
        .stream
        .try_collect::<Vec<_>>()
        .await
        .unwrap()
        .iter()
        .map(|b| b.num_rows())
        .sum();
    assert_eq!((n, stats.source_count()), (3, Some(3)));
    let err = db.source().check(&spec.clone().cursor(["nope"])).await.unwrap_err();
    assert!(
        matches!(err, Error::ColumnNotFound { ref column, .. } if column == "nope"),
        "{err}"
    );
}

#[tokio::test]
async fn incremental_join_into_a_lake() {
    let db = Db::new().await;
    db.exec(
        "CREATE TABLE $S.customers (customer_id int PRIMARY KEY, name text, updated_at timestamp);
         CREATE TABLE $S.orders (order_id int PRIMARY KEY, customer_id int, amount numeric(10,2), order_date date,
                                 updated_at timestamp);
         CREATE INDEX ON $S.orders (updated_at);
         INSERT INTO $S.customers VALUES (1, 'ann', '2025-07-01'), (2, 'bob', '2025-07-01');
         INSERT INTO $S.orders VALUES (1, 1, 10.50, '2025-07-22', '2025-07-22 08:00'),
                                      (2, 2, 20.00, '2025-07-22', '2025-07-22 08:00'),
                                      (3, 1, 30.25, '2025-07-23', '2025-07-23 09:00');",
    )
    .await;
    let query = format!(
        "SELECT o.order_id, o.amount, o.order_date, c.name, o.updated_at
           FROM {s}.orders o JOIN {s}.customers c ON c.customer_id = o.customer_id",
        s = db.schema
    );
    let (_dir, lake, wm) = super::temp_lake();
    let p = Pipeline::builder("pg")
        .source(db.source())
        .sink(lake.clone())
        .watermarks(wm)
        .table(
            TableSpec::new("orders_enriched")
                .from_query(query)
                .mode(LoadMode::Incremental)
                .cursor(["updated_at"])
                .partition_by(etl_core::Partitioning::ByDate("order_date".into())),
        )
        .table(TableSpec::new("absent").from_table(db.table("absent")).optional())
        .build()
        .unwrap();
    let r = p.run().await.unwrap().into_result().unwrap();
    let t = r.table("orders_enriched").unwrap();
    assert_eq!(
        (t.status, t.source_count, t.written_count),
        (TableStatus::Committed, Some(3), 3)
    );
    assert_eq!(r.table("absent").unwrap().status, TableStatus::Skipped);
    assert_eq!(
        t.watermark_after.as_ref().unwrap().cursor.as_ref().unwrap().to_string(),
        "2025-07-23 09:00:00"
    );

    let r = p.run().await.unwrap();
    assert_eq!(r.table("orders_enriched").unwrap().status, TableStatus::NoNewData);

    // One order changes, one arrives; both share the new watermark value.
    db.exec(
        "UPDATE $S.orders SET amount = 11.00, updated_at = '2025-07-24 10:00' WHERE order_id = 1;
         INSERT INTO $S.orders VALUES (4, 2, 40.00, '2025-07-24', '2025-07-24 10:00');",
    )
    .await;
    let r = p.run().await.unwrap().into_result().unwrap();
    let t = r.table("orders_enriched").unwrap();
    assert_eq!(
        (t.source_count, t.extracted_count, t.written_count),
        (None, 2, 2),
        "an incremental read does not count the table"
    );
    let rows = lake.read_table("orders_enriched").await.unwrap();
    assert_eq!(
        render_sorted(&rows, &["etl_processed_at"]),
        "+----------+--------+------------+------+---------------------+\n\
         | order_id | amount | order_date | name | updated_at          |\n\
         +----------+--------+------------+------+---------------------+\n\
         | 1        | 10.50  | 2025-07-22 | ann  | 2025-07-22T08:00:00 |\n\
         | 1        | 11.00  | 2025-07-22 | ann  | 2025-07-24T10:00:00 |\n\
         | 2        | 20.00  | 2025-07-22 | bob  | 2025-07-22T08:00:00 |\n\
         | 3        | 30.25  | 2025-07-23 | ann  | 2025-07-23T09:00:00 |\n\
         | 4        | 40.00  | 2025-07-24 | bob  | 2025-07-24T10:00:00 |\n\
         +----------+--------+------------+------+---------------------+"
    );
    // A missing required table stops the run before anything is read or written.
    let err = Pipeline::builder("pg2")
        .source(db.source())
        .sink(lake)
        .watermarks(ObjectStoreWatermarkStore::new(Location::memory()))
        .table(TableSpec::new("absent").from_table(db.table("absent")))
        .build()
        .unwrap()
        .run()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::TableNotFound { .. }), "{err}");
}

#[tokio::test]
async fn a_query_places_the_watermark_in_its_own_predicate() {
    let db = Db::new().await;
    db.exec("CREATE TABLE $S.orders (order_id int PRIMARY KEY, order_date date, updated_at timestamp)")
        .await;
    let query =
        "SELECT * FROM $S.orders WHERE order_date >= CAST({watermark} AS date) AND order_date >= CURRENT_DATE - 7 \
                 OR updated_at > {watermark}"
            .replace("$S", &db.schema);
    let source = std::sync::Arc::new(db.source());
    crate::a_query_places_the_watermark(source, query, async |sql: &str| {
        db.exec(&sql.replace("orders", &db.table("orders"))).await
    })
    .await;
}

#[tokio::test]
async fn parallel_chunks_read_every_row_once() {
    let db = Db::new().await;
    db.exec(
        "CREATE TABLE $S.big (id int8 PRIMARY KEY, pad text);
         INSERT INTO $S.big SELECT i, repeat('x', 100) FROM generate_series(1, 5000) i;",
    )
    .await;
    crate::chunked::parallel_read_every_row_once(
        db.source().with_parallelism(3).with_min_parallel_pages(1),
        &db.table("big"),
    )
    .await;
}

#[tokio::test]
async fn chunked_reads_resume_at_the_first_uncommitted_chunk() {
    let db = Db::new().await;
    db.exec(
        "CREATE TABLE $S.ev (id int PRIMARY KEY, ts timestamp);
         INSERT INTO $S.ev SELECT i, '2025-01-01' FROM generate_series(1, 7) i;
         INSERT INTO $S.ev SELECT i, '2025-01-02' FROM generate_series(8, 10) i;",
    )
    .await;
    crate::chunked::resume_at_first_uncommitted_chunk(db.source(), &db.table("ev"), || {
        db.exec("INSERT INTO $S.ev VALUES (11, '2025-01-03')")
    })
    .await;
}

#[tokio::test]
async fn null_cursors_follow_one_stated_rule() {
    let db = Db::new().await;
    db.exec(
        "CREATE TABLE $S.nulls (id int PRIMARY KEY, ts timestamp);
         INSERT INTO $S.nulls VALUES (1, NULL), (2, NULL);
         CREATE TABLE $S.five (id int PRIMARY KEY, ts timestamp);
         INSERT INTO $S.five VALUES (1, '2025-01-01'), (2, NULL), (3, NULL), (4, NULL), (5, NULL);",
    )
    .await;
    crate::chunked::null_cursors_follow_one_stated_rule(db.source(), &db.table("nulls"), &db.table("five"), |sql| {
        db.exec_owned(sql)
    })
    .await;
}

/// A column altered to another type between runs: the lake refuses the second run naming
/// the column, unless the change widens safely (`int4` → `int8`).
#[tokio::test]
async fn an_altered_column_is_refused_by_the_lake_unless_it_widens() {
    let db = Db::new().await;
    db.exec("CREATE TABLE $S.t (id int4, amount int4); INSERT INTO $S.t VALUES (1, 10);")
        .await;
    let dir = tempfile::tempdir().unwrap();
    let lake = LakeSink::new(Location::local(dir.path()).unwrap());
    let p = Pipeline::builder("alter")
        .source(db.source())
        .sink(lake.clone())
        .watermarks(ObjectStoreWatermarkStore::new(Location::memory()))
        .table(
            TableSpec::new("t")
                .from_table(db.table("t"))
                .mode(LoadMode::Append)
                .processed_at(false),
        )
        .build()
        .unwrap();
    p.run().await.unwrap().into_result().unwrap();
    db.exec("ALTER TABLE $S.t ALTER amount TYPE text; UPDATE $S.t SET amount = 'ten';")
        .await;
    let r = p.run().await.unwrap();
    let t = r.table("t").unwrap();
    assert_eq!(t.status, TableStatus::Failed);
    let e = t.error.as_deref().unwrap();
    assert!(
        e.contains("column `amount`") && e.contains("Utf8") && e.contains("Int32"),
        "{e}"
    );
    db.exec("ALTER TABLE $S.t ALTER amount TYPE int8 USING 10; ALTER TABLE $S.t ALTER id TYPE int8;")
        .await;
    p.run().await.unwrap().into_result().unwrap();
    let types: Vec<String> = lake
        .read_table("t")
        .await
        .unwrap()
        .iter()
        .map(|b| b.schema().field_with_name("amount").unwrap().data_type().to_string())
        .collect();
    assert_eq!(types.len(), 2);
    assert!(
        types.contains(&"Int32".to_string()) && types.contains(&"Int64".to_string()),
        "{types:?}"
    );
}

/// A table whose name holds a dot is read by schema and name; a read that fails part way
/// reports the rows that streamed before it failed.
#[tokio::test]
async fn dotted_names_and_the_rows_of_a_failed_read() {
    let db = Db::new().await;
    db.exec(r#"CREATE TABLE $S."order.items" (id int); INSERT INTO $S."order.items" SELECT generate_series(1, 5000);"#)
        .await;
    for spec in [
        TableSpec::new("items").from_schema_table(&db.schema, "order.items"),
        TableSpec::new("items").from_table(format!(r#"{}."order.items""#, db.schema)),
    ] {
        let rows: usize = read(&db.source(), &spec)
            .await
            .unwrap()
            .iter()
            .map(|b| b.num_rows())
            .sum();
        assert_eq!(rows, 5000);
    }
    let dir = tempfile::tempdir().unwrap();
    let r = Pipeline::builder("dots")
        .source(db.source())
        .sink(LakeSink::new(Location::local(dir.path()).unwrap()))
        .watermarks(ObjectStoreWatermarkStore::new(Location::memory()))
        .table(
            TableSpec::new("items")
                .from_schema_table(&db.schema, "order.items")
                .transform(crate::chunked::FailOn(4500, std::sync::Arc::new(true.into()))),
        )
        .batch_size(1000)
        .build()
        .unwrap()
        .run()
        .await
        .unwrap();
    let t = r.table("items").unwrap();
    assert_eq!(t.status, TableStatus::Failed);
    assert!(
        t.extracted_count >= 4000,
        "the rows read before the failure count: {t:?}"
    );
    assert_eq!(t.written_count, 0, "nothing committed");
}

/// Timeouts short enough for a test.
fn quick() -> etl_core::Timeouts {
    let s = std::time::Duration::from_secs(1);
    etl_core::Timeouts {
        connect: s,
        login: s,
        answer: Some(s),
    }
}

/// A server that accepts the connection but never answers fails the run after the login
/// timeout, and a read that the server does not answer in time after the answer timeout: each
/// a retryable error naming the server and what was being done, with nothing written.
#[tokio::test]
async fn servers_that_do_not_answer_fail_the_run_instead_of_hanging() {
    let port = conformance::silent_server();
    let silent = PostgresSource::new(&format!("host=127.0.0.1 port={port} user=postgres dbname=postgres"))
        .unwrap()
        .with_timeouts(quick());
    let err = silent.check(&TableSpec::new("t")).await.unwrap_err();
    conformance::assert_timeout(&err, &format!("127.0.0.1:{port}"), "logging in");

    let db = Db::new().await;
    db.exec("CREATE VIEW $S.slow AS SELECT 1 AS id FROM pg_sleep(3)").await;
    let dir = tempfile::tempdir().unwrap();
    let lake = LakeSink::new(Location::local(dir.path()).unwrap());
    let r = Pipeline::builder("slow")
        .source(db.source().with_timeouts(quick()))
        .sink(lake.clone())
        .watermarks(ObjectStoreWatermarkStore::new(Location::memory()))
        .table(TableSpec::new("slow").from_table(db.table("slow")))
        .build()
        .unwrap()
        .run()
        .await
        .unwrap();
    let t = r.table("slow").unwrap();
    assert_eq!(t.status, TableStatus::Failed);
    assert!(t.retryable, "{t:?}");
    let e = t.error.as_deref().unwrap();
    assert!(
        e.contains("no answer from 127.0.0.1:")
            && (e.contains("within 1s while waiting for an answer") || e.contains("within 1s while reading rows")),
        "{e}"
    );
    assert!(lake.read_table("slow").await.unwrap().is_empty());
    // The statement was cancelled on the server: nothing of it is left running.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let running: i64 = db
        .client
        .query_one("SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%slow%' AND state = 'active' AND pid <> pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(running, 0);
}

/// Initial window, lookback for rows committed late, and a change column that stays NULL
/// until a row's first update (`created_at > w OR updated_at > w`).
#[tokio::test]
async fn initial_window_lookback_and_nullable_cursors() {
    let db = Db::new().await;
    db.exec(
        "CREATE TABLE $S.t (id int PRIMARY KEY, created_at timestamp NOT NULL, updated_at timestamp);
         INSERT INTO $S.t VALUES (1, '2025-06-01', NULL), (2, '2025-07-20', NULL), (3, '2025-07-22', '2025-07-23');",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let lake = LakeSink::new(Location::local(dir.path()).unwrap());
    let pipeline = |lookback: bool| {
        let mut spec = TableSpec::new("t")
            .from_table(db.table("t"))
            .mode(LoadMode::Incremental)
            .cursor(["created_at", "updated_at"])
            .initial_window(chrono::TimeDelta::days(30))
            .processed_at(false);
        if lookback {
            spec = spec.lookback(chrono::TimeDelta::days(2));
        }
        Pipeline::builder("win")
            .source(db.source())
            .sink(lake.clone())
            .watermarks(ObjectStoreWatermarkStore::new(
                Location::local(dir.path().join("_etl/wm")).unwrap(),
            ))
            .table(spec)
            .build()
            .unwrap()
    };
    let ids = || async {
        let rows = lake.read_table("t").await.unwrap();
        render_sorted(&rows, &["created_at", "updated_at"])
    };
    // First run: only the last 30 days before the high-water mark (2025-07-23).
    let r = pipeline(false).run().await.unwrap().into_result().unwrap();
    assert_eq!(r.table("t").unwrap().written_count, 2);
    assert_eq!(ids().await, "+----+\n| id |\n+----+\n| 2  |\n| 3  |\n+----+");
    // Row 2 gets its first update; row 4 arrives with only created_at; row 5 is committed
    // late with a created_at behind the watermark.
    db.exec(
        "UPDATE $S.t SET updated_at = '2025-07-24' WHERE id = 2;
         INSERT INTO $S.t VALUES (4, '2025-07-24 12:00', NULL), (5, '2025-07-22 18:00', NULL);",
    )
    .await;
    let r = pipeline(false).run().await.unwrap().into_result().unwrap();
    assert_eq!(
        r.table("t").unwrap().written_count,
        2,
        "rows 2 and 4; the late row 5 is behind the mark"
    );
    // With a 2-day lookback the late row is read (with the rows re-read inside the lookback).
    db.exec("INSERT INTO $S.t VALUES (6, '2025-07-23 06:00', NULL)").await;
    let r = pipeline(true).run().await.unwrap().into_result().unwrap();
    let t = r.table("t").unwrap();
    assert_eq!(
        t.watermark_after.as_ref().unwrap().cursor.as_ref().unwrap().to_string(),
        "2025-07-24 12:00:00"
    );
    assert_eq!(
        ids().await,
        "+----+\n| id |\n+----+\n| 2  |\n| 2  |\n| 2  |\n| 3  |\n| 3  |\n| 4  |\n| 4  |\n| 5  |\n| 6  |\n+----+",
        "the lookback window (2025-07-22 12:00, 2025-07-24 12:00] is read again"
    );
}

#[tokio::test]
async fn arrays_round_trip_as_lists() {
    let db = Db::new().await;
    db.exec(
        "CREATE TABLE $S.a (id int, ints int4[], words text[], prices numeric(5,2)[], days date[], flags bool[]);
         INSERT INTO $S.a VALUES
           (1, '{1,NULL,-3}', '{\"a b\",\"\",NULL}', '{1.50,-0.01}', '{2025-07-24}', '{true,false}'),
           (2, NULL, '{}', NULL, NULL, '{}');",
    )
    .await;
    let spec = TableSpec::new("a").from_table(db.table("a"));
    let batches = read(&db.source(), &spec).await.unwrap();
    let types: Vec<String> = batches[0]
        .schema()
        .fields()
        .iter()
        .map(|f| f.data_type().to_string())
        .collect();
    assert_eq!(
        types.join(", "),
        "Int32, List(Int32), List(Utf8), List(Decimal128(5, 2)), List(Date32), List(Boolean)"
    );
    assert_eq!(
        render_sorted(&batches, &[]),
        "+----+-----------+-----------+---------------+--------------+---------------+\n\
         | id | ints      | words     | prices        | days         | flags         |\n\
         +----+-----------+-----------+---------------+--------------+---------------+\n\
         | 1  | [1, , -3] | [a b, , ] | [1.50, -0.01] | [2025-07-24] | [true, false] |\n\
         | 2  |           | []        |               |              | []            |\n\
         +----+-----------+-----------+---------------+--------------+---------------+"
    );
    // The empty string and the NULL element stay apart.
    let words = batches[0].column_by_name("words").unwrap();
    let words = words.as_any().downcast_ref::<arrow::array::ListArray>().unwrap();
    let values = words.values();
    assert_eq!((values.len(), values.null_count()), (3, 1));
    // Two dimensions: an error naming the column, or the text form on request.
    db.exec("CREATE TABLE $S.m (id int, grid int4[]); INSERT INTO $S.m VALUES (1, '{{1,2},{3,4}}');")
        .await;
    let spec = TableSpec::new("m").from_table(db.table("m"));
    let err = read(&db.source(), &spec).await.unwrap_err().to_string();
    assert!(err.contains("`grid`") && err.contains("2-dimensional"), "{err}");
}

/// `sslmode=require` speaks TLS and verifies the server against the given root certificate.
#[cfg(feature = "tls")]
#[tokio::test]
async fn tls_connections_verify_the_server() {
    let db = Db::new().await;
    let ca = std::env::var("ETL_TEST_TLS_CA").expect("ETL_TEST_TLS_CA: run scripts/services.sh env");
    let spec = TableSpec::new("ssl").from_query("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()");
    let tls = PostgresSource::new(&format!("{} sslmode=require", db.conn))
        .unwrap()
        .with_root_certificate(&ca);
    let batches = read(&tls, &spec).await.unwrap();
    assert_eq!(
        render_sorted(&batches, &[]),
        "+------+\n| ssl  |\n+------+\n| true |\n+------+"
    );
    // The default (prefer) connects in the clear.
    let batches = read(&db.source(), &spec).await.unwrap();
    assert_eq!(
        render_sorted(&batches, &[]),
        "+-------+\n| ssl   |\n+-------+\n| false |\n+-------+"
    );
    // A server the client cannot verify is refused.
    let untrusted = PostgresSource::new(&format!("{} sslmode=require", db.conn)).unwrap();
    let err = read(&untrusted, &spec).await.unwrap_err().to_string();
    assert!(err.contains("certificate"), "{err}");
}

/// A driver's error keeps its cause: the class to match on, the server's SQLSTATE and the
/// driver's own error as the source. A missing column is a statement error (not retryable);
/// a lock held past `lock_timeout` a conflict (retryable); a refused connection a connection
/// error (retryable).
#[tokio::test]
async fn driver_errors_keep_their_kind_code_and_source() {
    use etl_core::DriverErrorKind;
    let db = Db::new().await;
    db.exec("CREATE TABLE $S.t (id int)").await;
    let query = |q: &str| TableSpec::new("q").from_query(q.replace("$S", &db.schema));
    let err = read(&db.source(), &query("SELECT nope FROM $S.t")).await.unwrap_err();
    let Error::Driver { kind, code, table, .. } = &err else {
        panic!("a driver error: {err:?}")
    };
    assert_eq!(
        (*kind, code.as_deref(), table.as_str()),
        (DriverErrorKind::Statement, Some("42703"), "q")
    );
    assert!(!err.is_retryable());
    let source = std::error::Error::source(&err).expect("the driver's error");
    let pg = source
        .downcast_ref::<tokio_postgres::Error>()
        .expect("a tokio-postgres error");
    assert_eq!(pg.code(), Some(&tokio_postgres::error::SqlState::UNDEFINED_COLUMN));

    db.exec("BEGIN; LOCK TABLE $S.t IN ACCESS EXCLUSIVE MODE").await;
    let impatient = PostgresSource::new(&format!("{} options='-c lock_timeout=200'", db.conn)).unwrap();
    let err = read(&impatient, &query("SELECT id FROM $S.t")).await.unwrap_err();
    assert_eq!(err.driver_kind(), Some(DriverErrorKind::Conflict), "{err:?}");
    assert!(err.is_retryable());
    db.exec("ROLLBACK").await;

    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let gone = PostgresSource::new(&format!("host=127.0.0.1 port={port} user=postgres")).unwrap();
    let err = gone.check(&TableSpec::new("t")).await.unwrap_err();
    assert_eq!(err.driver_kind(), Some(DriverErrorKind::Connection), "{err:?}");
    assert!(err.is_retryable());
}

/// A shard plan's split of a Postgres table (`Source::split`). On a multi-thread runtime: the
/// split's last connection ends on its own task while the schema is dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn splits_a_table_for_a_shard_plan() {
    let db = Db::new().await;
    db.exec(
        "CREATE TABLE $S.orders (order_id bigint PRIMARY KEY, label text NOT NULL, updated_at timestamp NOT NULL);
         INSERT INTO $S.orders SELECT i, 'l' || i, timestamp '2025-07-01' + i * interval '1 minute'
           FROM generate_series(1, 100) i;
         CREATE VIEW $S.by_label AS SELECT * FROM $S.orders;",
    )
    .await;
    let source = PostgresSource::new(&db.conn).unwrap();
    super::split_cases(
        &source,
        &format!("{}.orders", db.schema),
        &format!("{}.by_label", db.schema),
    )
    .await;
}
