//! A crawler over any object-store prefix: the tables a lake holds, their formats, schemas,
//! row counts and typed Hive partitions, and the DDL other engines need to read them.
//!
//! A table is a folder of data files, with optional `key=value` partition folders under it.
//! Folders and files whose names start with `_` or `.` are hidden (the lake's `_etl/`, Spark's
//! `_SUCCESS`). Parquet schemas and row counts come from the files' footers; CSV and JSON-lines
//! schemas are inferred from a bounded sample of each file (its first 1 000 rows, see
//! [`crate::formats`]) and merged across files with [`MergePolicy::Inferred`] (a column seen
//! as integers in one file and as decimals in another is a decimal); their row counts are
//! unknown without reading them whole.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use etl_core::{Location, crawler::Crawler};
//! let lake = Location::memory();
//! let tables = Crawler::new(lake).crawl().await.unwrap();
//! assert!(tables.is_empty());
//! # });
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use arrow::datatypes::{DataType, Field, SchemaRef};
use chrono::NaiveDate;
use object_store::ObjectMeta;
use parquet::arrow::async_reader::ParquetRecordBatchStreamBuilder;

use crate::error::{Error, Result};
use crate::formats::{self, MergePolicy};
use crate::location::Location;
use crate::parquet_io::ObjectReader;
use crate::spec::{BadRows, CsvOptions};
use crate::sql::Dialect;
use crate::watermark::FileMark;

/// The file format of a table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum TableFormat {
    /// Parquet.
    Parquet,
    /// Comma-separated values.
    Csv,
    /// JSON lines.
    JsonLines,
}

impl TableFormat {
    fn of(path: &str) -> Option<TableFormat> {
        // Gzip-compressed text is read through a decoder (as Athena does): `a.csv.gz` is CSV.
        let lower = path.to_ascii_lowercase();
        let name = lower.strip_suffix(".gz").unwrap_or(&lower);
        let ext = name.rsplit('.').next()?;
        Some(match ext {
            "parquet" => TableFormat::Parquet,
            "csv" => TableFormat::Csv,
            "json" | "jsonl" | "ndjson" => TableFormat::JsonLines,
            _ => return None,
        })
    }
}

/// A typed partition value.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(tag = "type", content = "value", rename_all = "snake_case")]
pub enum PartitionValue {
    /// Hive's default partition (a NULL value).
    Null,
    /// An integer (`year=2025`).
    Int(i64),
    /// A date (`dt=2025-07-24`).
    Date(NaiveDate),
    /// Anything else.
    Text(String),
}

impl fmt::Display for PartitionValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PartitionValue::Null => f.write_str("__HIVE_DEFAULT_PARTITION__"),
            PartitionValue::Int(i) => write!(f, "{i}"),
            PartitionValue::Date(d) => write!(f, "{d}"),
            PartitionValue::Text(s) => f.write_str(s),
        }
    }
}

/// One partition of a table: its values (in the order of the table's partition keys), where it
/// is, and what it holds. The catalog stores it as is.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CrawledPartition {
    /// The values, one per partition key.
    pub values: Vec<PartitionValue>,
    /// Its folder, relative to the crawled prefix (`orders/year=2025/month=7`).
    pub path: String,
    /// Data files.
    pub files: u64,
    /// Rows, when the format records them (Parquet).
    pub rows: Option<u64>,
    /// Bytes of data files.
    pub bytes: u64,
}

/// One table found by a crawl.
#[derive(Clone, Debug, PartialEq)]
pub struct CrawledTable {
    /// Its folder relative to the crawled prefix (`orders`, `sales/eu`).
    pub name: String,
    /// The format of its files.
    pub format: TableFormat,
    /// The schema merged over its files: Parquet footers, or inferred from samples of CSV
    /// and JSON files. `None` only for a table whose every file is empty.
    pub schema: Option<SchemaRef>,
    /// The partition keys and the type of their values (Int64, Date32 or Utf8).
    pub partition_keys: Vec<(String, DataType)>,
    /// The partitions, sorted by their values.
    pub partitions: Vec<CrawledPartition>,
}

