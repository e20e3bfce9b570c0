//! The text of the job spec `batchscore init` writes, made from plain data: the model's
//! inputs and outputs and the input's columns. No I/O here, so that every rule is tested
//! on its own.
//!
//! Rules: a model input binds to the column of its own name (the spec's default, written as a
//! comment); else a tensor input of N values per row takes the columns `NAME0..NAME{N-1}`
//! (or `NAME_1..`) when exactly those exist, else the input's non-key columns of its kind
//! (numbers or text) in order when there are N of them, each written with a `# guess:`
//! comment; else a `# TODO [inputs.NAME]:` comment with the candidates and an empty
//! `columns = []`, which `validate` refuses until it is filled in.

use std::fmt::Write;

/// What a model input takes, or a column holds, as far as binding goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueKind {
    /// Integers, floats, decimals.
    Number,
    /// Strings.
    Text,
    /// Anything else (booleans, lists, dates, non-tensor model inputs).
    Other,
}

/// One model input.
#[derive(Debug, Clone)]
pub struct ModelInput {
    pub name: String,
    pub kind: ValueKind,
    /// The tensor's shape (-1 for a dynamic dimension); `None` when it is no tensor.
    pub shape: Option<Vec<i64>>,
    /// As `inspect` shows it: `tensor(float32) [?, 5]`.
    pub described: String,
}

/// One model output.
#[derive(Debug, Clone)]
pub struct ModelOutput {
    pub name: String,
    pub described: String,
    /// Whether batchscore can write it as a column.
    pub writable: bool,
    /// Whether it holds one value per class (a classifier's probabilities): the draft shows
    /// how to take one class.
    pub per_class: bool,
}

/// One column of the input (after hive partition columns are added).
#[derive(Debug, Clone)]
pub struct Column {
    pub name: String,
    pub kind: ValueKind,
    /// Its Arrow type, for comments.
    pub type_name: String,
}

/// What the draft is made from; URIs as the spec should hold them.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    pub name: &'a str,
    pub model_uri: &'a str,
    pub model_sha256: &'a str,
    pub input_uri: &'a str,
    pub output_uri: &'a str,
    pub inputs: &'a [ModelInput],
    pub outputs: &'a [ModelOutput],
    pub columns: &'a [Column],
}

/// The drafted spec and the model inputs left as TODOs.
#[derive(Debug, Clone)]
pub struct Draft {
    pub text: String,
    pub todos: Vec<String>,
}

/// How one model input is bound.
#[derive(Debug, Clone, PartialEq)]
enum Binding {
    ByName,
    Guess {
        columns: Vec<String>,
        why: String,
    },
    Todo {
        why: String,
        candidates: Vec<String>,
    },
}

/// Whether a column name looks like a row key: `id`, `key`, `uuid`, or ending in `_id`,
/// `_key`, `_uuid` (any case).
pub fn is_key_like(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    ["id", "key", "uuid"].contains(&n.as_str())
        || ["_id", "_key", "_uuid"].iter().any(|s| n.ends_with(s))
}

/// Values per row of a tensor input: 1 for `[?]` and `[?, 1]`, the product of the
/// dimensions after the first; `None` when one of them is dynamic or it is no tensor.
fn values_per_row(shape: Option<&[i64]>) -> Option<u64> {
    let shape = shape?;
    if shape.len() <= 1 {
        return Some(1);
    }
    shape[1..]
        .iter()
        .try_fold(1u64, |n, &d| u64::try_from(d).ok().map(|d| n * d))
}

