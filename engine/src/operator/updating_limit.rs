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

use std::collections::{BTreeMap, HashMap};

use arrow::array::{AsArray, UInt64Array};
use arrow::datatypes::UInt64Type;
use arrow::row::{RowConverter, SortField};

use super::evictable::{EvictableKeys, EvictableValue, corrupt};
use super::snapshot::{KeyedStateBuilder, OperatorRestore, OperatorSnapshot, decode_batches};
use super::{Collector, Operator, OperatorContext, OperatorFactory, TaskInfo};
use crate::changelog::{RowKind, data_schema, split_row_kinds};
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
        let rows = RowConverter::new(
            self.schema
                .fields()
                .iter()
                .map(|f| SortField::new(f.data_type().clone()))
                .collect(),
        )?;
        Ok(Box::new(UpdatingLimitOperator {
            config: self.clone(),
            rows,
            live: HashMap::new(),
            live_rows: 0,
            inserted: 0,
            keyed: EvictableKeys::new(None),
            answered: false,
        }))
    }
}

/// One distinct row of the result: its live copies and when it was first
/// inserted (the answer takes rows in that order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Copies {
    count: u64,
    position: u64,
}

/// The count, then the position (u64 BE each).
impl EvictableValue for Copies {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.count.to_be_bytes());
        out.extend_from_slice(&self.position.to_be_bytes());
    }
    fn decode(bytes: &[u8]) -> Result<Self> {
        let (count, position) = bytes
            .split_first_chunk::<8>()
            .and_then(|(c, rest)| Some((*c, *rest.first_chunk::<8>()?)))
            .ok_or_else(|| corrupt("a limit's row count is truncated"))?;
        Ok(Self {
            count: u64::from_be_bytes(count),
            position: u64::from_be_bytes(position),
        })
    }
    fn heap_size(&self) -> usize {
        16
    }
}

/// Applies an updating result and emits a snapshot of some of its rows.
/// The result's rows are keyed state: past the memory budget the least
/// recently changed are evicted to RocksDB (see [`super::evictable`]), and
/// the answer reads them from there, keeping only the rows it needs.
pub struct UpdatingLimitOperator {
    config: UpdatingLimitFactory,
    rows: RowConverter,
    /// Per distinct row (encoded), in memory.
    live: HashMap<Vec<u8>, Copies>,
    /// Copies live in the result, in memory and evicted.
    live_rows: u64,
    /// Rows inserted so far: the next row's position.
    inserted: u64,
    keyed: EvictableKeys,
    /// The snapshot is out: nothing more is emitted.
    answered: bool,
}

impl fmt::Debug for UpdatingLimitOperator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpdatingLimitOperator")
            .field("live_rows", &self.live_rows)
            .field("answered", &self.answered)
            .finish()
    }
}

impl UpdatingLimitOperator {
    /// The first `skip + fetch` copies by position, from memory and disk,
    /// keeping no more rows than that while reading.
    fn first_rows(&self, ctx: &OperatorContext) -> Result<Vec<(u64, Vec<u8>, u64)>> {
        let wanted = self.config.skip.saturating_add(self.config.fetch) as u64;
        // By position: the row and its copies; trimmed to `wanted` copies.
        let mut first: BTreeMap<u64, (Vec<u8>, u64)> = BTreeMap::new();
        let mut held = 0u64;
        let mut offer = |row: &[u8], copies: Copies| {
            if held >= wanted
                && first
                    .last_key_value()
                    .is_some_and(|(&p, _)| p < copies.position)
            {
                return;
            }
            first.insert(copies.position, (row.to_vec(), copies.count));
            held += copies.count;
            while let Some((_, (_, last))) = first.last_key_value() {
                if held - last < wanted {
                    break;
                }
                held -= last;
                first.pop_last();
            }
        };
        for (row, copies) in &self.live {
            offer(row, *copies);
        }
        self.keyed
            .for_each_evicted_value(ctx, |row, copies: Copies| {
                offer(row, copies);
                Ok(())
            })?;
        Ok(first
            .into_iter()
            .map(|(position, (row, count))| (position, row, count))
            .collect())
    }

