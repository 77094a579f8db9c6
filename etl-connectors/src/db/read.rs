//! The read every database source makes, in one place; a source supplies only its driver's
//! parts ([`Database`]).
//!
//! ```text
//!  relation ─► connect ─► describe ─► what is in flight (transactions in progress, the clock)
//!     ─► snapshot (one connection, or ranges sharing it)
//!     ─► high-water mark (max cursor, in the snapshot, held below what was in flight)
//!     ─► window (stored position, high]
//!     ─► NULL-cursor rows (filtered reads) ─► nothing new? ─► count beside the rows
//!     ─► stream each range's rows ─► every range ended, the count joined
//! ```

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use etl_core::QUERY_WATERMARK as WATERMARK;
use etl_core::kit::sql::Dialect;
use etl_core::kit::task::AbortOnDrop;
use etl_core::kit::window;
use etl_core::kit::window::{InFlight, hold_high};
use etl_core::shard::{ShardSizing, Split};
use etl_core::{BatchStream, CursorValue, Error, Extract, ExtractStats, ReadRequest, Result, SourceRef, TableSpec};
use futures::StreamExt;

use super::Counts;
use super::window::Window;

/// A column of a described relation, as the read template needs it.
pub(crate) trait Column {
    /// The column's name.
    fn name(&self) -> &str;
    /// Its Arrow type.
    fn data_type(&self) -> &DataType;
}

/// One connection of a read, in the read's snapshot, and the part of the relation it reads:
/// an extra predicate (` AND …`, empty for all of it) and its parameters.
pub(crate) struct Range<C> {
    pub(crate) conn: C,
    pub(crate) predicate: String,
    pub(crate) params: Vec<CursorValue>,
}

impl<C> Range<C> {
    /// The whole relation on `conn`.
    pub(crate) fn whole(conn: C) -> Self {
        Range {
            conn,
            predicate: String::new(),
            params: Vec::new(),
        }
    }
}

/// What the rows of one range are decoded into.
pub(crate) struct Rows<P> {
    pub(crate) table: String,
    pub(crate) schema: SchemaRef,
    pub(crate) plans: Vec<P>,
    pub(crate) batch_size: usize,
    /// Counts the rows as they stream, when the read is the table's count.
    pub(crate) counter: Option<Arc<ExtractStats>>,
}

