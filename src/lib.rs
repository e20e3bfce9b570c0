//! batchscore: score tabular data (Parquet, CSV) with ONNX models, offline and in bulk.
//!
//! The modules follow the data flow (see `DESIGN.md`):
//! [`spec`] → [`storage`] and [`source`] → [`features`] → [`score`] → [`sink`], with [`model`] holding the
//! ONNX model and its sessions, [`metrics`] what a run reports, [`run`] the orchestration
//! (with [`work_queue`], the queue its scoring workers take batches from), [`tree_order`] the
//! order tree ensembles score a batch's rows in, and [`cli`] the command line.

pub mod bench;
pub mod cli;
pub mod csv_input;
pub mod features;
pub mod metrics;
pub mod model;
pub mod run;
pub mod score;
pub mod sink;
pub mod source;
pub mod spec;
pub mod storage;
pub mod tree_order;
pub mod work_queue;
