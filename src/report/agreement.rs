//! How far each challenger (`[[challengers]]`) agrees with the champion, for `_metrics.json`
//! `challengers`: over the written rows (those the champion scored), per output column the two
//! share (the same column name in the champion's `[outputs]` and the challenger's).
//!
//! - A label column (integers, strings or booleans on both sides): the rows where both hold a
//!   value, the share of them where the labels are equal (`agreement_rate`), and the confusion
//!   table, rows by the champion's label and then by the challenger's. At most
//!   [`MAX_CLASSES`] labels are named each way, in the order they first appear; further labels
//!   count under [`OTHER_CLASS`] (the agreement rate still compares the labels themselves).
//!   Labels are written sorted: integers by value, other text as text, `__other__` last.
//! - A score column (floats on both sides): over the rows where both are finite, the mean and
//!   the largest absolute difference, Pearson's correlation (none when either side is
//!   constant), and quantiles of the difference challenger − champion (a t-digest over a
//!   sample of each batch, as [`Profile`] estimates a column's quantiles).
//!
//! Columns of other kinds (lists, or a label on one side and a score on the other) are not
//! compared. Each worker tallies its own batches ([`Agreements::observe`]); the tallies merge
//! exactly (sums, and moments combined with Chan's parallel formula, as a column's mean and
//! standard deviation are), except the quantiles' digest.

use std::collections::HashSet;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Float64Array};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Float64Type};
use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::distribution::{MAX_CLASSES, OTHER_CLASS, Profile, Quantiles};
use super::metrics::ModelReport;

/// A challenger in `_metrics.json`: its model, the written rows it could not score, and its
/// agreement with the champion by shared output column.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ChallengerReport {
    pub model: ModelReport,
    /// Written rows (the champion scored them) that the challenger could not score: its
    /// columns are null on them, and they are left out of its agreement figures.
    pub rows_rejected: u64,
    /// By output column the challenger shares with the champion (see the README's "Champion
    /// and challenger in one pass").
    pub outputs: IndexMap<String, Agreement>,
}

/// How far a challenger's output column agrees with the champion's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Agreement {
    /// A label column (integers, strings or booleans).
    Label {
        /// Rows compared: written rows where both columns hold a value.
        rows: u64,
        /// The share of the rows compared whose labels are equal; none when no row was.
        agreement_rate: Option<f64>,
        /// Rows by the champion's label, then by the challenger's: at most 100 labels each
        /// way, further ones counted under `__other__`.
        confusion: IndexMap<String, IndexMap<String, u64>>,
    },
    /// A score column (floats).
    Score {
        /// Rows compared: written rows where both columns hold a finite value.
        rows: u64,
        /// Mean of |challenger − champion|; none when no row was compared.
        mean_abs_diff: Option<f64>,
        /// Largest |challenger − champion|.
        max_abs_diff: Option<f64>,
        /// Pearson's correlation of the two columns; none when either is constant.
        correlation: Option<f64>,
        /// Quantiles of challenger − champion, estimated from a sample of each batch.
        difference_quantiles: Option<Quantiles>,
    },
}

/// Whether a shared column holds labels or scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ColumnKind {
    Label,
    Score,
}

/// One output column a challenger shares with the champion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SharedColumn {
    /// The column's name in both `[outputs]`.
    pub column: String,
    /// Where the champion's column is among the written rows' output columns.
    pub champion_at: usize,
    /// Where the challenger's is.
    pub challenger_at: usize,
    pub kind: ColumnKind,
}

/// The columns a challenger is compared on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChallengerColumns {
    pub name: String,
    pub shared: Vec<SharedColumn>,
}

