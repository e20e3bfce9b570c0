//! `batchscore sql`: DataFusion SQL with `predict()` and `predict_output()` for each `--model`.
//!
//! File paths and URIs in `FROM` are tables (DataFusion's dynamic file catalog), `--table`
//! names more. The session is `run`'s (its workers and batch size), so scoring runs in every
//! partition in bounded memory. Rows print on stdout (a table on a terminal, else CSV), or go
//! to `-o PATH`, which is written whole or not at all ([`sink`]).

mod sink;

use std::io::IsTerminal;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use datafusion::catalog::TableProvider;
use datafusion::datasource::listing::{
    ListingTable, ListingTableConfig, ListingTableConfigExt, ListingTableUrl,
};
use datafusion::prelude::SessionContext;
use futures::StreamExt;

use crate::features::text::TextEncoder;
use crate::model::Model;
use crate::output::stdout::{BatchPrinter, StreamFormat};
use crate::score::sql::{PredictError, SqlModels, SqlText, call_positions};
use crate::spec::text::{OnEmpty, TokenizerSpec};
use crate::spec::{Device, RunSpec};
use crate::storage::StoreFactory;
use sink::{FileFormat, FileSink};

pub const AFTER_HELP: &str = "\
Examples:
  batchscore sql \"SELECT customer_id, predict_output('churn', 'probabilities[1]', tenure, monthly_charges, coalesce(total_charges, 0), ln(1 + support_calls), is_senior) AS p FROM 'sample_data/churn/data/' WHERE region = 'eu'\" --model churn=sample_data/churn/churn_lgbm.onnx
  batchscore sql \"SELECT region, avg(predict_output('churn', 'probabilities[1]', tenure, monthly_charges, coalesce(total_charges, 0), ln(1 + support_calls), is_senior)) AS mean_p FROM 'sample_data/churn/data/' GROUP BY region\" --model churn=sample_data/churn/churn_lgbm.onnx
  batchscore sql \"SELECT house_id, predict('price', rooms, area_m2, built, km_to_center) AS price FROM houses\" --model price=sample_data/houses/price_ridge.onnx --table houses=sample_data/houses/houses.csv.gz -o prices.parquet
  batchscore sql \"SELECT ticket_id, predict_output('clf', '{ from = \\\"logits\\\", softmax = true }', text) AS p FROM 'tickets.parquet'\" --model clf=classifier.onnx --tokenizer clf=tokenizer.json --format json

predict('MODEL', features…) returns a single-output model's output; predict_output('MODEL',
'OUTPUT', features…) one output, or one element of it ('probabilities[1]'), as in a job's
[outputs]. The features fill the model's inputs in order. A row with a null feature, or one
that cannot be cast to the model's type, gets NULL (counted on stderr); coalesce() fills.
With --tokenizer NAME=URI, model NAME takes one text argument, which the tokenizer turns into
its input_ids, attention_mask and token_type_ids; an output may then be an [outputs] table
('{ from = \"last_hidden_state\", pool = \"mean\", normalize = true }').

Output: a table on a terminal, else CSV; --format csv|json (JSON Lines); parquet needs -o.
-o PATH (a path or an s3://, gs://, az:// URI) is written only when the whole query succeeds;
its format is --format's, else its extension's (.parquet, .csv, .json, .jsonl).
Exit codes: 0 success; 1 the query failed while running (nothing written at -o); 2 refused
before any work (an unknown model, a wrong argument, an output the model lacks, SQL that does
not parse or plan).";

/// The formats `--format` takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SqlFormat {
    /// An aligned table (stdout only).
    Table,
    Csv,
    /// JSON Lines: one object per row.
    Json,
    /// Parquet (with -o only).
    Parquet,
}

