//! The coordinator's side of checkpointing, as in Flink's checkpoint
//! coordinator: it triggers a checkpoint of every running job each
//! interval by sending `TriggerCheckpoint` to the job's workers (the
//! sources inject the barrier), collects one acknowledgement per worker
//! (its uploaded snapshot), writes the checkpoint's manifest last, and
//! then tells the workers the checkpoint completed, so sinks commit.
//!
//! When every source has run out of input (or the user stops the job) the
//! next checkpoint is the *final* one: its barrier ends the sources, and
//! the job finishes once it completed and every task closed.
//!
//! A failed job restarts (see [`Coordinator::on_job_failure`]) from the
//! newest completed checkpoint, up to `restart-strategy.fixed-delay.attempts`
//! times, `restart-strategy.fixed-delay.delay` apart.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use tonic::Status;
use tracing::{info, warn};
use weir_engine::state::{CheckpointManifest, CheckpointStorage, WorkerSnapshot};
use weir_proto as pb;

use super::Coordinator;
use super::state::{CommittedRows, JobEntry};
use crate::cluster::config::CoordinatorConfig;
use crate::cluster::now_ms;

/// How many checkpoints `weir job` lists.
const HISTORY: usize = 10;
/// A checkpoint not complete after this long is abandoned.
const CHECKPOINT_TIMEOUT: Duration = Duration::from_secs(600);

/// One job's checkpointing and restart settings and progress.
pub(in crate::cluster) struct JobCheckpoints {
    pub storage: CheckpointStorage,
    pub url: String,
    pub interval: Duration,
    pub retained: usize,
    pub restart_attempts: u32,
    pub restart_delay: Duration,
    /// Exponential back-off: each restart waits `multiplier` times longer
    /// than the last, up to the maximum.
    pub backoff: Option<(f64, Duration)>,
    pub next_id: u64,
    pub last_trigger: Instant,
    pub pending: Option<PendingCheckpoint>,
    /// The newest completed checkpoint.
    pub latest: Option<u64>,
    /// Source subtasks of the current attempt that ran out of input.
    pub exhausted: BTreeSet<(u32, u32)>,
    /// The user asked the job to stop: the next checkpoint is the final one.
    pub stopping: bool,
    pub history: VecDeque<pb::CheckpointRecord>,
    pub completed_total: u64,
    pub failed_total: u64,
    /// The final checkpoint of the current attempt completed: no more.
    pub finished: bool,
    /// Checkpoints a restore found corrupt or incomplete: never restored again.
    pub corrupt: BTreeSet<u64>,
}

/// A checkpoint in flight.
pub(in crate::cluster) struct PendingCheckpoint {
    pub id: u64,
    pub attempt: u32,
    pub is_final: bool,
    pub triggered: Instant,
    pub triggered_ms: i64,
    /// Workers that must acknowledge.
    pub expected: BTreeSet<String>,
    pub acks: BTreeMap<String, WorkerSnapshot>,
    /// Per worker: rows read and written at the barrier, in this attempt.
    pub rows: BTreeMap<String, CommittedRows>,
    /// The manifest is being written.
    pub committing: bool,
}

/// Flink's duration syntax: `10s`, `500 ms`, `1min`, `2 h`; a bare number is milliseconds.
pub(super) fn parse_duration(text: &str) -> Option<Duration> {
    weir_engine::time::parse_duration_ms("", text)
        .ok()
        .and_then(|ms| u64::try_from(ms).ok())
        .map(Duration::from_millis)
}

