//! Ranked rows as state: a Top-N partition evicted to RocksDB, and the
//! keyed checkpoint state of ranked rows shared with the window Top-N.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{AsArray, RecordBatch, UInt64Array};
use arrow::datatypes::{SchemaRef, UInt64Type};
use arrow::row::RowConverter;

use super::{RankKey, Ranked};
use crate::error::{Error, Result};
use crate::operator::OperatorContext;
use crate::operator::evictable::{EvictableValue, corrupt};
use crate::operator::snapshot::{KeyedStateBuilder, decode_batches};

/// A partition's rows, evicted: their count, then per row its order key,
/// arrival and encoded row, each byte string after its length (u32 BE).
impl EvictableValue for Ranked {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&(self.len() as u32).to_be_bytes());
        for ((order, arrival), row) in self {
            out.extend_from_slice(&(order.len() as u32).to_be_bytes());
            out.extend_from_slice(order);
            out.extend_from_slice(&arrival.to_be_bytes());
            out.extend_from_slice(&(row.len() as u32).to_be_bytes());
            out.extend_from_slice(row);
        }
    }

    fn decode(mut bytes: &[u8]) -> Result<Self> {
        fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Result<&'a [u8]> {
            let (head, tail) = bytes
                .split_at_checked(n)
                .ok_or_else(|| corrupt("a Top-N partition is truncated"))?;
            *bytes = tail;
            Ok(head)
        }
        fn u32_of(bytes: &mut &[u8]) -> Result<usize> {
            let b = take(bytes, 4)?;
            Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
        }
        let count = u32_of(&mut bytes)?;
        let mut ranked = Ranked::new();
        for _ in 0..count {
            let len = u32_of(&mut bytes)?;
            let order = take(&mut bytes, len)?.to_vec();
            let mut arrival = [0u8; 8];
            arrival.copy_from_slice(take(&mut bytes, 8)?);
            let len = u32_of(&mut bytes)?;
            let row = take(&mut bytes, len)?.to_vec();
            ranked.insert((order, u64::from_be_bytes(arrival)), row);
        }
        if !bytes.is_empty() {
            return Err(corrupt("a Top-N partition has trailing bytes"));
        }
        Ok(ranked)
    }

    /// Estimated from the first and last rows, since it is asked after
    /// every batch that touches the partition, which over an updating input
    /// may hold any number of rows.
    fn heap_size(&self) -> usize {
        // Per row: its two byte strings, the arrival, the B-tree's share.
        let size = |((order, _), row): (&RankKey, &Vec<u8>)| order.len() + row.len() + 64;
        match (self.first_key_value(), self.last_key_value()) {
            (Some(first), Some(last)) => self.len() * (size(first) + size(last)) / 2,
            _ => 0,
        }
    }
}

/// The keyed state of ranked rows (a Top-N's partitions, a window Top-N's
/// windows): per row, its columns and its arrival number, by the key group
/// of `key_columns`. [`decode_ranked_rows`] reads it back.
pub(in crate::operator) fn ranked_rows_state<'a>(
    rows: &RowConverter,
    ranked: impl Iterator<Item = &'a Ranked>,
    key_columns: &[usize],
    ctx: &OperatorContext,
) -> Result<BTreeMap<crate::partition::KeyGroup, Vec<u8>>> {
    let mut builder = KeyedStateBuilder::default();
    let entries: Vec<(&RankKey, &Vec<u8>)> = ranked.flat_map(|r| r.iter()).collect();
    if !entries.is_empty() {
        let parser = rows.parser();
        let mut columns = rows.convert_rows(entries.iter().map(|(_, row)| parser.parse(row)))?;
        columns.push(Arc::new(UInt64Array::from_iter_values(
            entries.iter().map(|((_, arrival), _)| *arrival),
        )));
        builder.add_rows(
            &columns,
            key_columns,
            entries.len(),
            ctx.task.max_key_groups,
        )?;
    }
    builder.finish()
}

/// The rows of `schema` and their arrival numbers in one key group's
/// [`ranked_rows_state`].
pub(in crate::operator) fn decode_ranked_rows(
    bytes: &[u8],
    schema: &SchemaRef,
) -> Result<Vec<(RecordBatch, UInt64Array)>> {
    let width = schema.fields().len();
    decode_batches(bytes)?
        .into_iter()
        .map(|(columns, rows)| {
            if columns.len() != width + 1 {
                return Err(Error::internal(format!(
                    "checkpointed ranked rows have {} columns, expected {}",
                    columns.len(),
                    width + 1
                )));
            }
            let arrivals = columns[width]
                .as_primitive_opt::<UInt64Type>()
                .ok_or_else(|| Error::internal("checkpointed ranked rows lack arrivals"))?
                .clone();
            let batch = RecordBatch::try_new_with_options(
                Arc::clone(schema),
                columns[..width].to_vec(),
                &arrow::array::RecordBatchOptions::new().with_row_count(Some(rows)),
            )?;
            Ok((batch, arrivals))
        })
        .collect()
}
