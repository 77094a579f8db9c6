//! Partition folders of [`Partitioning::Columns`](crate::Partitioning::Columns): one
//! `name=value` folder per key, outermost first, each value the column's (or its date or
//! timestamp in a strftime format), escaped as Hive escapes path names (`%3A` for `:`), so
//! that Hive, Spark, Athena and DuckDB read the value back from the path.

use std::collections::HashMap;

use arrow::array::{Array, ArrayRef, AsArray, Int64Array, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{DataType, TimeUnit};
use chrono::DateTime;
use chrono::format::{Fixed, Item, Numeric, StrftimeItems};

use super::NULL_PARTITION;
use crate::error::{Error, Result};
use crate::spec::PartitionKey;

const DAY_MICROS: i64 = 86_400_000_000;

/// Whether Hive (or an object store) needs `c` escaped in a path name.
fn needs_escape(c: char) -> bool {
    c.is_ascii_control()
        || matches!(
            c,
            '"' | '#'
                | '%'
                | '\''
                | '*'
                | '/'
                | ':'
                | '='
                | '?'
                | '\\'
                | '{'
                | '}'
                | '['
                | ']'
                | '^'
                | '`'
                | '<'
                | '>'
                | '|'
                | '~'
        )
}

/// A partition value as its folder holds it: `%XX` for each character Hive escapes (and those
/// object stores would), Hive's default partition for an empty value.
///
/// ```
/// use etl_core::lake::partition::{escape, unescape};
/// assert_eq!(escape("2025-07-24 01:05"), "2025-07-24 01%3A05");
/// assert_eq!(escape("a/b=c"), "a%2Fb%3Dc");
/// assert_eq!(unescape(&escape("50% off: {x}")), "50% off: {x}");
/// ```
pub fn escape(value: &str) -> String {
    if value.is_empty() {
        return NULL_PARTITION.to_string();
    }
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if needs_escape(c) {
            let mut b = [0; 4];
            for byte in c.encode_utf8(&mut b).bytes() {
                out.push_str(&format!("%{byte:02X}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A folder's value with its `%XX` escapes decoded (what [`escape`] wrote, or Hive or Spark).
pub fn unescape(value: &str) -> String {
    if !value.contains('%') {
        return value.to_string();
    }
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether `object_store` escapes `c` in a path part (its `INVALID` set).
fn store_escapes(c: char) -> bool {
    c.is_ascii_control()
        || matches!(
            c,
            '/' | '\\' | '{' | '^' | '}' | '%' | '`' | ']' | '"' | '>' | '[' | '~' | '<' | '#' | '|' | '*' | '?'
        )
}

/// Whether a path part is already escaped: it has `%XX` escapes and no character an object
/// store would escape (which keeps such a part as it is rather than escaping its `%` again).
pub fn is_escaped(part: &str) -> bool {
    let bytes = part.as_bytes();
    part.contains('%')
        && part.char_indices().all(|(i, c)| {
            c != '%' && !store_escapes(c)
                || c == '%'
                    && bytes
                        .get(i + 1..i + 3)
                        .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit))
        })
}

/// Whether a strftime format writes only parts of a date (so a timestamp's value depends on
/// its day alone); `None` for a format chrono cannot read.
fn date_only(format: &str) -> Option<bool> {
    let mut only = true;
    for item in StrftimeItems::new(format) {
        match item {
            Item::Error => return None,
            Item::Numeric(n, _) => {
                only &= !matches!(
                    n,
                    Numeric::Hour
                        | Numeric::Hour12
                        | Numeric::Minute
                        | Numeric::Second
                        | Numeric::Nanosecond
                        | Numeric::Timestamp
                ) && !matches!(n, Numeric::Internal(_))
            }
            Item::Fixed(f) => {
                only &= matches!(
                    f,
                    Fixed::ShortMonthName | Fixed::LongMonthName | Fixed::ShortWeekdayName | Fixed::LongWeekdayName
                )
            }
            _ => {}
        }
    }
    Some(only)
}

/// Checks the keys of a table's partitioning: names that make a folder, formats chrono can
/// read.
///
/// # Errors
/// [`Error::Config`] naming the table and the key.
pub fn check(table: &str, keys: &[PartitionKey]) -> Result<()> {
    if keys.is_empty() {
        return Err(Error::config(format!(
            "table `{table}`: partitioning by columns names no column"
        )));
    }
    for k in keys {
        if k.name.is_empty()
            || k.name.starts_with(['_', '.'])
            || k.name.chars().any(needs_escape)
            || k.column.is_empty()
        {
            return Err(Error::config(format!(
                "table `{table}`: partition key `{}` (of column `{}`): a key needs a name that makes a folder \
                 (not empty, not starting with `_` or `.`, none of `/=:%#?*\"'` and the like) and a column",
                k.name, k.column
            )));
        }
        if let Some(f) = &k.format
            && date_only(f).is_none()
        {
            return Err(Error::config(format!(
                "table `{table}`: partition key `{}`: `{f}` is not a strftime format (e.g. `%Y-%m-%d`, `%m`)",
                k.name
            )));
        }
    }
    let mut names: Vec<&str> = keys.iter().map(|k| k.name.as_str()).collect();
    names.sort_unstable();
    if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
        return Err(Error::config(format!(
            "table `{table}`: partition key `{}` appears twice",
            w[0]
        )));
    }
    Ok(())
}

/// One key's folders over a batch: each row's folder, as an index into `folders`.
struct Level {
    rows: Vec<u32>,
    folders: Vec<String>,
}

impl Level {
    fn new(rows: usize) -> Level {
        Level {
            rows: Vec::with_capacity(rows),
            folders: Vec::new(),
        }
    }

    /// Each folder with the indices of its rows, in order.
    fn groups(self) -> Vec<(String, Vec<u32>)> {
        let mut groups: Vec<Vec<u32>> = vec![Vec::new(); self.folders.len()];
        for (row, g) in self.rows.iter().enumerate() {
            groups[*g as usize].push(row as u32);
        }
        self.folders.into_iter().zip(groups).collect()
    }

    /// Row's folder: the one of `value` seen before, or `folder()` of it.
    fn push<K: std::hash::Hash + Eq>(&mut self, seen: &mut HashMap<K, u32>, value: K, folder: impl FnOnce() -> String) {
        let n = self.folders.len() as u32;
        let i = *seen.entry(value).or_insert(n);
        if i == n {
            self.folders.push(folder());
        }
        self.rows.push(i);
    }
}

/// A date or timestamp column as microseconds since the epoch (timestamps as their wall
/// clock, as `year=/month=/day=` partitions take them).
fn micros(col: &ArrayRef) -> Option<Int64Array> {
    let us = match col.data_type() {
        DataType::Date32 | DataType::Date64 | DataType::Timestamp(..) => {
            cast(col, &DataType::Timestamp(TimeUnit::Microsecond, None)).ok()?
        }
        _ => return None,
    };
    Some(cast(&us, &DataType::Int64).ok()?.as_primitive().clone())
}

fn level(table: &str, batch: &RecordBatch, key: &PartitionKey) -> Result<Level> {
    let col = batch.column_by_name(&key.column).ok_or_else(|| Error::ColumnNotFound {
        table: table.to_string(),
        column: key.column.clone(),
    })?;
    let conflict = |expected: String| Error::ColumnTypeConflict {
        table: table.to_string(),
        column: key.column.clone(),
        expected,
        found: col.data_type().to_string(),
    };
    let mut level = Level::new(col.len());
    match &key.format {
        Some(format) => {
            let us = micros(col)
                .ok_or_else(|| conflict(format!("a date or timestamp column for partition format `{format}`")))?;
            let folder = |us: i64| match DateTime::from_timestamp_micros(us) {
                Some(t) => escape(&t.naive_utc().format(format).to_string()),
                None => NULL_PARTITION.to_string(),
            };
            // A format of the date alone is written once per day; one with the time, per row
            // (two instants may share a folder).
            if date_only(format).unwrap_or(false) {
                let mut seen = HashMap::new();
                for v in us.iter() {
                    let day = v.map(|us| us.div_euclid(DAY_MICROS) * DAY_MICROS);
                    level.push(&mut seen, day, || {
                        day.map_or_else(|| NULL_PARTITION.to_string(), folder)
                    });
                }
            } else {
                let mut seen = HashMap::new();
                for v in us.iter() {
                    let f = v.map_or_else(|| NULL_PARTITION.to_string(), folder);
                    level.push(&mut seen, f.clone(), || f);
                }
            }
        }
        None => {
            let text = cast(col, &DataType::Utf8).map_err(|_| conflict("a column with a text form".into()))?;
            let text = text.as_string::<i32>();
            let mut seen = HashMap::new();
            for v in text.iter() {
                // An empty value is NULL's folder, as in Hive.
                match v.filter(|s| !s.is_empty()) {
                    None => level.push(&mut seen, None, || NULL_PARTITION.to_string()),
                    Some(s) => level.push(&mut seen, Some(s), || escape(s)),
                }
            }
        }
    }
    for f in &mut level.folders {
        *f = format!("{}={f}", key.name);
    }
    Ok(level)
}

/// The rows of `batch` by `year=/month=/day=` folder of the date or timestamp `column`
/// ([`Partitioning::ByDate`](crate::Partitioning::ByDate)), each folder with the indices of
/// its rows, in order.
///
/// # Errors
/// [`Error::ColumnNotFound`] for a column the batch lacks; [`Error::ColumnTypeConflict`] for
/// one that is not a date or timestamp.
pub fn split_by_date(table: &str, batch: &RecordBatch, column: &str) -> Result<Vec<(String, Vec<u32>)>> {
    let col = batch.column_by_name(column).ok_or_else(|| Error::ColumnNotFound {
        table: table.to_string(),
        column: column.to_string(),
    })?;
    let us = micros(col).ok_or_else(|| Error::ColumnTypeConflict {
        table: table.to_string(),
        column: column.to_string(),
        expected: "a date or timestamp partition column".to_string(),
        found: col.data_type().to_string(),
    })?;
    let mut level = Level::new(us.len());
    let mut seen = HashMap::new();
    for v in us.iter() {
        let day = v.map(|us| us.div_euclid(DAY_MICROS));
        level.push(&mut seen, day, || {
            super::date_partition(
                "",
                day.and_then(|d| DateTime::from_timestamp(d * 86_400, 0))
                    .map(|t| t.date_naive()),
            )
        });
    }
    Ok(level.groups())
}

/// The rows of `batch` by partition folder (`date=2025-07-24/device_id=7`), each folder with
/// the indices of its rows, in order.
///
/// # Errors
/// [`Error::ColumnNotFound`] for a key's column the batch lacks;
/// [`Error::ColumnTypeConflict`] for a format on a column that is not a date or timestamp.
pub fn split_rows(table: &str, batch: &RecordBatch, keys: &[PartitionKey]) -> Result<Vec<(String, Vec<u32>)>> {
    let mut levels = keys.iter().map(|k| level(table, batch, k));
    let mut outer = match levels.next() {
        Some(l) => l?,
        None => return Ok(vec![(String::new(), (0..batch.num_rows() as u32).collect())]),
    };
    for inner in levels {
        let inner = inner?;
        let mut both = Level::new(outer.rows.len());
        let mut seen = HashMap::new();
        for (o, i) in outer.rows.iter().zip(&inner.rows) {
            both.push(&mut seen, (*o, *i), || {
                format!("{}/{}", outer.folders[*o as usize], inner.folders[*i as usize])
            });
        }
        outer = both;
    }
    Ok(outer.groups())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Date32Array, Int64Array, StringArray, TimestampMicrosecondArray};

    use super::*;

    fn batch() -> RecordBatch {
        let day = |y, m, d| {
            chrono::NaiveDate::from_ymd_opt(y, m, d)
                .unwrap()
                .signed_duration_since(chrono::NaiveDate::from_ymd_opt(1970, 1, 1).unwrap())
                .num_days() as i32
        };
        RecordBatch::try_from_iter([
            (
                "order_date",
                Arc::new(Date32Array::from(vec![
                    Some(day(2025, 7, 24)),
                    Some(day(2025, 7, 24)),
                    None,
                    Some(day(2025, 8, 1)),
                ])) as ArrayRef,
            ),
            ("device_id", Arc::new(Int64Array::from(vec![7, 8, 7, 7])) as ArrayRef),
            (
                "site",
                Arc::new(StringArray::from(vec![Some("a/b"), Some(""), None, Some("x:y")])) as ArrayRef,
            ),
            (
                "at",
                Arc::new(TimestampMicrosecondArray::from(vec![0, 3_600_000_000, DAY_MICROS, 5])) as ArrayRef,
            ),
        ])
        .unwrap()
    }

    fn folders(keys: &[PartitionKey]) -> Vec<(String, Vec<u32>)> {
        split_rows("t", &batch(), keys).unwrap()
    }

    #[test]
    fn values_and_formats_make_folders() {
        let date = PartitionKey::formatted("date", "order_date", "%Y-%m-%d");
        assert_eq!(
            folders(&[date]),
            vec![
                ("date=2025-07-24".into(), vec![0, 1]),
                (format!("date={NULL_PARTITION}"), vec![2]),
                ("date=2025-08-01".into(), vec![3]),
            ]
        );
        let month = PartitionKey::formatted("month", "order_date", "%m");
        let device = PartitionKey::column("device_id");
        assert_eq!(
            folders(&[month, device]),
            vec![
                ("month=07/device_id=7".into(), vec![0]),
                ("month=07/device_id=8".into(), vec![1]),
                (format!("month={NULL_PARTITION}/device_id=7"), vec![2]),
                ("month=08/device_id=7".into(), vec![3]),
            ]
        );
        assert_eq!(
            folders(&[PartitionKey::column("site")]),
            vec![
                ("site=a%2Fb".into(), vec![0]),
                (format!("site={NULL_PARTITION}"), vec![1, 2]),
                ("site=x%3Ay".into(), vec![3]),
            ]
        );
        assert_eq!(
            folders(&[PartitionKey::formatted("hour", "at", "%Y%m%d%H")]),
            vec![
                ("hour=1970010100".into(), vec![0, 3]),
                ("hour=1970010101".into(), vec![1]),
                ("hour=1970010200".into(), vec![2]),
            ]
        );
    }

    #[test]
    fn dates_make_year_month_day_folders() {
        assert_eq!(
            split_by_date("t", &batch(), "order_date").unwrap(),
            vec![
                ("year=2025/month=7/day=24".into(), vec![0, 1]),
                (
                    format!("year={NULL_PARTITION}/month={NULL_PARTITION}/day={NULL_PARTITION}"),
                    vec![2]
                ),
                ("year=2025/month=8/day=1".into(), vec![3]),
            ]
        );
        let at: Vec<String> = split_by_date("t", &batch(), "at")
            .unwrap()
            .into_iter()
            .map(|(f, _)| f)
            .collect();
        assert_eq!(at, ["year=1970/month=1/day=1", "year=1970/month=1/day=2"]);
        let err = split_by_date("t", &batch(), "device_id").unwrap_err().to_string();
        assert!(err.contains("device_id") && err.contains("date or timestamp"), "{err}");
    }

    #[test]
    fn bad_keys_are_named() {
        let err = split_rows("t", &batch(), &[PartitionKey::formatted("m", "device_id", "%m")]).unwrap_err();
        assert!(err.to_string().contains("device_id"), "{err}");
        let err = split_rows("t", &batch(), &[PartitionKey::column("nope")]).unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
        assert!(
            check("t", &[PartitionKey::formatted("d", "order_date", "%Q")])
                .unwrap_err()
                .to_string()
                .contains("%Q")
        );
        assert!(check("t", &[PartitionKey::column("a=b")]).is_err());
        assert!(check("t", &[PartitionKey::column("a"), PartitionKey::column("a")]).is_err());
        assert!(check("t", &[]).is_err());
    }

    #[test]
    fn escaped_parts_are_recognised() {
        assert!(is_escaped("x%3Ay") && is_escaped("site=eu%3Awest"));
        assert!(!is_escaped("x%y"));
        assert!(!is_escaped("x%3A#"));
        assert!(!is_escaped("plain"));
    }
}
