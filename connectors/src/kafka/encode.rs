//! Turning rows into Kafka records (key, value, timestamp), and the compact
//! framing the exactly-once sink keeps them in inside a checkpoint.

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Schema, TimeUnit};
use weir_engine::{Error, Result, RowKind};

use super::avro::AvroEncoder;
use super::{KafkaFormat, metadata_key};
use crate::debezium::DebeziumOptions;

/// One record to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutRecord {
    /// The key.
    pub key: Option<Vec<u8>>,
    /// The value; `None` is a tombstone (an upsert sink's deletion).
    pub value: Option<Vec<u8>>,
    /// The timestamp (epoch milliseconds).
    pub timestamp: Option<i64>,
}

/// Turns the batches a Kafka sink takes (inserts, or changes) into records:
/// a plain format or a changelog format ([`RecordEncoder`]), or upserts
/// (`upsert-kafka`).
pub trait ChangeEncoder: Send + Sync {
    /// The records of `batch`'s data rows, in order; `kinds` are the rows'
    /// kinds (`None`: inserts).
    fn encode_changes(
        &self,
        batch: &RecordBatch,
        kinds: Option<&[RowKind]>,
    ) -> Result<Vec<OutRecord>>;

    /// True when the encoder takes updates and deletes, not only inserts.
    fn takes_updates(&self) -> bool;
}

impl ChangeEncoder for RecordEncoder {
    fn encode_changes(
        &self,
        batch: &RecordBatch,
        kinds: Option<&[RowKind]>,
    ) -> Result<Vec<OutRecord>> {
        RecordEncoder::encode_changes(self, batch, kinds)
    }

    fn takes_updates(&self) -> bool {
        self.value_format.is_changelog()
    }
}

/// Encodes rows of the sink's input into records.
#[derive(Debug, Clone)]
pub struct RecordEncoder {
    value_format: KafkaFormat,
    /// Input columns of the value.
    value_columns: Vec<usize>,
    /// Input columns of the key, and its format.
    key: Option<(Vec<usize>, KafkaFormat)>,
    /// The `key` metadata column.
    key_column: Option<usize>,
    /// The `timestamp` metadata column.
    timestamp_column: Option<usize>,
    /// For Avro values and keys: their encoders.
    value_avro: Option<AvroEncoder>,
    key_avro: Option<AvroEncoder>,
}

/// The Avro encoder of `columns` of `schema`, when `format` is Avro.
fn avro_encoder(
    schema: &Schema,
    columns: &[usize],
    format: &KafkaFormat,
) -> Result<Option<AvroEncoder>> {
    let KafkaFormat::Avro(avro) = format else {
        return Ok(None);
    };
    let fields: Vec<arrow::datatypes::Field> =
        columns.iter().map(|&i| schema.field(i).clone()).collect();
    Ok(Some(AvroEncoder::new(&fields, avro)?))
}

impl RecordEncoder {
    /// An encoder for rows of `schema`; `key_fields` name the key's columns.
    pub fn new(
        schema: &Schema,
        value_format: KafkaFormat,
        key: Option<(&[String], KafkaFormat)>,
    ) -> Result<Self> {
        let mut value_columns = Vec::new();
        let (mut key_column, mut timestamp_column) = (None, None);
        for (i, field) in schema.fields().iter().enumerate() {
            match metadata_key(field) {
                Some("key") => key_column = Some(i),
                Some("timestamp") => timestamp_column = Some(i),
                Some(_) => {}
                None => value_columns.push(i),
            }
        }
        let key = match key {
            None => None,
            Some((names, format)) => {
                let mut columns = Vec::with_capacity(names.len());
                for name in names {
                    let index = schema.index_of(name).map_err(|_| {
                        let hint = weir_engine::suggest::closest(
                            name,
                            schema.fields().iter().map(|f| f.name().as_str()),
                        )
                        .map(|s| format!(" (did you mean '{s}'?)"))
                        .unwrap_or_default();
                        Error::invalid_option(
                            "key.fields",
                            format!("option 'key.fields': no column '{name}'{hint}"),
                        )
                    })?;
                    columns.push(index);
                }
                if matches!(format, KafkaFormat::Raw) && columns.len() != 1 {
                    return Err(Error::Config(
                        "'key.format' = 'raw' needs exactly one column in 'key.fields'".into(),
                    ));
                }
                Some((columns, format))
            }
        };
        if key.is_some() && key_column.is_some() {
            return Err(Error::Config(
                "a table has either 'key.fields' or a METADATA 'key' column, not both".into(),
            ));
        }
        if matches!(value_format, KafkaFormat::Raw) && value_columns.len() != 1 {
            return Err(Error::Config(
                "format 'raw' needs exactly one column (besides METADATA columns)".into(),
            ));
        }
        let value_avro = avro_encoder(schema, &value_columns, &value_format)?;
        let key_avro = match &key {
            Some((columns, format)) => avro_encoder(schema, columns, format)?,
            None => None,
        };
        Ok(RecordEncoder {
            value_avro,
            key_avro,
            value_format,
            value_columns,
            key,
            key_column,
            timestamp_column,
        })
    }

