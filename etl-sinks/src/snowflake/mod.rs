//! Snowflake as a sink, through `snowflake-api`: the run's rows staged as Parquet files under
//! an S3 prefix (through `object_store`, at `<pipeline>/<schema>/<table>/<date>/<run>/`, the
//! seed's layout), `COPY INTO` a per-run staging table from an external stage
//! (`MATCH_BY_COLUMN_NAME`), then the mode's statements and the run's checkpoint in one
//! transaction.
//!
//! Snowflake commits any open transaction on DDL, so everything that creates or alters a
//! table happens before `BEGIN`: the schema and checkpoint table, a missing target (an empty
//! table a failed first run leaves behind), new columns, the transient staging table, the
//! `COPY`, and UPSERT's collapse. Inside the transaction only DML runs: the checkpoint's
//! compare-and-swap, then
//! - `FULL`, `TRUNCATE_INSERT`: `DELETE` + `INSERT` — readers see the old rows until the
//!   commit, and a failed run leaves them whole; the table keeps its definition and grants
//!   (so a FULL whose columns changed type is an error, never a silent recreate);
//! - `APPEND`, `INCREMENTAL`: `INSERT`;
//! - `UPSERT`: a NULL key is an error naming the count; rows collapsed to the latest per key
//!   (cursor, then arrival), soft deletes, then update-and-insert (`UPDATE … FROM` +
//!   `INSERT … WHERE NOT EXISTS`, what `MERGE` does, as two statements), delete-and-insert,
//!   or insert-only.
//!
//! The staging tables are dropped and the staged files deleted after the run, committed or
//! not. Credentials for the bucket live in Snowflake (a storage integration or a named
//! stage), never in SQL text: `snowflake-api` logs statements at debug level.

use std::fmt;
use std::sync::Arc;

use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use etl_core::kit::sql::Dialect;
use etl_core::{
    Checkpoint, CommitSummary, Error, LoadMode, Location, MergeStrategy, Result, Sink, StageSummary, TableSpec,
    TableWriter, WriteRequest,
};
use snowflake_api::{
    AuthArgs, AuthType, CertificateArgs, PasswordArgs, RawQueryResult, SnowflakeApi, SnowflakeApiBuilder,
    SnowflakeApiError,
};

mod tokens;

use crate::sql;
use crate::stage::ParquetStage;
use crate::statements::Statements;

const SF: Dialect = Dialect::Snowflake;
const CHECKPOINTS: &str = "_etl_checkpoints";

/// How the sink logs in.
#[derive(Clone)]
pub enum SnowflakeSecret {
    /// A password.
    Password(String),
    /// Key-pair authentication: the user's private key, PEM (PKCS#8).
    PrivateKeyPem(String),
}

/// The account, user and context of the sink's sessions.
#[derive(Clone)]
pub struct SnowflakeAuth {
    /// The account identifier (`myorg-myaccount`).
    pub account: String,
    /// The user.
    pub user: String,
    /// Password or private key (never printed).
    pub secret: SnowflakeSecret,
    /// The database the sink writes into.
    pub database: String,
    /// The warehouse that runs the statements.
    pub warehouse: Option<String>,
    /// The role, when not the user's default.
    pub role: Option<String>,
}

impl fmt::Debug for SnowflakeAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SnowflakeAuth")
            .field("account", &self.account)
            .field("user", &self.user)
            .field("secret", &"<redacted>")
            .field("database", &self.database)
            .field("warehouse", &self.warehouse)
            .field("role", &self.role)
            .finish()
    }
}

/// Where Snowflake reads the staged files from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SnowflakeStage {
    /// An existing external stage (`@name`) over the staging location's root.
    Named(String),
    /// A temporary stage on `url` (the staging location's `s3://bucket/prefix`) through a
    /// storage integration.
    Integration {
        /// The staging location's URL as Snowflake reads it.
        url: String,
        /// The storage integration's name.
        integration: String,
    },
    /// A temporary stage on `url` without credentials (a public bucket, or `file:///…`
    /// for an emulator).
    Url(String),
}

