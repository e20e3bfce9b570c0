//! Parquet input: DataFusion's own `ListingTable`, after every file's footer has been read
//! once to refuse, naming the file, one that is empty or unreadable or whose columns differ.

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::execution::SessionState;
use object_store::ObjectMeta;

use super::InputError;
use super::listing::file_name;
use crate::diagnostics::first_line;

/// The table over `files` (which [`check_files`] has checked).
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

/// Refuses, naming the file, an empty file, a file that cannot be read, or files whose
/// columns differ (names and types). CSV files get the same checks from
/// `csv::infer_file_schema`.
pub(super) async fn check_files(
    state: &SessionState,
    url: &ListingTableUrl,
    options: &ListingOptions,
    files: &[ObjectMeta],
) -> Result<(), InputError> {
    let store = state
        .runtime_env()
        .object_store(url)
        .map_err(|e| InputError::BadUri {
            uri: url.to_string(),
            message: e.to_string(),
        })?;
    let mut first: Option<(String, Vec<String>)> = None;
    for meta in files {
        let name = file_name(url, meta);
        if meta.size == 0 {
            return Err(InputError::EmptyFile { file: name });
        }
        let schema = options
            .format
            .infer_schema(state, &store, std::slice::from_ref(meta))
            .await
            .map_err(|e| InputError::Unreadable {
                file: name.clone(),
                message: e.to_string().replace('\n', "; "),
            })?;
        let columns = describe(&schema);
        match &first {
            None => first = Some((name, columns)),
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
    }
    Ok(())
}

/// `name: type` for every column.
fn describe(schema: &SchemaRef) -> Vec<String> {
    schema
        .fields()
        .iter()
        .map(|f| format!("{}: {}", f.name(), f.data_type()))
        .collect()
}
