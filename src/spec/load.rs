//! Loading a spec file: parse (TOML, or YAML by extension), substitute `${name}` and
//! `${env:NAME}`, deserialize with unknown keys refused, resolve relative paths against the
//! spec's folder, then check what the types alone cannot ([`super::check`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::JobSpec;
use crate::diagnostics::{Problem, SpecError, closest};

/// A loaded, templated and path-resolved spec.
#[derive(Debug, Clone)]
pub struct LoadedSpec {
    pub spec: JobSpec,
    /// The spec file as given on the command line.
    pub file: PathBuf,
    /// SHA-256 of the spec after templating and path resolution (canonical JSON).
    pub hash: String,
}

/// A `--var` that is not `NAME=VALUE`.
#[derive(Debug, thiserror::Error)]
#[error("expected NAME=VALUE, got {0:?}")]
pub struct VarError(String);

/// Parses a `name=value` command-line variable.
pub fn parse_var(s: &str) -> Result<(String, String), VarError> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(VarError(s.to_string())),
    }
}

/// Loads a spec file, substituting `vars`.
pub fn load(file: &Path, vars: &BTreeMap<String, String>) -> Result<LoadedSpec, SpecError> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| SpecError::one(file, "", format!("cannot read the file: {e}")))?;
    let base = file
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    load_str(&text, file, &base, vars)
}

/// Loads a spec from text; `file` names it in errors and picks the syntax by extension,
/// `base` is the folder relative paths resolve against.
pub fn load_str(
    text: &str,
    file: &Path,
    base: &Path,
    vars: &BTreeMap<String, String>,
) -> Result<LoadedSpec, SpecError> {
    let fail = |problems: Vec<Problem>| SpecError {
        file: file.to_path_buf(),
        problems,
    };
    let mut tree = parse(text, file)?;
    let lookup = |name: &str| match name.strip_prefix("env:") {
        Some(var) => std::env::var(var).ok(),
        None => vars.get(name).cloned(),
    };
    let mut problems = Vec::new();
    substitute(&mut tree, "", &lookup, &mut problems);
    if !problems.is_empty() {
        return Err(fail(problems));
    }
    let mut spec: JobSpec = serde_path_to_error::deserialize(tree).map_err(|e| {
        let key = e.path().to_string();
        let key = if key == "." { String::new() } else { key };
        SpecError::one(file, key, with_suggestion(&e.inner().to_string()))
    })?;
    spec.input.uri = resolve_path(base, &spec.input.uri);
    resolve_model(base, &mut spec.model);
    for c in &mut spec.challengers {
        resolve_model(base, &mut c.model);
    }
    spec.output.uri = resolve_path(base, &spec.output.uri);
    if let Some(t) = &mut spec.tokenizer {
        t.uri = resolve_path(base, &t.uri);
    }
    if let Some(f) = &spec.monitor.textfile {
        spec.monitor.textfile = Some(resolve_path(base, f));
    }
    for policy in spec.privacy.policies.values_mut() {
        if let Some(f) = &policy.key_file {
            policy.key_file = Some(resolve_path(base, f));
        }
    }
    // A metrics file is a path; "previous" and run ids are not.
    if let Some(b) = spec
        .monitor
        .baseline
        .as_ref()
        .filter(|b| b.ends_with(".json"))
    {
        spec.monitor.baseline = Some(resolve_path(base, b));
    }
    let problems = super::check::check(&spec);
    if !problems.is_empty() {
        return Err(fail(problems));
    }
    let canonical = serde_json::to_vec(&spec)
        .map_err(|e| SpecError::one(file, "", format!("cannot hash the spec: {e}")))?;
    Ok(LoadedSpec {
        hash: hex::encode(Sha256::digest(&canonical)),
        spec,
        file: file.to_path_buf(),
    })
}

/// Resolves a `[model]` table's file and registry: relative paths against `base`; a named
/// model with no registry takes `BATCHSCORE_REGISTRY`.
fn resolve_model(base: &Path, model: &mut super::ModelSpec) {
    if let Some(uri) = &model.uri {
        model.uri = Some(resolve_path(base, uri));
    }
    if let Some(registry) = &model.registry {
        model.registry = Some(resolve_path(base, registry));
    } else if model.name.is_some() {
        // From the environment, a relative folder means the working directory's, as it
        // does for `batchscore models`.
        model.registry = std::env::var("BATCHSCORE_REGISTRY").ok().map(|r| {
            if crate::storage::is_remote(&r) {
                r
            } else {
                std::path::absolute(&r).map_or(r, |p| p.display().to_string())
            }
        });
    }
}

/// The file's text as a generic value tree.
fn parse(text: &str, file: &Path) -> Result<serde_json::Value, SpecError> {
    let is_yaml = matches!(
        file.extension().and_then(|e| e.to_str()),
        Some("yaml") | Some("yml")
    );
    if is_yaml {
        serde_yaml::from_str(text)
            .map_err(|e| SpecError::one(file, "", format!("not valid YAML: {e}")))
    } else {
        toml::from_str(text).map_err(|e| {
            let message = format!("not valid TOML: {}", e.to_string().trim_end());
            SpecError::one(file, "", message)
        })
    }
}

