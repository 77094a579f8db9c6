//! What every database source must do alike: parallel whole-table reads that read every row
//! once, and chunked incremental reads — many rows on one cursor value split between chunks,
//! a run that dies part way, and the rerun that resumes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arrow::array::{Array, Int32Array};
use arrow::record_batch::RecordBatch;
use etl_core::transform::Transform;
use etl_core::{
    CursorValue, Error, LoadMode, Location, NullCursors, ObjectStoreWatermarkStore, Pipeline, Source, TableSpec,
    TableStatus,
};
use etl_sinks::lake::LakeSink;

/// Fails a batch holding a given id while armed: a run that dies part way.
#[derive(Debug)]
pub struct FailOn(pub i32, pub Arc<AtomicBool>);

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
    let (_dir, lake, wm) = super::temp_lake();
    let armed = Arc::new(AtomicBool::new(true));
    let pipeline = Pipeline::builder("chunks")
        .source(source.clone())
        .sink(lake.clone())
        .watermarks(wm)
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

/// The ids in a lake table, sorted.
async fn lake_ids(lake: &LakeSink, table: &str) -> Vec<i32> {
    let mut ids: Vec<i32> = match lake.read_table(table).await {
        Ok(batches) => batches
            .iter()
            .flat_map(|b| {
                let a = b.column_by_name("id").unwrap();
                a.as_any().downcast_ref::<Int32Array>().unwrap().values().to_vec()
            })
            .collect(),
        Err(_) => Vec::new(),
    };
    ids.sort_unstable();
    ids
}

/// Rows whose cursor is NULL follow one stated rule ([`NullCursors`]), never a silent reload
/// or a silent skip. `nulls` holds `id int` primary key and a nullable timestamp `ts`: ids 1
/// and 2, both NULL. `five` holds ids 1–5, only id 1 with a `ts`. `exec` runs a statement.
pub async fn null_cursors_follow_one_stated_rule<S, F, Fut>(source: S, nulls: &str, five: &str, exec: F)
where
    S: Source + Clone,
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let dir = tempfile::tempdir().unwrap();
    let lake = LakeSink::new(Location::local(dir.path()).unwrap());
    let pipeline = |name: &str, table: &str, rule: NullCursors, chunk: Option<usize>| {
        let mut spec = TableSpec::new("t")
            .from_table(table)
            .mode(LoadMode::Incremental)
            .cursor(["ts"])
            .primary_key(["id"])
            .null_cursors(rule)
            .target(name);
        if let Some(n) = chunk {
            spec = spec.chunk_rows(n);
        }
        Pipeline::builder(name)
            .source(source.clone())
            .sink(lake.clone())
            .watermarks(ObjectStoreWatermarkStore::new(
                Location::local(dir.path().join("_etl/wm")).unwrap(),
            ))
            .table(spec)
            .build()
            .unwrap()
    };
    let refused = |r: &etl_core::RunReport, rows: u64| {
        let t = r.table("t").unwrap();
        assert_eq!((t.status, t.written_count), (TableStatus::Failed, 0), "{t:?}");
        let e = t.error.as_deref().unwrap();
        assert!(
            e.contains(&format!("{rows} rows have NULL in every cursor column (`ts`)"))
                && e.contains("NullCursors::WholeReadsOnly"),
            "{e}"
        );
        assert_eq!(
            t.watermark_after.as_ref().map_or(0, |w| w.generation),
            t.watermark_before.as_ref().map_or(0, |w| w.generation)
        );
    };

    // The default refuses, before anything is written.
    let r = pipeline("fail", nulls, NullCursors::Fail, None).run().await.unwrap();
    refused(&r, 2);
    assert_eq!(lake_ids(&lake, "fail").await, Vec::<i32>::new());

    // Whole reads only: loaded once by the first run, never again.
    let p = pipeline("whole", nulls, NullCursors::WholeReadsOnly, None);
    let r = p.run().await.unwrap().into_result().unwrap();
    let t = r.table("t").unwrap();
    assert_eq!((t.written_count, t.null_cursor_count), (2, 2), "{t:?}");
    for _ in 0..2 {
        let r = p.run().await.unwrap().into_result().unwrap();
        assert_eq!(r.table("t").unwrap().status, TableStatus::NoNewData);
    }
    assert_eq!(lake_ids(&lake, "whole").await, vec![1, 2]);
    // A row that gets a cursor value is new; a row inserted without one is counted, not read.
    exec(format!("UPDATE {nulls} SET ts = '2025-01-05 00:00:00' WHERE id = 1")).await;
    exec(format!("INSERT INTO {nulls} VALUES (3, NULL)")).await;
    let r = p.run().await.unwrap().into_result().unwrap();
    let t = r.table("t").unwrap();
    assert_eq!((t.written_count, t.null_cursor_count), (1, 2), "{t:?}");
    assert_eq!(lake_ids(&lake, "whole").await, vec![1, 1, 2]);
    // The same watermark under the default rule: the filtered read counts them and refuses.
    let r = pipeline("whole", nulls, NullCursors::Fail, None).run().await.unwrap();
    refused(&r, 2);
    assert_eq!(lake_ids(&lake, "whole").await, vec![1, 1, 2]);

    // Chunked reads never read NULL cursors: refused by default, counted otherwise.
    let r = pipeline("chunks_fail", five, NullCursors::Fail, Some(2))
        .run()
        .await
        .unwrap();
    refused(&r, 4);
    let r = pipeline("chunks_all_null", nulls, NullCursors::Fail, Some(1))
        .run()
        .await
        .unwrap();
    refused(&r, 2);
    let p = pipeline("chunks_whole", five, NullCursors::WholeReadsOnly, Some(2));
    let r = p.run().await.unwrap().into_result().unwrap();
    let t = r.table("t").unwrap();
    assert_eq!((t.written_count, t.null_cursor_count), (1, 4), "{t:?}");
    let r = p.run().await.unwrap().into_result().unwrap();
    assert_eq!(r.table("t").unwrap().status, TableStatus::NoNewData);
    assert_eq!(lake_ids(&lake, "chunks_whole").await, vec![1]);
}