#[derive(Debug, clap::Args)]
pub struct SqlArgs {
    /// The query. Paths and URIs in quotes are tables: FROM 'data/' or FROM 's3://b/x.parquet'.
    pub query: String,
    /// A model the query can call, by name: NAME=PATH or NAME=URI. Repeatable.
    #[arg(long = "model", value_name = "NAME=URI", value_parser = parse_named)]
    pub models: Vec<(String, String)>,
    /// A Hugging Face tokenizer.json for the model NAME, which then takes a text: its calls'
    /// first feature argument, which the tokenizer turns into the model's input_ids,
    /// attention_mask and token_type_ids. Repeatable.
    #[arg(long = "tokenizer", value_name = "NAME=URI", value_parser = parse_named)]
    pub tokenizers: Vec<(String, String)>,
    /// With --tokenizer: tokens per text at most, special tokens included; longer texts are
    /// cut (and counted on stderr). Default: each tokenizer file's truncation length, else 512.
    #[arg(long, value_name = "N", requires = "tokenizers")]
    pub max_length: Option<usize>,
    /// A table the query can read by name: NAME=URI (Parquet or CSV, a file, folder or
    /// prefix; hive `key=value` folders become columns). Repeatable.
    #[arg(long = "table", value_name = "NAME=URI", value_parser = parse_named)]
    pub tables: Vec<(String, String)>,
    /// Output format. Default: from -o's extension; on stdout a table on a terminal, else CSV.
    #[arg(long, value_enum)]
    pub format: Option<SqlFormat>,
    /// Write the rows to PATH (or an object store URI) instead of stdout, all or nothing.
    #[arg(short = 'o', long = "output", value_name = "PATH")]
    pub output: Option<String>,
    #[command(flatten)]
    pub store: super::StoreArgs,
}

/// Why `batchscore sql` refused or failed; [`SqlError::exit_code`] tells which.
#[derive(Debug, thiserror::Error)]
pub enum SqlError {
    #[error("--model {name} is given twice")]
    DuplicateModel { name: String },
    #[error("--tokenizer {name}={uri}: {message}")]
    Tokenizer {
        name: String,
        uri: String,
        message: String,
    },
    #[error("--table {name}={uri}: {message}")]
    Table {
        name: String,
        uri: String,
        message: String,
    },
    #[error(
        "--format parquet needs a file: add -o PATH.parquet (Parquet is not printed on stdout)"
    )]
    ParquetOnStdout,
    #[error("--format table is for stdout: with -o use csv, json or parquet")]
    TableToFile,
    #[error(
        "-o {path}: cannot tell the format from its name; end it with .parquet, .csv, .json or .jsonl, or pass --format"
    )]
    UnknownOutputFormat { path: String },
    #[error("{0}: {1}")]
    Storage(String, String),
    /// The query does not parse or plan (a wrong `predict` call included).
    #[error("the query is refused: {0}")]
    Refused(String),
    /// The query failed while running.
    #[error("the query failed: {0}")]
    Failed(String),
    #[error("-o {path}: {message}")]
    Output { path: String, message: String },
    /// CSV has no list or struct type: refused at planning, where printing would fail
    /// after the header.
    #[error(
        "column {column:?} is {kind}, which CSV cannot hold: use --format json or parquet, or {hint}"
    )]
    NestedInCsv {
        column: String,
        kind: String,
        /// How to select a part of it: an element of a list, a field of anything else.
        hint: String,
    },
}

impl SqlError {
    /// 2 when refused before any work, 1 when the query or its output failed.
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::Failed(_) | Self::Output { .. } => 1,
            _ => 2,
        }
    }
}

/// `NAME=VALUE`, with a non-empty name.
fn parse_named(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((name, value)) if !name.trim().is_empty() && !value.is_empty() => {
            Ok((name.trim().to_string(), value.to_string()))
        }
        _ => Err(format!("{s:?}: expected NAME=URI")),
    }
}

/// Where the rows go.
enum Destination {
    Stdout(StreamFormat),
    File(String, FileFormat),
}

