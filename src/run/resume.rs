//! A resumable run (`batchscore run JOB --resume`): the run is cut into pieces (contiguous
//! runs of work units, balanced by rows, as shards are) which one process scores one after
//! another, each recorded finished in the output's run folder with its manifest, exactly as
//! a shard of a sharded run is. Killed, the run leaves its finished pieces there; started
//! again with `--resume`, it joins the same run (the same run key, or a refusal saying what
//! changed), skips the pieces already finished and scores the rest; the last piece commits
//! the run from every piece's manifest. The sessions are built once for all the pieces.

use std::sync::Arc;

use indicatif::ProgressBar;

use super::plan::{refuse_unsplittable, refused};
use super::shard::{Attempt, ShardOutcome, commit_if_last, record_of, score_shard};
use super::{JobPlan, RunError, build_scorer};
use crate::input::{Shard, ShardId, ShardPlan, reopen};
use crate::output::RunFolder;
use crate::report::Resumed;
use crate::report::shards::ShardManifest;

/// The most pieces a run is cut into: a run killed at 90% resumes within 2% of there, and
/// each piece costs a scan's start and a part file per worker.
pub const MAX_PIECES: usize = 50;

/// Runs a planned job as resumable pieces (see the module's documentation).
pub async fn execute_resumable(
    mut plan: JobPlan,
    progress: Option<ProgressBar>,
) -> Result<ShardOutcome, RunError> {
    let mut problems = Vec::new();
    refuse_unsplittable(plan.input.logical_plan(), &mut problems);
    if !problems.is_empty() {
        return Err(refused(&plan.spec, problems));
    }
    let pieces = ShardPlan::new(&plan.units, plan.units.len().clamp(1, MAX_PIECES));
    let count = pieces.shards.len();
    let s = &plan.spec.spec;
    let folder = RunFolder::open(&s.output.uri, &plan.stores).await?;
    let first = ShardId { index: 0, count };
    let ours = record_of(&plan, first, None, chrono::Utc::now(), true);
    let record = folder.join(&ours).await?;
    let done = folder.finished_shards().await?;
    let resumed = skipped(&pieces, &done);
    let attempt = uuid::Uuid::now_v7().to_string();
    tracing::Span::current().record("run_id", record.run_id.as_str());
    tracing::info!(run_id = %record.run_id, attempt = %attempt, job = %s.name, folder = %folder.uri,
        pieces = count, pieces_skipped = resumed.pieces_skipped, rows_skipped = resumed.rows_skipped,
        "starting a resumable run");
    if let Some(pb) = &progress {
        let rows: Option<u64> = pieces.shards.iter().map(|p| p.rows).sum();
        if let Some(rows) = rows {
            pb.set_length(rows - resumed.rows_skipped.min(rows));
        }
    }
    let scorer = Arc::new(build_scorer(&mut plan)?);
    let ours = Attempt {
        folder: &folder,
        record: &record,
        attempt: &attempt,
        scorer: &scorer,
    };
    let mut last = None;
    for piece in pieces
        .shards
        .iter()
        .filter(|p| !done.iter().any(|m| m.shard == p.index))
    {
        narrow_to(&mut plan, piece).await?;
        scorer.stats.reset();
        let id = ShardId {
            index: piece.index,
            count,
        };
        last = score_shard(&mut plan, &ours, id, progress.as_ref())
            .await?
            .or(last);
        crate::hooks::barrier(&format!("piece-{}", piece.index)).await;
    }
    if let Some(pb) = &progress {
        pb.finish_and_clear();
    }
    let Some(metrics) = last.or_else(|| done.first().cloned()).map(|m| m.metrics) else {
        return Err(RunError::Task {
            what: "the resumable run".into(),
            message: "another attempt finished every piece this one scored".into(),
        });
    };
    commit_if_last(&ours, metrics, &plan.stores, Some(resumed)).await
}

/// Registers the input again as `piece`'s units only, for the next scan.
async fn narrow_to(plan: &mut JobPlan, piece: &Shard) -> Result<(), RunError> {
    let chosen = &plan.units[piece.units.clone()];
    let input = &plan.spec.spec.input;
    let (frame, csv) = reopen(&plan.ctx, input, &plan.source, &plan.units, chosen)
        .await
        .map_err(|problems| RunError::Task {
            what: format!("piece {} of the input", piece.index),
            message: problems
                .iter()
                .map(|p| format!("[{}]: {}", p.key, p.message))
                .collect::<Vec<_>>()
                .join("; "),
        })?;
    plan.input = frame;
    plan.csv_rows_read = csv.as_ref().map(|r| r.rows_read.clone());
    plan.csv_malformed = csv.map(|r| r.malformed);
    Ok(())
}

/// What earlier attempts finished: the pieces recorded in the run folder.
fn skipped(pieces: &ShardPlan, done: &[ShardManifest]) -> Resumed {
    let finished = |i: usize| done.iter().find(|m| m.shard == i);
    let mut r = Resumed {
        pieces: pieces.shards.len(),
        pieces_skipped: 0,
        units_skipped: 0,
        rows_skipped: 0,
    };
    for piece in &pieces.shards {
        if let Some(m) = finished(piece.index) {
            r.pieces_skipped += 1;
            r.units_skipped += piece.units.len();
            r.rows_skipped += piece
                .rows
                .or(m.metrics.rows.read)
                .unwrap_or(m.metrics.rows.selected);
        }
    }
    r
}

/// After a whole run committed `uri`: removes the pieces a killed `--resume` attempt left in
/// the run folder, which this run superseded. A sharded run in progress there is left alone.
pub async fn forget_resumable(uri: &str, stores: &crate::storage::StoreFactory) {
    let Ok(folder) = RunFolder::open(uri, stores).await else {
        return;
    };
    match folder.record().await {
        Ok(Some(record)) if record.resumable => {
            tracing::info!(folder = %folder.uri, run_id = %record.run_id, "removing the pieces of an earlier --resume attempt, which this run superseded");
            folder.remove().await;
        }
        Ok(None) => folder.remove_if_empty(),
        _ => {}
    }
}
