//! Operating a model with the registry, end to end through the real binary: a model
//! registered (and refused on a failed parity check), scored by version and by alias,
//! replaced by a new version, the alias moved back; a tampered file and bad `[model]` tables
//! refused. Scores are checked against onnxruntime's own (`sample_data/churn/expected.parquet`),
//! the parity figures against LightGBM's (`sample_data/churn/parity/reference.parquet`).

mod common;
use common::*;

use std::path::{Path, PathBuf};
use std::process::Output;

use batchscore::model::registry::{ModelCard, Parity};
use sha2::{Digest, Sha256};

/// The `[model]` table of `jobs/churn.toml`, which the tests replace.
const CHURN_MODEL_TABLE: &str = "[model]\nuri = \"../sample_data/churn/churn_lgbm.onnx\"\nsha256 = \"23afc21ef8adfaa2a725064f95c7e147526cea572b540ef433f4c68eecb3a0c0\"\n";

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn sha256_of(path: &str) -> String {
    sha256_hex(&std::fs::read(path).unwrap())
}

fn churn_model() -> String {
    sample("churn/churn_lgbm.onnx")
}

fn fraud_model() -> String {
    sample("fraud/fraud_xgb.onnx")
}

/// The churn model as retrained into a file of its own: the same graph with another
/// `doc_string` (ModelProto field 6, appended; protobuf keeps the last), so another SHA-256
/// and the same predictions.
fn churn_v2(s: &Scratch) -> String {
    let mut bytes = std::fs::read(churn_model()).unwrap();
    let doc = b"retrained on 2026-12";
    bytes.push(0x32);
    bytes.push(doc.len() as u8);
    bytes.extend_from_slice(doc);
    let p = s.path("churn-v2.onnx");
    std::fs::write(&p, bytes).unwrap();
    p.to_str().unwrap().to_string()
}

fn str_of(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `batchscore models ARGS --registry REG`, with `BATCHSCORE_REGISTRY` unset.
fn models(reg: &Path, args: &[&str]) -> Output {
    batchscore()
        .arg("models")
        .args(args)
        .arg("--registry")
        .arg(reg)
        .env_remove("BATCHSCORE_REGISTRY")
        .output()
        .unwrap()
}

/// Registers `file` as a version of `name` (its next unless `extra` says `--version`) and
/// returns the version.
#[track_caller]
fn register(reg: &Path, name: &str, file: &str, extra: &[&str]) -> String {
    let o = models(reg, &[&["register", name, file], extra].concat());
    assert_ok(&o);
    let out = text(&o).0;
    let version = out
        .strip_prefix(&format!("registered {name} version "))
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or_else(|| panic!("unexpected output: {out}"))
        .to_string();
    assert_eq!(
        out,
        format!(
            "registered {name} version {version} at {} (sha256 {})\n",
            reg.join(name).join(&version).display(),
            sha256_of(file)
        )
    );
    version
}

#[track_caller]
fn alias(reg: &Path, alias: &str, version: &str, was: Option<&str>) {
    let o = models(reg, &["alias", "churn", alias, version]);
    assert_ok(&o);
    let was = was.map(|w| format!(" (was {w})")).unwrap_or_default();
    assert_eq!(text(&o).0, format!("churn: {alias} -> {version}{was}\n"));
}

fn read_card(reg: &Path, name: &str, version: &str) -> ModelCard {
    let p = reg.join(name).join(version).join("model.toml");
    toml::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap()
}

/// `jobs/churn.toml` with its `[model]` table replaced by `model` and the version written
/// in a `model_version` column.
fn churn_job(s: &Scratch, file: &str, model: &str) -> PathBuf {
    let text = std::fs::read_to_string(s.repo_job("churn")).unwrap();
    assert!(text.contains(CHURN_MODEL_TABLE), "jobs/churn.toml changed");
    let text = text
        .replace(CHURN_MODEL_TABLE, &format!("[model]\n{model}\n"))
        .replace(
            "mode = \"overwrite\"\n",
            "mode = \"overwrite\"\nmodel_version_column = \"model_version\"\n",
        );
    s.job(file, &text)
}

/// Runs a churn job with `--var ds=DS`, `BATCHSCORE_REGISTRY` set to `env_registry` or unset.
fn run_churn(job: &Path, ds: &str, env_registry: Option<&Path>) -> Output {
    let mut c = batchscore();
    c.args(["run", str_of(job), "--var", &format!("ds={ds}")]);
    match env_registry {
        Some(r) => c.env("BATCHSCORE_REGISTRY", r),
        None => c.env_remove("BATCHSCORE_REGISTRY"),
    };
    c.output().unwrap()
}

/// The committed `out/churn/ds=DS/` holds onnxruntime's scores for the churn sample, with
/// `version` on every row, and its manifest and metrics name the registry version scored.
#[track_caller]
fn assert_scored_by(
    s: &Scratch,
    reg: &Path,
    ds: &str,
    version: &str,
    by_alias: Option<&str>,
    model_file: &str,
) {
    let dir = s.path(&format!("out/churn/ds={ds}"));
    let got = read_output(&dir);
    let expected = read_parquet(Path::new(&sample("churn/expected.parquet")));
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        [
            "churn_label",
            "churn_probability",
            "customer_id",
            "model_version",
            "region"
        ]
    );
    assert_matches(
        &got,
        &expected,
        "customer_id",
        &["region", "churn_probability", "churn_label"],
    );
    assert_eq!(
        texts(&got["model_version"]),
        vec![version.to_string(); expected["customer_id"].len()]
    );
    let model_uri = format!("{}/churn/{version}/model.onnx", reg.display());
    let sha = sha256_of(model_file);
    let m = read_manifest(&dir);
    assert_eq!(
        (
            m.model_name.as_deref(),
            m.model_version.as_deref(),
            m.model_uri.as_str(),
            m.model_sha256.as_str()
        ),
        (
            Some("churn"),
            Some(version),
            model_uri.as_str(),
            sha.as_str()
        )
    );
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("_metrics.json")).unwrap()).unwrap();
    assert_eq!(
        metrics["model"]["registered"],
        serde_json::json!({
            "registry": reg.to_str().unwrap(),
            "name": "churn",
            "version": version,
            "alias": by_alias,
        })
    );
    assert_eq!(metrics["model"]["uri"], model_uri.as_str());
    assert_eq!(metrics["model"]["sha256"], sha.as_str());
}

/// LightGBM's churn probabilities on the parity sample's rows next to onnxruntime's (from
/// `expected.parquet`, which holds the rows outside apac): the largest difference over the
/// rows both have, and how many rows that is.
fn lightgbm_vs_onnxruntime() -> (f64, usize) {
    let rows = read_parquet(Path::new(&sample("churn/parity/sample.parquet")));
    let reference = read_parquet(Path::new(&sample("churn/parity/reference.parquet")));
    let expected = read_parquet(Path::new(&sample("churn/expected.parquet")));
    let by_id: std::collections::HashMap<String, usize> = expected["customer_id"]
        .iter()
        .enumerate()
        .map(|(i, c)| (format!("{c:?}"), i))
        .collect();
    let (mut worst, mut n) = (0f64, 0);
    for (i, id) in rows["customer_id"].iter().enumerate() {
        let Some(&j) = by_id.get(&format!("{id:?}")) else {
            continue; // apac: the job does not score it, so expected.parquet lacks it.
        };
        let (Cell::Float(a), Cell::Float(b)) = (
            &reference["churn_probability"][i],
            &expected["churn_probability"][j],
        ) else {
            panic!("not floats")
        };
        assert_eq!(
            reference["churn_label"][i], expected["churn_label"][j],
            "LightGBM and onnxruntime label row {i} alike"
        );
        worst = worst.max((a - b).abs());
        n += 1;
    }
    (worst, n)
}

