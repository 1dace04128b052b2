//! Accumulators that take retractions, for the updating aggregate.
//!
//! DataFusion's group accumulators only add rows and can only be read by
//! emptying them. An updating aggregate must also take rows back (`-U`,
//! `-D` from its input) and read a group's current value after every
//! batch, so it keeps its own accumulators, one slot per group:
//!
//! - `COUNT`: a count per group.
//! - `SUM`: a sum and a count of the values in it (the sum of nothing is NULL).
//! - `AVG`: the same, divided at read time.
//! - `MIN`, `MAX`: every value with its multiplicity, ordered, as Flink's
//!   `MinWithRetractAggFunction` keeps them, so a retracted minimum gives
//!   way to the next one. Over append-only input only the extreme is kept:
//!   for a fixed-width type in one flat buffer ([`append_only_extreme`]).
//! - `COUNT(DISTINCT …)`: every value with its multiplicity.
//!
//! Values are kept in Arrow's row format, whose bytes compare as the
//! values do.

mod append_only_extreme;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, BooleanArray, Decimal128Array, Float64Array, Int64Array,
    UInt64Array, new_null_array,
};
use arrow::compute::cast;
use arrow::datatypes::{
    ArrowNativeTypeOp, ArrowPrimitiveType, DataType, Decimal128Type, Float64Type, Int64Type,
    UInt64Type,
};
use arrow::row::{RowConverter, SortField};
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;

use crate::error::{Error, Result};

/// One aggregate function's state for every group of an updating aggregate.
pub(crate) trait RetractableAccumulator: Send + fmt::Debug {
    /// Folds rows in: row `i` goes to group `groups[i]`, taken back when
    /// `retract[i]`; rows where `mask` is false are skipped.
    fn update(
        &mut self,
        args: &[ArrayRef],
        groups: &[usize],
        retract: &[bool],
        mask: Option<&BooleanArray>,
        total_groups: usize,
    ) -> Result<()>;

    /// The current value of each of `groups`, of the aggregate's output type.
    fn evaluate(&self, groups: &[usize]) -> Result<ArrayRef>;

    /// Forgets a group whose slot will be reused.
    fn reset(&mut self, group: usize);

    /// The state of `groups` as columns, for a checkpoint.
    fn state(&self, groups: &[usize]) -> Result<Vec<ArrayRef>>;

    /// Loads rows of [`RetractableAccumulator::state`] into `groups`.
    fn restore(&mut self, state: &[ArrayRef], groups: &[usize], total_groups: usize) -> Result<()>;

    /// How many columns [`RetractableAccumulator::state`] gives.
    fn state_width(&self) -> usize;

    /// Approximate bytes held.
    fn size(&self) -> usize;

    /// Approximate bytes one group's state takes (what evicting it frees).
    fn group_size(&self, group: usize) -> usize;
}

/// The functions an updating aggregate computes, for error messages.
pub const UPDATING_AGGREGATE_FUNCTIONS: &str = "COUNT, COUNT(DISTINCT …), SUM, AVG, MIN and MAX";

/// Checks that an updating aggregate can compute `agg` over rows of
/// `input`; the error (a [`Error::Config`]) says why not.
pub fn check_updating_aggregate(
    agg: &AggregateFunctionExpr,
    input: &arrow::datatypes::Schema,
    append_only: bool,
) -> Result<()> {
    retractable_accumulator(agg, input, append_only).map(|_| ())
}

