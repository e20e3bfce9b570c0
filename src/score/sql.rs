//! `predict` and `predict_output`: scoring as SQL functions, for `batchscore sql`.
//!
//! `predict('m', args…)` returns the only output of the model registered as `m`;
//! `predict_output('m', 'output', args…)` one output, or one element of it (`'probabilities[1]'`,
//! the syntax of a job's `[outputs]`). The feature arguments fill the model's inputs in order,
//! each input taking as many as it has values per row (a lone input whose last dimension is
//! dynamic takes them all). Everything that can be checked is checked while the query is
//! planned ([`ScalarUDFImpl::return_field_from_args`]): the model, the output, the argument
//! count and each argument's type, so that a wrong call is refused before any row is read.
//!
//! A model given a tokenizer (`--tokenizer NAME=tokenizer.json`) takes its text as the first
//! feature argument: the tokenizer fills its `input_ids`, `attention_mask` and
//! `token_type_ids` as `[tokenizer]` does in a job, and `predict_output` takes the table form
//! of `[outputs]` (`'{ from = "last_hidden_state", pool = "mean", normalize = true }'`).
//!
//! At run time each call site gets its own [`Scorer`] (one per model, output and argument
//! list), which scores every batch as a job's `predict` does: rows whose features are null,
//! or cannot be cast to the model's type, get a NULL prediction and are counted
//! ([`SqlModels::null_predictions`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::compute::{CastOptions, cast_with_options};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::{DataFusionError, Result as DfResult, ScalarValue, internal_err};
use datafusion::logical_expr::{
    ColumnarValue, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    Volatility,
};
use datafusion::prelude::SessionContext;
use indexmap::IndexMap;

use super::text::TextScoring;
use super::udf::on_multi_thread_runtime;
use super::{OutputBinding, ScoreError, Scorer, bind_outputs};
use crate::features::InputBinding;
use crate::features::casts::{cast_can_fail, castable};
use crate::features::text::{DEFAULT_TEXT_INFERENCE_BATCH, TextBinding, TextEncoder, TokenInput};
use crate::model::{ElemType, ExecutionDevice, IoKind, Model, ModelError, show_shape};
use crate::reject::ReasonCount;
use crate::spec::OutputFormat;
use crate::spec::text::{OutputColumn, TOKEN_INPUTS};

/// Why a `predict`/`predict_output` call is refused (while planning) or fails (while running).
/// Each message names the call, the model and, where one is at fault, the argument.
#[derive(Debug, thiserror::Error)]
pub enum PredictError {
    #[error("{function}(): the first argument must be a model name in quotes, one of: {models}")]
    ModelArg {
        function: &'static str,
        models: String,
    },
    #[error(
        "{function}('{model}', …): no model {model:?}; the models given with --model: {models}"
    )]
    UnknownModel {
        function: &'static str,
        model: String,
        models: String,
    },
    #[error(
        "predict_output('{model}', …): the second argument must be an output in quotes, as in a job's [outputs] (\"label\", \"probabilities[1]\"); the model's outputs: {outputs}"
    )]
    OutputArg { model: String, outputs: String },
    #[error(
        "predict('{model}', …): model {model:?} has {count} outputs ({outputs}): pick one with predict_output('{model}', 'OUTPUT', …)"
    )]
    SeveralOutputs {
        model: String,
        count: usize,
        outputs: String,
    },
    #[error("predict_output('{model}', '{output}', …): {message}")]
    BadOutput {
        model: String,
        output: String,
        message: String,
    },
    #[error(
        "{function}('{model}', …): model {model:?} takes {expected} feature argument{} ({inputs}), but {given} {} given",
        if expected == "1" { "" } else { "s" },
        if *given == 1 { "is" } else { "are" }
    )]
    ArgCount {
        function: &'static str,
        model: String,
        expected: String,
        given: usize,
        inputs: String,
    },
    #[error(
        "{function}('{model}', …): {argument}, which cannot be cast to model input {input:?} ({elem})"
    )]
    Uncastable {
        function: &'static str,
        model: String,
        /// The argument's position (1-based, the model name's included), text and type.
        argument: String,
        input: String,
        elem: ElemType,
    },
    #[error(
        "{function}('{model}', …): {argument}, which cannot be cast to text for the model's tokenizer"
    )]
    TextArg {
        function: &'static str,
        model: String,
        argument: String,
    },
    #[error("{function}('{model}', …): model input {input:?} {message}")]
    Input {
        function: &'static str,
        model: String,
        input: String,
        message: String,
    },
    #[error("{function}('{model}', …): {source}")]
    Session {
        function: &'static str,
        model: String,
        source: ModelError,
    },
    #[error("{function}('{model}', …): {source}")]
    Score {
        function: &'static str,
        model: String,
        source: ScoreError,
    },
}

