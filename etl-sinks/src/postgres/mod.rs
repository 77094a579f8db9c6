//! PostgreSQL as a sink: Arrow encoded to binary `COPY … FROM STDIN` into an unlogged
//! staging table, then the mode's statements and the run's checkpoint in one transaction.
//!
//! # Modes
//! - `FULL`: the target is dropped and created again from the source's columns (with the
//!   spec's primary key) and filled, in one transaction: readers see the old table until the
//!   commit, and a failed run leaves it whole.
//! - `TRUNCATE_INSERT`: `TRUNCATE` and `INSERT` in one transaction; the table keeps its
//!   definition, indexes and grants.
//! - `APPEND`, `INCREMENTAL`: `INSERT` of the staged rows.
//! - `UPSERT`: the staged rows collapsed to the latest per primary key (by cursor, then by
//!   arrival; the report counts the collapsed ones), rows marked by the spec's soft-delete
//!   column deleting their key's target row, then the spec's [`MergeStrategy`]:
//!   update-and-insert (`INSERT … ON CONFLICT` on the key's unique index, or `MERGE` without
//!   one, Postgres 15+), delete-and-insert, or insert-only. A NULL key is an error naming how
//!   many rows have one.
//!
//! A missing target is created; a new source column is added to it; a column whose type the
//! target cannot hold is an error naming table, column and both types. The checkpoint lives in
//! `<schema>._etl_checkpoints`, written in the same transaction as the rows. When the
//! pipeline's watermark store is [`PostgresWatermarkStore`] of the same database and schema,
//! the run's watermark is written in that transaction too (and nowhere else); with any other
//! store the pipeline stores it, after the commit.

pub(crate) mod encode;
mod watermarks;

pub use watermarks::PostgresWatermarkStore;

use std::fmt;
use std::pin::Pin;

use arrow::datatypes::{Field, SchemaRef};
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use etl_connectors::postgres::{PgClient, PgConfig, pg_err};
use etl_core::kit::sql::Dialect;
use etl_core::{
    Checkpoint, CommitSummary, Error, LoadMode, MergeStrategy, Result, ShardSink, Sink, StageSummary, Staged,
    StagedWrite, TableSpec, TableWriter, TargetState, WatermarkStore, WriteRequest,
};
use futures::SinkExt;
use tokio_postgres::CopyInSink;
use tokio_postgres::error::SqlState;

use crate::warehouse::statements::Statements;
use crate::warehouse::{self, Checkpoints, Run, RunContext, Session, Target, checkpoints, create_table};

const PG: Dialect = Dialect::Postgres;
/// Bytes of encoded rows sent to the server at a time.
const SEND_BYTES: usize = 1 << 20;

/// Writes tables of one PostgreSQL schema.
///
/// ```no_run
/// # async fn demo() -> etl_core::Result<()> {
/// use etl_sinks::postgres::PostgresSink;
/// use etl_core::{LoadMode, Location, MemorySource, ObjectStoreWatermarkStore, Pipeline, TableSpec};
///
/// let pipeline = Pipeline::builder("crm")
///     .source(MemorySource::new())
///     .sink(PostgresSink::from_env("ETL_WAREHOUSE")?.with_schema("analytics"))
///     .watermarks(ObjectStoreWatermarkStore::new(Location::local("./state")?))
///     .table(TableSpec::new("customers").mode(LoadMode::Upsert).primary_key(["customer_id"]))
///     .build()?;
/// pipeline.run().await?.into_result()?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct PostgresSink {
    pg: PgConfig,
    schema: String,
}

impl fmt::Debug for PostgresSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresSink")
            .field("pg", &self.pg)
            .field("schema", &self.schema)
            .finish()
    }
}

impl PostgresSink {
    /// A sink writing into schema `public` of the database of a connection string (see
    /// [`PgConfig`] for its forms and TLS).
    ///
    /// # Errors
    /// [`Error::Config`] when the string does not parse.
    pub fn new(conn: &str) -> Result<Self> {
        Ok(PostgresSink {
            pg: PgConfig::new(conn)?,
            schema: "public".to_string(),
        })
    }

