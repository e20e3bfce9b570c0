//! The job spec loader on arbitrary text: it must never panic, and every refusal must name
//! the spec file (the first byte picks TOML or YAML).
#![no_main]

use std::collections::BTreeMap;
use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&kind, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let file = if kind % 2 == 0 {
        "fuzz.toml"
    } else {
        "fuzz.yaml"
    };
    let vars = BTreeMap::from([("ds".to_string(), "2026-11-27".to_string())]);
    match batchscore::spec::load_str(text, Path::new(file), Path::new("/jobs"), &vars) {
        Ok(spec) => {
            // A spec that loads has a hash that `mode = "skip"` can compare.
            assert_eq!(spec.hash.len(), 64, "{}", spec.hash);
        }
        Err(e) => {
            let message = e.to_string();
            assert!(
                message.starts_with(&format!("job spec {file}")),
                "an error that does not name the file: {message}"
            );
        }
    }
});
