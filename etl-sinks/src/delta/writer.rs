//! One run's writes to one Delta table: Parquet data files (or, for `UPSERT`, staged rows),
//! then one commit carrying the run's transaction identifier and checkpoint.

use std::num::NonZeroU64;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Int64Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use delta_kernel::engine::arrow_conversion::{TryIntoArrow, TryIntoKernel};
use delta_kernel::table_properties::DataSkippingNumIndexedCols;
use deltalake::datafusion::common::Column;
use deltalake::datafusion::prelude::{Expr, ParquetReadOptions, SessionContext};
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake::kernel::{Action, Add, MetadataExt, StructType, Transaction};
use deltalake::logstore::LogStoreRef;
use deltalake::operations::create::CreateBuilder;
use deltalake::operations::write::writer::{DeltaWriter, WriterConfig};
use deltalake::protocol::{DeltaOperation, SaveMode};
use deltalake::{DeltaTable, DeltaTableError};
use etl_core::lake::Column as Stored;
use etl_core::shard::agreed_columns;
use etl_core::{
    Checkpoint, CommitSummary, Error, LoadMode, Location, Result, StageSummary, Staged, StagedWrite, TableWriter,
    WriteRequest,
};
use futures::{StreamExt, TryStreamExt};
use object_store::ObjectStoreExt;

use super::{APP_ID, CHECKPOINT_KEY, TXN_KEY, delta_err, is_conflict};
use crate::lake::LakeOptions;
use crate::lake::conform::Conformer;

/// The column of a staged `UPSERT` row's arrival order (dropped before the merge).
const ARRIVAL: &str = "_etl_arrival";

/// What [`DeltaTableWriter::new`] starts from.
pub(super) struct Setup<'a> {
    pub(super) req: WriteRequest<'a>,
    pub(super) table: Option<DeltaTable>,
    pub(super) log_store: LogStoreRef,
    pub(super) txn: i64,
    pub(super) schema: Option<(SchemaRef, Vec<String>)>,
    pub(super) partitions: Vec<String>,
    /// The sink's root.
    pub(super) root: Location,
    /// The folder of the run's staged `UPSERT` rows, relative to `root`.
    pub(super) staging: String,
    pub(super) options: LakeOptions,
}

/// What a run commits with, from its start.
struct Run {
    pipeline: String,
    /// The target table.
    table: String,
    mode: LoadMode,
    primary_key: Vec<String>,
    cursor: Vec<String>,
    soft_delete: Option<String>,
    /// The table at the run's start (`None`: no Delta table yet).
    base: Option<DeltaTable>,
    log_store: LogStoreRef,
    /// The table's transaction version of [`APP_ID`] at the run's start.
    txn: i64,
    /// The table's partition columns at the run's start.
    base_partitions: Option<Vec<String>>,
    partitions: Vec<String>,
    /// The sink's root.
    root: Location,
    /// The folder of the run's staged `UPSERT` rows, relative to `root`.
    staging_dir: String,
    staging: Location,
    options: LakeOptions,
}

pub(super) struct DeltaTableWriter {
    run: Run,
    conformer: Conformer,
    /// The run's schema in Delta's types, after the first batch.
    delta_types: Option<SchemaRef>,
    writer: Option<DeltaWriter>,
    rows: u64,
    /// UPSERT's rows with a NULL in the primary key (refused at staging).
    null_keys: u64,
}

impl DeltaTableWriter {
    pub(super) fn new(s: Setup<'_>) -> Result<Self> {
        let table = s.req.spec.target.clone();
        let (table_schema, base_partitions) = match s.schema {
            Some((schema, parts)) => (Some(schema), Some(parts)),
            None => (None, None),
        };
        if let Some(parts) = &base_partitions
            && !s.req.mode.replaces_target()
            && parts != &s.partitions
        {
            return Err(Error::config(format!(
                "table `{}`: the Delta table is partitioned by {parts:?}, the spec by {:?}; only a FULL or \
                 TRUNCATE_INSERT run changes a table's partition columns",
                s.req.spec.name, s.partitions
            )));
        }
        Ok(DeltaTableWriter {
            conformer: Conformer::new(&table, "the Delta table", s.req.mode, table_schema),
            run: Run {
                pipeline: s.req.pipeline.to_string(),
                mode: s.req.mode,
                primary_key: s.req.spec.primary_key.clone(),
                cursor: s.req.spec.cursor.clone(),
                soft_delete: s.req.spec.soft_delete.clone(),
                base: s.table,
                log_store: s.log_store,
                txn: s.txn,
                base_partitions,
                partitions: s.partitions,
                staging: s.root.child(&s.staging),
                staging_dir: s.staging,
                root: s.root,
                options: s.options,
                table,
            },
            delta_types: None,
            writer: None,
            rows: 0,
            null_keys: 0,
        })
    }