/// The accumulator of `agg`; `append_only` when its input never retracts.
/// An error (a [`Error::Config`]) names a function it cannot compute.
pub(crate) fn retractable_accumulator(
    agg: &AggregateFunctionExpr,
    input: &arrow::datatypes::Schema,
    append_only: bool,
) -> Result<Box<dyn RetractableAccumulator>> {
    let name = agg.fun().name().to_ascii_lowercase();
    let output = agg.field().data_type().clone();
    let args = agg.expressions();
    let unsupported = |why: &str| {
        Error::Config(format!(
            "{} {why} in an updating aggregate (a GROUP BY over an unbounded stream); it computes {UPDATING_AGGREGATE_FUNCTIONS}",
            name.to_uppercase()
        ))
    };
    if args.len() != 1 && !(name == "count" && args.is_empty()) {
        return Err(unsupported("with more than one argument is not supported"));
    }
    if !agg.order_bys().is_empty() {
        return Err(unsupported("with ORDER BY is not supported"));
    }
    let arg_type = match args.first() {
        Some(a) => a.data_type(input)?,
        None => DataType::Int64,
    };
    Ok(match (name.as_str(), agg.is_distinct()) {
        ("count", false) => Box::new(CountAccumulator::default()),
        ("count", true) => Box::new(DistinctCountAccumulator::new(arg_type)?),
        ("sum", false) => Box::new(SumAccumulator::new(output, false)?),
        ("avg" | "mean", false) => Box::new(SumAccumulator::new(output, true)?),
        ("min" | "max", _) if append_only => {
            match append_only_extreme::AppendOnlyExtreme::new(
                arg_type.clone(),
                output.clone(),
                name == "max",
            )? {
                Some(extreme) => Box::new(extreme),
                None => Box::new(ExtremeAccumulator::new(
                    arg_type,
                    output,
                    name == "max",
                    true,
                )?),
            }
        }
        ("min" | "max", _) => Box::new(ExtremeAccumulator::new(
            arg_type,
            output,
            name == "max",
            append_only,
        )?),
        (_, true) => return Err(unsupported("with DISTINCT is not supported")),
        _ => return Err(unsupported("is not supported")),
    })
}

fn grow<T: Clone>(values: &mut Vec<T>, len: usize, zero: T) {
    if values.len() < len {
        values.resize(len, zero);
    }
}

fn included(mask: Option<&BooleanArray>, row: usize) -> bool {
    mask.is_none_or(|m| m.is_valid(row) && m.value(row))
}

fn sign(retract: bool) -> i64 {
    if retract { -1 } else { 1 }
}

fn state_column(state: &[ArrayRef], i: usize) -> Result<&ArrayRef> {
    state
        .get(i)
        .ok_or_else(|| Error::internal("checkpointed aggregate state lacks a column"))
}

/// Appends one entry of a group's checkpointed value counts: the value's
/// length (u32 LE), the value in row format, its count (i64 LE).
fn encode_value_count(out: &mut Vec<u8>, value: &[u8], count: i64) {
    out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    out.extend_from_slice(value);
    out.extend_from_slice(&count.to_le_bytes());
}

/// The entries [`encode_value_count`] wrote for one group.
fn decode_value_counts(mut input: &[u8]) -> Result<Vec<(&[u8], i64)>> {
    let corrupt = || Error::internal("checkpointed value counts are truncated");
    let mut entries = Vec::new();
    while !input.is_empty() {
        let (len, rest) = input.split_first_chunk::<4>().ok_or_else(corrupt)?;
        let len = u32::from_le_bytes(*len) as usize;
        let (value, rest) = rest.split_at_checked(len).ok_or_else(corrupt)?;
        let (count, rest) = rest.split_first_chunk::<8>().ok_or_else(corrupt)?;
        entries.push((value, i64::from_le_bytes(*count)));
        input = rest;
    }
    Ok(entries)
}

/// `COUNT(x)` (non-null values) and `COUNT(*)`.
#[derive(Debug, Default)]
struct CountAccumulator {
    counts: Vec<i64>,
}

impl RetractableAccumulator for CountAccumulator {
    fn update(
        &mut self,
        args: &[ArrayRef],
        groups: &[usize],
        retract: &[bool],
        mask: Option<&BooleanArray>,
        total_groups: usize,
    ) -> Result<()> {
        grow(&mut self.counts, total_groups, 0);
        let arg = args.first();
        for (row, &group) in groups.iter().enumerate() {
            if included(mask, row) && arg.is_none_or(|a| a.is_valid(row)) {
                self.counts[group] += sign(retract[row]);
            }
        }
        Ok(())
    }

    fn evaluate(&self, groups: &[usize]) -> Result<ArrayRef> {
        Ok(Arc::new(Int64Array::from_iter_values(
            groups.iter().map(|&g| self.counts[g]),
        )))
    }

    fn reset(&mut self, group: usize) {
        self.counts[group] = 0;
    }

    fn state(&self, groups: &[usize]) -> Result<Vec<ArrayRef>> {
        Ok(vec![self.evaluate(groups)?])
    }

