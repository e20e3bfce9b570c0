//! Every sample job, and every input and output layout, scored by the real binary and
//! compared row by row with onnxruntime's own outputs (sample_data/*/expected.parquet).

mod common;
use common::*;

#[test]
fn churn_lightgbm_hive_partitions_query_and_sql_features() {
    let s = Scratch::new();
    let job = s.repo_job("churn");
    let o = run(&["run", job.to_str().unwrap(), "--var", "ds=2026-11-27"]);
    assert_ok(&o);
    let out = s.path("out/churn/ds=2026-11-27");
    let (stdout, _) = text(&o);
    assert!(
        stdout.starts_with("churn-nightly: 1941 rows scored in ")
            && stdout.contains(", 0 rejected -> ")
            && stdout.contains("out/churn/ds=2026-11-27 ("),
        "{stdout}"
    );
    let got = read_output(&out);
    let expected = read_parquet(std::path::Path::new(&sample("churn/expected.parquet")));
    assert_matches(
        &got,
        &expected,
        "customer_id",
        &["region", "churn_probability", "churn_label"],
    );
    // Pass-through columns first, then [outputs] in the order written.
    assert_eq!(
        got.keys()
            .cloned()
            .collect::<std::collections::BTreeSet<_>>(),
        ["churn_label", "churn_probability", "customer_id", "region"]
            .map(String::from)
            .into()
    );
}

#[test]
fn sklearn_pipeline_string_inputs_and_zipmap() {
    let s = Scratch::new();
    let job = s.repo_job("plans");
    assert_ok(&run(&["run", job.to_str().unwrap()]));
    let got = read_output(&s.path("out/plans"));
    let expected = read_parquet(std::path::Path::new(&sample("plans/expected.parquet")));
    assert_matches(
        &got,
        &expected,
        "account",
        &["output_label", "output_probability", "p_upgrade"],
    );
}

#[test]
fn every_output_by_default_and_yaml_spec() {
    // No [inputs] and no [outputs]: inputs from same-named columns, every output a column.
    let s = Scratch::new();
    let job = s.job(
        "plans.yaml",
        &format!(
            "name: plans-default\ninput:\n  uri: {}\nmodel:\n  uri: {}\noutput:\n  uri: ../out/p/\n  passthrough: [account]\n",
            sample("plans/accounts.parquet"),
            sample("plans/plans_pipeline.onnx")
        ),
    );
    assert_ok(&run(&["run", job.to_str().unwrap()]));
    let got = read_output(&s.path("out/p"));
    let expected = read_parquet(std::path::Path::new(&sample("plans/expected.parquet")));
    assert_matches(
        &got,
        &expected,
        "account",
        &["output_label", "output_probability"],
    );
    assert_eq!(got.len(), 3, "{:?}", got.keys());
}

#[test]
fn regression_float64_from_gzip_csv_to_csv() {
    let s = Scratch::new();
    let job = s.repo_job("houses");
    assert_ok(&run(&["run", job.to_str().unwrap()]));
    let out = s.path("out/houses");
    let manifest = std::fs::read_to_string(out.join("_manifest.json")).unwrap();
    assert!(manifest.contains(".csv\""), "{manifest}");
    let got = read_output(&out);
    let expected = read_parquet(std::path::Path::new(&sample("houses/expected.parquet")));
    assert_matches(&got, &expected, "house_id", &["price"]);
}

#[test]
fn xgboost_classifier() {
    let s = Scratch::new();
    let job = s.repo_job("fraud");
    assert_ok(&run(&["run", job.to_str().unwrap()]));
    let got = read_output(&s.path("out/fraud"));
    let expected = read_parquet(std::path::Path::new(&sample("fraud/expected.parquet")));
    assert_matches(
        &got,
        &expected,
        "txn_id",
        &["fraud_probability", "fraud_label"],
    );
}

