//! Text models (`[tokenizer]` and the table form of `[outputs]`): the real binary scores the
//! tickets sample with MiniLM, and every vector is compared with what the independent oracle
//! (`tests/oracle/text.py`: the Python `tokenizers` library and onnxruntime, none of
//! batchscore's code) computes from the same texts.

mod common;
use common::text_models::*;
use common::*;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

const NULL_REASON: &str = "the text is null, and [tokenizer] on_empty = \"reject\"";
const EMPTY_REASON: &str = "the text is empty, and [tokenizer] on_empty = \"reject\"";

/// The tickets whose text is null, and those whose text is "" (3 and 2 in the sample).
fn null_and_empty_ids() -> (BTreeSet<i64>, BTreeSet<i64>) {
    let t = read_parquet(Path::new(&tickets()));
    let (mut nulls, mut empties) = (BTreeSet::new(), BTreeSet::new());
    for (id, text) in t["ticket_id"].iter().zip(&t["text"]) {
        let Cell::Int(id) = id else { panic!("{id:?}") };
        match text {
            Cell::Null => nulls.insert(*id),
            Cell::Text(t) if t.is_empty() => empties.insert(*id),
            _ => false,
        };
    }
    assert_eq!((nulls.len(), empties.len()), (3, 2), "the sample changed");
    (nulls, empties)
}

/// A scratch directory where the repo's text jobs run as they are: `sample_data` is linked by
/// [`Scratch`], and `.models` (which the jobs reach as `../.models/`) is linked here.
fn text_scratch() -> Scratch {
    let s = Scratch::new();
    std::os::unix::fs::symlink(models(), s.path(".models")).unwrap();
    s
}

/// A text job over the tickets sample, the output in `out/t/`. `tokenizer` is added to the
/// `[tokenizer]` table (omitted entirely when None), `rest` follows `[output]`'s keys.
fn text_spec(input: &str, model: &str, tokenizer: Option<&str>, rest: &str) -> String {
    let tokenizer = tokenizer.map_or(String::new(), |t| {
        format!("[tokenizer]\nuri = \"{}\"\n{t}\n", minilm("tokenizer.json"))
    });
    format!(
        r#"
name = "text"
[input]
uri = "{input}"
[model]
uri = "{model}"
{tokenizer}
[output]
uri = "../out/t/"
passthrough = ["ticket_id"]
{rest}
"#
    )
}

/// `_metrics.json`'s `text` table.
fn text_metrics(out: &Path) -> serde_json::Value {
    let m = read_json(&out.join("_metrics.json"));
    assert!(m["text"].is_object(), "no text in _metrics.json: {m:#}");
    m["text"].clone()
}

/// The `_rejected/` rows as ticket_id -> (reason, value shown).
fn rejected_by_id(out: &Path) -> BTreeMap<i64, (String, String)> {
    let r = read_rejected(out);
    if r.is_empty() {
        return BTreeMap::new();
    }
    let reasons = texts(&r["_reason"]);
    let values = texts(&r["_value"]);
    r["ticket_id"]
        .iter()
        .zip(reasons.into_iter().zip(values))
        .map(|(id, rv)| {
            let Cell::Int(id) = id else { panic!("{id:?}") };
            (*id, rv)
        })
        .collect()
}

#[test]
fn the_sample_embedding_job_equals_the_oracle_and_rejects_null_and_empty_texts() {
    let s = text_scratch();
    let job = s.repo_job("tickets-embed");
    let o = run(&["run", job.to_str().unwrap()]);
    assert_ok(&o);
    let out = s.path("out/tickets-embed");

    let oracle = mean_embedding_oracle(128);
    let got = read_output(&out);
    let embeddings = vectors_by_id(&got, "embedding");
    assert_vectors_close("embedding", &embeddings, &oracle.by_id());
    assert_eq!(embeddings.len(), 295);
    // The oracle normalised too; a norm of one checks the option was applied at all.
    for (id, v) in &embeddings {
        let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "ticket {id}: norm {norm}");
    }

    // The column is a FixedSizeList<Float32>[384] in every file, not a variable list.
    for f in &read_manifest(&out).files {
        let file = std::fs::File::open(out.join(&f.path)).unwrap();
        let b = datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
            file,
        )
        .unwrap();
        let field = b.schema().field_with_name("embedding").unwrap().clone();
        match field.data_type() {
            datafusion::arrow::datatypes::DataType::FixedSizeList(item, 384) => assert_eq!(
                item.data_type(),
                &datafusion::arrow::datatypes::DataType::Float32,
                "{field:?}"
            ),
            other => panic!("embedding is {other:?}, not a fixed-size list of 384"),
        }
    }

    // Null and empty texts: each in _rejected/ with its own reason, none in the output.
    let (nulls, empties) = null_and_empty_ids();
    let rejected = rejected_by_id(&out);
    let expected: BTreeMap<i64, (String, String)> = nulls
        .iter()
        .map(|id| (*id, (NULL_REASON.to_string(), "null".to_string())))
        .chain(
            empties
                .iter()
                .map(|id| (*id, (EMPTY_REASON.to_string(), String::new()))),
        )
        .collect();
    assert_eq!(rejected, expected);
    assert!(embeddings.keys().all(|k| !expected.contains_key(k)));

    let text = text_metrics(&out);
    assert_eq!(text["max_length"], 128);
    assert_eq!(text["texts"], 295);
    // The sample's four very long texts are cut at 128 tokens.
    assert!(oracle.truncated > 0);
    assert_eq!(text["truncated"], oracle.truncated, "{text}");
    assert_eq!(text["tokens"], oracle.tokens, "{text}");
    assert!(
        text["padded_tokens"].as_u64().unwrap() >= oracle.tokens,
        "{text}"
    );
    let metrics = read_json(&out.join("_metrics.json"));
    assert_eq!(metrics["rows"]["rejected"], 5, "{metrics:#}");
}

