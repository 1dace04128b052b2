//! `CREATE TABLE`, `DROP TABLE` and `DESCRIBE`: a table's columns,
//! computed columns, watermark and connector, checked against its connector.

use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use datafusion::common::DFSchema;
use datafusion::logical_expr::ExprSchemable;
use tracing::debug;
use weir_engine::connector::METADATA_FIELD_KEY;
use weir_engine::suggest::closest;
use weir_engine::time::is_event_time_type;
use weir_engine::{ConnectorOptions, TableDescriptor, sql_type_name};

use super::{Outcome, Session, with_context};
use crate::catalog::{ComputedColumn, StreamTable, StreamTableProvider, WatermarkSpec};
use crate::error::{Result, SqlError};
use crate::statement::{ColumnDef, CreateTable};
use crate::view::View;

impl Session {
    pub(super) fn create_table(&mut self, create: CreateTable) -> Result<Outcome> {
        let exists = self
            .tables
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(&create.name);
        let view = self.view(&create.name).is_some();
        if exists || view {
            if create.if_not_exists {
                return Ok(Outcome::Message(format!(
                    "Table '{}' already exists.",
                    create.name
                )));
            }
            if view {
                return Err(SqlError::ViewExists {
                    name: create.name,
                    position: None,
                });
            }
            return Err(SqlError::TableExists {
                name: create.name,
                position: None,
            });
        }
        let options = ConnectorOptions::new(create.options.clone());
        let connector_name = options.get("connector").ok_or_else(|| {
            SqlError::Config(format!(
                "table '{}' needs a connector: WITH ('connector' = '…'); available: {}",
                create.name,
                self.registry.names().join(", ")
            ))
        })?;
        let connector = self
            .registry
            .get(connector_name)
            .map_err(|e| option_error(e, &create))?;
        // Key columns are NOT NULL, as in Flink.
        let primary_key: Vec<String> = create
            .primary_key
            .as_ref()
            .map(|k| k.columns.clone())
            .unwrap_or_default();
        let mut physical = Vec::new();
        for c in &create.columns {
            let field = match c {
                ColumnDef::Physical {
                    name,
                    data_type,
                    nullable,
                } => Field::new(
                    name,
                    data_type.clone(),
                    *nullable && !primary_key.contains(name),
                ),
                ColumnDef::Metadata {
                    name,
                    data_type,
                    nullable,
                    key,
                    is_virtual,
                } => {
                    let known = connector.metadata_keys();
                    if !known.contains(&key.as_str()) {
                        let hint = closest(key, known.iter().copied())
                            .map(|s| format!(" (did you mean '{s}'?)"))
                            .unwrap_or_default();
                        let offer = if known.is_empty() {
                            format!("connector '{connector_name}' has no metadata")
                        } else {
                            format!("connector '{connector_name}' offers {}", known.join(", "))
                        };
                        return Err(SqlError::plan(format!(
                            "column '{name}': unknown metadata key '{key}'{hint}; {offer}"
                        )));
                    }
                    let mut metadata = std::collections::HashMap::from([(
                        METADATA_FIELD_KEY.to_string(),
                        key.clone(),
                    )]);
                    if *is_virtual {
                        metadata.insert(format!("{METADATA_FIELD_KEY}.virtual"), "true".into());
                    }
                    Field::new(name, data_type.clone(), *nullable).with_metadata(metadata)
                }
                ColumnDef::Computed { .. } => continue,
            };
            if physical.iter().any(|f: &Field| f.name() == field.name()) {
                return Err(SqlError::plan(format!(
                    "column '{}' is declared twice",
                    field.name()
                )));
            }
            physical.push(field);
        }
        let declared_columns = !create.columns.is_empty();
        if !declared_columns && let Some(schema) = connector.defined_schema(&options)? {
            physical = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
        }
        let physical_schema = Arc::new(Schema::new(physical.clone()));
        let physical_df = DFSchema::try_from(physical_schema.as_ref().clone())?;
        let mut computed = Vec::new();
        let mut all_fields = physical.clone();
        for c in &create.columns {
            if let ColumnDef::Computed { name, expr } = c {
                let planned = self
                    .ctx
                    .parse_sql_expr(expr, &physical_df)
                    .map_err(|e| with_context(e.into(), &format!("computed column '{name}'")))?;
                let data_type = planned
                    .to_field(&physical_df)
                    .map(|(_, f)| f.data_type().clone())
                    .map_err(|e| with_context(e.into(), &format!("computed column '{name}'")))?;
                all_fields.push(Field::new(name, data_type, true));
                computed.push(ComputedColumn {
                    name: name.clone(),
                    sql: expr.clone(),
                    expr: planned,
                });
            }
        }
        let schema = Arc::new(Schema::new(all_fields));
        let watermark = match &create.watermark {
            None => None,
            Some((column, expr)) => {
                let Ok(field) = schema.field_with_name(column) else {
                    let hint = closest(column, schema.fields().iter().map(|f| f.name().as_str()))
                        .map(|s| format!(" (did you mean '{s}'?)"))
                        .unwrap_or_default();
                    return Err(SqlError::plan(format!(
                        "WATERMARK FOR '{column}': no such column{hint}"
                    )));
                };
                if !is_event_time_type(field.data_type()) {
                    return Err(SqlError::plan(format!(
                        "WATERMARK FOR '{column}': the column must be a TIMESTAMP or BIGINT, not {}",
                        sql_type_name(field.data_type())
                    )));
                }
                let df = DFSchema::try_from(schema.as_ref().clone())?;
                let planned = self
                    .ctx
                    .parse_sql_expr(expr, &df)
                    .map_err(|e| with_context(e.into(), "the WATERMARK expression"))?;
                let data_type = planned
                    .to_field(&df)
                    .map(|(_, f)| f.data_type().clone())
                    .map_err(|e| with_context(e.into(), "the WATERMARK expression"))?;
                if !is_event_time_type(&data_type) {
                    return Err(SqlError::plan(format!(
                        "the WATERMARK expression must give a TIMESTAMP, not {}",
                        sql_type_name(&data_type)
                    )));
                }
                Some(WatermarkSpec {
                    column: column.clone(),
                    sql: expr.clone(),
                    expr: planned,
                })
            }
        };
        let descriptor = TableDescriptor {
            name: create.name.clone(),
            schema: physical_schema,
            primary_key,
            options,
        };
        if !physical.is_empty() {
            let as_source = connector.validate_source(&descriptor);
            let as_sink = connector.validate_sink(&descriptor);
            if let (Err(source_error), Err(sink_error)) = (as_source, as_sink) {
                let generic = format!("connector '{}' cannot be read from", connector.name());
                let error = if source_error.to_string().contains(&generic) {
                    sink_error
                } else {
                    source_error
                };
                return Err(option_error(error, &create));
            }
        }
        let table = Arc::new(StreamTable {
            descriptor,
            connector,
            computed,
            watermark,
            schema,
            declared_columns: declared_columns || !physical.is_empty(),
        });
        self.ctx.register_table(
            create.name.as_str(),
            Arc::new(StreamTableProvider::new(Arc::clone(&table))),
        )?;
        self.tables
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(create.name.clone(), table);
        debug!(table = %create.name, "table created");
        Ok(Outcome::Message(format!(
            "Table '{}' created.",
            create.name
        )))
    }

