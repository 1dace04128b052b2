//! Lowering: a DataFusion physical plan (planned with one partition and no
//! physical optimizer) becomes Weir's [`LogicalGraph`].
//!
//! ```text
//! ProjectionExec / FilterExec        -> Projection / Filter (chained, Forward)
//! AggregateExec over a window scan   -> Hash(keys) -> WindowAggregate | SessionWindowAggregate
//! AggregateExec over bounded tables   -> Hash(keys) -> GroupAggregate (emits at end of input)
//! AggregateExec otherwise             -> Hash(keys) -> UpdatingAggregate (a changelog)
//!   (aggregate.rs; a window's late rows -> Projection -> the late-rows sink)
//! ROW_NUMBER() … WHERE rn <= N       -> Hash(partition) -> TopN | WindowTopN (top_n.rs,
//!                                       window_top_n.rs)
//! GlobalLimitExec                    -> Limit | UpdatingLimit (over a changelog)
//! StreamScanExec                     -> Source [-> Hash(key) -> ChangelogNormalize, for
//!                                       upserts, and changelogs with
//!                                       cdc-events-duplicate] -> computed columns -> WatermarkGenerator
//!                                       -> WindowAssigner -> Projection
//! ```
//!
//! Each lowered node's schema says its changelog mode: an updating stream
//! carries the row-kind column last ([`weir_engine::changelog`]), which
//! projections and filters pass through and aggregates read.

use std::collections::BTreeSet;
use std::sync::Arc;

use arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::common::DFSchema;
use datafusion::execution::context::ExecutionProps;
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::physical_expr::expressions::{CastExpr, Column};
use datafusion::physical_expr::{PhysicalExpr, create_physical_expr};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::aggregates::AggregateExec;
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::joins::{CrossJoinExec, HashJoinExec, NestedLoopJoinExec};
use datafusion::physical_plan::limit::{GlobalLimitExec, LocalLimitExec};
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::sorts::sort_preserving_merge::SortPreservingMergeExec;
use datafusion::physical_plan::union::UnionExec;
use datafusion::sql::sqlparser::keywords::Keyword;
use weir_engine::LATE_RECORDS_SINK_OPTION;
use weir_engine::changelog::{ChangelogMode, ROW_KIND_COLUMN, updating_schema};
use weir_engine::graph::{EdgeKind, LogicalGraph, NodeId, SourceNode};
use weir_engine::operator::{
    ChangelogNormalizeFactory, FilterOperator, LimitOperator, OperatorFactory,
    ProcessingTimeWatermarkOperator, ProjectionOperator, SortOperator, WatermarkGeneratorOperator,
    WindowAssignerOperator,
};

use crate::catalog::{StreamScanExec, StreamTable, window_fields};
use crate::error::{Construct, Result, SqlError};
use crate::session::{CDC_EVENTS_DUPLICATE_KEY, StreamingConfig};

mod aggregate;
mod interval_join;
mod join;
mod late_rows;
mod sink_cast;
mod top_n;
mod window_top_n;

pub use late_rows::late_rows_to_sink;
pub use sink_cast::cast_to_sink;

/// A lowered subplan: the node producing it and its schema.
#[derive(Debug, Clone)]
pub struct Lowered {
    /// The node whose output is the subplan's result.
    pub node: NodeId,
    /// Its schema.
    pub schema: SchemaRef,
}

impl Lowered {
    /// Whether the subplan's rows are inserts only or changes.
    pub fn changelog_mode(&self) -> ChangelogMode {
        ChangelogMode::of(&self.schema)
    }

    /// `exprs` (computing `schema`) over this subplan's rows, extended to
    /// carry the row kind through when the rows are changes.
    fn keeping_row_kind(
        &self,
        mut exprs: Vec<Arc<dyn PhysicalExpr>>,
        schema: SchemaRef,
    ) -> Result<(Vec<Arc<dyn PhysicalExpr>>, SchemaRef)> {
        if !self.changelog_mode().is_updating() || ChangelogMode::of(&schema).is_updating() {
            return Ok((exprs, schema));
        }
        let index = self.schema.index_of(ROW_KIND_COLUMN)?;
        exprs.push(Arc::new(Column::new(ROW_KIND_COLUMN, index)));
        Ok((exprs, updating_schema(&schema)))
    }
}

