//! The source contract, the batch stream type, and an in-memory source.

use std::collections::HashMap;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use futures::Stream;

use crate::error::{Error, Result};
use crate::kit::{batch, window};
use crate::mode::LoadMode;
use crate::position::{CursorValue, Low, Position};
use crate::spec::{SourceRef, TableSpec};

/// A stream of record batches; errors end it, dropping it cancels the work behind it.
pub type BatchStream = Pin<Box<dyn Stream<Item = Result<RecordBatch>> + Send>>;

/// What a read would cover, said without reading it ([`Source::estimate`]; `etl plan`):
/// `None` where the source cannot say cheaply.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Estimate {
    /// Rows the read would return (a database counts them under the window's predicate).
    pub rows: Option<u64>,
    /// Files it would read (file sources: the new and changed ones).
    pub files: Option<u64>,
    /// Their bytes.
    pub bytes: Option<u64>,
}

/// Counters a source fills while its stream is consumed; the runner reads them when the
/// stream ends.
#[derive(Debug, Default)]
pub struct ExtractStats {
    /// Rows in the source before the incremental filter (a table's `count(*)`, or the rows of
    /// the files read — see `count_is_partial`); meaningful once
    /// [`ExtractStats::count_source`] was called.
    pub source_rows: AtomicU64,
    /// Whether the source counted its rows.
    pub source_counted: AtomicBool,
    /// The count is of part of the source only (the files a read of new files read), not
    /// of the whole source.
    pub count_is_partial: AtomicBool,
    /// Rows that could not be parsed and were diverted to a rejects file.
    pub rejected_rows: AtomicU64,
    /// Files read (file sources).
    pub files: AtomicU64,
    /// Bytes read from the source, where known.
    pub bytes: AtomicU64,
    /// Chunks the read was split into (parallel reads).
    pub chunks: AtomicU64,
    /// Rows whose cursor columns are all NULL that an incremental read left out (under
    /// [`crate::NullCursors::WholeReadsOnly`]), where the source saw them.
    pub null_cursor_rows: AtomicU64,
    /// The read ended its window below the high-water mark it saw (the runner puts it in
    /// the report): set when the read starts, or, by a read that ends its window as it
    /// streams, before its stream ends.
    pub held_back: std::sync::Mutex<Option<crate::report::HeldBack>>,
    /// What the user should know about this read (the runner puts it in the report).
    pub warnings: std::sync::Mutex<Vec<String>>,
}

impl ExtractStats {
    /// Adds to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Adds `n` to the source's row count and marks it counted.
    pub fn count_source(&self, n: u64) {
        self.source_rows.fetch_add(n, Ordering::Relaxed);
        self.source_counted.store(true, Ordering::Relaxed);
    }

    /// The source's row count, if it counted one.
    pub fn source_count(&self) -> Option<u64> {
        self.source_counted
            .load(Ordering::Relaxed)
            .then(|| self.source_rows.load(Ordering::Relaxed))
    }

    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// Records a warning for the report.
    pub fn warn(&self, message: impl Into<String>) {
        self.warnings.lock().expect("warnings lock").push(message.into());
    }
}

/// What a source is asked for.
#[derive(Debug, Clone, Copy)]
pub struct ReadRequest<'a> {
    /// The table.
    pub spec: &'a TableSpec,
    /// The mode of this run (after overrides).
    pub mode: LoadMode,
    /// Where the last committed run stopped; `None` means read everything (or the spec's
    /// initial window). Always `None` for modes that read the whole source.
    pub from: Option<&'a Position>,
    /// The run's id (for rejects files and logs).
    pub run_id: &'a str,
    /// Rows per batch the source should aim for.
    pub batch_size: usize,
    /// A chunked read ([`crate::TableSpec::chunk_rows`]): at most this many rows, the first
    /// ones in (cursor, primary key) order after `from`'s (cursor, key) pair, yielded in that
    /// order. Only asked of sources whose [`Source::reads_in_chunks`] is true.
    pub limit: Option<usize>,
    /// The window's upper end, given: a backfill's ([`crate::Pipeline::backfill`]) or a shard
    /// plan's ([`crate::shard`]). An incremental read returns only rows whose cursor is at most
    /// this value, and a source may take it as the high-water mark without looking for the
    /// greatest cursor (a whole read reads every row whatever its cursor).
    pub until: Option<&'a CursorValue>,
    /// A repair's key intervals ([`crate::ReconcilePolicy::Repair`]): sorted, disjoint and
    /// inclusive, of the one integer primary key. A source may read only the rows whose key
    /// is inside one (the runner keeps only those either way); the read is not the table's
    /// count.
    pub keys: Option<&'a [(i64, i64)]>,
    /// A shard's file set ([`crate::shard::Shard::files`]): paths relative to the source's
    /// location. A files source reads only these of the window's files, and fails naming one
    /// that is gone; other sources ignore it.
    pub files: Option<&'a [String]>,
}

