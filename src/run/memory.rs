//! Fitting a run under a memory limit: the container's (cgroup v2 `memory.max`, or v1
//! `memory.limit_in_bytes`, the smallest along the cgroup's ancestors) or `[run]
//! memory_limit`, whichever is smaller.
//!
//! A pod that is killed for memory is retried into the same death, so the run plans its
//! layout to fit instead: workers and rows per batch. What a layout needs was measured on
//! the benchmark's 2M-row workload (28 float64 features; row groups of 9 and 36 MiB; peak
//! anonymous memory from `/proc/PID/smaps_rollup`, and which cgroup limits a run survived):
//! about 20 MiB of heap for the process, plus per worker about 15 MiB, twice the largest row
//! group's compressed bytes (the Parquet reader holds a row group's column chunks while it
//! decodes them) and four times a batch's bytes (decoded columns, features, tensors,
//! outputs), plus the model once per session and once more. A cgroup counts the pages of the
//! binary and of ONNX Runtime too (80 MiB of RSS), but can drop and re-read them: a run whose
//! anonymous peak was 102 MiB survived a 110 MiB limit. The fit leaves 20 MiB for the code
//! that runs and plans to use 90% of the limit. Batch size costs little speed, workers a lot,
//! so the fit shrinks the batch first (to 1024 rows), then the workers; where even one
//! worker with 1024-row batches does not fit, the run is refused before any work.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

const MIB: u64 = 1 << 20;
/// What the process needs before any worker: its heap, and room for the code that runs.
const BASE: u64 = 40 * MIB;
/// A worker's own need besides its row group and batches.
const PER_WORKER: u64 = 15 * MIB;
/// Row group bytes held per worker, as a multiple of its compressed size.
const ROW_GROUP_FACTOR: f64 = 2.0;
/// Batch bytes held per worker, as a multiple of one batch.
const BATCH_FACTOR: f64 = 4.0;
/// The share of the limit a layout may plan to use; the rest is margin.
const USABLE: f64 = 0.9;
/// The smallest batch the fit goes down to.
const MIN_BATCH: usize = 1024;

/// A memory limit and where it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryLimit {
    pub bytes: u64,
    /// `[run] memory_limit`, or the cgroup file it was read from.
    pub source: String,
}

/// The container's memory limit, if it has one: this process's cgroup (from
/// `/proc/self/cgroup`) under `/sys/fs/cgroup`.
pub fn container_limit() -> Option<MemoryLimit> {
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    container_limit_in(&cgroups, Path::new("/sys/fs/cgroup"))
}

/// [`container_limit`] from the text of `/proc/self/cgroup` and the cgroup file system's
/// root: cgroup v1's memory controller when it has one (hybrid hosts have both), else v2.
pub fn container_limit_in(proc_cgroup: &str, root: &Path) -> Option<MemoryLimit> {
    let mut v2 = None;
    for line in proc_cgroup.lines() {
        let mut fields = line.splitn(3, ':');
        let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
        let path = path.trim_start_matches('/');
        if controllers.split(',').any(|c| c == "memory") {
            return smallest_limit(&root.join("memory"), path, "memory.limit_in_bytes");
        }
        if controllers.is_empty() && root.join("cgroup.controllers").exists() {
            v2 = Some(path.to_string());
        }
    }
    smallest_limit(root, &v2?, "memory.max")
}

/// The smallest `file` from the cgroup at `path` up to `root`; none when none limits.
fn smallest_limit(root: &Path, path: &str, file: &str) -> Option<MemoryLimit> {
    let mut dir: PathBuf = root.join(path);
    let mut best: Option<MemoryLimit> = None;
    loop {
        let limit_file = dir.join(file);
        if let Some(bytes) = std::fs::read_to_string(&limit_file)
            .ok()
            .and_then(|text| read_limit(&text))
            && best.as_ref().is_none_or(|b| bytes < b.bytes)
        {
            best = Some(MemoryLimit {
                bytes,
                source: limit_file.display().to_string(),
            });
        }
        if dir == root || !dir.pop() || !dir.starts_with(root) {
            return best;
        }
    }
}

/// A cgroup limit file's value: `max` or a number so large it means no limit give none.
fn read_limit(text: &str) -> Option<u64> {
    let bytes: u64 = text.trim().parse().ok()?;
    (bytes < 1 << 60).then_some(bytes)
}

