//! Orchestration: check a job completely ([`plan_job`]), then run it as one streaming plan
//! and commit its output exactly once ([`execute`]).
//!
//! [`execute`] reads as the pipeline it runs: build the scorer, plan the outputs, spawn the
//! partition tasks ([`partition`]: each pulls scored batches, reading, features and inference
//! happening inside the pull in DataFusion's plan ([`physical`]), and writes them to its own
//! parts in the staging), join them, check the reject budget, commit, report.

pub mod baseline;
pub mod memory;
pub mod monitor;
pub mod partition;
pub mod physical;
pub mod plan;
pub mod resume;
pub mod scheduler;
pub mod shard;
pub mod work_queue;

use std::sync::Arc;
use std::time::Instant;

use datafusion::physical_plan::{
    ExecutionPlan, StatisticsArgs, StatisticsContext, execute_stream_partitioned,
};
use indicatif::ProgressBar;
use serde::Serialize;
use tracing::Instrument;

use crate::diagnostics::SpecError;
use crate::model::ModelError;
use crate::output::{Committer, OutputError, RollingWriter, Staging, history};
use crate::report::agreement::Agreements;
use crate::report::columns::ColumnProfiles;
use crate::report::{Manifest, ModelReport, PartFile, RunFacts, RunMetrics, merge_all};
use crate::score::native::NativeEngine;
use crate::score::tree_order::{EnsembleSplits, TreeRowOrder};
use crate::score::trees::NativeEnsemble;
use crate::score::{ScoreStats, Scorer};
use crate::spec::OutputLayout;
use partition::{AbortOnDrop, Budget, PartitionResult, PartitionTask};
use physical::Scoring;
pub use plan::{JobPlan, plan_job, plan_shard};

/// Why a run did not succeed. [`RunError::exit_code`] maps each to the CLI's exit code.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The spec, the model or the input cannot work together; nothing was read.
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    Runtime(ModelError),
    #[error(transparent)]
    Output(#[from] OutputError),
    /// More rows were rejected than `[run]` allows; nothing was committed.
    #[error("{message}")]
    RejectBudget { message: String },
    #[error(transparent)]
    DataFusion(#[from] datafusion::error::DataFusionError),
    #[error(transparent)]
    Arrow(#[from] datafusion::arrow::error::ArrowError),
    #[error("{what} failed: {message}")]
    Task { what: String, message: String },
    /// `batchscore commit` found no run in progress, and no committed output.
    #[error("output {output}: no sharded run is in progress here, and none has committed")]
    NoRun { output: String },
    /// `batchscore commit` before every shard finished.
    #[error(
        "output {output}: run {run_id} cannot commit yet: shard(s) {missing} of {of} have not finished; run them (the same command with --shard I/{of}), then commit again"
    )]
    ShardsMissing {
        output: String,
        run_id: String,
        missing: String,
        of: usize,
    },
    /// `batchscore commit` on a `--resume` run that stopped before its last piece.
    #[error(
        "output {output}: run {run_id} cannot commit yet: {done} of its {of} pieces are finished; run the job again with --resume, which scores the rest and commits"
    )]
    PiecesMissing {
        output: String,
        run_id: String,
        done: usize,
        of: usize,
    },
    /// The run committed, but `[[monitor.alerts]]` rules fired.
    #[error("job {job}: committed, but {} alert rule(s) fired: {}", firing.len(), firing.join("; "))]
    AlertsFired { job: String, firing: Vec<String> },
    #[error(
        "{folder}: a shard took the commit lock (commit.lock) and may be committing the run now; if it died, run batchscore commit --force"
    )]
    CommitLocked { folder: String },
    /// A DataFusion or Arrow error of a job with sensitive columns, the values it quoted
    /// redacted (see [`RunError::redacted`]).
    #[error("{message}")]
    Redacted { message: String },
}

