//! `_metrics.json` ([`RunMetrics`]): what happened in a run, built from the scorer's counts
//! and timings and what the run knows ([`RunFacts`]).
//!
//! Stage times are summed over the parallel workers, so with four workers they can add up to
//! four times the wall time; `wall_seconds` is the elapsed time of the whole run.

use std::sync::atomic::Ordering;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use indexmap::IndexMap;

use super::distribution::{Distribution, Drift};
use crate::model::{Model, ModelIo};
pub use crate::reject::ReasonCount;
use crate::score::ScoreStats;

/// The contents of `_metrics.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RunMetrics {
    pub run_id: String,
    pub job_name: String,
    pub batchscore_version: String,
    /// RFC 3339 start time (UTC).
    pub started_at: String,
    pub rows: RowCounts,
    /// Batches scored.
    pub batches: u64,
    pub wall_seconds: f64,
    /// Rows scored per second of wall time.
    pub rows_per_second: f64,
    pub stage_seconds: StageSeconds,
    pub batch_latency_seconds: Latency,
    pub workers: usize,
    pub batch_size: usize,
    /// Rows per ONNX Runtime call (`[run] inference_batch_size`, or the model's fixed batch
    /// dimension).
    pub inference_batch_size: usize,
    /// Whether each batch's rows were scored sorted by a tree ensemble's splits
    /// (`[run] reorder_rows`); false for other models.
    pub rows_reordered: bool,
    /// What scored a tree-ensemble model (`[run] tree_engine`): `native`, or `onnxruntime`
    /// (chosen, or fallen back to: the log says why); absent for other models.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tree_engine: Option<String>,
    /// For a text model (`[tokenizer]`): texts tokenized, truncated, and the tokens fed to
    /// the model; absent for other models.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<crate::score::text::TextMetrics>,
    /// Where the model ran: `cpu` or `cuda:N` (after any `fallback`).
    pub device: String,
    /// The memory limit the run's workers and batch size were fitted under (`[run]
    /// memory_limit` or the container's cgroup), when there was one.
    pub memory: Option<MemoryReport>,
    pub model: ModelReport,
    pub output_files: u64,
    pub output_bytes: u64,
    /// NaN or ±infinity values the model produced in float output columns.
    pub non_finite_outputs: u64,
    /// Why rows were rejected, most frequent first (at most 10 reasons).
    pub rejected_reasons: Vec<ReasonCount>,
    /// For a run resumed with `--resume`: the pieces earlier attempts had finished, which
    /// the last attempt skipped. Their rows count in `rows` as the run's.
    #[serde(default)]
    pub resumed: Option<Resumed>,
    /// The distribution of every output column (of the written rows) and every model input
    /// feature (of every row scored or rejected), by name: see the README's "Monitoring".
    #[serde(default)]
    pub distributions: IndexMap<String, Distribution>,
    /// Drift from `[monitor] baseline`, when one was found.
    #[serde(default)]
    pub drift: Option<DriftReport>,
    /// Every `[[monitor.alerts]]` rule with the metric's value and whether it fired.
    #[serde(default)]
    pub alerts: Vec<super::alerts::AlertState>,
    /// Each `[[challengers]]` model by name: its model, the written rows it could not score,
    /// and how far it agrees with the champion on the output columns they share. Absent
    /// without challengers, and from the metrics a sharded or resumed run commits (the
    /// shards' figures are not merged).
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub challengers: IndexMap<String, super::agreement::ChallengerReport>,
}

/// How far this run's columns moved from a baseline run's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DriftReport {
    /// The baseline: `run <id>` of the output's history, or the metrics file's path or URL.
    pub baseline: String,
    /// By column: the population stability index over the baseline's bins or classes, and
    /// the shift of the mean in baseline standard deviations.
    pub columns: IndexMap<String, Drift>,
}

/// What a resumed run did not score again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Resumed {
    /// The pieces the run is cut into (contiguous runs of work units, balanced by rows).
    pub pieces: usize,
    pub pieces_skipped: usize,
    pub units_skipped: usize,
    pub rows_skipped: u64,
}

/// Row counts of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RowCounts {
    /// Rows read from the input files (before `query`), when the reader reports it.
    pub read: Option<u64>,
    /// Rows that reached scoring (after `query`).
    pub selected: u64,
    /// Rows scored and written.
    pub scored: u64,
    /// Rows that could not be scored, written to `_rejected/` with their reason.
    pub rejected: u64,
    /// Rows written to the output.
    pub written: u64,
    /// Malformed CSV records: rejected (counted in `rejected`) before the query, so not in
    /// `selected`.
    #[serde(default)]
    pub malformed: u64,
}

