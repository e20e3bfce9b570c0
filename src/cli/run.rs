//! `batchscore run JOB` and `batchscore validate JOB`: plan the job (every problem listed),
//! then, for `run`, score it and commit, stopping cleanly on SIGINT or SIGTERM.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::progress::{ProgressMode, bar};
use crate::run::{RunSummary, already_committed, execute, plan_job};
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
        spec::load(&self.job, &vars)
    }
}

/// Runs a job; prints one summary line (or, with `json`, the metrics) on stdout.
pub async fn run(
    job: &JobArgs,
    progress: ProgressMode,
    json: bool,
    ort_lib: Option<&Path>,
) -> anyhow::Result<()> {
    let spec = job.load()?;
    let plan = plan_job(spec, ort_lib).await?;
    if plan.spec.spec.output.mode == WriteMode::Skip
        && let Some(run_id) = already_committed(&plan).await?
    {
        println!(
            "{}: already committed by run {run_id} with the same spec, model and input; nothing to do -> {}",
            plan.spec.spec.name, plan.spec.spec.output.uri
        );
        return Ok(());
    }
    // A signal drops the run: its tasks stop and its staging is removed.
    let summary = tokio::select! {
        r = execute(plan, bar(progress)) => r.inspect_err(|_| {
            // The staging is gone by now: say so, for whoever reads the log at 3 a.m.
            tracing::error!("run failed: nothing was committed");
        })?,
        signal = shutdown_signal() => {
            tracing::error!(signal = signal.name, "interrupted: nothing was committed");
            return Err(Interrupted(signal).into());
        }
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&summary.metrics)?);
    } else {
        println!("{}", summary_line(&summary));
    }
    Ok(())
}

/// `churn-nightly: 1941 rows scored in 0.05 s (39522 rows/s), 0 rejected -> out/ (2 files)`.
fn summary_line(summary: &RunSummary) -> String {
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
    )
}

/// Checks a job without scoring and describes its bindings.
pub async fn validate(job: &JobArgs, ort_lib: Option<&Path>) -> anyhow::Result<()> {
    let plan = plan_job(job.load()?, ort_lib).await?;
    println!("{}: OK", job.job.display());
    println!("model {} (sha256 {})", plan.model.uri, plan.model.sha256);
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
