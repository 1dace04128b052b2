//! A worker process: serves the data plane, keeps a session with the
//! coordinator (registration, heartbeats with counters, task states), and
//! runs the subtasks the coordinator places on it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow::record_batch::RecordBatch;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use tonic::transport::server::TcpIncoming;
use tracing::{info, warn};
use weir_engine::exchange::{Exchange, ExchangeFailure};
use weir_engine::state::{CheckpointStorage, StateBackend, StateConfig};
use weir_engine::{CheckpointBarrier, Deployment, JobHandle, LocalRuntime};
use weir_proto as pb;
use weir_proto::coordinator_client::CoordinatorClient;
use weir_sql::{Outcome, Session};

use super::config::ClusterConfig;
use super::worker_checkpoints::{PartCheckpoints, crash_point, load_restore, spawn_driver};
use super::{ClusterError, Result, bind, connect, plan_fingerprint, results};

/// A bound worker, ready to join its coordinator.
pub struct Worker {
    id: String,
    data_address: SocketAddr,
    config: ClusterConfig,
    exchange: Exchange,
    failures: mpsc::UnboundedReceiver<ExchangeFailure>,
    server: JoinHandle<()>,
    runtime: LocalRuntime,
    /// The RocksDB instances of the jobs' state.
    state: StateBackend,
    /// Job parts by [`part_key`]: a job's id and attempt.
    jobs: HashMap<String, RunningPart>,
    /// The last heartbeat sent, for the metrics endpoint.
    latest: Arc<Mutex<pb::Heartbeat>>,
}

/// This worker's part of a job.
struct RunningPart {
    job_id: String,
    attempt: u32,
    handle: JobHandle,
    checkpoints: Option<JoinHandle<()>>,
    forwarder: Option<JoinHandle<Result<()>>>,
    vertex_names: Vec<String>,
    failure: Option<String>,
}

/// Why a session with the coordinator ended.
enum SessionEnd {
    Shutdown,
    CoordinatorLost(String),
}

impl Worker {
    /// Binds the data plane on `config.worker.listen` and starts serving it.
    pub async fn bind(config: ClusterConfig) -> Result<Self> {
        let listen = config.worker.listen.clone();
        let (listener, data_address) = bind(&listen, "the data plane").await?;
        let (exchange, failures) = Exchange::new(config.exchange.to_exchange_config());
        let service = exchange.flight_service();
        let server = tokio::spawn(async move {
            if let Err(e) = weir_engine::exchange::server_builder()
                .add_service(service)
                .serve_with_incoming(TcpIncoming::from(listener).with_nodelay(Some(true)))
                .await
            {
                warn!(error = %e, "data plane server failed");
            }
        });
        let id = match config.worker.id.trim() {
            "" => format!("worker-{data_address}"),
            id => id.to_string(),
        };
        let state_dir = match config.worker.state_dir.trim() {
            "" => std::env::temp_dir()
                .join("weir-state")
                .join(id.replace(|c: char| !c.is_ascii_alphanumeric() && c != '-', "_")),
            dir => std::path::PathBuf::from(dir),
        };
        let state = StateBackend::open(StateConfig {
            dir: state_dir,
            block_cache_bytes: (config.worker.state_block_cache_mb as usize) << 20,
            write_buffer_bytes: (config.worker.state_write_buffer_mb as usize) << 20,
        })
        .map_err(|e| ClusterError::Config(format!("worker state: {e}")))?;
        Ok(Self {
            id,
            data_address,
            config,
            exchange,
            failures,
            server,
            runtime: LocalRuntime::default(),
            state,
            jobs: HashMap::new(),
            latest: Arc::default(),
        })
    }

    /// The worker's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Where the worker serves the data plane.
    pub fn data_address(&self) -> SocketAddr {
        self.data_address
    }

