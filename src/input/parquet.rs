//! Parquet input: DataFusion's own `ListingTable`, after every file's footer has been read
//! once: to refuse, naming the file, one that is empty or unreadable or whose columns differ,
//! and to cut the input into work units, one per row group.

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::execution::SessionState;
use object_store::ObjectMeta;

use datafusion::datasource::physical_plan::parquet::metadata::DFParquetMetadata;
use datafusion::parquet::file::metadata::ParquetMetaData;

use super::InputError;
use super::listing::{file_name, store_of};
use super::units::WorkUnit;
use crate::diagnostics::first_line;

/// The table over `files` (whose footers [`read_footers`] has read and checked).
pub(super) async fn table(
    state: &SessionState,
    uri: &str,
    url: ListingTableUrl,
    options: ListingOptions,
) -> Result<ListingTable, InputError> {
    let extension = options.file_extension.clone();
    let config = ListingTableConfig::new(url)
        .with_listing_options(options)
        .infer_schema(state)
        .await
        .map_err(|e| InputError::Schema {
            uri: uri.to_string(),
            message: first_line(&e.to_string()).to_string(),
        })?;
    if config
        .file_schema
        .as_ref()
        .is_none_or(|s| s.fields().is_empty())
    {
        return Err(InputError::NoFiles {
            uri: uri.to_string(),
            extension,
        });
    }
    ListingTable::try_new(config).map_err(|e| InputError::BadUri {
        uri: uri.to_string(),
        message: e.to_string(),
    })
}

/// Reads every file's footer once (into the session's metadata cache, where the table and
/// the scan find it again) and returns the files' work units, one per row group; refuses,
/// naming the file, an empty file, a file that cannot be read, or files whose columns differ
/// (names and types). CSV files get the same checks from `csv::infer_file_schema`.
pub(super) async fn read_footers(
    state: &SessionState,
    url: &ListingTableUrl,
    options: &ListingOptions,
    files: &[ObjectMeta],
) -> Result<Vec<WorkUnit>, InputError> {
    let store = store_of(state, url)?;
    let cache = state.runtime_env().cache_manager.get_file_metadata_cache();
    let mut first: Option<(String, Vec<String>)> = None;
    let mut units = Vec::new();
    for meta in files {
        let name = file_name(url, meta);
        if meta.size == 0 {
            return Err(InputError::EmptyFile { file: name });
        }
        let unreadable = |e: datafusion::error::DataFusionError| InputError::Unreadable {
            file: name.clone(),
            message: e.to_string().replace('\n', "; "),
        };
        let footer = DFParquetMetadata::new(store.as_ref(), meta)
            .with_file_metadata_cache(Some(cache.clone()))
            .fetch_metadata()
            .await
            .map_err(unreadable)?;
        let schema = options
            .format
            .infer_schema(state, &store, std::slice::from_ref(meta))
            .await
            .map_err(unreadable)?;
        let columns = describe(&schema);
        match &first {
            None => first = Some((name.clone(), columns)),
            Some((first_name, first_columns)) if *first_columns != columns => {
                return Err(InputError::columns_differ(
                    &name,
                    first_name,
                    first_columns,
                    &columns,
                ));
            }
            Some(_) => {}
        }
        units.extend(row_group_units(&name, &footer));
    }
    Ok(units)
}

/// One unit per row group of a file, with its rows and compressed bytes.
fn row_group_units(file: &str, footer: &ParquetMetaData) -> Vec<WorkUnit> {
    footer
        .row_groups()
        .iter()
        .enumerate()
        .map(|(i, rg)| WorkUnit {
            file: file.to_string(),
            row_group: Some(i),
            rows: Some(rg.num_rows().max(0) as u64),
            bytes: rg.compressed_size().max(0) as u64,
        })
        .collect()
}

/// `name: type` for every column.
fn describe(schema: &SchemaRef) -> Vec<String> {
    schema
        .fields()
        .iter()
        .map(|f| format!("{}: {}", f.name(), f.data_type()))
        .collect()
}
