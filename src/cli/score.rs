//! `batchscore score MODEL INPUT`: a run without a job spec. The command line becomes a spec
//! ([`spec_text`], which `--print-spec` prints), and that spec runs as `run` runs one, so an
//! ad-hoc run and a nightly job never differ in what they do. `-` as the input spools stdin
//! to a file first (CSV as it is, JSON Lines as Parquet); `-` as the output scores into a
//! temporary folder and prints the committed rows, so nothing reaches stdout unless the run
//! succeeded.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};

use toml::{Table, Value};

use super::progress::ProgressMode;
use super::run::How;
use crate::output::stdout::{BatchPrinter, StreamFormat};
use crate::spec;
use crate::spec::text::TOKEN_INPUTS;

pub const AFTER_HELP: &str = "\
Examples:
  batchscore score model.onnx customers.parquet -o preds/ --key customer_id
  batchscore score churn.onnx data/ -o - --key customer_id \\
      --columns 'features=tenure,monthly_charges,total_charges,ln(1 + support_calls),is_senior' \\
      --output p=probabilities[1] --fill-null 0
  batchscore score model.onnx s3://bucket/rows/ -o s3://bucket/preds/ --columns input=f00..f27
  cat rows.csv | batchscore score model.onnx - -o - --key id | head
  batchscore score model.onnx rows.parquet -o preds/ --print-spec > job.toml
  batchscore score minilm.onnx tickets.parquet -o emb/ --key ticket_id \\
      --tokenizer tokenizer.json --text text --max-length 128 \\
      --output 'embedding={ from = \"last_hidden_state\", pool = \"mean\", normalize = true }'

Model inputs bind to the input's columns of the same name unless --columns says otherwise.
With -o -, predictions go to stdout (a table on a terminal, else CSV; --format json for JSON
Lines) once the whole input is scored; rejected rows go to --rejected, and are counted on
stderr. Exit codes are run's.";

/// `batchscore score`'s arguments.
#[derive(Debug, clap::Args)]
pub struct ScoreArgs {
    /// The ONNX model: a path or URI, as `[model] uri` takes.
    pub model: String,
    /// The rows: a file, folder, glob or URI, as `[input] uri` takes; `-` reads CSV or JSON
    /// Lines from stdin.
    pub input: String,
    /// Where predictions go: a folder or URI (committed as a run's output), or `-` for stdout.
    #[arg(short = 'o', long = "out", value_name = "FOLDER|-")]
    pub out: String,
    /// Input columns copied to each output row before the predictions (comma-separated or
    /// repeated). Default: none.
    #[arg(long = "key", value_name = "COLUMN", value_delimiter = ',')]
    pub keys: Vec<String>,
    /// A tensor input's columns, in order: `NAME=a,b,ln(1 + c)` (commas inside parentheses
    /// do not split) or a range `NAME=f00..f27`; repeatable. Default: each model input takes
    /// the column of its name.
    #[arg(long = "columns", value_name = "INPUT=COLUMNS")]
    pub columns: Vec<String>,
    /// A Hugging Face tokenizer.json, a path or URI as `[tokenizer] uri` takes: the text of
    /// --text then fills the model's input_ids, attention_mask and token_type_ids. Default:
    /// none.
    #[arg(long, value_name = "URI", requires = "text")]
    pub tokenizer: Option<String>,
    /// With --tokenizer: the text to tokenize, a column or an SQL expression.
    #[arg(long, value_name = "COLUMN|SQL", requires = "tokenizer")]
    pub text: Option<String>,
    /// With --tokenizer: tokens per text at most, special tokens included; longer texts are
    /// cut. Default: the tokenizer file's truncation length, else 512.
    #[arg(long, value_name = "N", requires = "tokenizer")]
    pub max_length: Option<u32>,
    /// An output column, as in `[outputs]`: `NAME=OUTPUT`, `NAME=OUTPUT[i]`, or a
    /// TOML table such as `NAME={ from = "last_hidden_state", pool = "mean", normalize = true }`;
    /// repeatable.
    /// Default: every model output, under its own name.
    #[arg(long = "output", value_name = "NAME=OUTPUT")]
    pub outputs: Vec<String>,
    /// The value used where a feature is null (a number, true/false, or text). Default: none;
    /// a row with a null feature is rejected.
    #[arg(long, value_name = "VALUE")]
    pub fill_null: Option<String>,
    /// DataFusion SQL over the table `input`, whose result is scored.
    #[arg(long, value_name = "SQL")]
    pub query: Option<String>,
    /// A value for ${NAME} in any argument; repeatable.
    #[arg(long = "var", value_name = "NAME=VALUE", value_parser = spec::parse_var)]
    pub vars: Vec<(String, String)>,
    /// The output's format: parquet or csv for a folder (default parquet); table, csv or json
    /// (JSON Lines) for stdout (default: table on a terminal, else csv).
    #[arg(long, value_enum)]
    pub format: Option<ScoreFormat>,
    /// The input's format when its name does not tell: parquet or csv; for stdin, csv or
    /// json. Default: from the extension, or for stdin from the first character.
    #[arg(long, value_enum)]
    pub input_format: Option<StdinFormat>,
    /// With `-o -`: a folder to write the rejected rows to (Parquet, with their reasons).
    /// Default: they are only counted, on stderr.
    #[arg(long, value_name = "FOLDER")]
    pub rejected: Option<PathBuf>,
    /// Replace what the output folder holds. Default: refuse a folder that holds anything.
    #[arg(long)]
    pub overwrite: bool,
    /// Print the job spec this command line amounts to, and exit without scoring.
    #[arg(long)]
    pub print_spec: bool,
    /// When to show a progress bar.
    #[arg(long, value_enum, default_value_t = ProgressMode::Auto)]
    pub progress: ProgressMode,
    /// Print the run's metrics as JSON instead of the summary line.
    #[arg(long)]
    pub json: bool,
}

