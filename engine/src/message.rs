//! What flows on an edge of the dataflow graph.

use std::fmt;

use arrow::record_batch::RecordBatch;

/// A checkpoint's id, increasing by one per checkpoint of a job.
pub type CheckpointId = u64;

/// An event-time watermark in milliseconds since the Unix epoch: the sender
/// promises that no later record will carry a timestamp at or below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Watermark(pub i64);

impl Watermark {
    /// The watermark before any record has been seen.
    pub const MIN: Watermark = Watermark(i64::MIN);
    /// The watermark a bounded input sends when it is exhausted: every window fires.
    pub const MAX: Watermark = Watermark(i64::MAX);

    /// The watermark as milliseconds.
    pub fn millis(self) -> i64 {
        self.0
    }
}

impl fmt::Display for Watermark {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Watermark::MIN => write!(f, "-inf"),
            Watermark::MAX => write!(f, "+inf"),
            Watermark(ms) => write!(f, "{ms}ms"),
        }
    }
}

/// A checkpoint barrier: injected at the sources, aligned across the inputs of
/// every task, and forwarded after the task's operators have snapshotted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointBarrier {
    /// The checkpoint this barrier belongs to.
    pub id: CheckpointId,
    /// When the checkpoint was triggered, in milliseconds since the epoch.
    pub timestamp_ms: i64,
    /// Whether the job stops after this checkpoint (a savepoint with stop).
    pub then_stop: bool,
}

/// A message on a dataflow edge. Messages on one channel arrive in order.
#[derive(Debug, Clone)]
pub enum Message {
    /// A batch of rows.
    Data(RecordBatch),
    /// Event time advanced.
    Watermark(Watermark),
    /// A checkpoint barrier.
    Barrier(CheckpointBarrier),
    /// The sender will send nothing more.
    EndOfStream,
}

/// The kind of change a row of an updating stream carries, as Flink's `RowKind`.
///
/// Append-only streams carry only inserts and leave the column out. Updating
/// streams (joins, changelog aggregates) carry a `UInt8` column named
/// [`ROW_KIND_COLUMN`] holding these values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum RowKind {
    /// `+I`: a new row.
    Insert = 0,
    /// `-U`: the previous version of an updated row.
    UpdateBefore = 1,
    /// `+U`: the new version of an updated row.
    UpdateAfter = 2,
    /// `-D`: a retracted row.
    Delete = 3,
}

/// The name of the column that carries [`RowKind`] in updating streams.
pub const ROW_KIND_COLUMN: &str = "_weir_row_kind";

impl RowKind {
    /// Flink's short string for the kind (`+I`, `-U`, `+U`, `-D`).
    pub fn short_string(self) -> &'static str {
        match self {
            RowKind::Insert => "+I",
            RowKind::UpdateBefore => "-U",
            RowKind::UpdateAfter => "+U",
            RowKind::Delete => "-D",
        }
    }

    /// Decodes the column value; `None` for an unknown code.
    pub fn from_code(code: u8) -> Option<RowKind> {
        match code {
            0 => Some(RowKind::Insert),
            1 => Some(RowKind::UpdateBefore),
            2 => Some(RowKind::UpdateAfter),
            3 => Some(RowKind::Delete),
            _ => None,
        }
    }
}
