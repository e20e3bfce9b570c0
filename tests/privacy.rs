//! `[privacy]`: sensitive columns leave only under their policies, in the written rows and in
//! `_rejected/` rows, never in a rejected row's `_value`, a distribution, a log or a report.
//! The real binary runs on specs written into a temp dir; expected values are computed here
//! (the HMAC by Python's `hmac` module).

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use common::*;
use datafusion::arrow::array::{
    ArrayRef, Date32Array, Float64Array, Int32Array, RecordBatch, StringArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::parquet::arrow::ArrowWriter;

/// The key every hashing test uses: 40 bytes, from the environment.
const KEY: &str = "privacy-test-key-0123456789-abcdefghijkl";

/// One input row: `acct` is the (sensitive) feature `a`; `b` the other feature.
struct Row {
    row_id: i32,
    acct: Option<&'static str>,
    b: i32,
    email: Option<&'static str>,
    phone: &'static str,
    dob: &'static str,
    amount: f64,
    name: &'static str,
}

/// Rows 1 (an account that is no number) and 2 (no account, no fill) are rejected.
const ROWS: [Row; 5] = [
    Row {
        row_id: 0,
        acct: Some("17"),
        b: 2,
        email: Some("ann.lee@example.com"),
        phone: "+1 555 0100",
        dob: "1990-01-02",
        amount: 12.5,
        name: "Ann Lee",
    },
    Row {
        row_id: 1,
        acct: Some("x-SECRET-acct-9"),
        b: 3,
        email: Some("bob.kay@example.org"),
        phone: "+44 7700 900123",
        dob: "1985-07-30",
        amount: 99.25,
        name: "Bob Kay",
    },
    Row {
        row_id: 2,
        acct: None,
        b: 4,
        email: None,
        phone: "555-0199",
        dob: "2001-12-31",
        amount: 7.0,
        name: "Cy Dee",
    },
    Row {
        row_id: 3,
        acct: Some("5"),
        b: 1,
        email: Some("zoë.ünï@example.net"),
        phone: "0712 345 678",
        dob: "1979-03-04",
        amount: 0.5,
        name: "Zoë Ünï",
    },
    Row {
        row_id: 4,
        acct: Some("8"),
        b: 6,
        email: Some("dan.oak@example.com"),
        phone: "+33 6 12 34 56 78",
        dob: "1968-11-09",
        amount: 1234.0,
        name: "Dan Oak",
    },
];

/// The sensitive values no file of a run, nor its logs, may hold.
fn seeded() -> Vec<&'static str> {
    let mut v: Vec<&str> = ROWS.iter().filter_map(|r| r.email).collect();
    v.extend(ROWS.iter().map(|r| r.phone));
    v.extend(ROWS.iter().map(|r| r.name));
    v.push("x-SECRET-acct-9");
    v
}

fn write_csv(path: &Path, malformed: Option<&str>) {
    let mut text = "row_id,acct,b,email,phone,dob,amount,name\n".to_string();
    for r in &ROWS {
        text.push_str(&format!(
            "{},{},{},{},\"{}\",{},{},\"{}\"\n",
            r.row_id,
            r.acct.unwrap_or(""),
            r.b,
            r.email.unwrap_or(""),
            r.phone,
            r.dob,
            r.amount,
            r.name
        ));
    }
    if let Some(line) = malformed {
        text.push_str(line);
    }
    std::fs::write(path, text).unwrap();
}

