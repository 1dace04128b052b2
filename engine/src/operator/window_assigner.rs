//! Window assignment: the `TUMBLE`, `HOP`, `CUMULATE` and `SESSION` table
//! functions.
//!
//! Appends `window_start`, `window_end` and `window_time` (the window's
//! last millisecond, `window_end - 1`, as in Flink) to every row. A hopping window of
//! size `n × slide` repeats each row `n` times, once per window it falls in.
//! A cumulating window of size `n × step` repeats each row once per
//! cumulative window of its size-aligned period that ends after it: a row
//! in the period's first step is in all `n`, one in its last step in one.
//! For sessions each row gets its own `[ts, ts + gap)` window; the session
//! aggregate merges overlapping ones.

use std::fmt;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BooleanArray, Int64Array};
use arrow::compute::filter_record_batch;
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;

use super::{Collector, Operator, OperatorContext};
use crate::error::{Error, Result};
use crate::time::{from_epoch_millis, to_epoch_millis};

/// The kind of event-time window, with its sizes in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowKind {
    /// Fixed, non-overlapping windows.
    Tumble {
        /// Window length.
        size_ms: i64,
    },
    /// Fixed windows of `size_ms` starting every `slide_ms`.
    Hop {
        /// Distance between window starts.
        slide_ms: i64,
        /// Window length.
        size_ms: i64,
    },
    /// Windows `[start, start + k × step_ms)` for `k` in `1..=size_ms /
    /// step_ms`, with `start` aligned to `size_ms` (Flink's `CUMULATE`).
    Cumulate {
        /// Growth of the window between firings.
        step_ms: i64,
        /// Length of the largest window; a multiple of `step_ms`.
        size_ms: i64,
    },
    /// Windows per key that close after `gap_ms` without events.
    Session {
        /// Inactivity gap.
        gap_ms: i64,
    },
}

impl WindowKind {
    /// Checks the sizes.
    pub fn validate(&self) -> Result<()> {
        let ok = match *self {
            WindowKind::Tumble { size_ms } => size_ms > 0,
            WindowKind::Hop { slide_ms, size_ms } => slide_ms > 0 && size_ms > 0,
            WindowKind::Cumulate { step_ms, size_ms } => {
                if step_ms > 0 && size_ms > 0 && size_ms % step_ms != 0 {
                    return Err(Error::Config(format!(
                        "the size of a CUMULATE window must be a multiple of its step: {self}"
                    )));
                }
                step_ms > 0 && size_ms > 0
            }
            WindowKind::Session { gap_ms } => gap_ms > 0,
        };
        if ok {
            Ok(())
        } else {
            Err(Error::Config(format!(
                "window sizes must be positive: {self}"
            )))
        }
    }

    /// The longest a window of this kind lasts from its start (a
    /// session's gap: sessions grow from there).
    pub fn size_ms(&self) -> i64 {
        match *self {
            WindowKind::Tumble { size_ms }
            | WindowKind::Hop { size_ms, .. }
            | WindowKind::Cumulate { size_ms, .. } => size_ms,
            WindowKind::Session { gap_ms } => gap_ms,
        }
    }
}

impl fmt::Display for WindowKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WindowKind::Tumble { size_ms } => write!(f, "TUMBLE(size={size_ms}ms)"),
            WindowKind::Hop { slide_ms, size_ms } => {
                write!(f, "HOP(slide={slide_ms}ms, size={size_ms}ms)")
            }
            WindowKind::Cumulate { step_ms, size_ms } => {
                write!(f, "CUMULATE(step={step_ms}ms, size={size_ms}ms)")
            }
            WindowKind::Session { gap_ms } => write!(f, "SESSION(gap={gap_ms}ms)"),
        }
    }
}

/// Appends `window_start`, `window_end` and `window_time` computed from a
/// time column.
#[derive(Debug, Clone)]
pub struct WindowAssignerOperator {
    kind: WindowKind,
    time_column: usize,
    schema: SchemaRef,
}

impl WindowAssignerOperator {
    /// `schema` is the input schema plus the three window columns (of the
    /// time column's type) at the end.
    pub fn new(kind: WindowKind, time_column: usize, schema: SchemaRef) -> Result<Self> {
        kind.validate()?;
        Ok(Self {
            kind,
            time_column,
            schema,
        })
    }

    fn with_window(
        &self,
        batch: &RecordBatch,
        starts: Int64Array,
        size_ms: i64,
    ) -> Result<RecordBatch> {
        let ends: Int64Array = starts.unary(|s| s.saturating_add(size_ms));
        self.with_bounds(batch, starts, ends)
    }

    fn with_bounds(
        &self,
        batch: &RecordBatch,
        starts: Int64Array,
        ends: Int64Array,
    ) -> Result<RecordBatch> {
        let window_type = self
            .schema
            .field(self.schema.fields().len() - 1)
            .data_type();
        let times: Int64Array = ends.unary(|e| e.saturating_sub(1));
        let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
        columns.push(from_epoch_millis(starts, window_type)?);
        columns.push(from_epoch_millis(ends, window_type)?);
        columns.push(from_epoch_millis(times, window_type)?);
        Ok(RecordBatch::try_new(Arc::clone(&self.schema), columns)?)
    }
}

impl fmt::Display for WindowAssignerOperator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let time = self.schema.field(self.time_column).name();
        write!(f, "WindowAssigner: {} on {time}", self.kind)
    }
}

self_factory!(WindowAssignerOperator, "WindowAssigner");

