//! The runner's comparison of a table's source and target after a run, in one place: what
//! [`crate::TableSpec::detect_deletes`] and [`crate::TableSpec::reconcile`] share (one pass
//! of digests on each side, then the keys of the ranges that differ), and what each makes
//! of it.
//!
//! ```text
//!  key bounds (both sides) ─► key space ─► digests per range (keys; content where asked)
//!     ─► ranges that differ ─► their keys (and row hashes), both sides
//!     ─► only in the target (deleted at the source / extra), only in the source (missing),
//!        changed ─► deletes, a verdict, a repair's key intervals
//! ```

use crate::error::{Error, Result};
use crate::keys::{self, Content, KeyDiff, KeyReader, KeySpace};
use crate::report::{KeyCheck, ReconcileStatus, Reconciliation};
use crate::sink::Sink;
use crate::source::Source;
use crate::spec::TableSpec;

/// Ranges per `keys_in` query: each query is one pass over each side.
const RANGES_PER_QUERY: usize = 65_536;

/// What one comparison found.
pub(crate) struct Comparison {
    /// How the key column was cut.
    pub space: KeySpace,
    /// The ranges whose digests differed.
    pub differing: Vec<i64>,
    /// Their keys, sorted out.
    pub diff: KeyDiff,
    /// Keys read from both sides together.
    pub keys_read: u64,
    /// Rows in the source.
    pub source_rows: u64,
    /// Rows in the target.
    pub target_rows: u64,
    /// The columns whose content was compared.
    pub content: Vec<Content>,
}

impl Comparison {
    /// The report's figures, with `deleted` keys deleted at the source.
    pub fn check(&self, deleted: u64) -> KeyCheck {
        KeyCheck {
            ranges: self.space.ranges as u64,
            ranges_differing: self.differing.len() as u64,
            deleted_at_source: deleted,
            missing_in_target: self.diff.only_in_source.len() as u64,
            changed_in_target: self.diff.changed.len() as u64,
            keys_read: self.keys_read,
        }
    }

    /// The ranges of the keys a repair reloads: missing from the target, or changed.
    pub fn reload_ranges(&self) -> Vec<i64> {
        let mut r: Vec<i64> = self
            .diff
            .only_in_source
            .iter()
            .chain(&self.diff.changed)
            .map(|k| self.space.range_of(*k))
            .collect();
        r.sort_unstable();
        r.dedup();
        r
    }

    /// The verdict before any repair: extra keys are those still in the target after
    /// `deleted` were deleted as deletes at the source.
    pub fn verdict(&self, deleted: u64) -> Reconciliation {
        let extra = self.diff.only_in_target.len() as u64 - deleted;
        let mut ranges: Vec<i64> = self.reload_ranges();
        if extra > 0 {
            ranges.extend(self.diff.only_in_target.iter().map(|k| self.space.range_of(*k)));
            ranges.sort_unstable();
            ranges.dedup();
        }
        let intervals = keys::intervals(&self.space, &ranges);
        let matched = intervals.is_empty();
        Reconciliation {
            status: if matched {
                ReconcileStatus::Reconciled
            } else {
                ReconcileStatus::Mismatched
            },
            source_rows: self.source_rows,
            target_rows: self.target_rows,
            content: self.content.iter().map(|c| c.name.clone()).collect(),
            missing_in_target: self.diff.only_in_source.len() as u64,
            extra_in_target: extra,
            changed_in_target: self.diff.changed.len() as u64,
            mismatched_intervals: intervals.len() as u64,
            mismatched: intervals.into_iter().take(Reconciliation::LISTED).collect(),
            reloaded_rows: 0,
            deleted_keys: 0,
        }
    }
}

/// What a mismatch reads as, in an error or a warning.
pub(crate) fn describe(r: &Reconciliation) -> String {
    let shown: Vec<String> = r
        .mismatched
        .iter()
        .take(5)
        .map(|(lo, hi)| format!("{lo}..={hi}"))
        .collect();
    format!(
        "{} keys missing from the target, {} extra in it, {} changed, in {} key ranges ({}{}); source {} rows, \
         target {}",
        r.missing_in_target,
        r.extra_in_target,
        r.changed_in_target,
        r.mismatched_intervals,
        shown.join(", "),
        if r.mismatched_intervals > 5 { ", …" } else { "" },
        r.source_rows,
        r.target_rows
    )
}

