//! Planning: everything that can be checked without scoring, with every problem listed.
//!
//! Planning opens the model, registers the input, and binds every model input, output column
//! and pass-through column, checks the device and the output location; nothing is read but
//! file footers (or CSV heads) and the model.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use datafusion::arrow::datatypes::DataType;
use datafusion::logical_expr::{Expr, cast, col};
use datafusion::prelude::{DataFrame, SessionContext};

use super::RunError;
use crate::diagnostics::{Problem, SpecError};
use crate::features::{BoundInputs, bind_inputs, nearest_columns, quote_ident};
use crate::input::csv::MalformedRow;
use crate::input::{OpenedInput, WorkUnit, open_input, session_context};
use crate::model::{ExecutionDevice, Model};
use crate::output::Committer;
use crate::score::tree_order::EnsembleSplits;
use crate::score::{OutputBinding, bind_outputs};
use crate::spec::{Fallback, JobSpec, LoadedSpec, RunSpec};
use crate::storage::StoreFactory;

/// A job checked against its model and input, ready to run.
pub struct JobPlan {
    pub spec: LoadedSpec,
    pub model: Arc<Model>,
    pub(super) ctx: SessionContext,
    /// The queried input.
    pub(super) input: DataFrame,
    pub(super) bound: BoundInputs,
    pub outputs: Vec<OutputBinding>,
    /// The pass-through columns as written (dictionary and view types as plain ones).
    pub(super) passthrough: Vec<Expr>,
    pub(super) stores: StoreFactory,
    /// SHA-256 of the input files' listing (see `input::open_input`).
    pub(super) input_fingerprint: String,
    /// The input's work units, in listing order.
    pub units: Vec<WorkUnit>,
    /// For CSV inputs: the malformed rows the scan sets aside (taken by the run)...
    pub(super) csv_malformed: Option<tokio::sync::mpsc::Receiver<MalformedRow>>,
    /// ...and the rows it read.
    pub(super) csv_rows_read: Option<Arc<AtomicU64>>,
    pub workers: usize,
    /// Where sessions run, after any fallback.
    pub device: ExecutionDevice,
    /// The model's tree ensemble splits, when it has them and `[run] reorder_rows` is on.
    pub(super) tree_splits: Option<EnsembleSplits>,
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

    /// What makes two processes "the same run": a hash of the spec (after templating, so
    /// `--var`s count), the model's SHA-256 and the input files' listing (paths, sizes,
    /// modification times). Shards of one run, and a resumed attempt, must agree on it.
    pub fn run_key(&self) -> String {
        use sha2::{Digest, Sha256};
        let text = format!(
            "{}\n{}\n{}",
            self.spec.hash, self.model.sha256, self.input_fingerprint
        );
        hex::encode(Sha256::digest(text.as_bytes()))
    }
}

/// Checks everything that can be checked without scoring, listing every problem.
pub async fn plan_job(mut spec: LoadedSpec, ort_lib: Option<&Path>) -> Result<JobPlan, RunError> {
    crate::model::init_runtime(ort_lib).map_err(RunError::Runtime)?;
    let mut problems: Vec<Problem> = Vec::new();
    let stores = StoreFactory::new(spec.spec.storage.clone());
    let model = load_model(&spec.spec, &stores, &mut problems).await?;
    // A tree ensemble's splits, read once: they pick the default batch size and sort rows.
    let tree_splits = model
        .as_ref()
        .filter(|_| spec.spec.run.reorder_rows)
        .and_then(|m| EnsembleSplits::from_onnx(m.onnx_bytes()));
    spec.spec.run.settle_batch_size(tree_splits.is_some());
    let s = &spec.spec;

    let ctx = session_context(&s.run);
    let opened = open_input(&ctx, &s.input, &stores, s.run.batch_size())
        .await
        .map_err(|p| problems.extend(p))
        .ok();
    let passthrough = opened
        .as_ref()
        .map(|o| passthrough_columns(&o.frame, &s.output.passthrough, &mut problems))
        .unwrap_or_default();
    let (bound, outputs) = bind(s, model.as_deref(), opened.as_ref(), &mut problems);
    let device = choose_device(&s.run, &mut problems);
    if let Err(e) = Committer::check(&s.output.uri, s.output.mode, &stores).await {
        problems.push(Problem::new("output.uri", e.to_string()));
    }
    let (Some(model), Some(opened), Some(bound)) = (model, opened, bound) else {
        return Err(refused(&spec, problems));
    };
    if !problems.is_empty() {
        return Err(refused(&spec, problems));
    }
    let OpenedInput {
        frame,
        fingerprint,
        units,
        csv,
    } = opened;
    Ok(JobPlan {
        workers: s.run.worker_count(),
        device,
        tree_splits,
        model,
        ctx,
        input: frame,
        bound,
        outputs,
        passthrough,
        stores,
        input_fingerprint: fingerprint,
        units,
        csv_rows_read: csv.as_ref().map(|r| r.rows_read.clone()),
        csv_malformed: csv.map(|r| r.malformed),
        spec,
    })
}

