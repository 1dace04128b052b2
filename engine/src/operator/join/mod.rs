//! A regular equi-join of two streams, as Flink's `StreamingJoinOperator`:
//! `INNER`, `LEFT`, `RIGHT` and `FULL OUTER`, and the semi and anti joins
//! of `IN` / `EXISTS` subqueries, over append-only or updating inputs.
//!
//! Both inputs are hashed by the join key, so a key's rows of both sides
//! meet in one subtask, which keeps them (see [`state::KeyRows`]): each
//! distinct row with its copies and the number of rows of the other side
//! it matches. A row from one side is joined with the other side's rows of
//! its key that pass the join's extra condition, and then kept:
//!
//! - an insert (`+I`/`+U`) emits `+I` of each pair; a retraction (`-U`/`-D`)
//!   takes one copy back and emits `-D` of each pair (a retraction of a row
//!   the side does not hold is dropped and counted, as in the Top-N);
//! - an outer join pads an unmatched row of a preserved side with nulls:
//!   `+I` of the padded row while it matches nothing, `-D` of it when its
//!   first match comes, `+I` again when its last match is retracted;
//! - a semi join emits a row of its side once it has a match (and `-D` when
//!   it has none left), an anti join while it has none.
//!
//! Rows whose key has a null never match (SQL's `=`); a preserved or anti
//! side passes them through padded, unkept. The output is append-only for
//! an inner or semi join of append-only inputs, and updating otherwise.
//!
//! An *interval join* (Flink's: `a.ts BETWEEN b.ts - INTERVAL … AND b.ts +
//! INTERVAL …` on event-time columns, [`IntervalBounds`]) reads append-only
//! inputs and emits append-only output. A row is kept until the watermark
//! passes the last time a row of the other side could match it. Then it is
//! dropped, and for an outer or anti join it is emitted alone if it never
//! matched, once its interval has closed. Its output watermark is held back
//! by the interval, so those rows are not late downstream.
//!
//! State grows with the inputs unless `table.exec.state.ttl` bounds it:
//! then a key untouched for the TTL is dropped, both sides, without
//! retracting anything (Flink's semantics). Past the operator's memory
//! budget the least recently touched keys are evicted to RocksDB and loaded
//! back when touched ([`super::evictable`]). Checkpoints write every key by
//! its key group.

mod condition;
mod interval;
mod state;

use condition::condition_label;
pub use interval::IntervalBounds;
use interval::event_times;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BinaryArray, RecordBatch, UInt32Array};
use arrow::datatypes::{Schema, SchemaRef};
use arrow::row::{RowConverter, SortField};
use async_trait::async_trait;
use datafusion::physical_expr::PhysicalExpr;

use self::state::KeyRows;
use super::evictable::{EvictableKeys, EvictableValue};
use super::snapshot::{KeyedStateBuilder, OperatorRestore, OperatorSnapshot, decode_batches};
use super::{Collector, Operator, OperatorContext, OperatorFactory, TaskInfo};
use crate::changelog::{
    ChangelogMode, RowKind, data_schema, split_row_kinds, updating_schema, with_row_kinds,
};
use crate::error::{Error, Result};
use crate::message::{CheckpointBarrier, Watermark};

/// One input of a join.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The first input (0).
    Left,
    /// The second input (1).
    Right,
}

impl Side {
    /// The input's index.
    pub fn index(self) -> usize {
        match self {
            Side::Left => 0,
            Side::Right => 1,
        }
    }

    /// The other input.
    pub fn other(self) -> Side {
        match self {
            Side::Left => Side::Right,
            Side::Right => Side::Left,
        }
    }
}

/// Which rows a join emits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinKind {
    /// Pairs of matching rows.
    Inner,
    /// Pairs, and left rows without a match padded with nulls.
    Left,
    /// Pairs, and right rows without a match padded with nulls.
    Right,
    /// Pairs, and rows of either side without a match padded with nulls.
    Full,
    /// Left rows with a match (`IN`, `EXISTS`).
    LeftSemi,
    /// Left rows without a match (`NOT EXISTS`).
    LeftAnti,
    /// Right rows with a match.
    RightSemi,
    /// Right rows without a match.
    RightAnti,
}

