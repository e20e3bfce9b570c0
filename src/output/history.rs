//! A run history (`[output] layout = "runs"`): each run commits a folder of its own,
//! `<output>/run=<run id>/`, exactly as a flat output commits (parts, `_manifest.json`,
//! `_metrics.json`, `_SUCCESS` last); then `<output>/_LATEST`, a small JSON pointer, moves to
//! it with a compare-and-swap. Readers follow `_LATEST`; `rollback` moves it back; `prune`
//! removes old runs, never the one it names.
//!
//! Run ids of one output sort by time when batchscore makes them (UUIDv7), but a scheduler's
//! job id need not, so the history is ordered by each manifest's `committed_at`.

use serde::{Deserialize, Serialize};

use super::{MANIFEST_FILE, METRICS_FILE, OutputError, SUCCESS_FILE};
use crate::report::{Manifest, RunMetrics};
use crate::spec::OutputLayout;
use crate::storage::{Folder, StoreFactory};

/// The pointer file of a run history.
pub const LATEST_FILE: &str = "_LATEST";
/// A run's folder is named `run=<run id>`, a hive-style key readers can filter on.
pub const RUN_PREFIX: &str = "run=";

/// The contents of `_LATEST`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Latest {
    pub run_id: String,
    /// The run's folder, relative to the output: `run=<run id>`.
    pub path: String,
    /// When the pointer moved here (RFC 3339, UTC).
    pub updated_at: String,
    /// The run it pointed at before, when there was one.
    #[serde(default)]
    pub previous: Option<String>,
}

/// One run of a history, as `runs list` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct RunEntry {
    pub run_id: String,
    /// The run's folder, as a path or URL.
    pub uri: String,
    /// Whether it has `_SUCCESS` (a run folder without it is one a crash left mid-commit).
    pub committed: bool,
    pub latest: bool,
    pub manifest: Option<Manifest>,
    pub metrics: Option<RunMetrics>,
}

/// Where a run commits: the output itself, or its own folder in a run history.
pub fn run_uri(output: &str, layout: OutputLayout, run_id: &str) -> String {
    match layout {
        OutputLayout::Flat => output.to_string(),
        OutputLayout::Runs => format!("{}/{RUN_PREFIX}{run_id}", output.trim_end_matches('/')),
    }
}

/// A run history at an output.
pub struct History {
    folder: Folder,
}

fn store_err(op: &'static str) -> impl Fn(crate::storage::StorageError) -> OutputError {
    move |e| OutputError::Store {
        uri: e.uri,
        op,
        message: e.message,
    }
}

impl History {
    pub fn open(output: &str, stores: &StoreFactory) -> Result<Self, OutputError> {
        Ok(Self {
            folder: Folder::open(output, stores).map_err(store_err("open"))?,
        })
    }

    pub fn uri(&self) -> &str {
        &self.folder.uri
    }

    /// `_LATEST`, when the history has one.
    pub async fn latest(&self) -> Result<Option<Latest>, OutputError> {
        Ok(self.read_latest().await?.map(|(l, _)| l))
    }

    async fn read_latest(&self) -> Result<Option<(Latest, crate::storage::Version)>, OutputError> {
        let Some((bytes, version)) = self
            .folder
            .get(LATEST_FILE)
            .await
            .map_err(store_err("read _LATEST"))?
        else {
            return Ok(None);
        };
        let latest = serde_json::from_slice(&bytes).map_err(|e| OutputError::CorruptManifest {
            uri: self.folder.uri_of(LATEST_FILE),
            message: e.to_string(),
        })?;
        Ok(Some((latest, version)))
    }

    /// Points `_LATEST` at `run_id`; returns the run it pointed at before. Another writer
    /// moving it at the same moment makes this read and try again, never lose a move.
    pub async fn point_at(&self, run_id: &str) -> Result<Option<String>, OutputError> {
        loop {
            let read = self.read_latest().await?;
            let previous = read.as_ref().map(|(l, _)| l.run_id.clone());
            let latest = Latest {
                run_id: run_id.to_string(),
                path: format!("{RUN_PREFIX}{run_id}"),
                updated_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                previous: previous.clone(),
            };
            let bytes = super::json_bytes(&latest, &self.folder.uri_of(LATEST_FILE))?;
            let swapped = self
                .folder
                .swap(LATEST_FILE, read.as_ref().map(|(_, v)| v), bytes.into())
                .await
                .map_err(store_err("move _LATEST"))?;
            if swapped {
                return Ok(previous);
            }
        }
    }

    /// Every run folder with what it says about itself, oldest commit first (runs a crash
    /// left uncommitted last).
    pub async fn runs(&self) -> Result<Vec<RunEntry>, OutputError> {
        let latest = self.latest().await?.map(|l| l.run_id);
        let names = self.folder.folders("").await.map_err(store_err("list"))?;
        let mut runs = Vec::new();
        for name in names {
            let Some(run_id) = name.strip_prefix(RUN_PREFIX) else {
                continue;
            };
            let committed = self
                .folder
                .get(&format!("{name}/{SUCCESS_FILE}"))
                .await
                .map_err(store_err("read"))?
                .is_some();
            runs.push(RunEntry {
                run_id: run_id.to_string(),
                uri: self.folder.uri_of(&name),
                committed,
                latest: latest.as_deref() == Some(run_id),
                manifest: self.read_json(&format!("{name}/{MANIFEST_FILE}")).await,
                metrics: self.read_json(&format!("{name}/{METRICS_FILE}")).await,
            });
        }
        let when = |r: &RunEntry| r.manifest.as_ref().map(|m| m.committed_at.clone());
        runs.sort_by_key(|r| (!r.committed, when(r), r.run_id.clone()));
        Ok(runs)
    }

    /// A JSON document of a run; none when absent or unreadable (`runs list` shows a gap).
    async fn read_json<T: serde::de::DeserializeOwned>(&self, rel: &str) -> Option<T> {
        let (bytes, _) = self.folder.get(rel).await.ok()??;
        serde_json::from_slice(&bytes).ok()
    }

    /// Removes a run's folder.
    pub async fn remove(&self, run_id: &str) -> Result<(), OutputError> {
        self.folder
            .remove_all(&format!("{RUN_PREFIX}{run_id}"))
            .await
            .map_err(store_err("remove a run"))
    }
}

/// Refuses an output whose layout is the other one: a flat output where a history is asked
/// for, or a history where a flat output is.
pub async fn check_layout(
    output: &str,
    layout: OutputLayout,
    stores: &StoreFactory,
) -> Result<(), OutputError> {
    let folder = Folder::open(output, stores).map_err(store_err("open"))?;
    let (other, what) = match layout {
        OutputLayout::Runs => (MANIFEST_FILE, "a flat output (_manifest.json)"),
        OutputLayout::Flat => (LATEST_FILE, "a run history (_LATEST)"),
    };
    match folder.get(other).await {
        Ok(Some(_)) => Err(OutputError::OtherLayout {
            uri: folder.uri.clone(),
            what,
            layout,
        }),
        _ => Ok(()),
    }
}