    /// Renders this worker's metrics in the Prometheus text format: the data
    /// plane's counters and, as of the last heartbeat, its subtasks' rows.
    pub fn metrics_renderer(&self) -> Arc<dyn Fn() -> String + Send + Sync> {
        let exchange = self.exchange.clone();
        let latest = Arc::clone(&self.latest);
        let worker = super::metrics_endpoint::label(&self.id);
        Arc::new(move || {
            use super::metrics_endpoint::{family, label};
            let stats = exchange.stats();
            let w = format!("worker=\"{worker}\"");
            let mut out = String::new();
            for (name, kind, help, value) in [
                (
                    "weir_exchange_sent_bytes_total",
                    "counter",
                    "Arrow IPC bytes sent to other workers.",
                    stats.bytes_sent,
                ),
                (
                    "weir_exchange_received_bytes_total",
                    "counter",
                    "Arrow IPC bytes received from other workers.",
                    stats.bytes_received,
                ),
                (
                    "weir_exchange_sent_batches_total",
                    "counter",
                    "Record batches sent to other workers.",
                    stats.batches_sent,
                ),
                (
                    "weir_exchange_sent_rows_total",
                    "counter",
                    "Rows sent to other workers.",
                    stats.rows_sent,
                ),
                (
                    "weir_exchange_max_inflight_bytes",
                    "gauge",
                    "Most bytes any channel had in flight (bounded by the credit window plus one batch).",
                    stats.max_inflight_bytes,
                ),
            ] {
                family(&mut out, name, kind, help, [(w.clone(), value)]);
            }
            let heartbeat = latest.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let subtask = |c: &pb::TaskCounters| {
                let t = c.task.clone().unwrap_or_default();
                format!(
                    "{w},job=\"{}\",vertex=\"{}\",subtask=\"{}\"",
                    label(&t.job_id),
                    t.vertex,
                    t.subtask
                )
            };
            family(
                &mut out,
                "weir_subtask_records_in_total",
                "counter",
                "Rows into a subtask's operator chain.",
                heartbeat
                    .counters
                    .iter()
                    .map(|c| (subtask(c), c.records_in)),
            );
            family(
                &mut out,
                "weir_subtask_records_out_total",
                "counter",
                "Rows out of a subtask's operator chain.",
                heartbeat
                    .counters
                    .iter()
                    .map(|c| (subtask(c), c.records_out)),
            );
            out
        })
    }

    /// Registers with the coordinator and serves it until `shutdown`
    /// completes. Returns an error when the coordinator cannot be reached
    /// (within `connect_timeout_ms`) or refuses the worker.
    pub async fn run(mut self, shutdown: impl std::future::Future<Output = ()>) -> Result<()> {
        let mut shutdown = std::pin::pin!(shutdown);
        let mut registered_once = false;
        let result = loop {
            let session = tokio::select! {
                session = self.open_session() => session,
                _ = &mut shutdown => break Ok(()),
            };
            let (channel, mut commands, events, interval) = match session {
                Ok(s) => s,
                // Once part of a cluster, wait for the coordinator to come
                // back (it resumes its jobs from their checkpoints).
                Err(e) if registered_once => {
                    warn!(worker = %self.id, error = %e, "the coordinator is unreachable; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(500)) => continue,
                        _ = &mut shutdown => break Ok(()),
                    }
                }
                Err(e) => break Err(e),
            };
            registered_once = true;
            match self
                .serve_session(channel, &mut commands, &events, interval, &mut shutdown)
                .await
            {
                SessionEnd::Shutdown => break Ok(()),
                SessionEnd::CoordinatorLost(reason) => {
                    warn!(worker = %self.id, %reason, "lost the coordinator; cancelling jobs and reconnecting");
                    self.cancel_all().await;
                }
            }
        };
        self.cancel_all().await;
        self.server.abort();
        result
    }

    async fn open_session(
        &self,
    ) -> Result<(
        Channel,
        tonic::Streaming<pb::CoordinatorCommand>,
        mpsc::UnboundedSender<pb::WorkerEvent>,
        Duration,
    )> {
        let address = &self.config.worker.coordinator;
        let timeout = Duration::from_millis(self.config.worker.connect_timeout_ms);
        let channel = connect("the coordinator", address, timeout).await?;
        let mut client = CoordinatorClient::new(channel.clone());
        let (events, outbound) = mpsc::unbounded_channel();
        let _ = events.send(pb::WorkerEvent {
            event: Some(pb::worker_event::Event::Register(pb::RegisterWorker {
                worker_id: self.id.clone(),
                data_address: self.data_address.to_string(),
                slots: self.config.worker.slots,
                version: env!("CARGO_PKG_VERSION").to_string(),
            })),
        });
        let outbound = futures::stream::unfold(outbound, |mut rx| async move {
            rx.recv().await.map(|e| (e, rx))
        });
        let refused = |message: &str| {
            ClusterError::Rejected(format!(
                "the coordinator at {address} refused worker '{}': {message}",
                self.id
            ))
        };
        let mut commands = client
            .worker_session(outbound)
            .await
            .map_err(|s| refused(s.message()))?
            .into_inner();
        let interval = match commands.message().await {
            Ok(Some(pb::CoordinatorCommand {
                command: Some(pb::coordinator_command::Command::Registered(r)),
            })) => Duration::from_millis(r.heartbeat_interval_ms.max(10)),
            Ok(_) => return Err(refused("no registration confirmation")),
            Err(s) => return Err(refused(s.message())),
        };
        info!(worker = %self.id, coordinator = %address, "registered");
        Ok((channel, commands, events, interval))
    }

