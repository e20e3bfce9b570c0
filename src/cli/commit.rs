//! `batchscore commit JOB`: commits a sharded run whose last shard could not (it died after
//! finishing, or its commit failed), or says which shards are still to run.

use super::run::{JobArgs, summary_line};
use crate::run::shard::{CommitOutcome, commit_by_hand};
use crate::storage::StoreFactory;

/// The job whose output's run to commit, and whether to break a held commit lock.
#[derive(Debug, clap::Args)]
pub struct CommitArgs {
    #[command(flatten)]
    pub job: JobArgs,
    /// Commit even when a shard holds the commit lock: for a shard that died while
    /// committing. Check first that it is not still running.
    #[arg(long)]
    pub force: bool,
}

/// Commits the run in progress at the job's output; prints what became of it on stdout.
pub async fn commit(args: &CommitArgs) -> anyhow::Result<()> {
    let spec = args.job.load()?;
    let s = &spec.spec;
    let stores = StoreFactory::new(s.storage.clone());
    let line = match commit_by_hand(&s.output.uri, &stores, args.force).await? {
        CommitOutcome::Committed(summary) => {
            format!("{} (committed by hand)", summary_line(&summary))
        }
        CommitOutcome::AlreadyCommitted { run_id } => format!(
            "{}: run {run_id} already committed this output; nothing to do -> {}",
            s.name, s.output.uri
        ),
    };
    println!("{line}");
    Ok(())
}
