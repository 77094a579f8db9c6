//! A side of a comparison that reads its keys (and its rows' content) into memory rather
//! than computing digests where they live: a lake, files. [`row_hashes`] values Arrow columns
//! as the SQL engines value theirs ([`crate::kit::sql::Dialect::content_int`], the portable
//! integers), and [`KeyRows`] answers every question of a [`super::KeyReader`] from them.

use std::collections::HashSet;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Date32Type, Decimal128Type, Float64Type, Int64Type, TimeUnit};
use async_trait::async_trait;
use md5::{Digest, Md5};

use super::{Content, ContentKind, Digests, KeyReader, KeyRow, KeySpace, content_hash, digests_of};
use crate::error::{Error, Result};
use crate::kit::batch::cast_column;
use crate::spec::TableSpec;

/// A side of a comparison that holds its key rows in memory (a lake, files): it is a
/// [`KeyReader`] answering from them.
#[async_trait]
pub trait HeldKeys: Send + Sync {
    /// The keys with their rows' hashes of `content` (`None`: whatever content, for the
    /// keys alone).
    async fn key_rows(&self, spec: &TableSpec, content: Option<&[Content]>) -> Result<Arc<KeyRows>>;

    /// As [`KeyReader::content`].
    ///
    /// # Errors
    /// As [`KeyReader::content`].
    async fn content(&self, spec: &TableSpec, columns: &[String]) -> Result<Vec<Content>> {
        let _ = columns;
        Err(super::undescribed(spec))
    }
}

#[async_trait]
impl<T: HeldKeys> KeyReader for T {
    async fn key_bounds(&self, spec: &TableSpec) -> Result<Option<(i64, i64)>> {
        Ok(self.key_rows(spec, None).await?.bounds())
    }

    async fn key_digests(&self, spec: &TableSpec, space: &KeySpace, content: &[Content]) -> Result<Digests> {
        Ok(self
            .key_rows(spec, Some(content))
            .await?
            .digests(space, !content.is_empty()))
    }

    async fn keys_in(
        &self,
        spec: &TableSpec,
        space: &KeySpace,
        ranges: &[i64],
        content: &[Content],
    ) -> Result<Vec<KeyRow>> {
        Ok(self.key_rows(spec, Some(content)).await?.keys_in(space, ranges))
    }

    async fn keys_of(&self, spec: &TableSpec, keys: &[i64], content: &[Content]) -> Result<Vec<KeyRow>> {
        Ok(self.key_rows(spec, Some(content)).await?.keys_of(keys))
    }

    async fn content(&self, spec: &TableSpec, columns: &[String]) -> Result<Vec<Content>> {
        HeldKeys::content(self, spec, columns).await
    }
}

/// Keys with their rows' content hashes, one row per key, sorted by key.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyRows {
    rows: Vec<KeyRow>,
}

impl KeyRows {
    /// The rows, sorted; of a key given twice, the later row counts.
    pub fn new(mut rows: Vec<KeyRow>) -> KeyRows {
        // A stable sort keeps a key's rows in their order; the last of each run wins.
        rows.sort_by_key(|r| r.0);
        let mut out: Vec<KeyRow> = Vec::with_capacity(rows.len());
        for r in rows {
            match out.last_mut() {
                Some(last) if last.0 == r.0 => *last = r,
                _ => out.push(r),
            }
        }
        KeyRows { rows: out }
    }

    /// How many keys.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether there are no keys.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The least and the greatest key.
    pub fn bounds(&self) -> Option<(i64, i64)> {
        self.rows.first().zip(self.rows.last()).map(|(a, b)| (a.0, b.0))
    }

    /// The digest of every range of `space` that holds keys (with `content` compared, no
    /// key hashes: [`super::RangeDigest::hash`]).
    pub fn digests(&self, space: &KeySpace, content: bool) -> Digests {
        digests_of(self.rows.iter().copied(), space, content)
    }

    /// The rows of the given ranges of `space`.
    pub fn keys_in(&self, space: &KeySpace, ranges: &[i64]) -> Vec<KeyRow> {
        let wanted: HashSet<i64> = ranges.iter().copied().collect();
        self.rows
            .iter()
            .filter(|(k, _)| wanted.contains(&space.range_of(*k)))
            .copied()
            .collect()
    }

    /// The rows of the given keys held here.
    pub fn keys_of(&self, keys: &[i64]) -> Vec<KeyRow> {
        keys.iter()
            .filter_map(|k| self.rows.binary_search_by_key(k, |r| r.0).ok().map(|i| self.rows[i]))
            .collect()
    }
}

