//! `batchscore init MODEL INPUT`: drafts a commented job spec for a model and its data. It
//! opens the model (as `[model] uri` does) and the input (as `[input] uri` does, hive
//! partition columns and CSV included) and hands their signatures to [`draft`], which writes
//! the text.

mod draft;

use std::io::Write;
use std::path::{Component, Path, PathBuf};

use datafusion::arrow::datatypes::DataType;

use crate::model::{ElemType, IoKind, Model, ModelIo};
use crate::spec::InputSpec;
use crate::storage::StoreFactory;
use draft::{Column, ModelInput, ModelOutput, ValueKind};

pub const AFTER_HELP: &str = "\
Examples:
  batchscore init sample_data/houses/price_ridge.onnx sample_data/houses/houses.csv.gz -o houses.toml
  batchscore validate houses.toml && batchscore run houses.toml
  batchscore init s3://bucket/models/churn.onnx 's3://bucket/data/ds=2026-11-27/'

Each model input is bound to the column of its name; else, for a tensor of N values per row,
to the columns NAME0..NAME{N-1}, or to the input's N non-key columns of its type in order,
marked `# guess:`; else it is left as `# TODO [inputs.NAME]:` with `columns = []`, which
validate refuses until filled in. Key-like columns (id, *_id, key, *_key, uuid, *_uuid) are
passed through. With -o the spec's paths are relative to its folder, else absolute.
Exit 2 when the model or the input cannot be read, or FILE exists without --force.";

#[derive(Debug, clap::Args)]
pub struct InitArgs {
    /// The model, as a job's `[model] uri`: a .onnx file, file://, s3://, gs://, az://,
    /// abfss:// or https://.
    pub model: String,
    /// The data, as a job's `[input] uri`: a Parquet or CSV file, a folder (key=value folders
    /// become columns), a glob, or the same in an object store.
    pub input: String,
    /// Write the spec to FILE instead of stdout; refused when FILE exists, unless --force.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Replace FILE when it exists.
    #[arg(long, requires = "output")]
    pub force: bool,
}

/// Why `init` wrote no spec; each names the file or URI.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("{}: exists; pass --force to replace it", path.display())]
    Exists { path: PathBuf },
    #[error("input {uri}: {message}")]
    Input { uri: String, message: String },
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot tell the working directory: {0}")]
    Cwd(std::io::Error),
}

impl InitError {
    /// 2 when refused (an existing file, an unreadable input), 1 when writing failed.
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::Exists { .. } | Self::Input { .. } => 2,
            Self::Write { .. } | Self::Cwd(_) => 1,
        }
    }
}

pub async fn init(args: InitArgs, ort_lib: Option<&Path>) -> anyhow::Result<()> {
    if let Some(out) = &args.output
        && !args.force
        && out.exists()
    {
        return Err(InitError::Exists { path: out.clone() }.into());
    }
    let cwd = std::env::current_dir().map_err(InitError::Cwd)?;
    let stores = StoreFactory::default();
    crate::model::init_runtime(ort_lib)?;
    // A local model is read from the path as given, so that messages name it as given.
    let model_path = local_path(&args.model).map(|p| p.to_string_lossy().into_owned());
    let model_uri = model_path.unwrap_or_else(|| args.model.clone());
    let model = Model::load(&model_uri, None, &stores).await?;
    let columns = input_columns(&args.input, &cwd, &stores).await?;
    // Paths relative to the spec's folder when it is written to a file, else absolute.
    let base = match &args.output {
        Some(out) => {
            let parent = out.parent().unwrap_or(Path::new(""));
            Some(normalize(&cwd.join(parent)))
        }
        None => None,
    };
    let name = model_stem(&args.model);
    let output_uri = match &base {
        Some(_) => format!("out/{name}/"),
        None => format!("{}/", cwd.join("out").join(&name).display()),
    };
    let (inputs, outputs) = signature(&model);
    let request = draft::Request {
        name: &name,
        model_uri: &spec_uri(&args.model, base.as_deref(), &cwd),
        model_sha256: &model.sha256,
        input_uri: &spec_uri(&args.input, base.as_deref(), &cwd),
        output_uri: &output_uri,
        inputs: &inputs,
        outputs: &outputs,
        columns: &columns,
    };
    let drafted = draft::draft(&request);
    emit(&args, &drafted.text)?;
    if !drafted.todos.is_empty() {
        let list: Vec<String> = drafted
            .todos
            .iter()
            .map(|t| format!("[inputs.{t}]"))
            .collect();
        eprintln!("init: TODO before it validates: {}", list.join(", "));
    }
    Ok(())
}

