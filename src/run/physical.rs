//! The run's plan: the features as DataFusion evaluates them, a [`WorkQueueExec`] with one
//! output per worker, and on top the scoring projection (the pass-through columns and
//! `predict`); and the schemas of what it writes.

use std::sync::Arc;

use datafusion::arrow::datatypes::{Field, FieldRef, Schema, SchemaRef};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::{Expr, ScalarUDF};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::Column as PhysicalColumn;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::prelude::{DataFrame, SessionContext};

use super::plan::JobPlan;
use super::work_queue::WorkQueueExec;
use crate::score::{PredictUdf, Scorer};

/// The scoring of a planned job, before DataFusion turns it into a physical plan.
pub(super) struct Scoring {
    /// The pass-through columns and every feature as a column of its own.
    features: DataFrame,
    /// `predict` over the feature columns.
    predict: Expr,
    /// Each challenger's `predict` over the same feature columns.
    challengers: Vec<Expr>,
    /// How many pass-through columns come first.
    pub n_pass: usize,
    /// How many challengers' prediction columns follow the champion's.
    pub n_challengers: usize,
    /// What parts hold: the pass-through columns, then the champion's output columns, then
    /// each challenger's.
    pub out_schema: SchemaRef,
    /// What `_rejected/` parts hold: the pass-through columns, then the reject columns.
    pub rej_schema: SchemaRef,
    /// Features the scored batches carry after the predictions, for their distributions
    /// (none when `[monitor] distributions` is off).
    pub n_profiled: usize,
}

impl Scoring {
    pub fn new(plan: &JobPlan, scorer: Arc<Scorer>) -> DfResult<Self> {
        let n_pass = plan.passthrough.len();
        let mut select = plan.passthrough.clone();
        select.extend(
            plan.bound
                .exprs
                .iter()
                .enumerate()
                .map(|(i, e)| e.clone().alias(feature_column(i))),
        );
        let features = plan.input.clone().select(select)?;
        let feature_columns: Vec<Expr> = (0..plan.bound.exprs.len())
            .map(|i| Expr::Column(datafusion::common::Column::from_name(feature_column(i))))
            .collect();
        let predict_with =
            |s: Arc<Scorer>| ScalarUDF::from(PredictUdf::new(s)).call(feature_columns.clone());
        let predict = predict_with(scorer);
        let challengers = plan
            .challengers
            .iter()
            .map(|c| {
                let scorer = c.scorer.clone().ok_or_else(|| {
                    DataFusionError::Internal(format!("challenger {}: no scorer", c.name))
                })?;
                Ok(predict_with(scorer))
            })
            .collect::<DfResult<Vec<Expr>>>()?;
        let passthrough: Vec<FieldRef> = features.schema().as_arrow().fields()[..n_pass].to_vec();
        let outputs = plan
            .outputs
            .iter()
            .chain(plan.challengers.iter().flat_map(|c| c.outputs.iter()));
        let out_fields: Vec<FieldRef> = passthrough
            .iter()
            .cloned()
            .chain(outputs.map(|o| Arc::new(Field::new(&o.column, o.data_type(), true))))
            .collect();
        let n_profiled = if plan.profiles.is_some() {
            plan.bound.inputs.iter().map(|b| b.columns.len()).sum()
        } else {
            0
        };
        Ok(Self {
            features,
            predict,
            n_challengers: challengers.len(),
            challengers,
            n_profiled,
            n_pass,
            out_schema: Arc::new(Schema::new(out_fields)),
            rej_schema: crate::reject::schema(&passthrough),
        })
    }

    /// The physical plan: the features' plan as DataFusion optimizes it, a [`WorkQueueExec`]
    /// with one output per worker, and on top the scoring projection.
    ///
    /// The scoring projection is added after optimization so that it stays where it is: the
    /// optimizer merges a projection of plain columns into the scan, `predict` included, and
    /// drops a repartition asked for in the logical plan when the scan already has as many
    /// partitions. The queue hands each worker its next batch when it is ready for one, rather
    /// than a file range (a large unit: one worker often scored alone for the last half second
    /// or more of a run while the other core idled) or every n-th batch (DataFusion's
    /// round-robin repartition, whose buffer for a slower worker grows with the input). The
    /// queue's feeding tasks decode and evaluate the features of the next batches while the
    /// workers score.
    pub async fn physical_plan(
        &self,
        ctx: &SessionContext,
        workers: usize,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let features_schema = self.features.schema().clone();
        let input = self.features.clone().create_physical_plan().await?;
        // One batch ready for each worker; reading waits while they are all taken.
        let queued: Arc<dyn ExecutionPlan> = Arc::new(WorkQueueExec::new(input, workers, workers));
        let schema = queued.schema();
        let mut exprs: Vec<(Arc<dyn PhysicalExpr>, String)> = schema.fields()[..self.n_pass]
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let column: Arc<dyn PhysicalExpr> = Arc::new(PhysicalColumn::new(f.name(), i));
                (column, f.name().clone())
            })
            .collect();
        exprs.push((
            ctx.state()
                .create_physical_expr(self.predict.clone(), &features_schema)?,
            "__batchscore_predictions".to_string(),
        ));
        // Each challenger's predictions, from the same feature columns of the same batch.
        for (k, predict) in self.challengers.iter().enumerate() {
            exprs.push((
                ctx.state()
                    .create_physical_expr(predict.clone(), &features_schema)?,
                format!("__batchscore_challenger_{k}"),
            ));
        }
        // The features ride along, for their distributions: `reject::split` ignores them.
        for i in self.n_pass..self.n_pass + self.n_profiled {
            let name = schema.field(i).name().clone();
            exprs.push((Arc::new(PhysicalColumn::new(&name, i)), name));
        }
        Ok(Arc::new(ProjectionExec::try_new(exprs, queued)?))
    }
}

/// The name a feature column goes by between the features' plan and the scoring projection.
fn feature_column(i: usize) -> String {
    format!("__batchscore_feature_{i}")
}

/// Rows the file scans produced, from the executed plan's metrics.
pub(super) fn rows_read(plan: &dyn ExecutionPlan) -> Option<u64> {
    let mut total = None;
    let mut stack: Vec<&dyn ExecutionPlan> = vec![plan];
    while let Some(node) = stack.pop() {
        if node.name() == "DataSourceExec"
            && let Some(rows) = node.metrics().and_then(|m| m.output_rows())
        {
            *total.get_or_insert(0) += rows as u64;
        }
        stack.extend(node.children().into_iter().map(|c| c.as_ref()));
    }
    total
}