impl CrawledTable {
    /// Rows over all partitions, when every file records its count.
    pub fn rows(&self) -> Option<u64> {
        self.partitions.iter().map(|p| p.rows).sum()
    }

    /// Athena / Hive DDL for the table under `root_url` (the crawled prefix as `s3://…`):
    /// `CREATE EXTERNAL TABLE` and one `ALTER TABLE … ADD IF NOT EXISTS PARTITION` per
    /// partition, each statement ending with `;`.
    ///
    /// # Errors
    /// [`Error::ColumnTypeConflict`] for a column type Hive has no name for.
    pub fn athena_ddl(&self, root_url: &str) -> Result<Vec<String>> {
        let schema = self.schema.as_ref().ok_or_else(|| {
            Error::config(format!(
                "table `{}`: DDL needs a schema ({:?} tables are not read yet)",
                self.name, self.format
            ))
        })?;
        let q = |s: &str| format!("`{}`", s.replace('`', "``"));
        let name = q(&self.name.replace('/', "_"));
        let root = root_url.trim_end_matches('/');
        let keys: BTreeSet<&str> = self.partition_keys.iter().map(|(k, _)| k.as_str()).collect();
        let cols = schema
            .fields()
            .iter()
            .filter(|f| !keys.contains(f.name().as_str()))
            .map(|f| Ok(format!("  {} {}", q(f.name()), hive_type(&self.name, f)?)))
            .collect::<Result<Vec<_>>>()?;
        let mut ddl = format!("CREATE EXTERNAL TABLE IF NOT EXISTS {name} (\n{}\n)", cols.join(",\n"));
        if !self.partition_keys.is_empty() {
            let parts: Vec<String> = self
                .partition_keys
                .iter()
                .map(|(k, t)| {
                    format!(
                        "{} {}",
                        q(k),
                        hive_type(&self.name, &Field::new(k, t.clone(), true)).expect("partition types map")
                    )
                })
                .collect();
            ddl.push_str(&format!("\nPARTITIONED BY ({})", parts.join(", ")));
        }
        let stored = match self.format {
            TableFormat::Parquet => "STORED AS PARQUET".to_string(),
            TableFormat::Csv => "ROW FORMAT DELIMITED FIELDS TERMINATED BY ','\nSTORED AS TEXTFILE".to_string(),
            TableFormat::JsonLines => "ROW FORMAT SERDE 'org.openx.data.jsonserde.JsonSerDe'".to_string(),
        };
        ddl.push_str(&format!("\n{stored}\nLOCATION '{root}/{}/'", self.name));
        if self.format == TableFormat::Csv {
            ddl.push_str("\nTBLPROPERTIES ('skip.header.line.count'='1')");
        }
        ddl.push(';');
        let mut out = vec![ddl];
        for p in &self.partitions {
            if p.values.is_empty() {
                continue;
            }
            let spec: Vec<String> = self
                .partition_keys
                .iter()
                .zip(&p.values)
                .map(|((k, _), v)| match v {
                    PartitionValue::Int(i) => format!("{} = {i}", q(k)),
                    other => format!("{} = {}", q(k), Dialect::Postgres.string_literal(&other.to_string())),
                })
                .collect();
            out.push(format!(
                "ALTER TABLE {name} ADD IF NOT EXISTS PARTITION ({}) LOCATION '{root}/{}/';",
                spec.join(", "),
                p.path
            ));
        }
        Ok(out)
    }
}

/// Hive's name of an Arrow type.
fn hive_type(table: &str, f: &Field) -> Result<String> {
    Ok(match f.data_type() {
        DataType::Boolean => "boolean".into(),
        DataType::Int8 => "tinyint".into(),
        DataType::Int16 | DataType::UInt8 => "smallint".into(),
        DataType::Int32 | DataType::UInt16 => "int".into(),
        DataType::Int64 | DataType::UInt32 => "bigint".into(),
        DataType::Float32 => "float".into(),
        DataType::Float64 => "double".into(),
        DataType::Decimal128(p, s) => format!("decimal({p},{s})"),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "string".into(),
        DataType::Binary | DataType::LargeBinary => "binary".into(),
        DataType::Date32 | DataType::Date64 => "date".into(),
        DataType::Timestamp(_, _) => "timestamp".into(),
        DataType::List(item) => format!("array<{}>", hive_type(table, item)?),
        other => {
            return Err(Error::ColumnTypeConflict {
                table: table.to_string(),
                column: f.name().clone(),
                expected: "a type Hive and Athena name".into(),
                found: other.to_string(),
            });
        }
    })
}

