//! Non-windowed `GROUP BY` aggregation over an append-only stream. Results
//! are emitted once, when the input ends (a changelog mode that emits
//! updates as they happen comes with updating streams).
//!
//! With a spill store, state past the memory budget is written out as runs
//! (see [`StateSpill`](super::StateSpill)); the final emit then merges them
//! one key group at a time.

use std::fmt;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;

use super::grouped_state::{AggregateSpecRef, GroupedState};
use super::snapshot::{KeyedStateBuilder, OperatorRestore, OperatorSnapshot, decode_batches};
use super::{Collector, Operator, OperatorContext, OperatorFactory, TaskInfo};
use crate::error::{Error, Result};
use crate::message::Watermark;

/// Aggregates per group over the whole input; emits at end of input.
#[derive(Debug)]
pub struct GroupAggregateOperator {
    spec: AggregateSpecRef,
    state: Option<GroupedState>,
    /// Whether part of the state was written out as runs.
    spilled: bool,
    emitted: bool,
}

impl GroupAggregateOperator {
    /// An aggregate computing `spec`.
    pub fn new(spec: AggregateSpecRef) -> Self {
        Self {
            spec,
            state: None,
            spilled: false,
            emitted: false,
        }
    }
}

impl fmt::Display for GroupAggregateOperator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GroupAggregate: {}", self.spec)
    }
}

/// Creates [`GroupAggregateOperator`]s.
#[derive(Debug, Clone)]
pub struct GroupAggregateFactory {
    spec: AggregateSpecRef,
}

impl GroupAggregateFactory {
    /// See [`GroupAggregateOperator::new`].
    pub fn new(spec: AggregateSpecRef) -> Self {
        Self { spec }
    }
}

impl fmt::Display for GroupAggregateFactory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GroupAggregate: {}", self.spec)
    }
}

impl OperatorFactory for GroupAggregateFactory {
    fn name(&self) -> &str {
        "GroupAggregate"
    }
    fn output_schema(&self) -> SchemaRef {
        Arc::clone(&self.spec.output_schema)
    }
    fn create(&self, _task: &TaskInfo) -> Result<Box<dyn Operator>> {
        Ok(Box::new(GroupAggregateOperator::new(Arc::clone(
            &self.spec,
        ))))
    }
}

#[async_trait]
impl Operator for GroupAggregateOperator {
    async fn process_batch(
        &mut self,
        batch: RecordBatch,
        ctx: &mut OperatorContext,
        _out: &mut Collector,
    ) -> Result<()> {
        let input = self.spec.evaluate(&batch)?;
        let state = match &mut self.state {
            Some(state) => state,
            None => self.state.insert(self.spec.new_state()?),
        };
        state.update(&input)?;
        // A global aggregate has one row of state: nothing to spill.
        if let Some(spill) = &mut ctx.spill
            && !self.spec.group_exprs.is_empty()
            && state.size() > spill.budget()
            && let Some(state) = self.state.take()
        {
            let held = state.size();
            let written = spill.spill(SPILL_NAMESPACE, state, &self.key_columns(), &ctx.metrics)?;
            self.spilled = true;
            tracing::debug!(held, written, "spilled aggregate state");
        }
        Ok(())
    }

    /// The end-of-input watermark: emit now, so the results travel ahead of
    /// the final checkpoint's barrier.
    async fn handle_watermark(
        &mut self,
        watermark: Watermark,
        ctx: &mut OperatorContext,
        out: &mut Collector,
    ) -> Result<Option<Watermark>> {
        if watermark == Watermark::MAX {
            self.emit_all(ctx, out)?;
        }
        Ok(Some(watermark))
    }

    async fn snapshot_state(
        &mut self,
        ctx: &mut OperatorContext,
        snapshot: &mut OperatorSnapshot,
    ) -> Result<()> {
        let mut builder = KeyedStateBuilder::default();
        if let Some(state) = &mut self.state {
            let (columns, rows) = state.snapshot_columns()?;
            builder.add_rows(&columns, &self.key_columns(), rows, ctx.task.max_key_groups)?;
        }
        snapshot.put_key_groups(ctx.task.key_groups(), builder.finish()?)?;
        snapshot.operator = Some(vec![u8::from(self.emitted)]);
        Ok(())
    }

    fn restore_state(&mut self, ctx: &OperatorContext, restore: OperatorRestore) -> Result<()> {
        // Emitted everywhere or nowhere: the flag is set at the same watermark.
        self.emitted = restore.operator.iter().any(|(_, v)| v.first() == Some(&1));
        if let Some(spill) = &ctx.spill {
            self.spilled = !spill.namespaces()?.is_empty();
        }
        let widths = self.spec.state_widths()?;
        for (_, bytes) in restore.keyed {
            for (columns, rows) in decode_batches(&bytes)? {
                let state = match &mut self.state {
                    Some(state) => state,
                    None => self.state.insert(self.spec.new_state()?),
                };
                state.restore_columns(&columns, rows, &widths)?;
            }
        }
        Ok(())
    }

