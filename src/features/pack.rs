//! Packing evaluated feature columns row-major into one contiguous tensor per model input.

use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::datatypes::{
    ArrowPrimitiveType, Float32Type, Float64Type, Int32Type, Int64Type,
};
use ort::value::{DynValue, Tensor};

use super::InputBinding;
use crate::model::ElemType;

/// Why a tensor could not be built.
#[derive(Debug, thiserror::Error)]
pub enum PackError {
    #[error("model input {input:?}: element type {dtype} is not supported")]
    Unsupported { input: String, dtype: ElemType },
    #[error("model input {input:?}: cannot build the tensor: {source}")]
    Tensor { input: String, source: ort::Error },
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
    pub fn pack(&self, rows: &[usize]) -> Result<DynValue, PackError> {
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
                return Err(PackError::Unsupported {
                    input: self.binding.name.clone(),
                    dtype: other,
                });
            }
        };
        result.map_err(|source| PackError::Tensor {
            input: self.binding.name.clone(),
            source,
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
    use std::sync::Arc;

    use datafusion::common::ScalarValue;

    use super::*;

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
            sensitive: Vec::new(),
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
