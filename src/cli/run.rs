//! `batchscore run JOB` and `batchscore validate JOB`: plan the job (every problem listed),
//! then, for `run`, score it and commit, stopping cleanly on SIGINT or SIGTERM.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::progress::{ProgressMode, bar};
use crate::input::ShardId;
use crate::run::monitor::{publish_failure, publish_success};
use crate::run::resume::execute_resumable;
use crate::run::scheduler::detect;
use crate::run::shard::{ShardOutcome, execute_shard};
use crate::run::{RunSummary, alerts_outcome, already_committed, execute, plan_job, plan_shard};
use crate::spec::LoadedSpec;
use crate::spec::{self, WriteMode};

/// The job spec and its variables, as `run` and `validate` take them.
#[derive(Debug, clap::Args)]
pub struct JobArgs {
    /// The job spec (TOML, or YAML by extension).
    pub job: PathBuf,
    /// A value for ${NAME} in the spec; repeatable.
    #[arg(long = "var", value_name = "NAME=VALUE", value_parser = spec::parse_var)]
    pub vars: Vec<(String, String)>,
}

impl JobArgs {
    pub(super) fn load(&self) -> Result<spec::LoadedSpec, crate::diagnostics::SpecError> {
        let vars: BTreeMap<String, String> = self.vars.iter().cloned().collect();
        let loaded = spec::load(&self.job, &vars)?;
        // Before anything is written: the permissions of every local file the job creates.
        crate::output::mode::apply(loaded.spec.file_mode());
        Ok(loaded)
    }
}

/// Which shard of a sharded run this process scores.
#[derive(Debug, clap::Args)]
pub struct ShardArgs {
    /// Score shard I of N (from 0) of a run split over N processes, or `auto`: the index
    /// (and the count, where it gives one) from the scheduler that started this process
    /// (Kubernetes, AWS Batch, Slurm, Google Cloud Batch). The input's work units
    /// (`batchscore plan`) are dealt to N shards; the last shard to finish commits the run.
    /// Default: `auto` when the spec sets `[run] shards`, else the whole run.
    #[arg(long, value_name = "I/N|auto", value_parser = parse_shard)]
    pub shard: Option<ShardArg>,
    /// The shard count for `--shard auto` where the scheduler gives only the index
    /// (Kubernetes). Default: `[run] shards`.
    #[arg(long, value_name = "N")]
    pub shards: Option<usize>,
    /// The run's id, which every shard of one run shares. Default: the scheduler's job id,
    /// else the first shard's new one.
    #[arg(long, env = "BATCHSCORE_RUN_ID")]
    pub run_id: Option<String>,
}

/// `--shard`: a shard given, or `auto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShardArg {
    Given(ShardId),
    Auto,
}

/// `2/4`: shard 2 of 4, counted from 0; or `auto`.
fn parse_shard(s: &str) -> Result<ShardArg, ShardError> {
    if s.trim() == "auto" {
        return Ok(ShardArg::Auto);
    }
    let fail = |why: &str| ShardError(format!("{s:?}: {why}"));
    let (i, n) = s
        .split_once('/')
        .ok_or_else(|| fail("expected I/N, e.g. 0/4, or auto"))?;
    let index: usize = i.trim().parse().map_err(|_| fail("I is not a number"))?;
    let count: usize = n.trim().parse().map_err(|_| fail("N is not a number"))?;
    if count == 0 {
        return Err(fail("N must be at least 1"));
    }
    if index >= count {
        return Err(fail("I must be less than N (shards count from 0)"));
    }
    Ok(ShardArg::Given(ShardId { index, count }))
}

/// A `--shard` that is not `I/N` or `auto`.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ShardError(String);

impl ShardArgs {
    /// The shard this process scores, if the run is split: `--shard`, or the scheduler's
    /// variables under `--shard auto` or `[run] shards`; and the run id to propose.
    fn resolve(
        &self,
        spec_shards: Option<usize>,
    ) -> anyhow::Result<Option<(ShardId, Option<String>)>> {
        let auto = match (self.shard, spec_shards) {
            (Some(ShardArg::Given(id)), Some(n)) if n != id.count => {
                return Err(
                    ShardError(format!("--shard {id}: the spec's [run] shards is {n}")).into(),
                );
            }
            (Some(ShardArg::Given(id)), _) => return Ok(Some((id, self.run_id.clone()))),
            (Some(ShardArg::Auto), _) | (None, Some(_)) => {
                let var = |name: &str| std::env::var(name).ok();
                detect(&var, self.shards.or(spec_shards))?
            }
            (None, None) => return Ok(None),
        };
        tracing::info!(shard = %auto.shard, scheduler = auto.scheduler, "--shard auto");
        Ok(Some((auto.shard, self.run_id.clone().or(auto.run_id))))
    }
}

