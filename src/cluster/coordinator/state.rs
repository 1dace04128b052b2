//! What the coordinator knows: the workers, the jobs, their subtasks.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use tokio::sync::mpsc;
use tonic::Status;
use weir_proto as pb;

/// Sends commands down one worker's session.
pub(super) type CommandSender = mpsc::UnboundedSender<Result<pb::CoordinatorCommand, Status>>;

pub(super) struct WorkerEntry {
    pub data_address: String,
    pub slots: u32,
    pub free_slots: u32,
    pub last_heartbeat: Instant,
    /// Distinguishes this registration from an earlier one under the same id.
    pub session: u64,
    pub commands: CommandSender,
}

impl WorkerEntry {
    pub fn send(&self, command: pb::coordinator_command::Command) {
        let _ = self.commands.send(Ok(pb::CoordinatorCommand {
            command: Some(command),
        }));
    }
}

pub(super) struct SubtaskEntry {
    pub worker_id: String,
    pub state: pb::TaskState,
    pub message: String,
    pub records_in: u64,
    pub records_out: u64,
}

/// Where a query job's result batches go until the client fetches them.
pub(super) struct ResultChannel {
    pub sender: Option<mpsc::Sender<pb::ResultBatch>>,
    pub receiver: Option<mpsc::Receiver<pb::ResultBatch>>,
    /// Workers that still have to finish pushing results.
    pub producers_left: usize,
}

pub(super) struct JobEntry {
    pub id: String,
    pub spec: pb::JobSpec,
    pub state: pb::JobState,
    pub failure: String,
    pub failed_at: Option<Instant>,
    /// The failure already names a lost worker as its cause.
    pub failure_names_lost_worker: bool,
    pub started_at_ms: i64,
    pub ended_at_ms: i64,
    pub plan: String,
    pub vertex_names: Vec<String>,
    /// By (vertex, subtask).
    pub subtasks: BTreeMap<(u32, u32), SubtaskEntry>,
    /// Slots taken on each worker.
    pub slots: BTreeMap<String, u32>,
    /// Per worker: rows read, written, dropped late, in the current attempt.
    pub counters: BTreeMap<String, pb::JobCounters>,
    /// Rows read and written before the current attempt: as of the
    /// checkpoint it restored (what earlier attempts committed).
    pub committed_before: CommittedRows,
    pub results: Option<ResultChannel>,
    /// What a restart needs to deploy the job again.
    pub layout: JobLayout,
    /// The current attempt: 0, then one more per restart.
    pub attempt: u32,
    /// Checkpointing and restarts; `None` when the job takes no checkpoints.
    pub checkpoints: Option<super::checkpoints::JobCheckpoints>,
    /// Every restart so far.
    pub restarts: Vec<pb::RestartRecord>,
    /// A restart is scheduled (the job is between attempts).
    pub restarting: bool,
    /// The session's `SET` values the job was planned with.
    pub settings: BTreeMap<String, String>,
}

/// Rows a job's sources read and its sinks wrote up to a checkpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct CommittedRows {
    pub read: u64,
    pub written: u64,
}

/// The shape of a job's graph, as placement and restarts need it.
#[derive(Debug, Clone)]
pub(super) struct JobLayout {
    /// Parallelism of every vertex.
    pub parallelism: Vec<usize>,
    /// The subtasks that run a source, `(vertex, subtask)`.
    pub sources: BTreeSet<(u32, u32)>,
    pub fingerprint: String,
    pub max_key_groups: u32,
    /// Parallelism of every logical node (operator), by node id.
    pub node_parallelism: Vec<u32>,
}

impl JobEntry {
    pub fn is_terminal(&self) -> bool {
        matches!(
            self.state,
            pb::JobState::Finished | pb::JobState::Failed | pb::JobState::Canceled
        )
    }

    pub fn workers(&self) -> BTreeSet<String> {
        self.slots.keys().cloned().collect()
    }

    pub fn summary(&self) -> pb::JobSummary {
        let sum = |f: fn(&pb::JobCounters) -> u64| self.counters.values().map(f).sum();
        pb::JobSummary {
            job_id: self.id.clone(),
            name: self.spec.name.clone(),
            state: self.state as i32,
            query: self.spec.query,
            parallelism: self.spec.parallelism,
            started_at_ms: self.started_at_ms,
            ended_at_ms: self.ended_at_ms,
            failure: self.failure.clone(),
            records_read: self.committed_before.read + sum(|c| c.records_read),
            records_written: self.committed_before.written + sum(|c| c.records_written),
            late_records_dropped: sum(|c| c.late_records_dropped),
            bad_records: sum(|c| c.bad_records),
            unmatched_deletes: sum(|c| c.unmatched_deletes),
            state_spilled_bytes: sum(|c| c.state_spilled_bytes),
            restarts: self.restarts.len() as u32,
            last_checkpoint: self
                .checkpoints
                .as_ref()
                .and_then(|c| c.latest)
                .unwrap_or(0),
        }
    }

