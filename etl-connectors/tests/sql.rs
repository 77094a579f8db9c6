//! SQL across sources: Postgres orders joined to MariaDB customers and to a lake table read as
//! Parquet files, by DataFusion, incrementally into a lake (`ETL_TEST_PG`, `ETL_TEST_MYSQL`).

use std::sync::Arc;

use arrow::array::{Int32Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use etl_connectors::files::FileSource;
use etl_connectors::sql::SqlSource;
use etl_core::conformance::render_sorted;
use etl_core::{
    Error, FileFormat, LoadMode, Location, MemorySource, ObjectStoreWatermarkStore, Pipeline, TableSpec, TableStatus,
};
use etl_sinks::lake::LakeSink;

use super::mysql::Db as MariaDb;
use super::postgres::Db as PgDb;

/// A lake table `regions` (written by the lake sink), as the files of a lake are read.
async fn regions_lake(dir: &std::path::Path) -> Location {
    let lake = Location::local(dir).unwrap();
    let schema = Arc::new(Schema::new(vec![
        Field::new("region_id", DataType::Int32, false),
        Field::new("name", DataType::Utf8, false),
    ]));
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int32Array::from(vec![1, 2])),
            Arc::new(StringArray::from(vec!["EU", "US"])),
        ],
    )
    .unwrap();
    let memory = MemorySource::new();
    memory.append("regions", batch).unwrap();
    Pipeline::builder("regions")
        .source(memory)
        .sink(LakeSink::new(lake.clone()))
        .watermarks(ObjectStoreWatermarkStore::new(lake.child("_etl/watermarks")))
        .table(TableSpec::new("regions").from_table("regions").mode(LoadMode::Full))
        .build()
        .unwrap()
        .run()
        .await
        .unwrap()
        .into_result()
        .unwrap();
    lake
}

struct Sides {
    pg: PgDb,
    my: MariaDb,
    _dir: tempfile::TempDir,
    regions: Location,
}

impl Sides {
    async fn new() -> Sides {
        let pg = PgDb::new().await;
        pg.exec(
            "CREATE TABLE $S.orders (order_id int PRIMARY KEY, customer_id int, region_id int, amount numeric(10,2),
                                     updated_at timestamp NOT NULL);
             INSERT INTO $S.orders VALUES (1, 1, 1, 10.50, '2025-07-22 08:00'), (2, 2, 2, 20.00, '2025-07-22 09:00'),
                                          (3, 1, 3, 30.25, '2025-07-23 10:00');",
        )
        .await;
        let mut my = MariaDb::new().await;
        my.exec(
            "CREATE TABLE customers (customer_id int PRIMARY KEY, name varchar(40), updated_at datetime(6) NOT NULL);
             INSERT INTO customers VALUES (1, 'ann', '2025-07-01'), (2, 'bob', '2025-07-01');",
        )
        .await;
        let dir = tempfile::tempdir().unwrap();
        let regions = regions_lake(dir.path()).await;
        Sides {
            pg,
            my,
            _dir: dir,
            regions,
        }
    }

    fn source(&self) -> SqlSource {
        SqlSource::new()
            .input(
                "orders",
                self.pg.source(),
                TableSpec::new("orders").from_table(self.pg.table("orders")),
            )
            .input("customers", self.my.source(), TableSpec::new("customers"))
            .input(
                "regions",
                FileSource::new(self.regions.clone()),
                TableSpec::new("regions").from_files("regions/", FileFormat::Parquet),
            )
    }
}

const QUERY: &str = "SELECT o.order_id, c.name AS customer, r.name AS region, o.amount,
        greatest(o.updated_at, c.updated_at) AS changed_at
   FROM orders o JOIN customers c ON c.customer_id = o.customer_id
   LEFT JOIN regions r ON r.region_id = o.region_id";