impl JobCheckpoints {
    /// The job's checkpointing from its `SET` statements over the
    /// coordinator's defaults; `None` when the interval is 0.
    pub fn from_settings(
        settings: &BTreeMap<String, String>,
        config: &CoordinatorConfig,
        job_id: &str,
    ) -> Result<Option<Self>, Status> {
        let duration = |key: &str, default_ms: u64| -> Result<Duration, Status> {
            match settings.get(key) {
                None => Ok(Duration::from_millis(default_ms)),
                Some(v) => parse_duration(v).ok_or_else(|| {
                    Status::invalid_argument(format!(
                        "'{key}' = '{v}' is not a duration (e.g. '10s', '500ms', '1min')"
                    ))
                }),
            }
        };
        let number = |key: &str, default: u32| -> Result<u32, Status> {
            match settings.get(key) {
                None => Ok(default),
                Some(v) => v.trim().parse().map_err(|_| {
                    Status::invalid_argument(format!("'{key}' = '{v}' is not a whole number"))
                }),
            }
        };
        let interval = duration(
            "execution.checkpointing.interval",
            config.checkpoint_interval_ms,
        )?;
        if interval.is_zero() {
            return Ok(None);
        }
        let url = match settings.get("execution.checkpointing.dir") {
            Some(dir) if dir.contains("://") => dir.clone(),
            Some(dir) => format!("file://{dir}"),
            None => config.checkpoint_url(),
        };
        let storage = CheckpointStorage::open(&url, job_id)
            .map_err(|e| Status::invalid_argument(format!("checkpoint storage: {e}")))?;
        let (attempts, delay, backoff) =
            match settings.get("restart-strategy.type").map(String::as_str) {
                Some("none" | "disable" | "off") => (0, Duration::ZERO, None),
                Some("fixed-delay" | "fixeddelay") | None => (
                    number(
                        "restart-strategy.fixed-delay.attempts",
                        config.restart_attempts,
                    )?,
                    duration(
                        "restart-strategy.fixed-delay.delay",
                        config.restart_delay_ms,
                    )?,
                    None,
                ),
                Some("exponential-delay" | "exponentialdelay") => {
                    let key = "restart-strategy.exponential-delay.backoff-multiplier";
                    let multiplier = match settings.get(key) {
                        None => 2.0,
                        Some(v) => v
                            .trim()
                            .parse::<f64>()
                            .ok()
                            .filter(|m| *m >= 1.0)
                            .ok_or_else(|| {
                                Status::invalid_argument(format!(
                                    "'{key}' = '{v}' must be a number of at least 1"
                                ))
                            })?,
                    };
                    (
                        number(
                            "restart-strategy.exponential-delay.attempts-before-reset-backoff",
                            config.restart_attempts,
                        )?,
                        duration(
                            "restart-strategy.exponential-delay.initial-backoff",
                            config.restart_delay_ms,
                        )?,
                        Some((
                            multiplier,
                            duration("restart-strategy.exponential-delay.max-backoff", 60_000)?,
                        )),
                    )
                }
                Some(other) => {
                    return Err(Status::invalid_argument(format!(
                        "'restart-strategy.type' = '{other}' is not supported; use \
                         'fixed-delay', 'exponential-delay' or 'none'"
                    )));
                }
            };
        Ok(Some(Self {
            storage,
            url,
            interval,
            retained: number(
                "execution.checkpointing.num-retained",
                config.checkpoints_retained,
            )?
            .max(1) as usize,
            restart_attempts: attempts,
            restart_delay: delay,
            backoff,
            next_id: 1,
            last_trigger: Instant::now(),
            pending: None,
            latest: None,
            exhausted: BTreeSet::new(),
            stopping: false,
            history: VecDeque::new(),
            completed_total: 0,
            failed_total: 0,
            finished: false,
            corrupt: BTreeSet::new(),
        }))
    }

    /// How long to wait before restart number `restarts + 1`.
    pub fn delay_before(&self, restarts: u32) -> Duration {
        match self.backoff {
            None => self.restart_delay,
            Some((multiplier, max)) => {
                let factor = multiplier.powi(restarts.min(64) as i32);
                self.restart_delay.mul_f64(factor.min(1e9)).min(max)
            }
        }
    }

