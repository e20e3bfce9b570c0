//! The tasks of a run: one per scoring worker, each pulling scored batches from its
//! partition of the plan and writing them to its own parts; and, for a CSV input, one that
//! writes the malformed rows the scan set aside. Each stops the run as soon as the reject
//! budget (`[run] max_rejected`) is exceeded.

use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::physical_plan::SendableRecordBatchStream;
use futures::StreamExt;
use indicatif::ProgressBar;

use super::RunError;
use crate::input::csv::MalformedRow;
use crate::output::RollingWriter;
use crate::reject::{ReasonCount, RejectCounts};
use crate::report::PartFile;
use crate::report::agreement::Agreements;
use crate::report::columns::ColumnProfiles;
use crate::score::Scorer;

/// What a task wrote and how long it spent.
#[derive(Default)]
pub(super) struct PartitionResult {
    pub files: Vec<PartFile>,
    pub rejected_files: Vec<PartFile>,
    pub pull: Duration,
    pub write: Duration,
    pub profiles: Option<ColumnProfiles>,
    /// The challengers' agreement with the champion over this task's written rows.
    pub agreement: Option<Agreements>,
}

/// The reject budget a task checks after each batch.
#[derive(Clone)]
pub(super) struct Budget {
    pub job: String,
    pub max_rejected: Option<u64>,
}

impl Budget {
    /// Past `[run] max_rejected`, the error that stops the run at once: nothing will be
    /// committed.
    pub fn check(&self, rejected: &RejectCounts) -> Result<(), RunError> {
        check_budget(
            &self.job,
            self.max_rejected,
            None,
            0,
            rejected.rows(),
            &rejected.top(5),
        )
    }
}

/// The reject budget over `rejected` of `considered` rows: past `max_rejected` or
/// `max_rejected_rate`, the error that commits nothing (exit code 3) and names the top
/// reasons.
pub(super) fn check_budget(
    job: &str,
    max_rejected: Option<u64>,
    max_rejected_rate: Option<f64>,
    considered: u64,
    rejected: u64,
    top: &[ReasonCount],
) -> Result<(), RunError> {
    let limit = match (max_rejected, max_rejected_rate) {
        (Some(max), _) if rejected > max => format!("more than [run] max_rejected = {max}"),
        (_, Some(rate)) if considered > 0 && rejected as f64 > rate * considered as f64 => format!(
            "{:.4}% of {considered} rows, more than [run] max_rejected_rate = {rate}",
            100.0 * rejected as f64 / considered as f64
        ),
        _ => return Ok(()),
    };
    let reasons: Vec<String> = top
        .iter()
        .take(5)
        .map(|r| format!("  {} x {}", r.count, r.reason))
        .collect();
    Err(RunError::RejectBudget {
        message: format!(
            "job {job}: {rejected} rows rejected, {limit}; nothing was committed. Top reasons:\n{}",
            reasons.join("\n")
        ),
    })
}

/// One scoring worker: pulls its partition's scored batches, writes the scored rows to
/// `writer` and the rejected ones to `rejected`.
pub(super) struct PartitionTask {
    pub stream: SendableRecordBatchStream,
    pub writer: RollingWriter,
    pub rejected: RollingWriter,
    pub n_pass: usize,
    /// Challengers' prediction columns after the champion's (see `physical::Scoring`).
    pub n_challengers: usize,
    pub out_schema: SchemaRef,
    pub rej_schema: SchemaRef,
    pub scorer: Arc<Scorer>,
    pub budget: Budget,
    pub progress: Option<ProgressBar>,
    /// This worker's column profiles, when the run reports distributions.
    pub profiles: Option<ColumnProfiles>,
    /// This worker's agreement tallies, when the job has challengers.
    pub agreement: Option<Agreements>,
}

impl PartitionTask {
    pub async fn run(mut self) -> Result<PartitionResult, RunError> {
        let mut result = PartitionResult::default();
        loop {
            let t = Instant::now();
            let next = self.stream.next().await;
            result.pull += t.elapsed();
            let Some(batch) = next else { break };
            let batch = batch?;
            let split = crate::reject::split_scored(
                &batch,
                self.n_pass,
                self.n_challengers,
                &self.out_schema,
                &self.rej_schema,
            )?;
            let (out, rej) = (split.out, split.rejected);
            if let Some(p) = &mut self.profiles {
                // The scored batch: pass-through, each model's predictions, then the features.
                let features = self.n_pass + 1 + self.n_challengers;
                p.observe(&out.columns()[self.n_pass..], &batch.columns()[features..]);
            }
            if let Some(a) = &mut self.agreement {
                a.observe(&out.columns()[self.n_pass..], &split.challenger_rejected);
            }
            let t = Instant::now();
            self.writer.write(&out).await?;
            if let Some(rej) = &rej {
                self.rejected.write(rej).await?;
            }
            result.write += t.elapsed();
            if let Some(pb) = &self.progress {
                pb.inc(batch.num_rows() as u64);
            }
            self.budget.check(&self.scorer.stats.rejected)?;
        }
        let t = Instant::now();
        result.files = self.writer.finish().await?;
        result.rejected_files = self.rejected.finish().await?;
        result.write += t.elapsed();
        result.profiles = self.profiles;
        result.agreement = self.agreement;
        Ok(result)
    }
}

