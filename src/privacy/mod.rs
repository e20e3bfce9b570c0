//! Sensitive data: which columns of the queried input are sensitive (declared in `[privacy]
//! sensitive`, or derived from one by `[input] query`), and the policy each pass-through one
//! leaves under, as a DataFusion scalar function on the pass-through column. The written rows
//! and the `_rejected/` rows take their pass-through columns from the same expressions, so a
//! policy applies to both.

pub mod hmac;
pub mod redact;
pub mod udf;

use std::collections::BTreeSet;
use std::sync::Arc;

use datafusion::common::DFSchema;
use datafusion::logical_expr::{Expr, LogicalPlan, ScalarUDF, col};
use datafusion::prelude::DataFrame;
use indexmap::IndexMap;

use crate::diagnostics::Problem;
use crate::features::{nearest_columns, quote_ident};
use crate::spec::privacy::MIN_KEY_BYTES;
use crate::spec::{HashEncoding, PolicyKind, PolicySpec, PrivacySpec};
use udf::{HashUdf, MaskUdf, RedactUdf, TruncateUdf};

pub use crate::reject::REDACTED;

/// A policy, ready to apply.
#[derive(Clone)]
pub enum Policy {
    Drop,
    Keep,
    Redact(String),
    Hash { key: Arc<[u8]>, base64: bool },
    Truncate(usize),
    Mask(usize),
}

impl Policy {
    /// The policy of `spec` for `column`, reading a `key_file`; `None` with a problem when its
    /// key cannot be had or is too short.
    fn from_spec(column: &str, spec: &PolicySpec, problems: &mut Vec<Problem>) -> Option<Self> {
        Some(match spec.policy {
            PolicyKind::Drop => Self::Drop,
            PolicyKind::Keep => Self::Keep,
            PolicyKind::Redact => Self::Redact(spec.mask.clone().unwrap_or(REDACTED.into())),
            PolicyKind::Truncate => Self::Truncate(spec.keep_first.unwrap_or(0)),
            PolicyKind::Mask => Self::Mask(spec.keep_last.unwrap_or(0)),
            PolicyKind::Hash => Self::Hash {
                key: hash_key(column, spec, problems)?,
                base64: spec.encoding == Some(HashEncoding::Base64),
            },
        })
    }

    /// `column` under this policy, as the column `name`; `None` for `drop`.
    fn apply(&self, name: &str, column: Expr) -> Option<Expr> {
        let udf = match self {
            Self::Drop => return None,
            Self::Keep => return Some(column),
            Self::Redact(mask) => ScalarUDF::from(RedactUdf::new(mask.clone())),
            Self::Hash { key, base64 } => ScalarUDF::from(HashUdf::new(key.clone(), *base64)),
            Self::Truncate(n) => ScalarUDF::from(TruncateUdf::new(*n)),
            Self::Mask(n) => ScalarUDF::from(MaskUdf::new(*n)),
        };
        Some(udf.call(vec![col(quote_ident(name))]).alias(name))
    }

    /// The policy as `validate` prints it.
    pub fn describe(&self) -> String {
        match self {
            Self::Drop => "drop (not written)".into(),
            Self::Keep => "keep (written as it is)".into(),
            Self::Redact(mask) => format!("redact (every value {mask:?})"),
            Self::Hash { base64, .. } => {
                let enc = if *base64 { "base64" } else { "hex" };
                format!("hash (HMAC-SHA256, {enc})")
            }
            Self::Truncate(n) => format!("truncate (first {n} characters)"),
            Self::Mask(n) => format!("mask (last {n} characters, the others '*')"),
        }
    }
}

