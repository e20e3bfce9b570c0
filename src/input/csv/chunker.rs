//! Cutting a CSV byte stream into chunks that end at record boundaries, so that chunks can
//! be decoded on their own and a bad one read again record by record.

use super::{CHUNK_BYTES, count_newlines};

/// Past this many bytes without a boundary outside quotes, quotes are assumed to be stray
/// (`5'11"` in an unquoted field) and chunks are cut at a newline.
const MAX_QUOTED_SPAN: usize = 64 << 20;

/// A piece of the stream that starts and ends at record boundaries.
#[derive(Debug, PartialEq)]
pub(super) struct Chunk {
    pub bytes: Vec<u8>,
    /// The physical line it starts on, 1-based.
    pub first_line: u64,
    /// Where it starts in the stream (after any byte-order mark).
    pub offset: u64,
}

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
///
/// Where chunks end depends only on the bytes, never on the sizes of the pieces the stream
/// arrives in: a chunk ends at its first boundary at least `target` bytes in ([`CHUNK_BYTES`],
/// or a file's byte ranges' span where that is smaller). Readers of one file that each
/// decode some of its chunks (a partition's stride, a byte-range unit) agree on the chunks
/// whether the file comes from a disk or, in pieces of any size, from a store.
pub(super) struct Chunker {
    quote: u8,
    delimiter: u8,
    /// Bytes a chunk holds at least (but the last).
    target: usize,
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
    /// The first record boundary at least `target` bytes in: where the chunk ends.
    cut: Option<usize>,
    /// The physical line `buf[0]` is on, and where `buf[0]` is in the stream.
    line: u64,
    offset: u64,
}

impl Chunker {
    /// A chunker of chunks of at least `target` bytes (at most [`CHUNK_BYTES`], at least 1).
    pub(super) fn new(quote: u8, delimiter: u8, target: usize) -> Self {
        Self {
            quote,
            delimiter,
            target: target.clamp(1, CHUNK_BYTES),
            buf: Vec::new(),
            scanned: 0,
            quoted: false,
            field_start: 0,
            closed_at: None,
            boundary: None,
            open_record: 0,
            cut: None,
            line: 1,
            offset: 0,
        }
    }

