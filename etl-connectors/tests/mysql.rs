//! The MySQL source against the real MariaDB named by `ETL_TEST_MYSQL`
//! (`scripts/services.sh` starts one and prints it).

use etl_connectors::mysql::MySqlSource;
use etl_core::conformance::{self, render_sorted, unique};
use etl_core::{
    Error, LoadMode, Location, ObjectStoreWatermarkStore, Pipeline, ReadRequest, Source, TableSpec, TableStatus,
};
use futures::TryStreamExt;
use mysql_async::prelude::Queryable;

/// A connection and a fresh database of the test's own.
pub(crate) struct Db {
    conn: mysql_async::Conn,
    name: String,
    url: String,
}

fn base_url() -> String {
    let url = std::env::var("ETL_TEST_MYSQL").unwrap_or_else(|_| {
        panic!("ETL_TEST_MYSQL is not set: run `scripts/services.sh start` and `eval \"$(scripts/services.sh env)\"`")
    });
    url.trim_end_matches('/').to_string()
}

impl Db {
    pub(crate) async fn new() -> Db {
        let base = base_url();
        let mut conn = mysql_async::Conn::from_url(&base).await.unwrap_or_else(|e| {
            panic!("cannot connect to MariaDB at ETL_TEST_MYSQL ({e}): run scripts/services.sh start")
        });
        let name = unique("t");
        conn.query_drop(format!("CREATE DATABASE {name}")).await.unwrap();
        conn.query_drop(format!("USE {name}")).await.unwrap();
        Db {
            conn,
            url: format!("{base}/{name}"),
            name,
        }
    }

    pub(crate) async fn exec(&mut self, sql: &str) {
        self.conn.query_drop(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    pub(crate) fn source(&self) -> MySqlSource {
        MySqlSource::new(&self.url).unwrap()
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        let (url, name) = (base_url(), self.name.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok(mut c) = mysql_async::Conn::from_url(&url).await {
                    let _ = c
                        .query_drop(format!("SET lock_wait_timeout = 10; DROP DATABASE {name}"))
                        .await;
                    let _ = c.disconnect().await;
                }
            });
        })
        .join()
        .ok();
    }
}

async fn read(source: &MySqlSource, spec: &TableSpec) -> Result<Vec<arrow::record_batch::RecordBatch>, Error> {
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
    source.read(req).await?.stream.try_collect().await
}

