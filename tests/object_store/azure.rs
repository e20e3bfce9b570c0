//! The same jobs against Azure Blob Storage's own emulator, Azurite (from npm), started by
//! `scripts/test` with a container `batchscore-test` and its URL in
//! `AZURITE_BLOB_STORAGE_URL`. The binary is told to use it the way a user would: with
//! `AZURE_STORAGE_USE_EMULATOR=true` in its environment.

use super::*;

use object_store::azure::MicrosoftAzureBuilder;

const CONTAINER: &str = "batchscore-test";

fn azurite_url() -> String {
    std::env::var("AZURITE_BLOB_STORAGE_URL").expect(
        "AZURITE_BLOB_STORAGE_URL is not set: run the tests with scripts/test, which starts Azurite",
    )
}

/// A client for the shared container and a prefix of it no other test uses.
fn container(name: &str) -> (String, impl ObjectStore) {
    azurite_url();
    let store = MicrosoftAzureBuilder::new()
        .with_use_emulator(true)
        .with_container_name(CONTAINER)
        .build()
        .unwrap();
    (format!("{name}-{}", std::process::id()), store)
}

fn az_run(s: &Scratch, args: &[&str]) -> std::process::Output {
    az_command(s, args).output().unwrap()
}

fn az_command(s: &Scratch, args: &[&str]) -> std::process::Command {
    let mut c = batchscore();
    c.args(args)
        .env("AZURE_STORAGE_USE_EMULATOR", "true")
        .env("BATCHSCORE_CACHE", s.path("cache"));
    c
}

/// The churn job with its hive data, its model and its output all in the container.
fn churn_in_azure(prefix: &str, mode: &str) -> String {
    format!(
        r#"
name = "churn-azure"
[input]
uri = "az://{CONTAINER}/{prefix}/churn/data/"
query = "SELECT * FROM input WHERE region <> 'apac'"
[model]
uri = "az://{CONTAINER}/{prefix}/models/churn.onnx"
[inputs.features]
columns = ["tenure", "monthly_charges", "total_charges", "ln(1 + support_calls)", "is_senior"]
fill_null = 0.0
[output]
uri = "az://{CONTAINER}/{prefix}/scores/"
passthrough = ["customer_id", "region"]
mode = "{mode}"
[outputs]
churn_probability = "probabilities[1]"
churn_label = "label"
[run]
batch_size = 1024
[storage]
max_retries = 1
"#
    )
}

fn upload_churn(store: &impl ObjectStore, prefix: &str) {
    upload_dir(
        store,
        &repo().join("sample_data/churn/data"),
        &format!("{prefix}/churn/data"),
    );
    upload_file(
        store,
        &sample("churn/churn_lgbm.onnx"),
        &format!("{prefix}/models/churn.onnx"),
    );
}

#[test]
fn a_job_wholly_in_a_container_gives_the_same_rows_as_local_files() {
    let s = Scratch::new();
    let (prefix, store) = container("same");
    upload_churn(&store, &prefix);
    let job = s.job("a.toml", &churn_in_azure(&prefix, "error"));
    let o = az_run(&s, &["run", job.to_str().unwrap()]);
    assert_ok(&o);
    assert!(
        text(&o)
            .0
            .contains(&format!("-> az://{CONTAINER}/{prefix}/scores (")),
        "{}",
        text(&o).0
    );
    let names = download(&store, &format!("{prefix}/scores"), &s.path("got"));
    for marker in ["_SUCCESS", "_manifest.json", "_metrics.json"] {
        assert!(names.contains(&marker.to_string()), "{marker}: {names:?}");
    }
    assert!(
        !names.iter().any(|n| n.starts_with("_staging")),
        "staging is removed: {names:?}"
    );
    let expected = read_parquet(Path::new(&sample("churn/expected.parquet")));
    assert_matches(
        &read_output(&s.path("got")),
        &expected,
        "customer_id",
        &["region", "churn_probability", "churn_label"],
    );

    // The manifest's conditional create refuses a second commit in mode "error".
    let err = assert_exit(&az_run(&s, &["run", job.to_str().unwrap()]), 2);
    assert!(
        err.contains("already holds a committed output (_SUCCESS)"),
        "{err}"
    );
}

#[test]
fn two_runs_racing_on_one_container_output_commit_exactly_once() {
    let s = Scratch::new();
    let (prefix, store) = container("race");
    upload_churn(&store, &prefix);
    let job = s.job("r.toml", &churn_in_azure(&prefix, "error"));
    let job = job.to_str().unwrap();
    let output = format!("az://{CONTAINER}/{prefix}/scores");
    race_to_commit(
        || az_command(&s, &["run", job]),
        &s.path("barrier"),
        &output,
    );
    assert_bucket_output(
        &store,
        &format!("{prefix}/scores"),
        &s.path("got"),
        "churn/expected.parquet",
        "customer_id",
        &["churn_probability"],
    );
}

#[test]
fn a_missing_container_fails_fast_naming_the_url() {
    let s = Scratch::new();
    let (prefix, _store) = container("missing");
    let text = churn_in_azure(&prefix, "error").replace(
        &format!("az://{CONTAINER}/{prefix}/churn/data/"),
        "az://no-such-container/churn/data/",
    );
    let job = s.job("m.toml", &text);
    let started = Instant::now();
    let err = assert_exit(&az_run(&s, &["run", job.to_str().unwrap()]), 2);
    assert!(err.contains("az://no-such-container/churn/data/"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(20), "{err}");

    // An output in a missing container is refused before any work, not at its first write.
    let (prefix, store) = container("missing-out");
    upload_churn(&store, &prefix);
    for mode in ["error", "overwrite"] {
        let text = churn_in_azure(&prefix, mode).replace(
            &format!("az://{CONTAINER}/{prefix}/scores/"),
            "az://no-such-container/scores/",
        );
        let job = s.job("o.toml", &text);
        let err = assert_exit(&az_run(&s, &["run", job.to_str().unwrap()]), 2);
        assert!(
            err.contains("az://no-such-container/scores"),
            "{mode}: {err}"
        );
        assert!(err.contains("ContainerNotFound"), "{mode}: {err}");
        assert!(
            !err.contains("cannot write"),
            "{mode}: refused at planning: {err}"
        );
    }
}
