//! Watermark generation from a `WATERMARK FOR ts AS <expr>` declaration.
//!
//! As in Flink, the watermark is the largest value of the watermark
//! expression seen so far. It is emitted after every batch that advances it.
//!
//! When the source reads splits (Kafka partitions) one batch per split
//! ([`OperatorContext::split`]), each split has its own largest value and the
//! watermark is the smallest of them, so a lagging partition holds it back
//! (Flink's per-partition watermarks). A split that has sent nothing for the
//! idle timeout (`'scan.watermark.idle-timeout'`) stops holding it back until
//! it sends again.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use arrow::compute::max;
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use datafusion::physical_expr::PhysicalExpr;

use super::{Collector, Operator, OperatorContext};
use crate::error::Result;
use crate::message::Watermark;
use crate::time::to_epoch_millis;

/// Emits watermarks computed from each batch's rows; data passes unchanged.
#[derive(Debug, Clone)]
pub struct WatermarkGeneratorOperator {
    expr: Arc<dyn PhysicalExpr>,
    label: String,
    schema: SchemaRef,
    current: Watermark,
    /// Per split: the largest value seen, and when (processing time, ms).
    splits: HashMap<u32, (i64, i64)>,
    /// Splits silent this long (ms) do not hold the watermark back.
    idle_timeout_ms: Option<i64>,
}

impl WatermarkGeneratorOperator {
    /// `expr` evaluates, per row, to the watermark that row allows.
    pub fn new(expr: Arc<dyn PhysicalExpr>, schema: SchemaRef) -> Self {
        Self {
            label: expr.to_string(),
            expr,
            schema,
            current: Watermark::MIN,
            splits: HashMap::new(),
            idle_timeout_ms: None,
        }
    }

    /// Splits that send nothing for `millis` stop holding the watermark back.
    pub fn with_idle_timeout(mut self, millis: Option<i64>) -> Self {
        self.idle_timeout_ms = millis;
        self
    }

    /// The watermark the splits allow now: the smallest of the active ones.
    /// When all are idle, that of the last one to go idle (the one the
    /// watermark followed alone just before), as Flink's would have been.
    fn split_watermark(&self, now: i64) -> Option<i64> {
        let active = |&&(_, seen): &&(i64, i64)| {
            self.idle_timeout_ms
                .is_none_or(|timeout| now.saturating_sub(seen) < timeout)
        };
        self.splits
            .values()
            .filter(active)
            .map(|(m, _)| *m)
            .min()
            .or_else(|| {
                let latest = self.splits.values().map(|(_, seen)| *seen).max()?;
                self.splits
                    .values()
                    .filter(|(_, seen)| *seen == latest)
                    .map(|(m, _)| *m)
                    .min()
            })
    }
}

impl WatermarkGeneratorOperator {
    /// Describes the expression as the user wrote it (for EXPLAIN).
    pub fn with_label(mut self, label: impl Into<String>) -> Self {
        self.label = label.into();
        self
    }
}

impl fmt::Display for WatermarkGeneratorOperator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WatermarkGenerator: {}", self.label)
    }
}

self_factory!(WatermarkGeneratorOperator, "WatermarkGenerator");

use super::snapshot::{OperatorRestore, OperatorSnapshot, decode_watermark, encode_watermark};

#[async_trait]
impl Operator for WatermarkGeneratorOperator {
    async fn process_batch(
        &mut self,
        batch: RecordBatch,
        ctx: &mut OperatorContext,
        out: &mut Collector,
    ) -> Result<()> {
        if batch.num_rows() == 0 {
            // An empty batch of a new split announces it: until its first
            // rows (or its idle timeout) it holds the watermark back, as in
            // Flink. Of a known split it is a tick: time passed, so splits
            // may have gone idle and the watermark may advance.
            if let Some(split) = ctx.split {
                let now = ctx.clock.now_millis();
                self.splits.entry(split).or_insert((i64::MIN, now));
                if let Some(m) = self.split_watermark(now)
                    && Watermark(m) > self.current
                {
                    self.current = Watermark(m);
                    out.emit_watermark(self.current);
                }
            }
            return Ok(());
        }
        let values = self.expr.evaluate(&batch)?.into_array(batch.num_rows())?;
        let millis = to_epoch_millis(&values)?;
        out.collect(batch);
        let Some(m) = max(&millis) else {
            return Ok(());
        };
        let candidate = match ctx.split {
            None => Some(m),
            Some(split) => {
                let now = ctx.clock.now_millis();
                let entry = self.splits.entry(split).or_insert((m, now));
                *entry = (entry.0.max(m), now);
                self.split_watermark(now)
            }
        };
        if let Some(m) = candidate
            && Watermark(m) > self.current
        {
            self.current = Watermark(m);
            out.emit_watermark(self.current);
        }
        Ok(())
    }

