//! The sink: output part files and the exactly-once commit.
//!
//! A run writes into a staging directory beside the output, `.<name>.staging-<run id>`, on the
//! same file system: the parts, then `_manifest.json`, `_metrics.json` and, last, `_SUCCESS`,
//! each synced to disk. The commit is one atomic directory rename: a reader sees the previous
//! output or the whole new one, never a mix and never a part without its manifest.
//!
//! - `mode = "error"`: the run is refused before any work when the output directory holds
//!   anything; the commit renames the staging directory into place.
//! - `mode = "overwrite"`: the commit swaps the staging and output directories in one
//!   `renameat2(RENAME_EXCHANGE)` (Linux), then deletes the old output. Where the file system
//!   cannot exchange, it falls back to two renames, with the old output moved aside first.
//!
//! A killed run leaves only its staging directory, which records its process id; the next run
//! on the same output removes staging directories whose process is gone.
//!
//! In an object store, where there is no atomic rename, [`StoreCommitter`] stages parts under
//! `<output>/_staging/<run id>/` (multipart uploads, so a part may be larger than memory) and
//! commits in this order:
//! 1. `_manifest.json` with a conditional put: create-if-absent, or update-if-unchanged against
//!    the version seen when the run started. Two runs racing on one output cannot both pass it;
//!    the loser stops there, having changed nothing.
//! 2. the old `_SUCCESS` is deleted, the parts are copied into place (server side) and old parts
//!    the new manifest does not list are deleted;
//! 3. `_metrics.json`, then `_SUCCESS` last; then every staging prefix is removed (a killed
//!    run's included).
//!
//! A reader that trusts `_SUCCESS` and the manifest never sees a partial run.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::Compression;
use datafusion::parquet::file::properties::WriterProperties;
use serde::Serialize;

use std::sync::Arc;

use datafusion::parquet::arrow::AsyncArrowWriter;
use object_store::buffered::BufWriter as ObjectBufWriter;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};
use tokio::io::AsyncWriteExt;

use crate::metrics::{Manifest, RunMetrics};
use crate::spec::{OutputFormat, WriteMode};
use crate::storage::{Scheme, StoreFactory};

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error(
        "output {path}: already holds {what}; [output] mode = \"error\" refuses to write there (use mode = \"overwrite\" to replace it)"
    )]
    OutputExists { path: PathBuf, what: String },
    #[error("output {}: is not a directory", path.display())]
    NotADirectory { path: PathBuf },
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
}

fn io_err(path: &Path, op: &'static str) -> impl FnOnce(std::io::Error) -> SinkError + use<> {
    let path = path.to_path_buf();
    move |source| SinkError::Io { path, op, source }
}

const OWNER_FILE: &str = "_batchscore_owner";
pub const SUCCESS_FILE: &str = "_SUCCESS";
pub const MANIFEST_FILE: &str = "_manifest.json";
pub const METRICS_FILE: &str = "_metrics.json";

/// A committed output part, as the manifest lists it.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct PartFile {
    /// The file's name inside the output directory.
    pub path: String,
    pub rows: u64,
    pub bytes: u64,
}

/// Where a run's parts are staged: a local directory or a prefix in an object store.
#[derive(Clone)]
pub enum Staging {
    Local(PathBuf),
    Store {
        store: Arc<dyn ObjectStore>,
        prefix: ObjectPath,
        /// The prefix as a URL, for messages.
        uri: String,
    },
}

impl Staging {
    /// Starts the part file `name`.
    pub fn create_part(
        &self,
        name: String,
        format: OutputFormat,
        schema: SchemaRef,
    ) -> Result<PartWriter, SinkError> {
        match self {
            Staging::Local(dir) => PartWriter::create_local(dir, name, format, schema),
            Staging::Store { store, prefix, uri } => {
                let location = format!("{uri}{name}");
                let path = name.split('/').fold(prefix.clone(), |p, seg| p.join(seg));
                let out = ObjectBufWriter::new(store.clone(), path);
                let inner = match format {
                    OutputFormat::Parquet => PartInner::StoreParquet(
                        AsyncArrowWriter::try_new(
                            out,
                            schema.clone(),
                            Some(parquet_properties(&schema)),
                        )
                        .map_err(|e| SinkError::Encode {
                            path: PathBuf::from(&location),
                            message: e.to_string(),
                        })?,
                    ),
                    OutputFormat::Csv => PartInner::StoreCsv {
                        out,
                        header: true,
                        schema,
                        written: 0,
                    },
                };
                Ok(PartWriter {
                    path: PathBuf::from(location),
                    name,
                    rows: 0,
                    inner,
                })
            }
        }
    }
}

