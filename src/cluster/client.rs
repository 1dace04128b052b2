//! A client of the coordinator: what `weir submit`, `weir jobs` and the
//! embedded cluster use.

use std::time::Duration;

use arrow::record_batch::RecordBatch;
use tokio::sync::mpsc;
use tonic::transport::Channel;
use weir_proto as pb;
use weir_proto::coordinator_client::CoordinatorClient;

use super::{ClusterError, Result, WhenRefused, connect, results};

/// A job's state and counters as the coordinator reports them.
pub type JobProgress = pb::JobSummary;

/// A connection to a coordinator. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    inner: CoordinatorClient<Channel>,
    address: String,
}

impl Client {
    /// Connects, trying for up to `timeout`.
    pub async fn connect(address: &str, timeout: Duration) -> Result<Self> {
        let channel = connect("the coordinator", address, timeout, WhenRefused::Fail).await?;
        Ok(Self {
            inner: CoordinatorClient::new(channel)
                .max_decoding_message_size(256 << 20)
                .max_encoding_message_size(256 << 20),
            address: address.to_string(),
        })
    }

    /// The coordinator's address.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Plans `sql` on the coordinator and starts a job per INSERT / SELECT.
    /// `parallelism` 0 means the coordinator's default.
    pub async fn submit(
        &self,
        sql: &str,
        parallelism: u32,
        name: &str,
    ) -> Result<pb::SubmitJobResponse> {
        let response = self
            .inner
            .clone()
            .submit_job(pb::SubmitJobRequest {
                sql: sql.to_string(),
                parallelism,
                name: name.to_string(),
            })
            .await?;
        Ok(response.into_inner())
    }

    /// Every job the coordinator knows, oldest first.
    pub async fn jobs(&self) -> Result<Vec<pb::JobSummary>> {
        Ok(self
            .inner
            .clone()
            .list_jobs(pb::ListJobsRequest {})
            .await?
            .into_inner()
            .jobs)
    }

    /// One job in detail.
    pub async fn job(&self, job_id: &str) -> Result<pb::JobDetail> {
        Ok(self
            .inner
            .clone()
            .get_job(job_ref(job_id))
            .await?
            .into_inner())
    }

    /// Cancels a job at once.
    pub async fn cancel(&self, job_id: &str) -> Result<pb::JobDetail> {
        Ok(self
            .inner
            .clone()
            .cancel_job(job_ref(job_id))
            .await?
            .into_inner())
    }

    /// Stops a job gracefully: sources stop, in-flight data drains, sinks flush.
    pub async fn stop(&self, job_id: &str) -> Result<pb::JobDetail> {
        Ok(self
            .inner
            .clone()
            .stop_job(job_ref(job_id))
            .await?
            .into_inner())
    }

    /// Restarts a job at `parallelism` from its newest completed checkpoint.
    pub async fn rescale(&self, job_id: &str, parallelism: u32) -> Result<pb::JobDetail> {
        Ok(self
            .inner
            .clone()
            .rescale_job(pb::RescaleRequest {
                job_id: job_id.to_string(),
                parallelism,
            })
            .await?
            .into_inner())
    }

    /// The registered workers.
    pub async fn workers(&self) -> Result<Vec<pb::WorkerInfo>> {
        Ok(self
            .inner
            .clone()
            .list_workers(pb::ListWorkersRequest {})
            .await?
            .into_inner()
            .workers)
    }

    /// The shared catalog of tables.
    pub async fn catalog(&self) -> Result<pb::Catalog> {
        Ok(self
            .inner
            .clone()
            .get_catalog(pb::GetCatalogRequest {})
            .await?
            .into_inner())
    }

    /// Adds a table to the shared catalog.
    pub async fn create_table(&self, name: &str, ddl: &str) -> Result<pb::Catalog> {
        Ok(self
            .inner
            .clone()
            .create_catalog_table(pb::CatalogTable {
                name: name.to_string(),
                ddl: ddl.to_string(),
            })
            .await?
            .into_inner())
    }

