//! The `print` sink: every row to stdout (or stderr), as Flink prints them:
//! `+I[1, abc, null]`, prefixed by `<print-identifier>> ` and, when the sink
//! runs with parallelism above one, by the 1-based subtask number:
//! `3> +I[…]` or `<print-identifier>:3> +I[…]`.

use std::fmt::Write as _;
use std::io::Write;

use arrow::array::RecordBatch;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use async_trait::async_trait;
use weir_engine::{Connector, Error, Result, RowKind, Sink, TableDescriptor, TaskInfo};

use crate::util::split_row_kinds;

const NAME: &str = "print";
const OPTIONS: &[&str] = &["print-identifier", "standard-error", "sink.parallelism"];

/// The `print` connector (sink only).
#[derive(Debug, Clone, Copy, Default)]
pub struct PrintConnector;

impl Connector for PrintConnector {
    fn name(&self) -> &str {
        NAME
    }

    fn validate_sink(&self, table: &TableDescriptor) -> Result<()> {
        table.options.check_keys(NAME, OPTIONS, |_| false)?;
        table.options.parse_bool("standard-error")?;
        Ok(())
    }

    /// Every row is printed with its kind, as Flink's print sink does.
    fn accepts_updates(&self, _table: &TableDescriptor) -> bool {
        true
    }

    fn output_location(&self, table: &TableDescriptor) -> Option<String> {
        let stderr = table.options.parse_bool("standard-error").ok().flatten() == Some(true);
        Some(
            if stderr {
                "standard error"
            } else {
                "standard output"
            }
            .into(),
        )
    }

    fn create_sink(&self, table: &TableDescriptor, task: &TaskInfo) -> Result<Box<dyn Sink>> {
        self.validate_sink(table)?;
        let identifier = table.options.get("print-identifier").unwrap_or_default();
        let to_stderr = table.options.parse_bool("standard-error")?.unwrap_or(false);
        Ok(Box::new(PrintSink::new(identifier, to_stderr, task)))
    }
}

/// One subtask of a print sink.
#[derive(Debug)]
pub struct PrintSink {
    prefix: String,
    to_stderr: bool,
}

impl PrintSink {
    /// A sink printing with Flink's prefix for `identifier` and `task`.
    pub fn new(identifier: &str, to_stderr: bool, task: &TaskInfo) -> Self {
        let prefix = match (identifier.is_empty(), task.parallelism > 1) {
            (true, false) => String::new(),
            (false, false) => format!("{identifier}> "),
            (true, true) => format!("{}> ", task.subtask + 1),
            (false, true) => format!("{identifier}:{}> ", task.subtask + 1),
        };
        PrintSink { prefix, to_stderr }
    }

    /// The lines printed for `batch`.
    pub fn format_batch(&self, batch: &RecordBatch) -> Result<String> {
        let (data, kinds) = split_row_kinds(batch)?;
        let options = FormatOptions::default().with_null("null");
        let formatters = data
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let mut out = String::with_capacity(batch.num_rows() * (16 + 8 * formatters.len()));
        for row in 0..data.num_rows() {
            let kind = kinds.as_ref().map_or(RowKind::Insert, |k| k[row]);
            out.push_str(&self.prefix);
            out.push_str(kind.short_string());
            out.push('[');
            for (i, formatter) in formatters.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write!(out, "{}", formatter.value(row))
                    .map_err(|e| Error::internal(format!("print: {e}")))?;
            }
            out.push_str("]\n");
        }
        Ok(out)
    }
}

#[async_trait]
impl Sink for PrintSink {
    async fn write_batch(&mut self, batch: RecordBatch) -> Result<()> {
        let text = self.format_batch(&batch)?;
        let result = if self.to_stderr {
            let mut err = std::io::stderr().lock();
            err.write_all(text.as_bytes()).and_then(|()| err.flush())
        } else {
            let mut out = std::io::stdout().lock();
            out.write_all(text.as_bytes()).and_then(|()| out.flush())
        };
        result.map_err(|e| Error::io("printing rows", e))
    }

    async fn finish(&mut self) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int64Array, StringArray, TimestampMillisecondArray, UInt8Array};
    use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    use weir_engine::message::ROW_KIND_COLUMN;

    use super::*;
    use crate::util::test_support::{table, task};

    fn batch(with_kinds: bool) -> RecordBatch {
        let mut fields = vec![
            Field::new("id", DataType::Int64, true),
            Field::new("name", DataType::Utf8, true),
            Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), true),
        ];
        let mut columns: Vec<arrow::array::ArrayRef> = vec![
            Arc::new(Int64Array::from(vec![Some(1), None])),
            Arc::new(StringArray::from(vec![Some("a b"), None])),
            Arc::new(TimestampMillisecondArray::from(vec![
                Some(1_704_067_205_000),
                None,
            ])),
        ];
        if with_kinds {
            fields.push(Field::new(ROW_KIND_COLUMN, DataType::UInt8, false));
            columns.push(Arc::new(UInt8Array::from(vec![1, 2])));
        }
        RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap()
    }

    #[test]
    fn prints_like_flink() {
        let sink = PrintSink::new("", false, &task(0, 1));
        assert_eq!(
            sink.format_batch(&batch(false)).unwrap(),
            "+I[1, a b, 2024-01-01T00:00:05]\n+I[null, null, null]\n"
        );
        let sink = PrintSink::new("out", false, &task(2, 4));
        assert_eq!(
            sink.format_batch(&batch(true)).unwrap(),
            "out:3> -U[1, a b, 2024-01-01T00:00:05]\nout:3> +U[null, null, null]\n"
        );
        assert!(
            PrintSink::new("", false, &task(1, 2))
                .format_batch(&batch(false))
                .unwrap()
                .starts_with("2> +I[1")
        );
        assert!(
            PrintSink::new("x", false, &task(0, 1))
                .format_batch(&batch(false))
                .unwrap()
                .starts_with("x> +I[1")
        );
    }

    #[tokio::test]
    async fn writes_to_stdout_and_checks_options() {
        let t = table(
            vec![],
            &[("connector", "print"), ("print-identifier", "test")],
        );
        let mut sink = PrintConnector.create_sink(&t, &task(0, 1)).unwrap();
        sink.write_batch(batch(false)).await.unwrap();
        sink.finish().await.unwrap();
        let bad = table(vec![], &[("standard-eror", "true")]);
        let err = PrintConnector.validate_sink(&bad).unwrap_err().to_string();
        assert!(err.contains("did you mean 'standard-error'"), "{err}");
        let bad = table(vec![], &[("standard-error", "yes")]);
        assert!(
            PrintConnector
                .validate_sink(&bad)
                .unwrap_err()
                .to_string()
                .contains("standard-error")
        );
    }
}
