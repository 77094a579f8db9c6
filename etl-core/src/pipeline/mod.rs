//! The pipeline builder and runner.
//!
//! # One table, one run
//!
//! ```text
//!  watermark.load ─► sink.last_checkpoint ─► (roll a dead run's commit forward)
//!        │
//!        ▼
//!  source.read(from, high) ─► transforms ─► writer.write … ─► writer.stage
//!                                                                │
//!  watermark.commit(g → g+1) ◄── writer.commit(checkpoint) ◄─────┘
//! ```
//!
//! - The watermark moves only after the sink has committed, and the sink stores the same
//!   position with its commit: if the process dies between the two, the next run finds the
//!   sink's checkpoint ahead of the watermark and moves the watermark to it before reading,
//!   so the window is not written twice.
//! - A failure before the sink commit aborts the writer: target and watermark stay as they
//!   were. A run killed there leaves only staged leftovers, which the sink cleans later.
//! - Of two concurrent runs, the one that commits second gets [`Error::ConcurrentRun`] and
//!   changes nothing.
//! - Tables run independently: one failing does not roll back another that committed.
//!
//! # Test hook
//! Built with the cargo feature `failpoints` (crash tests turn it on; a user's build never
//! has it), the process aborts when the environment variable `ETL_FAILPOINT` is `after_stage`
//! or `after_sink_commit`, at that point of the first table that reaches it. Without the
//! feature the variable is ignored.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use tracing::Instrument;

use crate::error::{Error, Result};
use crate::keys;
use crate::kit::{batch, window};
use crate::location::Location;
use crate::mode::{LoadMode, ModeOverrides};
use crate::position::{Checkpoint, CursorValue, Position};
use crate::reconcile::{self, Comparison};
use crate::report::{CrawlOutcome, ReconcileStatus, RunReport, TableReport, TableStatus, WatermarkSummary};
use crate::sink::{Sink, TableWriter, TargetState, WriteRequest};
use crate::source::{BatchStream, Extract, ExtractStats, ReadRequest, Source};
use crate::spec::{ReconcilePolicy, SourceRef, TableSpec, TargetLost};
use crate::transform;
use crate::watermark::{Watermark, WatermarkStore};

mod shard;

/// Builds a [`Pipeline`]; `build` validates every table against the source and sink.
#[derive(Debug)]
pub struct PipelineBuilder {
    name: String,
    source: Option<Arc<dyn Source>>,
    sink: Option<Arc<dyn Sink>>,
    watermarks: Option<Arc<dyn WatermarkStore>>,
    tables: Vec<TableSpec>,
    batch_size: usize,
    concurrency: usize,
    crawl_after: Option<crate::catalog::Crawler>,
    progress: Option<ProgressHook>,
}

/// What the next run would do with a table, said without running it ([`Pipeline::plan`]).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct TablePlan {
    /// The table.
    pub table: String,
    /// The mode the run would use (overrides applied).
    pub mode: LoadMode,
    /// The watermark it would read past (generation 0: none, a first run).
    pub watermark: WatermarkSummary,
    /// What its read would cover.
    pub estimate: crate::source::Estimate,
}

/// How far a table's run has got: what [`PipelineBuilder::on_progress`] is told after each
/// batch read, and once more when the table is done.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Progress {
    /// The table.
    pub table: String,
    /// Rows read from the source so far.
    pub rows: u64,
    /// Their size in memory (Arrow buffers), so far.
    pub bytes: u64,
    /// Whether the table is done (committed, found nothing new, or failed).
    pub done: bool,
}

/// A callback told of [`Progress`].
#[derive(Clone)]
struct ProgressHook(Arc<dyn Fn(&Progress) + Send + Sync>);

impl std::fmt::Debug for ProgressHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProgressHook")
    }
}

impl PipelineBuilder {
    /// Calls `hook` after each batch a table reads and once when the table is done (from
    /// the run's tasks: keep it quick; a terminal display throttles itself).
    pub fn on_progress(mut self, hook: impl Fn(&Progress) + Send + Sync + 'static) -> Self {
        self.progress = Some(ProgressHook(Arc::new(hook)));
        self
    }

    /// Sets the source.
    pub fn source(mut self, source: impl Source) -> Self {
        self.source = Some(Arc::new(source));
        self
    }

    /// Sets a shared source.
    pub fn source_arc(mut self, source: Arc<dyn Source>) -> Self {
        self.source = Some(source);
        self
    }

    /// Sets the sink.
    pub fn sink(mut self, sink: impl Sink) -> Self {
        self.sink = Some(Arc::new(sink));
        self
    }

    /// Sets a shared sink.
    pub fn sink_arc(mut self, sink: Arc<dyn Sink>) -> Self {
        self.sink = Some(sink);
        self
    }

    /// Sets the watermark store.
    pub fn watermarks(mut self, store: impl WatermarkStore) -> Self {
        self.watermarks = Some(Arc::new(store));
        self
    }

    /// Sets a shared watermark store.
    pub fn watermarks_arc(mut self, store: Arc<dyn WatermarkStore>) -> Self {
        self.watermarks = Some(store);
        self
    }

    /// Adds a table.
    pub fn table(mut self, spec: TableSpec) -> Self {
        self.tables.push(spec);
        self
    }

    /// Rows per batch asked of the source (default 65 536).
    pub fn batch_size(mut self, rows: usize) -> Self {
        self.batch_size = rows.max(1);
        self
    }

    /// After a run that committed any table, crawls the lake at `lake` into its catalog
    /// (`_etl/catalog/`), as a Glue crawler after a job: only new files are read. A failed
    /// crawl is logged and reported, never a failed run (the data is committed).
    pub fn crawl_after_run(self, lake: Location) -> Self {
        self.crawl_after_run_with(crate::catalog::Crawler::new(lake))
    }

    /// As [`PipelineBuilder::crawl_after_run`], with a crawler of your own (CSV options, a
    /// [`crate::catalog::TableLog`] for Delta tables); the catalog is in its location.
    pub fn crawl_after_run_with(mut self, crawler: crate::catalog::Crawler) -> Self {
        self.crawl_after = Some(crawler);
        self
    }

    /// How many tables run at once (default 1).
    pub fn concurrency(mut self, tables: usize) -> Self {
        self.concurrency = tables.max(1);
        self
    }