    fn restore(&mut self, state: &[ArrayRef], groups: &[usize], total: usize) -> Result<()> {
        grow(&mut self.counts, total, 0);
        let counts = state_column(state, 0)?.as_primitive::<Int64Type>();
        for (row, &group) in groups.iter().enumerate() {
            self.counts[group] = counts.value(row);
        }
        Ok(())
    }

    fn state_width(&self) -> usize {
        1
    }

    fn size(&self) -> usize {
        self.counts.capacity() * 8
    }

    fn group_size(&self, _group: usize) -> usize {
        8
    }
}

/// The running sums of `SUM` and `AVG`, in the type they are computed in.
#[derive(Debug)]
enum Sums {
    Int(Vec<i64>),
    UInt(Vec<u64>),
    Float(Vec<f64>),
    Decimal(Vec<i128>, DataType),
}

/// `SUM(x)`, or `AVG(x)` when `average`: a sum and a count per group.
#[derive(Debug)]
struct SumAccumulator {
    sums: Sums,
    counts: Vec<i64>,
    output: DataType,
    average: bool,
}

impl SumAccumulator {
    fn new(output: DataType, average: bool) -> Result<Self> {
        let sums = match (&output, average) {
            (DataType::Float64, true) => Sums::Float(Vec::new()),
            (DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64, false) => {
                Sums::Int(Vec::new())
            }
            (DataType::UInt8 | DataType::UInt16 | DataType::UInt32 | DataType::UInt64, false) => {
                Sums::UInt(Vec::new())
            }
            (DataType::Float16 | DataType::Float32 | DataType::Float64, false) => {
                Sums::Float(Vec::new())
            }
            (DataType::Decimal128(..), false) => Sums::Decimal(Vec::new(), output.clone()),
            (other, _) => {
                return Err(Error::Config(format!(
                    "{} of {} is not supported in an updating aggregate (a GROUP BY over an unbounded stream)",
                    if average { "AVG" } else { "SUM" },
                    crate::types::sql_type_name(other)
                )));
            }
        };
        Ok(Self {
            sums,
            counts: Vec::new(),
            output,
            average,
        })
    }
}

/// Adds each row's value (`arg` cast to `T`, or to `data_type` when the
/// type has parameters, as a decimal's scale) into its group's sum, or takes
/// it out when the row retracts; integers wrap, as Flink's do.
fn fold_into<T: ArrowPrimitiveType>(
    sums: &mut Vec<T::Native>,
    total: usize,
    arg: &ArrayRef,
    data_type: Option<&DataType>,
    rows: &[(usize, usize)],
    retract: &[bool],
) -> Result<()> {
    grow(sums, total, T::Native::ZERO);
    let values = cast(arg, data_type.unwrap_or(&T::DATA_TYPE))?;
    let values = values
        .as_primitive_opt::<T>()
        .ok_or_else(|| Error::internal("SUM input did not cast to its sum type"))?;
    for &(row, group) in rows {
        let v = values.value(row);
        sums[group] = if retract[row] {
            sums[group].sub_wrapping(v)
        } else {
            sums[group].add_wrapping(v)
        };
    }
    Ok(())
}

/// Loads checkpointed sums (a column of `T`) into `groups`.
fn load_into<T: ArrowPrimitiveType>(
    sums: &mut Vec<T::Native>,
    total: usize,
    column: &ArrayRef,
    groups: &[usize],
) -> Result<()> {
    grow(sums, total, T::Native::ZERO);
    let values = column
        .as_primitive_opt::<T>()
        .ok_or_else(|| Error::internal("checkpointed sums have another type"))?;
    for (row, &group) in groups.iter().enumerate() {
        sums[group] = values.value(row);
    }
    Ok(())
}

