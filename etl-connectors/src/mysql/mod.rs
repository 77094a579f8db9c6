//! MySQL and MariaDB as a source: results streamed over the binary protocol and decoded into
//! Arrow builders.
//!
//! # Reads
//! - A table (`shop.orders`, or `orders` in the connection's database) or a query (`SELECT …
//!   JOIN …`, run by the database).
//! - Columns and types come from the server's result-set metadata (a prepared `LIMIT 0`)
//!   before anything is read: a missing table is [`Error::TableNotFound`], a missing cursor
//!   column [`Error::ColumnNotFound`], a type not mapped yet an error naming table, column and
//!   type (or read as text with [`MySqlSource::with_unmapped_as_text`]).
//! - Every read runs in one `START TRANSACTION WITH CONSISTENT SNAPSHOT`; the session's time
//!   zone is UTC, so `TIMESTAMP` columns arrive in UTC and `DATETIME` columns stay naive.
//! - Incremental: the high-water mark is `max(cursor)` in the read's snapshot; the window
//!   `(low, high]` is a predicate with bound parameters, so an index on the cursor makes a 1%
//!   delta read about 1% of the rows.
//! - A large table with an integer primary key, read whole, is split into key ranges read over
//!   several connections at once ([`MySqlSource::with_parallelism`]). MySQL cannot share a
//!   snapshot between connections, so the table is held under `LOCK TABLES … READ` for the
//!   moment the readers start their snapshots: every range sees the same committed state.
//!   Without the `LOCK TABLES` privilege the read falls back to one connection.
//!
//! # Types
//! | MySQL | Arrow |
//! |---|---|
//! | `TINYINT(1)`, `BIT(1)` | Boolean (values other than 0/1 are an error; see [`MySqlSource::with_tinyint1_as_bool`]) |
//! | `TINYINT`…`BIGINT` (`UNSIGNED`) | Int8…Int64 (UInt8…UInt64); `MEDIUMINT` → Int32 |
//! | `YEAR` | Int16 |
//! | `FLOAT`, `DOUBLE` | Float32, Float64 |
//! | `DECIMAL(p,s)`, p ≤ 38 | Decimal128(p, s), exact |
//! | `DECIMAL(p,s)`, p > 38 | Utf8, the exact decimal text |
//! | `BIT(n)`, n > 1 | UInt64 |
//! | `CHAR`, `VARCHAR`, `TEXT`, `ENUM`, `SET` (`a,b`), `JSON` | Utf8 |
//! | `BINARY`, `VARBINARY`, `BLOB` | Binary |
//! | `DATE` | Date32 (zero dates are an error, or NULL with [`MySqlSource::with_zero_dates_as_null`]) |
//! | `TIME` | Time64(µs) (values outside a day are an error) |
//! | `DATETIME` | Timestamp(µs), naive |
//! | `TIMESTAMP` | Timestamp(µs, UTC) |
//!
//! # Memory
//! One batch of builders per connection and at most two decoded batches in flight.

mod types;

use std::fmt;

use arrow::datatypes::DataType;
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use chrono::{Datelike, NaiveDate, NaiveDateTime, Timelike};
use etl_core::kit::sql::Dialect;
use etl_core::kit::task::AbortOnDrop;
use etl_core::kit::window::InFlight;
use etl_core::{
    BatchStream, CursorValue, DriverErrorKind, Error, Extract, ReadRequest, Result, Secret, Source, SourceRef,
    TableSpec, Timeouts,
};
use futures::StreamExt;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, OptsBuilder, Params, Row, Value};
use tokio::sync::mpsc;

pub use crate::db::Counts;
use crate::db::read::{self, Database, Range, Rows};
use types::{Builder, ColumnPlan, Decode};

const MY: Dialect = Dialect::MySql;
const CONNECTOR: &str = "mysql";

/// Maps a driver error at the crate boundary.
fn my_err(table: &str, e: mysql_async::Error) -> Error {
    let (message, kind, code) = match &e {
        // `Table 'shop.nope' doesn't exist`, `Unknown database 'nope'`
        mysql_async::Error::Server(s) if s.code == 1146 || s.code == 1049 => {
            return Error::TableNotFound {
                table: crate::db::quoted(&s.message, '\'').unwrap_or(table).to_string(),
                source_name: CONNECTOR.to_string(),
            };
        }
        mysql_async::Error::Server(s) => {
            let kind = match s.code {
                // Deadlock, lock wait timeout.
                1213 | 1205 => DriverErrorKind::Conflict,
                // Too many connections, server shutting down, connection killed.
                1040 | 1053 | 1927 => DriverErrorKind::Unavailable,
                1045 => DriverErrorKind::Authentication,
                1044 | 1142 | 1143 => DriverErrorKind::Permission,
                1048 | 1062 | 1451 | 1452 => DriverErrorKind::Constraint,
                _ => DriverErrorKind::of_sqlstate(&s.state),
            };
            (
                format!("{} (error {})", s.message, s.code),
                kind,
                Some(s.code.to_string()),
            )
        }
        mysql_async::Error::Io(_) => (e.to_string(), DriverErrorKind::Connection, None),
        // A fatal error ends the connection.
        _ if e.is_fatal() => (e.to_string(), DriverErrorKind::Connection, None),
        _ => (e.to_string(), DriverErrorKind::Other, None),
    };
    Error::Driver {
        connector: CONNECTOR,
        table: table.to_string(),
        message,
        kind,
        code,
        source: Box::new(e),
    }
}

