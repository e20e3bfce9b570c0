//! `batchscore init`: the spec it drafts for each sample model validates and scores as
//! onnxruntime's Python API did (`sample_data/*/expected.parquet`), or names every TODO and
//! fails validation until the TODO is done.

mod common;
use common::*;

use std::path::Path;
use std::process::Output;

/// Runs the binary in the scratch folder (so that relative paths are the user's).
fn in_scratch(s: &Scratch, args: &[&str]) -> Output {
    batchscore()
        .current_dir(s.dir.path())
        .args(args)
        .output()
        .unwrap()
}

/// `init MODEL INPUT -o jobs/NAME.toml`, then `validate`, then `run`; returns the spec's
/// text and the committed output, read from `jobs/out/<model stem>/`.
fn init_validate_run(s: &Scratch, model: &str, input: &str, name: &str) -> (toml::Value, Table) {
    let spec = format!("jobs/{name}.toml");
    assert_ok(&in_scratch(s, &["init", model, input, "-o", &spec]));
    let spec_text = std::fs::read_to_string(s.path(&spec)).unwrap();
    let parsed: toml::Value = toml::from_str(&spec_text).unwrap();
    assert!(todos(&spec_text).is_empty(), "{spec_text}");
    assert!(!spec_text.contains("TODO"), "{spec_text}");
    let v = in_scratch(s, &["validate", &spec]);
    assert_ok(&v);
    assert!(text(&v).0.contains(": OK"), "{}", text(&v).0);
    assert_ok(&in_scratch(s, &["run", &spec]));
    let stem = Path::new(model).file_stem().unwrap().to_str().unwrap();
    let got = read_output(&s.path(&format!("jobs/out/{stem}")));
    (parsed, got)
}

fn expected(rel: &str) -> Table {
    read_parquet(Path::new(&sample(rel)))
}

/// The columns `[inputs.NAME] columns` lists, or `None` when it has no table (by name).
fn input_columns(spec: &toml::Value, name: &str) -> Option<Vec<String>> {
    let cols = spec.get("inputs")?.get(name)?.get("columns")?.as_array()?;
    Some(
        cols.iter()
            .map(|c| c.as_str().unwrap().to_string())
            .collect(),
    )
}

