//! The `upsert-kafka` connector, as Flink's: a table keyed by its primary
//! key over a (compacted) topic, whose records are upserts.
//!
//! ```sql
//! CREATE TABLE totals (k STRING, n BIGINT, s BIGINT, PRIMARY KEY (k) NOT ENFORCED)
//! WITH ('connector' = 'upsert-kafka', 'topic' = 'totals',
//!       'properties.bootstrap.servers' = 'localhost:9092',
//!       'key.format' = 'json', 'value.format' = 'json');
//! ```
//!
//! * A record's key is the primary key's columns in `'key.format'` (named
//!   without `'key.fields-prefix'`); its value is the row in
//!   `'value.format'` (every column, or with `'value.fields-include'` =
//!   `EXCEPT_KEY` the others), or null — a tombstone — for a deletion.
//! * Sink ([`encode`]): `+I`/`+U` write the row, `-D` a tombstone; a `-U`
//!   followed in its batch by the `+U` of the same key is left out (the
//!   `+U` replaces the row), any other `-U` writes a tombstone. Append-only
//!   input is a stream of upserts. Records are partitioned by the key's
//!   hash, so a key's records stay in order; delivery guarantees and
//!   exactly-once transactions are the `kafka` sink's
//!   ([`super::sink`]).
//! * Source ([`decode`]): reads the whole topic from the earliest offset, as
//!   Flink does, with the `kafka` source's partition assignment, positions
//!   and bad-record policies ([`super::source`]). It emits an upsert stream
//!   (`+U` per value, `-D` with the key only per tombstone, see
//!   [`weir_engine::changelog`]), and the planner puts a
//!   `ChangelogNormalize` keyed by the primary key after it
//!   ([`Connector::upsert_key`]), which turns it into a retract changelog.
//!   A record without a key, or whose key or value does not decode, is a bad
//!   record.

pub mod decode;
pub mod encode;

use std::sync::Arc;

use arrow::datatypes::{Field, Schema, SchemaRef};
use weir_engine::{
    Connector, ConnectorOptions, Error, Result, Sink, Source, TableDescriptor, TaskInfo,
};

use super::sink::KafkaSink;
use super::source::KafkaSource;
use super::{
    BadRecordPolicy, BoundedMode, KafkaFormat, Partitioner, SinkOptions, SourceOptions,
    StartupMode, Topics, bad_record_policy, bounded_mode, delivery_guarantee, properties,
    sink_properties,
};
use crate::util::{positive_usize, projection_indices};

const NAME: &str = "upsert-kafka";

const OPTIONS: &[&str] = &[
    "topic",
    "key.format",
    "key.fields-prefix",
    "value.format",
    "value.fields-include",
    "sink.delivery-guarantee",
    "sink.transactional-id-prefix",
    "sink.parallelism",
    "sink.buffer-flush.max-rows",
    "sink.buffer-flush.interval",
    "scan.bounded.mode",
    "scan.bounded.timestamp-millis",
    "scan.bad-record-policy",
    "scan.dead-letter-topic",
    "scan.batch-size",
    "scan.max-record-bytes",
    "scan.parallelism",
];

/// The formats' own options: `key.json.*`, `value.avro-confluent.*`, …
fn is_format_option(key: &str) -> bool {
    let Some(rest) = key
        .strip_prefix("key.")
        .or_else(|| key.strip_prefix("value."))
    else {
        return false;
    };
    ["json.", "csv.", "avro.", "avro-confluent.", "raw."]
        .iter()
        .any(|f| rest.starts_with(f))
}

/// `'value.fields-include'`: which columns the value holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldsInclude {
    /// Every column, the key's too (Flink's default).
    All,
    /// The columns that are not in the key.
    ExceptKey,
}

/// An `upsert-kafka` table's options, parsed and checked against its columns.
#[derive(Debug, Clone)]
pub struct UpsertOptions {
    /// The topic read and written.
    pub topic: String,
    /// librdkafka settings (`properties.*`).
    pub properties: Vec<(String, String)>,
    /// The key's format.
    pub key_format: KafkaFormat,
    /// The value's format.
    pub value_format: KafkaFormat,
    /// `'key.fields-prefix'`: key columns are named with it in the table
    /// and without it in the key.
    pub key_prefix: String,
    /// `'value.fields-include'`.
    pub fields_include: FieldsInclude,
}