/// The columns `NAME0..NAME{n-1}` or `NAME1..NAMEn` (an `_` allowed before the number), in
/// index order, when exactly those exist among `columns`.
fn indexed_columns(input: &str, columns: &[&Column], n: u64) -> Option<Vec<String>> {
    let prefix = input.to_ascii_lowercase();
    let mut found: Vec<(u64, String)> = columns
        .iter()
        .filter_map(|c| {
            let lower = c.name.to_ascii_lowercase();
            let rest = lower.strip_prefix(&prefix)?;
            let digits = rest.strip_prefix('_').unwrap_or(rest);
            let all_digits = !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit());
            let i = digits.parse().ok().filter(|_| all_digits)?;
            Some((i, c.name.clone()))
        })
        .collect();
    found.sort();
    let first = found.first()?.0;
    let consecutive = found
        .iter()
        .enumerate()
        .all(|(k, (i, _))| *i == first + k as u64);
    (first <= 1 && consecutive && found.len() as u64 == n)
        .then(|| found.into_iter().map(|(_, c)| c).collect())
}

/// How `input` binds, given the input's columns and those bound by name to other inputs.
fn bind(input: &ModelInput, columns: &[Column], taken: &[&str]) -> Binding {
    if columns.iter().any(|c| c.name == input.name) {
        return Binding::ByName;
    }
    let free: Vec<&Column> = columns
        .iter()
        .filter(|c| !taken.contains(&c.name.as_str()) && !is_key_like(&c.name))
        .collect();
    let listed = |cs: &[&Column]| -> Vec<String> {
        cs.iter()
            .map(|c| format!("{} ({})", c.name, c.type_name))
            .collect()
    };
    if input.kind == ValueKind::Other {
        return Binding::Todo {
            why: format!("batchscore cannot feed a {} input", input.described),
            candidates: listed(&free),
        };
    }
    let Some(n) = values_per_row(input.shape.as_deref()) else {
        return Binding::Todo {
            why: format!(
                "{}: its values per row are not fixed; name the columns to pack",
                input.described
            ),
            candidates: listed(&free),
        };
    };
    if let Some(columns) = indexed_columns(&input.name, &free, n) {
        let why = format!("the columns named {}0.. by their index", input.name);
        return Binding::Guess { columns, why };
    }
    let kin: Vec<&Column> = free
        .iter()
        .copied()
        .filter(|c| c.kind == input.kind)
        .collect();
    let what = if input.kind == ValueKind::Text {
        "text"
    } else {
        "numeric"
    };
    if kin.len() as u64 == n {
        let why = format!(
            "the input's {n} {what} columns in order; check the order the model was trained on"
        );
        let columns = kin.iter().map(|c| c.name.clone()).collect();
        return Binding::Guess { columns, why };
    }
    Binding::Todo {
        why: format!(
            "it takes {n} values per row ({}), the input has no column {:?} and {} {what} columns besides keys; name {n} columns or SQL expressions, in the order the model was trained on",
            input.described,
            input.name,
            kin.len()
        ),
        candidates: listed(&free),
    }
}

/// A TOML basic string (JSON's escapes are TOML's).
fn toml_str(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

/// A TOML key: bare when it can be, else quoted.
fn toml_key(s: &str) -> String {
    let bare = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if bare { s.to_string() } else { toml_str(s) }
}

fn toml_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| toml_str(s)).collect();
    format!("[{}]", quoted.join(", "))
}

/// Drafts the spec.
pub fn draft(r: &Request) -> Draft {
    // Columns bound by name, then those an earlier input's guess took, are no candidates.
    let mut taken: Vec<&str> = r
        .inputs
        .iter()
        .filter(|i| r.columns.iter().any(|c| c.name == i.name))
        .map(|i| i.name.as_str())
        .collect();
    let mut bindings: Vec<(&ModelInput, Binding)> = Vec::new();
    for input in r.inputs {
        let b = bind(input, r.columns, &taken);
        if let Binding::Guess { columns, .. } = &b {
            let guessed = r.columns.iter().filter(|c| columns.contains(&c.name));
            taken.extend(guessed.map(|c| c.name.as_str()));
        }
        bindings.push((input, b));
    }
    let todos: Vec<String> = bindings
        .iter()
        .filter(|(_, b)| matches!(b, Binding::Todo { .. }))
        .map(|(i, _)| i.name.clone())
        .collect();
    let mut s = String::new();
    head(&mut s, r, &todos);
    inputs_section(&mut s, &bindings);
    output_section(&mut s, r, &bindings, todos.is_empty());
    outputs_section(&mut s, r.outputs);
    Draft { text: s, todos }
}