pub async fn sql(args: SqlArgs, ort_lib: Option<&Path>) -> anyhow::Result<()> {
    let destination = destination(&args)?;
    crate::model::init_runtime(ort_lib)?;
    let stores = args.store.stores()?;
    let run = RunSpec::default();
    let models = load_models(&args.models, &stores).await?;
    let models = with_tokenizers(models, &args, &stores).await?;
    let models = Arc::new(SqlModels::new(
        models,
        run.worker_count(),
        run.inference_batch_size(Device::Cpu),
    ));
    let ctx = crate::input::session_context(&run).enable_url_table();
    crate::score::sql::register(&ctx, models.clone());
    register_stores(&ctx, &stores, &args)?;
    for (name, uri) in &args.tables {
        register_table(&ctx, name, uri).await?;
    }
    let frame = ctx
        .sql(&args.query)
        .await
        .map_err(|e| SqlError::Refused(explain(&e, &args.query)))?;
    let plan = frame
        .create_physical_plan()
        .await
        .map_err(|e| SqlError::Refused(explain(&e, &args.query)))?;
    if destination.is_csv() {
        csv_can_hold(&plan.schema())?;
    }
    let stream = datafusion::physical_plan::execute_stream(plan, ctx.task_ctx())
        .map_err(|e| SqlError::Refused(explain(&e, &args.query)))?;
    let result = match destination {
        Destination::Stdout(format) => print_rows(stream, format, &args.query).await,
        Destination::File(path, format) => {
            write_file(stream, &path, format, &stores, &args.query).await
        }
    };
    // A failed query, or one a LIMIT ended early, leaves tasks of its plan that may still
    // score a batch: let them finish before the process exits.
    models.cancel_and_wait(std::time::Duration::from_secs(30));
    report_nulls(&models);
    report_texts(&models);
    result.map_err(anyhow::Error::from)
}

impl Destination {
    fn is_csv(&self) -> bool {
        matches!(
            self,
            Self::Stdout(StreamFormat::Csv) | Self::File(_, FileFormat::Csv)
        )
    }
}

/// Refuses a result with a list or struct column, which a CSV field cannot hold.
fn csv_can_hold(schema: &datafusion::arrow::datatypes::Schema) -> Result<(), SqlError> {
    use datafusion::arrow::datatypes::DataType;
    let Some(f) = schema.fields().iter().find(|f| f.data_type().is_nested()) else {
        return Ok(());
    };
    let hint = match f.data_type() {
        DataType::List(_) | DataType::LargeList(_) | DataType::FixedSizeList(..) => {
            // An unaliased column is named by its whole expression: show the form instead.
            let simple = f.name().chars().all(|c| c.is_alphanumeric() || c == '_');
            let name = if simple {
                f.name().as_str()
            } else {
                "<expression>"
            };
            format!("select one element ({name}[1])")
        }
        _ => "select its fields one by one".to_string(),
    };
    Err(SqlError::NestedInCsv {
        column: f.name().clone(),
        kind: f.data_type().to_string(),
        hint,
    })
}

/// Where the rows go, refusing combinations that cannot work before any work.
fn destination(args: &SqlArgs) -> Result<Destination, SqlError> {
    let Some(path) = &args.output else {
        let format = match args.format {
            Some(SqlFormat::Parquet) => return Err(SqlError::ParquetOnStdout),
            Some(SqlFormat::Table) => StreamFormat::Table,
            Some(SqlFormat::Csv) => StreamFormat::Csv,
            Some(SqlFormat::Json) => StreamFormat::Json,
            None => StreamFormat::default_for(std::io::stdout().is_terminal()),
        };
        return Ok(Destination::Stdout(format));
    };
    let format = match args.format {
        Some(SqlFormat::Table) => return Err(SqlError::TableToFile),
        Some(SqlFormat::Csv) => FileFormat::Csv,
        Some(SqlFormat::Json) => FileFormat::Json,
        Some(SqlFormat::Parquet) => FileFormat::Parquet,
        None => FileFormat::from_name(path)
            .ok_or_else(|| SqlError::UnknownOutputFormat { path: path.clone() })?,
    };
    Ok(Destination::File(path.clone(), format))
}

async fn load_models(
    named: &[(String, String)],
    stores: &StoreFactory,
) -> anyhow::Result<Vec<(String, Model)>> {
    let mut models: Vec<(String, Model)> = Vec::with_capacity(named.len());
    for (name, uri) in named {
        if models.iter().any(|(n, _)| n == name) {
            return Err(SqlError::DuplicateModel { name: name.clone() }.into());
        }
        let model = Model::load(uri, None, stores)
            .await
            .with_context(|| format!("--model {name}={uri}"))?;
        models.push((name.clone(), model));
    }
    Ok(models)
}