/// The format of one side (`key` or `value`): its `<side>.*` options seen
/// without the prefix, so that the `kafka` connector's parser reads them.
fn side_format(options: &ConnectorOptions, side: &str) -> Result<KafkaFormat> {
    let prefix = format!("{side}.");
    let stripped = ConnectorOptions::new(options.iter().filter_map(|(k, v)| {
        k.strip_prefix(&prefix)
            .map(|k| (k.to_string(), v.to_string()))
    }));
    let key = format!("{side}.format");
    let rename = |m: String| m.replace("'format'", &format!("'{key}'"));
    let format = KafkaFormat::parse(&stripped, "format").map_err(|e| match e {
        Error::InvalidOption { message, .. } => Error::invalid_option(&key, rename(message)),
        Error::Config(m) => Error::invalid_option(&key, rename(m)),
        other => other,
    })?;
    match &format {
        KafkaFormat::DebeziumJson(_) => Err(Error::invalid_option(
            &key,
            format!(
                "option '{key}' = 'debezium-json' is a changelog format; upsert-kafka's records \
                 are rows: use 'json', 'csv', 'raw' or 'avro' (or read the changelog with \
                 'connector' = 'kafka')"
            ),
        )),
        KafkaFormat::Avro(avro) if avro.registry.is_some() && side == "key" => {
            Err(Error::invalid_option(
                &key,
                "'key.format' = 'avro-confluent' is not supported yet; use 'json', 'csv', 'raw' \
                 or 'avro' for keys",
            ))
        }
        _ => Ok(format),
    }
}

impl UpsertOptions {
    /// Parses and checks `table`'s options and primary key.
    pub fn parse(table: &TableDescriptor) -> Result<Self> {
        let options = &table.options;
        options.check_keys(NAME, OPTIONS, |k| {
            k.starts_with("properties.") || is_format_option(k)
        })?;
        if table.primary_key.is_empty() {
            // The caller names the table.
            return Err(Error::Config(
                "connector 'upsert-kafka' needs a primary key, the key of its records: \
                 declare PRIMARY KEY (…) NOT ENFORCED"
                    .into(),
            ));
        }
        let topic = options.require("topic")?.trim().to_string();
        if topic.is_empty() || topic.contains(';') {
            return Err(Error::invalid_option(
                "topic",
                "option 'topic' must name exactly one topic",
            ));
        }
        let key_format = side_format(options, "key")?;
        let mut value_format = side_format(options, "value")?;
        if let KafkaFormat::Avro(avro) = &mut value_format
            && avro.registry.is_some()
            && avro.subject.is_none()
        {
            // Confluent's TopicNameStrategy.
            avro.subject = Some(format!("{topic}-value"));
        }
        let fields_include = match options
            .get("value.fields-include")
            .map(|v| v.trim().to_ascii_uppercase())
            .as_deref()
        {
            None | Some("ALL") => FieldsInclude::All,
            Some("EXCEPT_KEY") => FieldsInclude::ExceptKey,
            Some(other) => {
                return Err(Error::invalid_option(
                    "value.fields-include",
                    format!(
                        "option 'value.fields-include' = '{other}' is invalid; use ALL or EXCEPT_KEY"
                    ),
                ));
            }
        };
        let key_prefix = options
            .get("key.fields-prefix")
            .unwrap_or_default()
            .to_string();
        if !key_prefix.is_empty() {
            if fields_include != FieldsInclude::ExceptKey {
                return Err(Error::invalid_option(
                    "key.fields-prefix",
                    "option 'key.fields-prefix' needs 'value.fields-include' = 'EXCEPT_KEY'",
                ));
            }
            if let Some(c) = table
                .primary_key
                .iter()
                .find(|c| !c.starts_with(&key_prefix) || c.len() == key_prefix.len())
            {
                return Err(Error::invalid_option(
                    "key.fields-prefix",
                    format!(
                        "table '{}': primary key column '{c}' does not start with \
                         'key.fields-prefix' = '{key_prefix}'",
                        table.name
                    ),
                ));
            }
        }
        Ok(UpsertOptions {
            topic,
            properties: properties(options)?,
            key_format,
            value_format,
            key_prefix,
            fields_include,
        })
    }