    async fn snapshot_state(
        &mut self,
        _ctx: &mut OperatorContext,
        snapshot: &mut OperatorSnapshot,
    ) -> Result<()> {
        snapshot.operator = Some(encode_watermark(self.current));
        Ok(())
    }

    fn restore_state(&mut self, _ctx: &OperatorContext, restore: OperatorRestore) -> Result<()> {
        self.current = decode_watermark(&restore.operator)?;
        Ok(())
    }

    async fn handle_watermark(
        &mut self,
        watermark: Watermark,
        _ctx: &mut OperatorContext,
        _out: &mut Collector,
    ) -> Result<Option<Watermark>> {
        // Only the end-of-input watermark comes from upstream; never go back.
        if watermark > self.current {
            self.current = watermark;
            Ok(Some(watermark))
        } else {
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::OperatorHarness;
    use arrow::array::TimestampMillisecondArray;
    use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    use datafusion::physical_expr::expressions::Column;

    #[tokio::test]
    async fn watermark_is_the_running_maximum() {
        let schema = Arc::new(Schema::new(vec![Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Millisecond, None),
            false,
        )]));
        let op =
            WatermarkGeneratorOperator::new(Arc::new(Column::new("ts", 0)), Arc::clone(&schema));
        let mut h = OperatorHarness::new(Box::new(op));
        for values in [vec![5, 3, 9], vec![2, 4], vec![12]] {
            let batch = RecordBatch::try_new(
                Arc::clone(&schema),
                vec![Arc::new(TimestampMillisecondArray::from(values))],
            )
            .unwrap();
            h.process(batch).await.unwrap();
        }
        assert_eq!(h.take_watermarks(), vec![Watermark(9), Watermark(12)]);
        assert_eq!(h.take_batches().len(), 3);
    }

    #[tokio::test]
    async fn splits_have_their_own_watermarks_and_idle_ones_stop_counting() {
        let schema = Arc::new(Schema::new(vec![Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Millisecond, None),
            false,
        )]));
        let op =
            WatermarkGeneratorOperator::new(Arc::new(Column::new("ts", 0)), Arc::clone(&schema))
                .with_idle_timeout(Some(1_000));
        let clock = crate::clock::ManualClock::new(0);
        let mut h = OperatorHarness::new(Box::new(op)).with_clock(clock.clone());
        let send = async |h: &mut OperatorHarness, split: u32, values: Vec<i64>| {
            h.context_mut().split = Some(split);
            let batch = RecordBatch::try_new(
                Arc::clone(&schema),
                vec![Arc::new(TimestampMillisecondArray::from(values))],
            )
            .unwrap();
            h.process(batch).await.unwrap();
            h.take_watermarks()
        };
        // Split 0 runs ahead; split 1 lags and holds the watermark back.
        assert_eq!(send(&mut h, 0, vec![100, 500]).await, vec![Watermark(500)]);
        assert_eq!(send(&mut h, 1, vec![200]).await, vec![]);
        assert_eq!(send(&mut h, 0, vec![900]).await, vec![]);
        assert_eq!(send(&mut h, 1, vec![700]).await, vec![Watermark(700)]);
        // Split 1 goes quiet: after the idle timeout split 0 alone decides.
        clock.advance(600);
        assert_eq!(send(&mut h, 0, vec![1_000]).await, vec![]);
        clock.advance(600);
        assert_eq!(send(&mut h, 0, vec![1_100]).await, vec![Watermark(1_100)]);
        // Back from idleness it counts again (and never moves the watermark back).
        assert_eq!(send(&mut h, 1, vec![800]).await, vec![]);
        assert_eq!(send(&mut h, 1, vec![1_200]).await, vec![]);
        assert_eq!(send(&mut h, 0, vec![1_300]).await, vec![Watermark(1_200)]);
        // An announced split without rows holds the watermark back until its idle timeout.
        assert_eq!(send(&mut h, 2, vec![]).await, vec![]);
        assert_eq!(send(&mut h, 0, vec![1_400]).await, vec![]);
        assert_eq!(send(&mut h, 1, vec![1_500]).await, vec![]);
        clock.advance(500);
        assert_eq!(send(&mut h, 0, vec![1_600]).await, vec![]);
        clock.advance(500);
        assert_eq!(send(&mut h, 1, vec![1_700]).await, vec![Watermark(1_600)]);
        // Ticks (empty batches of known splits) let idleness take effect without new rows.
        clock.advance(600);
        assert_eq!(send(&mut h, 0, vec![1_800]).await, vec![Watermark(1_700)]);
        clock.advance(500);
        assert_eq!(send(&mut h, 0, vec![]).await, vec![Watermark(1_800)]);
    }
}
