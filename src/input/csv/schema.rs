//! The table's columns and types, inferred from the start of every file as DataFusion does
//! (arrow's CSV inference over the first [`INFER_RECORDS`] records), except that malformed
//! records are skipped rather than refusing the run.

use datafusion::arrow::csv::reader::Format;
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::error::DataFusionError;
use futures::TryStreamExt;

use super::{CsvDialect, CsvFile, count_newlines, csv_reader, csv_writer, open_stream, strip_bom};
use crate::input::InputError;

/// Records per file read to infer column types, as DataFusion does.
const INFER_RECORDS: usize = 1000;

/// Why the start of a file gives no schema.
#[derive(Debug, thiserror::Error)]
enum HeadError {
    #[error("the header's field {0} is not valid UTF-8")]
    HeaderNotUtf8(usize),
    #[error(transparent)]
    Csv(#[from] csv::Error),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Arrow(#[from] datafusion::arrow::error::ArrowError),
}

/// Reads the start of each file and returns the table's file schema (without partition
/// columns), refusing an empty file, one that cannot be read, or files whose columns differ,
/// by name.
pub async fn infer_file_schema(
    files: &[CsvFile],
    dialect: CsvDialect,
) -> Result<Schema, InputError> {
    let mut merged: Option<(String, Schema)> = None;
    for file in files {
        if file.meta.size == 0 {
            return Err(InputError::EmptyFile {
                file: file.name.clone(),
            });
        }
        let unreadable = |message: String| InputError::Unreadable {
            file: file.name.clone(),
            message,
        };
        let head = read_head(file, dialect)
            .await
            .map_err(|e| unreadable(e.to_string()))?;
        let schema = infer_from_head(&head, dialect).map_err(|e| unreadable(e.to_string()))?;
        merged = Some(match merged {
            None => (file.name.clone(), schema),
            Some((first, m)) => {
                let names = |s: &Schema| -> Vec<String> {
                    s.fields().iter().map(|f| f.name().clone()).collect()
                };
                let (a, b) = (names(&m), names(&schema));
                if a != b {
                    return Err(InputError::columns_differ(&file.name, &first, &a, &b));
                }
                (first, widen(&m, &schema))
            }
        });
    }
    // A column empty in every record looked at is read as text: values past those records are
    // kept (a Null column would drop them) and cast where a model input needs a number.
    Ok(merged
        .map(|(_, s)| {
            Schema::new(
                s.fields()
                    .iter()
                    .map(|f| match f.data_type() {
                        DataType::Null => Field::new(f.name(), DataType::Utf8, true),
                        _ => f.as_ref().clone(),
                    })
                    .collect::<Vec<_>>(),
            )
        })
        .unwrap_or_else(Schema::empty))
}

/// The first bytes of a file (decompressed): enough for [`INFER_RECORDS`] records in all
/// but very wide files.
async fn read_head(file: &CsvFile, dialect: CsvDialect) -> Result<Vec<u8>, DataFusionError> {
    let mut stream = open_stream(file, dialect).await?;
    let mut head = Vec::new();
    while let Some(bytes) = stream.try_next().await? {
        head.extend_from_slice(&bytes);
        if head.len() >= (1 << 20) && count_newlines(&head) > INFER_RECORDS {
            break;
        }
    }
    Ok(head)
}

/// Column names from the header (or `column_1`…), types from arrow's inference over the
/// well-formed records among the first [`INFER_RECORDS`].
fn infer_from_head(head: &[u8], dialect: CsvDialect) -> Result<Schema, HeadError> {
    let head = strip_bom(head);
    // Only whole lines: the head may end inside a record.
    let head = match memchr::memrchr(b'\n', head) {
        Some(i) => &head[..=i],
        None => head,
    };
    let mut reader = csv_reader(dialect, head);
    let mut records = reader.byte_records();
    let first = match records.next() {
        Some(r) => r?,
        None => return Ok(Schema::empty()),
    };
    let width = first.len();
    let mut clean = csv_writer(dialect);
    if dialect.has_header {
        if let Some(i) = (0..width).find(|&i| std::str::from_utf8(&first[i]).is_err()) {
            return Err(HeadError::HeaderNotUtf8(i + 1));
        }
        clean.write_byte_record(&first)?;
    } else if is_well_formed(&first, width) {
        clean.write_byte_record(&first)?;
    }
    for record in records.take(INFER_RECORDS) {
        let Ok(record) = record else { continue };
        if is_well_formed(&record, width) {
            clean.write_byte_record(&record)?;
        }
    }
    let clean = clean.into_inner().map_err(|e| e.into_error())?;
    let format = Format::default()
        .with_header(dialect.has_header)
        .with_delimiter(dialect.delimiter)
        .with_quote(dialect.quote);
    let (schema, _) = format.infer_schema(clean.as_slice(), Some(INFER_RECORDS))?;
    // Every column may hold nulls in the rows not looked at.
    Ok(Schema::new(
        schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect::<Vec<_>>(),
    ))
}

/// Where files disagree on a column's type: integers and floats make floats, anything else
/// text.
fn widen(a: &Schema, b: &Schema) -> Schema {
    let fields: Vec<Field> = a
        .fields()
        .iter()
        .zip(b.fields())
        .map(|(fa, fb)| {
            let t = match (fa.data_type(), fb.data_type()) {
                (x, y) if x == y => x.clone(),
                (DataType::Null, y) => y.clone(),
                (x, DataType::Null) => x.clone(),
                (DataType::Int64 | DataType::Float64, DataType::Int64 | DataType::Float64) => {
                    DataType::Float64
                }
                _ => DataType::Utf8,
            };
            Field::new(fa.name(), t, true)
        })
        .collect();
    Schema::new(fields)
}

fn is_well_formed(record: &csv::ByteRecord, width: usize) -> bool {
    record.len() == width && record.iter().all(|f| std::str::from_utf8(f).is_ok())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::datasource::file_format::file_compression_type::FileCompressionType;
    use object_store::ObjectStoreExt;

    use super::*;

    #[test]
    fn types_are_inferred_past_malformed_records() {
        let dialect = CsvDialect {
            has_header: true,
            delimiter: b',',
            quote: b'"',
            compression: FileCompressionType::UNCOMPRESSED,
        };
        let s = infer_from_head(b"\xef\xbb\xbfid,x\n1,2.5\n2\n3,4.5,9\n", dialect).unwrap();
        assert_eq!(s.field(0).name(), "id");
        assert_eq!(s.field(0).data_type(), &DataType::Int64);
        assert_eq!(s.field(1).data_type(), &DataType::Float64);
    }

    #[tokio::test]
    async fn a_column_empty_where_types_are_inferred_is_text() {
        use object_store::memory::InMemory;
        let store = Arc::new(InMemory::new());
        let mut csv = b"id,x\n".to_vec();
        for i in 0..1500 {
            csv.extend_from_slice(format!("{i},{}\n", if i < 1200 { "" } else { "7" }).as_bytes());
        }
        let location = object_store::path::Path::from("d.csv");
        store.put(&location, csv.into()).await.unwrap();
        let meta = store.head(&location).await.unwrap();
        let file = CsvFile {
            store,
            meta,
            name: "d.csv".into(),
            partition_values: vec![],
            ranges: None,
        };
        let dialect = CsvDialect {
            has_header: true,
            delimiter: b',',
            quote: b'"',
            compression: FileCompressionType::UNCOMPRESSED,
        };
        let s = infer_file_schema(&[file], dialect).await.unwrap();
        assert_eq!(s.field(0).data_type(), &DataType::Int64);
        assert_eq!(s.field(1).data_type(), &DataType::Utf8);
    }
}