impl RunError {
    /// 2: refused before any work (spec, command line, model, existing output); 3: more rows
    /// rejected than the budget allows; 4: `commit` with shards missing, or alerts fired
    /// after the commit; 1: anything else.
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::Spec(_) | Self::NoRun { .. } | Self::CommitLocked { .. } => 2,
            Self::Output(e) if e.is_refusal() => 2,
            Self::RejectBudget { .. } => 3,
            Self::ShardsMissing { .. } | Self::PiecesMissing { .. } | Self::AlertsFired { .. } => 4,
            _ => 1,
        }
    }

    /// This error with the values its message may quote redacted, for a job with sensitive
    /// columns (`[privacy]`): DataFusion's, Arrow's and a task's messages can quote a value of
    /// the data (`Cannot cast string '<redacted>' to value of Int64 type`); batchscore's own
    /// messages quote none.
    pub fn redacted(self) -> Self {
        use crate::privacy::redact::redact_message;
        match self {
            Self::DataFusion(_) | Self::Arrow(_) => Self::Redacted {
                message: redact_message(&self.to_string()),
            },
            Self::Task { what, message } => Self::Task {
                what,
                message: redact_message(&message),
            },
            other => other,
        }
    }
}

/// For `mode = "skip"`: the run id that already committed this output with the same spec,
/// model and input files, if one did.
pub async fn already_committed(plan: &JobPlan) -> Result<Option<String>, RunError> {
    let out = &plan.spec.spec.output;
    let Some(m) = Committer::published_manifest(&out.uri, out.layout, &plan.stores).await? else {
        return Ok(None);
    };
    let version = plan.model.registered.as_ref().map(|r| &r.version);
    // The run key holds the challengers' models too: one changed in place is another job.
    let same = m.is_same_job(&plan.spec.hash, &plan.model.sha256, &plan.input_fingerprint)
        && m.model_version.as_ref() == version
        && (plan.challengers.is_empty() || m.run_key == plan.run_key());
    Ok(same.then_some(m.run_id))
}

/// What a finished run reports to the command line.
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    /// The committed output's path or URL.
    pub output: String,
    pub metrics: RunMetrics,
}

/// Where a run's (or a shard's) parts go: the staging, and the name parts start with
/// (`part`, or `part-00003` for shard 3, so that shards' parts never share a name).
struct Destination {
    staging: Staging,
    part: String,
}

/// What the run's tasks wrote, before the commit.
struct Written {
    physical: Arc<dyn ExecutionPlan>,
    results: Vec<PartitionResult>,
    files: Vec<PartFile>,
    rejected_files: Vec<PartFile>,
}

/// Runs a planned job and commits its output.
pub async fn execute(
    mut plan: JobPlan,
    progress: Option<ProgressBar>,
) -> Result<RunSummary, RunError> {
    let started_at = chrono::Utc::now();
    let started = Instant::now();
    let run_id = uuid::Uuid::now_v7().to_string();
    tracing::Span::current().record("run_id", run_id.as_str());
    let scorer = Arc::new(build_scorer(&mut plan)?);
    let scoring = Scoring::new(&plan, scorer.clone())?;
    let s = &plan.spec.spec;
    let target = history::run_uri(&s.output.uri, s.output.layout, &run_id);
    let committer = Committer::prepare(
        &target,
        run_mode(s.output.layout, s.output.mode),
        &run_id,
        &plan.stores,
    )
    .await?;
    tracing::info!(run_id = %run_id, job = %s.name, input = %s.input.uri, model = %plan.model.uri, output = %committer.output(), workers = plan.workers, "starting run");
    let destination = Destination {
        staging: committer.staging(),
        part: "part".to_string(),
    };
    let written = write_parts(
        &mut plan,
        &scoring,
        &scorer,
        &destination,
        progress.as_ref(),
    )
    .await;
    if let Some(pb) = &progress {
        pb.finish_and_clear();
    }
    let mut written = match written {
        Ok(w) => w,
        Err(e) => {
            committer.abort().await;
            return Err(e);
        }
    };
    let commit_started = Instant::now();
    let facts = run_facts(&plan, &scorer, &written, run_id, started_at, started);
    let mut metrics = RunMetrics::new(facts, &scorer.stats);
    add_distributions(&plan, merged_profiles(&mut written), &mut metrics);
    if let Some(a) = merged_agreement(&plan, &mut written) {
        metrics.challengers = a.reports(&challenger_models(&plan));
    }
    check_alerts(&plan.spec.spec.monitor, &mut metrics);
    let manifest = manifest(&plan, &metrics, written);
    let output = committer
        .commit(&manifest, &mut metrics, commit_started)
        .await?;
    tracing::info!(output = %output, rows = manifest.rows, "committed");
    let out = &plan.spec.spec.output;
    publish(&out.uri, out.layout, &manifest.run_id, &plan.stores).await?;
    resume::forget_resumable(&out.uri, &plan.stores).await;
    Ok(RunSummary { output, metrics })
}

