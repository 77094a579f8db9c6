//! The one error type of the workspace.
//!
//! Every variant names the thing that went wrong (table, column, file, line, sink, mode) so a
//! user can act on the message alone. [`Error::is_retryable`] tells a scheduler whether trying
//! again may help, and a driver's error keeps its cause ([`Error::Driver`]: the class of
//! failure as a [`DriverErrorKind`], the server's code, the driver's error as the source), so
//! nothing ever matches on message strings.

use crate::mode::LoadMode;

/// `Result` with this crate's [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in a pipeline, by cause.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The pipeline, a table spec or an option is wrong; nothing was read or written.
    #[error("invalid configuration: {message}")]
    Config {
        /// What is wrong and how to fix it.
        message: String,
    },

    /// A required source table (or file prefix) does not exist.
    #[error("table `{table}` not found in source `{source_name}`")]
    TableNotFound {
        /// The table as the spec names it.
        table: String,
        /// The source that was asked.
        source_name: String,
    },

    /// A column the spec names does not exist in the data.
    #[error("column `{column}` not found in table `{table}`")]
    ColumnNotFound {
        /// The table.
        table: String,
        /// The missing column.
        column: String,
    },

    /// Data does not fit the type it must have (a cast that fails, a schema that changed
    /// incompatibly).
    #[error("table `{table}`, column `{column}`: cannot use type {found} where {expected} is required")]
    ColumnTypeConflict {
        /// The table.
        table: String,
        /// The column.
        column: String,
        /// The type the target or spec requires.
        expected: String,
        /// The type that was found.
        found: String,
    },

    /// An incremental read met rows whose cursor columns are all NULL, which no watermark can
    /// place, under [`crate::NullCursors::Fail`]; nothing was written.
    #[error(
        "table `{table}`: {rows} rows have NULL in every cursor column ({columns}), so no incremental read \
         can tell when they are new; add a cursor column that is always set (a row is new when any cursor \
         column is past the watermark), or load such rows with whole reads only \
         (TableSpec::null_cursors(NullCursors::WholeReadsOnly))"
    )]
    NullCursor {
        /// The table.
        table: String,
        /// The cursor columns, comma-separated.
        columns: String,
        /// How many rows were seen (a lower bound when the read stopped at the first batch).
        rows: u64,
    },

    /// A row of an input file cannot be parsed.
    #[error("malformed row in `{file}` at line {line}: {reason}")]
    MalformedRow {
        /// The file, as a path in its object store.
        file: String,
        /// 1-based line number of the record's first line.
        line: u64,
        /// What is wrong with it.
        reason: String,
    },

    /// The sink cannot honour this load mode for this table.
    #[error("sink `{sink}` does not support load mode {mode} (table `{table}`): {hint}")]
    UnsupportedMode {
        /// The sink's name.
        sink: String,
        /// The refused mode.
        mode: LoadMode,
        /// The table whose spec asked for it.
        table: String,
        /// Why, and what to use instead.
        hint: String,
    },

    /// Another run of the same pipeline committed first; this run changed nothing.
    #[error(
        "concurrent run of pipeline `{pipeline}` on table `{table}`: another run committed first; \
         this run's staged data was discarded and nothing changed"
    )]
    ConcurrentRun {
        /// The pipeline.
        pipeline: String,
        /// The table.
        table: String,
    },

    /// An incremental run found a target that does not hold what the watermark stands for
    /// (dropped, truncated, or restored from a backup): going on would leave its rows
    /// missing for good. Nothing was read or written.
    #[error(
        "table `{table}`: {message}; the watermark and the target disagree, so an incremental run would \
         leave rows missing. Reload it once in full (ModeOverrides::with(\"{table}\", LoadMode::Full)), \
         or let runs do so (TableSpec::on_target_lost(TargetLost::Reload))"
    )]
    TargetLost {
        /// The table.
        table: String,
        /// What disagrees.
        message: String,
    },

    /// A run found more rows deleted at the source than the table's delete guard allows
    /// ([`crate::Deletes::max_share`]); nothing was deleted.
    #[error(
        "table `{table}`: {found} of the target's {target_rows} rows are gone from the source, more than \
         the {max_share} the delete guard allows; nothing was deleted (raise Deletes::max_share if this \
         is meant, or check the source)"
    )]
    MassDelete {
        /// The table.
        table: String,
        /// Keys the target holds and the source does not.
        found: u64,
        /// Rows in the target.
        target_rows: u64,
        /// The guard's share.
        max_share: f64,
    },

    /// Reconciliation found the target unlike the source, under
    /// [`crate::ReconcilePolicy::Fail`]: the table failed before its watermark moved.
    #[error("table `{table}` does not reconcile: {message}")]
    Unreconciled {
        /// The table.
        table: String,
        /// What differs, and where.
        message: String,
    },

    /// A shard plan's commit found shards that have not staged
    /// ([`crate::Pipeline::commit_shards`]); nothing was committed.
    #[error(
        "plan `{plan}` of table `{table}`: shard(s) {missing} have not staged; run them (`etl shard --index N`) \
         and commit again; nothing was committed"
    )]
    IncompletePlan {
        /// The plan.
        plan: String,
        /// The table.
        table: String,
        /// The indices of the shards without a manifest.
        missing: String,
    },

    /// Reading or writing an object store failed.
    #[error("object store error at `{path}`: {source}")]
    ObjectStore {
        /// The object path.
        path: String,
        /// The store's error.
        #[source]
        source: object_store::Error,
    },

    /// An Arrow computation (cast, filter, take, decode) failed.
    #[error("arrow error in table `{table}`: {source}")]
    Arrow {
        /// The table being processed.
        table: String,
        /// Arrow's error.
        #[source]
        source: arrow::error::ArrowError,
    },

    /// A stored document (watermark, commit record, catalog entry) cannot be read.
    #[error("corrupt metadata document `{path}`: {message}")]
    Metadata {
        /// Where the document is.
        path: String,
        /// What is wrong.
        message: String,
    },

    /// A server did not answer in time (see [`crate::Timeouts`]); trying again may succeed.
    #[error("{connector}: no answer from {host} within {}s while {phase}", after.as_secs_f64())]
    Timeout {
        /// The connector (`postgres`, `mysql`, …).
        connector: &'static str,
        /// The server, as `host:port`.
        host: String,
        /// What the connector was doing: `connecting`, `logging in`, `waiting for an answer`.
        phase: String,
        /// The limit that passed.
        after: std::time::Duration,
    },

    /// A database or service refused or failed a call; the driver's own error is the
    /// [`std::error::Error::source`].
    #[error("{connector}: table `{table}`: {message}")]
    Driver {
        /// The connector (`postgres`, `mysql`, `snowflake`).
        connector: &'static str,
        /// The table the call was for.
        table: String,
        /// What the server or driver said.
        message: String,
        /// The class of failure, to match on.
        kind: DriverErrorKind,
        /// The server's own code when it sent one: a SQLSTATE (`40001`), a MySQL error number
        /// (`1213`), a Snowflake error code.
        code: Option<String>,
        /// The driver's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },

    /// A connector's own failure (protocol, file format, an answer it cannot use), mapped at
    /// its boundary.
    #[error("{connector}: {message}")]
    Connector {
        /// The connector (`files`, `lake`, `postgres`, …).
        connector: &'static str,
        /// What failed, naming the table or file.
        message: String,
        /// Whether the same call may succeed if tried again (connection reset, throttling).
        retryable: bool,
    },
}

