//! `_manifest.json`: what a reader trusts. The output is exactly the parts it lists.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A committed output part, as the manifest lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PartFile {
    /// The file's name inside the output directory.
    pub path: String,
    pub rows: u64,
    pub bytes: u64,
}

/// The contents of `_manifest.json`: what a reader trusts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Manifest {
    pub run_id: String,
    /// What makes two processes the same run (see `batchscore plan`): a shard retried after
    /// its run committed finds its key here, and does nothing. Empty in manifests written
    /// before it existed.
    #[serde(default)]
    pub run_key: String,
    pub job_name: String,
    /// SHA-256 of the job spec after templating and path resolution.
    pub spec_hash: String,
    /// SHA-256 of the input files' paths, sizes and modification times.
    pub input_fingerprint: String,
    pub model_uri: String,
    pub model_sha256: String,
    /// The registry model's name and version, when `[model]` named one.
    #[serde(default)]
    pub model_name: Option<String>,
    #[serde(default)]
    pub model_version: Option<String>,
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

impl Manifest {
    /// Every part the output holds: the predictions' parts, then the rejected rows' parts.
    pub fn part_paths(&self) -> impl Iterator<Item = &str> {
        self.files
            .iter()
            .chain(&self.rejected_files)
            .map(|f| f.path.as_str())
    }

    /// Whether this output was committed by the same job (spec hash, model and input files),
    /// which `mode = "skip"` asks.
    pub fn is_same_job(
        &self,
        spec_hash: &str,
        model_sha256: &str,
        input_fingerprint: &str,
    ) -> bool {
        self.spec_hash == spec_hash
            && self.model_sha256 == model_sha256
            && self.input_fingerprint == input_fingerprint
    }
}
