//! Pipelines from configuration files: TOML (`.toml`), YAML (`.yaml`, `.yml`) or JSON
//! (`.json`), the same model.
//!
//! A file names the source, the sink, the watermark store and the tables — everything
//! [`crate::PipelineBuilder`] and [`crate::TableSpec`] can say but transforms of your own
//! code (a file has `select`, `rename`, `cast` and `not_null`). An
//! error in the file names the file, the line and the key:
//! `pipeline.toml, line 14, key tables[1].mode: unknown load mode "UPSRT"; expected one of …`.
//!
//! ```toml
//! name = "crm"
//!
//! [source]
//! kind = "postgres"            # postgres | mysql | files | sql (queries across sources)
//! url = "postgresql://etl@db/crm"
//!
//! [sink]
//! kind = "lake"                # lake | delta | postgres | redshift | snowflake
//! location = "lake"            # a folder (relative to this file), file:///…, s3://bucket/prefix
//!
//! # [watermarks] defaults to `_etl/watermarks` in a lake, the target schema in Postgres.
//!
//! [[tables]]
//! name = "orders"
//! from = "public.orders"       # or: query = "SELECT …", or: files = { prefix = "orders/", format = "csv" }
//! mode = "UPSERT"
//! primary_key = "order_id"     # a column or a list
//! cursor = "updated_at"
//! lookback = "10m"
//! partition_by = { date = "order_date" }   # year=/month=/day=, or { processing_date = true }, or
//! # { columns = [{ name = "date", column = "order_date", format = "%Y-%m-%d" }, "device_id"] }
//! reconcile = { policy = "repair", columns = ["price"] }
//! ```
//!
//! Secrets by reference: in `url`, `location` and `schema`, `${env:NAME}` is the environment
//! variable, `${file:PATH}` a file's text (trimmed; relative to the configuration's folder),
//! and with the feature `aws` `${ssm:NAME}` an SSM parameter (decrypted) and
//! `${secretsmanager:ID}` (or `ID#field`, a field of its JSON) a Secrets Manager secret —
//! resolved when the pipeline is built: `url = "postgresql://etl:${env:PG_PASSWORD}@db/crm"`.
//! A resolved value is never printed: errors name the reference, and the connectors never
//! repeat a connection string.
//!
//! The per-table keys of Glue-style frameworks are accepted as they are: `target_table` for
//! `target`, `timestamp_column` for `cursor`, `operations` for `mode`.
//!
//! ```
//! let dir = tempfile::tempdir().unwrap();
//! let path = dir.path().join("pipeline.toml");
//! std::fs::write(&path, r#"
//! name = "demo"
//! source = { kind = "files", location = "landing" }
//! sink = { kind = "lake", location = "lake" }
//! [[tables]]
//! name = "orders"
//! files = { prefix = "orders/", format = "csv" }
//! operations = "INCREMENTAL"
//! "#).unwrap();
//! let config = etl::config::PipelineConfig::load(&path).unwrap();
//! assert_eq!(config.tables[0].mode, etl::LoadMode::Incremental);
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let pipeline = config.build().await.unwrap();
//! assert_eq!(pipeline.name(), "demo");
//! # });
//!
//! std::fs::write(&path, "name = \"demo\"\n[source]\nkind = \"files\"\nlocation = 3\n").unwrap();
//! let err = etl::config::PipelineConfig::load(&path).unwrap_err().to_string();
//! assert!(err.contains("pipeline.toml, line 4, key source.location"), "{err}");
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;

use etl_core::{
    BadRows, Deletes, Error, FileDrops, FileFormat, LoadMode, Location, MergeStrategy, NullCursors,
    ObjectStoreWatermarkStore, PartitionKey, Partitioning, Pipeline, Reconcile, ReconcilePolicy, Result, Sink, Source,
    SourceRef, TableSpec, TargetLost, WatermarkStore,
};
use serde::{Deserialize, Deserializer, Serialize};

/// A pipeline as a configuration file says it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// The pipeline's name (the key of its watermarks).
    pub name: String,
    /// Where the rows come from: `postgres` (`url`, `parallelism`), `mysql` (`url`,
    /// `parallelism`), `files` (`location`) or `sql` (`inputs`: queries across tables of
    /// those, run by DataFusion).
    pub source: Endpoint,
    /// Where they go: `lake` or `delta` (`location`), `postgres` (`url`, `schema`), `redshift` (`url`,
    /// `schema`, `staging`, `staging_url`, and `iam_role`, `access_key_id` with
    /// `secret_access_key`, or `postgres_stand_in`) or `snowflake` (`account`, `user`,
    /// `password` or `private_key`, `database`, `warehouse`, `role`, `schema`, `staging`, and
    /// `stage`, or `staging_url` with an optional `integration`; `emulator`); the watermarks
    /// of the last two by default under `<staging>/_etl/watermarks`.
    pub sink: Endpoint,
    /// Where watermarks are kept: `object_store` (`location`). Default: under
    /// `_etl/watermarks` of a lake, in the target schema of a Postgres sink.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watermarks: Option<Endpoint>,
    /// The tables, in order.
    pub tables: Vec<TableConfig>,
    /// What follows a run: a crawl of the lake, its tables in the Glue Data Catalog, the
    /// run's figures in CloudWatch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_run: Option<AfterRun>,
    /// The folder relative locations are taken from (the file's own; not in the file).
    #[serde(skip)]
    pub base: PathBuf,
    /// The file it was read from, which errors name (not in the file).
    #[serde(skip)]
    pub file: PathBuf,
}

/// What reads or writes rows, or keeps watermarks: a kind and its options (each kind takes
/// some of them; an option the kind does not take is an error).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    /// `postgres`, `mysql` or `files` (a source); `lake`, `delta`, `postgres`, `redshift` or
    /// `snowflake` (a sink); `object_store` (watermarks).
    pub kind: String,
    /// A database's connection string (`postgresql://…`, `mysql://…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// A folder (relative to the file), `file:///…`, `s3://bucket/prefix` or `memory://`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// A Postgres sink's schema (default `public`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    /// A database source's connections per whole-table read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallelism: Option<usize>,
    /// A Redshift sink's staging location (where it writes the Parquet files `COPY` reads).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub staging: Option<String>,
    /// The URL Redshift reads the staging location at, when not its own (`s3://…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub staging_url: Option<String>,
    /// A Redshift sink's `COPY … IAM_ROLE` (the recommended credentials).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iam_role: Option<String>,
    /// A Redshift sink's `COPY … ACCESS_KEY_ID` (with `secret_access_key`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key_id: Option<String>,
    /// A Redshift sink's `COPY … SECRET_ACCESS_KEY` (a reference, best).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_access_key: Option<String>,
    /// A Redshift sink on PostgreSQL standing in for Redshift (the staged files sent by
    /// `COPY … FROM STDIN`; for tests and local runs).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub postgres_stand_in: bool,
    /// A Snowflake sink's account identifier (`myorg-myaccount`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    /// A Snowflake sink's user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// A Snowflake sink's password (a reference, best: `${ssm:/etl/snowflake/password}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// A Snowflake sink's private key, PEM (PKCS#8), for key-pair login (`${file:rsa_key.p8}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key: Option<String>,
    /// A Snowflake sink's database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// A Snowflake sink's warehouse.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warehouse: Option<String>,
    /// A Snowflake sink's role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// A Snowflake sink's external stage over the staging location (`ETL_STAGE`); without
    /// one, a temporary stage on `staging_url` (through `integration`, if given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    /// A Snowflake sink's storage integration for a temporary stage on `staging_url`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub integration: Option<String>,
    /// A Snowflake sink's fakesnow emulator (`http://127.0.0.1:9103`), for local runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub emulator: Option<String>,
    /// An `sql` source's inputs: the tables of other sources its queries name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inputs: Vec<InputConfig>,
}