/// A database's driver parts of the read. Every method's errors name the table.
#[async_trait]
pub(crate) trait Database: Clone + Send + Sync + 'static {
    /// The connector's name (`postgres`, `mysql`).
    const NAME: &'static str;
    /// How names and bounds are written.
    const DIALECT: Dialect;
    /// Whether the window's bounds are bound as parameters; else typed literals (Postgres's
    /// `COPY` takes no parameters).
    const BINDS: bool;

    /// A connection.
    type Conn: Send + 'static;
    /// A described column.
    type Plan: Column + Clone + Send + Sync + 'static;

    /// When the read counts the table for the report.
    fn counts(&self) -> Counts;

    /// A new connection.
    async fn connect(&self, table: &str) -> Result<Self::Conn>;

    /// Ends a connection (and its snapshot) now.
    async fn close(&self, conn: Self::Conn);

    /// The columns of `rel` (`SELECT * FROM rel LIMIT 0`), mapped to Arrow; a type not
    /// mapped is an error naming table, column and type.
    async fn describe(&self, conn: &mut Self::Conn, spec: &TableSpec, rel: &str) -> Result<Vec<Self::Plan>>;

    /// What the database has in progress, looked at on `conn` just before the snapshot
    /// begins: its clock, the start of the oldest other transaction, transactions whose
    /// start it cannot show, and those writing `rel`. Looked at before, not in, the
    /// snapshot: a transaction that starts in between starts after the clock read here.
    async fn in_flight(&self, conn: &mut Self::Conn, spec: &TableSpec, rel: &str) -> Result<InFlight>;

    /// Starts the read's snapshot on `conn`. A whole read (`whole`) of a large table may be
    /// split into ranges read over more connections, all in the same snapshot; the first
    /// range's connection is `conn`.
    async fn snapshot(
        &self,
        conn: Self::Conn,
        spec: &TableSpec,
        rel: &str,
        plans: &[Self::Plan],
        whole: bool,
    ) -> Result<Vec<Range<Self::Conn>>>;

    /// The greatest value of the cursor columns, in the snapshot of `conn`.
    async fn high_water(
        &self,
        conn: &mut Self::Conn,
        spec: &TableSpec,
        rel: &str,
        plans: &[Self::Plan],
    ) -> Result<Option<CursorValue>>;

    /// The rows whose cursor columns are all NULL, in the snapshot of `conn` (no query when
    /// one of them cannot be NULL).
    async fn null_cursor_rows(
        &self,
        conn: &mut Self::Conn,
        spec: &TableSpec,
        rel: &str,
        plans: &[Self::Plan],
    ) -> Result<u64>;

    /// Every row of `sql` on `conn`, each cell as text (the statements cast to text).
    async fn cells(&self, conn: &mut Self::Conn, table: &str, sql: &str) -> Result<etl_core::keys::Cells>;

    /// `SELECT count(*) FROM rel`, on a connection of its own.
    async fn count(&self, table: &str, rel: &str) -> Result<u64>;

    /// `SELECT count(*) FROM rel WHERE filter`, its bounds in `params` where the dialect
    /// binds them, on a connection of its own.
    async fn count_where(&self, table: &str, rel: &str, filter: &str, params: Vec<CursorValue>) -> Result<u64>;

    /// A column as the read selects it (a cast to text for a type read as text).
    fn select(plan: &Self::Plan) -> String;

    /// The rows of `select` (with `params`) on `range`'s connection, decoded into batches;
    /// the range's snapshot ends when they do.
    fn rows(&self, conn: Self::Conn, select: String, params: Vec<CursorValue>, rows: Rows<Self::Plan>) -> BatchStream;
}

/// The FROM item of a spec: a table, quoted, or a query as a subquery. A query that names
/// the watermark ([`WATERMARK`]) is read only as [`relation_at`] gives it: a reconciliation
/// or a key read needs the whole source, not a window of it.
pub(crate) fn relation<D: Database>(spec: &TableSpec) -> Result<String> {
    match &spec.source {
        SourceRef::Query(q) if q.contains(WATERMARK) => Err(Error::config(format!(
            "table `{}`: its query names {WATERMARK}, so it reads a window, and comparing keys or \
             content needs the whole source (a table, or a query without {WATERMARK})",
            spec.name
        ))),
        _ => relation_at::<D>(spec, None),
    }
}

/// [`relation`], a query's [`WATERMARK`] replaced by `low` as a typed literal of the dialect
/// (`NULL` when `None`: the columns are described the same).
fn relation_at<D: Database>(spec: &TableSpec, low: Option<&CursorValue>) -> Result<String> {
    match &spec.source {
        SourceRef::Table(t) => Ok(D::DIALECT.quote_qualified(t)),
        SourceRef::Query(q) => {
            let low = low.map_or_else(|| "NULL".to_string(), |v| D::DIALECT.literal(v));
            Ok(format!("({}) AS {}", q.replace(WATERMARK, &low), D::DIALECT.quote("q")))
        }
        other => Err(Error::config(format!(
            "table `{}`: the {} source reads tables and queries, not {other:?}",
            spec.name,
            D::NAME
        ))),
    }
}

/// Whether the spec's query places the window's lower end itself ([`WATERMARK`]).
fn owns_window(spec: &TableSpec) -> bool {
    matches!(&spec.source, SourceRef::Query(q) if q.contains(WATERMARK))
}