/// Writes the malformed rows of a CSV scan to `_rejected/` (stage `read`, the file and line
/// in `_reason`, the record in `_value`, pass-through columns null) and counts them as
/// rejected, stopping the run past `max_rejected` as the scoring tasks do. With `redact` (the
/// input has sensitive columns) a record's `_value` is `<redacted>`, whole, and so is each
/// value a parse error's message quotes ([`police_reason`]).
pub(super) async fn write_malformed(
    mut malformed: tokio::sync::mpsc::Receiver<MalformedRow>,
    mut scan_done: tokio::sync::oneshot::Receiver<()>,
    mut writer: RollingWriter,
    schema: SchemaRef,
    scorer: Arc<Scorer>,
    budget: Budget,
    redact: bool,
) -> Result<PartitionResult, RunError> {
    let stats = &scorer.stats;
    let mut result = PartitionResult::default();
    let mut rows: Vec<MalformedRow> = Vec::new();
    let mut closed = false;
    loop {
        // The table (and so a sender) lives as long as the plan: the run says when the scans
        // are over, and what is queued by then is the rest.
        let n = tokio::select! {
            n = malformed.recv_many(&mut rows, 1024) => n,
            _ = &mut scan_done, if !closed => {
                closed = true;
                malformed.close();
                continue;
            }
        };
        if n == 0 {
            break;
        }
        let t = Instant::now();
        if redact {
            for r in &mut rows {
                r.reason = police_reason(&r.reason);
            }
        }
        let texts: Vec<(String, String)> = rows
            .iter()
            .map(|r| {
                let text = if redact {
                    crate::reject::REDACTED.to_string()
                } else {
                    r.text.clone()
                };
                (r.to_string(), text)
            })
            .collect();
        writer
            .write(&crate::reject::read_rejects(&schema, &texts)?)
            .await?;
        result.write += t.elapsed();
        stats.rejected.add(rows.iter().map(|r| r.reason.as_str()));
        stats
            .rows_malformed
            .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        rows.clear();
        budget.check(&stats.rejected)?;
    }
    let t = Instant::now();
    result.rejected_files = writer.finish().await?;
    result.write += t.elapsed();
    Ok(result)
}

/// A malformed record's reason with the values it may quote redacted: batchscore's own reasons
/// quote only column names (`column "b": cannot parse as Float64`, `field 3 ("email") is not
/// valid UTF-8`); a parse error in a form it does not recognise (`malformed CSV record: ` and
/// Arrow's message) can quote the value.
fn police_reason(reason: &str) -> String {
    match reason.strip_prefix("malformed CSV record: ") {
        Some(rest) if !rest.ends_with(" is not valid UTF-8") => format!(
            "malformed CSV record: {}",
            crate::privacy::redact::redact_message(rest)
        ),
        _ => reason.to_string(),
    }
}

/// Join handles that abort their tasks when dropped, and wait until they have stopped.
pub(super) struct AbortOnDrop<T>(pub Vec<tokio::task::JoinHandle<T>>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
        // An aborted task stops at its next await, not at once: one in the middle of an ONNX
        // Runtime call went on to write a part into the staging directory after the
        // committer (dropped next) had removed it, and a stopped run left a staging
        // directory behind (1 run in 4 of the SIGINT test). Waiting blocks this thread only,
        // and only on the multi-thread runtime, whose workers finish the tasks.
        let running: Vec<_> = self.0.drain(..).filter(|t| !t.is_finished()).collect();
        if crate::score::udf::on_multi_thread_runtime() && !running.is_empty() {
            tokio::task::block_in_place(|| {
                futures::executor::block_on(futures::future::join_all(running))
            });
        }
    }
}

/// Every task's result, in order, or the first error (a panic or cancellation as an error
/// naming `what`).
pub(super) async fn join_all(
    tasks: &mut AbortOnDrop<Result<PartitionResult, RunError>>,
    what: &str,
    results: &mut Vec<PartitionResult>,
) -> Result<(), RunError> {
    let mut first_error = None;
    for task in tasks.0.iter_mut() {
        let r = match task.await {
            Ok(r) => r,
            Err(join) => Err(RunError::Task {
                what: what.to_string(),
                message: join.to_string(),
            }),
        };
        match r {
            Ok(r) => results.push(r),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    first_error.map_or(Ok(()), Err)
}