    /// A sink from the connection string in environment variable `var`.
    ///
    /// # Errors
    /// [`Error::Config`] when it is unset or invalid.
    pub fn from_env(var: &str) -> Result<Self> {
        Self::new(&Error::env(var)?)
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

    /// How long to wait for the server (default [`etl_core::Timeouts::default`]; raise
    /// `answer` for merges that run longer than an hour).
    pub fn with_timeouts(mut self, timeouts: etl_core::Timeouts) -> Self {
        self.pg = self.pg.with_timeouts(timeouts);
        self
    }

    /// A watermark store in this sink's schema. With it as the pipeline's store, the sink
    /// records each run's watermark in the run's own transaction, so target and watermark
    /// move together; with any other store the sink writes no watermark.
    pub fn watermark_store(&self) -> PostgresWatermarkStore {
        PostgresWatermarkStore::new(self.pg.clone(), self.schema.clone())
    }

    fn checkpoints(&self) -> Checkpoints {
        Checkpoints::new(PG, &self.schema, checkpoints::TABLE)
    }
}

#[async_trait]
impl Sink for PostgresSink {
    fn name(&self) -> &str {
        "postgres"
    }

    fn check_mode(&self, _spec: &TableSpec, _mode: LoadMode) -> Result<()> {
        Ok(())
    }

    async fn last_checkpoint(&self, pipeline: &str, spec: &TableSpec) -> Result<Option<Checkpoint>> {
        let client = self.pg.connect(&spec.name).await?;
        self.checkpoints().load(&client, pipeline, &spec.name).await
    }

    fn key_reader(&self) -> Option<&dyn etl_core::keys::KeyReader> {
        Some(self)
    }

    async fn delete_keys(&self, spec: &TableSpec, keys: &[i64]) -> Result<u64> {
        self.table_keys(spec).await?.delete(spec, keys).await
    }

    async fn target_state(&self, spec: &TableSpec) -> Result<TargetState> {
        let client = self.pg.connect(&spec.name).await?;
        Target::new(PG, &self.schema, &spec.target, false).state(&client).await
    }

    async fn begin(&self, req: WriteRequest<'_>) -> Result<Box<dyn TableWriter>> {
        let writer = self.writer(&req, None).await?;
        // Everything the run does is one transaction, from its first row to its checkpoint: a
        // run that fails or dies anywhere leaves nothing behind.
        writer.db.batch("BEGIN").await?;
        Ok(Box::new(writer))
    }

    fn shard_sink(&self) -> Option<&dyn ShardSink> {
        Some(self)
    }
}

impl PostgresSink {
    /// A writer for the run `req` on a connection of its own, once the sink's schema and
    /// checkpoint table (and watermark table) are there and no run has overtaken this one;
    /// `shard` names the durable table a shard copies into.
    async fn writer(&self, req: &WriteRequest<'_>, shard: Option<String>) -> Result<PgWriter> {
        let spec = req.spec;
        let db = self.pg.connect(&spec.name).await?;
        let target = Target::new(PG, &self.schema, &spec.target, false);
        // The watermark goes in with the rows only when the pipeline keeps its watermarks in
        // this sink's schema; otherwise the pipeline's store is the one place that holds it.
        let with_watermark =
            req.watermark_home.is_some() && req.watermark_home == self.watermark_store().home().as_deref();
        let mut setup = format!(
            "CREATE SCHEMA IF NOT EXISTS {}; {}",
            PG.quote(&self.schema),
            self.checkpoints().create(),
        );
        if with_watermark {
            setup.push_str(&format!("; {}", watermarks::create(&self.schema)));
        }
        if target.schema != self.schema {
            setup.push_str(&format!("; CREATE SCHEMA IF NOT EXISTS {}", PG.quote(&target.schema)));
        }
        // `IF NOT EXISTS` can still collide with a concurrent run creating the same object;
        // then it exists, and a second try finds it.
        if let Err(e) = db.timed(db.batch_execute(&setup)).await? {
            if e.code() != Some(&SqlState::UNIQUE_VIOLATION) {
                return Err(pg_err(&spec.name, e));
            }
            db.batch(&setup).await?;
        }
        // Fail early when another run committed since this one started.
        self.checkpoints()
            .check_not_overtaken(&db, req.pipeline, &spec.name, req.last_checkpoint)
            .await?;
        Ok(PgWriter {
            db,
            aside: target.scratch("new", req.run_id, 63),
            shard,
            cx: RunContext::new(req, target, self.checkpoints()),
            watermarks_in: with_watermark.then(|| self.schema.clone()),
            into: Dest::Stage,
            columns: None,
            copy: None,
            buf: BytesMut::new(),
            rows: 0,
            bytes: 0,
        })
    }
}

/// What a shard staged ([`etl_core::Staged::manifest`]): a table of its own beside the target.
#[derive(serde::Serialize, serde::Deserialize)]
struct StagedTable {
    table: String,
    rows: u64,
    columns: Vec<etl_core::lake::Column>,
}

/// A shard copies into an unlogged table of its own, committed as soon as it is staged; the
/// plan's commit moves every shard's rows into the run's staging table in one transaction
/// and applies the mode as a run's commit does, then drops the plan's shard tables.
#[async_trait]
impl ShardSink for PostgresSink {
    async fn begin_shard(&self, req: WriteRequest<'_>) -> Result<Box<dyn TableWriter>> {
        let target = Target::new(PG, &self.schema, &req.spec.target, false);
        let table = target.scratch("shard", req.run_id, 63);
        Ok(Box::new(self.writer(&req, Some(table)).await?))
    }

