//! Finding and loading ONNX Runtime's shared library, once per process.
//!
//! ONNX Runtime is loaded at run time (`ort` with `load-dynamic`) from the shared library of
//! the `onnxruntime` wheel on PyPI. The library is found, in order, from `--ort-lib`,
//! `ORT_DYLIB_PATH`, a `libonnxruntime.so*` beside the executable, and the repository's own
//! `.ort/` folder that `scripts/fetch-ort` fills.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use super::ModelError;

/// The ONNX Runtime environment, created once per process.
static ORT_ENV: OnceLock<Result<ort::environment::Environment, String>> = OnceLock::new();
static ORT_PATH: OnceLock<PathBuf> = OnceLock::new();

/// Finds and loads ONNX Runtime once; later calls return the first outcome.
pub fn init_runtime(
    explicit: Option<&Path>,
) -> Result<&'static ort::environment::Environment, ModelError> {
    if ORT_ENV.get().is_none() {
        let path = find_ort_library(explicit)?;
        let _ = ORT_PATH.set(path.clone());
        let env = ort::init_from(&path)
            .map_err(|e| e.to_string())
            .and_then(|b| b.with_name("batchscore").build().map_err(|e| e.to_string()));
        let _ = ORT_ENV.set(env);
    }
    match ORT_ENV.get() {
        Some(Ok(env)) => Ok(env),
        Some(Err(message)) => Err(ModelError::OrtLoad {
            path: ORT_PATH.get().cloned().unwrap_or_default(),
            message: message.clone(),
        }),
        // Set above when it was not set before.
        None => unreachable!("ORT_ENV is set above"),
    }
}

/// The ONNX Runtime library in use, once loaded.
pub fn runtime_library() -> Option<&'static Path> {
    ORT_PATH.get().map(PathBuf::as_path)
}

fn find_ort_library(explicit: Option<&Path>) -> Result<PathBuf, ModelError> {
    if let Some(p) = explicit {
        return Ok(p.to_path_buf());
    }
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    let mut looked = vec!["--ort-lib".to_string(), "ORT_DYLIB_PATH".to_string()];
    let mut dirs = Vec::new();
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        dirs.push(dir);
    }
    // The checkout this binary was built from: `scripts/fetch-ort` unpacks the wheel there.
    dirs.push(Path::new(env!("CARGO_MANIFEST_DIR")).join(".ort/lib"));
    for dir in dirs {
        looked.push(dir.display().to_string());
        if let Ok(entries) = std::fs::read_dir(&dir) {
            let mut found: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("libonnxruntime.so"))
                })
                .collect();
            found.sort();
            if let Some(p) = found.into_iter().next() {
                return Ok(p);
            }
        }
    }
    Err(ModelError::OrtNotFound {
        looked: looked.join(", "),
    })
}

/// ONNX Runtime's load errors start with the C++ source location and function signature
/// (`/onnxruntime_src/…/model_load_utils.h:46 void onnxruntime::…(…) Opset 99 is …`): keep
/// what follows them, which is the part a person can act on.
pub(super) fn readable_ort_message(message: &str) -> String {
    let Some(at) = message.find("/onnxruntime_src/") else {
        return message.to_string();
    };
    let (before, located) = message.split_at(at);
    // The signature ends at the parenthesis that closes its argument list.
    let mut depth = 0usize;
    for (i, c) in located.char_indices() {
        match c {
            '(' => depth += 1,
            ')' if depth > 0 => {
                depth -= 1;
                if depth == 0 {
                    let rest = located[i + 1..].trim_start();
                    // `const` and friends may follow the parameter list.
                    let rest = rest.strip_prefix("const ").unwrap_or(rest);
                    return format!("{before}{rest}");
                }
            }
            _ => {}
        }
    }
    message.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ort_source_locations_are_dropped_from_messages() {
        let raw = "Load model failed:/onnxruntime_src/onnxruntime/core/graph/model_load_utils.h:46 void onnxruntime::model_load_utils::ValidateOpsetForDomain(const std::unordered_map<std::string, int>&, const onnxruntime::logging::Logger&, bool, const std::string&, int) ONNX Runtime only *guarantees* support for models stamped with official released onnx opset versions. Opset 99 is under development.";
        assert_eq!(
            readable_ort_message(raw),
            "Load model failed:ONNX Runtime only *guarantees* support for models stamped with official released onnx opset versions. Opset 99 is under development."
        );
        assert_eq!(readable_ort_message("plain"), "plain");
    }
}
