//! The input: the files as the DataFusion table `input`, and the job's `query` over it.
//!
//! A Parquet input is a DataFusion `ListingTable` ([`parquet`]), so files are read in
//! parallel partitions, in batches of `run.batch_size` rows, with projection and predicate
//! push-down. A CSV input is a streaming table of our own scans ([`csv`]), which set
//! malformed records aside as rejected rows instead of failing the run (DataFusion's CSV scan
//! stops at the first one). A directory is read recursively; folders named `key=value` become
//! string partition columns (hive layout), which a `query` can filter on without opening the
//! other folders' files. [`listing`] finds the files; every one is checked before any work.

pub mod csv;
mod listing;
mod parquet;
mod subset;
pub mod units;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use datafusion::arrow::datatypes::DataType;
use datafusion::catalog::TableProvider;
use datafusion::datasource::file_format::FileFormat;
use datafusion::datasource::file_format::csv::CsvFormat;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::ListingOptions;
use datafusion::prelude::{DataFrame, SessionConfig, SessionContext};
use object_store::ObjectMeta;

use crate::diagnostics::{Problem, first_line};
use crate::spec::{CsvCompression, InputFormat, InputSpec, RunSpec};
use crate::storage::{StorageError, StoreFactory};
use csv::{CsvDialect, CsvFile, MalformedRow, RangeChoice};
use listing::Listing;
pub use units::{ByteRange, Shard, ShardId, ShardPlan, WorkUnit};

/// The table name a `query` reads from.
pub const INPUT_TABLE: &str = "input";

/// Why an input cannot be read; each names the URI or the file.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("{uri}: no such file or directory")]
    Missing { uri: String },
    #[error("{uri}: {message}")]
    BadUri { uri: String, message: String },
    #[error(transparent)]
    Store(#[from] StorageError),
    #[error("{uri}: cannot list: {message}")]
    List { uri: String, message: String },
    #[error("cannot tell the format of {uri} from its name: set format = \"parquet\" or \"csv\"")]
    UnknownFormat { uri: String },
    #[error("{uri}: matches no {extension} files")]
    NoFiles { uri: String, extension: String },
    #[error("{file}: the file is empty (0 bytes)")]
    EmptyFile { file: String },
    #[error("{file}: cannot read it: {message}")]
    Unreadable { file: String, message: String },
    #[error(
        "{file}: its columns differ from those of {first} (missing: [{missing}]; not in {first}: [{extra}]); every input file must have the same columns"
    )]
    ColumnsDiffer {
        file: String,
        first: String,
        missing: String,
        extra: String,
    },
    #[error("{uri}: cannot read the schema: {message}")]
    Schema { uri: String, message: String },
    #[error("{uri}: {message}")]
    Table { uri: String, message: String },
}

impl InputError {
    /// The refusal for `file`, whose columns (`b`) differ from the first file's (`a`).
    pub(crate) fn columns_differ(file: &str, first: &str, a: &[String], b: &[String]) -> Self {
        let not_in = |x: &[String], y: &[String]| -> String {
            x.iter()
                .filter(|c| !y.contains(c))
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        };
        Self::ColumnsDiffer {
            file: file.to_string(),
            first: first.to_string(),
            missing: not_in(a, b),
            extra: not_in(b, a),
        }
    }

    /// The spec key the problem is reported under.
    pub fn key(&self) -> &'static str {
        match self {
            Self::UnknownFormat { .. } => "input.format",
            _ => "input.uri",
        }
    }
}

impl From<InputError> for Problem {
    fn from(e: InputError) -> Self {
        Problem::new(e.key(), e.to_string())
    }
}

/// A DataFusion session set up for a job: parallelism and batch size from `[run]`.
pub fn session_context(run: &RunSpec) -> SessionContext {
    let mut config = SessionConfig::new()
        .with_target_partitions(run.worker_count())
        .with_batch_size(run.batch_size())
        .with_information_schema(false);
    // Footer statistics give the row count up front, for the progress bar's ETA.
    config.options_mut().execution.collect_statistics = true;
    SessionContext::new_with_config(config)
}

