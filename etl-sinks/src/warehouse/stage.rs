//! A run's rows staged as Parquet files on an object store, for the warehouses that load
//! files (Redshift `COPY`, Snowflake `COPY INTO`): unsigned integers widened to types both
//! read, and `_etl_seq`, each row's arrival number, appended — the order that decides which
//! of several rows of one key is the latest when the cursor ties.

use std::sync::{Arc, Mutex};

use arrow::array::{ArrayRef, Int64Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use etl_core::kit::sql::Dialect;
use etl_core::{Error, Location, Result, StageSummary};
use object_store::ObjectMeta;
use object_store::ObjectStoreExt;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

use super::statements::SEQ;
use super::types;

/// Bytes of Parquet per staged file, at most (warehouses load the files of a prefix in
/// parallel).
const FILE_BYTES: usize = 64 << 20;

/// The type a column is staged as: unsigned integers widened to signed ones (`UInt64` as
/// `Decimal128(20, 0)`).
fn staged_type(dt: &DataType) -> Option<DataType> {
    Some(match dt {
        DataType::UInt8 => DataType::Int16,
        DataType::UInt16 => DataType::Int32,
        DataType::UInt32 => DataType::Int64,
        DataType::UInt64 => DataType::Decimal128(20, 0),
        _ => return None,
    })
}

fn parquet_err(table: &str) -> impl Fn(parquet::errors::ParquetError) -> Error + '_ {
    move |e| Error::Connector {
        connector: "staging",
        message: format!("table `{table}`: staging Parquet: {e}"),
        retryable: false,
    }
}

/// What a shard staged ([`etl_core::Staged::manifest`]): its folder, files and columns, for
/// a plan's commit in another process ([`ParquetStage::of_shards`]).
#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct StagedFiles {
    prefix: String,
    /// Path, size and entity tag of each file.
    files: Vec<(String, u64, Option<String>)>,
    columns: Option<Vec<etl_core::lake::Column>>,
    rows: u64,
    bytes: u64,
}

/// The staged files of one table's run.
pub(crate) struct ParquetStage {
    location: Location,
    prefix: String,
    /// The folders the files are in: the run's own, or each shard's of a plan.
    prefixes: Vec<String>,
    table: String,
    dialect: Dialect,
    /// The uploaded files, as the store described them (read back without a HEAD each).
    files: Vec<ObjectMeta>,
    /// The file being written (in a mutex only to keep the stage `Sync`; never contended).
    writer: Mutex<Option<ArrowWriter<Vec<u8>>>>,
    columns: Option<SchemaRef>,
    seq: i64,
    bytes: u64,
}

impl ParquetStage {
    /// Stages `table`'s rows under `prefix` of `location`, refusing types `dialect` cannot
    /// hold.
    pub(crate) fn new(location: Location, prefix: String, table: &str, dialect: Dialect) -> Self {
        ParquetStage {
            location,
            prefixes: vec![prefix.clone()],
            prefix,
            table: table.to_string(),
            dialect,
            files: Vec::new(),
            writer: Mutex::new(None),
            columns: None,
            seq: 0,
            bytes: 0,
        }
    }

    /// The staged columns (the first batch's, without `_etl_seq`); `None` before any row.
    pub(crate) fn columns(&self) -> Option<&SchemaRef> {
        self.columns.as_ref()
    }

    /// The staged columns (none before the first batch).
    pub(crate) fn fields(&self) -> Vec<arrow::datatypes::Field> {
        self.columns
            .iter()
            .flat_map(|s| s.fields().iter().map(|f| f.as_ref().clone()))
            .collect()
    }

    /// Rows staged.
    pub(crate) fn rows(&self) -> u64 {
        self.seq as u64
    }

    /// The folders of the files, relative to the location: the run's own, or each shard's.
    pub(crate) fn prefixes(&self) -> &[String] {
        &self.prefixes
    }

    /// What was staged, for a plan's commit in another process.
    pub(crate) fn describe(&self) -> StagedFiles {
        StagedFiles {
            prefix: self.prefix.clone(),
            files: self
                .files
                .iter()
                .map(|f| (f.location.to_string(), f.size, f.e_tag.clone()))
                .collect(),
            columns: self
                .columns
                .as_ref()
                .map(|s| s.fields().iter().map(|f| etl_core::lake::Column::of(f)).collect()),
            rows: self.rows(),
            bytes: self.bytes,
        }
    }

    /// The files every shard of the plan `run_id` staged, as one stage of the plan's run (in
    /// `prefix`, where nothing is written): loaded and removed together.
    ///
    /// # Errors
    /// As [`etl_core::shard::agreed_columns`]; [`Error::Metadata`] for columns that do not
    /// parse.
    pub(crate) fn of_shards(
        location: Location,
        prefix: String,
        run_id: &str,
        table: &str,
        dialect: Dialect,
        shards: Vec<StagedFiles>,
    ) -> Result<ParquetStage> {
        let mut stage = ParquetStage::new(location, prefix, table, dialect);
        stage.prefixes.clear();
        let columns = etl_core::shard::agreed_columns(table, run_id, shards.iter().map(|s| s.columns.clone()))?;
        for shard in shards.into_iter().filter(|s| s.columns.is_some()) {
            stage.prefixes.push(shard.prefix);
            stage.seq += shard.rows as i64;
            stage.bytes += shard.bytes;
            stage
                .files
                .extend(shard.files.into_iter().map(|(path, size, e_tag)| ObjectMeta {
                    location: object_store::path::Path::from(path),
                    last_modified: chrono::Utc::now(),
                    size,
                    e_tag,
                    version: None,
                }));
        }
        if let Some(c) = columns {
            stage.columns = Some(Arc::new(etl_core::lake::Column::schema(&c, table)?));
        }
        Ok(stage)
    }

