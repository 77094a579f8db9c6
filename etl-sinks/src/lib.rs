//! # etl-sinks
//!
//! Sinks of the etl workspace, each behind a cargo feature:
//!
//! - `lake`: [`lake::LakeSink`], Hive-partitioned Parquet on any object store.
//!
//! Every sink implements [`etl_core::Sink`]: stage, then commit together with a checkpoint,
//! so a run that dies anywhere leaves the target as before or as after it.

#[cfg(feature = "lake")]
pub mod lake;
