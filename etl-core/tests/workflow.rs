//! Workflows, retries, schedules, file triggers and the run history, on tokio's paused clock
//! (time advances only when every task sleeps, so the timings below are exact).

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use etl_core::workflow::{
    Clock, FileTrigger, Job, JobOutput, JobStatus, Overlap, RetryPolicy, RunHistory, Schedule, Scheduler, When,
    Workflow,
};
use etl_core::{Error, Location};
use object_store::ObjectStoreExt;

fn t0() -> DateTime<Utc> {
    "2025-07-24T00:00:30Z".parse().unwrap()
}

fn transient(msg: &str) -> Error {
    Error::Connector {
        connector: "test",
        message: msg.to_string(),
        retryable: true,
    }
}

/// Each run of a job: its name, start and end.
type RunLog = Arc<Mutex<Vec<(String, DateTime<Utc>, DateTime<Utc>)>>>;

/// A job that sleeps `secs` and records its start and end on `clock`.
fn timed(name: &str, secs: u64, clock: &Clock, log: &RunLog) -> Job {
    let (clock, log, n) = (clock.clone(), log.clone(), name.to_string());
    Job::new(name, move |_ctx| {
        let (clock, log, n) = (clock.clone(), log.clone(), n.clone());
        async move {
            let start = clock.now();
            tokio::time::sleep(Duration::from_secs(secs)).await;
            log.lock().unwrap().push((n, start, clock.now()));
            Ok(JobOutput::done("slept"))
        }
    })
}

#[tokio::test(start_paused = true)]
async fn jobs_run_in_dependency_order_up_to_the_concurrency_limit() {
    let clock = Clock::starting_at(t0());
    let log = Arc::new(Mutex::new(Vec::new()));
    let wf = Workflow::new("wf")
        .clock(clock.clone())
        .max_concurrency(2)
        .job(timed("a", 10, &clock, &log))
        .job(timed("b", 10, &clock, &log))
        .job(timed("c", 10, &clock, &log))
        .job(
            timed("join", 5, &clock, &log)
                .after("a", When::Succeeded)
                .after("b", When::Succeeded)
                .after("c", When::Succeeded),
        )
        .build()
        .unwrap();
    let report = wf.run().await;
    assert!(report.is_success());
    let log = log.lock().unwrap().clone();
    let secs = |t: DateTime<Utc>| (t - t0()).num_seconds();
    let runs: Vec<(String, i64, i64)> = log.iter().map(|(n, s, e)| (n.clone(), secs(*s), secs(*e))).collect();
    // Two at a time: a and b, then c, then the join after all three.
    assert_eq!(
        runs,
        [
            ("a".to_string(), 0, 10),
            ("b".to_string(), 0, 10),
            ("c".to_string(), 10, 20),
            ("join".to_string(), 20, 25)
        ]
    );
}

#[tokio::test]
async fn a_failed_job_skips_its_dependants_and_says_why() {
    let failures = Arc::new(Mutex::new(Vec::new()));
    let successes = Arc::new(Mutex::new(Vec::new()));
    let ok = |name: &str| Job::new(name, |_ctx| async { Ok(JobOutput::done("ok")) });
    let (f, s) = (failures.clone(), successes.clone());
    let history = RunHistory::new(Location::memory());
    let wf = Workflow::new("nightly")
        .history(history.clone())
        .job(Job::new("extract", |_ctx| async {
            Err::<JobOutput, _>(Error::TableNotFound {
                table: "orders".into(),
                source_name: "postgres".into(),
            })
        }))
        .job(ok("transform").after("extract", When::Succeeded))
        .job(ok("crawl").after("transform", When::Succeeded))
        .job(ok("alert").after("extract", When::Failed))
        .job(ok("cleanup").after("extract", When::Completed))
        .on_failure(move |r| f.lock().unwrap().push(r.job.clone()))
        .on_success(move |r| s.lock().unwrap().push(r.job.clone()))
        .build()
        .unwrap();
    let report = wf.run().await;
    assert!(!report.is_success());
    let e = report.job("extract").unwrap();
    assert_eq!((e.status, e.attempts), (JobStatus::Failed, 1));
    assert!(e.error.as_deref().unwrap().contains("table `orders` not found"));
    let mut skipped = report.skipped();
    skipped.sort();
    assert_eq!(
        skipped,
        [
            ("crawl", "`transform` was skipped; `crawl` waits for its success"),
            ("transform", "`extract` failed; `transform` waits for its success")
        ]
    );
    assert_eq!(report.job("alert").unwrap().status, JobStatus::Succeeded);
    assert_eq!(report.job("cleanup").unwrap().status, JobStatus::Succeeded);
    assert_eq!(*failures.lock().unwrap(), ["extract"]);
    let mut ok_jobs = successes.lock().unwrap().clone();
    ok_jobs.sort();
    assert_eq!(ok_jobs, ["alert", "cleanup"]);

    // The history has every job, skipped ones included; the failures query finds extract.
    let last = history.last_run("transform").await.unwrap().unwrap();
    assert_eq!((last.status, last.attempt), (JobStatus::Skipped, 0));
    let failed = history.failures_since(report.started_at).await.unwrap();
    let failed: Vec<(&str, JobStatus)> = failed.iter().map(|r| (r.job.as_str(), r.status)).collect();
    assert_eq!(failed, [("extract", JobStatus::Failed)]);
}

