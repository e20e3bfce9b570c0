//! `batchscore runs list|prune OUTPUT` and `batchscore rollback OUTPUT`: a run history
//! (`[output] layout = "runs"`, see [`crate::output::history`]) from the shell.

use super::StoreArgs;
use crate::output::history::{History, RunEntry};

/// Why a history command cannot do what was asked (exit 2: nothing was changed).
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error(
        "output {output}: no run history here (no run=<id>/ folders: is [output] layout = \"runs\"?)"
    )]
    NoHistory { output: String },
    #[error("output {output}: no committed run {run_id} (committed runs: {known})")]
    NoRun {
        output: String,
        run_id: String,
        known: String,
    },
    #[error("output {output}: {why}; nothing was changed")]
    Nothing { output: String, why: String },
}

#[derive(Debug, clap::Subcommand)]
pub enum RunsCommand {
    /// The runs of a history, oldest first: when, model version, rows, rejects, status,
    /// and which one _LATEST names.
    List {
        output: String,
        #[command(flatten)]
        store: StoreArgs,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Remove the oldest committed runs, keeping the newest N and always the one _LATEST
    /// names.
    Prune {
        output: String,
        /// How many of the newest committed runs to keep.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        keep: u32,
        #[command(flatten)]
        store: StoreArgs,
    },
}

pub async fn runs(command: RunsCommand) -> anyhow::Result<()> {
    match command {
        RunsCommand::List {
            output,
            store,
            json,
        } => {
            let history = History::open(&output, &store.stores()?)?;
            let runs = history.runs().await?;
            if runs.is_empty() {
                return Err(HistoryError::NoHistory { output }.into());
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&runs)?);
            } else {
                print!("{}", table(&runs));
            }
        }
        RunsCommand::Prune {
            output,
            keep,
            store,
        } => prune(&output, keep as usize, &store).await?,
    }
    Ok(())
}

/// The history as a table, a line per run.
fn table(runs: &[RunEntry]) -> String {
    let mut out = format!(
        "{:<38} {:<24} {:<9} {:>10} {:>8}  {:<9} LATEST\n",
        "RUN", "COMMITTED", "MODEL", "ROWS", "REJECTED", "STATUS"
    );
    for r in runs {
        let m = r.manifest.as_ref();
        let model = m
            .and_then(|m| m.model_version.clone())
            .or_else(|| m.map(|m| m.model_sha256.chars().take(8).collect()))
            .unwrap_or_default();
        out += &format!(
            "{:<38} {:<24} {:<9} {:>10} {:>8}  {:<9} {}\n",
            r.run_id,
            m.map(|m| m.committed_at.as_str()).unwrap_or("-"),
            model,
            m.map(|m| m.rows.to_string()).unwrap_or_else(|| "-".into()),
            r.metrics
                .as_ref()
                .map(|x| x.rows.rejected.to_string())
                .unwrap_or_else(|| "-".into()),
            if r.committed { "committed" } else { "partial" },
            if r.latest { "*" } else { "" },
        );
    }
    out
}

/// `batchscore rollback OUTPUT [--to RUN_ID]`: `_LATEST` back to an earlier committed run.
pub async fn rollback(output: &str, to: Option<&str>, store: &StoreArgs) -> anyhow::Result<()> {
    let history = History::open(output, &store.stores()?)?;
    let runs = committed(&history, output).await?;
    let current = runs.iter().position(|r| r.latest);
    let target = match to {
        Some(id) => runs
            .iter()
            .find(|r| r.run_id == id)
            .ok_or_else(|| HistoryError::NoRun {
                output: output.to_string(),
                run_id: id.to_string(),
                known: runs
                    .iter()
                    .map(|r| r.run_id.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })?,
        None => match current {
            Some(i) if i > 0 => &runs[i - 1],
            _ => {
                return Err(HistoryError::Nothing {
                    output: output.to_string(),
                    why: "no committed run is older than the latest".into(),
                }
                .into());
            }
        },
    };
    let before = history.point_at(&target.run_id).await?;
    println!(
        "{output}: _LATEST -> run {} (was {})",
        target.run_id,
        before.as_deref().unwrap_or("none")
    );
    Ok(())
}

/// The committed runs, oldest first; an output without any is an error.
async fn committed(history: &History, output: &str) -> anyhow::Result<Vec<RunEntry>> {
    let runs: Vec<RunEntry> = history
        .runs()
        .await?
        .into_iter()
        .filter(|r| r.committed)
        .collect();
    if runs.is_empty() {
        return Err(HistoryError::NoHistory {
            output: output.to_string(),
        }
        .into());
    }
    Ok(runs)
}

async fn prune(output: &str, keep: usize, store: &StoreArgs) -> anyhow::Result<()> {
    let history = History::open(output, &store.stores()?)?;
    let runs = committed(&history, output).await?;
    let cut = runs.len().saturating_sub(keep);
    let mut removed = 0;
    for r in runs[..cut].iter().filter(|r| !r.latest) {
        history.remove(&r.run_id).await?;
        println!("removed run {} ({})", r.run_id, r.uri);
        removed += 1;
    }
    println!(
        "{output}: {removed} run(s) removed, {} kept",
        runs.len() - removed
    );
    Ok(())
}
