//! What the SQL warehouse sinks (Postgres, Redshift, Snowflake) share: the target's name,
//! a session, the checkpoint table, the statements per dialect, column types, Parquet staging,
//! and the one commit sequence each sink fills in with what is its own.
//!
//! # The commit sequence
//!
//! ```text
//!  before the transaction   Snowflake: every DDL and the load (its DDL commits an open transaction)
//!  begin                    Postgres: open since the run's first row; Redshift: SERIALIZABLE
//!  checkpoint               compare-and-swap on the run the run started from, or ConcurrentRun
//!  load                     Redshift: staging table and COPY; Postgres: its watermark row
//!  the mode's statements    nothing read: FULL and TRUNCATE_INSERT empty an existing target
//!  count                    the target's rows after the run
//!  commit                   or, on any error, rollback: target and checkpoint as they were
//! ```

pub(crate) mod checkpoints;
pub(crate) mod keys;
pub(crate) mod session;
#[cfg(any(feature = "redshift", feature = "snowflake"))]
pub(crate) mod stage;
pub(crate) mod statements;
mod types;

use async_trait::async_trait;
use etl_core::kit::sql::{Dialect, split_qualified};
use etl_core::{Checkpoint, CommitSummary, LoadMode, Result, TableSpec, TargetState};

pub(crate) use self::checkpoints::Checkpoints;
pub(crate) use self::session::{Session, SqlValue};
pub(crate) use self::types::add_columns;
pub use self::types::column_type;
#[cfg(feature = "postgres")]
pub(crate) use self::types::create_table;
#[cfg(feature = "postgres")]
pub(crate) use self::types::micros_per;

/// Where a run writes: the target table, in the sink's schema unless the spec's target names
/// one (`analytics.orders`), both as the warehouse stores them.
#[derive(Clone, Debug)]
pub(crate) struct Target {
    dialect: Dialect,
    /// Whether names are upper-cased (Snowflake's folding).
    upper: bool,
    /// The schema, as stored (`information_schema` spells it so).
    pub(crate) schema: String,
    /// The table, as stored.
    pub(crate) name: String,
    /// `"schema"."table"`.
    pub(crate) qualified: String,
}

impl Target {
    /// The spec's `target` (`orders`, or `analytics.orders`) in `schema`; with `upper`, both
    /// names upper-cased (as Snowflake folds unquoted names).
    pub(crate) fn new(dialect: Dialect, schema: &str, target: &str, upper: bool) -> Target {
        let fold = |s: String| if upper { s.to_uppercase() } else { s };
        let mut parts = split_qualified(target);
        let name = fold(parts.pop().unwrap_or_default());
        let schema = fold(parts.pop().unwrap_or_else(|| schema.to_string()));
        Target {
            qualified: format!("{}.{}", dialect.quote(&schema), dialect.quote(&name)),
            dialect,
            upper,
            schema,
            name,
        }
    }

    /// A column's name as the warehouse stores it (upper-cased where names are).
    pub(crate) fn fold(&self, column: &str) -> String {
        if self.upper {
            column.to_uppercase()
        } else {
            column.to_string()
        }
    }

    /// The table's own name, quoted.
    #[cfg(feature = "postgres")]
    pub(crate) fn quoted_name(&self) -> String {
        self.dialect.quote(&self.name)
    }

    /// A table of the run's own beside the target, `_etl_<kind>_<run>_<target>` (folded as
    /// the target is), cut to `max_bytes` (the warehouse's identifier limit: 63 in Postgres
    /// and Redshift); schema-qualified and quoted.
    pub(crate) fn scratch(&self, kind: &str, run_id: &str, max_bytes: usize) -> String {
        // Letters, digits and `_` only: a plain name every engine (and emulator) takes, for a
        // run id such as a chunk's or a repair's.
        let run: String = run_id
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        let mut name = format!("_etl_{kind}_{run}_{}", self.name);
        if self.upper {
            name = name.to_uppercase();
        }
        while name.len() > max_bytes {
            name.pop();
        }
        format!("{}.{}", self.dialect.quote(&self.schema), self.dialect.quote(&name))
    }

    /// Whether the table exists.
    pub(crate) async fn exists(&self, db: &dyn Session) -> Result<bool> {
        let n = db
            .text_with(
                "SELECT count(*) FROM information_schema.tables WHERE table_schema = $1 AND table_name = $2",
                &[SqlValue::Text(self.schema.clone()), SqlValue::Text(self.name.clone())],
            )
            .await?;
        Ok(n.is_some_and(|n| n.trim() != "0"))
    }