/// The error for an operator that cannot take an updating input.
fn over_updates(construct: Construct, what: &str) -> SqlError {
    SqlError::unsupported_construct(
        construct,
        format!(
            "{what} over an updating result (the changes of a GROUP BY over an unbounded stream, a Top-N or a changelog source) is not supported yet"
        ),
    )
}

/// Builds a logical graph from physical plans.
pub struct Lowering<'a> {
    graph: &'a mut LogicalGraph,
    /// True while lowering a node whose every row may reach the job's
    /// output only through single-input operators: a limit there bounds
    /// the whole output, so it may end the job once reached.
    bounds_output: bool,
    /// The session's runtime mode, mini-batch and state TTL settings.
    streaming: StreamingConfig,
    /// Operators whose late rows go to a sink table.
    late_rows: Vec<LateRowsOutput>,
    /// The next window scan lowered reads every column of its table and
    /// carries it to the window aggregate as a passenger (see
    /// [`PASSENGER_PREFIX`]), so that the aggregate's late rows are whole.
    whole_late_rows: bool,
}

/// An operator's late rows, to be written to a sink table: the session
/// connects the operator's [`OutputPort::LateRows`](weir_engine::OutputPort)
/// to that table once the query is lowered.
#[derive(Debug, Clone)]
pub struct LateRowsOutput {
    /// The operator that refuses them.
    pub node: NodeId,
    /// Their columns: the operator's input, then `late_operator` and
    /// `late_watermark`.
    pub schema: SchemaRef,
    /// The table the rows were read from.
    pub table: String,
    /// The sink table they go to.
    pub sink: String,
}

fn physical(
    expr: &datafusion::logical_expr::Expr,
    schema: &SchemaRef,
) -> Result<Arc<dyn PhysicalExpr>> {
    let df_schema = DFSchema::try_from(schema.as_ref().clone())?;
    Ok(create_physical_expr(
        expr,
        &df_schema,
        &ExecutionProps::new(),
        &PhysicalPlanningContext::default(),
    )?)
}

impl<'a> Lowering<'a> {
    /// Lowers into `graph`.
    pub fn new(graph: &'a mut LogicalGraph) -> Self {
        Self {
            graph,
            bounds_output: true,
            streaming: StreamingConfig::default(),
            late_rows: Vec::new(),
            whole_late_rows: false,
        }
    }

    /// The operators whose late rows go to a sink table, once lowered.
    pub fn late_rows_outputs(&self) -> &[LateRowsOutput] {
        &self.late_rows
    }

    /// Where the late rows of `table` go: its own option, or the session's.
    fn late_records_sink(&self, table: &StreamTable) -> Option<String> {
        table
            .descriptor
            .options
            .get(LATE_RECORDS_SINK_OPTION)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .or_else(|| self.streaming.late_records_sink.clone())
    }

    /// Lowers with the session's streaming settings.
    pub fn with_streaming(mut self, streaming: StreamingConfig) -> Self {
        self.streaming = streaming;
        self
    }

    /// `lowered` without its passenger columns (see [`PASSENGER_PREFIX`]).
    fn without_passengers(&mut self, lowered: Lowered) -> Result<Lowered> {
        let kept: Vec<usize> = (0..lowered.schema.fields().len())
            .filter(|&i| !lowered.schema.field(i).name().starts_with(PASSENGER_PREFIX))
            .collect();
        if kept.len() == lowered.schema.fields().len() {
            return Ok(lowered);
        }
        let schema = Arc::new(lowered.schema.project(&kept)?);
        let exprs = kept
            .iter()
            .map(|&i| {
                Arc::new(Column::new(lowered.schema.field(i).name(), i)) as Arc<dyn PhysicalExpr>
            })
            .collect();
        self.chain(&lowered, Arc::new(ProjectionOperator::new(exprs, schema)))
    }

    fn chain(&mut self, input: &Lowered, op: Arc<dyn OperatorFactory>) -> Result<Lowered> {
        let schema = op.output_schema();
        let node = self.graph.add_operator(op, None);
        self.graph.connect(input.node, node, EdgeKind::Forward)?;
        Ok(Lowered { node, schema })
    }

