//! Incremental window arithmetic: the lower end of a read from the stored position, the
//! NULL-cursor rule, and the in-memory filter of sources that read whole files.

use arrow::record_batch::RecordBatch;
use chrono::TimeDelta;

use super::batch::{filter_batch, max_cursor, null_cursor_mask, rows_after};
use crate::error::{Error, Result};
use crate::position::{CursorValue, Low, Position};
use crate::spec::{NullCursors, TableSpec};

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

/// The lower end of an incremental window: the stored cursor moved back by the spec's
/// lookback; for a first run (`from` is `None`) the high-water mark moved back by the initial
/// window, or the start; for a watermark without a cursor value, every row that has one.
pub fn window_low(spec: &TableSpec, from: Option<&Position>, high: Option<&CursorValue>) -> Low {
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

/// Applies the spec's [`crate::NullCursors`] rule to `rows` rows whose cursor columns are all
/// NULL, met by an incremental read: an error under `Fail` (when there are any), else the
/// count for the report.
///
/// # Errors
/// [`Error::NullCursor`] under [`crate::NullCursors::Fail`].
pub fn check_null_cursors(spec: &TableSpec, rows: u64) -> Result<u64> {
    if rows > 0 && spec.null_cursors == NullCursors::Fail {
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
pub fn filter_window(spec: &TableSpec, batch: &RecordBatch, low: &Low) -> Result<(RecordBatch, u64)> {
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
pub fn last_row_position(spec: &TableSpec, batch: &RecordBatch) -> Result<(CursorValue, Vec<CursorValue>)> {
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
