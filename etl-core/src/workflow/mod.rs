//! Workflows, retries, schedules, file triggers and run history: many jobs run reliably inside
//! the user's own tokio runtime, as Glue workflows and triggers do — a library, not a server.
//!
//! - A [`Job`] is a pipeline, a crawl, or any async function, with a [`RetryPolicy`] (only
//!   errors marked transient are retried, with exponential backoff and jitter) and a timeout
//!   (the job's future is dropped: a pipeline cancelled before its commit leaves target and
//!   watermark as they were).
//! - A [`Workflow`] runs jobs by their dependencies ([`When::Succeeded`], [`When::Failed`],
//!   [`When::Completed`]), independent ones concurrently up to a limit; a job whose
//!   dependency did not end as it requires is skipped, and the [`WorkflowReport`] says why.
//! - A [`Schedule`] is a cron expression (Unix or AWS form, in UTC or a named time zone) or a
//!   rate; the [`Scheduler`] runs workflows on schedules and on [`FileTrigger`]s, never two
//!   runs of one workflow at once ([`Overlap`]), and shuts down gracefully.
//! - Every attempt is appended to the [`RunHistory`] in the lake (`_etl/runs/`), and success
//!   and failure hooks are where alerting plugs in.
//!
//! Time comes from a [`Clock`]: the system clock, or in tests one that follows tokio's
//! (pausable) clock from a chosen start.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use etl_core::workflow::{Job, JobOutput, When, Workflow};
//!
//! let wf = Workflow::new("daily")
//!     .job(Job::new("extract", |_ctx| async { Ok(JobOutput::done("2 tables")) }))
//!     .job(Job::new("report", |_ctx| async { Ok(JobOutput::done("sent")) }).after("extract", When::Succeeded))
//!     .build()
//!     .unwrap();
//! let report = wf.run().await;
//! assert!(report.is_success());
//! assert_eq!(report.job("report").unwrap().attempts, 1);
//! # });
//! ```

mod history;
mod schedule;
mod scheduler;
mod trigger;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};

pub use self::history::{JobRun, JobStatus, RunHistory};
pub use self::schedule::Schedule;
pub use self::scheduler::{Overlap, Scheduler, SchedulerHandle, SchedulerStats};
pub use self::trigger::{FileBatch, FileTrigger};
use crate::error::{Error, Result};
use crate::location::Location;
use crate::pipeline::Pipeline;
use crate::report::RunReport;

/// Where time comes from.
#[derive(Clone, Debug)]
pub struct Clock {
    /// `None`: the system clock. `Some`: this instant at the tokio instant beside it.
    origin: Option<(DateTime<Utc>, tokio::time::Instant)>,
}

impl Clock {
    /// The system clock.
    pub fn system() -> Self {
        Clock { origin: None }
    }

    /// A clock that reads `start` now and then advances with tokio's clock, so that a test
    /// under `tokio::time::pause()` controls it (`tokio::time::advance`, or auto-advance
    /// while every task sleeps).
    pub fn starting_at(start: DateTime<Utc>) -> Self {
        Clock {
            origin: Some((start, tokio::time::Instant::now())),
        }
    }

    /// The current time.
    pub fn now(&self) -> DateTime<Utc> {
        match self.origin {
            None => Utc::now(),
            Some((start, at)) => start + chrono::Duration::from_std(at.elapsed()).expect("elapsed time fits"),
        }
    }

    /// Sleeps until `t` (at once when it is past).
    pub async fn sleep_until(&self, t: DateTime<Utc>) {
        // The system clock can jump: sleep in steps of at most a minute and look again.
        loop {
            let left = (t - self.now()).to_std().unwrap_or(Duration::ZERO);
            if left.is_zero() {
                return;
            }
            let step = if self.origin.is_some() {
                left
            } else {
                left.min(Duration::from_secs(60))
            };
            tokio::time::sleep(step).await;
        }
    }
}

/// When a job's future retries: how many attempts in all, and the backoff between them.
#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all (1: no retry).
    pub max_attempts: u32,
    /// The wait before the first retry.
    pub initial_backoff: Duration,
    /// The longest wait.
    pub max_backoff: Duration,
    /// Each wait is the previous times this.
    pub multiplier: f64,
    /// Each wait is shortened by a random fraction up to this (0.0–1.0), so that jobs that
    /// failed together do not retry together.
    pub jitter: f64,
}

impl Default for RetryPolicy {
    /// No retry.
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 1,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(300),
            multiplier: 2.0,
            jitter: 0.2,
        }
    }
}

