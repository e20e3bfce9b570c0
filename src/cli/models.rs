//! `batchscore models list|show|register|alias`: the model registry (a folder or a bucket
//! prefix, see [`crate::model::registry`]) from the shell.

use std::path::{Path, PathBuf};

use anyhow::Context;
use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::DataType;
use datafusion::prelude::{ParquetReadOptions, SessionContext};

use super::StoreArgs;
use crate::model::registry::{ModelCard, Parity, Registry, Selector, sort_versions};
use crate::spec::{self, JobSpec, LoadedSpec};

/// Where the registry is.
#[derive(Debug, clap::Args)]
pub struct RegistryArgs {
    /// The registry: a folder, or a store prefix (s3://, gs://, az://).
    #[arg(long, env = "BATCHSCORE_REGISTRY", value_name = "URI")]
    pub registry: String,
    #[command(flatten)]
    pub store: StoreArgs,
}

#[derive(Debug, clap::Subcommand)]
pub enum ModelsCommand {
    /// Every model with its versions and aliases; with NAME, that model's versions.
    List {
        name: Option<String>,
        #[command(flatten)]
        registry: RegistryArgs,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// A version's card (model.toml), chosen by version or alias.
    Show {
        name: String,
        /// A version, or an alias.
        version: String,
        #[command(flatten)]
        registry: RegistryArgs,
    },
    /// Register a model file as a new version: its SHA-256 is computed, ONNX Runtime must
    /// load it, and with --reference and --sample its predictions must match the training
    /// library's.
    Register(Box<RegisterArgs>),
    /// Point an alias at a version (a rollback when it is an older one).
    Alias {
        name: String,
        alias: String,
        version: String,
        #[command(flatten)]
        registry: RegistryArgs,
    },
}

#[derive(Debug, clap::Args)]
pub struct RegisterArgs {
    pub name: String,
    /// The ONNX file.
    pub model: PathBuf,
    /// The new version's name. Default: one more than the highest numbered version.
    #[arg(long)]
    pub version: Option<String>,
    /// What trained it. Default: the ONNX file's producer name and version.
    #[arg(long)]
    pub producer: Option<String>,
    /// What converted it to ONNX.
    #[arg(long)]
    pub converter: Option<String>,
    /// The class labels, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub labels: Option<Vec<String>>,
    /// Where the training data is.
    #[arg(long)]
    pub training_data: Option<String>,
    /// Free metadata; repeatable.
    #[arg(long = "meta", value_name = "KEY=VALUE", value_parser = spec::parse_var)]
    pub meta: Vec<(String, String)>,
    /// A Parquet file of the training library's own predictions on --sample's rows, one
    /// column per output to compare, named as the job's output columns (`--spec`).
    #[arg(long, requires = "sample")]
    pub reference: Option<PathBuf>,
    /// A Parquet file of rows to score, in the order of --reference's rows.
    #[arg(long, requires = "reference")]
    pub sample: Option<PathBuf>,
    /// The largest absolute difference allowed in any numeric column.
    #[arg(long, default_value_t = 1e-4)]
    pub tolerance: f64,
    /// A job spec whose [inputs] and [outputs] say how the sample's columns feed the model
    /// and what the output columns are. Default: every model input from the column of its
    /// name, every model output as a column of its name. Its ${NAME}s take --var.
    #[arg(long = "job", value_name = "JOB")]
    pub job: Option<PathBuf>,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

/// A parity check the model failed: nothing was registered.
#[derive(Debug, thiserror::Error)]
pub enum ParityError {
    #[error(
        "model {model}: predicts {column:?} differently from {reference}: {what}; nothing was registered"
    )]
    Differs {
        model: String,
        reference: String,
        column: String,
        what: String,
    },
    #[error("{reference}: {message}")]
    Reference { reference: String, message: String },
}

