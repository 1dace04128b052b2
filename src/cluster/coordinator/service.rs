//! The coordinator's gRPC face: worker sessions, result pushing, and the
//! client API.

use std::pin::Pin;
use std::time::{Duration, Instant};

use futures::Stream;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};
use tracing::info;
use weir_proto as pb;
use weir_proto::coordinator_server::Coordinator as CoordinatorRpc;

use super::state::{JobEntry, WorkerEntry};
use super::{Coordinator, WorkerGone, unknown_job};

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

fn receiver_stream<T: Send + 'static>(
    rx: mpsc::UnboundedReceiver<Result<T, Status>>,
) -> BoxStream<T> {
    Box::pin(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }))
}

impl Coordinator {
    fn register(
        &self,
        register: pb::RegisterWorker,
    ) -> Result<
        (
            u64,
            mpsc::UnboundedReceiver<Result<pb::CoordinatorCommand, Status>>,
        ),
        Status,
    > {
        let id = register.worker_id.trim().to_string();
        if id.is_empty() {
            return Err(Status::invalid_argument("a worker needs a non-empty id"));
        }
        if register.slots == 0 {
            return Err(Status::invalid_argument(format!(
                "worker '{id}' offers 0 slots; give it --slots 1 or more"
            )));
        }
        if register.version != env!("CARGO_PKG_VERSION") {
            return Err(Status::failed_precondition(format!(
                "worker '{id}' runs Weir {}, the coordinator {}; run the same version everywhere",
                register.version,
                env!("CARGO_PKG_VERSION")
            )));
        }
        let mut state = self.state();
        if let Some(existing) = state.workers.get(&id) {
            return Err(Status::already_exists(format!(
                "worker id '{id}' is already registered (data address {}); give each worker a unique --id",
                existing.data_address
            )));
        }
        state.next_session += 1;
        let session = state.next_session;
        let (tx, rx) = mpsc::unbounded_channel();
        let _ = tx.send(Ok(pb::CoordinatorCommand {
            command: Some(pb::coordinator_command::Command::Registered(
                pb::Registered {
                    heartbeat_interval_ms: self.config.heartbeat_interval_ms,
                },
            )),
        }));
        info!(worker = %id, address = %register.data_address, slots = register.slots, "worker registered");
        state.workers.insert(
            id,
            WorkerEntry {
                data_address: register.data_address,
                slots: register.slots,
                free_slots: register.slots,
                last_heartbeat: Instant::now(),
                session,
                commands: tx,
            },
        );
        Ok((session, rx))
    }

    /// Waits (briefly) for a job to end; its failure, if it failed.
    async fn failure_once_ended(&self, job_id: &str) -> Option<String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            {
                let state = self.state();
                match state.jobs.get(job_id) {
                    Some(job) if job.is_terminal() => {
                        return match job.state {
                            pb::JobState::Failed => Some(job.failure.clone()),
                            pb::JobState::Canceled => Some("the job was cancelled".into()),
                            _ => None,
                        };
                    }
                    None => return None,
                    Some(_) => {}
                }
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tonic::async_trait]
impl CoordinatorRpc for Coordinator {
    type WorkerSessionStream = BoxStream<pb::CoordinatorCommand>;
    type FetchResultsStream = BoxStream<pb::ResultBatch>;

