//! Key sets compared where they live, without moving the rows: per range of an integer
//! primary key, each system computes a digest (the count, the sum and a sum of a hash of its
//! keys); the ranges whose digests differ are narrowed to their keys. This finds the source
//! rows deleted behind an incremental watermark (no CDC needed), and the rows a target lost.
//!
//! ```text
//!  bounds (min, max key, both sides) ─► a key space of N ranges over their union
//!     ─► digests per range, both sides at once ─► ranges that differ
//!     ─► their keys, both sides ─► keys only in the target (deleted) / only in the source
//! ```
//!
//! The digest is integer arithmetic every SQL engine here computes the same way (no hash
//! function of one engine's own): `count(*)`, `sum(k)` and the sum of a cubic of `k` modulo
//! `P = 2^31 - 1` ([`key_hash`]), with truncated remainders and no intermediate past 2^63.
//! It tells key sets apart that differ by accident (deletes, lost rows), not by design.
//!
//! Where reconciliation asks for the content of some columns ([`Content`]), each range's
//! digest also sums a hash of those columns' values per row: each value as an integer the
//! engines compute alike (the integer itself, days or microseconds since 1970, a decimal
//! scaled to an integer, the first 28 bits of a text's MD5), `u = v % Q + Q` (0 for NULL)
//! weighted by the column's place `i + 1`, the row's sum plus one times the key's weight
//! `|k % R| + 1`
//! ([`content_hash`]). A changed value changes its row's hash unless it changed by a multiple
//! of `Q`.

mod rows;

use std::collections::BTreeMap;

use async_trait::async_trait;

use crate::error::Result;
use crate::spec::TableSpec;

pub use rows::{HeldKeys, KeyRows, content_ints, row_hashes};

/// The modulus of [`key_hash`].
pub const HASH_MODULUS: i64 = 2_147_483_647;
/// The offset of [`key_hash`].
pub const HASH_OFFSET: i64 = 12_345;

/// The modulus of the values in [`content_hash`] (a prime near 2^28: up to
/// [`MAX_CONTENT_COLUMNS`] weighted values, times a key's weight, stay within a signed 64-bit
/// integer).
pub const CONTENT_MODULUS: i64 = 268_435_399;
/// The modulus of a key's weight in [`content_hash`] (a prime near 2^23).
pub const WEIGHT_MODULUS: i64 = 8_388_593;
/// The most columns a content digest takes.
pub const MAX_CONTENT_COLUMNS: usize = 32;

/// The per-key hash the digests sum, as the SQL engines compute it:
/// `((m * m % P) * (m + C)) % P` with `m = k % P` (a cubic, so that sets with the same count
/// and sum still differ).
pub fn key_hash(key: i64) -> i64 {
    let m = key % HASH_MODULUS;
    (m * m % HASH_MODULUS) * (m + HASH_OFFSET) % HASH_MODULUS
}

/// [`key_hash`] of the integer expression `k` in SQL.
pub fn key_hash_sql(k: &str) -> String {
    let (p, c) = (HASH_MODULUS, HASH_OFFSET);
    format!("(((({k} % {p}) * ({k} % {p})) % {p}) * (({k} % {p}) + {c})) % {p}")
}

/// The hash of one row's content, as the SQL engines compute it: the key's weight
/// `|k % R| + 1` times `1` plus the sum over the columns of `(v % Q + Q) * (i + 1)`, a NULL
/// counting 0 ([`CONTENT_MODULUS`] is `Q`, [`WEIGHT_MODULUS`] is `R`). The `1` keeps a row of
/// NULLs weighing its key, so that key sets differ by content even then. No remainder is
/// taken of the product, so a row whose sum changes changes its range's digest.
pub fn content_hash(key: i64, values: &[Option<i64>]) -> i64 {
    let q = CONTENT_MODULUS;
    let weight = key_weight(key);
    let sum: i64 = values
        .iter()
        .enumerate()
        .map(|(i, v)| v.map_or(0, |v| (v % q + q) * (i as i64 + 1)))
        .sum();
    weight * (1 + sum)
}