impl JoinKind {
    /// Whether rows of `side` without a match are emitted, padded.
    fn preserves(self, side: Side) -> bool {
        matches!(
            (self, side),
            (JoinKind::Full, _) | (JoinKind::Left, Side::Left) | (JoinKind::Right, Side::Right)
        )
    }

    /// For a semi or anti join: the side whose rows it emits.
    fn filtered_side(self) -> Option<Side> {
        match self {
            JoinKind::LeftSemi | JoinKind::LeftAnti => Some(Side::Left),
            JoinKind::RightSemi | JoinKind::RightAnti => Some(Side::Right),
            _ => None,
        }
    }

    fn is_anti(self) -> bool {
        matches!(self, JoinKind::LeftAnti | JoinKind::RightAnti)
    }

    /// Whether it retracts output even over append-only inputs.
    fn retracts(self) -> bool {
        !matches!(
            self,
            JoinKind::Inner | JoinKind::LeftSemi | JoinKind::RightSemi
        )
    }
}

/// A join's condition beyond its key equality, over an intermediate row
/// of some columns of each side (DataFusion's `JoinFilter`).
#[derive(Debug, Clone)]
pub struct JoinCondition {
    /// The predicate, over `schema`.
    pub expr: Arc<dyn PhysicalExpr>,
    /// Where each column of `schema` comes from: a side and its column.
    pub columns: Vec<(Side, usize)>,
    /// The intermediate row's schema.
    pub schema: SchemaRef,
}

/// Creates [`JoinOperator`]s.
#[derive(Debug, Clone)]
pub struct JoinFactory {
    kind: JoinKind,
    /// Each input's data columns (without the row kind).
    data: [SchemaRef; 2],
    /// Each input's key columns; the types of a key's columns agree.
    keys: [Vec<usize>; 2],
    condition: Option<JoinCondition>,
    /// The joined rows' columns (the left's then the right's, or one
    /// side's for a semi or anti join).
    joined: SchemaRef,
    output_schema: SchemaRef,
    state_ttl_ms: Option<i64>,
    interval: Option<IntervalBounds>,
    /// The interval is a window's: both inputs' rows of a window are in
    /// once the watermark passes its end.
    window_join: bool,
    /// Either input is a changelog.
    updating_inputs: bool,
    label: String,
}

impl JoinFactory {
    /// A `kind` join of inputs `left` and `right` (either may be updating)
    /// on `left_keys[i] = right_keys[i]` and `condition`, emitting rows of
    /// `joined` (as DataFusion's join schema: the left's columns then the
    /// right's, nullable where padded; one side's for a semi or anti join).
    pub fn new(
        kind: JoinKind,
        inputs: [&SchemaRef; 2],
        keys: [Vec<usize>; 2],
        condition: Option<JoinCondition>,
        joined: SchemaRef,
    ) -> Result<Self> {
        let data = [data_schema(inputs[0]), data_schema(inputs[1])];
        if keys[0].is_empty() || keys[0].len() != keys[1].len() {
            return Err(Error::Config(
                "a join needs at least one equality between its inputs".into(),
            ));
        }
        for (l, r) in keys[0].iter().zip(&keys[1]) {
            let (lt, rt) = (data[0].field(*l).data_type(), data[1].field(*r).data_type());
            if lt != rt {
                return Err(Error::internal(format!(
                    "join keys of different types: {lt} and {rt}"
                )));
            }
        }
        let width = match kind.filtered_side() {
            Some(side) => data[side.index()].fields().len(),
            None => data[0].fields().len() + data[1].fields().len(),
        };
        if joined.fields().len() != width {
            return Err(Error::internal(format!(
                "a {kind:?} join emits {width} columns, not {}",
                joined.fields().len()
            )));
        }
        let updating_inputs = ChangelogMode::of(inputs[0]).is_updating()
            || ChangelogMode::of(inputs[1]).is_updating();
        let updating = kind.retracts() || updating_inputs;
        let output_schema = if updating {
            updating_schema(&joined)
        } else {
            Arc::clone(&joined)
        };
        let names = |side: usize| -> Vec<&str> {
            keys[side]
                .iter()
                .map(|&c| data[side].field(c).name().as_str())
                .collect()
        };
        let on: Vec<String> = names(0)
            .iter()
            .zip(names(1))
            .map(|(l, r)| format!("left.{l} = right.{r}"))
            .collect();
        let mut label = format!("kind={kind:?}, on=[{}]", on.join(", "));
        if let Some(c) = &condition {
            label.push_str(&format!(", condition={}", condition_label(c, &data)));
        }
        for (side, name) in [(0, "left"), (1, "right")] {
            if ChangelogMode::of(inputs[side]).is_updating() {
                label.push_str(&format!(", {name}=retract"));
            }
        }
        Ok(Self {
            kind,
            data,
            keys,
            condition,
            joined,
            output_schema,
            state_ttl_ms: None,
            interval: None,
            window_join: false,
            updating_inputs,
            label,
        })
    }

