//! Which files an `input.uri` names: where the listing starts, whether it is a collection
//! (a directory, a prefix or a glob), the format its names tell, and the files themselves in
//! path order with their fingerprint.

use std::path::Path;

use datafusion::datasource::file_format::file_compression_type::FileCompressionType;
use datafusion::datasource::listing::ListingTableUrl;
use datafusion::execution::SessionState;
use datafusion::prelude::SessionContext;
use object_store::ObjectMeta;

use super::InputError;
use crate::spec::{CsvCompression, InputFormat, InputSpec};
use crate::storage::StoreFactory;

/// Where an input's files are listed from.
#[derive(Debug, Clone)]
pub(super) struct Listing {
    pub url: ListingTableUrl,
    /// A directory, a prefix or a glob (many files), rather than one file.
    pub is_collection: bool,
    /// Whether `key=value` folders become partition columns (directories and prefixes).
    pub infer_partitions: bool,
    /// One file whose name shows the format: the input itself, or its first data file.
    pub sample: Option<String>,
}

impl Listing {
    /// Finds the listing of `uri`, registering its store with `ctx` when it is remote.
    /// Listing a remote prefix here also proves that the bucket and the credentials work.
    pub async fn locate(
        ctx: &SessionContext,
        uri: &str,
        stores: &StoreFactory,
    ) -> Result<Self, InputError> {
        if crate::storage::is_remote(uri) {
            stores.register(ctx, uri)?;
            Self::remote(uri, stores).await
        } else {
            Self::local(uri)
        }
    }

    async fn remote(uri: &str, stores: &StoreFactory) -> Result<Self, InputError> {
        let bad = |message: String| InputError::BadUri {
            uri: uri.to_string(),
            message,
        };
        let (base, glob) = split_glob(uri);
        let is_dir = glob.is_some() || base.ends_with('/') || format_of(base).is_none();
        let base = if is_dir && !base.ends_with('/') {
            format!("{base}/")
        } else {
            base.to_string()
        };
        let parsed = url::Url::parse(&base).map_err(|e| bad(e.to_string()))?;
        let pattern = glob
            .map(glob::Pattern::new)
            .transpose()
            .map_err(|e| bad(e.to_string()))?;
        let url = ListingTableUrl::try_new(parsed, pattern).map_err(|e| bad(e.to_string()))?;
        let sample = if is_dir {
            first_remote_file(stores, &base).await?
        } else {
            Some(base)
        };
        Ok(Self {
            url,
            is_collection: is_dir,
            infer_partitions: is_dir,
            sample,
        })
    }

    fn local(uri: &str) -> Result<Self, InputError> {
        let has_glob = uri.contains(['*', '?', '[']);
        let path = Path::new(uri);
        if !has_glob && !path.exists() {
            return Err(InputError::Missing {
                uri: uri.to_string(),
            });
        }
        let is_dir = !has_glob && path.is_dir();
        let url_text = if is_dir && !uri.ends_with('/') {
            format!("{uri}/")
        } else {
            uri.to_string()
        };
        let url =
            ListingTableUrl::parse(absolute_text(&url_text)).map_err(|e| InputError::BadUri {
                uri: uri.to_string(),
                message: e.to_string(),
            })?;
        Ok(Self {
            url,
            is_collection: is_dir || has_glob,
            infer_partitions: is_dir,
            sample: if is_dir {
                first_data_file(path)
            } else {
                Some(uri.to_string())
            },
        })
    }
}

/// The object store a listing reads from, as registered with the session.
pub(super) fn store_of(
    state: &SessionState,
    url: &ListingTableUrl,
) -> Result<std::sync::Arc<dyn object_store::ObjectStore>, InputError> {
    state
        .runtime_env()
        .object_store(url)
        .map_err(|e| InputError::BadUri {
            uri: url.to_string(),
            message: e.to_string(),
        })
}