#[test]
fn int_rank1_inputs_with_casts_and_bool_int32_outputs() {
    // a is int16 and b int64 in the file; the model takes int64 [N] and int32 [N].
    let s = Scratch::new();
    let job = s.job(
        "rank1.toml",
        &format!(
            r#"
name = "rank1"
[input]
uri = "{}"
[model]
uri = "{}"
[output]
uri = "../out/r/"
passthrough = ["row_id"]
"#,
            sample("synthetic/rows.parquet"),
            sample("synthetic/rank1_int.onnx")
        ),
    );
    assert_ok(&run(&["run", job.to_str().unwrap()]));
    let got = read_output(&s.path("out/r"));
    let expected = read_parquet(std::path::Path::new(&sample("synthetic/expected.parquet")));
    assert_matches(&got, &expected, "row_id", &["y", "big", "bucket"]);
}

#[test]
fn fixed_batch_dimension_is_scored_in_chunks() {
    // The model takes exactly [1, 4]; 257 rows in batches of 100 need padding-free chunks of one.
    let s = Scratch::new();
    let job = s.job(
        "fixed.toml",
        &format!(
            r#"
name = "fixed"
[input]
uri = "{}"
[model]
uri = "{}"
[inputs.x]
columns = ["x0", "x1", "x2", "x3"]
[output]
uri = "../out/f/"
passthrough = ["row_id"]
[outputs]
scores = "scores"
score_2 = "scores[2]"
label = "label"
[run]
batch_size = 100
workers = 3
"#,
            sample("synthetic/rows.parquet"),
            sample("synthetic/fixed_batch.onnx")
        ),
    );
    assert_ok(&run(&["run", job.to_str().unwrap()]));
    let got = read_output(&s.path("out/f"));
    let expected = read_parquet(std::path::Path::new(&sample("synthetic/expected.parquet")));
    assert_matches(&got, &expected, "row_id", &["scores", "score_2", "label"]);
}

/// Runs `text`, a variant of `jobs/fraud.toml` writing to `out/fraud`, checks every score
/// against onnxruntime's, and returns the committed manifest.
fn fraud_scored_as_expected(s: &Scratch, name: &str, text: &str) -> serde_json::Value {
    let job = s.job(name, text);
    assert_ok(&run(&["run", job.to_str().unwrap()]));
    let out = s.path("out/fraud");
    let expected = read_parquet(std::path::Path::new(&sample("fraud/expected.parquet")));
    assert_matches(
        &read_output(&out),
        &expected,
        "txn_id",
        &["fraud_probability", "fraud_label"],
    );
    serde_json::from_str(&std::fs::read_to_string(out.join("_manifest.json")).unwrap()).unwrap()
}

#[test]
fn batch_sizes_workers_and_file_rollover_do_not_change_results() {
    let s = Scratch::new();
    let text = std::fs::read_to_string(repo().join("jobs/fraud.toml"))
        .unwrap()
        .replace(
            "batch_size = 500",
            "batch_size = 7\ninference_batch_size = 3\nworkers = 3",
        )
        .replace(
            "mode = \"overwrite\"",
            "mode = \"overwrite\"\nmax_rows_per_file = 300",
        );
    let manifest = fraud_scored_as_expected(&s, "fraud-small.toml", &text);
    let files = manifest["files"].as_array().unwrap();
    assert!(
        files.len() >= 9,
        "2500 rows at 300 per file: {} files",
        files.len()
    );
    assert!(files.iter().all(|f| f["rows"].as_u64().unwrap() <= 300));
}

