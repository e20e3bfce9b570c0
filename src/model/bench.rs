//! `batchscore bench MODEL`: ONNX Runtime's inference-only throughput on this machine, over
//! batch sizes and thread layouts, and the settings a job should use.
//!
//! This is the "performance test" step of a deployment done by the tool: the same library,
//! the same session options and the same layout `run` uses (one session per worker), with
//! tensors already in memory, so the figure is the ceiling a `run` can approach. (A run can
//! pass it for a tree ensemble, whose rows it sorts by their branches first: see
//! `tree_order`; these rows are scored in the order they are made.) Inputs are
//! synthetic: zeros for integers (valid indexes for any lookup), standard normal values for
//! floats (a tree ensemble's cost depends on the paths its rows take: inputs that repeat a
//! pattern take the same few paths and measured twice as fast as real data), empty strings
//! for text.

use std::time::Instant;

use ort::session::Session;
use ort::value::{DynValue, Tensor};
use serde::Serialize;

use super::{ElemType, ExecutionDevice, IoKind, Model, ModelError};

/// Why a model could not be measured.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Model(#[from] ModelError),
    /// An input synthetic values cannot be made for: a refusal, as for `run`.
    #[error("model {uri}: input {input:?} {why}")]
    Input {
        uri: String,
        input: String,
        why: String,
    },
    #[error("model {uri}: ONNX Runtime failed: {source}")]
    Run { uri: String, source: ort::Error },
    #[error("a benchmark thread panicked")]
    Panicked,
    #[error("nothing was measured: give at least one batch size and one layout")]
    Nothing,
}

/// How many sessions run at once, and the intra-op threads each has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Layout {
    pub sessions: usize,
    pub intra_op_threads: usize,
}

/// One measurement.
#[derive(Debug, Clone, Serialize)]
pub struct BenchResult {
    pub batch_size: usize,
    #[serde(flatten)]
    pub layout: Layout,
    pub rows_per_second: f64,
}

/// Every measurement and the best.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub model: String,
    /// `cpu` or `cuda:N`.
    pub device: String,
    pub cores: usize,
    pub rows_per_measurement: usize,
    pub results: Vec<BenchResult>,
    pub best: BenchResult,
    /// For a tree ensemble batchscore scores natively (`[run] tree_engine = "native"`): the
    /// native evaluator's rate over the same inputs, batch sizes and worker counts (one
    /// thread each). Empty for other models.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub native: Vec<BenchResult>,
}

/// The layouts worth trying on `cores` cores: a session per core with one thread each (what
/// `run` does), one session with every core, and halfway between.
pub fn default_layouts(cores: usize) -> Vec<Layout> {
    let mut v = vec![Layout {
        sessions: cores,
        intra_op_threads: 1,
    }];
    if cores > 1 {
        v.push(Layout {
            sessions: 1,
            intra_op_threads: cores,
        });
    }
    if cores >= 4 {
        v.push(Layout {
            sessions: cores / 2,
            intra_op_threads: 2,
        });
    }
    v
}

/// Measures every batch size under every layout, about `rows` rows each.
pub fn bench(
    model: &Model,
    rows: usize,
    batch_sizes: &[usize],
    layouts: &[Layout],
    device: ExecutionDevice,
    sequence_length: usize,
) -> Result<BenchReport, BenchError> {
    let mut results = Vec::new();
    for layout in layouts {
        let mut sessions = (0..layout.sessions.max(1))
            .map(|_| model.new_session(layout.intra_op_threads.max(1), device))
            .collect::<Result<Vec<_>, _>>()?;
        for &batch in batch_sizes {
            let (inputs, per_run) = synthetic_inputs(model, batch, sequence_length)?;
            let runs_each = rows.div_ceil(per_run * sessions.len()).max(1);
            let seconds = time_runs(model, &mut sessions, &inputs, runs_each)?;
            let done = runs_each * per_run * sessions.len();
            results.push(BenchResult {
                batch_size: per_run,
                layout: *layout,
                rows_per_second: done as f64 / seconds.max(1e-9),
            });
        }
    }
    BenchReport::new(model, device, rows, results)
}

