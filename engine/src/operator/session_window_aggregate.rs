//! Session window aggregation.
//!
//! Every row arrives as its own window `[ts, ts + gap)` (see
//! [`WindowAssignerOperator`](super::WindowAssignerOperator)). Per key, the
//! operator merges windows that overlap into sessions, merging their
//! accumulator states, and emits a session when the watermark passes its end.
//!
//! With a spill store, sessions past the memory budget are written out per
//! key as fragments, with a timer per session (see
//! [`crate::state::SessionFragment`]). Merging is order-independent, so a
//! key's fragments are read back only when the watermark may fire one of
//! its sessions: its timer is due, or a session in memory may fire and must
//! first meet the spilled sessions it overlaps. That happens one key group
//! at a time, so a firing holds one key group's spilled sessions.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, UInt32Array};
use arrow::compute::concat_batches;
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use arrow::row::{OwnedRow, RowConverter, SortField};
use async_trait::async_trait;

use super::grouped_state::{AggregateSpec, AggregateSpecRef, SingleGroupState};
use super::late_rows::LateRows;
use super::session_spill::SessionCodec;
use super::snapshot::{
    KeyedStateBuilder, OperatorRestore, OperatorSnapshot, decode_batches, decode_watermark,
    encode_watermark,
};
use super::{Collector, Operator, OperatorContext, OperatorFactory, TaskInfo};
use crate::error::{Error, Result};
use crate::message::Watermark;
use crate::time::{from_epoch_millis, to_epoch_millis};

pub(super) struct Session {
    pub(super) start: i64,
    pub(super) end: i64,
    pub(super) state: SingleGroupState,
    /// Approximate bytes held, for the memory budget.
    pub(super) bytes: usize,
}

/// Bytes a session holds beyond its accumulators' reported size: measured
/// at about 800 for COUNT and SUM (the boxed accumulators, their vectors).
const SESSION_OVERHEAD: usize = 1024;

/// Aggregates per key and session.
pub struct SessionWindowAggregateOperator {
    pub(super) spec: AggregateSpecRef,
    pub(super) single: AggregateSpec,
    start_group: usize,
    end_group: usize,
    gap_ms: i64,
    pub(super) key_groups: Vec<usize>,
    pub(super) converter: RowConverter,
    pub(super) sessions: HashMap<OwnedRow, Vec<Session>>,
    watermark: Watermark,
    /// How spilled sessions are encoded; `None` when they cannot be.
    pub(super) codec: Option<SessionCodec>,
    /// Whether any session was spilled (or restored spilled).
    pub(super) spilled: bool,
    /// Approximate bytes of the sessions in memory.
    pub(super) held_bytes: usize,
    /// No session (in memory or spilled) ends before this: watermarks below
    /// it fire nothing and need no scan. A lower bound, refreshed by scans.
    pub(super) next_end: i64,
    /// Where late rows go, if anywhere.
    late_rows: Option<LateRows>,
}

impl fmt::Debug for SessionWindowAggregateOperator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionWindowAggregateOperator")
            .field("keys", &self.sessions.len())
            .finish()
    }
}

impl SessionWindowAggregateOperator {
    /// `start_group`/`end_group` are the group expressions holding the
    /// window start and end; the other group expressions are the session key.
    pub fn new(
        spec: AggregateSpecRef,
        start_group: usize,
        end_group: usize,
        gap_ms: i64,
    ) -> Result<Self> {
        let key_groups: Vec<usize> = (0..spec.group_exprs.len())
            .filter(|&i| i != start_group && i != end_group)
            .collect();
        let mut fields: Vec<SortField> = key_groups
            .iter()
            .map(|&i| SortField::new(spec.group_schema.field(i).data_type().clone()))
            .collect();
        if fields.is_empty() {
            fields.push(SortField::new(arrow::datatypes::DataType::Boolean));
        }
        let single = spec.single_group();
        Ok(Self {
            converter: RowConverter::new(fields)?,
            codec: SessionCodec::new(&single)?,
            spilled: false,
            held_bytes: 0,
            next_end: i64::MAX,
            single,
            spec,
            start_group,
            end_group,
            gap_ms,
            key_groups,
            sessions: HashMap::new(),
            watermark: Watermark::MIN,
            late_rows: None,
        })
    }

