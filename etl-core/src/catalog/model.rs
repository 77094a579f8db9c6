//! What a crawl finds and the catalog keeps: tables, formats, typed partitions, schema
//! versions and file bookmarks.

use std::collections::BTreeMap;
use std::fmt;

use arrow::datatypes::{DataType, SchemaRef};
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::lake::Column;
use crate::position::FileMark;

/// The file format of a table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum TableFormat {
    /// Parquet.
    Parquet,
    /// Comma-separated values.
    Csv,
    /// JSON lines.
    JsonLines,
    /// Delta Lake: Parquet files, the current ones named by the table's `_delta_log`
    /// (read through a [`super::TableLog`]).
    Delta,
}

impl TableFormat {
    /// The format a file's name says, if it is a data file.
    pub(crate) fn of(path: &str) -> Option<TableFormat> {
        // Gzip-compressed text is read through a decoder (as Athena does): `a.csv.gz` is CSV.
        let lower = path.to_ascii_lowercase();
        let name = lower.strip_suffix(".gz").unwrap_or(&lower);
        let ext = name.rsplit('.').next()?;
        Some(match ext {
            "parquet" => TableFormat::Parquet,
            "csv" => TableFormat::Csv,
            "json" | "jsonl" | "ndjson" => TableFormat::JsonLines,
            _ => return None,
        })
    }
}

/// A table whose log names its current files (Delta Lake), as a [`super::TableLog`] reads
/// it.
#[derive(Clone, Debug)]
pub struct LoggedTable {
    /// The table's columns, partition columns included.
    pub schema: SchemaRef,
    /// Its current data files (their paths in the crawled location's store), with their rows.
    pub files: Vec<(object_store::ObjectMeta, Option<u64>)>,
}

/// A table format whose log, not a listing, says which files hold a table (Delta Lake): the
/// crawler asks it for a table's current files and schema instead of reading every file in
/// the folder (a replaced or merged table's old files stay there until they are vacuumed).
#[async_trait::async_trait]
pub trait TableLog: Send + Sync + fmt::Debug {
    /// The folder, in a table's folder, that marks a table of this format (`_delta_log`).
    fn marker(&self) -> &str;

    /// The format.
    fn format(&self) -> TableFormat;

    /// The current files and schema of the table in folder `table` of `location`.
    ///
    /// # Errors
    /// A log that cannot be read.
    async fn current(&self, location: &crate::location::Location, table: &str) -> crate::error::Result<LoggedTable>;
}

/// A typed partition value.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(tag = "type", content = "value", rename_all = "snake_case")]
pub enum PartitionValue {
    /// Hive's default partition (a NULL value).
    Null,
    /// An integer (`year=2025`).
    Int(i64),
    /// A date (`dt=2025-07-24`).
    Date(NaiveDate),
    /// Anything else.
    Text(String),
}

impl fmt::Display for PartitionValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PartitionValue::Null => f.write_str("__HIVE_DEFAULT_PARTITION__"),
            PartitionValue::Int(i) => write!(f, "{i}"),
            PartitionValue::Date(d) => write!(f, "{d}"),
            PartitionValue::Text(s) => f.write_str(s),
        }
    }
}

/// One partition of a table: its values (in the order of the table's partition keys), where it
/// is, and what it holds. The catalog stores it as is.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CrawledPartition {
    /// The values, one per partition key.
    pub values: Vec<PartitionValue>,
    /// Its folder, relative to the crawled prefix (`orders/year=2025/month=7`).
    pub path: String,
    /// Data files.
    pub files: u64,
    /// Rows, when the format records them (Parquet).
    pub rows: Option<u64>,
    /// Bytes of data files.
    pub bytes: u64,
}

/// One table found by a crawl.
#[derive(Clone, Debug, PartialEq)]
pub struct CrawledTable {
    /// Its folder relative to the crawled prefix (`orders`, `sales/eu`).
    pub name: String,
    /// The format of its files.
    pub format: TableFormat,
    /// The schema merged over its files: Parquet footers, or inferred from samples of CSV
    /// and JSON files. `None` only for a table whose every file is empty.
    pub schema: Option<SchemaRef>,
    /// The partition keys and the type of their values (Int64, Date32 or Utf8).
    pub partition_keys: Vec<(String, DataType)>,
    /// The partitions, sorted by their values.
    pub partitions: Vec<CrawledPartition>,
}

impl CrawledTable {
    /// Rows over all partitions, when every file records its count.
    pub fn rows(&self) -> Option<u64> {
        self.partitions.iter().map(|p| p.rows).sum()
    }
}

/// One table as a crawl saw it, with each file's bookmark and rows.
pub(crate) struct Scanned {
    pub(crate) table: CrawledTable,
    pub(crate) files: BTreeMap<String, (FileMark, Option<u64>)>,
    pub(crate) footers_read: u64,
    pub(crate) samples_read: u64,
}

/// What [`super::Crawler::crawl_into`] did.
#[derive(Debug, Default)]
pub struct CrawlSummary {
    /// Every table the catalog holds after the crawl.
    pub tables: Vec<crate::catalog::CatalogTable>,
    /// Parquet footers read (0 when nothing changed).
    pub footers_read: u64,
    /// CSV and JSON files sampled for their schema (0 when nothing changed).
    pub samples_read: u64,
}

/// One version of a table's schema.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchemaVersion {
    /// 1 for the first schema seen, +1 for each change.
    pub version: u32,
    /// The columns of this version.
    pub columns: Vec<Column>,
    /// What changed from the version before (`added `note` Utf8`, `widened `qty` Int32 →
    /// Int64`).
    pub changes: Vec<String>,
    /// When the crawl that saw it ran.
    pub recorded_at: DateTime<Utc>,
}

/// A crawled file: its bookmark and rows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogFile {
    /// Size, last-modified and e-tag when crawled.
    #[serde(flatten)]
    pub mark: FileMark,
    /// Rows (Parquet).
    pub rows: Option<u64>,
}

/// One table's catalog document.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CatalogTable {
    /// The table (its folder relative to the lake).
    pub name: String,
    /// 1 for the first document, +1 for each crawl that changed something.
    pub generation: u64,
    /// The format of its files.
    pub format: TableFormat,
    /// The current schema (empty while every file of the table is empty).
    pub columns: Vec<Column>,
    /// Partition keys and their value types.
    pub partition_keys: Vec<Column>,
    /// Every schema version, oldest first.
    pub versions: Vec<SchemaVersion>,
    /// The partitions, sorted by value.
    pub partitions: Vec<CrawledPartition>,
    /// Every data file by path relative to the lake.
    pub files: BTreeMap<String, CatalogFile>,
    /// When the crawl that wrote this document ran.
    pub crawled_at: DateTime<Utc>,
}
