//! The Avro formats, through `arrow-avro`.
//!
//! * `'format' = 'avro'`: each record is one Avro binary datum, no framing.
//!   The writer schema is `'avro.schema'` when given, otherwise the one
//!   derived from the table's columns (as Flink derives it).
//! * `'format' = 'avro-confluent'`: Confluent's wire format (a zero byte, the
//!   schema id in 4 big-endian bytes, the datum). The source looks writer
//!   schemas up by id in the registry at `'avro-confluent.url'`; the sink
//!   registers its schema under `'avro-confluent.subject'` (default
//!   `<topic>-value`, Confluent's TopicNameStrategy).
//!
//! The source always reads through a *reader* schema derived from the
//! table, so writer schemas may differ from it as Avro's schema resolution
//! allows (fields added with defaults, removed, reordered, promoted). Both
//! framings are decoded by one `arrow-avro` decoder per source subtask:
//! plain datums get a synthetic Confluent prefix with id 0. Each record is
//! fed on its own and checked to make exactly one row of exactly its bytes;
//! when one does not, the decoder is rebuilt, the good records since the
//! last flush are decoded again, and the bad one is reported.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use arrow::array::RecordBatch;
use arrow::compute::concat_batches;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow_avro::reader::{Decoder, ReaderBuilder};
use arrow_avro::schema::{
    AvroSchema, Fingerprint, FingerprintAlgorithm, FingerprintStrategy, SCHEMA_METADATA_KEY,
    SchemaStore,
};
use arrow_avro::writer::WriterBuilder;
use arrow_avro::writer::format::{AvroBinaryFormat, AvroSoeFormat};
use weir_engine::{Error, Result};

use super::decode::{BadRecord, RecordBuffer};
use super::registry::SchemaRegistry;
use crate::util::conform_to;

/// The id plain datums are framed with for the decoder.
const PLAIN_ID: u32 = 0;
/// Rows per decoder batch.
const DECODER_BATCH: usize = 4096;
/// The top-level record name of reader schemas; writer schemas are renamed
/// to it (the name does not change the encoding).
const RECORD_NAME: &str = "WeirRecord";

/// Avro options of a table (for its values or its key).
#[derive(Debug, Clone)]
pub struct AvroFormat {
    /// The writer schema given in the options (`avro.schema`,
    /// `avro-confluent.schema`).
    pub schema: Option<String>,
    /// For `avro-confluent`: the registry.
    pub registry: Option<Arc<SchemaRegistry>>,
    /// For `avro-confluent` sinks: the subject the schema is registered
    /// under.
    pub subject: Option<String>,
    /// The id the sink's schema was registered with.
    registered: Arc<OnceLock<u32>>,
}

impl AvroFormat {
    /// Plain Avro datums with this writer schema (derived when `None`).
    pub fn plain(schema: Option<String>) -> Self {
        AvroFormat {
            schema,
            registry: None,
            subject: None,
            registered: Arc::new(OnceLock::new()),
        }
    }

    /// Confluent's wire format, with schemas in `registry`.
    pub fn confluent(
        registry: SchemaRegistry,
        schema: Option<String>,
        subject: Option<String>,
    ) -> Self {
        AvroFormat {
            schema,
            registry: Some(Arc::new(registry)),
            subject,
            registered: Arc::new(OnceLock::new()),
        }
    }

    /// The format's name.
    pub fn name(&self) -> &'static str {
        if self.registry.is_some() {
            "avro-confluent"
        } else {
            "avro"
        }
    }
}

/// The Arrow schema the Avro schema is derived from: timestamps are UTC
/// instants (Avro's `timestamp-millis`/`-micros`, as Flink writes them),
/// field metadata is dropped.
fn avro_arrow_schema(fields: &[Field]) -> Schema {
    Schema::new(
        fields
            .iter()
            .map(|f| {
                let data_type = match f.data_type() {
                    DataType::Timestamp(unit, None) => {
                        DataType::Timestamp(*unit, Some("+00:00".into()))
                    }
                    DataType::Utf8View | DataType::LargeUtf8 => DataType::Utf8,
                    DataType::BinaryView | DataType::LargeBinary => DataType::Binary,
                    other => other.clone(),
                };
                Field::new(f.name(), data_type, f.is_nullable())
            })
            .collect::<Vec<_>>(),
    )
}

