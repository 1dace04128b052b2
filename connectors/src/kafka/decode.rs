//! Decoding a poll's worth of Kafka records into one Arrow batch.
//!
//! Values are concatenated, one per line, and decoded by one Arrow JSON or
//! CSV decoder in a single pass. Only when that fails (or yields a different
//! number of rows than there were records) is each record decoded on its own,
//! to find the bad ones; the good ones still come out, in order. `METADATA`
//! columns (timestamp, partition, offset, key, topic, headers) are built from
//! the records' metadata. Debezium change records give one or two rows each
//! (an update is a `-U` and a `+U`), decoded together the same way; the
//! batch then carries the row-kind column last.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BinaryBuilder, Int32Array, Int64Array, RecordBatch, StringBuilder, UInt32Array,
};
use arrow::compute::{cast, concat_batches, take};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use weir_engine::changelog::{split_row_kinds, updating_schema, with_row_kinds};
use weir_engine::{Error, Result, TableDescriptor};

use super::avro::{AvroDecoder, check_readable};
use super::{KafkaFormat, metadata_key};
use crate::debezium::DebeziumDecoder;
use crate::filesystem::format::{DecoderFactory, Format, decoder_factory};
use crate::util::make_batch;

/// The records of one poll, before decoding: values back to back in one
/// buffer, metadata in columns.
#[derive(Debug, Default)]
pub struct RecordBuffer {
    /// Topic names seen; `topics[topic_ids[i]]` is record `i`'s topic.
    pub topics: Vec<String>,
    /// Per record: index into `topics`.
    pub topic_ids: Vec<u32>,
    /// Per record: partition.
    pub partitions: Vec<i32>,
    /// Per record: offset.
    pub offsets: Vec<i64>,
    /// Per record: timestamp (epoch milliseconds), when the record has one.
    pub timestamps: Vec<Option<i64>>,
    /// Per record: the key, when kept (key column or dead letters).
    pub keys: Vec<Option<Vec<u8>>>,
    /// Per record: the headers as a JSON object, when kept.
    pub headers: Vec<Option<String>>,
    /// Per record: the value's byte range in `values`; `None` for a null value.
    pub spans: Vec<Option<(usize, usize)>>,
    /// The values.
    pub values: Vec<u8>,
}

impl RecordBuffer {
    /// Number of records.
    pub fn len(&self) -> usize {
        self.offsets.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }

    /// Record `i`'s value.
    pub fn value(&self, i: usize) -> Option<&[u8]> {
        self.spans[i].map(|(s, e)| &self.values[s..e])
    }

    /// Record `i`'s topic.
    pub fn topic(&self, i: usize) -> &str {
        &self.topics[self.topic_ids[i] as usize]
    }

    /// The index of `topic` in `topics`, adding it.
    pub fn topic_id(&mut self, topic: &str) -> u32 {
        match self.topics.iter().position(|t| t == topic) {
            Some(i) => i as u32,
            None => {
                self.topics.push(topic.to_string());
                (self.topics.len() - 1) as u32
            }
        }
    }

    /// Empties the buffer, keeping its allocations.
    pub fn clear(&mut self) {
        self.topic_ids.clear();
        self.partitions.clear();
        self.offsets.clear();
        self.timestamps.clear();
        self.keys.clear();
        self.headers.clear();
        self.spans.clear();
        self.values.clear();
    }
}

/// A record that did not decode, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRecord {
    /// Its index in the [`RecordBuffer`].
    pub index: usize,
    /// The reason.
    pub reason: String,
}

/// Decodes a poll's records into one batch for a Kafka source: the
/// values of a plain or changelog format ([`RecordDecoder`]), or keys and
/// values of upserts (`upsert-kafka`).
pub trait BatchDecoder: Send {
    /// The schema of the batches.
    fn schema(&self) -> &SchemaRef;

    /// True when the records' keys are needed.
    fn needs_keys(&self) -> bool;

    /// True when the records' headers are needed.
    fn needs_headers(&self) -> bool;

    /// The batch of the good records, in order, and the bad ones with
    /// their reasons.
    fn decode(&mut self, records: &RecordBuffer) -> Result<(RecordBatch, Vec<BadRecord>)>;
}

impl BatchDecoder for RecordDecoder {
    fn schema(&self) -> &SchemaRef {
        RecordDecoder::schema(self)
    }

    fn needs_keys(&self) -> bool {
        RecordDecoder::needs_keys(self)
    }

    fn needs_headers(&self) -> bool {
        RecordDecoder::needs_headers(self)
    }