#[test]
fn cls_and_max_pooling_at_16_tokens_unsorted_embed_null_and_empty_texts() {
    let s = text_scratch();
    let job = s.job(
        "p.toml",
        &text_spec(
            &tickets(),
            &minilm("model.onnx"),
            Some("text = \"text\"\nmax_length = 16\non_empty = \"embed\"\nsort_by_length = false"),
            r#"[outputs]
cls = { from = "last_hidden_state", pool = "cls" }
maxed = { from = "last_hidden_state", pool = "max" }"#,
        ),
    );
    assert_ok(&run(&["run", job.to_str().unwrap()]));
    let out = s.path("out/t");
    let got = read_output(&out);
    assert_eq!(got["ticket_id"].len(), 300, "every row is written");
    assert!(read_rejected(&out).is_empty());

    let (nulls, empties) = null_and_empty_ids();
    let mut truncated = None;
    for (column, pool) in [("cls", "cls"), ("maxed", "max")] {
        let oracle = text_oracle(
            &minilm("model.onnx"),
            &[
                "--output",
                "last_hidden_state",
                "--pool",
                pool,
                "--normalize",
                "0",
                "--max-length",
                "16",
                "--empty",
                "embed",
            ],
        );
        // The oracle rejects null texts whatever --empty says; on_empty = "embed" scores a
        // null as the empty text, so a null row's vector is an empty row's.
        let mut want = oracle.by_id();
        let empty_vector = want[empties.first().unwrap()].clone();
        for id in &nulls {
            assert!(want.insert(*id, empty_vector.clone()).is_none());
        }
        assert_vectors_close(column, &vectors_by_id(&got, column), &want);
        // Not normalised: hidden states are far from unit length.
        let v = &want.values().next().unwrap();
        assert!(v.iter().map(|x| x * x).sum::<f64>().sqrt() > 2.0);

        let text = text_metrics(&out);
        assert_eq!(text["max_length"], 16);
        assert_eq!(text["texts"], 300);
        assert_eq!(text["truncated"], oracle.truncated, "{text}");
        // [CLS] [SEP] for each of the three nulls, which the oracle did not embed.
        assert_eq!(
            text["tokens"],
            oracle.tokens + 2 * nulls.len() as u64,
            "{text}"
        );
        truncated = Some(oracle.truncated);
    }
    // At 16 tokens most tickets are cut.
    assert!(truncated.unwrap() > 100, "{truncated:?}");
}

#[test]
fn the_classifier_gives_softmax_probabilities_one_class_and_raw_logits() {
    let s = text_scratch();
    let job = s.repo_job("tickets-classify");
    assert_ok(&run(&["run", job.to_str().unwrap()]));
    let out = s.path("out/tickets-classify");
    let got = read_output(&out);
    let model = minilm("ticket_classifier.onnx");
    // No max_length in the spec: the tokenizer file's, 128.
    let oracle = |softmax: &str| {
        text_oracle(
            &model,
            &[
                "--output",
                "logits",
                "--pool",
                "none",
                "--softmax",
                softmax,
                "--max-length",
                "128",
            ],
        )
    };
    let probabilities = oracle("1");
    let logits = oracle("0");
    assert_eq!(text_metrics(&out)["max_length"], 128);
    assert_eq!(text_metrics(&out)["truncated"], probabilities.truncated);

    let p = vectors_by_id(&got, "probabilities");
    assert_vectors_close("probabilities", &p, &probabilities.by_id());
    assert_vectors_close("logits", &vectors_by_id(&got, "logits"), &logits.by_id());
    let billing: BTreeMap<i64, Vec<f64>> = probabilities
        .by_id()
        .into_iter()
        .map(|(id, v)| (id, vec![v[0]]))
        .collect();
    assert_vectors_close("p_billing", &vectors_by_id(&got, "p_billing"), &billing);
    // Softmax was applied before element 0 was picked: logits are not probabilities.
    assert!(logits.by_id().values().any(|v| v[0] > 1.0 || v[0] < 0.0));

    // Sanity: the head predicts the sample's labels (classes in the logits' order).
    let classes = ["billing", "shipping", "technical"];
    let labels = texts(&got["label"]);
    let ids = &got["ticket_id"];
    let mut right = 0;
    for (id, label) in ids.iter().zip(&labels) {
        let Cell::Int(id) = id else { panic!() };
        let v = &p[id];
        let best = (0..3).max_by(|&a, &b| v[a].total_cmp(&v[b])).unwrap();
        right += usize::from(classes[best] == label);
    }
    let accuracy = right as f64 / labels.len() as f64;
    assert!(accuracy > 0.9, "accuracy {accuracy}");
}

