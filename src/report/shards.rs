//! The documents of a sharded run in progress: the run's record (`run.json`, written by the
//! first shard to start, which the others adopt) and each finished shard's manifest
//! (`shards/<i>.json`), from which the last shard builds the run's `_manifest.json` and
//! `_metrics.json` ([`merge`]): counts and reject reasons summed exactly, batch latency
//! percentiles from merged histograms.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use indexmap::IndexMap;

use super::agreement::{Agreements, AgreementsState, ChallengerColumns, ChallengerReport};
use super::columns::{ColumnProfiles, ColumnProfilesState, ProfilePlan};
use super::distribution::Distribution;
use super::{DriftReport, Latency, PartFile, ReasonCount, RowCounts, RunMetrics, StageSeconds};

/// What a sharded run is: every shard of it must agree with the record the first one wrote,
/// which also holds what committing the run needs from the spec (so that `batchscore commit`
/// can do it with no spec).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub run_key: String,
    pub run_id: String,
    pub shards: usize,
    pub spec_hash: String,
    pub model_sha256: String,
    pub input_fingerprint: String,
    pub started_at: String,
    pub job_name: String,
    pub output_uri: String,
    pub model_uri: String,
    /// The registry model's name and version, when `[model]` named one.
    #[serde(default)]
    pub model_name: Option<String>,
    #[serde(default)]
    pub model_version: Option<String>,
    /// `parquet` or `csv`.
    pub format: String,
    pub mode: crate::spec::WriteMode,
    /// Whether the run commits into a run history (`[output] layout`).
    #[serde(default)]
    pub layout: crate::spec::OutputLayout,
    /// The spec's `[monitor]`: the alerts the committing shard checks, where it pushes.
    #[serde(default)]
    pub monitor: crate::spec::MonitorSpec,
    pub max_rejected: Option<u64>,
    pub max_rejected_rate: Option<f64>,
    /// A resumable run (`run --resume`): its "shards" are pieces one process scores in turn.
    #[serde(default)]
    pub resumable: bool,
}

impl RunRecord {
    /// What differs between two records, in words; empty when they are the same run.
    pub fn differences(&self, other: &RunRecord) -> Vec<&'static str> {
        let mut d = Vec::new();
        if self.spec_hash != other.spec_hash {
            d.push("the spec (after its --vars)");
        }
        if self.model_sha256 != other.model_sha256 {
            d.push("the model");
        }
        if self.input_fingerprint != other.input_fingerprint {
            d.push("the input files");
        }
        if self.resumable != other.resumable {
            d.push("being resumable (--resume) rather than sharded (--shard)");
        } else if self.shards != other.shards {
            d.push("the shard count");
        }
        d
    }
}

/// Batch latencies in buckets 5% wide, which shards add up.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencyHistogram {
    /// Count per bucket; bucket `i` holds latencies up to `MIN * RATIO^i` seconds.
    pub buckets: BTreeMap<u32, u64>,
    pub max: f64,
}

const MIN_LATENCY: f64 = 1e-6;
const RATIO: f64 = 1.05;

impl LatencyHistogram {
    pub fn from_samples(samples: &[f64]) -> Self {
        let mut h = Self::default();
        for &s in samples {
            let bucket = (s.max(MIN_LATENCY) / MIN_LATENCY).ln() / RATIO.ln();
            *h.buckets.entry(bucket.ceil().max(0.0) as u32).or_default() += 1;
            h.max = h.max.max(s);
        }
        h
    }

    pub fn merge(&mut self, other: &Self) {
        for (b, n) in &other.buckets {
            *self.buckets.entry(*b).or_default() += n;
        }
        self.max = self.max.max(other.max);
    }

    /// Nearest-rank percentiles, each the upper bound of its bucket (at most 5% high, and
    /// never above the largest latency).
    pub fn latency(&self) -> Latency {
        let total: u64 = self.buckets.values().sum();
        if total == 0 {
            return Latency::default();
        }
        let at = |q: f64| {
            let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
            let mut seen = 0;
            for (b, n) in &self.buckets {
                seen += n;
                if seen >= rank {
                    return (MIN_LATENCY * RATIO.powi(*b as i32)).min(self.max);
                }
            }
            self.max
        };
        Latency {
            p50: at(0.50),
            p95: at(0.95),
            p99: at(0.99),
            max: self.max,
        }
    }
}

