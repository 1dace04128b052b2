//! The coordinator: keeps the cluster's membership (registrations,
//! heartbeats), plans submitted SQL, places each job's slices on worker
//! slots, deploys them, and tracks every subtask until the job ends.
//!
//! A worker is lost when its session stream breaks or it misses heartbeats
//! for `heartbeat_timeout_ms`; every job with subtasks on it fails, naming
//! the worker. (Restarting such jobs from a checkpoint is where
//! [`Coordinator::on_job_failure`] will grow a restart strategy.)

mod planning;
mod service;
mod state;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tonic::Status;
use tonic::transport::server::TcpIncoming;
use tracing::{info, warn};
use weir_proto as pb;

use super::config::CoordinatorConfig;
use super::{ClusterError, Result, bind, now_ms, plan_fingerprint};
use planning::{PlannedJob, place, plan_script};
use state::{JobEntry, ResultChannel, State, SubtaskEntry};

/// Result batches buffered per query job before its producers wait.
const RESULT_BUFFER: usize = 16;

/// The coordinator service. Cheap to clone.
#[derive(Clone)]
pub struct Coordinator {
    config: CoordinatorConfig,
    state: Arc<Mutex<State>>,
    /// Data addresses of workers that were lost, to name them in failures.
    lost: Arc<Mutex<BTreeMap<String, String>>>,
    /// Worker losses so far.
    losses: Arc<std::sync::atomic::AtomicU64>,
}