    fn upsert(&self) -> bool {
        self.run.mode == LoadMode::Upsert
    }

    /// The batch in Delta's types (microsecond timestamps, no unsigned integers…), as the
    /// table's schema holds them.
    fn in_delta_types(&mut self, batch: RecordBatch) -> Result<RecordBatch> {
        let schema = match &self.delta_types {
            Some(s) => s.clone(),
            None => {
                let s = delta_schema(&self.run.table, &batch.schema())?;
                self.delta_types = Some(s.clone());
                s
            }
        };
        etl_core::lake::formats::conform(&self.run.table, &batch, &schema)
    }

    fn open_writer(&self, schema: &SchemaRef) -> Result<DeltaWriter> {
        let (store, schema, partitions) = if self.upsert() {
            let store = object_store::prefix::PrefixStore::new(
                self.run.staging.store().clone(),
                self.run.staging.prefix().clone(),
            );
            let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
            fields.push(Field::new(ARRIVAL, DataType::Int64, false));
            (
                Arc::new(store) as Arc<dyn object_store::ObjectStore>,
                Arc::new(Schema::new(fields)),
                Vec::new(),
            )
        } else {
            (
                self.run.log_store.object_store(None),
                schema.clone(),
                self.run.partitions.clone(),
            )
        };
        Ok(DeltaWriter::new(store, file_config(&self.run, schema, partitions)))
    }
}

/// The writer's settings: the lake's Parquet properties, statistics of the first 32 columns
/// (Delta's default).
fn file_config(run: &Run, schema: SchemaRef, partitions: Vec<String>) -> WriterConfig {
    let props = run.options.writer_properties(&schema);
    WriterConfig::new(
        schema,
        partitions,
        Some(props),
        NonZeroU64::new(run.options.target_file_size as u64),
        None,
        DataSkippingNumIndexedCols::NumColumns(32),
        None,
    )
}

/// An Arrow schema as Delta stores it: each type through Delta's own, so batches are cast
/// once to what the table's readers get.
fn delta_schema(table: &str, schema: &Schema) -> Result<SchemaRef> {
    let mut fields = Vec::with_capacity(schema.fields().len());
    for f in schema.fields() {
        // Delta's timestamps are microseconds, in UTC or without a zone.
        let t = match f.data_type() {
            DataType::Timestamp(_, Some(_)) => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            DataType::Timestamp(_, None) => DataType::Timestamp(TimeUnit::Microsecond, None),
            t => t.clone(),
        };
        let kernel: deltalake::kernel::DataType = (&t).try_into_kernel().map_err(|e| Error::ColumnTypeConflict {
            table: table.to_string(),
            column: f.name().clone(),
            expected: "a type Delta Lake stores".into(),
            found: format!("{} ({e})", f.data_type()),
        })?;
        let arrow: DataType = (&kernel).try_into_arrow().map_err(|e| Error::arrow(table, e))?;
        fields.push(Field::new(f.name(), arrow, f.is_nullable()));
    }
    Ok(Arc::new(Schema::new(fields)))
}

/// How many rows of `batch` have a NULL in a column of `key`.
fn null_key_rows(table: &str, batch: &RecordBatch, key: &[String]) -> Result<u64> {
    let mut any: Option<arrow::array::BooleanArray> = None;
    for k in key {
        let col = batch.column_by_name(k).ok_or_else(|| Error::ColumnNotFound {
            table: table.to_string(),
            column: k.clone(),
        })?;
        let nulls = arrow::compute::is_null(col).map_err(|e| Error::arrow(table, e))?;
        any = Some(match any {
            None => nulls,
            Some(a) => arrow::compute::or(&a, &nulls).map_err(|e| Error::arrow(table, e))?,
        });
    }
    Ok(any.map_or(0, |a| a.true_count() as u64))
}

