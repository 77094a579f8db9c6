//! A table's run as a shard plan ([`crate::shard`]): plan, stage-only shards, one commit.

use std::time::Instant;

use chrono::Utc;
use tracing::Instrument;

use super::{Done, Pipeline, Pumped, failpoint, keep_keys, new_run_id, validate_mode};
use crate::error::{Error, Result};
use crate::mode::ModeOverrides;
use crate::position::{Checkpoint, CursorValue, Position};
use crate::report::{RunReport, TableReport, TableStatus, WatermarkSummary};
use crate::shard::{
    Guarantee, PLAN_FORMAT, PipelinePlan, PlanBase, PlanDir, Shard, ShardManifest, ShardOutcome, ShardPlan, ShardSizing,
};
use crate::sink::{ShardSink, WriteRequest};
use crate::source::{ExtractStats, ReadRequest};
use crate::spec::TableSpec;
use crate::watermark::Watermark;

impl Pipeline {
    /// Plans the next run of `table` as shards ([`crate::shard`]): takes the window's
    /// high-water mark now, as a run would, and splits the window into shards sized by
    /// `sizing`: by primary-key range (database tables), or into sets of the new and changed
    /// files (files tables). Reads no rows and writes nothing; store the plan with
    /// [`PlanDir::create`], run each shard with [`Pipeline::run_shard`] (anywhere), then
    /// [`Pipeline::commit_shards`]. A plan ignores [`TableSpec::chunk_rows`]: each shard
    /// reads its whole key range.
    ///
    /// # Errors
    /// [`Error::Config`] for a table the pipeline lacks, a sink that cannot commit shards, a
    /// source that cannot split the table (the database sources split by a primary key of one
    /// integer column, a files source by its files, not by rows), or a sizing of zero;
    /// [`Error::TargetLost`]; the source's and the stores' errors.
    pub async fn plan_shards(&self, table: &str, sizing: ShardSizing, overrides: &ModeOverrides) -> Result<ShardPlan> {
        let plan = self.plan_table(self.spec(table)?, sizing, overrides).await?;
        match &plan.unsplit {
            Some(why) => Err(Error::config(why.clone())),
            None => Ok(plan),
        }
    }

    /// Plans the next run of the named tables (`tables` empty: every table) as shards, each
    /// table as [`Pipeline::plan_shards`] plans it, into one [`PipelinePlan`]: store it with
    /// [`PlanDir::create_pipeline`], run its shards (numbered across the tables) with
    /// [`Pipeline::run_shard`], then commit them with [`Pipeline::commit_shards`]. A table
    /// that cannot be split by key (no primary key of one integer column) is one shard
    /// reading its whole window ([`ShardPlan::unsplit`] says why).
    ///
    /// # Errors
    /// As [`Pipeline::plan_shards`], for any of the tables (then nothing is planned).
    pub async fn plan_pipeline(
        &self,
        tables: &[&str],
        sizing: ShardSizing,
        overrides: &ModeOverrides,
    ) -> Result<PipelinePlan> {
        let mut plans = Vec::new();
        for spec in self.selected(tables)? {
            plans.push(self.plan_table(spec, sizing, overrides).await?);
        }
        let plan = PipelinePlan {
            format: PLAN_FORMAT,
            id: new_run_id(),
            pipeline: self.name.clone(),
            planned_at: Utc::now(),
            tables: plans,
        };
        tracing::info!(plan = %plan.id, tables = plan.tables.len(), shards = plan.shard_count(), "planned");
        Ok(plan)
    }

