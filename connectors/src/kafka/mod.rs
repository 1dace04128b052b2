//! The `kafka` connector: reads and writes Kafka topics with Flink's option
//! names, through librdkafka (`rdkafka`).
//!
//! ```sql
//! CREATE TABLE bids (id BIGINT, price BIGINT, ts TIMESTAMP(3) METADATA FROM 'timestamp',
//!                    WATERMARK FOR ts AS ts - INTERVAL '5' SECOND)
//! WITH ('connector' = 'kafka', 'topic' = 'bids', 'format' = 'json',
//!       'properties.bootstrap.servers' = 'localhost:9092',
//!       'scan.startup.mode' = 'earliest-offset');
//! ```
//!
//! * Source ([`source`]): Weir assigns the partitions itself (partition `i`
//!   of the sorted topic/partition list goes to subtask `i mod parallelism`);
//!   no consumer-group rebalancing is involved. The next offset of every
//!   partition is the source's checkpointed position, so a restore rewinds
//!   exactly. Records are decoded in batches straight into Arrow ([`decode`]);
//!   a record that does not decode follows `'scan.bad-record-policy'`.
//!   With `'format' = 'debezium-json'` the records are changes and the table
//!   an updating stream; a null value (Debezium's tombstone after a delete)
//!   is skipped, and a bad change record is a bad record.
//! * Sink ([`sink`]): `'sink.delivery-guarantee'` = `at-least-once` flushes
//!   at every checkpoint; `exactly-once` keeps a checkpoint's rows in the
//!   checkpoint and writes them in one Kafka transaction once the checkpoint
//!   has completed, with commit markers that make a re-commit after a crash
//!   idempotent ([`sink`] explains the protocol). With `'format' =
//!   'debezium-json'` it takes updating input, one envelope per change.

pub mod avro;
pub mod decode;
pub mod encode;
mod producer;
pub mod registry;
pub mod sink;
pub mod source;
pub mod upsert;

use std::time::Duration;

use arrow::datatypes::{DataType, Field};
use rdkafka::ClientConfig;
use weir_engine::{
    Connector, ConnectorOptions, Error, Result, Sink, Source, TableDescriptor, TaskInfo,
};

use crate::filesystem::{CsvOptions, Format, JsonOptions};
use crate::util::positive_usize;

const NAME: &str = "kafka";

/// The metadata keys the Kafka connector knows.
pub const METADATA_KEYS: &[&str] = &[
    "timestamp",
    "partition",
    "offset",
    "key",
    "headers",
    "topic",
];

const SOURCE_OPTIONS: &[&str] = &[
    "topic",
    "topic-pattern",
    "format",
    "scan.startup.mode",
    "scan.startup.timestamp-millis",
    "scan.bounded.mode",
    "scan.bounded.timestamp-millis",
    "scan.bad-record-policy",
    "scan.dead-letter-topic",
    "scan.batch-size",
    "scan.max-record-bytes",
    "scan.parallelism",
    "scan.watermark.idle-timeout",
    "format.ignore-parse-errors",
    "json.ignore-parse-errors",
    "csv.ignore-parse-errors",
    "json.timestamp-format.standard",
    "debezium-json.ignore-parse-errors",
    "debezium-json.timestamp-format.standard",
    "debezium-json.schema-include",
    "csv.field-delimiter",
    "csv.quote-character",
    "csv.escape-character",
    "csv.allow-comments",
    "avro.schema",
    "avro-confluent.url",
    "avro-confluent.schema-registry.url",
    "avro-confluent.basic-auth.user-info",
    "avro-confluent.schema",
    "avro-confluent.subject",
    "csv.null-literal",
];

const SINK_OPTIONS: &[&str] = &[
    "topic",
    "format",
    "key.fields",
    "key.format",
    "sink.delivery-guarantee",
    "sink.transactional-id-prefix",
    "sink.partitioner",
    "sink.parallelism",
    "json.timestamp-format.standard",
    "debezium-json.timestamp-format.standard",
    "debezium-json.schema-include",
    "csv.field-delimiter",
    "csv.quote-character",
    "csv.escape-character",
    "avro.schema",
    "avro-confluent.url",
    "avro-confluent.schema-registry.url",
    "avro-confluent.basic-auth.user-info",
    "avro-confluent.schema",
    "avro-confluent.subject",
    "key.avro.schema",
    "csv.null-literal",
];

