//! Reading an ONNX file without ONNX Runtime: a reader of protobuf's wire format
//! ([`ProtoReader`]), enough to walk a `ModelProto` without its schema, and the header facts
//! `inspect` shows. The tree ensembles' splits are read with it too (`score::tree_order`).

use std::collections::BTreeMap;

use serde::Serialize;

/// Why bytes are not a readable ONNX model.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OnnxError {
    #[error("the file is empty")]
    Empty,
    #[error("truncated ({0})")]
    Truncated(&'static str),
    #[error("malformed protobuf ({0})")]
    Malformed(String),
    #[error("no IR version or no graph (is it really an .onnx file?)")]
    NoGraph,
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

/// Reads the top-level fields of an ONNX `ModelProto` (protobuf) that describe the model,
/// refusing files that are not protobuf, are truncated, or have no graph.
pub fn parse_onnx_header(bytes: &[u8]) -> Result<OnnxHeader, OnnxError> {
    let mut h = OnnxHeader::default();
    let mut r = ProtoReader { buf: bytes, pos: 0 };
    let (mut has_graph, mut has_ir) = (false, false);
    if bytes.is_empty() {
        return Err(OnnxError::Empty);
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
        return Err(OnnxError::NoGraph);
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

    pub(crate) fn varint(&mut self) -> Result<u64, OnnxError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self
                .buf
                .get(self.pos)
                .ok_or(OnnxError::Truncated("ends inside a number"))?;
            self.pos += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(OnnxError::Malformed("varint too long".into()))
    }

    pub(crate) fn key(&mut self) -> Result<(u64, u8), OnnxError> {
        let k = self.varint()?;
        let field = k >> 3;
        if field == 0 {
            return Err(OnnxError::Malformed("field number 0".into()));
        }
        Ok((field, (k & 7) as u8))
    }

    pub(crate) fn bytes(&mut self) -> Result<&'a [u8], OnnxError> {
        let len = self.varint()? as usize;
        let end = self
            .pos
            .checked_add(len)
            .filter(|&e| e <= self.buf.len())
            .ok_or(OnnxError::Truncated(
                "a field runs past the end of the file",
            ))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    pub(crate) fn string(&mut self) -> Result<String, OnnxError> {
        Ok(String::from_utf8_lossy(self.bytes()?).into_owned())
    }

    pub(crate) fn skip(&mut self, wire: u8) -> Result<(), OnnxError> {
        match wire {
            0 => self.varint().map(|_| ()),
            1 => self.advance(8),
            2 => self.bytes().map(|_| ()),
            5 => self.advance(4),
            w => Err(OnnxError::Malformed(format!("wire type {w}"))),
        }
    }

    /// A 32-bit little-endian value (wire type 5: `float`, `fixed32`).
    pub(crate) fn fixed32(&mut self) -> Result<u32, OnnxError> {
        let end = self.pos + 4;
        let b = self
            .buf
            .get(self.pos..end)
            .ok_or(OnnxError::Truncated("ends inside a number"))?;
        self.pos = end;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn advance(&mut self, n: usize) -> Result<(), OnnxError> {
        if self.pos + n > self.buf.len() {
            return Err(OnnxError::Truncated("ends inside a field"));
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
    fn not_onnx_and_truncated_are_refused() {
        assert!(matches!(parse_onnx_header(b""), Err(OnnxError::Empty)));
        assert!(parse_onnx_header(b"name,age\n1,2\n").is_err());
        let bytes = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/sample_data/synthetic/rank1_int.onnx"
        ))
        .unwrap();
        let cut = &bytes[..bytes.len() / 2];
        assert!(matches!(
            parse_onnx_header(cut),
            Err(OnnxError::Truncated(_))
        ));
    }
}
