//! Output columns: which model output (or which element of it) each `[outputs]` column reads,
//! checked against the model before any work.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field};
use indexmap::IndexMap;

use crate::diagnostics::Problem;
use crate::model::{ElemType, IoKind, Model, ModelIo, show_shape};
use crate::spec::{OutputColumn, OutputFormat, OutputRef, OutputRefError, Transform};

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
    /// Pooling, normalisation and softmax applied to the output's values.
    pub transform: Transform,
    /// For a pooled column: the vector's length when the model declares it (the column is
    /// then a fixed-size list).
    pub pooled_width: Option<usize>,
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
        // Bindings hold only element types batchscore writes, each of which has an Arrow type.
        let item = self.elem.arrow_type().unwrap_or(DataType::Utf8);
        if let Some(width) = self.pooled_width {
            let field = Arc::new(Field::new("item", item, true));
            return DataType::FixedSizeList(field, width as i32);
        }
        if self.is_list {
            DataType::List(Arc::new(Field::new("item", item, true)))
        } else {
            item
        }
    }
}

/// Why an `[outputs]` column cannot be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OutputBindError {
    #[error(transparent)]
    Ref(#[from] OutputRefError),
    #[error("the model has no output {name:?} (its outputs: {outputs})")]
    NoSuchOutput { name: String, outputs: String },
    #[error("model output {name:?} has element type {dtype}, which batchscore cannot write")]
    Unwritable { name: String, dtype: ElemType },
    #[error(
        "model output {name:?} has {per_row} value{} per row (shape {shape}); index {index} is out of range",
        plural(.per_row)
    )]
    IndexOutOfRange {
        name: String,
        per_row: usize,
        shape: String,
        index: usize,
    },
    #[error("model output {name:?} is {kind}, which batchscore cannot read")]
    Unreadable { name: String, kind: String },
    #[error(
        "column {column:?} holds a whole vector per row, which CSV cannot hold: pick one element ({output}[0]) or write Parquet"
    )]
    ListInCsv { column: String, output: String },
    #[error(
        "model output {name:?} has shape {shape}; pool = \"{pool}\" needs hidden states [batch, sequence, hidden] of float32"
    )]
    NotPoolable {
        name: String,
        shape: String,
        pool: crate::spec::Pool,
    },
    #[error(
        "{what} makes a vector per row; take no element of it ({output}, not {output}[{index}])"
    )]
    IndexOfVector {
        what: &'static str,
        output: String,
        index: usize,
    },
    #[error(
        "model output {name:?} is {kind}; {what} applies to a float32 tensor of shape [batch, values]"
    )]
    NotScores {
        name: String,
        kind: String,
        what: &'static str,
    },
}

fn plural(n: &usize) -> &'static str {
    if *n == 1 { "" } else { "s" }
}

/// Binds the job's `[outputs]` (or every model output) to the model, collecting problems.
pub fn bind_outputs(
    outputs: Option<&IndexMap<String, OutputColumn>>,
    format: OutputFormat,
    model: &Model,
) -> Result<Vec<OutputBinding>, Vec<Problem>> {
    let wanted: Vec<(String, String, OutputColumn)> = match outputs {
        Some(map) => map
            .iter()
            .map(|(col, expr)| (format!("outputs.{col}"), col.clone(), expr.clone()))
            .collect(),
        None => model
            .outputs
            .iter()
            .map(|o| ("outputs".to_string(), o.name.clone(), o.name.clone().into()))
            .collect(),
    };
    let mut problems = Vec::new();
    let mut bindings = Vec::new();
    for (key, column, expr) in wanted {
        match bind_column(model, column, &expr, format) {
            Ok(b) => bindings.push(b),
            Err(e) => problems.push(Problem::new(key, e.to_string())),
        }
    }
    if problems.is_empty() {
        Ok(bindings)
    } else {
        Err(problems)
    }
}

