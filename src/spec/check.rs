//! Checks of a spec that the types alone cannot make: values that parse but make no sense.
//! Every problem is listed, each under its key.

use std::collections::HashSet;

use super::{JobSpec, MemorySize, ModelSpec, RunSpec};
use crate::diagnostics::Problem;

/// Every problem of a deserialized spec.
pub(super) fn check(spec: &JobSpec) -> Vec<Problem> {
    let mut p = Vec::new();
    check_names_and_uris(spec, &mut p);
    check_inputs(spec, &mut p);
    check_outputs(spec, &mut p);
    check_challengers(spec, &mut p);
    check_run(&spec.run, &mut p);
    check_protection(spec, &mut p);
    super::monitor::check(&spec.monitor, &mut p);
    super::privacy::check(&spec.privacy, &mut p);
    super::text::check(spec, &mut p);
    if spec.output.max_rows_per_file == 0 {
        p.push(Problem::new(
            "output.max_rows_per_file",
            "must be at least 1",
        ));
    }
    p
}

fn check_names_and_uris(spec: &JobSpec, p: &mut Vec<Problem>) {
    if spec.name.trim().is_empty() {
        p.push(Problem::new("name", "must not be empty"));
    }
    let mut uris = vec![
        ("input.uri", spec.input.uri.as_str()),
        ("output.uri", spec.output.uri.as_str()),
    ];
    uris.extend(spec.model.uri.as_deref().map(|u| ("model.uri", u)));
    uris.extend(
        spec.model
            .registry
            .as_deref()
            .map(|u| ("model.registry", u)),
    );
    let challenger_uris: Vec<(String, &str)> = spec
        .challengers
        .iter()
        .enumerate()
        .flat_map(|(i, c)| {
            let uri = c.model.uri.as_deref().map(|u| ("uri", u));
            let registry = c.model.registry.as_deref().map(|u| ("registry", u));
            uri.into_iter()
                .chain(registry)
                .map(move |(k, u)| (format!("challengers[{i}].model.{k}"), u))
        })
        .collect();
    uris.extend(challenger_uris.iter().map(|(k, u)| (k.as_str(), *u)));
    for (key, value) in &uris {
        if value.trim().is_empty() {
            p.push(Problem::new(*key, "must not be empty"));
        }
    }
    p.extend(crate::storage::check(&spec.storage, &uris));
    check_model_ref(&spec.model, "model", p);
    for (key, value) in [
        ("input.csv.delimiter", &spec.input.csv.delimiter),
        ("input.csv.quote", &spec.input.csv.quote),
    ] {
        if value.len() != 1 || !value.is_ascii() {
            p.push(Problem::new(
                key,
                format!("must be one ASCII character, got {value:?}"),
            ));
        }
    }
    let split = spec.input.csv.split_bytes;
    if split != 0 && split < MIN_SPLIT_BYTES {
        p.push(Problem::new(
            "input.csv.split_bytes",
            format!(
                "{split} is below {MIN_SPLIT_BYTES} (1 MiB): units that small cost more to scan than they share; use 0 (one unit per file) or 1 MiB or more"
            ),
        ));
    }
    check_sha256(&spec.model, "model", p);
}

/// The smallest `[input.csv] split_bytes` but 0: every range's shard scans the bytes before
/// it, and chunks no bigger than a range are cut by copying what follows them.
pub const MIN_SPLIT_BYTES: u64 = 1 << 20;

/// A model's `sha256` pin, when set, is 64 hexadecimal digits.
fn check_sha256(m: &ModelSpec, table: &str, p: &mut Vec<Problem>) {
    if let Some(sha) = &m.sha256
        && (sha.len() != 64 || !sha.chars().all(|c| c.is_ascii_hexdigit()))
    {
        p.push(Problem::new(
            format!("{table}.sha256"),
            "must be 64 hexadecimal digits",
        ));
    }
}

/// What a registry's model name, version or alias may hold: each becomes a folder or key name.
pub const PLAIN_NAME: &str = "use letters, digits, '.', '_' and '-' only, not starting with '.'";

