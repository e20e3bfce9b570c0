//! The dead-letter output: rows that could not be scored, and why.
//!
//! A rejected row is written to `_rejected/` with the job's pass-through columns, then
//! [`COLUMNS`]: the [`Stage`] it was rejected at, the reason (a sentence a person can act
//! on, and the key reasons are counted by) and the offending value as text. Two parts of a
//! run reject rows: the CSV scan (malformed records, stage `read`) and the scorer (null,
//! uncastable or non-finite features at stage `features`; rows ONNX Runtime fails on at
//! stage `inference`). Both build their rows with [`Rejects`] and count them with
//! [`RejectCounts`].
//!
//! Inside the plan, the scoring function returns the reject fields at the end of its struct
//! ([`struct_fields`]); [`split`] turns a scored batch into written rows and rejected rows.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch, StringArray};
use datafusion::arrow::compute::kernels::boolean::and;
use datafusion::arrow::compute::{filter_record_batch, is_not_null, is_null};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef};
use datafusion::arrow::error::ArrowError;
use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What a rejected row's `_value` says in place of a sensitive value (`[privacy]`).
pub const REDACTED: &str = "<redacted>";

/// The columns `_rejected/` parts hold after the pass-through columns.
pub const COLUMNS: [&str; 3] = ["_stage", "_reason", "_value"];

/// The same three fields inside the scoring function's struct, named so that no output
/// column can clash with them.
const STRUCT_FIELDS: [&str; 3] = [
    "__batchscore_reject_stage",
    "__batchscore_reject_reason",
    "__batchscore_reject_value",
];

/// Where in the run a row was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// A malformed CSV record: it never became a row.
    Read,
    /// A feature that is null with no fill, cannot be cast, or is not finite.
    Features,
    /// ONNX Runtime failed on the row alone.
    Inference,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Features => "features",
            Self::Inference => "inference",
        }
    }
}

/// The reject fields at the end of the scoring function's struct.
pub fn struct_fields() -> [Field; 3] {
    STRUCT_FIELDS.map(|name| Field::new(name, DataType::Utf8, true))
}

/// The schema of `_rejected/` parts: the pass-through fields, then [`COLUMNS`]. Every field
/// may be null: a malformed CSV record has no pass-through value to trust, whatever the
/// input column promises (a hive partition column is never null in the input).
pub fn schema(passthrough: &[FieldRef]) -> SchemaRef {
    let fields: Vec<FieldRef> = passthrough
        .iter()
        .map(|f| Arc::new(f.as_ref().clone().with_nullable(true)))
        .chain(COLUMNS.map(|name| Arc::new(Field::new(name, DataType::Utf8, true))))
        .collect();
    Arc::new(Schema::new(fields))
}

/// The rejected rows of one batch, built row by row. Nothing is allocated until the first
/// reject, so a clean batch costs nothing.
#[derive(Debug, Default)]
pub struct Rejects {
    rows: usize,
    stages: Vec<Option<&'static str>>,
    reasons: Vec<Option<String>>,
    values: Vec<Option<String>>,
}

impl Rejects {
    /// No row of a batch of `rows` rows rejected yet.
    pub fn new(rows: usize) -> Self {
        Self {
            rows,
            ..Self::default()
        }
    }

    /// Rejects `row` unless it already is: a row keeps its first reason.
    pub fn reject(&mut self, row: usize, stage: Stage, reason: String, value: String) {
        if self.reasons.is_empty() {
            self.stages = vec![None; self.rows];
            self.reasons = vec![None; self.rows];
            self.values = vec![None; self.rows];
        }
        if self.reasons[row].is_none() {
            self.stages[row] = Some(stage.as_str());
            self.reasons[row] = Some(reason);
            self.values[row] = Some(value);
        }
    }

    pub fn is_rejected(&self, row: usize) -> bool {
        self.reasons.get(row).is_some_and(Option::is_some)
    }

    /// Whether no row is rejected.
    pub fn is_empty(&self) -> bool {
        self.reasons.is_empty()
    }