/// The value a query's [`WATERMARK`] stands for: the window's lower end (the stored cursor, less
/// the lookback), or before any, the least value of the first cursor column's type, so that a
/// first run reads what the query selects from all time.
fn watermark_value<P: Column>(req: &ReadRequest<'_>, plans: &[P]) -> Result<CursorValue> {
    let spec = req.spec;
    let cursor = spec.cursor.first().ok_or_else(|| {
        Error::config(format!(
            "table `{}`: its query names {WATERMARK}, which stands for the cursor's watermark: \
             give the table a cursor column",
            spec.name
        ))
    })?;
    let incremental = req.mode.reads_incrementally();
    if let (true, etl_core::Low::After(v)) = (incremental, window::window_low(spec, req.from, None)) {
        return Ok(v);
    }
    let ty = plans.iter().find(|p| p.name() == cursor).map(|p| p.data_type().clone());
    let epoch = chrono::NaiveDate::from_ymd_opt(1, 1, 1).expect("year 1");
    match ty {
        Some(DataType::Date32 | DataType::Date64) => Ok(CursorValue::Date(epoch)),
        Some(DataType::Timestamp(_, Some(_))) => Ok(CursorValue::TimestampTz(
            epoch.and_hms_opt(0, 0, 0).expect("midnight").and_utc(),
        )),
        Some(DataType::Timestamp(_, None)) => Ok(CursorValue::Timestamp(epoch.and_hms_opt(0, 0, 0).expect("midnight"))),
        Some(t) if t.is_integer() => Ok(CursorValue::Int(i64::MIN)),
        Some(DataType::Utf8 | DataType::LargeUtf8) => Ok(CursorValue::Text(String::new())),
        other => Err(Error::config(format!(
            "table `{}`: {WATERMARK} in its query stands for cursor `{cursor}`, of type {}, which has no least value \
             to start from",
            spec.name,
            other.map_or_else(|| "unknown".to_string(), |t| t.to_string())
        ))),
    }
}

/// The columns of a spec's relation; a cursor column it lacks is an error.
async fn describe<D: Database>(db: &D, conn: &mut D::Conn, spec: &TableSpec, rel: &str) -> Result<Vec<D::Plan>> {
    let plans = db.describe(conn, spec, rel).await?;
    for c in &spec.cursor {
        if !plans.iter().any(|p| p.name() == c) {
            return Err(Error::ColumnNotFound {
                table: spec.name.clone(),
                column: c.clone(),
            });
        }
    }
    Ok(plans)
}

/// [`etl_core::Source::check`]: the relation exists and every column maps.
pub(crate) async fn check<D: Database>(db: &D, spec: &TableSpec) -> Result<()> {
    let rel = relation_at::<D>(spec, None)?;
    let mut conn = db.connect(&spec.name).await?;
    let described = describe(db, &mut conn, spec, &rel).await.map(|_| ());
    db.close(conn).await;
    described
}

/// [`etl_core::Source::in_flight`] of a database source, on a connection of its own.
pub(crate) async fn in_flight<D: Database>(db: &D, spec: &TableSpec) -> Result<InFlight> {
    let rel = relation_at::<D>(spec, None)?;
    let mut conn = db.connect(&spec.name).await?;
    let seen = db.in_flight(&mut conn, spec, &rel).await;
    db.close(conn).await;
    seen
}

/// What a read of `req` would return, counted under the window's lower end (the read's
/// upper end is the high-water mark of its own snapshot, so this counts at least as much).
pub(crate) async fn estimate<D: Database>(db: &D, req: ReadRequest<'_>) -> Result<etl_core::Estimate> {
    let spec = req.spec;
    let rel = relation_at::<D>(spec, None)?;
    let mut conn = db.connect(&spec.name).await?;
    let described = describe(db, &mut conn, spec, &rel).await;
    db.close(conn).await;
    let (rel, req) = placed::<D>(&req, &described?)?;
    let window = Window::new(&req, None, false);
    let rows = if window.filtered() {
        let mut params = Vec::new();
        let (filter, _) = window.predicate(D::DIALECT, spec, D::BINDS.then_some(&mut params));
        db.count_where(&spec.name, &rel, &filter, params).await?
    } else {
        db.count(&spec.name, &rel).await?
    };
    Ok(etl_core::Estimate {
        rows: Some(rows),
        ..Default::default()
    })
}