/// Both sides' key readers, or an error saying which side cannot compare.
pub(crate) fn readers<'a>(
    source: &'a dyn Source,
    sink: &'a dyn Sink,
    spec: &TableSpec,
) -> Result<(&'a dyn KeyReader, &'a dyn KeyReader)> {
    let can = |b: bool| if b { "does" } else { "does not" };
    if spec.primary_key.len() != 1 {
        return Err(Error::config(format!(
            "table `{}`: comparing source and target (detect_deletes, reconcile) needs a primary key of one \
             integer column; it has {}",
            spec.name,
            spec.primary_key.len()
        )));
    }
    match (source.key_reader(), sink.key_reader()) {
        (Some(s), Some(t)) => Ok((s, t)),
        (s, t) => Err(Error::config(format!(
            "table `{}`: comparing source and target (detect_deletes, reconcile) needs a source and a sink that \
             compare keys; source `{}` {} and sink `{}` {}",
            spec.name,
            source.name(),
            can(s.is_some()),
            sink.name(),
            can(t.is_some()),
        ))),
    }
}

/// Compares the key sets (and the content of `columns`) of source and target by range
/// digests and narrows the ranges that differ to their keys.
pub(crate) async fn compare(
    source: &dyn KeyReader,
    target: &dyn KeyReader,
    spec: &TableSpec,
    ranges: i64,
    columns: &[String],
) -> Result<Comparison> {
    let mut content = if columns.is_empty() {
        Vec::new()
    } else {
        source.content(spec, columns).await?
    };
    // Two sides of one engine compare content by its own hash functions.
    if source.native_hash().is_some() && source.native_hash() == target.native_hash() {
        for c in &mut content {
            c.native = true;
        }
    }
    let (in_source, in_target) = futures::try_join!(source.key_bounds(spec), target.key_bounds(spec))?;
    let (lo, hi) = match (in_source, in_target) {
        (Some((a, b)), Some((c, d))) => (a.min(c), b.max(d)),
        (Some(b), None) | (None, Some(b)) => b,
        (None, None) => (0, 0),
    };
    let space = KeySpace::covering(lo, hi, ranges);
    let (sd, td) = futures::try_join!(
        source.key_digests(spec, &space, &content),
        target.key_digests(spec, &space, &content)
    )?;
    let source_rows = sd.values().map(|d| d.count).sum();
    let target_rows = td.values().map(|d| d.count).sum();
    let differing = keys::differing(&sd, &td);
    let (mut sk, mut tk) = (Vec::new(), Vec::new());
    for chunk in differing.chunks(RANGES_PER_QUERY) {
        let (s, t) = futures::try_join!(
            source.keys_in(spec, &space, chunk, &content),
            target.keys_in(spec, &space, chunk, &content)
        )?;
        sk.extend(s);
        tk.extend(t);
    }
    let keys_read = (sk.len() + tk.len()) as u64;
    Ok(Comparison {
        space,
        differing,
        diff: keys::diff_keys(sk, tk),
        keys_read,
        source_rows,
        target_rows,
        content,
    })
}

/// After a repair: the repaired ranges compared again, key by key; the keys still unlike.
pub(crate) async fn recheck(
    source: &dyn KeyReader,
    target: &dyn KeyReader,
    spec: &TableSpec,
    c: &Comparison,
    ranges: &[i64],
) -> Result<KeyDiff> {
    let (mut sk, mut tk) = (Vec::new(), Vec::new());
    for chunk in ranges.chunks(RANGES_PER_QUERY) {
        let (s, t) = futures::try_join!(
            source.keys_in(spec, &c.space, chunk, &c.content),
            target.keys_in(spec, &c.space, chunk, &c.content)
        )?;
        sk.extend(s);
        tk.extend(t);
    }
    Ok(keys::diff_keys(sk, tk))
}

/// The guard of a delete: more than `max_share` of the target's rows is refused.
pub(crate) fn guard(spec: &TableSpec, found: u64, target_rows: u64, max_share: f64) -> Result<()> {
    if found as f64 > max_share * target_rows as f64 {
        return Err(Error::MassDelete {
            table: spec.name.clone(),
            found,
            target_rows,
            max_share,
        });
    }
    Ok(())
}
