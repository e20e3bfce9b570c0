//! Scoring inside the DataFusion plan: the `predict` scalar function.
//!
//! [`PredictUdf`] takes the feature expressions of every model input as arguments and returns
//! one struct column holding every output column of the job, plus two fields that say why a
//! row was rejected ([`REJECT_REASON`], [`REJECT_VALUE`]). Because it is an ordinary
//! DataFusion function, each partition of the plan scores its own batches on its own thread,
//! and memory stays bounded by the batch size. Per batch, [`Scorer`]:
//! 1. finds the rows whose features are all present (a row with a null and no `fill_null`
//!    is rejected with a reason naming the column, and left unscored),
//! 2. packs those rows into tensors ([`crate::features::FeaturePacker`]), in chunks of the
//!    model's fixed batch size when it has one (the last chunk padded, the padding dropped),
//!    for a tree ensemble in the order of [`TreeRowOrder`],
//! 3. runs a pooled ONNX Runtime session, and
//! 4. decodes each output ([`OutputBinding`]) into an Arrow column, scattering results back to
//!    the batch's rows (rejected rows get nulls; the sink sends them to `_rejected/`).

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use datafusion::arrow::array::{
    Array, ArrayRef, BooleanArray, Float32Array, Float64Array, Int32Array, Int64Array, ListArray,
    StringArray, StructArray, UInt32Array,
};
use datafusion::arrow::buffer::OffsetBuffer;
use datafusion::arrow::datatypes::{DataType, Field, Fields};
use datafusion::common::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};
use indexmap::IndexMap;
use ort::session::{Session, SessionOutputs};
use ort::value::{DynMapValueType, DynValue};

use crate::features::{FeaturePacker, InputBinding};
use crate::model::{ElemType, IoKind, Model, ModelIo, SessionPool};
use crate::spec::{OutputFormat, OutputRef, Problem};
use crate::tree_order::TreeRowOrder;

/// The struct field that holds the stage a row was rejected at (null for scored rows).
pub const REJECT_STAGE: &str = "__batchscore_reject_stage";
/// The struct field that holds why a row was rejected (null for scored rows).
pub const REJECT_REASON: &str = "__batchscore_reject_reason";
/// The struct field that holds the rejected row's offending value, as text.
pub const REJECT_VALUE: &str = "__batchscore_reject_value";

/// One output column: a model output, whole or one element of its last axis.
#[derive(Debug, Clone)]
pub struct OutputBinding {
    /// The output column's name.
    pub column: String,
    /// The model output it reads.
    pub output: String,
    /// `Some(i)`: element `i` of the output's last axis; `None`: the whole output.
    pub index: Option<usize>,
    pub source: OutputSource,
    /// Whether the column holds a whole vector per row (a list column).
    pub is_list: bool,
    /// The element type of the column (of the list's items for list columns).
    pub elem: ElemType,
}

/// How a model output is laid out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputSource {
    /// A tensor with the batch first; `per_row` is the declared values per row when static.
    Tensor { per_row: Option<usize> },
    /// A sequence with one map per row (ZipMap); read as a vector in key order, which is the
    /// class order for scikit-learn classifiers (their classes are sorted).
    SequenceOfMaps { key: ElemType },
}

impl OutputBinding {
    pub fn data_type(&self) -> DataType {
        let item = elem_arrow_type(self.elem);
        if self.is_list {
            DataType::List(Arc::new(Field::new("item", item, true)))
        } else {
            item
        }
    }
}

fn elem_arrow_type(e: ElemType) -> DataType {
    match e {
        ElemType::Float32 => DataType::Float32,
        ElemType::Float64 => DataType::Float64,
        ElemType::Int64 => DataType::Int64,
        ElemType::Int32 => DataType::Int32,
        ElemType::Bool => DataType::Boolean,
        _ => DataType::Utf8,
    }
}

