//! Lowering of `AggregateExec`: a window aggregate (with its late rows),
//! the final-row aggregate of bounded tables, or the updating aggregate of
//! a stream, each behind a hash exchange on its keys; and `LIMIT` over an
//! updating result.

use std::sync::Arc;

use arrow::datatypes::Schema;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::limit::GlobalLimitExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::sql::sqlparser::keywords::Keyword;
use weir_engine::changelog::ChangelogMode;
use weir_engine::graph::EdgeKind;
use weir_engine::operator::{
    AggregateSpec, GroupAggregateFactory, LateRows, OperatorFactory, ProjectionOperator,
    SessionWindowAggregateFactory, SnapshotAt, UpdatingAggregateFactory, UpdatingLimitFactory,
    WindowAggregateFactory, WindowKind,
};

use super::{
    LateRowsOutput, Lowered, Lowering, find_window_scan, over_updates, reads_only_bounded_tables,
    scan_count,
};
use crate::error::{Construct, Result, SqlError};
use crate::session::RuntimeMode;

impl Lowering<'_> {
    pub(super) fn lower_aggregate(&mut self, agg: &AggregateExec) -> Result<Lowered> {
        // Single-phase, or Final over Partial: the partial holds the real exprs.
        let (spec_source, input_plan) = match agg.mode() {
            AggregateMode::Single | AggregateMode::SinglePartitioned => (agg, agg.input()),
            AggregateMode::Final | AggregateMode::FinalPartitioned => {
                let mut child = agg.input();
                while child.is::<CoalescePartitionsExec>() || child.is::<RepartitionExec>() {
                    child = child.children()[0];
                }
                match child.downcast_ref::<AggregateExec>() {
                    Some(partial) if *partial.mode() == AggregateMode::Partial => {
                        (partial, partial.input())
                    }
                    _ => {
                        return Err(SqlError::Internal(
                            "final aggregate without a partial one".into(),
                        ));
                    }
                }
            }
            other => {
                return Err(SqlError::Internal(format!(
                    "unexpected aggregate mode {other:?}"
                )));
            }
        };
        if spec_source.group_expr().has_grouping_set() {
            return Err(SqlError::unsupported_construct(
                Construct::Word("GROUPING".into()),
                "GROUPING SETS, CUBE and ROLLUP are not supported yet",
            ));
        }
        // A window aggregate whose late rows go to a table reads whole rows
        // (one table only, so that no union mixes passengers and none).
        self.whole_late_rows = scan_count(input_plan) == 1
            && find_window_scan(input_plan)
                .is_some_and(|scan| self.late_records_sink(&scan.table).is_some());
        let input = self.lower(input_plan);
        self.whole_late_rows = false;
        let input = input?;
        let group_exprs: Vec<Arc<dyn PhysicalExpr>> = spec_source
            .group_expr()
            .expr()
            .iter()
            .map(|(e, _)| Arc::clone(e))
            .collect();
        let group_schema = spec_source.group_expr().group_schema(&input.schema)?;
        let spec = Arc::new(AggregateSpec {
            group_exprs: group_exprs.clone(),
            group_schema,
            aggregates: spec_source.aggr_expr().to_vec(),
            filters: spec_source.filter_expr().to_vec(),
            output_schema: agg.schema(),
            input_schema: Arc::clone(&input.schema),
        });
        let window_scan = find_window_scan(input_plan);
        let window = window_scan
            .and_then(|scan| scan.window.as_ref())
            .map(|w| w.kind);
        let late_sink = window_scan.and_then(|scan| {
            self.late_records_sink(&scan.table)
                .map(|sink| (scan.table.descriptor.name.clone(), sink))
        });
        if window.is_some() && input.changelog_mode().is_updating() {
            return Err(over_updates(
                Construct::Word("window_start".into()),
                "A window aggregate",
            ));
        }
        let column_named = |name: &str| {
            group_exprs
                .iter()
                .position(|e| e.downcast_ref::<Column>().is_some_and(|c| c.name() == name))
        };
        let (start, end, time) = match window {
            Some(_) => (
                column_named("window_start"),
                column_named("window_end"),
                column_named("window_time"),
            ),
            None => (None, None, None),
        };
        let window_groups: Vec<usize> = start.iter().chain(&end).chain(&time).copied().collect();
        let key_exprs: Vec<usize> = (0..group_exprs.len())
            .filter(|i| !window_groups.contains(i))
            .collect();
        let late = late_sink.is_some();
        if let (Some(WindowKind::Session { .. }), Some(_)) = (window, time) {
            return Err(SqlError::unsupported(
                "a SESSION window aggregate cannot GROUP BY window_time (sessions grow as \
                 they merge); select window_end - INTERVAL '1' MILLISECOND instead",
            ));
        }
        // Grouped by window_time but not window_end: it ends a millisecond later.
        let (end, end_offset) = match (end, time) {
            (None, Some(t)) => (Some(t), 1),
            (end, _) => (end, 0),
        };
        let factory: Arc<dyn OperatorFactory> = match (window, start, end) {
            (Some(WindowKind::Session { gap_ms }), Some(s), Some(e)) => {
                let factory = SessionWindowAggregateFactory::new(Arc::clone(&spec), s, e, gap_ms);
                Arc::new(if late {
                    factory.with_late_rows()
                } else {
                    factory
                })
            }
            (Some(WindowKind::Session { .. }), _, _) => {
                return Err(SqlError::unsupported(
                    "a SESSION window aggregate must GROUP BY both window_start and window_end",
                ));
            }
            (Some(_), _, Some(e)) => Arc::new(with_late_rows(
                WindowAggregateFactory::new(Arc::clone(&spec), e, end_offset)
                    .with_key_columns(key_exprs.clone()),
                late,
            )),
            (Some(WindowKind::Cumulate { .. }), Some(_), None) => {
                return Err(SqlError::unsupported(
                    "a CUMULATE window aggregate must GROUP BY window_end (its windows share \
                     their window_start)",
                ));
            }
            (Some(kind), Some(s), None) => Arc::new(
                WindowAggregateFactory::new(Arc::clone(&spec), s, kind.size_ms())
                    .with_key_columns(key_exprs.clone()),
            ),
            _ => self.group_aggregate(&spec, input_plan, input.changelog_mode())?,
        };
        // Partition by the non-window keys; with none, one subtask sees everything.
        let (edge, parallelism) = if key_exprs.is_empty() {
            (EdgeKind::Rebalance, Some(1))
        } else {
            let mut keyed = input.clone();
            let mut key_columns = Vec::new();
            let mut extra: Vec<(Arc<dyn PhysicalExpr>, String)> = Vec::new();
            for &k in &key_exprs {
                match group_exprs[k].downcast_ref::<Column>() {
                    Some(c) => key_columns.push(c.index()),
                    None => {
                        key_columns.push(input.schema.fields().len() + extra.len());
                        extra.push((Arc::clone(&group_exprs[k]), format!("__weir_key_{k}")));
                    }
                }
            }
            if !extra.is_empty() {
                // Computed keys: append them so the shuffle can hash them.
                let mut fields: Vec<_> = input
                    .schema
                    .fields()
                    .iter()
                    .map(|f| f.as_ref().clone())
                    .collect();
                let mut exprs: Vec<Arc<dyn PhysicalExpr>> = (0..fields.len())
                    .map(|i| {
                        Arc::new(Column::new(input.schema.field(i).name(), i))
                            as Arc<dyn PhysicalExpr>
                    })
                    .collect();
                for (e, name) in extra {
                    fields.push(arrow::datatypes::Field::new(
                        name,
                        e.data_type(&input.schema)?,
                        true,
                    ));
                    exprs.push(e);
                }
                keyed = self.chain(
                    &input,
                    Arc::new(ProjectionOperator::new(
                        exprs,
                        Arc::new(Schema::new(fields)),
                    )),
                )?;
                // Chained to its input (a rebalance first would let rows
                // overtake watermarks on the way to the shuffle).
                let parallelism = self.graph.node(input.node).parallelism;
                self.graph.set_parallelism(keyed.node, parallelism);
            }
            let lowered = self.connect_keyed(keyed, factory, EdgeKind::Hash(key_columns))?;
            self.note_late_rows(&lowered, &input, late_sink);
            return Ok(lowered);
        };
        let schema = factory.output_schema();
        let node = self.graph.add_operator(factory, parallelism);
        self.graph.connect(input.node, node, edge)?;
        let lowered = Lowered { node, schema };
        self.note_late_rows(&lowered, &input, late_sink);
        Ok(lowered)
    }

    /// Records that `window`'s late rows (of `input`'s columns) go to a sink.
    pub(super) fn note_late_rows(
        &mut self,
        window: &Lowered,
        input: &Lowered,
        late_sink: Option<(String, String)>,
    ) {
        if let Some((table, sink)) = late_sink {
            self.late_rows.push(LateRowsOutput {
                node: window.node,
                schema: Arc::clone(LateRows::new(&input.schema).schema()),
                table,
                sink,
            });
        }
    }

    /// `LIMIT` over an updating result: a snapshot of its rows, at the end
    /// of a bounded input or as soon as enough rows are there.
    pub(super) fn updating_limit(
        &mut self,
        limit: &GlobalLimitExec,
        input: Lowered,
    ) -> Result<Lowered> {
        let Some(fetch) = limit.fetch() else {
            return Err(over_updates(
                Construct::Keyword(Keyword::OFFSET),
                "OFFSET without LIMIT",
            ));
        };
        let at = if reads_only_bounded_tables(limit.input()) {
            SnapshotAt::EndOfInput
        } else {
            SnapshotAt::FirstRows
        };
        let mut factory = UpdatingLimitFactory::new(limit.skip(), fetch, at, &input.schema);
        if self.bounds_output {
            factory = factory.ending_the_job();
        }
        let schema = factory.output_schema();
        // One subtask applies every change; forward keeps a key's changes in order.
        let node = self.graph.add_operator(Arc::new(factory), Some(1));
        let edge = match self.graph.node(input.node).parallelism {
            Some(1) => EdgeKind::Forward,
            _ => EdgeKind::Rebalance,
        };
        self.graph.connect(input.node, node, edge)?;
        Ok(Lowered { node, schema })
    }

    /// A `GROUP BY` without a window: final rows at the end of bounded
    /// input, or a changelog of updates (see [`RuntimeMode`]).
    fn group_aggregate(
        &self,
        spec: &Arc<AggregateSpec>,
        input_plan: &Arc<dyn ExecutionPlan>,
        input_mode: ChangelogMode,
    ) -> Result<Arc<dyn OperatorFactory>> {
        let updating = match self.streaming.runtime_mode {
            RuntimeMode::Streaming => true,
            RuntimeMode::Batch => input_mode.is_updating(),
            RuntimeMode::Automatic => {
                input_mode.is_updating() || !reads_only_bounded_tables(input_plan)
            }
        };
        if !updating {
            return Ok(Arc::new(GroupAggregateFactory::new(Arc::clone(spec))));
        }
        for agg in &spec.aggregates {
            weir_engine::operator::check_updating_aggregate(
                agg,
                &spec.input_schema,
                !input_mode.is_updating(),
            )
            .map_err(|e| {
                let message = match e {
                    weir_engine::Error::Config(m) => m,
                    other => other.to_string(),
                };
                SqlError::unsupported_construct(
                    Construct::Word(agg.fun().name().to_uppercase()),
                    message,
                )
            })?;
        }
        let factory = UpdatingAggregateFactory::new(Arc::clone(spec), input_mode)?
            .with_mini_batch(self.streaming.mini_batch)
            .with_state_ttl(self.streaming.state_ttl_ms);
        Ok(Arc::new(factory))
    }
}

/// `factory`, emitting late rows when `late`.
fn with_late_rows(factory: WindowAggregateFactory, late: bool) -> WindowAggregateFactory {
    if late {
        factory.with_late_rows()
    } else {
        factory
    }
}