/// Reads tables and queries of one MySQL or MariaDB server.
///
/// The connection string is a URL (`mysql://user:password@host:3306/database`); its password
/// never appears in `Debug` output.
///
/// ```no_run
/// # async fn demo() -> etl_core::Result<()> {
/// use etl_connectors::mysql::MySqlSource;
/// use etl_core::{LoadMode, Location, ObjectStoreWatermarkStore, Pipeline, TableSpec};
/// use etl_sinks::lake::LakeSink;
///
/// let pipeline = Pipeline::builder("shop")
///     .source(MySqlSource::from_env("ETL_MYSQL")?)
///     .sink(LakeSink::new(Location::local("./lake")?))
///     .watermarks(ObjectStoreWatermarkStore::new(Location::local("./lake/_etl/watermarks")?))
///     .table(TableSpec::new("orders").mode(LoadMode::Incremental).cursor(["updated_at"]))
///     .build()?;
/// let report = pipeline.run().await?;
/// println!("{}", report.to_json());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct MySqlSource {
    opts: Opts,
    unmapped_as_text: bool,
    tinyint1_as_bool: bool,
    zero_dates_as_null: bool,
    counts: Counts,
    parallelism: usize,
    min_parallel_bytes: u64,
    timeouts: Timeouts,
}

impl fmt::Debug for MySqlSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MySqlSource")
            .field("host", &self.opts.ip_or_hostname())
            .field("port", &self.opts.tcp_port())
            .field("user", &self.opts.user())
            .field("database", &self.opts.db_name())
            .field("password", &self.opts.pass().map(Secret::new))
            .finish()
    }
}

impl MySqlSource {
    /// A source from a `mysql://` URL.
    ///
    /// # Errors
    /// [`Error::Config`] when the URL does not parse (the message never repeats it).
    pub fn new(url: &str) -> Result<Self> {
        let opts = Opts::from_url(url).map_err(|e| {
            let reason = match e {
                mysql_async::UrlError::Parse(p) => p.to_string(),
                mysql_async::UrlError::UnsupportedScheme { scheme } => format!("unsupported scheme `{scheme}`"),
                mysql_async::UrlError::UnknownParameter { param } => format!("unknown parameter `{param}`"),
                mysql_async::UrlError::InvalidParamValue { param, .. } => format!("invalid value of `{param}`"),
                _ => "malformed URL".to_string(),
            };
            Error::config(format!("invalid MySQL connection URL: {reason}"))
        })?;
        Ok(MySqlSource {
            opts,
            unmapped_as_text: false,
            tinyint1_as_bool: true,
            zero_dates_as_null: false,
            counts: Counts::default(),
            parallelism: 2,
            min_parallel_bytes: 32 << 20,
            timeouts: Timeouts::default(),
        })
    }

    /// A source from the URL in environment variable `var`.
    ///
    /// # Errors
    /// [`Error::Config`] when it is unset or invalid.
    pub fn from_env(var: &str) -> Result<Self> {
        Self::new(&Error::env(var)?)
    }

    /// Reads columns of types not mapped yet as their text form (`CAST(… AS CHAR)`) instead
    /// of failing.
    pub fn with_unmapped_as_text(mut self, on: bool) -> Self {
        self.unmapped_as_text = on;
        self
    }

    /// Reads `TINYINT(1)` as a boolean (the default; MySQL's `BOOL`) or, when `false`, as an
    /// 8-bit integer.
    pub fn with_tinyint1_as_bool(mut self, on: bool) -> Self {
        self.tinyint1_as_bool = on;
        self
    }

    /// Reads zero dates (`0000-00-00`, or a zero month or day, which legacy MySQL data
    /// holds) as NULL instead of failing on them (the default).
    pub fn with_zero_dates_as_null(mut self, on: bool) -> Self {
        self.zero_dates_as_null = on;
        self
    }

