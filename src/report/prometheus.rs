//! A run's metrics for Prometheus (`[monitor] pushgateway` and `textfile`): the text
//! exposition format 0.0.4, pushed to a Pushgateway or written for node_exporter's textfile
//! collector.
//!
//! Every metric is a gauge: each describes one run (the last one), not a count that grows
//! across runs, so none is a `_total` counter. Every sample carries the batchscore job's name
//! as its `job` label: the Pushgateway sets the same value from the grouping key, and in a
//! textfile it keeps two jobs' files on one machine apart.
//!
//! A committed run replaces its whole group (`PUT`), `batchscore_last_success_timestamp_seconds`
//! included; a failed run only replaces its failure metrics (`POST`), so the last good run's
//! timestamp and figures stay there for an alert on staleness.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::RunMetrics;

/// The exposition format's content type, as the Pushgateway and node_exporter read it.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// How long one push may take before it gives up.
const PUSH_TIMEOUT: Duration = Duration::from_secs(10);

/// How much of a refusing Pushgateway's answer an error quotes, in characters.
const BODY_QUOTE_CHARS: usize = 200;

/// One extra sample for an exposition: drift (`batchscore_psi{column="…"}`), alert states
/// (`batchscore_alert_firing{rule="…",severity="…"}`), a model version. Samples with the same
/// `name` form one gauge family; the first one's `help` is the family's.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The metric name (`batchscore_…`); characters Prometheus does not allow become `_`.
    pub name: String,
    /// The family's `# HELP` text.
    pub help: String,
    /// Label names and values, in order; values are escaped when rendered. The `job` label
    /// is always the job's name, so one given here is ignored.
    pub labels: Vec<(String, String)>,
    /// The value; NaN and ±infinity are rendered as `NaN`, `+Inf` and `-Inf`.
    pub value: f64,
}

/// Why metrics could not be pushed or written. A caller reports it as a warning: the run's
/// outcome does not depend on its monitoring.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// The request could not be made or got no answer in time.
    #[error("pushing metrics to {url}: {detail}")]
    Http {
        url: String,
        /// The error and its causes (`error sending request: … Connection refused`).
        detail: String,
        #[source]
        source: reqwest::Error,
    },
    /// The Pushgateway answered with an error status.
    #[error("pushing metrics to {url}: the Pushgateway answered {status}: {body}")]
    Status {
        url: String,
        status: reqwest::StatusCode,
        /// The first 200 characters of the answer.
        body: String,
    },
    /// The textfile (or its temporary file, or its folder) could not be written.
    #[error("writing metrics to {}: {source}", path.display())]
    Textfile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The exposition of a committed run (exit 0, or 4 with alerts): its row counts, times,
/// output, model and `batchscore_last_success_timestamp_seconds` (now, the commit time),
/// followed by `extra`.
pub fn success_exposition(m: &RunMetrics, extra: &[Sample]) -> String {
    success_exposition_at(m, extra, unix_now())
}

/// The exposition of a failed run: `batchscore_last_failure_timestamp_seconds` (`at_unix`),
/// `batchscore_last_run_status` 0 and `batchscore_last_exit_code`, and nothing else, so that
/// pushing it with `POST` leaves the last good run's metrics as they were.
pub fn failure_exposition(job: &str, exit_code: i32, at_unix: f64) -> String {
    let mut e = Exposition::new(job);
    e.add(
        "batchscore_last_failure_timestamp_seconds",
        "When the job's last failed run ended, in seconds since the Unix epoch.",
        &[],
        at_unix,
    );
    e.add(LAST_RUN_STATUS, LAST_RUN_STATUS_HELP, &[], 0.0);
    e.add(
        "batchscore_last_exit_code",
        "The exit code of the job's last failed run.",
        &[],
        f64::from(exit_code),
    );
    e.render()
}

/// Seconds since the Unix epoch, with their fraction.
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

const LAST_RUN_STATUS: &str = "batchscore_last_run_status";
const LAST_RUN_STATUS_HELP: &str = "Whether the job's last run committed: 1, or 0 if it failed.";

