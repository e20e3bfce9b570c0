//! The command line: `run`, `validate`, `inspect`, `bench`, `schema`. The only place `anyhow` is used.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle, TermLike};

use crate::model::Model;
use crate::run::{RunError, already_committed, execute, plan_job};
use crate::spec::WriteMode;
use crate::spec::{self, parse_var};

const AFTER_HELP: &str = "\
Exit codes: 0 success; 1 the run failed (nothing committed); 2 refused before any work (the spec,
the command line, the model or an existing output is wrong; nothing was read or written); 3 more
rows were rejected than [run] max_rejected or max_rejected_rate allow (nothing committed);
130/143 stopped by SIGINT/SIGTERM (staging removed, nothing committed).

Examples:
  batchscore run jobs/churn.toml --var ds=2026-11-27
  batchscore validate jobs/churn.toml --var ds=2026-11-27
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

/// Where `--progress always` draws when stderr is not a terminal: a line of its own at most
/// once a second (indicatif's own rate limit lets bursts of 20 through), since a log cannot
/// move a cursor back over the last one.
#[derive(Debug, Default)]
struct ProgressLog {
    last: std::sync::Mutex<Option<std::time::Instant>>,
}

impl TermLike for ProgressLog {
    fn width(&self) -> u16 {
        100
    }
    fn move_cursor_up(&self, _n: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_down(&self, _n: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_right(&self, _n: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_left(&self, _n: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn write_line(&self, s: &str) -> std::io::Result<()> {
        self.write_str(s)
    }
    fn write_str(&self, s: &str) -> std::io::Result<()> {
        if s.trim().is_empty() {
            return Ok(());
        }
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_some_and(|t| t.elapsed() < std::time::Duration::from_secs(1)) {
            return Ok(());
        }
        *last = Some(std::time::Instant::now());
        use std::io::Write;
        writeln!(std::io::stderr().lock(), "{}", s.trim_end())
    }
    fn clear_line(&self) -> std::io::Result<()> {
        Ok(())
    }
    fn flush(&self) -> std::io::Result<()> {
        use std::io::Write;
        std::io::stderr().flush()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProgressMode {
    /// A bar on stderr when it is a terminal.
    Auto,
    /// A bar on a terminal; elsewhere (a CI log, `kubectl logs`) a progress line once a second.
    Always,
    /// No progress.
    Never,
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
        /// The job spec (TOML, or YAML by extension).
        job: PathBuf,
        /// A value for ${NAME} in the spec; repeatable.
        #[arg(long = "var", value_name = "NAME=VALUE", value_parser = parse_var)]
        vars: Vec<(String, String)>,
        /// When to show a progress bar.
        #[arg(long, value_enum, default_value_t = ProgressMode::Auto)]
        progress: ProgressMode,
        /// Print the run's metrics as JSON on stdout instead of the summary line.
        #[arg(long)]
        json: bool,
    },
    /// Check a job without scoring: spec, model, input schema, every mapping. Lists every problem.
    #[command(after_help = "Example:\n  batchscore validate jobs/churn.toml --var ds=2026-11-27")]
    Validate {
        job: PathBuf,
        #[arg(long = "var", value_name = "NAME=VALUE", value_parser = parse_var)]
        vars: Vec<(String, String)>,
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
        after_help = "Example:\n  batchscore bench sample_data/churn/churn_lgbm.onnx --batch-sizes 1024,65536\n\n\
Inputs are synthetic (zeros for integers, values in [0, 1) for floats), already in memory:\n\
the figure is the ceiling a run of this model can approach here."
    )]
    Bench {
        model: PathBuf,
        /// Rows scored per measurement.
        #[arg(long, default_value_t = 131_072)]
        rows: usize,
        /// Batch sizes to try, comma-separated.
        #[arg(long, value_delimiter = ',', default_values_t = [1024usize, 2048, 8192, 65536])]
        batch_sizes: Vec<usize>,
        /// Layouts to try as SESSIONSxTHREADS, comma-separated (e.g. 2x1,1x2). Default: one
        /// session per core with one thread each, one session with every core, and (with 4+
        /// cores) half as many sessions with two threads.
        #[arg(long, value_delimiter = ',', value_parser = parse_layout)]
        layouts: Vec<crate::bench::Layout>,
        /// Where to run: cpu, or cuda (with the onnxruntime-gpu wheel's library).
        #[arg(long, value_enum, default_value_t = crate::spec::Device::Cpu)]
        device: crate::spec::Device,
        /// The GPU for --device cuda.
        #[arg(long, default_value_t = 0)]
        device_id: u32,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print a JSON Schema: of the job spec, of _metrics.json or of _manifest.json.
    #[command(after_help = "Example:\n  batchscore schema job > job.schema.json")]
    Schema {
        #[arg(value_enum, default_value_t = SchemaKind::Job)]
        kind: SchemaKind,
    },
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
            vars,
            progress,
            json,
        } => {
            let spec = spec::load(&job, &to_map(vars))?;
            let plan = plan_job(spec, ort_lib).await?;
            if plan.spec.spec.output.mode == WriteMode::Skip
                && let Some(run_id) = already_committed(&plan).await?
            {
                println!(
                    "{}: already committed by run {run_id} with the same spec, model and input; nothing to do -> {}",
                    plan.spec.spec.name, plan.spec.spec.output.uri
                );
                return Ok(());
            }
            let on_terminal = std::io::stderr().is_terminal();
            let show = match progress {
                ProgressMode::Always => true,
                ProgressMode::Never => false,
                ProgressMode::Auto => on_terminal,
            };
            let bar = show.then(|| {
                // indicatif hides a bar whose target is not a terminal, `always` included.
                let pb = if on_terminal {
                    ProgressBar::new(0)
                } else {
                    ProgressBar::with_draw_target(
                        Some(0),
                        ProgressDrawTarget::term_like(Box::<ProgressLog>::default()),
                    )
                };
                pb.set_style(
                    ProgressStyle::with_template(
                        "{spinner} [{elapsed_precise}] {bar:30} {human_pos}/{human_len} rows {per_sec:0} ETA {eta}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
                );
                pb
            });
            // A signal drops the run: its tasks stop and its staging is removed.
            let summary = tokio::select! {
                r = execute(plan, bar) => r.inspect_err(|_| {
                    // The staging is gone by now: say so, for whoever reads the log at 3 a.m.
                    tracing::error!("run failed: nothing was committed");
                })?,
                signal = shutdown_signal() => {
                    tracing::error!(signal = signal.name, "interrupted: nothing was committed");
                    return Err(Interrupted(signal).into());
                }
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&summary.metrics)?);
            } else {
                let m = &summary.metrics;
                println!(
                    "{}: {} rows scored in {:.2} s ({} rows/s), {} rejected -> {} ({} file{})",
                    m.job_name,
                    m.rows.scored,
                    m.wall_seconds,
                    m.rows_per_second.round() as u64,
                    m.rows.rejected,
                    summary.output,
                    m.output_files,
                    if m.output_files == 1 { "" } else { "s" }
                );
            }
        }
        Command::Validate { job, vars } => {
            let spec = spec::load(&job, &to_map(vars))?;
            let plan = plan_job(spec, ort_lib).await?;
            println!("{}: OK", job.display());
            println!("model {} (sha256 {})", plan.model.uri, plan.model.sha256);
            for b in &plan.bindings().inputs {
                println!(
                    "  input {:?} {} <- {}",
                    b.name,
                    b.dtype,
                    b.columns.join(", ")
                );
            }
            for o in &plan.outputs {
                let src = match o.index {
                    Some(i) => format!("{}[{i}]", o.output),
                    None => o.output.clone(),
                };
                println!("  column {:?} <- {src} ({})", o.column, o.data_type());
            }
            println!("  workers {}", plan.workers);
        }
        Command::Inspect { model, json } => {
            crate::model::init_runtime(ort_lib)?;
            let m = Model::open(&model.to_string_lossy(), None)?;
            print!("{}", describe_model(&m, json)?);
        }
        Command::Bench {
            model,
            rows,
            batch_sizes,
            layouts,
            device,
            device_id,
            json,
        } => {
            crate::model::init_runtime(ort_lib)?;
            let device = crate::model::ExecutionDevice::new(device, device_id);
            device
                .check()
                .map_err(|e| anyhow::anyhow!("{device}: ONNX Runtime cannot use it: {e}"))?;
            let m = Model::open(&model.to_string_lossy(), None)?;
            let layouts = if layouts.is_empty() {
                crate::bench::default_layouts(crate::source::effective_workers(0))
            } else {
                layouts
            };
            let report = crate::bench::bench(&m, rows.max(1), &batch_sizes, &layouts, device)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", crate::bench::describe(&report));
            }
        }
        Command::Schema { kind } => {
            let name = match kind {
                SchemaKind::Job => "job.schema.json",
                SchemaKind::Metrics => "metrics.schema.json",
                SchemaKind::Manifest => "manifest.schema.json",
            };
            let schemas = crate::metrics::json_schemas();
            if let Some((_, text)) = schemas.iter().find(|(n, _)| *n == name) {
                print!("{text}");
            }
        }
    }
    Ok(())
}

/// `2x1`: two sessions of one intra-op thread each.
fn parse_layout(s: &str) -> Result<crate::bench::Layout, String> {
    let (a, b) = s
        .split_once('x')
        .ok_or_else(|| format!("{s:?}: expected SESSIONSxTHREADS, e.g. 2x1"))?;
    let n = |t: &str| {
        t.parse::<usize>()
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| format!("{s:?}: {t:?} is not a positive number"))
    };
    Ok(crate::bench::Layout {
        sessions: n(a)?,
        intra_op_threads: n(b)?,
    })
}

