//! # etl-connectors
//!
//! Sources of the etl workspace, each behind a cargo feature:
//!
//! - `files`: [`files::FileSource`], CSV, JSON lines and Parquet files under any object-store
//!   prefix, incremental by file bookmark and optionally by a cursor column.
//!
//! - `postgres`: [`postgres::PostgresSource`], tables and queries read by binary `COPY`,
//!   incremental by cursor columns with the window pushed down. `postgres-client` alone is
//!   the connection it builds on ([`postgres::PgConfig`], [`postgres::PgClient`]), which the
//!   Postgres and Redshift sinks use without the source.
//!
//! - `mysql`: [`mysql::MySqlSource`], MySQL and MariaDB tables and queries read over the
//!   binary protocol, incremental by cursor columns with the window pushed down as bound
//!   parameters.
//!
//! - `sql`: [`sql::SqlSource`], SQL queries across tables of other sources (a Postgres table
//!   joined to a MySQL one and to Parquet files), run by DataFusion.
//!
//! Every source implements [`etl_core::Source`]. The database sources share one read
//! (`db/read.rs`: describe, snapshot, high-water mark, window, NULL cursors, count, rows); each
//! supplies only its driver's parts.

#[cfg(feature = "files")]
pub mod files;

#[cfg(any(feature = "postgres-client", feature = "mysql"))]
mod db;
#[cfg(any(feature = "postgres", feature = "mysql"))]
pub use db::Counts;

#[cfg(feature = "postgres-client")]
pub mod postgres;

#[cfg(feature = "mysql")]
pub mod mysql;

#[cfg(feature = "sql")]
pub mod sql;
