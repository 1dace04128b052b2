//! A worker process: serves the data plane, keeps a session with the
//! coordinator (registration, heartbeats with counters, task states), and
//! runs the subtasks the coordinator places on it.

mod deploy;
pub(super) mod report;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use tonic::transport::server::TcpIncoming;
use tracing::{info, warn};
use weir_engine::exchange::{Exchange, ExchangeFailure};
use weir_engine::state::{StateBackend, StateConfig};
use weir_engine::{CheckpointBarrier, JobHandle, LocalRuntime};
use weir_proto as pb;
use weir_proto::coordinator_client::CoordinatorClient;

use super::config::ClusterConfig;
use super::worker_checkpoints::crash_point;
use super::{ClusterError, Result, WhenRefused, bind, connect};
use report::{Failure, add_counters, failed_task, part_key, send_states};

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
    /// Set when the data plane failed the part (a peer's connection broke).
    failure: Option<Failure>,
    /// An operator's stop request went to the coordinator.
    stop_forwarded: bool,
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
                "Rows out of a subtask's operator chain (for a sink: rows written).",
                heartbeat
                    .counters
                    .iter()
                    .map(|c| (subtask(c), c.records_out)),
            );
            family(
                &mut out,
                "weir_late_records_dropped_total",
                "counter",
                "Rows a subtask dropped because they arrived after the watermark passed their window.",
                heartbeat
                    .counters
                    .iter()
                    .map(|c| (subtask(c), c.late_records_dropped)),
            );
            family(
                &mut out,
                "weir_source_bad_records_total",
                "counter",
                "Records this worker's sources of a job dropped or dead-lettered because they did not decode.",
                heartbeat
                    .jobs
                    .iter()
                    .map(|j| (format!("{w},job=\"{}\"", label(&j.job_id)), j.bad_records)),
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
        let channel = connect("the coordinator", address, timeout, WhenRefused::Retry).await?;
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
                        part.failure = Some(Failure::network(failure.message));
                        part.handle.cancel();
                    }
                }
                _ = shutdown.as_mut() => {
                    // Say goodbye, so the coordinator does not count a loss,
                    // and wait (briefly) until it closes the session.
                    let _ = events.send(pb::WorkerEvent {
                        event: Some(pb::worker_event::Event::Leaving(pb::WorkerLeaving {})),
                    });
                    let closed = async { while let Ok(Some(_)) = commands.message().await {} };
                    let _ = tokio::time::timeout(Duration::from_secs(1), closed).await;
                    return SessionEnd::Shutdown;
                }
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
                        send_states(events, task, &mine, pb::TaskState::Running, None);
                        self.jobs.insert(key, part);
                    }
                    Err(failure) => {
                        warn!(job = %job_id, attempt, message = %failure.message, "deployment failed");
                        send_states(
                            events,
                            task,
                            &mine[..mine.len().min(1)],
                            pb::TaskState::Failed,
                            Some(&failure),
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

    /// Passes an operator's stop request (a `LIMIT` reached) on to the
    /// coordinator, which stops the job everywhere.
    fn forward_stop_requests(&mut self, events: &mpsc::UnboundedSender<pb::WorkerEvent>) {
        for part in self.jobs.values_mut() {
            if part.stop_forwarded || !part.handle.stop_requested() {
                continue;
            }
            part.stop_forwarded = true;
            info!(job = %part.job_id, attempt = part.attempt, "an operator asked the job to stop");
            let _ = events.send(pb::WorkerEvent {
                event: Some(pb::worker_event::Event::StopRequested(pb::StopRequested {
                    job_id: part.job_id.clone(),
                    attempt: part.attempt,
                    reason: "its LIMIT was reached".into(),
                })),
            });
        }
    }

    /// Reports the parts of jobs that ended.
    async fn reap(&mut self, events: &mpsc::UnboundedSender<pb::WorkerEvent>) {
        self.forward_stop_requests(events);
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
                        Some(&failure),
                    );
                    send_states(
                        events,
                        task,
                        tasks.get(1..).unwrap_or(&[]),
                        pb::TaskState::Canceled,
                        None,
                    );
                }
                (None, Ok(()), Ok(())) => {
                    send_states(events, task, &tasks, pb::TaskState::Finished, None)
                }
                (None, Err(weir_engine::Error::Cancelled), _) => {
                    send_states(events, task, &tasks, pb::TaskState::Canceled, None)
                }
                (None, Err(e), _) => {
                    let failed = failed_task(&e, &part.vertex_names, &tasks);
                    send_states(
                        events,
                        task,
                        &[failed],
                        pb::TaskState::Failed,
                        Some(&Failure::from_error(&e)),
                    );
                    let others: Vec<(u32, u32)> =
                        tasks.iter().copied().filter(|t| *t != failed).collect();
                    send_states(events, task, &others, pb::TaskState::Canceled, None);
                }
                (None, Ok(()), Err(e)) => send_states(
                    events,
                    task,
                    &tasks[..tasks.len().min(1)],
                    pb::TaskState::Failed,
                    Some(&Failure::network(format!(
                        "sending results to the coordinator failed: {e}"
                    ))),
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