/// The relation a read of `req` selects from, and the request its window is made of: a query
/// that names [`WATERMARK`] gets the window's lower end in its own predicate, and the window
/// only the upper end (the watermark moves to the greatest cursor the query returned).
fn placed<'a, D: Database>(req: &ReadRequest<'a>, plans: &[D::Plan]) -> Result<(String, ReadRequest<'a>)> {
    if !owns_window(req.spec) {
        return Ok((relation_at::<D>(req.spec, None)?, *req));
    }
    let low = watermark_value(req, plans)?;
    let rel = relation_at::<D>(req.spec, Some(&low))?;
    Ok((rel, ReadRequest { from: None, ..*req }))
}

/// A read opened: its relation, request and columns, its snapshot's ranges, and the window
/// taken in that snapshot — what a read streams, and what a shard plan splits.
struct Opened<'a, D: Database> {
    rel: String,
    req: ReadRequest<'a>,
    plans: Vec<D::Plan>,
    schema: SchemaRef,
    stats: Arc<ExtractStats>,
    ranges: Vec<Range<D::Conn>>,
    window: Window,
}

/// Opens the read of `original`: connects, describes, looks at what is in flight, takes the
/// snapshot (over one connection when `one_range`) and the window in it. `Err` holds the
/// answer when nothing is new (every connection closed).
async fn open<'a, D: Database>(
    db: &D,
    original: ReadRequest<'a>,
    one_range: bool,
) -> Result<std::result::Result<Opened<'a, D>, Extract>> {
    let spec = original.spec;
    let rel = relation_at::<D>(spec, None)?;
    let mut conn = db.connect(&spec.name).await?;
    let described = describe(db, &mut conn, spec, &rel)
        .await
        .and_then(|plans| Ok((placed::<D>(&original, &plans)?, plans)));
    let ((rel, req), plans) = match described {
        Ok(p) => p,
        Err(e) => {
            db.close(conn).await;
            return Err(e);
        }
    };
    let schema = Arc::new(Schema::new(
        plans
            .iter()
            .map(|p| Field::new(p.name(), p.data_type().clone(), true))
            .collect::<Vec<_>>(),
    ));
    let stats = Arc::new(ExtractStats::default());
    // Whether the read can be of the whole table is known before the snapshot: only a stored
    // position, an initial window or a chunk limit gives it a lower bound.
    let incremental = req.mode.reads_incrementally() && !spec.cursor.is_empty();
    // A repair's key ranges are not the whole table either.
    let whole = !one_range
        && req.keys.is_none()
        && !(incremental && (req.from.is_some() || spec.initial_window.is_some() || req.limit.is_some()));
    // Only date and timestamp cursors are held (and a settle age is checked against them).
    let timed = plans.iter().any(|p| {
        spec.cursor.iter().any(|c| c == p.name())
            && matches!(
                p.data_type(),
                DataType::Date32 | DataType::Date64 | DataType::Timestamp(..)
            )
    });
    let seen = if incremental && (spec.settle.is_some() || (spec.wait_for_commits && timed)) {
        match db.in_flight(&mut conn, spec, &rel).await {
            Ok(seen) => Some(seen),
            Err(e) => {
                db.close(conn).await;
                return Err(e);
            }
        }
    } else {
        None
    };
    let mut ranges = db.snapshot(conn, spec, &rel, &plans, whole).await?;
    let prepared = async {
        let first = &mut ranges[0].conn;
        // A backfill, or a shard of a plan, ends at its upper end: no need to look for the
        // greatest cursor (the rows past the greatest are none).
        let high = match (spec.cursor.is_empty(), req.until) {
            (true, _) => None,
            (false, Some(until)) => Some(until.clone()),
            (false, None) => db.high_water(first, spec, &rel, &plans).await?,
        };
        let (high, held) = match &seen {
            Some(seen) => hold_high(spec, original.from.and_then(|p| p.cursor.as_ref()), high, seen)?,
            None => (high, None),
        };
        let read_nothing = held.as_ref().is_some_and(|h| h.to.is_none());
        let capped = held.is_some() || req.until.is_some();
        *stats.held_back.lock().expect("held_back lock") = held;
        let mut window = Window::new(&req, high, capped);
        window.nothing_new |= read_nothing;
        if window.counts_null_cursors() {
            let n = db.null_cursor_rows(first, spec, &rel, &plans).await?;
            ExtractStats::add(
                &stats.null_cursor_rows,
                etl_core::kit::window::check_null_cursors(spec, n)?,
            );
        }
        Ok::<_, Error>(window)
    }
    .await;
    match prepared {
        Ok(window) if !window.nothing_new => Ok(Ok(Opened {
            rel,
            req,
            plans,
            schema,
            stats,
            ranges,
            window,
        })),
        other => {
            for r in ranges {
                db.close(r.conn).await;
            }
            other.map(|w| Err(w.empty(schema, stats)))
        }
    }
}

