//! `batchscore sql`: the real binary, its predictions compared with the oracle's
//! (`sample_data/*/expected.parquet`, computed by onnxruntime's Python API), its refusals and
//! its all-or-nothing `-o`.

mod common;
use common::*;

use std::path::Path;

const CHURN: &str = "churn=sample_data/churn/churn_lgbm.onnx";

/// The churn features as the job spec maps them, `total` standing for total_charges.
fn churn_features(total: &str) -> String {
    format!("tenure, monthly_charges, {total}, ln(1 + support_calls), is_senior")
}

/// Runs `batchscore sql` in the scratch folder (where `sample_data` is linked).
fn sql(s: &Scratch, args: &[&str]) -> std::process::Output {
    batchscore()
        .arg("sql")
        .args(args)
        .current_dir(s.dir.path())
        .output()
        .unwrap()
}

/// The rows of `t` for which `keep(row)` holds.
fn filter(t: &Table, keep: impl Fn(&Table, usize) -> bool) -> Table {
    let n = t.values().next().map_or(0, Vec::len);
    let rows: Vec<usize> = (0..n).filter(|&i| keep(t, i)).collect();
    t.iter()
        .map(|(k, v)| (k.clone(), rows.iter().map(|&i| v[i].clone()).collect()))
        .collect()
}

fn in_region(region: &'static str) -> impl Fn(&Table, usize) -> bool {
    move |t, i| t["region"][i] == Cell::Text(region.into())
}

fn expected(name: &str) -> Table {
    read_parquet(Path::new(&sample(&format!("{name}/expected.parquet"))))
}

/// The churn input's rows of a region, read from its hive folder (region is the folder's).
fn churn_input(region: &str) -> Table {
    let dir = Path::new(&sample("churn/data")).join(format!("region={region}"));
    let mut all = Table::new();
    for name in names_in(&dir) {
        for (k, v) in read_parquet(&dir.join(name)) {
            all.entry(k).or_default().extend(v);
        }
    }
    all
}

#[test]
fn the_issues_churn_query_matches_the_oracle_with_null_rows_null_and_counted() {
    let s = Scratch::new();
    let query = format!(
        "SELECT customer_id, predict_output('churn', 'probabilities[1]', {}) AS p FROM 'sample_data/churn/data/' WHERE region = 'eu'",
        churn_features("total_charges")
    );
    let out = s.path("eu.parquet");
    let o = sql(&s, &[&query, "--model", CHURN, "-o", out.to_str().unwrap()]);
    assert_ok(&o);
    let got = read_parquet(&out);
    let input = churn_input("eu");
    let null_ids: Vec<Cell> = (0..input["customer_id"].len())
        .filter(|&i| input["total_charges"][i] == Cell::Null)
        .map(|i| input["customer_id"][i].clone())
        .collect();
    assert!(
        !null_ids.is_empty(),
        "the sample has null total_charges in eu"
    );
    // Rows with a null feature: NULL, and counted on stderr.
    for (id, p) in got["customer_id"].iter().zip(&got["p"]) {
        assert_eq!(
            *p == Cell::Null,
            null_ids.contains(id),
            "customer {id:?}: {p:?}"
        );
    }
    let (_, err) = text(&o);
    assert!(
        err.contains(&format!(
            "model \"churn\": {} rows got a NULL prediction",
            null_ids.len()
        )) && err.contains("argument 5 (total_charges)"),
        "{err}"
    );
    // The others: the oracle's probabilities (which filled nulls with 0, as coalesce below).
    let scored = filter(&got, |t, i| t["p"][i] != Cell::Null);
    let mut want = filter(&expected("churn"), |t, i| {
        in_region("eu")(t, i) && !null_ids.contains(&t["customer_id"][i])
    });
    want.insert("p".into(), want["churn_probability"].clone());
    assert_matches(&scored, &want, "customer_id", &["p"]);
}

