//! The run history: one JSON document per job run under `_etl/runs/<job>/` in the lake.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::location::Location;
use crate::report::RunReport;

const DIR: &str = "_etl/runs";
const STAMP: &str = "%Y%m%dT%H%M%S%.6fZ";

/// How a job run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// It finished without error.
    Succeeded,
    /// It returned an error (after its retries).
    Failed,
    /// It ran past its timeout and was cancelled.
    TimedOut,
    /// It did not run: a dependency's outcome did not allow it.
    Skipped,
}

impl JobStatus {
    /// Failed or timed out.
    pub fn is_failure(self) -> bool {
        matches!(self, JobStatus::Failed | JobStatus::TimedOut)
    }
}

/// One attempt of one job (or its skip), as the history records it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobRun {
    /// The workflow it ran in.
    pub workflow: String,
    /// The job.
    pub job: String,
    /// The workflow run's id (shared by its jobs).
    pub run_id: String,
    /// 1 for the first try, +1 for each retry.
    pub attempt: u32,
    /// How it ended.
    pub status: JobStatus,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// When it ended.
    pub ended_at: DateTime<Utc>,
    /// The error (failed, timed out) or why it was skipped.
    pub error: Option<String>,
    /// Whether the error was transient (a retry may help).
    #[serde(default)]
    pub retryable: bool,
    /// The files a trigger started the run with.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<String>,
    /// A pipeline job's per-table report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<RunReport>,
}

/// The run history of a lake: every attempt of every job appended as its own document
/// (`_etl/runs/<job>/<start>-<run id>-<attempt>.json`).
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use etl_core::Location;
/// use etl_core::workflow::RunHistory;
/// let history = RunHistory::new(Location::memory());
/// assert!(history.last_run("extract").await.unwrap().is_none());
/// # });
/// ```
#[derive(Clone, Debug)]
pub struct RunHistory {
    location: Location,
}

impl RunHistory {
    /// The history kept under `location` (`_etl/runs/`).
    pub fn new(location: Location) -> Self {
        RunHistory { location }
    }

    /// Appends a run.
    ///
    /// # Errors
    /// The store's error.
    pub async fn record(&self, run: &JobRun) -> Result<()> {
        let path = self.location.path(&format!(
            "{DIR}/{}/{}-{}-{}.json",
            run.job,
            run.started_at.format(STAMP),
            run.run_id,
            run.attempt
        ));
        self.location.put_json(&path, run).await
    }

    /// Runs of `job` that started at or after `since` (all with `None`), oldest first.
    ///
    /// # Errors
    /// The store's error; [`crate::Error::Metadata`] for a document that does not parse.
    pub async fn runs(&self, job: &str, since: Option<DateTime<Utc>>) -> Result<Vec<JobRun>> {
        self.read(&format!("{DIR}/{job}"), since).await
    }

    /// The last run of `job` (its last attempt), if any.
    ///
    /// # Errors
    /// As [`RunHistory::runs`].
    pub async fn last_run(&self, job: &str) -> Result<Option<JobRun>> {
        Ok(self.runs(job, None).await?.pop())
    }

    /// Failed and timed-out runs of every job since `since`, oldest first.
    ///
    /// # Errors
    /// As [`RunHistory::runs`].
    pub async fn failures_since(&self, since: DateTime<Utc>) -> Result<Vec<JobRun>> {
        let mut runs = self.read(DIR, Some(since)).await?;
        runs.retain(|r| r.status.is_failure());
        Ok(runs)
    }

    /// The runs under `prefix` whose file name says they started at or after `since`: only
    /// those documents are read.
    async fn read(&self, prefix: &str, since: Option<DateTime<Utc>>) -> Result<Vec<JobRun>> {
        let mut wanted = Vec::new();
        for meta in self.location.list(prefix).await? {
            let Some(name) = meta.location.filename() else { continue };
            let Some(stamp) = name.split('-').next() else { continue };
            let Ok(started) = chrono::NaiveDateTime::parse_from_str(stamp, STAMP) else {
                continue;
            };
            if since.is_none_or(|s| started.and_utc() >= s) {
                wanted.push(meta.location);
            }
        }
        let mut runs = Vec::with_capacity(wanted.len());
        for path in wanted {
            runs.push(self.location.get_json::<JobRun>(&path).await?);
        }
        runs.sort_by_key(|r| (r.started_at, r.attempt));
        Ok(runs)
    }
}