/// Binds the job's `[outputs]` (or every model output) to the model, collecting problems.
pub fn bind_outputs(
    outputs: Option<&IndexMap<String, String>>,
    format: OutputFormat,
    model: &Model,
) -> Result<Vec<OutputBinding>, Vec<Problem>> {
    let wanted: Vec<(String, String, String)> = match outputs {
        Some(map) => map
            .iter()
            .map(|(col, expr)| (format!("outputs.{col}"), col.clone(), expr.clone()))
            .collect(),
        None => model
            .outputs
            .iter()
            .map(|o| ("outputs".to_string(), o.name.clone(), o.name.clone()))
            .collect(),
    };
    let mut problems = Vec::new();
    let mut bindings = Vec::new();
    for (key, column, expr) in wanted {
        let r = match OutputRef::parse(&expr) {
            Ok(r) => r,
            Err(e) => {
                problems.push(Problem::new(key, e));
                continue;
            }
        };
        let Some(io) = model.output(&r.output) else {
            let names: Vec<_> = model.outputs.iter().map(|o| o.name.as_str()).collect();
            problems.push(Problem::new(
                key,
                format!(
                    "the model has no output {:?} (its outputs: {})",
                    r.output,
                    names.join(", ")
                ),
            ));
            continue;
        };
        match bind_output(io, column, r.index) {
            Ok(b) => {
                if b.is_list && format == OutputFormat::Csv {
                    problems.push(Problem::new(
                        key,
                        format!(
                            "column {:?} holds a whole vector per row, which CSV cannot hold: pick one element ({}[0]) or write Parquet",
                            b.column, b.output
                        ),
                    ));
                } else {
                    bindings.push(b);
                }
            }
            Err(e) => problems.push(Problem::new(key, e)),
        }
    }
    if problems.is_empty() {
        Ok(bindings)
    } else {
        Err(problems)
    }
}

fn bind_output(
    io: &ModelIo,
    column: String,
    index: Option<usize>,
) -> Result<OutputBinding, String> {
    let supported = |e: ElemType| {
        matches!(
            e,
            ElemType::Float32
                | ElemType::Float64
                | ElemType::Int64
                | ElemType::Int32
                | ElemType::Bool
                | ElemType::String
        )
    };
    match &io.kind {
        IoKind::Tensor { dtype, shape } => {
            if !supported(*dtype) {
                return Err(format!(
                    "model output {:?} has element type {dtype}, which batchscore cannot write",
                    io.name
                ));
            }
            // Declared shapes are hints (some converters declare [1] for a per-row output),
            // so rank decides: rank 1 or a trailing 1 is a scalar per row, otherwise a vector.
            let per_row = if shape.len() <= 1 {
                Some(1)
            } else if shape[1..].iter().all(|&d| d > 0) {
                Some(shape[1..].iter().product::<i64>() as usize)
            } else {
                None
            };
            let vector = per_row != Some(1);
            if let (Some(i), Some(n)) = (index, per_row)
                && i >= n
            {
                return Err(format!(
                    "model output {:?} has {n} value{} per row (shape {}); index {i} is out of range",
                    io.name,
                    if n == 1 { "" } else { "s" },
                    crate::features::show_shape(shape)
                ));
            }
            Ok(OutputBinding {
                column,
                output: io.name.clone(),
                index,
                source: OutputSource::Tensor { per_row },
                is_list: vector && index.is_none(),
                elem: *dtype,
            })
        }
        IoKind::SequenceOfMaps { key, value } => {
            if !matches!(key, ElemType::Int64 | ElemType::String)
                || !matches!(value, ElemType::Float32 | ElemType::Float64)
            {
                return Err(format!(
                    "model output {:?} is {}, which batchscore cannot read",
                    io.name, io.kind
                ));
            }
            Ok(OutputBinding {
                column,
                output: io.name.clone(),
                index,
                source: OutputSource::SequenceOfMaps { key: *key },
                is_list: index.is_none(),
                elem: *value,
            })
        }
        IoKind::Other { description } => Err(format!(
            "model output {:?} is {description}, which batchscore cannot read",
            io.name
        )),
    }
}

