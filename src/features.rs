//! Features: how input columns become model tensors.
//!
//! Each model input is bound to a list of SQL expressions over the (queried) input
//! ([`bind_inputs`]): DataFusion evaluates them, cast to the input's element type, and
//! [`FeaturePacker`] packs them row-major into one contiguous tensor of the model's shape. A
//! binding is checked before any row is read: the expressions parse and name existing columns,
//! their types can be cast, and their count fits the input's shape.

use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::datatypes::{
    ArrowPrimitiveType, DataType, Float32Type, Float64Type, Int32Type, Int64Type,
};
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::logical_expr::{Expr, ExprSchemable, cast, lit, try_cast, when};
use datafusion::prelude::DataFrame;
use ort::value::{DynValue, Tensor};

use crate::model::{ElemType, IoKind, Model};
use crate::spec::{FillValue, JobSpec, NonFinite, Problem, TensorDtype};

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
    /// ([`InputBinding::raw_args`] points at them).
    pub exprs: Vec<Expr>,
}

/// The Arrow type a column is cast to for a model input of `dtype`.
pub fn arrow_type_for(dtype: ElemType) -> Option<DataType> {
    Some(match dtype {
        ElemType::Float32 => DataType::Float32,
        ElemType::Float64 => DataType::Float64,
        ElemType::Int64 => DataType::Int64,
        ElemType::Int32 => DataType::Int32,
        ElemType::String => DataType::Utf8,
        _ => return None,
    })
}

