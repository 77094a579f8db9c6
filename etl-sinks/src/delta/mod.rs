//! Delta Lake tables on any object store, through `deltalake` (delta-rs).
//!
//! A run's rows become one Delta commit. `FULL` and `TRUNCATE_INSERT` commit an overwrite
//! (every file of the table removed, the run's added), `INCREMENTAL` and `APPEND` an append,
//! `UPSERT` a `MERGE` by primary key of the run's latest row per key (greatest cursor, then
//! last arrival), deleting the key's row where [`TableSpec::soft_delete`] marks it deleted.
//! Engines that read Delta (Spark, Trino, Athena, DuckDB's `delta_scan`, the `deltalake`
//! Python package) see the run all at once, and every run's version stays readable by time
//! travel ([`DeltaSink::version_of_run`]) until the table is vacuumed.
//!
//! # Checkpoint
//! Each commit carries a Delta transaction identifier (application id [`APP_ID`], version
//! one more than the table's last) and, in its commit info, the run's [`Checkpoint`]. A
//! run killed after its commit is recognised by the next run from that commit, as the
//! protocol's idempotent writers do; two runs that started from the same state cannot both
//! commit (Delta's conflict check fails the second on the shared application id), and the
//! loser gets [`Error::ConcurrentRun`] with the table unchanged.
//!
//! # Staging
//! Appending and replacing runs write their Parquet files straight into the table's folder;
//! until the commit names them no Delta reader sees them, and a run that dies before it
//! leaves them for `VACUUM` to delete. An `UPSERT` run stages its rows under
//! `_etl_staging/` in the table's folder, which the commit merges from and deletes; a later
//! run deletes what a dead one left there.
//!
//! # Shard plans
//! Each shard of a plan ([`etl_core::shard`]) stages as a run does, under its own run id; its
//! manifest holds its add actions (or its staged rows' folder) and its columns. The plan's
//! commit is one Delta commit of every shard's files, or one `MERGE` from every shard's
//! staged rows, with the plan's transaction identifier and checkpoint.
//!
//! # Schema
//! A new column of the source is added to the table; a column whose type changed is refused
//! ([`Error::ColumnTypeConflict`]) unless the change is a safe widening, as in the Parquet
//! lake. A replacing run may change the table's columns.
//!
//! # Partitions
//! [`Partitioning::Columns`] of plain columns (`PartitionKey::column("region")`) become the
//! table's Delta partition columns; date-derived folders are refused (Delta partitions by
//! the values of columns: add the derived column with a transform).

mod keys;
mod writer;

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use deltalake::kernel::transaction::TransactionError;
use deltalake::logstore::{LogStoreRef, StorageConfig, default_logstore};
use deltalake::{DeltaTable, DeltaTableError};
use etl_core::{
    Checkpoint, CommitSummary, Error, LoadMode, Location, Partitioning, Result, ShardSink, Sink, StagedWrite,
    TableSpec, TableWriter, TargetState, WriteRequest,
};
use futures::TryStreamExt;
use object_store::{ObjectStore, ObjectStoreExt};

use crate::lake::LakeOptions;

/// The application id of the Delta transaction identifier each run's commit carries.
pub const APP_ID: &str = "etl-rs";

/// The commit-info key of the run's checkpoint.
const CHECKPOINT_KEY: &str = "etlCheckpoint";
/// The commit-info key of the run's transaction version.
const TXN_KEY: &str = "etlTxnVersion";
/// The folder, in a table's folder, where `UPSERT` runs stage their rows.
const STAGING_DIR: &str = "_etl_staging";

/// Writes tables as Delta Lake tables under a [`Location`]: table `t` in folder `t/`.
///
/// ```
/// # fn main() -> etl_core::Result<()> {
/// use etl_sinks::delta::DeltaSink;
/// let delta = DeltaSink::new(etl_core::Location::local(std::env::temp_dir().join("etl-doc-delta"))?);
/// assert!(delta.table_url("orders")?.as_str().ends_with("/etl-doc-delta/orders/"));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct DeltaSink {
    location: Location,
    options: LakeOptions,
    /// The key rows of the table last compared.
    held: Arc<keys::HeldRows>,
}

