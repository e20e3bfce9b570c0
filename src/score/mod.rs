//! Scoring inside the DataFusion plan.
//!
//! [`udf::PredictUdf`] is the `predict` scalar function: it takes the feature expressions of
//! every model input as arguments and returns one struct column holding every output column
//! of the job, then the reject fields ([`crate::reject::struct_fields`]). Because it is an
//! ordinary DataFusion function, each partition of the plan scores its own batches on its own
//! thread, and memory stays bounded by the batch size. Per batch, [`Scorer::score`]:
//! 1. rejects the rows whose features cannot be scored (a null with no `fill_null`, a value
//!    that cannot be cast, a non-finite value under `on_non_finite = "reject"`),
//! 2. packs the other rows into tensors ([`crate::features::FeaturePacker`]), in calls of
//!    `[run] inference_batch_size` rows or of the model's fixed batch size (the last one
//!    padded, the padding dropped), for a tree ensemble in the order of
//!    [`tree_order::TreeRowOrder`],
//! 3. runs a pooled ONNX Runtime session, splitting a call it fails on until the rows it
//!    fails on alone are isolated and rejected, and
//! 4. decodes each output ([`outputs::OutputBinding`], [`decode`]) into an Arrow column,
//!    putting results back on the batch's rows (rejected rows get nulls; the run sends them
//!    to `_rejected/`).

pub mod decode;
pub mod native;
pub mod outputs;
pub mod pool;
pub mod sql;
pub mod text;
pub mod tree_order;
pub mod trees;
pub mod udf;

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use datafusion::arrow::array::{Array, ArrayRef, StructArray, UInt32Array};
use datafusion::arrow::datatypes::{DataType, Field, Fields};
use datafusion::arrow::error::ArrowError;
use ort::session::{Session, SessionOutputs};
use ort::value::DynValue;

use crate::features::text::RowTokens;
use crate::features::{FeaturePacker, InputBinding, PackError, display_sql};
use crate::model::{ElemType, SessionPool};
use crate::reject::{RejectCounts, Rejects, Stage};
pub use decode::DecodeError;
use native::{NativeEngine, Trust};
pub use outputs::{OutputBinding, bind_outputs};
use text::{TextScoring, TextStats};
use tree_order::TreeRowOrder;
pub use udf::PredictUdf;

/// Why a batch could not be scored at all (rows ONNX Runtime fails on are rejected instead).
#[derive(Debug, thiserror::Error)]
pub enum ScoreError {
    #[error(transparent)]
    Pack(#[from] PackError),
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error(transparent)]
    Arrow(#[from] ArrowError),
    #[error("a batch of {0} rows: batches are at most 2^32 rows")]
    TooManyRows(usize),
    #[error("the native tree evaluator: {0}")]
    Native(ort::Error),
}

/// Counters and timings shared by every worker of a run.
#[derive(Debug, Default)]
pub struct ScoreStats {
    /// Rows that reached scoring (after the `query`).
    pub rows_in: AtomicU64,
    pub rows_scored: AtomicU64,
    /// Rejected rows, by reason: unscored ones and malformed CSV records.
    pub rejected: RejectCounts,
    /// Malformed CSV records (rejected before the query; not in `rows_in`).
    pub rows_malformed: AtomicU64,
    pub batches: AtomicU64,
    pub features_ns: AtomicU64,
    pub inference_ns: AtomicU64,
    /// NaN or ±infinity values in float output columns.
    pub non_finite_outputs: AtomicU64,
    /// Seconds per scored batch (features + inference).
    pub batch_latencies: Mutex<Vec<f64>>,
    /// A text model's tokens (`[tokenizer]`).
    pub text: TextStats,
}

impl ScoreStats {
    /// Zeroes every count (between a resumable run's pieces, each counted alone).
    pub fn reset(&self) {
        for n in [
            &self.rows_in,
            &self.rows_scored,
            &self.rows_malformed,
            &self.batches,
            &self.features_ns,
            &self.inference_ns,
            &self.non_finite_outputs,
        ] {
            n.store(0, Ordering::Relaxed);
        }
        self.rejected.clear();
        self.text.reset();
        self.batch_latencies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// Rows the run considered: those that reached scoring and the malformed CSV records
    /// that never did.
    pub fn rows_considered(&self) -> u64 {
        self.rows_in.load(Ordering::Relaxed) + self.rows_malformed.load(Ordering::Relaxed)
    }
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
    /// For tree ensembles the native evaluator reads: it scores in ONNX Runtime's place.
    native: Option<NativeEngine>,
    /// Whether the model is a tree ensemble (for `tree_engine` in the metrics).
    is_tree_ensemble: bool,
    /// For a text model: the tokenizer that fills its token inputs.
    text: Option<TextScoring>,
    return_fields: Fields,
}

/// What one batch's calls read: the evaluated arguments and, for a text model, each row's
/// tokens (empty otherwise).
struct Batch<'a> {
    args: &'a [ArrayRef],
    tokens: &'a [RowTokens],
}

/// What scoring one batch's rows produced, call by call.
struct BatchRun {
    /// Decoded arrays per output column, one per successful call, in row order.
    per_output: Vec<Vec<ArrayRef>>,
    /// The rows those arrays hold, in order.
    ok_rows: Vec<usize>,
    /// Rows ONNX Runtime failed on alone, with its message.
    failed: Vec<(usize, String)>,
    features_ns: u64,
    inference_ns: u64,
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
            .chain(crate::reject::struct_fields())
            .collect();
        Self {
            inputs,
            outputs,
            sessions,
            stats: ScoreStats::default(),
            fixed_batch,
            inference_batch: inference_batch.max(1),
            row_order: None,
            native: None,
            is_tree_ensemble: false,
            text: None,
            return_fields,
        }
    }

