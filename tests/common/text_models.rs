//! Helpers for the text-model tests: the MiniLM models, the independent oracle
//! (`tests/oracle/text.py`: the Python `tokenizers` library and onnxruntime) and the output's
//! vectors keyed by `ticket_id`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::*;

/// Where `scripts/fetch-models` put MiniLM (`$BATCHSCORE_TEST_MODELS`).
pub fn models() -> PathBuf {
    PathBuf::from(std::env::var("BATCHSCORE_TEST_MODELS").expect(
        "BATCHSCORE_TEST_MODELS is not set: run the tests with scripts/test, which fetches MiniLM",
    ))
}

/// A file of `models()/minilm/`, as a string.
pub fn minilm(file: &str) -> String {
    models()
        .join("minilm")
        .join(file)
        .to_string_lossy()
        .into_owned()
}

/// The tickets sample (Parquet), which the oracle reads.
pub fn tickets() -> String {
    sample("text/tickets.parquet")
}

/// The `ticket_id` of each row of the tickets sample, in order.
pub fn ticket_ids() -> Vec<i64> {
    read_parquet(Path::new(&tickets()))["ticket_id"]
        .iter()
        .map(|c| match c {
            Cell::Int(i) => *i,
            other => panic!("ticket_id {other:?}"),
        })
        .collect()
}

/// The oracle's answer: each row's vector (None where it rejected the row), and its counts.
#[derive(Debug)]
pub struct Oracle {
    pub rows: BTreeMap<usize, Option<Vec<f64>>>,
    pub truncated: u64,
    pub tokens: u64,
}

impl Oracle {
    /// The rows it scored, keyed by `ticket_id`.
    pub fn by_id(&self) -> BTreeMap<i64, Vec<f64>> {
        let ids = ticket_ids();
        self.rows
            .iter()
            .filter_map(|(&row, v)| Some((ids[row], v.clone()?)))
            .collect()
    }
}

/// Runs `tests/oracle/text.py` over the tickets sample's `text` column. `args` are the
/// oracle's other options (`--output`, `--pool`, `--max-length`, ...).
#[track_caller]
pub fn text_oracle(model: &str, args: &[&str]) -> Oracle {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("oracle.json");
    let tokenizer = minilm("tokenizer.json");
    let input = tickets();
    let mut all = vec![
        "--model",
        model,
        "--tokenizer",
        &tokenizer,
        "--input",
        &input,
        "--column",
        "text",
        "--out",
        out.to_str().unwrap(),
    ];
    all.extend_from_slice(args);
    oracle("text.py", &all);
    let v = read_json(&out);
    let rows = v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let value = r["value"]
                .as_array()
                .map(|xs| xs.iter().map(num).collect::<Vec<f64>>());
            assert_eq!(r["rejected"].as_bool().unwrap(), value.is_none(), "{r}");
            (r["row"].as_u64().unwrap() as usize, value)
        })
        .collect();
    Oracle {
        rows,
        truncated: v["truncated"].as_u64().unwrap(),
        tokens: v["tokens"].as_u64().unwrap(),
    }
}

/// The oracle's mean-pooled, L2-normalised MiniLM embeddings at `max_length` tokens (null and
/// empty texts rejected): what `jobs/tickets-embed.toml`'s output column is.
#[track_caller]
pub fn mean_embedding_oracle(max_length: u32) -> Oracle {
    mean_embedding_oracle_of(&minilm("model.onnx"), max_length)
}

/// [`mean_embedding_oracle`] from another encoder file (`model`).
#[track_caller]
pub fn mean_embedding_oracle_of(model: &str, max_length: u32) -> Oracle {
    let max_length = max_length.to_string();
    text_oracle(
        model,
        &[
            "--output",
            "last_hidden_state",
            "--pool",
            "mean",
            "--normalize",
            "1",
            "--max-length",
            &max_length,
        ],
    )
}

/// The oracle's softmax probabilities over the ticket classifier's logits at 128 tokens, by
/// `ticket_id`: what `jobs/tickets-classify.toml`'s `probabilities` column is.
#[track_caller]
pub fn classifier_oracle() -> BTreeMap<i64, Vec<f64>> {
    let args = [
        "--output",
        "logits",
        "--pool",
        "none",
        "--softmax",
        "1",
        "--max-length",
        "128",
    ];
    text_oracle(&minilm("ticket_classifier.onnx"), &args).by_id()
}

/// `column` of an output read with [`read_output`], keyed by `ticket_id`: a list cell as its
/// values, a float cell as a vector of one. Each key must appear once.
#[track_caller]
pub fn vectors_by_id(t: &Table, column: &str) -> BTreeMap<i64, Vec<f64>> {
    let ids = &t["ticket_id"];
    let values = t
        .get(column)
        .unwrap_or_else(|| panic!("no column {column:?}: {:?}", t.keys()));
    let mut m = BTreeMap::new();
    for (id, v) in ids.iter().zip(values) {
        let Cell::Int(id) = id else {
            panic!("ticket_id {id:?}")
        };
        let v = match v {
            Cell::List(xs) => xs.clone(),
            Cell::Float(x) => vec![*x],
            other => panic!("{column} of ticket {id}: {other:?}"),
        };
        assert!(m.insert(*id, v).is_none(), "ticket {id} written twice");
    }
    m
}

/// The same keys, and every value within numpy.allclose's default rule (rtol 1e-5, with an
/// atol of 1e-5 rather than 1e-8: a call's padded width changes float32 sums by an ulp or so).
#[track_caller]
pub fn assert_vectors_close(
    what: &str,
    got: &BTreeMap<i64, Vec<f64>>,
    want: &BTreeMap<i64, Vec<f64>>,
) {
    assert!(!want.is_empty(), "{what}: nothing to compare");
    let missing: Vec<_> = want.keys().filter(|k| !got.contains_key(k)).collect();
    let extra: Vec<_> = got.keys().filter(|k| !want.contains_key(k)).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{what}: tickets missing from the output {missing:?}, not expected {extra:?}"
    );
    for (id, w) in want {
        let g = &got[id];
        assert_eq!(g.len(), w.len(), "{what}, ticket {id}: length");
        for (i, (a, b)) in g.iter().zip(w).enumerate() {
            assert!(
                (a - b).abs() <= 1e-5 + 1e-5 * b.abs(),
                "{what}, ticket {id}, element {i}: got {a}, the oracle {b}"
            );
        }
    }
}
