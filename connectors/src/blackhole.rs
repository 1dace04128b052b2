//! The `blackhole` sink: accepts every row and discards it, counting rows.
//! Useful to measure a query without the cost of an output.
//!
//! `'sink.rows-per-second'` makes it a deliberately slow sink (each subtask
//! accepts at most that many rows per second), to see backpressure at work.

use arrow::array::RecordBatch;
use async_trait::async_trait;
use weir_engine::{Connector, Result, Sink, TableDescriptor, TaskInfo};

const NAME: &str = "blackhole";

/// The `blackhole` connector (sink only).
#[derive(Debug, Clone, Copy, Default)]
pub struct BlackholeConnector;

impl Connector for BlackholeConnector {
    fn name(&self) -> &str {
        NAME
    }

    /// It discards whatever comes, changes included.
    fn accepts_updates(&self, _table: &TableDescriptor) -> bool {
        true
    }

    fn validate_sink(&self, table: &TableDescriptor) -> Result<()> {
        table
            .options
            .check_keys(NAME, &["sink.parallelism", "sink.rows-per-second"], |_| {
                false
            })?;
        match table.options.parse::<f64>("sink.rows-per-second")? {
            Some(rate) if rate.is_nan() || rate <= 0.0 => Err(weir_engine::Error::Config(format!(
                "blackhole table '{}': 'sink.rows-per-second' must be positive",
                table.name
            ))),
            _ => Ok(()),
        }
    }

    fn create_sink(&self, table: &TableDescriptor, task: &TaskInfo) -> Result<Box<dyn Sink>> {
        self.validate_sink(table)?;
        Ok(Box::new(BlackholeSink {
            table: table.name.clone(),
            subtask: task.subtask,
            rows: 0,
            batches: 0,
            rows_per_second: table.options.parse("sink.rows-per-second")?,
            started: std::time::Instant::now(),
        }))
    }
}

/// One subtask of a blackhole sink.
#[derive(Debug)]
pub struct BlackholeSink {
    table: String,
    subtask: usize,
    rows: u64,
    batches: u64,
    rows_per_second: Option<f64>,
    started: std::time::Instant,
}

impl BlackholeSink {
    /// Rows received so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }
}

#[async_trait]
impl Sink for BlackholeSink {
    async fn write_batch(&mut self, batch: RecordBatch) -> Result<()> {
        if self.rows == 0 {
            self.started = std::time::Instant::now();
        }
        self.rows += batch.num_rows() as u64;
        self.batches += 1;
        if let Some(rate) = self.rows_per_second {
            let due = std::time::Duration::from_secs_f64(self.rows as f64 / rate);
            if let Some(wait) = due.checked_sub(self.started.elapsed()) {
                tokio::time::sleep(wait).await;
            }
        }
        Ok(())
    }

    async fn finish(&mut self) -> Result<()> {
        tracing::debug!(
            table = %self.table,
            subtask = self.subtask,
            rows = self.rows,
            batches = self.batches,
            "blackhole sink finished"
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::Int64Array;
    use arrow::datatypes::{DataType, Field};

    use super::*;
    use crate::util::test_support::{table, task};

    #[tokio::test]
    async fn counts_and_discards() {
        let t = table(
            vec![Field::new("a", DataType::Int64, true)],
            &[("connector", "blackhole")],
        );
        let batch = RecordBatch::try_new(
            Arc::clone(&t.schema),
            vec![Arc::new(Int64Array::from(vec![1, 2, 3]))],
        )
        .unwrap();
        let mut sink = BlackholeSink {
            table: "t".into(),
            subtask: 0,
            rows: 0,
            batches: 0,
            rows_per_second: None,
            started: std::time::Instant::now(),
        };
        sink.write_batch(batch.clone()).await.unwrap();
        sink.write_batch(batch).await.unwrap();
        sink.finish().await.unwrap();
        assert_eq!(sink.rows(), 6);
        assert!(BlackholeConnector.create_sink(&t, &task(0, 1)).is_ok());
        let bad = table(vec![], &[("sink.paralelism", "2")]);
        let err = BlackholeConnector
            .validate_sink(&bad)
            .unwrap_err()
            .to_string();
        assert!(err.contains("did you mean 'sink.parallelism'"), "{err}");
        assert!(BlackholeConnector.validate_source(&t).is_err());
    }

    #[tokio::test]
    async fn a_throttled_sink_accepts_rows_at_its_rate() {
        let t = table(
            vec![Field::new("a", DataType::Int64, true)],
            &[("connector", "blackhole"), ("sink.rows-per-second", "100")],
        );
        let batch = RecordBatch::try_new(
            Arc::clone(&t.schema),
            vec![Arc::new(Int64Array::from(vec![1; 10]))],
        )
        .unwrap();
        let mut sink = BlackholeConnector.create_sink(&t, &task(0, 1)).unwrap();
        let started = std::time::Instant::now();
        for _ in 0..3 {
            sink.write_batch(batch.clone()).await.unwrap();
        }
        // 30 rows at 100 rows/s: at least 0.3 s.
        assert!(started.elapsed() >= std::time::Duration::from_millis(290));
        let bad = table(vec![], &[("sink.rows-per-second", "-1")]);
        assert!(BlackholeConnector.validate_sink(&bad).is_err());
    }
}
