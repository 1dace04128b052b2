//! Window Top-N: a Top-N whose `PARTITION BY` holds the window of a window
//! table function (`window_start` and `window_end`, or `window_end` or
//! `window_time` alone) over that function's rows or a window aggregate's
//! output, as Flink plans its `WindowRank`, becomes a
//! [`WindowTopNFactory`] keyed by the other partition columns. It emits
//! each window's top rows once, append-only, when the watermark passes the
//! window's end.
//!
//! A partition column is a window column when it traces, through
//! projections, filters and the group columns of aggregates, to a column a
//! window table function appends; a column merely named `window_end` is
//! not one.

use std::sync::Arc;

use datafusion::physical_expr::PhysicalSortExpr;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::sql::sqlparser::keywords::Keyword;
use weir_engine::graph::EdgeKind;
use weir_engine::operator::{OperatorFactory, RankFunction, WindowKind, WindowTopNFactory};

use super::{Lowered, Lowering, find_window_scan, over_updates};
use crate::catalog::{StreamScanExec, WINDOW_COLUMNS};
use crate::error::{Construct, Result, SqlError};

/// Which of the columns a window table function appends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WindowColumn {
    Start,
    End,
    Time,
}

/// How a Top-N ranks, whichever operator runs it.
#[derive(Debug, Clone)]
pub(super) struct Ranking {
    /// The `ORDER BY` of the `OVER (…)` clause.
    pub order: Vec<PhysicalSortExpr>,
    /// The most rows (or ranks) kept per partition.
    pub rows: usize,
    /// `ROW_NUMBER`, `RANK` or `DENSE_RANK`.
    pub function: RankFunction,
    /// The rank column's field.
    pub rank_field: arrow::datatypes::Field,
}

/// The window table function column that output column `column` of `plan`
/// is, with the function's kind; `None` for any other column.
fn window_column_of(
    plan: &Arc<dyn ExecutionPlan>,
    column: usize,
) -> Option<(WindowKind, WindowColumn)> {
    if let Some(scan) = plan.downcast_ref::<StreamScanExec>() {
        let window = scan.window.as_ref()?;
        let full = match &scan.projection {
            Some(p) => *p.get(column)?,
            None => column,
        };
        let first_window_column = scan.full_schema.fields().len() - WINDOW_COLUMNS.len();
        let which = match full.checked_sub(first_window_column)? {
            0 => WindowColumn::Start,
            1 => WindowColumn::End,
            2 => WindowColumn::Time,
            _ => return None,
        };
        return Some((window.kind, which));
    }
    if let Some(p) = plan.downcast_ref::<ProjectionExec>() {
        let c = p.expr().get(column)?.expr.downcast_ref::<Column>()?;
        return window_column_of(p.input(), c.index());
    }
    if let Some(f) = plan.downcast_ref::<FilterExec>() {
        let column = match f.projection() {
            Some(p) => *p.get(column)?,
            None => column,
        };
        return window_column_of(f.input(), column);
    }
    if plan.is::<CoalescePartitionsExec>() || plan.is::<RepartitionExec>() {
        return window_column_of(plan.children()[0], column);
    }
    if let Some(a) = plan.downcast_ref::<AggregateExec>() {
        // A group column of a window aggregate (its Final over a Partial
        // outputs the partial's group columns first, as they were).
        let mut source = a;
        if matches!(
            a.mode(),
            AggregateMode::Final | AggregateMode::FinalPartitioned
        ) {
            let mut child = a.input();
            while child.is::<CoalescePartitionsExec>() || child.is::<RepartitionExec>() {
                child = child.children()[0];
            }
            source = child.downcast_ref::<AggregateExec>()?;
        }
        let (expr, _) = source.group_expr().expr().get(column)?;
        let c = expr.downcast_ref::<Column>()?;
        return window_column_of(source.input(), c.index());
    }
    None
}