/// The workers' challenger tallies, merged (taken from the results); empty ones when the job
/// has challengers but no row was written.
fn merged_agreement(plan: &JobPlan, written: &mut Written) -> Option<Agreements> {
    let tallies = written
        .results
        .iter_mut()
        .filter_map(|r| r.agreement.take());
    merge_all(tallies, Agreements::merge).or_else(|| plan.agreement.clone().map(Agreements::new))
}

/// The challengers' models as `_metrics.json` reports them, in the plan's order.
fn challenger_models(plan: &JobPlan) -> Vec<ModelReport> {
    plan.challengers
        .iter()
        .map(|c| ModelReport::of(&c.model))
        .collect()
}

/// The workers' column profiles, merged (taken from the results).
fn merged_profiles(written: &mut Written) -> Option<ColumnProfiles> {
    let profiles = written.results.iter_mut().filter_map(|r| r.profiles.take());
    merge_all(profiles, ColumnProfiles::merge)
}

/// The run's distributions from its merged profiles, and their drift from the baseline.
fn add_distributions(plan: &JobPlan, profiles: Option<ColumnProfiles>, metrics: &mut RunMetrics) {
    if let Some(p) = profiles {
        let (distributions, drift) = p.finish(plan.baseline.as_ref().map(|b| b.label.as_str()));
        metrics.distributions = distributions;
        metrics.drift = drift;
    }
}

/// Evaluates the alert rules over the run's metrics, listing them there and logging each
/// breach as an error.
pub(crate) fn check_alerts(monitor: &crate::spec::MonitorSpec, metrics: &mut RunMetrics) {
    metrics.alerts = crate::report::alerts::evaluate(&monitor.alerts, metrics);
    for a in metrics.alerts.iter().filter(|a| a.firing) {
        tracing::error!(rule = %a.rule, severity = %a.severity, value = a.value.unwrap_or(f64::NAN), "alert fired");
    }
}

/// After a commit: the run's firing alerts as an error (exit code 4), when any fired.
pub fn alerts_outcome(metrics: &RunMetrics) -> Result<(), RunError> {
    let firing: Vec<String> = metrics
        .alerts
        .iter()
        .filter(|a| a.firing)
        .map(|a| {
            let v = a.value.map(|v| format!("{v}")).unwrap_or_default();
            format!("{} (value {v}, {})", a.rule, a.severity)
        })
        .collect();
    if firing.is_empty() {
        return Ok(());
    }
    Err(RunError::AlertsFired {
        job: metrics.job_name.clone(),
        firing,
    })
}

/// The mode a run commits its folder with: in a history each run's folder is new.
fn run_mode(layout: OutputLayout, mode: crate::spec::WriteMode) -> crate::spec::WriteMode {
    match layout {
        OutputLayout::Flat => mode,
        OutputLayout::Runs => crate::spec::WriteMode::Error,
    }
}

/// Makes a committed run the one readers see: in a history, `_LATEST` moves to it.
async fn publish(
    output: &str,
    layout: OutputLayout,
    run_id: &str,
    stores: &crate::storage::StoreFactory,
) -> Result<(), RunError> {
    if layout == OutputLayout::Runs {
        let history = history::History::open(output, stores)?;
        let before = history.point_at(run_id).await?;
        tracing::info!(output = %output, latest = %run_id, previous = before.as_deref().unwrap_or("none"), "_LATEST moved");
    }
    Ok(())
}