/// A panicking job fails (its dependants skipped); a panicking failure hook is only logged.
#[tokio::test]
async fn a_panicking_job_fails_without_taking_the_workflow_down() {
    let report = Workflow::new("wf")
        .job(Job::new("boom", |_ctx| async {
            if true {
                panic!("index out of bounds");
            }
            Ok(JobOutput::default())
        }))
        .job(Job::new("after", |_ctx| async { Ok(JobOutput::default()) }).after("boom", When::Succeeded))
        .job(Job::new("other", |_ctx| async { Ok(JobOutput::done("ran")) }))
        .on_failure(|_| panic!("the pager is down"))
        .build()
        .unwrap()
        .run()
        .await;
    let b = report.job("boom").unwrap();
    assert_eq!(b.attempts, 1);
    assert_eq!(b.status, JobStatus::Failed);
    assert_eq!(b.error.as_deref(), Some("workflow: job panicked: index out of bounds"));
    assert_eq!(report.job("after").unwrap().status, JobStatus::Skipped);
    assert_eq!(report.job("other").unwrap().status, JobStatus::Succeeded);
}

#[tokio::test]
async fn bad_workflows_are_refused_naming_the_job() {
    let ok = |name: &str| Job::new(name, |_ctx| async { Ok(JobOutput::default()) });
    let err = |wf: etl_core::workflow::WorkflowBuilder| wf.build().unwrap_err().to_string();
    assert!(err(Workflow::new("w").job(ok("a")).job(ok("a"))).contains("two jobs are named `a`"));
    assert!(err(Workflow::new("w").job(ok("a").after("x", When::Succeeded))).contains("depends on `x`"));
    assert!(
        err(Workflow::new("w")
            .job(ok("a").after("b", When::Succeeded))
            .job(ok("b").after("a", When::Completed)))
        .contains("jobs `a`, `b` depend on each other in a cycle")
    );
    assert!(err(Workflow::new("w").job(ok("a/b"))).contains("without `/`"));
}

#[tokio::test(start_paused = true)]
async fn transient_errors_are_retried_with_backoff_then_succeed_or_give_up() {
    let clock = Clock::starting_at(t0());
    let history = RunHistory::new(Location::memory());
    let calls = Arc::new(AtomicU32::new(0));
    let c = calls.clone();
    let flaky = Job::new("load", move |ctx| {
        let c = c.clone();
        async move {
            c.fetch_add(1, Ordering::SeqCst);
            if ctx.attempt < 3 {
                Err(transient("connection reset by peer"))
            } else {
                Ok(JobOutput::done("loaded"))
            }
        }
    })
    .retry(RetryPolicy::exponential(5, Duration::from_secs(10)));
    let wf = Workflow::new("wf")
        .clock(clock.clone())
        .history(history.clone())
        .job(flaky)
        .build()
        .unwrap();
    let report = wf.run().await;
    let j = report.job("load").unwrap();
    assert_eq!(
        (j.status, j.attempts, calls.load(Ordering::SeqCst)),
        (JobStatus::Succeeded, 3, 3)
    );
    let runs = history.runs("load", None).await.unwrap();
    let statuses: Vec<(u32, JobStatus, bool)> = runs.iter().map(|r| (r.attempt, r.status, r.retryable)).collect();
    assert_eq!(
        statuses,
        [
            (1, JobStatus::Failed, true),
            (2, JobStatus::Failed, true),
            (3, JobStatus::Succeeded, false)
        ]
    );
    // Backoff 10 s then 20 s, each shortened by at most 20% of jitter.
    let gap = |i: usize| (runs[i + 1].started_at - runs[i].ended_at).num_milliseconds();
    assert!((8_000..=10_000).contains(&gap(0)), "{}", gap(0));
    assert!((16_000..=20_000).contains(&gap(1)), "{}", gap(1));

    // Exhausted: three transient failures, then the job fails.
    let always = Job::new("always", |_ctx| async {
        Err::<JobOutput, _>(transient("deadlock detected"))
    })
    .retry(RetryPolicy::exponential(3, Duration::from_secs(1)));
    // Bad input is never retried.
    let bad = Job::new("bad", |_ctx| async {
        Err::<JobOutput, _>(Error::ColumnNotFound {
            table: "orders".into(),
            column: "updated_at".into(),
        })
    })
    .retry(RetryPolicy::exponential(3, Duration::from_secs(1)));
    let report = Workflow::new("wf2")
        .max_concurrency(2)
        .job(always)
        .job(bad)
        .build()
        .unwrap()
        .run()
        .await;
    let a = report.job("always").unwrap();
    assert_eq!((a.status, a.attempts), (JobStatus::Failed, 3));
    assert!(a.error.as_deref().unwrap().contains("deadlock detected"));
    let b = report.job("bad").unwrap();
    assert_eq!((b.status, b.attempts), (JobStatus::Failed, 1));
}