/// Each row's key and [`content_hash`] of the `content` columns, found by name in `batch`;
/// rows without a key are left out.
///
/// # Errors
/// [`Error::ColumnNotFound`] for a column the batch lacks; [`Error::ColumnTypeConflict`] for
/// a key that is not an integer or a column whose values are not of its [`ContentKind`].
pub fn row_hashes(table: &str, batch: &RecordBatch, key: &str, content: &[Content]) -> Result<Vec<KeyRow>> {
    let column = |name: &str| {
        batch.column_by_name(name).ok_or_else(|| Error::ColumnNotFound {
            table: table.to_string(),
            column: name.to_string(),
        })
    };
    let keys = cast_column(table, key, column(key)?, &DataType::Int64)?;
    let keys = keys.as_primitive::<Int64Type>();
    let values: Vec<Vec<Option<i64>>> = content
        .iter()
        .map(|c| content_ints(table, &c.name, column(&c.name)?, c.kind))
        .collect::<Result<_>>()?;
    let mut row = vec![None; content.len()];
    let mut out = Vec::with_capacity(batch.num_rows());
    for i in (0..batch.num_rows()).filter(|i| keys.is_valid(*i)) {
        let k = keys.value(i);
        for (v, col) in row.iter_mut().zip(&values) {
            *v = col[i];
        }
        out.push((k, if content.is_empty() { 0 } else { content_hash(k, &row) }));
    }
    Ok(out)
}

/// The integers a column's values enter a content digest as, by `kind` (NULL as `None`):
/// what [`crate::kit::sql::Dialect::content_int`] computes in SQL.
///
/// # Errors
/// [`Error::ColumnTypeConflict`] for values that are not of the kind.
pub fn content_ints(table: &str, name: &str, col: &ArrayRef, kind: ContentKind) -> Result<Vec<Option<i64>>> {
    let overflow = |what: &str| Error::ColumnTypeConflict {
        table: table.to_string(),
        column: name.to_string(),
        expected: kind_name(kind).to_string(),
        found: format!("{} ({what})", col.data_type()),
    };
    let ints = |to: &DataType| -> Result<Vec<Option<i64>>> {
        let c = cast_column(table, name, col, to)?;
        let c = cast_column(table, name, &c, &DataType::Int64)?;
        Ok(c.as_primitive::<Int64Type>().iter().collect())
    };
    Ok(match kind {
        ContentKind::Integer => ints(&DataType::Int64)?,
        ContentKind::Boolean => {
            let c = cast_column(table, name, col, &DataType::Boolean)?;
            c.as_boolean().iter().map(|b| b.map(i64::from)).collect()
        }
        ContentKind::Date => {
            let c = cast_column(table, name, col, &DataType::Date32)?;
            c.as_primitive::<Date32Type>()
                .iter()
                .map(|d| d.map(i64::from))
                .collect()
        }
        ContentKind::Timestamp(_) => {
            // Microseconds since 1970 (a time zone's timestamps are UTC already).
            let tz = match col.data_type() {
                DataType::Timestamp(_, tz) => tz.clone(),
                _ => None,
            };
            ints(&DataType::Timestamp(TimeUnit::Microsecond, tz))?
        }
        ContentKind::Decimal(scale) => match col.data_type() {
            DataType::Decimal128(_, s) | DataType::Decimal256(_, s) => {
                let c = cast_column(table, name, col, &DataType::Decimal128(38, *s))?;
                let shift = i32::from(scale) - i32::from(*s);
                c.as_primitive::<Decimal128Type>()
                    .iter()
                    .map(|v| {
                        v.map(|v| rescale(v, shift).ok_or_else(|| overflow("out of range")))
                            .transpose()
                    })
                    .collect::<Result<_>>()?
            }
            DataType::Float16 | DataType::Float32 | DataType::Float64 => {
                let c = cast_column(table, name, col, &DataType::Float64)?;
                let m = 10f64.powi(i32::from(scale));
                // ROUND of a numeric: half away from zero.
                c.as_primitive::<Float64Type>()
                    .iter()
                    .map(|v| v.map(|v| (v * m).round() as i64))
                    .collect()
            }
            _ => {
                let m = 10i64
                    .checked_pow(u32::from(scale.unsigned_abs()))
                    .ok_or_else(|| overflow("scale"))?;
                ints(&DataType::Int64)?
                    .into_iter()
                    .map(|v| {
                        v.map(|v| v.checked_mul(m).ok_or_else(|| overflow("out of range")))
                            .transpose()
                    })
                    .collect::<Result<_>>()?
            }
        },
        ContentKind::Float => {
            let c = cast_column(table, name, col, &DataType::Float64)?;
            // ROUND of a double: to the nearest, ties to even (C's `rint`).
            c.as_primitive::<Float64Type>()
                .iter()
                .map(|v| v.map(|v| (v * 1_000_000.0).round_ties_even() as i64))
                .collect()
        }
        ContentKind::Text => {
            let c = cast_column(table, name, col, &DataType::Utf8)?;
            c.as_string::<i32>().iter().map(|s| s.map(text_int)).collect()
        }
    })
}