    async fn serve_session(
        &mut self,
        channel: Channel,
        commands: &mut tonic::Streaming<pb::CoordinatorCommand>,
        events: &mpsc::UnboundedSender<pb::WorkerEvent>,
        interval: Duration,
        shutdown: &mut std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
    ) -> SessionEnd {
        let mut heartbeat = tokio::time::interval(interval);
        let mut poll = tokio::time::interval(Duration::from_millis(20));
        loop {
            tokio::select! {
                command = commands.message() => match command {
                    Ok(Some(command)) => self.command(command, &channel, events).await,
                    Ok(None) => return SessionEnd::CoordinatorLost("the coordinator closed the session".into()),
                    Err(s) => return SessionEnd::CoordinatorLost(format!("the session broke: {}", s.message())),
                },
                _ = heartbeat.tick() => {
                    let beat = self.heartbeat();
                    if let Some(pb::worker_event::Event::Heartbeat(h)) = &beat.event {
                        *self.latest.lock().unwrap_or_else(|e| e.into_inner()) = h.clone();
                    }
                    if events.send(beat).is_err() {
                        return SessionEnd::CoordinatorLost("the session's stream closed".into());
                    }
                }
                _ = poll.tick() => self.reap(events).await,
                Some(failure) = self.failures.recv() => {
                    // The data plane names a job part as its key.
                    if let Some(part) = self.jobs.get_mut(&failure.channel.job_id)
                        && part.failure.is_none()
                    {
                        warn!(job = %failure.channel.job_id, message = %failure.message, "exchange failed");
                        part.failure = Some(failure.message);
                        part.handle.cancel();
                    }
                }
                _ = shutdown.as_mut() => return SessionEnd::Shutdown,
            }
        }
    }

    async fn command(
        &mut self,
        command: pb::CoordinatorCommand,
        channel: &Channel,
        events: &mpsc::UnboundedSender<pb::WorkerEvent>,
    ) {
        use pb::coordinator_command::Command;
        match command.command {
            Some(Command::Deploy(deploy)) => {
                let job_id = deploy.job_id.clone();
                let attempt = deploy.attempt;
                let key = part_key(&job_id, attempt);
                let mine: Vec<(u32, u32)> = deploy
                    .placement
                    .iter()
                    .filter(|p| p.worker_id == self.id)
                    .map(|p| (p.vertex, p.subtask))
                    .collect();
                let task = (job_id.as_str(), attempt);
                match self.deploy(deploy, channel.clone(), events).await {
                    Ok(part) => {
                        info!(job = %job_id, attempt, subtasks = mine.len(), "deployed");
                        send_states(events, task, &mine, pb::TaskState::Running, "");
                        self.jobs.insert(key, part);
                    }
                    Err(message) => {
                        warn!(job = %job_id, attempt, %message, "deployment failed");
                        send_states(
                            events,
                            task,
                            &mine[..mine.len().min(1)],
                            pb::TaskState::Failed,
                            &message,
                        );
                        self.exchange.release_job(&key);
                    }
                }
            }
            Some(Command::Cancel(job)) => {
                for part in self.jobs.values().filter(|p| p.job_id == job.job_id) {
                    part.handle.cancel();
                    if let Some(f) = &part.forwarder {
                        f.abort();
                    }
                }
            }
            Some(Command::Stop(job)) => {
                for part in self.jobs.values().filter(|p| p.job_id == job.job_id) {
                    part.handle.stop();
                }
            }
            Some(Command::TriggerCheckpoint(trigger)) => {
                let key = part_key(&trigger.job_id, trigger.attempt);
                if let (Some(part), Some(b)) = (self.jobs.get(&key), trigger.barrier) {
                    let barrier = CheckpointBarrier {
                        id: b.checkpoint_id,
                        timestamp_ms: b.timestamp_ms,
                        then_stop: b.then_stop,
                    };
                    if let Err(e) = part.handle.trigger_checkpoint(barrier) {
                        warn!(job = %trigger.job_id, error = %e, "cannot trigger a checkpoint");
                    }
                }
            }
            Some(Command::CheckpointComplete(complete)) => {
                let key = part_key(&complete.job_id, complete.attempt);
                if let Some(part) = self.jobs.get(&key) {
                    crash_point!("worker::before-commit");
                    part.handle.checkpoint_completed(complete.checkpoint_id);
                }
            }
            Some(Command::Registered(_)) | None => {}
        }
    }

