//! Scenarios every warehouse sink runs (Postgres, Redshift with Postgres standing in,
//! Snowflake on its emulator), with the same data and the same expected rows.

use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray, Int64Array, StringArray, TimestampMicrosecondArray};
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use etl_core::conformance::unique;
use etl_core::{
    LoadMode, Location, MemorySource, MergeStrategy, ObjectStoreWatermarkStore, Pipeline, Sink, TableSpec, TableStatus,
    TargetLost, WatermarkStore,
};

/// A warehouse under test: a sink into a schema of the test's own, and its rows read back.
#[async_trait]
pub(crate) trait Warehouse: Send + Sync {
    /// A sink writing into the test's schema.
    fn sink(&self) -> Arc<dyn Sink>;

    /// The test's schema, as given to the sink.
    fn schema(&self) -> &str;

    /// Every row of `table` in the test's schema (or of `schema.table`), rendered sorted.
    async fn rows(&self, table: &str) -> String;

    /// Runs a statement behind the sink's back; `$S` is the test's schema.
    async fn exec(&self, sql: &str);

    /// What the sink staged and left: staging tables of shards, staged files.
    async fn leftovers(&self) -> usize;
}

/// Customers `(id, name, hours after 2025-07-01 00:00)` as `customer_id, name, updated_at`.
pub(crate) fn customers(rows: &[(i64, &str, i64)]) -> RecordBatch {
    let base = chrono::NaiveDate::from_ymd_opt(2025, 7, 1)
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc()
        .timestamp_micros();
    let cols: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(rows.iter().map(|r| r.0).collect::<Vec<_>>())),
        Arc::new(StringArray::from(rows.iter().map(|r| r.1).collect::<Vec<_>>())),
        Arc::new(TimestampMicrosecondArray::from(
            rows.iter().map(|r| base + r.2 * 3_600_000_000).collect::<Vec<_>>(),
        )),
    ];
    RecordBatch::try_from_iter(["customer_id", "name", "updated_at"].into_iter().zip(cols)).unwrap()
}

/// `customers` merged by `customer_id`, latest by `updated_at`.
pub(crate) fn customers_upsert() -> TableSpec {
    TableSpec::new("customers")
        .mode(LoadMode::Upsert)
        .primary_key(["customer_id"])
        .cursor(["updated_at"])
        .processed_at(false)
}

/// The crash tests' table: `events` of `conformance::sample_batch`, by `id`, in `mode`.
pub(crate) fn crash_table(mode: LoadMode) -> TableSpec {
    TableSpec::new("events")
        .mode(mode)
        .primary_key(["id"])
        .cursor(["updated_at"])
        .processed_at(false)
}

/// The seed's walkthrough: customers 1–10, then a drop with 11–15 where key 15 appears twice
/// (and key 3 changes); one row per key, the later one; a rerun of the window changes
/// nothing. Returns the first run's staged file count.
pub(crate) async fn seed_upsert(wh: &dyn Warehouse) -> u64 {
    let source = Arc::new(MemorySource::new());
    let day1: Vec<(i64, String, i64)> = (1..=10).map(|i| (i, format!("customer {i}"), 1)).collect();
    let day1: Vec<(i64, &str, i64)> = day1.iter().map(|(i, n, h)| (*i, n.as_str(), *h)).collect();
    source.append("customers", customers(&day1)).unwrap();
    let pipeline = Pipeline::builder("crm")
        .source_arc(source.clone())
        .sink_arc(wh.sink())
        .watermarks(ObjectStoreWatermarkStore::new(Location::memory()))
        .table(customers_upsert())
        .build()
        .unwrap();
    let r = pipeline.run().await.unwrap().into_result().unwrap();
    let t = r.table("customers").unwrap();
    assert_eq!(
        (t.inserted_count, t.updated_count, t.target_count, t.difference),
        (10, 0, Some(10), Some(0))
    );
    let files = t.files_written;
    // Day 2: 11–15, key 15 twice (the later by cursor wins, whatever the order), key 3 changed.
    source
        .append(
            "customers",
            customers(&[
                (11, "c11", 2),
                (15, "c15 late", 4),
                (12, "c12", 2),
                (13, "c13", 2),
                (14, "c14", 2),
                (15, "c15 early", 3),
                (3, "customer 3 renamed", 2),
            ]),
        )
        .unwrap();
    let r = pipeline.run().await.unwrap().into_result().unwrap();
    let t = r.table("customers").unwrap();
    assert_eq!(
        (
            t.extracted_count,
            t.collapsed_count,
            t.inserted_count,
            t.updated_count,
            t.target_count
        ),
        (7, 1, 5, 1, Some(15))
    );
    let rows = wh.rows("customers").await;
    assert!(rows.contains("| 15          | c15 late           |"), "{rows}");
    assert!(rows.contains("| 3           | customer 3 renamed |"), "{rows}");
    assert_eq!(rows.lines().count(), 15 + 4, "one row per key: {rows}");
    let r = pipeline.run().await.unwrap();
    assert_eq!(r.table("customers").unwrap().status, TableStatus::NoNewData);
    assert_eq!(wh.rows("customers").await, rows);
    files
}