    fn decode(&mut self, records: &RecordBuffer) -> Result<(RecordBatch, Vec<BadRecord>)> {
        RecordDecoder::decode(self, records)
    }
}

/// Decodes [`RecordBuffer`]s into batches of the table's projected columns.
pub struct RecordDecoder {
    format: KafkaFormat,
    /// The table's value (non-metadata) columns.
    value_schema: SchemaRef,
    decoders: Option<DecoderFactory>,
    avro: Option<AvroDecoder>,
    /// The projected columns.
    data_schema: SchemaRef,
    /// The output: the projected columns, plus the row-kind column for a
    /// changelog format.
    schema: SchemaRef,
    /// Per output column: where it comes from.
    columns: Vec<ColumnSource>,
    max_record_bytes: usize,
}

#[derive(Debug, Clone)]
enum ColumnSource {
    /// Index into the decoded value columns.
    Value(usize),
    /// A metadata key.
    Metadata(String),
}

/// Checks that `format` can decode the table's value columns.
pub fn check_columns(table: &TableDescriptor, format: &KafkaFormat) -> Result<()> {
    let values: Vec<&Arc<Field>> = table
        .schema
        .fields()
        .iter()
        .filter(|f| metadata_key(f).is_none())
        .collect();
    match format {
        KafkaFormat::Raw => {
            let ok = values.len() == 1
                && matches!(
                    values[0].data_type(),
                    DataType::Utf8 | DataType::LargeUtf8 | DataType::Binary | DataType::LargeBinary
                );
            if !ok {
                return Err(Error::Config(format!(
                    "table '{}': format 'raw' needs exactly one column (besides METADATA columns) \
                     of type STRING or BYTES",
                    table.name
                )));
            }
        }
        KafkaFormat::Json(json) => check_file_format(table, &values, &Format::Json(json.clone()))?,
        KafkaFormat::Csv(csv) => check_file_format(table, &values, &Format::Csv(csv.clone()))?,
        KafkaFormat::DebeziumJson(json) => {
            check_file_format(table, &values, &Format::DebeziumJson(json.clone()))?
        }
        KafkaFormat::Avro(avro) => {
            let fields: Vec<Field> = values.iter().map(|f| f.as_ref().clone()).collect();
            check_readable(&fields, avro)
                .map_err(|e| Error::Config(format!("table '{}': {e}", table.name)))?;
        }
    }
    Ok(())
}

fn check_file_format(
    table: &TableDescriptor,
    values: &[&Arc<Field>],
    format: &Format,
) -> Result<()> {
    for field in values {
        if !format.supports(field.data_type()) {
            return Err(Error::Config(format!(
                "table '{}': column '{}' of type {} cannot be read from format '{}'",
                table.name,
                field.name(),
                weir_engine::sql_type_name(field.data_type()),
                format.name()
            )));
        }
    }
    Ok(())
}

impl RecordDecoder {
    /// A decoder of `table`'s `projection` (every column when `None`).
    pub fn new(
        format: KafkaFormat,
        table: &TableDescriptor,
        projection: &[usize],
        max_record_bytes: usize,
    ) -> Result<Self> {
        let value_fields: Vec<Field> = table
            .schema
            .fields()
            .iter()
            .filter(|f| metadata_key(f).is_none())
            .map(|f| f.as_ref().clone())
            .collect();
        let value_schema = Arc::new(Schema::new(value_fields));
        let all: Vec<usize> = (0..value_schema.fields().len()).collect();
        let decoders = match &format {
            KafkaFormat::Json(json) => {
                decoder_factory(&Format::Json(json.clone()), &value_schema, &all)?
            }
            KafkaFormat::Csv(csv) => {
                decoder_factory(&Format::Csv(csv.clone()), &value_schema, &all)?
            }
            KafkaFormat::Raw | KafkaFormat::Avro(_) | KafkaFormat::DebeziumJson(_) => None,
        };
        let avro = match &format {
            KafkaFormat::Avro(avro) => Some(AvroDecoder::new(Arc::clone(&value_schema), avro)?),
            _ => None,
        };
        let mut columns = Vec::with_capacity(projection.len());
        let mut fields = Vec::with_capacity(projection.len());
        for &i in projection {
            let field = table.schema.field(i);
            fields.push(field.clone());
            columns.push(match metadata_key(field) {
                Some(key) => ColumnSource::Metadata(key.to_string()),
                None => {
                    let index = value_schema.index_of(field.name()).map_err(|e| {
                        Error::internal(format!("value column '{}' is missing: {e}", field.name()))
                    })?;
                    ColumnSource::Value(index)
                }
            });
        }
        let schema = Arc::new(Schema::new(fields));
        Ok(RecordDecoder {
            schema: if format.is_changelog() {
                updating_schema(&schema)
            } else {
                Arc::clone(&schema)
            },
            format,
            value_schema,
            decoders,
            avro,
            data_schema: schema,
            columns,
            max_record_bytes,
        })
    }

