//! Features: how input columns become model tensors.
//!
//! Each model input is bound to a list of SQL expressions over the (queried) input
//! ([`bind_inputs`]): DataFusion evaluates them, cast to the input's element type ([`casts`]),
//! and [`pack::FeaturePacker`] packs them row-major into one contiguous tensor of the model's
//! shape. A binding is checked before any row is read: the expressions parse and name
//! existing columns ([`names`]), their types can be cast, and their count fits the input's
//! shape.

pub mod casts;
pub mod names;
pub mod pack;
pub mod text;

use datafusion::arrow::datatypes::DataType;
use datafusion::common::ScalarValue;
use datafusion::logical_expr::{Expr, cast, lit, try_cast, when};
use datafusion::prelude::DataFrame;

use crate::diagnostics::Problem;
use crate::model::{ElemType, IoKind, Model, ModelIo, show_shape};
use crate::spec::text::TOKEN_INPUTS;
use crate::spec::{FillValue, JobSpec, NonFinite, TensorDtype};
use casts::{cast_can_fail, castable};
pub use names::{display_sql, nearest_columns, quote_ident};
pub use pack::{FeaturePacker, PackError, to_arrays};
pub use text::{TextBinding, TextEncoder};

/// One model input and the expressions that feed it.
#[derive(Debug, Clone)]
pub struct InputBinding {
    /// The model input's name.
    pub name: String,
    pub dtype: ElemType,
    /// The model's declared shape; `-1` is dynamic.
    pub shape: Vec<i64>,
    /// The SQL text of each expression, as written in the spec.
    pub columns: Vec<String>,
    /// Per column: the index in the scoring function's arguments of the column's value before
    /// a cast that can fail on it (a string to a number, say), or `None` when no cast can fail.
    pub raw_args: Vec<Option<usize>>,
    /// Per column: the value the packer writes where the column is null (`fill_null`, cast
    /// to the input's type), for numeric inputs whose column has no fallible cast. Filling
    /// while packing spares DataFusion a `coalesce` per column, which it evaluates as a `CASE`
    /// that copies the batch (measured: 4% of an MLP run's CPU time). Other fills are
    /// `coalesce` expressions.
    pub pack_fill: Vec<Option<ScalarValue>>,
    /// Whether rows with NaN or ±infinity in this (float) input are rejected.
    pub reject_non_finite: bool,
    /// The spec key this binding came from, for messages.
    pub key: String,
    /// Per column: whether its expression reads a sensitive column (`[privacy]`), whose
    /// values a rejected row's `_value` then never shows. Empty: none does.
    pub sensitive: Vec<bool>,
}

impl InputBinding {
    /// Whether column `j`'s expression reads a sensitive column.
    pub fn is_sensitive(&self, j: usize) -> bool {
        self.sensitive.get(j).copied().unwrap_or(false)
    }
}

impl InputBinding {
    /// Values per row: the product of the non-batch dimensions.
    pub fn per_row(&self) -> usize {
        self.columns.len()
    }

    /// The batch dimension when the model fixes it (`[1, 4]` → 1).
    pub fn fixed_batch(&self) -> Option<usize> {
        match self.shape.first() {
            Some(&d) if d > 0 => Some(d as usize),
            _ => None,
        }
    }
}

/// The result of binding: the inputs and the cast expressions to evaluate, in input order.
#[derive(Debug)]
pub struct BoundInputs {
    pub inputs: Vec<InputBinding>,
    /// One expression per column of every input, in order: `inputs[0].columns`, then
    /// `inputs[1].columns`, and so on; then the source values of fallible casts
    /// ([`InputBinding::raw_args`] points at them); then `[tokenizer]`'s text, when there is
    /// one ([`TextBinding::arg`]).
    pub exprs: Vec<Expr>,
    /// The text the tokenizer fills the token inputs from (`[tokenizer]`), which are then in
    /// no [`InputBinding`].
    pub text: Option<TextBinding>,
}