/// A `hash` policy's key: `key`, or the bytes of `key_file` less a trailing newline; at least
/// [`MIN_KEY_BYTES`] (a `key`'s length is checked with the spec).
fn hash_key(column: &str, spec: &PolicySpec, problems: &mut Vec<Problem>) -> Option<Arc<[u8]>> {
    if let Some(k) = &spec.key {
        return Some(Arc::from(k.0.as_bytes()));
    }
    let path = spec.key_file.as_deref()?;
    let problem_key = format!("privacy.policies.{column}.key_file");
    let mut bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => {
            problems.push(Problem::new(
                problem_key,
                format!("cannot read the key file {path}: {e}"),
            ));
            return None;
        }
    };
    for end in [b'\n', b'\r'] {
        if bytes.last() == Some(&end) {
            bytes.pop();
        }
    }
    if bytes.len() < MIN_KEY_BYTES {
        problems.push(Problem::new(
            problem_key,
            format!(
                "the key file {path} holds {} bytes; a hash key needs at least {MIN_KEY_BYTES}",
                bytes.len()
            ),
        ));
        return None;
    }
    Some(Arc::from(bytes))
}

/// The job's sensitive columns and what becomes of each.
#[derive(Clone, Default)]
pub struct PrivacyPlan {
    /// Each sensitive column of the input table or the queried input, with the declared
    /// sensitive columns it reads (itself, for a declared one).
    pub sensitive: IndexMap<String, BTreeSet<String>>,
    /// The policies, by column.
    policies: IndexMap<String, Policy>,
    /// Sensitive columns that leave by `[output] passthrough` (under their policy).
    pub passed: Vec<String>,
    /// Sensitive columns a feature reads.
    pub read: BTreeSet<String>,
}

impl PrivacyPlan {
    /// Whether the job declares any sensitive column.
    pub fn any(&self) -> bool {
        !self.sensitive.is_empty()
    }

    /// Pass-through column `name` as written, from `column` (its expression without a
    /// policy): under its policy when it is sensitive; `None` when the policy drops it.
    pub fn police(&self, name: &str, column: Expr) -> Option<Expr> {
        match self.policies.get(name) {
            Some(p) if self.sensitive.contains_key(name) => p.apply(name, column),
            _ => Some(column),
        }
    }

    /// Logs a warning for each pass-through column under `keep`; once per run (planning may
    /// bind the input twice, when the memory fit changes the layout).
    pub fn warn_kept(&self) {
        for name in &self.passed {
            if let Some(Policy::Keep) = self.policies.get(name) {
                tracing::warn!(column = %name, "[privacy] policy \"keep\": a sensitive column is written as it is, in the output and in _rejected/ rows");
            }
        }
    }

    /// Per feature expression: whether it reads a sensitive column (recorded as read).
    pub fn mark_features(&mut self, exprs: &[Expr]) -> Vec<bool> {
        exprs
            .iter()
            .map(|e| {
                let read: Vec<String> = e
                    .column_refs()
                    .iter()
                    .filter(|c| self.sensitive.contains_key(&c.name))
                    .map(|c| c.name.clone())
                    .collect();
                let any = !read.is_empty();
                self.read.extend(read);
                any
            })
            .collect()
    }

    /// One line per sensitive column: by which way it leaves and under which policy, or that
    /// it never leaves.
    pub fn describe(&self) -> Vec<String> {
        self.sensitive
            .iter()
            .map(|(name, sources)| {
                let what = if sources.len() == 1 && sources.contains(name) {
                    "sensitive".to_string()
                } else {
                    let s: Vec<String> = sources.iter().map(|s| format!("{s:?}")).collect();
                    format!("derived from {}", s.join(", "))
                };
                let fate = match self.policies.get(name) {
                    Some(Policy::Drop) if self.passed.contains(name) => {
                        "dropped from output.passthrough, never leaves".to_string()
                    }
                    Some(p) if self.passed.contains(name) => format!(
                        "leaves by output.passthrough (written rows and _rejected/ rows) under {}",
                        p.describe()
                    ),
                    _ if self.read.contains(name) => "read by a feature, never leaves".into(),
                    _ => "never leaves".into(),
                };
                format!("column {name:?} ({what}): {fate}")
            })
            .collect()
    }
}

