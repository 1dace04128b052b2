//! Hash partitioning through key groups.
//!
//! A key hashes to one of `max_key_groups` key groups (128 by default), and
//! each subtask of a keyed operator owns a contiguous range of key groups, as
//! in Flink. The key group, not the subtask, is the unit that keyed state is
//! organised by, so a rescale moves whole key groups between subtasks.
//!
//! The hash is computed by Weir itself (not `ahash`), so every process on
//! every machine routes a key to the same key group.

use std::ops::Range;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, RecordBatch, UInt32Array};
use arrow::compute::take_record_batch;
use arrow::datatypes::{
    ArrowPrimitiveType, DataType, Date32Type, Date64Type, Decimal128Type, Float32Type, Float64Type,
    Int8Type, Int16Type, Int32Type, Int64Type, TimeUnit, TimestampMicrosecondType,
    TimestampMillisecondType, TimestampNanosecondType, TimestampSecondType, UInt8Type, UInt16Type,
    UInt32Type, UInt64Type,
};
use arrow::row::{RowConverter, SortField};

use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::ColumnarValue;

use crate::error::Result;

/// The default number of key groups of a job.
pub const DEFAULT_MAX_KEY_GROUPS: u32 = 128;

/// A key group: the unit of keyed-state redistribution.
pub type KeyGroup = u32;

/// The key group a key hash falls into.
pub fn key_group_of(hash: u64, max_key_groups: u32) -> KeyGroup {
    (hash % u64::from(max_key_groups.max(1))) as KeyGroup
}

/// The subtask that owns `key_group` when the operator runs with `parallelism`.
pub fn subtask_of_key_group(key_group: KeyGroup, max_key_groups: u32, parallelism: usize) -> usize {
    (key_group as usize * parallelism) / max_key_groups.max(1) as usize
}

/// The key groups one subtask owns.
pub fn key_group_range(subtask: usize, max_key_groups: u32, parallelism: usize) -> Range<KeyGroup> {
    let max = max_key_groups as usize;
    let p = parallelism.max(1);
    let start = (subtask * max).div_ceil(p);
    let end = ((subtask + 1) * max).div_ceil(p);
    start as KeyGroup..end as KeyGroup
}

const SEED: u64 = 0x9e37_79b9_7f4a_7c15;

#[inline]
fn mix(mut x: u64) -> u64 {
    // The murmur3 / splitmix64 finaliser: full avalanche, cheap.
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

#[inline]
fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut h = SEED ^ (bytes.len() as u64);
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        h = mix(h ^ u64::from_le_bytes(w));
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut w = [0u8; 8];
        w[..rest.len()].copy_from_slice(rest);
        h = mix(h ^ u64::from_le_bytes(w) ^ 0xff);
    }
    h
}

#[inline]
fn combine(acc: u64, value: u64) -> u64 {
    mix(acc.rotate_left(17) ^ value)
}

const NULL_HASH: u64 = 0x5bd1_e995_1234_5678;

fn hash_primitive<T: ArrowPrimitiveType>(
    col: &ArrayRef,
    hashes: &mut [u64],
    to_u64: impl Fn(T::Native) -> u64,
) {
    let arr = col.as_primitive::<T>();
    if arr.null_count() == 0 {
        for (h, v) in hashes.iter_mut().zip(arr.values().iter()) {
            *h = combine(*h, mix(to_u64(*v) ^ SEED));
        }
    } else {
        for (i, h) in hashes.iter_mut().enumerate() {
            let v = if arr.is_null(i) {
                NULL_HASH
            } else {
                mix(to_u64(arr.value(i)) ^ SEED)
            };
            *h = combine(*h, v);
        }
    }
}

