//! Projection: evaluates a list of DataFusion physical expressions over
//! whole batches.

use std::fmt;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::{RecordBatch, RecordBatchOptions};
use async_trait::async_trait;
use datafusion::physical_expr::PhysicalExpr;

use super::{Collector, Operator, OperatorContext};
use crate::error::Result;

/// Computes each output column from an expression over the input batch.
#[derive(Debug, Clone)]
pub struct ProjectionOperator {
    exprs: Vec<Arc<dyn PhysicalExpr>>,
    schema: SchemaRef,
}

impl ProjectionOperator {
    /// A projection emitting `schema`, column `i` computed by `exprs[i]`.
    pub fn new(exprs: Vec<Arc<dyn PhysicalExpr>>, schema: SchemaRef) -> Self {
        Self { exprs, schema }
    }

    /// Evaluates the projection over one batch.
    pub fn project(&self, batch: &RecordBatch) -> Result<RecordBatch> {
        let columns = self
            .exprs
            .iter()
            .map(|e| {
                e.evaluate(batch)
                    .and_then(|v| v.into_array(batch.num_rows()))
            })
            .collect::<datafusion::error::Result<Vec<_>>>()?;
        let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
        Ok(RecordBatch::try_new_with_options(
            Arc::clone(&self.schema),
            columns,
            &options,
        )?)
    }
}

impl fmt::Display for ProjectionOperator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Projection: ")?;
        for (i, (expr, field)) in self.exprs.iter().zip(self.schema.fields()).enumerate() {
            if i > 0 {
                write!(f, ", ")?;
            }
            let text = expr.to_string();
            let bare = text.split('@').next().unwrap_or(&text);
            if bare == field.name() {
                write!(f, "{bare}")?;
            } else {
                write!(f, "{text} AS {}", field.name())?;
            }
        }
        Ok(())
    }
}

self_factory!(ProjectionOperator, "Projection");

#[async_trait]
impl Operator for ProjectionOperator {
    async fn process_batch(
        &mut self,
        batch: RecordBatch,
        _ctx: &mut OperatorContext,
        out: &mut Collector,
    ) -> Result<()> {
        out.collect(self.project(&batch)?);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::OperatorHarness;
    use arrow::array::{Int64Array, as_primitive_array};
    use arrow::datatypes::{DataType, Field, Int64Type, Schema};
    use datafusion::logical_expr::Operator as BinOp;
    use datafusion::physical_expr::expressions::{BinaryExpr, Column, lit};

    #[tokio::test]
    async fn computes_expressions_over_whole_batches() {
        let input = Arc::new(Schema::new(vec![Field::new("a", DataType::Int64, false)]));
        let doubled: Arc<dyn PhysicalExpr> = Arc::new(BinaryExpr::new(
            Arc::new(Column::new("a", 0)),
            BinOp::Multiply,
            lit(2i64),
        ));
        let schema = Arc::new(Schema::new(vec![Field::new("b", DataType::Int64, false)]));
        let op = ProjectionOperator::new(vec![doubled], schema);
        assert_eq!(op.to_string(), "Projection: a@0 * 2 AS b");
        let mut h = OperatorHarness::new(Box::new(op));
        let batch =
            RecordBatch::try_new(input, vec![Arc::new(Int64Array::from(vec![1, 2, 3]))]).unwrap();
        h.process(batch).await.unwrap();
        let out = h.take_batches();
        assert_eq!(out.len(), 1);
        let b = as_primitive_array::<Int64Type>(out[0].column(0));
        assert_eq!(b.values().to_vec(), vec![2, 4, 6]);
    }
}
