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
//!
//! In a cluster each worker deploys only its own subtasks ([`Deployment`]):
//! a channel whose other end runs in another process goes over the data
//! plane ([`Exchange`]), with the same ordering and backpressure.

mod checkpoint;
mod input_gate;
mod output;
mod task;

use std::sync::Arc;

use std::sync::Mutex;

use tokio::sync::mpsc::{self, Receiver, Sender, UnboundedReceiver, UnboundedSender, channel};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::info;

pub use checkpoint::{CheckpointEvent, CheckpointSetup, TaskSnapshot};
pub use input_gate::InputGate;
pub use task::PROCESSING_TIME_TICK;

use crate::clock::{Clock, system_clock};
use crate::error::{Error, Result};
use crate::exchange::{ChannelKey, Exchange};
use crate::graph::{EdgeKind, NodeKind, PhysicalGraph};
use crate::message::{CheckpointBarrier, CheckpointId, Message, Watermark};
use crate::metrics::{MetricsRegistry, TaskMetrics, TaskMetricsSnapshot};
use crate::operator::{JobStop, OperatorContext, OperatorRestore, StateSpill, TaskInfo};
use crate::state::JobStore;
use checkpoint::TaskCheckpointing;
use output::{EdgeOutput, OutputChannel, Outputs};
use task::{Head, Task};

/// A channel into a task, with the input of the task's head node it feeds.
type InputChannel = (usize, Receiver<Message>);

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

/// Where a job's subtasks run, as seen from one process.
#[derive(Clone, Default)]
pub struct Deployment {
    remote: Option<RemoteSubtasks>,
    checkpointing: Option<CheckpointSetup>,
    spill: Option<(JobStore, usize)>,
    /// The job's id and attempt; a fresh id and attempt 0 when unset.
    attempt: Option<(String, u32)>,
}

#[derive(Clone)]
struct RemoteSubtasks {
    job_id: String,
    /// `addresses[vertex][subtask]`: the data-plane address of the process
    /// running that subtask, `None` when it runs here.
    addresses: Vec<Vec<Option<String>>>,
    exchange: Exchange,
}

impl Deployment {
    /// Every subtask runs in this process.
    pub fn local() -> Self {
        Self::default()
    }

    /// Part of a distributed job: `addresses[vertex][subtask]` is `None` for
    /// the subtasks this process runs and the peer's data-plane address for
    /// the others. `job_id` names the job's channels on the data plane.
    pub fn partial(
        job_id: impl Into<String>,
        addresses: Vec<Vec<Option<String>>>,
        exchange: Exchange,
    ) -> Self {
        Self {
            remote: Some(RemoteSubtasks {
                job_id: job_id.into(),
                addresses,
                exchange,
            }),
            checkpointing: None,
            spill: None,
            attempt: None,
        }
    }

    /// Names the job (`job_id`, the same for all its attempts) and which
    /// attempt this is: sinks keep the files of attempts apart.
    pub fn with_attempt(mut self, job_id: impl Into<String>, attempt: u32) -> Self {
        self.attempt = Some((job_id.into(), attempt));
        self
    }

    /// Takes part in checkpoints (see [`CheckpointEvent`]), restoring the
    /// state in `setup` first.
    pub fn with_checkpointing(mut self, setup: CheckpointSetup) -> Self {
        self.checkpointing = Some(setup);
        self
    }

    /// Operators keep keyed state in memory up to `budget` bytes per
    /// subtask and spill the rest into `store` (see [`StateSpill`]).
    pub fn with_state(mut self, store: JobStore, budget: usize) -> Self {
        self.spill = Some((store, budget));
        self
    }

    fn address(&self, vertex: usize, subtask: usize) -> Option<&str> {
        self.remote
            .as_ref()?
            .addresses
            .get(vertex)?
            .get(subtask)?
            .as_deref()
    }

    fn is_local(&self, vertex: usize, subtask: usize) -> bool {
        self.address(vertex, subtask).is_none()
    }
}

