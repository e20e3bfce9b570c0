//! The baseline a run measures drift against (`[monitor] baseline`), read while planning:
//! `previous` (the output's last committed run), a run id of the output's history, or a
//! metrics file's path or URL.

use super::RunError;
use crate::diagnostics::Problem;
use crate::output::history::{History, RUN_PREFIX};
use crate::output::{METRICS_FILE, SUCCESS_FILE};
use crate::report::RunMetrics;
use crate::spec::{OutputLayout, OutputSpec};
use crate::storage::{Folder, StoreFactory};

/// A baseline run's metrics, and what it is called in `_metrics.json` (`run <id>`, or the
/// file's path or URL).
#[derive(Debug, Clone)]
pub struct Baseline {
    pub label: String,
    pub metrics: RunMetrics,
}

/// Reads the baseline `[monitor] baseline` names; `previous` with no run before is a warning
/// and no baseline, anything else not found is a problem under `monitor.baseline`.
pub async fn load(
    baseline: Option<&str>,
    output: &OutputSpec,
    stores: &StoreFactory,
    problems: &mut Vec<Problem>,
) -> Result<Option<Baseline>, RunError> {
    let Some(which) = baseline else {
        return Ok(None);
    };
    let found = match which {
        "previous" => previous(output, stores).await,
        id if !id.contains('/') && !id.ends_with(".json") => by_run_id(id, output, stores).await,
        file => read(file, stores).await.map(|m| {
            m.map(|metrics| Baseline {
                label: file.to_string(),
                metrics,
            })
        }),
    };
    match found {
        Ok(Some(b)) => Ok(Some(b)),
        Ok(None) if which == "previous" => {
            tracing::warn!(output = %output.uri, "[monitor] baseline = \"previous\": no run has committed this output yet, so no drift is computed");
            Ok(None)
        }
        Ok(None) => {
            problems.push(Problem::new(
                "monitor.baseline",
                format!("{which:?}: no such committed run or metrics file"),
            ));
            Ok(None)
        }
        Err(message) => {
            problems.push(Problem::new(
                "monitor.baseline",
                format!("{which:?}: {message}"),
            ));
            Ok(None)
        }
    }
}

/// The output's last committed run: `_LATEST`'s in a history, the flat output's own.
async fn previous(output: &OutputSpec, stores: &StoreFactory) -> Result<Option<Baseline>, String> {
    let run_id = match output.layout {
        OutputLayout::Flat => None,
        OutputLayout::Runs => {
            let history = History::open(&output.uri, stores).map_err(|e| e.to_string())?;
            match history.latest().await.map_err(|e| e.to_string())? {
                Some(l) => Some(l.run_id),
                None => return Ok(None),
            }
        }
    };
    let folder = match &run_id {
        Some(id) => format!("{}/{RUN_PREFIX}{id}", output.uri.trim_end_matches('/')),
        None => output.uri.clone(),
    };
    committed_metrics(&folder, stores).await
}

async fn by_run_id(
    id: &str,
    output: &OutputSpec,
    stores: &StoreFactory,
) -> Result<Option<Baseline>, String> {
    if output.layout != OutputLayout::Runs {
        return Err("a run id names a run of a history: it needs [output] layout = \"runs\" (or give the path of a _metrics.json)".into());
    }
    let folder = format!("{}/{RUN_PREFIX}{id}", output.uri.trim_end_matches('/'));
    committed_metrics(&folder, stores).await
}

/// The `_metrics.json` of a committed folder (one with `_SUCCESS`).
async fn committed_metrics(
    folder: &str,
    stores: &StoreFactory,
) -> Result<Option<Baseline>, String> {
    let f = Folder::open(folder, stores).map_err(|e| e.to_string())?;
    if f.get(SUCCESS_FILE)
        .await
        .map_err(|e| e.to_string())?
        .is_none()
    {
        return Ok(None);
    }
    let uri = f.uri_of(METRICS_FILE);
    Ok(read(&uri, stores).await?.map(|metrics| Baseline {
        label: format!("run {}", metrics.run_id),
        metrics,
    }))
}

/// A metrics file, local or in a store; none when absent.
async fn read(file: &str, stores: &StoreFactory) -> Result<Option<RunMetrics>, String> {
    let (dir, name) = file.rsplit_once('/').unwrap_or((".", file));
    let f = Folder::open(dir, stores).map_err(|e| e.to_string())?;
    let Some((bytes, _)) = f.get(name).await.map_err(|e| e.to_string())? else {
        return Ok(None);
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| format!("{file}: not a batchscore _metrics.json: {e}"))
}