/// Counters and timings shared by every worker of a run.
#[derive(Debug, Default)]
pub struct ScoreStats {
    pub rows_in: AtomicU64,
    pub rows_scored: AtomicU64,
    /// Rejected rows: unscored ones and malformed CSV records.
    pub rows_unscored: AtomicU64,
    /// Malformed CSV records (rejected before the query; not in `rows_in`).
    pub rows_malformed: AtomicU64,
    pub batches: AtomicU64,
    pub features_ns: AtomicU64,
    pub inference_ns: AtomicU64,
    /// NaN or ±infinity values in float output columns.
    pub non_finite_outputs: AtomicU64,
    /// Rejected rows by reason.
    pub reject_reasons: Mutex<IndexMap<String, u64>>,
    /// Seconds per scored batch (features + inference).
    pub batch_latencies: Mutex<Vec<f64>>,
}

/// Whether this thread runs inside tokio's multi-thread runtime (the CLI's), where
/// `block_in_place` may hand a worker's tasks to another thread; the tests' current-thread
/// runtime has no other thread to hand them to.
pub(crate) fn on_multi_thread_runtime() -> bool {
    tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread)
}

/// Everything needed to score a batch.
#[derive(Debug)]
pub struct Scorer {
    pub inputs: Vec<InputBinding>,
    pub outputs: Vec<OutputBinding>,
    pub sessions: SessionPool,
    pub stats: ScoreStats,
    fixed_batch: Option<usize>,
    /// Rows per ONNX Runtime call when the model does not fix them.
    inference_batch: usize,
    /// For tree ensembles: the order to score a batch's rows in.
    row_order: Option<TreeRowOrder>,
    return_fields: Fields,
}

impl Scorer {
    pub fn new(
        inputs: Vec<InputBinding>,
        outputs: Vec<OutputBinding>,
        sessions: SessionPool,
        inference_batch: usize,
    ) -> Self {
        let fixed_batch = inputs.iter().find_map(InputBinding::fixed_batch);
        let return_fields: Fields = outputs
            .iter()
            .map(|o| Field::new(&o.column, o.data_type(), true))
            .chain([
                Field::new(REJECT_STAGE, DataType::Utf8, true),
                Field::new(REJECT_REASON, DataType::Utf8, true),
                Field::new(REJECT_VALUE, DataType::Utf8, true),
            ])
            .collect();
        Self {
            inputs,
            outputs,
            sessions,
            stats: ScoreStats::default(),
            fixed_batch,
            inference_batch: inference_batch.max(1),
            row_order: None,
            return_fields,
        }
    }

    /// Scores each batch's rows in `order` (their predictions still land on their own rows).
    pub fn with_row_order(mut self, order: Option<TreeRowOrder>) -> Self {
        self.row_order = order;
        self
    }

    /// Whether batches are scored in a tree ensemble's row order.
    pub fn reorders_rows(&self) -> bool {
        self.row_order.is_some()
    }

    /// Rows per ONNX Runtime call: the model's fixed batch dimension, or
    /// `[run] inference_batch_size`.
    pub fn rows_per_call(&self) -> usize {
        self.fixed_batch.unwrap_or(self.inference_batch)
    }

    pub fn return_type(&self) -> DataType {
        DataType::Struct(self.return_fields.clone())
    }

