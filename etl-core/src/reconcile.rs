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

use std::collections::HashMap;

use crate::error::{Error, Result};
use crate::keys::{self, Content, KeyDiff, KeyReader, KeyRow, KeySpace};
use crate::report::{KeyCheck, ReconcileStatus, Reconciliation};
use crate::sink::Sink;
use crate::source::Source;
use crate::spec::TableSpec;

/// Ranges per `keys_in` query: each query is one pass over each side.
const RANGES_PER_QUERY: usize = 65_536;
/// Keys per `keys_of` query.
const KEYS_PER_QUERY: usize = 20_000;

/// Takes one row (key `k`, content hash `rh`) out of a range's digest (which sums key hashes
/// only without content).
fn take(d: &mut keys::RangeDigest, k: i64, rh: i64, content: bool) {
    d.count = d.count.saturating_sub(1);
    d.sum -= i128::from(k);
    if !content {
        d.hash -= i128::from(keys::key_hash(k));
    }
    d.content -= i128::from(rh);
    d.columns -= i128::from(rh / keys::key_weight(k));
}

/// What a range's digests say of the key they name.
#[derive(Clone, Copy)]
enum Named {
    /// The source holds it and the target does not.
    OnlyInSource,
    /// The target holds it and the source does not.
    OnlyInTarget,
    /// Both hold it; its row's content differs.
    Changed,
}

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

    /// The keys a repair reloads, sorted: missing from the target, or changed.
    pub fn reload_keys(&self) -> Vec<i64> {
        let mut k: Vec<i64> = self
            .diff
            .only_in_source
            .iter()
            .chain(&self.diff.changed)
            .copied()
            .collect();
        k.sort_unstable();
        k.dedup();
        k
    }

    /// The ranges of the keys a repair reloads.
    fn reload_ranges(&self) -> Vec<i64> {
        let mut r: Vec<i64> = self.reload_keys().iter().map(|k| self.space.range_of(*k)).collect();
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
    let compared = !content.is_empty();
    let (sd, td) = futures::try_join!(
        source.key_digests(spec, &space, &content),
        target.key_digests(spec, &space, &content)
    )?;
    let source_rows = sd.values().map(|d| d.count).sum();
    let target_rows = td.values().map(|d| d.count).sum();
    let differing = keys::differing(&sd, &td);
    // A range that differs by one key, or by one row's content, names it in its digests:
    // that key is looked up on both sides (by the key's index, where there is one) and its
    // rows taken out of the range's digests; what is left may name another key (two rounds
    // more at most). The ranges left unexplained are read key by key.
    let none = keys::RangeDigest::default();
    let mut left: HashMap<i64, (keys::RangeDigest, keys::RangeDigest)> = differing
        .iter()
        .map(|r| {
            (
                *r,
                (sd.get(r).copied().unwrap_or(none), td.get(r).copied().unwrap_or(none)),
            )
        })
        .collect();
    let mut pending: Vec<i64> = differing.clone();
    let mut scan: Vec<i64> = Vec::new();
    let (mut sk, mut tk) = (Vec::new(), Vec::new());
    for _round in 0..3 {
        let mut named: Vec<(i64, i64, Named)> = Vec::new();
        for &r in &pending {
            let (s, t) = left[&r];
            match (
                keys::single_key(&space, r, &s, &t, compared),
                keys::single_key(&space, r, &t, &s, compared),
            ) {
                (Some(k), _) => named.push((r, k, Named::OnlyInSource)),
                (None, Some(k)) => named.push((r, k, Named::OnlyInTarget)),
                (None, None) => {
                    let candidates = keys::changed_key(&space, r, &s, &t);
                    if candidates.is_empty() {
                        scan.push(r);
                    }
                    named.extend(candidates.into_iter().map(|k| (r, k, Named::Changed)));
                }
            }
        }
        let mut wrong = std::collections::HashSet::new();
        for chunk in named.chunks(KEYS_PER_QUERY) {
            // A key named as on one side only is looked up on that side: its row taken out
            // of that side's digests must make the two equal, or the range is read key by
            // key (where, as for every range, equal digests stand for equal keys and rows).
            let on = |side: fn(&Named) -> bool| -> Vec<i64> {
                chunk
                    .iter()
                    .filter(|(_, _, how)| side(how))
                    .map(|(_, k, _)| *k)
                    .collect()
            };
            let (in_source, in_target) = (
                on(|how| !matches!(how, Named::OnlyInTarget)),
                on(|how| !matches!(how, Named::OnlyInSource)),
            );
            let (s, t) = futures::try_join!(
                lookup(source, spec, &in_source, &content),
                lookup(target, spec, &in_target, &content)
            )?;
            let (s_rows, t_rows): (HashMap<i64, i64>, HashMap<i64, i64>) =
                (s.iter().copied().collect(), t.iter().copied().collect());
            for (r, k, how) in chunk {
                let (s_row, t_row) = (s_rows.get(k).copied(), t_rows.get(k).copied());
                let (ds, dt) = left.get_mut(r).expect("a differing range");
                match (how, s_row, t_row) {
                    (Named::OnlyInSource, Some(rs), _) => take(ds, *k, rs, compared),
                    (Named::OnlyInTarget, _, Some(rt)) => take(dt, *k, rt, compared),
                    (Named::Changed, Some(rs), Some(rt)) => {
                        take(ds, *k, rs, true);
                        take(dt, *k, rt, true);
                    }
                    // The digests named a key the sides do not hold so: read the range.
                    _ => {
                        wrong.insert(*r);
                    }
                }
            }
            sk.extend(s);
            tk.extend(t);
        }
        scan.extend(wrong.iter().copied());
        pending = named
            .iter()
            .map(|(r, _, _)| *r)
            .filter(|r| !wrong.contains(r) && left[r].0 != left[r].1)
            .collect();
        pending.sort_unstable();
        pending.dedup();
        if pending.is_empty() {
            break;
        }
    }
    scan.extend(pending);
    scan.sort_unstable();
    scan.dedup();
    // The keys looked up are read again with their ranges where they did not explain them.
    let scanned: std::collections::HashSet<i64> = scan.iter().copied().collect();
    sk.retain(|(k, _)| !scanned.contains(&space.range_of(*k)));
    tk.retain(|(k, _)| !scanned.contains(&space.range_of(*k)));
    for chunk in scan.chunks(RANGES_PER_QUERY) {
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

/// The rows of `keys` on one side (none asked, no query).
async fn lookup(side: &dyn KeyReader, spec: &TableSpec, keys: &[i64], content: &[Content]) -> Result<Vec<KeyRow>> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    side.keys_of(spec, keys, content).await
}

/// After a repair: the repaired keys compared again; the keys still unlike.
pub(crate) async fn recheck(
    source: &dyn KeyReader,
    target: &dyn KeyReader,
    spec: &TableSpec,
    c: &Comparison,
    wanted: &[i64],
) -> Result<KeyDiff> {
    let (mut sk, mut tk) = (Vec::new(), Vec::new());
    for chunk in wanted.chunks(KEYS_PER_QUERY) {
        let (s, t) = futures::try_join!(
            source.keys_of(spec, chunk, &c.content),
            target.keys_of(spec, chunk, &c.content)
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
