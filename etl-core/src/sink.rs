//! The sink contract: stage, then commit.
//!
//! ```text
//!  begin ─► write, write, … ─► stage ─► Staged ─► commit(checkpoint) ─► visible, checkpoint durable
//!  (TableWriter)                      (durable,   │
//!                                      invisible) ├─ another run committed first ─► ConcurrentRun
//!                                                 └─► abort ─► nothing changed
//! ```
//!
//! Only a [`Staged`] write can commit, and only [`TableWriter::stage`] makes one: the order
//! cannot be broken.
//!
//! The sink keeps, atomically with each commit, a [`Checkpoint`]: the run and the position it
//! read up to. A run that dies after the sink committed but before the watermark store did is
//! completed by the next run from that checkpoint, so the window is never written twice.

use std::fmt;

use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::mode::LoadMode;
use crate::position::Checkpoint;
use crate::spec::TableSpec;

/// What a target table holds, as its sink sees it ([`Sink::target_state`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TargetState {
    /// The sink does not say.
    Unknown,
    /// There is no such table.
    Missing,
    /// The table exists and holds no row.
    Empty,
    /// The table holds rows.
    Holds,
}

/// What a sink is asked to write.
#[derive(Debug, Clone, Copy)]
pub struct WriteRequest<'a> {
    /// The pipeline.
    pub pipeline: &'a str,
    /// The table.
    pub spec: &'a TableSpec,
    /// The mode of this run (after overrides).
    pub mode: LoadMode,
    /// The run's id, unique per run.
    pub run_id: &'a str,
    /// The run's start time (file names, processing-date partitions).
    pub started_at: DateTime<Utc>,
    /// The run id of the sink's last checkpoint when the run started (`None`: there was
    /// none). The writer commits only if that is still the last checkpoint.
    pub last_checkpoint: Option<&'a str>,
    /// Where the pipeline's watermark store keeps its watermarks
    /// ([`crate::WatermarkStore::home`]). A sink that can write there stores the run's
    /// watermark in its commit's transaction and says so
    /// ([`CommitSummary::watermark_stored`]); the pipeline then stores nothing itself.
    pub watermark_home: Option<&'a str>,
}

/// What staging wrote.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StageSummary {
    /// Rows staged.
    pub rows: u64,
    /// Bytes staged.
    pub bytes: u64,
    /// Files staged (lake sinks).
    pub files: u64,
}

/// What a commit did.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CommitSummary {
    /// Rows in the target after the commit, where the sink knows it cheaply.
    pub target_rows: Option<u64>,
    /// Rows inserted.
    pub inserted: u64,
    /// Rows updated (merges).
    pub updated: u64,
    /// Rows deleted (replaced tables, soft deletes).
    pub deleted: u64,
    /// Staged rows dropped because a later row of the same key replaced them (merges).
    pub collapsed: u64,
    /// Whether the sink stored the run's watermark in the commit's own transaction (see
    /// [`WriteRequest::watermark_home`]).
    #[serde(default)]
    pub watermark_stored: bool,
}

/// Writes tables in two steps, stage then commit.
///
/// # Contract
/// - [`Sink::check_mode`] refuses, with [`crate::Error::UnsupportedMode`], every mode the sink
///   cannot honour for the spec; the pipeline builder calls it, so a refused mode never
///   reaches a run.
/// - Nothing a writer does before [`Staged::commit`] is visible to readers of the target.
///   After `commit` returns, the data and its [`Checkpoint`] are durable together.
/// - A writer commits only while the sink's last checkpoint is still
///   [`WriteRequest::last_checkpoint`]: of two runs that started from the same state at most
///   one can commit, and a run whose state moved on under it (another run committed first)
///   gets [`crate::Error::ConcurrentRun`] and leaves the target as it was.
/// - A process that dies at any point leaves the target as before the run or as after it;
///   [`Sink::last_checkpoint`] completes or cleans what a dead run left.
#[async_trait]
pub trait Sink: fmt::Debug + Send + Sync + 'static {
    /// A short name for messages (`lake`, `postgres`, …).
    fn name(&self) -> &str;

    /// Whether the sink can honour `mode` for `spec`.
    fn check_mode(&self, spec: &TableSpec, mode: LoadMode) -> Result<()>;

    /// The checkpoint of the table's last commit, after finishing any commit a dead run left
    /// half applied.
    async fn last_checkpoint(&self, pipeline: &str, spec: &TableSpec) -> Result<Option<Checkpoint>>;

    /// What the target table holds now, asked before an incremental run so that a target
    /// dropped or truncated behind the library's back is not written to as if it held the
    /// rows the watermark stands for. Called after [`Sink::last_checkpoint`]. A sink that
    /// answers anything but [`TargetState::Unknown`] (the default, which checks nothing)
    /// also promises that [`Sink::last_checkpoint`] is the run the watermark records: no
    /// checkpoint, or another run's, means the target lost what the watermark stands for.
    async fn target_state(&self, _spec: &TableSpec) -> Result<TargetState> {
        Ok(TargetState::Unknown)
    }

    /// The target's side of a key comparison ([`crate::keys`]), for sinks that compute key
    /// digests of their target and delete keys from it ([`Sink::delete_keys`]); `None` by
    /// default.
    fn key_reader(&self) -> Option<&dyn crate::keys::KeyReader> {
        None
    }

    /// Deletes the rows of the target whose primary key is one of `keys` (deleted at the
    /// source), in one transaction; returns how many it deleted. Only asked of sinks whose
    /// [`Sink::key_reader`] is `Some`. Leaves the checkpoint as it is.
    ///
    /// # Errors
    /// [`crate::Error::Config`] by default: the sink does not delete keys.
    async fn delete_keys(&self, spec: &TableSpec, keys: &[i64]) -> Result<u64> {
        let _ = keys;
        Err(crate::Error::config(format!(
            "table `{}`: sink `{}` does not delete keys",
            spec.name,
            self.name()
        )))
    }

    /// Starts writing one table for one run.
    async fn begin(&self, req: WriteRequest<'_>) -> Result<Box<dyn TableWriter>>;

    /// The sink's commit of shards staged by other processes ([`crate::shard`]), for sinks
    /// whose staged writes outlive the process that staged them; `None` by default.
    fn shard_sink(&self) -> Option<&dyn ShardSink> {
        None
    }
}

