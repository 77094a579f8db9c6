//! # etl-core
//!
//! The contracts and the runner of an embeddable engine for full and incremental loads: what
//! AWS Glue jobs do for incremental loading, as a library.
//!
//! ```text
//!  Source ──(RecordBatch stream over a window)──► Transforms ──► Sink.stage ─► Sink.commit ─► WatermarkStore.commit
//!    ▲                                                                                            │
//!    └──────────────────────── next run reads past the committed watermark ◄──────────────────────┘
//! ```
//!
//! - [`Source`] reads a table's window as a lazy stream of Arrow batches.
//! - [`Sink`] writes in two steps, stage then commit, and stores a [`Checkpoint`] with each
//!   commit.
//! - [`WatermarkStore`] keeps where each table stopped; its commit is a compare-and-swap, so two
//!   concurrent runs cannot both advance it.
//! - [`Pipeline`] runs tables from one source into one sink, in any [`LoadMode`], and returns
//!   a [`RunReport`].
//!
//! Connectors live in `etl-connectors` (sources) and `etl-sinks` (sinks); the `etl` facade
//! crate re-exports all three.
//!
//! ## Layout
//!
//! | where | what |
//! | --- | --- |
//! | crate root | the contracts ([`Source`], [`Sink`], [`WatermarkStore`]), the specs ([`TableSpec`], [`LoadMode`]), positions ([`CursorValue`], [`Position`], [`Checkpoint`]), the runner ([`Pipeline`]), reports, [`Location`], [`Timeouts`], [`Error`] |
//! | [`transform`] | transforms applied to every batch (select, rename, cast, filter, keep the latest row per key, lookup joins) |
//! | [`lake`] | the lake's layout and commit records, Parquet read from any object store, the text formats (CSV, JSON lines) |
//! | [`catalog`] | the crawler and the catalog it fills: tables, schema versions, typed partitions, DDL, scans |
//! | [`workflow`] | jobs with dependencies, retries, timeouts, schedules, file triggers, run history |
//! | [`shard`] | shard plans: one run of a table split into shards that workers stage anywhere, committed once |
//! | [`kit`] | the connector kit: SQL dialects, incremental-window arithmetic, Arrow helpers, tasks |
//! | `conformance` | the checks every connector passes (feature `test-utils`) |
//!
//! ## Example
//!
//! An incremental read of an in-memory table: the first run reads everything, the second
//! only what is past the watermark.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use std::sync::Arc;
//! use arrow::array::{Int64Array, RecordBatch};
//! use etl_core::{LoadMode, Location, MemorySource, ObjectStoreWatermarkStore, ReadRequest,
//!                Source, TableSpec, WatermarkStore};
//! use futures::TryStreamExt;
//!
//! let batch = |ids: Vec<i64>| RecordBatch::try_from_iter([
//!     ("id", Arc::new(Int64Array::from(ids)) as _),
//! ]).unwrap();
//! let source = MemorySource::new();
//! source.append("events", batch(vec![1, 2, 3])).unwrap();
//! let spec = TableSpec::new("events").mode(LoadMode::Incremental).cursor(["id"]);
//!
//! let read = |from| ReadRequest { spec: &spec, mode: spec.mode, from, run_id: "r", batch_size: 1024, limit: None, until: None, keys: None, files: None };
//! let first = source.read(read(None)).await.unwrap();
//! let high = first.high.clone();
//! let rows: usize = first.stream.try_collect::<Vec<_>>().await.unwrap().iter().map(|b| b.num_rows()).sum();
//! assert_eq!(rows, 3);
//!
//! source.append("events", batch(vec![4])).unwrap();
//! let second = source.read(read(Some(&high))).await.unwrap();
//! let rows: usize = second.stream.try_collect::<Vec<_>>().await.unwrap().iter().map(|b| b.num_rows()).sum();
//! assert_eq!(rows, 1);
//! # });
//! ```

pub mod catalog;
mod error;
pub mod keys;
pub mod kit;
pub mod lake;
mod location;
mod mode;
mod pipeline;
mod position;
mod reconcile;
mod report;
mod secret;
pub mod shard;
mod sink;
mod source;
mod spec;
mod timeouts;
pub mod transform;
mod watermark;
pub mod workflow;

#[cfg(feature = "test-utils")]
pub mod conformance;

pub use error::{DriverErrorKind, Error, Result};
pub use location::Location;
#[cfg(feature = "s3")]
pub use location::S3_RETRY_TIMEOUT;
pub use mode::{LoadMode, ModeOverrides};
pub use pipeline::{Pipeline, PipelineBuilder, Progress, TablePlan};
pub use position::{Checkpoint, CursorValue, FileMark, Low, Position};
pub use report::{
    CrawlOutcome, HeldBack, KeyCheck, ReconcileStatus, Reconciliation, RunReport, TableReport, TableStatus,
    WatermarkSummary,
};
pub use secret::Secret;
pub use sink::{
    CommitSummary, ShardSink, Sink, StageSummary, Staged, StagedWrite, TableWriter, TargetState, WriteRequest,
};
pub use source::{BatchStream, Estimate, Extract, ExtractStats, MemorySource, ReadRequest, Source};
pub use spec::{
    BadRows, CsvOptions, DELETED_AT, Deletes, FileDrops, FileFormat, MergeStrategy, NullCursors, PartitionKey,
    Partitioning, QUERY_WATERMARK, Reconcile, ReconcilePolicy, SourceRef, TableSpec, TargetLost,
};
pub use timeouts::Timeouts;
pub use watermark::{ObjectStoreWatermarkStore, Watermark, WatermarkStore};

/// The time zone of every zoned timestamp this workspace produces (`+00:00`, i.e. UTC, spelled as
/// an offset so that Arrow formats it without a time-zone database).
pub const UTC: &str = "+00:00";

/// Re-exports of the crates whose types appear in this API.
pub mod deps {
    pub use arrow;
    pub use async_trait;
    pub use object_store;
    pub use parquet;
}
