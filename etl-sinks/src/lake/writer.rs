//! One run's writes to one lake table: partitioned, rolled, staged Parquet files.

use std::collections::HashMap;

use arrow::array::UInt32Array;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use etl_core::lake::Column;
use etl_core::lake::{self, AddedFile, CommitRecord};
use etl_core::{
    Checkpoint, CommitSummary, Error, LoadMode, Partitioning, Result, StageSummary, Staged, StagedWrite, TableWriter,
    WriteRequest,
};
use object_store::buffered::BufWriter;
use parquet::arrow::AsyncArrowWriter;

use super::LakeOptions;
use super::commit::CommitLog;
use super::conform::Conformer;

struct OpenFile {
    writer: AsyncArrowWriter<BufWriter>,
    staged: String,
    path: String,
    partition: String,
    rows: u64,
    last_used: u64,
}

pub(super) struct LakeWriter {
    log: CommitLog,
    base: Option<CommitRecord>,
    conformer: Conformer,
    pipeline: String,
    table: String,
    mode: LoadMode,
    run_id: String,
    started_at: DateTime<Utc>,
    partitioning: Partitioning,
    staging: String,
    options: LakeOptions,
    open: HashMap<String, OpenFile>,
    done: Vec<AddedFile>,
    next_file: u64,
    tick: u64,
}

impl LakeWriter {
    pub(super) fn new(
        log: CommitLog,
        base: Option<CommitRecord>,
        table_schema: Option<SchemaRef>,
        req: WriteRequest<'_>,
        options: LakeOptions,
    ) -> Self {
        let base_seq = base.as_ref().map_or(0, |r| r.sequence);
        let table = req.spec.target.clone();
        LakeWriter {
            staging: lake::staging_dir(&table, &format!("{base_seq:020}-{}", req.run_id)),
            log,
            base,
            conformer: Conformer::new(&table, "the lake table", req.mode, table_schema),
            pipeline: req.pipeline.to_string(),
            table,
            mode: req.mode,
            run_id: req.run_id.to_string(),
            started_at: req.started_at,
            partitioning: req.spec.partitioning.clone(),
            options,
            open: HashMap::new(),
            done: Vec::new(),
            next_file: 0,
            tick: 0,
        }
    }

    fn conform(&mut self, batch: RecordBatch) -> Result<RecordBatch> {
        self.conformer.conform(batch)
    }

    /// Splits a batch into its partitions.
    fn split(&self, batch: RecordBatch) -> Result<Vec<(String, RecordBatch)>> {
        let mut groups = match &self.partitioning {
            Partitioning::None => return Ok(vec![(String::new(), batch)]),
            Partitioning::ByProcessingDate => {
                return Ok(vec![(
                    lake::date_partition("processing_", Some(self.started_at.date_naive())),
                    batch,
                )]);
            }
            Partitioning::ByDate(c) => lake::partition::split_by_date(&self.table, &batch, c)?,
            Partitioning::Columns(keys) => lake::partition::split_rows(&self.table, &batch, keys)?,
        };
        if groups.len() == 1 {
            let (folder, _) = groups.pop().expect("one group");
            return Ok(vec![(folder, batch)]);
        }
        groups
            .into_iter()
            .map(|(folder, rows)| {
                let taken = arrow::compute::take_record_batch(&batch, &UInt32Array::from(rows))
                    .map_err(|e| Error::arrow(&self.table, e))?;
                Ok((folder, taken))
            })
            .collect()
    }

    async fn open_file(&mut self, partition: &str, schema: SchemaRef) -> Result<()> {
        if self.open.len() >= self.options.max_open_files.max(1) {
            let lru = self
                .open
                .iter()
                .min_by_key(|(_, f)| f.last_used)
                .map(|(k, _)| k.clone())
                .expect("open files");
            self.close_file(&lru).await?;
        }
        self.next_file += 1;
        let name = lake::data_file_name(&self.table, self.started_at, &self.run_id, self.next_file);
        let join = |root: &str| {
            if partition.is_empty() {
                format!("{root}/{name}")
            } else {
                format!("{root}/{partition}/{name}")
            }
        };
        let staged = join(&self.staging);
        let path = join(&self.table);
        let location = self.log.location();
        // Parts of 8 MiB, at most two in flight: memory stays flat however large the file
        // (the default, eight parts of 10 MiB in flight, let a fast encoder queue 80 MiB).
        let sink = BufWriter::with_capacity(location.store().clone(), location.path(&staged), UPLOAD_PART)
            .with_max_concurrency(2);
        let props = self.options.writer_properties(&schema);
        let writer =
            AsyncArrowWriter::try_new(sink, schema, Some(props)).map_err(|e| parquet_err(&self.table, &staged, e))?;
        self.open.insert(
            partition.to_string(),
            OpenFile {
                writer,
                staged,
                path,
                partition: partition.to_string(),
                rows: 0,
                last_used: self.tick,
            },
        );
        Ok(())
    }

    async fn close_file(&mut self, partition: &str) -> Result<()> {
        let Some(mut f) = self.open.remove(partition) else {
            return Ok(());
        };
        f.writer
            .finish()
            .await
            .map_err(|e| parquet_err(&self.table, &f.staged, e))?;
        self.done.push(AddedFile {
            bytes: f.writer.bytes_written() as u64,
            staged: f.staged,
            path: f.path,
            partition: f.partition,
            rows: f.rows,
        });
        Ok(())
    }

    /// Keeps the row groups buffered over all open files under the memory budget.
    async fn bound_memory(&mut self) -> Result<()> {
        loop {
            let total: usize = self.open.values().map(|f| f.writer.in_progress_size()).sum();
            if total <= self.options.max_buffered_bytes {
                return Ok(());
            }
            let (_, f) = self
                .open
                .iter_mut()
                .max_by_key(|(_, f)| f.writer.in_progress_size())
                .expect("open files");
            f.writer
                .flush()
                .await
                .map_err(|e| parquet_err(&self.table, &f.staged, e))?;
        }
    }
}

