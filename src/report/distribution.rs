//! Column distributions for `_metrics.json`, computed while batches stream past, and drift
//! against a baseline run's distributions.
//!
//! A [`Profile`] accumulates one column: [`Profile::observe`] on every batch (each worker its
//! own), [`Profile::merge`] to combine workers or shards, [`Profile::finish`] for the
//! [`Distribution`] that is written. [`drift`] compares a run's distribution with a baseline's.
//!
//! # Exact and estimated
//!
//! Exact, and exact under merge: `count` (non-null finite values; for a categorical column,
//! non-null values), `nulls`, `non_finite` (NaN and ±infinity, kept out of everything
//! else), `min`, `max`, the class counts, and the histogram counts when the profile was given
//! a baseline's bin edges. `mean` and `std` (population, ddof = 0, like numpy's default) are
//! exact up to rounding: each batch is summed in two passes and batches and workers are
//! combined with Chan's parallel formula, so a merged profile agrees with a single pass to
//! about 1e-12 relative.
//!
//! Estimated, to keep the cost at a few nanoseconds a value: the quantiles, and the histogram
//! of a run without a baseline (unless the column has few distinct values, see below). Each `observe` call takes a deterministic strided sample of
//! at most [`SAMPLE_PER_CALL`] finite values (stride `ceil(n / 1024)`), each standing for
//! `n / samples` rows so that batches of different sizes weigh what their rows weigh; the
//! samples feed DataFusion's t-digest of [`DIGEST_CENTROIDS`] centroids. Without baseline
//! edges the histogram has [`HISTOGRAM_BINS`] bins between this run's estimated deciles
//! (`edges[0]` and the last edge are the exact min and max; equal edges are collapsed, so a
//! constant column has one bin `[c, c]`) and counts `count × (q[i+1] − q[i])`, rounded
//! cumulatively so they sum to `count`; it is marked `exact: false`.
//!
//! # Discrete columns
//!
//! Estimated deciles fit a discrete column badly (a 0/1 flag, `ln(1 + calls)`): its edges
//! collapse onto a few values and the even split of counts between them is wrong, so a next
//! run counting the same data exactly into those edges would read as drifted. So a numeric
//! profile without baseline edges also counts its distinct values exactly, as long as there
//! are at most [`DISTINCT_VALUES`] of them (a 32-slot open-addressing table keyed by the
//! value's bits, `-0.0` as `0.0`; about a nanosecond a value, and nothing once the column
//! has shown more values and the table is dropped). A column that ends with `k` distinct
//! values `v[0] < … < v[k-1]` gets an exact histogram of one bin per value: edges `v[0]`,
//! the `k − 1` midpoints `(v[i-1] + v[i]) / 2` and `v[k-1]` (one bin `[c, c]` for a constant
//! column), so by the bin rule `v[i]` falls in bin `i` and a value new to a later run in the
//! bin of its nearest value. A midpoint is rounded like the decile edges below when that
//! keeps it strictly above `v[i-1]` and at most `v[i]`: unlike the values themselves it then
//! reads back from JSON bit for bit, and a later run counting into the edges counts exactly
//! the same bins, so identical data has a PSI of exactly 0. Merging keeps the union of both
//! sides' values while it stays within the bound.
//!
//! # Bin rule
//!
//! With edges `e[0] <= … <= e[k]` (k bins, interior edges strictly increasing), a value `v`
//! falls in bin `#{ j in 1..k : e[j] <= v }`, which is
//! `numpy.searchsorted(e[1:-1], v, side="right")`: a value equal to an interior edge goes to
//! the upper bin, values below `e[0]` to the first bin and values above `e[k]` to the last.
//! Every non-null finite value is counted.
//!
//! # Categorical columns
//!
//! Strings, booleans, and integer columns flagged as labels count classes: at most
//! [`MAX_CLASSES`] distinct classes, in the order they first appear (a baseline's classes
//! first, so the classes compared for drift are the same); values of further classes are
//! counted under [`OTHER_CLASS`]. The written classes are sorted by count, most frequent first,
//! with [`OTHER_CLASS`] last.
//!
//! # Drift
//!
//! The population stability index over the baseline's bins (or the union of both runs'
//! classes), with `b[i]` the baseline's proportions and `a[i]` the current run's:
//! `PSI = Σ (a[i] − b[i]) · ln(a[i] / b[i])`, each proportion floored at [`EPSILON`] so that
//! an empty bin does not make it infinite. Below 0.1 reads `stable`, 0.1 to 0.25 `moderate`,
//! above 0.25 `major`.
//!
//! # Carrying a profile between processes
//!
//! A [`Distribution`] cannot be merged (its quantiles and estimated histogram are final).
//! [`Profile::state`] is everything a later [`Profile::merge`] needs, as serializable data
//! ([`ProfileState`]: counts, Chan moments, min and max, bins, classes in their order, the
//! distinct values, and the t-digest's centroids with the samples not yet in it merged in),
//! and [`Profile::from_state`] rebuilds the profile, so that a sharded run's shards can write
//! theirs and one process merge them exactly as if they had been workers of one process.
//! Floats are written as text (`"0.1"`, `"1e-300"`, `"inf"`, `"NaN"`) so that they read back
//! bit for bit: bin edges must compare equal to merge, and a JSON number can come back one
//! ulp off (and cannot hold NaN or infinities).

use std::hash::{BuildHasherDefault, Hasher};

use datafusion::arrow::array::{Array, AsArray, PrimitiveArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{
    ArrowPrimitiveType, DataType, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type,
    Int64Type, UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};
use datafusion_functions_aggregate_common::tdigest::{Centroid, TDigest};
use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Centroids of the t-digest that estimates quantiles.
pub const DIGEST_CENTROIDS: usize = 100;
/// The most values of one [`Profile::observe`] call that feed the t-digest.
pub const SAMPLE_PER_CALL: usize = 1024;
/// Bins of a histogram estimated from a run's own deciles.
pub const HISTOGRAM_BINS: usize = 10;
/// The most distinct classes counted by name; further classes count under [`OTHER_CLASS`].
pub const MAX_CLASSES: usize = 100;
/// The class that counts values of classes beyond the first [`MAX_CLASSES`].
pub const OTHER_CLASS: &str = "__other__";
/// The floor of each proportion in the PSI, so that an empty bin costs a large but finite
/// amount instead of making the index infinite.
pub const EPSILON: f64 = 1e-4;

/// The most distinct values a numeric profile counts exactly, to write one histogram bin per
/// value; a column with more gets the estimated decile histogram. As many as the bins the
/// vectorized kernel counts (`FAST_BINS`), so a next run counting into these edges stays fast.
pub const DISTINCT_VALUES: usize = 16;

/// Samples buffered before they are merged into the digest: merging sorts and compresses,
/// which is cheap per sample only in bulk.
const DIGEST_BUFFER: usize = 8192;
/// Lanes of the vectorized sums; a single running sum cannot vectorize because float addition
/// is not associative.
const LANES: usize = 8;
/// Bins counted by the vectorized kernel (its per-lane tables are this long).
const FAST_BINS: usize = 16;
/// Slots of the distinct-value table: a power of two, at least twice [`DISTINCT_VALUES`] so
/// that probes stay short and an empty slot always ends one.
const DISTINCT_SLOTS: usize = 32;
/// An empty slot of the distinct-value table: the bits of a NaN, never those of a counted
/// (finite) value.
const EMPTY_SLOT: u64 = u64::MAX;

/// Why a profile could not be built or merged.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProfileError {
    /// Bin edges must be at least two finite values, non-decreasing.
    #[error("histogram edges must be at least two finite values in ascending order, got {0:?}")]
    BadEdges(Vec<f64>),
    /// The two profiles count different kinds of column or different bins.
    #[error(
        "cannot merge the profiles of a numeric and a categorical column, or of different bins"
    )]
    Mismatch,
    /// A saved [`ProfileState`] does not describe a profile.
    #[error("invalid saved column profile: {0}")]
    BadState(String),
}

/// The distribution of one column in a run, as written in `_metrics.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Distribution {
    /// Non-null values; for a numeric column, non-null finite values.
    pub count: u64,
    pub nulls: u64,
    /// NaN and ±infinity, left out of every other figure.
    pub non_finite: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean: Option<f64>,
    /// Population standard deviation (ddof = 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub std: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// Estimated from a sample of each batch by a t-digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantiles: Option<Quantiles>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub histogram: Option<Histogram>,
    /// Counts by class, most frequent first, `__other__` last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classes: Option<IndexMap<String, u64>>,
}

/// Estimated quantiles of a numeric column.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Quantiles {
    pub p01: f64,
    pub p05: f64,
    pub p25: f64,
    pub p50: f64,
    pub p75: f64,
    pub p95: f64,
    pub p99: f64,
}

/// Counts of a numeric column in bins: `counts[i]` holds the values of bin `i` by the bin rule
/// of the module documentation (`edges.len() == counts.len() + 1`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Histogram {
    pub edges: Vec<f64>,
    pub counts: Vec<u64>,
    /// True when every value was counted: into a baseline's edges, or one bin per distinct
    /// value of a column with at most 16 of them; false when edges and counts were estimated
    /// from this run's deciles.
    pub exact: bool,
}

