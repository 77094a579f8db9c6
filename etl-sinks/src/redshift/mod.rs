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

mod config;
mod load;

pub use config::{RedshiftLoad, RedshiftSink};

use async_trait::async_trait;
use etl_core::kit::sql::Dialect;
use etl_core::{
    Checkpoint, CommitSummary, LoadMode, Result, ShardSink, Sink, TableSpec, TableWriter, TargetState, WriteRequest,
};

use crate::warehouse::stage::{ParquetStage, StagedFiles};
use crate::warehouse::{RunContext, Target};

const RS: Dialect = Dialect::Redshift;

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

    fn key_reader(&self) -> Option<&dyn etl_core::keys::KeyReader> {
        Some(self)
    }

    async fn delete_keys(&self, spec: &TableSpec, keys: &[i64]) -> Result<u64> {
        self.table_keys(spec).await?.delete(spec, keys).await
    }

    async fn target_state(&self, spec: &TableSpec) -> Result<TargetState> {
        let client = self.pg.connect(&spec.name).await?;
        Target::new(RS, &self.schema, &spec.target, false).state(&client).await
    }

    async fn begin(&self, req: WriteRequest<'_>) -> Result<Box<dyn TableWriter>> {
        Ok(Box::new(self.writer(&req, None).await?))
    }

    fn shard_sink(&self) -> Option<&dyn ShardSink> {
        Some(self)
    }
}

impl RedshiftSink {
    /// The staging folder of a run's (or a shard's) files.
    fn prefix(&self, req: &WriteRequest<'_>) -> String {
        format!("_etl/redshift/{}/{}/{}", req.pipeline, req.spec.target, req.run_id)
    }

    /// A writer for the run `req`, once no run has overtaken it, staging into its own folder
    /// or loading what the shards of a plan staged (`shards`).
    async fn writer(&self, req: &WriteRequest<'_>, shards: Option<Vec<StagedFiles>>) -> Result<load::RsWriter> {
        let spec = req.spec;
        let db = self.pg.connect(&spec.name).await?;
        self.checkpoints()
            .check_not_overtaken(&db, req.pipeline, &spec.name, req.last_checkpoint)
            .await?;
        let target = Target::new(RS, &self.schema, &spec.target, false);
        let prefix = self.prefix(req);
        let stage = match shards {
            None => ParquetStage::new(self.staging.clone(), prefix, &spec.name, RS),
            Some(shards) => ParquetStage::of_shards(self.staging.clone(), prefix, req.run_id, &spec.name, RS, shards)?,
        };
        Ok(load::RsWriter {
            sink: self.clone(),
            db,
            aside: target.scratch("new", req.run_id, 63),
            cx: RunContext::new(req, target, self.checkpoints()),
            stage,
        })
    }
}

/// A shard stages its Parquet files in a folder of its own, as a run does; the plan's commit
/// loads every shard's folder into the run's staging table in one transaction, applies the
/// mode as a run's commit does, and then deletes the plan's staged files, a dead attempt's
/// too.
#[async_trait]
impl ShardSink for RedshiftSink {
    async fn commit_shards(
        &self,
        req: WriteRequest<'_>,
        staged: Vec<serde_json::Value>,
        checkpoint: Checkpoint,
    ) -> Result<CommitSummary> {
        let shards: Vec<StagedFiles> = etl_core::shard::read_staged(req.run_id, staged)?;
        let writer = self.writer(&req, Some(shards)).await?;
        let committed = crate::warehouse::commit(&writer, &checkpoint).await?;
        // Every folder of the plan's shards (a shard's run id is `<plan>-<index>-<attempt>`).
        let folder = format!("_etl/redshift/{}/{}", req.pipeline, req.spec.target);
        ParquetStage::remove_plan(&self.staging, &folder, req.run_id, &req.spec.name).await;
        Ok(committed)
    }
}

crate::warehouse::keys::key_reader!(RedshiftSink, None);

impl RedshiftSink {
    /// The target's key queries, on a connection of their own.
    async fn table_keys(&self, spec: &TableSpec) -> Result<crate::warehouse::keys::TableKeys> {
        let db = self.pg.connect(&spec.name).await?;
        let target = Target::new(RS, &self.schema, &spec.target, false);
        Ok(crate::warehouse::keys::TableKeys::new(Box::new(db), RS, target))
    }
}
