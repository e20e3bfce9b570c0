//! The command line: `run`, `validate`, `plan`, `commit`, `inspect`, `bench`, `schema`, one
//! file per command (`run` and `validate` share one), and the progress bar. The only place `anyhow` is used.

mod bench;
mod commit;
mod init;
mod inspect;
mod models;
mod plan;
mod progress;
mod run;
mod runs;
mod score;
mod sql;

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

pub use inspect::describe_model;
pub use progress::ProgressMode;
pub use run::{Interrupted, Signal};

const AFTER_HELP: &str = "\
Exit codes: 0 success; 1 the run failed (nothing committed); 2 refused before any work (the spec,
the command line, the model or an existing output is wrong; nothing was read or written); 3 more
rows were rejected than [run] max_rejected or max_rejected_rate allow (nothing committed);
4 commit found shards of the run still to finish (nothing committed), or the run committed but
[[monitor.alerts]] rules fired; 130/143 stopped by SIGINT/SIGTERM (staging removed, nothing
committed).

Examples:
  batchscore run jobs/churn.toml --var ds=2026-11-27
  batchscore score model.onnx customers.parquet -o preds/ --key customer_id
  batchscore init model.onnx customers.parquet -o job.toml
  batchscore sql \"SELECT id, predict('m', a, b) AS p FROM 'rows.parquet'\" --model m=model.onnx
  batchscore validate jobs/churn.toml --var ds=2026-11-27
  batchscore plan jobs/churn.toml --var ds=2026-11-27 --shards 4
  batchscore run jobs/churn.toml --var ds=2026-11-27 --shard 0/4
  batchscore commit s3://bucket/scores/ds=2026-11-27/ --spec jobs/churn.toml
  batchscore models register churn model.onnx --registry s3://bucket/models/
  batchscore models alias churn champion 7 --registry s3://bucket/models/
  batchscore runs list s3://bucket/scores/churn/
  batchscore rollback s3://bucket/scores/churn/
  batchscore inspect sample_data/churn/churn_lgbm.onnx
  batchscore bench sample_data/churn/churn_lgbm.onnx";