    /// Validates and builds.
    ///
    /// # Errors
    /// - [`Error::Config`]: no source, sink or watermark store; an empty or duplicate table
    ///   name; an incremental table without cursor columns or file bookmarks; `UPSERT` or
    ///   `keep_latest` without a primary key; chunked reads without what they need (see
    ///   [`TableSpec::chunk_rows`]).
    /// - [`Error::UnsupportedMode`]: the sink refuses a table's mode.
    pub fn build(self) -> Result<Pipeline> {
        if self.name.trim().is_empty() || self.name.contains('/') {
            return Err(Error::config("a pipeline needs a name without `/`"));
        }
        let source = self
            .source
            .ok_or_else(|| Error::config(format!("pipeline `{}` has no source", self.name)))?;
        let sink = self
            .sink
            .ok_or_else(|| Error::config(format!("pipeline `{}` has no sink", self.name)))?;
        let watermarks = self
            .watermarks
            .ok_or_else(|| Error::config(format!("pipeline `{}` has no watermark store", self.name)))?;
        if self.tables.is_empty() {
            return Err(Error::config(format!("pipeline `{}` has no tables", self.name)));
        }
        let mut seen = HashSet::new();
        for spec in &self.tables {
            if spec.name.is_empty() || spec.name.contains('/') || !seen.insert(spec.name.clone()) {
                return Err(Error::config(format!(
                    "table name `{}` is empty, contains `/`, or appears twice",
                    spec.name
                )));
            }
            if let crate::spec::Partitioning::Columns(keys) = &spec.partitioning {
                crate::lake::partition::check(&spec.name, keys)?;
            }
            validate_mode(sink.as_ref(), spec, spec.mode)?;
            validate_chunks(source.as_ref(), spec)?;
            validate_compare(source.as_ref(), sink.as_ref(), spec)?;
        }
        Ok(Pipeline {
            name: self.name,
            source,
            sink,
            watermark_home: watermarks.home(),
            watermarks,
            tables: self.tables,
            batch_size: self.batch_size,
            concurrency: self.concurrency,
            crawl_after: self.crawl_after,
            progress: self.progress,
        })
    }
}

fn validate_chunks(source: &dyn Source, spec: &TableSpec) -> Result<()> {
    if spec.chunk_rows.is_none() {
        return Ok(());
    }
    let problem = if spec.cursor.len() != 1 {
        Some("one cursor column")
    } else if spec.primary_key.is_empty() {
        Some("a primary key (TableSpec::primary_key)")
    } else if spec.lookback.is_some() {
        Some("no lookback")
    } else if !source.reads_in_chunks() {
        Some("a source that reads in chunks")
    } else if matches!(&spec.source, SourceRef::Query(q) if q.contains(crate::spec::QUERY_WATERMARK)) {
        // Each chunk starts where the last ended; a query placing the lower end itself would
        // start every chunk at the watermark again.
        Some("a query that leaves the lower end to them (no {watermark})")
    } else {
        None
    };
    match problem {
        Some(p) => Err(Error::config(format!(
            "table `{}`: chunked reads (TableSpec::chunk_rows) need {p}",
            spec.name
        ))),
        None => Ok(()),
    }
}

fn validate_compare(source: &dyn Source, sink: &dyn Sink, spec: &TableSpec) -> Result<()> {
    if spec.deletes.is_none() && spec.reconcile.is_none() {
        return Ok(());
    }
    reconcile::readers(source, sink, spec)?;
    match &spec.reconcile {
        Some(r) if r.policy == ReconcilePolicy::Repair && spec.mode != LoadMode::Upsert => Err(Error::config(format!(
            "table `{}`: a repair reloads rows the target may hold; only an UPSERT target absorbs them, and `{}` \
             is {} (use ReconcilePolicy::Fail, and Pipeline::resync to reload it)",
            spec.name, spec.name, spec.mode
        ))),
        Some(r) if r.columns.len() > keys::MAX_CONTENT_COLUMNS => Err(Error::config(format!(
            "table `{}`: reconciliation compares the content of at most {} columns; {} are named",
            spec.name,
            keys::MAX_CONTENT_COLUMNS,
            r.columns.len()
        ))),
        _ => Ok(()),
    }
}

fn validate_mode(sink: &dyn Sink, spec: &TableSpec, mode: LoadMode) -> Result<()> {
    let files = matches!(spec.source, SourceRef::Files { .. });
    if mode.reads_incrementally() && spec.cursor.is_empty() && !files {
        return Err(Error::config(format!(
            "table `{}`: mode {mode} needs cursor columns (TableSpec::cursor) to know what is new",
            spec.name
        )));
    }
    if (mode == LoadMode::Upsert || spec.keep_latest) && spec.primary_key.is_empty() {
        return Err(Error::config(format!(
            "table `{}`: {} needs a primary key (TableSpec::primary_key)",
            spec.name,
            if spec.keep_latest { "keep_latest" } else { "UPSERT" }
        )));
    }
    sink.check_mode(spec, mode)
}

/// A set of tables loaded from one source into one sink, with watermarks.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use std::sync::Arc;
/// use arrow::array::{Int64Array, RecordBatch};
/// use etl_core::*;
///
/// let source = MemorySource::new();
/// let ids = Int64Array::from(vec![1, 2, 3]);
/// source.append("events", RecordBatch::try_from_iter([("id", Arc::new(ids) as _)]).unwrap()).unwrap();
/// # #[derive(Debug)] struct Null;
/// # #[async_trait::async_trait] impl Sink for Null {
/// #   fn name(&self) -> &str { "null" }
/// #   fn check_mode(&self, _: &TableSpec, _: LoadMode) -> Result<()> { Ok(()) }
/// #   async fn last_checkpoint(&self, _: &str, _: &TableSpec) -> Result<Option<Checkpoint>> { Ok(None) }
/// #   async fn begin(&self, _: WriteRequest<'_>) -> Result<Box<dyn TableWriter>> { Ok(Box::new(W(0))) }
/// # }
/// # struct W(u64);
/// # #[async_trait::async_trait] impl TableWriter for W {
/// #   async fn write(&mut self, b: RecordBatch) -> Result<()> { self.0 += b.num_rows() as u64; Ok(()) }
/// #   async fn stage(self: Box<Self>) -> Result<Staged> { let s = StageSummary { rows: self.0, ..Default::default() }; Staged::new(Ok(s), self).await }
/// #   async fn abort(self: Box<Self>) -> Result<()> { Ok(()) }
/// # }
/// # #[async_trait::async_trait] impl StagedWrite for W {
/// #   async fn commit(self: Box<Self>, _: Checkpoint) -> Result<CommitSummary> { Ok(CommitSummary::default()) }
/// #   async fn abort(self: Box<Self>) -> Result<()> { Ok(()) }
/// # }
/// # let my_sink = Null;
/// let pipeline = Pipeline::builder("demo")
///     .source(source)
///     .sink(my_sink) // a lake, a database, …
///     .watermarks(ObjectStoreWatermarkStore::new(Location::memory()))
///     .table(TableSpec::new("events").mode(LoadMode::Full))
///     .build()
///     .unwrap();
/// let report = pipeline.run().await.unwrap();
/// assert_eq!(report.table("events").unwrap().written_count, 3);
/// # });
/// ```
#[derive(Debug, Clone)]
pub struct Pipeline {
    name: String,
    source: Arc<dyn Source>,
    sink: Arc<dyn Sink>,
    watermarks: Arc<dyn WatermarkStore>,
    /// Where the store keeps watermarks, for a sink that can store them with its rows.
    watermark_home: Option<String>,
    tables: Vec<TableSpec>,
    batch_size: usize,
    concurrency: usize,
    crawl_after: Option<crate::catalog::Crawler>,
    progress: Option<ProgressHook>,
}