impl DeltaSink {
    /// Delta tables under `location`.
    ///
    /// The location's store must be rooted where its URL says (as those of
    /// [`Location::local`], [`Location::s3`] and [`Location::memory`] are): Delta readers find
    /// the table by its URL.
    pub fn new(location: Location) -> Self {
        DeltaSink {
            location,
            options: LakeOptions::default(),
            held: Default::default(),
        }
    }

    /// The Parquet settings of the data files (those of the Parquet lake by default).
    pub fn with_options(mut self, options: LakeOptions) -> Self {
        self.options = options;
        self
    }

    /// The root of the tables.
    pub fn location(&self) -> &Location {
        &self.location
    }

    /// The URL of a table's folder (`file:///…/orders/`, `s3://bucket/prefix/orders/`): what
    /// a Delta reader opens.
    ///
    /// # Errors
    /// [`Error::Config`] when the location's URL is not one.
    pub fn table_url(&self, table: &str) -> Result<url::Url> {
        Ok(self.store_of(table)?.1)
    }

    /// The store whose root the table's URL is relative to, and the URL.
    fn store_of(&self, table: &str) -> Result<(Arc<dyn ObjectStore>, url::Url)> {
        let bad = |e: &dyn std::fmt::Display| {
            Error::config(format!(
                "Delta table `{table}`: location `{}`: {e}",
                self.location.url()
            ))
        };
        let base = url::Url::parse(self.location.url()).map_err(|e| bad(&e))?;
        if base.scheme() == "file" {
            // A local location's store is rooted at the folder it was made for, and its URL
            // names the folder it is now (a child's included); Delta resolves paths from the
            // file system's root.
            let dir = base.to_file_path().map_err(|_| bad(&"not a folder"))?.join(table);
            let url = url::Url::from_directory_path(&dir).map_err(|_| bad(&"not a folder"))?;
            let root: Arc<dyn ObjectStore> = Arc::new(object_store::local::LocalFileSystem::new());
            Ok((root, url))
        } else {
            // The store is the bucket's (or the memory's) root: the table's path in it.
            let mut url = base.clone();
            url.set_path(&format!("/{}/", self.location.path(table)));
            Ok((self.location.store().clone(), url))
        }
    }

    /// The log store of a table.
    fn log_store(&self, table: &str) -> Result<LogStoreRef> {
        let (root, url) = self.store_of(table)?;
        let config = StorageConfig::default();
        let prefixed = config
            .decorate_store(root.clone(), &url)
            .map_err(|e| delta_err(table, e))?;
        Ok(default_logstore(Arc::new(prefixed), root, &url, &config))
    }

    /// The table, loaded at its latest version; `None` when there is no Delta table there.
    ///
    /// # Errors
    /// [`Error::ObjectStore`]-like failures as [`Error::Connector`] naming the table.
    pub async fn open(&self, table: &str) -> Result<Option<DeltaTable>> {
        let log_store = self.log_store(table)?;
        if !log_store
            .is_delta_table_location()
            .await
            .map_err(|e| delta_err(table, e))?
        {
            return Ok(None);
        }
        let mut t = DeltaTable::new(log_store);
        t.load().await.map_err(|e| delta_err(table, e))?;
        Ok(Some(t))
    }

    /// Reads every row of a table's current version (none when there is no table), for
    /// checks and small tables.
    ///
    /// # Errors
    /// As [`DeltaSink::open`].
    pub async fn read_table(&self, table: &str) -> Result<Vec<arrow::record_batch::RecordBatch>> {
        let Some(t) = self.open(table).await? else {
            return Ok(Vec::new());
        };
        let (_, stream) = t.scan_table().await.map_err(|e| delta_err(table, e))?;
        stream.try_collect().await.map_err(|e| delta_err(table, e.into()))
    }

