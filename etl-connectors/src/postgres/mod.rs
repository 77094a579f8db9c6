//! PostgreSQL as a source: `COPY (SELECT …) TO STDOUT (FORMAT binary)` decoded straight into
//! Arrow builders.
//!
//! # Reads
//! - A table (`public.orders`) or a query (`SELECT … JOIN …`, run by the database).
//! - Columns and types come from the database (a `LIMIT 0` prepare) before anything is read;
//!   a missing table is [`Error::TableNotFound`], a missing cursor column
//!   [`Error::ColumnNotFound`], a type not mapped yet an error naming table, column and type
//!   (or read as text with [`PostgresSource::with_unmapped_as_text`]).
//! - Incremental: the high-water mark is `max(cursor)` taken from the database when the read
//!   starts; the window `(low, high]` is pushed down into the `COPY`'s query, so an index on
//!   the cursor column makes a 1% delta read about 1% of the rows. `COPY` takes no bind
//!   parameters: the two bounds are rendered as typed literals from the stored watermark by
//!   [`etl_core::kit::sql::Dialect::literal`] (never from user text). Rows whose cursor is NULL
//!   follow the spec's [`etl_core::NullCursors`] rule: a filtered read counts them in its
//!   snapshot (no query when a cursor column is declared `NOT NULL`).
//! - Every call is bounded by [`etl_core::Timeouts`] ([`PostgresSource::with_timeouts`]); a
//!   statement that times out is cancelled on the server.
//! - The table's `count(*)` for the report runs on a second connection while the rows stream,
//!   on reads of the whole table only by default: counting a large table would read all of
//!   it and defeat a delta read ([`PostgresSource::with_counts`]). The window's count is the
//!   report's extracted count.
//!
//! - Chunked reads ([`etl_core::TableSpec::chunk_rows`]): `ORDER BY cursor, key LIMIT n`
//!   after the stored (cursor, key) pair, with a row comparison an index on (cursor, key)
//!   serves.
//! - Types: see the crate README; one-dimensional arrays of mapped types are Arrow lists.
//! - TLS (feature `tls`): with `sslmode=require` in the connection string, verified against
//!   the bundled Mozilla roots and [`PostgresSource::with_root_certificate`].
//!
//! # Memory
//! One batch of Arrow builders and one network chunk per connection: flat however large the
//! table.

mod conn;
mod copy;
mod types;

pub use conn::{CopyOut, PgClient, PgConfig, pg_err};

use std::fmt;
use std::sync::Arc;

use arrow::datatypes::{Field, Schema};
use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use etl_core::kit::sql::Dialect;
use etl_core::kit::task::AbortOnDrop;
use etl_core::{CursorValue, Error, Extract, ExtractStats, ReadRequest, Result, Source, SourceRef, TableSpec};
use futures::StreamExt;

pub use crate::db::Counts;
use crate::db::{self, Window};
use types::{ColumnPlan, Decode};

const PG: Dialect = Dialect::Postgres;

/// Reads tables and queries of one PostgreSQL database.
///
/// The connection string is libpq's (`host=… user=… dbname=…`) or a URL
/// (`postgresql://user:pw@host/db`); its password never appears in `Debug` output.
#[derive(Clone)]
pub struct PostgresSource {
    pg: PgConfig,
    unmapped_as_text: bool,
    counts: Counts,
    parallelism: usize,
    min_parallel_pages: u64,
}

impl fmt::Debug for PostgresSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresSource")
            .field("pg", &self.pg)
            .finish_non_exhaustive()
    }
}

impl PostgresSource {
    /// A source from a connection string.
    ///
    /// # Errors
    /// [`Error::Config`] when the string does not parse (the message never repeats it).
    pub fn new(conn: &str) -> Result<Self> {
        Ok(PostgresSource {
            pg: PgConfig::new(conn)?,
            unmapped_as_text: false,
            counts: Counts::default(),
            parallelism: 2,
            min_parallel_pages: 4_096,
        })
    }

    /// A source from the connection string in environment variable `var`.
    ///
    /// # Errors
    /// [`Error::Config`] when it is unset or invalid.
    pub fn from_env(var: &str) -> Result<Self> {
        Self::new(&Error::env(var)?)
    }

