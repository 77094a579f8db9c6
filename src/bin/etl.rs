//! `etl`: run a pipeline from a configuration file (see `etl --help`).
//!
//! Exit codes: 0 every table succeeded; 1 the run finished and a table failed (the report
//! says which and why); 2 bad arguments or an invalid configuration; 3 the command could not
//! be carried out (a source, sink or watermark store unreachable, another run in progress).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use etl::config::PipelineConfig;
use etl::{CursorValue, Error, Pipeline, Position, RunReport, TableStatus};

/// Full and incremental loads from a configuration file (TOML, YAML or JSON): sources to a
/// Parquet lake or a warehouse, with watermarks that move only after the target commits.
///
/// The file names a source, a sink and tables (see the README's "From a configuration file").
/// On a terminal each command prints a summary; otherwise one JSON line (a run's report, or
/// the watermarks). Exit codes: 0 success; 1 a table failed; 2 bad arguments or
/// configuration; 3 the command could not be carried out (unreachable service, another run).
#[derive(Parser, Debug)]
#[command(name = "etl", version)]
struct Cli {
    /// Log to stderr: -v for info, -vv for debug, -vvv for trace (`RUST_LOG` overrides;
    /// default: warnings). Secrets never reach a log line.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Runs the pipeline: every table, or those named by --table.
    Run(RunArgs),
    /// What the next run would do with each table, reading no rows and writing nothing: its
    /// mode, the watermark it reads past, and the rows (databases: counted) or the files
    /// (file sources: new and changed) it would read. With --shards, --shard-rows or --shard-bytes: plans
    /// the next run of the one --table as shards (of several --table, or of every table
    /// without one: a plan of those tables, their shards numbered together), stored under
    /// --plans, for `etl shard` and `etl commit`.
    Plan(PlanArgs),
    /// Runs one shard of a plan: reads its part of the window and stages it, invisible, with
    /// a manifest recorded once (a shard run twice stages once). Moves no watermark.
    Shard {
        /// The configuration file (the plan's pipeline).
        config: PathBuf,
        /// The plan's directory, as `etl plan` printed it.
        #[arg(long)]
        plan: String,
        /// The shard's index; default: $JOB_COMPLETION_INDEX (Kubernetes Indexed Jobs), else
        /// $AWS_BATCH_JOB_ARRAY_INDEX (AWS Batch array jobs).
        #[arg(long)]
        index: Option<usize>,
    },
    /// Commits a plan whose shards have all staged: one commit makes every shard's rows
    /// visible, and the watermark moves once. Committing again reports the commit done.
    Commit {
        /// The configuration file (the plan's pipeline).
        config: PathBuf,
        /// The plan's directory, as `etl plan` printed it.
        #[arg(long)]
        plan: String,
    },
    /// Reloads one table in full (FULL over its target) and moves only its watermark.
    Resync {
        /// The configuration file.
        config: PathBuf,
        /// The table.
        table: String,
    },
    /// Reads again the rows of one UPSERT table with a cursor past AFTER and at most THROUGH,
    /// leaving its watermark where it is.
    Backfill {
        /// The configuration file.
        config: PathBuf,
        /// The table.
        table: String,
        /// The range's lower end, excluded (an integer, a date, a timestamp).
        #[arg(long)]
        after: String,
        /// The range's upper end, included.
        #[arg(long)]
        through: String,
    },
    /// Shows, sets or resets a table's watermark.
    Watermark {
        #[command(subcommand)]
        action: WatermarkAction,
    },
    /// Shows every table's watermark.
    Status {
        /// The configuration file.
        config: PathBuf,
    },
    /// Reads and builds the configuration, connecting to nothing; prints its tables.
    Check {
        /// The configuration file.
        config: PathBuf,
    },
    /// Crawls the lake the pipeline writes into its catalog (`_etl/catalog`), and registers
    /// its tables in the Glue database `after_run.glue_database` names.
    Crawl {
        /// The configuration file.
        config: PathBuf,
    },
    /// The lake's catalog.
    Catalog {
        #[command(subcommand)]
        action: CatalogAction,
    },
}

