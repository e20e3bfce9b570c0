//! Orchestration: check a job completely ([`plan_job`]), then run it as one streaming plan
//! and commit its output exactly once ([`execute`]).
//!
//! Planning opens the model, registers the input, and binds every model input, output column
//! and pass-through column, collecting every problem before reporting; nothing is read but
//! file footers and the model. Execution runs one task per plan partition: each pulls scored
//! batches (reading, features and inference happen inside the pull, in DataFusion's plan) and
//! writes them to its own part files in the staging directory.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::logical_expr::{Expr, ScalarUDF, cast, col};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::Column as PhysicalColumn;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::{
    ExecutionPlan, StatisticsArgs, StatisticsContext, execute_stream_partitioned,
};
use datafusion::prelude::{DataFrame, SessionContext};
use futures::StreamExt;
use indicatif::ProgressBar;
use serde::Serialize;

use crate::csv_input::MalformedRow;
use crate::features::{BoundInputs, bind_inputs, nearest_columns, quote_ident};
use crate::metrics::{
    Latency, Manifest, ModelReport, ReasonCount, RowCounts, RunMetrics, StageSeconds,
};
use crate::model::{ExecutionDevice, Model, ModelError};
use crate::score::{OutputBinding, PredictUdf, Scorer, bind_outputs};
use crate::sink::{Committer, PartFile, RollingWriter, SinkError};
use crate::source::{CsvScanReport, effective_workers, open_input, session_context};
use crate::spec::{Fallback, LoadedSpec, Problem, SpecError};
use crate::storage::StoreFactory;
use crate::tree_order::{EnsembleSplits, TreeRowOrder};
use crate::work_queue::WorkQueueExec;

/// Why a run did not succeed. [`RunError::exit_code`] maps each to the CLI's exit code.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The spec, the model or the input cannot work together; nothing was read.
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    Runtime(ModelError),
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// More rows were rejected than `[run]` allows; nothing was committed.
    #[error("{message}")]
    RejectBudget { message: String },
    #[error("{0}")]
    Execution(String),
}

impl RunError {
    /// 2: refused before any work (spec, command line, model, existing output); 3: more rows
    /// rejected than the budget allows; 1: anything else.
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::Spec(_) | Self::Sink(SinkError::OutputExists { .. }) => 2,
            Self::RejectBudget { .. } => 3,
            _ => 1,
        }
    }
}

/// A job checked against its model and input, ready to run.
pub struct JobPlan {
    pub spec: LoadedSpec,
    pub model: Arc<Model>,
    ctx: SessionContext,
    /// The queried input.
    input: DataFrame,
    bound: BoundInputs,
    pub outputs: Vec<OutputBinding>,
    passthrough: Vec<Expr>,
    stores: StoreFactory,
    /// SHA-256 of the input files' listing (see `source::open_input`).
    input_fingerprint: String,
    /// For CSV inputs: the malformed rows the scan sets aside, and the rows it read.
    csv_report: Option<CsvScanReport>,
    pub workers: usize,
    /// Where sessions run, after any fallback.
    pub device: ExecutionDevice,
    /// The model's tree ensemble splits, when it has them and `[run] reorder_rows` is on.
    tree_splits: Option<EnsembleSplits>,
}

impl std::fmt::Debug for JobPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobPlan")
            .field("job", &self.spec.spec.name)
            .finish_non_exhaustive()
    }
}

impl JobPlan {
    /// The queried input's columns, for reports.
    pub fn input_columns(&self) -> Vec<(String, String)> {
        self.input
            .schema()
            .fields()
            .iter()
            .map(|f| (f.name().clone(), f.data_type().to_string()))
            .collect()
    }

    pub fn bindings(&self) -> &BoundInputs {
        &self.bound
    }
}

