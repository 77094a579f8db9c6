//! What to load: per-table specs.

use std::fmt;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use chrono::TimeDelta;

use crate::mode::LoadMode;
use crate::transform::Transform;

/// Where a table's rows come from.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum SourceRef {
    /// A table of a database source, schema-qualified if needed (`public.orders`).
    Table(String),
    /// A SQL query run by a database source (joins run in the database).
    Query(String),
    /// Files under a prefix of a file source's location.
    Files {
        /// The prefix, relative to the source's location (`landing/orders/`).
        prefix: String,
        /// How to read them.
        format: FileFormat,
    },
}

/// What to do with an input row that cannot be parsed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BadRows {
    /// Stop the table with [`crate::Error::MalformedRow`] naming file and line (the default).
    #[default]
    Fail,
    /// Write the row to a rejects file, count it in the report, and go on.
    Divert,
}

/// Which files under a file table's prefix make its rows ([`TableSpec::file_drops`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FileDrops {
    /// Every file under the prefix together holds the table (the default): files are added
    /// (and replaced) over time.
    #[default]
    Together,
    /// Each drop holds the whole table: a drop is one entry directly under the prefix (a
    /// file, or a folder with every file under it), and only the newest (by its newest file's
    /// last-modified time, then by name) is read. A key missing from it was deleted at the
    /// source ([`TableSpec::detect_deletes`]).
    Newest,
}

/// What an incremental run does when the target no longer holds what the watermark stands
/// for: the table or its schema dropped, the table truncated, or the target (or the
/// watermark store) restored from an older backup ([`TableSpec::on_target_lost`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TargetLost {
    /// Fail the table with [`crate::Error::TargetLost`], saying what disagrees (default).
    #[default]
    Fail,
    /// Reload the table in full this run (as `FULL`), with a warning in the report.
    Reload,
}

/// What incremental reads do with rows whose cursor columns are all NULL: no watermark can
/// say whether such a row is new, so the rule is stated, never guessed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum NullCursors {
    /// An incremental run that finds such rows fails before anything is written, with
    /// [`crate::Error::NullCursor`] naming the columns, the number of rows and this option
    /// (the default). A database source counts them in the read's snapshot when the cursor
    /// columns are nullable; the file source and the runner see them as they stream.
    #[default]
    Fail,
    /// Such rows are loaded by reads of the whole source only (`FULL`, `TRUNCATE_INSERT`,
    /// `APPEND`, and the first run of an incremental table when it is not chunked); filtered
    /// incremental reads leave them out. The report counts the ones it sees
    /// (`null_cursor_count`).
    WholeReadsOnly,
}

/// How an `UPSERT` puts a run's rows (collapsed to the latest per key) into the target.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MergeStrategy {
    /// Update the rows whose key exists, insert the others (`MERGE`, `ON CONFLICT DO UPDATE`);
    /// the default.
    #[default]
    UpdateInsert,
    /// Delete the target rows whose key arrives, then insert every arriving row (`DELETE
    /// USING` + `INSERT`, the Redshift habit of many tools).
    DeleteInsert,
    /// Insert only the rows whose key is new; existing rows are kept as they are.
    InsertOnly,
}

/// Options for CSV files.
#[derive(Clone, Debug, PartialEq)]
pub struct CsvOptions {
    /// Whether the first record is a header of column names (default true).
    pub header: bool,
    /// Field delimiter (default `,`).
    pub delimiter: u8,
    /// Quote character (default `"`).
    pub quote: u8,
    /// Field values read as NULL (default: the empty string and `NULL`).
    pub null_markers: Vec<String>,
    /// Infer plain-notation numbers with a fraction (`12.50`) as `Decimal128(38, s)`, exact,
    /// rather than `Float64` (default false, as Glue, Spark and DuckDB infer them).
    pub decimals: bool,
}

impl Default for CsvOptions {
    fn default() -> Self {
        CsvOptions {
            header: true,
            delimiter: b',',
            quote: b'"',
            null_markers: vec![String::new(), "NULL".to_string()],
            decimals: false,
        }
    }
}

/// The format of the files of a [`SourceRef::Files`] table.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum FileFormat {
    /// Delimited text.
    Csv(CsvOptions),
    /// One JSON object per line.
    JsonLines,
    /// Apache Parquet.
    Parquet,
}

impl FileFormat {
    /// CSV with a header, `,` and `"`.
    pub fn csv() -> Self {
        FileFormat::Csv(CsvOptions::default())
    }

