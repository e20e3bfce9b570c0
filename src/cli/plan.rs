//! `batchscore plan JOB`: the work units a run's input is cut into, with their rows, and how
//! they fall into shards. Planning checks the job as `validate` does; nothing is scored.

use std::path::Path;

use serde::Serialize;

use super::run::JobArgs;
use crate::input::WorkUnit;
use crate::input::units::{Shard, ShardPlan};
use crate::run::plan_job;

/// What `plan` reports (`--json` prints it as it is).
#[derive(Debug, Serialize)]
pub struct PlanReport {
    pub job: String,
    /// See [`crate::run::JobPlan::run_key`].
    pub run_key: String,
    pub units: Vec<UnitRow>,
    pub shards: Vec<Shard>,
}

/// A unit and the shard it falls in.
#[derive(Debug, Serialize)]
pub struct UnitRow {
    pub index: usize,
    pub shard: usize,
    #[serde(flatten)]
    pub unit: WorkUnit,
}

/// Plans the job and reports its units in `shards` shards.
pub async fn plan(
    job: &JobArgs,
    shards: usize,
    json: bool,
    ort_lib: Option<&Path>,
) -> anyhow::Result<String> {
    let plan = plan_job(job.load()?, ort_lib).await?;
    let shard_plan = ShardPlan::new(&plan.units, shards);
    let units = plan
        .units
        .iter()
        .enumerate()
        .map(|(index, unit)| UnitRow {
            index,
            shard: shard_plan.shard_of(index).unwrap_or_default(),
            unit: unit.clone(),
        })
        .collect();
    let report = PlanReport {
        job: plan.spec.spec.name.clone(),
        run_key: plan.run_key(),
        units,
        shards: shard_plan.shards,
    };
    Ok(if json {
        serde_json::to_string_pretty(&report)? + "\n"
    } else {
        describe(&report)
    })
}

/// The report as a table of units, then one line per shard.
pub fn describe(report: &PlanReport) -> String {
    let rows: Option<u64> = report.units.iter().map(|u| u.unit.rows).sum();
    let mut s = format!(
        "{}: {} work unit{}, {} rows, {} shard{}; run key {}\n{:>5}  {:>5}  {:>10}  {:>12}  file\n",
        report.job,
        report.units.len(),
        if report.units.len() == 1 { "" } else { "s" },
        rows.map_or("unknown".to_string(), |r| r.to_string()),
        report.shards.len(),
        if report.shards.len() == 1 { "" } else { "s" },
        report.run_key,
        "unit",
        "shard",
        "rows",
        "bytes"
    );
    for u in &report.units {
        let rows = u.unit.rows.map_or("-".to_string(), |r| r.to_string());
        let part = match (u.unit.row_group, u.unit.byte_range) {
            (Some(g), _) => format!(", row group {g}"),
            (None, Some(r)) => format!(
                ", bytes from {} ({} of {})",
                r.index as u64 * r.span,
                r.index + 1,
                r.count
            ),
            (None, None) => String::new(),
        };
        s.push_str(&format!(
            "{:>5}  {:>5}  {:>10}  {:>12}  {}{part}\n",
            u.index, u.shard, rows, u.unit.bytes, u.unit.file
        ));
    }
    for shard in &report.shards {
        let units = match shard.units.len() {
            0 => "no units".to_string(),
            1 => format!("unit {}", shard.units.start),
            n => format!("units {}-{} ({n})", shard.units.start, shard.units.end - 1),
        };
        let rows = shard.rows.map_or(String::new(), |r| format!(", {r} rows"));
        s.push_str(&format!(
            "shard {}: {units}{rows}, {} bytes\n",
            shard.index, shard.bytes
        ));
    }
    s
}