    async fn worker_session(
        &self,
        request: Request<Streaming<pb::WorkerEvent>>,
    ) -> Result<Response<Self::WorkerSessionStream>, Status> {
        let mut inbound = request.into_inner();
        let first = inbound
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("empty worker session"))?;
        let Some(pb::worker_event::Event::Register(register)) = first.event else {
            return Err(Status::invalid_argument(
                "a worker session must start with RegisterWorker",
            ));
        };
        let worker_id = register.worker_id.trim().to_string();
        let (session, commands) = self.register(register)?;
        let coordinator = self.clone();
        tokio::spawn(async move {
            let reason = loop {
                match inbound.message().await {
                    Ok(Some(event)) => match event.event {
                        Some(pb::worker_event::Event::Heartbeat(h)) => {
                            coordinator.heartbeat(&worker_id, session, h)
                        }
                        Some(pb::worker_event::Event::TaskStatus(s)) => {
                            coordinator.task_status(&worker_id, s)
                        }
                        Some(pb::worker_event::Event::CheckpointAck(ack)) => {
                            coordinator.checkpoint_ack(&worker_id, ack)
                        }
                        Some(pb::worker_event::Event::CheckpointDeclined(d)) => {
                            coordinator.checkpoint_declined(&worker_id, d)
                        }
                        Some(pb::worker_event::Event::SourceExhausted(e)) => {
                            coordinator.source_exhausted(e)
                        }
                        Some(pb::worker_event::Event::StopRequested(r)) => {
                            coordinator.stop_requested(r)
                        }
                        Some(pb::worker_event::Event::Leaving(_)) => {
                            coordinator.worker_gone(&worker_id, session, WorkerGone::Left);
                            return;
                        }
                        Some(pb::worker_event::Event::Register(_)) | None => {}
                    },
                    Ok(None) => break "its session ended".to_string(),
                    Err(e) => break format!("its connection broke ({})", e.message()),
                }
            };
            coordinator.worker_gone(&worker_id, session, WorkerGone::Lost(&reason));
        });
        Ok(Response::new(receiver_stream(commands)))
    }

    async fn push_results(
        &self,
        request: Request<Streaming<pb::ResultBatch>>,
    ) -> Result<Response<pb::PushResultsResponse>, Status> {
        let mut inbound = request.into_inner();
        let mut sender: Option<mpsc::Sender<pb::ResultBatch>> = None;
        let mut job_id = String::new();
        while let Some(batch) = inbound.message().await? {
            if sender.is_none() {
                job_id = batch.job_id.clone();
                let state = self.state();
                let job = state
                    .jobs
                    .get(&job_id)
                    .ok_or_else(|| unknown_job(&state, &job_id))?;
                sender = job.results.as_ref().and_then(|r| r.sender.clone());
                if sender.is_none() {
                    return Err(Status::failed_precondition(format!(
                        "job '{job_id}' takes no (more) results"
                    )));
                }
            }
            let end = batch.end;
            if !batch.arrow_ipc.is_empty()
                && let Some(sender) = &sender
                && sender.send(batch).await.is_err()
            {
                return Err(Status::cancelled("the client stopped reading the results"));
            }
            if end {
                break;
            }
        }
        drop(sender);
        let mut state = self.state();
        if let Some(results) = state.jobs.get_mut(&job_id).and_then(|j| j.results.as_mut()) {
            results.producers_left = results.producers_left.saturating_sub(1);
            if results.producers_left == 0 {
                results.sender = None;
            }
        }
        Ok(Response::new(pb::PushResultsResponse {}))
    }

    async fn submit_job(
        &self,
        request: Request<pb::SubmitJobRequest>,
    ) -> Result<Response<pb::SubmitJobResponse>, Status> {
        self.submit(request.into_inner()).await.map(Response::new)
    }

    async fn list_jobs(
        &self,
        _request: Request<pb::ListJobsRequest>,
    ) -> Result<Response<pb::ListJobsResponse>, Status> {
        let state = self.state();
        let mut jobs: Vec<pb::JobSummary> = state.jobs.values().map(JobEntry::summary).collect();
        jobs.sort_by_key(|j| j.started_at_ms);
        Ok(Response::new(pb::ListJobsResponse { jobs }))
    }

    async fn get_job(
        &self,
        request: Request<pb::JobRef>,
    ) -> Result<Response<pb::JobDetail>, Status> {
        let job_id = request.into_inner().job_id;
        let state = self.state();
        state
            .jobs
            .get(&job_id)
            .map(|j| Response::new(j.detail()))
            .ok_or_else(|| unknown_job(&state, &job_id))
    }

    async fn cancel_job(
        &self,
        request: Request<pb::JobRef>,
    ) -> Result<Response<pb::JobDetail>, Status> {
        self.job_command(&request.into_inner().job_id, false)
            .map(Response::new)
    }

