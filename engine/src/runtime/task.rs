//! One subtask: a head (a source, or the input gate) and a chain of
//! operators, pushing what the chain emits to the task's outputs.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tracing::{debug, instrument};

use super::checkpoint::{CheckpointEvent, TaskCheckpointing, TaskSnapshot};
use super::input_gate::InputGate;
use super::output::Outputs;
use crate::connector::{Source, SourcePoll};
use crate::error::{Error, Result};
use crate::message::{CheckpointBarrier, CheckpointId, Message, Watermark};
use crate::metrics::TaskMetrics;
use crate::operator::{Collector, Emitted, Operator, OperatorContext, OperatorSnapshot, TaskInfo};

/// How often a task with inputs lets its operators do processing-time work
/// ([`Operator::on_tick`]): a mini-batch waits at most its latency plus
/// this, a processing-time window closes at most this late.
pub const PROCESSING_TIME_TICK: Duration = Duration::from_millis(200);

pub(crate) enum Head {
    Source {
        source: Box<dyn Source>,
        /// The source's logical node.
        node: usize,
        metrics: Arc<TaskMetrics>,
        stop: watch::Receiver<bool>,
    },
    Inputs(InputGate),
}

pub(crate) struct Task {
    pub info: TaskInfo,
    /// The vertex (operator chain) this task is a subtask of.
    pub vertex: usize,
    /// Rows into and out of the whole chain.
    pub counters: Arc<TaskMetrics>,
    pub head: Head,
    /// The chain's operators with their logical nodes.
    pub operators: Vec<(Box<dyn Operator>, OperatorContext, usize)>,
    pub outputs: Outputs,
    pub checkpointing: Option<TaskCheckpointing>,
    /// The source's counters, when the chain starts with one.
    pub source_metrics: Option<Arc<TaskMetrics>>,
    /// The sink's counters, when the chain ends in one.
    pub sink_metrics: Option<Arc<TaskMetrics>>,
}

/// What woke a source task up.
enum SourceWake {
    Trigger(Option<CheckpointBarrier>),
    Completed,
    Poll(Result<SourcePoll>),
}

impl Task {
    #[instrument(name = "task", skip_all, fields(task = %self.info.operator, subtask = self.info.subtask))]
    pub async fn run(mut self) -> Result<()> {
        let info = self.info.clone();
        self.run_inner().await.map_err(|e| match e {
            Error::Operator { .. } | Error::Cancelled => e,
            other => Error::Operator {
                operator: info.operator.clone(),
                subtask: info.subtask,
                source: Box::new(other),
            },
        })
    }

    async fn run_inner(&mut self) -> Result<()> {
        for (op, ctx, _) in &mut self.operators {
            op.on_start(ctx).await?;
        }
        let head = std::mem::replace(&mut self.head, Head::Inputs(InputGate::new(Vec::new())));
        match head {
            Head::Source {
                source,
                node,
                metrics,
                stop,
            } => self.run_source(source, node, metrics, stop).await?,
            Head::Inputs(gate) => self.run_inputs(gate).await?,
        }
        debug!("finished");
        Ok(())
    }