/// Writes tables of one Snowflake schema.
///
/// ```no_run
/// # async fn demo() -> etl_core::Result<()> {
/// use etl_core::{LoadMode, Location, MemorySource, ObjectStoreWatermarkStore, Pipeline, TableSpec};
/// use etl_sinks::snowflake::{SnowflakeAuth, SnowflakeSecret, SnowflakeSink, SnowflakeStage};
///
/// let auth = SnowflakeAuth {
///     account: "myorg-myaccount".into(),
///     user: "ETL".into(),
///     secret: SnowflakeSecret::PrivateKeyPem(std::fs::read_to_string("rsa_key.p8")?),
///     database: "ANALYTICS".into(),
///     warehouse: Some("LOAD_WH".into()),
///     role: None,
/// };
/// // With the `s3` feature: `Location::s3("my-bucket", "etl", None)?`.
/// let staging = Location::local("/mnt/my-bucket/etl")?;
/// let sink = SnowflakeSink::new(auth, staging, SnowflakeStage::Named("ETL_STAGE".into())).with_schema("crm");
/// let pipeline = Pipeline::builder("crm")
///     .source(MemorySource::new())
///     .sink(sink)
///     .watermarks(ObjectStoreWatermarkStore::new(Location::local("./state")?))
///     .table(TableSpec::new("customers").mode(LoadMode::Upsert).primary_key(["customer_id"]))
///     .build()?;
/// pipeline.run().await?.into_result()?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct SnowflakeSink {
    auth: Arc<SnowflakeAuth>,
    schema: String,
    staging: Location,
    stage: SnowflakeStage,
    client: Option<reqwest_middleware::ClientWithMiddleware>,
    timeouts: etl_core::Timeouts,
}

impl fmt::Debug for SnowflakeSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SnowflakeSink")
            .field("auth", &self.auth)
            .field("schema", &self.schema)
            .field("staging", &self.staging.url())
            .field("stage", &self.stage)
            .finish()
    }
}

impl SnowflakeSink {
    /// A sink writing into schema `PUBLIC` of `auth.database`, staging files under `staging`
    /// that Snowflake reads through `stage`.
    pub fn new(auth: SnowflakeAuth, staging: Location, stage: SnowflakeStage) -> Self {
        SnowflakeSink {
            auth: Arc::new(auth),
            schema: "PUBLIC".to_string(),
            staging,
            stage,
            client: None,
            timeouts: etl_core::Timeouts::default(),
        }
    }

    /// How long to wait for Snowflake (default [`etl_core::Timeouts::default`]): `login` for
    /// a login, `answer` for every other request (Snowflake answers a long statement within
    /// about 45 s, with "still running" if need be), `connect` for the sink's own HTTP client
    /// (a client given with [`SnowflakeSink::with_http_client`] keeps its own).
    pub fn with_timeouts(mut self, timeouts: etl_core::Timeouts) -> Self {
        self.timeouts = timeouts;
        self
    }

