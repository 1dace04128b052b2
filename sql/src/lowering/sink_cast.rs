//! The last step before a sink: the query's columns, by position, cast to
//! the sink table's types (an updating query's row kinds pass through).

use std::sync::Arc;

use arrow::datatypes::{Schema, SchemaRef};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::{CastExpr, Column};
use weir_engine::changelog::{ChangelogMode, ROW_KIND_COLUMN, updating_schema};
use weir_engine::operator::ProjectionOperator;

use crate::error::{Result, SqlError};

/// Projects `input` onto the sink schema by position, casting where types differ.
pub fn cast_to_sink(
    input: &SchemaRef,
    sink: &SchemaRef,
    sink_name: &str,
) -> Result<Option<ProjectionOperator>> {
    // An updating query's row kinds pass through to the sink.
    let updating = ChangelogMode::of(input).is_updating();
    let input = &if updating {
        let index = input.index_of(ROW_KIND_COLUMN)?;
        let mut data = input.as_ref().clone();
        data = data.project(
            &(0..data.fields().len())
                .filter(|&i| i != index)
                .collect::<Vec<_>>(),
        )?;
        Arc::new(data)
    } else {
        Arc::clone(input)
    };
    if input.fields().len() != sink.fields().len() {
        return Err(SqlError::plan(format!(
            "the query returns {} columns but table '{sink_name}' has {} ({})",
            input.fields().len(),
            sink.fields().len(),
            sink.fields()
                .iter()
                .map(|f| f.name().as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let same = input
        .fields()
        .iter()
        .zip(sink.fields())
        .all(|(a, b)| a.data_type() == b.data_type() && a.name() == b.name());
    if same {
        return Ok(None);
    }
    let exprs = input
        .fields()
        .iter()
        .zip(sink.fields())
        .enumerate()
        .map(|(i, (a, b))| -> Result<Arc<dyn PhysicalExpr>> {
            let col: Arc<dyn PhysicalExpr> = Arc::new(Column::new(a.name(), i));
            if a.data_type() == b.data_type() {
                return Ok(col);
            }
            if !arrow::compute::can_cast_types(a.data_type(), b.data_type()) {
                return Err(SqlError::plan(format!(
                    "column {} of the query ('{}', {}) cannot be written to column '{}' ({}) of table '{sink_name}'",
                    i + 1,
                    a.name(),
                    weir_engine::sql_type_name(a.data_type()),
                    b.name(),
                    weir_engine::sql_type_name(b.data_type())
                )));
            }
            Ok(Arc::new(CastExpr::new(col, b.data_type().clone(), None)))
        })
        .collect::<Result<Vec<_>>>()?;
    let fields: Vec<_> = sink
        .fields()
        .iter()
        .map(|f| f.as_ref().clone().with_nullable(true))
        .collect();
    let mut exprs = exprs;
    let mut schema = Arc::new(Schema::new(fields));
    if updating {
        exprs.push(Arc::new(Column::new(ROW_KIND_COLUMN, input.fields().len())));
        schema = updating_schema(&schema);
    }
    Ok(Some(ProjectionOperator::new(exprs, schema)))
}