    /// Emits late rows on the late-rows output instead of dropping them.
    pub fn with_late_rows(mut self) -> Self {
        self.late_rows = Some(LateRows::new(&self.spec.input_schema));
        self
    }

    /// A session's approximate size.
    pub(super) fn session_bytes(state: &SingleGroupState, key: &OwnedRow) -> usize {
        state.size() + key.as_ref().len() + SESSION_OVERHEAD
    }

    pub(super) fn add_session(&mut self, key: OwnedRow, mut new: Session) -> Result<()> {
        let sessions = self.sessions.entry(key).or_default();
        let mut i = 0;
        while i < sessions.len() {
            let s = &sessions[i];
            if s.start < new.end && new.start < s.end {
                let old = sessions.swap_remove(i);
                new.start = new.start.min(old.start);
                new.end = new.end.max(old.end);
                new.bytes += old.bytes;
                new.state.merge(old.state)?;
            } else {
                i += 1;
            }
        }
        self.next_end = self.next_end.min(new.end);
        sessions.push(new);
        Ok(())
    }

    fn fire_until(
        &mut self,
        watermark: Watermark,
        ctx: &mut OperatorContext,
        out: &mut Collector,
    ) -> Result<()> {
        let bound = watermark.0.saturating_add(1);
        if bound < self.next_end {
            return Ok(());
        }
        match &mut ctx.spill {
            Some(spill) if self.spilled => self.fire_spilled(bound, spill, out),
            _ => {
                let mut fired: Vec<(OwnedRow, Session)> = Vec::new();
                let mut next_end = i64::MAX;
                self.sessions.retain(|key, sessions| {
                    take_ended(key, sessions, bound, &mut fired);
                    next_end = sessions.iter().fold(next_end, |m, s| m.min(s.end));
                    !sessions.is_empty()
                });
                self.next_end = next_end;
                self.emit_fired(fired, out)
            }
        }
    }

    /// The earliest end among the sessions in memory.
    pub(super) fn earliest_end_in_memory(&self) -> i64 {
        self.sessions
            .values()
            .flatten()
            .map(|s| s.end)
            .min()
            .unwrap_or(i64::MAX)
    }

    /// Emits fired sessions (key columns, bounds, aggregates) as one batch.
    pub(super) fn emit_fired(
        &mut self,
        mut fired: Vec<(OwnedRow, Session)>,
        out: &mut Collector,
    ) -> Result<()> {
        for (_, s) in &fired {
            self.held_bytes = self.held_bytes.saturating_sub(s.bytes);
        }
        if fired.is_empty() {
            return Ok(());
        }
        fired.sort_by_key(|(_, s)| s.start);
        let schema = &self.spec.output_schema;
        let keys = self
            .converter
            .convert_rows(fired.iter().map(|(k, _)| k.row()))?;
        let starts = Int64Array::from_iter_values(fired.iter().map(|(_, s)| s.start));
        let ends = Int64Array::from_iter_values(fired.iter().map(|(_, s)| s.end));
        let mut aggregates: Vec<RecordBatch> = Vec::with_capacity(fired.len());
        for (_, session) in &mut fired {
            aggregates.push(session.state.emit()?);
        }
        let agg_schema = aggregates
            .first()
            .map(|b| b.schema())
            .ok_or_else(|| Error::internal("no session aggregates"))?;
        let aggregates = concat_batches(&agg_schema, &aggregates)?;
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
        let mut key_columns = keys.into_iter();
        if self.key_groups.is_empty() {
            key_columns.next();
        }
        for g in 0..self.spec.group_exprs.len() {
            let field = schema.field(g);
            if g == self.start_group {
                columns.push(from_epoch_millis(starts.clone(), field.data_type())?);
            } else if g == self.end_group {
                columns.push(from_epoch_millis(ends.clone(), field.data_type())?);
            } else {
                columns.push(
                    key_columns
                        .next()
                        .ok_or_else(|| Error::internal("session key column missing"))?,
                );
            }
        }
        columns.extend(aggregates.columns().iter().cloned());
        out.collect(RecordBatch::try_new(Arc::clone(schema), columns)?);
        Ok(())
    }
}

