//! `CREATE VIEW`, `DROP VIEW`, `SHOW VIEWS`, `SHOW CREATE VIEW`, and what
//! the other catalog statements see of views (see [`crate::view`]).

use std::sync::Arc;

use datafusion::catalog::view::ViewTable;
use datafusion::common::tree_node::TreeNode;
use datafusion::logical_expr::{Expr, LogicalPlan, LogicalPlanBuilder};
use tracing::debug;
use weir_engine::graph::LogicalGraph;
use weir_engine::suggest::closest;

use super::{Outcome, Session, string_batch};
use crate::error::{Position, Result, SqlError};
use crate::lowering::Lowering;
use crate::statement::{CreateView, Statement, parse_statement};
use crate::view::View;

impl Session {
    /// Names of the declared views, sorted.
    pub fn view_names(&self) -> Vec<String> {
        let views = self.views.read().unwrap_or_else(|e| e.into_inner());
        views.keys().cloned().collect()
    }

    /// A declared view.
    pub fn view(&self, name: &str) -> Option<View> {
        let views = self.views.read().unwrap_or_else(|e| e.into_inner());
        views.get(name).cloned()
    }

    fn is_table(&self, name: &str) -> bool {
        let tables = self.tables.read().unwrap_or_else(|e| e.into_inner());
        tables.contains_key(name)
    }

    pub(super) async fn create_view(&mut self, create: CreateView, sql: &str) -> Result<Outcome> {
        let name = create.name.clone();
        let taken = if self.is_table(&name) {
            Some(SqlError::TableExists {
                name: name.clone(),
                position: None,
            })
        } else {
            self.view(&name).map(|_| SqlError::ViewExists {
                name: name.clone(),
                position: None,
            })
        };
        if let Some(error) = taken {
            // As in Flink, IF NOT EXISTS leaves whatever has the name alone.
            if create.if_not_exists {
                return Ok(Outcome::Message(format!("'{name}' already exists.")));
            }
            return Err(error);
        }
        let start = create.query_start;
        let plan = self
            .check_view(&create)
            .await
            .map_err(|e| e.offset_by(start.line - 1, start.column - 1))?;
        self.ctx.register_table(
            name.as_str(),
            Arc::new(ViewTable::new(plan.clone(), Some(sql.to_string()))),
        )?;
        let created = {
            let mut views = self.views.write().unwrap_or_else(|e| e.into_inner());
            self.views_created += 1;
            views.insert(
                name.clone(),
                View {
                    definition: create,
                    ddl: sql.to_string(),
                    created: self.views_created,
                    plan: Ok(plan),
                },
            );
            self.views_created
        };
        debug!(view = %name, created, "view created");
        self.refresh_views(false).await;
        Ok(Outcome::Message(format!("View '{name}' created.")))
    }

    /// Plans the view's query, and lowers it when it reads tables, so
    /// that a view no job could run is refused when it is created.
    async fn check_view(&self, create: &CreateView) -> Result<LogicalPlan> {
        let plan = self.plan_view(create).await?;
        let reads_tables = plan.exists(|node| Ok(matches!(node, LogicalPlan::TableScan(_))))?;
        if reads_tables {
            let physical = self.ctx.state().create_physical_plan(&plan).await?;
            Lowering::new(&mut LogicalGraph::new()).lower(&physical)?;
        }
        Ok(plan)
    }