/// The tallies of every challenger, over one worker's batches or merged.
#[derive(Debug, Clone)]
pub struct Agreements {
    plan: Arc<Vec<ChallengerColumns>>,
    tallies: Vec<Tally>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Tally {
    rows_rejected: u64,
    columns: Vec<ColumnTally>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
enum ColumnTally {
    Label(Labels),
    Score(Box<Scores>),
}

/// The tallies of [`Agreements`] as a shard saves them, for the commit to merge.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgreementsState(Vec<Tally>);

/// Two states are equal when they save as the same JSON (a profile has no `==` of its own).
impl PartialEq for AgreementsState {
    fn eq(&self, other: &Self) -> bool {
        serde_json::to_value(self).ok() == serde_json::to_value(other).ok()
    }
}

/// A profile written as its state, for the tallies a shard saves.
mod profile_as_state {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use crate::report::distribution::{Profile, ProfileState};

    pub fn serialize<S: Serializer>(p: &Option<Profile>, s: S) -> Result<S::Ok, S::Error> {
        p.as_ref().map(Profile::state).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Profile>, D::Error> {
        let state: Option<ProfileState> = Option::deserialize(d)?;
        state
            .map(Profile::from_state)
            .transpose()
            .map_err(serde::de::Error::custom)
    }
}

impl Agreements {
    /// The columns each challenger is compared on.
    pub fn plan(&self) -> &[ChallengerColumns] {
        &self.plan
    }

    /// The tallies, to be saved and merged in another process ([`Self::from_state`]).
    pub fn state(&self) -> AgreementsState {
        AgreementsState(self.tallies.clone())
    }

    /// Tallies saved by [`Self::state`] under the same plan; none when they do not fit it.
    pub fn from_state(plan: Arc<Vec<ChallengerColumns>>, state: AgreementsState) -> Option<Self> {
        let fits = state.0.len() == plan.len()
            && state
                .0
                .iter()
                .zip(plan.iter())
                .all(|(t, c)| t.columns.len() == c.shared.len());
        fits.then_some(Self {
            plan,
            tallies: state.0,
        })
    }

    /// The challengers' reports, `models` in the plan's order.
    pub fn reports(self, models: &[ModelReport]) -> IndexMap<String, ChallengerReport> {
        self.finish()
            .into_iter()
            .zip(models)
            .map(|((name, rows_rejected, outputs), model)| {
                let report = ChallengerReport {
                    model: model.clone(),
                    rows_rejected,
                    outputs,
                };
                (name, report)
            })
            .collect()
    }

    /// Empty tallies for the challengers of `plan`, in its order.
    pub fn new(plan: Arc<Vec<ChallengerColumns>>) -> Self {
        let tallies = plan
            .iter()
            .map(|c| Tally {
                rows_rejected: 0,
                columns: c
                    .shared
                    .iter()
                    .map(|s| match s.kind {
                        ColumnKind::Label => ColumnTally::Label(Labels::default()),
                        ColumnKind::Score => ColumnTally::Score(Box::default()),
                    })
                    .collect(),
            })
            .collect();
        Self { plan, tallies }
    }

    /// Counts a batch of written rows: `outputs` are their output columns (the champion's,
    /// then each challenger's), `rejected[k]` how many of them challenger `k` rejected.
    pub fn observe(&mut self, outputs: &[ArrayRef], rejected: &[u64]) {
        for (k, (tally, challenger)) in self.tallies.iter_mut().zip(self.plan.iter()).enumerate() {
            tally.rows_rejected += rejected.get(k).copied().unwrap_or(0);
            for (t, s) in tally.columns.iter_mut().zip(&challenger.shared) {
                let (Some(a), Some(b)) = (outputs.get(s.champion_at), outputs.get(s.challenger_at))
                else {
                    continue;
                };
                match t {
                    ColumnTally::Label(l) => l.observe(a, b),
                    ColumnTally::Score(sc) => sc.observe(a, b),
                }
            }
        }
    }

    /// Adds another worker's tallies of the same plan.
    pub fn merge(&mut self, other: Agreements) {
        for (a, b) in self.tallies.iter_mut().zip(other.tallies) {
            a.rows_rejected += b.rows_rejected;
            for (x, y) in a.columns.iter_mut().zip(b.columns) {
                match (x, y) {
                    (ColumnTally::Label(x), ColumnTally::Label(y)) => x.merge(y),
                    (ColumnTally::Score(x), ColumnTally::Score(y)) => x.merge(*y),
                    // Tallies of one plan pair up kind by kind.
                    _ => {}
                }
            }
        }
    }

    /// Per challenger, in the plan's order: its name, the written rows it rejected, and its
    /// agreement by shared column.
    pub fn finish(self) -> Vec<(String, u64, IndexMap<String, Agreement>)> {
        self.plan
            .iter()
            .zip(self.tallies)
            .map(|(c, t)| {
                let outputs = c
                    .shared
                    .iter()
                    .zip(t.columns)
                    .map(|(s, tally)| {
                        let a = match tally {
                            ColumnTally::Label(l) => l.finish(),
                            ColumnTally::Score(mut sc) => sc.finish(),
                        };
                        (s.column.clone(), a)
                    })
                    .collect();
                (c.name.clone(), t.rows_rejected, outputs)
            })
            .collect()
    }
}

/// A column as text, for labels (null where it cannot be cast).
fn as_text(a: &ArrayRef) -> Option<ArrayRef> {
    cast(a, &DataType::Utf8).ok()
}

/// The counts behind a label column's agreement.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Labels {
    rows: u64,
    agree: u64,
    confusion: IndexMap<String, IndexMap<String, u64>>,
    /// The challenger's labels named in the table so far.
    columns: HashSet<String>,
}

impl Labels {
    fn observe(&mut self, champion: &ArrayRef, challenger: &ArrayRef) {
        let (Some(a), Some(b)) = (as_text(champion), as_text(challenger)) else {
            return;
        };
        let (a, b) = (a.as_string::<i32>(), b.as_string::<i32>());
        for i in 0..a.len().min(b.len()) {
            if a.is_null(i) || b.is_null(i) {
                continue;
            }
            let (x, y) = (a.value(i), b.value(i));
            self.rows += 1;
            self.agree += u64::from(x == y);
            self.add(x, y, 1);
        }
    }

    /// Counts `n` rows of champion label `x` and challenger label `y`, each named if it is
    /// already or there is room, else counted under `__other__`.
    fn add(&mut self, x: &str, y: &str, n: u64) {
        let named_rows =
            self.confusion.len() - usize::from(self.confusion.contains_key(OTHER_CLASS));
        let x = if self.confusion.contains_key(x) || named_rows < MAX_CLASSES {
            x
        } else {
            OTHER_CLASS
        };
        let y = if self.columns.contains(y) {
            y
        } else if y != OTHER_CLASS && self.columns.len() < MAX_CLASSES {
            self.columns.insert(y.to_string());
            y
        } else {
            OTHER_CLASS
        };
        if !self.confusion.contains_key(x) {
            self.confusion.insert(x.to_string(), IndexMap::new());
        }
        let Some(row) = self.confusion.get_mut(x) else {
            return;
        };
        match row.get_mut(y) {
            Some(c) => *c += n,
            None => {
                row.insert(y.to_string(), n);
            }
        }
    }

    fn merge(&mut self, other: Labels) {
        self.rows += other.rows;
        self.agree += other.agree;
        for (x, row) in other.confusion {
            for (y, n) in row {
                self.add(&x, &y, n);
            }
        }
    }

    fn finish(self) -> Agreement {
        let mut confusion: Vec<(String, IndexMap<String, u64>)> = self
            .confusion
            .into_iter()
            .map(|(x, row)| {
                let mut row: Vec<(String, u64)> = row.into_iter().collect();
                row.sort_by(|a, b| label_order(&a.0, &b.0));
                (x, row.into_iter().collect())
            })
            .collect();
        confusion.sort_by(|a, b| label_order(&a.0, &b.0));
        Agreement::Label {
            rows: self.rows,
            agreement_rate: (self.rows > 0).then(|| self.agree as f64 / self.rows as f64),
            confusion: confusion.into_iter().collect(),
        }
    }
}

/// Labels in the order they are written: integers by value first, then other text, then
/// `__other__`.
fn label_order(a: &str, b: &str) -> std::cmp::Ordering {
    let key = |s: &str| {
        (
            s == OTHER_CLASS,
            s.parse::<i64>().ok().is_none(),
            s.parse::<i64>().ok(),
        )
    };
    key(a).cmp(&key(b)).then_with(|| a.cmp(b))
}

/// The sums and co-moments behind a score column's agreement: `x` the champion's values,
/// `y` the challenger's.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Scores {
    n: u64,
    mean_x: f64,
    mean_y: f64,
    m2x: f64,
    m2y: f64,
    cxy: f64,
    sum_abs: f64,
    max_abs: f64,
    /// The differences' profile, for their quantiles (made with the first values: a numeric
    /// profile without edges always builds); saved as its state between shards.
    #[serde(with = "profile_as_state")]
    difference: Option<Profile>,
}

impl Default for Scores {
    fn default() -> Self {
        Self {
            n: 0,
            mean_x: 0.0,
            mean_y: 0.0,
            m2x: 0.0,
            m2y: 0.0,
            cxy: 0.0,
            sum_abs: 0.0,
            max_abs: 0.0,
            difference: None,
        }
    }
}

/// A column as float64 values (null where it cannot be cast).
fn as_floats(a: &ArrayRef) -> Option<Float64Array> {
    cast(a, &DataType::Float64)
        .ok()
        .map(|f| f.as_primitive::<Float64Type>().clone())
}

impl Scores {
    fn observe(&mut self, champion: &ArrayRef, challenger: &ArrayRef) {
        let (Some(a), Some(b)) = (as_floats(champion), as_floats(challenger)) else {
            return;
        };
        let (mut x, mut y) = (Vec::with_capacity(a.len()), Vec::with_capacity(a.len()));
        for i in 0..a.len().min(b.len()) {
            if a.is_valid(i) && b.is_valid(i) {
                let (u, v) = (a.value(i), b.value(i));
                if u.is_finite() && v.is_finite() {
                    x.push(u);
                    y.push(v);
                }
            }
        }
        if x.is_empty() {
            return;
        }
        // The batch in two passes, then combined with what came before.
        let n = x.len() as f64;
        let mean_x = x.iter().sum::<f64>() / n;
        let mean_y = y.iter().sum::<f64>() / n;
        let (mut m2x, mut m2y, mut cxy, mut sum_abs) = (0.0, 0.0, 0.0, 0.0);
        let mut diff = Vec::with_capacity(x.len());
        for (&u, &v) in x.iter().zip(&y) {
            let (dx, dy) = (u - mean_x, v - mean_y);
            m2x += dx * dx;
            m2y += dy * dy;
            cxy += dx * dy;
            let d = v - u;
            sum_abs += d.abs();
            self.max_abs = self.max_abs.max(d.abs());
            diff.push(d);
        }
        if self.difference.is_none() {
            self.difference = Profile::numeric(None).ok();
        }
        if let Some(p) = &mut self.difference {
            p.observe(&Float64Array::from(diff));
        }
        self.combine(x.len() as u64, [mean_x, mean_y, m2x, m2y, cxy], sum_abs);
    }

