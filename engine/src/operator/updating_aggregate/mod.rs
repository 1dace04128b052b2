//! `GROUP BY` without a window over an unbounded stream: a changelog of
//! each group's current aggregates, as Flink's `GroupAggregate`.
//!
//! A new group is emitted as `+I`, a changed one as `-U` (its previous row)
//! then `+U`, and a group whose rows were all retracted as `-D`. The input
//! may itself be updating (an aggregate of an aggregate): its `-U`/`-D`
//! rows are taken back from the accumulators, which is why they are
//! [retractable](super::retractable).
//!
//! Each batch (or, with mini-batching, each group of batches) is folded in
//! as a whole, so a key that many rows touch emits one update per batch,
//! not one per row. An update that changes nothing is not emitted.
//!
//! State is keyed by group and checkpointed by key group, so a restore at
//! another parallelism hands each group to its new owner. Past the
//! operator's memory budget the least recently touched groups are evicted
//! to RocksDB and loaded back when touched (see `evict.rs`). With a state TTL
//! (`table.exec.state.ttl`), a group untouched for that long is dropped
//! without a retraction, as Flink does, and counted.

use std::fmt;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Int64Array};
use arrow::compute::{cast, interleave};
use arrow::datatypes::{Int64Type, SchemaRef};
use arrow::record_batch::RecordBatch;
use arrow::row::{RowConverter, SortField};
use async_trait::async_trait;

use self::evict::GroupCodec;
use super::group_slots::Groups;
use super::grouped_state::AggregateSpecRef;
use super::retractable::retractable_accumulator;
use super::snapshot::{KeyedStateBuilder, OperatorRestore, OperatorSnapshot, decode_batches};
use super::{Collector, Operator, OperatorContext, OperatorFactory, TaskInfo};
use crate::changelog::{ChangelogMode, RowKind, is_retraction, row_kind_codes, updating_schema};
use crate::error::{Error, Result};
use crate::message::{CheckpointBarrier, Watermark};

/// Flink's `table.exec.mini-batch.*`: buffer input and fold it in at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MiniBatch {
    /// `table.exec.mini-batch.allow-latency`: the longest a row waits, in ms.
    pub allow_latency_ms: i64,
    /// `table.exec.mini-batch.size`: the most rows buffered.
    pub size: usize,
}

/// Creates [`UpdatingAggregateOperator`]s.
#[derive(Debug, Clone)]
pub struct UpdatingAggregateFactory {
    spec: AggregateSpecRef,
    input_mode: ChangelogMode,
    output_schema: SchemaRef,
    mini_batch: Option<MiniBatch>,
    state_ttl_ms: Option<i64>,
}

impl UpdatingAggregateFactory {
    /// An updating aggregate computing `spec` over input of `input_mode`.
    /// Errors when an aggregate function cannot take retractions.
    pub fn new(spec: AggregateSpecRef, input_mode: ChangelogMode) -> Result<Self> {
        // Fail at planning, not in the first subtask.
        for agg in &spec.aggregates {
            retractable_accumulator(agg, &spec.input_schema, !input_mode.is_updating())?;
        }
        Ok(Self {
            output_schema: updating_schema(&spec.output_schema),
            spec,
            input_mode,
            mini_batch: None,
            state_ttl_ms: None,
        })
    }

    /// Folds input in per mini-batch rather than per batch.
    pub fn with_mini_batch(mut self, mini_batch: Option<MiniBatch>) -> Self {
        self.mini_batch = mini_batch;
        self
    }

    /// Drops groups untouched for `ttl_ms` of processing time.
    pub fn with_state_ttl(mut self, ttl_ms: Option<i64>) -> Self {
        self.state_ttl_ms = ttl_ms.filter(|&t| t > 0);
        self
    }
}

impl fmt::Display for UpdatingAggregateFactory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "UpdatingAggregate: {}, input={}",
            self.spec, self.input_mode
        )?;
        if let Some(m) = self.mini_batch {
            write!(f, ", mini-batch={}ms/{} rows", m.allow_latency_ms, m.size)?;
        }
        if let Some(ttl) = self.state_ttl_ms {
            write!(f, ", state-ttl={ttl}ms")?;
        }
        Ok(())
    }
}

