//! A partitioned Parquet lake on any object store.
//!
//! Layout and commit protocol: see [`etl_core::lake`]. In short, a run's files are staged
//! under `_etl/staging/`, a commit record created with `PutMode::Create` is the commit point
//! (so of two concurrent runs exactly one commits), and the staged files are then moved to
//! their Hive-partitioned final paths. A run that dies after the commit point is completed
//! by the next run; one that dies before it leaves staged files that later runs delete.
//!
//! # Modes
//! `FULL` and `TRUNCATE_INSERT` replace the table's files (the new files are moved in, then
//! the old ones deleted); `INCREMENTAL` and `APPEND` add files. `UPSERT` is refused: a lake
//! of Parquet files has no key index to merge into (the Delta sink merges).
//!
//! # Schema
//! Each commit record keeps the table's columns. An appending run whose column changed type
//! is refused ([`etl_core::Error::ColumnTypeConflict`], nothing written) unless the change is
//! a safe widening; a column the table holds wider is written in the table's type. New
//! columns are added. A replacing run may change the table's types.
//!
//! # Visibility
//! Readers of the commit log see a commit all at once. Engines that list the folders
//! (DuckDB, pyarrow, Athena) see the moved files appear one by one during the short move
//! after the commit point, and during a replace they can briefly see old and new files side
//! by side; a crash there is completed by the next run.
//!
//! # Memory
//! One open Parquet writer per partition written by the run, each buffering at most one
//! row group; at most [`LakeOptions::max_open_files`] writers are open at once and their
//! buffered row groups are flushed when together they exceed
//! [`LakeOptions::max_buffered_bytes`].

mod commit;
pub(crate) mod conform;
mod keys;
mod writer;

use async_trait::async_trait;
use etl_core::{
    Checkpoint, CommitSummary, Error, LoadMode, Location, Result, ShardSink, Sink, TableSpec, TableWriter, TargetState,
    WriteRequest,
};
use parquet::basic::{Compression, ZstdLevel};

pub use commit::CommitLog;
pub use keys::DELETED_AT;

/// Tuning of the Parquet files a [`LakeSink`] writes.
#[derive(Clone, Debug)]
pub struct LakeOptions {
    /// Roll to a new file when a file reaches this many bytes (default 128 MiB).
    pub target_file_size: usize,
    /// Rows per row group at most (default 131 072, near DuckDB's 122 880: readers prune
    /// finely and the writer's memory stays flat however large the table).
    pub row_group_rows: usize,
    /// Bytes per row group at most, encoded (default 128 MiB).
    pub row_group_bytes: usize,
    /// Compression (default zstd level 3, as DuckDB's: on 5M orders 59 MB against level 1's
    /// 73 MB, for about a third more encoding time, which the read from the source hides).
    pub compression: Compression,
    /// Open files at most; the least recently written is closed beyond it (default 2048, so a
    /// run spread over a few years of daily partitions writes one file per partition).
    pub max_open_files: usize,
    /// Buffered row-group bytes over all open files at most (default 256 MiB).
    pub max_buffered_bytes: usize,
}

impl Default for LakeOptions {
    fn default() -> Self {
        LakeOptions {
            target_file_size: 128 * 1024 * 1024,
            row_group_rows: 128 * 1024,
            row_group_bytes: 128 * 1024 * 1024,
            compression: Compression::ZSTD(ZstdLevel::try_new(3).expect("valid level")),
            max_open_files: 2048,
            max_buffered_bytes: 256 * 1024 * 1024,
        }
    }
}

