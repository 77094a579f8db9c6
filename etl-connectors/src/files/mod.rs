//! Files on any object store as a source: CSV, JSON lines and Parquet under a prefix.
//!
//! # Incremental reads
//! The watermark of a file table is a bookmark of every file read (path, size, last
//! modified, e-tag). An incremental run reads only files that are new or changed since the
//! last committed run; with cursor columns it also keeps only rows past the cursor. A changed
//! file is read again whole: without a cursor its earlier rows reach an INCREMENTAL target
//! again, and the report warns naming the file (give the table a cursor, or use UPSERT).
//!
//! # Compression
//! Gzip CSV and JSON-lines files are decompressed (`.csv.gz`, or gzip bytes under any
//! name); other compressions are refused naming the file.
//!
//! # Bad rows
//! A row that cannot be parsed stops the table with [`etl_core::Error::MalformedRow`] naming
//! the file and line, unless the spec says [`etl_core::BadRows::Divert`]: then the row goes to
//! `_etl/rejects/<table>/<run>.csv` under the rejects location (by default the source's
//! own location) and the report counts it.
//!
//! # Deletes and reconciliation
//! A file table with a primary key compares with its target ([`TableSpec::detect_deletes`],
//! [`TableSpec::reconcile`]) by the keys (and the content) of the files that hold it now:
//! every file under the prefix, or with [`FileDrops::Newest`] the newest drop alone, so that
//! a key missing from a complete drop is a key deleted at the source. The files are read
//! whole once per listing (a bad row fails the comparison, naming file and line: its key is
//! unknown); of a key given twice, the later row counts.
//!
//! # Memory
//! One file is read at a time; CSV and JSON are parsed on a blocking thread that hands over
//! at most two batches ahead of the consumer. Parquet files are read row group by row group.

mod parquet;

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::datatypes::{Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use etl_core::keys::{self, Content, ContentKind, HeldKeys, KeyReader, KeyRows};
use etl_core::kit::window;
use etl_core::lake::formats::{self, Decoded, MergePolicy, RejectedRow, TextRead};
use etl_core::shard::{ShardSizing, Split};
use etl_core::{
    BadRows, Error, Extract, ExtractStats, FileDrops, FileFormat, FileMark, LoadMode, Location, Position, ReadRequest,
    Result, Source, SourceRef, TableSpec,
};
use etl_core::{BatchStream, Low};
use futures::StreamExt;
use object_store::{ObjectMeta, ObjectStoreExt};

/// Reads tables of files under prefixes of one [`Location`].
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use etl_connectors::files::FileSource;
/// use etl_core::{FileFormat, Location, ReadRequest, Source, TableSpec};
/// use futures::TryStreamExt;
///
/// let dir = tempfile::tempdir().unwrap();
/// std::fs::create_dir_all(dir.path().join("in")).unwrap();
/// std::fs::write(dir.path().join("in/a.csv"), "id,name\n1,ann\n2,bob\n").unwrap();
/// let source = FileSource::new(Location::local(dir.path()).unwrap());
/// let spec = TableSpec::new("people").from_files("in", FileFormat::csv());
/// let req = ReadRequest { spec: &spec, mode: spec.mode, from: None, run_id: "r1", batch_size: 1024, limit: None, until: None, keys: None, files: None };
/// let batches: Vec<_> = source.read(req).await.unwrap().stream.try_collect().await.unwrap();
/// assert_eq!(batches[0].num_rows(), 2);
/// # });
/// ```
#[derive(Debug, Clone)]
pub struct FileSource {
    location: Location,
    rejects: Location,
    /// The key rows of the table last compared, by its listing and content columns.
    keys: Arc<std::sync::Mutex<Option<CachedKeys>>>,
}

/// A table, its files as listed, the content columns, and their key rows.
type CachedKeys = (String, BTreeMap<String, FileMark>, Vec<Content>, Arc<KeyRows>);

/// One file to read.
#[derive(Debug, Clone)]
struct FileTask {
    meta: ObjectMeta,
    rel: String,
}

/// Everything a file decoder needs, shared by the files of one read.
#[derive(Debug, Clone)]
struct DecodeContext {
    table: String,
    schema: SchemaRef,
    batch_size: usize,
    bad_rows: BadRows,
    /// The window's lower end: rows past it are kept.
    low: Low,
    /// A backfill's upper end: rows past it are left out.
    until: Option<etl_core::CursorValue>,
    spec: Arc<TableSpec>,
    stats: Arc<ExtractStats>,
    rejects: Location,
    run_id: String,
}

impl DecodeContext {
    /// Counts a decoded batch and applies the incremental filter.
    fn finish_batch(&self, batch: RecordBatch) -> Result<RecordBatch> {
        self.stats.count_source(batch.num_rows() as u64);
        let (kept, null_rows) = window::filter_window(&self.spec, &batch, &self.low, self.until.as_ref())?;
        ExtractStats::add(&self.stats.null_cursor_rows, null_rows);
        Ok(kept)
    }

    /// Writes rejected rows (`file,line,reason,record` CSV) for one input file.
    async fn write_rejects(&self, file: &str, rows: Vec<RejectedRow>) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        ExtractStats::add(&self.stats.rejected_rows, rows.len() as u64);
        let body = RejectedRow::to_csv(file, &rows);
        let name = file.replace('/', "__");
        let path = self
            .rejects
            .path(&format!("_etl/rejects/{}/{}/{name}.csv", self.table, self.run_id));
        use object_store::ObjectStoreExt;
        self.rejects
            .store()
            .put(&path, body.into())
            .await
            .map_err(|e| Error::store(&path, e))?;
        Ok(())
    }
}