impl OperatorFactory for UpdatingAggregateFactory {
    fn name(&self) -> &str {
        "UpdatingAggregate"
    }
    fn output_schema(&self) -> SchemaRef {
        Arc::clone(&self.output_schema)
    }
    fn create(&self, _task: &TaskInfo) -> Result<Box<dyn Operator>> {
        Ok(Box::new(UpdatingAggregateOperator::new(self)?))
    }
}

/// Aggregate values of some groups: the columns, and their encoding.
type Evaluated = (Vec<ArrayRef>, Option<arrow::row::Rows>);

/// Aggregates per group and emits the changes; see the module docs.
pub struct UpdatingAggregateOperator {
    spec: AggregateSpecRef,
    output_schema: SchemaRef,
    groups: Groups,
    /// Encodes aggregate values, to tell a real change from none.
    values: RowConverter,
    batches_seen: u64,
    mini_batch: Option<MiniBatch>,
    buffered: Vec<RecordBatch>,
    buffered_rows: usize,
    buffered_since: i64,
    state_ttl_ms: Option<i64>,
    last_expiry: i64,
    /// Encodes evicted groups; `None` when their state cannot be.
    codec: Option<GroupCodec>,
    /// Whether groups may be on disk: set by an eviction or a restore.
    evicted: bool,
    /// When evicted groups were last swept for ones past the TTL.
    last_sweep: i64,
}

impl fmt::Debug for UpdatingAggregateOperator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpdatingAggregateOperator")
            .field("groups", &self.groups.len())
            .finish()
    }
}

impl UpdatingAggregateOperator {
    fn new(factory: &UpdatingAggregateFactory) -> Result<Self> {
        let spec = Arc::clone(&factory.spec);
        let append_only = !factory.input_mode.is_updating();
        let accumulators = spec
            .aggregates
            .iter()
            .map(|agg| retractable_accumulator(agg, &spec.input_schema, append_only))
            .collect::<Result<Vec<_>>>()?;
        let keys = if spec.group_exprs.is_empty() {
            None
        } else {
            Some(RowConverter::new(
                spec.group_schema
                    .fields()
                    .iter()
                    .map(|f| SortField::new(f.data_type().clone()))
                    .collect(),
            )?)
        };
        let group_count = spec.group_exprs.len();
        let values = RowConverter::new(
            spec.output_schema.fields()[group_count..]
                .iter()
                .map(|f| SortField::new(f.data_type().clone()))
                .collect(),
        )?;
        Ok(Self {
            output_schema: Arc::clone(&factory.output_schema),
            codec: GroupCodec::new(&accumulators)?,
            groups: Groups::new(keys, accumulators),
            spec,
            values,
            batches_seen: 0,
            mini_batch: factory.mini_batch,
            buffered: Vec::new(),
            buffered_rows: 0,
            buffered_since: 0,
            state_ttl_ms: factory.state_ttl_ms,
            last_expiry: 0,
            evicted: false,
            last_sweep: 0,
        })
    }

    fn group_count(&self) -> usize {
        self.spec.group_exprs.len()
    }