fn write_parquet(path: &Path) {
    let days = |d: &str| {
        let date = chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").unwrap();
        let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1).unwrap();
        (date - epoch).num_days() as i32
    };
    let schema = Arc::new(Schema::new(vec![
        Field::new("row_id", DataType::Int32, false),
        Field::new("acct", DataType::Utf8, true),
        Field::new("b", DataType::Int32, false),
        Field::new("email", DataType::Utf8, true),
        Field::new("phone", DataType::Utf8, false),
        Field::new("dob", DataType::Date32, false),
        Field::new("amount", DataType::Float64, false),
        Field::new("name", DataType::Utf8, false),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int32Array::from_iter_values(ROWS.iter().map(|r| r.row_id))),
        Arc::new(StringArray::from_iter(ROWS.iter().map(|r| r.acct))),
        Arc::new(Int32Array::from_iter_values(ROWS.iter().map(|r| r.b))),
        Arc::new(StringArray::from_iter(ROWS.iter().map(|r| r.email))),
        Arc::new(StringArray::from_iter_values(ROWS.iter().map(|r| r.phone))),
        Arc::new(Date32Array::from_iter_values(
            ROWS.iter().map(|r| days(r.dob)),
        )),
        Arc::new(Float64Array::from_iter_values(
            ROWS.iter().map(|r| r.amount),
        )),
        Arc::new(StringArray::from_iter_values(ROWS.iter().map(|r| r.name))),
    ];
    let batch = RecordBatch::try_new(schema.clone(), columns).unwrap();
    let mut w = ArrowWriter::try_new(std::fs::File::create(path).unwrap(), schema, None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

/// HMAC-SHA256 of each value under `key`, by Python's `hmac` module.
fn python_hmac(key: &str, encoding: &str, values: &[&str]) -> Vec<String> {
    let mut args = vec![key, encoding];
    args.extend(values);
    serde_json::from_value(oracle("hmac_sha256.py", &args)).unwrap()
}

/// A job over `input` scoring `rank1_int.onnx` (a = acct, b), writing `format` to `out`.
fn job(input: &str, format: &str, out: &str, privacy: &str) -> String {
    format!(
        r#"name = "privacy"
[input]
uri = "{input}"
[model]
uri = "{model}"
[inputs.a]
columns = ["acct"]
[output]
uri = "{out}"
format = "{format}"
passthrough = ["row_id", "email", "phone", "dob", "amount", "name"]
{privacy}"#,
        model = sample("synthetic/rank1_int.onnx"),
    )
}

/// The policies of the first set: hex hash (key from the environment), mask, truncate,
/// redact (default mask), drop.
const POLICIES_A: &str = r#"[privacy]
sensitive = ["email", "phone", "dob", "amount", "name", "acct"]
[privacy.policies.email]
policy = "hash"
key = "${env:BATCHSCORE_PRIVACY_TEST_KEY}"
[privacy.policies.phone]
policy = "mask"
keep_last = 4
[privacy.policies.dob]
policy = "truncate"
keep_first = 4
[privacy.policies.amount]
policy = "redact"
[privacy.policies.name]
policy = "drop"
"#;

/// The second set: base64 hash (key from a file), keep, truncate, redact with a mask, drop.
const POLICIES_B: &str = r#"[privacy]
sensitive = ["email", "phone", "dob", "amount", "name"]
[privacy.policies.email]
policy = "hash"
key_file = "../key.txt"
encoding = "base64"
[privacy.policies.phone]
policy = "keep"
[privacy.policies.dob]
policy = "truncate"
keep_first = 7
[privacy.policies.amount]
policy = "redact"
mask = "[hidden]"
[privacy.policies.name]
policy = "drop"
"#;

/// A cell as text: integers and text as written, null as `None`.
fn cell_text(c: &Cell) -> Option<String> {
    match c {
        Cell::Null => None,
        Cell::Text(t) => Some(t.clone()),
        Cell::Int(i) => Some(i.to_string()),
        other => panic!("not a policed value: {other:?}"),
    }
}

/// The policed pass-through columns of `table` by row id.
fn by_row(table: &Table) -> BTreeMap<i64, Vec<Option<String>>> {
    let ids = &table["row_id"];
    (0..ids.len())
        .map(|i| {
            let Cell::Int(id) = ids[i] else {
                panic!("row_id {:?}", ids[i])
            };
            let policed = ["email", "phone", "dob", "amount"]
                .iter()
                .map(|c| cell_text(&table[*c][i]))
                .collect();
            (id, policed)
        })
        .collect()
}

/// What each row's policed columns must be, under set A or B.
fn expected(set_a: bool) -> BTreeMap<i64, Vec<Option<String>>> {
    let emails: Vec<&str> = ROWS.iter().filter_map(|r| r.email).collect();
    let hashes = if set_a {
        python_hmac(KEY, "hex", &emails)
    } else {
        python_hmac(KEY, "base64", &emails)
    };
    let mut hashes = hashes.into_iter();
    ROWS.iter()
        .map(|r| {
            let email = r.email.map(|_| hashes.next().unwrap());
            let phone = if set_a {
                let n = r.phone.chars().count();
                let masked: String = r
                    .phone
                    .chars()
                    .enumerate()
                    .map(|(i, c)| if i + 4 < n { '*' } else { c })
                    .collect();
                masked
            } else {
                r.phone.to_string()
            };
            let keep = if set_a { 4 } else { 7 };
            let dob: String = r.dob.chars().take(keep).collect();
            let amount = if set_a { "<redacted>" } else { "[hidden]" };
            let row = vec![email, Some(phone), Some(dob), Some(amount.to_string())];
            (i64::from(r.row_id), row)
        })
        .collect()
}

fn scratch_with_inputs() -> Scratch {
    let s = Scratch::new();
    write_csv(&s.path("in.csv"), None);
    write_parquet(&s.path("in.parquet"));
    std::fs::write(s.path("key.txt"), format!("{KEY}\n")).unwrap();
    s
}

fn run_job(s: &Scratch, name: &str, text: &str) -> std::process::Output {
    let job = s.job(name, text);
    batchscore()
        .args(["run", job.to_str().unwrap()])
        .env("BATCHSCORE_PRIVACY_TEST_KEY", KEY)
        .output()
        .unwrap()
}

#[test]
fn every_policy_on_parquet_and_csv_outputs_and_on_rejected_rows() {
    let s = scratch_with_inputs();
    let cases = [
        ("../in.csv", "parquet", POLICIES_A, true),
        ("../in.parquet", "csv", POLICIES_A, true),
        ("../in.parquet", "parquet", POLICIES_B, false),
        ("../in.csv", "csv", POLICIES_B, false),
    ];
    for (k, (input, format, policies, set_a)) in cases.into_iter().enumerate() {
        let out = format!("../out/{k}/");
        let o = run_job(
            &s,
            &format!("p{k}.toml"),
            &job(input, format, &out, policies),
        );
        assert_ok(&o);
        let dir = s.path(&format!("out/{k}"));
        let written = read_output(&dir);
        assert!(!written.contains_key("name"), "a dropped column is written");
        let rejected = read_rejected(&dir);
        assert!(
            !rejected.contains_key("name"),
            "a dropped column is rejected"
        );
        let want = expected(set_a);
        let (got, got_rej) = (by_row(&written), by_row(&rejected));
        assert_eq!(
            got.keys().copied().collect::<Vec<_>>(),
            [0, 3, 4],
            "case {k}"
        );
        assert_eq!(
            got_rej.keys().copied().collect::<Vec<_>>(),
            [1, 2],
            "case {k}"
        );
        for (id, row) in got.iter().chain(&got_rej) {
            assert_eq!(row, &want[id], "case {k} ({input} -> {format}), row {id}");
        }
        // The sensitive feature's offending value is not shown.
        assert_eq!(
            texts(&rejected["_value"]),
            if set_a {
                ["<redacted>", "null"]
            } else {
                ["x-SECRET-acct-9", "null"]
            },
            "case {k}"
        );
    }
}

/// Runs `validate` on a job and returns its stderr, which must end in exit code `code`.
fn validate(s: &Scratch, name: &str, spec: &str, code: i32) -> (String, String) {
    let job = s.job(name, spec);
    let o = batchscore()
        .args(["validate", job.to_str().unwrap()])
        .env("BATCHSCORE_PRIVACY_TEST_KEY", KEY)
        .env_remove("BATCHSCORE_PRIVACY_SHORT_KEY")
        .output()
        .unwrap();
    assert_exit(&o, code);
    text(&o)
}

#[test]
fn a_sensitive_passthrough_column_without_a_policy_is_refused() {
    let s = scratch_with_inputs();
    let privacy = "[privacy]\nsensitive = [\"email\", \"name\"]\n[privacy.policies.name]\npolicy = \"drop\"\n";
    let (_, err) = validate(
        &s,
        "no.toml",
        &job("../in.csv", "parquet", "../out/no/", privacy),
        2,
    );
    assert_eq!(
        err,
        format!(
            "error: job spec {}: [output.passthrough[1]]: column \"email\" is listed in [privacy] sensitive and would leave by output.passthrough with no policy: give it one in [privacy.policies.email] (policy = \"drop\", \"redact\", \"hash\", \"truncate\", \"mask\" or \"keep\")\n",
            s.path("jobs/no.toml").display()
        )
    );
    assert!(!s.path("out/no").exists());
}

#[test]
fn a_column_derived_from_a_sensitive_one_is_refused_until_it_has_a_policy() {
    let s = scratch_with_inputs();
    let spec = |policy: &str| {
        format!(
            r#"name = "derived"
[input]
uri = "../in.csv"
query = "SELECT row_id, acct, b, upper(email) AS e FROM input"
[model]
uri = "{model}"
[inputs.a]
columns = ["acct"]
[output]
uri = "../out/derived/"
passthrough = ["row_id", "e"]
[privacy]
sensitive = ["email"]
{policy}"#,
            model = sample("synthetic/rank1_int.onnx"),
        )
    };
    let (_, err) = validate(&s, "derived.toml", &spec(""), 2);
    assert_eq!(
        err,
        format!(
            "error: job spec {}: [output.passthrough[1]]: column \"e\" is derived by [input] query from sensitive \"email\" and would leave by output.passthrough with no policy: give it one in [privacy.policies.e] (policy = \"drop\", \"redact\", \"hash\", \"truncate\", \"mask\" or \"keep\")\n",
            s.path("jobs/derived.toml").display()
        )
    );
    let hashed =
        "[privacy.policies.e]\npolicy = \"hash\"\nkey = \"${env:BATCHSCORE_PRIVACY_TEST_KEY}\"\n";
    let (out, _) = validate(&s, "derived.toml", &spec(hashed), 0);
    assert!(
        out.contains("  privacy: column \"email\" (sensitive): never leaves\n")
            && out.contains("  privacy: column \"e\" (derived from \"email\"): leaves by output.passthrough (written rows and _rejected/ rows) under hash (HMAC-SHA256, hex)\n"),
        "{out}"
    );
    let o = run_job(&s, "derived.toml", &spec(hashed));
    assert_ok(&o);
    let got = read_output(&s.path("out/derived"));
    let want_emails: Vec<String> = [0, 3, 4]
        .iter()
        .map(|&i| ROWS[i].email.unwrap().to_uppercase())
        .collect();
    let refs: Vec<&str> = want_emails.iter().map(String::as_str).collect();
    assert_eq!(texts(&got["e"]), python_hmac(KEY, "hex", &refs));
}

#[test]
fn validate_prints_where_each_sensitive_column_goes() {
    let s = scratch_with_inputs();
    let (out, _) = validate(
        &s,
        "a.toml",
        &job("../in.csv", "parquet", "../out/a/", POLICIES_A),
        0,
    );
    let lines: Vec<&str> = out.lines().filter(|l| l.contains("privacy:")).collect();
    assert_eq!(
        lines,
        [
            "  privacy: column \"email\" (sensitive): leaves by output.passthrough (written rows and _rejected/ rows) under hash (HMAC-SHA256, hex)",
            "  privacy: column \"phone\" (sensitive): leaves by output.passthrough (written rows and _rejected/ rows) under mask (last 4 characters, the others '*')",
            "  privacy: column \"dob\" (sensitive): leaves by output.passthrough (written rows and _rejected/ rows) under truncate (first 4 characters)",
            "  privacy: column \"amount\" (sensitive): leaves by output.passthrough (written rows and _rejected/ rows) under redact (every value \"<redacted>\")",
            "  privacy: column \"name\" (sensitive): dropped from output.passthrough, never leaves",
            "  privacy: column \"acct\" (sensitive): read by a feature, never leaves",
        ]
    );
}

#[test]
fn a_short_or_missing_key_is_refused() {
    let s = scratch_with_inputs();
    let with = |email: &str| {
        let privacy = format!(
            "[privacy]\nsensitive = [\"email\"]\n[privacy.policies.email]\npolicy = \"hash\"\n{email}"
        );
        job("../in.csv", "parquet", "../out/k/", &privacy)
            .replace(", \"name\"", "")
            .replace(", \"phone\", \"dob\", \"amount\"", "")
    };
    let file = s.path("jobs/k.toml");
    let cases = [
        ("key = \"too-short\"\n", "[privacy.policies.email.key]: the key has 9 bytes; a hash key needs at least 32".to_string()),
        ("key = \"${env:BATCHSCORE_PRIVACY_SHORT_KEY}\"\n", "[privacy.policies.email.key]: ${env:BATCHSCORE_PRIVACY_SHORT_KEY}: the environment variable BATCHSCORE_PRIVACY_SHORT_KEY is not set".to_string()),
        ("", "[privacy.policies.email.key]: policy \"hash\" needs a key: key = \"${env:NAME}\" or key_file = \"path\"".to_string()),
        ("key_file = \"../nokey.txt\"\n", format!("[privacy.policies.email.key_file]: cannot read the key file {}: No such file or directory (os error 2)", s.path("nokey.txt").display())),
    ];
    for (email, message) in cases {
        let (_, err) = validate(&s, "k.toml", &with(email), 2);
        assert_eq!(
            err,
            format!("error: job spec {}: {message}\n", file.display()),
            "{email}"
        );
    }
    std::fs::write(s.path("short.txt"), "0123456789\n").unwrap();
    let (_, err) = validate(&s, "k.toml", &with("key_file = \"../short.txt\"\n"), 2);
    assert_eq!(
        err,
        format!(
            "error: job spec {}: [privacy.policies.email.key_file]: the key file {} holds 10 bytes; a hash key needs at least 32\n",
            file.display(),
            s.path("short.txt").display()
        )
    );
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut all = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            all.extend(files_under(&p));
        } else {
            all.push(p);
        }
    }
    all
}