/// A table an `sql` source's queries read from another source
/// (`[[source.inputs]] name = "customers"`, `source = { kind = "mysql", url = "…" }`,
/// `from = "crm.customers"`), read whole each run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputConfig {
    /// The name queries give it.
    pub name: String,
    /// The source it is read from (`postgres`, `mysql` or `files`).
    pub source: Endpoint,
    /// The relation (default: the name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// A query its database runs instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// The files a file source reads for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<FilesConfig>,
}

impl Endpoint {
    /// The option `key` this kind needs.
    fn needs<'a>(&self, what: &str, key: &str, value: &'a Option<String>) -> Result<&'a str> {
        value
            .as_deref()
            .ok_or_else(|| Error::config(format!("{what} of kind `{}` needs `{key}`", self.kind)))
    }

    /// The endpoint with the references of its `url`, `location` and `schema` resolved
    /// (kept only while the pipeline is built).
    async fn resolved(&self, what: &str, base: &Path, refs: &References) -> Result<Endpoint> {
        let mut out = self.clone();
        for (key, value) in [
            ("url", &mut out.url),
            ("location", &mut out.location),
            ("schema", &mut out.schema),
            ("staging", &mut out.staging),
            ("staging_url", &mut out.staging_url),
            ("iam_role", &mut out.iam_role),
            ("access_key_id", &mut out.access_key_id),
            ("secret_access_key", &mut out.secret_access_key),
            ("account", &mut out.account),
            ("user", &mut out.user),
            ("password", &mut out.password),
            ("private_key", &mut out.private_key),
            ("database", &mut out.database),
            ("warehouse", &mut out.warehouse),
            ("role", &mut out.role),
            ("stage", &mut out.stage),
            ("integration", &mut out.integration),
            ("emulator", &mut out.emulator),
        ] {
            if let Some(v) = value {
                *v = refs.resolve(&format!("{what}.{key}"), v, base).await?;
            }
        }
        Ok(out)
    }

    /// Refuses the options this kind does not take.
    fn only(&self, what: &str, takes: &[&str]) -> Result<()> {
        let given = [
            ("url", self.url.is_some()),
            ("location", self.location.is_some()),
            ("schema", self.schema.is_some()),
            ("parallelism", self.parallelism.is_some()),
            ("staging", self.staging.is_some()),
            ("staging_url", self.staging_url.is_some()),
            ("iam_role", self.iam_role.is_some()),
            ("access_key_id", self.access_key_id.is_some()),
            ("secret_access_key", self.secret_access_key.is_some()),
            ("postgres_stand_in", self.postgres_stand_in),
            ("account", self.account.is_some()),
            ("user", self.user.is_some()),
            ("password", self.password.is_some()),
            ("private_key", self.private_key.is_some()),
            ("database", self.database.is_some()),
            ("warehouse", self.warehouse.is_some()),
            ("role", self.role.is_some()),
            ("stage", self.stage.is_some()),
            ("integration", self.integration.is_some()),
            ("emulator", self.emulator.is_some()),
            ("inputs", !self.inputs.is_empty()),
        ];
        match given.iter().find(|(k, set)| *set && !takes.contains(k)) {
            Some((k, _)) => Err(Error::config(format!(
                "{what} of kind `{}` takes no `{k}` (it takes {})",
                self.kind,
                takes.join(", ")
            ))),
            None => Ok(()),
        }
    }
}

/// What follows a run ([`PipelineConfig::publish`]).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AfterRun {
    /// Crawl a lake sink into its catalog (`_etl/catalog`) after a run that committed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub crawl: bool,
    /// Register the lake's crawled tables in this Glue database (feature `aws`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub glue_database: Option<String>,
    /// The lake's location as Athena reads it (`s3://bucket/prefix`; default: the sink's
    /// location).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub glue_location: Option<String>,
    /// Send each run's per-table figures to CloudWatch under this namespace (feature `aws`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloudwatch_namespace: Option<String>,
}

/// The files a file source reads for a table (`files = { prefix = "orders/", format = "csv" }`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilesConfig {
    /// The prefix under the source's location.
    pub prefix: String,
    /// `csv` (default), `json` (JSON lines) or `parquet`.
    #[serde(default = "csv")]
    pub format: String,
    /// CSV: whether the first line names the columns (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<bool>,
    /// CSV: the field delimiter (default `,`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delimiter: Option<char>,
    /// CSV: the quote character (default `"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quote: Option<char>,
    /// CSV: the values read as NULL (default `["", "NULL"]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub null_markers: Option<Vec<String>>,
    /// CSV: infer numbers with a fraction as exact decimals rather than doubles.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub decimals: bool,
    /// `together` (default: every file under the prefix) or `newest` (each drop holds the
    /// whole table; see [`FileDrops`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drops: Option<String>,
}

fn csv() -> String {
    "csv".to_string()
}

fn yes() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

fn full() -> LoadMode {
    LoadMode::Full
}

/// One table, as the file says it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableConfig {
    /// The table's name in the pipeline.
    pub name: String,
    /// The source relation (default: the name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// A query the database source runs instead of reading a relation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// Files the file source reads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<FilesConfig>,
    /// The target table (default: the name's last part).
    #[serde(default, alias = "target_table", skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// `FULL` (default), `INCREMENTAL`, `TRUNCATE_INSERT`, `UPSERT` or `APPEND`.
    #[serde(default = "full", alias = "operations")]
    pub mode: LoadMode,
    /// The primary key: a column or a list.
    #[serde(default, deserialize_with = "one_or_many", skip_serializing_if = "Vec::is_empty")]
    pub primary_key: Vec<String>,
    /// The cursor: a column or a list.
    #[serde(
        default,
        alias = "timestamp_column",
        deserialize_with = "one_or_many",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub cursor: Vec<String>,
    /// Rows this much older than the watermark are read again (`10m`, `1h`, `2d`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lookback: Option<String>,
    /// A first incremental run reads only this far back (`30d`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_window: Option<String>,
    /// Rows are read once they are this old by the database's clock (`5m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settle: Option<String>,
    /// `{ date = "column" }`, `{ processing_date = true }` or `{ columns = [...] }`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition_by: Option<PartitionConfig>,
    /// Keep only the latest row per key of a run's rows.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub keep_latest: bool,
    /// Add an `etl_processed_at` column (default true).
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub processed_at: bool,
    /// `fail` (default) or `divert` rows that cannot be parsed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bad_rows: Option<String>,
    /// Incremental reads in chunks of this many rows, each committed on its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunk_rows: Option<usize>,
    /// A soft-delete column the source keeps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soft_delete: Option<String>,
    /// `fail` (default) or `reload` when the target lost what the watermark stands for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_target_lost: Option<String>,
    /// Migration from a Glue job: the first run starts from the timestamp in this file (a
    /// `timestamp.csv` with or without a header, or `last_processed_timestamp.txt`), a path
    /// under the watermark store's location
    /// ([`ObjectStoreWatermarkStore::with_legacy_timestamp_file`]).
    #[serde(default, alias = "timestamp_s3_path", skip_serializing_if = "Option::is_none")]
    pub legacy_timestamp_file: Option<String>,
    /// Whether a failure of this table fails the run (default true).
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub required: bool,
    /// Find rows deleted at the source ([`Deletes`]; `{}` for the defaults).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detect_deletes: Option<DeletesConfig>,
    /// Reconcile the target with the source after each run ([`Reconcile`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconcile: Option<ReconcileConfig>,
    /// Transforms applied to every batch, in order: `[{ select = ["id", "name"] }, { rename =
    /// { name = "customer_name" } }, { cast = { price = "double" } }, { not_null = "id" }]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub transforms: Vec<TransformConfig>,
    /// How `UPSERT` merges: `update_insert` (default), `delete_insert` or `insert_only`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merge: Option<String>,
    /// Rows whose cursor columns are all NULL: `fail` (default) or `whole_reads_only`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub null_cursors: Option<String>,
    /// An incremental database read ends below transactions still in flight (default true).
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub wait_for_commits: bool,
    /// The columns a file source reads with instead of inferring them, in order:
    /// `[{ name = "id", type = "bigint" }, { name = "note", type = "text" }]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub schema: Vec<ColumnConfig>,
}

