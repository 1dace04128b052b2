//! `LIMIT n [OFFSET m]` over an updating result, as a database answers it:
//! a snapshot of rows `m .. m + n` of the result, append-only.
//!
//! The operator applies the changelog it takes (see [`Materialized`]). Over
//! a bounded input it answers once the input ends, from the final rows. Over
//! an unbounded one it answers as soon as the result holds `m + n` rows (a
//! `GROUP BY` over a stream answers within its first groups), and, when its
//! output is the job's whole output, ends the job then, so
//! `SELECT k, COUNT(*) FROM stream GROUP BY k LIMIT 3` returns, as it does in
//! RisingWave's batch query over a materialized view. Runs at parallelism 1.

use std::fmt;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;

use super::snapshot::{OperatorRestore, OperatorSnapshot, decode_batches, encode_batch};
use super::{Collector, Operator, OperatorContext, OperatorFactory, TaskInfo};
use crate::changelog::{Materialized, data_schema};
use crate::error::{Error, Result};

/// When the snapshot is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotAt {
    /// When the input ends (every table read is bounded): the final rows.
    EndOfInput,
    /// As soon as the result holds enough rows (or the input ends first).
    FirstRows,
}

/// Creates [`UpdatingLimitOperator`]s.
#[derive(Debug, Clone)]
pub struct UpdatingLimitFactory {
    skip: usize,
    fetch: usize,
    at: SnapshotAt,
    ends_job: bool,
    /// The output: the input's data columns.
    schema: SchemaRef,
}

impl UpdatingLimitFactory {
    /// Rows `skip .. skip + fetch` of the updating result with `input` schema.
    pub fn new(skip: usize, fetch: usize, at: SnapshotAt, input: &SchemaRef) -> Self {
        Self {
            skip,
            fetch,
            at,
            ends_job: false,
            schema: data_schema(input),
        }
    }

    /// Stops the job once the snapshot is out: for a limit whose output is
    /// all the job writes.
    pub fn ending_the_job(mut self) -> Self {
        self.ends_job = true;
        self
    }
}

impl fmt::Display for UpdatingLimitFactory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "UpdatingLimit: skip={}, fetch={}, snapshot at {}",
            self.skip,
            self.fetch,
            match self.at {
                SnapshotAt::EndOfInput => "end of input",
                SnapshotAt::FirstRows => "first rows",
            }
        )?;
        if self.ends_job {
            write!(f, ", ends the job")?;
        }
        Ok(())
    }
}

impl OperatorFactory for UpdatingLimitFactory {
    fn name(&self) -> &str {
        "UpdatingLimit"
    }
    fn output_schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }
    fn create(&self, _task: &TaskInfo) -> Result<Box<dyn Operator>> {
        Ok(Box::new(UpdatingLimitOperator {
            config: self.clone(),
            result: Materialized::new(),
            answered: false,
        }))
    }
}

/// Applies an updating result and emits a snapshot of some of its rows.
#[derive(Debug)]
pub struct UpdatingLimitOperator {
    config: UpdatingLimitFactory,
    result: Materialized,
    /// The snapshot is out: nothing more is emitted.
    answered: bool,
}

impl UpdatingLimitOperator {
    fn answer(&mut self, ctx: &OperatorContext, out: &mut Collector) -> Result<()> {
        if self.answered {
            return Ok(());
        }
        self.answered = true;
        if let Some(rows) = self.result.current()? {
            let from = self.config.skip.min(rows.num_rows());
            let len = self.config.fetch.min(rows.num_rows() - from);
            let rows = rows.slice(from, len);
            out.collect(RecordBatch::try_new(
                Arc::clone(&self.config.schema),
                rows.columns().to_vec(),
            )?);
        }
        if self.config.ends_job && !ctx.job_stop.is_requested() {
            tracing::info!(
                operator = %ctx.task.operator,
                rows = self.config.fetch,
                "the limit's snapshot is out: stopping the job"
            );
            ctx.job_stop.request();
        }
        // The rows are no longer needed.
        self.result = Materialized::new();
        Ok(())
    }
}

