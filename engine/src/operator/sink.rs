//! The operator at the end of every pipeline: hands batches to a [`Sink`].

use std::fmt;
use std::sync::Arc;

use arrow::datatypes::{Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;

use super::{Collector, Operator, OperatorContext, OperatorFactory, TaskInfo};
use crate::connector::{Connector, Sink, TableDescriptor};
use crate::error::Result;
use crate::message::{CheckpointBarrier, CheckpointId};

/// Writes every batch to a sink; emits nothing.
pub struct SinkOperator {
    sink: Box<dyn Sink>,
}

impl SinkOperator {
    /// Wraps a sink.
    pub fn new(sink: Box<dyn Sink>) -> Self {
        Self { sink }
    }
}

#[async_trait]
impl Operator for SinkOperator {
    async fn process_batch(
        &mut self,
        batch: RecordBatch,
        ctx: &mut OperatorContext,
        _out: &mut Collector,
    ) -> Result<()> {
        let rows = batch.num_rows();
        self.sink.write_batch(batch).await?;
        ctx.metrics.add_out(rows);
        Ok(())
    }

    async fn handle_checkpoint(
        &mut self,
        barrier: &CheckpointBarrier,
        _ctx: &mut OperatorContext,
        _out: &mut Collector,
    ) -> Result<()> {
        self.sink.pre_commit(barrier.id).await
    }

    async fn snapshot_state(
        &mut self,
        _ctx: &mut OperatorContext,
        snapshot: &mut super::OperatorSnapshot,
    ) -> Result<()> {
        snapshot.operator = self.sink.snapshot_state()?;
        Ok(())
    }

    fn restore_state(
        &mut self,
        _ctx: &OperatorContext,
        restore: super::OperatorRestore,
    ) -> Result<()> {
        self.sink
            .restore_state(restore.operator.into_iter().map(|(_, v)| v).collect())
    }

    async fn handle_commit(
        &mut self,
        checkpoint: CheckpointId,
        _ctx: &mut OperatorContext,
    ) -> Result<()> {
        self.sink.commit(checkpoint).await
    }

    async fn on_close(&mut self, _ctx: &mut OperatorContext, _out: &mut Collector) -> Result<()> {
        self.sink.finish().await
    }
}

/// A sink table in the graph: creates a [`SinkOperator`] per subtask.
#[derive(Debug, Clone)]
pub struct SinkNode {
    connector: Arc<dyn Connector>,
    table: TableDescriptor,
    /// Writes a side output (late rows), not the job's output.
    side: bool,
}

impl SinkNode {
    /// A node writing to `table` through `connector`.
    pub fn new(connector: Arc<dyn Connector>, table: TableDescriptor) -> Self {
        Self {
            connector,
            table,
            side: false,
        }
    }

    /// A node writing a side output (such as late rows) to `table`: its
    /// rows are not counted as the job's output.
    pub fn side_output(connector: Arc<dyn Connector>, table: TableDescriptor) -> Self {
        Self {
            connector,
            table,
            side: true,
        }
    }

    /// The table written to.
    pub fn table(&self) -> &TableDescriptor {
        &self.table
    }
}

impl fmt::Display for SinkNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sink: {} ({})", self.table.name, self.connector.name())
    }
}

impl OperatorFactory for SinkNode {
    fn name(&self) -> &str {
        // The job's rows written are its `Sink`s' (see `MetricsRegistry::rows_written`).
        if self.side { "SideOutputSink" } else { "Sink" }
    }
    fn output_schema(&self) -> SchemaRef {
        Arc::new(Schema::empty())
    }
    fn create(&self, task: &TaskInfo) -> Result<Box<dyn Operator>> {
        Ok(Box::new(SinkOperator::new(
            self.connector.create_sink(&self.table, task)?,
        )))
    }
    fn is_sink(&self) -> bool {
        !self.side
    }
}

/// A sink that hands every batch to a channel: how a bare `SELECT` returns
/// rows to the caller (the console, the SQL shell, tests).
#[derive(Debug, Clone)]
pub struct ChannelSinkNode {
    sender: tokio::sync::mpsc::Sender<RecordBatch>,
    label: String,
}

impl ChannelSinkNode {
    /// Batches go to `sender`; all subtasks share it.
    pub fn new(sender: tokio::sync::mpsc::Sender<RecordBatch>, label: impl Into<String>) -> Self {
        Self {
            sender,
            label: label.into(),
        }
    }
}

impl fmt::Display for ChannelSinkNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sink: {}", self.label)
    }
}

struct ChannelSink {
    sender: tokio::sync::mpsc::Sender<RecordBatch>,
}

#[async_trait]
impl Sink for ChannelSink {
    async fn write_batch(&mut self, batch: RecordBatch) -> Result<()> {
        self.sender
            .send(batch)
            .await
            .map_err(|_| crate::error::Error::Cancelled)
    }
    async fn finish(&mut self) -> Result<()> {
        Ok(())
    }
}

impl OperatorFactory for ChannelSinkNode {
    fn name(&self) -> &str {
        "Sink"
    }
    fn output_schema(&self) -> SchemaRef {
        Arc::new(Schema::empty())
    }
    fn create(&self, _task: &TaskInfo) -> Result<Box<dyn Operator>> {
        Ok(Box::new(SinkOperator::new(Box::new(ChannelSink {
            sender: self.sender.clone(),
        }))))
    }
    fn is_sink(&self) -> bool {
        true
    }
}
