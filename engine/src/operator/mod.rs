//! The [`Operator`] trait and the operators of the dataflow core.
//!
//! An operator is created per subtask by an [`OperatorFactory`] (the node of
//! the graph) and driven by the runtime: batches go to
//! [`Operator::process_batch`], watermarks to [`Operator::handle_watermark`],
//! barriers to [`Operator::handle_checkpoint`], and the end of input to
//! [`Operator::on_close`]. Output goes into a [`Collector`].

use std::fmt;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;

use crate::clock::Clock;
use crate::error::Result;
use crate::graph::OutputPort;
use crate::message::{CheckpointBarrier, CheckpointId, Message, Watermark};
use crate::metrics::{TaskMetrics, UnmatchedAt};
use crate::partition::{KeyGroup, key_group_range};

/// Implements [`OperatorFactory`] for a stateless operator that is its own
/// factory: every subtask gets a clone. The type needs a `schema` field.
macro_rules! self_factory {
    ($ty:ty, $name:literal) => {
        impl $crate::operator::OperatorFactory for $ty {
            fn name(&self) -> &str {
                $name
            }
            fn output_schema(&self) -> arrow::datatypes::SchemaRef {
                std::sync::Arc::clone(&self.schema)
            }
            fn create(
                &self,
                _task: &$crate::operator::TaskInfo,
            ) -> $crate::error::Result<Box<dyn $crate::operator::Operator>> {
                Ok(Box::new(self.clone()))
            }
        }
    };
}

mod changelog_normalize;
mod evictable;
mod filter;
mod group_aggregate;
mod group_slots;
mod grouped_state;
mod join;
mod late_rows;
mod limit;
mod processing_time;
mod projection;
mod retractable;
mod session_spill;
mod session_window_aggregate;
mod sink;
mod snapshot;
mod sort;
mod spill;
mod top_n;
mod updating_aggregate;
mod updating_limit;
mod watermark_generator;
mod window_aggregate;
mod window_assigner;
mod window_top_n;

pub use changelog_normalize::{ChangelogNormalizeFactory, ChangelogNormalizeOperator};
pub use filter::FilterOperator;
pub use group_aggregate::{GroupAggregateFactory, GroupAggregateOperator};
pub use grouped_state::{
    AggregateInput, AggregateSpec, AggregateSpecRef, GroupedState, SingleGroupState,
};
pub use join::{IntervalBounds, JoinCondition, JoinFactory, JoinKind, JoinOperator, Side};
pub use late_rows::{LATE_OPERATOR_COLUMN, LATE_WATERMARK_COLUMN, LateRows};
pub use limit::LimitOperator;
pub use processing_time::ProcessingTimeWatermarkOperator;
pub use projection::ProjectionOperator;
pub use retractable::{UPDATING_AGGREGATE_FUNCTIONS, check_updating_aggregate};
pub use session_window_aggregate::{SessionWindowAggregateFactory, SessionWindowAggregateOperator};
pub use sink::{ChannelSinkNode, SinkNode, SinkOperator};
pub use snapshot::{
    KeyedStateBuilder, OperatorRestore, OperatorSnapshot, decode_batches, decode_watermark,
    encode_batch, encode_watermark,
};
pub use sort::SortOperator;
pub use spill::StateSpill;
pub use top_n::{RankFunction, TopNFactory, TopNOperator};
pub use updating_aggregate::{MiniBatch, UpdatingAggregateFactory, UpdatingAggregateOperator};
pub use updating_limit::{SnapshotAt, UpdatingLimitFactory, UpdatingLimitOperator};
pub use watermark_generator::WatermarkGeneratorOperator;
pub use window_aggregate::{WindowAggregateFactory, WindowAggregateOperator};
pub use window_assigner::{WindowAssignerOperator, WindowKind};
pub use window_top_n::{WindowTopNFactory, WindowTopNOperator};

