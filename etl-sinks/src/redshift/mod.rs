//! Amazon Redshift as a sink: the run's rows staged as Parquet files on S3 (through
//! `object_store`), then in one serializable transaction `COPY … FORMAT AS PARQUET` into a
//! temporary staging table, the mode's statements and the run's checkpoint; the staged files
//! are removed after the commit (and after a failed one).
//!
//! # Modes
//! - `FULL`: a new table built aside and swapped in for the target (`DROP` + `ALTER … RENAME`)
//!   in the transaction: readers never see it empty or half filled; a failed run leaves the
//!   old table whole.
//! - `TRUNCATE_INSERT`: `DELETE` and `INSERT` in the transaction (Redshift's `TRUNCATE`
//!   commits by itself, so it is not used); the table keeps its definition and grants.
//! - `APPEND`, `INCREMENTAL`: `INSERT` of the staged rows.
//! - `UPSERT`: the staged rows collapsed to the latest per primary key (by cursor, then by
//!   arrival: each staged row carries its arrival number `_etl_seq`, since Redshift has no
//!   row address), soft deletes, then the spec's [`MergeStrategy`]: `MERGE`
//!   (update-and-insert), `DELETE … USING` + `INSERT` (delete-and-insert), or `INSERT … WHERE
//!   NOT EXISTS` (insert-only). A NULL key is an error naming how many rows have one.
//!
//! A missing target is created (`varchar(65535)` for text, `numeric(p,s)`, `timestamp` and
//! `timestamptz`, the spec's primary key as Redshift's informational constraint); a new source
//! column is added to it; a column the target cannot hold is an error naming table, column and
//! both types. The checkpoint lives in `<schema>._etl_checkpoints` (a `varchar(65535)` JSON
//! document, so a file source's checkpoint must stay under 64 KiB).
//!
//! # Without Redshift
//! [`RedshiftLoad::PostgresStandIn`] runs the same statements on PostgreSQL (15+ for `MERGE`),
//! loading the staging table by `COPY … FROM STDIN` of the very Parquet files staged for
//! Redshift: how the tests exercise every mode, and a way to try a pipeline locally.
//!
//! [`MergeStrategy`]: etl_core::MergeStrategy

use std::fmt;

use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use bytes::BytesMut;
use etl_connectors::postgres::{PgClient, PgConfig};
use etl_core::kit::sql::Dialect;
use etl_core::{
    Checkpoint, CommitSummary, Error, LoadMode, Location, Result, Sink, StageSummary, TableSpec, TableWriter,
    WriteRequest,
};
use futures::{SinkExt, TryStreamExt};

use crate::checkpoints::Checkpoints;
use crate::postgres::encode;
use crate::sql;
use crate::stage::ParquetStage;
use crate::statements::{CopyAuth, LATEST, STAGE, Statements};

const RS: Dialect = Dialect::Redshift;

/// How the staging table is loaded from the staged files.
#[derive(Clone)]
pub enum RedshiftLoad {
    /// `COPY … IAM_ROLE '<arn>'`: the cluster's role reads the bucket (recommended).
    IamRole(String),
    /// `COPY … ACCESS_KEY_ID … SECRET_ACCESS_KEY … [SESSION_TOKEN …]`.
    AccessKeys {
        /// The access key id.
        id: String,
        /// The secret access key (never printed).
        secret: String,
        /// A session token, for temporary credentials (never printed).
        token: Option<String>,
    },
    /// PostgreSQL standing in for Redshift: the staged files are read back and sent by `COPY
    /// … FROM STDIN`; every other statement is the one Redshift gets.
    PostgresStandIn,
}

impl fmt::Debug for RedshiftLoad {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RedshiftLoad::IamRole(arn) => f.debug_tuple("IamRole").field(arn).finish(),
            RedshiftLoad::AccessKeys { id, token, .. } => f
                .debug_struct("AccessKeys")
                .field("id", id)
                .field("secret", &"<redacted>")
                .field("token", &token.as_ref().map(|_| "<redacted>"))
                .finish(),
            RedshiftLoad::PostgresStandIn => f.write_str("PostgresStandIn"),
        }
    }
}

