//! A Postgres wire protocol server in front of a Weir cluster, so that
//! `psql`, JDBC and other Postgres drivers create tables, start pipelines,
//! read query results and list jobs.
//!
//! The entry point is [`serve`]. Each connection gets its own
//! [`Engine`](crate::Engine) on the cluster (tables are shared through the
//! coordinator's catalog) and speaks both the simple and the extended
//! query protocol:
//!
//! ```text
//! client ── Query / Parse·Bind·Execute ──> handler ─┬─ compat:  SET/SHOW pg parameters, BEGIN …
//!                                                   ├─ catalog: pg_catalog, information_schema
//!                                                   └─ Engine::execute ──> rows ──> encode
//! ```
//!
//! ```no_run
//! # async fn demo(client: weir::cluster::Client) -> Result<(), weir::pg::PgError> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:5432").await.map_err(weir::pg::PgError::Accept)?;
//! let options = weir::pg::PgOptions { parallelism: 2, password: None };
//! weir::pg::serve(listener, client, options).await
//! # }
//! ```

mod auth;
mod catalog;
mod compat;
mod describe;
mod encode;
mod error;
mod handler;
mod params;
mod rows;
mod text;

use std::sync::Arc;
use std::time::Duration;

use pgwire::api::PgWireServerHandlers;
use pgwire::api::auth::StartupHandler;
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::tokio::process_socket;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tracing::{debug, warn};

pub use error::PgError;

use crate::Engine;
use crate::cluster::Client;
use auth::Startup;
use handler::QueryHandler;
use rows::Probe;

/// How the server runs.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// Parallelism of the jobs a connection starts (until it `SET`s
    /// `'parallelism.default'`).
    pub parallelism: usize,
    /// SCRAM-SHA-256 password clients must know; `None` trusts everyone.
    pub password: Option<String>,
}

/// Consecutive failed `accept`s after which the server gives up.
const ACCEPT_FAILURES: u32 = 100;

/// The handlers of one connection.
struct Handlers {
    query: Arc<QueryHandler>,
    startup: Arc<Startup>,
}

impl PgWireServerHandlers for Handlers {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        Arc::clone(&self.query)
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        Arc::clone(&self.query)
    }

    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        Arc::clone(&self.startup)
    }
}

/// The socket again, and a probe on it that tells when the client left.
fn with_probe(socket: TcpStream) -> std::io::Result<(TcpStream, Option<Probe>)> {
    let socket = socket.into_std()?;
    let probe = Probe::new(&socket);
    Ok((TcpStream::from_std(socket)?, probe))
}

/// Serves Postgres clients on `listener`, running their statements on the
/// cluster `client` talks to. Runs until the listener fails for good;
/// a connection's failure (or panic) ends only that connection.
pub async fn serve(
    listener: TcpListener,
    client: Client,
    options: PgOptions,
) -> Result<(), PgError> {
    let startup = Arc::new(Startup::new(options.password.as_deref()));
    let mut connections = JoinSet::new();
    let mut failures = 0;
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((socket, peer)) => {
                    failures = 0;
                    let _ = socket.set_nodelay(true);
                    let (socket, probe) = match with_probe(socket) {
                        Ok(s) => s,
                        Err(e) => {
                            warn!(%peer, error = %e, "cannot set up a postgres connection");
                            continue;
                        }
                    };
                    let engine = Engine::on_cluster(client.clone(), options.parallelism);
                    let handlers = Handlers {
                        query: Arc::new(QueryHandler::new(engine, probe)),
                        startup: Arc::clone(&startup),
                    };
                    debug!(%peer, "postgres client connected");
                    connections.spawn(async move {
                        if let Err(e) = process_socket(socket, None, handlers).await {
                            debug!(%peer, error = %e, "postgres connection ended");
                        }
                    });
                }
                Err(e) => {
                    failures += 1;
                    if failures >= ACCEPT_FAILURES {
                        return Err(PgError::Accept(e));
                    }
                    warn!(error = %e, "cannot accept a postgres connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(done) = connections.join_next(), if !connections.is_empty() => {
                if let Err(e) = done
                    && e.is_panic()
                {
                    warn!("a postgres connection panicked (this is a bug in Weir): {e}");
                }
            }
        }
    }
}