    async fn on_close(&mut self, ctx: &mut OperatorContext, out: &mut Collector) -> Result<()> {
        self.emit_all(ctx, out)
    }
}

/// The namespace of the aggregate's runs: it has one.
const SPILL_NAMESPACE: u64 = 0;

impl GroupAggregateOperator {
    /// The state columns the job's shuffle hashes: every group column.
    fn key_columns(&self) -> Vec<usize> {
        (0..self.spec.group_exprs.len()).collect()
    }

    /// Emits every group once: at the end-of-input watermark or at close.
    fn emit_all(&mut self, ctx: &mut OperatorContext, out: &mut Collector) -> Result<()> {
        if std::mem::replace(&mut self.emitted, true) {
            return Ok(());
        }
        if self.spilled {
            let spill = ctx
                .spill
                .as_mut()
                .ok_or_else(|| Error::internal("the aggregate has runs but no spill store"))?;
            let key_columns = self.key_columns();
            return spill.emit(
                SPILL_NAMESPACE,
                self.state.take(),
                &self.spec,
                &key_columns,
                &ctx.metrics,
                out,
            );
        }
        let state = match self.state.take() {
            Some(state) => state,
            // A global aggregate emits its row even over no input, but only
            // from one subtask.
            None if self.spec.group_exprs.is_empty() && ctx.task.subtask == 0 => {
                self.spec.new_state()?
            }
            None => return Ok(()),
        };
        let mut state = state;
        out.collect(state.emit(&self.spec.output_schema)?);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::OperatorHarness;
    use crate::testing::fixtures::{batch, count_sum};

    #[tokio::test]
    async fn emits_every_group_at_end_of_input() {
        let mut h = OperatorHarness::new(Box::new(GroupAggregateOperator::new(count_sum(&[(
            "key", 0,
        )]))));
        h.process(batch(&[(1, 0, 5), (2, 0, 7)])).await.unwrap();
        h.process(batch(&[(1, 0, 3)])).await.unwrap();
        h.watermark(crate::message::Watermark(100)).await.unwrap();
        assert!(h.take_batches().is_empty());
        h.close().await.unwrap();
        let mut rows = h.rows_as_strings();
        rows.sort();
        assert_eq!(rows, vec!["1,2,8", "2,1,7"]);
    }

    #[tokio::test]
    async fn restores_from_a_snapshot() {
        let spec = || count_sum(&[("key", 0)]);
        let mut h = OperatorHarness::new(Box::new(GroupAggregateOperator::new(spec())));
        h.process(batch(&[(1, 0, 5), (2, 0, 7)])).await.unwrap();
        let snapshot = h.snapshot().await.unwrap();
        let op = Box::new(GroupAggregateOperator::new(spec()));
        let mut restored = OperatorHarness::restored(op, snapshot).unwrap();
        restored.process(batch(&[(1, 0, 3)])).await.unwrap();
        restored.close().await.unwrap();
        let mut rows = restored.rows_as_strings();
        rows.sort();
        assert_eq!(rows, vec!["1,2,8", "2,1,7"]);
    }

    #[tokio::test]
    async fn a_global_aggregate_has_one_row_even_without_input() {
        let mut h = OperatorHarness::new(Box::new(GroupAggregateOperator::new(count_sum(&[]))));
        h.close().await.unwrap();
        assert_eq!(h.rows_as_strings(), vec!["0,NULL"]);
    }

    #[tokio::test]
    async fn spilled_state_emits_exactly_what_in_memory_state_emits() {
        let batches: Vec<RecordBatch> = (0..40)
            .map(|b| {
                batch(
                    &(0..200)
                        .map(|i| ((b * 7 + i) % 500, 0, i))
                        .collect::<Vec<_>>(),
                )
            })
            .collect();
        let run = |spill: Option<crate::state::JobStore>| {
            let batches = batches.clone();
            async move {
                let op = Box::new(GroupAggregateOperator::new(count_sum(&[("key", 0)])));
                let mut h = OperatorHarness::new(op);
                if let Some(store) = spill {
                    h = h.with_spill(store, 1);
                }
                for b in batches {
                    h.process(b).await.unwrap();
                }
                h.watermark(Watermark::MAX).await.unwrap();
                let spilled = h
                    .context()
                    .metrics
                    .state_spilled_bytes
                    .load(std::sync::atomic::Ordering::Relaxed);
                let mut rows = h.rows_as_strings();
                rows.sort();
                (rows, spilled)
            }
        };
        let (expected, none) = run(None).await;
        let keys: std::collections::BTreeSet<i64> = (0..40)
            .flat_map(|b| (0..200).map(move |i| (b * 7 + i) % 500))
            .collect();
        assert_eq!((expected.len(), none), (keys.len(), 0));
        let store = crate::testing::TestStore::new();
        let (rows, spilled) = run(Some(store.store.clone())).await;
        assert!(spilled > 0);
        assert_eq!(rows, expected);
        assert_eq!(
            store.store.run_namespaces(1, &(0..128)).unwrap(),
            Vec::<u64>::new()
        );
    }
}