    /// Adds `n` values with means, second moments and co-moment `[mean_x, mean_y, m2x, m2y,
    /// cxy]` (Chan's parallel formula).
    fn combine(&mut self, n: u64, [mean_x, mean_y, m2x, m2y, cxy]: [f64; 5], sum_abs: f64) {
        if n == 0 {
            return;
        }
        let (na, nb) = (self.n as f64, n as f64);
        let total = na + nb;
        let (dx, dy) = (mean_x - self.mean_x, mean_y - self.mean_y);
        self.mean_x += dx * nb / total;
        self.mean_y += dy * nb / total;
        self.m2x += m2x + dx * dx * na * nb / total;
        self.m2y += m2y + dy * dy * na * nb / total;
        self.cxy += cxy + dx * dy * na * nb / total;
        self.sum_abs += sum_abs;
        self.n += n;
    }

    fn merge(&mut self, other: Scores) {
        let moments = [other.mean_x, other.mean_y, other.m2x, other.m2y, other.cxy];
        self.combine(other.n, moments, other.sum_abs);
        self.max_abs = self.max_abs.max(other.max_abs);
        match (&mut self.difference, other.difference) {
            // Both are numeric profiles without edges: they always merge.
            (Some(a), Some(b)) => {
                let _ = a.merge(b);
            }
            (a @ None, b) => *a = b,
            (Some(_), None) => {}
        }
    }

