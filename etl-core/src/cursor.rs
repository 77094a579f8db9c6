//! Cursor arithmetic on Arrow data: the rows past a watermark, and the highest cursor value.
//!
//! Shared by every source that filters in memory (files, the in-memory source) and by the
//! runner, which records the highest cursor value it wrote.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BooleanArray, Date32Array, Int64Array, StringArray, TimestampMicrosecondArray};
use arrow::compute::kernels::cmp::gt;
use arrow::compute::{cast, max, max_string, or_kleene};
use arrow::datatypes::{DataType, TimeUnit};
use arrow::record_batch::RecordBatch;
use chrono::{DateTime, NaiveDate, TimeDelta};

use crate::error::{Error, Result};
use crate::watermark::CursorValue;

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

/// Moves a cursor value back by `window` (for lookback and initial windows); integer and
/// text cursors are returned unchanged.
pub fn shift_back(v: &CursorValue, window: TimeDelta) -> CursorValue {
    match v {
        CursorValue::Timestamp(t) => CursorValue::Timestamp(*t - window),
        CursorValue::TimestampTz(t) => CursorValue::TimestampTz(*t - window),
        CursorValue::Date(d) => CursorValue::Date(*d - window),
        other => other.clone(),
    }
}

/// The exclusive lower bound of an incremental window: the stored cursor moved back by the
/// spec's lookback, or for a first run the high-water mark moved back by the initial window.
pub fn window_low(
    spec: &crate::spec::TableSpec,
    from: Option<&CursorValue>,
    high: Option<&CursorValue>,
) -> Option<CursorValue> {
    match (from, high, spec.initial_window) {
        (Some(c), _, _) => Some(match spec.lookback {
            Some(w) => shift_back(c, w),
            None => c.clone(),
        }),
        (None, Some(h), Some(w)) => Some(shift_back(h, w)),
        _ => None,
    }
}

/// The (cursor, primary key) pair of the last row of `batch`, where a chunked read stops.
///
/// # Errors
/// A missing column, a type that cannot be a cursor or key, or a NULL.
pub fn last_row_position(
    spec: &crate::spec::TableSpec,
    batch: &RecordBatch,
) -> Result<(CursorValue, Vec<CursorValue>)> {
    let last = batch.slice(batch.num_rows().saturating_sub(1), batch.num_rows().min(1));
    let value = |column: &String| -> Result<CursorValue> {
        max_cursor(&spec.name, &last, std::slice::from_ref(column))?.ok_or_else(|| Error::ColumnTypeConflict {
            table: spec.name.clone(),
            column: column.clone(),
            expected: "a non-NULL value in every row of a chunked read".to_string(),
            found: "NULL".to_string(),
        })
    };
    let cursor = value(&spec.cursor[0])?;
    let key = spec.primary_key.iter().map(value).collect::<Result<Vec<_>>>()?;
    Ok((cursor, key))
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