#[cfg(feature = "failpoints")]
fn failpoint(name: &str) {
    static FP: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    if FP.get_or_init(|| std::env::var("ETL_FAILPOINT").ok()).as_deref() == Some(name) {
        eprintln!("ETL_FAILPOINT={name}: aborting the process");
        std::process::abort();
    }
}

#[cfg(not(feature = "failpoints"))]
fn failpoint(_name: &str) {}

/// A short unique run id (12 random hex digits); file names carry the start time beside it.
fn new_run_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_string()
}

#[derive(Default)]
struct Pumped {
    extracted: u64,
    /// The in-memory size of the batches read.
    bytes: u64,
    written: u64,
    collapsed: u64,
    /// Rows extracted whose cursor columns are all NULL (incremental modes).
    null_cursor: u64,
    max_cursor: Option<CursorValue>,
    /// Cursor and primary key of the last row extracted (chunked reads only).
    last_row: Option<(CursorValue, Vec<CursorValue>)>,
}

/// One window of one table's run.
struct Window<'a> {
    spec: &'a TableSpec,
    mode: LoadMode,
    run_id: &'a str,
    started_at: DateTime<Utc>,
    wm: Option<&'a Watermark>,
    last_checkpoint: Option<&'a str>,
    limit: Option<usize>,
    backfill: Option<Backfill<'a>>,
    /// A repair's key intervals: only those rows, read whole.
    keys: Option<&'a [(i64, i64)]>,
}

/// A window committed to the target, its watermark not yet stored.
struct Done {
    /// The watermark the window moves to.
    next: Watermark,
    /// A chunked read filled its chunk: more may follow.
    full: bool,
    /// The sink stored the watermark with the rows.
    stored: bool,
}

/// A backfill's cursor range: rows past `after`, up to `through`.
#[derive(Clone, Copy)]
struct Backfill<'a> {
    after: &'a CursorValue,
    through: &'a CursorValue,
}

/// What one run does: the modes, and which table (all when `None`), over which window.
struct Plan<'a> {
    overrides: &'a ModeOverrides,
    /// The tables to run (all: `None`).
    only: Option<&'a [&'a str]>,
    backfill: Option<Backfill<'a>>,
}

impl Pipeline {
    /// Starts building a pipeline named `name` (the namespace of its watermarks).
    pub fn builder(name: impl Into<String>) -> PipelineBuilder {
        PipelineBuilder {
            name: name.into(),
            source: None,
            sink: None,
            watermarks: None,
            tables: Vec::new(),
            batch_size: 65_536,
            concurrency: 1,
            crawl_after: None,
            progress: None,
        }
    }

    /// The pipeline's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The table specs.
    pub fn tables(&self) -> &[TableSpec] {
        &self.tables
    }

    /// Runs every table once with its own mode.
    ///
    /// # Errors
    /// See [`Pipeline::run_with`].
    pub async fn run(&self) -> Result<RunReport> {
        self.run_with(&ModeOverrides::new()).await
    }

    /// Runs every table once, with some tables' modes overridden for this run.
    ///
    /// Returns `Err` only when nothing was written: an override naming an unknown table or a
    /// mode the sink refuses, or a required table missing from the source. Failures of
    /// single tables are in the report (see [`RunReport::into_result`]).
    ///
    /// # Errors
    /// [`Error::Config`], [`Error::UnsupportedMode`], [`Error::TableNotFound`].
    pub async fn run_with(&self, overrides: &ModeOverrides) -> Result<RunReport> {
        self.run_plan(Plan {
            overrides,
            only: None,
            backfill: None,
        })
        .await
    }

    /// What the next run with `overrides` would do with each table (or those named in
    /// `only`): its mode, the watermark it reads past, and what its read would cover
    /// ([`Source::estimate`]) — reading no rows and writing nothing.
    ///
    /// # Errors
    /// [`Error::Config`] for a table the pipeline does not have or a mode the sink refuses;
    /// the source's and the store's errors.
    pub async fn plan(&self, only: &[&str], overrides: &ModeOverrides) -> Result<Vec<TablePlan>> {
        let mut out = Vec::new();
        for spec in self.selected(only)? {
            let mode = overrides.get(&spec.name).unwrap_or(spec.mode);
            validate_mode(self.sink.as_ref(), spec, mode)?;
            let wm = self.watermarks.load(&self.name, &spec.name).await?;
            let from = wm.as_ref().map(|w| &w.position).filter(|_| mode.reads_incrementally());
            let req = ReadRequest {
                spec,
                mode,
                from,
                run_id: "plan",
                batch_size: self.batch_size,
                limit: None,
                until: None,
                keys: None,
                files: None,
            };
            let estimate = self.source.estimate(req).await?;
            let empty = Position::default();
            out.push(TablePlan {
                table: spec.name.clone(),
                mode,
                watermark: WatermarkSummary::of(
                    wm.as_ref().map_or(0, |w| w.generation),
                    wm.as_ref().map_or(&empty, |w| &w.position),
                ),
                estimate,
            });
        }
        Ok(out)
    }

    /// Runs the named tables once (in one run, as [`Pipeline::run_with`] runs them all); the
    /// others are not run and keep their state.
    ///
    /// # Errors
    /// [`Error::Config`] for a table the pipeline does not have; else as
    /// [`Pipeline::run_with`].
    pub async fn run_tables(&self, tables: &[&str], overrides: &ModeOverrides) -> Result<RunReport> {
        for t in tables {
            self.spec(t)?;
        }
        self.run_plan(Plan {
            overrides,
            only: Some(tables),
            backfill: None,
        })
        .await
    }

    /// Reloads one table in full (as `FULL`, whatever its mode) and moves its watermark to
    /// where that read ended; the other tables are not run and keep their state.
    ///
    /// # Errors
    /// [`Error::Config`] for a table the pipeline does not have; else as [`Pipeline::run_with`].
    pub async fn resync(&self, table: &str) -> Result<RunReport> {
        self.spec(table)?;
        let overrides = ModeOverrides::new().with(table, LoadMode::Full);
        self.run_plan(Plan {
            overrides: &overrides,
            only: Some(&[table]),
            backfill: None,
        })
        .await
    }