/// The job's input, opened: the queried data frame, the fingerprint of the files it reads,
/// its work units, and, for CSV, the malformed rows the scan sets aside.
pub struct OpenedInput {
    pub frame: DataFrame,
    pub fingerprint: String,
    /// Every unit of the input, whichever shard reads them.
    pub units: Vec<WorkUnit>,
    /// For a sharded run, the units this shard reads (the table holds only those).
    pub shard: Option<Shard>,
    pub csv: Option<CsvScanReport>,
    /// The files, to register the table again for some of the units.
    pub source: UnitSource,
}

/// What registering the input's files found out about them.
struct Registered {
    fingerprint: String,
    units: Vec<WorkUnit>,
    shard: Option<Shard>,
    csv: Option<CsvScanReport>,
    source: UnitSource,
}

/// An input's files, kept so that the table `input` can be registered again over some of
/// its units: a resumable run scores its pieces one after another.
#[derive(Debug)]
pub struct UnitSource(Source);

#[derive(Debug)]
enum Source {
    Parquet(datafusion::datasource::listing::ListingTable),
    Csv {
        listing: Listing,
        options: ListingOptions,
        files: Vec<ObjectMeta>,
        compression: CsvCompression,
        batch_size: usize,
    },
}

/// Registers the table `input` again over `chosen` of the input's units `all`, and returns
/// the job's data frame over it (and, for CSV, what its scans report).
pub async fn reopen(
    ctx: &SessionContext,
    input: &InputSpec,
    source: &UnitSource,
    all: &[WorkUnit],
    chosen: &[WorkUnit],
) -> Result<(DataFrame, Option<CsvScanReport>), Vec<Problem>> {
    let (table, csv): (Arc<dyn TableProvider>, _) = match &source.0 {
        Source::Parquet(table) => (
            Arc::new(subset::SubsetTable::new(table.clone(), all, chosen)),
            None,
        ),
        Source::Csv {
            listing,
            options,
            files,
            compression,
            batch_size,
        } => {
            let files = pick_files(files, chosen);
            let (table, report) = csv_table(
                ctx,
                input,
                listing,
                options,
                files,
                *compression,
                *batch_size,
            )
            .await
            .map_err(|e| vec![Problem::from(e)])?;
            (Arc::new(table), Some(report))
        }
    };
    let _ = ctx.deregister_table(INPUT_TABLE);
    ctx.register_table(INPUT_TABLE, table)
        .map_err(|e| vec![Problem::new("input.uri", e.to_string())])?;
    Ok((query_frame(ctx, input).await?, csv))
}

/// What a CSV scan reports besides its rows.
#[derive(Debug)]
pub struct CsvScanReport {
    pub malformed: tokio::sync::mpsc::Receiver<MalformedRow>,
    pub rows_read: Arc<AtomicU64>,
}

/// Registers the input as the table `input` (for a shard, only its units) and returns the
/// job's data frame (`query` applied) with the fingerprint of the files it reads. Problems
/// name the spec key they concern.
pub async fn open_input(
    ctx: &SessionContext,
    input: &InputSpec,
    stores: &StoreFactory,
    batch_size: usize,
    shard: Option<ShardId>,
) -> Result<OpenedInput, Vec<Problem>> {
    let registered = register(ctx, input, stores, batch_size, shard)
        .await
        .map_err(|e| vec![Problem::from(e)])?;
    Ok(OpenedInput {
        frame: query_frame(ctx, input).await?,
        fingerprint: registered.fingerprint,
        units: registered.units,
        shard: registered.shard,
        csv: registered.csv,
        source: registered.source,
    })
}

