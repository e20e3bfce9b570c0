//! Parquet input: DataFusion's own `ListingTable`, after every file's footer has been read
//! once: to refuse, naming the file, one that is empty or unreadable or whose columns differ,
//! and to cut the input into work units, one per row group.

use std::sync::Arc;

use datafusion::arrow::datatypes::Schema;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::execution::SessionState;
use datafusion::parquet::arrow::parquet_to_arrow_schema;
use futures::{StreamExt, TryStreamExt};
use object_store::ObjectMeta;

use datafusion::datasource::physical_plan::parquet::metadata::DFParquetMetadata;
use datafusion::parquet::file::metadata::ParquetMetaData;

use super::InputError;
use super::listing::{file_name, store_of};
use super::units::WorkUnit;
use crate::diagnostics::first_line;

/// The table over the listing, its schema inferred by DataFusion (its type coercions
/// included) from the `representatives` [`read_footers`] chose, which stand for every file:
/// DataFusion would otherwise read every footer again, and on a large listing its metadata
/// cache no longer holds them all (10,000 small files: two requests per file, not one).
pub(super) async fn table(
    state: &SessionState,
    uri: &str,
    url: ListingTableUrl,
    options: ListingOptions,
    representatives: &[ObjectMeta],
) -> Result<ListingTable, InputError> {
    if representatives.is_empty() {
        return Err(InputError::NoFiles {
            uri: uri.to_string(),
            extension: options.file_extension.clone(),
        });
    }
    let store = store_of(state, &url)?;
    let schema = options
        .format
        .infer_schema(state, &store, representatives)
        .await
        .map_err(|e| InputError::Schema {
            uri: uri.to_string(),
            message: first_line(&e.to_string()).to_string(),
        })?;
    let config = ListingTableConfig::new(url)
        .with_listing_options(options)
        .with_schema(schema);
    ListingTable::try_new(config).map_err(|e| InputError::BadUri {
        uri: uri.to_string(),
        message: e.to_string(),
    })
}

/// What reading the footers gives: the work units, and the files that stand for every
/// file's schema (one per distinct pattern of nullable columns: their columns are the same).
pub(super) struct Footers {
    pub units: Vec<WorkUnit>,
    pub representatives: Vec<ObjectMeta>,
}

/// Reads every file's footer once, several at a time (into the session's metadata cache,
/// where the table and the scan find it again), and returns the files' work units, one per
/// row group; refuses, naming the file, an empty file, a file that cannot be read, or files
/// whose columns differ (names and types). CSV files get the same checks from
/// `csv::infer_file_schema`.
pub(super) async fn read_footers(
    state: &SessionState,
    url: &ListingTableUrl,
    files: &[ObjectMeta],
) -> Result<Footers, InputError> {
    let store = store_of(state, url)?;
    let cache = state.runtime_env().cache_manager.get_file_metadata_cache();
    // As DataFusion reads footers itself: one request for a small file's whole tail.
    let hint = state.table_options().parquet.global.metadata_size_hint;
    let concurrency = usize::from(state.config_options().execution.meta_fetch_concurrency);
    let footers: Vec<(String, Arc<ParquetMetaData>)> = futures::stream::iter(files)
        .map(|meta| {
            let (store, cache, name) = (store.clone(), cache.clone(), file_name(url, meta));
            async move {
                if meta.size == 0 {
                    return Err(InputError::EmptyFile { file: name });
                }
                let footer = DFParquetMetadata::new(store.as_ref(), meta)
                    .with_metadata_size_hint(hint)
                    .with_file_metadata_cache(Some(cache))
                    .fetch_metadata()
                    .await
                    .map_err(|e| unreadable(&name, &e))?;
                Ok((name, footer))
            }
        })
        .buffered(concurrency)
        .try_collect()
        .await?;
    let mut first: Option<(&str, Vec<String>)> = None;
    let mut units = Vec::new();
    let mut nullability: Vec<Vec<bool>> = Vec::new();
    let mut representatives = Vec::new();
    for ((name, footer), meta) in footers.iter().zip(files) {
        let file = footer.file_metadata();
        let schema = parquet_to_arrow_schema(file.schema_descr(), file.key_value_metadata())
            .map_err(|e| unreadable(name, &e))?;
        let columns = describe(&schema);
        match &first {
            None => first = Some((name, columns)),
            Some((first_name, first_columns)) if *first_columns != columns => {
                return Err(InputError::columns_differ(
                    name,
                    first_name,
                    first_columns,
                    &columns,
                ));
            }
            Some(_) => {}
        }
        let nullable: Vec<bool> = schema.fields().iter().map(|f| f.is_nullable()).collect();
        if !nullability.contains(&nullable) {
            nullability.push(nullable);
            representatives.push(meta.clone());
        }
        units.extend(row_group_units(name, meta, footer));
    }
    Ok(Footers {
        units,
        representatives,
    })
}

fn unreadable(file: &str, e: &dyn std::fmt::Display) -> InputError {
    InputError::Unreadable {
        file: file.to_string(),
        message: e.to_string().replace('\n', "; "),
    }
}

/// One unit per row group of a file, with its rows and compressed bytes.
fn row_group_units(file: &str, meta: &ObjectMeta, footer: &ParquetMetaData) -> Vec<WorkUnit> {
    footer
        .row_groups()
        .iter()
        .enumerate()
        .map(|(i, rg)| WorkUnit {
            file: file.to_string(),
            row_group: Some(i),
            byte_range: None,
            rows: Some(rg.num_rows().max(0) as u64),
            bytes: rg.compressed_size().max(0) as u64,
            location: meta.location.to_string(),
        })
        .collect()
}

/// `name: type` for every column.
fn describe(schema: &Schema) -> Vec<String> {
    schema
        .fields()
        .iter()
        .map(|f| format!("{}: {}", f.name(), f.data_type()))
        .collect()
}
