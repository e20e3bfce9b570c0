//! The job spec: what to read, which model, how columns become tensors, where results go.
//!
//! A spec is TOML (or YAML, by the file's extension). Loading it:
//! 1. parses the file into a generic value tree,
//! 2. replaces `${name}` in every string value with `--var name=value` (`$${` is a literal `${`),
//! 3. deserializes into [`JobSpec`] with unknown keys refused,
//! 4. resolves relative paths against the spec file's folder.
//!
//! Every error names the file and the key (`job spec jobs/a.toml: [output.mode]: ...`).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A batch scoring job.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    /// The job's name, used in logs, the manifest and the metrics. Required.
    pub name: String,
    /// Where the rows come from. Required.
    pub input: InputSpec,
    /// The ONNX model. Required.
    pub model: ModelSpec,
    /// How each model input is built, by the input's name. Default: empty, so that every model
    /// input takes the input column of the same name (the scikit-learn pipeline case).
    #[serde(default)]
    pub inputs: IndexMap<String, ModelInputSpec>,
    /// Where predictions go. Required.
    pub output: OutputSpec,
    /// Output columns, in order: column name = model output, or `output[i]` for element `i` of
    /// the output's last axis. Default: every model output becomes a column of its own name.
    #[serde(default)]
    pub outputs: Option<IndexMap<String, String>>,
    /// Execution settings. Default: see each field.
    #[serde(default)]
    pub run: RunSpec,
    /// Object store settings for every URI of the job. Default: each cloud's environment.
    #[serde(default)]
    pub storage: crate::storage::StorageSpec,
}

/// The input data set.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    /// A file, a directory (read recursively, `key=value` folders become hive partition
    /// columns), a glob, a `file://` URL, or the same in an object store (`s3://`, `gs://`,
    /// `az://`, `abfss://`). Relative paths resolve against the spec's folder. Required.
    pub uri: String,
    /// `"parquet"` or `"csv"`. Default: from the extension (`.parquet`, `.csv`, `.csv.gz`,
    /// `.csv.zst`), or of the first file in a directory.
    #[serde(default)]
    pub format: Option<InputFormat>,
    /// DataFusion SQL over the table `input`; its result is what gets scored. Default: none,
    /// every row of the input.
    #[serde(default)]
    pub query: Option<String>,
    /// CSV reading options. Default: see each field.
    #[serde(default)]
    pub csv: CsvSpec,
}

/// Input file formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum InputFormat {
    Parquet,
    Csv,
}

/// CSV reading options.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CsvSpec {
    /// Whether the first line holds column names. Default: true.
    #[serde(default = "default_true")]
    pub has_header: bool,
    /// The field delimiter, one ASCII character. Default: ",".
    #[serde(default = "default_delimiter")]
    pub delimiter: String,
    /// The quote character, one ASCII character. Default: "\"".
    #[serde(default = "default_quote")]
    pub quote: String,
    /// `"gzip"`, `"zstd"`, `"bzip2"`, `"xz"` or `"none"`. Default: from the file extension.
    #[serde(default)]
    pub compression: Option<CsvCompression>,
}

impl Default for CsvSpec {
    fn default() -> Self {
        Self {
            has_header: true,
            delimiter: default_delimiter(),
            quote: default_quote(),
            compression: None,
        }
    }
}

/// Compression of CSV input files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum CsvCompression {
    None,
    Gzip,
    Zstd,
    Bzip2,
    Xz,
}

/// The model to score with.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// Path or URL of the `.onnx` file: local, `file://`, `s3://`, `gs://`, `az://`,
    /// `abfss://` or `https://`; remote models are cached locally by their SHA-256. Relative
    /// paths resolve against the spec's folder. Required.
    pub uri: String,
    /// The model file's expected SHA-256 (hex). Default: none, any content is accepted. When
    /// set, a model whose hash differs is refused before any row is read.
    #[serde(default)]
    pub sha256: Option<String>,
}