impl RetractableAccumulator for SumAccumulator {
    fn update(
        &mut self,
        args: &[ArrayRef],
        groups: &[usize],
        retract: &[bool],
        mask: Option<&BooleanArray>,
        total: usize,
    ) -> Result<()> {
        let arg = args
            .first()
            .ok_or_else(|| Error::internal("SUM without an argument"))?;
        grow(&mut self.counts, total, 0);
        let rows: Vec<(usize, usize)> = groups
            .iter()
            .enumerate()
            .filter(|&(row, _)| included(mask, row) && arg.is_valid(row))
            .map(|(row, &group)| (row, group))
            .collect();
        for &(row, group) in &rows {
            self.counts[group] += sign(retract[row]);
        }
        match &mut self.sums {
            Sums::Int(sums) => fold_into::<Int64Type>(sums, total, arg, None, &rows, retract),
            Sums::UInt(sums) => fold_into::<UInt64Type>(sums, total, arg, None, &rows, retract),
            Sums::Float(sums) => fold_into::<Float64Type>(sums, total, arg, None, &rows, retract),
            Sums::Decimal(sums, data_type) => {
                fold_into::<Decimal128Type>(sums, total, arg, Some(data_type), &rows, retract)
            }
        }
    }

    fn evaluate(&self, groups: &[usize]) -> Result<ArrayRef> {
        let present = |g: usize| self.counts[g] > 0;
        let array: ArrayRef = match &self.sums {
            Sums::Float(sums) if self.average => Arc::new(Float64Array::from_iter(
                groups
                    .iter()
                    .map(|&g| present(g).then(|| sums[g] / self.counts[g] as f64)),
            )),
            Sums::Int(sums) => Arc::new(Int64Array::from_iter(
                groups.iter().map(|&g| present(g).then_some(sums[g])),
            )),
            Sums::UInt(sums) => Arc::new(UInt64Array::from_iter(
                groups.iter().map(|&g| present(g).then_some(sums[g])),
            )),
            Sums::Float(sums) => Arc::new(Float64Array::from_iter(
                groups.iter().map(|&g| present(g).then_some(sums[g])),
            )),
            Sums::Decimal(sums, data_type) => Arc::new(
                Decimal128Array::from_iter(groups.iter().map(|&g| present(g).then_some(sums[g])))
                    .with_data_type(data_type.clone()),
            ),
        };
        if array.data_type() == &self.output {
            Ok(array)
        } else {
            Ok(cast(&array, &self.output)?)
        }
    }

    fn reset(&mut self, group: usize) {
        self.counts[group] = 0;
        match &mut self.sums {
            Sums::Int(s) => s[group] = 0,
            Sums::UInt(s) => s[group] = 0,
            Sums::Float(s) => s[group] = 0.0,
            Sums::Decimal(s, _) => s[group] = 0,
        }
    }

    fn state(&self, groups: &[usize]) -> Result<Vec<ArrayRef>> {
        let sums: ArrayRef = match &self.sums {
            Sums::Int(s) => Arc::new(Int64Array::from_iter_values(groups.iter().map(|&g| s[g]))),
            Sums::UInt(s) => Arc::new(UInt64Array::from_iter_values(groups.iter().map(|&g| s[g]))),
            Sums::Float(s) => {
                Arc::new(Float64Array::from_iter_values(groups.iter().map(|&g| s[g])))
            }
            Sums::Decimal(s, data_type) => Arc::new(
                Decimal128Array::from_iter_values(groups.iter().map(|&g| s[g]))
                    .with_data_type(data_type.clone()),
            ),
        };
        let counts = Int64Array::from_iter_values(groups.iter().map(|&g| self.counts[g]));
        Ok(vec![sums, Arc::new(counts)])
    }

    fn restore(&mut self, state: &[ArrayRef], groups: &[usize], total: usize) -> Result<()> {
        grow(&mut self.counts, total, 0);
        let sums = state_column(state, 0)?;
        let counts = state_column(state, 1)?.as_primitive::<Int64Type>();
        for (row, &group) in groups.iter().enumerate() {
            self.counts[group] = counts.value(row);
        }
        match &mut self.sums {
            Sums::Int(s) => load_into::<Int64Type>(s, total, sums, groups),
            Sums::UInt(s) => load_into::<UInt64Type>(s, total, sums, groups),
            Sums::Float(s) => load_into::<Float64Type>(s, total, sums, groups),
            Sums::Decimal(s, _) => load_into::<Decimal128Type>(s, total, sums, groups),
        }
    }

    fn state_width(&self) -> usize {
        2
    }

    fn size(&self) -> usize {
        let sums = match &self.sums {
            Sums::Int(s) => s.capacity() * 8,
            Sums::UInt(s) => s.capacity() * 8,
            Sums::Float(s) => s.capacity() * 8,
            Sums::Decimal(s, _) => s.capacity() * 16,
        };
        sums + self.counts.capacity() * 8
    }