/// Lists, checks and registers the input's files as the table `input`.
async fn register(
    ctx: &SessionContext,
    input: &InputSpec,
    stores: &StoreFactory,
    batch_size: usize,
    shard: Option<ShardId>,
) -> Result<Registered, InputError> {
    let uri = input.uri.as_str();
    let listing = Listing::locate(ctx, uri, stores).await?;
    let (format, compression) = listing::detect_format(input, listing.sample.as_deref())?;
    let extension = listing::extension(format, compression);
    let options = listing_options(ctx, input, &listing, format, compression, &extension).await?;
    let state = ctx.state();
    let files = listing::list_files(&state, &listing.url, &options.file_extension)
        .await
        .map_err(|e| InputError::List {
            uri: uri.to_string(),
            message: e.to_string(),
        })?;
    let fingerprint = listing::fingerprint(&files);
    let (units, shard, table, csv, source) = match format {
        InputFormat::Csv => {
            let (units, shard, table, report, source) = csv_input(
                ctx,
                input,
                &listing,
                &options,
                files,
                compression,
                batch_size,
                shard,
            )
            .await?;
            (units, shard, table, Some(report), source)
        }
        InputFormat::Parquet => {
            let footers = parquet::read_footers(&state, &listing.url, &files).await?;
            let table =
                parquet::table(&state, uri, listing.url, options, &footers.representatives).await?;
            let units = footers.units;
            let shard = shard.map(|id| choose(&units, id));
            let source = UnitSource(Source::Parquet(table.clone()));
            let table: Arc<dyn TableProvider> = match &shard {
                Some(s) => Arc::new(subset::SubsetTable::new(
                    table,
                    &units,
                    &units[s.units.clone()],
                )),
                None => Arc::new(table),
            };
            (units, shard, table, None, source)
        }
    };
    ctx.register_table(INPUT_TABLE, table)
        .map_err(|e| InputError::Table {
            uri: uri.to_string(),
            message: e.to_string(),
        })?;
    Ok(Registered {
        fingerprint,
        units,
        shard,
        csv,
        source,
    })
}

/// A CSV input's units, the shard's when there is one, the table over its files (the
/// shard's only), and the files, to register again for some units.
#[allow(clippy::too_many_arguments)]
async fn csv_input(
    ctx: &SessionContext,
    input: &InputSpec,
    listing: &Listing,
    options: &ListingOptions,
    files: Vec<ObjectMeta>,
    compression: CsvCompression,
    batch_size: usize,
    shard: Option<ShardId>,
) -> Result<
    (
        Vec<WorkUnit>,
        Option<Shard>,
        Arc<dyn TableProvider>,
        CsvScanReport,
        UnitSource,
    ),
    InputError,
> {
    let split = (compression == CsvCompression::None).then_some(input.csv.split_bytes);
    let units = units::csv_units(&listing.url, &files, split);
    let shard = shard.map(|id| choose(&units, id));
    let source = UnitSource(Source::Csv {
        listing: listing.clone(),
        options: options.clone(),
        files: files.clone(),
        compression,
        batch_size,
    });
    let files = match &shard {
        Some(s) => pick_files(&files, &units[s.units.clone()]),
        None => files.into_iter().map(|f| (f, None)).collect(),
    };
    let (table, report) =
        csv_table(ctx, input, listing, options, files, compression, batch_size).await?;
    Ok((units, shard, Arc::new(table), report, source))
}

/// The files that hold `chosen` units, in listing order, each with the byte ranges to read
/// when not all of them.
fn pick_files(files: &[ObjectMeta], chosen: &[WorkUnit]) -> Vec<(ObjectMeta, Option<RangeChoice>)> {
    let mut picked = Vec::new();
    for file in files {
        let mine: Vec<&WorkUnit> = chosen
            .iter()
            .filter(|u| u.location == file.location.as_ref())
            .collect();
        let Some(first) = mine.first() else {
            continue;
        };
        let ranges = mine.iter().filter_map(|u| u.byte_range);
        let choice = first.byte_range.map(|r| RangeChoice {
            span: r.span,
            count: r.count,
            chosen: ranges.clone().map(|r| r.index).min().unwrap_or(0)
                ..ranges.map(|r| r.index + 1).max().unwrap_or(0),
        });
        picked.push((file.clone(), choice.filter(|c| c.chosen != (0..c.count))));
    }
    picked
}