#[tokio::test(start_paused = true)]
async fn a_job_past_its_timeout_is_cancelled() {
    let finished = Arc::new(AtomicUsize::new(0));
    let f = finished.clone();
    let wf = Workflow::new("wf")
        .job(
            Job::new("slow", move |_ctx| {
                let f = f.clone();
                async move {
                    tokio::time::sleep(Duration::from_secs(600)).await;
                    f.fetch_add(1, Ordering::SeqCst);
                    Ok(JobOutput::done("never"))
                }
            })
            .timeout(Duration::from_secs(30))
            .retry(RetryPolicy::exponential(3, Duration::from_secs(1))),
        )
        .job(Job::new("next", |_ctx| async { Ok(JobOutput::default()) }).after("slow", When::Succeeded))
        .build()
        .unwrap();
    let report = wf.run().await;
    let s = report.job("slow").unwrap();
    assert_eq!(
        (s.status, s.attempts),
        (JobStatus::TimedOut, 1),
        "a timeout is not retried"
    );
    assert_eq!(s.error.as_deref(), Some("timed out after 30s and was cancelled"));
    assert_eq!(report.job("next").unwrap().status, JobStatus::Skipped);
    tokio::time::sleep(Duration::from_secs(1000)).await;
    assert_eq!(finished.load(Ordering::SeqCst), 0, "the cancelled job never went on");
}

/// Runs of a job that takes `secs`, scheduled every minute from 00:00:30 until `stop_at`
/// seconds; returns (start, end) pairs in seconds and the scheduler's counts.
async fn every_minute(secs: u64, overlap: Overlap, stop_at: u64) -> (Vec<(i64, i64)>, u64, u64) {
    let clock = Clock::starting_at(t0());
    let log = Arc::new(Mutex::new(Vec::new()));
    let wf = Workflow::new("tick")
        .clock(clock.clone())
        .job(timed("work", secs, &clock, &log))
        .build()
        .unwrap();
    let handle = Scheduler::new(clock.clone())
        .schedule(wf, Schedule::parse("* * * * *").unwrap(), overlap)
        .start();
    tokio::time::sleep(Duration::from_secs(stop_at)).await;
    let stats = handle.stats("tick").unwrap();
    handle.shutdown().await;
    let secs = |t: DateTime<Utc>| (t - t0()).num_seconds();
    let runs = log
        .lock()
        .unwrap()
        .iter()
        .map(|(_, s, e)| (secs(*s), secs(*e)))
        .collect();
    (runs, stats.runs_started, stats.ticks_skipped)
}

