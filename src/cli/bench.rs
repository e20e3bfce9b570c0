//! `batchscore bench MODEL`: ONNX Runtime's inference-only rate for a model on this machine,
//! over batch sizes and thread layouts (the measuring is `model::bench`).

use std::path::Path;

use crate::model::bench::{self, Layout};
use crate::model::{ExecutionDevice, Model};
use crate::score::trees::NativeEnsemble;
use crate::spec::Device;

/// What `bench` measures, and how it reports.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Rows scored per measurement.
    #[arg(long, default_value_t = 131_072)]
    pub rows: usize,
    /// Batch sizes to try, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [1024usize, 2048, 8192, 65536])]
    pub batch_sizes: Vec<usize>,
    /// Layouts to try as SESSIONSxTHREADS, comma-separated (e.g. 2x1,1x2). Default: one
    /// session per core with one thread each, one session with every core, and (with 4+
    /// cores) half as many sessions with two threads.
    #[arg(long, value_delimiter = ',', value_parser = parse_layout)]
    pub layouts: Vec<Layout>,
    /// Where to run: cpu, or cuda (with the onnxruntime-gpu wheel's library).
    #[arg(long, value_enum, default_value_t = Device::Cpu)]
    pub device: Device,
    /// The GPU for --device cuda.
    #[arg(long, default_value_t = 0)]
    pub device_id: u32,
    /// Tokens per row for a text model: each input's dynamic dimensions after the batch
    /// (`[batch, sequence]`) take this length (measure at the padded length a job's calls
    /// have: `_metrics.json`'s `text.padded_tokens` over its rows).
    #[arg(long, default_value_t = 1)]
    pub sequence_length: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Measures `model` and returns the report as a table (or JSON).
pub fn run(model: &Path, args: BenchArgs, ort_lib: Option<&Path>) -> anyhow::Result<String> {
    crate::model::init_runtime(ort_lib)?;
    let device = ExecutionDevice::new(args.device, args.device_id);
    device.check()?;
    let m = Model::open(&model.to_string_lossy(), None)?;
    let layouts = if args.layouts.is_empty() {
        bench::default_layouts(crate::spec::available_cores())
    } else {
        args.layouts
    };
    let rows = args.rows.max(1);
    let mut report = bench::bench(
        &m,
        rows,
        &args.batch_sizes,
        &layouts,
        device,
        args.sequence_length,
    )?;
    if device == ExecutionDevice::Cpu
        && let Ok(ensemble) = NativeEnsemble::from_onnx(m.onnx_bytes())
    {
        report.native = bench_native(&m, &ensemble, args.rows.max(1), &args.batch_sizes, &layouts)?;
    }
    Ok(if args.json {
        serde_json::to_string_pretty(&report)? + "\n"
    } else {
        bench::describe(&report)
    })
}

/// The native tree evaluator over the same synthetic inputs: for each batch size, each
/// layout's session count as that many threads (the evaluator uses one thread per call).
fn bench_native(
    m: &Model,
    ensemble: &NativeEnsemble,
    rows: usize,
    batch_sizes: &[usize],
    layouts: &[Layout],
) -> anyhow::Result<Vec<bench::BenchResult>> {
    let mut workers: Vec<usize> = layouts.iter().map(|l| l.sessions.max(1)).collect();
    workers.dedup();
    let mut out = Vec::new();
    for &threads in &workers {
        for &batch in batch_sizes {
            let (inputs, per_run) = bench::synthetic_inputs(m, batch, 1)?;
            let Some((_, input)) = inputs.iter().find(|(n, _)| n == ensemble.input_name()) else {
                return Ok(Vec::new());
            };
            let (_, x) = input.try_extract_tensor::<f32>()?;
            let runs_each = rows.div_ceil(per_run * threads).max(1);
            std::hint::black_box(ensemble.predict(x, per_run));
            let started = std::time::Instant::now();
            std::thread::scope(|scope| {
                for _ in 0..threads {
                    scope.spawn(|| {
                        for _ in 0..runs_each {
                            std::hint::black_box(ensemble.predict(x, per_run));
                        }
                    });
                }
            });
            let seconds = started.elapsed().as_secs_f64().max(1e-9);
            out.push(bench::BenchResult {
                batch_size: per_run,
                layout: Layout {
                    sessions: threads,
                    intra_op_threads: 1,
                },
                rows_per_second: (runs_each * per_run * threads) as f64 / seconds,
            });
        }
    }
    Ok(out)
}

/// Why a `--layouts` entry is not `SESSIONSxTHREADS`.
#[derive(Debug, thiserror::Error)]
#[error("{layout:?}: {why}")]
pub struct LayoutError {
    layout: String,
    why: String,
}

/// `2x1`: two sessions of one intra-op thread each.
pub fn parse_layout(s: &str) -> Result<Layout, LayoutError> {
    let fail = |why: String| LayoutError {
        layout: s.to_string(),
        why,
    };
    let (a, b) = s
        .split_once('x')
        .ok_or_else(|| fail("expected SESSIONSxTHREADS, e.g. 2x1".into()))?;
    let n = |t: &str| {
        t.parse::<usize>()
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| fail(format!("{t:?} is not a positive number")))
    };
    Ok(Layout {
        sessions: n(a)?,
        intra_op_threads: n(b)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_are_sessions_by_threads() {
        let l = parse_layout("4x2").unwrap();
        assert_eq!((l.sessions, l.intra_op_threads), (4, 2));
        assert_eq!(
            parse_layout("2y1").unwrap_err().to_string(),
            "\"2y1\": expected SESSIONSxTHREADS, e.g. 2x1"
        );
        assert_eq!(
            parse_layout("0x1").unwrap_err().to_string(),
            "\"0x1\": \"0\" is not a positive number"
        );
    }
}