/// Binds every model input to its expressions, collecting every problem found.
pub fn bind_inputs(
    spec: &JobSpec,
    model: &Model,
    df: &DataFrame,
) -> Result<BoundInputs, Vec<Problem>> {
    let mut problems = Vec::new();
    let mut inputs = Vec::new();
    let mut exprs = Vec::new();
    // Source values of fallible casts, passed after every input's expressions.
    let mut raw_exprs: Vec<Expr> = Vec::new();
    let schema = df.schema();

    for name in spec.inputs.keys() {
        if model.input(name).is_none() {
            let names: Vec<_> = model.inputs.iter().map(|i| i.name.as_str()).collect();
            problems.push(Problem::new(
                format!("inputs.{name}"),
                format!(
                    "the model has no input {name:?} (its inputs: {})",
                    names.join(", ")
                ),
            ));
        }
    }

    for io in &model.inputs {
        let (key, columns, fill, want) = match spec.inputs.get(&io.name) {
            Some(s) => (
                format!("inputs.{}", io.name),
                s.columns.clone(),
                s.fill_null.clone(),
                s.dtype,
            ),
            // No table for this input: it takes the input column of the same name.
            None => (
                format!("inputs.{}", io.name),
                vec![quote_ident(&io.name)],
                None,
                None,
            ),
        };
        let explicit = spec.inputs.contains_key(&io.name);
        let IoKind::Tensor { dtype, shape } = &io.kind else {
            problems.push(Problem::new(
                key,
                format!(
                    "model input {:?} is a {}, not a tensor; batchscore feeds tensors only",
                    io.name, io.kind
                ),
            ));
            continue;
        };
        let Some(target) = arrow_type_for(*dtype) else {
            problems.push(Problem::new(
                key,
                format!("model input {:?} has element type {dtype}; batchscore feeds float32, float64, int64, int32 and string", io.name),
            ));
            continue;
        };
        if let Some(want) = want
            && !dtype_matches(want, *dtype)
        {
            problems.push(Problem::new(
                format!("{key}.dtype"),
                format!("is {want}, but the model's input {:?} is {dtype}", io.name),
            ));
        }
        if let Err(msg) = check_shape(&io.name, shape, columns.len()) {
            let k = if explicit {
                format!("{key}.columns")
            } else {
                key.clone()
            };
            problems.push(Problem::new(k, msg));
            continue;
        }
        let fill_expr = match (&fill, *dtype) {
            (None, _) => None,
            (Some(v @ (FillValue::Number(_) | FillValue::Bool(_))), ElemType::String) => {
                problems.push(Problem::new(
                    format!("{key}.fill_null"),
                    format!(
                        "is {}, but model input {:?} takes strings: give a string",
                        fill_text(v),
                        io.name
                    ),
                ));
                None
            }
            (Some(FillValue::Text(t)), ElemType::String) => Some(lit(t.clone())),
            (Some(FillValue::Number(v)), _) => Some(cast(lit(*v), target.clone())),
            (Some(FillValue::Bool(b)), _) => {
                Some(cast(lit(if *b { 1.0 } else { 0.0 }), target.clone()))
            }
            (Some(FillValue::Text(t)), _) => {
                problems.push(Problem::new(
                    format!("{key}.fill_null"),
                    format!(
                        "is the string {t:?}, but model input {:?} is {dtype}: give a number",
                        io.name
                    ),
                ));
                None
            }
        };

        // The fill as a value of the input's type, for the packer; none where the cast of the
        // number fails (the `coalesce` then yields null, and the row is rejected as before).
        let pack_fill_value = match (&fill, *dtype) {
            (_, ElemType::String) => None,
            (Some(FillValue::Number(v)), _) => ScalarValue::Float64(Some(*v)).cast_to(&target).ok(),
            (Some(FillValue::Bool(b)), _) => ScalarValue::Float64(Some(if *b { 1.0 } else { 0.0 }))
                .cast_to(&target)
                .ok(),
            _ => None,
        }
        .filter(|v| !v.is_null());
        let mut ok = true;
        let mut raw_args: Vec<Option<usize>> = Vec::with_capacity(columns.len());
        let mut pack_fill: Vec<Option<ScalarValue>> = Vec::with_capacity(columns.len());
        for (i, sql) in columns.iter().enumerate() {
            let ckey = if explicit {
                format!("{key}.columns[{i}]")
            } else {
                key.clone()
            };
            let expr = match parse_column_expr(df, sql) {
                Ok(e) => e,
                Err(msg) => {
                    problems.push(Problem::new(ckey, msg));
                    ok = false;
                    continue;
                }
            };
            let source = match expr.get_type(schema) {
                Ok(t) => t,
                Err(e) => {
                    problems.push(Problem::new(
                        ckey,
                        format!("{sql:?}: {}", first_line(&e.to_string())),
                    ));
                    ok = false;
                    continue;
                }
            };
            if !castable(&source, &target) {
                problems.push(Problem::new(
                    ckey,
                    format!("{sql:?} has type {source}, which cannot be cast to the model input {:?} ({dtype})", io.name),
                ));
                ok = false;
                continue;
            }
            // A cast that can fail on a value is a TRY_CAST with the source value passed
            // beside it, so that the scorer can reject that row (null after the cast, present
            // before) instead of failing the batch. `fill_null` fills only real nulls.
            let (typed, raw) = if source == target {
                (expr, None)
            } else if cast_can_fail(&source, &target) {
                (try_cast(expr.clone(), target.clone()), Some(expr))
            } else {
                (cast(expr, target.clone()), None)
            };
            let (typed, fill_here) = match (&fill_expr, &raw, &pack_fill_value) {
                (Some(f), Some(raw), _) => (
                    when(raw.clone().is_null(), f.clone())
                        .otherwise(typed)
                        .map_err(|e| vec![Problem::new(ckey.clone(), e.to_string())])?,
                    None,
                ),
                (Some(_), None, Some(v)) => (typed, Some(v.clone())),
                (Some(f), None, None) => (
                    datafusion::functions::core::expr_fn::coalesce(vec![typed, f.clone()]),
                    None,
                ),
                (None, _, _) => (typed, None),
            };
            pack_fill.push(fill_here);
            exprs.push(typed.alias(format!("__batchscore_in_{}_{i}", inputs.len())));
            raw_args.push(raw.map(|r| {
                raw_exprs.push(r.alias(format!("__batchscore_raw_{}", raw_exprs.len())));
                raw_exprs.len() - 1
            }));
        }
        if ok {
            inputs.push(InputBinding {
                name: io.name.clone(),
                dtype: *dtype,
                shape: shape.clone(),
                columns,
                raw_args: std::mem::take(&mut raw_args),
                pack_fill,
                reject_non_finite: spec
                    .inputs
                    .get(&io.name)
                    .is_some_and(|s| s.on_non_finite == NonFinite::Reject),
                key,
            });
        }
    }

    let batches: Vec<_> = inputs
        .iter()
        .filter_map(|i| i.fixed_batch().map(|b| (i.name.clone(), b)))
        .collect();
    if let Some((first, b)) = batches.first()
        && let Some((other, b2)) = batches.iter().find(|(_, b2)| b2 != b)
    {
        problems.push(Problem::new(
            "inputs",
            format!(
                "model inputs {first:?} and {other:?} fix different batch sizes ({b} and {b2})"
            ),
        ));
    }

    if problems.is_empty() {
        let typed = exprs.len();
        for b in &mut inputs {
            for slot in b.raw_args.iter_mut().flatten() {
                *slot += typed;
            }
        }
        exprs.extend(raw_exprs);
        Ok(BoundInputs { inputs, exprs })
    } else {
        Err(problems)
    }
}