impl LakeOptions {
    /// The Parquet writer's settings of these options for files of `schema` (the Delta sink
    /// writes with them too).
    pub fn writer_properties(&self, schema: &arrow::datatypes::Schema) -> parquet::file::properties::WriterProperties {
        use arrow::datatypes::DataType;
        // Pages end by size alone (1 MiB), not by parquet's default of 20 000 rows: an int64
        // column's 160 KiB pages compressed apart cost a third more than 1 MiB ones (5M orders:
        // `price` 8.2 MB against 5.5, `product_name`'s dictionary indices 1.48 against 0.31).
        let mut props = parquet::file::properties::WriterProperties::builder()
            .set_data_page_row_count_limit(usize::MAX)
            .set_compression(self.compression)
            .set_max_row_group_row_count(Some(self.row_group_rows.max(1)))
            .set_max_row_group_bytes(Some(self.row_group_bytes.max(1)))
            .set_created_by(format!("etl-rs {}", env!("CARGO_PKG_VERSION")));
        // Dictionaries pay off for repeated text; numbers and times compress as well without
        // them and cost far less to encode.
        for f in schema.fields() {
            if !matches!(
                f.data_type(),
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Binary
            ) {
                props = props
                    .set_column_dictionary_enabled(parquet::schema::types::ColumnPath::from(f.name().as_str()), false);
            }
        }
        props.build()
    }
}

/// Writes tables as Hive-partitioned Parquet under a [`Location`].
///
/// ```
/// # fn main() -> etl_core::Result<()> {
/// use etl_sinks::lake::LakeSink;
/// let lake = LakeSink::new(etl_core::Location::local(std::env::temp_dir().join("etl-doc-lake"))?)
///     .with_target_file_size(64 * 1024 * 1024);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct LakeSink {
    location: Location,
    options: LakeOptions,
    /// The live keys of the table last compared, at its last commit.
    live: std::sync::Arc<keys::LiveKeys>,
}

impl LakeSink {
    /// A lake rooted at `location`.
    pub fn new(location: Location) -> Self {
        LakeSink {
            location,
            options: LakeOptions::default(),
            live: Default::default(),
        }
    }

    /// Replaces all options.
    pub fn with_options(mut self, options: LakeOptions) -> Self {
        self.options = options;
        self
    }

    /// Sets the file size at which files roll.
    pub fn with_target_file_size(mut self, bytes: usize) -> Self {
        self.options.target_file_size = bytes.max(1);
        self
    }

    /// Sets the compression.
    pub fn with_compression(mut self, c: Compression) -> Self {
        self.options.compression = c;
        self
    }

    /// The lake's root.
    pub fn location(&self) -> &Location {
        &self.location
    }

    /// Reads every visible row of a table (without its partition columns), for checks and
    /// small tables; the catalog's scan streams large ones.
    ///
    /// # Errors
    /// [`Error::ObjectStore`], or [`Error::Connector`] for an unreadable file.
    pub async fn read_table(&self, table: &str) -> Result<Vec<arrow::record_batch::RecordBatch>> {
        use futures::TryStreamExt;
        let mut out = Vec::new();
        for meta in self.commit_log(table).visible_files().await? {
            let path = meta.location.to_string();
            let err = |e: parquet::errors::ParquetError| Error::Connector {
                connector: "lake",
                message: format!("reading `{path}`: {e}"),
                retryable: false,
            };
            let reader = etl_core::lake::parquet::ObjectReader::new(self.location.store().clone(), meta.clone());
            let stream = parquet::arrow::ParquetRecordBatchStreamBuilder::new(reader)
                .await
                .map_err(err)?
                .build()
                .map_err(err)?;
            out.extend(stream.try_collect::<Vec<_>>().await.map_err(err)?);
        }
        Ok(out)
    }

    /// The commit log of one target table.
    pub fn commit_log(&self, table: &str) -> CommitLog {
        CommitLog::new(self.location.clone(), table)
    }
}

#[async_trait]
impl Sink for LakeSink {
    fn name(&self) -> &str {
        "lake"
    }

    fn check_mode(&self, spec: &TableSpec, mode: LoadMode) -> Result<()> {
        match mode {
            LoadMode::Upsert => Err(Error::UnsupportedMode {
                sink: "lake".into(),
                mode,
                table: spec.name.clone(),
                hint: "a Parquet lake has no key index to merge rows into; use the Delta sink \
                       (feature `delta`: UPSERT is a MERGE by key), INCREMENTAL (append the \
                       changed rows, with keep_latest to collapse versions of a key within a \
                       run) or FULL, or a warehouse sink (Postgres, Redshift, Snowflake)"
                    .into(),
            }),
            _ => keys::check(spec),
        }
    }

