//! The cluster: one coordinator and any number of worker processes.
//!
//! ```text
//!   weir submit ──SubmitJob──> coordinator ──DeployJob (WorkerSession)──> worker 1..n
//!                               │  plans, places slices on slots,          │ re-plan the SQL,
//!                               │  tracks subtask states, heartbeats       │ run their subtasks,
//!                               ▼                                          ▼ exchange batches
//!                         weir jobs / job / cancel                 Arrow Flight DoExchange
//! ```
//! Jobs are described by their SQL (DDL and `SET`s, then the `INSERT` or
//! `SELECT`); every worker plans it again — planning is deterministic and a
//! plan fingerprint guards against version skew — and deploys only the
//! subtasks placed on it. A job of parallelism `p` takes `p` slots: slice `i`
//! (subtask `i` of every operator) runs in one slot, so forward edges stay
//! in process and slices spread evenly over the workers.

pub mod client;
pub mod config;
pub mod coordinator;
pub mod embedded;
pub mod metrics_endpoint;
mod results;
pub mod worker;
mod worker_checkpoints;

use std::hash::{DefaultHasher, Hash, Hasher};
use std::time::{Duration, Instant};

use tonic::transport::{Channel, Endpoint};
use weir_engine::PhysicalGraph;

pub use client::{Client, JobProgress};
pub use config::ClusterConfig;
pub use coordinator::Coordinator;
pub use embedded::EmbeddedCluster;

/// Errors of the cluster's processes and clients.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// A bad setting (user).
    #[error("configuration: {0}")]
    Config(String),
    /// A peer could not be reached (external).
    #[error("cannot reach {what} at {address}: {message}")]
    Unreachable {
        /// What was being reached ("the coordinator").
        what: String,
        /// Its address.
        address: String,
        /// The last error.
        message: String,
    },
    /// A request was refused or failed; the message is the server's.
    #[error("{0}")]
    Rejected(String),
    /// The engine failed.
    #[error(transparent)]
    Engine(#[from] weir_engine::Error),
    /// Planning SQL failed.
    #[error(transparent)]
    Sql(#[from] weir_sql::SqlError),
    /// An I/O error (binding a port …).
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

impl From<tonic::Status> for ClusterError {
    fn from(status: tonic::Status) -> Self {
        ClusterError::Rejected(status.message().to_string())
    }
}

/// Result alias of the cluster.
pub type Result<T, E = ClusterError> = std::result::Result<T, E>;

/// A stable hash of a physical plan, to check that coordinator and workers
/// planned the same graph.
pub fn plan_fingerprint(graph: &PhysicalGraph) -> String {
    let mut hasher = DefaultHasher::new();
    graph.to_string().hash(&mut hasher);
    format!("{:016x}", hasher.finish())
}

/// What [`connect`] does when nothing listens at the address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenRefused {
    /// Keep trying until the timeout: the server may be starting (a worker
    /// started before its coordinator).
    Retry,
    /// Fail at once: a client talks to a server that should be running.
    Fail,
}

/// True when the error (or one of its causes) is a refused TCP connection.
fn is_refused(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = cause {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::ConnectionRefused
        {
            return true;
        }
        cause = e.source();
    }
    false
}

/// Connects to a gRPC server, retrying until `timeout` has passed (and, with
/// [`WhenRefused::Fail`], failing at once when nothing listens there).
pub async fn connect(
    what: &str,
    address: &str,
    timeout: Duration,
    when_refused: WhenRefused,
) -> Result<Channel> {
    let uri = if address.contains("://") {
        address.to_string()
    } else {
        format!("http://{address}")
    };
    let endpoint = Endpoint::from_shared(uri).map_err(|e| ClusterError::Unreachable {
        what: what.into(),
        address: address.into(),
        message: format!("not a valid address: {e}"),
    })?;
    let endpoint = endpoint
        .connect_timeout(Duration::from_secs(2).min(timeout.max(Duration::from_millis(100))))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_while_idle(true);
    let deadline = Instant::now() + timeout;
    let mut delay = Duration::from_millis(50);
    loop {
        match endpoint.connect().await {
            Ok(channel) => return Ok(channel),
            Err(e) if when_refused == WhenRefused::Fail && is_refused(&e) => {
                return Err(ClusterError::Unreachable {
                    what: what.into(),
                    address: address.into(),
                    message: "connection refused: nothing listens there (is it running, \
                              and is the address right?)"
                        .into(),
                });
            }
            Err(e) if Instant::now() + delay >= deadline => {
                let mut message = e.to_string();
                if let Some(source) = std::error::Error::source(&e) {
                    message = format!("{message}: {source}");
                }
                return Err(ClusterError::Unreachable {
                    what: what.into(),
                    address: address.into(),
                    message: format!("{message} (gave up after {:.1}s)", timeout.as_secs_f64()),
                });
            }
            Err(_) => {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_millis(500));
            }
        }
    }
}

/// Binds `listen` for `what`; returns the listener and the bound address
/// (which tells the port when `listen` asked for port 0).
pub(crate) async fn bind(
    listen: &str,
    what: &str,
) -> Result<(tokio::net::TcpListener, std::net::SocketAddr)> {
    let io = |context: String| move |source| ClusterError::Io { context, source };
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(io(format!("cannot listen for {what} on {listen}")))?;
    let address = listener
        .local_addr()
        .map_err(io(format!("cannot read the address {what} is bound to")))?;
    Ok((listener, address))
}

/// Milliseconds since the epoch.
pub(crate) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