/// Writes the spec to `-o FILE` (not over an existing one unless `--force`), else stdout.
fn emit(args: &InitArgs, text: &str) -> Result<(), InitError> {
    let Some(path) = &args.output else {
        print!("{text}");
        return Ok(());
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true);
    if args.force {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    let file = options.open(path);
    let mut file = match file {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(InitError::Exists { path: path.clone() });
        }
        other => other.map_err(|source| InitError::Write {
            path: path.clone(),
            source,
        })?,
    };
    file.write_all(text.as_bytes())
        .map_err(|source| InitError::Write {
            path: path.clone(),
            source,
        })?;
    eprintln!("init: wrote {}", path.display());
    Ok(())
}

/// The input's columns, from opening it as a run does.
async fn input_columns(
    uri: &str,
    cwd: &Path,
    stores: &StoreFactory,
) -> Result<Vec<Column>, InitError> {
    let spec = InputSpec {
        uri: local_or_url(uri, cwd),
        format: None,
        query: None,
        csv: Default::default(),
    };
    let run = crate::spec::RunSpec::default();
    let ctx = crate::input::session_context(&run);
    let opened = crate::input::open_input(&ctx, &spec, stores, run.batch_size(), None)
        .await
        .map_err(|problems| InitError::Input {
            uri: uri.to_string(),
            message: problems
                .iter()
                .map(|p| p.message.as_str())
                .collect::<Vec<_>>()
                .join("; "),
        })?;
    let schema = opened.frame.schema().as_arrow().clone();
    Ok(schema
        .fields()
        .iter()
        .map(|f| Column {
            name: f.name().clone(),
            kind: column_kind(f.data_type()),
            type_name: f.data_type().to_string(),
        })
        .collect())
}

fn column_kind(t: &DataType) -> ValueKind {
    match t {
        DataType::Dictionary(_, v) => column_kind(v),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => ValueKind::Text,
        DataType::Decimal32(..)
        | DataType::Decimal64(..)
        | DataType::Decimal128(..)
        | DataType::Decimal256(..) => ValueKind::Number,
        t if t.is_integer() || t.is_floating() => ValueKind::Number,
        _ => ValueKind::Other,
    }
}

/// The model's inputs and outputs as [`draft`] takes them.
fn signature(model: &Model) -> (Vec<ModelInput>, Vec<ModelOutput>) {
    let inputs = model
        .inputs
        .iter()
        .map(|io| {
            let (kind, shape) = match &io.kind {
                IoKind::Tensor { dtype, shape } if dtype.is_fed() => {
                    let kind = if *dtype == ElemType::String {
                        ValueKind::Text
                    } else {
                        ValueKind::Number
                    };
                    (kind, Some(shape.clone()))
                }
                _ => (ValueKind::Other, None),
            };
            ModelInput {
                name: io.name.clone(),
                kind,
                shape,
                described: io.kind.to_string(),
            }
        })
        .collect();
    let outputs = model.outputs.iter().map(output).collect();
    (inputs, outputs)
}