#[test]
fn coalesce_fills_null_features_as_fill_null_does() {
    let s = Scratch::new();
    let query = format!(
        "SELECT customer_id, predict_output('churn', 'probabilities[1]', {f}) AS churn_probability, predict_output('churn', 'label', {f}) AS churn_label FROM 'sample_data/churn/data/' WHERE region <> 'apac'",
        f = churn_features("coalesce(total_charges, 0)")
    );
    let out = s.path("churn.parquet");
    let o = sql(&s, &[&query, "--model", CHURN, "-o", out.to_str().unwrap()]);
    assert_ok(&o);
    assert!(!text(&o).1.contains("NULL prediction"), "{}", text(&o).1);
    assert_matches(
        &read_parquet(&out),
        &expected("churn"),
        "customer_id",
        &["churn_probability", "churn_label"],
    );
}

#[test]
fn predict_on_a_single_output_model_matches_the_oracle_through_a_named_csv_table() {
    let s = Scratch::new();
    let o = sql(
        &s,
        &[
            "SELECT house_id, predict('price', rooms, area_m2, built, km_to_center) AS price FROM houses",
            "--model",
            "price=sample_data/houses/price_ridge.onnx",
            "--table",
            "houses=sample_data/houses/houses.csv.gz",
        ],
    );
    assert_ok(&o);
    // Not a terminal: CSV on stdout.
    let csv = s.path("prices.csv");
    std::fs::write(&csv, &o.stdout).unwrap();
    assert_matches(&read_csv(&csv), &expected("houses"), "house_id", &["price"]);
}

#[test]
fn predict_on_a_model_with_several_outputs_is_refused_naming_them() {
    let s = Scratch::new();
    let query = format!(
        "SELECT customer_id,\n       predict('churn', {}) AS p FROM 'sample_data/churn/data/'",
        churn_features("total_charges")
    );
    let err = assert_exit(&sql(&s, &[&query, "--model", CHURN]), 2);
    assert!(
        err.contains("line 2, column 8: predict('churn', …): model \"churn\" has 2 outputs (label, probabilities)")
            && err.contains("predict_output('churn', 'OUTPUT', …)"),
        "{err}"
    );
}

#[test]
fn a_wrong_argument_count_is_refused_naming_the_model_and_the_counts() {
    let s = Scratch::new();
    let query = "SELECT predict_output('churn', 'probabilities[1]', tenure, monthly_charges) FROM 'sample_data/churn/data/'";
    let err = assert_exit(&sql(&s, &[query, "--model", CHURN]), 2);
    assert!(
        err.contains("line 1, column 8: predict_output('churn', …): model \"churn\" takes 5 feature arguments (features float32 [?, 5]), but 2 are given"),
        "{err}"
    );
}

#[test]
fn wrong_names_outputs_and_types_are_refused_before_any_work() {
    let s = Scratch::new();
    let f = churn_features("total_charges");
    let out = s.path("never.parquet");
    let cases = [
        (
            format!("SELECT predict('nope', {f}) FROM 'sample_data/churn/data/'"),
            "predict('nope', …): no model \"nope\"; the models given with --model: churn",
        ),
        (
            format!("SELECT predict_output('churn', 'probs', {f}) FROM 'sample_data/churn/data/'"),
            "the model has no output \"probs\" (its outputs: label, probabilities)",
        ),
        (
            format!(
                "SELECT predict_output('churn', 'probabilities[2]', {f}) FROM 'sample_data/churn/data/'"
            ),
            "index 2 is out of range",
        ),
        (
            "SELECT predict_output('churn', 'label', tenure, monthly_charges, total_charges, now(), is_senior) FROM 'sample_data/churn/data/'".to_string(),
            "argument 6 (now()) has type Timestamp",
        ),
        ("SELEC 1".to_string(), "SQL error"),
        (
            "SELECT * FROM 'sample_data/no_such_folder/'".to_string(),
            "sample_data/no_such_folder/",
        ),
    ];
    for (query, want) in cases {
        let o = sql(&s, &[&query, "--model", CHURN, "-o", out.to_str().unwrap()]);
        let err = assert_exit(&o, 2);
        assert!(err.contains(want), "{query}: {err}");
        assert!(!out.exists());
    }
}