    /// Reads columns of types not mapped yet as their text form instead of failing.
    pub fn with_unmapped_as_text(mut self, on: bool) -> Self {
        self.unmapped_as_text = on;
        self
    }

    /// When to count the table's rows for the report (default [`Counts::WholeReads`]).
    pub fn with_counts(mut self, counts: Counts) -> Self {
        self.counts = counts;
        self
    }

    /// Reads a whole table over `connections` connections at once (default 2), each a range
    /// of its pages, all on one exported snapshot so the read is consistent. Filtered
    /// (incremental) reads and queries use one connection: their predicate uses the
    /// table's indexes instead.
    pub fn with_parallelism(mut self, connections: usize) -> Self {
        self.parallelism = connections.max(1);
        self
    }

    /// Reads tables smaller than this many pages (8 KiB each; default 4 096 = 32 MiB) over
    /// one connection.
    pub fn with_min_parallel_pages(mut self, pages: u64) -> Self {
        self.min_parallel_pages = pages;
        self
    }

    /// Trusts the PEM certificates of `path` (a private CA, or a self-signed server) besides
    /// the bundled Mozilla roots, for connections with `sslmode=require` (see [`PgConfig`]).
    pub fn with_root_certificate(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.pg = self.pg.with_root_certificate(path);
        self
    }

    async fn connect(&self, table: &str) -> Result<PgClient> {
        self.pg.connect(table).await
    }

    /// How long to wait for the server (default [`etl_core::Timeouts::default`]).
    pub fn with_timeouts(mut self, timeouts: etl_core::Timeouts) -> Self {
        self.pg = self.pg.with_timeouts(timeouts);
        self
    }

    /// The FROM clause item of a spec.
    fn relation(spec: &TableSpec) -> Result<String> {
        match &spec.source {
            SourceRef::Table(t) => Ok(PG.quote_qualified(t)),
            SourceRef::Query(q) => Ok(format!("({q}) AS {}", PG.quote("q"))),
            other => Err(Error::config(format!(
                "table `{}`: the Postgres source reads tables and queries, not {other:?}",
                spec.name
            ))),
        }
    }

    /// Columns of the relation, mapped to Arrow.
    async fn describe(&self, client: &PgClient, spec: &TableSpec, rel: &str) -> Result<Vec<ColumnPlan>> {
        let stmt = client
            .call(client.prepare(&format!("SELECT * FROM {rel} LIMIT 0")))
            .await?;
        let plans = stmt
            .columns()
            .iter()
            .map(|c| {
                let origin = c.table_oid().zip(c.column_id());
                match types::map_type(c.type_(), c.type_modifier()) {
                    Some((data_type, kind)) => Ok(ColumnPlan {
                        name: c.name().to_string(),
                        data_type,
                        kind,
                        as_text: false,
                        origin,
                    }),
                    None if self.unmapped_as_text => Ok(ColumnPlan {
                        name: c.name().to_string(),
                        data_type: arrow::datatypes::DataType::Utf8,
                        kind: Decode::Text,
                        as_text: true,
                        origin,
                    }),
                    None => Err(Error::ColumnTypeConflict {
                        table: spec.name.clone(),
                        column: c.name().to_string(),
                        expected: "a type the Postgres source maps (or PostgresSource::with_unmapped_as_text)".into(),
                        found: c.type_().name().to_string(),
                    }),
                }
            })
            .collect::<Result<Vec<_>>>()?;
        for c in &spec.cursor {
            if !plans.iter().any(|p| &p.name == c) {
                return Err(Error::ColumnNotFound {
                    table: spec.name.clone(),
                    column: c.clone(),
                });
            }
        }
        Ok(plans)
    }

