//! Test support: an [`OperatorHarness`] that drives one operator with
//! batches, watermarks and barriers and records what it emits.

use arrow::record_batch::RecordBatch;
use arrow::util::display::{ArrayFormatter, FormatOptions};

use crate::error::Result;
use crate::message::{CheckpointBarrier, Message, Watermark};
use crate::operator::{Collector, Operator, OperatorContext};

/// Drives one operator outside any runtime.
pub struct OperatorHarness {
    operator: Box<dyn Operator>,
    ctx: OperatorContext,
    output: Vec<Message>,
}

/// A RocksDB job store in a temporary directory, for operators that spill.
#[cfg(test)]
pub(crate) struct TestStore {
    /// The store.
    pub store: crate::state::JobStore,
    _dir: tempfile::TempDir,
}

#[cfg(test)]
impl TestStore {
    pub(crate) fn new() -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let backend = crate::state::StateBackend::open(crate::state::StateConfig {
            dir: dir.path().to_path_buf(),
            block_cache_bytes: 8 << 20,
            write_buffer_bytes: 8 << 20,
        })
        .expect("state backend");
        let store = backend.open_job("test", 1).expect("job store");
        Self { store, _dir: dir }
    }
}

impl OperatorHarness {
    /// A harness around `operator`, with a single-subtask context.
    pub fn new(operator: Box<dyn Operator>) -> Self {
        Self {
            operator,
            ctx: OperatorContext::for_test("under-test"),
            output: Vec::new(),
        }
    }

    /// The operator's context (counters, task info).
    pub fn context(&self) -> &OperatorContext {
        &self.ctx
    }

    /// The operator's context, to change (the current split, say).
    pub fn context_mut(&mut self) -> &mut OperatorContext {
        &mut self.ctx
    }

    /// Processing time read from `clock`.
    pub fn with_clock(mut self, clock: impl crate::clock::Clock + 'static) -> Self {
        self.ctx.clock = std::sync::Arc::new(clock);
        self
    }

    fn keep(&mut self, mut out: Collector) -> Result<()> {
        self.output.extend(out.drain()?);
        Ok(())
    }

    /// Feeds a batch.
    pub async fn process(&mut self, batch: RecordBatch) -> Result<()> {
        let mut out = Collector::new();
        self.operator
            .process_batch(batch, &mut self.ctx, &mut out)
            .await?;
        self.keep(out)
    }

    /// Feeds a batch of input `input` (a join's right side is 1).
    pub async fn process_input(&mut self, input: usize, batch: RecordBatch) -> Result<()> {
        let mut out = Collector::new();
        self.operator
            .process_input_batch(input, batch, &mut self.ctx, &mut out)
            .await?;
        self.keep(out)
    }

    /// Feeds a watermark; a forwarded watermark is recorded as output.
    pub async fn watermark(&mut self, watermark: Watermark) -> Result<()> {
        let mut out = Collector::new();
        self.ctx.current_watermark = watermark;
        if let Some(w) = self
            .operator
            .handle_watermark(watermark, &mut self.ctx, &mut out)
            .await?
        {
            out.emit_watermark(w);
        }
        self.keep(out)
    }

    /// Spills keyed state past `budget` bytes into `store`, as operator
    /// node 1 of the job.
    pub fn with_spill(mut self, store: crate::state::JobStore, budget: usize) -> Self {
        let spill = crate::operator::StateSpill::new(store, 1, &self.ctx.task, budget);
        self.ctx.spill = Some(spill);
        self
    }

    /// Feeds a checkpoint barrier.
    pub async fn checkpoint(&mut self, barrier: CheckpointBarrier) -> Result<()> {
        if let Some(spill) = &mut self.ctx.spill {
            spill.passed_barrier(barrier.id)?;
        }
        let mut out = Collector::new();
        self.operator
            .handle_checkpoint(&barrier, &mut self.ctx, &mut out)
            .await?;
        self.keep(out)
    }

    /// Snapshots the operator's state, as a checkpoint would.
    pub async fn snapshot(&mut self) -> Result<crate::operator::OperatorSnapshot> {
        let mut snapshot = crate::operator::OperatorSnapshot::default();
        self.operator
            .snapshot_state(&mut self.ctx, &mut snapshot)
            .await?;
        Ok(snapshot)
    }

