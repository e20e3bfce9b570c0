//! CSV input that quarantines malformed rows instead of failing the run.
//!
//! DataFusion's CSV reader fails the whole scan on the first bad record. A nightly job over
//! a warehouse export should lose the bad row, not the night, so CSV inputs are read here:
//!
//! - Each file is streamed (through `object_store`, decompressed as it arrives) and cut into
//!   chunks of about [`CHUNK_BYTES`] at record boundaries (a newline outside quotes).
//! - A chunk is decoded by arrow's own CSV decoder, the fast path. Only a chunk it refuses
//!   goes through the slow path: its records are split with the `csv` crate, each is checked
//!   for its field count and UTF-8, and the good ones are decoded again, halving the set until
//!   each record that does not parse (a value that is not of its column's type) stands alone.
//! - Rows that fail become [`MalformedRow`]s with the file and the line they start on, sent
//!   to the run, which writes them to `_rejected/` (stage `read`) and counts them against the
//!   error budget. They never reach the `query`, so no filter can hide them.
//!
//! Column types are inferred as DataFusion does (arrow's CSV inference over the first 1000
//! records of each file, integers widened to floats where files differ), but malformed
//! records are skipped while inferring rather than refusing the run.

mod chunker;
mod scan;
mod schema;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::streaming::StreamingTable;
use datafusion::datasource::file_format::file_compression_type::FileCompressionType;
use datafusion::error::DataFusionError;
use datafusion::execution::TaskContext;
use datafusion::physical_plan::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchReceiverStreamBuilder;
use datafusion::physical_plan::streaming::PartitionStream;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt};

use crate::input::InputError;
pub use schema::infer_file_schema;

/// Bytes per chunk handed to the decoder: big enough to amortise a decoder, small enough that
/// a chunk with a bad row costs little to read again record by record.
const CHUNK_BYTES: usize = 4 << 20;
/// A rejected row's `_value` keeps at most this many bytes of the record.
const MAX_VALUE_BYTES: usize = 1024;

/// How the CSV files are written.
#[derive(Debug, Clone, Copy)]
pub struct CsvDialect {
    pub has_header: bool,
    pub delimiter: u8,
    pub quote: u8,
    pub compression: FileCompressionType,
}

/// One input file and the hive partition values its path gives.
#[derive(Debug, Clone)]
pub struct CsvFile {
    pub store: Arc<dyn ObjectStore>,
    pub meta: ObjectMeta,
    /// The file as the user knows it (a path or a URL), for messages.
    pub name: String,
    pub partition_values: Vec<String>,
    /// For a file cut into byte ranges, the ones to read; none: the whole file.
    pub ranges: Option<RangeChoice>,
}

/// Some of the byte ranges a file is cut into (`units::ByteRange`): `chosen` of `count`
/// ranges of `span` bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeChoice {
    pub span: u64,
    pub count: usize,
    pub chosen: std::ops::Range<usize>,
}

impl RangeChoice {
    /// Where a chunk starting at `offset` stands: before the chosen ranges, in them, or
    /// past them (nothing further in the file is to be read).
    fn place(&self, offset: u64) -> std::cmp::Ordering {
        let index = crate::input::ByteRange::index_of(self.span, self.count, offset);
        if index < self.chosen.start {
            std::cmp::Ordering::Less
        } else if index < self.chosen.end {
            std::cmp::Ordering::Equal
        } else {
            std::cmp::Ordering::Greater
        }
    }
}

/// A record that could not become a row.
#[derive(Debug, Clone, PartialEq)]
pub struct MalformedRow {
    pub file: String,
    /// The line the record starts on, 1-based, counting the header.
    pub line: u64,
    /// What is wrong, without the location (the key that rejects are counted by).
    pub reason: String,
    /// The record as text (lossy UTF-8), cut at [`MAX_VALUE_BYTES`].
    pub text: String,
}

impl fmt::Display for MalformedRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} line {}: {}", self.file, self.line, self.reason)
    }
}

/// What the scan reports besides its rows: how many it read and the ones it could not.
#[derive(Debug, Clone)]
pub struct ReadLog {
    pub rows_read: Arc<AtomicU64>,
    malformed: tokio::sync::mpsc::Sender<MalformedRow>,
}

impl ReadLog {
    /// A log and the receiving end of its malformed rows (bounded: a slow consumer slows the
    /// scan rather than letting rejects pile up in memory).
    pub fn new() -> (Self, tokio::sync::mpsc::Receiver<MalformedRow>) {
        let (tx, rx) = tokio::sync::mpsc::channel(1024);
        (
            Self {
                rows_read: Arc::new(AtomicU64::new(0)),
                malformed: tx,
            },
            rx,
        )
    }

    fn reject(&self, row: MalformedRow) {
        self.rows_read.fetch_add(1, Ordering::Relaxed);
        // No receiver (a plan that is only validated) means nobody wants them.
        let _ = self.malformed.blocking_send(row);
    }
}

/// The CSV files as a table: one [`CsvPartition`] per worker over the files' shared schema,
/// with `partition_cols` (hive `key=value` folders) after the files' columns. With as many
/// files as workers or more, files are dealt out; with fewer, every partition reads every
/// file and decodes every n-th chunk of it.
pub(crate) async fn table(
    uri: &str,
    files: Vec<CsvFile>,
    partition_cols: &[(String, DataType)],
    dialect: CsvDialect,
    workers: usize,
    batch_size: usize,
) -> Result<
    (
        StreamingTable,
        ReadLog,
        tokio::sync::mpsc::Receiver<MalformedRow>,
    ),
    InputError,
