//! A Redshift run: the rows staged as Parquet, then in one serializable transaction the
//! checkpoint, `COPY` into a temporary staging table and the mode's statements.

use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use bytes::BytesMut;
use etl_connectors::postgres::PgClient;
use etl_core::{Checkpoint, CommitSummary, Error, LoadMode, Result, Staged, StagedWrite, TableWriter};
use futures::{SinkExt, TryStreamExt};

use super::{RS, RedshiftLoad, RedshiftSink};
use crate::postgres::encode;
use crate::warehouse::stage::ParquetStage;
use crate::warehouse::statements::{CopyAuth, LATEST, STAGE, Statements};
use crate::warehouse::{self, Run, RunContext, Session};

pub(super) struct RsWriter {
    pub(super) sink: RedshiftSink,
    pub(super) db: PgClient,
    pub(super) cx: RunContext,
    /// FULL's new table, beside the target.
    pub(super) aside: String,
    pub(super) stage: ParquetStage,
}

impl RsWriter {
    fn statements(&self) -> Statements<'_> {
        Statements {
            dialect: RS,
            spec: &self.cx.spec,
            stage: STAGE.into(),
            latest: LATEST.into(),
            target: self.cx.target.qualified.clone(),
            fields: self.stage.fields(),
            upper: false,
        }
    }

    /// Loads the staged files into the staging table: one `COPY` per folder (the run's, or
    /// each shard's of a plan).
    async fn load_stage(&self) -> Result<()> {
        let auth = match &self.sink.load {
            RedshiftLoad::IamRole(arn) => CopyAuth::IamRole(arn.clone()),
            RedshiftLoad::AccessKeys { id, secret, token } => CopyAuth::Keys {
                id: id.clone(),
                secret: secret.clone(),
                token: token.clone(),
            },
            RedshiftLoad::PostgresStandIn => return self.load_stage_from_files().await,
        };
        for prefix in self.stage.prefixes() {
            let url = format!("{}/{prefix}/", self.sink.staging_url);
            // The statement carries credentials: it is never logged.
            self.db.exec(&self.statements().copy(&url, &auth)).await?;
        }
        Ok(())
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
        let name = &self.cx.spec.name;
        let read_err = |e: parquet::errors::ParquetError| Error::Connector {
            connector: "redshift",
            message: format!("table `{name}`: reading back staged Parquet: {e}"),
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
                encode::rows(name, &b, &mut buf)?;
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
        let target = &self.cx.target;
        let existing: Vec<(String, String)> = self
            .db
            .call(self.db.query(
                "SELECT column_name::varchar, data_type::varchar, numeric_precision::int, numeric_scale::int
                   FROM information_schema.columns WHERE table_schema = $1 AND table_name = $2",
                &[&target.schema, &target.name],
            ))
            .await?
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
        let fields = self.stage.columns().expect("columns").fields();
        warehouse::evolve(self, RS, &existing, fields, false).await
    }
}

/// Redshift's part of the shared commit sequence: DDL of schema and checkpoint table first,
/// a serializable transaction, and `COPY` into the staging table inside it.
#[async_trait]
impl Run for RsWriter {
    fn session(&self) -> &dyn Session {
        &self.db
    }

    fn context(&self) -> &RunContext {
        &self.cx
    }

    async fn before_transaction(&self) -> Result<()> {
        let mut ddl = format!(
            "CREATE SCHEMA IF NOT EXISTS {}; {}",
            RS.quote(&self.sink.schema),
            self.cx.checkpoints.create()
        );
        if self.cx.target.schema != self.sink.schema {
            ddl.push_str(&format!(
                "; CREATE SCHEMA IF NOT EXISTS {}",
                RS.quote(&self.cx.target.schema)
            ));
        }
        self.db.batch(&ddl).await
    }

    async fn begin(&self) -> Result<()> {
        // Redshift runs every transaction serializable; Postgres standing in is told to.
        self.db.batch("BEGIN ISOLATION LEVEL SERIALIZABLE").await
    }

    async fn load(&self, _checkpoint: &Checkpoint) -> Result<()> {
        if self.loaded() {
            self.db.exec(&self.statements().create_stage()?).await?;
            self.load_stage().await?;
        }
        Ok(())
    }

    fn loaded(&self) -> bool {
        self.stage.columns().is_some()
    }

    async fn apply(&self) -> Result<CommitSummary> {
        let st = self.statements();
        let rows = self.stage.rows();
        let target = &self.cx.target;
        let exists = target.exists(&self.db).await?;
        let mode = self.cx.mode;
        let summary = |inserted, deleted| CommitSummary {
            inserted,
            deleted,
            ..CommitSummary::default()
        };
        if mode == LoadMode::Full {
            self.db.exec(&st.create_table(&self.aside, &[])?).await?;
            self.db.exec(&st.insert_all(&self.aside, STAGE)).await?;
            let deleted = if exists {
                self.db
                    .count(&format!("SELECT count(*) FROM {}", target.qualified))
                    .await?
            } else {
                0
            };
            for s in st.swap(&self.aside, exists, &self.cx.target.quoted_name()) {
                self.db.exec(&s).await?;
            }
            return Ok(summary(rows, deleted));
        }
        if exists {
            self.evolve().await?;
        } else {
            let key: &[String] = if mode == LoadMode::Upsert {
                &self.cx.spec.primary_key
            } else {
                &[]
            };
            self.db.exec(&st.create_table(&target.qualified, key)?).await?;
        }
        if mode == LoadMode::Upsert {
            warehouse::collapse_staged(self, &st, "redshift").await?;
        }
        warehouse::apply_staged(self, &st, rows).await
    }
}

#[async_trait]
impl TableWriter for RsWriter {
    async fn write(&mut self, batch: RecordBatch) -> Result<()> {
        self.stage.write(&batch).await
    }

    async fn stage(mut self: Box<Self>) -> Result<Staged> {
        let staged = self.stage.finish().await;
        Staged::new(staged, self).await
    }

    async fn abort(self: Box<Self>) -> Result<()> {
        self.stage.remove().await;
        Ok(())
    }
}

#[async_trait]
impl StagedWrite for RsWriter {
    async fn commit(self: Box<Self>, checkpoint: Checkpoint) -> Result<CommitSummary> {
        let result = warehouse::commit(self.as_ref(), &checkpoint).await;
        self.stage.remove().await;
        result
    }

    async fn abort(self: Box<Self>) -> Result<()> {
        self.stage.remove().await;
        Ok(())
    }

    fn manifest(&self) -> Result<serde_json::Value> {
        Ok(serde_json::to_value(self.stage.describe()).expect("staged files serialise"))
    }
}