/// [`success_exposition`] with the commit time given.
fn success_exposition_at(m: &RunMetrics, extra: &[Sample], at_unix: f64) -> String {
    let mut e = Exposition::new(&m.job_name);
    add_rows(&mut e, m);
    e.add(
        "batchscore_wall_seconds",
        "Elapsed time of the whole run in seconds.",
        &[],
        m.wall_seconds,
    );
    e.add(
        "batchscore_rows_per_second",
        "Rows scored per second of wall time.",
        &[],
        m.rows_per_second,
    );
    add_times(&mut e, m);
    add_output(&mut e, m);
    // The model as run; `version` and `name` when it came from a registry. A later model
    // field can come as an extra sample of this family.
    let mut model: Vec<(&str, &str)> = vec![("sha256", m.model.sha256.as_str())];
    if let Some(r) = &m.model.registered {
        model.extend([("name", r.name.as_str()), ("version", r.version.as_str())]);
    }
    e.add(
        "batchscore_model_info",
        "The model the run scored with (always 1).",
        &model,
        1.0,
    );
    e.add(
        "batchscore_last_success_timestamp_seconds",
        "When the job's last committed run committed, in seconds since the Unix epoch.",
        &[],
        at_unix,
    );
    e.add(LAST_RUN_STATUS, LAST_RUN_STATUS_HELP, &[], 1.0);
    // No run id anywhere: a label that is new on every run would make a new series each time.
    for s in extra {
        e.add_sample(s);
    }
    e.render()
}

/// `batchscore_rows{kind}`. Rejected rows by reason are left out on purpose: a reason is
/// free text (it quotes values and errors), so as a label it would make series without bound.
fn add_rows(e: &mut Exposition, m: &RunMetrics) {
    const HELP: &str = "Rows of the run: read from the input, selected by the query, scored, \
        rejected (unscorable or malformed) and written.";
    let r = &m.rows;
    if let Some(read) = r.read {
        e.add("batchscore_rows", HELP, &[("kind", "read")], read as f64);
    }
    for (kind, n) in [
        ("selected", r.selected),
        ("scored", r.scored),
        ("rejected", r.rejected),
        ("written", r.written),
    ] {
        e.add("batchscore_rows", HELP, &[("kind", kind)], n as f64);
    }
}

/// Stage times and batch latencies.
fn add_times(e: &mut Exposition, m: &RunMetrics) {
    const STAGES: &str = "Seconds per stage, summed over the workers (commit: wall time).";
    let s = &m.stage_seconds;
    for (stage, v) in [
        ("read", s.read),
        ("features", s.features),
        ("inference", s.inference),
        ("write", s.write),
        ("commit", s.commit),
    ] {
        e.add("batchscore_stage_seconds", STAGES, &[("stage", stage)], v);
    }
    // Nearest-rank quantiles of the run's batches as a plain gauge family, not a summary: a
    // summary would want a `_sum` and `_count` too and says nothing more for one run.
    const LATENCY: &str = "Seconds to score one batch (features and inference), nearest-rank \
        quantiles over the run's batches; quantile 1 is the slowest.";
    let l = &m.batch_latency_seconds;
    for (q, v) in [
        ("0.5", l.p50),
        ("0.95", l.p95),
        ("0.99", l.p99),
        ("1", l.max),
    ] {
        e.add(
            "batchscore_batch_latency_seconds",
            LATENCY,
            &[("quantile", q)],
            v,
        );
    }
}

/// What the run wrote and how.
fn add_output(e: &mut Exposition, m: &RunMetrics) {
    for (name, help, v) in [
        (
            "batchscore_batches",
            "Batches the run scored.",
            m.batches as f64,
        ),
        (
            "batchscore_output_bytes",
            "Bytes of the output files the run wrote.",
            m.output_bytes as f64,
        ),
        (
            "batchscore_output_files",
            "Output files the run wrote.",
            m.output_files as f64,
        ),
        (
            "batchscore_workers",
            "Scoring workers the run used.",
            m.workers as f64,
        ),
        (
            "batchscore_non_finite_outputs",
            "NaN or infinite values the model produced in float output columns.",
            m.non_finite_outputs as f64,
        ),
    ] {
        e.add(name, help, &[], v);
    }
}