    /// Writes into `schema` (created when missing; the name is used as given, quoted).
    pub fn with_schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }

    /// Sends the API's requests through `client` (a proxy, extra middleware, or a test
    /// emulator) instead of the default one.
    pub fn with_http_client(mut self, client: reqwest_middleware::ClientWithMiddleware) -> Self {
        self.client = Some(client);
        self
    }

    fn qualified(&self, table: &str) -> String {
        format!("{}.{}", SF.quote(&self.schema), SF.quote(table))
    }

    fn connect(&self, table: &str) -> Result<Session> {
        let a = &self.auth;
        let auth_type = match &a.secret {
            SnowflakeSecret::Password(p) => AuthType::Password(PasswordArgs { password: p.clone() }),
            SnowflakeSecret::PrivateKeyPem(k) => AuthType::Certificate(CertificateArgs {
                private_key_pem: k.clone(),
            }),
        };
        let args = AuthArgs {
            account_identifier: a.account.clone(),
            warehouse: a.warehouse.clone(),
            database: Some(a.database.clone()),
            schema: None,
            username: a.user.clone(),
            role: a.role.clone(),
            auth_type,
        };
        let (client, tokens) = tokens::client(self.client.as_ref(), &self.timeouts).map_err(|e| Error::Connector {
            connector: "snowflake",
            message: format!("table `{table}`: cannot build the HTTP client: {e}"),
            retryable: false,
        })?;
        let api = SnowflakeApiBuilder::new(args)
            .with_client(client)
            .build()
            .map_err(|e| sf_err(table, e))?;
        Ok(Session {
            api,
            table: table.to_string(),
            host: format!("{}.snowflakecomputing.com", a.account),
            tokens,
        })
    }

    fn checkpoint_where(&self, pipeline: &str, table: &str) -> String {
        format!(
            "pipeline = {} AND table_name = {}",
            SF.string_literal(pipeline),
            SF.string_literal(table)
        )
    }

    async fn load_checkpoint(&self, db: &Session, pipeline: &str, table: &str) -> Result<Option<Checkpoint>> {
        let exists = db
            .count(&format!(
                "SELECT count(*) FROM information_schema.tables WHERE table_schema = {} AND table_name = {}",
                SF.string_literal(&self.schema),
                SF.string_literal(CHECKPOINTS)
            ))
            .await?;
        if exists == 0 {
            return Ok(None);
        }
        let text = db
            .text(&format!(
                "SELECT checkpoint FROM {} WHERE {}",
                self.qualified(CHECKPOINTS),
                self.checkpoint_where(pipeline, table)
            ))
            .await?;
        text.map(|t| {
            serde_json::from_str::<Checkpoint>(&t).map_err(|e| Error::Metadata {
                path: format!("{} ({pipeline}, {table})", self.qualified(CHECKPOINTS)),
                message: e.to_string(),
            })
        })
        .transpose()
    }
}

/// Whether a failed call may succeed if tried again: the network (a timeout, a refused or
/// dropped connection, a server error), never an answer that does not decode or a refusal.
fn transient(e: &SnowflakeApiError) -> bool {
    use snowflake_api::connection::ConnectionError as C;
    let http = |e: &reqwest::Error| {
        e.is_timeout() || e.is_connect() || e.is_request() || e.status().is_some_and(|s| s.is_server_error())
    };
    let connection = |c: &C| match c {
        C::RequestError(e) => http(e),
        C::RequestMiddlewareError(reqwest_middleware::Error::Reqwest(e)) => http(e),
        _ => false,
    };
    match e {
        SnowflakeApiError::RequestError(c) => connection(c),
        // A login's own error type is private: a failure of the connection underneath shows
        // as an I/O error in its sources.
        SnowflakeApiError::AuthError(a) => {
            let mut source = std::error::Error::source(a);
            while let Some(s) = source {
                if s.is::<std::io::Error>() {
                    return true;
                }
                source = s.source();
            }
            false
        }
        _ => false,
    }
}

fn sf_err(table: &str, e: SnowflakeApiError) -> Error {
    let retryable = transient(&e);
    Error::Connector {
        connector: "snowflake",
        message: format!("table `{table}`: {e}"),
        retryable,
    }
}

/// One logged-in session; statements' errors name the table.
struct Session {
    api: SnowflakeApi,
    table: String,
    /// The account's host, for messages.
    host: String,
    /// The client's middleware: it knows whether a failed call timed out.
    tokens: std::sync::Arc<tokens::SessionTokens>,
}

/// What a statement returned.
enum Rows {
    Json(serde_json::Value),
    Arrow(Vec<RecordBatch>),
    Empty,
}

