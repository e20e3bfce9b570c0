//! The ONNX model: loading ONNX Runtime, opening and describing a model, and a pool of
//! sessions for parallel scoring.
//!
//! ONNX Runtime is loaded at run time (`ort` with `load-dynamic`) from the shared library of
//! the `onnxruntime` wheel on PyPI. The library is found, in order, from `--ort-lib`,
//! `ORT_DYLIB_PATH`, a `libonnxruntime.so*` beside the executable, and the repository's own
//! `.ort/` folder that `scripts/fetch-ort` fills.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, OnceLock};

use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::{TensorElementType, ValueType};
use serde::Serialize;
use sha2::{Digest, Sha256};

use object_store::ObjectStoreExt;

use crate::storage::{Scheme, StoreFactory};

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
    #[error("model {uri}: not an ONNX model: {reason}")]
    NotOnnx { uri: String, reason: String },
    #[error("model {uri}: ONNX Runtime cannot load it: {message}")]
    Session { uri: String, message: String },
    #[error("model {uri}: cannot fetch: {message}")]
    Fetch { uri: String, message: String },
}

/// The ONNX Runtime environment, created once per process.
static ORT_ENV: OnceLock<Result<ort::environment::Environment, String>> = OnceLock::new();
static ORT_PATH: OnceLock<PathBuf> = OnceLock::new();

/// Finds and loads ONNX Runtime once; later calls return the first outcome.
pub fn init_runtime(
    explicit: Option<&Path>,
) -> Result<&'static ort::environment::Environment, ModelError> {
    if ORT_ENV.get().is_none() {
        let path = find_ort_library(explicit)?;
        let _ = ORT_PATH.set(path.clone());
        let env = ort::init_from(&path)
            .map_err(|e| e.to_string())
            .and_then(|b| b.with_name("batchscore").build().map_err(|e| e.to_string()));
        let _ = ORT_ENV.set(env);
    }
    match ORT_ENV.get() {
        Some(Ok(env)) => Ok(env),
        Some(Err(message)) => Err(ModelError::OrtLoad {
            path: ORT_PATH.get().cloned().unwrap_or_default(),
            message: message.clone(),
        }),
        None => unreachable!("set above"),
    }
}

/// The ONNX Runtime library in use, once loaded.
pub fn runtime_library() -> Option<&'static Path> {
    ORT_PATH.get().map(PathBuf::as_path)
}

fn find_ort_library(explicit: Option<&Path>) -> Result<PathBuf, ModelError> {
    if let Some(p) = explicit {
        return Ok(p.to_path_buf());
    }
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    let mut looked = vec!["--ort-lib".to_string(), "ORT_DYLIB_PATH".to_string()];
    let mut dirs = Vec::new();
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        dirs.push(dir);
    }
    // The checkout this binary was built from: `scripts/fetch-ort` unpacks the wheel there.
    dirs.push(Path::new(env!("CARGO_MANIFEST_DIR")).join(".ort/lib"));
    for dir in dirs {
        looked.push(dir.display().to_string());
        if let Ok(entries) = std::fs::read_dir(&dir) {
            let mut found: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("libonnxruntime.so"))
                })
                .collect();
            found.sort();
            if let Some(p) = found.into_iter().next() {
                return Ok(p);
            }
        }
    }
    Err(ModelError::OrtNotFound {
        looked: looked.join(", "),
    })
}

/// Element types of tensors, as batchscore names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ElemType {
    Float32,
    Float64,
    Int64,
    Int32,
    Bool,
    String,
    /// Any other ONNX element type; the name is kept for messages.
    #[serde(untagged)]
    Other(&'static str),
}