/// Gauge families in the order they were first added, each with its samples.
struct Exposition {
    job: String,
    families: Vec<Family>,
}

struct Family {
    name: String,
    help: String,
    samples: Vec<(Vec<(String, String)>, f64)>,
}

impl Exposition {
    fn new(job: &str) -> Self {
        Self {
            job: job.to_string(),
            families: Vec::new(),
        }
    }

    fn add(&mut self, name: &str, help: &str, labels: &[(&str, &str)], value: f64) {
        let labels: Vec<(String, String)> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.push(name, help, labels, value);
    }

    fn add_sample(&mut self, s: &Sample) {
        self.push(&s.name, &s.help, s.labels.clone(), s.value);
    }

    fn push(&mut self, name: &str, help: &str, labels: Vec<(String, String)>, value: f64) {
        let name = sanitize(name, true);
        let mut all = vec![("job".to_string(), self.job.clone())];
        all.extend(
            labels
                .into_iter()
                .map(|(k, v)| (sanitize(&k, false), v))
                .filter(|(k, _)| k != "job"),
        );
        let family = match self.families.iter().position(|f| f.name == name) {
            Some(i) => &mut self.families[i],
            None => {
                self.families.push(Family {
                    name,
                    help: help.to_string(),
                    samples: Vec::new(),
                });
                let last = self.families.len() - 1;
                &mut self.families[last]
            }
        };
        // The same labels twice would be refused as a duplicate series: the last value wins.
        match family.samples.iter_mut().find(|(l, _)| *l == all) {
            Some(sample) => sample.1 = value,
            None => family.samples.push((all, value)),
        }
    }

    fn render(&self) -> String {
        let mut out = String::new();
        for f in &self.families {
            // Writing to a String cannot fail.
            let _ = writeln!(out, "# HELP {} {}", f.name, escape_help(&f.help));
            let _ = writeln!(out, "# TYPE {} gauge", f.name);
            for (labels, value) in &f.samples {
                let labels: Vec<String> = labels
                    .iter()
                    .map(|(k, v)| format!("{k}=\"{}\"", escape_label_value(v)))
                    .collect();
                let _ = writeln!(
                    out,
                    "{}{{{}}} {}",
                    f.name,
                    labels.join(","),
                    format_value(*value)
                );
            }
        }
        out
    }
}

/// A metric (`[a-zA-Z_:][a-zA-Z0-9_:]*`) or label (`[a-zA-Z_][a-zA-Z0-9_]*`) name with any
/// other character replaced by `_` (and `_` before a leading digit).
fn sanitize(name: &str, metric: bool) -> String {
    let mut out: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || (metric && c == ':') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

/// A label value as the format quotes it: backslash, double quote and newline escaped.
fn escape_label_value(v: &str) -> String {
    v.replace('\\', r"\\")
        .replace('"', r#"\""#)
        .replace('\n', r"\n")
}

/// A HELP text: backslash and newline escaped.
fn escape_help(v: &str) -> String {
    v.replace('\\', r"\\").replace('\n', r"\n")
}

/// A value as the format writes it: `NaN`, `+Inf`, `-Inf`, or the shortest decimal that
/// reads back as the same number (never an exponent).
fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_string()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_string()
    } else {
        v.to_string()
    }
}

/// Pushes an exposition to the Pushgateway at `url` under the grouping key `job` (and
/// `shard` for one shard of a sharded run): `replace` = true `PUT`s the whole group, false
/// `POST`s it, replacing only the metrics named in `body`. Gives up after 10 seconds.
pub async fn push(
    url: &str,
    job: &str,
    shard: Option<usize>,
    body: String,
    replace: bool,
) -> Result<(), PushError> {
    let target = group_url(url, job, shard);
    let http = |e: reqwest::Error| {
        let source = e.without_url();
        PushError::Http {
            url: target.clone(),
            detail: causes(&source),
            source,
        }
    };
    let client = reqwest::Client::builder()
        .timeout(PUSH_TIMEOUT)
        .build()
        .map_err(http)?;
    let request = if replace {
        client.put(&target)
    } else {
        client.post(&target)
    };
    let response = request
        .header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE)
        .body(body)
        .send()
        .await
        .map_err(http)?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let text = response.text().await.unwrap_or_default();
    Err(PushError::Status {
        url: target,
        status,
        body: text.trim().chars().take(BODY_QUOTE_CHARS).collect(),
    })
}