    /// The output schema.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// True when the records' keys are needed.
    pub fn needs_keys(&self) -> bool {
        self.columns
            .iter()
            .any(|c| matches!(c, ColumnSource::Metadata(k) if k == "key"))
    }

    /// True when the records' headers are needed.
    pub fn needs_headers(&self) -> bool {
        self.columns
            .iter()
            .any(|c| matches!(c, ColumnSource::Metadata(k) if k == "headers"))
    }

    /// Decodes the buffered records: the batch of the good ones, in order,
    /// and the bad ones with their reasons.
    pub fn decode(&mut self, records: &RecordBuffer) -> Result<(RecordBatch, Vec<BadRecord>)> {
        let n = records.len();
        let mut bad = Vec::new();
        let mut candidates = Vec::with_capacity(n);
        for i in 0..n {
            match records.value(i) {
                // Debezium follows a delete with a tombstone, for compaction.
                None if self.format.is_changelog() => {}
                None if !matches!(self.format, KafkaFormat::Raw) => bad.push(BadRecord {
                    index: i,
                    reason: "the record has no value (null)".into(),
                }),
                Some(v) if v.len() > self.max_record_bytes => bad.push(BadRecord {
                    index: i,
                    reason: format!(
                        "the value has {} bytes, more than 'scan.max-record-bytes' = {}",
                        v.len(),
                        self.max_record_bytes
                    ),
                }),
                _ => candidates.push(i),
            }
        }
        if self.format.is_changelog() {
            let (values, good) = self.decode_changes(records, &candidates, &mut bad)?;
            let (values, kinds) = split_row_kinds(&values)?;
            bad.sort_by_key(|b| b.index);
            let batch = self.assemble(records, &values, &good)?;
            let kinds =
                kinds.ok_or_else(|| Error::internal("decoded changes have no row kinds"))?;
            let batch = with_row_kinds(&self.schema, batch.columns().to_vec(), kinds)?;
            return Ok((batch, bad));
        }
        let (values, good) = match (&self.decoders, &mut self.avro) {
            (_, Some(avro)) if !self.value_schema.fields().is_empty() => {
                avro.decode(records, &candidates, &mut bad)?
            }
            (None, None) => self.decode_raw(records, &candidates, &mut bad)?,
            (Some(factory), _) => self.decode_text(factory, records, &candidates, &mut bad)?,
            (None, Some(_)) => {
                let batch = make_batch(&self.value_schema, Vec::new(), candidates.len())?;
                (batch, candidates)
            }
        };
        bad.sort_by_key(|b| b.index);
        let batch = self.assemble(records, &values, &good)?;
        Ok((batch, bad))
    }

    fn decode_raw(
        &self,
        records: &RecordBuffer,
        candidates: &[usize],
        bad: &mut Vec<BadRecord>,
    ) -> Result<(RecordBatch, Vec<usize>)> {
        let field = self.value_schema.field(0);
        let mut good = Vec::with_capacity(candidates.len());
        let column: ArrayRef = match field.data_type() {
            DataType::Utf8 | DataType::LargeUtf8 => {
                let mut builder = StringBuilder::new();
                for &i in candidates {
                    match records.value(i).map(std::str::from_utf8) {
                        Some(Ok(s)) => builder.append_value(s),
                        None if field.is_nullable() => builder.append_null(),
                        None => {
                            bad.push(BadRecord {
                                index: i,
                                reason: format!(
                                    "null value for NOT NULL column '{}'",
                                    field.name()
                                ),
                            });
                            continue;
                        }
                        Some(Err(e)) => {
                            bad.push(BadRecord {
                                index: i,
                                reason: format!("the value is not valid UTF-8: {e}"),
                            });
                            continue;
                        }
                    }
                    good.push(i);
                }
                Arc::new(builder.finish())
            }
            _ => {
                let mut builder = BinaryBuilder::new();
                for &i in candidates {
                    match records.value(i) {
                        Some(v) => builder.append_value(v),
                        None if field.is_nullable() => builder.append_null(),
                        None => {
                            bad.push(BadRecord {
                                index: i,
                                reason: format!(
                                    "null value for NOT NULL column '{}'",
                                    field.name()
                                ),
                            });
                            continue;
                        }
                    }
                    good.push(i);
                }
                Arc::new(builder.finish())
            }
        };
        let column = cast(&column, field.data_type())?;
        let batch = RecordBatch::try_new(Arc::clone(&self.value_schema), vec![column])?;
        Ok((batch, good))
    }