impl PredictError {
    /// The function called (`predict` or `predict_output`).
    pub fn function(&self) -> &'static str {
        match self {
            Self::OutputArg { .. } | Self::BadOutput { .. } => PREDICT_OUTPUT,
            Self::SeveralOutputs { .. } => PREDICT,
            Self::ModelArg { function, .. }
            | Self::UnknownModel { function, .. }
            | Self::ArgCount { function, .. }
            | Self::Uncastable { function, .. }
            | Self::TextArg { function, .. }
            | Self::Input { function, .. }
            | Self::Session { function, .. }
            | Self::Score { function, .. } => function,
        }
    }

    /// The model the call names, when it names one.
    pub fn model(&self) -> Option<&str> {
        match self {
            Self::ModelArg { .. } => None,
            Self::UnknownModel { model, .. }
            | Self::OutputArg { model, .. }
            | Self::SeveralOutputs { model, .. }
            | Self::BadOutput { model, .. }
            | Self::ArgCount { model, .. }
            | Self::Uncastable { model, .. }
            | Self::TextArg { model, .. }
            | Self::Input { model, .. }
            | Self::Session { model, .. }
            | Self::Score { model, .. } => Some(model),
        }
    }

    fn into_df(self) -> DataFusionError {
        DataFusionError::External(Box::new(self))
    }
}

const PREDICT: &str = "predict";
const PREDICT_OUTPUT: &str = "predict_output";

/// The models the functions can call, by name, with the scorers of the calls made so far.
#[derive(Debug)]
pub struct SqlModels {
    models: IndexMap<String, SqlModel>,
    /// Sessions per scorer: one per scoring worker.
    workers: usize,
    /// Batches being scored now.
    in_flight: AtomicUsize,
    /// Set when the query failed: batches not yet started are not scored.
    cancelled: AtomicBool,
}

/// Counts a batch in [`SqlModels::in_flight`] while it is scored.
struct Busy<'a>(&'a AtomicUsize);

impl<'a> Busy<'a> {
    fn new(n: &'a AtomicUsize) -> Self {
        n.fetch_add(1, Ordering::SeqCst);
        Self(n)
    }
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A text model's tokenizer (`--tokenizer`) and the token inputs it fills.
#[derive(Debug, Clone)]
pub struct SqlText {
    pub encoder: TextEncoder,
    pub fills: Vec<TokenInput>,
}

/// Texts a model's tokenizer encoded, and those it cut to its `max_length`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextCounts {
    pub model: String,
    pub max_length: usize,
    pub texts: u64,
    pub truncated: u64,
}

#[derive(Debug)]
struct SqlModel {
    model: Model,
    /// Its tokenizer: the calls' first feature argument is then the text.
    text: Option<SqlText>,
    /// Rows per ONNX Runtime call.
    inference_batch: usize,
    /// Per call site (output and argument list), its scorer.
    scorers: Mutex<HashMap<String, Arc<Scorer>>>,
}

/// Rows a model gave a NULL prediction, because their features were null or could not be cast.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NullPredictions {
    pub model: String,
    pub rows: u64,
    pub reasons: Vec<ReasonCount>,
}

impl SqlModels {
    /// `models` by the names SQL calls them, each with its tokenizer if it takes text; each
    /// call site's scorer gets `workers` sessions and scores `inference_batch` rows per ONNX
    /// Runtime call (a text model: a job's default for text, as attention grows with rows x
    /// length²).
    pub fn new(
        models: Vec<(String, Model, Option<SqlText>)>,
        workers: usize,
        inference_batch: usize,
    ) -> Self {
        let models = models
            .into_iter()
            .map(|(name, model, text)| {
                let m = SqlModel {
                    model,
                    inference_batch: if text.is_some() {
                        DEFAULT_TEXT_INFERENCE_BATCH
                    } else {
                        inference_batch
                    },
                    text,
                    scorers: Mutex::new(HashMap::new()),
                };
                (name, m)
            })
            .collect();
        Self {
            models,
            workers: workers.max(1),
            in_flight: AtomicUsize::new(0),
            cancelled: AtomicBool::new(false),
        }
    }