/// How one model input is built from the data.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelInputSpec {
    /// Column names or DataFusion SQL expressions over the (queried) input, packed in this
    /// order along the input's last axis. Required.
    pub columns: Vec<String>,
    /// The value used where an expression is null. Default: none; a null fails the run with
    /// the column and the number of such rows.
    #[serde(default)]
    pub fill_null: Option<FillValue>,
    /// The element type the model input must have (`float32`, `float64`, `int64`, `int32`,
    /// `string`). Default: none, the model's own type is used; when set, a model whose input
    /// has another type is refused.
    #[serde(default)]
    pub dtype: Option<TensorDtype>,
    /// What to do with NaN and ±infinity in a float input: `"keep"` scores them, as
    /// onnxruntime would; `"reject"` sends the row to `_rejected/`. Default: "keep".
    #[serde(default)]
    pub on_non_finite: NonFinite,
}

/// Handling of NaN and ±infinity in float inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum NonFinite {
    #[default]
    Keep,
    Reject,
}

/// A fill value: a number, a string or a boolean.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum FillValue {
    Number(f64),
    Text(String),
    Bool(bool),
}

/// Tensor element types a model input may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum TensorDtype {
    Float32,
    Float64,
    Int64,
    Int32,
    String,
}

impl fmt::Display for TensorDtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Self::Float32 => "float32",
            Self::Float64 => "float64",
            Self::Int64 => "int64",
            Self::Int32 => "int32",
            Self::String => "string",
        };
        f.write_str(s)
    }
}

/// Where and how predictions are written.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OutputSpec {
    /// The output directory (created if missing), local or in an object store (`s3://`,
    /// `gs://`, `az://`, `abfss://`). Relative paths resolve against the spec's folder. Required.
    pub uri: String,
    /// `"parquet"` or `"csv"`. Default: "parquet".
    #[serde(default)]
    pub format: OutputFormat,
    /// Input columns copied to every output row, before the prediction columns. Default: none.
    #[serde(default)]
    pub passthrough: Vec<String>,
    /// `"error"`: refuse to start when the output directory already holds anything;
    /// `"overwrite"`: replace a committed output atomically; `"skip"`: exit 0 at once when
    /// the same job (spec, model sha256 and input files) already committed it, otherwise
    /// replace it as overwrite does. Default: "error".
    #[serde(default)]
    pub mode: WriteMode,
    /// Rows per output part file at most; a partition with more rows rolls over to a new part.
    /// Default: 1000000.
    #[serde(default = "default_max_rows_per_file")]
    pub max_rows_per_file: u64,
}

/// Output file formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    #[default]
    Parquet,
    Csv,
}

impl OutputFormat {
    pub fn extension(self) -> &'static str {
        match self {
            Self::Parquet => "parquet",
            Self::Csv => "csv",
        }
    }
}

/// What to do when the output location already holds data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum WriteMode {
    #[default]
    Error,
    Overwrite,
    Skip,
}

/// Where the model runs.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Device {
    #[default]
    Cpu,
    /// ONNX Runtime's CUDA execution provider (the `onnxruntime-gpu` wheel's library).
    Cuda,
}

/// What to do when `device` cannot be had.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Fallback {
    /// Refuse the job before any work (exit code 2).
    #[default]
    None,
    /// Run on the CPU, with a warning, and say so in `_metrics.json`.
    Cpu,
}

