//! # etl-connectors
//!
//! Sources of the etl workspace, each behind a cargo feature:
//!
//! - `files`: [`files::FileSource`], CSV, JSON lines and Parquet files under any object-store
//!   prefix, incremental by file bookmark and optionally by a cursor column.
//!
//! - `postgres`: [`postgres::PostgresSource`], tables and queries read by binary `COPY`,
//!   incremental by cursor columns with the window pushed down.
//!
//! - `mysql`: [`mysql::MySqlSource`], MySQL and MariaDB tables and queries read over the
//!   binary protocol, incremental by cursor columns with the window pushed down as bound
//!   parameters.
//!
//! Every source implements [`etl_core::Source`].

#[cfg(feature = "files")]
pub mod files;

#[cfg(any(feature = "postgres", feature = "mysql"))]
mod db;
#[cfg(any(feature = "postgres", feature = "mysql"))]
pub use db::Counts;

#[cfg(feature = "postgres")]
pub mod postgres;

#[cfg(feature = "mysql")]
pub mod mysql;
