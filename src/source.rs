//! The source: the input files as the DataFusion table `input`, and the job's `query` over it.
//!
//! A Parquet input is a DataFusion `ListingTable`, so files are read in parallel partitions,
//! in batches of `run.batch_size` rows, with projection and predicate push-down. A CSV input
//! is a streaming table of `csv_input` scans, which set malformed records aside as rejected
//! rows instead of failing the run (DataFusion's CSV scan stops at the first one).
//! A directory is read recursively; folders named `key=value` become string partition columns
//! (hive layout), which a `query` can filter on without opening the other folders' files.

use std::path::Path;
use std::sync::Arc;

use datafusion::datasource::file_format::FileFormat;
use datafusion::datasource::file_format::csv::CsvFormat;
use datafusion::datasource::file_format::file_compression_type::FileCompressionType;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::prelude::{DataFrame, SessionConfig, SessionContext};

use datafusion::arrow::datatypes::SchemaRef;
use object_store::ObjectMeta;

use std::sync::atomic::AtomicU64;

use datafusion::catalog::streaming::StreamingTable;
use datafusion::physical_plan::streaming::PartitionStream;

use crate::csv_input::{CsvDialect, CsvFile, CsvPartition, MalformedRow, ReadLog};
use crate::spec::{CsvCompression, InputFormat, InputSpec, Problem, RunSpec};
use crate::storage::{Scheme, StoreFactory};

/// The table name a `query` reads from.
pub const INPUT_TABLE: &str = "input";

/// A DataFusion session set up for a job: parallelism and batch size from `[run]`.
pub fn session_context(run: &RunSpec) -> SessionContext {
    let workers = effective_workers(run.workers);
    let mut config = SessionConfig::new()
        .with_target_partitions(workers)
        .with_batch_size(run.batch_size())
        .with_information_schema(false);
    // Footer statistics give the row count up front, for the progress bar's ETA.
    config.options_mut().execution.collect_statistics = true;
    SessionContext::new_with_config(config)
}

/// `workers = 0` means one per core.
pub fn effective_workers(workers: usize) -> usize {
    if workers == 0 {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    } else {
        workers
    }
}

/// The job's input, opened: the queried data frame, the fingerprint of the files it reads,
/// and, for CSV, the malformed rows the scan sets aside.
pub struct OpenedInput {
    pub frame: DataFrame,
    pub fingerprint: String,
    pub csv: Option<CsvScanReport>,
}

/// What a CSV scan reports besides its rows.
#[derive(Debug)]
pub struct CsvScanReport {
    pub malformed: tokio::sync::mpsc::Receiver<MalformedRow>,
    pub rows_read: Arc<AtomicU64>,
}