/// One column of a table's `schema`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnConfig {
    /// The column's name.
    pub name: String,
    /// Its type, as `cast` takes them.
    #[serde(rename = "type")]
    pub data_type: String,
    /// Whether it may hold NULL (default true).
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub nullable: bool,
}

/// One transform of a table ([`etl_core::transform`]); a file says what code would with
/// `Select`, `Rename`, `Cast` and `Filter::not_null`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum TransformConfig {
    /// Keeps these columns, in this order.
    Select(Vec<String>),
    /// Renames columns: `{ old = "new" }`.
    Rename(std::collections::BTreeMap<String, String>),
    /// Casts columns: `{ price = "double" }` — SQL names (`bigint`, `int`, `double`, `text`,
    /// `date`, `timestamp`, `boolean`, `decimal(10,2)`) or Arrow's (`Int64`, `Utf8`).
    Cast(std::collections::BTreeMap<String, String>),
    /// Keeps the rows where these columns are not NULL.
    #[serde(deserialize_with = "one_or_many")]
    NotNull(Vec<String>),
}

/// An Arrow type by its SQL name or Arrow's own.
fn data_type(name: &str) -> Option<etl_core::deps::arrow::datatypes::DataType> {
    use etl_core::deps::arrow::datatypes::{DataType, TimeUnit};
    let lower = name.trim().to_ascii_lowercase();
    Some(match lower.as_str() {
        "bigint" | "int8" | "long" => DataType::Int64,
        "int" | "integer" | "int4" => DataType::Int32,
        "smallint" | "int2" => DataType::Int16,
        "double" | "double precision" | "float8" | "float" => DataType::Float64,
        "real" | "float4" => DataType::Float32,
        "text" | "string" | "varchar" => DataType::Utf8,
        "boolean" | "bool" => DataType::Boolean,
        "date" => DataType::Date32,
        "timestamp" => DataType::Timestamp(TimeUnit::Microsecond, None),
        "timestamptz" => DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into())),
        _ => {
            if let Some(args) = lower
                .strip_prefix("decimal(")
                .or_else(|| lower.strip_prefix("numeric("))
            {
                let (p, s) = args.strip_suffix(')')?.split_once(',')?;
                return Some(DataType::Decimal128(p.trim().parse().ok()?, s.trim().parse().ok()?));
            }
            return name.parse().ok();
        }
    })
}

/// How a table is partitioned in a lake: `{ date = "column" }` (`year=/month=/day=` of a
/// date or timestamp column), `{ processing_date = true }` (of the run's start), or
/// `{ columns = [...] }` (`name=value` folders of any columns, [`PartitionKey`]).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartitionConfig {
    /// The date or timestamp column of `year=/month=/day=` folders.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date: Option<String>,
    /// `processing_year=/…` folders of the run's start.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub processing_date: bool,
    /// `name=value` folders, outermost first: `["device_id", { name = "date", column =
    /// "order_date", format = "%Y-%m-%d" }]` ([`PartitionKey`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub columns: Vec<PartitionColumn>,
}

/// One level of `partition_by.columns`: a column's name (folders `column=value`), or a key
/// with the column it takes its values from and a strftime format for a date or timestamp.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PartitionColumn {
    /// Folders `column=value`.
    Column(String),
    /// Folders `name=…` of `column` (default: the name) in `format`.
    Key {
        /// The folder's key.
        name: String,
        /// The column of the values (default: `name`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        column: Option<String>,
        /// A strftime format of a date or timestamp column (`%Y-%m-%d`, `%m`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        format: Option<String>,
    },
}

/// [`Deletes`] in a file.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeletesConfig {
    /// The largest share of the target a run may delete (default 0.05).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_share: Option<f64>,
    /// Key ranges of the comparison (default 65 536).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ranges: Option<i64>,
    /// Mark deleted rows in `_etl_deleted_at` instead of deleting them.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub mark: bool,
}

/// [`Reconcile`] in a file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReconcileConfig {
    /// `report` (default), `fail` or `repair`.
    #[serde(default)]
    pub policy: ReconcilePolicy,
    /// Columns whose content is compared too.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub columns: Vec<String>,
    /// Key ranges of the comparison (default 65 536).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ranges: Option<i64>,
    /// The largest share of the target a repair may delete (default 0.05).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_share: Option<f64>,
}

fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

/// The 1-based line of byte `offset` of `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].bytes().filter(|b| *b == b'\n').count() + 1
}

/// A file's error: the file, the line when known, the key when known, and what is wrong.
fn file_error(file: &Path, line: Option<usize>, key: &str, message: &str) -> Error {
    let name = file.display();
    let at = line.map(|l| format!(", line {l}")).unwrap_or_default();
    let key = if key.is_empty() || key == "." {
        String::new()
    } else {
        format!(", key {key}")
    };
    Error::config(format!("{name}{at}{key}: {message}"))
}

