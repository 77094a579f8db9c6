//! The commit log of one lake table: create a record (the commit point), apply it (move files).

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use etl_core::lake::Column;
use etl_core::lake::formats::{self, MergePolicy};
use etl_core::lake::{self, AddedFile, CommitRecord};
use etl_core::{Error, Location, Result};
use futures::{StreamExt, TryStreamExt, stream};
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStoreExt, PutPayload};

/// How many commit records are kept per table.
const KEEP_RECORDS: u64 = 20;

/// How many files a commit moves (or deletes) at once.
const FILES_AT_ONCE: usize = 16;

/// The commit records of one target table of a lake.
#[derive(Debug, Clone)]
pub struct CommitLog {
    location: Location,
    table: String,
}

fn not_found(e: &object_store::Error) -> bool {
    matches!(e, object_store::Error::NotFound { .. })
}

impl CommitLog {
    /// The log of `table` in the lake at `location`.
    pub fn new(location: Location, table: &str) -> Self {
        CommitLog {
            location,
            table: table.to_string(),
        }
    }

    /// The table's name.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// The lake's root.
    pub fn location(&self) -> &Location {
        &self.location
    }

    /// The sequences of the table's records. A marker of an applied commit whose record is
    /// gone (newer than the newest record) means the log was edited: the next commit would
    /// take its sequence and be mistaken for applied, so it is refused.
    async fn sequences(&self) -> Result<Vec<u64>> {
        let listed = self.location.list(&lake::commits_dir(&self.table)).await?;
        let sequence =
            |m: &ObjectMeta, ext: &str| -> Option<u64> { m.location.filename()?.strip_suffix(ext)?.parse().ok() };
        let mut seqs: Vec<u64> = listed.iter().filter_map(|m| sequence(m, ".json")).collect();
        seqs.sort_unstable();
        let newest = seqs.last().copied().unwrap_or(0);
        if let Some(orphan) = listed
            .iter()
            .filter_map(|m| sequence(m, ".applied"))
            .find(|s| *s > newest)
        {
            return Err(Error::Metadata {
                path: self.applied_marker(orphan).to_string(),
                message: format!(
                    "commit record {orphan} of table `{}` is missing but marked applied: the commit log was edited \
                     or partly deleted; restore the record, or remove the marker and the files that commit added",
                    self.table
                ),
            });
        }
        Ok(seqs)
    }

    /// Reads one record.
    ///
    /// # Errors
    /// [`Error::ObjectStore`] when it cannot be read, [`Error::Metadata`] when it is corrupt.
    pub async fn read(&self, sequence: u64) -> Result<CommitRecord> {
        let path = self.location.path(&lake::commit_path(&self.table, sequence));
        self.location.get_json(&path).await
    }

    /// The latest record, if the table has any.
    ///
    /// # Errors
    /// As [`CommitLog::read`].
    pub async fn latest(&self) -> Result<Option<CommitRecord>> {
        match self.sequences().await?.last() {
            Some(s) => Ok(Some(self.read(*s).await?)),
            None => Ok(None),
        }
    }

    /// Creates a record: the commit point. Fails with [`Error::ConcurrentRun`] when its
    /// sequence exists already.
    ///
    /// # Errors
    /// [`Error::ConcurrentRun`], [`Error::ObjectStore`].
    pub async fn create(&self, pipeline: &str, rec: &CommitRecord) -> Result<()> {
        let path = self.record_path(rec);
        if self.location.create_json(&path, rec).await? {
            Ok(())
        } else {
            Err(Error::ConcurrentRun {
                pipeline: pipeline.to_string(),
                table: self.table.clone(),
            })
        }
    }

    fn applied_marker(&self, sequence: u64) -> Path {
        self.location
            .path(&format!("{}/{sequence:020}.applied", lake::commits_dir(&self.table)))
    }

    /// Makes a created record's files visible and removes the files it replaces. Idempotent:
    /// a record already applied, or applied in part by a run that died, is completed.
    ///
    /// # Errors
    /// [`Error::ObjectStore`]; [`Error::Metadata`] when a staged file is gone and its final
    /// file is not there either.
    pub async fn apply(&self, rec: &CommitRecord) -> Result<()> {
        let store = self.location.store();
        let marker = self.applied_marker(rec.sequence);
        match store.get(&marker).await {
            Ok(got) => {
                let run = got.bytes().await.map_err(|e| Error::store(&marker, e))?;
                return match std::str::from_utf8(&run).map(str::trim) {
                    Ok(run) if run == rec.checkpoint.run_id => Ok(()),
                    // A marker of an older version holds nothing: the files say.
                    Ok("") => self.check_in_place(rec).await,
                    _ => Err(Error::Metadata {
                        path: self.record_path(rec).to_string(),
                        message: format!(
                            "the record is run `{}`, but its applied marker names run `{}`: the commit log was \
                             edited; nothing of this commit is trusted to be in place",
                            rec.checkpoint.run_id,
                            String::from_utf8_lossy(&run).trim()
                        ),
                    }),
                };
            }
            Err(e) if not_found(&e) => {}
            Err(e) => return Err(Error::store(&marker, e)),
        }
        // Many at once: on S3 a move is a copy and a delete, and a plan's commit moves every
        // shard's files.
        // (Collected first: a stream of a closure's futures is not `Send` to the compiler.)
        let moves: Vec<_> = rec.add.iter().map(|f| self.move_in(rec, f)).collect();
        stream::iter(moves)
            .buffer_unordered(FILES_AT_ONCE)
            .try_collect::<()>()
            .await?;
        let removes: Vec<_> = rec.remove.iter().map(|rel| self.remove(rel)).collect();
        stream::iter(removes)
            .buffer_unordered(FILES_AT_ONCE)
            .try_collect::<()>()
            .await?;
        store
            .put(&marker, PutPayload::from(rec.checkpoint.run_id.clone().into_bytes()))
            .await
            .map_err(|e| Error::store(&marker, e))?;
        Ok(())
    }

