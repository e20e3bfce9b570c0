//! Inputs and models in an S3-compatible store: a real moto server on loopback, started by
//! `scripts/test` (its URL in `BATCHSCORE_TEST_S3_ENDPOINT`), spoken to over HTTP by the same
//! S3 client code path a cloud bucket gets. No in-process fake.

mod common;
use common::*;

// Azure's tests share this file's helpers; a module rather than a test target of its own
// saves CI one more link of the whole dependency tree.
#[path = "object_store/azure.rs"]
mod azure;

use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use batchscore::hooks::BARRIER_VAR;
use object_store::aws::AmazonS3Builder;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

const ACCESS_KEY: &str = "AKIABATCHSCORETESTKEY";
const SECRET_KEY: &str = "batchscore-test-secret-d41d8cd98f00b204e980";

fn endpoint() -> String {
    std::env::var("BATCHSCORE_TEST_S3_ENDPOINT").expect(
        "BATCHSCORE_TEST_S3_ENDPOINT is not set: run the tests with scripts/test, which starts an S3 server (moto)",
    )
}

/// A fresh bucket, created with a plain HTTP PUT (CreateBucket), and a client for it.
fn bucket(name: &str) -> (String, impl ObjectStore) {
    let bucket = format!("{name}-{}", std::process::id());
    let reply = http_to_moto(&format!("PUT /{bucket} HTTP/1.1\r\nContent-Length: 0"));
    assert!(reply.starts_with("HTTP/1.1 200"), "CreateBucket: {reply}");
    let store = AmazonS3Builder::new()
        .with_endpoint(endpoint())
        .with_allow_http(true)
        .with_bucket_name(&bucket)
        .with_region("us-east-1")
        .with_access_key_id(ACCESS_KEY)
        .with_secret_access_key(SECRET_KEY)
        .build()
        .unwrap();
    (bucket, store)
}