    /// The file name endings this format reads. Text files may also be gzip-compressed
    /// (`.csv.gz`, `.jsonl.gz`; a gzip file is recognised by its bytes whatever its name); other
    /// compressions are refused, naming the file.
    pub fn extensions(&self) -> &'static [&'static str] {
        match self {
            FileFormat::Csv(_) => &[".csv", ".tsv", ".txt", ".csv.gz", ".tsv.gz", ".txt.gz"],
            FileFormat::JsonLines => &[".json", ".jsonl", ".ndjson", ".json.gz", ".jsonl.gz", ".ndjson.gz"],
            FileFormat::Parquet => &[".parquet", ".parq"],
        }
    }

    /// The compression a file named `name` declares that this workspace does not read
    /// (`zstd` for `a.csv.zst`), if it is a file of this format otherwise.
    pub fn refused_compression(&self, name: &str) -> Option<&'static str> {
        const REFUSED: [(&str, &str); 7] = [
            (".zst", "zstd"),
            (".zstd", "zstd"),
            (".bz2", "bzip2"),
            (".xz", "xz"),
            (".zip", "zip"),
            (".lz4", "lz4"),
            (".snappy", "snappy"),
        ];
        let name = name.to_ascii_lowercase();
        REFUSED.iter().find_map(|(suffix, kind)| {
            let base = name.strip_suffix(suffix)?;
            self.extensions().iter().any(|e| base.ends_with(e)).then_some(*kind)
        })
    }

    /// A short name (`csv`, `json`, `parquet`).
    pub fn name(&self) -> &'static str {
        match self {
            FileFormat::Csv(_) => "csv",
            FileFormat::JsonLines => "json",
            FileFormat::Parquet => "parquet",
        }
    }
}

/// What a custom query ([`TableSpec::from_query`]) writes where the window's lower end goes.
pub const QUERY_WATERMARK: &str = "{watermark}";

/// How a lake target is split into Hive-style partition folders.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Partitioning {
    /// No partition folders.
    #[default]
    None,
    /// `year=/month=/day=` from a date or timestamp column of the data.
    ByDate(String),
    /// `processing_year=/processing_month=/processing_day=` from the run's start time.
    ByProcessingDate,
    /// One `name=value` folder per key, outermost first: `date=2025-07-24/device_id=7`
    /// ([`crate::lake::partition`]).
    Columns(Vec<PartitionKey>),
}

impl Partitioning {
    /// Folders `name=value` of the given keys, outermost first.
    ///
    /// ```
    /// use etl_core::{PartitionKey, Partitioning};
    /// let p = Partitioning::columns([
    ///     PartitionKey::formatted("date", "order_date", "%Y-%m-%d"), // date=2025-07-24
    ///     PartitionKey::column("device_id"),                         // device_id=7
    /// ]);
    /// assert!(matches!(p, Partitioning::Columns(k) if k.len() == 2));
    /// ```
    pub fn columns(keys: impl IntoIterator<Item = PartitionKey>) -> Self {
        Partitioning::Columns(keys.into_iter().collect())
    }
}

/// One level of [`Partitioning::Columns`]: folders `name=value`, the value taken from
/// `column` — as it is (text, numbers, dates as `2025-07-24`), or a date or timestamp in a
/// strftime `format` (`%Y-%m-%d`, a zero-padded month `%m`, `%Y%m%d%H`). NULL and empty
/// values go to Hive's default partition; characters Hive escapes are written `%XX`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionKey {
    /// The folder's key (`date` in `date=2025-07-24`).
    pub name: String,
    /// The column whose values name the folders.
    pub column: String,
    /// A strftime format of a date or timestamp column; `None` for the value as it is.
    pub format: Option<String>,
}

impl PartitionKey {
    /// Folders `column=value` of a column's values.
    pub fn column(column: impl Into<String>) -> Self {
        let column = column.into();
        PartitionKey {
            name: column.clone(),
            column,
            format: None,
        }
    }

    /// Folders `name=…` of a date or timestamp `column` written in a strftime `format`:
    /// `PartitionKey::formatted("month", "order_date", "%m")` gives `month=07`.
    pub fn formatted(name: impl Into<String>, column: impl Into<String>, format: impl Into<String>) -> Self {
        PartitionKey {
            name: name.into(),
            column: column.into(),
            format: Some(format.into()),
        }
    }
}