/// `# TODO [inputs.NAME]:` lines name these inputs, in order.
fn todos(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TODO [inputs."))
        .map(|l| l.split("]:").next().unwrap().to_string())
        .collect()
}

#[test]
fn plans_pipeline_binds_each_input_by_name_and_scores_as_onnxruntime() {
    let s = Scratch::new();
    let (spec, got) = init_validate_run(
        &s,
        "sample_data/plans/plans_pipeline.onnx",
        "sample_data/plans/accounts.parquet",
        "plans",
    );
    // One model input per column: no [inputs] table, the spec's default binds by name.
    assert!(spec.get("inputs").is_none(), "{spec}");
    assert_eq!(
        spec["model"]["uri"].as_str(),
        Some("../sample_data/plans/plans_pipeline.onnx")
    );
    // No key-like column: the one column the model does not read is passed through.
    assert_eq!(spec["output"]["passthrough"][0].as_str(), Some("account"));
    let want = expected("plans/expected.parquet");
    assert_matches(
        &got,
        &want,
        "account",
        &["output_label", "output_probability"],
    );
}

#[test]
fn houses_csv_tensor_input_guesses_the_numeric_columns_in_order() {
    let s = Scratch::new();
    let (spec, got) = init_validate_run(
        &s,
        "sample_data/houses/price_ridge.onnx",
        "sample_data/houses/houses.csv.gz",
        "houses",
    );
    assert_eq!(
        input_columns(&spec, "X").unwrap(),
        ["rooms", "area_m2", "built", "km_to_center"]
    );
    assert_eq!(spec["output"]["passthrough"][0].as_str(), Some("house_id"));
    let mut want = expected("houses/expected.parquet");
    let price = want.remove("price").unwrap();
    want.insert("variable".into(), price);
    assert_matches(&got, &want, "house_id", &["variable"]);
}

#[test]
fn fraud_tensor_input_guesses_x0_to_x5_and_lists_both_outputs() {
    let s = Scratch::new();
    let (spec, mut got) = init_validate_run(
        &s,
        "sample_data/fraud/fraud_xgb.onnx",
        "sample_data/fraud/transactions.parquet",
        "fraud",
    );
    assert_eq!(
        input_columns(&spec, "input").unwrap(),
        ["x0", "x1", "x2", "x3", "x4", "x5"]
    );
    assert_eq!(spec["outputs"]["label"].as_str(), Some("label"));
    assert_eq!(
        spec["outputs"]["probabilities"].as_str(),
        Some("probabilities")
    );
    // The oracle holds class 1's probability; the draft writes both classes' as a list.
    let p1: Vec<Cell> = got["probabilities"]
        .iter()
        .map(|c| match c {
            Cell::List(v) => Cell::Float(v[1]),
            other => panic!("not a list: {other:?}"),
        })
        .collect();
    got.insert("fraud_probability".into(), p1);
    let label = got.remove("label").unwrap();
    got.insert("fraud_label".into(), label);
    let want = expected("fraud/expected.parquet");
    assert_matches(&got, &want, "txn_id", &["fraud_probability", "fraud_label"]);
}

#[test]
fn synthetic_rank1_inputs_bind_by_name_with_casts() {
    let s = Scratch::new();
    let (spec, got) = init_validate_run(
        &s,
        "sample_data/synthetic/rank1_int.onnx",
        "sample_data/synthetic/rows.parquet",
        "rank1",
    );
    assert!(spec.get("inputs").is_none(), "{spec}");
    let want = expected("synthetic/expected.parquet");
    assert_matches(&got, &want, "row_id", &["y", "big", "bucket"]);
}

#[test]
fn synthetic_fixed_batch_input_x_guesses_x0_to_x3_by_index() {
    // rows.parquet has six numeric columns besides row_id (a, b, x0..x3): not the 4 the
    // model takes, but x0..x3 are the columns named after the input `x`.
    let s = Scratch::new();
    let (spec, got) = init_validate_run(
        &s,
        "sample_data/synthetic/fixed_batch.onnx",
        "sample_data/synthetic/rows.parquet",
        "fixed",
    );
    assert_eq!(input_columns(&spec, "x").unwrap(), ["x0", "x1", "x2", "x3"]);
    let want = expected("synthetic/expected.parquet");
    assert_matches(&got, &want, "row_id", &["scores", "label"]);
}

#[test]
fn synthetic_lookup_scores_every_row_onnxruntime_can() {
    let s = Scratch::new();
    let (_, got) = init_validate_run(
        &s,
        "sample_data/synthetic/lookup.onnx",
        "sample_data/synthetic/lookup.parquet",
        "lookup",
    );
    let want = expected("synthetic/lookup_expected.parquet");
    assert_matches(&got, &want, "row_id", &["value"]);
}

#[test]
fn churn_features_is_a_todo_that_validate_refuses_until_done() {
    let s = Scratch::new();
    // Printed, not written: the paths are absolute, the text is TOML.
    let o = in_scratch(
        &s,
        &[
            "init",
            "sample_data/churn/churn_lgbm.onnx",
            "sample_data/churn/data/",
        ],
    );
    assert_ok(&o);
    let (text, err) = text(&o);
    assert_eq!(todos(&text), ["features"], "{text}");
    assert!(err.contains("[inputs.features]"), "{err}");
    let spec: toml::Value = toml::from_str(&text).unwrap();
    assert!(Path::new(spec["model"]["uri"].as_str().unwrap()).is_absolute());
    assert!(
        spec["input"]["uri"]
            .as_str()
            .unwrap()
            .ends_with("/churn/data/")
    );
    assert_eq!(input_columns(&spec, "features").unwrap().len(), 0);
    // Every model output is listed, and the hive partition column is among the candidates.
    let outputs: Vec<&String> = spec["outputs"].as_table().unwrap().keys().collect();
    assert_eq!(outputs, ["label", "probabilities"]);
    assert!(text.contains("region (Dictionary"), "{text}");
    assert_eq!(
        spec["output"]["passthrough"][0].as_str(),
        Some("customer_id")
    );

    let job = s.job("churn.toml", &text);
    let job = job.to_str().unwrap();
    let err = assert_exit(&in_scratch(&s, &["validate", job]), 2);
    assert!(err.contains("inputs.features.columns"), "{err}");

    // Done as jobs/churn.toml does it: validate passes.
    let done = text.replace(
        "columns = []",
        "columns = [\"tenure\", \"monthly_charges\", \"total_charges\", \"ln(1 + support_calls)\", \"is_senior\"]\nfill_null = 0.0",
    );
    let job = s.job("churn.toml", &done);
    assert_ok(&in_scratch(&s, &["validate", job.to_str().unwrap()]));
}

#[test]
fn output_file_is_not_overwritten_without_force() {
    let s = Scratch::new();
    let spec = s.job("taken.toml", "# mine\n");
    let args = |force: bool| {
        let mut a = vec![
            "init",
            "sample_data/houses/price_ridge.onnx",
            "sample_data/houses/houses.csv.gz",
            "-o",
            spec.to_str().unwrap(),
        ];
        if force {
            a.push("--force");
        }
        a
    };
    let err = assert_exit(&in_scratch(&s, &args(false)), 2);
    assert!(
        err.contains("taken.toml") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&spec).unwrap(), "# mine\n");
    assert_ok(&in_scratch(&s, &args(true)));
    let text = std::fs::read_to_string(&spec).unwrap();
    let parsed: toml::Value = toml::from_str(&text).unwrap();
    assert_eq!(parsed["name"].as_str(), Some("price_ridge"));
    // --force needs -o.
    assert_exit(
        &in_scratch(
            &s,
            &[
                "init",
                "sample_data/houses/price_ridge.onnx",
                "sample_data/houses/houses.csv.gz",
                "--force",
            ],
        ),
        2,
    );
}

