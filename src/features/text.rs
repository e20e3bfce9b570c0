//! Text features (`[tokenizer]`): a text column becomes a transformer's token tensors.
//!
//! The tokenizer is a Hugging Face `tokenizer.json`, read by the `tokenizers` crate (built
//! without its C and C++ features: `fancy-regex` stands in for Oniguruma). Each row's text is
//! encoded once, with the special tokens and the truncation the spec asks for, and without
//! padding: a call pads its rows to the longest of them ([`TextEncoder::pack`]), so the
//! model's cost follows the texts' lengths rather than `max_length` (a model that fixes its
//! sequence length gets exactly that length).

use object_store::ObjectStoreExt;
use ort::value::{DynValue, Tensor};
use tokenizers::Tokenizer;
use tokenizers::utils::truncation::{TruncationParams, TruncationStrategy};

use super::PackError;
use crate::diagnostics::Problem;
use crate::model::{ElemType, IoKind, Model};
use crate::spec::{OnEmpty, TokenizerSpec};
use crate::storage::StoreFactory;

/// Tokens per text when neither the spec nor the tokenizer file says.
pub const DEFAULT_MAX_LENGTH: usize = 512;

/// Rows per ONNX Runtime call for a text model when the spec does not say: attention grows
/// with rows x length², and 32 rows of 128 tokens keep a small transformer's activations in
/// a few MiB.
pub const DEFAULT_TEXT_INFERENCE_BATCH: usize = 32;

/// Rows per batch for a text model when the spec does not say: enough rows to group by
/// length (16 calls of 32), few enough that every worker has batches to take (a batch is
/// several seconds of a small transformer's work on one core; measured: 2048-row batches
/// left one of two cores idle on a 2000-row input).
pub const DEFAULT_TEXT_BATCH_SIZE: usize = 512;

/// Why a tokenizer cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TextError {
    #[error("tokenizer {uri}: cannot read it: {message}")]
    Read { uri: String, message: String },
    #[error("tokenizer {uri}: not a Hugging Face tokenizer.json: {message}")]
    Parse { uri: String, message: String },
    #[error("tokenizer {uri}: cannot truncate to {max_length} tokens: {message}")]
    Truncation {
        uri: String,
        max_length: usize,
        message: String,
    },
}

/// Which token tensor a model input takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    Ids,
    Mask,
    TypeIds,
}

/// A model input the tokenizer fills.
#[derive(Debug, Clone)]
pub struct TokenInput {
    pub name: String,
    pub kind: TokenKind,
    /// `int64` or `int32`.
    pub dtype: ElemType,
    /// The sequence length the model fixes, where its input is `[batch, N]` with a number
    /// for N: every call is then padded to exactly N tokens.
    pub length: Option<usize>,
}

/// The positions one call's rows are padded to: their longest row's tokens, or the length
/// the model fixes. Never shorter than a row: a row longer than the fixed length (which
/// planning refuses) then fails in ONNX Runtime, naming the shape, rather than here.
pub fn call_width(fills: &[TokenInput], rows: &[&RowTokens]) -> usize {
    let longest = rows.iter().map(|r| r.ids.len()).max().unwrap_or(0);
    fixed_length(fills).unwrap_or(0).max(longest).max(1)
}

/// The sequence length the model's token inputs fix, if they fix one.
pub fn fixed_length(fills: &[TokenInput]) -> Option<usize> {
    fills.iter().find_map(|f| f.length)
}

/// The text expression and the model inputs it fills, bound before any row is read.
#[derive(Debug, Clone)]
pub struct TextBinding {
    /// The `text` expression as written.
    pub sql: String,
    /// Its index among the scoring function's arguments.
    pub arg: usize,
    pub fills: Vec<TokenInput>,
    /// Whether the text reads a sensitive column (its value then never shows in `_rejected/`).
    pub sensitive: bool,
}