/// Each model with its `--tokenizer`, loaded and checked against the model's inputs.
async fn with_tokenizers(
    models: Vec<(String, Model)>,
    args: &SqlArgs,
    stores: &StoreFactory,
) -> Result<Vec<(String, Model, Option<SqlText>)>, SqlError> {
    let mut out = Vec::with_capacity(models.len());
    for (name, uri) in &args.tokenizers {
        let err = |message: String| SqlError::Tokenizer {
            name: name.clone(),
            uri: uri.clone(),
            message,
        };
        if !models.iter().any(|(n, _)| n == name) {
            let names: Vec<&str> = models.iter().map(|(n, _)| n.as_str()).collect();
            return Err(err(format!(
                "no --model {name}; the models: {}",
                names.join(", ")
            )));
        }
        if args.tokenizers.iter().filter(|(n, _)| n == name).count() > 1 {
            return Err(err(format!("model {name} is given two tokenizers")));
        }
    }
    for (name, model) in models {
        let text = match args.tokenizers.iter().find(|(n, _)| *n == name) {
            Some((_, uri)) => Some(load_tokenizer(&name, uri, &model, args, stores).await?),
            None => None,
        };
        out.push((name, model, text));
    }
    Ok(out)
}

async fn load_tokenizer(
    name: &str,
    uri: &str,
    model: &Model,
    args: &SqlArgs,
    stores: &StoreFactory,
) -> Result<SqlText, SqlError> {
    let err = |message: String| SqlError::Tokenizer {
        name: name.to_string(),
        uri: uri.to_string(),
        message,
    };
    let spec = TokenizerSpec {
        uri: uri.to_string(),
        text: String::new(),
        max_length: args.max_length,
        truncation: true,
        on_empty: OnEmpty::Reject,
        sort_by_length: true,
    };
    let mut encoder = TextEncoder::load(&spec, stores)
        .await
        .map_err(|e| err(e.to_string()))?;
    let fills = crate::features::text::token_inputs(model).map_err(|p| err(p.message))?;
    encoder.fit_length(&fills).map_err(err)?;
    Ok(SqlText { encoder, fills })
}

/// Registers the object stores of every remote URI the command names: in the query's
/// quoted strings (tables in `FROM`), in `--table` and `-o`.
fn register_stores(
    ctx: &SessionContext,
    stores: &StoreFactory,
    args: &SqlArgs,
) -> Result<(), SqlError> {
    let mut uris: Vec<String> = quoted_strings(&args.query);
    uris.extend(args.tables.iter().map(|(_, u)| u.clone()));
    for uri in uris.iter().filter(|u| crate::storage::is_remote(u)) {
        stores
            .register(ctx, uri)
            .map_err(|e| SqlError::Storage(e.uri, e.message))?;
    }
    Ok(())
}

/// The contents of the query's quoted strings and identifiers.
fn quoted_strings(sql: &str) -> Vec<String> {
    let mut out = Vec::new();
    for q in ['\'', '"'] {
        let parts: Vec<&str> = sql.split(q).collect();
        out.extend(parts.iter().skip(1).step_by(2).map(|s| s.to_string()));
    }
    out
}

/// Registers `uri` as the table `name`, as `FROM 'uri'` would read it: Parquet or CSV by the
/// files' extension, hive `key=value` folders as columns.
async fn register_table(ctx: &SessionContext, name: &str, uri: &str) -> Result<(), SqlError> {
    let err = |message: String| SqlError::Table {
        name: name.to_string(),
        uri: uri.to_string(),
        message: crate::diagnostics::first_line(&message).to_string(),
    };
    let local_dir = !crate::storage::is_remote(uri) && Path::new(uri).is_dir();
    let text = if local_dir && !uri.ends_with('/') {
        format!("{uri}/")
    } else {
        uri.to_string()
    };
    if !crate::storage::is_remote(uri) && !Path::new(uri).exists() {
        return Err(err("no such file or directory".into()));
    }
    let url = ListingTableUrl::parse(&text).map_err(|e| err(e.to_string()))?;
    let state = ctx.state();
    let config = ListingTableConfig::new(url)
        .infer_options(&state)
        .await
        .map_err(|e| err(e.to_string()))?
        .infer_partitions_from_path(&state)
        .await
        .map_err(|e| err(e.to_string()))?
        .infer_schema(&state)
        .await
        .map_err(|e| err(e.to_string()))?;
    let table: Arc<dyn TableProvider> =
        Arc::new(ListingTable::try_new(config).map_err(|e| err(e.to_string()))?);
    ctx.register_table(name, table)
        .map_err(|e| err(e.to_string()))?;
    Ok(())
}

