//! Grouped aggregation state shared by the aggregate operators: DataFusion's
//! `GroupValues` interns the group keys of whole batches, and DataFusion's
//! `GroupsAccumulator`s (or row accumulators behind an adapter, e.g. for
//! `COUNT(DISTINCT)`) update every group of a batch at once.

use std::fmt;
use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, BooleanArray, UInt32Array};
use arrow::compute::take;
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use datafusion::logical_expr::{EmitTo, GroupsAccumulator};
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use datafusion::physical_expr::{GroupsAccumulatorAdapter, PhysicalExpr};
use datafusion::physical_plan::aggregates::group_values::{GroupValues, new_group_values};
use datafusion::physical_plan::aggregates::order::GroupOrdering;

use crate::error::{Error, Result};

/// What an aggregate computes: group expressions, aggregate functions with
/// their optional `FILTER (WHERE …)`, and the output schema (group columns
/// first, then one column per aggregate).
#[derive(Debug)]
pub struct AggregateSpec {
    /// Group-by expressions over the input.
    pub group_exprs: Vec<Arc<dyn PhysicalExpr>>,
    /// Schema of the evaluated group columns.
    pub group_schema: SchemaRef,
    /// The aggregate functions.
    pub aggregates: Vec<Arc<AggregateFunctionExpr>>,
    /// Per aggregate, its `FILTER (WHERE …)` predicate.
    pub filters: Vec<Option<Arc<dyn PhysicalExpr>>>,
    /// Output schema: group columns, then aggregates.
    pub output_schema: SchemaRef,
    /// Schema of the input batches.
    pub input_schema: SchemaRef,
}

/// A shared [`AggregateSpec`].
pub type AggregateSpecRef = Arc<AggregateSpec>;

impl fmt::Display for AggregateSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "group_by=[")?;
        for (i, (expr, field)) in self
            .group_exprs
            .iter()
            .zip(self.group_schema.fields())
            .enumerate()
        {
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
        write!(f, "], aggregates=[")?;
        for (i, agg) in self.aggregates.iter().enumerate() {
            if i > 0 {
                write!(f, ", ")?;
            }
            write!(f, "{}", agg.name())?;
        }
        write!(f, "]")
    }
}

/// One batch's worth of evaluated aggregate inputs.
#[derive(Debug, Clone)]
pub struct AggregateInput {
    /// The group key columns.
    pub keys: Vec<ArrayRef>,
    /// Per aggregate, its argument columns.
    pub args: Vec<Vec<ArrayRef>>,
    /// Per aggregate, its filter mask.
    pub filters: Vec<Option<BooleanArray>>,
    /// Number of rows.
    pub num_rows: usize,
}

