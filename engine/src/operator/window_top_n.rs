//! Window Top-N: `ROW_NUMBER()` (or `RANK()`, `DENSE_RANK()`) `OVER
//! (PARTITION BY window_start, window_end, … ORDER BY …)` filtered to
//! `rn <= N`, over the rows of a window table function or the output of a
//! window aggregate, as Flink's `WindowRank`.
//!
//! Rows are buffered per window (by its end) and partition; each partition
//! keeps only its best `N` rows (the input is append-only, so a row pushed
//! out can never come back). When the watermark reaches a window's last
//! millisecond (`window_end - 1`, as window aggregates fire), its rows are
//! emitted once, in rank order with their rank, and its state is dropped:
//! the output is append-only. Rows for a window that has fired are late:
//! counted, and dropped or, with a late-rows output, emitted there.
//!
//! Over a window aggregate this fires after the aggregate's rows: the
//! aggregate emits a window's rows before it forwards the watermark that
//! fired it, and this operator's watermark is the least of its inputs'.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, UInt64Array};
use arrow::datatypes::{Field, Schema, SchemaRef, UInt64Type};
use arrow::row::{RowConverter, SortField};
use async_trait::async_trait;
use datafusion::physical_expr::PhysicalSortExpr;

use super::late_rows::LateRows;
use super::snapshot::{
    KeyedStateBuilder, OperatorRestore, OperatorSnapshot, decode_batches, decode_watermark,
    encode_watermark,
};
use super::top_n::{RankKey, Ranked, order_converter, order_label, rank_numbers};
use super::{Collector, Operator, OperatorContext, OperatorFactory, RankFunction, TaskInfo};
use crate::error::{Error, Result};
use crate::message::Watermark;
use crate::time::to_epoch_millis;

/// Creates [`WindowTopNOperator`]s.
#[derive(Debug, Clone)]
pub struct WindowTopNFactory {
    input_schema: SchemaRef,
    /// The input column holding the window's end (or its start or
    /// `window_time`, then `end_offset_ms` is what to add to get the end).
    window_column: usize,
    end_offset_ms: i64,
    /// The other partition columns (what the shuffle hashes).
    partition_columns: Vec<usize>,
    order: Vec<PhysicalSortExpr>,
    limit: usize,
    function: RankFunction,
    late_rows: bool,
    output_schema: SchemaRef,
}

impl WindowTopNFactory {
    /// The best `limit` rows by `order` per window and partition. The
    /// window is told by `window_column` plus `end_offset_ms`; the output
    /// is the input's columns, then the rank (`rank_field`, an unsigned
    /// 64-bit integer), append-only.
    pub fn new(
        input_schema: SchemaRef,
        window_column: usize,
        end_offset_ms: i64,
        partition_columns: Vec<usize>,
        order: Vec<PhysicalSortExpr>,
        limit: usize,
        rank_field: Field,
    ) -> Result<Self> {
        if limit == 0 {
            return Err(Error::Config("a Top-N must keep at least one row".into()));
        }
        let columns = input_schema.fields().len();
        if let Some(c) = partition_columns
            .iter()
            .chain([&window_column])
            .find(|&&c| c >= columns)
        {
            return Err(Error::internal(format!(
                "window Top-N column {c} is outside its input's {columns} columns"
            )));
        }
        let mut fields: Vec<Field> = input_schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        fields.push(rank_field.with_nullable(false));
        Ok(Self {
            output_schema: Arc::new(Schema::new(fields)),
            input_schema,
            window_column,
            end_offset_ms,
            partition_columns,
            order,
            limit,
            function: RankFunction::RowNumber,
            late_rows: false,
        })
    }

    /// Numbers rows with `function` (`ROW_NUMBER` by default); with ties,
    /// `RANK` and `DENSE_RANK` may keep more than `N` rows.
    pub fn with_rank_function(mut self, function: RankFunction) -> Self {
        self.function = function;
        self
    }

    /// Emits late rows on the late-rows output instead of dropping them.
    pub fn with_late_rows(mut self) -> Self {
        self.late_rows = true;
        self
    }
}

impl fmt::Display for WindowTopNFactory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = |c: usize| self.input_schema.field(c).name().as_str();
        write!(
            f,
            "WindowTopN: window={}, partition_by=[{}], order_by=[{}], n={}",
            name(self.window_column),
            self.partition_columns
                .iter()
                .map(|&c| name(c))
                .collect::<Vec<_>>()
                .join(", "),
            order_label(&self.order),
            self.limit
        )?;
        if self.function != RankFunction::RowNumber {
            write!(f, ", {:?}", self.function)?;
        }
        Ok(())
    }
}

