//! Cutting a CSV byte stream into chunks that end at record boundaries, so that chunks can
//! be decoded on their own and a bad one read again record by record.

use super::{CHUNK_BYTES, count_newlines};

/// Past this many bytes without a boundary outside quotes, quotes are assumed to be stray
/// (`5'11"` in an unquoted field) and chunks are cut at the last newline.
const MAX_QUOTED_SPAN: usize = 64 << 20;

/// Where the first record of `bytes` ends (after its newline), quotes respected.
pub(super) fn first_record_end(bytes: &[u8], quote: u8) -> usize {
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
pub(super) struct Chunker {
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
    pub(super) fn new(quote: u8, delimiter: u8) -> Self {
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

    pub(super) fn push(&mut self, bytes: &[u8]) {
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
    pub(super) fn take_unterminated(&mut self) -> Option<(Vec<u8>, u64)> {
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
    pub(super) fn next_chunk(&mut self, eof: bool) -> Option<(Vec<u8>, u64)> {
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
}
