//! The filesystem source: reads its share of the table's files, one batch per poll.
//!
//! A `debezium-json` table is a changelog: its batches carry the row-kind
//! column last. Positions count rows either way (an update is two rows), so
//! a restore skips exactly what was emitted.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, RecordBatch, new_null_array};
use arrow::compute::cast;
use arrow::datatypes::SchemaRef;
use arrow::error::ArrowError;
use async_trait::async_trait;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use weir_engine::changelog::updating_schema;
use weir_engine::{
    Error, Result, Source, SourcePoll, TableDescriptor, TaskInfo, sql_type_name, sql_type_names_in,
};

use super::FsOptions;
use super::format::{BatchDecoder, DecoderFactory, Format, decoder_factory};
use crate::util::{make_batch, projected_schema, projection_indices};

/// The files of a table, in name order: `path` itself, or the regular files
/// in the directory `path` whose names start with neither `.` nor `_`.
pub fn list_files(path: &Path) -> Result<Vec<PathBuf>> {
    let context = || format!("reading filesystem path '{}'", path.display());
    let metadata = std::fs::metadata(path).map_err(|e| Error::io(context(), e))?;
    if !metadata.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(path).map_err(|e| Error::io(context(), e))? {
        let entry = entry.map_err(|e| Error::io(context(), e))?;
        let name = entry.file_name();
        let hidden = name
            .to_str()
            .is_none_or(|n| n.starts_with('.') || n.starts_with('_'));
        // `metadata` follows symlinks, so a link to a file counts as a file.
        if !hidden && std::fs::metadata(entry.path()).is_ok_and(|m| m.is_file()) {
            files.push(entry.path());
        }
    }
    files.sort();
    Ok(files)
}

/// One subtask of a filesystem source.
pub struct FilesystemSource {
    format: Format,
    table_schema: SchemaRef,
    /// The projected output schema.
    schema: SchemaRef,
    projection: Vec<usize>,
    batch_size: usize,
    decoders: Option<DecoderFactory>,
    /// This subtask's files.
    files: Vec<PathBuf>,
    /// The file being read (or next to open).
    file_index: usize,
    /// Rows of that file emitted so far.
    rows_done: u64,
    /// Rows of that file still to drop after a restore.
    skip: u64,
    current: Option<FileReader>,
}

impl FilesystemSource {
    /// The source for `task`'s share (file `i` for `i mod parallelism == subtask`) of the table.
    pub fn new(
        options: FsOptions,
        table: &TableDescriptor,
        projection: Option<&[usize]>,
        task: &TaskInfo,
    ) -> Result<Self> {
        let parallelism = task.parallelism.max(1);
        let files = list_files(&options.path)?
            .into_iter()
            .enumerate()
            .filter(|(i, _)| i % parallelism == task.subtask)
            .map(|(_, f)| f)
            .collect();
        let projection = projection_indices(&table.schema, projection);
        Ok(FilesystemSource {
            decoders: decoder_factory(&options.format, &table.schema, &projection)?,
            schema: if options.format.is_changelog() {
                updating_schema(&projected_schema(&table.schema, Some(&projection))?)
            } else {
                projected_schema(&table.schema, Some(&projection))?
            },
            format: options.format,
            table_schema: Arc::clone(&table.schema),
            projection,
            batch_size: options.batch_size,
            files,
            file_index: 0,
            rows_done: 0,
            skip: 0,
            current: None,
        })
    }

    fn open(&self, path: PathBuf) -> Result<FileReader> {
        let file =
            File::open(&path).map_err(|e| Error::io(format!("opening '{}'", path.display()), e))?;
        match &self.decoders {
            Some(factory) => {
                let mut reader = TextFileReader {
                    decoder: factory(self.batch_size)?,
                    factory: Arc::clone(factory),
                    reader: BufReader::with_capacity(64 * 1024, file),
                    path,
                    pending: Vec::new(),
                    line: 1,
                    done: false,
                };
                if self.format.ignores_first_line() {
                    reader.skip_line()?;
                }
                Ok(FileReader::Text(Box::new(reader)))
            }
            None => {
                let bad = |e: parquet::errors::ParquetError| {
                    Error::BadInput(format!(
                        "file '{}' is not a readable parquet file: {e}",
                        path.display()
                    ))
                };
                let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(bad)?;
                let names: Vec<&str> = self
                    .schema
                    .fields()
                    .iter()
                    .map(|f| f.name().as_str())
                    .collect();
                let mask = ProjectionMask::columns(builder.parquet_schema(), names);
                let reader = builder
                    .with_projection(mask)
                    .with_batch_size(self.batch_size)
                    .build()
                    .map_err(bad)?;
                Ok(FileReader::Parquet(reader, path))
            }
        }
    }

