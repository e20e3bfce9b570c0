//! The exactly-once commit in an object store, where there is no atomic rename.
//!
//! Parts are staged under `<output>/_staging/<run id>/` (multipart uploads, so a part may be
//! larger than memory); the commit then goes in this order:
//! 1. `_manifest.json` with a conditional put: create-if-absent, or update-if-unchanged against
//!    the version seen when the run started. Two runs racing on one output cannot both pass it;
//!    the loser stops there, having changed nothing.
//! 2. the old `_SUCCESS` is deleted, the parts are copied into place (server side) and old parts
//!    the new manifest does not list are deleted;
//! 3. `_metrics.json`, then `_SUCCESS` last; then every staging prefix is removed (a killed
//!    run's included).
//!
//! The old manifest says which old parts to delete, so one that cannot be read is an error
//! before any work: guessing "no previous parts" would leave two runs' parts in the output.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};

use super::{MANIFEST_FILE, METRICS_FILE, OutputError, SUCCESS_FILE, json_bytes};
use crate::report::{Manifest, RunMetrics};
use crate::spec::WriteMode;
use crate::storage::StoreFactory;

/// The commit protocol for object stores (see the module's documentation).
pub struct StoreCommitter {
    pub(super) uri: String,
    pub(super) root: String,
    pub(super) store: Arc<dyn ObjectStore>,
    pub(super) prefix: ObjectPath,
    pub(super) staging: ObjectPath,
    /// The manifest's version when the run started, and the parts it listed.
    prior: Option<(UpdateVersion, Vec<String>)>,
    /// Where parts staged elsewhere than `staging` are, by name (a sharded run's).
    sources: HashMap<String, ObjectPath>,
}

impl StoreCommitter {
    /// Looks at the output: refuses under `mode = "error"` when anything is there, and
    /// remembers the current manifest for the conditional update.
    pub(super) async fn open(
        uri: &str,
        mode: WriteMode,
        stores: &StoreFactory,
    ) -> Result<Self, OutputError> {
        let located = stores.locate(uri).map_err(|e| OutputError::Store {
            uri: uri.to_string(),
            op: "open",
            message: e.message,
        })?;
        let mut c = Self {
            uri: uri.trim_end_matches('/').to_string(),
            root: located.root,
            store: located.store,
            staging: located.path.clone().join("_staging"),
            prefix: located.path,
            prior: None,
            sources: HashMap::new(),
        };
        if mode == WriteMode::Error {
            c.refuse_anything_there().await?;
        }
        c.prior = c.read_prior(mode).await?;
        Ok(c)
    }

    /// `mode = "error"`: anything under the output but staging (a run's, or the shared folder
    /// of a sharded run in progress) is a refusal.
    async fn refuse_anything_there(&self) -> Result<(), OutputError> {
        use futures::TryStreamExt;
        let run_folder = self.prefix.clone().join("_run");
        let mut list = self.store.list(Some(&self.prefix));
        while let Some(meta) = list.try_next().await.map_err(self.err("list"))? {
            if !meta.location.prefix_matches(&self.staging)
                && !meta.location.prefix_matches(&run_folder)
            {
                let success = meta.location.filename() == Some(SUCCESS_FILE);
                return Err(OutputError::OutputExists {
                    path: PathBuf::from(&self.uri),
                    what: if success {
                        "a committed output (_SUCCESS)".into()
                    } else {
                        "objects".into()
                    },
                });
            }
        }
        Ok(())
    }

    /// The current manifest's version and the parts it lists, when there is one.
    async fn read_prior(
        &self,
        mode: WriteMode,
    ) -> Result<Option<(UpdateVersion, Vec<String>)>, OutputError> {
        match self.store.get(&self.manifest_path()).await {
            Ok(r) => {
                let version = UpdateVersion {
                    e_tag: r.meta.e_tag.clone(),
                    version: r.meta.version.clone(),
                };
                let bytes = r.bytes().await.map_err(self.err("read the manifest"))?;
                let old = self.parse_manifest(&bytes)?;
                Ok(Some((
                    version,
                    old.part_paths().map(String::from).collect(),
                )))
            }
            Err(object_store::Error::NotFound { .. }) => {
                // A missing bucket or container also reads as "no manifest"; a listing tells
                // them apart, so that the run is refused before any work rather than at its
                // first write.
                if mode != WriteMode::Error {
                    self.store
                        .list_with_delimiter(Some(&self.prefix))
                        .await
                        .map_err(self.err("list"))?;
                }
                Ok(None)
            }
            Err(e) => Err(self.err("read the manifest")(e)),
        }
    }

    /// The manifest of the committed output, when it has `_SUCCESS`.
    pub(super) async fn committed_manifest(&self) -> Result<Option<Manifest>, OutputError> {
        match self
            .store
            .head(&self.prefix.clone().join(SUCCESS_FILE))
            .await
        {
            Ok(_) => {}
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(self.err("look for _SUCCESS")(e)),
        }
        let r = self
            .store
            .get(&self.manifest_path())
            .await
            .map_err(self.err("read the manifest"))?;
        let bytes = r.bytes().await.map_err(self.err("read the manifest"))?;
        self.parse_manifest(&bytes).map(Some)
    }