impl Session {
    async fn run(&self, sql: &str) -> Result<Rows> {
        let raw = self
            .api
            .exec_raw(sql)
            .await
            .map_err(|e| match self.tokens.timed_out() {
                Some((phase, after)) => Error::Timeout {
                    connector: "snowflake",
                    host: self.host.clone(),
                    phase: phase.to_string(),
                    after,
                },
                None => sf_err(&self.table, e),
            })?;
        Ok(match raw {
            RawQueryResult::Json(j) => Rows::Json(j.value),
            RawQueryResult::Empty => Rows::Empty,
            // Arrow IPC streams, read with this workspace's arrow (the API's own arrow is
            // another version: its types never cross).
            RawQueryResult::Bytes(chunks) => {
                let mut batches = Vec::new();
                for c in chunks {
                    let reader = arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(c), None)
                        .map_err(|e| Error::arrow(&self.table, e))?;
                    for b in reader {
                        batches.push(b.map_err(|e| Error::arrow(&self.table, e))?);
                    }
                }
                Rows::Arrow(batches)
            }
        })
    }

    async fn batch(&self, sql: &str) -> Result<()> {
        self.run(sql).await.map(|_| ())
    }

    /// The first cell as text (`None` without rows).
    async fn text(&self, sql: &str) -> Result<Option<String>> {
        Ok(match self.run(sql).await? {
            Rows::Json(v) => v.get(0).and_then(|r| r.get(0)).and_then(|c| match c {
                serde_json::Value::Null => None,
                serde_json::Value::String(s) => Some(s.clone()),
                other => Some(other.to_string()),
            }),
            Rows::Arrow(b) => match b.iter().find(|b| b.num_rows() > 0) {
                Some(b) if b.column(0).is_valid(0) => Some(
                    arrow::util::display::array_value_to_string(b.column(0), 0)
                        .map_err(|e| Error::arrow(&self.table, e))?,
                ),
                _ => None,
            },
            Rows::Empty => None,
        })
    }

    /// The first cell as a count: a `SELECT count(*)`, or the rows a DML statement touched.
    async fn count(&self, sql: &str) -> Result<u64> {
        let text = self.text(sql).await?.unwrap_or_else(|| "0".into());
        text.trim()
            .parse::<f64>()
            .map(|n| n as u64)
            .map_err(|_| Error::Connector {
                connector: "snowflake",
                message: format!("table `{}`: expected a count, got `{text}`", self.table),
                retryable: false,
            })
    }
}

#[async_trait]
impl Sink for SnowflakeSink {
    fn name(&self) -> &str {
        "snowflake"
    }

    fn check_mode(&self, _spec: &TableSpec, _mode: LoadMode) -> Result<()> {
        Ok(())
    }

    async fn last_checkpoint(&self, pipeline: &str, spec: &TableSpec) -> Result<Option<Checkpoint>> {
        let db = self.connect(&spec.name)?;
        self.load_checkpoint(&db, pipeline, &spec.name).await
    }

    async fn begin(&self, req: WriteRequest<'_>) -> Result<Box<dyn TableWriter>> {
        let spec = req.spec;
        let db = self.connect(&spec.name)?;
        let current = self.load_checkpoint(&db, req.pipeline, &spec.name).await?;
        if current.as_ref().map(|c| c.run_id.as_str()) != req.last_checkpoint {
            return Err(Error::ConcurrentRun {
                pipeline: req.pipeline.to_string(),
                table: spec.name.clone(),
            });
        }
        let date = chrono::Utc::now().format("%Y-%m-%d");
        let prefix = format!("{}/{}/{}/{date}/{}", req.pipeline, self.schema, spec.target, req.run_id);
        let scratch = |kind: &str| {
            let mut name = format!("_etl_{kind}_{}_{}", req.run_id, spec.target);
            name.truncate(200);
            self.qualified(&name)
        };
        Ok(Box::new(SfWriter {
            sink: self.clone(),
            db,
            pipeline: req.pipeline.to_string(),
            spec: spec.clone(),
            mode: req.mode,
            last_checkpoint: req.last_checkpoint.map(str::to_string),
            stage_table: scratch("stage"),
            latest_table: scratch("latest"),
            files_stage: scratch("files"),
            stage: ParquetStage::new(self.staging.clone(), prefix, &spec.name, SF),
        }))
    }
}

struct SfWriter {
    sink: SnowflakeSink,
    db: Session,
    pipeline: String,
    spec: TableSpec,
    mode: LoadMode,
    last_checkpoint: Option<String>,
    stage_table: String,
    latest_table: String,
    files_stage: String,
    stage: ParquetStage,
}

