//! Scoring a text model (`[tokenizer]`): each batch's texts encoded once, rows grouped by
//! their token counts, each call's token tensors padded to its longest row (or to the
//! sequence length the model fixes).

use std::sync::atomic::{AtomicU64, Ordering};

use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::error::ArrowError;
use ort::value::DynValue;
use serde::{Deserialize, Serialize};

use crate::features::text::RowTokens;
use crate::features::{PackError, TextBinding, TextEncoder};
use crate::reject::{Rejects, Stage};

/// The tokenizer and the inputs it fills.
#[derive(Debug)]
pub struct TextScoring {
    pub encoder: TextEncoder,
    pub binding: TextBinding,
}

/// Counts over a run's texts.
#[derive(Debug, Default)]
pub struct TextStats {
    /// Texts encoded (rows rejected for their text are not).
    pub texts: AtomicU64,
    /// Texts longer than `max_length`, cut to it.
    pub truncated: AtomicU64,
    /// Tokens fed to the model, special tokens included, padding not.
    pub tokens: AtomicU64,
    /// Positions fed to the model, padding included.
    pub positions: AtomicU64,
}

/// `_metrics.json`'s `text`: what the tokenizer did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct TextMetrics {
    /// `[tokenizer] max_length` (or the tokenizer file's).
    pub max_length: usize,
    /// Texts tokenized.
    pub texts: u64,
    /// Texts longer than `max_length` tokens, cut to it (`truncation = true`).
    pub truncated: u64,
    /// Tokens fed to the model, special tokens included, padding not.
    pub tokens: u64,
    /// Positions fed to the model, padding included: `tokens / padded_tokens` is how much of
    /// the model's work was real text.
    pub padded_tokens: u64,
}

impl TextScoring {
    /// Encodes the texts of a batch's rows; a row whose text cannot be scored is rejected
    /// (its tokens left empty).
    pub fn encode(
        &self,
        args: &[ArrayRef],
        num_rows: usize,
        rejects: &mut Rejects,
        stats: &TextStats,
    ) -> Result<Vec<RowTokens>, ArrowError> {
        // The binding casts the text to Utf8; a plan that hands over another string type
        // (a view, say) is cast here rather than trusted.
        let col = cast(&args[self.binding.arg], &DataType::Utf8)?;
        let col = col.as_string::<i32>();
        let mut tokens = vec![RowTokens::default(); num_rows];
        let (mut texts, mut truncated) = (0, 0);
        for (row, slot) in tokens.iter_mut().enumerate() {
            if rejects.is_rejected(row) {
                continue;
            }
            let text = col.is_valid(row).then(|| col.value(row));
            match self.encoder.encode(text) {
                Ok(t) => {
                    texts += 1;
                    truncated += u64::from(t.truncated);
                    *slot = t;
                }
                Err(reason) => {
                    let shown = match text {
                        _ if self.binding.sensitive => crate::reject::REDACTED.to_string(),
                        None => "null".to_string(),
                        Some(t) => t.to_string(),
                    };
                    rejects.reject(row, Stage::Features, reason, shown);
                }
            }
        }
        stats.texts.fetch_add(texts, Ordering::Relaxed);
        stats.truncated.fetch_add(truncated, Ordering::Relaxed);
        Ok(tokens)
    }

    /// Sorts rows by token count (stable: equal lengths keep their order), when the spec
    /// asks; returns whether it did.
    pub fn sort(&self, rows: &mut [usize], tokens: &[RowTokens]) -> bool {
        if !self.encoder.sort_by_length || rows.len() < 2 {
            return false;
        }
        rows.sort_by_key(|&r| tokens[r].ids.len());
        true
    }

    /// The token tensors of one call's rows, counted.
    pub fn pack(
        &self,
        rows: &[usize],
        tokens: &[RowTokens],
        stats: &TextStats,
    ) -> Result<Vec<(String, DynValue)>, PackError> {
        let picked: Vec<&RowTokens> = rows.iter().map(|&r| &tokens[r]).collect();
        let real: usize = picked.iter().map(|t| t.ids.len()).sum();
        let width = crate::features::text::call_width(&self.binding.fills, &picked);
        stats.tokens.fetch_add(real as u64, Ordering::Relaxed);
        stats
            .positions
            .fetch_add((width * rows.len()) as u64, Ordering::Relaxed);
        self.encoder.pack(&self.binding.fills, &picked)
    }
}

impl TextMetrics {
    /// Adds another part's counts (a shard's, a resumed piece's) to these.
    pub fn add(&mut self, other: &Self) {
        self.texts += other.texts;
        self.truncated += other.truncated;
        self.tokens += other.tokens;
        self.padded_tokens += other.padded_tokens;
    }
}

impl TextStats {
    /// The run's counts, for `_metrics.json`.
    pub fn metrics(&self, max_length: usize) -> TextMetrics {
        let load = |n: &AtomicU64| n.load(Ordering::Relaxed);
        TextMetrics {
            max_length,
            texts: load(&self.texts),
            truncated: load(&self.truncated),
            tokens: load(&self.tokens),
            padded_tokens: load(&self.positions),
        }
    }

    /// Zeroes the counts (between a resumable run's pieces).
    pub fn reset(&self) {
        for n in [&self.texts, &self.truncated, &self.tokens, &self.positions] {
            n.store(0, Ordering::Relaxed);
        }
    }
}