/// [`etl_core::Source::split`] of a database source: the read's window, taken as a read would
/// take it, and the least and greatest primary key in it (counted, when sized by rows), in
/// one snapshot. A table without a primary key of one integer column is one shard that reads
/// the whole window ([`Split::unsplit`] says why).
pub(crate) async fn split<D: Database>(db: &D, req: ReadRequest<'_>, sizing: ShardSizing) -> Result<Split> {
    let spec = req.spec;
    let opened = match open(db, req, true).await? {
        Ok(o) => o,
        Err(empty) => {
            return Ok(Split {
                high: empty.high,
                held_back: empty.stats.held_back.lock().expect("held_back lock").take(),
                no_new_data: true,
                ..Split::default()
            });
        }
    };
    let Opened {
        rel,
        plans,
        stats,
        mut ranges,
        window,
        ..
    } = opened;
    // The one integer key to split by, or why the window is one shard.
    let key = match etl_core::keys::key_column(spec) {
        Err(_) => Err(format!(
            "table `{}`: a shard plan splits a table by its primary key of one integer column, and it has none \
             (TableSpec::primary_key)",
            spec.name
        )),
        Ok(key) if !plans.iter().any(|p| p.name() == key && p.data_type().is_integer()) => Err(format!(
            "table `{}`: a shard plan splits a table by its primary key, and `{key}` is not an integer column",
            spec.name
        )),
        Ok(key) => Ok(key),
    };
    let answer = match key {
        Err(_) => Ok(Vec::new()),
        Ok(key) => {
            let counted = matches!(sizing, ShardSizing::Rows(_) | ShardSizing::Bytes(_));
            let (filter, _) = window.predicate(D::DIALECT, spec, None);
            let sql = D::DIALECT.split_bounds(&rel, key, &filter, counted);
            tracing::debug!(table = %spec.name, sql = %sql, connector = D::NAME, "shard plan");
            let conn = &mut ranges[0].conn;
            match db.cells(conn, &spec.name, &sql).await {
                Ok(mut rows) if matches!(sizing, ShardSizing::Bytes(_)) => {
                    let columns: Vec<String> = plans.iter().map(|p| p.name().to_string()).collect();
                    let sql = D::DIALECT.mean_row_bytes(&rel, &columns, &filter);
                    tracing::debug!(table = %spec.name, sql = %sql, connector = D::NAME, "shard plan");
                    db.cells(conn, &spec.name, &sql).await.map(|mean| {
                        if let Some(row) = rows.first_mut() {
                            row.push(mean.first().and_then(|r| r.first().cloned()).flatten());
                        }
                        rows
                    })
                }
                answer => answer,
            }
        }
    };
    for r in ranges {
        db.close(r.conn).await;
    }
    let rows = answer?;
    let held_back = stats.held_back.lock().expect("held_back lock").take();
    let incremental = window.incremental;
    if let Err(why) = key {
        return Ok(Split {
            high: window.position(),
            held_back,
            keys: vec![(i64::MIN, i64::MAX)],
            unsplit: Some(why),
            ..Split::default()
        });
    }
    let Some((min, max)) = etl_core::keys::parse_bounds(&spec.name, &rows)? else {
        // Nothing in the window: an incremental run has nothing new; a whole read still
        // replaces the target, with one shard that reads nothing.
        return Ok(Split {
            high: window.position(),
            held_back,
            no_new_data: incremental,
            keys: if incremental {
                Vec::new()
            } else {
                vec![(i64::MIN, i64::MAX)]
            },
            ..Split::default()
        });
    };
    let number = |i: usize| -> f64 {
        rows[0]
            .get(i)
            .and_then(|c| c.as_deref())
            .and_then(|c| c.trim().parse().ok())
            .unwrap_or(0.0)
    };
    let shards = match sizing {
        ShardSizing::Count(n) => n,
        ShardSizing::Rows(per) => (number(2) as u64).div_ceil(per.max(1)) as usize,
        // The window's rows times their mean size.
        ShardSizing::Bytes(per) => ((number(2) * number(3)) as u64).div_ceil(per.max(1)) as usize,
    };
    Ok(Split {
        high: window.position(),
        held_back,
        keys: etl_core::shard::key_intervals(min, max, shards),
        ..Split::default()
    })
}