/// The answer to a [`ReadRequest`]: a lazy stream over the window and what the window is.
pub struct Extract {
    /// The schema of every batch of `stream`.
    pub schema: SchemaRef,
    /// The rows of the window `(from, high]`.
    pub stream: BatchStream,
    /// The high-water mark captured at the start of the read. When its cursor is `None` and
    /// the spec has cursor columns, the runner takes the highest cursor value it extracted.
    pub high: Position,
    /// Counters filled while `stream` is consumed.
    pub stats: Arc<ExtractStats>,
    /// The source knows, without reading, that nothing is new.
    pub no_new_data: bool,
}

impl fmt::Debug for Extract {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Extract")
            .field("schema", &self.schema)
            .field("high", &self.high)
            .field("no_new_data", &self.no_new_data)
            .finish_non_exhaustive()
    }
}

/// Reads tables as streams of Arrow record batches.
///
/// # Contract
/// - [`Source::check`] fails with [`Error::TableNotFound`] for a table that does not exist,
///   before anything is read; the runner calls it for every table before any write.
/// - [`Source::read`] captures the high-water mark from the source's own data or clock when it
///   is called; the stream then yields exactly the rows of `(from, high]` (with the spec's
///   lookback re-read). Rows arriving later belong to the next run.
/// - Reading has no side effect on the source; a read may be repeated (a rerun after a crash
///   reads the same window again).
/// - The stream is lazy and bounded in memory; dropping it cancels the read.
#[async_trait]
pub trait Source: fmt::Debug + Send + Sync + 'static {
    /// A short name for messages (`files`, `postgres`, …).
    fn name(&self) -> &str;

    /// Checks that the table exists and can be read.
    async fn check(&self, spec: &TableSpec) -> Result<()>;

    /// Starts reading a window of a table.
    async fn read(&self, req: ReadRequest<'_>) -> Result<Extract>;

    /// The source's side of a key comparison ([`crate::keys`]), for sources that compute
    /// key digests where the rows live (the database sources); `None` by default.
    fn key_reader(&self) -> Option<&dyn crate::keys::KeyReader> {
        None
    }

    /// What the database `spec`'s table lives in has in progress, looked at now, for a read
    /// that joins the table with tables of other sources ([`crate::kit::window::joined_end`]):
    /// asked before the read begins, so that the join's window can end below the oldest
    /// transaction still open there. `None` (the default) for a source without transactions.
    async fn in_flight(&self, spec: &TableSpec) -> Result<Option<crate::kit::window::InFlight>> {
        let _ = spec;
        Ok(None)
    }

    /// What [`Source::read`] of `req` would cover, without reading it and writing nothing
    /// (unknown by default).
    async fn estimate(&self, req: ReadRequest<'_>) -> Result<Estimate> {
        let _ = req;
        Ok(Estimate::default())
    }

    /// How a read of `req` splits into shards by key range, sized by `sizing`, for a plan
    /// ([`crate::Pipeline::plan_shards`]): the high-water mark a read taken now would end at,
    /// and the key intervals (or, for a table it cannot split by key, one interval of every
    /// key and [`crate::shard::Split::unsplit`] saying why). Reads no rows.
    ///
    /// # Errors
    /// [`Error::Config`] by default: the source does not split reads.
    async fn split(&self, req: ReadRequest<'_>, sizing: crate::shard::ShardSizing) -> Result<crate::shard::Split> {
        let _ = sizing;
        Err(Error::config(format!(
            "table `{}`: source `{}` does not split a read into shards (the database sources do)",
            req.spec.name,
            self.name()
        )))
    }

    /// Whether the source honours [`ReadRequest::limit`] (ordered, resumable chunks).
    fn reads_in_chunks(&self) -> bool {
        false
    }
}

/// A source over record batches held in memory, for tests, examples and data a program
/// already has. Tables are named by [`SourceRef::Table`]; incremental reads filter on the
/// spec's cursor columns.
///
/// # Memory
/// Holds every batch it is given.
#[derive(Debug, Default)]
pub struct MemorySource {
    tables: RwLock<HashMap<String, (SchemaRef, Vec<RecordBatch>)>>,
}

impl MemorySource {
    /// An empty source.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a batch to a table, creating it with the batch's schema.
    ///
    /// # Errors
    /// [`Error::ColumnTypeConflict`] when the schema differs from the table's.
    pub fn append(&self, table: &str, batch: RecordBatch) -> Result<()> {
        let mut t = self.tables.write().expect("lock");
        let entry = t
            .entry(table.to_string())
            .or_insert_with(|| (batch.schema(), Vec::new()));
        if entry.0 != batch.schema() {
            return Err(Error::ColumnTypeConflict {
                table: table.to_string(),
                column: "*".to_string(),
                expected: format!("{:?}", entry.0),
                found: format!("{:?}", batch.schema()),
            });
        }
        entry.1.push(batch);
        Ok(())
    }