impl FileSource {
    /// Files under `location`; rejects are written there too unless
    /// [`FileSource::with_rejects`] says otherwise.
    pub fn new(location: Location) -> Self {
        FileSource {
            rejects: location.clone(),
            location,
            keys: Arc::default(),
        }
    }

    /// Writes rejects files under another location (when the source is read-only).
    pub fn with_rejects(mut self, location: Location) -> Self {
        self.rejects = location;
        self
    }

    fn files_spec<'a>(&self, spec: &'a TableSpec) -> Result<(&'a str, &'a FileFormat)> {
        match &spec.source {
            SourceRef::Files { prefix, format } => Ok((prefix, format)),
            other => Err(Error::config(format!(
                "table `{}`: the file source reads SourceRef::Files, not {other:?}",
                spec.name
            ))),
        }
    }

    async fn list(&self, spec: &TableSpec) -> Result<Vec<FileTask>> {
        let (prefix, format) = self.files_spec(spec)?;
        let mut listed = self.location.list(prefix).await?;
        if listed.is_empty() {
            // The prefix may name a single file.
            let path = self.location.path(prefix);
            match self.location.store().head(&path).await {
                Ok(meta) => listed.push(meta),
                Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(Error::store(&path, e)),
            }
        }
        let mut files = Vec::new();
        for meta in listed {
            let rel = self.location.relative(&meta.location);
            if rel.split('/').any(|p| p.starts_with('_') || p.starts_with('.')) {
                continue;
            }
            let name = rel.to_ascii_lowercase();
            if format.extensions().iter().any(|e| name.ends_with(e)) {
                files.push(FileTask { meta, rel });
            } else if let Some(kind) = format.refused_compression(&name) {
                // A file of the table that cannot be read is an error, never a silent skip.
                return Err(formats::compression_refused(&rel, kind));
            }
        }
        if spec.file_drops == FileDrops::Newest {
            files = newest_drop(prefix, files);
        }
        if files.is_empty() {
            return Err(Error::TableNotFound {
                table: spec.name.clone(),
                source_name: format!("files ({}) under {}/{prefix}", format.name(), self.location.url()),
            });
        }
        Ok(files)
    }

    /// The bookmarks of the files listed now, and the files a read of `req` takes: every
    /// file, or past `from` only the new and changed ones; a shard's file set when `req`
    /// names one ([`Error::Metadata`] naming a file of the set that is gone).
    async fn window_files(&self, req: &ReadRequest<'_>) -> Result<(BTreeMap<String, FileMark>, Vec<FileTask>)> {
        let listed = self.list(req.spec).await?;
        let marks = marks_of(&listed);
        if let Some(set) = req.files {
            if let Some(gone) = set.iter().find(|f| !marks.contains_key(*f)) {
                return Err(Error::Metadata {
                    path: self.location.path(gone).to_string(),
                    message: format!(
                        "table `{}`: a file of the shard's set is not there any more (deleted, moved, or not of \
                         the newest drop); plan the run again",
                        req.spec.name
                    ),
                });
            }
            let set: std::collections::BTreeSet<&String> = set.iter().collect();
            return Ok((marks, listed.into_iter().filter(|f| set.contains(&f.rel)).collect()));
        }
        let from = if req.mode.reads_incrementally() { req.from } else { None };
        let to_read = listed
            .into_iter()
            .filter(|f| from.is_none_or(|p| p.files.get(&f.rel) != marks.get(&f.rel)))
            .collect();
        Ok((marks, to_read))
    }

    async fn infer(&self, spec: &TableSpec, files: &[FileTask]) -> Result<SchemaRef> {
        let (_, format) = self.files_spec(spec)?;
        let mut merged: Option<(SchemaRef, String)> = None;
        for f in files {
            let s = match format {
                FileFormat::Csv(o) => {
                    formats::infer_csv(&self.location, &f.meta, &f.rel, o, formats::SAMPLE_ROWS).await?
                }
                FileFormat::JsonLines => {
                    formats::infer_json(&self.location, &f.meta, &f.rel, formats::SAMPLE_ROWS, spec.bad_rows).await?
                }
                FileFormat::Parquet => parquet::schema(&self.location, f).await?,
                _ => {
                    return Err(Error::config(format!("table `{}`: unsupported file format", spec.name)));
                }
            };
            let policy = match format {
                FileFormat::Parquet => MergePolicy::Strict,
                _ => MergePolicy::Inferred,
            };
            merged = Some(match merged {
                None => (Arc::new(s), f.rel.clone()),
                Some((m, from)) => (formats::merge_schemas(&spec.name, &m, &from, &s, &f.rel, policy)?, from),
            });
        }
        Ok(merged.map_or_else(|| Arc::new(Schema::empty()), |(s, _)| s))
    }
}

