//! Output part files: each worker's rows in Parquet or CSV parts, rolling over past
//! `max_rows_per_file`, written into the run's staging (a local directory, or a prefix in an
//! object store through multipart uploads, so that a part may be larger than memory).

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::parquet::arrow::{ArrowWriter, AsyncArrowWriter};
use datafusion::parquet::basic::Compression;
use datafusion::parquet::file::properties::WriterProperties;
use object_store::ObjectStore;
use object_store::buffered::BufWriter as ObjectBufWriter;
use object_store::path::Path as ObjectPath;
use tokio::io::AsyncWriteExt;

use super::{OutputError, io_err};
use crate::report::PartFile;
use crate::spec::OutputFormat;

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
    ) -> Result<PartWriter, OutputError> {
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
                        .map_err(|e| OutputError::Encode {
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
    prefix: String,
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
        prefix: String,
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

    pub async fn write(&mut self, batch: &RecordBatch) -> Result<(), OutputError> {
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
                // Where a test kills a run mid-way, with a part staged.
                crate::hooks::barrier("part-rolled").await;
            }
        }
        Ok(())
    }

    /// Finishes the open part; returns every part written.
    pub async fn finish(mut self) -> Result<Vec<PartFile>, OutputError> {
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
    ) -> Result<Self, OutputError> {
        let path = dir.join(&name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io_err(parent, "create directory"))?;
        }
        let file = File::create(&path).map_err(io_err(&path, "create part"))?;
        let inner = match format {
            OutputFormat::Parquet => PartInner::Parquet(
                ArrowWriter::try_new(file, schema.clone(), Some(parquet_properties(&schema)))
                    .map_err(|e| OutputError::Encode {
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

    pub async fn write(&mut self, batch: &RecordBatch) -> Result<(), OutputError> {
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
        r.map_err(|message| OutputError::Encode {
            path: self.path.clone(),
            message,
        })?;
        self.rows += batch.num_rows() as u64;
        Ok(())
    }

    /// Finishes the part: synced to disk, or its upload completed.
    pub async fn finish(self) -> Result<PartFile, OutputError> {
        let enc = |message: String| OutputError::Encode {
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

    fn sync(path: &Path, file: File) -> Result<u64, OutputError> {
        file.sync_all().map_err(io_err(path, "sync part"))?;
        Ok(file.metadata().map_err(io_err(path, "stat part"))?.len())
    }
}