    async fn stop_job(
        &self,
        request: Request<pb::JobRef>,
    ) -> Result<Response<pb::JobDetail>, Status> {
        self.job_command(&request.into_inner().job_id, true)
            .map(Response::new)
    }

    async fn rescale_job(
        &self,
        request: Request<pb::RescaleRequest>,
    ) -> Result<Response<pb::JobDetail>, Status> {
        let request = request.into_inner();
        self.rescale(&request.job_id, request.parallelism)
            .await
            .map(Response::new)
    }

    async fn fetch_results(
        &self,
        request: Request<pb::JobRef>,
    ) -> Result<Response<Self::FetchResultsStream>, Status> {
        let job_id = request.into_inner().job_id;
        let receiver = {
            let mut state = self.state();
            let Some(job) = state.jobs.get_mut(&job_id) else {
                return Err(unknown_job(&state, &job_id));
            };
            let Some(results) = job.results.as_mut() else {
                return Err(Status::failed_precondition(format!(
                    "job '{job_id}' is not a query: it writes to its sink"
                )));
            };
            results.receiver.take().ok_or_else(|| {
                Status::failed_precondition(format!(
                    "the results of job '{job_id}' are already being fetched"
                ))
            })?
        };
        let coordinator = self.clone();
        let stream = futures::stream::unfold(Some(receiver), move |receiver| {
            let coordinator = coordinator.clone();
            let job_id = job_id.clone();
            async move {
                let mut receiver = receiver?;
                match receiver.recv().await {
                    Some(batch) => Some((Ok(batch), Some(receiver))),
                    None => coordinator
                        .failure_once_ended(&job_id)
                        .await
                        .map(|failure| (Err(Status::aborted(failure)), None)),
                }
            }
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn list_workers(
        &self,
        _request: Request<pb::ListWorkersRequest>,
    ) -> Result<Response<pb::ListWorkersResponse>, Status> {
        let state = self.state();
        let now = Instant::now();
        let workers = state
            .workers
            .iter()
            .map(|(id, w)| pb::WorkerInfo {
                worker_id: id.clone(),
                data_address: w.data_address.clone(),
                slots: w.slots,
                free_slots: w.free_slots,
                last_heartbeat_ms: super::now_ms()
                    - now.duration_since(w.last_heartbeat).as_millis() as i64,
            })
            .collect();
        Ok(Response::new(pb::ListWorkersResponse { workers }))
    }

    async fn get_catalog(
        &self,
        _request: Request<pb::GetCatalogRequest>,
    ) -> Result<Response<pb::Catalog>, Status> {
        Ok(Response::new(self.state().catalog.to_proto()))
    }

    async fn create_catalog_table(
        &self,
        request: Request<pb::CatalogTable>,
    ) -> Result<Response<pb::Catalog>, Status> {
        let table = request.into_inner();
        // The DDL must plan here too: a table that no script could use
        // must not enter the shared catalog. A view plans over the
        // catalog's tables and views.
        let mut session = weir_sql::Session::new(weir_connectors::default_registry());
        if crate::cluster_session::is_view(&table.ddl) {
            let catalog = self.state().catalog.tables().to_vec();
            crate::cluster_session::replay_catalog(
                &mut session,
                catalog.iter().map(|t| (t.name.as_str(), t.ddl.as_str())),
            )
            .await;
        }
        session
            .execute(&table.ddl)
            .await
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let mut state = self.state();
        state.catalog.create(&table.name, &table.ddl)?;
        info!(table = %table.name, "table added to the catalog");
        Ok(Response::new(state.catalog.to_proto()))
    }

    async fn drop_catalog_table(
        &self,
        request: Request<pb::DropCatalogTableRequest>,
    ) -> Result<Response<pb::Catalog>, Status> {
        let name = request.into_inner().name;
        let mut state = self.state();
        state.catalog.drop_table(&name)?;
        info!(table = %name, "table dropped from the catalog");
        Ok(Response::new(state.catalog.to_proto()))
    }
}
