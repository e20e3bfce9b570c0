//! The `predict` scalar function: scoring inside DataFusion's plan.

use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::common::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};

use super::Scorer;

/// Whether this thread runs inside tokio's multi-thread runtime (the CLI's), where
/// `block_in_place` may hand a worker's tasks to another thread; the tests' current-thread
/// runtime has no other thread to hand them to.
pub(crate) fn on_multi_thread_runtime() -> bool {
    tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread)
}

/// The `predict` scalar function: scores its arguments with the job's model.
#[derive(Debug)]
pub struct PredictUdf {
    scorer: Arc<Scorer>,
    signature: Signature,
}

impl PredictUdf {
    pub const NAME: &'static str = "batchscore_predict";

    pub fn new(scorer: Arc<Scorer>) -> Self {
        Self {
            scorer,
            signature: Signature::variadic_any(Volatility::Volatile),
        }
    }
}

impl PartialEq for PredictUdf {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.scorer, &other.scorer)
    }
}
impl Eq for PredictUdf {}
impl std::hash::Hash for PredictUdf {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (Arc::as_ptr(&self.scorer) as usize).hash(state);
    }
}

impl ScalarUDFImpl for PredictUdf {
    fn name(&self) -> &str {
        Self::NAME
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> DfResult<DataType> {
        Ok(self.scorer.return_type())
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let rows = args.number_rows;
        let arrays = crate::features::to_arrays(args.args, rows)?;
        // Scoring blocks its thread for the whole batch. On the CLI's multi-thread runtime,
        // `block_in_place` hands this worker's other tasks (the scan's, which decode the next
        // batches) to another thread meanwhile; without it they waited behind the batch, and
        // cores idled while a worker waited for its next batch (GBDT: 0.4 core-s a run more).
        let score = || self.scorer.score(&arrays, rows);
        let out = if on_multi_thread_runtime() {
            tokio::task::block_in_place(score)
        } else {
            score()
        }
        .map_err(|e| DataFusionError::External(e.into()))?;
        Ok(ColumnarValue::Array(Arc::new(out)))
    }
}
