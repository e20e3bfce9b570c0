//! The ONNX model: loading ONNX Runtime ([`runtime`]), opening and describing a model, where
//! its sessions run ([`device`]) and the pool the scoring workers share ([`session`]).
//!
//! [`types`] is the one map between ONNX Runtime's element types, the spec's `dtype` and
//! Arrow's types; [`onnx`] reads an ONNX file's own protobuf without ONNX Runtime; [`cache`]
//! keeps remote models locally by their SHA-256; [`bench`] measures inference alone.

pub mod bench;
pub mod cache;
pub mod device;
pub mod onnx;
pub mod registry;
pub mod runtime;
pub mod session;
pub mod types;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;

use ort::session::Session;
use sha2::{Digest, Sha256};

use crate::storage::StoreFactory;
pub use cache::ModelCache;
pub use device::{DeviceError, ExecutionDevice};
pub use onnx::{OnnxError, OnnxHeader, parse_onnx_header};
pub use runtime::{init_runtime, runtime_library};
pub use session::SessionPool;
use session::new_session_on;
pub use types::{ElemType, IoKind, ModelIo, show_shape};

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(
        "ONNX Runtime library not found (looked in: {looked}); run scripts/fetch-ort, set ORT_DYLIB_PATH or pass --ort-lib"
    )]
    OrtNotFound { looked: String },
    #[error("cannot load ONNX Runtime from {path}: {message}")]
    OrtLoad { path: PathBuf, message: String },
    #[error("model {uri}: cannot read: {source}")]
    Read { uri: String, source: std::io::Error },
    #[error("model {uri}: sha256 is {actual}, but [model.sha256] pins {expected}")]
    Sha256Mismatch {
        uri: String,
        expected: String,
        actual: String,
    },
    #[error("model {uri}: not an ONNX model: {source}")]
    NotOnnx { uri: String, source: OnnxError },
    #[error("model {uri}: ONNX Runtime cannot load it: {message}")]
    Session { uri: String, message: String },
    #[error("model {uri}: cannot fetch: {message}")]
    Fetch { uri: String, message: String },
}

impl ModelError {
    /// Whether ONNX Runtime itself is missing (a broken install, exit 1) rather than the
    /// model being wrong (a refusal, exit 2).
    pub fn is_runtime(&self) -> bool {
        matches!(self, Self::OrtNotFound { .. } | Self::OrtLoad { .. })
    }
}

/// An opened model: its bytes' hash, its header and its signature.
#[derive(Debug)]
pub struct Model {
    pub uri: String,
    pub sha256: String,
    pub size_bytes: u64,
    pub header: OnnxHeader,
    pub inputs: Vec<ModelIo>,
    pub outputs: Vec<ModelIo>,
    pub metadata: BTreeMap<String, String>,
    /// The registry version it was loaded as, when the spec named one.
    pub registered: Option<registry::Resolved>,
    bytes: Vec<u8>,
    first_session: Mutex<Option<Session>>,
}

impl Model {
    /// Reads a local model, checks its hash against `pin`, and opens one session to describe it.
    pub fn open(uri: &str, pin: Option<&str>) -> Result<Self, ModelError> {
        let bytes = std::fs::read(uri).map_err(|source| ModelError::Read {
            uri: uri.to_string(),
            source,
        })?;
        Self::from_bytes(uri, bytes, pin)
    }

    /// Opens a local or remote model; remote ones go through the local cache ([`ModelCache`]).
    pub async fn load(
        uri: &str,
        pin: Option<&str>,
        stores: &StoreFactory,
    ) -> Result<Self, ModelError> {
        if !crate::storage::is_remote(uri) {
            return Self::open(uri, pin);
        }
        let bytes = ModelCache::from_env().fetch(uri, pin, stores).await?;
        Self::from_bytes(uri, bytes, pin)
    }

