//! # etl-sinks
//!
//! Sinks of the etl workspace, each behind a cargo feature:
//!
//! - `lake`: [`lake::LakeSink`], Hive-partitioned Parquet on any object store.
//! - `delta`: [`delta::DeltaSink`], Delta Lake tables (delta-rs) in every load mode, UPSERT as
//!   a `MERGE`, one Delta commit per run carrying its checkpoint.
//! - `postgres`: [`postgres::PostgresSink`], PostgreSQL tables in every load mode (binary
//!   `COPY` into a staging table, then the mode's statements and the checkpoint in one
//!   transaction).
//! - `redshift`: [`redshift::RedshiftSink`], Amazon Redshift tables in every load mode
//!   (Parquet staged on S3, `COPY … FORMAT AS PARQUET`, `MERGE` or `DELETE … USING` +
//!   `INSERT`, the checkpoint in the same transaction).
//! - `snowflake`: [`snowflake::SnowflakeSink`], Snowflake tables in every load mode (Parquet
//!   staged on S3, `COPY INTO` from an external stage, the mode's DML and the checkpoint in
//!   one transaction).
//!
//! [`warehouse`] holds what the three SQL sinks share: the target's name, the checkpoint
//! table, the statements and column types per dialect, Parquet staging, and the one commit
//! sequence each of them fills in.
//!
//! Every sink implements [`etl_core::Sink`]: stage, then commit together with a checkpoint,
//! so a run that dies anywhere leaves the target as before or as after it.

#[cfg(feature = "delta")]
pub mod delta;

#[cfg(feature = "lake")]
pub mod lake;

#[cfg(feature = "postgres")]
pub mod postgres;

#[cfg(feature = "redshift")]
pub mod redshift;

#[cfg(feature = "snowflake")]
pub mod snowflake;

#[cfg(any(feature = "postgres", feature = "snowflake"))]
pub mod warehouse;