    /// Reads again the rows of one table whose cursor is past `after` and at most `through`
    /// (the window an incremental run would read) and merges them into the target, leaving
    /// the table's watermark where it was; the other tables are not run.
    ///
    /// Only an `UPSERT` table takes a backfill: its target absorbs rows it already holds. An
    /// appending target (an `INCREMENTAL` or `APPEND` lake or warehouse table) would hold
    /// them twice, and a replacing one (`FULL`, `TRUNCATE_INSERT`) would keep only the
    /// range: those are refused — reload them with [`Pipeline::resync`].
    ///
    /// # Errors
    /// [`Error::Config`] for a table the pipeline does not have, one without a cursor or not
    /// in `UPSERT`, or an empty range; else as [`Pipeline::run_with`].
    pub async fn backfill(&self, table: &str, after: CursorValue, through: CursorValue) -> Result<RunReport> {
        let spec = self.spec(table)?;
        if spec.cursor.is_empty() {
            return Err(Error::config(format!(
                "table `{table}`: a backfill reads a cursor range, and the table has no cursor column"
            )));
        }
        if spec.mode != LoadMode::Upsert {
            return Err(Error::config(format!(
                "table `{table}`: a backfill reads again rows the target holds; only an UPSERT target absorbs \
                 them, and `{table}` is {} (its target would {}); reload it with Pipeline::resync",
                spec.mode,
                if spec.mode.replaces_target() {
                    "keep only the range"
                } else {
                    "hold them twice"
                }
            )));
        }
        if through.partial_cmp(&after) != Some(std::cmp::Ordering::Greater) {
            return Err(Error::config(format!(
                "table `{table}`: a backfill past {after} through {through} is empty (or the two values are \
                 of different types)"
            )));
        }
        self.run_plan(Plan {
            overrides: &ModeOverrides::new(),
            only: Some(&[table]),
            backfill: Some(Backfill {
                after: &after,
                through: &through,
            }),
        })
        .await
    }

    /// The table's watermark, as the next run will read it.
    ///
    /// # Errors
    /// [`Error::Config`] for a table the pipeline does not have; the store's errors.
    pub async fn watermark(&self, table: &str) -> Result<Option<Watermark>> {
        self.spec(table)?;
        self.watermarks.load(&self.name, table).await
    }

    /// Sets the table's watermark to `position`: the next incremental run reads past it
    /// (rows at or before it are not read again; rows after it that the target already
    /// holds are read again). Committed as the next generation, keeping the run the sink's
    /// checkpoint knows, so the target is still taken for the one the watermark stands for.
    ///
    /// # Errors
    /// [`Error::Config`] for a table the pipeline does not have; [`Error::ConcurrentRun`]
    /// when a run committed meanwhile.
    pub async fn set_watermark(&self, table: &str, position: Position) -> Result<Watermark> {
        self.put_watermark(table, position, false).await
    }

    /// Resets the table's watermark: the next run reads the table from its start, as a first
    /// run. Into an appending target that run adds every row again: reset an `UPSERT`
    /// table, or reload with [`Pipeline::resync`] instead.
    ///
    /// # Errors
    /// As [`Pipeline::set_watermark`].
    pub async fn reset_watermark(&self, table: &str) -> Result<Watermark> {
        self.put_watermark(table, Position::default(), true).await
    }

    async fn put_watermark(&self, table: &str, position: Position, reset: bool) -> Result<Watermark> {
        self.spec(table)?;
        let current = self.watermarks.load(&self.name, table).await?;
        let next = Watermark {
            pipeline: self.name.clone(),
            table: table.to_string(),
            generation: current.as_ref().map_or(0, |w| w.generation) + 1,
            run_id: current
                .as_ref()
                .map_or_else(|| format!("set-{}", new_run_id()), |w| w.run_id.clone()),
            committed_at: Utc::now(),
            mode: current.as_ref().and_then(|w| w.mode),
            window_low: None,
            position,
            rows: current.as_ref().map_or(0, |w| w.rows),
            reset,
        };
        self.watermarks.commit(current.as_ref(), &next).await?;
        tracing::info!(pipeline = %self.name, table, generation = next.generation, reset, "watermark set from code");
        Ok(next)
    }

    /// The tables `only` names, in the pipeline's order (`only` empty: every table).
    fn selected(&self, only: &[&str]) -> Result<Vec<&TableSpec>> {
        for t in only {
            self.spec(t)?;
        }
        Ok(self
            .tables
            .iter()
            .filter(|s| only.is_empty() || only.contains(&s.name.as_str()))
            .collect())
    }

    /// The spec of `table`.
    fn spec(&self, table: &str) -> Result<&TableSpec> {
        self.tables
            .iter()
            .find(|s| s.name == table)
            .ok_or_else(|| Error::config(format!("pipeline `{}` has no table `{table}`", self.name)))
    }

    async fn run_plan(&self, plan: Plan<'_>) -> Result<RunReport> {
        let Plan {
            overrides,
            only,
            backfill,
        } = plan;
        for t in overrides.tables() {
            if !self.tables.iter().any(|s| s.name == t) {
                return Err(Error::config(format!(
                    "mode override names table `{t}`, which pipeline `{}` does not have",
                    self.name
                )));
            }
        }
        // Indices, not references: the run's future stays `Send` for any caller (a closure
        // taking `&TableSpec` would tie it to one lifetime).
        let mut plan = Vec::with_capacity(self.tables.len());
        for (i, spec) in self.tables.iter().enumerate() {
            if only.is_some_and(|t| !t.contains(&spec.name.as_str())) {
                continue;
            }
            let mode = overrides.get(&spec.name).unwrap_or(spec.mode);
            validate_mode(self.sink.as_ref(), spec, mode)?;
            plan.push((i, mode));
        }
        let started_at = Utc::now();
        let run_id = new_run_id();
        let span = tracing::info_span!("etl_run", pipeline = %self.name, run_id = %run_id);
        // Preflight: every required table must exist before anything is written.
        let mut skip = HashSet::new();
        for spec in plan.iter().map(|(i, _)| &self.tables[*i]) {
            match self.source.check(spec).instrument(span.clone()).await {
                Ok(()) => {}
                Err(e @ (Error::TableNotFound { .. } | Error::ColumnNotFound { .. })) if !spec.required => {
                    tracing::warn!(parent: &span, table = %spec.name, error = %e, "optional table skipped");
                    skip.insert(spec.name.clone());
                }
                Err(e) => return Err(e),
            }
        }
        let tables: Vec<TableReport> = futures::stream::iter(plan)
            .map(|(i, mode)| {
                let spec = &self.tables[i];
                let skipped = skip.contains(&spec.name);
                let run_id = &run_id;
                let span = tracing::info_span!(parent: &span, "etl_table", table = %spec.name, mode = %mode);
                async move {
                    if skipped {
                        let mut r = TableReport::new(&spec.name, &spec.target, mode);
                        r.status = TableStatus::Skipped;
                        return r;
                    }
                    self.run_table(spec, mode, run_id, started_at, backfill)
                        .instrument(span)
                        .await
                }
            })
            .buffered(self.concurrency)
            .collect()
            .await;
        let committed = tables.iter().any(|t| t.status == TableStatus::Committed);
        let crawl = self.crawl_after_commit(committed).instrument(span.clone()).await;
        let report = RunReport {
            pipeline: self.name.clone(),
            run_id,
            started_at,
            finished_at: Utc::now(),
            tables,
            crawl,
        };
        let status = if report.is_success() { "success" } else { "failed" };
        metrics::counter!("etl_runs_total", "pipeline" => self.name.clone(), "status" => status).increment(1);
        Ok(report)
    }