/// Two files of 2000 and 500 rows, two workers: every row is scored as onnxruntime scores it
/// and written once. (Which worker takes which batch is up to the moment: `work_queue`'s
/// tests hold that a batch goes to whichever worker asks for one.)
#[test]
fn unequal_files_are_scored_once_by_two_workers() {
    use datafusion::parquet::arrow::ArrowWriter;
    use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let s = Scratch::new();
    let source = std::fs::File::open(sample("fraud/transactions.parquet")).unwrap();
    let reader = ParquetRecordBatchReaderBuilder::try_new(source)
        .unwrap()
        .with_batch_size(2500)
        .build()
        .unwrap();
    let all = reader.map(|b| b.unwrap()).next().unwrap();
    assert_eq!(all.num_rows(), 2500);
    std::fs::create_dir(s.path("in")).unwrap();
    for (name, offset, len) in [("a.parquet", 0, 2000), ("b.parquet", 2000, 500)] {
        let file = std::fs::File::create(s.path("in").join(name)).unwrap();
        let mut w = ArrowWriter::try_new(file, all.schema(), None).unwrap();
        w.write(&all.slice(offset, len)).unwrap();
        w.close().unwrap();
    }
    let text = std::fs::read_to_string(repo().join("jobs/fraud.toml"))
        .unwrap()
        .replace("../sample_data/fraud/transactions.parquet", "../in/")
        .replace("batch_size = 500", "batch_size = 50\nworkers = 2");
    let manifest = fraud_scored_as_expected(&s, "fraud-dealt.toml", &text);
    let rows: Vec<u64> = manifest["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["rows"].as_u64().unwrap())
        .collect();
    assert!(rows.len() <= 2, "at most one part per worker: {manifest}");
    assert_eq!(rows.iter().sum::<u64>(), 2500, "{manifest}");
}

/// A tree ensemble scores each batch's rows sorted by its splits; every prediction still lands
/// on its own row, rows stay in input order, and rows rejected in between do not move the rest.
#[test]
fn tree_ensembles_score_sorted_rows_and_write_them_in_input_order() {
    let s = Scratch::new();
    let base = std::fs::read_to_string(repo().join("jobs/fraud.toml")).unwrap();
    // A fifth of the transactions lose x2 (no fill_null): rejected, left out of the sort.
    let base = base.replace(
        "\"x2\"",
        "\"CASE WHEN txn_id % 5 = 0 THEN NULL ELSE x2 END\"",
    );
    let mut expected = read_parquet(std::path::Path::new(&sample("fraud/expected.parquet")));
    let keep: Vec<bool> = expected["txn_id"]
        .iter()
        .map(|k| !matches!(k, Cell::Int(id) if id % 5 == 0))
        .collect();
    assert!(keep.iter().any(|k| !k), "some rows are rejected");
    for column in expected.values_mut() {
        let mut flags = keep.iter();
        column.retain(|_| *flags.next().unwrap());
    }
    let mut written = Vec::new();
    for reorder in [true, false] {
        let job = s.job(
            &format!("fraud-{reorder}.toml"),
            &base.replace(
                "batch_size = 500",
                &format!("batch_size = 500\nworkers = 1\nreorder_rows = {reorder}"),
            ),
        );
        assert_ok(&run(&["run", job.to_str().unwrap()]));
        let out = s.path("out/fraud");
        let got = read_output(&out);
        assert_matches(
            &got,
            &expected,
            "txn_id",
            &["fraud_probability", "fraud_label"],
        );
        let m: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("_metrics.json")).unwrap())
                .unwrap();
        assert_eq!(m["rows_reordered"], reorder, "{m}");
        assert_eq!(m["rows"]["rejected"], keep.iter().filter(|k| !**k).count());
        written.push(got);
    }
    // One worker writes one part in input order, whichever order its rows were scored in;
    // the scores are the same numbers, not merely close ones.
    assert_eq!(written[0]["txn_id"], expected["txn_id"]);
    assert_eq!(written[0], written[1]);
}

/// A query's batches are taken by the workers in the query's order, so an `ORDER BY` orders
/// each part.
#[test]
fn a_query_order_by_orders_each_part() {
    let s = Scratch::new();
    let text = std::fs::read_to_string(repo().join("jobs/fraud.toml"))
        .unwrap()
        .replace(
            "[input]",
            "[input]\nquery = \"SELECT * FROM input ORDER BY txn_id DESC\"",
        )
        .replace("batch_size = 500", "batch_size = 100\nworkers = 2");
    let manifest = fraud_scored_as_expected(&s, "fraud-ordered.toml", &text);
    let parts = manifest["files"].as_array().unwrap();
    let mut rows = 0;
    for part in parts {
        let path = s.path("out/fraud").join(part["path"].as_str().unwrap());
        let keys: Vec<i64> = read_parquet(&path)["txn_id"]
            .iter()
            .map(|c| match c {
                Cell::Int(k) => *k,
                other => panic!("txn_id {other:?}"),
            })
            .collect();
        assert!(
            keys.windows(2).all(|w| w[0] > w[1]),
            "{} is not in descending txn_id order",
            path.display()
        );
        rows += keys.len();
    }
    assert_eq!(rows, 2500, "{manifest}");
}