    /// The key's fields as the key format names them (without the prefix).
    fn key_schema(&self, table: &TableDescriptor) -> Result<SchemaRef> {
        let fields = table
            .primary_key_indices()?
            .into_iter()
            .map(|i| {
                let field = table.schema.field(i);
                let name = field
                    .name()
                    .strip_prefix(&self.key_prefix)
                    .unwrap_or(field.name());
                Field::new(name, field.data_type().clone(), false)
            })
            .collect::<Vec<_>>();
        Ok(Arc::new(Schema::new(fields)))
    }

    /// The indices of the table's columns the value holds.
    fn value_columns(&self, table: &TableDescriptor) -> Result<Vec<usize>> {
        let key = table.primary_key_indices()?;
        Ok((0..table.schema.fields().len())
            .filter(|i| self.fields_include == FieldsInclude::All || !key.contains(i))
            .collect())
    }

    fn source_options(&self, table: &TableDescriptor) -> Result<SourceOptions> {
        let options = &table.options;
        Ok(SourceOptions {
            topics: Topics::Names(vec![self.topic.clone()]),
            properties: self.properties.clone(),
            format: self.value_format.clone(),
            // A compacted topic is read whole, as Flink's upsert-kafka does.
            startup: StartupMode::Earliest,
            bounded: bounded_mode(options)?,
            bad_records: bad_record_policy(options, false)?,
            batch_size: positive_usize(options, "scan.batch-size", 4096)?,
            max_record_bytes: positive_usize(options, "scan.max-record-bytes", 8 << 20)?,
        })
    }

    fn sink_options(&self, table: &TableDescriptor) -> Result<SinkOptions> {
        let options = &table.options;
        Ok(SinkOptions {
            topic: self.topic.clone(),
            properties: sink_properties(options)?,
            format: self.value_format.clone(),
            key: None,
            guarantee: delivery_guarantee(options)?,
            transactional_id_prefix: options
                .get("sink.transactional-id-prefix")
                .map(str::to_string),
            // By the key's hash: a key's records stay in one partition, in order.
            partitioner: Partitioner::Default,
        })
    }
}

/// The `upsert-kafka` connector.
#[derive(Debug, Clone, Copy, Default)]
pub struct UpsertKafkaConnector;

impl Connector for UpsertKafkaConnector {
    fn name(&self) -> &str {
        NAME
    }

    fn validate_source(&self, table: &TableDescriptor) -> Result<()> {
        let options = UpsertOptions::parse(table)?;
        let source = options.source_options(table)?;
        if let BadRecordPolicy::DeadLetter(topic) = &source.bad_records
            && topic == &options.topic
        {
            return Err(Error::invalid_option(
                "scan.dead-letter-topic",
                "the dead-letter topic must not be the table's topic",
            ));
        }
        let all: Vec<usize> = (0..table.schema.fields().len()).collect();
        decode::UpsertDecoder::new(&options, table, &all, source.max_record_bytes).map(|_| ())
    }

    fn validate_sink(&self, table: &TableDescriptor) -> Result<()> {
        let options = UpsertOptions::parse(table)?;
        options.sink_options(table)?;
        encode::UpsertEncoder::new(&options, table).map(|_| ())
    }

    fn accepts_updates(&self, _table: &TableDescriptor) -> bool {
        true
    }

    fn produces_updates(&self, _table: &TableDescriptor) -> bool {
        true
    }

    fn upsert_key(&self, table: &TableDescriptor) -> Option<Vec<String>> {
        (!table.primary_key.is_empty()).then(|| table.primary_key.clone())
    }

    fn is_bounded(&self, table: &TableDescriptor) -> bool {
        bounded_mode(&table.options).is_ok_and(|b| b != BoundedMode::Unbounded)
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
        let options = UpsertOptions::parse(table)?;
        let source = options.source_options(table)?;
        let projection = projection_indices(&table.schema, projection);
        let decoder =
            decode::UpsertDecoder::new(&options, table, &projection, source.max_record_bytes)?;
        Ok(Box::new(KafkaSource::with_decoder(
            source,
            table,
            Box::new(decoder),
            task,
        )?))
    }

    fn create_sink(&self, table: &TableDescriptor, task: &TaskInfo) -> Result<Box<dyn Sink>> {
        self.validate_sink(table)?;
        let options = UpsertOptions::parse(table)?;
        let encoder = encode::UpsertEncoder::new(&options, table)?;
        let sink = options.sink_options(table)?;
        Ok(Box::new(KafkaSink::with_encoder(
            sink,
            table,
            task,
            Box::new(encoder),
        )))
    }
}

#[cfg(test)]
mod tests;
