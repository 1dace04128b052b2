//! Window Top-N: `ROW_NUMBER()` (or `RANK()`, `DENSE_RANK()`) `OVER
//! (PARTITION BY window_start, window_end, … ORDER BY …)` filtered to
//! `rn <= N`, over the rows of a window table function or the output of a
//! window aggregate, as Flink's `WindowRank`.
//!
//! Rows are buffered per window (by its end) and partition; each partition
//! keeps only its best `N` rows (the input is append-only, so a row pushed
//! out can never come back). When the watermark reaches a window's last
//! millisecond (`window_end - 1`, as window aggregates fire), its rows are
//! emitted once, in rank order with their rank, and its state is dropped:
//! the output is append-only. Rows for a window that has fired are late:
//! counted, and dropped or, with a late-rows output, emitted there.
//!
//! Over a window aggregate this fires after the aggregate's rows: the
//! aggregate emits a window's rows before it forwards the watermark that
//! fired it, and this operator's watermark is the least of its inputs'.
//!
//! # State larger than memory
//!
//! The state is one map keyed by `[window end][partition key]` (the end
//! encoded so that bytes order as numbers): a window's partitions are one
//! contiguous range, and the windows due when the watermark passes their
//! end are a prefix of the map. Past the operator's memory budget the least
//! recently touched (window, partition) keys are evicted to RocksDB through
//! [`super::evictable::EvictableKeys`], each under the key group of its
//! partition key (what the shuffle hashes), so a restore at another
//! parallelism copies them to the subtask that now owns the partition.
//!
//! - A row of an evicted key loads it back before it is ranked: only keys
//!   of a window that has evicted keys are looked for, and such windows are
//!   kept in a small in-memory index (`evicted_ends`, their ends).
//! - When the watermark passes the end of a window in that index, the
//!   evicted keys of every due window are read back in one pass over the
//!   store that seeks past the keys of later windows
//!   ([`crate::state::JobStore::for_each_evicted_group_below`]), and fire
//!   with the ones in memory.
//! - A checkpoint writes the keys in memory as keyed state; the evicted ones
//!   are in the RocksDB snapshot. After a restore the index is rebuilt from
//!   the evicted keys the restore copied into the store.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, RecordBatch, UInt64Array};
use arrow::datatypes::{Field, Schema, SchemaRef};
use arrow::row::{RowConverter, Rows, SortField};
use async_trait::async_trait;
use datafusion::physical_expr::PhysicalSortExpr;

use super::evictable::{EvictableKeys, EvictableValue, KeyGroupsOf};
use super::late_rows::LateRows;
use super::session_spill::key_groups_of;
use super::snapshot::{OperatorRestore, OperatorSnapshot, take_rows};
use super::top_n::{
    RankKey, Ranked, decode_ranked_rows, order_converter, order_label, rank_numbers,
    ranked_rows_state,
};
use super::{Collector, Operator, OperatorContext, OperatorFactory, RankFunction, TaskInfo};
use crate::error::{Error, Result};
use crate::message::Watermark;
use crate::partition::KeyGroup;
use crate::time::to_epoch_millis;

/// Creates [`WindowTopNOperator`]s.
#[derive(Debug, Clone)]
pub struct WindowTopNFactory {
    input_schema: SchemaRef,
    /// The input column holding the window's end (or its start or
    /// `window_time`, then `end_offset_ms` is what to add to get the end).
    window_column: usize,
    end_offset_ms: i64,
    /// The other partition columns (what the shuffle hashes).
    partition_columns: Vec<usize>,
    order: Vec<PhysicalSortExpr>,
    limit: usize,
    function: RankFunction,
    late_rows: bool,
    output_schema: SchemaRef,
}

