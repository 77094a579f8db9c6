//! Shard plans: one run of one table split into shards that stage-only workers run anywhere,
//! and one commit that makes every shard visible together and moves the watermark once.
//!
//! ```text
//!  plan:   the window (stored position, high-water mark], split by key range ─► plan.json
//!  shards: each anywhere, in any order, any number of times:
//!          read the window ∩ its key range ─► stage ─► shards/<index>.json (created once)
//!  commit: every shard's manifest there ─► one sink commit with the checkpoint ─► watermark
//! ```
//!
//! The plan is a JSON document with everything a worker needs and nothing secret: the
//! pipeline and table it runs (each worker builds the same pipeline, from code or from the
//! same configuration file, whose secrets are references), the window and the key range of
//! each shard. It lives in a plan directory ([`PlanDir`]) on any object store, beside the
//! shards' manifests.
//!
//! # What a plan guarantees
//! The high-water mark is taken once, by the planner, held below transactions still in
//! progress as a run's is ([`crate::TableSpec::wait_for_commits`]), and every shard reads up
//! to it and no further: in the incremental modes each row is read by this run or by the
//! next, once, however long the shards take. Each shard reads its key range in a snapshot of
//! its own ([`Guarantee::Window`]): a row changed while the shards run is read as it was when
//! its shard read it, and its change (a cursor past the plan's high-water mark) by the next
//! run. A shard read twice (a retried worker) leaves one manifest: the first one recorded;
//! the other attempt's staged data is discarded. Staged data of attempts that never recorded
//! a manifest is never committed; the sink deletes it after its next commit (the Delta sink's
//! data files of such an attempt are left to `VACUUM`, as a dead run's are).
//!
//! A plan of a whole pipeline ([`PipelinePlan`]) is one such plan per table, their shards
//! numbered together so that one engine job runs them all; its commit commits each table's
//! plan, as a run commits each table.
//!
//! The Pipeline methods: [`crate::Pipeline::plan_shards`] (one table),
//! [`crate::Pipeline::plan_pipeline`] (several), [`crate::Pipeline::run_shard`],
//! [`crate::Pipeline::commit_shards`].

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::lake::Column;
use crate::location::Location;
use crate::mode::LoadMode;
use crate::position::{CursorValue, Position};
use crate::report::HeldBack;

/// The version of the plan documents this build writes and reads.
pub const PLAN_FORMAT: u32 = 1;

/// How many shards a plan makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShardSizing {
    /// This many shards (at least one).
    Count(usize),
    /// As many shards as hold about this many rows each (the source counts the window).
    Rows(u64),
    /// As many shards as hold about this many bytes each: of files, by their sizes; of a
    /// database table, by its rows in the window times a mean row size sampled from the
    /// table.
    Bytes(u64),
}

/// How a source splits a read into shards ([`crate::Source::split`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Split {
    /// The window's high-water mark, as a read taken now would end it: every shard reads up
    /// to it.
    pub high: Position,
    /// How far, and why, the high-water mark was held below what the source holds.
    pub held_back: Option<HeldBack>,
    /// Nothing is new past the stored position: the plan has no shard.
    pub no_new_data: bool,
    /// The shards' key intervals of the one integer primary key: sorted, disjoint,
    /// inclusive, and together covering every key (the first starts at `i64::MIN`, the last
    /// ends at `i64::MAX`).
    pub keys: Vec<(i64, i64)>,
    /// Instead of key intervals, file sets (a files source): each shard reads its files,
    /// every key in them; together they are the window's new and changed files, each once.
    pub files: Option<Vec<Vec<String>>>,
    /// Why the window is one shard that reads it whole (`keys` is then all of `i64`): the
    /// table cannot be split by key. A plan of one table refuses it with this reason; a plan
    /// of a whole pipeline ([`crate::Pipeline::plan_pipeline`]) keeps the one shard.
    pub unsplit: Option<String>,
}

/// Splits the keys `min..=max` into `n` intervals of equal width covering all of `i64`
/// (rows inserted past either end after planning still belong to a shard).
pub fn key_intervals(min: i64, max: i64, n: usize) -> Vec<(i64, i64)> {
    let (min, max) = (min.min(max), min.max(max));
    let span = (max as i128 - min as i128 + 1) as u128;
    let n = (n.max(1) as u128).min(span) as usize;
    let width = span.div_ceil(n as u128) as i128;
    (0..n)
        .map(|i| {
            let lo = if i == 0 {
                i64::MIN
            } else {
                (min as i128 + width * i as i128) as i64
            };
            let hi = if i + 1 == n {
                i64::MAX
            } else {
                (min as i128 + width * (i as i128 + 1) - 1) as i64
            };
            (lo, hi)
        })
        .collect()
}

