//! Top-N per key: `ROW_NUMBER() OVER (PARTITION BY … ORDER BY …)` filtered
//! to `rn <= N`, as Flink's `AppendOnlyTopN` over an append-only stream and
//! its `RetractableTopN` over an updating one (the top 3 of a running
//! `GROUP BY`). With `N = 1` it is deduplication: ordered by time ascending
//! it keeps the first row of each key, descending the last.
//!
//! Over an append-only input each partition keeps its best `N` rows (a row
//! pushed out of the top `N` can never come back); over an updating input it
//! keeps every row, since a retraction of a top row brings the next one in.
//! A retraction takes back one equal row (the earliest of equal ones), and
//! one of a row the partition does not hold (expired state) is skipped, as
//! in Flink. After a batch, the new
//! top `N` of every partition it touched is compared with the old one,
//! position by position: a position whose row changed emits `-U` of the old
//! row and `+U` of the new one (`-D` or `+I` where only one exists), each
//! with its row number. Rows that tie on the order keep their arrival
//! order, as in Flink.
//!
//! Past the operator's memory budget the least recently touched partitions
//! are evicted to RocksDB, each as one entry of its kept rows with their
//! rank keys, and loaded back when touched (see [`super::evictable`]). A
//! Top-N without `PARTITION BY` has a single partition, which stays in
//! memory. Over an updating input the planner therefore ranks hash buckets
//! of rows first, with [`TopNFactory::without_rank_column`], and this
//! partition holds only the buckets' tops.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, UInt32Array, UInt64Array};
use arrow::compute::SortOptions;
use arrow::datatypes::SchemaRef;
use arrow::row::{RowConverter, SortField};
use async_trait::async_trait;
use datafusion::physical_expr::PhysicalSortExpr;

use super::evictable::{EvictableKeys, EvictableValue};
use super::snapshot::{OperatorRestore, OperatorSnapshot};
use super::{Collector, Operator, OperatorContext, OperatorFactory, TaskInfo};
use crate::changelog::{
    ChangelogMode, RowKind, data_schema, split_row_kinds, updating_schema, with_row_kinds,
};
use crate::error::{Error, Result};

/// How rows are numbered within a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RankFunction {
    /// `ROW_NUMBER()`: 1, 2, 3, … (ties in arrival order).
    #[default]
    RowNumber,
    /// `RANK()`: ties share a rank and leave a gap (1, 1, 3).
    Rank,
    /// `DENSE_RANK()`: ties share a rank, no gap (1, 1, 2).
    DenseRank,
}

/// The rank of each of `keys` (in order) under `function`.
pub(super) fn rank_numbers<'a>(
    keys: impl Iterator<Item = &'a RankKey>,
    function: RankFunction,
) -> Vec<u64> {
    let mut ranks: Vec<u64> = Vec::new();
    let mut previous: Option<&Vec<u8>> = None;
    for (i, (order, _)) in keys.enumerate() {
        let tie = previous == Some(order);
        let rank = match (function, tie, ranks.last()) {
            (RankFunction::RowNumber, _, _) => i as u64 + 1,
            (_, true, Some(&last)) => last,
            (RankFunction::Rank, _, _) => i as u64 + 1,
            (RankFunction::DenseRank, _, last) => last.map_or(1, |l| l + 1),
        };
        ranks.push(rank);
        previous = Some(order);
    }
    ranks
}