#[test]
fn without_truncation_longer_texts_are_rejected_and_the_rest_scored() {
    let s = text_scratch();
    let job = s.job(
        "n.toml",
        &text_spec(
            &tickets(),
            &minilm("model.onnx"),
            Some("text = \"text\"\nmax_length = 32\ntruncation = false"),
            "[outputs]\nembedding = { from = \"last_hidden_state\", pool = \"mean\", normalize = true }",
        ),
    );
    assert_ok(&run(&["run", job.to_str().unwrap()]));
    let out = s.path("out/t");
    let oracle = mean_embedding_oracle(32);
    assert!(oracle.truncated > 0);

    let rejected = rejected_by_id(&out);
    let too_long: BTreeMap<i64, String> = rejected
        .iter()
        .filter(|(_, (reason, _))| {
            reason
                == "the text is longer than max_length = 32 tokens, and [tokenizer] truncation = false"
        })
        .map(|(id, (_, value))| (*id, value.clone()))
        .collect();
    assert_eq!(too_long.len() as u64, oracle.truncated);
    // The other rejections are the null and empty texts, as ever.
    let (nulls, empties) = null_and_empty_ids();
    let others: BTreeSet<i64> = rejected
        .keys()
        .filter(|k| !too_long.contains_key(k))
        .copied()
        .collect();
    assert_eq!(others, nulls.union(&empties).copied().collect());

    // Every other row is scored, and a text under 32 tokens is not cut, so it equals the
    // oracle's at 32.
    let mut want = oracle.by_id();
    // The _value shown is the text itself, which the oracle's table has for that ticket.
    let sample = read_parquet(Path::new(&tickets()));
    let sample_texts: BTreeMap<i64, String> = sample["ticket_id"]
        .iter()
        .zip(texts(&sample["text"]))
        .map(|(id, t)| {
            let Cell::Int(id) = id else { panic!() };
            (*id, t)
        })
        .collect();
    for (id, value) in &too_long {
        assert_eq!(value, &sample_texts[id], "ticket {id}");
        assert!(want.remove(id).is_some(), "ticket {id}");
    }
    assert_vectors_close(
        "embedding",
        &vectors_by_id(&read_output(&out), "embedding"),
        &want,
    );
    let text = text_metrics(&out);
    assert_eq!(text["truncated"], 0, "nothing is cut: {text}");
    assert_eq!(text["texts"], 295 - oracle.truncated, "{text}");
}

#[test]
fn csv_input_a_query_and_an_sql_text_expression() {
    let s = text_scratch();
    let job = s.job(
        "c.toml",
        &text_spec(
            &sample("text/tickets.csv"),
            &minilm("model.onnx"),
            // The tokenizer lowercases anyway, so lower() changes no embedding; an expression
            // that is not a bare column still has to be evaluated per row.
            Some("text = \"lower(text)\""),
            "[outputs]\nembedding = { from = \"last_hidden_state\", pool = \"mean\", normalize = true }",
        )
        .replace(
            "[model]",
            "query = \"SELECT * FROM input WHERE ticket_id % 2 = 0\"\n[model]",
        ),
    );
    assert_ok(&run(&["run", job.to_str().unwrap()]));
    let out = s.path("out/t");
    let oracle = mean_embedding_oracle(128);
    let want: BTreeMap<i64, Vec<f64>> = oracle
        .by_id()
        .into_iter()
        .filter(|(id, _)| id % 2 == 0)
        .collect();
    assert!(want.len() > 100 && want.len() < 200, "{}", want.len());
    assert_vectors_close(
        "embedding",
        &vectors_by_id(&read_output(&out), "embedding"),
        &want,
    );
    // The five null and empty texts all have even ids: rejected here too. (In CSV an empty
    // field and "" may both read as null; either reason will do.)
    let (nulls, empties) = null_and_empty_ids();
    let rejected = rejected_by_id(&out);
    assert_eq!(
        rejected.keys().copied().collect::<BTreeSet<_>>(),
        nulls.union(&empties).copied().collect()
    );
    assert!(
        rejected
            .values()
            .all(|(r, _)| r == NULL_REASON || r == EMPTY_REASON),
        "{rejected:?}"
    );
}

