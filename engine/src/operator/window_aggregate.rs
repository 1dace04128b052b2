//! Tumbling and hopping event-time window aggregation.
//!
//! Rows arrive with their window already assigned (see
//! [`WindowAssignerOperator`](super::WindowAssignerOperator)); one of the group
//! columns is the window's start or end. State is kept per window end; a
//! window fires when the watermark reaches its last millisecond
//! (`window_end - 1`, as in Flink) and its state is dropped. Rows for a
//! window that has already fired are late: counted, and dropped or, with a
//! late-rows output, emitted there (see [`LateRows`]).
//!
//! With a spill store, state past the memory budget is written out as runs
//! (see [`StateSpill`](super::StateSpill)) under the window's end, and a
//! window with runs is emitted from them one key group at a time.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use arrow::array::{Array, UInt32Array};
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;

use super::grouped_state::{AggregateSpecRef, GroupedState};
use super::late_rows::LateRows;
use super::snapshot::{
    KeyedStateBuilder, OperatorRestore, OperatorSnapshot, decode_batches, decode_watermark,
    encode_watermark,
};
use super::{Collector, Operator, OperatorContext, OperatorFactory, TaskInfo};
use crate::error::{Error, Result};
use crate::message::Watermark;
use crate::state::{namespace_of, namespace_value};
use crate::time::to_epoch_millis;
use tracing::debug;

/// Aggregates rows per group and window; emits each window once, when the
/// watermark passes its end.
#[derive(Debug)]
pub struct WindowAggregateOperator {
    spec: AggregateSpecRef,
    window_group: usize,
    end_offset_ms: i64,
    windows: BTreeMap<i64, GroupedState>,
    /// Ends of the windows with state spilled as runs.
    spilled: BTreeSet<i64>,
    watermark: Watermark,
    /// The group columns the job's shuffle hashes (the non-window keys).
    key_columns: Vec<usize>,
    /// Where late rows go, if anywhere.
    late_rows: Option<LateRows>,
}

impl WindowAggregateOperator {
    /// `window_group` is the index of the group expression holding the
    /// window's start (then `end_offset_ms` is the window size) or end
    /// (then `end_offset_ms` is 0).
    pub fn new(spec: AggregateSpecRef, window_group: usize, end_offset_ms: i64) -> Self {
        let key_columns = (0..spec.group_exprs.len())
            .filter(|&g| g != window_group)
            .collect();
        Self {
            spec,
            window_group,
            end_offset_ms,
            windows: BTreeMap::new(),
            spilled: BTreeSet::new(),
            watermark: Watermark::MIN,
            key_columns,
            late_rows: None,
        }
    }

    /// Emits late rows on the late-rows output instead of dropping them.
    pub fn with_late_rows(mut self) -> Self {
        self.late_rows = Some(LateRows::new(&self.spec.input_schema));
        self
    }

    /// The group columns the shuffle hashes, when other group columns than
    /// the window's (e.g. `window_start` beside `window_end`) are not keys.
    pub fn with_key_columns(mut self, key_columns: Vec<usize>) -> Self {
        self.key_columns = key_columns;
        self
    }

    /// Windows whose state is held (in memory or spilled).
    pub fn open_windows(&self) -> usize {
        self.windows
            .keys()
            .chain(&self.spilled)
            .collect::<BTreeSet<_>>()
            .len()
    }

    fn fire_until(
        &mut self,
        watermark: Watermark,
        ctx: &mut OperatorContext,
        out: &mut Collector,
    ) -> Result<()> {
        // A window [start, end) is complete once the watermark reaches end - 1.
        let bound = watermark.0.saturating_add(1);
        loop {
            let in_memory = self.windows.first_key_value().map(|(&end, _)| end);
            let on_disk = self.spilled.first().copied();
            let Some(end) = in_memory.into_iter().chain(on_disk).min() else {
                break;
            };
            if end > bound {
                break;
            }
            let memory = self.windows.remove(&end);
            if self.spilled.remove(&end) {
                let spill = ctx.spill.as_mut().ok_or_else(|| {
                    Error::internal("a window has runs but there is no spill store")
                })?;
                spill.emit(
                    namespace_of(end),
                    memory,
                    &self.spec,
                    &self.key_columns,
                    &ctx.metrics,
                    out,
                )?;
            } else if let Some(mut state) = memory {
                out.collect(state.emit(&self.spec.output_schema)?);
            }
        }
        Ok(())
    }