impl RetryPolicy {
    /// `max_attempts` attempts in all, waiting `initial_backoff`, then twice that, and so on
    /// (at most 5 minutes), each wait shortened by up to 20% at random.
    pub fn exponential(max_attempts: u32, initial_backoff: Duration) -> Self {
        RetryPolicy {
            max_attempts: max_attempts.max(1),
            initial_backoff,
            ..RetryPolicy::default()
        }
    }

    /// The wait after failed attempt `attempt` (1-based).
    pub fn backoff(&self, attempt: u32) -> Duration {
        let base = self.initial_backoff.as_secs_f64() * self.multiplier.powi(attempt.saturating_sub(1) as i32);
        let capped = base.min(self.max_backoff.as_secs_f64());
        let r = (uuid::Uuid::new_v4().as_u128() % 10_000) as f64 / 10_000.0;
        Duration::from_secs_f64(capped * (1.0 - self.jitter.clamp(0.0, 1.0) * r))
    }
}

/// What a job's function is given.
#[derive(Clone, Debug)]
pub struct JobContext {
    /// The workflow.
    pub workflow: String,
    /// The job.
    pub job: String,
    /// The workflow run's id.
    pub run_id: String,
    /// 1 for the first try.
    pub attempt: u32,
    /// The new files a [`FileTrigger`] started the run with (paths relative to its location).
    pub files: Vec<String>,
}

/// What a job returns.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct JobOutput {
    /// A line on what it did.
    pub summary: String,
    /// A pipeline's per-table report.
    pub report: Option<RunReport>,
}

impl JobOutput {
    /// A job that did something described by `summary`.
    pub fn done(summary: impl Into<String>) -> Self {
        JobOutput {
            summary: summary.into(),
            report: None,
        }
    }
}

type JobFn = Arc<dyn Fn(JobContext) -> BoxFuture<'static, Result<JobOutput>> + Send + Sync>;

/// A dependency's outcome a job waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum When {
    /// Run after the dependency succeeded.
    Succeeded,
    /// Run after the dependency failed or timed out (a clean-up or alert job).
    Failed,
    /// Run after the dependency ran, however it ended.
    Completed,
}

/// A named unit of work of a [`Workflow`].
#[derive(Clone)]
pub struct Job {
    name: String,
    run: JobFn,
    retry: RetryPolicy,
    timeout: Option<Duration>,
    after: Vec<(String, When)>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("name", &self.name)
            .field("retry", &self.retry)
            .field("timeout", &self.timeout)
            .field("after", &self.after)
            .finish_non_exhaustive()
    }
}

impl Job {
    /// A job running an async function.
    pub fn new<F, Fut>(name: impl Into<String>, f: F) -> Self
    where
        F: Fn(JobContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<JobOutput>> + Send + 'static,
    {
        Job {
            name: name.into(),
            run: Arc::new(move |ctx| Box::pin(f(ctx))),
            retry: RetryPolicy::default(),
            timeout: None,
            after: Vec::new(),
        }
    }

    /// A job running a pipeline: it fails when a table failed (transient when every failed
    /// table's error was), and its output carries the run report.
    pub fn pipeline(name: impl Into<String>, pipeline: Pipeline) -> Self {
        let pipeline = Arc::new(pipeline);
        Job::new(name, move |_ctx| {
            let pipeline = pipeline.clone();
            async move {
                let report = pipeline.run().await?;
                let summary = format!(
                    "{} tables, {} rows written",
                    report.tables.len(),
                    report.tables.iter().map(|t| t.written_count).sum::<u64>()
                );
                let report = report.into_result()?;
                Ok(JobOutput {
                    summary,
                    report: Some(report),
                })
            }
        })
    }

    /// A job crawling a lake into its catalog (an incremental crawl).
    pub fn crawl(name: impl Into<String>, lake: Location) -> Self {
        Job::new(name, move |_ctx| {
            let lake = lake.clone();
            async move {
                let catalog = crate::catalog::Catalog::new(lake.clone());
                let c = crate::catalog::Crawler::new(lake).crawl_into(&catalog).await?;
                Ok(JobOutput::done(format!(
                    "{} tables, {} footers read, {} files sampled",
                    c.tables.len(),
                    c.footers_read,
                    c.samples_read
                )))
            }
        })
    }

    /// Runs after `job` ended as `when` says; several calls add several dependencies (all
    /// must hold).
    pub fn after(mut self, job: impl Into<String>, when: When) -> Self {
        self.after.push((job.into(), when));
        self
    }

    /// Retries transient errors ([`Error::is_retryable`]) as `policy` says.
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Cancels an attempt that runs longer than `limit` (the job then ends timed out, without
    /// retry).
    pub fn timeout(mut self, limit: Duration) -> Self {
        self.timeout = Some(limit);
        self
    }

    /// The job's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// A hook called with a job's final run.
pub type Hook = Arc<dyn Fn(&JobRun) + Send + Sync>;

/// Jobs and their dependencies, validated by [`WorkflowBuilder::build`].
#[derive(Clone)]
pub struct Workflow {
    name: String,
    jobs: Vec<Job>,
    max_concurrency: usize,
    clock: Clock,
    history: Option<RunHistory>,
    on_success: Vec<Hook>,
    on_failure: Vec<Hook>,
}

impl std::fmt::Debug for Workflow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workflow")
            .field("name", &self.name)
            .field("jobs", &self.jobs)
            .field("max_concurrency", &self.max_concurrency)
            .finish_non_exhaustive()
    }
}

/// Builds a [`Workflow`].
pub struct WorkflowBuilder(Workflow);

impl Workflow {
    /// A workflow named `name` (one job at a time until [`WorkflowBuilder::max_concurrency`]).
    #[allow(clippy::new_ret_no_self)]
    pub fn new(name: impl Into<String>) -> WorkflowBuilder {
        WorkflowBuilder(Workflow {
            name: name.into(),
            jobs: Vec::new(),
            max_concurrency: 1,
            clock: Clock::system(),
            history: None,
            on_success: Vec::new(),
            on_failure: Vec::new(),
        })
    }

