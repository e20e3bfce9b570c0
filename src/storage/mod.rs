//! Storage: object stores for `s3://`, `gs://`, `az://`/`abfss://` and `http(s)://` URIs.
//!
//! Credentials and settings come from each cloud's own environment variables and providers,
//! as `object_store` reads them (for S3: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//! `AWS_SESSION_TOKEN`, `AWS_REGION`, `AWS_ENDPOINT_URL`, web identity, instance metadata).
//! The spec's optional `[storage]` table overrides them for every URI of the job. Credentials
//! never appear in the spec: they are read from the environment by the store itself, and the
//! store's own error messages carry the URL, never a key.

use std::sync::Arc;
use std::time::Duration;

use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::prelude::SessionContext;
use object_store::ObjectStore;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::http::HttpBuilder;
use object_store::{ClientOptions, RetryConfig};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::diagnostics::Problem;

mod folder;
pub use folder::{Folder, Version};

/// Object store settings for every URI of the job.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StorageSpec {
    /// Endpoint of an S3-compatible store, e.g. `http://127.0.0.1:9000`. Default: the cloud's
    /// own endpoint, or `AWS_ENDPOINT_URL` when set.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Region of the bucket. Default: `AWS_REGION` (or `AWS_DEFAULT_REGION`), else us-east-1.
    #[serde(default)]
    pub region: Option<String>,
    /// Allow plain-HTTP endpoints. Default: false, a plain-HTTP endpoint is refused, unless
    /// the environment sets `AWS_ALLOW_HTTP=true` (as commands without a spec need).
    #[serde(default)]
    pub allow_http: bool,
    /// Retries of a transient failure (5xx, connection reset, throttling). Default: 10.
    #[serde(default)]
    pub max_retries: Option<usize>,
    /// Stop retrying a request after this many seconds. Default: 180.
    #[serde(default)]
    pub retry_timeout_secs: Option<u64>,
    /// Seconds to wait for a connection. Default: 5.
    #[serde(default)]
    pub connect_timeout_secs: Option<u64>,
    /// Seconds a request may take. Default: 30.
    #[serde(default)]
    pub timeout_secs: Option<u64>,
    /// S3 server-side encryption of every written object (parts, markers, manifests, staged
    /// and copied objects): `"AES256"` (S3-managed keys, SSE-S3) or `"aws:kms"` (SSE-KMS, with
    /// `kms_key_id`). Default: none, the bucket's default encryption.
    #[serde(default)]
    pub sse: Option<SseMode>,
    /// The KMS key for `sse = "aws:kms"`. Default: none.
    #[serde(default)]
    pub kms_key_id: Option<String>,
}

/// Server-side encryption modes for S3 writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
pub enum SseMode {
    /// SSE-S3: keys managed by S3.
    #[serde(rename = "AES256")]
    Aes256,
    /// SSE-KMS: a key of AWS KMS, `kms_key_id`.
    #[serde(rename = "aws:kms")]
    AwsKms,
}

/// The kinds of location a URI can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Local,
    S3,
    Gcs,
    Azure,
    Http,
}

impl Scheme {
    /// The scheme of `uri`, or `None` when batchscore does not know it.
    pub fn of(uri: &str) -> Option<Self> {
        let Some((scheme, _)) = uri.split_once("://") else {
            return Some(Self::Local);
        };
        Some(match scheme.to_ascii_lowercase().as_str() {
            "file" => Self::Local,
            "s3" | "s3a" => Self::S3,
            "gs" => Self::Gcs,
            "az" | "abfs" | "abfss" | "azure" => Self::Azure,
            "http" | "https" => Self::Http,
            _ => return None,
        })
    }

    pub fn is_remote(self) -> bool {
        self != Self::Local
    }
}

