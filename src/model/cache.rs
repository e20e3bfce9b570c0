//! Remote models, downloaded once into a local cache keyed by their SHA-256.

use std::path::PathBuf;

use object_store::ObjectStoreExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::ModelError;
use crate::storage::StoreFactory;

/// size). A model pinned by `model.sha256` and already cached is used without asking the
/// store at all; an unpinned one costs one HEAD request when its ETag is unchanged.
#[derive(Debug, Clone)]
pub struct ModelCache {
    pub dir: PathBuf,
}

#[derive(Debug, Deserialize, Serialize)]
struct CachedUrl {
    url: String,
    e_tag: Option<String>,
    size: u64,
    sha256: String,
}

impl ModelCache {
    pub fn from_env() -> Self {
        let dir = std::env::var_os("BATCHSCORE_CACHE")
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("batchscore"))
            })
            .or_else(|| {
                std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/batchscore"))
            })
            .unwrap_or_else(|| std::env::temp_dir().join("batchscore-cache"));
        Self { dir }
    }

    fn model_path(&self, sha256: &str) -> PathBuf {
        self.dir.join("models").join(format!("{sha256}.onnx"))
    }

    fn url_path(&self, uri: &str) -> PathBuf {
        let key = hex::encode(Sha256::digest(uri.as_bytes()));
        self.dir.join("models/urls").join(format!("{key}.json"))
    }

    /// A cached model's bytes, when present and intact.
    fn cached(&self, sha256: &str) -> Option<Vec<u8>> {
        let bytes = std::fs::read(self.model_path(sha256)).ok()?;
        (hex::encode(Sha256::digest(&bytes)) == sha256).then_some(bytes)
    }

    pub async fn fetch(
        &self,
        uri: &str,
        pin: Option<&str>,
        stores: &StoreFactory,
    ) -> Result<Vec<u8>, ModelError> {
        let fail = |message: String| ModelError::Fetch {
            uri: uri.to_string(),
            message,
        };
        if let Some(pin) = pin
            && let Some(bytes) = self.cached(&pin.to_lowercase())
        {
            tracing::info!(model = %uri, sha256 = %pin, "model from the local cache");
            return Ok(bytes);
        }
        let located = stores.locate(uri).map_err(|e| fail(e.message))?;
        let meta = located
            .store
            .head(&located.path)
            .await
            .map_err(|e| fail(format!("HEAD: {e}")))?;
        let remembered: Option<CachedUrl> = std::fs::read(self.url_path(uri))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        if let Some(r) = remembered
            && r.e_tag == meta.e_tag
            && r.size == meta.size
            && let Some(bytes) = self.cached(&r.sha256)
        {
            tracing::info!(model = %uri, sha256 = %r.sha256, "model from the local cache (unchanged ETag)");
            return Ok(bytes);
        }
        tracing::info!(model = %uri, bytes = meta.size, "downloading model");
        let bytes = located
            .store
            .get(&located.path)
            .await
            .map_err(|e| fail(format!("GET: {e}")))?
            .bytes()
            .await
            .map_err(|e| fail(format!("GET: {e}")))?
            .to_vec();
        let sha256 = hex::encode(Sha256::digest(&bytes));
        // A pinned model that differs is refused by the caller; only verified content is cached.
        if pin.is_none_or(|p| p.eq_ignore_ascii_case(&sha256))
            && let Err(e) = self.store(uri, &meta, &sha256, &bytes)
        {
            tracing::warn!(cache = %self.dir.display(), error = %e, "cannot write the model cache; continuing without it");
        }
        Ok(bytes)
    }

    fn store(
        &self,
        uri: &str,
        meta: &object_store::ObjectMeta,
        sha256: &str,
        bytes: &[u8],
    ) -> std::io::Result<()> {
        let path = self.model_path(sha256);
        std::fs::create_dir_all(self.dir.join("models/urls"))?;
        // Write then rename, so that a concurrent run never reads half a model.
        let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, &path)?;
        let entry = CachedUrl {
            url: uri.to_string(),
            e_tag: meta.e_tag.clone(),
            size: meta.size,
            sha256: sha256.to_string(),
        };
        let url_path = self.url_path(uri);
        let tmp = url_path.with_extension(format!("tmp-{}", std::process::id()));
        std::fs::write(&tmp, serde_json::to_vec(&entry)?)?;
        std::fs::rename(&tmp, &url_path)
    }
}