    /// When to count the table's rows for the report (default [`Counts::WholeReads`]).
    pub fn with_counts(mut self, counts: Counts) -> Self {
        self.counts = counts;
        self
    }

    /// Reads a whole table with an integer primary key over `connections` connections at
    /// once (default 2), each a range of keys, all on the same committed state. Filtered
    /// (incremental) reads and queries use one connection: their predicate uses the table's
    /// indexes instead.
    pub fn with_parallelism(mut self, connections: usize) -> Self {
        self.parallelism = connections.max(1);
        self
    }

    /// Reads tables smaller than this many bytes of data (default 32 MiB, as the server
    /// estimates it) over one connection.
    pub fn with_min_parallel_bytes(mut self, bytes: u64) -> Self {
        self.min_parallel_bytes = bytes;
        self
    }

    /// Trusts the PEM certificates of `path` (a private CA, or a self-signed server) and
    /// connects over TLS (feature `tls`, rustls), verifying the server's certificate.
    ///
    /// Without it, TLS is used when the URL says `require_ssl=true` (verified against the
    /// bundled Mozilla roots).
    #[cfg(feature = "tls")]
    pub fn with_root_certificate(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        let path: std::path::PathBuf = path.into();
        let ssl = mysql_async::SslOpts::default().with_root_certs(vec![path.into()]);
        self.opts = OptsBuilder::from_opts(self.opts).ssl_opts(ssl).into();
        self
    }

    async fn connect(&self, table: &str) -> Result<Conn> {
        // The driver's rustls asks for a process-wide crypto provider; ring is the one built.
        #[cfg(feature = "tls")]
        {
            static PROVIDER: std::sync::Once = std::sync::Once::new();
            PROVIDER.call_once(|| {
                let _ = rustls::crypto::ring::default_provider().install_default();
            });
        }
        let opts = OptsBuilder::from_opts(self.opts.clone()).init(vec![
            "SET time_zone = '+00:00'",
            "SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ",
        ]);
        let host = self.host();
        let login = async { Conn::new(opts).await.map_err(|e| my_err(table, e)) };
        Timeouts::within(CONNECTOR, &host, "logging in", Some(self.timeouts.login), login).await
    }

    /// The server, as `host:port`, for messages.
    fn host(&self) -> String {
        format!("{}:{}", self.opts.ip_or_hostname(), self.opts.tcp_port())
    }

    /// Awaits one call of the driver within the answer timeout; its error names `table`.
    async fn call<T, F>(&self, table: &str, call: F) -> Result<T>
    where
        F: std::future::Future<Output = std::result::Result<T, mysql_async::Error>>,
    {
        let call = async { call.await.map_err(|e| my_err(table, e)) };
        Timeouts::within(
            CONNECTOR,
            &self.host(),
            "waiting for an answer",
            self.timeouts.answer,
            call,
        )
        .await
    }

    /// How long to wait for the server (default [`Timeouts::default`]). MySQL's client has
    /// no TCP connect timeout of its own: `login` bounds connecting too.
    pub fn with_timeouts(mut self, timeouts: Timeouts) -> Self {
        self.timeouts = timeouts;
        self
    }

    /// The integer primary key and estimated data size of a table, when it has both.
    async fn split_key(&self, conn: &mut Conn, spec: &TableSpec, plans: &[ColumnPlan]) -> Result<Option<String>> {
        let SourceRef::Table(t) = &spec.source else {
            return Ok(None);
        };
        let mut parts = etl_core::kit::sql::split_qualified(t);
        let table = parts.pop().unwrap_or_default();
        let schema = parts.pop();
        let size: Option<Row> = self
            .call(
                &spec.name,
                conn.exec_first(
                    "SELECT DATA_LENGTH FROM information_schema.TABLES \
                     WHERE TABLE_SCHEMA = coalesce(?, DATABASE()) AND TABLE_NAME = ?",
                    (schema.clone(), table.clone()),
                ),
            )
            .await?;
        let size = size
            .map(|r| cell::<Option<u64>>(&spec.name, &r, 0))
            .transpose()?
            .flatten();
        if size.unwrap_or(0) < self.min_parallel_bytes {
            return Ok(None);
        }
        let keys: Vec<Row> = self
            .call(
                &spec.name,
                conn.exec(
                    "SELECT COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE \
                     WHERE TABLE_SCHEMA = coalesce(?, DATABASE()) AND TABLE_NAME = ? AND CONSTRAINT_NAME = 'PRIMARY'",
                    (schema, table),
                ),
            )
            .await?;
        let keys = keys
            .iter()
            .map(|r| cell::<String>(&spec.name, r, 0))
            .collect::<Result<Vec<_>>>()?;
        let integer = |k: &String| {
            plans.iter().any(|p| {
                &p.name == k
                    && matches!(
                        p.kind,
                        Decode::I8 | Decode::I16 | Decode::I32 | Decode::I64 | Decode::U8 | Decode::U16 | Decode::U32
                    )
            })
        };
        Ok(match keys.as_slice() {
            [k] if integer(k) => Some(k.clone()),
            _ => None,
        })
    }