impl PipelineConfig {
    /// Reads a configuration file: TOML by default, YAML for `.yaml` and `.yml`, JSON for
    /// `.json`.
    ///
    /// # Errors
    /// [`Error::Config`] naming the file, and where the file is malformed its line and key.
    pub fn load(path: impl AsRef<Path>) -> Result<PipelineConfig> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::config(format!("{}: cannot read the configuration: {e}", path.display())))?;
        PipelineConfig::parse(path, &text)
    }

    /// Parses configuration text; `path` names it in errors and says its format.
    ///
    /// # Errors
    /// [`Error::Config`] naming the file, line and key of what is malformed.
    pub fn parse(path: &Path, text: &str) -> Result<PipelineConfig> {
        let ext = path
            .extension()
            .map(|e| e.to_string_lossy().to_ascii_lowercase())
            .unwrap_or_default();
        if ext == "yaml" || ext == "yml" {
            let de = yaml_serde::Deserializer::from_str(text);
            return serde_path_to_error::deserialize(de)
                .map(|c| PipelineConfig::at(c, path))
                .map_err(|e| {
                    let inner = e.inner();
                    let line = inner.location().map(|l| l.line());
                    let message = inner.to_string();
                    // The location is said once, before the message.
                    let message = match message.split_once(" at line ") {
                        Some((m, _)) => m.to_string(),
                        None => message,
                    };
                    file_error(path, line, &e.path().to_string(), &message)
                });
        }
        if ext == "json" {
            let de = &mut serde_json::Deserializer::from_str(text);
            return serde_path_to_error::deserialize(de)
                .map(|c| PipelineConfig::at(c, path))
                .map_err(|e| {
                    let inner = e.inner();
                    let message = inner.to_string();
                    // serde_json appends " at line L column C": the line is said once.
                    let message = message.split(" at line ").next().unwrap_or(&message).to_string();
                    file_error(path, Some(inner.line()), &e.path().to_string(), &message)
                });
        }
        let de = toml::de::Deserializer::parse(text)
            .map_err(|e| file_error(path, e.span().map(|s| line_of(text, s.start)), "", e.message()))?;
        serde_path_to_error::deserialize(de)
            .map(|c| PipelineConfig::at(c, path))
            .map_err(|e| {
                let line = e.inner().span().map(|s| line_of(text, s.start));
                file_error(path, line, &e.path().to_string(), e.inner().message())
            })
    }

    /// The configuration read from `path`.
    fn at(mut self, path: &Path) -> PipelineConfig {
        self.base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        self.file = path.to_path_buf();
        self
    }

    /// The configuration of a pipeline built in code, to keep as a file: its name and tables
    /// as the pipeline holds them ([`TableConfig::from_spec`]), with the `source`, `sink` and
    /// `watermarks` given here (a built pipeline's connectors keep their connection strings
    /// and secrets to themselves). `to_toml` writes it.
    ///
    /// # Errors
    /// As [`TableConfig::from_spec`].
    pub fn from_pipeline(
        pipeline: &Pipeline,
        source: Endpoint,
        sink: Endpoint,
        watermarks: Option<Endpoint>,
    ) -> Result<PipelineConfig> {
        Ok(PipelineConfig {
            name: pipeline.name().to_string(),
            source,
            sink,
            watermarks,
            tables: pipeline
                .tables()
                .iter()
                .map(TableConfig::from_spec)
                .collect::<Result<_>>()?,
            after_run: None,
            base: PathBuf::from("."),
            file: PathBuf::from("pipeline.toml"),
        })
    }

    /// The configuration as TOML (what [`PipelineConfig::load`] reads back).
    ///
    /// # Errors
    /// [`Error::Config`] if a value has no TOML form.
    pub fn to_toml(&self) -> Result<String> {
        toml::to_string_pretty(self).map_err(|e| Error::config(format!("pipeline `{}`: {e}", self.name)))
    }

    /// A location string of the file: relative folders are taken from the file's folder.
    fn location(&self, what: &str, url: &str) -> Result<Location> {
        location(&self.base, what, url)
    }

    /// The pipeline the file describes.
    ///
    /// # Errors
    /// [`Error::Config`] for a kind this build lacks (its cargo feature), a value out of
    /// place, or what [`crate::PipelineBuilder::build`] refuses.
    pub async fn build(&self) -> Result<Pipeline> {
        self.named(async { self.builder_inner().await?.build() }.await)
    }

    /// The builder of the pipeline the file describes, to add what a file cannot say (a
    /// progress display, a batch size) before [`crate::PipelineBuilder::build`].
    ///
    /// # Errors
    /// As [`PipelineConfig::build`].
    pub async fn builder(&self) -> Result<etl_core::PipelineBuilder> {
        self.named(self.builder_inner().await)
    }

    /// A configuration error named by the file.
    fn named<T>(&self, r: Result<T>) -> Result<T> {
        r.map_err(|e| match e {
            Error::Config { message } => Error::config(format!("{}: {message}", self.file.display())),
            other => other,
        })
    }

    async fn builder_inner(&self) -> Result<etl_core::PipelineBuilder> {
        let refs = References::default();
        let mut resolved = self.source.resolved("source", &self.base, &refs).await?;
        for input in &mut resolved.inputs {
            let what = format!("source.inputs.{}.source", input.name);
            input.source = input.source.resolved(&what, &self.base, &refs).await?;
        }
        let source = self.source(&resolved)?;
        let (sink, default_store) = self.sink(&self.sink.resolved("sink", &self.base, &refs).await?)?;
        let store = match &self.watermarks {
            Some(w) if w.kind == "object_store" => {
                w.only("watermarks", &["location"])?;
                let w = w.resolved("watermarks", &self.base, &refs).await?;
                let at = w.needs("watermarks", "location", &w.location)?;
                Store::Objects(ObjectStoreWatermarkStore::new(
                    self.location("watermarks.location", at)?,
                ))
            }
            Some(w) => {
                return Err(Error::config(format!(
                    "watermarks of kind `{}`: expected object_store (or no [watermarks]: beside the target)",
                    w.kind
                )));
            }
            None => default_store,
        };
        let store: Arc<dyn WatermarkStore> = match store {
            Store::Objects(mut objects) => {
                for t in &self.tables {
                    if let Some(file) = &t.legacy_timestamp_file {
                        objects = objects.with_legacy_timestamp_file(&t.name, file);
                    }
                }
                Arc::new(objects)
            }
            Store::Other(other) => {
                if let Some(t) = self.tables.iter().find(|t| t.legacy_timestamp_file.is_some()) {
                    return Err(Error::config(format!(
                        "tables.{}.legacy_timestamp_file: read from an object store's watermarks; this \
                         sink keeps them in its database ([watermarks] kind = \"object_store\" to use one)",
                        t.name
                    )));
                }
                other
            }
        };
        let mut builder = Pipeline::builder(&self.name)
            .source_arc(source)
            .sink_arc(sink)
            .watermarks_arc(store);
        if self
            .after_run
            .as_ref()
            .is_some_and(|a| a.crawl || a.glue_database.is_some())
        {
            builder = builder.crawl_after_run_with(self.crawler().await?);
        }
        for t in &self.tables {
            builder = builder.table(t.spec()?);
        }
        Ok(builder)
    }

    /// The crawler of the lake a `lake` or `delta` sink writes (what `after_run` crawls),
    /// reading Delta tables through their log.
    ///
    /// # Errors
    /// As [`PipelineConfig::lake`].
    pub async fn crawler(&self) -> Result<etl_core::catalog::Crawler> {
        let crawler = etl_core::catalog::Crawler::new(self.lake().await?);
        #[cfg(feature = "delta")]
        let crawler = crawler.with_table_log(Arc::new(etl_sinks::delta::DeltaLog));
        Ok(crawler)
    }

    /// The lake a `lake` or `delta` sink writes (what `after_run` crawls).
    ///
    /// # Errors
    /// [`Error::Config`] for another sink.
    pub async fn lake(&self) -> Result<Location> {
        if self.sink.kind != "lake" && self.sink.kind != "delta" {
            return Err(Error::config(format!(
                "{}: crawling and the Glue Data Catalog need a lake or delta sink; this sink is `{}`",
                self.file.display(),
                self.sink.kind
            )));
        }
        let refs = References::default();
        let sink = self.sink.resolved("sink", &self.base, &refs).await?;
        self.location("sink.location", sink.needs("sink", "location", &sink.location)?)
    }

    /// The crawled tables of the lake's catalog (`_etl/catalog`).
    ///
    /// # Errors
    /// As [`PipelineConfig::lake`]; the catalog's errors.
    pub async fn catalog_tables(&self) -> Result<Vec<etl_core::catalog::CrawledTable>> {
        let catalog = etl_core::catalog::Catalog::new(self.lake().await?);
        let mut tables = Vec::new();
        for name in catalog.list().await? {
            if let Some(t) = catalog.get(&name).await? {
                tables.push(t.crawled()?);
            }
        }
        Ok(tables)
    }

    /// The run's figures in CloudWatch and the lake's crawled tables in the Glue database,
    /// where `after_run` asks for them (nothing otherwise). Returns what was done, one line
    /// each.
    ///
    /// # Errors
    /// [`Error::Config`] without the feature `aws`; the services' errors.
    pub async fn publish(&self, report: &etl_core::RunReport) -> Result<Vec<String>> {
        let mut done = Vec::new();
        let Some(after) = &self.after_run else {
            return Ok(done);
        };
        if let Some(ns) = &after.cloudwatch_namespace {
            done.push(self.send_metrics(ns, report).await?);
        }
        if after.glue_database.is_some() {
            done.extend(self.register_in_glue().await?);
        }
        Ok(done)
    }

    /// The tables of the lake's catalog (`_etl/catalog`, the crawler's) in the Glue database
    /// `after_run` names; `None` when it names none.
    ///
    /// # Errors
    /// As [`PipelineConfig::publish`].
    pub async fn register_in_glue(&self) -> Result<Option<String>> {
        let Some(db) = self.after_run.as_ref().and_then(|a| a.glue_database.as_ref()) else {
            return Ok(None);
        };
        let lake = self.lake().await?;
        let tables = self.catalog_tables().await?;
        let root = self
            .after_run
            .as_ref()
            .and_then(|a| a.glue_location.clone())
            .unwrap_or_else(|| lake.url().to_string());
        self.glue(db, &tables, &root).await.map(Some)
    }

    #[cfg(feature = "aws")]
    async fn send_metrics(&self, namespace: &str, report: &etl_core::RunReport) -> Result<String> {
        let sdk = crate::aws::config().await;
        let n = crate::aws::CloudWatchMetrics::new(&sdk, namespace)
            .publish(report)
            .await?;
        Ok(format!("cloudwatch: {n} figures under `{namespace}`"))
    }

    #[cfg(feature = "aws")]
    async fn glue(&self, db: &str, tables: &[etl_core::catalog::CrawledTable], root: &str) -> Result<String> {
        let sdk = crate::aws::config().await;
        let r = crate::aws::GlueCatalog::new(&sdk, db).register(tables, root).await?;
        Ok(format!(
            "glue `{db}`: {} tables created, {} updated, {} unchanged, {} partitions added",
            r.tables_created, r.tables_updated, r.tables_unchanged, r.partitions_created
        ))
    }

    #[cfg(not(feature = "aws"))]
    async fn send_metrics(&self, _namespace: &str, _report: &etl_core::RunReport) -> Result<String> {
        Err(self.no_aws("cloudwatch_namespace"))
    }

    #[cfg(not(feature = "aws"))]
    async fn glue(&self, _db: &str, _tables: &[etl_core::catalog::CrawledTable], _root: &str) -> Result<String> {
        Err(self.no_aws("glue_database"))
    }

    #[cfg(not(feature = "aws"))]
    fn no_aws(&self, key: &str) -> Error {
        Error::config(format!(
            "{}: after_run.{key} needs the AWS SDK: this build of etl lacks the cargo feature `aws`",
            self.file.display()
        ))
    }

    fn source(&self, s: &Endpoint) -> Result<Arc<dyn Source>> {
        match s.kind.as_str() {
            #[cfg(feature = "postgres")]
            "postgres" => {
                s.only("source", &["url", "parallelism"])?;
                let mut source = crate::PostgresSource::new(s.needs("source", "url", &s.url)?)?;
                if let Some(n) = s.parallelism {
                    source = source.with_parallelism(n);
                }
                Ok(Arc::new(source))
            }
            #[cfg(feature = "mysql")]
            "mysql" => {
                s.only("source", &["url", "parallelism"])?;
                let mut source = crate::MySqlSource::new(s.needs("source", "url", &s.url)?)?;
                if let Some(n) = s.parallelism {
                    source = source.with_parallelism(n);
                }
                Ok(Arc::new(source))
            }
            #[cfg(feature = "files")]
            "files" => {
                s.only("source", &["location"])?;
                let at = s.needs("source", "location", &s.location)?;
                Ok(Arc::new(crate::FileSource::new(self.location("source.location", at)?)))
            }
            #[cfg(feature = "sql")]
            "sql" => {
                s.only("source", &["inputs"])?;
                if s.inputs.is_empty() {
                    return Err(Error::config(
                        "source of kind `sql` needs `inputs`: the tables of other sources its queries read",
                    ));
                }
                let mut sql = crate::SqlSource::new();
                for i in &s.inputs {
                    if i.source.kind == "sql" {
                        return Err(Error::config(format!(
                            "source.inputs.{}: an input of an `sql` source reads a postgres, mysql or files source",
                            i.name
                        )));
                    }
                    let spec = read_of(&i.name, &i.from, &i.query, &i.files)?;
                    sql = sql.input_arc(&i.name, self.source(&i.source)?, spec);
                }
                Ok(Arc::new(sql))
            }
            other => Err(unknown_kind("source", other, &["postgres", "mysql", "files", "sql"])),
        }
    }

    fn sink(&self, s: &Endpoint) -> Result<(Arc<dyn Sink>, Store)> {
        match s.kind.as_str() {
            #[cfg(feature = "lake")]
            "lake" => {
                s.only("sink", &["location"])?;
                let at = s.needs("sink", "location", &s.location)?;
                let location = self.location("sink.location", at)?;
                let store = Store::Objects(ObjectStoreWatermarkStore::new(location.child("_etl/watermarks")));
                Ok((Arc::new(crate::LakeSink::new(location)), store))
            }
            #[cfg(feature = "delta")]
            "delta" => {
                s.only("sink", &["location"])?;
                let at = s.needs("sink", "location", &s.location)?;
                let location = self.location("sink.location", at)?;
                let store = Store::Objects(ObjectStoreWatermarkStore::new(location.child("_etl/watermarks")));
                Ok((Arc::new(crate::DeltaSink::new(location)), store))
            }
            #[cfg(feature = "postgres")]
            "postgres" => {
                s.only("sink", &["url", "schema"])?;
                let mut sink = crate::PostgresSink::new(s.needs("sink", "url", &s.url)?)?;
                if let Some(schema) = &s.schema {
                    sink = sink.with_schema(schema);
                }
                let store = Store::Other(Arc::new(sink.watermark_store()));
                Ok((Arc::new(sink), store))
            }
            #[cfg(feature = "redshift")]
            "redshift" => {
                s.only(
                    "sink",
                    &[
                        "url",
                        "schema",
                        "staging",
                        "staging_url",
                        "iam_role",
                        "access_key_id",
                        "secret_access_key",
                        "postgres_stand_in",
                    ],
                )?;
                let load = match (&s.iam_role, &s.access_key_id, &s.secret_access_key, s.postgres_stand_in) {
                    (Some(role), None, None, false) => crate::RedshiftLoad::IamRole(role.clone()),
                    (None, Some(id), Some(secret), false) => crate::RedshiftLoad::AccessKeys {
                        id: id.clone(),
                        secret: etl_core::Secret::new(secret.as_str()),
                        token: None,
                    },
                    (None, None, None, true) => crate::RedshiftLoad::PostgresStandIn,
                    _ => {
                        return Err(Error::config(
                            "sink of kind `redshift` needs one way to load: `iam_role`, `access_key_id` with \
                             `secret_access_key`, or `postgres_stand_in = true`",
                        ));
                    }
                };
                let staging = self.location("sink.staging", s.needs("sink", "staging", &s.staging)?)?;
                let store = Store::Objects(ObjectStoreWatermarkStore::new(staging.child("_etl/watermarks")));
                let mut sink = crate::RedshiftSink::new(s.needs("sink", "url", &s.url)?, staging, load)?;
                if let Some(schema) = &s.schema {
                    sink = sink.with_schema(schema);
                }
                if let Some(url) = &s.staging_url {
                    sink = sink.with_staging_url(url);
                }
                Ok((Arc::new(sink), store))
            }
            #[cfg(feature = "snowflake")]
            "snowflake" => {
                s.only(
                    "sink",
                    &[
                        "account",
                        "user",
                        "password",
                        "private_key",
                        "database",
                        "warehouse",
                        "role",
                        "schema",
                        "staging",
                        "staging_url",
                        "stage",
                        "integration",
                        "emulator",
                    ],
                )?;
                let secret = match (&s.password, &s.private_key) {
                    (Some(p), None) => crate::SnowflakeSecret::Password(etl_core::Secret::new(p.as_str())),
                    (None, Some(k)) => crate::SnowflakeSecret::PrivateKeyPem(etl_core::Secret::new(k.as_str())),
                    _ => {
                        return Err(Error::config(
                            "sink of kind `snowflake` needs one of `password` and `private_key`",
                        ));
                    }
                };
                let auth = crate::SnowflakeAuth {
                    account: s.needs("sink", "account", &s.account)?.to_string(),
                    user: s.needs("sink", "user", &s.user)?.to_string(),
                    secret,
                    database: s.needs("sink", "database", &s.database)?.to_string(),
                    warehouse: s.warehouse.clone(),
                    role: s.role.clone(),
                };
                let staging = self.location("sink.staging", s.needs("sink", "staging", &s.staging)?)?;
                let stage = match (&s.stage, &s.staging_url, &s.integration) {
                    (Some(name), None, None) => crate::SnowflakeStage::Named(name.clone()),
                    (None, Some(url), Some(integration)) => crate::SnowflakeStage::Integration {
                        url: url.clone(),
                        integration: integration.clone(),
                    },
                    (None, Some(url), None) => crate::SnowflakeStage::Url(url.clone()),
                    // A temporary stage on the staging location itself (a local folder for the
                    // emulator, or a public bucket).
                    (None, None, None) => crate::SnowflakeStage::Url(staging.url().to_string()),
                    _ => {
                        return Err(Error::config(
                            "sink of kind `snowflake` reads staged files through `stage` (a named stage), or \
                             `staging_url` with an optional `integration`",
                        ));
                    }
                };
                let store = Store::Objects(ObjectStoreWatermarkStore::new(staging.child("_etl/watermarks")));
                let mut sink = crate::SnowflakeSink::new(auth, staging, stage);
                if let Some(schema) = &s.schema {
                    sink = sink.with_schema(schema);
                }
                if let Some(url) = &s.emulator {
                    sink = sink.with_emulator(url)?;
                }
                Ok((Arc::new(sink), store))
            }
            other => Err(unknown_kind(
                "sink",
                other,
                &["lake", "delta", "postgres", "redshift", "snowflake"],
            )),
        }
    }
}