/// Why a model input cannot be fed as the spec says.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BindError {
    #[error("the model has no input {name:?} (its inputs: {inputs})")]
    NoSuchInput { name: String, inputs: String },
    #[error("model input {name:?} is a {kind}, not a tensor; batchscore feeds tensors only")]
    NotTensor { name: String, kind: String },
    #[error(
        "model input {name:?} has element type {dtype}; batchscore feeds float32, float64, int64, int32 and string"
    )]
    NotFed { name: String, dtype: ElemType },
    #[error("is {want}, but the model's input {name:?} is {dtype}")]
    DtypeDiffers {
        name: String,
        want: TensorDtype,
        dtype: ElemType,
    },
    #[error("model input {name:?} is a scalar (shape []); batchscore needs a batch dimension")]
    Scalar { name: String },
    #[error(
        "model input {name:?} has shape {shape}, one value per row, but {columns} columns are given"
    )]
    OneValue {
        name: String,
        shape: String,
        columns: usize,
    },
    #[error("model input {name:?} has shape {shape}, {per_row} values per row, but {}", given(.columns))]
    Count {
        name: String,
        shape: String,
        per_row: i64,
        columns: usize,
    },
    #[error(
        "model input {name:?} has shape {shape}, with more than one dynamic dimension after the batch; batchscore cannot tell how to lay out the columns"
    )]
    Layout { name: String, shape: String },
    #[error("is {value}, but model input {name:?} takes strings: give a string")]
    FillNotText { name: String, value: String },
    #[error("is the string {value:?}, but model input {name:?} is {dtype}: give a number")]
    FillNotNumber {
        name: String,
        value: String,
        dtype: ElemType,
    },
    #[error(
        "{sql:?} has type {source_type}, which cannot be cast to the model input {name:?} ({dtype})"
    )]
    Uncastable {
        sql: String,
        source_type: DataType,
        name: String,
        dtype: ElemType,
    },
    #[error("model inputs {first:?} and {other:?} fix different batch sizes ({a} and {b})")]
    Batches {
        first: String,
        other: String,
        a: usize,
        b: usize,
    },
}

fn given(columns: &usize) -> String {
    if *columns == 1 {
        "1 column is given".to_string()
    } else {
        format!("{columns} columns are given")
    }
}

/// Binds every model input to its expressions, collecting every problem found.
pub fn bind_inputs(
    spec: &JobSpec,
    model: &Model,
    df: &DataFrame,
) -> Result<BoundInputs, Vec<Problem>> {
    let mut binder = Binder {
        df,
        problems: Vec::new(),
        exprs: Vec::new(),
        raw_exprs: Vec::new(),
    };
    for name in spec.inputs.keys().filter(|n| model.input(n).is_none()) {
        let inputs: Vec<_> = model.inputs.iter().map(|i| i.name.as_str()).collect();
        binder.problem(
            format!("inputs.{name}"),
            BindError::NoSuchInput {
                name: name.clone(),
                inputs: inputs.join(", "),
            },
        );
    }
    let mut inputs = Vec::new();
    let tokenized = |name: &str| spec.tokenizer.is_some() && TOKEN_INPUTS.contains(&name);
    for io in model.inputs.iter().filter(|io| !tokenized(&io.name)) {
        let wanted = Wanted::of(spec, io);
        if let Some(b) = binder.input(io, wanted, inputs.len()) {
            inputs.push(b);
        }
    }
    if let Err(e) = check_fixed_batches(&inputs) {
        binder.problem("inputs", e);
    }
    // The text is bound whatever else failed, so that every problem is listed at once.
    let text = match &spec.tokenizer {
        Some(t) => bind_text_expr(&t.text, model, df)
            .map_err(|p| binder.problems.push(p))
            .ok(),
        None => None,
    };
    if !binder.problems.is_empty() {
        return Err(binder.problems);
    }
    // The raw values go after every input's expressions: point the bindings at them.
    let typed = binder.exprs.len();
    for b in &mut inputs {
        for slot in b.raw_args.iter_mut().flatten() {
            *slot += typed;
        }
    }
    let mut exprs = binder.exprs;
    exprs.extend(binder.raw_exprs);
    let text = text.map(|(mut binding, expr)| {
        exprs.push(expr);
        binding.arg = exprs.len() - 1;
        binding
    });
    Ok(BoundInputs {
        inputs,
        exprs,
        text,
    })
}

/// Binds `[tokenizer] text` and the token inputs it fills: the binding (its `arg` set when
/// the expression takes its place among the arguments) and the expression, cast to text.
fn bind_text_expr(
    sql: &str,
    model: &Model,
    df: &DataFrame,
) -> Result<(TextBinding, Expr), Problem> {
    let fills = text::token_inputs(model)?;
    let (expr, source) =
        names::parse_column(df, sql).map_err(|e| Problem::new("tokenizer.text", e.to_string()))?;
    if !castable(&source, &DataType::Utf8) {
        let message = format!("{sql:?} has type {source}, which cannot be cast to text");
        return Err(Problem::new("tokenizer.text", message));
    }
    let binding = TextBinding {
        sql: sql.to_string(),
        arg: 0,
        fills,
        sensitive: false,
    };
    Ok((binding, cast(expr, DataType::Utf8)))
}

