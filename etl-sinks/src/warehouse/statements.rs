//! The statements of the three warehouses, as pure functions of the table and its columns,
//! golden-tested to the character below. The Redshift ones are also valid PostgreSQL, except
//! `COPY … FROM 's3://…'`, so that path runs on a local Postgres too.

use arrow::datatypes::{DataType, Field};
use etl_core::kit::sql::Dialect;
use etl_core::{Error, MergeStrategy, Result, TableSpec};

#[cfg(any(feature = "redshift", feature = "snowflake"))]
use super::types;

/// Redshift's staging table and its collapsed copy (temporary: one session each).
#[cfg(feature = "redshift")]
pub(crate) const STAGE: &str = "_etl_stage";
#[cfg(feature = "redshift")]
pub(crate) const LATEST: &str = "_etl_latest";
/// The arrival-order column of staged files.
#[cfg(any(feature = "redshift", feature = "snowflake"))]
pub(crate) const SEQ: &str = "_etl_seq";

/// How Redshift reads the staged files.
#[cfg(feature = "redshift")]
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum CopyAuth {
    IamRole(String),
    Keys {
        id: String,
        secret: etl_core::Secret,
        token: Option<etl_core::Secret>,
    },
}

/// The statements of one table's run.
pub(crate) struct Statements<'a> {
    pub(crate) dialect: Dialect,
    pub(crate) spec: &'a TableSpec,
    /// The staging table and its collapsed copy, as written in statements.
    pub(crate) stage: String,
    pub(crate) latest: String,
    /// The target, schema-qualified and quoted.
    pub(crate) target: String,
    /// The run's columns (without the arrival-order column).
    pub(crate) fields: Vec<Field>,
    /// Whether names are upper-cased before quoting (Snowflake folds unquoted names so).
    pub(crate) upper: bool,
}