/// Where a leak test's run writes: a local folder, or a prefix in the S3 server.
enum Place {
    Local,
    S3 { endpoint: String, bucket: String },
}

/// A fresh bucket in the S3 server `scripts/test` starts, made with a plain CreateBucket.
fn s3_bucket() -> (String, String) {
    use std::io::{Read, Write};
    let endpoint = std::env::var("BATCHSCORE_TEST_S3_ENDPOINT").expect(
        "BATCHSCORE_TEST_S3_ENDPOINT is not set: run the tests with scripts/test, which starts an S3 server (moto)",
    );
    let bucket = format!("privacy-leak-{}", std::process::id());
    let addr = endpoint.trim_start_matches("http://");
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    write!(
        c,
        "PUT /{bucket} HTTP/1.1\r\nContent-Length: 0\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut reply = String::new();
    c.read_to_string(&mut reply).unwrap();
    assert!(reply.starts_with("HTTP/1.1 200"), "CreateBucket: {reply}");
    (endpoint, bucket)
}

/// Every object under `prefix` in the bucket, by name, with its bytes.
fn s3_objects(endpoint: &str, bucket: &str, prefix: &str) -> Vec<(String, Vec<u8>)> {
    use futures::TryStreamExt;
    use object_store::{ObjectStore, ObjectStoreExt};
    let store = object_store::aws::AmazonS3Builder::new()
        .with_endpoint(endpoint)
        .with_allow_http(true)
        .with_bucket_name(bucket)
        .with_region("us-east-1")
        .with_access_key_id("AKIABATCHSCORETESTKEY")
        .with_secret_access_key("batchscore-test-secret")
        .build()
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let metas: Vec<_> = store
            .list(Some(&prefix.into()))
            .try_collect()
            .await
            .unwrap();
        let mut all = Vec::new();
        for m in metas {
            let bytes = store.get(&m.location).await.unwrap().bytes().await.unwrap();
            all.push((m.location.to_string(), bytes.to_vec()));
        }
        all
    })
}