impl WindowTopNFactory {
    /// The best `limit` rows by `order` per window and partition. The
    /// window is told by `window_column` plus `end_offset_ms`; the output
    /// is the input's columns, then the rank (`rank_field`, an unsigned
    /// 64-bit integer), append-only.
    pub fn new(
        input_schema: SchemaRef,
        window_column: usize,
        end_offset_ms: i64,
        partition_columns: Vec<usize>,
        order: Vec<PhysicalSortExpr>,
        limit: usize,
        rank_field: Field,
    ) -> Result<Self> {
        if limit == 0 {
            return Err(Error::Config("a Top-N must keep at least one row".into()));
        }
        let columns = input_schema.fields().len();
        if let Some(c) = partition_columns
            .iter()
            .chain([&window_column])
            .find(|&&c| c >= columns)
        {
            return Err(Error::internal(format!(
                "window Top-N column {c} is outside its input's {columns} columns"
            )));
        }
        let mut fields: Vec<Field> = input_schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        fields.push(rank_field.with_nullable(false));
        Ok(Self {
            output_schema: Arc::new(Schema::new(fields)),
            input_schema,
            window_column,
            end_offset_ms,
            partition_columns,
            order,
            limit,
            function: RankFunction::RowNumber,
            late_rows: false,
        })
    }

    /// Numbers rows with `function` (`ROW_NUMBER` by default); with ties,
    /// `RANK` and `DENSE_RANK` may keep more than `N` rows.
    pub fn with_rank_function(mut self, function: RankFunction) -> Self {
        self.function = function;
        self
    }

    /// Emits late rows on the late-rows output instead of dropping them.
    pub fn with_late_rows(mut self) -> Self {
        self.late_rows = true;
        self
    }
}

impl fmt::Display for WindowTopNFactory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = |c: usize| self.input_schema.field(c).name().as_str();
        write!(
            f,
            "WindowTopN: window={}, partition_by=[{}], order_by=[{}], n={}",
            name(self.window_column),
            self.partition_columns
                .iter()
                .map(|&c| name(c))
                .collect::<Vec<_>>()
                .join(", "),
            order_label(&self.order),
            self.limit
        )?;
        if self.function != RankFunction::RowNumber {
            write!(f, ", {:?}", self.function)?;
        }
        Ok(())
    }
}

impl OperatorFactory for WindowTopNFactory {
    fn name(&self) -> &str {
        "WindowTopN"
    }
    fn output_schema(&self) -> SchemaRef {
        Arc::clone(&self.output_schema)
    }
    fn create(&self, _task: &TaskInfo) -> Result<Box<dyn Operator>> {
        Ok(Box::new(WindowTopNOperator::new(self.clone())?))
    }
}

/// Bytes of the window end at the start of every state key.
const END_LEN: usize = 8;

/// The state key prefix of the windows ending at `end`: its bytes order as
/// the ends do.
fn end_prefix(end: i64) -> [u8; END_LEN] {
    ((end as u64) ^ (1 << 63)).to_be_bytes()
}

/// The window end a state key starts with.
fn end_of(key: &[u8]) -> Result<i64> {
    let bytes: [u8; END_LEN] = key
        .get(..END_LEN)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| Error::internal("a window Top-N state key without its window end"))?;
    Ok((u64::from_be_bytes(bytes) ^ (1 << 63)) as i64)
}

/// The state key of one window's partition.
fn state_key(end: i64, partition: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(END_LEN + partition.len());
    key.extend_from_slice(&end_prefix(end));
    key.extend_from_slice(partition);
    key
}

/// The key groups of state keys: those of their partition keys, hashed as
/// the shuffle in front of the operator hashes the partition columns.
#[derive(Debug)]
struct WindowKeys {
    /// Encodes the partition columns (the tail of a state key).
    partitions: RowConverter,
    /// No `PARTITION BY` besides the window: one key per window.
    unpartitioned: bool,
}

impl KeyGroupsOf for WindowKeys {
    fn key_groups_of(&self, keys: &[&[u8]], max_key_groups: u32) -> Result<Vec<KeyGroup>> {
        if self.unpartitioned {
            return key_groups_of(&[], true, keys.len(), max_key_groups);
        }
        let partitions = keys
            .iter()
            .map(|k| {
                k.get(END_LEN..).ok_or_else(|| {
                    Error::internal("a window Top-N state key without its window end")
                })
            })
            .collect::<Result<Vec<_>>>()?;
        self.partitions.key_groups_of(&partitions, max_key_groups)
    }
}