/// How `run` shows its progress and result, and whether it resumes.
#[derive(Debug, Clone, Copy)]
pub struct How {
    pub progress: ProgressMode,
    /// The metrics as JSON on stdout instead of the summary line.
    pub json: bool,
    /// `--resume`: score in recorded pieces, skipping those an earlier attempt finished.
    pub resume: bool,
    /// The summary (or the metrics) on stderr, as when stdout carries the predictions.
    pub report_on_stderr: bool,
}

/// Runs a job, or one shard of it when it is split (see [`ShardArgs`]).
pub async fn run_or_shard(
    job: &JobArgs,
    shard: &ShardArgs,
    how: How,
    ort_lib: Option<&Path>,
) -> anyhow::Result<()> {
    use tracing::Instrument;
    let spec = job.load()?;
    // Every event of the run carries the job, and the run id and shard once they are known
    // (in JSON logs, under "span").
    let span = tracing::info_span!(
        "run",
        job = %spec.spec.name,
        run_id = tracing::field::Empty,
        shard = tracing::field::Empty
    );
    let (monitor, name) = (spec.spec.monitor.clone(), spec.spec.name.clone());
    let which = shard.resolve(spec.spec.run.shards)?;
    let shard_index = which.as_ref().map(|(id, _)| id.index);
    let result = match which {
        Some(_) if how.resume => Err(ShardError(
            "--resume is for a whole run: a shard of a sharded run is scored again whole when it is run again".into(),
        )
        .into()),
        Some((id, run_id)) => {
            span.record("shard", id.to_string());
            run_shard(spec, id, run_id, how.progress, ort_lib)
                .instrument(span)
                .await
        }
        None => run(spec, how, ort_lib).instrument(span).await,
    };
    if let Err(e) = &result
        && super::exit_code(e) != 4
    {
        publish_failure(&monitor, &name, shard_index, super::exit_code(e)).await;
    }
    result
}

/// Runs one shard of a sharded run; prints what became of it on stdout.
async fn run_shard(
    spec: LoadedSpec,
    id: ShardId,
    run_id: Option<String>,
    progress: ProgressMode,
    ort_lib: Option<&Path>,
) -> anyhow::Result<()> {
    let plan = plan_shard(spec, ort_lib, Some(id)).await?;
    let monitor = plan.spec.spec.monitor.clone();
    let (name, output) = (
        plan.spec.spec.name.clone(),
        plan.spec.spec.output.uri.clone(),
    );
    let outcome = tokio::select! {
        r = execute_shard(plan, run_id, bar(progress)) => r.inspect_err(|_| {
            tracing::error!("shard failed: nothing of it was recorded");
        })?,
        signal = shutdown_signal() => {
            tracing::error!(signal = signal.name, "interrupted: nothing of this shard was recorded");
            return Err(Interrupted(signal).into());
        }
    };
    let line = match outcome {
        ShardOutcome::Committed(summary) => {
            println!(
                "{} (shard {id}, the last to finish, committed the run)",
                summary_line(&summary)
            );
            publish_success(&monitor, &summary.metrics, None).await;
            return Ok(alerts_outcome(&summary.metrics)?);
        }
        ShardOutcome::Finished { metrics, done, of } => {
            publish_success(&monitor, &metrics, Some(id.index)).await;
            format!(
                "{name}: shard {id} scored {} rows in {:.2} s, {} rejected; {done} of {of} shards finished, the last one commits the run -> {output}",
                metrics.rows.scored, metrics.wall_seconds, metrics.rows.rejected
            )
        }
        ShardOutcome::Duplicate { run_id } => format!(
            "{name}: shard {id} of run {run_id} was already finished by another attempt; this attempt's parts were dropped"
        ),
        ShardOutcome::CommittedByAnother { run_id } => format!(
            "{name}: shard {id} finished; another shard is committing run {run_id} -> {output}"
        ),
        ShardOutcome::AlreadyCommitted { run_id } => format!(
            "{name}: run {run_id} already committed this output; shard {id} has nothing to do -> {output}"
        ),
    };
    println!("{line}");
    Ok(())
}