fn types_of(batches: &[arrow::record_batch::RecordBatch]) -> String {
    batches[0]
        .schema()
        .fields()
        .iter()
        .map(|f| f.data_type().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

#[tokio::test]
async fn every_mapped_type_round_trips_with_nulls_and_edges() {
    let mut db = Db::new().await;
    db.exec(
        "CREATE TABLE ints (id int PRIMARY KEY, b bool, t tinyint, tu tinyint unsigned, s smallint,
           su smallint unsigned, m mediumint, mu mediumint unsigned, i int, iu int unsigned, g bigint,
           gu bigint unsigned, y year, b1 bit(1), b10 bit(10));
         INSERT INTO ints VALUES
           (1, true, -128, 255, -32768, 65535, -8388608, 16777215, -2147483648, 4294967295,
            -9223372036854775808, 18446744073709551615, 2025, b'1', b'1111111111'),
           (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
           (3, false, 127, 0, 32767, 0, 8388607, 0, 2147483647, 0, 9223372036854775807, 0, 1901, b'0', b'0');",
    )
    .await;
    let spec = TableSpec::new("ints").from_table("ints");
    let batches = read(&db.source(), &spec).await.unwrap();
    assert_eq!(
        types_of(&batches),
        "Int32, Boolean, Int8, UInt8, Int16, UInt16, Int32, UInt32, Int32, UInt32, Int64, UInt64, Int16, Boolean, UInt64"
    );
    assert_eq!(
        render_sorted(&batches, &[]),
        [
            "+----+-------+------+-----+--------+-------+----------+----------+-------------+------------+----------------------+----------------------+------+-------+------+",
            "| id | b     | t    | tu  | s      | su    | m        | mu       | i           | iu         | g                    | gu                   | y    | b1    | b10  |",
            "+----+-------+------+-----+--------+-------+----------+----------+-------------+------------+----------------------+----------------------+------+-------+------+",
            "| 1  | true  | -128 | 255 | -32768 | 65535 | -8388608 | 16777215 | -2147483648 | 4294967295 | -9223372036854775808 | 18446744073709551615 | 2025 | true  | 1023 |",
            "| 2  |       |      |     |        |       |          |          |             |            |                      |                      |      |       |      |",
            "| 3  | false | 127  | 0   | 32767  | 0     | 8388607  | 0        | 2147483647  | 0          | 9223372036854775807  | 0                    | 1901 | false | 0    |",
            "+----+-------+------+-----+--------+-------+----------+----------+-------------+------------+----------------------+----------------------+------+-------+------+",
        ]
        .join("\n")
    );

    db.exec(
        "CREATE TABLE other (id int PRIMARY KEY, f float, d double, n decimal(12,3), nu decimal(10,0) unsigned,
           wide decimal(65,30), c char(3), v varchar(10), tx text, bn binary(2), vb varbinary(4), bl blob,
           dt date, tm time(6), ts datetime(6), tz timestamp(6) NULL, e enum('sad','happy'), st set('a','b','c'),
           j json, u uuid);
         INSERT INTO other VALUES
           (1, 1.5, -0.25, -123456789.125, 9999999999, 12345678901234567890123456789012345.123456789012345678901234567890,
            'x', 'héllo', 'long text', x'00ff', x'01', x'deadbeef', '1999-12-31', '23:59:59.999999',
            '2025-07-24 01:05:23.123456', '2025-07-24 01:05:23.5', 'happy', 'a,c', '{\"a\": [1, 2]}',
            'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'),
           (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
            NULL, NULL),
           (3, 0, 1e300, 0, 0, -0.000000000000000000000000000001, '', '', '', x'0000', x'', x'', '1000-01-01',
            '00:00:00', '1000-01-01 00:00:00', '1970-01-01 00:00:01', 'sad', '', '[]',
            '00000000-0000-0000-0000-000000000000');",
    )
    .await;
    let spec = TableSpec::new("other").from_table("other");
    let batches = read(&db.source(), &spec).await.unwrap();
    assert_eq!(
        types_of(&batches),
        "Int32, Float32, Float64, Decimal128(12, 3), Decimal128(10, 0), Utf8, Utf8, Utf8, Utf8, Binary, Binary, \
         Binary, Date32, Time64(µs), Timestamp(µs), Timestamp(µs, \"+00:00\"), Utf8, Utf8, Utf8, Utf8"
    );
    assert_eq!(
        render_sorted(&batches, &[]),
        [
            "+----+-----+-------+----------------+------------+--------------------------------------------------------------------+---+-------+-----------+------+----+----------+------------+-----------------+----------------------------+--------------------------+-------+-----+---------------+--------------------------------------+",
            "| id | f   | d     | n              | nu         | wide                                                               | c | v     | tx        | bn   | vb | bl       | dt         | tm              | ts                         | tz                       | e     | st  | j             | u                                    |",
            "+----+-----+-------+----------------+------------+--------------------------------------------------------------------+---+-------+-----------+------+----+----------+------------+-----------------+----------------------------+--------------------------+-------+-----+---------------+--------------------------------------+",
            r#"| 1  | 1.5 | -0.25 | -123456789.125 | 9999999999 | 12345678901234567890123456789012345.123456789012345678901234567890 | x | héllo | long text | 00ff | 01 | deadbeef | 1999-12-31 | 23:59:59.999999 | 2025-07-24T01:05:23.123456 | 2025-07-24T01:05:23.500Z | happy | a,c | {"a": [1, 2]} | a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11 |"#,
            "| 2  |     |       |                |            |                                                                    |   |       |           |      |    |          |            |                 |                            |                          |       |     |               |                                      |",
            "| 3  | 0.0 | 1e300 | 0.000          | 0          | -0.000000000000000000000000000001                                  |   |       |           | 0000 |    |          | 1000-01-01 | 00:00:00        | 1000-01-01T00:00:00        | 1970-01-01T00:00:01Z     | sad   |     | []            | 00000000-0000-0000-0000-000000000000 |",
            "+----+-----+-------+----------------+------------+--------------------------------------------------------------------+---+-------+-----------+------+----+----------+------------+-----------------+----------------------------+--------------------------+-------+-----+---------------+--------------------------------------+",
        ]
        .join("\n")
    );
}

#[tokio::test]
async fn bad_values_and_unmapped_types_are_named() {
    let mut db = Db::new().await;
    db.exec(
        "CREATE TABLE g (id int, p point, flag tinyint(1), tm time);
         INSERT INTO g VALUES (1, ST_GeomFromText('POINT(1 2)'), 1, '10:00:00');",
    )
    .await;
    let spec = TableSpec::new("g").from_table("g");
    let err = read(&db.source(), &spec).await.unwrap_err().to_string();
    assert!(
        err.contains("`g`") && err.contains("`p`") && err.contains("geometry"),
        "{err}"
    );
    let batches = read(&db.source().with_unmapped_as_text(true), &spec).await.unwrap();
    assert_eq!(
        render_sorted(&batches, &[]),
        "+----+------------+------+----------+\n| id | p          | flag | tm       |\n+----+------------+------+----------+\n| 1  | POINT(1 2) | true | 10:00:00 |\n+----+------------+------+----------+"
    );
    // A TINYINT(1) holding 2 is not a boolean; a TIME past a day is not a time of day.
    db.exec("INSERT INTO g VALUES (2, NULL, 2, '30:00:00')").await;
    let err = read(&db.source().with_unmapped_as_text(true), &spec)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("`flag`") && err.contains("not a boolean"), "{err}");
    let spec = TableSpec::new("g").from_query("SELECT id, flag FROM g");
    let batches = read(&db.source().with_tinyint1_as_bool(false), &spec).await.unwrap();
    assert_eq!(types_of(&batches), "Int32, Int8");
    let spec = TableSpec::new("g").from_query("SELECT id, tm FROM g");
    let err = read(&db.source(), &spec).await.unwrap_err().to_string();
    assert!(err.contains("`tm`") && err.contains("30:00:00"), "{err}");
}