    /// The crawl after a run that committed a table, when the pipeline asks for one.
    async fn crawl_after_commit(&self, committed: bool) -> Option<CrawlOutcome> {
        let crawler = self.crawl_after.as_ref().filter(|_| committed)?;
        let catalog = crate::catalog::Catalog::new(crawler.location().clone());
        Some(match crawler.crawl_into(&catalog).await {
            Ok(c) => CrawlOutcome {
                tables: c.tables.len(),
                footers_read: c.footers_read,
                samples_read: c.samples_read,
                error: None,
            },
            Err(e) => {
                tracing::warn!(error = %e, "the crawl after the run failed");
                CrawlOutcome {
                    tables: 0,
                    footers_read: 0,
                    samples_read: 0,
                    error: Some(e.to_string()),
                }
            }
        })
    }

    async fn run_table(
        &self,
        spec: &TableSpec,
        mode: LoadMode,
        run_id: &str,
        started_at: DateTime<Utc>,
        backfill: Option<Backfill<'_>>,
    ) -> TableReport {
        let t0 = Instant::now();
        let mut report = TableReport::new(&spec.name, &spec.target, mode);
        if let Err(e) = self
            .run_table_inner(spec, mode, run_id, started_at, backfill, &mut report)
            .await
        {
            tracing::error!(error = %e, "table failed");
            report.fail(&e);
        }
        report.duration_ms = t0.elapsed().as_millis() as u64;
        if let Some(hook) = &self.progress {
            (hook.0)(&Progress {
                table: spec.name.clone(),
                rows: report.extracted_count,
                bytes: report.bytes_written,
                done: true,
            });
        }
        let labels = [("pipeline", self.name.clone()), ("table", spec.name.clone())];
        metrics::counter!("etl_rows_extracted_total", &labels).increment(report.extracted_count);
        metrics::counter!("etl_rows_written_total", &labels).increment(report.written_count);
        metrics::counter!("etl_rows_rejected_total", &labels).increment(report.rejected_count);
        metrics::counter!("etl_bytes_written_total", &labels).increment(report.bytes_written);
        metrics::histogram!("etl_table_duration_seconds", &labels).record(t0.elapsed().as_secs_f64());
        // The run's figures per table, as CloudWatch gets them (`etl::aws::CloudWatchMetrics`).
        metrics::gauge!("etl_table_filtered_count", &labels).set(report.extracted_count as f64);
        if let Some(n) = report.source_count {
            metrics::gauge!("etl_table_source_count", &labels).set(n as f64);
        }
        if let Some(n) = report.target_count {
            metrics::gauge!("etl_table_target_count", &labels).set(n as f64);
        }
        if let Some(n) = report.difference {
            metrics::gauge!("etl_table_difference", &labels).set(n as f64);
        }
        tracing::info!(
            status = ?report.status,
            extracted = report.extracted_count,
            written = report.written_count,
            duration_ms = report.duration_ms,
            "table done"
        );
        report
    }

    /// Moves the watermark to the sink's checkpoint when a dead run committed the sink but
    /// not the watermark.
    async fn recover(
        &self,
        spec: &TableSpec,
        wm: Option<Watermark>,
        report: &mut TableReport,
    ) -> Result<(Option<Watermark>, Option<Checkpoint>)> {
        let Some(cp) = self.sink.last_checkpoint(&self.name, spec).await? else {
            return Ok((wm, None));
        };
        let wm_run = wm.as_ref().map(|w| w.run_id.as_str());
        if Some(cp.run_id.as_str()) == wm_run || cp.parent_run_id.as_deref() != wm_run {
            return Ok((wm, Some(cp)));
        }
        tracing::warn!(run = %cp.run_id, "completing a run that committed its target but not its watermark");
        let generation = wm.as_ref().map_or(0, |w| w.generation) + 1;
        let next = Watermark::from_checkpoint(&self.name, &spec.name, generation, &cp);
        self.commit_watermark(wm.as_ref(), &next).await?;
        report.recovered = true;
        Ok((Some(next), Some(cp)))
    }

    /// Compares source and target once for deletes and reconciliation
    /// ([`crate::reconcile`]), and deletes from the target the keys the source no longer
    /// has when the spec finds deletes — unless they are more than the guard allows. Returns
    /// the comparison and whether the keys only in the target were deleted.
    async fn compare_table(&self, spec: &TableSpec, report: &mut TableReport) -> Result<Option<(Comparison, bool)>> {
        let Some(ranges) = spec
            .reconcile
            .as_ref()
            .map(|r| r.ranges)
            .or(spec.deletes.map(|d| d.ranges))
        else {
            return Ok(None);
        };
        let (source, target) = reconcile::readers(self.source.as_ref(), self.sink.as_ref(), spec)?;
        let columns = spec.reconcile.as_ref().map_or(&[][..], |r| r.columns.as_slice());
        let c = reconcile::compare(source, target, spec, ranges, columns).await?;
        let extra = &c.diff.only_in_target;
        let (deleted, applied) = match spec.deletes {
            Some(d) if !extra.is_empty() => {
                reconcile::guard(spec, extra.len() as u64, c.target_rows, d.max_share)?;
                (self.sink.delete_keys(spec, extra).await?, true)
            }
            _ => (0, false),
        };
        tracing::info!(
            deleted,
            ranges = c.differing.len(),
            keys_read = c.keys_read,
            "source and target compared"
        );
        report.deleted_count += deleted;
        report.source_count = Some(c.source_rows);
        report.target_count = Some(c.target_rows.saturating_sub(deleted));
        report.keys = Some(c.check(deleted));
        Ok(Some((c, applied)))
    }

