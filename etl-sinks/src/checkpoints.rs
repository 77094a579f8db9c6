//! The checkpoint table the SQL sinks keep beside their targets: one row per (pipeline,
//! table), written in the run's own transaction and compared-and-swapped on the run id the
//! run started from, so two runs cannot both commit one window.

use chrono::Utc;
use etl_connectors::postgres::pg_err;
use etl_core::sql::Dialect;
use etl_core::{Checkpoint, Error, Result};
use tokio_postgres::Client;
use tokio_postgres::error::SqlState;

pub(crate) const TABLE: &str = "_etl_checkpoints";

/// The checkpoint table of one schema, in one dialect.
pub(crate) struct Checkpoints {
    dialect: Dialect,
    schema: String,
    table: String,
}

impl Checkpoints {
    pub(crate) fn new(dialect: Dialect, schema: &str) -> Self {
        Checkpoints {
            dialect,
            schema: schema.to_string(),
            table: format!("{}.{}", dialect.quote(schema), dialect.quote(TABLE)),
        }
    }

    /// The JSON column's type and how a text parameter becomes one.
    fn json(&self) -> (&'static str, &'static str) {
        match self.dialect {
            Dialect::Redshift => ("varchar(65535)", "::varchar(65535)"),
            _ => ("jsonb", "::text::jsonb"),
        }
    }

    /// `CREATE TABLE IF NOT EXISTS` of the table.
    pub(crate) fn create(&self) -> String {
        let (json, _) = self.json();
        format!(
            "CREATE TABLE IF NOT EXISTS {} (pipeline varchar(512) NOT NULL, table_name varchar(512) NOT NULL, \
             run_id varchar(256) NOT NULL, checkpoint {json} NOT NULL, committed_at timestamptz NOT NULL, \
             PRIMARY KEY (pipeline, table_name))",
            self.table
        )
    }

    /// The first checkpoint of a (pipeline, table): inserted only if none exists.
    fn insert_sql(&self) -> String {
        let (_, cast) = self.json();
        format!(
            "INSERT INTO {t} (pipeline, table_name, run_id, checkpoint, committed_at) \
             SELECT $1::varchar, $2::varchar, $3::varchar, $4{cast}, $5::timestamptz \
             WHERE NOT EXISTS (SELECT 1 FROM {t} WHERE pipeline = $1 AND table_name = $2)",
            t = self.table
        )
    }

    /// A later checkpoint: replaces the one the run started from (`$6`), or nothing.
    fn update_sql(&self) -> String {
        let (_, cast) = self.json();
        format!(
            "UPDATE {} SET run_id = $3, checkpoint = $4{cast}, committed_at = $5 \
             WHERE pipeline = $1 AND table_name = $2 AND run_id = $6",
            self.table
        )
    }

    /// The last checkpoint of `table` in `pipeline`, if any.
    pub(crate) async fn load(&self, client: &Client, pipeline: &str, table: &str) -> Result<Option<Checkpoint>> {
        let exists: i64 = client
            .query_one(
                "SELECT count(*) FROM information_schema.tables WHERE table_schema = $1 AND table_name = $2",
                &[&self.schema, &TABLE],
            )
            .await
            .map_err(|e| pg_err(table, e))?
            .get(0);
        if exists == 0 {
            return Ok(None);
        }
        let text = if self.dialect == Dialect::Redshift {
            "checkpoint"
        } else {
            "checkpoint::text"
        };
        let row = client
            .query_opt(
                &format!(
                    "SELECT {text} FROM {} WHERE pipeline = $1 AND table_name = $2",
                    self.table
                ),
                &[&pipeline, &table],
            )
            .await
            .map_err(|e| pg_err(table, e))?;
        row.map(|r| {
            serde_json::from_str::<Checkpoint>(r.get(0)).map_err(|e| Error::Metadata {
                path: format!("{} ({pipeline}, {table})", self.table),
                message: e.to_string(),
            })
        })
        .transpose()
    }

