//! Late rows into a sink table: the sink's columns are taken from the late
//! rows by name (the columns the window read, `window_start`/`window_end`,
//! `late_operator`, `late_watermark`), cast to the sink's types.

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::{CastExpr, Column};
use weir_engine::operator::ProjectionOperator;
use weir_engine::sql_type_name;
use weir_engine::suggest::closest;

use super::LateRowsOutput;
use crate::error::{Result, SqlError};

/// The projection from `late`'s rows to the columns of sink table
/// `sink_name` (`sink`); an error names a sink column the rows lack.
pub fn late_rows_to_sink(
    late: &LateRowsOutput,
    sink: &SchemaRef,
    sink_name: &str,
) -> Result<ProjectionOperator> {
    let names = || late.schema.fields().iter().map(|f| f.name().as_str());
    let exprs = sink
        .fields()
        .iter()
        .map(|want| -> Result<Arc<dyn PhysicalExpr>> {
            let Some(i) = names().position(|n| n.eq_ignore_ascii_case(want.name())) else {
                let hint = closest(want.name(), names())
                    .map(|c| format!(" (did you mean '{c}'?)"))
                    .unwrap_or_default();
                return Err(SqlError::plan(format!(
                    "late rows of table '{}' go to table '{sink_name}', whose column '{}' they \
                     do not have{hint}; they have: {}",
                    late.table,
                    want.name(),
                    names().collect::<Vec<_>>().join(", ")
                )));
            };
            let have = late.schema.field(i);
            let column: Arc<dyn PhysicalExpr> = Arc::new(Column::new(have.name(), i));
            if have.data_type() == want.data_type() {
                return Ok(column);
            }
            if !arrow::compute::can_cast_types(have.data_type(), want.data_type()) {
                return Err(SqlError::plan(format!(
                    "late rows of table '{}': column '{}' ({}) cannot be written to column \
                     '{}' ({}) of table '{sink_name}'",
                    late.table,
                    have.name(),
                    sql_type_name(have.data_type()),
                    want.name(),
                    sql_type_name(want.data_type())
                )));
            }
            Ok(Arc::new(CastExpr::new(
                column,
                want.data_type().clone(),
                None,
            )))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(ProjectionOperator::new(exprs, Arc::clone(sink)))
}