    /// Lowers a plan; returns the node producing its output.
    pub fn lower(&mut self, plan: &Arc<dyn ExecutionPlan>) -> Result<Lowered> {
        let any = plan.as_ref();
        if let Some(scan) = any.downcast_ref::<StreamScanExec>() {
            return self.lower_scan(scan);
        }
        if let Some(p) = any.downcast_ref::<ProjectionExec>() {
            let input = self.lower(p.input())?;
            let exprs = p.expr().iter().map(|e| Arc::clone(&e.expr)).collect();
            let (exprs, schema) = with_passengers(&input.schema, exprs, p.schema());
            let (exprs, schema) = input.keeping_row_kind(exprs, schema)?;
            return self.chain(&input, Arc::new(ProjectionOperator::new(exprs, schema)));
        }
        if let Some(f) = any.downcast_ref::<FilterExec>() {
            if let Some(ranked) = self.lower_top_n(f)? {
                return Ok(ranked);
            }
            let input = self.lower(f.input())?;
            return self.lower_filter_over(f, input);
        }
        if let Some(a) = any.downcast_ref::<AggregateExec>() {
            return self.lower_aggregate(a);
        }
        if let Some(limit) = any.downcast_ref::<GlobalLimitExec>() {
            let input = self.lower(limit.input())?;
            if input.changelog_mode().is_updating() {
                return self.updating_limit(limit, input);
            }
            let mut op = LimitOperator::new(limit.skip(), limit.fetch(), Arc::clone(&input.schema));
            if self.bounds_output && limit.fetch().is_some() {
                op = op.ending_the_job();
            }
            // One subtask sees every row, so the limit is global.
            let node = self.graph.add_operator(Arc::new(op), Some(1));
            self.graph.connect(input.node, node, EdgeKind::Rebalance)?;
            return Ok(Lowered {
                node,
                schema: input.schema,
            });
        }
        if let Some(sort) = any.downcast_ref::<SortExec>() {
            return self.lower_sort(sort);
        }
        if let Some(join) = any.downcast_ref::<HashJoinExec>() {
            return self.lower_hash_join(join);
        }
        if any.is::<NestedLoopJoinExec>() || any.is::<CrossJoinExec>() {
            return Err(join::join_without_equality());
        }
        if any.is::<CoalescePartitionsExec>()
            || any.is::<RepartitionExec>()
            || any.is::<LocalLimitExec>()
            // One partition: the merge of sorted partitions is its input.
            || any.is::<SortPreservingMergeExec>()
        {
            return self.lower(plan.children()[0]);
        }
        if let Some(u) = any.downcast_ref::<UnionExec>() {
            let schema = u.schema();
            let exprs: Vec<Arc<dyn PhysicalExpr>> = schema
                .fields()
                .iter()
                .enumerate()
                .map(|(i, f)| Arc::new(Column::new(f.name(), i)) as Arc<dyn PhysicalExpr>)
                .collect();
            // A limit in one branch bounds only that branch.
            let bounds_output = std::mem::replace(&mut self.bounds_output, false);
            let inputs = u
                .children()
                .into_iter()
                .map(|c| self.lower(c))
                .collect::<Result<Vec<_>>>();
            self.bounds_output = bounds_output;
            let mut inputs = inputs?;
            let (exprs, schema) = self.union_changelog(&mut inputs, exprs, schema)?;
            let node = self.graph.add_operator(
                Arc::new(ProjectionOperator::new(exprs, Arc::clone(&schema))),
                None,
            );
            // Changes of one key must stay in order: forward them.
            let edge = if ChangelogMode::of(&schema).is_updating() {
                EdgeKind::Forward
            } else {
                EdgeKind::Rebalance
            };
            for input in inputs {
                self.graph.connect(input.node, node, edge.clone())?;
            }
            return Ok(Lowered { node, schema });
        }
        Err(unsupported_node(plan.name()))
    }