fn output(io: &ModelIo) -> ModelOutput {
    let (writable, per_class) = match &io.kind {
        IoKind::Tensor { dtype, shape } => {
            let classes = shape.len() == 2 && shape[1] != 1;
            let named = io.name.to_ascii_lowercase().contains("prob");
            (dtype.arrow_type().is_some(), classes && named)
        }
        IoKind::SequenceOfMaps { .. } => (true, true),
        IoKind::Other { .. } => (false, false),
    };
    ModelOutput {
        name: io.name.clone(),
        described: io.kind.to_string(),
        writable,
        per_class,
    }
}

/// What to open: a URL as it is, a local path (or `file://` URL) as an absolute path.
fn local_or_url(uri: &str, cwd: &Path) -> String {
    match local_path(uri) {
        Some(p) => keep_slash(uri, &normalize(&cwd.join(p))),
        None => uri.to_string(),
    }
}

/// The local path a URI names, or `None` for a remote URL.
fn local_path(uri: &str) -> Option<&Path> {
    if let Some(p) = uri.strip_prefix("file://") {
        Some(Path::new(p))
    } else if uri.contains("://") {
        None
    } else {
        Some(Path::new(uri))
    }
}

/// The URI as the spec holds it: relative to `base` (the spec's folder) when there is one
/// and it is local, else absolute; URLs as they are.
fn spec_uri(uri: &str, base: Option<&Path>, cwd: &Path) -> String {
    let Some(p) = local_path(uri) else {
        return uri.to_string();
    };
    let absolute = normalize(&cwd.join(p));
    match base {
        Some(base) => keep_slash(uri, &relative(&absolute, base)),
        None => keep_slash(uri, &absolute),
    }
}

/// `p` as text, with the trailing `/` that `uri` had (a folder).
fn keep_slash(uri: &str, p: &Path) -> String {
    let mut s = p.to_string_lossy().into_owned();
    if uri.ends_with('/') && !s.ends_with('/') {
        s.push('/');
    }
    s
}

/// Removes `.` and `a/..` without touching the file system.
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// `path` relative to the folder `base`, both absolute and normalized.
fn relative(path: &Path, base: &Path) -> PathBuf {
    let p: Vec<Component> = path.components().collect();
    let b: Vec<Component> = base.components().collect();
    let common = p.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let mut out = PathBuf::new();
    for _ in common..b.len() {
        out.push("..");
    }
    for c in &p[common..] {
        out.push(c);
    }
    if out.as_os_str().is_empty() {
        out.push(".");
    }
    out
}

/// The job's name: the model file's name without `.onnx`, in letters, digits, `-`, `_`, `.`.
fn model_stem(uri: &str) -> String {
    let file = uri.trim_end_matches('/').rsplit('/').next().unwrap_or(uri);
    let stem = file.strip_suffix(".onnx").unwrap_or(file);
    let clean: String = stem
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if clean.is_empty() {
        "job".to_string()
    } else {
        clean
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_relative_to_the_spec_folder_or_absolute() {
        let cwd = Path::new("/w/a");
        let base = Some(Path::new("/w/a/jobs"));
        assert_eq!(spec_uri("data/x.parquet", base, cwd), "../data/x.parquet");
        assert_eq!(spec_uri("./d/", base, cwd), "../d/");
        assert_eq!(spec_uri("jobs/m.onnx", base, cwd), "m.onnx");
        assert_eq!(spec_uri("/w/b/*.csv", base, cwd), "../../b/*.csv");
        assert_eq!(spec_uri("file:///w/a/x", None, cwd), "/w/a/x");
        assert_eq!(spec_uri("../x", None, cwd), "/w/x");
        assert_eq!(spec_uri("s3://b/k/", base, cwd), "s3://b/k/");
        assert_eq!(local_or_url("m.onnx", cwd), "/w/a/m.onnx");
    }

    #[test]
    fn job_name_from_the_model_file() {
        assert_eq!(model_stem("a/b/price_ridge.onnx"), "price_ridge");
        assert_eq!(model_stem("s3://b/m v1.onnx"), "m_v1");
        assert_eq!(model_stem(""), "job");
    }
}