/// Checks everything that can be checked without scoring, listing every problem.
pub async fn plan_job(spec: LoadedSpec, ort_lib: Option<&Path>) -> Result<JobPlan, RunError> {
    crate::model::init_runtime(ort_lib).map_err(RunError::Runtime)?;
    let s = &spec.spec;
    let mut problems: Vec<Problem> = Vec::new();

    let stores = StoreFactory::new(s.storage.clone());
    let model = match Model::load(&s.model.uri, s.model.sha256.as_deref(), &stores).await {
        Ok(m) => Some(Arc::new(m)),
        Err(e @ (ModelError::OrtNotFound { .. } | ModelError::OrtLoad { .. })) => {
            return Err(RunError::Runtime(e));
        }
        Err(e) => {
            let key = if matches!(e, ModelError::Sha256Mismatch { .. }) {
                "model.sha256"
            } else {
                "model.uri"
            };
            problems.push(Problem::new(key, e.to_string()));
            None
        }
    };

    // A tree ensemble's splits, read once: they pick the default batch size and sort rows.
    let tree_splits = if s.run.reorder_rows {
        model
            .as_ref()
            .and_then(|m| EnsembleSplits::from_onnx(m.onnx_bytes()))
    } else {
        None
    };
    let mut spec = spec;
    spec.spec.run.settle_batch_size(tree_splits.is_some());
    let s = &spec.spec;

    let ctx = session_context(&s.run);
    let mut input_fingerprint = String::new();
    let mut csv_report = None;
    let input = match open_input(&ctx, &s.input, &stores, s.run.batch_size()).await {
        Ok(opened) => {
            input_fingerprint = opened.fingerprint;
            csv_report = opened.csv;
            Some(opened.frame)
        }
        Err(mut p) => {
            problems.append(&mut p);
            None
        }
    };

    let mut passthrough = Vec::new();
    if let Some(df) = &input {
        for (i, name) in s.output.passthrough.iter().enumerate() {
            match df.schema().field_with_unqualified_name(name) {
                Ok(field) => {
                    // Dictionary and view types are written as their plain types, which every
                    // Parquet and CSV reader understands.
                    let plain = match field.data_type() {
                        DataType::Dictionary(_, v) => Some(v.as_ref().clone()),
                        DataType::Utf8View => Some(DataType::Utf8),
                        DataType::BinaryView => Some(DataType::Binary),
                        _ => None,
                    };
                    let c = col(quote_ident(name));
                    passthrough.push(match plain {
                        Some(t) => cast(c, t).alias(name),
                        None => c,
                    });
                }
                Err(_) => problems.push(Problem::new(
                    format!("output.passthrough[{i}]"),
                    format!(
                        "unknown column {name:?}{}",
                        nearest_columns(df.schema(), name)
                    ),
                )),
            }
        }
    }

    let mut bound = None;
    let mut outputs = Vec::new();
    if let Some(model) = &model {
        if let Some(df) = &input {
            match bind_inputs(s, model, df) {
                Ok(b) => bound = Some(b),
                Err(mut p) => problems.append(&mut p),
            }
        }
        match bind_outputs(s.outputs.as_ref(), s.output.format, model) {
            Ok(o) => outputs = o,
            Err(mut p) => problems.append(&mut p),
        }
    }

    let device = ExecutionDevice::new(s.run.device, s.run.device_id);
    let device = match device.check() {
        Ok(()) => device,
        Err(reason) if s.run.fallback == Fallback::Cpu => {
            tracing::warn!(device = %device, reason = %reason, "the device cannot be had: running on the CPU, as [run] fallback = \"cpu\" allows");
            ExecutionDevice::Cpu
        }
        Err(reason) => {
            problems.push(Problem::new(
                "run.device",
                format!(
                    "{device}: ONNX Runtime cannot use it ({reason}); the library ({}) must be the onnxruntime-gpu wheel's (scripts/fetch-ort --gpu), with CUDA 13 and cuDNN 9 where the loader finds them, or set [run] fallback = \"cpu\"",
                    crate::model::runtime_library()
                        .map(|p| p.display().to_string())
                        .unwrap_or_default()
                ),
            ));
            ExecutionDevice::Cpu
        }
    };

    if let Err(e) = Committer::check(&s.output.uri, s.output.mode, &stores).await {
        problems.push(Problem::new("output.uri", e.to_string()));
    }

    match (model, input, bound) {
        (Some(model), Some(input), Some(bound)) if problems.is_empty() => Ok(JobPlan {
            workers: effective_workers(s.run.workers),
            device,
            tree_splits,
            spec,
            model,
            ctx,
            input,
            bound,
            outputs,
            passthrough,
            stores,
            input_fingerprint,
            csv_report,
        }),
        _ => Err(RunError::Spec(SpecError {
            file: spec.file.clone(),
            problems,
        })),
    }
}

