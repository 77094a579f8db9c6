//! The run report: per table what was read, written and committed.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::mode::LoadMode;
use crate::position::{CursorValue, Position};

/// How a table's part of a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TableStatus {
    /// Data was committed to the target and the watermark moved.
    Committed,
    /// Nothing new past the watermark: nothing written, watermark unchanged.
    NoNewData,
    /// An optional table the source lacks: skipped with a warning.
    Skipped,
    /// The table failed; the target and watermark are as they were (see `error`).
    Failed,
}

/// A watermark in brief, for reports.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WatermarkSummary {
    /// The watermark's generation (0: none).
    pub generation: u64,
    /// Its cursor value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cursor: Option<CursorValue>,
    /// How many files its bookmark holds.
    #[serde(skip_serializing_if = "is_zero")]
    pub files: usize,
    /// The key of the last row read at `cursor` by a chunked read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<Vec<CursorValue>>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl WatermarkSummary {
    /// Summarises a position at a generation.
    pub fn of(generation: u64, p: &Position) -> Self {
        WatermarkSummary {
            generation,
            cursor: p.cursor.clone(),
            files: p.files.len(),
            key: p.key.clone(),
        }
    }
}

/// How far, and why, an incremental read ended its window below the high-water mark it saw
/// ([`crate::TableSpec::wait_for_commits`], [`crate::TableSpec::settle`]). The rows past `to`
/// are read by the next run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HeldBack {
    /// Where the window would have ended: the greatest cursor value in the read's snapshot,
    /// or the upper end a backfill ([`crate::Pipeline::backfill`]) or a shard of a plan names.
    pub high: CursorValue,
    /// Where the window ended instead: the cursor the run records (`None`: the run read
    /// nothing and records no cursor).
    pub to: Option<CursorValue>,
    /// How far below `high`, in milliseconds, for date and timestamp cursors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by_ms: Option<i64>,
    /// Why: the oldest transaction in progress (and who ran it), the settle age, the
    /// database's clock, or a transaction whose start cannot be seen.
    pub reason: String,
}

/// What a key comparison of source and target found ([`crate::keys`]).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct KeyCheck {
    /// Key ranges compared.
    pub ranges: u64,
    /// Ranges whose digests differed, narrowed to their keys.
    pub ranges_differing: u64,
    /// Keys the target held and the source no longer does (deleted from the target).
    pub deleted_at_source: u64,
    /// Keys the source holds and the target does not.
    pub missing_in_target: u64,
    /// Keys both hold whose compared content differs ([`crate::Reconcile::content`]).
    #[serde(default)]
    pub changed_in_target: u64,
    /// Keys read from each side to narrow the differing ranges.
    pub keys_read: u64,
}

/// Whether the target holds what the source holds, after a run ([`crate::TableSpec::reconcile`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReconcileStatus {
    /// Every range's keys, counts and compared content agree.
    Reconciled,
    /// Some ranges differ (see `mismatched`).
    Mismatched,
    /// Ranges differed; they were reloaded and their extra keys deleted, and they now agree.
    Repaired,
}

/// What reconciliation found and did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Reconciliation {
    /// The verdict.
    pub status: ReconcileStatus,
    /// Rows in the source, counted by the comparison.
    pub source_rows: u64,
    /// Rows in the target, counted by the comparison (before a repair).
    pub target_rows: u64,
    /// The columns whose content was compared.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub content: Vec<String>,
    /// Keys the source holds and the target lacked.
    pub missing_in_target: u64,
    /// Keys the target held and the source does not.
    pub extra_in_target: u64,
    /// Keys whose compared content differed.
    pub changed_in_target: u64,
    /// The mismatched key intervals, inclusive (the first [`Reconciliation::LISTED`]).
    pub mismatched: Vec<(i64, i64)>,
    /// How many mismatched intervals there were in all.
    pub mismatched_intervals: u64,
    /// Rows a repair reloaded from the source.
    #[serde(default)]
    pub reloaded_rows: u64,
    /// Keys a repair deleted from the target.
    #[serde(default)]
    pub deleted_keys: u64,
}

impl Reconciliation {
    /// How many mismatched intervals a report lists.
    pub const LISTED: usize = 100;
}

