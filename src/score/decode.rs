//! Decoding ONNX Runtime's outputs into Arrow columns: a tensor's values per row (one
//! element or the whole vector as a list), or a ZipMap's maps read in key order.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, BooleanArray, FixedSizeListArray, Float32Array, Float64Array, Int32Array,
    Int64Array, ListArray, StringArray,
};
use datafusion::arrow::buffer::OffsetBuffer;
use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::arrow::error::ArrowError;
use ort::value::{DynMapValueType, DynValue};

use super::outputs::{OutputBinding, OutputSource};
use super::pool;
use crate::model::ElemType;

/// An output ONNX Runtime returned that does not fit its column.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("ONNX Runtime returned no output {output:?}")]
    Missing { output: String },
    #[error("model output {output:?}: {source}")]
    Ort { output: String, source: ort::Error },
    #[error("model output {output:?}: element type {dtype} is not supported")]
    Unsupported { output: String, dtype: ElemType },
    #[error("model output {output:?} has {len} values for {rows} rows")]
    Count {
        output: String,
        len: usize,
        rows: usize,
    },
    #[error("model output {output:?} has {maps} maps for {rows} rows")]
    Maps {
        output: String,
        maps: usize,
        rows: usize,
    },
    #[error("model output {output:?}: maps of different sizes")]
    MapSizes { output: String },
    #[error("model output {output:?} has {per_row} values per row; index {index} is out of range")]
    Index {
        output: String,
        per_row: usize,
        index: usize,
    },
    #[error(
        "model output {output:?} has {per_row} values per row, not one: pick one with {output}[i]"
    )]
    NotScalar { output: String, per_row: usize },
    #[error("model output {output:?}: {source}")]
    Arrow { output: String, source: ArrowError },
    #[error("model output {output:?} has shape {shape}, which cannot be pooled per row")]
    NotPooled { output: String, shape: String },
}

/// One output column from an ONNX Runtime output over `rows` rows, keeping the first `keep`
/// (the rest pad a fixed batch). `lengths` are the rows' token counts, for pooling.
pub(super) fn decode_output(
    b: &OutputBinding,
    value: &DynValue,
    rows: usize,
    keep: usize,
    lengths: Option<&[usize]>,
) -> Result<ArrayRef, DecodeError> {
    let err = |source: ort::Error| DecodeError::Ort {
        output: b.output.clone(),
        source,
    };
    if !b.transform.is_identity() {
        return transformed(b, value, rows, keep, lengths);
    }
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
                other => Err(DecodeError::Unsupported {
                    output: b.output.clone(),
                    dtype: other,
                }),
            }
        }
        OutputSource::SequenceOfMaps { key } => decode_maps(b, value, key, rows, keep),
    }
}