/// For `mode = "skip"`: the run id that already committed this output with the same spec,
/// model and input files, if one did.
pub async fn already_committed(plan: &JobPlan) -> Result<Option<String>, RunError> {
    let Some(m) = Committer::committed_manifest(&plan.spec.spec.output.uri, &plan.stores).await?
    else {
        return Ok(None);
    };
    let same = m["spec_hash"] == plan.spec.hash.as_str()
        && m["model_sha256"] == plan.model.sha256.as_str()
        && m["input_fingerprint"] == plan.input_fingerprint.as_str();
    Ok(same.then(|| m["run_id"].as_str().unwrap_or_default().to_string()))
}

/// What a finished run reports to the command line.
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    /// The committed output's path or URL.
    pub output: String,
    pub metrics: RunMetrics,
}

/// Per-partition results of the write tasks.
#[derive(Default)]
struct PartitionResult {
    files: Vec<PartFile>,
    rejected_files: Vec<PartFile>,
    rows: u64,
    pull: Duration,
    write: Duration,
}

/// Runs a planned job and commits its output.
pub async fn execute(
    mut plan: JobPlan,
    progress: Option<ProgressBar>,
) -> Result<RunSummary, RunError> {
    let started_at = chrono::Utc::now();
    let started = Instant::now();
    let run_id = uuid::Uuid::now_v7().to_string();
    let s = &plan.spec.spec;
    let exec_err = |e: &dyn std::fmt::Display| RunError::Execution(e.to_string());

    let sessions = plan
        .model
        .session_pool(plan.workers, s.run.intra_op_threads, plan.device)
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
    let scorer = Arc::new(
        Scorer::new(
            plan.bound.inputs.clone(),
            plan.outputs.clone(),
            sessions,
            s.run.inference_batch_size(plan.device),
        )
        .with_row_order(row_order),
    );
    // The pass-through columns and every feature as a column of its own, evaluated by
    // DataFusion; `scoring_plan` puts the scoring on top of them.
    let n_pass = plan.passthrough.len();
    let mut select = plan.passthrough.clone();
    select.extend(
        plan.bound
            .exprs
            .iter()
            .enumerate()
            .map(|(i, e)| e.clone().alias(feature_column(i))),
    );
    let features = plan
        .input
        .clone()
        .select(select)
        .map_err(|e| exec_err(&e))?;
    let udf = ScalarUDF::from(PredictUdf::new(scorer.clone()));
    let predict = udf.call(
        (0..plan.bound.exprs.len())
            .map(|i| Expr::Column(datafusion::common::Column::from_name(feature_column(i))))
            .collect(),
    );

    // The written schema: pass-through columns, then the prediction struct's fields.
    let df_schema: SchemaRef = Arc::new(features.schema().as_arrow().clone());
    let mut fields: Vec<Field> = df_schema.fields()[..n_pass]
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields.extend(
        plan.outputs
            .iter()
            .map(|o| Field::new(&o.column, o.data_type(), true)),
    );
    let out_schema: SchemaRef = Arc::new(Schema::new(fields));
    // `_rejected/` rows: the pass-through columns, then where, why and what.
    let mut rej_fields: Vec<Field> = out_schema.fields()[..n_pass]
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    rej_fields
        .extend(crate::spec::REJECT_COLUMNS.map(|name| Field::new(name, DataType::Utf8, true)));
    let rej_schema: SchemaRef = Arc::new(Schema::new(rej_fields));

    let committer = Committer::prepare(&s.output.uri, s.output.mode, &run_id, &plan.stores).await?;
    tracing::info!(run_id = %run_id, job = %s.name, input = %s.input.uri, model = %s.model.uri, output = %committer.output(), workers = plan.workers, "starting run");

    let staging = committer.staging();
    let csv_rows_read = plan.csv_report.as_ref().map(|r| r.rows_read.clone());
    let outcome = async {
        let physical = scoring_plan(&plan.ctx, features, predict, n_pass, plan.workers)
            .await
            .map_err(|e| exec_err(&e))?;
        if let Some(pb) = &progress
            && let Ok(stats) =
                StatisticsContext::new().compute(physical.as_ref(), &StatisticsArgs::new())
            && let Some(&n) = stats.num_rows.get_value()
        {
            pb.set_length(n as u64);
        }
        let streams = execute_stream_partitioned(physical.clone(), plan.ctx.task_ctx())
            .map_err(|e| exec_err(&e))?;

        let mut tasks = Vec::with_capacity(streams.len());
        let mut malformed_task = None;
        let (scan_done, scan_done_rx) = tokio::sync::oneshot::channel::<()>();
        if let Some(report) = plan.csv_report.take() {
            // Malformed CSV rows go to `_rejected/` through parts of their own, numbered
            // after the scoring partitions' parts.
            let writer = RollingWriter::new(
                staging.clone(),
                "_rejected/part",
                streams.len(),
                s.output.format,
                rej_schema.clone(),
                s.output.max_rows_per_file,
            );
            malformed_task = Some(tokio::spawn(write_malformed(
                report.malformed,
                scan_done_rx,
                writer,
                rej_schema.clone(),
                scorer.clone(),
                s.run.max_rejected,
                s.name.clone(),
            )));
        }
        for (partition, mut stream) in streams.into_iter().enumerate() {
            let mut writer = RollingWriter::new(
                staging.clone(),
                "part",
                partition,
                s.output.format,
                out_schema.clone(),
                s.output.max_rows_per_file,
            );
            let mut rejected = RollingWriter::new(
                staging.clone(),
                "_rejected/part",
                partition,
                s.output.format,
                rej_schema.clone(),
                s.output.max_rows_per_file,
            );
            let (out_schema, rej_schema) = (out_schema.clone(), rej_schema.clone());
            let progress = progress.clone();
            let scorer = scorer.clone();
            let (max_rejected, job_name) = (s.run.max_rejected, s.name.clone());
            tasks.push(tokio::spawn(async move {
                let mut result = PartitionResult::default();
                loop {
                    let t = Instant::now();
                    let next = stream.next().await;
                    result.pull += t.elapsed();
                    let Some(batch) = next else { break };
                    let batch = batch.map_err(|e| RunError::Execution(e.to_string()))?;
                    let (out, rej) = split(&batch, n_pass, &out_schema, &rej_schema)
                        .map_err(RunError::Execution)?;
                    let t = Instant::now();
                    writer.write(&out).await?;
                    if let Some(rej) = &rej {
                        rejected.write(rej).await?;
                    }
                    result.write += t.elapsed();
                    result.rows += batch.num_rows() as u64;
                    if let Some(pb) = &progress {
                        pb.inc(batch.num_rows() as u64);
                    }
                    check_max_rejected(&scorer, max_rejected, &job_name)?;
                }
                let t = Instant::now();
                result.files = writer.finish().await?;
                result.rejected_files = rejected.finish().await?;
                result.write += t.elapsed();
                Ok::<_, RunError>(result)
            }));
        }

        // Dropping the run (a signal) aborts the partition tasks before the staging goes.
        let mut tasks = AbortOnDrop(tasks);
        let mut malformed_task = AbortOnDrop(malformed_task.into_iter().collect());
        let mut results = Vec::with_capacity(tasks.0.len() + 1);
        let mut first_error = None;
        for t in tasks.0.iter_mut() {
            match joined(t, "a scoring task").await {
                Ok(r) => results.push(r),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        // Every scan has ended, so every malformed row has been sent.
        let _ = scan_done.send(());
        for t in malformed_task.0.iter_mut() {
            match joined(t, "the rejected-rows task").await {
                Ok(r) => results.push(r),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        if let Some(pb) = &progress {
            pb.finish_and_clear();
        }
        if let Some(e) = first_error {
            return Err(e);
        }

        // Malformed rows never reach the query: they count as considered, and as rejected.
        let selected = scorer.stats.rows_in.load(Ordering::Relaxed)
            + scorer.stats.rows_malformed.load(Ordering::Relaxed);
        let rejected_rows = scorer.stats.rows_unscored.load(Ordering::Relaxed);
        if let Some(rate) = s.run.max_rejected_rate
            && selected > 0
            && rejected_rows as f64 > rate * selected as f64
        {
            return Err(budget_error(
                &s.name,
                &scorer,
                format!(
                    "{:.4}% of {selected} rows, more than [run] max_rejected_rate = {rate}",
                    100.0 * rejected_rows as f64 / selected as f64
                ),
            ));
        }

        let mut files: Vec<PartFile> = results
            .iter()
            .flat_map(|r| r.files.iter().cloned())
            .collect();
        let mut rejected_files: Vec<PartFile> = results
            .iter()
            .flat_map(|r| r.rejected_files.iter().cloned())
            .collect();
        rejected_files.sort_by(|a, b| a.path.cmp(&b.path));
        if files.is_empty() {
            // An empty input still commits an output whose schema readers can see.
            let name = format!("part-00000-0000.{}", s.output.format.extension());
            files.push(
                staging
                    .create_part(name, s.output.format, out_schema.clone())?
                    .finish()
                    .await?,
            );
        }
        files.sort_by(|a, b| a.path.cmp(&b.path));

        Ok::<_, RunError>((physical, results, files, rejected_files))
    }
    .await;
    let (physical, results, files, rejected_files) = match outcome {
        Ok(x) => x,
        Err(e) => {
            committer.abort().await;
            return Err(e);
        }
    };
    let written: u64 = files.iter().map(|f| f.rows).sum();
    let csv_rows_read = csv_rows_read.map(|n| n.load(Ordering::Relaxed));

    let stats = &scorer.stats;
    let secs = |ns: u64| ns as f64 / 1e9;
    let features = secs(stats.features_ns.load(Ordering::Relaxed));
    let inference = secs(stats.inference_ns.load(Ordering::Relaxed));
    let pull: f64 = results.iter().map(|r| r.pull.as_secs_f64()).sum();
    let write: f64 = results.iter().map(|r| r.write.as_secs_f64()).sum();
    let commit_started = Instant::now();
    let wall = started.elapsed().as_secs_f64();
    let scored = stats.rows_scored.load(Ordering::Relaxed);
    let mut metrics = RunMetrics {
        run_id: run_id.clone(),
        job_name: s.name.clone(),
        batchscore_version: env!("CARGO_PKG_VERSION").to_string(),
        started_at: started_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        rows: RowCounts {
            read: csv_rows_read.or_else(|| rows_read(physical.as_ref())),
            selected: stats.rows_in.load(Ordering::Relaxed),
            scored,
            rejected: stats.rows_unscored.load(Ordering::Relaxed),
            written,
        },
        batches: stats.batches.load(Ordering::Relaxed),
        wall_seconds: wall,
        rows_per_second: if wall > 0.0 {
            scored as f64 / wall
        } else {
            0.0
        },
        stage_seconds: StageSeconds {
            read: (pull - features - inference).max(0.0),
            features,
            inference,
            write,
            commit: 0.0,
        },
        batch_latency_seconds: Latency::from_samples(
            stats
                .batch_latencies
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        ),
        workers: plan.workers,
        batch_size: s.run.batch_size(),
        inference_batch_size: scorer.rows_per_call(),
        rows_reordered: scorer.reorders_rows(),
        device: plan.device.to_string(),
        model: ModelReport {
            uri: plan.model.uri.clone(),
            sha256: plan.model.sha256.clone(),
            inputs: plan.model.inputs.clone(),
            outputs: plan.model.outputs.clone(),
            onnxruntime_library: crate::model::runtime_library().map(|p| p.display().to_string()),
        },
        output_files: files.len() as u64,
        output_bytes: files.iter().map(|f| f.bytes).sum(),
        rejected_reasons: top_reasons(&scorer, 10),
        non_finite_outputs: scorer.stats.non_finite_outputs.load(Ordering::Relaxed),
    };
    let manifest = Manifest {
        run_id,
        job_name: s.name.clone(),
        spec_hash: plan.spec.hash.clone(),
        input_fingerprint: plan.input_fingerprint.clone(),
        model_uri: plan.model.uri.clone(),
        model_sha256: plan.model.sha256.clone(),
        format: s.output.format.extension().to_string(),
        files,
        rows: written,
        rejected_rows: rejected_files.iter().map(|f| f.rows).sum(),
        rejected_files,
        committed_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        batchscore_version: env!("CARGO_PKG_VERSION").to_string(),
    };
    let output = committer
        .commit(&manifest, &mut metrics, commit_started)
        .await?;
    tracing::info!(output = %output, rows = written, "committed");
    Ok(RunSummary { output, metrics })
}

/// Join handles that abort their tasks when dropped, and wait until they have stopped.
struct AbortOnDrop<T>(Vec<tokio::task::JoinHandle<T>>);

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
        if crate::score::on_multi_thread_runtime() && !running.is_empty() {
            tokio::task::block_in_place(|| {
                futures::executor::block_on(futures::future::join_all(running))
            });
        }
    }
}

/// The name a feature column goes by between the features' plan and the scoring projection.
fn feature_column(i: usize) -> String {
    format!("__batchscore_feature_{i}")
}

/// The run's physical plan: the features' plan as DataFusion optimizes it, a
/// [`WorkQueueExec`] with one output per worker, and on top the scoring projection (the
/// pass-through columns and `predict`).
///
/// The scoring projection is added after optimization so that it stays where it is: the
/// optimizer merges a projection of plain columns into the scan, `predict` included, and
/// drops a repartition asked for in the logical plan when the scan already has as many
/// partitions. The queue hands each worker its next batch when it is ready for one, rather
/// than a file range (a large unit: one worker often scored alone for the last half second
/// or more of a run while the other core idled) or every n-th batch (DataFusion's round-robin
/// repartition, whose buffer for a slower worker grows with the input). The queue's feeding
/// tasks decode and evaluate the features of the next batches while the workers score.
async fn scoring_plan(
    ctx: &SessionContext,
    features: DataFrame,
    predict: Expr,
    n_pass: usize,
    workers: usize,
) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
    let features_schema = features.schema().clone();
    let input = features.create_physical_plan().await?;
    // One batch ready for each worker; reading waits while they are all taken.
    let queued: Arc<dyn ExecutionPlan> = Arc::new(WorkQueueExec::new(input, workers, workers));
    let schema = queued.schema();
    let mut exprs: Vec<(Arc<dyn PhysicalExpr>, String)> = schema.fields()[..n_pass]
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let column: Arc<dyn PhysicalExpr> = Arc::new(PhysicalColumn::new(f.name(), i));
            (column, f.name().clone())
        })
        .collect();
    exprs.push((
        ctx.state()
            .create_physical_expr(predict, &features_schema)?,
        "__batchscore_predictions".to_string(),
    ));
    Ok(Arc::new(ProjectionExec::try_new(exprs, queued)?))
}