    async fn commit_shards(
        &self,
        req: WriteRequest<'_>,
        staged: Vec<serde_json::Value>,
        checkpoint: Checkpoint,
    ) -> Result<CommitSummary> {
        let name = &req.spec.name;
        let shards: Vec<StagedTable> = etl_core::shard::read_staged(req.run_id, staged)?;
        let mut writer = self.writer(&req, None).await?;
        let with_rows: Vec<&StagedTable> = shards.iter().filter(|s| s.rows > 0).collect();
        writer.db.batch("BEGIN").await?;
        let loaded = async {
            let columns =
                etl_core::shard::agreed_columns(name, req.run_id, with_rows.iter().map(|s| Some(s.columns.clone())))?;
            if let Some(columns) = columns {
                let schema: SchemaRef = std::sync::Arc::new(etl_core::lake::Column::schema(&columns, name)?);
                let into = writer.destination(&schema).await?;
                let cols = column_list(&schema);
                for s in &with_rows {
                    // In each shard's arrival order: the latest row of a key is the last copied.
                    writer
                        .db
                        .exec(&format!(
                            "INSERT INTO {into} ({cols}) SELECT {cols} FROM {} ORDER BY ctid",
                            s.table
                        ))
                        .await?;
                }
                writer.columns = Some(schema);
                writer.rows = with_rows.iter().map(|s| s.rows).sum();
            }
            Ok(())
        }
        .await;
        if let Err(e) = loaded {
            let _ = writer.db.batch("ROLLBACK").await;
            return Err(e);
        }
        let summary = warehouse::commit(&writer, &checkpoint).await?;
        // The plan's shard tables, those of attempts that never recorded a manifest too.
        // (`Target::scratch` of a shard's run id, `<plan>-<index>-<attempt>`.)
        let stem = format!("_etl_shard_{}_", req.run_id);
        let leftovers = writer
            .db
            .call(writer.db.query(
                "SELECT table_name::text FROM information_schema.tables WHERE table_schema = $1 \
                 AND starts_with(table_name::text, $2)",
                &[&writer.cx.target.schema, &stem],
            ))
            .await?;
        for row in leftovers {
            let table: String = row.try_get(0).map_err(writer.db.err())?;
            let drop = format!(
                "DROP TABLE IF EXISTS {}.{}",
                PG.quote(&writer.cx.target.schema),
                PG.quote(&table)
            );
            if let Err(e) = writer.db.batch(&drop).await {
                tracing::warn!(table = %table, error = %e, "a shard table was not dropped");
            }
        }
        Ok(CommitSummary {
            watermark_stored: writer.watermarks_in.is_some(),
            ..summary
        })
    }
}

/// Where a run's rows are copied to.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Dest {
    /// A temporary staging table, merged or inserted into the target at commit.
    Stage,
    /// A new table (FULL: swapped in for the target at commit).
    Aside,
    /// The target itself, created by this run's transaction.
    NewTarget,
}

const STAGE: &str = "_etl_stage";