    /// Fills the model's token inputs from a text column (`[tokenizer]`).
    pub fn with_text(mut self, text: Option<TextScoring>) -> Self {
        self.text = text;
        self
    }

    /// For a text model: the tokens a text is cut to.
    pub fn text_max_length(&self) -> Option<usize> {
        self.text.as_ref().map(|t| t.encoder.max_length)
    }

    /// Scores with the native tree evaluator when `engine` is given (checked against ONNX
    /// Runtime on the run's first call); `is_tree_ensemble` says the model is one either way.
    pub fn with_native(mut self, engine: Option<NativeEngine>, is_tree_ensemble: bool) -> Self {
        self.native = engine;
        self.is_tree_ensemble = is_tree_ensemble;
        self
    }

    /// Which engine scored a tree ensemble: `native`, or `onnxruntime` (chosen, or fallen back
    /// to); `None` for other models.
    pub fn tree_engine(&self) -> Option<&'static str> {
        match &self.native {
            Some(e) if e.trust() != Trust::Refused => Some("native"),
            _ => self.is_tree_ensemble.then_some("onnxruntime"),
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
    pub fn score(&self, args: &[ArrayRef], num_rows: usize) -> Result<StructArray, ScoreError> {
        let started = Instant::now();
        let mut rejects = self.feature_rejects(args, num_rows);
        let tokens = match &self.text {
            Some(t) => t.encode(args, num_rows, &mut rejects, &self.stats.text)?,
            None => Vec::new(),
        };
        let rows: Vec<usize> = (0..num_rows).filter(|&i| !rejects.is_rejected(i)).collect();
        let batch = Batch {
            args,
            tokens: &tokens,
        };
        let (run, reordered) = self.infer_rows(&batch, rows)?;
        // Rows ONNX Runtime failed on alone are rejected with their feature values as text.
        for (row, message) in &run.failed {
            // Its message can quote a feature's value (`idx=99 must be within ...`).
            let reason = if self.reads_sensitive() {
                "ONNX Runtime failed on this row (its message is withheld: a feature reads a sensitive column)".to_string()
            } else {
                format!("ONNX Runtime failed on this row: {message}")
            };
            rejects.reject(*row, Stage::Inference, reason, self.row_text(args, *row));
        }
        // Predictions are in `ok_rows` order; they need placing unless that is 0..num_rows.
        let needs_placing = run.ok_rows.len() < num_rows || reordered;
        let mut columns = Vec::with_capacity(self.return_fields.len());
        for (binding, parts) in self.outputs.iter().zip(&run.per_output) {
            let scored = self.concat_output(binding, parts)?;
            columns.push(scatter(scored, &run.ok_rows, num_rows, needs_placing)?);
        }
        let s = &self.stats;
        if !rejects.is_empty() {
            s.rejected.add(rejects.reasons());
        }
        columns.extend(rejects.into_columns());
        s.rows_in.fetch_add(num_rows as u64, Ordering::Relaxed);
        s.rows_scored
            .fetch_add(run.ok_rows.len() as u64, Ordering::Relaxed);
        s.batches.fetch_add(1, Ordering::Relaxed);
        s.features_ns.fetch_add(run.features_ns, Ordering::Relaxed);
        s.inference_ns
            .fetch_add(run.inference_ns, Ordering::Relaxed);
        s.batch_latencies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(started.elapsed().as_secs_f64());
        Ok(StructArray::try_new(
            self.return_fields.clone(),
            columns,
            None,
        )?)
    }

    /// The rows whose features cannot be scored, each with the first reason found: a null
    /// in a column with no fill (or a value its cast failed on), a non-finite value where
    /// the input rejects them.
    fn feature_rejects(&self, args: &[ArrayRef], num_rows: usize) -> Rejects {
        let mut rejects = Rejects::new(num_rows);
        let mut offset = 0;
        for binding in &self.inputs {
            for j in 0..binding.columns.len() {
                let raw = binding.raw_args[j].map(|r| &args[r]);
                column_rejects(binding, j, &args[offset + j], raw, &mut rejects);
            }
            offset += binding.columns.len();
        }
        rejects
    }

    /// Scores `rows` in calls of [`Self::rows_per_call`], sorted first when the model is a
    /// tree ensemble or a text model grouping rows by length (then the second value is true);
    /// rows are the batch's in the result.
    fn infer_rows(
        &self,
        batch: &Batch,
        mut rows: Vec<usize>,
    ) -> Result<(BatchRun, bool), ScoreError> {
        let mut run = BatchRun {
            per_output: vec![Vec::new(); self.outputs.len()],
            ok_rows: Vec::with_capacity(rows.len()),
            failed: Vec::new(),
            features_ns: 0,
            inference_ns: 0,
        };
        let chunk = self.rows_per_call();
        let Some(order) = self.row_order.as_ref().filter(|_| rows.len() > 1) else {
            let sorted = self
                .text
                .as_ref()
                .is_some_and(|t| t.sort(&mut rows, batch.tokens));
            for call in rows.chunks(chunk) {
                self.infer_isolating(batch, call, &mut run)?;
            }
            return Ok((run, sorted));
        };
        let args = batch.args;
        order.sort(args, &mut rows);
        // Slices gathered straight from the batch's columns in sorted order would each touch
        // nearly every cache line of every column (measured: packing went from 0.5% to 2.9%
        // of the run); one `take` per column reads each column once.
        let t0 = Instant::now();
        let indices = rows
            .iter()
            .map(|&r| u32::try_from(r).map_err(|_| ScoreError::TooManyRows(rows.len())))
            .collect::<Result<UInt32Array, _>>()?;
        let sorted = args
            .iter()
            .map(|a| datafusion::arrow::compute::take(a.as_ref(), &indices, None))
            .collect::<Result<Vec<_>, _>>()?;
        run.features_ns += t0.elapsed().as_nanos() as u64;
        let positions: Vec<usize> = (0..rows.len()).collect();
        let sorted = Batch {
            args: &sorted,
            tokens: &[],
        };
        for call in positions.chunks(chunk) {
            self.infer_isolating(&sorted, call, &mut run)?;
        }
        // Back from positions in the sorted columns to the batch's rows.
        for row in run.ok_rows.iter_mut() {
            *row = rows[*row];
        }
        for (row, _) in run.failed.iter_mut() {
            *row = rows[*row];
        }
        Ok((run, true))
    }

    /// Scores `rows`; when ONNX Runtime fails, splits them in halves and retries each, so
    /// that only the rows it fails on alone are lost (recorded in `run.failed`).
    fn infer_isolating(
        &self,
        batch: &Batch,
        rows: &[usize],
        run: &mut BatchRun,
    ) -> Result<(), ScoreError> {
        match self.infer(batch, rows, run)? {
            Ok(decoded) => {
                for (acc, arr) in run.per_output.iter_mut().zip(decoded) {
                    acc.push(arr);
                }
                run.ok_rows.extend_from_slice(rows);
            }
            Err(message) if rows.len() == 1 => run.failed.push((rows[0], message)),
            Err(_) => {
                let (left, right) = rows.split_at(rows.len() / 2);
                self.infer_isolating(batch, left, run)?;
                self.infer_isolating(batch, right, run)?;
            }
        }
        Ok(())
    }

    /// One ONNX Runtime run over `rows` (padded to the model's fixed batch size). The outer
    /// error is fatal (packing, decoding); the inner one is ONNX Runtime refusing the rows.
    fn infer(
        &self,
        batch: &Batch,
        rows: &[usize],
        run: &mut BatchRun,
    ) -> Result<Result<Vec<ArrayRef>, String>, ScoreError> {
        let args = batch.args;
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
            let tensor = FeaturePacker { binding, columns }.pack(rows)?;
            tensors.push((binding.name.clone(), tensor));
        }
        let mut lengths = None;
        if let Some(text) = &self.text {
            tensors.extend(text.pack(rows, batch.tokens, &self.stats.text)?);
            lengths = Some(rows.iter().map(|&r| batch.tokens[r].ids.len()).collect());
        }
        let t1 = Instant::now();
        run.features_ns += (t1 - t0).as_nanos() as u64;
        let n = rows.len();
        let result = match &self.native {
            Some(engine) => match engine.trust() {
                Trust::Trusted => self.infer_native(engine, &tensors, n, real).map(Ok),
                Trust::Unchecked => self.check_native(engine, tensors, n, real),
                Trust::Refused => self.infer_session(tensors, n, real, None),
            },
            None => self.infer_session(tensors, n, real, lengths),
        };
        run.inference_ns += t1.elapsed().as_nanos() as u64;
        result
    }

