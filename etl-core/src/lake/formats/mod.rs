//! Text file formats (CSV, JSON lines): schema inference from a bounded sample, decoding with
//! per-row error reporting, and the schema merge every reader of many files shares.
//!
//! The file source (`etl-connectors`), the [`crate::catalog::Crawler`] and
//! [`crate::catalog::Catalog::scan`] all read text files through this module, so a CSV file
//! is typed and decoded the same way wherever it is read.
//!
//! Inferred types: `Int64`, `Float64` (or `Decimal128(38, s)` with
//! [`CsvOptions::decimals`](crate::CsvOptions::decimals)), `Boolean`, `Date32`, `Timestamp(µs)` and `Utf8`; a column of
//! NULLs only is `Utf8`. In JSON lines, strings holding dates or timestamps are typed as such.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use etl_core::{CsvOptions, Location, lake::formats};
//! use object_store::ObjectStoreExt;
//!
//! let loc = Location::memory();
//! let path = loc.path("in/a.csv");
//! loc.store().put(&path, "id,price,day\n1,9.50,2025-07-24\n2,10.25,2025-07-25\n".into()).await.unwrap();
//! let meta = loc.store().head(&path).await.unwrap();
//! let opts = CsvOptions { decimals: true, ..CsvOptions::default() };
//! let schema = formats::infer_csv(&loc, &meta, "in/a.csv", &opts, 1000).await.unwrap();
//! let types: Vec<String> = schema.fields().iter().map(|f| f.data_type().to_string()).collect();
//! assert_eq!(types, ["Int64", "Decimal128(38, 2)", "Date32"]);
//! # });
//! ```

mod bridge;
mod csv;
mod json;

use std::sync::Arc;

use arrow::array::{ArrayRef, new_null_array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use futures::stream::BoxStream;

pub use self::csv::{infer_csv, read_csv};
pub use self::json::{infer_json, read_json};
use crate::error::{Error, Result};
use crate::spec::BadRows;

/// Rows sampled from each CSV or JSON file to infer its schema (files source and crawler).
pub const SAMPLE_ROWS: usize = 1000;

/// What a reader of one text file needs.
#[derive(Clone, Debug)]
pub struct TextRead {
    /// The table, for errors.
    pub table: String,
    /// The file as errors and rejects name it (relative to the source's location).
    pub file: String,
    /// The schema the rows are decoded into; columns are matched by name (CSV by header,
    /// JSON by key) and a column the file lacks is NULL.
    pub schema: SchemaRef,
    /// Rows per batch.
    pub batch_size: usize,
    /// Fail on the first bad row, or hand bad rows back as [`Decoded::Rejects`].
    pub bad_rows: BadRows,
}

/// An item of a text file's stream.
#[derive(Debug)]
pub enum Decoded {
    /// Decoded rows in the read's schema.
    Batch(RecordBatch),
    /// The bad rows of the file (the last item, only under [`BadRows::Divert`]).
    Rejects(Vec<RejectedRow>),
}

/// A row that could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RejectedRow {
    /// Its line in the file (1-based).
    pub line: u64,
    /// Why it was rejected (`column `amount`: `lots` is not a valid Int64`).
    pub reason: String,
    /// The record as read.
    pub record: String,
}

impl RejectedRow {
    /// A rejects file of `file`'s bad rows: CSV with the header `file,line,reason,record`,
    /// sorted by line.
    pub fn to_csv(file: &str, rows: &[RejectedRow]) -> Vec<u8> {
        let mut rows: Vec<&RejectedRow> = rows.iter().collect();
        rows.sort_by_key(|r| r.line);
        let mut w = ::csv::Writer::from_writer(Vec::new());
        let mut write = |rec: [&str; 4]| w.write_record(rec).expect("writing to memory");
        write(["file", "line", "reason", "record"]);
        for r in rows {
            write([file, &r.line.to_string(), &r.reason, &r.record]);
        }
        w.into_inner().expect("writing to memory")
    }
}

/// The error for a file compressed in a way this workspace does not read.
pub fn compression_refused(file: &str, kind: &str) -> Error {
    Error::MalformedRow {
        file: file.to_string(),
        line: 1,
        reason: format!("the file is {kind}-compressed, which is not read: decompress it, or compress it with gzip"),
    }
}

/// A stream of one text file's decoded items.
pub type DecodedStream = BoxStream<'static, Result<Decoded>>;

/// Reshapes a batch to `schema` by column name: casts where types differ (an error names the
/// column when a value does not convert), NULLs for missing columns.
///
/// # Errors
/// [`Error::ColumnTypeConflict`] naming the column that does not cast.
pub fn conform(table: &str, batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    if batch.schema().fields() == schema.fields() {
        return Ok(batch.clone());
    }
    let cols = schema
        .fields()
        .iter()
        .map(|f| column_as(table, batch, f))
        .collect::<Result<Vec<ArrayRef>>>()?;
    RecordBatch::try_new(schema.clone(), cols).map_err(|e| Error::arrow(table, e))
}