/// Plans `[privacy]` over the queried input `frame` with the pass-through columns `passthrough`:
/// every declared column must be one of the input table's, every policy must name a sensitive
/// column, and every sensitive pass-through column needs a policy (problems under
/// `output.passthrough[i]`).
pub fn plan(
    spec: &PrivacySpec,
    frame: &DataFrame,
    passthrough: &[String],
    problems: &mut Vec<Problem>,
) -> PrivacyPlan {
    let mut plan = PrivacyPlan::default();
    if spec.sensitive.is_empty() && spec.policies.is_empty() {
        return plan;
    }
    let logical = frame.logical_plan();
    let table = input_table_schema(logical);
    for (i, name) in spec.sensitive.iter().enumerate() {
        let known = match &table {
            Some(t) => t.field_with_unqualified_name(name).is_ok(),
            None => frame.schema().field_with_unqualified_name(name).is_ok(),
        };
        if !known {
            let near = nearest_columns(table.as_ref().unwrap_or(frame.schema()), name);
            problems.push(Problem::new(
                format!("privacy.sensitive[{i}]"),
                format!("unknown column {name:?} of the input{near}"),
            ));
        }
        plan.sensitive
            .insert(name.clone(), BTreeSet::from([name.clone()]));
    }
    derive(logical, &mut plan.sensitive);
    bind_policies(spec, &mut plan, problems);
    require_policies(&mut plan, spec, passthrough, problems);
    plan
}

/// Reads every policy, each of which must name a sensitive column.
fn bind_policies(spec: &PrivacySpec, plan: &mut PrivacyPlan, problems: &mut Vec<Problem>) {
    for (column, policy) in &spec.policies {
        if !plan.sensitive.contains_key(column) {
            problems.push(Problem::new(
                format!("privacy.policies.{column}"),
                format!("column {column:?} is not sensitive: list it in [privacy] sensitive, or remove its policy"),
            ));
            continue;
        }
        if let Some(p) = Policy::from_spec(column, policy, problems) {
            plan.policies.insert(column.clone(), p);
        }
    }
}

/// Every sensitive pass-through column has a policy in `spec` (one whose key could not be had
/// is a problem of its own).
fn require_policies(
    plan: &mut PrivacyPlan,
    spec: &PrivacySpec,
    passthrough: &[String],
    problems: &mut Vec<Problem>,
) {
    for (i, name) in passthrough.iter().enumerate() {
        let Some(sources) = plan.sensitive.get(name) else {
            continue;
        };
        plan.passed.push(name.clone());
        match plan.policies.get(name) {
            Some(_) => {}
            None if spec.policies.contains_key(name) => {}
            None => {
                let why = if sources.contains(name) {
                    "is listed in [privacy] sensitive".to_string()
                } else {
                    let s: Vec<String> = sources.iter().map(|s| format!("{s:?}")).collect();
                    format!(
                        "is derived by [input] query from sensitive {}",
                        s.join(", ")
                    )
                };
                problems.push(Problem::new(
                    format!("output.passthrough[{i}]"),
                    format!("column {name:?} {why} and would leave by output.passthrough with no policy: give it one in [privacy.policies.{}] (policy = \"drop\", \"redact\", \"hash\", \"truncate\", \"mask\" or \"keep\")", quote_key(name)),
                ));
            }
        }
    }
}

/// A column name as a TOML key: bare when it can be.
fn quote_key(name: &str) -> String {
    if !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        name.to_string()
    } else {
        format!("{name:?}")
    }
}