/// The scorer: a session per worker, and a tree ensemble's row order when it has one. Each
/// challenger gets its own, kept in its plan for the scoring projection.
fn build_scorer(plan: &mut JobPlan) -> Result<Scorer, RunError> {
    let run = &plan.spec.spec.run;
    let sessions = plan
        .model
        .session_pool(plan.workers, run.intra_op_threads, plan.device)
        .map_err(RunError::Runtime)?;
    let row_order = plan
        .tree_splits
        .take()
        .and_then(|splits| TreeRowOrder::bind(splits, &plan.bound.inputs));
    if let Some(order) = &row_order {
        tracing::debug!(
            splits = order.split_count(),
            "tree ensemble: each batch's rows are scored sorted by the branches they take"
        );
    }
    let rows_per_call = run.inference_batch_size(plan.device.kind());
    for c in plan.challengers.iter_mut().filter(|c| c.scorer.is_none()) {
        let sessions = c
            .model
            .session_pool(plan.workers, run.intra_op_threads, plan.device)
            .map_err(RunError::Runtime)?;
        let order = EnsembleSplits::from_onnx(c.model.onnx_bytes())
            .filter(|_| run.reorder_rows)
            .and_then(|splits| TreeRowOrder::bind(splits, &c.inputs));
        let (native, is_tree) = native_engine(&c.model, &c.inputs, run, plan.device);
        let text = text_scoring(plan.text.clone(), c.text.clone());
        let scorer = Scorer::new(c.inputs.clone(), c.outputs.clone(), sessions, rows_per_call);
        c.scorer = Some(Arc::new(
            scorer
                .with_row_order(order)
                .with_native(native, is_tree)
                .with_text(text),
        ));
    }
    let (native, is_tree) = native_engine(&plan.model, &plan.bound.inputs, run, plan.device);
    let text = text_scoring(plan.text.clone(), plan.bound.text.clone());
    Ok(Scorer::new(
        plan.bound.inputs.clone(),
        plan.outputs.clone(),
        sessions,
        rows_per_call,
    )
    .with_row_order(row_order)
    .with_native(native, is_tree)
    .with_text(text))
}

/// A text model's tokenizer with the inputs it fills, when the job has `[tokenizer]`.
fn text_scoring(
    encoder: Option<crate::features::TextEncoder>,
    binding: Option<crate::features::TextBinding>,
) -> Option<crate::score::text::TextScoring> {
    let (encoder, binding) = encoder.zip(binding)?;
    Some(crate::score::text::TextScoring { encoder, binding })
}

/// The native tree evaluator for `model`, when `[run] tree_engine` asks for it on the CPU and
/// it can read the model and its inputs (otherwise said once in the log); and whether the
/// model is a tree ensemble at all.
fn native_engine(
    model: &crate::model::Model,
    inputs: &[crate::features::InputBinding],
    run: &crate::spec::RunSpec,
    device: crate::model::ExecutionDevice,
) -> (Option<NativeEngine>, bool) {
    let is_tree = crate::score::tree_order::is_tree_ensemble(model.onnx_bytes());
    if !is_tree
        || run.tree_engine != crate::spec::TreeEngine::Native
        || device != crate::model::ExecutionDevice::Cpu
    {
        return (None, is_tree);
    }
    let engine = NativeEnsemble::from_onnx(model.onnx_bytes())
        .map_err(|e| e.to_string())
        .and_then(|ensemble| NativeEngine::bind(ensemble, inputs));
    match engine {
        Ok(engine) => (Some(engine), true),
        Err(why) => {
            tracing::info!(model = %model.uri, "tree ensemble scored by ONNX Runtime: the native evaluator does not read it ({why})");
            (None, true)
        }
    }
}

/// [`write_parts_of`], its error redacted ([`RunError::redacted`]) when the job has sensitive
/// columns: reading, the query and the features are where a value can reach a message.
async fn write_parts(
    plan: &mut JobPlan,
    scoring: &Scoring,
    scorer: &Arc<Scorer>,
    destination: &Destination,
    progress: Option<&ProgressBar>,
) -> Result<Written, RunError> {
    let redact = plan.privacy.any();
    write_parts_of(plan, scoring, scorer, destination, progress)
        .await
        .map_err(|e| if redact { e.redacted() } else { e })
}