impl OperatorFactory for WindowTopNFactory {
    fn name(&self) -> &str {
        "WindowTopN"
    }
    fn output_schema(&self) -> SchemaRef {
        Arc::clone(&self.output_schema)
    }
    fn create(&self, _task: &TaskInfo) -> Result<Box<dyn Operator>> {
        Ok(Box::new(WindowTopNOperator::new(self.clone())?))
    }
}

/// One window's partitions, ordered so a window emits deterministically.
type Partitions = BTreeMap<Vec<u8>, Ranked>;

/// Keeps the top `N` rows per window and partition; see the module docs.
pub struct WindowTopNOperator {
    spec: WindowTopNFactory,
    partition_keys: RowConverter,
    order_keys: RowConverter,
    rows: RowConverter,
    /// Open windows by end.
    windows: BTreeMap<i64, Partitions>,
    watermark: Watermark,
    /// Rows seen, numbering arrivals (ties rank in arrival order).
    arrivals: u64,
    late_rows: Option<LateRows>,
}

impl fmt::Debug for WindowTopNOperator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WindowTopNOperator")
            .field("windows", &self.windows.len())
            .field("watermark", &self.watermark)
            .finish()
    }
}

impl WindowTopNOperator {
    fn new(spec: WindowTopNFactory) -> Result<Self> {
        let schema = &spec.input_schema;
        let sort_field = |c: usize| SortField::new(schema.field(c).data_type().clone());
        let partition_keys = RowConverter::new(
            spec.partition_columns
                .iter()
                .map(|&c| sort_field(c))
                .collect(),
        )?;
        let order_keys = order_converter(&spec.order, schema)?;
        let rows = RowConverter::new((0..schema.fields().len()).map(sort_field).collect())?;
        let late_rows = spec.late_rows.then(|| LateRows::new(schema));
        Ok(Self {
            spec,
            partition_keys,
            order_keys,
            rows,
            windows: BTreeMap::new(),
            watermark: Watermark::MIN,
            arrivals: 0,
            late_rows,
        })
    }

    /// Adds the rows of `batch` to their windows, numbering them from
    /// `arrivals` or the operator's counter. With `late_after`, rows of a
    /// window ending there or before are not added: their indices are
    /// returned.
    fn insert(
        &mut self,
        batch: &RecordBatch,
        arrivals: Option<&UInt64Array>,
        late_after: Option<i64>,
    ) -> Result<Vec<u32>> {
        let ends = to_epoch_millis(batch.column(self.spec.window_column))?;
        let keys = if self.spec.partition_columns.is_empty() {
            None
        } else {
            let columns: Vec<ArrayRef> = self
                .spec
                .partition_columns
                .iter()
                .map(|&c| Arc::clone(batch.column(c)))
                .collect();
            Some(self.partition_keys.convert_columns(&columns)?)
        };
        let order_columns = self
            .spec
            .order
            .iter()
            .map(|o| Ok(o.expr.evaluate(batch)?.into_array(batch.num_rows())?))
            .collect::<Result<Vec<_>>>()?;
        let order = self.order_keys.convert_columns(&order_columns)?;
        let data = self.rows.convert_columns(batch.columns())?;
        let mut late = Vec::new();
        for row in 0..batch.num_rows() {
            let end = ends
                .is_valid(row)
                .then(|| ends.value(row).saturating_add(self.spec.end_offset_ms));
            let end = match (end, late_after) {
                (Some(end), Some(bound)) if end <= bound => None,
                (end, _) => end,
            };
            let Some(end) = end else {
                late.push(row as u32);
                continue;
            };
            let arrival = match arrivals {
                Some(a) => a.value(row),
                None => {
                    self.arrivals += 1;
                    self.arrivals
                }
            };
            let key = keys
                .as_ref()
                .map_or_else(Vec::new, |k| k.row(row).as_ref().to_vec());
            let ranked = self.windows.entry(end).or_default().entry(key).or_default();
            keep_best(
                ranked,
                (order.row(row).as_ref().to_vec(), arrival),
                data.row(row).as_ref(),
                self.spec.limit,
                self.spec.function,
            );
        }
        Ok(late)
    }