impl Coordinator {
    /// A coordinator with these settings and no workers yet.
    pub fn new(config: CoordinatorConfig) -> Self {
        Self {
            config,
            state: Arc::default(),
            lost: Arc::default(),
            losses: Arc::default(),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Binds the listen address; returns the bound address and the server,
    /// which runs until `shutdown` completes.
    pub async fn serve(
        self,
        listen: &str,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(SocketAddr, tokio::task::JoinHandle<Result<()>>)> {
        let (listener, address) = bind(listen, "the coordinator").await?;
        let monitor = self.clone();
        let monitor = tokio::spawn(async move { monitor.watch_heartbeats().await });
        let service = pb::coordinator_server::CoordinatorServer::new(self)
            .max_decoding_message_size(256 << 20)
            .max_encoding_message_size(256 << 20);
        let server = tokio::spawn(async move {
            let result = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(
                    TcpIncoming::from(listener).with_nodelay(Some(true)),
                    shutdown,
                )
                .await
                .map_err(|e| ClusterError::Rejected(format!("coordinator server failed: {e}")));
            monitor.abort();
            result
        });
        info!(%address, "coordinator listening");
        Ok((address, server))
    }

    /// Marks workers that stopped heartbeating as lost.
    async fn watch_heartbeats(&self) {
        let timeout = Duration::from_millis(self.config.heartbeat_timeout_ms.max(1));
        let mut tick = tokio::time::interval(Duration::from_millis(
            (self.config.heartbeat_timeout_ms / 10).clamp(50, 500),
        ));
        loop {
            tick.tick().await;
            let silent: Vec<(String, u64)> = self
                .state()
                .workers
                .iter()
                .filter(|(_, w)| w.last_heartbeat.elapsed() > timeout)
                .map(|(id, w)| (id.clone(), w.session))
                .collect();
            for (id, session) in silent {
                self.worker_lost(
                    &id,
                    session,
                    &format!("no heartbeat for {:.1}s", timeout.as_secs_f64()),
                );
            }
        }
    }

    /// Removes a worker and fails every job that ran on it.
    fn worker_lost(&self, worker_id: &str, session: u64, reason: &str) {
        let mut state = self.state();
        let Some(worker) = state.workers.get(worker_id) else {
            return;
        };
        if worker.session != session {
            return;
        }
        let address = worker.data_address.clone();
        state.workers.remove(worker_id);
        self.losses
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        warn!(worker = worker_id, %address, reason, "worker lost");
        self.lost
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(worker_id.to_string(), address.clone());
        let message = format!("worker '{worker_id}' ({address}) lost: {reason}");
        let affected: Vec<String> = state
            .jobs
            .values()
            .filter(|j| j.workers().contains(worker_id))
            .filter(|j| {
                !j.is_terminal()
                    // A job that just failed because of this loss (a peer saw
                    // the broken connection first) gets the root cause.
                    || (j.state == pb::JobState::Failed
                        && j.failed_at.is_some_and(|t| t.elapsed() < Duration::from_secs(10))
                        && !j.failure.starts_with("worker '"))
            })
            .map(|j| j.id.clone())
            .collect();
        for job_id in affected {
            if let Some(job) = state.jobs.get_mut(&job_id)
                && job.is_terminal()
            {
                job.failure = format!("{message}; first error seen: {}", job.failure);
                continue;
            }
            self.on_job_failure(&mut state, &job_id, message.clone());
        }
    }

    /// A job failed: today it ends; a restart strategy hooks in here.
    fn on_job_failure(&self, state: &mut State, job_id: &str, reason: String) {
        let lost = self.lost.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let reason = state.name_workers(&reason, &lost);
        warn!(job = job_id, %reason, "job failed");
        state.end_job(job_id, pb::JobState::Failed, Some(reason));
    }

    /// Plans a script and deploys a job for each of its INSERT / SELECT statements.
    async fn submit(&self, request: pb::SubmitJobRequest) -> Result<pb::SubmitJobResponse, Status> {
        let parallelism = match request.parallelism {
            0 => self.config.default_parallelism,
            p => p,
        };
        let origin = if request.name.is_empty() {
            "submitted script".to_string()
        } else {
            request.name.clone()
        };
        let (planned, messages) = plan_script(&request.sql, &origin, parallelism).await?;
        let mut jobs = Vec::new();
        for job in planned {
            jobs.push(self.deploy(job)?);
        }
        Ok(pb::SubmitJobResponse { jobs, messages })
    }

    fn deploy(&self, job: PlannedJob) -> Result<pb::JobSummary, Status> {
        let PlannedJob { spec, graph } = job;
        let vertices = graph.vertices();
        let slices = vertices.iter().map(|v| v.parallelism).max().unwrap_or(1);
        let mut state = self.state();
        let slice_workers = place(&state, slices, &spec.name)?;
        let job_id = new_job_id(&state);
        let mut slots: BTreeMap<String, u32> = BTreeMap::new();
        for worker in &slice_workers {
            *slots.entry(worker.clone()).or_default() += 1;
        }
        let mut subtasks = BTreeMap::new();
        let mut placement = Vec::new();
        for (v, vertex) in vertices.iter().enumerate() {
            for (s, worker_id) in slice_workers.iter().enumerate().take(vertex.parallelism) {
                let worker_id = worker_id.clone();
                placement.push(pb::SubtaskPlacement {
                    vertex: v as u32,
                    subtask: s as u32,
                    worker_id: worker_id.clone(),
                });
                subtasks.insert(
                    (v as u32, s as u32),
                    SubtaskEntry {
                        worker_id,
                        state: pb::TaskState::Scheduled,
                        message: String::new(),
                        records_in: 0,
                        records_out: 0,
                    },
                );
            }
        }
        let results = spec.query.then(|| {
            // One producer per worker hosting a subtask of the sink vertex.
            let producers = slice_workers
                .iter()
                .take(vertices.last().map_or(0, |v| v.parallelism))
                .collect::<std::collections::BTreeSet<_>>()
                .len();
            let (sender, receiver) = tokio::sync::mpsc::channel(RESULT_BUFFER);
            ResultChannel {
                sender: Some(sender),
                receiver: Some(receiver),
                producers_left: producers,
            }
        });
        let workers: Vec<pb::WorkerAddress> = state
            .workers
            .iter()
            .map(|(id, w)| pb::WorkerAddress {
                worker_id: id.clone(),
                data_address: w.data_address.clone(),
            })
            .collect();
        let deploy = pb::DeployJob {
            job_id: job_id.clone(),
            spec: Some(spec.clone()),
            workers,
            placement,
            plan_fingerprint: plan_fingerprint(&graph),
        };
        for (worker_id, n) in &slots {
            if let Some(worker) = state.workers.get_mut(worker_id) {
                let taken = (*n).min(worker.free_slots);
                worker.free_slots -= taken;
                worker.send(pb::coordinator_command::Command::Deploy(deploy.clone()));
            }
        }
        info!(job = %job_id, name = %spec.name, slices, workers = slots.len(), "job deployed");
        let entry = JobEntry {
            id: job_id.clone(),
            spec,
            state: pb::JobState::Running,
            failure: String::new(),
            failed_at: None,
            started_at_ms: now_ms(),
            ended_at_ms: 0,
            plan: graph.to_string(),
            vertex_names: (0..vertices.len()).map(|v| graph.vertex_name(v)).collect(),
            subtasks,
            slots,
            counters: BTreeMap::new(),
            results,
        };
        let summary = entry.summary();
        state.jobs.insert(job_id, entry);
        Ok(summary)
    }

    /// Applies a worker's report on one of its subtasks.
    fn task_status(&self, worker_id: &str, status: pb::TaskStatus) {
        let Some(task) = status.task else { return };
        let mut state = self.state();
        let Some(job) = state.jobs.get_mut(&task.job_id) else {
            return;
        };
        let new_state = pb::TaskState::try_from(status.state).unwrap_or_default();
        let vertex_name = job
            .vertex_names
            .get(task.vertex as usize)
            .cloned()
            .unwrap_or_default();
        if let Some(subtask) = job.subtasks.get_mut(&(task.vertex, task.subtask)) {
            if subtask.worker_id != worker_id {
                return;
            }
            subtask.state = new_state;
            subtask.message = status.message.clone();
        }
        match new_state {
            pb::TaskState::Failed if !job.is_terminal() => {
                let reason = format!(
                    "subtask {}[{}] ({vertex_name}) on worker '{worker_id}' failed: {}",
                    task.vertex, task.subtask, status.message
                );
                if is_network_failure(&status.message) {
                    // A broken connection is usually a dead peer: give the
                    // coordinator a moment to notice the loss, so the job
                    // fails with the root cause rather than a symptom.
                    drop(state);
                    let coordinator = self.clone();
                    let job_id = task.job_id.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_millis(NETWORK_FAILURE_GRACE_MS)).await;
                        let mut state = coordinator.state();
                        if state.jobs.get(&job_id).is_some_and(|j| !j.is_terminal()) {
                            coordinator.on_job_failure(&mut state, &job_id, reason);
                        }
                    });
                    return;
                }
                self.on_job_failure(&mut state, &task.job_id, reason);
            }
            pb::TaskState::Finished
                if !job.is_terminal()
                    && job
                        .subtasks
                        .values()
                        .all(|s| s.state == pb::TaskState::Finished) =>
            {
                info!(job = %task.job_id, "job finished");
                state.end_job(&task.job_id, pb::JobState::Finished, None);
            }
            _ => {}
        }
    }

