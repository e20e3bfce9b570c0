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
use super::baseline::{self, Baseline};
use super::memory::{self, Demand, Layout, MemoryLimit};
use crate::diagnostics::{Problem, SpecError};
use crate::features::{
    BoundInputs, InputBinding, bind_inputs, bind_like, nearest_columns, quote_ident,
};
use crate::features::{TextBinding, TextEncoder};
use crate::input::csv::MalformedRow;
use crate::input::{
    OpenedInput, Shard, ShardId, UnitSource, WorkUnit, open_input, session_context,
};
use crate::model::registry::{Registry, RegistryError, Resolved, Selector};
use crate::model::{ElemType, ExecutionDevice, Model};
use crate::output::Committer;
use crate::privacy::PrivacyPlan;
use crate::report::MemoryReport;
use crate::report::agreement::{ChallengerColumns, ColumnKind, SharedColumn};
use crate::report::columns::{ColumnSpec, ProfilePlan};
use crate::score::tree_order::EnsembleSplits;
use crate::score::{OutputBinding, Scorer, bind_outputs};
use crate::spec::{
    ChallengerSpec, Fallback, JobSpec, LoadedSpec, ModelSpec, OutputLayout, RunSpec,
};
use crate::storage::StoreFactory;

/// A job checked against its model and input, ready to run.
pub struct JobPlan {
    pub spec: LoadedSpec,
    pub model: Arc<Model>,
    pub(super) ctx: SessionContext,
    /// The queried input.
    pub(super) input: DataFrame,
    pub(super) bound: BoundInputs,
    /// `[tokenizer]`'s, loaded (taken by the scorer).
    pub(super) text: Option<TextEncoder>,
    pub outputs: Vec<OutputBinding>,
    /// The pass-through columns as written (dictionary and view types as plain ones).
    pub(super) passthrough: Vec<Expr>,
    pub(super) stores: StoreFactory,
    /// SHA-256 of the input files' listing (see `input::open_input`).
    pub(super) input_fingerprint: String,
    /// The input's work units, in listing order.
    pub units: Vec<WorkUnit>,
    /// The input's files, to register the table again over some units (a resumable run).
    pub(super) source: UnitSource,
    /// For one shard of a sharded run: which, and its units (the input holds only those).
    pub shard: Option<(ShardId, Shard)>,
    /// For a shard: the run that already committed this output with this run key, if one
    /// did (a scheduler's retry after the commit, which has nothing to do).
    pub already_committed: Option<String>,
    /// The memory limit the layout was fitted under, when there is one.
    pub memory: Option<MemoryReport>,
    /// For CSV inputs: the malformed rows the scan sets aside (taken by the run)...
    pub(super) csv_malformed: Option<tokio::sync::mpsc::Receiver<MalformedRow>>,
    /// ...and the rows it read.
    pub(super) csv_rows_read: Option<Arc<AtomicU64>>,
    pub workers: usize,
    /// Where sessions run, after any fallback.
    pub device: ExecutionDevice,
    /// The model's tree ensemble splits, when it has them and `[run] reorder_rows` is on.
    pub(super) tree_splits: Option<EnsembleSplits>,
    /// The columns whose distributions the run reports (`[monitor] distributions`).
    pub(super) profiles: Option<Arc<ProfilePlan>>,
    /// The run drift is measured against (`[monitor] baseline`), when one was found.
    pub baseline: Option<Baseline>,
    /// The `[[challengers]]`, in the spec's order.
    pub challengers: Vec<ChallengerPlan>,
    /// What each challenger is compared with the champion on (none without challengers).
    pub(super) agreement: Option<Arc<Vec<ChallengerColumns>>>,
    /// The sensitive columns (`[privacy]`) and what becomes of each.
    pub privacy: PrivacyPlan,
}

/// A challenger, bound: scored on the champion's features, its columns after the champion's.
pub struct ChallengerPlan {
    pub name: String,
    pub model: Arc<Model>,
    /// The champion's feature bindings, with this model's declared input shapes.
    pub(super) inputs: Vec<InputBinding>,
    /// Its output columns, named `<name>_<column>`.
    pub outputs: Vec<OutputBinding>,
    /// Its scorer, built with the champion's (`run::build_scorer`).
    pub(super) scorer: Option<Arc<Scorer>>,
    /// The champion's `[tokenizer]` text, filling this model's token inputs.
    pub(super) text: Option<TextBinding>,
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
        let models = models_identity(
            &self.model,
            self.challengers
                .iter()
                .map(|c| (c.name.as_str(), c.model.as_ref())),
        );
        run_key(&self.spec.hash, &models, &self.input_fingerprint)
    }

    /// The model as runs are told apart by: its SHA-256, and the registry version it was
    /// chosen as (an alias moved to a version with the same bytes is another run).
    pub fn model_identity(&self) -> String {
        model_identity(&self.model)
    }
}