/// Rows the file scans produced, from the executed plan's metrics.
fn rows_read(plan: &dyn ExecutionPlan) -> Option<u64> {
    let mut total = None;
    let mut stack: Vec<&dyn ExecutionPlan> = vec![plan];
    while let Some(node) = stack.pop() {
        if node.name() == "DataSourceExec"
            && let Some(rows) = node.metrics().and_then(|m| m.output_rows())
        {
            *total.get_or_insert(0) += rows as u64;
        }
        stack.extend(node.children().into_iter().map(|c| c.as_ref()));
    }
    total
}

/// Turns `[passthrough..., predictions struct]` into the written rows and, when some rows
/// were rejected, the `_rejected/` rows (pass-through columns, `_stage`, `_reason`, `_value`).
fn split(
    batch: &RecordBatch,
    n_pass: usize,
    out_schema: &SchemaRef,
    rej_schema: &SchemaRef,
) -> Result<(RecordBatch, Option<RecordBatch>), String> {
    use datafusion::arrow::compute::{filter_record_batch, is_not_null, is_null};
    let preds = batch.column(n_pass).as_struct();
    let n_out = preds.num_columns() - 3;
    let (stage, reason, value) = (
        preds.column(n_out),
        preds.column(n_out + 1),
        preds.column(n_out + 2),
    );
    let mut cols: Vec<ArrayRef> = batch.columns()[..n_pass].to_vec();
    cols.extend(preds.columns()[..n_out].iter().cloned());
    let all = RecordBatch::try_new(out_schema.clone(), cols).map_err(|e| e.to_string())?;
    if reason.null_count() == reason.len() {
        return Ok((all, None));
    }
    let err = |e: datafusion::arrow::error::ArrowError| e.to_string();
    let out = filter_record_batch(&all, &is_null(reason).map_err(err)?).map_err(err)?;
    let mut rej_cols: Vec<ArrayRef> = batch.columns()[..n_pass].to_vec();
    rej_cols.extend([stage.clone(), reason.clone(), value.clone()]);
    let rej = RecordBatch::try_new(rej_schema.clone(), rej_cols).map_err(|e| e.to_string())?;
    let rej = filter_record_batch(&rej, &is_not_null(reason).map_err(err)?).map_err(err)?;
    Ok((out, Some(rej)))
}

