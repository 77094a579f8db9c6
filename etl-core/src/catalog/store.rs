use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use chrono::Utc;
use object_store::ObjectStoreExt;

use super::model::{
    CatalogFile, CatalogTable, CrawledPartition, CrawledTable, PartitionValue, Scanned, SchemaVersion, TableFormat,
};
use crate::error::{Error, Result};
use crate::lake::Column;
use crate::lake::formats::{self, Decoded, TextRead};
use crate::location::Location;
use crate::spec::CsvOptions;

const DIR: &str = "_etl/catalog";

fn data_type(table: &str, c: &Column) -> Result<DataType> {
    c.arrow_type(&format!("{DIR}/{table}"))
}

impl CatalogTable {
    /// The current schema; `None` while every file of the table is empty.
    ///
    /// # Errors
    /// [`Error::Metadata`] when a stored type does not parse.
    pub fn schema(&self) -> Result<Option<SchemaRef>> {
        if self.columns.is_empty() {
            return Ok(None);
        }
        Ok(Some(Arc::new(Column::schema(
            &self.columns,
            &format!("{DIR}/{}", self.name),
        )?)))
    }

    /// Rows over all partitions, when every file records its count.
    pub fn rows(&self) -> Option<u64> {
        self.partitions.iter().map(|p| p.rows).sum()
    }

    /// The partitions whose values pass `filter` (partition pruning).
    pub fn partitions_where(&self, filter: impl Fn(&[PartitionValue]) -> bool) -> Vec<&CrawledPartition> {
        self.partitions.iter().filter(|p| filter(&p.values)).collect()
    }

    /// The table as a crawl result, for [`CrawledTable::athena_ddl`].
    ///
    /// # Errors
    /// [`Error::Metadata`] when a stored type does not parse.
    pub fn crawled(&self) -> Result<CrawledTable> {
        Ok(CrawledTable {
            name: self.name.clone(),
            format: self.format,
            schema: self.schema()?,
            partition_keys: self
                .partition_keys
                .iter()
                .map(|c| Ok((c.name.clone(), data_type(&self.name, c)?)))
                .collect::<Result<Vec<_>>>()?,
            partitions: self.partitions.clone(),
        })
    }

    /// The document a crawl leads to from `previous`.
    pub(crate) fn next(previous: Option<&CatalogTable>, scanned: &Scanned) -> CatalogTable {
        let t = &scanned.table;
        let columns: Vec<Column> = match &t.schema {
            Some(s) => s.fields().iter().map(|f| Column::of(f)).collect(),
            None => previous.map(|p| p.columns.clone()).unwrap_or_default(),
        };
        let mut versions = previous.map(|p| p.versions.clone()).unwrap_or_default();
        let before = versions.last().map(|v| v.columns.clone()).unwrap_or_default();
        if !columns.is_empty() && columns != before {
            let mut changes = Vec::new();
            for c in &columns {
                match before.iter().find(|b| b.name == c.name) {
                    None if before.is_empty() => {}
                    None => changes.push(format!("added `{}` {}", c.name, c.data_type)),
                    Some(b) if b.data_type != c.data_type => {
                        changes.push(format!("widened `{}` {} → {}", c.name, b.data_type, c.data_type))
                    }
                    Some(_) => {}
                }
            }
            if before.is_empty() {
                changes.push("first seen".to_string());
            }
            versions.push(SchemaVersion {
                version: versions.len() as u32 + 1,
                columns: columns.clone(),
                changes,
                recorded_at: Utc::now(),
            });
        }
        CatalogTable {
            name: t.name.clone(),
            generation: previous.map_or(0, |p| p.generation) + 1,
            format: t.format,
            columns,
            partition_keys: t
                .partition_keys
                .iter()
                .map(|(k, dt)| Column::of(&Field::new(k, dt.clone(), true)))
                .collect(),
            versions,
            partitions: t.partitions.clone(),
            files: scanned
                .files
                .iter()
                .map(|(path, (mark, rows))| {
                    (
                        path.clone(),
                        CatalogFile {
                            mark: mark.clone(),
                            rows: *rows,
                        },
                    )
                })
                .collect(),
            crawled_at: Utc::now(),
        }
    }

    /// Whether two documents say the same about the table (generation and crawl time aside).
    pub(crate) fn same_content(&self, other: &CatalogTable) -> bool {
        self.format == other.format
            && self.columns == other.columns
            && self.partition_keys == other.partition_keys
            && self.versions == other.versions
            && self.partitions == other.partitions
            && self.files == other.files
    }
}