    /// A filter (and its projection, if it has one) over lowered `input`.
    fn lower_filter_over(&mut self, f: &FilterExec, input: Lowered) -> Result<Lowered> {
        let filtered = self.chain(
            &input,
            Arc::new(FilterOperator::new(
                Arc::clone(f.predicate()),
                Arc::clone(&input.schema),
            )),
        )?;
        if f.projection().is_some() {
            let out = f.schema();
            let exprs = out
                .fields()
                .iter()
                .map(|field| -> Result<Arc<dyn PhysicalExpr>> {
                    let idx = input.schema.index_of(field.name())?;
                    Ok(Arc::new(Column::new(field.name(), idx)))
                })
                .collect::<Result<Vec<_>>>()?;
            let (exprs, out) = with_passengers(&input.schema, exprs, out);
            let (exprs, out) = filtered.keeping_row_kind(exprs, out)?;
            return self.chain(&filtered, Arc::new(ProjectionOperator::new(exprs, out)));
        }
        Ok(filtered)
    }

    /// `ORDER BY` over bounded input: a sort at parallelism 1 that emits at
    /// the end of input. Over an unbounded stream the rows would never be
    /// final, so it is refused.
    fn lower_sort(&mut self, sort: &SortExec) -> Result<Lowered> {
        if !reads_only_bounded_tables(sort.input()) {
            return Err(unsupported_node("SortExec"));
        }
        let input = self.lower(sort.input())?;
        if input.changelog_mode().is_updating() {
            return Err(over_updates(Construct::Keyword(Keyword::ORDER), "ORDER BY"));
        }
        let op = SortOperator::new(
            sort.expr().iter().cloned().collect(),
            sort.fetch(),
            Arc::clone(&input.schema),
        );
        // One subtask sees every row, so the order is global.
        let node = self.graph.add_operator(Arc::new(op), Some(1));
        self.graph.connect(input.node, node, EdgeKind::Rebalance)?;
        Ok(Lowered {
            node,
            schema: input.schema,
        })
    }

    /// A table scan: the source and its chain (projection of computed
    /// columns, watermark generator, window assigner), all at the table's
    /// `'scan.parallelism'` when it sets one.
    fn lower_scan(&mut self, scan: &StreamScanExec) -> Result<Lowered> {
        let first_node = self.graph.nodes().len();
        let parallelism: Option<usize> = scan
            .table
            .descriptor
            .options
            .parse("scan.parallelism")
            .map_err(|e| SqlError::Plan {
                message: format!("table '{}': {e}", scan.table.descriptor.name),
                position: None,
            })?;
        if parallelism == Some(0) {
            return Err(SqlError::Plan {
                message: format!(
                    "table '{}': 'scan.parallelism' must be at least 1",
                    scan.table.descriptor.name
                ),
                position: None,
            });
        }
        let lowered = self.lower_scan_chain(scan)?;
        if parallelism.is_some() {
            for node in first_node..self.graph.nodes().len() {
                self.graph.set_parallelism(node, parallelism);
            }
        }
        Ok(lowered)
    }

