//! SQL across sources, on DataFusion: a query over tables read from any sources in the same
//! run (Postgres orders joined to MySQL customers and to Parquet files), streamed.
//!
//! A [`SqlSource`] holds named inputs, each a table of another [`Source`] (a
//! [`TableSpec`] naming its table, query or files). A pipeline table whose spec is a query
//! ([`TableSpec::from_query`]) is that query run by DataFusion over the inputs it names;
//! [`TableSpec::from_table`] with an input's name reads that input alone.
//!
//! # What a run reads, and its watermark
//!
//! Each input the query names is read whole from its source, in the source's own snapshot
//! (a database input is one consistent read, as a full load is), so joins of every kind see
//! whole tables. An incremental table keeps the query's rows whose cursor is past the
//! watermark, and the watermark moves to the greatest cursor the query returned: with a
//! cursor that covers the change columns of every side —
//! `greatest(o.updated_at, c.updated_at) AS changed_at` — a row is new when any side of it
//! changed, as the same join run inside one database.
//!
//! Rows committed late behind the watermark are waited for as a database's own read waits
//! ([`TableSpec::wait_for_commits`], on by default; [`TableSpec::settle`]): before the
//! inputs' snapshots begin, each database input says what it has in progress
//! ([`Source::in_flight`]), and the window ends below the start of the oldest transaction
//! still open at any of them (and below their clocks, and the settle age) — the query's rows
//! past that point are left for the next run and the report says so (`held_back`). This
//! holds when the table's cursor covers the change columns of every database side
//! (`greatest(…)` of them, or a list of cursor columns), each stamped by its database's
//! clock inside the writing transaction; each input is read in its own snapshot, so the
//! inputs are consistent one by one, not together.
//!
//! # Memory
//!
//! DataFusion streams what a plan allows: projections, filters and the probe side of a
//! join stream batch by batch; the build side of a hash join, a sort or an aggregate is held
//! (the smaller side of a join belongs on the left, or first in `FROM`).
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use arrow::array::{Int64Array, RecordBatch, StringArray};
//! use arrow::datatypes::{DataType, Field, Schema};
//! use etl_core::{MemorySource, ReadRequest, Source, TableSpec};
//! use etl_connectors::sql::SqlSource;
//! use futures::TryStreamExt;
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let schema = |cols: &[(&str, DataType)]| Arc::new(Schema::new(
//!     cols.iter().map(|(n, t)| Field::new(*n, t.clone(), true)).collect::<Vec<_>>()));
//! let crm = MemorySource::new();
//! crm.append("customers", RecordBatch::try_new(
//!     schema(&[("id", DataType::Int64), ("name", DataType::Utf8)]),
//!     vec![Arc::new(Int64Array::from(vec![1, 2])), Arc::new(StringArray::from(vec!["Ada", "Alan"]))],
//! ).unwrap()).unwrap();
//! let shop = MemorySource::new();
//! shop.append("orders", RecordBatch::try_new(
//!     schema(&[("order_id", DataType::Int64), ("customer_id", DataType::Int64)]),
//!     vec![Arc::new(Int64Array::from(vec![10, 11, 12])), Arc::new(Int64Array::from(vec![1, 2, 1]))],
//! ).unwrap()).unwrap();
//!
//! let sql = SqlSource::new()
//!     .input("customers", crm, TableSpec::new("customers").from_table("customers"))
//!     .input("orders", shop, TableSpec::new("orders").from_table("orders"));
//! let spec = TableSpec::new("per_customer").from_query(
//!     "SELECT c.name, count(*) AS orders FROM orders o JOIN customers c ON c.id = o.customer_id
//!      GROUP BY c.name ORDER BY c.name");
//! sql.check(&spec).await.unwrap();
//! let read = sql.read(ReadRequest { spec: &spec, mode: spec.mode, from: None, run_id: "r",
//!     batch_size: 1024, limit: None, until: None, keys: None, files: None }).await.unwrap();
//! let rows: Vec<RecordBatch> = read.stream.try_collect().await.unwrap();
//! let text = arrow::util::pretty::pretty_format_batches(&rows).unwrap().to_string();
//! assert!(text.contains("| Ada  | 2      |") && text.contains("| Alan | 1      |"), "{text}");
//! # });
//! ```

use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, Mutex};

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::streaming::StreamingTable;
use datafusion::common::TableReference;
use datafusion::error::DataFusionError;
use datafusion::execution::TaskContext;
use datafusion::physical_plan::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::PartitionStream;
use datafusion::prelude::{SessionConfig, SessionContext};
use etl_core::kit::batch::max_cursor;
use etl_core::kit::window::{self, InFlight};
use etl_core::{
    BatchStream, CursorValue, Error, Extract, ExtractStats, HeldBack, LoadMode, Low, Position, QUERY_WATERMARK,
    ReadRequest, Result, Source, SourceRef, TableSpec,
};
use futures::{StreamExt, TryStreamExt};

/// The connector's name in messages.
const NAME: &str = "sql";

/// A source whose tables are SQL queries over tables of other sources, run by DataFusion
/// (see the [module docs](self)).
#[derive(Debug, Default)]
pub struct SqlSource {
    inputs: Vec<Input>,
}

/// One input: the name queries use, and the table of another source it reads.
#[derive(Debug, Clone)]
struct Input {
    name: String,
    source: Arc<dyn Source>,
    spec: TableSpec,
}

impl SqlSource {
    /// A source without inputs.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an input: queries name it `name` (an SQL identifier: unquoted, it is matched
    /// case-insensitively), and it is `spec`'s table (or query, or files) of `source`, read
    /// whole each run.
    pub fn input(self, name: impl Into<String>, source: impl Source, spec: TableSpec) -> Self {
        self.input_arc(name, Arc::new(source), spec)
    }

    /// As [`SqlSource::input`], with a shared source (several inputs of one database).
    pub fn input_arc(mut self, name: impl Into<String>, source: Arc<dyn Source>, spec: TableSpec) -> Self {
        self.inputs.push(Input {
            name: name.into(),
            source,
            spec,
        });
        self
    }

    /// The query a table's spec stands for.
    fn query_of(spec: &TableSpec) -> Result<String> {
        match &spec.source {
            SourceRef::Query(q) if q.contains(QUERY_WATERMARK) => Err(Error::config(format!(
                "table `{}`: a query across sources has no `{QUERY_WATERMARK}`: the window is applied to the \
                 query's rows (by its cursor), not inside it",
                spec.name
            ))),
            SourceRef::Query(q) => Ok(q.clone()),
            SourceRef::Table(t) => Ok(format!("SELECT * FROM {t}")),
            other => Err(Error::config(format!(
                "table `{}`: the SQL source runs queries over its inputs, not {other:?}",
                spec.name
            ))),
        }
    }

    /// A session for one table's query.
    fn session(batch_size: usize) -> SessionContext {
        let mut config = SessionConfig::new().with_batch_size(batch_size.max(1));
        // String columns stay `Utf8`, the type every sink writes.
        config.options_mut().sql_parser.map_string_types_to_utf8view = false;
        SessionContext::new_with_config(config)
    }

    /// The inputs `query` names, in the order of `self.inputs`; a name that is no input is
    /// [`Error::TableNotFound`].
    fn named(&self, ctx: &SessionContext, spec: &TableSpec, query: &str) -> Result<Vec<&Input>> {
        let state = ctx.state();
        let statement = state
            .sql_to_statement(query, &state.config().options().sql_parser.dialect)
            .map_err(|e| Error::config(format!("table `{}`: the SQL query does not parse: {e}", spec.name)))?;
        let refs = state
            .resolve_table_references(&statement)
            .map_err(|e| Error::config(format!("table `{}`: the SQL query: {e}", spec.name)))?;
        let mut used = HashSet::new();
        for r in &refs {
            let i = self
                .inputs
                .iter()
                .position(|i| TableReference::from(i.name.as_str()).resolved_eq(r))
                .ok_or_else(|| Error::TableNotFound {
                    table: r.to_string(),
                    source_name: format!(
                        "{NAME} (its inputs: {})",
                        self.inputs
                            .iter()
                            .map(|i| i.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                })?;
            used.insert(i);
        }
        Ok(self
            .inputs
            .iter()
            .enumerate()
            .filter(|(i, _)| used.contains(i))
            .map(|(_, input)| input)
            .collect())
    }
}

#[async_trait]
impl Source for SqlSource {
    fn name(&self) -> &str {
        NAME
    }

    async fn check(&self, spec: &TableSpec) -> Result<()> {
        let query = Self::query_of(spec)?;
        let ctx = Self::session(1);
        for input in self.named(&ctx, spec, &query)? {
            input.source.check(&input.spec).await?;
        }
        Ok(())
    }

    async fn read(&self, req: ReadRequest<'_>) -> Result<Extract> {
        let spec = req.spec;
        let query = Self::query_of(spec)?;
        let ctx = Self::session(req.batch_size);
        let inputs = self.named(&ctx, spec, &query)?;
        let stats = Arc::new(ExtractStats::default());
        // What each database has in progress, looked at before its snapshot begins.
        let holds = req.mode.reads_incrementally()
            && !spec.cursor.is_empty()
            && (spec.wait_for_commits || spec.settle.is_some());
        let seen: Vec<InFlight> = if holds {
            futures::future::try_join_all(inputs.iter().map(|i| i.source.in_flight(&i.spec)))
                .await?
                .into_iter()
                .flatten()
                .collect()
        } else {
            Vec::new()
        };
        let reads = futures::future::try_join_all(inputs.iter().map(|input| InputTable::open(input, &req))).await?;
        for table in &reads {
            let provider = StreamingTable::try_new(
                table.schema.clone(),
                vec![Arc::new(table.clone()) as Arc<dyn PartitionStream>],
            )
            .map_err(|e| df_error(&spec.name, "registering an input", e))?;
            ctx.register_table(table.input.name.as_str(), Arc::new(provider))
                .map_err(|e| df_error(&spec.name, "registering an input", e))?;
        }
        let frame = ctx.sql(&query).await.map_err(|e| match unwrap_df(e) {
            Ok(ours) => ours,
            Err(e) => Error::config(format!("table `{}`: the SQL query: {e}", spec.name)),
        })?;
        let stream = frame
            .execute_stream()
            .await
            .map_err(|e| df_error(&spec.name, "planning the query", e))?;
        let schema = plain_schema(&stream.schema());
        if let Some(c) = spec.cursor.iter().find(|c| schema.field_with_name(c).is_err()) {
            return Err(Error::ColumnNotFound {
                table: spec.name.clone(),
                column: c.clone(),
            });
        }
        let stored = req.from.and_then(|p| p.cursor.clone());
        // Where the window ends, for the cursor's type, below what was in flight.
        let end = match spec.cursor.first().and_then(|c| like_of(&schema, c)) {
            Some(like) if !seen.is_empty() => window::joined_end(spec, stored.as_ref(), &like, &seen)?,
            _ => None,
        };
        let rows = Arc::new(Rows {
            spec: spec.clone(),
            schema: schema.clone(),
            stats: stats.clone(),
            low: if req.mode.reads_incrementally() {
                window::window_low(spec, req.from, None)
            } else {
                Low::Start
            },
            until: req.until.cloned(),
            stored,
            end,
            held: Mutex::new(Held::default()),
        });
        let (each, last, table) = (rows.clone(), rows, spec.name.clone());
        let stream = stream
            .map_err(move |e| df_error(&table, "running the query", e))
            .and_then(move |batch| futures::future::ready(each.keep(batch)))
            .try_filter(|b| futures::future::ready(b.num_rows() > 0));
        // When the query is done, what the inputs' reads counted (files, bytes, rejects), and
        // how far the window was held back.
        let tail = futures::stream::once(async move {
            for table in &reads {
                table.fold_into(&last.stats);
            }
            last.report_held();
            Ok(None)
        })
        .filter_map(|r: Result<Option<RecordBatch>>| async move { r.transpose() });
        Ok(Extract {
            schema,
            stream: Box::pin(stream.chain(tail)) as BatchStream,
            // The runner takes the greatest cursor the query returned.
            high: Position::default(),
            stats,
            no_new_data: false,
        })
    }
}

/// What a table's query rows pass through: the schema they are written in, the incremental
/// window, and its end below what was in flight at the inputs.
struct Rows {
    spec: TableSpec,
    schema: SchemaRef,
    stats: Arc<ExtractStats>,
    low: Low,
    /// A backfill's upper end.
    until: Option<CursorValue>,
    /// The watermark's cursor.
    stored: Option<CursorValue>,
    /// [`window::joined_end`]: the greatest cursor the run may keep (`None` inside: none),
    /// and why.
    end: Option<(Option<CursorValue>, String)>,
    held: Mutex<Held>,
}

/// The rows the window's end left for the next run.
#[derive(Debug, Default)]
struct Held {
    /// The greatest cursor of the window's rows.
    high: Option<CursorValue>,
    /// The greatest cursor of the rows kept.
    kept: Option<CursorValue>,
    /// Rows left out.
    rows: u64,
}

impl Rows {
    /// The rows of one of the query's batches that this run writes.
    fn keep(&self, batch: RecordBatch) -> Result<RecordBatch> {
        let spec = &self.spec;
        let batch = plain_batch(&spec.name, &self.schema, batch)?;
        self.stats.count_source(batch.num_rows() as u64);
        let (batch, null_rows) = window::filter_window(spec, &batch, &self.low, self.until.as_ref())?;
        ExtractStats::add(&self.stats.null_cursor_rows, null_rows);
        let Some((end, _)) = &self.end else {
            return Ok(batch);
        };
        let kept = match end {
            Some(end) => window::filter_window(spec, &batch, &Low::Start, Some(end))?.0,
            None => batch.slice(0, 0),
        };
        let mut held = self.held.lock().expect("held");
        held.high = CursorValue::max_opt(held.high.take(), max_cursor(&spec.name, &batch, &spec.cursor)?);
        held.kept = CursorValue::max_opt(held.kept.take(), max_cursor(&spec.name, &kept, &spec.cursor)?);
        held.rows += (batch.num_rows() - kept.num_rows()) as u64;
        Ok(kept)
    }

    /// Puts in the report how far the window was held back, if it left any row out.
    fn report_held(&self) {
        let held = std::mem::take(&mut *self.held.lock().expect("held"));
        if let (Some((_, reason)), Some(high), true) = (&self.end, held.high, held.rows > 0) {
            let to = held.kept.or_else(|| self.stored.clone());
            *self.stats.held_back.lock().expect("held_back lock") = Some(HeldBack {
                by_ms: window::held_by_ms(&high, to.as_ref()),
                high,
                to,
                reason: reason.clone(),
            });
        }
    }
}

/// A value of the type of `schema`'s cursor column `column`, for a date or timestamp (the
/// window of other types is not held).
fn like_of(schema: &Schema, column: &str) -> Option<CursorValue> {
    let epoch = chrono::DateTime::<chrono::Utc>::UNIX_EPOCH;
    match schema.field_with_name(column).ok()?.data_type() {
        DataType::Timestamp(_, None) => Some(CursorValue::Timestamp(epoch.naive_utc())),
        DataType::Timestamp(_, Some(_)) => Some(CursorValue::TimestampTz(epoch)),
        DataType::Date32 | DataType::Date64 => Some(CursorValue::Date(epoch.date_naive())),
        _ => None,
    }
}

/// An input's read, as a DataFusion partition: the read opened for planning is streamed by
/// the first scan; a query that scans the input again (a self-join) reads it again.
#[derive(Clone)]
struct InputTable {
    input: Input,
    schema: SchemaRef,
    opened: Arc<Mutex<Option<BatchStream>>>,
    run_id: String,
    batch_size: usize,
    /// The counters of every read of the input.
    stats: Arc<Mutex<Vec<Arc<ExtractStats>>>>,
}

impl fmt::Debug for InputTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InputTable")
            .field("input", &self.input.name)
            .finish_non_exhaustive()
    }
}

impl InputTable {
    /// Opens the whole read of `input`.
    async fn open(input: &Input, req: &ReadRequest<'_>) -> Result<InputTable> {
        let read = Self::read(&input.source, &input.spec, req.run_id, req.batch_size).await?;
        Ok(InputTable {
            input: input.clone(),
            schema: read.schema.clone(),
            opened: Arc::new(Mutex::new(Some(read.stream))),
            run_id: req.run_id.to_string(),
            batch_size: req.batch_size,
            stats: Arc::new(Mutex::new(vec![read.stats])),
        })
    }

    async fn read(source: &Arc<dyn Source>, spec: &TableSpec, run_id: &str, batch_size: usize) -> Result<Extract> {
        source
            .read(ReadRequest {
                spec,
                mode: LoadMode::Full,
                from: None,
                run_id,
                batch_size,
                limit: None,
                until: None,
                keys: None,
                files: None,
            })
            .await
    }

    /// Adds what the input's reads counted to the query's counters.
    fn fold_into(&self, out: &ExtractStats) {
        for s in self.stats.lock().expect("input stats").iter() {
            ExtractStats::add(&out.files, ExtractStats::get(&s.files));
            ExtractStats::add(&out.bytes, ExtractStats::get(&s.bytes));
            ExtractStats::add(&out.rejected_rows, ExtractStats::get(&s.rejected_rows));
            for w in s.warnings.lock().expect("warnings lock").iter() {
                out.warn(format!("input `{}`: {w}", self.input.name));
            }
        }
    }
}

impl PartitionStream for InputTable {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let opened = self.opened.lock().expect("input stream").take();
        let stream: BatchStream = match opened {
            Some(stream) => stream,
            None => {
                let this = self.clone();
                Box::pin(
                    futures::stream::once(async move {
                        let read =
                            Self::read(&this.input.source, &this.input.spec, &this.run_id, this.batch_size).await?;
                        this.stats.lock().expect("input stats").push(read.stats);
                        Ok::<_, Error>(read.stream)
                    })
                    .try_flatten(),
                )
            }
        };
        let stream = stream.map_err(|e| DataFusionError::External(Box::new(e)));
        Box::pin(RecordBatchStreamAdapter::new(self.schema.clone(), stream))
    }
}

