//! Top-N and deduplication: `ROW_NUMBER()` (or `RANK()`, `DENSE_RANK()`)
//! `OVER (PARTITION BY … ORDER BY …)`
//! under a filter that bounds the row number (`rn <= N`, `rn < N`,
//! `rn = 1`), as Flink plans them, becomes a [`TopNFactory`] keyed by the
//! partition columns. When the partition holds the window of a window
//! table function, it is a window Top-N instead (see [`super::window_top_n`]).
//!
//! ```text
//! FilterExec(rn <= N)                       Filter(rn <= N)
//!   ProjectionExec* (renames rn)     ->       Projection*
//!     BoundedWindowAggExec(row_number)          TopN  <-Hash(partition)-  input
//! ```
//!
//! Without `PARTITION BY`, the Top-N is one task. Over an append-only
//! input it keeps `N` rows. Over an updating input it would keep every row,
//! since a retraction of a top row brings the next one in. So it ranks in
//! two stages, a bound Flink's single `RetractableTopN` lacks. The first
//! stage is a Top-N per hash bucket of the whole row ([`RowBucket`], with
//! [`TOP_N_BUCKETS`] buckets). It is partitioned, so it runs in parallel
//! and spills past its memory budget. It emits only the rows that enter and
//! leave each bucket's top. The second stage ranks that changelog, which
//! holds at most `buckets × N` rows.
//!
//! The two stages give the same ranking as one. A row in the top `N`
//! overall is also in the top `N` of its own bucket, whose rows are a
//! subset of all rows. This holds for `ROW_NUMBER`, `RANK` and `DENSE_RANK`
//! alike, since a rank within a subset is never worse than the rank
//! overall.
//!
//! ```text
//! TopN(n) <-1- Projection(drop bucket) <- TopN(bucket, n, rank not emitted)
//!                      <-Hash(bucket)- Projection(+ bucket) <- input
//! ```

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema};
use datafusion::common::ScalarValue;
use datafusion::logical_expr::Operator as BinaryOp;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::{BinaryExpr, Column, Literal};
use datafusion::physical_expr::window::{StandardWindowExpr, WindowExpr};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::windows::{BoundedWindowAggExec, WindowAggExec, WindowUDFExpr};
use datafusion::sql::sqlparser::keywords::Keyword;
use weir_engine::changelog::ROW_KIND_COLUMN;
use weir_engine::graph::EdgeKind;
use weir_engine::operator::{OperatorFactory, ProjectionOperator, RankFunction, TopNFactory};
use weir_engine::partition::RowBucket;

use super::window_top_n::{Ranking, window_partition};
use super::{Lowered, Lowering, find_window_scan, scan_count};
use crate::error::{Construct, Result, SqlError};

/// How many hash buckets a Top-N without `PARTITION BY` over an updating
/// input ranks first (see the module docs). Its final ranking then holds at
/// most this many times `N` rows.
pub const TOP_N_BUCKETS: u32 = 1024;

/// The first stage's bucket column, dropped before the second.
const BUCKET_COLUMN: &str = "__top_n_bucket";

/// The name of a window expression's function (`row_number`, `rank`, …).
fn window_function_name(expr: &Arc<dyn WindowExpr>) -> String {
    expr.as_any()
        .downcast_ref::<StandardWindowExpr>()
        .and_then(|s| {
            s.get_standard_func_expr()
                .as_any()
                .downcast_ref::<WindowUDFExpr>()
                .map(|u| u.fun().name().to_string())
        })
        .unwrap_or_else(|| expr.name().to_string())
}

/// `column op N` (or `N op column`) with an integer `N`: the column's index
/// and the most rows the bound admits; `None` for another predicate.
fn rank_bound(predicate: &Arc<dyn PhysicalExpr>) -> Option<(usize, Option<usize>)> {
    let binary = predicate.downcast_ref::<BinaryExpr>()?;
    let integer = |e: &Arc<dyn PhysicalExpr>| -> Option<i64> {
        match e.downcast_ref::<Literal>()?.value() {
            ScalarValue::Int64(Some(v)) => Some(*v),
            ScalarValue::UInt64(Some(v)) => i64::try_from(*v).ok(),
            ScalarValue::Int32(Some(v)) => Some(i64::from(*v)),
            _ => None,
        }
    };
    let (column, op, n) = match (
        binary.left().downcast_ref::<Column>(),
        integer(binary.right()),
        binary.right().downcast_ref::<Column>(),
        integer(binary.left()),
    ) {
        (Some(c), Some(n), _, _) => (c.index(), *binary.op(), n),
        (_, _, Some(c), Some(n)) => (c.index(), binary.op().swap()?, n),
        _ => return None,
    };
    let rows = match op {
        BinaryOp::LtEq => Some(n),
        BinaryOp::Lt => Some(n - 1),
        BinaryOp::Eq if n == 1 => Some(1),
        // `rn = 3`, `rn > 2`: not a Top-N.
        _ => None,
    };
    Some((column, rows.map(|r| usize::try_from(r.max(0)).unwrap_or(0))))
}