    /// A harness around `operator` restored from `snapshot`, as a restart
    /// at the same parallelism would restore it.
    pub fn restored(
        mut operator: Box<dyn Operator>,
        snapshot: crate::operator::OperatorSnapshot,
    ) -> Result<Self> {
        let ctx = OperatorContext::for_test("under-test");
        let restore = crate::operator::OperatorRestore {
            keyed: snapshot
                .keyed
                .into_iter()
                .filter_map(|(kg, v)| v.map(|v| (kg, v)))
                .collect(),
            operator: snapshot.operator.into_iter().map(|v| (0, v)).collect(),
        };
        operator.restore_state(&ctx, restore)?;
        Ok(Self {
            operator,
            ctx,
            output: Vec::new(),
        })
    }

    /// A harness around `operator` running as `task`, restored from the
    /// `snapshots` of the old subtasks as a restore at another parallelism
    /// would: the keyed state of the key groups `task` owns now, and the
    /// operator state of old subtask `i` if `i` maps to `task`.
    pub fn restored_as(
        operator: Box<dyn Operator>,
        task: crate::operator::TaskInfo,
        snapshots: &[crate::operator::OperatorSnapshot],
    ) -> Result<Self> {
        Self::restore_into(operator, task, snapshots, None)
    }

    /// [`OperatorHarness::restored_as`] spilling past `budget` bytes into
    /// `store`, into which the restore of checkpoint `restored_from` copied
    /// the spilled state of `task`'s key groups (as operator node 1).
    pub fn restored_spilling(
        operator: Box<dyn Operator>,
        task: crate::operator::TaskInfo,
        snapshots: &[crate::operator::OperatorSnapshot],
        store: crate::state::JobStore,
        budget: usize,
        restored_from: crate::message::CheckpointId,
    ) -> Result<Self> {
        let spill =
            crate::operator::StateSpill::new(store, 1, &task, budget).restored_from(restored_from);
        Self::restore_into(operator, task, snapshots, Some(spill))
    }

    fn restore_into(
        mut operator: Box<dyn Operator>,
        task: crate::operator::TaskInfo,
        snapshots: &[crate::operator::OperatorSnapshot],
        spill: Option<crate::operator::StateSpill>,
    ) -> Result<Self> {
        let mut ctx = OperatorContext::for_test("under-test");
        ctx.spill = spill;
        let owned = task.key_groups();
        let mut restore = crate::operator::OperatorRestore::default();
        for (old, snapshot) in snapshots.iter().enumerate() {
            restore.keyed.extend(
                snapshot
                    .keyed
                    .iter()
                    .filter(|(kg, _)| owned.contains(kg))
                    .filter_map(|(kg, v)| v.clone().map(|v| (*kg, v))),
            );
            if old % task.parallelism.max(1) == task.subtask
                && let Some(state) = &snapshot.operator
            {
                restore.operator.push((old as u32, state.clone()));
            }
        }
        ctx.task = task;
        operator.restore_state(&ctx, restore)?;
        Ok(Self {
            operator,
            ctx,
            output: Vec::new(),
        })
    }

    /// Checkpoint `id` completed: the operator commits.
    pub async fn commit(&mut self, id: crate::message::CheckpointId) -> Result<()> {
        if let Some(spill) = &mut self.ctx.spill {
            spill.checkpoint_completed(id)?;
        }
        self.operator.handle_commit(id, &mut self.ctx).await
    }

    /// Ends the input.
    pub async fn close(&mut self) -> Result<()> {
        let mut out = Collector::new();
        self.operator.on_close(&mut self.ctx, &mut out).await?;
        self.keep(out)
    }

    /// A processing-time tick (see [`Operator::on_tick`]).
    pub async fn tick(&mut self) -> Result<()> {
        let mut out = Collector::new();
        self.operator.on_tick(&mut self.ctx, &mut out).await?;
        self.keep(out)
    }

