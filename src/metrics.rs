//! What a run reports: `_metrics.json` ([`RunMetrics`]) and `_manifest.json` ([`Manifest`]).
//!
//! Both are plain `Serialize` structs with a JSON Schema in `schemas/`, checked by a test.
//! Stage times are summed over the parallel workers, so with four workers they can add up to
//! four times the wall time; `wall_seconds` is the elapsed time of the whole run.

use schemars::JsonSchema;
use serde::Serialize;

use crate::model::ModelIo;
use crate::sink::PartFile;

/// The contents of `_metrics.json`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
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
    /// Where the model ran: `cpu` or `cuda:N` (after any `fallback`).
    pub device: String,
    pub model: ModelReport,
    pub output_files: u64,
    pub output_bytes: u64,
    /// NaN or ±infinity values the model produced in float output columns.
    pub non_finite_outputs: u64,
    /// Why rows were rejected, most frequent first (at most 10 reasons).
    pub rejected_reasons: Vec<ReasonCount>,
}

/// A reject reason and how many rows it applied to.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ReasonCount {
    pub reason: String,
    pub count: u64,
}

/// Row counts of a run.
#[derive(Debug, Clone, Serialize, JsonSchema)]
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
}

/// Time per stage, summed over workers.
#[derive(Debug, Clone, Serialize, JsonSchema)]
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
#[derive(Debug, Clone, Default, Serialize, JsonSchema)]
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

/// The model as run.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ModelReport {
    pub uri: String,
    pub sha256: String,
    #[schemars(with = "Vec<serde_json::Value>")]
    pub inputs: Vec<ModelIo>,
    #[schemars(with = "Vec<serde_json::Value>")]
    pub outputs: Vec<ModelIo>,
    pub onnxruntime_library: Option<String>,
}

/// The contents of `_manifest.json`: what a reader trusts.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Manifest {
    pub run_id: String,
    pub job_name: String,
    /// SHA-256 of the job spec after templating and path resolution.
    pub spec_hash: String,
    /// SHA-256 of the input files' paths, sizes and modification times.
    pub input_fingerprint: String,
    pub model_uri: String,
    pub model_sha256: String,
    pub format: String,
    /// Every output part with its row count; the output is exactly these files.
    pub files: Vec<PartFile>,
    pub rows: u64,
    /// The dead-letter parts under `_rejected/`: rows that could not be scored.
    pub rejected_files: Vec<PartFile>,
    pub rejected_rows: u64,
    pub committed_at: String,
    pub batchscore_version: String,
}

/// The JSON Schemas committed in `schemas/`, by file name.
pub fn json_schemas() -> Vec<(&'static str, String)> {
    let pretty = |s: schemars::Schema| serde_json::to_string_pretty(&s).unwrap_or_default() + "\n";
    vec![
        ("job.schema.json", crate::spec::json_schema()),
        (
            "metrics.schema.json",
            pretty(schemars::schema_for!(RunMetrics)),
        ),
        (
            "manifest.schema.json",
            pretty(schemars::schema_for!(Manifest)),
        ),
    ]
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

    /// The committed schemas are what the code generates; `BATCHSCORE_BLESS=1` rewrites them.
    #[test]
    fn committed_schemas_are_fresh() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas");
        let bless = std::env::var_os("BATCHSCORE_BLESS").is_some();
        for (name, text) in json_schemas() {
            let path = dir.join(name);
            if bless {
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(&path, &text).unwrap();
            }
            let committed = std::fs::read_to_string(&path).unwrap_or_default();
            assert!(
                committed == text,
                "schemas/{name} is stale: run `BATCHSCORE_BLESS=1 cargo test --lib committed_schemas` and commit it"
            );
        }
    }
}
