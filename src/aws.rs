//! AWS services around Glue-style jobs (feature `aws`, the AWS SDK for Rust): the crawler's
//! tables registered in the Glue Data Catalog, each run's per-table figures in CloudWatch,
//! and secrets from SSM Parameter Store and Secrets Manager.
//!
//! Every client is configured the SDK's way ([`config`]): region, credentials and endpoint
//! from the environment (`AWS_REGION`, `AWS_ACCESS_KEY_ID`…, `AWS_ENDPOINT_URL` for an
//! emulator such as moto), or an `SdkConfig` of your own.
//!
//! ```no_run
//! # async fn demo(report: etl::RunReport, tables: Vec<etl::catalog::CrawledTable>) -> etl::Result<()> {
//! let aws = etl::aws::config().await;
//! etl::aws::CloudWatchMetrics::new(&aws, "ETL").publish(&report).await?;
//! etl::aws::GlueCatalog::new(&aws, "lake").register(&tables, "s3://bucket/lake").await?;
//! # Ok(()) }
//! ```

use std::collections::{BTreeMap, HashSet};

use aws_config::{BehaviorVersion, SdkConfig};
use aws_sdk_glue::types::{Column, DatabaseInput, PartitionInput, SerDeInfo, StorageDescriptor, TableInput};
use etl_core::catalog::{CrawledTable, TableFormat};
use etl_core::{Error, Result, RunReport, Secret};

/// The SDK's configuration from the environment (region, credentials, `AWS_ENDPOINT_URL`).
pub async fn config() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest()).load().await
}

/// An error of an AWS call: the service, what was asked, and the SDK's whole message
/// (which holds no secret value: requests and answers are not printed).
fn aws_err<E: std::error::Error + 'static>(service: &'static str, what: &str, e: E) -> Error {
    Error::Connector {
        connector: service,
        message: format!("{what}: {}", aws_smithy_types::error::display::DisplayErrorContext(&e)),
        retryable: false,
    }
}

/// Secrets from SSM Parameter Store and Secrets Manager, as [`Secret`]s.
#[derive(Clone, Debug)]
pub struct Secrets {
    config: SdkConfig,
}

impl Secrets {
    /// Secrets read with `config`.
    pub fn new(config: &SdkConfig) -> Secrets {
        Secrets { config: config.clone() }
    }

    /// The value of SSM parameter `name`, decrypted when it is a `SecureString`.
    ///
    /// # Errors
    /// [`Error::Connector`] naming the parameter (never its value).
    pub async fn ssm(&self, name: &str) -> Result<Secret> {
        let out = aws_sdk_ssm::Client::new(&self.config)
            .get_parameter()
            .name(name)
            .with_decryption(true)
            .send()
            .await
            .map_err(|e| aws_err("ssm", &format!("parameter `{name}`"), e))?;
        out.parameter()
            .and_then(|p| p.value())
            .map(Secret::new)
            .ok_or_else(|| Error::config(format!("SSM parameter `{name}` has no value")))
    }

    /// The string of secret `id` in Secrets Manager; with `field`, that field of the secret's
    /// JSON object.
    ///
    /// # Errors
    /// [`Error::Connector`] naming the secret; [`Error::Config`] for a field the secret lacks
    /// (the message never holds the secret).
    pub async fn secrets_manager(&self, id: &str, field: Option<&str>) -> Result<Secret> {
        let out = aws_sdk_secretsmanager::Client::new(&self.config)
            .get_secret_value()
            .secret_id(id)
            .send()
            .await
            .map_err(|e| aws_err("secretsmanager", &format!("secret `{id}`"), e))?;
        let text = out
            .secret_string()
            .ok_or_else(|| Error::config(format!("secret `{id}` holds no string")))?;
        let Some(field) = field else {
            return Ok(Secret::new(text));
        };
        let json: serde_json::Value = serde_json::from_str(text).map_err(|_| {
            Error::config(format!(
                "secret `{id}` is not a JSON object, so it has no field `{field}`"
            ))
        })?;
        match json.get(field) {
            Some(serde_json::Value::String(s)) => Ok(Secret::new(s.as_str())),
            Some(v @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_))) => Ok(Secret::new(v.to_string())),
            _ => Err(Error::config(format!("secret `{id}` has no text field `{field}`"))),
        }
    }
}