    /// The view's query planned against the current catalog, its columns
    /// renamed as the view's column list says.
    async fn plan_view(&self, create: &CreateView) -> Result<LogicalPlan> {
        if !matches!(parse_statement(&create.query), Ok(Statement::Query(_))) {
            return Err(SqlError::Parse {
                message: "a view's query must be a SELECT (or WITH … SELECT, VALUES)".into(),
                position: Some(Position { line: 1, column: 1 }),
            });
        }
        let plan = crate::group_window::logical_plan(&self.ctx.state(), &create.query)
            .await
            .map_err(|e| self.explain_missing_table(e))?;
        if create.columns.is_empty() {
            return Ok(plan);
        }
        let schema = plan.schema();
        if schema.fields().len() != create.columns.len() {
            return Err(SqlError::plan(format!(
                "view '{}' names {} columns ({}) but its query returns {} ({})",
                create.name,
                create.columns.len(),
                create.columns.join(", "),
                schema.fields().len(),
                schema
                    .fields()
                    .iter()
                    .map(|f| f.name().as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        let renamed: Vec<Expr> = schema
            .columns()
            .into_iter()
            .zip(&create.columns)
            .map(|(column, name)| Expr::Column(column).alias(name))
            .collect();
        Ok(LogicalPlanBuilder::from(plan).project(renamed)?.build()?)
    }

    pub(super) async fn drop_view(&mut self, name: String, if_exists: bool) -> Result<Outcome> {
        let removed = {
            let mut views = self.views.write().unwrap_or_else(|e| e.into_inner());
            views.remove(&name).is_some()
        };
        if removed {
            self.ctx.deregister_table(name.as_str())?;
            // Views that read it fail when used from now on.
            self.refresh_views(true).await;
            return Ok(Outcome::Message(format!("View '{name}' dropped.")));
        }
        if self.is_table(&name) {
            return Err(SqlError::plan(format!(
                "'{name}' is a table, not a view; use DROP TABLE"
            )));
        }
        if if_exists {
            return Ok(Outcome::Message(format!("View '{name}' does not exist.")));
        }
        Err(self.unknown_view(&name))
    }

    fn unknown_view(&self, name: &str) -> SqlError {
        let views = self.views.read().unwrap_or_else(|e| e.into_inner());
        SqlError::UnknownView {
            name: name.to_string(),
            suggestion: closest(name, views.keys().map(String::as_str)).map(str::to_string),
            position: None,
        }
    }

    /// Plans the views again after the catalog changed: all of them after
    /// a drop (those that read what was dropped become unusable), or only
    /// the unusable ones after a create (they may plan again). Views are
    /// planned in creation order, and again while any comes back, so a view
    /// over a view that was created again later plans too.
    pub(super) async fn refresh_views(&mut self, all: bool) {
        let mut pending: Vec<View> = {
            let views = self.views.read().unwrap_or_else(|e| e.into_inner());
            views
                .values()
                .filter(|v| all || v.plan.is_err())
                .cloned()
                .collect()
        };
        pending.sort_by_key(|v| v.created);
        if all {
            for view in &pending {
                // Not to be found by the views planned before it.
                let _ = self.ctx.deregister_table(view.name());
            }
        }
        loop {
            let mut progress = false;
            let mut unusable = Vec::new();
            for mut view in pending {
                let planned = match self.plan_view(&view.definition).await {
                    Ok(plan) => self
                        .ctx
                        .register_table(
                            view.name(),
                            Arc::new(ViewTable::new(plan.clone(), Some(view.ddl.clone()))),
                        )
                        .map(|_| plan)
                        .map_err(SqlError::from),
                    Err(e) => Err(e),
                };
                view.plan = planned.map_err(|e| reason(&e));
                let usable = view.plan.is_ok();
                progress |= usable;
                if !usable {
                    unusable.push(view.clone());
                }
                let mut views = self.views.write().unwrap_or_else(|e| e.into_inner());
                if let Some(kept) = views.get_mut(view.name()) {
                    *kept = view;
                }
            }
            pending = unusable;
            if !progress || pending.is_empty() {
                break;
            }
        }
    }

    /// A name a query reads that DataFusion does not find: a view whose
    /// query no longer plans, or a table or view that does not exist (with
    /// the closest name of either).
    pub(super) fn missing_relation(&self, name: &str, position: Option<Position>) -> SqlError {
        if let Some(View {
            plan: Err(reason), ..
        }) = self.view(name)
        {
            return SqlError::InvalidView {
                name: name.to_string(),
                reason,
                position,
            };
        }
        let names = self.relation_names();
        SqlError::UnknownTable {
            name: name.to_string(),
            suggestion: closest(name, names.iter().map(String::as_str)).map(str::to_string),
            position,
        }
    }

    /// Tables and views, sorted.
    fn relation_names(&self) -> Vec<String> {
        let mut names = self.table_names();
        names.extend(self.view_names());
        names.sort();
        names
    }

    /// `SHOW TABLES`: tables and views, as Flink lists them.
    pub(super) fn show_tables(&self) -> Result<Outcome> {
        let names = self.relation_names();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        Ok(Outcome::Rows(string_batch(&[("table_name", names)])?))
    }

    /// `SHOW VIEWS`.
    pub(super) fn show_views(&self) -> Result<Outcome> {
        let names = self.view_names();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        Ok(Outcome::Rows(string_batch(&[("view_name", names)])?))
    }

    /// `SHOW CREATE VIEW`: the statement as it was run.
    pub(super) fn show_create_view(&self, name: &str) -> Result<Outcome> {
        let Some(view) = self.view(name) else {
            if self.is_table(name) {
                return Err(SqlError::plan(format!("'{name}' is a table, not a view")));
            }
            return Err(self.unknown_view(name));
        };
        Ok(Outcome::Rows(string_batch(&[(
            "create_view",
            vec![view.ddl.as_str()],
        )])?))
    }
}

/// Why a view's query does not plan, without the error's kind and its
/// position in the view's text.
fn reason(error: &SqlError) -> String {
    let text = error.to_string();
    match text.split_once(": ") {
        Some((kind, rest)) if kind.starts_with("planning error") => rest.to_string(),
        _ => text,
    }
}
