//! Column names and expressions as a spec writes them: parsing a `columns` entry against the
//! input's schema, quoting names for SQL, showing them in messages, and suggesting the
//! nearest column when a name is unknown.

use datafusion::arrow::datatypes::DataType;
use datafusion::common::DFSchema;
use datafusion::logical_expr::{Expr, ExprSchemable};
use datafusion::prelude::DataFrame;

use crate::diagnostics::{closest, first_line};

/// Why a `columns` entry (or a pass-through column) cannot be evaluated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ColumnError {
    /// `near` is [`nearest_columns`]' text.
    #[error("unknown column {name:?}{near}")]
    Unknown { name: String, near: String },
    #[error("{sql:?} names an unknown column{near}")]
    UnknownIn { sql: String, near: String },
    #[error("{sql:?} is not a valid expression: {message}")]
    Invalid { sql: String, message: String },
}

/// Parses one `columns` entry into an expression and its type; a plain name that is not a
/// column gets the nearest names.
pub fn parse_column(df: &DataFrame, sql: &str) -> Result<(Expr, DataType), ColumnError> {
    let error =
        |e: datafusion::error::DataFusionError| column_error(df.schema(), sql, &e.to_string());
    let expr = df.parse_sql_expr(sql).map_err(error)?;
    // Parsing succeeds for unknown columns; resolving the type is what fails.
    let dtype = expr.get_type(df.schema()).map_err(error)?;
    Ok((expr, dtype))
}

fn column_error(schema: &DFSchema, sql: &str, error: &str) -> ColumnError {
    if !error.contains("No field named") {
        return ColumnError::Invalid {
            sql: sql.to_string(),
            message: first_line(error).to_string(),
        };
    }
    let name = sql.trim().trim_matches('"');
    let near = nearest_columns(schema, name);
    if is_identifier(name) {
        ColumnError::Unknown {
            name: name.to_string(),
            near,
        }
    } else {
        ColumnError::UnknownIn {
            sql: sql.to_string(),
            near,
        }
    }
}

/// `" (did you mean "x"? columns: a, b, c)"`, for messages about unknown columns.
pub fn nearest_columns(schema: &DFSchema, name: &str) -> String {
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    let list = names.join(", ");
    // One column whose name holds a likely delimiter: the CSV was split on the wrong one.
    let hint = match names.as_slice() {
        [only] if only.contains([';', '|', '\t', ',']) => {
            "; the input has a single column: is [input.csv] delimiter right?"
        }
        _ => "",
    };
    match closest(name, names.iter().copied()) {
        Some(n) => format!(" (did you mean {n:?}? columns: {list}{hint})"),
        None => format!(" (columns: {list}{hint})"),
    }
}

fn is_identifier(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_alphanumeric() || c == '_')
}

/// How a `columns` entry is shown in messages and `_rejected/`: a quoted identifier
/// (`"age"`, as inputs bound by default carry) shows as the bare name.
pub fn display_sql(sql: &str) -> &str {
    match sql.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
        Some(name) if !name.contains('"') => name,
        _ => sql,
    }
}

/// Quotes a column name for SQL so that names with capitals or odd characters work.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::datatypes::{Field, Schema};

    use super::*;

    #[test]
    fn quoted_identifiers_show_bare() {
        assert_eq!(display_sql(&quote_ident("age")), "age");
        assert_eq!(display_sql("ln(1 + x)"), "ln(1 + x)");
        assert_eq!(display_sql(r#""a""b""#), r#""a""b""#);
    }

    #[test]
    fn unknown_names_get_the_nearest_column_and_a_delimiter_hint() {
        let schema = |names: &[&str]| {
            let fields: Vec<Field> = names
                .iter()
                .map(|n| Field::new(*n, DataType::Int64, true))
                .collect();
            DFSchema::try_from(Arc::new(Schema::new(fields))).unwrap()
        };
        assert_eq!(
            nearest_columns(&schema(&["customer_id", "tenure"]), "tenrue"),
            " (did you mean \"tenure\"? columns: customer_id, tenure)"
        );
        assert_eq!(
            nearest_columns(&schema(&["id;a;b"]), "a"),
            " (columns: id;a;b; the input has a single column: is [input.csv] delimiter right?)"
        );
    }
}