/// Runs a whole job; prints one summary line (or, with `json`, the metrics) on stdout.
pub(super) async fn run(spec: LoadedSpec, how: How, ort_lib: Option<&Path>) -> anyhow::Result<()> {
    let plan = plan_job(spec, ort_lib).await?;
    let monitor = plan.spec.spec.monitor.clone();
    if plan.spec.spec.output.mode == WriteMode::Skip
        && let Some(run_id) = already_committed(&plan).await?
    {
        println!(
            "{}: already committed by run {run_id} with the same spec, model and input; nothing to do -> {}",
            plan.spec.spec.name, plan.spec.spec.output.uri
        );
        return Ok(());
    }
    let bar = bar(how.progress);
    // A signal drops the run: its tasks stop and its staging is removed (a resumable run's
    // finished pieces stay, for the next --resume).
    let summary = tokio::select! {
        r = execute_either(plan, bar, how.resume) => r.inspect_err(|_| {
            // The staging is gone by now: say so, for whoever reads the log at 3 a.m.
            tracing::error!("run failed: nothing was committed");
        })?,
        signal = shutdown_signal() => {
            tracing::error!(signal = signal.name, "interrupted: nothing was committed");
            return Err(Interrupted(signal).into());
        }
    };
    publish_success(&monitor, &summary.metrics, None).await;
    let mut summary = summary;
    if how.report_on_stderr {
        // The folder was the command's own scratch; the rows went to stdout.
        summary.output = "stdout".into();
    }
    let report = if how.json {
        serde_json::to_string_pretty(&summary.metrics)?
    } else {
        summary_line(&summary)
    };
    if how.report_on_stderr {
        eprintln!("{report}");
    } else {
        println!("{report}");
    }
    Ok(alerts_outcome(&summary.metrics)?)
}

/// Runs the whole job at once, or (`resume`) as resumable pieces.
async fn execute_either(
    plan: crate::run::JobPlan,
    bar: Option<indicatif::ProgressBar>,
    resume: bool,
) -> Result<RunSummary, crate::run::RunError> {
    if !resume {
        return execute(plan, bar).await;
    }
    match execute_resumable(plan, bar).await? {
        ShardOutcome::Committed(summary) => Ok(*summary),
        other => Err(crate::run::RunError::Task {
            what: "the resumable run".into(),
            message: format!("another process is scoring it too ({other:?})"),
        }),
    }
}

/// `churn-nightly: 1941 rows scored in 0.05 s (39522 rows/s), 0 rejected -> out/ (2 files)`.
pub(super) fn summary_line(summary: &RunSummary) -> String {
    let m = &summary.metrics;
    format!(
        "{}: {} rows scored in {:.2} s ({} rows/s), {} rejected -> {} ({} file{})",
        m.job_name,
        m.rows.scored,
        m.wall_seconds,
        m.rows_per_second.round() as u64,
        m.rows.rejected,
        summary.output,
        m.output_files,
        if m.output_files == 1 { "" } else { "s" }
    ) + &m
        .resumed
        .as_ref()
        .filter(|r| r.pieces_skipped > 0)
        .map_or(String::new(), |r| {
            format!(
                "; resumed: {} of {} pieces ({} rows) were finished already",
                r.pieces_skipped, r.pieces, r.rows_skipped
            )
        })
}

/// Checks a job without scoring and describes its bindings.
pub async fn validate(job: &JobArgs, ort_lib: Option<&Path>) -> anyhow::Result<()> {
    let plan = plan_job(job.load()?, ort_lib).await?;
    println!("{}: OK", job.job.display());
    match &plan.model.registered {
        Some(r) => println!(
            "model {} version {}{} from {} (sha256 {})",
            r.name,
            r.version,
            r.alias
                .as_ref()
                .map(|a| format!(" (alias {a})"))
                .unwrap_or_default(),
            r.registry,
            plan.model.sha256
        ),
        None => println!("model {} (sha256 {})", plan.model.uri, plan.model.sha256),
    }
    for b in &plan.bindings().inputs {
        println!(
            "  input {:?} {} <- {}",
            b.name,
            b.dtype,
            b.columns.join(", ")
        );
    }
    for o in &plan.outputs {
        let src = match o.index {
            Some(i) => format!("{}[{i}]", o.output),
            None => o.output.clone(),
        };
        println!("  column {:?} <- {src} ({})", o.column, o.data_type());
    }
    println!("  workers {}", plan.workers);
    for line in plan.privacy.describe() {
        println!("  privacy: {line}");
    }
    Ok(())
}

/// A signal that stopped a run.
#[derive(Debug, Clone, Copy)]
pub struct Signal {
    pub name: &'static str,
    /// 128 + the signal number, as shells report it.
    pub exit_code: i32,
}

/// The run was stopped by a signal before it committed.
#[derive(Debug, thiserror::Error)]
#[error("interrupted by {}: nothing was committed", .0.name)]
pub struct Interrupted(pub Signal);

/// Waits for SIGINT or SIGTERM.
async fn shutdown_signal() -> Signal {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        // Without signal handlers the default action (termination) applies; wait forever.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => Signal { name: "SIGINT", exit_code: 130 },
        _ = term.recv() => Signal { name: "SIGTERM", exit_code: 143 },
    }
}