/// A batch of one file in the scan's schema: its columns cast to the catalog's types, NULLs
/// for columns the file lacks, constants for the partition keys.
fn aligned(
    table: &str,
    b: &arrow::record_batch::RecordBatch,
    schema: &SchemaRef,
    keys: &[String],
    values: &[PartitionValue],
) -> Result<arrow::record_batch::RecordBatch> {
    use arrow::array::{ArrayRef, Date32Array, Int64Array, StringArray, new_null_array};
    let n = b.num_rows();
    let cols = schema
        .fields()
        .iter()
        .map(|f| -> Result<ArrayRef> {
            if let Some(i) = keys.iter().position(|k| k == f.name()) {
                let v = &values[i];
                let a: ArrayRef = match (v, f.data_type()) {
                    (PartitionValue::Int(x), DataType::Int64) => Arc::new(Int64Array::from(vec![*x; n])),
                    (PartitionValue::Date(d), DataType::Date32) => {
                        let days = (*d - chrono::NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch")).num_days() as i32;
                        Arc::new(Date32Array::from(vec![days; n]))
                    }
                    (PartitionValue::Text(s), _) => Arc::new(StringArray::from(vec![s.as_str(); n])),
                    _ => new_null_array(f.data_type(), n),
                };
                return Ok(a);
            }
            formats::column_as(table, b, f)
        })
        .collect::<Result<Vec<_>>>()?;
    arrow::record_batch::RecordBatch::try_new(schema.clone(), cols).map_err(|e| Error::arrow(table, e))
}

/// The catalog of the lake at a location.
#[derive(Clone, Debug)]
pub struct Catalog {
    lake: Location,
    csv: CsvOptions,
}

fn escape(name: &str) -> String {
    name.replace('%', "%25").replace('/', "%2F")
}

fn unescape(name: &str) -> String {
    name.replace("%2F", "/").replace("%25", "%")
}

impl Catalog {
    /// The catalog of the lake at `lake` (documents under `_etl/catalog/`).
    pub fn new(lake: Location) -> Self {
        Catalog {
            lake,
            csv: CsvOptions::default(),
        }
    }

    /// How [`Catalog::scan`] reads CSV files (default: header, `,`, `"`); give the options
    /// the crawler was given.
    pub fn with_csv_options(mut self, options: CsvOptions) -> Self {
        self.csv = options;
        self
    }

    /// Generations of a table's documents, oldest first.
    async fn generations(&self, name: &str) -> Result<Vec<(u64, object_store::path::Path)>> {
        let mut out: Vec<(u64, object_store::path::Path)> = self
            .lake
            .list(&format!("{DIR}/{}", escape(name)))
            .await?
            .into_iter()
            .filter_map(|m| {
                let g = m.location.filename()?.strip_suffix(".json")?.parse().ok()?;
                Some((g, m.location))
            })
            .collect();
        out.sort();
        Ok(out)
    }

    /// The tables the catalog holds.
    ///
    /// # Errors
    /// [`Error::ObjectStore`] when listing fails.
    pub async fn list(&self) -> Result<Vec<String>> {
        let mut names: Vec<String> = self
            .lake
            .list(DIR)
            .await?
            .iter()
            .filter_map(|m| {
                let rel = self.lake.relative(&m.location);
                let dir = rel.strip_prefix(&format!("{DIR}/"))?.split('/').next()?.to_string();
                Some(unescape(&dir))
            })
            .collect();
        names.dedup();
        Ok(names)
    }

    /// A table's current document.
    ///
    /// # Errors
    /// [`Error::ObjectStore`], or [`Error::Metadata`] when the document does not parse.
    pub async fn get(&self, name: &str) -> Result<Option<CatalogTable>> {
        match self.generations(name).await?.pop() {
            Some((_, path)) => Ok(Some(self.lake.get_json(&path).await?)),
            None => Ok(None),
        }
    }

    /// Stores `entry` as its table's next generation, unless another crawl stored it first
    /// ([`Error::ConcurrentRun`]). Keeps the last 10 generations.
    pub(crate) async fn put(&self, entry: &CatalogTable) -> Result<()> {
        let dir = format!("{DIR}/{}", escape(&entry.name));
        let path = self.lake.path(&format!("{dir}/{:020}.json", entry.generation));
        if !self.lake.create_json(&path, entry).await? {
            return Err(Error::ConcurrentRun {
                pipeline: "crawler".into(),
                table: entry.name.clone(),
            });
        }
        let gens = self.generations(&entry.name).await?;
        for (_, old) in gens.iter().take(gens.len().saturating_sub(10)) {
            let _ = self.lake.store().delete(old).await;
        }
        Ok(())
    }

    /// Reads a table as record batches: only the partitions `filter` keeps (pruning on typed
    /// values) and only `columns` (all when `None`), partition keys included as columns.
    /// Every batch has the catalog's current schema (projected): a file written before a
    /// column was added yields NULLs for it, a narrower type is widened.
    ///
    /// # Errors
    /// [`Error::TableNotFound`] when the catalog lacks the table, [`Error::ColumnNotFound`]
    /// for an unknown column, [`Error::Config`] for a table with no known schema; the
    /// stream yields read errors.
    pub async fn scan(
        &self,
        name: &str,
        filter: impl Fn(&[PartitionValue]) -> bool,
        columns: Option<&[&str]>,
    ) -> Result<crate::BatchStream> {
        use futures::{StreamExt, TryStreamExt};
        use parquet::arrow::ProjectionMask;
        use parquet::arrow::async_reader::ParquetRecordBatchStreamBuilder;

        let entry = self.get(name).await?.ok_or_else(|| Error::TableNotFound {
            table: name.to_string(),
            source_name: format!("catalog of {}", self.lake.url()),
        })?;
        let data = entry.schema()?.ok_or_else(|| {
            Error::config(format!(
                "table `{name}`: no schema is known (its {:?} files are empty)",
                entry.format
            ))
        })?;
        let keys: Vec<Field> = entry
            .partition_keys
            .iter()
            .map(|c| Ok(Field::new(&c.name, data_type(name, c)?, true)))
            .collect::<Result<_>>()?;
        let all: Vec<Field> = data
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .chain(keys.iter().cloned())
            .collect();
        let wanted: Vec<Field> = match columns {
            None => all,
            Some(cols) => cols
                .iter()
                .map(|c| {
                    all.iter()
                        .find(|f| f.name() == c)
                        .cloned()
                        .ok_or_else(|| Error::ColumnNotFound {
                            table: name.to_string(),
                            column: c.to_string(),
                        })
                })
                .collect::<Result<_>>()?,
        };
        let out_schema = Arc::new(Schema::new(wanted));
        // The files of the kept partitions, with their partition values.
        let mut files = Vec::new();
        for p in entry.partitions.iter().filter(|p| filter(&p.values)) {
            let prefix = format!("{}/", p.path);
            for (path, f) in entry
                .files
                .iter()
                .filter(|(f, _)| f.starts_with(&prefix) && !f[prefix.len()..].contains('/'))
            {
                // The catalog knows each file's size: no HEAD request before its footer.
                let meta = object_store::ObjectMeta {
                    location: self.lake.path(path),
                    last_modified: f.mark.last_modified,
                    size: f.mark.size,
                    e_tag: f.mark.e_tag.clone(),
                    version: None,
                };
                files.push((path.clone(), meta, p.values.clone()));
            }
        }
        let (lake, table, key_names) = (
            self.lake.clone(),
            name.to_string(),
            keys.iter().map(|k| k.name().clone()).collect::<Vec<_>>(),
        );
        let (format, csv) = (entry.format, self.csv.clone());
        let stream = futures::stream::iter(files)
            .then(move |(path, meta, values)| {
                let (lake, table, out_schema, key_names, data, csv) = (
                    lake.clone(),
                    table.clone(),
                    out_schema.clone(),
                    key_names.clone(),
                    data.clone(),
                    csv.clone(),
                );
                async move {
                    let align = {
                        let (table, out_schema) = (table.clone(), out_schema.clone());
                        move |b: arrow::record_batch::RecordBatch| aligned(&table, &b, &out_schema, &key_names, &values)
                    };
                    let read = |table: &str| TextRead {
                        table: table.to_string(),
                        file: path.clone(),
                        schema: data.clone(),
                        batch_size: 8192,
                        bad_rows: crate::spec::BadRows::Fail,
                    };
                    let text = match format {
                        TableFormat::Parquet | TableFormat::Delta => None,
                        TableFormat::Csv => Some(formats::read_csv(lake.clone(), meta.clone(), csv, read(&table))),
                        TableFormat::JsonLines => Some(formats::read_json(lake.clone(), meta.clone(), read(&table))),
                    };
                    if let Some(text) = text {
                        // Rows of a text file, decoded into the catalog's data columns.
                        let rows = text.filter_map(move |item| {
                            futures::future::ready(match item {
                                Ok(Decoded::Batch(b)) => Some(align(b)),
                                Ok(Decoded::Rejects(_)) => None,
                                Err(e) => Some(Err(e)),
                            })
                        });
                        return Ok::<_, Error>(rows.boxed());
                    }
                    let reader = crate::lake::parquet::ObjectReader::new(lake.store().clone(), meta);
                    let builder = ParquetRecordBatchStreamBuilder::new(reader)
                        .await
                        .map_err(|e| Error::config(format!("table `{table}`, file `{path}`: {e}")))?;
                    let file_schema = builder.schema().clone();
                    let roots: Vec<usize> = out_schema
                        .fields()
                        .iter()
                        .filter_map(|f| file_schema.index_of(f.name()).ok())
                        .collect();
                    let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
                    let batches = builder
                        .with_projection(mask)
                        .build()
                        .map_err(|e| Error::config(format!("table `{table}`, file `{path}`: {e}")))?;
                    Ok(batches
                        .map(move |r| {
                            r.map_err(|e| Error::config(format!("table `{table}`, file `{path}`: {e}")))
                                .and_then(&align)
                        })
                        .boxed())
                }
            })
            .try_flatten();
        Ok(Box::pin(stream))
    }

    /// Forgets a table whose files are all gone.
    pub(crate) async fn drop_table(&self, name: &str) -> Result<()> {
        for (_, p) in self.generations(name).await? {
            self.lake.store().delete(&p).await.map_err(|e| Error::store(&p, e))?;
        }
        Ok(())
    }
}