/// Where a subtask runs in its job.
#[derive(Debug, Clone)]
pub struct TaskInfo {
    /// The job's name.
    pub job: String,
    /// The job's id: unique among the jobs of a cluster, the same for every
    /// attempt of the job.
    pub job_id: String,
    /// The job's attempt: 0, then one more per restart (or rescale).
    pub attempt: u32,
    /// The operator's (or chain's) display name.
    pub operator: String,
    /// This subtask's index, `0..parallelism`.
    pub subtask: usize,
    /// The operator's parallelism.
    pub parallelism: usize,
    /// The job's number of key groups.
    pub max_key_groups: u32,
}

impl TaskInfo {
    /// A task info for tests and single-subtask use.
    pub fn single(operator: impl Into<String>) -> Self {
        TaskInfo {
            job: "test".into(),
            job_id: "test".into(),
            attempt: 0,
            operator: operator.into(),
            subtask: 0,
            parallelism: 1,
            max_key_groups: crate::partition::DEFAULT_MAX_KEY_GROUPS,
        }
    }

    /// The key groups whose keyed state this subtask owns.
    pub fn key_groups(&self) -> std::ops::Range<KeyGroup> {
        key_group_range(self.subtask, self.max_key_groups, self.parallelism)
    }
}

/// What an operator sees of its subtask: identity, counters, time.
#[derive(Debug, Clone)]
pub struct OperatorContext {
    /// Identity of the subtask.
    pub task: TaskInfo,
    /// The subtask's counters.
    pub metrics: Arc<TaskMetrics>,
    /// Processing time.
    pub clock: Arc<dyn Clock>,
    /// The last watermark this operator received.
    pub current_watermark: Watermark,
    /// The source split (a Kafka partition, say) the batch being processed
    /// came from, when its source reads one split per batch; watermark
    /// generators keep one watermark per split.
    pub split: Option<u32>,
    /// Where keyed state goes past its memory budget; `None` keeps all
    /// state in memory.
    pub spill: Option<StateSpill>,
    /// Asks for the whole job to stop gracefully.
    pub job_stop: JobStop,
}

/// Lets an operator ask for its job to stop gracefully, as `weir stop`
/// does: sources stop, in-flight data drains, sinks flush. A `LIMIT` that
/// has passed its last row asks, so a query over an unbounded source ends.
#[derive(Debug, Clone)]
pub struct JobStop {
    requested: Arc<tokio::sync::watch::Sender<bool>>,
}

impl Default for JobStop {
    /// A handle nobody watches (tests, planning).
    fn default() -> Self {
        Self::new(Arc::new(tokio::sync::watch::channel(false).0))
    }
}

impl JobStop {
    /// A handle that sets `requested`.
    pub(crate) fn new(requested: Arc<tokio::sync::watch::Sender<bool>>) -> Self {
        Self { requested }
    }

    /// Asks for the job to stop (idempotent).
    pub fn request(&self) {
        self.requested
            .send_if_modified(|requested| !std::mem::replace(requested, true));
    }

    /// True once a stop was asked for.
    pub fn is_requested(&self) -> bool {
        *self.requested.borrow()
    }
}

impl OperatorContext {
    /// Counts `rows` retractions `at` dropped because it does not hold what
    /// they retract (`weir_unmatched_deletes_total`), and warns about them,
    /// at most once per [`UNMATCHED_WARNING_INTERVAL_MS`](crate::metrics::UNMATCHED_WARNING_INTERVAL_MS)
    /// of processing time per subtask.
    pub fn unmatched_retractions(&self, at: UnmatchedAt, rows: u64) {
        let now = self.clock.now_millis();
        if let Some(dropped) = self.metrics.add_unmatched_retractions(at, rows, now) {
            tracing::warn!(
                operator = %self.task.operator,
                subtask = self.task.subtask,
                dropped,
                "{} (counted in weir_unmatched_deletes_total)",
                at.description()
            );
        }
    }