#[tokio::test(start_paused = true)]
async fn overlapping_ticks_are_skipped_or_queued_never_run_twice_at_once() {
    // Ticks at 30 s, 90 s, 150 s, 210 s, 270 s after the start; each run takes 90 s.
    // Skip: the runs of 30 s (to 120), 150 s (to 240) and 270 s; the ticks of 90 s and 210 s
    // fall inside a run. Shutdown at 280 s waits for the last run to end (360 s).
    let (runs, started, skipped) = every_minute(90, Overlap::Skip, 280).await;
    assert_eq!(runs, [(30, 120), (150, 240), (270, 360)]);
    assert_eq!((started, skipped), (3, 2));

    // Queue: each run takes 150 s. The 90 s tick waits and starts at 180; the 150 s tick is
    // dropped (one already waits); the 210 s tick waits for 330; shutdown at 280 s lets the
    // run in progress end and starts nothing more.
    let (runs, started, skipped) = every_minute(150, Overlap::Queue, 280).await;
    assert_eq!(runs, [(30, 180), (180, 330)]);
    assert_eq!((started, skipped), (2, 2));
}

#[tokio::test(start_paused = true)]
async fn a_file_trigger_starts_one_run_per_new_batch_across_a_restart() {
    let landing = Location::memory();
    let put = |rel: &str| {
        let landing = landing.clone();
        let rel = rel.to_string();
        async move {
            landing
                .store()
                .put(&landing.path(&rel), "id\n1\n".into())
                .await
                .unwrap()
        }
    };
    let runs = Arc::new(Mutex::new(Vec::<Vec<String>>::new()));
    let fail_once = Arc::new(AtomicU32::new(0));
    let start = || {
        let (runs, fail_once) = (runs.clone(), fail_once.clone());
        let wf = Workflow::new("ingest")
            .job(Job::new("load", move |ctx| {
                let (runs, fail_once) = (runs.clone(), fail_once.clone());
                async move {
                    runs.lock().unwrap().push(ctx.files.clone());
                    if ctx.files.iter().any(|f| f.contains("poison")) && fail_once.fetch_add(1, Ordering::SeqCst) == 0 {
                        return Err(transient("target unavailable"));
                    }
                    Ok(JobOutput::done(format!("{} files", ctx.files.len())))
                }
            }))
            .build()
            .unwrap();
        let trigger = FileTrigger::new("orders", landing.clone(), "incoming/").interval(Duration::from_secs(10));
        Scheduler::new(Clock::system()).on_files(wf, trigger).start()
    };

    put("incoming/a.csv").await;
    put("incoming/b.csv").await;
    put("incoming/_tmp/partial.csv").await; // hidden: never a trigger
    let handle = start();
    tokio::time::sleep(Duration::from_secs(35)).await;
    handle.shutdown().await;
    // Restart: the bookmarks say a and b are done.
    let handle = start();
    tokio::time::sleep(Duration::from_secs(35)).await;
    put("incoming/c.csv").await;
    tokio::time::sleep(Duration::from_secs(35)).await;
    // A failed run's files come again at the next poll, once.
    put("incoming/poison.csv").await;
    tokio::time::sleep(Duration::from_secs(35)).await;
    let stats = handle.stats("ingest").unwrap();
    handle.shutdown().await;
    assert_eq!(
        *runs.lock().unwrap(),
        [
            vec!["incoming/a.csv".to_string(), "incoming/b.csv".to_string()],
            vec!["incoming/c.csv".to_string()],
            vec!["incoming/poison.csv".to_string()],
            vec!["incoming/poison.csv".to_string()],
        ]
    );
    assert_eq!((stats.runs_started, stats.runs_failed), (3, 1));
}

/// The trigger on the S3 server: new files once, a rewritten file again, bookmarks that
/// outlive the trigger.
#[cfg(feature = "s3")]
#[tokio::test]
async fn a_file_trigger_on_s3_offers_new_and_changed_files_once() {
    let loc = etl_core::conformance::s3_location();
    let put = |rel: &'static str, body: &'static str| {
        let loc = loc.clone();
        async move { loc.store().put(&loc.path(rel), body.into()).await.unwrap() }
    };
    put("drops/a.csv", "id\n1\n").await;
    put("drops/b.csv", "id\n2\n").await;
    let trigger = FileTrigger::new("drops", loc.clone(), "drops/");
    let batch = trigger.poll().await.unwrap();
    assert_eq!(batch.files(), ["drops/a.csv", "drops/b.csv"]);
    trigger.commit(&batch).await.unwrap();
    assert!(trigger.poll().await.unwrap().is_empty());

    let restarted = FileTrigger::new("drops", loc.clone(), "drops/");
    assert!(restarted.poll().await.unwrap().is_empty());
    put("drops/c.csv", "id\n3\n").await;
    put("drops/a.csv", "id\n1\n4\n").await;
    assert_eq!(restarted.poll().await.unwrap().files(), ["drops/a.csv", "drops/c.csv"]);
}