/// Execution settings.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunSpec {
    /// Rows per batch read, scored and written. Default: 8192 (measured: as fast as 65536 for
    /// tree models in input order, faster for small networks, and a quarter of the memory),
    /// and 32768 for a tree ensemble whose rows are sorted (`reorder_rows`): a bigger batch
    /// holds more rows that go the same way (measured: 3 to 8% more rows/s for 20 MiB more).
    /// See the README's measurements.
    #[serde(default)]
    pub batch_size: Option<usize>,
    /// Rows per ONNX Runtime call: each batch is scored in slices of this many rows. A model
    /// whose input fixes the batch dimension is given exactly that many rows per call instead.
    /// Default: 2048 on the CPU (measured: a 256x128 network 16% faster than whole 8192-row
    /// batches, its layers' intermediate values staying in the cache; tree models unchanged),
    /// the whole batch on a GPU.
    #[serde(default)]
    pub inference_batch_size: Option<usize>,
    /// Whether a tree-ensemble model (`TreeEnsembleClassifier`, `TreeEnsembleRegressor`)
    /// scores each batch's rows sorted by the branches they take, rows going the same way side
    /// by side, which ONNX Runtime walks faster (measured: +8% rows/s on a 200-tree LightGBM
    /// model). Predictions are put back in input order; what is written is the same either
    /// way. No effect on other models. Default: true.
    #[serde(default = "default_true")]
    pub reorder_rows: bool,
    /// Parallel scoring workers (partitions, each with its own ONNX Runtime session); 0 means
    /// one per core. Default: 0.
    #[serde(default)]
    pub workers: usize,
    /// ONNX Runtime intra-op threads per worker's session; `batchscore bench MODEL` says when
    /// more than one pays. Default: 1.
    #[serde(default = "default_intra_op_threads")]
    pub intra_op_threads: usize,
    /// Where the model runs: `"cpu"` or `"cuda"`. Default: `"cpu"`.
    #[serde(default)]
    pub device: Device,
    /// The GPU for `device = "cuda"`. Default: 0.
    #[serde(default)]
    pub device_id: u32,
    /// When `device` cannot be had: `"none"` refuses the job, `"cpu"` runs it on the CPU with
    /// a warning. Never silent. Default: `"none"`.
    #[serde(default)]
    pub fallback: Fallback,
    /// The most rows that may be rejected; past it the run stops, commits nothing and exits
    /// with code 3. Default: none, no limit.
    #[serde(default)]
    pub max_rejected: Option<u64>,
    /// The largest share of the selected rows that may be rejected (0.001 = 0.1%), checked
    /// when the run ends; past it nothing is committed and the exit code is 3. Default: none.
    #[serde(default)]
    pub max_rejected_rate: Option<f64>,
}

impl Default for RunSpec {
    fn default() -> Self {
        Self {
            batch_size: None,
            inference_batch_size: None,
            reorder_rows: true,
            workers: 0,
            intra_op_threads: default_intra_op_threads(),
            device: Device::Cpu,
            device_id: 0,
            fallback: Fallback::None,
            max_rejected: None,
            max_rejected_rate: None,
        }
    }
}

fn default_intra_op_threads() -> usize {
    1
}

fn default_true() -> bool {
    true
}
fn default_delimiter() -> String {
    ",".into()
}
fn default_quote() -> String {
    "\"".into()
}
/// Rows per batch when the spec does not say.
pub const DEFAULT_BATCH_SIZE: usize = 8192;
/// Rows per batch for a tree ensemble whose rows are sorted, when the spec does not say.
pub const DEFAULT_SORTED_TREES_BATCH_SIZE: usize = 32768;

/// Rows per ONNX Runtime call on the CPU when the spec does not say.
pub const DEFAULT_CPU_INFERENCE_BATCH: usize = 2048;

impl RunSpec {
    /// Rows per batch: `batch_size`, or the default ([`RunSpec::settle_batch_size`] picks the
    /// model's).
    pub fn batch_size(&self) -> usize {
        self.batch_size.unwrap_or(DEFAULT_BATCH_SIZE)
    }

    /// Fills in the default batch size for the model: bigger when a tree ensemble's rows are
    /// sorted. A batch size the spec sets is kept.
    pub fn settle_batch_size(&mut self, sorted_tree_ensemble: bool) {
        self.batch_size.get_or_insert(if sorted_tree_ensemble {
            DEFAULT_SORTED_TREES_BATCH_SIZE
        } else {
            DEFAULT_BATCH_SIZE
        });
    }