fn hash_column(col: &ArrayRef, hashes: &mut [u64]) -> Result<()> {
    match col.data_type() {
        DataType::Int8 => hash_primitive::<Int8Type>(col, hashes, |v| v as u64),
        DataType::Int16 => hash_primitive::<Int16Type>(col, hashes, |v| v as u64),
        DataType::Int32 => hash_primitive::<Int32Type>(col, hashes, |v| v as u64),
        DataType::Int64 => hash_primitive::<Int64Type>(col, hashes, |v| v as u64),
        DataType::UInt8 => hash_primitive::<UInt8Type>(col, hashes, u64::from),
        DataType::UInt16 => hash_primitive::<UInt16Type>(col, hashes, u64::from),
        DataType::UInt32 => hash_primitive::<UInt32Type>(col, hashes, u64::from),
        DataType::UInt64 => hash_primitive::<UInt64Type>(col, hashes, |v| v),
        DataType::Float32 => hash_primitive::<Float32Type>(col, hashes, |v| {
            // -0.0 and 0.0 are equal keys.
            if v == 0.0 { 0 } else { u64::from(v.to_bits()) }
        }),
        DataType::Float64 => {
            hash_primitive::<Float64Type>(col, hashes, |v| if v == 0.0 { 0 } else { v.to_bits() })
        }
        DataType::Date32 => hash_primitive::<Date32Type>(col, hashes, |v| v as u64),
        DataType::Date64 => hash_primitive::<Date64Type>(col, hashes, |v| v as u64),
        DataType::Decimal128(_, _) => {
            hash_primitive::<Decimal128Type>(col, hashes, |v| (v as u64) ^ ((v >> 64) as u64))
        }
        DataType::Timestamp(TimeUnit::Second, _) => {
            hash_primitive::<TimestampSecondType>(col, hashes, |v| v as u64)
        }
        DataType::Timestamp(TimeUnit::Millisecond, _) => {
            hash_primitive::<TimestampMillisecondType>(col, hashes, |v| v as u64)
        }
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            hash_primitive::<TimestampMicrosecondType>(col, hashes, |v| v as u64)
        }
        DataType::Timestamp(TimeUnit::Nanosecond, _) => {
            hash_primitive::<TimestampNanosecondType>(col, hashes, |v| v as u64)
        }
        DataType::Boolean => {
            let arr: &BooleanArray = col.as_boolean();
            for (i, h) in hashes.iter_mut().enumerate() {
                let v = if arr.is_null(i) {
                    NULL_HASH
                } else {
                    mix(u64::from(arr.value(i)) ^ SEED)
                };
                *h = combine(*h, v);
            }
        }
        DataType::Utf8 => hash_strings(col.as_string::<i32>().iter(), hashes),
        DataType::LargeUtf8 => hash_strings(col.as_string::<i64>().iter(), hashes),
        DataType::Utf8View => hash_strings(col.as_string_view().iter(), hashes),
        _ => {
            // Anything else: hash its row-format encoding, which is canonical.
            let converter = RowConverter::new(vec![SortField::new(col.data_type().clone())])?;
            let rows = converter.convert_columns(std::slice::from_ref(col))?;
            for (h, row) in hashes.iter_mut().zip(rows.iter()) {
                *h = combine(*h, hash_bytes(row.as_ref()));
            }
        }
    }
    Ok(())
}

fn hash_strings<'a>(values: impl Iterator<Item = Option<&'a str>>, hashes: &mut [u64]) {
    for (h, v) in hashes.iter_mut().zip(values) {
        let v = v.map_or(NULL_HASH, |s| hash_bytes(s.as_bytes()));
        *h = combine(*h, v);
    }
}

/// Hashes the key columns of every row; the same key gives the same hash in
/// every process.
pub fn hash_keys(columns: &[ArrayRef], num_rows: usize) -> Result<Vec<u64>> {
    let mut hashes = vec![SEED; num_rows];
    for col in columns {
        hash_column(col, &mut hashes)?;
    }
    Ok(hashes)
}

/// Splits a batch by destination subtask of a keyed operator.
///
/// Returns `(subtask, rows)` pairs, skipping subtasks that get no rows.
pub fn partition_by_keys(
    batch: &RecordBatch,
    key_columns: &[usize],
    max_key_groups: u32,
    parallelism: usize,
) -> Result<Vec<(usize, RecordBatch)>> {
    if parallelism <= 1 {
        return Ok(vec![(0, batch.clone())]);
    }
    let keys: Vec<ArrayRef> = key_columns
        .iter()
        .map(|&i| Arc::clone(batch.column(i)))
        .collect();
    let hashes = hash_keys(&keys, batch.num_rows())?;
    let dest: Vec<usize> = hashes
        .iter()
        .map(|&h| {
            subtask_of_key_group(key_group_of(h, max_key_groups), max_key_groups, parallelism)
        })
        .collect();
    split_by_destination(batch, &dest, parallelism)
}

/// Splits a batch given each row's destination.
pub fn split_by_destination(
    batch: &RecordBatch,
    dest: &[usize],
    destinations: usize,
) -> Result<Vec<(usize, RecordBatch)>> {
    let mut counts = vec![0usize; destinations];
    for &d in dest {
        counts[d] += 1;
    }
    if let Some(only) = counts.iter().position(|&c| c == dest.len()) {
        return Ok(vec![(only, batch.clone())]);
    }
    let mut indices: Vec<Vec<u32>> = counts.iter().map(|&c| Vec::with_capacity(c)).collect();
    for (row, &d) in dest.iter().enumerate() {
        indices[d].push(row as u32);
    }
    let mut out = Vec::new();
    for (d, idx) in indices.into_iter().enumerate() {
        if idx.is_empty() {
            continue;
        }
        let idx = UInt32Array::from(idx);
        out.push((d, take_record_batch(batch, &idx)?));
    }
    Ok(out)
}

/// A row's hash bucket, `hash(columns) % buckets`, as an expression
/// (`UInt32`, never null): equal rows land in the same bucket in every
/// process. A Top-N without `PARTITION BY` over an updating input ranks
/// each bucket first, so that its final ranking holds at most `buckets × N`
/// rows rather than every row of the stream.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RowBucket {
    columns: Vec<datafusion::physical_expr::expressions::Column>,
    buckets: u32,
}