    /// The workflow's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl WorkflowBuilder {
    /// Adds a job.
    pub fn job(mut self, job: Job) -> Self {
        self.0.jobs.push(job);
        self
    }

    /// Runs up to `n` independent jobs at once.
    pub fn max_concurrency(mut self, n: usize) -> Self {
        self.0.max_concurrency = n.max(1);
        self
    }

    /// Reads time from `clock` (the system clock by default).
    pub fn clock(mut self, clock: Clock) -> Self {
        self.0.clock = clock;
        self
    }

    /// Appends every attempt to `history`.
    pub fn history(mut self, history: RunHistory) -> Self {
        self.0.history = Some(history);
        self
    }

    /// Calls `hook` with the final run of each job that succeeded.
    pub fn on_success(mut self, hook: impl Fn(&JobRun) + Send + Sync + 'static) -> Self {
        self.0.on_success.push(Arc::new(hook));
        self
    }

    /// Calls `hook` with the final run of each job that failed or timed out.
    pub fn on_failure(mut self, hook: impl Fn(&JobRun) + Send + Sync + 'static) -> Self {
        self.0.on_failure.push(Arc::new(hook));
        self
    }

    /// Checks the workflow: names unique, non-empty and without `/`; dependencies known;
    /// no cycle.
    ///
    /// # Errors
    /// [`Error::Config`] naming the job at fault.
    pub fn build(self) -> Result<Workflow> {
        let wf = self.0;
        let bad = |m: String| Err(Error::config(format!("workflow `{}`: {m}", wf.name)));
        let mut names = BTreeSet::new();
        for j in &wf.jobs {
            if j.name.is_empty() || j.name.contains('/') {
                return bad(format!("job name `{}` must be non-empty and without `/`", j.name));
            }
            if !names.insert(j.name.as_str()) {
                return bad(format!("two jobs are named `{}`", j.name));
            }
        }
        for j in &wf.jobs {
            for (d, _) in &j.after {
                if !names.contains(d.as_str()) {
                    return bad(format!("job `{}` depends on `{d}`, which is not a job of it", j.name));
                }
            }
        }
        // Kahn's algorithm: whatever is left has a cycle.
        let mut left: BTreeMap<&str, BTreeSet<&str>> = wf
            .jobs
            .iter()
            .map(|j| (j.name.as_str(), j.after.iter().map(|(d, _)| d.as_str()).collect()))
            .collect();
        while let Some(free) = left.iter().find(|(_, deps)| deps.is_empty()).map(|(n, _)| *n) {
            left.remove(free);
            for deps in left.values_mut() {
                deps.remove(free);
            }
        }
        if !left.is_empty() {
            return bad(format!(
                "jobs {} depend on each other in a cycle",
                left.keys().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", ")
            ));
        }
        Ok(wf)
    }
}