    /// Rows per ONNX Runtime call on `device` (before a model's fixed batch dimension).
    pub fn inference_batch_size(&self, device: crate::model::ExecutionDevice) -> usize {
        let auto = match device {
            crate::model::ExecutionDevice::Cpu => DEFAULT_CPU_INFERENCE_BATCH,
            crate::model::ExecutionDevice::Cuda { .. } => self.batch_size(),
        };
        self.inference_batch_size
            .unwrap_or(auto)
            .min(self.batch_size())
            .max(1)
    }
}

fn default_max_rows_per_file() -> u64 {
    1_000_000
}

/// The columns `_rejected/` parts add after the pass-through columns.
pub const REJECT_COLUMNS: [&str; 3] = ["_stage", "_reason", "_value"];

/// One thing wrong with a spec: the key it concerns and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key, e.g. `inputs.features.columns[2]`; empty for the whole file.
    pub key: String,
    pub message: String,
}

impl Problem {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// A spec that cannot be used, with every problem found.
#[derive(Debug, thiserror::Error)]
pub struct SpecError {
    pub file: PathBuf,
    pub problems: Vec<Problem>,
}

impl SpecError {
    pub fn one(file: &Path, key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            file: file.to_path_buf(),
            problems: vec![Problem::new(key, message)],
        }
    }
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            if p.key.is_empty() {
                write!(f, "job spec {}: {}", self.file.display(), p.message)?;
            } else {
                write!(
                    f,
                    "job spec {}: [{}]: {}",
                    self.file.display(),
                    p.key,
                    p.message
                )?;
            }
        }
        Ok(())
    }
}

/// A loaded, templated and path-resolved spec.
#[derive(Debug, Clone)]
pub struct LoadedSpec {
    pub spec: JobSpec,
    /// The spec file as given on the command line.
    pub file: PathBuf,
    /// SHA-256 of the spec after templating and path resolution (canonical JSON).
    pub hash: String,
}

impl LoadedSpec {
    pub fn error(&self, key: impl Into<String>, message: impl Into<String>) -> SpecError {
        SpecError::one(&self.file, key, message)
    }
}

/// Parses `name=value` command-line variables.
pub fn parse_var(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected NAME=VALUE, got {s:?}")),
    }
}

/// Loads a spec file, substituting `vars`.
pub fn load(file: &Path, vars: &BTreeMap<String, String>) -> Result<LoadedSpec, SpecError> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| SpecError::one(file, "", format!("cannot read the file: {e}")))?;
    let base = file
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    load_str(&text, file, &base, vars)
}

/// Loads a spec from text; `file` names it in errors and picks the syntax by extension,
/// `base` is the folder relative paths resolve against.
pub fn load_str(
    text: &str,
    file: &Path,
    base: &Path,
    vars: &BTreeMap<String, String>,
) -> Result<LoadedSpec, SpecError> {
    let is_yaml = matches!(
        file.extension().and_then(|e| e.to_str()),
        Some("yaml") | Some("yml")
    );
    let mut tree: serde_json::Value = if is_yaml {
        serde_yaml::from_str(text)
            .map_err(|e| SpecError::one(file, "", format!("not valid YAML: {e}")))?
    } else {
        toml::from_str(text).map_err(|e| {
            SpecError::one(
                file,
                "",
                format!("not valid TOML: {}", e.to_string().trim_end()),
            )
        })?
    };

    let mut problems = Vec::new();
    substitute(&mut tree, "", vars, &mut problems);
    if !problems.is_empty() {
        return Err(SpecError {
            file: file.to_path_buf(),
            problems,
        });
    }

    let mut spec: JobSpec = serde_path_to_error::deserialize(tree).map_err(|e| {
        let key = e.path().to_string();
        let key = if key == "." { String::new() } else { key };
        SpecError::one(file, key, with_suggestion(&e.inner().to_string()))
    })?;

    spec.input.uri = resolve_path(base, &spec.input.uri);
    spec.model.uri = resolve_path(base, &spec.model.uri);
    spec.output.uri = resolve_path(base, &spec.output.uri);

    let problems = check(&spec);
    if !problems.is_empty() {
        return Err(SpecError {
            file: file.to_path_buf(),
            problems,
        });
    }

    // serde_json::to_vec on plain data cannot fail: every map key is a string.
    let canonical = serde_json::to_vec(&spec).unwrap_or_default();
    let hash = hex::encode(Sha256::digest(&canonical));
    Ok(LoadedSpec {
        spec,
        file: file.to_path_buf(),
        hash,
    })
}