/// Snappy; no dictionary for float columns (scores are nearly all distinct: building the
/// dictionary cost 3% of an MLP run in perf and then falls back to plain encoding anyway).
fn parquet_properties(schema: &SchemaRef) -> WriterProperties {
    use datafusion::parquet::schema::types::ColumnPath;
    let mut b = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_created_by(format!("batchscore {}", env!("CARGO_PKG_VERSION")));
    for f in schema.fields() {
        if f.data_type().is_floating() {
            b = b.set_column_dictionary_enabled(ColumnPath::from(f.name().as_str()), false);
        }
    }
    b.build()
}

/// Writes one partition's rows into parts named `<prefix>-<partition>-<seq>.<ext>`, starting
/// a new part every `max_rows` rows.
pub struct RollingWriter {
    staging: Staging,
    prefix: &'static str,
    partition: usize,
    format: OutputFormat,
    schema: SchemaRef,
    max_rows: u64,
    current: Option<PartWriter>,
    seq: usize,
    files: Vec<PartFile>,
}

impl RollingWriter {
    pub fn new(
        staging: Staging,
        prefix: &'static str,
        partition: usize,
        format: OutputFormat,
        schema: SchemaRef,
        max_rows: u64,
    ) -> Self {
        Self {
            staging,
            prefix,
            partition,
            format,
            schema,
            max_rows,
            current: None,
            seq: 0,
            files: Vec::new(),
        }
    }

    pub async fn write(&mut self, batch: &RecordBatch) -> Result<(), SinkError> {
        let mut offset = 0;
        while offset < batch.num_rows() {
            let w = match &mut self.current {
                Some(w) => w,
                None => {
                    let name = format!(
                        "{}-{:05}-{:04}.{}",
                        self.prefix,
                        self.partition,
                        self.seq,
                        self.format.extension()
                    );
                    self.seq += 1;
                    self.current.insert(self.staging.create_part(
                        name,
                        self.format,
                        self.schema.clone(),
                    )?)
                }
            };
            let take = ((self.max_rows - w.rows()) as usize).min(batch.num_rows() - offset);
            w.write(&batch.slice(offset, take)).await?;
            offset += take;
            if w.rows() >= self.max_rows
                && let Some(w) = self.current.take()
            {
                self.files.push(w.finish().await?);
            }
        }
        Ok(())
    }

    /// Finishes the open part; returns every part written.
    pub async fn finish(mut self) -> Result<Vec<PartFile>, SinkError> {
        if let Some(w) = self.current.take() {
            self.files.push(w.finish().await?);
        }
        Ok(self.files)
    }
}

/// Writes one output part file (Parquet or CSV) into the staging location.
pub struct PartWriter {
    /// The file or object, for messages.
    path: PathBuf,
    name: String,
    rows: u64,
    inner: PartInner,
}

enum PartInner {
    Parquet(ArrowWriter<File>),
    Csv(datafusion::arrow::csv::Writer<BufWriter<File>>),
    StoreParquet(AsyncArrowWriter<ObjectBufWriter>),
    StoreCsv {
        out: ObjectBufWriter,
        header: bool,
        schema: SchemaRef,
        /// Bytes handed to the upload, for the manifest.
        written: u64,
    },
}

