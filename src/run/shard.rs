//! One shard of a sharded run (`batchscore run JOB --shard i/N`).
//!
//! The shard joins the run in the output's run folder (`output::RunFolder`: the first shard
//! records the run, the others must be the same run and adopt its id), scores its units into
//! staging of its own, and records itself finished with its manifest. Whichever shard finds
//! every shard finished takes the commit lock and commits the run as a single run commits:
//! the parts of every shard, one `_manifest.json` and `_metrics.json` (summed over the
//! shards), `_SUCCESS` last; then the run folder goes. A shard whose run already committed
//! does nothing; a second copy of a finished shard leaves the first one's parts.

use std::sync::Arc;
use std::time::Instant;

use indicatif::ProgressBar;

use super::partition::check_budget;
use super::physical::Scoring;
use super::{
    Destination, JobPlan, RunError, RunSummary, Written, build_scorer, run_facts, write_parts,
};
use crate::input::ShardId;
use crate::output::{Committer, RunFolder, history};
use crate::report::shards::{
    LatencyHistogram, RunRecord, ShardAgreements, ShardManifest, ShardProfiles, merge,
    merge_agreements, merge_profiles,
};
use crate::report::{Manifest, PartFile, Resumed, RunMetrics};
use crate::score::Scorer;
use crate::spec::OutputLayout;
use crate::storage::StoreFactory;

/// How a shard's process ended.
#[derive(Debug)]
pub enum ShardOutcome {
    /// This shard was the last to finish and committed the run.
    Committed(Box<RunSummary>),
    /// The shard is finished; `done` of `of` shards are.
    Finished {
        metrics: Box<RunMetrics>,
        done: usize,
        of: usize,
    },
    /// Another attempt of this shard had finished first: this one's parts were dropped.
    Duplicate { run_id: String },
    /// Every shard was finished, and another one is committing the run.
    CommittedByAnother { run_id: String },
    /// The run had already committed (a retry after the commit): nothing was done.
    AlreadyCommitted { run_id: String },
}

/// Runs one shard of a planned sharded run (see the module's documentation).
pub async fn execute_shard(
    mut plan: JobPlan,
    run_id: Option<String>,
    progress: Option<ProgressBar>,
) -> Result<ShardOutcome, RunError> {
    let Some((id, _)) = plan.shard.clone() else {
        return Err(RunError::Task {
            what: "a shard".into(),
            message: "the plan is not of a shard".into(),
        });
    };
    if let Some(run_id) = plan.already_committed.clone() {
        return Ok(ShardOutcome::AlreadyCommitted { run_id });
    }
    let s = &plan.spec.spec;
    let folder = RunFolder::open(&s.output.uri, &plan.stores).await?;
    let record = folder
        .join(&record_of(&plan, id, run_id, chrono::Utc::now(), false))
        .await?;
    let attempt = uuid::Uuid::now_v7().to_string();
    tracing::Span::current().record("run_id", record.run_id.as_str());
    tracing::info!(run_id = %record.run_id, shard = %id, attempt = %attempt, job = %s.name, folder = %folder.uri, "starting shard");
    let scorer = Arc::new(build_scorer(&mut plan)?);
    let ours = Attempt {
        folder: &folder,
        record: &record,
        attempt: &attempt,
        scorer: &scorer,
    };
    let scored = score_shard(&mut plan, &ours, id, progress.as_ref()).await;
    if let Some(pb) = &progress {
        pb.finish_and_clear();
    }
    let Some(manifest) = scored? else {
        return Ok(ShardOutcome::Duplicate {
            run_id: record.run_id,
        });
    };
    crate::hooks::barrier("shard-finished").await;
    commit_if_last(&ours, manifest.metrics, &plan.stores, None).await
}

/// One process's attempt at a run's shards: where it stages, under which record, with
/// which sessions.
pub(super) struct Attempt<'a> {
    pub folder: &'a RunFolder,
    pub record: &'a RunRecord,
    pub attempt: &'a str,
    pub scorer: &'a Arc<Scorer>,
}