/// Adds "did you mean" to serde's "unknown field `mdoe`, expected one of `uri`, `mode`".
fn with_suggestion(message: &str) -> String {
    let Some(rest) = message.strip_prefix("unknown field `") else {
        return message.to_string();
    };
    let Some((field, expected)) = rest.split_once('`') else {
        return message.to_string();
    };
    let best = expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(|cand| (crate::features::edit_distance(field, cand), cand))
        .filter(|(d, cand)| *d <= 2.max(cand.len() / 3))
        .min();
    match best {
        Some((_, cand)) => format!("{message} (did you mean `{cand}`?)"),
        None => message.to_string(),
    }
}

/// Checks what the types alone cannot: values that parse but make no sense.
fn check(spec: &JobSpec) -> Vec<Problem> {
    let mut p = Vec::new();
    if spec.name.trim().is_empty() {
        p.push(Problem::new("name", "must not be empty"));
    }
    for (key, value) in [
        ("input.uri", &spec.input.uri),
        ("model.uri", &spec.model.uri),
        ("output.uri", &spec.output.uri),
    ] {
        if value.trim().is_empty() {
            p.push(Problem::new(key, "must not be empty"));
        }
    }
    p.extend(crate::storage::check(
        &spec.storage,
        &[
            ("input.uri", &spec.input.uri),
            ("model.uri", &spec.model.uri),
            ("output.uri", &spec.output.uri),
        ],
    ));
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
    if let Some(sha) = &spec.model.sha256
        && (sha.len() != 64 || !sha.chars().all(|c| c.is_ascii_hexdigit()))
    {
        p.push(Problem::new(
            "model.sha256",
            "must be 64 hexadecimal digits",
        ));
    }
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
    if let Some(outputs) = &spec.outputs {
        if outputs.is_empty() {
            p.push(Problem::new(
                "outputs",
                "names no output column; leave the table out to get every model output",
            ));
        }
        for (col, expr) in outputs {
            if let Err(e) = OutputRef::parse(expr) {
                p.push(Problem::new(format!("outputs.{col}"), e));
            }
            if spec.output.passthrough.contains(col) {
                p.push(Problem::new(
                    format!("outputs.{col}"),
                    "is also a passthrough column; output column names must be unique",
                ));
            }
        }
    }
    let mut seen = std::collections::HashSet::new();
    for (i, c) in spec.output.passthrough.iter().enumerate() {
        if !seen.insert(c) {
            p.push(Problem::new(
                format!("output.passthrough[{i}]"),
                format!("{c:?} is listed twice"),
            ));
        }
    }
    if let Some(r) = spec.run.max_rejected_rate
        && !(0.0..=1.0).contains(&r)
    {
        p.push(Problem::new(
            "run.max_rejected_rate",
            format!("must be between 0 and 1, got {r}"),
        ));
    }
    for (i, c) in spec.output.passthrough.iter().enumerate() {
        if REJECT_COLUMNS.contains(&c.as_str()) {
            p.push(Problem::new(
                format!("output.passthrough[{i}]"),
                format!(
                    "{c:?} is a column name batchscore uses in _rejected/; rename it in the query"
                ),
            ));
        }
    }
    if spec.run.batch_size == Some(0) {
        p.push(Problem::new("run.batch_size", "must be at least 1"));
    }
    if spec.run.inference_batch_size == Some(0) {
        p.push(Problem::new(
            "run.inference_batch_size",
            "must be at least 1",
        ));
    }
    if spec.run.intra_op_threads == 0 {
        p.push(Problem::new("run.intra_op_threads", "must be at least 1"));
    }
    if spec.output.max_rows_per_file == 0 {
        p.push(Problem::new(
            "output.max_rows_per_file",
            "must be at least 1",
        ));
    }
    p
}

