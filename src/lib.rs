//! batchscore: score tabular data (Parquet, CSV) with ONNX models, offline and in bulk.
//!
//! The modules are declared in the order data flows through a run (see `DESIGN.md`); a module
//! uses only the ones declared before it. To change a behaviour, find its stage here.

// Foundations every stage shares.
/// Problems with a job, each under its spec key, and "did you mean" suggestions.
pub mod diagnostics;
/// Points where a test can hold a run (compiled in only with the `test-hooks` feature).
pub mod hooks;
/// The dead-letter format: `_rejected/` rows, their reasons, and how they are counted.
pub mod reject;
/// Object stores (S3, GCS, Azure, HTTP) from URIs and the spec's `[storage]` table.
pub mod storage;

// The flow of a run.
/// The command line.
pub mod cli;
/// How columns become tensors: binding expressions to model inputs, casts, packing.
pub mod features;
/// The input files as the DataFusion table `input` (Parquet, or our CSV scan), and the query.
pub mod input;
/// The ONNX model: ONNX Runtime, sessions, devices, the type map, the ONNX reader, the cache.
pub mod model;
/// Part files and the exactly-once commit, locally or in an object store.
pub mod output;
/// Sensitive columns: which are (declared, or derived by the query) and the policy each leaves
/// under, as scalar functions on the pass-through columns.
pub mod privacy;
/// What a run reports: `_metrics.json` and `_manifest.json`, with their JSON Schemas.
pub mod report;
/// Planning a job, and running it as one streaming plan up to the commit.
pub mod run;
/// Scoring inside the plan: the `predict` function, outputs, tree-ensemble row order.
pub mod score;
/// The job spec: its types, loading (templating, paths) and checks.
pub mod spec;