/// Sends one plain request (its first lines, without `Host`) to the S3 server and returns the
/// whole reply. HTTP/1.0 or `Connection: close`, so that the server closes when done.
fn http_to_moto(head: &str) -> String {
    let ep = endpoint();
    let addr = ep.trim_start_matches("http://");
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    write!(c, "{head}\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut reply = Vec::new();
    c.read_to_end(&mut reply).unwrap();
    String::from_utf8_lossy(&reply).into_owned()
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Uploads every file under `dir` to `prefix/` in the store.
fn upload_dir(store: &impl ObjectStore, dir: &Path, prefix: &str) {
    let rt = rt();
    for entry in walk(dir) {
        let rel = entry
            .strip_prefix(dir)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let bytes = std::fs::read(&entry).unwrap();
        rt.block_on(store.put(&format!("{prefix}/{rel}").into(), PutPayload::from(bytes)))
            .unwrap();
    }
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.path().is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out
}

/// A bucket holding the churn sample: its hive-partitioned data under `churn/data/` and its
/// model at `models/churn.onnx`.
fn churn_bucket(name: &str) -> String {
    let (b, store) = bucket(name);
    upload_dir(&store, &repo().join("sample_data/churn/data"), "churn/data");
    upload_file(
        &store,
        &sample("churn/churn_lgbm.onnx"),
        "models/churn.onnx",
    );
    b
}

fn upload_file(store: &impl ObjectStore, file: &str, key: &str) {
    let bytes = std::fs::read(file).unwrap();
    rt().block_on(store.put(&key.into(), PutPayload::from(bytes)))
        .unwrap();
}

/// The binary with credentials in the environment, as a scheduler would pass them.
fn s3_command(s: &Scratch, args: &[&str]) -> std::process::Command {
    let mut c = batchscore();
    c.args(args)
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        .env("AWS_REGION", "us-east-1")
        .env_remove("AWS_ENDPOINT_URL")
        .env("BATCHSCORE_CACHE", s.path("cache"));
    c
}

fn s3_run(s: &Scratch, args: &[&str]) -> std::process::Output {
    s3_command(s, args).output().unwrap()
}

/// The same, started in the background with its output captured.
fn s3_spawn(s: &Scratch, args: &[&str]) -> std::process::Child {
    s3_command(s, args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// How many objects are under `prefix`.
fn count_objects(store: &impl ObjectStore, prefix: &str) -> usize {
    use futures::TryStreamExt;
    rt().block_on(store.list(Some(&prefix.into())).try_collect::<Vec<_>>())
        .unwrap()
        .len()
}

fn storage_table(allow_http: bool) -> String {
    format!(
        "[storage]\nendpoint = \"{}\"\nallow_http = {allow_http}\nmax_retries = 1\n",
        endpoint()
    )
}

fn churn_from_s3(bucket: &str, model_key: &str, pin: &str, storage: &str) -> String {
    format!(
        r#"
name = "churn-s3"
[input]
uri = "s3://{bucket}/churn/data/"
query = "SELECT * FROM input WHERE region <> 'apac'"
[model]
uri = "s3://{bucket}/{model_key}"
{pin}
[inputs.features]
columns = ["tenure", "monthly_charges", "total_charges", "ln(1 + support_calls)", "is_senior"]
fill_null = 0.0
[output]
uri = "../out/churn/"
passthrough = ["customer_id", "region"]
mode = "overwrite"
[outputs]
churn_probability = "probabilities[1]"
churn_label = "label"
[run]
batch_size = 1024
{storage}
"#
    )
}

#[test]
fn hive_partitions_and_a_model_in_a_bucket_give_the_same_rows_as_local_files() {
    let s = Scratch::new();
    let b = churn_bucket("churn");
    let job = s.job(
        "c.toml",
        &churn_from_s3(&b, "models/churn.onnx", "", &storage_table(true)),
    );
    let o = s3_run(&s, &["run", job.to_str().unwrap()]);
    assert_ok(&o);
    let expected = read_parquet(Path::new(&sample("churn/expected.parquet")));
    assert_matches(
        &read_output(&s.path("out/churn")),
        &expected,
        "customer_id",
        &["region", "churn_probability", "churn_label"],
    );
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(s.path("out/churn/_metrics.json")).unwrap())
            .unwrap();
    assert_eq!(
        metrics["model"]["uri"],
        format!("s3://{b}/models/churn.onnx")
    );
}

#[test]
fn a_glob_over_objects() {
    let s = Scratch::new();
    let (b, store) = bucket("glob");
    // One object the glob matches, and one it does not (it would duplicate every key).
    upload_file(
        &store,
        &sample("fraud/transactions.parquet"),
        "fraud/t-1.parquet",
    );
    upload_file(
        &store,
        &sample("fraud/transactions.parquet"),
        "fraud/other.parquet",
    );
    let text = std::fs::read_to_string(repo().join("jobs/fraud.toml"))
        .unwrap()
        .replace(
            "../sample_data/fraud/transactions.parquet",
            &format!("s3://{b}/fraud/t-*.parquet"),
        )
        .replace(
            "../sample_data/fraud/fraud_xgb.onnx",
            &sample("fraud/fraud_xgb.onnx"),
        )
        + &storage_table(true);
    let job = s.job("g.toml", &text);
    assert_ok(&s3_run(&s, &["run", job.to_str().unwrap()]));
    let expected = read_parquet(Path::new(&sample("fraud/expected.parquet")));
    assert_matches(
        &read_output(&s.path("out/fraud")),
        &expected,
        "txn_id",
        &["fraud_probability", "fraud_label"],
    );
}

#[test]
fn a_pinned_model_is_downloaded_once_into_the_cache() {
    let s = Scratch::new();
    let (b, store) = bucket("cache");
    upload_dir(&store, &repo().join("sample_data/churn/data"), "churn/data");
    upload_file(&store, &sample("churn/churn_lgbm.onnx"), "m/churn.onnx");
    let sha = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(
            std::fs::read(sample("churn/churn_lgbm.onnx")).unwrap(),
        ))
    };
    let job = s.job(
        "p.toml",
        &churn_from_s3(
            &b,
            "m/churn.onnx",
            &format!("sha256 = \"{sha}\""),
            &storage_table(true),
        ),
    );
    assert_ok(&s3_run(&s, &["run", job.to_str().unwrap()]));
    assert!(s.path(&format!("cache/models/{sha}.onnx")).exists());
    // The nightly rerun needs nothing from the store for the model: delete it to prove it.
    rt().block_on(store.delete(&"m/churn.onnx".into())).unwrap();
    let o = s3_run(&s, &["run", job.to_str().unwrap()]);
    assert_ok(&o);
}

#[test]
fn plain_http_is_refused_unless_allowed() {
    let s = Scratch::new();
    let job = s.job(
        "h.toml",
        &churn_from_s3("any", "m.onnx", "", &storage_table(false)),
    );
    let o = s3_run(&s, &["run", job.to_str().unwrap()]);
    let err = assert_exit(&o, 2);
    assert!(
        err.contains("h.toml: [storage.endpoint]: the endpoint http://127.0.0.1:")
            && err.contains(
                "is plain HTTP, which is refused by default: set allow_http = true under [storage]"
            ),
        "{err}"
    );
}

#[test]
fn a_missing_bucket_and_a_missing_model_fail_fast_naming_the_url() {
    let s = Scratch::new();
    let (b, store) = bucket("missing");
    upload_dir(&store, &repo().join("sample_data/churn/data"), "churn/data");
    let started = Instant::now();
    let job = s.job(
        "m.toml",
        &churn_from_s3(&b, "models/absent.onnx", "", &storage_table(true)),
    );
    let err = assert_exit(&s3_run(&s, &["run", job.to_str().unwrap()]), 2);
    assert!(
        err.contains(&format!(
            "[model.uri]: model s3://{b}/models/absent.onnx: cannot fetch: HEAD:"
        )),
        "{err}"
    );

    let job = s.job(
        "b.toml",
        &churn_from_s3("no-such-bucket-bs", "m.onnx", "", &storage_table(true)),
    );
    let err = assert_exit(&s3_run(&s, &["run", job.to_str().unwrap()]), 2);
    assert!(
        err.contains("[input.uri]: s3://no-such-bucket-bs/churn/data/: cannot list:"),
        "{err}"
    );
    assert!(
        err.contains("[model.uri]: model s3://no-such-bucket-bs/m.onnx: cannot fetch"),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "permanent errors must not be retried for long"
    );
    assert!(!s.path("out").exists());
}

#[test]
fn credentials_never_appear_in_logs_metrics_or_manifests() {
    let s = Scratch::new();
    let b = churn_bucket("secrets");
    let job = s.job(
        "s.toml",
        &churn_from_s3(&b, "models/churn.onnx", "", &storage_table(true)),
    );
    for level in ["trace", "debug", "info", "warn"] {
        for format in ["text", "json"] {
            let o = s3_command(&s, &["run", job.to_str().unwrap(), "--log-format", format])
                .env("RUST_LOG", level)
                .output()
                .unwrap();
            assert_ok(&o);
            let mut produced = o.stdout.clone();
            produced.extend_from_slice(&o.stderr);
            for f in walk(&s.path("out")) {
                produced.extend(std::fs::read(f).unwrap());
            }
            let all = String::from_utf8_lossy(&produced);
            assert!(
                !all.contains(SECRET_KEY),
                "the secret key leaked at RUST_LOG={level} ({format})"
            );
            assert!(
                !all.contains(ACCESS_KEY),
                "the access key id leaked at RUST_LOG={level} ({format})"
            );
            assert!(
                !all.contains(&SECRET_KEY[..16]),
                "part of the secret leaked at RUST_LOG={level}"
            );
        }
    }
}

/// Copies everything under `prefix` in the store into `dir`, to read it like a local output.
fn download(store: &impl ObjectStore, prefix: &str, dir: &Path) -> Vec<String> {
    use futures::TryStreamExt;
    let rt = rt();
    let metas: Vec<_> = rt
        .block_on(store.list(Some(&prefix.into())).try_collect::<Vec<_>>())
        .unwrap();
    let mut names = Vec::new();
    for m in metas {
        let rel = m
            .location
            .as_ref()
            .strip_prefix(prefix)
            .unwrap()
            .trim_start_matches('/')
            .to_string();
        let bytes =
            rt.block_on(async { store.get(&m.location).await.unwrap().bytes().await.unwrap() });
        let to = dir.join(&rel);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::write(&to, bytes).unwrap();
        names.push(rel);
    }
    names.sort();
    names
}

/// Downloads the committed output under `prefix` into `dir`, checks that no staging is left,
/// and that it holds exactly the rows of `expected` (a sample's expected.parquet).
#[track_caller]
fn assert_bucket_output(
    store: &impl ObjectStore,
    prefix: &str,
    dir: &Path,
    expected: &str,
    key: &str,
    columns: &[&str],
) {
    let names = download(store, prefix, dir);
    assert!(
        !names.iter().any(|n| n.starts_with("_staging")),
        "{names:?}"
    );
    let expected = read_parquet(Path::new(&sample(expected)));
    assert_matches(&read_output(dir), &expected, key, columns);
}

/// The manifest of a downloaded output gives each part's size in bytes.
#[track_caller]
fn assert_manifest_sizes(dir: &Path) {
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("_manifest.json")).unwrap())
            .unwrap();
    for f in manifest["files"].as_array().unwrap() {
        let size = std::fs::metadata(dir.join(f["path"].as_str().unwrap()))
            .unwrap()
            .len();
        assert_eq!(f["bytes"].as_u64(), Some(size), "{f}");
    }
}

