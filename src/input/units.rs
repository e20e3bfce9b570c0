//! Work units: the pieces a run's input is cut into, so that shards of one run (on many
//! machines) and a resumed run agree on who scores what.
//!
//! A Parquet file gives one unit per row group, with its rows and compressed bytes from the
//! footer (read once, when the files are checked: `parquet::read_footers`). A
//! CSV file is one unit, weighed by its bytes (its rows are not known before it is read).
//! Units are in the order of the listing (path, then row group), which depends only on the
//! input's files; [`shard_ranges`] deals them to shards as contiguous runs balanced by weight.

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
        };
        assert_eq!(unit(Some(10), 999).weight(), 10);
        assert_eq!(unit(None, 999).weight(), 999);
    }
}