fn refused(spec: &LoadedSpec, problems: Vec<Problem>) -> RunError {
    RunError::Spec(SpecError {
        file: spec.file.clone(),
        problems,
    })
}

/// The model, or `None` with the problem recorded; a missing ONNX Runtime is an error of its
/// own (exit 1: the install is broken, not the job).
async fn load_model(
    s: &JobSpec,
    stores: &StoreFactory,
    problems: &mut Vec<Problem>,
) -> Result<Option<Arc<Model>>, RunError> {
    match Model::load(&s.model.uri, s.model.sha256.as_deref(), stores).await {
        Ok(m) => Ok(Some(Arc::new(m))),
        Err(e) if e.is_runtime() => Err(RunError::Runtime(e)),
        Err(e) => {
            let key = match e {
                crate::model::ModelError::Sha256Mismatch { .. } => "model.sha256",
                _ => "model.uri",
            };
            problems.push(Problem::new(key, e.to_string()));
            Ok(None)
        }
    }
}

/// The pass-through columns, each checked to exist in the queried input. Dictionary and view
/// types are written as their plain types, which every Parquet and CSV reader understands.
fn passthrough_columns(df: &DataFrame, names: &[String], problems: &mut Vec<Problem>) -> Vec<Expr> {
    let mut exprs = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let Ok(field) = df.schema().field_with_unqualified_name(name) else {
            let near = nearest_columns(df.schema(), name);
            problems.push(Problem::new(
                format!("output.passthrough[{i}]"),
                format!("unknown column {name:?}{near}"),
            ));
            continue;
        };
        let plain = match field.data_type() {
            DataType::Dictionary(_, v) => Some(v.as_ref().clone()),
            DataType::Utf8View => Some(DataType::Utf8),
            DataType::BinaryView => Some(DataType::Binary),
            _ => None,
        };
        let c = col(quote_ident(name));
        exprs.push(match plain {
            Some(t) => cast(c, t).alias(name),
            None => c,
        });
    }
    exprs
}

/// The model inputs bound to the input's columns and the output columns to the model's
/// outputs, as far as the model and the input could be opened.
fn bind(
    s: &JobSpec,
    model: Option<&Model>,
    opened: Option<&OpenedInput>,
    problems: &mut Vec<Problem>,
) -> (Option<BoundInputs>, Vec<OutputBinding>) {
    let Some(model) = model else {
        return (None, Vec::new());
    };
    let bound = opened.and_then(|o| {
        bind_inputs(s, model, &o.frame)
            .map_err(|p| problems.extend(p))
            .ok()
    });
    let outputs = bind_outputs(s.outputs.as_ref(), s.output.format, model)
        .map_err(|p| problems.extend(p))
        .unwrap_or_default();
    (bound, outputs)
}

/// The device the spec asks for, or the CPU when it cannot be had and `fallback = "cpu"`
/// allows it (with a warning); otherwise a problem.
fn choose_device(run: &RunSpec, problems: &mut Vec<Problem>) -> ExecutionDevice {
    let device = ExecutionDevice::new(run.device, run.device_id);
    let Err(e) = device.check() else {
        return device;
    };
    if run.fallback == Fallback::Cpu {
        tracing::warn!(device = %device, reason = %e.reason, "the device cannot be had: running on the CPU, as [run] fallback = \"cpu\" allows");
    } else {
        let library = crate::model::runtime_library()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        problems.push(Problem::new(
            "run.device",
            format!(
                "{device}: ONNX Runtime cannot use it ({}); the library ({library}) must be the onnxruntime-gpu wheel's (scripts/fetch-ort --gpu), with CUDA 13 and cuDNN 9 where the loader finds them, or set [run] fallback = \"cpu\"",
                e.reason
            ),
        ));
    }
    ExecutionDevice::Cpu
}