#[test]
fn average_predictions_per_region_equal_the_oracles_means() {
    let s = Scratch::new();
    let query = format!(
        "SELECT region, avg(predict_output('churn', 'probabilities[1]', {})) AS mean_p, count(*) AS n FROM 'sample_data/churn/data/' WHERE region <> 'apac' GROUP BY region ORDER BY region",
        churn_features("coalesce(total_charges, 0)")
    );
    let o = sql(&s, &[&query, "--model", CHURN, "--format", "csv"]);
    assert_ok(&o);
    let csv = s.path("means.csv");
    std::fs::write(&csv, &o.stdout).unwrap();
    let got = read_csv(&csv);
    assert_eq!(texts(&got["region"]), ["eu", "us"]);
    let oracle = expected("churn");
    for (i, region) in ["eu", "us"].into_iter().enumerate() {
        let rows = filter(&oracle, in_region(region));
        let values: Vec<f64> = rows["churn_probability"]
            .iter()
            .map(|c| match c {
                Cell::Float(f) => *f,
                other => panic!("{other:?}"),
            })
            .collect();
        let mean = values.iter().sum::<f64>() / values.len() as f64;
        assert_eq!(got["n"][i], Cell::Int(values.len() as i64));
        let Cell::Float(g) = got["mean_p"][i] else {
            panic!("{:?}", got["mean_p"][i])
        };
        assert_rel(&format!("mean in {region}"), g, mean, 1e-6);
    }
}

#[test]
fn predictions_join_against_a_named_table() {
    let s = Scratch::new();
    let query = format!(
        "SELECT d.customer_id, predict_output('churn', 'probabilities[1]', {}) AS p, e.churn_probability AS want \
         FROM 'sample_data/churn/data/' d JOIN oracle e ON d.customer_id = e.customer_id",
        churn_features("coalesce(d.total_charges, 0)")
    );
    let out = s.path("joined.parquet");
    let o = sql(
        &s,
        &[
            &query,
            "--model",
            CHURN,
            "--table",
            "oracle=sample_data/churn/expected.parquet",
            "-o",
            out.to_str().unwrap(),
        ],
    );
    assert_ok(&o);
    let got = read_parquet(&out);
    // Every oracle row (eu and us) joined once, each prediction the oracle's.
    assert_eq!(
        got["customer_id"].len(),
        expected("churn")["customer_id"].len()
    );
    let mut want = got.clone();
    want.insert("p".into(), got["want"].clone());
    assert_matches(&got, &want, "customer_id", &["p"]);
}

#[test]
fn per_column_inputs_take_one_argument_each() {
    let s = Scratch::new();
    let out = s.path("plans.parquet");
    let o = sql(
        &s,
        &[
            "SELECT account, predict_output('plans', 'output_label', plan, country, age, usage) AS output_label, \
             predict_output('plans', 'output_probability[2]', plan, country, age, usage) AS p_upgrade \
             FROM 'sample_data/plans/accounts.parquet'",
            "--model",
            "plans=sample_data/plans/plans_pipeline.onnx",
            "-o",
            out.to_str().unwrap(),
        ],
    );
    assert_ok(&o);
    assert_matches(
        &read_parquet(&out),
        &expected("plans"),
        "account",
        &["output_label", "p_upgrade"],
    );
}

#[test]
fn a_query_that_fails_while_running_leaves_nothing_at_the_output() {
    let s = Scratch::new();
    std::fs::create_dir(s.path("out")).unwrap();
    let out = s.path("out/p.parquet");
    // Fails on the rows past the first ones, after some batches were scored and written.
    let query = format!(
        "SELECT customer_id, predict_output('churn', 'probabilities[1]', {}) AS p, \
         CASE WHEN customer_id > 102000 THEN CAST(region AS INT) ELSE 0 END AS boom \
         FROM 'sample_data/churn/data/'",
        churn_features("coalesce(total_charges, 0)")
    );
    let o = sql(&s, &[&query, "--model", CHURN, "-o", out.to_str().unwrap()]);
    let err = assert_exit(&o, 1);
    assert!(err.contains("the query failed"), "{err}");
    // Batches still being scored finished before the process exited.
    assert!(!err.contains("ort::"), "{err}");
    assert!(
        names_in(&s.path("out")).is_empty(),
        "{:?}",
        names_in(&s.path("out"))
    );
}