#[derive(Subcommand, Debug)]
enum CatalogAction {
    /// Prints the Athena / Hive DDL of the crawled tables.
    Ddl {
        /// The configuration file.
        config: PathBuf,
        /// The lake's location as Athena reads it (default: `after_run.glue_location`, else
        /// the sink's location).
        #[arg(long)]
        location: Option<String>,
    },
}

/// What `run` and `plan` take.
#[derive(clap::Args, Debug)]
struct RunArgs {
    /// The configuration file.
    config: PathBuf,
    /// Only this table (repeat for several).
    #[arg(long = "table")]
    tables: Vec<String>,
    /// Per-table mode overrides for this run, as Glue jobs' --OBJ: '{"orders":"FULL"}'.
    #[arg(long = "OBJ", value_name = "JSON")]
    obj: Option<String>,
    /// `full`: every table FULL for this run (`incremental`: each in its own mode); --OBJ
    /// wins for its tables.
    #[arg(long = "load_type", value_name = "full|incremental")]
    load_type: Option<String>,
}

/// What `plan` takes.
#[derive(clap::Args, Debug)]
struct PlanArgs {
    #[command(flatten)]
    run: RunArgs,
    /// Plans the next run as this many shards (of each table).
    #[arg(long, conflicts_with_all = ["shard_rows", "shard_bytes"])]
    shards: Option<usize>,
    /// Plans the next run as shards of about this many rows (database tables).
    #[arg(long, conflicts_with = "shard_bytes")]
    shard_rows: Option<u64>,
    /// Plans the next run as shards of about this many bytes (files: their sizes; database
    /// tables: rows times their mean size).
    #[arg(long)]
    shard_bytes: Option<u64>,
    /// Where shard plans are kept (a folder, file:///…, s3://bucket/prefix): the plan goes
    /// into a folder named by its id.
    #[arg(long)]
    plans: Option<String>,
}

/// The shard index of `etl shard`: the flag, else the index an engine sets.
fn shard_index(flag: Option<usize>) -> Result<usize, Error> {
    if let Some(i) = flag {
        return Ok(i);
    }
    for var in ["JOB_COMPLETION_INDEX", "AWS_BATCH_JOB_ARRAY_INDEX"] {
        if let Ok(v) = std::env::var(var) {
            return v
                .trim()
                .parse()
                .map_err(|_| Error::config(format!("${var} is `{v}`, not a shard index")));
        }
    }
    Err(Error::config(
        "which shard? give --index N, or run under an engine that sets $JOB_COMPLETION_INDEX or \
         $AWS_BATCH_JOB_ARRAY_INDEX",
    ))
}

#[derive(Subcommand, Debug)]
enum WatermarkAction {
    /// Prints the table's watermark.
    Show {
        /// The configuration file.
        config: PathBuf,
        /// The table.
        table: String,
    },
    /// Sets the table's cursor watermark: the next incremental run reads rows past VALUE.
    Set {
        /// The configuration file.
        config: PathBuf,
        /// The table.
        table: String,
        /// The cursor value (an integer, `2025-07-01`, `2025-07-01 12:00:00`,
        /// `2025-07-01T12:00:00Z`, or text).
        value: String,
    },
    /// Resets the table's watermark: the next run reads the table from its start.
    Reset {
        /// The configuration file.
        config: PathBuf,
        /// The table.
        table: String,
    },
}

/// What a command ends with.
enum Outcome {
    /// A run's report.
    Report(RunReport),
    /// A run's report, and what sending its figures and catalog did.
    Published(RunReport, Result<Vec<String>, Error>),
    /// Something to print (JSON off a terminal, text on one).
    Print { json: serde_json::Value, text: String },
}

