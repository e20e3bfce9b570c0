//! `--shard auto`: which shard this process is, from the variables of the scheduler that
//! started it. batchscore has no scheduler of its own; these start N copies of a command and
//! tell each its index:
//!
//! | scheduler | index | count | run id |
//! |---|---|---|---|
//! | Kubernetes Indexed Job | `JOB_COMPLETION_INDEX` | none: `[run] shards` or `--shards` | `BATCHSCORE_RUN_ID` (the Job's name, from the downward API) |
//! | AWS Batch array job | `AWS_BATCH_JOB_ARRAY_INDEX` | `AWS_BATCH_JOB_ARRAY_SIZE` | `AWS_BATCH_JOB_ID` without its `:index` |
//! | Slurm job array | `SLURM_ARRAY_TASK_ID` − `SLURM_ARRAY_TASK_MIN`, or the task id itself when the job gives the count | `SLURM_ARRAY_TASK_COUNT`, or the job's | `SLURM_ARRAY_JOB_ID` |
//! | Google Cloud Batch | `BATCH_TASK_INDEX` | `BATCH_TASK_COUNT` | `BATCH_JOB_UID` |

use crate::input::ShardId;

/// What one scheduler's variables say.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    scheduler: &'static str,
    index: usize,
    count: Option<usize>,
    run_id: Option<String>,
}

/// The shard this process is, which scheduler said so, and the run id it gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AutoShard {
    pub shard: ShardId,
    pub scheduler: &'static str,
    pub run_id: Option<String>,
}

/// Why `--shard auto` cannot tell the shard (a refusal before any work).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--shard auto: {0}")]
pub struct AutoShardError(String);

/// The shard from the environment `var` reads; `shards` is `--shards N` or `[run] shards`.
pub fn detect(
    var: &dyn Fn(&str) -> Option<String>,
    shards: Option<usize>,
) -> Result<AutoShard, AutoShardError> {
    let fail = |m: String| AutoShardError(m);
    let seen = seen(var, shards).map_err(fail)?;
    let Some(first) = seen.first() else {
        return Err(fail("no scheduler's variables are set (JOB_COMPLETION_INDEX, AWS_BATCH_JOB_ARRAY_INDEX, SLURM_ARRAY_TASK_ID, BATCH_TASK_INDEX): give --shard I/N".into()));
    };
    if let Some(other) = seen
        .iter()
        .find(|s| s.index != first.index || s.count != first.count)
    {
        return Err(fail(format!(
            "{} says shard {} of {}, but {} says shard {} of {}",
            first.scheduler,
            first.index,
            show(first.count),
            other.scheduler,
            other.index,
            show(other.count)
        )));
    }
    let count = match (first.count, shards) {
        (Some(a), Some(b)) if a != b => {
            return Err(fail(format!(
                "{} runs {a} copies, but the job asks for {b} shards ([run] shards or --shards)",
                first.scheduler
            )));
        }
        (Some(n), _) | (None, Some(n)) => n,
        (None, None) => {
            return Err(fail(format!(
                "{} gives only the index: set [run] shards or --shards N",
                first.scheduler
            )));
        }
    };
    if count == 0 || first.index >= count {
        return Err(fail(format!(
            "{} says shard {} of {count}: the index must be less than the count",
            first.scheduler, first.index
        )));
    }
    Ok(AutoShard {
        shard: ShardId {
            index: first.index,
            count,
        },
        scheduler: first.scheduler,
        run_id: first.run_id.clone(),
    })
}

fn show(count: Option<usize>) -> String {
    count.map_or("an unknown count".into(), |n| n.to_string())
}