#[tokio::test]
async fn source_conformance_and_missing_tables() {
    let mut db = Db::new().await;
    db.exec(
        "CREATE TABLE people (id int PRIMARY KEY, name text); INSERT INTO people VALUES (1,'ann'),(2,'bob'),(3,NULL);",
    )
    .await;
    let spec = TableSpec::new("people")
        .from_table(format!("{}.people", db.name))
        .cursor(["id"]);
    let missing = TableSpec::new("g").from_table("ghosts");
    let expected =
        "+----+------+\n| id | name |\n+----+------+\n| 1  | ann  |\n| 2  | bob  |\n| 3  |      |\n+----+------+";
    conformance::source(&db.source(), &spec, &missing, expected, &[]).await;
    let err = db.source().check(&spec.clone().cursor(["nope"])).await.unwrap_err();
    assert!(
        matches!(err, Error::ColumnNotFound { ref column, .. } if column == "nope"),
        "{err}"
    );
    let err = db
        .source()
        .check(&TableSpec::new("x").from_table("nodb.people"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::TableNotFound { .. }), "{err}");
    // Bad credentials: a clear error that does not repeat the password.
    let bad = format!("{}/{}", base_url().replace("root@", "root:wrongpw@"), db.name);
    let err = MySqlSource::new(&bad)
        .unwrap()
        .check(&spec)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("people") && !err.contains("wrongpw"), "{err}");
}

