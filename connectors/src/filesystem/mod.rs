//! The `filesystem` connector: reads and writes CSV, JSON-lines, Parquet and
//! `debezium-json` (changelog) files in a local directory, with Flink's
//! option names.
//!
//! ```sql
//! CREATE TABLE bids (auction BIGINT, price BIGINT, ts TIMESTAMP(3)) WITH (
//!   'connector' = 'filesystem', 'path' = '/data/bids', 'format' = 'csv');
//! ```
//!
//! * Source ([`source`]): `path` is a file or a directory, whose regular files
//!   are read in name order (names starting with `.` or `_` are skipped). File
//!   `i` goes to subtask `i mod parallelism`, so a single file keeps its row
//!   order. The source is bounded. A bad record fails the job, naming the
//!   file and line. A `debezium-json` table is an updating stream
//!   ([`Connector::produces_updates`]).
//! * Sink ([`sink`]): every subtask writes part files
//!   `part-<subtask>-<run>-<n>.<ext>` into the directory `path`, first under a
//!   hidden in-progress name, renamed when a checkpoint commits or the input
//!   ends, so readers never see partial files.

pub(crate) mod format;
pub mod sink;
pub mod source;

use std::path::PathBuf;

use weir_engine::{
    Connector, ConnectorOptions, Error, Result, Sink, Source, TableDescriptor, TaskInfo,
};

pub use self::format::{CsvOptions, Format, JsonOptions};
use crate::util::{parse_memory_size, positive_usize};

const NAME: &str = "filesystem";
const OPTIONS: &[&str] = &[
    "path",
    "format",
    "scan.batch-size",
    "sink.rolling-policy.file-size",
    "sink.parallelism",
    "scan.parallelism",
    "csv.field-delimiter",
    "csv.quote-character",
    "csv.escape-character",
    "csv.allow-comments",
    "csv.null-literal",
    "csv.ignore-first-line",
    "json.timestamp-format.standard",
    "debezium-json.timestamp-format.standard",
    "debezium-json.schema-include",
];
const DEFAULT_BATCH_SIZE: usize = 8192;
/// Flink's option to write (and expect) Debezium's `{"schema", "payload"}` wrapper.
pub(crate) const SCHEMA_INCLUDE: &str = "debezium-json.schema-include";

/// The `filesystem` connector.
#[derive(Debug, Clone, Copy, Default)]
pub struct FilesystemConnector;

/// A table's options, parsed and checked.
#[derive(Debug, Clone)]
pub struct FsOptions {
    /// The file or directory.
    pub path: PathBuf,
    /// The file format, with its options.
    pub format: Format,
    /// Rows per batch read.
    pub batch_size: usize,
    /// Roll to a new part file after this many bytes.
    pub rolling_file_size: Option<u64>,
}

impl FsOptions {
    /// Parses and checks a table's options.
    pub fn parse(options: &ConnectorOptions) -> Result<Self> {
        options.check_keys(NAME, OPTIONS, |_| false)?;
        let path = options.require("path")?.trim();
        if path.is_empty() {
            return Err(Error::invalid_option(
                "path",
                "option 'path' must not be empty",
            ));
        }
        let format = Format::parse(options)?;
        for key in options.keys().filter(|k| {
            k.starts_with("csv.") || k.starts_with("json.") || k.starts_with("debezium-json.")
        }) {
            let prefix = key.split('.').next().unwrap_or_default();
            if prefix != format.name() {
                return Err(Error::invalid_option(
                    key,
                    format!(
                        "option '{key}' does not apply to format '{}'",
                        format.name()
                    ),
                ));
            }
        }
        // Both envelope shapes are read whatever it says; the sink refuses `true`.
        options.parse_bool(SCHEMA_INCLUDE)?;
        Ok(FsOptions {
            path: PathBuf::from(path),
            format,
            batch_size: positive_usize(options, "scan.batch-size", DEFAULT_BATCH_SIZE)?,
            rolling_file_size: options
                .get("sink.rolling-policy.file-size")
                .map(|v| parse_memory_size("sink.rolling-policy.file-size", v))
                .transpose()?,
        })
    }
}

/// Weir writes Debezium envelopes without Debezium's schema wrapper.
pub(crate) fn refuse_schema_include(options: &ConnectorOptions) -> Result<()> {
    if options.parse_bool(SCHEMA_INCLUDE)? == Some(true) {
        return Err(Error::invalid_option(
            SCHEMA_INCLUDE,
            format!(
                "option '{SCHEMA_INCLUDE}' = 'true' applies only when reading; \
                 the sink writes envelopes without Debezium's schema"
            ),
        ));
    }
    Ok(())
}

/// Checks that the format can hold every column.
fn check_columns(table: &TableDescriptor, format: &Format) -> Result<()> {
    for field in table.schema.fields() {
        if !format.supports(field.data_type()) {
            return Err(Error::Config(format!(
                "table '{}': column '{}' of type {} cannot be stored in format '{}'",
                table.name,
                field.name(),
                weir_engine::sql_type_name(field.data_type()),
                format.name()
            )));
        }
    }
    Ok(())
}

impl Connector for FilesystemConnector {
    fn name(&self) -> &str {
        NAME
    }

    fn validate_source(&self, table: &TableDescriptor) -> Result<()> {
        let options = FsOptions::parse(&table.options)?;
        check_columns(table, &options.format)
    }

    fn validate_sink(&self, table: &TableDescriptor) -> Result<()> {
        let options = FsOptions::parse(&table.options)?;
        if options.format.ignores_first_line() {
            return Err(Error::invalid_option(
                "csv.ignore-first-line",
                "option 'csv.ignore-first-line' only applies when reading; the sink writes no header",
            ));
        }
        refuse_schema_include(&table.options)?;
        check_columns(table, &options.format)
    }

    fn is_bounded(&self, _table: &TableDescriptor) -> bool {
        true
    }

    fn accepts_updates(&self, table: &TableDescriptor) -> bool {
        Format::parse(&table.options).is_ok_and(|f| f.is_changelog())
    }

    fn produces_updates(&self, table: &TableDescriptor) -> bool {
        Format::parse(&table.options).is_ok_and(|f| f.is_changelog())
    }

    fn output_location(&self, table: &TableDescriptor) -> Option<String> {
        table.options.get("path").map(|p| p.trim().to_string())
    }

    fn create_source(
        &self,
        table: &TableDescriptor,
        projection: Option<&[usize]>,
        task: &TaskInfo,
    ) -> Result<Box<dyn Source>> {
        let options = FsOptions::parse(&table.options)?;
        check_columns(table, &options.format)?;
        Ok(Box::new(source::FilesystemSource::new(
            options, table, projection, task,
        )?))
    }

    fn create_sink(&self, table: &TableDescriptor, task: &TaskInfo) -> Result<Box<dyn Sink>> {
        self.validate_sink(table)?;
        let options = FsOptions::parse(&table.options)?;
        Ok(Box::new(sink::FilesystemSink::new(options, table, task)?))
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod debezium_tests;