/// A challenger model's inputs, fed the champion's features (`champion`): the model must have
/// the same inputs, in the same order, with the same element types and values per row; each
/// binding keeps the challenger's own declared shape (a fixed batch dimension, say). The
/// error lists what differs, in words.
pub fn bind_like(
    champion: &[InputBinding],
    model: &Model,
    tokenized: bool,
) -> Result<Vec<InputBinding>, String> {
    // A tokenizer fills the token inputs of every model of the job.
    let fed: Vec<&ModelIo> = model
        .inputs
        .iter()
        .filter(|io| !(tokenized && TOKEN_INPUTS.contains(&io.name.as_str())))
        .collect();
    let same_names =
        fed.len() == champion.len() && fed.iter().zip(champion).all(|(io, b)| io.name == b.name);
    if !same_names {
        let ours: Vec<String> = fed
            .iter()
            .map(|io| format!("{:?} ({})", io.name, io.kind))
            .collect();
        let theirs: Vec<String> = champion
            .iter()
            .map(|b| {
                let shape = show_shape(&b.shape);
                format!(
                    "{:?} (tensor({}) {shape}, {} values per row)",
                    b.name,
                    b.dtype,
                    b.per_row()
                )
            })
            .collect();
        return Err(format!(
            "its model's inputs are {}, the champion's are {}",
            ours.join(", "),
            theirs.join(", ")
        ));
    }
    let mut differences = Vec::new();
    let mut bound = Vec::with_capacity(champion.len());
    for (io, b) in fed.into_iter().zip(champion) {
        let (dtype, shape) = match element(io) {
            Ok(t) => t,
            Err(e) => {
                differences.push(e.to_string());
                continue;
            }
        };
        if dtype != b.dtype {
            differences.push(format!(
                "model input {:?} is {dtype}, the champion's is {}",
                io.name, b.dtype
            ));
        } else if let Err(e) = check_shape(&io.name, &shape, b.per_row()) {
            differences.push(format!("{e} (the champion's features)"));
        } else {
            bound.push(InputBinding { shape, ..b.clone() });
        }
    }
    if let Err(e) = check_fixed_batches(&bound) {
        differences.push(e.to_string());
    }
    if differences.is_empty() {
        Ok(bound)
    } else {
        Err(differences.join("; "))
    }
}

/// What the spec asks of one model input (or, without a table, the column of its name).
struct Wanted {
    key: String,
    /// Whether the spec has a table for this input (keys then name its columns).
    explicit: bool,
    columns: Vec<String>,
    fill: Option<FillValue>,
    dtype: Option<TensorDtype>,
    reject_non_finite: bool,
}

impl Wanted {
    fn of(spec: &JobSpec, io: &ModelIo) -> Self {
        let key = format!("inputs.{}", io.name);
        match spec.inputs.get(&io.name) {
            Some(s) => Self {
                key,
                explicit: true,
                columns: s.columns.clone(),
                fill: s.fill_null.clone(),
                dtype: s.dtype,
                reject_non_finite: s.on_non_finite == NonFinite::Reject,
            },
            None => Self {
                key,
                explicit: false,
                columns: vec![quote_ident(&io.name)],
                fill: None,
                dtype: None,
                reject_non_finite: false,
            },
        }
    }

    /// The key of column `i`: its own when the spec lists columns.
    fn column_key(&self, i: usize) -> String {
        if self.explicit {
            format!("{}.columns[{i}]", self.key)
        } else {
            self.key.clone()
        }
    }
}

/// The model input a column is bound for.
struct Target<'a> {
    name: &'a str,
    wanted: &'a Wanted,
    dtype: ElemType,
    fill: Fill,
    /// The input's place among those bound.
    index: usize,
}

/// The input's element type and shape, when it is a tensor batchscore feeds.
fn element(io: &ModelIo) -> Result<(ElemType, Vec<i64>), BindError> {
    let IoKind::Tensor { dtype, shape } = &io.kind else {
        return Err(BindError::NotTensor {
            name: io.name.clone(),
            kind: io.kind.to_string(),
        });
    };
    if !dtype.is_fed() {
        return Err(BindError::NotFed {
            name: io.name.clone(),
            dtype: *dtype,
        });
    }
    Ok((*dtype, shape.clone()))
}

fn fill_text(v: &FillValue) -> String {
    match v {
        FillValue::Number(n) => n.to_string(),
        FillValue::Text(t) => t.clone(),
        FillValue::Bool(b) => b.to_string(),
    }
}

