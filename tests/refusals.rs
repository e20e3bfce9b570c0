//! Specs, models and outputs that cannot work are refused before any row is read: exit code
//! 2, a message naming the file and the key, and nothing written. `validate` lists every
//! problem at once.

mod common;
use common::*;

/// A valid spec over the churn sample, with `extra` appended to it.
fn churn_spec(extra_input: &str, features: &str, rest: &str) -> String {
    format!(
        r#"
name = "churn"
[input]
uri = "{data}"
{extra_input}
[model]
uri = "{model}"
[inputs.features]
{features}
[output]
uri = "../out/x/"
passthrough = ["customer_id"]
{rest}
"#,
        data = sample("churn/data/"),
        model = sample("churn/churn_lgbm.onnx"),
    )
}

const FEATURES: &str = r#"columns = ["tenure", "monthly_charges", "total_charges", "support_calls", "is_senior"]
fill_null = 0"#;

#[track_caller]
fn refused(s: &Scratch, job: &std::path::Path, expected: &[&str]) -> String {
    let o = run(&["run", job.to_str().unwrap()]);
    let err = assert_exit(&o, 2);
    for e in expected {
        assert!(err.contains(e), "expected {e:?} in:\n{err}");
    }
    assert!(!s.path("out").exists(), "nothing may be written");
    err
}

#[test]
fn unknown_key_names_file_and_key() {
    let s = Scratch::new();
    let job = s.job("a.toml", &churn_spec("", FEATURES, "mdoe = \"overwrite\""));
    let err = refused(
        &s,
        &job,
        &["jobs/a.toml: [output.mdoe]: unknown field `mdoe`, expected one of"],
    );
    assert!(err.starts_with("error: job spec "), "{err}");
}

#[test]
fn wrong_type_and_not_toml() {
    let s = Scratch::new();
    let job = s.job(
        "t.toml",
        &churn_spec("", FEATURES, "[run]\nworkers = \"many\""),
    );
    refused(
        &s,
        &job,
        &["t.toml: [run.workers]: invalid type: string \"many\""],
    );
    let job = s.job("n.toml", "name = \"x\"\n[input\n");
    refused(&s, &job, &["n.toml: not valid TOML"]);
}

#[test]
fn a_variable_without_a_value() {
    let s = Scratch::new();
    let job = s.repo_job("churn");
    refused(
        &s,
        &job,
        &["churn.toml: [output.uri]: ${ds} has no value: pass --var ds=VALUE"],
    );
}

#[test]
fn unknown_column_suggests_the_nearest() {
    let s = Scratch::new();
    let features = FEATURES.replace("\"tenure\"", "\"tenrue\"");
    let job = s.job("c.toml", &churn_spec("", &features, ""));
    refused(
        &s,
        &job,
        &[
            "c.toml: [inputs.features.columns[0]]: unknown column \"tenrue\" (did you mean \"tenure\"? columns: customer_id, tenure,",
        ],
    );
}

#[test]
fn unknown_passthrough_column() {
    let s = Scratch::new();
    let job = s.job(
        "p.toml",
        &churn_spec("", FEATURES, "").replace("[\"customer_id\"]", "[\"customer\"]"),
    );
    refused(
        &s,
        &job,
        &["[output.passthrough[0]]: unknown column \"customer\" (did you mean \"customer_id\"?"],
    );
}

#[test]
fn column_count_must_fit_the_shape() {
    let s = Scratch::new();
    let job = s.job(
        "w.toml",
        &churn_spec("", "columns = [\"tenure\", \"is_senior\"]", ""),
    );
    refused(
        &s,
        &job,
        &[
            "[inputs.features.columns]: model input \"features\" has shape [?, 5], 5 values per row, but 2 columns are given",
        ],
    );
}

#[test]
fn a_cast_that_cannot_work() {
    let s = Scratch::new();
    let features = FEATURES.replace("\"is_senior\"", "\"CAST('2020-01-01' AS DATE)\"");
    let job = s.job("d.toml", &churn_spec("", &features, ""));
    refused(
        &s,
        &job,
        &[
            "[inputs.features.columns[4]]: \"CAST('2020-01-01' AS DATE)\" has type Date32, which cannot be cast to the model input \"features\" (float32)",
        ],
    );
}

#[test]
fn model_outputs_and_indexes_are_checked() {
    let s = Scratch::new();
    let job = s.job(
        "o.toml",
        &churn_spec(
            "",
            FEATURES,
            "[outputs]\np = \"probabilities[2]\"\nq = \"proba\"",
        ),
    );
    refused(
        &s,
        &job,
        &[
            "[outputs.p]: model output \"probabilities\" has 2 values per row (shape [?, 2]); index 2 is out of range",
            "[outputs.q]: the model has no output \"proba\" (its outputs: label, probabilities)",
        ],
    );
}

#[test]
fn a_list_column_cannot_go_to_csv() {
    let s = Scratch::new();
    let job = s.job(
        "l.toml",
        &churn_spec(
            "",
            FEATURES,
            "format = \"csv\"\n[outputs]\np = \"probabilities\"",
        ),
    );
    refused(
        &s,
        &job,
        &["[outputs.p]: column \"p\" holds a whole vector per row, which CSV cannot hold"],
    );
}

#[test]
fn a_model_whose_hash_differs_from_the_pin() {
    let s = Scratch::new();
    let text = churn_spec("", FEATURES, "").replace(
        "[inputs.features]",
        &format!("sha256 = \"{}\"\n[inputs.features]", "0".repeat(64)),
    );
    let job = s.job("h.toml", &text);
    refused(
        &s,
        &job,
        &[
            "[model.sha256]: model ",
            "churn_lgbm.onnx: sha256 is ",
            "but [model.sha256] pins 0000",
        ],
    );
}