    /// Removes a table from the shared catalog.
    pub async fn drop_table(&self, name: &str) -> Result<pb::Catalog> {
        Ok(self
            .inner
            .clone()
            .drop_catalog_table(pb::DropCatalogTableRequest {
                name: name.to_string(),
            })
            .await?
            .into_inner())
    }

    /// Streams a query job's rows into the returned channel; a failed job
    /// ends the stream with its error.
    pub async fn results(&self, job_id: &str) -> Result<mpsc::Receiver<Result<RecordBatch>>> {
        let mut stream = self
            .inner
            .clone()
            .fetch_results(job_ref(job_id))
            .await?
            .into_inner();
        let (tx, rx) = mpsc::channel(2);
        tokio::spawn(async move {
            loop {
                let item = match stream.message().await {
                    Ok(Some(batch)) => results::decode(&batch.arrow_ipc),
                    Ok(None) => return,
                    Err(status) => Err(ClusterError::from(status)),
                };
                let failed = item.is_err();
                let batches = match item {
                    Ok(batches) => batches.into_iter().map(Ok).collect(),
                    Err(e) => vec![Err(e)],
                };
                for b in batches {
                    if tx.send(b).await.is_err() {
                        return;
                    }
                }
                if failed {
                    return;
                }
            }
        });
        Ok(rx)
    }

    /// Polls a job until it ends, calling `progress` on every poll.
    pub async fn wait(
        &self,
        job_id: &str,
        poll: Duration,
        mut progress: impl FnMut(&pb::JobSummary),
    ) -> Result<pb::JobSummary> {
        loop {
            let detail = self.job(job_id).await?;
            let summary = detail.summary.unwrap_or_default();
            progress(&summary);
            if is_terminal(&summary) {
                return Ok(summary);
            }
            tokio::time::sleep(poll).await;
        }
    }
}

/// The jobs as `weir jobs` and the shell's `\\jobs` list them: one line
/// each, the name last so that long names do not push the columns apart,
/// and a failed job's reason on the next line.
pub fn jobs_listing(jobs: &[pb::JobSummary]) -> String {
    let mut out = format!(
        "{:<10} {:<10} {:>4} {:>12} {:>12} {:>8}  NAME",
        "ID", "STATE", "P", "READ", "WRITTEN", "RESTARTS"
    );
    for job in jobs {
        out.push_str(&format!(
            "\n{:<10} {:<10} {:>4} {:>12} {:>12} {:>8}  {}",
            job.job_id,
            state_name(job.state()),
            job.parallelism,
            job.records_read,
            job.records_written,
            job.restarts,
            job.name,
        ));
        if !job.failure.is_empty() {
            out.push_str(&format!("\n           {}", job.failure));
        }
    }
    out
}

/// True once a job finished, failed or was cancelled.
pub fn is_terminal(summary: &pb::JobSummary) -> bool {
    matches!(
        summary.state(),
        pb::JobState::Finished | pb::JobState::Failed | pb::JobState::Canceled
    )
}

/// A short lowercase name of a job state.
pub fn state_name(state: pb::JobState) -> &'static str {
    match state {
        pb::JobState::Unspecified => "unknown",
        pb::JobState::Running => "running",
        pb::JobState::Finishing => "finishing",
        pb::JobState::Finished => "finished",
        pb::JobState::Failed => "failed",
        pb::JobState::Canceled => "cancelled",
    }
}

/// A short lowercase name of a subtask state.
pub fn task_state_name(state: pb::TaskState) -> &'static str {
    match state {
        pb::TaskState::Unspecified => "unknown",
        pb::TaskState::Scheduled => "scheduled",
        pb::TaskState::Running => "running",
        pb::TaskState::Finished => "finished",
        pb::TaskState::Failed => "failed",
        pb::TaskState::Canceled => "cancelled",
    }
}

fn job_ref(job_id: &str) -> pb::JobRef {
    pb::JobRef {
        job_id: job_id.to_string(),
    }
}