    /// A context for tests.
    pub fn for_test(operator: &str) -> Self {
        OperatorContext {
            task: TaskInfo::single(operator),
            metrics: Arc::new(TaskMetrics::default()),
            clock: crate::clock::system_clock(),
            current_watermark: Watermark::MIN,
            split: None,
            spill: None,
            job_stop: JobStop::default(),
        }
    }
}

/// Output an operator hands over to be pulled one batch at a time, as the
/// task passes each down the chain: output too large to hold at once (a
/// window with spilled state, emitted key group by key group).
pub trait LazyBatches: Send {
    /// The next batch, or `None` when there are no more.
    fn next_batch(&mut self) -> Result<Option<RecordBatch>>;
}

/// One item of a [`Collector`].
pub(crate) enum Emitted {
    Now(Message),
    Later(Box<dyn LazyBatches>),
}

impl fmt::Debug for Emitted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Emitted::Now(m) => m.fmt(f),
            Emitted::Later(_) => f.write_str("LazyBatches"),
        }
    }
}

/// Buffers what an operator emits until the runtime passes it on.
#[derive(Debug, Default)]
pub struct Collector {
    items: Vec<Emitted>,
    /// Batches for outputs other than the main one.
    side: Vec<(OutputPort, RecordBatch)>,
}

impl Collector {
    /// An empty collector.
    pub fn new() -> Self {
        Self::default()
    }

    /// Emits a batch (empty batches are dropped).
    pub fn collect(&mut self, batch: RecordBatch) {
        if batch.num_rows() > 0 {
            self.items.push(Emitted::Now(Message::Data(batch)));
        }
    }

    /// Emits a batch on output `port` (empty batches are dropped). Only an
    /// operator whose node has an edge for that port may emit on it; the
    /// [main](OutputPort::Main) port is [`Collector::collect`].
    pub fn collect_to(&mut self, port: OutputPort, batch: RecordBatch) {
        match port {
            OutputPort::Main => self.collect(batch),
            side if batch.num_rows() > 0 => self.side.push((side, batch)),
            _ => {}
        }
    }

    /// Takes what was emitted on outputs other than the main one.
    pub fn take_side(&mut self) -> Vec<(OutputPort, RecordBatch)> {
        std::mem::take(&mut self.side)
    }

    /// Emits batches that the runtime pulls one at a time, after what was
    /// emitted so far and before anything emitted later.
    pub fn collect_lazy(&mut self, batches: Box<dyn LazyBatches>) {
        self.items.push(Emitted::Later(batches));
    }

    /// Emits a watermark after the batches emitted so far.
    pub fn emit_watermark(&mut self, watermark: Watermark) {
        self.items.push(Emitted::Now(Message::Watermark(watermark)));
    }

