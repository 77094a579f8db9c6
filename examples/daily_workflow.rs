//! A daily workflow, as a Glue workflow with a scheduled trigger: extract customers and
//! orders from CSV drops into the lake (both at once, retried on transient errors), then a
//! join job writing `customer_orders`, then a crawl of the lake into its catalog. Every
//! attempt goes to the run history in the lake (`_etl/runs/`); failures go to an alert hook.
//! No server needed.
//!
//! ```text
//! cargo run --example daily_workflow -- ./lake "cron(0 2 * * ? *)" --once
//! cargo run --example daily_workflow -- ./lake "cron(0 2 * * ? *)" [--tz Europe/Paris]
//! ```
//!
//! With `--once`, one round runs now and the program exits (status 1 if a job failed);
//! without it, the scheduler runs a round at each fire time until Ctrl-C, then lets a round
//! in progress finish. Each round first lands the next day's sample drop (day 1, then day 2)
//! in `<lake>/_landing/`, so two rounds show a full then an incremental load.

use std::path::{Path, PathBuf};
use std::time::Duration;

use etl::transform::{keep_latest, lookup_join};
use etl::workflow::{Clock, Job, JobOutput, Overlap, RetryPolicy, RunHistory, Schedule, Scheduler, When, Workflow};
use etl::{
    FileFormat, FileSource, LakeSink, LoadMode, Location, MemorySource, ObjectStoreWatermarkStore, Partitioning,
    Pipeline, TableSpec,
};

const DROPS: [(&str, &str, &str); 4] = [
    ("day1", "customers", include_str!("data/quickstart/day1/customers.csv")),
    ("day1", "orders", include_str!("data/quickstart/day1/orders.csv")),
    ("day2", "customers", include_str!("data/quickstart/day2/customers.csv")),
    ("day2", "orders", include_str!("data/quickstart/day2/orders.csv")),
];

/// Lands the first day's drop not landed yet; returns its day.
fn land_next(lake: &Path) -> std::io::Result<Option<&'static str>> {
    for day in ["day1", "day2"] {
        let mut landed = false;
        for (_, table, body) in DROPS.iter().filter(|(d, _, _)| *d == day) {
            let path = lake.join("_landing").join(table).join(format!("{table}_{day}.csv"));
            if !path.exists() {
                std::fs::create_dir_all(path.parent().expect("parent"))?;
                std::fs::write(&path, body)?;
                eprintln!("landed {}", path.display());
                landed = true;
            }
        }
        if landed {
            return Ok(Some(day));
        }
    }
    Ok(None)
}

/// An incremental extract of one CSV table from the landing folder into the lake.
fn extract(root: &Location, table: &str, key: &str, partitioning: Partitioning) -> etl::Result<Pipeline> {
    Pipeline::builder(format!("daily_{table}"))
        .source(FileSource::new(root.child("_landing")))
        .sink(LakeSink::new(root.clone()))
        .watermarks(ObjectStoreWatermarkStore::new(root.child("_etl/watermarks")))
        .table(
            TableSpec::new(table)
                .from_files(format!("{table}/"), FileFormat::csv())
                .mode(LoadMode::Incremental)
                .primary_key([key])
                .cursor(["updated_at"])
                .keep_latest()
                .partition_by(partitioning),
        )
        .build()
}

/// The join job: the latest version of every order, with its customer's name and email,
/// rewritten in full as `customer_orders`.
async fn join(root: Location) -> etl::Result<JobOutput> {
    let lake = LakeSink::new(root.clone());
    let latest = |table: &'static str, key: &str| {
        let lake = lake.clone();
        let key = vec![key.to_string()];
        async move {
            let batches = lake.read_table(table).await?;
            keep_latest(table, &batches, &key, &["updated_at".to_string()]).map(|(b, _)| b)
        }
    };
    let (Some(customers), Some(orders)) = (
        latest("customers", "customer_id").await?,
        latest("orders", "order_id").await?,
    ) else {
        return Ok(JobOutput::done("nothing to join yet"));
    };
    let joined = lookup_join(
        "customer_orders",
        &orders,
        &[customers],
        &["customer_id"],
        &["name", "email"],
    )?;
    let source = MemorySource::new();
    source.append("customer_orders", joined)?;
    let report = Pipeline::builder("daily_join")
        .source(source)
        .sink(lake)
        .watermarks(ObjectStoreWatermarkStore::new(root.child("_etl/watermarks")))
        .table(TableSpec::new("customer_orders").mode(LoadMode::Full))
        .build()?
        .run()
        .await?
        .into_result()?;
    let rows = report.tables[0].target_count.unwrap_or(0);
    Ok(JobOutput {
        summary: format!("{rows} orders joined to their customers"),
        report: Some(report),
    })
}

