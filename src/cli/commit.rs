//! `batchscore commit OUTPUT`: commits a sharded run whose last shard could not (it died
//! after finishing, or its commit failed), or says which shards are still to run.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::run::summary_line;
use crate::run::shard::{CommitOutcome, commit_by_hand};
use crate::spec;
use crate::storage::StoreFactory;

/// The output whose run to commit, where its store's settings come from, and whether to
/// break a held commit lock.
#[derive(Debug, clap::Args)]
pub struct CommitArgs {
    /// The run's output: a folder, or a store URI (s3://, gs://, az://).
    pub output: String,
    /// The job spec whose `[storage]` settings reach the output's store. Default: the
    /// environment's (AWS_*, GOOGLE_*, AZURE_* variables), as for a spec without `[storage]`.
    #[arg(long, value_name = "JOB")]
    pub spec: Option<PathBuf>,
    /// A value for ${NAME} in the spec; repeatable.
    #[arg(long = "var", value_name = "NAME=VALUE", value_parser = spec::parse_var)]
    pub vars: Vec<(String, String)>,
    /// Commit even when a shard holds the commit lock: for a shard that died while
    /// committing. Check first that it is not still running.
    #[arg(long)]
    pub force: bool,
}

/// Commits the run in progress at the output; prints what became of it on stdout.
pub async fn commit(args: &CommitArgs) -> anyhow::Result<()> {
    let stores = match &args.spec {
        Some(job) => {
            let vars: BTreeMap<String, String> = args.vars.iter().cloned().collect();
            StoreFactory::new(spec::load(job, &vars)?.spec.storage)
        }
        None => StoreFactory::default(),
    };
    let line = match commit_by_hand(&args.output, &stores, args.force).await? {
        CommitOutcome::Committed(summary) => {
            format!("{} (committed by hand)", summary_line(&summary))
        }
        CommitOutcome::AlreadyCommitted { run_id } => format!(
            "{}: run {run_id} already committed this output; nothing to do",
            args.output
        ),
    };
    println!("{line}");
    Ok(())
}