    async fn run_source(
        &mut self,
        mut source: Box<dyn Source>,
        node: usize,
        metrics: Arc<TaskMetrics>,
        mut stop: watch::Receiver<bool>,
    ) -> Result<()> {
        let mut triggers = self.checkpointing.as_mut().and_then(|c| c.triggers.take());
        let mut completed = self.checkpointing.as_ref().map(|c| c.completed.clone());
        let mut exhausted = false;
        let mut stop_gone = false;
        let mut idle: Option<Duration> = None;
        loop {
            if !exhausted && *stop.borrow() {
                exhausted = true;
                self.source_exhausted().await?;
            }
            if exhausted && self.checkpointing.is_none() {
                break;
            }
            let wake = tokio::select! {
                biased;
                barrier = recv_trigger(&mut triggers) => SourceWake::Trigger(barrier),
                _ = changed(&mut completed) => SourceWake::Completed,
                res = stop.changed(), if !exhausted && !stop_gone => {
                    stop_gone = res.is_err();
                    continue;
                }
                _ = tokio::time::sleep(idle.unwrap_or_default()), if !exhausted && idle.is_some() => {
                    idle = None;
                    continue;
                }
                polled = source.poll_batch(), if !exhausted && idle.is_none() => SourceWake::Poll(polled),
            };
            match wake {
                SourceWake::Trigger(None) => {
                    // The job's handle is gone: nobody will complete a checkpoint.
                    return Err(Error::Cancelled);
                }
                SourceWake::Trigger(Some(barrier)) => {
                    if barrier.then_stop && !exhausted {
                        exhausted = true;
                        self.source_exhausted().await?;
                    }
                    let position = source.snapshot_position()?;
                    let snapshot = OperatorSnapshot {
                        keyed: Vec::new(),
                        operator: position,
                    };
                    self.checkpoint(barrier, Some((node, snapshot))).await?;
                    if barrier.then_stop {
                        break;
                    }
                }
                SourceWake::Completed => self.commit_completed().await?,
                SourceWake::Poll(polled) => match polled? {
                    SourcePoll::Batch(batch) => {
                        metrics.set_bad_records(source.bad_records());
                        let split = source.batch_split();
                        for (_, ctx, _) in &mut self.operators {
                            ctx.split = split;
                        }
                        metrics.add_out(batch.num_rows());
                        self.counters.add_in(batch.num_rows());
                        self.push(0, vec![Message::Data(batch)]).await?;
                    }
                    SourcePoll::Idle(wait) => {
                        metrics.set_bad_records(source.bad_records());
                        idle = Some(wait.min(Duration::from_millis(500)));
                        self.tick().await?;
                    }
                    SourcePoll::Finished => {
                        exhausted = true;
                        self.source_exhausted().await?;
                    }
                },
            }
        }
        if self.checkpointing.is_none() {
            // Input exhausted (or the job is stopping): every window may fire.
            self.push(0, vec![Message::Watermark(Watermark::MAX)])
                .await?;
        }
        self.close().await
    }

    /// Lets the chain's operators do their processing-time work
    /// ([`Operator::on_tick`]): in a source's task when the source has
    /// nothing to read, in others every [`PROCESSING_TIME_TICK`].
    async fn tick(&mut self) -> Result<()> {
        for i in 0..self.operators.len() {
            let (op, ctx, _) = &mut self.operators[i];
            let mut out = Collector::new();
            op.on_tick(ctx, &mut out).await?;
            if !out.is_empty() {
                self.forward(i, out).await?;
            }
        }
        Ok(())
    }

    /// With checkpointing, the end of a source's input: every window may
    /// fire now, ahead of the final barrier; then wait for that barrier.
    async fn source_exhausted(&mut self) -> Result<()> {
        let Some(checkpointing) = &self.checkpointing else {
            return Ok(());
        };
        let _ = checkpointing.events.send(CheckpointEvent::SourceExhausted {
            vertex: self.vertex,
            subtask: self.info.subtask,
        });
        self.push(0, vec![Message::Watermark(Watermark::MAX)]).await
    }