/// The class of a driver's failure ([`Error::Driver`]), whatever the database.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DriverErrorKind {
    /// The connection could not be made or was lost (network, TLS, the server went away).
    Connection,
    /// The login was refused.
    Authentication,
    /// Another transaction was in the way: a deadlock, a serialization failure, a lock wait
    /// that ran out. Trying again may succeed.
    Conflict,
    /// The server cannot take the call now: too many connections, shutting down, throttled.
    Unavailable,
    /// A constraint refused a row (unique, not-null, foreign key, check).
    Constraint,
    /// The user lacks a privilege for the call.
    Permission,
    /// The statement does not fit the database (a missing column, a type mismatch, syntax).
    Statement,
    /// Anything else.
    Other,
}

impl DriverErrorKind {
    /// Whether a call that failed so may succeed if tried again.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            DriverErrorKind::Connection | DriverErrorKind::Conflict | DriverErrorKind::Unavailable
        )
    }

    /// The class of a SQLSTATE (Postgres, Redshift; Snowflake and MySQL send them too).
    pub fn of_sqlstate(code: &str) -> DriverErrorKind {
        match code {
            "40001" | "40P01" | "55P03" => DriverErrorKind::Conflict,
            "53300" | "57P01" | "57P02" | "57P03" | "53000" => DriverErrorKind::Unavailable,
            "42501" => DriverErrorKind::Permission,
            c if c.starts_with("08") => DriverErrorKind::Connection,
            c if c.starts_with("28") => DriverErrorKind::Authentication,
            c if c.starts_with("23") => DriverErrorKind::Constraint,
            c if c.starts_with("42") || c.starts_with("22") => DriverErrorKind::Statement,
            _ => DriverErrorKind::Other,
        }
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Connector {
            connector: "io",
            message: e.to_string(),
            retryable: false,
        }
    }
}