/// `allow_http`, or `AWS_ALLOW_HTTP=true` in the environment (object_store's own variable,
/// which `score`, `sql` and `init` users set for a local S3-compatible server).
pub fn allows_http(spec: &StorageSpec) -> bool {
    spec.allow_http
        || std::env::var("AWS_ALLOW_HTTP").is_ok_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

/// Whether `uri` names an object in a store (not a local path or `file://` URL).
pub fn is_remote(uri: &str) -> bool {
    Scheme::of(uri).is_some_and(Scheme::is_remote)
}

/// Checks the `[storage]` table and the URIs' schemes; every problem is returned.
pub fn check(storage: &StorageSpec, uris: &[(&str, &str)]) -> Vec<Problem> {
    let mut p = Vec::new();
    for (key, uri) in uris {
        match Scheme::of(uri) {
            None => p.push(Problem::new(
                *key,
                format!("{uri}: unknown scheme; use a path, file://, s3://, gs://, az://, abfss:// or (for models) https://"),
            )),
            // `model.uri`, or a challenger's `challengers[i].model.uri`.
            Some(Scheme::Http) if !key.ends_with("model.uri") => p.push(Problem::new(
                *key,
                format!("{uri}: http(s):// is read-only and for models only"),
            )),
            _ => {}
        }
    }
    let endpoint = storage
        .endpoint
        .clone()
        .map(|e| ("storage.endpoint", e))
        .or_else(|| {
            std::env::var("AWS_ENDPOINT_URL")
                .ok()
                .map(|e| ("storage.allow_http", e))
        });
    if let Some((key, e)) = endpoint
        && e.to_ascii_lowercase().starts_with("http://")
        && !allows_http(storage)
        && uris.iter().any(|(_, u)| Scheme::of(u) == Some(Scheme::S3))
    {
        p.push(Problem::new(
            key,
            format!("the endpoint {e} is plain HTTP, which is refused by default: set allow_http = true under [storage] to allow it"),
        ));
    }
    if storage.sse == Some(SseMode::AwsKms) && storage.kms_key_id.is_none() {
        p.push(Problem::new(
            "storage.kms_key_id",
            "is required with sse = \"aws:kms\"",
        ));
    }
    if storage.kms_key_id.is_some() && storage.sse != Some(SseMode::AwsKms) {
        p.push(Problem::new(
            "storage.sse",
            "must be \"aws:kms\" when kms_key_id is set",
        ));
    }
    p
}

/// Builds object stores from the environment and the `[storage]` overrides.
#[derive(Debug, Clone, Default)]
pub struct StoreFactory {
    pub spec: StorageSpec,
}

/// The store for a URI and the path of the object (or prefix) inside it.
pub struct Located {
    pub store: Arc<dyn ObjectStore>,
    /// `scheme://bucket` (or `scheme://host` for http), what DataFusion registers.
    pub root: String,
    pub path: object_store::path::Path,
}

#[derive(Debug, thiserror::Error)]
#[error("{uri}: {message}")]
pub struct StorageError {
    pub uri: String,
    pub message: String,
}

impl StoreFactory {
    pub fn new(spec: StorageSpec) -> Self {
        Self { spec }
    }

    fn retry(&self) -> RetryConfig {
        let mut r = RetryConfig::default();
        if let Some(n) = self.spec.max_retries {
            r.max_retries = n;
        }
        if let Some(s) = self.spec.retry_timeout_secs {
            r.retry_timeout = Duration::from_secs(s);
        }
        r
    }

    fn client_options(&self) -> ClientOptions {
        ClientOptions::new()
            .with_allow_http(allows_http(&self.spec))
            .with_connect_timeout(Duration::from_secs(
                self.spec.connect_timeout_secs.unwrap_or(5),
            ))
            .with_timeout(Duration::from_secs(self.spec.timeout_secs.unwrap_or(30)))
    }

    /// The store and object path for a remote URI.
    pub fn locate(&self, uri: &str) -> Result<Located, StorageError> {
        let err = |message: String| StorageError {
            uri: uri.to_string(),
            message,
        };
        let url = url::Url::parse(uri).map_err(|e| err(format!("not a valid URL: {e}")))?;
        let host = url.host_str().unwrap_or_default().to_string();
        // Scheme, host and port: `s3://bucket`, `http://127.0.0.1:8000`.
        let root = url[..url::Position::BeforePath].to_string();
        let path =
            object_store::path::Path::from_url_path(url.path()).map_err(|e| err(e.to_string()))?;
        let store: Arc<dyn ObjectStore> = match Scheme::of(uri) {
            Some(Scheme::S3) => {
                let mut b = AmazonS3Builder::from_env()
                    .with_bucket_name(&host)
                    .with_retry(self.retry())
                    .with_client_options(self.client_options())
                    .with_allow_http(allows_http(&self.spec));
                if let Some(e) = &self.spec.endpoint {
                    b = b.with_endpoint(e);
                }
                if let Some(r) = &self.spec.region {
                    b = b.with_region(r);
                }
                match (self.spec.sse, &self.spec.kms_key_id) {
                    (Some(SseMode::AwsKms), Some(k)) => b = b.with_sse_kms_encryption(k),
                    (Some(SseMode::Aes256), _) => {
                        // SSE-S3 has no builder method of its own in object_store 0.13.
                        let key: AmazonS3ConfigKey = "aws_server_side_encryption"
                            .parse()
                            .map_err(|e: object_store::Error| err(e.to_string()))?;
                        b = b.with_config(key, "AES256");
                    }
                    _ => {}
                }
                Arc::new(b.build().map_err(|e| err(e.to_string()))?)
            }
            Some(Scheme::Gcs) => Arc::new(
                GoogleCloudStorageBuilder::from_env()
                    .with_bucket_name(&host)
                    .with_retry(self.retry())
                    .with_client_options(self.client_options())
                    .build()
                    .map_err(|e| err(e.to_string()))?,
            ),
            Some(Scheme::Azure) => Arc::new(
                MicrosoftAzureBuilder::from_env()
                    .with_url(uri)
                    .with_retry(self.retry())
                    .with_client_options(self.client_options())
                    .build()
                    .map_err(|e| err(e.to_string()))?,
            ),
            Some(Scheme::Http) => Arc::new(
                HttpBuilder::new()
                    .with_url(&root)
                    .with_retry(self.retry())
                    .with_client_options(self.client_options())
                    .build()
                    .map_err(|e| err(e.to_string()))?,
            ),
            _ => return Err(err("not an object store URL".into())),
        };
        Ok(Located { store, root, path })
    }

    /// Registers the store of a remote URI with DataFusion, so that tables can read it.
    pub fn register(&self, ctx: &SessionContext, uri: &str) -> Result<(), StorageError> {
        let located = self.locate(uri)?;
        let url = ObjectStoreUrl::parse(&located.root).map_err(|e| StorageError {
            uri: uri.to_string(),
            message: e.to_string(),
        })?;
        ctx.register_object_store(url.as_ref(), located.store);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes() {
        assert_eq!(Scheme::of("data/x.parquet"), Some(Scheme::Local));
        assert_eq!(Scheme::of("file:///x"), Some(Scheme::Local));
        assert_eq!(Scheme::of("s3://b/k"), Some(Scheme::S3));
        assert_eq!(
            Scheme::of("abfss://c@a.dfs.core.windows.net/p"),
            Some(Scheme::Azure)
        );
        assert_eq!(Scheme::of("gs://b/p"), Some(Scheme::Gcs));
        assert_eq!(Scheme::of("ftp://x"), None);
    }

    #[test]
    fn plain_http_endpoints_are_refused_unless_allowed() {
        let spec = StorageSpec {
            endpoint: Some("http://127.0.0.1:9000".into()),
            ..Default::default()
        };
        let p = check(&spec, &[("input.uri", "s3://b/x/")]);
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].key, "storage.endpoint");
        assert!(
            p[0].message
                .contains("set allow_http = true under [storage]"),
            "{}",
            p[0].message
        );
        let allowed = StorageSpec {
            allow_http: true,
            ..spec
        };
        assert!(check(&allowed, &[("input.uri", "s3://b/x/")]).is_empty());
    }

    #[test]
    fn http_is_for_models_only_and_kms_needs_a_key() {
        let p = check(
            &StorageSpec::default(),
            &[
                ("output.uri", "https://h/x/"),
                ("model.uri", "https://h/m.onnx"),
            ],
        );
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].key, "output.uri");
        let kms = StorageSpec {
            sse: Some(SseMode::AwsKms),
            ..Default::default()
        };
        assert_eq!(check(&kms, &[]).len(), 1);
        let aes_with_key = StorageSpec {
            sse: Some(SseMode::Aes256),
            kms_key_id: Some("k".into()),
            ..Default::default()
        };
        assert_eq!(check(&aes_with_key, &[])[0].key, "storage.sse");
        let aes = StorageSpec {
            sse: Some(SseMode::Aes256),
            ..Default::default()
        };
        assert!(check(&aes, &[]).is_empty());
    }
}