    /// Decodes Debezium change records: the rows (value columns and row
    /// kind) and, per row, the record it came from (an update gives two).
    fn decode_changes(
        &self,
        records: &RecordBuffer,
        candidates: &[usize],
        bad: &mut Vec<BadRecord>,
    ) -> Result<(RecordBatch, Vec<usize>)> {
        let mut decoder = DebeziumDecoder::new(Arc::clone(&self.value_schema));
        let mut pushed = Vec::with_capacity(candidates.len());
        for &i in candidates {
            match decoder.push(records.value(i).unwrap_or_default()) {
                Ok(rows) => pushed.push((i, rows)),
                Err(e) => bad.push(BadRecord {
                    index: i,
                    reason: format!("invalid debezium-json: {e}"),
                }),
            }
        }
        let rows_of = |pushed: &[(usize, usize)]| -> Vec<usize> {
            pushed
                .iter()
                .flat_map(|&(i, rows)| std::iter::repeat_n(i, rows))
                .collect()
        };
        let schema = Arc::clone(decoder.output_schema());
        match decoder.flush() {
            Ok(batch) => Ok((
                batch.unwrap_or_else(|| RecordBatch::new_empty(Arc::clone(&schema))),
                rows_of(&pushed),
            )),
            Err(_) => {
                // A row does not fit the columns: decode each record alone.
                let mut batches = Vec::with_capacity(pushed.len());
                let mut good = Vec::with_capacity(pushed.len());
                for (i, rows) in pushed {
                    let decoded = decoder
                        .push(records.value(i).unwrap_or_default())
                        .and_then(|_| decoder.flush());
                    match decoded {
                        Ok(Some(batch)) => {
                            batches.push(batch);
                            good.extend(std::iter::repeat_n(i, rows));
                        }
                        Ok(None) => {}
                        Err(e) => bad.push(BadRecord {
                            index: i,
                            reason: format!("invalid debezium-json: {e}"),
                        }),
                    }
                }
                Ok((concat_batches(&schema, &batches)?, good))
            }
        }
    }