/// Scores the plan's input (shard `id`'s units) into the run folder and records the shard
/// finished; none when another attempt had finished it first (this one's parts are dropped).
pub(super) async fn score_shard(
    plan: &mut JobPlan,
    ours: &Attempt<'_>,
    id: ShardId,
    progress: Option<&ProgressBar>,
) -> Result<Option<ShardManifest>, RunError> {
    let (folder, scorer) = (ours.folder, ours.scorer);
    let started_at = chrono::Utc::now();
    let started = Instant::now();
    let scoring = Scoring::new(plan, scorer.clone())?;
    let destination = Destination {
        staging: folder.staging(id.index, ours.attempt)?,
        part: format!("part-{:05}", id.index),
    };
    let mut written = match write_parts(plan, &scoring, scorer, &destination, progress).await {
        Ok(w) => w,
        Err(e) => {
            folder.discard(id.index, ours.attempt).await;
            return Err(e);
        }
    };
    let run_id = ours.record.run_id.clone();
    let facts = run_facts(plan, scorer, &written, run_id, started_at, started);
    let mut metrics = RunMetrics::new(facts, &scorer.stats);
    let profiles = super::merged_profiles(&mut written);
    let saved = profiles
        .as_ref()
        .zip(plan.profiles.as_ref())
        .map(|(p, what)| ShardProfiles {
            plan: what.as_ref().clone(),
            state: p.state(),
            baseline: plan.baseline.as_ref().map(|b| b.label.clone()),
        });
    super::add_distributions(plan, profiles, &mut metrics);
    let agreements = super::merged_agreement(plan, &mut written).map(|a| {
        let models = super::challenger_models(plan);
        let saved = ShardAgreements {
            plan: a.plan().to_vec(),
            state: a.state(),
            models: models.clone(),
        };
        metrics.challengers = a.reports(&models);
        saved
    });
    let mut manifest = shard_manifest(ours.record, id, ours.attempt, scorer, metrics, &written);
    manifest.profiles = saved;
    manifest.agreements = agreements;
    if !folder.finish_shard(&manifest).await? {
        folder.discard(id.index, ours.attempt).await;
        return Ok(None);
    }
    Ok(Some(manifest))
}

/// After one of its shards finished: commits the run when every shard has and the commit
/// lock is this attempt's. `metrics` are the shard's, for the outcome.
pub(super) async fn commit_if_last(
    ours: &Attempt<'_>,
    metrics: RunMetrics,
    stores: &StoreFactory,
    resumed: Option<Resumed>,
) -> Result<ShardOutcome, RunError> {
    let (folder, record) = (ours.folder, ours.record);
    let finished = folder.finished_shards().await?;
    if finished.len() < record.shards {
        return Ok(ShardOutcome::Finished {
            metrics: Box::new(metrics),
            done: finished.len(),
            of: record.shards,
        });
    }
    if !folder.lock_commit(ours.attempt).await? {
        return Ok(ShardOutcome::CommittedByAnother {
            run_id: record.run_id.clone(),
        });
    }
    let summary = commit_run(folder, record, &finished, stores, resumed).await?;
    Ok(ShardOutcome::Committed(Box::new(summary)))
}

/// What a finished shard records: its parts and its counts, every reject reason and its
/// batch latencies as a histogram, so that the run's metrics can be summed exactly.
fn shard_manifest(
    record: &RunRecord,
    id: ShardId,
    attempt: &str,
    scorer: &Scorer,
    metrics: RunMetrics,
    written: &Written,
) -> ShardManifest {
    let latencies = scorer
        .stats
        .batch_latencies
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    ShardManifest {
        run_id: record.run_id.clone(),
        run_key: record.run_key.clone(),
        shard: id.index,
        shards: id.count,
        attempt: attempt.to_string(),
        files: written.files.clone(),
        rejected_files: written.rejected_files.clone(),
        metrics,
        reasons: scorer.stats.rejected.all(),
        latency: LatencyHistogram::from_samples(&latencies),
        malformed: scorer
            .stats
            .rows_malformed
            .load(std::sync::atomic::Ordering::Relaxed),
        profiles: None,
        agreements: None,
    }
}

/// The record this shard would write, were it the first: its run id is `--run-id`, else the
/// scheduler's job id, else a new one.
pub(super) fn record_of(
    plan: &JobPlan,
    id: ShardId,
    run_id: Option<String>,
    started_at: chrono::DateTime<chrono::Utc>,
    resumable: bool,
) -> RunRecord {
    let s = &plan.spec.spec;
    RunRecord {
        run_key: plan.run_key(),
        run_id: run_id.unwrap_or_else(|| uuid::Uuid::now_v7().to_string()),
        shards: id.count,
        spec_hash: plan.spec.hash.clone(),
        model_sha256: plan.model.sha256.clone(),
        input_fingerprint: plan.input_fingerprint.clone(),
        started_at: started_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        job_name: s.name.clone(),
        output_uri: s.output.uri.clone(),
        model_uri: plan.model.uri.clone(),
        model_name: plan.model.registered.as_ref().map(|r| r.name.clone()),
        model_version: plan.model.registered.as_ref().map(|r| r.version.clone()),
        format: s.output.format.extension().to_string(),
        mode: s.output.mode,
        layout: s.output.layout,
        monitor: s.monitor.clone(),
        max_rejected: s.run.max_rejected,
        max_rejected_rate: s.run.max_rejected_rate,
        resumable,
    }
}