/// Score Parquet and CSV data with ONNX models, offline and in bulk.
#[derive(Debug, Parser)]
#[command(name = "batchscore", version, about, after_help = AFTER_HELP)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// The ONNX Runtime shared library (libonnxruntime.so) to load. Default: ORT_DYLIB_PATH,
    /// then one beside the executable, then the checkout's .ort/lib (scripts/fetch-ort).
    #[arg(long, global = true, value_name = "PATH")]
    pub ort_lib: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a job: score the input and commit the output atomically.
    #[command(
        after_help = "Example:\n  batchscore run jobs/churn.toml --var ds=2026-11-27\n\n\
Prints one summary line on stdout; _manifest.json, _metrics.json and _SUCCESS are written\n\
beside the output parts, _SUCCESS last."
    )]
    Run {
        #[command(flatten)]
        job: run::JobArgs,
        #[command(flatten)]
        shard: run::ShardArgs,
        /// When to show a progress bar.
        #[arg(long, value_enum, default_value_t = ProgressMode::Auto)]
        progress: ProgressMode,
        /// Print the run's metrics as JSON on stdout instead of the summary line.
        #[arg(long)]
        json: bool,
        /// Score the run in pieces, each recorded when finished, and skip the pieces an
        /// earlier attempt of the same run (killed, or failed) finished.
        #[arg(long, conflicts_with = "shard")]
        resume: bool,
    },
    /// Score data with a model without a job spec: model inputs bind to the columns of their
    /// names, or to --columns.
    #[command(after_help = score::AFTER_HELP)]
    Score {
        #[command(flatten)]
        args: score::ScoreArgs,
    },
    /// Write a commented job spec for a model and its data, to finish by hand.
    #[command(after_help = init::AFTER_HELP)]
    Init {
        #[command(flatten)]
        args: init::InitArgs,
    },
    /// Run DataFusion SQL with predict() and predict_output() for each --model.
    #[command(after_help = sql::AFTER_HELP)]
    Sql {
        #[command(flatten)]
        args: sql::SqlArgs,
    },
    /// Check a job without scoring: spec, model, input schema, every mapping. Lists every problem.
    #[command(after_help = "Example:\n  batchscore validate jobs/churn.toml --var ds=2026-11-27")]
    Validate {
        #[command(flatten)]
        job: run::JobArgs,
    },
    /// List the work units a run's input is cut into, with their rows, and how they fall into
    /// shards. Checks the job as validate does; nothing is scored.
    #[command(
        after_help = "Example:\n  batchscore plan jobs/churn.toml --var ds=2026-11-27 --shards 4\n\n\
A unit is a Parquet row group, a CSV file, or a byte range of a large uncompressed CSV file\n\
([input.csv] split_bytes); shards take contiguous runs of units, balanced by rows (by bytes\n\
for CSV). The run key names the run: shards of one run must agree on it."
    )]
    Plan {
        #[command(flatten)]
        job: run::JobArgs,
        /// How many shards to cut the units into.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
        shards: u32,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Commit a sharded run from its finished shards, when its last shard could not; or
    /// name the shards still to run.
    #[command(
        after_help = "Example:\n  batchscore commit s3://bucket/scores/ds=2026-11-27/ --spec jobs/churn.toml\n\n\
The last shard of a run to finish commits it; this is for when that shard died after\n\
finishing or its commit failed. Exits 4, naming them, while shards have not finished;\n\
0 when the output is committed already."
    )]
    Commit {
        #[command(flatten)]
        args: commit::CommitArgs,
    },
    /// A model registry (a folder or bucket prefix of versioned models with aliases): list,
    /// show, register a version, move an alias.
    #[command(
        after_help = "Examples:\n  batchscore models register churn model.onnx --registry s3://models/ --reference preds.parquet --sample rows.parquet\n  \
batchscore models alias churn champion 7 --registry s3://models/\n  \
batchscore models list --registry s3://models/\n  \
batchscore models show churn champion --registry s3://models/\n\n\
The registry is --registry, else BATCHSCORE_REGISTRY. Exit 2 when refused (a version that\n\
exists, an unknown version or alias, a model ONNX Runtime cannot load, a failed parity check)."
    )]
    Models {
        #[command(subcommand)]
        command: models::ModelsCommand,
    },
    /// A run history (an output with `[output] layout = runs`): list its runs, or prune the oldest.
    #[command(
        after_help = "Examples:\n  batchscore runs list s3://bucket/scores/churn/\n  \
batchscore runs prune s3://bucket/scores/churn/ --keep 30\n\n\
Each run is a folder run=<run id>/ with its own _manifest.json, _metrics.json and _SUCCESS;\n\
_LATEST names the one readers should read. Exit 2 when the output holds no history."
    )]
    Runs {
        #[command(subcommand)]
        command: runs::RunsCommand,
    },
    /// Point a run history's _LATEST back at an earlier committed run (default: the one
    /// committed before the latest).
    #[command(
        after_help = "Example:\n  batchscore rollback s3://bucket/scores/churn/\n  \
batchscore rollback s3://bucket/scores/churn/ --to 0193a4c2-...\n\n\
Nothing is deleted: the rolled-back run stays, and the next run becomes the latest as usual."
    )]
    Rollback {
        output: String,
        /// The run to make the latest. Default: the committed run before the latest.
        #[arg(long, value_name = "RUN_ID")]
        to: Option<String>,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Describe a model: inputs and outputs with types and shapes, opsets, metadata.
    #[command(after_help = "Example:\n  batchscore inspect sample_data/churn/churn_lgbm.onnx")]
    Inspect {
        model: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Measure ONNX Runtime's inference-only throughput for a model on this machine, over
    /// batch sizes and thread layouts, and print the [run] settings to use.
    #[command(
        after_help = "Examples:\n  batchscore bench sample_data/churn/churn_lgbm.onnx --batch-sizes 1024,65536\n  \
batchscore bench .models/minilm/model.onnx --batch-sizes 32 --sequence-length 64\n\n\
Inputs are synthetic (zeros for integers, standard normal values for floats), in memory:\n\
the figure is the ceiling a run of this model can approach here."
    )]
    Bench {
        model: PathBuf,
        #[command(flatten)]
        args: bench::BenchArgs,
    },
    /// Print a JSON Schema: of the job spec, of _metrics.json or of _manifest.json.
    #[command(after_help = "Example:\n  batchscore schema job > job.schema.json")]
    Schema {
        #[arg(value_enum, default_value_t = SchemaKind::Job)]
        kind: SchemaKind,
    },
}

/// Where a command that takes an output or registry URI without a job gets the store's
/// settings from.
#[derive(Debug, clap::Args)]
pub struct StoreArgs {
    /// A job spec whose `[storage]` settings reach the store. Default: the environment's
    /// (AWS_*, GOOGLE_*, AZURE_* variables), as for a spec without `[storage]`.
    #[arg(long, value_name = "JOB")]
    pub spec: Option<PathBuf>,
    /// A value for ${NAME} in the spec; repeatable.
    #[arg(long = "var", value_name = "NAME=VALUE", value_parser = crate::spec::parse_var)]
    pub vars: Vec<(String, String)>,
}