    /// Connections for a whole-table read split by key ranges, each in a consistent snapshot
    /// of the same committed state, and the predicate (with parameters) of each one's range.
    /// Falls back to `first` alone when the table cannot be locked for the moment it takes.
    async fn open_ranges(&self, first: Conn, spec: &TableSpec, rel: &str, key: &str) -> Result<Vec<Range<Conn>>> {
        let name = &spec.name;
        let mut locker = self.connect(name).await?;
        if let Err(e) = self
            .call(name, locker.query_drop(format!("LOCK TABLES {rel} READ")))
            .await
        {
            tracing::warn!(table = %spec.name, error = %e,
                "cannot LOCK TABLES for a consistent parallel read; reading over one connection");
            let _ = locker.disconnect().await;
            let mut first = first;
            self.call(name, first.query_drop(SNAPSHOT)).await?;
            return Ok(vec![Range::whole(first)]);
        }
        let mut conns = vec![first];
        for _ in 1..self.parallelism {
            conns.push(self.connect(&spec.name).await?);
        }
        let started = async {
            for c in &mut conns {
                self.call(name, c.query_drop(SNAPSHOT)).await?;
            }
            Ok::<(), Error>(())
        }
        .await;
        self.call(name, locker.query_drop("UNLOCK TABLES")).await?;
        let _ = locker.disconnect().await;
        started?;
        let k = MY.quote(key);
        let bounds: Option<Row> = self
            .call(
                name,
                conns[0].query_first(format!("SELECT min({k}), max({k}) FROM {rel}")),
            )
            .await?;
        let bounds = match &bounds {
            Some(r) => (cell::<Option<i64>>(name, r, 0)?, cell::<Option<i64>>(name, r, 1)?),
            None => (None, None),
        };
        let (Some(lo), Some(hi)) = bounds else {
            // Empty: one range reads nothing.
            for c in conns.drain(1..) {
                let _ = c.disconnect().await;
            }
            return Ok(conns.into_iter().map(Range::whole).collect());
        };
        let n = conns.len() as i64;
        let step = ((hi - lo) / n).max(1);
        Ok(conns
            .into_iter()
            .enumerate()
            .map(|(i, c)| {
                let i = i as i64;
                let start = lo + i * step;
                let end = lo + (i + 1) * step;
                let (predicate, params) = match (i == 0, i + 1 == n) {
                    (true, true) => (String::new(), vec![]),
                    (true, false) => (format!(" AND {k} < ?"), vec![CursorValue::Int(end)]),
                    (false, true) => (format!(" AND {k} >= ?"), vec![CursorValue::Int(start)]),
                    (false, false) => (
                        format!(" AND {k} >= ? AND {k} < ?"),
                        vec![CursorValue::Int(start), CursorValue::Int(end)],
                    ),
                };
                Range {
                    conn: c,
                    predicate,
                    params,
                }
            })
            .collect())
    }
}

/// Cell `i` of a row the server returned, as `T` (the driver's own typed reads panic on a
/// value that does not convert; this is an error naming the table).
fn cell<T: mysql_async::prelude::FromValue>(table: &str, row: &Row, i: usize) -> Result<T> {
    match row.get_opt::<T, _>(i) {
        Some(Ok(v)) => Ok(v),
        other => Err(Error::Connector {
            connector: CONNECTOR,
            message: format!(
                "table `{table}`: the server answered an unexpected value in column {i}: {:?}",
                other.map(|r| r.err())
            ),
            retryable: false,
        }),
    }
}

const SNAPSHOT: &str = "START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY";