/// One table of a pipeline: where it comes from, where it goes, and how.
///
/// ```
/// use etl_core::{FileFormat, LoadMode, Partitioning, TableSpec};
/// let orders = TableSpec::new("orders")
///     .from_files("landing/orders/", FileFormat::csv())
///     .mode(LoadMode::Incremental)
///     .primary_key(["order_id"])
///     .cursor(["updated_at"])
///     .partition_by(Partitioning::ByDate("order_date".into()));
/// assert_eq!(orders.target, "orders");
/// ```
#[derive(Clone)]
pub struct TableSpec {
    /// The table's name in the pipeline: the key of watermarks, reports and mode overrides.
    pub name: String,
    /// Where rows come from (default: the database table named `name`).
    pub source: SourceRef,
    /// The target table (default: the last part of `name`, split as
    /// [`crate::kit::sql::split_qualified`] does).
    pub target: String,
    /// The load mode (default `FULL`).
    pub mode: LoadMode,
    /// Primary key columns (needed by `UPSERT` and by [`TableSpec::keep_latest`]).
    pub primary_key: Vec<String>,
    /// Cursor columns of incremental reads: a row is new when any of them is past the
    /// watermark.
    pub cursor: Vec<String>,
    /// A window re-read behind the watermark, for late rows.
    pub lookback: Option<TimeDelta>,
    /// For a first run with no watermark: read only this far back instead of everything.
    pub initial_window: Option<TimeDelta>,
    /// Lake partitioning.
    pub partitioning: Partitioning,
    /// When false, a missing source table is skipped with a warning instead of failing.
    pub required: bool,
    /// Transforms applied to every batch, in order.
    pub transforms: Vec<Arc<dyn Transform>>,
    /// Keep only the latest row per primary key (by cursor, else by arrival order) within a
    /// run's window.
    pub keep_latest: bool,
    /// Add an `etl_processed_at` column holding the run's start time (default true).
    pub processed_at: bool,
    /// Bad input rows: fail (default) or divert to a rejects file.
    pub bad_rows: BadRows,
    /// A schema to read with instead of inferring one (file sources).
    pub schema: Option<SchemaRef>,
    /// Which files under a file table's prefix hold its rows (file sources).
    pub file_drops: FileDrops,
    /// Incremental reads in chunks of this many rows, in (cursor, primary key) order, each
    /// committed to the target and the watermark on its own (see [`TableSpec::chunk_rows`]).
    pub chunk_rows: Option<usize>,
    /// How `UPSERT` merges (warehouse sinks).
    pub merge: MergeStrategy,
    /// A column that marks a source row as deleted (true, or not NULL for other types): under
    /// `UPSERT` its key's target row is deleted instead of written.
    pub soft_delete: Option<String>,
    /// What incremental reads do with rows whose cursor columns are all NULL (default
    /// [`NullCursors::Fail`]).
    pub null_cursors: NullCursors,
    /// Whether an incremental database read ends its window below the start of the oldest
    /// transaction still in progress, so rows such a transaction commits later are read by
    /// the next run (default true; see [`TableSpec::wait_for_commits`]).
    pub wait_for_commits: bool,
    /// Rows are read only once their cursor is this much older than the database's clock
    /// (for cursors an application's clock sets; see [`TableSpec::settle`]).
    pub settle: Option<TimeDelta>,
    /// What an incremental run does with a target that lost its rows (default
    /// [`TargetLost::Fail`]).
    pub on_target_lost: TargetLost,
    /// Find rows deleted at the source and delete them from the target, after each run
    /// (see [`TableSpec::detect_deletes`]).
    pub deletes: Option<Deletes>,
    /// Compare source and target after each run and act on a mismatch (see
    /// [`TableSpec::reconcile`]).
    pub reconcile: Option<Reconcile>,
}

/// How deletes at the source are found and applied ([`TableSpec::detect_deletes`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Deletes {
    /// The largest share of the target's rows a run may delete (default 0.05: 5 %); more
    /// fails the table with [`crate::Error::MassDelete`] and deletes nothing.
    pub max_share: f64,
    /// About how many key ranges the comparison cuts the key column into (default 65 536).
    pub ranges: i64,
    /// Mark the deleted keys' rows in the target's `_etl_deleted_at` column (a timestamp,
    /// added to the table when missing) instead of deleting them (warehouse targets; a lake
    /// always marks, with tombstone rows). Marked rows are not the target's in later
    /// comparisons, and an UPSERT of the key clears its mark. Default false: hard deletes.
    pub mark: bool,
}

impl Default for Deletes {
    fn default() -> Self {
        Deletes {
            max_share: 0.05,
            ranges: 65_536,
            mark: false,
        }
    }
}