    fn record(&mut self, record: pb::CheckpointRecord) {
        if record.status == "COMPLETED" {
            self.completed_total += 1;
        } else {
            self.failed_total += 1;
        }
        self.history.push_back(record);
        while self.history.len() > HISTORY {
            self.history.pop_front();
        }
    }

    /// Abandons the pending checkpoint, recording why.
    pub fn fail_pending(&mut self, reason: &str) {
        if let Some(p) = self.pending.take() {
            warn!(checkpoint = p.id, reason, "checkpoint failed");
            self.record(pb::CheckpointRecord {
                checkpoint_id: p.id,
                status: "FAILED".into(),
                triggered_at_ms: p.triggered_ms,
                duration_ms: p.triggered.elapsed().as_millis() as u64,
                state_bytes: 0,
                uploaded_bytes: 0,
                failure: reason.to_string(),
            });
        }
    }
}

impl Coordinator {
    /// Triggers due checkpoints and abandons timed-out ones, forever.
    pub(super) async fn drive_checkpoints(&self) {
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tick.tick().await;
            let mut state = self.state();
            let ids: Vec<String> = state.jobs.keys().cloned().collect();
            for job_id in ids {
                let Some(job) = state.jobs.get_mut(&job_id) else {
                    continue;
                };
                let Some(trigger) = due_checkpoint(job) else {
                    continue;
                };
                for worker_id in job.workers() {
                    if let Some(worker) = state.workers.get(&worker_id) {
                        worker.send(pb::coordinator_command::Command::TriggerCheckpoint(
                            trigger.clone(),
                        ));
                    }
                }
            }
        }
    }

    /// A worker stored its part of a checkpoint.
    pub(super) fn checkpoint_ack(&self, worker_id: &str, ack: pb::CheckpointAck) {
        let mut state = self.state();
        let Some(job) = state.jobs.get_mut(&ack.job_id) else {
            return;
        };
        let attempt = job.attempt;
        let Some(checkpoints) = &mut job.checkpoints else {
            return;
        };
        let Some(pending) = &mut checkpoints.pending else {
            return;
        };
        if pending.id != ack.checkpoint_id
            || pending.attempt != ack.attempt
            || attempt != ack.attempt
        {
            return;
        }
        let snapshot: WorkerSnapshot = match serde_json::from_str(&ack.snapshot_json) {
            Ok(s) => s,
            Err(e) => {
                checkpoints.fail_pending(&format!(
                    "worker '{worker_id}' sent an unreadable snapshot: {e}"
                ));
                return;
            }
        };
        pending.acks.insert(worker_id.to_string(), snapshot);
        pending.rows.insert(
            worker_id.to_string(),
            CommittedRows {
                read: ack.records_read,
                written: ack.records_written,
            },
        );
        if pending.committing
            || !pending
                .expected
                .iter()
                .all(|w| pending.acks.contains_key(w))
        {
            return;
        }
        pending.committing = true;
        let manifest = CheckpointManifest {
            job_id: job.id.clone(),
            checkpoint_id: pending.id,
            timestamp_ms: pending.triggered_ms,
            attempt,
            max_key_groups: job.layout.max_key_groups,
            node_parallelism: job.layout.node_parallelism.clone(),
            workers: pending.acks.values().cloned().collect(),
            records_read: job.committed_before.read
                + pending.rows.values().map(|r| r.read).sum::<u64>(),
            records_written: job.committed_before.written
                + pending.rows.values().map(|r| r.written).sum::<u64>(),
            extra: serde_json::json!({ "final": pending.is_final }),
        };
        let storage = checkpoints.storage.clone();
        let retained = checkpoints.retained;
        let coordinator = self.clone();
        tokio::spawn(async move {
            let result = storage.commit(&manifest).await;
            coordinator.checkpoint_committed(&manifest, result.map_err(|e| e.to_string()));
            if let Err(e) = storage.retain(retained).await {
                warn!(job = %manifest.job_id, error = %e, "could not delete old checkpoints");
            }
        });
    }

    /// The manifest of a checkpoint was written (or not).
    fn checkpoint_committed(&self, manifest: &CheckpointManifest, result: Result<(), String>) {
        let mut state = self.state();
        let Some(job) = state.jobs.get_mut(&manifest.job_id) else {
            return;
        };
        let attempt = job.attempt;
        let Some(checkpoints) = &mut job.checkpoints else {
            return;
        };
        if let Err(reason) = result {
            checkpoints.fail_pending(&format!("writing the manifest failed: {reason}"));
            let is_final = manifest.extra.get("final") == Some(&serde_json::Value::Bool(true));
            if is_final {
                let reason = format!("the final checkpoint failed: {reason}");
                let job_id = manifest.job_id.clone();
                self.on_job_failure(&mut state, &job_id, reason, super::Restart::Allowed);
            }
            return;
        }
        // Recorded as complete even if the attempt changed meanwhile: the
        // manifest exists, so a restore may use it.
        checkpoints.latest = Some(
            checkpoints
                .latest
                .map_or(manifest.checkpoint_id, |l| l.max(manifest.checkpoint_id)),
        );
        let Some(pending) = checkpoints
            .pending
            .take_if(|p| p.id == manifest.checkpoint_id)
        else {
            return;
        };
        let state_bytes: u64 = manifest.workers.iter().map(|w| w.total_bytes).sum();
        let uploaded_bytes: u64 = manifest.workers.iter().map(|w| w.uploaded_bytes).sum();
        let duration_ms = pending.triggered.elapsed().as_millis() as u64;
        info!(
            job = %manifest.job_id,
            checkpoint = manifest.checkpoint_id,
            duration_ms,
            state_bytes,
            uploaded_bytes,
            "checkpoint completed"
        );
        checkpoints.record(pb::CheckpointRecord {
            checkpoint_id: manifest.checkpoint_id,
            status: "COMPLETED".into(),
            triggered_at_ms: pending.triggered_ms,
            duration_ms,
            state_bytes,
            uploaded_bytes,
            failure: String::new(),
        });
        fail::fail_point!("coordinator::before-notify", |_| {
            warn!("failpoint: aborting the coordinator");
            std::process::abort();
        });
        if pending.attempt != attempt {
            return;
        }
        checkpoints.finished |= pending.is_final;
        let complete = pb::CheckpointComplete {
            job_id: manifest.job_id.clone(),
            attempt,
            checkpoint_id: manifest.checkpoint_id,
        };
        for worker_id in job.workers() {
            if let Some(worker) = state.workers.get(&worker_id) {
                worker.send(pb::coordinator_command::Command::CheckpointComplete(
                    complete.clone(),
                ));
            }
        }
    }

    /// A worker could not store its part of a checkpoint.
    pub(super) fn checkpoint_declined(&self, worker_id: &str, declined: pb::CheckpointDeclined) {
        let mut state = self.state();
        let Some(job) = state.jobs.get_mut(&declined.job_id) else {
            return;
        };
        if job.attempt != declined.attempt {
            return;
        }
        let Some(checkpoints) = &mut job.checkpoints else {
            return;
        };
        let Some(pending) = &checkpoints.pending else {
            return;
        };
        if pending.id != declined.checkpoint_id {
            return;
        }
        let is_final = pending.is_final;
        let reason = format!(
            "worker '{worker_id}' declined checkpoint {}: {}",
            declined.checkpoint_id, declined.reason
        );
        checkpoints.fail_pending(&reason);
        if is_final {
            // The sources ended after the final barrier: only a restart
            // can finish the job now.
            let job_id = declined.job_id.clone();
            self.on_job_failure(&mut state, &job_id, reason, super::Restart::Allowed);
        }
    }

    /// A source subtask ran out of input.
    pub(super) fn source_exhausted(&self, exhausted: pb::SourceExhausted) {
        let mut state = self.state();
        if let Some(job) = state.jobs.get_mut(&exhausted.job_id)
            && job.attempt == exhausted.attempt
            && let Some(checkpoints) = &mut job.checkpoints
        {
            checkpoints
                .exhausted
                .insert((exhausted.vertex, exhausted.subtask));
        }
    }
}