/// What every shard of a plan reads in common, and why that is consistent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Guarantee {
    /// Every shard reads the plan's window `(from, high]`, its key range in a snapshot of its
    /// own (see the [module docs](self)).
    Window,
}

/// The state of the table a plan starts from: the watermark it read past.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanBase {
    /// The watermark's generation.
    pub generation: u64,
    /// The run that committed it.
    pub run_id: String,
}

/// One shard of a plan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    /// Its index in the plan, from 0.
    pub index: usize,
    /// The interval of the primary key it reads, inclusive.
    pub keys: (i64, i64),
    /// The files it reads, relative to the source's location (a files source's shard; its
    /// keys are then all of them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<Vec<String>>,
}

/// One run of one table, split into shards ([`crate::Pipeline::plan_shards`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ShardPlan {
    /// [`PLAN_FORMAT`] of the build that wrote it.
    pub format: u32,
    /// The run's id: the commit's checkpoint and the watermark name it.
    pub id: String,
    /// The pipeline.
    pub pipeline: String,
    /// The table (its spec's name).
    pub table: String,
    /// The mode of the run.
    pub mode: LoadMode,
    /// When it was planned (the run's start: file names, processing-date partitions).
    pub planned_at: DateTime<Utc>,
    /// The watermark the run reads past (`None`: a first run).
    pub base: Option<PlanBase>,
    /// The run of the sink's last checkpoint when planned: the commit happens only if it is
    /// still the last.
    pub last_checkpoint: Option<String>,
    /// Where the window starts (`None`: from the start).
    pub from: Option<Position>,
    /// Where it ends: every shard reads up to this and no further.
    pub high: Position,
    /// How far, and why, the window was held below what the source held.
    pub held_back: Option<HeldBack>,
    /// What the shards read in common.
    pub guarantee: Guarantee,
    /// Why the table is one shard that reads the whole window (it cannot be split by key: a
    /// table of a [`PipelinePlan`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unsplit: Option<String>,
    /// The shards (none: nothing was new).
    pub shards: Vec<Shard>,
}

/// A run of several tables of one pipeline as shards ([`crate::Pipeline::plan_pipeline`]):
/// one [`ShardPlan`] per table, each committed as its own, as a run commits each table. Their
/// shards are numbered together, the first table's from 0 and each next table's after the
/// one before's, so that one engine job of [`PipelinePlan::shard_count`] tasks runs them all
/// (`etl shard --index N` takes the pipeline-wide N).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PipelinePlan {
    /// [`PLAN_FORMAT`] of the build that wrote it.
    pub format: u32,
    /// The plan's id (each table's plan has its own: its run's).
    pub id: String,
    /// The pipeline.
    pub pipeline: String,
    /// When it was planned.
    pub planned_at: DateTime<Utc>,
    /// The tables' plans, in the pipeline's order.
    pub tables: Vec<ShardPlan>,
}

impl PipelinePlan {
    /// How many shards the tables have together.
    pub fn shard_count(&self) -> usize {
        self.tables.iter().map(|t| t.shards.len()).sum()
    }

    /// Which table's plan (its position in [`PipelinePlan::tables`]) and which of its shards
    /// the pipeline-wide shard `index` is; `None` past the last.
    pub fn locate(&self, index: usize) -> Option<(usize, usize)> {
        let mut first = 0;
        for (t, plan) in self.tables.iter().enumerate() {
            if index < first + plan.shards.len() {
                return Some((t, index - first));
            }
            first += plan.shards.len();
        }
        None
    }

    /// The pipeline-wide index of the first shard of the table plan at `position`.
    pub fn first_index(&self, position: usize) -> usize {
        self.tables[..position.min(self.tables.len())]
            .iter()
            .map(|t| t.shards.len())
            .sum()
    }
}

/// What a shard staged, recorded once per shard ([`PlanDir::record`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ShardManifest {
    /// The plan.
    pub plan: String,
    /// The shard's index.
    pub index: usize,
    /// The attempt that staged it (a retried shard has several; one records).
    pub attempt: String,
    /// Rows read.
    pub extracted: u64,
    /// Rows staged.
    pub written: u64,
    /// Rows dropped for a later row of the same key ([`crate::TableSpec::keep_latest`]).
    #[serde(default)]
    pub collapsed: u64,
    /// Rows diverted to a rejects file.
    #[serde(default)]
    pub rejected: u64,
    /// Bytes staged.
    pub bytes: u64,
    /// Files staged.
    pub files: u64,
    /// The greatest cursor value read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_cursor: Option<CursorValue>,
    /// What the sink staged, as it describes it to its own commit
    /// ([`crate::Staged::manifest`]).
    pub staged: serde_json::Value,
    /// When it was recorded.
    pub recorded_at: DateTime<Utc>,
}

