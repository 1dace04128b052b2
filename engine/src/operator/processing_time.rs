//! Processing time as the watermark, for windows over a `PROCTIME()` column.
//!
//! A processing-time window closes when the wall clock passes its end, not
//! when event time does. This operator, chained after the projection that
//! computes the `PROCTIME()` column, replaces the stream's watermark by the
//! engine's [`Clock`](crate::clock::Clock): after every batch, and on the
//! processing-time ticks ([`Operator::on_tick`]), it emits `now - 1` (every
//! row computed later reads `now` or more, so none is late). The event-time
//! watermarks of upstream generators are held back; the end of input
//! ([`Watermark::MAX`]) passes, so a bounded input fires every window.

use std::fmt;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;

use super::{Collector, Operator, OperatorContext};
use crate::error::Result;
use crate::message::Watermark;

/// Emits the processing time as the watermark; data passes unchanged.
#[derive(Debug, Clone)]
pub struct ProcessingTimeWatermarkOperator {
    column: String,
    schema: SchemaRef,
    current: Watermark,
}

impl ProcessingTimeWatermarkOperator {
    /// For windows over the processing-time column `column` of `schema`.
    pub fn new(column: impl Into<String>, schema: SchemaRef) -> Self {
        Self {
            column: column.into(),
            schema,
            current: Watermark::MIN,
        }
    }

    fn advance(&mut self, ctx: &OperatorContext, out: &mut Collector) {
        let now = Watermark(ctx.clock.now_millis().saturating_sub(1));
        if now > self.current {
            self.current = now;
            out.emit_watermark(now);
        }
    }
}

impl fmt::Display for ProcessingTimeWatermarkOperator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ProcessingTimeWatermark: {} AS PROCTIME()", self.column)
    }
}

self_factory!(ProcessingTimeWatermarkOperator, "ProcessingTimeWatermark");

#[async_trait]
impl Operator for ProcessingTimeWatermarkOperator {
    async fn process_batch(
        &mut self,
        batch: RecordBatch,
        ctx: &mut OperatorContext,
        out: &mut Collector,
    ) -> Result<()> {
        debug_assert_eq!(batch.schema().fields().len(), self.schema.fields().len());
        out.collect(batch);
        self.advance(ctx, out);
        Ok(())
    }

    async fn handle_watermark(
        &mut self,
        watermark: Watermark,
        _ctx: &mut OperatorContext,
        _out: &mut Collector,
    ) -> Result<Option<Watermark>> {
        // Only the end of input means something in processing time.
        if watermark == Watermark::MAX && self.current < Watermark::MAX {
            self.current = Watermark::MAX;
            return Ok(Some(watermark));
        }
        Ok(None)
    }

    async fn on_tick(&mut self, ctx: &mut OperatorContext, out: &mut Collector) -> Result<()> {
        if self.current < Watermark::MAX {
            self.advance(ctx, out);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::Int64Array;
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;
    use crate::clock::ManualClock;
    use crate::testing::OperatorHarness;

    fn batch() -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("pt", DataType::Int64, false)]));
        RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(vec![1]))]).unwrap()
    }

    fn watermarks(h: &mut OperatorHarness) -> Vec<i64> {
        h.take_watermarks().into_iter().map(|w| w.0).collect()
    }

    #[tokio::test]
    async fn the_clock_is_the_watermark_after_batches_and_idle_ticks() {
        let clock = ManualClock::new(1_000);
        let op = ProcessingTimeWatermarkOperator::new("pt", batch().schema());
        let mut h = OperatorHarness::new(Box::new(op)).with_clock(clock.clone());
        h.process(batch()).await.unwrap();
        assert_eq!(watermarks(&mut h), vec![999]);
        // Event time is not processing time: held back.
        h.watermark(Watermark(5_000)).await.unwrap();
        assert!(watermarks(&mut h).is_empty());
        // No rows, but the clock moved: the idle tick says so.
        clock.advance(500);
        h.tick().await.unwrap();
        assert_eq!(watermarks(&mut h), vec![1_499]);
        h.tick().await.unwrap();
        assert!(watermarks(&mut h).is_empty());
        // The end of input passes.
        h.watermark(Watermark::MAX).await.unwrap();
        assert_eq!(watermarks(&mut h), vec![Watermark::MAX.0]);
    }
}
