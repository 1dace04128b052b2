//! The runtime's side of checkpointing: barriers injected at the sources on
//! request, snapshots reported as tasks align them, and completion
//! notifications passed to every task (for two-phase-commit sinks).
//!
//! The runtime does not store anything. A task's snapshot goes out as a
//! [`CheckpointEvent`]; whoever deployed the job (a worker) writes it to the
//! state backend, and tells the job when the checkpoint completed everywhere.
//!
//! With checkpointing on, a source that runs out of input (or is stopped)
//! sends the end-of-input watermark, reports [`CheckpointEvent::SourceExhausted`]
//! and keeps answering barriers; it ends after the *final* barrier
//! (`then_stop`). Every task then waits for that checkpoint to complete
//! before it closes, so a sink never publishes output that a restore would
//! produce again.

use std::collections::HashMap;

use tokio::sync::{mpsc, watch};

use crate::message::{CheckpointBarrier, CheckpointId};
use crate::operator::{OperatorRestore, OperatorSnapshot};

/// What a task reports about checkpoints.
#[derive(Debug)]
pub enum CheckpointEvent {
    /// The task aligned a barrier, snapshotted its operators and forwarded it.
    Snapshot(TaskSnapshot),
    /// A source subtask has no more input and waits for the final checkpoint.
    SourceExhausted {
        /// The source's vertex.
        vertex: usize,
        /// The subtask.
        subtask: usize,
    },
}

/// One task's part of a checkpoint.
#[derive(Debug)]
pub struct TaskSnapshot {
    /// The task's vertex.
    pub vertex: usize,
    /// The subtask.
    pub subtask: usize,
    /// The checkpoint.
    pub checkpoint: CheckpointId,
    /// Per logical node of the chain (source included): its state.
    pub operators: Vec<(usize, OperatorSnapshot)>,
    /// Rows the task's source had read when the barrier left it (0 when
    /// the chain has no source), in this attempt.
    pub rows_read: u64,
    /// Rows the task's sink had written when the barrier reached it (0
    /// when the chain has no sink), in this attempt.
    pub rows_written: u64,
}

/// Checkpointing settings of a deployment.
#[derive(Debug, Default, Clone)]
pub struct CheckpointSetup {
    /// State to restore, by (logical node, subtask); nodes missing start empty.
    pub restore: HashMap<(usize, usize), OperatorRestore>,
    /// The checkpoint restored (0: none): spilled state copied from it
    /// carries epochs below it.
    pub restored_from: CheckpointId,
}

/// A task's checkpoint channels.
pub(crate) struct TaskCheckpointing {
    /// Barriers to inject (sources only).
    pub triggers: Option<mpsc::UnboundedReceiver<CheckpointBarrier>>,
    /// The latest checkpoint that completed.
    pub completed: watch::Receiver<CheckpointId>,
    /// Where snapshots are reported.
    pub events: mpsc::UnboundedSender<CheckpointEvent>,
    /// The last barrier this task forwarded.
    pub last_barrier: Option<CheckpointId>,
    /// True once the final barrier (`then_stop`) went through: only then
    /// may the task close and its operators flush.
    pub final_barrier_seen: bool,
}