impl ElemType {
    fn from_ort(t: TensorElementType) -> Self {
        match t {
            TensorElementType::Float32 => Self::Float32,
            TensorElementType::Float64 => Self::Float64,
            TensorElementType::Int64 => Self::Int64,
            TensorElementType::Int32 => Self::Int32,
            TensorElementType::Bool => Self::Bool,
            TensorElementType::String => Self::String,
            TensorElementType::Float16 => Self::Other("float16"),
            TensorElementType::Bfloat16 => Self::Other("bfloat16"),
            TensorElementType::Uint8 => Self::Other("uint8"),
            TensorElementType::Int8 => Self::Other("int8"),
            TensorElementType::Uint16 => Self::Other("uint16"),
            TensorElementType::Int16 => Self::Other("int16"),
            TensorElementType::Uint32 => Self::Other("uint32"),
            TensorElementType::Uint64 => Self::Other("uint64"),
            _ => Self::Other("an unsupported element type"),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Float32 => "float32",
            Self::Float64 => "float64",
            Self::Int64 => "int64",
            Self::Int32 => "int32",
            Self::Bool => "bool",
            Self::String => "string",
            Self::Other(s) => s,
        }
    }
}

impl std::fmt::Display for ElemType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What a model input or output holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum IoKind {
    /// A tensor; `-1` marks a dynamic dimension.
    Tensor { dtype: ElemType, shape: Vec<i64> },
    /// A sequence of maps, one map per row (the ZipMap output of scikit-learn classifiers).
    SequenceOfMaps { key: ElemType, value: ElemType },
    /// Anything else (optional, nested sequences); described for messages only.
    Other { description: String },
}

impl IoKind {
    fn from_ort(t: &ValueType) -> Self {
        match t {
            ValueType::Tensor { ty, shape, .. } => Self::Tensor {
                dtype: ElemType::from_ort(*ty),
                shape: shape.iter().copied().collect(),
            },
            ValueType::Sequence(inner) => match inner.as_ref() {
                ValueType::Map { key, value } => Self::SequenceOfMaps {
                    key: ElemType::from_ort(*key),
                    value: ElemType::from_ort(*value),
                },
                other => Self::Other {
                    description: format!("sequence of {other}"),
                },
            },
            other => Self::Other {
                description: other.to_string(),
            },
        }
    }
}

impl std::fmt::Display for IoKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Tensor { dtype, shape } => {
                let dims: Vec<String> = shape
                    .iter()
                    .map(|d| {
                        if *d < 0 {
                            "?".to_string()
                        } else {
                            d.to_string()
                        }
                    })
                    .collect();
                write!(f, "tensor({dtype}) [{}]", dims.join(", "))
            }
            Self::SequenceOfMaps { key, value } => write!(f, "seq(map({key}, {value}))"),
            Self::Other { description } => f.write_str(description),
        }
    }
}

/// A named model input or output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModelIo {
    pub name: String,
    #[serde(flatten)]
    pub kind: IoKind,
}

/// Facts from the ONNX file's own header (read without ONNX Runtime).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct OnnxHeader {
    pub ir_version: i64,
    pub producer_name: String,
    pub producer_version: String,
    pub model_version: i64,
    /// Operator set versions by domain (`""` is the default ONNX domain, shown as `ai.onnx`).
    pub opsets: BTreeMap<String, i64>,
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
        if !Scheme::of(uri).is_some_and(Scheme::is_remote) {
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
        let header = parse_onnx_header(&bytes).map_err(|reason| ModelError::NotOnnx {
            uri: uri.to_string(),
            reason,
        })?;
        let session = new_session_on(uri, &bytes, 1, ExecutionDevice::Cpu)?;
        let inputs = session
            .inputs()
            .iter()
            .map(|o| ModelIo {
                name: o.name().to_string(),
                kind: IoKind::from_ort(o.dtype()),
            })
            .collect();
        let outputs = session
            .outputs()
            .iter()
            .map(|o| ModelIo {
                name: o.name().to_string(),
                kind: IoKind::from_ort(o.dtype()),
            })
            .collect();
        let mut metadata = BTreeMap::new();
        if let Ok(meta) = session.metadata() {
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
        }
        Ok(Self {
            uri: uri.to_string(),
            sha256,
            size_bytes: bytes.len() as u64,
            header,
            inputs,
            outputs,
            metadata,
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
        if intra_op_threads <= 1
            && device == ExecutionDevice::Cpu
            && let Some(s) = self
                .first_session
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take()
        {
            sessions.push(s);
        }
        while sessions.len() < size.max(1) {
            sessions.push(new_session_on(
                &self.uri,
                &self.bytes,
                intra_op_threads,
                device,
            )?);
        }
        Ok(SessionPool {
            sessions: Mutex::new(sessions),
            available: Condvar::new(),
        })
    }
}

impl Model {
    /// A new session of this model with `intra_op_threads` threads on `device`.
    pub fn new_session(
        &self,
        intra_op_threads: usize,
        device: ExecutionDevice,
    ) -> Result<Session, ModelError> {
        new_session_on(&self.uri, &self.bytes, intra_op_threads, device)
    }
}

/// Where sessions run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecutionDevice {
    Cpu,
    Cuda { device_id: u32 },
}