    /// Past the memory budget, writes every open window's state as runs.
    fn spill_if_over_budget(&mut self, ctx: &mut OperatorContext) -> Result<()> {
        let Some(spill) = &mut ctx.spill else {
            return Ok(());
        };
        let held: usize = self.windows.values().map(GroupedState::size).sum();
        if held <= spill.budget() {
            return Ok(());
        }
        let mut written = 0;
        for (end, state) in std::mem::take(&mut self.windows) {
            written += spill.spill(namespace_of(end), state, &self.key_columns, &ctx.metrics)?;
            self.spilled.insert(end);
        }
        debug!(
            held,
            written,
            windows = self.spilled.len(),
            "spilled window state"
        );
        Ok(())
    }
}

impl fmt::Display for WindowAggregateOperator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let window = self.spec.group_schema.field(self.window_group).name();
        write!(f, "WindowAggregate: window={window}, {}", self.spec)
    }
}

/// Creates [`WindowAggregateOperator`]s.
#[derive(Debug, Clone)]
pub struct WindowAggregateFactory {
    spec: AggregateSpecRef,
    window_group: usize,
    end_offset_ms: i64,
    key_columns: Option<Vec<usize>>,
    late_rows: bool,
}

impl WindowAggregateFactory {
    /// See [`WindowAggregateOperator::new`].
    pub fn new(spec: AggregateSpecRef, window_group: usize, end_offset_ms: i64) -> Self {
        Self {
            spec,
            window_group,
            end_offset_ms,
            key_columns: None,
            late_rows: false,
        }
    }

    /// See [`WindowAggregateOperator::with_late_rows`].
    pub fn with_late_rows(mut self) -> Self {
        self.late_rows = true;
        self
    }

    /// See [`WindowAggregateOperator::with_key_columns`].
    pub fn with_key_columns(mut self, key_columns: Vec<usize>) -> Self {
        self.key_columns = Some(key_columns);
        self
    }

    fn operator(&self) -> WindowAggregateOperator {
        let op = WindowAggregateOperator::new(
            Arc::clone(&self.spec),
            self.window_group,
            self.end_offset_ms,
        );
        let op = match &self.key_columns {
            Some(keys) => op.with_key_columns(keys.clone()),
            None => op,
        };
        if self.late_rows {
            op.with_late_rows()
        } else {
            op
        }
    }
}

impl fmt::Display for WindowAggregateFactory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        WindowAggregateOperator::new(
            Arc::clone(&self.spec),
            self.window_group,
            self.end_offset_ms,
        )
        .fmt(f)
    }
}

impl OperatorFactory for WindowAggregateFactory {
    fn name(&self) -> &str {
        "WindowAggregate"
    }
    fn output_schema(&self) -> SchemaRef {
        Arc::clone(&self.spec.output_schema)
    }
    fn create(&self, _task: &TaskInfo) -> Result<Box<dyn Operator>> {
        Ok(Box::new(self.operator()))
    }
}