/// A finished shard: its parts, where they are staged, and what it counted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardManifest {
    pub run_id: String,
    pub run_key: String,
    pub shard: usize,
    pub shards: usize,
    /// The process that wrote it; its parts are staged under `parts/<shard>-<attempt>/`.
    pub attempt: String,
    pub files: Vec<PartFile>,
    pub rejected_files: Vec<PartFile>,
    /// The shard's own metrics (its top reasons only; `reasons` has every one).
    pub metrics: RunMetrics,
    pub reasons: Vec<ReasonCount>,
    pub latency: LatencyHistogram,
    /// Malformed CSV records the shard's scan set aside (counted in `metrics.rows.rejected`).
    pub malformed: u64,
    /// The shard's column profiles, merged with the other shards' into the run's
    /// distributions at the commit.
    #[serde(default)]
    pub profiles: Option<ShardProfiles>,
    /// The shard's challenger tallies, merged into the run's agreement figures at the commit.
    #[serde(default)]
    pub agreements: Option<ShardAgreements>,
}

/// A shard's challenger tallies as it saved them: the columns compared, the tallies, and
/// each challenger's model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardAgreements {
    pub plan: Vec<ChallengerColumns>,
    pub state: AgreementsState,
    pub models: Vec<super::ModelReport>,
}

/// The run's challenger reports from every shard's tallies, merged as one process's workers'
/// are; none when the run has no challengers or a shard's tallies do not fit (a warning).
pub fn merge_agreements(shards: &[ShardManifest]) -> Option<IndexMap<String, ChallengerReport>> {
    let first = shards.iter().find_map(|s| s.agreements.as_ref())?;
    let plan = std::sync::Arc::new(first.plan.clone());
    let mut tallies = Vec::new();
    for s in shards.iter().filter_map(|s| s.agreements.as_ref()) {
        let Some(a) = Agreements::from_state(plan.clone(), s.state.clone()) else {
            tracing::warn!(
                "a shard's challenger tallies do not fit the run's; its agreement figures are left out"
            );
            return None;
        };
        tallies.push(a);
    }
    let merged = super::merge_all(tallies, Agreements::merge);
    merged.map(|m| m.reports(&first.models))
}

/// A shard's column profiles as it saved them: what it profiled (with the baseline's
/// distributions), the profiles' state, and the baseline's name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardProfiles {
    pub plan: ProfilePlan,
    pub state: ColumnProfilesState,
    pub baseline: Option<String>,
}

/// The run's distributions and drift from every shard's profiles, merged exactly as one
/// process's workers are; none when no shard saved any, or one cannot be read (a warning).
pub fn merge_profiles(
    shards: &[ShardManifest],
) -> Option<(IndexMap<String, Distribution>, Option<DriftReport>)> {
    let first = shards.iter().find_map(|s| s.profiles.as_ref())?;
    let plan = std::sync::Arc::new(first.plan.clone());
    let mut profiles = Vec::new();
    for s in shards.iter().filter_map(|s| s.profiles.as_ref()) {
        match ColumnProfiles::from_state(plan.clone(), s.state.clone()) {
            Ok(p) => profiles.push(p),
            Err(e) => {
                tracing::warn!(error = %e, "a shard's column profiles cannot be read; the run's distributions are left out");
                return None;
            }
        }
    }
    let merged = super::merge_all(profiles, ColumnProfiles::merge);
    merged.map(|m| m.finish(first.baseline.as_deref()))
}

impl ShardManifest {
    /// Where the shard's parts are staged, relative to the run's folder.
    pub fn staging(&self) -> String {
        format!("parts/{}-{}", self.shard, self.attempt)
    }
}