    /// `max` over the cursor columns, read from the database.
    async fn high_water(
        &self,
        client: &PgClient,
        spec: &TableSpec,
        rel: &str,
        plans: &[ColumnPlan],
    ) -> Result<Option<CursorValue>> {
        let mut best = None;
        for c in &spec.cursor {
            let plan = plans.iter().find(|p| &p.name == c).expect("described");
            let col = PG.quote(c);
            let sql = format!("SELECT max({col}) FROM {rel}");
            let row = client.call(client.query_one(&sql, &[])).await?;
            let get_err = |e: tokio_postgres::Error| pg_err(&spec.name, e);
            let v = match plan.kind {
                Decode::I16 => row
                    .try_get::<_, Option<i16>>(0)
                    .map_err(get_err)?
                    .map(|v| CursorValue::Int(v.into())),
                Decode::I32 => row
                    .try_get::<_, Option<i32>>(0)
                    .map_err(get_err)?
                    .map(|v| CursorValue::Int(v.into())),
                Decode::I64 => row.try_get::<_, Option<i64>>(0).map_err(get_err)?.map(CursorValue::Int),
                Decode::Timestamp => row
                    .try_get::<_, Option<NaiveDateTime>>(0)
                    .map_err(get_err)?
                    .map(CursorValue::Timestamp),
                Decode::TimestampTz => row
                    .try_get::<_, Option<DateTime<Utc>>>(0)
                    .map_err(get_err)?
                    .map(CursorValue::TimestampTz),
                Decode::Date => row
                    .try_get::<_, Option<NaiveDate>>(0)
                    .map_err(get_err)?
                    .map(CursorValue::Date),
                Decode::Text => row
                    .try_get::<_, Option<String>>(0)
                    .map_err(get_err)?
                    .map(CursorValue::Text),
                _ => {
                    return Err(Error::ColumnTypeConflict {
                        table: spec.name.clone(),
                        column: c.clone(),
                        expected: "an integer, date, timestamp or text cursor".into(),
                        found: plan.data_type.to_string(),
                    });
                }
            };
            best = CursorValue::max_opt(best, v);
        }
        Ok(best)
    }
}

impl PostgresSource {
    /// Rows whose cursor columns are all NULL, in the read's snapshot; no query when one of
    /// them is a table column declared `NOT NULL`.
    async fn null_cursor_rows(
        &self,
        client: &PgClient,
        spec: &TableSpec,
        rel: &str,
        plans: &[ColumnPlan],
    ) -> Result<u64> {
        for c in &spec.cursor {
            if let Some((table, column)) = plans.iter().find(|p| &p.name == c).and_then(|p| p.origin) {
                let not_null = client
                    .call(client.query_opt(
                        "SELECT attnotnull FROM pg_attribute WHERE attrelid = $1 AND attnum = $2",
                        &[&table, &column],
                    ))
                    .await?
                    .map(|r| r.try_get::<_, bool>(0))
                    .transpose()
                    .map_err(client.err())?;
                if not_null == Some(true) {
                    return Ok(0);
                }
            }
        }
        client.count(&PG.null_cursor_count(rel, &spec.cursor)).await
    }

    /// Splits a whole-table read into ctid ranges read over several connections that share
    /// the first connection's snapshot. Returns the connections and each one's extra
    /// predicate (empty for a single chunk).
    async fn chunks(
        &self,
        client: PgClient,
        spec: &TableSpec,
        rel: &str,
        unfiltered: bool,
    ) -> Result<(Vec<PgClient>, Vec<String>)> {
        let single = |client| Ok((vec![client], vec![String::new()]));
        if !unfiltered || self.parallelism < 2 || !matches!(spec.source, SourceRef::Table(_)) {
            return single(client);
        }
        let pages: i64 = client
            .call(client.query_one(
                "SELECT (pg_relation_size($1::text::regclass) / current_setting('block_size')::int)::int8",
                &[&rel],
            ))
            .await?
            .try_get(0)
            .map_err(client.err())?;
        if pages < self.min_parallel_pages as i64 {
            return single(client);
        }
        let snapshot: String = client
            .call(client.query_one("SELECT pg_export_snapshot()", &[]))
            .await?
            .try_get(0)
            .map_err(client.err())?;
        let n = self.parallelism as i64;
        let step = pages / n + 1;
        let mut clients = vec![client];
        let mut preds = Vec::new();
        for i in 0..n {
            if i > 0 {
                let c = self.connect(&spec.name).await?;
                c.batch(&format!(
                    "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT {}",
                    PG.string_literal(&snapshot)
                ))
                .await?;
                clients.push(c);
            }
            let lo = format!(" AND ctid >= '({},0)'::tid", i * step);
            preds.push(if i + 1 < n {
                format!("{lo} AND ctid < '({},0)'::tid", (i + 1) * step)
            } else {
                lo
            });
        }
        Ok((clients, preds))
    }
}