/// A cursor value from a `max(…)` result.
fn cursor_value(plan: &ColumnPlan, v: Value) -> std::result::Result<CursorValue, String> {
    let bad = |v: &Value| format!("{} ({v:?})", plan.type_name);
    Ok(match (plan.kind, v) {
        (Decode::I8 | Decode::I16 | Decode::I32 | Decode::I64 | Decode::U8 | Decode::U16 | Decode::U32, v) => match v {
            Value::Int(i) => CursorValue::Int(i),
            Value::UInt(u) => CursorValue::Int(i64::try_from(u).map_err(|_| bad(&v))?),
            Value::Bytes(ref b) => CursorValue::Int(
                std::str::from_utf8(b)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| bad(&v))?,
            ),
            v => return Err(bad(&v)),
        },
        (Decode::Date, Value::Date(y, m, d, ..)) => {
            CursorValue::Date(NaiveDate::from_ymd_opt(y.into(), m.into(), d.into()).ok_or(format!("{y}-{m}-{d}"))?)
        }
        (Decode::DateTime | Decode::Timestamp, Value::Date(y, mo, d, h, mi, s, us)) => {
            let t = NaiveDate::from_ymd_opt(y.into(), mo.into(), d.into())
                .and_then(|date| date.and_hms_micro_opt(h.into(), mi.into(), s.into(), us))
                .ok_or(format!("{y}-{mo}-{d} {h}:{mi}:{s}"))?;
            if plan.kind == Decode::Timestamp {
                CursorValue::TimestampTz(t.and_utc())
            } else {
                CursorValue::Timestamp(t)
            }
        }
        (Decode::Text, Value::Bytes(b)) => CursorValue::Text(String::from_utf8(b).map_err(|e| e.to_string())?),
        (_, v) => return Err(bad(&v)),
    })
}

/// A cursor value as a statement parameter (timestamps in the session's UTC).
fn param(v: &CursorValue) -> Value {
    let dt = |t: NaiveDateTime| {
        Value::Date(
            t.year() as u16,
            t.month() as u8,
            t.day() as u8,
            t.hour() as u8,
            t.minute() as u8,
            t.second() as u8,
            t.nanosecond() / 1000,
        )
    };
    match v {
        CursorValue::Int(i) => Value::Int(*i),
        CursorValue::Timestamp(t) => dt(*t),
        CursorValue::TimestampTz(t) => dt(t.naive_utc()),
        CursorValue::Date(d) => dt(d.and_hms_opt(0, 0, 0).expect("midnight")),
        CursorValue::Text(s) => Value::Bytes(s.clone().into_bytes()),
    }
}

/// One range's rows, decoded on its own task.
struct RangeRead {
    /// The server and how long it may take to answer (see [`Timeouts`]).
    host: String,
    answer: Option<std::time::Duration>,
    zero_dates_as_null: bool,
    rows: Rows<ColumnPlan>,
}

impl RangeRead {
    /// Streams the rows of `sql` into `tx` as batches, then ends the snapshot. An error is
    /// sent down `tx` too, so the reader sees it at once.
    async fn run(self, mut conn: Conn, sql: String, params: Vec<Value>, tx: mpsc::Sender<Result<RecordBatch>>) {
        if let Err(e) = self.stream(&mut conn, sql, params, &tx).await {
            let _ = tx.send(Err(e)).await;
        }
        // Ends the snapshot now, whatever happened (a dropped connection would end it only
        // once the runtime gets to its disconnect).
        let _ = conn.disconnect().await;
    }

    async fn stream(
        &self,
        conn: &mut Conn,
        sql: String,
        params: Vec<Value>,
        tx: &mpsc::Sender<Result<RecordBatch>>,
    ) -> Result<()> {
        let err = |e| my_err(&self.rows.table, e);
        let params = if params.is_empty() {
            Params::Empty
        } else {
            Params::Positional(params)
        };
        let mut builders: Vec<Builder> = self
            .rows
            .plans
            .iter()
            .map(|p| Builder::new(p, self.rows.batch_size))
            .collect();
        {
            let mut result = self
                .timed("waiting for an answer", async {
                    conn.exec_iter(sql, params).await.map_err(err)
                })
                .await?;
            loop {
                // One batch's rows within the answer timeout (the hand-over to the reader,
                // which waits for the sink, is not timed).
                let (rows, done) = self
                    .timed("reading rows", async {
                        let mut rows = 0;
                        while rows < self.rows.batch_size {
                            let Some(row) = result.next().await.map_err(err)? else {
                                return Ok((rows, true));
                            };
                            for ((b, v), plan) in builders.iter_mut().zip(row.unwrap_raw()).zip(&self.rows.plans) {
                                b.append(v, self.zero_dates_as_null).map_err(|e| Error::Connector {
                                    connector: CONNECTOR,
                                    message: format!(
                                        "table `{}`, column `{}` ({}): {e}",
                                        self.rows.table, plan.name, plan.type_name
                                    ),
                                    retryable: false,
                                })?;
                            }
                            rows += 1;
                        }
                        Ok((rows, false))
                    })
                    .await?;
                if rows > 0 && tx.send(self.batch(&mut builders, rows)).await.is_err() {
                    return Ok(()); // the reader is gone
                }
                if done {
                    break;
                }
            }
        }
        self.timed("waiting for an answer", async {
            conn.query_drop("COMMIT").await.map_err(err)
        })
        .await
    }