/// How a column's values enter a content digest: the integer each engine computes alike.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContentKind {
    /// An integer: itself.
    Integer,
    /// A boolean: 1 or 0.
    Boolean,
    /// A date: days since 1970-01-01.
    Date,
    /// A timestamp: microseconds since 1970-01-01 00:00 (UTC for one with a time zone,
    /// `true`).
    Timestamp(bool),
    /// A decimal of this scale: the value times 10^scale, rounded.
    Decimal(i8),
    /// A floating-point number: the value times 10^6, rounded.
    Float,
    /// Text (and anything else, as text): the first 28 bits (7 hex digits) of its MD5.
    Text,
}

impl ContentKind {
    /// The kind of an Arrow type.
    pub fn of(t: &arrow::datatypes::DataType) -> ContentKind {
        use arrow::datatypes::DataType as T;
        match t {
            T::Int8 | T::Int16 | T::Int32 | T::Int64 | T::UInt8 | T::UInt16 | T::UInt32 | T::UInt64 => {
                ContentKind::Integer
            }
            T::Boolean => ContentKind::Boolean,
            T::Date32 | T::Date64 => ContentKind::Date,
            T::Timestamp(_, tz) => ContentKind::Timestamp(tz.is_some()),
            T::Decimal128(_, s) | T::Decimal256(_, s) => ContentKind::Decimal((*s).max(0)),
            T::Float16 | T::Float32 | T::Float64 => ContentKind::Float,
            _ => ContentKind::Text,
        }
    }
}

/// A column of a content digest: its name in the spec and how its values enter the digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Content {
    /// The column.
    pub name: String,
    /// How its values are hashed.
    pub kind: ContentKind,
    /// Hashed by the engine's own function for its type, which both sides of the
    /// comparison share ([`KeyReader::native_hash`]): on Postgres `hashint8`, `hash_numeric`,
    /// `timestamp_hash`, `hashtext`, several times cheaper than the portable integers (MD5
    /// of text, numeric arithmetic).
    pub native: bool,
}

/// How a key column's values are cut: `ranges` ranges of `width` keys from `lo`
/// (range `r` holds `lo + r * width ..= lo + (r + 1) * width - 1`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeySpace {
    /// The least key.
    pub lo: i64,
    /// Keys per range.
    pub width: i64,
    /// How many ranges.
    pub ranges: i64,
}

impl KeySpace {
    /// About `ranges` ranges covering `lo ..= hi`.
    pub fn covering(lo: i64, hi: i64, ranges: i64) -> KeySpace {
        let span = i128::from(hi) - i128::from(lo) + 1;
        let width = (span / i128::from(ranges.max(1)) + 1).clamp(1, i128::from(i64::MAX)) as i64;
        let ranges = ((span + i128::from(width) - 1) / i128::from(width)) as i64;
        KeySpace { lo, width, ranges }
    }

    /// The range of `key`.
    pub fn range_of(&self, key: i64) -> i64 {
        ((i128::from(key) - i128::from(self.lo)) / i128::from(self.width)) as i64
    }
}

/// One range's digest.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RangeDigest {
    /// Keys in the range.
    pub count: u64,
    /// Their sum.
    pub sum: i128,
    /// The sum of their [`key_hash`]es; 0 when content is compared, whose sums tell key
    /// sets apart as well (and cost the engines less without it).
    pub hash: i128,
    /// The sum of their rows' [`content_hash`]es (0 when no content is compared).
    pub content: i128,
    /// The sum of their rows' weighted column sums (the [`content_hash`] without the key's
    /// weight; 0 when no content is compared).
    pub columns: i128,
}

/// Digests of a key set, by range (ranges without keys are absent).
pub type Digests = BTreeMap<i64, RangeDigest>;

/// A key and its row's [`content_hash`] (0 when no content is compared).
pub type KeyRow = (i64, i64);

/// The digests of `rows` (for a system that hands out its keys, such as a lake); with
/// `content` compared, without key hashes (see [`RangeDigest::hash`]).
pub fn digests_of(rows: impl IntoIterator<Item = KeyRow>, space: &KeySpace, content: bool) -> Digests {
    let mut out = Digests::new();
    for (k, h) in rows {
        let d = out.entry(space.range_of(k)).or_default();
        d.count += 1;
        d.sum += i128::from(k);
        if !content {
            d.hash += i128::from(key_hash(k));
        }
        d.content += i128::from(h);
        // The content hash is the key's weight times the column sum.
        d.columns += i128::from(h / key_weight(k));
    }
    out
}