    /// Where the record `rec` is.
    fn record_path(&self, rec: &CommitRecord) -> Path {
        self.location.path(&lake::commit_path(&self.table, rec.sequence))
    }

    /// Moves a file the commit `rec` adds from its staging path to its final one (done
    /// already by an earlier attempt, if it is there).
    async fn move_in(&self, rec: &CommitRecord, f: &AddedFile) -> Result<()> {
        let store = self.location.store();
        let from = self.location.path(&f.staged);
        let to = self.location.path(&f.path);
        match store.rename(&from, &to).await {
            Ok(()) => Ok(()),
            Err(e) if not_found(&e) => store.head(&to).await.map(|_| ()).map_err(|_| Error::Metadata {
                path: self.record_path(rec).to_string(),
                message: format!("file `{}` is neither staged nor in place", f.path),
            }),
            Err(e) => Err(Error::store(&from, e)),
        }
    }

    /// Deletes a file a commit replaces (gone already, if it is not there).
    async fn remove(&self, rel: &str) -> Result<()> {
        let p = self.location.path(rel);
        match self.location.store().delete(&p).await {
            Ok(()) => Ok(()),
            Err(e) if not_found(&e) => Ok(()),
            Err(e) => Err(Error::store(&p, e)),
        }
    }

    /// Checks that every file a commit added is at its final path.
    async fn check_in_place(&self, rec: &CommitRecord) -> Result<()> {
        for f in &rec.add {
            let to = self.location.path(&f.path);
            match self.location.store().head(&to).await {
                Ok(_) => {}
                Err(e) if not_found(&e) => {
                    return Err(Error::Metadata {
                        path: self.record_path(rec).to_string(),
                        message: format!("the commit is marked applied but its file `{}` is not in place", f.path),
                    });
                }
                Err(e) => return Err(Error::store(&to, e)),
            }
        }
        Ok(())
    }

    /// The table's schema after the commit `rec`: its stored columns, or for a record of an
    /// older version the schemas of the files it added, read from their footers.
    ///
    /// # Errors
    /// [`Error::ObjectStore`], or [`Error::Connector`] for a footer that cannot be read.
    pub async fn table_schema(&self, rec: &CommitRecord) -> Result<Option<SchemaRef>> {
        if let Some(columns) = &rec.columns {
            let path = self.record_path(rec);
            return Ok(Some(Arc::new(Column::schema(columns, path.as_ref())?)));
        }
        let mut merged: Option<(SchemaRef, String)> = None;
        for f in &rec.add {
            let path = self.location.path(&f.path);
            let meta = match self.location.store().head(&path).await {
                Ok(m) => m,
                Err(e) if not_found(&e) => continue,
                Err(e) => return Err(Error::store(&path, e)),
            };
            let reader = etl_core::lake::parquet::ObjectReader::new(self.location.store().clone(), meta);
            let schema = parquet::arrow::ParquetRecordBatchStreamBuilder::new(reader)
                .await
                .map_err(|e| Error::Connector {
                    connector: "lake",
                    message: format!("reading the footer of `{}`: {e}", f.path),
                    retryable: false,
                })?
                .schema()
                .clone();
            merged = Some(match merged {
                None => (schema, f.path.clone()),
                Some((m, from)) => (
                    formats::merge_schemas(&self.table, &m, &from, &schema, &f.path, MergePolicy::Strict)?,
                    from,
                ),
            });
        }
        Ok(merged.map(|(s, _)| s))
    }

    /// The table's visible data files.
    ///
    /// # Errors
    /// [`Error::ObjectStore`] when listing fails.
    pub async fn visible_files(&self) -> Result<Vec<ObjectMeta>> {
        Ok(self
            .location
            .list(&self.table)
            .await?
            .into_iter()
            .filter(|m| m.location.as_ref().ends_with(".parquet"))
            .collect())
    }

    /// After committing `sequence`: deletes staged files of runs that began before it (they
    /// can no longer commit) and records older than the last 20.
    pub async fn tidy(&self, sequence: u64) {
        let staging_root = format!("{}/staging/{}", lake::META_DIR, self.table);
        let result: Result<()> = async {
            let mut dead = std::collections::BTreeSet::new();
            for m in self.location.list(&staging_root).await? {
                let rel = self.location.relative(&m.location);
                let run_dir = rel[staging_root.len()..].trim_start_matches('/').split('/').next();
                if let Some(dir) = run_dir {
                    let base = dir.split('-').next().and_then(|b| b.parse::<u64>().ok());
                    if base.is_some_and(|b| b < sequence) {
                        dead.insert(dir.to_string());
                    }
                }
            }
            for dir in dead {
                self.location.delete_dir(&format!("{staging_root}/{dir}")).await?;
            }
            for s in self.sequences().await? {
                if s + KEEP_RECORDS <= sequence {
                    for p in [
                        self.location.path(&lake::commit_path(&self.table, s)),
                        self.applied_marker(s),
                    ] {
                        let _ = self.location.store().delete(&p).await;
                    }
                }
            }
            Ok(())
        }
        .await;
        if let Err(e) = result {
            tracing::warn!(table = %self.table, error = %e, "could not tidy the lake's metadata");
        }
    }
}