    /// Plans the job's SQL again, checks it matches the coordinator's plan,
    /// and deploys the subtasks placed here.
    async fn deploy(
        &self,
        deploy: pb::DeployJob,
        channel: Channel,
        events: &mpsc::UnboundedSender<pb::WorkerEvent>,
    ) -> Result<RunningPart, String> {
        let spec = deploy.spec.ok_or("a deployment without a job spec")?;
        let mut session = Session::new(weir_connectors::default_registry());
        session.set_default_parallelism(spec.parallelism.max(1) as usize);
        let statements = weir_sql::split_statements(&spec.sql).map_err(|e| e.to_string())?;
        let mut last = None;
        for statement in statements {
            last = Some(
                session
                    .execute(&statement.text)
                    .await
                    .map_err(|e| format!("planning failed on worker: {e}"))?,
            );
        }
        let (plan, rows) = match last {
            Some(Outcome::Job(plan)) => (plan, None),
            Some(Outcome::Query(q)) => (q.job, Some(q.rows)),
            _ => return Err("the job's SQL does not end in INSERT or SELECT".into()),
        };
        let graph = plan.graph;
        if plan_fingerprint(&graph) != deploy.plan_fingerprint {
            return Err(format!(
                "worker '{}' planned a different graph than the coordinator \
                 (do all processes run the same Weir version?)",
                self.id
            ));
        }
        let addresses: HashMap<&str, &str> = deploy
            .workers
            .iter()
            .map(|w| (w.worker_id.as_str(), w.data_address.as_str()))
            .collect();
        let vertices = graph.vertices();
        let mut table: Vec<Vec<Option<String>>> = vertices
            .iter()
            .map(|v| vec![Some(String::new()); v.parallelism])
            .collect();
        for p in &deploy.placement {
            let slot = table
                .get_mut(p.vertex as usize)
                .and_then(|v| v.get_mut(p.subtask as usize))
                .ok_or_else(|| {
                    format!(
                        "placement names a subtask {}[{}] the plan lacks",
                        p.vertex, p.subtask
                    )
                })?;
            *slot = if p.worker_id == self.id {
                None
            } else {
                let address = addresses
                    .get(p.worker_id.as_str())
                    .ok_or_else(|| format!("no address for worker '{}'", p.worker_id))?;
                Some(address.to_string())
            };
        }
        let last_vertex = vertices.len().saturating_sub(1);
        let hosts_results = table
            .get(last_vertex)
            .is_some_and(|v| v.iter().any(Option::is_none));
        let vertex_names = (0..vertices.len()).map(|v| graph.vertex_name(v)).collect();
        let local: std::collections::BTreeSet<(usize, usize)> = table
            .iter()
            .enumerate()
            .flat_map(|(v, subtasks)| {
                subtasks
                    .iter()
                    .enumerate()
                    .filter(|(_, a)| a.is_none())
                    .map(move |(s, _)| (v, s))
            })
            .collect();
        let key = part_key(&deploy.job_id, deploy.attempt);
        let mut deployment = Deployment::partial(&key, table, self.exchange.clone());
        let mut checkpointing = None;
        // Operators spill keyed state past their budget into the job's
        // RocksDB instance, with or without checkpoints.
        let store = self
            .state
            .open_job(&deploy.job_id, deploy.attempt)
            .map_err(|e| e.to_string())?;
        deployment = deployment.with_state(store.clone(), self.operator_memory_bytes());
        if !deploy.checkpoint_url.is_empty() {
            let storage = CheckpointStorage::open(&deploy.checkpoint_url, &deploy.job_id)
                .map_err(|e| e.to_string())?;
            let setup = match deploy.restore_checkpoint {
                0 => weir_engine::CheckpointSetup::default(),
                id => {
                    let scratch = std::env::temp_dir()
                        .join(format!("weir-restore-{}-{key}", self.id.replace('/', "_")));
                    load_restore(&storage, id, &graph, &local, &scratch, &store).await?
                }
            };
            deployment = deployment.with_checkpointing(setup);
            let local_nodes = local
                .iter()
                .flat_map(|&(v, s)| vertices[v].nodes.iter().map(move |&n| (n as u32, s as u32)))
                .collect();
            checkpointing = Some(PartCheckpoints {
                job_id: deploy.job_id.clone(),
                attempt: deploy.attempt,
                worker_id: self.id.clone(),
                local,
                local_nodes,
                store,
                storage,
                events: events.clone(),
            });
        }
        let handle = self
            .runtime
            .spawn_deployment(&plan.name, &graph, &deployment)
            .map_err(|e| e.to_string())?;
        let checkpoints = match (checkpointing, handle.take_checkpoint_events()) {
            (Some(part), Some(reports)) => Some(spawn_driver(part, reports)),
            _ => None,
        };
        // The graph holds the query sink's sender: drop it so the result
        // stream ends when the subtasks do.
        drop(graph);
        let forwarder = match rows {
            Some(rows) if hosts_results => Some(tokio::spawn(forward_results(
                channel,
                deploy.job_id.clone(),
                rows,
            ))),
            _ => None,
        };
        Ok(RunningPart {
            job_id: deploy.job_id,
            attempt: deploy.attempt,
            handle,
            checkpoints,
            forwarder,
            vertex_names,
            failure: None,
        })
    }