    fn answer(&mut self, ctx: &OperatorContext, out: &mut Collector) -> Result<()> {
        if self.answered {
            return Ok(());
        }
        self.answered = true;
        let first = self.first_rows(ctx)?;
        let copies: Vec<&[u8]> = first
            .iter()
            .flat_map(|(_, row, count)| std::iter::repeat_n(row.as_slice(), *count as usize))
            .skip(self.config.skip)
            .take(self.config.fetch)
            .collect();
        if !copies.is_empty() {
            let parser = self.rows.parser();
            let columns = self
                .rows
                .convert_rows(copies.iter().map(|r| parser.parse(r)))?;
            out.collect(RecordBatch::try_new(
                Arc::clone(&self.config.schema),
                columns,
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
        self.live = HashMap::new();
        Ok(())
    }

    /// Applies a batch of changes.
    fn apply(
        &mut self,
        data: &RecordBatch,
        kinds: Option<&[RowKind]>,
        ctx: &mut OperatorContext,
    ) -> Result<()> {
        let encoded = self.rows.convert_columns(data.columns())?;
        if self.keyed.may_have_evicted() {
            self.keyed
                .load(&mut self.live, data.columns(), &encoded, ctx)?;
        }
        for (i, row) in encoded.iter().enumerate() {
            let row = row.as_ref();
            let kind = kinds.map_or(RowKind::Insert, |k| k[i]);
            match kind {
                RowKind::Insert | RowKind::UpdateAfter => {
                    let position = self.inserted;
                    self.inserted += 1;
                    let copies = self
                        .live
                        .entry(row.to_vec())
                        .or_insert(Copies { count: 0, position });
                    copies.count += 1;
                    self.live_rows += 1;
                    self.keyed.touch(row, 16, ctx);
                }
                RowKind::UpdateBefore | RowKind::Delete => {
                    let Some(copies) = self.live.get_mut(row) else {
                        continue;
                    };
                    copies.count -= 1;
                    self.live_rows -= 1;
                    if copies.count == 0 {
                        self.live.remove(row);
                        self.keyed.forget(row);
                    }
                }
            }
        }
        self.keyed
            .evict_if_over_budget(&mut self.live, &self.rows, ctx)
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
        let (data, kinds) = split_row_kinds(&batch)?;
        self.apply(&data, kinds.as_deref(), ctx)?;
        let enough = self.config.skip.saturating_add(self.config.fetch) as u64;
        if self.config.at == SnapshotAt::FirstRows && self.live_rows >= enough {
            self.answer(ctx, out)?;
        }
        Ok(())
    }

    async fn on_close(&mut self, ctx: &mut OperatorContext, out: &mut Collector) -> Result<()> {
        self.answer(ctx, out)
    }

    /// Keyed state: the rows in memory with their copies and positions.
    /// Operator state: whether the snapshot is out, the live copies and
    /// the insertion counter.
    async fn snapshot_state(
        &mut self,
        ctx: &mut OperatorContext,
        snapshot: &mut OperatorSnapshot,
    ) -> Result<()> {
        let mut builder = KeyedStateBuilder::default();
        if !self.live.is_empty() {
            let parser = self.rows.parser();
            let mut columns = self
                .rows
                .convert_rows(self.live.keys().map(|r| parser.parse(r)))?;
            let width = columns.len();
            columns.push(Arc::new(UInt64Array::from_iter_values(
                self.live.values().map(|c| c.count),
            )));
            columns.push(Arc::new(UInt64Array::from_iter_values(
                self.live.values().map(|c| c.position),
            )));
            let keys: Vec<usize> = (0..width).collect();
            builder.add_rows(&columns, &keys, self.live.len(), ctx.task.max_key_groups)?;
        }
        snapshot.put_key_groups(ctx.task.key_groups(), builder.finish()?)?;
        let mut bytes = vec![u8::from(self.answered)];
        bytes.extend_from_slice(&self.live_rows.to_be_bytes());
        bytes.extend_from_slice(&self.inserted.to_be_bytes());
        snapshot.operator = Some(bytes);
        Ok(())
    }

    fn restore_state(&mut self, ctx: &OperatorContext, restore: OperatorRestore) -> Result<()> {
        // Parallelism 1: at most one entry.
        for (_, bytes) in &restore.operator {
            let (&answered, rest) = bytes
                .split_first()
                .ok_or_else(|| Error::internal("checkpointed limit state is empty"))?;
            let (live, inserted) = rest
                .split_first_chunk::<8>()
                .and_then(|(l, rest)| Some((*l, *rest.first_chunk::<8>()?)))
                .ok_or_else(|| Error::internal("checkpointed limit state is truncated"))?;
            self.answered = answered != 0;
            self.live_rows = u64::from_be_bytes(live);
            self.inserted = u64::from_be_bytes(inserted);
        }
        let width = self.config.schema.fields().len();
        for (_, bytes) in restore.keyed {
            for (columns, rows) in decode_batches(&bytes)? {
                let counts = columns
                    .get(width)
                    .and_then(|c| c.as_primitive_opt::<UInt64Type>());
                let positions = columns
                    .get(width + 1)
                    .and_then(|c| c.as_primitive_opt::<UInt64Type>());
                let (Some(counts), Some(positions)) = (counts, positions) else {
                    return Err(Error::internal("checkpointed limit rows lack their counts"));
                };
                let encoded = self.rows.convert_columns(&columns[..width])?;
                for i in 0..rows {
                    let row = encoded.row(i);
                    let copies = Copies {
                        count: counts.value(i),
                        position: positions.value(i),
                    };
                    self.live.insert(row.as_ref().to_vec(), copies);
                    self.keyed.touch(row.as_ref(), copies.heap_size(), ctx);
                }
            }
        }
        // Rows evicted before the checkpoint were copied into the store by
        // key group; the answer reads them there.
        self.keyed.restored(ctx)
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

    /// Past the memory budget the result's rows are evicted, and the answer
    /// (rows 100..150 by first insertion) is the in-memory one.
    #[tokio::test]
    async fn an_evicted_result_answers_as_in_memory() {
        let limit = UpdatingLimitFactory::new(100, 50, SnapshotAt::EndOfInput, &input());
        let store = crate::testing::TestStore::new();
        let mut spilled = OperatorHarness::new(limit.create(&TaskInfo::single("l")).unwrap())
            .with_spill(store.store.clone(), 256);
        let mut in_memory = OperatorHarness::new(limit.create(&TaskInfo::single("l")).unwrap());
        for h in [&mut spilled, &mut in_memory] {
            for chunk in 0..20i64 {
                let rows: Vec<(i64, i64, RowKind)> = (0..50)
                    .map(|i| (chunk * 50 + i, 1, RowKind::Insert))
                    .collect();
                h.process(changes(&rows)).await.unwrap();
                // Every third key of the chunk before is updated: its
                // row moves to the end of the insertion order.
                if chunk > 0 {
                    let updates: Vec<(i64, i64, RowKind)> = (0..50)
                        .step_by(3)
                        .flat_map(|i| {
                            let k = (chunk - 1) * 50 + i;
                            [(k, 1, RowKind::UpdateBefore), (k, 2, RowKind::UpdateAfter)]
                        })
                        .collect();
                    h.process(changes(&updates)).await.unwrap();
                }
            }
            h.close().await.unwrap();
        }
        let answer = spilled.rows_as_strings();
        assert_eq!(answer.len(), 50);
        assert_eq!(answer, in_memory.rows_as_strings());
        assert!(spilled.context().metrics.snapshot().state_spilled_bytes > 0);
    }
}
