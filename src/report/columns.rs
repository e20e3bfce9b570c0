//! The distributions a run reports (`_metrics.json` `distributions`): every output column of
//! the written rows and every model input feature of the rows scored or rejected, each worker
//! profiling its own batches ([`ColumnProfiles`]), merged when the workers are done.
//!
//! A feature is named by its column when its expression is a plain column of the input, else
//! `<input>[<i>]` (the model input and the position in it); a feature whose column name an
//! output column already has takes the second form too.

use std::sync::Arc;

use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::datatypes::DataType;
use indexmap::IndexMap;

use super::distribution::{Distribution, Profile, drift};
use super::metrics::DriftReport;

/// What is profiled about one column.
#[derive(Debug, Clone)]
pub struct ColumnSpec {
    pub name: String,
    /// Its position among the arrays [`ColumnProfiles::observe`] is given.
    pub at: usize,
    /// An integer column holding class labels (a classifier's label output): counted by class.
    pub label: bool,
    /// The baseline run's distribution of the column, whose bins or classes this run counts in.
    pub baseline: Option<Distribution>,
}

/// The columns a run profiles: the output columns, then the features.
#[derive(Debug, Clone, Default)]
pub struct ProfilePlan {
    pub outputs: Vec<ColumnSpec>,
    pub features: Vec<ColumnSpec>,
}

impl ProfilePlan {
    /// Names the features: `columns[i]` is the expression text of feature `i` and
    /// `inputs[i]` its `<input>[<j>]` name; `is_column` says whether a text is a plain
    /// column of the input.
    pub fn name_features(
        outputs: &[String],
        features: &[(String, String)],
        is_column: impl Fn(&str) -> bool,
    ) -> Vec<String> {
        features
            .iter()
            .map(|(text, slot)| {
                if is_column(text) && !outputs.iter().any(|o| o == text) {
                    text.clone()
                } else {
                    slot.clone()
                }
            })
            .collect()
    }
}

/// One worker's profiles of the planned columns, made on a column's first batch (whose type
/// says numeric or categorical).
#[derive(Debug, Clone)]
pub struct ColumnProfiles {
    plan: Arc<ProfilePlan>,
    outputs: Vec<Option<Profile>>,
    features: Vec<Option<Profile>>,
}

fn observe(slot: &mut Option<Profile>, spec: &ColumnSpec, array: &ArrayRef) {
    if slot.is_none() {
        let label = spec.label || matches!(array.data_type(), DataType::Boolean);
        // A baseline of another kind (the column changed type) is not compared.
        let profile = Profile::for_column(array.data_type(), label, spec.baseline.as_ref())
            .or_else(|_| Profile::for_column(array.data_type(), label, None));
        *slot = profile.ok();
    }
    if let Some(p) = slot {
        p.observe(array.as_ref());
    }
}

fn merge(into: &mut [Option<Profile>], from: Vec<Option<Profile>>) {
    for (a, b) in into.iter_mut().zip(from) {
        match (a.as_mut(), b) {
            (Some(a), Some(b)) => {
                // Workers profile a column the same way: a mismatch cannot happen, and would
                // only lose the other worker's counts.
                let _ = a.merge(b);
            }
            (None, b) => *a = b,
            (_, None) => {}
        }
    }
}

impl ColumnProfiles {
    pub fn new(plan: Arc<ProfilePlan>) -> Self {
        Self {
            outputs: vec![None; plan.outputs.len()],
            features: vec![None; plan.features.len()],
            plan,
        }
    }

    /// Counts a batch: `outputs` are the written rows' output columns, `features` every
    /// row's feature columns, each in the plan's order.
    pub fn observe(&mut self, outputs: &[ArrayRef], features: &[ArrayRef]) {
        for (slot, spec) in self.outputs.iter_mut().zip(&self.plan.outputs) {
            if let Some(a) = outputs.get(spec.at) {
                observe(slot, spec, a);
            }
        }
        for (slot, spec) in self.features.iter_mut().zip(&self.plan.features) {
            if let Some(a) = features.get(spec.at) {
                observe(slot, spec, a);
            }
        }
    }

    /// Adds another worker's profiles.
    pub fn merge(&mut self, other: ColumnProfiles) {
        merge(&mut self.outputs, other.outputs);
        merge(&mut self.features, other.features);
    }

    /// The distributions by column name (outputs first), and the drift of each column that
    /// has a baseline.
    pub fn finish(
        mut self,
        baseline: Option<&str>,
    ) -> (IndexMap<String, Distribution>, Option<DriftReport>) {
        let mut distributions = IndexMap::new();
        let mut drifts = IndexMap::new();
        let specs = self.plan.outputs.iter().chain(&self.plan.features);
        let slots = self.outputs.iter_mut().chain(self.features.iter_mut());
        for (spec, slot) in specs.zip(slots) {
            let Some(p) = slot else { continue };
            let d = p.finish();
            if let Some(drifted) = spec.baseline.as_ref().and_then(|b| drift(b, &d)) {
                drifts.insert(spec.name.clone(), drifted);
            }
            distributions.insert(spec.name.clone(), d);
        }
        let drift = baseline.map(|b| DriftReport {
            baseline: b.to_string(),
            columns: drifts,
        });
        (distributions, drift)
    }
}