    /// Stops scoring: batches not yet started fail at once, and this waits (at most
    /// `timeout`) for those being scored to finish. A query that fails drops its plan, but a
    /// batch already in ONNX Runtime runs to its end on its thread, and the plan's other tasks
    /// may start one more: the process should not exit under them.
    pub fn cancel_and_wait(&self, timeout: std::time::Duration) {
        self.cancelled.store(true, Ordering::SeqCst);
        let start = std::time::Instant::now();
        while self.in_flight.load(Ordering::SeqCst) > 0 && start.elapsed() < timeout {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    /// Per model that gave any, the rows with a NULL prediction and why.
    pub fn null_predictions(&self) -> Vec<NullPredictions> {
        let mut out = Vec::new();
        for (name, m) in &self.models {
            let scorers = m.scorers.lock().unwrap_or_else(|e| e.into_inner());
            let mut reasons: IndexMap<String, u64> = IndexMap::new();
            for s in scorers.values() {
                for r in s.stats.rejected.all() {
                    *reasons.entry(r.reason).or_default() += r.count;
                }
            }
            let rows = reasons.values().sum();
            if rows > 0 {
                let reasons = reasons
                    .into_iter()
                    .map(|(reason, count)| ReasonCount { reason, count })
                    .collect();
                out.push(NullPredictions {
                    model: name.clone(),
                    rows,
                    reasons,
                });
            }
        }
        out
    }

    /// Per text model that encoded any, its texts and those cut to `max_length`.
    pub fn text_counts(&self) -> Vec<TextCounts> {
        let mut out = Vec::new();
        for (name, m) in &self.models {
            let Some(text) = &m.text else { continue };
            let scorers = m.scorers.lock().unwrap_or_else(|e| e.into_inner());
            let count = |f: fn(&Scorer) -> u64| scorers.values().map(|s| f(s)).sum::<u64>();
            let texts = count(|s| s.stats.text.texts.load(Ordering::Relaxed));
            if texts > 0 {
                out.push(TextCounts {
                    model: name.clone(),
                    max_length: text.encoder.max_length,
                    texts,
                    truncated: count(|s| s.stats.text.truncated.load(Ordering::Relaxed)),
                });
            }
        }
        out
    }

    fn names(&self) -> String {
        let names: Vec<&str> = self.models.keys().map(String::as_str).collect();
        names.join(", ")
    }
}

/// Registers `predict` and `predict_output` over `models` with the session.
pub fn register(ctx: &SessionContext, models: Arc<SqlModels>) {
    for with_output in [false, true] {
        ctx.register_udf(ScalarUDF::new_from_impl(PredictFn {
            models: models.clone(),
            with_output,
            signature: Signature::variadic_any(Volatility::Volatile),
        }));
    }
}

/// One of the two functions.
#[derive(Debug)]
struct PredictFn {
    models: Arc<SqlModels>,
    /// `predict_output` (its second argument names the output) rather than `predict`.
    with_output: bool,
    signature: Signature,
}

impl PartialEq for PredictFn {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.models, &other.models) && self.with_output == other.with_output
    }
}
impl Eq for PredictFn {}
impl std::hash::Hash for PredictFn {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (Arc::as_ptr(&self.models) as usize).hash(state);
        self.with_output.hash(state);
    }
}

/// A call, checked: its model, output and how its feature arguments fill the inputs.
struct Call<'a> {
    name: &'a str,
    model: &'a SqlModel,
    /// The output expression (`label`, `probabilities[1]`).
    output: String,
    binding: OutputBinding,
    /// Per model input, its element type, shape and the feature arguments it takes.
    inputs: Vec<Slot>,
}

