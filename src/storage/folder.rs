//! A folder of small documents, local or in an object store, with the two atomic writes a
//! registry and a run history need: create-if-absent and compare-and-swap.
//!
//! In a store both are the store's conditional puts (`PutMode::Create`, and
//! `PutMode::Update` on the e-tag read). A local folder has create-if-absent (`O_EXCL`) but no
//! conditional update, so a swap takes `<name>.lock` (create-if-absent), compares the
//! content's hash with the one read, and renames a temporary file over the document.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, UpdateVersion};
use sha2::{Digest, Sha256};

use super::{StorageError, StoreFactory};

/// What a swap compares: the e-tag in a store, the content's SHA-256 locally.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version(String);

/// A folder (a local directory or a store prefix) holding documents by relative path.
#[derive(Clone)]
pub struct Folder {
    store: Arc<dyn ObjectStore>,
    prefix: ObjectPath,
    /// The folder as given, without a trailing slash, for messages.
    pub uri: String,
    /// The directory, for a local folder.
    local: Option<PathBuf>,
}

impl std::fmt::Debug for Folder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.uri)
    }
}

impl Folder {
    /// The folder at `uri`: a path, or a store URL. A local one need not exist yet.
    pub fn open(uri: &str, stores: &StoreFactory) -> Result<Self, StorageError> {
        let trimmed = uri.trim_end_matches('/').to_string();
        if super::is_remote(uri) {
            let located = stores.locate(&trimmed)?;
            return Ok(Self {
                store: located.store,
                prefix: located.path,
                uri: trimmed,
                local: None,
            });
        }
        let dir = std::path::absolute(Path::new(&trimmed)).map_err(|e| StorageError {
            uri: uri.to_string(),
            message: e.to_string(),
        })?;
        Ok(Self {
            store: Arc::new(LocalFileSystem::new()),
            prefix: ObjectPath::from_absolute_path(&dir).map_err(|e| StorageError {
                uri: uri.to_string(),
                message: e.to_string(),
            })?,
            uri: trimmed,
            local: Some(dir),
        })
    }

    /// The path or URL of `rel` inside the folder.
    pub fn uri_of(&self, rel: &str) -> String {
        format!("{}/{rel}", self.uri)
    }

    /// The local path of `rel`, for a local folder.
    pub fn local_path(&self, rel: &str) -> Option<PathBuf> {
        self.local.as_ref().map(|d| d.join(rel))
    }

    fn path(&self, rel: &str) -> ObjectPath {
        rel.split('/')
            .filter(|s| !s.is_empty())
            .fold(self.prefix.clone(), |p, seg| p.join(seg))
    }