impl Error {
    /// A sink's refusal of `nulls` rows whose primary key `key` holds a NULL (UPSERT merges
    /// by key; such a row has none), nothing written.
    pub fn null_key(connector: &'static str, table: &str, nulls: u64, key: &[String]) -> Self {
        Error::Connector {
            connector,
            message: format!(
                "table `{table}`: {nulls} rows have a NULL in the primary key ({}); nothing was written",
                key.join(", ")
            ),
            retryable: false,
        }
    }

    /// A configuration error with the given message.
    pub fn config(message: impl Into<String>) -> Self {
        Error::Config {
            message: message.into(),
        }
    }

    /// The value of environment variable `var` (a connection string, say), or a
    /// configuration error naming the variable (never its value).
    ///
    /// # Errors
    /// [`Error::Config`] when it is unset or not Unicode.
    pub fn env(var: &str) -> Result<String> {
        std::env::var(var).map_err(|_| Error::config(format!("environment variable {var} is not set")))
    }

    /// Wraps an object store error, keeping the path it concerned.
    pub fn store(path: impl std::fmt::Display, source: object_store::Error) -> Self {
        Error::ObjectStore {
            path: path.to_string(),
            source,
        }
    }

    /// Wraps an Arrow error for a table.
    pub fn arrow(table: impl Into<String>, source: arrow::error::ArrowError) -> Self {
        Error::Arrow {
            table: table.into(),
            source,
        }
    }

    /// Whether trying the same operation again may succeed: dropped connections and throttling
    /// are, bad input and conflicts are not.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::ObjectStore { source, .. } => matches!(
                source,
                object_store::Error::Generic { .. } | object_store::Error::JoinError { .. }
            ),
            Error::Connector { retryable, .. } => *retryable,
            Error::Driver { kind, .. } => kind.is_retryable(),
            Error::Timeout { .. } => true,
            _ => false,
        }
    }

    /// The class of a driver's failure, for [`Error::Driver`].
    ///
    /// ```
    /// use etl_core::{DriverErrorKind, Error};
    /// let e = Error::Driver {
    ///     connector: "postgres",
    ///     table: "orders".into(),
    ///     message: "could not serialize access due to concurrent update".into(),
    ///     kind: DriverErrorKind::of_sqlstate("40001"),
    ///     code: Some("40001".into()),
    ///     source: "stand-in for the driver's error".into(),
    /// };
    /// assert_eq!(e.driver_kind(), Some(DriverErrorKind::Conflict));
    /// assert!(e.is_retryable());
    /// ```
    pub fn driver_kind(&self) -> Option<DriverErrorKind> {
        match self {
            Error::Driver { kind, .. } => Some(*kind),
            _ => None,
        }
    }

    /// Whether this error says another run got there first.
    pub fn is_concurrent_run(&self) -> bool {
        matches!(self, Error::ConcurrentRun { .. })
    }
}