#[tokio::test]
async fn incremental_join_into_a_lake() {
    let mut db = Db::new().await;
    db.exec(
        "CREATE TABLE customers (customer_id int PRIMARY KEY, name text, updated_at datetime(6));
         CREATE TABLE orders (order_id int PRIMARY KEY, customer_id int, amount decimal(10,2), order_date date,
                              updated_at datetime(6), INDEX (updated_at));
         INSERT INTO customers VALUES (1, 'ann', '2025-07-01'), (2, 'bob', '2025-07-01');
         INSERT INTO orders VALUES (1, 1, 10.50, '2025-07-22', '2025-07-22 08:00'),
                                   (2, 2, 20.00, '2025-07-22', '2025-07-22 08:00'),
                                   (3, 1, 30.25, '2025-07-23', '2025-07-23 09:00:00.000001');",
    )
    .await;
    // The watermark covers the change columns of both joined tables.
    let query = "SELECT o.order_id, o.amount, o.order_date, c.name, o.updated_at, c.updated_at AS customer_updated_at
                   FROM orders o JOIN customers c ON c.customer_id = o.customer_id";
    let (_dir, lake, wm) = super::temp_lake();
    let p = Pipeline::builder("my")
        .source(db.source())
        .sink(lake.clone())
        .watermarks(wm)
        .table(
            TableSpec::new("orders_enriched")
                .from_query(query)
                .mode(LoadMode::Incremental)
                .cursor(["updated_at", "customer_updated_at"])
                .partition_by(etl_core::Partitioning::ByDate("order_date".into())),
        )
        .table(TableSpec::new("absent").from_table("absent").optional())
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
        "2025-07-23 09:00:00.000001",
        "microseconds kept"
    );
    let r = p.run().await.unwrap();
    assert_eq!(r.table("orders_enriched").unwrap().status, TableStatus::NoNewData);

    // One order changes, one arrives, and customer bob changes (re-emitting order 2).
    db.exec(
        "UPDATE orders SET amount = 11.00, updated_at = '2025-07-24 10:00' WHERE order_id = 1;
         INSERT INTO orders VALUES (4, 1, 40.00, '2025-07-24', '2025-07-24 10:00');
         UPDATE customers SET name = 'bobby', updated_at = '2025-07-24 11:00' WHERE customer_id = 2;",
    )
    .await;
    // The plan counts the three rows past the watermark (the bound bound as a parameter).
    let plan = p
        .plan(&["orders_enriched"], &etl_core::ModeOverrides::new())
        .await
        .unwrap();
    assert_eq!(plan[0].estimate.rows, Some(3), "{plan:?}");
    let r = p.run().await.unwrap().into_result().unwrap();
    let t = r.table("orders_enriched").unwrap();
    assert_eq!(
        (t.source_count, t.extracted_count, t.written_count),
        (None, 3, 3),
        "an incremental read does not count the table"
    );
    let rows = lake.read_table("orders_enriched").await.unwrap();
    assert_eq!(
        render_sorted(&rows, &["etl_processed_at", "customer_updated_at"]),
        "+----------+--------+------------+-------+----------------------------+\n\
         | order_id | amount | order_date | name  | updated_at                 |\n\
         +----------+--------+------------+-------+----------------------------+\n\
         | 1        | 10.50  | 2025-07-22 | ann   | 2025-07-22T08:00:00        |\n\
         | 1        | 11.00  | 2025-07-22 | ann   | 2025-07-24T10:00:00        |\n\
         | 2        | 20.00  | 2025-07-22 | bob   | 2025-07-22T08:00:00        |\n\
         | 2        | 20.00  | 2025-07-22 | bobby | 2025-07-22T08:00:00        |\n\
         | 3        | 30.25  | 2025-07-23 | ann   | 2025-07-23T09:00:00.000001 |\n\
         | 4        | 40.00  | 2025-07-24 | ann   | 2025-07-24T10:00:00        |\n\
         +----------+--------+------------+-------+----------------------------+"
    );
}