impl PredictFn {
    fn function(&self) -> &'static str {
        if self.with_output {
            PREDICT_OUTPUT
        } else {
            PREDICT
        }
    }

    /// Arguments before the features: the model, and the output for `predict_output`.
    fn leading(&self) -> usize {
        if self.with_output { 2 } else { 1 }
    }

    /// Checks a call whose leading arguments are `literals` and whose feature arguments have
    /// `features` fields; the features' types are checked when given.
    fn check<'a>(
        &'a self,
        literals: &[Option<&str>],
        features: &[FieldRef],
    ) -> Result<Call<'a>, PredictError> {
        let function = self.function();
        let Some(Some(name)) = literals.first() else {
            return Err(PredictError::ModelArg {
                function,
                models: self.models.names(),
            });
        };
        let Some((name, model)) = self.models.models.get_key_value(*name) else {
            return Err(PredictError::UnknownModel {
                function,
                model: name.to_string(),
                models: self.models.names(),
            });
        };
        let (output, binding) = self.output(name, model, literals.get(1).copied())?;
        let text = model.text.is_some();
        let inputs = layout(function, name, &model.model, features.len(), text)?;
        if let (true, Some(field)) = (text, features.first())
            && !castable(field.data_type(), &DataType::Utf8)
        {
            return Err(PredictError::TextArg {
                function,
                model: name.clone(),
                argument: argument_text(self.leading() + 1, field),
            });
        }
        // After the text, when there is one.
        let mut position = self.leading() + usize::from(text);
        for Slot {
            name: input,
            elem,
            count,
            ..
        } in &inputs
        {
            for field in &features[position - self.leading()..][..*count] {
                position += 1;
                let to = elem.arrow_type().unwrap_or(DataType::Utf8);
                if !castable(field.data_type(), &to) {
                    return Err(PredictError::Uncastable {
                        function,
                        model: name.clone(),
                        argument: argument_text(position, field),
                        input: input.clone(),
                        elem: *elem,
                    });
                }
            }
        }
        Ok(Call {
            name,
            model,
            output,
            binding,
            inputs,
        })
    }

    /// The output a call reads: the second argument of `predict_output`, the only output
    /// for `predict`.
    fn output(
        &self,
        name: &str,
        sql_model: &SqlModel,
        literal: Option<Option<&str>>,
    ) -> Result<(String, OutputBinding), PredictError> {
        let model = &sql_model.model;
        let outputs: Vec<&str> = model.outputs.iter().map(|o| o.name.as_str()).collect();
        let expr = match (self.with_output, literal) {
            (true, Some(Some(expr))) => expr.to_string(),
            (true, _) => {
                return Err(PredictError::OutputArg {
                    model: name.to_string(),
                    outputs: outputs.join(", "),
                });
            }
            (false, _) if outputs.len() != 1 => {
                return Err(PredictError::SeveralOutputs {
                    model: name.to_string(),
                    count: outputs.len(),
                    outputs: outputs.join(", "),
                });
            }
            (false, _) => outputs[0].to_string(),
        };
        let bad = |message: String| PredictError::BadOutput {
            model: name.to_string(),
            output: expr.clone(),
            message,
        };
        let column = output_column(&expr).map_err(bad)?;
        if column.transform().pool.is_some() && sql_model.text.is_none() {
            return Err(bad(format!(
                "pools over the attention mask, which only a tokenizer makes: add --tokenizer {name}=tokenizer.json"
            )));
        }
        let wanted: IndexMap<String, OutputColumn> = [(expr.clone(), column)].into();
        match bind_outputs(Some(&wanted), OutputFormat::Parquet, model) {
            // One binding per entry of `wanted`.
            Ok(mut b) => match b.pop() {
                Some(binding) => Ok((expr, binding)),
                None => Err(PredictError::BadOutput {
                    model: name.to_string(),
                    output: expr,
                    message: "the output cannot be bound".into(),
                }),
            },
            Err(problems) => {
                let messages: Vec<String> = problems.into_iter().map(|p| p.message).collect();
                Err(PredictError::BadOutput {
                    model: name.to_string(),
                    output: expr,
                    message: messages.join("; "),
                })
            }
        }
    }

    /// The call site's scorer, made on its first batch.
    fn scorer(&self, call: &Call<'_>, features: &[FieldRef]) -> Result<Arc<Scorer>, PredictError> {
        let key = std::iter::once(call.output.clone())
            .chain(
                features
                    .iter()
                    .map(|f| format!("{}: {}", f.name(), f.data_type())),
            )
            .collect::<Vec<_>>()
            .join("\u{1f}");
        let mut scorers = call.model.scorers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = scorers.get(&key) {
            return Ok(s.clone());
        }
        let sessions = call
            .model
            .model
            .session_pool(self.models.workers, 1, ExecutionDevice::Cpu)
            .map_err(|source| PredictError::Session {
                function: self.function(),
                model: call.name.to_string(),
                source,
            })?;
        let skip = usize::from(call.model.text.is_some());
        let inputs = bindings(
            self.function(),
            call,
            &features[skip..],
            self.leading() + skip,
        );
        // The text goes after the typed arguments and the raw values of fallible casts.
        let arg = features.len() - skip + inputs.iter().flat_map(|b| &b.raw_args).flatten().count();
        let text = call.model.text.as_ref().map(|t| TextScoring {
            encoder: t.encoder.clone(),
            binding: TextBinding {
                sql: argument_name(self.leading() + 1, &features[0]),
                arg,
                fills: t.fills.clone(),
                sensitive: false,
            },
        });
        let scorer = Arc::new(
            Scorer::new(
                inputs,
                vec![call.binding.clone()],
                sessions,
                call.model.inference_batch,
            )
            .with_text(text),
        );
        scorers.insert(key, scorer.clone());
        Ok(scorer)
    }
}