/// The header comment, `name`, `[input]` and `[model]`.
fn head(s: &mut String, r: &Request, todos: &[String]) {
    let _ = writeln!(
        s,
        "# Job spec drafted by `batchscore init` for the model {} and the input {}.",
        r.model_uri, r.input_uri
    );
    let _ = writeln!(
        s,
        "# Check every `guess:`, then `batchscore validate` and `batchscore run` it."
    );
    let _ = writeln!(
        s,
        "# Relative paths resolve against this file's folder; `batchscore schema job` describes every key."
    );
    if !todos.is_empty() {
        let list: Vec<String> = todos.iter().map(|t| format!("[inputs.{t}]")).collect();
        let _ = writeln!(s, "# Finish every TODO first: {}", list.join(", "));
    }
    let _ = writeln!(s, "name = {}\n", toml_str(r.name));
    let _ = writeln!(s, "[input]\nuri = {}", toml_str(r.input_uri));
    let cols: Vec<String> = r
        .columns
        .iter()
        .map(|c| format!("{} ({})", c.name, c.type_name))
        .collect();
    let _ = writeln!(s, "# columns: {}", cols.join(", "));
    let _ = writeln!(
        s,
        "# query = \"SELECT * FROM input WHERE ...\"   # DataFusion SQL over the table `input`\n"
    );
    let _ = writeln!(s, "[model]\nuri = {}", toml_str(r.model_uri));
    let _ = writeln!(
        s,
        "# sha256 = {}   # refuse any other model file\n",
        toml_str(r.model_sha256)
    );
}

/// `[inputs.NAME]` tables, and comments for the inputs bound by name.
fn inputs_section(s: &mut String, bindings: &[(&ModelInput, Binding)]) {
    let _ = writeln!(
        s,
        "# Model inputs: one not listed in [inputs] takes the input column of its own name."
    );
    for (input, b) in bindings {
        let key = toml_key(&input.name);
        match b {
            Binding::ByName => {
                let _ = writeln!(
                    s,
                    "# {}: {}, from the column {}",
                    input.name,
                    input.described,
                    toml_str(&input.name)
                );
            }
            Binding::Guess { columns, why } => {
                let _ = writeln!(s, "\n[inputs.{key}]   # {}", input.described);
                let _ = writeln!(s, "# guess: {why}");
                let _ = writeln!(s, "columns = {}", toml_list(columns));
            }
            Binding::Todo { why, candidates } => {
                let _ = writeln!(s, "\n[inputs.{key}]   # {}", input.described);
                let _ = writeln!(s, "# TODO [inputs.{}]: {why}", input.name);
                let _ = writeln!(s, "# candidates: {}", candidates.join(", "));
                let _ = writeln!(s, "columns = []");
            }
        }
    }
    s.push('\n');
}

/// `[output]`: the URI, and the key-like columns as pass-through.
fn output_section(s: &mut String, r: &Request, bindings: &[(&ModelInput, Binding)], bound: bool) {
    let _ = writeln!(s, "[output]");
    let _ = writeln!(
        s,
        "uri = {}   # a folder, local or s3://, gs://, az://",
        toml_str(r.output_uri)
    );
    let _ = writeln!(s, "# format = \"csv\"   # default \"parquet\"");
    let keys: Vec<String> = r
        .columns
        .iter()
        .filter(|c| is_key_like(&c.name))
        .map(|c| c.name.clone())
        .collect();
    let read: Vec<&str> = bindings
        .iter()
        .flat_map(|(i, b)| match b {
            Binding::ByName => vec![i.name.as_str()],
            Binding::Guess { columns, .. } => columns.iter().map(String::as_str).collect(),
            Binding::Todo { .. } => Vec::new(),
        })
        .collect();
    let unread: Vec<String> = r
        .columns
        .iter()
        .filter(|c| !read.contains(&c.name.as_str()))
        .map(|c| c.name.clone())
        .collect();
    if !keys.is_empty() {
        let _ = writeln!(
            s,
            "passthrough = {}   # the input's key-like columns, copied to every output row",
            toml_list(&keys)
        );
    } else if bound && (1..=3).contains(&unread.len()) {
        let _ = writeln!(
            s,
            "# guess: no column is named like a key (id, *_id, key, uuid); these are the ones the model does not read"
        );
        let _ = writeln!(s, "passthrough = {}", toml_list(&unread));
    } else {
        let _ = writeln!(
            s,
            "passthrough = []   # no column is named like a key: name those that tell rows apart"
        );
    }
    let _ = writeln!(
        s,
        "# mode = \"overwrite\"   # default \"error\": refuse when the folder holds output already\n"
    );
}