> {
    let file_schema = Arc::new(infer_file_schema(&files, dialect).await?);
    if file_schema.fields().is_empty() {
        return Err(InputError::NoFiles {
            uri: uri.to_string(),
            extension: ".csv".into(),
        });
    }
    let fields: Vec<Field> = file_schema
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .chain(
            partition_cols
                .iter()
                .map(|(name, t)| Field::new(name, t.clone(), false)),
        )
        .collect();
    let schema = Arc::new(Schema::new(fields));
    let (log, malformed) = ReadLog::new();
    let workers = workers.max(1);
    let shares: Vec<(Vec<CsvFile>, (usize, usize))> = if files.len() >= workers {
        let mut dealt: Vec<Vec<CsvFile>> = vec![Vec::new(); workers];
        for (i, f) in files.into_iter().enumerate() {
            dealt[i % workers].push(f);
        }
        dealt.into_iter().map(|f| (f, (0, 1))).collect()
    } else {
        (0..workers)
            .map(|i| (files.clone(), (i, workers)))
            .collect()
    };
    let partitions: Vec<Arc<dyn PartitionStream>> = shares
        .into_iter()
        .map(|(files, stride)| {
            Arc::new(CsvPartition {
                schema: schema.clone(),
                file_schema: file_schema.clone(),
                files,
                stride,
                dialect,
                batch_size,
                log: log.clone(),
            }) as Arc<dyn PartitionStream>
        })
        .collect();
    let table = StreamingTable::try_new(schema, partitions).map_err(|e| InputError::Table {
        uri: uri.to_string(),
        message: e.to_string(),
    })?;
    Ok((table, log, malformed))
}

async fn open_stream(
    file: &CsvFile,
    dialect: CsvDialect,
) -> Result<BoxStream<'static, Result<bytes::Bytes, DataFusionError>>, DataFusionError> {
    let result = file.store.get(&file.meta.location).await?;
    let stream = match result.payload {
        // A local file is read in big blocks by the thread that parses it: the store's own
        // stream hands over 8 KiB pieces from a thread pool, a wake-up each (a quarter of the
        // scan's time, measured with perf).
        object_store::GetResultPayload::File(f, _) => futures::stream::iter(FileBlocks(f)).boxed(),
        object_store::GetResultPayload::Stream(s) => s.map_err(DataFusionError::from).boxed(),
    };
    dialect.compression.convert_stream(stream)
}

/// A file as blocks of up to [`CHUNK_BYTES`].
struct FileBlocks(std::fs::File);

impl Iterator for FileBlocks {
    type Item = Result<bytes::Bytes, DataFusionError>;

    fn next(&mut self) -> Option<Self::Item> {
        use std::io::Read;
        let mut block = Vec::with_capacity(CHUNK_BYTES);
        match (&mut self.0)
            .take(CHUNK_BYTES as u64)
            .read_to_end(&mut block)
        {
            Ok(0) => None,
            Ok(_) => Some(Ok(block.into())),
            Err(e) => Some(Err(DataFusionError::IoError(e))),
        }
    }
}

fn csv_reader(dialect: CsvDialect, bytes: &[u8]) -> csv::Reader<&[u8]> {
    csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .delimiter(dialect.delimiter)
        .quote(dialect.quote)
        .from_reader(bytes)
}

fn csv_writer(dialect: CsvDialect) -> csv::Writer<Vec<u8>> {
    csv::WriterBuilder::new()
        .flexible(true)
        .delimiter(dialect.delimiter)
        .quote(dialect.quote)
        .from_writer(Vec::new())
}

fn strip_bom(bytes: &[u8]) -> &[u8] {
    bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes)
}

fn count_newlines(bytes: &[u8]) -> usize {
    memchr::memchr_iter(b'\n', bytes).count()
}

/// One partition of the scan: some of the files, read in order on a blocking thread.
#[derive(Debug)]
pub struct CsvPartition {
    /// The table's schema: the file's columns, then the partition columns.
    pub schema: SchemaRef,
    pub file_schema: SchemaRef,
    pub files: Vec<CsvFile>,
    /// `(i, n)`: decode only the chunks whose number is `i` modulo `n`. With fewer files than
    /// workers, every partition reads every file (the chunking is cheap next to the parse) and
    /// decodes its share, so one big file still keeps every core parsing.
    pub stride: (usize, usize),
    pub dialect: CsvDialect,
    pub batch_size: usize,
    pub log: ReadLog,
}

impl PartitionStream for CsvPartition {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let mut builder = RecordBatchReceiverStreamBuilder::new(self.schema.clone(), 2);
        let tx = builder.tx();
        let scan = scan::FileScan {
            schema: self.schema.clone(),
            file_schema: self.file_schema.clone(),
            dialect: self.dialect,
            batch_size: self.batch_size,
            log: self.log.clone(),
            stride: self.stride,
        };
        let files = self.files.clone();
        let handle = tokio::runtime::Handle::current();
        builder.spawn_blocking(move || {
            for file in &files {
                let emit = |batch: RecordBatch| tx.blocking_send(Ok(batch)).is_ok();
                if !scan.read(file, &handle, emit)? {
                    break;
                }
            }
            Ok(())
        });
        builder.build()
    }
}