/// A running job.
pub struct JobHandle {
    name: String,
    metrics: MetricsRegistry,
    subtasks: Vec<SubtaskCounters>,
    stop: Arc<watch::Sender<bool>>,
    /// Set when an operator asks for the job to stop (see [`JobStop`]);
    /// in a partial deployment, whoever deployed it passes the request on.
    stop_requests: watch::Receiver<bool>,
    supervisor: tokio::task::JoinHandle<Result<()>>,
    checkpoints: Option<JobCheckpoints>,
}

/// One subtask's counters: the chain's, and its sink's when the chain
/// ends in one (a sink emits nothing: its rows out are the rows it wrote).
struct SubtaskCounters {
    vertex: usize,
    subtask: usize,
    chain: Arc<TaskMetrics>,
    sink: Option<Arc<TaskMetrics>>,
}

/// The job's ends of its tasks' checkpoint channels.
struct JobCheckpoints {
    /// One per source subtask deployed here: (vertex, subtask, trigger).
    triggers: Vec<(usize, usize, UnboundedSender<CheckpointBarrier>)>,
    completed: watch::Sender<CheckpointId>,
    events: Mutex<Option<UnboundedReceiver<CheckpointEvent>>>,
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

    /// Rows into and out of each subtask deployed here: `(vertex, subtask, counters)`.
    /// A subtask ending in a sink counts the rows it wrote as its rows out.
    pub fn subtask_counters(&self) -> Vec<(usize, usize, TaskMetricsSnapshot)> {
        self.subtasks
            .iter()
            .map(|c| {
                let mut snapshot = c.chain.snapshot();
                if let Some(sink) = &c.sink {
                    snapshot.records_out = sink.snapshot().records_out;
                }
                (c.vertex, c.subtask, snapshot)
            })
            .collect()
    }

    /// The subtasks deployed here, `(vertex, subtask)`.
    pub fn subtasks(&self) -> Vec<(usize, usize)> {
        self.subtasks
            .iter()
            .map(|c| (c.vertex, c.subtask))
            .collect()
    }

    /// True once an operator asked for the job to stop (a `LIMIT` that
    /// passed its last row). A job deployed whole in this process stops by
    /// itself; a partial deployment's owner must stop the whole job.
    pub fn stop_requested(&self) -> bool {
        *self.stop_requests.borrow()
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

    /// With checkpointing: the source subtasks deployed here, `(vertex, subtask)`.
    pub fn source_subtasks(&self) -> Vec<(usize, usize)> {
        self.checkpoints
            .iter()
            .flat_map(|c| c.triggers.iter().map(|(v, s, _)| (*v, *s)))
            .collect()
    }

    /// Injects a checkpoint barrier at every source subtask deployed here.
    pub fn trigger_checkpoint(&self, barrier: CheckpointBarrier) -> Result<()> {
        let checkpoints = self.checkpoints.as_ref().ok_or_else(|| {
            Error::internal("checkpoint triggered on a job deployed without checkpointing")
        })?;
        for (_, _, trigger) in &checkpoints.triggers {
            // A source that already ended has nothing to checkpoint.
            let _ = trigger.send(barrier);
        }
        Ok(())
    }

    /// Checkpoint `id` completed everywhere: tasks commit it (idempotent).
    pub fn checkpoint_completed(&self, id: CheckpointId) {
        if let Some(checkpoints) = &self.checkpoints {
            checkpoints.completed.send_if_modified(|current| {
                let newer = id > *current;
                if newer {
                    *current = id;
                }
                newer
            });
        }
    }

    /// The tasks' checkpoint reports; `None` without checkpointing or when
    /// already taken.
    pub fn take_checkpoint_events(&self) -> Option<UnboundedReceiver<CheckpointEvent>> {
        let checkpoints = self.checkpoints.as_ref()?;
        match checkpoints.events.lock() {
            Ok(mut events) => events.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        }
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

    /// Deploys the whole graph in this process and returns at once.
    pub fn spawn(&self, job: &str, graph: &PhysicalGraph) -> Result<JobHandle> {
        self.spawn_deployment(job, graph, &Deployment::local())
    }

    /// Deploys this process's part of the graph and returns at once.
    pub fn spawn_deployment(
        &self,
        job: &str,
        graph: &PhysicalGraph,
        deployment: &Deployment,
    ) -> Result<JobHandle> {
        let metrics = MetricsRegistry::default();
        let (stop_tx, stop_rx) = watch::channel(false);
        let stop_tx = Arc::new(stop_tx);
        // An operator's request stops a job that runs whole in this
        // process at once; a partial deployment's owner passes it on.
        let (job_stop, stop_requests) = if deployment.remote.is_none() {
            (JobStop::new(Arc::clone(&stop_tx)), stop_tx.subscribe())
        } else {
            let (requests, receiver) = watch::channel(false);
            (JobStop::new(Arc::new(requests)), receiver)
        };
        let mut tasks = self.build_tasks(job, graph, deployment, &metrics, &stop_rx, &job_stop)?;
        let checkpoints = deployment
            .checkpointing
            .as_ref()
            .map(|_| wire_checkpoints(&mut tasks));
        let subtasks = tasks
            .iter()
            .map(|t| SubtaskCounters {
                vertex: t.vertex,
                subtask: t.info.subtask,
                chain: Arc::clone(&t.counters),
                sink: t.sink_metrics.clone(),
            })
            .collect();
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
            subtasks,
            stop: stop_tx,
            stop_requests,
            supervisor,
            checkpoints,
        })
    }