    fn heartbeat(&self, worker_id: &str, session: u64, heartbeat: pb::Heartbeat) {
        let mut state = self.state();
        match state.workers.get_mut(worker_id) {
            Some(w) if w.session == session => w.last_heartbeat = Instant::now(),
            _ => return,
        }
        for counters in heartbeat.counters {
            let Some(task) = counters.task else { continue };
            if let Some(job) = state.jobs.get_mut(&task.job_id)
                && let Some(subtask) = job.subtasks.get_mut(&(task.vertex, task.subtask))
            {
                subtask.records_in = counters.records_in;
                subtask.records_out = counters.records_out;
            }
        }
        for counters in heartbeat.jobs {
            if let Some(job) = state.jobs.get_mut(&counters.job_id) {
                job.counters.insert(worker_id.to_string(), counters);
            }
        }
    }

    fn job_command(&self, job_id: &str, stop: bool) -> Result<pb::JobDetail, Status> {
        let mut state = self.state();
        let Some(job) = state.jobs.get_mut(job_id) else {
            return Err(unknown_job(&state, job_id));
        };
        if !job.is_terminal() {
            if stop {
                job.state = pb::JobState::Finishing;
                for worker_id in job.workers() {
                    if let Some(worker) = state.workers.get(&worker_id) {
                        worker.send(pb::coordinator_command::Command::Stop(pb::JobRef {
                            job_id: job_id.to_string(),
                        }));
                    }
                }
            } else {
                state.end_job(job_id, pb::JobState::Canceled, None);
            }
        }
        state
            .jobs
            .get(job_id)
            .map(JobEntry::detail)
            .ok_or_else(|| Status::internal("job vanished"))
    }
}

