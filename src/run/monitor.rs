//! Where a run's metrics go besides `_metrics.json`: a Prometheus Pushgateway and a
//! node_exporter textfile (`[monitor] pushgateway`, `textfile`).
//!
//! A committed run (exit 0, or 4 with alerts) replaces its whole group (`PUT`), with
//! `batchscore_last_success_timestamp_seconds`, the drift figures and every alert's state; a
//! failed run sends only its failure metrics (`POST`), so the last good run's timestamp
//! survives. A shard pushes its own figures under `shard`; the shard that commits also pushes
//! the whole run's under the job alone. A push or a write that fails is a warning, never a
//! failed run.

use crate::report::RunMetrics;
use crate::report::prometheus::{self, Sample};
use crate::spec::MonitorSpec;

/// Families a failure writes; a textfile keeps every other line of the last success.
const FAILURE_FAMILIES: [&str; 3] = [
    "batchscore_last_failure_timestamp_seconds",
    "batchscore_last_run_status",
    "batchscore_last_exit_code",
];

/// The drift and alert figures, as samples beside the run's own.
fn extra_samples(m: &RunMetrics) -> Vec<Sample> {
    let mut extra = Vec::new();
    for (column, d) in m.drift.iter().flat_map(|d| &d.columns) {
        extra.push(Sample {
            name: "batchscore_psi".into(),
            help: "Population stability index of a column against the baseline run.".into(),
            labels: vec![("column".into(), column.clone())],
            value: d.psi,
        });
        if let Some(shift) = d.mean_shift {
            extra.push(Sample {
                name: "batchscore_mean_shift".into(),
                help:
                    "Shift of a column's mean from the baseline's, in baseline standard deviations."
                        .into(),
                labels: vec![("column".into(), column.clone())],
                value: shift,
            });
        }
    }
    for a in &m.alerts {
        extra.push(Sample {
            name: "batchscore_alert_firing".into(),
            help: "Whether an alert rule held when the run ended (1) or not (0).".into(),
            labels: vec![
                ("rule".into(), a.rule.clone()),
                ("severity".into(), a.severity.clone()),
            ],
            value: if a.firing { 1.0 } else { 0.0 },
        });
    }
    extra
}

/// After a commit (or a shard's finish): the run's metrics to the Pushgateway and textfile.
pub async fn publish_success(monitor: &MonitorSpec, m: &RunMetrics, shard: Option<usize>) {
    if monitor.pushgateway.is_none() && monitor.textfile.is_none() {
        return;
    }
    let body = prometheus::success_exposition(m, &extra_samples(m));
    if let Some(url) = &monitor.pushgateway
        && let Err(e) = prometheus::push(url, &m.job_name, shard, body.clone(), true).await
    {
        tracing::warn!(error = %e, "could not push the run's metrics; the run is not affected");
    }
    if let Some(path) = &monitor.textfile
        && shard.is_none()
        && let Err(e) = prometheus::write_textfile(std::path::Path::new(path), &body)
    {
        tracing::warn!(error = %e, "could not write the metrics textfile; the run is not affected");
    }
}

/// After a failed run: only its failure metrics, so the last success's stay.
pub async fn publish_failure(
    monitor: &MonitorSpec,
    job: &str,
    shard: Option<usize>,
    exit_code: i32,
) {
    let body = prometheus::failure_exposition(job, exit_code, prometheus::unix_now());
    if let Some(url) = &monitor.pushgateway
        && let Err(e) = prometheus::push(url, job, shard, body.clone(), false).await
    {
        tracing::warn!(error = %e, "could not push the failure's metrics");
    }
    if let Some(path) = &monitor.textfile {
        let path = std::path::Path::new(path);
        let kept = std::fs::read_to_string(path).unwrap_or_default();
        let merged = keep_all_but_failure(&kept) + &body;
        if let Err(e) = prometheus::write_textfile(path, &merged) {
            tracing::warn!(error = %e, "could not write the metrics textfile");
        }
    }
}

/// The lines of an exposition that are not of the failure's families (their samples, HELP
/// and TYPE), as the Pushgateway's POST keeps them.
fn keep_all_but_failure(text: &str) -> String {
    text.lines()
        .filter(|line| {
            let name = line
                .strip_prefix("# HELP ")
                .or_else(|| line.strip_prefix("# TYPE "))
                .unwrap_or(line);
            let name = name.split(['{', ' ']).next().unwrap_or("");
            !FAILURE_FAMILIES.contains(&name)
        })
        .map(|l| format!("{l}\n"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_keeps_the_last_success_lines_of_a_textfile() {
        let text = "# HELP batchscore_wall_seconds W.\n# TYPE batchscore_wall_seconds gauge\nbatchscore_wall_seconds{job=\"j\"} 2\n# HELP batchscore_last_run_status S.\n# TYPE batchscore_last_run_status gauge\nbatchscore_last_run_status{job=\"j\"} 1\n";
        assert_eq!(
            keep_all_but_failure(text),
            "# HELP batchscore_wall_seconds W.\n# TYPE batchscore_wall_seconds gauge\nbatchscore_wall_seconds{job=\"j\"} 2\n"
        );
    }
}