/// The run's metrics from every shard's: counts summed, reasons summed exactly, latency
/// percentiles from the merged histograms, wall time from the first start to the last end.
pub fn merge(shards: &[ShardManifest], started_at: &str) -> Option<RunMetrics> {
    let first = shards.first()?;
    let mut m = first.metrics.clone();
    let mut reasons: BTreeMap<String, u64> = BTreeMap::new();
    let mut latency = LatencyHistogram::default();
    let (mut rows, mut stages) = (zero_rows(), zero_stages());
    let mut end: f64 = 0.0;
    let start = shards
        .iter()
        .map(|s| seconds_of(&s.metrics.started_at))
        .fold(f64::MAX, f64::min);
    m.batches = 0;
    m.workers = 0;
    m.output_files = 0;
    m.output_bytes = 0;
    m.non_finite_outputs = 0;
    m.text = merge_text(shards);
    for s in shards {
        let sm = &s.metrics;
        add_rows(&mut rows, &sm.rows);
        add_stages(&mut stages, &sm.stage_seconds);
        for r in &s.reasons {
            *reasons.entry(r.reason.clone()).or_default() += r.count;
        }
        latency.merge(&s.latency);
        m.batches += sm.batches;
        m.workers += sm.workers;
        m.output_files += sm.output_files;
        m.output_bytes += sm.output_bytes;
        m.non_finite_outputs += sm.non_finite_outputs;
        end = end.max(seconds_of(&sm.started_at) + sm.wall_seconds);
    }
    let mut reasons: Vec<ReasonCount> = reasons
        .into_iter()
        .map(|(reason, count)| ReasonCount { reason, count })
        .collect();
    reasons.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.reason.cmp(&b.reason)));
    reasons.truncate(10);
    m.started_at = started_at.to_string();
    m.wall_seconds = (end - start).max(0.0);
    m.rows_per_second = if m.wall_seconds > 0.0 {
        rows.scored as f64 / m.wall_seconds
    } else {
        0.0
    };
    m.rows = rows;
    m.stage_seconds = stages;
    m.batch_latency_seconds = latency.latency();
    m.rejected_reasons = reasons;
    Some(m)
}

fn seconds_of(rfc3339: &str) -> f64 {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .map(|t| t.timestamp_millis() as f64 / 1000.0)
        .unwrap_or(0.0)
}

fn zero_rows() -> RowCounts {
    RowCounts {
        read: Some(0),
        selected: 0,
        scored: 0,
        rejected: 0,
        written: 0,
        malformed: 0,
    }
}

fn add_rows(sum: &mut RowCounts, r: &RowCounts) {
    sum.read = match (sum.read, r.read) {
        (Some(a), Some(b)) => Some(a + b),
        _ => None,
    };
    sum.selected += r.selected;
    sum.scored += r.scored;
    sum.rejected += r.rejected;
    sum.written += r.written;
    sum.malformed += r.malformed;
}

/// A text model's counts over every shard (none for other models).
fn merge_text(shards: &[ShardManifest]) -> Option<crate::score::text::TextMetrics> {
    let mut parts = shards.iter().filter_map(|s| s.metrics.text.as_ref());
    let mut sum = parts.next()?.clone();
    for t in parts {
        sum.add(t);
    }
    Some(sum)
}

fn zero_stages() -> StageSeconds {
    StageSeconds {
        read: 0.0,
        features: 0.0,
        inference: 0.0,
        write: 0.0,
        commit: 0.0,
    }
}

fn add_stages(sum: &mut StageSeconds, s: &StageSeconds) {
    sum.read += s.read;
    sum.features += s.features;
    sum.inference += s.inference;
    sum.write += s.write;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_histograms_give_the_percentiles_of_all_samples_within_five_percent() {
        let a: Vec<f64> = (1..=50).map(|i| i as f64 / 100.0).collect();
        let b: Vec<f64> = (51..=100).map(|i| i as f64 / 100.0).collect();
        let mut h = LatencyHistogram::from_samples(&a);
        h.merge(&LatencyHistogram::from_samples(&b));
        let l = h.latency();
        let all: Vec<f64> = a.iter().chain(&b).copied().collect();
        let exact = Latency::from_samples(all);
        for (got, want) in [(l.p50, exact.p50), (l.p95, exact.p95), (l.p99, exact.p99)] {
            assert!(got >= want && got <= want * 1.05 + 1e-12, "{got} vs {want}");
        }
        assert_eq!(l.max, 1.0);
    }

    #[test]
    fn records_say_what_differs() {
        let r = RunRecord {
            run_key: "k".into(),
            run_id: "r".into(),
            shards: 2,
            spec_hash: "s".into(),
            model_sha256: "m".into(),
            model_name: None,
            model_version: None,
            input_fingerprint: "i".into(),
            started_at: "t".into(),
            job_name: "j".into(),
            output_uri: "o".into(),
            layout: Default::default(),
            monitor: Default::default(),
            model_uri: "m.onnx".into(),
            format: "parquet".into(),
            mode: crate::spec::WriteMode::Error,
            max_rejected: None,
            max_rejected_rate: None,
            resumable: false,
        };
        let mut other = r.clone();
        assert!(r.differences(&other).is_empty());
        other.input_fingerprint = "j".into();
        other.shards = 3;
        assert_eq!(
            r.differences(&other),
            ["the input files", "the shard count"]
        );
        other.resumable = true;
        assert_eq!(
            r.differences(&other),
            [
                "the input files",
                "being resumable (--resume) rather than sharded (--shard)"
            ]
        );
    }
}
