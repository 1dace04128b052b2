//! Recovery: a failed job restarts from its newest completed checkpoint
//! (when its restart strategy allows and a restart can help), a rescaled
//! job restarts at its new parallelism, and each new attempt counts on from
//! what the restored checkpoint covered.

use std::time::{Duration, Instant};

use tonic::Status;
use tracing::{info, warn};
use weir_proto as pb;

use super::planning::{place, plan_script};
use super::state::{CommittedRows, JobEntry, State};
use super::{Coordinator, Deployed, send_deployment, unknown_job};
use crate::cluster::now_ms;

impl Coordinator {
    /// A job failed: it restarts from its newest completed checkpoint while
    /// its restart strategy allows (and a restart can help), and fails
    /// otherwise.
    pub(super) fn on_job_failure(
        &self,
        state: &mut State,
        job_id: &str,
        reason: String,
        restart: Restart,
    ) {
        let lost = self.lost.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let reason = state.name_workers(&reason, &lost);
        let Some(job) = state.jobs.get_mut(job_id) else {
            return;
        };
        if job.restarting {
            return;
        }
        let restarts = job.restarts.len() as u32;
        let Some(checkpoints) = job.checkpoints.as_mut() else {
            warn!(job = job_id, %reason, "job failed");
            state.end_job(job_id, pb::JobState::Failed, Some(reason));
            return;
        };
        if restart == Restart::Pointless {
            warn!(job = job_id, %reason, "job failed (not restarted: the input or configuration is at fault)");
            state.end_job(job_id, pb::JobState::Failed, Some(reason));
            return;
        }
        if restarts >= checkpoints.restart_attempts {
            let reason = match restarts {
                0 => reason,
                n => format!("{reason} (after {n} restarts, the limit)"),
            };
            warn!(job = job_id, %reason, "job failed");
            state.end_job(job_id, pb::JobState::Failed, Some(reason));
            return;
        }
        let delay = checkpoints.delay_before(restarts);
        checkpoints.fail_pending("the job failed");
        end_attempt(state, job_id);
        warn!(job = job_id, %reason, delay_ms = delay.as_millis() as u64, "job failed; restarting");
        let coordinator = self.clone();
        let job_id = job_id.to_string();
        tokio::spawn(async move {
            coordinator.restart(job_id, reason, delay).await;
        });
    }

    /// Restarts a job at another parallelism from its newest completed
    /// checkpoint: keyed state moves to its new owners by key group, sinks
    /// commit what the checkpoint covered, sources keep their positions
    /// (a source restores only at its old parallelism: pin it with
    /// `'scan.parallelism'`).
    pub(super) async fn rescale(
        &self,
        job_id: &str,
        parallelism: u32,
    ) -> Result<pb::JobDetail, Status> {
        if parallelism == 0 {
            return Err(Status::invalid_argument(
                "the parallelism must be at least 1",
            ));
        }
        let (sql, name) = {
            let state = self.state();
            let job = state
                .jobs
                .get(job_id)
                .ok_or_else(|| unknown_job(&state, job_id))?;
            if job.is_terminal() || job.restarting || job.checkpoints.is_none() {
                return Err(Status::failed_precondition(format!(
                    "job '{job_id}' cannot be rescaled now: only a running job that takes \
                     checkpoints can"
                )));
            }
            (job.spec.sql.clone(), job.spec.name.clone())
        };
        let planned = plan_script(&sql, &name, parallelism, &[])
            .await?
            .jobs
            .pop()
            .ok_or_else(|| Status::internal("the job's SQL planned to no job"))?;
        let entry = self.job_entry(job_id, planned)?;
        let mut state = self.state();
        let Some(job) = state.jobs.get_mut(job_id) else {
            return Err(unknown_job(&state, job_id));
        };
        if job.is_terminal() || job.restarting {
            return Err(Status::failed_precondition(format!(
                "job '{job_id}' ended or is restarting"
            )));
        }
        job.spec.parallelism = parallelism;
        job.layout = entry.layout;
        job.plan = entry.plan;
        job.vertex_names = entry.vertex_names;
        if let Some(checkpoints) = &mut job.checkpoints {
            checkpoints.fail_pending("the job is rescaling");
        }
        end_attempt(&mut state, job_id);
        info!(job = job_id, parallelism, "rescaling");
        let coordinator = self.clone();
        let id = job_id.to_string();
        tokio::spawn(async move {
            coordinator
                .restart(
                    id,
                    format!("rescaled to parallelism {parallelism}"),
                    Duration::ZERO,
                )
                .await;
        });
        state
            .jobs
            .get(job_id)
            .map(JobEntry::detail)
            .ok_or_else(|| Status::internal("job vanished"))
    }

