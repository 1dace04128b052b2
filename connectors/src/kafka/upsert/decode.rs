//! Decoding upsert records: keys and values, each in its own format, into
//! one batch of an upsert stream (`+U` per value, `-D` per tombstone with
//! only the key columns set).
//!
//! The keys of a poll are decoded together by a [`RecordDecoder`] of the
//! key's fields, the values of the records that have one by another of the
//! value's fields; a record is good when its key decodes and its value is
//! null or decodes. Key columns come from the key (with `ALL`, the value's
//! copy of them is not read back).

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, UInt32Array};
use arrow::compute::take;
use arrow::datatypes::SchemaRef;
use weir_engine::changelog::{upsert_schema, with_row_kinds};
use weir_engine::{Error, Result, RowKind, TableDescriptor};

use super::UpsertOptions;
use crate::kafka::decode::{BadRecord, BatchDecoder, RecordBuffer, RecordDecoder};

/// Where an output column comes from.
#[derive(Debug, Clone, Copy)]
enum Column {
    /// This column of the decoded keys.
    Key(usize),
    /// This column of the decoded values.
    Value(usize),
}

/// Decodes upsert records for a source; see the module docs.
pub struct UpsertDecoder {
    keys: RecordDecoder,
    values: RecordDecoder,
    columns: Vec<Column>,
    schema: SchemaRef,
}

impl UpsertDecoder {
    /// A decoder of `table`'s `projection`, which must hold the key.
    pub fn new(
        options: &UpsertOptions,
        table: &TableDescriptor,
        projection: &[usize],
        max_record_bytes: usize,
    ) -> Result<Self> {
        let key_indices = table.primary_key_indices()?;
        let key_schema = options.key_schema(table)?;
        let value_indices = options.value_columns(table)?;
        let value_schema = Arc::new(table.schema.project(&value_indices)?);
        let side = |name: &str, schema: &SchemaRef| {
            TableDescriptor::new(
                format!("{} ({name})", table.name),
                Arc::clone(schema),
                table.options.clone(),
            )
        };
        let decoder = |name: &str, schema: &SchemaRef, format| {
            let side = side(name, schema);
            crate::kafka::decode::check_columns(&side, format)?;
            let all: Vec<usize> = (0..schema.fields().len()).collect();
            RecordDecoder::new(format.clone(), &side, &all, max_record_bytes)
        };
        let keys = decoder("key", &key_schema, &options.key_format)?;
        let values = decoder("value", &value_schema, &options.value_format)?;
        let columns = projection
            .iter()
            .map(|i| match key_indices.iter().position(|k| k == i) {
                Some(k) => Ok(Column::Key(k)),
                None => value_indices
                    .iter()
                    .position(|v| v == i)
                    .map(Column::Value)
                    .ok_or_else(|| Error::internal(format!("column {i} is in no value"))),
            })
            .collect::<Result<Vec<_>>>()?;
        let key_positions: Vec<usize> = projection
            .iter()
            .enumerate()
            .filter(|(_, i)| key_indices.contains(i))
            .map(|(p, _)| p)
            .collect();
        if key_positions.len() != key_indices.len() {
            return Err(Error::internal(format!(
                "table '{}': an upsert source must read every primary key column",
                table.name
            )));
        }
        let projected = Arc::new(table.schema.project(projection)?);
        Ok(UpsertDecoder {
            keys,
            values,
            columns,
            schema: upsert_schema(&projected, &key_positions),
        })
    }
}

/// The records of `records` at `indices`, with their keys (`keys`) or
/// values as the values to decode.
fn sub_buffer(records: &RecordBuffer, indices: &[usize], keys: bool) -> RecordBuffer {
    let mut out = RecordBuffer {
        topics: records.topics.clone(),
        ..RecordBuffer::default()
    };
    for &i in indices {
        out.topic_ids.push(records.topic_ids[i]);
        out.partitions.push(records.partitions[i]);
        out.offsets.push(records.offsets[i]);
        out.timestamps.push(records.timestamps[i]);
        out.keys.push(None);
        out.headers.push(None);
        let bytes = if keys {
            records.keys[i].as_deref()
        } else {
            records.value(i)
        };
        match bytes {
            Some(b) => {
                let start = out.values.len();
                out.values.extend_from_slice(b);
                out.spans.push(Some((start, out.values.len())));
            }
            None => out.spans.push(None),
        }
    }
    out
}