struct PgWriter {
    db: PgClient,
    cx: RunContext,
    /// FULL's new table, beside the target.
    aside: String,
    /// A shard's table of its own, committed when staged ([`ShardSink::begin_shard`]).
    shard: Option<String>,
    /// The schema whose watermark table gets the run's watermark, when the pipeline keeps
    /// its watermarks there.
    watermarks_in: Option<String>,
    into: Dest,
    /// The copied columns (the first batch's schema).
    columns: Option<SchemaRef>,
    copy: Option<Pin<Box<CopyInSink<Bytes>>>>,
    buf: BytesMut,
    rows: u64,
    bytes: u64,
}

impl PgWriter {
    fn spec(&self) -> &TableSpec {
        &self.cx.spec
    }

    fn target(&self) -> &str {
        &self.cx.target.qualified
    }

    fn create(&self, table: &str, schema: &SchemaRef) -> Result<String> {
        let fields: Vec<&Field> = schema.fields().iter().map(|f| f.as_ref()).collect();
        create_table(PG, &self.spec().name, table, &fields, &[], false)
    }

    /// Chooses where the rows go, creates it, and opens the COPY into it.
    async fn open(&mut self, schema: SchemaRef) -> Result<()> {
        for f in schema.fields() {
            if !encode::writable(f.data_type()) {
                return Err(Error::ColumnTypeConflict {
                    table: self.spec().name.clone(),
                    column: f.name().clone(),
                    expected: "a type the Postgres sink writes".into(),
                    found: f.data_type().to_string(),
                });
            }
        }
        let table = match self.shard.clone() {
            Some(shard) => {
                let create = self
                    .create(&shard, &schema)?
                    .replacen("CREATE TABLE", "CREATE UNLOGGED TABLE", 1);
                self.db.exec(&create).await?;
                shard
            }
            None => self.destination(&schema).await?,
        };
        let cols = column_list(&schema);
        let copy = self
            .db
            .call(
                self.db
                    .copy_in(&format!("COPY {table} ({cols}) FROM STDIN (FORMAT binary)")),
            )
            .await?;
        self.copy = Some(Box::pin(copy));
        encode::header(&mut self.buf);
        self.columns = Some(schema);
        Ok(())
    }

    /// Chooses where the run's rows go (a staging table, FULL's new table, or a target this
    /// run creates), creates it in the run's transaction, and names it.
    async fn destination(&mut self, schema: &SchemaRef) -> Result<String> {
        self.into = if self.cx.mode == LoadMode::Full {
            Dest::Aside
        } else if !self.cx.target.exists(&self.db).await? {
            Dest::NewTarget
        } else {
            Dest::Stage
        };
        Ok(match self.into {
            Dest::Stage => {
                let create = self.create(STAGE, schema)?;
                let create = create.replacen("CREATE TABLE", "CREATE TEMP TABLE", 1) + " ON COMMIT DROP";
                self.db.exec(&create).await?;
                STAGE.to_string()
            }
            Dest::Aside => {
                self.db.exec(&self.create(&self.aside, schema)?).await?;
                self.aside.clone()
            }
            Dest::NewTarget => {
                self.db.exec(&self.create(self.target(), schema)?).await?;
                self.target().to_string()
            }
        })
    }

