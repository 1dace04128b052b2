//! The embedded cluster: a coordinator and N workers inside this process,
//! talking real gRPC over loopback — the code paths of a real cluster.

use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::config::ClusterConfig;
use super::coordinator::Coordinator;
use super::worker::Worker;
use super::{Client, ClusterError, Result};

/// A running in-process cluster; dropping it shuts everything down.
pub struct EmbeddedCluster {
    client: Client,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl EmbeddedCluster {
    /// Starts a coordinator and `workers` workers with `slots` slots each,
    /// all on 127.0.0.1, and waits until every worker has registered.
    pub async fn start(workers: usize, slots: u32, mut config: ClusterConfig) -> Result<Self> {
        let (shutdown, signal) = watch::channel(false);
        let stopped = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        config.coordinator.listen = "127.0.0.1:0".into();
        let coordinator = Coordinator::new(config.coordinator.clone());
        let (address, server) = coordinator
            .serve(&config.coordinator.listen, stopped(signal.clone()))
            .await?;
        let mut tasks = vec![tokio::spawn(async move {
            let _ = server.await;
        })];
        for i in 0..workers.max(1) {
            let mut worker_config = config.clone();
            worker_config.worker.coordinator = address.to_string();
            worker_config.worker.listen = "127.0.0.1:0".into();
            worker_config.worker.id = format!("embedded-{}", i + 1);
            worker_config.worker.slots = slots.max(1);
            let worker = Worker::bind(worker_config).await?;
            let stop = stopped(signal.clone());
            tasks.push(tokio::spawn(async move {
                if let Err(e) = worker.run(stop).await {
                    tracing::error!(error = %e, "embedded worker failed");
                }
            }));
        }
        let client = Client::connect(&address.to_string(), Duration::from_secs(5)).await?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while client.workers().await?.len() < workers.max(1) {
            if tokio::time::Instant::now() > deadline {
                return Err(ClusterError::Rejected(
                    "embedded workers did not register within 10 s".into(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(Self {
            client,
            shutdown,
            tasks,
        })
    }

    /// A client of the embedded coordinator.
    pub fn client(&self) -> &Client {
        &self.client
    }
}

impl Drop for EmbeddedCluster {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        for task in &self.tasks {
            task.abort();
        }
    }
}