impl Statements<'_> {
    /// A column's name as the statements write it.
    pub(crate) fn id(&self, name: &str) -> String {
        if self.upper {
            self.dialect.quote(&name.to_uppercase())
        } else {
            self.dialect.quote(name)
        }
    }

    fn quoted(&self) -> Vec<String> {
        self.fields.iter().map(|f| self.id(f.name())).collect()
    }

    fn cols(&self) -> String {
        self.quoted().join(", ")
    }

    fn key(&self) -> Vec<String> {
        self.spec.primary_key.iter().map(|c| self.id(c)).collect()
    }

    /// `target.k = s.k AND …`, the target named in full (Redshift's `DELETE … USING` takes no
    /// alias for it).
    fn on(&self) -> String {
        self.key()
            .iter()
            .map(|k| format!("{}.{k} = s.{k}", self.target))
            .collect::<Vec<_>>()
            .join(" AND ")
    }

    #[cfg(any(feature = "redshift", feature = "snowflake"))]
    /// How a scratch table is created: temporary in Redshift; transient (dropped after the
    /// run) in Snowflake, whose `COPY INTO` needs a schema-qualified table.
    fn create_scratch(&self) -> &'static str {
        match self.dialect {
            Dialect::Snowflake => "CREATE OR REPLACE TRANSIENT TABLE",
            _ => "CREATE TEMP TABLE",
        }
    }

    #[cfg(any(feature = "redshift", feature = "snowflake"))]
    /// The staging table: the run's columns and the arrival order.
    pub(crate) fn create_stage(&self) -> Result<String> {
        let mut fields: Vec<&Field> = self.fields.iter().collect();
        let seq = Field::new(SEQ, DataType::Int64, false);
        fields.push(&seq);
        let create = types::create_table(self.dialect, &self.spec.name, &self.stage, &fields, &[], self.upper)?;
        Ok(create.replacen("CREATE TABLE", self.create_scratch(), 1))
    }

    #[cfg(feature = "redshift")]
    /// Redshift's `COPY` of the staged Parquet files under `url` into the staging table.
    pub(crate) fn copy(&self, url: &str, auth: &CopyAuth) -> String {
        let lit = |s: &str| self.dialect.string_literal(s);
        let auth = match auth {
            CopyAuth::IamRole(arn) => format!("IAM_ROLE {}", lit(arn)),
            CopyAuth::Keys { id, secret, token } => {
                let mut a = format!("ACCESS_KEY_ID {} SECRET_ACCESS_KEY {}", lit(id), lit(secret.expose()));
                if let Some(t) = token {
                    a.push_str(&format!(" SESSION_TOKEN {}", lit(t.expose())));
                }
                a
            }
        };
        format!("COPY {} FROM {} {auth} FORMAT AS PARQUET", self.stage, lit(url))
    }

    #[cfg(feature = "snowflake")]
    /// Snowflake's `COPY INTO` of the staged Parquet files `from` (`@stage/path/`) into the
    /// staging table, columns matched by name.
    pub(crate) fn copy_into(&self, from: &str) -> String {
        format!(
            "COPY INTO {} FROM {from} FILE_FORMAT=(TYPE=PARQUET) MATCH_BY_COLUMN_NAME=CASE_INSENSITIVE",
            self.stage
        )
    }

    #[cfg(any(feature = "redshift", feature = "snowflake"))]
    /// A new table (FULL's table built aside, or a missing target), with `key` as its
    /// primary key (informational in Redshift; given when the mode merges by it).
    pub(crate) fn create_table(&self, qualified: &str, key: &[String]) -> Result<String> {
        let fields: Vec<&Field> = self.fields.iter().collect();
        types::create_table(self.dialect, &self.spec.name, qualified, &fields, key, self.upper)
    }

    /// `INSERT` of every row of `from` into `into`.
    pub(crate) fn insert_all(&self, into: &str, from: &str) -> String {
        let cols = self.cols();
        format!("INSERT INTO {into} ({cols}) SELECT {cols} FROM {from}")
    }

    #[cfg(feature = "postgres")]
    /// FULL's swap: the old target dropped, the new one renamed to its name (`name`, quoted:
    /// `ALTER TABLE … RENAME TO` takes no schema).
    pub(crate) fn swap(&self, aside: &str, exists: bool, name: &str) -> Vec<String> {
        let mut out = Vec::new();
        if exists {
            out.push(format!("DROP TABLE {}", self.target));
        }
        out.push(format!("ALTER TABLE {aside} RENAME TO {name}"));
        out
    }

    /// How many staged rows have a NULL in the key.
    pub(crate) fn null_keys(&self) -> String {
        let any: Vec<String> = self.key().iter().map(|k| format!("{k} IS NULL")).collect();
        format!("SELECT count(*) FROM {} WHERE {}", self.stage, any.join(" OR "))
    }

    #[cfg(any(feature = "redshift", feature = "snowflake"))]
    /// The staged rows collapsed to the latest per key: greatest cursor (NULLs oldest), then
    /// last arrival.
    pub(crate) fn collapse(&self) -> String {
        let mut order: Vec<String> = self
            .spec
            .cursor
            .iter()
            .map(|c| format!("{} DESC NULLS LAST", self.id(c)))
            .collect();
        order.push(format!("{} DESC", self.id(SEQ)));
        let cols = self.cols();
        format!(
            "{} {} AS SELECT {cols} FROM (SELECT {cols}, ROW_NUMBER() OVER \
             (PARTITION BY {} ORDER BY {}) AS _etl_n FROM {}) s WHERE _etl_n = 1",
            self.create_scratch(),
            self.latest,
            self.key().join(", "),
            order.join(", "),
            self.stage
        )
    }

    /// The predicate of a row marked deleted by the spec's soft-delete column.
    pub(crate) fn soft_deleted(&self, alias: &str) -> Result<Option<String>> {
        let Some(col) = &self.spec.soft_delete else {
            return Ok(None);
        };
        let field = self
            .fields
            .iter()
            .find(|f| f.name() == col)
            .ok_or_else(|| Error::ColumnNotFound {
                table: self.spec.name.clone(),
                column: col.clone(),
            })?;
        let c = format!("{alias}{}", self.id(col));
        Ok(Some(if field.data_type() == &DataType::Boolean {
            format!("{c} IS TRUE")
        } else {
            format!("{c} IS NOT NULL")
        }))
    }

    /// Soft deletes: the target rows of keys marked deleted, then those staged rows.
    pub(crate) fn soft_delete(&self) -> Result<Option<[String; 2]>> {
        let (Some(flag_s), Some(flag)) = (self.soft_deleted("s.")?, self.soft_deleted("")?) else {
            return Ok(None);
        };
        Ok(Some([
            format!(
                "DELETE FROM {t} USING {l} s WHERE {on} AND {flag_s}",
                t = self.target,
                l = self.latest,
                on = self.on()
            ),
            format!("DELETE FROM {} WHERE {flag}", self.latest),
        ]))
    }

    /// How many collapsed rows match a target row.
    pub(crate) fn matching(&self) -> String {
        format!(
            "SELECT count(*) FROM {l} s WHERE EXISTS (SELECT 1 FROM {t} WHERE {on})",
            t = self.target,
            l = self.latest,
            on = self.on()
        )
    }

    /// Clears the deletion mark ([`etl_core::Deletes::mark`]) of the target rows whose key
    /// the rows of `from` bring again.
    pub(crate) fn clear_marks(&self, from: &str) -> String {
        let mark = self.id(etl_core::DELETED_AT);
        format!(
            "UPDATE {t} SET {mark} = NULL WHERE {mark} IS NOT NULL AND EXISTS (SELECT 1 FROM {from} s WHERE {on})",
            t = self.target,
            on = self.on()
        )
    }

    /// The merge of the collapsed rows by the spec's strategy.
    pub(crate) fn merge(&self) -> Vec<String> {
        let cols = self.cols();
        let non_key: Vec<String> = self
            .fields
            .iter()
            .filter(|f| !self.spec.primary_key.contains(f.name()))
            .map(|f| self.id(f.name()))
            .collect();
        let insert_missing = format!(
            "INSERT INTO {t} ({cols}) SELECT {cols} FROM {l} s WHERE NOT EXISTS (SELECT 1 FROM {t} WHERE {on})",
            t = self.target,
            l = self.latest,
            on = self.on()
        );
        match self.spec.merge {
            MergeStrategy::UpdateInsert if !non_key.is_empty() => {
                let set: Vec<String> = non_key.iter().map(|c| format!("{c} = s.{c}")).collect();
                let values: Vec<String> = self.quoted().iter().map(|c| format!("s.{c}")).collect();
                let on: Vec<String> = self.key().iter().map(|k| format!("t.{k} = s.{k}")).collect();
                vec![format!(
                    "MERGE INTO {t} AS t USING {l} AS s ON {on} WHEN MATCHED THEN UPDATE SET {set} \
                     WHEN NOT MATCHED THEN INSERT ({cols}) VALUES ({values})",
                    t = self.target,
                    l = self.latest,
                    on = on.join(" AND "),
                    set = set.join(", "),
                    values = values.join(", ")
                )]
            }
            // Only key columns: nothing to update.
            MergeStrategy::UpdateInsert | MergeStrategy::InsertOnly => vec![insert_missing],
            MergeStrategy::DeleteInsert => vec![
                format!(
                    "DELETE FROM {t} USING {l} s WHERE {on}",
                    t = self.target,
                    l = self.latest,
                    on = self.on()
                ),
                self.insert_all(&self.target, &self.latest),
            ],
        }
    }
}