/// Crawls an object-store prefix.
#[derive(Clone, Debug)]
pub struct Crawler {
    location: Location,
    csv: CsvOptions,
}

/// A data file, split into its table folder and partition segments.
struct DataFile {
    table: String,
    partition: Vec<(String, String)>,
    format: TableFormat,
    meta: ObjectMeta,
}

impl DataFile {
    fn clone_meta(&self) -> DataFile {
        DataFile {
            table: self.table.clone(),
            partition: self.partition.clone(),
            format: self.format,
            meta: self.meta.clone(),
        }
    }
}

impl Crawler {
    /// A crawler of everything under `location`.
    pub fn new(location: Location) -> Self {
        Crawler {
            location,
            csv: CsvOptions::default(),
        }
    }

    /// How CSV files are read (default: header, `,`, `"`, no decimal inference).
    pub fn with_csv_options(mut self, options: CsvOptions) -> Self {
        self.csv = options;
        self
    }

    fn classify(&self, meta: ObjectMeta) -> Option<DataFile> {
        let rel = self.location.relative(&meta.location);
        let parts: Vec<&str> = rel.split('/').collect();
        if parts.iter().any(|p| p.starts_with('_') || p.starts_with('.')) || parts.len() < 2 {
            return None;
        }
        let format = TableFormat::of(parts[parts.len() - 1])?;
        let dirs = &parts[..parts.len() - 1];
        let first_key = dirs.iter().position(|d| d.contains('=')).unwrap_or(dirs.len());
        if first_key == 0 {
            return None;
        }
        let partition = dirs[first_key..]
            .iter()
            .map(|d| {
                let (k, v) = d.split_once('=').unwrap_or((d, ""));
                (k.to_string(), v.to_string())
            })
            .collect();
        Some(DataFile {
            table: dirs[..first_key].join("/"),
            partition,
            format,
            meta,
        })
    }

    /// Lists the prefix once and groups its data files by table.
    async fn listing(&self) -> Result<BTreeMap<String, Vec<DataFile>>> {
        let mut by_table: BTreeMap<String, Vec<DataFile>> = BTreeMap::new();
        for meta in self.location.list("").await? {
            if let Some(f) = self.classify(meta) {
                by_table.entry(f.table.clone()).or_default().push(f);
            }
        }
        Ok(by_table)
    }

    /// Lists the prefix once, reads every Parquet footer and samples every CSV and JSON file.
    ///
    /// # Errors
    /// A listing or footer read that fails; a table whose files disagree on format, partition
    /// keys or column types (the error names the files).
    pub async fn crawl(&self) -> Result<Vec<CrawledTable>> {
        let mut out = Vec::new();
        for (name, files) in self.listing().await? {
            out.push(self.table(name, files, None).await?.table);
        }
        Ok(out)
    }

