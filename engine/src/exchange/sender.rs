//! The sending end of a remote channel: one `DoExchange` stream on the
//! shared connection to the peer, paced by the receiver's credit.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use arrow::record_batch::RecordBatch;
use arrow_flight::FlightData;
use arrow_flight::flight_service_client::FlightServiceClient;
use futures::FutureExt;
use tokio::sync::mpsc;
use tonic::transport::Channel;
use tonic::{Status, Streaming};

use super::codec::{BatchEncoder, decode_grant, message_frame, open_frame};
use super::{ChannelKey, Counters, MAX_MESSAGE_BYTES};
use crate::error::{Error, Result};
use crate::message::Message;

/// Frames queued between the sender and the HTTP/2 stream; credit, not this
/// queue, bounds what is in flight.
const REQUEST_QUEUE: usize = 4;
/// How long to wait for the reason of a stream that broke while sending.
const STATUS_GRACE: Duration = Duration::from_secs(1);

/// The sending end of a remote channel.
pub struct RemoteSender {
    // Boxed: the IPC and HTTP/2 state is large, and senders are held in
    // enums next to small local channels.
    stream: Box<SendStream>,
}

/// The state of one sending stream.
struct SendStream {
    address: String,
    channel: ChannelKey,
    /// The request stream; dropped to close it after end of stream.
    frames: Option<mpsc::Sender<FlightData>>,
    /// The response stream: the receiver's credit grants.
    grants: Streaming<FlightData>,
    encoder: BatchEncoder,
    /// Bytes granted and not yet spent; negative after an overdraft.
    credit: i64,
    /// The first grant: the receiver's whole window.
    window: Option<i64>,
    ended: bool,
    counters: Arc<Counters>,
}

impl fmt::Debug for RemoteSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let stream = &self.stream;
        f.debug_struct("RemoteSender")
            .field("address", &stream.address)
            .field("channel", &stream.channel)
            .field("credit", &stream.credit)
            .field("ended", &stream.ended)
            .finish_non_exhaustive()
    }
}

impl RemoteSender {
    /// Opens the channel's stream on `connection` and names the channel.
    pub(super) async fn open(
        connection: Channel,
        address: &str,
        channel: ChannelKey,
        counters: Arc<Counters>,
    ) -> Result<Self> {
        let mut client = FlightServiceClient::new(connection)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let (frames, queued) = mpsc::channel(REQUEST_QUEUE);
        // The receiver answers only once it has read the open frame, so it
        // must be queued before the call.
        frames
            .try_send(open_frame(&channel))
            .map_err(|_| Error::internal("exchange request queue full before the first frame"))?;
        let requests = futures::stream::unfold(queued, |mut queued| async move {
            queued.recv().await.map(|frame| (frame, queued))
        });
        let grants = client
            .do_exchange(requests)
            .await
            .map_err(|status| network(address, &channel, status_text(&status)))?
            .into_inner();
        let stream = SendStream {
            address: address.to_string(),
            channel,
            frames: Some(frames),
            grants,
            encoder: BatchEncoder::new(),
            credit: 0,
            window: None,
            ended: false,
            counters,
        };
        Ok(Self {
            stream: Box::new(stream),
        })
    }

    /// The channel this sender feeds.
    pub fn channel(&self) -> &ChannelKey {
        &self.stream.channel
    }

    /// Sends one message, waiting for credit first when it is a batch.
    pub async fn send(&mut self, message: Message) -> Result<()> {
        self.stream.send(message).await
    }
}

impl SendStream {
    async fn send(&mut self, message: Message) -> Result<()> {
        if self.ended {
            return Err(Error::internal(format!(
                "channel {}: message sent after end of stream",
                self.channel
            )));
        }
        match message {
            Message::Data(batch) => self.send_batch(&batch).await,
            control => {
                let end = matches!(control, Message::EndOfStream);
                if let Some(frame) = message_frame(&control) {
                    self.push(frame).await?;
                }
                if end { self.finish().await } else { Ok(()) }
            }
        }
    }

    async fn send_batch(&mut self, batch: &RecordBatch) -> Result<()> {
        self.wait_for_credit().await?;
        let encoded = self.encoder.encode(batch)?;
        for frame in encoded.frames {
            self.push(frame).await?;
        }
        self.credit = self
            .credit
            .saturating_sub(i64::try_from(encoded.bytes).unwrap_or(i64::MAX));
        let counters = &self.counters;
        Counters::add(&counters.bytes_sent, encoded.bytes);
        Counters::add(&counters.batches_sent, 1);
        Counters::add(&counters.rows_sent, batch.num_rows() as u64);
        let inflight = self.window.unwrap_or(0).saturating_sub(self.credit);
        counters
            .max_inflight_bytes
            .fetch_max(u64::try_from(inflight).unwrap_or(0), Ordering::Relaxed);
        Ok(())
    }

    /// Waits until the receiver has granted some credit. One batch may then
    /// overdraw it, so a batch larger than the window still flows.
    async fn wait_for_credit(&mut self) -> Result<()> {
        // Take the grants already here without waiting, so the response
        // stream never backs up.
        while let Some(next) = self.grants.message().now_or_never() {
            self.on_response(next)?;
        }
        while self.credit <= 0 {
            let next = self.grants.message().await;
            self.on_response(next)?;
        }
        Ok(())
    }

    /// Takes one item of the response stream, which before end of stream
    /// must be a grant.
    fn on_response(&mut self, next: Result<Option<FlightData>, Status>) -> Result<()> {
        match next {
            Ok(Some(frame)) => {
                let bytes = decode_grant(&frame).map_err(|e| self.error(e))?;
                let bytes = i64::try_from(bytes).unwrap_or(i64::MAX);
                if self.window.is_none() {
                    self.window = Some(bytes);
                }
                self.credit = self.credit.saturating_add(bytes);
                Ok(())
            }
            Ok(None) => Err(self.error("the receiver ended the stream before end of stream")),
            Err(status) => Err(self.error(status_text(&status))),
        }
    }

    /// Queues a frame on the request stream.
    async fn push(&mut self, frame: FlightData) -> Result<()> {
        let Some(frames) = &self.frames else {
            return Err(Error::internal(format!(
                "channel {}: request stream already closed",
                self.channel
            )));
        };
        if frames.send(frame).await.is_ok() {
            return Ok(());
        }
        // The call is over; its status says why.
        self.frames = None;
        loop {
            match tokio::time::timeout(STATUS_GRACE, self.grants.message()).await {
                Ok(Ok(Some(_))) => continue,
                Ok(Err(status)) => return Err(self.error(status_text(&status))),
                Ok(Ok(None)) | Err(_) => return Err(self.error("the stream broke")),
            }
        }
    }

    /// After end of stream: closes the request stream and waits until the
    /// receiver has queued everything and ended the response cleanly.
    async fn finish(&mut self) -> Result<()> {
        self.ended = true;
        self.frames = None;
        loop {
            match self.grants.message().await {
                Ok(Some(frame)) => {
                    decode_grant(&frame).map_err(|e| self.error(e))?;
                }
                Ok(None) => return Ok(()),
                Err(status) => return Err(self.error(status_text(&status))),
            }
        }
    }

    fn error(&self, what: impl fmt::Display) -> Error {
        network(&self.address, &self.channel, what)
    }
}

fn network(address: &str, channel: &ChannelKey, what: impl fmt::Display) -> Error {
    Error::network(address, format!("channel {channel}: {what}"))
}

fn status_text(status: &Status) -> String {
    format!("{:?}: {}", status.code(), status.message())
}