/// Runs the leak job writing `format` to `place` at `RUST_LOG=trace` with the progress line
/// on, and returns every text it produced: stdout, stderr, and each file it wrote (raw, and
/// decoded for Parquet, which compresses and dictionary-encodes its values).
fn leak_run(s: &Scratch, format: &str, place: &Place) -> Vec<(String, String)> {
    let out = match place {
        Place::Local => format!("../out/leak-{format}/"),
        Place::S3 { bucket, .. } => format!("s3://{bucket}/leak-{format}/"),
    };
    let mut spec = job("../in.csv", format, &out, POLICIES_A);
    if let Place::S3 { endpoint, .. } = place {
        spec += &format!("[storage]\nendpoint = \"{endpoint}\"\nallow_http = true\n");
    }
    let o = batchscore()
        .args(["run", "--progress", "always"])
        .arg(s.job(&format!("leak-{format}.toml"), &spec))
        .env("BATCHSCORE_PRIVACY_TEST_KEY", KEY)
        .env("RUST_LOG", "trace")
        .env("AWS_ACCESS_KEY_ID", "AKIABATCHSCORETESTKEY")
        .env("AWS_SECRET_ACCESS_KEY", "batchscore-test-secret")
        .env("AWS_REGION", "us-east-1")
        .output()
        .unwrap();
    assert_ok(&o);
    let (stdout, stderr) = text(&o);
    assert!(stderr.contains(" INFO "), "logs at trace: {stderr}");
    let mut haystacks = vec![
        ("stdout".to_string(), stdout),
        ("stderr".to_string(), stderr),
    ];
    let files: Vec<(String, Vec<u8>)> = match place {
        Place::Local => files_under(&s.path(&format!("out/leak-{format}")))
            .into_iter()
            .map(|f| (f.display().to_string(), std::fs::read(&f).unwrap()))
            .collect(),
        Place::S3 { endpoint, bucket } => s3_objects(endpoint, bucket, &format!("leak-{format}")),
    };
    assert!(
        files.iter().any(|(name, _)| name.contains("_rejected/")),
        "{format}: no rejected part"
    );
    for (name, bytes) in files {
        if name.ends_with(".parquet") {
            let copy = s.path("decoded.parquet");
            std::fs::write(&copy, &bytes).unwrap();
            haystacks.push((
                format!("{name} (decoded)"),
                format!("{:?}", read_parquet(&copy)),
            ));
        }
        haystacks.push((name, String::from_utf8_lossy(&bytes).into_owned()));
    }
    haystacks
}