fn churn_to_s3(bucket: &str, mode: &str, format: &str) -> String {
    let text = std::fs::read_to_string(repo().join("jobs/churn.toml"))
        .unwrap()
        .replace(
            "../sample_data",
            repo().join("sample_data").to_str().unwrap(),
        )
        .replace(
            "../out/churn/ds=${ds}/",
            &format!("s3://{bucket}/scores/ds=1/"),
        )
        .replace(
            "mode = \"overwrite\"",
            &format!("mode = \"{mode}\"\nformat = \"{format}\""),
        );
    text + &storage_table(true)
}

#[test]
fn outputs_in_a_bucket_are_committed_with_manifest_and_success_last() {
    let s = Scratch::new();
    let (b, store) = bucket("out");
    let job = s.job("o.toml", &churn_to_s3(&b, "error", "parquet"));
    let o = s3_run(&s, &["run", job.to_str().unwrap()]);
    assert_ok(&o);
    assert!(
        text(&o).0.contains(&format!("-> s3://{b}/scores/ds=1 (")),
        "{}",
        text(&o).0
    );
    let names = download(&store, "scores/ds=1", &s.path("got"));
    assert!(
        names.contains(&"_SUCCESS".to_string()) && names.contains(&"_metrics.json".to_string()),
        "{names:?}"
    );
    assert!(
        !names.iter().any(|n| n.starts_with("_staging")),
        "staging is removed: {names:?}"
    );
    assert_manifest_sizes(&s.path("got"));
    let expected = read_parquet(Path::new(&sample("churn/expected.parquet")));
    assert_matches(
        &read_output(&s.path("got")),
        &expected,
        "customer_id",
        &["churn_probability", "churn_label"],
    );

    // mode = "error" refuses the committed output before any work.
    let err = assert_exit(&s3_run(&s, &["run", job.to_str().unwrap()]), 2);
    assert!(
        err.contains("already holds a committed output (_SUCCESS)"),
        "{err}"
    );

    // overwrite, as CSV: the old Parquet parts go, the new CSV parts come.
    let job = s.job("w.toml", &churn_to_s3(&b, "overwrite", "csv"));
    assert_ok(&s3_run(&s, &["run", job.to_str().unwrap()]));
    let got = s.path("got2");
    let names = download(&store, "scores/ds=1", &got);
    assert!(names.iter().all(|n| !n.ends_with(".parquet")), "{names:?}");
    assert_manifest_sizes(&got);
    assert_matches(
        &read_output(&got),
        &expected,
        "customer_id",
        &["churn_probability", "churn_label"],
    );
}

#[test]
fn two_runs_racing_on_one_output_commit_exactly_once() {
    let s = Scratch::new();
    let (b, store) = bucket("race");
    let job = s.job("r.toml", &churn_to_s3(&b, "error", "parquet"));
    let job = job.to_str().unwrap();
    // Both runs stand at the commit point before either writes its manifest: the
    // conditional put, not the timing, decides which commits.
    let barrier = s.path("barrier");
    let output = format!("s3://{b}/scores/ds=1");
    race_to_commit(|| s3_command(&s, &["run", job]), &barrier, &output);
    assert_bucket_output(
        &store,
        "scores/ds=1",
        &s.path("got"),
        "churn/expected.parquet",
        "customer_id",
        &["churn_probability"],
    );
}

/// Starts two runs that wait for each other at the commit barrier in `barrier`, and checks
/// that both reached it and that exactly one committed: the other is refused by the
/// conditional write on `output`.
#[track_caller]
fn race_to_commit(
    mut command: impl FnMut() -> std::process::Command,
    barrier: &Path,
    output: &str,
) {
    let mut spawn = || {
        command()
            .env(BARRIER_VAR, format!("commit:{}:2", barrier.display()))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, c) = (spawn(), spawn());
    let (a, c) = (a.wait_with_output().unwrap(), c.wait_with_output().unwrap());
    let arrived = std::fs::read_dir(barrier).map_or(0, Iterator::count);
    assert_eq!(arrived, 2, "both runs reach the commit point");
    let wins = [&a, &c].iter().filter(|o| o.status.success()).count();
    assert_eq!(wins, 1, "a: {:?}\nc: {:?}", text(&a), text(&c));
    let loser = if a.status.success() { &c } else { &a };
    let err = assert_exit(loser, 1);
    assert!(
        err.contains(&format!(
            "output {output}: another run committed this output first"
        )),
        "{err}"
    );
}

#[test]
fn a_run_overtaken_by_another_commit_stops_at_the_manifest_and_commits_nothing() {
    let s = Scratch::new();
    let (b, store) = bucket("overtaken");
    // A slow input for run A.
    big_fraud_input(&s.path("big.parquet"), 1_500_000);
    let spec = |input: &str| {
        std::fs::read_to_string(repo().join("jobs/fraud.toml"))
            .unwrap()
            .replace("../sample_data/fraud/transactions.parquet", input)
            .replace(
                "../sample_data/fraud/fraud_xgb.onnx",
                &sample("fraud/fraud_xgb.onnx"),
            )
            .replace("../out/fraud/", &format!("s3://{b}/f/"))
            .replace("batch_size = 500", "batch_size = 4096")
            + &storage_table(true)
    };
    // Parts of 100k rows, so that A stages its first ones early and goes on scoring.
    let slow = s.job(
        "slow.toml",
        &spec(s.path("big.parquet").to_str().unwrap()).replace(
            "mode = \"overwrite\"",
            "mode = \"overwrite\"\nmax_rows_per_file = 100000",
        ),
    );
    let fast = s.job("fast.toml", &spec(&sample("fraud/transactions.parquet")));

    let run_a = s3_spawn(&s, &["run", slow.to_str().unwrap()]);
    // Once A is writing parts into its staging prefix, B runs from start to commit.
    wait_until("run A stages a part", || {
        count_objects(&store, "f/_staging") > 0
    });
    assert_ok(&s3_run(&s, &["run", fast.to_str().unwrap()]));
    let a = run_a.wait_with_output().unwrap();
    let err = assert_exit(&a, 1);
    assert!(
        err.contains(&format!(
            "output s3://{b}/f: another run committed this output first"
        )),
        "{err}"
    );

    // The output is B's, whole: 2500 keys, no staging left.
    assert_bucket_output(
        &store,
        "f",
        &s.path("got"),
        "fraud/expected.parquet",
        "txn_id",
        &["fraud_probability", "fraud_label"],
    );
}

