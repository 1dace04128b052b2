//! A job started by the [`Engine`](crate::Engine): in this process, or on a
//! cluster (followed by polling the coordinator).

use std::time::Duration;

use arrow::record_batch::RecordBatch;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use weir_engine::JobHandle;
use weir_proto as pb;
use weir_sql::JobOutput;

use crate::cluster::client::{is_terminal, state_name};
use crate::cluster::{Client, ClusterError};

/// How often a remote job's state is polled.
const POLL: Duration = Duration::from_millis(100);

/// A running job, wherever it runs, and where its rows go.
pub struct RunningJob {
    run: Run,
    output: JobOutput,
    /// What planning warned about (a join whose state grows without bound).
    warnings: Vec<String>,
}

/// Where a job runs.
enum Run {
    /// On the in-process runtime.
    Local(JobHandle),
    /// On a cluster.
    Remote(RemoteJob),
}

/// A job on a cluster, followed by a background poller.
struct RemoteJob {
    client: Client,
    id: String,
    name: String,
    progress: watch::Receiver<pb::JobSummary>,
    poller: JoinHandle<Result<pb::JobSummary, ClusterError>>,
}

/// Rows read by sources, written by sinks, and dropped as late.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JobCounters {
    /// Rows read by the sources.
    pub read: u64,
    /// Rows written by the sinks.
    pub written: u64,
    /// Rows dropped because they came after the watermark passed their window.
    pub late: u64,
    /// Records sources dropped or dead-lettered as undecodable.
    pub bad: u64,
    /// Deletions and retractions of rows operators did not hold, dropped.
    pub unmatched: u64,
}

impl RunningJob {
    pub(crate) fn local(handle: JobHandle, output: JobOutput) -> Self {
        Self {
            run: Run::Local(handle),
            output,
            warnings: Vec::new(),
        }
    }

    /// The job, with the warnings its planning noted.
    pub(crate) fn with_warnings(mut self, warnings: &[String]) -> Self {
        self.warnings = warnings.to_vec();
        self
    }

    /// What planning warned about: show them when the job starts.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    pub(crate) fn remote(client: Client, summary: pb::JobSummary, output: JobOutput) -> Self {
        let (tx, progress) = watch::channel(summary.clone());
        let poll_client = client.clone();
        let id = summary.job_id.clone();
        let poller = tokio::spawn(async move {
            poll_client
                .wait(&id, POLL, |s| {
                    let _ = tx.send(s.clone());
                })
                .await
        });
        Self {
            run: Run::Remote(RemoteJob {
                client,
                id: summary.job_id,
                name: summary.name,
                progress,
                poller,
            }),
            output,
            warnings: Vec::new(),
        }
    }

    /// Where the job's rows go.
    pub fn output(&self) -> &JobOutput {
        &self.output
    }

    /// The job's name.
    pub fn name(&self) -> &str {
        match &self.run {
            Run::Local(h) => h.name(),
            Run::Remote(r) => &r.name,
        }
    }

    /// The cluster's id of the job.
    pub fn id(&self) -> Option<&str> {
        match &self.run {
            Run::Local(_) => None,
            Run::Remote(r) => Some(&r.id),
        }
    }

    /// True once the job has ended.
    pub fn is_finished(&self) -> bool {
        match &self.run {
            Run::Local(h) => h.is_finished(),
            Run::Remote(r) => r.poller.is_finished(),
        }
    }

    /// Counters so far (a remote job's as of the last heartbeat).
    pub fn counters(&self) -> JobCounters {
        match &self.run {
            Run::Local(h) => JobCounters {
                read: h.metrics().rows_read(),
                written: h.metrics().rows_written(),
                late: h.metrics().late_rows_dropped(),
                bad: h.metrics().bad_records(),
                unmatched: h.metrics().unmatched_deletes(),
            },
            Run::Remote(r) => {
                let s = r.progress.borrow();
                JobCounters {
                    read: s.records_read,
                    written: s.records_written,
                    late: s.late_records_dropped,
                    bad: s.bad_records,
                    unmatched: s.unmatched_deletes,
                }
            }
        }
    }

    /// Lets the job run on without following it (a remote job's poller
    /// stops; a local job keeps running in this process).
    pub fn detach(self) {
        if let Run::Remote(r) = self.run {
            r.poller.abort();
        }
    }

    /// Stops gracefully: sources stop, in-flight data drains, sinks flush.
    pub fn stop(&self) {
        match &self.run {
            Run::Local(h) => h.stop(),
            Run::Remote(r) => {
                let (client, id) = (r.client.clone(), r.id.clone());
                tokio::spawn(async move { client.stop(&id).await });
            }
        }
    }

    /// Cancels at once.
    pub fn cancel(&self) {
        match &self.run {
            Run::Local(h) => h.cancel(),
            Run::Remote(r) => {
                let (client, id) = (r.client.clone(), r.id.clone());
                tokio::spawn(async move { client.cancel(&id).await });
            }
        }
    }

    /// A remote query job's rows (the stream ends early if the job fails;
    /// [`RunningJob::wait`] tells why).
    pub(crate) async fn rows(&self) -> Result<mpsc::Receiver<RecordBatch>, ClusterError> {
        let Run::Remote(r) = &self.run else {
            return Err(ClusterError::Rejected("not a cluster job".into()));
        };
        let mut results = r.client.results(&r.id).await?;
        let (tx, rx) = mpsc::channel(2);
        tokio::spawn(async move {
            while let Some(Ok(batch)) = results.recv().await {
                if tx.send(batch).await.is_err() {
                    break;
                }
            }
        });
        Ok(rx)
    }

    /// Waits for the job to end; an error when it failed or was cancelled.
    pub async fn wait(self) -> Result<(), ClusterError> {
        match self.run {
            Run::Local(h) => h.wait().await.map_err(ClusterError::from),
            Run::Remote(r) => {
                let summary = match r.poller.await {
                    Ok(result) => result?,
                    Err(e) => {
                        return Err(ClusterError::Rejected(format!("job poller failed: {e}")));
                    }
                };
                match summary.state() {
                    pb::JobState::Finished => Ok(()),
                    pb::JobState::Failed => Err(ClusterError::Rejected(summary.failure)),
                    state if is_terminal(&summary) => Err(ClusterError::Rejected(format!(
                        "job {} {}",
                        summary.job_id,
                        state_name(state)
                    ))),
                    _ => Ok(()),
                }
            }
        }
    }
}