/// Output formats of `score`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ScoreFormat {
    Parquet,
    Csv,
    Json,
    Table,
}

/// Input formats `score` reads besides what a spec reads (JSON Lines on stdin).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StdinFormat {
    Parquet,
    Csv,
    Json,
}

/// A command line that cannot become a job (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum ScoreError {
    #[error("{flag} {value:?}: {why}")]
    Flag {
        flag: &'static str,
        value: String,
        why: String,
    },
    #[error("stdin: {0}")]
    Stdin(String),
}

fn flag_error(flag: &'static str, value: &str, why: impl Into<String>) -> ScoreError {
    ScoreError::Flag {
        flag,
        value: value.to_string(),
        why: why.into(),
    }
}

/// Runs `batchscore score`.
pub async fn score(args: ScoreArgs, ort_lib: Option<&Path>) -> anyhow::Result<()> {
    let to_stdout = args.out == "-";
    check_formats(&args, to_stdout)?;
    let by_name = filled_by_name(&args, ort_lib).await?;
    if args.print_spec {
        print!("{}", spec_text(&args, &args.input, &args.out, &by_name)?);
        return Ok(());
    }
    let scratch = Scratch::new()?;
    let input = match args.input.as_str() {
        "-" => spool_stdin(&scratch.0, args.input_format)?
            .display()
            .to_string(),
        other => other.to_string(),
    };
    let out = if to_stdout {
        scratch.0.join("out").display().to_string()
    } else {
        args.out.clone()
    };
    let text = spec_text(&args, &input, &out, &by_name)?;
    let vars: BTreeMap<String, String> = args.vars.iter().cloned().collect();
    let loaded = spec::load_str(
        &text,
        Path::new("(the command line)"),
        &std::env::current_dir()?,
        &vars,
    )?;
    let how = How {
        progress: args.progress,
        json: args.json,
        resume: false,
        report_on_stderr: to_stdout,
    };
    let result = super::run::run(loaded, how, ort_lib).await;
    let result = match result {
        Err(e) => Err(with_binding_hint(e, &args, &input, ort_lib).await),
        ok => ok,
    };
    if to_stdout {
        // Alert rules cannot be set here, so a committed run is an `Ok`.
        result?;
        return match print_output(&scratch.0.join("out"), &args) {
            // `| head` closed the pipe: what was wanted was printed.
            Err(e) if is_broken_pipe(&e) => Ok(()),
            other => other,
        };
    }
    result
}