/// A model input and how many feature arguments it takes.
struct Slot {
    name: String,
    elem: ElemType,
    shape: Vec<i64>,
    count: usize,
}

/// How `given` feature arguments fill the model's inputs, in the model's order; with `text`,
/// the first is the tokenizer's text and the token inputs are in no slot.
fn layout(
    function: &'static str,
    name: &str,
    model: &Model,
    given: usize,
    text: bool,
) -> Result<Vec<Slot>, PredictError> {
    let input_err = |input: &str, message: String| PredictError::Input {
        function,
        model: name.to_string(),
        input: input.to_string(),
        message,
    };
    let mut slots = Vec::new();
    let mut takes_all = false;
    let fixed = usize::from(text);
    let tokenized = |io: &&crate::model::ModelIo| text && TOKEN_INPUTS.contains(&io.name.as_str());
    for io in model.inputs.iter().filter(|io| !tokenized(io)) {
        let IoKind::Tensor { dtype, shape } = &io.kind else {
            return Err(input_err(
                &io.name,
                format!("is a {}, not a tensor", io.kind),
            ));
        };
        if !dtype.is_fed() {
            return Err(input_err(
                &io.name,
                format!("has element type {dtype}, which batchscore does not feed"),
            ));
        }
        let count = match shape.len() {
            0 => {
                return Err(input_err(
                    &io.name,
                    "is a scalar (shape []): batchscore needs a batch dimension".into(),
                ));
            }
            1 => Some(1),
            _ if shape[1..].iter().all(|&d| d > 0) => {
                Some(shape[1..].iter().product::<i64>() as usize)
            }
            2 if model.inputs.len() == 1 && !text => None,
            _ => {
                return Err(input_err(
                    &io.name,
                    format!(
                        "has shape {}, whose values per row are not fixed",
                        show_shape(shape)
                    ),
                ));
            }
        };
        takes_all |= count.is_none();
        slots.push(Slot {
            name: io.name.clone(),
            elem: *dtype,
            shape: shape.clone(),
            count: count.unwrap_or(given),
        });
    }
    let expected: usize = slots.iter().map(|s| s.count).sum::<usize>() + fixed;
    if expected != given || given == 0 {
        return Err(PredictError::ArgCount {
            function,
            model: name.to_string(),
            expected: if takes_all {
                "at least 1".into()
            } else {
                expected.to_string()
            },
            given,
            inputs: slot_list(&slots, text),
        });
    }
    Ok(slots)
}

/// What a call's feature arguments fill, for messages: `the text, for its tokenizer` first
/// with `text`, then `features float32 [?, 5]` per slot.
fn slot_list(slots: &[Slot], text: bool) -> String {
    let text_arg = text.then(|| "the text, for its tokenizer".to_string());
    let inputs: Vec<String> = text_arg
        .into_iter()
        .chain(
            slots
                .iter()
                .map(|s| format!("{} {} {}", s.name, s.elem, show_shape(&s.shape))),
        )
        .collect();
    inputs.join(", ")
}