    /// The records of `batch`'s rows (inserts), in order.
    pub fn encode(&self, batch: &RecordBatch) -> Result<Vec<OutRecord>> {
        self.encode_changes(batch, None)
    }

    /// The records of `batch`'s rows, in order; `kinds` are the rows' kinds
    /// (`None`: inserts), which only a changelog value format can take.
    pub fn encode_changes(
        &self,
        batch: &RecordBatch,
        kinds: Option<&[RowKind]>,
    ) -> Result<Vec<OutRecord>> {
        let rows = batch.num_rows();
        let values = match &self.value_format {
            KafkaFormat::DebeziumJson(json) => {
                let projected = batch.project(&self.value_columns)?;
                let options = DebeziumOptions {
                    iso_timestamps: json.iso_timestamps,
                };
                check_rows(crate::debezium::encode(&projected, kinds, options)?, rows)?
            }
            format => {
                if kinds.is_some_and(|k| k.iter().any(|k| *k != RowKind::Insert)) {
                    return Err(Error::internal(format!(
                        "format '{}' was given updates to encode",
                        format.name()
                    )));
                }
                encode_columns(batch, &self.value_columns, format, self.value_avro.as_ref())?
            }
        };
        let keys: Vec<Option<Vec<u8>>> = match (&self.key, self.key_column) {
            (Some((columns, format)), _) => {
                encode_columns(batch, columns, format, self.key_avro.as_ref())?
                    .into_iter()
                    .map(Some)
                    .collect()
            }
            (None, Some(c)) => bytes_of(batch.column(c).as_ref())?,
            (None, None) => vec![None; rows],
        };
        let timestamps: Vec<Option<i64>> = match self.timestamp_column {
            None => vec![None; rows],
            Some(c) => {
                let millis = cast(
                    batch.column(c),
                    &DataType::Timestamp(TimeUnit::Millisecond, None),
                )?;
                let millis = cast(&millis, &DataType::Int64)?;
                millis
                    .as_primitive::<arrow::datatypes::Int64Type>()
                    .iter()
                    .collect()
            }
        };
        Ok(values
            .into_iter()
            .zip(keys)
            .zip(timestamps)
            .map(|((value, key), timestamp)| OutRecord {
                key,
                value: Some(value),
                timestamp,
            })
            .collect())
    }
}

/// Each row's bytes of a STRING/BYTES column (null stays null).
fn bytes_of(column: &dyn Array) -> Result<Vec<Option<Vec<u8>>>> {
    Ok(match column.data_type() {
        DataType::Utf8 => column
            .as_string::<i32>()
            .iter()
            .map(|v| v.map(|s| s.as_bytes().to_vec()))
            .collect(),
        DataType::LargeUtf8 => column
            .as_string::<i64>()
            .iter()
            .map(|v| v.map(|s| s.as_bytes().to_vec()))
            .collect(),
        DataType::Binary => column
            .as_binary::<i32>()
            .iter()
            .map(|v| v.map(<[u8]>::to_vec))
            .collect(),
        DataType::LargeBinary => column
            .as_binary::<i64>()
            .iter()
            .map(|v| v.map(<[u8]>::to_vec))
            .collect(),
        DataType::Utf8View => column
            .as_string_view()
            .iter()
            .map(|v| v.map(|s| s.as_bytes().to_vec()))
            .collect(),
        other => {
            let text = cast(column, &DataType::Utf8).map_err(|_| {
                Error::Config(format!(
                    "a column of type {} cannot be raw bytes",
                    weir_engine::sql_type_name(other)
                ))
            })?;
            return bytes_of(text.as_ref());
        }
    })
}