impl StoreArgs {
    pub fn stores(&self) -> Result<crate::storage::StoreFactory, crate::diagnostics::SpecError> {
        let Some(job) = &self.spec else {
            return Ok(Default::default());
        };
        let vars = self.vars.iter().cloned().collect();
        let spec = crate::spec::load(job, &vars)?.spec;
        // `rollback` writes `_LATEST` with the job's file permissions.
        crate::output::mode::apply(spec.file_mode());
        Ok(crate::storage::StoreFactory::new(spec.storage))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SchemaKind {
    Job,
    Metrics,
    Manifest,
}

/// Sets up logging: `RUST_LOG` when set, else info for batchscore and errors only for ONNX
/// Runtime (which warns once per batch about shapes some converters declare loosely).
pub fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = match std::env::var("RUST_LOG") {
        // ONNX Runtime stays at errors unless RUST_LOG names it.
        Ok(v) if !v.split(',').any(|d| d.trim().starts_with("ort")) => {
            EnvFilter::new(format!("{v},ort=error"))
        }
        Ok(v) => EnvFilter::new(v),
        Err(_) => EnvFilter::new("warn,batchscore=info,ort=error"),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
    }
}

/// Runs the command; the error's exit code comes from [`exit_code`].
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let ort_lib = cli.ort_lib.as_deref();
    match cli.command {
        Command::Run {
            job,
            shard,
            progress,
            json,
            resume,
        } => {
            let how = run::How {
                progress,
                json,
                resume,
                report_on_stderr: false,
            };
            run::run_or_shard(&job, &shard, how, ort_lib).await
        }
        Command::Score { args } => score::score(args, ort_lib).await,
        Command::Init { args } => init::init(args, ort_lib).await,
        Command::Sql { args } => sql::sql(args, ort_lib).await,
        Command::Validate { job } => run::validate(&job, ort_lib).await,
        Command::Plan { job, shards, json } => {
            print!(
                "{}",
                plan::plan(&job, shards as usize, json, ort_lib).await?
            );
            Ok(())
        }
        Command::Commit { args } => commit::commit(&args).await,
        Command::Models { command } => models::run(command, ort_lib).await,
        Command::Runs { command } => runs::runs(command).await,
        Command::Rollback { output, to, store } => {
            runs::rollback(&output, to.as_deref(), &store).await
        }
        Command::Inspect { model, json } => {
            print!("{}", inspect::inspect(&model, json, ort_lib)?);
            Ok(())
        }
        Command::Bench { model, args } => {
            print!("{}", bench::run(&model, args, ort_lib)?);
            Ok(())
        }
        Command::Schema { kind } => {
            let name = match kind {
                SchemaKind::Job => "job.schema.json",
                SchemaKind::Metrics => "metrics.schema.json",
                SchemaKind::Manifest => "manifest.schema.json",
            };
            let schemas = crate::report::json_schemas()?;
            if let Some((_, text)) = schemas.iter().find(|(n, _)| *n == name) {
                print!("{text}");
            }
            Ok(())
        }
    }
}

/// The exit code for an error: 2 when refused before any work, 3 past the reject budget,
/// 4 when `commit` finds shards still to run, 130/143 when stopped by SIGINT/SIGTERM, else 1.
pub fn exit_code(e: &anyhow::Error) -> i32 {
    use crate::model::ModelError;
    use crate::model::bench::BenchError;
    let model_code = |m: &ModelError| if m.is_runtime() { 1 } else { 2 };
    if let Some(Interrupted(signal)) = e.downcast_ref::<Interrupted>() {
        signal.exit_code
    } else if let Some(r) = e.downcast_ref::<crate::run::RunError>() {
        r.exit_code()
    } else if let Some(s) = e.downcast_ref::<sql::SqlError>() {
        s.exit_code()
    } else if e.downcast_ref::<crate::diagnostics::SpecError>().is_some()
        || e.downcast_ref::<crate::model::DeviceError>().is_some()
        || e.downcast_ref::<crate::run::scheduler::AutoShardError>()
            .is_some()
        || e.downcast_ref::<run::ShardError>().is_some()
        || e.downcast_ref::<score::ScoreError>().is_some()
        || e.downcast_ref::<models::ParityError>().is_some()
        || e.downcast_ref::<runs::HistoryError>().is_some()
    {
        2
    } else if let Some(m) = e.downcast_ref::<ModelError>() {
        model_code(m)
    } else if let Some(r) = e.downcast_ref::<crate::model::registry::RegistryError>() {
        use crate::model::registry::RegistryError;
        if matches!(r, RegistryError::Storage(_) | RegistryError::Raced { .. }) {
            1
        } else {
            2
        }
    } else if let Some(i) = e.downcast_ref::<init::InitError>() {
        i.exit_code()
    } else if let Some(b) = e.downcast_ref::<BenchError>() {
        match b {
            BenchError::Model(m) => model_code(m),
            BenchError::Input { .. } => 2,
            _ => 1,
        }
    } else {
        1
    }
}