/// An Arrow schema as a Delta table's.
fn kernel_schema(table: &str, schema: &Schema) -> Result<StructType> {
    schema
        .try_into_kernel()
        .map_err(|e| Error::config(format!("table `{table}`: {e}")))
}

#[async_trait]
impl TableWriter for DeltaTableWriter {
    async fn write(&mut self, batch: RecordBatch) -> Result<()> {
        let batch = self.in_delta_types(batch)?;
        let batch = self.conformer.conform(batch)?;
        if self.writer.is_none() {
            let schema = self.conformer.written().expect("set by conform");
            self.writer = Some(self.open_writer(&schema)?);
        }
        let n = batch.num_rows() as u64;
        let batch = if self.upsert() {
            self.null_keys += null_key_rows(&self.run.table, &batch, &self.run.primary_key)?;
            let arrival: ArrayRef = Arc::new(Int64Array::from_iter_values(
                (self.rows..self.rows + n).map(|i| i as i64),
            ));
            let mut cols = batch.columns().to_vec();
            cols.push(arrival);
            let mut fields: Vec<Field> = batch.schema().fields().iter().map(|f| f.as_ref().clone()).collect();
            fields.push(Field::new(ARRIVAL, DataType::Int64, false));
            RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).map_err(|e| Error::arrow(&self.run.table, e))?
        } else {
            batch
        };
        let writer = self.writer.as_mut().expect("opened above");
        writer.write(&batch).await.map_err(|e| delta_err(&self.run.table, e))?;
        self.rows += n;
        Ok(())
    }

    async fn stage(mut self: Box<Self>) -> Result<Staged> {
        let adds = match self.writer.take() {
            Some(w) => w.close().await.map_err(|e| delta_err(&self.run.table, e)),
            None => Ok(Vec::new()),
        };
        let rows = self.rows;
        let adds = match adds {
            Ok(_) if self.null_keys > 0 => Err(Error::null_key(
                "delta",
                &self.run.table,
                self.null_keys,
                &self.run.primary_key,
            )),
            adds => adds,
        };
        let (summary, adds) = match adds {
            Ok(adds) => (
                Ok(StageSummary {
                    rows,
                    bytes: adds.iter().map(|a| a.size.max(0) as u64).sum(),
                    files: adds.len() as u64,
                }),
                adds,
            ),
            Err(e) => (Err(e), Vec::new()),
        };
        let rows_at = if self.run.mode == LoadMode::Upsert {
            vec![self.run.staging_dir.clone()]
        } else {
            Vec::new()
        };
        let staged = DeltaStaged {
            run: self.run,
            schema: self.conformer.written(),
            columns: self.conformer.columns().cloned(),
            adds,
            rows_at,
            rows,
            of_plan: false,
        };
        Staged::new(summary, Box::new(staged)).await
    }

    async fn abort(self: Box<Self>) -> Result<()> {
        if let Some(w) = self.writer {
            w.abort().await.map_err(|e| delta_err(&self.run.table, e))?;
        }
        if self.run.mode == LoadMode::Upsert {
            self.run.staging.delete_dir("").await?;
        }
        Ok(())
    }
}

pub(super) struct DeltaStaged {
    run: Run,
    /// The schema the files were written in (`None`: no batch came).
    schema: Option<SchemaRef>,
    /// The table's columns after the run.
    columns: Option<SchemaRef>,
    adds: Vec<Add>,
    /// `UPSERT`: the folders of the staged rows, relative to the sink's root (the run's own;
    /// a shard plan's, one per shard that staged a row).
    rows_at: Vec<String>,
    rows: u64,
    /// Whether the staged write is a plan's: a commit that fails keeps the shards' staged
    /// rows for another try (a run's are deleted: the next run stages its own).
    of_plan: bool,
}

/// What a Delta shard staged ([`StagedWrite::manifest`]): the add actions of its data files,
/// in the table's folder and named by no commit yet, or (`UPSERT`) the folder of its staged
/// rows; the columns it wrote and the table's columns after it.
#[derive(serde::Serialize, serde::Deserialize)]
pub(super) struct StagedShard {
    adds: Vec<Add>,
    rows_at: Vec<String>,
    written: Option<Vec<Stored>>,
    columns: Option<Vec<Stored>>,
    rows: u64,
}