/// How a fill is applied: by the packer (a value of the input's type), or as an expression.
struct Fill {
    expr: Option<Expr>,
    packed: Option<ScalarValue>,
}

/// Binds inputs one by one, collecting the expressions to evaluate and every problem.
struct Binder<'a> {
    df: &'a DataFrame,
    problems: Vec<Problem>,
    exprs: Vec<Expr>,
    /// Source values of fallible casts, passed after every input's expressions.
    raw_exprs: Vec<Expr>,
}

impl Binder<'_> {
    fn problem(&mut self, key: impl Into<String>, e: impl std::fmt::Display) {
        self.problems.push(Problem::new(key, e.to_string()));
    }

    /// The binding of model input `io` (the `index`-th bound), or `None` with its problems
    /// recorded.
    fn input(&mut self, io: &ModelIo, wanted: Wanted, index: usize) -> Option<InputBinding> {
        let (dtype, shape) = match element(io) {
            Ok(t) => t,
            Err(e) => {
                self.problem(&wanted.key, e);
                return None;
            }
        };
        if let Some(want) = wanted.dtype
            && ElemType::from(want) != dtype
        {
            let e = BindError::DtypeDiffers {
                name: io.name.clone(),
                want,
                dtype,
            };
            self.problem(format!("{}.dtype", wanted.key), e);
        }
        if let Err(e) = check_shape(&io.name, &shape, wanted.columns.len()) {
            let key = if wanted.explicit {
                format!("{}.columns", wanted.key)
            } else {
                wanted.key.clone()
            };
            self.problem(key, e);
            return None;
        }
        let target = Target {
            name: &io.name,
            fill: self.fill(io, &wanted, dtype),
            wanted: &wanted,
            dtype,
            index,
        };
        // Every column is bound, so that every problem is listed.
        let columns: Vec<_> = (0..wanted.columns.len())
            .map(|i| self.column(&target, i))
            .collect();
        let columns: Option<Vec<_>> = columns.into_iter().collect();
        let (raw_args, pack_fill) = columns?.into_iter().unzip();
        Some(InputBinding {
            name: io.name.clone(),
            dtype,
            shape,
            columns: wanted.columns,
            raw_args,
            pack_fill,
            reject_non_finite: wanted.reject_non_finite,
            key: wanted.key,
            sensitive: Vec::new(),
        })
    }

    /// The spec's `fill_null` for an input of `dtype`; a fill of the wrong kind is a problem.
    fn fill(&mut self, io: &ModelIo, wanted: &Wanted, dtype: ElemType) -> Fill {
        let target = dtype.arrow_type().unwrap_or(DataType::Utf8);
        let number = |v: f64| ScalarValue::Float64(Some(v)).cast_to(&target).ok();
        let (expr, packed) = match (&wanted.fill, dtype) {
            (None, _) => (None, None),
            (Some(FillValue::Text(t)), ElemType::String) => (Some(lit(t.clone())), None),
            (Some(v @ (FillValue::Number(_) | FillValue::Bool(_))), ElemType::String) => {
                let e = BindError::FillNotText {
                    name: io.name.clone(),
                    value: fill_text(v),
                };
                self.problem(format!("{}.fill_null", wanted.key), e);
                (None, None)
            }
            (Some(FillValue::Number(v)), _) => (Some(cast(lit(*v), target.clone())), number(*v)),
            (Some(FillValue::Bool(b)), _) => {
                let v = if *b { 1.0 } else { 0.0 };
                (Some(cast(lit(v), target.clone())), number(v))
            }
            (Some(FillValue::Text(t)), _) => {
                let e = BindError::FillNotNumber {
                    name: io.name.clone(),
                    value: t.clone(),
                    dtype,
                };
                self.problem(format!("{}.fill_null", wanted.key), e);
                (None, None)
            }
        };
        // A number whose cast fails fills nothing in the packer: its `coalesce` yields null
        // and the row is rejected, as the expression alone would.
        let packed = packed.filter(|v| !v.is_null());
        Fill { expr, packed }
    }

    /// Binds column `i` of an input: its typed expression joins `self.exprs`; returns where
    /// its raw value goes (a fallible cast) and the fill the packer applies to it. `None`
    /// (with the problem recorded) means the input cannot be bound.
    fn column(&mut self, t: &Target, i: usize) -> Option<(Option<usize>, Option<ScalarValue>)> {
        let (sql, dtype, fill) = (t.wanted.columns[i].as_str(), t.dtype, &t.fill);
        let key = t.wanted.column_key(i);
        let (expr, source) = match names::parse_column(self.df, sql) {
            Ok(x) => x,
            Err(e) => {
                self.problem(key, e);
                return None;
            }
        };
        let target = dtype.arrow_type().unwrap_or(DataType::Utf8);
        if !castable(&source, &target) {
            let e = BindError::Uncastable {
                sql: sql.to_string(),
                source_type: source,
                name: t.name.to_string(),
                dtype,
            };
            self.problem(key, e);
            return None;
        }
        // A cast that can fail on a value is a TRY_CAST with the source value passed beside
        // it, so that the scorer can reject that row (null after the cast, present before)
        // instead of failing the batch. `fill_null` fills only real nulls.
        let (typed, raw) = if source == target {
            (expr, None)
        } else if cast_can_fail(&source, &target) {
            (try_cast(expr.clone(), target), Some(expr))
        } else {
            (cast(expr, target), None)
        };
        let (typed, packed) = match (&fill.expr, &raw, &fill.packed) {
            (Some(f), Some(raw), _) => {
                match when(raw.clone().is_null(), f.clone()).otherwise(typed) {
                    Ok(e) => (e, None),
                    Err(e) => {
                        self.problem(key, e);
                        return None;
                    }
                }
            }
            (Some(_), None, Some(v)) => (typed, Some(v.clone())),
            (Some(f), None, None) => (
                datafusion::functions::core::expr_fn::coalesce(vec![typed, f.clone()]),
                None,
            ),
            (None, _, _) => (typed, None),
        };
        self.exprs
            .push(typed.alias(format!("__batchscore_in_{}_{i}", t.index)));
        let raw_arg = raw.map(|r| {
            let n = self.raw_exprs.len();
            self.raw_exprs
                .push(r.alias(format!("__batchscore_raw_{n}")));
            n
        });
        Some((raw_arg, packed))
    }
}

