//! What goes wrong with a job before any work, and how it is told: a [`Problem`] names the
//! spec key it concerns, a [`SpecError`] lists every problem with the spec file's name, and
//! the "did you mean" suggestions ([`closest`]) that come with unknown keys and columns.
//!
//! Every stage that checks a job (loading the spec, opening the input, binding the model)
//! reports here, so that `batchscore validate` lists every problem at once, each as
//! `job spec FILE: [key]: message`.

use std::fmt;
use std::path::{Path, PathBuf};

/// One thing wrong with a job: the spec key it concerns and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key, e.g. `inputs.features.columns[2]`; empty for the whole file.
    pub key: String,
    pub message: String,
}

impl Problem {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// A job that cannot run, with every problem found, refused before any work (exit code 2).
#[derive(Debug, thiserror::Error)]
pub struct SpecError {
    pub file: PathBuf,
    pub problems: Vec<Problem>,
}

impl SpecError {
    pub fn one(file: &Path, key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            file: file.to_path_buf(),
            problems: vec![Problem::new(key, message)],
        }
    }
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "job spec {}: ", self.file.display())?;
            if !p.key.is_empty() {
                write!(f, "[{}]: ", p.key)?;
            }
            f.write_str(&p.message)?;
        }
        Ok(())
    }
}

/// The first line of a message: DataFusion's and ONNX Runtime's errors go on with context
/// a person does not need in a one-line refusal.
pub fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}

/// The candidate nearest to `name` (case-insensitive edit distance), when it is near enough
/// to be a likely typo: at most 2 edits, or a third of the candidate's length.
pub fn closest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let name = name.to_lowercase();
    candidates
        .into_iter()
        .map(|c| (edit_distance(&c.to_lowercase(), &name), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3))
        .min()
        .map(|(_, c)| c)
}

/// Levenshtein distance.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typos_find_their_candidate_and_strangers_find_none() {
        assert_eq!(edit_distance("tenure", "tenrue"), 2);
        assert_eq!(edit_distance("", "abc"), 3);
        let keys = ["uri", "mode", "format", "passthrough"];
        assert_eq!(closest("mdoe", keys), Some("mode"));
        assert_eq!(closest("PassThru", keys), Some("passthrough"));
        assert_eq!(closest("zzzzzzzz", keys), None);
    }

    #[test]
    fn every_problem_is_a_line_naming_the_file_and_the_key() {
        let e = SpecError {
            file: "jobs/a.toml".into(),
            problems: vec![
                Problem::new("", "not valid TOML"),
                Problem::new("run.workers", "must be at least 1"),
            ],
        };
        assert_eq!(
            e.to_string(),
            "job spec jobs/a.toml: not valid TOML\njob spec jobs/a.toml: [run.workers]: must be at least 1"
        );
        assert_eq!(first_line("a\nb"), "a");
    }
}