    /// The table's version that run `run_id` committed, for time travel; `None` when no
    /// commit in the table's history is that run's.
    ///
    /// # Errors
    /// As [`DeltaSink::open`].
    pub async fn version_of_run(&self, table: &str, run_id: &str) -> Result<Option<i64>> {
        let Some(t) = self.open(table).await? else {
            return Ok(None);
        };
        let infos: Vec<_> = t.history(None).try_collect().await.map_err(|e| delta_err(table, e))?;
        let latest = t.version().unwrap_or(0) as i64;
        // History is newest first: the i-th entry is version latest - i.
        Ok(infos.iter().enumerate().find_map(|(i, info)| {
            let cp = checkpoint_in(info)?;
            (cp.run_id == run_id).then_some(latest - i as i64)
        }))
    }

    /// The table's transaction version of [`APP_ID`] and the checkpoint of the commit that
    /// set it.
    async fn checkpoint(&self, table: &str, t: &DeltaTable) -> Result<(i64, Option<Checkpoint>)> {
        let snapshot = t.snapshot().map_err(|e| delta_err(table, e))?;
        let Some(txn) = snapshot
            .transaction_version(t.log_store().as_ref(), APP_ID)
            .await
            .map_err(|e| delta_err(table, e))?
        else {
            return Ok((0, None));
        };
        let mut history = t.history(None);
        while let Some(info) = history.try_next().await.map_err(|e| delta_err(table, e))? {
            if info.info.get(TXN_KEY).and_then(|v| v.as_i64()) == Some(txn) {
                return match checkpoint_in(&info) {
                    Some(cp) => Ok((txn, Some(cp))),
                    None => Err(meta_err(
                        table,
                        format!("the commit of transaction {txn} holds no readable checkpoint"),
                    )),
                };
            }
        }
        Err(meta_err(
            table,
            format!(
                "transaction {txn} of `{APP_ID}` is in the table's state but its commit is no longer in the log \
                 (log retention): the run's checkpoint cannot be read; reload the table with FULL"
            ),
        ))
    }

    /// The table's columns and partition columns.
    fn table_schema(table: &str, t: &DeltaTable) -> Result<(SchemaRef, Vec<String>)> {
        let snapshot = t.snapshot().map_err(|e| delta_err(table, e))?;
        let schema = snapshot.snapshot().arrow_schema();
        let parts = snapshot.metadata().partition_columns().to_vec();
        Ok((schema, parts))
    }

    /// Deletes what dead `UPSERT` runs staged: the staging folders of runs that began before
    /// the table's last transaction (they cannot commit any more).
    async fn clean_staging(&self, table: &str, txn: i64) -> Result<()> {
        let dir = format!("{table}/{STAGING_DIR}");
        for meta in self.location.list(&dir).await? {
            let rel = self.location.relative(&meta.location);
            let Some(run_dir) = rel.strip_prefix(&format!("{dir}/")).and_then(|r| r.split('/').next()) else {
                continue;
            };
            let base: Option<i64> = run_dir.split('-').next().and_then(|b| b.parse().ok());
            if base.is_some_and(|b| b < txn) {
                self.location
                    .store()
                    .delete(&meta.location)
                    .await
                    .map_err(|e| Error::store(&meta.location, e))?;
            }
        }
        Ok(())
    }

    /// The folder of a run's staged rows, relative to the location.
    fn staging_dir(table: &str, base_txn: i64, run_id: &str) -> String {
        format!("{table}/{STAGING_DIR}/{base_txn:020}-{run_id}")
    }

    /// The partition columns of a spec.
    fn partition_columns(spec: &TableSpec) -> Result<Vec<String>> {
        match &spec.partitioning {
            Partitioning::None => Ok(Vec::new()),
            Partitioning::Columns(keys) => keys
                .iter()
                .map(|k| {
                    if k.format.is_none() && k.name == k.column {
                        Ok(k.column.clone())
                    } else {
                        Err(partitions_refused(spec))
                    }
                })
                .collect(),
            Partitioning::ByDate(_) | Partitioning::ByProcessingDate => Err(partitions_refused(spec)),
        }
    }
}