/// `ORDER BY` keys as EXPLAIN prints them: `price DESC, id`.
pub(super) fn order_label(order: &[PhysicalSortExpr]) -> String {
    order
        .iter()
        .map(|o| {
            let text = o.expr.to_string();
            let bare = text.split('@').next().unwrap_or(&text).to_string();
            if o.options.descending {
                format!("{bare} DESC")
            } else {
                bare
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Encodes `order`'s keys of rows of `schema` so that bytes compare as the
/// rows rank.
pub(super) fn order_converter(
    order: &[PhysicalSortExpr],
    schema: &arrow::datatypes::Schema,
) -> Result<RowConverter> {
    Ok(RowConverter::new(
        order
            .iter()
            .map(|o| {
                Ok(SortField::new_with_options(
                    o.expr.data_type(schema)?,
                    SortOptions {
                        descending: o.options.descending,
                        nulls_first: o.options.nulls_first,
                    },
                ))
            })
            .collect::<Result<Vec<_>>>()?,
    )?)
}

/// The rows of `ranked` within the top `limit` under `function` (with
/// ties, `RANK` and `DENSE_RANK` may give more than `limit`).
fn top_rows(ranked: &Ranked, limit: usize, function: RankFunction) -> Vec<(&RankKey, &Vec<u8>)> {
    if function == RankFunction::RowNumber {
        return ranked.iter().take(limit).collect();
    }
    let mut top = Vec::new();
    let mut previous: Option<&Vec<u8>> = None;
    let mut rank = 0;
    for (i, entry) in ranked.iter().enumerate() {
        if previous != Some(&entry.0.0) {
            rank = match function {
                RankFunction::DenseRank => rank + 1,
                _ => i as u64 + 1,
            };
        }
        if rank > limit as u64 {
            break;
        }
        previous = Some(&entry.0.0);
        top.push(entry);
    }
    top
}

/// Creates [`TopNOperator`]s.
#[derive(Debug, Clone)]
pub struct TopNFactory {
    input_schema: SchemaRef,
    /// The input's data columns (without the row kind of an updating input).
    data_schema: SchemaRef,
    /// The input is updating: every row is kept, retractions take rows back.
    updating: bool,
    /// Input columns that partition the rows (what the shuffle hashes).
    partition_columns: Vec<usize>,
    order: Vec<PhysicalSortExpr>,
    limit: usize,
    output_schema: SchemaRef,
    label: String,
    state_ttl_ms: Option<i64>,
    function: RankFunction,
    /// The output carries each row's rank; without it, only the rows that
    /// enter (`+I`) and leave (`-D`) a partition's top are emitted.
    rank_column: bool,
}

impl TopNFactory {
    /// The best `limit` rows of each partition by `order`. The output is the
    /// input's data columns, then the row number (`rank_field`), as an
    /// updating stream. The input may be updating itself.
    pub fn new(
        input_schema: SchemaRef,
        partition_columns: Vec<usize>,
        order: Vec<PhysicalSortExpr>,
        limit: usize,
        rank_field: arrow::datatypes::Field,
    ) -> Result<Self> {
        if limit == 0 {
            return Err(Error::Config("a Top-N must keep at least one row".into()));
        }
        let data = data_schema(&input_schema);
        let mut fields: Vec<_> = data.fields().iter().map(|f| f.as_ref().clone()).collect();
        fields.push(rank_field.with_nullable(false));
        let output = Arc::new(arrow::datatypes::Schema::new(fields));
        let label = format!(
            "partition_by=[{}], order_by=[{}], n={limit}",
            partition_columns
                .iter()
                .map(|&c| input_schema.field(c).name().as_str())
                .collect::<Vec<_>>()
                .join(", "),
            order_label(&order)
        );
        Ok(Self {
            output_schema: updating_schema(&output),
            updating: ChangelogMode::of(&input_schema).is_updating(),
            data_schema: data,
            input_schema,
            partition_columns,
            order,
            limit,
            label,
            state_ttl_ms: None,
            function: RankFunction::RowNumber,
            rank_column: true,
        })
    }

    /// Emits the input's columns without the rank: `+I` for a row that
    /// enters its partition's top, `-D` for one that leaves it, and nothing
    /// for a row whose rank only moved (Flink's Top-N when the query does
    /// not select the rank). One input row then gives at most two changes
    /// rather than up to `N` updates.
    pub fn without_rank_column(mut self) -> Self {
        self.rank_column = false;
        self.output_schema = updating_schema(&self.data_schema);
        self
    }

    /// Numbers rows with `function` (`ROW_NUMBER` by default); with ties,
    /// `RANK` and `DENSE_RANK` may keep more than `N` rows.
    pub fn with_rank_function(mut self, function: RankFunction) -> Self {
        self.function = function;
        self
    }

    /// Drops partitions untouched for `ttl_ms` of processing time
    /// (`table.exec.state.ttl`).
    pub fn with_state_ttl(mut self, ttl_ms: Option<i64>) -> Self {
        self.state_ttl_ms = ttl_ms.filter(|&t| t > 0);
        self
    }
}

impl fmt::Display for TopNFactory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TopN: {}", self.label)?;
        if self.updating {
            write!(f, ", input=retract")?;
        }
        if self.function != RankFunction::RowNumber {
            write!(f, ", {:?}", self.function)?;
        }
        if !self.rank_column {
            write!(f, ", rank=not-emitted")?;
        }
        if let Some(ttl) = self.state_ttl_ms {
            write!(f, ", state-ttl={ttl}ms")?;
        }
        Ok(())
    }
}

impl OperatorFactory for TopNFactory {
    fn name(&self) -> &str {
        "TopN"
    }
    fn output_schema(&self) -> SchemaRef {
        Arc::clone(&self.output_schema)
    }
    fn create(&self, _task: &TaskInfo) -> Result<Box<dyn Operator>> {
        Ok(Box::new(TopNOperator::new(self.clone())?))
    }
}

/// Where a row ranks: its encoded order key, then its arrival.
pub(super) type RankKey = (Vec<u8>, u64);

/// One partition's best rows: rank key -> encoded row.
pub(super) type Ranked = BTreeMap<RankKey, Vec<u8>>;

/// Per partition touched by a batch: its key and its best rows before.
type Before = Vec<(Vec<u8>, Vec<(RankKey, Vec<u8>)>)>;

/// Keeps the top `N` rows per partition; see the module docs.
pub struct TopNOperator {
    spec: TopNFactory,
    partitions_keys: RowConverter,
    order_keys: RowConverter,
    rows: RowConverter,
    partitions: HashMap<Vec<u8>, Ranked>,
    arrivals: u64,
    /// When each partition was last touched, its size; eviction past the
    /// budget.
    keyed: EvictableKeys,
}

impl fmt::Debug for TopNOperator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TopNOperator")
            .field("partitions", &self.partitions.len())
            .finish()
    }
}