    pub(super) fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
        self.scan(false);
    }

    /// Scans the bytes buffered and not yet scanned: up to the chunk's cut, the rest waiting
    /// until that chunk is taken (so that each byte is scanned once however small the chunks,
    /// rather than the whole buffer again after every cut), or to the end (`whole`).
    fn scan(&mut self, whole: bool) {
        if self.cut.is_some() && !whole {
            return;
        }
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
                if i + 1 >= self.target && self.cut.is_none() {
                    self.cut = Some(i + 1);
                    if !whole {
                        self.scanned = i + 1;
                        return;
                    }
                }
            }
        }
        self.scanned = self.buf.len();
    }

    /// At the end of the stream: the last record, with the line it starts on, when a quoted
    /// field in it is never closed (it would otherwise swallow the rest of the file).
    pub(super) fn take_unterminated(&mut self) -> Option<(Vec<u8>, u64)> {
        self.scan(true);
        if !self.quoted {
            return None;
        }
        let record = self.buf.split_off(self.open_record);
        let line = self.line + count_newlines(&self.buf) as u64;
        self.rescan();
        Some((record, line))
    }

    /// Where the next chunk ends, when the bytes buffered tell: its first boundary at least
    /// `target` bytes in; past `MAX_QUOTED_SPAN` bytes with none (a quote that never closes),
    /// the first newline at least `target` bytes in; at the end of the stream, the end.
    fn chunk_end(&self, eof: bool) -> Option<usize> {
        match self.cut {
            Some(cut) if cut <= MAX_QUOTED_SPAN => Some(cut),
            _ if self.buf.len() > MAX_QUOTED_SPAN => {
                memchr::memchr(b'\n', &self.buf[self.target..]).map(|i| self.target + i + 1)
            }
            _ if eof => Some(self.buf.len()),
            _ => None,
        }
    }

    /// Scans `buf` again from its start, which is a record boundary.
    fn rescan(&mut self) {
        self.scanned = 0;
        self.quoted = false;
        self.field_start = 0;
        self.closed_at = None;
        self.boundary = None;
        self.open_record = 0;
        self.cut = None;
        self.scan(false);
    }

    /// The next chunk, once enough bytes are buffered (or all of them at the end of the
    /// stream).
    pub(super) fn next_chunk(&mut self, eof: bool) -> Option<Chunk> {
        if self.buf.is_empty() {
            return None;
        }
        let end = self.chunk_end(eof)?;
        let rest = self.buf.split_off(end);
        let bytes = std::mem::replace(&mut self.buf, rest);
        let chunk = Chunk {
            first_line: self.line,
            offset: self.offset,
            bytes,
        };
        self.line += count_newlines(&chunk.bytes) as u64;
        self.offset += chunk.bytes.len() as u64;
        self.rescan();
        Some(chunk)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_end_outside_quotes_and_count_lines() {
        let mut c = Chunker::new(b'"', b',', CHUNK_BYTES);
        c.push(b"a,\"x\ny\"\nb,2\n");
        let chunk = c.next_chunk(true).unwrap();
        assert_eq!(
            (chunk.bytes.as_slice(), chunk.first_line),
            (&b"a,\"x\ny\"\nb,2\n"[..], 1)
        );
        assert_eq!(first_record_end(b"a,\"x\ny\"\nb,2\n", b'"'), 8);
        assert!(c.next_chunk(true).is_none());

        // A quote that opens a field and never closes takes its record out; a quote inside
        // an unquoted field does not.
        let mut c = Chunker::new(b'"', b',', CHUNK_BYTES);
        c.push(b"h\n5'11\",a\nb,\"open\nc,d\n");
        assert_eq!(
            c.take_unterminated(),
            Some((b"b,\"open\nc,d\n".to_vec(), 3))
        );
        assert_eq!(c.next_chunk(true).unwrap().bytes, b"h\n5'11\",a\n");
    }

    /// `text` fed to a chunker of `target` in pieces of `piece` bytes: each chunk's offset,
    /// first line and length.
    fn cut(text: &[u8], piece: usize, target: usize) -> Vec<(u64, u64, usize)> {
        let mut c = Chunker::new(b'"', b',', target);
        let mut got = Vec::new();
        let mut pieces = text.chunks(piece).peekable();
        while let Some(p) = pieces.next() {
            c.push(p);
            let eof = pieces.peek().is_none();
            while let Some(chunk) = c.next_chunk(eof) {
                got.push((chunk.offset, chunk.first_line, chunk.bytes.len()));
            }
        }
        got
    }

    /// A chunker for byte ranges smaller than [`CHUNK_BYTES`] cuts chunks of at least their
    /// span, each ending at its first record boundary past it, whatever the pieces.
    #[test]
    fn a_smaller_target_cuts_smaller_chunks_at_record_ends() {
        let mut text = Vec::new();
        // Where each record ends; a quoted newline inside each is no end.
        let mut ends = Vec::new();
        for i in 0..2_000 {
            text.extend_from_slice(format!("{i},\"a\nb\",{}\n", i * 7).as_bytes());
            ends.push(text.len());
        }
        let target = 1_000;
        for piece in [7, 333, text.len()] {
            let chunks = cut(&text, piece, target);
            assert_eq!(chunks.iter().map(|c| c.2).sum::<usize>(), text.len());
            assert!(chunks.len() > 10, "{chunks:?}");
            for &(start, _, len) in &chunks[..chunks.len() - 1] {
                let start = start as usize;
                // It ends at the first record end at least `target` bytes in.
                let first = ends.iter().find(|&&e| e >= start + target);
                assert_eq!(first, Some(&(start + len)), "pieces of {piece}: {chunks:?}");
            }
        }
    }

    /// Every reader of a file must cut it into the same chunks, whatever the sizes of the
    /// pieces the bytes arrive in (a local file's 4 MiB blocks, a store's network reads).
    #[test]
    fn chunks_depend_on_the_bytes_alone() {
        let mut text = Vec::new();
        let mut i = 0;
        while text.len() < 3 * CHUNK_BYTES + 12_345 {
            let note = if i % 7 == 0 {
                "\"two\nlines, \"\"quoted\"\"\""
            } else {
                "plain"
            };
            text.extend_from_slice(format!("{i},{note},{}\n", i * 3).as_bytes());
            i += 1;
        }
        let chunks = |piece: usize| cut(&text, piece, CHUNK_BYTES);
        let whole = chunks(text.len());
        assert_eq!(whole.len(), 4, "{whole:?}");
        assert_eq!(whole.iter().map(|c| c.2).sum::<usize>(), text.len());
        for (offset, line, _) in &whole {
            let before = &text[..*offset as usize];
            assert!(before.ends_with(b"\n") || before.is_empty());
            assert_eq!(*line, 1 + count_newlines(before) as u64);
        }
        for piece in [8 << 10, 65_537, CHUNK_BYTES] {
            assert_eq!(chunks(piece), whole, "pieces of {piece} bytes");
        }
    }
}
