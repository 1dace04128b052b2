//! What operators write into a checkpoint and read back on restore.
//!
//! Keyed state is stored per key group, so a restore at a different
//! parallelism hands every key group to the subtask that owns it now.
//! Operator (non-keyed) state is stored per subtask: source positions, a
//! sink's pending commits, a watermark.

use std::io::Cursor;
use std::sync::Arc;

use arrow::array::ArrayRef;
use arrow::datatypes::{Field, Schema};
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use arrow::record_batch::{RecordBatch, RecordBatchOptions};

use crate::error::{Error, Result};
use crate::message::Watermark;
use crate::partition::KeyGroup;

/// One operator subtask's contribution to a checkpoint.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct OperatorSnapshot {
    /// Per key group: its state, or `None` when the key group holds none.
    pub keyed: Vec<(KeyGroup, Option<Vec<u8>>)>,
    /// The subtask's non-keyed state.
    pub operator: Option<Vec<u8>>,
}

impl OperatorSnapshot {
    /// Bytes of state written.
    pub fn bytes(&self) -> usize {
        self.keyed
            .iter()
            .filter_map(|(_, v)| v.as_ref().map(Vec::len))
            .sum::<usize>()
            + self.operator.as_ref().map_or(0, Vec::len)
    }

    /// Writes `state` for every key group of `range` that has some, and a
    /// delete for every other key group of the range.
    pub fn put_key_groups(
        &mut self,
        range: std::ops::Range<KeyGroup>,
        mut state: std::collections::BTreeMap<KeyGroup, Vec<u8>>,
    ) -> Result<()> {
        for kg in range.clone() {
            self.keyed.push((kg, state.remove(&kg)));
        }
        // The shuffle routes a key only to the subtask owning its key group:
        // state elsewhere means the operator hashed other columns than the
        // shuffle did, and a restore would lose it.
        match state.keys().next() {
            None => Ok(()),
            Some(kg) => Err(Error::internal(format!(
                "keyed state in key group {kg}, outside this subtask's key groups {range:?}"
            ))),
        }
    }
}

/// State handed to an operator subtask on restore.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct OperatorRestore {
    /// Keyed state of the key groups this subtask owns, by key group.
    pub keyed: Vec<(KeyGroup, Vec<u8>)>,
    /// Operator state of the old subtasks assigned to this one, by old subtask.
    pub operator: Vec<(u32, Vec<u8>)>,
}

impl OperatorRestore {
    /// True when the checkpoint held nothing for the subtask.
    pub fn is_empty(&self) -> bool {
        self.keyed.is_empty() && self.operator.is_empty()
    }
}

/// Encodes columns as one Arrow IPC stream (column names are positional).
pub fn encode_batch(columns: Vec<ArrayRef>, num_rows: usize) -> Result<Vec<u8>> {
    let fields: Vec<Field> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| Field::new(format!("c{i}"), c.data_type().clone(), true))
        .collect();
    let batch = RecordBatch::try_new_with_options(
        Arc::new(Schema::new(fields)),
        columns,
        &RecordBatchOptions::new().with_row_count(Some(num_rows)),
    )?;
    let mut buffer = Vec::new();
    {
        let mut writer = StreamWriter::try_new(&mut buffer, &batch.schema())?;
        writer.write(&batch)?;
        writer.finish()?;
    }
    Ok(buffer)
}

/// Decodes what [`encode_batch`] wrote, as column lists with their row counts.
pub fn decode_batches(bytes: &[u8]) -> Result<Vec<(Vec<ArrayRef>, usize)>> {
    let reader = StreamReader::try_new(Cursor::new(bytes), None)
        .map_err(|e| Error::internal(format!("checkpointed state is unreadable: {e}")))?;
    reader
        .map(|batch| {
            let batch = batch
                .map_err(|e| Error::internal(format!("checkpointed state is unreadable: {e}")))?;
            let rows = batch.num_rows();
            Ok((batch.columns().to_vec(), rows))
        })
        .collect()
}