    /// The rows of a parquet batch as the projected columns, matched by name.
    fn conform_parquet(&self, batch: &RecordBatch, path: &Path) -> Result<RecordBatch> {
        let columns = self
            .schema
            .fields()
            .iter()
            .map(|field| -> Result<ArrayRef> {
                let Some(column) = batch.column_by_name(field.name()) else {
                    if field.is_nullable() {
                        return Ok(new_null_array(field.data_type(), batch.num_rows()));
                    }
                    return Err(Error::BadInput(format!(
                        "file '{}' has no column '{}', which is NOT NULL",
                        path.display(),
                        field.name()
                    )));
                };
                if column.data_type() == field.data_type() {
                    return Ok(Arc::clone(column));
                }
                cast(column, field.data_type()).map_err(|e| {
                    Error::BadInput(format!(
                        "file '{}': column '{}' is {}, which does not convert to {}: {}",
                        path.display(),
                        field.name(),
                        sql_type_name(column.data_type()),
                        sql_type_name(field.data_type()),
                        sql_type_names_in(&e.to_string())
                    ))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        make_batch(&self.schema, columns, batch.num_rows())
            .map_err(|e| Error::BadInput(format!("file '{}': {e}", path.display())))
    }
}

#[async_trait]
impl Source for FilesystemSource {
    async fn poll_batch(&mut self) -> Result<SourcePoll> {
        loop {
            let Some(reader) = &mut self.current else {
                match self.files.get(self.file_index) {
                    Some(path) => {
                        self.current = Some(self.open(path.clone())?);
                        continue;
                    }
                    None => return Ok(SourcePoll::Finished),
                }
            };
            let batch = match reader {
                FileReader::Text(text) => text.next_batch()?,
                FileReader::Parquet(parquet, path) => match parquet.next().transpose() {
                    Ok(Some(batch)) => {
                        let path = path.clone();
                        Some(self.conform_parquet(&batch, &path)?)
                    }
                    Ok(None) => None,
                    Err(e) => {
                        return Err(Error::BadInput(format!(
                            "reading '{}': {e}",
                            path.display()
                        )));
                    }
                },
            };
            match batch {
                Some(mut batch) if batch.num_rows() > 0 => {
                    if self.skip > 0 {
                        let dropped = batch
                            .num_rows()
                            .min(usize::try_from(self.skip).unwrap_or(usize::MAX));
                        self.skip -= dropped as u64;
                        self.rows_done += dropped as u64;
                        batch = batch.slice(dropped, batch.num_rows() - dropped);
                        if batch.num_rows() == 0 {
                            continue;
                        }
                    }
                    self.rows_done += batch.num_rows() as u64;
                    let batch = if batch.schema() == self.schema {
                        batch
                    } else {
                        make_batch(&self.schema, batch.columns().to_vec(), batch.num_rows())?
                    };
                    return Ok(SourcePoll::Batch(batch));
                }
                Some(_) => {}
                None => {
                    self.current = None;
                    self.file_index += 1;
                    self.rows_done = 0;
                    self.skip = 0;
                }
            }
        }
    }

    /// The file being read and the rows of it already emitted, as JSON.
    fn snapshot_position(&self) -> Result<Option<Vec<u8>>> {
        let position = serde_json::json!({
            "file": self.file_index,
            "path": self.files.get(self.file_index).map(|p| p.to_string_lossy()),
            "rows": self.rows_done,
        });
        Ok(Some(position.to_string().into_bytes()))
    }

    fn restore_position(&mut self, position: &[u8]) -> Result<()> {
        let bad = |why: String| Error::Connector {
            connector: "filesystem".into(),
            message: format!("cannot restore the source position: {why}"),
        };
        let value: serde_json::Value =
            serde_json::from_slice(position).map_err(|e| bad(e.to_string()))?;
        let file = value["file"]
            .as_u64()
            .ok_or_else(|| bad("no 'file'".into()))?;
        let rows = value["rows"]
            .as_u64()
            .ok_or_else(|| bad("no 'rows'".into()))?;
        let file = usize::try_from(file).map_err(|e| bad(e.to_string()))?;
        let expected = self.files.get(file).map(|p| p.to_string_lossy());
        if file > self.files.len() || value["path"].as_str() != expected.as_deref() {
            return Err(bad(format!(
                "file {file} ({}) is not this subtask's file {file} any more",
                value["path"]
            )));
        }
        self.file_index = file;
        self.rows_done = 0;
        self.skip = rows;
        self.current = None;
        Ok(())
    }
}

impl std::fmt::Debug for FilesystemSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FilesystemSource")
            .field("format", &self.format.name())
            .field("columns", &self.projection)
            .field("table_columns", &self.table_schema.fields().len())
            .field("files", &self.files)
            .finish()
    }
}

/// The file being read.
enum FileReader {
    Text(Box<TextFileReader>),
    Parquet(ParquetRecordBatchReader, PathBuf),
}

/// Reads CSV or JSON-lines records of one file, keeping track of line
/// numbers so that a bad record can be reported by file and line.
struct TextFileReader {
    path: PathBuf,
    reader: BufReader<File>,
    decoder: Box<dyn BatchDecoder>,
    factory: DecoderFactory,
    /// Bytes handed to the decoder since the last batch.
    pending: Vec<u8>,
    /// The (1-based) line at which `pending` starts.
    line: usize,
    done: bool,
}

impl TextFileReader {
    fn io_error(&self, e: std::io::Error) -> Error {
        Error::io(format!("reading '{}'", self.path.display()), e)
    }

    /// Skips a header line.
    fn skip_line(&mut self) -> Result<()> {
        let mut header = Vec::new();
        self.reader
            .read_until(b'\n', &mut header)
            .map_err(|e| self.io_error(e))?;
        self.line += 1;
        Ok(())
    }

    /// The next batch of the file, `None` at its end.
    fn next_batch(&mut self) -> Result<Option<RecordBatch>> {
        if self.done {
            return Ok(None);
        }
        loop {
            let buf = match self.reader.fill_buf() {
                Ok(buf) => buf,
                Err(e) => return Err(self.io_error(e)),
            };
            if buf.is_empty() {
                self.done = true;
                if let Err(e) = self.decoder.decode(&[]) {
                    return Err(self.diagnose(e, &[], true));
                }
                return self.flush(true);
            }
            let taken = match self.decoder.decode(buf) {
                Ok(n) => n,
                Err(e) => {
                    let tail = buf.to_vec();
                    return Err(self.diagnose(e, &tail, false));
                }
            };
            self.pending.extend_from_slice(&buf[..taken]);
            let full = taken < buf.len();
            self.reader.consume(taken);
            if full && let Some(batch) = self.flush(false)? {
                return Ok(Some(batch));
            }
        }
    }

    fn flush(&mut self, at_end: bool) -> Result<Option<RecordBatch>> {
        match self.decoder.flush() {
            Ok(batch) => {
                self.line += count_newlines(&self.pending);
                self.pending.clear();
                Ok(batch)
            }
            Err(e) => Err(self.diagnose(e, &[], at_end)),
        }
    }

    /// Finds the record that `error` is about by decoding the current batch's
    /// bytes again, one record at a time, and names its line.
    fn diagnose(&self, error: ArrowError, tail: &[u8], at_end: bool) -> Error {
        let mut bytes = self.pending.clone();
        bytes.extend_from_slice(tail);
        if !at_end {
            // Do not mistake a record cut off by the read buffer for a bad one.
            let keep = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
            bytes.truncate(keep);
        }
        if let Some((line, reason)) = self.find_bad_record(&bytes) {
            return self.bad_input(&format!("line {line}"), &reason);
        }
        self.bad_input(
            &format!("a record at or after line {}", self.line),
            &error.to_string(),
        )
    }

    /// The line and error of the first record of `bytes` that fails to decode.
    fn find_bad_record(&self, bytes: &[u8]) -> Option<(usize, String)> {
        let mut decoder = (self.factory)(1).ok()?;
        let mut offset = 0;
        let line_of = |start: usize| {
            let first = bytes[start..]
                .iter()
                .position(|b| !b.is_ascii_whitespace())
                .map_or(bytes.len(), |p| start + p);
            self.line + count_newlines(&bytes[..first])
        };
        loop {
            let start = offset;
            let result = decoder.decode(&bytes[offset..]).and_then(|n| {
                offset += n;
                if offset == bytes.len() {
                    decoder.decode(&[])?;
                }
                decoder.flush()
            });
            match result {
                Err(e) => return Some((line_of(start), e.to_string())),
                Ok(None) => return None,
                Ok(Some(_)) if offset >= bytes.len() => return None,
                Ok(Some(_)) => {}
            }
        }
    }

    fn bad_input(&self, location: &str, reason: &str) -> Error {
        // Arrow names the type it could not parse a value as; users know SQL's names.
        let reason = sql_type_names_in(&strip_record_numbers(reason));
        Error::BadInput(format!(
            "file '{}', {location}: {reason}",
            self.path.display()
        ))
    }
}

/// Drops arrow's own ` at line N` / ` for line N`: those count records from
/// where its decoder started, which would contradict the file line we report.
fn strip_record_numbers(reason: &str) -> String {
    let mut out = reason.to_string();
    for marker in [" at line ", " for line "] {
        while let Some(start) = out.find(marker) {
            let digits = out[start + marker.len()..]
                .bytes()
                .take_while(u8::is_ascii_digit)
                .count();
            if digits == 0 {
                break;
            }
            out.replace_range(start..start + marker.len() + digits, "");
        }
    }
    out
}

fn count_newlines(bytes: &[u8]) -> usize {
    bytes.iter().filter(|&&b| b == b'\n').count()
}
