//! The lake layout: where data files, staged files and commit records live.
//!
//! ```text
//! <root>/<table>/year=2025/month=7/day=24/<table>_20250724_010523_<run>_00001.parquet   data
//! <root>/<table>/processing_year=2025/processing_month=7/processing_day=24/…             (or)
//! <root>/_etl/staging/<table>/<run>/…                                                  staged, invisible
//! <root>/_etl/commits/<table>/<sequence, 20 digits>.json                                commit records
//! ```
//!
//! A run writes its files under `_etl/staging/`, then creates the next commit record with
//! `PutMode::Create` (the commit point: of two concurrent runs only one can create it), then
//! moves the staged files to their final paths and deletes the files the commit replaces.
//! A run that dies after the commit point is completed by the next one (the moves are
//! idempotent); one that dies before it leaves only staged files, which later runs delete.
//!
//! Beside the layout: [`parquet`], Parquet read from any object store (ranged reads, the
//! footer in one request), and [`formats`], the text formats (CSV, JSON lines: inference
//! from a sample, decoding with per-row errors, gzip) that the file source, the crawler and
//! the catalog's scans share.

pub mod formats;
pub mod parquet;
pub mod partition;

use std::str::FromStr;

use arrow::datatypes::{DataType, Field, Schema};

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::position::Checkpoint;

/// Folder of the lake's own metadata.
pub const META_DIR: &str = "_etl";

/// Value of a partition whose date is NULL.
pub const NULL_PARTITION: &str = "__HIVE_DEFAULT_PARTITION__";

/// Folder of staged files of one run of one table.
pub fn staging_dir(table: &str, run_id: &str) -> String {
    format!("{META_DIR}/staging/{table}/{run_id}")
}

/// Folder of a table's commit records.
pub fn commits_dir(table: &str) -> String {
    format!("{META_DIR}/commits/{table}")
}

/// Path of one commit record.
pub fn commit_path(table: &str, sequence: u64) -> String {
    format!("{}/{sequence:020}.json", commits_dir(table))
}

/// Hive partition folders of a date: `year=2025/month=7/day=24`, with `prefix` before each
/// key (`processing_` for processing-date partitions); `None` gives the NULL partition.
pub fn date_partition(prefix: &str, day: Option<NaiveDate>) -> String {
    match day {
        Some(d) => format!(
            "{prefix}year={}/{prefix}month={}/{prefix}day={}",
            d.year(),
            d.month(),
            d.day()
        ),
        None => format!("{prefix}year={NULL_PARTITION}/{prefix}month={NULL_PARTITION}/{prefix}day={NULL_PARTITION}"),
    }
}

/// A data file's name: `<table>_<yyyyMMdd_HHmmss>_<run>_<n>.parquet`.
pub fn data_file_name(table: &str, started_at: DateTime<Utc>, run_id: &str, n: u64) -> String {
    format!("{table}_{}_{run_id}_{n:05}.parquet", started_at.format("%Y%m%d_%H%M%S"))
}

/// One file a commit adds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AddedFile {
    /// Where it was staged, relative to the lake root.
    pub staged: String,
    /// Its final path, relative to the lake root.
    pub path: String,
    /// Its partition folders (`year=2025/month=7/day=24`), empty when unpartitioned.
    pub partition: String,
    /// Rows in it.
    pub rows: u64,
    /// Its size in bytes.
    pub bytes: u64,
}

/// One commit of one table: what it adds and removes, and the checkpoint it stores.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CommitRecord {
    /// 1 for the table's first commit, +1 after.
    pub sequence: u64,
    /// The table's target name (its folder).
    pub table: String,
    /// The checkpoint committed with the data.
    pub checkpoint: Checkpoint,
    /// Files made visible.
    pub add: Vec<AddedFile>,
    /// Files removed (a replaced table's old files), relative to the lake root.
    pub remove: Vec<String>,
    /// Rows in the table after this commit (as far as the commit log knows).
    pub table_rows: u64,
    /// The table's columns after this commit, so that a later run can refuse a column whose
    /// type changed (absent in records of older versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub columns: Option<Vec<Column>>,
}

/// A column as the lake's documents record it (commit records, the catalog).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Column {
    /// The name.
    pub name: String,
    /// The Arrow type, as Arrow prints it (`Int64`, `Timestamp(µs)`).
    pub data_type: String,
    /// Whether it may be NULL.
    pub nullable: bool,
}

impl Column {
    /// The column of a field.
    pub fn of(f: &Field) -> Self {
        Column {
            name: f.name().clone(),
            data_type: f.data_type().to_string(),
            nullable: f.is_nullable(),
        }
    }

    /// Its Arrow type; `path` names the document it comes from, in errors.
    ///
    /// # Errors
    /// [`Error::Metadata`] when the stored type does not parse.
    pub fn arrow_type(&self, path: &str) -> Result<DataType> {
        DataType::from_str(&self.data_type).map_err(|e| Error::Metadata {
            path: path.to_string(),
            message: format!("column `{}`: type `{}`: {e}", self.name, self.data_type),
        })
    }

    /// A schema of stored columns; `path` names the document they come from, in errors.
    ///
    /// # Errors
    /// [`Error::Metadata`] when a stored type does not parse.
    pub fn schema(columns: &[Column], path: &str) -> Result<Schema> {
        let fields = columns
            .iter()
            .map(|c| Ok(Field::new(&c.name, c.arrow_type(path)?, c.nullable)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Schema::new(fields))
    }
}