    /// Takes the batches emitted so far.
    pub fn take_batches(&mut self) -> Vec<RecordBatch> {
        let (batches, rest): (Vec<_>, Vec<_>) = self
            .output
            .drain(..)
            .partition(|m| matches!(m, Message::Data(_)));
        self.output = rest;
        batches
            .into_iter()
            .filter_map(|m| match m {
                Message::Data(b) => Some(b),
                _ => None,
            })
            .collect()
    }

    /// Takes the watermarks emitted so far.
    pub fn take_watermarks(&mut self) -> Vec<Watermark> {
        let (wms, rest): (Vec<_>, Vec<_>) = self
            .output
            .drain(..)
            .partition(|m| matches!(m, Message::Watermark(_)));
        self.output = rest;
        wms.into_iter()
            .filter_map(|m| match m {
                Message::Watermark(w) => Some(w),
                _ => None,
            })
            .collect()
    }

    /// Takes the emitted rows, each formatted as comma-separated values.
    pub fn rows_as_strings(&mut self) -> Vec<String> {
        self.take_batches().iter().flat_map(format_rows).collect()
    }
}

/// Formats every row of a batch as comma-separated values (`NULL` for null).
pub fn format_rows(batch: &RecordBatch) -> Vec<String> {
    let options = FormatOptions::default().with_null("NULL");
    let formatters: Vec<_> = batch
        .columns()
        .iter()
        .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
        .collect::<std::result::Result<_, _>>()
        .unwrap_or_default();
    (0..batch.num_rows())
        .map(|row| {
            formatters
                .iter()
                .map(|f| f.value(row).to_string())
                .collect::<Vec<_>>()
                .join(",")
        })
        .collect()
}

/// Fixtures for the engine's own operator tests.
#[cfg(test)]
pub(crate) mod fixtures {
    use std::sync::Arc;

    use arrow::array::{Int64Array, RecordBatch};
    use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
    use datafusion::functions_aggregate::count::count_udaf;
    use datafusion::functions_aggregate::sum::sum_udaf;
    use datafusion::physical_expr::PhysicalExpr;
    use datafusion::physical_expr::aggregate::AggregateExprBuilder;
    use datafusion::physical_expr::expressions::Column;

    use crate::operator::{AggregateSpec, AggregateSpecRef};

    /// Rows of `(key, time, value)`, all BIGINT.
    pub fn input_schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("key", DataType::Int64, false),
            Field::new("time", DataType::Int64, false),
            Field::new("value", DataType::Int64, true),
        ]))
    }

    /// A batch of `(key, time, value)` rows.
    pub fn batch(rows: &[(i64, i64, i64)]) -> RecordBatch {
        RecordBatch::try_new(
            input_schema(),
            vec![
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1))),
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.2))),
            ],
        )
        .expect("valid batch")
    }

    /// `GROUP BY <groups> … COUNT(value), SUM(value)`; `groups` are
    /// `(name, input column)` pairs.
    pub fn count_sum(groups: &[(&str, usize)]) -> AggregateSpecRef {
        let input = input_schema();
        let value: Arc<dyn PhysicalExpr> = Arc::new(Column::new("value", 2));
        let count = AggregateExprBuilder::new(count_udaf(), vec![Arc::clone(&value)])
            .schema(Arc::clone(&input))
            .alias("cnt")
            .build()
            .expect("count");
        let sum = AggregateExprBuilder::new(sum_udaf(), vec![value])
            .schema(Arc::clone(&input))
            .alias("total")
            .build()
            .expect("sum");
        let group_fields: Vec<Field> = groups
            .iter()
            .map(|(n, _)| Field::new(*n, DataType::Int64, false))
            .collect();
        let mut out_fields = group_fields.clone();
        out_fields.push(Field::new("cnt", DataType::Int64, false));
        out_fields.push(Field::new("total", DataType::Int64, true));
        Arc::new(AggregateSpec {
            group_exprs: groups
                .iter()
                .map(|(n, i)| Arc::new(Column::new(n, *i)) as Arc<dyn PhysicalExpr>)
                .collect(),
            group_schema: Arc::new(Schema::new(group_fields)),
            aggregates: vec![Arc::new(count), Arc::new(sum)],
            filters: vec![None, None],
            output_schema: Arc::new(Schema::new(out_fields)),
            input_schema: input,
        })
    }
}