    /// The bytes decoders see for record `i`: CSV loses its line end.
    fn text<'a>(&self, records: &'a RecordBuffer, i: usize) -> &'a [u8] {
        let v = records.value(i).unwrap_or_default();
        match self.format {
            KafkaFormat::Csv(_) => v
                .strip_suffix(b"\n")
                .map_or(v, |v| v.strip_suffix(b"\r").unwrap_or(v)),
            _ => v,
        }
    }

    fn decode_text(
        &self,
        factory: &DecoderFactory,
        records: &RecordBuffer,
        candidates: &[usize],
        bad: &mut Vec<BadRecord>,
    ) -> Result<(RecordBatch, Vec<usize>)> {
        if self.value_schema.fields().is_empty() {
            let batch = make_batch(&self.value_schema, Vec::new(), candidates.len())?;
            return Ok((batch, candidates.to_vec()));
        }
        // The fast path: all at once.
        let mut joined = Vec::with_capacity(records.values.len() + candidates.len());
        for &i in candidates {
            joined.extend_from_slice(self.text(records, i));
            joined.push(b'\n');
        }
        if let Ok(Some(batch)) = decode_all(factory, &joined, candidates.len())
            && batch.num_rows() == candidates.len()
        {
            return Ok((batch, candidates.to_vec()));
        }
        if candidates.is_empty() {
            return Ok((
                RecordBatch::new_empty(Arc::clone(&self.value_schema)),
                Vec::new(),
            ));
        }
        // Some record is bad: decode each alone.
        let mut good = Vec::with_capacity(candidates.len());
        let mut batches = Vec::with_capacity(candidates.len());
        for &i in candidates {
            let mut one = self.text(records, i).to_vec();
            one.push(b'\n');
            match decode_all(factory, &one, 1) {
                Ok(Some(batch)) if batch.num_rows() == 1 => {
                    good.push(i);
                    batches.push(batch);
                }
                Ok(Some(batch)) => bad.push(BadRecord {
                    index: i,
                    reason: format!("the value holds {} records, not one", batch.num_rows()),
                }),
                Ok(None) => bad.push(BadRecord {
                    index: i,
                    reason: "the value is empty".into(),
                }),
                Err(e) => bad.push(BadRecord {
                    index: i,
                    reason: format!("invalid {}: {e}", self.format.name()),
                }),
            }
        }
        let batch = concat_batches(&self.value_schema, &batches)?;
        Ok((batch, good))
    }

    /// The output batch: value columns of the decoded batch (one row per
    /// `good` record, in order), metadata columns from the records.
    fn assemble(
        &self,
        records: &RecordBuffer,
        values: &RecordBatch,
        good: &[usize],
    ) -> Result<RecordBatch> {
        let mut columns = Vec::with_capacity(self.columns.len());
        for (source, field) in self.columns.iter().zip(self.data_schema.fields()) {
            let column: ArrayRef = match source {
                ColumnSource::Value(i) => Arc::clone(values.column(*i)),
                ColumnSource::Metadata(key) => {
                    let raw: ArrayRef = match key.as_str() {
                        "timestamp" => Arc::new(arrow::array::TimestampMillisecondArray::from(
                            good.iter()
                                .map(|&i| records.timestamps[i])
                                .collect::<Vec<_>>(),
                        )),
                        "partition" => Arc::new(Int32Array::from(
                            good.iter()
                                .map(|&i| records.partitions[i])
                                .collect::<Vec<_>>(),
                        )),
                        "offset" => Arc::new(Int64Array::from(
                            good.iter().map(|&i| records.offsets[i]).collect::<Vec<_>>(),
                        )),
                        "topic" => {
                            let ids = UInt32Array::from(
                                good.iter()
                                    .map(|&i| records.topic_ids[i])
                                    .collect::<Vec<_>>(),
                            );
                            let names: ArrayRef =
                                Arc::new(arrow::array::StringArray::from(records.topics.clone()));
                            take(&names, &ids, None)?
                        }
                        "key" => {
                            let mut b = BinaryBuilder::new();
                            for &i in good {
                                b.append_option(records.keys[i].as_deref());
                            }
                            Arc::new(b.finish())
                        }
                        "headers" => Arc::new(arrow::array::StringArray::from(
                            good.iter()
                                .map(|&i| records.headers[i].clone())
                                .collect::<Vec<_>>(),
                        )),
                        other => {
                            return Err(Error::internal(format!("unknown metadata key '{other}'")));
                        }
                    };
                    convert_metadata(raw, field)?
                }
            };
            columns.push(column);
        }
        make_batch(&self.data_schema, columns, good.len())
    }
}

/// A metadata column in its declared type (keys as text are read lossily).
fn convert_metadata(raw: ArrayRef, field: &Field) -> Result<ArrayRef> {
    if raw.data_type() == field.data_type() {
        return Ok(raw);
    }
    if let (DataType::Binary, DataType::Utf8 | DataType::LargeUtf8) =
        (raw.data_type(), field.data_type())
    {
        let binary = raw
            .as_any()
            .downcast_ref::<arrow::array::BinaryArray>()
            .ok_or_else(|| Error::internal("key column is not binary"))?;
        let text: arrow::array::StringArray = binary
            .iter()
            .map(|v| v.map(|b| String::from_utf8_lossy(b).into_owned()))
            .collect();
        return Ok(cast(&(Arc::new(text) as ArrayRef), field.data_type())?);
    }
    Ok(cast(&raw, field.data_type())?)
}

/// Decodes `bytes` (records separated by newlines) with a fresh decoder.
fn decode_all(
    factory: &DecoderFactory,
    bytes: &[u8],
    expected: usize,
) -> std::result::Result<Option<RecordBatch>, String> {
    // Arrow names the types it could not parse a value as; users know SQL's names.
    let reason = |e: &dyn std::fmt::Display| weir_engine::sql_type_names_in(&e.to_string());
    let mut decoder = factory(expected.max(1) * 2 + 16).map_err(|e| reason(&e))?;
    let mut rest = bytes;
    while !rest.is_empty() {
        let used = decoder.decode(rest).map_err(|e| reason(&e))?;
        if used == 0 {
            // The batch is full: more rows than records.
            return Err("more rows than records".into());
        }
        rest = &rest[used..];
    }
    decoder.decode(&[]).map_err(|e| reason(&e))?;
    decoder.flush().map_err(|e| reason(&e))
}