    /// One ONNX Runtime run of the packed tensors.
    fn infer_session(
        &self,
        tensors: Vec<(String, DynValue)>,
        rows: usize,
        keep: usize,
        lengths: Option<Vec<usize>>,
    ) -> Result<Result<Vec<ArrayRef>, String>, ScoreError> {
        self.sessions
            .with_session(|session: &mut Session| match session.run(tensors) {
                Ok(outputs) => self
                    .decode(&outputs, rows, keep, lengths.as_deref())
                    .map(Ok),
                Err(e) => Ok(Err(e.to_string())),
            })
    }

    /// The native evaluator's outputs, decoded as ONNX Runtime's are.
    fn infer_native(
        &self,
        engine: &NativeEngine,
        tensors: &[(String, DynValue)],
        rows: usize,
        keep: usize,
    ) -> Result<Vec<ArrayRef>, ScoreError> {
        let outputs = engine.run(&tensors[0].1).map_err(ScoreError::Native)?;
        self.decode_each(|name| outputs.get(name), rows, keep, None)
    }

    /// The run's first call: scored both ways; the native evaluator is trusted for the rest
    /// of the run only when every output is identical, bit for bit. ONNX Runtime's result is
    /// the one kept.
    fn check_native(
        &self,
        engine: &NativeEngine,
        tensors: Vec<(String, DynValue)>,
        rows: usize,
        keep: usize,
    ) -> Result<Result<Vec<ArrayRef>, String>, ScoreError> {
        let mut trust = engine.lock();
        if *trust != Trust::Unchecked {
            drop(trust);
            return match engine.trust() {
                Trust::Trusted => self.infer_native(engine, &tensors, rows, keep).map(Ok),
                _ => self.infer_session(tensors, rows, keep, None),
            };
        }
        let native = self.infer_native(engine, &tensors, rows, keep);
        let reference = self.infer_session(tensors, rows, keep, None)?;
        // ONNX Runtime refused these rows: the next call checks instead.
        let Ok(expected) = &reference else {
            return Ok(reference);
        };
        // Debug text shows every float exactly (and NaN as NaN), so equal text is equal bits.
        let same = native.as_ref().is_ok_and(|got| {
            got.len() == expected.len()
                && got
                    .iter()
                    .zip(expected)
                    .all(|(a, b)| format!("{a:?}") == format!("{b:?}"))
        });
        if same {
            *trust = Trust::Trusted;
            tracing::info!(
                trees = engine.n_trees(),
                layout = engine.layout(),
                rows = keep,
                "tree ensemble scored by the native evaluator: its outputs on the first {keep} rows are identical to ONNX Runtime's"
            );
        } else {
            *trust = Trust::Refused;
            tracing::warn!(
                "the native tree evaluator's outputs differ from ONNX Runtime's on the first rows: ONNX Runtime scores this run (set [run] tree_engine = \"onnxruntime\" to skip the check)"
            );
        }
        Ok(reference)
    }

