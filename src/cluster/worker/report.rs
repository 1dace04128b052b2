//! What a worker tells the coordinator about its job parts: counters in
//! heartbeats, task states (a failure with its facts as data, not only a
//! message), and a query's result rows.

use arrow::record_batch::RecordBatch;
use tokio::sync::mpsc;
use tonic::transport::Channel;
use weir_proto as pb;
use weir_proto::coordinator_client::CoordinatorClient;

use super::RunningPart;
use crate::cluster::{ClusterError, Result, results};

/// A task failure: the message for people, and the facts the coordinator
/// acts on (who is at fault, a broken connection, a corrupt checkpoint).
#[derive(Debug, Clone)]
pub(crate) struct Failure {
    pub message: String,
    pub facts: pb::TaskFailure,
}

impl Failure {
    /// A failure whose kind is not known.
    pub fn other(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            facts: pb::TaskFailure::default(),
        }
    }

    /// A failure for which `domain` is at fault.
    pub fn of(domain: pb::FailureDomain, message: impl Into<String>) -> Self {
        let mut failure = Self::other(message);
        failure.facts.domain = domain as i32;
        failure
    }

    /// A data-plane connection to a peer broke.
    pub fn network(message: impl Into<String>) -> Self {
        let mut failure = Self::of(pb::FailureDomain::External, message);
        failure.facts.network = true;
        failure
    }

    /// Checkpoint `checkpoint` cannot be restored: its data is missing or
    /// corrupt, so later restarts should use an older one.
    pub fn corrupt_checkpoint(checkpoint: u64, message: impl Into<String>) -> Self {
        let mut failure = Self::of(pb::FailureDomain::External, message);
        failure.facts.corrupt_checkpoint = checkpoint;
        failure
    }

    /// The engine's error, classified.
    pub fn from_error(error: &weir_engine::Error) -> Self {
        let domain = match error.domain() {
            weir_engine::ErrorDomain::User => pb::FailureDomain::User,
            weir_engine::ErrorDomain::External => pb::FailureDomain::External,
            weir_engine::ErrorDomain::Internal => pb::FailureDomain::Internal,
        };
        let mut failure = Self::of(domain, error.to_string());
        failure.facts.network = error.is_network();
        failure
    }
}

impl From<String> for Failure {
    fn from(message: String) -> Self {
        Self::other(message)
    }
}

impl From<&str> for Failure {
    fn from(message: &str) -> Self {
        Self::other(message)
    }
}

/// Adds one job's counters (per subtask, and its rows read / written) to a heartbeat.
pub(super) fn add_counters(heartbeat: &mut pb::Heartbeat, job_id: &str, part: &RunningPart) {
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
        unmatched_deletes: metrics.unmatched_deletes(),
        state_spilled_bytes: metrics.total(|_| true, |m| m.state_spilled_bytes),
        attempt: part.attempt,
    });
}

/// Which local subtask an error came from (the first one when unknown).
pub(super) fn failed_task(
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
pub(super) fn part_key(job_id: &str, attempt: u32) -> String {
    format!("{job_id}#{attempt}")
}

/// Reports `state` for each of `tasks`; a failed one with what the
/// coordinator needs to know about its failure.
pub(super) fn send_states(
    events: &mpsc::UnboundedSender<pb::WorkerEvent>,
    (job_id, attempt): (&str, u32),
    tasks: &[(u32, u32)],
    state: pb::TaskState,
    failure: Option<&Failure>,
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
                message: failure.map(|f| f.message.clone()).unwrap_or_default(),
                attempt,
                failure: failure.map(|f| f.facts),
            })),
        });
    }
}

/// Streams a query's result batches to the coordinator.
pub(super) async fn forward_results(
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