    async fn plan_table(&self, spec: &TableSpec, sizing: ShardSizing, overrides: &ModeOverrides) -> Result<ShardPlan> {
        let mode = overrides.get(&spec.name).unwrap_or(spec.mode);
        validate_mode(self.sink.as_ref(), spec, mode)?;
        self.shard_sink(spec)?;
        if matches!(
            sizing,
            ShardSizing::Count(0) | ShardSizing::Rows(0) | ShardSizing::Bytes(0)
        ) {
            return Err(Error::config(format!(
                "table `{}`: a plan needs at least one shard, and shards of at least one row or byte",
                spec.name
            )));
        }
        self.source.check(spec).await?;
        let mut report = TableReport::new(&spec.name, &spec.target, mode);
        let (wm, cp, mode) = self.start_table(spec, mode, &mut report).await?;
        let id = new_run_id();
        let from = wm
            .as_ref()
            .filter(|w| !w.reset && mode.reads_incrementally())
            .map(|w| &w.position);
        let split = self
            .source
            .split(
                ReadRequest {
                    spec,
                    mode,
                    from,
                    run_id: &id,
                    batch_size: self.batch_size,
                    limit: None,
                    until: None,
                    keys: None,
                    files: None,
                },
                sizing,
            )
            .await?;
        let shards = if split.no_new_data && mode.reads_incrementally() {
            Vec::new()
        } else if let Some(sets) = split.files {
            sets.into_iter()
                .enumerate()
                .map(|(index, files)| Shard {
                    index,
                    keys: (i64::MIN, i64::MAX),
                    files: Some(files),
                })
                .collect()
        } else {
            split
                .keys
                .iter()
                .enumerate()
                .map(|(index, keys)| Shard {
                    index,
                    keys: *keys,
                    files: None,
                })
                .collect()
        };
        tracing::info!(table = %spec.name, plan = %id, shards = shards.len(), "planned");
        Ok(ShardPlan {
            format: PLAN_FORMAT,
            id,
            pipeline: self.name.clone(),
            table: spec.name.clone(),
            mode,
            planned_at: Utc::now(),
            base: wm.as_ref().map(|w| PlanBase {
                generation: w.generation,
                run_id: w.run_id.clone(),
            }),
            last_checkpoint: cp.map(|c| c.run_id),
            from: from.cloned(),
            high: split.high,
            held_back: split.held_back,
            guarantee: Guarantee::Window,
            unsplit: split.unsplit,
            shards,
        })
    }

    /// Runs shard `index` of the plan in `dir`: reads the plan's window within the shard's key
    /// range, stages it in the sink (invisible) and records the shard's manifest once. A shard
    /// whose manifest is there already reads nothing; an attempt that loses the race to record
    /// discards what it staged. Moves no watermark. In a pipeline plan's directory, `index`
    /// is the pipeline-wide one ([`PipelinePlan::locate`]).
    ///
    /// # Errors
    /// [`Error::Config`] for a plan of another pipeline or an index it lacks;
    /// [`Error::ConcurrentRun`] when the table moved on since the plan (another run, or the
    /// plan committed); the source's, sink's and store's errors. Nothing is recorded then.
    pub async fn run_shard(&self, dir: &PlanDir, index: usize) -> Result<ShardOutcome> {
        let Some(whole) = dir.pipeline().await? else {
            return self.run_table_shard(dir, index).await;
        };
        self.check_pipeline(&whole)?;
        let (t, i) = whole.locate(index).ok_or_else(|| {
            Error::config(format!(
                "plan `{}` of pipeline `{}` has {} shard(s): there is no shard {index}",
                whole.id,
                whole.pipeline,
                whole.shard_count()
            ))
        })?;
        let table = &whole.tables[t];
        self.run_table_shard(&dir.table(table), table.shards[i].index).await
    }