    /// Repairs what reconciliation found: deletes the keys only in the target (unless the
    /// deletes did), reloads the keys missing or changed into the `UPSERT` target (leaving
    /// the watermark's position), then compares those keys again.
    #[allow(clippy::too_many_arguments)]
    async fn repair(
        &self,
        spec: &TableSpec,
        run_id: &str,
        started_at: DateTime<Utc>,
        wm: Option<&Watermark>,
        last_checkpoint: Option<&str>,
        c: &Comparison,
        deletes_applied: bool,
        report: &mut TableReport,
    ) -> Result<()> {
        let rec = spec.reconcile.as_ref().expect("repair needs reconcile");
        let (source, target) = reconcile::readers(self.source.as_ref(), self.sink.as_ref(), spec)?;
        let mut deleted = 0;
        if !deletes_applied && !c.diff.only_in_target.is_empty() {
            let extra = &c.diff.only_in_target;
            reconcile::guard(spec, extra.len() as u64, c.target_rows, rec.max_share)?;
            deleted = self.sink.delete_keys(spec, extra).await?;
            report.deleted_count += deleted;
        }
        // The keys found missing or changed, read again and merged: the narrowest ranges.
        let reload = c.reload_keys();
        let written_before = report.written_count;
        // The reload's commit counts the target, where its sink does.
        let counted_before = report.target_count.take();
        if !reload.is_empty() {
            let intervals = keys::runs(&reload);
            let id = format!("{run_id}-repair");
            let window = Window {
                spec,
                mode: LoadMode::Upsert,
                run_id: &id,
                started_at,
                wm,
                last_checkpoint,
                limit: None,
                backfill: None,
                keys: Some(&intervals),
            };
            if let Some(done) = self.run_window(window, report).await? {
                self.store_watermark(spec, wm, &done).await?;
                report.watermark_after = Some(WatermarkSummary::of(done.next.generation, &done.next.position));
                report.status = TableStatus::Committed;
            }
        }
        let mut all = reload;
        all.extend(&c.diff.only_in_target);
        let left = reconcile::recheck(source, target, spec, c, &all).await?;
        let verdict = report.reconciliation.as_mut().expect("a verdict before a repair");
        verdict.reloaded_rows = report.written_count - written_before;
        verdict.deleted_keys = deleted;
        let unlike = left.only_in_source.len() + left.only_in_target.len() + left.changed.len();
        if unlike == 0 {
            verdict.status = ReconcileStatus::Repaired;
        } else {
            let message = format!(
                "{unlike} keys still differ after the repair (changed at the source meanwhile, or held back behind \
                 a transaction in progress); the next run compares again"
            );
            tracing::warn!(%message, "repair incomplete");
            report.warnings.push(message);
        }
        // Else: the target now holds the keys that were missing (but those still missing) and
        // not the extra ones.
        if report.target_count.is_none() {
            let gained = c.diff.only_in_source.len().saturating_sub(left.only_in_source.len()) as u64;
            report.target_count = counted_before.map(|t| (t + gained).saturating_sub(deleted));
        }
        Ok(())
    }

    async fn store_watermark(&self, spec: &TableSpec, wm: Option<&Watermark>, done: &Done) -> Result<()> {
        if done.stored {
            // The sink stored it with the rows.
            return Ok(());
        }
        self.commit_watermark(wm, &done.next)
            .await
            .map_err(|e| Error::Connector {
                connector: "pipeline",
                message: format!(
                    "table `{}`: the target committed but the watermark could not be stored ({e}); \
                 the next run completes it from the sink's checkpoint",
                    spec.name
                ),
                retryable: e.is_retryable(),
            })
    }

    /// Why the target does not hold what the watermark stands for, if it does not: no
    /// checkpoint, another run's checkpoint, no table, or an empty table after a run wrote
    /// rows to it. Asked only of incremental runs that have a watermark, of sinks that say
    /// what their target holds.
    async fn target_lost(&self, spec: &TableSpec, wm: &Watermark, cp: Option<&Checkpoint>) -> Result<Option<String>> {
        let state = self.sink.target_state(spec).await?;
        if state == TargetState::Unknown {
            return Ok(None);
        }
        // A watermark of a run that wrote nothing (or set from code, or imported) stands for
        // no rows: a target without a checkpoint lost nothing.
        let Some(cp) = cp else {
            if wm.rows == 0 {
                return Ok(None);
            }
            return Ok(Some(format!(
                "the watermark records run `{}` (generation {}), but the target `{}` keeps no checkpoint: \
                 it was dropped, or restored from before that run",
                wm.run_id, wm.generation, spec.target
            )));
        };
        if cp.run_id != wm.run_id {
            return Ok(Some(format!(
                "the target's last commit is run `{}`, the watermark's is run `{}`: one of them was restored \
                 from a backup",
                cp.run_id, wm.run_id
            )));
        }
        Ok(match state {
            TargetState::Missing => Some(format!("the target table `{}` does not exist (dropped)", spec.target)),
            TargetState::Empty if cp.rows > 0 => Some(format!(
                "the target table `{}` is empty, though run `{}` wrote {} rows to it (truncated)",
                spec.target, cp.run_id, cp.rows
            )),
            _ => None,
        })
    }

    async fn commit_watermark(&self, expected: Option<&Watermark>, next: &Watermark) -> Result<()> {
        match self.watermarks.commit(expected, next).await {
            Err(e) if e.is_concurrent_run() => {
                // Another run may have completed our commit for us (recovery): that is success.
                match self.watermarks.load(&self.name, &next.table).await? {
                    Some(cur) if cur.run_id == next.run_id => Ok(()),
                    _ => Err(e),
                }
            }
            other => other,
        }
    }

    /// The table's watermark and the sink's checkpoint as a run starts (a dead run's commit
    /// rolled forward), and the mode to run: a target that lost what the watermark stands
    /// for fails the table, or is reloaded in full, as the spec says.
    async fn start_table(
        &self,
        spec: &TableSpec,
        mode: LoadMode,
        report: &mut TableReport,
    ) -> Result<(Option<Watermark>, Option<Checkpoint>, LoadMode)> {
        let wm = self.watermarks.load(&self.name, &spec.name).await?;
        let (wm, cp) = self.recover(spec, wm, report).await?;
        let lost = match wm.as_ref().filter(|_| mode.reads_incrementally()) {
            Some(w) => self.target_lost(spec, w, cp.as_ref()).await?,
            None => None,
        };
        let Some(message) = lost else {
            return Ok((wm, cp, mode));
        };
        if spec.on_target_lost == TargetLost::Fail {
            return Err(Error::TargetLost {
                table: spec.name.clone(),
                message,
            });
        }
        tracing::warn!(%message, "target lost its rows: reloading in full");
        report.warnings.push(format!("{message}: reloaded in full"));
        report.mode = LoadMode::Full;
        Ok((wm, cp, LoadMode::Full))
    }

    /// After the last commit of a table's run, before its watermark moves: compares source and
    /// target when the spec asks (deleting the keys gone from the source), and acts on a
    /// mismatch as the reconcile policy says. Returns the comparison to repair from, under
    /// [`ReconcilePolicy::Repair`], with whether the deletes were applied.
    async fn reconcile_after_commit(
        &self,
        spec: &TableSpec,
        report: &mut TableReport,
    ) -> Result<Option<(Comparison, bool)>> {
        let compared = self.compare_table(spec, report).await?;
        let (Some(rec), Some((c, applied))) = (spec.reconcile.as_ref(), compared) else {
            return Ok(None);
        };
        let handled = if applied { c.diff.only_in_target.len() as u64 } else { 0 };
        let verdict = c.verdict(handled);
        let mismatched = verdict.status == ReconcileStatus::Mismatched;
        let message = reconcile::describe(&verdict);
        report.reconciliation = Some(verdict);
        if !mismatched {
            return Ok(None);
        }
        match rec.policy {
            ReconcilePolicy::Fail => Err(Error::Unreconciled {
                table: spec.name.clone(),
                message,
            }),
            ReconcilePolicy::Report => {
                tracing::warn!(%message, "target does not reconcile");
                report
                    .warnings
                    .push(format!("the target does not reconcile: {message}"));
                Ok(None)
            }
            ReconcilePolicy::Repair => {
                tracing::warn!(%message, "target does not reconcile: repairing");
                Ok(Some((c, applied)))
            }
        }
    }