impl PartWriter {
    fn create_local(
        dir: &Path,
        name: String,
        format: OutputFormat,
        schema: SchemaRef,
    ) -> Result<Self, SinkError> {
        let path = dir.join(&name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io_err(parent, "create directory"))?;
        }
        let file = File::create(&path).map_err(io_err(&path, "create part"))?;
        let inner = match format {
            OutputFormat::Parquet => PartInner::Parquet(
                ArrowWriter::try_new(file, schema.clone(), Some(parquet_properties(&schema)))
                    .map_err(|e| SinkError::Encode {
                        path: path.clone(),
                        message: e.to_string(),
                    })?,
            ),
            OutputFormat::Csv => PartInner::Csv(
                datafusion::arrow::csv::WriterBuilder::new()
                    .with_header(true)
                    .build(BufWriter::with_capacity(1 << 20, file)),
            ),
        };
        Ok(Self {
            path,
            name,
            rows: 0,
            inner,
        })
    }

    pub fn rows(&self) -> u64 {
        self.rows
    }

    pub async fn write(&mut self, batch: &RecordBatch) -> Result<(), SinkError> {
        let r = match &mut self.inner {
            PartInner::Parquet(w) => w.write(batch).map_err(|e| e.to_string()),
            PartInner::Csv(w) => w.write(batch).map_err(|e| e.to_string()),
            PartInner::StoreParquet(w) => w.write(batch).await.map_err(|e| e.to_string()),
            PartInner::StoreCsv {
                out,
                header,
                written,
                ..
            } => {
                let mut w = datafusion::arrow::csv::WriterBuilder::new()
                    .with_header(*header)
                    .build(Vec::new());
                *header = false;
                match w.write(batch) {
                    Ok(()) => {
                        let bytes = w.into_inner();
                        *written += bytes.len() as u64;
                        out.put(bytes.into()).await.map_err(|e| e.to_string())
                    }
                    Err(e) => Err(e.to_string()),
                }
            }
        };
        r.map_err(|message| SinkError::Encode {
            path: self.path.clone(),
            message,
        })?;
        self.rows += batch.num_rows() as u64;
        Ok(())
    }

    /// Finishes the part: synced to disk, or its upload completed.
    pub async fn finish(self) -> Result<PartFile, SinkError> {
        let enc = |message: String| SinkError::Encode {
            path: self.path.clone(),
            message,
        };
        let bytes = match self.inner {
            PartInner::Parquet(w) => {
                Self::sync(&self.path, w.into_inner().map_err(|e| enc(e.to_string()))?)?
            }
            PartInner::Csv(w) => Self::sync(
                &self.path,
                w.into_inner()
                    .into_inner()
                    .map_err(|e| enc(e.error().to_string()))?,
            )?,
            PartInner::StoreParquet(mut w) => {
                w.finish().await.map_err(|e| enc(e.to_string()))?;
                w.bytes_written() as u64
            }
            PartInner::StoreCsv {
                mut out,
                header,
                schema,
                mut written,
            } => {
                if header {
                    // No batch came: the part is just the header line.
                    let mut w = datafusion::arrow::csv::WriterBuilder::new()
                        .with_header(true)
                        .build(Vec::new());
                    w.write(&RecordBatch::new_empty(schema))
                        .map_err(|e| enc(e.to_string()))?;
                    let bytes = w.into_inner();
                    written += bytes.len() as u64;
                    out.put(bytes.into())
                        .await
                        .map_err(|e| enc(e.to_string()))?;
                }
                out.shutdown().await.map_err(|e| enc(e.to_string()))?;
                written
            }
        };
        Ok(PartFile {
            path: self.name,
            rows: self.rows,
            bytes,
        })
    }

    fn sync(path: &Path, file: File) -> Result<u64, SinkError> {
        file.sync_all().map_err(io_err(path, "sync part"))?;
        Ok(file.metadata().map_err(io_err(path, "stat part"))?.len())
    }
}

/// The staging directory of one run and its commit.
#[derive(Debug)]
pub struct LocalCommitter {
    output: PathBuf,
    staging: PathBuf,
    mode: WriteMode,
    committed: bool,
}