/// Encodes a watermark as operator state.
pub fn encode_watermark(watermark: Watermark) -> Vec<u8> {
    watermark.0.to_be_bytes().to_vec()
}

/// The smallest watermark among restored operator-state entries (several
/// when subtasks were merged); `MIN` when there are none.
pub fn decode_watermark(entries: &[(u32, Vec<u8>)]) -> Result<Watermark> {
    let mut min: Option<i64> = None;
    for (_, bytes) in entries {
        let array: [u8; 8] = bytes.as_slice().try_into().map_err(|_| {
            Error::internal(format!(
                "checkpointed watermark has {} bytes, expected 8",
                bytes.len()
            ))
        })?;
        let w = i64::from_be_bytes(array);
        min = Some(min.map_or(w, |m| m.min(w)));
    }
    Ok(Watermark(min.unwrap_or(i64::MIN)))
}

/// Collects keyed state rows by key group and encodes one Arrow IPC blob per
/// key group. Every added part must have the same column types.
#[derive(Debug, Default)]
pub struct KeyedStateBuilder {
    parts: std::collections::BTreeMap<KeyGroup, Vec<Vec<ArrayRef>>>,
}

impl KeyedStateBuilder {
    /// Adds `num_rows` rows; `key_columns` (indices into `columns`) are the
    /// columns the job's shuffle hashes to route the rows' keys.
    pub fn add_rows(
        &mut self,
        columns: &[ArrayRef],
        key_columns: &[usize],
        num_rows: usize,
        max_key_groups: u32,
    ) -> Result<()> {
        let rows = rows_by_key_group(columns, key_columns, num_rows, max_key_groups)?;
        let single = rows.len() == 1;
        for (kg, indices) in rows {
            let part = if single {
                columns.to_vec()
            } else {
                take_rows(columns, indices)?
            };
            self.parts.entry(kg).or_default().push(part);
        }
        Ok(())
    }

    /// One encoded blob per key group that received rows.
    pub fn finish(self) -> Result<std::collections::BTreeMap<KeyGroup, Vec<u8>>> {
        let mut out = std::collections::BTreeMap::new();
        for (kg, parts) in self.parts {
            let width = parts.first().map_or(0, Vec::len);
            let mut columns = Vec::with_capacity(width);
            for c in 0..width {
                let arrays: Vec<&dyn arrow::array::Array> =
                    parts.iter().map(|p| p[c].as_ref()).collect();
                columns.push(arrow::compute::concat(&arrays)?);
            }
            let rows = columns.first().map_or(0, |c| c.len());
            out.insert(kg, encode_batch(columns, rows)?);
        }
        Ok(out)
    }
}

/// The rows of each key group: `key_columns` (indices into `columns`) are
/// the columns the job's shuffle hashes to route the rows' keys.
pub(crate) fn rows_by_key_group(
    columns: &[ArrayRef],
    key_columns: &[usize],
    num_rows: usize,
    max_key_groups: u32,
) -> Result<std::collections::BTreeMap<KeyGroup, Vec<u32>>> {
    let mut rows: std::collections::BTreeMap<KeyGroup, Vec<u32>> = Default::default();
    if num_rows == 0 {
        return Ok(rows);
    }
    let keys: Vec<ArrayRef> = key_columns
        .iter()
        .map(|&i| Arc::clone(&columns[i]))
        .collect();
    let hashes = crate::partition::hash_keys(&keys, num_rows)?;
    for (row, hash) in hashes.into_iter().enumerate() {
        rows.entry(crate::partition::key_group_of(hash, max_key_groups))
            .or_default()
            .push(row as u32);
    }
    Ok(rows)
}

/// The rows at `indices` of every column.
pub(crate) fn take_rows(columns: &[ArrayRef], indices: Vec<u32>) -> Result<Vec<ArrayRef>> {
    let indices = arrow::array::UInt32Array::from(indices);
    columns
        .iter()
        .map(|c| Ok(arrow::compute::take(c.as_ref(), &indices, None)?))
        .collect()
}