    /// Crawls into `catalog`: one listing; footers are read only for files the catalog has
    /// not seen (by path, size, last-modified and e-tag); deleted files leave the table's
    /// partitions; a schema change records a new version. Tables whose files all vanished
    /// are dropped from the catalog. Returns what the catalog holds now and how many footers
    /// were read.
    ///
    /// # Errors
    /// As [`Crawler::crawl`]; [`Error::ConcurrentRun`] when another crawl stored a table's
    /// entry twice in a row while this one worked on it.
    pub async fn crawl_into(&self, catalog: &crate::catalog::Catalog) -> Result<CrawlSummary> {
        let mut summary = CrawlSummary::default();
        let listing = self.listing().await?;
        for name in catalog.list().await? {
            if !listing.contains_key(&name) {
                catalog.drop_table(&name).await?;
            }
        }
        for (name, files) in listing {
            let mut attempt = 0;
            loop {
                let previous = catalog.get(&name).await?;
                let files: Vec<DataFile> = files.iter().map(DataFile::clone_meta).collect();
                let scanned = self.table(name.clone(), files, previous.as_ref()).await?;
                summary.footers_read += scanned.footers_read;
                summary.samples_read += scanned.samples_read;
                let entry = crate::catalog::CatalogTable::next(previous.as_ref(), &scanned);
                if previous.as_ref().is_some_and(|p| p.same_content(&entry)) {
                    summary.tables.push(previous.expect("checked"));
                    break;
                }
                match catalog.put(&entry).await {
                    Ok(()) => {
                        summary.tables.push(entry);
                        break;
                    }
                    Err(e) if e.is_concurrent_run() && attempt == 0 => attempt += 1,
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(summary)
    }

    async fn table(
        &self,
        name: String,
        files: Vec<DataFile>,
        previous: Option<&crate::catalog::CatalogTable>,
    ) -> Result<Scanned> {
        let conflict = |what: String| Error::config(format!("table `{name}`: {what}"));
        let first = &files[0];
        let keys: Vec<String> = first.partition.iter().map(|(k, _)| k.clone()).collect();
        for f in &files {
            if f.format != first.format {
                return Err(conflict(format!(
                    "files of two formats: {} ({:?}) and {} ({:?})",
                    first.meta.location, first.format, f.meta.location, f.format
                )));
            }
            let k: Vec<&String> = f.partition.iter().map(|(k, _)| k).collect();
            if k != keys.iter().collect::<Vec<_>>() {
                return Err(conflict(format!(
                    "partition keys {keys:?} in {} but {k:?} in {}",
                    first.meta.location, f.meta.location
                )));
            }
        }
        // Schemas (and Parquet row counts) from footers or samples, merged file by file onto
        // what the catalog knew; a file it has seen unchanged is not read again.
        let mut schema: Option<(SchemaRef, String)> = previous
            .and_then(|p| p.schema().transpose())
            .transpose()?
            .map(|s| (s, format!("the catalog's schema of `{name}`")));
        let (mut footers_read, mut samples_read) = (0, 0);
        let policy = match first.format {
            TableFormat::Parquet => MergePolicy::Strict,
            TableFormat::Csv | TableFormat::JsonLines => MergePolicy::Inferred,
        };
        let mut file_rows = BTreeMap::new();
        for f in &files {
            let rel = self.location.relative(&f.meta.location);
            let mark = FileMark {
                size: f.meta.size,
                last_modified: f.meta.last_modified,
                e_tag: f.meta.e_tag.clone(),
            };
            if let Some(known) = previous.and_then(|p| p.files.get(&rel)).filter(|k| k.mark == mark) {
                file_rows.insert(rel, (mark, known.rows));
                continue;
            }
            let (file_schema, rows) = match f.format {
                TableFormat::Parquet => {
                    let reader = ObjectReader::new(self.location.store().clone(), f.meta.clone());
                    let builder = ParquetRecordBatchStreamBuilder::new(reader)
                        .await
                        .map_err(|e| conflict(format!("{}: {e}", f.meta.location)))?;
                    footers_read += 1;
                    let rows = builder.metadata().file_metadata().num_rows() as u64;
                    (builder.schema().clone(), Some(rows))
                }
                TableFormat::Csv => {
                    samples_read += 1;
                    let s = formats::infer_csv(&self.location, &f.meta, &rel, &self.csv, formats::SAMPLE_ROWS).await?;
                    (std::sync::Arc::new(s), None)
                }
                TableFormat::JsonLines => {
                    samples_read += 1;
                    let s =
                        formats::infer_json(&self.location, &f.meta, &rel, formats::SAMPLE_ROWS, BadRows::Fail).await?;
                    (std::sync::Arc::new(s), None)
                }
            };
            file_rows.insert(rel, (mark, rows));
            if file_schema.fields().is_empty() {
                continue; // an empty text file says nothing about the table
            }
            let file = f.meta.location.to_string();
            schema = Some(match schema {
                None => (file_schema, file),
                Some((merged, from)) => (
                    formats::merge_schemas(&name, &merged, &from, &file_schema, &file, policy)?,
                    from,
                ),
            });
        }
        // Partitions, with every key's values typed alike.
        let mut parts: BTreeMap<Vec<String>, CrawledPartition> = BTreeMap::new();
        for f in &files {
            let rel = self.location.relative(&f.meta.location);
            let rows = file_rows.get(&rel).and_then(|(_, r)| *r);
            let raw: Vec<String> = f.partition.iter().map(|(_, v)| v.clone()).collect();
            let path = std::iter::once(name.clone())
                .chain(f.partition.iter().map(|(k, v)| format!("{k}={v}")))
                .collect::<Vec<_>>()
                .join("/");
            let p = parts.entry(raw).or_insert_with(|| CrawledPartition {
                values: Vec::new(),
                path,
                files: 0,
                rows: Some(0),
                bytes: 0,
            });
            p.files += 1;
            p.bytes += f.meta.size;
            p.rows = p.rows.zip(rows).map(|(a, b)| a + b);
        }
        let types: Vec<DataType> = (0..keys.len())
            .map(|i| partition_type(parts.keys().map(|raw| raw[i].as_str())))
            .collect();
        let mut partitions: Vec<CrawledPartition> = parts
            .into_iter()
            .map(|(raw, mut p)| {
                p.values = raw.iter().zip(&types).map(|(v, t)| typed(v, t)).collect();
                p
            })
            .collect();
        partitions.sort_by(|a, b| a.values.cmp(&b.values));
        Ok(Scanned {
            table: CrawledTable {
                name,
                format: first.format,
                schema: schema.map(|(s, _)| s),
                partition_keys: keys.into_iter().zip(types).collect(),
                partitions,
            },
            files: file_rows,
            footers_read,
            samples_read,
        })
    }
}

/// One table as a crawl saw it, with each file's bookmark and rows.
pub(crate) struct Scanned {
    pub(crate) table: CrawledTable,
    pub(crate) files: BTreeMap<String, (FileMark, Option<u64>)>,
    pub(crate) footers_read: u64,
    pub(crate) samples_read: u64,
}

/// What [`Crawler::crawl_into`] did.
#[derive(Debug, Default)]
pub struct CrawlSummary {
    /// Every table the catalog holds after the crawl.
    pub tables: Vec<crate::catalog::CatalogTable>,
    /// Parquet footers read (0 when nothing changed).
    pub footers_read: u64,
    /// CSV and JSON files sampled for their schema (0 when nothing changed).
    pub samples_read: u64,
}

const HIVE_NULL: &str = "__HIVE_DEFAULT_PARTITION__";

/// The narrowest type every value of a partition key fits: Int64, Date32, else Utf8.
fn partition_type<'a>(values: impl Iterator<Item = &'a str> + Clone) -> DataType {
    let present = values.filter(|v| *v != HIVE_NULL);
    if present.clone().all(|v| v.parse::<i64>().is_ok()) {
        DataType::Int64
    } else if present
        .clone()
        .all(|v| NaiveDate::parse_from_str(v, "%Y-%m-%d").is_ok())
    {
        DataType::Date32
    } else {
        DataType::Utf8
    }
}

fn typed(v: &str, t: &DataType) -> PartitionValue {
    if v == HIVE_NULL {
        return PartitionValue::Null;
    }
    match t {
        DataType::Int64 => PartitionValue::Int(v.parse().expect("typed as integer")),
        DataType::Date32 => PartitionValue::Date(NaiveDate::parse_from_str(v, "%Y-%m-%d").expect("typed as date")),
        _ => PartitionValue::Text(v.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_values_are_typed_alike() {
        assert_eq!(partition_type(["2025", "2024"].into_iter()), DataType::Int64);
        assert_eq!(partition_type(["2025-07-24", HIVE_NULL].into_iter()), DataType::Date32);
        assert_eq!(partition_type(["eu", "7"].into_iter()), DataType::Utf8);
        assert_eq!(typed(HIVE_NULL, &DataType::Int64), PartitionValue::Null);
    }
}