/// What a run's input and model weigh, for the fit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Demand {
    pub model_bytes: u64,
    /// The largest unit's compressed bytes that a worker holds at once.
    pub unit_bytes: u64,
    /// Bytes per row of the columns read.
    pub row_bytes: u64,
}

/// Workers and rows per batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layout {
    pub workers: usize,
    pub batch_size: usize,
}

impl Demand {
    /// The peak bytes a layout is expected to need.
    pub fn need(&self, layout: Layout) -> u64 {
        let w = layout.workers as f64;
        let batch = (layout.batch_size as u64 * self.row_bytes) as f64;
        let per_worker = PER_WORKER as f64
            + ROW_GROUP_FACTOR * self.unit_bytes as f64
            + BATCH_FACTOR * batch
            + self.model_bytes as f64;
        BASE + self.model_bytes + (w * per_worker) as u64
    }

    /// The largest layout no bigger than `wanted` that fits under `limit`: the batch halved
    /// first (down to 1024 rows), then the workers; `None` when nothing does.
    pub fn fit(&self, wanted: Layout, limit: u64) -> Option<Layout> {
        let usable = (limit as f64 * USABLE) as u64;
        for workers in (1..=wanted.workers.max(1)).rev() {
            let mut batch_size = wanted.batch_size.max(1);
            loop {
                let layout = Layout {
                    workers,
                    batch_size,
                };
                if self.need(layout) <= usable {
                    return Some(layout);
                }
                if batch_size <= MIN_BATCH {
                    break;
                }
                batch_size = (batch_size / 2).max(MIN_BATCH);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, rel: &str, text: &str) {
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn cgroup_v1_takes_the_smallest_limit_up_the_hierarchy() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        write(
            root,
            "memory/memory.limit_in_bytes",
            "9223372036854771712\n",
        );
        write(root, "memory/pods/memory.limit_in_bytes", "536870912\n");
        write(
            root,
            "memory/pods/p1/memory.limit_in_bytes",
            "9223372036854771712\n",
        );
        let proc = "9:name=systemd:/\n4:memory:/pods/p1\n0::/\n";
        let limit = container_limit_in(proc, root).unwrap();
        assert_eq!(limit.bytes, 512 << 20);
        assert!(
            limit.source.ends_with("memory/pods/memory.limit_in_bytes"),
            "{}",
            limit.source
        );
        // No limit anywhere: none.
        write(
            root,
            "memory/pods/memory.limit_in_bytes",
            "9223372036854771712\n",
        );
        assert_eq!(container_limit_in(proc, root), None);
    }

    #[test]
    fn cgroup_v2_reads_memory_max() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        write(root, "cgroup.controllers", "cpu memory\n");
        write(root, "kubepods/pod1/memory.max", "209715200\n");
        write(root, "kubepods/memory.max", "max\n");
        let limit = container_limit_in("0::/kubepods/pod1\n", root).unwrap();
        assert_eq!(limit.bytes, 200 << 20);
        // A container's own namespace: its cgroup is the root.
        write(root, "memory.max", "104857600\n");
        assert_eq!(container_limit_in("0::/\n", root).unwrap().bytes, 100 << 20);
    }

    #[test]
    fn the_fit_shrinks_batches_before_workers_and_refuses_when_nothing_fits() {
        // The benchmark's GBDT input: 36 MiB row groups, 29 eight-byte columns.
        let demand = Demand {
            model_bytes: 450_000,
            unit_bytes: 36 * MIB,
            row_bytes: 232,
        };
        let wanted = Layout {
            workers: 2,
            batch_size: 32768,
        };
        let fit = |mib: u64| {
            demand
                .fit(wanted, mib << 20)
                .map(|l| (l.workers, l.batch_size))
        };
        assert_eq!(fit(4096), Some((2, 32768)));
        // Measured in cgroups: 2 workers with 32768-row batches are killed under 220 MiB and
        // live under 250; one worker with 4096 rows lives under 110.
        assert_eq!(fit(300), Some((2, 16384)), "the batch shrinks first");
        assert_eq!(fit(240), Some((1, 32768)), "then the workers");
        assert_eq!(fit(160), Some((1, 16384)));
        assert_eq!(fit(100), None);
        let small = demand.fit(wanted, 160 << 20).unwrap();
        assert!(demand.need(wanted) > demand.need(small));
    }
}
