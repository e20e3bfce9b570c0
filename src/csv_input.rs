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

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use datafusion::arrow::array::{ArrayRef, DictionaryArray, RecordBatch, StringArray, UInt16Array};
use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::csv::ReaderBuilder;
use datafusion::arrow::csv::reader::Format;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, UInt16Type};
use datafusion::datasource::file_format::file_compression_type::FileCompressionType;
use datafusion::error::DataFusionError;
use datafusion::execution::TaskContext;
use datafusion::physical_plan::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchReceiverStreamBuilder;
use datafusion::physical_plan::streaming::PartitionStream;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt};

/// Bytes per chunk handed to the decoder: big enough to amortise a decoder, small enough that
/// a chunk with a bad row costs little to read again record by record.
const CHUNK_BYTES: usize = 4 << 20;
/// Past this many bytes without a boundary outside quotes, quotes are assumed to be stray
/// (`5'11"` in an unquoted field) and chunks are cut at the last newline.
const MAX_QUOTED_SPAN: usize = 64 << 20;
/// Records per file read to infer column types, as DataFusion does.
const INFER_RECORDS: usize = 1000;
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

/// Reads the start of each file and returns the table's file schema (without partition
/// columns), refusing an empty file, one that cannot be read, or files whose columns differ,
/// by name.
pub async fn infer_file_schema(files: &[CsvFile], dialect: CsvDialect) -> Result<Schema, String> {
    let mut merged: Option<(String, Schema)> = None;
    for file in files {
        if file.meta.size == 0 {
            return Err(format!("{}: the file is empty (0 bytes)", file.name));
        }
        let head = read_head(file, dialect)
            .await
            .map_err(|e| format!("{}: cannot read it: {e}", file.name))?;
        let schema = infer_from_head(&head, dialect)
            .map_err(|e| format!("{}: cannot read it: {e}", file.name))?;
        merged = Some(match merged {
            None => (file.name.clone(), schema),
            Some((first, m)) => {
                let names = |s: &Schema| -> Vec<String> {
                    s.fields().iter().map(|f| f.name().clone()).collect()
                };
                let (a, b) = (names(&m), names(&schema));
                if a != b {
                    return Err(crate::source::columns_differ(&file.name, &first, &a, &b));
                }
                (first, widen(&m, &schema))
            }
        });
    }
    // A column empty in every record looked at is read as text: values past those records are
    // kept (a Null column would drop them) and cast where a model input needs a number.
    Ok(merged
        .map(|(_, s)| {
            Schema::new(
                s.fields()
                    .iter()
                    .map(|f| match f.data_type() {
                        DataType::Null => Field::new(f.name(), DataType::Utf8, true),
                        _ => f.as_ref().clone(),
                    })
                    .collect::<Vec<_>>(),
            )
        })
        .unwrap_or_else(Schema::empty))
}