/// The checkpoint to trigger for a job now, if one is due.
fn due_checkpoint(job: &mut JobEntry) -> Option<pb::TriggerCheckpoint> {
    if job.is_terminal() || job.restarting {
        return None;
    }
    let attempt = job.attempt;
    let workers = job.workers();
    let all_running = job
        .subtasks
        .values()
        .all(|s| s.state == pb::TaskState::Running);
    let sources = job.layout.sources.clone();
    let checkpoints = job.checkpoints.as_mut()?;
    if checkpoints.finished {
        return None;
    }
    if let Some(pending) = &checkpoints.pending {
        if pending.triggered.elapsed() > CHECKPOINT_TIMEOUT {
            checkpoints.fail_pending("timed out");
        }
        return None;
    }
    let is_final = checkpoints.stopping || checkpoints.exhausted == sources;
    if !all_running || !(is_final || checkpoints.last_trigger.elapsed() >= checkpoints.interval) {
        return None;
    }
    let id = checkpoints.next_id;
    checkpoints.next_id += 1;
    checkpoints.last_trigger = Instant::now();
    let triggered_ms = now_ms();
    checkpoints.pending = Some(PendingCheckpoint {
        id,
        attempt,
        is_final,
        triggered: Instant::now(),
        triggered_ms,
        expected: workers,
        acks: BTreeMap::new(),
        rows: BTreeMap::new(),
        committing: false,
    });
    Some(pb::TriggerCheckpoint {
        job_id: job.id.clone(),
        attempt,
        barrier: Some(pb::CheckpointBarrier {
            checkpoint_id: id,
            timestamp_ms: triggered_ms,
            then_stop: is_final,
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn restart_strategies_from_flinks_settings() {
        use super::JobCheckpoints;
        use crate::cluster::config::CoordinatorConfig;
        let config = CoordinatorConfig {
            checkpoint_dir: "memory://".into(),
            ..CoordinatorConfig::default()
        };
        let settings = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<std::collections::BTreeMap<_, _>>()
        };
        let checkpoints =
            |pairs: &[(&str, &str)]| JobCheckpoints::from_settings(&settings(pairs), &config, "j");
        let fixed = checkpoints(&[("restart-strategy.fixed-delay.delay", "2s")])
            .unwrap()
            .unwrap();
        assert_eq!(fixed.delay_before(5), Duration::from_secs(2));
        let exponential = checkpoints(&[
            ("restart-strategy.type", "exponential-delay"),
            (
                "restart-strategy.exponential-delay.initial-backoff",
                "100ms",
            ),
            ("restart-strategy.exponential-delay.max-backoff", "1s"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(exponential.delay_before(0), Duration::from_millis(100));
        assert_eq!(exponential.delay_before(2), Duration::from_millis(400));
        assert_eq!(exponential.delay_before(10), Duration::from_secs(1));
        let none = checkpoints(&[("restart-strategy.type", "none")])
            .unwrap()
            .unwrap();
        assert_eq!(none.restart_attempts, 0);
        assert!(
            checkpoints(&[("execution.checkpointing.interval", "0")])
                .unwrap()
                .is_none()
        );
        assert!(checkpoints(&[("restart-strategy.type", "sometimes")]).is_err());
    }

    #[test]
    fn durations_in_flinks_syntax() {
        assert_eq!(parse_duration("10s"), Some(Duration::from_secs(10)));
        assert_eq!(parse_duration(" 500 ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("1min"), Some(Duration::from_secs(60)));
        assert_eq!(parse_duration("250"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("0"), Some(Duration::ZERO));
        assert_eq!(parse_duration("ten seconds"), None);
        assert_eq!(parse_duration("5 parsecs"), None);
    }
}