#[test]
fn register_checks_parity_refuses_a_failed_check_and_never_replaces_a_version() {
    let s = Scratch::new();
    let reg = s.path("registry");
    let model = churn_model();
    let reference = sample("churn/parity/reference.parquet");
    let rows = sample("churn/parity/sample.parquet");
    let job = repo().join("jobs/churn.toml");
    let parity = |tolerance: &str| -> Vec<String> {
        let mut a: Vec<String> = [
            "register",
            "churn",
            &model,
            "--producer",
            "lightgbm 4.5.0",
            "--converter",
            "onnxmltools 1.16.0",
            "--labels",
            "stays,churns",
            "--training-data",
            "s3://lake/churn/train/ds=2026-11-30/",
            "--meta",
            "owner=retention",
            "--meta",
            "ticket=CH-17",
            "--reference",
            &reference,
            "--sample",
            &rows,
            "--job",
            str_of(&job),
            "--var",
            "ds=x",
        ]
        .map(String::from)
        .to_vec();
        if !tolerance.is_empty() {
            a.extend(["--tolerance".to_string(), tolerance.to_string()]);
        }
        a
    };
    let (oracle_diff, oracle_rows) = lightgbm_vs_onnxruntime();
    assert!(oracle_rows > 300, "{oracle_rows} rows outside apac");
    assert!(oracle_diff > 0.0 && oracle_diff < 1e-6, "{oracle_diff}");

    // float32 ONNX against LightGBM's float64: about 1e-7 apart, past a 1e-9 tolerance.
    let args = parity("1e-9");
    let o = models(&reg, &args.iter().map(String::as_str).collect::<Vec<_>>());
    let err = assert_exit(&o, 2);
    let head = format!(
        "error: model {model}: predicts \"churn_probability\" differently from {reference}: the largest difference is "
    );
    let tail = ", more than the tolerance 1e-9; nothing was registered\n";
    assert!(
        err.starts_with(&head) && err.ends_with(tail),
        "unexpected refusal:\n{err}"
    );
    // The largest difference is on a row of apac (which expected.parquet lacks): at least
    // the largest over the other rows.
    let reported_text = err[head.len()..].split(' ').next().unwrap().to_string();
    let reported: f64 = reported_text.parse().unwrap();
    assert!(
        reported >= oracle_diff * 0.999 && reported < 1e-6,
        "reported {reported}, LightGBM and onnxruntime differ by {oracle_diff}"
    );
    assert_eq!(text(&o).0, "");
    assert!(!reg.join("churn/1/model.toml").exists());
    assert!(!reg.join("churn/1/model.onnx").exists());

    // Within the default tolerance (1e-4): registered as version 1 with its card.
    let args = parity("");
    let o = models(&reg, &args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_ok(&o);
    let card = read_card(&reg, "churn", "1");
    let sha = sha256_of(&model);
    assert_eq!(sha.len(), 64);
    let p = card.parity.clone().expect("a [parity] table");
    assert!(
        p.max_abs_diff >= oracle_diff && p.max_abs_diff < 1e-4,
        "max_abs_diff {}, LightGBM and onnxruntime differ by {oracle_diff} on the rows outside apac",
        p.max_abs_diff
    );
    assert_eq!(format!("{:.3e}", p.max_abs_diff), reported_text);
    let created = chrono::DateTime::parse_from_rfc3339(&card.created)
        .unwrap_or_else(|e| panic!("created {:?}: {e}", card.created));
    let age = chrono::Utc::now().signed_duration_since(created);
    assert!(
        age >= chrono::TimeDelta::zero() && age < chrono::TimeDelta::minutes(10),
        "created {created}"
    );
    assert_eq!(
        card,
        ModelCard {
            version: "1".into(),
            sha256: sha.clone(),
            created: card.created.clone(),
            producer: Some("lightgbm 4.5.0".into()),
            converter: Some("onnxmltools 1.16.0".into()),
            labels: Some(vec!["stays".into(), "churns".into()]),
            training_data: Some("s3://lake/churn/train/ds=2026-11-30/".into()),
            parity: Some(Parity {
                reference: reference.clone(),
                sample: rows.clone(),
                rows: 500,
                max_abs_diff: p.max_abs_diff,
                label_mismatches: 0,
                tolerance: 1e-4,
            }),
            metadata: [("owner", "retention"), ("ticket", "CH-17")]
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .into_iter()
                .collect(),
        }
    );
    assert_eq!(
        text(&o).0,
        format!(
            "registered churn version 1 at {}/churn/1 (sha256 {sha}, parity max |diff| {:.3e} over 500 rows)\n",
            reg.display(),
            p.max_abs_diff
        )
    );
    assert_eq!(
        std::fs::read(reg.join("churn/1/model.onnx")).unwrap(),
        std::fs::read(&model).unwrap()
    );
    let card_text = std::fs::read_to_string(reg.join("churn/1/model.toml")).unwrap();

    // Version 1 exists: another file under its name is refused and changes nothing.
    let o = models(
        &reg,
        &["register", "churn", &fraud_model(), "--version", "1"],
    );
    let err = assert_exit(&o, 2);
    assert_eq!(
        err,
        format!(
            "error: {}/churn/1: version 1 of \"churn\" exists already; a registered version is never replaced: register a new version\n",
            reg.display()
        )
    );
    assert_eq!(
        std::fs::read_to_string(reg.join("churn/1/model.toml")).unwrap(),
        card_text
    );
    assert_eq!(
        std::fs::read(reg.join("churn/1/model.onnx")).unwrap(),
        std::fs::read(&model).unwrap()
    );

    // A file ONNX Runtime cannot load is refused, and nothing is written.
    let not_onnx = s.path("notes.onnx");
    std::fs::write(&not_onnx, "this is not a model\n").unwrap();
    let o = models(&reg, &["register", "churn", str_of(&not_onnx)]);
    let err = assert_exit(&o, 2);
    assert!(err.starts_with("error: "), "{err}");
    assert!(err.contains(str_of(&not_onnx)), "names the file: {err}");
    assert!(!reg.join("churn/2").exists());

    // Without --version: one more than the highest number.
    let v2 = churn_v2(&s);
    assert_eq!(register(&reg, "churn", &fraud_model(), &[]), "2");
    assert_eq!(register(&reg, "churn", &v2, &[]), "3");
    assert_eq!(
        register(&reg, "churn", &model, &["--version", "2027-q1"]),
        "2027-q1"
    );
    assert_eq!(register(&reg, "churn", &model, &[]), "4");
    let card = read_card(&reg, "churn", "3");
    assert_eq!(
        card,
        ModelCard {
            version: "3".into(),
            sha256: sha256_of(&v2),
            created: card.created.clone(),
            // The ONNX file's own producer, when --producer does not say.
            producer: Some("OnnxMLTools 1.16.0".into()),
            converter: None,
            labels: None,
            training_data: None,
            parity: None,
            metadata: Default::default(),
        }
    );
    assert_eq!(
        std::fs::read(reg.join("churn/2/model.onnx")).unwrap(),
        std::fs::read(fraud_model()).unwrap()
    );
}

#[test]
fn scored_by_version_and_by_alias_then_the_alias_moves_forward_and_back() {
    let s = Scratch::new();
    let reg = s.path("registry");
    let v1 = churn_model();
    let v2 = churn_v2(&s);
    assert_eq!(register(&reg, "churn", &v1, &[]), "1");
    assert_eq!(register(&reg, "churn", &v2, &[]), "2");
    alias(&reg, "champion", "1", None);
    let aliases = || std::fs::read_to_string(reg.join("churn/aliases.json")).unwrap();
    assert_eq!(aliases(), "{\n  \"champion\": \"1\"\n}\n");

    // By version, the registry named in the spec.
    let by_version = churn_job(
        &s,
        "by-version.toml",
        &format!(
            "registry = \"{}\"\nname = \"churn\"\nversion = \"2\"",
            reg.display()
        ),
    );
    assert_ok(&run_churn(&by_version, "v2", None));
    assert_scored_by(&s, &reg, "v2", "2", None, &v2);

    // By alias, the registry from BATCHSCORE_REGISTRY.
    let by_alias = churn_job(
        &s,
        "by-alias.toml",
        "name = \"churn\"\nalias = \"champion\"",
    );
    assert_ok(&run_churn(&by_alias, "a1", Some(&reg)));
    assert_scored_by(&s, &reg, "a1", "1", Some("champion"), &v1);

    // The new version becomes the champion.
    alias(&reg, "champion", "2", Some("1"));
    assert_eq!(aliases(), "{\n  \"champion\": \"2\"\n}\n");
    assert_ok(&run_churn(&by_alias, "a2", Some(&reg)));
    assert_scored_by(&s, &reg, "a2", "2", Some("champion"), &v2);

    // An alias to a version there is not is refused, and the alias stays.
    let o = models(&reg, &["alias", "churn", "champion", "9"]);
    let err = assert_exit(&o, 2);
    assert_eq!(
        err,
        format!(
            "error: model registry {}: model \"churn\" has no version \"9\" (versions: 1, 2)\n",
            reg.display()
        )
    );
    assert_eq!(aliases(), "{\n  \"champion\": \"2\"\n}\n");

    // The rollback: the champion is version 1 again.
    alias(&reg, "champion", "1", Some("2"));
    assert_eq!(aliases(), "{\n  \"champion\": \"1\"\n}\n");
    assert_ok(&run_churn(&by_alias, "a3", Some(&reg)));
    assert_scored_by(&s, &reg, "a3", "1", Some("champion"), &v1);

    // `validate` says what the alias resolves to.
    let o = batchscore()
        .args(["validate", str_of(&by_alias), "--var", "ds=a4"])
        .env("BATCHSCORE_REGISTRY", &reg)
        .output()
        .unwrap();
    assert_ok(&o);
    let out = text(&o).0;
    let expected = format!(
        "{}: OK\nmodel churn version 1 (alias champion) from {} (sha256 {})\n",
        by_alias.display(),
        reg.display(),
        sha256_of(&v1)
    );
    assert!(out.starts_with(&expected), "{out}");
    assert!(!s.path("out/churn/ds=a4").exists());
}

#[test]
fn a_registered_file_changed_after_registration_is_refused() {
    let s = Scratch::new();
    let reg = s.path("registry");
    let churn = churn_model();
    assert_eq!(register(&reg, "churn", &churn, &[]), "1");
    alias(&reg, "champion", "1", None);
    std::fs::copy(fraud_model(), reg.join("churn/1/model.onnx")).unwrap();
    let registry = format!("registry = \"{}\"\nname = \"churn\"\n", reg.display());
    let uri = format!("{}/churn/1/model.onnx", reg.display());
    for (file, select, key) in [
        ("alias.toml", "alias = \"champion\"", "model.alias"),
        ("version.toml", "version = \"1\"", "model.version"),
    ] {
        let job = churn_job(&s, file, &format!("{registry}{select}"));
        let o = run_churn(&job, "t", None);
        let err = assert_exit(&o, 2);
        assert_eq!(
            err,
            format!(
                "error: job spec {}: [{key}]: model {uri}: sha256 is {}, but its model.toml says {}: the file changed after it was registered\n",
                job.display(),
                sha256_of(&fraud_model()),
                sha256_of(&churn),
            )
        );
        assert!(!s.path("out").exists(), "nothing may be written");
    }
}

#[test]
fn model_tables_naming_no_single_registered_version_are_refused() {
    let s = Scratch::new();
    let reg = s.path("registry");
    assert_eq!(register(&reg, "churn", &churn_model(), &[]), "1");
    alias(&reg, "champion", "1", None);
    alias(&reg, "challenger", "1", None);
    let registry = format!("registry = \"{}\"\n", reg.display());
    let r = reg.display();
    let cases: [(&str, String, String); 7] = [
        (
            "both.toml",
            format!("uri = \"{}\"\n{registry}name = \"churn\"\nversion = \"1\"", churn_model()),
            "[model.name]: a model is a file (uri) or a registry version (name), not both".into(),
        ),
        (
            "neither.toml",
            format!("{registry}name = \"churn\""),
            "[model.version]: a registry model needs exactly one of version and alias".into(),
        ),
        (
            "two.toml",
            format!("{registry}name = \"churn\"\nversion = \"1\"\nalias = \"champion\""),
            "[model.version]: a registry model needs exactly one of version and alias".into(),
        ),
        (
            "alias.toml",
            format!("{registry}name = \"churn\"\nalias = \"gold\""),
            format!("[model.alias]: model registry {r}: model \"churn\" has no alias \"gold\" (aliases: champion -> 1, challenger -> 1)"),
        ),
        (
            "version.toml",
            format!("{registry}name = \"churn\"\nversion = \"7\""),
            format!("[model.version]: model registry {r}: model \"churn\" has no version \"7\" (versions: 1)"),
        ),
        (
            "model.toml",
            format!("{registry}name = \"fraud\"\nversion = \"1\""),
            format!("[model.version]: model registry {r}: no model named \"fraud\" (models: churn)"),
        ),
        (
            "no-registry.toml",
            "name = \"churn\"\nversion = \"1\"".to_string(),
            "[model.registry]: model \"churn\" is named, but no registry is set (set registry, or BATCHSCORE_REGISTRY)".into(),
        ),
    ];
    for (file, model, message) in cases {
        let job = churn_job(&s, file, &model);
        let o = run_churn(&job, "r", None);
        let err = assert_exit(&o, 2);
        assert_eq!(
            err,
            format!("error: job spec {}: {message}\n", job.display()),
            "{file}"
        );
        assert!(!s.path("out").exists(), "{file}: nothing may be written");
    }
}

#[test]
fn models_list_and_show_describe_the_registry() {
    let s = Scratch::new();
    let reg = s.path("registry");
    let churn = churn_model();
    let fraud = fraud_model();
    let v2 = churn_v2(&s);
    assert_eq!(register(&reg, "churn", &churn, &[]), "1");
    assert_eq!(register(&reg, "churn", &v2, &[]), "2");
    assert_eq!(register(&reg, "fraud", &fraud, &["--version", "10"]), "10");
    assert_eq!(register(&reg, "churn", &v2, &["--version", "exp"]), "exp");
    alias(&reg, "champion", "1", None);
    alias(&reg, "challenger", "2", None);
    alias(&reg, "shadow", "2", None);

    let versions = [
        ("churn", "1", churn.as_str(), "champion"),
        ("churn", "2", v2.as_str(), "challenger,shadow"),
        ("churn", "exp", v2.as_str(), ""),
        ("fraud", "10", fraud.as_str(), ""),
    ];
    let row = |name: &str, version: &str, file: &str, aliases: &str| {
        let created = read_card(&reg, name, version).created;
        format!(
            "{name:<16} {version:<8} {created:<24} {:<14} {aliases}\n",
            &sha256_of(file)[..12]
        )
    };
    let header = format!(
        "{:<16} {:<8} {:<24} {:<14} ALIASES\n",
        "NAME", "VERSION", "CREATED", "SHA256"
    );
    let all: String = versions
        .iter()
        .map(|(n, v, f, a)| row(n, v, f, a))
        .collect();
    let o = models(&reg, &["list"]);
    assert_ok(&o);
    assert_eq!(text(&o).0, format!("{header}{all}"));
    let churn_only: String = versions[..3]
        .iter()
        .map(|(n, v, f, a)| row(n, v, f, a))
        .collect();
    let o = models(&reg, &["list", "churn"]);
    assert_ok(&o);
    assert_eq!(text(&o).0, format!("{header}{churn_only}"));

    let o = models(&reg, &["list", "--json"]);
    assert_ok(&o);
    let got: serde_json::Value = serde_json::from_str(&text(&o).0).unwrap();
    let expected: Vec<serde_json::Value> = versions
        .iter()
        .map(|(name, version, file, aliases)| {
            let card = read_card(&reg, name, version);
            assert_eq!(card.sha256, sha256_of(file));
            serde_json::json!({"name": name, "card": card, "aliases": aliases})
        })
        .collect();
    assert_eq!(got, serde_json::Value::Array(expected));

    // `show` by version or by alias prints the card, as model.toml holds it.
    for (version, shown) in [("2", "2"), ("champion", "1"), ("shadow", "2")] {
        let o = models(&reg, &["show", "churn", version]);
        assert_ok(&o);
        assert_eq!(
            text(&o).0,
            std::fs::read_to_string(reg.join(format!("churn/{shown}/model.toml"))).unwrap(),
            "show churn {version}"
        );
    }
    let o = models(&reg, &["show", "churn", "gold"]);
    let err = assert_exit(&o, 2);
    assert_eq!(
        err,
        format!(
            "error: model registry {}: model \"churn\" has no alias \"gold\" (aliases: champion -> 1, challenger -> 2, shadow -> 2)\n",
            reg.display()
        )
    );
}

// ---------------------------------------------------------------------------------------
// Operating a job's outputs: a run history with rollback and prune, the distributions and
// drift in `_metrics.json` (checked against numpy, tests/oracle/drift.py), alert rules, and
// regressions of the registry fixes.
// ---------------------------------------------------------------------------------------

use serde_json::{Value, json};

/// The binary run in the scratch dir, whose paths the messages then name relative to it,
/// with `BATCHSCORE_REGISTRY` unset.
fn run_in(s: &Scratch, args: &[&str]) -> Output {
    batchscore()
        .current_dir(s.dir.path())
        .args(args)
        .env_remove("BATCHSCORE_REGISTRY")
        .output()
        .unwrap()
}

/// `jobs/churn.toml`'s text, checked to hold `parts` (so a change to it fails here, not later).
fn churn_text(parts: &[&str]) -> String {
    let text = std::fs::read_to_string(repo().join("jobs/churn.toml")).unwrap();
    for p in parts {
        assert!(text.contains(p), "jobs/churn.toml changed: no {p:?}");
    }
    text
}

const CHURN_MODE: &str = "mode = \"overwrite\"\n";

/// `jobs/churn.toml` as `jobs/FILE` with `layout = "runs"` under `[output]` and `extra`
/// appended.
fn churn_history_job(s: &Scratch, file: &str, extra: &str) -> PathBuf {
    let text =
        churn_text(&[CHURN_MODE]).replace(CHURN_MODE, "mode = \"overwrite\"\nlayout = \"runs\"\n");
    s.job(file, &format!("{text}\n{extra}"))
}

fn churn_expected() -> Table {
    read_parquet(Path::new(&sample("churn/expected.parquet")))
}

/// The rows committed in `dir` are onnxruntime's for the churn sample.
#[track_caller]
fn assert_churn_rows(dir: &Path) {
    assert_matches(
        &read_output(dir),
        &churn_expected(),
        "customer_id",
        &["region", "churn_probability", "churn_label"],
    );
}

/// `_LATEST` of the history `out` names `run_id`, having named `previous` before.
#[track_caller]
fn assert_latest(out: &Path, run_id: &str, previous: Option<&str>) {
    let latest = read_json(&out.join("_LATEST"));
    let updated = latest["updated_at"].as_str().expect("updated_at");
    chrono::DateTime::parse_from_rfc3339(updated)
        .unwrap_or_else(|e| panic!("updated_at {updated:?}: {e}"));
    assert_eq!(
        latest,
        json!({
            "run_id": run_id,
            "path": format!("run={run_id}"),
            "updated_at": updated,
            "previous": previous,
        })
    );
}

/// One run of the history job into `out`: it commits a `run=<id>/` folder of its own holding
/// onnxruntime's scores, and `_LATEST` moves to it from `previous`. Returns the run id.
#[track_caller]
fn history_run(s: &Scratch, job: &str, out: &Path, previous: Option<&str>) -> String {
    let o = run_in(s, &["run", job, "--var", "ds=h"]);
    assert_ok(&o);
    let run_id = read_json(&out.join("_LATEST"))["run_id"]
        .as_str()
        .expect("_LATEST names a run")
        .to_string();
    assert_ne!(Some(run_id.as_str()), previous, "_LATEST did not move");
    assert_latest(out, &run_id, previous);
    let dir = out.join(format!("run={run_id}"));
    let manifest = read_manifest(&dir);
    assert_eq!(manifest.run_id, run_id);
    let mut files: Vec<String> = manifest.files.iter().map(|f| f.path.clone()).collect();
    files.extend(["_SUCCESS", "_manifest.json", "_metrics.json"].map(String::from));
    files.sort();
    assert_eq!(names_in(&dir), files);
    assert_churn_rows(&dir);
    let stdout = text(&o).0;
    let tail = format!(
        " -> {}/run={run_id} ({} files)\n",
        out.display(),
        manifest.files.len()
    );
    assert!(
        stdout.starts_with("churn-nightly: 1941 rows scored in ")
            && stdout.ends_with(&tail)
            && stdout.lines().count() == 1,
        "{stdout}"
    );
    run_id
}

/// What `runs list` prints for the history `out` holding `runs` in this order, `latest` the
/// one `_LATEST` names; the times, model and rows are each run's manifest's.
fn runs_table(out: &Path, runs: &[&str], latest: &str) -> String {
    let mut t = format!(
        "{:<38} {:<24} {:<9} {:>10} {:>8}  {:<9} LATEST\n",
        "RUN", "COMMITTED", "MODEL", "ROWS", "REJECTED", "STATUS"
    );
    for id in runs {
        let m = read_manifest(&out.join(format!("run={id}")));
        assert_eq!(m.rows, 1941);
        t += &format!(
            "{:<38} {:<24} {:<9} {:>10} {:>8}  {:<9} {}\n",
            id,
            m.committed_at,
            &m.model_sha256[..8],
            1941,
            0,
            "committed",
            if *id == latest { "*" } else { "" }
        );
    }
    t
}

#[track_caller]
fn assert_runs_list(s: &Scratch, out: &Path, runs: &[&str], latest: &str) {
    let o = run_in(s, &["runs", "list", str_of(out)]);
    assert_ok(&o);
    assert_eq!(text(&o).0, runs_table(out, runs, latest));
}

#[test]
fn a_run_history_keeps_each_run_and_rollback_and_prune_move_latest() {
    let s = Scratch::new();
    churn_history_job(&s, "churn.toml", "");
    let job = "jobs/churn.toml";
    let out = s.path("out/churn/ds=h");
    let out_s = str_of(&out).to_string();

    let r1 = history_run(&s, job, &out, None);
    let r2 = history_run(&s, job, &out, Some(&r1));
    let r3 = history_run(&s, job, &out, Some(&r2));
    assert_eq!(
        names_in(&out),
        [
            "_LATEST".to_string(),
            format!("run={r1}"),
            format!("run={r2}"),
            format!("run={r3}")
        ]
    );

    // The runs' distributions of the outputs are numpy's of onnxruntime's scores.
    let metrics = read_json(&out.join(format!("run={r1}/_metrics.json")));
    let expected = sample("churn/expected.parquet");
    let label = oracle("drift.py", &["describe", "churn_label", &expected]);
    let d = &metrics["distributions"]["churn_label"];
    assert_eq!(
        (&d["count"], &d["nulls"], &d["non_finite"], &d["classes"]),
        (&label["count"], &json!(0), &json!(0), &label["classes"]),
        "{d}"
    );
    let p = oracle("drift.py", &["describe", "churn_probability", &expected]);
    let d = &metrics["distributions"]["churn_probability"];
    assert_eq!((&d["count"], &d["nulls"]), (&p["count"], &json!(0)));
    for k in ["mean", "std"] {
        assert_rel(k, num(&d[k]), num(&p[k]), 1e-9);
    }
    assert_eq!((&d["min"], &d["max"]), (&p["min"], &p["max"]));
    let names: Vec<&String> = metrics["distributions"]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    assert_eq!(
        names,
        [
            "churn_probability",
            "churn_label",
            "tenure",
            "monthly_charges",
            "total_charges",
            "features[3]",
            "is_senior"
        ]
    );
    assert_eq!(metrics["drift"], Value::Null, "no baseline, no drift");

    assert_runs_list(&s, &out, &[&r1, &r2, &r3], &r3);
    let o = run_in(&s, &["runs", "list", &out_s, "--json"]);
    assert_ok(&o);
    let listed: Value = serde_json::from_str(&text(&o).0).unwrap();
    let want: Vec<Value> = [&r1, &r2, &r3]
        .iter()
        .map(|id| {
            let dir = out.join(format!("run={id}"));
            json!({
                "run_id": id,
                "uri": format!("{out_s}/run={id}"),
                "committed": true,
                "latest": *id == &r3,
                "manifest": read_json(&dir.join("_manifest.json")),
                "metrics": read_json(&dir.join("_metrics.json")),
            })
        })
        .collect();
    assert_json_eq(&listed, &Value::Array(want));

    // Rollback: to the run committed before the latest, then to a run by id, then back.
    let rollback = |args: &[&str]| run_in(&s, &[&["rollback", &out_s], args].concat());
    let o = rollback(&[]);
    assert_ok(&o);
    assert_eq!(
        text(&o).0,
        format!("{out_s}: _LATEST -> run {r2} (was {r3})\n")
    );
    assert_latest(&out, &r2, Some(&r3));
    assert_runs_list(&s, &out, &[&r1, &r2, &r3], &r2);
    let o = rollback(&["--to", &r3]);
    assert_ok(&o);
    assert_eq!(
        text(&o).0,
        format!("{out_s}: _LATEST -> run {r3} (was {r2})\n")
    );
    assert_latest(&out, &r3, Some(&r2));
    assert_runs_list(&s, &out, &[&r1, &r2, &r3], &r3);
    let o = rollback(&[]);
    assert_ok(&o);
    assert_eq!(
        text(&o).0,
        format!("{out_s}: _LATEST -> run {r2} (was {r3})\n")
    );
    let pointer = std::fs::read(out.join("_LATEST")).unwrap();

    // A run that is not there is refused, and _LATEST stays.
    let o = rollback(&["--to", "0190-no-such-run"]);
    let err = assert_exit(&o, 2);
    assert_eq!(
        err,
        format!(
            "error: output {out_s}: no committed run 0190-no-such-run (committed runs: {r1}, {r2}, {r3})\n"
        )
    );
    assert_eq!(text(&o).0, "");
    assert_eq!(std::fs::read(out.join("_LATEST")).unwrap(), pointer);

    // Prune to one while _LATEST names run 2: run 1 goes, run 2 (latest) and run 3 (newest)
    // stay, and _LATEST does not move.
    let o = run_in(&s, &["runs", "prune", &out_s, "--keep", "1"]);
    assert_ok(&o);
    assert_eq!(
        text(&o).0,
        format!("removed run {r1} ({out_s}/run={r1})\n{out_s}: 1 run(s) removed, 2 kept\n")
    );
    assert_eq!(
        names_in(&out),
        [
            "_LATEST".to_string(),
            format!("run={r2}"),
            format!("run={r3}")
        ]
    );
    assert_eq!(std::fs::read(out.join("_LATEST")).unwrap(), pointer);
    assert_runs_list(&s, &out, &[&r2, &r3], &r2);
    for r in [&r2, &r3] {
        assert_churn_rows(&out.join(format!("run={r}")));
    }

    // Nothing is older than run 2 now.
    let o = rollback(&[]);
    let err = assert_exit(&o, 2);
    assert_eq!(
        err,
        format!(
            "error: output {out_s}: no committed run is older than the latest; nothing was changed\n"
        )
    );
    assert_eq!(std::fs::read(out.join("_LATEST")).unwrap(), pointer);

    // The next run becomes the latest.
    let r4 = history_run(&s, job, &out, Some(&r2));
    assert_runs_list(&s, &out, &[&r2, &r3, &r4], &r4);

    // A flat job cannot write into the history, nor a history job into a flat output.
    s.job("flat.toml", &churn_text(&[CHURN_MODE]));
    let o = run_in(&s, &["run", "jobs/flat.toml", "--var", "ds=h"]);
    let err = assert_exit(&o, 2);
    assert_eq!(
        err,
        "error: job spec jobs/flat.toml: [output.layout]: output out/churn/ds=h: holds a run history (_LATEST), but [output] layout = \"flat\"; give this job an output folder of its own\n"
    );
    assert_eq!(
        names_in(&out),
        [
            "_LATEST".to_string(),
            format!("run={r2}"),
            format!("run={r3}"),
            format!("run={r4}")
        ]
    );
    assert_ok(&run_in(&s, &["run", "jobs/flat.toml", "--var", "ds=f"]));
    let flat = s.path("out/churn/ds=f");
    let before = std::fs::read(flat.join("_manifest.json")).unwrap();
    let o = run_in(&s, &["run", job, "--var", "ds=f"]);
    let err = assert_exit(&o, 2);
    assert_eq!(
        err,
        "error: job spec jobs/churn.toml: [output.layout]: output out/churn/ds=f: holds a flat output (_manifest.json), but [output] layout = \"runs\"; give this job an output folder of its own\n"
    );
    assert_eq!(std::fs::read(flat.join("_manifest.json")).unwrap(), before);
    assert!(!flat.join("_LATEST").exists());
    assert_churn_rows(&flat);
}

const CHURN_INPUT: &str = "uri = \"../sample_data/churn/data/\"\nquery = \"SELECT * FROM input WHERE region <> 'apac'\"\n";
const CHURN_OUTPUT: &str = "uri = \"../out/churn/ds=${ds}/\"\npassthrough = [\"customer_id\", \"region\"]\nmode = \"overwrite\"\n";

/// The churn job reading the Parquet file `--var input=PATH` (relative to the scratch dir)
/// into `out/OUTPUT/` of `layout`, with `monitor` appended.
fn drift_job(s: &Scratch, file: &str, output: &str, layout: &str, monitor: &str) -> String {
    let text = churn_text(&[CHURN_INPUT, CHURN_OUTPUT])
        .replace(CHURN_INPUT, "uri = \"../${input}\"\n")
        .replace(
            CHURN_OUTPUT,
            &format!(
                "uri = \"../out/{output}/\"\npassthrough = [\"customer_id\"]\nmode = \"overwrite\"\nlayout = \"{layout}\"\n"
            ),
        );
    s.job(file, &format!("{text}\n{monitor}"));
    format!("jobs/{file}")
}

/// The run id `_LATEST` of a history names.
fn latest_of(out: &Path) -> String {
    read_json(&out.join("_LATEST"))["run_id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// A run's distribution of a feature is numpy's of the input column (`oracle` is
/// drift.py's `column` figures): counts exact, moments to 1e-9, min and max exact, and each
/// estimated quantile within 2 percentage points of rank of its level.
#[track_caller]
fn assert_feature_distribution(d: &Value, oracle: &Value) {
    for k in ["count", "nulls", "non_finite"] {
        assert_eq!(d[k], oracle[k], "{k}: {d}");
    }
    for k in ["mean", "std"] {
        assert_rel(k, num(&d[k]), num(&oracle[k]), 1e-9);
    }
    assert_eq!((&d["min"], &d["max"]), (&oracle["min"], &oracle["max"]));
    let ranks = oracle["quantile_ranks"]
        .as_object()
        .expect("quantile ranks");
    assert_eq!(ranks.len(), 7);
    for (k, r) in ranks {
        let level: f64 = k[1..].parse::<f64>().unwrap() / 100.0;
        let (below, at) = (num(&r[0]), num(&r[1]));
        assert!(
            below - 0.02 <= level && level <= at + 0.02,
            "quantile {k} = {} ranks {below}..{at} among the values",
            d["quantiles"][k]
        );
    }
}

#[test]
fn drift_from_the_previous_run_is_numpys_psi_and_fires_its_alert() {
    let s = Scratch::new();
    let base = s.path("base.parquet");
    let shifted = s.path("shifted.parquet");
    oracle("drift.py", &["inputs", str_of(&base), str_of(&shifted)]);
    let alerts = "[[monitor.alerts]]\nrule = \"psi.tenure > 0.1\"\nseverity = \"page\"\n\n[[monitor.alerts]]\nrule = \"psi.monthly_charges > 0.1\"\n";
    let job = drift_job(
        &s,
        "drift.toml",
        "drift",
        "runs",
        &format!("[monitor]\nbaseline = \"previous\"\n\n{alerts}"),
    );
    let out = s.path("out/drift");
    let metrics_of = |id: &str| out.join(format!("run={id}/_metrics.json"));

    // The first run has nothing before it: a warning, no drift, no alert.
    let o = run_in(&s, &["run", &job, "--var", "input=base.parquet"]);
    assert_ok(&o);
    let err = text(&o).1;
    assert!(
        err.lines().count() == 1
            && err.contains(" WARN ")
            && err.contains("[monitor] baseline = \"previous\": no run has committed this output yet, so no drift is computed"),
        "{err}"
    );
    let r1 = latest_of(&out);
    let m1_path = metrics_of(&r1);
    let m1 = read_json(&m1_path);
    assert_eq!(m1["drift"], Value::Null);
    assert_eq!(
        m1["alerts"],
        json!([
            {"rule": "psi.tenure > 0.1", "severity": "page", "value": null, "firing": false},
            {"rule": "psi.monthly_charges > 0.1", "severity": "warning", "value": null, "firing": false},
        ])
    );
    let tenure1 = oracle(
        "drift.py",
        &[
            "column",
            str_of(&m1_path),
            str_of(&base),
            "tenure",
            str_of(&m1_path),
        ],
    );
    assert_feature_distribution(&m1["distributions"]["tenure"], &tenure1);
    assert_eq!(m1["distributions"]["tenure"]["histogram"]["exact"], false);

    // The second run reads tenure 12 months older: committed, the tenure alert fires, and
    // the drift is numpy's PSI over the first run's bins.
    let o = run_in(&s, &["run", &job, "--var", "input=shifted.parquet"]);
    let err = assert_exit(&o, 4);
    let r2 = latest_of(&out);
    assert_ne!(r1, r2);
    assert_latest(&out, &r2, Some(&r1));
    let dir2 = out.join(format!("run={r2}"));
    assert!(dir2.join("_SUCCESS").exists());
    assert_eq!(read_output(&dir2)["customer_id"].len(), 3000);
    let m2_path = metrics_of(&r2);
    let m2 = read_json(&m2_path);
    let tenure = oracle(
        "drift.py",
        &[
            "column",
            str_of(&m1_path),
            str_of(&shifted),
            "tenure",
            str_of(&m2_path),
        ],
    );
    let charges = oracle(
        "drift.py",
        &[
            "column",
            str_of(&m1_path),
            str_of(&shifted),
            "monthly_charges",
            str_of(&m2_path),
        ],
    );
    let d = &m2["distributions"]["tenure"];
    assert_feature_distribution(d, &tenure);
    assert_eq!(
        d["histogram"],
        json!({"edges": tenure["edges"], "counts": tenure["counts"], "exact": true})
    );
    assert_eq!(
        m1["distributions"]["tenure"]["histogram"]["counts"],
        tenure["baseline_counts"]
    );
    assert_feature_distribution(&m2["distributions"]["monthly_charges"], &charges);

    let drift = &m2["drift"];
    assert_eq!(drift["baseline"], format!("run {r1}"));
    let t = &drift["columns"]["tenure"];
    let psi = num(&t["psi"]);
    assert_rel("psi.tenure", psi, num(&tenure["psi"]), 1e-9);
    assert!(psi > 0.1, "{t}");
    assert!(t["reading"] == "major" || t["reading"] == "moderate", "{t}");
    assert_eq!(t["bins"], tenure["bins"]);
    assert_rel(
        "mean_shift.tenure",
        num(&t["mean_shift"]),
        (num(&tenure["mean"]) - num(&tenure1["mean"])) / num(&tenure1["std"]),
        1e-9,
    );
    let c = &drift["columns"]["monthly_charges"];
    let psi_charges = num(&c["psi"]);
    assert_rel(
        "psi.monthly_charges",
        psi_charges,
        num(&charges["psi"]),
        1e-9,
    );
    assert!(psi_charges < 0.05, "{c}");
    assert_eq!((&c["reading"], &c["bins"]), (&json!("stable"), &json!(10)));
    // The label's class counts are those of the rows written.
    let parts: Vec<String> = read_manifest(&dir2)
        .files
        .iter()
        .map(|f| dir2.join(&f.path).to_string_lossy().into_owned())
        .collect();
    let mut args = vec!["describe", "churn_label"];
    args.extend(parts.iter().map(String::as_str));
    let labels = oracle("drift.py", &args);
    assert_eq!(labels["count"], 3000);
    assert_eq!(
        m2["distributions"]["churn_label"]["classes"],
        labels["classes"]
    );

    assert_eq!(
        m2["alerts"],
        json!([
            {"rule": "psi.tenure > 0.1", "severity": "page", "value": psi, "firing": true},
            {"rule": "psi.monthly_charges > 0.1", "severity": "warning", "value": psi_charges, "firing": false},
        ])
    );
    // The message shows the value as _metrics.json holds it (read here as text: serde_json
    // without float_roundtrip may read a number one ulp off).
    let last = err.lines().last().unwrap_or_default();
    let head =
        "error: job churn-nightly: committed, but 1 alert rule(s) fired: psi.tenure > 0.1 (value ";
    let shown = last
        .strip_prefix(head)
        .and_then(|rest| rest.strip_suffix(", page)"))
        .unwrap_or_else(|| panic!("unexpected error line {last:?} in:\n{err}"));
    assert_rel("the alert's value", shown.parse().unwrap(), psi, 1e-15);
    let raw = std::fs::read_to_string(&m2_path).unwrap();
    assert!(
        raw.contains(&format!(
            "\"rule\": \"psi.tenure > 0.1\",\n      \"severity\": \"page\",\n      \"value\": {shown},\n      \"firing\": true"
        )),
        "{raw}"
    );

    // A run id of the history as the baseline gives the same figures.
    let job = drift_job(
        &s,
        "by-id.toml",
        "drift",
        "runs",
        &format!("[monitor]\nbaseline = \"{r1}\"\n"),
    );
    assert_ok(&run_in(
        &s,
        &["run", &job, "--var", "input=shifted.parquet"],
    ));
    let m3 = read_json(&metrics_of(&latest_of(&out)));
    assert_eq!(m3["drift"]["baseline"], format!("run {r1}"));
    assert_eq!(m3["drift"]["columns"]["tenure"]["psi"], psi);

    // So does the baseline's _metrics.json by its path, for a flat output.
    let job = drift_job(
        &s,
        "by-path.toml",
        "flat",
        "flat",
        &format!("[monitor]\nbaseline = \"{}\"\n", m1_path.display()),
    );
    assert_ok(&run_in(
        &s,
        &["run", &job, "--var", "input=shifted.parquet"],
    ));
    let flat = s.path("out/flat");
    let m4 = read_json(&flat.join("_metrics.json"));
    assert_eq!(m4["drift"]["baseline"], m1_path.to_str().unwrap());
    assert_eq!(m4["drift"]["columns"]["tenure"]["psi"], psi);

    // `previous` of a flat output is the run it replaces: back to the first input.
    let kept = s.path("replaced-metrics.json");
    std::fs::copy(flat.join("_metrics.json"), &kept).unwrap();
    let r4 = m4["run_id"].as_str().unwrap().to_string();
    let job = drift_job(
        &s,
        "flat-previous.toml",
        "flat",
        "flat",
        "[monitor]\nbaseline = \"previous\"\n",
    );
    assert_ok(&run_in(&s, &["run", &job, "--var", "input=base.parquet"]));
    let m5 = read_json(&flat.join("_metrics.json"));
    assert_ne!(m5["run_id"], r4.as_str());
    assert_eq!(m5["drift"]["baseline"], format!("run {r4}"));
    let back = oracle(
        "drift.py",
        &["column", str_of(&kept), str_of(&base), "tenure"],
    );
    assert_rel(
        "psi.tenure back",
        num(&m5["drift"]["columns"]["tenure"]["psi"]),
        num(&back["psi"]),
        1e-9,
    );

    // A baseline that is not there is refused before any work.
    let nowhere = s.path("nowhere/_metrics.json");
    for (file, baseline) in [
        ("missing.toml", nowhere.to_str().unwrap()),
        ("no-run.toml", "0190-no-such-run"),
    ] {
        let job = drift_job(
            &s,
            file,
            "missing",
            "runs",
            &format!("[monitor]\nbaseline = \"{baseline}\"\n"),
        );
        let o = run_in(&s, &["run", &job, "--var", "input=base.parquet"]);
        let err = assert_exit(&o, 2);
        assert_eq!(
            err,
            format!(
                "error: job spec {job}: [monitor.baseline]: \"{baseline}\": no such committed run or metrics file\n"
            )
        );
        assert!(!s.path("out/missing").exists());
    }
}

#[test]
fn an_alert_rule_that_holds_commits_the_run_and_exits_4() {
    let s = Scratch::new();
    let churn = churn_text(&[]);
    let rules = |rules: &[&str]| -> String {
        rules
            .iter()
            .map(|r| format!("\n[[monitor.alerts]]\nrule = \"{r}\"\n"))
            .collect()
    };

    s.job(
        "fires.toml",
        &format!("{churn}{}", rules(&["rows.scored < 1000000"])),
    );
    let o = run_in(&s, &["run", "jobs/fires.toml", "--var", "ds=fires"]);
    let err = assert_exit(&o, 4);
    assert_eq!(
        err.lines().last(),
        Some(
            "error: job churn-nightly: committed, but 1 alert rule(s) fired: rows.scored < 1000000 (value 1941, warning)"
        ),
        "{err}"
    );
    let dir = s.path("out/churn/ds=fires");
    assert!(dir.join("_SUCCESS").exists());
    assert_churn_rows(&dir);
    assert_eq!(
        read_json(&dir.join("_metrics.json"))["alerts"],
        json!([{"rule": "rows.scored < 1000000", "severity": "warning", "value": 1941.0, "firing": true}])
    );

    s.job(
        "quiet.toml",
        &format!(
            "{churn}{}",
            rules(&["rows.scored > 1000000", "rows.rejected_rate > 0.001"])
        ),
    );
    let o = run_in(&s, &["run", "jobs/quiet.toml", "--var", "ds=quiet"]);
    assert_ok(&o);
    assert_eq!(text(&o).1, "", "nothing to warn of");
    let dir = s.path("out/churn/ds=quiet");
    assert_churn_rows(&dir);
    assert_eq!(
        read_json(&dir.join("_metrics.json"))["alerts"],
        json!([
            {"rule": "rows.scored > 1000000", "severity": "warning", "value": 1941.0, "firing": false},
            {"rule": "rows.rejected_rate > 0.001", "severity": "warning", "value": 0.0, "firing": false},
        ])
    );

    // A metric there is not is refused before any work, naming the one meant.
    s.job(
        "typo.toml",
        &format!("{churn}{}", rules(&["rows.scorde < 5"])),
    );
    let o = run_in(&s, &["run", "jobs/typo.toml", "--var", "ds=typo"]);
    let err = assert_exit(&o, 2);
    assert_eq!(
        err,
        "error: job spec jobs/typo.toml: [monitor.alerts[0].rule]: \"rows.scorde < 5\": unknown metric \"rows.scorde\" (did you mean `rows.scored`?); the README's \"Alert rules\" lists them\n"
    );
    assert!(!s.path("out/churn/ds=typo").exists());
}

/// A relative `BATCHSCORE_REGISTRY` is the working directory's, for `run` as for `models`:
/// not the spec's folder, where a registry of the same name holds another file.
#[test]
fn a_relative_registry_variable_is_the_working_directorys_for_run_as_for_models() {
    let s = Scratch::new();
    let churn = churn_model();
    let reg = s.path("reg");
    assert_eq!(register(&reg, "churn", &churn, &[]), "1");
    let decoy = s.path("jobs/reg");
    assert_eq!(register(&decoy, "churn", &churn_v2(&s), &[]), "1");
    let job = churn_job(&s, "x.toml", "name = \"churn\"\nversion = \"1\"");
    assert_eq!(job, s.path("jobs/x.toml"));
    let o = batchscore()
        .current_dir(s.dir.path())
        .env("BATCHSCORE_REGISTRY", "reg")
        .args(["run", "jobs/x.toml", "--var", "ds=rel"])
        .output()
        .unwrap();
    assert_ok(&o);
    assert_scored_by(&s, &reg, "rel", "1", None, &churn);

    let o = batchscore()
        .current_dir(s.dir.path())
        .env("BATCHSCORE_REGISTRY", "reg")
        .args(["models", "list"])
        .output()
        .unwrap();
    assert_ok(&o);
    let created = read_card(&reg, "churn", "1").created;
    assert_eq!(
        text(&o).0,
        format!(
            "{:<16} {:<8} {:<24} {:<14} ALIASES\n{:<16} {:<8} {created:<24} {:<14} \n",
            "NAME",
            "VERSION",
            "CREATED",
            "SHA256",
            "churn",
            "1",
            &sha256_of(&churn)[..12]
        )
    );
}

/// `mode = "skip"` skips a rerun of the same version, but not one after the alias moved to
/// another version, even one whose file has the same bytes.
#[test]
fn skip_reruns_when_the_alias_moved_to_a_version_with_the_same_bytes() {
    let s = Scratch::new();
    let reg = s.path("registry");
    let churn = churn_model();
    assert_eq!(register(&reg, "churn", &churn, &[]), "1");
    assert_eq!(register(&reg, "churn", &churn, &[]), "2");
    alias(&reg, "champion", "1", None);
    let job = churn_job(&s, "skip.toml", "name = \"churn\"\nalias = \"champion\"");
    let text_of = std::fs::read_to_string(&job).unwrap();
    assert!(text_of.contains(CHURN_MODE));
    std::fs::write(&job, text_of.replace(CHURN_MODE, "mode = \"skip\"\n")).unwrap();
    let dir = s.path("out/churn/ds=k");

    assert_ok(&run_churn(&job, "k", Some(&reg)));
    assert_scored_by(&s, &reg, "k", "1", Some("champion"), &churn);
    let first = read_manifest(&dir).run_id;

    let o = run_churn(&job, "k", Some(&reg));
    assert_ok(&o);
    assert_eq!(
        text(&o).0,
        format!(
            "churn-nightly: already committed by run {first} with the same spec, model and input; nothing to do -> {}/\n",
            dir.display()
        )
    );
    assert_eq!(read_manifest(&dir).run_id, first);

    alias(&reg, "champion", "2", Some("1"));
    let o = run_churn(&job, "k", Some(&reg));
    assert_ok(&o);
    let out = text(&o).0;
    assert!(!out.contains("already committed"), "{out}");
    assert_ne!(read_manifest(&dir).run_id, first);
    assert_scored_by(&s, &reg, "k", "2", Some("champion"), &churn);
}

#[test]
fn models_list_of_a_model_there_is_not_is_refused_naming_those_there_are() {
    let s = Scratch::new();
    let reg = s.path("registry");
    assert_eq!(register(&reg, "churn", &churn_model(), &[]), "1");
    assert_eq!(register(&reg, "fraud", &fraud_model(), &[]), "1");
    let o = models(&reg, &["list", "nosuch"]);
    let err = assert_exit(&o, 2);
    assert_eq!(
        err,
        format!(
            "error: model registry {}: no model named \"nosuch\" (models: churn, fraud)\n",
            reg.display()
        )
    );
    assert_eq!(text(&o).0, "");
}

// ---------------------------------------------------------------------------------------
// Champion and challenger in one pass (`[[challengers]]`): the challengers' columns against
// onnxruntime's outputs of their models, their agreement figures against numpy's
// (tests/oracle/agreement.py), and a challenger that cannot take the champion's features.
// ---------------------------------------------------------------------------------------

/// `jobs/churn.toml` with `tables` (`[[challengers]]` tables) appended.
fn churn_with_challengers(s: &Scratch, file: &str, tables: &str) -> PathBuf {
    let text = std::fs::read_to_string(s.repo_job("churn")).unwrap();
    s.job(file, &format!("{text}\n{tables}"))
}

/// The `_metrics.json` of a committed output.
fn challenger_metrics(dir: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(dir.join("_metrics.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// `tests/oracle/agreement.py` on two files of onnxruntime's churn outputs.
fn agreement_oracle(champion: &str, challenger: &str) -> serde_json::Value {
    let python = std::env::var("BATCHSCORE_TEST_PYTHON").expect(
        "BATCHSCORE_TEST_PYTHON is not set: run the tests with scripts/test, which installs numpy and pyarrow",
    );
    let o = std::process::Command::new(&python)
        .arg(repo().join("tests/oracle/agreement.py"))
        .args([
            champion,
            challenger,
            "customer_id",
            "churn_label",
            "churn_probability",
        ])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {python}: {e}"));
    assert_ok(&o);
    serde_json::from_str(&text(&o).0).unwrap()
}

#[track_caller]
fn assert_close_rel(what: &str, got: &serde_json::Value, want: &serde_json::Value, rel: f64) {
    let (g, w) = (got.as_f64(), want.as_f64());
    let (Some(g), Some(w)) = (g, w) else {
        panic!("{what}: got {got}, expected {want}")
    };
    assert!(
        (g - w).abs() <= rel * w.abs(),
        "{what}: got {g}, expected {w} (within {rel} relative)"
    );
}

#[test]
fn a_challenger_that_is_the_champion_agrees_with_it_exactly() {
    let s = Scratch::new();
    let twin = "[[challengers]]\nname = \"twin\"\n[challengers.model]\nuri = \"../sample_data/churn/churn_lgbm.onnx\"\n";
    let job = churn_with_challengers(&s, "twin.toml", twin);
    assert_ok(&run(&["run", job.to_str().unwrap(), "--var", "ds=t"]));
    let dir = s.path("out/churn/ds=t");
    let got = read_output(&dir);
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        [
            "churn_label",
            "churn_probability",
            "customer_id",
            "region",
            "twin_churn_label",
            "twin_churn_probability"
        ]
    );
    assert_eq!(got["twin_churn_label"], got["churn_label"]);
    assert_eq!(got["twin_churn_probability"], got["churn_probability"]);
    let expected = read_parquet(Path::new(&sample("churn/expected.parquet")));
    assert_matches(
        &got,
        &expected,
        "customer_id",
        &["churn_probability", "churn_label"],
    );

    let m = challenger_metrics(&dir);
    let twin = &m["challengers"]["twin"];
    let model = s.path("sample_data/churn/churn_lgbm.onnx");
    assert_eq!(twin["model"]["uri"], model.to_str().unwrap());
    assert_eq!(twin["model"]["sha256"], sha256_of(&churn_model()).as_str());
    assert_eq!(twin["rows_rejected"], 0);
    let rows = expected["customer_id"].len();
    let label = &twin["outputs"]["churn_label"];
    assert_eq!(label["kind"], "label");
    assert_eq!(
        (label["rows"].as_u64(), label["agreement_rate"].as_f64()),
        (Some(rows as u64), Some(1.0))
    );
    let count = |v: i64| {
        expected["churn_label"]
            .iter()
            .filter(|c| **c == Cell::Int(v))
            .count()
    };
    assert_eq!(
        label["confusion"],
        serde_json::json!({"0": {"0": count(0)}, "1": {"1": count(1)}})
    );
    let score = &twin["outputs"]["churn_probability"];
    assert_eq!(score["kind"], "score");
    assert_eq!(score["rows"].as_u64(), Some(rows as u64));
    assert_eq!(score["mean_abs_diff"].as_f64(), Some(0.0));
    assert_eq!(score["max_abs_diff"].as_f64(), Some(0.0));
    assert_eq!(score["correlation"].as_f64(), Some(1.0));
    assert_eq!(score["difference_quantiles"]["p01"].as_f64(), Some(0.0));
    assert_eq!(score["difference_quantiles"]["p99"].as_f64(), Some(0.0));
    // The champion's figures are as without a challenger.
    assert_eq!(m["rows"]["written"].as_u64(), Some(rows as u64));
    assert_eq!(m["model"]["uri"], twin["model"]["uri"]);
}

#[test]
fn a_different_challenger_is_scored_in_the_same_read_and_compared_with_the_champion() {
    let s = Scratch::new();
    // Its outputs default to the champion's [outputs], written as small_<column>.
    let small = "[[challengers]]\nname = \"small\"\nmodel = { uri = \"../sample_data/churn/challenger_lgbm.onnx\" }\n";
    let job = churn_with_challengers(&s, "small.toml", small);
    assert_ok(&run(&["run", job.to_str().unwrap(), "--var", "ds=c"]));
    let dir = s.path("out/churn/ds=c");
    let got = read_output(&dir);
    let champion = sample("churn/expected.parquet");
    let challenger = sample("churn/challenger_expected.parquet");
    let mut expected = read_parquet(Path::new(&champion));
    let theirs = read_parquet(Path::new(&challenger));
    assert_eq!(theirs["customer_id"], expected["customer_id"]);
    for c in ["churn_probability", "churn_label"] {
        expected.insert(format!("small_{c}"), theirs[c].clone());
    }
    assert_eq!(got.len(), 6, "{:?}", got.keys());
    assert_matches(
        &got,
        &expected,
        "customer_id",
        &[
            "region",
            "churn_probability",
            "churn_label",
            "small_churn_probability",
            "small_churn_label",
        ],
    );
    let names: Vec<String> =
        datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
            std::fs::File::open(dir.join(&read_manifest(&dir).files[0].path)).unwrap(),
        )
        .unwrap()
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    assert_eq!(
        names,
        [
            "customer_id",
            "region",
            "churn_probability",
            "churn_label",
            "small_churn_probability",
            "small_churn_label"
        ],
        "pass-through, the champion's columns, then the challenger's"
    );

    let m = challenger_metrics(&dir);
    let small = &m["challengers"]["small"];
    assert_eq!(
        small["model"]["sha256"],
        sha256_of(&sample("churn/challenger_lgbm.onnx")).as_str()
    );
    assert_eq!(small["rows_rejected"], 0);
    let want = agreement_oracle(&champion, &challenger);
    let label = &small["outputs"]["churn_label"];
    assert_eq!(label["rows"], want["label"]["rows"]);
    assert_close_rel(
        "agreement_rate",
        &label["agreement_rate"],
        &want["label"]["agreement_rate"],
        1e-9,
    );
    assert!(
        label["agreement_rate"].as_f64().unwrap() < 1.0,
        "the models disagree on some rows"
    );
    assert_eq!(label["confusion"], want["label"]["confusion"]);
    let score = &small["outputs"]["churn_probability"];
    assert_eq!(score["rows"], want["score"]["rows"]);
    for figure in ["mean_abs_diff", "max_abs_diff", "correlation"] {
        assert_close_rel(figure, &score[figure], &want["score"][figure], 1e-9);
    }
    // Quantiles are estimated (a t-digest over a sample of each batch): near numpy's.
    for (q, tolerance) in [
        ("p01", 0.02),
        ("p05", 0.01),
        ("p25", 0.01),
        ("p50", 0.01),
        ("p75", 0.01),
        ("p95", 0.01),
        ("p99", 0.02),
    ] {
        let (g, w) = (
            score["difference_quantiles"][q].as_f64().unwrap(),
            want["score"]["percentiles"][q].as_f64().unwrap(),
        );
        assert!((g - w).abs() <= tolerance, "{q}: got {g}, numpy says {w}");
    }
}

#[test]
fn challengers_that_cannot_take_the_champions_features_or_clash_are_refused() {
    let s = Scratch::new();
    // The fraud model takes `input`, 6 values per row; the champion feeds `features`, 5.
    let fraud = "[[challengers]]\nname = \"fraud\"\nmodel = { uri = \"../sample_data/fraud/fraud_xgb.onnx\" }\n";
    let job = churn_with_challengers(&s, "fraud.toml", fraud);
    let o = run(&["run", job.to_str().unwrap(), "--var", "ds=f"]);
    let err = assert_exit(&o, 2);
    assert_eq!(
        err,
        format!(
            "error: job spec {}: [challengers[0]]: challenger \"fraud\": cannot be fed the champion's features: its model's inputs are \"input\" (tensor(float32) [?, 6]), the champion's are \"features\" (tensor(float32) [?, 5], 5 values per row)\n",
            job.display()
        )
    );
    assert!(!s.path("out").exists(), "nothing may be written");

    // A challenger named `churn` would write `churn_churn_label`... and with outputs named
    // `probability`, `churn_probability`: the champion's column.
    let clash = "[[challengers]]\nname = \"churn\"\nmodel = { uri = \"../sample_data/churn/challenger_lgbm.onnx\" }\noutputs = { probability = \"probabilities[1]\" }\n\n[[challengers]]\nname = \"churn\"\nmodel = { uri = \"../sample_data/churn/challenger_lgbm.onnx\" }\n";
    let job = churn_with_challengers(&s, "clash.toml", clash);
    let err = assert_exit(&run(&["run", job.to_str().unwrap(), "--var", "ds=f"]), 2);
    assert_eq!(
        err,
        format!(
            "error: job spec {}: [challengers[1].name]: challenger \"churn\" is named twice; names must be unique\n",
            job.display()
        )
    );
    let job = churn_with_challengers(
        &s,
        "clash.toml",
        &clash
            .replacen("name = \"churn\"", "name = \"other\"", 2)
            .replacen("name = \"other\"", "name = \"churn\"", 1),
    );
    let err = assert_exit(&run(&["run", job.to_str().unwrap(), "--var", "ds=f"]), 2);
    assert_eq!(
        err,
        format!(
            "error: job spec {}: [challengers[0]]: challenger \"churn\": its column \"churn_probability\" is also a column of the champion's; rename the challenger or its outputs\n",
            job.display()
        )
    );
    assert!(!s.path("out").exists(), "nothing may be written");
}

#[test]
fn rows_only_a_challenger_fails_on_keep_the_champions_scores_and_count_as_its_rejects() {
    // The champion clips the index into the table; the challenger gathers without clipping,
    // and ONNX Runtime fails on rows 17, 123 and 250, whose indexes are out of range.
    let s = Scratch::new();
    let job = s.job(
        "lookup.toml",
        &format!(
            "name = \"lookup\"\n[input]\nuri = \"{}\"\n[model]\nuri = \"{}\"\n[output]\nuri = \"../out/l/\"\npassthrough = [\"row_id\"]\n[run]\nbatch_size = 64\n\n[[challengers]]\nname = \"strict\"\nmodel = {{ uri = \"{}\" }}\n",
            sample("synthetic/lookup.parquet"),
            sample("synthetic/lookup_clipped.onnx"),
            sample("synthetic/lookup.onnx")
        ),
    );
    let o = run(&["run", job.to_str().unwrap()]);
    assert_ok(&o);
    assert!(text(&o).0.contains(", 0 rejected -> "), "{}", text(&o).0);
    let dir = s.path("out/l");
    let got = read_output(&dir);
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        ["row_id", "strict_value", "value"]
    );
    let champion = read_parquet(Path::new(&sample(
        "synthetic/lookup_clipped_expected.parquet",
    )));
    assert_matches(&got, &champion, "row_id", &["value"]);
    let strict = read_parquet(Path::new(&sample("synthetic/lookup_expected.parquet")));
    let at: std::collections::HashMap<String, usize> = strict["row_id"]
        .iter()
        .enumerate()
        .map(|(i, k)| (format!("{k:?}"), i))
        .collect();
    for (i, key) in got["row_id"].iter().enumerate() {
        let want = at
            .get(&format!("{key:?}"))
            .map_or(Cell::Null, |&j| strict["value"][j].clone());
        assert_eq!(got["strict_value"][i], want, "row {key:?}");
    }
    assert_eq!(read_manifest(&dir).rejected_rows, 0);

    let m = challenger_metrics(&dir);
    assert_eq!(m["rows"]["rejected"], 0);
    let c = &m["challengers"]["strict"];
    assert_eq!(c["rows_rejected"], 3);
    let value = &c["outputs"]["value"];
    assert_eq!(value["kind"], "score");
    assert_eq!(value["rows"], 297);
    assert_eq!(value["mean_abs_diff"].as_f64(), Some(0.0));
    assert_eq!(value["correlation"].as_f64(), Some(1.0));
}

#[test]
fn a_challenger_from_the_registry_is_chosen_by_alias_and_named_in_the_metrics() {
    let s = Scratch::new();
    let reg = s.path("registry");
    let small = sample("churn/challenger_lgbm.onnx");
    assert_eq!(register(&reg, "churn", &churn_model(), &[]), "1");
    assert_eq!(register(&reg, "churn", &small, &[]), "2");
    alias(&reg, "challenger", "2", None);
    // The registry from BATCHSCORE_REGISTRY, as for [model].
    let table = "[[challengers]]\nname = \"next\"\n[challengers.model]\nname = \"churn\"\nalias = \"challenger\"\n";
    let job = churn_with_challengers(&s, "next.toml", table);
    assert_ok(&run_churn(&job, "n", Some(&reg)));
    let dir = s.path("out/churn/ds=n");
    let got = read_output(&dir);
    let theirs = read_parquet(Path::new(&sample("churn/challenger_expected.parquet")));
    let mut expected = read_parquet(Path::new(&sample("churn/expected.parquet")));
    expected.insert("next_churn_label".into(), theirs["churn_label"].clone());
    assert_matches(
        &got,
        &expected,
        "customer_id",
        &["churn_label", "next_churn_label"],
    );
    let next = &challenger_metrics(&dir)["challengers"]["next"];
    assert_eq!(next["model"]["sha256"], sha256_of(&small).as_str());
    assert_eq!(
        next["model"]["registered"],
        serde_json::json!({"registry": reg.to_str().unwrap(), "name": "churn", "version": "2", "alias": "challenger"})
    );

    // An alias the registry does not have is refused under the challenger's key.
    alias(&reg, "challenger", "1", Some("2"));
    let job = churn_with_challengers(
        &s,
        "gone.toml",
        &table.replace("\"challenger\"", "\"gold\""),
    );
    let err = assert_exit(&run_churn(&job, "g", Some(&reg)), 2);
    assert_eq!(
        err,
        format!(
            "error: job spec {}: [challengers[0].model.alias]: model registry {}: model \"churn\" has no alias \"gold\" (aliases: challenger -> 1)\n",
            job.display(),
            reg.display()
        )
    );
}