impl BenchReport {
    /// The report of `results`, the fastest picked as the best.
    fn new(
        model: &Model,
        device: ExecutionDevice,
        rows: usize,
        results: Vec<BenchResult>,
    ) -> Result<Self, BenchError> {
        let best = fastest(&results).cloned().ok_or(BenchError::Nothing)?;
        Ok(Self {
            model: model.uri.clone(),
            device: device.to_string(),
            cores: crate::spec::available_cores(),
            rows_per_measurement: rows,
            results,
            best,
            native: Vec::new(),
        })
    }
}

/// The measurement with the most rows per second; the first of equals.
fn fastest(results: &[BenchResult]) -> Option<&BenchResult> {
    results.iter().reduce(|best, r| {
        if r.rows_per_second > best.rows_per_second {
            r
        } else {
            best
        }
    })
}

/// Seconds for every session to run `inputs` `runs_each` times at once, after one warm-up
/// run each (the first run allocates ONNX Runtime's arenas).
fn time_runs(
    model: &Model,
    sessions: &mut [Session],
    inputs: &[(String, DynValue)],
    runs_each: usize,
) -> Result<f64, BenchError> {
    let failed = |source| BenchError::Run {
        uri: model.uri.clone(),
        source,
    };
    for s in sessions.iter_mut() {
        run_once(s, inputs).map_err(failed)?;
    }
    let started = Instant::now();
    std::thread::scope(|scope| {
        let handles: Vec<_> = sessions
            .iter_mut()
            .map(|s| scope.spawn(move || (0..runs_each).try_for_each(|_| run_once(s, inputs))))
            .collect();
        for h in handles {
            h.join()
                .map_err(|_| BenchError::Panicked)?
                .map_err(failed)?;
        }
        Ok(started.elapsed().as_secs_f64())
    })
}

fn run_once(session: &mut Session, inputs: &[(String, DynValue)]) -> ort::Result<()> {
    let refs: Vec<(&str, &DynValue)> = inputs.iter().map(|(n, v)| (n.as_str(), v)).collect();
    session.run(refs).map(drop)
}

/// A batch of synthetic inputs; the rows per run are `batch` unless the model fixes its batch
/// dimension.
/// Dynamic dimensions after the batch take `sequence_length` (a text model's tokens per row;
/// 1 for others).
pub fn synthetic_inputs(
    model: &Model,
    batch: usize,
    sequence_length: usize,
) -> Result<(Vec<(String, DynValue)>, usize), BenchError> {
    let mut per_run = batch;
    let mut out = Vec::new();
    for input in &model.inputs {
        let refuse = |why: String| BenchError::Input {
            uri: model.uri.clone(),
            input: input.name.clone(),
            why,
        };
        let IoKind::Tensor { dtype, shape } = &input.kind else {
            return Err(refuse(format!("is not a tensor ({})", input.kind)));
        };
        let mut dims: Vec<i64> = shape.clone();
        if dims.is_empty() {
            dims.push(batch as i64);
        }
        if dims[0] < 0 {
            dims[0] = batch as i64;
        } else {
            per_run = dims[0] as usize;
        }
        for d in dims.iter_mut().skip(1) {
            if *d < 0 {
                *d = sequence_length.max(1) as i64;
            }
        }
        let n: usize = dims.iter().map(|&d| d as usize).product();
        let value = match dtype {
            ElemType::Float32 => {
                let data: Vec<f32> = normal_values(n).map(|v| v as f32).collect();
                Tensor::from_array((dims, data)).map(|t| t.into_dyn())
            }
            ElemType::Float64 => {
                let data: Vec<f64> = normal_values(n).collect();
                Tensor::from_array((dims, data)).map(|t| t.into_dyn())
            }
            ElemType::Int64 => Tensor::from_array((dims, vec![0i64; n])).map(|t| t.into_dyn()),
            ElemType::Int32 => Tensor::from_array((dims, vec![0i32; n])).map(|t| t.into_dyn()),
            ElemType::Bool => Tensor::from_array((dims, vec![false; n])).map(|t| t.into_dyn()),
            ElemType::String => {
                let data = vec![String::new(); n];
                Tensor::from_string_array((dims, data.as_slice())).map(|t| t.into_dyn())
            }
            ElemType::Other(name) => return Err(refuse(format!("is of type {name}"))),
        }
        .map_err(|source| BenchError::Run {
            uri: model.uri.clone(),
            source,
        })?;
        out.push((input.name.clone(), value));
    }
    Ok((out, per_run))
}