/// The column that marks a row deleted at the source ([`Deletes::mark`]; a lake's
/// tombstone rows carry it too).
pub const DELETED_AT: &str = "_etl_deleted_at";

/// What a run does when reconciliation finds the target unlike the source
/// ([`TableSpec::reconcile`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReconcilePolicy {
    /// Report the mismatched ranges (and a warning); the run succeeds.
    #[default]
    Report,
    /// Fail the table with [`crate::Error::Unreconciled`] before its watermark moves.
    Fail,
    /// Reload the mismatched key ranges from the source (UPSERT targets) and delete the
    /// keys the source does not hold, then check those ranges again.
    Repair,
}

/// How a table is reconciled after each run ([`TableSpec::reconcile`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Reconcile {
    /// What a mismatch does.
    pub policy: ReconcilePolicy,
    /// Columns whose content is compared besides the keys (empty: keys and counts only; at
    /// most [`crate::keys::MAX_CONTENT_COLUMNS`]).
    pub columns: Vec<String>,
    /// About how many key ranges the comparison cuts the key column into (default 65 536).
    pub ranges: i64,
    /// The largest share of the target a repair may delete (default 0.05); more fails
    /// with [`crate::Error::MassDelete`].
    pub max_share: f64,
}

impl Reconcile {
    /// Reconciliation with `policy`, comparing keys and counts.
    pub fn new(policy: ReconcilePolicy) -> Reconcile {
        Reconcile {
            policy,
            columns: Vec::new(),
            ranges: Deletes::default().ranges,
            max_share: Deletes::default().max_share,
        }
    }

    /// Also compares the content of these columns, per range and then per key.
    pub fn content<I, S>(mut self, columns: I) -> Reconcile
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.columns = columns.into_iter().map(Into::into).collect();
        self
    }
}

impl TableSpec {
    /// A spec for `name`, reading the source table of the same name in `FULL` mode.
    pub fn new(name: impl Into<String>) -> Self {
        let name = name.into();
        let target = crate::kit::sql::split_qualified(&name).pop().unwrap_or_default();
        TableSpec {
            source: SourceRef::Table(name.clone()),
            name,
            target,
            mode: LoadMode::Full,
            primary_key: Vec::new(),
            cursor: Vec::new(),
            lookback: None,
            initial_window: None,
            partitioning: Partitioning::None,
            required: true,
            transforms: Vec::new(),
            keep_latest: false,
            processed_at: true,
            bad_rows: BadRows::Fail,
            schema: None,
            file_drops: FileDrops::Together,
            chunk_rows: None,
            merge: MergeStrategy::default(),
            soft_delete: None,
            null_cursors: NullCursors::Fail,
            wait_for_commits: true,
            settle: None,
            on_target_lost: TargetLost::Fail,
            deletes: None,
            reconcile: None,
        }
    }

    /// Reads a database table (schema-qualified if needed: `public.orders`; a part holding a
    /// dot in double quotes: `sales."order.items"`, or see [`TableSpec::from_schema_table`]).
    pub fn from_table(mut self, table: impl Into<String>) -> Self {
        self.source = SourceRef::Table(table.into());
        self
    }

    /// Reads the database table `table` of schema (or MySQL database) `schema`, names taken as
    /// they are: dots and quotes in them are part of the name.
    ///
    /// ```
    /// use etl_core::{SourceRef, TableSpec};
    /// let spec = TableSpec::new("items").from_schema_table("sales", "order.items");
    /// assert_eq!(spec.source, SourceRef::Table(r#"sales."order.items""#.into()));
    /// ```
    pub fn from_schema_table(self, schema: &str, table: &str) -> Self {
        self.from_table(crate::kit::sql::join_qualified(&[schema, table]))
    }

    /// Reads the result of a SQL query.
    ///
    /// The query may name the watermark as [`QUERY_WATERMARK`] (`{watermark}`), as a Glue job's
    /// own predicate does (`order_date >= CAST({watermark} AS date) AND order_date >=
    /// CURRENT_DATE - 7 OR updated_at > {watermark}`): each run replaces it with the window's
    /// lower end — the stored cursor (less the lookback), or on a first run the least value of
    /// the cursor's type — written as a typed literal of the dialect from the stored value
    /// (never text from outside). The query then places the lower end itself; the library
    /// adds only the upper end (the high-water mark of the run's snapshot, held below
    /// transactions in flight), and the watermark moves to the greatest cursor value the query
    /// returned (never back). Such a table cannot be reconciled or have its deletes found (a
    /// window is not the whole source).
    ///
    /// ```
    /// use etl_core::{QUERY_WATERMARK, TableSpec};
    /// let spec = TableSpec::new("orders")
    ///     .from_query("SELECT * FROM orders WHERE updated_at > {watermark} OR status = 'open'")
    ///     .cursor(["updated_at"]);
    /// assert_eq!(QUERY_WATERMARK, "{watermark}");
    /// ```
    pub fn from_query(mut self, sql: impl Into<String>) -> Self {
        self.source = SourceRef::Query(sql.into());
        self
    }