/// Decodes `indices` of `records` (keys or values) with `decoder`: per
/// record, its row in the batch, or `None` with the reason in `bad`.
fn decode_side(
    decoder: &mut RecordDecoder,
    records: &RecordBuffer,
    indices: &[usize],
    keys: bool,
    bad: &mut Vec<BadRecord>,
) -> Result<(RecordBatch, Vec<Option<u32>>)> {
    let buffer = sub_buffer(records, indices, keys);
    let (batch, side_bad) = decoder.decode(&buffer)?;
    let mut rows = vec![Some(0); indices.len()];
    for b in side_bad {
        rows[b.index] = None;
        bad.push(BadRecord {
            index: indices[b.index],
            reason: format!("{}: {}", if keys { "key" } else { "value" }, b.reason),
        });
    }
    let mut next = 0;
    for row in rows.iter_mut().flatten() {
        *row = next;
        next += 1;
    }
    if next as usize != batch.num_rows() {
        return Err(Error::internal(format!(
            "{} records decoded to {} rows",
            next,
            batch.num_rows()
        )));
    }
    Ok((batch, rows))
}

impl BatchDecoder for UpsertDecoder {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn needs_keys(&self) -> bool {
        true
    }

    fn needs_headers(&self) -> bool {
        false
    }

    fn decode(&mut self, records: &RecordBuffer) -> Result<(RecordBatch, Vec<BadRecord>)> {
        let mut bad = Vec::new();
        let mut keyed = Vec::with_capacity(records.len());
        for i in 0..records.len() {
            if records.keys[i].is_some() {
                keyed.push(i);
            } else {
                bad.push(BadRecord {
                    index: i,
                    reason: "the record has no key; upsert-kafka records are keyed".into(),
                });
            }
        }
        let (key_batch, key_rows) = decode_side(&mut self.keys, records, &keyed, true, &mut bad)?;
        let with_value: Vec<usize> = keyed
            .iter()
            .copied()
            .filter(|&i| records.spans[i].is_some())
            .collect();
        let (value_batch, value_rows) =
            decode_side(&mut self.values, records, &with_value, false, &mut bad)?;
        // Per good record, in order: its key row, and its value row (none for a tombstone).
        let mut key_take = Vec::with_capacity(keyed.len());
        let mut value_take: Vec<Option<u32>> = Vec::with_capacity(keyed.len());
        let mut kinds = Vec::with_capacity(keyed.len());
        let mut next_value = 0;
        for (&i, key_row) in keyed.iter().zip(&key_rows) {
            let value = if with_value.get(next_value) == Some(&i) {
                next_value += 1;
                Some(value_rows[next_value - 1])
            } else {
                None
            };
            let Some(key_row) = key_row else {
                continue;
            };
            match value {
                // A tombstone.
                None => {
                    key_take.push(*key_row);
                    value_take.push(None);
                    kinds.push(RowKind::Delete);
                }
                Some(Some(value_row)) => {
                    key_take.push(*key_row);
                    value_take.push(Some(value_row));
                    kinds.push(RowKind::UpdateAfter);
                }
                // The value is bad.
                Some(None) => {}
            }
        }
        bad.sort_by_key(|b| b.index);
        let key_take = UInt32Array::from(key_take);
        let value_take = UInt32Array::from(value_take);
        let columns = self
            .columns
            .iter()
            .map(|column| -> Result<ArrayRef> {
                Ok(match column {
                    Column::Key(k) => take(key_batch.column(*k).as_ref(), &key_take, None)?,
                    Column::Value(v) => take(value_batch.column(*v).as_ref(), &value_take, None)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let batch = with_row_kinds(&self.schema, columns, kinds)?;
        Ok((batch, bad))
    }
}
