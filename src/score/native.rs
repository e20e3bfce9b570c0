//! The native tree evaluator ([`super::trees`]) inside a [`super::Scorer`]: it scores the
//! packed feature tensor in place of ONNX Runtime, hands back the outputs as ONNX Runtime
//! would (tensors of the same types and shapes, decoded by the same code), and is trusted
//! only once the first call of a run has been scored both ways with identical results.

use std::collections::HashMap;
use std::sync::Mutex;

use ort::value::{DynValue, Tensor};

use super::trees::{NativeEnsemble, NativeOutput};
use crate::features::InputBinding;
use crate::model::ElemType;

/// Whether the evaluator has been checked against ONNX Runtime yet, and how that went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trust {
    /// The next call scores both ways and compares.
    Unchecked,
    Trusted,
    /// A difference was found: ONNX Runtime scores the rest of the run.
    Refused,
}

/// A native ensemble bound to the scorer's input.
#[derive(Debug)]
pub struct NativeEngine {
    ensemble: NativeEnsemble,
    trust: Mutex<Trust>,
}

impl NativeEngine {
    /// The engine for `ensemble`, when the job feeds its input as a float32 `[N, C]` tensor
    /// with at least the columns it reads and the model has no other input; otherwise why not.
    pub fn bind(ensemble: NativeEnsemble, inputs: &[InputBinding]) -> Result<Self, String> {
        let [binding] = inputs else {
            return Err("the model has more than one input".into());
        };
        if binding.name != ensemble.input_name() {
            return Err(format!(
                "the ensemble reads {:?}, not the model input {:?}",
                ensemble.input_name(),
                binding.name
            ));
        }
        if binding.dtype != ElemType::Float32 || binding.shape.len() != 2 {
            return Err(format!(
                "the model input {:?} is not a float32 [N, C] tensor",
                binding.name
            ));
        }
        if binding.columns.len() < ensemble.n_features() || binding.fixed_batch().is_some() {
            return Err("the input's columns do not cover the features the trees read".into());
        }
        Ok(Self {
            ensemble,
            trust: Mutex::new(Trust::Unchecked),
        })
    }

    pub fn n_trees(&self) -> usize {
        self.ensemble.n_trees()
    }

    pub fn layout(&self) -> &'static str {
        self.ensemble.layout()
    }

    pub fn trust(&self) -> Trust {
        *self.trust.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Holds the trust state for a check (the first call of a run), so that one worker
    /// compares while the others wait for its verdict.
    pub fn lock(&self) -> std::sync::MutexGuard<'_, Trust> {
        self.trust.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Scores the packed input tensor: every graph output, as ONNX Runtime's session would
    /// return it.
    pub fn run(&self, input: &DynValue) -> Result<HashMap<String, DynValue>, ort::Error> {
        let (shape, x) = input.try_extract_tensor::<f32>()?;
        let rows = shape.first().copied().unwrap_or(0).max(0) as usize;
        let mut out = HashMap::new();
        for (name, value) in self.ensemble.predict(x, rows) {
            let tensor = match value {
                NativeOutput::Int64(v) => Tensor::from_array(([v.len()], v))?.into_dyn(),
                NativeOutput::Strings(v) => {
                    Tensor::from_string_array(([v.len()], v.as_slice()))?.into_dyn()
                }
                NativeOutput::Float32 { values, per_row } => {
                    Tensor::from_array(([rows, per_row], values))?.into_dyn()
                }
            };
            out.insert(name, tensor);
        }
        Ok(out)
    }
}
