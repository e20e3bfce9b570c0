//! `batchscore score`: scoring from the command line with no job spec, against the sample
//! models' onnxruntime outputs (`sample_data/*/expected.parquet`).

mod common;
use common::*;

use std::io::Write;
use std::process::{Output, Stdio};

/// Runs the binary in `dir` with `stdin` piped in.
fn score_with_stdin(dir: &std::path::Path, args: &[&str], stdin: &[u8]) -> Output {
    let mut child = batchscore()
        .current_dir(dir)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

fn in_dir(dir: &std::path::Path, args: &[&str]) -> Output {
    batchscore().current_dir(dir).args(args).output().unwrap()
}

/// CSV text of a table (the columns given, in order), as a user's file would hold it.
fn csv_of(t: &Table, names: &[&str]) -> String {
    let columns: Vec<&Vec<Cell>> = names.iter().map(|c| &t[*c]).collect();
    let mut s = names.join(",") + "\n";
    for row in 0..columns[0].len() {
        let cells: Vec<String> = columns
            .iter()
            .map(|column| match &column[row] {
                Cell::Null => String::new(),
                Cell::Float(f) => format!("{f}"),
                Cell::Int(n) => n.to_string(),
                Cell::Bool(b) => b.to_string(),
                Cell::Text(x) => x.clone(),
                Cell::List(_) => panic!("no lists in CSV"),
            })
            .collect();
        s += &(cells.join(",") + "\n");
    }
    s
}

#[test]
fn a_per_column_model_binds_by_name_and_matches_onnxruntime() {
    let s = Scratch::new();
    let out = s.path("preds");
    let o = in_dir(
        s.dir.path(),
        &[
            "score",
            "sample_data/plans/plans_pipeline.onnx",
            "sample_data/plans/accounts.parquet",
            "-o",
            "preds",
            "--key",
            "account",
            "--output",
            "output_label=output_label",
            "--output",
            "p_upgrade=output_probability[2]",
        ],
    );
    assert_ok(&o);
    let got = read_output(&out);
    let expected = read_parquet(&s.path("sample_data/plans/expected.parquet"));
    assert_matches(&got, &expected, "account", &["output_label", "p_upgrade"]);
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        ["account", "output_label", "p_upgrade"]
    );
    // A folder that holds a committed output is refused, as a spec's mode = "error" is.
    let again = in_dir(
        s.dir.path(),
        &[
            "score",
            "sample_data/plans/plans_pipeline.onnx",
            "sample_data/plans/accounts.parquet",
            "-o",
            "preds",
        ],
    );
    assert!(assert_exit(&again, 2).contains("already holds"));
}

/// The issue's own example: a tensor input from expressions (a comma inside `ln(…)`), a
/// fill value, a query, one output element; the nightly job `jobs/churn.toml` does the same.
fn churn_args(out: &str) -> Vec<String> {
    [
        "score",
        "sample_data/churn/churn_lgbm.onnx",
        "sample_data/churn/data/",
        "-o",
        out,
        "--key",
        "customer_id,region",
        "--columns",
        "features=tenure,monthly_charges,total_charges,ln(1 + support_calls),is_senior",
        "--fill-null",
        "0",
        "--query",
        "SELECT * FROM input WHERE region <> '${skip}'",
        "--var",
        "skip=apac",
        "--output",
        "churn_probability=probabilities[1]",
        "--output",
        "churn_label=label",
    ]
    .iter()
    .map(|a| a.to_string())
    .collect()
}

#[test]
fn expressions_fill_and_query_score_as_the_nightly_job_does() {
    let s = Scratch::new();
    let args = churn_args("preds");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_ok(&in_dir(s.dir.path(), &args));
    let got = read_output(&s.path("preds"));
    let expected = read_parquet(&s.path("sample_data/churn/expected.parquet"));
    assert_matches(
        &got,
        &expected,
        "customer_id",
        &["region", "churn_probability", "churn_label"],
    );
}