    /// Keyed state an operator subtask keeps in memory before spilling.
    fn operator_memory_bytes(&self) -> usize {
        usize::try_from(
            self.config
                .worker
                .state_operator_memory_kb
                .saturating_mul(1024),
        )
        .unwrap_or(usize::MAX)
    }

    /// A heartbeat with the counters of every running job.
    fn heartbeat(&self) -> pb::WorkerEvent {
        let mut heartbeat = pb::Heartbeat::default();
        for part in self.jobs.values() {
            add_counters(&mut heartbeat, &part.job_id, part);
        }
        pb::WorkerEvent {
            event: Some(pb::worker_event::Event::Heartbeat(heartbeat)),
        }
    }

    /// Reports the parts of jobs that ended.
    async fn reap(&mut self, events: &mpsc::UnboundedSender<pb::WorkerEvent>) {
        let ended: Vec<String> = self
            .jobs
            .iter()
            .filter(|(_, p)| {
                p.handle.is_finished() && p.forwarder.as_ref().is_none_or(JoinHandle::is_finished)
            })
            .map(|(id, _)| id.clone())
            .collect();
        for key in ended {
            let Some(part) = self.jobs.remove(&key) else {
                continue;
            };
            let job_id = part.job_id.clone();
            let task = (job_id.as_str(), part.attempt);
            if let Some(driver) = &part.checkpoints {
                driver.abort();
            }
            if !self.jobs.values().any(|p| p.job_id == job_id)
                && let Err(e) = self.state.drop_job(&job_id)
            {
                warn!(job = %job_id, error = %e, "could not remove the job's local state");
            }
            // A last heartbeat so the final counters reach the coordinator.
            let mut last = pb::Heartbeat::default();
            add_counters(&mut last, &job_id, &part);
            let _ = events.send(pb::WorkerEvent {
                event: Some(pb::worker_event::Event::Heartbeat(last)),
            });
            let tasks: Vec<(u32, u32)> = part
                .handle
                .subtasks()
                .into_iter()
                .map(|(v, s)| (v as u32, s as u32))
                .collect();
            let forwarded = match part.forwarder {
                Some(f) => match f.await {
                    Ok(r) => r.map_err(|e| e.to_string()),
                    Err(e) if e.is_cancelled() => Err("cancelled".to_string()),
                    Err(e) => Err(format!("result forwarder failed: {e}")),
                },
                None => Ok(()),
            };
            let outcome = part.handle.wait().await;
            match (part.failure, outcome, forwarded) {
                (Some(failure), _, _) => {
                    send_states(
                        events,
                        task,
                        &tasks[..tasks.len().min(1)],
                        pb::TaskState::Failed,
                        &failure,
                    );
                    send_states(
                        events,
                        task,
                        tasks.get(1..).unwrap_or(&[]),
                        pb::TaskState::Canceled,
                        "",
                    );
                }
                (None, Ok(()), Ok(())) => {
                    send_states(events, task, &tasks, pb::TaskState::Finished, "")
                }
                (None, Err(weir_engine::Error::Cancelled), _) => {
                    send_states(events, task, &tasks, pb::TaskState::Canceled, "")
                }
                (None, Err(e), _) => {
                    let failed = failed_task(&e, &part.vertex_names, &tasks);
                    send_states(
                        events,
                        task,
                        &[failed],
                        pb::TaskState::Failed,
                        &e.to_string(),
                    );
                    let others: Vec<(u32, u32)> =
                        tasks.iter().copied().filter(|t| *t != failed).collect();
                    send_states(events, task, &others, pb::TaskState::Canceled, "");
                }
                (None, Ok(()), Err(e)) => send_states(
                    events,
                    task,
                    &tasks[..tasks.len().min(1)],
                    pb::TaskState::Failed,
                    &format!("sending results to the coordinator failed: {e}"),
                ),
            }
            self.exchange.release_job(&key);
        }
    }

