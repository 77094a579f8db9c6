//! Watermarks: where the last committed run of a table stopped, and the stores that keep them.
//!
//! # Protocol
//!
//! ```text
//!   load() ──► (generation g, position p) ──► read window (p, high] ──► sink commit
//!                                                                         │
//!   commit(expected = g, next = g+1, position = high) ◄────────────────────┘
//!        └─ another run already wrote g+1 ─► Error::ConcurrentRun, nothing changed
//! ```
//!
//! A watermark is a small JSON document per (pipeline, table) and generation. Commit is a
//! compare-and-swap: generation `g + 1` is created only if it does not exist yet
//! (`PutMode::Create`), so of two runs that started from the same generation exactly one can
//! advance it. The documents of the last runs are kept as history.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use object_store::ObjectStoreExt;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::location::Location;
use crate::mode::LoadMode;
use crate::position::{Checkpoint, CursorValue, Position};

/// A committed watermark document: one generation of one (pipeline, table).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Watermark {
    /// The pipeline.
    pub pipeline: String,
    /// The table (the spec's name).
    pub table: String,
    /// 1 for the first committed run, +1 for each run after. 0 only for a watermark imported
    /// from a legacy file, never stored.
    pub generation: u64,
    /// The run that committed it.
    pub run_id: String,
    /// When the watermark was committed.
    pub committed_at: DateTime<Utc>,
    /// The mode of the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<LoadMode>,
    /// The cursor value the run read from (exclusive), for the record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_low: Option<CursorValue>,
    /// Where the run stopped.
    pub position: Position,
    /// Rows the run wrote.
    #[serde(default)]
    pub rows: u64,
    /// Reset from code ([`crate::Pipeline::reset_watermark`]): the next run reads as a
    /// first run would.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reset: bool,
}

impl Watermark {
    /// The watermark of the run a sink's checkpoint records, as generation `generation`.
    pub fn from_checkpoint(pipeline: &str, table: &str, generation: u64, cp: &Checkpoint) -> Self {
        Watermark {
            pipeline: pipeline.to_string(),
            table: table.to_string(),
            generation,
            run_id: cp.run_id.clone(),
            committed_at: cp.committed_at,
            mode: Some(cp.mode),
            window_low: cp.window_low.clone(),
            position: cp.position.clone(),
            rows: cp.rows,
            reset: false,
        }
    }

    /// Checks that `next` is the generation after `expected` (a store's compare-and-swap
    /// precondition).
    ///
    /// # Errors
    /// [`Error::Config`] naming both generations.
    pub fn check_follows(expected: Option<&Watermark>, next: &Watermark) -> Result<()> {
        let base = expected.map_or(0, |w| w.generation);
        if next.generation == base + 1 {
            Ok(())
        } else {
            Err(Error::config(format!(
                "watermark of `{}`: generation {} cannot follow generation {base}",
                next.table, next.generation
            )))
        }
    }
}

/// Keeps watermarks.
///
/// # Contract
/// - `load` of a (pipeline, table) never committed returns `Ok(None)`: "first run".
/// - `commit(expected, next)` succeeds only if the stored generation is still
///   `expected.generation` (0 when `expected` is `None`) and `next.generation` is one more;
///   otherwise it returns [`Error::ConcurrentRun`] and stores nothing.
/// - A committed watermark is durable when `commit` returns.
/// - Calls for different tables may run concurrently.
/// - A store a sink can write in its own commit's transaction names where it keeps the
///   watermarks ([`WatermarkStore::home`]); the pipeline then leaves each run's watermark to
///   that sink (see [`crate::WriteRequest::watermark_home`]), so one place writes it.
#[async_trait]
pub trait WatermarkStore: fmt::Debug + Send + Sync + 'static {
    /// The current watermark of a table, `None` before its first committed run.
    async fn load(&self, pipeline: &str, table: &str) -> Result<Option<Watermark>>;

    /// Compare-and-swap commit of `next` over `expected`.
    async fn commit(&self, expected: Option<&Watermark>, next: &Watermark) -> Result<()>;

    /// The last `limit` committed watermarks of a table, newest first.
    async fn history(&self, pipeline: &str, table: &str, limit: usize) -> Result<Vec<Watermark>>;

    /// Where the store keeps its watermarks, when a sink can write them there in its own
    /// commit's transaction (the Postgres watermark store: `postgres://user@host:port/db`
    /// and the schema); `None` (the default) for a store no sink writes.
    fn home(&self) -> Option<String> {
        None
    }
}