/// One `[outputs]` entry: `column = "output"`, `"output[i]"`, or a table with a transform.
fn bind_column(
    model: &Model,
    column: String,
    expr: &OutputColumn,
    format: OutputFormat,
) -> Result<OutputBinding, OutputBindError> {
    let r = OutputRef::parse(expr.reference())?;
    let Some(io) = model.output(&r.output) else {
        let names: Vec<_> = model.outputs.iter().map(|o| o.name.as_str()).collect();
        return Err(OutputBindError::NoSuchOutput {
            name: r.output,
            outputs: names.join(", "),
        });
    };
    let mut b = bind_output(io, column, r.index)?;
    transform(&mut b, io, expr.transform())?;
    if b.is_list && format == OutputFormat::Csv {
        return Err(OutputBindError::ListInCsv {
            column: b.column,
            output: b.output,
        });
    }
    Ok(b)
}

/// Checks that `t` applies to the output `b` reads, and sets it: pooling needs hidden
/// states `[batch, sequence, hidden]` and makes a vector per row; normalisation and softmax
/// need float32 scores `[batch, values]` (or pooled ones).
fn transform(b: &mut OutputBinding, io: &ModelIo, t: Transform) -> Result<(), OutputBindError> {
    if t.is_identity() {
        return Ok(());
    }
    let shape = match &io.kind {
        IoKind::Tensor { dtype, shape } if *dtype == ElemType::Float32 => shape.as_slice(),
        _ => &[],
    };
    let what = if t.softmax { "softmax" } else { "normalize" };
    match t.pool {
        Some(pool) if shape.len() != 3 => Err(OutputBindError::NotPoolable {
            name: io.name.clone(),
            shape: show_shape(shape),
            pool,
        }),
        _ if shape.len() < 2 => Err(OutputBindError::NotScores {
            name: io.name.clone(),
            kind: io.kind.to_string(),
            what,
        }),
        _ if b.index.is_some() && (t.pool.is_some() || t.normalize) => {
            Err(OutputBindError::IndexOfVector {
                what: if t.pool.is_some() {
                    "pool"
                } else {
                    "normalize"
                },
                output: b.output.clone(),
                index: b.index.unwrap_or(0),
            })
        }
        Some(_) => {
            b.transform = t;
            b.is_list = true;
            b.pooled_width = usize::try_from(shape[2]).ok().filter(|&w| w > 0);
            Ok(())
        }
        None => {
            b.transform = t;
            Ok(())
        }
    }
}

fn bind_output(
    io: &ModelIo,
    column: String,
    index: Option<usize>,
) -> Result<OutputBinding, OutputBindError> {
    match &io.kind {
        IoKind::Tensor { dtype, shape } => {
            if dtype.arrow_type().is_none() {
                return Err(OutputBindError::Unwritable {
                    name: io.name.clone(),
                    dtype: *dtype,
                });
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
            if let (Some(i), Some(n)) = (index, per_row)
                && i >= n
            {
                return Err(OutputBindError::IndexOutOfRange {
                    name: io.name.clone(),
                    per_row: n,
                    shape: show_shape(shape),
                    index: i,
                });
            }
            Ok(OutputBinding {
                column,
                output: io.name.clone(),
                index,
                source: OutputSource::Tensor { per_row },
                is_list: per_row != Some(1) && index.is_none(),
                elem: *dtype,
                transform: Transform::default(),
                pooled_width: None,
            })
        }
        IoKind::SequenceOfMaps { key, value }
            if matches!(key, ElemType::Int64 | ElemType::String)
                && matches!(value, ElemType::Float32 | ElemType::Float64) =>
        {
            Ok(OutputBinding {
                column,
                output: io.name.clone(),
                index,
                source: OutputSource::SequenceOfMaps { key: *key },
                is_list: index.is_none(),
                elem: *value,
                transform: Transform::default(),
                pooled_width: None,
            })
        }
        _ => Err(OutputBindError::Unreadable {
            name: io.name.clone(),
            kind: io.kind.to_string(),
        }),
    }
}