/// The three merge strategies on a composite key, with a soft-delete column: a key changed
/// twice in one batch (the later version wins), one deleted, one new.
pub(crate) async fn merge_strategies(wh: &dyn Warehouse) {
    let batch = |rows: &[(&str, i64, &str, i64, bool)]| {
        RecordBatch::try_from_iter([
            (
                "region",
                Arc::new(StringArray::from(rows.iter().map(|r| r.0).collect::<Vec<_>>())) as ArrayRef,
            ),
            (
                "id",
                Arc::new(Int64Array::from(rows.iter().map(|r| r.1).collect::<Vec<_>>())) as ArrayRef,
            ),
            (
                "name",
                Arc::new(StringArray::from(rows.iter().map(|r| r.2).collect::<Vec<_>>())) as ArrayRef,
            ),
            (
                "version",
                Arc::new(Int64Array::from(rows.iter().map(|r| r.3).collect::<Vec<_>>())) as ArrayRef,
            ),
            (
                "is_deleted",
                Arc::new(BooleanArray::from(rows.iter().map(|r| r.4).collect::<Vec<_>>())) as ArrayRef,
            ),
        ])
        .unwrap()
    };
    for (strategy, table) in [
        (MergeStrategy::UpdateInsert, "ui"),
        (MergeStrategy::DeleteInsert, "di"),
        (MergeStrategy::InsertOnly, "io"),
    ] {
        let source = Arc::new(MemorySource::new());
        source
            .append(
                table,
                batch(&[
                    ("eu", 1, "a", 1, false),
                    ("eu", 2, "b", 1, false),
                    ("us", 1, "c", 1, false),
                ]),
            )
            .unwrap();
        let p = Pipeline::builder(unique("m"))
            .source_arc(source.clone())
            .sink_arc(wh.sink())
            .watermarks(ObjectStoreWatermarkStore::new(Location::memory()))
            .table(
                TableSpec::new(table)
                    .mode(LoadMode::Upsert)
                    .primary_key(["region", "id"])
                    .cursor(["version"])
                    .merge_strategy(strategy)
                    .soft_delete("is_deleted")
                    .processed_at(false),
            )
            .build()
            .unwrap();
        p.run().await.unwrap().into_result().unwrap();
        // eu/2 changes (twice: the later version wins), us/1 is deleted, us/2 arrives.
        source
            .append(
                table,
                batch(&[
                    ("eu", 2, "b3", 3, false),
                    ("us", 1, "c", 2, true),
                    ("eu", 2, "b2", 2, false),
                    ("us", 2, "d", 2, false),
                ]),
            )
            .unwrap();
        let r = p.run().await.unwrap().into_result().unwrap();
        let t = &r.tables[0];
        let insert_only = strategy == MergeStrategy::InsertOnly;
        let (updated, kept_b, version) = if insert_only { (0, "b ", 1) } else { (1, "b3", 3) };
        assert_eq!(
            (
                t.collapsed_count,
                t.inserted_count,
                t.updated_count,
                t.deleted_count,
                t.target_count
            ),
            (1, 1, updated, 1, Some(3)),
            "{strategy:?}"
        );
        assert_eq!(
            wh.rows(table).await,
            format!(
                "+--------+----+------+---------+------------+\n\
                 | region | id | name | version | is_deleted |\n\
                 +--------+----+------+---------+------------+\n\
                 | eu     | 1  | a    | 1       | false      |\n\
                 | eu     | 2  | {kept_b}   | {version}       | false      |\n\
                 | us     | 2  | d    | 2       | false      |\n\
                 +--------+----+------+---------+------------+"
            ),
            "{strategy:?}"
        );
    }
}

/// A target that names its schema (`<test schema>_x.orders`) lands there, in a schema created
/// for it, in a merging and a replacing mode; the checkpoint stays in the sink's schema, so
/// the second run merges and the rerun finds nothing new.
pub(crate) async fn schema_qualified_target(wh: &dyn Warehouse) {
    let other = format!("{}_x", wh.schema());
    let source = Arc::new(MemorySource::new());
    source
        .append("customers", customers(&[(1, "a", 1), (2, "b", 1)]))
        .unwrap();
    source.append("snapshot", customers(&[(7, "s", 1)])).unwrap();
    let pipeline = Pipeline::builder(unique("q"))
        .source_arc(source.clone())
        .sink_arc(wh.sink())
        .watermarks(ObjectStoreWatermarkStore::new(Location::memory()))
        .table(customers_upsert().target(format!("{other}.orders")))
        .table(
            TableSpec::new("snapshot")
                .mode(LoadMode::Full)
                .target(format!("{other}.snapshot"))
                .processed_at(false),
        )
        .build()
        .unwrap();
    pipeline.run().await.unwrap().into_result().unwrap();
    source
        .append("customers", customers(&[(2, "b2", 2), (3, "c", 2)]))
        .unwrap();
    let r = pipeline.run().await.unwrap().into_result().unwrap();
    let t = r.table("customers").unwrap();
    assert_eq!((t.inserted_count, t.updated_count, t.target_count), (1, 1, Some(3)));
    // Timestamps render as each warehouse's reader shows them: ids and names are compared.
    let rows = wh.rows(&format!("{other}.orders")).await;
    let kept: Vec<&str> = rows
        .lines()
        .filter(|l| l.starts_with("| ") && !l.contains("customer_id"))
        .collect();
    assert_eq!(kept.len(), 3, "{rows}");
    for (row, want) in kept.iter().zip([
        "| 1           | a    |",
        "| 2           | b2   |",
        "| 3           | c    |",
    ]) {
        assert!(row.starts_with(want), "{rows}");
    }
    assert!(
        wh.rows(&format!("{other}.snapshot"))
            .await
            .contains("| 7           | s    |")
    );
    let r = pipeline.run().await.unwrap();
    assert_eq!(r.table("customers").unwrap().status, TableStatus::NoNewData);
}