impl SfWriter {
    fn statements(&self) -> Statements<'_> {
        Statements {
            dialect: SF,
            spec: &self.spec,
            target: self.sink.qualified(&self.spec.target),
            stage: self.stage_table.clone(),
            latest: self.latest_table.clone(),
            fields: self
                .stage
                .columns()
                .map(|s| s.fields().iter().map(|f| f.as_ref().clone()).collect())
                .unwrap_or_default(),
        }
    }

    async fn target_exists(&self) -> Result<bool> {
        let n = self
            .db
            .count(&format!(
                "SELECT count(*) FROM information_schema.tables WHERE table_schema = {} AND table_name = {}",
                SF.string_literal(&self.sink.schema),
                SF.string_literal(&self.spec.target)
            ))
            .await?;
        Ok(n > 0)
    }

    /// Creates the target, or adds the columns it lacks (refusing an incompatible one).
    async fn prepare_target(&self, st: &Statements<'_>) -> Result<()> {
        if !self.target_exists().await? {
            return self.db.batch(&st.create_table(&st.target, &[])?).await;
        }
        let rows = self
            .db
            .run(&format!(
                "SELECT column_name, data_type, numeric_precision, numeric_scale FROM information_schema.columns \
                 WHERE table_schema = {} AND table_name = {}",
                SF.string_literal(&self.sink.schema),
                SF.string_literal(&self.spec.target)
            ))
            .await?;
        let existing = existing_columns(&self.spec.name, rows)?;
        let fields = self.stage.columns().expect("columns").fields();
        for alter in sql::add_columns(SF, &self.spec.name, &st.target, &existing, fields)? {
            self.db.batch(&alter).await?;
        }
        Ok(())
    }

    /// The stage over this run's files.
    fn files_from(&self) -> String {
        let path = self.stage.prefix();
        match &self.sink.stage {
            SnowflakeStage::Named(name) => format!("@{name}/{path}/"),
            _ => format!("@{}", self.files_stage),
        }
    }

    /// DDL and loading, before the transaction.
    async fn load(&self, st: &Statements<'_>) -> Result<()> {
        self.prepare_target(st).await?;
        self.db.batch(&st.create_stage()?).await?;
        let url = |base: &str| format!("{}/{}/", base.trim_end_matches('/'), self.stage.prefix());
        let temp_stage = match &self.sink.stage {
            SnowflakeStage::Named(_) => None,
            SnowflakeStage::Integration { url: base, integration } => Some(format!(
                "URL={} STORAGE_INTEGRATION = {}",
                SF.string_literal(&url(base)),
                SF.quote(integration)
            )),
            SnowflakeStage::Url(base) => Some(format!("URL={}", SF.string_literal(&url(base)))),
        };
        if let Some(at) = temp_stage {
            self.db
                .batch(&format!(
                    "CREATE OR REPLACE TEMPORARY STAGE {} {at} FILE_FORMAT=(TYPE=PARQUET)",
                    self.files_stage
                ))
                .await?;
        }
        self.db.batch(&st.copy_into(&self.files_from())).await?;
        if self.mode == LoadMode::Upsert {
            let nulls = self.db.count(&st.null_keys()).await?;
            if nulls > 0 {
                return Err(sql::null_key_error(
                    "snowflake",
                    &self.spec.name,
                    nulls,
                    &self.spec.primary_key,
                ));
            }
            self.db.batch(&st.collapse()).await?;
        }
        Ok(())
    }

    /// The checkpoint's compare-and-swap, in the transaction.
    async fn store_checkpoint(&self, cp: &Checkpoint) -> Result<()> {
        let json = serde_json::to_string(cp).map_err(|e| Error::config(e.to_string()))?;
        let lit = |s: &str| SF.string_literal(s);
        let table = self.sink.qualified(CHECKPOINTS);
        let at = self.sink.checkpoint_where(&self.pipeline, &self.spec.name);
        let sql = match &self.last_checkpoint {
            None => format!(
                "INSERT INTO {table} (pipeline, table_name, run_id, checkpoint, committed_at) \
                 SELECT {}, {}, {}, {}, CURRENT_TIMESTAMP() WHERE NOT EXISTS (SELECT 1 FROM {table} WHERE {at})",
                lit(&self.pipeline),
                lit(&self.spec.name),
                lit(&cp.run_id),
                lit(&json)
            ),
            Some(last) => format!(
                "UPDATE {table} SET run_id = {}, checkpoint = {}, committed_at = CURRENT_TIMESTAMP() \
                 WHERE {at} AND run_id = {}",
                lit(&cp.run_id),
                lit(&json),
                lit(last)
            ),
        };
        if self.db.count(&sql).await? == 1 {
            Ok(())
        } else {
            Err(Error::ConcurrentRun {
                pipeline: self.pipeline.clone(),
                table: self.spec.name.clone(),
            })
        }
    }

    /// The mode's DML; returns inserted, updated, deleted, collapsed.
    async fn apply(&self, st: &Statements<'_>) -> Result<(u64, u64, u64, u64)> {
        let rows = self.stage.rows();
        Ok(match self.mode {
            LoadMode::Full | LoadMode::TruncateInsert => {
                let deleted = self.db.count(&st.delete_all()).await?;
                (
                    self.db.count(&st.insert_all(&st.target, &st.stage)).await?,
                    0,
                    deleted,
                    0,
                )
            }
            LoadMode::Upsert => {
                let latest = self.db.count(&format!("SELECT count(*) FROM {}", st.latest)).await?;
                let (mut deleted, mut dropped) = (0, 0);
                if let Some([target, staged]) = st.soft_delete()? {
                    deleted = self.db.count(&target).await?;
                    dropped = self.db.count(&staged).await?;
                }
                let live = latest - dropped;
                let updated = match self.spec.merge {
                    MergeStrategy::InsertOnly => 0,
                    _ => self.db.count(&st.matching()).await?,
                };
                let mut last = 0;
                for s in st.merge() {
                    last = self.db.count(&s).await?;
                }
                let inserted = match self.spec.merge {
                    MergeStrategy::InsertOnly => last,
                    _ => live - updated,
                };
                (inserted, updated, deleted, rows - latest)
            }
            _ => (self.db.count(&st.insert_all(&st.target, &st.stage)).await?, 0, 0, 0),
        })
    }

    async fn commit_in(&self, cp: &Checkpoint) -> Result<CommitSummary> {
        let st = self.statements();
        self.db
            .batch(&format!("CREATE SCHEMA IF NOT EXISTS {}", SF.quote(&self.sink.schema)))
            .await?;
        self.db
            .batch(&format!(
                "CREATE TABLE IF NOT EXISTS {} (pipeline VARCHAR NOT NULL, table_name VARCHAR NOT NULL, \
                 run_id VARCHAR NOT NULL, checkpoint VARCHAR NOT NULL, committed_at TIMESTAMP_TZ NOT NULL)",
                self.sink.qualified(CHECKPOINTS)
            ))
            .await?;
        let loaded = self.stage.columns().is_some();
        if loaded {
            self.load(&st).await?;
        }
        self.db.batch("BEGIN TRANSACTION").await?;
        self.store_checkpoint(cp).await?;
        // After a load the target exists (it is created when missing).
        let exists = loaded || self.target_exists().await?;
        let (inserted, updated, deleted, collapsed) = if loaded {
            self.apply(&st).await?
        } else if matches!(self.mode, LoadMode::Full | LoadMode::TruncateInsert) && exists {
            // Nothing was read: a FULL or TRUNCATE_INSERT empties an existing target.
            (0, 0, self.db.count(&st.delete_all()).await?, 0)
        } else {
            (0, 0, 0, 0)
        };
        let target_rows = if exists {
            Some(self.db.count(&format!("SELECT count(*) FROM {}", st.target)).await?)
        } else {
            None
        };
        self.db.batch("COMMIT").await?;
        Ok(CommitSummary {
            target_rows,
            inserted,
            updated,
            deleted,
            collapsed,
        })
    }

    /// Drops the run's staging tables and deletes its files (best effort: logged).
    async fn clean_up(&self) {
        for t in [&self.stage_table, &self.latest_table] {
            if let Err(e) = self.db.batch(&format!("DROP TABLE IF EXISTS {t}")).await {
                tracing::warn!(table = %self.spec.name, scratch = %t, error = %e, "a staging table was not dropped");
            }
        }
        self.stage.remove().await;
    }
}