/// What a workflow run did, job by job.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkflowReport {
    /// The workflow.
    pub workflow: String,
    /// This run's id.
    pub run_id: String,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// When it ended.
    pub ended_at: DateTime<Utc>,
    /// Each job's outcome, in the order they ended (skipped jobs included).
    pub jobs: Vec<JobOutcome>,
}

/// How one job of a workflow run ended.
#[derive(Clone, Debug, PartialEq)]
pub struct JobOutcome {
    /// The job.
    pub job: String,
    /// How it ended.
    pub status: JobStatus,
    /// Attempts made (0 when skipped).
    pub attempts: u32,
    /// The last attempt's error, or why the job was skipped.
    pub error: Option<String>,
    /// What the job returned, when it succeeded.
    pub output: Option<JobOutput>,
}

impl WorkflowReport {
    /// Whether every job succeeded.
    pub fn is_success(&self) -> bool {
        self.jobs.iter().all(|j| j.status == JobStatus::Succeeded)
    }

    /// One job's outcome.
    pub fn job(&self, name: &str) -> Option<&JobOutcome> {
        self.jobs.iter().find(|j| j.job == name)
    }

    /// The jobs that did not run, with why.
    pub fn skipped(&self) -> Vec<(&str, &str)> {
        self.jobs
            .iter()
            .filter(|j| j.status == JobStatus::Skipped)
            .map(|j| (j.job.as_str(), j.error.as_deref().unwrap_or("")))
            .collect()
    }
}

impl Workflow {
    /// Runs every job once (with retries), in dependency order.
    pub async fn run(&self) -> WorkflowReport {
        self.run_with_files(Vec::new()).await
    }

    /// Runs every job once, each given `files` in its [`JobContext`] (what a
    /// [`FileTrigger`] found).
    pub async fn run_with_files(&self, files: Vec<String>) -> WorkflowReport {
        let run_id = format!("{}", uuid::Uuid::new_v4().simple());
        let span = tracing::info_span!("workflow", workflow = %self.name, run_id = %run_id);
        tracing::Instrument::instrument(self.run_inner(run_id, files), span).await
    }

    async fn run_inner(&self, run_id: String, files: Vec<String>) -> WorkflowReport {
        let started_at = self.clock.now();
        let mut done: BTreeMap<String, JobStatus> = BTreeMap::new();
        let mut outcomes = Vec::new();
        let mut running = FuturesUnordered::new();
        let mut started: BTreeSet<String> = BTreeSet::new();
        loop {
            // Skip what can no longer run; start what can, up to the limit.
            let mut progressed = true;
            while progressed {
                progressed = false;
                for job in &self.jobs {
                    if started.contains(&job.name) {
                        continue;
                    }
                    match self.readiness(job, &done) {
                        Readiness::Wait => {}
                        Readiness::Skip(why) => {
                            started.insert(job.name.clone());
                            done.insert(job.name.clone(), JobStatus::Skipped);
                            let now = self.clock.now();
                            let run =
                                self.job_run(job, &run_id, 0, JobStatus::Skipped, now, now, Some(why.clone()), &files);
                            self.record(&run).await;
                            outcomes.push(JobOutcome {
                                job: job.name.clone(),
                                status: JobStatus::Skipped,
                                attempts: 0,
                                error: Some(why),
                                output: None,
                            });
                            progressed = true;
                        }
                        Readiness::Ready if running.len() < self.max_concurrency => {
                            started.insert(job.name.clone());
                            running.push(self.run_job(job, &run_id, &files));
                            progressed = true;
                        }
                        Readiness::Ready => {}
                    }
                }
            }
            match running.next().await {
                Some(outcome) => {
                    let outcome: JobOutcome = outcome;
                    done.insert(outcome.job.clone(), outcome.status);
                    outcomes.push(outcome);
                }
                None => break,
            }
        }
        WorkflowReport {
            workflow: self.name.clone(),
            run_id: run_id.clone(),
            started_at,
            ended_at: self.clock.now(),
            jobs: outcomes,
        }
    }

    fn readiness(&self, job: &Job, done: &BTreeMap<String, JobStatus>) -> Readiness {
        for (dep, when) in &job.after {
            let Some(status) = done.get(dep) else {
                return Readiness::Wait;
            };
            let ok = match (when, status) {
                (_, JobStatus::Skipped) => false,
                (When::Succeeded, s) => *s == JobStatus::Succeeded,
                (When::Failed, s) => s.is_failure(),
                (When::Completed, _) => true,
            };
            if !ok {
                let status = match status {
                    JobStatus::Succeeded => "succeeded",
                    JobStatus::Failed => "failed",
                    JobStatus::TimedOut => "timed out",
                    JobStatus::Skipped => "was skipped",
                };
                let wanted = match when {
                    When::Succeeded => "its success",
                    When::Failed => "its failure",
                    When::Completed => "it to run",
                };
                return Readiness::Skip(format!("`{dep}` {status}; `{}` waits for {wanted}", job.name));
            }
        }
        Readiness::Ready
    }

