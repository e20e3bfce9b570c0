//! `run --resume`: a run scored in recorded pieces, killed, and resumed where it stopped.

mod common;
use common::*;

fn resumable_job(s: &Scratch) -> std::path::PathBuf {
    let spec = std::fs::read_to_string(repo().join("jobs/fraud.toml"))
        .unwrap()
        .replace(
            "uri = \"../sample_data/fraud/transactions.parquet\"",
            "uri = \"../in/\"",
        )
        .replace(
            "uri = \"../sample_data/fraud/fraud_xgb.onnx\"",
            &format!("uri = {:?}", sample("fraud/fraud_xgb.onnx")),
        );
    s.job("fraud.toml", &spec)
}

/// Starts `run --resume`, holds it once piece `piece` is recorded finished, and kills it.
fn kill_after_piece(s: &Scratch, job: &str, piece: usize) {
    let barrier = s.path(&format!("barrier-{piece}"));
    let child = batchscore()
        .args(["run", job, "--resume"])
        .env(
            "BATCHSCORE_TEST_BARRIER",
            format!("piece-{piece}:{}:2", barrier.display()),
        )
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut child = KillOnDrop(child);
    wait_until("the run finishes the piece", || {
        std::fs::read_dir(&barrier).is_ok_and(|d| d.count() == 1)
    });
    // SAFETY: signalling our own child process by its id.
    assert_eq!(unsafe { libc::kill(child.0.id() as i32, libc::SIGKILL) }, 0);
    child.0.wait().unwrap();
}

/// 40 row groups in two files are 40 pieces. Killed once 36 are finished (90%), the run
/// resumed with `--resume` scores only the last 4 and commits every row once, with
/// onnxruntime's scores; its metrics say what was skipped.
#[test]
fn a_run_killed_at_ninety_percent_resumes_there() {
    let s = Scratch::new();
    let expected = replicated_fraud_input(&s.path("in"), 2, 4);
    let job = resumable_job(&s);
    let job = job.to_str().unwrap();
    kill_after_piece(&s, job, 35);
    let out = s.path("out/fraud");
    assert!(!out.exists(), "a killed run commits nothing");
    let finished = std::fs::read_dir(s.path("out/.fraud.run/shards")).unwrap();
    assert_eq!(finished.count(), 36, "the pieces finished before the kill");
    let err = assert_exit(&run(&["commit", out.to_str().unwrap()]), 4);
    assert!(
        err.contains("36 of its 40 pieces are finished; run the job again with --resume"),
        "{err}"
    );

    let o = run(&["run", job, "--resume", "--json"]);
    assert_ok(&o);
    let m: serde_json::Value = serde_json::from_str(&text(&o).0).unwrap();
    assert_eq!(
        m["resumed"],
        serde_json::json!({"pieces": 40, "pieces_skipped": 36, "units_skipped": 36, "rows_skipped": 18000})
    );
    assert_eq!(m["rows"]["scored"], 20_000);
    assert_eq!(m["workers"], 2);
    assert_matches(
        &read_output(&out),
        &expected,
        "txn_id",
        &["fraud_probability", "fraud_label"],
    );
    assert_eq!(read_manifest(&out).rows, 20_000);
    assert!(!s.path("out/.fraud.run").exists(), "the run folder is gone");
}

/// A resumed run must be the same run: an input file changed since the kill is refused,
/// saying so; a plain run then starts over and clears the earlier attempt's pieces.
#[test]
fn resume_refuses_a_changed_input_and_a_plain_run_starts_over() {
    let s = Scratch::new();
    let expected = replicated_fraud_input(&s.path("in"), 2, 1);
    let job = resumable_job(&s);
    let job = job.to_str().unwrap();
    kill_after_piece(&s, job, 3);
    // The same rows, written again: a new modification time is a new input.
    std::thread::sleep(std::time::Duration::from_millis(20));
    let bytes = std::fs::read(s.path("in/part-1.parquet")).unwrap();
    std::fs::write(s.path("in/part-1.parquet"), bytes).unwrap();
    let err = assert_exit(&run(&["run", job, "--resume"]), 2);
    assert!(
        err.contains("another run is in progress here")
            && err.contains("differs from it in the input files"),
        "{err}"
    );
    let err = assert_exit(&run(&["run", job, "--resume", "--shard", "0/2"]), 2);
    assert!(err.contains("cannot be used with"), "{err}");

    let o = run(&["run", job]);
    assert_ok(&o);
    assert_matches(
        &read_output(&s.path("out/fraud")),
        &expected,
        "txn_id",
        &["fraud_probability", "fraud_label"],
    );
    assert!(
        !s.path("out/.fraud.run").exists(),
        "the plain run removed the earlier attempt's pieces"
    );
}

