//! The checkpoint table the SQL sinks keep beside their targets: one row per (pipeline,
//! table), written in the run's own transaction and compared-and-swapped on the run id the
//! run started from, so two runs cannot both commit one window.

use chrono::Utc;
use etl_connectors::postgres::{PgClient, pg_err};
use etl_core::kit::sql::Dialect;
use etl_core::{Checkpoint, Error, Result};
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
    ///
    /// # Errors
    /// [`Error::Config`] when the schema holds a checkpoint table of another sink's making
    /// (the Postgres sink's `jsonb` one, read by the Redshift sink on Postgres);
    /// [`Error::Metadata`] when the stored checkpoint does not parse.
    pub(crate) async fn load(&self, client: &PgClient, pipeline: &str, table: &str) -> Result<Option<Checkpoint>> {
        let err = |e| pg_err(table, e);
        let column: Option<String> = client
            .call(client.query_opt(
                "SELECT data_type::varchar FROM information_schema.columns
                  WHERE table_schema = $1 AND table_name = $2 AND column_name = 'checkpoint'",
                &[&self.schema, &TABLE],
            ))
            .await?
            .map(|r| r.try_get(0))
            .transpose()
            .map_err(err)?;
        let Some(column) = column else {
            return Ok(None);
        };
        // `information_schema` spells the JSON column's type as this dialect made it.
        let (made_as, _) = self.json();
        let ours = match self.dialect {
            Dialect::Redshift => column == "character varying",
            _ => column == made_as,
        };
        if !ours {
            return Err(Error::config(format!(
                "table `{table}`: the checkpoint table {} keeps its checkpoints as {column}, not {made_as}: \
                 another sink made it; give this sink a schema of its own",
                self.table
            )));
        }
        let text = if self.dialect == Dialect::Redshift {
            "checkpoint"
        } else {
            "checkpoint::text"
        };
        let row = client
            .call(client.query_opt(
                &format!(
                    "SELECT {text} FROM {} WHERE pipeline = $1 AND table_name = $2",
                    self.table
                ),
                &[&pipeline, &table],
            ))
            .await?;
        row.map(|r| {
            let text: &str = r.try_get(0).map_err(err)?;
            serde_json::from_str::<Checkpoint>(text).map_err(|e| Error::Metadata {
                path: format!("{} ({pipeline}, {table})", self.table),
                message: e.to_string(),
            })
        })
        .transpose()
    }

    /// Refuses to begin when another run committed `table` since this one started.
    pub(crate) async fn check_not_overtaken(
        &self,
        client: &PgClient,
        pipeline: &str,
        table: &str,
        started_from: Option<&str>,
    ) -> Result<()> {
        let current = self.load(client, pipeline, table).await?;
        if current.as_ref().map(|c| c.run_id.as_str()) != started_from {
            return Err(Error::ConcurrentRun {
                pipeline: pipeline.to_string(),
                table: table.to_string(),
            });
        }
        Ok(())
    }

    /// Stores `cp` as the last checkpoint, only if the last one is still `last` (the one the
    /// run started from); otherwise [`Error::ConcurrentRun`]. Runs in the caller's
    /// transaction.
    pub(crate) async fn store(
        &self,
        client: &PgClient,
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
                    .timed(client.execute(&self.insert_sql(), &[&pipeline, &table, &cp.run_id, &json, &now]))
                    .await?
            }
            Some(last) => {
                client
                    .timed(client.execute(&self.update_sql(), &[&pipeline, &table, &cp.run_id, &json, &now, &last]))
                    .await?
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