    /// Decodes every output column from one run of `rows` rows, keeping the first `keep`;
    /// `lengths` are the rows' token counts (a text model's, for pooling).
    fn decode(
        &self,
        outputs: &SessionOutputs<'_>,
        rows: usize,
        keep: usize,
        lengths: Option<&[usize]>,
    ) -> Result<Vec<ArrayRef>, ScoreError> {
        self.decode_each(|name| outputs.get(name), rows, keep, lengths)
    }

    /// Decodes every output column from the values `output` finds by output name (a
    /// session's, or the native evaluator's).
    fn decode_each<'v>(
        &self,
        output: impl Fn(&str) -> Option<&'v DynValue>,
        rows: usize,
        keep: usize,
        lengths: Option<&[usize]>,
    ) -> Result<Vec<ArrayRef>, ScoreError> {
        self.outputs
            .iter()
            .map(|b| {
                let value = output(&b.output).ok_or_else(|| DecodeError::Missing {
                    output: b.output.clone(),
                })?;
                Ok(decode::decode_output(b, value, rows, keep, lengths)?)
            })
            .collect()
    }

    /// One output column's values over the batch's calls, with its non-finite values counted.
    fn concat_output(
        &self,
        binding: &OutputBinding,
        parts: &[ArrayRef],
    ) -> Result<ArrayRef, ScoreError> {
        let scored = match parts {
            [] => datafusion::arrow::array::new_empty_array(&binding.data_type()),
            [one] => one.clone(),
            _ => {
                let refs: Vec<&dyn Array> = parts.iter().map(|a| a.as_ref()).collect();
                datafusion::arrow::compute::concat(&refs)?
            }
        };
        if matches!(binding.elem, ElemType::Float32 | ElemType::Float64) {
            let n = count_non_finite(scored.as_ref());
            self.stats
                .non_finite_outputs
                .fetch_add(n, Ordering::Relaxed);
        }
        Ok(scored)
    }

    /// Whether any feature reads a sensitive column (`[privacy]`).
    fn reads_sensitive(&self) -> bool {
        self.inputs.iter().any(|b| b.sensitive.contains(&true))
            || self.text.as_ref().is_some_and(|t| t.binding.sensitive)
    }

    /// A row's feature values as text: `sql=value, ...`.
    fn row_text(&self, args: &[ArrayRef], row: usize) -> String {
        let sqls = self.inputs.iter().flat_map(|b| {
            let at = move |j: usize| (&b.columns[j], b.is_sensitive(j));
            (0..b.columns.len()).map(at)
        });
        let text = self
            .text
            .as_ref()
            .map(|t| (&t.binding.sql, t.binding.sensitive, t.binding.arg));
        let text = text.map(|(sql, sensitive, arg)| ((sql, sensitive), &args[arg]));
        sqls.zip(args)
            .chain(text)
            .map(|((sql, sensitive), col)| {
                // A feature that reads a sensitive column never shows its value.
                let value = if sensitive {
                    crate::reject::REDACTED.to_string()
                } else {
                    value_text(col, row)
                };
                format!("{}={value}", display_sql(sql))
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// [`Scorer::feature_rejects`] for column `j` of `binding`; `raw` is its value before a cast
/// that can fail.
fn column_rejects(
    binding: &InputBinding,
    j: usize,
    col: &ArrayRef,
    raw: Option<&ArrayRef>,
    rejects: &mut Rejects,
) {
    let name = display_sql(&binding.columns[j]);
    // A feature that reads a sensitive column never shows its value.
    let shown = |text: String| {
        if binding.is_sensitive(j) {
            crate::reject::REDACTED.to_string()
        } else {
            text
        }
    };
    if binding.reject_non_finite {
        for (i, text) in non_finite_rows(col) {
            let text = shown(text);
            let reason = format!(
                "column {name:?}: not finite, and [inputs.{}] sets on_non_finite = \"reject\"",
                binding.name
            );
            rejects.reject(i, Stage::Features, reason, text);
        }
    }
    // Nulls the packer fills are no reason to reject a row.
    if binding.pack_fill[j].is_some() || col.null_count() == 0 {
        return;
    }
    let null_reason = format!(
        "column {name:?}: null, and [inputs.{}] sets no fill_null",
        binding.name
    );
    let cast_reason = format!("column {name:?}: cannot be cast to {}", binding.dtype);
    for i in (0..col.len()).filter(|&i| col.is_null(i)) {
        // Null after a TRY_CAST but present before: the cast failed on the value.
        let (reason, value) = match raw {
            Some(raw) if raw.is_valid(i) => (cast_reason.clone(), shown(value_text(raw, i))),
            _ => (null_reason.clone(), "null".to_string()),
        };
        rejects.reject(i, Stage::Features, reason, value);
    }
}

/// A value as text for `_rejected/`: `null`, or as Arrow displays it.
fn value_text(col: &ArrayRef, row: usize) -> String {
    if col.is_null(row) {
        return "null".to_string();
    }
    datafusion::arrow::util::display::array_value_to_string(col, row).unwrap_or_else(|_| "?".into())
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
        DataType::FixedSizeList(..) => count_non_finite(a.as_fixed_size_list().values().as_ref()),
        _ => 0,
    }
}

/// Puts `scored` (one value per row of `scored_rows`) back at the rows it came from; other
/// rows are null. Without `needs_placing`, `scored` already is the batch's rows in order.
fn scatter(
    scored: ArrayRef,
    scored_rows: &[usize],
    num_rows: usize,
    needs_placing: bool,
) -> Result<ArrayRef, ArrowError> {
    if !needs_placing {
        return Ok(scored);
    }
    let mut positions: Vec<Option<u32>> = vec![None; num_rows];
    for (k, &r) in scored_rows.iter().enumerate() {
        positions[r] = Some(k as u32);
    }
    let indices = UInt32Array::from(positions);
    datafusion::arrow::compute::take(scored.as_ref(), &indices, None)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{AsArray, Float32Array, Float64Array, Int64Array};
    use datafusion::arrow::datatypes::Int64Type;

    use super::*;

    #[test]
    fn scattered_values_land_on_their_rows_and_the_rest_are_null() {
        let scored: ArrayRef = Arc::new(Int64Array::from(vec![10, 30, 40]));
        // Scored in the order 3, 0, 2 (sorted), row 1 rejected.
        let placed = scatter(scored.clone(), &[3, 0, 2], 4, true).unwrap();
        let placed: Vec<Option<i64>> = placed.as_primitive::<Int64Type>().iter().collect();
        assert_eq!(placed, [Some(30), None, Some(40), Some(10)]);
        // Every row in order: nothing to place.
        let same = scatter(scored.clone(), &[0, 1, 2], 3, false).unwrap();
        assert!(Arc::ptr_eq(&same, &scored));
    }

    #[test]
    fn non_finite_values_are_found_and_counted_in_lists_too() {
        let col: ArrayRef = Arc::new(Float64Array::from(vec![
            Some(1.0),
            Some(f64::NAN),
            None,
            Some(f64::NEG_INFINITY),
        ]));
        let rows: Vec<usize> = non_finite_rows(&col).into_iter().map(|(i, _)| i).collect();
        assert_eq!(rows, [1, 3]);
        assert_eq!(non_finite_rows(&col)[1].1, "-inf");
        let floats = Float32Array::from(vec![f32::INFINITY, 0.5, f32::NAN]);
        assert_eq!(count_non_finite(&floats), 2);
        let list = datafusion::arrow::array::ListArray::from_iter_primitive::<
            datafusion::arrow::datatypes::Float32Type,
            _,
            _,
        >(vec![
            Some(vec![Some(f32::NAN), Some(1.0)]),
            Some(vec![Some(2.0)]),
        ]);
        assert_eq!(count_non_finite(&list), 1);
        assert_eq!(value_text(&col, 2), "null");
        assert_eq!(value_text(&col, 0), "1.0");
    }
}