/// The bookmarks of listed files.
fn marks_of(files: &[FileTask]) -> BTreeMap<String, FileMark> {
    files
        .iter()
        .map(|f| {
            (
                f.rel.clone(),
                FileMark {
                    size: f.meta.size,
                    last_modified: f.meta.last_modified,
                    e_tag: f.meta.e_tag.clone(),
                },
            )
        })
        .collect()
}

/// `files` in at most `n` sets of about equal bytes (the largest first, each into the
/// lightest set), each sorted by name; no set is empty.
fn file_sets(mut files: Vec<FileTask>, n: usize) -> Vec<Vec<String>> {
    let n = n.clamp(1, files.len().max(1));
    files.sort_by(|a, b| b.meta.size.cmp(&a.meta.size).then_with(|| a.rel.cmp(&b.rel)));
    let mut sets: Vec<(u64, Vec<String>)> = vec![(0, Vec::new()); n];
    for f in files {
        let lightest = sets.iter_mut().min_by_key(|(bytes, _)| *bytes).expect("n ≥ 1");
        lightest.0 += f.meta.size;
        lightest.1.push(f.rel);
    }
    sets.into_iter()
        .filter(|(_, s)| !s.is_empty())
        .map(|(_, mut s)| {
            s.sort();
            s
        })
        .collect()
}

/// The files of the newest drop under `prefix`: a drop is an entry directly under it (a file,
/// or a folder and everything in it); the newest has the newest file (then the greatest
/// name).
fn newest_drop(prefix: &str, files: Vec<FileTask>) -> Vec<FileTask> {
    let base = prefix.trim_end_matches('/');
    let drop_of = |rel: &str| -> String {
        let inner = rel.strip_prefix(base).unwrap_or(rel).trim_start_matches('/');
        inner.split('/').next().unwrap_or_default().to_string()
    };
    let mut newest: BTreeMap<String, chrono::DateTime<chrono::Utc>> = BTreeMap::new();
    for f in &files {
        let e = newest.entry(drop_of(&f.rel)).or_insert(f.meta.last_modified);
        *e = (*e).max(f.meta.last_modified);
    }
    let Some(pick) = newest
        .iter()
        .max_by_key(|(name, at)| (**at, (*name).clone()))
        .map(|(n, _)| n.clone())
    else {
        return files;
    };
    files.into_iter().filter(|f| drop_of(&f.rel) == pick).collect()
}