    async fn flush(&mut self) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = self.buf.split().freeze();
        self.bytes += chunk.len() as u64;
        let copy = self.copy.as_mut().expect("open");
        self.db.call(copy.send(chunk)).await
    }

    /// Adds source columns the target lacks; refuses a column whose type the target cannot
    /// hold.
    async fn evolve(&self, schema: &SchemaRef) -> Result<()> {
        let existing: Vec<(String, String)> = self
            .db
            .call(self.db.query(
                "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a
                  WHERE a.attrelid = $1::text::regclass AND a.attnum > 0 AND NOT a.attisdropped",
                &[&self.target()],
            ))
            .await?
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect::<std::result::Result<_, tokio_postgres::Error>>()
            .map_err(self.db.err())?;
        warehouse::evolve(self, PG, &existing, schema.fields(), false).await
    }

    /// The shared statements over `staged` (the staging table, or a new target), which is
    /// also where rows are collapsed in place.
    fn statements(&self, schema: &SchemaRef, staged: &str) -> Statements<'_> {
        Statements {
            dialect: PG,
            spec: self.spec(),
            target: self.target().to_string(),
            stage: staged.to_string(),
            latest: staged.to_string(),
            fields: schema.fields().iter().map(|f| f.as_ref().clone()).collect(),
            upper: false,
        }
    }

    /// Refuses rows whose primary key has a NULL in `table`.
    async fn check_keys(&self, table: &str) -> Result<()> {
        let schema = self.columns.clone().expect("columns");
        let nulls = self.db.count(&self.statements(&schema, table).null_keys()).await?;
        if nulls > 0 {
            return Err(Error::null_key(
                "postgres",
                self.db.table(),
                nulls,
                &self.spec().primary_key,
            ));
        }
        Ok(())
    }

    /// `ORDER BY` text putting the latest row of each key first: by cursor (NULLs oldest), then
    /// by arrival (a table filled by one COPY has its rows in arrival order).
    fn latest_first(&self) -> String {
        let mut order: Vec<String> = self.spec().primary_key.iter().map(|c| PG.quote(c)).collect();
        order.extend(
            self.spec()
                .cursor
                .iter()
                .map(|c| format!("{} DESC NULLS LAST", PG.quote(c))),
        );
        order.push("ctid DESC".into());
        order.join(", ")
    }

    /// Deletes all but the latest row of each key of `table`; returns how many went.
    async fn collapse(&self, table: &str) -> Result<u64> {
        let k: Vec<String> = self.spec().primary_key.iter().map(|c| PG.quote(c)).collect();
        self.db
            .exec(&format!(
                "DELETE FROM {table} WHERE ctid IN (SELECT ctid FROM (SELECT ctid, row_number() OVER
               (PARTITION BY {k} ORDER BY {order}) AS n FROM {table}) r WHERE n > 1)",
                k = k.join(", "),
                order = self.latest_first()
            ))
            .await
    }

    /// Gives a target this run created its primary key. The index is built once; only when
    /// it finds a repeated key are all but the latest row of each key deleted first. Returns
    /// the rows deleted.
    async fn key_new_target(&self, table: &str) -> Result<u64> {
        let Err(e) = self.try_add_key(table).await? else {
            return Ok(0);
        };
        match e.code() {
            Some(c) if *c == SqlState::UNIQUE_VIOLATION => {
                let collapsed = self.collapse(table).await?;
                self.db.exec(&self.add_key(table)).await?;
                Ok(collapsed)
            }
            Some(c) if *c == SqlState::NOT_NULL_VIOLATION => {
                self.check_keys(table).await?;
                Err(pg_err(&self.spec().name, e))
            }
            _ => Err(pg_err(&self.spec().name, e)),
        }
    }

    /// `ALTER TABLE … ADD PRIMARY KEY` of the spec's key.
    fn add_key(&self, table: &str) -> String {
        let k: Vec<String> = self.spec().primary_key.iter().map(|c| PG.quote(c)).collect();
        format!("ALTER TABLE {table} ADD PRIMARY KEY ({})", k.join(", "))
    }

    /// Adds the spec's primary key to `table` in a savepoint: the database's refusal is
    /// returned with the transaction rolled back to before it, still usable.
    async fn try_add_key(&self, table: &str) -> Result<std::result::Result<(), tokio_postgres::Error>> {
        self.db.exec("SAVEPOINT etl_key").await?;
        let added = self.db.timed(self.db.batch_execute(&self.add_key(table))).await?;
        if added.is_err() {
            self.db.exec("ROLLBACK TO SAVEPOINT etl_key").await?;
        }
        Ok(added)
    }

    /// Gives the table a FULL run put in place the spec's primary key, as the table it
    /// replaced had (a resync of an UPSERT target keeps its key index). Rows that repeat a
    /// key, or lack one, are FULL's to keep: the table is then left without the key, and a
    /// warning says why.
    async fn key_full_target(&self) -> Result<()> {
        if self.spec().primary_key.is_empty() {
            return Ok(());
        }
        match self.try_add_key(self.target()).await? {
            Ok(()) => Ok(()),
            Err(e)
                if e.code()
                    .is_some_and(|c| *c == SqlState::UNIQUE_VIOLATION || *c == SqlState::NOT_NULL_VIOLATION) =>
            {
                tracing::warn!(
                    table = %self.spec().name,
                    "FULL: the rows repeat or lack a key of ({}), so the new table has no primary key",
                    self.spec().primary_key.join(", ")
                );
                Ok(())
            }
            Err(e) => Err(pg_err(&self.spec().name, e)),
        }
    }

    /// The mode's statements over the copied rows of `schema`.
    async fn apply_copied(&self, schema: &SchemaRef) -> Result<CommitSummary> {
        let st = self.statements(schema, STAGE);
        let insert_staged = st.insert_all(self.target(), STAGE);
        let summary = |inserted, deleted| CommitSummary {
            inserted,
            deleted,
            ..CommitSummary::default()
        };
        Ok(match (self.into, self.cx.mode) {
            (Dest::Aside, _) => {
                let exists = self.cx.target.exists(&self.db).await?;
                let deleted = if exists {
                    self.db
                        .count(&format!("SELECT count(*) FROM {}", self.target()))
                        .await?
                } else {
                    0
                };
                for s in st.swap(&self.aside, exists, &self.cx.target.quoted_name()) {
                    self.db.exec(&s).await?;
                }
                self.key_full_target().await?;
                summary(self.rows, deleted)
            }
            (Dest::NewTarget, LoadMode::Upsert) => {
                let collapsed = self.key_new_target(self.target()).await?;
                // Rows marked deleted have nothing to delete yet: they are not kept.
                let dropped = match st.soft_deleted("")? {
                    Some(flag) => {
                        self.db
                            .exec(&format!("DELETE FROM {} WHERE {flag}", self.target()))
                            .await?
                    }
                    None => 0,
                };
                CommitSummary {
                    inserted: self.rows - collapsed - dropped,
                    collapsed,
                    ..CommitSummary::default()
                }
            }
            (Dest::NewTarget, _) => summary(self.rows, 0),
            (Dest::Stage, mode) => {
                self.evolve(schema).await?;
                match mode {
                    LoadMode::TruncateInsert => {
                        let deleted = self
                            .db
                            .count(&format!("SELECT count(*) FROM {}", self.target()))
                            .await?;
                        self.db.exec(&self.empty_target()).await?;
                        summary(self.db.exec(&insert_staged).await?, deleted)
                    }
                    LoadMode::Upsert => self.merge(schema).await?,
                    _ => summary(self.db.exec(&insert_staged).await?, 0),
                }
            }
        })
    }

    /// Merges the staged rows, collapsed to the latest per key, into the target with the
    /// spec's strategy, after applying its soft deletes.
    async fn merge(&self, schema: &SchemaRef) -> Result<CommitSummary> {
        let key = &self.spec().primary_key;
        let k: Vec<String> = key.iter().map(|c| PG.quote(c)).collect();
        let cols = column_list(schema);
        let st = self.statements(schema, STAGE);
        let non_key: Vec<String> = schema
            .fields()
            .iter()
            .filter(|f| !key.contains(f.name()))
            .map(|f| PG.quote(f.name()))
            .collect();
        // A unique index on exactly the key (and whether it is the primary key, whose columns
        // cannot be NULL).
        let mut sorted_key = key.clone();
        sorted_key.sort();
        let unique: Option<bool> = self
            .db
            .query_opt(
                "SELECT i.indisprimary FROM pg_index i WHERE i.indrelid = $1::text::regclass AND i.indisunique
                   AND i.indpred IS NULL AND (SELECT array_agg(a.attname::text ORDER BY a.attname::text)
                     FROM pg_attribute a WHERE a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)) = $2
                 ORDER BY i.indisprimary DESC LIMIT 1",
                &[&self.target(), &sorted_key],
            )
            .await
            .map_err(self.db.err())?
            .map(|r| r.try_get(0))
            .transpose()
            .map_err(self.db.err())?;
        let soft = st.soft_delete()?;
        let fast = self.spec().merge == MergeStrategy::UpdateInsert && soft.is_none() && unique.is_some();
        let mut collapsed = 0;
        if !fast {
            self.check_keys(STAGE).await?;
            collapsed = self.collapse(STAGE).await?;
        } else if unique == Some(false) {
            self.check_keys(STAGE).await?;
        }
        let mut deleted = 0;
        let mut dropped = 0;
        if let Some([target, staged]) = &soft {
            deleted = self.db.exec(target).await?;
            dropped = self.db.exec(staged).await?;
        }
        let live = self.rows - collapsed - dropped;
        let (inserted, updated) = match self.spec().merge {
            MergeStrategy::UpdateInsert if unique.is_some() => {
                let action = if non_key.is_empty() {
                    "DO NOTHING".to_string()
                } else {
                    let set: Vec<String> = non_key.iter().map(|c| format!("{c} = EXCLUDED.{c}")).collect();
                    format!("DO UPDATE SET {}", set.join(", "))
                };
                // One pass of index probes; xmax = 0 marks a row inserted rather than updated.
                // Repeated keys make it fail (a row cannot change twice in one command): only
                // then are they collapsed first. A NULL key fails the primary key's NOT NULL:
                // then the error counts them.
                let upsert = format!(
                    "WITH m AS (INSERT INTO {target} ({cols}) SELECT {cols} FROM {STAGE}
                       ON CONFLICT ({k}) {action} RETURNING (xmax = 0) AS ins)
                     SELECT count(*) FILTER (WHERE ins), count(*) FILTER (WHERE NOT ins) FROM m",
                    target = self.target(),
                    k = k.join(", ")
                );
                let counts = |r: tokio_postgres::Row| -> Result<(u64, u64)> {
                    let n = |i| r.try_get::<_, i64>(i).map(|n| n as u64).map_err(self.db.err());
                    Ok((n(0)?, n(1)?))
                };
                self.db.exec("SAVEPOINT etl_merge").await?;
                match self.db.timed(self.db.query_one(&upsert, &[])).await? {
                    Ok(r) => counts(r)?,
                    Err(e) => {
                        self.db.exec("ROLLBACK TO SAVEPOINT etl_merge").await?;
                        match e.code() {
                            Some(c) if *c == SqlState::CARDINALITY_VIOLATION => {
                                collapsed = self.collapse(STAGE).await?;
                                counts(self.db.call(self.db.query_one(&upsert, &[])).await?)?
                            }
                            Some(c) if *c == SqlState::NOT_NULL_VIOLATION => {
                                self.check_keys(STAGE).await?;
                                return Err(pg_err(&self.spec().name, e));
                            }
                            _ => return Err(pg_err(&self.spec().name, e)),
                        }
                    }
                }
            }
            MergeStrategy::UpdateInsert => {
                // No unique index: MERGE (Postgres 15+), which joins instead.
                let version: i32 = self
                    .db
                    .call(
                        self.db
                            .query_one("SELECT current_setting('server_version_num')::int", &[]),
                    )
                    .await?
                    .try_get(0)
                    .map_err(self.db.err())?;
                if version < 150_000 {
                    return Err(Error::Connector {
                        connector: "postgres",
                        message: format!(
                            "table `{}`: UPSERT into {} needs a unique index on ({}) before Postgres 15 (MERGE)",
                            self.spec().name,
                            self.target(),
                            key.join(", ")
                        ),
                        retryable: false,
                    });
                }
                self.db.exec(&format!("ANALYZE {STAGE}")).await?;
                let updated = if non_key.is_empty() {
                    0
                } else {
                    self.db.count(&st.matching()).await?
                };
                let mut merged = 0;
                for s in st.merge() {
                    merged = self.db.exec(&s).await?;
                }
                (merged - updated, updated)
            }
            MergeStrategy::DeleteInsert => {
                let [delete, insert] = <[String; 2]>::try_from(st.merge()).expect("delete, insert");
                let replaced = self.db.exec(&delete).await?;
                self.db.exec(&insert).await?;
                (live - replaced, replaced)
            }
            MergeStrategy::InsertOnly => {
                let inserted = self.db.exec(&st.merge()[0]).await?;
                (inserted, 0)
            }
        };
        // Keys brought again lose their deletion mark.
        if self.cx.target.has_marks(&self.db).await? {
            self.db.exec(&st.clear_marks(STAGE)).await?;
        }
        Ok(CommitSummary {
            inserted,
            updated,
            deleted,
            collapsed,
            ..CommitSummary::default()
        })
    }
}