/// The record format of values (and keys).
#[derive(Debug, Clone)]
pub enum KafkaFormat {
    /// One JSON object per record.
    Json(JsonOptions),
    /// One CSV line per record.
    Csv(CsvOptions),
    /// The bytes as they are, into the table's single physical column.
    Raw,
    /// Avro datums, plain or in Confluent's wire format ([`avro`]).
    Avro(avro::AvroFormat),
    /// A changelog: one Debezium JSON envelope per record
    /// ([`crate::debezium`]); the table is an updating stream.
    DebeziumJson(JsonOptions),
}

impl KafkaFormat {
    fn parse(options: &ConnectorOptions, key: &str) -> Result<Self> {
        let name = options.require(key)?.trim().to_ascii_lowercase();
        if name == "raw" {
            return Ok(KafkaFormat::Raw);
        }
        // `format` reads `avro.*` options, `key.format` reads `key.avro.*`.
        let prefix = key.strip_suffix("format").unwrap_or_default();
        if name == "avro" {
            let schema = options
                .get(&format!("{prefix}avro.schema"))
                .map(str::to_string);
            return Ok(KafkaFormat::Avro(avro::AvroFormat::plain(schema)));
        }
        if name == "avro-confluent" {
            let url_key = format!("{prefix}avro-confluent.url");
            let legacy_key = format!("{prefix}avro-confluent.schema-registry.url");
            let url = options
                .get(&url_key)
                .or_else(|| options.get(&legacy_key))
                .ok_or_else(|| {
                    Error::Config(format!(
                        "format 'avro-confluent' needs the schema registry's URL in option '{url_key}'"
                    ))
                })?;
            let user_info = options
                .get(&format!("{prefix}avro-confluent.basic-auth.user-info"))
                .map(str::to_string);
            let registry = registry::SchemaRegistry::new(url, user_info)?;
            let schema = options
                .get(&format!("{prefix}avro-confluent.schema"))
                .map(str::to_string);
            let subject = options
                .get(&format!("{prefix}avro-confluent.subject"))
                .map(str::to_string);
            return Ok(KafkaFormat::Avro(avro::AvroFormat::confluent(
                registry, schema, subject,
            )));
        }
        // The filesystem connector's parser knows the csv/json options.
        let mut renamed: Vec<(String, String)> = options
            .iter()
            .filter(|(k, _)| *k != "format")
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        renamed.push(("format".into(), name.clone()));
        match Format::parse(&ConnectorOptions::new(renamed)) {
            Ok(Format::Json(json)) => Ok(KafkaFormat::Json(json)),
            Ok(Format::Csv(csv)) => Ok(KafkaFormat::Csv(csv)),
            Ok(Format::DebeziumJson(json)) if key == "format" => {
                Ok(KafkaFormat::DebeziumJson(json))
            }
            Ok(Format::Parquet | Format::DebeziumJson(_)) | Err(_) => {
                let hint = weir_engine::suggest::closest(
                    &name,
                    [
                        "json",
                        "csv",
                        "raw",
                        "avro",
                        "avro-confluent",
                        "debezium-json",
                    ],
                )
                .map(|s| format!(" (did you mean '{s}'?)"))
                .unwrap_or_default();
                Err(Error::Config(format!(
                    "option '{key}' = '{name}' is not a Kafka {}format{hint}; \
                     use 'json', 'csv', 'raw', 'avro', 'avro-confluent'{}",
                    if key == "format" { "" } else { "key " },
                    if key == "format" {
                        " or 'debezium-json'"
                    } else {
                        ""
                    },
                )))
            }
        }
    }

    /// The format's name.
    pub fn name(&self) -> &'static str {
        match self {
            KafkaFormat::Json(_) => "json",
            KafkaFormat::Csv(_) => "csv",
            KafkaFormat::Raw => "raw",
            KafkaFormat::Avro(avro) => avro.name(),
            KafkaFormat::DebeziumJson(_) => "debezium-json",
        }
    }

    /// True for a changelog format, whose records are changes.
    pub fn is_changelog(&self) -> bool {
        matches!(self, KafkaFormat::DebeziumJson(_))
    }
}

/// `'scan.startup.mode'`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartupMode {
    /// From the first offset of every partition.
    Earliest,
    /// From the end: only records written after the job started.
    Latest,
    /// From the committed offsets of `properties.group.id` (earliest where none).
    GroupOffsets,
    /// From the first record at or after this time (epoch milliseconds).
    Timestamp(i64),
}