impl std::fmt::Display for ExecutionDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda { device_id } => write!(f, "cuda:{device_id}"),
        }
    }
}

impl ExecutionDevice {
    /// The device a spec's `[run] device` and `device_id` name.
    pub fn new(device: crate::spec::Device, device_id: u32) -> Self {
        match device {
            crate::spec::Device::Cpu => Self::Cpu,
            crate::spec::Device::Cuda => Self::Cuda { device_id },
        }
    }

    fn providers(self) -> Vec<ort::ep::ExecutionProviderDispatch> {
        match self {
            Self::Cpu => Vec::new(),
            // Registration fails loudly: a session that quietly ran on the CPU instead would
            // be the silent fallback the spec forbids.
            Self::Cuda { device_id } => vec![
                ort::ep::CUDA::default()
                    .with_device_id(device_id as i32)
                    .build()
                    .error_on_failure(),
            ],
        }
    }

    /// Whether ONNX Runtime can open sessions on this device, and if not, its reason.
    pub fn check(self) -> Result<(), String> {
        if self == Self::Cpu {
            return Ok(());
        }
        let env = init_runtime(None).map_err(|e| e.to_string())?;
        Session::builder(env)
            .map_err(|e| e.to_string())?
            .with_execution_providers(self.providers())
            .map(drop)
            .map_err(|e| readable_ort_message(e.to_string().trim_end()))
    }
}

fn new_session_on(
    uri: &str,
    bytes: &[u8],
    intra_op_threads: usize,
    device: ExecutionDevice,
) -> Result<Session, ModelError> {
    let env = init_runtime(None)?;
    let err = |e: ort::Error<_>| ModelError::Session {
        uri: uri.to_string(),
        message: e.to_string(),
    };
    // One intra-op thread per session by default: parallelism comes from one session per
    // worker, each scoring its own partition, which keeps every core busy without
    // oversubscription. `batchscore bench` measures the alternatives.
    Session::builder(env)
        .map_err(|e| ModelError::Session {
            uri: uri.to_string(),
            message: e.to_string(),
        })?
        .with_optimization_level(GraphOptimizationLevel::All)
        .map_err(err)?
        .with_intra_threads(intra_op_threads.max(1))
        .map_err(err)?
        .with_inter_threads(1)
        .map_err(err)?
        .with_execution_providers(device.providers())
        .map_err(err)?
        .commit_from_memory(bytes)
        .map_err(|e| ModelError::Session {
            uri: uri.to_string(),
            message: readable_ort_message(&e.to_string()),
        })
}

