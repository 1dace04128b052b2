//! The embedded cluster: a coordinator and N workers inside this process,
//! talking real gRPC over loopback — the code paths of a real cluster, as
//! Flink's MiniCluster runs a local job. `weir run` and `weir sql` run
//! their jobs on one, so a single-process run checkpoints, commits its
//! sinks per checkpoint and restarts after a failure like a cluster does.

use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::warn;

use super::config::ClusterConfig;
use super::coordinator::Coordinator;
use super::worker::Worker;
use super::{Client, ClusterError, Result};

/// How long a clean shutdown waits for the workers, then the coordinator.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(5);

/// A running in-process cluster; [`EmbeddedCluster::shutdown`] stops it
/// cleanly, dropping it stops it at once.
pub struct EmbeddedCluster {
    client: Client,
    stop_workers: watch::Sender<bool>,
    stop_coordinator: watch::Sender<bool>,
    workers: Vec<JoinHandle<()>>,
    coordinator: JoinHandle<()>,
    /// Checkpoints and RocksDB state, when the configuration names no
    /// directory for them: they live as long as the cluster.
    _scratch: Option<tempfile::TempDir>,
}

/// Resolves once `stop` turns true (or its sender is gone).
async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

impl EmbeddedCluster {
    /// Starts a coordinator and `workers` workers with `slots` slots each,
    /// all on 127.0.0.1, and waits until every worker has registered.
    ///
    /// Checkpoints and worker state go to a temporary directory removed
    /// with the cluster, unless the configuration names directories
    /// (`coordinator.checkpoint_dir`, `worker.state_dir`).
    pub async fn start(workers: usize, slots: u32, mut config: ClusterConfig) -> Result<Self> {
        let workers = workers.max(1);
        let scratch = if config.coordinator.checkpoint_dir.trim().is_empty()
            || config.worker.state_dir.trim().is_empty()
        {
            let dir = tempfile::Builder::new()
                .prefix("weir-embedded-")
                .tempdir()
                .map_err(|e| {
                    ClusterError::Config(format!("cannot create a temporary directory: {e}"))
                })?;
            if config.coordinator.checkpoint_dir.trim().is_empty() {
                config.coordinator.checkpoint_dir =
                    dir.path().join("checkpoints").display().to_string();
            }
            Some(dir)
        } else {
            None
        };
        let (stop_coordinator, coordinator_signal) = watch::channel(false);
        let (stop_workers, workers_signal) = watch::channel(false);
        config.coordinator.listen = "127.0.0.1:0".into();
        let coordinator = Coordinator::new(config.coordinator.clone());
        let (address, server) = coordinator
            .serve(&config.coordinator.listen, stopped(coordinator_signal))
            .await?;
        let coordinator = tokio::spawn(async move {
            let _ = server.await;
        });
        let mut tasks = Vec::with_capacity(workers);
        for i in 0..workers {
            let mut worker_config = config.clone();
            worker_config.worker.coordinator = address.to_string();
            worker_config.worker.listen = "127.0.0.1:0".into();
            worker_config.worker.id = format!("embedded-{}", i + 1);
            worker_config.worker.slots = slots.max(1);
            if let Some(dir) = &scratch
                && config.worker.state_dir.trim().is_empty()
            {
                worker_config.worker.state_dir = dir
                    .path()
                    .join("state")
                    .join(&worker_config.worker.id)
                    .display()
                    .to_string();
            }
            let worker = Worker::bind(worker_config).await?;
            let stop = stopped(workers_signal.clone());
            tasks.push(tokio::spawn(async move {
                if let Err(e) = worker.run(stop).await {
                    tracing::error!(error = %e, "embedded worker failed");
                }
            }));
        }
        let client = Client::connect(&address.to_string(), Duration::from_secs(5)).await?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while client.workers().await?.len() < workers {
            if tokio::time::Instant::now() > deadline {
                return Err(ClusterError::Rejected(
                    "embedded workers did not register within 10 s".into(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(Self {
            client,
            stop_workers,
            stop_coordinator,
            workers: tasks,
            coordinator,
            _scratch: scratch,
        })
    }

    /// A client of the embedded coordinator.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Stops the cluster cleanly: the workers leave (the coordinator counts
    /// no loss), then the coordinator stops.
    pub async fn shutdown(mut self) {
        let _ = self.stop_workers.send(true);
        for worker in std::mem::take(&mut self.workers) {
            if tokio::time::timeout(SHUTDOWN_WAIT, worker).await.is_err() {
                warn!("an embedded worker did not stop in time");
            }
        }
        let _ = self.stop_coordinator.send(true);
        if tokio::time::timeout(SHUTDOWN_WAIT, &mut self.coordinator)
            .await
            .is_err()
        {
            warn!("the embedded coordinator did not stop in time");
        }
    }
}

impl Drop for EmbeddedCluster {
    fn drop(&mut self) {
        let _ = self.stop_workers.send(true);
        let _ = self.stop_coordinator.send(true);
        for task in &self.workers {
            task.abort();
        }
        self.coordinator.abort();
    }
}