/// The schema a query's rows are written in: DataFusion's view types as the plain ones every
/// sink writes.
fn plain_schema(schema: &SchemaRef) -> SchemaRef {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| f.as_ref().clone().with_data_type(plain_type(f.data_type())))
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

fn plain_type(t: &DataType) -> DataType {
    match t {
        DataType::Utf8View => DataType::Utf8,
        DataType::BinaryView => DataType::Binary,
        other => other.clone(),
    }
}

/// `batch` in `schema` (its view columns cast to plain ones).
fn plain_batch(table: &str, schema: &SchemaRef, batch: RecordBatch) -> Result<RecordBatch> {
    if batch.schema().fields() == schema.fields() {
        return RecordBatch::try_new(schema.clone(), batch.columns().to_vec()).map_err(|e| Error::arrow(table, e));
    }
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(c, f)| etl_core::kit::batch::cast_column(table, f.name(), c, f.data_type()))
        .collect::<Result<Vec<_>>>()?;
    RecordBatch::try_new(schema.clone(), columns).map_err(|e| Error::arrow(table, e))
}

/// An input's own error inside a DataFusion error, as it was (a lost connection stays
/// retryable); else the DataFusion error.
fn unwrap_df(e: DataFusionError) -> std::result::Result<Error, DataFusionError> {
    match e {
        DataFusionError::External(inner) => inner
            .downcast::<Error>()
            .map(|ours| *ours)
            .map_err(DataFusionError::External),
        DataFusionError::Context(_, inner) => unwrap_df(*inner),
        DataFusionError::Shared(shared) => match Arc::try_unwrap(shared) {
            Ok(inner) => unwrap_df(inner),
            Err(shared) => Err(DataFusionError::Shared(shared)),
        },
        DataFusionError::ArrowError(inner, ctx) => match *inner {
            arrow::error::ArrowError::ExternalError(b) => unwrap_df(DataFusionError::External(b)),
            other => Err(DataFusionError::ArrowError(Box::new(other), ctx)),
        },
        other => Err(other),
    }
}

