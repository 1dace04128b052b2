//! A task's inputs: receives from every upstream channel fairly, combines
//! watermarks as the minimum over live inputs, and aligns checkpoint
//! barriers (an input that delivered barrier `n` is not read again until
//! every live input has delivered it). Each channel belongs to one input of
//! the task's head node (a join has two), and data says which.

use std::future::poll_fn;
use std::task::Poll;

use tokio::sync::mpsc::Receiver;

use crate::message::{CheckpointBarrier, Message, Watermark};

struct Input {
    receiver: Receiver<Message>,
    /// The head node's input this channel feeds.
    input: usize,
    watermark: Watermark,
    finished: bool,
    blocked: bool,
}

/// Merges a task's input channels into one ordered stream of messages.
pub struct InputGate {
    inputs: Vec<Input>,
    next: usize,
    emitted_watermark: Watermark,
    pending_barrier: Option<CheckpointBarrier>,
}

impl InputGate {
    /// A gate over these channels, all of the head node's first input.
    pub fn new(receivers: Vec<Receiver<Message>>) -> Self {
        Self::with_inputs(receivers.into_iter().map(|r| (0, r)).collect())
    }

    /// A gate over these channels, each with the head node's input it feeds.
    pub fn with_inputs(receivers: Vec<(usize, Receiver<Message>)>) -> Self {
        Self {
            inputs: receivers
                .into_iter()
                .map(|(input, receiver)| Input {
                    receiver,
                    input,
                    watermark: Watermark::MIN,
                    finished: false,
                    blocked: false,
                })
                .collect(),
            next: 0,
            emitted_watermark: Watermark::MIN,
            pending_barrier: None,
        }
    }

    /// The combined watermark: the minimum over inputs that have not ended.
    fn combined_watermark(&self) -> Watermark {
        self.inputs
            .iter()
            .filter(|i| !i.finished)
            .map(|i| i.watermark)
            .min()
            .unwrap_or(Watermark::MAX)
    }

    fn advance_watermark(&mut self) -> Option<Message> {
        let combined = self.combined_watermark();
        if combined > self.emitted_watermark && self.inputs.iter().any(|i| !i.finished) {
            self.emitted_watermark = combined;
            return Some(Message::Watermark(combined));
        }
        None
    }

    fn barrier_complete(&mut self) -> Option<Message> {
        let barrier = self.pending_barrier?;
        if self.inputs.iter().all(|i| i.finished || i.blocked) {
            for input in &mut self.inputs {
                input.blocked = false;
            }
            self.pending_barrier = None;
            return Some(Message::Barrier(barrier));
        }
        None
    }

    /// The next message for the task: data, a combined watermark, an aligned
    /// barrier, or `EndOfStream` once every input has ended. A channel closed
    /// without `EndOfStream` counts as ended (its sender failed, which fails the job).
    pub async fn next(&mut self) -> Message {
        self.next_from().await.1
    }

    /// [`InputGate::next`], with the head node's input that data came from
    /// (0 for everything else).
    pub async fn next_from(&mut self) -> (usize, Message) {
        loop {
            if self.inputs.iter().all(|i| i.finished) {
                return (0, Message::EndOfStream);
            }
            let (index, message) = poll_fn(|cx| {
                let n = self.inputs.len();
                for k in 0..n {
                    let i = (self.next + k) % n;
                    let input = &mut self.inputs[i];
                    if input.finished || input.blocked {
                        continue;
                    }
                    if let Poll::Ready(m) = input.receiver.poll_recv(cx) {
                        self.next = (i + 1) % n;
                        return Poll::Ready((i, m));
                    }
                }
                Poll::Pending
            })
            .await;
            match message {
                Some(Message::Data(batch)) => {
                    return (self.inputs[index].input, Message::Data(batch));
                }
                Some(Message::Watermark(w)) => {
                    let input = &mut self.inputs[index];
                    input.watermark = input.watermark.max(w);
                    if let Some(m) = self.advance_watermark() {
                        return (0, m);
                    }
                }
                Some(Message::Barrier(b)) => {
                    self.inputs[index].blocked = true;
                    self.pending_barrier.get_or_insert(b);
                    if let Some(m) = self.barrier_complete() {
                        return (0, m);
                    }
                }
                Some(Message::EndOfStream) | None => {
                    self.inputs[index].finished = true;
                    self.inputs[index].blocked = false;
                    if let Some(m) = self.barrier_complete() {
                        return (0, m);
                    }
                    if let Some(m) = self.advance_watermark() {
                        return (0, m);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::mpsc::channel;

    #[tokio::test]
    async fn watermark_is_the_minimum_of_live_inputs() {
        let (a_tx, a) = channel(8);
        let (b_tx, b) = channel(8);
        let mut gate = InputGate::new(vec![a, b]);
        a_tx.send(Message::Watermark(Watermark(10))).await.unwrap();
        b_tx.send(Message::Watermark(Watermark(5))).await.unwrap();
        assert!(matches!(
            gate.next().await,
            Message::Watermark(Watermark(5))
        ));
        b_tx.send(Message::EndOfStream).await.unwrap();
        assert!(matches!(
            gate.next().await,
            Message::Watermark(Watermark(10))
        ));
        a_tx.send(Message::EndOfStream).await.unwrap();
        assert!(matches!(gate.next().await, Message::EndOfStream));
    }

    #[tokio::test]
    async fn barriers_align_across_inputs() {
        let (a_tx, a) = channel(8);
        let (b_tx, b) = channel(8);
        let mut gate = InputGate::new(vec![a, b]);
        let barrier = CheckpointBarrier {
            id: 1,
            timestamp_ms: 0,
            then_stop: false,
        };
        a_tx.send(Message::Barrier(barrier)).await.unwrap();
        // Sent after the barrier on input a: must wait until b's barrier.
        a_tx.send(Message::Watermark(Watermark(100))).await.unwrap();
        b_tx.send(Message::Watermark(Watermark(50))).await.unwrap();
        b_tx.send(Message::Barrier(barrier)).await.unwrap();
        assert!(matches!(
            gate.next().await,
            Message::Barrier(CheckpointBarrier { id: 1, .. })
        ));
        assert!(matches!(
            gate.next().await,
            Message::Watermark(Watermark(50))
        ));
    }
}
