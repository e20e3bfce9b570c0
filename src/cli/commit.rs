//! `batchscore commit OUTPUT`: commits a sharded run whose last shard could not (it died
//! after finishing, or its commit failed), or says which shards are still to run.

use super::run::summary_line;
use crate::run::shard::{CommitOutcome, commit_by_hand};

/// The output whose run to commit, where its store's settings come from, and whether to
/// break a held commit lock.
#[derive(Debug, clap::Args)]
pub struct CommitArgs {
    /// The run's output: a folder, or a store URI (s3://, gs://, az://).
    pub output: String,
    #[command(flatten)]
    pub store: super::StoreArgs,
    /// Commit even when a shard holds the commit lock: for a shard that died while
    /// committing. Check first that it is not still running.
    #[arg(long)]
    pub force: bool,
}

/// Commits the run in progress at the output; prints what became of it on stdout.
pub async fn commit(args: &CommitArgs) -> anyhow::Result<()> {
    let stores = args.store.stores()?;
    let line = match commit_by_hand(&args.output, &stores, args.force).await? {
        CommitOutcome::Committed(summary) => {
            println!("{} (committed by hand)", summary_line(&summary));
            return Ok(crate::run::alerts_outcome(&summary.metrics)?);
        }
        CommitOutcome::AlreadyCommitted { run_id } => format!(
            "{}: run {run_id} already committed this output; nothing to do",
            args.output
        ),
    };
    println!("{line}");
    Ok(())
}