/// `'scan.bounded.mode'`: where a bounded read ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BoundedMode {
    /// Unbounded (Flink's default).
    Unbounded,
    /// At the end offsets when the job started.
    LatestOffset,
    /// Before the first record after this time (epoch milliseconds).
    Timestamp(i64),
}

/// What the source does with a record it cannot decode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BadRecordPolicy {
    /// Fail the job, naming topic, partition, offset and the reason.
    Fail,
    /// Skip the record and count it (`weir_source_bad_records_total`).
    Drop,
    /// Write the raw record to this topic, and count it.
    DeadLetter(String),
}

/// `'sink.delivery-guarantee'`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryGuarantee {
    /// Fire and forget.
    None,
    /// Flush at every checkpoint; a restore may write rows again.
    AtLeastOnce,
    /// Kafka transactions committed when a checkpoint completes.
    ExactlyOnce,
}

/// The topics a source reads.
#[derive(Debug, Clone)]
pub enum Topics {
    /// These names.
    Names(Vec<String>),
    /// Every topic whose whole name matches.
    Pattern(regex::Regex),
}

/// A source table's options, parsed and checked.
#[derive(Debug, Clone)]
pub struct SourceOptions {
    /// What to read.
    pub topics: Topics,
    /// librdkafka settings (`properties.*`).
    pub properties: Vec<(String, String)>,
    /// The value format.
    pub format: KafkaFormat,
    /// Where reading starts.
    pub startup: StartupMode,
    /// Where reading ends.
    pub bounded: BoundedMode,
    /// Bad records.
    pub bad_records: BadRecordPolicy,
    /// Records per batch at most.
    pub batch_size: usize,
    /// Larger records are bad records.
    pub max_record_bytes: usize,
}

/// A sink table's options, parsed and checked.
#[derive(Debug, Clone)]
pub struct SinkOptions {
    /// The topic written.
    pub topic: String,
    /// librdkafka settings (`properties.*`).
    pub properties: Vec<(String, String)>,
    /// The value format.
    pub format: KafkaFormat,
    /// Columns of the key, and its format.
    pub key: Option<(Vec<String>, KafkaFormat)>,
    /// Delivery guarantee.
    pub guarantee: DeliveryGuarantee,
    /// Prefix of the transactional ids (`<prefix>-<subtask>`).
    pub transactional_id_prefix: Option<String>,
    /// `'sink.partitioner'`: `default` (by key hash, else spread), `fixed`
    /// (subtask `i` writes partition `i mod partitions`), `round-robin`.
    pub partitioner: Partitioner,
}

/// `'sink.partitioner'`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Partitioner {
    /// Kafka's: the key's murmur2 hash, or spread when there is no key.
    Default,
    /// Each sink subtask writes one partition.
    Fixed,
    /// Records go to partitions in turn.
    RoundRobin,
}

fn properties(options: &ConnectorOptions) -> Result<Vec<(String, String)>> {
    let properties: Vec<(String, String)> = options
        .iter()
        .filter_map(|(k, v)| {
            k.strip_prefix("properties.")
                .map(|p| (p.to_string(), v.to_string()))
        })
        .collect();
    if !properties.iter().any(|(k, _)| k == "bootstrap.servers") {
        return Err(Error::Config(
            "missing required option 'properties.bootstrap.servers'".into(),
        ));
    }
    Ok(properties)
}

/// An option naming one of `known` (any case): which one, or `None` when
/// unset. Another value is an error listing the choices, with a suggestion.
fn choice(
    options: &ConnectorOptions,
    key: &str,
    known: &[&'static str],
) -> Result<Option<&'static str>> {
    let Some(value) = options.get(key) else {
        return Ok(None);
    };
    let value = value.trim().to_ascii_lowercase();
    if let Some(found) = known.iter().find(|k| **k == value) {
        return Ok(Some(found));
    }
    let hint = weir_engine::suggest::closest(&value, known.iter().copied())
        .map(|s| format!(" (did you mean '{s}'?)"))
        .unwrap_or_default();
    Err(Error::invalid_option(
        key,
        format!(
            "option '{key}' = '{value}' is invalid{hint}; use {}",
            known.join(", ")
        ),
    ))
}

/// `'scan.bounded.mode'` (and its timestamp).
fn bounded_mode(options: &ConnectorOptions) -> Result<BoundedMode> {
    Ok(
        match choice(
            options,
            "scan.bounded.mode",
            &["unbounded", "latest-offset", "timestamp"],
        )? {
            None | Some("unbounded") => BoundedMode::Unbounded,
            Some("latest-offset") => BoundedMode::LatestOffset,
            Some(_) => BoundedMode::Timestamp(millis_option(
                options,
                "scan.bounded.timestamp-millis",
                "timestamp",
            )?),
        },
    )
}