/// Runs the plan: every worker's task, and the malformed rows' for a CSV input, writing into
/// `staging`; then checks the reject rate. An empty input still gets one empty part, so that
/// readers see the output's schema. The progress bar gets its length here unless it has one.
async fn write_parts_of(
    plan: &mut JobPlan,
    scoring: &Scoring,
    scorer: &Arc<Scorer>,
    destination: &Destination,
    progress: Option<&ProgressBar>,
) -> Result<Written, RunError> {
    let physical = scoring.physical_plan(&plan.ctx, plan.workers).await?;
    if let Some(pb) = progress.filter(|pb| pb.length().unwrap_or(0) == 0)
        && let Ok(stats) =
            StatisticsContext::new().compute(physical.as_ref(), &StatisticsArgs::new())
        && let Some(&n) = stats.num_rows.get_value()
    {
        pb.set_length(n as u64);
    }
    let streams = execute_stream_partitioned(physical.clone(), plan.ctx.task_ctx())?;
    let results = run_tasks(plan, scoring, scorer, destination, streams, progress).await?;
    let s = &plan.spec.spec;
    check_reject_rate(&s.name, s.run.max_rejected_rate, &scorer.stats)?;
    let mut files: Vec<PartFile> = results.iter().flat_map(|r| r.files.clone()).collect();
    let mut rejected_files: Vec<PartFile> = results
        .iter()
        .flat_map(|r| r.rejected_files.clone())
        .collect();
    if files.is_empty() {
        let name = format!(
            "{}-00000-0000.{}",
            destination.part,
            s.output.format.extension()
        );
        let part =
            destination
                .staging
                .create_part(name, s.output.format, scoring.out_schema.clone())?;
        files.push(part.finish().await?);
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    rejected_files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(Written {
        physical,
        results,
        files,
        rejected_files,
    })
}

/// Spawns a task per partition stream (and one for a CSV scan's malformed rows) and joins
/// them. Dropping the run (a signal) aborts them before the staging goes.
async fn run_tasks(
    plan: &mut JobPlan,
    scoring: &Scoring,
    scorer: &Arc<Scorer>,
    destination: &Destination,
    streams: Vec<datafusion::physical_plan::SendableRecordBatchStream>,
    progress: Option<&ProgressBar>,
) -> Result<Vec<PartitionResult>, RunError> {
    let (staging, part) = (&destination.staging, &destination.part);
    let s = &plan.spec.spec;
    let budget = Budget {
        job: s.name.clone(),
        max_rejected: s.run.max_rejected,
    };
    let writer =
        |prefix: String, partition: usize, schema: &datafusion::arrow::datatypes::SchemaRef| {
            RollingWriter::new(
                staging.clone(),
                prefix,
                partition,
                s.output.format,
                schema.clone(),
                s.output.max_rows_per_file,
            )
        };
    let (scan_done, scan_done_rx) = tokio::sync::oneshot::channel::<()>();
    // Malformed CSV rows go to `_rejected/` through parts of their own, numbered after the
    // scoring partitions' parts.
    let malformed = plan.csv_malformed.take().map(|rows| {
        tokio::spawn(Instrument::in_current_span(partition::write_malformed(
            rows,
            scan_done_rx,
            writer(
                format!("_rejected/{part}"),
                streams.len(),
                &scoring.rej_schema,
            ),
            scoring.rej_schema.clone(),
            scorer.clone(),
            budget.clone(),
            plan.privacy.any(),
        )))
    });
    let tasks = streams.into_iter().enumerate().map(|(i, stream)| {
        tokio::spawn(
            PartitionTask {
                stream,
                writer: writer(part.to_string(), i, &scoring.out_schema),
                rejected: writer(format!("_rejected/{part}"), i, &scoring.rej_schema),
                n_pass: scoring.n_pass,
                n_challengers: scoring.n_challengers,
                out_schema: scoring.out_schema.clone(),
                rej_schema: scoring.rej_schema.clone(),
                scorer: scorer.clone(),
                budget: budget.clone(),
                progress: progress.cloned(),
                profiles: plan.profiles.clone().map(ColumnProfiles::new),
                agreement: plan.agreement.clone().map(Agreements::new),
            }
            .run()
            .in_current_span(),
        )
    });
    let mut tasks = AbortOnDrop(tasks.collect());
    let mut malformed = AbortOnDrop(malformed.into_iter().collect());
    let mut results = Vec::with_capacity(tasks.0.len() + 1);
    let scoring_outcome = partition::join_all(&mut tasks, "a scoring task", &mut results).await;
    // Every scan has ended, so every malformed row has been sent.
    let _ = scan_done.send(());
    let malformed_outcome =
        partition::join_all(&mut malformed, "the rejected-rows task", &mut results).await;
    scoring_outcome.and(malformed_outcome)?;
    Ok(results)
}

/// Past `[run] max_rejected_rate` of the rows considered, nothing is committed. Malformed
/// rows never reach the query: they count as considered, and as rejected.
fn check_reject_rate(job: &str, rate: Option<f64>, stats: &ScoreStats) -> Result<(), RunError> {
    let top = stats.rejected.top(5);
    let (considered, rejected) = (stats.rows_considered(), stats.rejected.rows());
    partition::check_budget(job, None, rate, considered, rejected, &top)
}

/// What the run knows about itself, for its metrics.
fn run_facts(
    plan: &JobPlan,
    scorer: &Scorer,
    written: &Written,
    run_id: String,
    started_at: chrono::DateTime<chrono::Utc>,
    started: Instant,
) -> RunFacts {
    let s = &plan.spec.spec;
    let csv_rows_read = plan
        .csv_rows_read
        .as_ref()
        .map(|n| n.load(std::sync::atomic::Ordering::Relaxed));
    let sum = |f: fn(&PartitionResult) -> std::time::Duration| -> f64 {
        written.results.iter().map(|r| f(r).as_secs_f64()).sum()
    };
    RunFacts {
        run_id,
        job_name: s.name.clone(),
        started_at: started_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        wall_seconds: started.elapsed().as_secs_f64(),
        rows_read: csv_rows_read.or_else(|| physical::rows_read(written.physical.as_ref())),
        rows_written: written.files.iter().map(|f| f.rows).sum(),
        pull_seconds: sum(|r| r.pull),
        write_seconds: sum(|r| r.write),
        workers: plan.workers,
        batch_size: s.run.batch_size(),
        inference_batch_size: scorer.rows_per_call(),
        rows_reordered: scorer.reorders_rows(),
        tree_engine: scorer.tree_engine().map(String::from),
        text_max_length: scorer.text_max_length(),
        device: plan.device.to_string(),
        memory: plan.memory.clone(),
        model: ModelReport::of(&plan.model),
        output_files: written.files.len() as u64,
        output_bytes: written.files.iter().map(|f| f.bytes).sum(),
    }
}

/// The manifest of what was written.
fn manifest(plan: &JobPlan, metrics: &RunMetrics, written: Written) -> Manifest {
    let s = &plan.spec.spec;
    Manifest {
        run_id: metrics.run_id.clone(),
        run_key: plan.run_key(),
        job_name: s.name.clone(),
        spec_hash: plan.spec.hash.clone(),
        input_fingerprint: plan.input_fingerprint.clone(),
        model_uri: plan.model.uri.clone(),
        model_sha256: plan.model.sha256.clone(),
        model_name: plan.model.registered.as_ref().map(|r| r.name.clone()),
        model_version: plan.model.registered.as_ref().map(|r| r.version.clone()),
        format: s.output.format.extension().to_string(),
        rows: metrics.rows.written,
        files: written.files,
        rejected_rows: written.rejected_files.iter().map(|f| f.rows).sum(),
        rejected_files: written.rejected_files,
        committed_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        batchscore_version: env!("CARGO_PKG_VERSION").to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;

    #[test]
    fn the_reject_rate_counts_malformed_rows_as_considered_and_names_the_top_reasons() {
        let stats = ScoreStats::default();
        stats.rows_in.store(90, Ordering::Relaxed);
        stats.rows_malformed.store(10, Ordering::Relaxed);
        stats.rejected.add(["bad line"; 10]);
        // 10 of 100 rows: within 10%, past 9.9%.
        assert!(check_reject_rate("j", Some(0.1), &stats).is_ok());
        assert!(check_reject_rate("j", None, &stats).is_ok());
        let e = check_reject_rate("j", Some(0.099), &stats).unwrap_err();
        assert_eq!(e.exit_code(), 3);
        assert_eq!(
            e.to_string(),
            "job j: 10 rows rejected, 10.0000% of 100 rows, more than [run] max_rejected_rate = 0.099; nothing was committed. Top reasons:\n  10 x bad line"
        );
        let budget = partition::Budget {
            job: "j".into(),
            max_rejected: Some(10),
        };
        assert!(budget.check(&stats.rejected).is_ok());
        stats.rejected.add(["another"]);
        let e = budget.check(&stats.rejected).unwrap_err().to_string();
        assert!(
            e.starts_with("job j: 11 rows rejected, more than [run] max_rejected = 10"),
            "{e}"
        );
        assert!(e.ends_with("  10 x bad line\n  1 x another"), "{e}");
    }

    #[test]
    fn refusals_exit_2_the_budget_3_and_failures_1() {
        let refused = RunError::Output(OutputError::CorruptManifest {
            uri: "u".into(),
            message: "m".into(),
        });
        assert_eq!(refused.exit_code(), 2);
        let lost = RunError::Output(OutputError::Conflict { uri: "u".into() });
        assert_eq!(lost.exit_code(), 1);
        let task = RunError::Task {
            what: "a scoring task".into(),
            message: "panicked".into(),
        };
        assert_eq!(task.exit_code(), 1);
    }
}
