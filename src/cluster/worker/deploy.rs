//! Deploying a job part: the worker plans the job's SQL again, checks the
//! plan against the coordinator's, restores state from a checkpoint when
//! told to, and starts the subtasks placed on it.

use std::collections::HashMap;

use tokio::sync::mpsc;
use tonic::transport::Channel;
use weir_engine::Deployment;
use weir_engine::state::CheckpointStorage;
use weir_proto as pb;
use weir_sql::{Outcome, Session};

use super::report::{Failure, forward_results, part_key};
use super::{RunningPart, Worker};
use crate::cluster::plan_fingerprint;
use crate::cluster::worker_checkpoints::{PartCheckpoints, load_restore, spawn_driver};

impl Worker {
    /// Plans the job's SQL again, checks it matches the coordinator's plan,
    /// and deploys the subtasks placed here.
    pub(super) async fn deploy(
        &self,
        deploy: pb::DeployJob,
        channel: Channel,
        events: &mpsc::UnboundedSender<pb::WorkerEvent>,
    ) -> Result<RunningPart, Failure> {
        let spec = deploy.spec.ok_or("a deployment without a job spec")?;
        let mut session = Session::new(weir_connectors::default_registry());
        session.set_default_parallelism(spec.parallelism.max(1) as usize);
        let statements =
            weir_sql::split_statements(&spec.sql).map_err(|e| Failure::other(e.to_string()))?;
        let mut last = None;
        for statement in statements {
            last = Some(
                session
                    .execute(&statement.text)
                    .await
                    .map_err(|e| Failure::other(format!("planning failed on worker: {e}")))?,
            );
        }
        let (plan, rows) = match last {
            Some(Outcome::Job(plan)) => (plan, None),
            Some(Outcome::Query(q)) => (q.job, Some(q.rows)),
            _ => return Err("the job's SQL does not end in INSERT or SELECT".into()),
        };
        let graph = plan.graph;
        if plan_fingerprint(&graph) != deploy.plan_fingerprint {
            return Err(Failure::other(format!(
                "worker '{}' planned a different graph than the coordinator \
                 (do all processes run the same Weir version?)",
                self.id
            )));
        }
        let addresses: HashMap<&str, &str> = deploy
            .workers
            .iter()
            .map(|w| (w.worker_id.as_str(), w.data_address.as_str()))
            .collect();
        let vertices = graph.vertices();
        let mut table: Vec<Vec<Option<String>>> = vertices
            .iter()
            .map(|v| vec![Some(String::new()); v.parallelism])
            .collect();
        for p in &deploy.placement {
            let slot = table
                .get_mut(p.vertex as usize)
                .and_then(|v| v.get_mut(p.subtask as usize))
                .ok_or_else(|| {
                    format!(
                        "placement names a subtask {}[{}] the plan lacks",
                        p.vertex, p.subtask
                    )
                })?;
            *slot = if p.worker_id == self.id {
                None
            } else {
                let address = addresses
                    .get(p.worker_id.as_str())
                    .ok_or_else(|| format!("no address for worker '{}'", p.worker_id))?;
                Some(address.to_string())
            };
        }
        let hosts_results = graph
            .output_vertex()
            .and_then(|v| table.get(v.id))
            .is_some_and(|v| v.iter().any(Option::is_none));
        let vertex_names = (0..vertices.len()).map(|v| graph.vertex_name(v)).collect();
        let local: std::collections::BTreeSet<(usize, usize)> = table
            .iter()
            .enumerate()
            .flat_map(|(v, subtasks)| {
                subtasks
                    .iter()
                    .enumerate()
                    .filter(|(_, a)| a.is_none())
                    .map(move |(s, _)| (v, s))
            })
            .collect();
        let key = part_key(&deploy.job_id, deploy.attempt);
        let mut deployment = Deployment::partial(&key, table, self.exchange.clone())
            .with_attempt(&deploy.job_id, deploy.attempt);
        let mut checkpointing = None;
        // Operators spill keyed state past their budget into the job's
        // RocksDB instance, with or without checkpoints.
        let store = self
            .state
            .open_job(&deploy.job_id, deploy.attempt)
            .map_err(|e| Failure::from_error(&e))?;
        deployment = deployment.with_state(store.clone(), self.operator_memory_bytes());
        if !deploy.checkpoint_url.is_empty() {
            let storage = CheckpointStorage::open(&deploy.checkpoint_url, &deploy.job_id)
                .map_err(|e| Failure::from_error(&e))?;
            let setup = match deploy.restore_checkpoint {
                0 => weir_engine::CheckpointSetup::default(),
                id => {
                    let scratch = std::env::temp_dir()
                        .join(format!("weir-restore-{}-{key}", self.id.replace('/', "_")));
                    load_restore(&storage, id, &graph, &local, &scratch, &store).await?
                }
            };
            deployment = deployment.with_checkpointing(setup);
            let local_nodes = local
                .iter()
                .flat_map(|&(v, s)| vertices[v].nodes.iter().map(move |&n| (n as u32, s as u32)))
                .collect();
            checkpointing = Some(PartCheckpoints {
                job_id: deploy.job_id.clone(),
                attempt: deploy.attempt,
                worker_id: self.id.clone(),
                local,
                local_nodes,
                store,
                storage,
                events: events.clone(),
            });
        }
        let handle = self
            .runtime
            .spawn_deployment(&plan.name, &graph, &deployment)
            .map_err(|e| Failure::from_error(&e))?;
        let checkpoints = match (checkpointing, handle.take_checkpoint_events()) {
            (Some(part), Some(reports)) => Some(spawn_driver(part, reports)),
            _ => None,
        };
        // The graph holds the query sink's sender: drop it so the result
        // stream ends when the subtasks do.
        drop(graph);
        let forwarder = match rows {
            Some(rows) if hosts_results => Some(tokio::spawn(forward_results(
                channel,
                deploy.job_id.clone(),
                rows,
            ))),
            _ => None,
        };
        Ok(RunningPart {
            job_id: deploy.job_id,
            attempt: deploy.attempt,
            handle,
            checkpoints,
            forwarder,
            vertex_names,
            failure: None,
            stop_forwarded: false,
        })
    }

    /// Keyed state an operator subtask keeps in memory before spilling.
    pub(super) fn operator_memory_bytes(&self) -> usize {
        usize::try_from(
            self.config
                .worker
                .state_operator_memory_kb
                .saturating_mul(1024),
        )
        .unwrap_or(usize::MAX)
    }
}