fn partitions_refused(spec: &TableSpec) -> Error {
    Error::config(format!(
        "table `{}`: a Delta table is partitioned by the values of its columns: use \
         Partitioning::columns([PartitionKey::column(\"…\")]), adding a derived column (a date, a month) \
         with a transform where folders of a date are wanted",
        spec.name
    ))
}

/// The checkpoint in a commit's info.
fn checkpoint_in(info: &deltalake::kernel::CommitInfo) -> Option<Checkpoint> {
    serde_json::from_value(info.info.get(CHECKPOINT_KEY)?.clone()).ok()
}

/// A delta-rs error as the library's: a lost commit race as [`Error::ConcurrentRun`] is the
/// caller's to map (see [`is_conflict`]); everything else names the table.
fn delta_err(table: &str, e: DeltaTableError) -> Error {
    Error::Connector {
        connector: "delta",
        message: format!("Delta table `{table}`: {e}"),
        retryable: matches!(e, DeltaTableError::ObjectStore { .. }),
    }
}

fn meta_err(table: &str, message: String) -> Error {
    Error::Metadata {
        path: format!("{table}/_delta_log"),
        message: format!("Delta table `{table}`: {message}"),
    }
}

/// Whether a commit failed because another writer committed first.
fn is_conflict(e: &DeltaTableError) -> bool {
    matches!(
        e,
        DeltaTableError::VersionAlreadyExists(_)
            | DeltaTableError::Transaction {
                source: TransactionError::VersionAlreadyExists(_)
                    | TransactionError::CommitConflict(_)
                    | TransactionError::MaxCommitAttempts(_)
            }
    )
}

#[async_trait]
impl Sink for DeltaSink {
    fn name(&self) -> &str {
        "delta"
    }

    fn check_mode(&self, spec: &TableSpec, mode: LoadMode) -> Result<()> {
        DeltaSink::partition_columns(spec)?;
        keys::check(spec)?;
        if mode == LoadMode::Upsert && spec.primary_key.is_empty() {
            return Err(Error::UnsupportedMode {
                sink: "delta".into(),
                mode,
                table: spec.name.clone(),
                hint: "UPSERT merges by primary key: give the table one (primary_key)".into(),
            });
        }
        Ok(())
    }

    fn key_reader(&self) -> Option<&dyn etl_core::keys::KeyReader> {
        Some(self)
    }

    /// A Delta `DELETE` of the keys' rows.
    async fn delete_keys(&self, spec: &TableSpec, keys: &[i64]) -> Result<u64> {
        self.delete_rows(spec, keys).await
    }

    async fn last_checkpoint(&self, _pipeline: &str, spec: &TableSpec) -> Result<Option<Checkpoint>> {
        let Some(t) = self.open(&spec.target).await? else {
            return Ok(None);
        };
        let (txn, cp) = self.checkpoint(&spec.target, &t).await?;
        self.clean_staging(&spec.target, txn).await?;
        Ok(cp)
    }

    /// Missing without a Delta table; empty when its current version holds no row.
    async fn target_state(&self, spec: &TableSpec) -> Result<TargetState> {
        let Some(t) = self.open(&spec.target).await? else {
            return Ok(TargetState::Missing);
        };
        Ok(match writer::table_rows(&spec.target, &t).await? {
            0 => TargetState::Empty,
            _ => TargetState::Holds,
        })
    }

    fn shard_sink(&self) -> Option<&dyn ShardSink> {
        Some(self)
    }

    async fn begin(&self, req: WriteRequest<'_>) -> Result<Box<dyn TableWriter>> {
        Ok(Box::new(self.writer(req).await?))
    }
}

