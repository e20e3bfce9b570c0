//! The sqllogictest files of `tests/sql/` (`*.slt`), run against the library's SQL session:
//! `run`'s session context with the dynamic file catalog and `predict`/`predict_output`
//! registered for the sample models, as `batchscore sql` sets it up. Their expected results
//! come from the oracle (`tests/sql/make_slt.py`).

use std::sync::Arc;

use batchscore::model::Model;
use batchscore::score::sql::{SqlModels, register};
use batchscore::spec::{Device, RunSpec};
use batchscore::storage::StoreFactory;
use datafusion::arrow::array::{Array, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::util::display::array_value_to_string;
use datafusion::error::DataFusionError;
use datafusion::prelude::SessionContext;
use sqllogictest::{AsyncDB, DBOutput, DefaultColumnType};

/// The models the `.slt` files call, by name.
const MODELS: [(&str, &str); 4] = [
    ("churn", "sample_data/churn/churn_lgbm.onnx"),
    ("price", "sample_data/houses/price_ridge.onnx"),
    ("fraud", "sample_data/fraud/fraud_xgb.onnx"),
    ("plans", "sample_data/plans/plans_pipeline.onnx"),
];

struct Db {
    ctx: SessionContext,
}

impl Db {
    async fn new() -> Result<Self, DataFusionError> {
        let ext = |e: batchscore::model::ModelError| DataFusionError::External(e.into());
        batchscore::model::init_runtime(None).map_err(ext)?;
        let stores = StoreFactory::default();
        let mut models = Vec::new();
        for (name, uri) in MODELS {
            models.push((
                name.to_string(),
                Model::load(uri, None, &stores).await.map_err(ext)?,
                None,
            ));
        }
        let run = RunSpec::default();
        let models = SqlModels::new(
            models,
            run.worker_count(),
            run.inference_batch_size(Device::Cpu),
        );
        let ctx = batchscore::input::session_context(&run).enable_url_table();
        register(&ctx, Arc::new(models));
        Ok(Self { ctx })
    }
}

/// A cell as the `.slt` files spell it: NULL, floats in Rust's shortest form, else Arrow's text.
fn cell(a: &dyn Array, row: usize) -> Result<String, DataFusionError> {
    if a.is_null(row) {
        return Ok("NULL".into());
    }
    Ok(match a.data_type() {
        DataType::Float16 | DataType::Float32 | DataType::Float64 => {
            let f = cast(&a.slice(row, 1), &DataType::Float64)?;
            let f = f
                .as_any()
                .downcast_ref::<datafusion::arrow::array::Float64Array>()
                .ok_or_else(|| DataFusionError::Internal("a Float64 cast".into()))?;
            format!("{}", f.value(0))
        }
        _ => array_value_to_string(a, row)?,
    })
}

fn column_type(t: &DataType) -> DefaultColumnType {
    if t.is_floating() {
        DefaultColumnType::FloatingPoint
    } else if t.is_integer() {
        DefaultColumnType::Integer
    } else {
        DefaultColumnType::Text
    }
}

fn rows(batches: &[RecordBatch]) -> Result<Vec<Vec<String>>, DataFusionError> {
    let mut out = Vec::new();
    for b in batches {
        for row in 0..b.num_rows() {
            let cells = b
                .columns()
                .iter()
                .map(|c| cell(c.as_ref(), row))
                .collect::<Result<Vec<_>, _>>()?;
            out.push(cells);
        }
    }
    Ok(out)
}

#[async_trait::async_trait]
impl AsyncDB for Db {
    type Error = DataFusionError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, DataFusionError> {
        let frame = self.ctx.sql(sql).await?;
        let types = frame
            .schema()
            .fields()
            .iter()
            .map(|f| column_type(f.data_type()))
            .collect();
        let batches = frame.collect().await?;
        Ok(DBOutput::Rows {
            types,
            rows: rows(&batches)?,
        })
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "batchscore"
    }
}

/// Every `tests/sql/*.slt`, each with a fresh session (the cwd is the repository root).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slt_files_pass() {
    if std::env::var_os("ORT_DYLIB_PATH").is_none() {
        // SAFETY: set before any thread of this test reads the environment.
        unsafe {
            std::env::set_var(
                "ORT_DYLIB_PATH",
                concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/.ort/lib/libonnxruntime.so.1.31.1"
                ),
            )
        };
    }
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sql");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "slt"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .slt files in {}", dir.display());
    for file in files {
        let mut runner = sqllogictest::Runner::new(Db::new);
        runner
            .run_file_async(&file)
            .await
            .unwrap_or_else(|e| panic!("{}:\n{}", file.display(), e.display(true)));
    }
}
