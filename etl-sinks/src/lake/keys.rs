//! The lake's side of a key comparison ([`etl_core::keys`]) and its deletes: tombstone rows.
//!
//! A lake table is append-only, so a key deleted at the source is marked, not removed: a
//! tombstone row holds the key, `etl_processed_at` (when the delete was committed) and
//! [`DELETED_AT`], every other column NULL. A key is live when its newest row by
//! `etl_processed_at` is not a tombstone, so a key the source inserts again is live again.
//! Readers that want the current rows keep, per key, the newest row and drop it when
//! `_etl_deleted_at` is set (see the README).
//!
//! The live keys are computed from the key, `etl_processed_at` and `_etl_deleted_at` columns
//! alone (a Parquet projection), once per commit of the table.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use arrow::array::{Array, ArrayRef, Int64Array, RecordBatch, TimestampMicrosecondArray, new_null_array};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use chrono::Utc;
use etl_core::keys::{self, Content, KeyRows};
use etl_core::kit::batch::cast_column;
use etl_core::transform::PROCESSED_AT;
use etl_core::{Error, LoadMode, Result, TableSpec, TableWriter, WriteRequest};
use futures::TryStreamExt;
use parquet::arrow::{ParquetRecordBatchStreamBuilder, ProjectionMask};

use super::LakeSink;
use super::writer::LakeWriter;

pub use etl_core::DELETED_AT;

/// A table, the sequence of its commit, the content columns, and its live rows then.
type Cached = (String, u64, Vec<Content>, Arc<KeyRows>);

/// The live rows of the table last compared, at its last commit.
#[derive(Debug, Default)]
pub(super) struct LiveKeys {
    cached: Mutex<Option<Cached>>,
}

fn lake_err(path: &str) -> impl Fn(parquet::errors::ParquetError) -> Error + '_ {
    move |e| Error::Connector {
        connector: "lake",
        message: format!("reading `{path}`: {e}"),
        retryable: false,
    }
}

/// The refusal of a comparison the lake cannot make.
pub(super) fn check(spec: &TableSpec) -> Result<()> {
    let compares = spec.deletes.is_some() || spec.reconcile.is_some();
    if compares && !spec.processed_at {
        return Err(Error::config(format!(
            "table `{}`: the lake orders a key's rows (and its tombstones) by `{PROCESSED_AT}`, which \
             processed_at(false) leaves out; keep it to find deletes or reconcile a lake table",
            spec.name
        )));
    }
    Ok(())
}

impl LakeSink {
    /// The table's live keys with their rows' content hashes (of the `content` columns;
    /// `None`: any, as for the keys alone): read once per commit of the table.
    async fn live_rows(&self, spec: &TableSpec, content: Option<&[Content]>) -> Result<Arc<KeyRows>> {
        check(spec)?;
        let log = self.commit_log(&spec.target);
        let Some(latest) = log.latest().await? else {
            return Ok(Arc::new(KeyRows::default()));
        };
        if let Some((t, seq, c, rows)) = self.live.cached.lock().expect("live keys lock").as_ref()
            && *t == spec.target
            && *seq == latest.sequence
            && content.is_none_or(|content| c.as_slice() == content)
        {
            return Ok(rows.clone());
        }
        let content = content.unwrap_or_default();
        let key = keys::key_column(spec)?;
        // Per key: its newest row's commit time, whether it is a tombstone, its content hash.
        let mut newest: HashMap<i64, (i64, bool, i64)> = HashMap::new();
        for meta in log.visible_files().await? {
            let path = meta.location.to_string();
            let reader = etl_core::lake::parquet::ObjectReader::new(self.location.store().clone(), meta.clone());
            let builder = ParquetRecordBatchStreamBuilder::new(reader)
                .await
                .map_err(lake_err(&path))?;
            let mut wanted = vec![key, PROCESSED_AT, DELETED_AT];
            wanted.extend(content.iter().map(|c| c.name.as_str()));
            let fields = builder.schema().fields();
            let leaves: Vec<usize> = wanted
                .iter()
                .filter_map(|c| fields.iter().position(|f| f.name() == c))
                .collect();
            let mask = ProjectionMask::roots(builder.parquet_schema(), leaves);
            let mut stream = builder.with_projection(mask).build().map_err(lake_err(&path))?;
            while let Some(batch) = stream.try_next().await.map_err(lake_err(&path))? {
                let missing = |name: &str| Error::ColumnNotFound {
                    table: spec.name.clone(),
                    column: format!("{name} (in `{path}`)"),
                };
                let deleted = batch.column_by_name(DELETED_AT).cloned();
                // A tombstone's columns are NULL: its row is valued with no content.
                let rows = match &deleted {
                    Some(d) if d.null_count() < d.len() => {
                        let live = arrow::compute::is_null(d).map_err(|e| Error::arrow(&spec.name, e))?;
                        let kept = arrow::compute::filter_record_batch(&batch, &live)
                            .map_err(|e| Error::arrow(&spec.name, e))?;
                        let dead = arrow::compute::not(&live).map_err(|e| Error::arrow(&spec.name, e))?;
                        let dead = arrow::compute::filter_record_batch(&batch, &dead)
                            .map_err(|e| Error::arrow(&spec.name, e))?;
                        vec![(kept, false), (dead, true)]
                    }
                    Some(_) => vec![(batch, false)],
                    None => vec![(batch, false)],
                };
                for (part, tombstone) in rows {
                    let at = part.column_by_name(PROCESSED_AT).ok_or_else(|| missing(PROCESSED_AT))?;
                    let at = cast_column(
                        &spec.name,
                        PROCESSED_AT,
                        at,
                        &DataType::Timestamp(TimeUnit::Microsecond, None),
                    )?;
                    let at = cast_column(&spec.name, PROCESSED_AT, &at, &DataType::Int64)?;
                    let at = at.as_any().downcast_ref::<Int64Array>().expect("int64");
                    let keys = part.column_by_name(key).ok_or_else(|| missing(key))?;
                    let keys = cast_column(&spec.name, key, keys, &DataType::Int64)?;
                    let keys = keys.as_any().downcast_ref::<Int64Array>().expect("int64");
                    let hashed = if tombstone {
                        Vec::new()
                    } else {
                        keys::row_hashes(&spec.name, &part, key, content)?
                    };
                    let mut hashes = hashed.into_iter();
                    for i in 0..part.num_rows() {
                        if keys.is_null(i) {
                            continue;
                        }
                        let hash = hashes.next().map_or(0, |(_, h)| h);
                        let row = (at.value(i), tombstone, hash);
                        let e = newest.entry(keys.value(i)).or_insert(row);
                        // The newest row wins; a tombstone wins a tie.
                        if row.0 > e.0 || (row.0 == e.0 && row.1) {
                            *e = row;
                        }
                    }
                }
            }
        }
        let live = KeyRows::new(
            newest
                .into_iter()
                .filter(|(_, (_, dead, _))| !dead)
                .map(|(k, (_, _, h))| (k, h))
                .collect(),
        );
        let live = Arc::new(live);
        *self.live.cached.lock().expect("live keys lock") =
            Some((spec.target.clone(), latest.sequence, content.to_vec(), live.clone()));
        Ok(live)
    }