/// One table's figures for one run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TableReport {
    /// The table's name in the pipeline.
    pub table: String,
    /// The target it was written to.
    pub target: String,
    /// The mode it ran in (after overrides).
    pub mode: LoadMode,
    /// How it ended.
    pub status: TableStatus,
    /// Rows in the whole source, where known: a table's count, the rows of every file when
    /// all were read, or the count of the comparison after the run (`keys`). A read of only
    /// the new files counts those in `read_count` instead.
    pub source_count: Option<u64>,
    /// Rows the read met before its incremental filter: the table's count, or the rows of the
    /// files it read (new and changed ones only, for an incremental read of files).
    #[serde(default)]
    pub read_count: Option<u64>,
    /// Rows extracted: the window after the incremental filter.
    pub extracted_count: u64,
    /// Rows diverted to a rejects file as unparseable.
    pub rejected_count: u64,
    /// Rows dropped as older versions of a key: by `keep_latest`, or by a sink's merge.
    pub collapsed_count: u64,
    /// Rows whose cursor columns are all NULL that an incremental run met under
    /// [`crate::NullCursors::WholeReadsOnly`]: loaded by a whole read, left out by a filtered
    /// one (counted where the source sees them: the file source, or the stream).
    #[serde(default)]
    pub null_cursor_count: u64,
    /// Rows written to the target.
    pub written_count: u64,
    /// Rows the target gained (warehouse sinks; a lake counts its appended rows here).
    #[serde(default)]
    pub inserted_count: u64,
    /// Target rows a merge updated.
    #[serde(default)]
    pub updated_count: u64,
    /// Target rows removed (a replaced or truncated table, soft deletes).
    #[serde(default)]
    pub deleted_count: u64,
    /// Rows in the target after the commit, where known.
    pub target_count: Option<u64>,
    /// `source_count - target_count`: the whole source against the whole target, where both
    /// are known, in every mode (an appending target holding several versions of a row
    /// shows them as a negative difference).
    pub difference: Option<i64>,
    /// Bytes written.
    pub bytes_written: u64,
    /// Files written (lake sinks).
    pub files_written: u64,
    /// Chunks the source split the read into (parallel reads; 0 when not reported).
    #[serde(default)]
    pub chunks: u64,
    /// Wall time of the table's run.
    pub duration_ms: u64,
    /// The watermark before the run.
    pub watermark_before: Option<WatermarkSummary>,
    /// The watermark after the run.
    pub watermark_after: Option<WatermarkSummary>,
    /// The key comparison after the run ([`crate::TableSpec::detect_deletes`],
    /// [`crate::TableSpec::reconcile`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<KeyCheck>,
    /// Reconciliation's verdict ([`crate::TableSpec::reconcile`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconciliation: Option<Reconciliation>,
    /// The read ended its window below the high-water mark it saw: how far and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_back: Option<HeldBack>,
    /// Whether the run first completed a commit a dead run had left without its watermark.
    #[serde(default)]
    pub recovered: bool,
    /// What the user should know about the run though it did not fail (a file read again
    /// whole into an appending target, say).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// The error, when `status` is `failed`.
    pub error: Option<String>,
    /// Whether that error was transient ([`Error::is_retryable`]): a rerun may succeed.
    #[serde(default)]
    pub retryable: bool,
}

impl TableReport {
    /// Marks the table failed by `error`.
    pub fn fail(&mut self, error: &crate::Error) {
        self.status = TableStatus::Failed;
        self.error = Some(error.to_string());
        self.retryable = error.is_retryable();
    }

    /// An empty report for a table.
    pub fn new(table: &str, target: &str, mode: LoadMode) -> Self {
        TableReport {
            table: table.to_string(),
            target: target.to_string(),
            mode,
            status: TableStatus::Failed,
            source_count: None,
            read_count: None,
            extracted_count: 0,
            rejected_count: 0,
            collapsed_count: 0,
            null_cursor_count: 0,
            inserted_count: 0,
            updated_count: 0,
            deleted_count: 0,
            written_count: 0,
            target_count: None,
            difference: None,
            bytes_written: 0,
            files_written: 0,
            chunks: 0,
            duration_ms: 0,
            watermark_before: None,
            watermark_after: None,
            keys: None,
            reconciliation: None,
            held_back: None,
            recovered: false,
            warnings: Vec::new(),
            error: None,
            retryable: false,
        }
    }

    /// Sets `difference` from the source and target counts, where both are known.
    pub(crate) fn set_difference(&mut self) {
        self.difference = self
            .source_count
            .zip(self.target_count)
            .map(|(s, t)| s as i64 - t as i64);
    }
}

/// A whole run's report. Serialises to JSON for logs and run history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    /// The pipeline.
    pub pipeline: String,
    /// The run's id.
    pub run_id: String,
    /// Start time.
    pub started_at: DateTime<Utc>,
    /// End time.
    pub finished_at: DateTime<Utc>,
    /// Every table, in spec order.
    pub tables: Vec<TableReport>,
    /// The crawl after the run ([`crate::PipelineBuilder::crawl_after_run`]), when one ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crawl: Option<CrawlOutcome>,
}

/// What the crawl after a run did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CrawlOutcome {
    /// Tables the catalog holds after it.
    pub tables: usize,
    /// Parquet footers it read (only new files').
    pub footers_read: u64,
    /// CSV and JSON files it sampled for their schema (only new files).
    #[serde(default)]
    pub samples_read: u64,
    /// Why it failed, if it did (the run's data is committed either way).
    pub error: Option<String>,
}

impl RunReport {
    /// Whether every table committed, found no new data, or was an optional skip.
    pub fn is_success(&self) -> bool {
        self.tables.iter().all(|t| t.status != TableStatus::Failed)
    }

    /// The report of one table.
    pub fn table(&self, name: &str) -> Option<&TableReport> {
        self.tables.iter().find(|t| t.table == name)
    }

    /// The report as one JSON line.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("reports serialise")
    }

    /// `Ok(self)` when every table succeeded, else an error naming the failed tables.
    ///
    /// # Errors
    /// [`Error::Connector`] listing each failed table and its error; retryable when every
    /// failed table's error was.
    pub fn into_result(self) -> Result<Self> {
        if self.is_success() {
            return Ok(self);
        }
        let failed: Vec<&TableReport> = self.tables.iter().filter(|t| t.status == TableStatus::Failed).collect();
        let retryable = failed.iter().all(|t| t.retryable);
        let failed: Vec<String> = failed
            .iter()
            .map(|t| format!("{}: {}", t.table, t.error.as_deref().unwrap_or("failed")))
            .collect();
        Err(Error::Connector {
            connector: "pipeline",
            message: format!(
                "run {} of `{}` failed: {}",
                self.run_id,
                self.pipeline,
                failed.join("; ")
            ),
            retryable,
        })
    }
}