    async fn run_inputs(&mut self, mut gate: InputGate) -> Result<()> {
        let mut completed = self.checkpointing.as_ref().map(|c| c.completed.clone());
        let mut ticks = tokio::time::interval(PROCESSING_TIME_TICK);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let message = tokio::select! {
                biased;
                _ = changed(&mut completed) => {
                    self.commit_completed().await?;
                    continue;
                }
                _ = ticks.tick() => {
                    self.tick().await?;
                    continue;
                }
                message = gate.next_from() => message,
            };
            match message {
                (_, Message::EndOfStream) => return self.close().await,
                (_, Message::Barrier(barrier)) => self.checkpoint(barrier, None).await?,
                (input, Message::Data(batch)) if input > 0 => {
                    self.counters.add_in(batch.num_rows());
                    self.push_input(input, batch).await?
                }
                (_, message) => {
                    if let Message::Data(batch) = &message {
                        self.counters.add_in(batch.num_rows());
                    }
                    self.push(0, vec![message]).await?
                }
            }
        }
    }

    /// A barrier reached this task: every operator of the chain handles it
    /// and snapshots (front to back, each flushing into the next), then the
    /// barrier goes downstream and the snapshot to whoever stores it.
    async fn checkpoint(
        &mut self,
        barrier: CheckpointBarrier,
        head: Option<(usize, OperatorSnapshot)>,
    ) -> Result<()> {
        let mut snapshots: Vec<(usize, OperatorSnapshot)> = head.into_iter().collect();
        for i in 0..self.operators.len() {
            let mut out = Collector::new();
            let (op, ctx, node) = &mut self.operators[i];
            if let Some(spill) = &mut ctx.spill {
                spill.passed_barrier(barrier.id)?;
            }
            op.handle_checkpoint(&barrier, ctx, &mut out).await?;
            let mut snapshot = OperatorSnapshot::default();
            if self.checkpointing.is_some() {
                op.snapshot_state(ctx, &mut snapshot).await?;
                snapshots.push((*node, snapshot));
            }
            self.forward(i, out).await?;
        }
        self.outputs.send(Message::Barrier(barrier)).await?;
        if let Some(checkpointing) = &mut self.checkpointing {
            checkpointing.last_barrier = Some(barrier.id);
            checkpointing.final_barrier_seen |= barrier.then_stop;
            // The barrier passed every row counted so far, and none after.
            let rows_out =
                |m: &Option<Arc<TaskMetrics>>| m.as_ref().map_or(0, |m| m.snapshot().records_out);
            let _ = checkpointing
                .events
                .send(CheckpointEvent::Snapshot(TaskSnapshot {
                    vertex: self.vertex,
                    subtask: self.info.subtask,
                    checkpoint: barrier.id,
                    operators: snapshots,
                    rows_read: rows_out(&self.source_metrics),
                    rows_written: rows_out(&self.sink_metrics),
                }));
        }
        Ok(())
    }

    /// A checkpoint completed: operators commit what it covers.
    async fn commit_completed(&mut self) -> Result<()> {
        let Some(checkpointing) = &mut self.checkpointing else {
            return Ok(());
        };
        let id: CheckpointId = *checkpointing.completed.borrow_and_update();
        for (op, ctx, _) in &mut self.operators {
            if let Some(spill) = &mut ctx.spill {
                spill.checkpoint_completed(id)?;
            }
            op.handle_commit(id, ctx).await?;
        }
        Ok(())
    }

    /// Ends the chain front to back: each operator flushes into the next.
    /// With checkpointing, first waits for the last checkpoint this task
    /// took part in (the final one) to complete, and commits it.
    async fn close(&mut self) -> Result<()> {
        if let Some(checkpointing) = &self.checkpointing
            && !checkpointing.final_barrier_seen
        {
            // Input ended without the final checkpoint: an upstream task
            // went away (its job part is being cancelled). Flushing now
            // would publish output no checkpoint covers, which the restart
            // would produce again.
            return Err(Error::Cancelled);
        }
        if let Some(checkpointing) = &mut self.checkpointing
            && let Some(last) = checkpointing.last_barrier
        {
            let mut completed = checkpointing.completed.clone();
            completed
                .wait_for(|&id| id >= last)
                .await
                .map_err(|_| Error::Cancelled)?;
            self.commit_completed().await?;
        }
        for i in 0..self.operators.len() {
            let mut out = Collector::new();
            let (op, ctx, _) = &mut self.operators[i];
            op.on_close(ctx, &mut out).await?;
            self.forward(i, out).await?;
        }
        self.outputs.send(Message::EndOfStream).await
    }

    /// Feeds messages to operator `start` and what it emits down the chain.
    async fn push(&mut self, start: usize, mut messages: Vec<Message>) -> Result<()> {
        for i in start..self.operators.len() {
            let (op, ctx, _) = &mut self.operators[i];
            let mut out = Collector::new();
            for message in messages.drain(..) {
                match message {
                    Message::Data(batch) => {
                        ctx.metrics.add_in(batch.num_rows());
                        op.process_batch(batch, ctx, &mut out).await?;
                    }
                    Message::Watermark(w) => {
                        ctx.current_watermark = w;
                        if let Some(w) = op.handle_watermark(w, ctx, &mut out).await? {
                            out.emit_watermark(w);
                        }
                    }
                    other => {
                        return Err(Error::internal(format!(
                            "unexpected {other:?} inside a chain"
                        )));
                    }
                }
            }
            messages = self.forward_lazy(i, out).await?;
        }
        for message in messages {
            self.outputs.send(message).await?;
        }
        Ok(())
    }

    /// A batch from input `input` (not the first) of the chain's head
    /// operator, which alone has several inputs; then what it emits down
    /// the chain.
    async fn push_input(&mut self, input: usize, batch: arrow::array::RecordBatch) -> Result<()> {
        let Some((op, ctx, _)) = self.operators.first_mut() else {
            return Err(Error::internal(format!(
                "a batch for input {input} of a task without operators"
            )));
        };
        let mut out = Collector::new();
        ctx.metrics.add_in(batch.num_rows());
        op.process_input_batch(input, batch, ctx, &mut out).await?;
        self.forward(0, out).await
    }

    /// [`Task::push`], boxed: a chain pushes into itself when an operator
    /// emits lazily.
    fn push_boxed(
        &mut self,
        start: usize,
        messages: Vec<Message>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + Send + '_>> {
        Box::pin(self.push(start, messages))
    }

    /// Passes what operator `from` emitted down the chain.
    async fn forward(&mut self, from: usize, out: Collector) -> Result<()> {
        let rest = self.forward_lazy(from, out).await?;
        self.push_boxed(from + 1, rest).await
    }

    /// Counts what operator `from` emitted and passes its lazy output down
    /// the chain one batch at a time (with everything emitted before it);
    /// returns what was emitted after the last lazy part, to pass on.
    async fn forward_lazy(&mut self, from: usize, mut out: Collector) -> Result<Vec<Message>> {
        let metrics = Arc::clone(&self.operators[from].1.metrics);
        for (port, batch) in out.take_side() {
            // A node with a side output has two out-edges, so it ends its chain.
            if from + 1 != self.operators.len() {
                return Err(Error::internal(format!(
                    "operator {from} of a chain emitted {port} but is not the chain's last"
                )));
            }
            metrics.add_out(batch.num_rows());
            self.outputs.send_to_port(port, batch).await?;
        }
        let mut pending = Vec::new();
        for item in out.take_items() {
            match item {
                Emitted::Now(message) => {
                    if let Message::Data(b) = &message {
                        metrics.add_out(b.num_rows());
                    }
                    pending.push(message);
                }
                Emitted::Later(mut batches) => {
                    if !pending.is_empty() {
                        self.push_boxed(from + 1, std::mem::take(&mut pending))
                            .await?;
                    }
                    while let Some(batch) = batches.next_batch()? {
                        if batch.num_rows() > 0 {
                            metrics.add_out(batch.num_rows());
                            self.push_boxed(from + 1, vec![Message::Data(batch)])
                                .await?;
                        }
                    }
                }
            }
        }
        Ok(pending)
    }
}