/// Where a window Top-N finds its window: the column, what to add to it to
/// get the window's end, and the other partition columns.
pub(super) struct WindowPartition {
    column: usize,
    end_offset_ms: i64,
    keys: Vec<usize>,
}

/// The window a Top-N over `input` partitions by (`partition` are input
/// columns), if it partitions by one; an error for a window it cannot rank.
pub(super) fn window_partition(
    input: &Arc<dyn ExecutionPlan>,
    partition: &[usize],
) -> Result<Option<WindowPartition>> {
    let refuse = |message: &str| {
        Err(SqlError::unsupported_construct(
            Construct::Keyword(Keyword::PARTITION),
            message,
        ))
    };
    let mut kind = None;
    let (mut start, mut end, mut time) = (None, None, None);
    let mut keys = Vec::new();
    for &c in partition {
        match window_column_of(input, c) {
            Some((k, which)) => {
                kind = Some(k);
                let slot = match which {
                    WindowColumn::Start => &mut start,
                    WindowColumn::End => &mut end,
                    WindowColumn::Time => &mut time,
                };
                slot.get_or_insert(c);
            }
            None => keys.push(c),
        }
    }
    let Some(kind) = kind else {
        return Ok(None);
    };
    let (column, end_offset_ms) = match (kind, start, end, time) {
        (WindowKind::Session { .. }, ..) => {
            return refuse(
                "a Window Top-N over SESSION windows is not supported yet; rank the rows of \
                 TUMBLE, HOP or CUMULATE windows",
            );
        }
        (_, _, Some(e), _) => (e, 0),
        (_, _, None, Some(t)) => (t, 1),
        (WindowKind::Cumulate { .. }, Some(_), None, None) => {
            return refuse(
                "a Window Top-N over CUMULATE windows must PARTITION BY window_end (its windows \
                 share their window_start)",
            );
        }
        (kind, Some(s), None, None) => (s, kind.size_ms()),
        (_, None, None, None) => return Ok(None),
    };
    Ok(Some(WindowPartition {
        column,
        end_offset_ms,
        keys,
    }))
}

impl Lowering<'_> {
    /// A window Top-N over lowered `input` (the plan `input_plan`) when
    /// `partition` holds a window; `None` otherwise.
    pub(super) fn lower_window_top_n(
        &mut self,
        input_plan: &Arc<dyn ExecutionPlan>,
        input: &Lowered,
        partition: &[usize],
        ranking: &Ranking,
    ) -> Result<Option<Lowered>> {
        let Some(window) = window_partition(input_plan, partition)? else {
            return Ok(None);
        };
        if input.changelog_mode().is_updating() {
            return Err(over_updates(
                Construct::Word("ROW_NUMBER".into()),
                "A Window Top-N",
            ));
        }
        let mut factory = WindowTopNFactory::new(
            Arc::clone(&input.schema),
            window.column,
            window.end_offset_ms,
            window.keys.clone(),
            ranking.order.clone(),
            ranking.rows,
            ranking.rank_field.clone(),
        )?
        .with_rank_function(ranking.function);
        // Over the window function's rows (not an aggregate's), late rows
        // are the table's and may go to its late-rows sink.
        let late_sink = find_window_scan(input_plan).and_then(|scan| {
            self.late_records_sink(&scan.table)
                .map(|sink| (scan.table.descriptor.name.clone(), sink))
        });
        if late_sink.is_some() {
            factory = factory.with_late_rows();
        }
        let factory: Arc<dyn OperatorFactory> = Arc::new(factory);
        let lowered = if window.keys.is_empty() {
            // One subtask sees every row of a window.
            let schema = factory.output_schema();
            let node = self.graph.add_operator(factory, Some(1));
            self.graph.connect(input.node, node, EdgeKind::Rebalance)?;
            Lowered { node, schema }
        } else {
            self.connect_keyed(input.clone(), factory, EdgeKind::Hash(window.keys))?
        };
        self.note_late_rows(&lowered, input, late_sink);
        Ok(Some(self.without_passengers(lowered)?))
    }
}