/// Shard `id`'s units of the input's.
fn choose(units: &[WorkUnit], id: ShardId) -> Shard {
    let mut plan = ShardPlan::new(units, id.count);
    plan.shards.swap_remove(id.index.min(plan.shards.len() - 1))
}

/// The listing's options: the format, the extension a collection keeps to (a single file is
/// read whatever its name ends with), and the hive partition columns.
async fn listing_options(
    ctx: &SessionContext,
    input: &InputSpec,
    listing: &Listing,
    format: InputFormat,
    compression: CsvCompression,
    extension: &str,
) -> Result<ListingOptions, InputError> {
    let file_format: Arc<dyn FileFormat> = match format {
        InputFormat::Parquet => Arc::new(ParquetFormat::default()),
        InputFormat::Csv => Arc::new(
            CsvFormat::default()
                .with_has_header(input.csv.has_header)
                .with_delimiter(input.csv.delimiter.as_bytes()[0])
                .with_quote(input.csv.quote.as_bytes()[0])
                .with_file_compression_type(listing::file_compression(compression)),
        ),
    };
    let extension = if listing.is_collection { extension } else { "" };
    let options = ListingOptions::new(file_format).with_file_extension(extension);
    if !listing.infer_partitions {
        return Ok(options);
    }
    let parts = options
        .infer_partitions(&ctx.state(), &listing.url)
        .await
        .map_err(|e| InputError::BadUri {
            uri: input.uri.clone(),
            message: first_line(&e.to_string()).to_string(),
        })?;
    let dictionary = DataType::Dictionary(Box::new(DataType::UInt16), Box::new(DataType::Utf8));
    let cols = parts
        .into_iter()
        .map(|name| (name, dictionary.clone()))
        .collect();
    Ok(options.with_table_partition_cols(cols))
}

/// The CSV files as a streaming table of `csv` scans, one per worker.
async fn csv_table(
    ctx: &SessionContext,
    input: &InputSpec,
    listing: &Listing,
    options: &ListingOptions,
    files: Vec<(ObjectMeta, Option<RangeChoice>)>,
    compression: CsvCompression,
    batch_size: usize,
) -> Result<
    (
        datafusion::catalog::streaming::StreamingTable,
        CsvScanReport,
    ),
    InputError,
> {
    let store = listing::store_of(&ctx.state(), &listing.url)?;
    let partition_cols = &options.table_partition_cols;
    let files: Vec<CsvFile> = files
        .into_iter()
        .map(|(meta, ranges)| CsvFile {
            store: store.clone(),
            name: listing::file_name(&listing.url, &meta),
            partition_values: listing::partition_values(
                &meta.location,
                partition_cols.iter().map(|(name, _)| name.as_str()),
            ),
            meta,
            ranges,
        })
        .collect();
    let dialect = CsvDialect {
        has_header: input.csv.has_header,
        delimiter: input.csv.delimiter.as_bytes()[0],
        quote: input.csv.quote.as_bytes()[0],
        compression: listing::file_compression(compression),
    };
    let workers = ctx.state().config().target_partitions();
    let (table, log, malformed) = csv::table(
        &input.uri,
        files,
        partition_cols,
        dialect,
        workers,
        batch_size,
    )
    .await?;
    let report = CsvScanReport {
        malformed,
        rows_read: log.rows_read.clone(),
    };
    Ok((table, report))
}

/// The table `input`, or the job's `query` over it.
async fn query_frame(ctx: &SessionContext, input: &InputSpec) -> Result<DataFrame, Vec<Problem>> {
    match &input.query {
        Some(sql) => ctx
            .sql(sql)
            .await
            .map_err(|e| vec![Problem::new("input.query", first_line(&e.to_string()))]),
        None => ctx
            .table(INPUT_TABLE)
            .await
            .map_err(|e| vec![Problem::new("input.uri", e.to_string())]),
    }
}