/// `'scan.bad-record-policy'` (and its dead-letter topic); `ignore` is
/// what a format's `ignore-parse-errors` asks for when no policy is set.
fn bad_record_policy(options: &ConnectorOptions, ignore: bool) -> Result<BadRecordPolicy> {
    let policy = match choice(
        options,
        "scan.bad-record-policy",
        &["fail", "drop", "dead-letter"],
    )? {
        None if ignore => BadRecordPolicy::Drop,
        None | Some("fail") => BadRecordPolicy::Fail,
        Some("drop") => BadRecordPolicy::Drop,
        Some(_) => {
            BadRecordPolicy::DeadLetter(options.require("scan.dead-letter-topic")?.to_string())
        }
    };
    if options.get("scan.dead-letter-topic").is_some()
        && !matches!(policy, BadRecordPolicy::DeadLetter(_))
    {
        return Err(Error::invalid_option(
            "scan.dead-letter-topic",
            "option 'scan.dead-letter-topic' needs 'scan.bad-record-policy' = 'dead-letter'",
        ));
    }
    Ok(policy)
}

/// `'sink.delivery-guarantee'`.
fn delivery_guarantee(options: &ConnectorOptions) -> Result<DeliveryGuarantee> {
    Ok(
        match choice(
            options,
            "sink.delivery-guarantee",
            &["at-least-once", "exactly-once", "none"],
        )? {
            None | Some("at-least-once") => DeliveryGuarantee::AtLeastOnce,
            Some("exactly-once") => DeliveryGuarantee::ExactlyOnce,
            Some(_) => DeliveryGuarantee::None,
        },
    )
}

/// A sink's `properties.*`: no `transactional.id` of its own.
fn sink_properties(options: &ConnectorOptions) -> Result<Vec<(String, String)>> {
    let properties = properties(options)?;
    if properties.iter().any(|(k, _)| k == "transactional.id") {
        return Err(Error::Config(
            "set 'sink.transactional-id-prefix' rather than 'properties.transactional.id': \
             every sink subtask needs its own id"
                .into(),
        ));
    }
    Ok(properties)
}

fn millis_option(options: &ConnectorOptions, key: &str, mode: &str) -> Result<i64> {
    options.parse::<i64>(key)?.ok_or_else(|| {
        Error::invalid_option(
            key,
            format!("option '{key}' is required when the mode is '{mode}'"),
        )
    })
}

fn check_format_options(options: &ConnectorOptions, format: &KafkaFormat) -> Result<()> {
    for key in options.keys() {
        let prefix = key.split('.').next().unwrap_or_default();
        if matches!(
            prefix,
            "csv" | "json" | "avro" | "avro-confluent" | "debezium-json"
        ) && prefix != format.name()
        {
            return Err(Error::invalid_option(
                key,
                format!(
                    "option '{key}' does not apply to format '{}'",
                    format.name()
                ),
            ));
        }
    }
    Ok(())
}