    /// The reason of every rejected row, in row order.
    pub fn reasons(&self) -> impl Iterator<Item = &str> {
        self.reasons.iter().flatten().map(String::as_str)
    }

    /// The stage, reason and value columns, null for rows not rejected.
    pub fn into_columns(self) -> [ArrayRef; 3] {
        if self.reasons.is_empty() {
            return std::array::from_fn(|_| Arc::new(StringArray::new_null(self.rows)) as ArrayRef);
        }
        [
            Arc::new(self.stages.into_iter().collect::<StringArray>()),
            Arc::new(self.reasons.into_iter().collect::<StringArray>()),
            Arc::new(self.values.into_iter().collect::<StringArray>()),
        ]
    }
}

/// Rows that never became rows (malformed CSV records) as `_rejected/` rows of `schema`: no
/// pass-through value can be trusted, so those columns are null.
pub fn read_rejects(
    schema: &SchemaRef,
    rows: &[(String, String)],
) -> Result<RecordBatch, ArrowError> {
    let mut rejects = Rejects::new(rows.len());
    for (i, (reason, value)) in rows.iter().enumerate() {
        rejects.reject(i, Stage::Read, reason.clone(), value.clone());
    }
    let n_pass = schema.fields().len() - COLUMNS.len();
    let columns: Vec<ArrayRef> = schema.fields()[..n_pass]
        .iter()
        .map(|f| datafusion::arrow::array::new_null_array(f.data_type(), rows.len()))
        .chain(rejects.into_columns())
        .collect();
    RecordBatch::try_new(schema.clone(), columns)
}

/// Turns a scored batch, `[pass-through..., struct of outputs and reject fields]`, into the
/// rows to write (`out_schema`) and, when some rows were rejected, the `_rejected/` rows
/// (`rej_schema`).
pub fn split(
    batch: &RecordBatch,
    n_pass: usize,
    out_schema: &SchemaRef,
    rej_schema: &SchemaRef,
) -> Result<(RecordBatch, Option<RecordBatch>), ArrowError> {
    let s = split_scored(batch, n_pass, 0, out_schema, rej_schema)?;
    Ok((s.out, s.rejected))
}

/// A scored batch split by [`split_scored`].
#[derive(Debug)]
pub struct Split {
    /// The rows the champion scored: pass-through, its outputs, each challenger's outputs.
    pub out: RecordBatch,
    /// The rows the champion rejected, as `_rejected/` rows; none when there are none.
    pub rejected: Option<RecordBatch>,
    /// Per challenger: how many of the written rows it rejected (its columns are null there).
    pub challenger_rejected: Vec<u64>,
}

/// [`split`] for a batch scored by the champion and `n_challengers` challengers:
/// `[pass-through..., champion's struct, each challenger's struct, ...]` (columns after those
/// are ignored). The champion decides which rows are written and which go to `_rejected/`;
/// a written row carries each challenger's outputs, null where that challenger rejected it.
pub fn split_scored(
    batch: &RecordBatch,
    n_pass: usize,
    n_challengers: usize,
    out_schema: &SchemaRef,
    rej_schema: &SchemaRef,
) -> Result<Split, ArrowError> {
    let outputs = |at: usize| {
        let scored = batch.column(at).as_struct();
        let n_out = scored.num_columns() - STRUCT_FIELDS.len();
        (
            scored.columns()[..n_out].to_vec(),
            scored.columns()[n_out..].to_vec(),
        )
    };
    let (champion, reject_fields) = outputs(n_pass);
    let reason = &reject_fields[1];
    let passthrough = &batch.columns()[..n_pass];
    let mut cols: Vec<ArrayRef> = passthrough.iter().cloned().chain(champion).collect();
    let mut challenger_reasons = Vec::with_capacity(n_challengers);
    for k in 0..n_challengers {
        let (scored, fields) = outputs(n_pass + 1 + k);
        cols.extend(scored);
        challenger_reasons.push(fields[1].clone());
    }
    let all = RecordBatch::try_new(out_schema.clone(), cols)?;
    let all_kept = reason.null_count() == reason.len();
    let kept = is_null(reason)?;
    let challenger_rejected = challenger_reasons
        .iter()
        .map(|r| {
            if r.null_count() == r.len() {
                return Ok(0);
            }
            let theirs = is_not_null(r)?;
            Ok(and(&kept, &theirs)?.true_count() as u64)
        })
        .collect::<Result<Vec<u64>, ArrowError>>()?;
    if all_kept {
        return Ok(Split {
            out: all,
            rejected: None,
            challenger_rejected,
        });
    }
    let out = filter_record_batch(&all, &kept)?;
    let mut rej_cols: Vec<ArrayRef> = passthrough.to_vec();
    rej_cols.extend(reject_fields.iter().cloned());
    let rej = RecordBatch::try_new(rej_schema.clone(), rej_cols)?;
    let rej = filter_record_batch(&rej, &is_not_null(reason)?)?;
    Ok(Split {
        out,
        rejected: Some(rej),
        challenger_rejected,
    })
}