    /// Scores one batch; `args` holds every input's columns in binding order.
    pub fn score(&self, args: &[ArrayRef], num_rows: usize) -> Result<StructArray, String> {
        let started = Instant::now();
        self.stats
            .rows_in
            .fetch_add(num_rows as u64, Ordering::Relaxed);

        // A row with a null in a feature that has no fill rule is rejected, not scored; its
        // reason names the first such column.
        let mut reasons: Vec<Option<String>> = Vec::new();
        let mut stages: Vec<Option<&str>> = Vec::new();
        let mut values: Vec<Option<String>> = Vec::new();
        let mut offset = 0;
        for binding in &self.inputs {
            for (j, sql) in binding.columns.iter().enumerate() {
                let col = &args[offset + j];
                let non_finite = if binding.reject_non_finite {
                    non_finite_rows(col)
                } else {
                    Vec::new()
                };
                // Nulls the packer fills are no reason to reject a row.
                let filled = binding.pack_fill.get(j).is_some_and(Option::is_some);
                let nulls_rejected = !filled && col.null_count() > 0;
                if !nulls_rejected && non_finite.is_empty() {
                    continue;
                }
                if reasons.is_empty() {
                    reasons = vec![None; num_rows];
                    stages = vec![None; num_rows];
                    values = vec![None; num_rows];
                }
                let name = crate::features::display_sql(sql);
                let null_reason = format!(
                    "column {name:?}: null, and [inputs.{}] sets no fill_null",
                    binding.name
                );
                let cast_reason = format!("column {name:?}: cannot be cast to {}", binding.dtype);
                let raw = binding.raw_args.get(j).copied().flatten().map(|r| &args[r]);
                for (i, text) in non_finite {
                    if reasons[i].is_none() {
                        reasons[i] = Some(format!(
                            "column {name:?}: not finite, and [inputs.{}] sets on_non_finite = \"reject\"",
                            binding.name
                        ));
                        stages[i] = Some("features");
                        values[i] = Some(text);
                    }
                }
                let rows_to_check = if nulls_rejected { 0..num_rows } else { 0..0 };
                for i in rows_to_check {
                    if reasons[i].is_some() || !col.is_null(i) {
                        continue;
                    }
                    // Null after a TRY_CAST but present before: the cast failed on the value.
                    let (reason, value) = match raw {
                        Some(raw) if raw.is_valid(i) => (
                            cast_reason.clone(),
                            datafusion::arrow::util::display::array_value_to_string(raw, i)
                                .unwrap_or_else(|_| "?".into()),
                        ),
                        _ => (null_reason.clone(), "null".to_string()),
                    };
                    reasons[i] = Some(reason);
                    stages[i] = Some("features");
                    values[i] = Some(value);
                }
            }
            offset += binding.columns.len();
        }
        if !reasons.is_empty() {
            let mut counts = self
                .stats
                .reject_reasons
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            for r in reasons.iter().flatten() {
                *counts.entry(r.clone()).or_default() += 1;
            }
        }
        let mut scored_rows: Vec<usize> = if reasons.is_empty() {
            (0..num_rows).collect()
        } else {
            (0..num_rows).filter(|&i| reasons[i].is_none()).collect()
        };
        let reordered = match &self.row_order {
            Some(order) if scored_rows.len() > 1 => {
                order.sort(args, &mut scored_rows);
                true
            }
            _ => false,
        };
        let chunk = self.rows_per_call();
        let mut run = BatchRun {
            per_output: vec![Vec::new(); self.outputs.len()],
            ok_rows: Vec::with_capacity(scored_rows.len()),
            failed: Vec::new(),
            features_ns: 0,
            inference_ns: 0,
        };
        if reordered {
            // Slices gathered straight from the batch's columns in sorted order would each
            // touch nearly every cache line of every column (measured: packing went from 0.5%
            // to 2.9% of the run); one `take` per column reads each column once.
            let t0 = Instant::now();
            let indices = scored_rows
                .iter()
                .map(|&r| u32::try_from(r).map_err(|_| "a batch of over 2^32 rows".to_string()))
                .collect::<Result<UInt32Array, _>>()?;
            let sorted = args
                .iter()
                .map(|a| datafusion::arrow::compute::take(a.as_ref(), &indices, None))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| e.to_string())?;
            run.features_ns += t0.elapsed().as_nanos() as u64;
            let positions: Vec<usize> = (0..scored_rows.len()).collect();
            for rows in positions.chunks(chunk) {
                self.infer_isolating(&sorted, rows, &mut run)?;
            }
            // Back from positions in the sorted columns to the batch's rows.
            for row in run.ok_rows.iter_mut() {
                *row = scored_rows[*row];
            }
            for (row, _) in run.failed.iter_mut() {
                *row = scored_rows[*row];
            }
        } else {
            for rows in scored_rows.chunks(chunk) {
                self.infer_isolating(args, rows, &mut run)?;
            }
        }
        let BatchRun {
            per_output,
            ok_rows: scored_rows,
            failed,
            features_ns,
            inference_ns,
        } = run;
        // Rows ONNX Runtime failed on alone are rejected at the inference stage, with their
        // feature values as text.
        if !failed.is_empty() {
            if reasons.is_empty() {
                reasons = vec![None; num_rows];
                stages = vec![None; num_rows];
                values = vec![None; num_rows];
            }
            let mut counts = self
                .stats
                .reject_reasons
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            for (row, message) in failed {
                let reason = format!("ONNX Runtime failed on this row: {message}");
                *counts.entry(reason.clone()).or_default() += 1;
                reasons[row] = Some(reason);
                stages[row] = Some("inference");
                values[row] = Some(self.row_text(args, row));
            }
        }
        // Predictions are in `scored_rows` order; they need placing unless that is 0..num_rows.
        let needs_placing = scored_rows.len() < num_rows || reordered;
        let unscored = num_rows - scored_rows.len();