/// A cursor value as typed on the command line: an integer, a date, a timestamp with or
/// without a zone, else text.
fn cursor(text: &str) -> CursorValue {
    use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
    if let Ok(i) = text.parse::<i64>() {
        return CursorValue::Int(i);
    }
    if let Ok(d) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return CursorValue::Date(d);
    }
    for f in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(text, f) {
            return CursorValue::Timestamp(t);
        }
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return CursorValue::TimestampTz(t.with_timezone(&Utc));
    }
    CursorValue::Text(text.to_string())
}

async fn pipeline(config: &PathBuf) -> Result<Pipeline, Error> {
    PipelineConfig::load(config)?.build().await
}

/// The modes of `--load_type` and `--OBJ`.
fn overrides_of(load_type: Option<String>, obj: Option<String>, p: &Pipeline) -> Result<etl::ModeOverrides, Error> {
    let mut args = Vec::new();
    if let Some(l) = load_type {
        args.extend(["--load_type".to_string(), l]);
    }
    if let Some(j) = obj {
        args.extend(["--OBJ".to_string(), j]);
    }
    etl::job::Args::parse(args)?.mode_overrides(p.tables())
}

fn watermark_json(table: &str, w: Option<&etl::Watermark>) -> (serde_json::Value, String) {
    match w {
        Some(w) => (
            serde_json::json!({ "table": table, "watermark": w }),
            format!(
                "{table}: generation {}, run {}, committed {}, cursor {}, {} files",
                w.generation,
                w.run_id,
                w.committed_at.format("%Y-%m-%d %H:%M:%S UTC"),
                w.position
                    .cursor
                    .as_ref()
                    .map_or_else(|| "none".to_string(), |c| c.to_string()),
                w.position.files.len()
            ),
        ),
        None => (
            serde_json::json!({ "table": table, "watermark": null }),
            format!("{table}: no watermark (the next run reads from the start)"),
        ),
    }
}