#[tokio::test]
async fn a_query_places_the_watermark_in_its_own_predicate() {
    let mut db = Db::new().await;
    db.exec("CREATE TABLE orders (order_id int PRIMARY KEY, order_date date, updated_at datetime(6))")
        .await;
    let query = "SELECT * FROM orders WHERE order_date >= CAST({watermark} AS DATE) \
                 AND order_date >= CURRENT_DATE - INTERVAL 7 DAY OR updated_at > {watermark}";
    let source = std::sync::Arc::new(db.source());
    let db = tokio::sync::Mutex::new(db);
    crate::a_query_places_the_watermark(source, query.to_string(), async |sql: &str| {
        db.lock().await.exec(sql).await
    })
    .await;
}

#[tokio::test]
async fn parallel_key_ranges_read_every_row_once() {
    let mut db = Db::new().await;
    db.exec(
        "CREATE TABLE big (id bigint PRIMARY KEY, pad varchar(200));
         INSERT INTO big SELECT seq, repeat('x', 100) FROM seq_1_to_5000;",
    )
    .await;
    crate::chunked::parallel_read_every_row_once(db.source().with_parallelism(3).with_min_parallel_bytes(0), "big")
        .await;
}

#[tokio::test]
async fn chunked_reads_resume_at_the_first_uncommitted_chunk() {
    let mut db = Db::new().await;
    db.exec(
        "CREATE TABLE ev (id int PRIMARY KEY, ts datetime, INDEX (ts, id));
         INSERT INTO ev SELECT seq, '2025-01-01' FROM seq_1_to_7;
         INSERT INTO ev SELECT seq, '2025-01-02' FROM seq_8_to_10;",
    )
    .await;
    let url = db.url.clone();
    crate::chunked::resume_at_first_uncommitted_chunk(db.source(), "ev", || async move {
        let mut c = mysql_async::Conn::from_url(url).await.unwrap();
        c.query_drop("INSERT INTO ev VALUES (11, '2025-01-03')").await.unwrap();
        c.disconnect().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn null_cursors_follow_one_stated_rule() {
    let mut db = Db::new().await;
    db.exec(
        "CREATE TABLE nulls (id int PRIMARY KEY, ts datetime NULL);
         INSERT INTO nulls VALUES (1, NULL), (2, NULL);
         CREATE TABLE five (id int PRIMARY KEY, ts datetime NULL, INDEX (ts, id));
         INSERT INTO five VALUES (1, '2025-01-01'), (2, NULL), (3, NULL), (4, NULL), (5, NULL);",
    )
    .await;
    let url = db.url.clone();
    crate::chunked::null_cursors_follow_one_stated_rule(db.source(), "nulls", "five", |sql| {
        let url = url.clone();
        async move {
            let mut c = mysql_async::Conn::from_url(url).await.unwrap();
            c.query_drop(&sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
            c.disconnect().await.unwrap();
        }
    })
    .await;
}

/// A table whose name holds a dot is read by database and name.
#[tokio::test]
async fn dotted_names_are_read_by_database_and_name() {
    let mut db = Db::new().await;
    db.exec(
        "CREATE TABLE `order.items` (id int PRIMARY KEY); INSERT INTO `order.items` SELECT seq FROM seq_1_to_7000;",
    )
    .await;
    let spec = TableSpec::new("items").from_schema_table(&db.name, "order.items");
    let req = ReadRequest {
        spec: &spec,
        mode: LoadMode::Full,
        from: None,
        run_id: "t",
        batch_size: 1000,
        limit: None,
        until: None,
        keys: None,
        files: None,
    };
    let source = db.source().with_parallelism(2).with_min_parallel_bytes(0);
    let e = source.read(req).await.unwrap();
    let stats = e.stats.clone();
    let rows: usize = e
        .stream
        .try_collect::<Vec<_>>()
        .await
        .unwrap()
        .iter()
        .map(|b| b.num_rows())
        .sum();
    assert_eq!(
        (rows, stats.chunks.load(std::sync::atomic::Ordering::Relaxed)),
        (7000, 2),
        "split by its key"
    );
}

/// A server that accepts the connection but never answers fails the run after the login
/// timeout, and a query that runs past the answer timeout after that one: each a retryable
/// error naming the server and what was being done.
#[tokio::test]
async fn servers_that_do_not_answer_fail_the_run_instead_of_hanging() {
    let s = std::time::Duration::from_secs(1);
    let quick = etl_core::Timeouts {
        connect: s,
        login: s,
        answer: Some(s),
    };
    let port = conformance::silent_server();
    let silent = MySqlSource::new(&format!("mysql://root@127.0.0.1:{port}/test"))
        .unwrap()
        .with_timeouts(quick);
    let err = silent.check(&TableSpec::new("t")).await.unwrap_err();
    conformance::assert_timeout(&err, &format!("127.0.0.1:{port}"), "logging in");

    let db = Db::new().await;
    let slow = TableSpec::new("slow").from_query("SELECT 1 AS id, SLEEP(3) AS s");
    let err = read(&db.source().with_timeouts(quick), &slow).await.unwrap_err();
    match &err {
        etl_core::Error::Timeout { phase, .. } if phase == "waiting for an answer" || phase == "reading rows" => {
            assert!(err.is_retryable())
        }
        other => panic!("expected a timeout, got {other}"),
    }
}

/// TLS with the server verified against the given root certificate.
#[cfg(feature = "tls")]
#[tokio::test]
async fn tls_connections_verify_the_server() {
    let db = Db::new().await;
    let ca = std::env::var("ETL_TEST_TLS_CA").expect("ETL_TEST_TLS_CA: run scripts/services.sh env");
    let spec = TableSpec::new("ssl").from_query(
        "SELECT VARIABLE_VALUE <> '' AS tls FROM information_schema.SESSION_STATUS WHERE VARIABLE_NAME = 'Ssl_cipher'",
    );
    let batches = read(&db.source().with_root_certificate(&ca), &spec).await.unwrap();
    assert_eq!(
        render_sorted(&batches, &[]),
        "+-----+\n| tls |\n+-----+\n| 1   |\n+-----+"
    );
    let batches = read(&db.source(), &spec).await.unwrap();
    assert_eq!(
        render_sorted(&batches, &[]),
        "+-----+\n| tls |\n+-----+\n| 0   |\n+-----+"
    );
    let untrusted = MySqlSource::new(&format!("{}?require_ssl=true", db.url)).unwrap();
    let err = read(&untrusted, &spec).await.unwrap_err().to_string();
    assert!(err.to_lowercase().contains("certificate"), "{err}");
}

#[tokio::test]
async fn zero_dates_fail_or_read_as_null() {
    let mut db = Db::new().await;
    db.exec(
        "SET SESSION sql_mode = '';
         CREATE TABLE z (id int, d date, ts datetime);
         INSERT INTO z VALUES (1, '0000-00-00', '0000-00-00 00:00:00'), (2, '2025-07-24', '2025-07-24 01:02:03');",
    )
    .await;
    let spec = TableSpec::new("z").from_table("z");
    let err = read(&db.source(), &spec).await.unwrap_err().to_string();
    assert!(err.contains("`d`") && err.contains("with_zero_dates_as_null"), "{err}");
    let batches = read(&db.source().with_zero_dates_as_null(true), &spec).await.unwrap();
    assert_eq!(
        render_sorted(&batches, &[]),
        "+----+------------+---------------------+\n| id | d          | ts                  |\n+----+------------+---------------------+\n| 1  |            |                     |\n| 2  | 2025-07-24 | 2025-07-24T01:02:03 |\n+----+------------+---------------------+"
    );
}

/// A driver's error keeps its cause: the class to match on, the server's error number and
/// the driver's own error as the source (see the Postgres test of the same name).
#[tokio::test]
async fn driver_errors_keep_their_kind_code_and_source() {
    use etl_core::DriverErrorKind;
    let mut db = Db::new().await;
    db.exec("CREATE TABLE t (id int)").await;
    let err = read(&db.source(), &TableSpec::new("q").from_query("SELECT nope FROM t"))
        .await
        .unwrap_err();
    let Error::Driver { kind, code, table, .. } = &err else {
        panic!("a driver error: {err:?}")
    };
    assert_eq!(
        (*kind, code.as_deref(), table.as_str()),
        (DriverErrorKind::Statement, Some("1054"), "q")
    );
    assert!(!err.is_retryable());
    let source = std::error::Error::source(&err).expect("the driver's error");
    assert!(source.downcast_ref::<mysql_async::Error>().is_some(), "{source:?}");

    let stranger = base_url().replace("root@", "nobody_here:wrong@");
    let err = MySqlSource::new(&format!("{stranger}/{}", db.name))
        .unwrap()
        .check(&TableSpec::new("t"))
        .await
        .unwrap_err();
    assert_eq!(err.driver_kind(), Some(DriverErrorKind::Authentication), "{err:?}");
    assert!(!err.is_retryable());
}

/// Rows deleted at a MariaDB source leave a Postgres warehouse target, found by key digests
/// computed in each database (MariaDB's `DIV` and `%`, Postgres's `/` and `%`).
#[tokio::test]
async fn deletes_at_mariadb_reach_a_postgres_target() {
    let mut db = Db::new().await;
    db.exec("CREATE TABLE items (id INT PRIMARY KEY, name VARCHAR(10), updated_at DATETIME NOT NULL)")
        .await;
    let values: Vec<String> = (1..=120)
        .map(|i| format!("({i}, 'n{i}', '2025-07-01 00:00:00' + INTERVAL {i} MINUTE)"))
        .collect();
    db.exec(&format!("INSERT INTO items VALUES {}", values.join(", ")))
        .await;
    let pg_url = std::env::var("ETL_TEST_PG").unwrap_or_else(|_| {
        panic!("ETL_TEST_PG is not set: run `scripts/services.sh start` and `eval \"$(scripts/services.sh env)\"`")
    });
    let schema = unique("my_del");
    let dir = tempfile::tempdir().unwrap();
    let p = Pipeline::builder("my_del")
        .source(db.source())
        .sink(
            etl_sinks::postgres::PostgresSink::new(&pg_url)
                .unwrap()
                .with_schema(&schema),
        )
        .watermarks(ObjectStoreWatermarkStore::new(Location::local(dir.path()).unwrap()))
        .table(
            TableSpec::new("items")
                .from_table(format!("{}.items", db.name))
                .mode(LoadMode::Upsert)
                .primary_key(["id"])
                .cursor(["updated_at"])
                .detect_deletes(etl_core::Deletes {
                    ranges: 8,
                    ..Default::default()
                }),
        )
        .build()
        .unwrap();
    p.run().await.unwrap().into_result().unwrap();
    db.exec("DELETE FROM items WHERE id IN (3, 77)").await;
    let r = p.run().await.unwrap().into_result().unwrap();
    let t = r.table("items").unwrap();
    assert_eq!((t.deleted_count, t.target_count), (2, Some(118)), "{t:?}");
    let (pg, c) = tokio_postgres::connect(&pg_url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(c);
    let left: Vec<i32> = pg
        .query(&format!("SELECT id FROM {schema}.items ORDER BY id"), &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(left.len(), 118);
    assert!(!left.contains(&3) && !left.contains(&77));
    pg.batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .unwrap();
}

/// Every column type a MariaDB table holds hashes alike in MariaDB and in the Postgres
/// target, so a clean load reconciles; a row changed in the target behind the library's
/// back is found and repaired from MariaDB.
#[tokio::test]
async fn a_mariadb_table_reconciles_with_its_postgres_target() {
    use etl_core::{Reconcile, ReconcilePolicy, ReconcileStatus};
    let mut db = Db::new().await;
    db.exec(
        "CREATE TABLE items (id BIGINT PRIMARY KEY, name VARCHAR(20), price DECIMAL(10,2), qty INT, day DATE, \
         active BOOLEAN, score DOUBLE, seen TIMESTAMP(3) NULL, updated_at DATETIME(6) NOT NULL)",
    )
    .await;
    let values: Vec<String> = (1..=150)
        .map(|i| {
            format!(
                "({i}, {}, {i} * 1.25, {}, DATE '2025-01-01' + INTERVAL {i} DAY, {}, {i} / 8, \
                 TIMESTAMP '2025-03-01 00:00:00.250' + INTERVAL {i} HOUR, \
                 '2025-07-01 00:00:00' + INTERVAL {i} * 1500 MICROSECOND)",
                if i % 9 == 0 {
                    "NULL".to_string()
                } else {
                    format!("'nä{i}'")
                },
                i % 5,
                i % 2
            )
        })
        .collect();
    db.exec(&format!("INSERT INTO items VALUES {}", values.join(", ")))
        .await;
    let pg_url = std::env::var("ETL_TEST_PG").unwrap_or_else(|_| {
        panic!("ETL_TEST_PG is not set: run `scripts/services.sh start` and `eval \"$(scripts/services.sh env)\"`")
    });
    let schema = unique("my_rec");
    let dir = tempfile::tempdir().unwrap();
    let p = Pipeline::builder("my_rec")
        .source(db.source())
        .sink(
            etl_sinks::postgres::PostgresSink::new(&pg_url)
                .unwrap()
                .with_schema(&schema),
        )
        .watermarks(ObjectStoreWatermarkStore::new(Location::local(dir.path()).unwrap()))
        .table(
            TableSpec::new("items")
                .from_table(format!("{}.items", db.name))
                .mode(LoadMode::Upsert)
                .primary_key(["id"])
                .cursor(["updated_at"])
                .reconcile(Reconcile {
                    ranges: 64,
                    ..Reconcile::new(ReconcilePolicy::Repair).content([
                        "name",
                        "price",
                        "qty",
                        "day",
                        "active",
                        "score",
                        "seen",
                        "updated_at",
                    ])
                }),
        )
        .build()
        .unwrap();
    let r = p.run().await.unwrap().into_result().unwrap();
    let t = r.table("items").unwrap();
    assert_eq!(
        t.reconciliation
            .as_ref()
            .map(|r| (r.status, r.source_rows, r.target_rows)),
        Some((ReconcileStatus::Reconciled, 150, 150)),
        "{t:?}"
    );
    let (pg, c) = tokio_postgres::connect(&pg_url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(c);
    let row = |id: i64| {
        let (pg, schema) = (&pg, &schema);
        async move {
            let r = pg
                .query_one(
                    &format!("SELECT name, price::text, seen::text FROM {schema}.items WHERE id = $1"),
                    &[&id],
                )
                .await
                .unwrap();
            (
                r.get::<_, Option<String>>(0),
                r.get::<_, String>(1),
                r.get::<_, String>(2),
            )
        }
    };
    let before = row(42).await;
    pg.batch_execute(&format!(
        "UPDATE {schema}.items SET seen = seen + interval '1 millisecond' WHERE id = 42"
    ))
    .await
    .unwrap();
    let r = p.run().await.unwrap().into_result().unwrap();
    let t = r.table("items").unwrap();
    let rec = t.reconciliation.as_ref().unwrap();
    assert_eq!(
        (
            rec.status,
            rec.changed_in_target,
            rec.missing_in_target,
            rec.extra_in_target
        ),
        (ReconcileStatus::Repaired, 1, 0, 0),
        "a millisecond's change is found: {t:?}"
    );
    assert_eq!(row(42).await, before);
    pg.batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .unwrap();
}

/// A shard plan's split of a MariaDB table (`Source::split`), as Postgres's.
#[tokio::test]
async fn splits_a_table_for_a_shard_plan() {
    let mut db = Db::new().await;
    db.exec(
        "CREATE TABLE orders (order_id bigint PRIMARY KEY, label varchar(10) NOT NULL, updated_at datetime(6) NOT NULL)",
    )
    .await;
    db.exec(
        "INSERT INTO orders WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100)
         SELECT i, concat('l', i), timestamp '2025-07-01 00:00:00' + interval i minute FROM n",
    )
    .await;
    db.exec("CREATE VIEW by_label AS SELECT * FROM orders").await;
    super::split_cases(&db.source(), "orders", "by_label").await;
}
