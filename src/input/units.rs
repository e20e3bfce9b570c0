//! Work units: the pieces a run's input is cut into, so that shards of one run (on many
//! machines) and a resumed run agree on who scores what.
//!
//! A Parquet file gives one unit per row group, with its rows and compressed bytes from the
//! footer (read once, when the files are checked: `parquet::read_footers`). A
//! CSV file is one unit, weighed by its bytes (its rows are not known before it is read).
//! Units are in the order of the listing (path, then row group), which depends only on the
//! input's files; [`ShardPlan`] deals them to shards as contiguous runs balanced by weight
//! ([`shard_ranges`]): the same listing and shard count give the same shards, whichever
//! machine computes them.

use std::ops::Range;

use datafusion::datasource::listing::ListingTableUrl;
use object_store::ObjectMeta;
use serde::{Deserialize, Serialize};

use super::listing::file_name;

/// One piece of the input: a Parquet row group, or a whole CSV file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkUnit {
    /// The file as the user knows it: a path, or the object's URL.
    pub file: String,
    /// The Parquet row group; none for a CSV file (the whole file).
    pub row_group: Option<usize>,
    /// Rows, from the Parquet footer; none for CSV.
    pub rows: Option<u64>,
    /// The row group's compressed bytes, or the CSV file's size.
    pub bytes: u64,
    /// The file's path in its object store (what scans match files by).
    #[serde(skip)]
    pub location: String,
}

impl WorkUnit {
    /// What balancing weighs a unit by: its rows where the footer tells them, else bytes.
    pub fn weight(&self) -> u64 {
        self.rows.unwrap_or(self.bytes)
    }
}

/// A CSV input's units: one per file, in listing order.
pub(super) fn csv_units(url: &ListingTableUrl, files: &[ObjectMeta]) -> Vec<WorkUnit> {
    files
        .iter()
        .map(|meta| WorkUnit {
            file: file_name(url, meta),
            row_group: None,
            rows: None,
            bytes: meta.size,
            location: meta.location.to_string(),
        })
        .collect()
}

/// Cuts units of these weights into `n` contiguous runs, one per shard, each as near to an
/// `n`-th of the total weight as unit boundaries allow. Deterministic: the same weights give
/// the same runs. A shard may get no unit (more shards than units).
pub fn shard_ranges(weights: &[u64], n: usize) -> Vec<Range<usize>> {
    let n = n.max(1) as u128;
    let mut prefix = Vec::with_capacity(weights.len() + 1);
    prefix.push(0u128);
    for &w in weights {
        prefix.push(prefix[prefix.len() - 1] + u128::from(w));
    }
    let total = prefix[weights.len()];
    let mut cuts = vec![0usize];
    for k in 1..n {
        // Compared as n x running total against k x total, so that no rounding moves a cut.
        let target = k * total;
        let previous = cuts[cuts.len() - 1];
        let after = prefix
            .partition_point(|&p| n * p < target)
            .clamp(previous, weights.len());
        let before = after.saturating_sub(1).max(previous);
        let nearer_before =
            target.abs_diff(n * prefix[before]) <= (n * prefix[after]).abs_diff(target);
        cuts.push(if nearer_before { before } else { after });
    }
    cuts.push(weights.len());
    cuts.windows(2).map(|w| w[0]..w[1]).collect()
}

/// Which shard of how many a process scores: `--shard 2/4` is index 2 of 4 (from 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardId {
    pub index: usize,
    pub count: usize,
}

impl std::fmt::Display for ShardId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// One shard's share of the units.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    pub index: usize,
    /// Its units, as indexes into the run's unit list.
    pub units: Range<usize>,
    /// Rows in its units, when the footers tell them (Parquet).
    pub rows: Option<u64>,
    pub bytes: u64,
}

/// Every shard of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardPlan {
    pub shards: Vec<Shard>,
}

impl ShardPlan {
    /// `count` shards over `units` (at least one shard).
    pub fn new(units: &[WorkUnit], count: usize) -> Self {
        let weights: Vec<u64> = units.iter().map(WorkUnit::weight).collect();
        let shards = shard_ranges(&weights, count)
            .into_iter()
            .enumerate()
            .map(|(index, range)| {
                let mine = &units[range.clone()];
                Shard {
                    index,
                    rows: mine.iter().map(|u| u.rows).sum(),
                    bytes: mine.iter().map(|u| u.bytes).sum(),
                    units: range,
                }
            })
            .collect();
        Self { shards }
    }

    /// The shard unit `unit` falls in.
    pub fn shard_of(&self, unit: usize) -> Option<usize> {
        self.shards
            .iter()
            .find(|s| s.units.contains(&unit))
            .map(|s| s.index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_are_contiguous_runs_balanced_by_weight() {
        assert_eq!(shard_ranges(&[1; 10], 3), [0..3, 3..7, 7..10]);
        assert_eq!(shard_ranges(&[5, 1, 1, 1, 1, 1], 2), [0..1, 1..6]);
        // Every unit in exactly one shard, in order, whatever the count.
        for n in 1..8 {
            let ranges = shard_ranges(&[3, 9, 2, 7, 7, 1, 4], n);
            assert_eq!(ranges.len(), n);
            assert_eq!(ranges[0].start, 0);
            assert_eq!(ranges[n - 1].end, 7);
            assert!(ranges.windows(2).all(|w| w[0].end == w[1].start));
        }
        // More shards than units: some shards are empty.
        let ranges = shard_ranges(&[4, 4], 4);
        assert_eq!(ranges.iter().filter(|r| r.is_empty()).count(), 2);
        assert_eq!(shard_ranges(&[], 2), [0..0, 0..0]);
    }

    #[test]
    fn units_weigh_rows_when_the_footer_tells_them() {
        let unit = |rows, bytes| WorkUnit {
            file: "f".into(),
            row_group: None,
            rows,
            bytes,
            location: String::new(),
        };
        assert_eq!(unit(Some(10), 999).weight(), 10);
        assert_eq!(unit(None, 999).weight(), 999);
    }

    fn unit(rows: Option<u64>, bytes: u64) -> WorkUnit {
        WorkUnit {
            file: "f".into(),
            row_group: rows.map(|_| 0),
            rows,
            bytes,
            location: String::new(),
        }
    }

    #[test]
    fn shards_sum_their_units_and_every_unit_has_one() {
        let units = vec![
            unit(Some(100), 10),
            unit(Some(100), 10),
            unit(Some(200), 30),
        ];
        let plan = ShardPlan::new(&units, 2);
        assert_eq!(plan.shards[0].units, 0..2);
        assert_eq!(plan.shards[0].rows, Some(200));
        assert_eq!(plan.shards[1].bytes, 30);
        assert_eq!(
            (0..3).map(|u| plan.shard_of(u)).collect::<Vec<_>>(),
            [Some(0), Some(0), Some(1)]
        );
        // CSV units: no rows known, weighed by bytes.
        let csv = ShardPlan::new(&[unit(None, 5), unit(None, 5)], 2);
        assert_eq!(csv.shards[1].rows, None);
        assert_eq!(csv.shards[1].units, 1..2);
    }
}