    /// Takes what was emitted, pulling every lazy batch now.
    pub fn drain(&mut self) -> Result<Vec<Message>> {
        let mut out = Vec::with_capacity(self.items.len());
        for item in self.items.drain(..) {
            match item {
                Emitted::Now(m) => out.push(m),
                Emitted::Later(mut batches) => {
                    while let Some(batch) = batches.next_batch()? {
                        if batch.num_rows() > 0 {
                            out.push(Message::Data(batch));
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    /// Takes what was emitted, lazy batches still unpulled.
    pub(crate) fn take_items(&mut self) -> Vec<Emitted> {
        std::mem::take(&mut self.items)
    }

    /// True when nothing was emitted.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty() && self.side.is_empty()
    }
}

/// A streaming operator. One instance runs per subtask.
#[async_trait]
pub trait Operator: Send {
    /// Called once before the first message.
    async fn on_start(&mut self, _ctx: &mut OperatorContext) -> Result<()> {
        Ok(())
    }

    /// Processes one batch of input.
    async fn process_batch(
        &mut self,
        batch: RecordBatch,
        ctx: &mut OperatorContext,
        out: &mut Collector,
    ) -> Result<()>;

    /// Processes one batch of input `input` of an operator with several
    /// inputs (a join: 0 is the left, 1 the right). Only batches of inputs
    /// past the first come here; the default treats them as the first's
    /// (a union).
    async fn process_input_batch(
        &mut self,
        input: usize,
        batch: RecordBatch,
        ctx: &mut OperatorContext,
        out: &mut Collector,
    ) -> Result<()> {
        let _ = input;
        self.process_batch(batch, ctx, out).await
    }

    /// Event time advanced to `watermark` (already combined across inputs).
    /// Emit what the watermark completes; return the watermark to forward,
    /// or `None` to hold it back.
    async fn handle_watermark(
        &mut self,
        watermark: Watermark,
        _ctx: &mut OperatorContext,
        _out: &mut Collector,
    ) -> Result<Option<Watermark>> {
        Ok(Some(watermark))
    }

    /// A checkpoint barrier arrived on every input: snapshot state now.
    async fn handle_checkpoint(
        &mut self,
        _barrier: &CheckpointBarrier,
        _ctx: &mut OperatorContext,
        _out: &mut Collector,
    ) -> Result<()> {
        Ok(())
    }

    /// Writes the operator's state for the checkpoint whose barrier just
    /// passed (after [`Operator::handle_checkpoint`]). Keyed state goes by key
    /// group, for every key group this subtask owns (a key group without
    /// state is written as a delete), so a restore at another parallelism
    /// can hand each key group to its new owner.
    async fn snapshot_state(
        &mut self,
        _ctx: &mut OperatorContext,
        _snapshot: &mut OperatorSnapshot,
    ) -> Result<()> {
        Ok(())
    }

    /// Loads state from a checkpoint before the first message: the keyed
    /// state of the key groups this subtask owns now, and the operator
    /// state of the old subtasks assigned to it.
    fn restore_state(&mut self, ctx: &OperatorContext, restore: OperatorRestore) -> Result<()> {
        if restore.is_empty() {
            Ok(())
        } else {
            Err(crate::error::Error::internal(format!(
                "operator '{}' keeps no state, but the checkpoint holds state for it",
                ctx.task.operator
            )))
        }
    }

    /// The checkpoint `_checkpoint` completed everywhere: commit side effects.
    async fn handle_commit(
        &mut self,
        _checkpoint: CheckpointId,
        _ctx: &mut OperatorContext,
    ) -> Result<()> {
        Ok(())
    }

    /// Processing time passed: work driven by the clock rather than by
    /// input, such as [`ProcessingTimeWatermarkOperator`]'s watermark or a
    /// mini-batch's latency. A task with inputs calls it every
    /// [`crate::runtime::PROCESSING_TIME_TICK`], busy or not; a source's
    /// task while its source has nothing to read (at most every half
    /// second), since while it reads every batch passes the chain anyway.
    async fn on_tick(&mut self, _ctx: &mut OperatorContext, _out: &mut Collector) -> Result<()> {
        Ok(())
    }

    /// Every input ended: flush what is left.
    async fn on_close(&mut self, _ctx: &mut OperatorContext, _out: &mut Collector) -> Result<()> {
        Ok(())
    }
}

/// A node of the graph that creates one [`Operator`] per subtask.
///
/// `Display` gives the one-line description that `EXPLAIN` prints.
pub trait OperatorFactory: fmt::Display + fmt::Debug + Send + Sync {
    /// A short name: `Filter`, `WindowAggregate`, …
    fn name(&self) -> &str;
    /// The schema of the batches the operator emits.
    fn output_schema(&self) -> SchemaRef;
    /// Creates the operator for one subtask.
    fn create(&self, task: &TaskInfo) -> Result<Box<dyn Operator>>;
    /// True for the operator that writes the job's output (a sink): the
    /// rows it takes are the rows the job wrote.
    fn is_sink(&self) -> bool {
        false
    }
}