/// The Avro schema of a table's columns.
pub fn derived_schema(fields: &[Field]) -> Result<AvroSchema> {
    let mut schema = avro_arrow_schema(fields);
    schema.metadata.insert(
        arrow_avro::schema::AVRO_NAME_METADATA_KEY.into(),
        RECORD_NAME.into(),
    );
    AvroSchema::try_from(&schema).map_err(|e| {
        Error::Config(format!(
            "the table's columns have no Avro schema: {}; use types Avro has",
            weir_engine::sql_type_names_in(&e.to_string())
        ))
    })
}

/// `schema` with its top-level record named [`RECORD_NAME`], without a
/// namespace, so that it resolves against the reader schema.
fn renamed(schema: &str) -> std::result::Result<AvroSchema, String> {
    let mut value: serde_json::Value =
        serde_json::from_str(schema).map_err(|e| format!("the schema is not JSON: {e}"))?;
    let record = value
        .as_object_mut()
        .filter(|o| o.get("type").and_then(|t| t.as_str()) == Some("record"))
        .ok_or("the schema is not an Avro record")?;
    record.insert("name".into(), RECORD_NAME.into());
    record.remove("namespace");
    Ok(AvroSchema::new(value.to_string()))
}

/// A decoder over a store of writer schemas, all read through `reader`.
fn build_decoder(reader: &AvroSchema, writers: &HashMap<u32, AvroSchema>) -> Result<Decoder> {
    let mut store = SchemaStore::new_with_type(FingerprintAlgorithm::Id);
    for (id, schema) in writers {
        store
            .set(Fingerprint::Id(*id), schema.clone())
            .map_err(|e| Error::Config(format!("Avro schema {id}: {e}")))?;
    }
    ReaderBuilder::new()
        .with_batch_size(DECODER_BATCH)
        .with_reader_schema(reader.clone())
        .with_writer_schema_store(store)
        .build_decoder()
        .map_err(|e| {
            Error::Config(format!(
                "Avro schema resolution: {}",
                weir_engine::sql_type_names_in(&e.to_string())
            ))
        })
}

/// Checks that the table's columns can be read with `format`'s schema.
pub fn check_readable(fields: &[Field], format: &AvroFormat) -> Result<()> {
    let reader = derived_schema(fields)?;
    let writer = match &format.schema {
        Some(schema) => renamed(schema).map_err(|e| {
            Error::invalid_option("avro.schema", format!("option 'avro.schema': {e}"))
        })?,
        None => reader.clone(),
    };
    build_decoder(&reader, &HashMap::from([(PLAIN_ID, writer)])).map_err(|e| {
        Error::Config(format!(
            "the Avro schema cannot be read into the table's columns: {}",
            weir_engine::sql_type_names_in(&e.to_string())
        ))
    })?;
    Ok(())
}

/// Decodes Avro record values into the table's value columns.
pub struct AvroDecoder {
    value_schema: SchemaRef,
    reader: AvroSchema,
    registry: Option<Arc<SchemaRegistry>>,
    /// Writer schemas by id, as in the decoder's store.
    writers: HashMap<u32, AvroSchema>,
    /// Ids that are unusable, and why (unknown to the registry, or not
    /// resolvable into the table).
    unusable: HashMap<u32, String>,
    decoder: Option<Decoder>,
}