    fn key_reader(&self) -> Option<&dyn etl_core::keys::KeyReader> {
        Some(self)
    }

    /// Appends tombstone rows for `keys` ([`DELETED_AT`]): the lake is append-only.
    async fn delete_keys(&self, spec: &TableSpec, keys: &[i64]) -> Result<u64> {
        self.tombstones(spec, keys).await
    }

    async fn last_checkpoint(&self, _pipeline: &str, spec: &TableSpec) -> Result<Option<Checkpoint>> {
        let log = self.commit_log(&spec.target);
        let Some(rec) = log.latest().await? else {
            return Ok(None);
        };
        log.apply(&rec).await?;
        Ok(Some(rec.checkpoint))
    }

    /// Missing without a commit record; empty when none of the table's Parquet files is
    /// left under its folder (the folder deleted or emptied).
    async fn target_state(&self, spec: &TableSpec) -> Result<TargetState> {
        let log = self.commit_log(&spec.target);
        if log.latest().await?.is_none() {
            return Ok(TargetState::Missing);
        }
        Ok(if log.visible_files().await?.is_empty() {
            TargetState::Empty
        } else {
            TargetState::Holds
        })
    }

    fn shard_sink(&self) -> Option<&dyn ShardSink> {
        Some(self)
    }

    async fn begin(&self, req: WriteRequest<'_>) -> Result<Box<dyn TableWriter>> {
        let log = self.commit_log(&req.spec.target);
        let base = log.latest().await?;
        if base.as_ref().map(|r| r.checkpoint.run_id.as_str()) != req.last_checkpoint {
            // Another run committed since this one read its watermark and checkpoint.
            return Err(Error::ConcurrentRun {
                pipeline: req.pipeline.to_string(),
                table: req.spec.name.clone(),
            });
        }
        let table_schema = match &base {
            Some(rec) => log.table_schema(rec).await?,
            None => None,
        };
        Ok(Box::new(writer::LakeWriter::new(
            log,
            base,
            table_schema,
            req,
            self.options.clone(),
        )))
    }
}

/// One commit record for every shard of a plan: their staged files move in together.
#[async_trait]
impl ShardSink for LakeSink {
    async fn commit_shards(
        &self,
        req: WriteRequest<'_>,
        staged: Vec<serde_json::Value>,
        checkpoint: Checkpoint,
    ) -> Result<CommitSummary> {
        let table = &req.spec.target;
        let log = self.commit_log(table);
        let base = log.latest().await?;
        if base.as_ref().map(|r| r.checkpoint.run_id.as_str()) != req.last_checkpoint {
            return Err(Error::ConcurrentRun {
                pipeline: req.pipeline.to_string(),
                table: req.spec.name.clone(),
            });
        }
        let shards: Vec<writer::StagedFiles> = etl_core::shard::read_staged(req.run_id, staged)?;
        let columns = etl_core::shard::agreed_columns(table, req.run_id, shards.iter().map(|s| s.columns.clone()))?;
        let files: Vec<_> = shards.into_iter().flat_map(|s| s.files).collect();
        // Every staged file must be there before the commit point, or the commit could not
        // be applied.
        let staging = format!("{}/staging/{table}", etl_core::lake::META_DIR);
        let there: std::collections::HashSet<String> = self
            .location
            .list(&staging)
            .await?
            .iter()
            .map(|m| self.location.relative(&m.location))
            .collect();
        if let Some(gone) = files.iter().find(|f| !there.contains(&f.staged)) {
            return Err(Error::Metadata {
                path: self.location.path(&gone.staged).to_string(),
                message: format!(
                    "a file that a shard of run `{}` staged is gone (deleted by a commit since the plan?); plan \
                     the run again",
                    req.run_id
                ),
            });
        }
        writer::commit_files(
            &log,
            base.as_ref(),
            req.pipeline,
            req.mode,
            files,
            columns,
            &[],
            checkpoint,
        )
        .await
    }
}