    /// Emits and drops every window the watermark has passed the end of.
    fn fire_until(&mut self, watermark: Watermark, out: &mut Collector) -> Result<()> {
        // A window [start, end) is complete once the watermark reaches end - 1.
        let bound = watermark.0.saturating_add(1);
        while let Some(entry) = self.windows.first_entry() {
            if *entry.key() > bound {
                break;
            }
            let partitions = entry.remove();
            let mut picked: Vec<&[u8]> = Vec::new();
            let mut ranks: Vec<u64> = Vec::new();
            for ranked in partitions.values() {
                ranks.extend(rank_numbers(ranked.keys(), self.spec.function));
                picked.extend(ranked.values().map(Vec::as_slice));
            }
            if picked.is_empty() {
                continue;
            }
            let parser = self.rows.parser();
            let mut columns = self
                .rows
                .convert_rows(picked.iter().map(|r| parser.parse(r)))?;
            columns.push(Arc::new(UInt64Array::from(ranks)));
            out.collect(RecordBatch::try_new(
                Arc::clone(&self.spec.output_schema),
                columns,
            )?);
        }
        Ok(())
    }
}

/// Adds a row ranking at `sort` to a partition's best rows, keeping only
/// those ranked at most `limit` under `function`.
fn keep_best(ranked: &mut Ranked, sort: RankKey, row: &[u8], limit: usize, function: RankFunction) {
    if function != RankFunction::RowNumber {
        // Ties may keep more than N rows: drop what ranks past N.
        ranked.insert(sort, row.to_vec());
        let keep = rank_numbers(ranked.keys(), function)
            .iter()
            .take_while(|&&r| r <= limit as u64)
            .count();
        while ranked.len() > keep {
            ranked.pop_last();
        }
        return;
    }
    // Not better than the last of a full top N: it never ranks.
    if ranked.len() >= limit
        && ranked
            .last_key_value()
            .is_some_and(|(last, _)| *last < sort)
    {
        return;
    }
    ranked.insert(sort, row.to_vec());
    while ranked.len() > limit {
        ranked.pop_last();
    }
}

#[async_trait]
impl Operator for WindowTopNOperator {
    async fn process_batch(
        &mut self,
        batch: RecordBatch,
        ctx: &mut OperatorContext,
        out: &mut Collector,
    ) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let late = self.insert(&batch, None, Some(self.watermark.0.saturating_add(1)))?;
        if !late.is_empty() {
            ctx.metrics.add_late(late.len());
            if let Some(rows) = &self.late_rows {
                rows.emit(&batch, Some(&late), self.watermark, ctx, out)?;
            }
        }
        Ok(())
    }

    async fn handle_watermark(
        &mut self,
        watermark: Watermark,
        _ctx: &mut OperatorContext,
        out: &mut Collector,
    ) -> Result<Option<Watermark>> {
        if watermark > self.watermark {
            self.watermark = watermark;
            self.fire_until(watermark, out)?;
        }
        Ok(Some(watermark))
    }

    /// Keyed state rows: the row (its window columns tell its window), its
    /// arrival number;
    /// the watermark as operator state.
    async fn snapshot_state(
        &mut self,
        ctx: &mut OperatorContext,
        snapshot: &mut OperatorSnapshot,
    ) -> Result<()> {
        let mut builder = KeyedStateBuilder::default();
        for partitions in self.windows.values() {
            let entries: Vec<(&RankKey, &Vec<u8>)> =
                partitions.values().flat_map(|r| r.iter()).collect();
            if entries.is_empty() {
                continue;
            }
            let parser = self.rows.parser();
            let mut columns = self
                .rows
                .convert_rows(entries.iter().map(|(_, row)| parser.parse(row)))?;
            columns.push(Arc::new(UInt64Array::from_iter_values(
                entries.iter().map(|((_, arrival), _)| *arrival),
            )));
            builder.add_rows(
                &columns,
                &self.spec.partition_columns,
                entries.len(),
                ctx.task.max_key_groups,
            )?;
        }
        snapshot.put_key_groups(ctx.task.key_groups(), builder.finish()?)?;
        snapshot.operator = Some(encode_watermark(self.watermark));
        Ok(())
    }

    fn restore_state(&mut self, _ctx: &OperatorContext, restore: OperatorRestore) -> Result<()> {
        self.watermark = decode_watermark(&restore.operator)?;
        let width = self.spec.input_schema.fields().len();
        for (_, bytes) in restore.keyed {
            for (columns, rows) in decode_batches(&bytes)? {
                if columns.len() != width + 1 {
                    return Err(Error::internal(format!(
                        "checkpointed window Top-N state has {} columns, expected {}",
                        columns.len(),
                        width + 1
                    )));
                }
                let arrivals = columns[width]
                    .as_primitive_opt::<UInt64Type>()
                    .ok_or_else(|| Error::internal("checkpointed window Top-N lacks arrivals"))?;
                let batch = RecordBatch::try_new_with_options(
                    Arc::clone(&self.spec.input_schema),
                    columns[..width].to_vec(),
                    &arrow::array::RecordBatchOptions::new().with_row_count(Some(rows)),
                )?;
                self.insert(&batch, Some(arrivals), None)?;
                // New rows tie behind every restored one.
                let last = arrivals.values().iter().copied().max().unwrap_or(0);
                self.arrivals = self.arrivals.max(last);
            }
        }
        Ok(())
    }

    async fn on_close(&mut self, _ctx: &mut OperatorContext, out: &mut Collector) -> Result<()> {
        // No more input: every open window is complete.
        self.fire_until(Watermark::MAX, out)
    }
}