    fn from_bytes(uri: &str, bytes: Vec<u8>, pin: Option<&str>) -> Result<Self, ModelError> {
        let sha256 = hex::encode(Sha256::digest(&bytes));
        if let Some(expected) = pin
            && !expected.eq_ignore_ascii_case(&sha256)
        {
            return Err(ModelError::Sha256Mismatch {
                uri: uri.to_string(),
                expected: expected.to_lowercase(),
                actual: sha256,
            });
        }
        let header = parse_onnx_header(&bytes).map_err(|source| ModelError::NotOnnx {
            uri: uri.to_string(),
            source,
        })?;
        let session = new_session_on(uri, &bytes, 1, ExecutionDevice::Cpu, true)?;
        let describe = |ios: &[ort::value::Outlet]| -> Vec<ModelIo> {
            ios.iter()
                .map(|o| ModelIo {
                    name: o.name().to_string(),
                    kind: IoKind::from_ort(o.dtype()),
                })
                .collect()
        };
        Ok(Self {
            uri: uri.to_string(),
            sha256,
            size_bytes: bytes.len() as u64,
            header,
            inputs: describe(session.inputs()),
            outputs: describe(session.outputs()),
            metadata: metadata(&session),
            registered: None,
            bytes,
            first_session: Mutex::new(Some(session)),
        })
    }

    /// The ONNX file's bytes.
    pub fn onnx_bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub fn input(&self, name: &str) -> Option<&ModelIo> {
        self.inputs.iter().find(|i| i.name == name)
    }

    pub fn output(&self, name: &str) -> Option<&ModelIo> {
        self.outputs.iter().find(|o| o.name == name)
    }

    /// A pool of `size` sessions (at least one) with `intra_op_threads` threads each on
    /// `device`, reusing the session opened to describe the model when it has one CPU thread.
    pub fn session_pool(
        &self,
        size: usize,
        intra_op_threads: usize,
        device: ExecutionDevice,
    ) -> Result<SessionPool, ModelError> {
        let mut sessions = Vec::with_capacity(size.max(1));
        let first = self
            .first_session
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        // The describing session plans memory for fixed shapes; one that is not reused is
        // dropped rather than held for the run.
        let reusable =
            intra_op_threads <= 1 && device == ExecutionDevice::Cpu && !self.varies_after_batch();
        sessions.extend(first.filter(|_| reusable));
        while sessions.len() < size.max(1) {
            sessions.push(self.new_session(intra_op_threads, device)?);
        }
        Ok(SessionPool::new(sessions))
    }

    /// A new session of this model with `intra_op_threads` threads on `device`.
    pub fn new_session(
        &self,
        intra_op_threads: usize,
        device: ExecutionDevice,
    ) -> Result<Session, ModelError> {
        let pattern = !self.varies_after_batch();
        new_session_on(&self.uri, &self.bytes, intra_op_threads, device, pattern)
    }

    /// Whether an input has a dynamic dimension after the batch (`[batch, sequence]`), so
    /// that calls come in many shapes. ONNX Runtime's memory pattern plans one shape's
    /// allocations and keeps a plan per shape: off for such models (measured on MiniLM with
    /// 32-row calls of 8 to 128 tokens: 581 MiB peak with it, 445 MiB without, per session).
    pub fn varies_after_batch(&self) -> bool {
        self.inputs.iter().any(|io| match &io.kind {
            IoKind::Tensor { shape, .. } => shape.iter().skip(1).any(|&d| d < 0),
            _ => false,
        })
    }
}

/// The graph's name, description, domain and the producer's custom metadata.
fn metadata(session: &Session) -> BTreeMap<String, String> {
    let mut metadata = BTreeMap::new();
    let Ok(meta) = session.metadata() else {
        return metadata;
    };
    for (k, v) in [
        ("graph_name", meta.name()),
        ("description", meta.description()),
        ("domain", meta.domain()),
        ("graph_description", meta.graph_description()),
    ] {
        if let Some(v) = v.filter(|v| !v.is_empty()) {
            metadata.insert(k.to_string(), v);
        }
    }
    if let Ok(keys) = meta.custom_keys() {
        for k in keys {
            if let Some(v) = meta.custom(&k) {
                metadata.insert(k, v);
            }
        }
    }
    metadata
}
