//! A crawler over any object-store prefix: the tables a lake holds, their formats, schemas,
//! row counts and typed Hive partitions, and the DDL other engines need to read them.
//!
//! A table is a folder of data files, with optional `key=value` partition folders under it.
//! Folders and files whose names start with `_` or `.` are hidden (the lake's `_etl/`, Spark's
//! `_SUCCESS`). Parquet schemas and row counts come from the files' footers; CSV and JSON-lines
//! schemas are inferred from a bounded sample of each file (its first 1 000 rows, see
//! [`crate::lake::formats`]) and merged across files with [`crate::lake::formats::MergePolicy::Inferred`] (a column seen
//! as integers in one file and as decimals in another is a decimal); their row counts are
//! unknown without reading them whole. A table whose folder holds a log (Delta Lake's
//! `_delta_log`) is read through a [`TableLog`] ([`Crawler::with_table_log`]): its current
//! files and schema come from the log, and files the log no longer names are not the table's.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use etl_core::{Location, catalog::Crawler};
//! let lake = Location::memory();
//! let tables = Crawler::new(lake).crawl().await.unwrap();
//! assert!(tables.is_empty());
//! # });
//! ```
//!
//! # The catalog
//!
//! The catalog of a lake, kept in the lake itself: one JSON document per table and
//! generation under `_etl/catalog/<table>/`, written by [`Crawler::crawl_into`].
//!
//! A document holds the table's format, current schema, schema versions (with what changed),
//! partitions (values, files, rows, bytes) and a bookmark of every file crawled, so the next
//! crawl reads only new or changed files. Generation `g + 1` is created only if it does not
//! exist yet (`PutMode::Create`), so two crawls at once cannot overwrite each other: the
//! second finds the first's document and crawls that table again.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use etl_core::{Location, catalog::{Catalog, Crawler}};
//! let lake = Location::memory();
//! let crawl = Crawler::new(lake.clone()).crawl_into(&Catalog::new(lake.clone())).await.unwrap();
//! assert_eq!((crawl.tables.len(), crawl.footers_read), (0, 0));
//! assert!(Catalog::new(lake).list().await.unwrap().is_empty());
//! # });
//! ```

mod crawler;
mod ddl;
mod model;
mod store;

pub use crawler::Crawler;
pub use ddl::HiveColumns;

pub use model::{
    CatalogFile, CatalogTable, CrawlSummary, CrawledPartition, CrawledTable, LoggedTable, PartitionValue,
    SchemaVersion, TableFormat, TableLog,
};
pub use store::Catalog;