#[async_trait]
impl Source for PostgresSource {
    fn name(&self) -> &str {
        "postgres"
    }

    fn reads_in_chunks(&self) -> bool {
        true
    }

    async fn check(&self, spec: &TableSpec) -> Result<()> {
        let rel = Self::relation(spec)?;
        let client = self.connect(&spec.name).await?;
        self.describe(&client, spec, &rel).await.map(|_| ())
    }

    async fn read(&self, req: ReadRequest<'_>) -> Result<Extract> {
        let spec = req.spec;
        let rel = Self::relation(spec)?;
        let client = self.connect(&spec.name).await?;
        let plans = self.describe(&client, spec, &rel).await?;
        let schema = Arc::new(Schema::new(
            plans
                .iter()
                .map(|p| Field::new(&p.name, p.data_type.clone(), true))
                .collect::<Vec<_>>(),
        ));
        let stats = Arc::new(ExtractStats::default());
        // One snapshot for the high-water mark and every chunk of the read.
        client.batch("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY").await?;
        let high = if spec.cursor.is_empty() {
            None
        } else {
            self.high_water(&client, spec, &rel, &plans).await?
        };
        let window = Window::new(&req, high);
        if window.counts_null_cursors() {
            let n = self.null_cursor_rows(&client, spec, &rel, &plans).await?;
            ExtractStats::add(
                &stats.null_cursor_rows,
                etl_core::kit::window::check_null_cursors(spec, n)?,
            );
        }
        if window.nothing_new {
            return Ok(window.empty(schema, stats));
        }
        let (filter, order) = window.predicate(PG, spec, None);
        let select: Vec<String> = plans
            .iter()
            .map(|p| {
                let c = PG.quote(&p.name);
                if p.as_text { format!("{c}::text AS {c}") } else { c }
            })
            .collect();
        let wanted = window.wants_count(self.counts);
        // An unfiltered COPY counts the table as it streams; a filtered one needs count(*).
        let unfiltered = filter == "TRUE";
        let count = (wanted && !unfiltered).then(|| {
            let (me, rel, table, stats) = (self.clone(), rel.clone(), spec.name.clone(), stats.clone());
            AbortOnDrop::spawn(async move {
                let c = me.connect(&table).await?;
                stats.count_source(c.count(&format!("SELECT count(*) FROM {rel}")).await?);
                Ok::<(), Error>(())
            })
        });
        let (clients, chunks) = self.chunks(client, spec, &rel, unfiltered).await?;
        ExtractStats::add(&stats.chunks, chunks.len() as u64);
        let counter = (wanted && unfiltered).then(|| stats.clone());
        let mut streams = Vec::with_capacity(chunks.len());
        for (client, chunk) in clients.iter().zip(&chunks) {
            let sql = format!(
                "COPY (SELECT {} FROM {rel} WHERE {filter}{chunk}{order}) TO STDOUT (FORMAT binary)",
                select.join(", ")
            );
            tracing::debug!(table = %spec.name, sql = %sql, "postgres read");
            let copy = client.copy_out(&sql).await?;
            streams.push(copy::batches(
                &spec.name,
                schema.clone(),
                plans.clone(),
                req.batch_size,
                counter.clone(),
                copy,
            ));
        }
        let rows = futures::stream::select_all(streams);
        // Keep the clients (and their snapshot) alive until the copies end; then wait for
        // the count.
        let table = spec.name.clone();
        let tail = futures::stream::once(async move {
            for c in clients {
                // End the read-only snapshot transactions (and release their locks) now.
                c.batch("COMMIT").await?;
            }
            if let Some(task) = count {
                db::join_count("postgres", &table, task).await?;
            }
            Ok(None)
        })
        .filter_map(|r: Result<Option<arrow::record_batch::RecordBatch>>| async move { r.transpose() });
        Ok(Extract {
            schema,
            stream: Box::pin(rows.chain(tail)),
            high: window.position(),
            stats,
            no_new_data: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_redacts_the_password() {
        let s = PostgresSource::new("host=localhost user=u password=hunter2 dbname=d").unwrap();
        let d = format!("{s:?}");
        assert!(!d.contains("hunter2") && d.contains("redacted"), "{d}");
    }
}