/// An error and its causes, joined by `: ` (reqwest's own message is only the outermost).
fn causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let c_text = c.to_string();
        if !text.contains(&c_text) {
            text = format!("{text}: {c_text}");
        }
        cause = c.source();
    }
    text
}

/// `{url}/metrics/job/{job}` (`/shard/{i}` after it for a shard).
fn group_url(url: &str, job: &str, shard: Option<usize>) -> String {
    let mut out = format!(
        "{}/metrics/{}",
        url.trim_end_matches('/'),
        path_label("job", job)
    );
    if let Some(i) = shard {
        out.push('/');
        out.push_str(&path_label("shard", &i.to_string()));
    }
    out
}

/// A grouping label as URL path segments, `name/value`. A value that is not plain
/// (unreserved characters only, and not `.` or `..`, which a server may resolve as a path)
/// goes in the Pushgateway's base64 form, `name@base64/<value in URL-safe base64>`: a `/`
/// percent-encoded would still split the path, so base64 is the one form that carries any
/// value. An empty value is `=` there, as the Pushgateway's README says.
fn path_label(name: &str, value: &str) -> String {
    let plain = !value.is_empty()
        && value != "."
        && value != ".."
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~'));
    if plain {
        format!("{name}/{value}")
    } else if value.is_empty() {
        format!("{name}@base64/=")
    } else {
        format!("{name}@base64/{}", base64_url(value.as_bytes()))
    }
}

/// Base64 with the URL and filename safe alphabet (RFC 4648 §5), without padding (the
/// Pushgateway ignores it).
fn base64_url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        // One input byte makes two characters, two make three, three make four.
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
        }
    }
    out
}