/// The batches of one text file: decoded rows counted and filtered past the cursor, bad rows
/// written to the rejects file.
fn text_stream(decoded: formats::DecodedStream, ctx: DecodeContext, file: String) -> BatchStream {
    Box::pin(decoded.then(move |item| {
        let (ctx, file) = (ctx.clone(), file.clone());
        async move {
            match item? {
                Decoded::Batch(b) => ctx.finish_batch(b),
                Decoded::Rejects(rows) => {
                    ctx.write_rejects(&file, rows).await?;
                    Ok(RecordBatch::new_empty(ctx.schema.clone()))
                }
            }
        }
    }))
}

/// A file table's side of a key comparison: the keys of its files as listed now, with their
/// rows' hashes of `content` (`None`: the columns the spec reconciles), read once per listing.
#[async_trait]
impl HeldKeys for FileSource {
    async fn key_rows(&self, spec: &TableSpec, content: Option<&[Content]>) -> Result<Arc<KeyRows>> {
        let key = keys::key_column(spec)?;
        let marks = marks_of(&self.list(spec).await?);
        // Rows read for any content serve the keys alone (the bounds), without a second read.
        if let Some((t, m, c, rows)) = self.keys.lock().expect("key rows lock").as_ref()
            && *t == spec.name
            && *m == marks
            && content.is_none_or(|content| c.as_slice() == content)
        {
            return Ok(rows.clone());
        }
        let content = match (content, &spec.reconcile) {
            (Some(c), _) => c.to_vec(),
            (None, Some(r)) if !r.columns.is_empty() => HeldKeys::content(self, spec, &r.columns).await?,
            (None, _) => Vec::new(),
        };
        // A row that cannot be parsed has a key no one knows: the comparison fails on it.
        let mut strict = spec.clone();
        strict.bad_rows = BadRows::Fail;
        let req = ReadRequest {
            spec: &strict,
            mode: LoadMode::Full,
            from: None,
            run_id: "keys",
            batch_size: 65_536,
            limit: None,
            until: None,
            keys: None,
            files: None,
        };
        let mut stream = self.read(req).await?.stream;
        let mut rows = Vec::new();
        while let Some(batch) = stream.next().await {
            rows.extend(keys::row_hashes(&spec.name, &batch?, key, &content)?);
        }
        let rows = Arc::new(KeyRows::new(rows));
        *self.keys.lock().expect("key rows lock") = Some((spec.name.clone(), marks, content, rows.clone()));
        Ok(rows)
    }

    async fn content(&self, spec: &TableSpec, columns: &[String]) -> Result<Vec<Content>> {
        let schema = match &spec.schema {
            Some(s) => s.clone(),
            None => self.infer(spec, &self.list(spec).await?).await?,
        };
        columns
            .iter()
            .map(|c| {
                let field = schema.field_with_name(c).map_err(|_| Error::ColumnNotFound {
                    table: spec.name.clone(),
                    column: c.clone(),
                })?;
                Ok(Content {
                    name: c.clone(),
                    kind: ContentKind::of(field.data_type()),
                    native: false,
                })
            })
            .collect()
    }
}

#[async_trait]
impl Source for FileSource {
    fn name(&self) -> &str {
        "files"
    }

    fn key_reader(&self) -> Option<&dyn KeyReader> {
        Some(self)
    }

    /// The new and changed files a read would take (their rows are not counted: that is
    /// reading them).
    async fn estimate(&self, req: ReadRequest<'_>) -> Result<etl_core::Estimate> {
        let (_, new) = self.window_files(&req).await?;
        Ok(etl_core::Estimate {
            rows: None,
            files: Some(new.len() as u64),
            bytes: Some(new.iter().map(|f| f.meta.size).sum()),
        })
    }

    async fn check(&self, spec: &TableSpec) -> Result<()> {
        self.list(spec).await.map(|_| ())
    }

