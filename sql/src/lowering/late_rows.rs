//! Late rows into a sink table: the sink's columns are taken from the late
//! rows by name, cast to the sink's types. A window aggregate's or window
//! Top-N's late rows are the whole rows of the table it reads (carried as
//! passengers, see [`PASSENGER_PREFIX`]), with the window's columns
//! (`window_start`, `window_end`), `late_operator` and `late_watermark`.

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::{CastExpr, Column};
use weir_engine::operator::ProjectionOperator;
use weir_engine::sql_type_name;
use weir_engine::suggest::closest;

use super::{LateRowsOutput, PASSENGER_PREFIX};
use crate::error::{Result, SqlError};

/// The projection from `late`'s rows to the columns of sink table
/// `sink_name` (`sink`); an error names a sink column the rows lack.
pub fn late_rows_to_sink(
    late: &LateRowsOutput,
    sink: &SchemaRef,
    sink_name: &str,
) -> Result<ProjectionOperator> {
    // What the rows carry, by the names a sink table would use: a
    // passenger (the table's own column) stands for the column it carries.
    let mut carried: Vec<&str> = Vec::new();
    for field in late.schema.fields() {
        let name = field
            .name()
            .strip_prefix(PASSENGER_PREFIX)
            .unwrap_or(field.name());
        if !carried.contains(&name) {
            carried.push(name);
        }
    }
    let names = || carried.iter().copied();
    let position = |want: &str| {
        let passenger = format!("{PASSENGER_PREFIX}{want}");
        let fields = late.schema.fields();
        fields
            .iter()
            .position(|f| f.name().eq_ignore_ascii_case(&passenger))
            .or_else(|| {
                fields
                    .iter()
                    .position(|f| f.name().eq_ignore_ascii_case(want))
            })
    };
    let exprs = sink
        .fields()
        .iter()
        .map(|want| -> Result<Arc<dyn PhysicalExpr>> {
            let Some(i) = position(want.name()) else {
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