    async fn timed<T>(&self, phase: &str, call: impl std::future::Future<Output = Result<T>>) -> Result<T> {
        Timeouts::within(CONNECTOR, &self.host, phase, self.answer, call).await
    }

    fn batch(&self, builders: &mut [Builder], rows: usize) -> Result<RecordBatch> {
        if let Some(c) = &self.rows.counter {
            c.count_source(rows as u64);
        }
        let cols = builders.iter_mut().map(|b| b.finish()).collect();
        RecordBatch::try_new(self.rows.schema.clone(), cols).map_err(|e| Error::arrow(&self.rows.table, e))
    }
}

impl read::Column for ColumnPlan {
    fn name(&self) -> &str {
        &self.name
    }

    fn data_type(&self) -> &DataType {
        &self.data_type
    }
}

#[async_trait]
impl Database for MySqlSource {
    const NAME: &'static str = CONNECTOR;
    const DIALECT: Dialect = MY;
    const BINDS: bool = true;
    type Conn = Conn;
    type Plan = ColumnPlan;

    fn counts(&self) -> Counts {
        self.counts
    }

    async fn connect(&self, table: &str) -> Result<Conn> {
        MySqlSource::connect(self, table).await
    }

    /// Ends the connection and its snapshot now (a dropped connection would end them only
    /// once the runtime gets to its disconnect).
    async fn close(&self, conn: Conn) {
        let _ = conn.disconnect().await;
    }

    async fn describe(&self, conn: &mut Conn, spec: &TableSpec, rel: &str) -> Result<Vec<ColumnPlan>> {
        let stmt = self
            .call(&spec.name, conn.prep(format!("SELECT * FROM {rel} LIMIT 0")))
            .await?;
        let plans = stmt
            .columns()
            .iter()
            .map(|c| {
                let name = c.name_str().to_string();
                let type_name = types::type_name(c);
                let nullable = !c.flags().contains(mysql_async::consts::ColumnFlags::NOT_NULL_FLAG);
                match types::map_column(c, self.tinyint1_as_bool) {
                    Some((data_type, kind)) => Ok(ColumnPlan {
                        name,
                        data_type,
                        kind,
                        as_text: false,
                        type_name,
                        nullable,
                    }),
                    None if self.unmapped_as_text => Ok(ColumnPlan {
                        name,
                        data_type: DataType::Utf8,
                        kind: Decode::Text,
                        as_text: true,
                        type_name,
                        nullable,
                    }),
                    None => Err(Error::ColumnTypeConflict {
                        table: spec.name.clone(),
                        column: name,
                        expected: "a type the MySQL source maps (or MySqlSource::with_unmapped_as_text)".into(),
                        found: type_name,
                    }),
                }
            })
            .collect::<Result<Vec<_>>>()?;
        self.call(&spec.name, conn.close(stmt)).await?;
        Ok(plans)
    }