/// Runs the job and checks it was refused before anything was written: exit 2, stderr
/// naming the spec file and holding every `expected` piece.
#[track_caller]
fn refused(s: &Scratch, job: &Path, expected: &[&str]) -> String {
    let o = run(&["run", job.to_str().unwrap()]);
    let err = assert_exit(&o, 2);
    let file = job.file_name().unwrap().to_str().unwrap();
    assert!(err.contains(&format!("{file}: ")), "no {file} in:\n{err}");
    for e in expected {
        assert!(err.contains(e), "expected {e:?} in:\n{err}");
    }
    assert!(!s.path("out").exists(), "nothing may be written");
    err
}

const EMBED: &str =
    "[outputs]\nembedding = { from = \"last_hidden_state\", pool = \"mean\", normalize = true }";

/// A model exported with a fixed sequence length (token inputs `[batch, 64]`, as static-shape
/// exports write them) gets every call padded to exactly 64 tokens, its vectors the oracle's
/// (which pads to the model's 64 as well), the tokenizer file's own max_length lowered to 64;
/// a `max_length` set longer than 64 is refused before any work, in a job and in
/// `batchscore sql`.
#[test]
fn a_model_that_fixes_its_sequence_length_gets_calls_of_that_length() {
    let s = text_scratch();
    let fixed = s.path("fixed64.onnx");
    let fixed = fixed.to_str().unwrap();
    oracle("fix_length.py", &[&minilm("model.onnx"), fixed, "64"]);
    // No max_length in the spec: the tokenizer file's is lowered to the model's 64.
    let job = s.job(
        "f.toml",
        &text_spec(&tickets(), fixed, Some("text = \"text\""), EMBED),
    );
    assert_ok(&run(&["run", job.to_str().unwrap()]));
    let out = s.path("out/t");
    let embeddings = vectors_by_id(&read_output(&out), "embedding");
    let oracle = mean_embedding_oracle_of(fixed, 64);
    assert_vectors_close("embedding", &embeddings, &oracle.by_id());
    assert_eq!(embeddings.len(), 295);
    let text = text_metrics(&out);
    assert_eq!(text["max_length"], 64, "{text}");
    assert_eq!(text["truncated"], oracle.truncated, "{text}");
    assert_eq!(text["padded_tokens"], 295 * 64, "{text}");
    assert_eq!(text["tokens"], oracle.tokens, "{text}");
    std::fs::remove_dir_all(s.path("out")).unwrap();

    // Set longer than 64, it is refused.
    let tokenizer = "text = \"text\"\nmax_length = 128";
    let job = s.job(
        "g.toml",
        &text_spec(&tickets(), fixed, Some(tokenizer), EMBED),
    );
    let want = "max_length = 128 is longer than the 64 tokens the model takes (its input \"input_ids\" is [?, 64]): set [tokenizer] max_length = 64 or less";
    refused(&s, &job, &["tokenizer.max_length", want]);
    let query = format!(
        "SELECT predict_output('m', '{{ from = \"last_hidden_state\", pool = \"mean\" }}', text) FROM '{}'",
        tickets()
    );
    let model = format!("m={fixed}");
    let tok = format!("m={}", minilm("tokenizer.json"));
    let args = [
        "sql",
        &query,
        "--model",
        &model,
        "--tokenizer",
        &tok,
        "--max-length",
        "128",
    ];
    let err = assert_exit(&run(&args), 2);
    assert!(err.contains(want), "{err}");
}

#[test]
fn pooling_needs_a_tokenizer_and_hidden_states() {
    let s = text_scratch();
    let model = minilm("model.onnx");
    // No [tokenizer]: no attention mask to pool over.
    let job = s.job("a.toml", &text_spec(&tickets(), &model, None, EMBED));
    refused(
        &s,
        &job,
        &["[outputs.embedding.pool]: pools over the attention mask, which only [tokenizer] makes"],
    );

    // The classifier's logits are [batch, 3]: nothing to pool.
    let job = s.job(
        "b.toml",
        &text_spec(
            &tickets(),
            &minilm("ticket_classifier.onnx"),
            Some("text = \"text\""),
            "[outputs]\np = { from = \"logits\", pool = \"mean\" }",
        ),
    );
    refused(
        &s,
        &job,
        &[
            "[outputs.p]: model output \"logits\" has shape [?, 3]; pool = \"mean\" needs hidden states [batch, sequence, hidden]",
        ],
    );

    // Pooling and softmax together.
    let job = s.job(
        "c.toml",
        &text_spec(
            &tickets(),
            &model,
            Some("text = \"text\""),
            "[outputs]\ne = { from = \"last_hidden_state\", pool = \"cls\", softmax = true }",
        ),
    );
    refused(
        &s,
        &job,
        &["[outputs.e.softmax]: applies to a classifier's scores"],
    );
}

