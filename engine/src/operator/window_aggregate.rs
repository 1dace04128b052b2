//! Tumbling and hopping event-time window aggregation.
//!
//! Rows arrive with their window already assigned (see
//! [`WindowAssignerOperator`](super::WindowAssignerOperator)); one of the group
//! columns is the window's start or end. State is kept per window end; a
//! window fires when the watermark reaches its last millisecond
//! (`window_end - 1`, as in Flink) and its state is dropped. Rows for a
//! window that has already fired are late: dropped and counted.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use arrow::array::{Array, UInt32Array};
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;

use super::grouped_state::{AggregateSpecRef, GroupedState};
use super::{Collector, Operator, OperatorContext, OperatorFactory, TaskInfo};
use crate::error::Result;
use crate::message::Watermark;
use crate::time::to_epoch_millis;

/// Aggregates rows per group and window; emits each window once, when the
/// watermark passes its end.
#[derive(Debug)]
pub struct WindowAggregateOperator {
    spec: AggregateSpecRef,
    window_group: usize,
    end_offset_ms: i64,
    windows: BTreeMap<i64, GroupedState>,
    watermark: Watermark,
}

impl WindowAggregateOperator {
    /// `window_group` is the index of the group expression holding the
    /// window's start (then `end_offset_ms` is the window size) or end
    /// (then `end_offset_ms` is 0).
    pub fn new(spec: AggregateSpecRef, window_group: usize, end_offset_ms: i64) -> Self {
        Self {
            spec,
            window_group,
            end_offset_ms,
            windows: BTreeMap::new(),
            watermark: Watermark::MIN,
        }
    }

    /// Windows whose state is held.
    pub fn open_windows(&self) -> usize {
        self.windows.len()
    }

    fn fire_until(&mut self, watermark: Watermark, out: &mut Collector) -> Result<()> {
        // A window [start, end) is complete once the watermark reaches end - 1.
        let bound = watermark.0.saturating_add(1);
        while let Some(entry) = self.windows.first_entry() {
            if *entry.key() > bound {
                break;
            }
            let mut state = entry.remove();
            out.collect(state.emit(&self.spec.output_schema)?);
        }
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
}

impl WindowAggregateFactory {
    /// See [`WindowAggregateOperator::new`].
    pub fn new(spec: AggregateSpecRef, window_group: usize, end_offset_ms: i64) -> Self {
        Self {
            spec,
            window_group,
            end_offset_ms,
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
        Ok(Box::new(WindowAggregateOperator::new(
            Arc::clone(&self.spec),
            self.window_group,
            self.end_offset_ms,
        )))
    }
}

#[async_trait]
impl Operator for WindowAggregateOperator {
    async fn process_batch(
        &mut self,
        batch: RecordBatch,
        ctx: &mut OperatorContext,
        _out: &mut Collector,
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
                return Ok(());
            }
            let state = match self.windows.entry(end) {
                std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::btree_map::Entry::Vacant(v) => v.insert(self.spec.new_state()?),
            };
            return state.update(&input);
        }
        let mut rows_by_end: BTreeMap<i64, Vec<u32>> = BTreeMap::new();
        let mut late = 0;
        for (row, end) in window.iter().enumerate() {
            match end {
                Some(end) if end + offset > late_bound => rows_by_end
                    .entry(end + offset)
                    .or_default()
                    .push(row as u32),
                _ => late += 1,
            }
        }
        ctx.metrics.add_late(late);
        for (end, rows) in rows_by_end {
            let part = input.take(&UInt32Array::from(rows))?;
            let state = match self.windows.entry(end) {
                std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::btree_map::Entry::Vacant(v) => v.insert(self.spec.new_state()?),
            };
            state.update(&part)?;
        }
        Ok(())
    }

    async fn handle_watermark(
        &mut self,
        watermark: Watermark,
        _ctx: &mut OperatorContext,
        out: &mut Collector,
    ) -> Result<Option<Watermark>> {
        if watermark > self.watermark {
            self.watermark = watermark;
            self.fire_until(watermark, out)?;
        }
        Ok(Some(watermark))
    }

    async fn on_close(&mut self, _ctx: &mut OperatorContext, out: &mut Collector) -> Result<()> {
        // No more input: every open window is complete.
        self.fire_until(Watermark::MAX, out)
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
}