impl Coordinator {
    /// The cluster's state in the Prometheus text format: workers and
    /// slots, jobs by state, and every job's and subtask's row counters.
    pub fn prometheus(&self) -> String {
        use crate::cluster::metrics_endpoint::{family, label};
        let state = self.state();
        let mut out = String::new();
        let workers = || state.workers.iter();
        family(
            &mut out,
            "weir_workers",
            "gauge",
            "Registered workers.",
            [(String::new(), state.workers.len() as u64)],
        );
        family(
            &mut out,
            "weir_worker_lost_total",
            "counter",
            "Workers lost (session broken or heartbeats missed).",
            [(
                String::new(),
                self.losses.load(std::sync::atomic::Ordering::Relaxed),
            )],
        );
        family(
            &mut out,
            "weir_worker_slots",
            "gauge",
            "Slots a worker offers.",
            workers().map(|(id, w)| (format!("worker=\"{}\"", label(id)), u64::from(w.slots))),
        );
        family(
            &mut out,
            "weir_worker_free_slots",
            "gauge",
            "Slots a worker has free.",
            workers().map(|(id, w)| (format!("worker=\"{}\"", label(id)), u64::from(w.free_slots))),
        );
        let mut by_state: BTreeMap<&str, u64> = BTreeMap::new();
        for job in state.jobs.values() {
            *by_state
                .entry(super::client::state_name(job.state))
                .or_default() += 1;
        }
        family(
            &mut out,
            "weir_jobs",
            "gauge",
            "Jobs by state.",
            by_state
                .into_iter()
                .map(|(s, n)| (format!("state=\"{s}\""), n)),
        );
        let jobs: Vec<(String, pb::JobSummary)> = state
            .jobs
            .values()
            .map(|j| {
                (
                    format!("job=\"{}\",name=\"{}\"", label(&j.id), label(&j.spec.name)),
                    j.summary(),
                )
            })
            .collect();
        for (name, help, field) in [
            (
                "weir_job_records_read_total",
                "Rows read by a job's sources.",
                (|s: &pb::JobSummary| s.records_read) as fn(&pb::JobSummary) -> u64,
            ),
            (
                "weir_job_records_written_total",
                "Rows written by a job's sinks.",
                |s| s.records_written,
            ),
            (
                "weir_job_late_records_dropped_total",
                "Rows a job dropped as late.",
                |s| s.late_records_dropped,
            ),
        ] {
            family(
                &mut out,
                name,
                "counter",
                help,
                jobs.iter().map(|(l, s)| (l.clone(), field(s))),
            );
        }
        let subtasks: Vec<(String, u64, u64)> = state
            .jobs
            .values()
            .flat_map(|j| {
                j.subtasks.iter().map(move |(&(v, s), t)| {
                    (
                        format!(
                            "job=\"{}\",vertex=\"{v}\",subtask=\"{s}\",worker=\"{}\"",
                            label(&j.id),
                            label(&t.worker_id)
                        ),
                        t.records_in,
                        t.records_out,
                    )
                })
            })
            .collect();
        family(
            &mut out,
            "weir_subtask_records_in_total",
            "counter",
            "Rows into a subtask's operator chain.",
            subtasks.iter().map(|(l, i, _)| (l.clone(), *i)),
        );
        family(
            &mut out,
            "weir_subtask_records_out_total",
            "counter",
            "Rows out of a subtask's operator chain.",
            subtasks.iter().map(|(l, _, o)| (l.clone(), *o)),
        );
        out
    }
}

/// How long a subtask's network failure waits for a worker loss to explain it.
const NETWORK_FAILURE_GRACE_MS: u64 = 1_000;

/// Whether a subtask failed because a connection to a peer broke.
fn is_network_failure(message: &str) -> bool {
    let m = message.to_lowercase();
    ["network", "peer", "connection", "broken pipe", "transport"]
        .iter()
        .any(|w| m.contains(w))
}

fn new_job_id(state: &State) -> String {
    loop {
        let id = format!("{:08x}", rand::random::<u32>());
        if !state.jobs.contains_key(&id) {
            return id;
        }
    }
}

fn unknown_job(state: &State, job_id: &str) -> Status {
    let hint = weir_engine::suggest::closest(job_id, state.jobs.keys().map(String::as_str))
        .map(|c| format!("; did you mean '{c}'?"))
        .unwrap_or_default();
    Status::not_found(format!("no job '{job_id}'{hint} (`weir jobs` lists them)"))
}
