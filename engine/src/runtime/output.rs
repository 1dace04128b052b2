//! A task's outputs: routes each message along every out-edge according to
//! the edge's kind.

use tokio::sync::mpsc::Sender;

use crate::error::{Error, Result};
use crate::graph::EdgeKind;
use crate::message::Message;
use crate::partition::partition_by_keys;

/// The channels of one out-edge, indexed by downstream subtask (a forward
/// edge has just the one to the same subtask index).
pub(crate) struct EdgeOutput {
    pub kind: EdgeKind,
    pub senders: Vec<Sender<Message>>,
    pub max_key_groups: u32,
    pub next_rebalance: usize,
}

impl EdgeOutput {
    async fn send_to(&self, index: usize, message: Message) -> Result<()> {
        self.senders[index]
            .send(message)
            .await
            .map_err(|_| Error::Cancelled)
    }

    async fn broadcast(&self, message: &Message) -> Result<()> {
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
}

impl Outputs {
    pub async fn send(&mut self, message: Message) -> Result<()> {
        let n = self.edges.len();
        for (i, edge) in self.edges.iter_mut().enumerate() {
            if i + 1 == n {
                return edge.send(message).await;
            }
            edge.send(message.clone()).await?;
        }
        Ok(())
    }
}