    fn parse_manifest(&self, bytes: &[u8]) -> Result<Manifest, OutputError> {
        serde_json::from_slice(bytes).map_err(|e| OutputError::CorruptManifest {
            uri: format!("{}/{MANIFEST_FILE}", self.uri),
            message: e.to_string(),
        })
    }

    fn manifest_path(&self) -> ObjectPath {
        self.prefix.clone().join(MANIFEST_FILE)
    }

    pub(super) fn err(&self, op: &'static str) -> impl Fn(object_store::Error) -> OutputError + '_ {
        move |e| OutputError::Store {
            uri: self.uri.clone(),
            op,
            message: e.to_string(),
        }
    }

    /// Takes each part named in `sources` from there instead of the staging.
    pub(super) fn with_sources(mut self, sources: HashMap<String, ObjectPath>) -> Self {
        self.sources = sources;
        self
    }

    /// Commits (see the module's documentation); returns the output's URL.
    pub(super) async fn commit(
        self,
        manifest: &Manifest,
        metrics: &mut RunMetrics,
        started: std::time::Instant,
    ) -> Result<String, OutputError> {
        if let Err(e) = self.put_manifest(manifest).await {
            self.remove_staging(Some(&self.staging)).await;
            return Err(e);
        }
        self.move_parts(manifest).await?;
        metrics.stage_seconds.commit = started.elapsed().as_secs_f64();
        let metrics_json = json_bytes(&*metrics, &format!("{}/{METRICS_FILE}", self.uri))?;
        self.store
            .put(&self.prefix.clone().join(METRICS_FILE), metrics_json.into())
            .await
            .map_err(self.err("write _metrics.json"))?;
        self.store
            .put(
                &self.prefix.clone().join(SUCCESS_FILE),
                PutPayload::default(),
            )
            .await
            .map_err(self.err("write _SUCCESS"))?;
        // Every run's staging goes, a killed run's included.
        self.remove_staging(None).await;
        Ok(self.uri.clone())
    }

    /// Step 1: the manifest is the lock; only one run can create or update it from what it saw.
    async fn put_manifest(&self, manifest: &Manifest) -> Result<(), OutputError> {
        let json = json_bytes(manifest, &format!("{}/{MANIFEST_FILE}", self.uri))?;
        let mode = match &self.prior {
            Some((version, _)) => PutMode::Update(version.clone()),
            None => PutMode::Create,
        };
        let opts = PutOptions {
            mode,
            ..Default::default()
        };
        match self
            .store
            .put_opts(&self.manifest_path(), json.into(), opts)
            .await
        {
            Ok(_) => Ok(()),
            Err(
                object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. },
            ) => Err(OutputError::Conflict {
                uri: self.uri.clone(),
            }),
            Err(e) => Err(self.err("write _manifest.json")(e)),
        }
    }

    /// Step 2: readers that trust `_SUCCESS` stop reading the old output, then the parts move
    /// in and the old parts the new manifest does not list go.
    async fn move_parts(&self, manifest: &Manifest) -> Result<(), OutputError> {
        match self
            .store
            .delete(&self.prefix.clone().join(SUCCESS_FILE))
            .await
        {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(self.err("delete the old _SUCCESS")(e)),
        }
        // Part names may hold a folder (`_rejected/part-…`): one path segment each.
        let under = |base: &ObjectPath, name: &str| {
            name.split('/').fold(base.clone(), |p, seg| p.join(seg))
        };
        let new: std::collections::HashSet<&str> = manifest.part_paths().collect();
        for path in manifest.part_paths() {
            let from = match self.sources.get(path) {
                Some(source) => source.clone(),
                None => under(&self.staging, path),
            };
            self.store
                .copy(&from, &under(&self.prefix, path))
                .await
                .map_err(self.err("copy a part into place"))?;
        }
        let old = self.prior.iter().flat_map(|(_, old)| old);
        for f in old.filter(|f| !new.contains(f.as_str())) {
            match self.store.delete(&under(&self.prefix, f)).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(self.err("delete an old part")(e)),
            }
        }
        Ok(())
    }

    /// Deletes one run's staging (`Some`) or all of it (`None`); failures are only logged.
    pub(super) async fn remove_staging(&self, which: Option<&ObjectPath>) {
        use futures::StreamExt;
        let prefix = which
            .cloned()
            .unwrap_or_else(|| self.prefix.clone().join("_staging"));
        let locations = self
            .store
            .list(Some(&prefix))
            .map(|m| m.map(|m| m.location))
            .boxed();
        let mut deleted = self.store.delete_stream(locations);
        while let Some(r) = deleted.next().await {
            if let Err(e) = r {
                tracing::warn!(output = %self.uri, error = %e, "cannot remove staged objects");
            }
        }
    }
}
