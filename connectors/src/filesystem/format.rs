//! File formats of the filesystem connector: their options, the streaming
//! decoders the source reads CSV and JSON with, and the part-file writers of
//! the sink.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, SchemaRef};
use arrow::error::ArrowError;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use weir_engine::{ConnectorOptions, Error, Result, RowKind};

use crate::debezium::{DebeziumDecoder, DebeziumOptions};

/// Flink's SQL timestamp format, the default for CSV and JSON.
const SQL_TIMESTAMP: &str = "%Y-%m-%d %H:%M:%S%.f";
const SQL_TIMESTAMP_TZ: &str = "%Y-%m-%d %H:%M:%S%.f%:z";
const ISO_TIMESTAMP: &str = "%Y-%m-%dT%H:%M:%S%.f";
const ISO_TIMESTAMP_TZ: &str = "%Y-%m-%dT%H:%M:%S%.f%:z";

/// A file format with its options.
#[derive(Debug, Clone)]
pub enum Format {
    /// Comma (or other) separated values, no header by default.
    Csv(CsvOptions),
    /// One JSON object per line.
    Json(JsonOptions),
    /// Apache Parquet.
    Parquet,
    /// A changelog: one Debezium JSON envelope per line (see [`crate::debezium`]).
    DebeziumJson(JsonOptions),
}

/// The `csv.*` options.
#[derive(Debug, Clone)]
pub struct CsvOptions {
    /// `csv.field-delimiter` (default `,`).
    pub delimiter: u8,
    /// `csv.quote-character` (default `"`).
    pub quote: u8,
    /// `csv.escape-character` (none by default).
    pub escape: Option<u8>,
    /// `csv.allow-comments`: skip lines starting with `#`.
    pub allow_comments: bool,
    /// `csv.null-literal`: the text of a null (default: the empty field).
    pub null_literal: Option<String>,
    /// `csv.ignore-first-line`: skip a header line when reading.
    pub ignore_first_line: bool,
}

/// The `json.*` options.
#[derive(Debug, Clone)]
pub struct JsonOptions {
    /// `json.timestamp-format.standard` = `ISO-8601` (else `SQL`): how the sink writes timestamps.
    pub iso_timestamps: bool,
}

/// `<format>.timestamp-format.standard`: `ISO-8601` (true) or `SQL` (the default).
fn iso_timestamps(options: &ConnectorOptions, key: &str) -> Result<bool> {
    match options.get(key) {
        None => Ok(false),
        Some(v) if v.eq_ignore_ascii_case("SQL") => Ok(false),
        Some(v) if v.eq_ignore_ascii_case("ISO-8601") => Ok(true),
        Some(v) => Err(Error::invalid_option(
            key,
            format!("option '{key}' = '{v}' must be 'SQL' or 'ISO-8601'"),
        )),
    }
}

/// A single-byte character option; `\t` may be written as such.
fn char_option(options: &ConnectorOptions, key: &str) -> Result<Option<u8>> {
    options
        .get(key)
        .map(|v| match v {
            "\\t" | "\t" => Ok(b'\t'),
            v if v.len() == 1 && v.is_ascii() => Ok(v.as_bytes()[0]),
            _ => Err(Error::invalid_option(
                key,
                format!("option '{key}' = '{v}' must be a single ASCII character"),
            )),
        })
        .transpose()
}

impl Format {
    /// Reads `'format'` and its options.
    pub fn parse(options: &ConnectorOptions) -> Result<Self> {
        let name = options.require("format")?;
        match name.trim().to_ascii_lowercase().as_str() {
            "csv" => Ok(Format::Csv(CsvOptions {
                delimiter: char_option(options, "csv.field-delimiter")?.unwrap_or(b','),
                quote: char_option(options, "csv.quote-character")?.unwrap_or(b'"'),
                escape: char_option(options, "csv.escape-character")?,
                allow_comments: options.parse_bool("csv.allow-comments")?.unwrap_or(false),
                null_literal: options.get("csv.null-literal").map(str::to_string),
                ignore_first_line: options
                    .parse_bool("csv.ignore-first-line")?
                    .unwrap_or(false),
            })),
            "json" => Ok(Format::Json(JsonOptions {
                iso_timestamps: iso_timestamps(options, "json.timestamp-format.standard")?,
            })),
            "parquet" => Ok(Format::Parquet),
            "debezium-json" => Ok(Format::DebeziumJson(JsonOptions {
                iso_timestamps: iso_timestamps(options, "debezium-json.timestamp-format.standard")?,
            })),
            other => {
                let hint = weir_engine::suggest::closest(
                    other,
                    ["csv", "json", "parquet", "debezium-json"],
                )
                .map(|s| format!(" (did you mean '{s}'?)"))
                .unwrap_or_default();
                Err(Error::invalid_option(
                    "format",
                    format!(
                        "option 'format' = '{name}' is not a known format{hint}; use 'csv', 'json', 'parquet' or 'debezium-json'"
                    ),
                ))
            }
        }
    }

