//! How a run's work units fall into shards: each shard scores a contiguous run of units,
//! balanced by rows (Parquet) or bytes (CSV). The same input listing and the same shard count
//! always give the same shards, whichever machine computes them.

use std::ops::Range;

use serde::{Deserialize, Serialize};

use crate::input::WorkUnit;
use crate::input::units::shard_ranges;

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

    fn unit(rows: Option<u64>, bytes: u64) -> WorkUnit {
        WorkUnit {
            file: "f".into(),
            row_group: rows.map(|_| 0),
            rows,
            bytes,
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