/// A batch's rows encoded for the state: their window ends, partition
/// keys, order keys and rows.
struct Encoded {
    /// Each row's window end; `None` when its window column is null.
    ends: Vec<Option<i64>>,
    /// `None` without partition columns.
    partitions: Option<Rows>,
    order: Rows,
    data: Rows,
}

impl Encoded {
    /// The state key of `row`, in the window ending at `end`.
    fn key(&self, row: usize, end: i64) -> Vec<u8> {
        let partition = self
            .partitions
            .as_ref()
            .map_or(&[][..], |p| p.row(row).data());
        state_key(end, partition)
    }
}

/// Keeps the top `N` rows per window and partition; see the module docs.
pub struct WindowTopNOperator {
    spec: WindowTopNFactory,
    keys: WindowKeys,
    order_keys: RowConverter,
    rows: RowConverter,
    /// The best rows of each open window's partitions in memory, by state
    /// key (window end, then partition key).
    state: BTreeMap<Vec<u8>, Ranked>,
    /// The ends of the open windows that may have evicted keys.
    evicted_ends: BTreeSet<i64>,
    /// When each key was last touched, its size; eviction past the budget.
    keyed: EvictableKeys,
    watermark: Watermark,
    /// Rows seen, numbering arrivals (ties rank in arrival order).
    arrivals: u64,
    late_rows: Option<LateRows>,
}

impl fmt::Debug for WindowTopNOperator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WindowTopNOperator")
            .field("keys", &self.state.len())
            .field("evicted_ends", &self.evicted_ends.len())
            .field("watermark", &self.watermark)
            .finish()
    }
}

impl WindowTopNOperator {
    fn new(spec: WindowTopNFactory) -> Result<Self> {
        let schema = &spec.input_schema;
        let sort_field = |c: usize| SortField::new(schema.field(c).data_type().clone());
        let keys = WindowKeys {
            partitions: RowConverter::new(
                spec.partition_columns
                    .iter()
                    .map(|&c| sort_field(c))
                    .collect(),
            )?,
            unpartitioned: spec.partition_columns.is_empty(),
        };
        let order_keys = order_converter(&spec.order, schema)?;
        let rows = RowConverter::new((0..schema.fields().len()).map(sort_field).collect())?;
        let late_rows = spec.late_rows.then(|| LateRows::new(schema));
        Ok(Self {
            spec,
            keys,
            order_keys,
            rows,
            state: BTreeMap::new(),
            evicted_ends: BTreeSet::new(),
            // Windows end by the watermark, not by a TTL.
            keyed: EvictableKeys::new(None),
            watermark: Watermark::MIN,
            arrivals: 0,
            late_rows,
        })
    }

    fn partition_columns(&self, batch: &RecordBatch) -> Vec<ArrayRef> {
        self.spec
            .partition_columns
            .iter()
            .map(|&c| Arc::clone(batch.column(c)))
            .collect()
    }

    fn encode(&self, batch: &RecordBatch) -> Result<Encoded> {
        let ends = to_epoch_millis(batch.column(self.spec.window_column))?;
        let offset = self.spec.end_offset_ms;
        let ends = (0..batch.num_rows())
            .map(|row| {
                ends.is_valid(row)
                    .then(|| ends.value(row).saturating_add(offset))
            })
            .collect();
        let partitions = if self.keys.unpartitioned {
            None
        } else {
            Some(
                self.keys
                    .partitions
                    .convert_columns(&self.partition_columns(batch))?,
            )
        };
        let order_columns = self
            .spec
            .order
            .iter()
            .map(|o| Ok(o.expr.evaluate(batch)?.into_array(batch.num_rows())?))
            .collect::<Result<Vec<_>>>()?;
        Ok(Encoded {
            ends,
            partitions,
            order: self.order_keys.convert_columns(&order_columns)?,
            data: self.rows.convert_columns(batch.columns())?,
        })
    }

