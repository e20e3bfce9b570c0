//! Redaction of the values an error message may quote. DataFusion's and Arrow's messages about
//! a value quote it (`Cannot cast string 'ann@example.com' to value of Int64 type`, `Invalid
//! input syntax for type interval: "ann@example.com"`) or give a number as it is (`Can't cast
//! value 3000000123 to type Int32`, `12.50 is too large to store in a Decimal128 of precision
//! 3`). Which column a value came from is not said, so when a job has sensitive columns every
//! value a message from the data path quotes is replaced by `<redacted>`.

use std::str::FromStr;

use datafusion::arrow::datatypes::DataType;

use super::REDACTED;

/// `message` with every quoted literal (in single or double quotes) replaced by `<redacted>`,
/// but for one that names an Arrow type (`as type 'Int64'`), and with the number of the
/// shapes Arrow gives unquoted (`value N to type`, `N is too large`, `N is too small`,
/// `Overflowing on N`) replaced too.
pub fn redact_message(message: &str) -> String {
    redact_numbers(&redact_quoted(message))
}

/// Replaces quoted literals. A quote opens a literal at the start or after a character that is
/// not a letter or digit (so the `'` of `Can't` opens none), and closes it before one that is
/// not; a literal never closed is redacted to the end of the message.
fn redact_quoted(message: &str) -> String {
    let chars: Vec<char> = message.chars().collect();
    let mut out = String::with_capacity(message.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let opens = (c == '\'' || c == '"') && (i == 0 || !chars[i - 1].is_alphanumeric());
        if !opens {
            out.push(c);
            i += 1;
            continue;
        }
        let close = (i + 1..chars.len())
            .find(|&j| chars[j] == c && chars.get(j + 1).is_none_or(|n| !n.is_alphanumeric()));
        let end = close.unwrap_or(chars.len());
        let inner: String = chars[i + 1..end].iter().collect();
        out.push(c);
        if is_type_name(&inner) {
            out.push_str(&inner);
        } else {
            out.push_str(REDACTED);
        }
        if close.is_some() {
            out.push(c);
        }
        i = end + 1;
    }
    out
}

/// Whether `text` names an Arrow type (`Int64`, `Decimal128(10, 2)`), which is no value.
fn is_type_name(text: &str) -> bool {
    !text.is_empty() && DataType::from_str(text).is_ok()
}

/// Replaces the numbers Arrow's cast and decimal errors give unquoted.
fn redact_numbers(message: &str) -> String {
    let words: Vec<&str> = message.split(' ').collect();
    let at = |i: usize| words.get(i).copied().unwrap_or("");
    let before = |i: usize| if i == 0 { "" } else { words[i - 1] };
    words
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let numeric = w.chars().any(|c| c.is_ascii_digit())
                || matches!(w.trim_start_matches('-'), "inf" | "NaN");
            let quoted_shape = (before(i) == "value" && at(i + 1) == "to")
                || (at(i + 1) == "is" && at(i + 2) == "too")
                || (before(i) == "on" && i >= 2 && words[i - 2].ends_with("Overflowing"));
            if numeric && quoted_shape { REDACTED } else { w }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Messages as batchscore's runs got them from DataFusion 55 and Arrow, each with what it
    /// becomes.
    #[test]
    fn the_values_of_arrow_and_datafusion_messages_are_redacted() {
        let cases = [
            (
                "Arrow error: Cast error: Cannot cast string 'ann.lee@example.com' to value of Int64 type",
                "Arrow error: Cast error: Cannot cast string '<redacted>' to value of Int64 type",
            ),
            (
                "Arrow error: Cast error: Cannot cast value 'o'brien@example.com' to value of Boolean type",
                "Arrow error: Cast error: Cannot cast value '<redacted>' to value of Boolean type",
            ),
            (
                "Arrow error: Cast error: Cannot cast string 'x' to value of Decimal128(38, 10) type",
                "Arrow error: Cast error: Cannot cast string '<redacted>' to value of Decimal128(38, 10) type",
            ),
            (
                "Arrow error: Cast error: Can't cast value 3000000123 to type Int32",
                "Arrow error: Cast error: Can't cast value <redacted> to type Int32",
            ),
            (
                "Arrow error: Cast error: Can't cast value -3000000123 to type UInt32",
                "Arrow error: Cast error: Can't cast value <redacted> to type UInt32",
            ),
            (
                "Arrow error: Cast error: Can't cast value inf to type Int64",
                "Arrow error: Cast error: Can't cast value <redacted> to type Int64",
            ),
            (
                "Arrow error: Invalid argument error: 12.50 is too large to store in a Decimal128 of precision 3. Max is 9.99",
                "Arrow error: Invalid argument error: <redacted> is too large to store in a Decimal128 of precision 3. Max is 9.99",
            ),
            (
                "Cast error: Cannot cast to Decimal128(5, 0). Overflowing on 3000000123",
                "Cast error: Cannot cast to Decimal128(5, 0). Overflowing on <redacted>",
            ),
            (
                "Arrow error: Parser error: Error parsing timestamp from 'ann.lee@example.com': error parsing date",
                "Arrow error: Parser error: Error parsing timestamp from '<redacted>': error parsing date",
            ),
            (
                "Execution error: Error parsing timestamp from 'ann.lee@example.com' using format '%Y-%m': input contains invalid characters",
                "Execution error: Error parsing timestamp from '<redacted>' using format '<redacted>': input contains invalid characters",
            ),
            (
                "Arrow error: Parser error: Invalid input syntax for type interval: \"ann.lee@example.com\"",
                "Arrow error: Parser error: Invalid input syntax for type interval: \"<redacted>\"",
            ),
            (
                "Parser error: Error while parsing value 'zz' as type 'Float64' for column 1 at line 0. Row data: '[1,zz]'",
                "Parser error: Error while parsing value '<redacted>' as type 'Float64' for column 1 at line 0. Row data: '<redacted>'",
            ),
            ("a quote 'never closed", "a quote '<redacted>"),
            (
                "Arrow error: Divide by zero error",
                "Arrow error: Divide by zero error",
            ),
        ];
        for (message, want) in cases {
            assert_eq!(redact_message(message), want, "{message}");
        }
    }
}