/// The quoted column names of `schema`, comma-separated.
fn column_list(schema: &SchemaRef) -> String {
    schema
        .fields()
        .iter()
        .map(|f| PG.quote(f.name()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Postgres's part of the shared commit sequence: the transaction is open since the run's
/// first row, the watermark row goes in with the checkpoint (when the pipeline keeps its
/// watermarks in the sink's schema), and `TRUNCATE` empties.
#[async_trait]
impl Run for PgWriter {
    fn session(&self) -> &dyn Session {
        &self.db
    }

    fn context(&self) -> &RunContext {
        &self.cx
    }

    async fn begin(&self) -> Result<()> {
        Ok(())
    }

    async fn load(&self, checkpoint: &Checkpoint) -> Result<()> {
        match &self.watermarks_in {
            Some(schema) => {
                watermarks::record(&self.db, schema, &self.cx.pipeline, &self.cx.spec.name, checkpoint).await
            }
            None => Ok(()),
        }
    }

    fn loaded(&self) -> bool {
        self.columns.is_some()
    }

    async fn apply(&self) -> Result<CommitSummary> {
        self.apply_copied(self.columns.as_ref().expect("loaded")).await
    }

    fn empty_target(&self) -> String {
        format!("TRUNCATE {}", self.target())
    }
}

#[async_trait]
impl TableWriter for PgWriter {
    async fn write(&mut self, batch: RecordBatch) -> Result<()> {
        if self.columns.is_none() {
            self.open(batch.schema()).await?;
        }
        encode::rows(&self.cx.spec.name, &batch, &mut self.buf)?;
        self.rows += batch.num_rows() as u64;
        if self.buf.len() >= SEND_BYTES {
            self.flush().await?;
        }
        Ok(())
    }

    async fn stage(mut self: Box<Self>) -> Result<Staged> {
        let staged = self.finish_copy().await;
        Staged::new(staged, self).await
    }

    async fn abort(self: Box<Self>) -> Result<()> {
        self.discard().await
    }
}

impl PgWriter {
    /// Ends the COPY; every row is then in the run's transaction.
    async fn finish_copy(&mut self) -> Result<StageSummary> {
        if self.copy.is_some() {
            encode::trailer(&mut self.buf);
            self.flush().await?;
            let name = self.spec().name.clone();
            let mut copy = self.copy.take().expect("open");
            let copied = self.db.call(copy.as_mut().finish()).await?;
            if copied != self.rows {
                return Err(Error::Connector {
                    connector: "postgres",
                    message: format!("table `{name}`: copied {copied} rows of {}", self.rows),
                    retryable: true,
                });
            }
        }
        Ok(StageSummary {
            rows: self.rows,
            bytes: self.bytes,
            files: 0,
        })
    }

    /// Rolls the run's transaction back (dropping an unfinished COPY aborts it first); a
    /// shard's table is dropped.
    async fn discard(mut self: Box<Self>) -> Result<()> {
        self.copy = None;
        match &self.shard {
            Some(table) => self.db.batch(&format!("DROP TABLE IF EXISTS {table}")).await,
            None => self.db.batch("ROLLBACK").await,
        }
    }
}

#[async_trait]
impl StagedWrite for PgWriter {
    async fn commit(self: Box<Self>, checkpoint: Checkpoint) -> Result<CommitSummary> {
        if self.shard.is_some() {
            return Err(Error::config(
                "a shard's staged table is committed with its plan (ShardSink::commit_shards)",
            ));
        }
        let summary = warehouse::commit(self.as_ref(), &checkpoint).await?;
        Ok(CommitSummary {
            watermark_stored: self.watermarks_in.is_some(),
            ..summary
        })
    }

    async fn abort(self: Box<Self>) -> Result<()> {
        self.discard().await
    }

    fn manifest(&self) -> Result<serde_json::Value> {
        let table = self.shard.clone().ok_or_else(|| {
            Error::config("a run's staged rows live in its own transaction: only a shard's are named")
        })?;
        let columns = self
            .columns
            .iter()
            .flat_map(|s| s.fields().iter().map(|f| etl_core::lake::Column::of(f)))
            .collect();
        Ok(serde_json::to_value(StagedTable {
            table,
            rows: self.rows,
            columns,
        })
        .expect("staged tables serialise"))
    }
}

crate::warehouse::keys::key_reader!(PostgresSink, Some("postgres"));

impl PostgresSink {
    /// The target's key queries, on a connection of their own.
    async fn table_keys(&self, spec: &TableSpec) -> Result<crate::warehouse::keys::TableKeys> {
        let db = self.pg.connect(&spec.name).await?;
        let target = Target::new(PG, &self.schema, &spec.target, false);
        Ok(crate::warehouse::keys::TableKeys::new(Box::new(db), PG, target))
    }
}