    /// Makes it an interval join (see the module docs): its inputs must be
    /// append-only; its output is.
    pub fn with_interval(mut self, bounds: IntervalBounds) -> Result<Self> {
        if self.updating_inputs {
            return Err(Error::Config(
                "an interval join reads append-only inputs, not changelogs".into(),
            ));
        }
        for (side, column) in [(0, bounds.left_time), (1, bounds.right_time)] {
            let field = self.data[side].field(column);
            if !matches!(
                field.data_type(),
                arrow::datatypes::DataType::Timestamp(_, _)
            ) {
                return Err(Error::Config(format!(
                    "an interval join's time column {} is not a timestamp",
                    field.name()
                )));
            }
        }
        self.output_schema = Arc::clone(&self.joined);
        self.interval = Some(bounds);
        Ok(self)
    }

    /// Makes it a window join (Flink's): both inputs are windowed alike and
    /// joined on their windows' ends, columns `left_end` and `right_end`.
    /// A window's rows are kept until the watermark passes its end; then
    /// an outer or anti join's rows that never matched come out, and the
    /// window's rows are dropped.
    pub fn with_window_end(self, left_end: usize, right_end: usize) -> Result<Self> {
        let mut join = self.with_interval(IntervalBounds {
            left_time: left_end,
            right_time: right_end,
            lower_ms: 0,
            upper_ms: 0,
        })?;
        join.window_join = true;
        Ok(join)
    }

    /// Drops keys untouched for `ttl_ms` of processing time
    /// (`table.exec.state.ttl`).
    pub fn with_state_ttl(mut self, ttl_ms: Option<i64>) -> Self {
        self.state_ttl_ms = ttl_ms.filter(|&t| t > 0);
        self
    }

    /// Whether the join's state can only grow: no state TTL or interval
    /// bounds it.
    pub fn state_is_unbounded(&self) -> bool {
        self.state_ttl_ms.is_none() && self.interval.is_none()
    }
}

impl fmt::Display for JoinFactory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Join: {}", self.label)?;
        if let Some(b) = self.interval.as_ref().filter(|_| self.window_join) {
            write!(
                f,
                ", window join on left.{} = right.{}, a window's rows dropped when it closes",
                self.data[0].field(b.left_time).name(),
                self.data[1].field(b.right_time).name(),
            )?;
        } else if let Some(b) = &self.interval {
            write!(
                f,
                ", interval=[{}, {}]ms of right.{} - left.{}, state dropped as the watermark passes it",
                b.lower_ms,
                b.upper_ms,
                self.data[1].field(b.right_time).name(),
                self.data[0].field(b.left_time).name(),
            )?;
        }
        match self.state_ttl_ms {
            Some(ttl) => write!(f, ", state-ttl={ttl}ms"),
            None if self.interval.is_some() => Ok(()),
            None => write!(
                f,
                ", state=unbounded (keeps every row; set 'table.exec.state.ttl' to bound it)"
            ),
        }
    }
}