impl RowBucket {
    /// The bucket of the values of `columns`, one of `buckets` (at least 1).
    pub fn new(columns: Vec<datafusion::physical_expr::expressions::Column>, buckets: u32) -> Self {
        Self {
            columns,
            buckets: buckets.max(1),
        }
    }
}

impl std::fmt::Display for RowBucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let columns: Vec<&str> = self.columns.iter().map(|c| c.name()).collect();
        write!(f, "hash({}) % {}", columns.join(", "), self.buckets)
    }
}

impl datafusion::physical_expr::PhysicalExpr for RowBucket {
    fn data_type(&self, _input_schema: &arrow::datatypes::Schema) -> DfResult<DataType> {
        Ok(DataType::UInt32)
    }

    fn nullable(&self, _input_schema: &arrow::datatypes::Schema) -> DfResult<bool> {
        Ok(false)
    }

    fn evaluate(&self, batch: &RecordBatch) -> DfResult<ColumnarValue> {
        let mut columns = Vec::with_capacity(self.columns.len());
        for c in self.columns.iter().map(|c| c.index()) {
            let column = batch.columns().get(c).ok_or_else(|| {
                DataFusionError::Internal(format!(
                    "a row bucket reads column {c} of a batch of {}",
                    batch.num_columns()
                ))
            })?;
            columns.push(Arc::clone(column));
        }
        let hashes = hash_keys(&columns, batch.num_rows())
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        let buckets = u64::from(self.buckets);
        Ok(ColumnarValue::Array(Arc::new(
            UInt32Array::from_iter_values(hashes.into_iter().map(|h| (h % buckets) as u32)),
        )))
    }

    fn children(&self) -> Vec<&Arc<dyn datafusion::physical_expr::PhysicalExpr>> {
        Vec::new()
    }

    fn with_new_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn datafusion::physical_expr::PhysicalExpr>>,
    ) -> DfResult<Arc<dyn datafusion::physical_expr::PhysicalExpr>> {
        Ok(self)
    }

    fn fmt_sql(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};

    #[test]
    fn key_group_ranges_cover_all_groups_once() {
        for p in 1..=7 {
            let mut next = 0;
            for s in 0..p {
                let r = key_group_range(s, 128, p);
                assert_eq!(r.start, next);
                for kg in r.clone() {
                    assert_eq!(subtask_of_key_group(kg, 128, p), s);
                }
                next = r.end;
            }
            assert_eq!(next, 128);
        }
    }

    #[test]
    fn hashes_are_stable_and_keys_go_to_one_subtask() {
        let a: ArrayRef = Arc::new(Int64Array::from(vec![1, 2, 3, 1, 2, 3]));
        let b: ArrayRef = Arc::new(StringArray::from(vec!["x", "y", "z", "x", "y", "z"]));
        let h = hash_keys(&[Arc::clone(&a), Arc::clone(&b)], 6).unwrap();
        assert_eq!(h[0], h[3]);
        assert_eq!(h[1], h[4]);
        assert_ne!(h[0], h[1]);
        // A fixed value: the hash must never change between builds or machines.
        let one = hash_keys(&[Arc::new(Int64Array::from(vec![42])) as ArrayRef], 1).unwrap();
        assert_eq!(
            one[0],
            hash_keys(&[Arc::new(Int64Array::from(vec![42])) as ArrayRef], 1).unwrap()[0]
        );
        let batch = RecordBatch::try_from_iter(vec![("a", a), ("b", b)]).unwrap();
        let parts = partition_by_keys(&batch, &[0, 1], 128, 4).unwrap();
        let total: usize = parts.iter().map(|(_, b)| b.num_rows()).sum();
        assert_eq!(total, 6);
        for (_, part) in parts {
            assert_eq!(part.num_rows() % 2, 0, "equal keys travel together");
        }
    }

    #[test]
    fn row_buckets_put_equal_rows_together_and_stay_in_range() {
        use datafusion::physical_expr::PhysicalExpr;
        let a: ArrayRef = Arc::new(Int64Array::from_iter_values(0..1000));
        let b: ArrayRef = Arc::new(StringArray::from_iter_values(
            (0..1000).map(|i| (i % 7).to_string()),
        ));
        let batch = RecordBatch::try_from_iter([("a", a), ("b", b)]).unwrap();
        use datafusion::physical_expr::expressions::Column;
        let bucket = RowBucket::new(vec![Column::new("a", 0), Column::new("b", 1)], 16);
        let once = bucket.evaluate(&batch).unwrap().into_array(1000).unwrap();
        let twice = bucket.evaluate(&batch).unwrap().into_array(1000).unwrap();
        assert_eq!(&once, &twice);
        let buckets = once.as_primitive::<UInt32Type>();
        assert!(buckets.values().iter().all(|&b| b < 16));
        // A thousand rows spread over every bucket.
        let used: std::collections::HashSet<u32> = buckets.values().iter().copied().collect();
        assert_eq!(used.len(), 16);
        assert_eq!(bucket.to_string(), "hash(a, b) % 16");
    }
}