#[test]
fn csv_options_headerless_semicolons_and_a_glob() {
    let s = Scratch::new();
    std::fs::create_dir(s.path("csv")).unwrap();
    // rows of rank1's model: row_id;a;b, split over two files matched by a glob.
    std::fs::write(s.path("csv/p1.txt.csv"), "0;3;4\n1;-8;2\n").unwrap();
    std::fs::write(s.path("csv/p2.txt.csv"), "2;30;-1\n").unwrap();
    std::fs::write(s.path("csv/ignored.parquet.bak"), "not data").unwrap();
    let job = s.job(
        "csv.toml",
        &format!(
            r#"
name = "csv"
[input]
uri = "../csv/*.csv"
[input.csv]
has_header = false
delimiter = ";"
[model]
uri = "{}"
[inputs.a]
columns = ["column_2"]
[inputs.b]
columns = ["column_3"]
[output]
uri = "../out/c/"
format = "csv"
passthrough = ["column_1"]
"#,
            sample("synthetic/rank1_int.onnx")
        ),
    );
    assert_ok(&run(&["run", job.to_str().unwrap()]));
    let got = read_output(&s.path("out/c"));
    let mut rows: Vec<(i64, f64, bool, i64)> = (0..3)
        .map(|i| {
            let Cell::Int(k) = got["column_1"][i] else {
                panic!()
            };
            let Cell::Float(y) = got["y"][i] else {
                panic!()
            };
            let Cell::Bool(big) = got["big"][i] else {
                panic!()
            };
            let Cell::Int(bucket) = got["bucket"][i] else {
                panic!()
            };
            (k, y, big, bucket)
        })
        .collect();
    rows.sort_by_key(|r| r.0);
    // y = 0.5 a + b; big = y > 10; bucket = a mod 5 (ONNX Mod on int64 follows the divisor's sign).
    assert_eq!(
        rows,
        vec![(0, 5.5, false, 3), (1, -2.0, false, 2), (2, 14.0, true, 0)]
    );
}

#[test]
fn empty_selection_commits_an_empty_output() {
    let s = Scratch::new();
    let text = std::fs::read_to_string(repo().join("jobs/churn.toml"))
        .unwrap()
        .replace("WHERE region <> 'apac'", "WHERE region = 'nowhere'");
    let job = s.job("empty.toml", &text);
    let o = run(&["run", job.to_str().unwrap(), "--var", "ds=e"]);
    assert_ok(&o);
    let got = read_output(&s.path("out/churn/ds=e"));
    assert_eq!(got.get("customer_id").map(Vec::len).unwrap_or(0), 0);
    assert!(
        got.contains_key("churn_probability"),
        "the empty part carries the schema: {:?}",
        got.keys()
    );
}

