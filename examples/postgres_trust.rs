//! Every row accounted for, Postgres → Postgres warehouse: an UPSERT table whose deletes at
//! the source reach the target without CDC, and whose target is reconciled with the source
//! after every run — rows removed or changed in the target behind the library's back are
//! found and repaired by reloading only their key ranges.
//!
//! ```text
//! ETL_PG="host=127.0.0.1 user=postgres dbname=test" cargo run --example postgres_trust --features postgres -- ./state [--demo]
//! ```
//!
//! `--demo` creates `etl_trust.items` (100 rows) on the first run; on later runs it deletes a
//! row at the source, and in the warehouse (`etl_trust_wh.items`) changes one row and deletes
//! another, as a hand-run statement would. Each run's report is printed as one JSON line; a
//! summary goes to stderr.

use etl::{
    Deletes, LoadMode, Location, ObjectStoreWatermarkStore, Pipeline, PostgresSink, PostgresSource, Reconcile,
    ReconcilePolicy, TableSpec,
};

async fn demo_data(conn: &str) -> Result<(), Box<dyn std::error::Error>> {
    let (client, connection) = tokio_postgres::connect(conn, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    let exists = client
        .query_one("SELECT to_regclass('etl_trust.items') IS NOT NULL", &[])
        .await?
        .get::<_, bool>(0);
    if !exists {
        client
            .batch_execute(
                "CREATE SCHEMA IF NOT EXISTS etl_trust;
                 CREATE TABLE etl_trust.items (id bigint PRIMARY KEY, name text, price numeric(10,2),
                   updated_at timestamp NOT NULL DEFAULT now());
                 INSERT INTO etl_trust.items SELECT i, 'item ' || i, i * 1.5, '2025-07-01'::timestamp + i * interval '1 hour'
                   FROM generate_series(1, 100) i;",
            )
            .await?;
        eprintln!("created etl_trust.items");
    } else {
        let target = client
            .query_one("SELECT to_regclass('etl_trust_wh.items') IS NOT NULL", &[])
            .await?
            .get::<_, bool>(0);
        client
            .batch_execute("DELETE FROM etl_trust.items WHERE id = (SELECT max(id) FROM etl_trust.items)")
            .await?;
        if target {
            client
                .batch_execute(
                    "UPDATE etl_trust_wh.items SET name = 'tampered' WHERE id = 3;
                     DELETE FROM etl_trust_wh.items WHERE id = 7;",
                )
                .await?;
        }
        eprintln!("deleted the last source row; changed item 3 and removed item 7 in the warehouse");
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let state = args
        .iter()
        .find(|a| !a.starts_with("--"))
        .cloned()
        .unwrap_or_else(|| "./state".into());
    let conn = std::env::var("ETL_PG").map_err(|_| "set ETL_PG to a Postgres connection string")?;
    if args.iter().any(|a| a == "--demo") {
        demo_data(&conn).await?;
    }
    let pipeline = Pipeline::builder("trust")
        .source(PostgresSource::new(&conn)?)
        .sink(PostgresSink::new(&conn)?.with_schema("etl_trust_wh"))
        .watermarks(ObjectStoreWatermarkStore::new(Location::local(&state)?))
        .table(
            TableSpec::new("items")
                .from_table("etl_trust.items")
                .mode(LoadMode::Upsert)
                .primary_key(["id"])
                .cursor(["updated_at"])
                .processed_at(false)
                // Keys gone from the source leave the target (at most 5 % of it per run).
                .detect_deletes(Deletes::default())
                // After every run: keys, counts and these columns compared; what differs is
                // reloaded from the source.
                .reconcile(Reconcile::new(ReconcilePolicy::Repair).content(["name", "price", "updated_at"])),
        )
        .build()?;
    let report = pipeline.run().await?;
    println!("{}", report.to_json());
    let t = &report.tables[0];
    if let Some(r) = &t.reconciliation {
        eprintln!(
            "{}: {:?}; deleted at the source {}, reconciliation {:?} (missing {}, extra {}, changed {}, {} rows \
             reloaded); source {:?} rows, target {:?}",
            t.table,
            t.status,
            t.keys.as_ref().map_or(0, |k| k.deleted_at_source),
            r.status,
            r.missing_in_target,
            r.extra_in_target,
            r.changed_in_target,
            r.reloaded_rows,
            t.source_count,
            t.target_count
        );
    }
    report.into_result()?;
    Ok(())
}