    async fn cancel_all(&mut self) {
        for (key, part) in self.jobs.drain() {
            part.handle.cancel();
            if let Some(f) = part.forwarder {
                f.abort();
            }
            if let Some(driver) = part.checkpoints {
                driver.abort();
            }
            self.exchange.release_job(&key);
        }
    }
}

/// Adds one job's counters (per subtask, and its rows read / written) to a heartbeat.
fn add_counters(heartbeat: &mut pb::Heartbeat, job_id: &str, part: &RunningPart) {
    for (vertex, subtask, m) in part.handle.subtask_counters() {
        heartbeat.counters.push(pb::TaskCounters {
            task: Some(pb::TaskId {
                job_id: job_id.to_string(),
                vertex: vertex as u32,
                subtask: subtask as u32,
            }),
            records_in: m.records_in,
            records_out: m.records_out,
            late_records_dropped: m.late_records_dropped,
        });
    }
    let metrics = part.handle.metrics();
    heartbeat.jobs.push(pb::JobCounters {
        job_id: job_id.to_string(),
        records_read: metrics.rows_read(),
        records_written: metrics.rows_written(),
        late_records_dropped: metrics.late_rows_dropped(),
        bad_records: metrics.bad_records(),
        state_spilled_bytes: metrics.total(|_| true, |m| m.state_spilled_bytes),
    });
}

/// Which local subtask an error came from (the first one when unknown).
fn failed_task(
    error: &weir_engine::Error,
    vertex_names: &[String],
    tasks: &[(u32, u32)],
) -> (u32, u32) {
    if let weir_engine::Error::Operator {
        operator, subtask, ..
    } = error
        && let Some(v) = vertex_names.iter().position(|n| n == operator)
        && tasks.contains(&(v as u32, *subtask as u32))
    {
        return (v as u32, *subtask as u32);
    }
    tasks.first().copied().unwrap_or((0, 0))
}

/// How the worker (and its data plane) names one attempt of a job.
fn part_key(job_id: &str, attempt: u32) -> String {
    format!("{job_id}#{attempt}")
}

fn send_states(
    events: &mpsc::UnboundedSender<pb::WorkerEvent>,
    (job_id, attempt): (&str, u32),
    tasks: &[(u32, u32)],
    state: pb::TaskState,
    message: &str,
) {
    for &(vertex, subtask) in tasks {
        let _ = events.send(pb::WorkerEvent {
            event: Some(pb::worker_event::Event::TaskStatus(pb::TaskStatus {
                task: Some(pb::TaskId {
                    job_id: job_id.to_string(),
                    vertex,
                    subtask,
                }),
                state: state as i32,
                message: message.to_string(),
                attempt,
            })),
        });
    }
}

/// Streams a query's result batches to the coordinator.
async fn forward_results(
    channel: Channel,
    job_id: String,
    mut rows: mpsc::Receiver<RecordBatch>,
) -> Result<()> {
    let mut client = CoordinatorClient::new(channel)
        .max_encoding_message_size(256 << 20)
        .max_decoding_message_size(256 << 20);
    let (tx, rx) = mpsc::channel::<pb::ResultBatch>(2);
    let id = job_id.clone();
    let pump = async move {
        while let Some(batch) = rows.recv().await {
            let message = pb::ResultBatch {
                job_id: id.clone(),
                arrow_ipc: results::encode(&batch)?,
                end: false,
            };
            if tx.send(message).await.is_err() {
                return Ok(());
            }
        }
        let _ = tx
            .send(pb::ResultBatch {
                job_id: id,
                arrow_ipc: Vec::new(),
                end: true,
            })
            .await;
        Ok::<(), ClusterError>(())
    };
    let outbound =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (b, rx)) });
    let (pushed, pumped) = tokio::join!(client.push_results(outbound), pump);
    pumped?;
    pushed.map_err(|s| ClusterError::Rejected(format!("job {job_id}: {}", s.message())))?;
    Ok(())
}