/// The scorer's input bindings: each input's arguments, described by position and text.
fn bindings(
    function: &'static str,
    call: &Call<'_>,
    features: &[FieldRef],
    leading: usize,
) -> Vec<InputBinding> {
    let mut bindings = Vec::with_capacity(call.inputs.len());
    let mut k = 0;
    let mut raws = features.len();
    for Slot {
        name,
        elem,
        shape,
        count,
    } in &call.inputs
    {
        let to = elem.arrow_type().unwrap_or(DataType::Utf8);
        let mut columns = Vec::with_capacity(*count);
        let mut raw_args = Vec::with_capacity(*count);
        for field in &features[k..k + count] {
            columns.push(argument_name(leading + k + 1, field));
            // A cast that can fail keeps the value before it, as the last arguments.
            raw_args.push(cast_can_fail(field.data_type(), &to).then(|| {
                raws += 1;
                raws - 1
            }));
            k += 1;
        }
        bindings.push(InputBinding {
            name: name.clone(),
            dtype: *elem,
            shape: shape.clone(),
            columns,
            raw_args,
            pack_fill: vec![None; *count],
            reject_non_finite: false,
            key: format!("{function}('{}')", call.name),
            sensitive: Vec::new(),
        });
    }
    bindings
}

/// `argument 3 (text)`: a feature argument as messages and rejected rows name it.
fn argument_name(position: usize, field: &FieldRef) -> String {
    format!("argument {position} ({})", field.name())
}

/// `argument 3 (text) has type Int64`.
fn argument_text(position: usize, field: &FieldRef) -> String {
    format!(
        "{} has type {}",
        argument_name(position, field),
        field.data_type()
    )
}

/// `predict_output`'s output argument as an `[outputs]` value: `'probabilities[1]'`, or the
/// table form `'{ from = "logits", softmax = true }'`.
fn output_column(expr: &str) -> Result<OutputColumn, String> {
    OutputColumn::parse_inline(expr)?
        .try_into::<OutputColumn>()
        .map_err(|e| format!("not an [outputs] table: {}", e.message().trim()))
}

/// A string literal argument's value; `None` when the argument is not one.
fn literal(value: Option<&ScalarValue>) -> Option<&str> {
    value.and_then(|v| v.try_as_str().flatten())
}

