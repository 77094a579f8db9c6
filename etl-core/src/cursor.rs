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

/// The lower end of an incremental window.
#[derive(Clone, Debug, PartialEq)]
pub enum Low {
    /// No watermark yet: the whole source (a first run).
    Start,
    /// A watermark that holds no cursor value (the rows read so far had none, under
    /// [`crate::NullCursors::WholeReadsOnly`]): every row with a cursor value is new.
    AnyCursor,
    /// Rows where any cursor column is past this value (exclusive).
    After(CursorValue),
}

impl Low {
    /// The value rows must be past, if any.
    pub fn value(&self) -> Option<&CursorValue> {
        match self {
            Low::After(v) => Some(v),
            _ => None,
        }
    }

    /// Whether the window has a lower end at all (anything but a first run's whole read).
    pub fn is_bounded(&self) -> bool {
        !matches!(self, Low::Start)
    }
}

/// The lower end of an incremental window: the stored cursor moved back by the spec's
/// lookback; for a first run (`from` is `None`) the high-water mark moved back by the initial
/// window, or the start; for a watermark without a cursor value, every row that has one.
pub fn window_low(
    spec: &crate::spec::TableSpec,
    from: Option<&crate::watermark::Position>,
    high: Option<&CursorValue>,
) -> Low {
    match (from, high, spec.initial_window) {
        (Some(p), _, _) => match (&p.cursor, spec.lookback) {
            (Some(c), Some(w)) => Low::After(shift_back(c, w)),
            (Some(c), None) => Low::After(c.clone()),
            (None, _) => Low::AnyCursor,
        },
        (None, Some(h), Some(w)) => Low::After(shift_back(h, w)),
        _ => Low::Start,
    }
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

/// Applies the spec's [`crate::NullCursors`] rule to `rows` rows whose cursor columns are all
/// NULL, met by an incremental read: an error under `Fail` (when there are any), else the
/// count for the report.
///
/// # Errors
/// [`Error::NullCursor`] under [`crate::NullCursors::Fail`].
pub fn check_null_cursors(spec: &crate::spec::TableSpec, rows: u64) -> Result<u64> {
    if rows > 0 && spec.null_cursors == crate::spec::NullCursors::Fail {
        return Err(Error::NullCursor {
            table: spec.name.clone(),
            columns: spec
                .cursor
                .iter()
                .map(|c| format!("`{c}`"))
                .collect::<Vec<_>>()
                .join(", "),
            rows,
        });
    }
    Ok(rows)
}

/// The rows of `batch` inside an incremental window starting at `low` (any cursor column past
/// it), for sources that filter in memory. Rows whose cursor columns are all NULL are inside
/// only a first run's whole read ([`Low::Start`]); elsewhere the spec's
/// [`crate::NullCursors`] rule applies to them. Returns the rows kept and how many were left
/// out for a NULL cursor.
///
/// # Errors
/// [`Error::NullCursor`] under [`crate::NullCursors::Fail`]; a missing column, or one whose
/// type does not match the watermark's.
pub fn filter_window(spec: &crate::spec::TableSpec, batch: &RecordBatch, low: &Low) -> Result<(RecordBatch, u64)> {
    if spec.cursor.is_empty() || !low.is_bounded() {
        return Ok((batch.clone(), 0));
    }
    let nulls = null_cursor_mask(&spec.name, batch, &spec.cursor)?;
    let null_rows = check_null_cursors(spec, nulls.true_count() as u64)?;
    let mask = match low {
        Low::After(v) => rows_after(&spec.name, batch, &spec.cursor, v)?,
        _ => arrow::compute::not(&nulls).map_err(|e| Error::arrow(&spec.name, e))?,
    };
    Ok((filter_batch(&spec.name, batch, &mask)?, null_rows))
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