impl AggregateSpec {
    /// Evaluates group keys, arguments and filters over a batch.
    pub fn evaluate(&self, batch: &RecordBatch) -> Result<AggregateInput> {
        let n = batch.num_rows();
        let eval = |e: &Arc<dyn PhysicalExpr>| -> Result<ArrayRef> {
            Ok(e.evaluate(batch)?.into_array(n)?)
        };
        let keys = self
            .group_exprs
            .iter()
            .map(eval)
            .collect::<Result<Vec<_>>>()?;
        let args = self
            .aggregates
            .iter()
            .map(|a| a.expressions().iter().map(eval).collect::<Result<Vec<_>>>())
            .collect::<Result<Vec<_>>>()?;
        let filters = self
            .filters
            .iter()
            .map(|f| {
                f.as_ref()
                    .map(|f| {
                        let mask = eval(f)?;
                        mask.as_boolean_opt()
                            .cloned()
                            .ok_or_else(|| Error::internal("aggregate FILTER is not boolean"))
                    })
                    .transpose()
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(AggregateInput {
            keys,
            args,
            filters,
            num_rows: n,
        })
    }

    /// How many state columns each aggregate's accumulator has.
    pub fn state_widths(&self) -> Result<Vec<usize>> {
        self.aggregates
            .iter()
            .map(|a| Ok(a.state_fields()?.len()))
            .collect()
    }

    /// Creates empty state for one window (or the whole stream).
    pub fn new_state(&self) -> Result<GroupedState> {
        let accumulators = self
            .aggregates
            .iter()
            .map(|agg| -> Result<Box<dyn GroupsAccumulator>> {
                // A global aggregate uses row accumulators: they keep SQL's
                // empty-input results (SUM of nothing is NULL).
                if agg.groups_accumulator_supported() && !self.group_exprs.is_empty() {
                    Ok(agg.create_groups_accumulator()?)
                } else {
                    let agg = Arc::clone(agg);
                    Ok(Box::new(GroupsAccumulatorAdapter::new(move || {
                        agg.create_accumulator()
                    })))
                }
            })
            .collect::<Result<Vec<_>>>()?;
        let groups = if self.group_exprs.is_empty() {
            None
        } else {
            Some(new_group_values(
                Arc::clone(&self.group_schema),
                &GroupOrdering::None,
            )?)
        };
        let mut state = GroupedState {
            groups,
            accumulators,
            group_indices: Vec::new(),
            rows: 0,
        };
        if state.groups.is_none() {
            // A global aggregate has its one group even without input: size
            // every accumulator to one group with an empty update.
            let empty = self.evaluate(&RecordBatch::new_empty(Arc::clone(&self.input_schema)))?;
            for ((acc, args), filter) in state
                .accumulators
                .iter_mut()
                .zip(&empty.args)
                .zip(&empty.filters)
            {
                acc.update_batch(args, &[], filter.as_ref(), 1)?;
            }
        }
        Ok(state)
    }
}

impl AggregateInput {
    /// The rows at `indices`.
    pub fn take(&self, indices: &UInt32Array) -> Result<AggregateInput> {
        let take_all = |cols: &[ArrayRef]| -> Result<Vec<ArrayRef>> {
            cols.iter()
                .map(|c| Ok(take(c.as_ref(), indices, None)?))
                .collect()
        };
        Ok(AggregateInput {
            keys: take_all(&self.keys)?,
            args: self
                .args
                .iter()
                .map(|a| take_all(a))
                .collect::<Result<_>>()?,
            filters: self
                .filters
                .iter()
                .map(|f| {
                    f.as_ref()
                        .map(|f| Ok(take(f, indices, None)?.as_boolean().clone()))
                        .transpose()
                })
                .collect::<Result<_>>()?,
            num_rows: indices.len(),
        })
    }
}

/// The groups and accumulators of one window (or of a whole stream).
pub struct GroupedState {
    groups: Option<Box<dyn GroupValues>>,
    accumulators: Vec<Box<dyn GroupsAccumulator>>,
    group_indices: Vec<usize>,
    rows: usize,
}

impl fmt::Debug for GroupedState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GroupedState")
            .field("groups", &self.num_groups())
            .field("rows", &self.rows)
            .finish()
    }
}

impl GroupedState {
    /// Number of distinct groups.
    pub fn num_groups(&self) -> usize {
        self.groups.as_ref().map_or(1, |g| g.len())
    }

    /// Rows aggregated so far.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Approximate bytes held.
    pub fn size(&self) -> usize {
        self.groups.as_ref().map_or(0, |g| g.size())
            + self.accumulators.iter().map(|a| a.size()).sum::<usize>()
    }

    /// Folds a batch of evaluated input into the state.
    pub fn update(&mut self, input: &AggregateInput) -> Result<()> {
        match &mut self.groups {
            Some(groups) => groups.intern(&input.keys, &mut self.group_indices)?,
            None => {
                self.group_indices.clear();
                self.group_indices.resize(input.num_rows, 0);
            }
        }
        let total = self.num_groups();
        for ((acc, args), filter) in self
            .accumulators
            .iter_mut()
            .zip(&input.args)
            .zip(&input.filters)
        {
            acc.update_batch(args, &self.group_indices, filter.as_ref(), total)?;
        }
        self.rows += input.num_rows;
        Ok(())
    }

