//! Arrow helpers every connector shares: cursor values of a batch (the highest, the rows past
//! one, the rows without any), masks and filters, and the cast that names the column that
//! does not convert.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BooleanArray, Date32Array, Int64Array, StringArray, TimestampMicrosecondArray};
use arrow::compute::kernels::cmp::gt;
use arrow::compute::{CastOptions, cast, cast_with_options, max, max_string, or_kleene};
use arrow::datatypes::{DataType, TimeUnit};
use arrow::record_batch::RecordBatch;
use chrono::{DateTime, NaiveDate, TimeDelta};

use crate::error::{Error, Result};
use crate::position::CursorValue;

/// The kind of cursor a column type gives, as its canonical Arrow type.
fn canonical(table: &str, column: &str, dt: &DataType) -> Result<DataType> {
    use DataType::*;
    Ok(match dt {
        Int8 | Int16 | Int32 | Int64 | UInt8 | UInt16 | UInt32 => Int64,
        Timestamp(_, None) => Timestamp(TimeUnit::Microsecond, None),
        Timestamp(_, Some(_)) => Timestamp(TimeUnit::Microsecond, Some(crate::UTC.into())),
        Date32 | Date64 => Date32,
        Utf8 | LargeUtf8 | Utf8View => Utf8,
        other => {
            return Err(Error::ColumnTypeConflict {
                table: table.to_string(),
                column: column.to_string(),
                expected: "an integer, date, timestamp or text cursor".to_string(),
                found: other.to_string(),
            });
        }
    })
}

fn column<'a>(table: &str, batch: &'a RecordBatch, name: &str) -> Result<&'a ArrayRef> {
    batch.column_by_name(name).ok_or_else(|| Error::ColumnNotFound {
        table: table.to_string(),
        column: name.to_string(),
    })
}

fn canonical_column(table: &str, batch: &RecordBatch, name: &str) -> Result<ArrayRef> {
    let col = column(table, batch, name)?;
    let to = canonical(table, name, col.data_type())?;
    cast(col, &to).map_err(|e| Error::arrow(table, e))
}

/// A one-element array holding `v`, typed like the canonical type `dt`.
fn scalar_array(table: &str, column: &str, v: &CursorValue, dt: &DataType) -> Result<ArrayRef> {
    let arr: ArrayRef = match (v, dt) {
        (CursorValue::Int(i), DataType::Int64) => Arc::new(Int64Array::from(vec![*i])),
        (CursorValue::Timestamp(t), DataType::Timestamp(_, None)) => {
            Arc::new(TimestampMicrosecondArray::from(vec![t.and_utc().timestamp_micros()]))
        }
        (CursorValue::TimestampTz(t), DataType::Timestamp(_, Some(_))) => {
            Arc::new(TimestampMicrosecondArray::from(vec![t.timestamp_micros()]).with_timezone(crate::UTC))
        }
        (CursorValue::Date(d), DataType::Date32) => {
            let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch");
            Arc::new(Date32Array::from(vec![(*d - epoch).num_days() as i32]))
        }
        (CursorValue::Text(s), DataType::Utf8) => Arc::new(StringArray::from(vec![s.as_str()])),
        _ => {
            return Err(Error::ColumnTypeConflict {
                table: table.to_string(),
                column: column.to_string(),
                expected: format!("a cursor of the stored watermark's type ({v:?})"),
                found: dt.to_string(),
            });
        }
    };
    Ok(arr)
}

/// Rows of `batch` where any of `columns` is greater than `low` (NULLs are not).
///
/// # Errors
/// A missing column, or a column whose type does not match the watermark's.
pub fn rows_after(table: &str, batch: &RecordBatch, columns: &[String], low: &CursorValue) -> Result<BooleanArray> {
    let mut acc: Option<BooleanArray> = None;
    for name in columns {
        let col = canonical_column(table, batch, name)?;
        let s = scalar_array(table, name, low, col.data_type())?;
        let m = gt(&col, &arrow::array::Scalar::new(s)).map_err(|e| Error::arrow(table, e))?;
        acc = Some(match acc {
            None => m,
            Some(a) => or_kleene(&a, &m).map_err(|e| Error::arrow(table, e))?,
        });
    }
    let acc = acc.unwrap_or_else(|| BooleanArray::from(vec![true; batch.num_rows()]));
    // NULL means "not past the watermark".
    Ok(nulls_false(acc))
}