/// ONNX Runtime's load errors start with the C++ source location and function signature
/// (`/onnxruntime_src/…/model_load_utils.h:46 void onnxruntime::…(…) Opset 99 is …`): keep
/// what follows them, which is the part a person can act on.
fn readable_ort_message(message: &str) -> String {
    let Some(at) = message.find("/onnxruntime_src/") else {
        return message.to_string();
    };
    let (before, located) = message.split_at(at);
    // The signature ends at the parenthesis that closes its argument list.
    let mut depth = 0usize;
    for (i, c) in located.char_indices() {
        match c {
            '(' => depth += 1,
            ')' if depth > 0 => {
                depth -= 1;
                if depth == 0 {
                    let rest = located[i + 1..].trim_start();
                    // `const` and friends may follow the parameter list.
                    let rest = rest.strip_prefix("const ").unwrap_or(rest);
                    return format!("{before}{rest}");
                }
            }
            _ => {}
        }
    }
    message.to_string()
}

/// Sessions shared by the scoring workers; `ort` sessions run with `&mut self`, so each worker
/// borrows one for the length of a batch.
pub struct SessionPool {
    sessions: Mutex<Vec<Session>>,
    available: Condvar,
}

impl SessionPool {
    pub fn with_session<T>(&self, f: impl FnOnce(&mut Session) -> T) -> T {
        let mut session = {
            let mut guard = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
            loop {
                if let Some(s) = guard.pop() {
                    break s;
                }
                guard = self
                    .available
                    .wait(guard)
                    .unwrap_or_else(|e| e.into_inner());
            }
        };
        // Put the session back even if `f` panics, so other workers never wait forever.
        struct Return<'a> {
            pool: &'a SessionPool,
            session: Option<Session>,
        }
        impl Drop for Return<'_> {
            fn drop(&mut self) {
                if let Some(s) = self.session.take() {
                    self.pool
                        .sessions
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(s);
                    self.pool.available.notify_one();
                }
            }
        }
        let mut guard = Return {
            pool: self,
            session: None,
        };
        let out = f(&mut session);
        guard.session = Some(session);
        out
    }
}

impl std::fmt::Debug for SessionPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionPool")
    }
}

/// Reads the top-level fields of an ONNX `ModelProto` (protobuf) that describe the model,
/// refusing files that are not protobuf, are truncated, or have no graph.
pub fn parse_onnx_header(bytes: &[u8]) -> Result<OnnxHeader, String> {
    let mut h = OnnxHeader::default();
    let mut r = ProtoReader { buf: bytes, pos: 0 };
    let (mut has_graph, mut has_ir) = (false, false);
    if bytes.is_empty() {
        return Err("the file is empty".into());
    }
    while !r.done() {
        let (field, wire) = r.key()?;
        match (field, wire) {
            (1, 0) => {
                h.ir_version = r.varint()? as i64;
                has_ir = true;
            }
            (2, 2) => h.producer_name = r.string()?,
            (3, 2) => h.producer_version = r.string()?,
            (5, 0) => h.model_version = r.varint()? as i64,
            (7, 2) => {
                r.bytes()?;
                has_graph = true;
            }
            (8, 2) => {
                let mut sub = ProtoReader {
                    buf: r.bytes()?,
                    pos: 0,
                };
                let (mut domain, mut version) = (String::new(), 0i64);
                while !sub.done() {
                    match sub.key()? {
                        (1, 2) => domain = sub.string()?,
                        (2, 0) => version = sub.varint()? as i64,
                        (_, w) => sub.skip(w)?,
                    }
                }
                let domain = if domain.is_empty() {
                    "ai.onnx".to_string()
                } else {
                    domain
                };
                h.opsets.insert(domain, version);
            }
            (_, w) => r.skip(w)?,
        }
    }
    if !has_ir || !has_graph {
        return Err("no IR version or no graph (is it really an .onnx file?)".into());
    }
    Ok(h)
}