/// Whether `value` is a name a registry can hold (see [`PLAIN_NAME`]).
pub fn is_plain_name(value: &str) -> bool {
    !value.is_empty()
        && !value.starts_with('.')
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// A model is a file (`uri`) or a registry version (`name` with `version` or `alias`);
/// problems go under `table` (`model`, or a challenger's `challengers[0].model`).
fn check_model_ref(m: &ModelSpec, table: &str, p: &mut Vec<Problem>) {
    let key = |k: &str| format!("{table}.{k}");
    let by_registry = m.registry.is_some() || m.version.is_some() || m.alias.is_some();
    match (&m.uri, &m.name) {
        (Some(_), Some(_)) => p.push(Problem::new(
            key("name"),
            "a model is a file (uri) or a registry version (name), not both",
        )),
        (Some(_), None) if by_registry => p.push(Problem::new(
            key("uri"),
            "registry, version and alias choose a registry model, which needs name instead of uri",
        )),
        (None, None) => p.push(Problem::new(
            table,
            "give the model's file as uri, or a registry model as name with version or alias",
        )),
        (None, Some(name)) => {
            if m.registry.is_none() {
                p.push(Problem::new(
                    key("registry"),
                    format!("model {name:?} is named, but no registry is set (set registry, or BATCHSCORE_REGISTRY)"),
                ));
            }
            if m.version.is_some() == m.alias.is_some() {
                p.push(Problem::new(
                    key("version"),
                    "a registry model needs exactly one of version and alias",
                ));
            }
            for (k, what, value) in [
                ("name", "model name", Some(name)),
                ("version", "model version", m.version.as_ref()),
                ("alias", "alias", m.alias.as_ref()),
            ] {
                if let Some(v) = value.filter(|v| !is_plain_name(v)) {
                    p.push(Problem::new(key(k), format!("{what} {v:?}: {PLAIN_NAME}")));
                }
            }
        }
        (Some(_), None) => {}
    }
}

/// `[[challengers]]`: plain, unique names, models named as `[model]` is, output tables that
/// name columns. Whether the columns clash with others is checked against the bound models
/// when the job is planned, where every column's name is known.
fn check_challengers(spec: &JobSpec, p: &mut Vec<Problem>) {
    let mut seen = HashSet::new();
    for (i, c) in spec.challengers.iter().enumerate() {
        let key = format!("challengers[{i}]");
        if !is_plain_name(&c.name) {
            p.push(Problem::new(
                format!("{key}.name"),
                format!("challenger name {:?}: {PLAIN_NAME}", c.name),
            ));
        } else if !seen.insert(c.name.as_str()) {
            p.push(Problem::new(
                format!("{key}.name"),
                format!(
                    "challenger {:?} is named twice; names must be unique",
                    c.name
                ),
            ));
        }
        check_model_ref(&c.model, &format!("{key}.model"), p);
        check_sha256(&c.model, &format!("{key}.model"), p);
        let Some(outputs) = &c.outputs else { continue };
        if outputs.is_empty() {
            p.push(Problem::new(
                format!("{key}.outputs"),
                "names no output column; leave the table out for the champion's [outputs]",
            ));
        }
        for (col, expr) in outputs {
            if let Err(e) = OutputRef::parse(expr.reference()) {
                p.push(Problem::new(format!("{key}.outputs.{col}"), e.to_string()));
            }
        }
    }
}

fn check_inputs(spec: &JobSpec, p: &mut Vec<Problem>) {
    for (name, input) in &spec.inputs {
        if input.columns.is_empty() {
            p.push(Problem::new(
                format!("inputs.{name}.columns"),
                "must name at least one column",
            ));
        }
        for (i, c) in input.columns.iter().enumerate() {
            if c.trim().is_empty() {
                p.push(Problem::new(
                    format!("inputs.{name}.columns[{i}]"),
                    "is empty",
                ));
            }
        }
    }
}

fn check_outputs(spec: &JobSpec, p: &mut Vec<Problem>) {
    if let Some(outputs) = &spec.outputs {
        if outputs.is_empty() {
            p.push(Problem::new(
                "outputs",
                "names no output column; leave the table out to get every model output",
            ));
        }
        for (col, expr) in outputs {
            if let Err(e) = OutputRef::parse(expr.reference()) {
                p.push(Problem::new(format!("outputs.{col}"), e.to_string()));
            }
            if spec.output.passthrough.contains(col) {
                p.push(Problem::new(
                    format!("outputs.{col}"),
                    "is also a passthrough column; output column names must be unique",
                ));
            }
        }
    }
    if let Some(c) = &spec.output.model_version_column {
        let clash = spec.output.passthrough.contains(c)
            || spec.outputs.as_ref().is_some_and(|o| o.contains_key(c))
            || crate::reject::COLUMNS.contains(&c.as_str());
        if clash || c.trim().is_empty() {
            p.push(Problem::new(
                "output.model_version_column",
                format!("{c:?} must be a column name of its own, not empty and not a passthrough, output or _rejected/ column"),
            ));
        }
    }
    let mut seen = HashSet::new();
    for (i, c) in spec.output.passthrough.iter().enumerate() {
        if !seen.insert(c) {
            p.push(Problem::new(
                format!("output.passthrough[{i}]"),
                format!("{c:?} is listed twice"),
            ));
        }
    }
    for (i, c) in spec.output.passthrough.iter().enumerate() {
        if crate::reject::COLUMNS.contains(&c.as_str()) {
            p.push(Problem::new(
                format!("output.passthrough[{i}]"),
                format!(
                    "{c:?} is a column name batchscore uses in _rejected/; rename it in the query"
                ),
            ));
        }
    }
}

/// `[output] require_encryption` and `file_mode`.
fn check_protection(spec: &JobSpec, p: &mut Vec<Problem>) {
    use crate::storage::Scheme;
    if let Some(text) = &spec.output.file_mode
        && super::OutputSpec::parse_file_mode(text).is_none()
    {
        p.push(Problem::new(
            "output.file_mode",
            format!("{text:?} is not a file mode batchscore can use: give octal text such as \"0600\" or \"0640\", with read and write for the owner and no execute bits"),
        ));
    }
    if !spec.output.require_encryption {
        return;
    }
    let uri = &spec.output.uri;
    match Scheme::of(uri) {
        Some(Scheme::S3) if spec.storage.sse.is_none() => p.push(Problem::new(
            "output.require_encryption",
            format!("{uri}: S3 objects would be written without server-side encryption: set sse = \"AES256\", or sse = \"aws:kms\" with kms_key_id, under [storage]"),
        )),
        Some(Scheme::Local) => p.push(Problem::new(
            "output.require_encryption",
            format!("{uri}: a local output is not encrypted by batchscore: write to an encrypted object store (S3 with [storage] sse, Azure or GCS), or leave require_encryption out and rely on the disk's own encryption"),
        )),
        _ => {}
    }
}

fn check_run(run: &RunSpec, p: &mut Vec<Problem>) {
    if let Some(r) = run.max_rejected_rate
        && !(0.0..=1.0).contains(&r)
    {
        p.push(Problem::new(
            "run.max_rejected_rate",
            format!("must be between 0 and 1, got {r}"),
        ));
    }
    match &run.memory_limit {
        Some(size @ MemorySize::Text(text)) if size.bytes().is_none() => p.push(Problem::new(
            "run.memory_limit",
            format!("{text:?} is not a size: give bytes, or a number with a unit such as \"512MiB\" or \"2Gi\""),
        )),
        Some(MemorySize::Bytes(0)) => p.push(Problem::new("run.memory_limit", "must be at least 1")),
        _ => {}
    }
    let at_least_one = [
        ("run.batch_size", run.batch_size),
        ("run.inference_batch_size", run.inference_batch_size),
        ("run.intra_op_threads", Some(run.intra_op_threads)),
        ("run.shards", run.shards),
    ];
    for (key, value) in at_least_one {
        if value == Some(0) {
            p.push(Problem::new(key, "must be at least 1"));
        }
    }
}

/// A reference to a model output in `[outputs]`: `name` or `name[index]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputRef {
    pub output: String,
    pub index: Option<usize>,
}

