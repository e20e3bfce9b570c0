//! Where the shards of one run meet before the run commits: `run.json` (the run's record,
//! created by the first shard to start), `shards/<i>.json` (a finished shard's manifest),
//! `parts/<i>-<attempt>/` (its staged parts) and `commit.lock`. For an output in a store it is
//! the prefix `<output>/_run/`; for a local output, the folder `.<name>.run` beside it (on
//! the same file system, so the commit moves parts by renaming them). Every decision is a
//! create-if-absent write, atomic in both: the first record wins, a shard is finished once,
//! and one shard commits.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions};

use super::{OutputError, Staging, json_bytes};
use crate::report::shards::{RunRecord, ShardManifest};
use crate::storage::StoreFactory;

/// The shared folder of a run in progress.
pub struct RunFolder {
    store: Arc<dyn ObjectStore>,
    /// The folder inside `store` (empty for a local folder, whose store is rooted there).
    prefix: ObjectPath,
    /// The folder as a path or URL, for messages and for the parts' staging.
    pub uri: String,
    /// The local folder, for a local output.
    local: Option<PathBuf>,
}

impl RunFolder {
    /// The run folder of the output at `uri` (a local one is created when missing).
    pub async fn open(uri: &str, stores: &StoreFactory) -> Result<Self, OutputError> {
        if crate::storage::is_remote(uri) {
            let located = stores.locate(uri).map_err(|e| OutputError::Store {
                uri: uri.to_string(),
                op: "open",
                message: e.message,
            })?;
            let prefix = located.path.clone().join("_run");
            return Ok(Self {
                uri: format!("{}/{prefix}", located.root),
                store: located.store,
                prefix,
                local: None,
            });
        }
        let output = std::path::absolute(Path::new(uri.trim_end_matches('/')))
            .map_err(super::io_err(Path::new(uri), "resolve"))?;
        let name = output
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "output".into());
        let dir = output.with_file_name(format!(".{name}.run"));
        std::fs::create_dir_all(&dir).map_err(super::io_err(&dir, "create the run folder"))?;
        let store = LocalFileSystem::new_with_prefix(&dir).map_err(|e| OutputError::Store {
            uri: dir.display().to_string(),
            op: "open",
            message: e.to_string(),
        })?;
        Ok(Self {
            uri: dir.display().to_string(),
            store: Arc::new(store),
            prefix: ObjectPath::default(),
            local: Some(dir),
        })
    }

    fn path(&self, rel: &str) -> ObjectPath {
        rel.split('/')
            .fold(self.prefix.clone(), |p, seg| p.join(seg))
    }

    fn err(&self, op: &'static str) -> impl Fn(object_store::Error) -> OutputError + '_ {
        move |e| OutputError::Store {
            uri: self.uri.clone(),
            op,
            message: e.to_string(),
        }
    }

    /// Writes `value` at `rel` unless something is there; false when something was.
    async fn create<T: serde::Serialize>(&self, rel: &str, value: &T) -> Result<bool, OutputError> {
        let bytes = json_bytes(value, &format!("{}/{rel}", self.uri))?;
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        match self
            .store
            .put_opts(&self.path(rel), bytes.into(), opts)
            .await
        {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
            Err(e) => Err(self.err("write")(e)),
        }
    }

    async fn read<T: serde::de::DeserializeOwned>(&self, rel: &str) -> Result<T, OutputError> {
        let r = self
            .store
            .get(&self.path(rel))
            .await
            .map_err(self.err("read"))?;
        let bytes = r.bytes().await.map_err(self.err("read"))?;
        serde_json::from_slice(&bytes).map_err(|e| OutputError::CorruptManifest {
            uri: format!("{}/{rel}", self.uri),
            message: e.to_string(),
        })
    }

    /// The record of the run in progress here, if one is.
    pub async fn record(&self) -> Result<Option<RunRecord>, OutputError> {
        match self.store.head(&self.path("run.json")).await {
            Ok(_) => self.read("run.json").await.map(Some),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.err("read")(e)),
        }
    }

    /// Joins the run: records `ours` when no run is in progress here, else checks that the
    /// one in progress is the same run and returns its record (whose run id this shard
    /// adopts).
    pub async fn join(&self, ours: &RunRecord) -> Result<RunRecord, OutputError> {
        if self.create("run.json", ours).await? {
            return Ok(ours.clone());
        }
        let theirs: RunRecord = self.read("run.json").await?;
        let differs = theirs.differences(ours);
        if differs.is_empty() {
            Ok(theirs)
        } else {
            Err(OutputError::AnotherRun {
                folder: self.uri.clone(),
                run_id: theirs.run_id,
                started_at: theirs.started_at,
                differs: differs.join(", "),
            })
        }
    }

    /// Where shard `shard` stages its parts in this attempt.
    pub fn staging(&self, shard: usize, attempt: &str) -> Result<Staging, OutputError> {
        let rel = format!("parts/{shard}-{attempt}");
        Ok(match &self.local {
            Some(dir) => {
                let dir = dir.join(&rel);
                std::fs::create_dir_all(&dir)
                    .map_err(super::io_err(&dir, "create the shard's staging"))?;
                Staging::Local(dir)
            }
            None => Staging::Store {
                store: self.store.clone(),
                prefix: self.path(&rel),
                uri: format!("{}/{rel}/", self.uri),
            },
        })
    }

    /// Records a finished shard; false when another attempt of it finished first.
    pub async fn finish_shard(&self, m: &ShardManifest) -> Result<bool, OutputError> {
        self.create(&format!("shards/{}.json", m.shard), m).await
    }

    /// The manifests of the shards finished so far, by shard.
    pub async fn finished_shards(&self) -> Result<Vec<ShardManifest>, OutputError> {
        use futures::TryStreamExt;
        let names: Vec<ObjectPath> = self
            .store
            .list(Some(&self.path("shards")))
            .map_ok(|m| m.location)
            .try_collect()
            .await
            .map_err(self.err("list the finished shards"))?;
        let mut manifests = Vec::with_capacity(names.len());
        for location in names {
            let rel = location
                .as_ref()
                .strip_prefix(self.prefix.as_ref())
                .unwrap_or(location.as_ref())
                .trim_start_matches('/')
                .to_string();
            manifests.push(self.read::<ShardManifest>(&rel).await?);
        }
        manifests.sort_by_key(|m| m.shard);
        Ok(manifests)
    }

    /// Takes the right to commit the run; false when another shard took it.
    pub async fn lock_commit(&self, attempt: &str) -> Result<bool, OutputError> {
        self.create("commit.lock", &attempt).await
    }

    /// A staged part of a finished shard, as the commit finds it.
    pub fn part(&self, m: &ShardManifest, name: &str) -> PartSource {
        let rel = format!("{}/{name}", m.staging());
        match &self.local {
            Some(dir) => PartSource::Local(dir.join(rel)),
            None => PartSource::Store(self.path(&rel)),
        }
    }

    /// Removes one attempt's staged parts.
    pub async fn discard(&self, shard: usize, attempt: &str) {
        self.remove_under(&format!("parts/{shard}-{attempt}")).await;
    }

    /// Removes the local folder [`Self::open`] created, when nothing was put in it (a
    /// remote folder is only a prefix). A shard joining meanwhile keeps it.
    pub fn remove_if_empty(&self) {
        if let Some(dir) = &self.local {
            let _ = std::fs::remove_dir(dir);
        }
    }

    /// Removes the whole folder: the run has committed, or cannot.
    pub async fn remove(&self) {
        match &self.local {
            Some(dir) => {
                let _ = std::fs::remove_dir_all(dir);
            }
            None => self.remove_under("").await,
        }
    }

    async fn remove_under(&self, rel: &str) {
        if let Some(dir) = &self.local {
            let _ = std::fs::remove_dir_all(dir.join(rel));
            return;
        }
        use futures::StreamExt;
        let prefix = if rel.is_empty() {
            self.prefix.clone()
        } else {
            self.path(rel)
        };
        let locations = self
            .store
            .list(Some(&prefix))
            .map(|m| m.map(|m| m.location))
            .boxed();
        let mut deleted = self.store.delete_stream(locations);
        while let Some(r) = deleted.next().await {
            if let Err(e) = r {
                tracing::warn!(folder = %self.uri, error = %e, "cannot remove staged objects");
            }
        }
    }
}

/// Where a finished shard's part is staged.
#[derive(Debug, Clone)]
pub enum PartSource {
    Local(PathBuf),
    Store(ObjectPath),
}
