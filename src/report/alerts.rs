//! Alert rules (`[[monitor.alerts]]`) checked against a finished run's metrics.
//!
//! A rule whose metric has no value in this run (drift without a baseline) does not fire; its
//! state says so, with no value.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::RunMetrics;
use crate::spec::AlertSpec;
use crate::spec::monitor::Rule;

/// A rule's outcome, as `_metrics.json` lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AlertState {
    pub rule: String,
    pub severity: String,
    /// The metric's value in this run; none when the run has no such value (drift without
    /// a baseline).
    pub value: Option<f64>,
    /// Whether the rule holds: a breach.
    pub firing: bool,
}

/// Every rule's state over `m`.
pub fn evaluate(alerts: &[AlertSpec], m: &RunMetrics) -> Vec<AlertState> {
    alerts
        .iter()
        .map(|a| {
            // Rules were parsed when the spec loaded; one that cannot be is never firing.
            let rule = Rule::parse(&a.rule).ok();
            let value = rule.as_ref().and_then(|r| value_of(m, r));
            AlertState {
                rule: a.rule.clone(),
                severity: a.severity.clone(),
                value,
                firing: matches!((&rule, value), (Some(r), Some(v)) if r.op.holds(v, r.threshold)),
            }
        })
        .collect()
}

/// The value a rule's metric has in `m`.
pub fn value_of(m: &RunMetrics, rule: &Rule) -> Option<f64> {
    if let Some(column) = &rule.column {
        return column_value(m, &rule.metric, column);
    }
    let considered = m.rows.selected + m.rows.malformed;
    let l = &m.batch_latency_seconds;
    let s = &m.stage_seconds;
    Some(match rule.metric.as_str() {
        "rows.read" => return m.rows.read.map(|n| n as f64),
        "rows.selected" => m.rows.selected as f64,
        "rows.scored" => m.rows.scored as f64,
        "rows.rejected" => m.rows.rejected as f64,
        "rows.written" => m.rows.written as f64,
        "rows.rejected_rate" if considered == 0 => 0.0,
        "rows.rejected_rate" => m.rows.rejected as f64 / considered as f64,
        "rows_per_second" => m.rows_per_second,
        "wall_seconds" => m.wall_seconds,
        "batches" => m.batches as f64,
        "output_files" => m.output_files as f64,
        "output_bytes" => m.output_bytes as f64,
        "non_finite_outputs" => m.non_finite_outputs as f64,
        // A model without [tokenizer] has no text counts: such a rule never fires.
        "text.truncated" => return m.text.as_ref().map(|t| t.truncated as f64),
        "text.truncated_rate" => {
            return m
                .text
                .as_ref()
                .map(|t| t.truncated as f64 / t.texts.max(1) as f64);
        }
        "stage_seconds.read" => s.read,
        "stage_seconds.features" => s.features,
        "stage_seconds.inference" => s.inference,
        "stage_seconds.write" => s.write,
        "stage_seconds.commit" => s.commit,
        "batch_latency_seconds.p50" => l.p50,
        "batch_latency_seconds.p95" => l.p95,
        "batch_latency_seconds.p99" => l.p99,
        "batch_latency_seconds.max" => l.max,
        _ => return None,
    })
}

/// A per-column metric: from the column's distribution, or its drift.
fn column_value(m: &RunMetrics, metric: &str, column: &str) -> Option<f64> {
    let d = m.distributions.get(column);
    match metric {
        "psi" => m.drift.as_ref()?.columns.get(column).map(|d| d.psi),
        "mean_shift" => m.drift.as_ref()?.columns.get(column)?.mean_shift,
        "mean" => d?.mean,
        "std" => d?.std,
        "null_rate" => {
            let d = d?;
            let n = d.count + d.nulls;
            Some(if n == 0 {
                0.0
            } else {
                d.nulls as f64 / n as f64
            })
        }
        _ => None,
    }
}
