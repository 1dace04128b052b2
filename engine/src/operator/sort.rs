//! `ORDER BY` over bounded input: keeps every row until the input ends,
//! then emits them sorted (the first `fetch` of them with a `LIMIT`). Runs
//! with parallelism 1, so the order is global. Over an unbounded stream the
//! planner refuses it: the rows would never be final.

use std::fmt;

use arrow::compute::{SortColumn, concat_batches, lexsort_to_indices, take_record_batch};
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use datafusion::physical_expr::PhysicalSortExpr;

use super::snapshot::{OperatorRestore, OperatorSnapshot, decode_batches, encode_batch};
use super::{Collector, Operator, OperatorContext};
use crate::error::{Error, Result};
use crate::message::Watermark;

/// Rows per emitted batch.
const BATCH_ROWS: usize = 8192;

/// Sorts its whole (bounded) input at the end.
#[derive(Debug, Clone)]
pub struct SortOperator {
    order: Vec<PhysicalSortExpr>,
    fetch: Option<usize>,
    schema: SchemaRef,
    rows: Vec<RecordBatch>,
}

impl SortOperator {
    /// Sorts rows of `schema` by `order`, keeping the first `fetch`.
    pub fn new(order: Vec<PhysicalSortExpr>, fetch: Option<usize>, schema: SchemaRef) -> Self {
        Self {
            order,
            fetch,
            schema,
            rows: Vec::new(),
        }
    }

    /// Every row so far, sorted (at most `fetch`).
    fn sorted(&self) -> Result<RecordBatch> {
        let all = concat_batches(&self.schema, &self.rows)?;
        let columns = self
            .order
            .iter()
            .map(|e| {
                Ok(SortColumn {
                    values: e.expr.evaluate(&all)?.into_array(all.num_rows())?,
                    options: Some(e.options),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let indices = lexsort_to_indices(&columns, self.fetch)?;
        Ok(take_record_batch(&all, &indices)?)
    }
}

impl fmt::Display for SortOperator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let order: Vec<String> = self.order.iter().map(ToString::to_string).collect();
        write!(f, "Sort: {}", order.join(", "))?;
        if let Some(n) = self.fetch {
            write!(f, ", fetch={n}")?;
        }
        Ok(())
    }
}

self_factory!(SortOperator, "Sort");

#[async_trait]
impl Operator for SortOperator {
    async fn process_batch(
        &mut self,
        batch: RecordBatch,
        _ctx: &mut OperatorContext,
        _out: &mut Collector,
    ) -> Result<()> {
        if batch.num_rows() > 0 {
            self.rows.push(batch);
        }
        Ok(())
    }

    /// Event time does not pass a sort: its rows come at the end, so a
    /// watermark forwarded earlier would make them late downstream.
    async fn handle_watermark(
        &mut self,
        _watermark: Watermark,
        _ctx: &mut OperatorContext,
        _out: &mut Collector,
    ) -> Result<Option<Watermark>> {
        Ok(None)
    }

    async fn snapshot_state(
        &mut self,
        _ctx: &mut OperatorContext,
        snapshot: &mut OperatorSnapshot,
    ) -> Result<()> {
        let all = concat_batches(&self.schema, &self.rows)?;
        snapshot.operator = Some(encode_batch(all.columns().to_vec(), all.num_rows())?);
        Ok(())
    }

    fn restore_state(&mut self, _ctx: &OperatorContext, restore: OperatorRestore) -> Result<()> {
        // A sort runs with parallelism 1: at most one entry.
        for (_, bytes) in restore.operator {
            for (columns, rows) in decode_batches(&bytes)? {
                let batch = RecordBatch::try_new_with_options(
                    std::sync::Arc::clone(&self.schema),
                    columns,
                    &arrow::record_batch::RecordBatchOptions::new().with_row_count(Some(rows)),
                )
                .map_err(|e| Error::internal(format!("checkpointed sort rows: {e}")))?;
                if batch.num_rows() > 0 {
                    self.rows.push(batch);
                }
            }
        }
        Ok(())
    }

    async fn on_close(&mut self, _ctx: &mut OperatorContext, out: &mut Collector) -> Result<()> {
        let sorted = self.sorted()?;
        self.rows.clear();
        let mut offset = 0;
        while offset < sorted.num_rows() {
            let len = BATCH_ROWS.min(sorted.num_rows() - offset);
            out.collect(sorted.slice(offset, len));
            offset += len;
        }
        out.emit_watermark(Watermark::MAX);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::compute::SortOptions;
    use datafusion::physical_expr::expressions::Column;

    use super::*;
    use crate::testing::OperatorHarness;
    use crate::testing::fixtures::{batch, input_schema};

    fn by_second_column_descending(fetch: Option<usize>) -> SortOperator {
        let schema = input_schema();
        let name = schema.field(1).name().clone();
        let order = vec![PhysicalSortExpr {
            expr: Arc::new(Column::new(&name, 1)),
            options: SortOptions {
                descending: true,
                nulls_first: false,
            },
        }];
        SortOperator::new(order, fetch, schema)
    }

    #[tokio::test]
    async fn rows_come_sorted_at_the_end_of_input() {
        let mut h = OperatorHarness::new(Box::new(by_second_column_descending(None)));
        h.process(batch(&[(1, 5, 0), (2, 9, 0)])).await.unwrap();
        h.process(batch(&[(3, 7, 0)])).await.unwrap();
        assert!(h.rows_as_strings().is_empty(), "nothing before the end");
        h.close().await.unwrap();
        let keys: Vec<String> = h
            .rows_as_strings()
            .iter()
            .map(|r| r[..1].to_string())
            .collect();
        assert_eq!(keys, vec!["2", "3", "1"]);
    }

    #[tokio::test]
    async fn a_fetch_keeps_the_first_rows_and_state_survives_a_restore() {
        let mut h = OperatorHarness::new(Box::new(by_second_column_descending(Some(2))));
        h.process(batch(&[(1, 5, 0), (2, 9, 0), (3, 7, 0)]))
            .await
            .unwrap();
        let snapshot = h.snapshot().await.unwrap();
        let mut restored =
            OperatorHarness::restored(Box::new(by_second_column_descending(Some(2))), snapshot)
                .unwrap();
        restored.process(batch(&[(4, 8, 0)])).await.unwrap();
        restored.close().await.unwrap();
        let keys: Vec<String> = restored
            .rows_as_strings()
            .iter()
            .map(|r| r[..1].to_string())
            .collect();
        assert_eq!(keys, vec!["2", "4"]);
    }
}