/// How far a column moved from the baseline run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Drift {
    /// Population stability index.
    pub psi: f64,
    /// `(mean − baseline mean) / baseline std`, for a numeric column whose baseline std is
    /// not zero.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean_shift: Option<f64>,
    /// Bins (or classes) the index was computed over.
    pub bins: usize,
    /// `stable` (PSI < 0.1), `moderate` (0.1 to 0.25) or `major` (> 0.25).
    pub reading: String,
}

/// A streaming accumulator of one column's [`Distribution`].
#[derive(Debug, Clone)]
pub struct Profile {
    nulls: u64,
    kind: Kind,
}

#[derive(Debug, Clone)]
enum Kind {
    Numeric(Box<Numeric>),
    Categorical(Classes),
}

impl Profile {
    /// A numeric profile; with `edges` (a baseline's, see [`baseline_edges`]) it also counts
    /// every value into those bins.
    pub fn numeric(edges: Option<Vec<f64>>) -> Result<Profile, ProfileError> {
        let bins = edges.map(Bins::new).transpose()?;
        Ok(Profile {
            nulls: 0,
            kind: Kind::Numeric(Box::new(Numeric::new(bins))),
        })
    }

    /// A categorical profile; a baseline's classes, when given, take the first places among
    /// the [`MAX_CLASSES`] counted by name.
    pub fn categorical(baseline_classes: Option<&IndexMap<String, u64>>) -> Profile {
        let mut classes = Classes::default();
        for name in baseline_classes.into_iter().flat_map(|c| c.keys()) {
            if name != OTHER_CLASS && classes.counts.len() < MAX_CLASSES {
                classes.counts.entry(name.as_str().into()).or_insert(0);
            }
        }
        Profile {
            nulls: 0,
            kind: Kind::Categorical(classes),
        }
    }

    /// The profile for a column of `data_type`: numeric for integers, floats and decimals
    /// (unless `label` says an integer column holds class labels), categorical for anything
    /// else. A `baseline` of the same kind gives its edges or classes.
    pub fn for_column(
        data_type: &DataType,
        label: bool,
        baseline: Option<&Distribution>,
    ) -> Result<Profile, ProfileError> {
        if data_type.is_numeric() && !label {
            Profile::numeric(baseline.and_then(baseline_edges))
        } else {
            Ok(Profile::categorical(
                baseline.and_then(|b| b.classes.as_ref()),
            ))
        }
    }

    /// Counts one batch of the column. A numeric profile reads any array arrow casts to
    /// Float64 (values that do not cast count as nulls); a categorical one reads any array
    /// arrow casts to strings (values that do not count under [`OTHER_CLASS`]).
    pub fn observe(&mut self, array: &dyn Array) {
        self.nulls += match &mut self.kind {
            Kind::Numeric(n) => n.observe(array),
            Kind::Categorical(c) => c.observe(array),
        };
    }

    /// Adds another worker's (or shard's) profile of the same column, built the same way.
    pub fn merge(&mut self, other: Profile) -> Result<(), ProfileError> {
        match (&mut self.kind, other.kind) {
            (Kind::Numeric(a), Kind::Numeric(b)) => a.merge(*b)?,
            (Kind::Categorical(a), Kind::Categorical(b)) => a.merge(b),
            _ => return Err(ProfileError::Mismatch),
        }
        self.nulls += other.nulls;
        Ok(())
    }

    /// The distribution so far (the profile can go on observing).
    pub fn finish(&mut self) -> Distribution {
        let mut d = match &mut self.kind {
            Kind::Numeric(n) => n.finish(),
            Kind::Categorical(c) => c.finish(),
        };
        d.nulls = self.nulls;
        d
    }

    /// Everything a later [`Profile::merge`] needs, as serializable data (see the module
    /// documentation); the profile is unchanged.
    pub fn state(&self) -> ProfileState {
        let kind = match &self.kind {
            Kind::Numeric(n) => KindState::Numeric(Box::new(n.state())),
            Kind::Categorical(c) => KindState::Categorical(c.state()),
        };
        ProfileState {
            nulls: self.nulls,
            kind,
        }
    }

    /// The profile a [`Profile::state`] was taken of, to merge or finish.
    pub fn from_state(state: ProfileState) -> Result<Profile, ProfileError> {
        let kind = match state.kind {
            KindState::Numeric(n) => Kind::Numeric(Box::new(Numeric::from_state(*n)?)),
            KindState::Categorical(c) => Kind::Categorical(Classes::from_state(c)?),
        };
        Ok(Profile {
            nulls: state.nulls,
            kind,
        })
    }
}

