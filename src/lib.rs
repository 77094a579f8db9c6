//! # etl
//!
//! Full and incremental loads as a library: read tables and files, fully or past a stored
//! watermark, transform them as Arrow record batches, and write them to a partitioned
//! Parquet lake on any object store or to a SQL warehouse (Postgres, Redshift, Snowflake) —
//! with the watermark moved only after the target has committed, and a report of every run.
//!
//! This crate re-exports the public API of [`etl_core`] by name (contracts, runner,
//! transforms, watermark stores; its modules by concern: [`catalog`], [`lake`], [`workflow`],
//! [`shard`], [`transform`], and [`kit`] for connector authors), [`prelude`] for pipeline
//! programs, and,
//! by cargo feature, the connectors:
//!
//! | feature | adds |
//! | --- | --- |
//! | `files` (default) | `FileSource`: CSV, JSON lines and Parquet under an object-store prefix, incremental by file bookmark |
//! | `lake` (default) | `LakeSink`: Hive-partitioned Parquet on any object store, one commit record per run |
//! | `postgres` | `PostgresSource` (binary `COPY` into Arrow), `PostgresSink` (binary `COPY`, every mode in one transaction), `PostgresWatermarkStore` |
//! | `redshift` | `RedshiftSink`: Parquet staged on S3, `COPY`, `MERGE`, one serializable transaction (includes `postgres`) |
//! | `snowflake` | `SnowflakeSink`: Parquet staged on S3, `COPY INTO`, `MERGE INTO`, one transaction |
//! | `mysql` | `MySqlSource`: MySQL and MariaDB over the binary protocol |
//! | `delta` | `DeltaSink`: Delta Lake tables (delta-rs), every mode, UPSERT as `MERGE`, one Delta commit per run |
//! | `sql` | `SqlSource`: SQL across sources, a query over tables of other sources run by DataFusion |
//! | `tls` | rustls for the database connections (the server's certificate always verified) |
//! | `s3` | S3 and S3-compatible object stores (`Location::s3`) |
//! | `tz` | named IANA time zones for workflow schedules |
//! | `test-utils` | [`etl_core::conformance`](https://docs.rs/etl-core), the suite every connector runs |
//! | `failpoints` | crash tests only: the process aborts where `ETL_FAILPOINT` names |
//!
//! ## Example
//!
//! CSV drops in a landing folder loaded incrementally into a lake partitioned by date:
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> etl::Result<()> {
//! use etl::{FileFormat, FileSource, LakeSink, LoadMode, Location, ObjectStoreWatermarkStore,
//!           Partitioning, Pipeline, TableSpec};
//!
//! let dir = tempfile::tempdir().unwrap();
//! std::fs::create_dir_all(dir.path().join("landing/orders"))?;
//! std::fs::write(dir.path().join("landing/orders/day1.csv"),
//!     "order_id,order_date,amount\n1,2025-07-23,9.5\n2,2025-07-24,20\n")?;
//!
//! let landing = Location::local(dir.path().join("landing"))?;
//! let lake = Location::local(dir.path().join("lake"))?;
//! let pipeline = Pipeline::builder("daily")
//!     .source(FileSource::new(landing))
//!     .sink(LakeSink::new(lake.clone()))
//!     .watermarks(ObjectStoreWatermarkStore::new(lake.child("_etl/watermarks")))
//!     .table(TableSpec::new("orders")
//!         .from_files("orders/", FileFormat::csv())
//!         .mode(LoadMode::Incremental)
//!         .partition_by(Partitioning::ByDate("order_date".into())))
//!     .build()?;
//!
//! let first = pipeline.run().await?.into_result()?;
//! assert_eq!(first.table("orders").unwrap().written_count, 2);
//! let again = pipeline.run().await?;           // nothing new: nothing written
//! assert_eq!(again.table("orders").unwrap().status, etl::TableStatus::NoNewData);
//! # Ok(()) }
//! ```

// The crate root of `etl-core`: contracts, specs, positions, runner, reports.
#[cfg(feature = "s3")]
pub use etl_core::S3_RETRY_TIMEOUT;
pub use etl_core::{
    BadRows, BatchStream, Checkpoint, CommitSummary, CrawlOutcome, CsvOptions, CursorValue, Deletes, DriverErrorKind,
    Error, Estimate, Extract, ExtractStats, FileDrops, FileFormat, FileMark, HeldBack, KeyCheck, LoadMode, Location,
    Low, MemorySource, MergeStrategy, ModeOverrides, NullCursors, ObjectStoreWatermarkStore, PartitionKey,
    Partitioning, Pipeline, PipelineBuilder, Position, Progress, QUERY_WATERMARK, ReadRequest, Reconcile,
    ReconcilePolicy, ReconcileStatus, Reconciliation, Result, RunReport, Secret, ShardSink, Sink, Source, SourceRef,
    StageSummary, Staged, StagedWrite, TablePlan, TableReport, TableSpec, TableStatus, TableWriter, TargetLost,
    TargetState, Timeouts, UTC, Watermark, WatermarkStore, WatermarkSummary, WriteRequest,
};
// Its modules by concern.
#[cfg(feature = "test-utils")]
pub use etl_core::conformance;
pub use etl_core::{catalog, deps, keys, kit, lake, shard, transform, workflow};

#[cfg(feature = "aws")]
pub mod aws;
#[cfg(feature = "config")]
pub mod config;
pub mod job;

/// What a pipeline program needs, in one `use etl::prelude::*;`.
pub mod prelude {
    #[cfg(feature = "delta")]
    pub use crate::DeltaSink;
    #[cfg(feature = "files")]
    pub use crate::FileSource;
    #[cfg(feature = "lake")]
    pub use crate::LakeSink;
    #[cfg(feature = "mysql")]
    pub use crate::MySqlSource;
    #[cfg(feature = "sql")]
    pub use crate::SqlSource;
    pub use crate::{
        BadRows, CsvOptions, Deletes, FileFormat, LoadMode, Location, MergeStrategy, ModeOverrides, NullCursors,
        ObjectStoreWatermarkStore, PartitionKey, Partitioning, Pipeline, Position, Reconcile, ReconcilePolicy,
        RunReport, TableSpec, TableStatus, TargetLost, Timeouts,
    };
    #[cfg(feature = "postgres")]
    pub use crate::{PostgresSink, PostgresSource, PostgresWatermarkStore};
    #[cfg(feature = "redshift")]
    pub use crate::{RedshiftLoad, RedshiftSink};
    #[cfg(feature = "snowflake")]
    pub use crate::{SnowflakeAuth, SnowflakeSecret, SnowflakeSink, SnowflakeStage};
}

pub use etl_connectors as connectors;
pub use etl_sinks as sinks;

#[cfg(any(feature = "postgres", feature = "mysql"))]
pub use etl_connectors::Counts;
#[cfg(feature = "files")]
pub use etl_connectors::files::FileSource;
#[cfg(feature = "mysql")]
pub use etl_connectors::mysql::MySqlSource;
#[cfg(feature = "postgres")]
pub use etl_connectors::postgres::PostgresSource;
#[cfg(feature = "sql")]
pub use etl_connectors::sql::SqlSource;
#[cfg(feature = "delta")]
pub use etl_sinks::delta::DeltaSink;
#[cfg(feature = "lake")]
pub use etl_sinks::lake::{LakeOptions, LakeSink};
#[cfg(feature = "postgres")]
pub use etl_sinks::postgres::{PostgresSink, PostgresWatermarkStore};
#[cfg(feature = "redshift")]
pub use etl_sinks::redshift::{RedshiftLoad, RedshiftSink};
#[cfg(feature = "snowflake")]
pub use etl_sinks::snowflake::{SnowflakeAuth, SnowflakeSecret, SnowflakeSink, SnowflakeStage};