/// With `--fill-null`, the model inputs that bind by name (not given by `--columns`): each
/// becomes an `[inputs.NAME]` of its own column, to carry the fill value.
async fn filled_by_name(args: &ScoreArgs, ort_lib: Option<&Path>) -> anyhow::Result<Vec<String>> {
    if args.fill_null.is_none() {
        return Ok(Vec::new());
    }
    crate::model::init_runtime(ort_lib)?;
    let stores = crate::storage::StoreFactory::default();
    let model = crate::model::Model::load(&args.model, None, &stores).await?;
    let given: Vec<&str> = args
        .columns
        .iter()
        .filter_map(|c| c.split_once('=').map(|(n, _)| n.trim()))
        .collect();
    Ok(model
        .inputs
        .iter()
        .map(|i| i.name.clone())
        .filter(|n| !given.contains(&n.as_str()))
        // The tokenizer fills these.
        .filter(|n| args.tokenizer.is_none() || !TOKEN_INPUTS.contains(&n.as_str()))
        .collect())
}

/// Refuses a format the output cannot take.
fn check_formats(args: &ScoreArgs, to_stdout: bool) -> Result<(), ScoreError> {
    let bad = match (args.format, to_stdout) {
        (Some(ScoreFormat::Parquet), true) => {
            Some("Parquet cannot go to stdout: give -o a folder, or --format csv|json|table")
        }
        (Some(ScoreFormat::Json | ScoreFormat::Table), false) => {
            Some("a folder takes parquet or csv; json and table are for -o -")
        }
        _ => None,
    };
    if let Some(why) = bad {
        let value = format!("{:?}", args.format).to_lowercase();
        return Err(flag_error("--format", &value, why));
    }
    if args.rejected.is_some() && !to_stdout {
        return Err(flag_error(
            "--rejected",
            &args.out,
            "is for -o -: a folder output keeps its rejected rows in _rejected/",
        ));
    }
    if args.input_format == Some(StdinFormat::Json) && args.input != "-" {
        return Err(flag_error(
            "--input-format",
            "json",
            "JSON Lines are read from stdin only (INPUT -)",
        ));
    }
    Ok(())
}

/// The job spec the command line amounts to, as TOML: paths absolute, `${…}` references as
/// given (never resolved), reading `input` and writing `out`.
pub fn spec_text(
    args: &ScoreArgs,
    input: &str,
    out: &str,
    by_name: &[String],
) -> Result<String, ScoreError> {
    let mut job = Table::new();
    job.insert(
        "name".into(),
        format!("score-{}", model_stem(&args.model)).into(),
    );
    job.insert("input".into(), input_table(args, input).into());
    let mut model = Table::new();
    model.insert("uri".into(), absolute(&args.model).into());
    job.insert("model".into(), model.into());
    if let Some(t) = tokenizer_table(args) {
        job.insert("tokenizer".into(), t.into());
    }
    let inputs = input_bindings(args, by_name)?;
    if !inputs.is_empty() {
        job.insert("inputs".into(), inputs.into());
    }
    job.insert("output".into(), output_table(args, out).into());
    let outputs = output_columns(&args.outputs)?;
    if !outputs.is_empty() {
        job.insert("outputs".into(), outputs.into());
    }
    let body = toml::to_string(&job).map_err(|e| flag_error("--output", out, e.to_string()))?;
    let stdin_note = if input == "-" {
        "# The input was stdin: put the path of the saved rows in [input] uri.\n"
    } else {
        ""
    };
    Ok(format!(
        "# The job `batchscore score` ran; save it and run it with `batchscore run FILE`.\n{stdin_note}{body}"
    ))
}