/// A DataFusion error of table `table`'s query, while `doing`, as the workspace's error.
fn df_error(table: &str, doing: &str, e: DataFusionError) -> Error {
    unwrap_df(e).unwrap_or_else(|e| Error::Connector {
        connector: NAME,
        message: format!("table `{table}`: {doing}: {e}"),
        retryable: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};
    use etl_core::MemorySource;

    fn people() -> MemorySource {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("boss", DataType::Int64, true),
            Field::new("name", DataType::Utf8, true),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(vec![Some(1), Some(2), Some(3)])),
                Arc::new(Int64Array::from(vec![None, Some(1), Some(1)])),
                Arc::new(StringArray::from(vec!["ada", "bob", "cy"])),
            ],
        )
        .unwrap();
        let m = MemorySource::new();
        m.append("people", batch).unwrap();
        m
    }

    async fn rows(
        source: &SqlSource,
        spec: &TableSpec,
        from: Option<&Position>,
    ) -> Result<(SchemaRef, Vec<RecordBatch>)> {
        let read = source
            .read(ReadRequest {
                spec,
                mode: spec.mode,
                from,
                run_id: "r",
                batch_size: 2,
                limit: None,
                until: None,
                keys: None,
                files: None,
            })
            .await?;
        let batches: Vec<RecordBatch> = read.stream.try_collect().await?;
        Ok((read.schema, batches))
    }

    fn render(batches: &[RecordBatch]) -> String {
        etl_core::conformance::render_sorted(batches, &[])
    }

    #[tokio::test]
    async fn a_self_join_reads_its_input_twice_and_strings_stay_utf8() {
        let sql = SqlSource::new().input("People", people(), TableSpec::new("people"));
        let spec = TableSpec::new("bosses").from_query(
            "SELECT p.name, b.name AS boss, upper(p.name) AS shout FROM people p JOIN People b ON b.id = p.boss",
        );
        sql.check(&spec).await.unwrap();
        let (schema, batches) = rows(&sql, &spec, None).await.unwrap();
        assert!(
            schema.fields().iter().all(|f| f.data_type() == &DataType::Utf8),
            "{schema:?}"
        );
        assert!(batches.iter().all(|b| b.schema() == schema));
        assert_eq!(
            render(&batches),
            "+------+------+-------+\n| name | boss | shout |\n+------+------+-------+\n| bob  | ada  | BOB   |\n\
             | cy   | ada  | CY    |\n+------+------+-------+"
        );
    }

    #[tokio::test]
    async fn an_incremental_table_keeps_the_rows_past_its_watermark() {
        let sql = SqlSource::new().input("people", people(), TableSpec::new("people"));
        let spec = TableSpec::new("p")
            .from_query("SELECT id, name FROM people")
            .mode(LoadMode::Incremental)
            .cursor(["id"]);
        let from = Position {
            cursor: Some(CursorValue::Int(1)),
            ..Default::default()
        };
        let (_, batches) = rows(&sql, &spec, Some(&from)).await.unwrap();
        assert_eq!(
            render(&batches),
            "+----+------+\n| id | name |\n+----+------+\n| 2  | bob  |\n| 3  | cy   |\n+----+------+"
        );
        let spec = TableSpec::new("p")
            .from_query("SELECT name FROM people")
            .mode(LoadMode::Incremental)
            .cursor(["id"]);
        let err = rows(&sql, &spec, None).await.unwrap_err();
        assert!(
            matches!(&err, Error::ColumnNotFound { column, .. } if column == "id"),
            "{err}"
        );
        let spec = TableSpec::new("p").from_table("nobody");
        let err = sql.check(&spec).await.unwrap_err();
        assert!(
            matches!(&err, Error::TableNotFound { table, .. } if table == "nobody"),
            "{err}"
        );
    }
}