/// The next barrier to inject; pending forever without checkpointing.
async fn recv_trigger(
    triggers: &mut Option<tokio::sync::mpsc::UnboundedReceiver<CheckpointBarrier>>,
) -> Option<CheckpointBarrier> {
    match triggers {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Resolves when a checkpoint completes; pending forever without
/// checkpointing or once the sender is gone.
async fn changed(completed: &mut Option<watch::Receiver<CheckpointId>>) {
    match completed {
        Some(rx) => {
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use async_trait::async_trait;
    use tokio::sync::mpsc;

    use super::*;

    /// Records what reaches it: commits and closes.
    struct Recorder(Arc<Mutex<Vec<String>>>);

    #[async_trait]
    impl Operator for Recorder {
        async fn process_batch(
            &mut self,
            _batch: arrow::record_batch::RecordBatch,
            _ctx: &mut OperatorContext,
            _out: &mut Collector,
        ) -> Result<()> {
            Ok(())
        }

        async fn handle_commit(
            &mut self,
            checkpoint: CheckpointId,
            _ctx: &mut OperatorContext,
        ) -> Result<()> {
            self.0.lock().unwrap().push(format!("commit {checkpoint}"));
            Ok(())
        }

        async fn on_close(
            &mut self,
            _ctx: &mut OperatorContext,
            _out: &mut Collector,
        ) -> Result<()> {
            self.0.lock().unwrap().push("close".into());
            Ok(())
        }
    }

    /// Emits each batch as one row, then two lazily pulled two-row
    /// batches, then three rows.
    struct LazyEmitter;

    struct Rows(usize);

    impl crate::operator::LazyBatches for Rows {
        fn next_batch(&mut self) -> Result<Option<arrow::record_batch::RecordBatch>> {
            if self.0 == 0 {
                return Ok(None);
            }
            self.0 -= 1;
            Ok(Some(crate::testing::fixtures::batch(&[
                (1, 1, 1),
                (2, 2, 2),
            ])))
        }
    }

    #[async_trait]
    impl Operator for LazyEmitter {
        async fn process_batch(
            &mut self,
            _batch: arrow::record_batch::RecordBatch,
            _ctx: &mut OperatorContext,
            out: &mut Collector,
        ) -> Result<()> {
            out.collect(crate::testing::fixtures::batch(&[(1, 1, 1)]));
            out.collect_lazy(Box::new(Rows(2)));
            out.collect(crate::testing::fixtures::batch(&[(1, 1, 1); 3]));
            Ok(())
        }
    }

    /// Logs the batches and watermarks that reach it.
    struct Seen(Arc<Mutex<Vec<String>>>);

    #[async_trait]
    impl Operator for Seen {
        async fn process_batch(
            &mut self,
            batch: arrow::record_batch::RecordBatch,
            _ctx: &mut OperatorContext,
            _out: &mut Collector,
        ) -> Result<()> {
            self.0
                .lock()
                .unwrap()
                .push(format!("{} rows", batch.num_rows()));
            Ok(())
        }

        async fn handle_watermark(
            &mut self,
            watermark: Watermark,
            _ctx: &mut OperatorContext,
            _out: &mut Collector,
        ) -> Result<Option<Watermark>> {
            self.0
                .lock()
                .unwrap()
                .push(format!("watermark {}", watermark.0));
            Ok(Some(watermark))
        }
    }

    #[tokio::test]
    async fn lazy_output_goes_down_the_chain_in_order_one_batch_at_a_time() {
        let (input, receiver) = mpsc::channel(8);
        let log = Arc::new(Mutex::new(Vec::new()));
        let task = Task {
            info: TaskInfo::single("chain"),
            vertex: 1,
            counters: Arc::new(TaskMetrics::default()),
            head: Head::Inputs(InputGate::new(vec![receiver])),
            operators: vec![
                (Box::new(LazyEmitter), OperatorContext::for_test("lazy"), 1),
                (
                    Box::new(Seen(Arc::clone(&log))),
                    OperatorContext::for_test("seen"),
                    2,
                ),
            ],
            outputs: Outputs::default(),
            checkpointing: None,
            source_metrics: None,
            sink_metrics: None,
        };
        let metrics = Arc::clone(&task.operators[0].1.metrics);
        let running = tokio::spawn(task.run());
        let batch = crate::testing::fixtures::batch(&[(1, 1, 1)]);
        input.send(Message::Data(batch)).await.unwrap();
        input.send(Message::Watermark(Watermark(7))).await.unwrap();
        input.send(Message::EndOfStream).await.unwrap();
        running.await.unwrap().unwrap();
        assert_eq!(
            *log.lock().unwrap(),
            ["1 rows", "2 rows", "2 rows", "3 rows", "watermark 7"]
        );
        assert_eq!(metrics.snapshot().records_out, 8);
    }

    struct Fixture {
        input: mpsc::Sender<Message>,
        completed: watch::Sender<CheckpointId>,
        log: Arc<Mutex<Vec<String>>>,
        task: tokio::task::JoinHandle<Result<()>>,
        _events: mpsc::UnboundedReceiver<CheckpointEvent>,
    }

    /// A checkpointed task reading one input, with a [`Recorder`].
    fn start() -> Fixture {
        let (input, receiver) = mpsc::channel(8);
        let (completed, completed_rx) = watch::channel(0);
        let (events, events_rx) = mpsc::unbounded_channel();
        let log = Arc::new(Mutex::new(Vec::new()));
        let task = Task {
            info: TaskInfo::single("recorder"),
            vertex: 1,
            counters: Arc::new(TaskMetrics::default()),
            head: Head::Inputs(InputGate::new(vec![receiver])),
            operators: vec![(
                Box::new(Recorder(Arc::clone(&log))),
                OperatorContext::for_test("recorder"),
                1,
            )],
            outputs: Outputs::default(),
            checkpointing: Some(TaskCheckpointing {
                triggers: None,
                completed: completed_rx,
                events,
                last_barrier: None,
                final_barrier_seen: false,
            }),
            source_metrics: None,
            sink_metrics: None,
        };
        Fixture {
            input,
            completed,
            log,
            task: tokio::spawn(task.run()),
            _events: events_rx,
        }
    }

    fn barrier(id: CheckpointId, then_stop: bool) -> Message {
        Message::Barrier(CheckpointBarrier {
            id,
            timestamp_ms: 0,
            then_stop,
        })
    }

    #[tokio::test]
    async fn input_ending_without_the_final_barrier_cancels_without_flushing() {
        let f = start();
        f.input.send(barrier(1, false)).await.unwrap();
        f.input.send(Message::EndOfStream).await.unwrap();
        let result = f.task.await.unwrap();
        assert!(matches!(result, Err(Error::Cancelled)), "{result:?}");
        assert!(f.log.lock().unwrap().is_empty(), "{:?}", f.log);
    }

    #[tokio::test]
    async fn after_the_final_barrier_the_task_closes_once_that_checkpoint_completes() {
        let f = start();
        f.input.send(barrier(1, false)).await.unwrap();
        f.input.send(barrier(2, true)).await.unwrap();
        f.input.send(Message::EndOfStream).await.unwrap();
        f.completed.send(1).unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        // Checkpoint 1 committed, but not closed: checkpoint 2 is pending.
        assert!(!f.task.is_finished());
        assert_eq!(*f.log.lock().unwrap(), ["commit 1"]);
        f.completed.send(2).unwrap();
        f.task.await.unwrap().unwrap();
        assert_eq!(*f.log.lock().unwrap(), ["commit 1", "commit 2", "close"]);
    }

    #[tokio::test]
    async fn a_task_whose_job_goes_away_before_completion_is_cancelled() {
        let f = start();
        f.input.send(barrier(1, true)).await.unwrap();
        f.input.send(Message::EndOfStream).await.unwrap();
        drop(f.completed);
        let result = f.task.await.unwrap();
        assert!(matches!(result, Err(Error::Cancelled)), "{result:?}");
        assert!(f.log.lock().unwrap().is_empty(), "{:?}", f.log);
    }
}