#[async_trait]
impl Operator for UpdatingLimitOperator {
    async fn process_batch(
        &mut self,
        batch: RecordBatch,
        ctx: &mut OperatorContext,
        out: &mut Collector,
    ) -> Result<()> {
        if self.answered {
            return Ok(());
        }
        self.result.apply(&batch)?;
        let enough = self.config.skip.saturating_add(self.config.fetch);
        if self.config.at == SnapshotAt::FirstRows && self.result.len() >= enough {
            self.answer(ctx, out)?;
        }
        Ok(())
    }

    async fn on_close(&mut self, ctx: &mut OperatorContext, out: &mut Collector) -> Result<()> {
        self.answer(ctx, out)
    }

    /// Operator state: whether the snapshot is out, then the result's rows.
    async fn snapshot_state(
        &mut self,
        _ctx: &mut OperatorContext,
        snapshot: &mut OperatorSnapshot,
    ) -> Result<()> {
        let mut bytes = vec![u8::from(self.answered)];
        if let Some(rows) = self.result.current()? {
            bytes.extend(encode_batch(rows.columns().to_vec(), rows.num_rows())?);
        }
        snapshot.operator = Some(bytes);
        Ok(())
    }

    fn restore_state(&mut self, _ctx: &OperatorContext, restore: OperatorRestore) -> Result<()> {
        // Parallelism 1: at most one entry.
        for (_, bytes) in restore.operator {
            let Some((&answered, rows)) = bytes.split_first() else {
                return Err(Error::internal("checkpointed limit state is empty"));
            };
            self.answered = answered != 0;
            if rows.is_empty() {
                continue;
            }
            for (columns, _) in decode_batches(rows)? {
                let batch = RecordBatch::try_new(Arc::clone(&self.config.schema), columns)?;
                self.result.apply(&batch)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::{Int64Array, UInt8Array};
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;
    use crate::changelog::{ROW_KIND_COLUMN, RowKind};
    use crate::testing::OperatorHarness;

    fn input() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, false),
            Field::new("n", DataType::Int64, false),
            Field::new(ROW_KIND_COLUMN, DataType::UInt8, false),
        ]))
    }

    fn changes(rows: &[(i64, i64, RowKind)]) -> RecordBatch {
        RecordBatch::try_new(
            input(),
            vec![
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1))),
                Arc::new(UInt8Array::from_iter_values(rows.iter().map(|r| r.2 as u8))),
            ],
        )
        .unwrap()
    }

    #[tokio::test]
    async fn over_a_stream_the_first_rows_answer_and_end_the_job() {
        let limit =
            UpdatingLimitFactory::new(0, 2, SnapshotAt::FirstRows, &input()).ending_the_job();
        let mut h = OperatorHarness::new(limit.create(&TaskInfo::single("l")).unwrap());
        h.process(changes(&[(1, 1, RowKind::Insert)]))
            .await
            .unwrap();
        assert!(h.rows_as_strings().is_empty());
        h.process(changes(&[
            (1, 1, RowKind::UpdateBefore),
            (1, 2, RowKind::UpdateAfter),
            (2, 1, RowKind::Insert),
        ]))
        .await
        .unwrap();
        assert!(h.context().job_stop.is_requested());
        h.process(changes(&[(3, 1, RowKind::Insert)]))
            .await
            .unwrap();
        h.close().await.unwrap();
        let mut rows = h.rows_as_strings();
        rows.sort();
        assert_eq!(rows, ["1,2", "2,1"]);
    }

    #[tokio::test]
    async fn over_a_bounded_input_the_final_rows_answer() {
        let limit = UpdatingLimitFactory::new(1, 5, SnapshotAt::EndOfInput, &input());
        let mut h = OperatorHarness::new(limit.create(&TaskInfo::single("l")).unwrap());
        h.process(changes(&[(1, 1, RowKind::Insert), (2, 1, RowKind::Insert)]))
            .await
            .unwrap();
        h.process(changes(&[(1, 1, RowKind::Delete), (3, 7, RowKind::Insert)]))
            .await
            .unwrap();
        assert!(h.rows_as_strings().is_empty());
        h.close().await.unwrap();
        // Offset 1 of the rows [2, 3] in insertion order.
        assert_eq!(h.rows_as_strings(), ["3,7"]);
        assert!(!h.context().job_stop.is_requested());
    }
}
