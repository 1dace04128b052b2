//! The coordinator: keeps the cluster's membership (registrations,
//! heartbeats), plans submitted SQL, places each job's slices on worker
//! slots, deploys them, and tracks every subtask until the job ends.
//!
//! A worker is lost when its session stream breaks or it misses heartbeats
//! for `heartbeat_timeout_ms`; every job with subtasks on it fails, naming
//! the worker. A job that takes checkpoints then restarts from its newest
//! completed checkpoint (see [`checkpoints`]).

mod catalog;
mod checkpoints;
mod journal;
mod metrics;
mod planning;
mod recovery;
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
use checkpoints::JobCheckpoints;
use planning::{PlannedJob, place, plan_script};
use recovery::Restart;
use state::{CommittedRows, JobEntry, JobLayout, ResultChannel, State, SubtaskEntry};

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
        let state_dir = match config.state_dir.trim() {
            "" => None,
            dir => Some(std::path::PathBuf::from(dir)),
        };
        let state = State {
            journal: state_dir.as_ref().map(|d| d.join("jobs")),
            catalog: catalog::Catalog::open(state_dir.as_deref()),
            ..State::default()
        };
        Self {
            config,
            state: Arc::new(Mutex::new(state)),
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
        self.resume_jobs().await;
        let monitor = self.clone();
        let monitor = tokio::spawn(async move {
            tokio::join!(monitor.watch_heartbeats(), monitor.drive_checkpoints());
        });
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

    /// Resumes the jobs a previous coordinator recorded and did not see end:
    /// each restarts from its newest completed checkpoint once workers
    /// offer enough slots.
    async fn resume_jobs(&self) {
        let Some(dir) = self.state().journal.clone() else {
            return;
        };
        for record in journal::unfinished(&dir) {
            let planned = match plan_script(&record.sql, &record.name, record.parallelism, &[])
                .await
            {
                Ok(mut script) if script.jobs.len() == 1 => script.jobs.remove(0),
                Ok(_) => {
                    warn!(job = %record.job_id, "a recorded job no longer plans to one job; not resumed");
                    continue;
                }
                Err(e) => {
                    warn!(job = %record.job_id, error = %e.message(), "a recorded job no longer plans; not resumed");
                    continue;
                }
            };
            let mut entry = match self.job_entry(&record.job_id, planned) {
                Ok(entry) => entry,
                Err(e) => {
                    warn!(job = %record.job_id, error = %e.message(), "cannot resume a recorded job");
                    continue;
                }
            };
            entry.attempt = record.attempt;
            entry.started_at_ms = record.started_at_ms;
            entry.restarting = true;
            info!(job = %record.job_id, name = %record.name, "resuming a job after a coordinator restart");
            self.state().jobs.insert(record.job_id.clone(), entry);
            let coordinator = self.clone();
            tokio::spawn(async move {
                coordinator
                    .restart(
                        record.job_id,
                        "the coordinator restarted".into(),
                        Duration::ZERO,
                    )
                    .await;
            });
        }
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
                let reason = format!("no heartbeat for {:.1}s", timeout.as_secs_f64());
                self.worker_gone(&id, session, WorkerGone::Lost(&reason));
            }
        }
    }

    /// Removes a worker and fails every job that ran on it. A worker that
    /// left on purpose is not counted as lost.
    fn worker_gone(&self, worker_id: &str, session: u64, gone: WorkerGone<'_>) {
        let mut state = self.state();
        let Some(worker) = state.workers.get(worker_id) else {
            return;
        };
        if worker.session != session {
            return;
        }
        let address = worker.data_address.clone();
        state.workers.remove(worker_id);
        let message = match gone {
            WorkerGone::Lost(reason) => {
                self.losses
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                warn!(worker = worker_id, %address, reason, "worker lost");
                format!("worker '{worker_id}' ({address}) lost: {reason}")
            }
            WorkerGone::Left => {
                info!(worker = worker_id, %address, "worker left");
                format!("worker '{worker_id}' ({address}) shut down")
            }
        };
        self.lost
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(worker_id.to_string(), address.clone());
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
                        && !j.failure_names_lost_worker)
            })
            .map(|j| j.id.clone())
            .collect();
        for job_id in affected {
            if let Some(job) = state.jobs.get_mut(&job_id)
                && job.is_terminal()
            {
                job.failure = format!("{message}; first error seen: {}", job.failure);
                job.failure_names_lost_worker = true;
                continue;
            }
            self.on_job_failure(&mut state, &job_id, message.clone(), Restart::Allowed);
            if let Some(job) = state.jobs.get_mut(&job_id)
                && job.is_terminal()
            {
                job.failure_names_lost_worker = true;
            }
        }
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
        let catalog = self.state().catalog.tables().to_vec();
        let planned = plan_script(&request.sql, &origin, parallelism, &catalog).await?;
        // All of the script's jobs start, or none does.
        let needed: usize = planned.jobs.iter().map(|j| slices(&j.graph)).sum();
        let free: usize = self
            .state()
            .workers
            .values()
            .map(|w| w.free_slots as usize)
            .sum();
        if needed > free {
            return Err(Status::resource_exhausted(format!(
                "not enough free slots for {origin}: its {} job(s) need {needed} (one per \
                 parallel slice), the cluster has {free} free; no job was started. Start more \
                 workers, give them more --slots, or lower the parallelism",
                planned.jobs.len()
            )));
        }
        let mut jobs = Vec::new();
        for job in planned.jobs {
            jobs.push(self.deploy(job)?);
        }
        Ok(pb::SubmitJobResponse {
            jobs,
            messages: planned.messages,
            results: planned.results,
        })
    }

    /// A job's entry before its first deployment: its layout, checkpointing
    /// and result channel.
    fn job_entry(&self, job_id: &str, job: PlannedJob) -> Result<JobEntry, Status> {
        let PlannedJob {
            spec,
            graph,
            settings,
        } = job;
        let vertices = graph.vertices();
        let layout = JobLayout {
            parallelism: vertices.iter().map(|v| v.parallelism).collect(),
            sources: vertices
                .iter()
                .enumerate()
                .filter(|(_, v)| {
                    v.nodes.first().is_some_and(|&n| {
                        matches!(
                            graph.logical().node(n).kind,
                            weir_engine::graph::NodeKind::Source(_)
                        )
                    })
                })
                .flat_map(|(i, v)| (0..v.parallelism).map(move |s| (i as u32, s as u32)))
                .collect(),
            fingerprint: plan_fingerprint(&graph),
            max_key_groups: graph.max_key_groups(),
            node_parallelism: node_parallelism(&graph),
        };
        // A SELECT's rows go straight to the client: it cannot be replayed.
        let checkpoints = if spec.query {
            None
        } else {
            JobCheckpoints::from_settings(&settings, &self.config, job_id)?
        };
        Ok(JobEntry {
            id: job_id.to_string(),
            spec,
            state: pb::JobState::Running,
            failure: String::new(),
            failed_at: None,
            failure_names_lost_worker: false,
            started_at_ms: now_ms(),
            ended_at_ms: 0,
            plan: graph.to_string(),
            vertex_names: (0..vertices.len()).map(|v| graph.vertex_name(v)).collect(),
            subtasks: BTreeMap::new(),
            slots: BTreeMap::new(),
            counters: BTreeMap::new(),
            committed_before: CommittedRows::default(),
            results: None,
            layout,
            attempt: 0,
            checkpoints,
            restarts: Vec::new(),
            restarting: false,
            settings,
        })
    }

    fn deploy(&self, job: PlannedJob) -> Result<pb::JobSummary, Status> {
        let slices = slices(&job.graph);
        let sink_parallelism = job.graph.output_vertex().map_or(0, |v| v.parallelism);
        let job_id = new_job_id(&self.state());
        let mut entry = self.job_entry(&job_id, job)?;
        let mut state = self.state();
        let slice_workers = place(&state, slices, &entry.spec.name)?;
        entry.results = entry.spec.query.then(|| {
            // One producer per worker hosting a subtask of the sink vertex.
            let producers = slice_workers
                .iter()
                .take(sink_parallelism)
                .collect::<std::collections::BTreeSet<_>>()
                .len();
            let (sender, receiver) = tokio::sync::mpsc::channel(RESULT_BUFFER);
            ResultChannel {
                sender: Some(sender),
                receiver: Some(receiver),
                producers_left: producers,
            }
        });
        let (spec, layout) = (entry.spec.clone(), entry.layout.clone());
        let checkpoints = &entry.checkpoints;
        let (subtasks, slots) = send_deployment(
            &mut state,
            &job_id,
            &spec,
            &layout,
            &slice_workers,
            Deployed {
                attempt: 0,
                checkpoint_url: checkpoints
                    .as_ref()
                    .map(|c| c.url.clone())
                    .unwrap_or_default(),
                restore_checkpoint: 0,
            },
        );
        info!(job = %job_id, name = %spec.name, slices, workers = slots.len(), "job deployed");
        entry.subtasks = subtasks;
        entry.slots = slots;
        let summary = entry.summary();
        state.jobs.insert(job_id.clone(), entry);
        state.record(&job_id);
        Ok(summary)
    }

    /// Applies a worker's report on one of its subtasks.
    fn task_status(&self, worker_id: &str, status: pb::TaskStatus) {
        let Some(task) = status.task else { return };
        let mut state = self.state();
        let Some(job) = state.jobs.get_mut(&task.job_id) else {
            return;
        };
        if status.attempt != job.attempt || job.restarting {
            // A report from an attempt that was replaced.
            return;
        }
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
        let failure = status.failure.unwrap_or_default();
        if new_state == pb::TaskState::Failed
            && failure.corrupt_checkpoint != 0
            && let Some(checkpoints) = &mut job.checkpoints
        {
            // The restore found bad data: the next restart skips it.
            checkpoints.corrupt.insert(failure.corrupt_checkpoint);
        }
        match new_state {
            pb::TaskState::Failed if !job.is_terminal() => {
                let reason = format!(
                    "subtask {}[{}] ({vertex_name}) on worker '{worker_id}' failed: {}",
                    task.vertex, task.subtask, status.message
                );
                // Bad input or configuration fails the same way again.
                let restart = if failure.domain() == pb::FailureDomain::User {
                    Restart::Pointless
                } else {
                    Restart::Allowed
                };
                if failure.network {
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
                            coordinator.on_job_failure(&mut state, &job_id, reason, restart);
                        }
                    });
                    return;
                }
                self.on_job_failure(&mut state, &task.job_id, reason, restart);
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
            if let Some(job) = state.jobs.get_mut(&counters.job_id)
                && job.attempt == counters.attempt
                && !job.restarting
            {
                job.counters.insert(worker_id.to_string(), counters);
            }
        }
    }

    /// An operator asked its job to stop (a `LIMIT` reached): the job stops
    /// as `weir stop` stops it, with a final checkpoint when it takes them.
    fn stop_requested(&self, request: pb::StopRequested) {
        {
            let state = self.state();
            match state.jobs.get(&request.job_id) {
                Some(job)
                    if job.attempt == request.attempt
                        && !job.restarting
                        && job.state == pb::JobState::Running => {}
                _ => return,
            }
        }
        info!(job = %request.job_id, reason = %request.reason, "stopping the job at an operator's request");
        if let Err(e) = self.job_command(&request.job_id, true) {
            warn!(job = %request.job_id, error = %e.message(), "cannot stop the job");
        }
    }

    fn job_command(&self, job_id: &str, stop: bool) -> Result<pb::JobDetail, Status> {
        let mut state = self.state();
        let Some(job) = state.jobs.get_mut(job_id) else {
            return Err(unknown_job(&state, job_id));
        };
        if !job.is_terminal() {
            if stop && let Some(checkpoints) = &mut job.checkpoints {
                // Stop with a final checkpoint: its barrier ends the sources.
                job.state = pb::JobState::Finishing;
                checkpoints.stopping = true;
            } else if stop {
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

/// The parallelism of every logical node (operator) of a graph, by node id.
pub(in crate::cluster) fn node_parallelism(graph: &weir_engine::PhysicalGraph) -> Vec<u32> {
    let mut out = vec![0; graph.logical().nodes().len()];
    for vertex in graph.vertices() {
        for &node in &vertex.nodes {
            if let Some(p) = out.get_mut(node) {
                *p = vertex.parallelism as u32;
            }
        }
    }
    out
}

/// Attempt and checkpoint settings of one deployment.
struct Deployed {
    attempt: u32,
    checkpoint_url: String,
    restore_checkpoint: u64,
}

/// Places the job's slices on `slice_workers`, takes their slots and sends
/// each worker the deployment. Returns the subtasks and slots taken.
fn send_deployment(
    state: &mut State,
    job_id: &str,
    spec: &pb::JobSpec,
    layout: &JobLayout,
    slice_workers: &[String],
    deployed: Deployed,
) -> (BTreeMap<(u32, u32), SubtaskEntry>, BTreeMap<String, u32>) {
    let mut slots: BTreeMap<String, u32> = BTreeMap::new();
    for worker in slice_workers {
        *slots.entry(worker.clone()).or_default() += 1;
    }
    let mut subtasks = BTreeMap::new();
    let mut placement = Vec::new();
    for (v, &parallelism) in layout.parallelism.iter().enumerate() {
        for (s, worker_id) in slice_workers.iter().enumerate().take(parallelism) {
            placement.push(pb::SubtaskPlacement {
                vertex: v as u32,
                subtask: s as u32,
                worker_id: worker_id.clone(),
            });
            subtasks.insert(
                (v as u32, s as u32),
                SubtaskEntry {
                    worker_id: worker_id.clone(),
                    state: pb::TaskState::Scheduled,
                    message: String::new(),
                    records_in: 0,
                    records_out: 0,
                },
            );
        }
    }
    let workers: Vec<pb::WorkerAddress> = state
        .workers
        .iter()
        .map(|(id, w)| pb::WorkerAddress {
            worker_id: id.clone(),
            data_address: w.data_address.clone(),
        })
        .collect();
    let deploy = pb::DeployJob {
        job_id: job_id.to_string(),
        spec: Some(spec.clone()),
        workers,
        placement,
        plan_fingerprint: layout.fingerprint.clone(),
        attempt: deployed.attempt,
        checkpoint_url: deployed.checkpoint_url,
        restore_checkpoint: deployed.restore_checkpoint,
    };
    for (worker_id, n) in &slots {
        if let Some(worker) = state.workers.get_mut(worker_id) {
            let taken = (*n).min(worker.free_slots);
            worker.free_slots -= taken;
            worker.send(pb::coordinator_command::Command::Deploy(deploy.clone()));
        }
    }
    (subtasks, slots)
}

/// How long a subtask's network failure waits for a worker loss to explain it.
const NETWORK_FAILURE_GRACE_MS: u64 = 1_000;

/// How a worker went away.
pub(super) enum WorkerGone<'a> {
    /// Its session broke or its heartbeats stopped, for this reason.
    Lost(&'a str),
    /// It said it was shutting down.
    Left,
}

/// The slots a job takes: one per parallel slice.
fn slices(graph: &weir_engine::PhysicalGraph) -> usize {
    graph
        .vertices()
        .iter()
        .map(|v| v.parallelism)
        .max()
        .unwrap_or(1)
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