/// Time per stage, summed over workers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct StageSeconds {
    /// Waiting for the next batch: reading and decoding the input, the `query`, and evaluating
    /// the feature expressions run ahead of scoring, so this is the part of them the scoring
    /// workers waited for.
    pub read: f64,
    /// Packing columns into tensors.
    pub features: f64,
    /// ONNX Runtime inference and decoding its outputs into columns.
    pub inference: f64,
    /// Encoding and writing output parts.
    pub write: f64,
    /// Writing the manifest and the atomic commit (wall time).
    pub commit: f64,
}

/// Percentiles of the time to score one batch (features + inference).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Latency {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

impl Latency {
    pub fn from_samples(mut samples: Vec<f64>) -> Self {
        if samples.is_empty() {
            return Self::default();
        }
        samples.sort_by(f64::total_cmp);
        // Nearest-rank percentiles.
        let at = |q: f64| {
            let rank = ((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
            samples[rank - 1]
        };
        Self {
            p50: at(0.50),
            p95: at(0.95),
            p99: at(0.99),
            max: samples[samples.len() - 1],
        }
    }
}

/// What `_metrics.json` says about memory: the limit, the layout chosen and what it is
/// expected to need.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct MemoryReport {
    /// The limit the run was fitted under, in bytes.
    pub limit_bytes: u64,
    /// `[run] memory_limit`, or the cgroup file the limit was read from.
    pub source: String,
    /// The peak the chosen layout is expected to need, in bytes.
    pub estimated_peak_bytes: u64,
    /// Whether the fit made the layout smaller than the spec and the machine asked for.
    pub reduced: bool,
}

/// The model as run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ModelReport {
    pub uri: String,
    pub sha256: String,
    #[schemars(with = "Vec<serde_json::Value>")]
    pub inputs: Vec<ModelIo>,
    #[schemars(with = "Vec<serde_json::Value>")]
    pub outputs: Vec<ModelIo>,
    pub onnxruntime_library: Option<String>,
    /// The registry version the model was loaded as, when `[model]` named one.
    #[serde(default)]
    pub registered: Option<RegisteredModel>,
}

/// A model chosen from a registry: which version, and how.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RegisteredModel {
    pub registry: String,
    pub name: String,
    pub version: String,
    /// The alias the version was chosen by, when it was.
    pub alias: Option<String>,
}

impl RegisteredModel {
    pub fn of(r: &crate::model::registry::Resolved) -> Self {
        Self {
            registry: r.registry.clone(),
            name: r.name.clone(),
            version: r.version.clone(),
            alias: r.alias.clone(),
        }
    }
}

impl ModelReport {
    /// The model as run, with the ONNX Runtime library this process loaded.
    pub fn of(model: &Model) -> Self {
        Self {
            uri: model.uri.clone(),
            sha256: model.sha256.clone(),
            inputs: model.inputs.clone(),
            outputs: model.outputs.clone(),
            onnxruntime_library: crate::model::runtime_library().map(|p| p.display().to_string()),
            registered: model.registered.as_ref().map(RegisteredModel::of),
        }
    }
}

/// What a run knows about itself besides the scorer's counts, for its metrics.
#[derive(Debug, Clone)]
pub struct RunFacts {
    pub run_id: String,
    pub job_name: String,
    /// RFC 3339 start time (UTC).
    pub started_at: String,
    pub wall_seconds: f64,
    /// Rows the file scans produced, when they report it.
    pub rows_read: Option<u64>,
    pub rows_written: u64,
    /// Seconds the scoring workers spent pulling scored batches (reading, features and
    /// inference inside the plan), summed over workers.
    pub pull_seconds: f64,
    /// Seconds spent writing parts, summed over workers.
    pub write_seconds: f64,
    pub workers: usize,
    pub batch_size: usize,
    pub inference_batch_size: usize,
    pub rows_reordered: bool,
    pub tree_engine: Option<String>,
    /// For a text model (`[tokenizer]`): the tokens a text is cut to.
    pub text_max_length: Option<usize>,
    pub device: String,
    pub memory: Option<MemoryReport>,
    pub model: ModelReport,
    pub output_files: u64,
    pub output_bytes: u64,
}