    /// Loads back the evicted keys among the rows of `batch` (encoded as
    /// `encoded`) of open windows with evicted keys.
    fn load_evicted(
        &mut self,
        batch: &RecordBatch,
        encoded: &Encoded,
        ctx: &mut OperatorContext,
    ) -> Result<()> {
        if self.evicted_ends.is_empty() || !self.keyed.may_have_evicted() {
            return Ok(());
        }
        let mut missing: Vec<(u32, Vec<u8>)> = Vec::new();
        let mut seen = HashSet::new();
        for (row, end) in encoded.ends.iter().enumerate() {
            let Some(end) = *end else { continue };
            if !self.evicted_ends.contains(&end) {
                continue;
            }
            let key = encoded.key(row, end);
            if !self.state.contains_key(&key) && seen.insert(key.clone()) {
                missing.push((row as u32, key));
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        let max_key_groups = ctx.task.max_key_groups;
        let rows: Vec<u32> = missing.iter().map(|(row, _)| *row).collect();
        let columns = take_rows(&self.partition_columns(batch), rows)?;
        let kgs = key_groups_of(&columns, true, missing.len(), max_key_groups)?;
        let mut by_key_group: BTreeMap<KeyGroup, Vec<Vec<u8>>> = BTreeMap::new();
        for ((_, key), kg) in missing.into_iter().zip(kgs) {
            by_key_group.entry(kg).or_default().push(key);
        }
        self.keyed.load_keys(&mut self.state, by_key_group, ctx)
    }

    /// Adds the rows of `encoded` to their windows, numbering them from
    /// `arrivals` or the operator's counter. With `late_after`, rows of a
    /// window ending there or before are not added: their indices are
    /// returned, with the keys touched.
    fn insert(
        &mut self,
        encoded: &Encoded,
        arrivals: Option<&UInt64Array>,
        late_after: Option<i64>,
    ) -> (Vec<u32>, HashSet<Vec<u8>>) {
        let mut late = Vec::new();
        let mut touched = HashSet::new();
        for (row, end) in encoded.ends.iter().enumerate() {
            let end = match (*end, late_after) {
                (Some(end), Some(bound)) if end <= bound => None,
                (end, _) => end,
            };
            let Some(end) = end else {
                late.push(row as u32);
                continue;
            };
            let arrival = match arrivals {
                Some(a) => a.value(row),
                None => {
                    self.arrivals += 1;
                    self.arrivals
                }
            };
            let key = encoded.key(row, end);
            let ranked = self.state.entry(key.clone()).or_default();
            keep_best(
                ranked,
                (encoded.order.row(row).as_ref().to_vec(), arrival),
                encoded.data.row(row).as_ref(),
                self.spec.limit,
                self.spec.function,
            );
            touched.insert(key);
        }
        (late, touched)
    }

    /// Notes the sizes of the keys `touched`, then past the memory budget
    /// evicts the least recently touched keys, indexing their windows.
    fn touch_and_evict(
        &mut self,
        touched: HashSet<Vec<u8>>,
        ctx: &mut OperatorContext,
    ) -> Result<()> {
        if ctx.spill.is_none() {
            return Ok(());
        }
        for key in touched {
            if let Some(ranked) = self.state.get(&key) {
                self.keyed.touch(&key, ranked.heap_size(), ctx);
            }
        }
        let mut ends = Vec::new();
        self.keyed
            .evict_noting(&mut self.state, &self.keys, ctx, |key| {
                ends.push(end_of(key)?);
                Ok(())
            })?;
        self.evicted_ends.extend(ends);
        Ok(())
    }

    /// Emits and drops every window the watermark has passed the end of,
    /// loading back its evicted keys first.
    fn fire_until(
        &mut self,
        watermark: Watermark,
        ctx: &mut OperatorContext,
        out: &mut Collector,
    ) -> Result<()> {
        // A window [start, end) is complete once the watermark reaches end - 1.
        let bound = watermark.0.saturating_add(1);
        // State keys below `upper` are of due windows; all are without.
        let after = bound.checked_add(1);
        let upper = after.map(end_prefix);
        if self.evicted_ends.first().is_some_and(|&end| end <= bound) {
            self.keyed
                .load_below(&mut self.state, upper.as_ref().map(|u| &u[..]), ctx)?;
            self.evicted_ends = match after {
                Some(after) => self.evicted_ends.split_off(&after),
                None => BTreeSet::new(),
            };
        }
        let due = match &upper {
            Some(upper) => {
                let later = self.state.split_off(&upper[..]);
                std::mem::replace(&mut self.state, later)
            }
            None => std::mem::take(&mut self.state),
        };
        let mut window: Option<[u8; END_LEN]> = None;
        let mut picked: Vec<&[u8]> = Vec::new();
        let mut ranks: Vec<u64> = Vec::new();
        for (key, ranked) in &due {
            self.keyed.forget(key);
            let end = key.get(..END_LEN).and_then(|b| b.try_into().ok());
            if window.is_some() && end != window {
                self.emit(&mut picked, &mut ranks, out)?;
            }
            window = end;
            ranks.extend(rank_numbers(ranked.keys(), self.spec.function));
            picked.extend(ranked.values().map(Vec::as_slice));
        }
        self.emit(&mut picked, &mut ranks, out)
    }

    /// Emits one window's `picked` rows with their `ranks`, and clears both.
    fn emit(
        &self,
        picked: &mut Vec<&[u8]>,
        ranks: &mut Vec<u64>,
        out: &mut Collector,
    ) -> Result<()> {
        if picked.is_empty() {
            return Ok(());
        }
        let parser = self.rows.parser();
        let mut columns = self
            .rows
            .convert_rows(picked.iter().map(|r| parser.parse(r)))?;
        columns.push(Arc::new(UInt64Array::from(std::mem::take(ranks))));
        picked.clear();
        out.collect(RecordBatch::try_new(
            Arc::clone(&self.spec.output_schema),
            columns,
        )?);
        Ok(())
    }
}

/// Adds a row ranking at `sort` to a partition's best rows, keeping only
/// those ranked at most `limit` under `function`.
fn keep_best(ranked: &mut Ranked, sort: RankKey, row: &[u8], limit: usize, function: RankFunction) {
    if function != RankFunction::RowNumber {
        // Ties may keep more than N rows: drop what ranks past N.
        ranked.insert(sort, row.to_vec());
        let keep = rank_numbers(ranked.keys(), function)
            .iter()
            .take_while(|&&r| r <= limit as u64)
            .count();
        while ranked.len() > keep {
            ranked.pop_last();
        }
        return;
    }
    // Not better than the last of a full top N: it never ranks.
    if ranked.len() >= limit
        && ranked
            .last_key_value()
            .is_some_and(|(last, _)| *last < sort)
    {
        return;
    }
    ranked.insert(sort, row.to_vec());
    while ranked.len() > limit {
        ranked.pop_last();
    }
}

/// Operator state: the watermark (big-endian, as
/// [`super::snapshot::encode_watermark`]) and the arrival counter.
fn encode_operator_state(watermark: Watermark, arrivals: u64) -> Vec<u8> {
    let mut out = watermark.0.to_be_bytes().to_vec();
    out.extend_from_slice(&arrivals.to_be_bytes());
    out
}

/// The least watermark and the greatest arrival counter of the restored
/// subtasks' operator state (a bare watermark has no counter).
fn decode_operator_state(entries: &[(u32, Vec<u8>)]) -> Result<(Watermark, u64)> {
    let mut watermark: Option<i64> = None;
    let mut arrivals = 0;
    for (_, bytes) in entries {
        let (w, counter) = match bytes.len() {
            8 => (bytes.as_slice(), None),
            16 => (&bytes[..8], Some(&bytes[8..])),
            n => {
                return Err(Error::internal(format!(
                    "checkpointed window Top-N operator state has {n} bytes, expected 16"
                )));
            }
        };
        let eight = |b: &[u8]| -> Result<[u8; 8]> {
            b.try_into()
                .map_err(|_| Error::internal("checkpointed window Top-N state is cut short"))
        };
        let w = i64::from_be_bytes(eight(w)?);
        watermark = Some(watermark.map_or(w, |m| m.min(w)));
        if let Some(counter) = counter {
            arrivals = arrivals.max(u64::from_be_bytes(eight(counter)?));
        }
    }
    Ok((Watermark(watermark.unwrap_or(i64::MIN)), arrivals))
}

#[async_trait]
impl Operator for WindowTopNOperator {
    async fn process_batch(
        &mut self,
        batch: RecordBatch,
        ctx: &mut OperatorContext,
        out: &mut Collector,
    ) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let encoded = self.encode(&batch)?;
        self.load_evicted(&batch, &encoded, ctx)?;
        let (late, touched) = self.insert(&encoded, None, Some(self.watermark.0.saturating_add(1)));
        if !late.is_empty() {
            ctx.metrics.add_late(late.len());
            if let Some(rows) = &self.late_rows {
                rows.emit(&batch, Some(&late), self.watermark, ctx, out)?;
            }
        }
        self.touch_and_evict(touched, ctx)
    }

    async fn handle_watermark(
        &mut self,
        watermark: Watermark,
        ctx: &mut OperatorContext,
        out: &mut Collector,
    ) -> Result<Option<Watermark>> {
        if watermark > self.watermark {
            self.watermark = watermark;
            self.fire_until(watermark, ctx, out)?;
        }
        Ok(Some(watermark))
    }

    /// Keyed state rows of the keys in memory: the row (its window columns
    /// tell its window), its arrival number; the watermark and the arrival
    /// counter as operator state. Evicted keys are in the RocksDB snapshot.
    async fn snapshot_state(
        &mut self,
        ctx: &mut OperatorContext,
        snapshot: &mut OperatorSnapshot,
    ) -> Result<()> {
        let state = ranked_rows_state(
            &self.rows,
            self.state.values(),
            &self.spec.partition_columns,
            ctx,
        )?;
        snapshot.put_key_groups(ctx.task.key_groups(), state)?;
        snapshot.operator = Some(encode_operator_state(self.watermark, self.arrivals));
        Ok(())
    }

    fn restore_state(&mut self, ctx: &OperatorContext, restore: OperatorRestore) -> Result<()> {
        let (watermark, arrivals) = decode_operator_state(&restore.operator)?;
        self.watermark = watermark;
        self.arrivals = arrivals;
        for (_, bytes) in restore.keyed {
            for (batch, arrivals) in decode_ranked_rows(&bytes, &self.spec.input_schema)? {
                let encoded = self.encode(&batch)?;
                let (_, touched) = self.insert(&encoded, Some(&arrivals), None);
                for key in touched {
                    if let Some(ranked) = self.state.get(&key) {
                        self.keyed.touch(&key, ranked.heap_size(), ctx);
                    }
                }
                // New rows tie behind every restored one.
                let last = arrivals.values().iter().copied().max().unwrap_or(0);
                self.arrivals = self.arrivals.max(last);
            }
        }
        // Keys evicted before the checkpoint were copied into the store by
        // key group: index their windows, so that rows load them back and
        // the watermark fires them.
        self.keyed.restored(ctx)?;
        let mut ends = BTreeSet::new();
        self.keyed.for_each_evicted_key(ctx, |key| {
            ends.insert(end_of(key)?);
            Ok(())
        })?;
        self.evicted_ends = ends;
        Ok(())
    }

    async fn on_close(&mut self, ctx: &mut OperatorContext, out: &mut Collector) -> Result<()> {
        // No more input: every open window is complete.
        self.fire_until(Watermark::MAX, ctx, out)
    }
}

#[cfg(test)]
mod tests;