    async fn run_table_shard(&self, dir: &PlanDir, index: usize) -> Result<ShardOutcome> {
        let plan = dir.plan().await?;
        let spec = self.plan_spec(&plan)?;
        let shard = plan.shards.get(index).ok_or_else(|| {
            Error::config(format!(
                "plan `{}` of table `{}` has {} shard(s): there is no shard {index}",
                plan.id,
                plan.table,
                plan.shards.len()
            ))
        })?;
        let span = tracing::info_span!("etl_shard", pipeline = %self.name, table = %spec.name, plan = %plan.id, index);
        async {
            if let Some(manifest) = dir.manifest(index).await? {
                tracing::info!("the shard has run already");
                return Ok(ShardOutcome {
                    manifest,
                    recorded: false,
                });
            }
            let wm = self.watermarks.load(&self.name, &spec.name).await?;
            self.check_base(&plan, spec, wm.as_ref())?;
            let attempt = new_run_id();
            let run_id = format!("{}-{index}-{attempt}", plan.id);
            // The plan's end, in every mode: a whole read ignores it, and no shard looks for
            // the greatest cursor again.
            let until = plan.high.cursor.as_ref();
            let keys = [shard.keys];
            // A file set holds every key of its files; a shard of every key reads the whole
            // window (a table that is not split by key has no key to read by).
            let by_key = shard.files.is_none() && shard.keys != (i64::MIN, i64::MAX);
            // The plan's end was held below every transaction in progress when the plan was
            // made: a transaction in progress now started after that, on the database's clock,
            // so its rows land past the end (or, under a settle age, the end is older still).
            // Held again, a shard would read less than the plan says it reads.
            let unheld = TableSpec {
                wait_for_commits: false,
                settle: None,
                ..spec.clone()
            };
            let extract = self
                .source
                .read(ReadRequest {
                    spec: &unheld,
                    mode: plan.mode,
                    from: plan.from.as_ref(),
                    run_id: &run_id,
                    batch_size: self.batch_size,
                    limit: None,
                    until,
                    keys: by_key.then_some(&keys[..]),
                    files: shard.files.as_deref(),
                })
                .await?;
            let extract = if by_key {
                keep_keys(spec, extract, &keys)
            } else {
                extract
            };
            let sink = self.shard_sink(spec)?;
            let mut writer = sink
                .begin_shard(WriteRequest {
                    pipeline: &self.name,
                    spec,
                    mode: plan.mode,
                    run_id: &run_id,
                    started_at: plan.planned_at,
                    last_checkpoint: plan.last_checkpoint.as_deref(),
                    watermark_home: None,
                })
                .await?;
            let mut pumped = Pumped::default();
            let pumped_ok = self
                .pump(
                    spec,
                    plan.mode,
                    plan.planned_at,
                    extract.stream,
                    writer.as_mut(),
                    false,
                    &mut pumped,
                )
                .await;
            if let Err(e) = pumped_ok {
                return Err(super::abort(writer, e).await);
            }
            let staged = writer.stage().await?;
            failpoint("after_stage");
            let described = match staged.manifest() {
                Ok(d) => d,
                Err(e) => {
                    let _ = staged.abort().await;
                    return Err(e);
                }
            };
            let manifest = ShardManifest {
                plan: plan.id.clone(),
                index,
                attempt,
                extracted: pumped.extracted,
                written: pumped.written,
                collapsed: pumped.collapsed,
                rejected: ExtractStats::get(&extract.stats.rejected_rows),
                bytes: staged.summary().bytes,
                files: staged.summary().files,
                max_cursor: pumped.max_cursor.clone(),
                staged: described,
                recorded_at: Utc::now(),
            };
            if dir.record(&manifest).await? {
                tracing::info!(rows = manifest.written, "shard staged");
                return Ok(ShardOutcome {
                    manifest,
                    recorded: true,
                });
            }
            // Another attempt recorded the shard while this one read it.
            tracing::info!("another attempt recorded the shard first: discarding this one");
            if let Err(e) = staged.abort().await {
                tracing::warn!(error = %e, "could not discard staged data; the sink's next commit deletes it");
            }
            let manifest = dir.manifest(index).await?.ok_or_else(|| Error::Metadata {
                path: dir.location().url().to_string(),
                message: format!("shard {index}'s manifest could not be created, and is not there"),
            })?;
            Ok(ShardOutcome {
                manifest,
                recorded: false,
            })
        }
        .instrument(span)
        .await
    }

    /// Commits the plan in `dir` once every shard has staged: one sink commit makes all the
    /// shards' rows visible with the run's checkpoint, then the watermark moves once (after
    /// the reconciliation the spec asks for, as a run's). Committing a plan again, or after a
    /// commit that died before its watermark moved, completes it and reports it recovered.
    ///
    /// A pipeline plan's directory commits each table's plan so, one after the other, once
    /// every shard of every table has staged; a table whose commit fails is reported failed
    /// (as a run reports it) and the others still commit. Committing again completes it.
    ///
    /// # Errors
    /// [`Error::IncompletePlan`] naming the shards without a manifest; [`Error::ConcurrentRun`]
    /// when the table moved on since the plan; [`Error::TargetLost`]; the sink's and stores'
    /// errors (of one table's plan). Nothing is committed then.
    pub async fn commit_shards(&self, dir: &PlanDir) -> Result<RunReport> {
        let started_at = Utc::now();
        let (id, tables) = match dir.pipeline().await? {
            None => {
                let plan = dir.plan().await?;
                let report = self.commit_table(&plan, dir).await?;
                (plan.id, vec![report])
            }
            Some(whole) => {
                self.check_pipeline(&whole)?;
                self.check_complete(&whole, dir).await?;
                let mut reports = Vec::with_capacity(whole.tables.len());
                for plan in &whole.tables {
                    let report = match self.commit_table(plan, &dir.table(plan)).await {
                        Ok(r) => r,
                        Err(e) => {
                            tracing::error!(table = %plan.table, error = %e, "table failed");
                            // (A table the configuration no longer has is reported too.)
                            let target = self.spec(&plan.table).map(|s| s.target.clone()).unwrap_or_default();
                            let mut r = TableReport::new(&plan.table, &target, plan.mode);
                            r.fail(&e);
                            r
                        }
                    };
                    reports.push(report);
                }
                (whole.id, reports)
            }
        };
        let committed = tables
            .iter()
            .any(|t| t.status == TableStatus::Committed && !t.recovered);
        let crawl = self.crawl_after_commit(committed).await;
        Ok(RunReport {
            pipeline: self.name.clone(),
            run_id: id,
            started_at,
            finished_at: Utc::now(),
            tables,
            crawl,
        })
    }