    #[allow(clippy::too_many_arguments)]
    fn job_run(
        &self,
        job: &Job,
        run_id: &str,
        attempt: u32,
        status: JobStatus,
        started_at: DateTime<Utc>,
        ended_at: DateTime<Utc>,
        error: Option<String>,
        files: &[String],
    ) -> JobRun {
        JobRun {
            workflow: self.name.clone(),
            job: job.name.clone(),
            run_id: run_id.to_string(),
            attempt,
            status,
            started_at,
            ended_at,
            error,
            retryable: false,
            files: files.to_vec(),
            report: None,
        }
    }

    /// Appends to the history; a history that cannot be written is logged, never fails a job.
    async fn record(&self, run: &JobRun) {
        if let Some(h) = &self.history
            && let Err(e) = h.record(run).await
        {
            tracing::warn!(job = %run.job, error = %e, "the run history could not be written");
        }
    }

    /// One job, attempt after attempt.
    fn run_job<'a>(&'a self, job: &'a Job, run_id: &'a str, files: &'a [String]) -> BoxFuture<'a, JobOutcome> {
        Box::pin(async move {
            let mut attempt = 0;
            loop {
                attempt += 1;
                let ctx = JobContext {
                    workflow: self.name.clone(),
                    job: job.name.clone(),
                    run_id: run_id.to_string(),
                    attempt,
                    files: files.to_vec(),
                };
                let started_at = self.clock.now();
                // A job that panics fails like one that returns an error; the workflow (and
                // a scheduler running it) goes on.
                let fut = futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe((job.run)(ctx)));
                let fut = async move {
                    fut.await.unwrap_or_else(|panic| {
                        let what = panic
                            .downcast_ref::<&str>()
                            .map(|s| s.to_string())
                            .or_else(|| panic.downcast_ref::<String>().cloned())
                            .unwrap_or_default();
                        Err(Error::Connector {
                            connector: "workflow",
                            message: format!("job panicked: {what}"),
                            retryable: false,
                        })
                    })
                };
                let result = match job.timeout {
                    Some(limit) => tokio::time::timeout(limit, fut).await.map_err(|_| limit),
                    None => Ok(fut.await),
                };
                let ended_at = self.clock.now();
                let mut run = self.job_run(
                    job,
                    run_id,
                    attempt,
                    JobStatus::Succeeded,
                    started_at,
                    ended_at,
                    None,
                    files,
                );
                let (output, retry) = match result {
                    Ok(Ok(output)) => {
                        run.report = output.report.clone();
                        (Some(output), false)
                    }
                    Ok(Err(e)) => {
                        run.status = JobStatus::Failed;
                        run.retryable = e.is_retryable();
                        run.error = Some(e.to_string());
                        (None, run.retryable && attempt < job.retry.max_attempts)
                    }
                    Err(limit) => {
                        run.status = JobStatus::TimedOut;
                        run.error = Some(format!("timed out after {limit:?} and was cancelled"));
                        (None, false)
                    }
                };
                self.record(&run).await;
                if retry {
                    let wait = job.retry.backoff(attempt);
                    tracing::warn!(job = %job.name, attempt, error = run.error.as_deref().unwrap_or(""), ?wait, "transient error: retrying");
                    tokio::time::sleep(wait).await;
                    continue;
                }
                let hooks = if run.status == JobStatus::Succeeded {
                    &self.on_success
                } else {
                    &self.on_failure
                };
                for h in hooks {
                    // An alerting hook that panics is logged, never fatal to the workflow.
                    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| h(&run))).is_err() {
                        tracing::error!(job = %job.name, "a workflow hook panicked");
                    }
                }
                if run.status.is_failure() {
                    tracing::error!(job = %job.name, attempt, error = run.error.as_deref().unwrap_or(""), "job failed");
                }
                return JobOutcome {
                    job: job.name.clone(),
                    status: run.status,
                    attempts: attempt,
                    error: run.error,
                    output,
                };
            }
        })
    }
}

enum Readiness {
    Wait,
    Ready,
    Skip(String),
}
