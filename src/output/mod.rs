//! The output: part files ([`part`]) and the exactly-once commit, on a local file system
//! ([`local`]: a staging directory and one atomic rename) or in an object store ([`store`]:
//! the manifest's conditional put is the lock). [`Committer`] is either.
//!
//! Whatever the place, what a reader sees is the previous output or the whole new one:
//! `_manifest.json` lists the parts, `_metrics.json` says what happened, and `_SUCCESS` is
//! written last. A reader that trusts `_SUCCESS` and the manifest never sees a partial run.

pub mod history;
pub mod local;
pub mod mode;
pub mod part;
pub mod run_folder;
pub mod stdout;
pub mod store;

use std::path::{Path, PathBuf};

use crate::report::{Manifest, RunMetrics};
use crate::spec::{OutputLayout, WriteMode};
use crate::storage::StoreFactory;
pub use local::LocalCommitter;
pub use part::{PartWriter, RollingWriter, Staging};
pub use run_folder::{PartSource, RunFolder};
pub use store::StoreCommitter;

pub const SUCCESS_FILE: &str = "_SUCCESS";
pub const MANIFEST_FILE: &str = "_manifest.json";
pub const METRICS_FILE: &str = "_metrics.json";

/// Why the output cannot be written or committed; each names the output.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error(
        "output {path}: already holds {what}; [output] mode = \"error\" refuses to write there (use mode = \"overwrite\" to replace it)"
    )]
    OutputExists { path: PathBuf, what: String },
    #[error("output {}: is not a directory", path.display())]
    NotADirectory { path: PathBuf },
    #[error(
        "output {uri}: cannot be read as a batchscore manifest ({message}); nothing was written or deleted. Move the output aside (or delete it) to write there again"
    )]
    CorruptManifest { uri: String, message: String },
    #[error("output {path}: {op}: {source}")]
    Io {
        path: PathBuf,
        op: &'static str,
        source: std::io::Error,
    },
    #[error("output {path}: cannot write: {message}")]
    Encode { path: PathBuf, message: String },
    #[error("output {uri}: {op}: {message}")]
    Store {
        uri: String,
        op: &'static str,
        message: String,
    },
    #[error(
        "output {uri}: another run committed this output first (its _manifest.json changed since this run started); nothing of this run was committed"
    )]
    Conflict { uri: String },
    #[error(
        "output {uri}: holds {what}, but [output] layout = \"{layout}\"; give this job an output folder of its own"
    )]
    OtherLayout {
        uri: String,
        what: &'static str,
        layout: crate::spec::OutputLayout,
    },
    #[error(
        "output {folder}: another run is in progress here (run {run_id}, started {started_at}), and this one differs from it in {differs}; let that run finish, or remove {folder} to start another"
    )]
    AnotherRun {
        folder: String,
        run_id: String,
        started_at: String,
        differs: String,
    },
}

impl OutputError {
    /// Whether the output was found unusable before any work (a refusal, exit code 2).
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            Self::OutputExists { .. }
                | Self::NotADirectory { .. }
                | Self::CorruptManifest { .. }
                | Self::AnotherRun { .. }
                | Self::OtherLayout { .. }
        )
    }
}

fn io_err(path: &Path, op: &'static str) -> impl FnOnce(std::io::Error) -> OutputError + use<> {
    let path = path.to_path_buf();
    move |source| OutputError::Io { path, op, source }
}

/// A document a commit writes, as pretty JSON with a final newline; `path` names it in errors.
fn json_bytes<T: serde::Serialize>(value: &T, path: &str) -> Result<Vec<u8>, OutputError> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(|e| OutputError::Encode {
        path: PathBuf::from(path),
        message: e.to_string(),
    })?;
    bytes.push(b'\n');
    Ok(bytes)
}

/// The commit of a run's output, local or in an object store.
pub enum Committer {
    Local(LocalCommitter),
    Store(StoreCommitter),
}

impl Committer {
    /// Checks `mode` against what is at `uri`, before any work. A store's existing manifest
    /// is read here, so one that cannot be is refused before any work.
    pub async fn check(
        uri: &str,
        mode: WriteMode,
        stores: &StoreFactory,
    ) -> Result<(), OutputError> {
        if crate::storage::is_remote(uri) {
            StoreCommitter::open(uri, mode, stores).await.map(|_| ())
        } else {
            LocalCommitter::check(Path::new(uri), mode)
        }
    }