    fn group_size(&self, _group: usize) -> usize {
        24
    }
}

/// Values with their multiplicities, per group, in row format.
#[derive(Debug)]
struct ValueCounts<M> {
    converter: RowConverter,
    groups: Vec<M>,
}

/// A map from encoded value to multiplicity.
trait CountMap: Default + fmt::Debug + Send {
    fn add(&mut self, value: &[u8], delta: i64);
    fn entries(&self) -> Box<dyn Iterator<Item = (&Vec<u8>, &i64)> + '_>;
    fn bytes(&self) -> usize;
}

impl CountMap for BTreeMap<Vec<u8>, i64> {
    fn add(&mut self, value: &[u8], delta: i64) {
        let count = self.entry(value.to_vec()).or_insert(0);
        *count += delta;
        if *count == 0 {
            self.remove(value);
        }
    }
    fn entries(&self) -> Box<dyn Iterator<Item = (&Vec<u8>, &i64)> + '_> {
        Box::new(self.iter())
    }
    fn bytes(&self) -> usize {
        self.keys().map(|k| k.len() + 48).sum()
    }
}

impl CountMap for HashMap<Vec<u8>, i64> {
    fn add(&mut self, value: &[u8], delta: i64) {
        let count = self.entry(value.to_vec()).or_insert(0);
        *count += delta;
        if *count == 0 {
            self.remove(value);
        }
    }
    fn entries(&self) -> Box<dyn Iterator<Item = (&Vec<u8>, &i64)> + '_> {
        Box::new(self.iter())
    }
    fn bytes(&self) -> usize {
        self.keys().map(|k| k.len() + 40).sum()
    }
}

impl<M: CountMap> ValueCounts<M> {
    fn new(data_type: DataType) -> Result<Self> {
        Ok(Self {
            converter: RowConverter::new(vec![SortField::new(data_type)])?,
            groups: Vec::new(),
        })
    }

    fn update(
        &mut self,
        arg: &ArrayRef,
        groups: &[usize],
        retract: &[bool],
        mask: Option<&BooleanArray>,
        total: usize,
    ) -> Result<()> {
        if self.groups.len() < total {
            self.groups.resize_with(total, M::default);
        }
        let rows = self.converter.convert_columns(std::slice::from_ref(arg))?;
        for (row, &group) in groups.iter().enumerate() {
            if included(mask, row) && arg.is_valid(row) {
                self.groups[group].add(rows.row(row).as_ref(), sign(retract[row]));
            }
        }
        Ok(())
    }

    /// Per group one binary value: the entries as (length, bytes, count).
    fn state(&self, groups: &[usize]) -> ArrayRef {
        let encoded: Vec<Vec<u8>> = groups
            .iter()
            .map(|&g| {
                let mut out = Vec::new();
                for (value, count) in self.groups[g].entries() {
                    encode_value_count(&mut out, value, *count);
                }
                out
            })
            .collect();
        Arc::new(BinaryArray::from_iter_values(encoded))
    }

    fn restore(&mut self, state: &[ArrayRef], groups: &[usize], total: usize) -> Result<()> {
        if self.groups.len() < total {
            self.groups.resize_with(total, M::default);
        }
        let column = state_column(state, 0)?;
        let encoded = column
            .as_binary_opt::<i32>()
            .ok_or_else(|| Error::internal("checkpointed value counts are not binary"))?;
        for (row, &group) in groups.iter().enumerate() {
            let mut map = M::default();
            for (value, count) in decode_value_counts(encoded.value(row))? {
                map.add(value, count);
            }
            self.groups[group] = map;
        }
        Ok(())
    }

    fn size(&self) -> usize {
        self.groups.iter().map(|m| m.bytes() + 48).sum()
    }

    fn group_size(&self, group: usize) -> usize {
        self.groups.get(group).map_or(0, |m| m.bytes()) + 48
    }
}

/// `MIN(x)` or `MAX(x)`.
#[derive(Debug)]
struct ExtremeAccumulator {
    values: ValueCounts<BTreeMap<Vec<u8>, i64>>,
    data_type: DataType,
    output: DataType,
    max: bool,
    /// Without retractions only the extreme can ever be the answer.
    append_only: bool,
}