    /// Whether the table has the deletion-mark column ([`etl_core::Deletes::mark`]).
    pub(crate) async fn has_marks(&self, db: &dyn Session) -> Result<bool> {
        let n = db
            .text_with(
                "SELECT count(*) FROM information_schema.columns WHERE table_schema = $1 AND table_name = $2 \
                 AND column_name = $3",
                &[
                    SqlValue::Text(self.schema.clone()),
                    SqlValue::Text(self.name.clone()),
                    SqlValue::Text(self.fold(etl_core::DELETED_AT)),
                ],
            )
            .await?;
        Ok(n.is_some_and(|n| n.trim() != "0"))
    }

    /// What the table holds ([`etl_core::Sink::target_state`]): whether it exists, and
    /// whether it has a row (one row read, never a count).
    pub(crate) async fn state(&self, db: &dyn Session) -> Result<TargetState> {
        if !self.exists(db).await? {
            return Ok(TargetState::Missing);
        }
        let any = db
            .text_with(&format!("SELECT 1 FROM {} LIMIT 1", self.qualified), &[])
            .await?;
        Ok(if any.is_some() {
            TargetState::Holds
        } else {
            TargetState::Empty
        })
    }
}

/// What every warehouse run knows of itself.
pub(crate) struct RunContext {
    pub(crate) pipeline: String,
    pub(crate) spec: TableSpec,
    pub(crate) mode: LoadMode,
    /// The checkpoint the run started from.
    pub(crate) last_checkpoint: Option<String>,
    pub(crate) target: Target,
    pub(crate) checkpoints: Checkpoints,
}

impl RunContext {
    /// The context of the run `req` begins, writing `target`.
    pub(crate) fn new(req: &etl_core::WriteRequest<'_>, target: Target, checkpoints: Checkpoints) -> Self {
        RunContext {
            pipeline: req.pipeline.to_string(),
            spec: req.spec.clone(),
            mode: req.mode,
            last_checkpoint: req.last_checkpoint.map(str::to_string),
            target,
            checkpoints,
        }
    }
}

/// A table's run, as each warehouse sink supplies it to [`commit`].
#[async_trait]
pub(crate) trait Run: Send + Sync {
    /// The run's connection.
    fn session(&self) -> &dyn Session;

    /// The run's table, mode and checkpoints.
    fn context(&self) -> &RunContext;

    /// Work that must precede the transaction.
    async fn before_transaction(&self) -> Result<()> {
        Ok(())
    }

    /// Opens the run's transaction.
    async fn begin(&self) -> Result<()>;

    /// Work inside the transaction after the checkpoint, before the mode's statements.
    async fn load(&self, _checkpoint: &Checkpoint) -> Result<()> {
        Ok(())
    }

    /// Whether the run read any row.
    fn loaded(&self) -> bool;

    /// The mode's statements over what the run loaded (`target_rows` is filled in after).
    async fn apply(&self) -> Result<CommitSummary>;

    /// How a replacing mode empties the target when nothing was read.
    fn empty_target(&self) -> String {
        format!("DELETE FROM {}", self.context().target.qualified)
    }
}

/// The one commit sequence (see the module's docs); on any error the transaction is rolled
/// back and the error returned.
pub(crate) async fn commit(run: &dyn Run, checkpoint: &Checkpoint) -> Result<CommitSummary> {
    let db = run.session();
    let result = async {
        run.before_transaction().await?;
        run.begin().await?;
        let cx = run.context();
        cx.checkpoints
            .store(
                db,
                &cx.pipeline,
                &cx.spec.name,
                cx.last_checkpoint.as_deref(),
                checkpoint,
            )
            .await?;
        run.load(checkpoint).await?;
        let count = format!("SELECT count(*) FROM {}", cx.target.qualified);
        // After a load the target exists: it is created when missing.
        let loaded = run.loaded();
        let exists = loaded || cx.target.exists(db).await?;
        let mut summary = if loaded {
            run.apply().await?
        } else if cx.mode.replaces_target() && exists {
            let deleted = db.count(&count).await?;
            db.exec(&run.empty_target()).await?;
            CommitSummary {
                deleted,
                ..CommitSummary::default()
            }
        } else {
            CommitSummary::default()
        };
        summary.target_rows = if exists { Some(db.count(&count).await?) } else { None };
        db.exec("COMMIT").await?;
        tracing::debug!(table = %cx.spec.name, target = %cx.target.qualified, ?summary, "warehouse commit");
        Ok(summary)
    }
    .await;
    if result.is_err() {
        // Nothing of the run stays: its tables, rows and checkpoint go with the rollback.
        let _ = db.exec("ROLLBACK").await;
    }
    result
}