/// (name, type) of the target's columns from `information_schema.columns`, the type as
/// [`sql::column_type`] names it (`number(p,s)`).
fn existing_columns(table: &str, rows: Rows) -> Result<Vec<(String, String)>> {
    let cell = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Null => None,
        other => Some(other.to_string()),
    };
    let mut out = Vec::new();
    let mut push = |name: String, ty: String, p: Option<String>, s: Option<String>| {
        let ty = match (ty.to_ascii_lowercase().as_str(), p, s) {
            ("number", Some(p), Some(s)) => format!("number({p},{s})"),
            (t, _, _) => t.to_string(),
        };
        out.push((name, ty));
    };
    match rows {
        Rows::Json(v) => {
            for r in v.as_array().into_iter().flatten() {
                let at = |i: usize| r.get(i).and_then(cell);
                push(at(0).unwrap_or_default(), at(1).unwrap_or_default(), at(2), at(3));
            }
        }
        Rows::Arrow(batches) => {
            for b in batches {
                for i in 0..b.num_rows() {
                    let at = |c: usize| {
                        let col = b.column(c);
                        col.is_valid(i)
                            .then(|| arrow::util::display::array_value_to_string(col, i))
                            .transpose()
                            .map_err(|e| Error::arrow(table, e))
                    };
                    push(at(0)?.unwrap_or_default(), at(1)?.unwrap_or_default(), at(2)?, at(3)?);
                }
            }
        }
        Rows::Empty => {}
    }
    Ok(out)
}