#[test]
fn an_embedding_cannot_go_to_csv() {
    let s = text_scratch();
    let job = s.job(
        "e.toml",
        &text_spec(
            &tickets(),
            &minilm("model.onnx"),
            Some("text = \"text\""),
            &format!("format = \"csv\"\n{EMBED}"),
        ),
    );
    refused(
        &s,
        &job,
        &[
            "[outputs.embedding]: column \"embedding\" holds a whole vector per row, which CSV cannot hold",
        ],
    );
}

#[test]
fn token_inputs_belong_to_the_tokenizer() {
    let s = text_scratch();
    let job = s.job(
        "i.toml",
        &text_spec(
            &tickets(),
            &minilm("model.onnx"),
            Some("text = \"text\""),
            &format!("{EMBED}\n[inputs.input_ids]\ncolumns = [\"ticket_id\"]"),
        ),
    );
    refused(
        &s,
        &job,
        &["[inputs.input_ids]: is filled by [tokenizer]; leave it out of [inputs]"],
    );
}

#[test]
fn a_missing_or_malformed_tokenizer_file() {
    let s = text_scratch();
    let model = minilm("model.onnx");
    let missing = s.path("no/tokenizer.json");
    let job = s.job(
        "m.toml",
        &text_spec(&tickets(), &model, Some("text = \"text\""), EMBED)
            .replace(&minilm("tokenizer.json"), missing.to_str().unwrap()),
    );
    refused(
        &s,
        &job,
        &[
            &format!(
                "[tokenizer.uri]: tokenizer {}: cannot read it: ",
                missing.display()
            ),
            "No such file",
        ],
    );

    std::fs::write(s.path("bad.json"), "name,age\n1,2\n").unwrap();
    let job = s.job(
        "j.toml",
        &text_spec(&tickets(), &model, Some("text = \"text\""), EMBED).replace(
            &minilm("tokenizer.json"),
            s.path("bad.json").to_str().unwrap(),
        ),
    );
    refused(
        &s,
        &job,
        &[
            "[tokenizer.uri]: ",
            "bad.json",
            "not a Hugging Face tokenizer.json",
        ],
    );
}

#[test]
fn the_text_must_be_a_column_and_the_model_must_take_input_ids() {
    let s = text_scratch();
    let job = s.job(
        "t.toml",
        &text_spec(
            &tickets(),
            &minilm("model.onnx"),
            Some("text = \"no_such_column\""),
            EMBED,
        ),
    );
    refused(
        &s,
        &job,
        &["[tokenizer.text]: unknown column \"no_such_column\" (columns: ticket_id, text, label)"],
    );

    // The churn model takes one `features` tensor, nothing a tokenizer fills; its features
    // are not bound either, and both problems are listed at once.
    let job = s.job(
        "c.toml",
        &text_spec(
            &tickets(),
            &sample("churn/churn_lgbm.onnx"),
            Some("text = \"text\""),
            "[outputs]\np = \"probabilities\"",
        ),
    );
    refused(
        &s,
        &job,
        &[
            "[inputs.features]: ",
            "[tokenizer]: the model has no input \"input_ids\" to tokenize into (its inputs: features)",
        ],
    );
}

/// Grouping rows by token count changes what a call pads, never a vector: both runs equal,
/// and the grouped one feeds the model fewer padded positions.
#[test]
fn grouping_rows_by_length_pads_less_and_changes_no_vector() {
    let s = text_scratch();
    let mut padded = Vec::new();
    let mut vectors = Vec::new();
    for (name, sort) in [("sorted", true), ("unsorted", false)] {
        let spec = text_spec(
            &tickets(),
            &minilm("model.onnx"),
            Some(&format!("text = \"text\"\nsort_by_length = {sort}")),
            EMBED,
        )
        .replace("../out/t/", &format!("../out/{name}/"));
        let job = s.job(&format!("{name}.toml"), &spec);
        assert_ok(&run(&["run", job.to_str().unwrap()]));
        let out = s.path(&format!("out/{name}"));
        let text = text_metrics(&out);
        padded.push((
            text["tokens"].as_u64().unwrap(),
            text["padded_tokens"].as_u64().unwrap(),
        ));
        vectors.push(vectors_by_id(&read_output(&out), "embedding"));
    }
    let ((tokens, sorted), (same_tokens, unsorted)) = (padded[0], padded[1]);
    assert_eq!(tokens, same_tokens);
    // 295 texts of 3 to 128 tokens, in 32-row calls: sorted, most calls are nearly one length.
    assert!(
        sorted < unsorted && (sorted as f64) < 0.8 * unsorted as f64,
        "sorted {sorted}, unsorted {unsorted} padded positions"
    );
    assert_vectors_close("embedding", &vectors[0], &vectors[1]);
}