impl SourceOptions {
    /// Parses and checks a source table's options.
    pub fn parse(options: &ConnectorOptions) -> Result<Self> {
        options.check_keys(NAME, SOURCE_OPTIONS, |k| k.starts_with("properties."))?;
        let topics = match (options.get("topic"), options.get("topic-pattern")) {
            (Some(_), Some(_)) => {
                return Err(Error::Config(
                    "options 'topic' and 'topic-pattern' exclude each other".into(),
                ));
            }
            (Some(list), None) => {
                let names: Vec<String> = list
                    .split(';')
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .map(str::to_string)
                    .collect();
                if names.is_empty() {
                    return Err(Error::invalid_option(
                        "topic",
                        "option 'topic' names no topic",
                    ));
                }
                Topics::Names(names)
            }
            (None, Some(pattern)) => {
                Topics::Pattern(regex::Regex::new(&format!("^(?:{pattern})$")).map_err(|e| {
                    Error::invalid_option(
                        "topic-pattern",
                        format!("option 'topic-pattern' = '{pattern}' is invalid: {e}"),
                    )
                })?)
            }
            (None, None) => {
                return Err(Error::Config(
                    "missing required option 'topic' (or 'topic-pattern')".into(),
                ));
            }
        };
        let format = KafkaFormat::parse(options, "format")?;
        check_format_options(options, &format)?;
        let startup = match choice(
            options,
            "scan.startup.mode",
            &[
                "earliest-offset",
                "latest-offset",
                "group-offsets",
                "timestamp",
            ],
        )? {
            None | Some("group-offsets") => StartupMode::GroupOffsets,
            Some("earliest-offset") => StartupMode::Earliest,
            Some("latest-offset") => StartupMode::Latest,
            Some(_) => StartupMode::Timestamp(millis_option(
                options,
                "scan.startup.timestamp-millis",
                "timestamp",
            )?),
        };
        let bounded = bounded_mode(options)?;
        let properties = properties(options)?;
        if startup == StartupMode::GroupOffsets && !properties.iter().any(|(k, _)| k == "group.id")
        {
            return Err(Error::Config(
                "'scan.startup.mode' = 'group-offsets' (the default) needs 'properties.group.id'; \
                 or set 'scan.startup.mode' = 'earliest-offset'"
                    .into(),
            ));
        }
        // Both envelope shapes are read whatever `schema-include` says.
        options.parse_bool(crate::filesystem::SCHEMA_INCLUDE)?;
        let ignore = [
            "format.ignore-parse-errors",
            "json.ignore-parse-errors",
            "csv.ignore-parse-errors",
            "debezium-json.ignore-parse-errors",
        ]
        .iter()
        .map(|k| options.parse_bool(k))
        .collect::<Result<Vec<_>>>()?
        .into_iter()
        .any(|v| v == Some(true));
        let bad_records = bad_record_policy(options, ignore)?;
        Ok(SourceOptions {
            topics,
            properties,
            format,
            startup,
            bounded,
            bad_records,
            batch_size: positive_usize(options, "scan.batch-size", 4096)?,
            max_record_bytes: positive_usize(options, "scan.max-record-bytes", 8 << 20)?,
        })
    }
}

impl SinkOptions {
    /// Parses and checks a sink table's options.
    pub fn parse(options: &ConnectorOptions) -> Result<Self> {
        options.check_keys(NAME, SINK_OPTIONS, |k| k.starts_with("properties."))?;
        let topic = options.require("topic")?.trim().to_string();
        if topic.is_empty() || topic.contains(';') {
            return Err(Error::Config(
                "a Kafka sink writes one topic: option 'topic' must name exactly one".into(),
            ));
        }
        let mut format = KafkaFormat::parse(options, "format")?;
        check_format_options(options, &format)?;
        crate::filesystem::refuse_schema_include(options)?;
        if let KafkaFormat::Avro(avro) = &mut format
            && avro.registry.is_some()
            && avro.subject.is_none()
        {
            // Confluent's TopicNameStrategy.
            avro.subject = Some(format!("{topic}-value"));
        }
        let key = match options.get("key.fields") {
            None => None,
            Some(fields) => {
                let fields: Vec<String> = fields
                    .split(';')
                    .map(str::trim)
                    .filter(|f| !f.is_empty())
                    .map(str::to_string)
                    .collect();
                let key_format = if options.get("key.format").is_some() {
                    match KafkaFormat::parse(options, "key.format")? {
                        KafkaFormat::Avro(a) if a.registry.is_some() => {
                            return Err(Error::Config(
                                "'key.format' = 'avro-confluent' is not supported yet; \
                                 use 'avro', 'json', 'csv' or 'raw' for keys"
                                    .into(),
                            ));
                        }
                        other => other,
                    }
                } else {
                    KafkaFormat::Json(JsonOptions {
                        iso_timestamps: false,
                    })
                };
                Some((fields, key_format))
            }
        };
        let guarantee = delivery_guarantee(options)?;
        let partitioner = match choice(
            options,
            "sink.partitioner",
            &["default", "fixed", "round-robin"],
        )? {
            None | Some("default") => Partitioner::Default,
            Some("fixed") => Partitioner::Fixed,
            Some(_) => Partitioner::RoundRobin,
        };
        let properties = sink_properties(options)?;
        Ok(SinkOptions {
            topic,
            properties,
            format,
            key,
            guarantee,
            transactional_id_prefix: options
                .get("sink.transactional-id-prefix")
                .map(str::to_string),
            partitioner,
        })
    }
}

/// A librdkafka configuration with `properties`, Weir's defaults first.
pub fn client_config(properties: &[(String, String)]) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("log_level", "4");
    for (k, v) in properties {
        config.set(k, v);
    }
    config
}

