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

/// One piece of the input: a Parquet row group, a whole CSV file, or a byte range of a
/// large uncompressed one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkUnit {
    /// The file as the user knows it: a path, or the object's URL.
    pub file: String,
    /// The Parquet row group; none for CSV.
    pub row_group: Option<usize>,
    /// For a CSV file cut into byte ranges: which one.
    pub byte_range: Option<ByteRange>,
    /// Rows, from the Parquet footer; none for CSV.
    pub rows: Option<u64>,
    /// The row group's compressed bytes, or the CSV file's (or byte range's) size.
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

/// One of the byte ranges a large CSV file is cut into: `index` of `count` ranges of `span`
/// bytes. It holds the records of the scan's chunks that start in it (chunks end at record
/// boundaries, wherever they fall; see `csv::chunker`), so every record is in exactly one
/// range, quoted newlines included.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ByteRange {
    pub index: usize,
    pub count: usize,
    pub span: u64,
}

impl ByteRange {
    /// The range a chunk starting at `offset` belongs to (the last one holds the tail).
    pub fn index_of(span: u64, count: usize, offset: u64) -> usize {
        usize::try_from(offset / span.max(1))
            .unwrap_or(usize::MAX)
            .min(count.saturating_sub(1))
    }
}

/// A CSV input's units, in listing order: one per file, or, for an uncompressed file larger
/// than `split` bytes (0: never), one per `split` bytes of it.
pub(super) fn csv_units(
    url: &ListingTableUrl,
    files: &[ObjectMeta],
    split: Option<u64>,
) -> Vec<WorkUnit> {
    let mut units = Vec::new();
    for meta in files {
        let unit = |byte_range: Option<ByteRange>, bytes: u64| WorkUnit {
            file: file_name(url, meta),
            row_group: None,
            byte_range,
            rows: None,
            bytes,
            location: meta.location.to_string(),
        };
        match split.filter(|&span| span > 0 && meta.size > span) {
            Some(span) => {
                let count = meta.size.div_ceil(span) as usize;
                units.extend((0..count).map(|index| {
                    let start = index as u64 * span;
                    let bytes = meta.size.min(start + span) - start;
                    unit(Some(ByteRange { index, count, span }), bytes)
                }));
            }
            None => units.push(unit(None, meta.size)),
        }
    }
    units
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
            byte_range: None,
            rows,
            bytes,
            location: String::new(),
        };
        assert_eq!(unit(Some(10), 999).weight(), 10);
        assert_eq!(unit(None, 999).weight(), 999);
    }

    #[test]
    fn a_large_csv_file_is_cut_into_byte_ranges_and_a_compressed_one_is_not() {
        let url = ListingTableUrl::parse("file:///data/").unwrap();
        let meta = |name: &str, size: u64| ObjectMeta {
            location: object_store::path::Path::from(format!("data/{name}")),
            last_modified: chrono::DateTime::default(),
            size,
            e_tag: None,
            version: None,
        };
        let files = [meta("big.csv", 10), meta("small.csv", 4)];
        let units = csv_units(&url, &files, Some(4));
        let ranges: Vec<_> = units
            .iter()
            .map(|u| (u.file.as_str(), u.byte_range.map(|r| r.index), u.bytes))
            .collect();
        assert_eq!(
            ranges,
            [
                ("/data/big.csv", Some(0), 4),
                ("/data/big.csv", Some(1), 4),
                ("/data/big.csv", Some(2), 2),
                ("/data/small.csv", None, 4)
            ]
        );
        assert_eq!(units[1].byte_range.map(|r| (r.count, r.span)), Some((3, 4)));
        assert_eq!(csv_units(&url, &files, None).len(), 2);
        assert_eq!(csv_units(&url, &files, Some(0)).len(), 2);
        // A chunk belongs to the range it starts in; the last range takes the tail.
        assert_eq!(ByteRange::index_of(4, 3, 0), 0);
        assert_eq!(ByteRange::index_of(4, 3, 7), 1);
        assert_eq!(ByteRange::index_of(4, 3, 100), 2);
    }

    fn unit(rows: Option<u64>, bytes: u64) -> WorkUnit {
        WorkUnit {
            file: "f".into(),
            row_group: rows.map(|_| 0),
            byte_range: None,
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