/// Why an `[outputs]` value is not `name` or `name[index]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OutputRefError {
    #[error("names no model output")]
    Empty,
    #[error("{0:?}: expected `output` or `output[index]`")]
    Unclosed(String),
    #[error("{0:?}: the index must be a non-negative integer")]
    BadIndex(String),
    #[error("{0:?}: no output name before `[`")]
    NoName(String),
}

impl OutputRef {
    pub fn parse(s: &str) -> Result<Self, OutputRefError> {
        let s = s.trim();
        let Some(open) = s.find('[') else {
            if s.is_empty() {
                return Err(OutputRefError::Empty);
            }
            return Ok(Self {
                output: s.to_string(),
                index: None,
            });
        };
        let name = s[..open].trim();
        let idx = s[open + 1..]
            .strip_suffix(']')
            .ok_or_else(|| OutputRefError::Unclosed(s.to_string()))?;
        let index: usize = idx
            .trim()
            .parse()
            .map_err(|_| OutputRefError::BadIndex(s.to_string()))?;
        if name.is_empty() {
            return Err(OutputRefError::NoName(s.to_string()));
        }
        Ok(Self {
            output: name.to_string(),
            index: Some(index),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_references_parse_or_say_why() {
        assert_eq!(
            OutputRef::parse(" probabilities[1] ").unwrap(),
            OutputRef {
                output: "probabilities".into(),
                index: Some(1)
            }
        );
        assert_eq!(OutputRef::parse("label").unwrap().index, None);
        assert_eq!(OutputRef::parse(""), Err(OutputRefError::Empty));
        assert!(matches!(
            OutputRef::parse("p[-1]"),
            Err(OutputRefError::BadIndex(_))
        ));
        assert!(matches!(
            OutputRef::parse("p[1"),
            Err(OutputRefError::Unclosed(_))
        ));
        assert!(matches!(
            OutputRef::parse("[1]"),
            Err(OutputRefError::NoName(_))
        ));
    }
}