impl TopNOperator {
    fn new(spec: TopNFactory) -> Result<Self> {
        let schema = &spec.input_schema;
        let partitions_keys = RowConverter::new(
            spec.partition_columns
                .iter()
                .map(|&c| SortField::new(schema.field(c).data_type().clone()))
                .collect(),
        )?;
        let order_keys = order_converter(&spec.order, schema)?;
        let rows = RowConverter::new(
            spec.data_schema
                .fields()
                .iter()
                .map(|f| SortField::new(f.data_type().clone()))
                .collect(),
        )?;
        Ok(Self {
            keyed: EvictableKeys::new(spec.state_ttl_ms),
            spec,
            partitions_keys,
            order_keys,
            rows,
            partitions: HashMap::new(),
            arrivals: 0,
        })
    }

    fn partition_columns(&self, batch: &RecordBatch) -> Vec<ArrayRef> {
        self.spec
            .partition_columns
            .iter()
            .map(|&c| Arc::clone(batch.column(c)))
            .collect()
    }

    fn order_columns(&self, batch: &RecordBatch) -> Result<Vec<ArrayRef>> {
        let rows = batch.num_rows();
        self.spec
            .order
            .iter()
            .map(|o| Ok(o.expr.evaluate(batch)?.into_array(rows)?))
            .collect()
    }

    /// Over an append-only input, the rows that may enter their
    /// partition's top `N` (`None`: all of them). A row ranks behind every
    /// kept row of a full partition when its order key is worse than the
    /// last one's (or equal, for `ROW_NUMBER`, since it arrived later): it
    /// can never rank, and is dropped before any state is touched, as
    /// Flink's `AppendOnlyTopNFunction` does. A partition not in memory
    /// (new, or evicted) keeps its rows. `DENSE_RANK` keeps ties past `N`
    /// rows, so its rows are all kept.
    fn rows_that_may_rank(&self, batch: &RecordBatch) -> Result<Option<UInt32Array>> {
        let (limit, function) = (self.spec.limit, self.spec.function);
        if self.spec.updating || function == RankFunction::DenseRank || self.partitions.is_empty() {
            return Ok(None);
        }
        let keys = if self.spec.partition_columns.is_empty() {
            None
        } else {
            Some(
                self.partitions_keys
                    .convert_columns(&self.partition_columns(batch))?,
            )
        };
        let order = self
            .order_keys
            .convert_columns(&self.order_columns(batch)?)?;
        let rows = batch.num_rows();
        let kept: Vec<u32> = (0..rows)
            .filter(|&row| {
                let key: &[u8] = keys.as_ref().map_or(&[], |k| k.row(row).data());
                let Some(ranked) = self.partitions.get(key) else {
                    return true;
                };
                let Some(((last, _), _)) = ranked.last_key_value() else {
                    return true;
                };
                if ranked.len() < limit {
                    return true;
                }
                let order = order.row(row).data();
                match function {
                    RankFunction::RowNumber => order < last.as_slice(),
                    _ => order <= last.as_slice(),
                }
            })
            .map(|row| row as u32)
            .collect();
        Ok((kept.len() < rows).then(|| UInt32Array::from(kept)))
    }