/// Seeded sensitive values (and the hash key) appear in nothing a run produced, for Parquet
/// and CSV outputs, local and in the S3 server: outputs, `_rejected/` rows (two rejected rows
/// and a malformed record holding an email of its own), manifest, metrics, logs at trace and
/// the progress line.
#[test]
fn no_sensitive_value_reaches_any_file_or_log() {
    let s = Scratch::new();
    // A malformed record (one field too many) holding an email of its own.
    let malformed =
        "5,9,1,eve.secret@example.com,\"+1 555 0142\",2000-01-01,1.0,\"Eve Secret\",extra\n";
    write_csv(&s.path("in.csv"), Some(malformed));
    let mut forbidden = seeded();
    forbidden.extend(["eve.secret@example.com", "+1 555 0142", "Eve Secret", KEY]);
    let (endpoint, bucket) = s3_bucket();
    let s3 = Place::S3 { endpoint, bucket };
    for (format, place) in [
        ("parquet", &Place::Local),
        ("csv", &Place::Local),
        ("parquet", &s3),
        ("csv", &s3),
    ] {
        let haystacks = leak_run(&s, format, place);
        assert!(
            haystacks.len() > 6,
            "{:?}",
            haystacks.iter().map(|h| &h.0).collect::<Vec<_>>()
        );
        for (what, text) in &haystacks {
            for value in &forbidden {
                assert!(!text.contains(value), "{what} holds {value:?}");
            }
        }
    }
    let dir = s.path("out/leak-parquet");
    let rejected = read_rejected(&dir);
    assert_eq!(
        rejected["_stage"].len(),
        3,
        "two rows and a record rejected"
    );
    assert!(texts(&rejected["_value"]).contains(&"<redacted>".to_string()));
    // The sensitive feature has no distribution; the other one has.
    let metrics = read_json(&dir.join("_metrics.json"));
    let distributions = metrics["distributions"].as_object().unwrap();
    for sensitive in ["acct", "a[0]"] {
        assert!(!distributions.contains_key(sensitive), "{distributions:?}");
    }
    assert!(distributions.contains_key("b[0]"), "{distributions:?}");
}