impl RunMetrics {
    /// The metrics of a finished run (`stage_seconds.commit` is set when it commits).
    pub fn new(run: RunFacts, stats: &ScoreStats) -> Self {
        let load = |n: &std::sync::atomic::AtomicU64| n.load(Ordering::Relaxed);
        let secs = |n: &std::sync::atomic::AtomicU64| load(n) as f64 / 1e9;
        let (features, inference) = (secs(&stats.features_ns), secs(&stats.inference_ns));
        let scored = load(&stats.rows_scored);
        let latencies = stats
            .batch_latencies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        Self {
            run_id: run.run_id,
            job_name: run.job_name,
            batchscore_version: env!("CARGO_PKG_VERSION").to_string(),
            started_at: run.started_at,
            rows: RowCounts {
                read: run.rows_read,
                selected: load(&stats.rows_in),
                scored,
                rejected: stats.rejected.rows(),
                written: run.rows_written,
                malformed: load(&stats.rows_malformed),
            },
            batches: load(&stats.batches),
            wall_seconds: run.wall_seconds,
            rows_per_second: if run.wall_seconds > 0.0 {
                scored as f64 / run.wall_seconds
            } else {
                0.0
            },
            stage_seconds: StageSeconds {
                // Pulling a batch includes scoring it; what is left is the wait for it.
                read: (run.pull_seconds - features - inference).max(0.0),
                features,
                inference,
                write: run.write_seconds,
                commit: 0.0,
            },
            batch_latency_seconds: Latency::from_samples(latencies),
            workers: run.workers,
            batch_size: run.batch_size,
            inference_batch_size: run.inference_batch_size,
            rows_reordered: run.rows_reordered,
            tree_engine: run.tree_engine,
            text: run.text_max_length.map(|n| stats.text.metrics(n)),
            device: run.device,
            memory: run.memory,
            model: run.model,
            output_files: run.output_files,
            output_bytes: run.output_bytes,
            non_finite_outputs: load(&stats.non_finite_outputs),
            rejected_reasons: stats.rejected.top(10),
            resumed: None,
            distributions: IndexMap::new(),
            drift: None,
            alerts: Vec::new(),
            challengers: IndexMap::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let l = Latency::from_samples((1..=100).map(f64::from).collect());
        assert_eq!((l.p50, l.p95, l.p99, l.max), (50.0, 95.0, 99.0, 100.0));
        let one = Latency::from_samples(vec![0.25]);
        assert_eq!((one.p50, one.p99), (0.25, 0.25));
        assert_eq!(Latency::from_samples(vec![]).max, 0.0);
    }

    #[test]
    fn metrics_come_from_the_scorers_counts_and_read_back_as_they_were_written() {
        use crate::model::{ElemType, IoKind};
        let stats = ScoreStats::default();
        stats.rows_in.store(10, Ordering::Relaxed);
        stats.rows_scored.store(8, Ordering::Relaxed);
        stats.rejected.add(["null", "null"]);
        stats.features_ns.store(250_000_000, Ordering::Relaxed);
        stats.inference_ns.store(500_000_000, Ordering::Relaxed);
        stats.batch_latencies.lock().unwrap().extend([0.25, 0.5]);
        let facts = RunFacts {
            run_id: "r".into(),
            job_name: "j".into(),
            started_at: "2026-12-02T00:00:00.000Z".into(),
            wall_seconds: 2.0,
            rows_read: Some(12),
            rows_written: 8,
            pull_seconds: 1.0,
            write_seconds: 0.125,
            workers: 2,
            batch_size: 5,
            inference_batch_size: 5,
            rows_reordered: false,
            tree_engine: None,
            text_max_length: None,
            device: "cpu".into(),
            memory: None,
            model: ModelReport {
                uri: "m.onnx".into(),
                sha256: "00".into(),
                inputs: vec![ModelIo {
                    name: "x".into(),
                    kind: IoKind::Tensor {
                        dtype: ElemType::Other("float16"),
                        shape: vec![-1, 3],
                    },
                }],
                outputs: vec![],
                onnxruntime_library: None,
                registered: None,
            },
            output_files: 1,
            output_bytes: 100,
        };
        let m = RunMetrics::new(facts, &stats);
        assert_eq!(
            (m.rows.selected, m.rows.scored, m.rows.rejected),
            (10, 8, 2)
        );
        assert_eq!(m.rows_per_second, 4.0);
        // Pulling took 1 s, 0.75 s of it features and inference: 0.25 s waiting to read.
        assert_eq!(m.stage_seconds.read, 0.25);
        assert_eq!(m.batch_latency_seconds.max, 0.5);
        assert_eq!(m.rejected_reasons[0].count, 2);
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(serde_json::from_str::<RunMetrics>(&json).unwrap(), m);
    }
}