/// The token inputs the model declares (at least `input_ids`), which `[tokenizer]` fills.
pub fn token_inputs(model: &Model) -> Result<Vec<TokenInput>, Problem> {
    let mut fills = Vec::new();
    for (name, kind) in [
        ("input_ids", TokenKind::Ids),
        ("attention_mask", TokenKind::Mask),
        ("token_type_ids", TokenKind::TypeIds),
    ] {
        let Some(io) = model.input(name) else {
            continue;
        };
        let (dtype, length) = match &io.kind {
            IoKind::Tensor { dtype, shape } if shape.len() == 2 => {
                (*dtype, usize::try_from(shape[1]).ok().filter(|&n| n > 0))
            }
            other => {
                return Err(Problem::new(
                    "tokenizer",
                    format!(
                        "model input {name:?} is {other}; a tokenizer fills [batch, sequence] int64 or int32 tensors"
                    ),
                ));
            }
        };
        if !matches!(dtype, ElemType::Int64 | ElemType::Int32) {
            return Err(Problem::new(
                "tokenizer",
                format!(
                    "model input {name:?} has element type {dtype}; a tokenizer fills int64 or int32"
                ),
            ));
        }
        fills.push(TokenInput {
            name: name.to_string(),
            kind,
            dtype,
            length,
        });
    }
    let lengths: Vec<String> = fills
        .iter()
        .filter_map(|f| Some(format!("{} [?, {}]", f.name, f.length?)))
        .collect();
    let distinct: std::collections::BTreeSet<_> = fills.iter().filter_map(|f| f.length).collect();
    if distinct.len() > 1 {
        return Err(Problem::new(
            "tokenizer",
            format!(
                "the model's token inputs fix different sequence lengths ({}); one tokenizer cannot fill them",
                lengths.join(", ")
            ),
        ));
    }
    if !fills.iter().any(|f| f.kind == TokenKind::Ids) {
        let names: Vec<_> = model.inputs.iter().map(|i| i.name.as_str()).collect();
        return Err(Problem::new(
            "tokenizer",
            format!(
                "the model has no input \"input_ids\" to tokenize into (its inputs: {})",
                names.join(", ")
            ),
        ));
    }
    Ok(fills)
}

/// One text, encoded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RowTokens {
    pub ids: Vec<u32>,
    pub type_ids: Vec<u32>,
    /// Whether the text was longer than `max_length` and cut.
    pub truncated: bool,
}

/// The loaded tokenizer and what `[tokenizer]` asks of it.
#[derive(Debug, Clone)]
pub struct TextEncoder {
    tokenizer: Tokenizer,
    pub uri: String,
    pub max_length: usize,
    pub truncation: bool,
    pub on_empty: OnEmpty,
    pub sort_by_length: bool,
    pad_id: u32,
    pad_type_id: u32,
    /// Whether the spec set `max_length` (else it is the file's, or the default, and a
    /// model's fixed sequence length may lower it).
    length_set: bool,
}

impl TextEncoder {
    /// Reads the tokenizer file (local, or from its store) and sets its truncation.
    pub async fn load(spec: &TokenizerSpec, stores: &StoreFactory) -> Result<Self, TextError> {
        let bytes = read_bytes(&spec.uri, stores).await?;
        Self::from_bytes(spec, &bytes)
    }

    /// [`Self::load`] from the file's bytes.
    pub fn from_bytes(spec: &TokenizerSpec, bytes: &[u8]) -> Result<Self, TextError> {
        let uri = spec.uri.clone();
        let mut tokenizer = Tokenizer::from_bytes(bytes).map_err(|e| TextError::Parse {
            uri: uri.clone(),
            message: e.to_string(),
        })?;
        let own = tokenizer.get_truncation().map(|t| t.max_length);
        let max_length = spec.max_length.or(own).unwrap_or(DEFAULT_MAX_LENGTH);
        let (pad_id, pad_type_id) = tokenizer
            .get_padding()
            .map_or((0, 0), |p| (p.pad_id, p.pad_type_id));
        // Padding is ours, per call; the file's (often a fixed length) is dropped.
        tokenizer.with_padding(None);
        let mut encoder = Self {
            tokenizer,
            uri,
            max_length,
            truncation: spec.truncation,
            on_empty: spec.on_empty,
            sort_by_length: spec.sort_by_length,
            pad_id,
            pad_type_id,
            length_set: spec.max_length.is_some(),
        };
        encoder.truncate_at(max_length)?;
        Ok(encoder)
    }

    /// Cuts texts at `max_length` tokens from now on.
    fn truncate_at(&mut self, max_length: usize) -> Result<(), TextError> {
        let truncation = TruncationParams {
            max_length,
            strategy: TruncationStrategy::LongestFirst,
            stride: 0,
            ..TruncationParams::default()
        };
        self.tokenizer
            .with_truncation(Some(truncation))
            .map_err(|e| TextError::Truncation {
                uri: self.uri.clone(),
                max_length,
                message: e.to_string(),
            })?;
        self.max_length = max_length;
        Ok(())
    }