#[cfg(test)]
mod tests {
    use arrow::compute::SortOptions;
    use arrow::datatypes::DataType;
    use datafusion::physical_expr::expressions::Column;

    use super::*;
    use crate::graph::OutputPort;
    use crate::message::Message;
    use crate::testing::OperatorHarness;
    use crate::testing::fixtures::{batch, input_schema};

    /// The best `n` rows by value (descending) per key and window; the
    /// `time` column holds the window's end.
    fn factory(n: usize, function: RankFunction) -> WindowTopNFactory {
        windowed(n, 0, vec![0], true).with_rank_function(function)
    }

    /// The best `n` rows by value per window, told by the `time` column
    /// plus `offset`, and `keys`.
    fn windowed(n: usize, offset: i64, keys: Vec<usize>, descending: bool) -> WindowTopNFactory {
        let options = SortOptions {
            descending,
            nulls_first: false,
        };
        let expr = Arc::new(Column::new("value", 2));
        let order = vec![PhysicalSortExpr { expr, options }];
        let rank = Field::new("rn", DataType::UInt64, false);
        WindowTopNFactory::new(input_schema(), 1, offset, keys, order, n, rank).unwrap()
    }

    fn top(n: usize) -> Box<dyn Operator> {
        factory(n, RankFunction::RowNumber)
            .create(&TaskInfo::single("wtopn"))
            .unwrap()
    }

    #[tokio::test]
    async fn emits_each_window_once_in_rank_order_when_the_watermark_passes_its_end() {
        let mut h = OperatorHarness::new(top(2));
        h.process(batch(&[(1, 10, 5), (2, 10, 7), (1, 20, 1), (1, 10, 9)]))
            .await
            .unwrap();
        h.process(batch(&[(1, 10, 3), (1, 10, 6), (2, 20, 4)]))
            .await
            .unwrap();
        h.watermark(Watermark(8)).await.unwrap();
        assert!(h.rows_as_strings().is_empty(), "window 10 is still open");
        h.watermark(Watermark(9)).await.unwrap();
        assert_eq!(
            h.rows_as_strings(),
            vec!["1,10,9,1", "1,10,6,2", "2,10,7,1"]
        );
        assert_eq!(h.take_watermarks(), vec![Watermark(8), Watermark(9)]);
        h.close().await.unwrap();
        assert_eq!(h.rows_as_strings(), vec!["1,20,1,1", "2,20,4,1"]);
    }

    #[tokio::test]
    async fn rows_of_a_fired_window_are_late_and_go_to_the_late_rows_output() {
        let mut op = factory(1, RankFunction::RowNumber)
            .with_late_rows()
            .create(&TaskInfo::single("wtopn"))
            .unwrap();
        let mut ctx = OperatorContext::for_test("WindowTopN");
        let mut out = Collector::new();
        op.process_batch(batch(&[(1, 10, 5)]), &mut ctx, &mut out)
            .await
            .unwrap();
        op.handle_watermark(Watermark(9), &mut ctx, &mut out)
            .await
            .unwrap();
        // Window 10 fired: its row is late; window 20 is open.
        op.process_batch(batch(&[(1, 10, 8), (1, 20, 2)]), &mut ctx, &mut out)
            .await
            .unwrap();
        op.on_close(&mut ctx, &mut out).await.unwrap();
        let side = out.take_side();
        assert_eq!(side.len(), 1);
        assert_eq!(side[0].0, OutputPort::LateRows);
        assert_eq!(
            crate::testing::format_rows(&side[0].1),
            vec!["1,10,8,WindowTopN (subtask 0),1970-01-01T00:00:00.009"]
        );
        let main = out.drain().unwrap();
        assert!(
            matches!(&main[..], [Message::Data(a), Message::Data(b)]
                if crate::testing::format_rows(a) == ["1,10,5,1"]
                    && crate::testing::format_rows(b) == ["1,20,2,1"]),
            "{main:?}"
        );
        let late = ctx
            .metrics
            .late_records_dropped
            .load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(late, 1);
    }