    /// The format's name, also the prefix of its options.
    pub fn name(&self) -> &'static str {
        match self {
            Format::Csv(_) => "csv",
            Format::Json(_) => "json",
            Format::Parquet => "parquet",
            Format::DebeziumJson(_) => "debezium-json",
        }
    }

    /// The extension of the files the sink writes.
    pub fn extension(&self) -> &'static str {
        match self {
            Format::DebeziumJson(_) => "json",
            other => other.name(),
        }
    }

    /// True for a changelog format, which takes updates and deletes.
    pub fn is_changelog(&self) -> bool {
        matches!(self, Format::DebeziumJson(_))
    }

    /// True when reading skips a header line.
    pub fn ignores_first_line(&self) -> bool {
        matches!(self, Format::Csv(c) if c.ignore_first_line)
    }

    /// True when a column of `data_type` can be stored in this format.
    pub fn supports(&self, data_type: &DataType) -> bool {
        use DataType as D;
        match self {
            Format::Csv(_) => {
                data_type.is_numeric()
                    && !matches!(data_type, D::Float16 | D::Decimal32(..) | D::Decimal64(..))
                    || matches!(
                        data_type,
                        D::Boolean
                            | D::Utf8
                            | D::LargeUtf8
                            | D::Utf8View
                            | D::Date32
                            | D::Date64
                            | D::Time32(_)
                            | D::Time64(_)
                            | D::Timestamp(..)
                    )
            }
            Format::Json(_) | Format::DebeziumJson(_) => !matches!(
                data_type,
                D::Union(..)
                    | D::RunEndEncoded(..)
                    | D::Binary
                    | D::LargeBinary
                    | D::BinaryView
                    | D::FixedSizeBinary(_)
            ),
            Format::Parquet => true,
        }
    }
}

/// A streaming decoder of text records (CSV or JSON lines) into batches.
pub trait BatchDecoder: Send {
    /// Buffers records from `buf`, returning how many bytes it took; fewer
    /// than `buf.len()` when a batch is full. An empty `buf` marks the end.
    fn decode(&mut self, buf: &[u8]) -> Result<usize, ArrowError>;
    /// The buffered records as a batch.
    fn flush(&mut self) -> Result<Option<RecordBatch>, ArrowError>;
}

impl BatchDecoder for arrow::csv::reader::Decoder {
    fn decode(&mut self, buf: &[u8]) -> Result<usize, ArrowError> {
        arrow::csv::reader::Decoder::decode(self, buf)
    }
    fn flush(&mut self) -> Result<Option<RecordBatch>, ArrowError> {
        arrow::csv::reader::Decoder::flush(self)
    }
}

impl BatchDecoder for arrow::json::reader::Decoder {
    fn decode(&mut self, buf: &[u8]) -> Result<usize, ArrowError> {
        if buf.is_empty() {
            return Ok(0);
        }
        arrow::json::reader::Decoder::decode(self, buf)
    }
    fn flush(&mut self) -> Result<Option<RecordBatch>, ArrowError> {
        arrow::json::reader::Decoder::flush(self)
    }
}

/// Makes decoders of one file's records: `(batch size) -> decoder`.
pub type DecoderFactory = Arc<dyn Fn(usize) -> Result<Box<dyn BatchDecoder>> + Send + Sync>;