fn model_stem(model: &str) -> String {
    let name = model.rsplit('/').next().unwrap_or(model);
    let stem = name.strip_suffix(".onnx").unwrap_or(name);
    let clean: String = stem
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    if clean.is_empty() {
        "model".into()
    } else {
        clean
    }
}

/// A local path made absolute; URIs (`s3://…`, `file://…`), `-` and `${…}` as given.
fn absolute(uri: &str) -> String {
    if uri == "-" || uri.contains("://") || uri.starts_with("${") {
        return uri.to_string();
    }
    let trailing = if uri.ends_with('/') { "/" } else { "" };
    let Ok(path) = std::path::absolute(uri) else {
        return uri.to_string();
    };
    // `..` taken away by hand: the path may not exist yet, so it cannot be canonicalized.
    let mut clean = PathBuf::new();
    for part in path.components() {
        match part {
            std::path::Component::ParentDir => {
                clean.pop();
            }
            other => clean.push(other),
        }
    }
    let text = clean.display().to_string();
    if text.ends_with('/') {
        text
    } else {
        format!("{text}{trailing}")
    }
}

fn input_table(args: &ScoreArgs, input: &str) -> Table {
    let mut t = Table::new();
    t.insert("uri".into(), absolute(input).into());
    let format = match args.input_format {
        Some(StdinFormat::Csv) => Some("csv"),
        Some(StdinFormat::Parquet) => Some("parquet"),
        Some(StdinFormat::Json) | None => None,
    };
    if let Some(f) = format.filter(|_| args.input != "-") {
        t.insert("format".into(), f.into());
    }
    if let Some(q) = &args.query {
        t.insert("query".into(), q.clone().into());
    }
    t
}

/// `[tokenizer]` from `--tokenizer`, `--text` and `--max-length` (clap makes them come
/// together).
fn tokenizer_table(args: &ScoreArgs) -> Option<Table> {
    let (uri, text) = (args.tokenizer.as_ref()?, args.text.as_ref()?);
    let mut t = Table::new();
    t.insert("uri".into(), absolute(uri).into());
    t.insert("text".into(), text.clone().into());
    if let Some(n) = args.max_length {
        t.insert("max_length".into(), i64::from(n).into());
    }
    Some(t)
}

fn output_table(args: &ScoreArgs, out: &str) -> Table {
    let mut t = Table::new();
    t.insert("uri".into(), absolute(out).into());
    if args.format == Some(ScoreFormat::Csv) && args.out != "-" {
        t.insert("format".into(), "csv".into());
    }
    if !args.keys.is_empty() {
        let keys: Vec<Value> = args.keys.iter().map(|k| k.trim().into()).collect();
        t.insert("passthrough".into(), keys.into());
    }
    if args.overwrite {
        t.insert("mode".into(), "overwrite".into());
    }
    t
}

/// `[inputs]` from `--columns`, and the inputs in `by_name` each from its own column; each
/// with `--fill-null`.
fn input_bindings(args: &ScoreArgs, by_name: &[String]) -> Result<Table, ScoreError> {
    let mut inputs = Table::new();
    let by_name = by_name.iter().map(|n| (n.as_str(), vec![n.clone()]));
    let mut given = Vec::new();
    for g in &args.columns {
        let (name, list) = g.split_once('=').ok_or_else(|| {
            flag_error(
                "--columns",
                g,
                "expected INPUT=COLUMNS, e.g. features=a,b,c",
            )
        })?;
        given.push((
            name.trim(),
            expand_columns(list).map_err(|why| flag_error("--columns", g, why))?,
        ));
    }
    for (name, columns) in given.into_iter().chain(by_name) {
        let mut t = Table::new();
        let list: Vec<Value> = columns.into_iter().map(Value::from).collect();
        t.insert("columns".into(), list.into());
        if let Some(fill) = &args.fill_null {
            t.insert("fill_null".into(), fill_value(fill));
        }
        inputs.insert(name.to_string(), t.into());
    }
    Ok(inputs)
}