/// A key's weight in [`content_hash`]: `|k % R| + 1`.
pub fn key_weight(key: i64) -> i64 {
    (key % WEIGHT_MODULUS).abs() + 1
}

/// Sorted keys as inclusive intervals of consecutive keys.
pub fn runs(keys: &[i64]) -> Vec<(i64, i64)> {
    let mut out: Vec<(i64, i64)> = Vec::new();
    for &k in keys {
        match out.last_mut() {
            Some(last) if last.1.checked_add(1) == Some(k) => last.1 = k,
            Some(last) if last.1 == k => {}
            _ => out.push((k, k)),
        }
    }
    out
}

/// The inclusive key intervals of `ranges` of `space`, adjacent ones merged.
pub fn intervals(space: &KeySpace, ranges: &[i64]) -> Vec<(i64, i64)> {
    let mut sorted = ranges.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut out: Vec<(i64, i64)> = Vec::new();
    for r in sorted {
        let lo = i128::from(space.lo) + i128::from(r) * i128::from(space.width);
        let hi = lo + i128::from(space.width) - 1;
        let clamp = |v: i128| v.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64;
        let (lo, hi) = (clamp(lo), clamp(hi));
        match out.last_mut() {
            Some(last) if last.1.checked_add(1) == Some(lo) => last.1 = hi,
            _ => out.push((lo, hi)),
        }
    }
    out
}

/// The ranges whose digests differ between two sides (absent on one side counts).
pub fn differing(a: &Digests, b: &Digests) -> Vec<i64> {
    let mut out: Vec<i64> = a
        .iter()
        .filter(|(r, d)| b.get(r) != Some(d))
        .map(|(r, _)| *r)
        .chain(b.keys().filter(|r| !a.contains_key(r)).copied())
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// The one key by which a range's two digests may differ, when they differ by one key
/// (`a` holds it and `b` does not): the difference of the sums, when it falls in the range
/// and, without `content`, the difference of the hash sums is its [`key_hash`]. With
/// `content` (no key hashes) the key is only a candidate, as when a row changed too: the
/// caller looks it up. Ranges that differ otherwise give `None` and are read key by key.
pub fn single_key(space: &KeySpace, range: i64, a: &RangeDigest, b: &RangeDigest, content: bool) -> Option<i64> {
    if a.count != b.count + 1 {
        return None;
    }
    let k = i64::try_from(a.sum - b.sum).ok()?;
    let hashed = content || a.hash - b.hash == i128::from(key_hash(k));
    (space.range_of(k) == range && k >= space.lo && hashed).then_some(k)
}

/// The keys that may be the one row whose content differs between a range's two digests
/// (the same keys on both sides): the difference of the content sums over that of the
/// column sums is the row's key weight `|k % R| + 1`, which names at most two keys of a range
/// no wider than `R`. Empty when the digests differ otherwise.
pub fn changed_key(space: &KeySpace, range: i64, a: &RangeDigest, b: &RangeDigest) -> Vec<i64> {
    let same_keys = a.count == b.count && a.sum == b.sum && a.hash == b.hash;
    let d_cols = a.columns - b.columns;
    if !same_keys || d_cols == 0 || space.width > WEIGHT_MODULUS {
        return Vec::new();
    }
    let d_content = a.content - b.content;
    if d_content % d_cols != 0 {
        return Vec::new();
    }
    let Ok(residue) = i64::try_from(d_content / d_cols - 1) else {
        return Vec::new();
    };
    if !(0..WEIGHT_MODULUS).contains(&residue) {
        return Vec::new();
    }
    let lo = i128::from(space.lo) + i128::from(range) * i128::from(space.width);
    let hi = lo + i128::from(space.width) - 1;
    let r = i128::from(WEIGHT_MODULUS);
    // Keys k in lo..=hi with |k % R| == residue: k ≡ residue (k ≥ 0) or k ≡ -residue (k < 0).
    let mut out = Vec::new();
    for target in [i128::from(residue), -i128::from(residue)] {
        let first = lo + (target - lo).rem_euclid(r);
        let mut k = first;
        while k <= hi {
            if let Ok(k64) = i64::try_from(k)
                && (k64 % WEIGHT_MODULUS).abs() == residue
                && !out.contains(&k64)
            {
                out.push(k64);
            }
            k += r;
        }
    }
    out
}

/// Keys only on one side of a comparison, and keys on both whose content differs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyDiff {
    /// Keys the target holds and the source does not: deleted at the source.
    pub only_in_target: Vec<i64>,
    /// Keys the source holds and the target does not: missing from the target.
    pub only_in_source: Vec<i64>,
    /// Keys on both sides whose rows' content hashes differ.
    pub changed: Vec<i64>,
}

