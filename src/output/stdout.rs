//! Result rows on a stream rather than in a folder (`score -o -`, `sql`): CSV, JSON Lines,
//! or an aligned table for a person at a terminal.

use std::io::Write;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::error::ArrowError;

/// How rows are printed on a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StreamFormat {
    /// An aligned table (the default on a terminal); held until the last row arrives.
    Table,
    /// CSV with a header line (the default when stdout is a pipe or a file).
    Csv,
    /// JSON Lines: one object per row.
    Json,
}

impl StreamFormat {
    /// A table when `terminal`, else CSV.
    pub fn default_for(terminal: bool) -> Self {
        if terminal { Self::Table } else { Self::Csv }
    }
}

/// Writes batches to a stream as they come (a table waits for the last one).
pub struct BatchPrinter<W: Write> {
    inner: Printer<W>,
}

enum Printer<W: Write> {
    Table(W, Vec<RecordBatch>),
    // Boxed: the CSV writer's options make it several times the size of the others.
    Csv(Box<datafusion::arrow::csv::Writer<W>>),
    Json(datafusion::arrow::json::LineDelimitedWriter<W>),
}

impl<W: Write> BatchPrinter<W> {
    pub fn new(format: StreamFormat, out: W) -> Self {
        let inner = match format {
            StreamFormat::Table => Printer::Table(out, Vec::new()),
            StreamFormat::Csv => Printer::Csv(Box::new(
                datafusion::arrow::csv::WriterBuilder::new()
                    .with_header(true)
                    .build(out),
            )),
            StreamFormat::Json => {
                Printer::Json(datafusion::arrow::json::LineDelimitedWriter::new(out))
            }
        };
        Self { inner }
    }

    pub fn write(&mut self, batch: &RecordBatch) -> Result<(), ArrowError> {
        match &mut self.inner {
            Printer::Table(_, held) => held.push(batch.clone()),
            Printer::Csv(w) => w.write(batch)?,
            Printer::Json(w) => w.write(batch)?,
        }
        Ok(())
    }

    /// Writes what is held and flushes the stream.
    pub fn finish(self) -> Result<(), ArrowError> {
        match self.inner {
            Printer::Table(mut out, held) => {
                let table = datafusion::arrow::util::pretty::pretty_format_batches(&held)?;
                writeln!(out, "{table}")?;
                out.flush()?;
            }
            Printer::Csv(w) => w.into_inner().flush()?,
            Printer::Json(mut w) => {
                w.finish()?;
                w.into_inner().flush()?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{Float32Array, Int64Array};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    fn batch() -> RecordBatch {
        let schema = Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("p", DataType::Float32, true),
        ]);
        RecordBatch::try_new(
            Arc::new(schema),
            vec![
                Arc::new(Int64Array::from(vec![1, 2])),
                Arc::new(Float32Array::from(vec![Some(0.25), None])),
            ],
        )
        .unwrap()
    }

    fn print(format: StreamFormat) -> String {
        let mut out = Vec::new();
        let mut p = BatchPrinter::new(format, &mut out);
        p.write(&batch()).unwrap();
        p.write(&batch()).unwrap();
        p.finish().unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn csv_has_one_header_and_empty_fields_for_nulls() {
        assert_eq!(print(StreamFormat::Csv), "id,p\n1,0.25\n2,\n1,0.25\n2,\n");
    }

    #[test]
    fn json_lines_leave_nulls_out() {
        assert_eq!(
            print(StreamFormat::Json),
            "{\"id\":1,\"p\":0.25}\n{\"id\":2}\n{\"id\":1,\"p\":0.25}\n{\"id\":2}\n"
        );
    }

    #[test]
    fn a_table_holds_every_row_under_one_header() {
        let text = print(StreamFormat::Table);
        assert_eq!(text.lines().filter(|l| l.contains("| id")).count(), 1);
        assert_eq!(text.lines().filter(|l| l.contains("| 2 ")).count(), 2);
    }
}