async fn execute(command: Command) -> Result<Outcome, Error> {
    match command {
        Command::Run(RunArgs {
            config,
            tables,
            obj,
            load_type,
        }) => {
            let config = PipelineConfig::load(&config)?;
            let mut builder = config.builder().await?;
            if std::io::stderr().is_terminal() {
                builder = builder.on_progress(progress_display());
            }
            let p = builder.build()?;
            let overrides = overrides_of(load_type, obj, &p)?;
            let report = if tables.is_empty() {
                p.run_with(&overrides).await?
            } else {
                let tables: Vec<&str> = tables.iter().map(String::as_str).collect();
                p.run_tables(&tables, &overrides).await?
            };
            // The figures and the catalog go out after the run, whatever it found; a failure
            // to send them is said on stderr and in the exit code, the report printed anyway.
            let published = config.publish(&report).await;
            Ok(Outcome::Published(report, published))
        }
        Command::Crawl { config } => {
            let config = PipelineConfig::load(&config)?;
            let crawler = config.crawler().await?;
            let summary = crawler
                .crawl_into(&etl::catalog::Catalog::new(crawler.location().clone()))
                .await?;
            let glue = config.register_in_glue().await?;
            let names: Vec<&str> = summary.tables.iter().map(|t| t.name.as_str()).collect();
            let mut text = format!(
                "{} tables, {} Parquet footers read, {} CSV/JSON files sampled",
                names.len(),
                summary.footers_read,
                summary.samples_read
            );
            if let Some(g) = &glue {
                text.push_str(&format!("\n{g}"));
            }
            Ok(Outcome::Print {
                json: serde_json::json!({ "tables": names, "footers_read": summary.footers_read,
                    "samples_read": summary.samples_read, "glue": glue }),
                text,
            })
        }
        Command::Catalog {
            action: CatalogAction::Ddl { config, location },
        } => {
            let config = PipelineConfig::load(&config)?;
            let root = match location.or_else(|| config.after_run.as_ref().and_then(|a| a.glue_location.clone())) {
                Some(r) => r,
                None => config.lake().await?.url().to_string(),
            };
            let mut ddl = Vec::new();
            for t in config.catalog_tables().await? {
                ddl.extend(t.athena_ddl(&root)?);
            }
            Ok(Outcome::Print {
                json: serde_json::json!({ "ddl": ddl }),
                text: ddl.join("\n"),
            })
        }
        Command::Plan(PlanArgs {
            run:
                RunArgs {
                    config,
                    tables,
                    obj,
                    load_type,
                },
            shards,
            shard_rows,
            shard_bytes,
            plans,
        }) if shards.is_some() || shard_rows.is_some() || shard_bytes.is_some() => {
            let sizing = match (shards, shard_rows, shard_bytes) {
                (Some(n), _, _) => etl::shard::ShardSizing::Count(n),
                (None, Some(r), _) => etl::shard::ShardSizing::Rows(r),
                (None, None, Some(b)) => etl::shard::ShardSizing::Bytes(b),
                (None, None, None) => unreachable!("guarded"),
            };
            let plans = plans.ok_or_else(|| Error::config("give --plans: where the shard plan is kept"))?;
            let plans = etl::config::location_of("--plans", &plans)?;
            let p = pipeline(&config).await?;
            let overrides = overrides_of(load_type, obj, &p)?;
            let commands = |url: &str, shards: usize| {
                format!(
                    "  etl shard {} --plan {url} --index N   (N = 0..{})\n  etl commit {} --plan {url}",
                    config.display(),
                    shards.saturating_sub(1),
                    config.display(),
                )
            };
            if let [table] = tables.as_slice() {
                let plan = p.plan_shards(table, sizing, &overrides).await?;
                let dir = etl::shard::PlanDir::create(&plans, &plan).await?;
                let url = dir.location().url().to_string();
                let text = format!(
                    "plan {} of table `{}` ({}): {} shard(s), at {url}\n{}",
                    plan.id,
                    plan.table,
                    plan.mode,
                    plan.shards.len(),
                    commands(&url, plan.shards.len()),
                );
                return Ok(Outcome::Print {
                    json: serde_json::json!({ "plan": url, "id": plan.id, "table": plan.table, "shards": plan.shards.len(), "high": plan.high }),
                    text,
                });
            }
            // No --table, or several: one plan of those tables, their shards numbered together.
            let only: Vec<&str> = tables.iter().map(String::as_str).collect();
            let plan = p.plan_pipeline(&only, sizing, &overrides).await?;
            let dir = etl::shard::PlanDir::create_pipeline(&plans, &plan).await?;
            let url = dir.location().url().to_string();
            let mut text = format!(
                "plan {} of pipeline `{}`: {} table(s), {} shard(s), at {url}",
                plan.id,
                plan.pipeline,
                plan.tables.len(),
                plan.shard_count()
            );
            let mut listed = Vec::new();
            for (i, t) in plan.tables.iter().enumerate() {
                let first = plan.first_index(i);
                text.push_str(&format!(
                    "\n  `{}` ({}): shards {first}..{}{}",
                    t.table,
                    t.mode,
                    (first + t.shards.len()).saturating_sub(1),
                    t.unsplit
                        .as_ref()
                        .map(|_| ", whole (no integer key to split by)")
                        .unwrap_or_default()
                ));
                listed.push(serde_json::json!({
                    "table": t.table, "id": t.id, "first_index": first, "shards": t.shards.len(),
                    "high": t.high, "unsplit": t.unsplit,
                }));
            }
            text.push('\n');
            text.push_str(&commands(&url, plan.shard_count()));
            Ok(Outcome::Print {
                json: serde_json::json!({ "plan": url, "id": plan.id, "shards": plan.shard_count(), "tables": listed }),
                text,
            })
        }
        Command::Shard { config, plan, index } => {
            let index = shard_index(index)?;
            let p = pipeline(&config).await?;
            let dir = etl::shard::PlanDir::new(etl::config::location_of("--plan", &plan)?);
            let out = p.run_shard(&dir, index).await?;
            let m = &out.manifest;
            let text = if out.recorded {
                format!(
                    "shard {index} of plan {}: {} rows staged in {} file(s)",
                    m.plan, m.written, m.files
                )
            } else {
                format!(
                    "shard {index} of plan {}: staged already ({} rows, attempt {}); nothing new staged",
                    m.plan, m.written, m.attempt
                )
            };
            Ok(Outcome::Print {
                json: serde_json::to_value(&out).expect("outcomes serialise"),
                text,
            })
        }
        Command::Commit { config, plan } => {
            let p = pipeline(&config).await?;
            let dir = etl::shard::PlanDir::new(etl::config::location_of("--plan", &plan)?);
            Ok(Outcome::Report(p.commit_shards(&dir).await?))
        }
        Command::Plan(PlanArgs {
            run:
                RunArgs {
                    config,
                    tables,
                    obj,
                    load_type,
                },
            plans,
            ..
        }) => {
            if plans.is_some() {
                return Err(Error::config(
                    "--plans is for a shard plan: give --shards, --shard-rows or --shard-bytes too",
                ));
            }
            let p = pipeline(&config).await?;
            let overrides = overrides_of(load_type, obj, &p)?;
            let only: Vec<&str> = tables.iter().map(String::as_str).collect();
            let plans = p.plan(&only, &overrides).await?;
            let text: Vec<String> = plans
                .iter()
                .map(|t| {
                    let from = match (&t.watermark.cursor, t.watermark.generation) {
                        (_, 0) => "from the start".to_string(),
                        (Some(c), _) => format!("past {c}"),
                        (None, _) => format!("past generation {}", t.watermark.generation),
                    };
                    let what = match (t.estimate.rows, t.estimate.files) {
                        (Some(r), _) => format!("{r} rows"),
                        (None, Some(f)) => format!("{f} files, {} bytes", t.estimate.bytes.unwrap_or(0)),
                        (None, None) => "an unknown amount".to_string(),
                    };
                    format!("  {:<24} {:<16} {from}: {what}", t.table, t.mode.to_string())
                })
                .collect();
            Ok(Outcome::Print {
                json: serde_json::json!({ "pipeline": p.name(), "tables": plans }),
                text: text.join("\n"),
            })
        }
        Command::Resync { config, table } => Ok(Outcome::Report(pipeline(&config).await?.resync(&table).await?)),
        Command::Backfill {
            config,
            table,
            after,
            through,
        } => Ok(Outcome::Report(
            pipeline(&config)
                .await?
                .backfill(&table, cursor(&after), cursor(&through))
                .await?,
        )),
        Command::Watermark { action } => match action {
            WatermarkAction::Show { config, table } => {
                let w = pipeline(&config).await?.watermark(&table).await?;
                let (json, text) = watermark_json(&table, w.as_ref());
                Ok(Outcome::Print { json, text })
            }
            WatermarkAction::Set { config, table, value } => {
                let p = pipeline(&config).await?;
                let position = Position {
                    cursor: Some(cursor(&value)),
                    ..Position::default()
                };
                let w = p.set_watermark(&table, position).await?;
                let (json, text) = watermark_json(&table, Some(&w));
                Ok(Outcome::Print { json, text })
            }
            WatermarkAction::Reset { config, table } => {
                let w = pipeline(&config).await?.reset_watermark(&table).await?;
                let (json, text) = watermark_json(&table, Some(&w));
                Ok(Outcome::Print { json, text })
            }
        },
        Command::Status { config } => {
            let p = pipeline(&config).await?;
            let mut json = Vec::new();
            let mut text = Vec::new();
            for spec in p.tables() {
                let w = p.watermark(&spec.name).await?;
                let (j, t) = watermark_json(&spec.name, w.as_ref());
                json.push(j);
                text.push(t);
            }
            Ok(Outcome::Print {
                json: serde_json::json!({ "pipeline": p.name(), "tables": json }),
                text: text.join("\n"),
            })
        }
        Command::Check { config } => {
            let p = pipeline(&config).await?;
            let tables: Vec<String> = p
                .tables()
                .iter()
                .map(|t| format!("{} ({}) -> {}", t.name, t.mode, t.target))
                .collect();
            Ok(Outcome::Print {
                json: serde_json::json!({ "pipeline": p.name(), "tables": p.tables().iter().map(|t| &t.name).collect::<Vec<_>>() }),
                text: format!("{}: {} tables\n{}", p.name(), tables.len(), tables.join("\n")),
            })
        }
    }
}