/// See [`JobPlan::model_identity`].
fn model_identity(m: &Model) -> String {
    match &m.registered {
        Some(r) => format!("{}@{}/{}", m.sha256, r.name, r.version),
        None => m.sha256.clone(),
    }
}

/// The champion's identity, then each challenger's as `name=identity`, a line each: what a run
/// key says of the models (just the champion's without challengers, as before they existed).
fn models_identity<'a>(
    champion: &Model,
    challengers: impl Iterator<Item = (&'a str, &'a Model)>,
) -> String {
    let mut text = model_identity(champion);
    for (name, m) in challengers {
        text.push_str(&format!("\n{name}={}", model_identity(m)));
    }
    text
}

/// See [`JobPlan::run_key`].
fn run_key(spec_hash: &str, model_sha256: &str, input_fingerprint: &str) -> String {
    use sha2::{Digest, Sha256};
    let text = format!("{spec_hash}\n{model_sha256}\n{input_fingerprint}");
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// Checks the output location against `[output] mode`. A shard whose run already committed
/// there is not refused: its run id is returned, and it has nothing to do.
async fn check_output(
    s: &JobSpec,
    stores: &StoreFactory,
    sharded: bool,
    run_key: &str,
    problems: &mut Vec<Problem>,
) -> Option<String> {
    let (uri, layout) = (&s.output.uri, s.output.layout);
    if let Err(e) = crate::output::history::check_layout(uri, layout, stores).await {
        problems.push(Problem::new("output.layout", e.to_string()));
        return None;
    }
    if sharded
        && !run_key.is_empty()
        && let Ok(Some(m)) = Committer::published_manifest(uri, layout, stores).await
        && m.run_key == run_key
    {
        return Some(m.run_id);
    }
    // A history adds a folder per run: only what is already there must be readable.
    let check = match layout {
        OutputLayout::Flat => Committer::check(uri, s.output.mode, stores).await,
        OutputLayout::Runs => Committer::published_manifest(uri, layout, stores)
            .await
            .map(|_| ()),
    };
    if let Err(e) = check {
        problems.push(Problem::new("output.uri", e.to_string()));
    }
    None
}

/// A query a shard cannot compute over its units alone: ordering, limits, aggregates, joins
/// and windows need every row of the run. Filters and projections split by units.
pub(super) fn refuse_unsplittable(
    plan: &datafusion::logical_expr::LogicalPlan,
    problems: &mut Vec<Problem>,
) {
    use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
    use datafusion::logical_expr::LogicalPlan;
    let mut found = None;
    let _ = plan.apply(|node| {
        found = match node {
            LogicalPlan::Sort(_) => Some("ORDER BY"),
            LogicalPlan::Limit(_) => Some("LIMIT"),
            LogicalPlan::Aggregate(_) => {
                Some("an aggregate (GROUP BY, DISTINCT or an aggregate function)")
            }
            LogicalPlan::Distinct(_) => Some("DISTINCT"),
            LogicalPlan::Join(_) => Some("a JOIN"),
            LogicalPlan::Window(_) => Some("a window function"),
            _ => None,
        };
        Ok(if found.is_some() {
            TreeNodeRecursion::Stop
        } else {
            TreeNodeRecursion::Continue
        })
    });
    if let Some(clause) = found {
        problems.push(Problem::new(
            "input.query",
            format!("holds {clause}, which needs every row of the run: a sharded run scores each shard's rows alone, so its query may only filter and project"),
        ));
    }
}

/// Checks everything that can be checked without scoring, listing every problem.
pub async fn plan_job(spec: LoadedSpec, ort_lib: Option<&Path>) -> Result<JobPlan, RunError> {
    plan_shard(spec, ort_lib, None).await
}

/// [`plan_job`] for one shard of a sharded run (`None`: the whole run): the input holds only
/// the shard's units, and a `query` that cannot be split by units is refused.
/// A job already refused is not told about its baseline.
pub async fn plan_shard(
    mut spec: LoadedSpec,
    ort_lib: Option<&Path>,
    shard: Option<ShardId>,
) -> Result<JobPlan, RunError> {
    crate::model::init_runtime(ort_lib).map_err(RunError::Runtime)?;
    let mut problems: Vec<Problem> = Vec::new();
    let stores = StoreFactory::new(spec.spec.storage.clone());
    let mut models = load_models(&mut spec.spec, &stores, &mut problems).await?;
    let ctx = session_context(&spec.spec.run);
    let (bound, memory) =
        open_fitted(&ctx, &mut spec.spec, &stores, &models, shard, &mut problems).await;
    let s = &spec.spec;
    let device = choose_device(&s.run, &mut problems);
    let key = planned_run_key(&spec, &models, bound.input.as_ref());
    let challengers = bind_challengers(s, &bound, models.challengers, &mut problems);
    fit_text_length(&mut models.text, &bound, &challengers, &mut problems);
    let already_committed = check_output(s, &stores, shard.is_some(), &key, &mut problems).await;
    let baseline = load_baseline(s, &stores, &mut problems).await?;
    let Bound {
        input: Some(opened),
        passthrough,
        inputs: Some(inputs),
        outputs,
        privacy,
    } = bound
    else {
        return Err(refused(&spec, problems));
    };
    let Some(model) = models.champion.filter(|_| problems.is_empty()) else {
        return Err(refused(&spec, problems));
    };
    let OpenedInput {
        frame,
        fingerprint,
        units,
        shard: shard_units,
        csv,
        source,
    } = opened;
    let profiles = s.monitor.distributions.then(|| {
        let written = written_outputs(&outputs, &challengers);
        Arc::new(profile_plan(&frame, &written, &inputs, baseline.as_ref()))
    });
    Ok(JobPlan {
        agreement: agreement_plan(&outputs, &challengers).map(Arc::new),
        privacy,
        challengers,
        profiles,
        baseline,
        workers: s.run.worker_count(),
        device,
        tree_splits: models.tree_splits,
        text: models.text,
        model,
        ctx,
        input: frame,
        bound: inputs,
        outputs,
        passthrough,
        stores,
        input_fingerprint: fingerprint,
        units,
        source,
        shard: shard.zip(shard_units),
        already_committed,
        memory,
        csv_rows_read: csv.as_ref().map(|r| r.rows_read.clone()),
        csv_malformed: csv.map(|r| r.malformed),
        spec,
    })
}

/// The run `[monitor] baseline` names, unless the job is refused already.
async fn load_baseline(
    s: &JobSpec,
    stores: &StoreFactory,
    problems: &mut Vec<Problem>,
) -> Result<Option<Baseline>, RunError> {
    if !problems.is_empty() {
        return Ok(None);
    }
    baseline::load(s.monitor.baseline.as_deref(), &s.output, stores, problems).await
}

/// The run key of a job as planned (see [`JobPlan::run_key`]); empty when its model or input
/// could not be opened.
fn planned_run_key(spec: &LoadedSpec, models: &Models, input: Option<&OpenedInput>) -> String {
    let (Some(m), Some(input)) = (&models.champion, input) else {
        return String::new();
    };
    let named = spec.spec.challengers.iter().zip(&models.challengers);
    let named = named.filter_map(|(c, m)| Some((c.name.as_str(), m.as_deref()?)));
    run_key(&spec.hash, &models_identity(m, named), &input.fingerprint)
}

/// The columns to profile: every output column that is not a list (a classifier's integer
/// label counted by class), then every feature that reads no sensitive column (`[privacy]`),
/// each with the baseline's distribution of it.
fn profile_plan(
    frame: &DataFrame,
    outputs: &[OutputBinding],
    inputs: &BoundInputs,
    baseline: Option<&Baseline>,
) -> ProfilePlan {
    let base = |name: &str| baseline.and_then(|b| b.metrics.distributions.get(name).cloned());
    let output_names: Vec<String> = outputs.iter().map(|o| o.column.clone()).collect();
    let output_specs = outputs
        .iter()
        .enumerate()
        .filter(|(_, o)| !o.is_list)
        .map(|(at, o)| ColumnSpec {
            name: o.column.clone(),
            at,
            label: o.data_type().is_integer(),
            baseline: base(&o.column),
        })
        .collect();
    let texts: Vec<(String, String)> = inputs
        .inputs
        .iter()
        .flat_map(|b| {
            b.columns
                .iter()
                .enumerate()
                .map(|(j, c)| (c.clone(), format!("{}[{j}]", b.name)))
        })
        .collect();
    let schema = frame.schema();
    let names = ProfilePlan::name_features(&output_names, &texts, |t| {
        schema.field_with_unqualified_name(t).is_ok()
    });
    let sensitive: Vec<bool> = inputs
        .inputs
        .iter()
        .flat_map(|b| (0..b.columns.len()).map(|j| b.is_sensitive(j)))
        .collect();
    let features = names
        .into_iter()
        .enumerate()
        .filter(|(at, _)| !sensitive.get(*at).copied().unwrap_or(false))
        .map(|(at, name)| ColumnSpec {
            baseline: base(&name),
            name,
            at,
            label: false,
        })
        .collect();
    ProfilePlan {
        outputs: output_specs,
        features,
    }
}

/// Opens and binds the input (for a shard, refusing a query that cannot be split by units),
/// then fits the layout under the memory limit; when the fit changed the layout, the scans
/// are set up again with it (footers come from the cache). A `keep` policy is warned about
/// once, whichever binding stays.
async fn open_fitted(
    ctx: &SessionContext,
    s: &mut JobSpec,
    stores: &StoreFactory,
    models: &Models,
    shard: Option<ShardId>,
    problems: &mut Vec<Problem>,
) -> (Bound, Option<MemoryReport>) {
    let (model, challengers) = (models.champion.as_deref(), &models.challengers);
    let bound = open_and_bind(ctx, s, stores, model, shard, problems).await;
    if shard.is_some()
        && let Some(input) = &bound.input
    {
        refuse_unsplittable(input.frame.logical_plan(), problems);
    }
    // Every worker holds a session of each model.
    let challenger_bytes: u64 = challengers.iter().flatten().map(|m| m.size_bytes).sum();
    let memory = match (model, &bound.input) {
        (Some(m), Some(input)) if problems.is_empty() => {
            fit_memory(&mut s.run, m.size_bytes + challenger_bytes, input, problems)
        }
        _ => None,
    };
    if !memory.as_ref().is_some_and(|m| m.reduced) {
        bound.privacy.warn_kept();
        return (bound, memory);
    }
    set_layout(ctx, &s.run);
    let _ = ctx.deregister_table(crate::input::INPUT_TABLE);
    let bound = open_and_bind(ctx, s, stores, model, shard, &mut Vec::new()).await;
    bound.privacy.warn_kept();
    (bound, memory)
}

/// Gives the session `run`'s batch size and workers.
fn set_layout(ctx: &SessionContext, run: &RunSpec) {
    let state = ctx.state_ref();
    let mut state = state.write();
    let config = state.config().clone();
    // A fitted batch is never empty: never the zero `with_batch_size` refuses.
    *state.config_mut() = config
        .with_batch_size(run.batch_size())
        .with_target_partitions(run.worker_count());
}

/// The input opened and everything bound to it, as far as it could be.
struct Bound {
    input: Option<OpenedInput>,
    passthrough: Vec<Expr>,
    inputs: Option<BoundInputs>,
    outputs: Vec<OutputBinding>,
    privacy: PrivacyPlan,
}

/// Registers the input, and binds the pass-through columns, the model inputs and the
/// output columns; problems are collected, not returned.
async fn open_and_bind(
    ctx: &SessionContext,
    s: &JobSpec,
    stores: &StoreFactory,
    model: Option<&Model>,
    shard: Option<ShardId>,
    problems: &mut Vec<Problem>,
) -> Bound {
    let input = open_input(ctx, &s.input, stores, s.run.batch_size(), shard)
        .await
        .map_err(|p| problems.extend(p))
        .ok();
    let names = &s.output.passthrough;
    let mut privacy = input
        .as_ref()
        .map(|o| crate::privacy::plan(&s.privacy, &o.frame, names, problems))
        .unwrap_or_default();
    let mut passthrough = input
        .as_ref()
        .map(|o| passthrough_columns(&o.frame, names, &privacy, problems))
        .unwrap_or_default();
    if let (Some(column), Some(m)) = (&s.output.model_version_column, model) {
        let version = m.registered.as_ref().map_or(&m.sha256, |r| &r.version);
        passthrough.push(datafusion::prelude::lit(version.clone()).alias(column));
    }
    let (mut inputs, outputs) = bind(s, model, input.as_ref(), problems);
    if let Some(bound) = &mut inputs {
        mark_sensitive(bound, &mut privacy);
    }
    Bound {
        input,
        passthrough,
        inputs,
        outputs,
        privacy,
    }
}

/// Marks each feature that reads a sensitive column, so that its values never show in
/// `_rejected/` and its distribution is not reported.
fn mark_sensitive(bound: &mut BoundInputs, privacy: &mut PrivacyPlan) {
    let n: usize = bound.inputs.iter().map(|b| b.columns.len()).sum();
    let flags = privacy.mark_features(&bound.exprs[..n.min(bound.exprs.len())]);
    let mut flags = flags.into_iter();
    for b in &mut bound.inputs {
        b.sensitive = flags.by_ref().take(b.columns.len()).collect();
    }
    if let Some(text) = &mut bound.text {
        let expr = std::slice::from_ref(&bound.exprs[text.arg]);
        text.sensitive = privacy.mark_features(expr).contains(&true);
    }
}

/// Fits the run's layout under its memory limit (`[run] memory_limit`, or the container's,
/// whichever is smaller), shrinking `run`'s batch size and workers where they do not fit;
/// none without a limit. A limit even the smallest layout does not fit is a problem.
fn fit_memory(
    run: &mut RunSpec,
    model_bytes: u64,
    input: &OpenedInput,
    problems: &mut Vec<Problem>,
) -> Option<MemoryReport> {
    let from_spec = run
        .memory_limit
        .as_ref()
        .and_then(|m| m.bytes())
        .map(|bytes| MemoryLimit {
            bytes,
            source: "[run] memory_limit".to_string(),
        });
    let limit = [from_spec, memory::container_limit()]
        .into_iter()
        .flatten()
        .min_by_key(|l| l.bytes)?;
    let demand = Demand {
        model_bytes,
        unit_bytes: input.units.iter().map(unit_held_bytes).max().unwrap_or(0),
        row_bytes: row_bytes(input.frame.schema().as_arrow()),
    };
    let wanted = Layout {
        workers: run.worker_count(),
        batch_size: run.batch_size(),
    };
    let mib = |b: u64| b >> 20;
    let mib1 = |b: u64| format!("{:.1}", b as f64 / (1 << 20) as f64);
    let Some(fitted) = demand.fit(wanted, limit.bytes) else {
        let smallest = Layout {
            workers: 1,
            batch_size: 1024.min(wanted.batch_size),
        };
        let key = if limit.source.starts_with('[') {
            "run.memory_limit"
        } else {
            "run"
        };
        problems.push(Problem::new(
            key,
            format!(
                "the memory limit of {} MiB ({}) is less than even one worker with {}-row batches needs (about {} MiB with a {} MiB model and {} MiB units of input, planned at 90% of the limit): give the job more memory, or write the input with smaller row groups",
                mib(limit.bytes),
                limit.source,
                smallest.batch_size,
                mib(demand.need(smallest)),
                mib1(demand.model_bytes),
                mib1(demand.unit_bytes)
            ),
        ));
        return None;
    };
    let reduced = fitted != wanted;
    tracing::info!(limit_mib = mib(limit.bytes), source = %limit.source, workers = fitted.workers, batch_size = fitted.batch_size, estimated_peak_mib = mib(demand.need(fitted)), "memory limit");
    if reduced {
        tracing::warn!(limit_mib = mib(limit.bytes), source = %limit.source, workers = fitted.workers, batch_size = fitted.batch_size, wanted_workers = wanted.workers, wanted_batch_size = wanted.batch_size, "fitting the run under its memory limit: fewer workers or smaller batches than asked for");
        run.workers = fitted.workers;
        run.batch_size = Some(fitted.batch_size);
    }
    Some(MemoryReport {
        limit_bytes: limit.bytes,
        source: limit.source,
        estimated_peak_bytes: demand.need(fitted),
        reduced,
    })
}

/// What a worker holds of a unit at once: a Parquet row group's compressed bytes, or two of
/// the CSV scan's 4 MiB chunks.
fn unit_held_bytes(unit: &WorkUnit) -> u64 {
    match unit.row_group {
        Some(_) => unit.bytes,
        None => 8 << 20,
    }
}

/// Bytes per row of the queried input: fixed-width columns by their width, others 32.
fn row_bytes(schema: &datafusion::arrow::datatypes::Schema) -> u64 {
    schema
        .fields()
        .iter()
        .map(|f| f.data_type().primitive_width().unwrap_or(32) as u64)
        .sum()
}

pub(super) fn refused(spec: &LoadedSpec, problems: Vec<Problem>) -> RunError {
    RunError::Spec(SpecError {
        file: spec.file.clone(),
        problems,
    })
}

/// The models a job scores with, each `None` where it could not be loaded (the problem
/// recorded).
struct Models {
    champion: Option<Arc<Model>>,
    /// `[tokenizer]`'s, loaded.
    text: Option<TextEncoder>,
    /// The champion's tree ensemble splits, when it has them and rows are sorted.
    tree_splits: Option<EnsembleSplits>,
    /// Each `[[challengers]]` model, in the spec's order.
    challengers: Vec<Option<Arc<Model>>>,
}

/// Loads the champion (`[model]`) and every challenger's model, and settles the batch size
/// for the champion.
async fn load_models(
    s: &mut JobSpec,
    stores: &StoreFactory,
    problems: &mut Vec<Problem>,
) -> Result<Models, RunError> {
    let champion = load_model(&s.model, "model", stores, problems).await?;
    let mut challengers = Vec::with_capacity(s.challengers.len());
    for (i, c) in s.challengers.iter().enumerate() {
        let table = format!("challengers[{i}].model");
        challengers.push(load_model(&c.model, &table, stores, problems).await?);
    }
    // A tree ensemble's splits, read once: they pick the default batch size and sort rows.
    let tree_splits = champion
        .as_ref()
        .filter(|_| s.run.reorder_rows)
        .and_then(|m| EnsembleSplits::from_onnx(m.onnx_bytes()));
    let text = match &s.tokenizer {
        Some(t) => TextEncoder::load(t, stores)
            .await
            .map_err(|e| problems.push(Problem::new("tokenizer.uri", e.to_string())))
            .ok(),
        None => None,
    };
    if s.tokenizer.is_some() {
        settle_text_batches(&mut s.run);
    }
    s.run.settle_batch_size(tree_splits.is_some());
    Ok(Models {
        champion,
        text,
        tree_splits,
        challengers,
    })
}

/// A text model's default batch sizes: attention grows with rows x length², so a call holds
/// tens of rows, not the thousands a tabular model takes.
fn settle_text_batches(run: &mut RunSpec) {
    use crate::features::text::{DEFAULT_TEXT_BATCH_SIZE, DEFAULT_TEXT_INFERENCE_BATCH};
    run.batch_size.get_or_insert(DEFAULT_TEXT_BATCH_SIZE);
    let per_call = match run.device {
        crate::spec::Device::Cpu => DEFAULT_TEXT_INFERENCE_BATCH,
        crate::spec::Device::Cuda => 8 * DEFAULT_TEXT_INFERENCE_BATCH,
    };
    run.inference_batch_size.get_or_insert(per_call);
}

/// The model of the `[model]` table `m` (at `table`: `model`, or a challenger's), or `None`
/// with the problem recorded; a missing ONNX Runtime is an error of its own (exit 1: the
/// install is broken, not the job).
async fn load_model(
    m: &ModelSpec,
    table: &str,
    stores: &StoreFactory,
    problems: &mut Vec<Problem>,
) -> Result<Option<Arc<Model>>, RunError> {
    let (uri, pin, resolved) = match resolve_registered(m, table, stores).await {
        Ok(Some(r)) => (r.model_uri.clone(), Some(r.card.sha256.clone()), Some(r)),
        Ok(None) => (m.uri.clone().unwrap_or_default(), m.sha256.clone(), None),
        Err(e) => {
            problems.push(e);
            return Ok(None);
        }
    };
    match Model::load(&uri, pin.as_deref(), stores).await {
        Ok(mut m) => {
            m.registered = resolved;
            Ok(Some(Arc::new(m)))
        }
        Err(e) if e.is_runtime() => Err(RunError::Runtime(e)),
        Err(crate::model::ModelError::Sha256Mismatch {
            actual, expected, ..
        }) if resolved.is_some() => {
            problems.push(Problem::new(
                registry_key(m, table),
                format!("model {uri}: sha256 is {actual}, but its model.toml says {expected}: the file changed after it was registered"),
            ));
            Ok(None)
        }
        Err(e) => {
            let key = match e {
                crate::model::ModelError::Sha256Mismatch { .. } => format!("{table}.sha256"),
                _ if resolved.is_some() => registry_key(m, table),
                _ => format!("{table}.uri"),
            };
            problems.push(Problem::new(key, e.to_string()));
            Ok(None)
        }
    }
}

/// The spec key a registry model's problems go under: what chose the version, in `table`.
fn registry_key(m: &ModelSpec, table: &str) -> String {
    if m.alias.is_some() {
        format!("{table}.alias")
    } else {
        format!("{table}.version")
    }
}

/// The registry version a `[model]` table (at `table`) names, when it names one (a file
/// model: none).
async fn resolve_registered(
    m: &ModelSpec,
    table: &str,
    stores: &StoreFactory,
) -> Result<Option<Resolved>, Problem> {
    let (Some(registry), Some(name)) = (&m.registry, &m.name) else {
        return Ok(None);
    };
    let selector = match (&m.version, &m.alias) {
        (Some(v), _) => Selector::Version(v.clone()),
        (None, Some(a)) => Selector::Alias(a.clone()),
        (None, None) => return Ok(None),
    };
    let problem = |e: RegistryError| Problem::new(registry_key(m, table), e.to_string());
    let registry = Registry::open(registry, stores).map_err(problem)?;
    let resolved = registry.resolve(name, &selector).await.map_err(problem)?;
    if let Some(pin) = &m.sha256
        && !pin.eq_ignore_ascii_case(&resolved.card.sha256)
    {
        return Err(Problem::new(
            format!("{table}.sha256"),
            format!(
                "model {name} version {}: sha256 is {}, but [{table}.sha256] pins {pin}",
                resolved.version, resolved.card.sha256
            ),
        ));
    }
    Ok(Some(resolved))
}

/// The pass-through columns, each checked to exist in the queried input, a sensitive one under
/// its policy (a dropped one left out). Dictionary and view types are written as their plain
/// types, which every Parquet and CSV reader understands.
fn passthrough_columns(
    df: &DataFrame,
    names: &[String],
    privacy: &PrivacyPlan,
    problems: &mut Vec<Problem>,
) -> Vec<Expr> {
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
        let c = match plain {
            Some(t) => cast(c, t).alias(name),
            None => c,
        };
        exprs.extend(privacy.police(name, c));
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

/// Fits `[tokenizer] max_length` to the sequence lengths the champion and challengers fix
/// ([`TextEncoder::fit_length`]), or refuses it.
fn fit_text_length(
    encoder: &mut Option<TextEncoder>,
    bound: &Bound,
    challengers: &[ChallengerPlan],
    problems: &mut Vec<Problem>,
) {
    let Some(encoder) = encoder else {
        return;
    };
    let champion = bound.inputs.as_ref().and_then(|i| i.text.as_ref());
    let texts = champion.map(|t| ("", t)).into_iter().chain(
        challengers
            .iter()
            .filter_map(|c| Some((c.name.as_str(), c.text.as_ref()?))),
    );
    for (challenger, text) in texts {
        if let Err(message) = encoder.fit_length(&text.fills) {
            let message = match challenger {
                "" => message,
                name => format!("challenger {name:?}: {message}"),
            };
            problems.push(Problem::new("tokenizer.max_length", message));
        }
    }
}

/// Binds each challenger whose model loaded: its inputs as the champion's are bound (else a
/// problem under `challengers[<i>]` naming it and what differs) and its output columns,
/// `<name>_<column>`, which must clash with no other column.
fn bind_challengers(
    s: &JobSpec,
    bound: &Bound,
    models: Vec<Option<Arc<Model>>>,
    problems: &mut Vec<Problem>,
) -> Vec<ChallengerPlan> {
    let mut plans = Vec::new();
    for (i, (c, model)) in s.challengers.iter().zip(models).enumerate() {
        // Without the model, or the champion's features, there is nothing to bind to; the
        // problem that says why is listed already.
        let (Some(model), Some(champion)) = (model, &bound.inputs) else {
            continue;
        };
        let text = champion.text.as_ref().map(|t| {
            crate::features::text::token_inputs(&model)
                .map(|fills| TextBinding { fills, ..t.clone() })
        });
        let text = match text.transpose() {
            Ok(t) => t,
            Err(p) => {
                let message = format!("challenger {:?}: {}", c.name, p.message);
                problems.push(Problem::new(format!("challengers[{i}]"), message));
                continue;
            }
        };
        let inputs = bind_like(&champion.inputs, &model, text.is_some())
            .map_err(|e| {
                let message = format!(
                    "challenger {:?}: cannot be fed the champion's features: {e}",
                    c.name
                );
                problems.push(Problem::new(format!("challengers[{i}]"), message));
            })
            .ok();
        let outputs = challenger_outputs(s, (i, c), &model, problems);
        if let (Some(inputs), Some(outputs)) = (inputs, outputs) {
            plans.push(ChallengerPlan {
                name: c.name.clone(),
                model,
                inputs,
                outputs,
                scorer: None,
                text,
            });
        }
    }
    check_column_names(s, &bound.outputs, &plans, problems);
    plans
}

/// Challenger `i`'s output columns, named `<name>_<column>`: its `outputs`, else the
/// champion's `[outputs]` when its model has every output they read, else every output of its
/// model.
fn challenger_outputs(
    s: &JobSpec,
    (i, c): (usize, &ChallengerSpec),
    model: &Model,
    problems: &mut Vec<Problem>,
) -> Option<Vec<OutputBinding>> {
    let has = |expr: &crate::spec::OutputColumn| {
        crate::spec::OutputRef::parse(expr.reference())
            .is_ok_and(|r| model.output(&r.output).is_some())
    };
    let champions = s.outputs.as_ref().filter(|o| o.values().all(has));
    let table = c.outputs.as_ref().or(champions);
    match bind_outputs(table, s.output.format, model) {
        Ok(mut bindings) => {
            for b in &mut bindings {
                b.column = format!("{}_{}", c.name, b.column);
            }
            Some(bindings)
        }
        Err(found) => {
            for p in found {
                let (key, message) = match (&c.outputs, champions) {
                    (Some(_), _) => (format!("challengers[{i}].{}", p.key), p.message),
                    (None, Some(_)) => (
                        format!("challengers[{i}]"),
                        format!(
                            "challenger {:?} writes the champion's [{}]: {}",
                            c.name, p.key, p.message
                        ),
                    ),
                    (None, None) => (
                        format!("challengers[{i}]"),
                        format!(
                            "challenger {:?} writes every output of its model: {}",
                            c.name, p.message
                        ),
                    ),
                };
                problems.push(Problem::new(key, message));
            }
            None
        }
    }
}

/// Every challenger's columns must be new: no pass-through column, model version column,
/// champion's output column or other challenger's column has its name.
fn check_column_names(
    s: &JobSpec,
    champion: &[OutputBinding],
    challengers: &[ChallengerPlan],
    problems: &mut Vec<Problem>,
) {
    let mut taken: std::collections::HashMap<&str, String> = std::collections::HashMap::new();
    for p in &s.output.passthrough {
        taken.insert(p, "a passthrough column".into());
    }
    if let Some(c) = &s.output.model_version_column {
        taken.insert(c, "[output] model_version_column".into());
    }
    for o in champion {
        taken.insert(&o.column, "a column of the champion's".into());
    }
    for c in challengers {
        let i = s
            .challengers
            .iter()
            .position(|x| x.name == c.name)
            .unwrap_or(0);
        for o in &c.outputs {
            if let Some(what) = taken.get(o.column.as_str()) {
                problems.push(Problem::new(
                    format!("challengers[{i}]"),
                    format!("challenger {:?}: its column {:?} is also {what}; rename the challenger or its outputs", c.name, o.column),
                ));
            } else {
                taken.insert(&o.column, format!("a column of challenger {:?}", c.name));
            }
        }
    }
}

/// The columns written after the pass-through ones: the champion's, then each challenger's.
fn written_outputs(
    champion: &[OutputBinding],
    challengers: &[ChallengerPlan],
) -> Vec<OutputBinding> {
    let theirs = challengers.iter().flat_map(|c| c.outputs.iter());
    champion.iter().chain(theirs).cloned().collect()
}

/// What each challenger is compared with the champion on: the columns of the same name in
/// both `[outputs]` and of the same kind (labels or scores), by their places among the written
/// output columns; none without challengers.
fn agreement_plan(
    champion: &[OutputBinding],
    challengers: &[ChallengerPlan],
) -> Option<Vec<ChallengerColumns>> {
    if challengers.is_empty() {
        return None;
    }
    let mut at = champion.len();
    let mut plan = Vec::with_capacity(challengers.len());
    for c in challengers {
        let (base, prefix) = (at, format!("{}_", c.name));
        let shared = c.outputs.iter().enumerate().filter_map(|(m, o)| {
            let column = o.column.strip_prefix(&prefix)?;
            let (j, theirs) = champion
                .iter()
                .enumerate()
                .find(|(_, x)| x.column == column)?;
            let kind = column_kind(o).filter(|&k| Some(k) == column_kind(theirs))?;
            Some(SharedColumn {
                column: column.to_string(),
                champion_at: j,
                challenger_at: base + m,
                kind,
            })
        });
        plan.push(ChallengerColumns {
            name: c.name.clone(),
            shared: shared.collect(),
        });
        at += c.outputs.len();
    }
    Some(plan)
}

/// A column compared as labels (integers, strings, booleans) or scores (floats); lists are
/// not compared.
fn column_kind(o: &OutputBinding) -> Option<ColumnKind> {
    match o.elem {
        _ if o.is_list => None,
        ElemType::Float32 | ElemType::Float64 => Some(ColumnKind::Score),
        ElemType::Int64 | ElemType::Int32 | ElemType::String | ElemType::Bool => {
            Some(ColumnKind::Label)
        }
        ElemType::Other(_) => None,
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A challenger is fed the champion's feature bindings, and so knows which of them read a
    /// sensitive column: its `_value`s and ONNX Runtime's messages are withheld as the
    /// champion's are.
    #[tokio::test]
    async fn a_challenger_knows_which_features_are_sensitive() {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
        let dir = tempfile::tempdir().unwrap();
        let text = std::fs::read_to_string(repo.join("jobs/churn-challenger.toml"))
            .unwrap()
            .replace(
                "../sample_data",
                &repo.join("sample_data").display().to_string(),
            )
            .replace("../out/", &format!("{}/out/", dir.path().display()))
            + "\n[privacy]\nsensitive = [\"total_charges\", \"support_calls\"]\n";
        let file = dir.path().join("job.toml");
        std::fs::write(&file, text).unwrap();
        let vars = [("ds".to_string(), "2026-11-27".to_string())].into();
        let plan = plan_job(crate::spec::load(&file, &vars).unwrap(), None)
            .await
            .unwrap();
        let flags = |inputs: &[InputBinding]| -> Vec<Vec<bool>> {
            inputs.iter().map(|b| b.sensitive.clone()).collect()
        };
        let want = vec![vec![false, false, true, true, false]];
        assert_eq!(flags(&plan.bound.inputs), want);
        assert_eq!(flags(&plan.challengers[0].inputs), want);
    }
}
