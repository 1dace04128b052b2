//! Filter: keeps the rows for which a DataFusion predicate is true.

use std::fmt;
use std::sync::Arc;

use arrow::array::AsArray;
use arrow::compute::filter_record_batch;
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use datafusion::physical_expr::PhysicalExpr;

use super::{Collector, Operator, OperatorContext};
use crate::error::{Error, Result};

/// Keeps the rows where `predicate` is true (NULL counts as false).
#[derive(Debug, Clone)]
pub struct FilterOperator {
    predicate: Arc<dyn PhysicalExpr>,
    schema: SchemaRef,
}

impl FilterOperator {
    /// A filter over batches of `schema`.
    pub fn new(predicate: Arc<dyn PhysicalExpr>, schema: SchemaRef) -> Self {
        Self { predicate, schema }
    }
}

impl fmt::Display for FilterOperator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Filter: {}", self.predicate)
    }
}

self_factory!(FilterOperator, "Filter");

#[async_trait]
impl Operator for FilterOperator {
    async fn process_batch(
        &mut self,
        batch: RecordBatch,
        _ctx: &mut OperatorContext,
        out: &mut Collector,
    ) -> Result<()> {
        let mask = self
            .predicate
            .evaluate(&batch)?
            .into_array(batch.num_rows())?;
        let mask = mask.as_boolean_opt().ok_or_else(|| {
            Error::internal(format!(
                "filter predicate {} is not boolean",
                self.predicate
            ))
        })?;
        out.collect(filter_record_batch(&batch, mask)?);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::OperatorHarness;
    use arrow::array::Int64Array;
    use arrow::datatypes::{DataType, Field, Schema};
    use datafusion::logical_expr::Operator as BinOp;
    use datafusion::physical_expr::expressions::{BinaryExpr, Column, lit};

    #[tokio::test]
    async fn keeps_matching_rows_and_drops_nulls() {
        let schema = Arc::new(Schema::new(vec![Field::new("a", DataType::Int64, true)]));
        let pred: Arc<dyn PhysicalExpr> = Arc::new(BinaryExpr::new(
            Arc::new(Column::new("a", 0)),
            BinOp::Gt,
            lit(2i64),
        ));
        let mut h = OperatorHarness::new(Box::new(FilterOperator::new(pred, Arc::clone(&schema))));
        let batch = RecordBatch::try_new(
            schema,
            vec![Arc::new(Int64Array::from(vec![
                Some(1),
                Some(3),
                None,
                Some(5),
            ]))],
        )
        .unwrap();
        h.process(batch).await.unwrap();
        assert_eq!(h.rows_as_strings(), vec!["3", "5"]);
    }
}
