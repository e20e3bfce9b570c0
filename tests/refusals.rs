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
fn a_model_of_an_opset_onnx_runtime_does_not_support() {
    // A valid graph stamped with ai.onnx opset 99: onnxruntime's Python API refuses it too
    // (make_samples.py checks that when it writes the file).
    let s = Scratch::new();
    let job = s.job(
        "o.toml",
        &format!(
            r#"
name = "future"
[input]
uri = "{}"
[model]
uri = "{}"
[inputs.x]
columns = ["x0", "x1", "x2", "x3"]
[output]
uri = "out/"
passthrough = ["row_id"]
[outputs]
y = "y"
"#,
            sample("synthetic/rows.parquet"),
            sample("synthetic/future_opset.onnx")
        ),
    );
    let err = refused(
        &s,
        &job,
        &["[model.uri]: model ", "future_opset.onnx", "Opset 99"],
    );
    assert!(!err.contains("onnxruntime_src"), "{err}");
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

/// The keys of the churn sample whose `total_charges` is null (the oracle for rejects).
fn keys_with_null_total_charges() -> (std::collections::BTreeSet<i64>, usize) {
    let (mut null_keys, mut all) = (std::collections::BTreeSet::new(), 0);
    for region in ["eu", "us", "apac"] {
        for part in 0..2 {
            let t = read_parquet(
                &std::path::Path::new(&sample("churn/data"))
                    .join(format!("region={region}/part-{part}.parquet")),
            );
            all += t["customer_id"].len();
            for (k, v) in t["customer_id"].iter().zip(&t["total_charges"]) {
                if *v == Cell::Null {
                    let Cell::Int(k) = k else { panic!("{k:?}") };
                    null_keys.insert(*k);
                }
            }
        }
    }
    (null_keys, all)
}

#[test]
fn null_features_go_to_the_dead_letter_output_with_key_and_reason() {
    let s = Scratch::new();
    let features = FEATURES.replace("fill_null = 0", "");
    let job = s.job("nulls.toml", &churn_spec("", &features, ""));
    let o = run(&["run", job.to_str().unwrap()]);
    assert_ok(&o);
    let (null_keys, all) = keys_with_null_total_charges();
    assert!(!null_keys.is_empty());
    let (stdout, _) = text(&o);
    assert!(
        stdout.contains(&format!(", {} rejected -> ", null_keys.len())),
        "{stdout}"
    );

    let out = read_output(&s.path("out/x"));
    let keys = |cells: &[Cell]| -> std::collections::BTreeSet<i64> {
        cells
            .iter()
            .map(|c| {
                if let Cell::Int(k) = c {
                    *k
                } else {
                    panic!("{c:?}")
                }
            })
            .collect()
    };
    let scored = keys(&out["customer_id"]);
    assert_eq!(scored.len(), all - null_keys.len());
    assert!(
        scored.is_disjoint(&null_keys),
        "a rejected row is not in the output"
    );

    // _rejected/ holds exactly the rows with a null, each with its key, stage and reason.
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(s.path("out/x/_manifest.json")).unwrap())
            .unwrap();
    assert_eq!(manifest["rejected_rows"], null_keys.len() as u64);
    let mut rejected = std::collections::BTreeMap::<String, Vec<Cell>>::new();
    for f in manifest["rejected_files"].as_array().unwrap() {
        let path = f["path"].as_str().unwrap();
        assert!(path.starts_with("_rejected/part-"), "{path}");
        for (k, v) in read_parquet(&s.path("out/x").join(path)) {
            rejected.entry(k).or_default().extend(v);
        }
    }
    assert_eq!(keys(&rejected["customer_id"]), null_keys);
    let reason = "column \"total_charges\": null, and [inputs.features] sets no fill_null";
    assert!(
        rejected["_stage"]
            .iter()
            .all(|c| *c == Cell::Text("features".into()))
    );
    assert!(
        rejected["_reason"]
            .iter()
            .all(|c| *c == Cell::Text(reason.into())),
        "{:?}",
        &rejected["_reason"][..3]
    );
    assert!(
        rejected["_value"]
            .iter()
            .all(|c| *c == Cell::Text("null".into()))
    );

    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(s.path("out/x/_metrics.json")).unwrap())
            .unwrap();
    assert_eq!(metrics["rows"]["rejected"], null_keys.len() as u64);
    assert_eq!(metrics["rejected_reasons"][0]["reason"], reason);
    assert_eq!(
        metrics["rejected_reasons"][0]["count"],
        null_keys.len() as u64
    );
}