    /// Emits one row per group (group columns, then aggregates) and empties the state.
    pub fn emit(&mut self, schema: &SchemaRef) -> Result<RecordBatch> {
        let mut columns = match &mut self.groups {
            Some(groups) => groups.emit(EmitTo::All)?,
            None => Vec::new(),
        };
        for acc in &mut self.accumulators {
            columns.push(acc.evaluate(EmitTo::All)?);
        }
        let columns = columns
            .into_iter()
            .zip(schema.fields())
            .map(|(col, field)| {
                if col.data_type() == field.data_type() {
                    Ok(col)
                } else {
                    Ok(arrow::compute::cast(&col, field.data_type())?)
                }
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(RecordBatch::try_new(Arc::clone(schema), columns)?)
    }
}

impl GroupedState {
    /// The state as columns, without changing it: the group columns, then
    /// every accumulator's intermediate state. With the row count.
    pub fn snapshot_columns(&mut self) -> Result<(Vec<ArrayRef>, usize)> {
        let (groups, states, rows) = self.take_columns()?;
        let mut columns = groups.clone();
        for state in &states {
            columns.extend(state.iter().cloned());
        }
        // Taking the state emptied it: merge it straight back.
        self.merge_columns(&groups, &states, rows)?;
        Ok((columns, rows))
    }

    /// The state as columns, as [`GroupedState::snapshot_columns`] gives
    /// them, consuming it.
    pub fn into_columns(mut self) -> Result<(Vec<ArrayRef>, usize)> {
        let (mut columns, states, rows) = self.take_columns()?;
        columns.extend(states.into_iter().flatten());
        Ok((columns, rows))
    }

    /// Takes the group columns and each accumulator's state columns, leaving
    /// the state empty.
    #[allow(clippy::type_complexity)]
    fn take_columns(&mut self) -> Result<(Vec<ArrayRef>, Vec<Vec<ArrayRef>>, usize)> {
        let groups = match &mut self.groups {
            Some(groups) => {
                let columns = groups.emit(EmitTo::All)?;
                // Emitting everything does not reset every implementation's
                // hash table: reset it before the groups go back in.
                groups.clear_shrink(columns.first().map_or(0, |c| c.len()));
                columns
            }
            None => Vec::new(),
        };
        let rows = match &self.groups {
            Some(_) => groups.first().map_or(0, |c| c.len()),
            None => 1,
        };
        let mut states = Vec::with_capacity(self.accumulators.len());
        for acc in &mut self.accumulators {
            states.push(acc.state(EmitTo::All)?);
        }
        Ok((groups, states, rows))
    }

    /// Merges rows written by [`GroupedState::snapshot_columns`] into the
    /// state; `widths` are [`AggregateSpec::state_widths`].
    pub fn restore_columns(
        &mut self,
        columns: &[ArrayRef],
        rows: usize,
        widths: &[usize],
    ) -> Result<()> {
        let state_columns: usize = widths.iter().sum();
        if columns.len() < state_columns {
            return Err(Error::internal(format!(
                "checkpointed aggregate state has {} columns, expected at least {state_columns}",
                columns.len()
            )));
        }
        let group_count = columns.len() - state_columns;
        let (groups, mut rest) = columns.split_at(group_count);
        let mut states = Vec::with_capacity(widths.len());
        for &w in widths {
            let (state, tail) = rest.split_at(w);
            states.push(state.to_vec());
            rest = tail;
        }
        self.merge_columns(groups, &states, rows)
    }

    fn merge_columns(
        &mut self,
        groups: &[ArrayRef],
        states: &[Vec<ArrayRef>],
        rows: usize,
    ) -> Result<()> {
        match &mut self.groups {
            Some(g) => g.intern(groups, &mut self.group_indices)?,
            None => {
                self.group_indices.clear();
                self.group_indices.resize(rows, 0);
            }
        }
        let total = self.num_groups();
        for (acc, state) in self.accumulators.iter_mut().zip(states) {
            acc.merge_batch(state, &self.group_indices, total)?;
        }
        Ok(())
    }
}

/// The state of one group (a session): aggregates only, mergeable.
#[derive(Debug)]
pub struct SingleGroupState {
    state: GroupedState,
    schema: SchemaRef,
}

impl AggregateSpec {
    /// Creates the state of one group; the spec must have no group expressions.
    pub fn new_single_state(&self) -> Result<SingleGroupState> {
        Ok(SingleGroupState {
            state: self.new_state()?,
            schema: Arc::clone(&self.output_schema),
        })
    }
}

impl SingleGroupState {
    /// Folds input rows into the state.
    pub fn update(&mut self, input: &AggregateInput) -> Result<()> {
        self.state.update(input)
    }

    /// Merges another group's state into this one (sessions that grew together).
    pub fn merge(&mut self, mut other: SingleGroupState) -> Result<()> {
        for (mine, theirs) in self
            .state
            .accumulators
            .iter_mut()
            .zip(&mut other.state.accumulators)
        {
            let partial = theirs.state(EmitTo::All)?;
            mine.merge_batch(&partial, &[0], 1)?;
        }
        self.state.rows += other.state.rows;
        Ok(())
    }

    /// The accumulators' intermediate state as one-row columns, unchanged.
    pub fn snapshot_columns(&mut self) -> Result<Vec<ArrayRef>> {
        Ok(self.state.snapshot_columns()?.0)
    }

    /// The accumulators' intermediate state as one-row columns, consuming it.
    pub fn into_columns(self) -> Result<Vec<ArrayRef>> {
        Ok(self.state.into_columns()?.0)
    }

    /// Merges one row written by [`SingleGroupState::snapshot_columns`].
    pub fn restore_columns(&mut self, columns: &[ArrayRef], widths: &[usize]) -> Result<()> {
        self.state.restore_columns(columns, 1, widths)
    }

    /// Approximate bytes held.
    pub fn size(&self) -> usize {
        self.state.size()
    }

    /// The aggregates as a one-row batch.
    pub fn emit(&mut self) -> Result<RecordBatch> {
        self.state.emit(&self.schema)
    }
}