    /// Reads files under `prefix` of a file source.
    pub fn from_files(mut self, prefix: impl Into<String>, format: FileFormat) -> Self {
        self.source = SourceRef::Files {
            prefix: prefix.into(),
            format,
        };
        self
    }

    /// Sets the target table (default: the table's name). The SQL sinks take `schema.table`
    /// as a table of that schema (created when missing) instead of the sink's own; the lake
    /// names the table's folder with it.
    pub fn target(mut self, target: impl Into<String>) -> Self {
        self.target = target.into();
        self
    }

    /// Sets the load mode.
    pub fn mode(mut self, mode: LoadMode) -> Self {
        self.mode = mode;
        self
    }

    /// Sets the primary key columns.
    pub fn primary_key<I: IntoIterator<Item = S>, S: Into<String>>(mut self, cols: I) -> Self {
        self.primary_key = cols.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the cursor columns.
    pub fn cursor<I: IntoIterator<Item = S>, S: Into<String>>(mut self, cols: I) -> Self {
        self.cursor = cols.into_iter().map(Into::into).collect();
        self
    }

    /// Re-reads this much behind the watermark on every incremental run.
    pub fn lookback(mut self, window: TimeDelta) -> Self {
        self.lookback = Some(window);
        self
    }

    /// On a first run, reads only this far back.
    pub fn initial_window(mut self, window: TimeDelta) -> Self {
        self.initial_window = Some(window);
        self
    }

    /// Sets the lake partitioning.
    pub fn partition_by(mut self, p: Partitioning) -> Self {
        self.partitioning = p;
        self
    }

    /// Marks the table optional: skipped with a warning when the source lacks it.
    pub fn optional(mut self) -> Self {
        self.required = false;
        self
    }

    /// Appends a transform.
    pub fn transform(mut self, t: impl Transform + 'static) -> Self {
        self.transforms.push(Arc::new(t));
        self
    }

    /// Keeps only the latest row per primary key within each run.
    pub fn keep_latest(mut self) -> Self {
        self.keep_latest = true;
        self
    }

    /// Whether to add the `etl_processed_at` column.
    pub fn processed_at(mut self, on: bool) -> Self {
        self.processed_at = on;
        self
    }

    /// What to do with rows that cannot be parsed.
    pub fn bad_rows(mut self, policy: BadRows) -> Self {
        self.bad_rows = policy;
        self
    }

    /// Which files under the prefix hold the table (file sources): all of them together
    /// (default), or only the newest drop, each drop holding the whole table.
    ///
    /// ```
    /// use etl_core::{FileDrops, FileFormat, TableSpec};
    /// // A full extract lands under `exports/customers/<day>/` every day.
    /// let spec = TableSpec::new("customers")
    ///     .from_files("exports/customers", FileFormat::csv())
    ///     .file_drops(FileDrops::Newest);
    /// assert_eq!(spec.file_drops, FileDrops::Newest);
    /// ```
    pub fn file_drops(mut self, drops: FileDrops) -> Self {
        self.file_drops = drops;
        self
    }

    /// Reads with this schema instead of inferring one.
    pub fn schema(mut self, schema: SchemaRef) -> Self {
        self.schema = Some(schema);
        self
    }

    /// How `UPSERT` merges into warehouse targets (default [`MergeStrategy::UpdateInsert`]).
    pub fn merge_strategy(mut self, strategy: MergeStrategy) -> Self {
        self.merge = strategy;
        self
    }

    /// Names the soft-delete column: under `UPSERT`, a row where it is true (or, for other
    /// types, not NULL) deletes its key's target row.
    pub fn soft_delete(mut self, column: impl Into<String>) -> Self {
        self.soft_delete = Some(column.into());
        self
    }

    /// What incremental reads do with rows whose cursor columns are all NULL (see
    /// [`NullCursors`]). A row with at least one cursor value is read whenever one of its
    /// values is past the watermark, so a second cursor column that is always set
    /// (`.cursor(["updated_at", "created_at"])`) is often the better answer.
    pub fn null_cursors(mut self, rule: NullCursors) -> Self {
        self.null_cursors = rule;
        self
    }

    /// Whether incremental database reads wait for transactions in progress (default true).
    ///
    /// A row stamped by a transaction that began before a run's snapshot but commits after it
    /// carries a cursor value below the run's high-water mark, so the next run, which starts
    /// past that mark, would never read it. With this on, the database sources end the
    /// window below the start of the oldest transaction in progress when the read looked
    /// (and below the database's clock), and the report's
    /// [`crate::TableReport::held_back`] says by how much and why; the rows past that point
    /// are read by the next run, once. Integer and text cursors carry no time and are not
    /// held: a row committed late below such a watermark is missed by incremental reads
    /// (prefer a timestamp the database stamps).
    ///
    /// Turn it off only for a table that no transaction writes while runs read it.
    pub fn wait_for_commits(mut self, on: bool) -> Self {
        self.wait_for_commits = on;
        self
    }

    /// Reads rows only once their cursor value is `age` older than the database's clock:
    /// for date and timestamp cursors that an application sets from its own clock (which
    /// the database cannot relate to its transactions), the age bounds how late a row may
    /// commit after it was stamped. Needs a date or timestamp cursor.
    pub fn settle(mut self, age: TimeDelta) -> Self {
        self.settle = Some(age);
        self
    }

    /// What an incremental run does when the target no longer holds what the watermark
    /// stands for (see [`TargetLost`]): before reading, the runner checks that the sink's
    /// checkpoint is the run the watermark records and that the target table exists and is
    /// not empty after a run wrote rows to it.
    pub fn on_target_lost(mut self, policy: TargetLost) -> Self {
        self.on_target_lost = policy;
        self
    }

    /// After each run, finds the rows deleted at the source and deletes them from the
    /// target, without CDC: the primary key's ranges are compared by digests computed inside
    /// the source and the target ([`crate::keys`]), and only the ranges that differ are read
    /// down to their keys. Needs a primary key of one integer column, a source and a sink
    /// that compare keys (the database sources; the Postgres, Redshift and Snowflake sinks).
    /// Nothing is deleted when the run failed, and more than `deletes.max_share` of the
    /// target is refused ([`crate::Error::MassDelete`]). The report counts them
    /// (`deleted_count`, `keys`).
    pub fn detect_deletes(mut self, deletes: Deletes) -> Self {
        self.deletes = Some(deletes);
        self
    }

    /// After each run, proves the target holds what the source holds, or says where it does
    /// not: the primary key's ranges are compared by digests computed inside each system —
    /// counts and keys always, the content of `reconcile.columns` where named — and ranges
    /// that differ are narrowed to their keys: missing from the target, extra in it, or
    /// changed ([`crate::keys`]). The report's `reconciliation` says `reconciled` or lists the
    /// mismatched ranges; the policy then reports, fails the table before its watermark
    /// moves, or repairs the target by reloading only those ranges (an UPSERT target) and
    /// deleting the extra keys. Needs what [`TableSpec::detect_deletes`] needs; with both,
    /// one comparison serves the two.
    pub fn reconcile(mut self, reconcile: Reconcile) -> Self {
        self.reconcile = Some(reconcile);
        self
    }

    /// Reads an incremental window in chunks of `rows` rows, ordered by (cursor, primary
    /// key), and commits each chunk to the target and the watermark before reading the next.
    /// The watermark then holds the (cursor, key) pair of the last row committed: rows that
    /// share a cursor value are split between chunks without loss or repetition, and a run
    /// that dies part way resumes at the first chunk not committed.
    ///
    /// Needs one cursor column, a primary key, a source that reads in chunks (the database
    /// sources), and no lookback. Chunked reads never read rows whose cursor is NULL (see
    /// [`NullCursors`]).
    /// Modes that read the whole source ignore it.
    pub fn chunk_rows(mut self, rows: usize) -> Self {
        self.chunk_rows = Some(rows.max(1));
        self
    }
}

impl fmt::Debug for TableSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TableSpec")
            .field("name", &self.name)
            .field("source", &self.source)
            .field("target", &self.target)
            .field("mode", &self.mode)
            .field("primary_key", &self.primary_key)
            .field("cursor", &self.cursor)
            .field("partitioning", &self.partitioning)
            .field("required", &self.required)
            .field("transforms", &self.transforms.len())
            .finish_non_exhaustive()
    }
}