#[test]
fn an_inference_reject_shows_no_sensitive_feature_value() {
    // lookup.onnx gathers from a table of 10: rows 17, 123 and 250 hold indexes out of range.
    let s = Scratch::new();
    let spec = format!(
        r#"name = "lookup"
[input]
uri = "{}"
[model]
uri = "{}"
[output]
uri = "../out/l/"
passthrough = ["row_id"]
[privacy]
sensitive = ["idx"]
"#,
        sample("synthetic/lookup.parquet"),
        sample("synthetic/lookup.onnx")
    );
    let o = run(&["run", s.job("lookup.toml", &spec).to_str().unwrap()]);
    assert_ok(&o);
    let rejected = read_rejected(&s.path("out/l"));
    assert_eq!(texts(&rejected["_stage"]), ["inference"; 3]);
    assert_eq!(texts(&rejected["_value"]), ["idx=<redacted>"; 3]);
    let metrics = read_json(&s.path("out/l/_metrics.json"));
    let distributions = metrics["distributions"].as_object().unwrap();
    assert!(!distributions.contains_key("idx"), "{distributions:?}");
    // ONNX Runtime's message quotes the index: it is withheld, from `_metrics.json` too.
    let reason = "ONNX Runtime failed on this row (its message is withheld: a feature reads a sensitive column)";
    assert_eq!(texts(&rejected["_reason"]), [reason; 3]);
    assert_eq!(
        metrics["rejected_reasons"],
        serde_json::json!([{"reason": reason, "count": 3}])
    );
}

#[test]
fn keep_is_warned_about_and_a_policy_must_name_a_sensitive_column() {
    let s = scratch_with_inputs();
    let o = run_job(
        &s,
        "b.toml",
        &job("../in.csv", "parquet", "../out/b/", POLICIES_B),
    );
    assert_ok(&o);
    let (_, err) = text(&o);
    assert_eq!(
        err.matches("[privacy] policy \"keep\": a sensitive column is written as it is")
            .count(),
        1,
        "{err}"
    );
    // Once too when the memory fit plans the job again with a smaller layout.
    let fitted = job("../in.csv", "parquet", "../out/b2/", POLICIES_B)
        + "[run]\nworkers = 2\nbatch_size = 1000000\nmemory_limit = \"200 MiB\"\n";
    let o = run_job(&s, "b2.toml", &fitted);
    assert_ok(&o);
    let (_, err) = text(&o);
    assert!(
        err.contains("fitting the run under its memory limit"),
        "{err}"
    );
    assert_eq!(err.matches("[privacy] policy \"keep\"").count(), 1, "{err}");
    let stray = POLICIES_B.replace("sensitive = [\"email\", ", "sensitive = [");
    let (_, err) = validate(
        &s,
        "stray.toml",
        &job("../in.csv", "parquet", "../out/s/", &stray),
        2,
    );
    assert_eq!(
        &err[err.find("error: ").unwrap()..],
        format!(
            "error: job spec {}: [privacy.policies.email]: column \"email\" is not sensitive: list it in [privacy] sensitive, or remove its policy\n",
            s.path("jobs/stray.toml").display()
        )
    );
    let misplaced = POLICIES_A.replace("keep_last = 4", "keep_first = 4");
    let (_, err) = validate(
        &s,
        "mis.toml",
        &job("../in.csv", "parquet", "../out/m/", &misplaced),
        2,
    );
    let file = s.path("jobs/mis.toml").display().to_string();
    assert_eq!(
        err,
        format!(
            "error: job spec {file}: [privacy.policies.phone.keep_first]: has no meaning for policy \"mask\"\njob spec {file}: [privacy.policies.phone.keep_last]: policy \"mask\" needs keep_last, the trailing characters to keep\n"
        )
    );
}