/// A ZipMap's maps (one per row) read as vectors in key order.
fn decode_maps(
    b: &OutputBinding,
    value: &DynValue,
    key: ElemType,
    rows: usize,
    keep: usize,
) -> Result<ArrayRef, DecodeError> {
    let err = |source: ort::Error| DecodeError::Ort {
        output: b.output.clone(),
        source,
    };
    let maps = value
        .try_extract_sequence::<DynMapValueType>()
        .map_err(err)?;
    if maps.len() != rows {
        return Err(DecodeError::Maps {
            output: b.output.clone(),
            maps: maps.len(),
            rows,
        });
    }
    let mut flat: Vec<f64> = Vec::new();
    let mut per_row = None;
    for m in maps.iter().take(keep) {
        let mut values: Vec<f64> = match key {
            ElemType::Int64 => sorted_values::<i64>(m, b.elem).map_err(err)?,
            _ => sorted_values::<String>(m, b.elem).map_err(err)?,
        };
        if *per_row.get_or_insert(values.len()) != values.len() {
            return Err(DecodeError::MapSizes {
                output: b.output.clone(),
            });
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

/// A float32 output pooled, normalised or put through softmax (see [`super::pool`]).
fn transformed(
    b: &OutputBinding,
    value: &DynValue,
    rows: usize,
    keep: usize,
    lengths: Option<&[usize]>,
) -> Result<ArrayRef, DecodeError> {
    let (shape, data) = value
        .try_extract_tensor::<f32>()
        .map_err(|source| DecodeError::Ort {
            output: b.output.clone(),
            source,
        })?;
    let t = b.transform;
    let (mut values, width) = match (t.pool, &shape[..], lengths) {
        (Some(how), &[n, seq, hidden], Some(lengths))
            if n as usize == rows && lengths.len() >= keep =>
        {
            let (seq, hidden) = (seq as usize, hidden as usize);
            (pool::pool(data, (seq, hidden), lengths, keep, how), hidden)
        }
        (Some(_), _, _) => {
            return Err(DecodeError::NotPooled {
                output: b.output.clone(),
                shape: format!("{:?}", &shape[..]),
            });
        }
        (None, ..) => {
            let per_row = per_row_of(b, data.len(), rows)?;
            (data[..keep * per_row].to_vec(), per_row)
        }
    };
    if t.softmax {
        pool::softmax(&mut values, width);
    }
    if t.normalize {
        pool::normalize(&mut values, width);
    }
    let Some(fixed) = b.pooled_width else {
        return from_rows::<f32, Float32Array>(b, &values, width, keep);
    };
    let arrow = |source| DecodeError::Arrow {
        output: b.output.clone(),
        source,
    };
    let field = Arc::new(Field::new("item", DataType::Float32, true));
    let width = i32::try_from(fixed).map_err(|e| arrow(ArrowError::ExternalError(Box::new(e))))?;
    FixedSizeListArray::try_new(field, width, Arc::new(Float32Array::from(values)), None)
        .map(|a| Arc::new(a) as ArrayRef)
        .map_err(arrow)
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

fn per_row_of(b: &OutputBinding, len: usize, rows: usize) -> Result<usize, DecodeError> {
    if rows == 0 || !len.is_multiple_of(rows) {
        return Err(DecodeError::Count {
            output: b.output.clone(),
            len,
            rows,
        });
    }
    Ok(len / rows)
}

/// Picks, for each of the first `keep` rows, the element `index` or the whole row.
fn select<T: Clone>(
    b: &OutputBinding,
    data: &[T],
    per_row: usize,
    keep: usize,
) -> Result<(Vec<T>, Option<OffsetBuffer<i32>>), DecodeError> {
    match b.index {
        Some(index) if index >= per_row => Err(DecodeError::Index {
            output: b.output.clone(),
            per_row,
            index,
        }),
        Some(i) => Ok((
            (0..keep).map(|r| data[r * per_row + i].clone()).collect(),
            None,
        )),
        None if !b.is_list => {
            if per_row != 1 {
                return Err(DecodeError::NotScalar {
                    output: b.output.clone(),
                    per_row,
                });
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
) -> Result<ArrayRef, DecodeError>
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
) -> Result<ArrayRef, DecodeError> {
    match offsets {
        None => Ok(values),
        Some(offsets) => {
            let field = Arc::new(Field::new("item", values.data_type().clone(), true));
            ListArray::try_new(field, offsets, values, None)
                .map(|a| Arc::new(a) as ArrayRef)
                .map_err(|source| DecodeError::Arrow {
                    output: b.output.clone(),
                    source,
                })
        }
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::datatypes::Float32Type;

    use super::*;

    fn binding(index: Option<usize>, is_list: bool) -> OutputBinding {
        OutputBinding {
            column: "p".into(),
            output: "probabilities".into(),
            index,
            source: OutputSource::Tensor { per_row: None },
            is_list,
            elem: ElemType::Float32,
            transform: Default::default(),
            pooled_width: None,
        }
    }

    #[test]
    fn an_element_a_whole_row_or_a_scalar_is_selected_from_row_major_values() {
        // Three rows of two values; the last row pads a fixed batch and is dropped.
        let data = [0.1f32, 0.9, 0.3, 0.7, 0.5, 0.5];
        let (values, offsets) = select(&binding(Some(1), false), &data, 2, 2).unwrap();
        assert_eq!((values, offsets), (vec![0.9, 0.7], None));
        let list = from_rows::<f32, Float32Array>(&binding(None, true), &data, 2, 2).unwrap();
        let list = list.as_list::<i32>();
        assert_eq!(list.len(), 2);
        assert_eq!(
            list.value(1).as_primitive::<Float32Type>().values(),
            &[0.3, 0.7]
        );
        let e = select(&binding(Some(2), false), &data, 2, 3).unwrap_err();
        assert_eq!(
            e.to_string(),
            "model output \"probabilities\" has 2 values per row; index 2 is out of range"
        );
        let e = select(&binding(None, false), &data, 2, 3).unwrap_err();
        assert!(
            matches!(e, DecodeError::NotScalar { per_row: 2, .. }),
            "{e}"
        );
        assert!(per_row_of(&binding(None, false), 5, 2).is_err());
        assert_eq!(per_row_of(&binding(None, false), 6, 3).unwrap(), 2);
    }
}