#[test]
fn print_spec_writes_a_job_that_run_scores_the_same_rows() {
    let s = Scratch::new();
    let mut args = churn_args("preds/${ds}");
    args.push("--print-spec".into());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = batchscore()
        .current_dir(s.dir.path())
        .args(&args)
        .env("SECRET_TOKEN", "hunter2-do-not-print")
        .output()
        .unwrap();
    assert_ok(&o);
    let (spec, _) = text(&o);
    // Nothing was scored; paths are absolute; references stay as given.
    assert!(!s.path("preds").exists());
    let root = s.dir.path().display().to_string();
    assert!(
        spec.contains(&format!(
            "uri = \"{root}/sample_data/churn/churn_lgbm.onnx\""
        )),
        "{spec}"
    );
    assert!(
        spec.contains(&format!("uri = \"{root}/preds/${{ds}}\"")),
        "{spec}"
    );
    assert!(spec.contains("WHERE region <> '${skip}'"), "{spec}");
    assert!(spec.contains("columns = [\"tenure\", \"monthly_charges\", \"total_charges\", \"ln(1 + support_calls)\", \"is_senior\"]"), "{spec}");
    let job = s.job("saved.toml", &spec);
    let run = batchscore()
        .current_dir(s.dir.path())
        .args([
            "run",
            job.to_str().unwrap(),
            "--var",
            "skip=apac",
            "--var",
            "ds=1",
        ])
        .output()
        .unwrap();
    assert_ok(&run);
    let got = read_output(&s.path("preds/1"));
    let expected = read_parquet(&s.path("sample_data/churn/expected.parquet"));
    assert_matches(
        &got,
        &expected,
        "customer_id",
        &["churn_probability", "churn_label"],
    );
}

#[test]
fn print_spec_keeps_an_env_reference_and_never_its_value() {
    let s = Scratch::new();
    let o = batchscore()
        .current_dir(s.dir.path())
        .args([
            "score",
            "s3://bucket/models/churn.onnx",
            "s3://bucket/rows/",
            "-o",
            "s3://bucket/preds/",
            "--query",
            "SELECT * FROM input WHERE token <> '${env:SECRET_TOKEN}'",
            "--print-spec",
        ])
        .env("SECRET_TOKEN", "hunter2-do-not-print")
        .output()
        .unwrap();
    assert_ok(&o);
    let (spec, err) = text(&o);
    assert!(spec.contains("${env:SECRET_TOKEN}"), "{spec}");
    assert!(
        spec.contains("uri = \"s3://bucket/models/churn.onnx\""),
        "{spec}"
    );
    assert!(!spec.contains("hunter2") && !err.contains("hunter2"));
}

#[test]
fn csv_on_stdin_to_csv_on_stdout() {
    let s = Scratch::new();
    let rows = read_parquet(&s.path("sample_data/fraud/transactions.parquet"));
    let csv = csv_of(&rows, &["txn_id", "x0", "x1", "x2", "x3", "x4", "x5"]);
    let o = score_with_stdin(
        s.dir.path(),
        &[
            "score",
            "sample_data/fraud/fraud_xgb.onnx",
            "-",
            "-o",
            "-",
            "--key",
            "txn_id",
            "--columns",
            "input=x0..x5",
            "--output",
            "fraud_probability=probabilities[1]",
        ],
        csv.as_bytes(),
    );
    assert_ok(&o);
    let (stdout, stderr) = text(&o);
    assert!(
        stderr.contains("2500 rows scored") && stderr.contains("0 rejected -> stdout"),
        "{stderr}"
    );
    let printed = s.path("printed.csv");
    std::fs::write(&printed, &stdout).unwrap();
    let got = read_csv(&printed);
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        ["fraud_probability", "txn_id"]
    );
    assert!(stdout.starts_with("txn_id,fraud_probability\n"));
    let expected = read_parquet(&s.path("sample_data/fraud/expected.parquet"));
    assert_matches(&got, &expected, "txn_id", &["fraud_probability"]);
    // No folder is left behind anywhere the user would look.
    assert_eq!(
        names_in(s.dir.path()),
        ["jobs", "printed.csv", "sample_data"]
    );
}