fn to_map(vars: Vec<(String, String)>) -> BTreeMap<String, String> {
    vars.into_iter().collect()
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

/// A signal that stopped a run.
#[derive(Debug, Clone, Copy)]
pub struct Signal {
    pub name: &'static str,
    /// 128 + the signal number, as shells report it.
    pub exit_code: i32,
}

/// The run was stopped by a signal before it committed.
#[derive(Debug, thiserror::Error)]
#[error("interrupted by {}: nothing was committed", .0.name)]
pub struct Interrupted(pub Signal);

/// Waits for SIGINT or SIGTERM.
async fn shutdown_signal() -> Signal {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        // Without signal handlers the default action (termination) applies; wait forever.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => Signal { name: "SIGINT", exit_code: 130 },
        _ = term.recv() => Signal { name: "SIGTERM", exit_code: 143 },
    }
}

/// The exit code for an error: 2 when refused before any work, 3 past the reject budget,
/// 130/143 when stopped by SIGINT/SIGTERM, else 1.
pub fn exit_code(e: &anyhow::Error) -> i32 {
    if let Some(Interrupted(signal)) = e.downcast_ref::<Interrupted>() {
        return signal.exit_code;
    }
    if let Some(r) = e.downcast_ref::<RunError>() {
        return r.exit_code();
    }
    if e.downcast_ref::<spec::SpecError>().is_some() {
        return 2;
    }
    if let Some(m) = e.downcast_ref::<crate::model::ModelError>() {
        return match m {
            crate::model::ModelError::OrtNotFound { .. }
            | crate::model::ModelError::OrtLoad { .. } => 1,
            _ => 2,
        };
    }
    1
}