/// `0` and `0.5` as numbers, `true`/`false` as booleans, anything else as text.
fn fill_value(text: &str) -> Value {
    if let Ok(n) = text.trim().parse::<f64>() {
        return Value::Float(n);
    }
    match text.trim() {
        "true" => Value::Boolean(true),
        "false" => Value::Boolean(false),
        _ => Value::String(text.to_string()),
    }
}

/// `[outputs]` from `--output NAME=OUTPUT`.
fn output_columns(given: &[String]) -> Result<Table, ScoreError> {
    let mut t = Table::new();
    for g in given {
        let (name, expr) = g.split_once('=').ok_or_else(|| {
            flag_error(
                "--output",
                g,
                "expected NAME=OUTPUT, e.g. p=probabilities[1]",
            )
        })?;
        let value = spec::OutputColumn::parse_inline(expr.trim())
            .map_err(|why| flag_error("--output", g, why))?;
        if t.insert(name.trim().to_string(), value).is_some() {
            return Err(flag_error(
                "--output",
                g,
                format!("column {:?} is given twice", name.trim()),
            ));
        }
    }
    Ok(t)
}

/// Splits `a,b,ln(1 + c)` at the commas outside parentheses and quotes, and expands each
/// range `f00..f27` (the same prefix, numbers counted with the first one's zero padding).
pub fn expand_columns(list: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for item in split_top_level(list)? {
        let item = item.trim();
        if item.is_empty() {
            return Err("an empty column (two commas in a row, or one at an end)".into());
        }
        match expand_range(item)? {
            Some(names) => out.extend(names),
            None => out.push(item.to_string()),
        }
    }
    Ok(out)
}

fn split_top_level(list: &str) -> Result<Vec<String>, String> {
    let (mut parts, mut current, mut depth, mut quote) = (Vec::new(), String::new(), 0i32, None);
    for c in list.chars() {
        match (c, quote) {
            ('\'' | '"', None) => quote = Some(c),
            (q, Some(open)) if q == open => quote = None,
            (_, Some(_)) => {}
            ('(', None) => depth += 1,
            (')', None) => depth -= 1,
            (',', None) if depth == 0 => {
                parts.push(std::mem::take(&mut current));
                continue;
            }
            _ => {}
        }
        if depth < 0 {
            return Err("a ')' without its '('".into());
        }
        current.push(c);
    }
    if depth != 0 || quote.is_some() {
        return Err("an unclosed '(' or quote".into());
    }
    parts.push(current);
    Ok(parts)
}

/// `f00..f27` → `f00`, `f01`, … `f27`; `None` when `item` is not a range.
fn expand_range(item: &str) -> Result<Option<Vec<String>>, String> {
    let Some((from, to)) = item.split_once("..") else {
        return Ok(None);
    };
    let split = |s: &str| {
        let digits = s.len() - s.trim_end_matches(|c: char| c.is_ascii_digit()).len();
        let (prefix, number) = s.split_at(s.len() - digits);
        (prefix.to_string(), number.to_string())
    };
    let ((p1, n1), (p2, n2)) = (split(from.trim()), split(to.trim()));
    let bad = || format!("{item:?} is not a range like f00..f27 (one prefix, numbers at the end)");
    if n1.is_empty() || n2.is_empty() || p1 != p2 || p1.contains(['(', ' ']) {
        return Err(bad());
    }
    let (a, b): (u64, u64) = (
        n1.parse().map_err(|_| bad())?,
        n2.parse().map_err(|_| bad())?,
    );
    if b < a || b - a >= 100_000 {
        return Err(format!(
            "{item:?}: the range must count up, by fewer than 100000"
        ));
    }
    let width = if n1.starts_with('0') && n1.len() > 1 {
        n1.len()
    } else {
        0
    };
    Ok(Some((a..=b).map(|i| format!("{p1}{i:0width$}")).collect()))
}