/// A sink that commits together the writes that the shards of a plan staged, each in its own
/// process ([`crate::Pipeline::commit_shards`]).
///
/// # Contract
/// - The shards' writers come from [`ShardSink::begin_shard`], each with a run id of its own;
///   their [`Staged::manifest`] describes what each staged, durable after the process ends.
/// - [`ShardSink::commit_shards`] makes all of them visible in one commit with
///   `checkpoint`, or none; it commits only while the sink's last checkpoint is still
///   [`WriteRequest::last_checkpoint`] ([`crate::Error::ConcurrentRun`] otherwise), and
///   afterwards deletes what other attempts staged and never committed.
#[async_trait]
pub trait ShardSink: Sink {
    /// Starts writing one shard: as [`Sink::begin`], but what the writer stages outlives its
    /// process (a staging table committed on its own, files), described by
    /// [`Staged::manifest`]; the staged write is committed only by
    /// [`ShardSink::commit_shards`], and its abort discards it. By default [`Sink::begin`],
    /// for sinks whose runs stage durably already (files).
    async fn begin_shard(&self, req: WriteRequest<'_>) -> Result<Box<dyn TableWriter>> {
        self.begin(req).await
    }

    /// Commits the staged writes `staged` ([`Staged::manifest`] of each shard) together with
    /// `checkpoint`, for the run `req` names.
    async fn commit_shards(
        &self,
        req: WriteRequest<'_>,
        staged: Vec<serde_json::Value>,
        checkpoint: Checkpoint,
    ) -> Result<CommitSummary>;
}

/// One run's writes to one table, until they are staged.
#[async_trait]
pub trait TableWriter: Send {
    /// Writes a batch (invisible until commit). Waits while buffers are full.
    async fn write(&mut self, batch: RecordBatch) -> Result<()>;

    /// Makes everything written durable, still invisible, and hands it over as a [`Staged`]
    /// write, the only thing that can commit it: a commit cannot come before staging. A stage
    /// that fails has discarded what was written by the time it returns (see
    /// [`Staged::new`]).
    async fn stage(self: Box<Self>) -> Result<Staged>;

    /// Discards everything written.
    async fn abort(self: Box<Self>) -> Result<()>;
}

/// A staged write's commit: what a sink's [`Staged`] holds.
#[async_trait]
pub trait StagedWrite: Send {
    /// Makes the staged data visible together with `checkpoint`.
    async fn commit(self: Box<Self>, checkpoint: Checkpoint) -> Result<CommitSummary>;

    /// Discards everything staged.
    async fn abort(self: Box<Self>) -> Result<()>;

    /// What was staged, as the sink's [`ShardSink::commit_shards`] reads it in another
    /// process. A sink without a [`Sink::shard_sink`] need not say.
    fn manifest(&self) -> Result<serde_json::Value> {
        Err(crate::Error::config(
            "this sink's staged writes cannot be committed by another process",
        ))
    }
}

/// What [`TableWriter::stage`] returns: the staged data, durable and invisible, and what
/// staging wrote.
pub struct Staged {
    summary: StageSummary,
    write: Box<dyn StagedWrite>,
}

impl fmt::Debug for Staged {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Staged").field("summary", &self.summary).finish()
    }
}

impl Staged {
    /// A sink's staging outcome: on success, `write` staged as `summary` says; on failure,
    /// `write` is aborted (a failure to abort is logged: the next run cleans up) and the
    /// staging error returned.
    ///
    /// ```ignore
    /// async fn stage(mut self: Box<Self>) -> Result<Staged> {
    ///     let staged = self.finish_uploads().await;
    ///     Staged::new(staged, self).await
    /// }
    /// ```
    pub async fn new(summary: Result<StageSummary>, write: Box<dyn StagedWrite>) -> Result<Staged> {
        match summary {
            Ok(summary) => Ok(Staged { summary, write }),
            Err(e) => {
                if let Err(abort) = write.abort().await {
                    tracing::warn!(error = %abort, "could not discard staged data; the next run cleans it");
                }
                Err(e)
            }
        }
    }

    /// What staging wrote.
    pub fn summary(&self) -> &StageSummary {
        &self.summary
    }

    /// Makes the staged data visible together with `checkpoint`.
    ///
    /// # Errors
    /// [`crate::Error::ConcurrentRun`] when another run committed the table since this one
    /// began; then, as on any error, the target is as it was.
    pub async fn commit(self, checkpoint: Checkpoint) -> Result<CommitSummary> {
        self.write.commit(checkpoint).await
    }

    /// Discards everything staged.
    pub async fn abort(self) -> Result<()> {
        self.write.abort().await
    }

    /// What was staged, for a commit by another process ([`StagedWrite::manifest`]).
    ///
    /// # Errors
    /// [`crate::Error::Config`] for a sink whose staged writes cannot be committed so.
    pub fn manifest(&self) -> Result<serde_json::Value> {
        self.write.manifest()
    }
}