/// Watermarks as JSON documents on any object store (a local folder, S3, memory).
///
/// Layout: `<prefix>/<pipeline>/<table>/<generation, 20 digits>.json`; the highest generation
/// is current, the last `keep` generations are kept as history (default 20).
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use etl_core::{Location, ObjectStoreWatermarkStore, WatermarkStore};
/// let store = ObjectStoreWatermarkStore::new(Location::memory());
/// assert!(store.load("daily", "public.orders").await.unwrap().is_none()); // first run
/// # });
/// ```
#[derive(Debug, Clone)]
pub struct ObjectStoreWatermarkStore {
    location: Location,
    keep: usize,
    legacy: HashMap<String, String>,
}

impl ObjectStoreWatermarkStore {
    /// A store under `location`.
    pub fn new(location: Location) -> Self {
        ObjectStoreWatermarkStore {
            location,
            keep: 20,
            legacy: HashMap::new(),
        }
    }

    /// How many generations to keep per table (at least 2).
    pub fn with_history(mut self, keep: usize) -> Self {
        self.keep = keep.max(2);
        self
    }

    /// Migration aid: when `table` has no watermark yet, start from the timestamp in the
    /// text file at `rel_path` under this store's location: the
    /// `last_processed_timestamp.txt` of existing Glue jobs (`2025-07-24 01:05:23`), or a
    /// `timestamp.csv` with or without a header line (`timestamp\n2025-07-24 01:05:23`, or
    /// an index column beside it as pandas writes one). With several rows, the latest
    /// timestamp is the watermark; a row without one is an error naming the file and line.
    pub fn with_legacy_timestamp_file(mut self, table: impl Into<String>, rel_path: impl Into<String>) -> Self {
        self.legacy.insert(table.into(), rel_path.into());
        self
    }

    fn dir(&self, pipeline: &str, table: &str) -> String {
        format!("{pipeline}/{table}")
    }

    async fn generations(&self, pipeline: &str, table: &str) -> Result<Vec<(u64, object_store::path::Path)>> {
        let mut gens: Vec<_> = self
            .location
            .list(&self.dir(pipeline, table))
            .await?
            .into_iter()
            .filter_map(|m| {
                let name = m.location.filename()?.strip_suffix(".json")?.parse::<u64>().ok()?;
                Some((name, m.location))
            })
            .collect();
        gens.sort_by_key(|(g, _)| *g);
        Ok(gens)
    }

    async fn read(&self, path: &object_store::path::Path) -> Result<Watermark> {
        self.location.get_json(path).await
    }

    async fn read_legacy(&self, pipeline: &str, table: &str) -> Result<Option<Watermark>> {
        let Some(rel) = self.legacy.get(table) else {
            return Ok(None);
        };
        let path = self.location.path(rel);
        let bytes = match self.location.store().get(&path).await {
            Ok(r) => r.bytes().await.map_err(|e| Error::store(&path, e))?,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(Error::store(&path, e)),
        };
        let text = String::from_utf8_lossy(&bytes);
        let ts = parse_legacy_file(&text).map_err(|message| Error::Metadata {
            path: path.to_string(),
            message,
        })?;
        Ok(Some(Watermark {
            pipeline: pipeline.to_string(),
            table: table.to_string(),
            generation: 0,
            run_id: format!("legacy:{rel}"),
            committed_at: Utc::now(),
            mode: None,
            window_low: None,
            position: Position {
                cursor: Some(CursorValue::Timestamp(ts)),
                files: BTreeMap::new(),
                key: None,
            },
            rows: 0,
            reset: false,
        }))
    }
}

/// The latest timestamp of a legacy watermark file: one value, or CSV rows under an optional
/// header line, each row's value in its last field that reads as a timestamp.
fn parse_legacy_file(text: &str) -> std::result::Result<NaiveDateTime, String> {
    let expected = "a timestamp like `2025-07-24 01:05:23`";
    let mut latest: Option<NaiveDateTime> = None;
    let rows = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty());
    for (n, (i, line)) in rows.enumerate() {
        let value = line
            .split(',')
            .rev()
            .find_map(|f| parse_legacy_timestamp(f.trim().trim_matches('"').trim()));
        match value {
            Some(v) => latest = latest.max(Some(v)),
            // The first line may name the columns.
            None if n == 0 => {}
            None => return Err(format!("line {}: expected {expected}, found `{}`", i + 1, line.trim())),
        }
    }
    latest.ok_or_else(|| format!("expected {expected}, found `{}`", text.trim()))
}