/// The columns of a schema as a manifest records them.
fn columns_of(schema: &Option<SchemaRef>) -> Option<Vec<Stored>> {
    schema
        .as_ref()
        .map(|s| s.fields().iter().map(|f| Stored::of(f)).collect())
}

impl DeltaTableWriter {
    /// The staged writes of a plan's shards as one, to commit with this writer's run (the
    /// plan's): every shard's data files, or the union of their staged rows.
    ///
    /// # Errors
    /// [`Error::Config`] when the shards staged other columns than each other;
    /// [`Error::Metadata`] for a column type that does not parse.
    pub(super) fn of_shards(self, run_id: &str, shards: Vec<StagedShard>) -> Result<DeltaStaged> {
        let table = &self.run.table;
        let schema = |cols: Option<Vec<Stored>>| -> Result<Option<SchemaRef>> {
            let path = format!("the manifests of run `{run_id}`");
            cols.map(|c| Stored::schema(&c, &path).map(Arc::new)).transpose()
        };
        let written = schema(agreed_columns(table, run_id, shards.iter().map(|s| s.written.clone()))?)?;
        let columns = schema(agreed_columns(table, run_id, shards.iter().map(|s| s.columns.clone()))?)?;
        let mut staged = DeltaStaged {
            run: self.run,
            schema: written,
            columns,
            adds: Vec::new(),
            rows_at: Vec::new(),
            rows: 0,
            of_plan: true,
        };
        for shard in shards {
            staged.rows += shard.rows;
            staged.adds.extend(shard.adds);
            if shard.rows > 0 {
                staged.rows_at.extend(shard.rows_at);
            }
        }
        Ok(staged)
    }
}

impl DeltaStaged {
    /// The table's transaction version of [`APP_ID`] that the run started from.
    pub(super) fn base_txn(&self) -> i64 {
        self.run.txn
    }

    /// Deletes the staged `UPSERT` rows.
    async fn delete_rows(&self) -> Result<()> {
        for dir in &self.rows_at {
            self.run.root.delete_dir(dir).await?;
        }
        Ok(())
    }

    /// The commit's properties: the run's transaction identifier and its checkpoint.
    fn properties(&self, checkpoint: &Checkpoint) -> Result<CommitProperties> {
        let next = self.run.txn + 1;
        let cp = serde_json::to_value(checkpoint).map_err(|e| Error::config(format!("checkpoint: {e}")))?;
        // No retries: delta-rs rebases a commit that lost the race for version 0 onto the
        // winner without checking it for conflicts, and any other writer's commit since this
        // run began means the run's view of the table is stale. The next run starts afresh.
        Ok(CommitProperties::default()
            .with_max_retries(0)
            .with_application_transaction(Transaction::new(APP_ID, next))
            .with_metadata([
                (CHECKPOINT_KEY.to_string(), cp),
                (TXN_KEY.to_string(), serde_json::Value::from(next)),
            ]))
    }

    fn lost(&self, e: DeltaTableError) -> Error {
        if is_conflict(&e) {
            Error::ConcurrentRun {
                pipeline: self.run.pipeline.clone(),
                table: self.run.table.clone(),
            }
        } else {
            delta_err(&self.run.table, e)
        }
    }