/// Each run's per-table figures as CloudWatch metrics (namespace of your choice, dimensions
/// `Pipeline` and `Table`): `SourceCount`, `FilteredCount` (rows the run read), `TargetCount`,
/// `Difference`, `WrittenCount`, `DeletedCount`, `Failed` (0 or 1) and `DurationSeconds`,
/// sent in batches.
#[derive(Clone, Debug)]
pub struct CloudWatchMetrics {
    client: aws_sdk_cloudwatch::Client,
    namespace: String,
}

/// Datums per `PutMetricData` call (the service takes up to 1 000).
const METRICS_PER_CALL: usize = 500;

impl CloudWatchMetrics {
    /// Metrics sent with `config` under `namespace`.
    pub fn new(config: &SdkConfig, namespace: impl Into<String>) -> CloudWatchMetrics {
        CloudWatchMetrics {
            client: aws_sdk_cloudwatch::Client::new(config),
            namespace: namespace.into(),
        }
    }

    /// Sends the report's figures; returns how many datums were sent.
    ///
    /// # Errors
    /// [`Error::Connector`] when a call fails (datums of earlier batches stay sent).
    pub async fn publish(&self, report: &RunReport) -> Result<usize> {
        use aws_sdk_cloudwatch::types::{Dimension, MetricDatum, StandardUnit};
        let at = aws_smithy_types::DateTime::from_millis(report.finished_at.timestamp_millis());
        let mut datums = Vec::new();
        for t in &report.tables {
            let dims = vec![
                Dimension::builder().name("Pipeline").value(&report.pipeline).build(),
                Dimension::builder().name("Table").value(&t.table).build(),
            ];
            let figures: [(&str, Option<f64>, StandardUnit); 8] = [
                ("SourceCount", t.source_count.map(|n| n as f64), StandardUnit::Count),
                ("FilteredCount", Some(t.extracted_count as f64), StandardUnit::Count),
                ("TargetCount", t.target_count.map(|n| n as f64), StandardUnit::Count),
                ("Difference", t.difference.map(|n| n as f64), StandardUnit::Count),
                ("WrittenCount", Some(t.written_count as f64), StandardUnit::Count),
                ("DeletedCount", Some(t.deleted_count as f64), StandardUnit::Count),
                (
                    "Failed",
                    Some(f64::from(u8::from(t.status == etl_core::TableStatus::Failed))),
                    StandardUnit::Count,
                ),
                (
                    "DurationSeconds",
                    Some(t.duration_ms as f64 / 1000.0),
                    StandardUnit::Seconds,
                ),
            ];
            for (name, value, unit) in figures {
                let Some(value) = value else { continue };
                datums.push(
                    MetricDatum::builder()
                        .metric_name(name)
                        .set_dimensions(Some(dims.clone()))
                        .value(value)
                        .unit(unit)
                        .timestamp(at)
                        .build(),
                );
            }
        }
        for chunk in datums.chunks(METRICS_PER_CALL) {
            self.client
                .put_metric_data()
                .namespace(&self.namespace)
                .set_metric_data(Some(chunk.to_vec()))
                .send()
                .await
                .map_err(|e| aws_err("cloudwatch", &format!("metrics of run `{}`", report.run_id), e))?;
        }
        Ok(datums.len())
    }
}

/// What a registration did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Registered {
    /// Tables created.
    pub tables_created: u64,
    /// Tables whose definition changed (a new column, a new location).
    pub tables_updated: u64,
    /// Tables left as they were.
    pub tables_unchanged: u64,
    /// Partitions added.
    pub partitions_created: u64,
}

/// The crawler's tables in a database of the AWS Glue Data Catalog, so Athena and Spark read
/// the lake by name: tables created or updated (never dropped and created again), partitions
/// added in batches of 100 (only those the catalog lacks).
#[derive(Clone, Debug)]
pub struct GlueCatalog {
    client: aws_sdk_glue::Client,
    database: String,
}

/// Partitions per `BatchCreatePartition` call (the service's limit).
const PARTITIONS_PER_CALL: usize = 100;