/// Where a pipeline's watermarks are kept: an object store (which can start from a legacy
/// timestamp file), or the sink's own store.
enum Store {
    Objects(ObjectStoreWatermarkStore),
    // Only the Postgres sink keeps them in its database.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    Other(Arc<dyn WatermarkStore>),
}

/// The spec of a table read named `name`: its relation (`from`), query or files.
///
/// # Errors
/// [`Error::Config`] for an unknown file format or drops, a delimiter or quote of more than
/// a byte, or more than one of the three.
fn read_of(
    name: &str,
    from: &Option<String>,
    query: &Option<String>,
    files: &Option<FilesConfig>,
) -> Result<TableSpec> {
    let bad = |key: &str, message: String| Error::config(format!("table `{name}`, key {key}: {message}"));
    let mut spec = TableSpec::new(name);
    match (from, query, files) {
        (Some(from), None, None) => spec = spec.from_table(from),
        (None, Some(q), None) => spec = spec.from_query(q),
        (None, None, Some(f)) => {
            let format = match f.format.to_ascii_lowercase().as_str() {
                "csv" => {
                    let mut o = etl_core::CsvOptions::default();
                    if let Some(h) = f.header {
                        o.header = h;
                    }
                    if let Some(d) = f.delimiter {
                        o.delimiter = u8::try_from(d)
                            .map_err(|_| bad("files.delimiter", format!("`{d}` is not a one-byte delimiter")))?;
                    }
                    if let Some(q) = f.quote {
                        o.quote = u8::try_from(q)
                            .map_err(|_| bad("files.quote", format!("`{q}` is not a one-byte quote")))?;
                    }
                    if let Some(m) = &f.null_markers {
                        o.null_markers = m.clone();
                    }
                    o.decimals = f.decimals;
                    FileFormat::Csv(o)
                }
                "json" | "jsonl" | "json_lines" => FileFormat::JsonLines,
                "parquet" => FileFormat::Parquet,
                other => {
                    return Err(bad(
                        "files.format",
                        format!("unknown format `{other}`; expected csv, json or parquet"),
                    ));
                }
            };
            spec = spec.from_files(&f.prefix, format);
            spec = spec.file_drops(match f.drops.as_deref() {
                None | Some("together") => FileDrops::Together,
                Some("newest") => FileDrops::Newest,
                Some(other) => {
                    return Err(bad(
                        "files.drops",
                        format!("unknown drops `{other}`; expected together or newest"),
                    ));
                }
            });
        }
        (None, None, None) => {}
        _ => {
            return Err(Error::config(format!(
                "table `{name}`: give one of `from`, `query` and `files`, not several"
            )));
        }
    }
    Ok(spec)
}