/// A run split in three shards reports the distributions one process reports: the shards'
/// profiles are saved with their manifests and merged at the commit, exactly for counts,
/// extremes, classes and one-bin-per-value histograms, to rounding for moments.
#[test]
fn a_sharded_runs_distributions_are_those_of_one_run() {
    let (one, three) = whole_and_three_shards("churn", "churn");
    let (one, three) = (&one["distributions"], &three["distributions"]);
    let names: Vec<&String> = one.as_object().unwrap().keys().collect();
    assert_eq!(names, three.as_object().unwrap().keys().collect::<Vec<_>>());
    assert_eq!(names.len(), 7, "{names:?}");
    for name in names {
        let (a, b) = (&one[name], &three[name]);
        for exact in ["count", "nulls", "non_finite", "min", "max", "classes"] {
            assert_eq!(a[exact], b[exact], "{name}.{exact}");
        }
        for moment in ["mean", "std"] {
            if let (Some(x), Some(y)) = (a[moment].as_f64(), b[moment].as_f64()) {
                assert!(
                    (x - y).abs() <= 1e-9 * x.abs().max(1.0),
                    "{name}.{moment}: {x} vs {y}"
                );
            }
        }
        if a["histogram"]["exact"] == true {
            assert_eq!(a["histogram"], b["histogram"], "{name}");
        }
    }
    // ln(1 + support_calls) takes a handful of values: one exact bin each.
    assert_eq!(one["features[3]"]["histogram"]["exact"], true);
}

/// A run with a challenger, split in three shards, reports the agreement one process
/// reports: each shard saves its tallies and the commit merges them (exactly for counts and
/// the confusion table, to rounding for the moments).
#[test]
fn a_sharded_runs_challenger_agreement_is_that_of_one_run() {
    let (one, three) = whole_and_three_shards("churn-challenger", "churn-challenger");
    let (one, three) = (&one["challengers"]["small"], &three["challengers"]["small"]);
    assert_eq!(one["rows_rejected"], three["rows_rejected"]);
    assert_eq!(one["model"], three["model"]);
    let label = (
        &one["outputs"]["churn_label"],
        &three["outputs"]["churn_label"],
    );
    assert_eq!(label.0["rows"], 1941);
    assert_eq!(label.0, label.1);
    let (a, b) = (
        &one["outputs"]["churn_probability"],
        &three["outputs"]["churn_probability"],
    );
    assert_eq!(
        (&a["rows"], &a["max_abs_diff"]),
        (&b["rows"], &b["max_abs_diff"])
    );
    for figure in ["mean_abs_diff", "correlation"] {
        let (x, y) = (a[figure].as_f64().unwrap(), b[figure].as_f64().unwrap());
        assert!(
            (x - y).abs() <= 1e-9 * x.abs().max(1.0),
            "{figure}: {x} vs {y}"
        );
    }
}

/// Runs the repo's job `name` (whose output folder is `out/<out>/`) once whole and once as
/// three shards, and returns the two runs' `_metrics.json`.
fn whole_and_three_shards(name: &str, out: &str) -> (serde_json::Value, serde_json::Value) {
    let s = Scratch::new();
    let spec = std::fs::read_to_string(repo().join(format!("jobs/{name}.toml"))).unwrap();
    let from = format!("out/{out}/");
    let whole = s.job("whole.toml", &spec.replace(&from, "out/whole/"));
    let split = s.job("split.toml", &spec.replace(&from, "out/split/"));
    assert_ok(&run(&["run", whole.to_str().unwrap(), "--var", "ds=1"]));
    for i in 0..3 {
        let shard = format!("{i}/3");
        let split = split.to_str().unwrap();
        assert_ok(&run(&["run", split, "--var", "ds=1", "--shard", &shard]));
    }
    let metrics = |dir: &str| -> serde_json::Value {
        let path = s.path(&format!("out/{dir}/ds=1/_metrics.json"));
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    };
    (metrics("whole"), metrics("split"))
}