    /// Commits `adds` as a new table, an append or an overwrite. A run that wrote no batch
    /// commits its checkpoint alone (and, replacing, removes every file); with no table there
    /// is nothing to commit (a Delta table needs columns), which the watermark of a run that
    /// wrote nothing allows.
    async fn commit_files(&self, adds: Vec<Add>, props: CommitProperties, replace: bool) -> Result<DeltaTable> {
        let table = &self.run.table;
        let actions: Vec<Action> = adds.into_iter().map(Action::Add).collect();
        let Some(base) = &self.run.base else {
            let Some(columns) = &self.columns else {
                return Ok(DeltaTable::new(self.run.log_store.clone()));
            };
            let columns = delta_schema(table, columns)?;
            let schema = kernel_schema(table, &columns)?;
            let created = CreateBuilder::new()
                .with_log_store(self.run.log_store.clone())
                .with_columns(schema.fields().cloned())
                .with_partition_columns(self.run.partitions.clone())
                .with_save_mode(SaveMode::ErrorIfExists)
                .with_actions(actions)
                .with_commit_properties(props)
                .await;
            return match created {
                Ok(t) => Ok(t),
                // Another run created the table since this one began.
                Err(_) if self.run.log_store.is_delta_table_location().await.unwrap_or(false) => {
                    Err(Error::ConcurrentRun {
                        pipeline: self.run.pipeline.clone(),
                        table: table.clone(),
                    })
                }
                Err(e) => Err(self.lost(e)),
            };
        };
        let snapshot = base.snapshot().map_err(|e| delta_err(table, e))?;
        let mut all = Vec::new();
        if let Some(columns) = &self.columns {
            let columns = delta_schema(table, columns)?;
            let new_schema = kernel_schema(table, &columns)?;
            if self.run.base_partitions.as_ref() != Some(&self.run.partitions) {
                let configuration = snapshot.metadata().configuration().clone();
                all.push(Action::Metadata(
                    deltalake::kernel::new_metadata(&new_schema, self.run.partitions.clone(), configuration)
                        .map_err(|e| delta_err(table, e.into()))?,
                ));
            } else if new_schema != *snapshot.schema() {
                all.push(Action::Metadata(
                    snapshot
                        .metadata()
                        .clone()
                        .with_schema(&new_schema)
                        .map_err(|e| delta_err(table, e.into()))?,
                ));
            }
        }
        if replace {
            let mut files = snapshot.snapshot().file_views(base.log_store().as_ref(), None);
            while let Some(f) = files.try_next().await.map_err(|e| delta_err(table, e))? {
                all.push(Action::Remove(f.remove_action(true)));
            }
        }
        all.extend(actions);
        let operation = DeltaOperation::Write {
            mode: if replace { SaveMode::Overwrite } else { SaveMode::Append },
            partition_by: (!self.run.partitions.is_empty()).then(|| self.run.partitions.clone()),
            predicate: None,
        };
        let done = CommitBuilder::from(props)
            .with_actions(all)
            .build(Some(snapshot), self.run.log_store.clone(), operation)
            .await
            .map_err(|e| self.lost(e))?;
        let mut t = DeltaTable::new(self.run.log_store.clone());
        t.load_version(done.version()).await.map_err(|e| delta_err(table, e))?;
        Ok(t)
    }

    /// The staged rows, one per key: the greatest cursor (NULL lowest), then the last to
    /// arrive; without the arrival column.
    async fn latest_per_key(&self, ctx: &SessionContext) -> Result<deltalake::datafusion::prelude::DataFrame> {
        let table = &self.run.table;
        let df_err = |e| df_err(table, e);
        // The staged folders, under the sink's root (one object store for DataFusion's
        // listing of all of them).
        let url = url::Url::parse("etl-staging://run/").expect("a valid URL");
        let root = &self.run.root;
        let store = object_store::prefix::PrefixStore::new(root.store().clone(), root.prefix().clone());
        ctx.register_object_store(&url, Arc::new(store));
        let dirs: Vec<String> = self.rows_at.iter().map(|d| format!("{url}{d}/")).collect();
        let staged = ctx
            .read_parquet(dirs, ParquetReadOptions::default())
            .await
            .map_err(df_err)?;
        ctx.register_table("staged", staged.into_view()).map_err(df_err)?;
        let q = |c: &str| format!("\"{}\"", c.replace('"', "\"\""));
        let schema = self.schema.as_ref().expect("rows were staged");
        let cols: Vec<String> = schema.fields().iter().map(|f| q(f.name())).collect();
        let mut order: Vec<String> = self
            .run
            .cursor
            .iter()
            .map(|c| format!("{} DESC NULLS LAST", q(c)))
            .collect();
        order.push(format!("{} DESC", q(ARRIVAL)));
        let keys: Vec<String> = self.run.primary_key.iter().map(|k| q(k)).collect();
        // Most runs stage each key once (an initial load of a keyed table): then the rows are
        // taken as they are, without ranking every row (a sort of all of them).
        let repeated = ctx
            .sql(&format!(
                "SELECT 1 FROM staged GROUP BY {} HAVING count(*) > 1 LIMIT 1",
                keys.join(", ")
            ))
            .await
            .map_err(df_err)?
            .collect()
            .await
            .map_err(df_err)?;
        if repeated.iter().all(|b| b.num_rows() == 0) {
            return ctx
                .sql(&format!("SELECT {} FROM staged", cols.join(", ")))
                .await
                .map_err(df_err);
        }
        let sql = format!(
            "SELECT {cols} FROM (SELECT *, row_number() OVER (PARTITION BY {keys} ORDER BY {order}) AS \"_etl_rank\" \
             FROM staged) WHERE \"_etl_rank\" = 1",
            cols = cols.join(", "),
            keys = keys.join(", "),
            order = order.join(", "),
        );
        ctx.sql(&sql).await.map_err(df_err)
    }