        let mut columns = Vec::with_capacity(self.outputs.len());
        for (binding, parts) in self.outputs.iter().zip(per_output) {
            let refs: Vec<&dyn Array> = parts.iter().map(|a| a.as_ref()).collect();
            let scored = if refs.is_empty() {
                datafusion::arrow::array::new_empty_array(&binding.data_type())
            } else if refs.len() == 1 {
                parts[0].clone()
            } else {
                datafusion::arrow::compute::concat(&refs).map_err(|e| e.to_string())?
            };
            if matches!(binding.elem, ElemType::Float32 | ElemType::Float64) {
                let n = count_non_finite(scored.as_ref());
                self.stats
                    .non_finite_outputs
                    .fetch_add(n, Ordering::Relaxed);
            }
            columns.push(scatter(scored, &scored_rows, num_rows, needs_placing)?);
        }
        // The reject columns: the stage, the reason, and the offending values as text.
        if reasons.is_empty() {
            for _ in 0..3 {
                columns.push(Arc::new(StringArray::new_null(num_rows)));
            }
        } else {
            columns.push(Arc::new(stages.into_iter().collect::<StringArray>()));
            columns.push(Arc::new(reasons.into_iter().collect::<StringArray>()));
            columns.push(Arc::new(values.into_iter().collect::<StringArray>()));
        }

        self.stats
            .rows_scored
            .fetch_add(scored_rows.len() as u64, Ordering::Relaxed);
        self.stats
            .rows_unscored
            .fetch_add(unscored as u64, Ordering::Relaxed);
        self.stats.batches.fetch_add(1, Ordering::Relaxed);
        self.stats
            .features_ns
            .fetch_add(features_ns, Ordering::Relaxed);
        self.stats
            .inference_ns
            .fetch_add(inference_ns, Ordering::Relaxed);
        self.stats
            .batch_latencies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(started.elapsed().as_secs_f64());