impl GlueCatalog {
    /// Registers into `database` (created when missing) with `config`.
    pub fn new(config: &SdkConfig, database: impl Into<String>) -> GlueCatalog {
        GlueCatalog {
            client: aws_sdk_glue::Client::new(config),
            database: database.into(),
        }
    }

    /// Registers `tables` of the lake under `root_url` (`s3://bucket/prefix`).
    ///
    /// # Errors
    /// [`Error::Connector`] when a call fails; [`Error::ColumnTypeConflict`] for a column Hive
    /// has no type for.
    pub async fn register(&self, tables: &[CrawledTable], root_url: &str) -> Result<Registered> {
        self.ensure_database().await?;
        let root = root_url.trim_end_matches('/');
        let mut done = Registered::default();
        for t in tables.iter().filter(|t| t.schema.is_some()) {
            let name = glue_name(&t.name);
            let input = table_input(t, &name, root)?;
            let existing = self
                .client
                .get_table()
                .database_name(&self.database)
                .name(&name)
                .send()
                .await;
            match existing {
                Ok(found) => {
                    // The columns, the location and the partition keys decide (the catalog
                    // adds fields of its own to what it keeps).
                    let (have, want) = (found.table(), input.storage_descriptor());
                    let sd = have.and_then(|t| t.storage_descriptor());
                    let same = sd.map(|s| (s.columns(), s.location())) == want.map(|s| (s.columns(), s.location()))
                        && have.map(|t| t.partition_keys()) == Some(input.partition_keys());
                    if same {
                        done.tables_unchanged += 1;
                    } else {
                        self.client
                            .update_table()
                            .database_name(&self.database)
                            .table_input(input)
                            .send()
                            .await
                            .map_err(|e| aws_err("glue", &format!("updating table `{name}`"), e))?;
                        done.tables_updated += 1;
                    }
                }
                Err(e) if e.as_service_error().is_some_and(|s| s.is_entity_not_found_exception()) => {
                    self.client
                        .create_table()
                        .database_name(&self.database)
                        .table_input(input)
                        .send()
                        .await
                        .map_err(|e| aws_err("glue", &format!("creating table `{name}`"), e))?;
                    done.tables_created += 1;
                }
                Err(e) => return Err(aws_err("glue", &format!("table `{name}`"), e)),
            }
            // A Delta table's partitions are its log's, read by the engine.
            if t.format != TableFormat::Delta {
                done.partitions_created += self.add_partitions(t, &name, root).await?;
            }
        }
        Ok(done)
    }

    async fn ensure_database(&self) -> Result<()> {
        match self.client.get_database().name(&self.database).send().await {
            Ok(_) => Ok(()),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_entity_not_found_exception()) => {
                let input = DatabaseInput::builder()
                    .name(&self.database)
                    .build()
                    .map_err(|e| aws_err("glue", "database input", e))?;
                self.client
                    .create_database()
                    .database_input(input)
                    .send()
                    .await
                    .map_err(|e| aws_err("glue", &format!("creating database `{}`", self.database), e))?;
                Ok(())
            }
            Err(e) => Err(aws_err("glue", &format!("database `{}`", self.database), e)),
        }
    }

    /// Adds the table's partitions the catalog lacks; returns how many.
    async fn add_partitions(&self, t: &CrawledTable, name: &str, root: &str) -> Result<u64> {
        let wanted: Vec<_> = t.partitions.iter().filter(|p| !p.values.is_empty()).collect();
        if wanted.is_empty() {
            return Ok(0);
        }
        let mut have: HashSet<Vec<String>> = HashSet::new();
        let mut pages = self
            .client
            .get_partitions()
            .database_name(&self.database)
            .table_name(name)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| aws_err("glue", &format!("partitions of `{name}`"), e))?;
            have.extend(page.partitions().iter().map(|p| p.values().to_vec()));
        }
        let sd = storage(t, &format!("{root}/{}/", t.name), Vec::new())?;
        let inputs: Vec<PartitionInput> = wanted
            .iter()
            .map(|p| p.values.iter().map(ToString::to_string).collect::<Vec<_>>())
            .zip(&wanted)
            .filter(|(values, _)| !have.contains(values))
            .map(|(values, p)| {
                let mut psd = sd.clone();
                psd.location = Some(format!("{root}/{}/{}/", t.name, p.path.trim_matches('/')));
                PartitionInput::builder()
                    .set_values(Some(values))
                    .storage_descriptor(psd)
                    .build()
            })
            .collect();
        for chunk in inputs.chunks(PARTITIONS_PER_CALL) {
            let out = self
                .client
                .batch_create_partition()
                .database_name(&self.database)
                .table_name(name)
                .set_partition_input_list(Some(chunk.to_vec()))
                .send()
                .await
                .map_err(|e| aws_err("glue", &format!("adding partitions to `{name}`"), e))?;
            if let Some(err) = out.errors().first() {
                return Err(Error::Connector {
                    connector: "glue",
                    message: format!(
                        "adding partitions to `{name}`: {} of {} refused ({:?})",
                        out.errors().len(),
                        chunk.len(),
                        err.error_detail()
                    ),
                    retryable: false,
                });
            }
        }
        Ok(inputs.len() as u64)
    }
}