/// Moves the sessions of `key` that end at or before `bound` into `fired`.
pub(super) fn take_ended(
    key: &OwnedRow,
    sessions: &mut Vec<Session>,
    bound: i64,
    fired: &mut Vec<(OwnedRow, Session)>,
) {
    let mut i = 0;
    while i < sessions.len() {
        if sessions[i].end <= bound {
            fired.push((key.clone(), sessions.swap_remove(i)));
        } else {
            i += 1;
        }
    }
}

impl fmt::Display for SessionWindowAggregateOperator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SessionWindowAggregate: gap={}ms, {}",
            self.gap_ms, self.spec
        )
    }
}

/// Creates [`SessionWindowAggregateOperator`]s.
#[derive(Debug, Clone)]
pub struct SessionWindowAggregateFactory {
    spec: AggregateSpecRef,
    start_group: usize,
    end_group: usize,
    gap_ms: i64,
    late_rows: bool,
}

impl SessionWindowAggregateFactory {
    /// See [`SessionWindowAggregateOperator::new`].
    pub fn new(spec: AggregateSpecRef, start_group: usize, end_group: usize, gap_ms: i64) -> Self {
        Self {
            spec,
            start_group,
            end_group,
            gap_ms,
            late_rows: false,
        }
    }

    /// See [`SessionWindowAggregateOperator::with_late_rows`].
    pub fn with_late_rows(mut self) -> Self {
        self.late_rows = true;
        self
    }
}

impl fmt::Display for SessionWindowAggregateFactory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SessionWindowAggregate: gap={}ms, {}",
            self.gap_ms, self.spec
        )
    }
}

impl OperatorFactory for SessionWindowAggregateFactory {
    fn name(&self) -> &str {
        "SessionWindowAggregate"
    }
    fn output_schema(&self) -> SchemaRef {
        Arc::clone(&self.spec.output_schema)
    }
    fn create(&self, _task: &TaskInfo) -> Result<Box<dyn Operator>> {
        let op = SessionWindowAggregateOperator::new(
            Arc::clone(&self.spec),
            self.start_group,
            self.end_group,
            self.gap_ms,
        )?;
        Ok(Box::new(if self.late_rows {
            op.with_late_rows()
        } else {
            op
        }))
    }
}