#[test]
fn a_file_that_is_not_onnx_or_is_truncated() {
    let s = Scratch::new();
    std::fs::write(s.path("bad.onnx"), "name,age\n1,2\n").unwrap();
    let bytes = std::fs::read(sample("churn/churn_lgbm.onnx")).unwrap();
    std::fs::write(s.path("cut.onnx"), &bytes[..bytes.len() / 3]).unwrap();
    for (file, why) in [("bad.onnx", "not an ONNX model"), ("cut.onnx", "truncated")] {
        let text = churn_spec("", FEATURES, "").replace(
            &sample("churn/churn_lgbm.onnx"),
            s.path(file).to_str().unwrap(),
        );
        let job = s.job("m.toml", &text);
        refused(&s, &job, &["[model.uri]: model ", why]);
    }
}

#[test]
fn input_that_matches_nothing_and_a_bad_query() {
    let s = Scratch::new();
    let job = s.job(
        "i.toml",
        &churn_spec("", FEATURES, "").replace(&sample("churn/data/"), "/nonexistent/data/"),
    );
    refused(
        &s,
        &job,
        &["[input.uri]: /nonexistent/data/: no such file or directory"],
    );
    let job = s.job(
        "q.toml",
        &churn_spec("query = \"SELECT * FROM inptu\"", FEATURES, ""),
    );
    refused(&s, &job, &["[input.query]: ", "inptu"]);
}

#[test]
fn validate_lists_every_problem_at_once() {
    let s = Scratch::new();
    let features = FEATURES.replace("\"tenure\"", "\"tenrue\"");
    let job = s.job(
        "v.toml",
        &churn_spec("", &features, "[outputs]\nq = \"proba\"")
            .replace("[\"customer_id\"]", "[\"customer\"]"),
    );
    let o = run(&["validate", job.to_str().unwrap()]);
    let err = assert_exit(&o, 2);
    for key in [
        "[output.passthrough[0]]",
        "[inputs.features.columns[0]]",
        "[outputs.q]",
    ] {
        assert!(err.contains(key), "{key} missing from:\n{err}");
    }
    assert_eq!(err.matches("job spec ").count(), 3, "{err}");
}

#[test]
fn validate_accepts_a_good_job_and_describes_it() {
    let s = Scratch::new();
    let job = s.repo_job("churn");
    let o = run(&["validate", job.to_str().unwrap(), "--var", "ds=1"]);
    assert_ok(&o);
    let (out, _) = text(&o);
    assert!(out.contains("churn.toml: OK"), "{out}");
    assert!(
        out.contains("input \"features\" float32 <- tenure, monthly_charges, total_charges, ln(1 + support_calls), is_senior"),
        "{out}"
    );
    assert!(
        out.contains("column \"churn_probability\" <- probabilities[1] (Float32)"),
        "{out}"
    );
    assert!(!s.path("out").exists(), "validate writes nothing");
}

#[test]
fn a_null_without_fill_null_fails_naming_the_column_and_count() {
    let s = Scratch::new();
    let features = FEATURES.replace("fill_null = 0", "");
    let job = s.job("nulls.toml", &churn_spec("", &features, ""));
    let o = run(&["run", job.to_str().unwrap()]);
    let err = assert_exit(&o, 1);
    // The oracle: count the nulls in the sample files themselves.
    let mut nulls = 0;
    for region in ["eu", "us", "apac"] {
        for part in 0..2 {
            let t = read_parquet(
                &std::path::Path::new(&sample("churn/data"))
                    .join(format!("region={region}/part-{part}.parquet")),
            );
            nulls += t["total_charges"]
                .iter()
                .filter(|c| **c == Cell::Null)
                .count();
        }
    }
    assert!(nulls > 0);
    assert!(
        err.contains(&format!(
            "[inputs.features]: column \"total_charges\" is null in {nulls} rows, and [inputs.features] sets no fill_null"
        )),
        "{err}"
    );
    assert!(err.contains("nothing was committed"), "{err}");
    assert!(!s.path("out/x").exists());
    let leftovers: Vec<_> = std::fs::read_dir(s.path("out"))
        .map(|d| d.count())
        .into_iter()
        .collect();
    assert!(leftovers.iter().all(|&n| n == 0), "no staging left behind");
}

#[test]
fn command_line_errors_exit_2() {
    let o = run(&["run"]);
    assert_exit(&o, 2);
    let o = run(&["run", "job.toml", "--var", "novalue"]);
    let err = assert_exit(&o, 2);
    assert!(err.contains("expected NAME=VALUE"), "{err}");
}

#[test]
fn a_dtype_that_differs_from_the_model() {
    let s = Scratch::new();
    let job = s.job(
        "dt.toml",
        &churn_spec("", &format!("{FEATURES}\ndtype = \"float64\""), ""),
    );
    refused(
        &s,
        &job,
        &["[inputs.features.dtype]: is float64, but the model's input \"features\" is float32"],
    );
}

#[test]
fn an_input_the_model_does_not_have() {
    let s = Scratch::new();
    let job = s.job(
        "in.toml",
        &(churn_spec("", FEATURES, "") + "[inputs.feature]\ncolumns = [\"tenure\"]\n"),
    );
    refused(
        &s,
        &job,
        &["[inputs.feature]: the model has no input \"feature\" (its inputs: features)"],
    );
}
