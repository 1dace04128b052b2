//! A query job's rows as a stream of `DataRow`s for the client.
//!
//! The stream owns the job: when it is dropped — the client read the last
//! row, went away, or the connection broke — a job still running is
//! cancelled, so an abandoned query does not keep running on the cluster.
//! (A `SELECT … LIMIT n` over an unbounded source ends by itself: the job
//! stops once its limit is reached.) While a query is quiet, a probe on the
//! socket notices a client that hung up.

use std::io::ErrorKind;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::record_batch::RecordBatch;
use futures::Stream;
use futures::stream::{self, StreamExt};
use pgwire::api::results::FieldInfo;
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::data::DataRow;
use tokio::sync::mpsc;
use tracing::debug;
use weir_engine::changelog::Materialized;

use super::encode::{encode_batch, user_error};
use crate::RunningJob;

/// How often a quiet query looks whether its client is still there.
const PROBE_INTERVAL: Duration = Duration::from_millis(250);

/// A second handle on a connection's socket, to see whether the client hung
/// up while the protocol is busy streaming (nothing reads the socket then).
#[derive(Debug)]
pub(crate) struct Probe(std::net::TcpStream);

impl Probe {
    /// A probe sharing `socket` (which stays usable).
    pub(crate) fn new(socket: &std::net::TcpStream) -> Option<Self> {
        socket.try_clone().ok().map(Probe)
    }

    /// True when the client closed the connection or sent `Terminate`.
    pub(crate) fn client_gone(&self) -> bool {
        let mut buf = [0u8; 1024];
        match self.0.peek(&mut buf) {
            Ok(0) => true,
            Ok(n) => {
                // Messages the client sent meanwhile: look for a Terminate.
                let mut i = 0;
                while i + 5 <= n {
                    if buf[i] == b'X' {
                        return true;
                    }
                    let len = i32::from_be_bytes([buf[i + 1], buf[i + 2], buf[i + 3], buf[i + 4]]);
                    i += 1 + len.max(4) as usize;
                }
                false
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted => {
                false
            }
            Err(_) => true,
        }
    }
}

/// The job of a query while its rows are read; cancelled if still running
/// when dropped.
struct JobGuard(Option<RunningJob>);

impl Drop for JobGuard {
    fn drop(&mut self) {
        if let Some(job) = self.0.take()
            && !job.is_finished()
            && tokio::runtime::Handle::try_current().is_ok()
        {
            debug!(
                job = job.name(),
                "the client is done with the query; cancelling its job"
            );
            job.cancel();
        }
    }
}

struct State {
    rows: mpsc::Receiver<RecordBatch>,
    /// An updating result's state: psql shows a table, not changes, so the
    /// changes are applied and the final rows sent when the job ends.
    changes: Option<Materialized>,
    job: JobGuard,
    fields: Arc<Vec<FieldInfo>>,
    probe: Option<Arc<Probe>>,
    probed: Instant,
}

/// The rows of a running query job; `updating` when they are changes.
pub(crate) fn job_rows(
    job: RunningJob,
    rows: mpsc::Receiver<RecordBatch>,
    updating: bool,
    fields: Arc<Vec<FieldInfo>>,
    probe: Option<Arc<Probe>>,
) -> impl Stream<Item = PgWireResult<DataRow>> + Send + 'static {
    let state = State {
        rows,
        changes: updating.then(Materialized::new),
        job: JobGuard(Some(job)),
        fields,
        probe,
        probed: Instant::now(),
    };
    stream::unfold(Some(state), |state| async move {
        let mut state = state?;
        match next_rows(&mut state).await {
            Ok(Some(rows)) => Some((Ok(rows), Some(state))),
            Ok(None) => None,
            // The state (and so the job) goes with the error.
            Err(e) => Some((Err(e), None)),
        }
    })
    .flat_map(|chunk: PgWireResult<Vec<DataRow>>| match chunk {
        Ok(rows) => stream::iter(rows.into_iter().map(Ok).collect::<Vec<_>>()),
        Err(e) => stream::iter(vec![Err(e)]),
    })
}

/// The rows of the next batch; `None` at the end.
async fn next_rows(state: &mut State) -> PgWireResult<Option<Vec<DataRow>>> {
    loop {
        let due = PROBE_INTERVAL.saturating_sub(state.probed.elapsed());
        let next = tokio::select! {
            batch = state.rows.recv() => Some(batch),
            _ = tokio::time::sleep(due) => None,
        };
        if state.probed.elapsed() >= PROBE_INTERVAL {
            state.probed = Instant::now();
            if state.probe.as_ref().is_some_and(|p| p.client_gone()) {
                return Err(PgWireError::IoError(std::io::Error::new(
                    ErrorKind::ConnectionAborted,
                    "the client went away during the query",
                )));
            }
        }
        match next {
            None => continue,
            Some(Some(batch)) => {
                if batch.num_rows() == 0 {
                    continue;
                }
                if let Some(changes) = &mut state.changes {
                    changes
                        .apply(&batch)
                        .map_err(|e| user_error("XX000", e.to_string()))?;
                    continue;
                }
                return encode_batch(&batch, &state.fields, batch.num_rows()).map(Some);
            }
            Some(None) => {
                // The job ended: tell the client if it failed.
                if let Some(job) = state.job.0.take()
                    && let Err(e) = job.wait().await
                {
                    return Err(user_error("XX000", format!("the query's job failed: {e}")));
                }
                let Some(changes) = state.changes.take() else {
                    return Ok(None);
                };
                return match changes.finish() {
                    Ok(Some(batch)) => {
                        encode_batch(&batch, &state.fields, batch.num_rows()).map(Some)
                    }
                    Ok(None) => Ok(None),
                    Err(e) => Err(user_error("XX000", e.to_string())),
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_closed_peer_is_noticed() {
        use std::io::Write;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        server.set_nonblocking(true).unwrap();
        let probe = Probe::new(&server).unwrap();
        assert!(!probe.client_gone());
        // Seen within a deadline, not after a fixed sleep.
        let eventually = |what: &dyn Fn() -> bool| {
            let deadline = Instant::now() + Duration::from_secs(5);
            while !what() {
                assert!(Instant::now() < deadline, "not within 5s");
                std::thread::yield_now();
            }
        };
        // A Sync ('S', length 4) is not a goodbye; a Terminate is.
        client.write_all(&[b'S', 0, 0, 0, 4]).unwrap();
        eventually(&|| server.peek(&mut [0u8; 8]).is_ok_and(|n| n == 5));
        assert!(!probe.client_gone());
        client.write_all(&[b'X', 0, 0, 0, 4]).unwrap();
        eventually(&|| probe.client_gone());
        drop(client);
        eventually(&|| probe.client_gone());
    }
}
