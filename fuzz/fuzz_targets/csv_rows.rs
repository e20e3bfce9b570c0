//! CSV rows through the whole run (reading, the features stage, scoring, the commit): any
//! body under a fixed header must give a committed output in which every row read is either
//! scored or rejected, or be refused before any work. A failed run is a finding.
#![no_main]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a tokio runtime")
    })
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fuzz_target!(|body: &[u8]| {
    let dir = tempfile::tempdir().expect("a temp dir");
    let mut csv = b"row_id,a,b\n".to_vec();
    csv.extend_from_slice(body);
    std::fs::write(dir.path().join("d.csv"), &csv).expect("write the input");
    // Model inputs `a` (int64) and `b` (int32), bound by name; small batches so that a
    // short body still spans several.
    let spec = format!(
        "name = \"fuzz\"\n[input]\nuri = \"d.csv\"\n[model]\nuri = \"{}\"\n[output]\nuri = \"out/\"\n[run]\nbatch_size = 7\nworkers = 2\n",
        repo()
            .join("sample_data/synthetic/rank1_int.onnx")
            .display()
    );
    let loaded = batchscore::spec::load_str(
        &spec,
        &dir.path().join("fuzz.toml"),
        dir.path(),
        &BTreeMap::new(),
    )
    .expect("the fixed spec loads");
    let ort = std::env::var_os("ORT_DYLIB_PATH")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(".ort/lib/libonnxruntime.so.1.31.1"));
    runtime().block_on(async {
        let plan = match batchscore::run::plan_job(loaded, Some(&ort)).await {
            Ok(plan) => plan,
            Err(e) => {
                // Refused before any work: fine, when it says why.
                assert_eq!(e.exit_code(), 2, "{e}");
                return;
            }
        };
        match batchscore::run::execute(plan, None).await {
            Ok(summary) => {
                let rows = &summary.metrics.rows;
                let read = rows.read.expect("a CSV scan counts its rows");
                assert_eq!(read, rows.scored + rows.rejected, "{rows:?}");
                assert_eq!(rows.written, rows.scored, "{rows:?}");
            }
            Err(e) => panic!("a CSV body failed the run: {e}"),
        }
    });
});
