//! The receiving side: an Arrow Flight service whose `DoExchange` streams
//! each carry one channel into the receiving task's bounded queue.
//!
//! The response stream carries the credit grants. It is also what drives
//! the reading: each poll reads frames until one more grant is due, so a
//! full queue stops the reading and, through credit, the sender.

use std::sync::atomic::Ordering;

use arrow_flight::flight_service_server::FlightService;
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightInfo,
    HandshakeRequest, HandshakeResponse, PollInfo, PutResult, SchemaResult, Ticket,
};
use futures::StreamExt;
use futures::stream::BoxStream;
use tokio::sync::mpsc;
use tonic::transport::Server;
use tonic::{Request, Response, Status, Streaming};

use super::codec::{FrameDecoder, decode_open, grant_frame, ipc_size};
use super::{ChannelKey, Counters, Exchange, HTTP2_CONNECTION_WINDOW, HTTP2_STREAM_WINDOW};
use crate::message::Message;

/// A gRPC server tuned for the data plane (HTTP/2 windows large enough that
/// credit, not HTTP/2, paces the channels). Add [`Exchange::flight_service`]
/// to it, next to any other service of the process.
pub fn server_builder() -> Server {
    Server::builder()
        .initial_stream_window_size(HTTP2_STREAM_WINDOW)
        .initial_connection_window_size(HTTP2_CONNECTION_WINDOW)
        .tcp_nodelay(true)
}

/// The Arrow Flight service receiving channels from peers.
pub struct ExchangeService {
    exchange: Exchange,
}

impl ExchangeService {
    pub(super) fn new(exchange: Exchange) -> Self {
        Self { exchange }
    }
}

type FlightStream<T> = BoxStream<'static, Result<T, Status>>;

#[tonic::async_trait]
impl FlightService for ExchangeService {
    type HandshakeStream = FlightStream<HandshakeResponse>;
    type ListFlightsStream = FlightStream<FlightInfo>;
    type DoGetStream = FlightStream<FlightData>;
    type DoPutStream = FlightStream<PutResult>;
    type DoExchangeStream = FlightStream<FlightData>;
    type DoActionStream = FlightStream<arrow_flight::Result>;
    type ListActionsStream = FlightStream<ActionType>;

    async fn do_exchange(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        let peer = request
            .remote_addr()
            .map_or_else(|| "unknown peer".to_string(), |addr| addr.to_string());
        let mut frames = request.into_inner();
        let first = frames.message().await?.ok_or_else(|| {
            Status::invalid_argument(
                "malformed frame: expected the channel's open message, the stream ended",
            )
        })?;
        let channel = decode_open(&first).ok_or_else(|| {
            Status::invalid_argument(
                "malformed frame: expected the channel's open message as the first frame",
            )
        })?;
        let sender = self.exchange.take_sender(&channel).ok_or_else(|| {
            Status::invalid_argument(format!(
                "channel {channel} is already open (duplicate open from {peer})"
            ))
        })?;
        tracing::debug!(%channel, %peer, "exchange channel opened");
        let receiving = Receiving {
            exchange: self.exchange.clone(),
            channel,
            peer,
            frames,
            sender: Some(sender),
            decoder: FrameDecoder::default(),
            state: State::Opened,
        };
        let grants = futures::stream::unfold(receiving, |mut receiving| async move {
            let item = receiving.next_grant().await?;
            Some((item, receiving))
        });
        Ok(Response::new(grants.boxed()))
    }

    async fn handshake(
        &self,
        _request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        Err(unsupported("Handshake"))
    }

    async fn list_flights(
        &self,
        _request: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        Err(unsupported("ListFlights"))
    }

    async fn get_flight_info(
        &self,
        _request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        Err(unsupported("GetFlightInfo"))
    }

    async fn poll_flight_info(
        &self,
        _request: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        Err(unsupported("PollFlightInfo"))
    }

    async fn get_schema(
        &self,
        _request: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        Err(unsupported("GetSchema"))
    }

