//! The scheduler: workflows on schedules and on file triggers, inside the user's runtime.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::{Clock, FileTrigger, Schedule, Workflow};

/// What a tick does while the workflow's previous run is still going.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Overlap {
    /// The tick is dropped (counted in [`SchedulerStats::ticks_skipped`]).
    Skip,
    /// The tick waits and starts a run as soon as the previous one ends; one tick waits at
    /// most (more ticks meanwhile are dropped and counted as skipped).
    Queue,
}

/// Counts of one workflow's scheduled activity.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SchedulerStats {
    /// Runs started.
    pub runs_started: u64,
    /// Runs that ended with a job failed or timed out.
    pub runs_failed: u64,
    /// Ticks dropped because a run was going (or one already waited).
    pub ticks_skipped: u64,
}

#[derive(Debug, Default)]
struct Counters {
    started: AtomicU64,
    failed: AtomicU64,
    skipped: AtomicU64,
}

enum Start {
    Schedule(Schedule, Overlap),
    Files(FileTrigger),
}

/// Runs workflows on [`Schedule`]s and [`FileTrigger`]s in the current tokio runtime; never
/// two runs of one workflow at once.
///
/// ```no_run
/// # async fn f(extract: etl_core::workflow::Workflow) -> etl_core::Result<()> {
/// use etl_core::workflow::{Clock, Overlap, Schedule, Scheduler};
/// let handle = Scheduler::new(Clock::system())
///     .schedule(extract, Schedule::parse("cron(0 2 * * ? *)")?, Overlap::Skip)
///     .start();
/// tokio::signal::ctrl_c().await.ok();
/// handle.shutdown().await; // lets a run in progress finish
/// # Ok(()) }
/// ```
pub struct Scheduler {
    clock: Clock,
    entries: Vec<(Arc<Workflow>, Start)>,
}

/// A running scheduler.
pub struct SchedulerHandle {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    counters: BTreeMap<String, Arc<Counters>>,
}

impl Scheduler {
    /// A scheduler reading time from `clock`.
    pub fn new(clock: Clock) -> Self {
        Scheduler {
            clock,
            entries: Vec::new(),
        }
    }

    /// Runs `workflow` at each fire time of `schedule` (the first one after
    /// [`Scheduler::start`]).
    pub fn schedule(mut self, workflow: Workflow, schedule: Schedule, overlap: Overlap) -> Self {
        self.entries
            .push((Arc::new(workflow), Start::Schedule(schedule, overlap)));
        self
    }

    /// Runs `workflow` with the new files whenever `trigger` finds some: a poll at start,
    /// then one each interval after the last poll or run ends. The files are bookmarked when
    /// the run succeeded; after a failed run they are offered again at the next poll.
    pub fn on_files(mut self, workflow: Workflow, trigger: FileTrigger) -> Self {
        self.entries.push((Arc::new(workflow), Start::Files(trigger)));
        self
    }

    /// Starts the schedules and triggers on the current tokio runtime.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn start(self) -> SchedulerHandle {
        let (stop, stopped) = watch::channel(false);
        let mut tasks = Vec::new();
        let mut counters = BTreeMap::new();
        for (wf, start) in self.entries {
            let c: Arc<Counters> = counters
                .entry(wf.name().to_string())
                .or_insert_with(|| Arc::new(Counters::default()))
                .clone();
            match start {
                Start::Schedule(schedule, overlap) => {
                    let (tx, rx) = mpsc::channel(1);
                    let running = Arc::new(AtomicBool::new(false));
                    tasks.push(tokio::spawn(tick(
                        self.clock.clone(),
                        schedule,
                        overlap,
                        tx,
                        running.clone(),
                        c.clone(),
                        stopped.clone(),
                    )));
                    tasks.push(tokio::spawn(run_ticks(wf, rx, running, c, stopped.clone())));
                }
                Start::Files(trigger) => {
                    tasks.push(tokio::spawn(watch_files(wf, trigger, c, stopped.clone())));
                }
            }
        }
        SchedulerHandle { stop, tasks, counters }
    }
}

/// Sends a tick at each fire time until stopped.
async fn tick(
    clock: Clock,
    schedule: Schedule,
    overlap: Overlap,
    tx: mpsc::Sender<chrono::DateTime<chrono::Utc>>,
    running: Arc<AtomicBool>,
    c: Arc<Counters>,
    mut stopped: watch::Receiver<bool>,
) {
    let mut next = schedule.next_after(clock.now());
    while let Some(at) = next {
        tokio::select! {
            _ = clock.sleep_until(at) => {}
            _ = stopped.changed() => return,
        }
        let busy = overlap == Overlap::Skip && running.load(Ordering::SeqCst);
        if busy || tx.try_send(at).is_err() {
            c.skipped.fetch_add(1, Ordering::SeqCst);
            tracing::warn!(%schedule, tick = %at, "the previous run is still going: tick skipped");
        }
        next = schedule.next_after(at);
    }
}

/// Runs the workflow for each tick, one run at a time; stops starting runs once stopped.
async fn run_ticks(
    wf: Arc<Workflow>,
    mut rx: mpsc::Receiver<chrono::DateTime<chrono::Utc>>,
    running: Arc<AtomicBool>,
    c: Arc<Counters>,
    stopped: watch::Receiver<bool>,
) {
    while let Some(_tick) = rx.recv().await {
        if *stopped.borrow() {
            return;
        }
        running.store(true, Ordering::SeqCst);
        c.started.fetch_add(1, Ordering::SeqCst);
        if !wf.run().await.is_success() {
            c.failed.fetch_add(1, Ordering::SeqCst);
        }
        running.store(false, Ordering::SeqCst);
    }
}

/// Polls the trigger and runs the workflow with each batch of new files.
async fn watch_files(wf: Arc<Workflow>, trigger: FileTrigger, c: Arc<Counters>, mut stopped: watch::Receiver<bool>) {
    loop {
        if *stopped.borrow() {
            return;
        }
        match trigger.poll().await {
            Ok(batch) if !batch.is_empty() => {
                c.started.fetch_add(1, Ordering::SeqCst);
                if wf.run_with_files(batch.files()).await.is_success() {
                    if let Err(e) = trigger.commit(&batch).await {
                        tracing::error!(trigger = trigger.name(), error = %e, "the trigger's bookmarks could not be written: its files will start another run");
                    }
                } else {
                    c.failed.fetch_add(1, Ordering::SeqCst);
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(trigger = trigger.name(), error = %e, "polling failed; trying again next interval")
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(trigger.poll_interval()) => {}
            _ = stopped.changed() => return,
        }
    }
}

impl SchedulerHandle {
    /// The counts of a workflow's scheduled runs so far.
    pub fn stats(&self, workflow: &str) -> Option<SchedulerStats> {
        self.counters.get(workflow).map(|c| SchedulerStats {
            runs_started: c.started.load(Ordering::SeqCst),
            runs_failed: c.failed.load(Ordering::SeqCst),
            ticks_skipped: c.skipped.load(Ordering::SeqCst),
        })
    }

    /// Stops starting runs and waits for the runs in progress to end.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}