/// A target that lost its rows behind the sink's back — the table dropped, truncated, or its
/// schema dropped with the checkpoints — is detected by the next incremental run, which fails
/// naming what disagrees and writes nothing; with `TargetLost::Reload` the run reloads the
/// table in full instead. `watermarks` makes the store (each damage gets a fresh pipeline).
pub(crate) async fn target_lost_is_detected(
    wh: &dyn Warehouse,
    damages: &[(&str, &str)],
    watermarks: &(dyn Fn() -> Arc<dyn WatermarkStore> + Sync),
) {
    for (damage, expected) in damages {
        let source = Arc::new(MemorySource::new());
        source
            .append("customers", customers(&[(1, "a", 1), (2, "b", 1)]))
            .unwrap();
        let store = watermarks();
        let pipeline = |policy: TargetLost| {
            Pipeline::builder(format!("lost_{}", wh.schema()))
                .source_arc(source.clone())
                .sink_arc(wh.sink())
                .watermarks_arc(store.clone())
                .table(customers_upsert().on_target_lost(policy))
                .build()
                .unwrap()
        };
        pipeline(TargetLost::Fail).run().await.unwrap().into_result().unwrap();
        wh.exec(damage).await;
        source.append("customers", customers(&[(3, "c", 2)])).unwrap();
        let r = pipeline(TargetLost::Fail).run().await.unwrap();
        let t = r.table("customers").unwrap();
        assert_eq!(t.status, TableStatus::Failed, "{damage}: {t:?}");
        let err = t.error.as_deref().unwrap();
        assert!(
            err.contains(expected) && err.contains("LoadMode::Full"),
            "{damage}: {err}"
        );
        assert_eq!(t.watermark_after, t.watermark_before, "{damage}");
        // Reloaded in full by the policy: every source row, once.
        let r = pipeline(TargetLost::Reload).run().await.unwrap().into_result().unwrap();
        let t = r.table("customers").unwrap();
        assert_eq!(
            (t.status, t.mode, t.target_count),
            (TableStatus::Committed, LoadMode::Full, Some(3)),
            "{damage}"
        );
        assert!(
            t.warnings.iter().any(|w| w.contains("reloaded in full")),
            "{:?}",
            t.warnings
        );
        let rows = wh.rows("customers").await;
        for id in ["| 1 ", "| 2 ", "| 3 "] {
            assert_eq!(rows.matches(id).count(), 1, "{damage}: {rows}");
        }
        let r = pipeline(TargetLost::Fail).run().await.unwrap().into_result().unwrap();
        assert_eq!(r.table("customers").unwrap().status, TableStatus::NoNewData, "{damage}");
    }
}

/// The damages every warehouse is checked against, with what the error says.
pub(crate) const DAMAGES: &[(&str, &str)] = &[
    ("DROP TABLE $S.customers", "does not exist (dropped)"),
    ("TRUNCATE TABLE $S.customers", "is empty, though run"),
    ("DROP SCHEMA $S CASCADE", "keeps no checkpoint"),
];

/// A Postgres client for the sources of a scenario, its URL, and a fresh schema name.
async fn source_schema(prefix: &str) -> (tokio_postgres::Client, String, String) {
    let url = std::env::var("ETL_TEST_PG").unwrap_or_else(|_| {
        panic!("ETL_TEST_PG is not set: run `scripts/services.sh start` and `eval \"$(scripts/services.sh env)\"`")
    });
    let (pg, c) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(c);
    (pg, url, unique(prefix))
}

/// A Postgres source schema holding `items (id, name, updated_at)` with ids `1..=rows`.
async fn items_source(prefix: &str, rows: i64) -> (tokio_postgres::Client, String, String) {
    let (pg, url, src) = source_schema(prefix).await;
    pg.batch_execute(&format!(
        "CREATE SCHEMA {src}; CREATE TABLE {src}.items (id bigint PRIMARY KEY, name text, updated_at timestamp NOT NULL);
         INSERT INTO {src}.items SELECT i, 'n' || i, '2025-07-01'::timestamp + i * interval '1 minute'
           FROM generate_series(1, {rows}) i;"
    ))
    .await
    .unwrap();
    (pg, url, src)
}

/// An UPSERT of the source's `items` into the warehouse, finding deletes as `deletes` says.
fn items_pipeline(wh: &dyn Warehouse, name: &str, url: &str, src: &str, deletes: etl_core::Deletes) -> Pipeline {
    Pipeline::builder(format!("{name}_{}", wh.schema()))
        .source(etl_connectors::postgres::PostgresSource::new(url).unwrap())
        .sink_arc(wh.sink())
        .watermarks(ObjectStoreWatermarkStore::new(
            Location::local(std::env::temp_dir().join(src)).unwrap(),
        ))
        .table(
            TableSpec::new("items")
                .from_table(format!("{src}.items"))
                .mode(LoadMode::Upsert)
                .primary_key(["id"])
                .cursor(["updated_at"])
                .processed_at(false)
                .detect_deletes(deletes),
        )
        .build()
        .unwrap()
}