/// A crawled table's name as Glue keeps it (lower case, `/` as `_`).
fn glue_name(name: &str) -> String {
    name.replace('/', "_").to_ascii_lowercase()
}

fn columns(cols: &[(String, String)]) -> Result<Vec<Column>> {
    cols.iter()
        .map(|(n, t)| {
            Column::builder()
                .name(n.to_ascii_lowercase())
                .r#type(t)
                .build()
                .map_err(|e| aws_err("glue", "column", e))
        })
        .collect()
}

/// The storage descriptor of a table's format at `location`.
fn storage(t: &CrawledTable, location: &str, cols: Vec<Column>) -> Result<StorageDescriptor> {
    let (input, output, serde, params): (&str, &str, &str, BTreeMap<&str, &str>) = match t.format {
        TableFormat::Parquet | TableFormat::Delta => (
            "org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat",
            "org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat",
            "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe",
            BTreeMap::new(),
        ),
        TableFormat::Csv => (
            "org.apache.hadoop.mapred.TextInputFormat",
            "org.apache.hadoop.hive.ql.io.HiveIgnoreKeyTextOutputFormat",
            "org.apache.hadoop.hive.serde2.lazy.LazySimpleSerDe",
            BTreeMap::from([("field.delim", ",")]),
        ),
        TableFormat::JsonLines => (
            "org.apache.hadoop.mapred.TextInputFormat",
            "org.apache.hadoop.hive.ql.io.HiveIgnoreKeyTextOutputFormat",
            "org.openx.data.jsonserde.JsonSerDe",
            BTreeMap::new(),
        ),
    };
    let mut serde_info = SerDeInfo::builder().serialization_library(serde);
    for (k, v) in params {
        serde_info = serde_info.parameters(k, v);
    }
    Ok(StorageDescriptor::builder()
        .set_columns(Some(cols))
        .location(location)
        .input_format(input)
        .output_format(output)
        .serde_info(serde_info.build())
        .build())
}

fn table_input(t: &CrawledTable, name: &str, root: &str) -> Result<TableInput> {
    let (cols, keys) = t.hive_columns()?;
    let classification = match t.format {
        TableFormat::Parquet => "parquet",
        TableFormat::Csv => "csv",
        TableFormat::JsonLines => "json",
        TableFormat::Delta => "delta",
    };
    // A Delta table: Athena and Spark read it through its log (`table_type = DELTA`), so
    // the partition columns are columns and no partition is registered.
    let (cols, keys) = if t.format == TableFormat::Delta {
        let mut all = cols;
        all.extend(keys);
        (all, Vec::new())
    } else {
        (cols, keys)
    };
    let mut input = TableInput::builder()
        .name(name)
        .table_type("EXTERNAL_TABLE")
        .parameters("classification", classification)
        .storage_descriptor(storage(t, &format!("{root}/{}/", t.name), columns(&cols)?)?)
        .set_partition_keys(Some(columns(&keys)?));
    if t.format == TableFormat::Csv {
        input = input.parameters("skip.header.line.count", "1");
    }
    if t.format == TableFormat::Delta {
        input = input
            .parameters("table_type", "DELTA")
            .parameters("spark.sql.sources.provider", "delta");
    }
    input
        .build()
        .map_err(|e| aws_err("glue", &format!("table `{name}`"), e))
}