/// A reader of protobuf's wire format, enough to walk an ONNX file without its schema.
pub(crate) struct ProtoReader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> ProtoReader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    pub(crate) fn done(&self) -> bool {
        self.pos >= self.buf.len()
    }

    pub(crate) fn varint(&mut self) -> Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self
                .buf
                .get(self.pos)
                .ok_or("truncated (ends inside a number)")?;
            self.pos += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("malformed protobuf (varint too long)".into())
    }

    pub(crate) fn key(&mut self) -> Result<(u64, u8), String> {
        let k = self.varint()?;
        let field = k >> 3;
        if field == 0 {
            return Err("malformed protobuf (field number 0)".into());
        }
        Ok((field, (k & 7) as u8))
    }

    pub(crate) fn bytes(&mut self) -> Result<&'a [u8], String> {
        let len = self.varint()? as usize;
        let end = self
            .pos
            .checked_add(len)
            .filter(|&e| e <= self.buf.len())
            .ok_or("truncated (a field runs past the end of the file)")?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    pub(crate) fn string(&mut self) -> Result<String, String> {
        Ok(String::from_utf8_lossy(self.bytes()?).into_owned())
    }

    pub(crate) fn skip(&mut self, wire: u8) -> Result<(), String> {
        match wire {
            0 => self.varint().map(|_| ()),
            1 => self.advance(8),
            2 => self.bytes().map(|_| ()),
            5 => self.advance(4),
            w => Err(format!("malformed protobuf (wire type {w})")),
        }
    }

    /// A 32-bit little-endian value (wire type 5: `float`, `fixed32`).
    pub(crate) fn fixed32(&mut self) -> Result<u32, String> {
        let end = self.pos + 4;
        let b = self.buf.get(self.pos..end).ok_or("truncated")?;
        self.pos = end;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn advance(&mut self, n: usize) -> Result<(), String> {
        if self.pos + n > self.buf.len() {
            return Err("truncated".into());
        }
        self.pos += n;
        Ok(())
    }
}

/// Remote models, downloaded once into a local cache keyed by their SHA-256.
///
/// The cache is `$BATCHSCORE_CACHE`, else `$XDG_CACHE_HOME/batchscore`, else
/// `~/.cache/batchscore`. `models/<sha256>.onnx` holds each model;
/// `models/urls/<sha256 of the URL>.json` remembers which content a URL had (its ETag and
/// size). A model pinned by `model.sha256` and already cached is used without asking the
/// store at all; an unpinned one costs one HEAD request when its ETag is unchanged.
#[derive(Debug, Clone)]
pub struct ModelCache {
    pub dir: PathBuf,
}

#[derive(Debug, serde::Deserialize, Serialize)]
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
        std::fs::write(&tmp, serde_json::to_vec(&entry).unwrap_or_default())?;
        std::fs::rename(&tmp, &url_path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_of_a_real_model() {
        let bytes = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/sample_data/synthetic/rank1_int.onnx"
        ))
        .unwrap();
        let h = parse_onnx_header(&bytes).unwrap();
        assert_eq!(h.ir_version, 8);
        assert_eq!(h.producer_name, "batchscore-samples");
        assert_eq!(h.opsets.get("ai.onnx"), Some(&17));
    }

    #[test]
    fn ort_source_locations_are_dropped_from_messages() {
        let raw = "Load model failed:/onnxruntime_src/onnxruntime/core/graph/model_load_utils.h:46 void onnxruntime::model_load_utils::ValidateOpsetForDomain(const std::unordered_map<std::string, int>&, const onnxruntime::logging::Logger&, bool, const std::string&, int) ONNX Runtime only *guarantees* support for models stamped with official released onnx opset versions. Opset 99 is under development.";
        assert_eq!(
            readable_ort_message(raw),
            "Load model failed:ONNX Runtime only *guarantees* support for models stamped with official released onnx opset versions. Opset 99 is under development."
        );
        assert_eq!(readable_ort_message("plain"), "plain");
    }

    #[test]
    fn not_onnx_and_truncated_are_refused() {
        assert!(parse_onnx_header(b"").unwrap_err().contains("empty"));
        assert!(parse_onnx_header(b"name,age\n1,2\n").is_err());
        let bytes = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/sample_data/synthetic/rank1_int.onnx"
        ))
        .unwrap();
        let cut = &bytes[..bytes.len() / 2];
        assert!(parse_onnx_header(cut).unwrap_err().contains("truncated"));
    }
}