    pub async fn prepare(
        uri: &str,
        mode: WriteMode,
        run_id: &str,
        stores: &StoreFactory,
    ) -> Result<Self, OutputError> {
        if crate::storage::is_remote(uri) {
            let mut c = StoreCommitter::open(uri, mode, stores).await?;
            c.staging = c.prefix.clone().join("_staging").join(run_id);
            Ok(Self::Store(c))
        } else {
            LocalCommitter::prepare(Path::new(uri), mode, run_id).map(Self::Local)
        }
    }

    pub fn staging(&self) -> Staging {
        match self {
            Self::Local(c) => Staging::Local(c.staging.clone()),
            Self::Store(c) => Staging::Store {
                store: c.store.clone(),
                prefix: c.staging.clone(),
                uri: format!("{}/{}/", c.root, c.staging),
            },
        }
    }

    /// The output location, for messages.
    pub fn output(&self) -> String {
        match self {
            Self::Local(c) => c.output.display().to_string(),
            Self::Store(c) => c.uri.clone(),
        }
    }

    /// Commits the staged parts with their manifest and metrics; returns the output location.
    /// `metrics.stage_seconds.commit` is set to the time since `started`, just before the
    /// metrics are written.
    pub async fn commit(
        self,
        manifest: &Manifest,
        metrics: &mut RunMetrics,
        started: std::time::Instant,
    ) -> Result<String, OutputError> {
        // Where racing runs decide which commits; tests hold every racer here first.
        crate::hooks::barrier("commit").await;
        match self {
            Self::Local(c) => {
                c.write_json(MANIFEST_FILE, manifest)?;
                metrics.stage_seconds.commit = started.elapsed().as_secs_f64();
                c.write_json(METRICS_FILE, metrics)?;
                c.commit().map(|p| p.display().to_string())
            }
            Self::Store(c) => c.commit(manifest, metrics, started).await,
        }
    }

    /// Commits a sharded run: the parts its shards staged (each source with the name it has
    /// in the output) with the run's manifest and metrics, as [`Self::commit`] does.
    pub async fn commit_parts(
        self,
        sources: Vec<(PartSource, String)>,
        manifest: &Manifest,
        metrics: &mut RunMetrics,
        started: std::time::Instant,
    ) -> Result<String, OutputError> {
        match self {
            Self::Local(c) => {
                for (source, name) in &sources {
                    if let PartSource::Local(from) = source {
                        c.adopt(from, name)?;
                    }
                }
                Self::Local(c).commit(manifest, metrics, started).await
            }
            Self::Store(c) => {
                let sources = sources
                    .into_iter()
                    .filter_map(|(source, name)| match source {
                        PartSource::Store(path) => Some((name, path)),
                        PartSource::Local(_) => None,
                    })
                    .collect();
                c.with_sources(sources)
                    .commit(manifest, metrics, started)
                    .await
            }
        }
    }

    /// The manifest of the output committed at `uri`, when it has `_SUCCESS`; one that
    /// cannot be read as a manifest is an error, never "nothing committed".
    pub async fn committed_manifest(
        uri: &str,
        stores: &StoreFactory,
    ) -> Result<Option<Manifest>, OutputError> {
        if crate::storage::is_remote(uri) {
            let c = StoreCommitter::open(uri, WriteMode::Overwrite, stores).await?;
            return c.committed_manifest().await;
        }
        let dir = Path::new(uri);
        if !dir.join(SUCCESS_FILE).exists() {
            return Ok(None);
        }
        let path = dir.join(MANIFEST_FILE);
        let bytes = std::fs::read(&path).map_err(io_err(&path, "read the manifest"))?;
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| OutputError::CorruptManifest {
                uri: path.display().to_string(),
                message: e.to_string(),
            })
    }

    /// The manifest of the run a reader of the output at `uri` sees: the output's own, or in
    /// a run history the one `_LATEST` names.
    pub async fn published_manifest(
        uri: &str,
        layout: OutputLayout,
        stores: &StoreFactory,
    ) -> Result<Option<Manifest>, OutputError> {
        if layout == OutputLayout::Flat {
            return Self::committed_manifest(uri, stores).await;
        }
        match history::History::open(uri, stores)?.latest().await? {
            Some(latest) => {
                let run = history::run_uri(uri, layout, &latest.run_id);
                Self::committed_manifest(&run, stores).await
            }
            None => Ok(None),
        }
    }

    /// Removes what a run that will not commit has staged.
    pub async fn abort(self) {
        match self {
            // Dropping it removes the staging directory.
            Self::Local(c) => drop(c),
            Self::Store(c) => c.remove_staging(Some(&c.staging)).await,
        }
    }
}