    fn lower_scan_chain(&mut self, scan: &StreamScanExec) -> Result<Lowered> {
        let table = &scan.table;
        let full_len = table.schema.fields().len();
        let physical_len = table.physical_len();
        let extended_len = scan.full_schema.fields().len();
        let projection: Vec<usize> = scan
            .projection
            .clone()
            .unwrap_or_else(|| (0..extended_len).collect());
        // Columns of the table needed: projected ones, the window's time column,
        // the watermark's column and what its expression reads.
        let whole_rows = scan.window.is_some() && std::mem::take(&mut self.whole_late_rows);
        let mut needed: BTreeSet<usize> = projection
            .iter()
            .copied()
            .filter(|&i| i < full_len)
            .collect();
        if whole_rows {
            needed.extend(0..full_len);
        }
        if let Some(w) = &scan.window {
            needed.insert(w.time_column);
        }
        if let Some(wm) = &table.watermark {
            needed.insert(table.schema.index_of(&wm.column)?);
            for c in wm.expr.column_refs() {
                needed.insert(table.schema.index_of(&c.name)?);
            }
        }
        let mut physical_needed: BTreeSet<usize> = needed
            .iter()
            .copied()
            .filter(|&i| i < physical_len)
            .collect();
        for &i in needed.iter().filter(|&&i| i >= physical_len) {
            for c in table.computed[i - physical_len].expr.column_refs() {
                physical_needed.insert(table.descriptor.schema.index_of(&c.name)?);
            }
        }
        if physical_needed.is_empty() && physical_len > 0 {
            // Nothing read (e.g. COUNT(*)): read one column so batches carry their row count.
            physical_needed.insert(0);
        }
        let normalize_key = self.normalize_key(table)?;
        if let Some(key) = &normalize_key {
            // The rows are told apart by their key.
            for column in key {
                physical_needed.insert(table.descriptor.schema.index_of(column)?);
            }
        }
        let physical_needed: Vec<usize> = physical_needed.into_iter().collect();
        let needed: Vec<usize> = needed.into_iter().collect();
        let source = SourceNode::new(
            Arc::clone(&table.connector),
            table.descriptor.clone(),
            Some(physical_needed.clone()),
        )?;
        let mut current = Lowered {
            schema: source.output_schema(),
            node: self.graph.add_source(source, None),
        };
        if let Some(key) = normalize_key {
            let read = Arc::new(table.descriptor.schema.project(&physical_needed)?);
            current = self.normalize(current, &key, &read)?;
        }
        // Bring the batch to the needed table columns, in table order.
        if needed != physical_needed {
            let schema = Arc::new(table.schema.project(&needed)?);
            let exprs = needed
                .iter()
                .map(|&i| -> Result<Arc<dyn PhysicalExpr>> {
                    if i < physical_len {
                        let name = table.schema.field(i).name();
                        Ok(Arc::new(Column::new(name, current.schema.index_of(name)?)))
                    } else {
                        let expr =
                            physical(&table.computed[i - physical_len].expr, &current.schema)?;
                        let want = table.schema.field(i).data_type();
                        Ok(if expr.data_type(&current.schema)? == *want {
                            expr
                        } else {
                            Arc::new(CastExpr::new(expr, want.clone(), None))
                        })
                    }
                })
                .collect::<Result<Vec<_>>>()?;
            let (exprs, schema) = current.keeping_row_kind(exprs, schema)?;
            current = self.chain(&current, Arc::new(ProjectionOperator::new(exprs, schema)))?;
        }
        if let Some(wm) = &table.watermark {
            let expr = physical(&wm.expr, &current.schema)?;
            // Flink's per-table option; splits silent this long stop holding the watermark.
            let idle_key = "scan.watermark.idle-timeout";
            let idle_timeout = table
                .descriptor
                .options
                .get(idle_key)
                .map(|v| weir_engine::time::parse_duration_ms(idle_key, v))
                .transpose()?;
            let op = WatermarkGeneratorOperator::new(expr, Arc::clone(&current.schema))
                .with_label(format!("{} AS {}", wm.column, wm.sql))
                .with_idle_timeout(idle_timeout);
            current = self.chain(&current, Arc::new(op))?;
        }
        let position_of = |i: usize| needed.iter().position(|&n| n == i);
        if let Some(w) = &scan.window {
            if current.changelog_mode().is_updating() {
                return Err(over_updates(
                    Construct::Word(table.descriptor.name.clone()),
                    "A window",
                ));
            }
            let time = position_of(w.time_column)
                .ok_or_else(|| SqlError::Internal("time column missing".into()))?;
            let time_type = table.schema.field(w.time_column).data_type().clone();
            let mut fields: Vec<_> = current
                .schema
                .fields()
                .iter()
                .map(|f| f.as_ref().clone())
                .collect();
            fields.extend(window_fields(&time_type));
            if table.is_processing_time(w.time_column) {
                // Processing-time windows close on the wall clock.
                let name = table.schema.field(w.time_column).name();
                let op = ProcessingTimeWatermarkOperator::new(name, Arc::clone(&current.schema));
                current = self.chain(&current, Arc::new(op))?;
            }
            let op = WindowAssignerOperator::new(w.kind, time, Arc::new(Schema::new(fields)))?;
            current = self.chain(&current, Arc::new(op))?;
        }
        // Finally the scan's own projection (window columns come last).
        let out_positions: Vec<usize> = projection
            .iter()
            .map(|&i| {
                if i < full_len {
                    position_of(i)
                        .ok_or_else(|| SqlError::Internal("projected column missing".into()))
                } else {
                    Ok(needed.len() + (i - full_len))
                }
            })
            .collect::<Result<_>>()?;
        // With whole late rows, every table column follows as a passenger.
        let passengers: Vec<usize> = if whole_rows {
            (0..full_len)
                .map(|i| {
                    position_of(i).ok_or_else(|| SqlError::Internal("table column missing".into()))
                })
                .collect::<Result<_>>()?
        } else {
            Vec::new()
        };
        if out_positions != (0..current.schema.fields().len()).collect::<Vec<_>>() {
            let mut schema = scan.full_schema.project(&projection)?;
            let mut exprs: Vec<Arc<dyn PhysicalExpr>> = out_positions
                .iter()
                .map(|&p| {
                    Arc::new(Column::new(current.schema.field(p).name(), p))
                        as Arc<dyn PhysicalExpr>
                })
                .collect();
            if !passengers.is_empty() {
                let mut fields: Vec<Field> =
                    schema.fields().iter().map(|f| f.as_ref().clone()).collect();
                for &p in &passengers {
                    let field = current.schema.field(p);
                    let name = format!("{PASSENGER_PREFIX}{}", field.name());
                    exprs.push(Arc::new(Column::new(&name, p)));
                    fields.push(field.clone().with_name(name));
                }
                schema = Schema::new(fields);
            }
            let schema = Arc::new(schema);
            let (exprs, schema) = current.keeping_row_kind(exprs, schema)?;
            current = self.chain(&current, Arc::new(ProjectionOperator::new(exprs, schema)))?;
        }
        Ok(current)
    }