/// One Delta commit for every shard of a plan: their data files' add actions together, or
/// one `MERGE` from all their staged rows.
#[async_trait]
impl ShardSink for DeltaSink {
    async fn commit_shards(
        &self,
        req: WriteRequest<'_>,
        staged: Vec<serde_json::Value>,
        checkpoint: Checkpoint,
    ) -> Result<CommitSummary> {
        let run_id = req.run_id.to_string();
        let shards: Vec<writer::StagedShard> = etl_core::shard::read_staged(&run_id, staged)?;
        let table = req.spec.target.clone();
        let staged = self.writer(req).await?.of_shards(&run_id, shards)?;
        let txn = staged.base_txn();
        let committed = StagedWrite::commit(Box::new(staged), checkpoint).await?;
        // What attempts that never recorded a manifest staged: they cannot commit any more.
        if let Err(e) = self.clean_staging(&table, txn + 1).await {
            tracing::warn!(table = %table, error = %e, "the plan's staged rows were not all deleted");
        }
        Ok(committed)
    }
}

impl DeltaSink {
    /// A run's writer, from the table's state now; [`Error::ConcurrentRun`] when another run
    /// committed since `req`'s checkpoint.
    async fn writer(&self, req: WriteRequest<'_>) -> Result<writer::DeltaTableWriter> {
        let table = req.spec.target.clone();
        let partitions = DeltaSink::partition_columns(req.spec)?;
        let opened = self.open(&table).await?;
        let (txn, cp) = match &opened {
            Some(t) => self.checkpoint(&table, t).await?,
            None => (0, None),
        };
        if cp.as_ref().map(|c| c.run_id.as_str()) != req.last_checkpoint {
            return Err(Error::ConcurrentRun {
                pipeline: req.pipeline.to_string(),
                table: req.spec.name.clone(),
            });
        }
        let schema = match &opened {
            Some(t) => Some(DeltaSink::table_schema(&table, t)?),
            None => None,
        };
        let log_store = self.log_store(&table)?;
        let staging = DeltaSink::staging_dir(&table, txn, req.run_id);
        writer::DeltaTableWriter::new(writer::Setup {
            req,
            table: opened,
            log_store,
            txn,
            schema,
            partitions,
            root: self.location.clone(),
            staging,
            options: self.options.clone(),
        })
    }
}

/// The Delta log as the crawler reads it ([`etl_core::catalog::TableLog`]): a table's current
/// files and schema from its log, so files a replaced or merged table left behind (until
/// `VACUUM`) are not crawled as its rows.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use std::sync::Arc;
/// use etl_core::catalog::Crawler;
/// let lake = etl_core::Location::memory();
/// let crawler = Crawler::new(lake).with_table_log(Arc::new(etl_sinks::delta::DeltaLog));
/// assert!(crawler.crawl().await.unwrap().is_empty());
/// # });
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct DeltaLog;

#[async_trait]
impl etl_core::catalog::TableLog for DeltaLog {
    fn marker(&self) -> &str {
        "_delta_log"
    }

    fn format(&self) -> etl_core::catalog::TableFormat {
        etl_core::catalog::TableFormat::Delta
    }

    async fn current(&self, location: &Location, table: &str) -> Result<etl_core::catalog::LoggedTable> {
        let t = DeltaSink::new(location.clone())
            .open(table)
            .await?
            .ok_or_else(|| meta_err(table, "the `_delta_log` folder holds no Delta table".into()))?;
        let snapshot = t.snapshot().map_err(|e| delta_err(table, e))?;
        let schema = snapshot.snapshot().arrow_schema();
        let root = location.path(table);
        let mut files = Vec::new();
        let mut views = snapshot.snapshot().file_views(t.log_store().as_ref(), None);
        while let Some(f) = views.try_next().await.map_err(|e| delta_err(table, e))? {
            let path = object_store::path::Path::from_iter(root.parts().chain(f.object_store_path().parts()));
            let meta = object_store::ObjectMeta {
                location: path,
                last_modified: f.modification_datetime().map_err(|e| delta_err(table, e))?,
                size: f.size().max(0) as u64,
                e_tag: None,
                version: None,
            };
            files.push((meta, f.num_records().map(|n| n as u64)));
        }
        Ok(etl_core::catalog::LoggedTable { schema, files })
    }
}