/// Writes tables of one Redshift schema, staging Parquet under a location Redshift reads.
///
/// ```no_run
/// # async fn demo() -> etl_core::Result<()> {
/// use etl_core::{LoadMode, Location, MemorySource, ObjectStoreWatermarkStore, Pipeline, TableSpec};
/// use etl_sinks::redshift::{RedshiftLoad, RedshiftSink};
///
/// // With the `s3` feature: `Location::s3("my-bucket", "etl-staging", None)?`.
/// let staging = Location::local("/mnt/my-bucket/etl-staging")?;
/// let sink = RedshiftSink::new(
///     "host=cluster.abc.eu-west-1.redshift.amazonaws.com port=5439 user=etl dbname=dw sslmode=require",
///     staging,
///     RedshiftLoad::IamRole("arn:aws:iam::123456789012:role/redshift-copy".into()),
/// )?
/// .with_staging_url("s3://my-bucket/etl-staging")
/// .with_schema("analytics");
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
pub struct RedshiftSink {
    pg: PgConfig,
    schema: String,
    staging: Location,
    staging_url: String,
    load: RedshiftLoad,
}

impl fmt::Debug for RedshiftSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedshiftSink")
            .field("pg", &self.pg)
            .field("schema", &self.schema)
            .field("staging_url", &self.staging_url)
            .field("load", &self.load)
            .finish()
    }
}

impl RedshiftSink {
    /// A sink writing into schema `public` of the database of a connection string (see
    /// [`PgConfig`]; Redshift wants `sslmode=require` and the `tls` feature), staging files
    /// under `staging` (an S3 location: Redshift reads it at its `s3://bucket/prefix` URL).
    ///
    /// # Errors
    /// [`Error::Config`] when the string does not parse.
    pub fn new(conn: &str, staging: Location, load: RedshiftLoad) -> Result<Self> {
        Ok(RedshiftSink {
            pg: PgConfig::new(conn)?,
            schema: "public".to_string(),
            staging_url: staging.url().trim_end_matches('/').to_string(),
            staging,
            load,
        })
    }

    /// The URL Redshift reads the staging location at, when it is not the location's own
    /// (`s3://bucket/prefix`).
    pub fn with_staging_url(mut self, url: impl Into<String>) -> Self {
        self.staging_url = url.into().trim_end_matches('/').to_string();
        self
    }

    /// Writes into `schema` (created when missing).
    pub fn with_schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }

    /// Trusts the PEM certificates of `path` for `sslmode=require` (see [`PgConfig`]).
    pub fn with_root_certificate(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.pg = self.pg.with_root_certificate(path);
        self
    }

    /// How long to wait for the cluster (default [`etl_core::Timeouts::default`]; raise
    /// `answer` for a `COPY` or `MERGE` that runs longer than an hour).
    pub fn with_timeouts(mut self, timeouts: etl_core::Timeouts) -> Self {
        self.pg = self.pg.with_timeouts(timeouts);
        self
    }

    fn qualified(&self, table: &str) -> String {
        format!("{}.{}", RS.quote(&self.schema), RS.quote(table))
    }

    fn checkpoints(&self) -> Checkpoints {
        Checkpoints::new(RS, &self.schema)
    }
}

#[async_trait]
impl Sink for RedshiftSink {
    fn name(&self) -> &str {
        "redshift"
    }

    fn check_mode(&self, _spec: &TableSpec, _mode: LoadMode) -> Result<()> {
        Ok(())
    }

    async fn last_checkpoint(&self, pipeline: &str, spec: &TableSpec) -> Result<Option<Checkpoint>> {
        let client = self.pg.connect(&spec.name).await?;
        self.checkpoints().load(&client, pipeline, &spec.name).await
    }

    async fn begin(&self, req: WriteRequest<'_>) -> Result<Box<dyn TableWriter>> {
        let spec = req.spec;
        let db = self.pg.connect(&spec.name).await?;
        self.checkpoints()
            .check_not_overtaken(&db, req.pipeline, &spec.name, req.last_checkpoint)
            .await?;
        let prefix = format!("_etl/redshift/{}/{}/{}", req.pipeline, spec.target, req.run_id);
        Ok(Box::new(RsWriter {
            sink: self.clone(),
            db,
            pipeline: req.pipeline.to_string(),
            spec: spec.clone(),
            mode: req.mode,
            last_checkpoint: req.last_checkpoint.map(str::to_string),
            run_id: req.run_id.to_string(),
            stage: ParquetStage::new(self.staging.clone(), prefix, &spec.name, RS),
        }))
    }
}

struct RsWriter {
    sink: RedshiftSink,
    db: PgClient,
    pipeline: String,
    spec: TableSpec,
    mode: LoadMode,
    last_checkpoint: Option<String>,
    run_id: String,
    stage: ParquetStage,
}

impl RsWriter {
    fn statements(&self) -> Statements<'_> {
        Statements {
            dialect: RS,
            spec: &self.spec,
            stage: STAGE.into(),
            latest: LATEST.into(),
            target: self.sink.qualified(&self.spec.target),
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
            .call(self.db.query_one(
                "SELECT count(*) FROM information_schema.tables WHERE table_schema = $1 AND table_name = $2",
                &[&self.sink.schema, &self.spec.target],
            ))
            .await?
            .try_get::<_, i64>(0)
            .map_err(self.db.err())?;
        Ok(n > 0)
    }