#[test]
fn past_the_reject_budget_nothing_is_committed_and_the_exit_code_is_3() {
    let (null_keys, all) = keys_with_null_total_charges();
    let features = FEATURES.replace("fill_null = 0", "");
    for (budget, limit) in [
        (
            "max_rejected = 0".to_string(),
            "more than [run] max_rejected = 0".to_string(),
        ),
        (
            "max_rejected_rate = 0.001".to_string(),
            format!("% of {all} rows, more than [run] max_rejected_rate = 0.001"),
        ),
    ] {
        let s = Scratch::new();
        let job = s.job(
            "budget.toml",
            &churn_spec("", &features, &format!("[run]\n{budget}")),
        );
        let o = run(&["run", job.to_str().unwrap()]);
        let err = assert_exit(&o, 3);
        assert!(
            err.contains(" rows rejected, ") && err.contains(&limit),
            "{err}"
        );
        assert!(
            err.contains("nothing was committed. Top reasons:\n  "),
            "{err}"
        );
        assert!(err.contains(" x column \"total_charges\": null"), "{err}");
        assert!(!s.path("out/x").exists());
        let left = std::fs::read_dir(s.path("out"))
            .map(|d| d.count())
            .unwrap_or(0);
        assert_eq!(left, 0, "no staging left behind");
    }
    // Within the budget the run commits.
    let s = Scratch::new();
    let job = s.job(
        "within.toml",
        &churn_spec(
            "",
            &features,
            &format!("[run]\nmax_rejected = {}", null_keys.len()),
        ),
    );
    assert_ok(&run(&["run", job.to_str().unwrap()]));
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

/// A Parquet case: its name, the files of the input folder, what the message must say.
type ParquetCase<'a> = (&'a str, Vec<(&'a str, Vec<u8>)>, Vec<&'a str>);
/// A CSV case: its name, the file, and `Ok((rows scored, the `_reason`s of the rows rejected))`
/// or `Err(what the message must say)`.
type CsvCase<'a> = (&'a str, Vec<u8>, Result<(u64, Vec<&'a str>), Vec<&'a str>>);

/// The bad-input matrix: each input is refused before any work (exit 2) with a message that
/// names the file and what is wrong with it, or, where it is readable after all, scored.
#[test]
fn bad_input_files_are_refused_naming_the_file_and_the_reason() {
    let fraud = std::fs::read(sample("fraud/transactions.parquet")).unwrap();
    let rows = std::fs::read(sample("synthetic/rows.parquet")).unwrap();
    let mut footer = fraud[..fraud.len() - 8].to_vec();
    footer.extend_from_slice(b"XXXXXXXX");
    let parquet_cases: Vec<ParquetCase> = vec![
        (
            "truncated",
            vec![("t.parquet", fraud[..fraud.len() / 2].to_vec())],
            vec!["t.parquet: cannot read it: ", "Corrupt footer"],
        ),
        (
            "zero-byte",
            vec![("z.parquet", Vec::new())],
            vec!["z.parquet: the file is empty (0 bytes)"],
        ),
        (
            "bad-footer",
            vec![("f.parquet", footer)],
            vec!["f.parquet: cannot read it: ", "Corrupt footer"],
        ),
        (
            "mixed-schemas",
            vec![("a.parquet", fraud.clone()), ("b.parquet", rows)],
            vec![
                "b.parquet: its columns differ from those of ",
                "a.parquet (missing: [txn_id: Int64, x4: Float32, x5: Float32]",
            ],
        ),
    ];
    for (case, files, expected) in parquet_cases {
        let s = Scratch::new();
        std::fs::create_dir(s.path("in")).unwrap();
        for (name, bytes) in files {
            std::fs::write(s.path("in").join(name), bytes).unwrap();
        }
        let job = s.job(
            "bad.toml",
            &format!(
                "name = \"bad\"\n[input]\nuri = \"../in/\"\n[model]\nuri = \"{}\"\n[inputs.input]\ncolumns = [\"x0\", \"x1\", \"x2\", \"x3\", \"x4\", \"x5\"]\n[output]\nuri = \"../out/x/\"\n",
                sample("fraud/fraud_xgb.onnx")
            ),
        );
        let err = assert_exit(&run(&["run", job.to_str().unwrap()]), 2);
        for e in expected {
            assert!(err.contains(e), "{case}: expected {e:?} in:\n{err}");
        }
        assert!(err.contains("[input.uri]: "), "{case}: {err}");
        assert!(!s.path("out").exists(), "{case}: nothing written");
    }

    let mut big = b"row_id,a,b,note\n0,1,2,".to_vec();
    big.extend(std::iter::repeat_n(b'x', 10 * 1024 * 1024));
    big.extend_from_slice(b"\n1,2,3,ok\n");
    let csv_cases: Vec<CsvCase> = vec![
        (
            "ragged",
            b"row_id,a,b\n0,1,2\n1,2\n2,3,4\n".to_vec(),
            Ok((
                2,
                vec!["d.csv line 3: malformed CSV record: expected 3 fields, found 2"],
            )),
        ),
        (
            "non-utf8",
            b"row_id,a,b,note\n0,1,2,caf\xe9\n1,2,3,ok\n".to_vec(),
            Ok((
                1,
                vec!["d.csv line 2: malformed CSV record: field 4 (\"note\") is not valid UTF-8"],
            )),
        ),
        (
            "bad-quoting",
            // An unterminated quote runs to the end of the file: one record, too many fields.
            b"row_id,a,b,note\n0,1,2,ok\n1,2,3,\"open\n2,3,4,x\n".to_vec(),
            Ok((
                1,
                vec!["d.csv line 3: malformed CSV record: a quoted field is never closed"],
            )),
        ),
        ("header-only", b"row_id,a,b\n".to_vec(), Ok((0, vec![]))),
        (
            "wrong-delimiter",
            b"row_id;a;b\n0;1;2\n".to_vec(),
            Err(vec![
                "unknown column \"a\" (columns: row_id;a;b; the input has a single column: is [input.csv] delimiter right?)",
            ]),
        ),
        (
            "quoted-newlines",
            b"row_id,a,b,note\n0,1,2,\"line one\nline two\"\n1,2,3,plain\n".to_vec(),
            Ok((2, vec![])),
        ),
        (
            "utf8-bom",
            b"\xef\xbb\xbfrow_id,a,b\n0,1,2\n1,2,3\n".to_vec(),
            Ok((2, vec![])),
        ),
        ("10-mb-field", big, Ok((2, vec![]))),
    ];
    for (case, bytes, outcome) in csv_cases {
        let s = Scratch::new();
        std::fs::write(s.path("d.csv"), bytes).unwrap();
        let job = s.job(
            "csv.toml",
            &format!(
                "name = \"csv\"\n[input]\nuri = \"../d.csv\"\n[model]\nuri = \"{}\"\n[output]\nuri = \"../out/x/\"\npassthrough = [\"row_id\"]\n",
                sample("synthetic/rank1_int.onnx")
            ),
        );
        let o = run(&["run", job.to_str().unwrap()]);
        match outcome {
            Ok((n, reasons)) => {
                assert_ok(&o);
                let m: serde_json::Value = serde_json::from_str(
                    &std::fs::read_to_string(s.path("out/x/_metrics.json")).unwrap(),
                )
                .unwrap();
                assert_eq!(m["rows"]["scored"], n, "{case}");
                assert_eq!(m["rows"]["rejected"], reasons.len(), "{case}");
                let rejected = read_rejected(&s.path("out/x"));
                let got = texts(rejected.get("_reason").map_or(&[][..], Vec::as_slice));
                assert_eq!(got.len(), reasons.len(), "{case}: {got:?}");
                for (g, want) in got.iter().zip(&reasons) {
                    assert!(g.ends_with(want), "{case}: {g:?} should end with {want:?}");
                }
            }
            Err(expected) => {
                let err = assert_exit(&o, 2);
                for e in expected {
                    assert!(err.contains(e), "{case}: expected {e:?} in:\n{err}");
                }
                assert!(!s.path("out").exists(), "{case}: nothing written");
            }
        }
    }
}

/// Malformed CSV records across several chunks of a file: each is rejected with its file and
/// line, every other row is scored once, and the budget counts them.
#[test]
fn malformed_csv_rows_are_rejected_with_their_line_numbers() {
    let s = Scratch::new();
    let n = 500_000u64; // about 6 MB: more than one 4 MiB chunk
    let mut csv = b"row_id,a,b\n".to_vec();
    // Row i is on line i + 2. The bad ones, with what the reason must end with.
    let bad: Vec<(u64, &[u8], &str)> = vec![
        (10, b"10,1\n", "expected 3 fields, found 2"),
        (
            300_000,
            b"300000,x7,3\n",
            // Past the 1000 records types are inferred from: `a` is an integer column.
            "column \"a\": cannot parse as Int64",
        ),
        (
            400_000,
            b"400000,1,\xff\n",
            "field 3 (\"b\") is not valid UTF-8",
        ),
        (n - 1, b"499999,1,\"2\n", "a quoted field is never closed"),
    ];
    for i in 0..n {
        match bad.iter().find(|(row, ..)| *row == i) {
            Some((_, line, _)) => csv.extend_from_slice(line),
            None => csv.extend_from_slice(format!("{i},{},{}\n", i % 50, i % 20).as_bytes()),
        }
    }
    std::fs::write(s.path("d.csv"), &csv).unwrap();
    let spec = |extra: &str| {
        format!(
            "name = \"csv\"\n[input]\nuri = \"../d.csv\"\n[model]\nuri = \"{}\"\n[output]\nuri = \"../out/x/\"\npassthrough = [\"row_id\"]\n{extra}",
            sample("synthetic/rank1_int.onnx")
        )
    };
    let job = s.job("csv.toml", &spec(""));
    assert_ok(&run(&["run", job.to_str().unwrap()]));

    let out = read_output(&s.path("out/x"));
    let keys: std::collections::BTreeSet<i64> = out["row_id"]
        .iter()
        .map(|c| match c {
            Cell::Int(k) => *k,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(keys.len(), out["row_id"].len(), "each row once");
    let expected: std::collections::BTreeSet<i64> = (0..n as i64)
        .filter(|i| !bad.iter().any(|(row, ..)| *row as i64 == *i))
        .collect();
    assert!(keys == expected, "every good row is scored");

    let rejected = read_rejected(&s.path("out/x"));
    let reasons = texts(&rejected["_reason"]);
    assert_eq!(reasons.len(), bad.len(), "{reasons:?}");
    for (row, _, why) in &bad {
        let at = format!("d.csv line {}: ", row + 2);
        assert!(
            reasons.iter().any(|r| r.contains(&at) && r.ends_with(why)),
            "{at}{why} in {reasons:?}"
        );
    }
    assert!(texts(&rejected["_stage"]).iter().all(|s| s == "read"));
    assert!(texts(&rejected["_value"]).contains(&"300000,x7,3".to_string()));
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(s.path("out/x/_metrics.json")).unwrap())
            .unwrap();
    assert_eq!(m["rows"]["read"], n);
    assert_eq!(m["rows"]["rejected"], bad.len());
    assert_eq!(m["rows"]["scored"], n - bad.len() as u64);

    // The budget counts them: past it, exit 3 and nothing committed.
    std::fs::remove_dir_all(s.path("out")).unwrap();
    let job = s.job("budget.toml", &spec("[run]\nmax_rejected = 3\n"));
    let err = assert_exit(&run(&["run", job.to_str().unwrap()]), 3);
    assert!(
        err.contains("4 rows rejected, more than [run] max_rejected = 3"),
        "{err}"
    );
    assert!(
        err.contains("1 x malformed CSV record: expected 3 fields, found 2"),
        "{err}"
    );
    assert!(!s.path("out/x").exists(), "nothing committed");
    assert_eq!(
        std::fs::read_dir(s.path("out")).unwrap().count(),
        0,
        "staging removed"
    );
}

/// This machine's ONNX Runtime is the CPU build: CUDA cannot be had. Asking for it is refused
/// before any work, unless the spec allows the CPU, and then the run says so.
#[test]
fn cuda_where_there_is_none_is_refused_or_falls_back_only_when_allowed() {
    let s = Scratch::new();
    let churn = |run: &str| {
        std::fs::read_to_string(repo().join("jobs/churn.toml"))
            .unwrap()
            .replace("../out/churn/ds=${ds}/", "../out/x/")
            .replace("[run]\n", &format!("[run]\n{run}\n"))
    };
    let job = s.job("gpu.toml", &churn("device = \"cuda\"\ndevice_id = 0"));
    let err = refused(
        &s,
        &job,
        &[
            "[run.device]: cuda:0: ONNX Runtime cannot use it (",
            "must be the onnxruntime-gpu wheel's",
            "fallback = \"cpu\"",
        ],
    );
    assert!(
        err.contains("libonnxruntime.so"),
        "names the library: {err}"
    );

    let job = s.job(
        "fallback.toml",
        &churn("device = \"cuda\"\nfallback = \"cpu\""),
    );
    let o = run(&["run", job.to_str().unwrap()]);
    assert_ok(&o);
    let stderr = text(&o).1;
    assert!(
        stderr.contains("running on the CPU, as [run] fallback = \"cpu\" allows"),
        "the fallback is never silent: {stderr}"
    );
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(s.path("out/x/_metrics.json")).unwrap())
            .unwrap();
    assert_eq!(m["device"], "cpu");
    let expected = read_parquet(std::path::Path::new(&sample("churn/expected.parquet")));
    assert_matches(
        &read_output(&s.path("out/x")),
        &expected,
        "customer_id",
        &["region", "churn_probability", "churn_label"],
    );
}

/// A malformed record under a hive partition folder: the partition column is never null in
/// the input, but the rejected row has no value to trust in it. (Its batch was refused as
/// invalid, failing the run, until `_rejected/` made every pass-through column nullable.)
#[test]
fn a_malformed_row_in_a_partition_folder_is_rejected_with_null_pass_through_columns() {
    let s = Scratch::new();
    std::fs::create_dir_all(s.path("data/region=eu")).unwrap();
    std::fs::write(
        s.path("data/region=eu/d.csv"),
        "row_id,a,b\n1,2,3\n2,4\n3,6,7\n",
    )
    .unwrap();
    let job = s.job(
        "hive.toml",
        &format!(
            "name = \"hive\"\n[input]\nuri = \"../data/\"\n[model]\nuri = \"{}\"\n[output]\nuri = \"../out/x/\"\npassthrough = [\"row_id\", \"region\"]\n",
            sample("synthetic/rank1_int.onnx")
        ),
    );
    assert_ok(&run(&["run", job.to_str().unwrap()]));
    let out = read_output(&s.path("out/x"));
    assert_eq!(out["row_id"], [Cell::Int(1), Cell::Int(3)]);
    assert_eq!(texts(&out["region"]), ["eu", "eu"]);
    let rejected = read_rejected(&s.path("out/x"));
    assert_eq!(rejected["row_id"], [Cell::Null]);
    assert_eq!(rejected["region"], [Cell::Null]);
    assert_eq!(
        texts(&rejected["_reason"]),
        [format!(
            "{} line 3: malformed CSV record: expected 3 fields, found 2",
            s.path("data/region=eu/d.csv").display()
        )]
    );
}