    /// Applies rows: inserts them (over an append-only input keeping only
    /// the best `limit` per partition) and takes back the rows that an
    /// updating input's `-U`/`-D` retract; `arrivals` are the rows' arrival
    /// numbers (restored state). Returns, per partition first touched, its
    /// top rows before, and how many retractions found no row.
    fn apply(
        &mut self,
        batch: &RecordBatch,
        arrivals: Option<&UInt64Array>,
    ) -> Result<(Before, usize)> {
        let (batch, kinds) = split_row_kinds(batch)?;
        let (limit, function) = (self.spec.limit, self.spec.function);
        // Without PARTITION BY every row is in the one partition.
        let keys = if self.spec.partition_columns.is_empty() {
            None
        } else {
            Some(
                self.partitions_keys
                    .convert_columns(&self.partition_columns(&batch))?,
            )
        };
        let order = self
            .order_keys
            .convert_columns(&self.order_columns(&batch)?)?;
        let data = self.rows.convert_columns(batch.columns())?;
        let mut before = Vec::new();
        let mut unmatched = 0;
        let mut seen: HashSet<&[u8]> = HashSet::new();
        for row in 0..batch.num_rows() {
            let key: &[u8] = keys.as_ref().map_or(&[], |k| k.row(row).data());
            if !self.partitions.contains_key(key) {
                self.partitions.insert(key.to_vec(), Ranked::new());
            }
            let ranked = self
                .partitions
                .get_mut(key)
                .ok_or_else(|| Error::internal("a Top-N partition vanished while applied"))?;
            if seen.insert(key) {
                let old = top_rows(ranked, limit, function)
                    .into_iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect::<Vec<_>>();
                before.push((key.to_vec(), old));
            }
            let order_key = order.row(row).as_ref().to_vec();
            let retracts = kinds
                .as_ref()
                .is_some_and(|k| matches!(k[row], RowKind::UpdateBefore | RowKind::Delete));
            if retracts {
                let value = data.row(row);
                let found = ranked
                    .range((order_key.clone(), 0)..=(order_key, u64::MAX))
                    .find(|(_, v)| v.as_slice() == value.as_ref())
                    .map(|(k, _)| k.clone());
                match found {
                    Some(k) => {
                        ranked.remove(&k);
                    }
                    None => unmatched += 1,
                }
                continue;
            }
            let arrival = match arrivals {
                Some(a) => a.value(row),
                None => {
                    self.arrivals += 1;
                    self.arrivals
                }
            };
            let sort = (order_key, arrival);
            if self.spec.updating {
                // A retraction may bring any row into the top N: keep all.
                ranked.insert(sort, data.row(row).as_ref().to_vec());
                continue;
            }
            if function != RankFunction::RowNumber {
                // Ties may keep more than N rows: drop what ranks past N.
                ranked.insert(sort, data.row(row).as_ref().to_vec());
                let keep = top_rows(ranked, limit, function).len();
                while ranked.len() > keep {
                    ranked.pop_last();
                }
                continue;
            }
            // Not better than the last of a full top N: it never ranks.
            if ranked.len() >= limit
                && ranked
                    .last_key_value()
                    .is_some_and(|(last, _)| *last < sort)
            {
                continue;
            }
            ranked.insert(sort, data.row(row).as_ref().to_vec());
            while ranked.len() > limit {
                ranked.pop_last();
            }
        }
        Ok((before, unmatched))
    }