    /// Stores `cp` as the last checkpoint, only if the last one is still `last` (the one the
    /// run started from); otherwise [`Error::ConcurrentRun`]. Runs in the caller's
    /// transaction.
    pub(crate) async fn store(
        &self,
        client: &Client,
        pipeline: &str,
        table: &str,
        last: Option<&str>,
        cp: &Checkpoint,
    ) -> Result<()> {
        let json = serde_json::to_string(cp).map_err(|e| Error::config(e.to_string()))?;
        let now = Utc::now();
        let concurrent = || Error::ConcurrentRun {
            pipeline: pipeline.to_string(),
            table: table.to_string(),
        };
        let stored = match last {
            None => {
                client
                    .execute(&self.insert_sql(), &[&pipeline, &table, &cp.run_id, &json, &now])
                    .await
            }
            Some(last) => {
                client
                    .execute(&self.update_sql(), &[&pipeline, &table, &cp.run_id, &json, &now, &last])
                    .await
            }
        };
        match stored {
            Ok(1) => Ok(()),
            Ok(_) => Err(concurrent()),
            // Two first runs at once: the key (Postgres) or serializable isolation (Redshift)
            // stops the second.
            Err(e)
                if e.code() == Some(&SqlState::UNIQUE_VIOLATION)
                    || e.code() == Some(&SqlState::T_R_SERIALIZATION_FAILURE)
                    || e.to_string().contains("Serializable isolation violation") =>
            {
                Err(concurrent())
            }
            Err(e) => Err(pg_err(table, e)),
        }
    }
}

/// A writer's connection: statements whose errors name the writer's table.
pub(crate) struct Session {
    client: Client,
    table: String,
}

impl std::ops::Deref for Session {
    type Target = Client;

    fn deref(&self) -> &Client {
        &self.client
    }
}

impl Session {
    pub(crate) fn new(client: Client, table: &str) -> Self {
        Session {
            client,
            table: table.to_string(),
        }
    }

    /// Maps a driver error to one naming the table.
    pub(crate) fn err(&self) -> impl Fn(tokio_postgres::Error) -> Error + '_ {
        |e| pg_err(&self.table, e)
    }

    /// Runs a statement; returns the rows it touched.
    pub(crate) async fn exec(&self, sql: &str) -> Result<u64> {
        self.client.execute(sql, &[]).await.map_err(self.err())
    }

    /// Runs a `SELECT count(*) …`.
    pub(crate) async fn count(&self, sql: &str) -> Result<u64> {
        let n: i64 = self.client.query_one(sql, &[]).await.map_err(self.err())?.get(0);
        Ok(n as u64)
    }

    /// Refuses to begin when another run committed the table since this one started.
    pub(crate) async fn check_not_overtaken(
        &self,
        checkpoints: &Checkpoints,
        pipeline: &str,
        started_from: Option<&str>,
    ) -> Result<()> {
        let current = checkpoints.load(&self.client, pipeline, &self.table).await?;
        if current.as_ref().map(|c| c.run_id.as_str()) != started_from {
            return Err(Error::ConcurrentRun {
                pipeline: pipeline.to_string(),
                table: self.table.clone(),
            });
        }
        Ok(())
    }

    /// The error of an upsert batch with NULLs in its key.
    pub(crate) fn null_keys(&self, connector: &'static str, nulls: u64, key: &[String]) -> Error {
        crate::sql::null_key_error(connector, &self.table, nulls, key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redshift_checkpoints_are_plain_text_with_no_upsert() {
        let cp = Checkpoints::new(Dialect::Redshift, "crm");
        assert_eq!(
            cp.create(),
            r#"CREATE TABLE IF NOT EXISTS "crm"."_etl_checkpoints" (pipeline varchar(512) NOT NULL, table_name varchar(512) NOT NULL, run_id varchar(256) NOT NULL, checkpoint varchar(65535) NOT NULL, committed_at timestamptz NOT NULL, PRIMARY KEY (pipeline, table_name))"#
        );
        assert_eq!(
            cp.insert_sql(),
            r#"INSERT INTO "crm"."_etl_checkpoints" (pipeline, table_name, run_id, checkpoint, committed_at) SELECT $1::varchar, $2::varchar, $3::varchar, $4::varchar(65535), $5::timestamptz WHERE NOT EXISTS (SELECT 1 FROM "crm"."_etl_checkpoints" WHERE pipeline = $1 AND table_name = $2)"#
        );
        assert_eq!(
            cp.update_sql(),
            r#"UPDATE "crm"."_etl_checkpoints" SET run_id = $3, checkpoint = $4::varchar(65535), committed_at = $5 WHERE pipeline = $1 AND table_name = $2 AND run_id = $6"#
        );
        assert!(
            Checkpoints::new(Dialect::Postgres, "crm")
                .create()
                .contains("checkpoint jsonb NOT NULL")
        );
    }
}