impl OperatorFactory for JoinFactory {
    fn name(&self) -> &str {
        "Join"
    }
    fn output_schema(&self) -> SchemaRef {
        Arc::clone(&self.output_schema)
    }
    fn create(&self, _task: &TaskInfo) -> Result<Box<dyn Operator>> {
        Ok(Box::new(JoinOperator::new(self.clone())?))
    }
}

/// `row` of `side` alone: padded with nulls, or a semi or anti join's row.
fn alone(side: Side, row: &[u8], kind: RowKind) -> Emitted {
    match side {
        Side::Left => (Some(row.to_vec()), None, kind),
        Side::Right => (None, Some(row.to_vec()), kind),
    }
}

/// A row to emit: each side's row (`None`: padded with nulls, or not part
/// of a semi or anti join's output), and its kind.
type Emitted = (Option<Vec<u8>>, Option<Vec<u8>>, RowKind);

/// Joins two hashed inputs by key; see the module docs.
pub struct JoinOperator {
    spec: JoinFactory,
    /// Encodes key columns (of either side: their types agree).
    key_rows: RowConverter,
    /// Encodes each side's rows.
    rows: [RowConverter; 2],
    state: HashMap<Vec<u8>, KeyRows>,
    keyed: EvictableKeys,
    /// An interval join's keys by the event time their rows (some of them)
    /// can match no more: the watermark passing it drops them.
    expiries: BTreeMap<i64, HashSet<Vec<u8>>>,
}

impl fmt::Debug for JoinOperator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinOperator")
            .field("keys", &self.state.len())
            .finish()
    }
}

fn row_converter(schema: &Schema) -> Result<RowConverter> {
    Ok(RowConverter::new(
        schema
            .fields()
            .iter()
            .map(|f| SortField::new(f.data_type().clone()))
            .collect(),
    )?)
}

impl JoinOperator {
    fn new(spec: JoinFactory) -> Result<Self> {
        let key_rows = RowConverter::new(
            spec.keys[0]
                .iter()
                .map(|&c| SortField::new(spec.data[0].field(c).data_type().clone()))
                .collect(),
        )?;
        let rows = [row_converter(&spec.data[0])?, row_converter(&spec.data[1])?];
        Ok(Self {
            keyed: EvictableKeys::new(spec.state_ttl_ms),
            spec,
            key_rows,
            rows,
            state: HashMap::new(),
            expiries: BTreeMap::new(),
        })
    }