    /// Loads the staged files into the staging table.
    async fn load_stage(&self) -> Result<()> {
        let url = format!("{}/{}/", self.sink.staging_url, self.stage.prefix());
        let auth = match &self.sink.load {
            RedshiftLoad::IamRole(arn) => CopyAuth::IamRole(arn.clone()),
            RedshiftLoad::AccessKeys { id, secret, token } => CopyAuth::Keys {
                id: id.clone(),
                secret: secret.clone(),
                token: token.clone(),
            },
            RedshiftLoad::PostgresStandIn => return self.load_stage_from_files().await,
        };
        // The statement carries credentials: it is never logged.
        self.db.exec(&self.statements().copy(&url, &auth)).await.map(|_| ())
    }

    /// The stand-in's load: the staged Parquet read back and sent by binary `COPY`.
    async fn load_stage_from_files(&self) -> Result<()> {
        use parquet::arrow::async_reader::ParquetRecordBatchStreamBuilder;
        let copy = self
            .db
            .call(
                self.db
                    .copy_in::<_, bytes::Bytes>(&format!("COPY {STAGE} FROM STDIN (FORMAT binary)")),
            )
            .await?;
        let mut copy = std::pin::pin!(copy);
        let mut buf = BytesMut::new();
        encode::header(&mut buf);
        let store = self.stage.location().store();
        let read_err = |e: parquet::errors::ParquetError| Error::Connector {
            connector: "redshift",
            message: format!("table `{}`: reading back staged Parquet: {e}", self.spec.name),
            retryable: false,
        };
        for meta in self.stage.files() {
            let reader = etl_core::lake::parquet::ObjectReader::new(store.clone(), meta.clone());
            let mut batches = ParquetRecordBatchStreamBuilder::new(reader)
                .await
                .map_err(read_err)?
                .build()
                .map_err(read_err)?;
            while let Some(b) = batches.try_next().await.map_err(read_err)? {
                encode::rows(&self.spec.name, &b, &mut buf)?;
                self.db.call(copy.send(buf.split().freeze())).await?;
            }
        }
        encode::trailer(&mut buf);
        self.db.call(copy.send(buf.split().freeze())).await?;
        self.db.call(copy.as_mut().finish()).await?;
        Ok(())
    }

    /// Adds source columns the target lacks; refuses a column whose type the target cannot
    /// hold.
    async fn evolve(&self) -> Result<()> {
        let existing: Vec<(String, String)> = self
            .db
            .query(
                "SELECT column_name::varchar, data_type::varchar, numeric_precision::int, numeric_scale::int
                   FROM information_schema.columns WHERE table_schema = $1 AND table_name = $2",
                &[&self.sink.schema, &self.spec.target],
            )
            .await
            .map_err(self.db.err())?
            .iter()
            .map(|r| {
                let have = match (
                    r.try_get::<_, &str>(1)?,
                    r.try_get::<_, Option<i32>>(2)?,
                    r.try_get::<_, Option<i32>>(3)?,
                ) {
                    ("numeric", Some(p), Some(s)) => format!("numeric({p},{s})"),
                    (t, _, _) => t.to_string(),
                };
                Ok((r.try_get(0)?, have))
            })
            .collect::<std::result::Result<_, tokio_postgres::Error>>()
            .map_err(self.db.err())?;
        let target = self.sink.qualified(&self.spec.target);
        let fields = self.stage.columns().expect("columns").fields();
        for alter in sql::add_columns(RS, &self.spec.name, &target, &existing, fields)? {
            self.db.exec(&alter).await?;
        }
        Ok(())
    }

