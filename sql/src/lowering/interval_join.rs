//! Interval joins, as Flink finds them: a join whose condition bounds one
//! input's event time by the other's from both sides,
//! `l.ts BETWEEN r.ts - INTERVAL '1' MINUTE AND r.ts + INTERVAL '5' SECOND`
//! (or `>=`/`<=` pairs, in either order), with both columns the event-time
//! column (the `WATERMARK FOR` column) of their table. Such a join keeps a
//! row only until the watermark passes its interval ([`IntervalBounds`]).
//! The condition is still evaluated as written; the bounds only say when a
//! row can match no more, so a strict `<` is bounded as `<=`.
//!
//! Window joins, likewise: a join of two windowed inputs (window table
//! function rows, or window aggregates) on their `window_end` columns keeps
//! a window's rows until the watermark passes its end.

use std::sync::Arc;

use datafusion::common::{JoinSide, ScalarValue};
use datafusion::logical_expr::Operator as BinaryOp;
use datafusion::physical_expr::expressions::{BinaryExpr, CastExpr, Column, Literal};
use datafusion::physical_expr::{PhysicalExpr, split_conjunction};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::aggregates::AggregateExec;
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::joins::utils::JoinFilter;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use weir_engine::operator::IntervalBounds;

use crate::catalog::StreamScanExec;

/// A time column of the filter's intermediate row plus a constant offset.
struct Shifted {
    column: usize,
    offset_ms: i64,
}

/// Milliseconds of a fixed-length interval literal (not months).
fn interval_ms(value: &ScalarValue) -> Option<i64> {
    match value {
        ScalarValue::IntervalDayTime(Some(v)) => {
            Some(i64::from(v.days) * 86_400_000 + i64::from(v.milliseconds))
        }
        ScalarValue::IntervalMonthDayNano(Some(v)) if v.months == 0 => {
            Some(i64::from(v.days) * 86_400_000 + v.nanoseconds / 1_000_000)
        }
        ScalarValue::DurationSecond(Some(v)) => v.checked_mul(1_000),
        ScalarValue::DurationMillisecond(Some(v)) => Some(*v),
        ScalarValue::DurationMicrosecond(Some(v)) => Some(v / 1_000),
        ScalarValue::DurationNanosecond(Some(v)) => Some(v / 1_000_000),
        _ => None,
    }
}

/// A column (through casts).
fn column_of(expr: &Arc<dyn PhysicalExpr>) -> Option<usize> {
    if let Some(c) = expr.downcast_ref::<Column>() {
        return Some(c.index());
    }
    expr.downcast_ref::<CastExpr>()
        .and_then(|c| column_of(c.expr()))
}

/// `column`, `column + interval` or `column - interval`.
fn shifted(expr: &Arc<dyn PhysicalExpr>) -> Option<Shifted> {
    if let Some(column) = column_of(expr) {
        return Some(Shifted {
            column,
            offset_ms: 0,
        });
    }
    let binary = expr.downcast_ref::<BinaryExpr>()?;
    let column = column_of(binary.left())?;
    let ms = interval_ms(binary.right().downcast_ref::<Literal>()?.value())?;
    let offset_ms = match binary.op() {
        BinaryOp::Plus => ms,
        BinaryOp::Minus => ms.checked_neg()?,
        _ => return None,
    };
    Some(Shifted { column, offset_ms })
}

