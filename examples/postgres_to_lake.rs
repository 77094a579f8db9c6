//! The Glue job of the seed, as a library call: orders joined to customers in Postgres, loaded
//! into a lake partitioned by `order_date` — a full load first, then incremental runs that
//! pick up changed orders and changed customers alike.
//!
//! ```text
//! ETL_PG="host=127.0.0.1 user=postgres dbname=test" cargo run --example postgres_to_lake --features postgres -- ./lake [--demo]
//! ```
//!
//! `--demo` creates `etl_demo.customers` and `etl_demo.orders` with a few rows (and, on later
//! runs, changes one customer and adds an order), so the example runs on an empty database.
//! Each run's report is printed as one JSON line.

use etl::{
    LakeSink, LoadMode, Location, ModeOverrides, ObjectStoreWatermarkStore, Partitioning, Pipeline, PostgresSource,
    TableSpec,
};

/// Orders with their customer; a row is new when the order or its customer changed.
const QUERY: &str = "SELECT o.order_id, o.customer_id, c.name AS customer_name, o.product_name, o.quantity,
        o.price, o.order_date, greatest(o.updated_at, c.updated_at) AS changed_at
   FROM etl_demo.orders o JOIN etl_demo.customers c ON c.customer_id = o.customer_id";

async fn demo_data(conn: &str) -> Result<(), Box<dyn std::error::Error>> {
    let (client, connection) = tokio_postgres::connect(conn, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    let exists = client
        .query_one("SELECT to_regclass('etl_demo.orders') IS NOT NULL", &[])
        .await?
        .get::<_, bool>(0);
    if !exists {
        client
            .batch_execute(
                "CREATE SCHEMA IF NOT EXISTS etl_demo;
                 CREATE TABLE etl_demo.customers (customer_id int PRIMARY KEY, name text, updated_at timestamp NOT NULL);
                 CREATE TABLE etl_demo.orders (order_id int PRIMARY KEY, customer_id int REFERENCES etl_demo.customers,
                   product_name text, quantity int, price numeric(10,2), order_date date, updated_at timestamp NOT NULL);
                 CREATE INDEX ON etl_demo.orders (updated_at);
                 INSERT INTO etl_demo.customers VALUES (1, 'Ada', '2025-07-01'), (2, 'Alan', '2025-07-01');
                 INSERT INTO etl_demo.orders VALUES
                   (1, 1, 'Widget', 2, 9.99, '2025-07-22', '2025-07-22 08:00'),
                   (2, 2, 'Gadget', 1, 24.50, '2025-07-23', '2025-07-23 09:30');",
            )
            .await?;
        eprintln!("created etl_demo.customers and etl_demo.orders");
    } else {
        // A later day: a customer renamed (re-emits its orders) and a new order.
        client
            .batch_execute(
                "UPDATE etl_demo.customers SET name = name || '+', updated_at = clock_timestamp()::timestamp
                  WHERE customer_id = 1;
                 INSERT INTO etl_demo.orders
                 SELECT max(order_id) + 1, 2, 'Gizmo', 3, 3.75, current_date, clock_timestamp()::timestamp
                   FROM etl_demo.orders;",
            )
            .await?;
        eprintln!("changed customer 1 and added an order");
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let lake_dir = args
        .iter()
        .find(|a| !a.starts_with("--"))
        .cloned()
        .unwrap_or_else(|| "./lake".into());
    let conn = std::env::var("ETL_PG").map_err(|_| "set ETL_PG to a Postgres connection string")?;
    if args.iter().any(|a| a == "--demo") {
        demo_data(&conn).await?;
    }
    let lake = Location::local(&lake_dir)?;
    let pipeline = Pipeline::builder("orders_enriched")
        .source(PostgresSource::new(&conn)?)
        .sink(LakeSink::new(lake.clone()))
        .watermarks(ObjectStoreWatermarkStore::new(lake.child("_etl/watermarks")))
        .table(
            TableSpec::new("orders_enriched")
                .from_query(QUERY)
                .mode(LoadMode::Incremental)
                .primary_key(["order_id"])
                .cursor(["changed_at"])
                .partition_by(Partitioning::ByDate("order_date".into())),
        )
        .build()?;
    // `--full` reloads everything once (Glue's --OBJ habit), e.g. after a schema change.
    let overrides = if args.iter().any(|a| a == "--full") {
        ModeOverrides::new().with("orders_enriched", LoadMode::Full)
    } else {
        ModeOverrides::new()
    };
    let report = pipeline.run_with(&overrides).await?;
    println!("{}", report.to_json());
    let t = &report.tables[0];
    eprintln!(
        "{}: {:?}, {} rows written, watermark {:?}",
        t.table,
        t.status,
        t.written_count,
        t.watermark_after
            .as_ref()
            .and_then(|w| w.cursor.as_ref())
            .map(|c| c.to_string())
    );
    report.into_result()?;
    Ok(())
}