/// Writes an exposition to `path` for node_exporter's textfile collector, atomically: to a
/// temporary file in the same folder (`.<name>.<pid>.tmp`, which the collector ignores), synced,
/// then renamed over `path`. Creates the folder when it is missing.
pub fn write_textfile(path: &Path, body: &str) -> Result<(), PushError> {
    let err = |source| PushError::Textfile {
        path: path.to_path_buf(),
        source,
    };
    let name = path.file_name().ok_or_else(|| {
        err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a file name",
        ))
    })?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir).map_err(err)?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let written = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(body.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(err(e));
    }
    // The rename is durable once the folder is synced; a folder that cannot be opened to
    // sync (some file systems) still has the new file.
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};
    use std::sync::atomic::Ordering;

    use super::*;
    use crate::report::{ModelReport, RegisteredModel, RunFacts};
    use crate::score::ScoreStats;

    fn metrics() -> RunMetrics {
        let stats = ScoreStats::default();
        stats.rows_in.store(10, Ordering::Relaxed);
        stats.rows_scored.store(8, Ordering::Relaxed);
        stats.rejected.add(["null", "null"]);
        stats.batches.store(2, Ordering::Relaxed);
        stats.features_ns.store(250_000_000, Ordering::Relaxed);
        stats.inference_ns.store(500_000_000, Ordering::Relaxed);
        stats.non_finite_outputs.store(1, Ordering::Relaxed);
        stats.batch_latencies.lock().unwrap().extend([0.25, 0.5]);
        let facts = RunFacts {
            run_id: "r".into(),
            job_name: "daily \"churn\"".into(),
            started_at: "2026-12-02T00:00:00.000Z".into(),
            wall_seconds: 2.0,
            rows_read: Some(12),
            rows_written: 8,
            pull_seconds: 1.0,
            write_seconds: 0.125,
            workers: 2,
            batch_size: 5,
            inference_batch_size: 5,
            rows_reordered: false,
            tree_engine: None,
            text_max_length: None,
            device: "cpu".into(),
            memory: None,
            model: ModelReport {
                uri: "m.onnx".into(),
                sha256: "00ff".into(),
                inputs: vec![],
                outputs: vec![],
                onnxruntime_library: None,
                registered: Some(RegisteredModel {
                    registry: "models/".into(),
                    name: "churn".into(),
                    version: "3".into(),
                    alias: None,
                }),
            },
            output_files: 1,
            output_bytes: 100,
        };
        let mut m = RunMetrics::new(facts, &stats);
        m.stage_seconds.commit = 0.0625;
        m
    }

    #[test]
    fn a_committed_runs_exposition() {
        let extra = [
            Sample {
                name: "batchscore_psi".into(),
                help: "Population stability index against the baseline.".into(),
                labels: vec![("column".into(), "age".into())],
                value: 0.03125,
            },
            Sample {
                name: "batchscore_psi".into(),
                help: "ignored: the family's first help stays".into(),
                labels: vec![("column".into(), "income".into())],
                value: f64::NAN,
            },
        ];
        let text = success_exposition_at(&metrics(), &extra, 1_796_169_600.25);
        let expected = r#"# HELP batchscore_rows Rows of the run: read from the input, selected by the query, scored, rejected (unscorable or malformed) and written.
# TYPE batchscore_rows gauge
batchscore_rows{job="daily \"churn\"",kind="read"} 12
batchscore_rows{job="daily \"churn\"",kind="selected"} 10
batchscore_rows{job="daily \"churn\"",kind="scored"} 8
batchscore_rows{job="daily \"churn\"",kind="rejected"} 2
batchscore_rows{job="daily \"churn\"",kind="written"} 8
# HELP batchscore_wall_seconds Elapsed time of the whole run in seconds.
# TYPE batchscore_wall_seconds gauge
batchscore_wall_seconds{job="daily \"churn\""} 2
# HELP batchscore_rows_per_second Rows scored per second of wall time.
# TYPE batchscore_rows_per_second gauge
batchscore_rows_per_second{job="daily \"churn\""} 4
# HELP batchscore_stage_seconds Seconds per stage, summed over the workers (commit: wall time).
# TYPE batchscore_stage_seconds gauge
batchscore_stage_seconds{job="daily \"churn\"",stage="read"} 0.25
batchscore_stage_seconds{job="daily \"churn\"",stage="features"} 0.25
batchscore_stage_seconds{job="daily \"churn\"",stage="inference"} 0.5
batchscore_stage_seconds{job="daily \"churn\"",stage="write"} 0.125
batchscore_stage_seconds{job="daily \"churn\"",stage="commit"} 0.0625
# HELP batchscore_batch_latency_seconds Seconds to score one batch (features and inference), nearest-rank quantiles over the run's batches; quantile 1 is the slowest.
# TYPE batchscore_batch_latency_seconds gauge
batchscore_batch_latency_seconds{job="daily \"churn\"",quantile="0.5"} 0.25
batchscore_batch_latency_seconds{job="daily \"churn\"",quantile="0.95"} 0.5
batchscore_batch_latency_seconds{job="daily \"churn\"",quantile="0.99"} 0.5
batchscore_batch_latency_seconds{job="daily \"churn\"",quantile="1"} 0.5
# HELP batchscore_batches Batches the run scored.
# TYPE batchscore_batches gauge
batchscore_batches{job="daily \"churn\""} 2
# HELP batchscore_output_bytes Bytes of the output files the run wrote.
# TYPE batchscore_output_bytes gauge
batchscore_output_bytes{job="daily \"churn\""} 100
# HELP batchscore_output_files Output files the run wrote.
# TYPE batchscore_output_files gauge
batchscore_output_files{job="daily \"churn\""} 1
# HELP batchscore_workers Scoring workers the run used.
# TYPE batchscore_workers gauge
batchscore_workers{job="daily \"churn\""} 2
# HELP batchscore_non_finite_outputs NaN or infinite values the model produced in float output columns.
# TYPE batchscore_non_finite_outputs gauge
batchscore_non_finite_outputs{job="daily \"churn\""} 1
# HELP batchscore_model_info The model the run scored with (always 1).
# TYPE batchscore_model_info gauge
batchscore_model_info{job="daily \"churn\"",sha256="00ff",name="churn",version="3"} 1
# HELP batchscore_last_success_timestamp_seconds When the job's last committed run committed, in seconds since the Unix epoch.
# TYPE batchscore_last_success_timestamp_seconds gauge
batchscore_last_success_timestamp_seconds{job="daily \"churn\""} 1796169600.25
# HELP batchscore_last_run_status Whether the job's last run committed: 1, or 0 if it failed.
# TYPE batchscore_last_run_status gauge
batchscore_last_run_status{job="daily \"churn\""} 1
# HELP batchscore_psi Population stability index against the baseline.
# TYPE batchscore_psi gauge
batchscore_psi{job="daily \"churn\"",column="age"} 0.03125
batchscore_psi{job="daily \"churn\"",column="income"} NaN
"#;
        assert_eq!(text, expected);
        check_exposition(&text).unwrap();
    }

    #[test]
    fn without_rows_read_there_is_no_read_kind_and_the_commit_time_is_now() {
        let mut m = metrics();
        m.rows.read = None;
        let before = unix_now();
        let text = success_exposition(&m, &[]);
        let samples = check_exposition(&text).unwrap();
        assert!(
            !samples
                .iter()
                .any(|s| s.labels.contains(&kv("kind", "read")))
        );
        let at = samples
            .iter()
            .find(|s| s.name == "batchscore_last_success_timestamp_seconds")
            .unwrap()
            .value;
        assert!(
            at >= before && at <= unix_now() && at.fract() != 0.0,
            "{at}"
        );
    }

    #[test]
    fn a_failed_runs_exposition_has_only_its_failure_metrics() {
        let text = failure_exposition("nightly", 3, 1_796_169_600.5);
        assert_eq!(
            text,
            r#"# HELP batchscore_last_failure_timestamp_seconds When the job's last failed run ended, in seconds since the Unix epoch.
# TYPE batchscore_last_failure_timestamp_seconds gauge
batchscore_last_failure_timestamp_seconds{job="nightly"} 1796169600.5
# HELP batchscore_last_run_status Whether the job's last run committed: 1, or 0 if it failed.
# TYPE batchscore_last_run_status gauge
batchscore_last_run_status{job="nightly"} 0
# HELP batchscore_last_exit_code The exit code of the job's last failed run.
# TYPE batchscore_last_exit_code gauge
batchscore_last_exit_code{job="nightly"} 3
"#
        );
        check_exposition(&text).unwrap();
    }

    #[test]
    fn label_values_help_names_and_odd_values_are_escaped() {
        let extra = [
            Sample {
                name: "batchscore_alert_firing".into(),
                help: "Alert \\ state\nper rule.".into(),
                labels: vec![
                    ("rule".into(), "psi(\"a\\b\") >\n0.2".into()),
                    ("severity".into(), "page".into()),
                    ("job".into(), "ignored".into()),
                ],
                value: f64::INFINITY,
            },
            Sample {
                name: "batchscore_psi-x".into(),
                help: "h".into(),
                labels: vec![("1col.umn".into(), "".into())],
                value: f64::NEG_INFINITY,
            },
        ];
        let text = success_exposition_at(&metrics(), &extra, 0.0);
        let tail: Vec<&str> = text.lines().rev().take(6).collect();
        assert_eq!(
            tail,
            [
                r#"batchscore_psi_x{job="daily \"churn\"",_1col_umn=""} -Inf"#,
                "# TYPE batchscore_psi_x gauge",
                "# HELP batchscore_psi_x h",
                r#"batchscore_alert_firing{job="daily \"churn\"",rule="psi(\"a\\b\") >\n0.2",severity="page"} +Inf"#,
                "# TYPE batchscore_alert_firing gauge",
                r"# HELP batchscore_alert_firing Alert \\ state\nper rule.",
            ]
        );
        let samples = check_exposition(&text).unwrap();
        let alert = samples
            .iter()
            .find(|s| s.name == "batchscore_alert_firing")
            .unwrap();
        assert_eq!(alert.labels[1], kv("rule", "psi(\"a\\b\") >\n0.2"));
        assert_eq!(alert.value, f64::INFINITY);
    }

    #[test]
    fn grouping_keys_in_the_url() {
        let base = "http://127.0.0.1:9091/";
        assert_eq!(
            group_url(base, "nightly_churn-v2.1", None),
            "http://127.0.0.1:9091/metrics/job/nightly_churn-v2.1"
        );
        assert_eq!(
            group_url("http://pg/prefix", "unit/test", Some(1)),
            "http://pg/prefix/metrics/job@base64/dW5pdC90ZXN0/shard/1"
        );
        assert_eq!(
            group_url("http://pg", "job name", Some(0)),
            "http://pg/metrics/job@base64/am9iIG5hbWU/shard/0"
        );
        assert_eq!(
            group_url("http://pg", "..", None),
            "http://pg/metrics/job@base64/Li4"
        );
        assert_eq!(
            group_url("http://pg", "", None),
            "http://pg/metrics/job@base64/="
        );
        // Python's base64.urlsafe_b64encode, padding stripped.
        for (raw, encoded) in [
            (&b"a"[..], "YQ"),
            (b"ab", "YWI"),
            (b"abc", "YWJj"),
            ("ü?>".as_bytes(), "w7w_Pg"),
            (&[0xfb, 0xff, 0xbf], "-_-_"),
        ] {
            assert_eq!(base64_url(raw), encoded);
        }
    }

    #[test]
    fn a_textfile_is_replaced_whole_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("textfile/nightly.prom");
        write_textfile(&path, "a 1\n").unwrap();
        write_textfile(&path, &failure_exposition("nightly", 1, 2.0)).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            failure_exposition("nightly", 1, 2.0)
        );
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["nightly.prom"]);
        // A folder that is a file: the error names the path.
        let err = write_textfile(&path.join("x.prom"), "")
            .unwrap_err()
            .to_string();
        assert!(err.contains("nightly.prom/x.prom"), "{err}");
    }

    /// A real Pushgateway (scripts/test starts one): a failure pushed after a success keeps
    /// the success's timestamp and figures, and the grouping key's labels are on the series.
    #[tokio::test]
    async fn a_failure_keeps_the_last_success_in_a_real_pushgateway() {
        let url = std::env::var("BATCHSCORE_TEST_PUSHGATEWAY").expect(
            "BATCHSCORE_TEST_PUSHGATEWAY is not set: run the tests with scripts/test, which starts a Pushgateway",
        );
        let client = reqwest::Client::new();
        let group = group_url(&url, "unit/test", Some(1));
        client.delete(&group).send().await.unwrap();
        let mut m = metrics();
        m.job_name = "unit/test".into();
        let success = success_exposition_at(&m, &[], 1_796_169_600.25);
        push(&url, "unit/test", Some(1), success, true)
            .await
            .unwrap();
        let failure = failure_exposition("unit/test", 3, 1_796_173_200.5);
        push(&url, "unit/test", Some(1), failure, false)
            .await
            .unwrap();

        let scraped = client.get(format!("{url}/metrics")).send().await.unwrap();
        let scraped = scraped.text().await.unwrap();
        let samples = check_exposition(&scraped).unwrap();
        let ours = |name: &str| {
            samples
                .iter()
                .find(|s| {
                    s.name == name
                        && s.labels.contains(&kv("job", "unit/test"))
                        && s.labels.contains(&kv("shard", "1"))
                })
                .unwrap_or_else(|| panic!("no {name} for job unit/test, shard 1 in\n{scraped}"))
                .value
        };
        assert_eq!(
            ours("batchscore_last_success_timestamp_seconds"),
            1_796_169_600.25
        );
        assert_eq!(
            ours("batchscore_last_failure_timestamp_seconds"),
            1_796_173_200.5
        );
        assert_eq!(ours("batchscore_last_run_status"), 0.0);
        assert_eq!(ours("batchscore_last_exit_code"), 3.0);
        assert_eq!(ours("batchscore_wall_seconds"), 2.0);

        // A refused push says what the Pushgateway said.
        let bad = "batchscore_x{job=\"unit/test\"} not-a-number\n".to_string();
        let err = push(&url, "unit/test", Some(1), bad, true)
            .await
            .unwrap_err();
        assert!(matches!(err, PushError::Status { .. }), "{err}");
        assert!(err.to_string().contains(&group), "{err}");
        client.delete(&group).send().await.unwrap();
    }

    /// An unreachable Pushgateway is an error naming the URL, not a hang or a panic.
    #[tokio::test]
    async fn an_unreachable_pushgateway_is_an_error() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("http://127.0.0.1:{port}");
        let err = push(&url, "j", None, String::new(), true)
            .await
            .unwrap_err();
        assert!(matches!(err, PushError::Http { .. }), "{err}");
        assert!(err.to_string().contains("onnection refused"), "{err}");
        assert!(
            err.to_string().contains(&format!("{url}/metrics/job/j")),
            "{err}"
        );
    }

    fn kv(k: &str, v: &str) -> (String, String) {
        (k.to_string(), v.to_string())
    }

    #[derive(Debug)]
    struct Parsed {
        name: String,
        labels: Vec<(String, String)>,
        value: f64,
    }

    /// A small checker of the text format: every sample line is `name{labels} value`, and
    /// each family has one HELP and one TYPE line before its samples, which come together.
    fn check_exposition(text: &str) -> Result<Vec<Parsed>, String> {
        let (mut help, mut kind) = (HashSet::new(), HashMap::new());
        let (mut done, mut current) = (HashSet::new(), None::<String>);
        let mut samples = Vec::new();
        for line in text.lines().filter(|l| !l.is_empty()) {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let name = rest.split(' ').next().unwrap_or_default().to_string();
                if !help.insert(name.clone()) {
                    return Err(format!("a second HELP for {name}"));
                }
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, t) = rest.split_once(' ').ok_or(format!("bad TYPE: {line}"))?;
                if kind.insert(name.to_string(), t.to_string()).is_some() {
                    return Err(format!("a second TYPE for {name}"));
                }
            } else if line.starts_with('#') {
                continue;
            } else {
                let s = parse_sample(line)?;
                // A summary's or histogram's series carry suffixes of their family's name.
                let family = ["_sum", "_count", "_bucket"]
                    .iter()
                    .find_map(|x| s.name.strip_suffix(x).filter(|f| kind.contains_key(*f)))
                    .unwrap_or(&s.name)
                    .to_string();
                if !help.contains(&family) || !kind.contains_key(&family) {
                    return Err(format!("{family}: a sample before its HELP and TYPE"));
                }
                if current.as_ref() != Some(&family) {
                    if !done.insert(family.clone()) {
                        return Err(format!("{family}: samples apart from each other"));
                    }
                    current = Some(family);
                }
                samples.push(s);
            }
        }
        Ok(samples)
    }

    fn parse_sample(line: &str) -> Result<Parsed, String> {
        let bad = || format!("not `name{{labels}} value`: {line}");
        let name_end = line.find(['{', ' ']).ok_or_else(bad)?;
        let name = &line[..name_end];
        let valid_name = name.chars().enumerate().all(|(i, c)| {
            c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit())
        });
        if name.is_empty() || !valid_name {
            return Err(bad());
        }
        let mut rest = &line[name_end..];
        let mut labels = Vec::new();
        if let Some(inner) = rest.strip_prefix('{') {
            rest = inner;
            while !rest.starts_with('}') {
                let (k, after) = rest.split_once("=\"").ok_or_else(bad)?;
                let (mut v, mut chars) = (String::new(), after.char_indices());
                let end = loop {
                    match chars.next().ok_or_else(bad)? {
                        (i, '"') => break i,
                        (_, '\\') => v.push(match chars.next().ok_or_else(bad)?.1 {
                            'n' => '\n',
                            c @ ('\\' | '"') => c,
                            _ => return Err(bad()),
                        }),
                        (_, c) => v.push(c),
                    }
                };
                labels.push((k.to_string(), v));
                rest = &after[end + 1..];
                rest = rest.strip_prefix(',').unwrap_or(rest);
            }
            rest = &rest[1..];
        }
        let value = rest.strip_prefix(' ').ok_or_else(bad)?;
        let value = match value {
            "NaN" => f64::NAN,
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().map_err(|_| bad())?,
        };
        Ok(Parsed {
            name: name.to_string(),
            labels,
            value,
        })
    }
}