fn fill_text(v: &FillValue) -> String {
    match v {
        FillValue::Number(n) => n.to_string(),
        FillValue::Text(t) => t.clone(),
        FillValue::Bool(b) => b.to_string(),
    }
}

fn dtype_matches(want: TensorDtype, have: ElemType) -> bool {
    matches!(
        (want, have),
        (TensorDtype::Float32, ElemType::Float32)
            | (TensorDtype::Float64, ElemType::Float64)
            | (TensorDtype::Int64, ElemType::Int64)
            | (TensorDtype::Int32, ElemType::Int32)
            | (TensorDtype::String, ElemType::String)
    )
}

/// Checks that `columns` values per row fit the input's shape (batch dimension first).
fn check_shape(name: &str, shape: &[i64], columns: usize) -> Result<(), String> {
    let shown = show_shape(shape);
    match shape.len() {
        0 => Err(format!(
            "model input {name:?} is a scalar (shape []); batchscore needs a batch dimension"
        )),
        1 if columns == 1 => Ok(()),
        1 => Err(format!(
            "model input {name:?} has shape {shown}, one value per row, but {columns} columns are given"
        )),
        _ => {
            let rest = &shape[1..];
            if rest.iter().all(|&d| d > 0) {
                let per_row: i64 = rest.iter().product();
                if per_row as usize == columns {
                    Ok(())
                } else {
                    Err(format!(
                        "model input {name:?} has shape {shown}, {per_row} values per row, but {columns} column{} given",
                        if columns == 1 { " is" } else { "s are" }
                    ))
                }
            } else if rest.len() == 1 {
                // [N, ?]: any number of columns.
                Ok(())
            } else {
                Err(format!(
                    "model input {name:?} has shape {shown}, with more than one dynamic dimension after the batch; batchscore cannot tell how to lay out the columns"
                ))
            }
        }
    }
}

pub fn show_shape(shape: &[i64]) -> String {
    let dims: Vec<String> = shape
        .iter()
        .map(|d| {
            if *d < 0 {
                "?".to_string()
            } else {
                d.to_string()
            }
        })
        .collect();
    format!("[{}]", dims.join(", "))
}

/// Parses one `columns` entry; a plain name that is not a column gets the nearest names.
fn parse_column_expr(df: &DataFrame, sql: &str) -> Result<Expr, String> {
    match df.parse_sql_expr(sql) {
        Ok(e) => {
            // Parsing succeeds for unknown columns; resolving the type is what fails.
            if let Err(e) = e.get_type(df.schema()) {
                return Err(unknown_column_message(df.schema(), sql, &e.to_string()));
            }
            Ok(e)
        }
        Err(e) => Err(unknown_column_message(df.schema(), sql, &e.to_string())),
    }
}

fn unknown_column_message(schema: &DFSchema, sql: &str, error: &str) -> String {
    if error.contains("No field named") {
        let name = sql.trim().trim_matches('"');
        let near = nearest_columns(schema, name);
        if is_identifier(name) {
            return format!("unknown column {name:?}{near}");
        }
        return format!("{sql:?} names an unknown column{near}");
    }
    format!("{sql:?} is not a valid expression: {}", first_line(error))
}

/// `" (did you mean "x"? columns: a, b, c)"`, for messages about unknown columns.
pub fn nearest_columns(schema: &DFSchema, name: &str) -> String {
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    let best = names
        .iter()
        .map(|n| (edit_distance(&n.to_lowercase(), &name.to_lowercase()), *n))
        .filter(|(d, n)| *d <= 2.max(n.len() / 3))
        .min();
    let list = names.join(", ");
    // One column whose name holds a likely delimiter: the CSV was split on the wrong one.
    let hint = match names.as_slice() {
        [only] if only.contains([';', '|', '\t', ',']) => {
            "; the input has a single column: is [input.csv] delimiter right?"
        }
        _ => "",
    };
    match best {
        Some((_, n)) => format!(" (did you mean {n:?}? columns: {list}{hint})"),
        None => format!(" (columns: {list}{hint})"),
    }
}

/// Levenshtein distance, for "did you mean" suggestions.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

fn is_identifier(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_alphanumeric() || c == '_')
}