impl Lowering<'_> {
    /// Lowers `filter` as a Top-N when it bounds a `ROW_NUMBER()`; `None`
    /// when the filter is not over a window function.
    pub(super) fn lower_top_n(&mut self, filter: &FilterExec) -> Result<Option<Lowered>> {
        let mut projections: Vec<&ProjectionExec> = Vec::new();
        let mut node = filter.input();
        while let Some(p) = node.downcast_ref::<ProjectionExec>() {
            projections.push(p);
            node = p.input();
        }
        let (window_exprs, window_input) =
            if let Some(w) = node.downcast_ref::<BoundedWindowAggExec>() {
                (w.window_expr(), w.input())
            } else if let Some(w) = node.downcast_ref::<WindowAggExec>() {
                (w.window_expr(), w.input())
            } else {
                return Ok(None);
            };
        let Some((mut column, rows)) = rank_bound(filter.predicate()) else {
            return Ok(None);
        };
        // Follow the filtered column down to the window's output.
        for p in &projections {
            match p
                .expr()
                .get(column)
                .and_then(|e| e.expr.downcast_ref::<Column>())
            {
                Some(c) => column = c.index(),
                None => return Ok(None),
            }
        }
        let window_schema = node.schema();
        let first_window_column = window_schema.fields().len() - window_exprs.len();
        let Some(expr) = column
            .checked_sub(first_window_column)
            .and_then(|i| window_exprs.get(i))
        else {
            return Ok(None);
        };
        if window_exprs.len() != 1 {
            return Err(SqlError::unsupported_construct(
                Construct::Keyword(Keyword::OVER),
                "a Top-N takes one window function (ROW_NUMBER() OVER …) in its subquery",
            ));
        }
        let function = match window_function_name(expr).as_str() {
            "row_number" => RankFunction::RowNumber,
            "rank" => RankFunction::Rank,
            "dense_rank" => RankFunction::DenseRank,
            other => {
                return Err(SqlError::unsupported_construct(
                    Construct::Word(other.to_uppercase()),
                    format!(
                        "{} cannot bound a Top-N; use ROW_NUMBER(), RANK() or DENSE_RANK()",
                        other.to_uppercase()
                    ),
                ));
            }
        };
        let Some(rows) = rows.filter(|&r| r > 0) else {
            return Err(SqlError::unsupported_construct(
                Construct::Keyword(Keyword::OVER),
                "a Top-N filters its row number with rn <= N, rn < N or rn = 1 (N at least 1)",
            ));
        };
        if expr.order_by().is_empty() {
            return Err(SqlError::unsupported_construct(
                Construct::Keyword(Keyword::OVER),
                "a Top-N needs ORDER BY in its OVER (…) clause",
            ));
        }
        let partition_columns =
            expr.partition_by()
                .iter()
                .map(|e| {
                    e.downcast_ref::<Column>().map(Column::index).ok_or_else(|| {
                    SqlError::unsupported_construct(
                        Construct::Keyword(Keyword::PARTITION),
                        "a Top-N partitions by columns; compute the expression in a subquery",
                    )
                })
                })
                .collect::<Result<Vec<_>>>()?;
        // Over an updating input (the top N of a running GROUP BY) the
        // Top-N keeps every row, as Flink's RetractableTopN.
        // A window Top-N over a table function's rows whose late rows go to
        // a table reads whole rows, as a window aggregate does.
        self.whole_late_rows = scan_count(window_input) == 1
            && window_partition(window_input, &partition_columns)?.is_some()
            && find_window_scan(window_input)
                .is_some_and(|scan| self.late_records_sink(&scan.table).is_some());
        let input = self.lower(window_input);
        self.whole_late_rows = false;
        let input = input?;
        let ranking = Ranking {
            order: expr.order_by().to_vec(),
            rows,
            function,
            rank_field: window_schema.field(first_window_column).clone(),
        };
        if let Some(ranked) =
            self.lower_window_top_n(window_input, &input, &partition_columns, &ranking)?
        {
            return self.finish_top_n(filter, &projections, ranked).map(Some);
        }
        let input = if partition_columns.is_empty() && input.changelog_mode().is_updating() {
            self.rank_buckets(&input, &ranking)?
        } else {
            input
        };
        let factory = TopNFactory::new(
            std::sync::Arc::clone(&input.schema),
            partition_columns.clone(),
            ranking.order,
            rows,
            ranking.rank_field,
        )?
        .with_state_ttl(self.streaming.state_ttl_ms)
        .with_rank_function(function);
        let schema = factory.output_schema();
        let (edge, parallelism) = if partition_columns.is_empty() {
            (EdgeKind::Rebalance, Some(1))
        } else {
            (EdgeKind::Hash(partition_columns), None)
        };
        let node_id = self.graph.add_operator(Arc::new(factory), parallelism);
        self.graph.connect(input.node, node_id, edge)?;
        let ranked = Lowered {
            node: node_id,
            schema,
        };
        self.finish_top_n(filter, &projections, ranked).map(Some)
    }

    /// The first stage of a Top-N without `PARTITION BY` over the updating
    /// `input`: the top rows of each hash bucket of whole rows, as a
    /// changelog of `input`'s columns (see the module docs).
    fn rank_buckets(&mut self, input: &Lowered, ranking: &Ranking) -> Result<Lowered> {
        // The data columns, by their index in the input (the row kind aside).
        let data: Vec<(usize, Field)> = input
            .schema
            .fields()
            .iter()
            .enumerate()
            .filter(|(_, f)| f.name() != ROW_KIND_COLUMN)
            .map(|(i, f)| (i, f.as_ref().clone()))
            .collect();
        let width = data.len();
        let columns = |data: &[(usize, Field)]| -> Vec<Arc<dyn PhysicalExpr>> {
            data.iter()
                .map(|(i, f)| Arc::new(Column::new(f.name(), *i)) as Arc<dyn PhysicalExpr>)
                .collect()
        };
        let metadata = input.schema.metadata().clone();
        let data_fields: Vec<Field> = data.iter().map(|(_, f)| f.clone()).collect();

        let mut exprs = columns(&data);
        let inputs = data
            .iter()
            .map(|(i, f)| Column::new(f.name(), *i))
            .collect();
        exprs.push(Arc::new(RowBucket::new(inputs, TOP_N_BUCKETS)));
        let mut fields = data_fields.clone();
        fields.push(Field::new(BUCKET_COLUMN, DataType::UInt32, false));
        let schema = Arc::new(Schema::new_with_metadata(fields, metadata.clone()));
        let (exprs, schema) = input.keeping_row_kind(exprs, schema)?;
        let bucketed = self.chain(input, Arc::new(ProjectionOperator::new(exprs, schema)))?;

        let factory = TopNFactory::new(
            Arc::clone(&bucketed.schema),
            vec![width],
            ranking.order.clone(),
            ranking.rows,
            ranking.rank_field.clone(),
        )?
        .with_state_ttl(self.streaming.state_ttl_ms)
        .with_rank_function(ranking.function)
        .without_rank_column();
        let schema = factory.output_schema();
        let node = self.graph.add_operator(Arc::new(factory), None);
        self.graph
            .connect(bucketed.node, node, EdgeKind::Hash(vec![width]))?;
        let ranked = Lowered { node, schema };

        // The bucket's rows: the data columns lead, in order.
        let exprs = (0..width)
            .map(|i| Arc::new(Column::new(data_fields[i].name(), i)) as Arc<dyn PhysicalExpr>)
            .collect();
        let schema = Arc::new(Schema::new_with_metadata(data_fields, metadata));
        let (exprs, schema) = ranked.keeping_row_kind(exprs, schema)?;
        self.chain(&ranked, Arc::new(ProjectionOperator::new(exprs, schema)))
    }

    /// The projections between a Top-N's filter and its window function,
    /// then the filter, over the lowered Top-N `ranked`.
    fn finish_top_n(
        &mut self,
        filter: &FilterExec,
        projections: &[&ProjectionExec],
        ranked: Lowered,
    ) -> Result<Lowered> {
        let mut current = ranked;
        for p in projections.iter().rev() {
            let exprs = p.expr().iter().map(|e| Arc::clone(&e.expr)).collect();
            let (exprs, schema) = current.keeping_row_kind(exprs, p.schema())?;
            current = self.chain(&current, Arc::new(ProjectionOperator::new(exprs, schema)))?;
        }
        // The bound holds for every row the Top-N emits; the filter stays
        // for the rest of its predicate's plan (its projection).
        self.lower_filter_over(filter, current)
    }
}