#[test]
fn metrics_file_accounts_for_every_row() {
    let s = Scratch::new();
    let job = s.repo_job("churn");
    assert_ok(&run(&[
        "run",
        job.to_str().unwrap(),
        "--var",
        "ds=m",
        "--log-format",
        "json",
    ]));
    let m: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(s.path("out/churn/ds=m/_metrics.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(m["job_name"], "churn-nightly");
    assert_eq!(m["rows"]["selected"], 1941);
    assert_eq!(m["rows"]["scored"], 1941);
    assert_eq!(m["rows"]["written"], 1941);
    assert_eq!(m["rows"]["rejected"], 0);
    // The query prunes apac's folder before reading: only eu and us files are read.
    assert_eq!(m["rows"]["read"], 1941);
    assert!(m["batches"].as_u64().unwrap() >= 2);
    // Stage times are summed over the workers: together they fit in the workers' wall time,
    // and scoring 1941 rows through ONNX Runtime takes some of it.
    let stage = |name: &str| m["stage_seconds"][name].as_f64().unwrap();
    let workers = m["workers"].as_f64().unwrap();
    let wall = m["wall_seconds"].as_f64().unwrap();
    let stages: f64 = ["read", "features", "inference", "write"]
        .iter()
        .map(|s| stage(s))
        .sum();
    assert!(
        stages <= wall * workers,
        "{stages} s in stages, {wall} s wall"
    );
    assert!(stage("inference") > 0.0 && stage("features") > 0.0, "{m}");
    let lat = &m["batch_latency_seconds"];
    assert!(lat["p50"].as_f64().unwrap() <= lat["p95"].as_f64().unwrap());
    assert!(lat["p95"].as_f64().unwrap() <= lat["p99"].as_f64().unwrap());
    assert!(m["rows_per_second"].as_f64().unwrap() > 0.0);
    assert_eq!(m["model"]["inputs"][0]["name"], "features");
    assert_eq!(m["model"]["inputs"][0]["dtype"], "float32");
    assert_eq!(m["model"]["outputs"][1]["name"], "probabilities");
    let sha = m["model"]["sha256"].as_str().unwrap();
    let job_text = std::fs::read_to_string(&job).unwrap();
    assert!(
        job_text.contains(sha),
        "the metrics report the pinned sha256"
    );
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(s.path("out/churn/ds=m/_manifest.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(manifest["model_sha256"], sha);
    assert_eq!(manifest["spec_hash"].as_str().unwrap().len(), 64);
    assert_eq!(manifest["run_id"], m["run_id"]);
}

#[test]
fn file_url_explicit_format_and_quote_character() {
    // A CSV under a name that tells no format, with a quote character other than `"`.
    let s = Scratch::new();
    std::fs::write(s.path("rows.dat"), "id,a,b\n'k,1',4,1\n'k,2',-6,30\n").unwrap();
    let job = s.job(
        "q.toml",
        &format!(
            r#"
name = "quoted"
[input]
uri = "file://{}"
format = "csv"
[input.csv]
quote = "'"
[model]
uri = "file://{}"
[output]
uri = "../out/q/"
passthrough = ["id"]
[outputs]
y = "y"
"#,
            s.path("rows.dat").display(),
            sample("synthetic/rank1_int.onnx")
        ),
    );
    assert_ok(&run(&["run", job.to_str().unwrap()]));
    let got = read_output(&s.path("out/q"));
    let mut rows: Vec<_> = got["id"]
        .iter()
        .cloned()
        .zip(got["y"].iter().cloned())
        .collect();
    rows.sort_by(|a, b| format!("{:?}", a.0).cmp(&format!("{:?}", b.0)));
    assert_eq!(
        rows,
        vec![
            (Cell::Text("k,1".into()), Cell::Float(3.0)),
            (Cell::Text("k,2".into()), Cell::Float(27.0))
        ]
    );
}

#[test]
fn json_logs_are_one_object_per_line() {
    let s = Scratch::new();
    let job = s.repo_job("fraud");
    let o = batchscore()
        .args(["run", job.to_str().unwrap(), "--log-format", "json"])
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    assert_ok(&o);
    let (_, err) = text(&o);
    let lines: Vec<serde_json::Value> = err
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(
        lines
            .iter()
            .any(|v| v["fields"]["message"] == "starting run"),
        "{err}"
    );
    assert!(
        lines
            .iter()
            .any(|v| v["fields"]["message"] == "committed" && v["fields"]["rows"] == 2500),
        "{err}"
    );
}

#[test]
fn values_that_cannot_be_cast_are_rejected_row_by_row() {
    // Row 1's `a` is not a number; row 3's `b` overflows the model's int32.
    let s = Scratch::new();
    std::fs::write(
        s.path("bad.csv"),
        "row_id,a,b\n0,1,2\n1,abc,3\n2,4,5\n3,6,3000000000\n",
    )
    .unwrap();
    let job = s.job(
        "bad.toml",
        &format!(
            "name = \"bad\"\n[input]\nuri = \"../bad.csv\"\n[model]\nuri = \"{}\"\n[output]\nuri = \"../out/b/\"\npassthrough = [\"row_id\"]\n",
            sample("synthetic/rank1_int.onnx")
        ),
    );
    let o = run(&["run", job.to_str().unwrap()]);
    assert_ok(&o);
    assert!(text(&o).0.contains(", 2 rejected -> "), "{}", text(&o).0);
    let got = read_output(&s.path("out/b"));
    let mut scored: Vec<(Cell, Cell)> = got["row_id"]
        .iter()
        .cloned()
        .zip(got["y"].iter().cloned())
        .collect();
    scored.sort_by_key(|(k, _)| format!("{k:?}"));
    // y = 0.5 a + b
    assert_eq!(
        scored,
        vec![
            (Cell::Int(0), Cell::Float(2.5)),
            (Cell::Int(2), Cell::Float(7.0))
        ]
    );

    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(s.path("out/b/_manifest.json")).unwrap())
            .unwrap();
    let mut rejected = Table::new();
    for f in manifest["rejected_files"].as_array().unwrap() {
        for (k, v) in read_parquet(&s.path("out/b").join(f["path"].as_str().unwrap())) {
            rejected.entry(k).or_default().extend(v);
        }
    }
    let mut rows: Vec<(Cell, Cell, Cell, Cell)> = (0..rejected["row_id"].len())
        .map(|i| {
            (
                rejected["row_id"][i].clone(),
                rejected["_stage"][i].clone(),
                rejected["_reason"][i].clone(),
                rejected["_value"][i].clone(),
            )
        })
        .collect();
    rows.sort_by_key(|r| format!("{:?}", r.0));
    let t = |s: &str| Cell::Text(s.into());
    assert_eq!(
        rows,
        vec![
            (
                Cell::Int(1),
                t("features"),
                t("column \"a\": cannot be cast to int64"),
                t("abc")
            ),
            (
                Cell::Int(3),
                t("features"),
                t("column \"b\": cannot be cast to int32"),
                t("3000000000")
            ),
        ]
    );
}

#[test]
fn rows_onnx_runtime_fails_on_are_isolated_and_rejected_alone() {
    // The model gathers from a table of 10; rows 17, 123 and 250 hold indexes out of range,
    // and ONNX Runtime refuses any batch that holds one of them.
    let s = Scratch::new();
    let job = s.job(
        "lookup.toml",
        &format!(
            r#"
name = "lookup"
[input]
uri = "{}"
[model]
uri = "{}"
[output]
uri = "../out/l/"
passthrough = ["row_id"]
[run]
batch_size = 64
"#,
            sample("synthetic/lookup.parquet"),
            sample("synthetic/lookup.onnx")
        ),
    );
    let o = run(&["run", job.to_str().unwrap()]);
    assert_ok(&o);
    assert!(text(&o).0.contains(", 3 rejected -> "), "{}", text(&o).0);
    let expected = read_parquet(std::path::Path::new(&sample(
        "synthetic/lookup_expected.parquet",
    )));
    assert_matches(
        &read_output(&s.path("out/l")),
        &expected,
        "row_id",
        &["value"],
    );

    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(s.path("out/l/_manifest.json")).unwrap())
            .unwrap();
    let mut rejected = Table::new();
    for f in manifest["rejected_files"].as_array().unwrap() {
        for (k, v) in read_parquet(&s.path("out/l").join(f["path"].as_str().unwrap())) {
            rejected.entry(k).or_default().extend(v);
        }
    }
    let mut rows: Vec<(i64, String, String)> = (0..rejected["row_id"].len())
        .map(|i| {
            let Cell::Int(k) = rejected["row_id"][i] else {
                panic!()
            };
            let Cell::Text(reason) = &rejected["_reason"][i] else {
                panic!()
            };
            let Cell::Text(value) = &rejected["_value"][i] else {
                panic!()
            };
            assert_eq!(rejected["_stage"][i], Cell::Text("inference".into()));
            (k, reason.clone(), value.clone())
        })
        .collect();
    rows.sort();
    assert_eq!(
        rows.iter().map(|r| (r.0, r.2.as_str())).collect::<Vec<_>>(),
        [(17, "idx=99"), (123, "idx=-20"), (250, "idx=10")]
    );
    for (_, reason, _) in &rows {
        assert!(
            reason.starts_with("ONNX Runtime failed on this row: ")
                && reason.contains("indices element out of data bounds"),
            "{reason}"
        );
    }
}

#[test]
fn non_finite_inputs_are_kept_or_rejected_and_non_finite_outputs_counted() {
    use datafusion::arrow::array::{ArrayRef, Float32Array, Int64Array, RecordBatch};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;
    let s = Scratch::new();
    let mut fields = vec![Field::new("row_id", DataType::Int64, false)];
    fields.extend((0..4).map(|j| Field::new(format!("x{j}"), DataType::Float32, false)));
    let schema = Arc::new(Schema::new(fields));
    let mut cols: Vec<ArrayRef> = vec![Arc::new(Int64Array::from_iter_values(0..6))];
    for j in 0..4 {
        let mut v: Vec<f32> = (0..6).map(|i| (i * 4 + j) as f32 / 10.0).collect();
        if j == 2 {
            v[1] = f32::NAN;
        }
        if j == 0 {
            v[4] = f32::INFINITY;
        }
        cols.push(Arc::new(Float32Array::from(v)));
    }
    let file = std::fs::File::create(s.path("nf.parquet")).unwrap();
    let mut w =
        datafusion::parquet::arrow::ArrowWriter::try_new(file, schema.clone(), None).unwrap();
    w.write(&RecordBatch::try_new(schema, cols).unwrap())
        .unwrap();
    w.close().unwrap();
    let spec = |name: &str, extra: &str| {
        format!(
            "name = \"nf\"\n[input]\nuri = \"../nf.parquet\"\n[model]\nuri = \"{}\"\n[inputs.x]\ncolumns = [\"x0\", \"x1\", \"x2\", \"x3\"]\n{extra}\n[output]\nuri = \"../out/{name}/\"\npassthrough = [\"row_id\"]\n[outputs]\nscore_2 = \"scores[2]\"\n",
            sample("synthetic/fixed_batch.onnx")
        )
    };
    let metrics = |name: &str| -> serde_json::Value {
        serde_json::from_str(
            &std::fs::read_to_string(s.path(&format!("out/{name}/_metrics.json"))).unwrap(),
        )
        .unwrap()
    };

    // reject: the NaN and the +inf rows go to _rejected/ with the value.
    let job = s.job("reject.toml", &spec("r", "on_non_finite = \"reject\""));
    assert_ok(&run(&["run", job.to_str().unwrap()]));
    let m = metrics("r");
    assert_eq!(m["rows"]["rejected"], 2);
    assert_eq!(m["non_finite_outputs"], 0);
    let reasons: Vec<&str> = m["rejected_reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["reason"].as_str().unwrap())
        .collect();
    assert_eq!(
        reasons,
        [
            "column \"x0\": not finite, and [inputs.x] sets on_non_finite = \"reject\"",
            "column \"x2\": not finite, and [inputs.x] sets on_non_finite = \"reject\""
        ]
    );
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(s.path("out/r/_manifest.json")).unwrap())
            .unwrap();
    let mut values = Vec::new();
    for f in manifest["rejected_files"].as_array().unwrap() {
        let t = read_parquet(&s.path("out/r").join(f["path"].as_str().unwrap()));
        values.extend(t["row_id"].iter().cloned().zip(t["_value"].iter().cloned()));
    }
    values.sort_by_key(|v| format!("{:?}", v.0));
    assert_eq!(
        values,
        [
            (Cell::Int(1), Cell::Text("NaN".into())),
            (Cell::Int(4), Cell::Text("inf".into()))
        ]
    );

    // keep (the default): every row is scored, as onnxruntime would, and the NaN outputs counted.
    let job = s.job("keep.toml", &spec("k", ""));
    assert_ok(&run(&["run", job.to_str().unwrap()]));
    let m = metrics("k");
    assert_eq!(m["rows"]["rejected"], 0);
    assert_eq!(m["rows"]["scored"], 6);
    assert!(
        m["non_finite_outputs"].as_u64().unwrap() >= 2,
        "{}",
        m["non_finite_outputs"]
    );
}