    async fn run_table_inner(
        &self,
        spec: &TableSpec,
        mode: LoadMode,
        run_id: &str,
        started_at: DateTime<Utc>,
        backfill: Option<Backfill<'_>>,
        report: &mut TableReport,
    ) -> Result<()> {
        let (mut wm, cp, mode) = self.start_table(spec, mode, report).await?;
        let mut last_checkpoint = cp.map(|c| c.run_id);
        let empty = Position::default();
        let current = wm.as_ref().map_or(&empty, |w| &w.position);
        report.watermark_before = Some(WatermarkSummary::of(wm.as_ref().map_or(0, |w| w.generation), current));
        report.watermark_after = report.watermark_before.clone();
        report.status = TableStatus::NoNewData;
        let limit = spec
            .chunk_rows
            .filter(|_| mode.reads_incrementally() && backfill.is_none());
        // One window, or chunk after chunk, each committed before the next is read.
        let mut last = None;
        for n in 1.. {
            let id = if n == 1 {
                run_id.to_string()
            } else {
                format!("{run_id}-{n}")
            };
            let window = Window {
                spec,
                mode,
                run_id: &id,
                started_at,
                wm: wm.as_ref(),
                last_checkpoint: last_checkpoint.as_deref(),
                limit,
                backfill,
                keys: None,
            };
            let Some(done) = self.run_window(window, report).await? else {
                break;
            };
            report.watermark_after = Some(WatermarkSummary::of(done.next.generation, &done.next.position));
            report.status = TableStatus::Committed;
            last_checkpoint = Some(id);
            if !done.full {
                last = Some(done);
                break;
            }
            self.store_watermark(spec, wm.as_ref(), &done).await?;
            wm = Some(done.next);
        }
        // Source and target compared after the last commit, before its watermark moves.
        let repair = self.reconcile_after_commit(spec, report).await?;
        if let Some(done) = last {
            self.store_watermark(spec, wm.as_ref(), &done).await?;
            wm = Some(done.next);
        }
        if let Some((c, applied)) = repair {
            self.repair(
                spec,
                run_id,
                started_at,
                wm.as_ref(),
                last_checkpoint.as_deref(),
                &c,
                applied,
                report,
            )
            .await?;
        }
        report.set_difference();
        Ok(())
    }

    /// Reads, writes and commits one window (or one chunk of it). Returns the new watermark
    /// and whether a chunked read filled its chunk (more may follow); `None` when nothing
    /// was new.
    async fn run_window(&self, w: Window<'_>, report: &mut TableReport) -> Result<Option<Done>> {
        let Window {
            spec,
            mode,
            run_id,
            started_at,
            wm,
            last_checkpoint,
            limit,
            backfill,
            keys,
        } = w;
        let generation = wm.map_or(0, |w| w.generation);
        let incremental = mode.reads_incrementally();
        // A backfill reads its range; a reset watermark reads as a first run.
        let range_from = backfill.map(|b| Position {
            cursor: Some(b.after.clone()),
            ..Position::default()
        });
        let from = match &range_from {
            Some(p) => Some(p),
            None if incremental && keys.is_none() => wm.filter(|w| !w.reset).map(|w| &w.position),
            None => None,
        };
        // A repair reads its key ranges whole: every row in them, whatever its cursor.
        let extract = self
            .source
            .read(ReadRequest {
                spec,
                mode: if keys.is_some() { LoadMode::Full } else { mode },
                from,
                run_id,
                batch_size: self.batch_size,
                limit,
                until: backfill.map(|b| b.through),
                keys,
                files: None,
            })
            .await?;
        let extract = match keys {
            Some(intervals) => keep_keys(spec, extract, intervals),
            None => extract,
        };
        take_held_back(&extract.stats, report);
        if incremental && extract.no_new_data {
            tracing::info!("no new data");
            return Ok(None);
        }
        let mut writer = self
            .sink
            .begin(WriteRequest {
                pipeline: &self.name,
                spec,
                mode,
                run_id,
                started_at,
                last_checkpoint,
                watermark_home: self.watermark_home.as_deref(),
            })
            .await?;
        let mut pumped = Pumped::default();
        let result = self
            .pump(
                spec,
                mode,
                started_at,
                extract.stream,
                writer.as_mut(),
                limit.is_some(),
                &mut pumped,
            )
            .await;
        // The figures of what streamed count even when the read failed part way.
        let stats = &extract.stats;
        report.read_count = report.read_count.or(stats.source_count());
        if !stats.count_is_partial.load(std::sync::atomic::Ordering::Relaxed) {
            report.source_count = report.source_count.or(stats.source_count());
        }
        report.chunks += ExtractStats::get(&stats.chunks);
        report.rejected_count += ExtractStats::get(&stats.rejected_rows);
        report.null_cursor_count += ExtractStats::get(&stats.null_cursor_rows) + pumped.null_cursor;
        for w in std::mem::take(&mut *stats.warnings.lock().expect("warnings lock")) {
            tracing::warn!(warning = %w, "table warning");
            report.warnings.push(w);
        }
        // A read that ends its window as it streams says so at the end.
        take_held_back(stats, report);
        report.extracted_count += pumped.extracted;
        report.collapsed_count += pumped.collapsed;
        if let Err(e) = result {
            return Err(abort(writer, e).await);
        }
        if incremental && pumped.extracted == 0 {
            tracing::info!("no new data");
            writer.abort().await?;
            return Ok(None);
        }
        // A failed stage has discarded what was written.
        let staged = match writer.stage().await {
            Ok(s) => s,
            Err(e) => return Err(self.lost_race(spec, last_checkpoint, e).await),
        };
        failpoint("after_stage");
        let window_low = from.and_then(|p| p.cursor.clone());
        let base_cursor = if incremental { window_low.clone() } else { None };
        // A full chunk stops at its last row's (cursor, key); anything else covers the window.
        let full = limit.is_some_and(|n| pumped.extracted >= n as u64);
        let position = match (full, pumped.last_row) {
            (true, Some((cursor, key))) => Position {
                cursor: Some(cursor),
                files: extract.high.files,
                key: Some(key),
            },
            _ => Position {
                cursor: CursorValue::max_opt(
                    CursorValue::max_opt(base_cursor, extract.high.cursor.clone()),
                    pumped.max_cursor,
                ),
                files: extract.high.files,
                key: None,
            },
        };
        // A backfill or a repair leaves the watermark's position where it was.
        let position = match (backfill, keys) {
            (None, None) => position,
            _ => wm.map(|w| w.position.clone()).unwrap_or_default(),
        };
        let checkpoint = Checkpoint {
            run_id: run_id.to_string(),
            parent_run_id: wm.map(|w| w.run_id.clone()),
            mode,
            position: position.clone(),
            window_low: window_low.clone(),
            rows: pumped.written,
            committed_at: Utc::now(),
        };
        let stage_summary = staged.summary().clone();
        let committed = match staged.commit(checkpoint).await {
            Ok(c) => c,
            Err(e) => return Err(self.lost_race(spec, last_checkpoint, e).await),
        };
        failpoint("after_sink_commit");
        report.written_count += pumped.written;
        report.bytes_written += stage_summary.bytes;
        report.files_written += stage_summary.files;
        report.target_count = committed.target_rows;
        report.collapsed_count += committed.collapsed;
        report.inserted_count += committed.inserted;
        report.updated_count += committed.updated;
        report.deleted_count += committed.deleted;
        let next = Watermark {
            pipeline: self.name.clone(),
            table: spec.name.clone(),
            generation: generation + 1,
            run_id: run_id.to_string(),
            committed_at: Utc::now(),
            mode: Some(mode),
            window_low,
            position,
            rows: pumped.written,
            reset: false,
        };
        Ok(Some(Done {
            next,
            full,
            stored: committed.watermark_stored,
        }))
    }

