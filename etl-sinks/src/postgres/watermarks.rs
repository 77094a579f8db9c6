//! Watermarks in the warehouse itself: `<schema>._etl_watermarks`, one row per (pipeline,
//! table, generation), written by the Postgres sink inside each run's transaction.

use async_trait::async_trait;
use etl_connectors::postgres::{PgClient, PgConfig, pg_err};
use etl_core::kit::sql::Dialect;
use etl_core::{Checkpoint, Error, Result, Watermark, WatermarkStore};
use tokio_postgres::error::SqlState;

const PG: Dialect = Dialect::Postgres;
pub(super) const WATERMARKS: &str = "_etl_watermarks";

/// The `CREATE TABLE` of the watermark table in `schema`.
pub(super) fn create(schema: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {}.{} (pipeline text NOT NULL, table_name text NOT NULL,
           generation bigint NOT NULL, run_id text NOT NULL, watermark jsonb NOT NULL,
           committed_at timestamptz NOT NULL, PRIMARY KEY (pipeline, table_name, generation))",
        PG.quote(schema),
        PG.quote(WATERMARKS)
    )
}

/// Records the watermark of a committing run, in the caller's open transaction, as the next
/// generation of (pipeline, table).
pub(super) async fn record(
    client: &PgClient,
    schema: &str,
    pipeline: &str,
    table: &str,
    cp: &Checkpoint,
) -> Result<()> {
    let t = format!("{}.{}", PG.quote(schema), PG.quote(WATERMARKS));
    let generation: i64 = client
        .call(client.query_one(
            &format!("SELECT coalesce(max(generation), 0) + 1 FROM {t} WHERE pipeline = $1 AND table_name = $2"),
            &[&pipeline, &table],
        ))
        .await?
        .try_get(0)
        .map_err(client.err())?;
    insert(
        client,
        &t,
        &Watermark::from_checkpoint(pipeline, table, generation as u64, cp),
    )
    .await
}

async fn insert(client: &PgClient, t: &str, wm: &Watermark) -> Result<()> {
    let json = serde_json::to_string(wm).map_err(|e| Error::config(e.to_string()))?;
    let res = client
        .timed(client.execute(
            &format!("INSERT INTO {t} VALUES ($1, $2, $3, $4, $5::text::jsonb, now())"),
            &[&wm.pipeline, &wm.table, &(wm.generation as i64), &wm.run_id, &json],
        ))
        .await?;
    match res {
        Ok(_) => Ok(()),
        Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => Err(Error::ConcurrentRun {
            pipeline: wm.pipeline.clone(),
            table: wm.table.clone(),
        }),
        Err(e) => Err(pg_err(&wm.table, e)),
    }
}

/// Watermarks kept in a Postgres schema, next to the tables a [`super::PostgresSink`] writes.
///
/// A [`super::PostgresSink`] of the same database and schema records each run's watermark
/// inside the same transaction as its rows, so target and watermark move together (and the
/// pipeline stores nothing after it). It also works as a watermark store for any other sink,
/// which leaves the watermark to the pipeline.
#[derive(Clone, Debug)]
pub struct PostgresWatermarkStore {
    pg: PgConfig,
    schema: String,
}

impl PostgresWatermarkStore {
    /// Watermarks in `schema` of the database of `pg`.
    pub fn new(pg: PgConfig, schema: impl Into<String>) -> Self {
        PostgresWatermarkStore {
            pg,
            schema: schema.into(),
        }
    }

    fn table(&self) -> String {
        format!("{}.{}", PG.quote(&self.schema), PG.quote(WATERMARKS))
    }

    async fn client(&self, table: &str) -> Result<PgClient> {
        let c = self.pg.connect(table).await?;
        c.batch(&format!(
            "CREATE SCHEMA IF NOT EXISTS {}; {}",
            PG.quote(&self.schema),
            create(&self.schema)
        ))
        .await?;
        Ok(c)
    }

    async fn rows(&self, pipeline: &str, table: &str, limit: i64) -> Result<Vec<Watermark>> {
        let c = self.client(table).await?;
        let rows = c
            .call(c.query(
                &format!(
                    "SELECT watermark::text FROM {} WHERE pipeline = $1 AND table_name = $2
                      ORDER BY generation DESC LIMIT $3",
                    self.table()
                ),
                &[&pipeline, &table, &limit],
            ))
            .await?;
        rows.iter()
            .map(|r| {
                let text: &str = r.try_get(0).map_err(|e| pg_err(table, e))?;
                serde_json::from_str(text).map_err(|e| Error::Metadata {
                    path: format!("{} ({pipeline}, {table})", self.table()),
                    message: e.to_string(),
                })
            })
            .collect()
    }
}

#[async_trait]
impl WatermarkStore for PostgresWatermarkStore {
    async fn load(&self, pipeline: &str, table: &str) -> Result<Option<Watermark>> {
        Ok(self.rows(pipeline, table, 1).await?.pop())
    }

    async fn commit(&self, expected: Option<&Watermark>, next: &Watermark) -> Result<()> {
        Watermark::check_follows(expected, next)?;
        let c = self.client(&next.table).await?;
        insert(&c, &self.table(), next).await
    }

    async fn history(&self, pipeline: &str, table: &str, limit: usize) -> Result<Vec<Watermark>> {
        self.rows(pipeline, table, limit as i64).await
    }

    /// The database and schema: a [`super::PostgresSink`] writing the same ones stores each
    /// run's watermark in the run's own transaction.
    fn home(&self) -> Option<String> {
        Some(format!("{} schema {}", self.pg.address(), self.schema))
    }
}
