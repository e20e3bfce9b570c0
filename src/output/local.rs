//! The exactly-once commit on a local file system: parts are written into a staging
//! directory beside the output, `.<name>.staging-<run id>`, on the same file system, then
//! `_manifest.json`, `_metrics.json` and, last, `_SUCCESS`, each synced to disk; the commit
//! is one atomic directory rename. A reader sees the previous output or the whole new one,
//! never a mix and never a part without its manifest.
//!
//! - `mode = "error"`: the run is refused before any work when the output directory holds
//!   anything; the commit renames the staging directory into place.
//! - `mode = "overwrite"`: the commit swaps the staging and output directories in one
//!   `renameat2(RENAME_EXCHANGE)` (Linux), then deletes the old output. Where the file system
//!   cannot exchange, it falls back to two renames, with the old output moved aside first.
//!
//! A killed run leaves only its staging directory, which records its process id; the next run
//! on the same output removes staging directories whose process is gone.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{OutputError, SUCCESS_FILE, io_err};
use crate::spec::WriteMode;

const OWNER_FILE: &str = "_batchscore_owner";

/// The staging directory of one run and its commit.
#[derive(Debug)]
pub struct LocalCommitter {
    pub(super) output: PathBuf,
    pub(super) staging: PathBuf,
    mode: WriteMode,
    committed: bool,
}

impl LocalCommitter {
    /// Checks `mode` against what is at `output` (without creating anything).
    pub fn check(output: &Path, mode: WriteMode) -> Result<(), OutputError> {
        // The nearest existing ancestor must be a directory, or nothing can be created there.
        let mut ancestor = absolute(output);
        while !ancestor.exists() {
            if !ancestor.pop() {
                break;
            }
        }
        if ancestor.exists() && !ancestor.is_dir() && ancestor != absolute(output) {
            return Err(OutputError::NotADirectory { path: ancestor });
        }
        match std::fs::metadata(output) {
            Ok(m) if !m.is_dir() => Err(OutputError::NotADirectory {
                path: output.to_path_buf(),
            }),
            Ok(_) if mode == WriteMode::Error => {
                let mut entries = std::fs::read_dir(output).map_err(io_err(output, "list"))?;
                match entries.next() {
                    None => Ok(()),
                    Some(_) => {
                        let what = if output.join(SUCCESS_FILE).exists() {
                            "a committed output (_SUCCESS)".to_string()
                        } else {
                            "files".to_string()
                        };
                        Err(OutputError::OutputExists {
                            path: output.to_path_buf(),
                            what,
                        })
                    }
                }
            }
            _ => Ok(()),
        }
    }

    /// Creates the staging directory for `run_id` beside `output`, after removing staging
    /// directories left by runs that died.
    pub fn prepare(output: &Path, mode: WriteMode, run_id: &str) -> Result<Self, OutputError> {
        Self::check(output, mode)?;
        let output = absolute(output);
        let parent = output
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("/"));
        std::fs::create_dir_all(&parent).map_err(io_err(&parent, "create parent directory"))?;
        let base = output
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "output".into());
        remove_dead_staging(&parent, &base);
        let staging = parent.join(format!(".{base}.staging-{run_id}"));
        std::fs::create_dir(&staging).map_err(io_err(&staging, "create staging directory"))?;
        std::fs::write(staging.join(OWNER_FILE), std::process::id().to_string())
            .map_err(io_err(&staging, "write owner file"))?;
        Ok(Self {
            output,
            staging,
            mode,
            committed: false,
        })
    }

    pub fn staging_dir(&self) -> &Path {
        &self.staging
    }

    pub fn output_dir(&self) -> &Path {
        &self.output
    }

    /// Links a file staged elsewhere on this file system into the staging as `name`.
    pub fn adopt(&self, from: &Path, name: &str) -> Result<(), OutputError> {
        let to = self.staging.join(name);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).map_err(io_err(parent, "create directory"))?;
        }
        // A link, not a move: a commit that dies here leaves the run folder whole, for
        // `batchscore commit --force`. The folder is beside the output, on one filesystem.
        std::fs::hard_link(from, &to).map_err(io_err(from, "link a shard's part"))
    }

    /// Writes a JSON file into staging, synced.
    pub fn write_json<T: Serialize>(&self, name: &str, value: &T) -> Result<(), OutputError> {
        let path = self.staging.join(name);
        write_synced(
            &path,
            &super::json_bytes(value, &path.display().to_string())?,
        )
    }

    /// Writes `_SUCCESS` and makes the staging directory the output, atomically.
    pub fn commit(mut self) -> Result<PathBuf, OutputError> {
        let _ = std::fs::remove_file(self.staging.join(OWNER_FILE));
        write_synced(&self.staging.join(SUCCESS_FILE), b"")?;
        sync_dir(&self.staging)?;
        let exists = self.output.exists();
        if exists && self.mode == WriteMode::Error {
            // Someone wrote there since the check at the start.
            Self::check(&self.output, self.mode)?;
            // An empty directory: rename(2) replaces it.
        }
        if exists && self.mode != WriteMode::Error {
            if exchange(&self.staging, &self.output).is_ok() {
                // The old output now sits at the staging path.
                let _ = std::fs::remove_dir_all(&self.staging);
            } else {
                let aside = self.staging.with_extension("old");
                std::fs::rename(&self.output, &aside)
                    .map_err(io_err(&self.output, "move the old output aside"))?;
                std::fs::rename(&self.staging, &self.output)
                    .map_err(io_err(&self.output, "commit"))?;
                let _ = std::fs::remove_dir_all(&aside);
            }
        } else {
            std::fs::rename(&self.staging, &self.output).map_err(io_err(&self.output, "commit"))?;
        }
        if let Some(parent) = self.output.parent() {
            sync_dir(parent)?;
        }
        self.committed = true;
        Ok(self.output.clone())
    }
}