/// A kind this build does not have: misspelt, or its cargo feature left out.
fn unknown_kind(what: &str, kind: &str, kinds: &[&str]) -> Error {
    if kinds.contains(&kind) {
        return Error::config(format!(
            "{what} of kind `{kind}`: this build of etl has no {kind} connector (cargo feature `{kind}`)"
        ));
    }
    Error::config(format!(
        "{what} of kind `{kind}`: unknown; expected one of {}",
        kinds.join(", ")
    ))
}

/// Resolves the references of a configuration's values (the AWS clients made once, when a
/// value first asks for them).
#[derive(Default)]
struct References {
    #[cfg(feature = "aws")]
    aws: tokio::sync::OnceCell<crate::aws::Secrets>,
}

impl References {
    /// `value` with its references replaced; errors name `key` and the reference, never a
    /// resolved value.
    async fn resolve(&self, key: &str, value: &str, base: &Path) -> Result<String> {
        let mut out = String::with_capacity(value.len());
        let mut rest = value;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let end = after
                .find('}')
                .ok_or_else(|| Error::config(format!("{key}: a reference `${{` is not closed by `}}`")))?;
            let reference = &after[..end];
            let (kind, arg) = reference.split_once(':').unwrap_or((reference, ""));
            let bad = |why: String| Error::config(format!("{key}: reference `${{{reference}}}`: {why}"));
            let text = match kind {
                "env" => std::env::var(arg).map_err(|_| bad(format!("the environment variable `{arg}` is not set")))?,
                "file" => {
                    let path = Path::new(arg);
                    let path = if path.is_absolute() {
                        path.to_path_buf()
                    } else {
                        base.join(path)
                    };
                    std::fs::read_to_string(&path)
                        .map_err(|e| bad(format!("cannot read `{}`: {}", path.display(), e.kind())))?
                        .trim()
                        .to_string()
                }
                "ssm" | "secretsmanager" => self.aws_secret(kind, arg).await.map_err(|e| bad(e.to_string()))?,
                other => {
                    return Err(bad(format!(
                        "unknown kind `{other}`; expected env, file, ssm or secretsmanager"
                    )));
                }
            };
            out.push_str(&text);
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }

    /// An SSM parameter (`ssm:NAME`) or a Secrets Manager secret (`secretsmanager:ID`, or
    /// `ID#field` for a field of its JSON).
    #[cfg(feature = "aws")]
    async fn aws_secret(&self, kind: &str, arg: &str) -> Result<String> {
        let secrets = self
            .aws
            .get_or_init(|| async { crate::aws::Secrets::new(&crate::aws::config().await) })
            .await;
        let secret = if kind == "ssm" {
            secrets.ssm(arg).await?
        } else {
            let (id, field) = match arg.split_once('#') {
                Some((id, field)) => (id, Some(field)),
                None => (arg, None),
            };
            secrets.secrets_manager(id, field).await?
        };
        Ok(secret.expose().to_string())
    }