    /// The mode's statements on a loaded staging table; returns inserted, updated, deleted,
    /// collapsed.
    async fn apply(&self) -> Result<(u64, u64, u64, u64)> {
        let st = self.statements();
        let rows = self.stage.rows();
        let exists = self.target_exists().await?;
        if self.mode == LoadMode::Full {
            let mut aside = format!("_etl_new_{}_{}", self.run_id, self.spec.target);
            while aside.len() > 63 {
                aside.pop();
            }
            let aside = self.sink.qualified(&aside);
            self.db.exec(&st.create_table(&aside, &[])?).await?;
            self.db.exec(&st.insert_all(&aside, STAGE)).await?;
            let deleted = if exists {
                self.db.count(&format!("SELECT count(*) FROM {}", st.target)).await?
            } else {
                0
            };
            for s in st.swap(&aside, exists) {
                self.db.exec(&s).await?;
            }
            return Ok((rows, 0, deleted, 0));
        }
        if exists {
            self.evolve().await?;
        } else {
            let key: &[String] = if self.mode == LoadMode::Upsert {
                &self.spec.primary_key
            } else {
                &[]
            };
            self.db.exec(&st.create_table(&st.target, key)?).await?;
        }
        Ok(match self.mode {
            LoadMode::TruncateInsert => {
                let deleted = self.db.exec(&st.delete_all()).await?;
                (self.db.exec(&st.insert_all(&st.target, STAGE)).await?, 0, deleted, 0)
            }
            LoadMode::Upsert => {
                let nulls = self.db.count(&st.null_keys()).await?;
                if nulls > 0 {
                    return Err(sql::null_key_error(
                        "redshift",
                        self.db.table(),
                        nulls,
                        &self.spec.primary_key,
                    ));
                }
                self.db.exec(&st.collapse()).await?;
                let latest = self.db.count(&format!("SELECT count(*) FROM {LATEST}")).await?;
                let collapsed = rows - latest;
                let (mut deleted, mut dropped) = (0, 0);
                if let Some([target, staged]) = st.soft_delete()? {
                    deleted = self.db.exec(&target).await?;
                    dropped = self.db.exec(&staged).await?;
                }
                let live = latest - dropped;
                let updated = match self.spec.merge {
                    etl_core::MergeStrategy::InsertOnly => 0,
                    _ => self.db.count(&st.matching()).await?,
                };
                let mut inserted = 0;
                for s in st.merge() {
                    inserted = self.db.exec(&s).await?;
                }
                match self.spec.merge {
                    // The last statement inserted only new keys.
                    etl_core::MergeStrategy::InsertOnly => (inserted, 0, deleted, collapsed),
                    _ => (live - updated, updated, deleted, collapsed),
                }
            }
            _ => (self.db.exec(&st.insert_all(&st.target, STAGE)).await?, 0, 0, 0),
        })
    }

    async fn commit_in(&self, checkpoint: &Checkpoint) -> Result<CommitSummary> {
        let cp = self.sink.checkpoints();
        self.db
            .batch(&format!(
                "CREATE SCHEMA IF NOT EXISTS {}; {}",
                RS.quote(&self.sink.schema),
                cp.create()
            ))
            .await?;
        // Redshift runs every transaction serializable; Postgres standing in is told to.
        self.db.batch("BEGIN ISOLATION LEVEL SERIALIZABLE").await?;
        cp.store(
            &self.db,
            &self.pipeline,
            &self.spec.name,
            self.last_checkpoint.as_deref(),
            checkpoint,
        )
        .await?;
        // After a load the target exists (it is created when missing).
        let loaded = self.stage.columns().is_some();
        let exists = loaded || self.target_exists().await?;
        let (inserted, updated, deleted, collapsed) = if loaded {
            self.db.exec(&self.statements().create_stage()?).await?;
            self.load_stage().await?;
            self.apply().await?
        } else if matches!(self.mode, LoadMode::Full | LoadMode::TruncateInsert) && exists {
            // Nothing was read: a FULL or TRUNCATE_INSERT empties an existing target.
            (0, 0, self.db.exec(&self.statements().delete_all()).await?, 0)
        } else {
            (0, 0, 0, 0)
        };
        let target_rows = if exists {
            Some(
                self.db
                    .count(&format!(
                        "SELECT count(*) FROM {}",
                        self.sink.qualified(&self.spec.target)
                    ))
                    .await?,
            )
        } else {
            None
        };
        self.db.batch("COMMIT").await?;
        tracing::debug!(table = %self.spec.name, inserted, updated, deleted, collapsed, "redshift commit");
        Ok(CommitSummary {
            target_rows,
            inserted,
            updated,
            deleted,
            collapsed,
        })
    }
}

#[async_trait]
impl TableWriter for RsWriter {
    async fn write(&mut self, batch: RecordBatch) -> Result<()> {
        self.stage.write(&batch).await
    }

    async fn stage(&mut self) -> Result<StageSummary> {
        self.stage.finish().await
    }

    async fn commit(self: Box<Self>, checkpoint: Checkpoint) -> Result<CommitSummary> {
        let result = self.commit_in(&checkpoint).await;
        if result.is_err() {
            // Nothing of the run stays: its tables, rows and checkpoint go with the rollback.
            let _ = self.db.batch("ROLLBACK").await;
        }
        self.stage.remove().await;
        result
    }

    async fn abort(self: Box<Self>) -> Result<()> {
        self.stage.remove().await;
        Ok(())
    }
}