/// A folder of this process's own, removed when the command ends.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> std::io::Result<Self> {
        let dir = std::env::temp_dir().join(format!("batchscore-score-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir)?;
        Ok(Self(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Saves stdin under `dir`: CSV as it is, JSON Lines as Parquet (its schema inferred from
/// every line). Returns the file to score.
fn spool_stdin(dir: &Path, format: Option<StdinFormat>) -> Result<PathBuf, ScoreError> {
    let mut bytes = Vec::new();
    std::io::stdin()
        .read_to_end(&mut bytes)
        .map_err(|e| ScoreError::Stdin(format!("cannot read: {e}")))?;
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    let Some(first) = first else {
        return Err(ScoreError::Stdin("is empty: no rows to score".into()));
    };
    let json = match format {
        Some(StdinFormat::Json) => true,
        Some(StdinFormat::Csv) => false,
        Some(StdinFormat::Parquet) => {
            return Err(ScoreError::Stdin(
                "Parquet is not read from stdin: save it to a file and give its path".into(),
            ));
        }
        None => *first == b'{',
    };
    if !json {
        let path = dir.join("stdin.csv");
        std::fs::write(&path, &bytes).map_err(|e| ScoreError::Stdin(e.to_string()))?;
        return Ok(path);
    }
    let path = dir.join("stdin.parquet");
    json_lines_to_parquet(&bytes, &path)
        .map_err(|e| ScoreError::Stdin(format!("JSON Lines: {e}")))?;
    Ok(path)
}

fn json_lines_to_parquet(bytes: &[u8], path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    use datafusion::arrow::json::ReaderBuilder;
    use datafusion::arrow::json::reader::infer_json_schema_from_seekable;
    let (schema, _) = infer_json_schema_from_seekable(std::io::Cursor::new(bytes), None)?;
    let schema = std::sync::Arc::new(schema);
    let reader = ReaderBuilder::new(schema.clone()).build(std::io::Cursor::new(bytes))?;
    let file = std::fs::File::create(path)?;
    let mut writer = datafusion::parquet::arrow::ArrowWriter::try_new(file, schema, None)?;
    for batch in reader {
        writer.write(&batch?)?;
    }
    writer.close()?;
    Ok(())
}

/// Prints the committed output of `out` (its parts, in the manifest's order) on stdout, and
/// moves its rejected rows to `--rejected`.
fn print_output(out: &Path, args: &ScoreArgs) -> anyhow::Result<()> {
    let manifest: crate::report::Manifest =
        serde_json::from_slice(&std::fs::read(out.join(crate::output::MANIFEST_FILE))?)?;
    let format = match args.format {
        Some(ScoreFormat::Csv) => StreamFormat::Csv,
        Some(ScoreFormat::Json) => StreamFormat::Json,
        Some(ScoreFormat::Table) => StreamFormat::Table,
        _ => StreamFormat::default_for(std::io::stdout().is_terminal()),
    };
    let stdout = std::io::stdout().lock();
    let mut printer = BatchPrinter::new(format, std::io::BufWriter::new(stdout));
    for part in &manifest.files {
        let file = std::fs::File::open(out.join(&part.path))?;
        let reader =
            datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
                file,
            )?
            .build()?;
        for batch in reader {
            printer.write(&batch?)?;
        }
    }
    printer.finish()?;
    if let Some(dest) = &args.rejected {
        keep_rejected(out, &manifest, dest)?;
    }
    Ok(())
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        let io = c.downcast_ref::<std::io::Error>();
        let arrow = c.downcast_ref::<datafusion::arrow::error::ArrowError>();
        io.is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            || matches!(arrow, Some(datafusion::arrow::error::ArrowError::IoError(_, io)) if io.kind() == std::io::ErrorKind::BrokenPipe)
            || c.to_string().contains("Broken pipe")
    })
}

/// Moves the rejected parts into `dest` (created; refused when it holds anything).
fn keep_rejected(out: &Path, m: &crate::report::Manifest, dest: &Path) -> anyhow::Result<()> {
    if dest.read_dir().is_ok_and(|mut d| d.next().is_some()) {
        anyhow::bail!(
            "--rejected {}: holds files already; the rejected rows are not written",
            dest.display()
        );
    }
    std::fs::create_dir_all(dest)?;
    for part in &m.rejected_files {
        let from = out.join(&part.path);
        let name = Path::new(&part.path).file_name().unwrap_or_default();
        // A rename across file systems fails: copy instead.
        if std::fs::rename(&from, dest.join(name)).is_err() {
            std::fs::copy(&from, dest.join(name))?;
        }
    }
    std::io::stderr().flush()?;
    Ok(())
}

/// A binding error, with what `score` users need to fix it: the model's inputs, the input's
/// columns, and the flag that binds them.
async fn with_binding_hint(
    e: anyhow::Error,
    args: &ScoreArgs,
    input: &str,
    ort_lib: Option<&Path>,
) -> anyhow::Error {
    let Some(crate::run::RunError::Spec(spec_error)) = e.downcast_ref::<crate::run::RunError>()
    else {
        return e;
    };
    if !spec_error
        .problems
        .iter()
        .any(|p| p.key.starts_with("inputs"))
    {
        return e;
    }
    let mut spec_error = crate::diagnostics::SpecError {
        file: spec_error.file.clone(),
        problems: spec_error.problems.clone(),
    };
    let hint = binding_hint(args, input, ort_lib).await;
    spec_error
        .problems
        .push(crate::diagnostics::Problem::new("", hint));
    crate::run::RunError::Spec(spec_error).into()
}

async fn binding_hint(args: &ScoreArgs, input: &str, ort_lib: Option<&Path>) -> String {
    let stores = crate::storage::StoreFactory::default();
    let model_inputs = match crate::model::init_runtime(ort_lib) {
        Ok(_) => crate::model::Model::load(&args.model, None, &stores)
            .await
            .map(|m| {
                m.inputs
                    .iter()
                    .map(|i| format!("{} ({})", i.name, i.kind))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_else(|e| e.to_string()),
        Err(e) => e.to_string(),
    };
    let ctx = crate::input::session_context(&crate::spec::RunSpec::default());
    let input_spec = crate::spec::InputSpec {
        uri: input.to_string(),
        format: None,
        query: args.query.clone(),
        csv: Default::default(),
    };
    let columns = match crate::input::open_input(&ctx, &input_spec, &stores, 1024, None).await {
        Ok(opened) => opened
            .frame
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect::<Vec<_>>()
            .join(", "),
        Err(_) => "(the input could not be opened)".into(),
    };
    format!(
        "the model's inputs: {model_inputs}; the input's columns: {columns}. A per-column model's inputs bind to the columns of their names; bind a tensor input with --columns INPUT=a,b,ln(1 + c) or --columns INPUT=f00..f27, and fill nulls with --fill-null"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commas_inside_parentheses_and_quotes_do_not_split() {
        assert_eq!(
            expand_columns("a, b,ln(1 + c),coalesce(d, 0), concat(e, ',')").unwrap(),
            ["a", "b", "ln(1 + c)", "coalesce(d, 0)", "concat(e, ',')"]
        );
    }

    #[test]
    fn ranges_keep_the_first_numbers_padding() {
        assert_eq!(
            expand_columns("f08..f11").unwrap(),
            ["f08", "f09", "f10", "f11"]
        );
        assert_eq!(
            expand_columns("x9..x11,y").unwrap(),
            ["x9", "x10", "x11", "y"]
        );
        assert!(expand_columns("a1..b3").is_err());
        assert!(expand_columns("f3..f1").is_err());
        assert!(expand_columns("a,,b").is_err());
        assert!(expand_columns("ln(1 + c").is_err());
    }

    #[test]
    fn fill_values_take_the_type_they_read_as() {
        assert_eq!(fill_value("0"), Value::Float(0.0));
        assert_eq!(fill_value("true"), Value::Boolean(true));
        assert_eq!(fill_value("n/a"), Value::String("n/a".into()));
    }
}