/// The first bytes of a file (decompressed): enough for [`INFER_RECORDS`] records in all
/// but very wide files.
async fn read_head(file: &CsvFile, dialect: CsvDialect) -> Result<Vec<u8>, DataFusionError> {
    let mut stream = open_stream(file, dialect).await?;
    let mut head = Vec::new();
    while let Some(bytes) = stream.try_next().await? {
        head.extend_from_slice(&bytes);
        if head.len() >= (1 << 20) && count_newlines(&head) > INFER_RECORDS {
            break;
        }
    }
    Ok(head)
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

/// Column names from the header (or `column_1`…), types from arrow's inference over the
/// well-formed records among the first [`INFER_RECORDS`].
fn infer_from_head(head: &[u8], dialect: CsvDialect) -> Result<Schema, String> {
    let head = strip_bom(head);
    // Only whole lines: the head may end inside a record.
    let head = match memchr::memrchr(b'\n', head) {
        Some(i) => &head[..=i],
        None => head,
    };
    let mut reader = csv_reader(dialect, head);
    let mut records = reader.byte_records();
    let first = match records.next() {
        Some(r) => r.map_err(|e| e.to_string())?,
        None => return Ok(Schema::empty()),
    };
    let width = first.len();
    let mut clean = csv_writer(dialect);
    if dialect.has_header {
        if let Some(i) = (0..width).find(|&i| std::str::from_utf8(&first[i]).is_err()) {
            return Err(format!("the header's field {} is not valid UTF-8", i + 1));
        }
        clean.write_byte_record(&first).map_err(|e| e.to_string())?;
    } else if is_well_formed(&first, width) {
        clean.write_byte_record(&first).map_err(|e| e.to_string())?;
    }
    for record in records.take(INFER_RECORDS) {
        let Ok(record) = record else { continue };
        if is_well_formed(&record, width) {
            clean
                .write_byte_record(&record)
                .map_err(|e| e.to_string())?;
        }
    }
    let clean = clean.into_inner().map_err(|e| e.to_string())?;
    let format = Format::default()
        .with_header(dialect.has_header)
        .with_delimiter(dialect.delimiter)
        .with_quote(dialect.quote);
    let (schema, _) = format
        .infer_schema(clean.as_slice(), Some(INFER_RECORDS))
        .map_err(|e| e.to_string())?;
    // Every column may hold nulls in the rows not looked at.
    Ok(Schema::new(
        schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect::<Vec<_>>(),
    ))
}

/// Where files disagree on a column's type: integers and floats make floats, anything else
/// text.
fn widen(a: &Schema, b: &Schema) -> Schema {
    let fields: Vec<Field> = a
        .fields()
        .iter()
        .zip(b.fields())
        .map(|(fa, fb)| {
            let t = match (fa.data_type(), fb.data_type()) {
                (x, y) if x == y => x.clone(),
                (DataType::Null, y) => y.clone(),
                (x, DataType::Null) => x.clone(),
                (DataType::Int64 | DataType::Float64, DataType::Int64 | DataType::Float64) => {
                    DataType::Float64
                }
                _ => DataType::Utf8,
            };
            Field::new(fa.name(), t, true)
        })
        .collect();
    Schema::new(fields)
}

fn is_well_formed(record: &csv::ByteRecord, width: usize) -> bool {
    record.len() == width && record.iter().all(|f| std::str::from_utf8(f).is_ok())
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
        let scan = FileScan {
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

/// Reads files of one schema; shared by the partitions' threads.
struct FileScan {
    schema: SchemaRef,
    file_schema: SchemaRef,
    dialect: CsvDialect,
    batch_size: usize,
    log: ReadLog,
    stride: (usize, usize),
}

impl FileScan {
    /// Reads one file, handing batches of about `batch_size` rows to `emit`; false when the
    /// consumer has gone.
    fn read(
        &self,
        file: &CsvFile,
        handle: &tokio::runtime::Handle,
        mut emit: impl FnMut(RecordBatch) -> bool,
    ) -> Result<bool, DataFusionError> {
        let in_file = |e: DataFusionError| {
            DataFusionError::External(format!("{}: cannot read it: {e}", file.name).into())
        };
        let mut stream = handle
            .block_on(open_stream(file, self.dialect))
            .map_err(in_file)?;
        let mut chunker = Chunker::new(self.dialect.quote, self.dialect.delimiter);
        let mut pending: Vec<RecordBatch> = Vec::new();
        let mut pending_rows = 0;
        let mut header_left = self.dialect.has_header;
        let mut at_start = true;
        let mut chunk_number = 0usize;
        loop {
            let next = handle
                .block_on(stream.next())
                .transpose()
                .map_err(in_file)?;
            let eof = next.is_none();
            if let Some(bytes) = next {
                let mut bytes: &[u8] = &bytes;
                if at_start && !bytes.is_empty() {
                    bytes = strip_bom(bytes);
                    at_start = false;
                }
                chunker.push(bytes);
            }
            let unterminated = if eof {
                chunker.take_unterminated()
            } else {
                None
            };
            while let Some((chunk, first_line)) = chunker.next_chunk(eof) {
                let mine = chunk_number % self.stride.1 == self.stride.0;
                chunk_number += 1;
                if !mine {
                    header_left = false;
                    continue;
                }
                let mut chunk: &[u8] = &chunk;
                let mut line = first_line;
                if header_left {
                    // The header is the first record; chunks start at record boundaries.
                    let end = first_record_end(chunk, self.dialect.quote);
                    line += count_newlines(&chunk[..end]) as u64;
                    chunk = &chunk[end..];
                    header_left = false;
                }
                for batch in self.decode_chunk(file, chunk, line)? {
                    pending_rows += batch.num_rows();
                    pending.push(batch);
                }
                if pending_rows >= self.batch_size {
                    let batch = self.finish(file, std::mem::take(&mut pending))?;
                    pending_rows = 0;
                    if !emit(batch) {
                        return Ok(false);
                    }
                }
            }
            // Every striding partition sees it; the first one reports it.
            if let Some((record, line)) = unterminated.filter(|_| self.stride.0 == 0) {
                self.log.reject(MalformedRow {
                    file: file.name.clone(),
                    line,
                    reason: "malformed CSV record: a quoted field is never closed".into(),
                    text: truncate(String::from_utf8_lossy(&record).into_owned()),
                });
            }
            if eof {
                break;
            }
        }
        if pending_rows > 0 && !emit(self.finish(file, pending)?) {
            return Ok(false);
        }
        Ok(true)
    }

    /// Concatenates decoded batches and appends the file's partition values.
    fn finish(
        &self,
        file: &CsvFile,
        batches: Vec<RecordBatch>,
    ) -> Result<RecordBatch, DataFusionError> {
        let batch = concat_batches(&self.file_schema, &batches)?;
        let n = batch.num_rows();
        self.log.rows_read.fetch_add(n as u64, Ordering::Relaxed);
        let mut columns = batch.columns().to_vec();
        for value in &file.partition_values {
            let dict = DictionaryArray::<UInt16Type>::try_new(
                UInt16Array::from(vec![0u16; n]),
                Arc::new(StringArray::from(vec![value.as_str()])) as ArrayRef,
            )?;
            columns.push(Arc::new(dict));
        }
        Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
    }

    fn decoder(&self) -> datafusion::arrow::csv::reader::Decoder {
        ReaderBuilder::new(self.file_schema.clone())
            .with_header(false)
            .with_delimiter(self.dialect.delimiter)
            .with_quote(self.dialect.quote)
            .with_batch_size(self.batch_size)
            .build_decoder()
    }

    /// All of `bytes` as batches, or the decoder's error.
    fn decode_all(
        &self,
        bytes: &[u8],
    ) -> Result<Vec<RecordBatch>, datafusion::arrow::error::ArrowError> {
        let mut decoder = self.decoder();
        let mut out = Vec::new();
        let mut rest = bytes;
        // As arrow's own reader drives it: flush when full, or when `decode` takes nothing
        // (an empty `decode` also ends a last record that has no trailing newline).
        loop {
            let used = decoder.decode(rest)?;
            rest = &rest[used..];
            if used == 0 || decoder.capacity() == 0 {
                match decoder.flush()? {
                    Some(b) => out.push(b),
                    None if rest.is_empty() => return Ok(out),
                    None => {}
                }
            }
        }
    }

    /// A chunk's rows: the fast path, else record by record with the bad ones rejected.
    fn decode_chunk(
        &self,
        file: &CsvFile,
        chunk: &[u8],
        first_line: u64,
    ) -> Result<Vec<RecordBatch>, DataFusionError> {
        if let Ok(batches) = self.decode_all(chunk) {
            return Ok(batches);
        }
        let width = self.file_schema.fields().len();
        let mut clean = csv_writer(self.dialect);
        // Each good record's end in `clean`, and the line it starts on.
        let mut good: Vec<(usize, u64)> = Vec::new();
        let mut reader = csv_reader(self.dialect, chunk);
        let mut record = csv::ByteRecord::new();
        loop {
            let line = first_line + reader.position().line() - 1;
            match reader.read_byte_record(&mut record) {
                Ok(false) => break,
                Ok(true) => {}
                Err(e) => {
                    self.log.reject(MalformedRow {
                        file: file.name.clone(),
                        line,
                        reason: format!("malformed CSV record: {e}"),
                        text: String::new(),
                    });
                    continue;
                }
            }
            let line = first_line + record.position().map_or(1, |p| p.line()) - 1;
            let problem = if record.len() != width {
                Some(format!(
                    "malformed CSV record: expected {width} fields, found {}",
                    record.len()
                ))
            } else {
                (0..width)
                    .find(|&i| std::str::from_utf8(&record[i]).is_err())
                    .map(|i| {
                        format!(
                            "malformed CSV record: field {} ({:?}) is not valid UTF-8",
                            i + 1,
                            self.file_schema.field(i).name()
                        )
                    })
            };
            match problem {
                Some(reason) => self.log.reject(MalformedRow {
                    file: file.name.clone(),
                    line,
                    reason,
                    text: record_text(&record, self.dialect.delimiter),
                }),
                None => {
                    clean.write_byte_record(&record).map_err(csv_error)?;
                    clean
                        .flush()
                        .map_err(|e| DataFusionError::External(e.into()))?;
                    good.push((clean.get_ref().len(), line));
                }
            }
        }
        let clean = clean
            .into_inner()
            .map_err(|e| DataFusionError::External(e.to_string().into()))?;
        let mut out = Vec::new();
        self.isolate(file, &clean, &good, 0, &mut out)?;
        Ok(out)
    }

    /// Decodes the records `good[..]` (ends in `clean`, starting at byte `from`), splitting the
    /// set in halves until each record that does not decode is alone, and rejects those.
    fn isolate(
        &self,
        file: &CsvFile,
        clean: &[u8],
        good: &[(usize, u64)],
        from: usize,
        out: &mut Vec<RecordBatch>,
    ) -> Result<(), DataFusionError> {
        let Some(&(to, _)) = good.last() else {
            return Ok(());
        };
        match self.decode_all(&clean[from..to]) {
            Ok(batches) => {
                out.extend(batches);
                Ok(())
            }
            Err(e) if good.len() == 1 => {
                let line = good[0].1;
                let text = &clean[from..to];
                let text = text.strip_suffix(b"\n").unwrap_or(text);
                self.log.reject(MalformedRow {
                    file: file.name.clone(),
                    line,
                    reason: parse_reason(&e.to_string(), &self.file_schema),
                    text: truncate(String::from_utf8_lossy(text).into_owned()),
                });
                Ok(())
            }
            Err(_) => {
                let mid = good.len() / 2;
                self.isolate(file, clean, &good[..mid], from, out)?;
                self.isolate(file, clean, &good[mid..], good[mid - 1].0, out)
            }
        }
    }
}

fn csv_error(e: csv::Error) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

/// arrow's "Error while parsing value 'abc' as type 'Int64' for column 1 at line 0. Row
/// data: …" as `column "b": cannot parse "abc" as Int64`.
fn parse_reason(message: &str, schema: &Schema) -> String {
    let between = |a: &str, b: &str| -> Option<String> {
        let start = message.find(a)? + a.len();
        let end = message[start..].find(b)? + start;
        Some(message[start..end].to_string())
    };
    let column = between("for column ", " ")
        .and_then(|c| c.parse::<usize>().ok())
        .filter(|&c| c < schema.fields().len())
        .map(|c| schema.field(c).name().clone());
    match (
        column,
        between("value '", "' as type"),
        between("as type '", "'"),
    ) {
        (Some(c), Some(_), Some(t)) => format!("column {c:?}: cannot parse as {t}"),
        _ => format!(
            "malformed CSV record: {}",
            message.split(". Row data").next().unwrap_or(message)
        ),
    }
}

fn record_text(record: &csv::ByteRecord, delimiter: u8) -> String {
    let mut bytes = Vec::new();
    for (i, f) in record.iter().enumerate() {
        if i > 0 {
            bytes.push(delimiter);
        }
        bytes.extend_from_slice(f);
        if bytes.len() > MAX_VALUE_BYTES {
            break;
        }
    }
    truncate(String::from_utf8_lossy(&bytes).into_owned())
}

fn truncate(mut s: String) -> String {
    if s.len() > MAX_VALUE_BYTES {
        let mut end = MAX_VALUE_BYTES;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s
}

/// Where the first record of `bytes` ends (after its newline), quotes respected.
fn first_record_end(bytes: &[u8], quote: u8) -> usize {
    let mut quoted = false;
    for i in memchr::memchr2_iter(quote, b'\n', bytes) {
        if bytes[i] == quote {
            quoted = !quoted;
        } else if !quoted {
            return i + 1;
        }
    }
    bytes.len()
}

/// Cuts a byte stream into chunks that end at record boundaries: a newline outside quotes.
/// A quote opens a quoted field only at the start of a field (as in csv_core, a quote inside
/// an unquoted field is a literal), and `""` inside one is an escaped quote.
struct Chunker {
    quote: u8,
    delimiter: u8,
    buf: Vec<u8>,
    /// How far `buf` has been scanned, and the state there.
    scanned: usize,
    quoted: bool,
    /// Where the current field starts, and where the last quoted field closed (a quote
    /// right after it is an escaped quote: the field goes on).
    field_start: usize,
    closed_at: Option<usize>,
    /// The end of the last record boundary seen, and, while quoted, where the record holding
    /// the opening quote starts.
    boundary: Option<usize>,
    open_record: usize,
    /// The physical line `buf[0]` is on.
    line: u64,
}

impl Chunker {
    fn new(quote: u8, delimiter: u8) -> Self {
        Self {
            quote,
            delimiter,
            buf: Vec::new(),
            scanned: 0,
            quoted: false,
            field_start: 0,
            closed_at: None,
            boundary: None,
            open_record: 0,
            line: 1,
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
        let from = self.scanned;
        for i in memchr::memchr3_iter(self.quote, self.delimiter, b'\n', &self.buf[from..]) {
            let i = from + i;
            let b = self.buf[i];
            if self.quoted {
                if b == self.quote {
                    self.quoted = false;
                    self.closed_at = Some(i);
                }
            } else if b == self.quote {
                if i == self.field_start || self.closed_at.is_some_and(|c| c + 1 == i) {
                    if i == self.field_start {
                        self.open_record = self.boundary.unwrap_or(0);
                    }
                    self.quoted = true;
                }
            } else if b == self.delimiter {
                self.field_start = i + 1;
            } else {
                self.field_start = i + 1;
                self.boundary = Some(i + 1);
            }
        }
        self.scanned = self.buf.len();
    }

    /// At the end of the stream: the last record, with the line it starts on, when a quoted
    /// field in it is never closed (it would otherwise swallow the rest of the file).
    fn take_unterminated(&mut self) -> Option<(Vec<u8>, u64)> {
        if !self.quoted {
            return None;
        }
        let record = self.buf.split_off(self.open_record);
        let line = self.line + count_newlines(&self.buf) as u64;
        self.rescan();
        Some((record, line))
    }

    /// Scans `buf` again from its start, which is a record boundary.
    fn rescan(&mut self) {
        let pending = std::mem::take(&mut self.buf);
        self.scanned = 0;
        self.quoted = false;
        self.field_start = 0;
        self.closed_at = None;
        self.boundary = None;
        self.open_record = 0;
        self.push(&pending);
    }

    /// The next chunk and the line it starts on, once enough bytes are buffered (or all of
    /// them at the end of the stream).
    fn next_chunk(&mut self, eof: bool) -> Option<(Vec<u8>, u64)> {
        if self.buf.is_empty() {
            return None;
        }
        let end = if eof {
            self.buf.len()
        } else if self.buf.len() < CHUNK_BYTES {
            return None;
        } else if let Some(b) = self.boundary {
            b
        } else if self.buf.len() > MAX_QUOTED_SPAN {
            // A quoted field this long is more likely a quote that never closes: cut at the
            // last newline and let the record checks judge the pieces.
            memchr::memrchr(b'\n', &self.buf)? + 1
        } else {
            return None;
        };
        let rest = self.buf.split_off(end);
        let chunk = std::mem::replace(&mut self.buf, rest);
        let first_line = self.line;
        self.line += count_newlines(&chunk) as u64;
        self.rescan();
        Some((chunk, first_line))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_end_outside_quotes_and_count_lines() {
        let mut c = Chunker::new(b'"', b',');
        c.push(b"a,\"x\ny\"\nb,2\n");
        let (chunk, line) = c.next_chunk(true).unwrap();
        assert_eq!((chunk.as_slice(), line), (&b"a,\"x\ny\"\nb,2\n"[..], 1));
        assert_eq!(first_record_end(b"a,\"x\ny\"\nb,2\n", b'"'), 8);
        assert!(c.next_chunk(true).is_none());

        // A quote that opens a field and never closes takes its record out; a quote inside
        // an unquoted field does not.
        let mut c = Chunker::new(b'"', b',');
        c.push(b"h\n5'11\",a\nb,\"open\nc,d\n");
        assert_eq!(
            c.take_unterminated(),
            Some((b"b,\"open\nc,d\n".to_vec(), 3))
        );
        assert_eq!(c.next_chunk(true).unwrap().0, b"h\n5'11\",a\n");
    }

    #[test]
    fn arrow_parse_errors_name_the_column() {
        let schema = Schema::new(vec![
            Field::new("a", DataType::Int64, true),
            Field::new("b", DataType::Float64, true),
        ]);
        assert_eq!(
            parse_reason(
                "Parser error: Error while parsing value 'zz' as type 'Float64' for column 1 at line 0. Row data: '[1,zz]'",
                &schema
            ),
            "column \"b\": cannot parse as Float64"
        );
    }

    #[test]
    fn types_are_inferred_past_malformed_records() {
        let dialect = CsvDialect {
            has_header: true,
            delimiter: b',',
            quote: b'"',
            compression: FileCompressionType::UNCOMPRESSED,
        };
        let s = infer_from_head(b"\xef\xbb\xbfid,x\n1,2.5\n2\n3,4.5,9\n", dialect).unwrap();
        assert_eq!(s.field(0).name(), "id");
        assert_eq!(s.field(0).data_type(), &DataType::Int64);
        assert_eq!(s.field(1).data_type(), &DataType::Float64);
    }

    #[tokio::test]
    async fn a_column_empty_where_types_are_inferred_is_text() {
        use object_store::memory::InMemory;
        let store = Arc::new(InMemory::new());
        let mut csv = b"id,x\n".to_vec();
        for i in 0..1500 {
            csv.extend_from_slice(format!("{i},{}\n", if i < 1200 { "" } else { "7" }).as_bytes());
        }
        let location = object_store::path::Path::from("d.csv");
        store.put(&location, csv.into()).await.unwrap();
        let meta = store.head(&location).await.unwrap();
        let file = CsvFile {
            store,
            meta,
            name: "d.csv".into(),
            partition_values: vec![],
        };
        let dialect = CsvDialect {
            has_header: true,
            delimiter: b',',
            quote: b'"',
            compression: FileCompressionType::UNCOMPRESSED,
        };
        let s = infer_file_schema(&[file], dialect).await.unwrap();
        assert_eq!(s.field(0).data_type(), &DataType::Int64);
        assert_eq!(s.field(1).data_type(), &DataType::Utf8);
    }
}
