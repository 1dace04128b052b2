//! The data plane between worker processes: dataflow channels whose two ends
//! live in different processes travel over Arrow Flight `DoExchange`.
//!
//! ```text
//!  worker A                                        worker B
//!  task ─> RemoteSender ══ DoExchange stream ══> ExchangeService ─> mpsc ─> InputGate
//!            ▲  (one HTTP/2 connection per peer,          │
//!            └── CreditGrant (bytes) ◄────────────────────┘  all channels multiplexed)
//! ```
//! * One stream per channel ([`ChannelKey`]); the first frame names the
//!   channel (`StreamMessage::open` in `app_metadata`). Record batches are
//!   Arrow IPC (schema and dictionaries sent once per stream, as IPC does);
//!   watermarks, barriers and end of stream ride in `app_metadata` of
//!   body-less frames, in order with the batches.
//! * Credit-based flow control: the receiver grants credit in bytes (the
//!   configured window up front, then the size of each message once it has
//!   been handed to the receiving task's bounded queue). A sender with no
//!   credit waits, so a slow consumer backpressures its producers without
//!   unbounded buffering anywhere.
//! * A stream that breaks before end of stream is reported on the failure
//!   channel (see [`Exchange::new`]); the receiving queue is kept open (never
//!   closed early, which would look like a clean end) until the job is released.
//!
//! * A channel's slot (its queue) is created by whichever end comes first
//!   and lives until [`Exchange::release_job`]; a second stream opening the
//!   same channel is refused.
//!
//! The pieces: [`Exchange`] (the registry of channels and peer connections,
//! in this file), [`RemoteSender`] (`sender.rs`), [`ExchangeService`] and
//! [`server_builder`] (`service.rs`) and the framing both share (`codec.rs`).

mod codec;
mod sender;
mod service;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use arrow_flight::flight_service_server::FlightServiceServer;
use tokio::sync::mpsc;
use tonic::transport::{Channel, Endpoint};

use crate::error::{Error, Result};
use crate::message::Message;

pub use sender::RemoteSender;
pub use service::{ExchangeService, server_builder};

/// Largest gRPC message either side accepts or sends: one record batch
/// travels as one message.
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024 * 1024;
/// HTTP/2 flow-control window of one stream; larger than the default credit
/// window so that credit, not HTTP/2, paces a channel.
pub const HTTP2_STREAM_WINDOW: u32 = 8 * 1024 * 1024;
/// HTTP/2 flow-control window of a connection, shared by all its streams.
pub const HTTP2_CONNECTION_WINDOW: u32 = 32 * 1024 * 1024;
/// How often an idle connection to a peer is pinged, so a dead peer is noticed.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// How long a ping may go unanswered before the connection counts as broken.
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// Identifies one dataflow channel of a job.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelKey {
    /// The job.
    pub job_id: String,
    /// Index of the edge in the physical graph's edge list.
    pub edge: u32,
    /// Upstream subtask.
    pub from_subtask: u32,
    /// Downstream subtask.
    pub to_subtask: u32,
}

impl fmt::Display for ChannelKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}/{}->{}",
            self.job_id, self.edge, self.from_subtask, self.to_subtask
        )
    }
}

/// Settings of the data plane.
#[derive(Debug, Clone)]
pub struct ExchangeConfig {
    /// Credit window per channel, in bytes: how much a sender may have in
    /// flight before the receiver has taken it.
    pub credit_bytes: u64,
    /// Messages queued per channel at the receiving task.
    pub channel_capacity: usize,
    /// How long to try to connect to a peer before giving up.
    pub connect_timeout: Duration,
}