/// Inputs that fix their batch dimension must fix the same one.
fn check_fixed_batches(inputs: &[InputBinding]) -> Result<(), BindError> {
    let fixed: Vec<_> = inputs
        .iter()
        .filter_map(|i| i.fixed_batch().map(|b| (i.name.as_str(), b)))
        .collect();
    match fixed.first() {
        Some(&(first, a)) => match fixed.iter().find(|(_, b)| *b != a) {
            Some(&(other, b)) => Err(BindError::Batches {
                first: first.to_string(),
                other: other.to_string(),
                a,
                b,
            }),
            None => Ok(()),
        },
        None => Ok(()),
    }
}

/// Checks that `columns` values per row fit the input's shape (batch dimension first).
fn check_shape(name: &str, shape: &[i64], columns: usize) -> Result<(), BindError> {
    let name = name.to_string();
    let shown = show_shape(shape);
    match shape.len() {
        0 => Err(BindError::Scalar { name }),
        1 if columns == 1 => Ok(()),
        1 => Err(BindError::OneValue {
            name,
            shape: shown,
            columns,
        }),
        _ => {
            let rest = &shape[1..];
            if rest.iter().all(|&d| d > 0) {
                let per_row: i64 = rest.iter().product();
                if per_row as usize == columns {
                    Ok(())
                } else {
                    Err(BindError::Count {
                        name,
                        shape: shown,
                        per_row,
                        columns,
                    })
                }
            } else if rest.len() == 1 {
                // [N, ?]: any number of columns.
                Ok(())
            } else {
                Err(BindError::Layout { name, shape: shown })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_fit_or_say_why() {
        assert!(check_shape("x", &[-1, 5], 5).is_ok());
        assert!(check_shape("x", &[-1, -1], 3).is_ok());
        assert!(check_shape("x", &[-1], 1).is_ok());
        assert!(check_shape("x", &[1, 4], 4).is_ok());
        assert!(check_shape("x", &[-1, 2, 2], 4).is_ok());
        assert_eq!(
            check_shape("features", &[-1, 5], 4)
                .unwrap_err()
                .to_string(),
            "model input \"features\" has shape [?, 5], 5 values per row, but 4 columns are given"
        );
        assert_eq!(
            check_shape("f", &[-1, 2], 1).unwrap_err().to_string(),
            "model input \"f\" has shape [?, 2], 2 values per row, but 1 column is given"
        );
        assert!(check_shape("x", &[-1], 2).is_err());
        assert!(check_shape("x", &[], 1).is_err());
        assert!(matches!(
            check_shape("x", &[-1, -1, 2], 2),
            Err(BindError::Layout { .. })
        ));
    }
}