/// The schema of the table `input` the plan scans, when it scans one table.
fn input_table_schema(plan: &LogicalPlan) -> Option<DFSchema> {
    use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
    let mut found = None;
    let _ = plan.apply(|node| {
        if let LogicalPlan::TableScan(t) = node
            && t.table_name.table() == crate::input::INPUT_TABLE
        {
            found = DFSchema::try_from(t.source.schema()).ok();
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    found
}

/// Adds to `sensitive` every column the plan computes from a sensitive one, inputs first: a
/// projection's (or aggregate's, or window's) output column whose expression reads a
/// sensitive column by name, and a union's column where any of its inputs' is sensitive.
fn derive(plan: &LogicalPlan, sensitive: &mut IndexMap<String, BTreeSet<String>>) {
    for input in plan.inputs() {
        derive(input, sensitive);
    }
    let fields = plan.schema().fields();
    let exprs: Vec<&Expr> = match plan {
        LogicalPlan::Projection(p) => p.expr.iter().collect(),
        LogicalPlan::Aggregate(a) => a.group_expr.iter().chain(&a.aggr_expr).collect(),
        LogicalPlan::Window(w) => {
            let n = w.input.schema().fields().len();
            let skipped = fields.iter().skip(n);
            for (f, e) in skipped.zip(&w.window_expr) {
                mark(f.name(), e, sensitive);
            }
            return;
        }
        LogicalPlan::Union(u) => {
            for input in &u.inputs {
                for (f, theirs) in fields.iter().zip(input.schema().fields()) {
                    if let Some(s) = sensitive.get(theirs.name()).cloned() {
                        sensitive.entry(f.name().clone()).or_default().extend(s);
                    }
                }
            }
            return;
        }
        _ => return,
    };
    for (f, e) in fields.iter().zip(exprs) {
        mark(f.name(), e, sensitive);
    }
}

/// Marks `name` sensitive when `expr` reads a sensitive column.
fn mark(name: &str, expr: &Expr, sensitive: &mut IndexMap<String, BTreeSet<String>>) {
    let sources: BTreeSet<String> = expr
        .column_refs()
        .iter()
        .filter_map(|c| sensitive.get(&c.name))
        .flatten()
        .cloned()
        .collect();
    if !sources.is_empty() {
        sensitive
            .entry(name.to_string())
            .or_default()
            .extend(sources);
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::RecordBatch;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::prelude::SessionContext;

    use super::*;

    #[tokio::test]
    async fn sensitivity_follows_projections_aggregates_windows_and_unions() {
        let ctx = SessionContext::new();
        let schema = Schema::new(vec![
            Field::new("email", DataType::Utf8, true),
            Field::new("x", DataType::Int64, true),
        ]);
        ctx.register_batch("input", RecordBatch::new_empty(Arc::new(schema)))
            .unwrap();
        let spec = PrivacySpec {
            sensitive: vec!["email".into()],
            ..PrivacySpec::default()
        };
        let cases = [
            ("SELECT * FROM input WHERE x > 1", vec!["email"]),
            ("SELECT upper(email) AS e, x FROM input", vec!["email", "e"]),
            (
                "SELECT e AS f FROM (SELECT lower(email) AS e FROM input)",
                vec!["email", "e", "f"],
            ),
            (
                "SELECT x, count(email) AS n FROM input GROUP BY x",
                vec!["email", "n"],
            ),
            (
                "SELECT x, row_number() OVER (ORDER BY email) AS r FROM input",
                vec!["email", "r"],
            ),
            (
                "SELECT CAST(x AS VARCHAR) AS y FROM input UNION ALL SELECT email FROM input",
                vec!["email", "y"],
            ),
            ("SELECT x + 1 AS z FROM input", vec!["email"]),
        ];
        for (sql, want) in cases {
            let df = ctx.sql(sql).await.unwrap();
            let mut problems = Vec::new();
            let plan = plan(&spec, &df, &[], &mut problems);
            assert!(problems.is_empty(), "{sql}: {problems:?}");
            // Intermediate columns (`count(input.email)`) are marked too.
            let got: Vec<&str> = plan.sensitive.keys().map(String::as_str).collect();
            for name in &want {
                assert!(got.contains(name), "{sql}: {got:?}");
            }
            for name in ["x", "z"] {
                assert!(!got.contains(&name), "{sql}: {got:?}");
            }
        }
    }
}