    /// Encodes one row's text, or says why the row is rejected.
    pub fn encode(&self, text: Option<&str>) -> Result<RowTokens, String> {
        let text = match text {
            None | Some("") if self.on_empty == OnEmpty::Reject => {
                let what = if text.is_none() { "null" } else { "empty" };
                return Err(format!(
                    "the text is {what}, and [tokenizer] on_empty = \"reject\""
                ));
            }
            None => "",
            Some(t) => t,
        };
        let encoding = self
            .tokenizer
            .encode_fast(text, true)
            .map_err(|e| format!("the tokenizer failed on this text: {e}"))?;
        let truncated = !encoding.get_overflowing().is_empty();
        if truncated && !self.truncation {
            return Err(format!(
                "the text is longer than max_length = {} tokens, and [tokenizer] truncation = false",
                self.max_length
            ));
        }
        Ok(RowTokens {
            ids: encoding.get_ids().to_vec(),
            type_ids: encoding.get_type_ids().to_vec(),
            truncated,
        })
    }

    /// Fits `max_length` to the sequence length the model fixes, if it fixes one: a length
    /// the spec did not set (the file's, or the default) is lowered to it; one the spec set
    /// longer is refused, since texts that long could not be fed to the model.
    pub fn fit_length(&mut self, fills: &[TokenInput]) -> Result<(), String> {
        match fixed_length(fills) {
            Some(fixed) if self.max_length > fixed && !self.length_set => {
                self.truncate_at(fixed).map_err(|e| e.to_string())
            }
            Some(fixed) if self.max_length > fixed => Err(format!(
                "max_length = {} is longer than the {fixed} tokens the model takes (its input {:?} is [?, {fixed}]): set [tokenizer] max_length = {fixed} or less",
                self.max_length,
                fills
                    .iter()
                    .find(|f| f.length.is_some())
                    .map_or("", |f| &f.name),
            )),
            _ => Ok(()),
        }
    }

    /// The token tensors of one call's rows, each `[rows, longest]` (`[rows, N]` for a model
    /// that fixes N), padded on the right (the tokenizer file's pad id, mask 0).
    pub fn pack(
        &self,
        fills: &[TokenInput],
        rows: &[&RowTokens],
    ) -> Result<Vec<(String, DynValue)>, PackError> {
        let width = call_width(fills, rows);
        let shape = [rows.len() as i64, width as i64];
        let mut tensors = Vec::with_capacity(fills.len());
        for fill in fills {
            let pad = match fill.kind {
                TokenKind::Ids => self.pad_id,
                TokenKind::TypeIds => self.pad_type_id,
                TokenKind::Mask => 0,
            };
            let mut data: Vec<i64> = Vec::with_capacity(rows.len() * width);
            for r in rows {
                match fill.kind {
                    TokenKind::Ids => data.extend(r.ids.iter().map(|&x| i64::from(x))),
                    TokenKind::TypeIds => data.extend(r.type_ids.iter().map(|&x| i64::from(x))),
                    // A single text's mask is all ones.
                    TokenKind::Mask => data.extend(std::iter::repeat_n(1, r.ids.len())),
                }
                data.extend(std::iter::repeat_n(i64::from(pad), width - r.ids.len()));
            }
            let tensor = match fill.dtype {
                ElemType::Int32 => {
                    let data: Vec<i32> = data.iter().map(|&x| x as i32).collect();
                    Tensor::from_array((shape, data)).map(|t| t.into_dyn())
                }
                _ => Tensor::from_array((shape, data)).map(|t| t.into_dyn()),
            };
            let tensor = tensor.map_err(|source| PackError::Tensor {
                input: fill.name.clone(),
                source,
            })?;
            tensors.push((fill.name.clone(), tensor));
        }
        Ok(tensors)
    }
}

/// A file's bytes: local, or from its object store.
async fn read_bytes(uri: &str, stores: &StoreFactory) -> Result<Vec<u8>, TextError> {
    let fail = |message: String| TextError::Read {
        uri: uri.to_string(),
        message,
    };
    if !crate::storage::is_remote(uri) {
        let path = uri.strip_prefix("file://").unwrap_or(uri);
        return std::fs::read(path).map_err(|e| fail(e.to_string()));
    }
    let located = stores.locate(uri).map_err(|e| fail(e.message))?;
    let got = located
        .store
        .get(&located.path)
        .await
        .map_err(|e| fail(e.to_string()))?;
    let bytes = got.bytes().await.map_err(|e| fail(e.to_string()))?;
    Ok(bytes.to_vec())
}
