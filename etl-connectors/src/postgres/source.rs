//! The Postgres source: the driver's parts of the shared database read
//! ([`crate::db::read`]): `COPY (SELECT …) TO STDOUT (FORMAT binary)`, page ranges on an
//! exported snapshot, the bounds as typed literals.

use std::fmt;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use etl_core::kit::sql::Dialect;
use etl_core::kit::window::InFlight;
use etl_core::{BatchStream, CursorValue, Error, Extract, ReadRequest, Result, Source, SourceRef, TableSpec};
use futures::{StreamExt, TryStreamExt};

use super::copy;
use super::types::{self, ColumnPlan, Decode};
use super::{PgClient, PgConfig, pg_err};
use crate::db::Counts;
use crate::db::read::{self, Database, Range, Rows};

const PG: Dialect = Dialect::Postgres;

/// What is in flight in the database (see [`Database::in_flight`]).
// The clock is `now()`, this statement's transaction start, taken before the activity is
// read: a transaction the reading misses, or sees between its start and its first snapshot
// (no `xact_start` yet, an `xmin` already), started after the clock, so its rows land past the
// window. Only a session whose start this role may not see (`<insufficient privilege>`)
// counts as unknown; such a session shows no backend type either, so an autovacuum worker
// is one too (grant the role pg_read_all_stats to see them).
const IN_FLIGHT: &str = "WITH a AS (SELECT pid, xact_start, backend_xid, backend_xmin, application_name, state, query \
     FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() \
     AND coalesce(backend_type, '') NOT IN ('autovacuum worker', 'walsender')) \
     SELECT now(), now()::timestamp, o.xact_start, o.pid, \
     o.application_name, o.state, \
     (SELECT count(*) FROM a WHERE xact_start IS NULL AND query = '<insufficient privilege>' \
        AND (backend_xid IS NOT NULL OR backend_xmin IS NOT NULL)), \
     (SELECT count(*) FROM pg_prepared_xacts WHERE database = current_database()), \
     (SELECT min(gid) FROM pg_prepared_xacts WHERE database = current_database()) \
     FROM (SELECT 1) one LEFT JOIN LATERAL \
     (SELECT * FROM a WHERE xact_start IS NOT NULL ORDER BY xact_start LIMIT 1) o ON true";

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

    /// How long to wait for the server (default [`etl_core::Timeouts::default`]).
    pub fn with_timeouts(mut self, timeouts: etl_core::Timeouts) -> Self {
        self.pg = self.pg.with_timeouts(timeouts);
        self
    }
}

impl read::Column for ColumnPlan {
    fn name(&self) -> &str {
        &self.name
    }

    fn data_type(&self) -> &arrow::datatypes::DataType {
        &self.data_type
    }
}

#[async_trait]
impl Database for PostgresSource {
    const NAME: &'static str = "postgres";
    const DIALECT: Dialect = PG;
    const BINDS: bool = false;
    type Conn = PgClient;
    type Plan = ColumnPlan;

    fn counts(&self) -> Counts {
        self.counts
    }

    async fn connect(&self, table: &str) -> Result<PgClient> {
        self.pg.connect(table).await
    }

    async fn close(&self, conn: PgClient) {
        // Dropping the client ends its connection and snapshot.
        drop(conn);
    }

    async fn describe(&self, client: &mut PgClient, spec: &TableSpec, rel: &str) -> Result<Vec<ColumnPlan>> {
        let stmt = client
            .call(client.prepare(&format!("SELECT * FROM {rel} LIMIT 0")))
            .await?;
        stmt.columns()
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
            .collect()
    }

    /// Every transaction of the database in progress (`pg_stat_activity`: `now()` stamps a
    /// row with its transaction's start, so one that has not written yet counts too),
    /// prepared transactions (their start is not kept), sessions of other roles whose start
    /// this role may not see (`pg_read_all_stats` shows them).
    async fn in_flight(&self, client: &mut PgClient, spec: &TableSpec, _rel: &str) -> Result<InFlight> {
        let row = client.call(client.query_one(IN_FLIGHT, &[])).await?;
        let get = |e| pg_err(&spec.name, e);
        let now: DateTime<Utc> = row.try_get(0).map_err(get)?;
        let local: NaiveDateTime = row.try_get(1).map_err(get)?;
        let oldest = row
            .try_get::<_, Option<DateTime<Utc>>>(2)
            .map_err(get)?
            .map(|start| -> Result<_> {
                let pid: i32 = row.try_get(3).map_err(get)?;
                let app: Option<String> = row.try_get(4).map_err(get)?;
                let state: Option<String> = row.try_get(5).map_err(get)?;
                let app = app
                    .filter(|a| !a.is_empty())
                    .unwrap_or_else(|| "no application_name".into());
                Ok((start, format!("pid {pid}, {app}, {}", state.unwrap_or_default())))
            })
            .transpose()?;
        let hidden: i64 = row.try_get(6).map_err(get)?;
        let prepared: i64 = row.try_get(7).map_err(get)?;
        let gid: Option<String> = row.try_get(8).map_err(get)?;
        let unknown = if prepared > 0 {
            Some(format!(
                "{prepared} prepared transaction(s) in progress (`{}`), whose start Postgres does not keep",
                gid.unwrap_or_default()
            ))
        } else if hidden > 0 {
            Some(format!(
                "{hidden} transaction(s) of other roles in progress whose start this role may not see \
                 (grant it pg_read_all_stats)"
            ))
        } else {
            None
        };
        Ok(InFlight {
            now,
            local_offset: local - now.naive_utc(),
            oldest,
            unknown,
        })
    }