#[async_trait]
impl Operator for WindowAggregateOperator {
    async fn process_batch(
        &mut self,
        batch: RecordBatch,
        ctx: &mut OperatorContext,
        out: &mut Collector,
    ) -> Result<()> {
        let input = self.spec.evaluate(&batch)?;
        let window = to_epoch_millis(&input.keys[self.window_group])?;
        let offset = self.end_offset_ms;
        let late_bound = self.watermark.0.saturating_add(1);
        let ends = window.values();
        // Fast path: every row in one open window (the usual case for tumbling windows).
        if window.null_count() == 0 && !ends.is_empty() && ends.iter().all(|&e| e == ends[0]) {
            let end = ends[0] + offset;
            if end <= late_bound {
                ctx.metrics.add_late(input.num_rows);
                if let Some(late) = &self.late_rows {
                    late.emit(&batch, None, self.watermark, ctx, out)?;
                }
                return Ok(());
            }
            let state = match self.windows.entry(end) {
                std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::btree_map::Entry::Vacant(v) => v.insert(self.spec.new_state()?),
            };
            state.update(&input)?;
            return self.spill_if_over_budget(ctx);
        }
        let mut rows_by_end: BTreeMap<i64, Vec<u32>> = BTreeMap::new();
        let mut late: Vec<u32> = Vec::new();
        for (row, end) in window.iter().enumerate() {
            match end {
                Some(end) if end + offset > late_bound => rows_by_end
                    .entry(end + offset)
                    .or_default()
                    .push(row as u32),
                _ => late.push(row as u32),
            }
        }
        ctx.metrics.add_late(late.len());
        if let Some(rows) = &self.late_rows {
            rows.emit(&batch, Some(&late), self.watermark, ctx, out)?;
        }
        for (end, rows) in rows_by_end {
            let part = input.take(&UInt32Array::from(rows))?;
            let state = match self.windows.entry(end) {
                std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::btree_map::Entry::Vacant(v) => v.insert(self.spec.new_state()?),
            };
            state.update(&part)?;
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

    /// Keyed state rows: the window's end, the group columns, the
    /// accumulators' state; the watermark as operator state.
    async fn snapshot_state(
        &mut self,
        ctx: &mut OperatorContext,
        snapshot: &mut OperatorSnapshot,
    ) -> Result<()> {
        let mut builder = KeyedStateBuilder::default();
        let key_columns: Vec<usize> = self.key_columns.iter().map(|g| g + 1).collect();
        for (&end, state) in &mut self.windows {
            let (columns, rows) = state.snapshot_columns()?;
            let mut with_end: Vec<arrow::array::ArrayRef> = Vec::with_capacity(columns.len() + 1);
            with_end.push(Arc::new(arrow::array::Int64Array::from(vec![end; rows])));
            with_end.extend(columns);
            builder.add_rows(&with_end, &key_columns, rows, ctx.task.max_key_groups)?;
        }
        snapshot.put_key_groups(ctx.task.key_groups(), builder.finish()?)?;
        snapshot.operator = Some(encode_watermark(self.watermark));
        Ok(())
    }

    fn restore_state(&mut self, ctx: &OperatorContext, restore: OperatorRestore) -> Result<()> {
        self.watermark = decode_watermark(&restore.operator)?;
        // Runs restored into the spill store: their windows are open too.
        if let Some(spill) = &ctx.spill {
            self.spilled = spill
                .namespaces()?
                .into_iter()
                .map(namespace_value)
                .collect();
        }
        let widths = self.spec.state_widths()?;
        for (_, bytes) in restore.keyed {
            for (columns, rows) in decode_batches(&bytes)? {
                let ends = columns
                    .first()
                    .and_then(|c| c.as_any().downcast_ref::<arrow::array::Int64Array>())
                    .ok_or_else(|| Error::internal("checkpointed window state lacks its ends"))?
                    .clone();
                let mut by_end: BTreeMap<i64, Vec<u32>> = BTreeMap::new();
                for (row, end) in ends.values().iter().enumerate().take(rows) {
                    by_end.entry(*end).or_default().push(row as u32);
                }
                for (end, indices) in by_end {
                    let indices = UInt32Array::from(indices);
                    let part = columns[1..]
                        .iter()
                        .map(|c| Ok(arrow::compute::take(c.as_ref(), &indices, None)?))
                        .collect::<Result<Vec<_>>>()?;
                    let state = match self.windows.entry(end) {
                        std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                        std::collections::btree_map::Entry::Vacant(v) => {
                            v.insert(self.spec.new_state()?)
                        }
                    };
                    state.restore_columns(&part, indices.len(), &widths)?;
                }
            }
        }
        Ok(())
    }

    async fn on_close(&mut self, ctx: &mut OperatorContext, out: &mut Collector) -> Result<()> {
        // No more input: every open window is complete.
        self.fire_until(Watermark::MAX, ctx, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::OperatorHarness;
    use crate::testing::fixtures::{batch, count_sum};

    fn sorted(mut rows: Vec<String>) -> Vec<String> {
        rows.sort();
        rows
    }

    #[tokio::test]
    async fn fires_each_window_once_when_the_watermark_passes_its_end() {
        // Group by key and window end (the `time` column holds the end here).
        let op = WindowAggregateOperator::new(count_sum(&[("key", 0), ("window_end", 1)]), 1, 0);
        let mut h = OperatorHarness::new(Box::new(op));
        h.process(batch(&[(1, 10, 5), (2, 10, 7), (1, 20, 1)]))
            .await
            .unwrap();
        h.process(batch(&[(1, 10, 3)])).await.unwrap();
        h.watermark(Watermark(8)).await.unwrap();
        assert!(
            h.take_batches().is_empty(),
            "window [.., 10) is not complete at 8"
        );
        h.watermark(Watermark(9)).await.unwrap();
        assert_eq!(sorted(h.rows_as_strings()), vec!["1,10,2,8", "2,10,1,7"]);
        // Late: window 10 already fired.
        h.process(batch(&[(1, 10, 100), (3, 20, 4)])).await.unwrap();
        assert_eq!(
            h.context()
                .metrics
                .late_records_dropped
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );
        h.close().await.unwrap();
        assert_eq!(sorted(h.rows_as_strings()), vec!["1,20,1,1", "3,20,1,4"]);
    }

    #[tokio::test]
    async fn restores_from_a_snapshot_and_goes_on_as_if_uninterrupted() {
        let spec = || count_sum(&[("key", 0), ("window_end", 1)]);
        let first = [(1, 10, 5), (2, 10, 7), (1, 20, 1), (3, 30, 2)];
        let second = [(1, 10, 3), (2, 20, 4), (3, 30, 6)];
        // Undisturbed.
        let mut plain = OperatorHarness::new(Box::new(WindowAggregateOperator::new(spec(), 1, 0)));
        plain.process(batch(&first)).await.unwrap();
        plain.watermark(Watermark(5)).await.unwrap();
        plain.process(batch(&second)).await.unwrap();
        plain.close().await.unwrap();
        let expected = sorted(plain.rows_as_strings());
        // Snapshotted after the first batch (twice: taking one must not
        // change the state), restored into a new operator.
        let mut h = OperatorHarness::new(Box::new(WindowAggregateOperator::new(spec(), 1, 0)));
        h.process(batch(&first)).await.unwrap();
        h.watermark(Watermark(5)).await.unwrap();
        let _ = h.snapshot().await.unwrap();
        let snapshot = h.snapshot().await.unwrap();
        assert!(snapshot.keyed.iter().any(|(_, v)| v.is_some()));
        let op = Box::new(WindowAggregateOperator::new(spec(), 1, 0));
        let mut restored = OperatorHarness::restored(op, snapshot).unwrap();
        restored.process(batch(&second)).await.unwrap();
        restored.close().await.unwrap();
        assert_eq!(sorted(restored.rows_as_strings()), expected);
        // The original, snapshotted twice, still gives the same result.
        h.process(batch(&second)).await.unwrap();
        h.close().await.unwrap();
        assert_eq!(sorted(h.rows_as_strings()), expected);
    }

    #[tokio::test]
    async fn window_start_column_with_size_offset() {
        // The `time` column holds window starts; windows are 10 long.
        let op = WindowAggregateOperator::new(count_sum(&[("window_start", 1)]), 0, 10);
        let mut h = OperatorHarness::new(Box::new(op));
        h.process(batch(&[(1, 0, 1), (1, 10, 2), (2, 0, 3)]))
            .await
            .unwrap();
        h.watermark(Watermark(9)).await.unwrap();
        assert_eq!(h.rows_as_strings(), vec!["0,2,4"]);
        h.watermark(Watermark::MAX).await.unwrap();
        assert_eq!(h.rows_as_strings(), vec!["10,1,2"]);
    }

    /// Rows over three windows (ends 10, 20, 30) and 300 keys, in batches.
    fn many_rows() -> Vec<RecordBatch> {
        let rows: Vec<(i64, i64, i64)> =
            (0..6000).map(|i| (i % 300, 10 * (1 + i % 3), i)).collect();
        rows.chunks(250).map(batch).collect()
    }

    async fn run_windows(h: &mut OperatorHarness) -> Vec<String> {
        let mut rows = Vec::new();
        for (i, b) in many_rows().into_iter().enumerate() {
            h.process(b).await.unwrap();
            if i == 12 {
                h.watermark(Watermark(9)).await.unwrap();
                rows.extend(h.rows_as_strings());
            }
        }
        h.close().await.unwrap();
        rows.extend(h.rows_as_strings());
        sorted(rows)
    }

    #[tokio::test]
    async fn spilled_windows_emit_exactly_what_in_memory_windows_emit() {
        let spec = || count_sum(&[("key", 0), ("window_end", 1)]);
        let mut plain = OperatorHarness::new(Box::new(WindowAggregateOperator::new(spec(), 1, 0)));
        let expected = run_windows(&mut plain).await;
        // Key i % 300 falls in window 10 * (1 + i % 3): 300 groups.
        assert_eq!(expected.len(), 300);
        let store = crate::testing::TestStore::new();
        // A budget of one byte: every batch's state goes out as runs.
        let op = WindowAggregateOperator::new(spec(), 1, 0);
        let mut h = OperatorHarness::new(Box::new(op)).with_spill(store.store.clone(), 1);
        assert_eq!(run_windows(&mut h).await, expected);
        let spilled = h
            .context()
            .metrics
            .state_spilled_bytes
            .load(std::sync::atomic::Ordering::Relaxed);
        assert!(spilled > 0);
        // Emitted windows leave no runs behind.
        assert_eq!(
            store.store.run_namespaces(1, &(0..128)).unwrap(),
            Vec::<u64>::new()
        );
    }

    fn barrier_at(id: u64) -> crate::message::CheckpointBarrier {
        crate::message::CheckpointBarrier {
            id,
            timestamp_ms: 0,
            then_stop: false,
        }
    }

    #[tokio::test]
    async fn runs_of_a_fired_window_stay_until_the_checkpoint_after_them_resolves() {
        let store = crate::testing::TestStore::new();
        let spec = count_sum(&[("key", 0), ("window_end", 1)]);
        let op = WindowAggregateOperator::new(spec, 1, 0);
        let mut h = OperatorHarness::new(Box::new(op)).with_spill(store.store.clone(), 1);
        h.process(batch(&[(1, 10, 5), (2, 20, 7)])).await.unwrap();
        h.checkpoint(barrier_at(1)).await.unwrap();
        h.watermark(Watermark(9)).await.unwrap();
        assert_eq!(h.rows_as_strings(), vec!["1,10,1,5"]);
        // Checkpoint 1's local snapshot may not be taken yet: it needs them.
        let namespaces = |s: &crate::state::JobStore| s.run_namespaces(1, &(0..128)).unwrap();
        assert_eq!(
            namespaces(&store.store),
            [namespace_of(10), namespace_of(20)]
        );
        h.commit(1).await.unwrap();
        assert_eq!(namespaces(&store.store), [namespace_of(20)]);
        // The next barrier releases them too: the coordinator triggers it
        // only once checkpoint 2 completed or was given up.
        h.process(batch(&[(1, 30, 1)])).await.unwrap();
        h.checkpoint(barrier_at(2)).await.unwrap();
        h.watermark(Watermark(19)).await.unwrap();
        assert_eq!(h.rows_as_strings(), vec!["2,20,1,7"]);
        assert_eq!(
            namespaces(&store.store),
            [namespace_of(20), namespace_of(30)]
        );
        h.checkpoint(barrier_at(3)).await.unwrap();
        assert_eq!(namespaces(&store.store), [namespace_of(30)]);
        h.close().await.unwrap();
        assert_eq!(h.rows_as_strings(), vec!["1,30,1,1"]);
    }
}