/// [`etl_core::Source::read`] of a database source.
pub(crate) async fn read<D: Database>(db: &D, original: ReadRequest<'_>) -> Result<Extract> {
    let Opened {
        rel,
        req,
        plans,
        schema,
        stats,
        ranges,
        window,
    } = match open(db, original, false).await? {
        Ok(o) => o,
        Err(empty) => return Ok(empty),
    };
    let spec = req.spec;
    let mut window_params = Vec::new();
    let (filter, order) = window.predicate(D::DIALECT, spec, D::BINDS.then_some(&mut window_params));
    let filter = match (req.keys, spec.primary_key.as_slice()) {
        (Some(intervals), [key]) => format!("{filter} AND {}", D::DIALECT.key_intervals(key, intervals)),
        _ => filter,
    };
    let select: Vec<String> = plans.iter().map(D::select).collect();
    let wanted = window.wants_count(db.counts()) && req.keys.is_none();
    let unfiltered = !window.filtered();
    // A whole read counts the table as it streams; a filtered one needs count(*).
    let count = (wanted && !unfiltered).then(|| {
        let (db, rel, table, stats) = (db.clone(), rel.clone(), spec.name.clone(), stats.clone());
        AbortOnDrop::spawn(async move {
            stats.count_source(db.count(&table, &rel).await?);
            Ok::<(), Error>(())
        })
    });
    ExtractStats::add(&stats.chunks, ranges.len() as u64);
    let streams: Vec<BatchStream> = ranges
        .into_iter()
        .map(|range| {
            let sql = format!(
                "SELECT {} FROM {rel} WHERE {filter}{}{order}",
                select.join(", "),
                range.predicate
            );
            tracing::debug!(table = %spec.name, sql = %sql, connector = D::NAME, "database read");
            let params = window_params.iter().cloned().chain(range.params).collect();
            let rows = Rows {
                table: spec.name.clone(),
                schema: schema.clone(),
                plans: plans.clone(),
                batch_size: req.batch_size.max(1),
                counter: (wanted && unfiltered).then(|| stats.clone()),
            };
            db.rows(range.conn, sql, params, rows)
        })
        .collect();
    let rows = futures::stream::select_all(streams);
    // After the last batch of every range, the count.
    let table = spec.name.clone();
    let tail = futures::stream::once(async move {
        if let Some(task) = count {
            super::join_count(D::NAME, &table, task).await?;
        }
        Ok(None)
    })
    .filter_map(|r: Result<Option<RecordBatch>>| async move { r.transpose() });
    Ok(Extract {
        schema,
        stream: Box::pin(rows.chain(tail)),
        high: window.position(),
        stats,
        no_new_data: false,
    })
}