    /// The changes from `old` to `new` row by row: a row whose rank moved
    /// is updated, one that left deleted, one that came inserted.
    fn diff_by_row<'a>(
        old: &'a [(RankKey, Vec<u8>)],
        new: &[(&'a RankKey, &'a Vec<u8>)],
        function: RankFunction,
        picked: &mut Vec<&'a [u8]>,
        ranks: &mut Vec<u64>,
        kinds: &mut Vec<RowKind>,
    ) {
        let old_ranks = rank_numbers(old.iter().map(|(k, _)| k), function);
        let new_ranks = rank_numbers(new.iter().map(|(k, _)| *k), function);
        let now: HashMap<&RankKey, u64> = new
            .iter()
            .zip(&new_ranks)
            .map(|((k, _), r)| (*k, *r))
            .collect();
        let then: HashMap<&RankKey, u64> = old
            .iter()
            .zip(&old_ranks)
            .map(|((k, _), r)| (k, *r))
            .collect();
        for ((key, row), &rank) in old.iter().zip(&old_ranks) {
            match now.get(key) {
                Some(&r) if r == rank => {}
                Some(&r) => {
                    picked.extend([row.as_slice(), row.as_slice()]);
                    ranks.extend([rank, r]);
                    kinds.extend([RowKind::UpdateBefore, RowKind::UpdateAfter]);
                }
                None => {
                    picked.push(row);
                    ranks.push(rank);
                    kinds.push(RowKind::Delete);
                }
            }
        }
        for ((key, row), &rank) in new.iter().zip(&new_ranks) {
            if !then.contains_key(key) {
                picked.push(row);
                ranks.push(rank);
                kinds.push(RowKind::Insert);
            }
        }
    }

    /// The changes from `old` to `new` by membership alone: a row that
    /// left is deleted, one that came is inserted.
    fn diff_by_membership<'a>(
        old: &'a [(RankKey, Vec<u8>)],
        new: &[(&'a RankKey, &'a Vec<u8>)],
        picked: &mut Vec<&'a [u8]>,
        kinds: &mut Vec<RowKind>,
    ) {
        let now: HashSet<&RankKey> = new.iter().map(|(k, _)| *k).collect();
        let then: HashSet<&RankKey> = old.iter().map(|(k, _)| k).collect();
        for (key, row) in old {
            if !now.contains(key) {
                picked.push(row);
                kinds.push(RowKind::Delete);
            }
        }
        for (key, row) in new {
            if !then.contains(key) {
                picked.push(row);
                kinds.push(RowKind::Insert);
            }
        }
    }

    fn emit(&self, before: &Before, out: &mut Collector) -> Result<()> {
        let mut picked: Vec<&[u8]> = Vec::new();
        let mut ranks: Vec<u64> = Vec::new();
        let mut kinds: Vec<RowKind> = Vec::new();
        for (key, old) in before {
            // A partition whose every row was taken back has none.
            let new: Vec<(&RankKey, &Vec<u8>)> = self
                .partitions
                .get(key)
                .map(|ranked| top_rows(ranked, self.spec.limit, self.spec.function))
                .unwrap_or_default();
            if !self.spec.rank_column {
                Self::diff_by_membership(old, &new, &mut picked, &mut kinds);
                continue;
            }
            if self.spec.function != RankFunction::RowNumber {
                Self::diff_by_row(
                    old,
                    &new,
                    self.spec.function,
                    &mut picked,
                    &mut ranks,
                    &mut kinds,
                );
                continue;
            }
            for i in 0..old.len().max(new.len()) {
                let rank = i as u64 + 1;
                match (old.get(i), new.get(i)) {
                    (Some((old_key, _)), Some((new_key, _))) if old_key == *new_key => {}
                    (Some((_, old_row)), Some((_, new_row))) => {
                        picked.extend([old_row.as_slice(), new_row.as_slice()]);
                        ranks.extend([rank, rank]);
                        kinds.extend([RowKind::UpdateBefore, RowKind::UpdateAfter]);
                    }
                    (Some((_, old_row)), None) => {
                        picked.push(old_row);
                        ranks.push(rank);
                        kinds.push(RowKind::Delete);
                    }
                    (None, Some((_, new_row))) => {
                        picked.push(new_row);
                        ranks.push(rank);
                        kinds.push(RowKind::Insert);
                    }
                    (None, None) => {}
                }
            }
        }
        if picked.is_empty() {
            return Ok(());
        }
        let parser = self.rows.parser();
        let mut columns = self
            .rows
            .convert_rows(picked.iter().map(|r| parser.parse(r)))?;
        if self.spec.rank_column {
            columns.push(Arc::new(UInt64Array::from(ranks)));
        }
        out.collect(with_row_kinds(&self.spec.output_schema, columns, kinds)?);
        Ok(())
    }
}