    /// InnoDB's transactions in progress (`information_schema.innodb_trx`, which needs the
    /// PROCESS privilege) and the statements running (`PROCESSLIST`: `NOW()` stamps a row
    /// with its statement's start, which may precede its transaction's).
    async fn in_flight(&self, conn: &mut Conn, spec: &TableSpec, _rel: &str) -> Result<InFlight> {
        let clock: Option<Row> = self
            .call(
                &spec.name,
                conn.query_first(
                    "SELECT CAST(UNIX_TIMESTAMP(NOW(6)) * 1000000 AS SIGNED), \
                     TIMESTAMPDIFF(SECOND, UTC_TIMESTAMP(), CONVERT_TZ(UTC_TIMESTAMP(), '+00:00', @@global.time_zone)), \
                     (SELECT MAX(TIME) FROM information_schema.PROCESSLIST WHERE ID <> CONNECTION_ID() \
                        AND COMMAND NOT IN ('Sleep', 'Daemon', 'Binlog Dump', 'Binlog Dump GTID')), \
                     (SELECT ID FROM information_schema.PROCESSLIST WHERE ID <> CONNECTION_ID() \
                        AND COMMAND NOT IN ('Sleep', 'Daemon', 'Binlog Dump', 'Binlog Dump GTID') ORDER BY TIME DESC LIMIT 1)",
                ),
            )
            .await?;
        let odd = |message: String| Error::Connector {
            connector: CONNECTOR,
            message: format!("table `{}`: {message}", spec.name),
            retryable: false,
        };
        let clock = clock.ok_or_else(|| odd("the server's clock query returned no row".into()))?;
        let now_us: i64 = cell(&spec.name, &clock, 0)?;
        let offset: Option<i64> = cell(&spec.name, &clock, 1)?;
        let running: Option<i64> = cell(&spec.name, &clock, 2)?;
        let running_id: Option<i64> = cell(&spec.name, &clock, 3)?;
        let now = chrono::DateTime::from_timestamp_micros(now_us)
            .ok_or_else(|| odd(format!("the server's clock is out of range: {now_us}")))?;
        // A statement started at most its whole seconds and one more ago.
        let mut oldest = running.zip(running_id).map(|(secs, id)| {
            (
                now - chrono::TimeDelta::seconds(secs + 1),
                format!("thread {id}, a statement running for {secs} s"),
            )
        });
        // Its own error is looked at (a missing privilege), so it is awaited as it is.
        let trx = self
            .call(&spec.name, async {
                Ok(conn
                    .query_first::<Row, _>(
                        "SELECT CAST(UNIX_TIMESTAMP(MIN(trx_started)) * 1000000 AS SIGNED), \
                   (SELECT trx_mysql_thread_id FROM information_schema.innodb_trx \
                     WHERE trx_mysql_thread_id <> CONNECTION_ID() ORDER BY trx_started LIMIT 1) \
                 FROM information_schema.innodb_trx WHERE trx_mysql_thread_id <> CONNECTION_ID()",
                    )
                    .await)
            })
            .await?;
        let mut unknown = None;
        match trx {
            Ok(Some(row)) => {
                let started: Option<i64> = cell(&spec.name, &row, 0)?;
                let id: Option<i64> = cell(&spec.name, &row, 1)?;
                // `trx_started` is whole seconds, and InnoDB starts a transaction at its first
                // row, after its statement's `NOW()`: a second earlier covers both.
                let started = started.map(|us| us - 1_000_000);
                let start = started.and_then(chrono::DateTime::from_timestamp_micros);
                if let Some(start) = start.filter(|s| oldest.as_ref().is_none_or(|(t, _)| s < t)) {
                    oldest = Some((start, format!("thread {}", id.unwrap_or_default())));
                }
            }
            Ok(None) => {}
            Err(mysql_async::Error::Server(e)) if e.code == 1227 => {
                unknown = Some(
                    "the transactions in progress cannot be seen without the PROCESS privilege (grant it)".to_string(),
                );
            }
            Err(e) => return Err(my_err(&spec.name, e)),
        }
        Ok(InFlight {
            // InnoDB answers `innodb_trx` from a cache it refreshes at most every 100 ms: a
            // transaction started since may be missing, but it started after the clock less
            // that — so the clock is taken a second early.
            now: now - chrono::TimeDelta::seconds(1),
            local_offset: chrono::TimeDelta::seconds(offset.unwrap_or(0)),
            oldest,
            unknown,
        })
    }

    /// One consistent snapshot; a whole table with an integer primary key and at least
    /// `min_parallel_bytes` of data is split into key ranges (see [`MySqlSource::with_parallelism`]).
    async fn snapshot(
        &self,
        mut conn: Conn,
        spec: &TableSpec,
        rel: &str,
        plans: &[ColumnPlan],
        whole: bool,
    ) -> Result<Vec<Range<Conn>>> {
        let key = if whole && self.parallelism > 1 {
            self.split_key(&mut conn, spec, plans).await?
        } else {
            None
        };
        match key {
            Some(key) => self.open_ranges(conn, spec, rel, &key).await,
            None => {
                self.call(&spec.name, conn.query_drop(SNAPSHOT)).await?;
                Ok(vec![Range::whole(conn)])
            }
        }
    }

    async fn high_water(
        &self,
        conn: &mut Conn,
        spec: &TableSpec,
        rel: &str,
        plans: &[ColumnPlan],
    ) -> Result<Option<CursorValue>> {
        let mut best = None;
        for c in &spec.cursor {
            let plan = plans.iter().find(|p| &p.name == c).expect("described");
            // The binary protocol, so temporal values arrive as values, not text.
            let v: Option<Value> = self
                .call(
                    &spec.name,
                    conn.exec_first(format!("SELECT max({}) FROM {rel}", MY.quote(c)), ()),
                )
                .await?;
            let v = match v {
                None | Some(Value::NULL) => None,
                Some(v) => Some(cursor_value(plan, v).map_err(|found| Error::ColumnTypeConflict {
                    table: spec.name.clone(),
                    column: c.clone(),
                    expected: "an integer, date, timestamp or text cursor".into(),
                    found,
                })?),
            };
            best = CursorValue::max_opt(best, v);
        }
        Ok(best)
    }