/// The most frequent reject reasons, at most `n`.
fn top_reasons(scorer: &Scorer, n: usize) -> Vec<ReasonCount> {
    let counts = scorer
        .stats
        .reject_reasons
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let mut v: Vec<ReasonCount> = counts
        .iter()
        .map(|(reason, count)| ReasonCount {
            reason: reason.clone(),
            count: *count,
        })
        .collect();
    v.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.reason.cmp(&b.reason)));
    v.truncate(n);
    v
}

/// A write task's result; its panic or cancellation as an execution error naming `what`.
async fn joined(
    task: &mut tokio::task::JoinHandle<Result<PartitionResult, RunError>>,
    what: &str,
) -> Result<PartitionResult, RunError> {
    match task.await {
        Ok(r) => r,
        Err(join) => Err(RunError::Execution(format!("{what} failed: {join}"))),
    }
}

/// Past `[run] max_rejected`, the error that stops the run at once: nothing will be committed.
fn check_max_rejected(
    scorer: &Scorer,
    max_rejected: Option<u64>,
    job_name: &str,
) -> Result<(), RunError> {
    let so_far = scorer.stats.rows_unscored.load(Ordering::Relaxed);
    match max_rejected {
        Some(max) if so_far > max => Err(budget_error(
            job_name,
            scorer,
            format!("more than [run] max_rejected = {max}"),
        )),
        _ => Ok(()),
    }
}