/// How a `columns` entry is shown in messages and `_rejected/`: a quoted identifier
/// (`"age"`, as inputs bound by default carry) shows as the bare name.
pub fn display_sql(sql: &str) -> &str {
    match sql.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
        Some(name) if !name.contains('"') => name,
        _ => sql,
    }
}

/// Quotes a column name for SQL so that names with capitals or odd characters work.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}

/// Whether batchscore casts `from` to `to` (types only; values may still fail at run time,
/// e.g. a string that is not a number).
pub fn castable(from: &DataType, to: &DataType) -> bool {
    let from = match from {
        DataType::Dictionary(_, v) => v.as_ref(),
        other => other,
    };
    let scalar_source = from.is_numeric()
        || matches!(
            from,
            DataType::Boolean
                | DataType::Utf8
                | DataType::LargeUtf8
                | DataType::Utf8View
                | DataType::Null
                | DataType::Decimal32(..)
                | DataType::Decimal64(..)
                | DataType::Decimal128(..)
                | DataType::Decimal256(..)
        );
    scalar_source && datafusion::arrow::compute::can_cast_types(from, to)
}

/// Whether casting `from` to `to` can fail on a value: text to anything else, and into an
/// integer type from a float, a decimal or a wider integer. Other casts (int to float,
/// float64 to float32, bool to number) always succeed and need no per-row check.
pub fn cast_can_fail(from: &DataType, to: &DataType) -> bool {
    let from = match from {
        DataType::Dictionary(_, v) => v.as_ref(),
        other => other,
    };
    let text = matches!(
        from,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
    );
    let bits = |t: &DataType| match t {
        DataType::Int8 | DataType::UInt8 => 8,
        DataType::Int16 | DataType::UInt16 => 16,
        DataType::Int32 | DataType::UInt32 => 32,
        DataType::Int64 => 63,
        _ => 64,
    };
    match to {
        DataType::Utf8 => false,
        DataType::Int32 | DataType::Int64 => {
            let fractional = from.is_floating()
                || matches!(
                    from,
                    DataType::Decimal32(..)
                        | DataType::Decimal64(..)
                        | DataType::Decimal128(..)
                        | DataType::Decimal256(..)
                );
            text || fractional || from.is_integer() && bits(from) > bits(to)
        }
        _ => text,
    }
}

/// Packs evaluated columns into one model input tensor.
#[derive(Debug)]
pub struct FeaturePacker<'a> {
    pub binding: &'a InputBinding,
    /// One array per column, already of the input's Arrow type.
    pub columns: &'a [ArrayRef],
}

impl FeaturePacker<'_> {
    /// Packs the rows `rows` (indices into the columns) row-major into a tensor of shape
    /// `[rows.len(), ...]`.
    pub fn pack(&self, rows: &[usize]) -> Result<DynValue, String> {
        let n = rows.len();
        let mut shape: Vec<i64> = Vec::with_capacity(self.binding.shape.len().max(1));
        shape.push(n as i64);
        match self.binding.shape.len() {
            0 | 1 => {}
            2 => shape.push(self.columns.len() as i64),
            _ => shape.extend_from_slice(&self.binding.shape[1..]),
        }
        let result = match self.binding.dtype {
            ElemType::Float32 => self.pack_primitive::<Float32Type>(rows, shape),
            ElemType::Float64 => self.pack_primitive::<Float64Type>(rows, shape),
            ElemType::Int64 => self.pack_primitive::<Int64Type>(rows, shape),
            ElemType::Int32 => self.pack_primitive::<Int32Type>(rows, shape),
            ElemType::String => {
                let f = self.columns.len();
                let cols: Vec<_> = self.columns.iter().map(|c| c.as_string::<i32>()).collect();
                let mut data: Vec<String> = vec![String::new(); n * f];
                for (j, col) in cols.iter().enumerate() {
                    for (k, &r) in rows.iter().enumerate() {
                        data[k * f + j] = col.value(r).to_string();
                    }
                }
                Tensor::from_string_array((shape, data.as_slice())).map(|t| t.into_dyn())
            }
            other => {
                return Err(format!(
                    "model input {:?}: element type {other} is not supported",
                    self.binding.name
                ));
            }
        };
        result.map_err(|e| {
            format!(
                "model input {:?}: cannot build the tensor: {e}",
                self.binding.name
            )
        })
    }

    fn pack_primitive<T>(&self, rows: &[usize], shape: Vec<i64>) -> ort::Result<DynValue>
    where
        T: ArrowPrimitiveType,
        T::Native:
            ort::value::PrimitiveTensorElementType + std::fmt::Debug + Clone + Default + 'static,
    {
        let f = self.columns.len();
        let n = rows.len();
        let mut data: Vec<T::Native> = vec![T::Native::default(); n * f];
        for (j, col) in self.columns.iter().enumerate() {
            let values = col.as_primitive::<T>().values();
            for (k, &r) in rows.iter().enumerate() {
                data[k * f + j] = values[r];
            }
            let fill = self.binding.pack_fill.get(j).and_then(Option::as_ref);
            if let (Some(nulls), Some(fill)) = (col.logical_nulls(), fill) {
                // A scalar of the input's type (bind_inputs casts it), never null.
                let fill = fill
                    .to_array()
                    .ok()
                    .and_then(|a| {
                        let a = a.as_primitive_opt::<T>()?;
                        a.is_valid(0).then(|| a.value(0))
                    })
                    .ok_or_else(|| {
                        ort::Error::new(format!("fill_null {fill} is not a {}", T::DATA_TYPE))
                    })?;
                for (k, &r) in rows.iter().enumerate() {
                    if nulls.is_null(r) {
                        data[k * f + j] = fill;
                    }
                }
            }
        }
        Tensor::from_array((shape, data)).map(|t| t.into_dyn())
    }
}