    #[cfg(not(feature = "aws"))]
    async fn aws_secret(&self, kind: &str, _arg: &str) -> Result<String> {
        Err(Error::config(format!(
            "`{kind}` references need the AWS SDK: this build of etl lacks the cargo feature `aws`"
        )))
    }
}

/// A location given on a command line or in code, as a configuration file gives one:
/// `s3://bucket/prefix` (feature `s3`, endpoint from `AWS_ENDPOINT_URL`), `memory://`,
/// `file:///abs/path`, or a folder (relative to the working directory; created if missing).
/// `what` names it in errors.
///
/// # Errors
/// [`Error::Config`] for a URL of another scheme, an S3 URL without the `s3` feature, or a
/// folder that cannot be created.
pub fn location_of(what: &str, url: &str) -> Result<Location> {
    let here = std::env::current_dir().map_err(|e| Error::config(format!("{what} `{url}`: {e}")))?;
    location(&here, what, url)
}

/// A location of a configuration: `s3://bucket/prefix` (feature `s3`, endpoint from
/// `AWS_ENDPOINT_URL`), `memory://`, `file:///abs/path`, or a folder relative to `base`.
fn location(base: &Path, what: &str, url: &str) -> Result<Location> {
    if let Some(rest) = url.strip_prefix("s3://") {
        #[cfg(feature = "s3")]
        {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            let endpoint = std::env::var("AWS_ENDPOINT_URL").ok();
            return Location::s3(bucket, prefix, endpoint.as_deref());
        }
        #[cfg(not(feature = "s3"))]
        {
            let _ = rest;
            return Err(Error::config(format!(
                "{what} `{url}`: this build of etl reads no S3 (cargo feature `s3`)"
            )));
        }
    }
    if url == "memory://" {
        return Ok(Location::memory());
    }
    if url.contains("://") && !url.starts_with("file://") {
        return Err(Error::config(format!(
            "{what} `{url}`: expected a folder, file:///…, s3://bucket/prefix or memory://"
        )));
    }
    let path = Path::new(url.strip_prefix("file://").unwrap_or(url));
    let path = if path.is_absolute() {
        path.to_path_buf()
    } else {
        base.join(path)
    };
    std::fs::create_dir_all(&path).map_err(|e| Error::config(format!("{what} `{}`: {e}", path.display())))?;
    // Absolute, so that its `file://` URL names it wherever it is read from (a stage).
    let path = path.canonicalize().unwrap_or(path);
    Location::local(&path)
}

/// A duration of the file (`90s`, `10m`, `1h 30m`, `7d`).
fn duration(table: &str, key: &str, text: &str) -> Result<chrono::TimeDelta> {
    let d = humantime::parse_duration(text)
        .map_err(|e| Error::config(format!("table `{table}`, key {key}: `{text}` is not a duration ({e})")))?;
    chrono::TimeDelta::from_std(d).map_err(|e| Error::config(format!("table `{table}`, key {key}: {e}")))
}

/// A duration as the file writes it (`10m`, `1h 30m`).
fn duration_text(d: chrono::TimeDelta) -> String {
    humantime::format_duration(d.to_std().unwrap_or_default()).to_string()
}

impl TableConfig {
    /// The file's form of a spec built in code ([`PipelineConfig::from_pipeline`]).
    ///
    /// # Errors
    /// [`Error::Config`] naming the table for what a file cannot say: a transform of your own
    /// code (a file has `select`, `rename`, `cast` and `not_null`), or a source that is not a
    /// table, a query or files.
    pub fn from_spec(spec: &TableSpec) -> Result<TableConfig> {
        let name = spec.name.as_str();
        let (mut from, mut query, mut files) = (None, None, None);
        match &spec.source {
            SourceRef::Table(t) if *t == spec.name => {}
            SourceRef::Table(t) => from = Some(t.clone()),
            SourceRef::Query(q) => query = Some(q.clone()),
            SourceRef::Files { prefix, format } => {
                let csv = match format {
                    FileFormat::Csv(o) => Some(o),
                    _ => None,
                };
                let default = etl_core::CsvOptions::default();
                files = Some(FilesConfig {
                    prefix: prefix.clone(),
                    format: format.name().to_string(),
                    header: csv.filter(|o| o.header != default.header).map(|o| o.header),
                    delimiter: csv
                        .filter(|o| o.delimiter != default.delimiter)
                        .map(|o| char::from(o.delimiter)),
                    quote: csv.filter(|o| o.quote != default.quote).map(|o| char::from(o.quote)),
                    null_markers: csv
                        .filter(|o| o.null_markers != default.null_markers)
                        .map(|o| o.null_markers.clone()),
                    decimals: csv.is_some_and(|o| o.decimals),
                    drops: match spec.file_drops {
                        FileDrops::Together => None,
                        FileDrops::Newest => Some("newest".into()),
                    },
                });
            }
            #[allow(unreachable_patterns)]
            other => {
                return Err(Error::config(format!(
                    "table `{name}`: its source {other:?} has no form in a file"
                )));
            }
        }
        let transforms = spec
            .transforms
            .iter()
            .map(|t| {
                use etl_core::transform::Builtin;
                match t.as_builtin() {
                    Some(Builtin::Select(c)) => Ok(TransformConfig::Select(c.to_vec())),
                    Some(Builtin::Rename(p)) => Ok(TransformConfig::Rename(p.iter().cloned().collect())),
                    Some(Builtin::Cast(p)) => Ok(TransformConfig::Cast(
                        p.iter().map(|(c, t)| (c.clone(), t.to_string())).collect(),
                    )),
                    Some(Builtin::NotNull(c)) => Ok(TransformConfig::NotNull(vec![c.to_string()])),
                    None => Err(Error::config(format!(
                        "table `{name}`: the transform {t:?} is code; a file has select, rename, cast and not_null"
                    ))),
                }
            })
            .collect::<Result<Vec<_>>>()?;
        let partition_by = match &spec.partitioning {
            Partitioning::None => None,
            Partitioning::ByDate(c) => Some(PartitionConfig {
                date: Some(c.clone()),
                ..PartitionConfig::default()
            }),
            Partitioning::ByProcessingDate => Some(PartitionConfig {
                processing_date: true,
                ..PartitionConfig::default()
            }),
            Partitioning::Columns(keys) => Some(PartitionConfig {
                columns: keys
                    .iter()
                    .map(|k| match &k.format {
                        None if k.name == k.column => PartitionColumn::Column(k.name.clone()),
                        format => PartitionColumn::Key {
                            name: k.name.clone(),
                            column: (k.column != k.name).then(|| k.column.clone()),
                            format: format.clone(),
                        },
                    })
                    .collect(),
                ..PartitionConfig::default()
            }),
        };
        let default_deletes = Deletes::default();
        Ok(TableConfig {
            name: spec.name.clone(),
            from,
            query,
            files,
            target: (spec.target != TableSpec::new(name).target).then(|| spec.target.clone()),
            mode: spec.mode,
            primary_key: spec.primary_key.clone(),
            cursor: spec.cursor.clone(),
            lookback: spec.lookback.map(duration_text),
            initial_window: spec.initial_window.map(duration_text),
            settle: spec.settle.map(duration_text),
            partition_by,
            keep_latest: spec.keep_latest,
            processed_at: spec.processed_at,
            bad_rows: (spec.bad_rows == BadRows::Divert).then(|| "divert".into()),
            chunk_rows: spec.chunk_rows,
            soft_delete: spec.soft_delete.clone(),
            on_target_lost: (spec.on_target_lost == TargetLost::Reload).then(|| "reload".into()),
            legacy_timestamp_file: None,
            required: spec.required,
            detect_deletes: spec.deletes.map(|d| DeletesConfig {
                max_share: (d.max_share != default_deletes.max_share).then_some(d.max_share),
                ranges: (d.ranges != default_deletes.ranges).then_some(d.ranges),
                mark: d.mark,
            }),
            reconcile: spec.reconcile.as_ref().map(|r| ReconcileConfig {
                policy: r.policy,
                columns: r.columns.clone(),
                ranges: (r.ranges != default_deletes.ranges).then_some(r.ranges),
                max_share: (r.max_share != default_deletes.max_share).then_some(r.max_share),
            }),
            transforms,
            merge: match spec.merge {
                MergeStrategy::UpdateInsert => None,
                MergeStrategy::DeleteInsert => Some("delete_insert".into()),
                MergeStrategy::InsertOnly => Some("insert_only".into()),
            },
            null_cursors: (spec.null_cursors == NullCursors::WholeReadsOnly).then(|| "whole_reads_only".into()),
            wait_for_commits: spec.wait_for_commits,
            schema: spec
                .schema
                .iter()
                .flat_map(|s| s.fields().iter())
                .map(|f| ColumnConfig {
                    name: f.name().clone(),
                    data_type: f.data_type().to_string(),
                    nullable: f.is_nullable(),
                })
                .collect(),
        })
    }