        StructArray::try_new(self.return_fields.clone(), columns, None).map_err(|e| e.to_string())
    }

    /// Scores `rows`; when ONNX Runtime fails, splits them in halves and retries each, so
    /// that only the rows it fails on alone are lost (recorded in `run.failed`).
    fn infer_isolating(
        &self,
        args: &[ArrayRef],
        rows: &[usize],
        run: &mut BatchRun,
    ) -> Result<(), String> {
        match self.infer(args, rows, run)? {
            Ok(decoded) => {
                for (acc, arr) in run.per_output.iter_mut().zip(decoded) {
                    acc.push(arr);
                }
                run.ok_rows.extend_from_slice(rows);
            }
            Err(message) if rows.len() == 1 => run.failed.push((rows[0], message)),
            Err(_) => {
                let (left, right) = rows.split_at(rows.len() / 2);
                self.infer_isolating(args, left, run)?;
                self.infer_isolating(args, right, run)?;
            }
        }
        Ok(())
    }

    /// One ONNX Runtime run over `rows` (padded to the model's fixed batch size). The outer
    /// error is fatal (packing, decoding); the inner one is ONNX Runtime refusing the rows.
    fn infer(
        &self,
        args: &[ArrayRef],
        rows: &[usize],
        run: &mut BatchRun,
    ) -> Result<Result<Vec<ArrayRef>, String>, String> {
        let t0 = Instant::now();
        let real = rows.len();
        let padded: Vec<usize>;
        let rows = match self.fixed_batch {
            // The model takes exactly `b` rows: repeat the last row, drop its outputs.
            Some(b) if real < b => {
                padded = rows
                    .iter()
                    .copied()
                    .chain(std::iter::repeat_n(rows[real - 1], b - real))
                    .collect();
                &padded[..]
            }
            _ => rows,
        };
        let mut tensors: Vec<(String, DynValue)> = Vec::with_capacity(self.inputs.len());
        let mut offset = 0;
        for binding in &self.inputs {
            let columns = &args[offset..offset + binding.columns.len()];
            offset += binding.columns.len();
            tensors.push((
                binding.name.clone(),
                FeaturePacker { binding, columns }.pack(rows)?,
            ));
        }
        let t1 = Instant::now();
        run.features_ns += (t1 - t0).as_nanos() as u64;
        let result =
            self.sessions
                .with_session(|session: &mut Session| match session.run(tensors) {
                    Ok(outputs) => self.decode(&outputs, rows.len(), real).map(Ok),
                    Err(e) => Ok(Err(e.to_string())),
                });
        run.inference_ns += t1.elapsed().as_nanos() as u64;
        result
    }

    /// A row's feature values as text: `sql=value, ...`.
    fn row_text(&self, args: &[ArrayRef], row: usize) -> String {
        use datafusion::arrow::util::display::array_value_to_string;
        let sqls = self.inputs.iter().flat_map(|b| b.columns.iter());
        sqls.zip(args)
            .map(|(sql, col)| {
                let v = if col.is_null(row) {
                    "null".to_string()
                } else {
                    array_value_to_string(col, row).unwrap_or_else(|_| "?".into())
                };
                format!("{}={v}", crate::features::display_sql(sql))
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Decodes every output column from one run of `rows` rows, keeping the first `keep`.
    fn decode(
        &self,
        outputs: &SessionOutputs<'_>,
        rows: usize,
        keep: usize,
    ) -> Result<Vec<ArrayRef>, String> {
        self.outputs
            .iter()
            .map(|b| {
                let value = outputs
                    .get(&b.output)
                    .ok_or_else(|| format!("ONNX Runtime returned no output {:?}", b.output))?;
                decode_output(b, value, rows, keep)
            })
            .collect()
    }
}

/// Rows of a float column holding NaN or ±infinity, with the value as text.
fn non_finite_rows(col: &ArrayRef) -> Vec<(usize, String)> {
    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::datatypes::{Float32Type, Float64Type};
    let pick = |i: usize, v: f64| (!v.is_finite() && col.is_valid(i)).then(|| (i, v.to_string()));
    match col.data_type() {
        DataType::Float32 => col
            .as_primitive::<Float32Type>()
            .values()
            .iter()
            .enumerate()
            .filter_map(|(i, v)| pick(i, f64::from(*v)))
            .collect(),
        DataType::Float64 => col
            .as_primitive::<Float64Type>()
            .values()
            .iter()
            .enumerate()
            .filter_map(|(i, v)| pick(i, *v))
            .collect(),
        _ => Vec::new(),
    }
}

/// NaN and ±infinity values in a float column or a list of floats.
fn count_non_finite(a: &dyn Array) -> u64 {
    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::datatypes::{Float32Type, Float64Type};
    match a.data_type() {
        DataType::Float32 => a
            .as_primitive::<Float32Type>()
            .values()
            .iter()
            .filter(|v| !v.is_finite())
            .count() as u64,
        DataType::Float64 => a
            .as_primitive::<Float64Type>()
            .values()
            .iter()
            .filter(|v| !v.is_finite())
            .count() as u64,
        DataType::List(_) => count_non_finite(a.as_list::<i32>().values().as_ref()),
        _ => 0,
    }
}

/// What scoring one batch produced, chunk by chunk.
struct BatchRun {
    /// Decoded arrays per output column, one per successful run, in row order.
    per_output: Vec<Vec<ArrayRef>>,
    /// The rows those arrays hold, in order.
    ok_rows: Vec<usize>,
    /// Rows ONNX Runtime failed on alone, with its message.
    failed: Vec<(usize, String)>,
    features_ns: u64,
    inference_ns: u64,
}

/// Puts `scored` (one value per scored row) back at the rows it came from; other rows are null.
fn scatter(
    scored: ArrayRef,
    scored_rows: &[usize],
    num_rows: usize,
    needs_placing: bool,
) -> Result<ArrayRef, String> {
    if !needs_placing {
        return Ok(scored);
    }
    let mut positions: Vec<Option<u32>> = vec![None; num_rows];
    for (k, &r) in scored_rows.iter().enumerate() {
        positions[r] = Some(k as u32);
    }
    let indices = UInt32Array::from(positions);
    datafusion::arrow::compute::take(scored.as_ref(), &indices, None).map_err(|e| e.to_string())
}

fn decode_output(
    b: &OutputBinding,
    value: &DynValue,
    rows: usize,
    keep: usize,
) -> Result<ArrayRef, String> {
    let err = |e: ort::Error| format!("model output {:?}: {e}", b.output);
    match b.source {
        OutputSource::Tensor { .. } => {
            macro_rules! numeric {
                ($t:ty, $arr:ty) => {{
                    let (_, data) = value.try_extract_tensor::<$t>().map_err(err)?;
                    let per_row = per_row_of(b, data.len(), rows)?;
                    from_rows::<$t, $arr>(b, data, per_row, keep)
                }};
            }
            match b.elem {
                ElemType::Float32 => numeric!(f32, Float32Array),
                ElemType::Float64 => numeric!(f64, Float64Array),
                ElemType::Int64 => numeric!(i64, Int64Array),
                ElemType::Int32 => numeric!(i32, Int32Array),
                ElemType::Bool => {
                    let (_, data) = value.try_extract_tensor::<bool>().map_err(err)?;
                    let per_row = per_row_of(b, data.len(), rows)?;
                    let (values, offsets) = select(b, data, per_row, keep)?;
                    finish(b, Arc::new(BooleanArray::from(values)), offsets)
                }
                ElemType::String => {
                    let (_, data) = value.try_extract_strings().map_err(err)?;
                    let per_row = per_row_of(b, data.len(), rows)?;
                    let (values, offsets) = select(b, &data, per_row, keep)?;
                    finish(b, Arc::new(StringArray::from(values)), offsets)
                }
                other => Err(format!(
                    "model output {:?}: element type {other} is not supported",
                    b.output
                )),
            }
        }
        OutputSource::SequenceOfMaps { key } => {
            let maps = value
                .try_extract_sequence::<DynMapValueType>()
                .map_err(err)?;
            if maps.len() != rows {
                return Err(format!(
                    "model output {:?} has {} maps for {rows} rows",
                    b.output,
                    maps.len()
                ));
            }
            let mut flat: Vec<f64> = Vec::new();
            let mut per_row = None;
            for m in maps.iter().take(keep) {
                let mut values: Vec<f64> = match key {
                    ElemType::Int64 => sorted_values::<i64>(m, b.elem).map_err(err)?,
                    _ => sorted_values::<String>(m, b.elem).map_err(err)?,
                };
                if *per_row.get_or_insert(values.len()) != values.len() {
                    return Err(format!(
                        "model output {:?}: maps of different sizes",
                        b.output
                    ));
                }
                flat.append(&mut values);
            }
            let per_row = per_row.unwrap_or(0);
            match b.elem {
                ElemType::Float32 => {
                    let data: Vec<f32> = flat.iter().map(|&v| v as f32).collect();
                    from_rows::<f32, Float32Array>(b, &data, per_row, keep)
                }
                _ => from_rows::<f64, Float64Array>(b, &flat, per_row, keep),
            }
        }
    }
}

fn sorted_values<K>(
    m: &ort::value::Value<DynMapValueType>,
    value: ElemType,
) -> ort::Result<Vec<f64>>
where
    K: ort::value::IntoTensorElementType + Clone + std::hash::Hash + Eq + Ord,
{
    let mut kv: Vec<(K, f64)> = if value == ElemType::Float32 {
        m.try_extract_key_values::<K, f32>()?
            .into_iter()
            .map(|(k, v)| (k, f64::from(v)))
            .collect()
    } else {
        m.try_extract_key_values::<K, f64>()?
    };
    kv.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(kv.into_iter().map(|(_, v)| v).collect())
}

fn per_row_of(b: &OutputBinding, len: usize, rows: usize) -> Result<usize, String> {
    if rows == 0 || !len.is_multiple_of(rows) {
        return Err(format!(
            "model output {:?} has {len} values for {rows} rows",
            b.output
        ));
    }
    Ok(len / rows)
}

/// Picks, for each of the first `keep` rows, the element `index` or the whole row.
fn select<T: Clone>(
    b: &OutputBinding,
    data: &[T],
    per_row: usize,
    keep: usize,
) -> Result<(Vec<T>, Option<OffsetBuffer<i32>>), String> {
    match b.index {
        Some(i) if i >= per_row => Err(format!(
            "model output {:?} has {per_row} values per row; index {i} is out of range",
            b.output
        )),
        Some(i) => Ok((
            (0..keep).map(|r| data[r * per_row + i].clone()).collect(),
            None,
        )),
        None if !b.is_list => {
            if per_row != 1 {
                return Err(format!(
                    "model output {:?} has {per_row} values per row, not one: pick one with {}[i]",
                    b.output, b.output
                ));
            }
            Ok((data[..keep].to_vec(), None))
        }
        None => Ok((
            data[..keep * per_row].to_vec(),
            Some(OffsetBuffer::from_lengths(std::iter::repeat_n(
                per_row, keep,
            ))),
        )),
    }
}

fn from_rows<T, A>(
    b: &OutputBinding,
    data: &[T],
    per_row: usize,
    keep: usize,
) -> Result<ArrayRef, String>
where
    T: Clone,
    A: From<Vec<T>> + Array + 'static,
{
    let (values, offsets) = select(b, data, per_row, keep)?;
    finish(b, Arc::new(A::from(values)), offsets)
}

fn finish(
    b: &OutputBinding,
    values: ArrayRef,
    offsets: Option<OffsetBuffer<i32>>,
) -> Result<ArrayRef, String> {
    match offsets {
        None => Ok(values),
        Some(offsets) => {
            let field = Arc::new(Field::new("item", values.data_type().clone(), true));
            ListArray::try_new(field, offsets, values, None)
                .map(|a| Arc::new(a) as ArrayRef)
                .map_err(|e| format!("model output {:?}: {e}", b.output))
        }
    }
}

/// The `predict` scalar function: scores its arguments with the job's model.
#[derive(Debug)]
pub struct PredictUdf {
    scorer: Arc<Scorer>,
    signature: Signature,
}

impl PredictUdf {
    pub const NAME: &'static str = "batchscore_predict";

    pub fn new(scorer: Arc<Scorer>) -> Self {
        Self {
            scorer,
            signature: Signature::variadic_any(Volatility::Volatile),
        }
    }
}

impl PartialEq for PredictUdf {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.scorer, &other.scorer)
    }
}
impl Eq for PredictUdf {}
impl std::hash::Hash for PredictUdf {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (Arc::as_ptr(&self.scorer) as usize).hash(state);
    }
}

impl ScalarUDFImpl for PredictUdf {
    fn name(&self) -> &str {
        Self::NAME
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> DfResult<DataType> {
        Ok(self.scorer.return_type())
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let rows = args.number_rows;
        let arrays = crate::features::to_arrays(args.args, rows)?;
        // Scoring blocks its thread for the whole batch. On the CLI's multi-thread runtime,
        // `block_in_place` hands this worker's other tasks (the scan's, which decode the next
        // batches) to another thread meanwhile; without it they waited behind the batch, and
        // cores idled while a worker waited for its next batch (GBDT: 0.4 core-s a run more).
        let score = || self.scorer.score(&arrays, rows);
        let out = if on_multi_thread_runtime() {
            tokio::task::block_in_place(score)
        } else {
            score()
        }
        .map_err(|e| DataFusionError::External(e.into()))?;
        Ok(ColumnarValue::Array(Arc::new(out)))
    }
}