/// The staged writes of a plan's shards ([`crate::Staged::manifest`], in index order) as the
/// sink's own type: what a [`crate::ShardSink::commit_shards`] reads first.
///
/// # Errors
/// [`Error::Metadata`] naming the shard whose description does not parse.
pub fn read_staged<T: serde::de::DeserializeOwned>(run_id: &str, staged: Vec<serde_json::Value>) -> Result<Vec<T>> {
    staged
        .into_iter()
        .enumerate()
        .map(|(i, value)| {
            serde_json::from_value(value).map_err(|e| Error::Metadata {
                path: format!("the manifest of shard {i} of run `{run_id}`"),
                message: e.to_string(),
            })
        })
        .collect()
}

/// The one set of columns the shards of run `run_id` staged (`None` for a shard that staged
/// no row); `None` when no shard staged a row: what a [`crate::ShardSink::commit_shards`]
/// creates its target or staging table from.
///
/// # Errors
/// [`Error::Config`] when two shards staged other columns (the source table changed while
/// the shards ran).
pub fn agreed_columns(
    table: &str,
    run_id: &str,
    staged: impl IntoIterator<Item = Option<Vec<Column>>>,
) -> Result<Option<Vec<Column>>> {
    let mut agreed: Option<Vec<Column>> = None;
    for columns in staged.into_iter().flatten() {
        match &agreed {
            None => agreed = Some(columns),
            Some(a) if *a == columns => {}
            Some(_) => {
                return Err(Error::config(format!(
                    "table `{table}`: the shards of run `{run_id}` staged other columns than each other (the \
                     source table changed while the shards ran); plan the run again"
                )));
            }
        }
    }
    Ok(agreed)
}

/// What [`crate::Pipeline::run_shard`] did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ShardOutcome {
    /// The shard's manifest: this attempt's, or the one an earlier attempt recorded.
    pub manifest: ShardManifest,
    /// Whether this attempt recorded it (false: the shard had run already; what this attempt
    /// staged, if anything, was discarded).
    pub recorded: bool,
}

/// The directory of one plan: `plan.json`, `shards/<index>.json`, on any object store; or,
/// for a [`PipelinePlan`], `pipeline.json` and one such directory per table under `tables/`.
///
/// ```
/// # async fn demo(plan: etl_core::shard::ShardPlan) -> etl_core::Result<()> {
/// use etl_core::shard::PlanDir;
/// let plans = etl_core::Location::local(std::env::temp_dir().join("etl-doc-plans"))?;
/// let dir = PlanDir::create(&plans, &plan).await?; // plans/<plan id>/plan.json
/// assert_eq!(dir.plan().await?.id, plan.id);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct PlanDir {
    location: Location,
}

const PLAN_FILE: &str = "plan.json";
const PIPELINE_FILE: &str = "pipeline.json";

impl PlanDir {
    /// The plan directory at `location` (made by [`PlanDir::create`] or
    /// [`PlanDir::create_pipeline`]).
    pub fn new(location: Location) -> Self {
        PlanDir { location }
    }

    /// Writes `plan` into a new directory named by its id under `plans`.
    ///
    /// # Errors
    /// [`Error::Config`] when that directory holds a plan already; [`Error::ObjectStore`].
    pub async fn create(plans: &Location, plan: &ShardPlan) -> Result<PlanDir> {
        let dir = PlanDir::new(plans.child(&plan.id));
        dir.create_file(PLAN_FILE, plan).await?;
        Ok(dir)
    }

    /// Writes a pipeline's plan into a new directory named by its id under `plans`: each
    /// table's plan first, in a directory of its own ([`PlanDir::table`]), then
    /// `pipeline.json`, so that a worker that finds the one finds the others.
    ///
    /// # Errors
    /// As [`PlanDir::create`].
    pub async fn create_pipeline(plans: &Location, plan: &PipelinePlan) -> Result<PlanDir> {
        let dir = PlanDir::new(plans.child(&plan.id));
        for table in &plan.tables {
            PlanDir::create(&dir.location.child("tables"), table).await?;
        }
        dir.create_file(PIPELINE_FILE, plan).await?;
        Ok(dir)
    }