impl ScalarUDFImpl for PredictFn {
    fn name(&self) -> &str {
        self.function()
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> DfResult<DataType> {
        internal_err!(
            "{} has its type from return_field_from_args",
            self.function()
        )
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> DfResult<FieldRef> {
        let leading = self.leading().min(args.arg_fields.len());
        let literals: Vec<Option<&str>> = args.scalar_arguments[..leading]
            .iter()
            .map(|v| literal(*v))
            .collect();
        let call = self
            .check(&literals, &args.arg_fields[leading..])
            .map_err(PredictError::into_df)?;
        Ok(Arc::new(Field::new(
            self.function(),
            call.binding.data_type(),
            true,
        )))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        // Counted before the check, so that `cancel_and_wait` either sees it or is seen.
        let _busy = Busy::new(&self.models.in_flight);
        if self.models.cancelled.load(Ordering::SeqCst) {
            return Err(DataFusionError::Execution("the query was stopped".into()));
        }
        let rows = args.number_rows;
        let leading = self.leading().min(args.args.len());
        let literals: Vec<Option<&str>> = args.args[..leading]
            .iter()
            .map(|a| match a {
                ColumnarValue::Scalar(v) => literal(Some(v)),
                ColumnarValue::Array(_) => None,
            })
            .collect();
        let features = &args.arg_fields[leading..];
        let call = self
            .check(&literals, features)
            .map_err(PredictError::into_df)?;
        let scorer = self
            .scorer(&call, features)
            .map_err(PredictError::into_df)?;
        let mut raw = crate::features::to_arrays(args.args[leading..].to_vec(), rows)?;
        // The text goes last, where the scorer's text binding points.
        let text = (call.model.text.is_some() && !raw.is_empty()).then(|| raw.remove(0));
        let mut arrays = cast_arguments(&scorer.inputs, raw)?;
        arrays.extend(text);
        // As the job's `predict`: scoring blocks its thread for the batch, so on the CLI's
        // multi-thread runtime the worker's other tasks move to another thread meanwhile.
        let score = || scorer.score(&arrays, rows);
        let out = if on_multi_thread_runtime() {
            tokio::task::block_in_place(score)
        } else {
            score()
        }
        .map_err(|source| {
            PredictError::Score {
                function: self.function(),
                model: call.name.to_string(),
                source,
            }
            .into_df()
        })?;
        Ok(ColumnarValue::Array(out.column(0).clone()))
    }
}

/// The feature arguments cast to their inputs' types (a value the cast fails on becomes
/// null), then the arguments whose cast can fail as they were, where `raw_args` points.
fn cast_arguments(inputs: &[InputBinding], raw: Vec<ArrayRef>) -> DfResult<Vec<ArrayRef>> {
    let safe = CastOptions {
        safe: true,
        ..Default::default()
    };
    let mut typed = Vec::with_capacity(raw.len());
    let mut kept = Vec::new();
    let mut k = 0;
    for binding in inputs {
        let to = binding.dtype.arrow_type().unwrap_or(DataType::Utf8);
        for j in 0..binding.columns.len() {
            let a = &raw[k];
            k += 1;
            typed.push(if a.data_type() == &to {
                a.clone()
            } else {
                cast_with_options(a.as_ref(), &to, &safe)?
            });
            if binding.raw_args[j].is_some() {
                kept.push(a.clone());
            }
        }
    }
    typed.extend(kept);
    Ok(typed)
}

/// Where calls of `function` naming `model` (any model when `None`) start in `sql`: 1-based
/// line and column of the function's name, in order. Strings, quoted identifiers and comments
/// are skipped; a best effort for messages, not a parser.
pub fn call_positions(sql: &str, function: &str, model: Option<&str>) -> Vec<(usize, usize)> {
    let chars: Vec<char> = sql.chars().collect();
    let mut found = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\'' || c == '"' {
            i = skip_quoted(&chars, i).1;
        } else if c == '-' && chars.get(i + 1) == Some(&'-') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c.is_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            if word.eq_ignore_ascii_case(function) && names_model(&chars, i, model) {
                found.push(line_col(&chars, start));
            }
        } else {
            i += 1;
        }
    }
    found
}

/// Whether the text at `i` is `(` and, when `model` is given, `'model'` as first argument.
fn names_model(chars: &[char], mut i: usize, model: Option<&str>) -> bool {
    let skip_ws = |i: &mut usize| {
        while chars.get(*i).is_some_and(|c| c.is_whitespace()) {
            *i += 1;
        }
    };
    skip_ws(&mut i);
    if chars.get(i) != Some(&'(') {
        return false;
    }
    i += 1;
    skip_ws(&mut i);
    let Some(model) = model else {
        return true;
    };
    if chars.get(i) != Some(&'\'') {
        return false;
    }
    let (text, _) = skip_quoted(chars, i);
    text == model
}

/// The text of the quoted string or identifier starting at `start` (doubled quotes undone),
/// and the index after it.
fn skip_quoted(chars: &[char], start: usize) -> (String, usize) {
    let q = chars[start];
    let mut text = String::new();
    let mut i = start + 1;
    while i < chars.len() {
        if chars[i] == q {
            if chars.get(i + 1) == Some(&q) {
                text.push(q);
                i += 2;
                continue;
            }
            return (text, i + 1);
        }
        text.push(chars[i]);
        i += 1;
    }
    (text, i)
}

fn line_col(chars: &[char], at: usize) -> (usize, usize) {
    let before = &chars[..at];
    let line = before.iter().filter(|&&c| c == '\n').count() + 1;
    let col = at - before.iter().rposition(|&c| c == '\n').map_or(0, |p| p + 1) + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_are_found_by_function_and_model_outside_strings_and_comments() {
        let sql = "SELECT predict('a', x),\n  -- predict('b', y)\n  'predict(''b'', 1)', PREDICT ( 'b' , z), predict_output('b', 'o', z)\nFROM t";
        assert_eq!(call_positions(sql, "predict", Some("b")), [(3, 24)]);
        assert_eq!(call_positions(sql, "predict", None), [(1, 8), (3, 24)]);
        assert_eq!(call_positions(sql, "predict_output", Some("b")), [(3, 44)]);
        assert!(call_positions(sql, "predict", Some("c")).is_empty());
    }
}