/// A text challenger is fed the champion's tokens (the same model: identical scores), and an
/// alert rule can watch the share of texts cut to `max_length`.
#[test]
fn a_text_challenger_and_an_alert_on_truncated_texts() {
    let s = text_scratch();
    let classifier = minilm("ticket_classifier.onnx");
    let rest = format!(
        r#"[outputs]
p_billing = {{ from = "logits[0]", softmax = true }}
[[challengers]]
name = "same"
model = {{ uri = "{classifier}" }}
[[monitor.alerts]]
rule = "text.truncated_rate > 0.01"
[[monitor.alerts]]
rule = "text.truncated > 100"
"#
    );
    let job = s.job(
        "c.toml",
        &text_spec(&tickets(), &classifier, Some("text = \"text\""), &rest),
    );
    let o = run(&["run", job.to_str().unwrap()]);
    // Exit 4: committed, with an alert firing.
    assert_exit(&o, 4);
    let m = read_json(&s.path("out/t/_metrics.json"));
    let agreement = &m["challengers"]["same"]["outputs"]["p_billing"];
    assert_eq!(agreement["rows"], 295, "{agreement}");
    assert_eq!(agreement["max_abs_diff"], 0.0, "{agreement}");
    let alerts = m["alerts"].as_array().unwrap();
    // 4 of the 295 texts are over 128 tokens.
    let rate = 4.0 / 295.0;
    assert_eq!(alerts[0]["firing"], true, "{alerts:?}");
    assert!(
        (num(&alerts[0]["value"]) - rate).abs() < 1e-12,
        "{alerts:?}"
    );
    assert_eq!(alerts[1]["firing"], false, "{alerts:?}");
    assert_eq!(alerts[1]["value"], 4.0, "{alerts:?}");
    let out = read_output(&s.path("out/t"));
    assert_eq!(out["p_billing"], out["same_p_billing"]);
}

/// A text read from a sensitive column (`[privacy]`) never shows: a rejected row's `_value`
/// is `<redacted>`, and the texts are not in any file the run writes or in its log.
#[test]
fn a_sensitive_text_never_shows() {
    let s = text_scratch();
    let spec = text_spec(
        &tickets(),
        &minilm("model.onnx"),
        Some("text = \"text\"\nmax_length = 32\ntruncation = false"),
        &format!("{EMBED}\n[privacy]\nsensitive = [\"text\"]"),
    );
    let job = s.job("p.toml", &spec);
    let o = run(&["run", job.to_str().unwrap()]);
    assert_ok(&o);
    let out = s.path("out/t");
    let rejected = rejected_by_id(&out);
    // The five null or empty texts and the long ones.
    assert!(rejected.len() > 5, "{rejected:?}");
    for (id, (_, value)) in &rejected {
        assert_eq!(value, "<redacted>", "ticket {id}");
    }
    // A long text's words appear nowhere in what the run wrote or logged.
    let long = read_parquet(Path::new(&tickets()))["text"]
        .iter()
        .filter_map(|c| match c {
            Cell::Text(t) if t.split_whitespace().count() > 200 => Some(t.clone()),
            _ => None,
        })
        .next()
        .expect("a long text in the sample");
    let needle = &long[..60];
    let (stdout, stderr) = text(&o);
    assert!(!stdout.contains(needle) && !stderr.contains(needle));
    let mut files = vec![out.clone()];
    while let Some(p) = files.pop() {
        if p.is_dir() {
            files.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        } else {
            let bytes = std::fs::read(&p).unwrap();
            let found = bytes.windows(needle.len()).any(|w| w == needle.as_bytes());
            assert!(!found, "{} holds a sensitive text", p.display());
        }
    }
}

/// A sharded text run (two copies of the tickets, one file per shard) commits the text
/// counts of every shard, not the first one's: twice the oracle's over one copy.
#[test]
fn a_sharded_text_run_counts_every_shards_texts() {
    let s = text_scratch();
    std::fs::create_dir(s.path("in")).unwrap();
    for copy in ["a", "b"] {
        std::fs::copy(tickets(), s.path(&format!("in/{copy}.parquet"))).unwrap();
    }
    let input = s.path("in").to_string_lossy().into_owned();
    let spec = text_spec(
        &input,
        &minilm("model.onnx"),
        Some("text = \"text\""),
        &format!("{EMBED}\n[run]\nshards = 2"),
    );
    let job = s.job("s.toml", &spec);
    let job = job.to_str().unwrap();
    assert_ok(&run(&["run", job, "--shard", "0/2"]));
    assert_ok(&run(&["run", job, "--shard", "1/2"]));
    let out = s.path("out/t");
    let oracle = mean_embedding_oracle(128);
    let text = text_metrics(&out);
    assert_eq!(text["texts"], 2 * 295, "{text}");
    assert_eq!(text["truncated"], 2 * oracle.truncated, "{text}");
    assert_eq!(text["tokens"], 2 * oracle.tokens, "{text}");
    let manifest = read_manifest(&out);
    assert!(
        manifest.files.iter().all(|f| f.rows == 295),
        "each shard scores one copy: {:?}",
        manifest.files
    );
}

