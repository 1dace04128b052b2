//! `LIMIT n [OFFSET m]`: passes rows `m .. m + n` of its input and drops the
//! rest. Runs with parallelism 1, so the limit is global.
//!
//! A limit whose output is the job's whole output (nothing but stateless
//! operators between it and the sink) ends the job once it has passed its
//! last row: it asks for a graceful stop ([`super::JobStop`]), so a query
//! over an unbounded source ends, as in a database. What drains afterwards
//! is dropped here.

use std::fmt;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;

use super::snapshot::{OperatorRestore, OperatorSnapshot};
use super::{Collector, Operator, OperatorContext};
use crate::error::{Error, Result};

/// Emits at most `fetch` rows after skipping `skip`.
#[derive(Debug, Clone)]
pub struct LimitOperator {
    skip: usize,
    fetch: Option<usize>,
    schema: SchemaRef,
    seen: usize,
    /// Stop the job once the last row passed.
    ends_job: bool,
}

impl LimitOperator {
    /// Skips `skip` rows, then passes `fetch` (all when `None`).
    pub fn new(skip: usize, fetch: Option<usize>, schema: SchemaRef) -> Self {
        Self {
            skip,
            fetch,
            schema,
            seen: 0,
            ends_job: false,
        }
    }

    /// Makes the limit stop the job once it passed its last row: for a
    /// limit whose output is all the job writes.
    pub fn ending_the_job(mut self) -> Self {
        self.ends_job = true;
        self
    }

    /// The row after the last one passed (`usize::MAX` without a fetch).
    fn end(&self) -> usize {
        self.fetch
            .map_or(usize::MAX, |f| self.skip.saturating_add(f))
    }

    /// Asks for the job to stop once nothing more can pass.
    fn stop_when_done(&self, ctx: &OperatorContext) {
        if self.ends_job && self.seen >= self.end() && !ctx.job_stop.is_requested() {
            tracing::info!(
                operator = %ctx.task.operator,
                rows = self.fetch.unwrap_or_default(),
                "the limit is reached: stopping the job"
            );
            ctx.job_stop.request();
        }
    }
}

impl fmt::Display for LimitOperator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.fetch {
            Some(n) => write!(f, "Limit: skip={}, fetch={n}", self.skip)?,
            None => write!(f, "Limit: skip={}", self.skip)?,
        }
        if self.ends_job {
            write!(f, ", ends the job")?;
        }
        Ok(())
    }
}

self_factory!(LimitOperator, "Limit");

#[async_trait]
impl Operator for LimitOperator {
    async fn snapshot_state(
        &mut self,
        _ctx: &mut OperatorContext,
        snapshot: &mut OperatorSnapshot,
    ) -> Result<()> {
        snapshot.operator = Some((self.seen as u64).to_be_bytes().to_vec());
        Ok(())
    }

    fn restore_state(&mut self, _ctx: &OperatorContext, restore: OperatorRestore) -> Result<()> {
        // A limit runs with parallelism 1: at most one entry.
        for (_, bytes) in restore.operator {
            let seen: [u8; 8] = bytes
                .as_slice()
                .try_into()
                .map_err(|_| Error::internal("checkpointed limit state is not a row count"))?;
            self.seen = u64::from_be_bytes(seen) as usize;
        }
        Ok(())
    }

    async fn on_start(&mut self, ctx: &mut OperatorContext) -> Result<()> {
        // Restored after the limit was reached (or `LIMIT 0`).
        self.stop_when_done(ctx);
        Ok(())
    }

    async fn process_batch(
        &mut self,
        batch: RecordBatch,
        ctx: &mut OperatorContext,
        out: &mut Collector,
    ) -> Result<()> {
        let end = self.end();
        let (start_row, end_row) = (self.seen, self.seen.saturating_add(batch.num_rows()));
        self.seen = end_row;
        let from = self.skip.clamp(start_row, end_row) - start_row;
        let to = end.clamp(start_row, end_row) - start_row;
        if to > from {
            out.collect(batch.slice(from, to - from));
        }
        self.stop_when_done(ctx);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::OperatorHarness;
    use crate::testing::fixtures::{batch, input_schema};

    #[tokio::test]
    async fn passes_the_window_of_rows_across_batches() {
        let mut h = OperatorHarness::new(Box::new(LimitOperator::new(2, Some(3), input_schema())));
        h.process(batch(&[(1, 0, 0), (2, 0, 0)])).await.unwrap();
        h.process(batch(&[(3, 0, 0), (4, 0, 0)])).await.unwrap();
        h.process(batch(&[(5, 0, 0), (6, 0, 0)])).await.unwrap();
        let keys: Vec<String> = h
            .rows_as_strings()
            .iter()
            .map(|r| r[..1].to_string())
            .collect();
        assert_eq!(keys, vec!["3", "4", "5"]);
    }

    #[tokio::test]
    async fn a_limit_ending_the_job_asks_to_stop_after_its_last_row() {
        let limit = LimitOperator::new(1, Some(2), input_schema()).ending_the_job();
        let mut h = OperatorHarness::new(Box::new(limit));
        h.process(batch(&[(1, 0, 0), (2, 0, 0)])).await.unwrap();
        assert!(
            !h.context().job_stop.is_requested(),
            "one row still to pass"
        );
        h.process(batch(&[(3, 0, 0)])).await.unwrap();
        assert!(h.context().job_stop.is_requested());
        h.process(batch(&[(4, 0, 0)])).await.unwrap();
        assert_eq!(h.rows_as_strings().len(), 2);
    }

    #[tokio::test]
    async fn a_plain_limit_never_stops_the_job() {
        let mut h = OperatorHarness::new(Box::new(LimitOperator::new(0, Some(1), input_schema())));
        h.process(batch(&[(1, 0, 0), (2, 0, 0)])).await.unwrap();
        assert!(!h.context().job_stop.is_requested());
    }
}