#[tokio::test]
async fn a_join_across_postgres_mariadb_and_a_lake_table_loads_incrementally() {
    let mut sides = Sides::new().await;
    let (_dir, lake, wm) = super::temp_lake();
    let p = Pipeline::builder("across")
        .source(sides.source())
        .sink(lake.clone())
        .watermarks(wm)
        .table(
            TableSpec::new("orders_enriched")
                .from_query(QUERY)
                .mode(LoadMode::Incremental)
                .primary_key(["order_id"])
                .cursor(["changed_at"]),
        )
        .build()
        .unwrap();
    let r = p.run().await.unwrap().into_result().unwrap();
    let t = r.table("orders_enriched").unwrap();
    assert_eq!(
        (t.status, t.source_count, t.written_count),
        (TableStatus::Committed, Some(3), 3)
    );
    assert_eq!(
        t.watermark_after.as_ref().unwrap().cursor.as_ref().unwrap().to_string(),
        "2025-07-23 10:00:00"
    );
    let r = p.run().await.unwrap().into_result().unwrap();
    assert_eq!(r.table("orders_enriched").unwrap().status, TableStatus::NoNewData);

    // Customer bob changes in MariaDB (re-emitting order 2), an order arrives in Postgres.
    sides
        .my
        .exec("UPDATE customers SET name = 'bobby', updated_at = '2025-07-24 11:00' WHERE customer_id = 2")
        .await;
    sides
        .pg
        .exec("INSERT INTO $S.orders VALUES (4, 1, 2, 40.00, '2025-07-24 10:00')")
        .await;
    let r = p.run().await.unwrap().into_result().unwrap();
    let t = r.table("orders_enriched").unwrap();
    assert_eq!(
        (t.source_count, t.written_count),
        (Some(4), 2),
        "the query's rows, and those past the watermark: {t:?}"
    );
    assert_eq!(
        t.watermark_after.as_ref().unwrap().cursor.as_ref().unwrap().to_string(),
        "2025-07-24 11:00:00"
    );
    let rows = lake.read_table("orders_enriched").await.unwrap();
    assert_eq!(
        render_sorted(&rows, &["etl_processed_at"]),
        "+----------+----------+--------+--------+---------------------+\n\
         | order_id | customer | region | amount | changed_at          |\n\
         +----------+----------+--------+--------+---------------------+\n\
         | 1        | ann      | EU     | 10.50  | 2025-07-22T08:00:00 |\n\
         | 2        | bob      | US     | 20.00  | 2025-07-22T09:00:00 |\n\
         | 2        | bobby    | US     | 20.00  | 2025-07-24T11:00:00 |\n\
         | 3        | ann      |        | 30.25  | 2025-07-23T10:00:00 |\n\
         | 4        | ann      | US     | 40.00  | 2025-07-24T10:00:00 |\n\
         +----------+----------+--------+--------+---------------------+"
    );
}

#[tokio::test]
async fn bad_queries_and_missing_inputs_are_named_and_write_nothing() {
    let sides = Sides::new().await;
    let (_dir, lake, wm) = super::temp_lake();
    let run = async |source: SqlSource, query: &str| {
        let p = Pipeline::builder("bad")
            .source(source)
            .sink(lake.clone())
            .watermarks(wm.clone())
            .table(TableSpec::new("out").from_query(query).mode(LoadMode::Full))
            .build()
            .unwrap();
        // A missing table stops the run before any write; a failed read fails its table.
        match p.run().await {
            Err(e) => e,
            Ok(r) => r.into_result().unwrap_err(),
        }
    };
    let err = run(sides.source(), "SELECT * FROM orders JOIN suppliers USING (order_id)").await;
    assert!(
        matches!(&err, Error::TableNotFound { table, source_name } if table == "suppliers" && source_name.contains("orders, customers, regions")),
        "{err}"
    );
    let err = run(sides.source(), "SELECT order_id, colour FROM orders").await;
    assert!(
        err.to_string()
            .contains("invalid configuration: table `out`: the SQL query")
            && err.to_string().contains("No field named colour"),
        "{err}"
    );
    let err = run(sides.source(), "SELECT * FROM orders WHERE updated_at > {watermark}").await;
    assert!(
        err.to_string().contains("a query across sources has no `{watermark}`"),
        "{err}"
    );
    // An input whose table is gone: its own source names it.
    let gone = SqlSource::new().input(
        "orders",
        sides.pg.source(),
        TableSpec::new("orders").from_table(sides.pg.table("absent")),
    );
    let err = run(gone, "SELECT * FROM orders").await;
    assert!(
        err.to_string().contains("absent") && err.to_string().contains("not found"),
        "{err}"
    );
    assert!(
        lake.read_table("out").await.map(|b| b.is_empty()).unwrap_or(true),
        "nothing written"
    );
}