#[test]
fn json_lines_on_stdin_with_rejected_rows_kept_aside() {
    let s = Scratch::new();
    let lines = "{\"id\": 1, \"rooms\": 4, \"area_m2\": 126.26, \"built\": 1933, \"km_to_center\": 9.904}\n\
{\"id\": 2, \"rooms\": null, \"area_m2\": 98.09, \"built\": 1994, \"km_to_center\": 5.155}\n\
{\"id\": 3, \"rooms\": 2, \"area_m2\": 98.09, \"built\": 1994, \"km_to_center\": 5.155}\n";
    let o = score_with_stdin(
        s.dir.path(),
        &[
            "score",
            "sample_data/houses/price_ridge.onnx",
            "-",
            "-o",
            "-",
            "--key",
            "id",
            "--columns",
            "X=rooms,area_m2,built,km_to_center",
            "--output",
            "price=variable",
            "--format",
            "json",
            "--rejected",
            "rejected",
        ],
        lines.as_bytes(),
    );
    assert_ok(&o);
    let (stdout, stderr) = text(&o);
    assert!(
        stderr.contains("2 rows scored") && stderr.contains("1 rejected"),
        "{stderr}"
    );
    let printed: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut ids: Vec<i64> = printed.iter().map(|v| v["id"].as_i64().unwrap()).collect();
    ids.sort();
    assert_eq!(ids, [1, 3]);
    // The sample's first house (h0000) has the same features as row 1: its price is the oracle's.
    let expected = read_parquet(&s.path("sample_data/houses/expected.parquet"));
    let h0000 = texts(&expected["house_id"])
        .iter()
        .position(|h| h == "h0000")
        .unwrap();
    let Cell::Float(want) = expected["price"][h0000] else {
        panic!()
    };
    let row1 = printed.iter().find(|v| v["id"] == 1).unwrap();
    assert!(
        close(row1["price"].as_f64().unwrap(), want),
        "{row1} vs {want}"
    );
    let parts = names_in(&s.path("rejected"));
    assert_eq!(parts.len(), 1, "{parts:?}");
    let rejected = read_parquet(&s.path("rejected").join(&parts[0]));
    assert_eq!(rejected["id"], [Cell::Int(2)]);
    let reason = texts(&rejected["_reason"]).join("");
    assert!(reason.contains("rooms"), "{reason}");
}

#[test]
fn what_cannot_bind_names_the_inputs_the_columns_and_the_flag() {
    let s = Scratch::new();
    let o = in_dir(
        s.dir.path(),
        &[
            "score",
            "sample_data/churn/churn_lgbm.onnx",
            "sample_data/churn/data/",
            "-o",
            "preds",
        ],
    );
    let err = assert_exit(&o, 2);
    for needed in [
        "features (tensor(float32) [?, 5])",
        "customer_id, tenure, monthly_charges, total_charges, support_calls, is_senior, region",
        "--columns INPUT=",
    ] {
        assert!(err.contains(needed), "{needed:?} missing from:\n{err}");
    }
    assert!(!s.path("preds").exists());
}

#[test]
fn refusals_name_the_flag() {
    let s = Scratch::new();
    let cases: [(&[&str], &str); 4] = [
        (&["-o", "-", "--format", "parquet"], "--format"),
        (&["-o", "preds", "--format", "table"], "--format"),
        (
            &["-o", "preds", "--columns", "features"],
            "expected INPUT=COLUMNS",
        ),
        (
            &["-o", "preds", "--columns", "features=f3..f1"],
            "the range must count up",
        ),
    ];
    for (extra, needed) in cases {
        let mut args = vec![
            "score",
            "sample_data/churn/churn_lgbm.onnx",
            "sample_data/churn/data/",
        ];
        args.extend_from_slice(extra);
        let err = assert_exit(&in_dir(s.dir.path(), &args), 2);
        assert!(err.contains(needed), "{extra:?}: {err}");
    }
    assert!(!s.path("preds").exists());
}

/// Every command of the README's "From the shell" examples runs as written (from a checkout
/// with the binary on PATH) and exits 0; what each prints is checked by the tests above.
#[test]
fn the_readme_shell_examples_run_as_written() {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let start = readme
        .find("\n## From the shell")
        .expect("a From the shell section");
    let section = &readme[start + 1..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |i| i + 3)];
    let mut commands = Vec::new();
    for block in section.split("```sh\n").skip(1) {
        let block = &block[..block.find("```").unwrap()];
        let joined = block.replace("\\\n", " ");
        commands.extend(
            joined
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(String::from),
        );
    }
    assert!(commands.len() >= 4, "{commands:?}");
    let s = Scratch::new();
    // The text examples read MiniLM from `.models/`, where scripts/fetch-models puts it.
    std::os::unix::fs::symlink(common::text_models::models(), s.path(".models")).unwrap();
    let bin_dir = std::path::Path::new(env!("CARGO_BIN_EXE_batchscore"))
        .parent()
        .unwrap();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap());
    for c in &commands {
        let mut bash = std::process::Command::new("bash");
        bash.args(["-o", "pipefail", "-c", c])
            .current_dir(s.dir.path())
            .env("PATH", &path)
            .env("RUST_LOG", "warn");
        if std::env::var_os("ORT_DYLIB_PATH").is_none() {
            bash.env(
                "ORT_DYLIB_PATH",
                repo().join(".ort/lib/libonnxruntime.so.1.31.1"),
            );
        }
        let o = bash.output().unwrap();
        let (out, err) = text(&o);
        assert!(
            o.status.success(),
            "{c}\nexit {:?}\n{out}\n{err}",
            o.status.code()
        );
        assert!(!out.is_empty() || !err.is_empty(), "{c} printed nothing");
    }
}
