//! A Snowflake run: the rows staged as Parquet; before the transaction (Snowflake's DDL
//! commits an open one) the tables, the `COPY INTO` a staging table and UPSERT's collapse;
//! in it, the checkpoint and the mode's DML.

use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use etl_core::{Checkpoint, CommitSummary, LoadMode, Result, Staged, StagedWrite, TableWriter};

use super::session::SfSession;
use super::{SF, SnowflakeSink, SnowflakeStage};
use crate::warehouse::stage::ParquetStage;
use crate::warehouse::statements::Statements;
use crate::warehouse::{self, Run, RunContext, Session};

pub(super) struct SfWriter {
    pub(super) sink: SnowflakeSink,
    pub(super) db: SfSession,
    pub(super) cx: RunContext,
    /// The run's staging table, its collapsed copy and its temporary stage (qualified).
    pub(super) stage_table: String,
    pub(super) latest_table: String,
    pub(super) files_stage: String,
    pub(super) stage: ParquetStage,
}

impl SfWriter {
    fn statements(&self) -> Statements<'_> {
        Statements {
            dialect: SF,
            spec: &self.cx.spec,
            target: self.cx.target.qualified.clone(),
            stage: self.stage_table.clone(),
            latest: self.latest_table.clone(),
            fields: self.stage.fields(),
            upper: !self.sink.exact_names,
        }
    }

    /// Creates the target, or adds the columns it lacks (refusing an incompatible one).
    async fn prepare_target(&self, st: &Statements<'_>) -> Result<()> {
        let target = &self.cx.target;
        if !target.exists(&self.db).await? {
            self.db.exec(&st.create_table(&target.qualified, &[])?).await?;
            return Ok(());
        }
        let existing = self.db.columns(&target.schema, &target.name).await?;
        let fields = self.stage.columns().expect("columns").fields();
        warehouse::evolve(self, SF, &existing, fields, st.upper).await
    }

    /// The target prepared and the staging table loaded, before the transaction: one
    /// `COPY INTO` per folder of files (the run's, or each shard's of a plan), from the named
    /// stage's folder or from a temporary stage over the folder.
    async fn load_stage(&self) -> Result<()> {
        let st = self.statements();
        self.prepare_target(&st).await?;
        self.db.exec(&st.create_stage()?).await?;
        for prefix in self.stage.prefixes() {
            let url = |base: &str| SF.string_literal(&format!("{}/{prefix}/", base.trim_end_matches('/')));
            let temporary = format!("@{}", self.files_stage);
            let (from, temp_stage) = match &self.sink.stage {
                SnowflakeStage::Named(name) => (format!("@{name}/{prefix}/"), None),
                SnowflakeStage::Integration { url: base, integration } => (
                    temporary,
                    Some(format!(
                        "URL={} STORAGE_INTEGRATION = {}",
                        url(base),
                        SF.quote(integration)
                    )),
                ),
                SnowflakeStage::Url(base) => (temporary, Some(format!("URL={}", url(base)))),
            };
            if let Some(at) = temp_stage {
                self.db
                    .exec(&format!(
                        "CREATE OR REPLACE TEMPORARY STAGE {} {at} FILE_FORMAT=(TYPE=PARQUET)",
                        self.files_stage
                    ))
                    .await?;
            }
            self.db.exec(&st.copy_into(&from)).await?;
        }
        if self.cx.mode == LoadMode::Upsert {
            warehouse::collapse_staged(self, &st, "snowflake").await?;
        }
        Ok(())
    }

    /// Drops the run's staging tables and deletes its files (best effort: logged).
    async fn clean_up(&self) {
        self.drop_scratch().await;
        self.stage.remove().await;
    }

    /// Drops the run's staging tables (best effort: logged).
    pub(super) async fn drop_scratch(&self) {
        for t in [&self.stage_table, &self.latest_table] {
            if let Err(e) = self.db.exec(&format!("DROP TABLE IF EXISTS {t}")).await {
                tracing::warn!(table = %self.cx.spec.name, scratch = %t, error = %e, "a staging table was not dropped");
            }
        }
    }
}

/// Snowflake's part of the shared commit sequence: every DDL and the load before `BEGIN`.
#[async_trait]
impl Run for SfWriter {
    fn session(&self) -> &dyn Session {
        &self.db
    }

    fn context(&self) -> &RunContext {
        &self.cx
    }

    async fn before_transaction(&self) -> Result<()> {
        let mut schemas = vec![self.sink.fold(&self.sink.schema)];
        if self.cx.target.schema != schemas[0] {
            schemas.push(self.cx.target.schema.clone());
        }
        for schema in schemas {
            self.db
                .exec(&format!("CREATE SCHEMA IF NOT EXISTS {}", SF.quote(&schema)))
                .await?;
        }
        self.db.exec(&self.cx.checkpoints.create()).await?;
        if self.loaded() {
            self.load_stage().await?;
        }
        Ok(())
    }

    async fn begin(&self) -> Result<()> {
        self.db.exec("BEGIN TRANSACTION").await.map(|_| ())
    }

    fn loaded(&self) -> bool {
        self.stage.columns().is_some()
    }

    async fn apply(&self) -> Result<CommitSummary> {
        warehouse::apply_staged(self, &self.statements(), self.stage.rows()).await
    }
}

#[async_trait]
impl TableWriter for SfWriter {
    async fn write(&mut self, batch: RecordBatch) -> Result<()> {
        self.stage.write(&batch).await
    }

    async fn stage(mut self: Box<Self>) -> Result<Staged> {
        let staged = self.stage.finish().await;
        Staged::new(staged, self).await
    }

    async fn abort(self: Box<Self>) -> Result<()> {
        self.clean_up().await;
        Ok(())
    }
}

#[async_trait]
impl StagedWrite for SfWriter {
    async fn commit(self: Box<Self>, checkpoint: Checkpoint) -> Result<CommitSummary> {
        let result = warehouse::commit(self.as_ref(), &checkpoint).await;
        self.clean_up().await;
        result
    }

    async fn abort(self: Box<Self>) -> Result<()> {
        self.clean_up().await;
        Ok(())
    }

    fn manifest(&self) -> Result<serde_json::Value> {
        Ok(serde_json::to_value(self.stage.describe()).expect("staged files serialise"))
    }
}