    fn err(&self, rel: &str) -> impl Fn(object_store::Error) -> StorageError + '_ {
        let uri = self.uri_of(rel);
        move |e| StorageError {
            uri: uri.clone(),
            message: e.to_string(),
        }
    }

    /// The document at `rel` and its version, or none when absent.
    pub async fn get(&self, rel: &str) -> Result<Option<(Bytes, Version)>, StorageError> {
        let r = match self.store.get(&self.path(rel)).await {
            Ok(r) => r,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(self.err(rel)(e)),
        };
        let e_tag = r.meta.e_tag.clone();
        let bytes = r.bytes().await.map_err(self.err(rel))?;
        let version = match (&self.local, e_tag) {
            (None, Some(tag)) => Version(tag),
            _ => Version(hex::encode(Sha256::digest(&bytes))),
        };
        Ok(Some((bytes, version)))
    }

    /// Writes `bytes` at `rel`, replacing what is there.
    pub async fn put(&self, rel: &str, bytes: Bytes) -> Result<(), StorageError> {
        self.store
            .put(&self.path(rel), bytes.into())
            .await
            .map(|_| ())
            .map_err(self.err(rel))
    }

    /// Writes `bytes` at `rel` unless something is there; false when something was.
    pub async fn create(&self, rel: &str, bytes: Bytes) -> Result<bool, StorageError> {
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
            Err(e) => Err(self.err(rel)(e)),
        }
    }

    /// Replaces the document at `rel` with `bytes` if it is still the one read as `read`
    /// (`None`: if it is still absent). False when another writer changed it in between.
    pub async fn swap(
        &self,
        rel: &str,
        read: Option<&Version>,
        bytes: Bytes,
    ) -> Result<bool, StorageError> {
        let Some(read) = read else {
            return self.create(rel, bytes).await;
        };
        if self.local.is_some() {
            return self.swap_local(rel, read, bytes).await;
        }
        let opts = PutOptions {
            mode: PutMode::Update(UpdateVersion {
                e_tag: Some(read.0.clone()),
                version: None,
            }),
            ..Default::default()
        };
        match self
            .store
            .put_opts(&self.path(rel), bytes.into(), opts)
            .await
        {
            Ok(_) => Ok(true),
            Err(
                object_store::Error::Precondition { .. }
                | object_store::Error::AlreadyExists { .. }
                | object_store::Error::NotFound { .. },
            ) => Ok(false),
            Err(e) => Err(self.err(rel)(e)),
        }
    }

    /// A local swap: under `<rel>.lock`, compare and rename.
    async fn swap_local(
        &self,
        rel: &str,
        read: &Version,
        bytes: Bytes,
    ) -> Result<bool, StorageError> {
        let lock = format!("{rel}.lock");
        let mut waited = Duration::ZERO;
        while !self.create(&lock, Bytes::new()).await? {
            // A writer holds a swap for microseconds; a lock this old was left by a crash.
            if waited > Duration::from_secs(10) {
                self.delete(&lock).await;
                waited = Duration::ZERO;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            waited += Duration::from_millis(20);
        }
        let outcome = match self.get(rel).await {
            Ok(Some((_, now))) if &now == read => self.put(rel, bytes).await.map(|_| true),
            Ok(_) => Ok(false),
            Err(e) => Err(e),
        };
        self.delete(&lock).await;
        outcome
    }

    /// Removes the document at `rel` (absent is fine).
    pub async fn delete(&self, rel: &str) {
        let _ = self.store.delete(&self.path(rel)).await;
    }

    /// The names of the folders directly under `rel`, sorted.
    pub async fn folders(&self, rel: &str) -> Result<Vec<String>, StorageError> {
        if let Some(dir) = &self.local {
            let dir = dir.join(rel);
            let Ok(entries) = std::fs::read_dir(&dir) else {
                return Ok(Vec::new());
            };
            let mut names: Vec<String> = entries
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with('.'))
                .collect();
            names.sort();
            return Ok(names);
        }
        let listed = self
            .store
            .list_with_delimiter(Some(&self.path(rel)))
            .await
            .map_err(self.err(rel))?;
        let mut names: Vec<String> = listed
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(str::to_string))
            .collect();
        names.sort();
        Ok(names)
    }

    /// Removes everything under `rel`.
    pub async fn remove_all(&self, rel: &str) -> Result<(), StorageError> {
        if let Some(dir) = &self.local {
            let dir = dir.join(rel);
            return match std::fs::remove_dir_all(&dir) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(StorageError {
                    uri: dir.display().to_string(),
                    message: e.to_string(),
                }),
                _ => Ok(()),
            };
        }
        let locations = self
            .store
            .list(Some(&self.path(rel)))
            .map(|m| m.map(|m| m.location))
            .boxed();
        let mut deleted = self.store.delete_stream(locations);
        while let Some(r) = deleted.next().await {
            r.map_err(self.err(rel))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_swap_fails_when_the_document_changed_since_it_was_read() {
        let dir = tempfile::tempdir().unwrap();
        let f = Folder::open(dir.path().to_str().unwrap(), &StoreFactory::default()).unwrap();
        assert!(f.get("a/x.json").await.unwrap().is_none());
        assert!(f.swap("a/x.json", None, "1".into()).await.unwrap());
        assert!(!f.swap("a/x.json", None, "2".into()).await.unwrap());
        let (bytes, v1) = f.get("a/x.json").await.unwrap().unwrap();
        assert_eq!(&bytes[..], b"1");
        assert!(f.swap("a/x.json", Some(&v1), "2".into()).await.unwrap());
        // v1 is stale now.
        assert!(!f.swap("a/x.json", Some(&v1), "3".into()).await.unwrap());
        assert_eq!(&f.get("a/x.json").await.unwrap().unwrap().0[..], b"2");
        assert!(!dir.path().join("a/x.json.lock").exists());
        assert_eq!(f.folders("").await.unwrap(), ["a"]);
        f.remove_all("a").await.unwrap();
        assert!(f.folders("").await.unwrap().is_empty());
    }
}