fn parse_legacy_timestamp(s: &str) -> Option<NaiveDateTime> {
    ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(s, f).ok())
        .or_else(|| NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()?.and_hms_opt(0, 0, 0))
}

#[async_trait]
impl WatermarkStore for ObjectStoreWatermarkStore {
    async fn load(&self, pipeline: &str, table: &str) -> Result<Option<Watermark>> {
        match self.generations(pipeline, table).await?.last() {
            Some((_, path)) => Ok(Some(self.read(path).await?)),
            None => self.read_legacy(pipeline, table).await,
        }
    }

    async fn commit(&self, expected: Option<&Watermark>, next: &Watermark) -> Result<()> {
        Watermark::check_follows(expected, next)?;
        let dir = self.dir(&next.pipeline, &next.table);
        let path = self.location.path(&format!("{dir}/{:020}.json", next.generation));
        if !self.location.create_json(&path, next).await? {
            return Err(Error::ConcurrentRun {
                pipeline: next.pipeline.clone(),
                table: next.table.clone(),
            });
        }
        // History: drop generations older than the last `keep`. Best effort.
        if next.generation > self.keep as u64 {
            let cutoff = next.generation - self.keep as u64;
            if let Ok(gens) = self.generations(&next.pipeline, &next.table).await {
                for (g, p) in gens.into_iter().filter(|(g, _)| *g <= cutoff) {
                    if let Err(e) = self.location.store().delete(&p).await {
                        tracing::warn!(generation = g, error = %e, "could not prune old watermark");
                    }
                }
            }
        }
        Ok(())
    }

    async fn history(&self, pipeline: &str, table: &str, limit: usize) -> Result<Vec<Watermark>> {
        let gens = self.generations(pipeline, table).await?;
        let mut out = Vec::new();
        for (_, p) in gens.iter().rev().take(limit) {
            out.push(self.read(p).await?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_timestamps_parse() {
        let t = parse_legacy_timestamp("2025-07-24 01:05:23").unwrap();
        assert_eq!(t.to_string(), "2025-07-24 01:05:23");
        let t = parse_legacy_timestamp("2025-07-24T01:05:23.250").unwrap();
        assert_eq!(t.and_utc().timestamp_subsec_millis(), 250);
        assert!(parse_legacy_timestamp("yesterday").is_none());
    }

    #[test]
    fn legacy_files_parse_with_or_without_a_header() {
        let at = |s: &str| parse_legacy_file(s).map(|t| t.to_string());
        assert_eq!(at("2025-07-24 01:05:23\n").unwrap(), "2025-07-24 01:05:23");
        assert_eq!(at("timestamp\n2025-07-24 01:05:23\n").unwrap(), "2025-07-24 01:05:23");
        // pandas' `to_csv` with its index, quoted, CRLF; the latest row wins.
        assert_eq!(
            at(",\"last_ts\"\r\n0,\"2025-07-24 01:05:23\"\r\n1,2025-07-25\r\n").unwrap(),
            "2025-07-25 00:00:00"
        );
        let err = at("timestamp\n2025-07-24 01:05:23\nsoon\n").unwrap_err();
        assert!(err.contains("line 3") && err.contains("soon"), "{err}");
        assert!(at("timestamp\n").unwrap_err().contains("timestamp"));
        assert!(at("").is_err());
    }

    #[test]
    fn cursor_values_order_within_a_type_only() {
        assert!(CursorValue::Int(2) > CursorValue::Int(1));
        assert_eq!(CursorValue::Int(1).partial_cmp(&CursorValue::Text("1".into())), None);
        assert_eq!(
            CursorValue::max_opt(Some(CursorValue::Int(3)), Some(CursorValue::Int(5))),
            Some(CursorValue::Int(5))
        );
        let json = serde_json::to_string(&CursorValue::Int(7)).unwrap();
        assert_eq!(json, r#"{"type":"int","value":7}"#);
    }
}