#[test]
fn unreadable_model_or_input_is_refused_naming_it() {
    let s = Scratch::new();
    let model = "sample_data/houses/price_ridge.onnx";
    let input = "sample_data/houses/houses.csv.gz";
    for (m, i, named) in [
        ("no/such/model.onnx", input, "no/such/model.onnx"),
        (input, input, "houses.csv.gz"),
        (model, "no/such/data.parquet", "no/such/data.parquet"),
        (
            model,
            "sample_data/houses/price_ridge.onnx",
            "price_ridge.onnx",
        ),
    ] {
        let err = assert_exit(&in_scratch(&s, &["init", m, i, "-o", "jobs/x.toml"]), 2);
        assert!(err.contains(named), "{m} {i}: {err}");
        assert!(!s.path("jobs/x.toml").exists(), "{m} {i}: wrote a spec");
    }
}

#[test]
fn help_has_an_example() {
    let o = run(&["init", "--help"]);
    assert_ok(&o);
    assert!(
        text(&o)
            .0
            .contains("batchscore init sample_data/houses/price_ridge.onnx"),
        "{}",
        text(&o).0
    );
}

/// In an S3 server (moto, started by `scripts/test`): the model and the data are read from
/// the bucket with the environment's endpoint and credentials, the spec keeps their s3://
/// URIs, and it scores as onnxruntime did.
#[test]
fn model_and_data_in_a_bucket() {
    use object_store::aws::AmazonS3Builder;
    use object_store::{ObjectStoreExt, PutPayload};
    const ACCESS_KEY: &str = "AKIABATCHSCORETESTKEY";
    const SECRET_KEY: &str = "batchscore-test-secret-d41d8cd98f00b204e980";
    let endpoint = std::env::var("BATCHSCORE_TEST_S3_ENDPOINT").expect(
        "BATCHSCORE_TEST_S3_ENDPOINT is not set: run the tests with scripts/test, which starts an S3 server (moto)",
    );
    let bucket = format!("init-{}", std::process::id());
    let addr = endpoint.trim_start_matches("http://");
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    use std::io::{Read, Write};
    write!(
        c,
        "PUT /{bucket} HTTP/1.1\r\nContent-Length: 0\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut reply = String::new();
    c.read_to_string(&mut reply).unwrap();
    assert!(reply.starts_with("HTTP/1.1 200"), "CreateBucket: {reply}");
    let store = AmazonS3Builder::new()
        .with_endpoint(&endpoint)
        .with_allow_http(true)
        .with_bucket_name(&bucket)
        .with_region("us-east-1")
        .with_access_key_id(ACCESS_KEY)
        .with_secret_access_key(SECRET_KEY)
        .build()
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for (file, key) in [
        ("fraud/fraud_xgb.onnx", "models/fraud_xgb.onnx"),
        ("fraud/transactions.parquet", "data/part-0.parquet"),
    ] {
        let bytes = std::fs::read(sample(file)).unwrap();
        rt.block_on(store.put(&key.into(), PutPayload::from(bytes)))
            .unwrap();
    }

    let s = Scratch::new();
    let s3 = |args: &[&str]| {
        batchscore()
            .current_dir(s.dir.path())
            .args(args)
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ENDPOINT_URL", &endpoint)
            .env("AWS_ALLOW_HTTP", "true")
            .env("BATCHSCORE_CACHE", s.path("cache"))
            .output()
            .unwrap()
    };
    let model = format!("s3://{bucket}/models/fraud_xgb.onnx");
    let data = format!("s3://{bucket}/data/");
    assert_ok(&s3(&["init", &model, &data, "-o", "jobs/fraud.toml"]));
    let text = std::fs::read_to_string(s.path("jobs/fraud.toml")).unwrap();
    let spec: toml::Value = toml::from_str(&text).unwrap();
    assert_eq!(spec["model"]["uri"].as_str(), Some(model.as_str()));
    assert_eq!(spec["input"]["uri"].as_str(), Some(data.as_str()));
    assert_eq!(
        input_columns(&spec, "input").unwrap(),
        ["x0", "x1", "x2", "x3", "x4", "x5"]
    );
    assert_ok(&s3(&["validate", "jobs/fraud.toml"]));
    assert_ok(&s3(&["run", "jobs/fraud.toml"]));
    let mut got = read_output(&s.path("jobs/out/fraud_xgb"));
    let label = got.remove("label").unwrap();
    got.insert("fraud_label".into(), label);
    assert_matches(
        &got,
        &expected("fraud/expected.parquet"),
        "txn_id",
        &["fraud_label"],
    );

    // A key that is not there is refused, naming it.
    let missing = format!("s3://{bucket}/models/nope.onnx");
    let err = assert_exit(&s3(&["init", &missing, &data]), 2);
    assert!(err.contains(&missing), "{err}");
}
