//! Where late rows go: each window operator that refuses rows as late and
//! has a late-rows sink (`table.exec.late-records.sink`, or the table's
//! `'late-records.sink'` option) gets its late-rows output connected to
//! that table's sink, through a projection to the table's columns.

use std::sync::Arc;

use weir_engine::graph::LogicalGraph;
use weir_engine::operator::SinkNode;
use weir_engine::{EdgeKind, OutputPort};

use super::{Session, with_context};
use crate::error::{Result, SqlError};
use crate::lowering::{LateRowsOutput, late_rows_to_sink};

impl Session {
    /// Connects each of `outputs` to its sink table; `into` is the table the
    /// query itself writes, which cannot also take its late rows.
    pub(super) fn connect_late_rows(
        &self,
        graph: &mut LogicalGraph,
        outputs: &[LateRowsOutput],
        into: Option<&str>,
    ) -> Result<()> {
        for late in outputs {
            if into.is_some_and(|t| t.eq_ignore_ascii_case(&late.sink)) {
                return Err(SqlError::plan(format!(
                    "late rows of table '{}' cannot go to '{}', the table the query writes; \
                     name another table in 'table.exec.late-records.sink' or the table's \
                     'late-records.sink' option",
                    late.table, late.sink
                )));
            }
            let table = self.table(&late.sink).map_err(|e| match e {
                SqlError::UnknownTable {
                    name, suggestion, ..
                } => SqlError::plan(format!(
                    "the late-rows sink of table '{}': table '{name}' not found{}",
                    late.table,
                    suggestion
                        .map(|s| format!(" (did you mean '{s}'?)"))
                        .unwrap_or_default()
                )),
                other => other,
            })?;
            let mut descriptor = table.descriptor.clone();
            if !table.declared_columns {
                descriptor.schema = Arc::clone(&late.schema);
            }
            let project = late_rows_to_sink(late, &descriptor.schema, &late.sink)?;
            table
                .connector
                .validate_sink(&descriptor)
                .map_err(|e| with_context(e.into(), &format!("table '{}'", late.sink)))?;
            // The late rows stay with the subtask that refused them.
            let parallelism = graph.node(late.node).parallelism;
            let project = graph.add_operator(Arc::new(project), parallelism);
            graph.connect_port(late.node, OutputPort::LateRows, project, EdgeKind::Forward)?;
            let sink = graph.add_operator(
                Arc::new(SinkNode::side_output(
                    Arc::clone(&table.connector),
                    descriptor,
                )),
                parallelism,
            );
            graph.connect(project, sink, EdgeKind::Forward)?;
        }
        Ok(())
    }
}