/// The keys on one side only, and those whose content differs (both lists in any order).
pub fn diff_keys(mut source: Vec<KeyRow>, mut target: Vec<KeyRow>) -> KeyDiff {
    source.sort_unstable();
    source.dedup_by_key(|r| r.0);
    target.sort_unstable();
    target.dedup_by_key(|r| r.0);
    let (mut i, mut j) = (0, 0);
    let mut diff = KeyDiff::default();
    while i < source.len() || j < target.len() {
        match (source.get(i), target.get(j)) {
            (Some(s), Some(t)) if s.0 == t.0 => {
                if s.1 != t.1 {
                    diff.changed.push(s.0);
                }
                i += 1;
                j += 1;
            }
            (Some(s), Some(t)) if s.0 < t.0 => {
                diff.only_in_source.push(s.0);
                i += 1;
            }
            (Some(_), Some(t)) => {
                diff.only_in_target.push(t.0);
                j += 1;
            }
            (Some(s), None) => {
                diff.only_in_source.push(s.0);
                i += 1;
            }
            (None, Some(t)) => {
                diff.only_in_target.push(t.0);
                j += 1;
            }
            (None, None) => break,
        }
    }
    diff
}

/// The spec's one primary key column, which key comparisons need.
///
/// # Errors
/// [`crate::Error::Config`] for a key of none or several columns.
pub fn key_column(spec: &TableSpec) -> Result<&str> {
    match spec.primary_key.as_slice() {
        [key] => Ok(key),
        _ => Err(crate::Error::config(format!(
            "table `{}`: comparing keys needs a primary key of one column",
            spec.name
        ))),
    }
}

/// Rows of text cells, as the key queries of [`crate::kit::sql::Dialect`] answer them.
pub type Cells = Vec<Vec<Option<String>>>;

fn cell<T: std::str::FromStr>(table: &str, what: &str, v: Option<&Option<String>>) -> Result<T> {
    let text = v.and_then(|c| c.as_deref()).unwrap_or("").trim();
    // A sum some engines write with a zero fraction (`12.000`).
    let whole = match text.split_once('.') {
        Some((int, frac)) if frac.bytes().all(|b| b == b'0') => int,
        _ => text,
    };
    whole.parse().map_err(|_| {
        crate::Error::config(format!(
            "table `{table}`: finding deletes needs an integer primary key; its {what} reads `{text}`"
        ))
    })
}

/// The answer of [`crate::kit::sql::Dialect::key_bounds`].
///
/// # Errors
/// [`crate::Error::Config`] for a key that is not an integer.
pub fn parse_bounds(table: &str, rows: &Cells) -> Result<Option<(i64, i64)>> {
    match rows.first() {
        Some(r) if r.first().is_some_and(Option::is_some) => Ok(Some((
            cell(table, "least key", r.first())?,
            cell(table, "greatest key", r.get(1))?,
        ))),
        _ => Ok(None),
    }
}

/// The answer of [`crate::kit::sql::Dialect::key_digests`].
///
/// # Errors
/// [`crate::Error::Config`] for an answer that is not numbers.
pub fn parse_digests(table: &str, rows: &Cells) -> Result<Digests> {
    rows.iter()
        .map(|r| {
            Ok((
                cell(table, "key range", r.first())?,
                RangeDigest {
                    count: cell(table, "key count", r.get(1))?,
                    sum: cell(table, "key sum", r.get(2))?,
                    hash: cell(table, "key hash", r.get(3))?,
                    content: match r.get(4) {
                        Some(c) => cell(table, "content hash", Some(c))?,
                        None => 0,
                    },
                    columns: match r.get(5) {
                        Some(c) => cell(table, "column sum", Some(c))?,
                        None => 0,
                    },
                },
            ))
        })
        .collect()
}

