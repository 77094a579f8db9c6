use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use arrow::datatypes::{DataType, SchemaRef};
use chrono::NaiveDate;
use object_store::ObjectMeta;
use parquet::arrow::async_reader::ParquetRecordBatchStreamBuilder;

use super::model::{
    CatalogTable, CrawlSummary, CrawledPartition, CrawledTable, PartitionValue, Scanned, TableFormat, TableLog,
};
use super::store::Catalog;
use crate::error::{Error, Result};
use crate::lake::formats::{self, MergePolicy};
use crate::lake::parquet::ObjectReader;
use crate::lake::partition;
use crate::location::Location;
use crate::position::FileMark;
use crate::spec::{BadRows, CsvOptions};

/// Crawls an object-store prefix.
#[derive(Clone, Debug)]
pub struct Crawler {
    location: Location,
    csv: CsvOptions,
    log: Option<Arc<dyn TableLog>>,
}

/// A data file, split into its table folder and partition segments.
struct DataFile {
    table: String,
    partition: Vec<(String, String)>,
    format: TableFormat,
    meta: ObjectMeta,
    /// For a file a table's log names: the table's schema and the file's rows.
    logged: Option<(SchemaRef, Option<u64>)>,
}

impl DataFile {
    fn clone_meta(&self) -> DataFile {
        DataFile {
            table: self.table.clone(),
            partition: self.partition.clone(),
            format: self.format,
            meta: self.meta.clone(),
            logged: self.logged.clone(),
        }
    }
}

impl Crawler {
    /// A crawler of everything under `location`.
    pub fn new(location: Location) -> Self {
        Crawler {
            location,
            csv: CsvOptions::default(),
            log: None,
        }
    }

    /// The crawled location.
    pub fn location(&self) -> &Location {
        &self.location
    }

    /// Reads the tables whose folder holds `log`'s marker (`_delta_log`) through it. Without
    /// one, such a table is an error naming it: its folder's files are not its rows.
    pub fn with_table_log(mut self, log: Arc<dyn TableLog>) -> Self {
        self.log = Some(log);
        self
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
            logged: None,
        })
    }

    /// Lists the prefix once and groups its data files by table; a table with a log has the
    /// files its log names.
    async fn listing(&self) -> Result<BTreeMap<String, Vec<DataFile>>> {
        const DELTA_LOG: &str = "_delta_log";
        let marker = self.log.as_ref().map_or(DELTA_LOG, |l| l.marker());
        let mut by_table: BTreeMap<String, Vec<DataFile>> = BTreeMap::new();
        let mut logged = BTreeSet::new();
        for meta in self.location.list("").await? {
            let rel = self.location.relative(&meta.location);
            let parts: Vec<&str> = rel.split('/').collect();
            if let Some(i) = parts.iter().position(|p| *p == marker)
                && i > 0
            {
                logged.insert(parts[..i].join("/"));
                continue;
            }
            if let Some(f) = self.classify(meta) {
                by_table.entry(f.table.clone()).or_default().push(f);
            }
        }
        for table in logged {
            by_table.remove(&table);
            let log = self.log.as_ref().ok_or_else(|| {
                Error::config(format!(
                    "table `{table}` is a Delta table (it has a `{DELTA_LOG}` folder): its folder's files are not \
                     its rows; crawl it with a Delta reader (Crawler::with_table_log(etl_sinks::delta::DeltaLog), \
                     feature `delta`)"
                ))
            })?;
            let current = log.current(&self.location, &table).await?;
            for (meta, rows) in current.files {
                if let Some(mut f) = self.classify(meta) {
                    f.table = table.clone();
                    f.format = log.format();
                    f.logged = Some((current.schema.clone(), rows));
                    by_table.entry(table.clone()).or_default().push(f);
                }
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
    pub async fn crawl_into(&self, catalog: &Catalog) -> Result<CrawlSummary> {
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
                let entry = CatalogTable::next(previous.as_ref(), &scanned);
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

    async fn table(&self, name: String, files: Vec<DataFile>, previous: Option<&CatalogTable>) -> Result<Scanned> {
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
            TableFormat::Parquet | TableFormat::Delta => MergePolicy::Strict,
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
            let (file_schema, rows) = match (&f.logged, f.format) {
                (Some((schema, rows)), _) => (schema.clone(), *rows),
                (None, TableFormat::Parquet | TableFormat::Delta) => {
                    let reader = ObjectReader::new(self.location.store().clone(), f.meta.clone());
                    let builder = ParquetRecordBatchStreamBuilder::new(reader)
                        .await
                        .map_err(|e| conflict(format!("{}: {e}", f.meta.location)))?;
                    footers_read += 1;
                    let rows = builder.metadata().file_metadata().num_rows() as u64;
                    (builder.schema().clone(), Some(rows))
                }
                (None, TableFormat::Csv) => {
                    samples_read += 1;
                    let s = formats::infer_csv(&self.location, &f.meta, &rel, &self.csv, formats::SAMPLE_ROWS).await?;
                    (std::sync::Arc::new(s), None)
                }
                (None, TableFormat::JsonLines) => {
                    samples_read += 1;
                    let s =
                        formats::infer_json(&self.location, &f.meta, &rel, formats::SAMPLE_ROWS, BadRows::Fail).await?;
                    (std::sync::Arc::new(s), None)
                }
            };
            file_rows.insert(rel, (mark, rows));
            // A column that is also a partition key (`device_id=7/` of column `device_id`) is
            // the key's: readers take its value from the folder, and Hive has no column twice.
            let file_schema = if keys.iter().any(|k| file_schema.field_with_name(k).is_ok()) {
                let kept: Vec<_> = file_schema
                    .fields()
                    .iter()
                    .filter(|f| !keys.contains(f.name()))
                    .cloned()
                    .collect();
                std::sync::Arc::new(arrow::datatypes::Schema::new_with_metadata(
                    kept,
                    file_schema.metadata().clone(),
                ))
            } else {
                file_schema
            };
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
            .map(|i| {
                let values: Vec<String> = parts.keys().map(|raw| partition::unescape(&raw[i])).collect();
                partition_type(values.iter().map(String::as_str))
            })
            .collect();
        let mut partitions: Vec<CrawledPartition> = parts
            .into_iter()
            .map(|(raw, mut p)| {
                p.values = raw
                    .iter()
                    .zip(&types)
                    .map(|(v, t)| typed(&partition::unescape(v), t))
                    .collect();
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
