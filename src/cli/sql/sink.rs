//! `sql -o PATH`: one file, visible only once the whole query succeeded. Locally the rows go
//! to a hidden temporary file in the same folder, renamed over PATH at the end; in an object
//! store to a multipart upload, completed at the end and aborted on failure.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::parquet::arrow::ArrowWriter;
use object_store::{ObjectStoreExt, WriteMultipart};

use crate::storage::StoreFactory;

/// The formats of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    Parquet,
    Csv,
    /// JSON Lines.
    Json,
}

impl FileFormat {
    /// The format a file's name tells, if any.
    pub fn from_name(path: &str) -> Option<Self> {
        let lower = path.to_ascii_lowercase();
        [
            (".parquet", Self::Parquet),
            (".csv", Self::Csv),
            (".json", Self::Json),
            (".jsonl", Self::Json),
        ]
        .into_iter()
        .find_map(|(ext, f)| lower.ends_with(ext).then_some(f))
    }
}

/// Bytes the format writer produced, not yet handed to the file or the upload.
#[derive(Clone, Default)]
struct Pending(Arc<Mutex<Vec<u8>>>);

impl Pending {
    fn take(&self) -> Vec<u8> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl Write for Pending {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

enum Encoder {
    Parquet(Box<ArrowWriter<Pending>>),
    Csv(Box<datafusion::arrow::csv::Writer<Pending>>),
    Json(datafusion::arrow::json::LineDelimitedWriter<Pending>),
}

enum Target {
    Local {
        file: std::fs::File,
        temp: PathBuf,
        dest: PathBuf,
    },
    Store(Box<WriteMultipart>),
}

/// An output file being written; [`FileSink::commit`] makes it visible, [`FileSink::abort`]
/// (or dropping it) leaves nothing.
pub struct FileSink {
    encoder: Option<Encoder>,
    pending: Pending,
    target: Option<Target>,
}

impl FileSink {
    pub async fn open(
        uri: &str,
        format: FileFormat,
        schema: SchemaRef,
        stores: &StoreFactory,
    ) -> Result<Self, String> {
        let pending = Pending::default();
        let encoder = match format {
            FileFormat::Parquet => Encoder::Parquet(Box::new(
                ArrowWriter::try_new(pending.clone(), schema, None).map_err(|e| e.to_string())?,
            )),
            FileFormat::Csv => Encoder::Csv(Box::new(
                datafusion::arrow::csv::WriterBuilder::new()
                    .with_header(true)
                    .build(pending.clone()),
            )),
            FileFormat::Json => Encoder::Json(datafusion::arrow::json::LineDelimitedWriter::new(
                pending.clone(),
            )),
        };
        let target = if crate::storage::is_remote(uri) {
            let located = stores.locate(uri).map_err(|e| e.message)?;
            let upload = located
                .store
                .put_multipart(&located.path)
                .await
                .map_err(|e| e.to_string())?;
            Target::Store(Box::new(WriteMultipart::new(upload)))
        } else {
            local_target(uri)?
        };
        Ok(Self {
            encoder: Some(encoder),
            pending,
            target: Some(target),
        })
    }

    pub async fn write(&mut self, batch: &RecordBatch) -> Result<(), String> {
        match &mut self.encoder {
            Some(Encoder::Parquet(w)) => w.write(batch).map_err(|e| e.to_string())?,
            Some(Encoder::Csv(w)) => w.write(batch).map_err(|e| e.to_string())?,
            Some(Encoder::Json(w)) => w.write(batch).map_err(|e| e.to_string())?,
            None => return Err("written after it was finished".into()),
        }
        self.drain().await
    }

    /// Hands what the encoder produced to the file or the upload.
    async fn drain(&mut self) -> Result<(), String> {
        let bytes = self.pending.take();
        if bytes.is_empty() {
            return Ok(());
        }
        match &mut self.target {
            Some(Target::Local { file, .. }) => file.write_all(&bytes).map_err(|e| e.to_string()),
            Some(Target::Store(upload)) => {
                upload.write(&bytes);
                // At most a few parts in flight: memory stays bounded.
                upload.wait_for_capacity(4).await.map_err(|e| e.to_string())
            }
            None => Err("written after it was finished".into()),
        }
    }

    /// Finishes the file and makes it visible at its path; on failure, nothing is there.
    pub async fn commit(mut self) -> Result<(), String> {
        if let Err(e) = self.finish_encoder().await {
            self.abort().await;
            return Err(e);
        }
        match self.target.take() {
            Some(Target::Local { file, temp, dest }) => {
                let done = file.sync_all().and_then(|()| std::fs::rename(&temp, &dest));
                if let Err(e) = done {
                    let _ = std::fs::remove_file(&temp);
                    return Err(e.to_string());
                }
                Ok(())
            }
            Some(Target::Store(upload)) => {
                upload.finish().await.map(|_| ()).map_err(|e| e.to_string())
            }
            None => Err("committed twice".into()),
        }
    }

    async fn finish_encoder(&mut self) -> Result<(), String> {
        match self.encoder.take() {
            Some(Encoder::Parquet(w)) => {
                w.close().map_err(|e| e.to_string())?;
            }
            Some(Encoder::Csv(w)) => drop(w),
            Some(Encoder::Json(mut w)) => w.finish().map_err(|e| e.to_string())?,
            None => {}
        }
        self.drain().await
    }

    /// Leaves nothing at the path: removes the temporary file, or aborts the upload.
    pub async fn abort(mut self) {
        match self.target.take() {
            Some(Target::Local { temp, .. }) => {
                let _ = std::fs::remove_file(temp);
            }
            Some(Target::Store(upload)) => {
                if let Err(e) = upload.abort().await {
                    tracing::warn!("cannot abort the upload of the output: {e}");
                }
            }
            None => {}
        }
    }
}

impl Drop for FileSink {
    fn drop(&mut self) {
        // Neither committed nor aborted (a panic): the temporary file goes; an upload left
        // unfinished is invisible and the store expires it.
        if let Some(Target::Local { temp, .. }) = &self.target {
            let _ = std::fs::remove_file(temp);
        }
    }
}

/// A hidden temporary file beside `path`, for the rename.
fn local_target(path: &str) -> Result<Target, String> {
    let dest = PathBuf::from(path.strip_prefix("file://").unwrap_or(path));
    let name = dest
        .file_name()
        .ok_or_else(|| "not a file name".to_string())?
        .to_string_lossy()
        .into_owned();
    let dir = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !dir.is_dir() {
        return Err(format!("no such folder: {}", dir.display()));
    }
    let temp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&temp)
        .map_err(|e| format!("cannot create {}: {e}", temp.display()))?;
    Ok(Target::Local { file, temp, dest })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_come_from_extensions() {
        assert_eq!(
            FileFormat::from_name("a/b.PARQUET"),
            Some(FileFormat::Parquet)
        );
        assert_eq!(
            FileFormat::from_name("s3://b/x.jsonl"),
            Some(FileFormat::Json)
        );
        assert_eq!(FileFormat::from_name("x.csv"), Some(FileFormat::Csv));
        assert_eq!(FileFormat::from_name("x.txt"), None);
    }
}