/// `batchscore score` with `--tokenizer`: the same job as a spec, from the command line.
#[test]
fn score_embeds_from_the_command_line_and_prints_probabilities() {
    let s = text_scratch();
    let embed = r#"embedding={ from = "last_hidden_state", pool = "mean", normalize = true }"#;
    let tokenizer = minilm("tokenizer.json");
    let model = minilm("model.onnx");
    let (input, out) = (tickets(), s.path("emb"));
    let mut args = vec!["score", &model, &input, "-o", out.to_str().unwrap()];
    args.extend([
        "--key",
        "ticket_id",
        "--tokenizer",
        &tokenizer,
        "--text",
        "text",
    ]);
    args.extend(["--max-length", "32", "--output", embed]);
    assert_ok(&run(&args));

    let oracle = mean_embedding_oracle(32);
    let got = read_output(&out);
    assert_vectors_close(
        "embedding",
        &vectors_by_id(&got, "embedding"),
        &oracle.by_id(),
    );
    assert_eq!(text_metrics(&out)["max_length"], 32);
    assert_eq!(text_metrics(&out)["truncated"], oracle.truncated);
    assert_eq!(rejected_by_id(&out).len(), 5, "the null and empty texts");

    // The spec it amounts to has the [tokenizer] table and the output's table.
    let mut print = args.clone();
    print.push("--print-spec");
    let o = run(&print);
    assert_ok(&o);
    let spec: toml::Table = text(&o).0.parse().unwrap();
    assert_eq!(spec["tokenizer"]["text"].as_str(), Some("text"));
    assert_eq!(spec["tokenizer"]["max_length"].as_integer(), Some(32));
    let uri = spec["tokenizer"]["uri"].as_str().unwrap();
    assert!(
        uri.starts_with('/') && uri.ends_with("minilm/tokenizer.json"),
        "{uri}"
    );
    assert_eq!(spec["outputs"]["embedding"]["pool"].as_str(), Some("mean"));

    // A classifier's softmax on stdout, as JSON Lines.
    let classifier = minilm("ticket_classifier.onnx");
    let o = run(&[
        "score",
        &classifier,
        &input,
        "-o",
        "-",
        "--format",
        "json",
        "--key",
        "ticket_id",
        "--tokenizer",
        &tokenizer,
        "--text",
        "text",
        "--output",
        r#"p={ from = "logits", softmax = true }"#,
    ]);
    assert_ok(&o);
    let mut got = BTreeMap::new();
    for line in text(&o).0.lines() {
        let row: serde_json::Value = serde_json::from_str(line).unwrap();
        let p: Vec<f64> = row["p"].as_array().unwrap().iter().map(num).collect();
        got.insert(row["ticket_id"].as_i64().unwrap(), p);
    }
    assert_vectors_close("p", &got, &classifier_oracle());
}

#[test]
fn score_refuses_a_tokenizer_without_its_text_and_a_broken_output_table() {
    let s = text_scratch();
    let tokenizer = minilm("tokenizer.json");
    let model = minilm("model.onnx");
    let input = tickets();
    let out = s.path("out");
    let base = [
        "score",
        model.as_str(),
        input.as_str(),
        "-o",
        out.to_str().unwrap(),
    ];
    let cases: [(&[&str], &[&str]); 3] = [
        (&["--tokenizer", &tokenizer], &["--text"]),
        (&["--text", "text"], &["--tokenizer"]),
        (
            &[
                "--tokenizer",
                &tokenizer,
                "--text",
                "text",
                "--output",
                "e={ from = ",
            ],
            &["--output", "e={ from = ", "not a TOML table"],
        ),
    ];
    for (extra, needed) in cases {
        let mut args = base.to_vec();
        args.extend_from_slice(extra);
        let err = assert_exit(&run(&args), 2);
        for n in needed {
            assert!(err.contains(n), "{extra:?}: {n:?} missing from:\n{err}");
        }
        assert!(!out.exists(), "{extra:?}: nothing may be written");
    }
}

/// `column` keyed by `ticket_id`, its NULL cells apart.
fn vectors_and_nulls(t: &Table, column: &str) -> (BTreeMap<i64, Vec<f64>>, BTreeSet<i64>) {
    let (mut vectors, mut nulls) = (BTreeMap::new(), BTreeSet::new());
    for (id, v) in t["ticket_id"].iter().zip(&t[column]) {
        let Cell::Int(id) = id else { panic!("{id:?}") };
        match v {
            Cell::Null => assert!(nulls.insert(*id)),
            Cell::List(xs) => assert!(vectors.insert(*id, xs.clone()).is_none()),
            Cell::Float(x) => assert!(vectors.insert(*id, vec![*x]).is_none()),
            other => panic!("{column} of ticket {id}: {other:?}"),
        }
    }
    (vectors, nulls)
}