    /// A union's inputs and output when some input is updating: the
    /// append-only ones get a row-kind column of inserts, and the union
    /// carries the kinds through.
    fn union_changelog(
        &mut self,
        inputs: &mut [Lowered],
        exprs: Vec<Arc<dyn PhysicalExpr>>,
        schema: SchemaRef,
    ) -> Result<(Vec<Arc<dyn PhysicalExpr>>, SchemaRef)> {
        if !inputs.iter().any(|i| i.changelog_mode().is_updating()) {
            return Ok((exprs, schema));
        }
        for input in inputs.iter_mut() {
            if input.changelog_mode().is_updating() {
                continue;
            }
            let mut columns: Vec<Arc<dyn PhysicalExpr>> = input
                .schema
                .fields()
                .iter()
                .enumerate()
                .map(|(i, f)| Arc::new(Column::new(f.name(), i)) as Arc<dyn PhysicalExpr>)
                .collect();
            columns.push(Arc::new(
                datafusion::physical_expr::expressions::Literal::new(
                    datafusion::common::ScalarValue::UInt8(Some(
                        weir_engine::RowKind::Insert as u8,
                    )),
                ),
            ));
            let with_kinds = updating_schema(&input.schema);
            *input = self.chain(
                input,
                Arc::new(ProjectionOperator::new(columns, with_kinds)),
            )?;
        }
        let index = schema.fields().len();
        let mut exprs = exprs;
        exprs.push(Arc::new(Column::new(ROW_KIND_COLUMN, index)));
        Ok((exprs, updating_schema(&schema)))
    }

    /// The key of the `ChangelogNormalize` that follows `table`'s source,
    /// as Flink plans it: an upsert source's key; with
    /// `table.exec.source.cdc-events-duplicate`, a changelog source's
    /// primary key (its change events may come twice, and a deletion of a
    /// row never seen must not reach the aggregates). `None`: no
    /// `ChangelogNormalize`.
    fn normalize_key(&self, table: &StreamTable) -> Result<Option<Vec<String>>> {
        let descriptor = &table.descriptor;
        if let Some(key) = table.connector.upsert_key(descriptor) {
            return Ok(Some(key));
        }
        if !self.streaming.cdc_events_duplicate || !table.connector.produces_updates(descriptor) {
            return Ok(None);
        }
        if descriptor.primary_key.is_empty() {
            return Err(SqlError::plan(format!(
                "'{CDC_EVENTS_DUPLICATE_KEY}' is true, so the changelog table '{}' needs a \
                 PRIMARY KEY (…) NOT ENFORCED to deduplicate its change events by, as in Flink; \
                 declare one or set '{CDC_EVENTS_DUPLICATE_KEY}' = 'false'",
                descriptor.name
            )));
        }
        Ok(Some(descriptor.primary_key.clone()))
    }