    /// Deploys a new attempt of a failed job once enough slots are free,
    /// restoring its newest completed checkpoint.
    pub(super) async fn restart(&self, job_id: String, cause: String, delay: Duration) {
        // Workers may be rejoining: wait for slots for a while.
        let deadline = Instant::now() + delay + Duration::from_secs(30);
        tokio::time::sleep(delay).await;
        let from = self.restore_point(&job_id).await;
        loop {
            {
                let mut state = self.state();
                let Some(job) = state.jobs.get(&job_id) else {
                    return;
                };
                if !job.restarting || job.is_terminal() {
                    return;
                }
                let slices = job.layout.parallelism.iter().copied().max().unwrap_or(1);
                let name = job.spec.name.clone();
                match place(&state, slices, &name) {
                    Ok(slice_workers) => {
                        self.redeploy(&mut state, &job_id, &slice_workers, cause, from);
                        return;
                    }
                    Err(status) if Instant::now() > deadline => {
                        let reason = format!("{cause}; restarting failed: {}", status.message());
                        if let Some(job) = state.jobs.get_mut(&job_id) {
                            job.restarting = false;
                        }
                        state.end_job(&job_id, pb::JobState::Failed, Some(reason));
                        return;
                    }
                    Err(_) => {}
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The newest completed checkpoint whose manifest verifies and which no
    /// restore found corrupt (checkpoint 0: none, start from scratch), with
    /// the rows read and written up to it. Storage is the truth: it also
    /// knows checkpoints of an earlier coordinator.
    async fn restore_point(&self, job_id: &str) -> RestorePoint {
        let (storage, bad) = {
            let state = self.state();
            let Some(checkpoints) = state.jobs.get(job_id).and_then(|j| j.checkpoints.as_ref())
            else {
                return RestorePoint::default();
            };
            (checkpoints.storage.clone(), checkpoints.corrupt.clone())
        };
        let completed = match storage.completed().await {
            Ok(ids) => ids,
            Err(e) => {
                warn!(job = job_id, error = %e, "cannot list checkpoints; restarting from scratch");
                return RestorePoint::default();
            }
        };
        let newest = completed.last().copied().unwrap_or(0);
        for id in completed.into_iter().rev() {
            if bad.contains(&id) {
                continue;
            }
            match storage.load(id).await {
                Ok(manifest) => {
                    if id < newest {
                        warn!(
                            job = job_id,
                            checkpoint = id,
                            newest,
                            "restoring an older checkpoint than the newest completed one, which \
                             is corrupt: output its sinks committed after checkpoint {id} is \
                             produced again"
                        );
                    }
                    return RestorePoint {
                        checkpoint: id,
                        committed: CommittedRows {
                            read: manifest.records_read,
                            written: manifest.records_written,
                        },
                    };
                }
                Err(e) => {
                    warn!(job = job_id, checkpoint = id, error = %e, "skipping a bad checkpoint");
                    if let Some(c) = self
                        .state()
                        .jobs
                        .get_mut(job_id)
                        .and_then(|j| j.checkpoints.as_mut())
                    {
                        c.corrupt.insert(id);
                    }
                }
            }
        }
        RestorePoint::default()
    }

    fn redeploy(
        &self,
        state: &mut State,
        job_id: &str,
        slice_workers: &[String],
        cause: String,
        restore: RestorePoint,
    ) {
        let Some(job) = state.jobs.get_mut(job_id) else {
            return;
        };
        let from = restore.checkpoint;
        job.attempt += 1;
        job.restarting = false;
        // The new attempt counts from what the restored checkpoint covered.
        job.committed_before = restore.committed;
        job.counters.clear();
        if let Some(checkpoints) = &mut job.checkpoints {
            checkpoints.last_trigger = Instant::now();
            checkpoints.next_id = checkpoints.next_id.max(from + 1);
        }
        job.restarts.push(pb::RestartRecord {
            at_ms: now_ms(),
            cause: cause.clone(),
            from_checkpoint: from,
            attempt: job.attempt,
        });
        let (attempt, spec, layout) = (job.attempt, job.spec.clone(), job.layout.clone());
        let url = job.checkpoints.as_ref().map(|c| c.url.clone());
        let (subtasks, slots) = send_deployment(
            state,
            job_id,
            &spec,
            &layout,
            slice_workers,
            Deployed {
                attempt,
                checkpoint_url: url.unwrap_or_default(),
                restore_checkpoint: from,
            },
        );
        info!(
            job = job_id,
            attempt,
            from_checkpoint = from,
            "job restarted"
        );
        if let Some(job) = state.jobs.get_mut(job_id) {
            job.subtasks = subtasks;
            job.slots = slots;
        }
        state.record(job_id);
    }
}

/// Ends a job's current attempt before a restart: cancels what is left of
/// it and frees its slots; the job stays (restarting).
fn end_attempt(state: &mut State, job_id: &str) {
    let Some(job) = state.jobs.get_mut(job_id) else {
        return;
    };
    if let Some(checkpoints) = &mut job.checkpoints {
        checkpoints.exhausted.clear();
        checkpoints.finished = false;
    }
    job.restarting = true;
    let slots = std::mem::take(&mut job.slots);
    for (worker_id, n) in &slots {
        if let Some(worker) = state.workers.get_mut(worker_id) {
            worker.free_slots = (worker.free_slots + n).min(worker.slots);
            worker.send(pb::coordinator_command::Command::Cancel(pb::JobRef {
                job_id: job_id.to_string(),
            }));
        }
    }
}

/// Where a restarted job resumes: a completed checkpoint (0: none) and
/// the rows read and written up to it.
#[derive(Debug, Clone, Copy, Default)]
struct RestorePoint {
    checkpoint: u64,
    committed: CommittedRows,
}

/// Whether restarting a failed job can help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Restart {
    /// A lost worker, a broken connection, a full disk: try again.
    Allowed,
    /// Bad input or configuration: a restart fails the same way.
    Pointless,
}