/// The metadata key of a column, if it is a `METADATA` column.
pub fn metadata_key(field: &Field) -> Option<&str> {
    field
        .metadata()
        .get(weir_engine::connector::METADATA_FIELD_KEY)
        .map(String::as_str)
}

/// Checks the types of the table's metadata columns.
fn check_metadata_columns(table: &TableDescriptor, writing: bool) -> Result<()> {
    for field in table.schema.fields() {
        let Some(key) = metadata_key(field) else {
            continue;
        };
        let ok = match key {
            "timestamp" => matches!(field.data_type(), DataType::Timestamp(..) | DataType::Int64),
            "partition" => matches!(field.data_type(), DataType::Int32 | DataType::Int64),
            "offset" => field.data_type() == &DataType::Int64,
            "key" => matches!(
                field.data_type(),
                DataType::Binary | DataType::Utf8 | DataType::LargeBinary | DataType::LargeUtf8
            ),
            "topic" => matches!(field.data_type(), DataType::Utf8 | DataType::LargeUtf8),
            "headers" => matches!(field.data_type(), DataType::Utf8 | DataType::LargeUtf8),
            _ => false,
        };
        if !ok {
            return Err(Error::Config(format!(
                "table '{}': METADATA column '{}' ('{key}') cannot be of type {}",
                table.name,
                field.name(),
                weir_engine::sql_type_name(field.data_type())
            )));
        }
        if writing && !matches!(key, "timestamp" | "key") {
            return Err(Error::Config(format!(
                "table '{}': METADATA column '{}' ('{key}') is read-only; a Kafka sink writes only 'timestamp' and 'key'",
                table.name,
                field.name()
            )));
        }
    }
    Ok(())
}

/// The `kafka` connector.
#[derive(Debug, Clone, Copy, Default)]
pub struct KafkaConnector;

/// How long metadata and offset lookups may take before a clear error.
pub(crate) const LOOKUP_TIMEOUT: Duration = Duration::from_secs(20);

impl Connector for KafkaConnector {
    fn name(&self) -> &str {
        NAME
    }

    fn metadata_keys(&self) -> &'static [&'static str] {
        METADATA_KEYS
    }

    fn validate_source(&self, table: &TableDescriptor) -> Result<()> {
        let options = SourceOptions::parse(&table.options)?;
        check_metadata_columns(table, false)?;
        decode::check_columns(table, &options.format)
    }

    fn validate_sink(&self, table: &TableDescriptor) -> Result<()> {
        let options = SinkOptions::parse(&table.options)?;
        check_metadata_columns(table, true)?;
        sink::check_sink_columns(table, &options)
    }

    fn accepts_updates(&self, table: &TableDescriptor) -> bool {
        KafkaFormat::parse(&table.options, "format").is_ok_and(|f| f.is_changelog())
    }

    fn produces_updates(&self, table: &TableDescriptor) -> bool {
        KafkaFormat::parse(&table.options, "format").is_ok_and(|f| f.is_changelog())
    }

    fn is_bounded(&self, table: &TableDescriptor) -> bool {
        SourceOptions::parse(&table.options).is_ok_and(|o| o.bounded != BoundedMode::Unbounded)
    }

    fn output_location(&self, table: &TableDescriptor) -> Option<String> {
        let topic = table.options.get("topic")?;
        Some(match table.options.get("properties.bootstrap.servers") {
            Some(servers) => format!("topic '{topic}' at {servers}"),
            None => format!("topic '{topic}'"),
        })
    }

    fn create_source(
        &self,
        table: &TableDescriptor,
        projection: Option<&[usize]>,
        task: &TaskInfo,
    ) -> Result<Box<dyn Source>> {
        self.validate_source(table)?;
        let options = SourceOptions::parse(&table.options)?;
        Ok(Box::new(source::KafkaSource::new(
            options, table, projection, task,
        )?))
    }

    fn create_sink(&self, table: &TableDescriptor, task: &TaskInfo) -> Result<Box<dyn Sink>> {
        self.validate_sink(table)?;
        let options = SinkOptions::parse(&table.options)?;
        Ok(Box::new(sink::KafkaSink::new(options, table, task)?))
    }
}

/// An external failure of the Kafka client.
pub(crate) fn kafka_error(context: impl std::fmt::Display, e: impl std::fmt::Display) -> Error {
    Error::Connector {
        connector: NAME.into(),
        message: format!("{context}: {e}"),
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod debezium_tests;
