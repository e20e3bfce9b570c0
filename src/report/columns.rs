//! The distributions a run reports (`_metrics.json` `distributions`): every output column of
//! the written rows and every model input feature of the rows scored or rejected, each worker
//! profiling its own batches ([`ColumnProfiles`]), merged when the workers are done.
//!
//! A feature is named by its column when its expression is a plain column of the input, else
//! `<input>[<i>]` (the model input and the position in it); a feature whose column name an
//! output column already has takes the second form too.
//!
//! A sharded run's shards are separate processes: each writes its [`ColumnProfiles::state`]
//! in its shard manifest, and the committing shard rebuilds them with
//! [`ColumnProfiles::from_state`], merges them and finishes, as with the workers of one
//! process.

use std::sync::Arc;

use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::datatypes::DataType;
use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

use super::distribution::{Distribution, Profile, ProfileError, ProfileState, drift};
use super::metrics::DriftReport;

/// What is profiled about one column.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
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

/// [`ColumnProfiles`] as data, to carry to another process: the profile of each planned
/// output column and feature, in the plan's order, None for a column no batch reached.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ColumnProfilesState {
    pub outputs: Vec<Option<ProfileState>>,
    pub features: Vec<Option<ProfileState>>,
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

    /// The profiles as data (see [`ColumnProfilesState`]); they are unchanged.
    pub fn state(&self) -> ColumnProfilesState {
        let state = |slots: &[Option<Profile>]| {
            slots
                .iter()
                .map(|p| p.as_ref().map(Profile::state))
                .collect()
        };
        ColumnProfilesState {
            outputs: state(&self.outputs),
            features: state(&self.features),
        }
    }

    /// The profiles a [`ColumnProfiles::state`] was taken of, made with the same `plan`; an
    /// error when the state has another number of columns or an invalid profile.
    pub fn from_state(
        plan: Arc<ProfilePlan>,
        state: ColumnProfilesState,
    ) -> Result<ColumnProfiles, ProfileError> {
        let (o, f) = (state.outputs.len(), state.features.len());
        if (o, f) != (plan.outputs.len(), plan.features.len()) {
            return Err(ProfileError::BadState(format!(
                "{o} output columns and {f} features, where the run profiles {} and {}",
                plan.outputs.len(),
                plan.features.len()
            )));
        }
        let load = |slots: Vec<Option<ProfileState>>| {
            slots
                .into_iter()
                .map(|p| p.map(Profile::from_state).transpose())
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(ColumnProfiles {
            outputs: load(state.outputs)?,
            features: load(state.features)?,
            plan,
        })
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

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{Float64Array, Int64Array, StringArray};

    use super::*;

    fn spec(name: &str, at: usize, label: bool) -> ColumnSpec {
        ColumnSpec {
            name: name.to_string(),
            at,
            label,
            baseline: None,
        }
    }

    fn plan() -> Arc<ProfilePlan> {
        Arc::new(ProfilePlan {
            outputs: vec![spec("score", 0, false), spec("label", 1, true)],
            features: vec![
                spec("amount", 0, false),
                spec("calls", 1, false),
                spec("region", 2, false),
                spec("unseen", 3, false),
            ],
        })
    }

    /// Rows `rows` of a run, profiled in batches of 700.
    fn profiled(rows: std::ops::Range<usize>) -> ColumnProfiles {
        let mut p = ColumnProfiles::new(plan());
        let rows: Vec<usize> = rows.collect();
        for chunk in rows.chunks(700) {
            let score: ArrayRef = Arc::new(Float64Array::from_iter_values(
                chunk.iter().map(|&i| ((i * 7919) % 1009) as f64 / 1009.0),
            ));
            let label: ArrayRef = Arc::new(Int64Array::from_iter_values(
                chunk.iter().map(|&i| (i % 3 == 0) as i64),
            ));
            let amount: ArrayRef =
                Arc::new(Float64Array::from_iter(chunk.iter().map(|&i| {
                    (i % 11 != 0).then_some(((i * 31) % 997) as f64 * 12.5)
                })));
            let calls: ArrayRef = Arc::new(Float64Array::from_iter_values(
                chunk.iter().map(|&i| (1.0 + (i % 4) as f64).ln()),
            ));
            let region: ArrayRef = Arc::new(StringArray::from_iter_values(
                chunk.iter().map(|&i| ["north", "south", "east"][i % 3]),
            ));
            p.observe(&[score, label], &[amount, calls, region]);
        }
        p
    }

    #[test]
    fn shards_carried_through_their_state_merge_like_workers_of_one_process() {
        let (first, second) = (profiled(0..4_000), profiled(4_000..10_000));
        let text = serde_json::to_string(&second.state()).unwrap();
        let state: ColumnProfilesState = serde_json::from_str(&text).unwrap();
        let carried = ColumnProfiles::from_state(plan(), state).unwrap();
        assert_eq!(carried.state(), second.state());

        let mut in_memory = first.clone();
        in_memory.merge(second);
        let mut merged = first;
        merged.merge(carried);
        let (merged, drift) = merged.finish(None);
        assert_eq!(merged, in_memory.finish(None).0);
        assert!(drift.is_none());

        let (whole, _) = profiled(0..10_000).finish(None);
        let names: Vec<&str> = merged.keys().map(String::as_str).collect();
        assert_eq!(names, ["score", "label", "amount", "calls", "region"]);
        for (name, d) in &merged {
            let w = &whole[name];
            assert_eq!(
                (d.count, d.nulls, d.non_finite),
                (w.count, w.nulls, w.non_finite)
            );
            assert_eq!((d.min, d.max, &d.classes), (w.min, w.max, &w.classes));
            if let (Some(m), Some(wm)) = (d.mean, w.mean) {
                assert!((m - wm).abs() <= 1e-12 * wm.abs(), "{name}: {m} vs {wm}");
            }
            if let (Some(s), Some(ws)) = (d.std, w.std) {
                assert!((s - ws).abs() <= 1e-12 * ws.abs(), "{name}: {s} vs {ws}");
            }
        }
        // The discrete feature's histogram is exact, one bin per value.
        let calls = merged["calls"].histogram.as_ref().unwrap();
        assert_eq!(
            (calls.exact, calls.counts.as_slice()),
            (true, &[2_500; 4][..])
        );
        assert_eq!(merged["calls"].histogram, whole["calls"].histogram);
    }

    #[test]
    fn a_state_of_another_plan_is_refused() {
        let mut state = profiled(0..10).state();
        state.features.pop();
        assert!(matches!(
            ColumnProfiles::from_state(plan(), state),
            Err(ProfileError::BadState(_))
        ));
    }
}