    /// Folds a batch in and emits the changes of the groups it touched.
    fn fold(
        &mut self,
        batch: &RecordBatch,
        ctx: &mut OperatorContext,
        out: &mut Collector,
    ) -> Result<()> {
        let rows = batch.num_rows();
        if rows == 0 {
            return Ok(());
        }
        let input = self.spec.evaluate(batch)?;
        let retract: Vec<bool> = match row_kind_codes(batch)? {
            Some(codes) => codes.values().iter().map(|&c| is_retraction(c)).collect(),
            None => vec![false; rows],
        };
        let encoded = match &self.groups.keys {
            Some(keys) => Some(keys.convert_columns(&input.keys)?),
            None => None,
        };
        if let Some(encoded) = &encoded {
            self.load_evicted(&input.keys, encoded, ctx)?;
        }
        self.batches_seen += 1;
        let stamp = self.batches_seen;
        let now = ctx.clock.now_millis();
        let mut slots = Vec::with_capacity(rows);
        let mut skipped: Option<Vec<bool>> = None;
        let mut touched: Vec<usize> = Vec::new();
        let mut live_before: Vec<bool> = Vec::new();
        let mut unknown = 0u64;
        for (row, &retracts) in retract.iter().enumerate() {
            let key: &[u8] = match &encoded {
                Some(e) => e.row(row).data(),
                None => &[],
            };
            let hash = self.groups.hash(key);
            let slot = match self.groups.find(hash, key) {
                Some(slot) => slot,
                // A retraction of a group this subtask does not hold (its
                // state expired, say): nothing to take back.
                None if retracts => {
                    unknown += 1;
                    skipped.get_or_insert_with(|| vec![false; rows])[row] = true;
                    slots.push(0);
                    continue;
                }
                None => self.groups.insert(hash, key),
            };
            if self.groups.stamp[slot] != stamp {
                self.groups.stamp[slot] = stamp;
                self.groups.touched_at[slot] = now;
                touched.push(slot);
                live_before.push(self.groups.rows[slot] > 0);
            }
            if retracts {
                if self.groups.rows[slot] == 0 {
                    unknown += 1;
                    skipped.get_or_insert_with(|| vec![false; rows])[row] = true;
                    slots.push(0);
                    continue;
                }
                self.groups.rows[slot] -= 1;
            } else {
                self.groups.rows[slot] += 1;
            }
            slots.push(slot);
        }
        if unknown > 0 {
            ctx.unmatched_retractions(crate::metrics::UnmatchedAt::UpdatingAggregate, unknown);
        }
        let before_slots: Vec<usize> = touched
            .iter()
            .zip(&live_before)
            .filter(|(_, live)| **live)
            .map(|(s, _)| *s)
            .collect();
        let before = self.evaluate(&before_slots)?;
        let total = self.groups.total();
        let keep = skipped.map(|s| BooleanArray::from_iter(s.into_iter().map(|skip| Some(!skip))));
        for ((acc, args), filter) in self
            .groups
            .accumulators
            .iter_mut()
            .zip(&input.args)
            .zip(&input.filters)
        {
            let mask = match (filter, &keep) {
                (Some(f), Some(k)) => Some(arrow::compute::and(f, k)?),
                (Some(f), None) => Some(f.clone()),
                (None, Some(k)) => Some(k.clone()),
                (None, None) => None,
            };
            acc.update(args, &slots, &retract, mask.as_ref(), total)?;
        }
        let after_slots: Vec<usize> = touched
            .iter()
            .copied()
            .filter(|&s| self.groups.rows[s] > 0)
            .collect();
        let after = self.evaluate(&after_slots)?;
        self.emit_changes(&touched, &live_before, &before, &after, out)?;
        self.groups.measure(&after_slots);
        for &slot in &touched {
            if self.groups.rows[slot] == 0 {
                self.groups.release(slot);
            }
        }
        self.evict_if_over_budget(ctx)
    }

    /// The aggregate values of `slots`, and their encoding for comparison
    /// (`None` without aggregates: a `SELECT DISTINCT`, whose groups only
    /// come and go).
    fn evaluate(&self, slots: &[usize]) -> Result<Evaluated> {
        let group_count = self.group_count();
        let columns = self
            .groups
            .accumulators
            .iter()
            .zip(&self.spec.output_schema.fields()[group_count..])
            .map(|(acc, field)| {
                let column = acc.evaluate(slots)?;
                if column.data_type() == field.data_type() {
                    Ok(column)
                } else {
                    Ok(cast(&column, field.data_type())?)
                }
            })
            .collect::<Result<Vec<_>>>()?;
        let encoded = if columns.is_empty() {
            None
        } else {
            Some(self.values.convert_columns(&columns)?)
        };
        Ok((columns, encoded))
    }

