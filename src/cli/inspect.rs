//! `batchscore inspect MODEL`: a model's inputs and outputs, opsets and metadata.

use std::path::Path;

use crate::model::Model;

/// Opens the model and describes it, as text or JSON.
pub fn inspect(model: &Path, json: bool, ort_lib: Option<&Path>) -> anyhow::Result<String> {
    crate::model::init_runtime(ort_lib)?;
    let m = Model::open(&model.to_string_lossy(), None)?;
    describe_model(&m, json)
}

/// The `inspect` report.
pub fn describe_model(m: &Model, json: bool) -> anyhow::Result<String> {
    if json {
        let v = serde_json::json!({
            "uri": m.uri,
            "sha256": m.sha256,
            "size_bytes": m.size_bytes,
            "ir_version": m.header.ir_version,
            "producer": format!("{} {}", m.header.producer_name, m.header.producer_version).trim(),
            "model_version": m.header.model_version,
            "opsets": m.header.opsets,
            "inputs": m.inputs,
            "outputs": m.outputs,
            "metadata": m.metadata,
        });
        return Ok(serde_json::to_string_pretty(&v)? + "\n");
    }
    use std::fmt::Write;
    let mut s = String::new();
    let opsets: Vec<String> = m
        .header
        .opsets
        .iter()
        .map(|(d, v)| format!("{d} {v}"))
        .collect();
    writeln!(s, "model:    {}", m.uri)?;
    writeln!(s, "sha256:   {}", m.sha256)?;
    writeln!(s, "size:     {} bytes", m.size_bytes)?;
    writeln!(
        s,
        "producer: {}",
        format!("{} {}", m.header.producer_name, m.header.producer_version).trim()
    )?;
    writeln!(s, "ir:       {}", m.header.ir_version)?;
    writeln!(s, "opsets:   {}", opsets.join(", "))?;
    let width = m
        .inputs
        .iter()
        .chain(&m.outputs)
        .map(|io| io.name.len())
        .max()
        .unwrap_or(0);
    writeln!(s, "inputs:")?;
    for io in &m.inputs {
        writeln!(s, "  {:width$}  {}", io.name, io.kind)?;
    }
    writeln!(s, "outputs:")?;
    for io in &m.outputs {
        writeln!(s, "  {:width$}  {}", io.name, io.kind)?;
    }
    if !m.metadata.is_empty() {
        writeln!(s, "metadata:")?;
        for (k, v) in &m.metadata {
            writeln!(s, "  {k}: {v}")?;
        }
    }
    Ok(s)
}
