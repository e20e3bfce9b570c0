//! The output commit (modes, a killed run) and the commands around `run`: `inspect`,
//! `schema`, `--help`.

mod common;
use common::*;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn fraud_job(s: &Scratch, mode: &str, input: &str, out: &str) -> std::path::PathBuf {
    s.job(
        &format!("fraud-{mode}.toml"),
        &format!(
            r#"
name = "fraud"
[input]
uri = "{input}"
[model]
uri = "{}"
[inputs.input]
columns = ["x0", "x1", "x2", "x3", "x4", "x5"]
[output]
uri = "{out}"
passthrough = ["txn_id"]
mode = "{mode}"
[outputs]
fraud_probability = "probabilities[1]"
[run]
batch_size = 2048
"#,
            sample("fraud/fraud_xgb.onnx")
        ),
    )
}

#[test]
fn error_mode_refuses_an_existing_output_and_overwrite_replaces_it() {
    let s = Scratch::new();
    let data = sample("fraud/transactions.parquet");
    let job = fraud_job(&s, "error", &data, "../out/f/");
    assert_ok(&run(&["run", job.to_str().unwrap()]));
    let first = std::fs::read_to_string(s.path("out/f/_manifest.json")).unwrap();

    let o = run(&["run", job.to_str().unwrap()]);
    let err = assert_exit(&o, 2);
    assert!(
        err.contains("[output.uri]: output ")
            && err
                .contains("already holds a committed output (_SUCCESS); [output] mode = \"error\""),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(s.path("out/f/_manifest.json")).unwrap(),
        first,
        "untouched"
    );

    // A stray file in the old output must not survive an overwrite: the directory is replaced.
    std::fs::write(s.path("out/f/part-99999-0000.parquet"), "stale").unwrap();
    let job = fraud_job(&s, "overwrite", &data, "../out/f/");
    assert_ok(&run(&["run", job.to_str().unwrap()]));
    let second = std::fs::read_to_string(s.path("out/f/_manifest.json")).unwrap();
    assert_ne!(first, second, "a new run id");
    assert!(!s.path("out/f/part-99999-0000.parquet").exists());
    let expected = read_parquet(Path::new(&sample("fraud/expected.parquet")));
    assert_matches(
        &read_output(&s.path("out/f")),
        &expected,
        "txn_id",
        &["fraud_probability"],
    );
    let beside: Vec<_> = std::fs::read_dir(s.path("out"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(beside, ["f"], "no staging or old output left beside it");
}

/// Tests run with stderr piped, as a CI log or `kubectl logs` is: `auto` draws nothing there,
/// and `always` writes progress lines (indicatif alone would hide them too).
#[test]
fn progress_always_reaches_a_log_and_auto_stays_quiet() {
    let s = Scratch::new();
    let data = sample("fraud/transactions.parquet");
    let job = fraud_job(&s, "overwrite", &data, "../out/f/");
    let job = job.to_str().unwrap();
    let quiet = run(&["run", job]);
    assert_ok(&quiet);
    assert!(
        !text(&quiet).1.contains("/2,500 rows"),
        "{}",
        text(&quiet).1
    );
    let shown = run(&["run", job, "--progress", "always"]);
    assert_ok(&shown);
    let err = text(&shown).1;
    let lines: Vec<&str> = err.lines().filter(|l| l.contains("/2,500 rows")).collect();
    assert!(!lines.is_empty(), "no progress line in: {err}");
    assert!(
        !err.contains('\r') && lines.iter().all(|l| !l.contains('\x1b')),
        "a log gets plain lines: {err:?}"
    );
}

#[test]
fn a_killed_run_commits_nothing_and_a_rerun_succeeds() {
    let s = Scratch::new();
    let rows = 1_500_000;
    big_fraud_input(&s.path("big.parquet"), rows);
    let job = fraud_job(
        &s,
        "error",
        s.path("big.parquet").to_str().unwrap(),
        "../out/big/",
    );

    let mut child = batchscore()
        .args(["run", job.to_str().unwrap()])
        .spawn()
        .unwrap();
    // Kill it once it is writing parts into its staging directory.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let writing = std::fs::read_dir(s.path("out"))
            .ok()
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.starts_with(".big.staging-")
                    && std::fs::read_dir(e.path())
                        .map(|d| {
                            d.flatten()
                                .any(|f| f.file_name().to_string_lossy().starts_with("part-"))
                        })
                        .unwrap_or(false)
            });
        if writing {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before it could be killed"
        );
        assert!(Instant::now() < deadline, "the run never started writing");
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        !s.path("out/big").exists(),
        "a killed run must not leave an output"
    );

    // The rerun removes the dead run's staging and commits every row exactly once.
    let o = run(&["run", job.to_str().unwrap()]);
    assert_ok(&o);
    let beside: Vec<_> = std::fs::read_dir(s.path("out"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(beside, ["big"], "the dead run's staging is gone");
    let keys = committed_keys(&s.path("out/big"));
    assert_eq!(keys.len(), rows);
    assert!(
        keys.iter().enumerate().all(|(i, &k)| k == i as i64),
        "every key exactly once"
    );
}

/// The keys of a committed output, sorted.
fn committed_keys(dir: &Path) -> Vec<i64> {
    let got = read_output(dir);
    let mut keys: Vec<i64> = got["txn_id"]
        .iter()
        .map(|c| {
            if let Cell::Int(k) = c {
                *k
            } else {
                panic!("{c:?}")
            }
        })
        .collect();
    keys.sort_unstable();
    keys
}

#[test]
fn killed_at_twenty_random_moments_the_output_is_absent_or_the_previous_one() {
    let s = Scratch::new();
    let rows = 200_000;
    big_fraud_input(&s.path("big.parquet"), rows);
    let job = fraud_job(
        &s,
        "overwrite",
        s.path("big.parquet").to_str().unwrap(),
        "../out/big/",
    );
    let job = job.to_str().unwrap();
    let out = s.path("out/big");
    // How long an uninterrupted run takes bounds the moments to kill at.
    let started = Instant::now();
    assert_ok(&run(&["run", job]));
    let full = started.elapsed();
    // A small linear congruential generator. A failure names its seed; giving it back in
    // BATCHSCORE_TEST_SEED replays the same moments (as shares of an uninterrupted run).
    let mut seed = match std::env::var("BATCHSCORE_TEST_SEED") {
        Ok(s) => s.parse::<u64>().expect("BATCHSCORE_TEST_SEED is a number"),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    };
    let replay = format!("replay with BATCHSCORE_TEST_SEED={seed}");
    for round in 0..20 {
        let previous = std::fs::read_to_string(out.join("_manifest.json")).ok();
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let at = full.mul_f64((seed >> 11) as f64 / (1u64 << 53) as f64 * 1.2);
        let mut child = batchscore().args(["run", job]).spawn().unwrap();
        std::thread::sleep(at);
        let _ = child.kill();
        child.wait().unwrap();
        // Absent, the previous commit, or a whole new one: a kill that lands after the
        // commit's rename but before the process exits leaves the new output, complete.
        let now = std::fs::read_to_string(out.join("_manifest.json")).ok();
        if now != previous {
            assert!(
                out.join("_SUCCESS").exists(),
                "round {round} ({at:?}, {replay}): a new manifest without _SUCCESS"
            );
        }
        if now.is_some() {
            assert_eq!(
                committed_keys(&out).len(),
                rows,
                "round {round} ({at:?}, {replay})"
            );
        }
        // The rerun commits every key once and leaves nothing beside the output.
        assert_ok(&run(&["run", job]));
        let keys = committed_keys(&out);
        assert!(
            keys.len() == rows && keys.iter().enumerate().all(|(i, &k)| k == i as i64),
            "round {round} ({replay})"
        );
        let beside: Vec<_> = std::fs::read_dir(s.path("out"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(beside, ["big"], "round {round} ({replay}): no staging left");
    }
}

#[test]
fn an_output_location_that_cannot_be_written_is_refused_before_any_work() {
    let s = Scratch::new();
    std::fs::write(s.path("a-file"), "not a directory").unwrap();
    let job = fraud_job(
        &s,
        "error",
        &sample("fraud/transactions.parquet"),
        "../a-file/out/",
    );
    let o = run(&["run", job.to_str().unwrap()]);
    let err = assert_exit(&o, 2);
    assert!(
        err.contains("[output.uri]: output ") && err.contains("a-file: is not a directory"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(s.path("a-file")).unwrap(),
        "not a directory"
    );
}

#[test]
fn inspect_describes_a_model() {
    let model = sample("synthetic/fixed_batch.onnx");
    let o = run(&["inspect", &model]);
    assert_ok(&o);
    let bytes = std::fs::read(&model).unwrap();
    use sha2::Digest;
    let sha = hex::encode(sha2::Sha256::digest(&bytes));
    let expected = format!(
        "model:    {model}
sha256:   {sha}
size:     {} bytes
producer: batchscore-samples
ir:       8
opsets:   ai.onnx 17
inputs:
  x       tensor(float32) [1, 4]
outputs:
  scores  tensor(float32) [1, 3]
  label   tensor(int64) [1]
metadata:
  graph_name: fixed_batch
  purpose: fixed batch dimension
",
        bytes.len()
    );
    assert_eq!(text(&o).0, expected);

    let o = run(&["inspect", &sample("plans/plans_pipeline.onnx"), "--json"]);
    assert_ok(&o);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["inputs"][0]["name"], "plan");
    assert_eq!(v["inputs"][0]["dtype"], "string");
    assert_eq!(v["outputs"][1]["kind"], "sequence_of_maps");
    assert_eq!(v["outputs"][1]["key"], "string");
    assert_eq!(v["opsets"]["ai.onnx.ml"], 1);
    assert_eq!(v["opsets"]["ai.onnx"], 17);
}

#[test]
fn inspect_refuses_what_is_not_a_model() {
    let o = run(&["inspect", &sample("churn/expected.parquet")]);
    let err = assert_exit(&o, 2);
    assert!(err.contains("expected.parquet: not an ONNX model"), "{err}");
}

/// The whole `--help`, as a user sees it: every command, the exit codes and examples. A
/// change to any of them shows here, and the README's command list should change with it.
#[test]
fn help_lists_every_command_the_exit_codes_and_examples() {
    let help = |args: &[&str]| {
        let o = batchscore()
            .args(args)
            .env("COLUMNS", "100")
            .output()
            .unwrap();
        assert_ok(&o);
        text(&o).0
    };
    assert_eq!(
        help(&["--help"]),
        "\
Score tabular data (Parquet, CSV) with ONNX models, offline and in bulk

Usage: batchscore [OPTIONS] <COMMAND>

Commands:
  run       Run a job: score the input and commit the output atomically
  score     Score data with a model without a job spec: model inputs bind to the columns of their
            names, or to --columns
  init      Write a commented job spec for a model and its data, to finish by hand
  sql       Run DataFusion SQL with predict() and predict_output() for each --model
  validate  Check a job without scoring: spec, model, input schema, every mapping. Lists every
            problem
  plan      List the work units a run's input is cut into, with their rows, and how they fall into
            shards. Checks the job as validate does; nothing is scored
  commit    Commit a sharded run from its finished shards, when its last shard could not; or name
            the shards still to run
  models    A model registry (a folder or bucket prefix of versioned models with aliases): list,
            show, register a version, move an alias
  runs      A run history (an output with `[output] layout = runs`): list its runs, or prune the
            oldest
  rollback  Point a run history's _LATEST back at an earlier committed run (default: the one
            committed before the latest)
  inspect   Describe a model: inputs and outputs with types and shapes, opsets, metadata
  bench     Measure ONNX Runtime's inference-only throughput for a model on this machine, over batch
            sizes and thread layouts, and print the [run] settings to use
  schema    Print a JSON Schema: of the job spec, of _metrics.json or of _manifest.json
  help      Print this message or the help of the given subcommand(s)

Options:
      --log-format <LOG_FORMAT>  Log format on stderr [default: text] [possible values: text, json]
      --ort-lib <PATH>           The ONNX Runtime shared library (libonnxruntime.so) to load.
                                 Default: ORT_DYLIB_PATH, then one beside the executable, then the
                                 checkout's .ort/lib (scripts/fetch-ort)
  -h, --help                     Print help
  -V, --version                  Print version

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
  batchscore bench sample_data/churn/churn_lgbm.onnx
"
    );
    // Each command's own help ends with an example of that command.
    for cmd in [
        "run", "score", "init", "sql", "validate", "plan", "commit", "models", "runs", "rollback",
        "inspect", "bench", "schema",
    ] {
        let out = help(&[cmd, "--help"]);
        let example = |heading: &str| format!("{heading}:\n  batchscore {cmd} ");
        assert!(
            out.contains(&example("Example")) || out.contains(&example("Examples")),
            "{cmd} --help has no example of itself:\n{out}"
        );
    }
}

#[test]
fn schema_command_prints_the_committed_schemas() {
    for (kind, file) in [
        ("job", "job.schema.json"),
        ("metrics", "metrics.schema.json"),
        ("manifest", "manifest.schema.json"),
    ] {
        let o = run(&["schema", kind]);
        assert_ok(&o);
        let committed = std::fs::read_to_string(repo().join("schemas").join(file)).unwrap();
        assert_eq!(text(&o).0, committed, "{file}");
    }
}

#[test]
fn a_missing_onnx_runtime_is_a_clear_error() {
    let s = Scratch::new();
    let job = s.repo_job("fraud");
    let o = batchscore()
        .args([
            "run",
            job.to_str().unwrap(),
            "--ort-lib",
            "/nonexistent/libonnxruntime.so",
        ])
        .output()
        .unwrap();
    let err = assert_exit(&o, 1);
    assert!(
        err.contains("cannot load ONNX Runtime from /nonexistent/libonnxruntime.so"),
        "{err}"
    );
    assert!(!s.path("out").exists());
}

#[test]
fn sigint_and_sigterm_stop_cleanly_with_nothing_committed() {
    let s = Scratch::new();
    big_fraud_input(&s.path("big.parquet"), 1_500_000);
    let job = fraud_job(
        &s,
        "error",
        s.path("big.parquet").to_str().unwrap(),
        "../out/big/",
    );
    for (signal, code, name) in [
        (libc::SIGTERM, 143, "SIGTERM"),
        (libc::SIGINT, 130, "SIGINT"),
    ] {
        let child = batchscore()
            .args(["run", job.to_str().unwrap()])
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        wait_until("the run stages a part", || {
            std::fs::read_dir(s.path("out"))
                .ok()
                .into_iter()
                .flatten()
                .flatten()
                .any(|e| {
                    std::fs::read_dir(e.path())
                        .map(|d| {
                            d.flatten()
                                .any(|f| f.file_name().to_string_lossy().starts_with("part-"))
                        })
                        .unwrap_or(false)
                })
        });
        // SAFETY: signalling our own child process by its id.
        assert_eq!(unsafe { libc::kill(child.id() as i32, signal) }, 0);
        let o = child.wait_with_output().unwrap();
        assert_eq!(o.status.code(), Some(code), "{name}: {}", text(&o).1);
        let err = text(&o).1;
        assert!(
            err.contains(&format!("interrupted by {name}: nothing was committed")),
            "{err}"
        );
        let left: Vec<_> = std::fs::read_dir(s.path("out"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(
            left.is_empty(),
            "{name}: no output and no staging left: {left:?}"
        );
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        if e.path().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

#[test]
fn skip_mode_does_nothing_when_the_same_job_committed_and_reruns_when_the_input_changed() {
    let s = Scratch::new();
    copy_dir(&repo().join("sample_data/churn/data"), &s.path("data"));
    let spec = std::fs::read_to_string(repo().join("jobs/churn.toml"))
        .unwrap()
        .replace("../sample_data/churn/data/", "../data/")
        .replace("mode = \"overwrite\"", "mode = \"skip\"");
    let job = s.job("skip.toml", &spec);
    let manifest = || -> serde_json::Value {
        serde_json::from_str(
            &std::fs::read_to_string(s.path("out/churn/ds=1/_manifest.json")).unwrap(),
        )
        .unwrap()
    };
    assert_ok(&run(&["run", job.to_str().unwrap(), "--var", "ds=1"]));
    let first = manifest();
    assert_eq!(first["input_fingerprint"].as_str().unwrap().len(), 64);

    // The scheduler's retry: same spec, model and files.
    let o = run(&["run", job.to_str().unwrap(), "--var", "ds=1"]);
    assert_ok(&o);
    let run_id = first["run_id"].as_str().unwrap();
    assert!(
        text(&o).0.starts_with(&format!("churn-nightly: already committed by run {run_id} with the same spec, model and input; nothing to do")),
        "{}",
        text(&o).0
    );
    assert_eq!(manifest(), first, "untouched");

    // A new file in the input: scored again, replacing the output.
    std::fs::copy(
        s.path("data/region=eu/part-0.parquet"),
        s.path("data/region=eu/part-9.parquet"),
    )
    .unwrap();
    let o = run(&["run", job.to_str().unwrap(), "--var", "ds=1"]);
    assert_ok(&o);
    assert!(text(&o).0.contains(" rows scored in "), "{}", text(&o).0);
    let second = manifest();
    assert_ne!(second["run_id"], first["run_id"]);
    assert_ne!(second["input_fingerprint"], first["input_fingerprint"]);
    assert!(second["rows"].as_u64().unwrap() > first["rows"].as_u64().unwrap());

    // A manifest that cannot be read is never "nothing committed": the run is refused
    // before any work, naming it, and the output stays as it is.
    let path = s.path("out/churn/ds=1/_manifest.json");
    std::fs::write(&path, "{\"run_id\": ").unwrap();
    let listing = || {
        let mut names: Vec<_> = std::fs::read_dir(s.path("out/churn/ds=1"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        names
    };
    let before = listing();
    let err = assert_exit(&run(&["run", job.to_str().unwrap(), "--var", "ds=1"]), 2);
    assert!(
        err.contains(&format!(
            "output {}: cannot be read as a batchscore manifest",
            path.display()
        )),
        "{err}"
    );
    assert_eq!(listing(), before);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"run_id\": ");
}

#[test]
fn a_full_disk_fails_naming_the_path_and_commits_nothing() {
    let s = Scratch::new();
    let disk = s.path("disk");
    std::fs::create_dir_all(&disk).unwrap();
    let input = s.path("big.parquet");
    big_fraud_input(&input, 200_000);
    let out = disk.join("out/");
    let job = fraud_job(&s, "error", input.to_str().unwrap(), out.to_str().unwrap());
    // A 64 KiB file system of the run's own, which its parts overflow: a tmpfs mounted in a
    // private mount namespace (a user namespace stands in for root), listed before it goes.
    let script = format!(
        "mount -t tmpfs -o size=64k tmpfs '{disk}' || exit 99; '{bin}' run '{job}'; rc=$?; \
         echo LISTING; ls -A '{disk}'; exit $rc",
        disk = disk.display(),
        bin = env!("CARGO_BIN_EXE_batchscore"),
        job = job.display(),
    );
    let o = std::process::Command::new("unshare")
        .args(["--mount", "--map-root-user", "sh", "-c", &script])
        .env(
            "ORT_DYLIB_PATH",
            std::env::var_os("ORT_DYLIB_PATH")
                .unwrap_or_else(|| repo().join(".ort/lib/libonnxruntime.so.1.31.1").into()),
        )
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let (stdout, stderr) = text(&o);
    assert_ne!(o.status.code(), Some(99), "cannot mount a tmpfs: {stderr}");
    assert_eq!(o.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stderr.contains(&disk.display().to_string()) && stderr.contains("No space left on device"),
        "{stderr}"
    );
    assert!(stderr.contains("nothing was committed"), "{stderr}");
    let listing = stdout.split("LISTING").nth(1).unwrap_or_default();
    assert_eq!(listing.trim(), "", "staging removed, nothing committed");
}

#[test]
fn bench_measures_every_batch_size_and_layout_and_suggests_the_best() {
    let model = sample("synthetic/rank1_int.onnx");
    let o = run(&[
        "bench",
        &model,
        "--rows",
        "2000",
        "--batch-sizes",
        "10,100",
        "--layouts",
        "1x1,2x1",
        "--json",
    ]);
    assert_ok(&o);
    let report: serde_json::Value = serde_json::from_str(&text(&o).0).unwrap();
    let results = report["results"].as_array().unwrap();
    let measured: Vec<(u64, u64, u64)> = results
        .iter()
        .map(|r| {
            assert!(r["rows_per_second"].as_f64().unwrap() > 0.0, "{r}");
            (
                r["batch_size"].as_u64().unwrap(),
                r["sessions"].as_u64().unwrap(),
                r["intra_op_threads"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        measured,
        vec![(10, 1, 1), (100, 1, 1), (10, 2, 1), (100, 2, 1)]
    );
    // Not a tree ensemble: no native rows.
    assert!(report.get("native").is_none(), "{report}");

    // A tree ensemble: the native evaluator measured too, over the same batches and workers.
    let o = run(&[
        "bench",
        &sample("churn/churn_lgbm.onnx"),
        "--rows",
        "2000",
        "--batch-sizes",
        "10,100",
        "--layouts",
        "1x1,2x1",
    ]);
    assert_ok(&o);
    let out = text(&o).0;
    let native = &out[out.find("native tree evaluator").expect(&out)..];
    let rows: Vec<&str> = native
        .lines()
        .skip(2)
        .take_while(|l| !l.is_empty())
        .collect();
    assert_eq!(rows.len(), 4, "{out}");
    for (row, (batch, workers)) in rows.iter().zip([(10, 1), (100, 1), (10, 2), (100, 2)]) {
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(
            cells[..2],
            [batch.to_string(), workers.to_string()],
            "{out}"
        );
        assert!(cells[2].parse::<f64>().unwrap() > 0.0, "{out}");
    }

    // A fixed batch dimension is what is measured, whatever was asked; the table names it.
    let o = run(&[
        "bench",
        &sample("synthetic/fixed_batch.onnx"),
        "--rows",
        "50",
        "--batch-sizes",
        "64",
        "--layouts",
        "1x1",
    ]);
    assert_ok(&o);
    let out = text(&o).0;
    assert!(
        out.contains("best: ") && out.contains("with batch 1, 1 session(s)"),
        "{out}"
    );
    assert!(
        out.contains("  inference_batch_size = 1\n  workers = 1\n  intra_op_threads = 1"),
        "{out}"
    );

    let err = assert_exit(&run(&["bench", &model, "--layouts", "2y1"]), 2);
    assert!(err.contains("expected SESSIONSxTHREADS"), "{err}");
}

/// Every job spec in `jobs/` and the README's example validate against the committed JSON
/// Schema, checked by a real validator (Python's `jsonschema`, installed by scripts/test),
/// which also refuses a spec that is wrong.
#[test]
fn job_specs_validate_against_the_committed_schema() {
    let python = std::env::var("BATCHSCORE_TEST_PYTHON").expect(
        "BATCHSCORE_TEST_PYTHON is not set: run the tests with scripts/test, which installs jsonschema",
    );
    let s = Scratch::new();
    let mut specs: Vec<std::path::PathBuf> = std::fs::read_dir(repo().join("jobs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    specs.sort();
    assert!(specs.len() >= 4, "{specs:?}");
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let example = readme
        .split("## A job spec")
        .nth(1)
        .and_then(|rest| rest.split("```toml\n").nth(1))
        .and_then(|block| block.split("```").next())
        .expect("the README's spec example");
    specs.push(s.job("readme.toml", example));
    let churn = std::fs::read_to_string(repo().join("jobs/churn.toml")).unwrap();
    let wrong = churn.replace("mode = \"overwrite\"", "mode = \"sometimes\"\nbatch = 3");
    specs.push(s.job("wrong.toml", &wrong));
    let script = r#"
import json, sys, tomllib, jsonschema
schema = json.load(open(sys.argv[1]))
jsonschema.Draft202012Validator.check_schema(schema)
validator = jsonschema.Draft202012Validator(schema)
for path in sys.argv[2:]:
    with open(path, "rb") as f:
        errors = sorted(e.message for e in validator.iter_errors(tomllib.load(f)))
    print(json.dumps({"file": path, "errors": errors}))
"#;
    let o = Command::new(python)
        .arg("-c")
        .arg(script)
        .arg(repo().join("schemas/job.schema.json"))
        .args(&specs)
        .output()
        .unwrap();
    assert_ok(&o);
    let results: Vec<serde_json::Value> = text(&o)
        .0
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(results.len(), specs.len());
    let (wrong, valid) = results.split_last().unwrap();
    for r in valid {
        assert_eq!(r["errors"], serde_json::json!([]), "{}", r["file"]);
    }
    let errors = wrong["errors"].to_string();
    assert!(errors.contains("'sometimes' is not one of"), "{errors}");
    assert!(errors.contains("'batch' was unexpected"), "{errors}");
}

/// `plan` cuts the input into one unit per Parquet row group, with the rows the file's own
/// footer gives (read here with the parquet crate), and deals them to shards as contiguous
/// runs that together hold every row once.
#[test]
fn plan_lists_every_row_group_and_balances_shards_by_rows() {
    use datafusion::parquet::file::reader::{FileReader, SerializedFileReader};
    let s = Scratch::new();
    let job = s.repo_job("fraud");
    let o = run(&["plan", job.to_str().unwrap(), "--shards", "3", "--json"]);
    assert_ok(&o);
    let report: serde_json::Value = serde_json::from_str(&text(&o).0).unwrap();
    let file = std::fs::File::open(sample("fraud/transactions.parquet")).unwrap();
    let footer = SerializedFileReader::new(file).unwrap();
    let groups: Vec<u64> = footer
        .metadata()
        .row_groups()
        .iter()
        .map(|g| g.num_rows() as u64)
        .collect();
    assert!(groups.len() >= 3, "{groups:?}");
    let units = report["units"].as_array().unwrap();
    let rows: Vec<u64> = units.iter().map(|u| u["rows"].as_u64().unwrap()).collect();
    assert_eq!(rows, groups);
    let row_groups: Vec<u64> = units
        .iter()
        .map(|u| u["row_group"].as_u64().unwrap())
        .collect();
    assert_eq!(row_groups, (0..groups.len() as u64).collect::<Vec<_>>());
    // Shards: contiguous, covering every unit once, each within one unit of an even share.
    let shards = report["shards"].as_array().unwrap();
    assert_eq!(shards.len(), 3);
    let mut next = 0;
    for (i, shard) in shards.iter().enumerate() {
        let (start, end) = (
            shard["units"]["start"].as_u64().unwrap() as usize,
            shard["units"]["end"].as_u64().unwrap() as usize,
        );
        assert_eq!(start, next, "shard {i}");
        next = end;
        let share: u64 = rows[start..end].iter().sum();
        assert_eq!(shard["rows"].as_u64(), Some(share));
        let even = groups.iter().sum::<u64>() / 3;
        let largest = *groups.iter().max().unwrap();
        assert!(share.abs_diff(even) <= largest, "shard {i}: {share} rows");
        for u in &units[start..end] {
            assert_eq!(u["shard"].as_u64(), Some(i as u64));
        }
    }
    assert_eq!(next, units.len());
    let key = report["run_key"].as_str().unwrap();
    assert_eq!(key.len(), 64);

    // The same job planned again names the same run; another input file does not.
    let key_of = |job: &std::path::Path| -> String {
        let o = run(&["plan", job.to_str().unwrap(), "--json"]);
        let report: serde_json::Value = serde_json::from_str(&text(&o).0).unwrap();
        report["run_key"].as_str().unwrap().to_string()
    };
    assert_eq!(key_of(&job), key);
    big_fraud_input(&s.path("big.parquet"), 1000);
    let big = fraud_job(
        &s,
        "overwrite",
        s.path("big.parquet").to_str().unwrap(),
        "../out/p/",
    );
    let first = key_of(&big);
    assert_eq!(key_of(&big), first);
    big_fraud_input(&s.path("big.parquet"), 1001);
    assert_ne!(key_of(&big), first);

    // CSV: a unit per file, weighed by bytes, its rows unknown until read.
    let o = run(&["plan", s.repo_job("houses").to_str().unwrap()]);
    assert_ok(&o);
    let out = text(&o).0;
    assert!(
        out.starts_with("house-prices: 1 work unit, unknown rows, 1 shard; run key "),
        "{out}"
    );
    assert!(out.contains("houses.csv.gz\nshard 0: unit 0, "), "{out}");
}

/// A pod's memory limit, for real: the job runs inside a cgroup v1 memory cgroup. Its two
/// workers would need more than the limit allows for these 5 MiB row groups; the run reads
/// the limit from its cgroup, fits one worker under it, says so, and scores every row. Under
/// a limit no layout fits, it is refused before any work instead of being killed.
#[test]
fn a_run_fits_its_layout_under_its_cgroup_memory_limit() {
    let s = Scratch::new();
    let rows = 600_000;
    noisy_fraud_input(&s.path("noisy.parquet"), rows, 200_000);
    let job = fraud_job(
        &s,
        "overwrite",
        s.path("noisy.parquet").to_str().unwrap(),
        "../out/m/",
    );
    let job = std::fs::read_to_string(job)
        .unwrap()
        .replace("batch_size = 2048", "batch_size = 2048\nworkers = 2");
    let job = s.job("mem.toml", &job);
    let limit: u64 = 96 << 20;
    let cgroup = MemoryCgroup::new("fit", limit);
    let o = cgroup
        .command(&["run", job.to_str().unwrap()])
        .output()
        .unwrap();
    let err = text(&o).1;
    assert_ok(&o);
    assert!(
        err.contains("fitting the run under its memory limit"),
        "the fit is never silent: {err}"
    );
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(s.path("out/m/_metrics.json")).unwrap())
            .unwrap();
    let memory = &m["memory"];
    assert_eq!(memory["limit_bytes"], limit, "{m}");
    let source = memory["source"].as_str().unwrap();
    assert!(
        source.starts_with(cgroup.dir.to_str().unwrap())
            && source.ends_with("memory.limit_in_bytes"),
        "{source}"
    );
    assert_eq!(memory["reduced"], true);
    assert_eq!(m["workers"], 1);
    assert!(memory["estimated_peak_bytes"].as_u64().unwrap() < limit);
    assert_eq!(
        committed_keys(&s.path("out/m")),
        (0..rows as i64).collect::<Vec<_>>()
    );

    // Too small for one worker: refused before any work, naming the limit and its source.
    let tiny = MemoryCgroup::new("tiny", 48 << 20);
    let o = tiny
        .command(&["run", job.to_str().unwrap()])
        .output()
        .unwrap();
    let err = assert_exit(&o, 2);
    assert!(
        err.contains("[run]: the memory limit of 48 MiB (")
            && err.contains("is less than even one worker"),
        "{err}"
    );
}

/// A run split over three processes, as a scheduler would start them: each scores its
/// shard's row groups, the last to finish commits the run, and the output is exactly the
/// rows of a single run (checked against onnxruntime's scores), once each.
#[test]
fn a_run_split_into_shards_commits_the_rows_of_a_single_run_once() {
    let s = Scratch::new();
    let job = s.repo_job("fraud");
    let job = job.to_str().unwrap();
    let spawn = |i: usize| {
        batchscore()
            .args(["run", job, "--shard", &format!("{i}/3")])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let children: Vec<_> = (0..3).map(spawn).collect();
    let outs: Vec<_> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    for o in &outs {
        assert_ok(o);
    }
    let committed = outs
        .iter()
        .filter(|o| text(o).0.contains("committed the run"))
        .count();
    assert_eq!(
        committed,
        1,
        "{:?}",
        outs.iter().map(text).collect::<Vec<_>>()
    );
    let out = s.path("out/fraud");
    let expected = read_parquet(Path::new(&sample("fraud/expected.parquet")));
    assert_matches(
        &read_output(&out),
        &expected,
        "txn_id",
        &["fraud_probability", "fraud_label"],
    );
    let manifest = read_manifest(&out);
    assert_eq!(manifest.rows, 2500);
    let plan = run(&["plan", job, "--json"]);
    let plan: serde_json::Value = serde_json::from_str(&text(&plan).0).unwrap();
    assert_eq!(manifest.run_key, plan["run_key"].as_str().unwrap());
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("_metrics.json")).unwrap()).unwrap();
    assert_eq!(m["rows"]["scored"], 2500);
    assert_eq!(m["run_id"].as_str(), Some(manifest.run_id.as_str()));
    let beside: Vec<_> = std::fs::read_dir(s.path("out"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(beside, ["fraud"], "the run folder is gone");

    // A scheduler's retry of a shard after the commit does nothing.
    let o = run(&["run", job, "--shard", "1/3"]);
    assert_ok(&o);
    assert!(
        text(&o).0.contains(&format!(
            "run {} already committed this output; shard 1/3 has nothing to do",
            manifest.run_id
        )),
        "{}",
        text(&o).0
    );
    assert_eq!(read_manifest(&out), manifest);
}

/// Shards of one run must be the same run: a shard of another spec is refused while the
/// first run is in progress, naming what differs; a query that needs every row is refused
/// for a shard; and a shard index past the count is a command-line error.
#[test]
fn a_shard_of_another_run_or_an_unsplittable_query_is_refused() {
    let s = Scratch::new();
    let job = s.repo_job("fraud");
    let other = s.job(
        "other.toml",
        &std::fs::read_to_string(&job)
            .unwrap()
            .replace("batch_size = 500", "batch_size = 400"),
    );
    assert_ok(&run(&["run", job.to_str().unwrap(), "--shard", "0/2"]));
    let err = assert_exit(&run(&["run", other.to_str().unwrap(), "--shard", "1/2"]), 2);
    assert!(
        err.contains("another run is in progress here")
            && err.contains("this one differs from it in the spec (after its --vars)"),
        "{err}"
    );
    let o = run(&["run", job.to_str().unwrap(), "--shard", "1/2"]);
    assert_ok(&o);
    assert!(text(&o).0.contains("committed the run"), "{}", text(&o).0);
    assert_eq!(read_manifest(&s.path("out/fraud")).rows, 2500);

    let sorted = s.job(
        "sorted.toml",
        &std::fs::read_to_string(&job).unwrap().replace(
            "[input]\n",
            "[input]\nquery = \"SELECT * FROM input ORDER BY txn_id\"\n",
        ),
    );
    let err = assert_exit(
        &run(&["run", sorted.to_str().unwrap(), "--shard", "0/2"]),
        2,
    );
    assert!(err.contains("[input.query]: holds ORDER BY"), "{err}");
    let err = assert_exit(&run(&["run", job.to_str().unwrap(), "--shard", "2/2"]), 2);
    assert!(err.contains("I must be less than N"), "{err}");
}

/// `batchscore commit` recovers a run whose last shard died committing: it names the shards
/// still to run, refuses while a shard holds the commit lock, and with `--force` commits the
/// rows of a single run (checked against onnxruntime's scores) from the shards' parts.
#[test]
fn commit_finishes_a_run_whose_last_shard_died_committing() {
    let s = Scratch::new();
    let job = s.repo_job("fraud");
    let job = job.to_str().unwrap();
    let out = s.path("out/fraud");
    let output = out.to_str().unwrap();
    let err = assert_exit(&run(&["commit", output]), 2);
    assert!(err.contains("no sharded run is in progress here"), "{err}");
    assert!(!s.path("out").join(".fraud.run").exists());

    assert_ok(&run(&["run", job, "--shard", "0/2"]));
    let err = assert_exit(&run(&["commit", output, "--spec", job]), 4);
    assert!(
        err.contains(
            "shard(s) 1 of 2 have not finished; run them (the same command with --shard I/2)"
        ),
        "{err}"
    );
    // Shard 1 finishes, takes the commit lock, links the parts and dies before _SUCCESS.
    let barrier = s.path("barrier");
    let child = batchscore()
        .args(["run", job, "--shard", "1/2"])
        .env(
            "BATCHSCORE_TEST_BARRIER",
            format!("commit:{}:2", barrier.display()),
        )
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_until("shard 1 stands at the commit", || {
        std::fs::read_dir(&barrier).is_ok_and(|d| d.count() == 1)
    });
    // SAFETY: signalling our own child process by its id.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGKILL) }, 0);
    child.wait_with_output().unwrap();
    assert!(!out.exists(), "nothing was published");

    let err = assert_exit(&run(&["commit", output]), 2);
    assert!(err.contains("a shard took the commit lock"), "{err}");
    let o = run(&["commit", output, "--force"]);
    assert_ok(&o);
    assert!(
        text(&o).0.contains("fraud-scores: 2500 rows scored")
            && text(&o).0.contains("(committed by hand)"),
        "{}",
        text(&o).0
    );
    let expected = read_parquet(Path::new(&sample("fraud/expected.parquet")));
    assert_matches(
        &read_output(&out),
        &expected,
        "txn_id",
        &["fraud_probability", "fraud_label"],
    );
    let manifest = read_manifest(&out);
    assert_eq!(manifest.rows, 2500);
    let beside: Vec<_> = std::fs::read_dir(s.path("out"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(beside, ["fraud"], "no run folder or staging left");

    let o = run(&["commit", output]);
    assert_ok(&o);
    assert!(
        text(&o).0.contains(&format!(
            "run {} already committed this output; nothing to do",
            manifest.run_id
        )),
        "{}",
        text(&o).0
    );
}

/// Writes a CSV of the fraud sample's rows, copied with moved ids until it passes `bytes`:
/// every 5th row's `note` is quoted and spans two lines, and every 9,973rd line is a
/// malformed record. Returns the expected scores (onnxruntime's, `expected.parquet`) and the
/// lines the malformed records start on.
fn fraud_csv(path: &Path, bytes: usize) -> (Table, Vec<u64>) {
    use std::fmt::Write as _;
    let rows = read_parquet(Path::new(&sample("fraud/transactions.parquet")));
    let oracle = read_parquet(Path::new(&sample("fraud/expected.parquet")));
    let (mut text, mut line, mut bad) = (String::new(), 2u64, Vec::new());
    text.push_str("txn_id,x0,x1,x2,x3,x4,x5,note\n");
    let mut expected = Table::new();
    let mut copy = 0i64;
    while text.len() < bytes {
        for (r, txn) in rows["txn_id"].iter().enumerate() {
            if line % 9973 == 0 {
                text.push_str("bad,record\n");
                bad.push(line);
                line += 1;
            }
            let Cell::Int(id) = txn else { panic!("txn_id") };
            write!(text, "{}", id + copy * 100_000).unwrap();
            for x in 0..6 {
                let Cell::Float(v) = rows[&format!("x{x}")][r] else {
                    panic!("x{x}")
                };
                write!(text, ",{v}").unwrap();
            }
            let note = if r % 5 == 0 {
                "\"two,\n\"\"lines\"\"\""
            } else {
                "plain"
            };
            writeln!(text, ",{note}").unwrap();
            line += if r % 5 == 0 { 2 } else { 1 };
        }
        for (column, cells) in &oracle {
            let moved = cells.iter().map(|c| match (column.as_str(), c) {
                ("txn_id", Cell::Int(id)) => Cell::Int(id + copy * 100_000),
                _ => c.clone(),
            });
            expected.entry(column.clone()).or_default().extend(moved);
        }
        copy += 1;
    }
    std::fs::write(path, text).unwrap();
    (expected, bad)
}

/// `jobs/fraud.toml` reading `NAME.csv` in the scratch folder, cut into byte ranges of
/// `split_bytes`: the job file `NAME.toml`.
fn fraud_csv_job(s: &Scratch, name: &str, split_bytes: u64) -> std::path::PathBuf {
    let spec = std::fs::read_to_string(repo().join("jobs/fraud.toml"))
        .unwrap()
        .replace(
            "uri = \"../sample_data/fraud/transactions.parquet\"",
            &format!(
                "uri = {:?}\nformat = \"csv\"\n[input.csv]\nsplit_bytes = {split_bytes}",
                s.path(&format!("{name}.csv")).display(),
            ),
        )
        .replace(
            "../sample_data",
            repo().join("sample_data").to_str().unwrap(),
        );
    s.job(&format!("{name}.toml"), &spec)
}

/// A large CSV file is cut into byte ranges, and shards that read some of them (and chunk
/// the bytes before, without decoding them) still see every record whole: three shards
/// commit every good row once with onnxruntime's scores, and every malformed record once,
/// named by the line it starts on in the whole file, quoted newlines counted.
#[test]
fn a_large_csv_split_into_byte_ranges_keeps_every_record_and_its_line() {
    let s = Scratch::new();
    let (expected, bad) = fraud_csv(&s.path("big.csv"), 20 << 20);
    let job = fraud_csv_job(&s, "big", 6 << 20);
    let job = job.to_str().unwrap();
    let plan: serde_json::Value =
        serde_json::from_str(&text(&run(&["plan", job, "--shards", "3", "--json"])).0).unwrap();
    let ranges: Vec<_> = plan["units"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["byte_range"]["index"].as_u64().unwrap())
        .collect();
    assert_eq!(ranges, [0, 1, 2, 3], "{plan}");
    for i in 0..3 {
        assert_ok(&run(&["run", job, "--shard", &format!("{i}/3")]));
    }
    let out = s.path("out/fraud");
    assert_matches(
        &read_output(&out),
        &expected,
        "txn_id",
        &["fraud_probability", "fraud_label"],
    );
    let mut reasons = texts(&read_rejected(&out)["_reason"]);
    reasons.sort();
    let mut want: Vec<String> = bad
        .iter()
        .map(|l| {
            format!(
                "{} line {l}: malformed CSV record: expected 8 fields, found 2",
                s.path("big.csv").display()
            )
        })
        .collect();
    want.sort();
    assert!(want.len() >= 15, "{}", want.len());
    assert_eq!(reasons, want);
}

/// Byte ranges smaller than the scan's 4 MiB chunks share the rows too: an 8 MiB file cut
/// into eight 1 MiB ranges, scored as eight shards, gives every shard rows of its own, and
/// all of them together every good row once with onnxruntime's scores.
#[test]
fn byte_ranges_smaller_than_a_scan_chunk_each_score_their_rows() {
    let s = Scratch::new();
    let (expected, _) = fraud_csv(&s.path("small.csv"), 8 << 20);
    let job = fraud_csv_job(&s, "small", 1 << 20);
    let job = job.to_str().unwrap();
    // `fraud-scores: shard 0/8 scored 1999 rows in …`; the last shard to finish says the
    // run's total instead (`fraud-scores: 17500 rows scored in …`).
    let number_after = |out: &str, mark: &str| -> Option<u64> {
        out.split(mark).nth(1)?.split(' ').next()?.parse().ok()
    };
    let mut scored = Vec::new();
    for i in 0..8 {
        let o = run(&["run", job, "--shard", &format!("{i}/8")]);
        assert_ok(&o);
        let out = text(&o).0;
        match number_after(&out, " scored ") {
            Some(rows) => scored.push(rows),
            None => {
                let run_total = number_after(&out, ": ")
                    .unwrap_or_else(|| panic!("shard {i}: no row count in {out:?}"));
                scored.push(run_total - scored.iter().sum::<u64>());
            }
        }
    }
    let total = expected["txn_id"].len() as u64;
    assert_eq!(scored.iter().sum::<u64>(), total, "{scored:?}");
    // Each range holds an eighth of the bytes; a chunk's rows go to the range it starts in.
    assert!(
        scored.iter().all(|&n| n > total / 16),
        "rows per shard: {scored:?}"
    );
    assert_matches(
        &read_output(&s.path("out/fraud")),
        &expected,
        "txn_id",
        &["fraud_probability", "fraud_label"],
    );
}

/// `--shard auto` reads the scheduler's variables, as a Slurm job array sets them (index
/// from the task id less the array's first, the count, the job id as the run's id); a
/// Kubernetes index without a count, or `[run] shards` that differs from the scheduler's, is
/// refused before any work.
#[test]
fn shard_auto_takes_the_shard_and_run_id_from_the_scheduler() {
    let s = Scratch::new();
    let job = s.repo_job("fraud");
    let job = job.to_str().unwrap();
    let slurm = |task: &str| {
        batchscore()
            .args(["run", job, "--shard", "auto"])
            .env("SLURM_ARRAY_TASK_ID", task)
            .env("SLURM_ARRAY_TASK_MIN", "10")
            .env("SLURM_ARRAY_TASK_COUNT", "2")
            .env("SLURM_ARRAY_JOB_ID", "4242")
            .output()
            .unwrap()
    };
    let first = slurm("11");
    assert_ok(&first);
    assert!(
        text(&first).0.contains("shard 1/2 scored 1100 rows"),
        "{}",
        text(&first).0
    );
    assert_ok(&slurm("10"));
    let manifest = read_manifest(&s.path("out/fraud"));
    assert_eq!((manifest.run_id.as_str(), manifest.rows), ("4242", 2500));

    let k8s = batchscore()
        .args(["run", job, "--shard", "auto"])
        .env("JOB_COMPLETION_INDEX", "0")
        .output()
        .unwrap();
    let err = assert_exit(&k8s, 2);
    assert!(
        err.contains("gives only the index: set [run] shards or --shards N"),
        "{err}"
    );
    let spec = std::fs::read_to_string(s.path("jobs/fraud.toml"))
        .unwrap()
        .replace("[run]\n", "[run]\nshards = 3\n");
    let three = s.job("three.toml", &spec);
    let o = batchscore()
        .args(["run", three.to_str().unwrap()])
        .env("BATCH_TASK_INDEX", "0")
        .env("BATCH_TASK_COUNT", "2")
        .output()
        .unwrap();
    let err = assert_exit(&o, 2);
    assert!(
        err.contains("runs 2 copies, but the job asks for 3 shards"),
        "{err}"
    );
}

/// The README's "Operating nightly jobs" example, as written there: `jobs/churn-ops.toml`
/// scored by the alias of a registered version, three runs in a history, a rollback and a
/// prune; each run's rows are onnxruntime's.
#[test]
fn the_readme_operating_example_runs_as_written() {
    let s = Scratch::new();
    let job = s.repo_job("churn-ops");
    s.repo_job("churn"); // the parity check's column mapping
    let registry = s.path("out/models");
    let in_scratch = |args: &[&str]| {
        batchscore()
            .args(args)
            .current_dir(s.dir.path())
            .env("BATCHSCORE_REGISTRY", &registry)
            .output()
            .unwrap()
    };
    let o = in_scratch(&[
        "models",
        "register",
        "churn",
        "sample_data/churn/churn_lgbm.onnx",
        "--reference",
        "sample_data/churn/parity/reference.parquet",
        "--sample",
        "sample_data/churn/parity/sample.parquet",
        "--job",
        "jobs/churn.toml",
        "--var",
        "ds=x",
    ]);
    assert_ok(&o);
    assert!(
        text(&o).0.starts_with("registered churn version 1 at "),
        "{}",
        text(&o).0
    );
    assert_ok(&in_scratch(&["models", "alias", "churn", "champion", "1"]));
    let job = job.to_str().unwrap();
    // The third alert rule, rows.scored < 1000, does not fire on 1941 rows; none does.
    for _ in 0..3 {
        assert_ok(&in_scratch(&["run", job]));
    }
    let history = s.path("out/churn-history");
    let runs: Vec<String> = {
        let mut r: Vec<(String, String)> = std::fs::read_dir(&history)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("run="))
            .map(|n| {
                let m = read_manifest(&history.join(&n));
                (m.committed_at, n)
            })
            .collect();
        r.sort();
        r.into_iter().map(|(_, n)| n).collect()
    };
    assert_eq!(runs.len(), 3);
    let expected = read_parquet(Path::new(&sample("churn/expected.parquet")));
    for r in &runs {
        let dir = history.join(r);
        assert_matches(
            &read_output(&dir),
            &expected,
            "customer_id",
            &["region", "churn_probability", "churn_label"],
        );
        assert_eq!(read_manifest(&dir).model_version.as_deref(), Some("1"));
    }
    let latest = |h: &Path| -> String {
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(h.join("_LATEST")).unwrap()).unwrap();
        v["path"].as_str().unwrap().to_string()
    };
    assert_eq!(latest(&history), runs[2]);
    let metrics: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(history.join(&runs[2]).join("_metrics.json")).unwrap(),
    )
    .unwrap();
    // The same rows as the run before: the label's classes did not move at all.
    assert_eq!(metrics["drift"]["columns"]["churn_label"]["psi"], 0.0);
    assert_eq!(metrics["alerts"].as_array().unwrap().len(), 3);
    let o = in_scratch(&["rollback", "out/churn-history/"]);
    assert_ok(&o);
    assert_eq!(latest(&history), runs[1]);
    let o = in_scratch(&["runs", "prune", "out/churn-history/", "--keep", "1"]);
    assert_ok(&o);
    // The oldest goes; the latest (run 2) stays although it is not among the newest one.
    let left: Vec<bool> = runs.iter().map(|r| history.join(r).exists()).collect();
    assert_eq!(left, [false, true, true]);
}

/// GETs `path` from an HTTP server at `base` (`http://host:port`), the body as text.
fn http_get(base: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let host = base.trim_start_matches("http://").trim_end_matches('/');
    let mut s = std::net::TcpStream::connect(host).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text.split_once("\r\n\r\n").unwrap().1.to_string()
}

/// The value of the sample of `name` whose labels include `job="JOB"`, in an exposition.
fn sample_value(text: &str, name: &str, job: &str) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(&format!("job=\"{job}\"")))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
}

/// `[monitor] pushgateway` and `textfile` against the real Pushgateway `scripts/test` starts:
/// a committed run's metrics are scraped from it; a failed run then adds its failure and the
/// last success's timestamp stays, there and in the textfile.
#[test]
fn a_run_pushes_to_a_real_pushgateway_and_a_failure_keeps_the_last_success() {
    let url = std::env::var("BATCHSCORE_TEST_PUSHGATEWAY")
        .expect("BATCHSCORE_TEST_PUSHGATEWAY is not set: run the tests with scripts/test, which starts a Pushgateway");
    let s = Scratch::new();
    let job = format!("pushed-{}", std::process::id());
    let churn = std::fs::read_to_string(repo().join("jobs/churn.toml")).unwrap();
    let spec = churn.replace("name = \"churn-nightly\"", &format!("name = \"{job}\""))
        + &format!(
            "\n[monitor]\npushgateway = \"{url}\"\ntextfile = \"../prom/job.prom\"\n[[monitor.alerts]]\nrule = \"rows.scored < 10\"\n"
        );
    let good = s.job("good.toml", &spec);
    assert_ok(&run(&["run", good.to_str().unwrap(), "--var", "ds=1"]));
    let scraped = http_get(&url, "/metrics");
    let rows = |t: &str| {
        t.lines()
            .find(|l| {
                l.starts_with("batchscore_rows{")
                    && l.contains(&format!("job=\"{job}\""))
                    && l.contains("kind=\"scored\"")
            })
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
    };
    assert_eq!(rows(&scraped), Some(1941.0), "{scraped}");
    let success =
        sample_value(&scraped, "batchscore_last_success_timestamp_seconds", &job).unwrap();
    assert_eq!(
        sample_value(&scraped, "batchscore_last_run_status", &job),
        Some(1.0)
    );
    assert_eq!(
        sample_value(&scraped, "batchscore_alert_firing", &job),
        Some(0.0)
    );
    let textfile = s.path("prom/job.prom");
    let text = std::fs::read_to_string(&textfile).unwrap();
    assert_eq!(rows(&text), Some(1941.0), "{text}");

    // The same job, refused before any work: only its failure is pushed.
    let bad = s.job(
        "bad.toml",
        &spec.replace("WHERE region <> 'apac'", "WHERE nosuch = 1"),
    );
    assert_exit(&run(&["run", bad.to_str().unwrap(), "--var", "ds=2"]), 2);
    for text in [
        http_get(&url, "/metrics"),
        std::fs::read_to_string(&textfile).unwrap(),
    ] {
        assert_eq!(
            sample_value(&text, "batchscore_last_success_timestamp_seconds", &job),
            Some(success),
            "{text}"
        );
        assert_eq!(
            sample_value(&text, "batchscore_last_run_status", &job),
            Some(0.0)
        );
        assert_eq!(
            sample_value(&text, "batchscore_last_exit_code", &job),
            Some(2.0)
        );
        assert!(
            sample_value(&text, "batchscore_last_failure_timestamp_seconds", &job).unwrap()
                >= success
        );
        assert_eq!(rows(&text), Some(1941.0), "{text}");
    }
    assert!(
        !std::fs::read_dir(s.path("prom")).unwrap().any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .ends_with(".tmp")),
        "a temporary file was left beside the textfile"
    );
}

/// `--log-format json`: one JSON object per line, and every event from the start of the run
/// on carries the job and the run id (and, for a shard, the shard) under `span`.
#[test]
fn json_log_events_carry_the_run_id_job_and_shard() {
    let s = Scratch::new();
    let job = s.repo_job("churn");
    let job = job.to_str().unwrap();
    let events = |args: &[&str]| -> Vec<serde_json::Value> {
        let o = batchscore()
            .args(["--log-format", "json", "run", job])
            .args(args)
            .env("RUST_LOG", "info")
            .output()
            .unwrap();
        assert_ok(&o);
        text(&o)
            .1
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    };
    let whole = events(&["--var", "ds=1"]);
    let start = whole
        .iter()
        .position(|e| e["fields"]["message"] == "starting run")
        .unwrap();
    let run_id = whole[start]["fields"]["run_id"].clone();
    assert!(run_id.is_string());
    assert!(whole.len() > start + 1);
    for e in &whole[start..] {
        assert_eq!(e["span"]["job"], "churn-nightly", "{e}");
        assert_eq!(e["span"]["run_id"], run_id, "{e}");
    }
    let shard = events(&["--var", "ds=2", "--shard", "1/2"]);
    let start = shard
        .iter()
        .position(|e| e["fields"]["message"] == "starting shard")
        .unwrap();
    for e in &shard[start..] {
        assert_eq!(e["span"]["shard"], "1/2", "{e}");
        assert!(e["span"]["run_id"].is_string(), "{e}");
    }
}

/// `dir` and every file and folder under it, with their permission bits.
fn modes_under(dir: &Path) -> Vec<(std::path::PathBuf, bool, u32)> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::symlink_metadata(dir).unwrap();
    let mut out = vec![(
        dir.to_path_buf(),
        meta.is_dir(),
        meta.permissions().mode() & 0o777,
    )];
    if meta.is_dir() {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            out.extend(modes_under(&e.path()));
        }
    }
    out
}

fn assert_modes(dir: &Path, file: u32, folder: u32) -> Vec<String> {
    let all = modes_under(dir);
    for (path, is_dir, mode) in &all {
        let want = if *is_dir { folder } else { file };
        assert_eq!(
            *mode,
            want,
            "{}: {mode:04o}, not {want:04o}",
            path.display()
        );
    }
    all.iter()
        .map(|(p, _, _)| p.strip_prefix(dir).unwrap().to_string_lossy().into_owned())
        .collect()
}

/// `[privacy]` makes every local file a run creates 0600 and every folder 0700: the output,
/// its parts, `_rejected/`, the markers, a history's run folders and `_LATEST`, and a sharded
/// run's folder; `file_mode` says otherwise; without either the umask decides, as before.
#[test]
fn local_outputs_of_a_private_job_are_for_their_owner_only() {
    let s = Scratch::new();
    let churn = std::fs::read_to_string(repo().join("jobs/churn.toml"))
        .unwrap()
        .replace("../out/churn/ds=${ds}/", "../out/p/")
        .replace("fill_null = 0.0\n", "")
        .replace(
            "mode = \"overwrite\"",
            "mode = \"overwrite\"\nlayout = \"runs\"",
        );
    let private = churn.clone() + "[privacy]\nsensitive = [\"support_calls\"]\n";
    let job = s.job("p.toml", &private);
    assert_ok(&run(&["run", job.to_str().unwrap()]));
    let names = assert_modes(&s.path("out/p"), 0o600, 0o700);
    for want in [
        "_LATEST",
        "/_rejected/part-",
        "/_manifest.json",
        "/_SUCCESS",
    ] {
        assert!(names.iter().any(|n| n.contains(want)), "{want}: {names:?}");
    }

    // file_mode, for a sharded run: its run folder between the shards, then the output.
    let fraud = std::fs::read_to_string(repo().join("jobs/fraud.toml"))
        .unwrap()
        .replace("../out/fraud/", "../out/f/")
        .replace(
            "mode = \"overwrite\"",
            "mode = \"overwrite\"\nfile_mode = \"0640\"",
        );
    let job = s.job("f.toml", &fraud);
    assert_ok(&run(&["run", job.to_str().unwrap(), "--shard", "0/2"]));
    let names = assert_modes(&s.path("out/.f.run"), 0o640, 0o750);
    assert!(names.iter().any(|n| n.ends_with(".json")), "{names:?}");
    assert_ok(&run(&["run", job.to_str().unwrap(), "--shard", "1/2"]));
    assert_modes(&s.path("out/f"), 0o640, 0o750);

    // Neither: what this process's umask gives a file and a folder.
    std::fs::create_dir(s.path("probe")).unwrap();
    std::fs::write(s.path("probe/file"), "").unwrap();
    let umask: Vec<u32> = modes_under(&s.path("probe")).iter().map(|m| m.2).collect();
    let job = s.job("plain.toml", &churn.replace("../out/p/", "../out/plain/"));
    assert_ok(&run(&["run", job.to_str().unwrap()]));
    assert_modes(&s.path("out/plain"), umask[1], umask[0]);
}

#[test]
fn a_bad_file_mode_and_encryption_required_of_a_local_output_are_refused() {
    let s = Scratch::new();
    let fraud = std::fs::read_to_string(repo().join("jobs/fraud.toml"))
        .unwrap()
        .replace("../out/fraud/", "../out/f/");
    for (extra, want) in [
        (
            "file_mode = \"0755\"",
            "[output.file_mode]: \"0755\" is not a file mode",
        ),
        (
            "file_mode = \"rw\"",
            "[output.file_mode]: \"rw\" is not a file mode",
        ),
        ("require_encryption = true", "[output.require_encryption]: "),
    ] {
        let text = fraud.replace(
            "mode = \"overwrite\"",
            &format!("mode = \"overwrite\"\n{extra}"),
        );
        let job = s.job("f.toml", &text);
        let err = assert_exit(&run(&["run", job.to_str().unwrap()]), 2);
        assert!(err.contains(want), "{extra}: {err}");
        assert!(!s.path("out").exists(), "{extra}: nothing written");
    }
    let text = fraud.replace(
        "mode = \"overwrite\"",
        "mode = \"overwrite\"\nrequire_encryption = true",
    );
    let err = assert_exit(
        &run(&["validate", s.job("v.toml", &text).to_str().unwrap()]),
        2,
    );
    assert!(err.contains("is not encrypted by batchscore"), "{err}");
}