/// The decoder factory for CSV, JSON or Debezium JSON reading `projection`
/// of the table `schema`; `None` for Parquet. A Debezium decoder's batches
/// carry the row-kind column last.
pub fn decoder_factory(
    format: &Format,
    schema: &SchemaRef,
    projection: &[usize],
) -> Result<Option<DecoderFactory>> {
    match format {
        Format::Csv(csv) => {
            let null_regex = csv
                .null_literal
                .as_deref()
                .map(|literal| regex::Regex::new(&format!("^{}$", regex::escape(literal))))
                .transpose()
                .map_err(|e| {
                    Error::invalid_option(
                        "csv.null-literal",
                        format!("option 'csv.null-literal' is invalid: {e}"),
                    )
                })?;
            let (schema, csv, projection) = (Arc::clone(schema), csv.clone(), projection.to_vec());
            Ok(Some(Arc::new(move |batch_size| {
                let mut builder = arrow::csv::ReaderBuilder::new(Arc::clone(&schema))
                    .with_header(false)
                    .with_delimiter(csv.delimiter)
                    .with_quote(csv.quote)
                    .with_batch_size(batch_size)
                    .with_projection(projection.clone());
                if let Some(escape) = csv.escape {
                    builder = builder.with_escape(escape);
                }
                if csv.allow_comments {
                    builder = builder.with_comment(b'#');
                }
                if let Some(regex) = &null_regex {
                    builder = builder.with_null_regex(regex.clone());
                }
                Ok(Box::new(builder.build_decoder()) as Box<dyn BatchDecoder>)
            })))
        }
        Format::Json(_) => {
            let projected = Arc::new(schema.project(projection)?);
            Ok(Some(Arc::new(move |batch_size| {
                let decoder = arrow::json::ReaderBuilder::new(Arc::clone(&projected))
                    .with_batch_size(batch_size)
                    .build_decoder()?;
                Ok(Box::new(decoder) as Box<dyn BatchDecoder>)
            })))
        }
        Format::Parquet => Ok(None),
        Format::DebeziumJson(_) => {
            let projected = Arc::new(schema.project(projection)?);
            Ok(Some(Arc::new(move |batch_size| {
                Ok(Box::new(DebeziumLines {
                    decoder: DebeziumDecoder::new(Arc::clone(&projected)),
                    batch_size,
                    records: 0,
                    partial: Vec::new(),
                }) as Box<dyn BatchDecoder>)
            })))
        }
    }
}

/// Reads `debezium-json` files: one change record per line, `batch_size`
/// records per batch (an update gives two rows).
struct DebeziumLines {
    decoder: DebeziumDecoder,
    batch_size: usize,
    /// Records buffered since the last flush.
    records: usize,
    /// The start of a line that the last buffer cut off.
    partial: Vec<u8>,
}

impl DebeziumLines {
    fn push(&mut self, line: &[u8]) -> Result<(), ArrowError> {
        if line.iter().all(u8::is_ascii_whitespace) {
            return Ok(());
        }
        self.records += 1;
        self.decoder
            .push(line)
            .map(|_| ())
            .map_err(|e| ArrowError::JsonError(e.to_string()))
    }
}

impl BatchDecoder for DebeziumLines {
    fn decode(&mut self, buf: &[u8]) -> Result<usize, ArrowError> {
        if buf.is_empty() {
            let line = std::mem::take(&mut self.partial);
            return self.push(&line).map(|_| 0);
        }
        let mut taken = 0;
        while self.records < self.batch_size {
            let Some(end) = buf[taken..].iter().position(|&b| b == b'\n') else {
                self.partial.extend_from_slice(&buf[taken..]);
                return Ok(buf.len());
            };
            let line = &buf[taken..taken + end];
            taken += end + 1;
            if self.partial.is_empty() {
                self.push(line)?;
            } else {
                let mut whole = std::mem::take(&mut self.partial);
                whole.extend_from_slice(line);
                self.push(&whole)?;
            }
        }
        Ok(taken)
    }

    fn flush(&mut self) -> Result<Option<RecordBatch>, ArrowError> {
        self.records = 0;
        self.decoder
            .flush()
            .map_err(|e| ArrowError::JsonError(e.to_string()))
    }
}

/// Counts the bytes written through it, for the rolling policy.
#[derive(Debug)]
pub struct CountingWriter<W> {
    inner: W,
    written: Arc<AtomicU64>,
}

impl<W: Write> Write for CountingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.written.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

type FileOut = CountingWriter<BufWriter<File>>;

/// An open part file of the sink.
pub enum PartWriter {
    /// A CSV file, and its byte count.
    Csv(Box<arrow::csv::Writer<FileOut>>, Arc<AtomicU64>),
    /// A JSON-lines file, and its byte count.
    Json(arrow::json::LineDelimitedWriter<FileOut>, Arc<AtomicU64>),
    /// A Parquet file, whose footer is written at close.
    Parquet(Box<ArrowWriter<BufWriter<File>>>),
    /// A changelog of Debezium envelopes, one per line, and its byte count.
    DebeziumJson(FileOut, DebeziumOptions, Arc<AtomicU64>),
}

