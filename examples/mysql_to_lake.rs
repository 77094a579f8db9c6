//! Orders joined to customers in MySQL or MariaDB, loaded into a lake partitioned by
//! `order_date`: a full first load, then incremental runs that pick up changed orders and
//! changed customers alike (the watermark covers both tables' change columns).
//!
//! ```text
//! ETL_MYSQL=mysql://root@127.0.0.1:3306/test cargo run --example mysql_to_lake --features mysql -- ./lake [--demo]
//! ```
//!
//! `--demo` creates `etl_demo_customers` and `etl_demo_orders` in the URL's database with a
//! few rows (and, on later runs, changes one customer and adds an order), so the example runs
//! on an empty database. Each run's report is printed as one JSON line.

use etl::{LakeSink, LoadMode, Location, MySqlSource, ObjectStoreWatermarkStore, Partitioning, Pipeline, TableSpec};
use mysql_async::prelude::Queryable;

/// Orders with their customer; a row is new when the order or its customer changed.
const QUERY: &str = "SELECT o.order_id, o.customer_id, c.name AS customer_name, o.product_name, o.quantity,
        o.price, o.order_date, o.updated_at, c.updated_at AS customer_updated_at
   FROM etl_demo_orders o JOIN etl_demo_customers c ON c.customer_id = o.customer_id";

async fn demo_data(url: &str) -> Result<(), Box<dyn std::error::Error>> {
    let mut conn = mysql_async::Conn::from_url(url).await?;
    let exists: Option<u64> = conn
        .query_first("SELECT count(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'etl_demo_orders'")
        .await?;
    if exists == Some(0) {
        conn.query_drop(
            "CREATE TABLE etl_demo_customers (customer_id int PRIMARY KEY, name varchar(100),
               updated_at datetime(6) NOT NULL);
             CREATE TABLE etl_demo_orders (order_id int PRIMARY KEY, customer_id int, product_name varchar(100),
               quantity int, price decimal(10,2), order_date date, updated_at datetime(6) NOT NULL, INDEX (updated_at));
             INSERT INTO etl_demo_customers VALUES (1, 'Ada', '2025-07-01'), (2, 'Alan', '2025-07-01');
             INSERT INTO etl_demo_orders VALUES
               (1, 1, 'Widget', 2, 9.99, '2025-07-22', '2025-07-22 08:00'),
               (2, 2, 'Gadget', 1, 24.50, '2025-07-23', '2025-07-23 09:30');",
        )
        .await?;
        eprintln!("created etl_demo_customers and etl_demo_orders");
    } else {
        // A later day: a customer renamed (re-emits its orders) and a new order.
        conn.query_drop(
            "UPDATE etl_demo_customers SET name = concat(name, '+'), updated_at = now(6) WHERE customer_id = 1;
             INSERT INTO etl_demo_orders
             SELECT max(order_id) + 1, 2, 'Gizmo', 3, 3.75, current_date, now(6) FROM etl_demo_orders;",
        )
        .await?;
        eprintln!("changed customer 1 and added an order");
    }
    conn.disconnect().await?;
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
    let url = std::env::var("ETL_MYSQL").map_err(|_| "set ETL_MYSQL to a mysql:// URL")?;
    if args.iter().any(|a| a == "--demo") {
        demo_data(&url).await?;
    }
    let lake = Location::local(&lake_dir)?;
    let report = Pipeline::builder("orders_enriched_mysql")
        .source(MySqlSource::new(&url)?)
        .sink(LakeSink::new(lake.clone()))
        .watermarks(ObjectStoreWatermarkStore::new(lake.child("_etl/watermarks")))
        .table(
            TableSpec::new("orders_enriched")
                .from_query(QUERY)
                .mode(LoadMode::Incremental)
                .primary_key(["order_id"])
                .cursor(["updated_at", "customer_updated_at"])
                .partition_by(Partitioning::ByDate("order_date".into())),
        )
        .build()?
        .run()
        .await?;
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