#[async_trait]
impl TableWriter for SfWriter {
    async fn write(&mut self, batch: RecordBatch) -> Result<()> {
        self.stage.write(&batch).await
    }

    async fn stage(&mut self) -> Result<StageSummary> {
        self.stage.finish().await
    }

    async fn commit(self: Box<Self>, checkpoint: Checkpoint) -> Result<CommitSummary> {
        let result = self.commit_in(&checkpoint).await;
        if result.is_err() {
            let _ = self.db.batch("ROLLBACK").await;
        }
        self.clean_up().await;
        result
    }

    async fn abort(self: Box<Self>) -> Result<()> {
        self.clean_up().await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::Field;

    #[test]
    fn upsert_statements_in_snowflake() {
        let spec = TableSpec::new("customers")
            .primary_key(["customer_id"])
            .cursor(["updated_at"])
            .merge_strategy(MergeStrategy::UpdateInsert);
        let st = Statements {
            dialect: SF,
            spec: &spec,
            target: r#""crm"."customers""#.into(),
            stage: r#""crm"."_etl_stage_r1_customers""#.into(),
            latest: r#""crm"."_etl_latest_r1_customers""#.into(),
            fields: vec![
                Field::new("customer_id", arrow::datatypes::DataType::Int64, false),
                Field::new("email", arrow::datatypes::DataType::Utf8, true),
                Field::new(
                    "updated_at",
                    arrow::datatypes::DataType::Timestamp(arrow::datatypes::TimeUnit::Microsecond, None),
                    true,
                ),
            ],
        };
        assert_eq!(
            st.create_stage().unwrap(),
            r#"CREATE OR REPLACE TRANSIENT TABLE "crm"."_etl_stage_r1_customers" ("customer_id" number(38,0), "email" varchar, "updated_at" timestamp_ntz, "_etl_seq" number(38,0))"#
        );
        assert_eq!(
            st.copy_into(r#"@"crm"."_etl_files_r1_customers""#),
            r#"COPY INTO "crm"."_etl_stage_r1_customers" FROM @"crm"."_etl_files_r1_customers" FILE_FORMAT=(TYPE=PARQUET) MATCH_BY_COLUMN_NAME=CASE_INSENSITIVE"#
        );
        assert_eq!(
            st.merge(),
            [
                r#"UPDATE "crm"."customers" AS t SET "email" = s."email", "updated_at" = s."updated_at" FROM "crm"."_etl_latest_r1_customers" AS s WHERE t."customer_id" = s."customer_id""#,
                r#"INSERT INTO "crm"."customers" ("customer_id", "email", "updated_at") SELECT "customer_id", "email", "updated_at" FROM "crm"."_etl_latest_r1_customers" s WHERE NOT EXISTS (SELECT 1 FROM "crm"."customers" WHERE "crm"."customers"."customer_id" = s."customer_id")"#
            ]
        );
        assert_eq!(
            SF.string_literal(r#"{"a":"it's \"q\" \\"}"#),
            r#"'{"a":"it''s \\"q\\" \\\\"}'"#
        );
    }
}