/// The bounds a join filter puts on `right time - left time`, with the two
/// time columns (indices into each input); `None` unless it bounds one pair
/// of columns from both sides.
pub(super) fn interval_bounds(filter: &JoinFilter) -> Option<IntervalBounds> {
    let sides = filter.column_indices();
    let mut columns: Option<(usize, usize)> = None;
    let (mut lower, mut upper): (Option<i64>, Option<i64>) = (None, None);
    for conjunct in split_conjunction(filter.expression()) {
        let Some(binary) = conjunct.downcast_ref::<BinaryExpr>() else {
            continue;
        };
        let (Some(a), Some(b)) = (shifted(binary.left()), shifted(binary.right())) else {
            continue;
        };
        let (Some(a_side), Some(b_side)) = (sides.get(a.column), sides.get(b.column)) else {
            continue;
        };
        // Normalise to `left + lo  op  right + ro`.
        let (left, right, op) = match (a_side.side, b_side.side) {
            (JoinSide::Left, JoinSide::Right) => (
                (a_side.index, a.offset_ms),
                (b_side.index, b.offset_ms),
                *binary.op(),
            ),
            (JoinSide::Right, JoinSide::Left) => (
                (b_side.index, b.offset_ms),
                (a_side.index, a.offset_ms),
                binary.op().swap()?,
            ),
            _ => continue,
        };
        let pair = (left.0, right.0);
        if columns.is_some_and(|c| c != pair) {
            return None;
        }
        columns = Some(pair);
        // l + lo <= r + ro  <=>  r - l >= lo - ro.
        let bound = left.1.checked_sub(right.1)?;
        match op {
            BinaryOp::Lt | BinaryOp::LtEq => {
                lower = Some(lower.map_or(bound, |l| l.max(bound)));
            }
            BinaryOp::Gt | BinaryOp::GtEq => {
                upper = Some(upper.map_or(bound, |u| u.min(bound)));
            }
            _ => {}
        }
    }
    let ((left_time, right_time), lower_ms, upper_ms) = (columns?, lower?, upper?);
    Some(IntervalBounds {
        left_time,
        right_time,
        lower_ms,
        upper_ms,
    })
}

/// What a plan node says about one of its output columns: `Some(answer)`,
/// or `None` for a node it does not know.
type ColumnTest = dyn Fn(&Arc<dyn ExecutionPlan>, usize) -> Option<bool>;

/// Follows output column `column` of `plan` down through projections,
/// filters and repartitions that pass it through unchanged, and asks `leaf`
/// about the node where it stops (`None`: not a column it knows).
fn traced(plan: &Arc<dyn ExecutionPlan>, column: usize, leaf: &ColumnTest) -> bool {
    if let Some(answer) = leaf(plan, column) {
        return answer;
    }
    if let Some(p) = plan.downcast_ref::<ProjectionExec>() {
        return p
            .expr()
            .get(column)
            .and_then(|e| e.expr.downcast_ref::<Column>())
            .is_some_and(|c| traced(p.input(), c.index(), leaf));
    }
    if let Some(f) = plan.downcast_ref::<FilterExec>() {
        let column = match f.projection() {
            Some(p) => match p.get(column) {
                Some(&c) => c,
                None => return false,
            },
            None => column,
        };
        return traced(f.input(), column, leaf);
    }
    if plan.is::<RepartitionExec>() || plan.is::<CoalescePartitionsExec>() {
        return plan
            .children()
            .first()
            .is_some_and(|c| traced(c, column, leaf));
    }
    false
}

/// The name of output column `column` of `plan`.
fn is_named(plan: &Arc<dyn ExecutionPlan>, column: usize, name: &str) -> bool {
    plan.schema()
        .fields()
        .get(column)
        .is_some_and(|f| f.name() == name)
}

/// Whether output column `column` of `plan` is its table's event-time
/// column (the one `WATERMARK FOR` names), passed through unchanged.
pub(super) fn is_event_time(plan: &Arc<dyn ExecutionPlan>, column: usize) -> bool {
    traced(plan, column, &|node, column| {
        let scan = node.downcast_ref::<StreamScanExec>()?;
        Some(
            scan.window.is_none()
                && scan
                    .table
                    .watermark
                    .as_ref()
                    .is_some_and(|w| is_named(node, column, &w.column)),
        )
    })
}

/// Whether output column `column` of `plan` is the `window_end` of a window
/// table function's rows, or of a window aggregate grouped by it, passed
/// through unchanged: a window join on it may drop a window's rows once the
/// watermark passes its end, when every row of the window is in.
pub(super) fn is_window_end(plan: &Arc<dyn ExecutionPlan>, column: usize) -> bool {
    traced(plan, column, &|node, column| {
        if let Some(scan) = node.downcast_ref::<StreamScanExec>() {
            return Some(scan.window.is_some() && is_named(node, column, "window_end"));
        }
        let aggregate = node.downcast_ref::<AggregateExec>()?;
        Some(
            aggregate
                .group_expr()
                .expr()
                .get(column)
                .and_then(|(e, _)| e.downcast_ref::<Column>())
                .is_some_and(|c| is_window_end(aggregate.input(), c.index())),
        )
    })
}