    /// Commits one table's plan.
    async fn commit_table(&self, plan: &ShardPlan, dir: &PlanDir) -> Result<TableReport> {
        let spec = self.plan_spec(plan)?;
        let t0 = Instant::now();
        let mut report = TableReport::new(&spec.name, &spec.target, plan.mode);
        let span = tracing::info_span!("etl_commit_shards", pipeline = %self.name, table = %spec.name, plan = %plan.id);
        self.commit_plan(plan, dir, spec, &mut report).instrument(span).await?;
        report.duration_ms = t0.elapsed().as_millis() as u64;
        Ok(report)
    }

    /// Every shard of every table of a pipeline plan has staged: else nothing is committed.
    async fn check_complete(&self, whole: &PipelinePlan, dir: &PlanDir) -> Result<()> {
        let (mut tables, mut missing) = (Vec::new(), Vec::new());
        for (t, plan) in whole.tables.iter().enumerate() {
            let table_dir = dir.table(plan);
            for shard in &plan.shards {
                if table_dir.manifest(shard.index).await?.is_none() {
                    missing.push((whole.first_index(t) + shard.index).to_string());
                    if !tables.contains(&plan.table) {
                        tables.push(plan.table.clone());
                    }
                }
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        Err(Error::IncompletePlan {
            plan: whole.id.clone(),
            table: tables.join("`, `"),
            missing: missing.join(", "),
        })
    }

    async fn commit_plan(
        &self,
        plan: &ShardPlan,
        dir: &PlanDir,
        spec: &TableSpec,
        report: &mut TableReport,
    ) -> Result<()> {
        let (wm, cp, mode) = self.start_table(spec, plan.mode, report).await?;
        let generation = wm.as_ref().map_or(0, |w| w.generation);
        let empty = Position::default();
        report.watermark_before = Some(WatermarkSummary::of(
            generation,
            wm.as_ref().map_or(&empty, |w| &w.position),
        ));
        report.watermark_after = report.watermark_before.clone();
        if wm.as_ref().is_some_and(|w| w.run_id == plan.id) {
            tracing::info!("the plan was committed already");
            report.status = TableStatus::Committed;
            report.recovered = true;
            report
                .warnings
                .push(format!("plan `{}` was committed already", plan.id));
            return Ok(());
        }
        if mode != plan.mode {
            return Err(Error::config(format!(
                "table `{}`: plan `{}` runs it {}, but its target must now be reloaded in full; plan again",
                spec.name, plan.id, plan.mode
            )));
        }
        self.check_base(plan, spec, wm.as_ref())?;
        if cp.as_ref().map(|c| c.run_id.as_str()) != plan.last_checkpoint.as_deref() {
            return Err(self.moved_on(spec));
        }
        let mut manifests = Vec::with_capacity(plan.shards.len());
        let mut missing = Vec::new();
        for shard in &plan.shards {
            match dir.manifest(shard.index).await? {
                Some(m) => manifests.push(m),
                None => missing.push(shard.index.to_string()),
            }
        }
        if !missing.is_empty() {
            return Err(Error::IncompletePlan {
                plan: plan.id.clone(),
                table: spec.name.clone(),
                missing: missing.join(", "),
            });
        }
        report.held_back = plan.held_back.clone();
        report.status = TableStatus::NoNewData;
        if manifests.is_empty() {
            // Nothing to commit; the target is still compared, as a run's with nothing new.
            tracing::info!("no new data");
            if let Some((c, applied)) = self.reconcile_after_commit(spec, report).await? {
                let last = cp.as_ref().map(|c| c.run_id.as_str());
                self.repair(spec, &plan.id, plan.planned_at, wm.as_ref(), last, &c, applied, report)
                    .await?;
            }
            report.set_difference();
            return Ok(());
        }
        let written: u64 = manifests.iter().map(|m| m.written).sum();
        let window_low = plan.from.as_ref().and_then(|p| p.cursor.clone());
        let base_cursor = if mode.reads_incrementally() {
            window_low.clone()
        } else {
            None
        };
        let read_up_to = manifests
            .iter()
            .fold(None, |acc, m| CursorValue::max_opt(acc, m.max_cursor.clone()));
        let position = Position {
            cursor: CursorValue::max_opt(CursorValue::max_opt(base_cursor, plan.high.cursor.clone()), read_up_to),
            files: plan.high.files.clone(),
            key: None,
        };
        let checkpoint = Checkpoint {
            run_id: plan.id.clone(),
            parent_run_id: wm.as_ref().map(|w| w.run_id.clone()),
            mode,
            position: position.clone(),
            window_low: window_low.clone(),
            rows: written,
            committed_at: Utc::now(),
        };
        let sink = self.shard_sink(spec)?;
        let req = WriteRequest {
            pipeline: &self.name,
            spec,
            mode,
            run_id: &plan.id,
            started_at: plan.planned_at,
            last_checkpoint: plan.last_checkpoint.as_deref(),
            watermark_home: self.watermark_home.as_deref(),
        };
        let staged = manifests.iter().map(|m| m.staged.clone()).collect();
        let committed = match sink.commit_shards(req, staged, checkpoint).await {
            Ok(c) => c,
            Err(e) => return Err(self.lost_race(spec, plan.last_checkpoint.as_deref(), e).await),
        };
        failpoint("after_sink_commit");
        for m in &manifests {
            report.extracted_count += m.extracted;
            report.collapsed_count += m.collapsed;
            report.rejected_count += m.rejected;
            report.bytes_written += m.bytes;
            report.files_written += m.files;
        }
        report.written_count = written;
        report.chunks = manifests.len() as u64;
        report.target_count = committed.target_rows;
        report.collapsed_count += committed.collapsed;
        report.inserted_count += committed.inserted;
        report.updated_count += committed.updated;
        report.deleted_count += committed.deleted;
        report.status = TableStatus::Committed;
        let done = Done {
            next: Watermark {
                pipeline: self.name.clone(),
                table: spec.name.clone(),
                generation: generation + 1,
                run_id: plan.id.clone(),
                committed_at: Utc::now(),
                mode: Some(mode),
                window_low,
                position,
                rows: written,
                reset: false,
            },
            full: false,
            stored: committed.watermark_stored,
        };
        report.watermark_after = Some(WatermarkSummary::of(done.next.generation, &done.next.position));
        let repair = self.reconcile_after_commit(spec, report).await?;
        self.store_watermark(spec, wm.as_ref(), &done).await?;
        if let Some((c, applied)) = repair {
            let id = plan.id.clone();
            self.repair(
                spec,
                &id,
                plan.planned_at,
                Some(&done.next),
                Some(&id),
                &c,
                applied,
                report,
            )
            .await?;
        }
        report.set_difference();
        Ok(())
    }

    /// The sink's side of shard plans, if it has one.
    fn shard_sink(&self, spec: &TableSpec) -> Result<&dyn ShardSink> {
        self.sink.shard_sink().ok_or_else(|| {
            Error::config(format!(
                "table `{}`: sink `{}` cannot commit shards staged by other processes (the lake, Delta, \
                 Postgres, Redshift and Snowflake sinks can)",
                spec.name,
                self.sink.name()
            ))
        })
    }

    /// The pipeline plan is this pipeline's.
    fn check_pipeline(&self, whole: &PipelinePlan) -> Result<()> {
        if whole.pipeline != self.name {
            return Err(Error::config(format!(
                "plan `{}` is of pipeline `{}`, not `{}`",
                whole.id, whole.pipeline, self.name
            )));
        }
        Ok(())
    }

    /// The spec of the table `plan` runs, if the plan is this pipeline's.
    fn plan_spec(&self, plan: &ShardPlan) -> Result<&TableSpec> {
        if plan.pipeline != self.name {
            return Err(Error::config(format!(
                "plan `{}` is of pipeline `{}`, not `{}`",
                plan.id, plan.pipeline, self.name
            )));
        }
        self.spec(&plan.table)
    }

    /// The plan still starts from the table's watermark.
    fn check_base(&self, plan: &ShardPlan, spec: &TableSpec, wm: Option<&Watermark>) -> Result<()> {
        let now = wm.map(|w| (w.generation, w.run_id.as_str()));
        let planned = plan.base.as_ref().map(|b| (b.generation, b.run_id.as_str()));
        if now == planned {
            return Ok(());
        }
        tracing::warn!(?now, ?planned, "the table's watermark moved since the plan");
        Err(self.moved_on(spec))
    }

    fn moved_on(&self, spec: &TableSpec) -> Error {
        Error::ConcurrentRun {
            pipeline: self.name.clone(),
            table: spec.name.clone(),
        }
    }
}