#[test]
fn parquet_needs_a_file() {
    let s = Scratch::new();
    let err = assert_exit(&sql(&s, &["SELECT 1", "--format", "parquet"]), 2);
    assert!(err.contains("add -o PATH.parquet"), "{err}");
}

#[test]
fn a_list_column_is_refused_for_csv_before_any_work() {
    let s = Scratch::new();
    let out = s.path("p.csv");
    let query = |output: &str| {
        format!(
            "SELECT customer_id, predict_output('churn', '{output}', {}) AS p FROM 'sample_data/churn/data/' ORDER BY customer_id LIMIT 3",
            churn_features("total_charges")
        )
    };
    let whole = query("probabilities");
    for args in [
        vec![whole.as_str(), "--format", "csv"],
        vec![whole.as_str(), "-o", out.to_str().unwrap()],
    ] {
        let o = sql(&s, &[&args[..], &["--model", CHURN]].concat());
        let err = assert_exit(&o, 2);
        assert_eq!(
            err,
            "error: column \"p\" is List(Float32), which CSV cannot hold: use --format json or parquet, or select one element (p[1])\n",
            "{args:?}"
        );
        assert!(o.stdout.is_empty(), "{args:?}: printed {:?}", text(&o).0);
        assert!(!out.exists(), "{args:?}");
    }
    // One element of it is a column CSV holds, and JSON holds the whole list.
    let element = query("probabilities[1]");
    let o = sql(&s, &[&element, "--format", "csv", "--model", CHURN]);
    assert_exit(&o, 0);
    assert_eq!(text(&o).0.lines().next(), Some("customer_id,p"));
    assert_eq!(text(&o).0.lines().count(), 4);
    let o = sql(&s, &[&whole, "--format", "json", "--model", CHURN]);
    assert_exit(&o, 0);
    assert!(
        text(&o).0.lines().all(|l| l.contains("\"p\":[")),
        "{}",
        text(&o).0
    );
}

#[test]
fn csv_and_json_files_hold_the_rows() {
    let s = Scratch::new();
    let query = "SELECT house_id, predict('price', rooms, area_m2, built, km_to_center) AS price FROM 'sample_data/houses/houses.csv.gz'";
    let model = "price=sample_data/houses/price_ridge.onnx";
    let csv = s.path("p.csv");
    let o = sql(&s, &[query, "--model", model, "-o", csv.to_str().unwrap()]);
    assert_ok(&o);
    assert_eq!(
        text(&o).1,
        format!("batchscore sql: 1500 rows -> {}\n", csv.display())
    );
    assert_matches(&read_csv(&csv), &expected("houses"), "house_id", &["price"]);
    let json = s.path("p.jsonl");
    assert_ok(&sql(
        &s,
        &[query, "--model", model, "-o", json.to_str().unwrap()],
    ));
    let text = std::fs::read_to_string(&json).unwrap();
    assert_eq!(text.lines().count(), 1500);
    let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert!(
        first["price"].is_f64() && first["house_id"].is_string(),
        "{first}"
    );
}

/// The S3 server of `scripts/test` (moto), its bucket `name-<pid>` created, and a client.
mod s3 {
    use std::io::{Read, Write};

    use object_store::aws::{AmazonS3, AmazonS3Builder};

    pub const ACCESS_KEY: &str = "AKIABATCHSCORETESTKEY";
    pub const SECRET_KEY: &str = "batchscore-test-secret-d41d8cd98f00b204e980";