impl LocalCommitter {
    /// Checks `mode` against what is at `output` (without creating anything).
    pub fn check(output: &Path, mode: WriteMode) -> Result<(), SinkError> {
        // The nearest existing ancestor must be a directory, or nothing can be created there.
        let mut ancestor = absolute(output);
        while !ancestor.exists() {
            if !ancestor.pop() {
                break;
            }
        }
        if ancestor.exists() && !ancestor.is_dir() && ancestor != absolute(output) {
            return Err(SinkError::NotADirectory { path: ancestor });
        }
        match std::fs::metadata(output) {
            Ok(m) if !m.is_dir() => Err(SinkError::NotADirectory {
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
                        Err(SinkError::OutputExists {
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
    pub fn prepare(output: &Path, mode: WriteMode, run_id: &str) -> Result<Self, SinkError> {
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

    /// Writes a JSON file into staging, synced.
    pub fn write_json<T: Serialize>(&self, name: &str, value: &T) -> Result<(), SinkError> {
        let path = self.staging.join(name);
        let mut text = serde_json::to_vec_pretty(value).map_err(|e| SinkError::Encode {
            path: path.clone(),
            message: e.to_string(),
        })?;
        text.push(b'\n');
        write_synced(&path, &text)
    }

    /// Writes `_SUCCESS` and makes the staging directory the output, atomically.
    pub fn commit(mut self) -> Result<PathBuf, SinkError> {
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

/// The commit of a run's output, local or in an object store.
pub enum Committer {
    Local(LocalCommitter),
    Store(StoreCommitter),
}

impl Committer {
    /// Checks `mode` against what is at `uri`, before any work.
    pub async fn check(uri: &str, mode: WriteMode, stores: &StoreFactory) -> Result<(), SinkError> {
        if Scheme::of(uri).is_some_and(Scheme::is_remote) {
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
    ) -> Result<Self, SinkError> {
        if Scheme::of(uri).is_some_and(Scheme::is_remote) {
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
    ) -> Result<String, SinkError> {
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

    /// The manifest of the output committed at `uri`, when it has `_SUCCESS`.
    pub async fn committed_manifest(
        uri: &str,
        stores: &StoreFactory,
    ) -> Result<Option<serde_json::Value>, SinkError> {
        if Scheme::of(uri).is_some_and(Scheme::is_remote) {
            let c = StoreCommitter::open(uri, WriteMode::Overwrite, stores).await?;
            match c.store.head(&c.prefix.clone().join(SUCCESS_FILE)).await {
                Ok(_) => {}
                Err(object_store::Error::NotFound { .. }) => return Ok(None),
                Err(e) => return Err(c.err("look for _SUCCESS")(e)),
            }
            let r = c
                .store
                .get(&c.prefix.clone().join(MANIFEST_FILE))
                .await
                .map_err(c.err("read the manifest"))?;
            let bytes = r.bytes().await.map_err(c.err("read the manifest"))?;
            Ok(serde_json::from_slice(&bytes).ok())
        } else {
            let dir = Path::new(uri);
            if !dir.join(SUCCESS_FILE).exists() {
                return Ok(None);
            }
            let path = dir.join(MANIFEST_FILE);
            let text = std::fs::read(&path).map_err(io_err(&path, "read the manifest"))?;
            Ok(serde_json::from_slice(&text).ok())
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

/// The commit protocol for object stores (see the module's documentation).
pub struct StoreCommitter {
    uri: String,
    root: String,
    store: Arc<dyn ObjectStore>,
    prefix: ObjectPath,
    staging: ObjectPath,
    /// The manifest's version when the run started, and the files it listed.
    prior: Option<(UpdateVersion, Vec<String>)>,
}

impl StoreCommitter {
    /// Looks at the output: refuses under `mode = "error"` when anything is there, and
    /// remembers the current manifest for the conditional update.
    async fn open(uri: &str, mode: WriteMode, stores: &StoreFactory) -> Result<Self, SinkError> {
        use futures::TryStreamExt;
        let located = stores.locate(uri).map_err(|e| SinkError::Store {
            uri: uri.to_string(),
            op: "open",
            message: e.message,
        })?;
        let store_err = |op: &'static str| {
            move |e: object_store::Error| SinkError::Store {
                uri: uri.to_string(),
                op,
                message: e.to_string(),
            }
        };
        let prefix = located.path;
        let staging_prefix = prefix.clone().join("_staging");
        if mode == WriteMode::Error {
            let mut list = located.store.list(Some(&prefix));
            while let Some(meta) = list.try_next().await.map_err(store_err("list"))? {
                if !meta.location.prefix_matches(&staging_prefix) {
                    let success = meta.location.filename() == Some(SUCCESS_FILE);
                    return Err(SinkError::OutputExists {
                        path: PathBuf::from(uri),
                        what: if success {
                            "a committed output (_SUCCESS)".into()
                        } else {
                            "objects".into()
                        },
                    });
                }
            }
        }
        let manifest_path = prefix.clone().join(MANIFEST_FILE);
        let prior = match located.store.get(&manifest_path).await {
            Ok(r) => {
                let version = UpdateVersion {
                    e_tag: r.meta.e_tag.clone(),
                    version: r.meta.version.clone(),
                };
                let bytes = r.bytes().await.map_err(store_err("read the manifest"))?;
                let old: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
                let files = ["files", "rejected_files"]
                    .iter()
                    .filter_map(|k| old[*k].as_array())
                    .flatten()
                    .filter_map(|f| f["path"].as_str().map(String::from))
                    .collect::<Vec<_>>();
                Some((version, files))
            }
            Err(object_store::Error::NotFound { .. }) => {
                // A missing bucket or container also reads as "no manifest"; a listing tells
                // them apart, so that the run is refused before any work rather than at its
                // first write.
                if mode != WriteMode::Error {
                    located
                        .store
                        .list_with_delimiter(Some(&prefix))
                        .await
                        .map_err(store_err("list"))?;
                }
                None
            }
            Err(e) => return Err(store_err("read the manifest")(e)),
        };
        let uri = uri.trim_end_matches('/').to_string();
        Ok(Self {
            uri,
            root: located.root,
            store: located.store,
            staging: staging_prefix,
            prefix,
            prior,
        })
    }

    fn err(&self, op: &'static str) -> impl Fn(object_store::Error) -> SinkError + '_ {
        move |e| SinkError::Store {
            uri: self.uri.clone(),
            op,
            message: e.to_string(),
        }
    }

    async fn commit(
        self,
        manifest: &Manifest,
        metrics: &mut RunMetrics,
        started: std::time::Instant,
    ) -> Result<String, SinkError> {
        let json = |v: &dyn erased::Json| -> PutPayload {
            let mut b = v.to_json();
            b.push(b'\n');
            PutPayload::from(b)
        };
        // 1. The manifest is the lock: only one run can create or update it from what it saw.
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
            .put_opts(
                &self.prefix.clone().join(MANIFEST_FILE),
                json(manifest),
                opts,
            )
            .await
        {
            Ok(_) => {}
            Err(
                object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. },
            ) => {
                self.remove_staging(Some(&self.staging)).await;
                return Err(SinkError::Conflict {
                    uri: self.uri.clone(),
                });
            }
            Err(e) => {
                self.remove_staging(Some(&self.staging)).await;
                return Err(self.err("write _manifest.json")(e));
            }
        }
        // 2. Readers that trust _SUCCESS stop reading the old output, then the parts move in.
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
        let parts: Vec<&PartFile> = manifest
            .files
            .iter()
            .chain(&manifest.rejected_files)
            .collect();
        let new: std::collections::HashSet<&str> = parts.iter().map(|f| f.path.as_str()).collect();
        for f in parts {
            self.store
                .copy(
                    &under(&self.staging, &f.path),
                    &under(&self.prefix, &f.path),
                )
                .await
                .map_err(self.err("copy a part into place"))?;
        }
        if let Some((_, old)) = &self.prior {
            for f in old.iter().filter(|f| !new.contains(f.as_str())) {
                match self.store.delete(&under(&self.prefix, f)).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(self.err("delete an old part")(e)),
                }
            }
        }
        // 3. Metrics, then _SUCCESS last.
        metrics.stage_seconds.commit = started.elapsed().as_secs_f64();
        let metrics: &RunMetrics = metrics;
        self.store
            .put(&self.prefix.clone().join(METRICS_FILE), json(metrics))
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

    /// Deletes one run's staging (`Some`) or all of it (`None`); failures are only logged.
    async fn remove_staging(&self, which: Option<&ObjectPath>) {
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

/// Serializes the two JSON documents a commit writes.
mod erased {
    pub trait Json {
        fn to_json(&self) -> Vec<u8>;
    }
    impl<T: serde::Serialize> Json for T {
        fn to_json(&self) -> Vec<u8> {
            serde_json::to_vec_pretty(self).unwrap_or_default()
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

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), SinkError> {
    let mut f = File::create(path).map_err(io_err(path, "create"))?;
    f.write_all(bytes).map_err(io_err(path, "write"))?;
    f.sync_all().map_err(io_err(path, "sync"))
}

fn sync_dir(dir: &Path) -> Result<(), SinkError> {
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
    ) -> Result<PathBuf, SinkError> {
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