    pub fn detail(&self) -> pb::JobDetail {
        pb::JobDetail {
            summary: Some(self.summary()),
            plan: self.plan.clone(),
            sql: self.spec.sql.clone(),
            subtasks: self
                .subtasks
                .iter()
                .map(|(&(vertex, subtask), s)| pb::SubtaskDetail {
                    task: Some(pb::TaskId {
                        job_id: self.id.clone(),
                        vertex,
                        subtask,
                    }),
                    vertex_name: self
                        .vertex_names
                        .get(vertex as usize)
                        .cloned()
                        .unwrap_or_default(),
                    worker_id: s.worker_id.clone(),
                    state: s.state as i32,
                    message: s.message.clone(),
                    records_in: s.records_in,
                    records_out: s.records_out,
                })
                .collect(),
            restarts: self.restarts.clone(),
            checkpoints: self
                .checkpoints
                .as_ref()
                .map(|c| c.history.iter().cloned().collect())
                .unwrap_or_default(),
        }
    }
}

#[derive(Default)]
pub(super) struct State {
    pub workers: BTreeMap<String, WorkerEntry>,
    pub jobs: BTreeMap<String, JobEntry>,
    pub next_session: u64,
    /// Where job definitions are recorded (see [`super::journal`]).
    pub journal: Option<std::path::PathBuf>,
    /// The shared catalog of tables (see [`super::catalog`]).
    pub catalog: super::catalog::Catalog,
}

impl State {
    /// Records a job's definition and progress, when a journal is kept.
    pub fn record(&self, job_id: &str) {
        let (Some(dir), Some(job)) = (&self.journal, self.jobs.get(job_id)) else {
            return;
        };
        let ended = if job.is_terminal() {
            super::super::client::state_name(job.state).to_string()
        } else {
            String::new()
        };
        super::journal::write(
            dir,
            &super::journal::JobRecord {
                job_id: job.id.clone(),
                name: job.spec.name.clone(),
                sql: job.spec.sql.clone(),
                parallelism: job.spec.parallelism,
                settings: job.settings.clone(),
                attempt: job.attempt,
                started_at_ms: job.started_at_ms,
                ended,
            },
        );
    }

    /// `worker 'w1' (127.0.0.2:4000)` for every worker data address in `text`.
    pub fn name_workers(&self, text: &str, lost: &BTreeMap<String, String>) -> String {
        let mut out = text.to_string();
        let known = self
            .workers
            .iter()
            .map(|(id, w)| (id.as_str(), w.data_address.as_str()))
            .chain(lost.iter().map(|(id, a)| (id.as_str(), a.as_str())));
        for (id, address) in known {
            if !address.is_empty() && out.contains(address) && !out.contains(&format!("'{id}'")) {
                out = out.replace(address, &format!("worker '{id}' ({address})"));
            }
        }
        out
    }

    /// Ends a job: frees its slots, tells its workers to cancel what still
    /// runs (unless it finished), and closes its result channel.
    pub fn end_job(&mut self, job_id: &str, state: pb::JobState, failure: Option<String>) {
        let Some(job) = self.jobs.get_mut(job_id) else {
            return;
        };
        if job.is_terminal() {
            return;
        }
        job.state = state;
        job.restarting = false;
        if let Some(checkpoints) = &mut job.checkpoints {
            checkpoints.pending = None;
        }
        job.ended_at_ms = super::super::now_ms();
        if let Some(failure) = failure {
            job.failure = failure;
            job.failed_at = Some(Instant::now());
            job.failure_names_lost_worker = false;
        }
        if let Some(results) = &mut job.results {
            results.sender = None;
        }
        let slots = std::mem::take(&mut job.slots);
        for (worker_id, n) in &slots {
            if let Some(worker) = self.workers.get_mut(worker_id) {
                worker.free_slots = (worker.free_slots + n).min(worker.slots);
                if state != pb::JobState::Finished {
                    worker.send(pb::coordinator_command::Command::Cancel(pb::JobRef {
                        job_id: job_id.to_string(),
                    }));
                }
            }
        }
        // Keep the placement for `weir job` (slots hold only counts).
        if let Some(job) = self.jobs.get_mut(job_id) {
            job.slots = slots.keys().map(|k| (k.clone(), 0)).collect();
        }
        self.record(job_id);
    }
}