/// One encoded value per row of `columns` of `batch`.
fn encode_columns(
    batch: &RecordBatch,
    columns: &[usize],
    format: &KafkaFormat,
    avro: Option<&AvroEncoder>,
) -> Result<Vec<Vec<u8>>> {
    let projected = batch.project(columns)?;
    let rows = projected.num_rows();
    match format {
        KafkaFormat::Avro(_) => {
            let encoder =
                avro.ok_or_else(|| Error::internal("an Avro column set without an encoder"))?;
            check_rows(encoder.encode(&projected)?, rows)
        }
        KafkaFormat::Raw => Ok(bytes_of(projected.column(0).as_ref())?
            .into_iter()
            .map(Option::unwrap_or_default)
            .collect()),
        KafkaFormat::DebeziumJson(json) => {
            let options = DebeziumOptions {
                iso_timestamps: json.iso_timestamps,
            };
            check_rows(crate::debezium::encode(&projected, None, options)?, rows)
        }
        KafkaFormat::Json(json) => {
            let (ts, ts_tz) = if json.iso_timestamps {
                ("%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f%:z")
            } else {
                ("%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f%:z")
            };
            let mut writer = arrow::json::WriterBuilder::new()
                .with_explicit_nulls(true)
                .with_timestamp_format(ts.into())
                .with_timestamp_tz_format(ts_tz.into())
                .build::<_, arrow::json::writer::LineDelimited>(Vec::new());
            writer.write(&projected)?;
            writer.finish()?;
            let text = writer.into_inner();
            let out: Vec<Vec<u8>> = text
                .split(|b| *b == b'\n')
                .filter(|l| !l.is_empty())
                .map(<[u8]>::to_vec)
                .collect();
            check_rows(out, rows)
        }
        KafkaFormat::Csv(csv) => {
            // One row at a time: a quoted field may hold a line break.
            let mut out = Vec::with_capacity(rows);
            for row in 0..rows {
                let mut builder = arrow::csv::WriterBuilder::new()
                    .with_header(false)
                    .with_delimiter(csv.delimiter)
                    .with_quote(csv.quote)
                    .with_timestamp_format("%Y-%m-%d %H:%M:%S%.f".into());
                if let Some(null) = &csv.null_literal {
                    builder = builder.with_null(null.clone());
                }
                let mut writer = builder.build(Vec::new());
                writer.write(&projected.slice(row, 1))?;
                let mut line = writer.into_inner();
                while line.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                    line.pop();
                }
                out.push(line);
            }
            Ok(out)
        }
    }
}

fn check_rows(out: Vec<Vec<u8>>, rows: usize) -> Result<Vec<Vec<u8>>> {
    if out.len() != rows {
        return Err(Error::internal(format!(
            "encoding {rows} rows gave {} records",
            out.len()
        )));
    }
    Ok(out)
}

/// Appends `records` in a length-prefixed framing.
pub fn frame_records(records: &[OutRecord], out: &mut Vec<u8>) {
    out.extend_from_slice(&(records.len() as u64).to_le_bytes());
    for r in records {
        match &r.key {
            None => out.extend_from_slice(&u32::MAX.to_le_bytes()),
            Some(k) => {
                out.extend_from_slice(&(k.len() as u32).to_le_bytes());
                out.extend_from_slice(k);
            }
        }
        match &r.value {
            None => out.extend_from_slice(&u32::MAX.to_le_bytes()),
            Some(v) => {
                out.extend_from_slice(&(v.len() as u32).to_le_bytes());
                out.extend_from_slice(v);
            }
        }
        out.extend_from_slice(&r.timestamp.unwrap_or(i64::MIN).to_le_bytes());
    }
}

/// Reads what [`frame_records`] wrote, from the front of `input`.
pub fn unframe_records(input: &mut &[u8]) -> Result<Vec<OutRecord>> {
    let count = take_u64(input)? as usize;
    let mut records = Vec::with_capacity(count.min(1 << 20));
    for _ in 0..count {
        let key_len = take_u32(input)?;
        let key = if key_len == u32::MAX {
            None
        } else {
            Some(take(input, key_len as usize)?.to_vec())
        };
        let value_len = take_u32(input)?;
        let value = if value_len == u32::MAX {
            None
        } else {
            Some(take(input, value_len as usize)?.to_vec())
        };
        let timestamp = i64::from_le_bytes(take(input, 8)?.try_into().map_err(|_| truncated())?);
        records.push(OutRecord {
            key,
            value,
            timestamp: (timestamp != i64::MIN).then_some(timestamp),
        });
    }
    Ok(records)
}

fn truncated() -> Error {
    Error::Connector {
        connector: "kafka".into(),
        message: "the checkpointed sink state is truncated".into(),
    }
}

/// The first `n` bytes of `input`, advancing it.
pub fn take<'a>(input: &mut &'a [u8], n: usize) -> Result<&'a [u8]> {
    if input.len() < n {
        return Err(truncated());
    }
    let (head, tail) = input.split_at(n);
    *input = tail;
    Ok(head)
}

fn take_u32(input: &mut &[u8]) -> Result<u32> {
    Ok(u32::from_le_bytes(
        take(input, 4)?.try_into().map_err(|_| truncated())?,
    ))
}

/// A little-endian u64 from the front of `input`.
pub fn take_u64(input: &mut &[u8]) -> Result<u64> {
    Ok(u64::from_le_bytes(
        take(input, 8)?.try_into().map_err(|_| truncated())?,
    ))
}
