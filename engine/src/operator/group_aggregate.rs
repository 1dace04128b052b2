//! Non-windowed `GROUP BY` aggregation over an append-only stream. Results
//! are emitted once, when the input ends (a changelog mode that emits
//! updates as they happen comes with updating streams).

use std::fmt;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;

use super::grouped_state::{AggregateSpecRef, GroupedState};
use super::{Collector, Operator, OperatorContext, OperatorFactory, TaskInfo};
use crate::error::Result;

/// Aggregates per group over the whole input; emits at end of input.
#[derive(Debug)]
pub struct GroupAggregateOperator {
    spec: AggregateSpecRef,
    state: Option<GroupedState>,
}

impl GroupAggregateOperator {
    /// An aggregate computing `spec`.
    pub fn new(spec: AggregateSpecRef) -> Self {
        Self { spec, state: None }
    }
}

impl fmt::Display for GroupAggregateOperator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GroupAggregate: {}", self.spec)
    }
}

/// Creates [`GroupAggregateOperator`]s.
#[derive(Debug, Clone)]
pub struct GroupAggregateFactory {
    spec: AggregateSpecRef,
}

impl GroupAggregateFactory {
    /// See [`GroupAggregateOperator::new`].
    pub fn new(spec: AggregateSpecRef) -> Self {
        Self { spec }
    }
}

impl fmt::Display for GroupAggregateFactory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GroupAggregate: {}", self.spec)
    }
}

impl OperatorFactory for GroupAggregateFactory {
    fn name(&self) -> &str {
        "GroupAggregate"
    }
    fn output_schema(&self) -> SchemaRef {
        Arc::clone(&self.spec.output_schema)
    }
    fn create(&self, _task: &TaskInfo) -> Result<Box<dyn Operator>> {
        Ok(Box::new(GroupAggregateOperator::new(Arc::clone(&self.spec))))
    }
}

#[async_trait]
impl Operator for GroupAggregateOperator {
    async fn process_batch(
        &mut self,
        batch: RecordBatch,
        _ctx: &mut OperatorContext,
        _out: &mut Collector,
    ) -> Result<()> {
        let input = self.spec.evaluate(&batch)?;
        let state = match &mut self.state {
            Some(state) => state,
            None => self.state.insert(self.spec.new_state()?),
        };
        state.update(&input)
    }

    async fn on_close(&mut self, ctx: &mut OperatorContext, out: &mut Collector) -> Result<()> {
        let state = match self.state.take() {
            Some(state) => state,
            // A global aggregate emits its row even over no input, but only
            // from one subtask.
            None if self.spec.group_exprs.is_empty() && ctx.task.subtask == 0 => self.spec.new_state()?,
            None => return Ok(()),
        };
        let mut state = state;
        out.collect(state.emit(&self.spec.output_schema)?);
        Ok(())
    }
}