impl std::fmt::Debug for AvroDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AvroDecoder")
            .field("writers", &self.writers.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// Why one record's bytes did not make exactly one row.
fn anomaly(consumed: usize, len: usize, rows: usize) -> String {
    match rows {
        0 => "truncated Avro: the value ends inside the record".into(),
        1 if consumed < len => format!("{} bytes after the end of the Avro record", len - consumed),
        n => format!("the value holds {n} Avro records, not one"),
    }
}

impl AvroDecoder {
    /// A decoder of records of `value_schema`'s columns.
    pub fn new(value_schema: SchemaRef, format: &AvroFormat) -> Result<Self> {
        let fields: Vec<Field> = value_schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        let reader = derived_schema(&fields)?;
        let mut writers = HashMap::new();
        if format.registry.is_none() {
            let writer = match &format.schema {
                Some(schema) => renamed(schema).map_err(|e| {
                    Error::invalid_option("avro.schema", format!("option 'avro.schema': {e}"))
                })?,
                None => reader.clone(),
            };
            writers.insert(PLAIN_ID, writer);
        }
        let decoder = if writers.is_empty() {
            None
        } else {
            Some(build_decoder(&reader, &writers)?)
        };
        Ok(AvroDecoder {
            value_schema,
            reader,
            registry: format.registry.clone(),
            writers,
            unusable: HashMap::new(),
            decoder,
        })
    }

    /// The schema id of a Confluent-framed value.
    fn schema_id(value: &[u8]) -> Option<u32> {
        match value {
            [0, a, b, c, d, ..] => Some(u32::from_be_bytes([*a, *b, *c, *d])),
            _ => None,
        }
    }

    /// Fetches the writer schemas of ids not seen yet; true when the store
    /// grew.
    fn learn_ids(&mut self, records: &RecordBuffer, candidates: &[usize]) -> Result<bool> {
        let Some(registry) = self.registry.clone() else {
            return Ok(false);
        };
        let mut grew = false;
        for &i in candidates {
            let Some(id) = records.value(i).and_then(Self::schema_id) else {
                continue;
            };
            if self.writers.contains_key(&id) || self.unusable.contains_key(&id) {
                continue;
            }
            let Some(schema) = registry.schema_by_id(id)? else {
                self.unusable.insert(
                    id,
                    format!(
                        "schema id {id} is not in the schema registry {}",
                        registry.url()
                    ),
                );
                continue;
            };
            let resolved = renamed(&schema).and_then(|writer| {
                build_decoder(&self.reader, &HashMap::from([(id, writer.clone())]))
                    .map(|_| writer)
                    .map_err(|e| e.to_string())
            });
            match resolved {
                Ok(writer) => {
                    tracing::info!(id, registry = registry.url(), "new Avro writer schema");
                    self.writers.insert(id, writer);
                    grew = true;
                }
                Err(e) => {
                    self.unusable.insert(
                        id,
                        format!("schema id {id} cannot be read into the table's columns: {e}"),
                    );
                }
            }
        }
        Ok(grew)
    }

    fn fresh_decoder(&self) -> Result<Decoder> {
        build_decoder(&self.reader, &self.writers)
    }

    /// Decodes the `candidates` records: the batch of the good ones (in the
    /// table's value column types) and their indices; bad ones go to `bad`.
    pub fn decode(
        &mut self,
        records: &RecordBuffer,
        candidates: &[usize],
        bad: &mut Vec<BadRecord>,
    ) -> Result<(RecordBatch, Vec<usize>)> {
        if self.learn_ids(records, candidates)?
            || self.decoder.is_none() && !self.writers.is_empty()
        {
            self.decoder = Some(self.fresh_decoder()?);
        }
        let mut decoder = self.decoder.take();
        let confluent = self.registry.is_some();
        let mut out = Output {
            records,
            confluent,
            reader: &self.reader,
            writers: &self.writers,
            pending: Vec::new(),
            good: Vec::with_capacity(candidates.len()),
            batches: Vec::new(),
        };
        let mut last_id = None;
        let mut framed = Vec::new();
        for &i in candidates {
            let value = records.value(i).unwrap_or_default();
            let (id, bytes): (u32, &[u8]) = if confluent {
                match Self::schema_id(value) {
                    Some(id) => (id, value),
                    None => {
                        bad.push(BadRecord {
                            index: i,
                            reason: "the value is not in the Confluent wire format \
                                     (a zero byte and a 4-byte schema id first)"
                                .into(),
                        });
                        continue;
                    }
                }
            } else {
                framed.clear();
                framed.extend_from_slice(&[0, 0, 0, 0, 0]);
                framed.extend_from_slice(value);
                (PLAIN_ID, &framed)
            };
            if let Some(reason) = self.unusable.get(&id) {
                bad.push(BadRecord {
                    index: i,
                    reason: reason.clone(),
                });
                continue;
            }
            let Some(current) = decoder.as_mut() else {
                return Err(Error::internal("no Avro decoder for a known schema"));
            };
            // A new schema starts a new batch, so the decoder switches at once.
            if last_id.is_some_and(|last| last != id) && !out.pending.is_empty() {
                out.flush(current, bad)?;
            }
            last_id = Some(id);
            let before = current.capacity();
            let outcome = current.decode(bytes);
            let rows = before - current.capacity();
            match outcome {
                Ok(consumed) if consumed == bytes.len() && rows == 1 => {
                    out.pending.push(i);
                    if current.batch_is_full() {
                        out.flush(current, bad)?;
                    }
                }
                outcome => {
                    let reason = match outcome {
                        Ok(consumed) => anomaly(consumed, bytes.len(), rows),
                        Err(e) => format!(
                            "invalid Avro: {}",
                            weir_engine::sql_type_names_in(&e.to_string())
                        ),
                    };
                    bad.push(BadRecord { index: i, reason });
                    // The decoder may hold part of the bad record: start
                    // over with the good ones of this batch.
                    let mut fresh = out.fresh()?;
                    for &j in &out.pending {
                        redecode(&mut fresh, records, j, confluent)?;
                    }
                    out.flush(&mut fresh, bad)?;
                    decoder = Some(fresh);
                    last_id = None;
                }
            }
        }
        if let Some(current) = decoder.as_mut() {
            out.flush(current, bad)?;
        }
        let (batches, good) = (out.batches, out.good);
        self.decoder = decoder;
        let batch = self.to_table_types(&batches)?;
        Ok((batch, good))
    }

    /// The decoded batches as one batch of the table's value columns.
    fn to_table_types(&self, batches: &[RecordBatch]) -> Result<RecordBatch> {
        let Some(first) = batches.first() else {
            return Ok(RecordBatch::new_empty(Arc::clone(&self.value_schema)));
        };
        let all = concat_batches(&first.schema(), batches)?;
        conform_to(&all, &self.value_schema)
    }
}

/// The decoded rows of one [`AvroDecoder::decode`] call.
struct Output<'a> {
    records: &'a RecordBuffer,
    confluent: bool,
    reader: &'a AvroSchema,
    writers: &'a HashMap<u32, AvroSchema>,
    /// Records in the decoder's current batch.
    pending: Vec<usize>,
    /// Records whose rows are in `batches`, in order.
    good: Vec<usize>,
    batches: Vec<RecordBatch>,
}

