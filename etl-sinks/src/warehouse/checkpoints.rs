//! The checkpoint table the SQL sinks keep beside their targets: one row per (pipeline,
//! table), written in the run's own transaction and compared-and-swapped on the run id the
//! run started from, so two runs cannot both commit one window. One implementation for the
//! three warehouses: values bound where the driver takes parameters, literals in Snowflake.

use chrono::Utc;
use etl_core::kit::sql::Dialect;
use etl_core::{Checkpoint, Error, Result};

use super::session::{Session, SqlValue};

/// The checkpoint table's name, before a dialect folds it.
pub(crate) const TABLE: &str = "_etl_checkpoints";

/// The checkpoint table of one schema, in one dialect.
pub(crate) struct Checkpoints {
    dialect: Dialect,
    /// The schema and table as `information_schema` spells them.
    schema: String,
    name: String,
    /// Schema-qualified and quoted.
    table: String,
}

impl Checkpoints {
    /// The table `name` of `schema` (both as the warehouse stores them: Snowflake's in upper
    /// case).
    pub(crate) fn new(dialect: Dialect, schema: &str, name: &str) -> Self {
        Checkpoints {
            dialect,
            schema: schema.to_string(),
            name: name.to_string(),
            table: format!("{}.{}", dialect.quote(schema), dialect.quote(name)),
        }
    }

    /// The JSON column's type, and the casts a bound text and timestamp need.
    fn types(&self) -> (&'static str, &'static str, &'static str, &'static str) {
        match self.dialect {
            Dialect::Redshift => ("varchar(65535)", "::varchar(65535)", "::timestamptz", "::varchar"),
            // Literals carry their types.
            Dialect::Snowflake => ("VARCHAR", "", "", ""),
            _ => ("jsonb", "::text::jsonb", "::timestamptz", "::varchar"),
        }
    }

    /// `CREATE TABLE IF NOT EXISTS` of the table.
    pub(crate) fn create(&self) -> String {
        let (json, ..) = self.types();
        let (text, key, at) = match self.dialect {
            Dialect::Snowflake => ("VARCHAR", "", "TIMESTAMP_TZ"),
            _ => ("varchar", ", PRIMARY KEY (pipeline, table_name)", "timestamptz"),
        };
        let sized = |n: u32| {
            if self.dialect == Dialect::Snowflake {
                text.to_string()
            } else {
                format!("{text}({n})")
            }
        };
        format!(
            "CREATE TABLE IF NOT EXISTS {} (pipeline {} NOT NULL, table_name {} NOT NULL, \
             run_id {} NOT NULL, checkpoint {json} NOT NULL, committed_at {at} NOT NULL{key})",
            self.table,
            sized(512),
            sized(512),
            sized(256)
        )
    }

    /// The first checkpoint of a (pipeline, table): inserted only if none exists.
    fn insert_sql(&self) -> String {
        let (_, json, at, text) = self.types();
        format!(
            "INSERT INTO {t} (pipeline, table_name, run_id, checkpoint, committed_at) \
             SELECT $1{text}, $2{text}, $3{text}, $4{json}, $5{at} \
             WHERE NOT EXISTS (SELECT 1 FROM {t} WHERE pipeline = $1 AND table_name = $2)",
            t = self.table
        )
    }

    /// A later checkpoint: replaces the one the run started from (`$6`), or nothing.
    fn update_sql(&self) -> String {
        let (_, json, ..) = self.types();
        format!(
            "UPDATE {} SET run_id = $3, checkpoint = $4{json}, committed_at = $5 \
             WHERE pipeline = $1 AND table_name = $2 AND run_id = $6",
            self.table
        )
    }

    /// Whether the stored JSON column's type (as `information_schema` spells it) is this
    /// dialect's.
    fn ours(&self, column: &str) -> bool {
        let (made_as, ..) = self.types();
        match self.dialect {
            Dialect::Redshift => column == "character varying",
            Dialect::Snowflake => column.eq_ignore_ascii_case("TEXT"),
            _ => column == made_as,
        }
    }

    /// The last checkpoint of `table` in `pipeline`, if any.
    ///
    /// # Errors
    /// [`Error::Config`] when the schema holds a checkpoint table of another sink's making
    /// (the Postgres sink's `jsonb` one, read by the Redshift sink on Postgres);
    /// [`Error::Metadata`] when the stored checkpoint does not parse.
    pub(crate) async fn load(&self, db: &dyn Session, pipeline: &str, table: &str) -> Result<Option<Checkpoint>> {
        let text = |s: &str| SqlValue::Text(s.to_string());
        let column = db
            .text_with(
                "SELECT data_type FROM information_schema.columns \
                 WHERE table_schema = $1 AND table_name = $2 AND upper(column_name) = 'CHECKPOINT'",
                &[text(&self.schema), text(&self.name)],
            )
            .await?;
        let Some(column) = column else {
            return Ok(None);
        };
        if !self.ours(&column) {
            return Err(Error::config(format!(
                "table `{table}`: the checkpoint table {} keeps its checkpoints as {column}, not {}: \
                 another sink made it; give this sink a schema of its own",
                self.table,
                self.types().0
            )));
        }
        let json = if self.dialect == Dialect::Postgres {
            "checkpoint::text"
        } else {
            "checkpoint"
        };
        let stored = db
            .text_with(
                &format!(
                    "SELECT {json} FROM {} WHERE pipeline = $1 AND table_name = $2",
                    self.table
                ),
                &[text(pipeline), text(table)],
            )
            .await?;
        stored
            .map(|t| {
                serde_json::from_str::<Checkpoint>(&t).map_err(|e| Error::Metadata {
                    path: format!("{} ({pipeline}, {table})", self.table),
                    message: e.to_string(),
                })
            })
            .transpose()
    }

    /// Refuses to begin when another run committed `table` since this one started.
    pub(crate) async fn check_not_overtaken(
        &self,
        db: &dyn Session,
        pipeline: &str,
        table: &str,
        started_from: Option<&str>,
    ) -> Result<()> {
        let current = self.load(db, pipeline, table).await?;
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
        db: &dyn Session,
        pipeline: &str,
        table: &str,
        last: Option<&str>,
        cp: &Checkpoint,
    ) -> Result<()> {
        let json = serde_json::to_string(cp).map_err(|e| Error::config(e.to_string()))?;
        let mut values = vec![
            SqlValue::Text(pipeline.to_string()),
            SqlValue::Text(table.to_string()),
            SqlValue::Text(cp.run_id.clone()),
            SqlValue::Text(json),
            SqlValue::Timestamp(Utc::now()),
        ];
        let sql = match last {
            None => self.insert_sql(),
            Some(last) => {
                values.push(SqlValue::Text(last.to_string()));
                self.update_sql()
            }
        };
        // Two first runs at once: the key (Postgres) or serializable isolation stops the
        // second; a serialization failure a driver cannot name is the runner's to recognise.
        match db.exec_unless_raced(&sql, &values).await? {
            Some(1) => Ok(()),
            _ => Err(Error::ConcurrentRun {
                pipeline: pipeline.to_string(),
                table: table.to_string(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redshift_checkpoints_are_plain_text_with_no_upsert() {
        let cp = Checkpoints::new(Dialect::Redshift, "crm", TABLE);
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
            Checkpoints::new(Dialect::Postgres, "crm", TABLE)
                .create()
                .contains("checkpoint jsonb NOT NULL")
        );
    }
}
