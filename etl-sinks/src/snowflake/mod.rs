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
//!   (cursor, then arrival), soft deletes, then update-and-insert (`MERGE INTO`),
//!   delete-and-insert, or insert-only.
//!
//! # Names
//! Schema, table and column names are upper-cased before they are quoted, as Snowflake folds
//! unquoted names, in the DDL, `COPY … MATCH_BY_COLUMN_NAME`, `MERGE` and the checkpoint
//! table alike: a target `orders` in schema `crm` is read as `SELECT * FROM crm.orders`.
//! [`SnowflakeSink::with_exact_names`] keeps names as given. A target written
//! `analytics.orders` is table `orders` of schema `analytics`.
//!
//! The staging tables are dropped and the staged files deleted after the run, committed or
//! not. Credentials for the bucket live in Snowflake (a storage integration or a named
//! stage), never in SQL text: `snowflake-api` logs statements at debug level.

mod config;
mod emulator;
mod load;
mod session;
mod tokens;

pub use config::{SnowflakeAuth, SnowflakeSecret, SnowflakeSink, SnowflakeStage};
pub use emulator::emulator_client;

use async_trait::async_trait;
use etl_core::kit::sql::Dialect;
use etl_core::{
    Checkpoint, CommitSummary, LoadMode, Result, ShardSink, Sink, TableSpec, TableWriter, TargetState, WriteRequest,
};

use crate::warehouse::RunContext;
use crate::warehouse::stage::{ParquetStage, StagedFiles};

const SF: Dialect = Dialect::Snowflake;

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
        self.checkpoints().load(&db, pipeline, &spec.name).await
    }

    fn key_reader(&self) -> Option<&dyn etl_core::keys::KeyReader> {
        Some(self)
    }

    async fn delete_keys(&self, spec: &TableSpec, keys: &[i64]) -> Result<u64> {
        self.table_keys(spec).await?.delete(spec, keys).await
    }

    async fn target_state(&self, spec: &TableSpec) -> Result<TargetState> {
        let db = self.connect(&spec.name)?;
        self.target(spec).state(&db).await
    }

    async fn begin(&self, req: WriteRequest<'_>) -> Result<Box<dyn TableWriter>> {
        Ok(Box::new(self.writer(&req, None).await?))
    }

    fn shard_sink(&self) -> Option<&dyn ShardSink> {
        Some(self)
    }
}

/// A shard stages its Parquet files in a folder of its own, as a run does; the plan's commit
/// `COPY`s every shard's folder into the run's staging table, then applies the mode with the
/// checkpoint in one transaction as a run's commit does, and deletes the plan's staged files,
/// a dead attempt's too.
#[async_trait]
impl ShardSink for SnowflakeSink {
    async fn commit_shards(
        &self,
        req: WriteRequest<'_>,
        staged: Vec<serde_json::Value>,
        checkpoint: Checkpoint,
    ) -> Result<CommitSummary> {
        let shards: Vec<StagedFiles> = etl_core::shard::read_staged(req.run_id, staged)?;
        let writer = self.writer(&req, Some(shards)).await?;
        let committed = crate::warehouse::commit(&writer, &checkpoint).await;
        writer.drop_scratch().await;
        // The staged files stay for another try of a commit that failed.
        let committed = committed?;
        // Every folder of the plan's shards, of any day (`<table folder>/<date>/<plan>-<index>-<attempt>`).
        let folder = format!("{}/{}/{}", req.pipeline, self.schema, req.spec.target);
        ParquetStage::remove_plan(&self.staging, &folder, req.run_id, &req.spec.name).await;
        Ok(committed)
    }
}

impl SnowflakeSink {
    /// A writer for the run `req`, once no run has overtaken it, staging into its own folder
    /// (`<pipeline>/<schema>/<table>/<date>/<run>`) or loading what the shards of a plan
    /// staged (`shards`).
    async fn writer(&self, req: &WriteRequest<'_>, shards: Option<Vec<StagedFiles>>) -> Result<load::SfWriter> {
        let spec = req.spec;
        let db = self.connect(&spec.name)?;
        self.checkpoints()
            .check_not_overtaken(&db, req.pipeline, &spec.name, req.last_checkpoint)
            .await?;
        let date = chrono::Utc::now().format("%Y-%m-%d");
        let prefix = format!("{}/{}/{}/{date}/{}", req.pipeline, self.schema, spec.target, req.run_id);
        let target = self.target(spec);
        // Snowflake names hold up to 255 characters.
        let scratch = |kind: &str| target.scratch(kind, req.run_id, 255);
        let stage = match shards {
            None => ParquetStage::new(self.staging.clone(), prefix, &spec.name, SF),
            Some(shards) => ParquetStage::of_shards(self.staging.clone(), prefix, req.run_id, &spec.name, SF, shards)?,
        };
        Ok(load::SfWriter {
            sink: self.clone(),
            db,
            stage_table: scratch("stage"),
            latest_table: scratch("latest"),
            files_stage: scratch("files"),
            cx: RunContext::new(req, target, self.checkpoints()),
            stage,
        })
    }
}

crate::warehouse::keys::key_reader!(SnowflakeSink, None);

impl SnowflakeSink {
    /// The target's key queries, on a connection of their own.
    async fn table_keys(&self, spec: &TableSpec) -> Result<crate::warehouse::keys::TableKeys> {
        let db = self.connect(&spec.name)?;
        Ok(crate::warehouse::keys::TableKeys::new(
            Box::new(db),
            SF,
            self.target(spec),
        ))
    }
}