    /// The files staged so far.
    #[cfg(feature = "redshift")]
    pub(crate) fn files(&self) -> &[ObjectMeta] {
        &self.files
    }

    /// The location the files are under.
    #[cfg(feature = "redshift")]
    pub(crate) fn location(&self) -> &Location {
        &self.location
    }

    /// Appends a batch.
    pub(crate) async fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        if self.columns.is_none() {
            // Refuse a type the warehouse cannot hold before anything is staged.
            for f in batch.schema().fields() {
                types::column_type(self.dialect, &self.table, f)?;
            }
            self.columns = Some(batch.schema());
        }
        let staged = self.staged(batch)?;
        let full = {
            let slot = self.writer.get_mut().expect("writer lock");
            if slot.is_none() {
                let props = WriterProperties::builder().set_compression(Compression::SNAPPY).build();
                *slot = Some(
                    ArrowWriter::try_new(Vec::new(), staged.schema(), Some(props)).map_err(parquet_err(&self.table))?,
                );
            }
            let w = slot.as_mut().expect("writer");
            w.write(&staged).map_err(parquet_err(&self.table))?;
            w.in_progress_size() + w.bytes_written() >= FILE_BYTES
        };
        if full {
            self.finish_file().await?;
        }
        Ok(())
    }

    /// Uploads the last file.
    pub(crate) async fn finish(&mut self) -> Result<StageSummary> {
        self.finish_file().await?;
        Ok(StageSummary {
            rows: self.rows(),
            bytes: self.bytes,
            files: self.files.len() as u64,
        })
    }

    /// Deletes what the shards of plan `plan` staged under `folder` of the location, an
    /// attempt's that never recorded its manifest too: the files in a folder, at any depth,
    /// named `<plan>-<index>-<attempt>` (best effort: a failure is logged).
    pub(crate) async fn remove_plan(location: &Location, folder: &str, plan: &str, table: &str) {
        let of_plan = format!("{plan}-");
        let result: Result<()> = async {
            for m in location.list(folder).await? {
                let rel = location.relative(&m.location);
                if rel.split('/').any(|part| part.starts_with(&of_plan)) {
                    let _ = location.store().delete(&m.location).await;
                }
            }
            Ok(())
        }
        .await;
        if let Err(e) = result {
            tracing::warn!(table = %table, error = %e, "the plan's staged files were not all deleted");
        }
    }

    /// Removes the staged files (best effort: a failure is logged).
    pub(crate) async fn remove(&self) {
        for f in &self.files {
            if let Err(e) = self.location.store().delete(&f.location).await {
                tracing::warn!(table = %self.table, path = %f.location, error = %e, "a staged file was not removed");
            }
        }
    }

    /// The batch as staged: unsigned columns widened, the arrival number appended.
    fn staged(&mut self, batch: &RecordBatch) -> Result<RecordBatch> {
        let table = &self.table;
        let mut fields: Vec<Field> = Vec::with_capacity(batch.num_columns() + 1);
        let mut cols: Vec<ArrayRef> = Vec::with_capacity(batch.num_columns() + 1);
        for (f, c) in batch.schema().fields().iter().zip(batch.columns()) {
            match staged_type(f.data_type()) {
                Some(t) => {
                    cols.push(etl_core::kit::batch::cast_column(table, f.name(), c, &t)?);
                    fields.push(f.as_ref().clone().with_data_type(t));
                }
                None => {
                    cols.push(c.clone());
                    fields.push(f.as_ref().clone());
                }
            }
        }
        let n = batch.num_rows() as i64;
        cols.push(Arc::new(Int64Array::from_iter_values(self.seq..self.seq + n)));
        fields.push(Field::new(SEQ, DataType::Int64, false));
        self.seq += n;
        RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).map_err(|e| Error::arrow(table, e))
    }

    async fn finish_file(&mut self) -> Result<()> {
        let Some(w) = self.writer.get_mut().expect("writer lock").take() else {
            return Ok(());
        };
        let body = w.into_inner().map_err(parquet_err(&self.table))?;
        let size = body.len() as u64;
        self.bytes += size;
        let path = self
            .location
            .path(&format!("{}/part-{:05}.parquet", self.prefix, self.files.len()));
        let put = self
            .location
            .store()
            .put(&path, body.into())
            .await
            .map_err(|e| Error::store(&path, e))?;
        self.files.push(ObjectMeta {
            location: path,
            last_modified: chrono::Utc::now(),
            size,
            e_tag: put.e_tag,
            version: put.version,
        });
        Ok(())
    }
}