impl Output<'_> {
    fn fresh(&self) -> Result<Decoder> {
        build_decoder(self.reader, self.writers)
    }

    /// Moves the decoder's rows into `batches` and the `pending` records
    /// into `good`. `arrow-avro` checks some values (UTF-8) only when it
    /// builds the arrays, so a whole batch can fail here: then its records
    /// are decoded again one by one, and those that fail are bad.
    fn flush(&mut self, decoder: &mut Decoder, bad: &mut Vec<BadRecord>) -> Result<()> {
        let batch = match decoder.flush() {
            Ok(batch) => batch,
            Err(_) => {
                *decoder = self.fresh()?;
                for j in std::mem::take(&mut self.pending) {
                    redecode(decoder, self.records, j, self.confluent)?;
                    match decoder.flush() {
                        Ok(Some(batch)) if batch.num_rows() == 1 => {
                            self.batches.push(batch);
                            self.good.push(j);
                        }
                        Ok(other) => {
                            return Err(Error::internal(format!(
                                "one Avro record made {} rows",
                                other.map_or(0, |b| b.num_rows())
                            )));
                        }
                        Err(e) => {
                            bad.push(BadRecord {
                                index: j,
                                reason: format!(
                                    "invalid Avro: {}",
                                    weir_engine::sql_type_names_in(&e.to_string())
                                ),
                            });
                            *decoder = self.fresh()?;
                        }
                    }
                }
                return Ok(());
            }
        };
        let rows = batch.as_ref().map_or(0, RecordBatch::num_rows);
        if rows != self.pending.len() {
            return Err(Error::internal(format!(
                "the Avro decoder made {rows} rows of {} records",
                self.pending.len()
            )));
        }
        if let Some(batch) = batch {
            self.batches.push(batch);
        }
        self.good.append(&mut self.pending);
        Ok(())
    }
}