impl Default for ExchangeConfig {
    fn default() -> Self {
        Self {
            credit_bytes: 2 * 1024 * 1024,
            channel_capacity: 8,
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// A channel that broke: reported so the worker fails the job.
#[derive(Debug, Clone)]
pub struct ExchangeFailure {
    /// The channel.
    pub channel: ChannelKey,
    /// What happened (names the peer address when known).
    pub message: String,
}

/// Counters of the data plane, for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExchangeStats {
    /// Bytes of Arrow IPC sent.
    pub bytes_sent: u64,
    /// Bytes of Arrow IPC received.
    pub bytes_received: u64,
    /// Record batches sent.
    pub batches_sent: u64,
    /// Rows sent.
    pub rows_sent: u64,
    /// The largest number of bytes any one channel had in flight (sent,
    /// not yet granted back) — bounded by the credit window plus one batch.
    pub max_inflight_bytes: u64,
    /// Record batches received and handed to receiving tasks.
    pub batches_received: u64,
}

/// The live counters behind [`ExchangeStats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub bytes_sent: AtomicU64,
    pub bytes_received: AtomicU64,
    pub batches_sent: AtomicU64,
    pub rows_sent: AtomicU64,
    pub max_inflight_bytes: AtomicU64,
    pub batches_received: AtomicU64,
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    fn snapshot(&self) -> ExchangeStats {
        ExchangeStats {
            bytes_sent: self.bytes_sent.load(Ordering::Relaxed),
            bytes_received: self.bytes_received.load(Ordering::Relaxed),
            batches_sent: self.batches_sent.load(Ordering::Relaxed),
            rows_sent: self.rows_sent.load(Ordering::Relaxed),
            max_inflight_bytes: self.max_inflight_bytes.load(Ordering::Relaxed),
            batches_received: self.batches_received.load(Ordering::Relaxed),
        }
    }
}

/// Where a channel's two ends meet: created by whichever side comes first.
struct Slot {
    /// Taken by the Flight handler when the remote sender opens the stream.
    sender: Option<mpsc::Sender<Message>>,
    /// Taken by the receiving task.
    receiver: Option<mpsc::Receiver<Message>>,
    /// Senders of broken streams, kept so the receiving queue never closes
    /// (which would look like a clean end) before the job is released.
    parked: Vec<mpsc::Sender<Message>>,
}

impl Slot {
    fn new(capacity: usize) -> Self {
        let (sender, receiver) = mpsc::channel(capacity.max(1));
        Self {
            sender: Some(sender),
            receiver: Some(receiver),
            parked: Vec::new(),
        }
    }
}

struct Inner {
    config: ExchangeConfig,
    slots: Mutex<HashMap<ChannelKey, Slot>>,
    /// One HTTP/2 connection per peer address, shared by all its streams.
    peers: Mutex<HashMap<String, Channel>>,
    failures: mpsc::UnboundedSender<ExchangeFailure>,
    counters: Arc<Counters>,
}

/// Locks a mutex whose data stays consistent even if a holder panicked
/// (every critical section here is a single map operation).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// This process's end of the data plane. Cheap to clone.
#[derive(Clone)]
pub struct Exchange {
    inner: Arc<Inner>,
}

impl fmt::Debug for Exchange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Exchange")
            .field("config", &self.inner.config)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Exchange {
    /// A data plane with these settings, and where broken channels are reported.
    pub fn new(config: ExchangeConfig) -> (Self, mpsc::UnboundedReceiver<ExchangeFailure>) {
        let (failures, failures_rx) = mpsc::unbounded_channel();
        let inner = Inner {
            config,
            slots: Mutex::new(HashMap::new()),
            peers: Mutex::new(HashMap::new()),
            failures,
            counters: Arc::new(Counters::default()),
        };
        (
            Self {
                inner: Arc::new(inner),
            },
            failures_rx,
        )
    }

    /// The Flight service to serve on this process's gRPC server (see
    /// [`server_builder`] for a server tuned for it).
    pub fn flight_service(&self) -> FlightServiceServer<ExchangeService> {
        FlightServiceServer::new(ExchangeService::new(self.clone()))
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }

    /// The receiving task's end of a channel whose sender is remote. May be
    /// called before or after the sender connects.
    pub fn receiver(&self, channel: &ChannelKey) -> mpsc::Receiver<Message> {
        let mut slots = lock(&self.inner.slots);
        let slot = slots
            .entry(channel.clone())
            .or_insert_with(|| Slot::new(self.inner.config.channel_capacity));
        if let Some(receiver) = slot.receiver.take() {
            return receiver;
        }
        // A second receiving task for one channel is a bug in the caller:
        // fail the job, and hand out a queue that never ends by itself.
        let (sender, receiver) = mpsc::channel(1);
        slot.parked.push(sender);
        drop(slots);
        self.report(
            channel,
            "internal error: the channel's receiver was requested twice".into(),
        );
        receiver
    }

    /// Opens the sending end of a channel to the peer serving the data plane
    /// at `address` (`host:port`). Reuses the one connection to that peer.
    pub async fn sender(&self, address: &str, channel: ChannelKey) -> Result<RemoteSender> {
        let connection = self.connection(address)?;
        RemoteSender::open(
            connection,
            address,
            channel,
            Arc::clone(&self.inner.counters),
        )
        .await
    }

    /// Forgets a job's channels (after it ended or was cancelled).
    pub fn release_job(&self, job_id: &str) {
        lock(&self.inner.slots).retain(|channel, _| channel.job_id != job_id);
    }

    /// Counters so far.
    pub fn stats(&self) -> ExchangeStats {
        self.inner.counters.snapshot()
    }

    /// How many peers this process holds a connection to (one each).
    pub fn peer_connections(&self) -> usize {
        lock(&self.inner.peers).len()
    }

    /// Drops the connection to a peer (e.g. a worker that is gone for good);
    /// streams still open on it keep it until they end.
    pub fn forget_peer(&self, address: &str) {
        lock(&self.inner.peers).remove(address);
    }

    /// The shared connection to `address`, created on first use. It connects
    /// lazily (on the first stream) and reconnects after a failure.
    fn connection(&self, address: &str) -> Result<Channel> {
        let mut peers = lock(&self.inner.peers);
        if let Some(channel) = peers.get(address) {
            return Ok(channel.clone());
        }
        let endpoint = Endpoint::from_shared(format!("http://{address}"))
            .map_err(|e| Error::network(address, format!("bad data plane address: {e}")))?
            .connect_timeout(self.inner.config.connect_timeout)
            .tcp_nodelay(true)
            .initial_stream_window_size(HTTP2_STREAM_WINDOW)
            .initial_connection_window_size(HTTP2_CONNECTION_WINDOW)
            .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT);
        let channel = endpoint.connect_lazy();
        peers.insert(address.to_string(), channel.clone());
        Ok(channel)
    }