/// Progress lines for a terminal, on stderr: each table at most once a second while it reads,
/// and once when done — rows, rows per second, megabytes read, seconds elapsed.
fn progress_display() -> impl Fn(&etl::Progress) + Send + Sync + 'static {
    use std::collections::HashMap;
    use std::time::{Duration, Instant};
    let seen: std::sync::Mutex<HashMap<String, (Instant, Instant)>> = std::sync::Mutex::default();
    move |p: &etl::Progress| {
        let now = Instant::now();
        let mut seen = seen.lock().expect("progress lock");
        let (start, last) = seen
            .entry(p.table.clone())
            .or_insert((now, now - Duration::from_secs(1)));
        if !p.done && now.duration_since(*last) < Duration::from_secs(1) {
            return;
        }
        *last = now;
        let secs = now.duration_since(*start).as_secs_f64();
        let rate = if secs > 0.0 {
            p.rows as f64 / secs
        } else {
            p.rows as f64
        };
        eprintln!(
            "  {:<24} {:>12} rows {:>12.0} rows/s {:>9.1} MB {:>7.1} s{}",
            p.table,
            p.rows,
            rate,
            p.bytes as f64 / 1e6,
            secs,
            if p.done { "  done" } else { "" }
        );
    }
}

/// A run's summary for a terminal: one line per table.
fn summary(r: &RunReport) -> String {
    let mut out = vec![format!(
        "run {} of `{}`: {}",
        r.run_id,
        r.pipeline,
        if r.is_success() { "succeeded" } else { "failed" }
    )];
    for t in &r.tables {
        let status = match t.status {
            TableStatus::Committed => "committed",
            TableStatus::NoNewData => "no new data",
            TableStatus::Failed => "FAILED",
            _ => "skipped",
        };
        let mut line = format!(
            "  {:<24} {:<12} {} read, {} written, target {}",
            t.table,
            status,
            t.extracted_count,
            t.written_count,
            t.target_count.map_or_else(|| "?".to_string(), |n| n.to_string())
        );
        if let Some(e) = &t.error {
            line.push_str(&format!("\n    {e}"));
        }
        out.push(line);
    }
    out.join("\n")
}

/// Prints a run's report; its exit code.
fn report(r: &RunReport, terminal: bool) -> ExitCode {
    if terminal {
        println!("{}", summary(r));
    } else {
        println!("{}", r.to_json());
    }
    ExitCode::from(if r.is_success() { 0 } else { 1 })
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let level = match cli.verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("etl: cannot start the runtime: {e}");
            return ExitCode::from(3);
        }
    };
    let terminal = std::io::stdout().is_terminal();
    match runtime.block_on(execute(cli.command)) {
        Ok(Outcome::Report(r)) => report(&r, terminal),
        Ok(Outcome::Published(r, published)) => {
            let code = report(&r, terminal);
            match published {
                Ok(lines) => {
                    for l in lines {
                        eprintln!("etl: {l}");
                    }
                    code
                }
                Err(e) => {
                    eprintln!("etl: the run's figures or catalog were not sent: {e}");
                    ExitCode::from(3)
                }
            }
        }
        Ok(Outcome::Print { json, text }) => {
            if terminal {
                println!("{text}");
            } else {
                println!("{json}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("etl: {e}");
            ExitCode::from(if matches!(e, Error::Config { .. }) { 2 } else { 3 })
        }
    }
}
