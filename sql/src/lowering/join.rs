//! Regular joins: DataFusion's `HashJoinExec` (an equi-join, with any extra
//! condition as its filter; `IN` / `EXISTS` subqueries as semi and anti
//! joins) becomes a [`JoinFactory`] whose two inputs are hashed by the key.
//!
//! ```text
//! HashJoinExec(on, filter)             Projection?   (DataFusion's projection,
//!   left                       ->        Join          and key columns dropped)
//!   right                          <-Hash(lk)- left  <-Hash(rk)- right
//! ```
//!
//! A key that is an expression (or a cast, where the two sides' types
//! differ) is computed as an extra column of its side first, so both sides
//! hash and compare the same values.

use std::sync::Arc;

use arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::common::{JoinSide, JoinType, NullEquality};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::{CastExpr, Column};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::joins::HashJoinExec;
use datafusion::physical_plan::joins::utils::build_join_schema;
use datafusion::sql::sqlparser::keywords::Keyword;
use weir_engine::changelog::{ROW_KIND_COLUMN, data_schema};
use weir_engine::graph::EdgeKind;
use weir_engine::operator::{
    JoinCondition, JoinFactory, JoinKind, OperatorFactory, ProjectionOperator, Side,
};

use super::interval_join::{interval_bounds, is_event_time, is_window_end};
use super::{Lowered, Lowering};
use crate::error::{Construct, Result, SqlError};

/// The prefix of a key column computed for a join.
const JOIN_KEY_PREFIX: &str = "__join_key_";

fn join_kind(join_type: JoinType) -> Result<JoinKind> {
    Ok(match join_type {
        JoinType::Inner => JoinKind::Inner,
        JoinType::Left => JoinKind::Left,
        JoinType::Right => JoinKind::Right,
        JoinType::Full => JoinKind::Full,
        JoinType::LeftSemi => JoinKind::LeftSemi,
        JoinType::LeftAnti => JoinKind::LeftAnti,
        JoinType::RightSemi => JoinKind::RightSemi,
        JoinType::RightAnti => JoinKind::RightAnti,
        JoinType::LeftMark | JoinType::RightMark => {
            return Err(SqlError::unsupported_construct(
                Construct::Keyword(Keyword::EXISTS),
                "an EXISTS or IN subquery inside OR is not supported on streams; \
                 split the query with UNION ALL",
            ));
        }
    })
}

/// A join kind as the warning names it.
fn join_words(kind: JoinKind) -> &'static str {
    match kind {
        JoinKind::Inner => "an inner join",
        JoinKind::Left => "a left outer join",
        JoinKind::Right => "a right outer join",
        JoinKind::Full => "a full outer join",
        JoinKind::LeftSemi | JoinKind::RightSemi => "a semi join (IN / EXISTS)",
        JoinKind::LeftAnti | JoinKind::RightAnti => "an anti join (NOT EXISTS)",
    }
}

/// One side of a join, lowered, with its key columns.
struct JoinInput {
    lowered: Lowered,
    keys: Vec<usize>,
    /// Data columns before any key column computed for the join.
    width: usize,
}