    /// Applies a batch of `side`; returns the rows to emit and how many
    /// retractions found no row.
    fn apply(
        &mut self,
        side: Side,
        batch: &RecordBatch,
        ctx: &mut OperatorContext,
    ) -> Result<(Vec<Emitted>, usize)> {
        let (data, kinds) = split_row_kinds(batch)?;
        let key_columns: Vec<ArrayRef> = self.spec.keys[side.index()]
            .iter()
            .map(|&c| Arc::clone(data.column(c)))
            .collect();
        let keys = self.key_rows.convert_columns(&key_columns)?;
        let null_keys: Vec<bool> = (0..data.num_rows())
            .map(|row| key_columns.iter().any(|c| c.is_null(row)))
            .collect();
        if self.keyed.may_have_evicted() {
            self.keyed.load(&mut self.state, &key_columns, &keys, ctx)?;
        }
        // An interval join's event times; a row without one matches nothing.
        let times = match &self.spec.interval {
            Some(b) => Some(event_times(data.column(b.time_column(side)))?),
            None => None,
        };
        let null_keys: Vec<bool> = match &times {
            Some(t) => null_keys
                .iter()
                .zip(t)
                .map(|(null, time)| *null || time.is_none())
                .collect(),
            None => null_keys,
        };
        let matched = self.matches(side, &data, &keys, &null_keys)?;
        // An interval join emits a row alone only when its interval closes.
        let deferred = self.spec.interval.is_some();
        let rows = self.rows[side.index()].convert_columns(data.columns())?;
        let kind = self.spec.kind;
        let other = side.other();
        let mut out: Vec<Emitted> = Vec::new();
        let mut unmatched = 0;
        // A pair, or a row of one side alone (padded, or a semi or anti
        // join's output).
        let pair = |this: &[u8], that: Option<&[u8]>, k: RowKind| -> Emitted {
            let (this, that) = (Some(this.to_vec()), that.map(<[u8]>::to_vec));
            match side {
                Side::Left => (this, that, k),
                Side::Right => (that, this, k),
            }
        };
        let mut touched: Vec<Vec<u8>> = Vec::new();
        for (i, found) in matched.iter().enumerate() {
            let row = rows.row(i);
            let row = row.as_ref();
            let accumulate = kinds
                .as_ref()
                .is_none_or(|k| matches!(k[i], RowKind::Insert | RowKind::UpdateAfter));
            let (emit_kind, undo_kind) = if accumulate {
                (RowKind::Insert, RowKind::Delete)
            } else {
                (RowKind::Delete, RowKind::Insert)
            };
            if null_keys[i] {
                // Never matches, never kept.
                let passes =
                    kind.preserves(side) || (kind.is_anti() && kind.filtered_side() == Some(side));
                if passes {
                    out.push(alone(side, row, emit_kind));
                }
                continue;
            }
            let key = keys.row(i).data();
            if !self.state.contains_key(key) {
                self.state.insert(key.to_vec(), KeyRows::default());
            }
            let entries = self
                .state
                .get_mut(key)
                .ok_or_else(|| Error::internal("a join key vanished while applied"))?;
            if touched.last().is_none_or(|t| t.as_slice() != key) {
                touched.push(key.to_vec());
            }
            if !accumulate && !entries.remove(side, row) {
                unmatched += 1;
                continue;
            }
            let others = entries.side_mut(other);
            let match_count: u64 = found.iter().map(|&m| others[m].copies).sum();
            match kind.filtered_side() {
                None => {
                    for &m in found {
                        let that = &mut others[m];
                        if kind.preserves(other) && accumulate && that.matches == 0 && !deferred {
                            for _ in 0..that.copies {
                                out.push(alone(other, &that.row, RowKind::Delete));
                            }
                        }
                        for _ in 0..that.copies {
                            out.push(pair(row, Some(&that.row), emit_kind));
                        }
                        if kind.preserves(other) && !accumulate && that.matches == 1 {
                            for _ in 0..that.copies {
                                out.push(alone(other, &that.row, RowKind::Insert));
                            }
                        }
                    }
                    if kind.preserves(side) && found.is_empty() && !deferred {
                        out.push(pair(row, None, emit_kind));
                    }
                }
                Some(s) if s == side => {
                    if found.is_empty() == kind.is_anti() && !(deferred && kind.is_anti()) {
                        out.push(alone(side, row, emit_kind));
                    }
                }
                Some(_) => {
                    // This side filters the other's rows.
                    for &m in found {
                        let that = &others[m];
                        let flips = if accumulate {
                            that.matches == 0
                        } else {
                            that.matches == 1
                        };
                        if flips && !(deferred && kind.is_anti()) {
                            let k = if kind.is_anti() { undo_kind } else { emit_kind };
                            for _ in 0..that.copies {
                                out.push(alone(other, &that.row, k));
                            }
                        }
                    }
                }
            }
            for &m in found {
                let that = &mut others[m];
                that.matches = if accumulate {
                    that.matches + 1
                } else {
                    that.matches.saturating_sub(1)
                };
            }
            if accumulate {
                entries.add(side, row, match_count);
                if let (Some(b), Some(Some(time))) =
                    (&self.spec.interval, times.as_ref().map(|t| t[i]))
                {
                    self.expiries
                        .entry(b.expiry(side, time))
                        .or_default()
                        .insert(key.to_vec());
                }
            }
        }
        for key in touched {
            match self.state.get(&key) {
                Some(entries) if entries.is_empty() => {
                    self.state.remove(&key);
                    self.keyed.forget(&key);
                }
                Some(entries) => self.keyed.touch(&key, entries.heap_size(), ctx),
                None => {}
            }
        }
        Ok((out, unmatched))
    }