/// A [`Profile`] as data, from [`Profile::state`]: serialize it to carry the profile to
/// another process, and [`Profile::from_state`] there.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProfileState {
    nulls: u64,
    kind: KindState,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum KindState {
    Numeric(Box<NumericState>),
    Categorical(ClassesState),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct NumericState {
    count: u64,
    non_finite: u64,
    mean: Exact,
    /// Sum of squared deviations from `mean`.
    m2: Exact,
    min: Exact,
    max: Exact,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    bins: Option<BinsState>,
    /// The distinct values with their counts, by value; absent when not counted (baseline
    /// bins) or when there were more than [`DISTINCT_VALUES`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    distinct: Option<Vec<(Exact, u64)>>,
    digest: DigestState,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct BinsState {
    edges: Vec<Exact>,
    counts: Vec<u64>,
}

/// A t-digest with the samples not yet merged into it merged in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct DigestState {
    count: Exact,
    sum: Exact,
    min: Exact,
    max: Exact,
    /// (mean, weight), by mean.
    centroids: Vec<(Exact, Exact)>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct ClassesState {
    /// Every class counted by name, in the order it took its place (a baseline's classes
    /// first, with zero counts when this run has not seen them).
    classes: Vec<(String, u64)>,
    /// Values of classes beyond the first [`MAX_CLASSES`].
    other: u64,
}

/// An f64 written as the shortest text that parses back to it bit for bit (`"0.1"`,
/// `"1e-300"`, `"inf"`, `"NaN"`): serde_json's default parser can read a JSON number one ulp
/// off, and JSON has no NaN or infinities.
#[derive(Debug, Clone, Copy)]
struct Exact(f64);

impl PartialEq for Exact {
    fn eq(&self, other: &Exact) -> bool {
        self.0.to_bits() == other.0.to_bits()
    }
}

impl Serialize for Exact {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // Debug, unlike Display, writes exponents instead of hundreds of digits.
        serializer.collect_str(&format_args!("{:?}", self.0))
    }
}

impl<'de> Deserialize<'de> for Exact {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Exact, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Exact;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a number written as a string")
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Exact, E> {
                text.parse().map(Exact).map_err(E::custom)
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

/// A baseline's bin edges, for the current run's [`Profile::numeric`].
pub fn baseline_edges(d: &Distribution) -> Option<Vec<f64>> {
    d.histogram.as_ref().map(|h| h.edges.clone())
}

/// The drift of `current` from `baseline`, or None when they cannot be compared: a numeric
/// column needs the baseline's histogram and the current run's exact counts in the same
/// edges; a categorical one needs classes on both sides; both need values on both sides.
pub fn drift(baseline: &Distribution, current: &Distribution) -> Option<Drift> {
    if let (Some(b), Some(c)) = (&baseline.classes, &current.classes) {
        let names: IndexMap<&str, ()> =
            b.keys().chain(c.keys()).map(|k| (k.as_str(), ())).collect();
        let count = |m: &IndexMap<String, u64>, k: &str| m.get(k).copied().unwrap_or(0);
        let expected: Vec<u64> = names.keys().map(|k| count(b, k)).collect();
        let actual: Vec<u64> = names.keys().map(|k| count(c, k)).collect();
        return drift_of(&expected, &actual, None);
    }
    let (b, c) = (baseline.histogram.as_ref()?, current.histogram.as_ref()?);
    if !c.exact || !same_edges(&b.edges, &c.edges) || b.counts.len() != c.counts.len() {
        return None;
    }
    let mean_shift = match (baseline.mean, baseline.std, current.mean) {
        (Some(bm), Some(bs), Some(cm)) if bs > 0.0 => Some((cm - bm) / bs),
        _ => None,
    };
    drift_of(&b.counts, &c.counts, mean_shift)
}

fn drift_of(expected: &[u64], actual: &[u64], mean_shift: Option<f64>) -> Option<Drift> {
    let psi = psi(expected, actual)?;
    let reading = if psi < 0.1 {
        "stable"
    } else if psi <= 0.25 {
        "moderate"
    } else {
        "major"
    };
    Some(Drift {
        psi,
        mean_shift,
        bins: expected.len(),
        reading: reading.to_string(),
    })
}

/// `Σ (a − b) · ln(a / b)` over proportions floored at [`EPSILON`]; None when either side is
/// empty.
fn psi(expected: &[u64], actual: &[u64]) -> Option<f64> {
    let (te, ta) = (expected.iter().sum::<u64>(), actual.iter().sum::<u64>());
    if te == 0 || ta == 0 {
        return None;
    }
    let share = |n: u64, total: u64| (n as f64 / total as f64).max(EPSILON);
    let psi = expected
        .iter()
        .zip(actual)
        .map(|(&e, &a)| {
            let (b, a) = (share(e, te), share(a, ta));
            (a - b) * (a / b).ln()
        })
        .sum();
    Some(psi)
}

/// Edges equal up to a few ulps: serde_json's default float parser (without the
/// `float_roundtrip` feature) can move a value read back from a baseline file by one ulp.
fn same_edges(a: &[f64], b: &[f64]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| (x - y).abs() <= 1e-12 * x.abs().max(y.abs()).max(f64::MIN_POSITIVE))
}

/// Bins with edges from a baseline, counted exactly.
#[derive(Debug, Clone)]
struct Bins {
    edges: Vec<f64>,
    counts: Vec<u64>,
}

impl Bins {
    fn new(edges: Vec<f64>) -> Result<Bins, ProfileError> {
        let ordered = edges.windows(2).all(|w| w[0] <= w[1]);
        if edges.len() < 2 || !ordered || edges.iter().any(|e| !e.is_finite()) {
            return Err(ProfileError::BadEdges(edges));
        }
        let counts = vec![0; edges.len() - 1];
        Ok(Bins { edges, counts })
    }

    /// Counts finite `values` by the bin rule.
    fn count(&mut self, values: &[f64]) {
        let interior = &self.edges[1..self.edges.len() - 1];
        let fast = if self.counts.len() <= FAST_BINS {
            count_bins_fast(values, interior, &mut self.counts)
        } else {
            0
        };
        for &v in &values[fast..] {
            self.counts[interior.partition_point(|&e| e <= v)] += 1;
        }
    }
}

/// Counts values in blocks of [`LANES`], comparing the block with one edge at a time so the
/// comparisons vectorize, into a table per lane (so increments of the same bin do not wait
/// on each other). At most [`FAST_BINS`] bins. Returns how many values it counted (the
/// remainder of the last block is the caller's).
fn count_bins_fast(values: &[f64], interior: &[f64], counts: &mut [u64]) -> usize {
    let mut tables = [[0u64; FAST_BINS]; LANES];
    let blocks = values.chunks_exact(LANES);
    let counted = values.len() - blocks.remainder().len();
    for block in blocks {
        let mut bin = [0usize; LANES];
        for &e in interior {
            for (b, &v) in bin.iter_mut().zip(block) {
                *b += usize::from(e <= v);
            }
        }
        for (table, &b) in tables.iter_mut().zip(&bin) {
            // `b <= interior.len() < FAST_BINS`; the mask only spares a bounds check.
            table[b % FAST_BINS] += 1;
        }
    }
    for table in &tables {
        for (c, t) in counts.iter_mut().zip(table) {
            *c += t;
        }
    }
    counted
}

/// The numeric state of a profile.
#[derive(Debug, Clone)]
struct Numeric {
    count: u64,
    non_finite: u64,
    mean: f64,
    /// Sum of squared deviations from `mean`.
    m2: f64,
    min: f64,
    max: f64,
    bins: Option<Bins>,
    /// The distinct values while there are at most [`DISTINCT_VALUES`]; never counted with
    /// baseline bins, whose histogram is exact anyway.
    distinct: Option<Distinct>,
    digest: TDigest,
    /// Samples not yet merged into `digest`, each weighing the rows it stands for.
    pending: Vec<Centroid>,
    /// Reused buffers: a batch converted to f64, and its finite values.
    converted: Vec<f64>,
    finite: Vec<f64>,
}

impl Numeric {
    fn new(bins: Option<Bins>) -> Numeric {
        Numeric {
            count: 0,
            non_finite: 0,
            mean: 0.0,
            m2: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            distinct: bins.is_none().then(Distinct::new),
            bins,
            digest: TDigest::new(DIGEST_CENTROIDS),
            pending: Vec::new(),
            converted: Vec::new(),
            finite: Vec::new(),
        }
    }

    /// Counts a batch; returns its nulls.
    fn observe(&mut self, array: &dyn Array) -> u64 {
        match array.data_type() {
            DataType::Float64 => {
                let a = array.as_primitive::<Float64Type>();
                if a.null_count() == 0 {
                    self.observe_f64(a.values());
                    return 0;
                }
                self.observe_primitive(a, |v| v)
            }
            DataType::Float32 => {
                self.observe_primitive(array.as_primitive::<Float32Type>(), f64::from)
            }
            DataType::Int8 => self.observe_primitive(array.as_primitive::<Int8Type>(), f64::from),
            DataType::Int16 => self.observe_primitive(array.as_primitive::<Int16Type>(), f64::from),
            DataType::Int32 => self.observe_primitive(array.as_primitive::<Int32Type>(), f64::from),
            DataType::Int64 => {
                self.observe_primitive(array.as_primitive::<Int64Type>(), |v| v as f64)
            }
            DataType::UInt8 => self.observe_primitive(array.as_primitive::<UInt8Type>(), f64::from),
            DataType::UInt16 => {
                self.observe_primitive(array.as_primitive::<UInt16Type>(), f64::from)
            }
            DataType::UInt32 => {
                self.observe_primitive(array.as_primitive::<UInt32Type>(), f64::from)
            }
            DataType::UInt64 => {
                self.observe_primitive(array.as_primitive::<UInt64Type>(), |v| v as f64)
            }
            _ => match cast(array, &DataType::Float64) {
                Ok(floats) => self.observe(floats.as_ref()),
                Err(_) => array.len() as u64,
            },
        }
    }

    /// Converts a batch to f64 in a reused buffer, then counts it; returns its nulls.
    fn observe_primitive<T: ArrowPrimitiveType>(
        &mut self,
        array: &PrimitiveArray<T>,
        to_f64: impl Fn(T::Native) -> f64,
    ) -> u64 {
        let mut converted = std::mem::take(&mut self.converted);
        converted.clear();
        let nulls = array.logical_null_count();
        if nulls == 0 {
            converted.extend(array.values().iter().map(|&v| to_f64(v)));
        } else {
            converted.extend(array.iter().flatten().map(to_f64));
        }
        self.observe_f64(&converted);
        self.converted = converted;
        nulls as u64
    }

    /// Counts non-null values, which may hold NaN or infinities.
    fn observe_f64(&mut self, values: &[f64]) {
        let (sum, min, max) = sum_min_max(values);
        if sum.is_finite() {
            return self.add_finite(values, sum, min, max);
        }
        // A NaN or an infinity makes the sum non-finite (so can an overflow, rarely: then
        // nothing is filtered and the moments overflow as they would anyway).
        let mut finite = std::mem::take(&mut self.finite);
        finite.clear();
        finite.extend(values.iter().copied().filter(|v| v.is_finite()));
        self.non_finite += (values.len() - finite.len()) as u64;
        let (sum, min, max) = sum_min_max(&finite);
        self.add_finite(&finite, sum, min, max);
        self.finite = finite;
    }

    fn add_finite(&mut self, values: &[f64], sum: f64, min: f64, max: f64) {
        let n = values.len();
        if n == 0 {
            return;
        }
        let mean = sum / n as f64;
        let m2 = squared_deviations(values, mean);
        self.add_moments(n as u64, mean, m2);
        self.min = self.min.min(min);
        self.max = self.max.max(max);
        if let Some(bins) = &mut self.bins {
            bins.count(values);
        }
        if self.distinct.as_mut().is_some_and(|d| !d.add(values)) {
            self.distinct = None;
        }
        let stride = n.div_ceil(SAMPLE_PER_CALL);
        let weight = n as f64 / n.div_ceil(stride) as f64;
        self.pending.extend(
            values
                .iter()
                .step_by(stride)
                .map(|&v| Centroid::new(v, weight)),
        );
        if self.pending.len() >= DIGEST_BUFFER {
            self.flush();
        }
    }

    /// Chan et al.'s parallel update: combines this state with `n` values of mean `mean` and
    /// squared deviations `m2`, without the cancellation of a sum of squares.
    fn add_moments(&mut self, n: u64, mean: f64, m2: f64) {
        if n == 0 {
            return;
        }
        let total = self.count + n;
        let delta = mean - self.mean;
        let (na, nb, nt) = (self.count as f64, n as f64, total as f64);
        self.mean += delta * nb / nt;
        self.m2 += m2 + delta * delta * na * nb / nt;
        self.count = total;
    }

    /// Merges the buffered samples into the digest.
    fn flush(&mut self) {
        if !self.pending.is_empty() {
            let samples = std::mem::take(&mut self.pending);
            self.digest = with_samples(&self.digest, samples);
        }
    }

    fn merge(&mut self, mut other: Numeric) -> Result<(), ProfileError> {
        match (&mut self.bins, &other.bins) {
            (None, None) => {}
            (Some(a), Some(b)) if a.edges == b.edges => {
                a.counts
                    .iter_mut()
                    .zip(&b.counts)
                    .for_each(|(x, y)| *x += y);
            }
            _ => return Err(ProfileError::Mismatch),
        }
        self.add_moments(other.count, other.mean, other.m2);
        self.non_finite += other.non_finite;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        self.distinct = match (self.distinct.take(), &other.distinct) {
            (Some(mut a), Some(b)) => a.merge(b).then_some(a),
            _ => None,
        };
        self.flush();
        other.flush();
        self.digest = TDigest::merge_digests([&self.digest, &other.digest]);
        Ok(())
    }

    fn state(&self) -> NumericState {
        let digest = if self.pending.is_empty() {
            self.digest.clone()
        } else {
            with_samples(&self.digest, self.pending.clone())
        };
        NumericState {
            count: self.count,
            non_finite: self.non_finite,
            mean: Exact(self.mean),
            m2: Exact(self.m2),
            min: Exact(self.min),
            max: Exact(self.max),
            bins: self.bins.as_ref().map(|b| BinsState {
                edges: b.edges.iter().copied().map(Exact).collect(),
                counts: b.counts.clone(),
            }),
            distinct: self.distinct.as_ref().map(|d| {
                d.entries()
                    .into_iter()
                    .map(|(v, n)| (Exact(v), n))
                    .collect()
            }),
            digest: DigestState {
                count: Exact(digest.count()),
                sum: Exact(digest.sum()),
                min: Exact(digest.min()),
                max: Exact(digest.max()),
                centroids: digest
                    .centroids()
                    .iter()
                    .map(|c| (Exact(c.mean()), Exact(c.weight())))
                    .collect(),
            },
        }
    }

    fn from_state(state: NumericState) -> Result<Numeric, ProfileError> {
        let bad = |what: &str| ProfileError::BadState(what.to_string());
        let bins = match state.bins {
            Some(b) => {
                let mut bins = Bins::new(b.edges.into_iter().map(|e| e.0).collect())?;
                if b.counts.len() != bins.counts.len() {
                    return Err(bad("bin counts do not match the edges"));
                }
                bins.counts = b.counts;
                Some(bins)
            }
            None => None,
        };
        let distinct = match state.distinct {
            Some(values) => {
                let mut d = Distinct::new();
                for (v, n) in values {
                    if !v.0.is_finite() || !d.add_n(v.0, n) {
                        return Err(bad("more distinct values than are counted, or not finite"));
                    }
                }
                Some(d)
            }
            None => None,
        };
        let g = state.digest;
        let centroids = g.centroids.iter().map(|(m, w)| Centroid::new(m.0, w.0));
        let digest = TDigest::try_from_parts(
            DIGEST_CENTROIDS,
            g.sum.0,
            g.count.0,
            g.max.0,
            g.min.0,
            centroids.collect(),
        )
        .map_err(|e| ProfileError::BadState(e.to_string()))?;
        Ok(Numeric {
            count: state.count,
            non_finite: state.non_finite,
            mean: state.mean.0,
            m2: state.m2.0,
            min: state.min.0,
            max: state.max.0,
            bins,
            distinct,
            digest,
            pending: Vec::new(),
            converted: Vec::new(),
            finite: Vec::new(),
        })
    }

    fn finish(&mut self) -> Distribution {
        self.flush();
        let has_values = self.count > 0;
        let finite = |v: f64| Some(v).filter(|v| has_values && v.is_finite());
        let histogram = match &self.bins {
            Some(b) => Some(Histogram {
                edges: b.edges.clone(),
                counts: b.counts.clone(),
                exact: true,
            }),
            None if has_values => Some(match &self.distinct {
                Some(d) => d.histogram(),
                None => self.decile_histogram(),
            }),
            None => None,
        };
        Distribution {
            count: self.count,
            nulls: 0,
            non_finite: self.non_finite,
            mean: finite(self.mean),
            std: finite((self.m2 / self.count as f64).sqrt()),
            min: finite(self.min),
            max: finite(self.max),
            quantiles: has_values.then(|| self.quantiles()),
            histogram,
            classes: None,
        }
    }

    fn quantiles(&self) -> Quantiles {
        let q = |p: f64| self.digest.estimate_quantile(p).clamp(self.min, self.max);
        Quantiles {
            p01: q(0.01),
            p05: q(0.05),
            p25: q(0.25),
            p50: q(0.5),
            p75: q(0.75),
            p95: q(0.95),
            p99: q(0.99),
        }
    }

    /// The histogram between this run's estimated deciles (see the module documentation).
    fn decile_histogram(&self) -> Histogram {
        // (edge, quantile level); a repeated edge keeps its first level, the last is the max.
        let mut edges = vec![(self.min, 0.0)];
        for i in 1..HISTOGRAM_BINS {
            let level = i as f64 / HISTOGRAM_BINS as f64;
            let e = self.digest.estimate_quantile(level);
            let e = json_exact(e);
            if edges.last().is_some_and(|&(last, _)| e > last) && e < self.max {
                edges.push((e, level));
            }
        }
        // A constant column ends as the one bin `[c, c]`.
        edges.push((self.max, 1.0));
        let n = self.count as f64;
        let counts = edges
            .windows(2)
            .map(|w| (n * w[1].1).round() as u64 - (n * w[0].1).round() as u64)
            .collect();
        Histogram {
            edges: edges.into_iter().map(|(e, _)| e).collect(),
            counts,
            exact: false,
        }
    }
}

/// `digest` with `samples` (finite, of positive finite weight, in any order) merged in.
fn with_samples(digest: &TDigest, mut samples: Vec<Centroid>) -> TDigest {
    samples.sort_by(|a, b| a.cmp_mean(b));
    let weight: f64 = samples.iter().map(|c| c.weight()).sum();
    let sum: f64 = samples.iter().map(|c| c.mean() * c.weight()).sum();
    let (min, max) = match (samples.first(), samples.last()) {
        (Some(first), Some(last)) => (first.mean(), last.mean()),
        _ => return digest.clone(),
    };
    // The samples are finite, sorted and of positive finite weight, which is all
    // `try_from_parts` checks, so the error branch is unreachable.
    match TDigest::try_from_parts(DIGEST_CENTROIDS, sum, weight, max, min, samples) {
        Ok(chunk) => TDigest::merge_digests([digest, &chunk]),
        Err(_) => digest.clone(),
    }
}

/// The counts of a numeric column's distinct values, while there are at most
/// [`DISTINCT_VALUES`]: an open-addressing table of [`DISTINCT_SLOTS`] slots keyed by the
/// value's bits, probed linearly from a multiplicative hash. A value costs a multiply, a
/// load and a compare in the common case (about a nanosecond; a scan of a short list, even
/// starting at the last value seen, cost up to three).
#[derive(Debug, Clone)]
struct Distinct {
    keys: [u64; DISTINCT_SLOTS],
    counts: [u64; DISTINCT_SLOTS],
    len: usize,
}

impl Distinct {
    fn new() -> Distinct {
        Distinct {
            keys: [EMPTY_SLOT; DISTINCT_SLOTS],
            counts: [0; DISTINCT_SLOTS],
            len: 0,
        }
    }

    /// Counts finite values; false when they make more than [`DISTINCT_VALUES`] distinct
    /// values (the counts are then incomplete and the table is to be dropped).
    fn add(&mut self, values: &[f64]) -> bool {
        values.iter().all(|&v| self.add_n(v, 1))
    }

    /// Counts `n` of the finite value `v`; false when it would be one value too many.
    #[inline]
    fn add_n(&mut self, v: f64, n: u64) -> bool {
        // `-0.0 + 0.0` is `0.0`: the bin rule cannot tell the two zeros apart.
        let bits = (v + 0.0).to_bits();
        let shift = u64::BITS - DISTINCT_SLOTS.trailing_zeros();
        let mut i = (bits.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> shift) as usize;
        // Ends: at most DISTINCT_VALUES of the slots are taken, so an empty one comes.
        loop {
            let slot = i % DISTINCT_SLOTS;
            if self.keys[slot] == bits {
                self.counts[slot] += n;
                return true;
            }
            if self.keys[slot] == EMPTY_SLOT {
                if self.len == DISTINCT_VALUES {
                    return false;
                }
                self.keys[slot] = bits;
                self.counts[slot] = n;
                self.len += 1;
                return true;
            }
            i += 1;
        }
    }

    /// Adds the other table's counts; false when the union has too many values.
    fn merge(&mut self, other: &Distinct) -> bool {
        other.entries().into_iter().all(|(v, n)| self.add_n(v, n))
    }

    /// The values and their counts, by value.
    fn entries(&self) -> Vec<(f64, u64)> {
        let mut entries: Vec<(f64, u64)> = self
            .keys
            .iter()
            .zip(&self.counts)
            .filter(|&(&k, _)| k != EMPTY_SLOT)
            .map(|(&k, &n)| (f64::from_bits(k), n))
            .collect();
        entries.sort_by(|a, b| a.0.total_cmp(&b.0));
        entries
    }

    /// One exact bin per value (see the module documentation); at least one value.
    fn histogram(&self) -> Histogram {
        let entries = self.entries();
        let values = || entries.iter().map(|&(v, _)| v);
        let mut edges: Vec<f64> = values().take(1).collect();
        for (low, high) in values().zip(values().skip(1)) {
            // Halved apart so that values near the largest finite ones do not overflow.
            let mid = json_exact(low / 2.0 + high / 2.0);
            edges.push(if low < mid && mid <= high { mid } else { high });
        }
        edges.extend(values().next_back());
        Histogram {
            edges,
            counts: entries.iter().map(|&(_, n)| n).collect(),
            exact: true,
        }
    }
}

/// `v` rounded to 15 significant digits. An interior edge becomes a baseline's bin boundary,
/// so it must read back from JSON as the same f64: serde_json's default parser (without the
/// `float_roundtrip` feature) can be one ulp off for 17-digit numbers, but parses numbers of
/// at most 15 digits exactly (between about 1e-8 and 1e22), as numpy does. The change, below
/// 1e-15 relative, is far inside the estimate's error.
fn json_exact(v: f64) -> f64 {
    format!("{v:.14e}").parse().unwrap_or(v)
}

/// Sum, min and max in [`LANES`] lanes. NaN is ignored by min and max and shows in the sum.
fn sum_min_max(values: &[f64]) -> (f64, f64, f64) {
    let mut sum = [0.0; LANES];
    let mut min = [f64::INFINITY; LANES];
    let mut max = [f64::NEG_INFINITY; LANES];
    let blocks = values.chunks_exact(LANES);
    let rest = blocks.remainder();
    for block in blocks {
        for i in 0..LANES {
            let v = block[i];
            sum[i] += v;
            min[i] = if v < min[i] { v } else { min[i] };
            max[i] = if v > max[i] { v } else { max[i] };
        }
    }
    for &v in rest {
        sum[0] += v;
        min[0] = if v < min[0] { v } else { min[0] };
        max[0] = if v > max[0] { v } else { max[0] };
    }
    let min = min.into_iter().fold(f64::INFINITY, f64::min);
    let max = max.into_iter().fold(f64::NEG_INFINITY, f64::max);
    (sum.into_iter().sum(), min, max)
}

/// `Σ (v − mean)²` in [`LANES`] lanes: the second pass of a two-pass variance.
fn squared_deviations(values: &[f64], mean: f64) -> f64 {
    let mut acc = [0.0; LANES];
    let blocks = values.chunks_exact(LANES);
    let rest = blocks.remainder();
    for block in blocks {
        for i in 0..LANES {
            let d = block[i] - mean;
            acc[i] += d * d;
        }
    }
    for &v in rest {
        acc[0] += (v - mean) * (v - mean);
    }
    acc.into_iter().sum()
}

/// FxHash (rustc's hash): the class table never holds more than [`MAX_CLASSES`] keys, so no
/// input can make its probes long, and SipHash would cost more per string than all else.
#[derive(Default, Clone, Copy)]
struct FxHasher(u64);

impl FxHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
    }

    fn write_u8(&mut self, byte: u8) {
        self.add(u64::from(byte));
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// The class counts of a categorical profile.
#[derive(Debug, Clone, Default)]
struct Classes {
    counts: IndexMap<Box<str>, u64, BuildHasherDefault<FxHasher>>,
    /// Values of classes beyond the first [`MAX_CLASSES`].
    other: u64,
}

impl Classes {
    fn add(&mut self, class: &str, n: u64) {
        if let Some(c) = self.counts.get_mut(class) {
            *c += n;
        } else if self.counts.len() < MAX_CLASSES {
            self.counts.insert(class.into(), n);
        } else {
            self.other += n;
        }
    }

    /// Counts a batch; returns its nulls.
    fn observe(&mut self, array: &dyn Array) -> u64 {
        match array.data_type() {
            DataType::Utf8 => array
                .as_string::<i32>()
                .iter()
                .flatten()
                .for_each(|s| self.add(s, 1)),
            DataType::LargeUtf8 => array
                .as_string::<i64>()
                .iter()
                .flatten()
                .for_each(|s| self.add(s, 1)),
            DataType::Utf8View => array
                .as_string_view()
                .iter()
                .flatten()
                .for_each(|s| self.add(s, 1)),
            DataType::Boolean => {
                let b = array.as_boolean();
                let yes = b.true_count() as u64;
                let no = (b.len() - b.null_count()) as u64 - yes;
                for (class, n) in [("true", yes), ("false", no)] {
                    if n > 0 {
                        self.add(class, n);
                    }
                }
            }
            DataType::Int8 => self.observe_labels(array.as_primitive::<Int8Type>()),
            DataType::Int16 => self.observe_labels(array.as_primitive::<Int16Type>()),
            DataType::Int32 => self.observe_labels(array.as_primitive::<Int32Type>()),
            DataType::Int64 => self.observe_labels(array.as_primitive::<Int64Type>()),
            DataType::UInt8 => self.observe_labels(array.as_primitive::<UInt8Type>()),
            DataType::UInt16 => self.observe_labels(array.as_primitive::<UInt16Type>()),
            DataType::UInt32 => self.observe_labels(array.as_primitive::<UInt32Type>()),
            DataType::UInt64 => self.observe_labels(array.as_primitive::<UInt64Type>()),
            _ => match cast(array, &DataType::Utf8) {
                Ok(strings) => return self.observe(strings.as_ref()),
                Err(_) => self.other += (array.len() - array.logical_null_count()) as u64,
            },
        }
        array.logical_null_count() as u64
    }

    /// Counts integer labels by their decimal text.
    fn observe_labels<T: ArrowPrimitiveType>(&mut self, array: &PrimitiveArray<T>)
    where
        T::Native: std::fmt::Display,
    {
        use std::fmt::Write;
        let mut text = String::new();
        for v in array.iter().flatten() {
            text.clear();
            // Writing into a String cannot fail.
            let _ = write!(text, "{v}");
            self.add(&text, 1);
        }
    }

    fn state(&self) -> ClassesState {
        ClassesState {
            classes: self
                .counts
                .iter()
                .map(|(c, &n)| (c.to_string(), n))
                .collect(),
            other: self.other,
        }
    }

    fn from_state(state: ClassesState) -> Result<Classes, ProfileError> {
        let mut classes = Classes {
            counts: IndexMap::default(),
            other: state.other,
        };
        for (class, n) in state.classes {
            if classes.counts.len() == MAX_CLASSES || classes.counts.contains_key(class.as_str()) {
                return Err(ProfileError::BadState(format!(
                    "more than {MAX_CLASSES} classes, or {class:?} twice"
                )));
            }
            classes.counts.insert(class.into(), n);
        }
        Ok(classes)
    }

    fn merge(&mut self, other: Classes) {
        for (class, n) in other.counts {
            self.add(&class, n);
        }
        self.other += other.other;
    }

    fn finish(&self) -> Distribution {
        let mut classes: Vec<(&str, u64)> = self
            .counts
            .iter()
            .filter(|&(c, &n)| n > 0 && &**c != OTHER_CLASS)
            .map(|(c, &n)| (&**c, n))
            .collect();
        classes.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        let other = self.other + self.counts.get(OTHER_CLASS).copied().unwrap_or(0);
        let mut map: IndexMap<String, u64> = classes
            .into_iter()
            .map(|(c, n)| (c.to_string(), n))
            .collect();
        if other > 0 {
            map.insert(OTHER_CLASS.to_string(), other);
        }
        Distribution {
            count: map.values().sum(),
            nulls: 0,
            non_finite: 0,
            mean: None,
            std: None,
            min: None,
            max: None,
            quantiles: None,
            histogram: None,
            classes: Some(map),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{
        ArrayRef, BooleanArray, Float32Array, Float64Array, Int64Array, StringArray,
    };

    use super::*;

    fn floats(values: &[f64]) -> Float64Array {
        Float64Array::from(values.to_vec())
    }

    fn profile_of(values: &[f64], edges: Option<Vec<f64>>) -> Profile {
        let mut p = Profile::numeric(edges).unwrap();
        p.observe(&floats(values));
        p
    }

    /// Values with a spread of magnitudes and no order, the same on every call.
    fn noisy(n: usize) -> Vec<f64> {
        (0..n)
            .map(|i| ((i * 7919) % 1009) as f64 * 0.37 - 50.0 + (i % 13) as f64 * 1e3)
            .collect()
    }

    fn close(a: f64, b: f64, rel: f64) -> bool {
        (a - b).abs() <= rel * a.abs().max(b.abs())
    }

    #[test]
    fn moments_and_extremes_match_a_hand_computation() {
        let d = profile_of(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0], None).finish();
        // Mean 40 / 8 = 5; squared deviations 9+1+1+1+0+0+4+16 = 32; population variance 4.
        assert_eq!(d.count, 8);
        assert_eq!(d.mean, Some(5.0));
        assert_eq!(d.std, Some(2.0));
        assert_eq!((d.min, d.max), (Some(2.0), Some(9.0)));
        assert_eq!((d.nulls, d.non_finite), (0, 0));
    }

    #[test]
    fn moments_over_many_batches_match_one_sum() {
        let values = noisy(50_000);
        let mut p = Profile::numeric(None).unwrap();
        for chunk in values.chunks(777) {
            p.observe(&floats(chunk));
        }
        let d = p.finish();
        let n = values.len() as f64;
        let mean = values.iter().sum::<f64>() / n;
        let var = values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
        assert!(
            close(d.mean.unwrap(), mean, 1e-12),
            "{:?} vs {mean}",
            d.mean
        );
        assert!(close(d.std.unwrap(), var.sqrt(), 1e-12));
        assert_eq!(d.count, 50_000);
    }

    #[test]
    fn nulls_and_non_finite_are_counted_apart() {
        let a = Float64Array::from(vec![
            Some(1.0),
            None,
            Some(f64::NAN),
            Some(3.0),
            Some(f64::INFINITY),
            None,
            Some(f64::NEG_INFINITY),
            Some(5.0),
        ]);
        let mut p = Profile::numeric(Some(vec![0.0, 2.0, 4.0, 6.0])).unwrap();
        p.observe(&a);
        let d = p.finish();
        assert_eq!((d.count, d.nulls, d.non_finite), (3, 2, 3));
        assert_eq!(d.mean, Some(3.0));
        assert_eq!((d.min, d.max), (Some(1.0), Some(5.0)));
        assert_eq!(d.histogram.unwrap().counts, vec![1, 1, 1]);
        // Without nulls, the NaN takes the other path.
        let d = profile_of(&[f64::NAN, 2.0, 4.0], None).finish();
        assert_eq!(
            (d.count, d.nulls, d.non_finite, d.mean),
            (2, 0, 1, Some(3.0))
        );
    }

    #[test]
    fn other_numeric_types_are_read() {
        let mut p = Profile::numeric(None).unwrap();
        p.observe(&Int64Array::from(vec![Some(1), None, Some(3)]));
        p.observe(&Float32Array::from(vec![5.0f32, f32::NAN]));
        let d = p.finish();
        assert_eq!(
            (d.count, d.nulls, d.non_finite, d.mean),
            (3, 1, 1, Some(3.0))
        );
    }

    #[test]
    fn a_value_on_an_interior_edge_goes_to_the_upper_bin_and_outliers_to_the_ends() {
        let edges = vec![0.0, 1.0, 2.0, 3.0];
        // Long enough that the vectorized blocks and the remainder both count.
        let mut values = vec![-5.0, 0.0, 0.5, 1.0, 1.5, 2.0, 2.999, 3.0, 99.0];
        values.extend(std::iter::repeat_n([1.0, 2.0, -1.0, 3.5], 4).flatten());
        let d = profile_of(&values, Some(edges.clone())).finish();
        let h = d.histogram.unwrap();
        // Bin 0: -5, 0, 0.5 and four -1. Bin 1: 1, 1.5 and four 1. Bin 2: 2, 2.999, 3 (the
        // last edge is not interior), 99, four 2 and four 3.5.
        assert_eq!(h.counts, vec![3 + 4, 2 + 4, 4 + 4 + 4]);
        assert_eq!(h.edges, edges);
        assert!(h.exact);
    }

    #[test]
    fn many_bins_take_the_binary_search() {
        let edges: Vec<f64> = (0..=20).map(f64::from).collect();
        let values: Vec<f64> = (0..40).map(|i| f64::from(i) * 0.5).collect();
        let h = profile_of(&values, Some(edges)).finish().histogram.unwrap();
        // 0, 0.5 | 1, 1.5 | ... | 19, 19.5: two a bin.
        assert_eq!(h.counts, vec![2; 20]);
    }

    #[test]
    fn bad_edges_are_refused() {
        for edges in [
            vec![1.0],
            vec![2.0, 1.0],
            vec![0.0, f64::NAN, 1.0],
            vec![0.0, f64::INFINITY],
        ] {
            assert!(matches!(
                Profile::numeric(Some(edges)),
                Err(ProfileError::BadEdges(_))
            ));
        }
    }

    #[test]
    fn merging_two_halves_equals_one_pass() {
        let values = noisy(20_001);
        let edges = vec![-100.0, 0.0, 3000.0, 6000.0, 9000.0, 20_000.0];
        let whole = profile_of(&values, Some(edges.clone())).finish();
        let (left, right) = values.split_at(9_000);
        let mut a = profile_of(left, Some(edges.clone()));
        a.merge(profile_of(right, Some(edges))).unwrap();
        let merged = a.finish();
        assert_eq!(merged.count, whole.count);
        assert_eq!((merged.min, merged.max), (whole.min, whole.max));
        assert!(close(merged.mean.unwrap(), whole.mean.unwrap(), 1e-12));
        assert!(close(merged.std.unwrap(), whole.std.unwrap(), 1e-12));
        assert_eq!(merged.histogram, whole.histogram);
        let p50 = |d: &Distribution| d.quantiles.as_ref().unwrap().p50;
        assert!(close(p50(&merged), p50(&whole), 0.01));

        let labels = ["a", "b", "a", "c", "a", "b", "d"];
        let whole = categorical_of(&[&labels]).finish();
        let mut a = categorical_of(&[&labels[..3]]);
        a.merge(categorical_of(&[&labels[3..]])).unwrap();
        assert_eq!(a.finish(), whole);
    }

    #[test]
    fn profiles_of_different_kinds_or_bins_do_not_merge() {
        let mut p = Profile::numeric(None).unwrap();
        assert_eq!(
            p.merge(Profile::categorical(None)),
            Err(ProfileError::Mismatch)
        );
        assert_eq!(
            p.merge(Profile::numeric(Some(vec![0.0, 1.0])).unwrap()),
            Err(ProfileError::Mismatch)
        );
    }

    #[test]
    fn quantiles_of_a_range_are_within_one_percent() {
        let n = 100_000;
        // A scrambled order (7919 is prime to n) in batches of 8192: stride 8 sampling.
        let values: Vec<f64> = (0..n).map(|i| ((i * 7919) % n) as f64).collect();
        let mut p = Profile::numeric(None).unwrap();
        for chunk in values.chunks(8192) {
            p.observe(&floats(chunk));
        }
        let q = p.finish().quantiles.unwrap();
        let got = [q.p01, q.p05, q.p25, q.p50, q.p75, q.p95, q.p99];
        for (level, got) in [0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99]
            .into_iter()
            .zip(got)
        {
            let truth = level * (n - 1) as f64;
            assert!(
                (got - truth).abs() <= 0.01 * truth,
                "q{level}: {got} vs {truth}"
            );
        }
    }

    #[test]
    fn the_decile_histogram_spans_min_to_max_and_sums_to_count() {
        let values: Vec<f64> = (0..10_000).map(f64::from).collect();
        let h = profile_of(&values, None).finish().histogram.unwrap();
        assert!(!h.exact);
        assert_eq!(h.edges.len(), 11);
        assert_eq!((h.edges[0], h.edges[10]), (0.0, 9999.0));
        assert!(h.edges.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(h.counts, vec![1000; 10]);
        for (i, e) in h.edges.iter().enumerate() {
            assert!((e - 1000.0 * i as f64).abs() < 30.0, "edge {i}: {e}");
        }

        let constant = profile_of(&[7.0; 50], None).finish().histogram.unwrap();
        assert_eq!(
            (constant.edges, constant.counts),
            (vec![7.0, 7.0], vec![50])
        );

        // Half the values at 0: the first edges collapse into one bin holding them.
        let mut skewed = vec![0.0; 500];
        skewed.extend((1..=500).map(f64::from));
        let h = profile_of(&skewed, None).finish().histogram.unwrap();
        assert!(h.edges.windows(2).all(|w| w[0] < w[1]), "{:?}", h.edges);
        assert_eq!(h.counts.iter().sum::<u64>(), 1000);
        assert!(h.counts[0] >= 500, "{:?}", h.counts);
    }

    fn categorical_of(batches: &[&[&str]]) -> Profile {
        let mut p = Profile::categorical(None);
        for batch in batches {
            p.observe(&StringArray::from(batch.to_vec()));
        }
        p
    }

    #[test]
    fn classes_are_counted_most_frequent_first() {
        let mut p = categorical_of(&[&["b", "a", "b"]]);
        p.observe(&StringArray::from(vec![Some("c"), None, Some("b")]));
        let d = p.finish();
        let classes: Vec<(&str, u64)> = d
            .classes
            .as_ref()
            .unwrap()
            .iter()
            .map(|(k, &v)| (k.as_str(), v))
            .collect();
        assert_eq!(classes, vec![("b", 3), ("a", 1), ("c", 1)]);
        assert_eq!((d.count, d.nulls), (5, 1));

        let mut p = Profile::for_column(&DataType::Boolean, false, None).unwrap();
        p.observe(&BooleanArray::from(vec![
            Some(true),
            None,
            Some(false),
            Some(true),
        ]));
        let d = p.finish();
        assert_eq!(d.classes.unwrap().get("true"), Some(&2));
        assert_eq!((d.count, d.nulls), (3, 1));

        let mut p = Profile::for_column(&DataType::Int64, true, None).unwrap();
        p.observe(&Int64Array::from(vec![1, 0, 1]));
        assert_eq!(p.finish().classes.unwrap().get("1"), Some(&2));
    }

    #[test]
    fn classes_beyond_the_cap_count_as_other() {
        let names: Vec<String> = (0..MAX_CLASSES + 5).map(|i| format!("c{i}")).collect();
        let mut p = Profile::categorical(None);
        p.observe(&StringArray::from(names.clone()));
        p.observe(&StringArray::from(vec!["c0", "c104"]));
        let classes = p.finish().classes.unwrap();
        assert_eq!(classes.len(), MAX_CLASSES + 1);
        assert_eq!(classes.get("c0"), Some(&2));
        assert_eq!(classes.get("c100"), None);
        assert_eq!(classes.get(OTHER_CLASS), Some(&6));
        assert_eq!(classes.last().map(|(k, _)| k.as_str()), Some(OTHER_CLASS));

        // A baseline's classes keep their places even when they come last.
        let baseline: IndexMap<String, u64> = [("late".to_string(), 1)].into_iter().collect();
        let mut p = Profile::categorical(Some(&baseline));
        p.observe(&StringArray::from(names));
        p.observe(&StringArray::from(vec!["late"]));
        let classes = p.finish().classes.unwrap();
        assert_eq!(classes.get("late"), Some(&1));
        assert_eq!(classes.get(OTHER_CLASS), Some(&6));
    }

    #[test]
    fn psi_of_a_hand_worked_example() {
        let edges = vec![0.0, 1.0, 2.0, 3.0];
        let baseline = profile_of(
            &[0.5, 0.5, 1.5, 1.5, 2.5, 2.5, 2.5, 2.5, 2.5, 2.5],
            Some(edges),
        )
        .finish();
        // Baseline proportions 0.2, 0.2, 0.6; current 0.5, 0.3, 0.2.
        let current = profile_of(
            &[0.1, 0.2, 0.3, 0.4, 0.9, 1.1, 1.2, 1.9, 2.0, 2.1],
            baseline_edges(&baseline),
        )
        .finish();
        let expected = (0.5 - 0.2) * (0.5f64 / 0.2).ln()
            + (0.3 - 0.2) * (0.3f64 / 0.2).ln()
            + (0.2 - 0.6) * (0.2f64 / 0.6).ln();
        let d = drift(&baseline, &current).unwrap();
        assert!((d.psi - expected).abs() < 1e-12, "{} vs {expected}", d.psi);
        assert_eq!((d.bins, d.reading.as_str()), (3, "major"));
        let shift = (current.mean.unwrap() - baseline.mean.unwrap()) / baseline.std.unwrap();
        assert!((d.mean_shift.unwrap() - shift).abs() < 1e-12);

        assert_eq!(
            drift(&baseline, &baseline).map(|d| (d.psi, d.reading)),
            Some((0.0, "stable".to_string()))
        );
    }

    #[test]
    fn an_empty_bin_costs_the_epsilon_floor() {
        let edges = Some(vec![0.0, 1.0, 2.0]);
        let baseline = profile_of(&[0.5, 1.5, 1.5, 1.5], edges.clone()).finish();
        let current = profile_of(&[1.5, 1.5], edges).finish();
        // Baseline 0.25, 0.75; current 0 (floored to 1e-4), 1.
        let expected =
            (EPSILON - 0.25) * (EPSILON / 0.25).ln() + (1.0 - 0.75) * (1.0f64 / 0.75).ln();
        let d = drift(&baseline, &current).unwrap();
        assert!(d.psi.is_finite());
        assert!((d.psi - expected).abs() < 1e-12, "{} vs {expected}", d.psi);
    }

    #[test]
    fn categorical_drift_runs_over_the_union_of_classes() {
        let baseline = categorical_of(&[&["a", "a", "a", "b"]]).finish();
        let current = categorical_of(&[&["a", "b", "c", "c"]]).finish();
        // Classes a, b, c: baseline 0.75, 0.25, 0 (floored); current 0.25, 0.25, 0.5.
        let expected =
            (0.25 - 0.75) * (0.25f64 / 0.75).ln() + (0.5 - EPSILON) * (0.5 / EPSILON).ln();
        let d = drift(&baseline, &current).unwrap();
        assert!((d.psi - expected).abs() < 1e-12);
        assert_eq!((d.bins, d.mean_shift), (3, None));
    }

    #[test]
    fn drift_needs_the_same_edges_counted_exactly() {
        let baseline = profile_of(&noisy(1000), None).finish();
        // A current run without the baseline's edges has only estimated counts.
        assert_eq!(
            drift(&baseline, &profile_of(&noisy(1000), None).finish()),
            None
        );
        let other_edges = profile_of(&noisy(1000), Some(vec![0.0, 1.0])).finish();
        assert_eq!(drift(&baseline, &other_edges), None);
        let same = profile_of(&noisy(1000), baseline_edges(&baseline)).finish();
        assert!(drift(&baseline, &same).unwrap().psi < 0.01);
        assert_eq!(drift(&baseline, &categorical_of(&[&["a"]]).finish()), None);
    }

    #[test]
    fn readings_follow_the_thresholds() {
        let at = |a: u64, b: u64| drift_of(&[50, 50], &[a, b], None).unwrap();
        assert_eq!(at(50, 50).reading, "stable");
        // (0.65 − 0.5)·ln(1.3) + (0.35 − 0.5)·ln(0.7) ≈ 0.0929; 70/30: ≈ 0.1695; 80/20: ≈ 0.416.
        assert_eq!(at(65, 35).reading, "stable");
        assert_eq!(at(70, 30).reading, "moderate");
        assert_eq!(at(80, 20).reading, "major");
    }

    /// Equal JSON, numbers within 1e-15 relative: serde_json's default parser can read a
    /// 17-digit number back one ulp off.
    fn same_json(a: &serde_json::Value, b: &serde_json::Value) -> bool {
        use serde_json::Value;
        match (a, b) {
            (Value::Number(x), Value::Number(y)) => match (x.as_f64(), y.as_f64()) {
                (Some(x), Some(y)) => x == y || close(x, y, 1e-15),
                _ => x == y,
            },
            (Value::Array(x), Value::Array(y)) => {
                x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same_json(x, y))
            }
            (Value::Object(x), Value::Object(y)) => {
                x.len() == y.len()
                    && x.iter()
                        .zip(y)
                        .all(|((kx, x), (ky, y))| kx == ky && same_json(x, y))
            }
            _ => a == b,
        }
    }

    #[test]
    fn a_distribution_survives_json() {
        let mut p = Profile::numeric(None).unwrap();
        let a: ArrayRef = Arc::new(Float64Array::from(vec![
            Some(0.1),
            None,
            Some(f64::NAN),
            Some(2.0 / 3.0),
            Some(1e-7),
            Some(0.3),
        ]));
        p.observe(a.as_ref());
        let numeric = p.finish();
        let with_edges = profile_of(&[0.25, 0.5], baseline_edges(&numeric)).finish();
        let classes = categorical_of(&[&["x", "y", "x"]]).finish();
        let deciles = profile_of(&noisy(1000), None).finish();
        for d in [numeric, with_edges, classes, deciles] {
            let text = serde_json::to_string(&d).unwrap();
            let back: Distribution = serde_json::from_str(&text).unwrap();
            let value = |d: &Distribution| serde_json::to_value(d).unwrap();
            assert!(same_json(&value(&back), &value(&d)), "{text}");
            assert_eq!(
                (back.count, back.nulls, back.non_finite),
                (d.count, d.nulls, d.non_finite)
            );
            assert_eq!(back.classes, d.classes);
            // Interior edges, a next run's bin boundaries, come back bit for bit.
            let interior = |d: &Distribution| {
                d.histogram
                    .as_ref()
                    .map(|h| h.edges[1..h.edges.len() - 1].to_vec())
            };
            assert_eq!(interior(&back), interior(&d), "{text}");
        }
    }

    /// A baseline as the next run reads it: through JSON, with serde_json's default parser.
    fn through_json(d: &Distribution) -> Distribution {
        let text = serde_json::to_string(d).unwrap();
        serde_json::from_str(&text).unwrap()
    }

    /// `ln(1 + calls)` for calls of 0 to 5, in batches: six values, most with 17 digits.
    fn log_calls(n: usize, batch: usize) -> Profile {
        let values: Vec<f64> = (0..n).map(|i| (1.0 + ((i * 7) % 6) as f64).ln()).collect();
        let baseline = None;
        let mut p = Profile::for_column(&DataType::Float64, false, baseline).unwrap();
        for chunk in values.chunks(batch) {
            p.observe(&floats(chunk));
        }
        p
    }

    #[test]
    fn a_discrete_column_gets_one_exact_bin_per_value() {
        let d = log_calls(6000, 1000).finish();
        let h = d.histogram.as_ref().unwrap();
        assert!(h.exact);
        assert_eq!(h.counts, vec![1000; 6]);
        assert_eq!(h.edges.len(), 7);
        assert_eq!((h.edges[0], h.edges[6]), (0.0, 6f64.ln()));
        // Each value falls in its own bin, the interior edges between neighbours.
        for i in 1..6 {
            let (low, high) = ((i as f64).ln(), (i as f64 + 1.0).ln());
            assert!(low < h.edges[i] && h.edges[i] <= high, "{:?}", h.edges);
        }

        // The next run counts identical data exactly into the edges read back from JSON.
        let baseline = through_json(&d);
        let mut next = Profile::for_column(&DataType::Float64, false, Some(&baseline)).unwrap();
        for batch in 0..6 {
            let values: Vec<f64> = (batch * 1000..(batch + 1) * 1000)
                .map(|i| (1.0 + ((i * 7) % 6) as f64).ln())
                .collect();
            next.observe(&floats(&values));
        }
        let current = next.finish();
        assert_eq!(current.histogram.as_ref().unwrap().counts, vec![1000; 6]);
        let drifted = drift(&baseline, &current).unwrap();
        assert_eq!((drifted.psi, drifted.reading.as_str()), (0.0, "stable"));
        assert_eq!(drifted.bins, 6);

        // A constant column: one bin [c, c], both zeros one value.
        let h = profile_of(&[0.0, -0.0, 0.0], None)
            .finish()
            .histogram
            .unwrap();
        assert_eq!(
            (h.edges, h.counts, h.exact),
            (vec![0.0, 0.0], vec![3], true)
        );
    }

    #[test]
    fn a_flag_moving_from_20_to_50_percent_ones_drifts_by_the_hand_worked_psi() {
        let flags =
            |ones: usize| -> Vec<f64> { (0..100).map(|i| f64::from(u8::from(i < ones))).collect() };
        let baseline = through_json(&profile_of(&flags(20), None).finish());
        let h = baseline.histogram.as_ref().unwrap();
        assert_eq!(
            (h.edges.as_slice(), h.counts.as_slice()),
            (&[0.0, 0.5, 1.0][..], &[80, 20][..])
        );
        let same = profile_of(&flags(20), baseline_edges(&baseline)).finish();
        assert_eq!(drift(&baseline, &same).unwrap().psi, 0.0);
        let current = profile_of(&flags(50), baseline_edges(&baseline)).finish();
        // Baseline 0.8, 0.2; current 0.5, 0.5.
        let expected = (0.5 - 0.8) * (0.5f64 / 0.8).ln() + (0.5 - 0.2) * (0.5f64 / 0.2).ln();
        let d = drift(&baseline, &current).unwrap();
        assert!((d.psi - expected).abs() < 1e-12, "{} vs {expected}", d.psi);
        assert_eq!(d.reading, "major");
    }

    #[test]
    fn more_distinct_values_than_the_bound_get_estimated_deciles() {
        let h = profile_of(&noisy(10_000), None).finish().histogram.unwrap();
        assert!(!h.exact);
        assert_eq!((h.edges.len(), h.counts.len()), (11, 10));

        let values: Vec<f64> = (0..=DISTINCT_VALUES).map(|i| i as f64).collect();
        let h = profile_of(&values[..DISTINCT_VALUES], None).finish();
        assert!(h.histogram.unwrap().exact);
        let h = profile_of(&values, None).finish().histogram.unwrap();
        assert!(!h.exact);

        // Merged: the union counts; past the bound it is estimated.
        let (low, high) = values.split_at(DISTINCT_VALUES / 2);
        let mut a = profile_of(low, None);
        a.merge(profile_of(&high[..high.len() - 1], None)).unwrap();
        let whole = profile_of(&values[..DISTINCT_VALUES], None).finish();
        assert_eq!(a.finish(), whole);
        a.merge(profile_of(&high[high.len() - 1..], None)).unwrap();
        assert!(!a.finish().histogram.unwrap().exact);
    }

    /// `p` rebuilt from its state written as JSON and read back.
    fn through_state(p: &Profile) -> Profile {
        let text = serde_json::to_string(&p.state()).unwrap();
        let state: ProfileState = serde_json::from_str(&text).unwrap();
        Profile::from_state(state).unwrap()
    }

    /// `values` profiled in two halves (each in batches), the second carried through its
    /// state: the merge, the same merge in memory, and one pass.
    fn merged_through_state(
        values: &[f64],
        edges: Option<Vec<f64>>,
    ) -> (Distribution, Distribution, Distribution) {
        let batches = |values: &[f64]| {
            let mut p = Profile::numeric(edges.clone()).unwrap();
            for chunk in values.chunks(3000) {
                p.observe(&floats(chunk));
            }
            p
        };
        let (left, right) = values.split_at(values.len() * 2 / 5);
        let (mut a, b) = (batches(left), batches(right));
        let mut in_memory = a.clone();
        in_memory.merge(b.clone()).unwrap();
        a.merge(through_state(&b)).unwrap();
        (a.finish(), in_memory.finish(), batches(values).finish())
    }

    #[test]
    fn a_profile_carried_through_its_state_merges_like_one_pass() {
        let discrete: Vec<f64> = (0..20_000).map(|i| ((i * 7) % 9) as f64 * 0.1).collect();
        let edges = Some(vec![-100.0, 0.0, 3000.0, 6000.0, 9000.0, 20_000.0]);
        for (values, edges) in [
            (noisy(20_001), None),
            (noisy(20_001), edges),
            (discrete, None),
        ] {
            let (edges_given, discrete) = (edges.is_some(), values.len() == 20_000);
            let (merged, in_memory, whole) = merged_through_state(&values, edges);
            assert_eq!(merged, in_memory);
            assert_eq!(
                (merged.count, merged.nulls, merged.non_finite),
                (whole.count, whole.nulls, whole.non_finite)
            );
            assert_eq!((merged.min, merged.max), (whole.min, whole.max));
            assert!(close(merged.mean.unwrap(), whole.mean.unwrap(), 1e-12));
            assert!(close(merged.std.unwrap(), whole.std.unwrap(), 1e-12));
            let h = merged.histogram.as_ref().unwrap();
            assert_eq!(h.exact, edges_given || discrete, "{h:?}");
            if h.exact {
                assert_eq!(merged.histogram, whole.histogram);
            }
        }

        // Classes keep their order, the baseline's unseen one included, and the overflow.
        let baseline: IndexMap<String, u64> = [("late".to_string(), 1)].into_iter().collect();
        let names: Vec<String> = (0..MAX_CLASSES + 5).map(|i| format!("c{i}")).collect();
        let mut a = Profile::categorical(Some(&baseline));
        a.observe(&StringArray::from(names[..50].to_vec()));
        let mut b = Profile::categorical(Some(&baseline));
        b.observe(&StringArray::from(vec![None, Some("c7"), Some("c60")]));
        b.observe(&StringArray::from(names.clone()));
        let mut in_memory = a.clone();
        in_memory.merge(b.clone()).unwrap();
        let carried = through_state(&b);
        assert_eq!(carried.state(), b.state());
        a.merge(carried).unwrap();
        assert_eq!(a.finish(), in_memory.finish());
    }

    #[test]
    fn an_empty_profile_and_non_finite_moments_survive_the_state() {
        for p in [
            Profile::numeric(None).unwrap(),
            profile_of(&[f64::MAX, -f64::MAX, f64::NAN], None),
        ] {
            let carried = through_state(&p);
            assert_eq!(carried.state(), p.state());
            // Debug, since NaN (of quantiles that overflowed) is not equal to itself.
            let finished = |mut p: Profile| format!("{:?}", p.finish());
            assert_eq!(finished(carried), finished(p));
        }
    }

    #[test]
    fn an_invalid_state_is_refused() {
        let state = serde_json::to_value(profile_of(&noisy(100), None).state()).unwrap();
        let broken = |field: &str, value: serde_json::Value| {
            let mut s = state.clone();
            let numeric = s.pointer_mut("/kind/numeric").unwrap();
            numeric.as_object_mut().unwrap().insert(field.into(), value);
            let state: ProfileState = serde_json::from_value(s).unwrap();
            Profile::from_state(state)
        };
        let mut digest = state.pointer("/kind/numeric/digest").unwrap().clone();
        let centroids = digest.pointer_mut("/centroids").unwrap();
        centroids.as_array_mut().unwrap().reverse();
        assert!(matches!(
            broken("digest", digest),
            Err(ProfileError::BadState(_))
        ));
        let bins = serde_json::json!({"edges": ["0.0", "1.0"], "counts": [1, 2]});
        assert!(matches!(
            broken("bins", bins),
            Err(ProfileError::BadState(_))
        ));
        let mut s = state.clone();
        *s.pointer_mut("/kind/numeric/mean").unwrap() = serde_json::json!(0.5);
        assert!(serde_json::from_value::<ProfileState>(s).is_err());
    }
}
