//! Reading one CSV file of a partition: chunks decoded by arrow's decoder (the fast path),
//! and only a chunk it refuses read again record by record, its bad records rejected.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use datafusion::arrow::array::{ArrayRef, DictionaryArray, RecordBatch, StringArray, UInt16Array};
use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::csv::ReaderBuilder;
use datafusion::arrow::datatypes::{Schema, SchemaRef, UInt16Type};
use datafusion::error::DataFusionError;
use futures::StreamExt;

use super::chunker::{Chunk, Chunker, first_record_end};
use super::{
    CHUNK_BYTES, CsvDialect, CsvFile, MAX_VALUE_BYTES, MalformedRow, ReadLog, count_newlines,
    csv_reader, csv_writer, open_stream, strip_bom,
};

/// Reads files of one schema; shared by the partitions' threads.
pub(super) struct FileScan {
    pub(super) schema: SchemaRef,
    pub(super) file_schema: SchemaRef,
    pub(super) dialect: CsvDialect,
    pub(super) batch_size: usize,
    pub(super) log: ReadLog,
    pub(super) stride: (usize, usize),
}

/// Decoded rows of one file not yet handed on, and where the file's reading stands.
struct PendingRows {
    batches: Vec<RecordBatch>,
    count: usize,
    /// Whether the header record is still ahead.
    header_left: bool,
    chunks_seen: usize,
}

impl PendingRows {
    fn new(has_header: bool) -> Self {
        Self {
            batches: Vec::new(),
            count: 0,
            header_left: has_header,
            chunks_seen: 0,
        }
    }

    fn take(&mut self) -> Vec<RecordBatch> {
        self.count = 0;
        std::mem::take(&mut self.batches)
    }
}

impl FileScan {
    /// Reads one file, handing batches of about `batch_size` rows to `emit`; false when the
    /// consumer has gone.
    pub(super) fn read(
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
        // Chunks no bigger than the file's byte ranges, so that each range starts some and
        // decodes its share of the rows (a chunk's rows go to the range it starts in).
        let target = file.ranges.as_ref().map_or(CHUNK_BYTES, |r| {
            usize::try_from(r.span).map_or(CHUNK_BYTES, |span| span.min(CHUNK_BYTES))
        });
        let mut chunker = Chunker::new(self.dialect.quote, self.dialect.delimiter, target);
        let mut rows = PendingRows::new(self.dialect.has_header);
        let mut at_start = true;
        loop {
            let next = handle
                .block_on(stream.next())
                .transpose()
                .map_err(in_file)?;
            let eof = next.is_none();
            if let Some(bytes) = next {
                let bytes: &[u8] = &bytes;
                chunker.push(if at_start { strip_bom(bytes) } else { bytes });
                at_start &= bytes.is_empty();
            }
            let unterminated = if eof {
                chunker.take_unterminated()
            } else {
                None
            };
            while let Some(chunk) = chunker.next_chunk(eof) {
                let place = file.ranges.as_ref().map(|r| r.place(chunk.offset));
                if place == Some(std::cmp::Ordering::Greater) {
                    // Past this scan's byte ranges: the rest of the file is another's.
                    return self.flush(file, &mut rows, emit);
                }
                let ours = place.is_none_or(|p| p == std::cmp::Ordering::Equal);
                self.take_chunk(file, &chunk, ours, &mut rows)?;
                if rows.count >= self.batch_size && !emit(self.finish(file, rows.take())?) {
                    return Ok(false);
                }
            }
            // It ends the file, so it is the last byte range's. Every striding partition sees
            // it; the first one reports it.
            let last_range = file.ranges.as_ref().is_none_or(|r| r.chosen.end == r.count);
            if let Some((record, line)) = unterminated.filter(|_| self.stride.0 == 0 && last_range)
            {
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
        self.flush(file, &mut rows, emit)
    }

    /// Hands on the rows still pending; false when the consumer has gone.
    fn flush(
        &self,
        file: &CsvFile,
        rows: &mut PendingRows,
        mut emit: impl FnMut(RecordBatch) -> bool,
    ) -> Result<bool, DataFusionError> {
        if rows.count > 0 && !emit(self.finish(file, rows.take())?) {
            return Ok(false);
        }
        Ok(true)
    }

    /// Decodes a chunk into `rows` when it is this partition's to decode (see `stride`) and
    /// in the byte ranges it reads (`ours`).
    fn take_chunk(
        &self,
        file: &CsvFile,
        chunk: &Chunk,
        ours: bool,
        rows: &mut PendingRows,
    ) -> Result<(), DataFusionError> {
        let mine = ours && rows.chunks_seen % self.stride.1 == self.stride.0;
        rows.chunks_seen += 1;
        let header = std::mem::take(&mut rows.header_left);
        if !mine {
            return Ok(());
        }
        let (mut chunk, mut line) = (chunk.bytes.as_slice(), chunk.first_line);
        if header {
            // The header is the first record; chunks start at record boundaries.
            let end = first_record_end(chunk, self.dialect.quote);
            line += count_newlines(&chunk[..end]) as u64;
            chunk = &chunk[end..];
        }
        for batch in self.decode_chunk(file, chunk, line)? {
            rows.count += batch.num_rows();
            rows.batches.push(batch);
        }
        Ok(())
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

#[cfg(test)]
mod tests {
    use datafusion::arrow::datatypes::{DataType, Field};

    use super::*;

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
}