    /// A failed stage or commit while another run committed the table is that run's win:
    /// [`Error::ConcurrentRun`], whatever the sink tripped over (say, its staged files removed
    /// by the winner's clean-up).
    async fn lost_race(&self, spec: &TableSpec, last_checkpoint: Option<&str>, e: Error) -> Error {
        let lost = e.is_concurrent_run()
            || matches!(
                self.sink.last_checkpoint(&self.name, spec).await,
                Ok(cp) if cp.as_ref().map(|c| c.run_id.as_str()) != last_checkpoint
            );
        if lost {
            tracing::warn!(error = %e, "another run committed this table first");
            Error::ConcurrentRun {
                pipeline: self.name.clone(),
                table: spec.name.clone(),
            }
        } else {
            e
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn pump(
        &self,
        spec: &TableSpec,
        mode: LoadMode,
        started_at: DateTime<Utc>,
        stream: BatchStream,
        writer: &mut dyn TableWriter,
        chunked: bool,
        p: &mut Pumped,
    ) -> Result<()> {
        let mut stream = prefetch(stream);
        let mut held = Vec::new();
        let mut next_progress = 1_000_000;
        // Rows without any cursor value reach the stream only in whole reads; the spec's
        // rule says whether an incremental run may load them (never the next run's guess).
        let null_rule = mode.reads_incrementally() && !spec.cursor.is_empty();
        while let Some(batch) = stream.try_next().await? {
            p.extracted += batch.num_rows() as u64;
            p.bytes += batch.get_array_memory_size() as u64;
            if let Some(hook) = &self.progress {
                (hook.0)(&Progress {
                    table: spec.name.clone(),
                    rows: p.extracted,
                    bytes: p.bytes,
                    done: false,
                });
            }
            if null_rule {
                let nulls = batch::null_cursor_mask(&spec.name, &batch, &spec.cursor)?.true_count() as u64;
                p.null_cursor += window::check_null_cursors(spec, nulls)?;
            }
            if !spec.cursor.is_empty() {
                p.max_cursor = CursorValue::max_opt(
                    p.max_cursor.take(),
                    batch::max_cursor(&spec.name, &batch, &spec.cursor)?,
                );
            }
            if chunked && batch.num_rows() > 0 {
                p.last_row = Some(window::last_row_position(spec, &batch)?);
            }
            let mut b = batch;
            for t in &spec.transforms {
                b = t.apply(&spec.name, b)?;
            }
            if spec.processed_at {
                b = transform::add_processed_at(&spec.name, b, started_at)?;
            }
            if spec.keep_latest {
                held.push(b);
            } else if b.num_rows() > 0 {
                p.written += b.num_rows() as u64;
                writer.write(b).await?;
            }
            if p.extracted >= next_progress {
                tracing::info!(rows = p.extracted, "extracting");
                next_progress += 1_000_000;
            }
        }
        if spec.keep_latest {
            let (out, collapsed) = transform::keep_latest(&spec.name, &held, &spec.primary_key, &spec.cursor)?;
            drop(held);
            p.collapsed = collapsed;
            if let Some(out) = out {
                let mut off = 0;
                while off < out.num_rows() {
                    let len = self.batch_size.min(out.num_rows() - off);
                    writer.write(out.slice(off, len)).await?;
                    off += len;
                }
                p.written = out.num_rows() as u64;
            }
        }
        Ok(())
    }
}

/// Batches the source may decode ahead of the sink.
const PREFETCH: usize = 2;

/// Polls `stream` on its own task, up to [`PREFETCH`] batches ahead, so that the source
/// decodes while the sink encodes (two cores instead of one). Dropping the returned stream
/// aborts the task.
fn prefetch(mut stream: BatchStream) -> BatchStream {
    let (tx, rx) = tokio::sync::mpsc::channel(PREFETCH);
    let guard = crate::kit::task::AbortOnDrop::spawn(async move {
        while let Some(item) = stream.next().await {
            if tx.send(item).await.is_err() {
                break;
            }
        }
    });
    Box::pin(futures::stream::unfold((rx, guard), |(mut rx, guard)| async move {
        rx.recv().await.map(|item| (item, (rx, guard)))
    }))
}

async fn abort(writer: Box<dyn TableWriter>, e: Error) -> Error {
    if let Err(abort_err) = writer.abort().await {
        tracing::warn!(error = %abort_err, "could not discard staged data; the next run cleans it");
    }
    e
}

/// The rows of `extract` whose key is in one of `intervals` (a source may return more).
fn keep_keys(spec: &TableSpec, extract: Extract, intervals: &[(i64, i64)]) -> Extract {
    let (spec, intervals) = (spec.clone(), intervals.to_vec());
    let stream = extract
        .stream
        .map(move |b| b.and_then(|b| window::keep_keys(&spec, &b, &intervals)));
    Extract {
        stream: Box::pin(stream),
        ..extract
    }
}

/// Moves a read's [`crate::HeldBack`] into the table's report.
fn take_held_back(stats: &ExtractStats, report: &mut TableReport) {
    if let Some(held) = stats.held_back.lock().expect("held_back lock").take() {
        tracing::info!(reason = %held.reason, "window held back");
        report.held_back = Some(held);
    }
}
