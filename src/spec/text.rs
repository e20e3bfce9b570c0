//! Text models in the spec: `[tokenizer]` (a text column becomes token tensors) and the
//! table form of an `[outputs]` column (pooling, normalisation, softmax).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// How a text column becomes the model's token inputs (`input_ids`, `attention_mask`,
/// `token_type_ids`, whichever the model declares): a Hugging Face tokenizer, each call's rows
/// padded to its longest.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenizerSpec {
    /// The Hugging Face `tokenizer.json`: local, `file://`, or in an object store or over
    /// `https://` as a model is. Relative paths resolve against the spec's folder. Required.
    pub uri: String,
    /// The text to tokenize: a column name or a DataFusion SQL expression over the (queried)
    /// input, cast to text. Required.
    pub text: String,
    /// Tokens per text at most, special tokens included. Default: the tokenizer file's own
    /// truncation length, else 512, lowered to the sequence length a model fixes (its token
    /// inputs `[batch, N]`); set above that length, it is refused.
    #[serde(default)]
    pub max_length: Option<usize>,
    /// Whether a text longer than `max_length` is cut to it (`true`, counted in
    /// `_metrics.json` as `text.truncated`) or rejected (`false`). Default: true.
    #[serde(default = "default_true")]
    pub truncation: bool,
    /// A null or empty text: `"reject"` sends the row to `_rejected/` with the reason;
    /// `"embed"` scores it as the empty text (the special tokens alone). Default: "reject".
    #[serde(default)]
    pub on_empty: OnEmpty,
    /// Whether each batch's rows are scored grouped by token count, so that a call pads its
    /// rows to a length near their own (most of a call's cost is its padded length); every
    /// prediction is put back on its row. Default: true.
    #[serde(default = "default_true")]
    pub sort_by_length: bool,
}

fn default_true() -> bool {
    true
}

/// What a null or empty text becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum OnEmpty {
    #[default]
    Reject,
    Embed,
}

/// One `[outputs]` column: `"output"`, `"output[i]"`, or a table that pools, normalises or
/// applies softmax.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum OutputColumn {
    /// A model output, whole, or element `i` of its last axis (`"probabilities[1]"`).
    Ref(String),
    /// A model output, transformed.
    Table(OutputTable),
}

impl OutputColumn {
    /// An `[outputs]` value as a command line or an SQL call writes it: `{ from = … }` as a
    /// TOML table, anything else as the output's name (`probabilities[1]`).
    pub fn parse_inline(expr: &str) -> Result<toml::Value, String> {
        let trimmed = expr.trim();
        if !trimmed.starts_with('{') {
            return Ok(expr.into());
        }
        let mut table: toml::Table =
            toml::from_str(&format!("column = {trimmed}")).map_err(|e| {
                format!(
                    "not a TOML table like {{ from = \"logits\", softmax = true }}: {}",
                    e.message().trim()
                )
            })?;
        table
            .remove("column")
            .ok_or_else(|| "not a TOML table".to_string())
    }

    /// The model output it reads, as written (`name` or `name[i]`).
    pub fn reference(&self) -> &str {
        match self {
            Self::Ref(r) => r,
            Self::Table(t) => &t.from,
        }
    }

    /// What is done to the output's values, if anything.
    pub fn transform(&self) -> Transform {
        match self {
            Self::Ref(_) => Transform::default(),
            Self::Table(t) => Transform {
                pool: t.pool,
                normalize: t.normalize,
                softmax: t.softmax,
            },
        }
    }
}

impl From<String> for OutputColumn {
    fn from(r: String) -> Self {
        Self::Ref(r)
    }
}

/// `{ from = "last_hidden_state", pool = "mean", normalize = true }`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OutputTable {
    /// The model output: `name`, or `name[i]` for element `i` of its last axis (after
    /// `softmax`). Required.
    pub from: String,
    /// For an output of shape `[batch, sequence, hidden]` (a transformer's hidden states):
    /// one vector per row, `"mean"` of the positions the attention mask keeps, `"cls"` (the
    /// first position) or `"max"` (of the kept positions, per dimension). Needs `[tokenizer]`.
    /// Default: none.
    #[serde(default)]
    pub pool: Option<Pool>,
    /// Divide each row's vector by its L2 norm (after pooling). Default: false.
    #[serde(default)]
    pub normalize: bool,
    /// Softmax over the output's last axis (a classifier's `logits`), before an element is
    /// picked. Default: false.
    #[serde(default)]
    pub softmax: bool,
}

/// How hidden states become one vector per row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Pool {
    Mean,
    Cls,
    Max,
}

impl std::fmt::Display for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Mean => "mean",
            Self::Cls => "cls",
            Self::Max => "max",
        })
    }
}

/// What an output column does to its model output's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Transform {
    pub pool: Option<Pool>,
    pub normalize: bool,
    pub softmax: bool,
}

impl Transform {
    pub fn is_identity(&self) -> bool {
        *self == Self::default()
    }
}

/// The model inputs a tokenizer fills, when the model declares them.
pub const TOKEN_INPUTS: [&str; 3] = ["input_ids", "attention_mask", "token_type_ids"];

/// Problems of `[tokenizer]` and of the table-form `[outputs]` columns.
pub(super) fn check(spec: &super::JobSpec, p: &mut Vec<crate::diagnostics::Problem>) {
    use crate::diagnostics::Problem;
    if let Some(t) = &spec.tokenizer {
        if t.uri.trim().is_empty() {
            p.push(Problem::new("tokenizer.uri", "must not be empty"));
        }
        if t.text.trim().is_empty() {
            p.push(Problem::new(
                "tokenizer.text",
                "must name a column or an expression",
            ));
        }
        if t.max_length.is_some_and(|n| n < 2) {
            p.push(Problem::new(
                "tokenizer.max_length",
                "must be at least 2 (room for the special tokens)",
            ));
        }
        for name in TOKEN_INPUTS
            .iter()
            .filter(|n| spec.inputs.contains_key(**n))
        {
            p.push(Problem::new(
                format!("inputs.{name}"),
                "is filled by [tokenizer]; leave it out of [inputs]",
            ));
        }
    }
    let tables = spec
        .outputs
        .iter()
        .flatten()
        .filter_map(|(col, c)| match c {
            OutputColumn::Table(t) => Some((format!("outputs.{col}"), t)),
            OutputColumn::Ref(_) => None,
        });
    let challenger_tables = spec.challengers.iter().enumerate().flat_map(|(i, c)| {
        c.outputs
            .iter()
            .flatten()
            .filter_map(move |(col, o)| match o {
                OutputColumn::Table(t) => Some((format!("challengers[{i}].outputs.{col}"), t)),
                OutputColumn::Ref(_) => None,
            })
    });
    for (key, t) in tables.chain(challenger_tables) {
        if t.pool.is_some() && spec.tokenizer.is_none() {
            p.push(Problem::new(
                format!("{key}.pool"),
                "pools over the attention mask, which only [tokenizer] makes; add a [tokenizer] table",
            ));
        }
        if t.pool.is_some() && t.softmax {
            p.push(Problem::new(
                format!("{key}.softmax"),
                "applies to a classifier's scores, not to pooled hidden states; pick one",
            ));
        }
    }
}