    fn emit_changes(
        &self,
        touched: &[usize],
        live_before: &[bool],
        before: &Evaluated,
        after: &Evaluated,
        out: &mut Collector,
    ) -> Result<()> {
        // (source, row): source 0 is `before`, 1 is `after`.
        let mut picks: Vec<(usize, usize)> = Vec::new();
        let mut key_slots: Vec<usize> = Vec::new();
        let mut kinds: Vec<RowKind> = Vec::new();
        let (mut b, mut a) = (0, 0);
        for (&slot, &was_live) in touched.iter().zip(live_before) {
            let is_live = self.groups.rows[slot] > 0;
            match (was_live, is_live) {
                (true, true) => {
                    let changed = match (&before.1, &after.1) {
                        (Some(old), Some(new)) => old.row(b) != new.row(a),
                        _ => false,
                    };
                    if changed {
                        picks.extend([(0, b), (1, a)]);
                        key_slots.extend([slot, slot]);
                        kinds.extend([RowKind::UpdateBefore, RowKind::UpdateAfter]);
                    }
                }
                (true, false) => {
                    picks.push((0, b));
                    key_slots.push(slot);
                    kinds.push(RowKind::Delete);
                }
                (false, true) => {
                    picks.push((1, a));
                    key_slots.push(slot);
                    kinds.push(RowKind::Insert);
                }
                (false, false) => {}
            }
            b += usize::from(was_live);
            a += usize::from(is_live);
        }
        if picks.is_empty() {
            return Ok(());
        }
        let mut columns = self.groups.key_columns(&key_slots)?;
        for (before, after) in before.0.iter().zip(&after.0) {
            columns.push(interleave(&[before.as_ref(), after.as_ref()], &picks)?);
        }
        let columns = columns
            .into_iter()
            .zip(self.spec.output_schema.fields())
            .map(|(column, field)| {
                if column.data_type() == field.data_type() {
                    Ok(column)
                } else {
                    Ok(cast(&column, field.data_type())?)
                }
            })
            .collect::<Result<Vec<_>>>()?;
        out.collect(crate::changelog::with_row_kinds(
            &self.output_schema,
            columns,
            kinds,
        )?);
        Ok(())
    }

    /// Folds in what the mini-batch buffered.
    fn flush(&mut self, ctx: &mut OperatorContext, out: &mut Collector) -> Result<()> {
        if self.buffered.is_empty() {
            return Ok(());
        }
        let batches = std::mem::take(&mut self.buffered);
        self.buffered_rows = 0;
        let batch = arrow::compute::concat_batches(&batches[0].schema(), &batches)?;
        self.fold(&batch, ctx, out)
    }

    /// Drops the groups untouched for longer than the state TTL: those in
    /// memory at most once a second, evicted ones as `evict.rs` says.
    fn expire(&mut self, ctx: &mut OperatorContext) -> Result<()> {
        let Some(ttl) = self.state_ttl_ms else {
            return Ok(());
        };
        let now = ctx.clock.now_millis();
        if now - self.last_expiry >= ttl.min(1000) {
            self.last_expiry = now;
            let expired: Vec<usize> = self
                .groups
                .live_slots()
                .into_iter()
                .filter(|&s| now - self.groups.touched_at[s] >= ttl)
                .collect();
            if !expired.is_empty() {
                for &slot in &expired {
                    self.groups.release(slot);
                }
                ctx.metrics.add_state_expired(expired.len());
                tracing::debug!(expired = expired.len(), "dropped groups past the state TTL");
            }
        }
        self.sweep_evicted(ctx, ttl)
    }
}

#[async_trait]
impl Operator for UpdatingAggregateOperator {
    async fn process_batch(
        &mut self,
        batch: RecordBatch,
        ctx: &mut OperatorContext,
        out: &mut Collector,
    ) -> Result<()> {
        self.expire(ctx)?;
        let Some(mini_batch) = self.mini_batch else {
            return self.fold(&batch, ctx, out);
        };
        let now = ctx.clock.now_millis();
        if self.buffered.is_empty() {
            self.buffered_since = now;
        }
        self.buffered_rows += batch.num_rows();
        self.buffered.push(batch);
        if self.buffered_rows >= mini_batch.size
            || now - self.buffered_since >= mini_batch.allow_latency_ms
        {
            self.flush(ctx, out)?;
        }
        Ok(())
    }