/// Registers the input as the table `input` and returns the job's data frame (`query`
/// applied) with the fingerprint of the files it reads. Problems name the spec key they
/// concern.
pub async fn open_input(
    ctx: &SessionContext,
    input: &InputSpec,
    stores: &StoreFactory,
    batch_size: usize,
) -> Result<OpenedInput, Vec<Problem>> {
    let one = |key: &str, msg: String| vec![Problem::new(key, msg)];
    let uri = input.uri.as_str();
    let remote = Scheme::of(uri).is_some_and(Scheme::is_remote);
    let has_glob = uri.contains(['*', '?', '[']);

    // Where the listing starts, whether it lists many files, whether `key=value` folders
    // become partition columns, and one file that shows the format.
    let (url, is_collection, infer_partitions, sample) = if remote {
        stores
            .register(ctx, uri)
            .map_err(|e| one("input.uri", e.to_string()))?;
        let (base, glob) = split_glob(uri);
        let is_dir = glob.is_some() || base.ends_with('/') || format_of(base).is_none();
        let base = if is_dir && !base.ends_with('/') {
            format!("{base}/")
        } else {
            base.to_string()
        };
        let parsed = url::Url::parse(&base).map_err(|e| one("input.uri", format!("{uri}: {e}")))?;
        let pattern = match glob {
            Some(g) => {
                Some(glob::Pattern::new(g).map_err(|e| one("input.uri", format!("{uri}: {e}")))?)
            }
            None => None,
        };
        let url = ListingTableUrl::try_new(parsed, pattern)
            .map_err(|e| one("input.uri", format!("{uri}: {e}")))?;
        // Listing a remote prefix up front also proves the bucket and the credentials work.
        let sample = if is_dir {
            first_remote_file(stores, &base)
                .await
                .map_err(|m| one("input.uri", m))?
        } else {
            Some(base.clone())
        };
        (url, is_dir, is_dir, sample)
    } else {
        let path = Path::new(uri);
        if !has_glob && !path.exists() {
            return Err(one(
                "input.uri",
                format!("{uri}: no such file or directory"),
            ));
        }
        let is_dir = !has_glob && path.is_dir();
        let url_text = if is_dir && !uri.ends_with('/') {
            format!("{uri}/")
        } else {
            uri.to_string()
        };
        let url = ListingTableUrl::parse(absolute_text(&url_text))
            .map_err(|e| one("input.uri", format!("{uri}: {e}")))?;
        let sample = if is_dir {
            first_data_file(path)
        } else {
            Some(uri.to_string())
        };
        (url, is_dir || has_glob, is_dir, sample)
    };

    let (format, compression) =
        detect_format(input, sample.as_deref()).map_err(|m| one("input.format", m))?;
    let extension = match format {
        InputFormat::Parquet => ".parquet".to_string(),
        InputFormat::Csv => format!(".csv{}", compression_suffix(compression)),
    };
    let file_format: Arc<dyn FileFormat> = match format {
        InputFormat::Parquet => Arc::new(ParquetFormat::default()),
        InputFormat::Csv => {
            let csv = &input.csv;
            Arc::new(
                CsvFormat::default()
                    .with_has_header(csv.has_header)
                    .with_delimiter(csv.delimiter.as_bytes()[0])
                    .with_quote(csv.quote.as_bytes()[0])
                    .with_file_compression_type(file_compression(compression)),
            )
        }
    };
    // A single file is read whatever its name ends with; listings keep to the format's files.
    let options_extension = if is_collection {
        extension.clone()
    } else {
        String::new()
    };
    let state = ctx.state();
    let mut options = ListingOptions::new(file_format).with_file_extension(options_extension);
    if infer_partitions {
        let parts = options.infer_partitions(&state, &url).await.map_err(|e| {
            one(
                "input.uri",
                format!("{uri}: {}", first_line(&e.to_string())),
            )
        })?;
        let cols = parts
            .into_iter()
            .map(|name| {
                use datafusion::arrow::datatypes::DataType;
                (
                    name,
                    DataType::Dictionary(Box::new(DataType::UInt16), Box::new(DataType::Utf8)),
                )
            })
            .collect();
        options = options.with_table_partition_cols(cols);
    }
    let files = list_files(&state, &url, &options.file_extension)
        .await
        .map_err(|e| one("input.uri", format!("{uri}: cannot list: {e}")))?;
    if format == InputFormat::Csv {
        let fingerprint = listing_fingerprint(&files);
        let (table, report) = csv_table(
            &state,
            &url,
            &options,
            files,
            input,
            compression,
            batch_size,
        )
        .await
        .map_err(|m| one("input.uri", format!("{uri}{m}")))?;
        ctx.register_table(INPUT_TABLE, Arc::new(table))
            .map_err(|e| one("input.uri", e.to_string()))?;
        return Ok(OpenedInput {
            frame: query_frame(ctx, input).await?,
            fingerprint,
            csv: Some(report),
        });
    }
    check_parquet_files(&state, &url, &options, &files)
        .await
        .map_err(|m| one("input.uri", m))?;
    let fingerprint = listing_fingerprint(&files);
    let config = ListingTableConfig::new(url)
        .with_listing_options(options)
        .infer_schema(&state)
        .await
        .map_err(|e| {
            one(
                "input.uri",
                format!(
                    "{uri}: cannot read the schema: {}",
                    first_line(&e.to_string())
                ),
            )
        })?;
    if config
        .file_schema
        .as_ref()
        .is_none_or(|s| s.fields().is_empty())
    {
        return Err(one(
            "input.uri",
            format!("{uri}: matches no {extension} files"),
        ));
    }
    let table =
        ListingTable::try_new(config).map_err(|e| one("input.uri", format!("{uri}: {e}")))?;
    ctx.register_table(INPUT_TABLE, Arc::new(table))
        .map_err(|e| one("input.uri", e.to_string()))?;
    Ok(OpenedInput {
        frame: query_frame(ctx, input).await?,
        fingerprint,
        csv: None,
    })
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

/// The CSV files as a streaming table of [`CsvPartition`]s, one per worker (files dealt out
/// in turn), with the hive partition columns the listing options name. Errors start with
/// `: ` or a file's name, to follow the input's URI.
async fn csv_table(
    state: &datafusion::execution::SessionState,
    url: &ListingTableUrl,
    options: &ListingOptions,
    files: Vec<ObjectMeta>,
    input: &InputSpec,
    compression: CsvCompression,
    batch_size: usize,
) -> Result<(StreamingTable, CsvScanReport), String> {
    use datafusion::arrow::datatypes::{Field, Schema};
    let store = state
        .runtime_env()
        .object_store(url)
        .map_err(|e| format!(": {e}"))?;
    let partition_cols: Vec<&(String, datafusion::arrow::datatypes::DataType)> =
        options.table_partition_cols.iter().collect();
    let files: Vec<CsvFile> = files
        .into_iter()
        .map(|meta| CsvFile {
            store: store.clone(),
            name: file_name(url, &meta),
            partition_values: partition_values(&meta.location, &partition_cols),
            meta,
        })
        .collect();
    let csv = &input.csv;
    let dialect = CsvDialect {
        has_header: csv.has_header,
        delimiter: csv.delimiter.as_bytes()[0],
        quote: csv.quote.as_bytes()[0],
        compression: file_compression(compression),
    };
    let file_schema = crate::csv_input::infer_file_schema(&files, dialect)
        .await
        .map_err(|m| format!(": {m}"))?;
    if file_schema.fields().is_empty() {
        return Err(": matches no .csv files".to_string());
    }
    let mut fields: Vec<Field> = file_schema
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields.extend(
        partition_cols
            .iter()
            .map(|(name, t)| Field::new(name, t.clone(), false)),
    );
    let schema = Arc::new(Schema::new(fields));
    let file_schema = Arc::new(file_schema);
    let (log, malformed) = ReadLog::new();
    // As many files as workers or more: files are dealt out. Fewer: every partition reads
    // every file and decodes every n-th chunk of it.
    let workers = state.config().target_partitions().max(1);
    let shares: Vec<(Vec<CsvFile>, (usize, usize))> = if files.len() >= workers {
        let mut dealt: Vec<Vec<CsvFile>> = vec![Vec::new(); workers];
        for (i, f) in files.into_iter().enumerate() {
            dealt[i % workers].push(f);
        }
        dealt.into_iter().map(|f| (f, (0, 1))).collect()
    } else {
        (0..workers)
            .map(|i| (files.clone(), (i, workers)))
            .collect()
    };
    let partitions: Vec<Arc<dyn PartitionStream>> = shares
        .into_iter()
        .map(|(files, stride)| {
            Arc::new(CsvPartition {
                schema: schema.clone(),
                file_schema: file_schema.clone(),
                files,
                stride,
                dialect,
                batch_size,
                log: log.clone(),
            }) as Arc<dyn PartitionStream>
        })
        .collect();
    let table = StreamingTable::try_new(schema, partitions).map_err(|e| format!(": {e}"))?;
    Ok((
        table,
        CsvScanReport {
            malformed,
            rows_read: log.rows_read.clone(),
        },
    ))
}

/// The values of the `key=value` folders in an object's path, in the order of `cols`.
fn partition_values(
    location: &object_store::path::Path,
    cols: &[&(String, datafusion::arrow::datatypes::DataType)],
) -> Vec<String> {
    cols.iter()
        .map(|(name, _)| {
            location
                .parts()
                .find_map(|p| {
                    p.as_ref()
                        .strip_prefix(name.as_str())
                        .and_then(|rest| rest.strip_prefix('='))
                        .map(String::from)
                })
                .unwrap_or_default()
        })
        .collect()
}

/// The files the table reads, in path order.
async fn list_files(
    state: &datafusion::execution::SessionState,
    url: &ListingTableUrl,
    extension: &str,
) -> datafusion::common::Result<Vec<ObjectMeta>> {
    use futures::TryStreamExt;
    let store = state.runtime_env().object_store(url)?;
    let mut files: Vec<ObjectMeta> = url
        .list_all_files(state, store.as_ref(), extension)
        .await?
        .try_collect()
        .await?;
    files.sort_by(|a, b| a.location.cmp(&b.location));
    Ok(files)
}

/// A listed file as the user knows it: a local path, or the object's URL.
fn file_name(url: &ListingTableUrl, meta: &ObjectMeta) -> String {
    match url::Url::parse(url.as_str()) {
        Ok(u) if u.scheme() == "file" => format!("/{}", meta.location),
        Ok(u) => format!(
            "{}://{}/{}",
            u.scheme(),
            u.host_str().unwrap_or_default(),
            meta.location
        ),
        Err(_) => meta.location.to_string(),
    }
}

/// Refuses, naming the file, a Parquet input with an empty file, a file that cannot be read,
/// or files whose columns differ (names and types). CSV files get the same checks from
/// `csv_input::infer_file_schema`.
async fn check_parquet_files(
    state: &datafusion::execution::SessionState,
    url: &ListingTableUrl,
    options: &ListingOptions,
    files: &[ObjectMeta],
) -> Result<(), String> {
    let store = state
        .runtime_env()
        .object_store(url)
        .map_err(|e| e.to_string())?;
    let mut first: Option<(String, SchemaRef)> = None;
    for meta in files {
        let name = file_name(url, meta);
        if meta.size == 0 {
            return Err(format!("{name}: the file is empty (0 bytes)"));
        }
        let schema = options
            .format
            .infer_schema(state, &store, std::slice::from_ref(meta))
            .await
            .map_err(|e| {
                format!(
                    "{name}: cannot read it: {}",
                    e.to_string().replace('\n', "; ")
                )
            })?;
        match &first {
            None => first = Some((name, schema)),
            Some((first_name, first_schema)) => {
                let describe = |s: &SchemaRef| -> Vec<String> {
                    s.fields()
                        .iter()
                        .map(|f| format!("{}: {}", f.name(), f.data_type()))
                        .collect()
                };
                let (a, b) = (describe(first_schema), describe(&schema));
                if a != b {
                    return Err(columns_differ(&name, first_name, &a, &b));
                }
            }
        }
    }
    Ok(())
}

/// The refusal for a file whose columns (`b`) differ from the first file's (`a`).
pub(crate) fn columns_differ(name: &str, first_name: &str, a: &[String], b: &[String]) -> String {
    let missing: Vec<&str> = a
        .iter()
        .filter(|c| !b.contains(c))
        .map(String::as_str)
        .collect();
    let extra: Vec<&str> = b
        .iter()
        .filter(|c| !a.contains(c))
        .map(String::as_str)
        .collect();
    format!(
        "{name}: its columns differ from those of {first_name} (missing: [{}]; not in {first_name}: [{}]); every input file must have the same columns",
        missing.join(", "),
        extra.join(", ")
    )
}

/// SHA-256 over the files the table reads (path, size, modification time), in path order:
/// what `mode = "skip"` compares to tell whether the input changed since the last commit.
fn listing_fingerprint(files: &[ObjectMeta]) -> String {
    use sha2::{Digest, Sha256};
    let lines: Vec<String> = files
        .iter()
        .map(|m| {
            format!(
                "{} {} {}",
                m.location,
                m.size,
                m.last_modified.timestamp_nanos_opt().unwrap_or_default()
            )
        })
        .collect();
    hex::encode(Sha256::digest(lines.join("\n").as_bytes()))
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}

fn absolute_text(p: &str) -> String {
    if p.contains("://") || Path::new(p).is_absolute() {
        return p.to_string();
    }
    match std::env::current_dir() {
        Ok(cwd) => format!("{}/{}", cwd.display(), p.trim_start_matches("./")),
        Err(_) => p.to_string(),
    }
}

/// The format and compression: from the spec, else the name of `sample` (the input itself, or
/// its first data file).
fn detect_format(
    input: &InputSpec,
    sample: Option<&str>,
) -> Result<(InputFormat, CsvCompression), String> {
    let by_ext = sample.and_then(format_of);
    let format = match (input.format, by_ext) {
        (Some(f), _) => f,
        (None, Some((f, _))) => f,
        (None, None) => {
            return Err(format!(
                "cannot tell the format of {} from its name: set format = \"parquet\" or \"csv\"",
                input.uri
            ));
        }
    };
    let compression = match (input.csv.compression, by_ext) {
        (Some(c), _) => c,
        (None, Some((_, c))) => c,
        (None, None) => CsvCompression::None,
    };
    Ok((format, compression))
}

/// Splits `s3://b/data/*.parquet` into `s3://b/data/` and `*.parquet` (at the first path
/// segment with a glob character).
fn split_glob(uri: &str) -> (&str, Option<&str>) {
    let Some(first) = uri.find(['*', '?', '[']) else {
        return (uri, None);
    };
    let cut = uri[..first].rfind('/').map_or(0, |i| i + 1);
    (&uri[..cut], Some(&uri[cut..]))
}

/// The first object under a remote prefix whose name tells a format (hidden and `_` names
/// skipped); errors (a missing bucket, a refused credential) name the URL.
async fn first_remote_file(
    stores: &StoreFactory,
    prefix_uri: &str,
) -> Result<Option<String>, String> {
    use futures::TryStreamExt;
    let located = stores.locate(prefix_uri).map_err(|e| e.to_string())?;
    let mut names: Vec<String> = located
        .store
        .list(Some(&located.path))
        .map_ok(|m| m.location.to_string())
        .try_collect()
        .await
        .map_err(|e| format!("{prefix_uri}: cannot list: {e}"))?;
    names.sort();
    Ok(names
        .into_iter()
        .filter(|n| {
            !n.split('/')
                .any(|seg| seg.starts_with('.') || seg.starts_with('_'))
        })
        .find(|n| format_of(n).is_some())
        .map(|n| format!("{}/{n}", located.root)))
}

fn format_of(name: &str) -> Option<(InputFormat, CsvCompression)> {
    let lower = name.to_ascii_lowercase();
    if lower.ends_with(".parquet") || lower.ends_with(".parq") {
        return Some((InputFormat::Parquet, CsvCompression::None));
    }
    for (suffix, c) in [
        (".csv", CsvCompression::None),
        (".csv.gz", CsvCompression::Gzip),
        (".csv.zst", CsvCompression::Zstd),
        (".csv.bz2", CsvCompression::Bzip2),
        (".csv.xz", CsvCompression::Xz),
    ] {
        if lower.ends_with(suffix) {
            return Some((InputFormat::Csv, c));
        }
    }
    None
}

/// The first file (in name order, depth first) whose name tells a format, skipping hidden and
/// `_`-prefixed files as Spark and DataFusion do.
fn first_data_file(dir: &Path) -> Option<String> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .collect();
    entries.sort();
    for p in entries {
        let name = p.file_name()?.to_string_lossy().into_owned();
        if name.starts_with('.') || name.starts_with('_') {
            continue;
        }
        if p.is_dir() {
            if let Some(f) = first_data_file(&p) {
                return Some(f);
            }
        } else if format_of(&name).is_some() {
            return Some(p.to_string_lossy().into_owned());
        }
    }
    None
}