pub async fn run(command: ModelsCommand, ort_lib: Option<&Path>) -> anyhow::Result<()> {
    match command {
        ModelsCommand::List {
            name,
            registry,
            json,
        } => print!("{}", list(&registry, name.as_deref(), json).await?),
        ModelsCommand::Show {
            name,
            version,
            registry,
        } => {
            let r = open(&registry)?;
            let resolved = r
                .resolve(&name, &selector(&r, &name, &version).await?)
                .await?;
            print!("{}", toml::to_string(&resolved.card)?);
        }
        ModelsCommand::Register(args) => register(&args, ort_lib).await?,
        ModelsCommand::Alias {
            name,
            alias,
            version,
            registry,
        } => {
            let r = open(&registry)?;
            let before = r.set_alias(&name, &alias, &version).await?;
            let was = before.map(|v| format!(" (was {v})")).unwrap_or_default();
            println!("{name}: {alias} -> {version}{was}");
        }
    }
    Ok(())
}

fn open(args: &RegistryArgs) -> anyhow::Result<Registry> {
    Ok(Registry::open(&args.registry, &args.store.stores()?)?)
}

/// A version when the model has one of that name, else an alias.
async fn selector(r: &Registry, name: &str, text: &str) -> anyhow::Result<Selector> {
    Ok(if r.versions(name).await?.iter().any(|v| v == text) {
        Selector::Version(text.to_string())
    } else {
        Selector::Alias(text.to_string())
    })
}

/// The registry's models as a table (or JSON): one line per version.
async fn list(args: &RegistryArgs, only: Option<&str>, json: bool) -> anyhow::Result<String> {
    let r = open(args)?;
    let names = match only {
        Some(n) => {
            r.require_model(n).await?;
            vec![n.to_string()]
        }
        None => r.names().await?,
    };
    let mut rows = Vec::new();
    for name in &names {
        let (aliases, _) = r.aliases(name).await?;
        let mut versions = r.versions(name).await?;
        sort_versions(&mut versions);
        for v in versions {
            let Ok(card) = r.card(name, &v).await else {
                continue; // A folder an interrupted register left: not a version.
            };
            let of_it: Vec<&str> = aliases
                .iter()
                .filter(|(_, to)| **to == v)
                .map(|(a, _)| a.as_str())
                .collect();
            rows.push((name.clone(), card, of_it.join(",")));
        }
    }
    if json {
        let items: Vec<serde_json::Value> = rows
            .iter()
            .map(|(n, c, a)| serde_json::json!({"name": n, "card": c, "aliases": a}))
            .collect();
        return Ok(serde_json::to_string_pretty(&items)? + "\n");
    }
    let mut out = format!(
        "{:<16} {:<8} {:<24} {:<14} ALIASES\n",
        "NAME", "VERSION", "CREATED", "SHA256"
    );
    for (name, card, aliases) in rows {
        out += &format!(
            "{:<16} {:<8} {:<24} {:<14} {}\n",
            name,
            card.version,
            card.created,
            &card.sha256[..card.sha256.len().min(12)],
            aliases
        );
    }
    Ok(out)
}

/// Registers a model file, after checking ONNX Runtime loads it and, when asked, that it
/// predicts what the training library did.
async fn register(args: &RegisterArgs, ort_lib: Option<&Path>) -> anyhow::Result<()> {
    let r = open(&args.registry)?;
    crate::model::init_runtime(ort_lib)?;
    let path = args.model.display().to_string();
    let model = crate::model::Model::open(&path, None)?;
    let version = match &args.version {
        Some(v) => v.clone(),
        None => r.next_version(&args.name).await?,
    };
    let parity = match (&args.reference, &args.sample) {
        (Some(reference), Some(sample)) => Some(parity(args, reference, sample, ort_lib).await?),
        _ => None,
    };
    let h = &model.header;
    let producer = args.producer.clone().or_else(|| {
        let p = format!("{} {}", h.producer_name, h.producer_version);
        (!p.trim().is_empty()).then(|| p.trim().to_string())
    });
    let card = ModelCard {
        version,
        sha256: model.sha256.clone(),
        created: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        producer,
        converter: args.converter.clone(),
        labels: args.labels.clone(),
        training_data: args.training_data.clone(),
        parity,
        metadata: args.meta.iter().cloned().collect(),
    };
    let bytes = std::fs::read(&args.model).with_context(|| format!("model {path}"))?;
    let at = r.register(&args.name, bytes.into(), &card).await?;
    let check = card
        .parity
        .as_ref()
        .map(|p| {
            format!(
                ", parity max |diff| {:.3e} over {} rows",
                p.max_abs_diff, p.rows
            )
        })
        .unwrap_or_default();
    println!(
        "registered {} version {} at {at} (sha256 {}{check})",
        args.name, card.version, card.sha256
    );
    Ok(())
}