/// The highest value over all `columns` of `batch`, `None` when all are NULL or empty.
///
/// # Errors
/// A missing column or one that cannot be a cursor.
pub fn max_cursor(table: &str, batch: &RecordBatch, columns: &[String]) -> Result<Option<CursorValue>> {
    let mut best = None;
    for name in columns {
        let col = canonical_column(table, batch, name)?;
        let v = match col.data_type() {
            DataType::Int64 => max(col.as_any().downcast_ref::<Int64Array>().expect("int64")).map(CursorValue::Int),
            DataType::Timestamp(_, tz) => {
                let a = col.as_any().downcast_ref::<TimestampMicrosecondArray>().expect("ts");
                max(a).and_then(|us| {
                    let t = DateTime::from_timestamp_micros(us)?;
                    Some(if tz.is_some() {
                        CursorValue::TimestampTz(t)
                    } else {
                        CursorValue::Timestamp(t.naive_utc())
                    })
                })
            }
            DataType::Date32 => {
                let a = col.as_any().downcast_ref::<Date32Array>().expect("date32");
                max(a).and_then(|d| {
                    NaiveDate::from_ymd_opt(1970, 1, 1)
                        .and_then(|e| e.checked_add_signed(TimeDelta::days(d as i64)))
                        .map(CursorValue::Date)
                })
            }
            _ => {
                let a = col.as_any().downcast_ref::<StringArray>().expect("utf8");
                max_string(a).map(|s| CursorValue::Text(s.to_string()))
            }
        };
        best = CursorValue::max_opt(best, v);
    }
    Ok(best)
}

/// Rows of `batch` whose cursor columns are all NULL.
///
/// # Errors
/// A missing cursor column.
pub fn null_cursor_mask(table: &str, batch: &RecordBatch, columns: &[String]) -> Result<BooleanArray> {
    let mut acc = BooleanArray::from(vec![!columns.is_empty(); batch.num_rows()]);
    for name in columns {
        let col = column(table, batch, name)?;
        if col.null_count() == 0 {
            return Ok(BooleanArray::from(vec![false; batch.num_rows()]));
        }
        let is_null = arrow::compute::is_null(col).map_err(|e| Error::arrow(table, e))?;
        acc = arrow::compute::and(&acc, &is_null).map_err(|e| Error::arrow(table, e))?;
    }
    Ok(acc)
}

/// Casts `col` to `to`, failing on any value that does not convert.
///
/// # Errors
/// [`Error::ColumnTypeConflict`] naming table, column and both types.
pub fn cast_column(table: &str, column: &str, col: &ArrayRef, to: &DataType) -> Result<ArrayRef> {
    let opts = CastOptions {
        safe: false,
        ..Default::default()
    };
    cast_with_options(col, to, &opts).map_err(|e| Error::ColumnTypeConflict {
        table: table.to_string(),
        column: column.to_string(),
        expected: to.to_string(),
        found: format!("{} ({e})", col.data_type()),
    })
}

/// The mask with NULL entries turned false.
pub fn nulls_false(mask: BooleanArray) -> BooleanArray {
    if mask.null_count() == 0 {
        mask
    } else {
        arrow::compute::prep_null_mask_filter(&mask)
    }
}

/// Keeps the rows of `batch` where `mask` is true.
///
/// # Errors
/// Only on internal Arrow errors.
pub fn filter_batch(table: &str, batch: &RecordBatch, mask: &BooleanArray) -> Result<RecordBatch> {
    if mask.true_count() == batch.num_rows() {
        return Ok(batch.clone());
    }
    arrow::compute::filter_record_batch(batch, mask).map_err(|e| Error::arrow(table, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{Field, Schema};

    #[test]
    fn filters_and_maxes_timestamps() {
        let ts = TimestampMicrosecondArray::from(vec![Some(1_000_000), None, Some(3_000_000)]);
        let ids = Int64Array::from(vec![1, 2, 3]);
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("ts", DataType::Timestamp(TimeUnit::Microsecond, None), true),
        ]));
        let b = RecordBatch::try_new(schema, vec![Arc::new(ids), Arc::new(ts)]).unwrap();
        let cols = vec!["ts".to_string()];
        let low = CursorValue::Timestamp(DateTime::from_timestamp(1, 0).unwrap().naive_utc());
        let m = rows_after("t", &b, &cols, &low).unwrap();
        assert_eq!(m, BooleanArray::from(vec![false, false, true]));
        let hi = max_cursor("t", &b, &cols).unwrap().unwrap();
        assert_eq!(hi.to_string(), "1970-01-01 00:00:03");
        let err = rows_after("t", &b, &cols, &CursorValue::Int(1))
            .unwrap_err()
            .to_string();
        assert!(err.contains("ts"), "{err}");
        assert!(rows_after("t", &b, &["nope".to_string()], &low).is_err());
    }
}