    /// One `REPEATABLE READ` snapshot; a whole table of at least `min_parallel_pages` pages
    /// is split into page (`ctid`) ranges read over more connections that join the first
    /// one's exported snapshot.
    async fn snapshot(
        &self,
        client: PgClient,
        spec: &TableSpec,
        rel: &str,
        _plans: &[ColumnPlan],
        whole: bool,
    ) -> Result<Vec<Range<PgClient>>> {
        client.batch("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY").await?;
        if !whole || self.parallelism < 2 || !matches!(spec.source, SourceRef::Table(_)) {
            return Ok(vec![Range::whole(client)]);
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
            return Ok(vec![Range::whole(client)]);
        }
        let snapshot: String = client
            .call(client.query_one("SELECT pg_export_snapshot()", &[]))
            .await?
            .try_get(0)
            .map_err(client.err())?;
        let n = self.parallelism as i64;
        let step = pages / n + 1;
        let mut ranges = Vec::new();
        let mut first = Some(client);
        for i in 0..n {
            let conn = match first.take() {
                Some(c) => c,
                None => {
                    let c = self.pg.connect(&spec.name).await?;
                    c.batch(&format!(
                        "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT {}",
                        PG.string_literal(&snapshot)
                    ))
                    .await?;
                    c
                }
            };
            let lo = format!(" AND ctid >= '({},0)'::tid", i * step);
            let predicate = if i + 1 < n {
                format!("{lo} AND ctid < '({},0)'::tid", (i + 1) * step)
            } else {
                lo
            };
            ranges.push(Range {
                conn,
                predicate,
                params: Vec::new(),
            });
        }
        Ok(ranges)
    }

    async fn high_water(
        &self,
        client: &mut PgClient,
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

    /// Rows whose cursor columns are all NULL, in the read's snapshot; no query when one of
    /// them is a table column declared `NOT NULL`.
    async fn null_cursor_rows(
        &self,
        client: &mut PgClient,
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

    async fn cells(&self, client: &mut PgClient, _table: &str, sql: &str) -> Result<etl_core::keys::Cells> {
        client.text_rows(sql).await
    }

    async fn count(&self, table: &str, rel: &str) -> Result<u64> {
        let c = self.pg.connect(table).await?;
        c.count(&format!("SELECT count(*) FROM {rel}")).await
    }

    /// The filter's bounds are literals here (`BINDS` is false: `COPY` takes no parameters).
    async fn count_where(&self, table: &str, rel: &str, filter: &str, _params: Vec<CursorValue>) -> Result<u64> {
        let c = self.pg.connect(table).await?;
        c.count(&format!("SELECT count(*) FROM {rel} WHERE {filter}")).await
    }

    fn select(plan: &ColumnPlan) -> String {
        let c = PG.quote(&plan.name);
        if plan.as_text { format!("{c}::text AS {c}") } else { c }
    }

    /// The binary `COPY` of the select, decoded as it streams; then the snapshot's
    /// transaction ends.
    fn rows(&self, client: PgClient, select: String, _params: Vec<CursorValue>, rows: Rows<ColumnPlan>) -> BatchStream {
        let copy = async move {
            let bytes = client
                .copy_out(&format!("COPY ({select}) TO STDOUT (FORMAT binary)"))
                .await?;
            let batches = copy::batches(
                &rows.table,
                rows.schema,
                rows.plans,
                rows.batch_size,
                rows.counter,
                bytes,
            );
            // End the read-only snapshot transaction (and release its locks) after the rows.
            let end = futures::stream::once(async move { client.batch("COMMIT").await })
                .filter_map(|r| async move { r.err().map(Err) });
            Ok::<_, Error>(batches.chain(end))
        };
        Box::pin(futures::stream::once(copy).try_flatten())
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

    fn key_reader(&self) -> Option<&dyn etl_core::keys::KeyReader> {
        Some(self)
    }

    async fn check(&self, spec: &TableSpec) -> Result<()> {
        read::check(self, spec).await
    }

    async fn read(&self, req: ReadRequest<'_>) -> Result<Extract> {
        read::read(self, req).await
    }

    async fn in_flight(&self, spec: &TableSpec) -> Result<Option<InFlight>> {
        read::in_flight(self, spec).await.map(Some)
    }

    async fn estimate(&self, req: ReadRequest<'_>) -> Result<etl_core::Estimate> {
        read::estimate(self, req).await
    }

    async fn split(
        &self,
        req: ReadRequest<'_>,
        sizing: etl_core::shard::ShardSizing,
    ) -> Result<etl_core::shard::Split> {
        read::split(self, req, sizing).await
    }
}

crate::db::keys::key_reader!(PostgresSource, Some("postgres"));

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