    /// Splits the window's new and changed files (all of them, for a whole read) into file
    /// sets of about equal bytes; a file is never split.
    async fn split(&self, req: ReadRequest<'_>, sizing: ShardSizing) -> Result<Split> {
        let (marks, to_read) = self.window_files(&req).await?;
        let n = match sizing {
            ShardSizing::Count(n) => n,
            ShardSizing::Bytes(per) => to_read.iter().map(|f| f.meta.size).sum::<u64>().div_ceil(per.max(1)) as usize,
            ShardSizing::Rows(_) => {
                return Err(Error::config(format!(
                    "table `{}`: the shards of a files table are sized by count or by bytes \
                     (ShardSizing::Bytes, `--shard-bytes`): its rows are counted only by reading its files",
                    req.spec.name
                )));
            }
        };
        let incremental = req.mode.reads_incrementally() && req.from.is_some();
        Ok(Split {
            high: Position {
                cursor: None,
                files: marks,
                key: None,
            },
            no_new_data: incremental && to_read.is_empty(),
            files: Some(file_sets(to_read, n)),
            ..Split::default()
        })
    }

    async fn read(&self, req: ReadRequest<'_>) -> Result<Extract> {
        let spec = req.spec;
        let (_, format) = self.files_spec(spec)?;
        let format = format.clone();
        let (marks, to_read) = self.window_files(&req).await?;
        let incremental = req.mode.reads_incrementally();
        let from = if incremental { req.from } else { None };
        let stats = Arc::new(ExtractStats::default());
        // Only the new and changed files are read: their rows are not the source's.
        if from.is_some() {
            stats.count_is_partial.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        // A changed file is read again whole: into an appending target, without a cursor to
        // keep only its newer rows, its earlier rows arrive twice.
        if req.mode == LoadMode::Incremental && spec.cursor.is_empty() {
            for f in to_read
                .iter()
                .filter(|f| from.is_some_and(|p| p.files.contains_key(&f.rel)))
            {
                stats.warn(format!(
                    "file `{}` changed since it was loaded and is read again whole: its earlier rows are \
                     appended again (give the table a cursor column to keep only newer rows, or load it \
                     with UPSERT by primary key)",
                    f.rel
                ));
            }
        }
        let no_new_data = from.is_some() && to_read.is_empty();
        let schema = match &spec.schema {
            Some(s) => s.clone(),
            None if to_read.is_empty() => Arc::new(Schema::empty()),
            None => self.infer(spec, &to_read).await?,
        };
        for c in &spec.cursor {
            if !to_read.is_empty() && schema.field_with_name(c).is_err() {
                return Err(Error::ColumnNotFound {
                    table: spec.name.clone(),
                    column: c.clone(),
                });
            }
        }
        let low = if incremental {
            window::window_low(spec, from, None)
        } else {
            Low::Start
        };
        let ctx = DecodeContext {
            table: spec.name.clone(),
            schema: schema.clone(),
            batch_size: req.batch_size,
            bad_rows: spec.bad_rows,
            low,
            until: req.until.cloned(),
            spec: Arc::new(spec.clone()),
            stats: stats.clone(),
            rejects: self.rejects.clone(),
            run_id: req.run_id.to_string(),
        };
        let location = self.location.clone();
        let stream = futures::stream::iter(to_read)
            .map(move |f| {
                ExtractStats::add(&ctx.stats.files, 1);
                ExtractStats::add(&ctx.stats.bytes, f.meta.size);
                let read = TextRead {
                    table: ctx.table.clone(),
                    file: f.rel.clone(),
                    schema: ctx.schema.clone(),
                    batch_size: ctx.batch_size,
                    bad_rows: ctx.bad_rows,
                };
                match &format {
                    FileFormat::Csv(o) => text_stream(
                        formats::read_csv(location.clone(), f.meta, o.clone(), read),
                        ctx.clone(),
                        f.rel,
                    ),
                    FileFormat::JsonLines => {
                        text_stream(formats::read_json(location.clone(), f.meta, read), ctx.clone(), f.rel)
                    }
                    _ => parquet::stream(location.clone(), f, ctx.clone()),
                }
            })
            .flatten()
            .filter(|b| futures::future::ready(!matches!(b, Ok(b) if b.num_rows() == 0)));
        Ok(Extract {
            schema,
            stream: Box::pin(stream),
            high: Position {
                cursor: None,
                files: marks,
                key: None,
            },
            stats,
            no_new_data,
        })
    }
}