fn compression_suffix(c: CsvCompression) -> &'static str {
    match c {
        CsvCompression::None => "",
        CsvCompression::Gzip => ".gz",
        CsvCompression::Zstd => ".zst",
        CsvCompression::Bzip2 => ".bz2",
        CsvCompression::Xz => ".xz",
    }
}

fn file_compression(c: CsvCompression) -> FileCompressionType {
    match c {
        CsvCompression::None => FileCompressionType::UNCOMPRESSED,
        CsvCompression::Gzip => FileCompressionType::GZIP,
        CsvCompression::Zstd => FileCompressionType::ZSTD,
        CsvCompression::Bzip2 => FileCompressionType::BZIP2,
        CsvCompression::Xz => FileCompressionType::XZ,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_from_names() {
        assert_eq!(
            format_of("a/b.parquet"),
            Some((InputFormat::Parquet, CsvCompression::None))
        );
        assert_eq!(
            format_of("x.CSV.GZ"),
            Some((InputFormat::Csv, CsvCompression::Gzip))
        );
        assert_eq!(
            format_of("x.csv.zst"),
            Some((InputFormat::Csv, CsvCompression::Zstd))
        );
        assert_eq!(format_of("x.json"), None);
    }

    #[test]
    fn globs_split_at_their_segment() {
        assert_eq!(
            split_glob("s3://b/data/*.parquet"),
            ("s3://b/data/", Some("*.parquet"))
        );
        assert_eq!(
            split_glob("s3://b/d/ds=*/p.csv"),
            ("s3://b/d/", Some("ds=*/p.csv"))
        );
        assert_eq!(split_glob("s3://b/data/"), ("s3://b/data/", None));
    }

    #[test]
    fn first_file_skips_hidden_and_underscore_files() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("_SUCCESS"), "").unwrap();
        std::fs::create_dir(tmp.path().join("k=1")).unwrap();
        std::fs::write(tmp.path().join("k=1/p.csv.gz"), "").unwrap();
        let f = first_data_file(tmp.path()).unwrap();
        assert!(f.ends_with("k=1/p.csv.gz"), "{f}");
    }
}