/// Every file under `dir` as text (a Parquet file decoded too), when `dir` exists.
fn written_texts(dir: &Path) -> Vec<(String, String)> {
    if !dir.exists() {
        return Vec::new();
    }
    let mut all = Vec::new();
    for f in files_under(dir) {
        let bytes = std::fs::read(&f).unwrap();
        all.push((
            f.display().to_string(),
            String::from_utf8_lossy(&bytes).into_owned(),
        ));
        if f.extension().is_some_and(|e| e == "parquet") {
            let table = read_parquet(&f);
            all.push((format!("{} (decoded)", f.display()), format!("{table:?}")));
        }
    }
    all
}

#[test]
fn a_run_that_fails_on_a_sensitive_value_quotes_none_of_it() {
    let s = scratch_with_inputs();
    let model = sample("synthetic/rank1_int.onnx");
    // (query, feature, what the error says): a strict cast in a feature, a cast in the query
    // that DataFusion's message quotes in double quotes, and a number Arrow gives unquoted.
    let cases = [
        (
            "",
            "CAST(email AS BIGINT)",
            "error: Arrow error: Cast error: Cannot cast string '<redacted>' to value of Int64 type\n",
        ),
        (
            "query = \"SELECT row_id, CAST(CAST(name AS INTERVAL) IS NULL AS BIGINT) AS n, b FROM input\"",
            "n",
            "error: Arrow error: Parser error: Invalid input syntax for type interval: \"<redacted>\"\n",
        ),
        (
            "",
            "CAST(amount * 1000000000 AS INT)",
            "error: Arrow error: Cast error: Can't cast value <redacted> to type Int32\n",
        ),
    ];
    let mut forbidden = seeded();
    forbidden.extend([KEY, "12500000000"]);
    for (k, (query, feature, message)) in cases.into_iter().enumerate() {
        for format in ["text", "json"] {
            let spec = format!(
                r#"name = "fails"
[input]
uri = "../in.csv"
{query}
[model]
uri = "{model}"
[inputs.a]
columns = ["{feature}"]
[output]
uri = "../out/f{k}-{format}/"
passthrough = ["row_id"]
[privacy]
sensitive = ["email", "phone", "amount", "name", "acct"]
"#,
                feature = feature.replace('"', "\\\""),
            );
            let job = s.job(&format!("f{k}-{format}.toml"), &spec);
            let o = batchscore()
                .args(["--log-format", format, "run", job.to_str().unwrap()])
                .env("RUST_LOG", "trace")
                .output()
                .unwrap();
            let err = assert_exit(&o, 1);
            assert!(err.ends_with(message), "case {k} ({format}): {err}");
            assert!(err.contains("run failed: nothing was committed"), "{err}");
            let (out, _) = text(&o);
            let mut haystacks = vec![("stdout".to_string(), out), ("stderr".to_string(), err)];
            haystacks.extend(written_texts(&s.path(&format!("out/f{k}-{format}"))));
            for (what, text) in &haystacks {
                for value in &forbidden {
                    assert!(
                        !text.contains(value),
                        "case {k} ({format}): {what} holds {value:?}"
                    );
                }
            }
        }
    }
}