    async fn handle_watermark(
        &mut self,
        watermark: Watermark,
        ctx: &mut OperatorContext,
        out: &mut Collector,
    ) -> Result<Option<Watermark>> {
        self.flush(ctx, out)?;
        Ok(Some(watermark))
    }

    /// A mini-batch whose oldest row has waited its latency goes out even
    /// when no more input comes; idle state expires.
    async fn on_tick(&mut self, ctx: &mut OperatorContext, out: &mut Collector) -> Result<()> {
        if let Some(mini_batch) = self.mini_batch {
            let waited = ctx.clock.now_millis() - self.buffered_since;
            if !self.buffered.is_empty() && waited >= mini_batch.allow_latency_ms {
                self.flush(ctx, out)?;
            }
        }
        self.expire(ctx)
    }

    /// What was buffered goes out ahead of the barrier: the checkpoint then
    /// holds no input that was not folded in.
    async fn handle_checkpoint(
        &mut self,
        _barrier: &CheckpointBarrier,
        ctx: &mut OperatorContext,
        out: &mut Collector,
    ) -> Result<()> {
        self.flush(ctx, out)?;
        self.expire(ctx)
    }

    async fn snapshot_state(
        &mut self,
        ctx: &mut OperatorContext,
        snapshot: &mut OperatorSnapshot,
    ) -> Result<()> {
        let slots = self.groups.live_slots();
        let mut builder = KeyedStateBuilder::default();
        if !slots.is_empty() {
            let mut columns = self.groups.key_columns(&slots)?;
            columns.push(Arc::new(Int64Array::from_iter_values(
                slots.iter().map(|&s| self.groups.rows[s]),
            )));
            for acc in &self.groups.accumulators {
                columns.extend(acc.state(&slots)?);
            }
            let key_columns: Vec<usize> = (0..self.group_count()).collect();
            builder.add_rows(&columns, &key_columns, slots.len(), ctx.task.max_key_groups)?;
        }
        snapshot.put_key_groups(ctx.task.key_groups(), builder.finish()?)?;
        Ok(())
    }

    fn restore_state(&mut self, ctx: &OperatorContext, restore: OperatorRestore) -> Result<()> {
        let group_count = self.group_count();
        let now = ctx.clock.now_millis();
        for (_, bytes) in restore.keyed {
            for (columns, rows) in decode_batches(&bytes)? {
                let width = group_count
                    + 1
                    + self
                        .groups
                        .accumulators
                        .iter()
                        .map(|a| a.state_width())
                        .sum::<usize>();
                if columns.len() != width {
                    return Err(Error::internal(format!(
                        "checkpointed updating aggregate state has {} columns, expected {width}",
                        columns.len()
                    )));
                }
                let encoded = match &self.groups.keys {
                    Some(keys) => Some(keys.convert_columns(&columns[..group_count])?),
                    None => None,
                };
                let counts = columns[group_count].as_primitive::<Int64Type>();
                let mut slots = Vec::with_capacity(rows);
                for row in 0..rows {
                    let key: &[u8] = match &encoded {
                        Some(e) => e.row(row).data(),
                        None => &[],
                    };
                    let slot = self.groups.slot(key);
                    self.groups.rows[slot] = counts.value(row);
                    self.groups.touched_at[slot] = now;
                    slots.push(slot);
                }
                let total = self.groups.total();
                let mut at = group_count + 1;
                for acc in &mut self.groups.accumulators {
                    let width = acc.state_width();
                    acc.restore(&columns[at..at + width], &slots, total)?;
                    at += width;
                }
                self.groups.measure(&slots);
            }
        }
        // Groups evicted before the checkpoint were copied into the store
        // by key group; they come back when touched.
        if let Some(spill) = &ctx.spill {
            self.evicted = spill
                .store()
                .has_evicted_groups(spill.node(), spill.key_groups())?;
        }
        Ok(())
    }

    async fn on_close(&mut self, ctx: &mut OperatorContext, out: &mut Collector) -> Result<()> {
        self.flush(ctx, out)
    }
}

impl UpdatingAggregateOperator {
    /// Approximate bytes of state held.
    pub fn state_size(&self) -> usize {
        self.groups.size()
    }
}

mod evict;
#[cfg(test)]
mod tests;