    /// The table's spec.
    ///
    /// # Errors
    /// [`Error::Config`] naming the table and the key of a value out of place.
    pub fn spec(&self) -> Result<TableSpec> {
        let name = self.name.as_str();
        let bad = |key: &str, message: String| Error::config(format!("table `{name}`, key {key}: {message}"));
        let mut spec = read_of(name, &self.from, &self.query, &self.files)?.mode(self.mode);
        if let Some(t) = &self.target {
            spec = spec.target(t);
        }
        spec = spec.primary_key(self.primary_key.clone()).cursor(self.cursor.clone());
        if let Some(d) = &self.lookback {
            spec = spec.lookback(duration(name, "lookback", d)?);
        }
        if let Some(d) = &self.initial_window {
            spec = spec.initial_window(duration(name, "initial_window", d)?);
        }
        if let Some(d) = &self.settle {
            spec = spec.settle(duration(name, "settle", d)?);
        }
        spec = spec.partition_by(match &self.partition_by {
            None => Partitioning::None,
            Some(PartitionConfig {
                date: Some(c),
                processing_date: false,
                columns,
            }) if columns.is_empty() => Partitioning::ByDate(c.clone()),
            Some(PartitionConfig {
                date: None,
                processing_date: true,
                columns,
            }) if columns.is_empty() => Partitioning::ByProcessingDate,
            Some(PartitionConfig {
                date: None,
                processing_date: false,
                columns,
            }) if !columns.is_empty() => Partitioning::columns(columns.iter().map(|c| match c {
                PartitionColumn::Column(c) => PartitionKey::column(c),
                PartitionColumn::Key { name, column, format } => PartitionKey {
                    name: name.clone(),
                    column: column.clone().unwrap_or_else(|| name.clone()),
                    format: format.clone(),
                },
            })),
            Some(_) => {
                return Err(bad(
                    "partition_by",
                    "give one of `date = \"column\"`, `processing_date = true` and `columns = [...]`".into(),
                ));
            }
        });
        for (i, t) in self.transforms.iter().enumerate() {
            spec = match t {
                TransformConfig::Select(columns) => spec.transform(etl_core::transform::Select::new(columns.clone())),
                TransformConfig::Rename(pairs) => spec.transform(etl_core::transform::Rename::new(pairs.clone())),
                TransformConfig::Cast(pairs) => {
                    let typed = pairs
                        .iter()
                        .map(|(c, t)| {
                            data_type(t).map(|t| (c.clone(), t)).ok_or_else(|| {
                                bad(&format!("transforms[{i}].cast.{c}"), format!("`{t}` is not a type"))
                            })
                        })
                        .collect::<Result<Vec<_>>>()?;
                    spec.transform(etl_core::transform::Cast::new(typed))
                }
                TransformConfig::NotNull(columns) => columns
                    .iter()
                    .fold(spec, |spec, c| spec.transform(etl_core::transform::Filter::not_null(c))),
            };
        }
        if self.keep_latest {
            spec = spec.keep_latest();
        }
        spec = spec.processed_at(self.processed_at);
        spec = spec.bad_rows(match self.bad_rows.as_deref() {
            None | Some("fail") => BadRows::Fail,
            Some("divert") => BadRows::Divert,
            Some(other) => return Err(bad("bad_rows", format!("unknown `{other}`; expected fail or divert"))),
        });
        if let Some(n) = self.chunk_rows {
            spec = spec.chunk_rows(n);
        }
        if let Some(c) = &self.soft_delete {
            spec = spec.soft_delete(c);
        }
        spec = spec.on_target_lost(match self.on_target_lost.as_deref() {
            None | Some("fail") => TargetLost::Fail,
            Some("reload") => TargetLost::Reload,
            Some(other) => {
                return Err(bad(
                    "on_target_lost",
                    format!("unknown `{other}`; expected fail or reload"),
                ));
            }
        });
        spec.required = self.required;
        spec = spec.merge_strategy(match self.merge.as_deref() {
            None | Some("update_insert") => MergeStrategy::UpdateInsert,
            Some("delete_insert") => MergeStrategy::DeleteInsert,
            Some("insert_only") => MergeStrategy::InsertOnly,
            Some(other) => {
                return Err(bad(
                    "merge",
                    format!("unknown `{other}`; expected update_insert, delete_insert or insert_only"),
                ));
            }
        });
        spec = spec.null_cursors(match self.null_cursors.as_deref() {
            None | Some("fail") => NullCursors::Fail,
            Some("whole_reads_only") => NullCursors::WholeReadsOnly,
            Some(other) => {
                return Err(bad(
                    "null_cursors",
                    format!("unknown `{other}`; expected fail or whole_reads_only"),
                ));
            }
        });
        spec = spec.wait_for_commits(self.wait_for_commits);
        if !self.schema.is_empty() {
            let fields = self
                .schema
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let t = data_type(&c.data_type)
                        .ok_or_else(|| bad(&format!("schema[{i}].type"), format!("`{}` is not a type", c.data_type)))?;
                    Ok(etl_core::deps::arrow::datatypes::Field::new(&c.name, t, c.nullable))
                })
                .collect::<Result<Vec<_>>>()?;
            spec = spec.schema(Arc::new(etl_core::deps::arrow::datatypes::Schema::new(fields)));
        }
        if let Some(d) = &self.detect_deletes {
            let base = Deletes::default();
            spec = spec.detect_deletes(Deletes {
                max_share: d.max_share.unwrap_or(base.max_share),
                ranges: d.ranges.unwrap_or(base.ranges),
                mark: d.mark,
            });
        }
        if let Some(r) = &self.reconcile {
            let mut rec = Reconcile::new(r.policy).content(r.columns.clone());
            if let Some(n) = r.ranges {
                rec.ranges = n;
            }
            if let Some(s) = r.max_share {
                rec.max_share = s;
            }
            spec = spec.reconcile(rec);
        }
        Ok(spec)
    }
}

/// Builds the pipeline a configuration file describes: `Pipeline::from_config(path).await`.
pub trait FromConfig: Sized {
    /// The pipeline of the file at `path` ([`PipelineConfig::load`], then
    /// [`PipelineConfig::build`]).
    ///
    /// # Errors
    /// As [`PipelineConfig::load`] and [`PipelineConfig::build`].
    fn from_config(path: impl AsRef<Path> + Send) -> impl std::future::Future<Output = Result<Self>> + Send;
}

impl FromConfig for Pipeline {
    async fn from_config(path: impl AsRef<Path> + Send) -> Result<Pipeline> {
        PipelineConfig::load(path)?.build().await
    }
}