/// Decodes a record that decoded before, into a fresh decoder.
fn redecode(
    decoder: &mut Decoder,
    records: &RecordBuffer,
    i: usize,
    confluent: bool,
) -> Result<()> {
    let value = records.value(i).unwrap_or_default();
    let framed;
    let bytes = if confluent {
        value
    } else {
        framed = [&[0u8, 0, 0, 0, 0][..], value].concat();
        &framed
    };
    match decoder.decode(bytes) {
        Ok(n) if n == bytes.len() => Ok(()),
        other => Err(Error::internal(format!(
            "a good Avro record did not decode again: {other:?}"
        ))),
    }
}

/// Encodes batches into Avro record values.
#[derive(Debug, Clone)]
pub struct AvroEncoder {
    format: AvroFormat,
    /// The Arrow schema the encoder takes (timestamps in UTC), with the
    /// writer schema in its metadata.
    schema: SchemaRef,
    writer: AvroSchema,
}

impl AvroEncoder {
    /// An encoder of rows of `fields`.
    pub fn new(fields: &[Field], format: &AvroFormat) -> Result<Self> {
        let writer = match &format.schema {
            Some(schema) => AvroSchema::new(schema.clone()),
            None => derived_schema(fields)?,
        };
        let mut schema = avro_arrow_schema(fields);
        schema
            .metadata
            .insert(SCHEMA_METADATA_KEY.into(), writer.json_string.clone());
        let encoder = AvroEncoder {
            format: format.clone(),
            schema: Arc::new(schema),
            writer,
        };
        // Fail now on a schema that does not fit the columns.
        WriterBuilder::new(encoder.schema.as_ref().clone())
            .build_encoder::<AvroBinaryFormat>()
            .map_err(|e| {
                Error::Config(format!(
                    "the Avro schema cannot be written from the table's columns: {}",
                    weir_engine::sql_type_names_in(&e.to_string())
                ))
            })?;
        Ok(encoder)
    }

    /// The schema id, registering the schema on first use.
    fn schema_id(&self, registry: &SchemaRegistry) -> Result<u32> {
        if let Some(id) = self.format.registered.get() {
            return Ok(*id);
        }
        let subject = self
            .format
            .subject
            .as_deref()
            .ok_or_else(|| Error::internal("an avro-confluent sink without a subject"))?;
        let id = registry.register(subject, &self.writer.json_string)?;
        tracing::info!(
            subject,
            id,
            registry = registry.url(),
            "registered the Avro schema"
        );
        Ok(*self.format.registered.get_or_init(|| id))
    }

    /// One value per row of `batch` (whose columns are the encoder's).
    pub fn encode(&self, batch: &RecordBatch) -> Result<Vec<Vec<u8>>> {
        let batch = conform_to(batch, &self.schema)?;
        let builder = WriterBuilder::new(self.schema.as_ref().clone());
        let mut encoder = match &self.format.registry {
            Some(registry) => builder
                .with_fingerprint_strategy(FingerprintStrategy::Id(self.schema_id(registry)?))
                .build_encoder::<AvroSoeFormat>(),
            None => builder.build_encoder::<AvroBinaryFormat>(),
        }
        .map_err(|e| Error::internal(format!("building the Avro encoder: {e}")))?;
        encoder
            .encode(&batch)
            .map_err(|e| Error::BadInput(format!("encoding a row as Avro: {e}")))?;
        let rows = encoder.flush();
        Ok(rows.iter().map(|row| row.to_vec()).collect())
    }
}
