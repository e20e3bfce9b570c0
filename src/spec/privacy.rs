//! `[privacy]`: which input columns are sensitive, and what each becomes when it leaves.

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::diagnostics::Problem;

/// The fewest bytes a `hash` policy's key may have.
pub const MIN_KEY_BYTES: usize = 32;

/// Sensitive columns and their policies.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PrivacySpec {
    /// Columns of the input table (as read, before `[input] query`) holding personal or secret
    /// data. A column of the queried input whose expression reads one (`upper(email) AS e`)
    /// is sensitive too. Features may read them; one leaves by `[output] passthrough` only
    /// under a policy. Default: none.
    #[serde(default)]
    pub sensitive: Vec<String>,
    /// What each sensitive column of the queried input becomes when it leaves by `[output]
    /// passthrough` (in the written rows and in `_rejected/` rows), by its name. Every such
    /// column needs one, or the job is refused. Default: none.
    #[serde(default)]
    pub policies: IndexMap<String, PolicySpec>,
}

/// What one sensitive column becomes when it leaves.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicySpec {
    /// `"drop"` (the column is not written), `"redact"` (every value becomes `mask`),
    /// `"hash"` (keyed HMAC-SHA256 of the value's text), `"truncate"` (its first `keep_first`
    /// characters), `"mask"` (its last `keep_last` characters, the others `*`) or `"keep"`
    /// (written as it is, with a warning). Nulls stay null; other policies than `keep` write
    /// numbers and dates as their text. Required.
    pub policy: PolicyKind,
    /// For `redact`: the text every value becomes. Default: "<redacted>".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mask: Option<String>,
    /// For `hash`: the HMAC key as text (its UTF-8 bytes), at least 32 bytes. Write it as
    /// `"${env:NAME}"`, from the environment, never in the spec file. Default: none; `hash`
    /// needs this or `key_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<Secret>,
    /// For `hash`: a file holding the HMAC key (its bytes, a trailing newline removed), at
    /// least 32 bytes. Relative paths resolve against the spec's folder. Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<String>,
    /// For `hash`: `"hex"` or `"base64"` (standard, padded). Default: "hex".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding: Option<HashEncoding>,
    /// For `truncate`: how many characters to keep. Required by `truncate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_first: Option<usize>,
    /// For `mask`: how many trailing characters to keep. Required by `mask`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_last: Option<usize>,
}

/// A policy's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PolicyKind {
    Drop,
    Redact,
    Hash,
    Truncate,
    Mask,
    Keep,
}

impl PolicyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Drop => "drop",
            Self::Redact => "redact",
            Self::Hash => "hash",
            Self::Truncate => "truncate",
            Self::Mask => "mask",
            Self::Keep => "keep",
        }
    }
}

/// How a hash is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum HashEncoding {
    #[default]
    Hex,
    Base64,
}

/// A secret as the spec holds it: debug output never shows it.
#[derive(Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<secret>")
    }
}

/// Problems of `[privacy]` that need no data: each policy has what its kind needs and nothing
/// another kind needs, and a `key` is long enough.
pub(super) fn check(spec: &PrivacySpec, p: &mut Vec<Problem>) {
    for (i, name) in spec.sensitive.iter().enumerate() {
        if name.trim().is_empty() {
            p.push(Problem::new(
                format!("privacy.sensitive[{i}]"),
                "must not be empty",
            ));
        }
    }
    for (column, policy) in &spec.policies {
        check_policy(&format!("privacy.policies.{column}"), policy, p);
    }
}

fn check_policy(key: &str, s: &PolicySpec, p: &mut Vec<Problem>) {
    use PolicyKind::*;
    let kind = s.policy;
    let set = [
        ("mask", s.mask.is_some(), kind == Redact),
        ("key", s.key.is_some(), kind == Hash),
        ("key_file", s.key_file.is_some(), kind == Hash),
        ("encoding", s.encoding.is_some(), kind == Hash),
        ("keep_first", s.keep_first.is_some(), kind == Truncate),
        ("keep_last", s.keep_last.is_some(), kind == Mask),
    ];
    for (field, is_set, belongs) in set {
        if is_set && !belongs {
            p.push(Problem::new(
                format!("{key}.{field}"),
                format!("has no meaning for policy \"{}\"", kind.as_str()),
            ));
        }
    }
    match kind {
        Hash => match (&s.key, &s.key_file) {
            (None, None) => p.push(Problem::new(
                format!("{key}.key"),
                "policy \"hash\" needs a key: key = \"${env:NAME}\" or key_file = \"path\"",
            )),
            (Some(_), Some(_)) => p.push(Problem::new(
                format!("{key}.key_file"),
                "give key or key_file, not both",
            )),
            (Some(k), None) if k.0.len() < MIN_KEY_BYTES => p.push(Problem::new(
                format!("{key}.key"),
                format!(
                    "the key has {} bytes; a hash key needs at least {MIN_KEY_BYTES}",
                    k.0.len()
                ),
            )),
            _ => {}
        },
        Truncate if s.keep_first.is_none() => p.push(Problem::new(
            format!("{key}.keep_first"),
            "policy \"truncate\" needs keep_first, the characters to keep",
        )),
        Mask if s.keep_last.is_none() => p.push(Problem::new(
            format!("{key}.keep_last"),
            "policy \"mask\" needs keep_last, the trailing characters to keep",
        )),
        _ => {}
    }
}