    /// Merges the staged rows into the table by primary key.
    async fn merge(&self, props: CommitProperties) -> Result<(DeltaTable, CommitSummary)> {
        let table = &self.run.table;
        let ctx = SessionContext::new();
        let source = self.latest_per_key(&ctx).await?;
        let Some(base) = &self.run.base else {
            // No table yet: the latest rows are the table.
            let schema = self.schema.clone().expect("rows were staged");
            let mut w = DeltaWriter::new(
                self.run.log_store.object_store(None),
                file_config(&self.run, schema.clone(), self.run.partitions.clone()),
            );
            let mut stream = source.execute_stream().await.map_err(|e| df_err(table, e))?;
            let mut kept = 0u64;
            while let Some(b) = stream.next().await {
                let b = b.map_err(|e| df_err(table, e))?;
                let b = self.without_deleted(b)?;
                kept += b.num_rows() as u64;
                let b = etl_core::lake::formats::conform(table, &b, &schema)?;
                w.write(&b).await.map_err(|e| delta_err(table, e))?;
            }
            let adds = w.close().await.map_err(|e| delta_err(table, e))?;
            let t = self.commit_files(adds, props, false).await?;
            return Ok((
                t,
                CommitSummary {
                    inserted: kept,
                    ..Default::default()
                },
            ));
        };
        let side = |alias: &str, c: &str| Expr::Column(Column::new(Some(alias), c));
        let predicate = self
            .run
            .primary_key
            .iter()
            .map(|k| side("target", k).eq(side("source", k)))
            .reduce(Expr::and)
            .expect("UPSERT has a primary key");
        let columns: Vec<String> = self
            .schema
            .as_ref()
            .expect("rows were staged")
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        let schema = self.schema.as_ref().expect("rows were staged");
        let marks = match &self.run.soft_delete {
            Some(c) => {
                let field = schema.field_with_name(c).map_err(|_| Error::ColumnNotFound {
                    table: table.clone(),
                    column: c.clone(),
                })?;
                Some(deleted_exprs(
                    side("source", c),
                    field.data_type() == &DataType::Boolean,
                ))
            }
            None => None,
        };
        let (deleted, keep) = match marks {
            Some((d, k)) => (Some(d), Some(k)),
            None => (None, None),
        };
        let mut merge = base
            .clone()
            .merge(source, predicate)
            .with_session_state(Arc::new(ctx.state()))
            .with_source_alias("source")
            .with_target_alias("target")
            .with_merge_schema(true)
            .with_writer_properties(
                self.run
                    .options
                    .writer_properties(self.schema.as_ref().expect("rows were staged")),
            )
            .with_commit_properties(props);
        let err = |e: DeltaTableError| self.lost(e);
        if let Some(d) = &deleted {
            let d = d.clone();
            merge = merge.when_matched_delete(|del| del.predicate(d)).map_err(err)?;
        }
        merge = merge
            .when_matched_update(|mut u| {
                for c in &columns {
                    u = u.update(c.as_str(), side("source", c));
                }
                match &keep {
                    Some(k) => u.predicate(k.clone()),
                    None => u,
                }
            })
            .map_err(err)?;
        merge = merge
            .when_not_matched_insert(|mut i| {
                for c in &columns {
                    i = i.set(c.as_str(), side("source", c));
                }
                match &keep {
                    Some(k) => i.predicate(k.clone()),
                    None => i,
                }
            })
            .map_err(err)?;
        let (t, metrics) = merge.await.map_err(|e| self.lost(e))?;
        Ok((
            t,
            CommitSummary {
                inserted: metrics.num_target_rows_inserted as u64,
                updated: metrics.num_target_rows_updated as u64,
                deleted: metrics.num_target_rows_deleted as u64,
                collapsed: self.rows.saturating_sub(metrics.num_source_rows as u64),
                ..Default::default()
            },
        ))
    }

