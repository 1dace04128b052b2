//! A task's outputs: routes each message along every out-edge according to
//! the edge's kind.

use tokio::sync::mpsc::Sender;

use crate::error::{Error, Result};
use crate::exchange::{ChannelKey, Exchange, RemoteSender};
use arrow::record_batch::RecordBatch;

use crate::graph::{EdgeKind, OutputPort};
use crate::message::Message;
use crate::partition::partition_by_keys;

/// One channel to a downstream subtask: in memory when it runs in this
/// process, over the data plane (connected on first use) when it does not.
pub(crate) enum OutputChannel {
    Local(Sender<Message>),
    Remote {
        exchange: Exchange,
        address: String,
        key: ChannelKey,
        sender: Option<RemoteSender>,
    },
}

impl OutputChannel {
    async fn send(&mut self, message: Message) -> Result<()> {
        match self {
            OutputChannel::Local(sender) => {
                sender.send(message).await.map_err(|_| Error::Cancelled)
            }
            OutputChannel::Remote {
                exchange,
                address,
                key,
                sender,
            } => {
                if sender.is_none() {
                    *sender = Some(exchange.sender(address, key.clone()).await?);
                }
                match sender {
                    Some(remote) => remote.send(message).await,
                    None => Err(Error::internal("remote channel not connected")),
                }
            }
        }
    }
}

/// The channels of one out-edge, indexed by downstream subtask (a forward
/// edge has just the one to the same subtask index).
pub(crate) struct EdgeOutput {
    pub kind: EdgeKind,
    /// Which of the chain's outputs the edge carries.
    pub port: OutputPort,
    pub senders: Vec<OutputChannel>,
    pub max_key_groups: u32,
    pub next_rebalance: usize,
}

impl EdgeOutput {
    async fn send_to(&mut self, index: usize, message: Message) -> Result<()> {
        match self.senders.get_mut(index) {
            Some(channel) => channel.send(message).await,
            None => Err(Error::internal(format!("no output channel {index}"))),
        }
    }

    async fn broadcast(&mut self, message: &Message) -> Result<()> {
        for i in 0..self.senders.len() {
            self.send_to(i, message.clone()).await?;
        }
        Ok(())
    }

    async fn send(&mut self, message: Message) -> Result<()> {
        let batch = match message {
            Message::Data(batch) => batch,
            control => return self.broadcast(&control).await,
        };
        match &self.kind {
            EdgeKind::Forward => self.send_to(0, Message::Data(batch)).await,
            EdgeKind::Broadcast => self.broadcast(&Message::Data(batch)).await,
            EdgeKind::Rebalance => {
                let i = self.next_rebalance % self.senders.len();
                self.next_rebalance = self.next_rebalance.wrapping_add(1);
                self.send_to(i, Message::Data(batch)).await
            }
            EdgeKind::Hash(keys) => {
                let parts =
                    partition_by_keys(&batch, keys, self.max_key_groups, self.senders.len())?;
                for (subtask, part) in parts {
                    self.send_to(subtask, Message::Data(part)).await?;
                }
                Ok(())
            }
        }
    }
}

/// All out-edges of a task.
#[derive(Default)]
pub(crate) struct Outputs {
    pub edges: Vec<EdgeOutput>,
    /// The subtask's own counters (rows out of the whole chain).
    pub counters: Option<std::sync::Arc<crate::metrics::TaskMetrics>>,
}

impl Outputs {
    /// Sends `message` along every edge of the main output; watermarks,
    /// barriers and the end of the stream along every edge.
    pub async fn send(&mut self, message: Message) -> Result<()> {
        match message {
            Message::Data(batch) => self.send_to_port(OutputPort::Main, batch).await,
            control => self.send_along(|_| true, control).await,
        }
    }

    /// Sends `batch` along the edges of output `port`.
    pub async fn send_to_port(&mut self, port: OutputPort, batch: RecordBatch) -> Result<()> {
        if let Some(counters) = &self.counters {
            counters.add_out(batch.num_rows());
        }
        self.send_along(|edge| edge.port == port, Message::Data(batch))
            .await
    }

    async fn send_along(
        &mut self,
        takes: impl Fn(&EdgeOutput) -> bool,
        message: Message,
    ) -> Result<()> {
        let Some(last) = self.edges.iter().rposition(&takes) else {
            return Ok(());
        };
        for (i, edge) in self.edges.iter_mut().enumerate().take(last + 1) {
            if i == last {
                return edge.send(message).await;
            }
            if takes(edge) {
                edge.send(message.clone()).await?;
            }
        }
        Ok(())
    }
}