/// The answer of [`crate::kit::sql::Dialect::keys_in`]: keys, with their rows' content
/// hashes when the answer has them.
///
/// # Errors
/// [`crate::Error::Config`] for a key that is not an integer.
pub fn parse_keys(table: &str, rows: &Cells) -> Result<Vec<KeyRow>> {
    rows.iter()
        .map(|r| {
            Ok((
                cell(table, "key", r.first())?,
                match r.get(1) {
                    Some(c) => cell(table, "content hash", Some(c))?,
                    None => 0,
                },
            ))
        })
        .collect()
}

/// A system's side of a key comparison: a source reads the spec's source relation, a sink
/// its target table. The spec has one primary key column, of an integer type.
///
/// # Contract
/// - Every answer is computed inside the system (SQL), or from the key column (and the
///   `content` columns) alone: no other column is read.
/// - [`KeyReader::key_digests`] and [`KeyReader::keys_in`] see rows the way
///   [`KeyReader::key_bounds`] does: of a sink, the target's live rows.
/// - With `content`, digests and keys carry the [`content_hash`] of those columns, each
///   valued as its [`ContentKind`] says (columns named as in the spec; a sink finds them
///   under the names it gave them).
#[async_trait]
pub trait KeyReader: Send + Sync {
    /// The least and the greatest key; `None` for no rows.
    async fn key_bounds(&self, spec: &TableSpec) -> Result<Option<(i64, i64)>>;

    /// The digest of every range of `space` that holds keys.
    async fn key_digests(&self, spec: &TableSpec, space: &KeySpace, content: &[Content]) -> Result<Digests>;

    /// The keys of the given ranges of `space`, with their rows' content hashes.
    async fn keys_in(
        &self,
        spec: &TableSpec,
        space: &KeySpace,
        ranges: &[i64],
        content: &[Content],
    ) -> Result<Vec<KeyRow>>;

    /// The rows of the given keys that this side holds: each key with its row's content
    /// hash.
    async fn keys_of(&self, spec: &TableSpec, keys: &[i64], content: &[Content]) -> Result<Vec<KeyRow>>;

    /// The engine's own hash functions, when it has them ([`Content::native`]): two sides
    /// that name the same ones compare content by them.
    fn native_hash(&self) -> Option<&'static str> {
        None
    }

    /// How the named columns enter a content digest, from their types here (asked of the
    /// source; the target's columns hold what the source's did).
    ///
    /// # Errors
    /// [`crate::Error::ColumnNotFound`] for a column the relation lacks; by default,
    /// [`crate::Error::Config`]: this side cannot say.
    async fn content(&self, spec: &TableSpec, columns: &[String]) -> Result<Vec<Content>> {
        let _ = columns;
        Err(undescribed(spec))
    }
}