/// A reference to a model output in `[outputs]`: `name` or `name[index]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputRef {
    pub output: String,
    pub index: Option<usize>,
}

impl OutputRef {
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if let Some(open) = s.find('[') {
            let name = s[..open].trim();
            let rest = &s[open + 1..];
            let idx = rest
                .strip_suffix(']')
                .ok_or_else(|| format!("{s:?}: expected `output` or `output[index]`"))?;
            let index: usize = idx
                .trim()
                .parse()
                .map_err(|_| format!("{s:?}: the index must be a non-negative integer"))?;
            if name.is_empty() {
                return Err(format!("{s:?}: no output name before `[`"));
            }
            Ok(Self {
                output: name.to_string(),
                index: Some(index),
            })
        } else if s.is_empty() {
            Err("names no model output".into())
        } else {
            Ok(Self {
                output: s.to_string(),
                index: None,
            })
        }
    }
}

/// Replaces `${name}` (a `--var`) and `${env:NAME}` (an environment variable) in every string
/// of the tree; names without a value become problems. Secrets belong in `${env:NAME}`.
fn substitute(
    v: &mut serde_json::Value,
    key: &str,
    vars: &BTreeMap<String, String>,
    problems: &mut Vec<Problem>,
) {
    match v {
        serde_json::Value::String(s) => match expand(s, vars) {
            Ok(out) => *s = out,
            Err(name) => problems.push(Problem::new(
                key,
                match name.strip_prefix("env:") {
                    Some(var) => format!("${{{name}}}: the environment variable {var} is not set"),
                    None => format!("${{{name}}} has no value: pass --var {name}=VALUE"),
                },
            )),
        },
        serde_json::Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                substitute(item, &format!("{key}[{i}]"), vars, problems);
            }
        }
        serde_json::Value::Object(map) => {
            for (k, item) in map.iter_mut() {
                let child = if key.is_empty() {
                    k.clone()
                } else {
                    format!("{key}.{k}")
                };
                substitute(item, &child, vars, problems);
            }
        }
        _ => {}
    }
}

/// Expands `${name}` references; `$${` stays a literal `${`. Returns the first unknown name.
fn expand(s: &str, vars: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos..];
        if let Some(tail) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = tail;
        } else if let Some(tail) = after.strip_prefix("${") {
            let Some(end) = tail.find('}') else {
                // An unclosed `${` is not a reference: keep it as written.
                out.push_str("${");
                rest = tail;
                continue;
            };
            let name = &tail[..end];
            let value = match name.strip_prefix("env:") {
                Some(var) => std::env::var(var).ok(),
                None => vars.get(name).cloned(),
            };
            match value {
                Some(value) => out.push_str(&value),
                None => return Err(name.to_string()),
            }
            rest = &tail[end + 1..];
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Resolves a local path or `file://` URL against `base`; other URLs are left as they are.
fn resolve_path(base: &Path, uri: &str) -> String {
    let path = if let Some(p) = uri.strip_prefix("file://") {
        p
    } else if uri.contains("://") {
        return uri.to_string();
    } else {
        uri
    };
    let keep_slash = path.ends_with('/');
    let p = Path::new(path);
    let joined = if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    };
    let mut s = normalize(&joined).to_string_lossy().into_owned();
    if keep_slash && !s.ends_with('/') {
        s.push('/');
    }
    s
}

/// Removes `.` and `a/..` segments without touching the file system (the path may not exist).
fn normalize(p: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => match out.components().next_back() {
                Some(Component::Normal(_)) => {
                    out.pop();
                }
                Some(Component::RootDir) => {}
                _ => out.push(".."),
            },
            other => out.push(other.as_os_str()),
        }
    }
    if out.as_os_str().is_empty() {
        out.push(".");
    }
    out
}

