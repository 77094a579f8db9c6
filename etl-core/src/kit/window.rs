//! Incremental window arithmetic: the lower end of a read from the stored position, the
//! NULL-cursor rule, and the in-memory filter of sources that read whole files.

use arrow::record_batch::RecordBatch;
use chrono::{DateTime, TimeDelta, Utc};

use super::batch::{filter_batch, max_cursor, null_cursor_mask, rows_after};
use crate::error::{Error, Result};
use crate::position::{CursorValue, Low, Position};
use crate::report::HeldBack;
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
/// out for a NULL cursor. With `until` (a backfill's upper end), rows with a cursor value
/// past it are left out too.
///
/// # Errors
/// [`Error::NullCursor`] under [`crate::NullCursors::Fail`]; a missing column, or one whose
/// type does not match the watermark's.
pub fn filter_window(
    spec: &TableSpec,
    batch: &RecordBatch,
    low: &Low,
    until: Option<&CursorValue>,
) -> Result<(RecordBatch, u64)> {
    let batch = match until.filter(|_| !spec.cursor.is_empty()) {
        Some(until) => {
            let past = rows_after(&spec.name, batch, &spec.cursor, until)?;
            let keep = arrow::compute::not(&past).map_err(|e| Error::arrow(&spec.name, e))?;
            filter_batch(&spec.name, batch, &keep)?
        }
        None => batch.clone(),
    };
    let batch = &batch;
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

/// The rows of `batch` whose primary key (one integer column) falls in one of the sorted,
/// disjoint inclusive `intervals` ([`crate::ReadRequest::keys`]).
///
/// # Errors
/// [`Error::ColumnNotFound`] for a batch without the key column; a key that is not an
/// integer.
pub fn keep_keys(spec: &TableSpec, batch: &RecordBatch, intervals: &[(i64, i64)]) -> Result<RecordBatch> {
    let [key] = spec.primary_key.as_slice() else {
        return Err(Error::config(format!(
            "table `{}`: reading key ranges needs a primary key of one column",
            spec.name
        )));
    };
    let col = batch.column_by_name(key).ok_or_else(|| Error::ColumnNotFound {
        table: spec.name.clone(),
        column: key.clone(),
    })?;
    let ints = super::batch::cast_column(&spec.name, key, col, &arrow::datatypes::DataType::Int64)?;
    let ints = ints
        .as_any()
        .downcast_ref::<arrow::array::Int64Array>()
        .expect("cast to Int64");
    let inside = |k: i64| {
        let i = intervals.partition_point(|(_, hi)| *hi < k);
        intervals.get(i).is_some_and(|(lo, _)| *lo <= k)
    };
    let mask: arrow::array::BooleanArray = ints.iter().map(|k| Some(k.is_some_and(inside))).collect();
    filter_batch(&spec.name, batch, &mask)
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

/// What a database had in progress when a read looked, just before it took its snapshot:
/// what [`hold_high`] needs to end the window where no later commit can land behind it.
#[derive(Clone, Debug)]
pub struct InFlight {
    /// The database's clock when it looked.
    pub now: DateTime<Utc>,
    /// Local time minus UTC in the database's default time zone, for cursors without a time
    /// zone (the clock a writer's `now()` is stamped in).
    pub local_offset: TimeDelta,
    /// The start of the oldest other transaction in progress then, and who runs it.
    pub oldest: Option<(DateTime<Utc>, String)>,
    /// A transaction in progress whose start cannot be seen (a prepared one; one of another
    /// role without the privilege to see it): the window stays at the watermark.
    pub unknown: Option<String>,
}

/// The high-water mark a read may use, given what was in flight when it looked (`seen`), and
/// what held it back: for date and timestamp cursors, the window ends below the start of the
/// oldest transaction in progress, below the database's clock (a later transaction stamps
/// its rows past it), and below the settle age, or stays at the stored cursor while a
/// transaction whose start cannot be seen is in progress. Integer and text cursors carry no
/// time and are not held. The mark never moves below the stored cursor. A [`HeldBack`] whose `to` is `None` means the read reads nothing.
///
/// # Errors
/// [`Error::Config`] for a settle age on a cursor that is not a date or timestamp.
pub fn hold_high(
    spec: &TableSpec,
    stored: Option<&CursorValue>,
    high: Option<CursorValue>,
    seen: &InFlight,
) -> Result<(Option<CursorValue>, Option<HeldBack>)> {
    let Some(high) = high else {
        return Ok((None, None));
    };
    let timed = matches!(
        high,
        CursorValue::Timestamp(_) | CursorValue::TimestampTz(_) | CursorValue::Date(_)
    );
    if !timed {
        return match spec.settle {
            Some(_) => Err(Error::config(format!(
                "table `{}`: `settle` needs a date or timestamp cursor; {} is {}",
                spec.name,
                spec.cursor.join(", "),
                cursor_kind(&high)
            ))),
            None => Ok((Some(high), None)),
        };
    }
    let frozen = seen.unknown.clone().filter(|_| spec.wait_for_commits);
    let (cap, reason) = match frozen {
        Some(why) => (stored.cloned(), why),
        None if spec.wait_for_commits || spec.settle.is_some() => {
            let (mut bound, mut why) = (seen.now, "the database's clock".to_string());
            if let Some(age) = spec.settle {
                bound = seen.now - age;
                why = format!("rows settle for {} s by the database's clock", age.num_seconds());
            }
            if let Some((start, who)) = seen
                .oldest
                .as_ref()
                .filter(|(t, _)| spec.wait_for_commits && *t < bound)
            {
                bound = *start;
                why = format!("a transaction in progress since {start} ({who})");
            }
            (Some(just_below(&high, bound, seen.local_offset)), why)
        }
        None => return Ok((Some(high), None)),
    };
    if cap.as_ref().is_some_and(|c| high <= *c) {
        return Ok((Some(high), None));
    }
    // Never below the stored cursor: the watermark does not move back.
    let to = match (cap, stored) {
        (Some(c), Some(s)) if c < *s => Some(s.clone()),
        (c, s) => c.or_else(|| s.cloned()),
    };
    let by_ms = held_by_ms(&high, to.as_ref());
    let held = HeldBack {
        high,
        to: to.clone(),
        by_ms,
        reason,
    };
    Ok((to, Some(held)))
}

/// How far, in milliseconds, a window held back to `to` ends below `high` (date and timestamp
/// cursors; `None` for others, or when it reads nothing).
pub fn held_by_ms(high: &CursorValue, to: Option<&CursorValue>) -> Option<i64> {
    match (high, to) {
        (CursorValue::Timestamp(h), Some(CursorValue::Timestamp(t))) => Some((*h - *t).num_milliseconds()),
        (CursorValue::TimestampTz(h), Some(CursorValue::TimestampTz(t))) => Some((*h - *t).num_milliseconds()),
        (CursorValue::Date(h), Some(CursorValue::Date(t))) => Some((*h - *t).num_milliseconds()),
        _ => None,
    }
}

/// Where the window of a read that joins tables of several databases ends, given what was in
/// flight at each (`seen`, each looked at before its database's snapshot): the least of the
/// ends [`hold_high`] gives each, for a cursor of `like`'s type, with its reason. `None` when
/// nothing holds it (an integer or text cursor; no transaction, clock or settle age in the
/// way); `Some((None, why))` when a transaction whose start cannot be seen keeps it at the
/// stored cursor, or, on a first run, reads nothing.
///
/// # Errors
/// As [`hold_high`].
pub fn joined_end(
    spec: &TableSpec,
    stored: Option<&CursorValue>,
    like: &CursorValue,
    seen: &[InFlight],
) -> Result<Option<(Option<CursorValue>, String)>> {
    let top = match like {
        CursorValue::Timestamp(_) => CursorValue::Timestamp(chrono::NaiveDateTime::MAX),
        CursorValue::TimestampTz(_) => CursorValue::TimestampTz(DateTime::<Utc>::MAX_UTC),
        CursorValue::Date(_) => CursorValue::Date(chrono::NaiveDate::MAX),
        other => other.clone(),
    };
    let mut end: Option<(Option<CursorValue>, String)> = None;
    for s in seen {
        if let (to, Some(held)) = hold_high(spec, stored, Some(top.clone()), s)? {
            let lower = match &end {
                None => true,
                Some((current, _)) => match (&to, current) {
                    (None, _) => true,
                    (Some(_), None) => false,
                    (Some(a), Some(b)) => a < b,
                },
            };
            if lower {
                end = Some((to, held.reason));
            }
        }
    }
    Ok(end)
}

/// The greatest value of `like`'s type before the instant `bound` (a date: the day before
/// `bound`'s local date).
fn just_below(like: &CursorValue, bound: DateTime<Utc>, offset: TimeDelta) -> CursorValue {
    let tick = TimeDelta::microseconds(1);
    let local = bound.naive_utc() + offset;
    match like {
        CursorValue::TimestampTz(_) => CursorValue::TimestampTz(bound - tick),
        CursorValue::Date(_) => CursorValue::Date(local.date() - TimeDelta::days(1)),
        _ => CursorValue::Timestamp(local - tick),
    }
}

fn cursor_kind(v: &CursorValue) -> &'static str {
    match v {
        CursorValue::Int(_) => "an integer",
        CursorValue::Text(_) => "text",
        _ => "a time",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{NaiveDate, TimeZone};

    fn at(h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 1, h, m, 0).unwrap()
    }

    fn seen(oldest: Option<DateTime<Utc>>, unknown: bool) -> InFlight {
        InFlight {
            now: at(12, 0),
            local_offset: TimeDelta::hours(1),
            oldest: oldest.map(|t| (t, "pid 7".to_string())),
            unknown: unknown.then(|| "a prepared transaction".to_string()),
        }
    }

    fn spec() -> TableSpec {
        TableSpec::new("t").cursor(["updated_at"])
    }

    #[test]
    fn the_window_ends_below_the_oldest_transaction_and_never_below_the_watermark() {
        let high = CursorValue::TimestampTz(at(11, 50));
        let (to, held) = hold_high(&spec(), None, Some(high.clone()), &seen(Some(at(11, 30)), false)).unwrap();
        let tick = TimeDelta::microseconds(1);
        assert_eq!(to, Some(CursorValue::TimestampTz(at(11, 30) - tick)));
        let held = held.unwrap();
        assert_eq!((held.high, held.by_ms), (high.clone(), Some(20 * 60_000)));
        assert!(
            held.reason.contains("since 2026-12-01 11:30:00 UTC (pid 7)"),
            "{}",
            held.reason
        );
        // A transaction older than the watermark: the window is empty, the mark stays.
        let stored = CursorValue::TimestampTz(at(11, 40));
        let (to, _) = hold_high(
            &spec(),
            Some(&stored),
            Some(high.clone()),
            &seen(Some(at(11, 30)), false),
        )
        .unwrap();
        assert_eq!(to, Some(stored));
        // Nothing in flight and the rows behind the clock: not held.
        assert_eq!(
            hold_high(&spec(), None, Some(high.clone()), &seen(None, false)).unwrap(),
            (Some(high), None)
        );
    }

    #[test]
    fn naive_timestamps_and_dates_are_held_in_the_servers_local_time() {
        let local = |h, m| {
            NaiveDate::from_ymd_opt(2026, 12, 1)
                .unwrap()
                .and_hms_opt(h, m, 0)
                .unwrap()
        };
        let (to, _) = hold_high(
            &spec(),
            None,
            Some(CursorValue::Timestamp(local(12, 50))),
            &seen(Some(at(11, 30)), false),
        )
        .unwrap();
        assert_eq!(
            to,
            Some(CursorValue::Timestamp(local(12, 30) - TimeDelta::microseconds(1)))
        );
        let today = NaiveDate::from_ymd_opt(2026, 12, 1).unwrap();
        let (to, held) = hold_high(&spec(), None, Some(CursorValue::Date(today)), &seen(None, false)).unwrap();
        assert_eq!(
            to,
            Some(CursorValue::Date(today.pred_opt().unwrap())),
            "today may still get rows"
        );
        assert_eq!(held.unwrap().reason, "the database's clock");
    }

    #[test]
    fn an_unseen_start_holds_at_the_watermark_or_reads_nothing() {
        let high = Some(CursorValue::TimestampTz(at(11, 50)));
        let stored = CursorValue::TimestampTz(at(11, 0));
        let (to, held) = hold_high(&spec(), Some(&stored), high.clone(), &seen(None, true)).unwrap();
        assert_eq!(to, Some(stored));
        assert_eq!(held.unwrap().reason, "a prepared transaction");
        let (to, held) = hold_high(&spec(), None, high.clone(), &seen(None, true)).unwrap();
        assert_eq!((to, held.unwrap().to), (None, None), "a first run reads nothing");
        // Turned off: nothing held.
        let off = spec().wait_for_commits(false);
        assert_eq!(
            hold_high(&off, None, high.clone(), &seen(None, true)).unwrap(),
            (high, None)
        );
    }

    #[test]
    fn integer_cursors_are_not_held_and_refuse_a_settle_age() {
        let high = Some(CursorValue::Int(9));
        assert_eq!(
            hold_high(&spec(), None, high.clone(), &seen(Some(at(1, 0)), true)).unwrap(),
            (high.clone(), None)
        );
        let err = hold_high(&spec().settle(TimeDelta::minutes(1)), None, high, &seen(None, false)).unwrap_err();
        assert!(
            err.to_string().contains("`settle` needs a date or timestamp cursor"),
            "{err}"
        );
    }
}
