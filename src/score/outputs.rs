//! Output columns: which model output (or which element of it) each `[outputs]` column reads,
//! checked against the model before any work.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field};
use indexmap::IndexMap;

use crate::diagnostics::Problem;
use crate::model::{ElemType, IoKind, Model, ModelIo, show_shape};
use crate::spec::{OutputFormat, OutputRef, OutputRefError};

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
        // Bindings hold only element types batchscore writes, each of which has an Arrow type.
        let item = self.elem.arrow_type().unwrap_or(DataType::Utf8);
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
}

fn plural(n: &usize) -> &'static str {
    if *n == 1 { "" } else { "s" }
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

/// One `[outputs]` entry: `column = "output"` or `"output[i]"`.
fn bind_column(
    model: &Model,
    column: String,
    expr: &str,
    format: OutputFormat,
) -> Result<OutputBinding, OutputBindError> {
    let r = OutputRef::parse(expr)?;
    let Some(io) = model.output(&r.output) else {
        let names: Vec<_> = model.outputs.iter().map(|o| o.name.as_str()).collect();
        return Err(OutputBindError::NoSuchOutput {
            name: r.output,
            outputs: names.join(", "),
        });
    };
    let b = bind_output(io, column, r.index)?;
    if b.is_list && format == OutputFormat::Csv {
        return Err(OutputBindError::ListInCsv {
            column: b.column,
            output: b.output,
        });
    }
    Ok(b)
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
            })
        }
        _ => Err(OutputBindError::Unreadable {
            name: io.name.clone(),
            kind: io.kind.to_string(),
        }),
    }
}