    #[tokio::test]
    async fn rank_and_dense_rank_keep_ties() {
        let rows = [(1, 10, 5), (1, 10, 9), (1, 10, 5), (1, 10, 3), (1, 10, 1)];
        let mut rank = OperatorHarness::new(
            factory(2, RankFunction::Rank)
                .create(&TaskInfo::single("wtopn"))
                .unwrap(),
        );
        rank.process(batch(&rows)).await.unwrap();
        rank.close().await.unwrap();
        assert_eq!(
            rank.rows_as_strings(),
            vec!["1,10,9,1", "1,10,5,2", "1,10,5,2"]
        );
        let mut dense = OperatorHarness::new(
            factory(3, RankFunction::DenseRank)
                .create(&TaskInfo::single("wtopn"))
                .unwrap(),
        );
        dense.process(batch(&rows)).await.unwrap();
        dense.close().await.unwrap();
        assert_eq!(
            dense.rows_as_strings(),
            vec!["1,10,9,1", "1,10,5,2", "1,10,5,2", "1,10,3,3"]
        );
    }

    #[tokio::test]
    async fn an_end_offset_fires_windows_told_by_their_start() {
        // The `time` column holds the start of 10 ms windows.
        let op = windowed(1, 10, vec![], false)
            .create(&TaskInfo::single("wtopn"))
            .unwrap();
        let mut h = OperatorHarness::new(op);
        h.process(batch(&[(1, 0, 5), (2, 0, 3), (3, 10, 1)]))
            .await
            .unwrap();
        h.watermark(Watermark(9)).await.unwrap();
        assert_eq!(h.rows_as_strings(), vec!["2,0,3,1"]);
    }

    #[tokio::test]
    async fn restored_at_another_parallelism_every_window_fires_as_if_uninterrupted() {
        let first: Vec<(i64, i64, i64)> = (0..40).map(|i| (i % 8, 10 + 10 * (i % 2), i)).collect();
        let second: Vec<(i64, i64, i64)> = (40..80).map(|i| (i % 8, 20, i % 13)).collect();
        let mut plain = OperatorHarness::new(top(2));
        plain.process(batch(&first)).await.unwrap();
        plain.watermark(Watermark(9)).await.unwrap();
        plain.process(batch(&second)).await.unwrap();
        plain.close().await.unwrap();
        let mut want = plain.rows_as_strings();
        want.sort();
        // Two subtasks, each with the keys of its key groups, snapshotted
        // after window 10 fired.
        let mut snapshots = Vec::new();
        let mut got = Vec::new();
        for subtask in 0..2 {
            let task = TaskInfo {
                subtask,
                parallelism: 2,
                ..TaskInfo::single("wtopn")
            };
            let mut h = OperatorHarness::new(top(2));
            h.context_mut().task = task.clone();
            let mine: Vec<_> = first
                .iter()
                .copied()
                .filter(|&(k, _, _)| owned(&task, k))
                .collect();
            h.process(batch(&mine)).await.unwrap();
            h.watermark(Watermark(9)).await.unwrap();
            got.extend(h.rows_as_strings());
            snapshots.push(h.snapshot().await.unwrap());
        }
        // Restored at three subtasks.
        for subtask in 0..3 {
            let task = TaskInfo {
                subtask,
                parallelism: 3,
                ..TaskInfo::single("wtopn")
            };
            let mut h = OperatorHarness::restored_as(top(2), task.clone(), &snapshots).unwrap();
            let mine: Vec<_> = second
                .iter()
                .copied()
                .filter(|&(k, _, _)| owned(&task, k))
                .collect();
            h.process(batch(&mine)).await.unwrap();
            h.close().await.unwrap();
            got.extend(h.rows_as_strings());
        }
        got.sort();
        assert_eq!(got, want);
    }

    /// Whether `task` owns `key` (as the shuffle routes it).
    fn owned(task: &TaskInfo, key: i64) -> bool {
        let keys: Vec<ArrayRef> = vec![Arc::new(arrow::array::Int64Array::from(vec![key]))];
        let hash = crate::partition::hash_keys(&keys, 1).unwrap()[0];
        task.key_groups()
            .contains(&crate::partition::key_group_of(hash, task.max_key_groups))
    }
}