#[test]
fn a_challenger_follows_the_champions_privacy() {
    // The churn challenger job, its customer ids hashed and two of the features' columns
    // sensitive: total_charges (read as it is) and support_calls (inside ln(1 + …)).
    let s = Scratch::new();
    let spec = std::fs::read_to_string(repo().join("jobs/churn-challenger.toml")).unwrap()
        + r#"
[privacy]
sensitive = ["customer_id", "total_charges", "support_calls"]
[privacy.policies.customer_id]
policy = "hash"
key = "${env:BATCHSCORE_PRIVACY_TEST_KEY}"
"#;
    let job = s.job("churn-challenger.toml", &spec);
    let o = batchscore()
        .args(["--log-format", "json", "run", job.to_str().unwrap()])
        .args(["--var", "ds=2026-11-27"])
        .env("BATCHSCORE_PRIVACY_TEST_KEY", KEY)
        .env("RUST_LOG", "trace")
        .output()
        .unwrap();
    assert_ok(&o);
    let dir = s.path("out/churn-challenger/ds=2026-11-27");
    let written = read_output(&dir);
    assert_eq!(written["small_churn_probability"].len(), 1941);
    assert!(
        texts(&written["customer_id"])
            .iter()
            .all(|id| id.len() == 64)
    );
    // Every total charge, as Rust and Python print a float: none may show anywhere.
    let mut forbidden: Vec<String> = vec![KEY.to_string()];
    for region in ["apac", "eu", "us"] {
        let folder = repo().join(format!("sample_data/churn/data/region={region}"));
        let Ok(files) = std::fs::read_dir(&folder) else {
            continue;
        };
        for f in files {
            for c in &read_parquet(&f.unwrap().path())["total_charges"] {
                if let Cell::Float(v) = c {
                    forbidden.push(v.to_string());
                }
            }
        }
    }
    assert!(forbidden.len() > 1000, "{}", forbidden.len());
    let (out, err) = text(&o);
    assert!(err.contains("\"level\":\"INFO\""), "logs at trace: {err}");
    let mut haystacks = vec![("stdout".to_string(), out), ("stderr".to_string(), err)];
    haystacks.extend(written_texts(&dir));
    for (what, text) in &haystacks {
        for value in &forbidden {
            assert!(!text.contains(value.as_str()), "{what} holds {value:?}");
        }
    }
    // No distribution of a feature that reads a sensitive column; the champion's and the
    // challenger's columns, and the other features, have theirs.
    let metrics = read_json(&dir.join("_metrics.json"));
    let distributions = metrics["distributions"].as_object().unwrap();
    let names: Vec<&String> = distributions.keys().collect();
    for sensitive in [
        "total_charges",
        "support_calls",
        "features[2]",
        "features[3]",
    ] {
        assert!(
            !names.iter().any(|n| n.contains(sensitive)),
            "{sensitive}: {names:?}"
        );
    }
    for kept in [
        "churn_probability",
        "small_churn_probability",
        "tenure",
        "monthly_charges",
    ] {
        assert!(distributions.contains_key(kept), "{kept}: {names:?}");
    }
    assert_eq!(metrics["challengers"]["small"]["rows_rejected"], 0);
}

#[test]
fn a_csv_parse_error_of_a_form_batchscore_does_not_recognise_quotes_no_value() {
    // The head says `ts` holds timestamps; a later record's does not parse, and Arrow's
    // message (which batchscore passes on in `_reason`) quotes it.
    let s = Scratch::new();
    let mut csv = "row_id,a,b,ts\n".to_string();
    for i in 0..3000 {
        csv.push_str(&format!("{i},{},1,2020-01-01T00:00:{:02}\n", i % 7, i % 60));
    }
    csv.push_str("3000,1,1,bob.secret@example.org\n");
    std::fs::write(s.path("ts.csv"), csv).unwrap();
    let spec = format!(
        r#"name = "ts"
[input]
uri = "../ts.csv"
[model]
uri = "{}"
[output]
uri = "../out/ts/"
passthrough = ["row_id"]
[privacy]
sensitive = ["ts"]
"#,
        sample("synthetic/rank1_int.onnx")
    );
    let o = batchscore()
        .args(["run", s.job("ts.toml", &spec).to_str().unwrap()])
        .env("RUST_LOG", "trace")
        .output()
        .unwrap();
    assert_ok(&o);
    let dir = s.path("out/ts");
    let reason = "malformed CSV record: Parser error: Error parsing column 3 at line 0: Parser error: Error parsing timestamp from '<redacted>': error parsing date";
    let metrics = read_json(&dir.join("_metrics.json"));
    assert_eq!(
        metrics["rejected_reasons"],
        serde_json::json!([{"reason": reason, "count": 1}])
    );
    let (out, err) = text(&o);
    let mut haystacks = vec![("stdout".to_string(), out), ("stderr".to_string(), err)];
    haystacks.extend(written_texts(&dir));
    for (what, text) in &haystacks {
        assert!(!text.contains("bob.secret"), "{what} holds the value");
    }
}
