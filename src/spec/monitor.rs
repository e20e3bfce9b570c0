//! `[monitor]`: the distributions and drift a run computes, its alert rules, and where its
//! metrics are pushed. A rule is `"<metric> <op> <number>"`; [`METRICS`] lists every metric
//! name a rule can use, and [`COLUMN_METRICS`] those taken per output or feature column
//! (`psi.churn_probability`).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::diagnostics::Problem;

/// Monitoring settings.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MonitorSpec {
    /// Whether `_metrics.json` gets the distribution of every output column and model input
    /// feature (count, nulls, mean, std, min, max, quantiles, a histogram; class counts for
    /// labels). Default: true.
    #[serde(default = "yes")]
    pub distributions: bool,
    /// What drift is measured against: `"previous"` (the output's last committed run: the
    /// one `_LATEST` names, or the `_metrics.json` a flat output is about to replace), a run
    /// id of the output's history, or the path or URL of a `_metrics.json`. Default: none,
    /// no drift.
    #[serde(default)]
    pub baseline: Option<String>,
    /// A Prometheus Pushgateway URL (`http://pushgateway:9091`) the run's metrics are pushed
    /// to, under the job's name as `job` (and `shard` for a shard). Default: none.
    #[serde(default)]
    pub pushgateway: Option<String>,
    /// A file node_exporter's textfile collector reads (`/var/lib/node_exporter/job.prom`),
    /// written atomically with the same metrics. Default: none.
    #[serde(default)]
    pub textfile: Option<String>,
    /// Alert rules checked when the run ends. Default: none.
    #[serde(default)]
    pub alerts: Vec<AlertSpec>,
}

impl Default for MonitorSpec {
    fn default() -> Self {
        Self {
            distributions: true,
            baseline: None,
            pushgateway: None,
            textfile: None,
            alerts: Vec::new(),
        }
    }
}

fn yes() -> bool {
    true
}

/// An alert rule: when it holds at the end of a run, the run is committed, the breach is
/// logged as an error and listed in `_metrics.json`, and the exit code is 4.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AlertSpec {
    /// `"<metric> <op> <number>"`, e.g. `"rows.rejected_rate > 0.001"`; op is one of `<`,
    /// `<=`, `>`, `>=`, `==`, `!=`. Required.
    pub rule: String,
    /// A word for whoever is paged (`"page"`, `"ticket"`). Default: "warning".
    #[serde(default = "default_severity")]
    pub severity: String,
}

fn default_severity() -> String {
    "warning".into()
}

/// The metrics a rule can name, each a number in `_metrics.json` (`rows.rejected_rate` is
/// rejected rows over the rows considered).
pub const METRICS: &[&str] = &[
    "rows.read",
    "rows.selected",
    "rows.scored",
    "rows.rejected",
    "rows.written",
    "rows.rejected_rate",
    "rows_per_second",
    "wall_seconds",
    "batches",
    "output_files",
    "output_bytes",
    "non_finite_outputs",
    "text.truncated",
    "text.truncated_rate",
    "stage_seconds.read",
    "stage_seconds.features",
    "stage_seconds.inference",
    "stage_seconds.write",
    "stage_seconds.commit",
    "batch_latency_seconds.p50",
    "batch_latency_seconds.p95",
    "batch_latency_seconds.p99",
    "batch_latency_seconds.max",
];

/// Metrics taken per column, named `<metric>.<column>`: an output column, or a model input
/// feature (its column's name, or `<input>[<i>]`).
pub const COLUMN_METRICS: &[&str] = &["psi", "mean_shift", "mean", "std", "null_rate"];

/// A comparison of a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
}

impl Op {
    pub fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            Self::Lt => value < threshold,
            Self::Le => value <= threshold,
            Self::Gt => value > threshold,
            Self::Ge => value >= threshold,
            Self::Eq => value == threshold,
            Self::Ne => value != threshold,
        }
    }
}

/// A parsed rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub metric: String,
    /// For a per-column metric: the column.
    pub column: Option<String>,
    pub op: Op,
    pub threshold: f64,
}

impl Rule {
    /// Reads `"<metric> <op> <number>"`; the error says what is wrong in words.
    pub fn parse(text: &str) -> Result<Self, String> {
        let ops = [
            ("<=", Op::Le),
            (">=", Op::Ge),
            ("==", Op::Eq),
            ("!=", Op::Ne),
            ("<", Op::Lt),
            (">", Op::Gt),
        ];
        let Some((at, token, op)) = ops
            .iter()
            .filter_map(|(t, op)| text.find(t).map(|at| (at, *t, *op)))
            .min_by_key(|(at, t, _)| (*at, std::cmp::Reverse(t.len())))
        else {
            return Err(
                "expected \"<metric> <op> <number>\" with op one of < <= > >= == !=".into(),
            );
        };
        let name = text[..at].trim();
        let number = text[at + token.len()..].trim();
        let threshold: f64 = number
            .replace('_', "")
            .parse()
            .map_err(|_| format!("{number:?} is not a number"))?;
        let (metric, column) = match name.split_once('.') {
            Some((m, c)) if COLUMN_METRICS.contains(&m) => (m.to_string(), Some(c.to_string())),
            _ if METRICS.contains(&name) => (name.to_string(), None),
            _ => {
                let near = crate::diagnostics::closest(name, METRICS.iter().copied())
                    .map(|s| format!(" (did you mean `{s}`?)"))
                    .unwrap_or_default();
                return Err(format!(
                    "unknown metric {name:?}{near}; the README's \"Alert rules\" lists them"
                ));
            }
        };
        Ok(Self {
            metric,
            column,
            op,
            threshold,
        })
    }
}

/// Problems of `[monitor]` that need no model or input.
pub(super) fn check(m: &MonitorSpec, p: &mut Vec<Problem>) {
    for (i, a) in m.alerts.iter().enumerate() {
        if let Err(e) = Rule::parse(&a.rule) {
            p.push(Problem::new(
                format!("monitor.alerts[{i}].rule"),
                format!("{:?}: {e}", a.rule),
            ));
        }
    }
    if let Some(url) = &m.pushgateway
        && !(url.starts_with("http://") || url.starts_with("https://"))
    {
        p.push(Problem::new(
            "monitor.pushgateway",
            format!("{url:?} is not an http:// or https:// URL"),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_read_as_written_and_unknown_metrics_are_named() {
        let r = Rule::parse("rows.scored < 1_000_000").unwrap();
        assert_eq!(
            (r.metric.as_str(), r.op, r.threshold),
            ("rows.scored", Op::Lt, 1e6)
        );
        let r = Rule::parse("psi.churn_probability>=0.25").unwrap();
        assert_eq!(r.column.as_deref(), Some("churn_probability"));
        assert_eq!(r.op, Op::Ge);
        let r = Rule::parse("psi.features[3] > 0.1").unwrap();
        assert_eq!(r.column.as_deref(), Some("features[3]"));
        let e = Rule::parse("rows.scorde < 5").unwrap_err();
        assert!(
            e.starts_with("unknown metric \"rows.scorde\" (did you mean `rows.scored`?)"),
            "{e}"
        );
        assert!(
            Rule::parse("wall_seconds > lots")
                .unwrap_err()
                .contains("not a number")
        );
        assert!(Rule::parse("wall_seconds").is_err());
        assert!(Op::Ne.holds(1.0, 2.0) && !Op::Le.holds(3.0, 2.0));
    }
}