#[async_trait]
impl Operator for TopNOperator {
    async fn process_batch(
        &mut self,
        batch: RecordBatch,
        ctx: &mut OperatorContext,
        out: &mut Collector,
    ) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        self.keyed
            .sweep(&mut self.partitions, ctx, "dropped Top-N partitions")?;
        let batch = match self.rows_that_may_rank(&batch)? {
            Some(kept) if kept.is_empty() => return Ok(()),
            Some(kept) => arrow::compute::take_record_batch(&batch, &kept)?,
            None => batch,
        };
        if self.keyed.may_have_evicted() && !self.spec.partition_columns.is_empty() {
            let (data, _) = split_row_kinds(&batch)?;
            let columns = self.partition_columns(&data);
            let keys = self.partitions_keys.convert_columns(&columns)?;
            self.keyed
                .load(&mut self.partitions, &columns, &keys, ctx)?;
        }
        let (before, unmatched) = self.apply(&batch, None)?;
        if unmatched > 0 {
            ctx.unmatched_retractions(crate::metrics::UnmatchedAt::TopN, unmatched as u64);
        }
        self.emit(&before, out)?;
        for (key, _) in &before {
            match self.partitions.get(key) {
                Some(ranked) if ranked.is_empty() => {
                    self.partitions.remove(key);
                    self.keyed.forget(key);
                }
                Some(ranked) => self.keyed.touch(key, ranked.heap_size(), ctx),
                None => {}
            }
        }
        if self.spec.partition_columns.is_empty() {
            return Ok(());
        }
        self.keyed
            .evict_if_over_budget(&mut self.partitions, &self.partitions_keys, ctx)
    }

    async fn handle_checkpoint(
        &mut self,
        _barrier: &crate::message::CheckpointBarrier,
        ctx: &mut OperatorContext,
        _out: &mut Collector,
    ) -> Result<()> {
        self.keyed
            .sweep(&mut self.partitions, ctx, "dropped Top-N partitions")
    }

    async fn snapshot_state(
        &mut self,
        ctx: &mut OperatorContext,
        snapshot: &mut OperatorSnapshot,
    ) -> Result<()> {
        let state = ranked_rows_state(
            &self.rows,
            self.partitions.values(),
            &self.spec.partition_columns,
            ctx,
        )?;
        snapshot.put_key_groups(ctx.task.key_groups(), state)?;
        snapshot.operator = Some(self.arrivals.to_le_bytes().to_vec());
        Ok(())
    }

    fn restore_state(&mut self, ctx: &OperatorContext, restore: OperatorRestore) -> Result<()> {
        // Arrival numbers continue past every old subtask's.
        for (_, bytes) in &restore.operator {
            let counter: [u8; 8] = bytes
                .as_slice()
                .try_into()
                .map_err(|_| Error::internal("checkpointed Top-N counter is not 8 bytes"))?;
            self.arrivals = self.arrivals.max(u64::from_le_bytes(counter));
        }
        for (_, bytes) in restore.keyed {
            for (batch, arrivals) in decode_ranked_rows(&bytes, &self.spec.data_schema)? {
                for (key, _) in self.apply(&batch, Some(&arrivals))?.0 {
                    if let Some(ranked) = self.partitions.get(&key) {
                        self.keyed.touch(&key, ranked.heap_size(), ctx);
                    }
                }
            }
        }
        // Partitions evicted before the checkpoint were copied into the
        // store by key group; they come back when touched.
        self.keyed.restored(ctx)
    }
}

mod ranked;

pub(super) use ranked::{decode_ranked_rows, ranked_rows_state};

#[cfg(test)]
mod tests;