/// The files the table reads, in path order.
pub(super) async fn list_files(
    state: &SessionState,
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
pub(super) fn file_name(url: &ListingTableUrl, meta: &ObjectMeta) -> String {
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

/// The values of the `key=value` folders in an object's path, in the order of `cols`.
pub(super) fn partition_values<'a>(
    location: &object_store::path::Path,
    cols: impl IntoIterator<Item = &'a str>,
) -> Vec<String> {
    cols.into_iter()
        .map(|name| {
            location
                .parts()
                .find_map(|p| {
                    p.as_ref()
                        .strip_prefix(name)
                        .and_then(|rest| rest.strip_prefix('='))
                        .map(String::from)
                })
                .unwrap_or_default()
        })
        .collect()
}

/// SHA-256 over the files the table reads (path, size, modification time), in path order:
/// what `mode = "skip"` compares to tell whether the input changed since the last commit.
pub(super) fn fingerprint(files: &[ObjectMeta]) -> String {
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

/// The format and compression: from the spec, else the name of `sample` (the input itself, or
/// its first data file).
pub(super) fn detect_format(
    input: &InputSpec,
    sample: Option<&str>,
) -> Result<(InputFormat, CsvCompression), InputError> {
    let by_ext = sample.and_then(format_of);
    let format = match (input.format, by_ext) {
        (Some(f), _) => f,
        (None, Some((f, _))) => f,
        (None, None) => {
            return Err(InputError::UnknownFormat {
                uri: input.uri.clone(),
            });
        }
    };
    let compression = match (input.csv.compression, by_ext) {
        (Some(c), _) => c,
        (None, Some((_, c))) => c,
        (None, None) => CsvCompression::None,
    };
    Ok((format, compression))
}

/// The file extension a listing of `format` keeps to.
pub(super) fn extension(format: InputFormat, compression: CsvCompression) -> String {
    let suffix = match compression {
        CsvCompression::None => "",
        CsvCompression::Gzip => ".gz",
        CsvCompression::Zstd => ".zst",
        CsvCompression::Bzip2 => ".bz2",
        CsvCompression::Xz => ".xz",
    };
    match format {
        InputFormat::Parquet => ".parquet".to_string(),
        InputFormat::Csv => format!(".csv{suffix}"),
    }
}

pub(super) fn file_compression(c: CsvCompression) -> FileCompressionType {
    match c {
        CsvCompression::None => FileCompressionType::UNCOMPRESSED,
        CsvCompression::Gzip => FileCompressionType::GZIP,
        CsvCompression::Zstd => FileCompressionType::ZSTD,
        CsvCompression::Bzip2 => FileCompressionType::BZIP2,
        CsvCompression::Xz => FileCompressionType::XZ,
    }
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
) -> Result<Option<String>, InputError> {
    use futures::TryStreamExt;
    let located = stores.locate(prefix_uri)?;
    let mut names: Vec<String> = located
        .store
        .list(Some(&located.path))
        .map_ok(|m| m.location.to_string())
        .try_collect()
        .await
        .map_err(|e| InputError::List {
            uri: prefix_uri.to_string(),
            message: e.to_string(),
        })?;
    names.sort();
    Ok(names
        .into_iter()
        .filter(|n| !n.split('/').any(is_hidden))
        .find(|n| format_of(n).is_some())
        .map(|n| format!("{}/{n}", located.root)))
}

/// Hidden and `_`-prefixed names are skipped, as Spark and DataFusion do.
fn is_hidden(name: &str) -> bool {
    name.starts_with('.') || name.starts_with('_')
}

fn format_of(name: &str) -> Option<(InputFormat, CsvCompression)> {
    let lower = name.to_ascii_lowercase();
    if lower.ends_with(".parquet") || lower.ends_with(".parq") {
        return Some((InputFormat::Parquet, CsvCompression::None));
    }
    [
        (".csv", CsvCompression::None),
        (".csv.gz", CsvCompression::Gzip),
        (".csv.zst", CsvCompression::Zstd),
        (".csv.bz2", CsvCompression::Bzip2),
        (".csv.xz", CsvCompression::Xz),
    ]
    .into_iter()
    .find(|(suffix, _)| lower.ends_with(suffix))
    .map(|(_, c)| (InputFormat::Csv, c))
}

/// The first file (in name order, depth first) whose name tells a format.
fn first_data_file(dir: &Path) -> Option<String> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .collect();
    entries.sort();
    for p in entries {
        let name = p.file_name()?.to_string_lossy().into_owned();
        if is_hidden(&name) {
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
        assert_eq!(extension(InputFormat::Csv, CsvCompression::Xz), ".csv.xz");
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

    #[test]
    fn partition_values_come_from_key_value_folders() {
        let location = object_store::path::Path::from("data/region=eu/ds=1/p.parquet");
        assert_eq!(
            partition_values(&location, ["ds", "region", "absent"]),
            ["1", "eu", ""]
        );
    }
}