    pub fn endpoint() -> String {
        std::env::var("BATCHSCORE_TEST_S3_ENDPOINT").expect(
            "BATCHSCORE_TEST_S3_ENDPOINT is not set: run the tests with scripts/test, which starts an S3 server (moto)",
        )
    }

    pub fn bucket(name: &str) -> (String, AmazonS3) {
        let bucket = format!("{name}-{}", std::process::id());
        let ep = endpoint();
        let addr = ep.trim_start_matches("http://");
        let mut c = std::net::TcpStream::connect(addr).unwrap();
        write!(
            c,
            "PUT /{bucket} HTTP/1.1\r\nContent-Length: 0\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut reply = Vec::new();
        c.read_to_end(&mut reply).unwrap();
        let reply = String::from_utf8_lossy(&reply);
        assert!(reply.starts_with("HTTP/1.1 200"), "CreateBucket: {reply}");
        let store = AmazonS3Builder::new()
            .with_endpoint(ep)
            .with_allow_http(true)
            .with_bucket_name(&bucket)
            .with_region("us-east-1")
            .with_access_key_id(ACCESS_KEY)
            .with_secret_access_key(SECRET_KEY)
            .build()
            .unwrap();
        (bucket, store)
    }
}

#[test]
fn an_s3_table_scored_into_an_s3_file() {
    use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
    let (bucket, store) = s3::bucket("sql");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let data = std::path::PathBuf::from(sample("churn/data"));
    for region in names_in(&data) {
        for file in names_in(&data.join(&region)) {
            let bytes = std::fs::read(data.join(&region).join(&file)).unwrap();
            let key = format!("churn/{region}/{file}");
            rt.block_on(store.put(&key.as_str().into(), PutPayload::from(bytes)))
                .unwrap();
        }
    }
    let s = Scratch::new();
    // The store's settings come from a job spec's [storage], as for `rollback --spec`.
    let job = s.repo_job("churn");
    let mut text = std::fs::read_to_string(&job).unwrap();
    text.push_str(&format!(
        "\n[storage]\nendpoint = \"{}\"\nallow_http = true\nmax_retries = 1\n",
        s3::endpoint()
    ));
    std::fs::write(&job, text).unwrap();
    let query = format!(
        "SELECT customer_id, predict_output('churn', 'probabilities[1]', {}) AS churn_probability FROM 's3://{bucket}/churn/' WHERE region <> 'apac'",
        churn_features("coalesce(total_charges, 0)")
    );
    let out = format!("s3://{bucket}/scores/churn.parquet");
    let run = |query: &str| {
        batchscore()
            .args(["sql", query, "--model", CHURN, "-o", &out])
            .args(["--spec", job.to_str().unwrap(), "--var", "ds=1"])
            .env("AWS_ACCESS_KEY_ID", s3::ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", s3::SECRET_KEY)
            .env("AWS_REGION", "us-east-1")
            .env_remove("AWS_ENDPOINT_URL")
            .current_dir(s.dir.path())
            .output()
            .unwrap()
    };
    // A query that fails while running leaves no object.
    let failing = query.replace(
        "AS churn_probability",
        "AS churn_probability, CAST(CASE WHEN customer_id > 102000 THEN 'x' ELSE '1' END AS INT) AS boom",
    );
    assert_exit(&run(&failing), 1);
    let listed = rt.block_on(async {
        use futures::TryStreamExt;
        store
            .list(Some(&"scores".into()))
            .try_collect::<Vec<_>>()
            .await
            .unwrap()
    });
    assert!(listed.is_empty(), "{listed:?}");
    assert_ok(&run(&query));
    let bytes = rt
        .block_on(async {
            store
                .get(&"scores/churn.parquet".into())
                .await?
                .bytes()
                .await
        })
        .unwrap();
    let local = s.path("churn.parquet");
    std::fs::write(&local, bytes).unwrap();
    assert_matches(
        &read_parquet(&local),
        &expected("churn"),
        "customer_id",
        &["churn_probability"],
    );
}