    async fn do_get(
        &self,
        _request: Request<Ticket>,
    ) -> Result<Response<Self::DoGetStream>, Status> {
        Err(unsupported("DoGet"))
    }

    async fn do_put(
        &self,
        _request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        Err(unsupported("DoPut"))
    }

    async fn do_action(
        &self,
        _request: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        Err(unsupported("DoAction"))
    }

    async fn list_actions(
        &self,
        _request: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        Err(unsupported("ListActions"))
    }
}

fn unsupported(method: &str) -> Status {
    Status::unimplemented(format!(
        "{method}: Weir's data plane serves only DoExchange"
    ))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// The initial grant is not sent yet.
    Opened,
    /// Forwarding messages.
    Running,
    /// End of stream forwarded, or the stream failed.
    Done,
}

/// One open stream being forwarded into its channel's queue.
struct Receiving {
    exchange: Exchange,
    channel: ChannelKey,
    peer: String,
    frames: Streaming<FlightData>,
    /// The queue of the receiving task; `None` once done.
    sender: Option<mpsc::Sender<Message>>,
    decoder: FrameDecoder,
    state: State,
}

impl Receiving {
    /// Forwards messages until a grant is due; `None` ends the response
    /// stream (cleanly after end of stream).
    async fn next_grant(&mut self) -> Option<Result<FlightData, Status>> {
        match self.state {
            State::Opened => {
                self.state = State::Running;
                return Some(Ok(grant_frame(self.exchange.credit_bytes())));
            }
            State::Running => {}
            State::Done => return None,
        }
        loop {
            let frame = match self.frames.message().await {
                Ok(Some(frame)) => frame,
                Ok(None) => {
                    let message = "the sender's stream ended before end of stream";
                    self.fail(message);
                    return Some(Err(Status::aborted(message)));
                }
                Err(status) => {
                    self.fail(&format!(
                        "the stream broke before end of stream: {:?}: {}",
                        status.code(),
                        status.message()
                    ));
                    return Some(Err(Status::aborted("the stream broke")));
                }
            };
            let counters: &Counters = self.exchange.counters();
            Counters::add(&counters.bytes_received, ipc_size(&frame));
            let decoded = match self.decoder.decode(frame) {
                Ok(Some(decoded)) => decoded,
                Ok(None) => continue,
                Err(what) => {
                    let message = format!("malformed frame on channel {}: {what}", self.channel);
                    self.fail(&message);
                    return Some(Err(Status::invalid_argument(message)));
                }
            };
            let is_batch = matches!(decoded.message, Message::Data(_));
            let is_end = matches!(decoded.message, Message::EndOfStream);
            let sender = self.sender.as_ref()?;
            // Waiting here while the queue is full is the backpressure.
            if sender.send(decoded.message).await.is_err() {
                // The receiving task is gone (it failed or was cancelled and
                // knows why); nothing to keep open.
                self.state = State::Done;
                self.sender = None;
                return Some(Err(Status::aborted(format!(
                    "the receiving task of channel {} is gone",
                    self.channel
                ))));
            }
            if is_batch {
                counters.batches_received.fetch_add(1, Ordering::Relaxed);
            }
            if is_end {
                tracing::debug!(channel = %self.channel, "exchange channel ended");
                self.state = State::Done;
                self.sender = None;
                return None;
            }
            if decoded.bytes > 0 {
                return Some(Ok(grant_frame(decoded.bytes)));
            }
        }
    }

    /// The stream broke before end of stream: report it, and keep the queue
    /// open so the receiving task does not mistake this for a clean end.
    fn fail(&mut self, message: &str) {
        self.state = State::Done;
        let Some(sender) = self.sender.take() else {
            return;
        };
        if self.exchange.park(&self.channel, sender) {
            self.exchange
                .report(&self.channel, format!("{message} (peer {})", self.peer));
        }
    }
}

impl Drop for Receiving {
    fn drop(&mut self) {
        if self.state != State::Done {
            self.fail("the stream was cancelled before end of stream");
        }
    }
}