impl ExtremeAccumulator {
    fn new(data_type: DataType, output: DataType, max: bool, append_only: bool) -> Result<Self> {
        Ok(Self {
            values: ValueCounts::new(data_type.clone())?,
            data_type,
            output,
            max,
            append_only,
        })
    }
}

impl RetractableAccumulator for ExtremeAccumulator {
    fn update(
        &mut self,
        args: &[ArrayRef],
        groups: &[usize],
        retract: &[bool],
        mask: Option<&BooleanArray>,
        total: usize,
    ) -> Result<()> {
        let arg = args
            .first()
            .ok_or_else(|| Error::internal("MIN/MAX without an argument"))?;
        self.values.update(arg, groups, retract, mask, total)?;
        if self.append_only {
            for &group in groups {
                let map = &mut self.values.groups[group];
                while map.len() > 1 {
                    if self.max {
                        map.pop_first();
                    } else {
                        map.pop_last();
                    }
                }
            }
        }
        Ok(())
    }

    fn evaluate(&self, groups: &[usize]) -> Result<ArrayRef> {
        let null = self
            .values
            .converter
            .convert_columns(&[new_null_array(&self.data_type, 1)])?;
        let parser = self.values.converter.parser();
        let rows: Vec<_> = groups
            .iter()
            .map(|&g| {
                let map = &self.values.groups[g];
                let extreme = if self.max {
                    map.last_key_value()
                } else {
                    map.first_key_value()
                };
                match extreme {
                    Some((value, _)) => parser.parse(value),
                    None => null.row(0),
                }
            })
            .collect();
        let mut columns = self.values.converter.convert_rows(rows)?;
        let column = columns
            .pop()
            .ok_or_else(|| Error::internal("MIN/MAX decoded no column"))?;
        if column.data_type() == &self.output {
            Ok(column)
        } else {
            Ok(cast(&column, &self.output)?)
        }
    }

    fn reset(&mut self, group: usize) {
        self.values.groups[group].clear();
    }

    fn state(&self, groups: &[usize]) -> Result<Vec<ArrayRef>> {
        Ok(vec![self.values.state(groups)])
    }

    fn restore(&mut self, state: &[ArrayRef], groups: &[usize], total: usize) -> Result<()> {
        self.values.restore(state, groups, total)
    }

    fn state_width(&self) -> usize {
        1
    }

    fn size(&self) -> usize {
        self.values.size()
    }

    fn group_size(&self, group: usize) -> usize {
        self.values.group_size(group)
    }
}

/// `COUNT(DISTINCT x)`: the non-null values with their multiplicities.
#[derive(Debug)]
struct DistinctCountAccumulator {
    values: ValueCounts<HashMap<Vec<u8>, i64>>,
}

impl DistinctCountAccumulator {
    fn new(data_type: DataType) -> Result<Self> {
        Ok(Self {
            values: ValueCounts::new(data_type)?,
        })
    }
}

impl RetractableAccumulator for DistinctCountAccumulator {
    fn update(
        &mut self,
        args: &[ArrayRef],
        groups: &[usize],
        retract: &[bool],
        mask: Option<&BooleanArray>,
        total: usize,
    ) -> Result<()> {
        let arg = args
            .first()
            .ok_or_else(|| Error::internal("COUNT(DISTINCT) without an argument"))?;
        self.values.update(arg, groups, retract, mask, total)
    }

    fn evaluate(&self, groups: &[usize]) -> Result<ArrayRef> {
        Ok(Arc::new(Int64Array::from_iter_values(
            groups.iter().map(|&g| self.values.groups[g].len() as i64),
        )))
    }

    fn reset(&mut self, group: usize) {
        self.values.groups[group].clear();
    }

    fn state(&self, groups: &[usize]) -> Result<Vec<ArrayRef>> {
        Ok(vec![self.values.state(groups)])
    }

    fn restore(&mut self, state: &[ArrayRef], groups: &[usize], total: usize) -> Result<()> {
        self.values.restore(state, groups, total)
    }

    fn state_width(&self) -> usize {
        1
    }

    fn size(&self) -> usize {
        self.values.size()
    }

    fn group_size(&self, group: usize) -> usize {
        self.values.group_size(group)
    }
}