#[async_trait]
impl Operator for WindowAssignerOperator {
    async fn process_batch(
        &mut self,
        batch: RecordBatch,
        _ctx: &mut OperatorContext,
        out: &mut Collector,
    ) -> Result<()> {
        let mut ts = to_epoch_millis(batch.column(self.time_column))?;
        let batch = if ts.null_count() > 0 {
            // A row without event time belongs to no window.
            let valid =
                BooleanArray::from(ts.iter().map(|v| Some(v.is_some())).collect::<Vec<_>>());
            let kept = filter_record_batch(&batch, &valid)?;
            ts = to_epoch_millis(kept.column(self.time_column))?;
            kept
        } else {
            batch
        };
        match self.kind {
            WindowKind::Tumble { size_ms } => {
                let starts = ts.unary(|t| t - t.rem_euclid(size_ms));
                out.collect(self.with_window(&batch, starts, size_ms)?);
            }
            WindowKind::Hop { slide_ms, size_ms } => {
                let copies = (size_ms + slide_ms - 1) / slide_ms;
                for k in 0..copies {
                    let starts = ts.unary(|t| t - t.rem_euclid(slide_ms) - k * slide_ms);
                    let inside: BooleanArray = ts
                        .values()
                        .iter()
                        .zip(starts.values().iter())
                        .map(|(t, s)| Some(*t < s + size_ms))
                        .collect();
                    let with = self.with_window(&batch, starts, size_ms)?;
                    out.collect(filter_record_batch(&with, &inside)?);
                }
            }
            WindowKind::Cumulate { step_ms, size_ms } => {
                let starts = ts.unary(|t| t - t.rem_euclid(size_ms));
                // The k-th copy goes to [start, start + k × step): rows of
                // the period's later steps are in fewer windows.
                for k in 1..=size_ms / step_ms {
                    let ends: Int64Array = starts.unary(|s: i64| s.saturating_add(k * step_ms));
                    let inside: BooleanArray = ts
                        .values()
                        .iter()
                        .zip(ends.values().iter())
                        .map(|(t, e)| Some(t < e))
                        .collect();
                    if inside.true_count() == 0 {
                        continue;
                    }
                    let with = self.with_bounds(&batch, starts.clone(), ends)?;
                    out.collect(filter_record_batch(&with, &inside)?);
                }
            }
            WindowKind::Session { gap_ms } => {
                out.collect(self.with_window(&batch, ts, gap_ms)?);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::OperatorHarness;
    use arrow::datatypes::{DataType, Field, Schema};

    fn schema() -> (SchemaRef, SchemaRef) {
        let input = Arc::new(Schema::new(vec![Field::new("ts", DataType::Int64, false)]));
        let output = Arc::new(Schema::new(vec![
            Field::new("ts", DataType::Int64, false),
            Field::new("window_start", DataType::Int64, false),
            Field::new("window_end", DataType::Int64, false),
            Field::new("window_time", DataType::Int64, false),
        ]));
        (input, output)
    }

    async fn assign(kind: WindowKind, ts: Vec<i64>) -> Vec<String> {
        let (input, output) = schema();
        let op = WindowAssignerOperator::new(kind, 0, output).unwrap();
        let mut h = OperatorHarness::new(Box::new(op));
        let batch = RecordBatch::try_new(input, vec![Arc::new(Int64Array::from(ts))]).unwrap();
        h.process(batch).await.unwrap();
        let mut rows = h.rows_as_strings();
        rows.sort();
        rows
    }

    #[tokio::test]
    async fn tumble_assigns_one_window() {
        let rows = assign(WindowKind::Tumble { size_ms: 10 }, vec![0, 9, 10, -1]).await;
        assert_eq!(
            rows,
            vec!["-1,-10,0,-1", "0,0,10,9", "10,10,20,19", "9,0,10,9"]
        );
    }

    #[tokio::test]
    async fn hop_assigns_every_covering_window() {
        let rows = assign(
            WindowKind::Hop {
                slide_ms: 5,
                size_ms: 10,
            },
            vec![7],
        )
        .await;
        assert_eq!(rows, vec!["7,0,10,9", "7,5,15,14"]);
        let rows = assign(
            WindowKind::Hop {
                slide_ms: 4,
                size_ms: 10,
            },
            vec![9],
        )
        .await;
        assert_eq!(rows, vec!["9,0,10,9", "9,4,14,13", "9,8,18,17"]);
    }

    #[tokio::test]
    async fn cumulate_assigns_every_cumulative_window_ending_after_the_row() {
        let kind = WindowKind::Cumulate {
            step_ms: 5,
            size_ms: 15,
        };
        let rows = assign(kind, vec![3, 7, 14, 15, -1]).await;
        assert_eq!(
            rows,
            vec![
                "-1,-15,0,-1",
                "14,0,15,14",
                "15,15,20,19",
                "15,15,25,24",
                "15,15,30,29",
                "3,0,10,9",
                "3,0,15,14",
                "3,0,5,4",
                "7,0,10,9",
                "7,0,15,14",
            ]
        );
    }

    #[test]
    fn rejects_a_cumulate_size_that_is_not_a_multiple_of_the_step() {
        let kind = WindowKind::Cumulate {
            step_ms: 4,
            size_ms: 10,
        };
        let err = kind.validate().unwrap_err().to_string();
        assert!(err.contains("must be a multiple of its step"), "{err}");
    }

    #[test]
    fn rejects_non_positive_sizes() {
        let (_, output) = schema();
        assert!(WindowAssignerOperator::new(WindowKind::Tumble { size_ms: 0 }, 0, output).is_err());
    }
}