#[async_trait]
impl Operator for SessionWindowAggregateOperator {
    async fn process_batch(
        &mut self,
        batch: RecordBatch,
        ctx: &mut OperatorContext,
        out: &mut Collector,
    ) -> Result<()> {
        let input = self.spec.evaluate(&batch)?;
        let ts = to_epoch_millis(&input.keys[self.start_group])?;
        let mut key_cols: Vec<ArrayRef> = self
            .key_groups
            .iter()
            .map(|&i| Arc::clone(&input.keys[i]))
            .collect();
        if key_cols.is_empty() {
            // One session key for everything: a constant column gives every row the same key.
            key_cols.push(Arc::new(arrow::array::BooleanArray::from(
                vec![true; input.num_rows],
            )));
        }
        let rows = self.converter.convert_columns(&key_cols)?;
        let late_bound = self.watermark.0.saturating_add(1);
        // Rows per key, in event-time order.
        let mut by_key: HashMap<OwnedRow, Vec<(i64, u32)>> = HashMap::new();
        let mut late: Vec<u32> = Vec::new();
        for (i, t) in ts.iter().enumerate() {
            match t {
                Some(t) if t + self.gap_ms > late_bound => by_key
                    .entry(rows.row(i).owned())
                    .or_default()
                    .push((t, i as u32)),
                _ => late.push(i as u32),
            }
        }
        ctx.metrics.add_late(late.len());
        if let Some(rows) = &self.late_rows {
            rows.emit(&batch, Some(&late), self.watermark, ctx, out)?;
        }
        for (key, mut rows) in by_key {
            rows.sort_unstable();
            // Consecutive rows closer than the gap form one run, aggregated at once.
            let mut run_start = 0;
            for i in 1..=rows.len() {
                let split = i == rows.len() || rows[i].0 >= rows[i - 1].0 + self.gap_ms;
                if !split {
                    continue;
                }
                let run = &rows[run_start..i];
                let indices = UInt32Array::from_iter_values(run.iter().map(|(_, r)| *r));
                let mut state = self.single.new_single_state()?;
                state.update(&input.take(&indices)?)?;
                let bytes = Self::session_bytes(&state, &key);
                self.held_bytes += bytes;
                let session = Session {
                    start: run[0].0,
                    end: run[run.len() - 1].0 + self.gap_ms,
                    state,
                    bytes,
                };
                self.add_session(key.clone(), session)?;
                run_start = i;
            }
        }
        self.spill_if_over_budget(ctx)
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

    /// Keyed state rows: session start, end, the key columns, the
    /// accumulators' state; the watermark as operator state.
    async fn snapshot_state(
        &mut self,
        ctx: &mut OperatorContext,
        snapshot: &mut OperatorSnapshot,
    ) -> Result<()> {
        let mut keys = Vec::new();
        let (mut starts, mut ends) = (Vec::new(), Vec::new());
        let mut states: Vec<Vec<ArrayRef>> = Vec::new();
        for (key, sessions) in &mut self.sessions {
            for session in sessions {
                keys.push(key.row());
                starts.push(session.start);
                ends.push(session.end);
                states.push(session.state.snapshot_columns()?);
            }
        }
        let mut builder = KeyedStateBuilder::default();
        if !keys.is_empty() {
            let key_columns = self.converter.convert_rows(keys)?;
            let key_count = key_columns.len();
            let mut columns: Vec<ArrayRef> = vec![
                Arc::new(Int64Array::from(starts)),
                Arc::new(Int64Array::from(ends)),
            ];
            columns.extend(key_columns);
            let width = states.first().map_or(0, Vec::len);
            for c in 0..width {
                let parts: Vec<&dyn arrow::array::Array> =
                    states.iter().map(|s| s[c].as_ref()).collect();
                columns.push(arrow::compute::concat(&parts)?);
            }
            let hashed: Vec<usize> = if self.key_groups.is_empty() {
                Vec::new()
            } else {
                (2..2 + key_count).collect()
            };
            let rows = states.len();
            builder.add_rows(&columns, &hashed, rows, ctx.task.max_key_groups)?;
        }
        snapshot.put_key_groups(ctx.task.key_groups(), builder.finish()?)?;
        snapshot.operator = Some(encode_watermark(self.watermark));
        Ok(())
    }

    fn restore_state(&mut self, ctx: &OperatorContext, restore: OperatorRestore) -> Result<()> {
        self.watermark = decode_watermark(&restore.operator)?;
        if let Some(spill) = &ctx.spill {
            self.spilled = spill
                .store()
                .has_session_fragments(spill.node(), spill.key_groups())?;
            if self.spilled {
                // Restored timers: the first watermark scans them.
                self.next_end = i64::MIN;
            }
        }
        let widths = self.single.state_widths()?;
        let key_count = self.key_groups.len().max(1);
        for (_, bytes) in restore.keyed {
            for (columns, rows) in decode_batches(&bytes)? {
                if columns.len() < 2 + key_count {
                    return Err(Error::internal("checkpointed session state is too narrow"));
                }
                let as_i64 = |c: &ArrayRef| {
                    c.as_any()
                        .downcast_ref::<Int64Array>()
                        .cloned()
                        .ok_or_else(|| Error::internal("checkpointed session bounds are not Int64"))
                };
                let (starts, ends) = (as_i64(&columns[0])?, as_i64(&columns[1])?);
                let keys = self.converter.convert_columns(&columns[2..2 + key_count])?;
                let state_columns = &columns[2 + key_count..];
                for row in 0..rows {
                    let mut state = self.single.new_single_state()?;
                    let slice: Vec<ArrayRef> =
                        state_columns.iter().map(|c| c.slice(row, 1)).collect();
                    state.restore_columns(&slice, &widths)?;
                    let key = keys.row(row).owned();
                    let bytes = Self::session_bytes(&state, &key);
                    self.held_bytes += bytes;
                    self.next_end = self.next_end.min(ends.value(row));
                    self.sessions.entry(key).or_default().push(Session {
                        start: starts.value(row),
                        end: ends.value(row),
                        state,
                        bytes,
                    });
                }
            }
        }
        Ok(())
    }

    async fn on_close(&mut self, ctx: &mut OperatorContext, out: &mut Collector) -> Result<()> {
        self.fire_until(Watermark::MAX, ctx, out)
    }
}

impl AggregateSpec {
    /// The same aggregates without group keys: the state of one session.
    pub fn single_group(&self) -> AggregateSpec {
        let aggs = self.output_schema.fields().len() - self.group_exprs.len();
        let fields: Vec<_> = self
            .output_schema
            .fields()
            .iter()
            .skip(self.group_exprs.len())
            .cloned()
            .collect();
        debug_assert_eq!(fields.len(), aggs);
        AggregateSpec {
            group_exprs: Vec::new(),
            group_schema: Arc::new(arrow::datatypes::Schema::empty()),
            aggregates: self.aggregates.clone(),
            filters: self.filters.clone(),
            output_schema: Arc::new(arrow::datatypes::Schema::new(fields)),
            input_schema: Arc::clone(&self.input_schema),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::OperatorHarness;
    use crate::testing::fixtures::{batch, count_sum};

    /// Group by (key, window_start = time, window_end = time): the assigner's
    /// placeholder columns; the operator computes the real bounds.
    fn operator() -> SessionWindowAggregateOperator {
        let spec = count_sum(&[("key", 0), ("window_start", 1), ("window_end", 1)]);
        SessionWindowAggregateOperator::new(spec, 1, 2, 5).unwrap()
    }

    #[tokio::test]
    async fn merges_overlapping_windows_per_key() {
        let mut h = OperatorHarness::new(Box::new(operator()));
        // Key 1: 0, 3 → [0, 8); 20 → [20, 25). Key 2: 2 → [2, 7).
        h.process(batch(&[(1, 0, 1), (1, 20, 10), (2, 2, 5)]))
            .await
            .unwrap();
        // 3 arrives later and bridges nothing new but extends [0,5) to [0,8).
        h.process(batch(&[(1, 3, 2)])).await.unwrap();
        h.watermark(Watermark(7)).await.unwrap();
        let mut rows = h.rows_as_strings();
        rows.sort();
        assert_eq!(rows, vec!["1,0,8,2,3", "2,2,7,1,5"]);
        h.close().await.unwrap();
        assert_eq!(h.rows_as_strings(), vec!["1,20,25,1,10"]);
    }

    #[tokio::test]
    async fn restores_open_sessions_from_a_snapshot() {
        let mut plain = OperatorHarness::new(Box::new(operator()));
        let mut h = OperatorHarness::new(Box::new(operator()));
        for harness in [&mut plain, &mut h] {
            harness
                .process(batch(&[(1, 1, 10), (1, 3, 20), (2, 2, 5)]))
                .await
                .unwrap();
        }
        let snapshot = h.snapshot().await.unwrap();
        let mut restored = OperatorHarness::restored(Box::new(operator()), snapshot).unwrap();
        for harness in [&mut plain, &mut restored] {
            harness
                .process(batch(&[(1, 6, 1), (2, 20, 4)]))
                .await
                .unwrap();
            harness.close().await.unwrap();
        }
        let mut expected = plain.rows_as_strings();
        let mut got = restored.rows_as_strings();
        expected.sort();
        got.sort();
        assert_eq!(got, expected);
    }

    #[tokio::test]
    async fn a_late_event_bridging_two_sessions_merges_them() {
        let mut h = OperatorHarness::new(Box::new(operator()));
        h.process(batch(&[(1, 0, 1), (1, 8, 1)])).await.unwrap();
        h.process(batch(&[(1, 4, 1)])).await.unwrap();
        h.close().await.unwrap();
        assert_eq!(h.rows_as_strings(), vec!["1,0,13,3,3"]);
    }

    /// Sessions of 200 keys over time, some bridged later, in batches, with
    /// watermarks between them and checkpoints that go unresolved for a
    /// while; `spill` budget 1 writes every batch's sessions out.
    async fn run_sessions(h: &mut OperatorHarness) -> Vec<String> {
        let mut out = Vec::new();
        for step in 0..30i64 {
            // Gap 5: keys k and k + 100 get rows 3 apart (one session)
            // with an occasional hole of 7 (a new session).
            let rows: Vec<(i64, i64, i64)> = (0..200)
                .map(|k| {
                    (
                        k,
                        step * 3 + (k % 7) / 6 * 4 + (step / 10) * 2,
                        step * 1000 + k,
                    )
                })
                .collect();
            h.process(batch(&rows)).await.unwrap();
            if step % 4 == 3 {
                // A row bridging two sessions of key 7, out of order.
                h.process(batch(&[(7, step * 3 - 1, 1)])).await.unwrap();
            }
            if step % 5 == 4 {
                h.checkpoint(crate::message::CheckpointBarrier {
                    id: (step / 5 + 1) as u64,
                    timestamp_ms: 0,
                    then_stop: false,
                })
                .await
                .unwrap();
            }
            if step % 10 == 9 {
                h.commit((step / 5 + 1) as u64).await.unwrap();
            }
            h.watermark(Watermark(step * 3 - 8)).await.unwrap();
            // When a session fires matters as much as what it holds.
            out.extend(
                h.rows_as_strings()
                    .into_iter()
                    .map(|r| format!("{step}: {r}")),
            );
        }
        h.close().await.unwrap();
        out.extend(
            h.rows_as_strings()
                .into_iter()
                .map(|r| format!("close: {r}")),
        );
        out.sort();
        out
    }

    #[tokio::test]
    async fn spilled_sessions_emit_exactly_what_in_memory_sessions_emit() {
        let mut plain = OperatorHarness::new(Box::new(operator()));
        let expected = run_sessions(&mut plain).await;
        assert!(expected.len() > 200, "{}", expected.len());
        let store = crate::testing::TestStore::new();
        let mut h = OperatorHarness::new(Box::new(operator())).with_spill(store.store.clone(), 1);
        let got = run_sessions(&mut h).await;
        assert_eq!(got, expected);
        let spilled = h
            .context()
            .metrics
            .state_spilled_bytes
            .load(std::sync::atomic::Ordering::Relaxed);
        assert!(spilled > 0);
    }

    #[tokio::test]
    async fn a_session_in_memory_waits_for_the_spilled_session_it_overlaps() {
        let store = crate::testing::TestStore::new();
        // Room for a few sessions: the first batch spills, the second stays.
        let mut h =
            OperatorHarness::new(Box::new(operator())).with_spill(store.store.clone(), 4 << 10);
        let mut first: Vec<(i64, i64, i64)> = (100..300).map(|k| (k, 10, 1)).collect();
        first.extend([10, 14, 18, 22, 25].map(|t| (1, t, t)));
        h.process(batch(&first)).await.unwrap();
        assert!(
            h.context()
                .metrics
                .state_spilled_bytes
                .load(std::sync::atomic::Ordering::Relaxed)
                > 0
        );
        h.watermark(Watermark(5)).await.unwrap();
        // [12, 17) in memory overlaps the spilled [10, 30): one session.
        // Key 2's [9, 14), in memory too, overlaps nothing and fires.
        h.process(batch(&[(1, 12, 12), (2, 9, 2)])).await.unwrap();
        h.watermark(Watermark(16)).await.unwrap();
        let fired: Vec<String> = h
            .rows_as_strings()
            .into_iter()
            .filter(|r| r.starts_with("1,") || r.starts_with("2,"))
            .collect();
        assert_eq!(fired, vec!["2,9,14,1,2"]);
        h.close().await.unwrap();
        let key_1: Vec<String> = h
            .rows_as_strings()
            .into_iter()
            .filter(|r| r.starts_with("1,"))
            .collect();
        assert_eq!(key_1, vec!["1,10,30,6,101"]);
    }
}