/// Every scheduler whose index variable is set, with what its variables say. `shards` is the
/// job's own count: with it, a Slurm array task's id is its shard, so that an array of some
/// of the indices (`sbatch --array=2`, rerunning one) is shards of the same run.
fn seen(var: &dyn Fn(&str) -> Option<String>, shards: Option<usize>) -> Result<Vec<Seen>, String> {
    let number = |name: &str| -> Result<Option<usize>, String> {
        match var(name) {
            None => Ok(None),
            Some(v) => v
                .trim()
                .parse()
                .map(Some)
                .map_err(|_| format!("{name}={v:?} is not a number")),
        }
    };
    let mut seen = Vec::new();
    if let Some(index) = number("JOB_COMPLETION_INDEX")? {
        seen.push(Seen {
            scheduler: "Kubernetes (JOB_COMPLETION_INDEX)",
            index,
            count: None,
            run_id: var("BATCHSCORE_RUN_ID"),
        });
    }
    if let Some(index) = number("AWS_BATCH_JOB_ARRAY_INDEX")? {
        seen.push(Seen {
            scheduler: "AWS Batch (AWS_BATCH_JOB_ARRAY_INDEX)",
            index,
            count: number("AWS_BATCH_JOB_ARRAY_SIZE")?,
            run_id: var("AWS_BATCH_JOB_ID")
                .map(|id| id.split(':').next().unwrap_or("").to_string()),
        });
    }
    if let Some(id) = number("SLURM_ARRAY_TASK_ID")? {
        let (index, count) = match shards {
            Some(_) => (id, None),
            None => {
                let min = number("SLURM_ARRAY_TASK_MIN")?.unwrap_or(0);
                let index = id.checked_sub(min).ok_or_else(|| {
                    format!("SLURM_ARRAY_TASK_ID={id} is below SLURM_ARRAY_TASK_MIN={min}")
                })?;
                (index, number("SLURM_ARRAY_TASK_COUNT")?)
            }
        };
        seen.push(Seen {
            scheduler: "Slurm (SLURM_ARRAY_TASK_ID)",
            index,
            count,
            run_id: var("SLURM_ARRAY_JOB_ID"),
        });
    }
    if let Some(index) = number("BATCH_TASK_INDEX")? {
        seen.push(Seen {
            scheduler: "Google Cloud Batch (BATCH_TASK_INDEX)",
            index,
            count: number("BATCH_TASK_COUNT")?,
            run_id: var("BATCH_JOB_UID"),
        });
    }
    Ok(seen)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        }
    }

    #[test]
    fn each_scheduler_gives_index_count_and_run_id() {
        let slurm = env(&[
            ("SLURM_ARRAY_TASK_ID", "7"),
            ("SLURM_ARRAY_TASK_MIN", "5"),
            ("SLURM_ARRAY_TASK_COUNT", "4"),
            ("SLURM_ARRAY_JOB_ID", "1234"),
        ]);
        let s = detect(&slurm, None).unwrap();
        assert_eq!((s.shard.index, s.shard.count), (2, 4));
        assert_eq!(s.run_id.as_deref(), Some("1234"));
        // `sbatch --array=2` reruns shard 2 of a job that says it has 4.
        let rerun = env(&[
            ("SLURM_ARRAY_TASK_ID", "2"),
            ("SLURM_ARRAY_TASK_MIN", "2"),
            ("SLURM_ARRAY_TASK_COUNT", "1"),
        ]);
        let s = detect(&rerun, Some(4)).unwrap();
        assert_eq!((s.shard.index, s.shard.count), (2, 4));
        assert!(
            detect(&rerun, Some(2))
                .unwrap_err()
                .to_string()
                .contains("says shard 2 of 2: the index must be less than the count")
        );
        let aws = env(&[
            ("AWS_BATCH_JOB_ARRAY_INDEX", "1"),
            ("AWS_BATCH_JOB_ARRAY_SIZE", "3"),
            ("AWS_BATCH_JOB_ID", "abc-123:1"),
        ]);
        let s = detect(&aws, Some(3)).unwrap();
        assert_eq!((s.shard.index, s.run_id.as_deref()), (1, Some("abc-123")));
        let gcb = env(&[("BATCH_TASK_INDEX", "0"), ("BATCH_TASK_COUNT", "2")]);
        assert_eq!(detect(&gcb, None).unwrap().shard.count, 2);
        let k8s = env(&[
            ("JOB_COMPLETION_INDEX", "3"),
            ("BATCHSCORE_RUN_ID", "nightly-x"),
        ]);
        let s = detect(&k8s, Some(4)).unwrap();
        assert_eq!((s.shard.index, s.shard.count), (3, 4));
        assert_eq!(s.run_id.as_deref(), Some("nightly-x"));
    }

    #[test]
    fn what_cannot_be_told_is_refused_saying_why() {
        let message =
            |pairs: &[(&str, &str)], shards| detect(&env(pairs), shards).unwrap_err().to_string();
        assert!(message(&[], None).contains("no scheduler's variables are set"));
        assert!(
            message(&[("JOB_COMPLETION_INDEX", "0")], None)
                .contains("gives only the index: set [run] shards")
        );
        assert!(
            message(&[("JOB_COMPLETION_INDEX", "4")], Some(4))
                .contains("the index must be less than the count")
        );
        assert!(
            message(
                &[("BATCH_TASK_INDEX", "0"), ("BATCH_TASK_COUNT", "2")],
                Some(3)
            )
            .contains("runs 2 copies, but the job asks for 3 shards")
        );
        let both = message(
            &[
                ("BATCH_TASK_INDEX", "0"),
                ("BATCH_TASK_COUNT", "2"),
                ("SLURM_ARRAY_TASK_ID", "1"),
                ("SLURM_ARRAY_TASK_COUNT", "2"),
            ],
            None,
        );
        assert!(both.contains("says shard 1 of 2, but"), "{both}");
        assert!(
            message(&[("SLURM_ARRAY_TASK_ID", "x")], None)
                .contains("SLURM_ARRAY_TASK_ID=\"x\" is not a number")
        );
    }
}
