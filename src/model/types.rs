//! What a model's inputs and outputs hold, and the one map between the element types of
//! ONNX Runtime, of the job spec (`dtype`) and of Arrow columns.

use datafusion::arrow::datatypes::DataType;
use ort::value::{TensorElementType, ValueType};
use serde::{Deserialize, Serialize};

use crate::spec::TensorDtype;

/// Element types of tensors, as batchscore names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ElemType {
    Float32,
    Float64,
    Int64,
    Int32,
    Bool,
    String,
    /// Any other ONNX element type; the name is kept for messages.
    #[serde(untagged)]
    Other(&'static str),
}

impl ElemType {
    pub(super) fn from_ort(t: TensorElementType) -> Self {
        match t {
            TensorElementType::Float32 => Self::Float32,
            TensorElementType::Float64 => Self::Float64,
            TensorElementType::Int64 => Self::Int64,
            TensorElementType::Int32 => Self::Int32,
            TensorElementType::Bool => Self::Bool,
            TensorElementType::String => Self::String,
            TensorElementType::Float16 => Self::Other("float16"),
            TensorElementType::Bfloat16 => Self::Other("bfloat16"),
            TensorElementType::Uint8 => Self::Other("uint8"),
            TensorElementType::Int8 => Self::Other("int8"),
            TensorElementType::Uint16 => Self::Other("uint16"),
            TensorElementType::Int16 => Self::Other("int16"),
            TensorElementType::Uint32 => Self::Other("uint32"),
            TensorElementType::Uint64 => Self::Other("uint64"),
            _ => Self::Other("an unsupported element type"),
        }
    }

    /// The Arrow type of a column of these elements; `None` for types batchscore neither
    /// feeds nor writes.
    pub fn arrow_type(self) -> Option<DataType> {
        Some(match self {
            Self::Float32 => DataType::Float32,
            Self::Float64 => DataType::Float64,
            Self::Int64 => DataType::Int64,
            Self::Int32 => DataType::Int32,
            Self::Bool => DataType::Boolean,
            Self::String => DataType::Utf8,
            Self::Other(_) => return None,
        })
    }

    /// Whether batchscore packs columns into a model input of this type.
    pub fn is_fed(self) -> bool {
        matches!(
            self,
            Self::Float32 | Self::Float64 | Self::Int64 | Self::Int32 | Self::String
        )
    }

    /// Whether this is a number type (a tree ensemble's features can be sorted by it).
    pub fn is_numeric(self) -> bool {
        matches!(
            self,
            Self::Float32 | Self::Float64 | Self::Int64 | Self::Int32
        )
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Float32 => "float32",
            Self::Float64 => "float64",
            Self::Int64 => "int64",
            Self::Int32 => "int32",
            Self::Bool => "bool",
            Self::String => "string",
            Self::Other(s) => s,
        }
    }
}

impl From<TensorDtype> for ElemType {
    fn from(d: TensorDtype) -> Self {
        match d {
            TensorDtype::Float32 => Self::Float32,
            TensorDtype::Float64 => Self::Float64,
            TensorDtype::Int64 => Self::Int64,
            TensorDtype::Int32 => Self::Int32,
            TensorDtype::String => Self::String,
        }
    }
}

impl<'de> Deserialize<'de> for ElemType {
    /// The names [`ElemType::name`] gives, read back (a name it never gives reads as an
    /// unsupported type), so that `_metrics.json` reads back as the type it was written from.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        const OTHERS: [&str; 8] = [
            "float16", "bfloat16", "uint8", "int8", "uint16", "int16", "uint32", "uint64",
        ];
        let name = String::deserialize(d)?;
        Ok(match name.as_str() {
            "float32" => Self::Float32,
            "float64" => Self::Float64,
            "int64" => Self::Int64,
            "int32" => Self::Int32,
            "bool" => Self::Bool,
            "string" => Self::String,
            other => Self::Other(
                OTHERS
                    .into_iter()
                    .find(|o| *o == other)
                    .unwrap_or("an unsupported element type"),
            ),
        })
    }
}

impl std::fmt::Display for ElemType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What a model input or output holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum IoKind {
    /// A tensor; `-1` marks a dynamic dimension.
    Tensor { dtype: ElemType, shape: Vec<i64> },
    /// A sequence of maps, one map per row (the ZipMap output of scikit-learn classifiers).
    SequenceOfMaps { key: ElemType, value: ElemType },
    /// Anything else (optional, nested sequences); described for messages only.
    Other { description: String },
}

impl IoKind {
    pub(super) fn from_ort(t: &ValueType) -> Self {
        match t {
            ValueType::Tensor { ty, shape, .. } => Self::Tensor {
                dtype: ElemType::from_ort(*ty),
                shape: shape.iter().copied().collect(),
            },
            ValueType::Sequence(inner) => match inner.as_ref() {
                ValueType::Map { key, value } => Self::SequenceOfMaps {
                    key: ElemType::from_ort(*key),
                    value: ElemType::from_ort(*value),
                },
                other => Self::Other {
                    description: format!("sequence of {other}"),
                },
            },
            other => Self::Other {
                description: other.to_string(),
            },
        }
    }
}

impl std::fmt::Display for IoKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Tensor { dtype, shape } => write!(f, "tensor({dtype}) {}", show_shape(shape)),
            Self::SequenceOfMaps { key, value } => write!(f, "seq(map({key}, {value}))"),
            Self::Other { description } => f.write_str(description),
        }
    }
}

/// A named model input or output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelIo {
    pub name: String,
    #[serde(flatten)]
    pub kind: IoKind,
}

/// A shape as messages show it: `[?, 5]`, with `?` for a dynamic dimension.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spec_dtype_maps_to_a_fed_element_type_and_an_arrow_type() {
        for (d, arrow) in [
            (TensorDtype::Float32, DataType::Float32),
            (TensorDtype::Float64, DataType::Float64),
            (TensorDtype::Int64, DataType::Int64),
            (TensorDtype::Int32, DataType::Int32),
            (TensorDtype::String, DataType::Utf8),
        ] {
            let e = ElemType::from(d);
            assert_eq!(e.name(), d.to_string());
            assert!(e.is_fed());
            assert_eq!(e.arrow_type(), Some(arrow));
        }
        assert!(!ElemType::Bool.is_fed());
        assert_eq!(ElemType::Bool.arrow_type(), Some(DataType::Boolean));
        assert_eq!(ElemType::Other("float16").arrow_type(), None);
        assert_eq!(show_shape(&[-1, 5]), "[?, 5]");
    }
}