/// Adds "did you mean" to serde's "unknown field `mdoe`, expected one of `uri`, `mode`".
fn with_suggestion(message: &str) -> String {
    let Some(rest) = message.strip_prefix("unknown field `") else {
        return message.to_string();
    };
    let Some((field, expected)) = rest.split_once('`') else {
        return message.to_string();
    };
    match closest(field, expected.split('`').skip(1).step_by(2)) {
        Some(cand) => format!("{message} (did you mean `{cand}`?)"),
        None => message.to_string(),
    }
}

/// Replaces `${name}` (a `--var`) and `${env:NAME}` (an environment variable) in every string
/// of the tree, each looked up by `lookup`; names without a value become problems. Secrets
/// belong in `${env:NAME}`.
fn substitute(
    v: &mut serde_json::Value,
    key: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    problems: &mut Vec<Problem>,
) {
    match v {
        serde_json::Value::String(s) => match expand(s, lookup) {
            Ok(out) => *s = out,
            Err(name) => problems.push(Problem::new(
                key,
                match name.strip_prefix("env:") {
                    Some(var) => format!("${{{name}}}: the environment variable {var} is not set"),
                    None => format!("${{{name}}} has no value: pass --var {name}=VALUE"),
                },
            )),
        },
        serde_json::Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                substitute(item, &format!("{key}[{i}]"), lookup, problems);
            }
        }
        serde_json::Value::Object(map) => {
            for (k, item) in map.iter_mut() {
                let child = if key.is_empty() {
                    k.clone()
                } else {
                    format!("{key}.{k}")
                };
                substitute(item, &child, lookup, problems);
            }
        }
        _ => {}
    }
}

/// Expands `${name}` references; `$${` stays a literal `${`. The error is the first name
/// `lookup` has no value for.
fn expand(s: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos..];
        if let Some(tail) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = tail;
        } else if let Some(tail) = after.strip_prefix("${") {
            let Some(end) = tail.find('}') else {
                // An unclosed `${` is not a reference: keep it as written.
                out.push_str("${");
                rest = tail;
                continue;
            };
            let name = &tail[..end];
            out.push_str(&lookup(name).ok_or_else(|| name.to_string())?);
            rest = &tail[end + 1..];
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Resolves a local path or `file://` URL against `base`; other URLs are left as they are.
fn resolve_path(base: &Path, uri: &str) -> String {
    let path = if let Some(p) = uri.strip_prefix("file://") {
        p
    } else if uri.contains("://") {
        return uri.to_string();
    } else {
        uri
    };
    let keep_slash = path.ends_with('/');
    let p = Path::new(path);
    let joined = if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    };
    let mut s = normalize(&joined).to_string_lossy().into_owned();
    if keep_slash && !s.ends_with('/') {
        s.push('/');
    }
    s
}

/// Removes `.` and `a/..` segments without touching the file system (the path may not exist).
fn normalize(p: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => match out.components().next_back() {
                Some(Component::Normal(_)) => {
                    out.pop();
                }
                Some(Component::RootDir) => {}
                _ => out.push(".."),
            },
            other => out.push(other.as_os_str()),
        }
    }
    if out.as_os_str().is_empty() {
        out.push(".");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_resolve_against_the_spec_and_urls_stay() {
        assert_eq!(resolve_path(Path::new("jobs"), "../d/x.csv"), "d/x.csv");
        assert_eq!(resolve_path(Path::new("jobs"), "../../x"), "../x");
        assert_eq!(resolve_path(Path::new("/a"), "file:///b/c"), "/b/c");
        assert_eq!(resolve_path(Path::new("jobs"), "out/"), "jobs/out/");
        assert_eq!(resolve_path(Path::new("jobs"), "s3://b/k"), "s3://b/k");
    }

    #[test]
    fn dollar_escapes_variables_and_the_environment() {
        // A stand-in environment: the process's own is shared with tests running beside this.
        let lookup = |name: &str| match name {
            "ds" => Some("2026-11-27".to_string()),
            "env:TOKEN" => Some("v1".to_string()),
            _ => None,
        };
        assert_eq!(expand("a$${b}c$d", &lookup).unwrap(), "a${b}c$d");
        assert_eq!(
            expand("x-${env:TOKEN}/${ds}", &lookup).unwrap(),
            "x-v1/2026-11-27"
        );
        assert_eq!(expand("${env:UNSET}", &lookup).unwrap_err(), "env:UNSET");
        assert_eq!(expand("${open", &lookup).unwrap(), "${open");
        let mut tree = serde_json::json!({"a": ["${nope}"], "b": "${env:UNSET}"});
        let mut problems = Vec::new();
        substitute(&mut tree, "", &lookup, &mut problems);
        assert_eq!(
            problems,
            [
                Problem::new("a[0]", "${nope} has no value: pass --var nope=VALUE"),
                Problem::new(
                    "b",
                    "${env:UNSET}: the environment variable UNSET is not set"
                ),
            ]
        );
    }

    #[test]
    fn vars_need_a_name_and_an_equals_sign() {
        assert_eq!(parse_var("ds=1=2").unwrap(), ("ds".into(), "1=2".into()));
        assert!(parse_var("=1").is_err());
        assert_eq!(
            parse_var("ds").unwrap_err().to_string(),
            "expected NAME=VALUE, got \"ds\""
        );
    }
}