/// Adds the source columns the target lacks, given its `existing` columns (name, type as the
/// warehouse names it); refuses a column whose type the target cannot hold.
pub(crate) async fn evolve(
    run: &dyn Run,
    dialect: Dialect,
    existing: &[(String, String)],
    fields: &arrow::datatypes::Fields,
    upper: bool,
) -> Result<()> {
    let cx = run.context();
    for alter in add_columns(dialect, &cx.spec.name, &cx.target.qualified, existing, fields, upper)? {
        run.session().exec(&alter).await?;
    }
    Ok(())
}

/// The mode's statements over a loaded staging table (Redshift, Snowflake): FULL and
/// TRUNCATE_INSERT empty the target and insert, UPSERT merges the collapsed rows (see
/// [`merge`]), the others insert. A FULL that swaps tables is the caller's.
#[cfg(any(feature = "redshift", feature = "snowflake"))]
pub(crate) async fn apply_staged(
    run: &dyn Run,
    st: &statements::Statements<'_>,
    staged_rows: u64,
) -> Result<CommitSummary> {
    let db = run.session();
    let insert = st.insert_all(&st.target, &st.stage);
    Ok(match run.context().mode {
        LoadMode::Full | LoadMode::TruncateInsert => {
            let deleted = db.exec(&run.empty_target()).await?;
            CommitSummary {
                inserted: db.exec(&insert).await?,
                deleted,
                ..CommitSummary::default()
            }
        }
        LoadMode::Upsert => merge(run, st, staged_rows).await?,
        LoadMode::Append | LoadMode::Incremental => CommitSummary {
            inserted: db.exec(&insert).await?,
            ..CommitSummary::default()
        },
    })
}

/// UPSERT over the staged rows already collapsed to the latest per key (`st.latest`): soft
/// deletes, then the spec's strategy. Counts: updated = collapsed rows whose key the target
/// holds, inserted = the rest (insert-only: what its statement inserted).
#[cfg(any(feature = "redshift", feature = "snowflake"))]
async fn merge(run: &dyn Run, st: &statements::Statements<'_>, staged_rows: u64) -> Result<CommitSummary> {
    let db = run.session();
    let latest = db.count(&format!("SELECT count(*) FROM {}", st.latest)).await?;
    let (mut deleted, mut dropped) = (0, 0);
    if let Some([target, staged]) = st.soft_delete()? {
        deleted = db.exec(&target).await?;
        dropped = db.exec(&staged).await?;
    }
    let insert_only = st.spec.merge == etl_core::MergeStrategy::InsertOnly;
    let updated = if insert_only {
        0
    } else {
        db.count(&st.matching()).await?
    };
    let mut last = 0;
    for s in st.merge() {
        last = db.exec(&s).await?;
    }
    if run.context().target.has_marks(db).await? {
        db.exec(&st.clear_marks(&st.latest)).await?;
    }
    Ok(CommitSummary {
        inserted: if insert_only { last } else { latest - dropped - updated },
        updated,
        deleted,
        collapsed: staged_rows - latest,
        ..CommitSummary::default()
    })
}

/// UPSERT's checks and collapse before [`apply_staged`]: a NULL key is refused, naming how
/// many rows have one; then the staged rows are collapsed into `st.latest`.
#[cfg(any(feature = "redshift", feature = "snowflake"))]
pub(crate) async fn collapse_staged(
    run: &dyn Run,
    st: &statements::Statements<'_>,
    connector: &'static str,
) -> Result<()> {
    let db = run.session();
    let nulls = db.count(&st.null_keys()).await?;
    if nulls > 0 {
        return Err(etl_core::Error::null_key(
            connector,
            db.table(),
            nulls,
            &st.spec.primary_key,
        ));
    }
    db.exec(&st.collapse()).await?;
    Ok(())
}