    /// A `ChangelogNormalize` keyed by `key` after a source whose rows are
    /// `read`: the retract changelog of its upserts, or its changelog
    /// without repeated change events and deletions of rows never seen.
    fn normalize(&mut self, source: Lowered, key: &[String], read: &SchemaRef) -> Result<Lowered> {
        let key_columns = key
            .iter()
            .map(|k| read.index_of(k))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let factory = ChangelogNormalizeFactory::new(&source.schema, key_columns.clone(), read)?
            .with_state_ttl(self.streaming.state_ttl_ms);
        self.connect_keyed(source, Arc::new(factory), EdgeKind::Hash(key_columns))
    }

    fn connect_keyed(
        &mut self,
        input: Lowered,
        factory: Arc<dyn OperatorFactory>,
        edge: EdgeKind,
    ) -> Result<Lowered> {
        let schema = factory.output_schema();
        let node = self.graph.add_operator(factory, None);
        self.graph.connect(input.node, node, edge)?;
        Ok(Lowered { node, schema })
    }
}

/// The window scan feeding a plan, if any.
/// The name prefix of a passenger column: a column of the table a window
/// aggregate reads, carried (only when its late rows go to a table) from
/// the scan to the aggregate, so that a late row is the whole row read.
pub const PASSENGER_PREFIX: &str = "__late_row.";

/// `exprs` and `schema` (a projection over `input`) with `input`'s
/// passenger columns appended.
fn with_passengers(
    input: &SchemaRef,
    mut exprs: Vec<Arc<dyn PhysicalExpr>>,
    schema: SchemaRef,
) -> (Vec<Arc<dyn PhysicalExpr>>, SchemaRef) {
    let passengers: Vec<(usize, &Field)> = input
        .fields()
        .iter()
        .enumerate()
        .filter(|(_, f)| f.name().starts_with(PASSENGER_PREFIX))
        .map(|(i, f)| (i, f.as_ref()))
        .collect();
    if passengers.is_empty() {
        return (exprs, schema);
    }
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    for (i, field) in passengers {
        exprs.push(Arc::new(Column::new(field.name(), i)));
        fields.push(field.clone());
    }
    (exprs, Arc::new(Schema::new(fields)))
}

/// How many table scans `plan` reads.
fn scan_count(plan: &Arc<dyn ExecutionPlan>) -> usize {
    if plan.is::<StreamScanExec>() {
        return 1;
    }
    plan.children().into_iter().map(scan_count).sum()
}

fn find_window_scan(plan: &Arc<dyn ExecutionPlan>) -> Option<&StreamScanExec> {
    if let Some(scan) = plan.downcast_ref::<StreamScanExec>() {
        return scan.window.is_some().then_some(scan);
    }
    if plan.is::<AggregateExec>() {
        return None;
    }
    plan.children().into_iter().find_map(find_window_scan)
}

/// True when every table the plan reads ends by itself.
fn reads_only_bounded_tables(plan: &Arc<dyn ExecutionPlan>) -> bool {
    if let Some(scan) = plan.as_ref().downcast_ref::<StreamScanExec>() {
        return scan.table.connector.is_bounded(&scan.table.descriptor);
    }
    plan.children().into_iter().all(reads_only_bounded_tables)
}

fn unsupported_node(name: &str) -> SqlError {
    let (construct, what) = match name {
        "SortExec" | "SortPreservingMergeExec" => (
            Construct::Keyword(Keyword::ORDER),
            "ORDER BY on an unbounded stream (results would never be final); aggregate over \
             windows instead, or read a bounded table",
        ),
        n if n.contains("Join") => (
            Construct::Keyword(Keyword::JOIN),
            "this join is not supported on streams yet; an equi-join (ON a.k = b.k) is",
        ),
        "WindowAggExec" | "BoundedWindowAggExec" => (
            Construct::Keyword(Keyword::OVER),
            "OVER window functions are not supported yet; use TUMBLE, HOP or SESSION",
        ),
        "PlaceholderRowExec" | "EmptyExec" => {
            return SqlError::unsupported("a streaming query must read from a table (FROM …)");
        }
        "DataSourceExec" | "ValuesExec" | "MemoryExec" => (
            Construct::Keyword(Keyword::VALUES),
            "VALUES and in-memory tables are not streams; declare a table with CREATE TABLE",
        ),
        other => {
            return SqlError::unsupported(format!(
                "the plan node {other} has no streaming operator yet"
            ));
        }
    };
    SqlError::unsupported_construct(construct, what)
}