impl PartWriter {
    /// Starts writing rows of `schema` to `file`.
    pub fn open(format: &Format, file: File, schema: &SchemaRef) -> Result<Self> {
        let out = BufWriter::with_capacity(256 * 1024, file);
        let written = Arc::new(AtomicU64::new(0));
        let counted = |out| CountingWriter {
            inner: out,
            written: Arc::clone(&written),
        };
        Ok(match format {
            Format::Csv(csv) => {
                let mut builder = arrow::csv::WriterBuilder::new()
                    .with_header(false)
                    .with_delimiter(csv.delimiter)
                    .with_quote(csv.quote)
                    .with_timestamp_format(SQL_TIMESTAMP.into())
                    .with_timestamp_tz_format(SQL_TIMESTAMP_TZ.into());
                if let Some(escape) = csv.escape {
                    builder = builder.with_escape(escape).with_double_quote(false);
                }
                if let Some(null) = &csv.null_literal {
                    builder = builder.with_null(null.clone());
                }
                PartWriter::Csv(Box::new(builder.build(counted(out))), written)
            }
            Format::Json(json) => {
                let (ts, ts_tz) = if json.iso_timestamps {
                    (ISO_TIMESTAMP, ISO_TIMESTAMP_TZ)
                } else {
                    (SQL_TIMESTAMP, SQL_TIMESTAMP_TZ)
                };
                let writer = arrow::json::WriterBuilder::new()
                    .with_explicit_nulls(true)
                    .with_timestamp_format(ts.into())
                    .with_timestamp_tz_format(ts_tz.into())
                    .build::<_, arrow::json::writer::LineDelimited>(counted(out));
                PartWriter::Json(writer, written)
            }
            Format::DebeziumJson(json) => PartWriter::DebeziumJson(
                counted(out),
                DebeziumOptions {
                    iso_timestamps: json.iso_timestamps,
                },
                Arc::clone(&written),
            ),
            Format::Parquet => {
                let props = WriterProperties::builder()
                    .set_compression(Compression::SNAPPY)
                    .build();
                let writer = ArrowWriter::try_new(out, Arc::clone(schema), Some(props))
                    .map_err(|e| Error::internal(format!("cannot start a parquet file: {e}")))?;
                PartWriter::Parquet(Box::new(writer))
            }
        })
    }

    /// Appends a batch of rows of `kinds` (`None`: inserts); only a
    /// changelog format takes other kinds than inserts.
    pub fn write(
        &mut self,
        batch: &RecordBatch,
        kinds: Option<&[RowKind]>,
    ) -> std::result::Result<(), String> {
        if let PartWriter::DebeziumJson(out, options, _) = self {
            let lines =
                crate::debezium::encode(batch, kinds, *options).map_err(|e| e.to_string())?;
            for line in lines {
                out.write_all(&line).map_err(|e| e.to_string())?;
                out.write_all(b"\n").map_err(|e| e.to_string())?;
            }
            return Ok(());
        }
        if kinds.is_some_and(|k| k.iter().any(|k| *k != RowKind::Insert)) {
            return Err("this format takes only inserts, but the rows are updates or deletes; use 'format' = 'debezium-json'".into());
        }
        match self {
            PartWriter::DebeziumJson(..) => Ok(()),
            PartWriter::Csv(w, _) => w.write(batch).map_err(|e| e.to_string()),
            PartWriter::Json(w, _) => w.write(batch).map_err(|e| e.to_string()),
            PartWriter::Parquet(w) => w.write(batch).map_err(|e| e.to_string()),
        }
    }

    /// About how many bytes the file holds (including buffered ones).
    pub fn size(&self) -> u64 {
        match self {
            PartWriter::Csv(_, written)
            | PartWriter::Json(_, written)
            | PartWriter::DebeziumJson(_, _, written) => written.load(Ordering::Relaxed),
            PartWriter::Parquet(w) => (w.bytes_written() + w.in_progress_size()) as u64,
        }
    }

    /// Completes the file and makes it durable.
    pub fn close(self) -> std::result::Result<(), String> {
        let out = match self {
            PartWriter::Csv(w, _) => w.into_inner().inner,
            PartWriter::Json(mut w, _) => {
                w.finish().map_err(|e| e.to_string())?;
                w.into_inner().inner
            }
            PartWriter::Parquet(w) => w.into_inner().map_err(|e| e.to_string())?,
            PartWriter::DebeziumJson(out, _, _) => out.inner,
        };
        let file = out.into_inner().map_err(|e| e.error().to_string())?;
        file.sync_all().map_err(|e| e.to_string())
    }
}
