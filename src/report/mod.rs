//! What a run reports: [`metrics`] (`_metrics.json`, what happened) and [`manifest`]
//! (`_manifest.json`, what a reader trusts). Both are `Serialize` + `Deserialize` structs,
//! read back as types, with a JSON Schema in `schemas/` that a test keeps fresh.

pub mod agreement;
pub mod alerts;
pub mod columns;
pub mod distribution;
pub mod manifest;
pub mod metrics;
pub mod prometheus;
pub mod shards;

pub use manifest::{Manifest, PartFile};
pub use metrics::{
    DriftReport, Latency, MemoryReport, ModelReport, ReasonCount, RegisteredModel, Resumed,
    RowCounts, RunFacts, RunMetrics, StageSeconds,
};

/// Merges every item into the first with `merge`: the tallies of a run's workers, or of its
/// shards. None when there are none.
pub fn merge_all<T>(
    items: impl IntoIterator<Item = T>,
    mut merge: impl FnMut(&mut T, T),
) -> Option<T> {
    let mut items = items.into_iter();
    let mut first = items.next()?;
    for item in items {
        merge(&mut first, item);
    }
    Some(first)
}

/// The JSON Schemas committed in `schemas/`, by file name.
pub fn json_schemas() -> Result<Vec<(&'static str, String)>, serde_json::Error> {
    let pretty =
        |s: schemars::Schema| Ok::<_, serde_json::Error>(serde_json::to_string_pretty(&s)? + "\n");
    Ok(vec![
        ("job.schema.json", crate::spec::json_schema()?),
        (
            "metrics.schema.json",
            pretty(schemars::schema_for!(RunMetrics))?,
        ),
        (
            "manifest.schema.json",
            pretty(schemars::schema_for!(Manifest))?,
        ),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The committed schemas are what the code generates; `BATCHSCORE_BLESS=1` rewrites them.
    #[test]
    fn committed_schemas_are_fresh() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas");
        let bless = std::env::var_os("BATCHSCORE_BLESS").is_some();
        for (name, text) in json_schemas().unwrap() {
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
