//! One subtask: a head (a source, or the input gate) and a chain of
//! operators, pushing what the chain emits to the task's outputs.

use std::time::Duration;

use tokio::sync::watch;
use tracing::{debug, instrument};

use super::input_gate::InputGate;
use super::output::Outputs;
use crate::connector::{Source, SourcePoll};
use crate::error::{Error, Result};
use crate::message::{Message, Watermark};
use crate::metrics::TaskMetrics;
use crate::operator::{Collector, Operator, OperatorContext, TaskInfo};
use std::sync::Arc;

pub(crate) enum Head {
    Source {
        source: Box<dyn Source>,
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
    pub operators: Vec<(Box<dyn Operator>, OperatorContext)>,
    pub outputs: Outputs,
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
        for (op, ctx) in &mut self.operators {
            op.on_start(ctx).await?;
        }
        let head = std::mem::replace(&mut self.head, Head::Inputs(InputGate::new(Vec::new())));
        match head {
            Head::Source {
                source,
                metrics,
                stop,
            } => self.run_source(source, metrics, stop).await?,
            Head::Inputs(gate) => self.run_inputs(gate).await?,
        }
        debug!("finished");
        Ok(())
    }

    async fn run_source(
        &mut self,
        mut source: Box<dyn Source>,
        metrics: Arc<TaskMetrics>,
        mut stop: watch::Receiver<bool>,
    ) -> Result<()> {
        loop {
            if *stop.borrow() {
                break;
            }
            match source.poll_batch().await? {
                SourcePoll::Batch(batch) => {
                    metrics.add_out(batch.num_rows());
                    self.counters.add_in(batch.num_rows());
                    self.push(0, vec![Message::Data(batch)]).await?;
                }
                SourcePoll::Idle(wait) => {
                    let wait = wait.min(Duration::from_millis(500));
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = stop.changed() => {}
                    }
                }
                SourcePoll::Finished => break,
            }
        }
        // Input exhausted (or the job is stopping): every window may fire.
        self.push(0, vec![Message::Watermark(Watermark::MAX)])
            .await?;
        self.close().await
    }

    async fn run_inputs(&mut self, mut gate: InputGate) -> Result<()> {
        loop {
            match gate.next().await {
                Message::EndOfStream => return self.close().await,
                Message::Barrier(barrier) => {
                    for i in 0..self.operators.len() {
                        let mut out = Collector::new();
                        let (op, ctx) = &mut self.operators[i];
                        op.handle_checkpoint(&barrier, ctx, &mut out).await?;
                        let emitted: Vec<Message> = out.drain().collect();
                        self.push(i + 1, emitted).await?;
                    }
                    self.outputs.send(Message::Barrier(barrier)).await?;
                }
                message => {
                    if let Message::Data(batch) = &message {
                        self.counters.add_in(batch.num_rows());
                    }
                    self.push(0, vec![message]).await?
                }
            }
        }
    }

    /// Ends the chain front to back: each operator flushes into the next.
    async fn close(&mut self) -> Result<()> {
        for i in 0..self.operators.len() {
            let mut out = Collector::new();
            let (op, ctx) = &mut self.operators[i];
            op.on_close(ctx, &mut out).await?;
            let emitted: Vec<Message> = out.drain().collect();
            self.push(i + 1, emitted).await?;
        }
        self.outputs.send(Message::EndOfStream).await
    }

    /// Feeds messages to operator `start` and what it emits down the chain.
    async fn push(&mut self, start: usize, mut messages: Vec<Message>) -> Result<()> {
        for i in start..self.operators.len() {
            let (op, ctx) = &mut self.operators[i];
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
            messages.extend(out.drain());
            for m in &messages {
                if let Message::Data(b) = m {
                    ctx.metrics.add_out(b.num_rows());
                }
            }
        }
        for message in messages {
            self.outputs.send(message).await?;
        }
        Ok(())
    }
}