/// `n` standard normal values (Irwin-Hall: the sum of 12 uniforms, less 6), from a fixed
/// xorshift seed so that runs compare.
fn normal_values(n: usize) -> impl Iterator<Item = f64> {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut uniform = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    (0..n).map(move |_| (0..12).map(|_| uniform()).sum::<f64>() - 6.0)
}

/// The report as a table, with the settings it suggests.
pub fn describe(report: &BenchReport) -> String {
    let mut s = format!(
        "model: {}\ndevice: {}\ncores: {}\nrows per measurement: {}\n\n{:>10}  {:>8}  {:>17}  {:>12}\n",
        report.model,
        report.device,
        report.cores,
        report.rows_per_measurement,
        "batch",
        "sessions",
        "intra-op threads",
        "rows/s"
    );
    for r in &report.results {
        s.push_str(&format!(
            "{:>10}  {:>8}  {:>17}  {:>12.0}\n",
            r.batch_size, r.layout.sessions, r.layout.intra_op_threads, r.rows_per_second
        ));
    }
    if !report.native.is_empty() {
        s.push_str(
            "\nnative tree evaluator ([run] tree_engine = \"native\", one thread per worker):\n",
        );
        s.push_str(&format!(
            "{:>10}  {:>8}  {:>17}  {:>12}\n",
            "batch", "workers", "", "rows/s"
        ));
        for r in &report.native {
            s.push_str(&format!(
                "{:>10}  {:>8}  {:>17}  {:>12.0}\n",
                r.batch_size, r.layout.sessions, "", r.rows_per_second
            ));
        }
    }
    let b = &report.best;
    s.push_str(&format!(
        "\nbest: {:.0} rows/s with batch {}, {} session(s) x {} intra-op thread(s)\n\
         suggested:\n  [run]\n  inference_batch_size = {}\n  workers = {}\n  intra_op_threads = {}\n",
        b.rows_per_second,
        b.batch_size,
        b.layout.sessions,
        b.layout.intra_op_threads,
        b.batch_size,
        b.layout.sessions,
        b.layout.intra_op_threads
    ));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(batch_size: usize, sessions: usize, rows_per_second: f64) -> BenchResult {
        BenchResult {
            batch_size,
            layout: Layout {
                sessions,
                intra_op_threads: 1,
            },
            rows_per_second,
        }
    }

    #[test]
    fn the_fastest_measurement_is_suggested() {
        let results = vec![
            result(1024, 2, 10.0),
            result(2048, 2, 30.0),
            result(8192, 1, 30.0),
            result(65536, 1, 20.0),
        ];
        // The fastest is neither the first nor the last; of equals, the first wins.
        let best = fastest(&results).unwrap();
        assert_eq!((best.batch_size, best.layout.sessions), (2048, 2));
        assert!(fastest(&[]).is_none());
        let report = BenchReport {
            model: "m.onnx".into(),
            device: "cpu".into(),
            cores: 2,
            rows_per_measurement: 100,
            best: best.clone(),
            results,
            native: Vec::new(),
        };
        let text = describe(&report);
        assert!(
            text.ends_with(
                "best: 30 rows/s with batch 2048, 2 session(s) x 1 intra-op thread(s)\n\
                 suggested:\n  [run]\n  inference_batch_size = 2048\n  workers = 2\n  intra_op_threads = 1\n"
            ),
            "{text}"
        );
        assert_eq!(
            text.lines().filter(|l| l.ends_with("  30")).count(),
            2,
            "{text}"
        );
    }
}