/// Rows deleted at a Postgres source leave the warehouse target, found without CDC by key
/// digests: a few deletes are applied and counted; a mass delete is refused by the guard and
/// deletes nothing; a run whose source fails deletes nothing; a guard raised lets it through.
pub(crate) async fn deletes_reach_the_target(wh: &dyn Warehouse) {
    use etl_core::{Deletes, Error};
    let (pg, url, src) = items_source("del_src", 200).await;
    let sql = |s: &str| s.replace("$Q", &src);
    let pipeline = |share: f64| {
        let deletes = Deletes {
            max_share: share,
            ranges: 16,
            mark: false,
        };
        items_pipeline(wh, "del", &url, &src, deletes)
    };
    let ids = || async {
        let rows = wh.rows("items").await;
        rows.lines()
            .filter(|l| l.starts_with("| ") && !l.contains(" id "))
            .filter_map(|l| l.split('|').nth(1)?.trim().parse::<i64>().ok())
            .collect::<Vec<_>>()
    };
    let r = pipeline(0.05).run().await.unwrap().into_result().unwrap();
    let t = r.table("items").unwrap();
    assert_eq!((t.written_count, t.deleted_count), (200, 0));
    assert_eq!(t.keys.as_ref().unwrap().ranges_differing, 0, "{t:?}");

    pg.batch_execute(&sql("DELETE FROM $Q.items WHERE id IN (7, 50, 51)"))
        .await
        .unwrap();
    let r = pipeline(0.05).run().await.unwrap().into_result().unwrap();
    let t = r.table("items").unwrap();
    let keys = t.keys.as_ref().unwrap();
    assert_eq!(
        (t.status, t.deleted_count, keys.deleted_at_source),
        (TableStatus::NoNewData, 3, 3),
        "{t:?}"
    );
    assert!(
        keys.ranges_differing <= 2 && keys.keys_read < 100,
        "only the differing ranges are read: {keys:?}"
    );
    assert_eq!(t.target_count, Some(197));
    let left = ids().await;
    assert_eq!(left.len(), 197);
    assert!(!left.contains(&7) && !left.contains(&50) && !left.contains(&51));

    // 51 of 197 rows (26 %) gone: the guard refuses, nothing is deleted.
    pg.batch_execute(&sql("DELETE FROM $Q.items WHERE id BETWEEN 100 AND 150"))
        .await
        .unwrap();
    let r = pipeline(0.05).run().await.unwrap();
    let t = r.table("items").unwrap();
    assert_eq!(t.status, TableStatus::Failed);
    assert!(
        t.error.as_deref().unwrap().contains("51 of the target's 197 rows"),
        "{t:?}"
    );
    assert_eq!(ids().await.len(), 197);

    // A source that fails deletes nothing.
    pg.batch_execute(&sql("ALTER TABLE $Q.items RENAME TO gone"))
        .await
        .unwrap();
    let err = pipeline(1.0).run().await.unwrap_err();
    assert!(matches!(err, Error::TableNotFound { .. }), "{err}");
    assert_eq!(ids().await.len(), 197);
    pg.batch_execute(&sql("ALTER TABLE $Q.gone RENAME TO items"))
        .await
        .unwrap();

    // Told to, the run deletes them.
    let r = pipeline(1.0).run().await.unwrap().into_result().unwrap();
    assert_eq!(r.table("items").unwrap().deleted_count, 51);
    assert_eq!(ids().await.len(), 146);
    pg.batch_execute(&sql("DROP SCHEMA $Q CASCADE")).await.unwrap();
}