    /// Marks `keys` deleted: one commit of tombstone rows that carries the table's last
    /// checkpoint unchanged (the watermark still names that run).
    pub(super) async fn tombstones(&self, spec: &TableSpec, keys: &[i64]) -> Result<u64> {
        check(spec)?;
        let key = keys::key_column(spec)?;
        let log = self.commit_log(&spec.target);
        let Some(base) = log.latest().await? else {
            return Ok(0);
        };
        let table = log.table_schema(&base).await?.ok_or_else(|| Error::Metadata {
            path: spec.target.clone(),
            message: "the lake table has no schema to write tombstones in".into(),
        })?;
        let now = Utc::now();
        let n = keys.len();
        let stamp = || -> ArrayRef {
            Arc::new(TimestampMicrosecondArray::from(vec![now.timestamp_micros(); n]).with_timezone("UTC"))
        };
        let mut fields = Vec::new();
        let mut columns = Vec::new();
        for f in table.fields().iter().filter(|f| f.name() != DELETED_AT) {
            let col: ArrayRef = if f.name() == key {
                let ints: ArrayRef = Arc::new(Int64Array::from(keys.to_vec()));
                cast_column(&spec.name, key, &ints, f.data_type())?
            } else if f.name() == PROCESSED_AT {
                cast_column(&spec.name, PROCESSED_AT, &stamp(), f.data_type())?
            } else {
                new_null_array(f.data_type(), n)
            };
            fields.push(f.as_ref().clone().with_nullable(true));
            columns.push(col);
        }
        fields.push(Field::new(
            DELETED_AT,
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            true,
        ));
        columns.push(stamp());
        let batch =
            RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).map_err(|e| Error::arrow(&spec.name, e))?;
        let run_id = format!("{}-deletes", base.checkpoint.run_id);
        let last = base.checkpoint.run_id.clone();
        let mut checkpoint = base.checkpoint.clone();
        checkpoint.committed_at = now;
        let req = WriteRequest {
            pipeline: &spec.name,
            spec,
            mode: LoadMode::Append,
            run_id: &run_id,
            started_at: now,
            last_checkpoint: Some(&last),
            watermark_home: None,
        };
        let table_schema = Some(table);
        let mut writer = Box::new(LakeWriter::new(
            log,
            Some(base),
            table_schema,
            req,
            self.options.clone(),
        ));
        if let Err(e) = writer.write(batch).await {
            let _ = TableWriter::abort(writer).await;
            return Err(e);
        }
        writer.stage().await?.commit(checkpoint).await?;
        Ok(n as u64)
    }
}

#[async_trait::async_trait]
impl keys::HeldKeys for LakeSink {
    async fn key_rows(&self, spec: &TableSpec, content: Option<&[Content]>) -> Result<Arc<KeyRows>> {
        self.live_rows(spec, content).await
    }
}