    pub(super) async fn drop_table(&mut self, name: String, if_exists: bool) -> Result<Outcome> {
        let removed = self
            .tables
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&name)
            .is_some();
        if removed {
            self.ctx.deregister_table(name.as_str())?;
            // Views that read it fail when used from now on (as in Flink).
            self.refresh_views(true).await;
            return Ok(Outcome::Message(format!("Table '{name}' dropped.")));
        }
        if self.view(&name).is_some() {
            return Err(SqlError::plan(format!(
                "'{name}' is a view, not a table; use DROP VIEW"
            )));
        }
        if if_exists {
            return Ok(Outcome::Message(format!("Table '{name}' does not exist.")));
        }
        self.table(&name).map(|_| Outcome::Message(String::new()))
    }

    pub(super) fn describe(&self, name: &str) -> Result<RecordBatch> {
        if let Some(view) = self.view(name) {
            return describe_view(&view);
        }
        let table = self.table(name).map_err(|e| match e {
            SqlError::UnknownTable { name, position, .. } => self.missing_relation(&name, position),
            other => other,
        })?;
        let mut names = Vec::new();
        let mut types = Vec::new();
        let mut nulls = Vec::new();
        let mut extras = Vec::new();
        for (i, f) in table.schema.fields().iter().enumerate() {
            names.push(f.name().clone());
            types.push(sql_type_name(f.data_type()));
            nulls.push(f.is_nullable());
            let mut extra = String::new();
            if i >= table.physical_len() {
                extra = format!("AS {}", table.computed[i - table.physical_len()].sql);
            }
            if table.descriptor.primary_key.contains(f.name()) {
                extra = "PRIMARY KEY NOT ENFORCED".into();
            }
            if let Some(wm) = table.watermark.as_ref().filter(|w| &w.column == f.name()) {
                if !extra.is_empty() {
                    extra.push_str("; ");
                }
                extra.push_str(&format!("WATERMARK AS {}", wm.sql));
            }
            extras.push(extra);
        }
        describe_batch(names, types, nulls, extras)
    }
}

/// `DESCRIBE` of a view: its columns as its query returns them.
fn describe_view(view: &View) -> Result<RecordBatch> {
    let schema = match (&view.plan, view.schema()) {
        (_, Some(schema)) => schema,
        (Err(reason), None) => {
            return Err(SqlError::InvalidView {
                name: view.name().to_string(),
                reason: reason.clone(),
                position: None,
            });
        }
        (Ok(_), None) => return Err(SqlError::Internal("a planned view has no schema".into())),
    };
    let fields = schema.fields();
    describe_batch(
        fields.iter().map(|f| f.name().clone()).collect(),
        fields
            .iter()
            .map(|f| sql_type_name(f.data_type()))
            .collect(),
        fields.iter().map(|f| f.is_nullable()).collect(),
        vec![String::new(); fields.len()],
    )
}

fn describe_batch(
    names: Vec<String>,
    types: Vec<String>,
    nulls: Vec<bool>,
    extras: Vec<String>,
) -> Result<RecordBatch> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("name", DataType::Utf8, false),
        Field::new("type", DataType::Utf8, false),
        Field::new("null", DataType::Boolean, false),
        Field::new("extras", DataType::Utf8, false),
    ]));
    Ok(RecordBatch::try_new(
        schema,
        vec![
            Arc::new(StringArray::from(names)) as ArrayRef,
            Arc::new(StringArray::from(types)),
            Arc::new(BooleanArray::from(nulls)),
            Arc::new(StringArray::from(extras)),
        ],
    )?)
}

/// A connector's complaint about a table being created, pointing at the
/// option it is about.
fn option_error(error: weir_engine::Error, create: &CreateTable) -> SqlError {
    match error {
        weir_engine::Error::InvalidOption { key, message } => SqlError::BadOption {
            message: format!("table '{}': {message}", create.name),
            position: create.option_position(&key),
        },
        other => with_context(other.into(), &format!("table '{}'", create.name)),
    }
}