impl Drop for LocalCommitter {
    /// A run that did not commit leaves nothing behind.
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_dir_all(&self.staging);
        }
    }
}

fn absolute(p: &Path) -> PathBuf {
    let p = if p.as_os_str().to_string_lossy().ends_with('/') {
        PathBuf::from(p.to_string_lossy().trim_end_matches('/'))
    } else {
        p.to_path_buf()
    };
    std::path::absolute(&p).unwrap_or(p)
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), OutputError> {
    let mut f = File::create(path).map_err(io_err(path, "create"))?;
    f.write_all(bytes).map_err(io_err(path, "write"))?;
    f.sync_all().map_err(io_err(path, "sync"))
}

fn sync_dir(dir: &Path) -> Result<(), OutputError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir, "sync directory"))
}

/// Removes `.<base>.staging-*` directories whose owning process no longer runs.
fn remove_dead_staging(parent: &Path, base: &str) {
    let prefix = format!(".{base}.staging-");
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with(&prefix) {
            continue;
        }
        let owner = std::fs::read_to_string(e.path().join(OWNER_FILE)).ok();
        let alive = owner
            .and_then(|p| p.trim().parse::<u32>().ok())
            .is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
        if !alive {
            tracing::info!(path = %e.path().display(), "removing staging left by a run that did not finish");
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// Atomically exchanges two paths (Linux `renameat2` with `RENAME_EXCHANGE`).
fn exchange(a: &Path, b: &Path) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use std::ffi::CString;
        use std::os::unix::ffi::OsStrExt;
        let ca = CString::new(a.as_os_str().as_bytes())?;
        let cb = CString::new(b.as_os_str().as_bytes())?;
        // SAFETY: both paths are valid NUL-terminated strings that outlive the call.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_renameat2,
                libc::AT_FDCWD,
                ca.as_ptr(),
                libc::AT_FDCWD,
                cb.as_ptr(),
                libc::RENAME_EXCHANGE,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (a, b);
        Err(std::io::Error::from(std::io::ErrorKind::Unsupported))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn committed(
        dir: &Path,
        run: &str,
        mode: WriteMode,
        marker: &str,
    ) -> Result<PathBuf, OutputError> {
        let c = LocalCommitter::prepare(dir, mode, run)?;
        std::fs::write(c.staging_dir().join("part-0.csv"), marker).unwrap();
        c.commit()
    }

    #[test]
    fn error_mode_refuses_an_existing_output() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("out");
        committed(&out, "r1", WriteMode::Error, "one").unwrap();
        let e = LocalCommitter::prepare(&out, WriteMode::Error, "r2").unwrap_err();
        assert!(
            e.to_string().contains("already holds a committed output"),
            "{e}"
        );
        assert_eq!(
            std::fs::read_to_string(out.join("part-0.csv")).unwrap(),
            "one"
        );
    }

    #[test]
    fn overwrite_swaps_the_whole_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("out");
        committed(&out, "r1", WriteMode::Error, "one").unwrap();
        std::fs::write(out.join("stale-part.csv"), "x").unwrap();
        committed(&out, "r2", WriteMode::Overwrite, "two").unwrap();
        assert_eq!(
            std::fs::read_to_string(out.join("part-0.csv")).unwrap(),
            "two"
        );
        assert!(!out.join("stale-part.csv").exists());
        assert!(out.join(SUCCESS_FILE).exists());
        // Nothing is left beside the output.
        let names: Vec<_> = std::fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["out"]);
    }

    #[test]
    fn an_abandoned_run_leaves_nothing_and_dead_staging_is_cleaned() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("out");
        {
            let c = LocalCommitter::prepare(&out, WriteMode::Error, "r1").unwrap();
            std::fs::write(c.staging_dir().join("part-0.csv"), "x").unwrap();
        }
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
        // A staging directory of a process that is gone (pid far above pid_max).
        let dead = tmp.path().join(".out.staging-old");
        std::fs::create_dir(&dead).unwrap();
        std::fs::write(dead.join(OWNER_FILE), "4194999").unwrap();
        committed(&out, "r2", WriteMode::Error, "y").unwrap();
        assert!(!dead.exists());
    }
}