/// Scores the sample with the model as a one-worker job into a temporary folder, and
/// compares its output columns with the reference's, row by row.
async fn parity(
    args: &RegisterArgs,
    reference: &Path,
    sample: &Path,
    ort_lib: Option<&Path>,
) -> anyhow::Result<Parity> {
    let scratch = std::env::temp_dir().join(format!("batchscore-parity-{}", uuid::Uuid::now_v7()));
    let result = score_sample(args, sample, &scratch, ort_lib).await;
    let compared = match result {
        Ok(scored) => compare(args, reference, &scored).await,
        Err(e) => Err(e),
    };
    let _ = std::fs::remove_dir_all(&scratch);
    let (rows, max_abs_diff, label_mismatches) = compared?;
    let absolute = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    Ok(Parity {
        reference: absolute(reference).display().to_string(),
        sample: absolute(sample).display().to_string(),
        rows,
        max_abs_diff,
        label_mismatches,
        tolerance: args.tolerance,
    })
}

async fn score_sample(
    args: &RegisterArgs,
    sample: &Path,
    scratch: &Path,
    ort_lib: Option<&Path>,
) -> anyhow::Result<Vec<RecordBatch>> {
    let (inputs, outputs) = match &args.job {
        Some(job) => {
            let vars = args.registry.store.vars.iter().cloned().collect();
            let s = spec::load(job, &vars)?.spec;
            (s.inputs, s.outputs)
        }
        None => Default::default(),
    };
    let mut spec: JobSpec = serde_json::from_value(serde_json::json!({
        "name": format!("{}-parity", args.name),
        "input": {"uri": sample.display().to_string(), "format": "parquet"},
        "model": {"uri": args.model.display().to_string()},
        "output": {"uri": scratch.join("out").display().to_string()},
        "run": {"workers": 1},
    }))?;
    spec.inputs = inputs;
    spec.outputs = outputs;
    let loaded = LoadedSpec {
        spec,
        // Problems are reported against the job that mapped the columns, when one did.
        file: args.job.clone().unwrap_or_else(|| {
            PathBuf::from("the parity check (without --job, each model input takes the sample column of its name)")
        }),
        hash: String::new(),
    };
    let plan = crate::run::plan_job(loaded, ort_lib).await?;
    let summary = crate::run::execute(plan, None).await?;
    if summary.metrics.rows.rejected > 0 {
        anyhow::bail!(
            "model {}: {} of the sample's rows were rejected ({}); nothing was registered",
            args.model.display(),
            summary.metrics.rows.rejected,
            summary
                .metrics
                .rejected_reasons
                .first()
                .map(|r| r.reason.as_str())
                .unwrap_or("")
        );
    }
    let ctx = SessionContext::new();
    let out = scratch.join("out").display().to_string() + "/";
    Ok(ctx
        .read_parquet(out, ParquetReadOptions::default())
        .await?
        .collect()
        .await?)
}

