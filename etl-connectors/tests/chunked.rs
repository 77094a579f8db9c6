//! What every database source must do alike: parallel whole-table reads that read every row
//! once, and chunked incremental reads — many rows on one cursor value split between chunks,
//! a run that dies part way, and the rerun that resumes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arrow::array::{Array, Int32Array};
use arrow::record_batch::RecordBatch;
use etl_core::transform::Transform;
use etl_core::{
    CursorValue, Error, LoadMode, Location, ObjectStoreWatermarkStore, Pipeline, Source, TableSpec, TableStatus,
};
use etl_sinks::lake::LakeSink;

/// Fails a batch holding a given id while armed: a run that dies part way.
#[derive(Debug)]
struct FailOn(i32, Arc<AtomicBool>);

impl Transform for FailOn {
    fn apply(&self, table: &str, batch: RecordBatch) -> Result<RecordBatch, Error> {
        let ids = batch
            .column_by_name("id")
            .unwrap()
            .as_any()
            .downcast_ref::<Int32Array>()
            .unwrap();
        if self.1.load(Ordering::SeqCst) && ids.iter().any(|v| v == Some(self.0)) {
            return Err(Error::config(format!("{table}: injected failure at id {}", self.0)));
        }
        Ok(batch)
    }
}

/// `table` holds `id int` primary key and `ts` timestamp: ids 1–7 at 2025-01-01 00:00 and
/// 8–10 at 2025-01-02 00:00. `add` inserts id 11 at 2025-01-03.
pub async fn resume_at_first_uncommitted_chunk<S, F, Fut>(source: S, table: &str, add: F)
where
    S: Source + Clone,
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let dir = tempfile::tempdir().unwrap();
    let lake = LakeSink::new(Location::local(dir.path()).unwrap());
    let armed = Arc::new(AtomicBool::new(true));
    let pipeline = Pipeline::builder("chunks")
        .source(source.clone())
        .sink(lake.clone())
        .watermarks(ObjectStoreWatermarkStore::new(
            Location::local(dir.path().join("_etl/wm")).unwrap(),
        ))
        .table(
            TableSpec::new("ev")
                .from_table(table)
                .mode(LoadMode::Incremental)
                .cursor(["ts"])
                .primary_key(["id"])
                .chunk_rows(3)
                .transform(FailOn(8, armed.clone())),
        )
        .batch_size(2)
        .build()
        .unwrap();
    let ids = || async {
        let mut ids: Vec<i32> = lake
            .read_table("ev")
            .await
            .unwrap()
            .iter()
            .flat_map(|b| {
                let a = b.column_by_name("id").unwrap();
                a.as_any().downcast_ref::<Int32Array>().unwrap().values().to_vec()
            })
            .collect();
        ids.sort_unstable();
        ids
    };
    let ts1 = CursorValue::Timestamp(
        chrono::NaiveDate::from_ymd_opt(2025, 1, 1)
            .unwrap()
            .and_hms_opt(0, 0, 0)
            .unwrap(),
    );

    // Chunks [1,2,3] and [4,5,6] commit; [7,8,9] fails: the run dies part way.
    let r = pipeline.run().await.unwrap();
    let t = r.table("ev").unwrap();
    assert_eq!(t.status, TableStatus::Failed, "{t:?}");
    assert!(t.error.as_deref().unwrap().contains("injected failure"), "{t:?}");
    assert_eq!((t.written_count, t.chunks), (6, 3));
    let after = t.watermark_after.as_ref().unwrap();
    assert_eq!(
        (after.cursor.as_ref(), after.key.as_deref()),
        (Some(&ts1), Some(&[CursorValue::Int(6)][..])),
        "the watermark holds the (cursor, key) of the last committed row, inside the run of equal cursors"
    );
    assert_eq!(ids().await, (1..=6).collect::<Vec<_>>());

    // The rerun resumes at id 7: [7,8,9] then [10], every row exactly once.
    armed.store(false, Ordering::SeqCst);
    let r = pipeline.run().await.unwrap().into_result().unwrap();
    let t = r.table("ev").unwrap();
    assert_eq!(
        (t.status, t.extracted_count, t.written_count, t.chunks),
        (TableStatus::Committed, 4, 4, 2)
    );
    let after = t.watermark_after.as_ref().unwrap();
    assert_eq!(after.key, None, "the window is read to its end");
    assert_eq!(ids().await, (1..=10).collect::<Vec<_>>());

    let r = pipeline.run().await.unwrap();
    assert_eq!(r.table("ev").unwrap().status, TableStatus::NoNewData);

    add().await;
    let r = pipeline.run().await.unwrap().into_result().unwrap();
    assert_eq!(r.table("ev").unwrap().written_count, 1);
    assert_eq!(ids().await, (1..=11).collect::<Vec<_>>());

    // What chunked reads need is checked when the pipeline is built.
    let err = Pipeline::builder("chunks")
        .source(source)
        .sink(lake)
        .watermarks(ObjectStoreWatermarkStore::new(Location::memory()))
        .table(
            TableSpec::new("ev")
                .from_table(table)
                .mode(LoadMode::Incremental)
                .cursor(["ts"])
                .chunk_rows(3),
        )
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("primary key"), "{err}");
}

/// `table` holds ids 1–5000 (`id` bigint primary key); `source` reads it in 3 parallel
/// ranges. Every row arrives exactly once, and the report counts the chunks.
pub async fn parallel_read_every_row_once<S: Source>(source: S, table: &str) {
    let dir = tempfile::tempdir().unwrap();
    let lake = LakeSink::new(Location::local(dir.path()).unwrap());
    let r = Pipeline::builder("par")
        .source(source)
        .sink(lake.clone())
        .watermarks(ObjectStoreWatermarkStore::new(Location::memory()))
        .table(TableSpec::new("big").from_table(table))
        .batch_size(700)
        .build()
        .unwrap()
        .run()
        .await
        .unwrap()
        .into_result()
        .unwrap();
    let t = r.table("big").unwrap();
    assert_eq!(
        (t.chunks, t.source_count, t.written_count, t.difference),
        (3, Some(5000), 5000, Some(0))
    );
    let mut ids: Vec<i64> = lake
        .read_table("big")
        .await
        .unwrap()
        .iter()
        .flat_map(|b| {
            b.column_by_name("id")
                .unwrap()
                .as_any()
                .downcast_ref::<arrow::array::Int64Array>()
                .unwrap()
                .values()
                .to_vec()
        })
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, (1..=5000).collect::<Vec<i64>>(), "every row exactly once");
}