    fn table_name<'a>(&self, spec: &'a TableSpec) -> Result<&'a str> {
        match &spec.source {
            SourceRef::Table(t) => Ok(t),
            other => Err(Error::config(format!(
                "table `{}`: the memory source reads named tables, not {other:?}",
                spec.name
            ))),
        }
    }
}

#[async_trait]
impl Source for MemorySource {
    fn name(&self) -> &str {
        "memory"
    }

    async fn check(&self, spec: &TableSpec) -> Result<()> {
        let name = self.table_name(spec)?;
        if self.tables.read().expect("lock").contains_key(name) {
            Ok(())
        } else {
            Err(Error::TableNotFound {
                table: name.to_string(),
                source_name: "memory".to_string(),
            })
        }
    }

    async fn read(&self, req: ReadRequest<'_>) -> Result<Extract> {
        let spec = req.spec;
        let name = self.table_name(spec)?;
        let (schema, batches) =
            self.tables
                .read()
                .expect("lock")
                .get(name)
                .cloned()
                .ok_or_else(|| Error::TableNotFound {
                    table: name.to_string(),
                    source_name: "memory".to_string(),
                })?;
        let stats = Arc::new(ExtractStats::default());
        let mut high: Option<CursorValue> = None;
        for b in &batches {
            stats.count_source(b.num_rows() as u64);
            if !spec.cursor.is_empty() {
                high = CursorValue::max_opt(high, batch::max_cursor(&spec.name, b, &spec.cursor)?);
            }
        }
        if let Some(until) = req.until {
            high = high.map(|h| if h > *until { until.clone() } else { h });
        }
        let low = if req.mode.reads_incrementally() {
            window::window_low(spec, req.from, high.as_ref())
        } else {
            Low::Start
        };
        let mut out = Vec::with_capacity(batches.len());
        for b in batches {
            let (b, null_rows) = window::filter_window(spec, &b, &low, req.until)?;
            ExtractStats::add(&stats.null_cursor_rows, null_rows);
            if b.num_rows() > 0 {
                out.push(Ok(b));
            }
        }
        let no_new_data = low.is_bounded() && out.is_empty();
        Ok(Extract {
            schema,
            stream: Box::pin(futures::stream::iter(out)),
            high: Position {
                cursor: high,
                files: Default::default(),
                key: None,
            },
            stats,
            no_new_data,
        })
    }
    /// Splits by the least and greatest key of the rows the read of `req` would return.
    async fn split(&self, req: ReadRequest<'_>, sizing: crate::shard::ShardSizing) -> Result<crate::shard::Split> {
        use futures::TryStreamExt;
        let key = crate::keys::key_column(req.spec)?.to_string();
        let extract = self.read(req).await?;
        let (high, no_new_data) = (extract.high.clone(), extract.no_new_data);
        let batches: Vec<RecordBatch> = extract.stream.try_collect().await?;
        let mut bounds: Option<(i64, i64)> = None;
        let mut rows = 0u64;
        for b in &batches {
            let col = b.column_by_name(&key).ok_or_else(|| Error::ColumnNotFound {
                table: req.spec.name.clone(),
                column: key.clone(),
            })?;
            let ints = batch::cast_column(&req.spec.name, &key, col, &arrow::datatypes::DataType::Int64)?;
            let ints = ints
                .as_any()
                .downcast_ref::<arrow::array::Int64Array>()
                .expect("cast to Int64");
            rows += b.num_rows() as u64;
            if let (Some(lo), Some(hi)) = (arrow::compute::min(ints), arrow::compute::max(ints)) {
                bounds = Some(bounds.map_or((lo, hi), |(a, z)| (a.min(lo), z.max(hi))));
            }
        }
        let incremental = req.mode.reads_incrementally();
        let keys = match (bounds, sizing) {
            (None, _) if incremental => Vec::new(),
            (None, _) => vec![(i64::MIN, i64::MAX)],
            (Some((lo, hi)), crate::shard::ShardSizing::Count(n)) => crate::shard::key_intervals(lo, hi, n),
            (Some((lo, hi)), crate::shard::ShardSizing::Rows(per)) => {
                crate::shard::key_intervals(lo, hi, rows.div_ceil(per.max(1)) as usize)
            }
            (Some((lo, hi)), crate::shard::ShardSizing::Bytes(per)) => {
                let bytes: u64 = batches.iter().map(|b| b.get_array_memory_size() as u64).sum();
                crate::shard::key_intervals(lo, hi, bytes.div_ceil(per.max(1)) as usize)
            }
        };
        Ok(crate::shard::Split {
            high,
            no_new_data: no_new_data || (incremental && bounds.is_none()),
            keys,
            ..Default::default()
        })
    }
}