    /// The columns of `side` for `rows` (`None`: nulls).
    fn side_columns(&self, side: Side, rows: &[Option<&[u8]>]) -> Result<Vec<ArrayRef>> {
        let present: Vec<&[u8]> = rows.iter().flatten().copied().collect();
        let converter = &self.rows[side.index()];
        let parser = converter.parser();
        let columns = converter.convert_rows(present.iter().map(|r| parser.parse(r)))?;
        if present.len() == rows.len() {
            return Ok(columns);
        }
        let mut next = 0u32;
        let indices: UInt32Array = rows
            .iter()
            .map(|r| {
                r.map(|_| {
                    next += 1;
                    next - 1
                })
            })
            .collect();
        columns
            .iter()
            .map(|c| Ok(arrow::compute::take(c.as_ref(), &indices, None)?))
            .collect()
    }

    fn emit(&self, emitted: Vec<Emitted>, out: &mut Collector) -> Result<()> {
        if emitted.is_empty() {
            return Ok(());
        }
        let lefts: Vec<Option<&[u8]>> = emitted.iter().map(|e| e.0.as_deref()).collect();
        let rights: Vec<Option<&[u8]>> = emitted.iter().map(|e| e.1.as_deref()).collect();
        let columns = match self.spec.kind.filtered_side() {
            Some(Side::Left) => self.side_columns(Side::Left, &lefts)?,
            Some(Side::Right) => self.side_columns(Side::Right, &rights)?,
            None => {
                let mut columns = self.side_columns(Side::Left, &lefts)?;
                columns.extend(self.side_columns(Side::Right, &rights)?);
                columns
            }
        };
        let kinds: Vec<RowKind> = emitted.iter().map(|e| e.2).collect();
        if ChangelogMode::of(&self.spec.output_schema).is_updating() {
            out.collect(with_row_kinds(&self.spec.output_schema, columns, kinds)?);
        } else {
            if kinds.iter().any(|k| *k != RowKind::Insert) {
                return Err(Error::internal("an append-only join retracted a row"));
            }
            out.collect(RecordBatch::try_new(
                Arc::clone(&self.spec.joined),
                columns,
            )?);
        }
        Ok(())
    }

    async fn process(
        &mut self,
        side: Side,
        batch: RecordBatch,
        ctx: &mut OperatorContext,
        out: &mut Collector,
    ) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        self.keyed
            .sweep(&mut self.state, ctx, "dropped join keys")?;
        let (emitted, unmatched) = self.apply(side, &batch, ctx)?;
        if unmatched > 0 {
            ctx.unmatched_retractions(crate::metrics::UnmatchedAt::Join, unmatched as u64);
        }
        self.emit(emitted, out)?;
        self.keyed
            .evict_if_over_budget(&mut self.state, &self.key_rows, ctx)
    }
}

#[async_trait]
impl Operator for JoinOperator {
    async fn process_batch(
        &mut self,
        batch: RecordBatch,
        ctx: &mut OperatorContext,
        out: &mut Collector,
    ) -> Result<()> {
        self.process(Side::Left, batch, ctx, out).await
    }

