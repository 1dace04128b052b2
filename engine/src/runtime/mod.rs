//! The local runtime: deploys a [`PhysicalGraph`] as one tokio task per
//! subtask, connected by bounded channels, and supervises the job.
//!
//! ```text
//!  Source[0] ─┐ Hash   ┌─> WindowAggregate[0] ─> Sink[0]
//!  Source[1] ─┴────────┴─> WindowAggregate[1] ─> Sink[1]
//! ```
//! A full channel blocks its sender, so a slow sink backpressures all the
//! way to the sources. The first task to fail cancels the others and fails
//! the job with its error.

mod input_gate;
mod output;
mod task;

use std::sync::Arc;

use tokio::sync::mpsc::{Receiver, Sender, channel};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::info;

pub use input_gate::InputGate;

use crate::clock::{Clock, system_clock};
use crate::error::{Error, Result};
use crate::graph::{EdgeKind, NodeKind, PhysicalGraph};
use crate::message::{Message, Watermark};
use crate::metrics::MetricsRegistry;
use crate::operator::{OperatorContext, TaskInfo};
use output::{EdgeOutput, Outputs};
use task::{Head, Task};

/// Settings of the local runtime.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Messages (batches) buffered per channel before the sender waits.
    pub channel_capacity: usize,
    /// Processing time.
    pub clock: Arc<dyn Clock>,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            channel_capacity: 8,
            clock: system_clock(),
        }
    }
}

/// A running job.
pub struct JobHandle {
    name: String,
    metrics: MetricsRegistry,
    stop: watch::Sender<bool>,
    supervisor: tokio::task::JoinHandle<Result<()>>,
}

impl JobHandle {
    /// The job's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The job's counters.
    pub fn metrics(&self) -> &MetricsRegistry {
        &self.metrics
    }

    /// Stops the job gracefully: sources stop, in-flight data drains, every
    /// open window fires and sinks flush.
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }

    /// True once every task has ended.
    pub fn is_finished(&self) -> bool {
        self.supervisor.is_finished()
    }

    /// Waits for the job to end; the error of the first failed task, if any.
    pub async fn wait(self) -> Result<()> {
        match self.supervisor.await {
            Ok(result) => result,
            Err(e) if e.is_cancelled() => Err(Error::Cancelled),
            Err(e) => Err(Error::internal(format!("job supervisor panicked: {e}"))),
        }
    }

    /// Cancels the job at once (no flush).
    pub fn cancel(&self) {
        self.supervisor.abort();
    }
}

/// Runs physical graphs in this process.
#[derive(Debug, Clone, Default)]
pub struct LocalRuntime {
    config: RuntimeConfig,
}

impl LocalRuntime {
    /// A runtime with these settings.
    pub fn new(config: RuntimeConfig) -> Self {
        Self { config }
    }

    /// Deploys the graph and returns at once.
    pub fn spawn(&self, job: &str, graph: &PhysicalGraph) -> Result<JobHandle> {
        let metrics = MetricsRegistry::default();
        let (stop_tx, stop_rx) = watch::channel(false);
        let tasks = self.build_tasks(job, graph, &metrics, &stop_rx)?;
        info!(job, tasks = tasks.len(), "deploying job");
        let mut set = JoinSet::new();
        for task in tasks {
            set.spawn(task.run());
        }
        let job_name = job.to_string();
        let supervisor = tokio::spawn(async move {
            while let Some(result) = set.join_next().await {
                let failure = match result {
                    Ok(Ok(())) => continue,
                    Ok(Err(Error::Cancelled)) => continue,
                    Ok(Err(e)) => e,
                    Err(e) => Error::internal(format!("a task panicked: {e}")),
                };
                info!(job = %job_name, error = %failure, "job failed");
                set.abort_all();
                return Err(failure);
            }
            info!(job = %job_name, "job finished");
            Ok(())
        });
        Ok(JobHandle {
            name: job.to_string(),
            metrics,
            stop: stop_tx,
            supervisor,
        })
    }

    fn build_tasks(
        &self,
        job: &str,
        graph: &PhysicalGraph,
        metrics: &MetricsRegistry,
        stop: &watch::Receiver<bool>,
    ) -> Result<Vec<Task>> {
        let vertices = graph.vertices();
        let capacity = self.config.channel_capacity.max(1);
        // receivers[v][subtask], outputs[v][subtask]
        let mut receivers: Vec<Vec<Vec<Receiver<Message>>>> = vertices
            .iter()
            .map(|v| (0..v.parallelism).map(|_| Vec::new()).collect())
            .collect();
        let mut outputs: Vec<Vec<Outputs>> = vertices
            .iter()
            .map(|v| (0..v.parallelism).map(|_| Outputs::default()).collect())
            .collect();
        for edge in graph.edges() {
            let (up, down) = (&vertices[edge.from], &vertices[edge.to]);
            for (i, up_outputs) in outputs[edge.from]
                .iter_mut()
                .enumerate()
                .take(up.parallelism)
            {
                let targets: Vec<usize> = match edge.kind {
                    EdgeKind::Forward => vec![i],
                    _ => (0..down.parallelism).collect(),
                };
                let mut senders: Vec<Sender<Message>> = Vec::with_capacity(targets.len());
                for j in targets {
                    let (tx, rx) = channel(capacity);
                    senders.push(tx);
                    receivers[edge.to][j].push(rx);
                }
                up_outputs.edges.push(EdgeOutput {
                    kind: edge.kind.clone(),
                    senders,
                    max_key_groups: graph.max_key_groups(),
                    next_rebalance: i,
                });
            }
        }
        let mut tasks = Vec::new();
        for (v, vertex) in vertices.iter().enumerate() {
            let name = graph.vertex_name(v);
            for (subtask, (inputs, outs)) in
                receivers[v].drain(..).zip(outputs[v].drain(..)).enumerate()
            {
                let info = TaskInfo {
                    job: job.to_string(),
                    operator: name.clone(),
                    subtask,
                    parallelism: vertex.parallelism,
                    max_key_groups: graph.max_key_groups(),
                };
                let mut chain = vertex.nodes.iter().peekable();
                let head = match chain.peek().map(|&&n| &graph.logical().node(n).kind) {
                    Some(NodeKind::Source(source)) => {
                        chain.next();
                        Head::Source {
                            source: source.create(&info)?,
                            metrics: metrics
                                .task(&format!("{} {source}", vertex.nodes[0]), subtask),
                            stop: stop.clone(),
                        }
                    }
                    _ => Head::Inputs(InputGate::new(inputs)),
                };
                let mut operators = Vec::new();
                for &node in chain {
                    let NodeKind::Operator(factory) = &graph.logical().node(node).kind else {
                        return Err(Error::internal("a source inside a chain"));
                    };
                    let ctx = OperatorContext {
                        task: info.clone(),
                        metrics: metrics.task(&format!("{node} {}", factory.name()), subtask),
                        clock: Arc::clone(&self.config.clock),
                        current_watermark: Watermark::MIN,
                    };
                    operators.push((factory.create(&info)?, ctx));
                }
                tasks.push(Task {
                    info,
                    head,
                    operators,
                    outputs: outs,
                });
            }
        }
        Ok(tasks)
    }
}
