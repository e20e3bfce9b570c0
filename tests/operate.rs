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