/// Arrays evaluated by DataFusion may be scalars (a literal in `columns`); make them arrays.
pub fn to_arrays(
    args: Vec<datafusion::logical_expr::ColumnarValue>,
    rows: usize,
) -> datafusion::common::Result<Vec<ArrayRef>> {
    args.into_iter().map(|a| a.into_array(rows)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn shapes_fit_or_say_why() {
        assert!(check_shape("x", &[-1, 5], 5).is_ok());
        assert!(check_shape("x", &[-1, -1], 3).is_ok());
        assert!(check_shape("x", &[-1], 1).is_ok());
        assert!(check_shape("x", &[1, 4], 4).is_ok());
        assert!(check_shape("x", &[-1, 2, 2], 4).is_ok());
        assert_eq!(
            check_shape("features", &[-1, 5], 4).unwrap_err(),
            "model input \"features\" has shape [?, 5], 5 values per row, but 4 columns are given"
        );
        assert!(check_shape("x", &[-1], 2).is_err());
        assert!(check_shape("x", &[], 1).is_err());
    }

    #[test]
    fn casts_that_batchscore_allows() {
        assert!(castable(&DataType::Int16, &DataType::Float32));
        assert!(castable(&DataType::Decimal128(8, 2), &DataType::Float32));
        assert!(castable(&DataType::Boolean, &DataType::Float64));
        assert!(castable(&DataType::Utf8View, &DataType::Utf8));
        assert!(castable(&DataType::Int64, &DataType::Utf8));
        assert!(castable(
            &DataType::Dictionary(Box::new(DataType::UInt16), Box::new(DataType::Utf8)),
            &DataType::Utf8
        ));
        assert!(!castable(&DataType::Date32, &DataType::Float32));
        assert!(!castable(
            &DataType::List(Arc::new(datafusion::arrow::datatypes::Field::new(
                "i",
                DataType::Float32,
                true
            ))),
            &DataType::Float32
        ));
    }

    #[test]
    fn quoted_identifiers_show_bare() {
        assert_eq!(display_sql(&quote_ident("age")), "age");
        assert_eq!(display_sql("ln(1 + x)"), "ln(1 + x)");
        assert_eq!(display_sql(r#""a""b""#), r#""a""b""#);
    }

    #[test]
    fn only_casts_that_can_fail_are_checked_per_row() {
        use DataType::*;
        assert!(cast_can_fail(&Utf8, &Float32));
        assert!(cast_can_fail(&Utf8View, &Int64));
        assert!(cast_can_fail(&Int64, &Int32));
        assert!(cast_can_fail(&UInt64, &Int64));
        assert!(cast_can_fail(&Float64, &Int64));
        assert!(cast_can_fail(&Decimal128(8, 2), &Int32));
        assert!(!cast_can_fail(&Float64, &Float32));
        assert!(!cast_can_fail(&Int64, &Float32));
        assert!(!cast_can_fail(&Int16, &Int64));
        assert!(!cast_can_fail(&UInt32, &Int64));
        assert!(!cast_can_fail(&Boolean, &Int32));
        assert!(!cast_can_fail(&Int64, &Utf8));
    }

    #[test]
    fn nearest_names() {
        assert_eq!(edit_distance("tenure", "tenrue"), 2);
        assert_eq!(edit_distance("", "abc"), 3);
    }

    fn binding(dtype: ElemType, shape: Vec<i64>, columns: &[&str]) -> InputBinding {
        InputBinding {
            name: "x".into(),
            dtype,
            shape,
            columns: columns.iter().map(|c| c.to_string()).collect(),
            raw_args: vec![None; columns.len()],
            pack_fill: vec![None; columns.len()],
            reject_non_finite: false,
            key: "inputs.x".into(),
        }
    }

    #[test]
    fn packs_selected_rows_row_major_into_a_real_tensor() {
        use datafusion::arrow::array::Float32Array;
        crate::model::init_runtime(None).unwrap();
        let b = binding(ElemType::Float32, vec![-1, 2], &["a", "b"]);
        let cols: Vec<ArrayRef> = vec![
            Arc::new(Float32Array::from(vec![1.0, 2.0, 3.0])),
            Arc::new(Float32Array::from(vec![10.0, 20.0, 30.0])),
        ];
        let t = FeaturePacker {
            binding: &b,
            columns: &cols,
        }
        .pack(&[2, 0])
        .unwrap();
        let (shape, data) = t.try_extract_tensor::<f32>().unwrap();
        assert_eq!(&shape[..], &[2, 2]);
        assert_eq!(data, &[3.0, 30.0, 1.0, 10.0]);
        assert_eq!(b.per_row(), 2);
        assert_eq!(b.fixed_batch(), None);
        assert_eq!(
            binding(ElemType::Float32, vec![1, 4], &["a"]).fixed_batch(),
            Some(1)
        );
    }

    #[test]
    fn fills_nulls_while_packing_only_in_columns_that_have_a_fill() {
        use datafusion::arrow::array::{Float32Array, Int64Array};
        crate::model::init_runtime(None).unwrap();
        let mut b = binding(ElemType::Float32, vec![-1, 2], &["a", "b"]);
        b.pack_fill = vec![Some(ScalarValue::Float32(Some(-1.5))), None];
        // The slot under a null holds some value (here 9); the fill must replace it.
        let a = Float32Array::new(
            vec![1.0, 9.0, 3.0].into(),
            Some(vec![true, false, true].into()),
        );
        let cols: Vec<ArrayRef> = vec![
            Arc::new(a),
            Arc::new(Float32Array::from(vec![10.0, 20.0, 30.0])),
        ];
        let t = FeaturePacker {
            binding: &b,
            columns: &cols,
        }
        .pack(&[1, 2, 1])
        .unwrap();
        let (_, data) = t.try_extract_tensor::<f32>().unwrap();
        assert_eq!(data, &[-1.5, 20.0, 3.0, 30.0, -1.5, 20.0]);

        let mut b = binding(ElemType::Int64, vec![-1], &["n"]);
        b.pack_fill = vec![Some(ScalarValue::Int64(Some(7)))];
        let cols: Vec<ArrayRef> = vec![Arc::new(Int64Array::from(vec![Some(1), None]))];
        let t = FeaturePacker {
            binding: &b,
            columns: &cols,
        }
        .pack(&[0, 1])
        .unwrap();
        assert_eq!(t.try_extract_tensor::<i64>().unwrap().1, &[1, 7]);
    }

    #[test]
    fn packs_strings_and_rank1_inputs() {
        use datafusion::arrow::array::{Int64Array, StringArray};
        crate::model::init_runtime(None).unwrap();
        let b = binding(ElemType::String, vec![-1, 1], &["plan"]);
        let cols: Vec<ArrayRef> = vec![Arc::new(StringArray::from(vec!["basic", "pro", "plus"]))];
        let t = FeaturePacker {
            binding: &b,
            columns: &cols,
        }
        .pack(&[1, 2])
        .unwrap();
        let (shape, data) = t.try_extract_strings().unwrap();
        assert_eq!(&shape[..], &[2, 1]);
        assert_eq!(data, ["pro", "plus"]);

        let b = binding(ElemType::Int64, vec![-1], &["a"]);
        let cols: Vec<ArrayRef> = vec![Arc::new(Int64Array::from(vec![7, 8, 9]))];
        let t = FeaturePacker {
            binding: &b,
            columns: &cols,
        }
        .pack(&[0, 1, 2])
        .unwrap();
        let (shape, data) = t.try_extract_tensor::<i64>().unwrap();
        assert_eq!(&shape[..], &[3]);
        assert_eq!(data, &[7, 8, 9]);
    }
}
