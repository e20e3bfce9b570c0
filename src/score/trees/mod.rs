//! A native evaluator for ONNX tree ensembles (`TreeEnsembleClassifier`,
//! `TreeEnsembleRegressor`, and `TreeEnsemble` of ai.onnx.ml 5 read by `v5.rs`), whose outputs
//! are ONNX Runtime's own, bit for bit.
//!
//! [`NativeEnsemble::from_onnx`] reads a model whose graph is one ensemble over one float32
//! input (with `Identity`, `Cast` and scalar `Mul`/`Add` nodes around it, as the converters
//! write them) and refuses anything else ([`Unsupported`]), which then scores in ONNX Runtime.
//! [`NativeEnsemble::predict`] scores rows of features and returns every graph output.
//!
//! Identical means the same float32 operations in the same order as ONNX Runtime's CPU
//! kernel with one thread: each row's tree scores summed in float32 in the trees' order, the
//! base values added as it adds them, the post-transform computed by the same formulas
//! (`ml_common.h`: `1 / (1 + exp(-|x|))`, a softmax over float32). A run checks a sample of
//! its first batch both ways before it trusts this ([`crate::run`]).

mod bitvec;
mod eval;
mod gather;
mod graph;
mod layout;
mod v5;

pub use eval::{NativeOutput, Outputs};

/// Why a model is not scored natively: said once in the log, and ONNX Runtime scores it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Unsupported(pub String);

/// A tree ensemble laid out for scoring, with the graph around it.
#[derive(Debug)]
pub struct NativeEnsemble {
    ensemble: eval::Ensemble,
    graph: graph::Graph,
}

impl NativeEnsemble {
    /// The model's ensemble, when the native evaluator can score the whole graph.
    pub fn from_onnx(bytes: &[u8]) -> Result<Self, Unsupported> {
        let graph = graph::Graph::read(bytes)?;
        let ensemble = eval::Ensemble::new(&graph.ensemble)?;
        Ok(Self { ensemble, graph })
    }

    /// The graph input the ensemble reads (a float32 `[N, C]` tensor).
    pub fn input_name(&self) -> &str {
        &self.graph.input
    }

    /// Values per row the ensemble reads (the largest feature index + 1).
    pub fn n_features(&self) -> usize {
        self.ensemble.n_features()
    }

    /// How many trees, for the log.
    pub fn n_trees(&self) -> usize {
        self.ensemble.n_trees()
    }

    /// How the trees are evaluated: `"bit vectors"` (QuickScorer's layout, every tree at
    /// most 64 leaves), `"node walk by blocks"` (16 rows down each tree side by side; `", AVX2
    /// gathers"` after it where 8 rows take each step in vector instructions) or `"node walk
    /// by row"` (splits of several kinds).
    pub fn layout(&self) -> &'static str {
        self.ensemble.layout()
    }

    /// Lets the node walk by blocks fetch with AVX2 gathers where the CPU has them (the
    /// default), or keeps it to the scalar walk (`on = false`); both reach the same leaves,
    /// and the tests prove each.
    pub fn set_gathers(&mut self, on: bool) {
        self.ensemble.set_gathers(on);
    }

    /// Scores `rows` rows of row-major float32 features (`x.len()` is `rows` times the
    /// input's values per row, which must be at least [`Self::n_features`]) and returns every
    /// graph output by name, as ONNX Runtime would.
    pub fn predict(&self, x: &[f32], rows: usize) -> Outputs {
        let raw = self.ensemble.predict(x, rows);
        self.graph.finish(raw)
    }
}