/// A decimal's unscaled value moved by `shift` decimal places, rounded half away from zero
/// (SQL's `ROUND`); `None` past a 64-bit integer.
fn rescale(v: i128, shift: i32) -> Option<i64> {
    let scaled = if shift >= 0 {
        v.checked_mul(10i128.checked_pow(shift.unsigned_abs())?)?
    } else {
        let d = 10i128.checked_pow(shift.unsigned_abs())?;
        let (q, r) = (v / d, v % d);
        if r.abs() * 2 >= d { q + v.signum() } else { q }
    };
    i64::try_from(scaled).ok()
}

/// The first 28 bits (7 hex digits) of the MD5 of the text's UTF-8 bytes.
fn text_int(s: &str) -> i64 {
    let d = Md5::digest(s.as_bytes());
    (i64::from(d[0]) << 20) | (i64::from(d[1]) << 12) | (i64::from(d[2]) << 4) | (i64::from(d[3]) >> 4)
}

fn kind_name(kind: ContentKind) -> &'static str {
    match kind {
        ContentKind::Integer => "an integer",
        ContentKind::Boolean => "a boolean",
        ContentKind::Date => "a date",
        ContentKind::Timestamp(_) => "a timestamp",
        ContentKind::Decimal(_) => "a decimal",
        ContentKind::Float => "a floating-point number",
        ContentKind::Text => "text",
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Decimal128Array, Float64Array, Int32Array, StringArray};
    use arrow::datatypes::{Field, Schema};

    use super::super::CONTENT_MODULUS;
    use super::*;

    #[test]
    fn values_enter_as_the_engines_compute_them() {
        // md5('ann') = 7e0d7f8a…: its first seven hex digits.
        assert_eq!(text_int("ann"), 0x7e0_d7f8);
        assert_eq!(rescale(12_345, -2), Some(123), "123.45 at scale 0");
        assert_eq!(rescale(12_350, -2), Some(124), "half away from zero");
        assert_eq!(rescale(-12_350, -2), Some(-124));
        assert_eq!(rescale(5, 2), Some(500));
        let prices: ArrayRef = Arc::new(
            Decimal128Array::from(vec![Some(1999), None])
                .with_precision_and_scale(10, 2)
                .unwrap(),
        );
        assert_eq!(
            content_ints("t", "p", &prices, ContentKind::Decimal(2)).unwrap(),
            vec![Some(1999), None]
        );
        let floats: ArrayRef = Arc::new(Float64Array::from(vec![Some(2.5), None, Some(-1.25)]));
        assert_eq!(
            content_ints("t", "f", &floats, ContentKind::Float).unwrap(),
            vec![Some(2_500_000), None, Some(-1_250_000)]
        );
    }

    #[test]
    fn key_rows_answer_a_comparison() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int32, true),
            Field::new("name", DataType::Utf8, true),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int32Array::from(vec![Some(3), Some(1), None, Some(3)])),
                Arc::new(StringArray::from(vec![Some("c"), Some("a"), Some("x"), Some("c2")])),
            ],
        )
        .unwrap();
        let content = [Content {
            name: "name".into(),
            kind: ContentKind::Text,
            native: false,
        }];
        let rows = KeyRows::new(row_hashes("t", &batch, "id", &content).unwrap());
        assert_eq!(rows.len(), 2, "the key-less row left out, key 3 once");
        assert_eq!(rows.bounds(), Some((1, 3)));
        let q = CONTENT_MODULUS;
        let later = content_hash(3, &[Some(text_int("c2"))]);
        assert_eq!(rows.keys_of(&[3, 2]), vec![(3, later)], "the later row of key 3");
        assert_eq!(later, 4 * (1 + text_int("c2") % q + q));
        let space = KeySpace::covering(1, 3, 3);
        assert_eq!(rows.keys_in(&space, &[0]).len(), 1);
        let d = rows.digests(&space, true);
        assert_eq!(d[&space.range_of(3)].columns, i128::from(1 + text_int("c2") % q + q));
        assert!(row_hashes("t", &batch, "nope", &content).is_err());
    }
}