/// The column of `batch` named like `field`, cast to its type (NULLs when the batch lacks
/// it).
///
/// # Errors
/// [`Error::ColumnTypeConflict`] when a value does not cast.
pub fn column_as(table: &str, batch: &RecordBatch, field: &Field) -> Result<ArrayRef> {
    match batch.column_by_name(field.name()) {
        Some(c) if c.data_type() == field.data_type() => Ok(c.clone()),
        Some(c) => crate::kit::batch::cast_column(table, field.name(), c, field.data_type()),
        None => Ok(new_null_array(field.data_type(), batch.num_rows())),
    }
}

/// How [`merge_schemas`] treats two types of one column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MergePolicy {
    /// Declared types (Parquet): only safe widenings (`Int32 → Int64`, `Float32 →
    /// Float64`, `Date32 → Timestamp`); any other change is a conflict.
    Strict,
    /// Types inferred from samples (CSV, JSON): the safe widenings, then integer → decimal →
    /// float, and any two scalar types that still differ → `Utf8` (a later sample showed the
    /// guess too narrow).
    Inferred,
}

/// Merges `other` (the schema of `file`) into `merged` (the schema so far, from `from`): new
/// columns are added as nullable, a differing type is widened as `policy` allows.
///
/// # Errors
/// [`Error::ColumnTypeConflict`] naming the table, the column, both types and both files.
pub fn merge_schemas(
    table: &str,
    merged: &Schema,
    from: &str,
    other: &Schema,
    file: &str,
    policy: MergePolicy,
) -> Result<SchemaRef> {
    let mut fields: Vec<Field> = merged.fields().iter().map(|f| f.as_ref().clone()).collect();
    for f in other.fields() {
        match fields.iter_mut().find(|m| m.name() == f.name()) {
            None => fields.push(f.as_ref().clone().with_nullable(true)),
            Some(m) if m.data_type() == f.data_type() => {
                if f.is_nullable() {
                    *m = m.clone().with_nullable(true);
                }
            }
            Some(m) => match widen(m.data_type(), f.data_type(), policy) {
                Some(t) => {
                    *m = m
                        .clone()
                        .with_data_type(t)
                        .with_nullable(m.is_nullable() || f.is_nullable())
                }
                None => {
                    return Err(Error::ColumnTypeConflict {
                        table: table.to_string(),
                        column: f.name().clone(),
                        expected: format!("{} (as in {from})", m.data_type()),
                        found: format!("{} in {file}", f.data_type()),
                    });
                }
            },
        }
    }
    Ok(Arc::new(Schema::new(fields)))
}

/// The common type of two column types, when `policy` allows one.
fn widen(a: &DataType, b: &DataType, policy: MergePolicy) -> Option<DataType> {
    use DataType::*;
    let int_rank = |t: &DataType| match t {
        Int8 => Some(1),
        Int16 => Some(2),
        Int32 => Some(3),
        Int64 => Some(4),
        _ => None,
    };
    let safe = match (a, b) {
        _ if int_rank(a).is_some() && int_rank(b).is_some() => Some(if int_rank(a) >= int_rank(b) {
            a.clone()
        } else {
            b.clone()
        }),
        (Float32, Float64) | (Float64, Float32) => Some(Float64),
        (Date32, t @ Timestamp(_, None)) | (t @ Timestamp(_, None), Date32) => Some(t.clone()),
        _ => None,
    };
    if safe.is_some() || policy == MergePolicy::Strict {
        return safe;
    }
    let scalar = |t: &DataType| t.is_primitive() || matches!(t, Boolean | Utf8);
    Some(match (a, b) {
        (Null, t) | (t, Null) => t.clone(),
        (Decimal128(_, s1), Decimal128(_, s2)) => Decimal128(38, (*s1).max(*s2)),
        (Int64, d @ Decimal128(..)) | (d @ Decimal128(..), Int64) => d.clone(),
        (Int64 | Decimal128(..), Float64) | (Float64, Int64 | Decimal128(..)) => Float64,
        _ if scalar(a) && scalar(b) => Utf8,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_widens_safely_only() {
        let strict = MergePolicy::Strict;
        assert_eq!(widen(&DataType::Int32, &DataType::Int64, strict), Some(DataType::Int64));
        assert_eq!(
            widen(&DataType::Float64, &DataType::Float32, strict),
            Some(DataType::Float64)
        );
        assert_eq!(widen(&DataType::Int64, &DataType::Utf8, strict), None);
        assert_eq!(widen(&DataType::Int64, &DataType::Float64, strict), None);
    }

    #[test]
    fn inferred_widens_to_the_type_every_sample_fits() {
        let inf = MergePolicy::Inferred;
        assert_eq!(
            widen(&DataType::Int64, &DataType::Float64, inf),
            Some(DataType::Float64)
        );
        assert_eq!(
            widen(&DataType::Decimal128(38, 1), &DataType::Decimal128(38, 3), inf),
            Some(DataType::Decimal128(38, 3))
        );
        assert_eq!(widen(&DataType::Boolean, &DataType::Int64, inf), Some(DataType::Utf8));
        assert_eq!(widen(&DataType::Date32, &DataType::Utf8, inf), Some(DataType::Utf8));
        let list = DataType::List(Arc::new(Field::new("item", DataType::Int64, true)));
        assert_eq!(widen(&list, &DataType::Utf8, inf), None);
    }
}
