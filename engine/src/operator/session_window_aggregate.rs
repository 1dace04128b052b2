//! Session window aggregation.
//!
//! Every row arrives as its own window `[ts, ts + gap)` (see
//! [`WindowAssignerOperator`](super::WindowAssignerOperator)). Per key, the
//! operator merges windows that overlap into sessions, merging their
//! accumulator states, and emits a session when the watermark passes its end.

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
use super::snapshot::{
    KeyedStateBuilder, OperatorRestore, OperatorSnapshot, decode_batches, decode_watermark,
    encode_watermark,
};
use super::{Collector, Operator, OperatorContext, OperatorFactory, TaskInfo};
use crate::error::{Error, Result};
use crate::message::Watermark;
use crate::time::{from_epoch_millis, to_epoch_millis};

struct Session {
    start: i64,
    end: i64,
    state: SingleGroupState,
}

/// Aggregates per key and session.
pub struct SessionWindowAggregateOperator {
    spec: AggregateSpecRef,
    single: AggregateSpec,
    start_group: usize,
    end_group: usize,
    gap_ms: i64,
    key_groups: Vec<usize>,
    converter: RowConverter,
    sessions: HashMap<OwnedRow, Vec<Session>>,
    watermark: Watermark,
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
        Ok(Self {
            converter: RowConverter::new(fields)?,
            single: spec.single_group(),
            spec,
            start_group,
            end_group,
            gap_ms,
            key_groups,
            sessions: HashMap::new(),
            watermark: Watermark::MIN,
        })
    }

    fn add_session(&mut self, key: OwnedRow, mut new: Session) -> Result<()> {
        let sessions = self.sessions.entry(key).or_default();
        let mut i = 0;
        while i < sessions.len() {
            let s = &sessions[i];
            if s.start < new.end && new.start < s.end {
                let old = sessions.swap_remove(i);
                new.start = new.start.min(old.start);
                new.end = new.end.max(old.end);
                new.state.merge(old.state)?;
            } else {
                i += 1;
            }
        }
        sessions.push(new);
        Ok(())
    }

    fn fire_until(&mut self, watermark: Watermark, out: &mut Collector) -> Result<()> {
        let bound = watermark.0.saturating_add(1);
        let mut fired: Vec<(OwnedRow, Session)> = Vec::new();
        self.sessions.retain(|key, sessions| {
            let mut i = 0;
            while i < sessions.len() {
                if sessions[i].end <= bound {
                    fired.push((key.clone(), sessions.swap_remove(i)));
                } else {
                    i += 1;
                }
            }
            !sessions.is_empty()
        });
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
}

impl SessionWindowAggregateFactory {
    /// See [`SessionWindowAggregateOperator::new`].
    pub fn new(spec: AggregateSpecRef, start_group: usize, end_group: usize, gap_ms: i64) -> Self {
        Self {
            spec,
            start_group,
            end_group,
            gap_ms,
        }
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
        Ok(Box::new(SessionWindowAggregateOperator::new(
            Arc::clone(&self.spec),
            self.start_group,
            self.end_group,
            self.gap_ms,
        )?))
    }
}

#[async_trait]
impl Operator for SessionWindowAggregateOperator {
    async fn process_batch(
        &mut self,
        batch: RecordBatch,
        ctx: &mut OperatorContext,
        _out: &mut Collector,
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
        let mut late = 0;
        for (i, t) in ts.iter().enumerate() {
            match t {
                Some(t) if t + self.gap_ms > late_bound => by_key
                    .entry(rows.row(i).owned())
                    .or_default()
                    .push((t, i as u32)),
                _ => late += 1,
            }
        }
        ctx.metrics.add_late(late);
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
                let session = Session {
                    start: run[0].0,
                    end: run[run.len() - 1].0 + self.gap_ms,
                    state,
                };
                self.add_session(key.clone(), session)?;
                run_start = i;
            }
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

    fn restore_state(&mut self, _ctx: &OperatorContext, restore: OperatorRestore) -> Result<()> {
        self.watermark = decode_watermark(&restore.operator)?;
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
                    self.sessions
                        .entry(keys.row(row).owned())
                        .or_default()
                        .push(Session {
                            start: starts.value(row),
                            end: ends.value(row),
                            state,
                        });
                }
            }
        }
        Ok(())
    }

    async fn on_close(&mut self, _ctx: &mut OperatorContext, out: &mut Collector) -> Result<()> {
        self.fire_until(Watermark::MAX, out)
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
}