fn workflow(lake: &Path) -> etl::Result<Workflow> {
    let root = Location::local(lake)?;
    let retry = RetryPolicy::exponential(3, Duration::from_secs(5));
    let landing = lake.to_path_buf();
    let join_root = root.clone();
    Workflow::new("daily")
        .max_concurrency(2)
        .history(RunHistory::new(root.clone()))
        .job(Job::new("land", move |_ctx| {
            let landing = landing.clone();
            async move {
                Ok(JobOutput::done(match land_next(&landing)? {
                    Some(day) => format!("{day} drop landed"),
                    None => "no new drop (both sample days landed)".to_string(),
                }))
            }
        }))
        .job(
            Job::pipeline(
                "extract_customers",
                extract(&root, "customers", "customer_id", Partitioning::ByProcessingDate)?,
            )
            .after("land", When::Succeeded)
            .retry(retry.clone())
            .timeout(Duration::from_secs(600)),
        )
        .job(
            Job::pipeline(
                "extract_orders",
                extract(&root, "orders", "order_id", Partitioning::ByDate("order_date".into()))?,
            )
            .after("land", When::Succeeded)
            .retry(retry)
            .timeout(Duration::from_secs(600)),
        )
        .job(
            Job::new("join", move |_ctx| join(join_root.clone()))
                .after("extract_customers", When::Succeeded)
                .after("extract_orders", When::Succeeded),
        )
        .job(Job::crawl("crawl", root).after("join", When::Succeeded))
        .on_success(|r| eprintln!("ok    {} (attempt {})", r.job, r.attempt))
        .on_failure(|r| {
            eprintln!(
                "ALERT {} {:?} after {} attempts: {}",
                r.job,
                r.status,
                r.attempt,
                r.error.as_deref().unwrap_or("")
            )
        })
        .build()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let positional: Vec<&String> = args
        .iter()
        .enumerate()
        .filter(|(i, a)| !a.starts_with("--") && (*i == 0 || args[i - 1] != "--tz"))
        .map(|(_, a)| a)
        .collect();
    let lake: PathBuf = positional.first().map_or("./lake".into(), |s| s.into());
    let mut schedule = Schedule::parse(positional.get(1).map_or("cron(0 2 * * ? *)", |s| s.as_str()))?;
    if let Some(i) = args.iter().position(|a| a == "--tz") {
        schedule = schedule.in_time_zone(args.get(i + 1).ok_or("--tz needs a zone name")?)?;
    }
    std::fs::create_dir_all(&lake)?;
    let wf = workflow(&lake)?;

    if args.iter().any(|a| a == "--once") {
        let report = wf.run().await;
        for j in &report.jobs {
            let what = j
                .output
                .as_ref()
                .map(|o| o.summary.clone())
                .or(j.error.clone())
                .unwrap_or_default();
            println!("{:<18} {:<10} {}", j.job, format!("{:?}", j.status), what);
        }
        std::process::exit(if report.is_success() { 0 } else { 1 });
    }

    let clock = Clock::system();
    let next = schedule.next_after(clock.now()).ok_or("the schedule never fires")?;
    eprintln!("schedule {schedule}: next round at {next}; Ctrl-C stops");
    let handle = Scheduler::new(clock).schedule(wf, schedule, Overlap::Skip).start();
    tokio::signal::ctrl_c().await?;
    eprintln!("stopping: a round in progress finishes first");
    handle.shutdown().await;
    Ok(())
}
