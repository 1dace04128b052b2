//! Watermark generation from a `WATERMARK FOR ts AS <expr>` declaration.
//!
//! As in Flink, the watermark is the largest value of the watermark
//! expression seen so far. It is emitted after every batch that advances it.

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
}

impl WatermarkGeneratorOperator {
    /// `expr` evaluates, per row, to the watermark that row allows.
    pub fn new(expr: Arc<dyn PhysicalExpr>, schema: SchemaRef) -> Self {
        Self {
            label: expr.to_string(),
            expr,
            schema,
            current: Watermark::MIN,
        }
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
        _ctx: &mut OperatorContext,
        out: &mut Collector,
    ) -> Result<()> {
        let values = self.expr.evaluate(&batch)?.into_array(batch.num_rows())?;
        let millis = to_epoch_millis(&values)?;
        out.collect(batch);
        if let Some(m) = max(&millis)
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
}