/// A DataFusion error as the user should read it: a `predict` call's own message with the
/// call's place in the SQL, else DataFusion's first line.
fn explain(e: &datafusion::error::DataFusionError, sql: &str) -> String {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(p) = err.downcast_ref::<PredictError>() {
            let positions = call_positions(sql, p.function(), p.model());
            return match positions.as_slice() {
                [] => p.to_string(),
                [(line, col), ..] => format!("line {line}, column {col}: {p}"),
            };
        }
        source = err.source();
    }
    crate::diagnostics::first_line(&e.to_string()).to_string()
}

async fn print_rows(
    mut stream: datafusion::physical_plan::SendableRecordBatchStream,
    format: StreamFormat,
    sql: &str,
) -> Result<(), SqlError> {
    let stdout = std::io::stdout().lock();
    let mut printer = BatchPrinter::new(format, std::io::BufWriter::new(stdout));
    let out_err = |e: datafusion::arrow::error::ArrowError| SqlError::Output {
        path: "-".into(),
        message: e.to_string(),
    };
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(|e| SqlError::Failed(explain(&e, sql)))?;
        printer.write(&batch).map_err(out_err)?;
    }
    printer.finish().map_err(out_err)
}

async fn write_file(
    mut stream: datafusion::physical_plan::SendableRecordBatchStream,
    path: &str,
    format: FileFormat,
    stores: &StoreFactory,
    sql: &str,
) -> Result<(), SqlError> {
    let out_err = |message: String| SqlError::Output {
        path: path.to_string(),
        message,
    };
    let mut sink = FileSink::open(path, format, stream.schema(), stores)
        .await
        .map_err(out_err)?;
    let (mut failure, mut rows) = (None, 0);
    while let Some(batch) = stream.next().await {
        let written = match batch {
            Ok(b) => {
                rows += b.num_rows();
                sink.write(&b).await.map_err(out_err)
            }
            Err(e) => Err(SqlError::Failed(explain(&e, sql))),
        };
        if let Err(e) = written {
            failure = Some(e);
            break;
        }
    }
    match failure {
        Some(e) => {
            sink.abort().await;
            Err(e)
        }
        None => {
            sink.commit().await.map_err(out_err)?;
            eprintln!("batchscore sql: {rows} rows -> {path}");
            Ok(())
        }
    }
}

/// Tells stderr how many rows got a NULL prediction, per model, and why.
fn report_nulls(models: &SqlModels) {
    for n in models.null_predictions() {
        let s = if n.rows == 1 { "" } else { "s" };
        eprintln!(
            "batchscore sql: model {:?}: {} row{s} got a NULL prediction (null or uncastable features; coalesce() fills nulls)",
            n.model, n.rows
        );
        for r in n.reasons.iter().take(5) {
            // The scorer's reasons end with what a job spec would set; SQL has coalesce().
            let reason = r.reason.split(", and [").next().unwrap_or(&r.reason);
            eprintln!("  {} × {reason}", r.count);
        }
    }
}

/// Tells stderr, per text model, how many texts were cut to its `max_length`.
fn report_texts(models: &SqlModels) {
    for t in models.text_counts().into_iter().filter(|t| t.truncated > 0) {
        eprintln!(
            "batchscore sql: model {:?}: {} of {} texts were cut to {} tokens (--max-length)",
            t.model, t.truncated, t.texts, t.max_length
        );
    }
}