/// Compares every reference column with the scored column of its name: the largest numeric
/// difference and the label mismatches, refused past the tolerance.
async fn compare(
    args: &RegisterArgs,
    reference: &Path,
    scored: &[RecordBatch],
) -> anyhow::Result<(u64, f64, u64)> {
    let ref_name = reference.display().to_string();
    let fail = |message: String| ParityError::Reference {
        reference: ref_name.clone(),
        message,
    };
    let ctx = SessionContext::new();
    let expected = ctx
        .read_parquet(ref_name.clone(), ParquetReadOptions::default())
        .await?
        .collect()
        .await?;
    let (expected, got) = (concat(&expected)?, concat(scored)?);
    if expected.num_rows() != got.num_rows() {
        return Err(fail(format!(
            "has {} rows, but the sample scored {}",
            expected.num_rows(),
            got.num_rows()
        ))
        .into());
    }
    let (mut max_diff, mut mismatches) = (0.0f64, 0u64);
    for field in expected.schema().fields() {
        let name = field.name();
        let Some(ours) = got.column_by_name(name) else {
            let have: Vec<String> = got
                .schema()
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .collect();
            return Err(fail(format!(
                "column {name:?} is not an output column of the model (output columns: {}); name them with --job's [outputs]",
                have.join(", ")
            ))
            .into());
        };
        let theirs = expected.column_by_name(name).context("reference column")?;
        let differs = |what: String| ParityError::Differs {
            model: args.model.display().to_string(),
            reference: ref_name.clone(),
            column: name.clone(),
            what,
        };
        if field.data_type().is_floating() {
            let (d, row) = max_abs_diff(theirs.as_ref(), ours.as_ref())?;
            max_diff = max_diff.max(d);
            if d > args.tolerance || d.is_nan() {
                return Err(differs(format!(
                    "the largest difference is {d:.3e} (row {row}), more than the tolerance {:e}",
                    args.tolerance
                ))
                .into());
            }
        } else {
            let (n, row) = label_mismatches(theirs.as_ref(), ours.as_ref())?;
            mismatches += n;
            if n > 0 {
                return Err(differs(format!("{n} rows differ, the first at row {row}")).into());
            }
        }
    }
    Ok((expected.num_rows() as u64, max_diff, mismatches))
}

/// One batch of them all (a parity sample is small).
fn concat(batches: &[RecordBatch]) -> anyhow::Result<RecordBatch> {
    let schema = batches
        .first()
        .map(|b| b.schema())
        .unwrap_or_else(|| std::sync::Arc::new(datafusion::arrow::datatypes::Schema::empty()));
    Ok(datafusion::arrow::compute::concat_batches(
        &schema, batches,
    )?)
}

/// The largest absolute difference of two numeric columns, and its row.
fn max_abs_diff(a: &dyn Array, b: &dyn Array) -> anyhow::Result<(f64, usize)> {
    let cast = |x: &dyn Array| datafusion::arrow::compute::cast(x, &DataType::Float64);
    let (a, b) = (cast(a)?, cast(b)?);
    let (a, b) = (
        a.as_primitive::<datafusion::arrow::datatypes::Float64Type>(),
        b.as_primitive::<datafusion::arrow::datatypes::Float64Type>(),
    );
    let mut worst = (0.0f64, 0usize);
    for i in 0..a.len() {
        let d = match (a.is_null(i), b.is_null(i)) {
            (true, true) => 0.0,
            (false, false) => (a.value(i) - b.value(i)).abs(),
            _ => f64::NAN,
        };
        if d.is_nan() || d > worst.0 {
            worst = (d, i);
            if d.is_nan() {
                break;
            }
        }
    }
    Ok(worst)
}

/// Rows whose values (as text) differ, and the first of them.
fn label_mismatches(a: &dyn Array, b: &dyn Array) -> anyhow::Result<(u64, usize)> {
    let cast = |x: &dyn Array| datafusion::arrow::compute::cast(x, &DataType::Utf8);
    let (a, b) = (cast(a)?, cast(b)?);
    let (a, b) = (a.as_string::<i32>(), b.as_string::<i32>());
    let mut n = 0u64;
    let mut first = 0usize;
    for i in 0..a.len() {
        let same = a.is_null(i) == b.is_null(i) && (a.is_null(i) || a.value(i) == b.value(i));
        if !same {
            if n == 0 {
                first = i;
            }
            n += 1;
        }
    }
    Ok((n, first))
}