    fn build_tasks(
        &self,
        job: &str,
        graph: &PhysicalGraph,
        deployment: &Deployment,
        metrics: &MetricsRegistry,
        stop: &watch::Receiver<bool>,
        job_stop: &JobStop,
    ) -> Result<Vec<Task>> {
        let (job_id, attempt) = deployment
            .attempt
            .clone()
            .unwrap_or_else(|| (local_job_id(), 0));
        let vertices = graph.vertices();
        let capacity = self.config.channel_capacity.max(1);
        // receivers[v][subtask], outputs[v][subtask]
        let mut receivers: Vec<Vec<Vec<InputChannel>>> = vertices
            .iter()
            .map(|v| (0..v.parallelism).map(|_| Vec::new()).collect())
            .collect();
        let mut outputs: Vec<Vec<Outputs>> = vertices
            .iter()
            .map(|v| (0..v.parallelism).map(|_| Outputs::default()).collect())
            .collect();
        for (edge_index, edge) in graph.edges().iter().enumerate() {
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
                let up_local = deployment.is_local(edge.from, i);
                let mut senders: Vec<OutputChannel> = Vec::with_capacity(targets.len());
                for j in targets {
                    let down_address = deployment.address(edge.to, j);
                    match (&deployment.remote, up_local, down_address) {
                        (_, true, None) => {
                            let (tx, rx): (Sender<Message>, Receiver<Message>) = channel(capacity);
                            senders.push(OutputChannel::Local(tx));
                            receivers[edge.to][j].push((edge.input, rx));
                        }
                        (Some(remote), true, Some(address)) => {
                            senders.push(OutputChannel::Remote {
                                exchange: remote.exchange.clone(),
                                address: address.to_string(),
                                key: channel_key(&remote.job_id, edge_index, i, j),
                                sender: None,
                            });
                        }
                        (Some(remote), false, None) => {
                            let key = channel_key(&remote.job_id, edge_index, i, j);
                            receivers[edge.to][j]
                                .push((edge.input, remote.exchange.receiver(&key)));
                        }
                        _ => {}
                    }
                }
                if !up_local {
                    continue;
                }
                up_outputs.edges.push(EdgeOutput {
                    kind: edge.kind.clone(),
                    port: edge.port,
                    senders,
                    max_key_groups: graph.max_key_groups(),
                    next_rebalance: i,
                });
            }
        }
        let mut tasks = Vec::new();
        for (v, vertex) in vertices.iter().enumerate() {
            let name = graph.vertex_name(v);
            for (subtask, (inputs, mut outs)) in
                receivers[v].drain(..).zip(outputs[v].drain(..)).enumerate()
            {
                if !deployment.is_local(v, subtask) {
                    continue;
                }
                let counters = Arc::new(TaskMetrics::default());
                outs.counters = Some(Arc::clone(&counters));
                let info = TaskInfo {
                    job: job.to_string(),
                    job_id: job_id.clone(),
                    attempt,
                    operator: name.clone(),
                    subtask,
                    parallelism: vertex.parallelism,
                    max_key_groups: graph.max_key_groups(),
                };
                let restore = |node: usize| -> OperatorRestore {
                    deployment
                        .checkpointing
                        .as_ref()
                        .and_then(|c| c.restore.get(&(node, subtask)).cloned())
                        .unwrap_or_default()
                };
                let mut chain = vertex.nodes.iter().peekable();
                let mut source_metrics = None;
                let head = match chain.peek().map(|&&n| (n, &graph.logical().node(n).kind)) {
                    Some((node, NodeKind::Source(source))) => {
                        chain.next();
                        let mut created = source.create(&info)?;
                        restore_source(created.as_mut(), restore(node), &info)?;
                        let source_counters = metrics.task(&format!("{node} {source}"), subtask);
                        source_metrics = Some(Arc::clone(&source_counters));
                        Head::Source {
                            source: created,
                            node,
                            metrics: source_counters,
                            stop: stop.clone(),
                        }
                    }
                    _ => Head::Inputs(InputGate::with_inputs(inputs)),
                };
                let mut sink_metrics = None;
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
                        split: None,
                        spill: deployment.spill.as_ref().map(|(store, budget)| {
                            let restored_from = deployment
                                .checkpointing
                                .as_ref()
                                .map_or(0, |c| c.restored_from);
                            StateSpill::new(store.clone(), node, &info, *budget)
                                .restored_from(restored_from)
                        }),
                        job_stop: job_stop.clone(),
                    };
                    if factory.is_sink() {
                        sink_metrics = Some(Arc::clone(&ctx.metrics));
                    }
                    let mut operator = factory.create(&info)?;
                    operator.restore_state(&ctx, restore(node))?;
                    operators.push((operator, ctx, node));
                }
                tasks.push(Task {
                    info,
                    vertex: v,
                    counters,
                    head,
                    operators,
                    outputs: outs,
                    checkpointing: None,
                    source_metrics,
                    sink_metrics,
                });
            }
        }
        Ok(tasks)
    }
}