/// The error for a run past its reject budget: how many, which limit, and the top reasons.
fn budget_error(job: &str, scorer: &Scorer, limit: String) -> RunError {
    let rejected = scorer.stats.rows_unscored.load(Ordering::Relaxed);
    let reasons: Vec<String> = top_reasons(scorer, 5)
        .iter()
        .map(|r| format!("  {} x {}", r.count, r.reason))
        .collect();
    RunError::RejectBudget {
        message: format!(
            "job {job}: {rejected} rows rejected, {limit}; nothing was committed. Top reasons:\n{}",
            reasons.join("\n")
        ),
    }
}

/// Writes the malformed rows of a CSV scan to `_rejected/` (stage `read`, the file and line
/// in `_reason`, the record in `_value`, pass-through columns null) and counts them as
/// rejected, stopping the run past `max_rejected` as the scoring tasks do.
async fn write_malformed(
    mut malformed: tokio::sync::mpsc::Receiver<MalformedRow>,
    mut scan_done: tokio::sync::oneshot::Receiver<()>,
    mut writer: RollingWriter,
    schema: SchemaRef,
    scorer: Arc<Scorer>,
    max_rejected: Option<u64>,
    job_name: String,
) -> Result<PartitionResult, RunError> {
    use datafusion::arrow::array::{StringArray, new_null_array};
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
        let n_pass = schema.fields().len() - crate::spec::REJECT_COLUMNS.len();
        let mut columns: Vec<ArrayRef> = schema.fields()[..n_pass]
            .iter()
            .map(|f| new_null_array(f.data_type(), n))
            .collect();
        columns.push(Arc::new(StringArray::from(vec!["read"; n])));
        columns.push(Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.to_string()),
        )));
        columns.push(Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.text.as_str()),
        )));
        let batch = RecordBatch::try_new(schema.clone(), columns)
            .map_err(|e| RunError::Execution(e.to_string()))?;
        writer.write(&batch).await?;
        result.write += t.elapsed();
        {
            let mut reasons = scorer
                .stats
                .reject_reasons
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            for r in &rows {
                *reasons.entry(r.reason.clone()).or_default() += 1;
            }
        }
        scorer
            .stats
            .rows_malformed
            .fetch_add(n as u64, Ordering::Relaxed);
        scorer
            .stats
            .rows_unscored
            .fetch_add(n as u64, Ordering::Relaxed);
        rows.clear();
        check_max_rejected(&scorer, max_rejected, &job_name)?;
    }
    let t = Instant::now();
    result.rejected_files = writer.finish().await?;
    result.write += t.elapsed();
    Ok(result)
}