#[cfg(all(test, feature = "redshift"))]
mod tests {
    use super::*;
    use arrow::datatypes::TimeUnit;

    fn spec(merge: MergeStrategy) -> TableSpec {
        TableSpec::new("customers")
            .primary_key(["tenant", "customer_id"])
            .cursor(["updated_at"])
            .merge_strategy(merge)
    }

    fn statements(spec: &TableSpec) -> Statements<'_> {
        Statements {
            dialect: Dialect::Redshift,
            spec,
            stage: STAGE.into(),
            latest: LATEST.into(),
            target: r#""crm"."customers""#.into(),
            upper: false,
            fields: vec![
                Field::new("tenant", DataType::Utf8, false),
                Field::new("customer_id", DataType::Int64, false),
                Field::new("email", DataType::Utf8, true),
                Field::new("balance", DataType::Decimal128(12, 2), true),
                Field::new("updated_at", DataType::Timestamp(TimeUnit::Microsecond, None), true),
                Field::new("deleted", DataType::Boolean, true),
            ],
        }
    }

    #[test]
    fn copy_reads_the_staged_parquet_with_a_role_or_keys() {
        let url = "s3://lake/_etl/redshift/crm/customers/r1/";
        assert_eq!(
            statements(&spec(MergeStrategy::UpdateInsert))
                .copy(url, &CopyAuth::IamRole("arn:aws:iam::123456789012:role/etl".into())),
            "COPY _etl_stage FROM 's3://lake/_etl/redshift/crm/customers/r1/' \
             IAM_ROLE 'arn:aws:iam::123456789012:role/etl' FORMAT AS PARQUET"
        );
        let keys = CopyAuth::Keys {
            id: "AKIA".into(),
            secret: "s'cret".into(),
            token: Some("tok".into()),
        };
        assert_eq!(
            statements(&spec(MergeStrategy::UpdateInsert)).copy(url, &keys),
            "COPY _etl_stage FROM 's3://lake/_etl/redshift/crm/customers/r1/' ACCESS_KEY_ID 'AKIA' \
             SECRET_ACCESS_KEY 's''cret' SESSION_TOKEN 'tok' FORMAT AS PARQUET"
        );
    }

    #[test]
    fn tables_get_redshift_types() {
        let s = spec(MergeStrategy::UpdateInsert);
        let st = statements(&s);
        assert_eq!(
            st.create_stage().unwrap(),
            r#"CREATE TEMP TABLE _etl_stage ("tenant" varchar(65535), "customer_id" bigint, "email" varchar(65535), "balance" numeric(12,2), "updated_at" timestamp, "deleted" boolean, "_etl_seq" bigint)"#
        );
        assert_eq!(
            st.create_table(r#""crm"."_etl_new_r1_customers""#, &s.primary_key)
                .unwrap(),
            r#"CREATE TABLE "crm"."_etl_new_r1_customers" ("tenant" varchar(65535), "customer_id" bigint, "email" varchar(65535), "balance" numeric(12,2), "updated_at" timestamp, "deleted" boolean, PRIMARY KEY ("tenant", "customer_id"))"#
        );
        assert_eq!(
            st.swap(r#""crm"."_etl_new_r1_customers""#, true, r#""customers""#),
            [
                r#"DROP TABLE "crm"."customers""#,
                r#"ALTER TABLE "crm"."_etl_new_r1_customers" RENAME TO "customers""#
            ]
        );
    }

    #[test]
    fn upsert_collapses_by_cursor_then_arrival_and_merges() {
        let s = spec(MergeStrategy::UpdateInsert).soft_delete("deleted");
        let st = statements(&s);
        assert_eq!(
            st.null_keys(),
            r#"SELECT count(*) FROM _etl_stage WHERE "tenant" IS NULL OR "customer_id" IS NULL"#
        );
        assert_eq!(
            st.collapse(),
            r#"CREATE TEMP TABLE _etl_latest AS SELECT "tenant", "customer_id", "email", "balance", "updated_at", "deleted" FROM (SELECT "tenant", "customer_id", "email", "balance", "updated_at", "deleted", ROW_NUMBER() OVER (PARTITION BY "tenant", "customer_id" ORDER BY "updated_at" DESC NULLS LAST, "_etl_seq" DESC) AS _etl_n FROM _etl_stage) s WHERE _etl_n = 1"#
        );
        assert_eq!(
            st.soft_delete().unwrap().unwrap(),
            [
                r#"DELETE FROM "crm"."customers" USING _etl_latest s WHERE "crm"."customers"."tenant" = s."tenant" AND "crm"."customers"."customer_id" = s."customer_id" AND s."deleted" IS TRUE"#,
                r#"DELETE FROM _etl_latest WHERE "deleted" IS TRUE"#
            ]
        );
        assert_eq!(
            st.merge(),
            [
                r#"MERGE INTO "crm"."customers" AS t USING _etl_latest AS s ON t."tenant" = s."tenant" AND t."customer_id" = s."customer_id" WHEN MATCHED THEN UPDATE SET "email" = s."email", "balance" = s."balance", "updated_at" = s."updated_at", "deleted" = s."deleted" WHEN NOT MATCHED THEN INSERT ("tenant", "customer_id", "email", "balance", "updated_at", "deleted") VALUES (s."tenant", s."customer_id", s."email", s."balance", s."updated_at", s."deleted")"#
            ]
        );
    }

    #[test]
    fn delete_insert_and_insert_only() {
        let s = spec(MergeStrategy::DeleteInsert);
        assert_eq!(
            statements(&s).merge(),
            [
                r#"DELETE FROM "crm"."customers" USING _etl_latest s WHERE "crm"."customers"."tenant" = s."tenant" AND "crm"."customers"."customer_id" = s."customer_id""#,
                r#"INSERT INTO "crm"."customers" ("tenant", "customer_id", "email", "balance", "updated_at", "deleted") SELECT "tenant", "customer_id", "email", "balance", "updated_at", "deleted" FROM _etl_latest"#
            ]
        );
        let s = spec(MergeStrategy::InsertOnly);
        assert_eq!(
            statements(&s).merge(),
            [
                r#"INSERT INTO "crm"."customers" ("tenant", "customer_id", "email", "balance", "updated_at", "deleted") SELECT "tenant", "customer_id", "email", "balance", "updated_at", "deleted" FROM _etl_latest s WHERE NOT EXISTS (SELECT 1 FROM "crm"."customers" WHERE "crm"."customers"."tenant" = s."tenant" AND "crm"."customers"."customer_id" = s."customer_id")"#
            ]
        );
    }

    #[test]
    fn types_redshift_cannot_hold_are_named() {
        let s = spec(MergeStrategy::UpdateInsert);
        let mut st = statements(&s);
        st.fields.push(Field::new(
            "tags",
            DataType::List(std::sync::Arc::new(Field::new("item", DataType::Utf8, true))),
            true,
        ));
        let err = st.create_stage().unwrap_err().to_string();
        assert!(err.contains("`tags`") && err.contains("Redshift"), "{err}");
    }
}

#[cfg(all(test, feature = "snowflake"))]
mod snowflake_tests {
    use super::*;
    use arrow::datatypes::TimeUnit;

    #[test]
    fn upsert_statements_in_snowflake_upper_case_and_merge() {
        let spec = TableSpec::new("customers")
            .primary_key(["customer_id"])
            .cursor(["updated_at"])
            .merge_strategy(MergeStrategy::UpdateInsert);
        let st = Statements {
            dialect: Dialect::Snowflake,
            spec: &spec,
            target: r#""CRM"."CUSTOMERS""#.into(),
            stage: r#""CRM"."_ETL_STAGE_R1_CUSTOMERS""#.into(),
            latest: r#""CRM"."_ETL_LATEST_R1_CUSTOMERS""#.into(),
            fields: vec![
                Field::new("customer_id", DataType::Int64, false),
                Field::new("email", DataType::Utf8, true),
                Field::new("updated_at", DataType::Timestamp(TimeUnit::Microsecond, None), true),
            ],
            upper: true,
        };
        assert_eq!(
            st.create_stage().unwrap(),
            r#"CREATE OR REPLACE TRANSIENT TABLE "CRM"."_ETL_STAGE_R1_CUSTOMERS" ("CUSTOMER_ID" number(38,0), "EMAIL" varchar, "UPDATED_AT" timestamp_ntz, "_ETL_SEQ" number(38,0))"#
        );
        assert_eq!(
            st.copy_into(r#"@"CRM"."_ETL_FILES_R1_CUSTOMERS""#),
            r#"COPY INTO "CRM"."_ETL_STAGE_R1_CUSTOMERS" FROM @"CRM"."_ETL_FILES_R1_CUSTOMERS" FILE_FORMAT=(TYPE=PARQUET) MATCH_BY_COLUMN_NAME=CASE_INSENSITIVE"#
        );
        assert_eq!(
            st.merge(),
            [
                r#"MERGE INTO "CRM"."CUSTOMERS" AS t USING "CRM"."_ETL_LATEST_R1_CUSTOMERS" AS s ON t."CUSTOMER_ID" = s."CUSTOMER_ID" WHEN MATCHED THEN UPDATE SET "EMAIL" = s."EMAIL", "UPDATED_AT" = s."UPDATED_AT" WHEN NOT MATCHED THEN INSERT ("CUSTOMER_ID", "EMAIL", "UPDATED_AT") VALUES (s."CUSTOMER_ID", s."EMAIL", s."UPDATED_AT")"#
            ]
        );
        assert_eq!(
            Dialect::Snowflake.string_literal(r#"{"a":"it's \"q\" \\"}"#),
            r#"'{"a":"it''s \\"q\\" \\\\"}'"#
        );
    }
}