/// The JSON Schema of the job spec, as committed in `schemas/job.schema.json`.
pub fn json_schema() -> String {
    let schema = schemars::schema_for!(JobSpec);
    // A schema of plain data always serializes.
    serde_json::to_string_pretty(&schema).unwrap_or_default() + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_toml(text: &str, vars: &[(&str, &str)]) -> Result<LoadedSpec, SpecError> {
        let vars = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        load_str(text, Path::new("jobs/a.toml"), Path::new("jobs"), &vars)
    }

    const MINIMAL: &str = r#"
name = "churn"
[input]
uri = "data/"
[model]
uri = "m.onnx"
[output]
uri = "out/ds=${ds}/"
"#;

    #[test]
    fn defaults_and_relative_paths() {
        let s = load_toml(MINIMAL, &[("ds", "2026-11-27")]).unwrap();
        assert_eq!(s.spec.input.uri, "jobs/data/");
        assert_eq!(resolve_path(Path::new("jobs"), "../d/x.csv"), "d/x.csv");
        assert_eq!(resolve_path(Path::new("jobs"), "../../x"), "../x");
        assert_eq!(resolve_path(Path::new("/a"), "file:///b/c"), "/b/c");
        assert_eq!(s.spec.model.uri, "jobs/m.onnx");
        assert_eq!(s.spec.output.uri, "jobs/out/ds=2026-11-27/");
        assert_eq!(s.spec.output.mode, WriteMode::Error);
        assert_eq!(s.spec.output.format, OutputFormat::Parquet);
        assert_eq!(s.spec.run.batch_size(), 8192);
        assert_eq!(s.spec.run.workers, 0);
        assert!(s.spec.input.csv.has_header);
        assert_eq!(s.spec.input.csv.delimiter, ",");
        assert!(s.spec.inputs.is_empty());
        assert!(s.spec.outputs.is_none());
    }

    #[test]
    fn missing_variable_names_it_and_the_key() {
        let e = load_toml(MINIMAL, &[]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "job spec jobs/a.toml: [output.uri]: ${ds} has no value: pass --var ds=VALUE"
        );
    }

    #[test]
    fn unknown_key_is_refused_with_its_path() {
        let text = MINIMAL.replace("[output]", "[output]\nmdoe = \"overwrite\"");
        let e = load_toml(&text, &[("ds", "x")]).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.starts_with("job spec jobs/a.toml: [output.mdoe]: unknown field `mdoe`"),
            "{msg}"
        );
        assert!(msg.ends_with("(did you mean `mode`?)"), "{msg}");
        // Nothing close: no suggestion.
        let text = MINIMAL.replace("[output]", "[output]\nzzzzzzzz = 1");
        let msg = load_toml(&text, &[("ds", "x")]).unwrap_err().to_string();
        assert!(!msg.contains("did you mean"), "{msg}");
    }

    #[test]
    fn wrong_type_names_the_key() {
        let text = format!("{MINIMAL}\n[run]\nbatch_size = \"big\"\n");
        let e = load_toml(&text, &[("ds", "x")]).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.starts_with("job spec jobs/a.toml: [run.batch_size]: invalid type"),
            "{msg}"
        );
    }

    #[test]
    fn not_toml_is_refused() {
        let e = load_toml("name = \n[[", &[]).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("job spec jobs/a.toml: not valid TOML"),
            "{e}"
        );
    }

    #[test]
    fn outputs_keep_their_order_and_parse_indexes() {
        let text =
            format!("{MINIMAL}\n[outputs]\nz_label = \"label\"\na_prob = \"probabilities[1]\"\n");
        let s = load_toml(&text, &[("ds", "x")]).unwrap();
        let outs: Vec<_> = s.spec.outputs.unwrap().into_iter().collect();
        assert_eq!(outs[0].0, "z_label");
        assert_eq!(outs[1].0, "a_prob");
        assert_eq!(
            OutputRef::parse(&outs[1].1).unwrap(),
            OutputRef {
                output: "probabilities".into(),
                index: Some(1)
            }
        );
        assert!(OutputRef::parse("p[-1]").is_err());
        assert!(OutputRef::parse("p[1").is_err());
    }

    #[test]
    fn every_value_problem_is_listed() {
        let text = MINIMAL.replace("[output]", "[output]\nmax_rows_per_file = 0")
            + "\n[run]\nbatch_size = 0\ninference_batch_size = 0\n[inputs.features]\ncolumns = []\n";
        let e = load_toml(&text, &[("ds", "x")]).unwrap_err();
        let keys: Vec<_> = e.problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "inputs.features.columns",
                "run.batch_size",
                "run.inference_batch_size",
                "output.max_rows_per_file"
            ]
        );
    }

    #[test]
    fn rows_per_inference_call_default_by_device_and_never_exceed_the_batch() {
        use crate::model::ExecutionDevice::{Cpu, Cuda};
        let run = |text: &str| {
            load_toml(&format!("{MINIMAL}\n[run]\n{text}\n"), &[("ds", "x")])
                .unwrap()
                .spec
                .run
        };
        let cuda = Cuda { device_id: 0 };
        assert_eq!(run("").inference_batch_size(Cpu), 2048);
        assert_eq!(run("").inference_batch_size(cuda), 8192);
        assert_eq!(run("batch_size = 500").inference_batch_size(Cpu), 500);
        let set = run("batch_size = 500\ninference_batch_size = 64");
        assert_eq!(set.inference_batch_size(Cpu), 64);
        assert_eq!(set.inference_batch_size(cuda), 64);
        assert_eq!(
            run("inference_batch_size = 100000").inference_batch_size(Cpu),
            8192
        );
    }

    #[test]
    fn sorted_tree_ensembles_default_to_bigger_batches_unless_the_spec_says() {
        let run = |text: &str, sorted_trees: bool| {
            let mut run = load_toml(&format!("{MINIMAL}\n[run]\n{text}\n"), &[("ds", "x")])
                .unwrap()
                .spec
                .run;
            run.settle_batch_size(sorted_trees);
            run.batch_size()
        };
        assert_eq!(run("", false), 8192);
        assert_eq!(run("", true), 32768);
        assert_eq!(run("batch_size = 500", true), 500);
        assert_eq!(run("batch_size = 500", false), 500);
    }

    #[test]
    fn dollar_escapes_and_yaml() {
        assert_eq!(expand("a$${b}c$d", &BTreeMap::new()).unwrap(), "a${b}c$d");
        // SAFETY: tests in this module touch only this variable.
        unsafe { std::env::set_var("BATCHSCORE_SPEC_TEST_VAR", "v1") };
        assert_eq!(
            expand("x-${env:BATCHSCORE_SPEC_TEST_VAR}", &BTreeMap::new()).unwrap(),
            "x-v1"
        );
        assert_eq!(
            expand("${env:BATCHSCORE_SPEC_TEST_UNSET}", &BTreeMap::new()).unwrap_err(),
            "env:BATCHSCORE_SPEC_TEST_UNSET"
        );
        let yaml = "name: y\ninput: {uri: d.csv}\nmodel: {uri: m.onnx}\noutput: {uri: o/}\n";
        let s = load_str(
            yaml,
            Path::new("j.yaml"),
            Path::new("/abs"),
            &BTreeMap::new(),
        )
        .unwrap();
        assert_eq!(s.spec.input.uri, "/abs/d.csv");
    }

    #[test]
    fn the_hash_follows_the_variables() {
        let a = load_toml(MINIMAL, &[("ds", "1")]).unwrap();
        let b = load_toml(MINIMAL, &[("ds", "2")]).unwrap();
        let a2 = load_toml(MINIMAL, &[("ds", "1")]).unwrap();
        assert_ne!(a.hash, b.hash);
        assert_eq!(a.hash, a2.hash);
    }
}