    async fn null_cursor_rows(
        &self,
        conn: &mut Conn,
        spec: &TableSpec,
        rel: &str,
        plans: &[ColumnPlan],
    ) -> Result<u64> {
        // A cursor column declared NOT NULL holds no NULL: no query.
        let nullable = spec
            .cursor
            .iter()
            .all(|c| plans.iter().any(|p| &p.name == c && p.nullable));
        if !nullable {
            return Ok(0);
        }
        let sql = MY.null_cursor_count(rel, &spec.cursor);
        let row: Option<Row> = self.call(&spec.name, conn.query_first(sql)).await?;
        row.map_or(Ok(0), |r| cell::<u64>(&spec.name, &r, 0))
    }

    async fn cells(&self, conn: &mut Conn, table: &str, sql: &str) -> Result<etl_core::keys::Cells> {
        let rows: Vec<Row> = self.call(table, conn.query(sql)).await?;
        Ok(rows
            .into_iter()
            .map(|r| {
                (0..r.len())
                    .map(|i| match r.as_ref(i) {
                        None | Some(Value::NULL) => None,
                        Some(Value::Bytes(b)) => Some(String::from_utf8_lossy(b).into_owned()),
                        Some(v) => Some(v.as_sql(true)),
                    })
                    .collect()
            })
            .collect())
    }

    async fn count(&self, table: &str, rel: &str) -> Result<u64> {
        let mut c = MySqlSource::connect(self, table).await?;
        let row: Option<Row> = self
            .call(table, c.query_first(format!("SELECT count(*) FROM {rel}")))
            .await?;
        let _ = c.disconnect().await;
        row.map_or(Ok(0), |r| cell::<u64>(table, &r, 0))
    }

    async fn count_where(&self, table: &str, rel: &str, filter: &str, params: Vec<CursorValue>) -> Result<u64> {
        let mut c = MySqlSource::connect(self, table).await?;
        let values: Vec<Value> = params.iter().map(param).collect();
        let row: Option<Row> = self
            .call(
                table,
                c.exec_first(format!("SELECT count(*) FROM {rel} WHERE {filter}"), values),
            )
            .await?;
        let _ = c.disconnect().await;
        row.map_or(Ok(0), |r| cell::<u64>(table, &r, 0))
    }

    fn select(plan: &ColumnPlan) -> String {
        let c = MY.quote(&plan.name);
        match (plan.as_text, plan.type_name.as_str()) {
            (false, _) => c,
            (true, "geometry") => format!("ST_AsText({c}) AS {c}"),
            (true, _) => format!("CAST({c} AS CHAR) AS {c}"),
        }
    }

    /// The rows, decoded on a task of their own (at most one batch waits for the reader);
    /// a task that panics is an error, never a silently short read.
    fn rows(&self, conn: Conn, select: String, params: Vec<CursorValue>, rows: Rows<ColumnPlan>) -> BatchStream {
        let (tx, rx) = mpsc::channel(1);
        let table = rows.table.clone();
        let read = RangeRead {
            host: self.host(),
            answer: self.timeouts.answer,
            zero_dates_as_null: self.zero_dates_as_null,
            rows,
        };
        let task = AbortOnDrop::spawn(read.run(conn, select, params.iter().map(param).collect(), tx));
        let batches = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (b, rx)) });
        let end = futures::stream::once(async move {
            task.join().await.map_err(|e| Error::Connector {
                connector: CONNECTOR,
                message: format!("table `{table}`: read task failed: {e}"),
                retryable: false,
            })
        })
        .filter_map(|r| async move { r.err().map(Err) });
        Box::pin(batches.chain(end))
    }
}

#[async_trait]
impl Source for MySqlSource {
    fn name(&self) -> &str {
        CONNECTOR
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

crate::db::keys::key_reader!(MySqlSource, None);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_redacts_the_password() {
        let s = MySqlSource::new("mysql://u:hunter2@db.example:3307/shop").unwrap();
        let d = format!("{s:?}");
        assert!(
            !d.contains("hunter2") && d.contains("redacted") && d.contains("3307"),
            "{d}"
        );
        let e = MySqlSource::new("postgres://u:hunter2@x/y").unwrap_err().to_string();
        assert!(!e.contains("hunter2"), "{e}");
    }

    #[test]
    fn cursor_values_become_parameters() {
        let t = NaiveDate::from_ymd_opt(2025, 7, 24)
            .unwrap()
            .and_hms_micro_opt(1, 5, 23, 5)
            .unwrap();
        assert_eq!(param(&CursorValue::Timestamp(t)), Value::Date(2025, 7, 24, 1, 5, 23, 5));
        assert_eq!(param(&CursorValue::Int(-3)), Value::Int(-3));
    }
}