/// Rows removed, changed and added in the target behind the library's back: reconciliation
/// finds them (keys, counts and the content of every column type), reports them, fails the
/// table before its watermark moves, and repairs them by reloading only their key ranges.
pub(crate) async fn reconciliation_finds_and_repairs(wh: &dyn Warehouse) {
    use etl_core::{Reconcile, ReconcilePolicy, ReconcileStatus};
    let (pg, url, src) = source_schema("rec_src").await;
    let sql = |s: &str| s.replace("$Q", &src);
    pg.batch_execute(&sql("CREATE SCHEMA $Q;
         CREATE TABLE $Q.items (id bigint PRIMARY KEY, name text, price numeric(10,2), qty int, day date,
           active boolean, score double precision, updated_at timestamp NOT NULL);
         INSERT INTO $Q.items SELECT i, CASE WHEN i % 7 = 0 THEN NULL ELSE 'n' || i END, i * 1.25, i % 5,
           DATE '2025-01-01' + i, i % 2 = 0, i / 8.0, '2025-07-01'::timestamp + i * interval '1.5 second'
           FROM generate_series(1, 300) i;"))
        .await
        .unwrap();
    let store_dir = std::env::temp_dir().join(&src);
    let store = || ObjectStoreWatermarkStore::new(Location::local(&store_dir).unwrap());
    let name = format!("rec_{}", wh.schema());
    let pipeline = |policy: ReconcilePolicy| {
        Pipeline::builder(&name)
            .source(etl_connectors::postgres::PostgresSource::new(&url).unwrap())
            .sink_arc(wh.sink())
            .watermarks(store())
            .table(
                TableSpec::new("items")
                    .from_table(format!("{src}.items"))
                    .mode(LoadMode::Upsert)
                    .primary_key(["id"])
                    .cursor(["updated_at"])
                    .processed_at(false)
                    .reconcile(Reconcile {
                        ranges: 128,
                        ..Reconcile::new(policy).content([
                            "name",
                            "price",
                            "qty",
                            "day",
                            "active",
                            "score",
                            "updated_at",
                        ])
                    }),
            )
            .build()
            .unwrap()
    };
    let rows = || async {
        let rows = wh.rows("items").await;
        rows.lines()
            .filter(|l| l.starts_with("| ") && !l.to_lowercase().contains(" id "))
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase())
            .collect::<Vec<_>>()
    };
    let r = pipeline(ReconcilePolicy::Report)
        .run()
        .await
        .unwrap()
        .into_result()
        .unwrap();
    let t = r.table("items").unwrap();
    let rec = t.reconciliation.as_ref().unwrap();
    assert_eq!(
        (rec.status, rec.source_rows, rec.target_rows),
        (ReconcileStatus::Reconciled, 300, 300),
        "every column's content hashes alike in source and target: {t:?}"
    );
    assert_eq!(t.difference, Some(0));
    let loaded = rows().await;
    assert_eq!(loaded.len(), 300);

    // Behind the library's back: three rows removed, two changed, one added.
    wh.exec("DELETE FROM $S.items WHERE id IN (10, 11, 200)").await;
    wh.exec("UPDATE $S.items SET name = 'changed' WHERE id = 50").await;
    wh.exec("UPDATE $S.items SET price = 1.5, day = NULL WHERE id = 120")
        .await;
    wh.exec(
        "INSERT INTO $S.items (id, name, price, qty, day, active, score, updated_at) \
         VALUES (1000, 'extra', 1, 1, '2025-01-01', TRUE, 0.5, '2025-01-01 00:00:00')",
    )
    .await;
    let damaged = rows().await;
    let r = pipeline(ReconcilePolicy::Report)
        .run()
        .await
        .unwrap()
        .into_result()
        .unwrap();
    let t = r.table("items").unwrap();
    let rec = t.reconciliation.as_ref().unwrap();
    assert_eq!(t.status, TableStatus::NoNewData);
    assert_eq!(
        (
            rec.status,
            rec.missing_in_target,
            rec.extra_in_target,
            rec.changed_in_target
        ),
        (ReconcileStatus::Mismatched, 3, 1, 2),
        "{t:?}"
    );
    assert_eq!((rec.source_rows, rec.target_rows, t.difference), (300, 298, Some(2)));
    assert!(
        rec.mismatched.iter().any(|(lo, hi)| *lo <= 1000 && 1000 <= *hi),
        "{rec:?}"
    );
    assert!(t.warnings.iter().any(|w| w.contains("does not reconcile")), "{t:?}");
    assert_eq!(rows().await, damaged, "a report changes nothing");

    // Fail: a new source row commits to the target, but the watermark does not move.
    pg.batch_execute(&sql(
        "INSERT INTO $Q.items VALUES (301, 'new', 3, 3, '2026-01-01', TRUE, 1.0, '2025-07-02 00:00:00')",
    ))
    .await
    .unwrap();
    let before = store().load(&name, "items").await.unwrap().unwrap();
    let r = pipeline(ReconcilePolicy::Fail).run().await.unwrap();
    let t = r.table("items").unwrap();
    assert_eq!(t.status, TableStatus::Failed);
    assert!(
        t.error
            .as_deref()
            .unwrap()
            .contains("does not reconcile: 3 keys missing from the target, 1 extra"),
        "{t:?}"
    );
    let after = store().load(&name, "items").await.unwrap().unwrap();
    assert_eq!((after.generation, after.run_id), (before.generation, before.run_id));
    let err = pipeline(ReconcilePolicy::Fail)
        .run()
        .await
        .unwrap()
        .into_result()
        .unwrap_err();
    assert!(err.to_string().contains("does not reconcile"), "{err}");

    // Repair: only the mismatched ranges are reloaded; the extra key is deleted.
    let r = pipeline(ReconcilePolicy::Repair)
        .run()
        .await
        .unwrap()
        .into_result()
        .unwrap();
    let t = r.table("items").unwrap();
    let rec = t.reconciliation.as_ref().unwrap();
    assert_eq!(rec.status, ReconcileStatus::Repaired, "{t:?}");
    assert_eq!(rec.deleted_keys, 1);
    assert_eq!(
        rec.reloaded_rows, 5,
        "only keys 10, 11, 50, 120 and 200 are reloaded: {rec:?}"
    );
    assert_eq!(t.target_count, Some(301), "{t:?}");
    let wm = store().load(&name, "items").await.unwrap().unwrap();
    assert!(wm.position.cursor.is_some() && wm.generation > after.generation);
    let now = rows().await;
    let mut unlike: Vec<&String> = now.iter().filter(|r| !loaded.contains(r)).collect();
    unlike.extend(loaded.iter().filter(|r| !now.contains(r)));
    assert_eq!(now.len(), 301);
    assert!(
        unlike.len() == 1 && unlike[0].starts_with("| 301 | new |"),
        "the target holds the source's rows again, and row 301: {unlike:?}"
    );

    let r = pipeline(ReconcilePolicy::Report)
        .run()
        .await
        .unwrap()
        .into_result()
        .unwrap();
    let t = r.table("items").unwrap();
    assert_eq!(
        (t.status, t.reconciliation.as_ref().unwrap().status, t.difference),
        (TableStatus::NoNewData, ReconcileStatus::Reconciled, Some(0)),
        "{t:?}"
    );
    assert_eq!(
        store().load(&name, "items").await.unwrap().unwrap().generation,
        wm.generation
    );
    pg.batch_execute(&sql("DROP SCHEMA $Q CASCADE")).await.unwrap();
}

/// Under `Deletes::mark`, rows deleted at the source stay in the target with
/// `_etl_deleted_at` set; later comparisons leave them out, and a key the source brings again
/// loses its mark.
pub(crate) async fn marked_deletes_keep_their_rows(wh: &dyn Warehouse) {
    use etl_core::Deletes;
    let (pg, url, src) = items_source("mark_src", 60).await;
    let sql = |s: &str| s.replace("$Q", &src);
    let deletes = Deletes {
        ranges: 16,
        mark: true,
        ..Default::default()
    };
    let p = items_pipeline(wh, "mark", &url, &src, deletes);
    // Every row as `id marked?`, sorted by id.
    let marks = || async {
        let rows = wh.rows("items").await;
        let mut out: Vec<(i64, bool)> = rows
            .lines()
            .filter(|l| l.starts_with("| ") && !l.to_lowercase().contains(" id "))
            .filter_map(|l| {
                let cells: Vec<&str> = l.split('|').map(str::trim).collect();
                Some((cells.get(1)?.parse().ok()?, !cells.get(4)?.is_empty()))
            })
            .collect();
        out.sort_unstable();
        out
    };
    p.run().await.unwrap().into_result().unwrap();
    pg.batch_execute(&sql("DELETE FROM $Q.items WHERE id IN (2, 40)"))
        .await
        .unwrap();
    let r = p.run().await.unwrap().into_result().unwrap();
    let t = r.table("items").unwrap();
    assert_eq!((t.deleted_count, t.target_count), (2, Some(58)), "{t:?}");
    let m = marks().await;
    assert_eq!(m.len(), 60, "marked rows stay: {m:?}");
    let marked: Vec<i64> = m.iter().filter(|(_, x)| *x).map(|(k, _)| *k).collect();
    assert_eq!(marked, vec![2, 40]);
    // Marked rows are no longer the target's: nothing is marked twice.
    let r = p.run().await.unwrap().into_result().unwrap();
    let t = r.table("items").unwrap();
    assert_eq!(
        (t.deleted_count, t.keys.as_ref().unwrap().ranges_differing),
        (0, 0),
        "{t:?}"
    );
    // Brought again by the source: its mark is cleared.
    pg.batch_execute(&sql("INSERT INTO $Q.items VALUES (40, 'back', '2025-08-01 00:00:00')"))
        .await
        .unwrap();
    let r = p.run().await.unwrap().into_result().unwrap();
    let t = r.table("items").unwrap();
    assert_eq!(
        (t.written_count, t.keys.as_ref().unwrap().ranges_differing),
        (1, 0),
        "{t:?}"
    );
    let marked: Vec<i64> = marks().await.iter().filter(|(_, x)| *x).map(|(k, _)| *k).collect();
    assert_eq!(marked, vec![2]);
    pg.batch_execute(&sql("DROP SCHEMA $Q CASCADE")).await.unwrap();
}

/// A file table whose every drop holds the whole table (`FileDrops::Newest`): the keys
/// missing from the newest drop leave the target, its changed rows are merged, and the
/// target reconciles with the drop; a drop with a row that cannot be parsed deletes nothing.
pub(crate) async fn a_complete_drop_deletes_the_keys_it_lacks(wh: &dyn Warehouse) {
    use etl_connectors::files::FileSource;
    use etl_core::{BadRows, Deletes, FileDrops, FileFormat, Reconcile, ReconcilePolicy, ReconcileStatus};
    let dir = tempfile::tempdir().unwrap();
    let drop = |day: &str, file: &str, ids: &[i64], extra: &str| {
        let mut body = String::from("customer_id,name,updated_at\n");
        for i in ids {
            let name = if *i == 5 && day != "2026-11-30" {
                "five renamed".to_string()
            } else {
                format!("c{i}")
            };
            body.push_str(&format!("{i},{name},2026-11-30 0{}:00:00\n", i % 10));
        }
        body.push_str(extra);
        let path = dir.path().join("drops").join(day).join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, body).unwrap();
        // Each drop newer than the last, whatever the file system's clock resolution.
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let pipeline = Pipeline::builder(format!("drops_{}", wh.schema()))
        .source(FileSource::new(Location::local(dir.path()).unwrap()))
        .sink_arc(wh.sink())
        .watermarks(ObjectStoreWatermarkStore::new(Location::memory()))
        .table(
            TableSpec::new("customers")
                .from_files("drops", FileFormat::csv())
                .file_drops(FileDrops::Newest)
                .mode(LoadMode::Upsert)
                .primary_key(["customer_id"])
                .processed_at(false)
                .bad_rows(BadRows::Divert)
                .detect_deletes(Deletes {
                    max_share: 0.5,
                    ranges: 16,
                    mark: false,
                })
                .reconcile(Reconcile::new(ReconcilePolicy::Report).content(["name", "updated_at"])),
        )
        .build()
        .unwrap();
    let ids = || async {
        let rows = wh.rows("customers").await;
        let mut ids: Vec<i64> = rows
            .lines()
            .filter(|l| l.starts_with("| "))
            .filter_map(|l| l.split('|').nth(1)?.trim().parse::<i64>().ok())
            .collect();
        ids.sort_unstable();
        (ids, rows)
    };
    drop("2026-11-30", "part-1.csv", &[1, 2, 3, 4, 5, 6], "");
    drop("2026-11-30", "part-2.csv", &[7, 8, 9, 10, 11, 12], "");
    let r = pipeline.run().await.unwrap().into_result().unwrap();
    let t = r.table("customers").unwrap();
    assert_eq!(
        (
            t.written_count,
            t.deleted_count,
            t.reconciliation.as_ref().unwrap().status
        ),
        (12, 0, ReconcileStatus::Reconciled),
        "{t:?}"
    );

    // The next day's drop lacks keys 4 and 9 and renames 5; the older drop stays in place.
    let day2: Vec<i64> = (1..=12).filter(|i| ![4, 9].contains(i)).collect();
    drop("2026-12-01", "all.csv", &day2, "");
    let r = pipeline.run().await.unwrap().into_result().unwrap();
    let t = r.table("customers").unwrap();
    let keys = t.keys.as_ref().unwrap();
    assert_eq!(
        (
            t.extracted_count,
            t.deleted_count,
            keys.deleted_at_source,
            t.target_count
        ),
        (10, 2, 2, Some(10)),
        "only the newest drop is read and compared: {t:?}"
    );
    assert_eq!(
        t.reconciliation.as_ref().unwrap().status,
        ReconcileStatus::Reconciled,
        "{t:?}"
    );
    let (left, rows) = ids().await;
    assert_eq!(left, day2, "{rows}");
    assert!(rows.contains("five renamed"), "{rows}");

    // A drop with a row that cannot be parsed: its key is unknown, so nothing is deleted
    // (key 10, missing from it, stays), and the run says which line.
    let day3: Vec<i64> = day2.iter().copied().filter(|i| *i != 10).collect();
    drop("2026-12-02", "all.csv", &day3, "13,a row of two fields\n");
    let r = pipeline.run().await.unwrap();
    let t = r.table("customers").unwrap();
    assert_eq!(t.status, TableStatus::Failed, "{t:?}");
    assert!(t.error.as_deref().unwrap().contains("2026-12-02/all.csv"), "{t:?}");
    assert_eq!(t.rejected_count, 1, "the run diverted the row: {t:?}");
    let (left, rows) = ids().await;
    assert_eq!(left, day2, "nothing deleted: {rows}");
}

/// A shard plan into a warehouse: each shard stages on its own (Postgres: a table of its
/// own; Redshift and Snowflake: Parquet files in a folder of its own); nothing reaches the
/// target before the commit, which moves every shard's rows in one transaction (an UPSERT
/// merging the changed keys) and removes what the plan's shards staged, an attempt's that
/// never recorded its manifest too. The target equals one process's run of the same rows.
pub(crate) async fn shard_plan_commits_in_one_transaction(wh: &dyn Warehouse) {
    use etl_core::shard::{PlanDir, ShardSizing};
    use etl_core::{ModeOverrides, TargetState};
    let source = Arc::new(MemorySource::new());
    let rows: Vec<(i64, String, i64)> = (1..=300).map(|i| (i, format!("c{i}"), i % 24)).collect();
    let named: Vec<(i64, &str, i64)> = rows.iter().map(|(i, n, h)| (*i, n.as_str(), *h)).collect();
    source.append("customers", customers(&named)).unwrap();
    let pipeline = |name: &str, target: &str| {
        Pipeline::builder(name)
            .source_arc(source.clone())
            .sink_arc(wh.sink())
            .watermarks(ObjectStoreWatermarkStore::new(Location::memory()))
            .table(customers_upsert().target(target))
            .build()
            .unwrap()
    };
    let p = pipeline("sharded", "customers");
    // One process's runs of the same rows, for comparison.
    let one = pipeline("unsharded", "customers_one");
    let plans = Location::memory();
    let spec = customers_upsert();
    let plan = p
        .plan_shards("customers", ShardSizing::Count(3), &ModeOverrides::new())
        .await
        .unwrap();
    assert_eq!(plan.shards.len(), 3);
    let dir = PlanDir::create(&plans, &plan).await.unwrap();
    for i in [2, 0, 1] {
        assert!(p.run_shard(&dir, i).await.unwrap().recorded);
    }
    assert!(
        !p.run_shard(&dir, 1).await.unwrap().recorded,
        "a shard run twice stages once"
    );
    assert_eq!(wh.leftovers().await, 3, "one staging table or folder per shard");
    assert_eq!(
        wh.sink().target_state(&spec).await.unwrap(),
        TargetState::Missing,
        "nothing in the target before the commit"
    );
    let r = p.commit_shards(&dir).await.unwrap();
    let t = r.table("customers").unwrap();
    assert_eq!(
        (t.written_count, t.target_count, t.inserted_count),
        (300, Some(300), 300),
        "{t:?}"
    );
    one.run().await.unwrap().into_result().unwrap();
    let got = wh.rows("customers").await;
    assert_eq!(got.lines().count(), 300 + 4, "{got}");
    assert_eq!(got, wh.rows("customers_one").await);
    assert_eq!(wh.leftovers().await, 0);
    assert_eq!(p.watermark("customers").await.unwrap().unwrap().run_id, plan.id);

    // Ten keys change and five arrive; an attempt stages shard 0 and dies before recording.
    let changed: Vec<(i64, String, i64)> = (1..=10)
        .map(|i| (i, format!("changed{i}"), 100))
        .chain((301..=305).map(|i| (i, format!("new{i}"), 100)))
        .collect();
    let named: Vec<(i64, &str, i64)> = changed.iter().map(|(i, n, h)| (*i, n.as_str(), *h)).collect();
    source.append("customers", customers(&named)).unwrap();
    let plan = p
        .plan_shards("customers", ShardSizing::Count(2), &ModeOverrides::new())
        .await
        .unwrap();
    let dir = PlanDir::create(&plans, &plan).await.unwrap();
    let sink = wh.sink();
    let mut dead = sink
        .shard_sink()
        .unwrap()
        .begin_shard(etl_core::WriteRequest {
            pipeline: "sharded",
            spec: &spec,
            mode: LoadMode::Upsert,
            run_id: &format!("{}-0-deadbeef0000", plan.id),
            started_at: plan.planned_at,
            last_checkpoint: plan.last_checkpoint.as_deref(),
            watermark_home: None,
        })
        .await
        .unwrap();
    dead.write(customers(&[(1, "never", 100)])).await.unwrap();
    std::mem::forget(dead.stage().await.unwrap());
    assert_eq!(wh.leftovers().await, 1);
    for i in 0..2 {
        p.run_shard(&dir, i).await.unwrap();
    }
    let r = p.commit_shards(&dir).await.unwrap();
    let t = r.table("customers").unwrap();
    assert_eq!(
        (t.written_count, t.updated_count, t.inserted_count, t.target_count),
        (15, 10, 5, Some(305)),
        "{t:?}"
    );
    one.run().await.unwrap().into_result().unwrap();
    let got = wh.rows("customers").await;
    assert!(got.contains("changed10") && !got.contains("never"), "{got}");
    assert_eq!(got, wh.rows("customers_one").await);
    assert_eq!(wh.leftovers().await, 0, "the dead attempt's staging is removed too");
    // Committing again reports the plan done and changes nothing.
    assert!(p.commit_shards(&dir).await.unwrap().tables[0].recovered);
    assert_eq!(wh.rows("customers").await, got);
}

/// Reconciliation checks a shard plan's commit as a whole, as a run's: the first plan's
/// three shards reconcile with the whole source table; rows damaged in the target behind the
/// library's back are found by the next plan's commit and repaired (only their key ranges
/// reloaded), and a plan whose commit does not reconcile under `Fail` leaves the watermark
/// where it was (its commit is rolled forward by the next plan, which finds nothing new and
/// still compares and repairs the target, as a run with nothing new does).
pub(crate) async fn a_shard_plan_is_reconciled_as_a_whole(wh: &dyn Warehouse) {
    use etl_core::shard::{PlanDir, ShardSizing};
    use etl_core::{ModeOverrides, Reconcile, ReconcilePolicy, ReconcileStatus};
    let (pg, url, src) = items_source("plan_rec", 300).await;
    let sql = |s: &str| s.replace("$Q", &src);
    let store_dir = std::env::temp_dir().join(&src);
    let name = format!("plan_rec_{}", wh.schema());
    let pipeline = |policy: ReconcilePolicy| {
        Pipeline::builder(&name)
            .source(etl_connectors::postgres::PostgresSource::new(&url).unwrap())
            .sink_arc(wh.sink())
            .watermarks(ObjectStoreWatermarkStore::new(Location::local(&store_dir).unwrap()))
            .table(
                TableSpec::new("items")
                    .from_table(format!("{src}.items"))
                    .mode(LoadMode::Upsert)
                    .primary_key(["id"])
                    .cursor(["updated_at"])
                    .processed_at(false)
                    .reconcile(Reconcile {
                        ranges: 32,
                        ..Reconcile::new(policy).content(["name"])
                    }),
            )
            .build()
            .unwrap()
    };
    let plans = Location::memory();
    let run_plan = |p: Pipeline, shards: usize| {
        let plans = plans.clone();
        async move {
            let plan = p
                .plan_shards("items", ShardSizing::Count(shards), &ModeOverrides::new())
                .await
                .unwrap();
            let dir = PlanDir::create(&plans, &plan).await.unwrap();
            for i in 0..plan.shards.len() {
                p.run_shard(&dir, i).await.unwrap();
            }
            (p.commit_shards(&dir).await, p)
        }
    };
    let (r, _) = run_plan(pipeline(ReconcilePolicy::Repair), 3).await;
    let r = r.unwrap();
    let t = r.table("items").unwrap();
    let rec = t.reconciliation.as_ref().unwrap();
    assert_eq!(
        (t.status, rec.status, rec.source_rows, rec.target_rows, t.difference),
        (TableStatus::Committed, ReconcileStatus::Reconciled, 300, 300, Some(0)),
        "{t:?}"
    );

    // Behind the library's back: a row removed, one changed; at the source, five new rows.
    wh.exec("DELETE FROM $S.items WHERE id = 10").await;
    wh.exec("UPDATE $S.items SET name = 'changed' WHERE id = 250").await;
    pg.batch_execute(&sql(
        "INSERT INTO $Q.items SELECT i, 'n' || i, '2025-08-01'::timestamp + i * interval '1 minute'
           FROM generate_series(301, 305) i",
    ))
    .await
    .unwrap();
    let (r, p) = run_plan(pipeline(ReconcilePolicy::Fail), 2).await;
    let err = r.unwrap_err().to_string();
    assert!(err.contains("does not reconcile"), "{err}");
    let before = p.watermark("items").await.unwrap().unwrap();
    assert_eq!(
        before.generation, 1,
        "a plan that fails to reconcile moves no watermark"
    );

    let (r, p) = run_plan(pipeline(ReconcilePolicy::Repair), 2).await;
    let r = r.unwrap().into_result().unwrap();
    let t = r.table("items").unwrap();
    let rec = t.reconciliation.as_ref().unwrap();
    assert_eq!(
        (rec.status, rec.missing_in_target, rec.changed_in_target, t.target_count),
        (ReconcileStatus::Repaired, 1, 1, Some(305)),
        "{t:?}"
    );
    // The failed plan's commit rolled forward (2), then the repair's own commit (3).
    assert_eq!(p.watermark("items").await.unwrap().unwrap().generation, 3);
    let rows = wh.rows("items").await;
    assert!(!rows.contains("changed") && rows.contains("n305"), "{rows}");
    assert_eq!(rows.lines().count(), 305 + 4, "{rows}");
    pg.batch_execute(&sql("DROP SCHEMA $Q CASCADE")).await.unwrap();
}