/// Bytes per multipart upload part (S3 needs at least 5 MiB).
const UPLOAD_PART: usize = 8 << 20;

fn parquet_err(table: &str, path: &str, e: parquet::errors::ParquetError) -> Error {
    Error::Connector {
        connector: "lake",
        message: format!("table `{table}`, file `{path}`: {e}"),
        retryable: false,
    }
}

#[async_trait]
impl TableWriter for LakeWriter {
    async fn write(&mut self, batch: RecordBatch) -> Result<()> {
        let batch = self.conform(batch)?;
        let schema = self.conformer.written().expect("set by conform");
        for (partition, part) in self.split(batch)? {
            self.tick += 1;
            if !self.open.contains_key(&partition) {
                self.open_file(&partition, schema.clone()).await?;
            }
            let tick = self.tick;
            let f = self.open.get_mut(&partition).expect("opened above");
            f.writer
                .write(&part)
                .await
                .map_err(|e| parquet_err(&self.table, &f.staged, e))?;
            f.rows += part.num_rows() as u64;
            f.last_used = tick;
            if f.writer.bytes_written() + f.writer.in_progress_size() >= self.options.target_file_size {
                self.close_file(&partition).await?;
            }
        }
        self.bound_memory().await
    }

    async fn stage(mut self: Box<Self>) -> Result<Staged> {
        let staged = self.close_all().await;
        Staged::new(staged, self).await
    }

    async fn abort(self: Box<Self>) -> Result<()> {
        self.discard().await
    }
}

impl LakeWriter {
    /// Closes every open file: all rows are then in staged files.
    async fn close_all(&mut self) -> Result<StageSummary> {
        let open: Vec<String> = self.open.keys().cloned().collect();
        for p in open {
            self.close_file(&p).await?;
        }
        Ok(StageSummary {
            rows: self.done.iter().map(|f| f.rows).sum(),
            bytes: self.done.iter().map(|f| f.bytes).sum(),
            files: self.done.len() as u64,
        })
    }

    /// Abandons open uploads and removes whatever reached the store.
    async fn discard(mut self: Box<Self>) -> Result<()> {
        self.open.clear();
        self.log.location().delete_dir(&self.staging).await
    }
}

/// What a lake shard staged ([`StagedWrite::manifest`]): its files, still under
/// `_etl/staging/`, and the columns it wrote.
#[derive(serde::Serialize, serde::Deserialize)]
pub(super) struct StagedFiles {
    pub(super) files: Vec<AddedFile>,
    pub(super) columns: Option<Vec<Column>>,
}

#[async_trait]
impl StagedWrite for LakeWriter {
    async fn commit(mut self: Box<Self>, checkpoint: Checkpoint) -> Result<CommitSummary> {
        let files = std::mem::take(&mut self.done);
        let columns = self
            .conformer
            .columns()
            .map(|s| s.fields().iter().map(|f| Column::of(f)).collect());
        let staging = [self.staging.clone()];
        let base = self.base.as_ref();
        commit_files(
            &self.log,
            base,
            &self.pipeline,
            self.mode,
            files,
            columns,
            &staging,
            checkpoint,
        )
        .await
    }

    async fn abort(self: Box<Self>) -> Result<()> {
        self.discard().await
    }

    fn manifest(&self) -> Result<serde_json::Value> {
        let staged = StagedFiles {
            files: self.done.clone(),
            columns: self
                .conformer
                .columns()
                .map(|s| s.fields().iter().map(|f| Column::of(f)).collect()),
        };
        Ok(serde_json::to_value(staged).expect("staged files serialise"))
    }
}

/// Commits staged `files` over the record `base` (the table's latest when the run began):
/// creates the next record, the commit point, then moves the files in. A replacing mode
/// removes every file visible now.
///
/// # Errors
/// [`Error::ConcurrentRun`] when another run created that record first (the `staging`
/// folders are then deleted: they can never commit); the store's errors.
#[allow(clippy::too_many_arguments)]
pub(super) async fn commit_files(
    log: &CommitLog,
    base: Option<&CommitRecord>,
    pipeline: &str,
    mode: LoadMode,
    files: Vec<AddedFile>,
    columns: Option<Vec<Column>>,
    staging: &[String],
    checkpoint: Checkpoint,
) -> Result<CommitSummary> {
    let replace = mode.replaces_target();
    let remove: Vec<String> = if replace {
        log.visible_files()
            .await?
            .iter()
            .map(|m| log.location().relative(&m.location))
            .collect()
    } else {
        Vec::new()
    };
    let added: u64 = files.iter().map(|f| f.rows).sum();
    let before = base.map_or(0, |r| r.table_rows);
    let sequence = base.map_or(0, |r| r.sequence) + 1;
    let rec = CommitRecord {
        sequence,
        table: log.table().to_string(),
        checkpoint,
        add: files,
        remove,
        table_rows: if replace { added } else { before + added },
        columns: match (columns, replace) {
            (Some(c), _) => Some(c),
            (None, false) => base.and_then(|r| r.columns.clone()),
            (None, true) => None,
        },
    };
    if let Err(e) = log.create(pipeline, &rec).await {
        for dir in staging {
            let _ = log.location().delete_dir(dir).await;
        }
        return Err(e);
    }
    log.apply(&rec).await?;
    log.tidy(sequence).await;
    Ok(CommitSummary {
        target_rows: Some(rec.table_rows),
        inserted: added,
        updated: 0,
        deleted: if replace { before } else { 0 },
        ..CommitSummary::default()
    })
}