impl Lowering<'_> {
    /// Lowers a hash join (see the module docs).
    pub(super) fn lower_hash_join(&mut self, join: &HashJoinExec) -> Result<Lowered> {
        if join.null_aware {
            return Err(SqlError::unsupported_construct(
                Construct::Keyword(Keyword::NOT),
                "NOT IN over a subquery is not supported on streams (a NULL in the subquery \
                 changes every row's answer); use NOT EXISTS",
            ));
        }
        if join.null_equality() == NullEquality::NullEqualsNull {
            return Err(SqlError::unsupported_construct(
                Construct::Keyword(Keyword::JOIN),
                "a join on IS NOT DISTINCT FROM is not supported yet; join on = instead",
            ));
        }
        let kind = join_kind(*join.join_type())?;
        // A limit in one input bounds only that input.
        let bounds_output = std::mem::replace(&mut self.bounds_output, false);
        let lowered = self
            .lower(join.left())
            .and_then(|left| Ok((left, self.lower(join.right())?)));
        self.bounds_output = bounds_output;
        let (left, right) = lowered?;
        let left_keys: Vec<Arc<dyn PhysicalExpr>> =
            join.on().iter().map(|(l, _)| Arc::clone(l)).collect();
        let right_keys: Vec<Arc<dyn PhysicalExpr>> = join
            .on()
            .iter()
            .map(|(l, r)| {
                let (lt, rt) = (
                    l.data_type(&join.left().schema())?,
                    r.data_type(&join.right().schema())?,
                );
                Ok(if lt == rt {
                    Arc::clone(r)
                } else {
                    Arc::new(CastExpr::new(Arc::clone(r), lt, None)) as Arc<dyn PhysicalExpr>
                })
            })
            .collect::<Result<_>>()?;
        let left = self.join_input(left, &left_keys)?;
        let right = self.join_input(right, &right_keys)?;

        let left_data = data_schema(&left.lowered.schema);
        let right_data = data_schema(&right.lowered.schema);
        let (joined, _) = build_join_schema(&left_data, &right_data, join.join_type());
        let condition = join.filter().map(|filter| JoinCondition {
            expr: Arc::clone(filter.expression()),
            columns: filter
                .column_indices()
                .iter()
                .map(|c| {
                    let side = match c.side {
                        JoinSide::Right => Side::Right,
                        _ => Side::Left,
                    };
                    (side, c.index)
                })
                .collect(),
            schema: Arc::clone(filter.schema()),
        });
        let mut factory = JoinFactory::new(
            kind,
            [&left.lowered.schema, &right.lowered.schema],
            [left.keys.clone(), right.keys.clone()],
            condition,
            Arc::new(joined),
        )?
        .with_state_ttl(self.streaming.state_ttl_ms);
        // On event-time columns of append-only inputs, time bounds make it
        // an interval join.
        let appends = !left.lowered.changelog_mode().is_updating()
            && !right.lowered.changelog_mode().is_updating();
        if let Some(bounds) = join.filter().and_then(interval_bounds)
            && appends
            && is_event_time(join.left(), bounds.left_time)
            && is_event_time(join.right(), bounds.right_time)
        {
            factory = factory.with_interval(bounds)?;
        } else if let Some(i) = join.on().iter().position(|(l, r)| {
            let (Some(l), Some(r)) = (l.downcast_ref::<Column>(), r.downcast_ref::<Column>())
            else {
                return false;
            };
            is_window_end(join.left(), l.index()) && is_window_end(join.right(), r.index())
        }) && appends
        {
            factory = factory.with_window_end(left.keys[i], right.keys[i])?;
        }
        if factory.state_is_unbounded() {
            self.graph.warn(format!(
                "{} keeps every row of both inputs, so its state grows without bound; \
                 set 'table.exec.state.ttl' to drop keys idle that long, or bound it by time \
                 (an interval or window join)",
                join_words(kind)
            ));
        }
        let schema = factory.output_schema();
        let node = self.graph.add_operator(Arc::new(factory), None);
        self.graph
            .connect(left.lowered.node, node, EdgeKind::Hash(left.keys.clone()))?;
        self.graph
            .connect(right.lowered.node, node, EdgeKind::Hash(right.keys.clone()))?;
        let joined = Lowered { node, schema };

        // The join's columns as DataFusion's plan has them: without the
        // computed keys, then its own projection.
        let extra = (
            left_data.fields().len() - left.width,
            right_data.fields().len() - right.width,
        );
        if extra == (0, 0) && join.projection.is_none() {
            return Ok(joined);
        }
        let mut positions: Vec<usize> = match kind {
            JoinKind::LeftSemi | JoinKind::LeftAnti => (0..left.width).collect(),
            JoinKind::RightSemi | JoinKind::RightAnti => (0..right.width).collect(),
            _ => (0..left.width)
                .chain((0..right.width).map(|c| left_data.fields().len() + c))
                .collect(),
        };
        if let Some(projection) = &join.projection {
            positions = projection
                .iter()
                .map(|&p| {
                    positions.get(p).copied().ok_or_else(|| {
                        SqlError::Internal(format!("a join projects column {p} it lacks"))
                    })
                })
                .collect::<Result<_>>()?;
        }
        let data = data_schema(&joined.schema);
        let exprs = positions
            .iter()
            .map(|&p| Arc::new(Column::new(data.field(p).name(), p)) as Arc<dyn PhysicalExpr>)
            .collect();
        let out = join.schema();
        let (exprs, out) = joined.keeping_row_kind(exprs, out)?;
        self.chain(&joined, Arc::new(ProjectionOperator::new(exprs, out)))
    }

    /// `input` with its join keys `keys` as columns: the key columns where
    /// every key is a column, else its data columns then each key computed.
    fn join_input(&mut self, input: Lowered, keys: &[Arc<dyn PhysicalExpr>]) -> Result<JoinInput> {
        let data = data_schema(&input.schema);
        let width = data.fields().len();
        let columns: Option<Vec<usize>> = keys
            .iter()
            .map(|k| k.downcast_ref::<Column>().map(Column::index))
            .collect();
        if let Some(keys) = columns {
            return Ok(JoinInput {
                lowered: input,
                keys,
                width,
            });
        }
        let data_columns: Vec<(usize, &Field)> = input
            .schema
            .fields()
            .iter()
            .enumerate()
            .filter(|(_, f)| f.name() != ROW_KIND_COLUMN)
            .map(|(i, f)| (i, f.as_ref()))
            .collect();
        let mut exprs: Vec<Arc<dyn PhysicalExpr>> = data_columns
            .iter()
            .map(|(i, f)| Arc::new(Column::new(f.name(), *i)) as Arc<dyn PhysicalExpr>)
            .collect();
        let mut fields: Vec<Field> = data_columns.iter().map(|(_, f)| (*f).clone()).collect();
        for (i, key) in keys.iter().enumerate() {
            exprs.push(Arc::clone(key));
            fields.push(Field::new(
                format!("{JOIN_KEY_PREFIX}{i}"),
                key.data_type(&data)?,
                key.nullable(&data)?,
            ));
        }
        let schema: SchemaRef = Arc::new(Schema::new_with_metadata(
            fields,
            input.schema.metadata().clone(),
        ));
        let (exprs, schema) = input.keeping_row_kind(exprs, schema)?;
        let lowered = self.chain(&input, Arc::new(ProjectionOperator::new(exprs, schema)))?;
        Ok(JoinInput {
            lowered,
            keys: (width..width + keys.len()).collect(),
            width,
        })
    }
}

/// The error for a join DataFusion planned without an equality.
pub(super) fn join_without_equality() -> SqlError {
    SqlError::unsupported_construct(
        Construct::Keyword(Keyword::JOIN),
        "a join on streams needs an equality between columns of its two inputs \
         (ON a.k = b.k); for a join on time ranges add the key equality too",
    )
}