    async fn create_file<T: Serialize>(&self, name: &str, plan: &T) -> Result<()> {
        let path = self.location.path(name);
        if !self.location.create_json(&path, plan).await? {
            return Err(Error::config(format!("a plan is at `{path}` already")));
        }
        Ok(())
    }

    /// Where the directory is.
    pub fn location(&self) -> &Location {
        &self.location
    }

    /// The directory of `table`'s plan in this pipeline plan's directory.
    pub fn table(&self, table: &ShardPlan) -> PlanDir {
        PlanDir::new(self.location.child("tables").child(&table.id))
    }

    /// The plan.
    ///
    /// # Errors
    /// [`Error::ObjectStore`] when there is none; [`Error::Metadata`] for a document that
    /// does not parse or was written by a newer format.
    pub async fn plan(&self) -> Result<ShardPlan> {
        let path = self.location.path(PLAN_FILE);
        let plan: ShardPlan = self.location.get_json(&path).await?;
        check_format(&path, plan.format)?;
        Ok(plan)
    }

    /// The pipeline plan, when the directory holds one (`None`: a table's plan, or nothing).
    ///
    /// # Errors
    /// As [`PlanDir::plan`], but for a missing document.
    pub async fn pipeline(&self) -> Result<Option<PipelinePlan>> {
        let path = self.location.path(PIPELINE_FILE);
        let plan: Option<PipelinePlan> = self.get_if_there(&path).await?;
        if let Some(p) = &plan {
            check_format(&path, p.format)?;
        }
        Ok(plan)
    }

    fn manifest_path(&self, index: usize) -> object_store::path::Path {
        self.location.path(&format!("shards/{index:05}.json"))
    }

    /// Records a shard's manifest unless one is there (conditional put): `Ok(false)` when
    /// an earlier attempt recorded it.
    ///
    /// # Errors
    /// [`Error::ObjectStore`].
    pub async fn record(&self, manifest: &ShardManifest) -> Result<bool> {
        self.location
            .create_json(&self.manifest_path(manifest.index), manifest)
            .await
    }

    /// A shard's manifest, if it has staged.
    ///
    /// # Errors
    /// [`Error::ObjectStore`]; [`Error::Metadata`] for a document that does not parse.
    pub async fn manifest(&self, index: usize) -> Result<Option<ShardManifest>> {
        self.get_if_there(&self.manifest_path(index)).await
    }

    async fn get_if_there<T: serde::de::DeserializeOwned>(&self, path: &object_store::path::Path) -> Result<Option<T>> {
        match self.location.get_json(path).await {
            Ok(m) => Ok(Some(m)),
            Err(Error::ObjectStore {
                source: object_store::Error::NotFound { .. },
                ..
            }) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// A plan document of a format this build reads.
fn check_format(path: &object_store::path::Path, format: u32) -> Result<()> {
    if format > PLAN_FORMAT {
        return Err(Error::Metadata {
            path: path.to_string(),
            message: format!(
                "plan format {format} is newer than this build's {PLAN_FORMAT}: run the shards and the commit with \
                 the build that planned it"
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_agree_on_their_columns_or_the_commit_is_refused() {
        let col = |n: &str| Column {
            name: n.into(),
            data_type: "Int64".into(),
            nullable: true,
        };
        let a = Some(vec![col("id")]);
        assert_eq!(agreed_columns("t", "r", [None, a.clone(), a.clone()]).unwrap(), a);
        assert_eq!(agreed_columns("t", "r", [None, None]).unwrap(), None);
        let err = agreed_columns("t", "r", [a, Some(vec![col("id"), col("x")])]).unwrap_err();
        assert!(err.to_string().contains("staged other columns"), "{err}");
    }

    #[test]
    fn key_intervals_cover_every_key_once() {
        let k = key_intervals(1, 100, 4);
        assert_eq!(k, vec![(i64::MIN, 25), (26, 50), (51, 75), (76, i64::MAX)]);
        // Fewer keys than shards: one shard per key.
        assert_eq!(key_intervals(5, 6, 8), vec![(i64::MIN, 5), (6, i64::MAX)]);
        assert_eq!(key_intervals(7, 7, 3), vec![(i64::MIN, i64::MAX)]);
        // The whole range of i64 does not overflow.
        let k = key_intervals(i64::MIN, i64::MAX, 3);
        assert_eq!(k.len(), 3);
        assert!(k.windows(2).all(|w| w[0].1 + 1 == w[1].0));
    }
}