    fn finish(&mut self) -> Agreement {
        let some = self.n > 0;
        let correlation = (self.m2x > 0.0 && self.m2y > 0.0).then(|| {
            // One square root of the product is exact for identical columns (sqrt(a·a) is a);
            // two of the factors where the product would underflow or overflow.
            let product = self.m2x * self.m2y;
            let scale = if product.is_normal() {
                product.sqrt()
            } else {
                self.m2x.sqrt() * self.m2y.sqrt()
            };
            (self.cxy / scale).clamp(-1.0, 1.0)
        });
        Agreement::Score {
            rows: self.n,
            mean_abs_diff: some.then(|| self.sum_abs / self.n as f64),
            max_abs_diff: some.then_some(self.max_abs),
            correlation,
            difference_quantiles: self.difference.as_mut().and_then(|p| p.finish().quantiles),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{Float32Array, Int64Array, StringArray};

    use super::*;

    fn plan(kind: ColumnKind) -> Arc<Vec<ChallengerColumns>> {
        Arc::new(vec![ChallengerColumns {
            name: "c".into(),
            shared: vec![SharedColumn {
                column: "p".into(),
                champion_at: 0,
                challenger_at: 1,
                kind,
            }],
        }])
    }

    fn only(a: Agreements) -> (u64, Agreement) {
        let mut f = a.finish();
        let (_, rejected, mut outputs) = f.remove(0);
        (rejected, outputs.swap_remove("p").unwrap())
    }

    #[test]
    fn labels_agree_row_by_row_and_fill_a_sorted_confusion_table() {
        let mut a = Agreements::new(plan(ColumnKind::Label));
        let x: ArrayRef = Arc::new(Int64Array::from(vec![
            Some(1),
            Some(0),
            Some(10),
            None,
            Some(1),
        ]));
        let y: ArrayRef = Arc::new(Int64Array::from(vec![
            Some(1),
            Some(1),
            Some(10),
            Some(0),
            None,
        ]));
        a.observe(&[x, y], &[1]);
        let (rejected, got) = only(a);
        assert_eq!(rejected, 1);
        let Agreement::Label {
            rows,
            agreement_rate,
            confusion,
        } = got
        else {
            panic!("{got:?}")
        };
        assert_eq!((rows, agreement_rate), (3, Some(2.0 / 3.0)));
        let table: Vec<(&str, Vec<(&str, u64)>)> = confusion
            .iter()
            .map(|(k, row)| {
                (
                    k.as_str(),
                    row.iter().map(|(l, n)| (l.as_str(), *n)).collect(),
                )
            })
            .collect();
        assert_eq!(
            table,
            [
                ("0", vec![("1", 1)]),
                ("1", vec![("1", 1)]),
                ("10", vec![("10", 1)])
            ]
        );
    }

    #[test]
    fn past_a_hundred_labels_the_rest_count_as_other_but_still_agree() {
        let mut a = Agreements::new(plan(ColumnKind::Label));
        let labels: Vec<String> = (0..150).map(|i| format!("l{i:03}")).collect();
        let x: ArrayRef = Arc::new(StringArray::from(labels.clone()));
        let shifted: Vec<String> = labels.iter().map(|l| format!("{l}x")).collect();
        let y: ArrayRef = Arc::new(StringArray::from(shifted));
        a.observe(&[x.clone(), x.clone()], &[0]);
        a.observe(&[x, y], &[0]);
        let (_, got) = only(a);
        let Agreement::Label {
            rows,
            agreement_rate,
            confusion,
        } = got
        else {
            panic!()
        };
        assert_eq!((rows, agreement_rate), (300, Some(0.5)));
        assert_eq!(confusion.len(), 101);
        assert_eq!(
            confusion.keys().last().map(String::as_str),
            Some(OTHER_CLASS)
        );
        let other = &confusion[OTHER_CLASS];
        assert_eq!(other.values().sum::<u64>(), 100);
        assert_eq!(other[OTHER_CLASS], 100);
        assert!(confusion.values().all(|r| r.len() <= 101));
    }

    /// numpy's figures over the same pairs, computed directly.
    fn direct(x: &[f64], y: &[f64]) -> (f64, f64) {
        let n = x.len() as f64;
        let mad = x.iter().zip(y).map(|(a, b)| (b - a).abs()).sum::<f64>() / n;
        let (mx, my) = (x.iter().sum::<f64>() / n, y.iter().sum::<f64>() / n);
        let c: f64 = x.iter().zip(y).map(|(a, b)| (a - mx) * (b - my)).sum();
        let vx: f64 = x.iter().map(|a| (a - mx).powi(2)).sum();
        let vy: f64 = y.iter().map(|b| (b - my).powi(2)).sum();
        (mad, c / (vx * vy).sqrt())
    }

    #[test]
    fn scores_merged_over_batches_and_workers_match_one_pass() {
        let x: Vec<f64> = (0..1000).map(|i| ((i * 37) % 101) as f64 / 101.0).collect();
        let y: Vec<f64> = x
            .iter()
            .enumerate()
            .map(|(i, v)| v * 0.9 + (i % 7) as f64 / 70.0)
            .collect();
        let arr = |v: &[f64]| -> ArrayRef {
            Arc::new(Float32Array::from(
                v.iter().map(|&f| f as f32).collect::<Vec<_>>(),
            ))
        };
        let (x32, y32): (Vec<f64>, Vec<f64>) = (
            x.iter().map(|&v| f64::from(v as f32)).collect(),
            y.iter().map(|&v| f64::from(v as f32)).collect(),
        );
        let mut w1 = Agreements::new(plan(ColumnKind::Score));
        let mut w2 = Agreements::new(plan(ColumnKind::Score));
        w1.observe(&[arr(&x[..300]), arr(&y[..300])], &[0]);
        w2.observe(&[arr(&x[300..]), arr(&y[300..])], &[0]);
        // A null and a NaN are left out.
        let x_odd: ArrayRef = Arc::new(Float32Array::from(vec![Some(1.0), None, Some(f32::NAN)]));
        let y_odd: ArrayRef = Arc::new(Float32Array::from(vec![None, Some(1.0), Some(2.0)]));
        w2.observe(&[x_odd, y_odd], &[2]);
        w1.merge(w2);
        let (rejected, got) = only(w1);
        assert_eq!(rejected, 2);
        let Agreement::Score {
            rows,
            mean_abs_diff,
            max_abs_diff,
            correlation,
            difference_quantiles,
        } = got
        else {
            panic!()
        };
        let (mad, corr) = direct(&x32, &y32);
        assert_eq!(rows, 1000);
        let rel = |a: f64, b: f64| ((a - b) / b).abs();
        assert!(rel(mean_abs_diff.unwrap(), mad) < 1e-12);
        assert!(rel(correlation.unwrap(), corr) < 1e-12);
        let max = x32
            .iter()
            .zip(&y32)
            .map(|(a, b)| (b - a).abs())
            .fold(0.0, f64::max);
        assert_eq!(max_abs_diff, Some(max));
        let q = difference_quantiles.unwrap();
        assert!(q.p01 <= q.p50 && q.p50 <= q.p99);
    }

    #[test]
    fn identical_scores_correlate_exactly_and_a_constant_column_has_no_correlation() {
        let x: ArrayRef = Arc::new(Float32Array::from(vec![0.1, 0.7, 0.3, 0.9]));
        let mut a = Agreements::new(plan(ColumnKind::Score));
        a.observe(&[x.clone(), x], &[0]);
        let Agreement::Score {
            mean_abs_diff,
            correlation,
            ..
        } = only(a).1
        else {
            panic!()
        };
        assert_eq!((mean_abs_diff, correlation), (Some(0.0), Some(1.0)));
        let c: ArrayRef = Arc::new(Float32Array::from(vec![0.5, 0.5]));
        let v: ArrayRef = Arc::new(Float32Array::from(vec![0.1, 0.2]));
        let mut a = Agreements::new(plan(ColumnKind::Score));
        a.observe(&[c, v], &[0]);
        let Agreement::Score { correlation, .. } = only(a).1 else {
            panic!()
        };
        assert_eq!(correlation, None);
        let json = serde_json::to_value(only(Agreements::new(plan(ColumnKind::Label))).1).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"kind": "label", "rows": 0, "agreement_rate": null, "confusion": {}})
        );
    }
}