/// The refusal of a side that cannot describe its columns for a content digest.
fn undescribed(spec: &TableSpec) -> crate::Error {
    crate::Error::config(format!(
        "table `{}`: this side of the comparison does not describe its columns for a content digest",
        spec.name
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_narrow_to_the_keys_that_differ() {
        let space = KeySpace::covering(1, 1000, 16);
        assert_eq!(space.range_of(1), 0);
        assert_eq!(space.range_of(1000), space.ranges - 1);
        let source: Vec<i64> = (1..=1000).filter(|k| k % 97 != 0).collect();
        let target: Vec<i64> = (1..=1000).filter(|k| *k != 500).collect();
        let rows = |keys: &[i64]| -> Vec<KeyRow> { keys.iter().map(|k| (*k, 0)).collect() };
        let (s, t) = (
            digests_of(rows(&source), &space, false),
            digests_of(rows(&target), &space, false),
        );
        let ranges = differing(&s, &t);
        assert!(ranges.len() < space.ranges as usize, "{ranges:?}");
        let pick = |keys: &[i64]| -> Vec<KeyRow> {
            keys.iter()
                .map(|k| (*k, 0))
                .filter(|(k, _)| ranges.contains(&space.range_of(*k)))
                .collect()
        };
        let diff = diff_keys(pick(&source), pick(&target));
        assert_eq!(
            diff.only_in_target,
            (1..=10).map(|i| i * 97).filter(|k| *k != 500).collect::<Vec<_>>()
        );
        assert_eq!(diff.only_in_source, vec![500]);
        // Same count and same sum, other keys: the hash tells them apart.
        let a = digests_of([(1, 0), (4, 0)], &KeySpace::covering(0, 9, 1), false);
        let b = digests_of([(2, 0), (3, 0)], &KeySpace::covering(0, 9, 1), false);
        assert_eq!(differing(&a, &b), vec![0]);
        assert_eq!(key_hash(-5), 25 * (12_345 - 5), "truncated remainders, as SQL's %");
        assert_eq!(key_hash(i64::MAX), {
            let m = i64::MAX % HASH_MODULUS;
            (m * m % HASH_MODULUS) * (m + HASH_OFFSET) % HASH_MODULUS
        });
    }

    #[test]
    fn content_hashes_tell_changed_rows_apart() {
        let q = CONTENT_MODULUS;
        assert_eq!(content_hash(7, &[Some(1), None]), (1 + 1 + q) * 8);
        assert_eq!(content_hash(-7, &[None, Some(-1)]), (1 + (q - 1) * 2) * 8);
        assert_eq!(content_hash(7, &[None, None]), 8, "a row of NULLs weighs its key");
        assert_ne!(content_hash(7, &[Some(0)]), content_hash(7, &[None]), "NULL is not 0");
        assert_ne!(
            content_hash(7, &[Some(1), Some(2)]),
            content_hash(7, &[Some(2), Some(1)])
        );
        let big = content_hash(i64::MAX, &[Some(i64::MAX); MAX_CONTENT_COLUMNS]);
        assert!(big > 0, "no overflow at the limits");
        let diff = diff_keys(vec![(1, 5), (2, 6), (3, 7)], vec![(2, 6), (3, 8), (4, 0)]);
        assert_eq!(diff.only_in_source, vec![1]);
        assert_eq!(diff.only_in_target, vec![4]);
        assert_eq!(diff.changed, vec![3]);
        let space = KeySpace {
            lo: 10,
            width: 5,
            ranges: 10,
        };
        assert_eq!(intervals(&space, &[3, 1, 2, 7]), vec![(15, 29), (45, 49)]);
        assert_eq!(runs(&[1, 2, 3, 5, 5, 9]), vec![(1, 3), (5, 5), (9, 9)]);
    }

    #[test]
    fn a_range_that_lost_one_key_names_it() {
        let space = KeySpace::covering(1, 1000, 16);
        let all: Vec<KeyRow> = (1..=1000).map(|k| (k, 0)).collect();
        let lost: Vec<KeyRow> = all.iter().copied().filter(|(k, _)| *k != 500).collect();
        let two: Vec<KeyRow> = lost.iter().copied().filter(|(k, _)| *k != 501).collect();
        let (a, b, c) = (
            digests_of(all, &space, false),
            digests_of(lost, &space, false),
            digests_of(two, &space, false),
        );
        let r = space.range_of(500);
        assert_eq!(single_key(&space, r, &a[&r], &b[&r], false), Some(500));
        assert_eq!(
            single_key(&space, r, &b[&r], &a[&r], false),
            None,
            "the other way round"
        );
        assert_eq!(single_key(&space, r, &a[&r], &c[&r], false), None, "two keys");
        // Same count difference, but one key gone and another changed: the sums disagree.
        let swapped = RangeDigest {
            sum: b[&r].sum + 1,
            ..b[&r]
        };
        assert_eq!(single_key(&space, r, &a[&r], &swapped, false), None);
    }

    #[test]
    fn a_range_whose_one_row_changed_names_it() {
        let space = KeySpace::covering(1, 1000, 16);
        let row = |k: i64, v: i64| {
            let cols = [Some(v), Some(k)];
            (k, content_hash(k, &cols))
        };
        let digest = |rows: Vec<(i64, i64)>| digests_of(rows, &space, true);
        let before: Vec<_> = (1..=1000).map(|k| row(k, 3)).collect();
        let after: Vec<_> = (1..=1000).map(|k| row(k, if k == 321 { 7 } else { 3 })).collect();
        let (a, b) = (digest(after), digest(before));
        let r = space.range_of(321);
        assert_eq!(changed_key(&space, r, &a[&r], &b[&r]), vec![321]);
        let other = space.range_of(1);
        assert!(
            changed_key(&space, other, &a[&other], &b[&other]).is_empty(),
            "equal ranges"
        );
    }

    #[test]
    fn a_key_space_covers_the_whole_integer_range() {
        let s = KeySpace::covering(i64::MIN, i64::MAX, 1024);
        assert_eq!(s.range_of(i64::MIN), 0);
        assert!(s.range_of(i64::MAX) < s.ranges);
    }
}