    /// The credit a receiver grants up front.
    fn credit_bytes(&self) -> u64 {
        self.inner.config.credit_bytes
    }

    fn counters(&self) -> &Counters {
        &self.inner.counters
    }

    /// Takes the sending half of a channel's queue for a stream that just
    /// opened; `None` if another stream already took it.
    fn take_sender(&self, channel: &ChannelKey) -> Option<mpsc::Sender<Message>> {
        lock(&self.inner.slots)
            .entry(channel.clone())
            .or_insert_with(|| Slot::new(self.inner.config.channel_capacity))
            .sender
            .take()
    }

    /// Keeps the sender of a broken stream so the receiving queue stays open.
    /// Returns false when the job was released meanwhile (nobody to tell).
    fn park(&self, channel: &ChannelKey, sender: mpsc::Sender<Message>) -> bool {
        match lock(&self.inner.slots).get_mut(channel) {
            Some(slot) => {
                slot.parked.push(sender);
                true
            }
            None => false,
        }
    }

    /// Reports a broken channel.
    fn report(&self, channel: &ChannelKey, message: String) {
        tracing::warn!(%channel, %message, "exchange channel failed");
        // Nobody listening means the worker is shutting down: nothing to fail.
        let _ = self.inner.failures.send(ExchangeFailure {
            channel: channel.clone(),
            message,
        });
    }
}
