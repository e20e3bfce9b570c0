//! The policies as DataFusion scalar functions, one per policy: each takes a column of any
//! type, reads its values as text (numbers and dates as Arrow writes them) and returns text,
//! null where the value is null.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, StringBuilder};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::Result as DfResult;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};

use super::hmac::{base64, hmac_sha256};

/// Each value of the function's one argument as text, through `police`, nulls kept.
fn police_column(
    args: ScalarFunctionArgs,
    police: impl Fn(&str, &mut String),
) -> DfResult<ColumnarValue> {
    let rows = args.number_rows;
    let [arg] = <[ColumnarValue; 1]>::try_from(args.args).map_err(|a| {
        datafusion::error::DataFusionError::Internal(format!(
            "a privacy policy takes one argument, given {}",
            a.len()
        ))
    })?;
    let array = arg.into_array(rows)?;
    let text = cast(&array, &DataType::Utf8)?;
    let text = text.as_string::<i32>();
    let mut out = StringBuilder::with_capacity(rows, text.value_data().len());
    let mut buf = String::new();
    for i in 0..text.len() {
        if text.is_null(i) {
            out.append_null();
        } else {
            buf.clear();
            police(text.value(i), &mut buf);
            out.append_value(&buf);
        }
    }
    Ok(ColumnarValue::Array(Arc::new(out.finish()) as ArrayRef))
}

fn any_one() -> Signature {
    Signature::any(1, Volatility::Immutable)
}

/// The `ScalarUDFImpl` of a policy struct with a `signature` field and a `police` method.
macro_rules! policy_udf {
    ($ty:ident, $name:literal) => {
        impl ScalarUDFImpl for $ty {
            fn name(&self) -> &str {
                $name
            }
            fn signature(&self) -> &Signature {
                &self.signature
            }
            fn return_type(&self, _arg_types: &[DataType]) -> DfResult<DataType> {
                Ok(DataType::Utf8)
            }
            fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
                police_column(args, |v, out| self.police(v, out))
            }
        }
    };
}

/// `redact`: every value becomes the same text.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct RedactUdf {
    mask: String,
    signature: Signature,
}

impl RedactUdf {
    pub fn new(mask: String) -> Self {
        Self {
            mask,
            signature: any_one(),
        }
    }
    fn police(&self, _value: &str, out: &mut String) {
        out.push_str(&self.mask);
    }
}
policy_udf!(RedactUdf, "batchscore_redact");

/// `hash`: HMAC-SHA256 of the value's UTF-8 text, in hex or base64.
#[derive(PartialEq, Eq, Hash)]
pub struct HashUdf {
    key: Arc<[u8]>,
    base64: bool,
    signature: Signature,
}

impl std::fmt::Debug for HashUdf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("HashUdf")
            .field("base64", &self.base64)
            .finish_non_exhaustive()
    }
}

impl HashUdf {
    pub fn new(key: Arc<[u8]>, base64: bool) -> Self {
        Self {
            key,
            base64,
            signature: any_one(),
        }
    }
    pub fn police(&self, value: &str, out: &mut String) {
        let mac = hmac_sha256(&self.key, value.as_bytes());
        if self.base64 {
            out.push_str(&base64(&mac));
        } else {
            out.push_str(&hex::encode(mac));
        }
    }
}
policy_udf!(HashUdf, "batchscore_hash");

/// `truncate`: the first `keep` characters.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct TruncateUdf {
    keep: usize,
    signature: Signature,
}

impl TruncateUdf {
    pub fn new(keep: usize) -> Self {
        Self {
            keep,
            signature: any_one(),
        }
    }
    pub fn police(&self, value: &str, out: &mut String) {
        out.extend(value.chars().take(self.keep));
    }
}
policy_udf!(TruncateUdf, "batchscore_truncate");

/// `mask`: the last `keep` characters, each one before them a `*`.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct MaskUdf {
    keep: usize,
    signature: Signature,
}

impl MaskUdf {
    pub fn new(keep: usize) -> Self {
        Self {
            keep,
            signature: any_one(),
        }
    }
    pub fn police(&self, value: &str, out: &mut String) {
        let n = value.chars().count();
        let hidden = n.saturating_sub(self.keep);
        for (i, c) in value.chars().enumerate() {
            out.push(if i < hidden { '*' } else { c });
        }
    }
}
policy_udf!(MaskUdf, "batchscore_mask");

#[cfg(test)]
mod tests {
    use super::*;

    fn run(f: impl Fn(&str, &mut String), v: &str) -> String {
        let mut s = String::new();
        f(v, &mut s);
        s
    }

    #[test]
    fn policies_count_characters_not_bytes() {
        let t = TruncateUdf::new(3);
        assert_eq!(run(|v, o| t.police(v, o), "zoë@x.org"), "zoë");
        assert_eq!(run(|v, o| t.police(v, o), "ab"), "ab");
        let m = MaskUdf::new(4);
        assert_eq!(
            run(|v, o| m.police(v, o), "+44 7700 900123"),
            "***********0123"
        );
        assert_eq!(run(|v, o| m.police(v, o), "ë12"), "ë12");
        let r = RedactUdf::new("<redacted>".into());
        assert_eq!(run(|v, o| r.police(v, o), "secret"), "<redacted>");
    }

    #[test]
    fn hash_is_hmac_sha256_in_hex_or_base64_and_never_debugs_its_key() {
        let key: Arc<[u8]> = Arc::from(b"Jefe".as_slice());
        let hex = HashUdf::new(key.clone(), false);
        assert_eq!(
            run(|v, o| hex.police(v, o), "what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        let b64 = HashUdf::new(key, true);
        assert_eq!(
            run(|v, o| b64.police(v, o), "what do ya want for nothing?"),
            "W9zBRr9gdU5qBCQmCJV1x1oAPwidJzmDnexYuWTsOEM="
        );
        assert!(!format!("{b64:?}").contains("Jefe"));
    }
}