/// Connects every task to the job's checkpoint channels.
fn wire_checkpoints(tasks: &mut [Task]) -> JobCheckpoints {
    let (events_tx, events_rx) = mpsc::unbounded_channel();
    let (completed_tx, completed_rx) = watch::channel(0);
    let mut triggers = Vec::new();
    for task in tasks {
        let trigger = match task.head {
            Head::Source { .. } => {
                let (tx, rx) = mpsc::unbounded_channel();
                triggers.push((task.vertex, task.info.subtask, tx));
                Some(rx)
            }
            Head::Inputs(_) => None,
        };
        task.checkpointing = Some(TaskCheckpointing {
            triggers: trigger,
            completed: completed_rx.clone(),
            events: events_tx.clone(),
            last_barrier: None,
            final_barrier_seen: false,
        });
    }
    JobCheckpoints {
        triggers,
        completed: completed_tx,
        events: Mutex::new(Some(events_rx)),
    }
}

/// Rewinds a source to its checkpointed position. A source subtask takes
/// over exactly one old subtask's position: sources do not rescale.
fn restore_source(
    source: &mut dyn crate::connector::Source,
    restore: OperatorRestore,
    info: &TaskInfo,
) -> Result<()> {
    match restore.operator.as_slice() {
        [] => Ok(()),
        [(_, position)] => source.restore_position(position),
        several => Err(Error::Config(format!(
            "source '{}' subtask {} would take over the positions of {} checkpointed subtasks; \
             a source restores only at the parallelism it was checkpointed with \
             (set 'scan.parallelism' on the table to keep it)",
            info.operator,
            info.subtask,
            several.len()
        ))),
    }
}

/// An id for a job deployed whole in this process without one: unique
/// among this process's jobs, and unlikely to meet another process's.
fn local_job_id() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("local{:x}x{n}", std::process::id())
}

fn channel_key(job_id: &str, edge: usize, from: usize, to: usize) -> ChannelKey {
    ChannelKey {
        job_id: job_id.to_string(),
        edge: edge as u32,
        from_subtask: from as u32,
        to_subtask: to as u32,
    }
}