/// Commits the run from every shard's manifest, within the run's reject budget; the run
/// folder goes either way (a run past its budget cannot commit). A resumable run's pieces
/// ran one after another, on the same workers.
async fn commit_run(
    folder: &RunFolder,
    record: &RunRecord,
    shards: &[ShardManifest],
    stores: &StoreFactory,
    resumed: Option<Resumed>,
) -> Result<RunSummary, RunError> {
    let Some(mut metrics) = merge(shards, &record.started_at) else {
        return Err(RunError::Task {
            what: "the commit".into(),
            message: "no shard finished".into(),
        });
    };
    metrics.run_id = record.run_id.clone();
    if record.resumable {
        metrics.workers = shards.iter().map(|m| m.metrics.workers).max().unwrap_or(0);
        metrics.resumed = resumed;
    }
    let considered = metrics.rows.selected + shards.iter().map(|m| m.malformed).sum::<u64>();
    let budget = check_budget(
        &record.job_name,
        record.max_rejected,
        record.max_rejected_rate,
        considered,
        metrics.rows.rejected,
        &metrics.rejected_reasons,
    );
    if let Err(e) = budget {
        folder.remove().await;
        return Err(e);
    }
    if let Some((distributions, drift)) = merge_profiles(shards) {
        metrics.distributions = distributions;
        metrics.drift = drift;
    }
    if let Some(challengers) = merge_agreements(shards) {
        metrics.challengers = challengers;
    }
    super::check_alerts(&record.monitor, &mut metrics);
    let commit_started = Instant::now();
    let (mut files, mut rejected_files, mut sources) = (Vec::new(), Vec::new(), Vec::new());
    for m in shards {
        for f in &m.files {
            sources.push((folder.part(m, &f.path), f.path.clone()));
            files.push(f.clone());
        }
        for f in &m.rejected_files {
            sources.push((folder.part(m, &f.path), f.path.clone()));
            rejected_files.push(f.clone());
        }
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    rejected_files.sort_by(|a, b| a.path.cmp(&b.path));
    let manifest = manifest(record, files, rejected_files);
    let target = history::run_uri(&record.output_uri, record.layout, &record.run_id);
    let mode = super::run_mode(record.layout, record.mode);
    let committer = Committer::prepare(&target, mode, &record.run_id, stores).await?;
    let output = committer
        .commit_parts(sources, &manifest, &mut metrics, commit_started)
        .await?;
    super::publish(&record.output_uri, record.layout, &record.run_id, stores).await?;
    folder.remove().await;
    tracing::info!(output = %output, rows = manifest.rows, shards = shards.len(), "committed the run");
    Ok(RunSummary { output, metrics })
}

fn manifest(record: &RunRecord, files: Vec<PartFile>, rejected_files: Vec<PartFile>) -> Manifest {
    Manifest {
        run_id: record.run_id.clone(),
        run_key: record.run_key.clone(),
        job_name: record.job_name.clone(),
        spec_hash: record.spec_hash.clone(),
        input_fingerprint: record.input_fingerprint.clone(),
        model_uri: record.model_uri.clone(),
        model_sha256: record.model_sha256.clone(),
        model_name: record.model_name.clone(),
        model_version: record.model_version.clone(),
        format: record.format.clone(),
        rows: files.iter().map(|f| f.rows).sum(),
        files,
        rejected_rows: rejected_files.iter().map(|f| f.rows).sum(),
        rejected_files,
        committed_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        batchscore_version: env!("CARGO_PKG_VERSION").to_string(),
    }
}

/// What `batchscore commit` did.
#[derive(Debug)]
pub enum CommitOutcome {
    Committed(Box<RunSummary>),
    /// The output was committed already, by this run.
    AlreadyCommitted {
        run_id: String,
    },
}

/// `batchscore commit OUTPUT`: commits the run in progress at `output` from its finished
/// shards, as the last shard would have; refuses, naming them, while shards are missing.
/// `force` takes the commit lock even when a shard holds it (one that died committing).
pub async fn commit_by_hand(
    output: &str,
    stores: &StoreFactory,
    force: bool,
) -> Result<CommitOutcome, RunError> {
    let folder = RunFolder::open(output, stores).await?;
    let Some(record) = folder.record().await? else {
        folder.remove_if_empty();
        for layout in [OutputLayout::Flat, OutputLayout::Runs] {
            if let Some(m) = Committer::published_manifest(output, layout, stores).await? {
                return Ok(CommitOutcome::AlreadyCommitted { run_id: m.run_id });
            }
        }
        return Err(RunError::NoRun {
            output: output.to_string(),
        });
    };
    let finished = folder.finished_shards().await?;
    let missing: Vec<String> = (0..record.shards)
        .filter(|i| !finished.iter().any(|m| m.shard == *i))
        .map(|i| i.to_string())
        .collect();
    if !missing.is_empty() && record.resumable {
        return Err(RunError::PiecesMissing {
            output: output.to_string(),
            run_id: record.run_id,
            done: finished.len(),
            of: record.shards,
        });
    }
    if !missing.is_empty() {
        return Err(RunError::ShardsMissing {
            output: output.to_string(),
            run_id: record.run_id,
            missing: missing.join(", "),
            of: record.shards,
        });
    }
    if !folder.lock_commit("commit").await? && !force {
        return Err(RunError::CommitLocked {
            folder: folder.uri.clone(),
        });
    }
    let summary = commit_run(&folder, &record, &finished, stores, None).await?;
    Ok(CommitOutcome::Committed(Box::new(summary)))
}