    /// A new table's rows without those the soft-delete column marks deleted.
    fn without_deleted(&self, b: RecordBatch) -> Result<RecordBatch> {
        let Some(c) = &self.run.soft_delete else {
            return Ok(b);
        };
        let table = &self.run.table;
        let col = b.column_by_name(c).ok_or_else(|| Error::ColumnNotFound {
            table: table.clone(),
            column: c.clone(),
        })?;
        let keep = match col.as_any().downcast_ref::<arrow::array::BooleanArray>() {
            // Deleted where true; NULL is not a mark.
            Some(flags) => {
                let deleted = match flags.nulls() {
                    Some(n) => flags.values() & n.inner(),
                    None => flags.values().clone(),
                };
                arrow::array::BooleanArray::new(!&deleted, None)
            }
            None => arrow::compute::is_null(col).map_err(|e| Error::arrow(table, e))?,
        };
        arrow::compute::filter_record_batch(&b, &keep).map_err(|e| Error::arrow(table, e))
    }
}

/// Whether a soft-delete column's value marks the row deleted (true, or not NULL for a
/// column that is not a boolean), and the opposite.
fn deleted_exprs(c: Expr, boolean: bool) -> (Expr, Expr) {
    if boolean {
        (c.clone().is_true(), c.is_not_true())
    } else {
        (c.clone().is_not_null(), c.is_null())
    }
}

/// A DataFusion error of the staged rows' collapse.
fn df_err(table: &str, e: deltalake::datafusion::error::DataFusionError) -> Error {
    Error::Connector {
        connector: "delta",
        message: format!("Delta table `{table}`: collapsing the staged rows: {e}"),
        retryable: false,
    }
}

/// Rows in a table's current version, from its files' statistics.
pub(super) async fn table_rows(table: &str, t: &DeltaTable) -> Result<u64> {
    let snapshot = t.snapshot().map_err(|e| delta_err(table, e))?;
    let mut files = snapshot.snapshot().file_views(t.log_store().as_ref(), None);
    let mut rows = 0u64;
    while let Some(f) = files.try_next().await.map_err(|e| delta_err(table, e))? {
        rows += f.num_records().unwrap_or(0) as u64;
    }
    Ok(rows)
}

#[async_trait]
impl StagedWrite for DeltaStaged {
    async fn commit(self: Box<Self>, checkpoint: Checkpoint) -> Result<CommitSummary> {
        let props = self.properties(&checkpoint)?;
        let (t, mut summary) = if self.run.mode == LoadMode::Upsert && self.schema.is_some() {
            let out = self.merge(props).await;
            if out.is_ok() || !self.of_plan {
                let _ = self.delete_rows().await;
            }
            out?
        } else {
            let replace = self.run.mode.replaces_target();
            let adds = self.adds.clone();
            let t = self.commit_files(adds, props, replace).await?;
            (
                t,
                CommitSummary {
                    inserted: self.rows,
                    ..Default::default()
                },
            )
        };
        summary.target_rows = match t.version() {
            Some(_) => Some(table_rows(&self.run.table, &t).await?),
            None => Some(0),
        };
        Ok(summary)
    }

    async fn abort(self: Box<Self>) -> Result<()> {
        if self.run.mode == LoadMode::Upsert {
            return self.delete_rows().await;
        }
        let store = self.run.log_store.object_store(None);
        for add in &self.adds {
            let path = object_store::path::Path::from(add.path.as_str());
            if let Err(e) = store.delete(&path).await {
                tracing::warn!(table = %self.run.table, file = %add.path, error = %e, "could not delete a staged Delta file; VACUUM removes it");
            }
        }
        Ok(())
    }

    fn manifest(&self) -> Result<serde_json::Value> {
        let shard = StagedShard {
            adds: self.adds.clone(),
            rows_at: self.rows_at.clone(),
            written: columns_of(&self.schema),
            columns: columns_of(&self.columns),
            rows: self.rows,
        };
        serde_json::to_value(shard).map_err(|e| Error::config(format!("table `{}`: {e}", self.run.table)))
    }
}