    async fn process_input_batch(
        &mut self,
        input: usize,
        batch: RecordBatch,
        ctx: &mut OperatorContext,
        out: &mut Collector,
    ) -> Result<()> {
        match input {
            0 => self.process(Side::Left, batch, ctx, out).await,
            1 => self.process(Side::Right, batch, ctx, out).await,
            other => Err(Error::internal(format!("a join has no input {other}"))),
        }
    }

    /// An interval join drops the rows the watermark closed, and holds its
    /// output watermark back by the interval.
    async fn handle_watermark(
        &mut self,
        watermark: Watermark,
        ctx: &mut OperatorContext,
        out: &mut Collector,
    ) -> Result<Option<Watermark>> {
        let Some(bounds) = self.spec.interval else {
            return Ok(Some(watermark));
        };
        self.expire(watermark.0, ctx, out)?;
        if watermark == Watermark::MAX {
            return Ok(Some(watermark));
        }
        Ok(Some(Watermark(
            watermark.0.saturating_sub(bounds.delay_ms()),
        )))
    }

    async fn handle_checkpoint(
        &mut self,
        _barrier: &CheckpointBarrier,
        ctx: &mut OperatorContext,
        _out: &mut Collector,
    ) -> Result<()> {
        self.keyed.sweep(&mut self.state, ctx, "dropped join keys")
    }

    /// Per key group: the key columns (for the key group), the encoded key
    /// and the key's encoded rows.
    async fn snapshot_state(
        &mut self,
        ctx: &mut OperatorContext,
        snapshot: &mut OperatorSnapshot,
    ) -> Result<()> {
        let mut builder = KeyedStateBuilder::default();
        if !self.state.is_empty() {
            let keys: Vec<&Vec<u8>> = self.state.keys().collect();
            let parser = self.key_rows.parser();
            let mut columns = self
                .key_rows
                .convert_rows(keys.iter().map(|k| parser.parse(k)))?;
            let width = columns.len();
            columns.push(Arc::new(BinaryArray::from_iter_values(
                keys.iter().map(|k| k.as_slice()),
            )));
            columns.push(Arc::new(BinaryArray::from_iter_values(
                self.state.values().map(|v| {
                    let mut bytes = Vec::new();
                    v.encode(&mut bytes);
                    bytes
                }),
            )));
            let key_columns: Vec<usize> = (0..width).collect();
            builder.add_rows(&columns, &key_columns, keys.len(), ctx.task.max_key_groups)?;
        }
        snapshot.put_key_groups(ctx.task.key_groups(), builder.finish()?)?;
        Ok(())
    }

    fn restore_state(&mut self, ctx: &OperatorContext, restore: OperatorRestore) -> Result<()> {
        let width = self.spec.keys[0].len();
        for (_, bytes) in restore.keyed {
            for (columns, rows) in decode_batches(&bytes)? {
                let (Some(keys), Some(values)) = (columns.get(width), columns.get(width + 1))
                else {
                    return Err(Error::internal("checkpointed join state lacks its rows"));
                };
                let (Some(keys), Some(values)) =
                    (keys.as_binary_opt::<i32>(), values.as_binary_opt::<i32>())
                else {
                    return Err(Error::internal("checkpointed join state is not binary"));
                };
                for row in 0..rows {
                    let entries = KeyRows::decode(values.value(row))?;
                    let key = keys.value(row);
                    self.keyed.touch(key, entries.heap_size(), ctx);
                    self.state.insert(key.to_vec(), entries);
                }
            }
        }
        // Keys evicted before the checkpoint were copied into the store by
        // key group; they come back when touched.
        self.keyed.restored(ctx)?;
        if self.spec.interval.is_some() {
            // Every key is looked at by the next watermark, which indexes
            // its rows' expiries again.
            let mut keys: HashSet<Vec<u8>> = self.state.keys().cloned().collect();
            self.keyed.for_each_evicted_key(ctx, |key| {
                keys.insert(key.to_vec());
                Ok(())
            })?;
            self.expiries.insert(i64::MIN, keys);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