/// Forwards a loopback port to the shared S3 server until cut, like a network that drops.
struct Proxy {
    port: u16,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Proxy {
    fn start(target: String) -> Self {
        Self::start_flaky(target, 0)
    }

    /// The same, but the first `fail_first` connections get `503 Slow Down` (S3's throttling
    /// answer) instead of being forwarded.
    fn start_flaky(target: String, fail_first: usize) -> Self {
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::spawn(move || {
            let mut conns: Vec<std::net::TcpStream> = Vec::new();
            let mut refused = 0;
            while !flag.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((mut client, _)) => {
                        client.set_nonblocking(false).unwrap();
                        if refused < fail_first {
                            refused += 1;
                            let mut head = [0u8; 4096];
                            let _ = client.read(&mut head);
                            let body = "<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>";
                            let _ = write!(
                                client,
                                "HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                                body.len()
                            );
                            let _ = client.shutdown(std::net::Shutdown::Both);
                            continue;
                        }
                        let upstream = std::net::TcpStream::connect(&target).unwrap();
                        for (mut from, mut to) in [
                            (client.try_clone().unwrap(), upstream.try_clone().unwrap()),
                            (upstream.try_clone().unwrap(), client.try_clone().unwrap()),
                        ] {
                            std::thread::spawn(move || {
                                let _ = std::io::copy(&mut from, &mut to);
                                let _ = to.shutdown(std::net::Shutdown::Both);
                            });
                        }
                        conns.push(client);
                        conns.push(upstream);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
            // Cut every open connection; the listener closes when the thread ends.
            for c in conns {
                let _ = c.shutdown(std::net::Shutdown::Both);
            }
        });
        Self { port, stop }
    }

    fn cut(&self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_server_going_away_mid_write_commits_nothing_and_a_rerun_succeeds() {
    let s = Scratch::new();
    let (b, store) = bucket("cut");
    upload_dir(&store, &repo().join("sample_data/churn/data"), "churn/data");
    let proxy = Proxy::start(endpoint().trim_start_matches("http://").to_string());
    // Writes go through the proxy; many small parts keep the run writing for a while.
    let job_text = |port: u16| {
        churn_to_s3(&b, "error", "csv")
            .replace(&endpoint(), &format!("http://127.0.0.1:{port}"))
            .replace("batch_size = 1024", "batch_size = 16\nworkers = 1")
            .replace(
                "format = \"csv\"",
                "format = \"csv\"\nmax_rows_per_file = 16",
            )
    };
    let job = s.job("cut.toml", &job_text(proxy.port));
    let child = s3_spawn(&s, &["run", job.to_str().unwrap()]);
    wait_until("the run stages parts", || {
        count_objects(&store, "scores/ds=1/_staging") >= 3
    });
    proxy.cut();
    let o = child.wait_with_output().unwrap();
    let err = assert_exit(&o, 1);
    assert!(
        err.contains(&format!("s3://{b}/scores/ds=1")),
        "the error names the URL: {err}"
    );
    let names = download(&store, "scores/ds=1", &s.path("dead"));
    assert!(
        !names
            .iter()
            .any(|n| n == "_SUCCESS" || n == "_manifest.json" || n.starts_with("part-")),
        "nothing may be committed: {names:?}"
    );

    // The network is back: the rerun commits every row once and clears the dead staging.
    let proxy = Proxy::start(endpoint().trim_start_matches("http://").to_string());
    let job = s.job("cut.toml", &job_text(proxy.port));
    assert_ok(&s3_run(&s, &["run", job.to_str().unwrap()]));
    assert_bucket_output(
        &store,
        "scores/ds=1",
        &s.path("got"),
        "churn/expected.parquet",
        "customer_id",
        &["churn_probability"],
    );
}

#[test]
fn wrong_credentials_fail_fast_naming_the_url() {
    // A server of our own with authentication on: every request but the first (creating the
    // bucket) must carry credentials moto issued, which these are not.
    let server = std::env::var("BATCHSCORE_TEST_MOTO_SERVER")
        .expect("BATCHSCORE_TEST_MOTO_SERVER is not set: run the tests with scripts/test");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _moto = KillOnDrop(
        std::process::Command::new(server)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .env("INITIAL_NO_AUTH_ACTION_COUNT", "1")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let addr = format!("127.0.0.1:{port}");
    wait_until("moto answers", || {
        std::net::TcpStream::connect(&addr).is_ok()
    });
    let mut c = std::net::TcpStream::connect(&addr).unwrap();
    write!(
        c,
        "PUT /locked HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut reply = String::new();
    c.read_to_string(&mut reply).unwrap();
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");

    let s = Scratch::new();
    let text = churn_from_s3("locked", "m.onnx", "", &storage_table(true))
        .replace(&endpoint(), &format!("http://{addr}"));
    let job = s.job("creds.toml", &text);
    let started = Instant::now();
    let err = assert_exit(&s3_run(&s, &["run", job.to_str().unwrap()]), 2);
    assert!(
        err.contains("[input.uri]: s3://locked/churn/data/: cannot list:"),
        "{err}"
    );
    assert!(
        err.contains("403")
            || err.to_lowercase().contains("invalidaccesskeyid")
            || err.contains("Forbidden"),
        "{err}"
    );
    assert!(!err.contains(SECRET_KEY));
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "a refused credential is not retried"
    );
}

#[test]
fn a_model_over_http_needs_allow_http_and_is_cached() {
    // Python's own file server, on loopback, serving sample_data.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _server = KillOnDrop(
        std::process::Command::new("python3")
            .args([
                "-m",
                "http.server",
                "--bind",
                "127.0.0.1",
                &port.to_string(),
            ])
            .current_dir(repo().join("sample_data"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_until("http.server answers", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    let s = Scratch::new();
    let model = format!("http://127.0.0.1:{port}/fraud/fraud_xgb.onnx");
    let text = std::fs::read_to_string(repo().join("jobs/fraud.toml"))
        .unwrap()
        .replace("../sample_data/fraud/fraud_xgb.onnx", &model);
    let job = s.job("plain.toml", &text);
    let err = assert_exit(&s3_run(&s, &["run", job.to_str().unwrap()]), 2);
    assert!(
        err.contains(&format!("[model.uri]: model {model}: cannot fetch")),
        "{err}"
    );

    let job = s.job("allowed.toml", &(text + "[storage]\nallow_http = true\n"));
    assert_ok(&s3_run(&s, &["run", job.to_str().unwrap()]));
    let expected = read_parquet(Path::new(&sample("fraud/expected.parquet")));
    assert_matches(
        &read_output(&s.path("out/fraud")),
        &expected,
        "txn_id",
        &["fraud_probability"],
    );
    let cached: Vec<_> = std::fs::read_dir(s.path("cache/models"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "onnx"))
        .collect();
    assert_eq!(cached.len(), 1, "the model is cached by its sha256");
}

#[test]
fn throttling_and_server_errors_are_retried() {
    let s = Scratch::new();
    let b = churn_bucket("flaky");
    // The first three connections are throttled; the store's retries get past them.
    let proxy = Proxy::start_flaky(endpoint().trim_start_matches("http://").to_string(), 3);
    let text = churn_from_s3(&b, "models/churn.onnx", "", &storage_table(true))
        .replace(&endpoint(), &format!("http://127.0.0.1:{}", proxy.port))
        .replace("max_retries = 1", "max_retries = 5");
    let job = s.job("flaky.toml", &text);
    assert_ok(&s3_run(&s, &["run", job.to_str().unwrap()]));
    let expected = read_parquet(Path::new(&sample("churn/expected.parquet")));
    assert_matches(
        &read_output(&s.path("out/churn")),
        &expected,
        "customer_id",
        &["churn_probability"],
    );

    // With no retries allowed, the same throttling fails the run, naming the URL.
    let proxy = Proxy::start_flaky(endpoint().trim_start_matches("http://").to_string(), 3);
    let text = churn_from_s3(&b, "models/churn.onnx", "", &storage_table(true))
        .replace(&endpoint(), &format!("http://127.0.0.1:{}", proxy.port))
        .replace("max_retries = 1", "max_retries = 0");
    let job = s.job("strict.toml", &text);
    let err = assert_exit(&s3_run(&s, &["run", job.to_str().unwrap()]), 2);
    assert!(err.contains(&format!("s3://{b}/")), "{err}");
}

#[test]
fn server_side_encryption_applies_to_every_written_object() {
    let s = Scratch::new();
    let (b, _store) = bucket("sse");
    let text = churn_to_s3(&b, "error", "parquet")
        + "sse = \"aws:kms\"\nkms_key_id = \"arn:aws:kms:us-east-1:123456789012:key/batchscore-test\"\n";
    let job = s.job("sse.toml", &text);
    assert_ok(&s3_run(&s, &["run", job.to_str().unwrap()]));
    // moto's own view of the objects: SSE-KMS objects refuse unsigned HEAD requests, and the
    // store client does not expose encryption headers.
    let keys = moto_keys(&b);
    let written: Vec<_> = keys
        .iter()
        .filter(|k| k["name"].as_str().unwrap().starts_with("scores/ds=1/"))
        .collect();
    let names: Vec<&str> = written
        .iter()
        .map(|k| k["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"scores/ds=1/_SUCCESS") && names.iter().any(|n| n.ends_with(".parquet")),
        "{names:?}"
    );
    for k in written {
        assert_eq!(k["encryption"], "aws:kms", "{}", k["name"]);
        assert_eq!(
            k["kms_key_id"], "arn:aws:kms:us-east-1:123456789012:key/batchscore-test",
            "{}",
            k["name"]
        );
    }
}

/// The live (not deleted) objects moto holds in `bucket`, from its state API.
fn moto_keys(bucket: &str) -> Vec<serde_json::Value> {
    // HTTP/1.0: a plain body, never chunked.
    let reply = http_to_moto("GET /moto-api/data.json HTTP/1.0");
    let (_, body) = reply.split_once("\r\n\r\n").unwrap();
    let state: serde_json::Value = serde_json::from_str(body).unwrap();
    state["s3"]["FakeKey"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["bucket_name"] == bucket && k["disposed"] == false)
        .cloned()
        .collect()
}

#[test]
fn rejected_rows_are_committed_in_the_bucket_too() {
    let s = Scratch::new();
    let (b, store) = bucket("rejects");
    let text = churn_to_s3(&b, "error", "csv").replace("fill_null = 0.0\n", "");
    let job = s.job("rej.toml", &text);
    assert_ok(&s3_run(&s, &["run", job.to_str().unwrap()]));
    let names = download(&store, "scores/ds=1", &s.path("got"));
    assert!(
        names
            .iter()
            .any(|n| n.starts_with("_rejected/part-") && n.ends_with(".csv")),
        "{names:?}"
    );
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(s.path("got/_manifest.json")).unwrap())
            .unwrap();
    let rejected: u64 = manifest["rejected_files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            read_csv(&s.path("got").join(f["path"].as_str().unwrap()))["customer_id"].len() as u64
        })
        .sum();
    assert!(rejected > 0);
    assert_eq!(manifest["rejected_rows"], rejected);
    // Scored and rejected rows together are every selected row, each once.
    assert_eq!(manifest["rows"].as_u64().unwrap() + rejected, 1941);
}

#[test]
fn a_corrupt_manifest_in_the_bucket_is_refused_before_any_work_and_nothing_is_deleted() {
    let s = Scratch::new();
    let (b, store) = bucket("corrupt");
    let job = s.job("c.toml", &churn_to_s3(&b, "overwrite", "parquet"));
    assert_ok(&s3_run(&s, &["run", job.to_str().unwrap()]));
    let before = count_objects(&store, "scores/ds=1");
    let manifest = format!("s3://{b}/scores/ds=1/_manifest.json");
    // Not JSON, and JSON that is not a manifest: neither may read as "no previous parts",
    // which would leave this run's parts beside the old ones.
    for text in ["{\"run_id\": \"trunc", "{\"files\": \"part-0.parquet\"}"] {
        rt().block_on(store.put(
            &"scores/ds=1/_manifest.json".into(),
            PutPayload::from(text.as_bytes().to_vec()),
        ))
        .unwrap();
        for mode in ["overwrite", "skip"] {
            let job = s.job("m.toml", &churn_to_s3(&b, mode, "parquet"));
            let err = assert_exit(&s3_run(&s, &["run", job.to_str().unwrap()]), 2);
            assert!(
                err.contains(&format!(
                    "output {manifest}: cannot be read as a batchscore manifest"
                )),
                "{mode}: {err}"
            );
            assert_eq!(
                count_objects(&store, "scores/ds=1"),
                before,
                "{mode}: nothing written or deleted"
            );
        }
    }
}

/// A run split over four shards, its output in a bucket: two shards finish one after the
/// other, then the last two finish at the same moment (both held at a barrier once their
/// shard is recorded, so both find every shard finished). Exactly one commits; the output is
/// the rows of a single run, once each, and neither the run's folder nor staging is left.
#[test]
fn shards_in_a_bucket_commit_once_even_when_the_last_two_finish_together() {
    let s = Scratch::new();
    let (b, store) = bucket("shards");
    let text = std::fs::read_to_string(repo().join("jobs/fraud.toml"))
        .unwrap()
        .replace(
            "../sample_data",
            repo().join("sample_data").to_str().unwrap(),
        )
        .replace("../out/fraud/", &format!("s3://{b}/f/"))
        + &storage_table(true);
    let job = s.job("f.toml", &text);
    let job = job.to_str().unwrap();
    for i in 0..2 {
        let o = s3_run(&s, &["run", job, "--shard", &format!("{i}/4")]);
        assert_ok(&o);
        assert!(
            text_of(&o).contains(&format!("{} of 4 shards finished", i + 1)),
            "{}",
            text_of(&o)
        );
    }
    assert!(count_objects(&store, "f/_run") > 0);
    let barrier = s.path("barrier");
    let spawn = |i: usize| {
        s3_command(&s, &["run", job, "--shard", &format!("{i}/4")])
            .env(
                BARRIER_VAR,
                format!("shard-finished:{}:2", barrier.display()),
            )
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, c) = (spawn(2), spawn(3));
    let (a, c) = (a.wait_with_output().unwrap(), c.wait_with_output().unwrap());
    assert_ok(&a);
    assert_ok(&c);
    assert_eq!(std::fs::read_dir(&barrier).map_or(0, Iterator::count), 2);
    let lines = [text_of(&a), text_of(&c)];
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.contains("committed the run"))
            .count(),
        1,
        "{lines:?}"
    );
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.contains("another shard is committing run"))
            .count(),
        1,
        "{lines:?}"
    );
    assert_eq!(
        count_objects(&store, "f/_run"),
        0,
        "the run's folder is gone"
    );
    assert_bucket_output(
        &store,
        "f",
        &s.path("got"),
        "fraud/expected.parquet",
        "txn_id",
        &["fraud_probability", "fraud_label"],
    );
}

fn text_of(o: &std::process::Output) -> String {
    text(o).0
}

/// The fraud job over `replicated_fraud_input` in a bucket (2 files, 20 row groups), its
/// output in the bucket under `out`, parts of at most 1,000 rows.
fn replicated_fraud_bucket(
    s: &Scratch,
    name: &str,
    copies: usize,
) -> (String, impl ObjectStore, Table) {
    let (b, store) = bucket(name);
    let expected = replicated_fraud_input(&s.path("in"), 2, copies);
    upload_dir(&store, &s.path("in"), "in");
    (b, store, expected)
}

fn replicated_fraud_job(s: &Scratch, bucket: &str, out: &str) -> std::path::PathBuf {
    let text = std::fs::read_to_string(repo().join("jobs/fraud.toml"))
        .unwrap()
        .replace(
            "uri = \"../sample_data/fraud/transactions.parquet\"",
            &format!("uri = \"s3://{bucket}/in/\""),
        )
        .replace(
            "../sample_data",
            repo().join("sample_data").to_str().unwrap(),
        )
        .replace("../out/fraud/", &format!("s3://{bucket}/{out}/"))
        .replace(
            "mode = \"overwrite\"",
            "mode = \"overwrite\"\nmax_rows_per_file = 1000",
        )
        + &storage_table(true);
    s.job(&format!("{out}.toml"), &text)
}

/// Starts `args` held at the test barrier `point` and kills it there.
fn kill_at(s: &Scratch, args: &[&str], point: &str) {
    let barrier = s.path(&format!("barrier-{point}"));
    let child = s3_command(s, args)
        .env(BARRIER_VAR, format!("{point}:{}:2", barrier.display()))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut child = KillOnDrop(child);
    wait_until("the run reaches the barrier", || {
        std::fs::read_dir(&barrier).is_ok_and(|d| d.count() == 1)
    });
    child.0.kill().unwrap();
    child.0.wait().unwrap();
}

/// A shard killed mid-way, with parts of its own already staged in the bucket, and run again
/// alone completes the run: every row once, with onnxruntime's scores, and nothing of the
/// dead attempt left.
#[test]
fn a_shard_killed_mid_way_and_run_again_completes_the_run_in_a_bucket() {
    let s = Scratch::new();
    let (b, store, expected) = replicated_fraud_bucket(&s, "killed-shard", 2);
    let job = replicated_fraud_job(&s, &b, "f");
    let job = job.to_str().unwrap();
    for i in [0, 2] {
        assert_ok(&s3_run(&s, &["run", job, "--shard", &format!("{i}/3")]));
    }
    kill_at(&s, &["run", job, "--shard", "1/3"], "part-rolled");
    let staged: Vec<_> = {
        use futures::TryStreamExt;
        rt().block_on(
            store
                .list(Some(&"f/_run/parts".into()))
                .try_collect::<Vec<_>>(),
        )
        .unwrap()
    };
    assert!(
        staged
            .iter()
            .any(|m| m.location.as_ref().starts_with("f/_run/parts/1-")),
        "the dead attempt staged a part: {staged:?}"
    );
    assert_eq!(count_objects(&store, "f/_run/shards/1.json"), 0);
    assert_eq!(count_objects(&store, "f/_SUCCESS"), 0);
    let o = s3_run(&s, &["run", job, "--shard", "1/3"]);
    assert_ok(&o);
    assert!(text_of(&o).contains("committed the run"), "{}", text_of(&o));
    assert_eq!(
        count_objects(&store, "f/_run"),
        0,
        "nothing of the run folder is left"
    );
    download(&store, "f", &s.path("got"));
    assert_matches(
        &read_output(&s.path("got")),
        &expected,
        "txn_id",
        &["fraud_probability", "fraud_label"],
    );
}

/// `--resume` in a bucket: killed after 16 of its 20 pieces, the run resumed skips them (its
/// metrics say so) and commits what an uninterrupted run commits, which is onnxruntime's.
#[test]
fn a_resumed_run_in_a_bucket_skips_finished_pieces_and_equals_an_uninterrupted_run() {
    let s = Scratch::new();
    let (b, store, expected) = replicated_fraud_bucket(&s, "resume", 2);
    let job = replicated_fraud_job(&s, &b, "f");
    let job = job.to_str().unwrap();
    kill_at(&s, &["run", job, "--resume"], "piece-15");
    assert_eq!(count_objects(&store, "f/_run/shards"), 16);
    assert_eq!(count_objects(&store, "f/_SUCCESS"), 0);
    let o = s3_run(&s, &["run", job, "--resume", "--json"]);
    assert_ok(&o);
    let m: serde_json::Value = serde_json::from_str(&text_of(&o)).unwrap();
    assert_eq!(m["resumed"]["pieces"], 20);
    assert_eq!(m["resumed"]["pieces_skipped"], 16);
    assert_eq!(m["resumed"]["rows_skipped"], 8000);
    assert_eq!(m["rows"]["scored"], 10_000);
    assert_eq!(count_objects(&store, "f/_run"), 0);

    let whole = replicated_fraud_job(&s, &b, "whole");
    assert_ok(&s3_run(&s, &["run", whole.to_str().unwrap()]));
    download(&store, "f", &s.path("resumed"));
    download(&store, "whole", &s.path("whole"));
    let resumed = read_output(&s.path("resumed"));
    let columns = ["fraud_probability", "fraud_label"];
    assert_matches(&resumed, &read_output(&s.path("whole")), "txn_id", &columns);
    assert_matches(&resumed, &expected, "txn_id", &columns);
}

/// A model registry under a bucket prefix, spoken to with the job's `[storage]` settings
/// (`--spec`): a version registered (created only if absent: a second one of that name is
/// refused), an alias set, and a run by that alias scoring what onnxruntime scores.
#[test]
fn a_registry_in_a_bucket_registers_moves_an_alias_and_scores_by_it() {
    use sha2::{Digest, Sha256};
    let s = Scratch::new();
    let (b, store) = bucket("registry");
    upload_dir(&store, &repo().join("sample_data/churn/data"), "churn/data");
    let reg = format!("s3://{b}/registry");
    let model = sample("churn/churn_lgbm.onnx");
    let model_bytes = std::fs::read(&model).unwrap();
    let sha = hex::encode(Sha256::digest(&model_bytes));
    let file_model = format!("[model]\nuri = \"s3://{b}/models/churn.onnx\"\n");
    let text = churn_from_s3(&b, "models/churn.onnx", "", &storage_table(true));
    assert!(text.contains(&file_model));
    let text = text
        .replace(
            &file_model,
            &format!("[model]\nregistry = \"{reg}\"\nname = \"churn\"\nalias = \"champion\"\n"),
        )
        .replace(
            "mode = \"overwrite\"\n",
            "mode = \"overwrite\"\nmodel_version_column = \"model_version\"\n",
        );
    let job = s.job("registry.toml", &text);
    let job = job.to_str().unwrap();
    let models = |args: &[&str]| {
        let store_args = ["--registry", reg.as_str(), "--spec", job];
        s3_run(&s, &[&["models"], args, &store_args[..]].concat())
    };

    let o = models(&["register", "churn", &model]);
    assert_ok(&o);
    assert_eq!(
        text_of(&o),
        format!("registered churn version 1 at {reg}/churn/1 (sha256 {sha})\n")
    );
    let get = |key: &str| {
        rt().block_on(async { store.get(&key.into()).await.unwrap().bytes().await.unwrap() })
    };
    assert_eq!(get("registry/churn/1/model.onnx").to_vec(), model_bytes);
    let card: batchscore::model::registry::ModelCard =
        toml::from_str(std::str::from_utf8(&get("registry/churn/1/model.toml")).unwrap()).unwrap();
    assert_eq!((card.version.as_str(), card.sha256.as_str()), ("1", &*sha));

    // The version exists: another file of that name is refused, and the bucket keeps the first.
    let o = models(&[
        "register",
        "churn",
        &sample("fraud/fraud_xgb.onnx"),
        "--version",
        "1",
    ]);
    assert_eq!(
        assert_exit(&o, 2),
        format!(
            "error: {reg}/churn/1: version 1 of \"churn\" exists already; a registered version is never replaced: register a new version\n"
        )
    );
    assert_eq!(get("registry/churn/1/model.onnx").to_vec(), model_bytes);

    // No alias yet: the run is refused, naming the aliases there are (none).
    let o = s3_run(&s, &["run", job]);
    assert_eq!(
        assert_exit(&o, 2),
        format!(
            "error: job spec {job}: [model.alias]: model registry {reg}: model \"churn\" has no alias \"champion\" (aliases: none)\n"
        )
    );
    assert!(!s.path("out").exists());

    let o = models(&["alias", "churn", "champion", "1"]);
    assert_ok(&o);
    assert_eq!(text_of(&o), "churn: champion -> 1\n");
    assert_eq!(
        &get("registry/churn/aliases.json")[..],
        b"{\n  \"champion\": \"1\"\n}\n"
    );
    let o = models(&["list"]);
    assert_ok(&o);
    assert_eq!(
        text_of(&o),
        format!(
            "{:<16} {:<8} {:<24} {:<14} ALIASES\n{:<16} {:<8} {:<24} {:<14} champion\n",
            "NAME",
            "VERSION",
            "CREATED",
            "SHA256",
            "churn",
            "1",
            card.created,
            &sha[..12]
        )
    );

    assert_ok(&s3_run(&s, &["run", job]));
    let got = read_output(&s.path("out/churn"));
    let expected = read_parquet(Path::new(&sample("churn/expected.parquet")));
    assert_matches(
        &got,
        &expected,
        "customer_id",
        &["region", "churn_probability", "churn_label"],
    );
    assert_eq!(
        texts(&got["model_version"]),
        vec!["1".to_string(); expected["customer_id"].len()]
    );
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(s.path("out/churn/_metrics.json")).unwrap())
            .unwrap();
    assert_eq!(
        metrics["model"]["registered"],
        serde_json::json!({"registry": reg, "name": "churn", "version": "1", "alias": "champion"})
    );
    assert_eq!(
        metrics["model"]["uri"],
        format!("{reg}/churn/1/model.onnx").as_str()
    );
    assert_eq!(metrics["model"]["sha256"], sha.as_str());
}

/// An S3 server of a test's own (`scripts/s3-test-server.py`) that records the encryption
/// headers of every PUT and POST it receives, and a bucket in it.
struct RecordingServer {
    _moto: KillOnDrop,
    url: String,
    log: std::path::PathBuf,
}

impl RecordingServer {
    fn start(s: &Scratch, bucket: &str) -> Self {
        let server = std::env::var("BATCHSCORE_TEST_MOTO_SERVER")
            .expect("BATCHSCORE_TEST_MOTO_SERVER is not set: run the tests with scripts/test");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = s.path("s3-headers.jsonl");
        let moto = KillOnDrop(
            std::process::Command::new(server)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .env("BATCHSCORE_TEST_S3_HEADER_LOG", &log)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap(),
        );
        let addr = format!("127.0.0.1:{port}");
        wait_until("moto answers", || {
            std::net::TcpStream::connect(&addr).is_ok()
        });
        let mut c = std::net::TcpStream::connect(&addr).unwrap();
        write!(
            c,
            "PUT /{bucket} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut reply = String::new();
        c.read_to_string(&mut reply).unwrap();
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
        Self {
            _moto: moto,
            url: format!("http://{addr}"),
            log,
        }
    }

    /// The requests that created an object in `bucket`: whole-object PUTs, copies and the
    /// creation of multipart uploads (an upload's parts and its completion carry no
    /// encryption headers, in S3 as here).
    fn object_writes(&self, bucket: &str) -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|r| {
                let path = r["path"].as_str().unwrap();
                let query = r["query"].as_str().unwrap();
                path.starts_with(&format!("/{bucket}/"))
                    && match r["method"].as_str().unwrap() {
                        "PUT" => !query.contains("uploadId="),
                        _ => query.starts_with("uploads"),
                    }
            })
            .collect()
    }
}

/// Every object a run writes asks the server for encryption, with the key: the staged parts,
/// rejected parts, manifest, metrics and `_SUCCESS`, the copies into place, and a sharded
/// run's folder. `require_encryption` without `sse` is refused before anything is written.
#[test]
fn every_object_written_carries_the_server_side_encryption_headers() {
    let key = "arn:aws:kms:us-east-1:123456789012:key/batchscore-test";
    for (sse, kms_key_id) in [("AES256", None), ("aws:kms", Some(key))] {
        let s = Scratch::new();
        let b = format!("ssehdr-{}", std::process::id());
        let server = RecordingServer::start(&s, &b);
        let churn = churn_to_s3(&b, "error", "csv")
            .replace("fill_null = 0.0\n", "")
            .replace(
                "format = \"csv\"",
                "format = \"csv\"\nrequire_encryption = true",
            )
            .replace(&endpoint(), &server.url);
        if sse == "AES256" {
            let job = s.job("plain.toml", &churn);
            let err = assert_exit(&s3_run(&s, &["run", job.to_str().unwrap()]), 2);
            assert!(
                err.contains("[output.require_encryption]: s3://")
                    && err.contains("set sse = \"AES256\""),
                "{err}"
            );
            assert_eq!(server.object_writes(&b), Vec::<serde_json::Value>::new());
        }
        let table = format!("sse = \"{sse}\"\n")
            + &kms_key_id
                .map(|k| format!("kms_key_id = \"{k}\"\n"))
                .unwrap_or_default();
        let job = s.job("c.toml", &(churn + &table));
        assert_ok(&s3_run(&s, &["run", job.to_str().unwrap()]));
        let fraud = std::fs::read_to_string(repo().join("jobs/fraud.toml"))
            .unwrap()
            .replace(
                "../sample_data",
                repo().join("sample_data").to_str().unwrap(),
            )
            .replace("../out/fraud/", &format!("s3://{b}/f/"))
            + &storage_table(true).replace(&endpoint(), &server.url)
            + &table;
        let job = s.job("f.toml", &fraud);
        for shard in ["0/2", "1/2"] {
            assert_ok(&s3_run(
                &s,
                &["run", job.to_str().unwrap(), "--shard", shard],
            ));
        }
        let writes = server.object_writes(&b);
        let paths: Vec<String> = writes
            .iter()
            .map(|w| {
                let copy = if w["copy_source"].is_null() {
                    ""
                } else {
                    " (copy)"
                };
                format!("{}{copy}", w["path"].as_str().unwrap())
            })
            .collect();
        for want in [
            "/scores/ds=1/_staging/",
            "/scores/ds=1/_rejected/part-",
            "/scores/ds=1/_manifest.json",
            "/scores/ds=1/_metrics.json",
            "/scores/ds=1/_SUCCESS",
            ".csv (copy)",
            "/f/_run/",
            "/f/_SUCCESS",
        ] {
            assert!(paths.iter().any(|p| p.contains(want)), "{want}: {paths:#?}");
        }
        assert!(
            paths
                .iter()
                .any(|p| p.contains("/f/_run/") && p.ends_with(".json")),
            "{paths:#?}"
        );
        for w in &writes {
            assert_eq!(w["sse"], sse, "{w}");
            assert_eq!(w["kms_key_id"].as_str(), kms_key_id, "{w}");
        }
    }
}

/// `batchscore score` with no spec: the model and the rows in the bucket, the output
/// committed there, the store's endpoint from the environment as a user's shell gives it.
#[test]
fn score_without_a_spec_reads_and_commits_in_a_bucket() {
    let s = Scratch::new();
    let (b, store) = bucket("adhoc-score");
    upload_dir(&store, &repo().join("sample_data/churn/data"), "churn/data");
    upload_file(
        &store,
        &sample("churn/churn_lgbm.onnx"),
        "models/churn.onnx",
    );
    let o = s3_command(
        &s,
        &[
            "score",
            &format!("s3://{b}/models/churn.onnx"),
            &format!("s3://{b}/churn/data/"),
            "-o",
            &format!("s3://{b}/preds/"),
            "--key",
            "customer_id",
            "--columns",
            "features=tenure,monthly_charges,total_charges,ln(1 + support_calls),is_senior",
            "--fill-null",
            "0",
            "--query",
            "SELECT * FROM input WHERE region <> 'apac'",
            "--output",
            "churn_probability=probabilities[1]",
        ],
    )
    .env("AWS_ENDPOINT_URL", endpoint())
    .env("AWS_ALLOW_HTTP", "true")
    .output()
    .unwrap();
    assert_ok(&o);
    assert_bucket_output(
        &store,
        "preds",
        &s.path("downloaded"),
        "churn/expected.parquet",
        "customer_id",
        &["churn_probability"],
    );
}

#[test]
fn a_text_model_its_tokenizer_and_its_texts_in_a_bucket_equal_the_oracle() {
    use common::text_models::*;
    let s = Scratch::new();
    let (b, store) = bucket("text");
    upload_file(&store, &tickets(), "text/tickets.parquet");
    upload_file(&store, &minilm("model.onnx"), "models/minilm/model.onnx");
    // The tokenizer is read through the same store as the model, not from a local path.
    upload_file(
        &store,
        &minilm("tokenizer.json"),
        "models/minilm/tokenizer.json",
    );
    let job = s.job(
        "t.toml",
        &format!(
            r#"
name = "tickets-s3"
[input]
uri = "s3://{b}/text/tickets.parquet"
[model]
uri = "s3://{b}/models/minilm/model.onnx"
[tokenizer]
uri = "s3://{b}/models/minilm/tokenizer.json"
text = "text"
[output]
uri = "../out/tickets/"
passthrough = ["ticket_id"]
[outputs]
embedding = {{ from = "last_hidden_state", pool = "mean", normalize = true }}
{storage}
"#,
            storage = storage_table(true)
        ),
    );
    assert_ok(&s3_run(&s, &["run", job.to_str().unwrap()]));
    let out = s.path("out/tickets");
    let oracle = mean_embedding_oracle(128);
    assert_vectors_close(
        "embedding",
        &vectors_by_id(&read_output(&out), "embedding"),
        &oracle.by_id(),
    );
    let metrics = read_json(&out.join("_metrics.json"));
    assert!(oracle.truncated > 0);
    assert_eq!(
        metrics["text"]["truncated"], oracle.truncated,
        "{metrics:#}"
    );
    assert_eq!(metrics["text"]["tokens"], oracle.tokens, "{metrics:#}");
}