/// A reject reason and how many rows it applied to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ReasonCount {
    pub reason: String,
    pub count: u64,
}

/// Rejected rows counted over a run, by every worker: how many, and by reason.
#[derive(Debug, Default)]
pub struct RejectCounts {
    rows: AtomicU64,
    reasons: Mutex<IndexMap<String, u64>>,
}

impl RejectCounts {
    /// Forgets every count (between a resumable run's pieces, each counted alone).
    pub fn clear(&self) {
        self.reasons
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        self.rows.store(0, Ordering::Relaxed);
    }

    /// Counts one rejected row per reason.
    pub fn add<'a>(&self, reasons: impl IntoIterator<Item = &'a str>) {
        let mut counts = self.reasons.lock().unwrap_or_else(|e| e.into_inner());
        let mut rows = 0;
        for reason in reasons {
            rows += 1;
            match counts.get_mut(reason) {
                Some(n) => *n += 1,
                None => {
                    counts.insert(reason.to_string(), 1);
                }
            }
        }
        self.rows.fetch_add(rows, Ordering::Relaxed);
    }

    /// Rejected rows so far.
    pub fn rows(&self) -> u64 {
        self.rows.load(Ordering::Relaxed)
    }

    /// Every reason with its count, most frequent first (ties by reason).
    pub fn all(&self) -> Vec<ReasonCount> {
        let counts = self.reasons.lock().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<ReasonCount> = counts
            .iter()
            .map(|(reason, &count)| ReasonCount {
                reason: reason.clone(),
                count,
            })
            .collect();
        v.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.reason.cmp(&b.reason)));
        v
    }

    /// The `n` most frequent reasons.
    pub fn top(&self, n: usize) -> Vec<ReasonCount> {
        let mut v = self.all();
        v.truncate(n);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Float32Array, Int64Array, StructArray};

    fn texts(a: &ArrayRef) -> Vec<Option<&str>> {
        a.as_string::<i32>().iter().collect()
    }

    #[test]
    fn a_row_keeps_its_first_reason_and_clean_batches_are_all_null() {
        let mut r = Rejects::new(3);
        assert!(r.is_empty());
        r.reject(1, Stage::Features, "null".into(), "null".into());
        r.reject(1, Stage::Inference, "later".into(), "x".into());
        assert!(r.is_rejected(1) && !r.is_rejected(0));
        assert_eq!(r.reasons().collect::<Vec<_>>(), ["null"]);
        let [stage, reason, value] = r.into_columns();
        assert_eq!(texts(&stage), [None, Some("features"), None]);
        assert_eq!(texts(&reason), [None, Some("null"), None]);
        assert_eq!(texts(&value), [None, Some("null"), None]);
        let [stage, ..] = Rejects::new(2).into_columns();
        assert_eq!(stage.null_count(), 2);
    }

    #[test]
    fn reasons_are_counted_most_frequent_first() {
        let counts = RejectCounts::default();
        counts.add(["b", "a", "b"]);
        counts.add(["c"]);
        assert_eq!(counts.rows(), 4);
        let top: Vec<(String, u64)> = counts
            .top(2)
            .into_iter()
            .map(|r| (r.reason, r.count))
            .collect();
        assert_eq!(top, [("b".into(), 2), ("a".into(), 1)]);
    }

    #[test]
    fn a_scored_batch_splits_into_written_and_rejected_rows() {
        let id = Field::new("id", DataType::Int64, false);
        let score = Field::new("score", DataType::Float32, true);
        let mut rejects = Rejects::new(3);
        rejects.reject(2, Stage::Features, "why".into(), "v".into());
        let struct_fields: Vec<Field> = std::iter::once(score.clone())
            .chain(struct_fields())
            .collect();
        let scored_columns: Vec<ArrayRef> =
            std::iter::once(Arc::new(Float32Array::from(vec![Some(0.5), Some(0.25), None])) as _)
                .chain(rejects.into_columns())
                .collect();
        let scored = StructArray::try_new(struct_fields.into(), scored_columns, None).unwrap();
        let batch = RecordBatch::try_from_iter([
            ("id", Arc::new(Int64Array::from(vec![7, 8, 9])) as ArrayRef),
            ("p", Arc::new(scored) as ArrayRef),
        ])
        .unwrap();
        let out_schema = Arc::new(Schema::new(vec![id.clone(), score]));
        let rej_schema = schema(&[Arc::new(id)]);
        let (out, rej) = split(&batch, 1, &out_schema, &rej_schema).unwrap();
        let ids = |b: &RecordBatch| {
            b.column(0)
                .as_primitive::<datafusion::arrow::datatypes::Int64Type>()
                .values()
                .to_vec()
        };
        assert_eq!(ids(&out), [7, 8]);
        let rej = rej.expect("one rejected row");
        assert_eq!(ids(&rej), [9]);
        assert_eq!(rej.schema().fields()[1].name(), "_stage");
        assert_eq!(texts(rej.column(2)), [Some("why")]);

        // A challenger that rejects rows 0 and 2: row 2 goes to _rejected/ by the champion's
        // reason, row 0 is written with the challenger's column null.
        let mut theirs = Rejects::new(3);
        theirs.reject(0, Stage::Inference, "no".into(), "v".into());
        theirs.reject(2, Stage::Inference, "no".into(), "v".into());
        let c_field = Field::new("c_score", DataType::Float32, true);
        let c_fields: Vec<Field> = std::iter::once(c_field.clone())
            .chain(super::struct_fields())
            .collect();
        let c_columns: Vec<ArrayRef> =
            std::iter::once(Arc::new(Float32Array::from(vec![None, Some(0.75), None])) as _)
                .chain(theirs.into_columns())
                .collect();
        let challenger = StructArray::try_new(c_fields.into(), c_columns, None).unwrap();
        let mut columns = batch.columns().to_vec();
        columns.push(Arc::new(challenger));
        let both = RecordBatch::try_from_iter(["id", "p", "c"].into_iter().zip(columns)).unwrap();
        let mut fields = out_schema.fields().to_vec();
        fields.push(Arc::new(c_field));
        let wide = Arc::new(Schema::new(fields));
        let s = split_scored(&both, 1, 1, &wide, &rej_schema).unwrap();
        assert_eq!(ids(&s.out), [7, 8]);
        assert_eq!(ids(&s.rejected.expect("row 9")), [9]);
        assert_eq!(s.challenger_rejected, [1]);
        let c: Vec<Option<f32>> = s
            .out
            .column(2)
            .as_primitive::<datafusion::arrow::datatypes::Float32Type>()
            .iter()
            .collect();
        assert_eq!(c, [None, Some(0.75)]);

        let malformed = read_rejects(&rej_schema, &[("bad".into(), "a,b".into())]).unwrap();
        assert_eq!(malformed.column(0).null_count(), 1);
        assert_eq!(texts(malformed.column(1)), [Some("read")]);
        assert_eq!(texts(malformed.column(3)), [Some("a,b")]);
    }
}