/// `batchscore sql` with `--tokenizer`: the text is the call's feature argument.
#[test]
fn sql_embeds_and_classifies_text_through_a_tokenizer() {
    let s = text_scratch();
    let out = s.path("emb.parquet");
    let query = format!(
        "SELECT ticket_id, predict_output('minilm', '{{ from = \"last_hidden_state\", pool = \"mean\", normalize = true }}', text) AS embedding FROM '{}'",
        tickets()
    );
    let model = format!("minilm={}", minilm("model.onnx"));
    let tokenizer = format!("minilm={}", minilm("tokenizer.json"));
    let o = run(&[
        "sql",
        &query,
        "--model",
        &model,
        "--tokenizer",
        &tokenizer,
        "--max-length",
        "32",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_ok(&o);
    let oracle = mean_embedding_oracle(32);
    let (vectors, nulls) = vectors_and_nulls(&read_parquet(&out), "embedding");
    assert_vectors_close("embedding", &vectors, &oracle.by_id());
    // A null or empty text gets a NULL prediction, counted with its reason on stderr.
    let (null_texts, empty_texts) = null_and_empty_ids();
    assert_eq!(nulls, null_texts.union(&empty_texts).copied().collect());
    let err = text(&o).1;
    for needed in [
        "model \"minilm\": 5 rows got a NULL prediction",
        "3 × the text is null",
        "2 × the text is empty",
        &format!(
            "model \"minilm\": {} of 295 texts were cut to 32 tokens",
            oracle.truncated
        ),
    ] {
        assert!(err.contains(needed), "{needed:?} missing from:\n{err}");
    }

    // A classifier's softmax, whole and one class, on stdout as JSON Lines.
    let classifier = format!("clf={}", minilm("ticket_classifier.onnx"));
    let tokenizer = format!("clf={}", minilm("tokenizer.json"));
    let query = format!(
        "SELECT ticket_id, predict_output('clf', '{{ from = \"logits\", softmax = true }}', text) AS p, predict_output('clf', '{{ from = \"logits[0]\", softmax = true }}', text) AS p_billing FROM '{}' WHERE text <> ''",
        tickets()
    );
    let o = run(&[
        "sql",
        &query,
        "--model",
        &classifier,
        "--tokenizer",
        &tokenizer,
        "--format",
        "json",
    ]);
    assert_ok(&o);
    let (mut p, mut billing) = (BTreeMap::new(), BTreeMap::new());
    for line in text(&o).0.lines() {
        let row: serde_json::Value = serde_json::from_str(line).unwrap();
        let id = row["ticket_id"].as_i64().unwrap();
        p.insert(id, row["p"].as_array().unwrap().iter().map(num).collect());
        billing.insert(id, vec![num(&row["p_billing"])]);
    }
    let want = classifier_oracle();
    assert_vectors_close("p", &p, &want);
    let want_billing = want.iter().map(|(id, v)| (*id, vec![v[0]])).collect();
    assert_vectors_close("p_billing", &billing, &want_billing);
}

#[test]
fn sql_refuses_text_calls_that_cannot_work() {
    let model = format!("minilm={}", minilm("model.onnx"));
    let tokenizer = format!("minilm={}", minilm("tokenizer.json"));
    let from = format!("FROM '{}'", tickets());
    let pool = "'{ from = \"last_hidden_state\", pool = \"mean\" }'";
    let cases: [(String, &[&str], &[&str]); 4] = [
        (
            format!("SELECT predict_output('minilm', {pool}, text) {from}"),
            &[],
            &[
                "pools over the attention mask",
                "--tokenizer minilm=tokenizer.json",
            ],
        ),
        (
            format!("SELECT predict_output('minilm', {pool}, text, text) {from}"),
            &["--tokenizer", &tokenizer],
            &["takes 1 feature argument (the text, for its tokenizer), but 2 are given"],
        ),
        (
            format!("SELECT predict_output('minilm', '{{ from = ', text) {from}"),
            &["--tokenizer", &tokenizer],
            &["not a TOML table"],
        ),
        (
            format!("SELECT 1 {from}"),
            &["--tokenizer", "other=tokenizer.json"],
            &["--tokenizer other=tokenizer.json: no --model other"],
        ),
    ];
    for (query, extra, needed) in &cases {
        let mut args = vec!["sql", query.as_str(), "--model", &model];
        args.extend_from_slice(extra);
        let err = assert_exit(&run(&args), 2);
        for n in *needed {
            assert!(err.contains(n), "{query}: {n:?} missing from:\n{err}");
        }
    }
}