/// `[outputs]`: every model output under its own name.
fn outputs_section(s: &mut String, outputs: &[ModelOutput]) {
    let _ = writeln!(
        s,
        "[outputs]\n# column = model output; \"output[i]\" takes element i of its last axis"
    );
    for o in outputs {
        let (key, value) = (toml_key(&o.name), toml_str(&o.name));
        if o.writable {
            let _ = writeln!(s, "{key} = {value}   # {}", o.described);
        } else {
            let _ = writeln!(
                s,
                "# {key} = {value}   # {}: batchscore cannot write it",
                o.described
            );
        }
        if o.per_class {
            let one = toml_key(&format!("{}_1", o.name));
            let _ = writeln!(
                s,
                "# {one} = {}   # one class's probability as a column of its own",
                toml_str(&format!("{}[1]", o.name))
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(name: &str, kind: ValueKind) -> Column {
        Column {
            name: name.into(),
            kind,
            type_name: "t".into(),
        }
    }

    fn tensor(name: &str, kind: ValueKind, shape: &[i64]) -> ModelInput {
        ModelInput {
            name: name.into(),
            kind,
            shape: Some(shape.to_vec()),
            described: format!("tensor {shape:?}"),
        }
    }

    fn request<'a>(
        inputs: &'a [ModelInput],
        outputs: &'a [ModelOutput],
        columns: &'a [Column],
    ) -> Request<'a> {
        Request {
            name: "m",
            model_uri: "m.onnx",
            model_sha256: "ab",
            input_uri: "d.parquet",
            output_uri: "out/m/",
            inputs,
            outputs,
            columns,
        }
    }

    #[test]
    fn key_like_names() {
        for k in ["id", "ID", "txn_id", "house_Key", "row_uuid", "key"] {
            assert!(is_key_like(k), "{k}");
        }
        for k in ["idx", "paid", "valid", "keys", "monkey", "uuids"] {
            assert!(!is_key_like(k), "{k}");
        }
    }

    #[test]
    fn values_per_row_of_shapes() {
        assert_eq!(values_per_row(Some(&[-1])), Some(1));
        assert_eq!(values_per_row(Some(&[-1, 1])), Some(1));
        assert_eq!(values_per_row(Some(&[1, 4])), Some(4));
        assert_eq!(values_per_row(Some(&[-1, 2, 3])), Some(6));
        assert_eq!(values_per_row(Some(&[-1, -1])), None);
        assert_eq!(values_per_row(None), None);
    }

    #[test]
    fn binds_by_name_then_index_then_numeric_order_else_todo() {
        use ValueKind::*;
        let cols = [
            col("row_id", Number),
            col("a", Number),
            col("x0", Number),
            col("x1", Number),
            col("x2", Number),
            col("name", Text),
        ];
        assert_eq!(
            bind(&tensor("a", Number, &[-1]), &cols, &["a"]),
            Binding::ByName
        );
        let Binding::Guess { columns, .. } = bind(&tensor("x", Number, &[-1, 3]), &cols, &["a"])
        else {
            panic!("no guess by index")
        };
        assert_eq!(columns, ["x0", "x1", "x2"]);
        // Four numbers besides the key and the column bound to `a`? No: three, so [?, 4] is a TODO.
        let b = bind(&tensor("f", Number, &[-1, 4]), &cols, &["a"]);
        let Binding::Todo { why, candidates } = b else {
            panic!("{b:?}")
        };
        assert!(why.contains("takes 4 values per row"), "{why}");
        assert!(!candidates.iter().any(|c| c.starts_with("row_id")));
        let Binding::Guess { columns, why } = bind(&tensor("f", Number, &[-1, 3]), &cols, &["a"])
        else {
            panic!("no guess in order")
        };
        // x0..x2 are also "f"'s three numeric columns in order, besides a and the key.
        assert_eq!(columns, ["x0", "x1", "x2"]);
        assert!(why.contains("3 numeric columns in order"), "{why}");
        let Binding::Guess { columns, .. } = bind(&tensor("s", Text, &[-1, 1]), &cols, &[]) else {
            panic!("no text guess")
        };
        assert_eq!(columns, ["name"]);
        assert!(matches!(
            bind(&tensor("f", Number, &[-1, -1]), &cols, &[]),
            Binding::Todo { .. }
        ));
    }

    #[test]
    fn draft_parses_and_lists_todos_outputs_and_keys() {
        use ValueKind::*;
        let inputs = [
            tensor("features", Number, &[-1, 5]),
            tensor("plan", Text, &[-1, 1]),
        ];
        let outputs = [
            ModelOutput {
                name: "label".into(),
                described: "tensor(int64) [?]".into(),
                writable: true,
                per_class: false,
            },
            ModelOutput {
                name: "probabilities".into(),
                described: "tensor(float32) [?, 2]".into(),
                writable: true,
                per_class: true,
            },
        ];
        let cols = [
            col("customer_id", Number),
            col("plan", Text),
            col("tenure", Number),
        ];
        let d = draft(&request(&inputs, &outputs, &cols));
        assert_eq!(d.todos, ["features"]);
        let v: toml::Value = toml::from_str(&d.text).unwrap();
        assert_eq!(
            v["inputs"]["features"]["columns"].as_array().unwrap().len(),
            0
        );
        assert!(v["inputs"].get("plan").is_none(), "{}", d.text);
        assert_eq!(v["output"]["passthrough"][0].as_str(), Some("customer_id"));
        assert_eq!(v["outputs"]["label"].as_str(), Some("label"));
        assert_eq!(
            v["outputs"]["probabilities"].as_str(),
            Some("probabilities")
        );
        assert!(d.text.contains("# TODO [inputs.features]:"), "{}", d.text);
        assert!(d.text.contains("\"probabilities[1]\""), "{}", d.text);
    }

    #[test]
    fn odd_names_are_quoted_and_unread_columns_pass_through_without_keys() {
        use ValueKind::*;
        let inputs = [tensor("in put", Number, &[-1, 1])];
        let outputs = [];
        let cols = [col("account", Text), col("in \"x\"", Number)];
        let d = draft(&request(&inputs, &outputs, &cols));
        let v: toml::Value = toml::from_str(&d.text).unwrap();
        assert_eq!(
            v["inputs"]["in put"]["columns"][0].as_str(),
            Some("in \"x\"")
        );
        assert_eq!(v["output"]["passthrough"][0].as_str(), Some("account"));
    }

    #[test]
    fn a_column_guessed_for_one_input_is_no_candidate_for_the_next() {
        use ValueKind::*;
        let inputs = [tensor("p", Number, &[-1, 1]), tensor("q", Number, &[-1, 1])];
        let cols = [col("id", Number), col("v", Number)];
        let d = draft(&request(&inputs, &[], &cols));
        assert_eq!(d.todos, ["q"], "{}", d.text);
        let v: toml::Value = toml::from_str(&d.text).unwrap();
        assert_eq!(v["inputs"]["p"]["columns"][0].as_str(), Some("v"));
    }
}
