//! Views: `CREATE VIEW v AS <query>` keeps the query, planned. A query that
//! reads `v` plans as if the view's query were written in its place
//! (DataFusion inlines a [`ViewTable`](datafusion::catalog::view::ViewTable)'s
//! logical plan), so its scans are the tables' stream scans and it lowers
//! to the same dataflow.
//!
//! As in Flink, a view is kept by its text: when a table or view it reads
//! is dropped, the view stays and fails when used; when one of that name
//! comes back, the view plans again.
//!
//! A window table function over a view ([`window_over_view`]) windows the
//! table the view reads, and passes `window_start`, `window_end` and `window_time` up
//! through the view's projections and filters.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use arrow::datatypes::SchemaRef;
use datafusion::common::{Column, plan_datafusion_err};
use datafusion::datasource::{provider_as_source, source_as_provider};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{
    Expr, Filter, LogicalPlan, LogicalPlanBuilder, Projection, SubqueryAlias,
};

use crate::catalog::{StreamTableProvider, WINDOW_COLUMNS, WindowSpec};
use crate::statement::CreateView;
use weir_engine::operator::WindowKind;

/// Views by name, shared between the session and its table functions.
pub type SharedViews = Arc<RwLock<BTreeMap<String, View>>>;

/// A view in the catalog.
#[derive(Debug, Clone)]
pub struct View {
    /// The statement that created it.
    pub definition: CreateView,
    /// Its text.
    pub ddl: String,
    /// Creation order: views are planned again in this order.
    pub(crate) created: u64,
    /// The view's query planned against the current catalog, or why it
    /// does not plan any more.
    pub plan: std::result::Result<LogicalPlan, String>,
}

impl View {
    /// The view's name.
    pub fn name(&self) -> &str {
        &self.definition.name
    }

    /// Its columns, when its query plans.
    pub fn schema(&self) -> Option<SchemaRef> {
        self.plan
            .as_ref()
            .ok()
            .map(|p| Arc::clone(p.schema().inner()))
    }
}

/// A view whose query no longer plans, named where a query reads it; the
/// SQL layer's error says so ([`crate::SqlError::InvalidView`]).
#[derive(Debug, Clone, thiserror::Error)]
#[error("view '{name}' cannot be used: its query no longer plans: {reason}")]
pub(crate) struct UnusableView {
    pub name: String,
    pub reason: String,
}

impl UnusableView {
    pub(crate) fn error(view: &View) -> Option<DataFusionError> {
        let reason = view.plan.as_ref().err()?;
        Some(DataFusionError::External(Box::new(UnusableView {
            name: view.name().to_string(),
            reason: reason.clone(),
        })))
    }
}

/// The plan of `view` with the window `kind` over its column `time`: the
/// table it reads is windowed on the column `time` comes from, and
/// `window_start`, `window_end` and `window_time` are appended to the view's columns.
/// The view must read one table through projections and filters, and pass
/// the time column through unchanged (renaming is fine).
pub(crate) fn window_over_view(
    view: &str,
    plan: &LogicalPlan,
    time: &str,
    kind: WindowKind,
    function: &str,
) -> Result<LogicalPlan> {
    let refuse = |why: String| {
        plan_datafusion_err!(
            "{function} over view '{view}': {why}; a window over a view needs a view that reads \
             one table through projections and filters (window the table inside the view instead)"
        )
    };
    match plan {
        LogicalPlan::TableScan(scan) => {
            let provider = source_as_provider(&scan.source)?;
            let Some(stream) = provider.downcast_ref::<StreamTableProvider>() else {
                return Err(refuse(format!(
                    "'{}' is not a stream table",
                    scan.table_name
                )));
            };
            if stream.is_windowed() {
                return Err(refuse("the view already windows its table".into()));
            }
            let table = stream.table();
            let time_column = table.schema.index_of(time)?;
            let full_len = table.schema.fields().len();
            let windowed =
                StreamTableProvider::windowed(Arc::clone(table), WindowSpec { kind, time_column });
            let projection = scan.projection.as_ref().map(|p| {
                p.iter()
                    .copied()
                    .chain(full_len..full_len + WINDOW_COLUMNS.len())
                    .collect()
            });
            LogicalPlanBuilder::scan_with_filters(
                scan.table_name.clone(),
                provider_as_source(Arc::new(windowed)),
                projection,
                scan.filters.clone(),
            )?
            .build()
        }
        LogicalPlan::Projection(p) => {
            let position = p
                .schema
                .fields()
                .iter()
                .position(|f| f.name() == time)
                .ok_or_else(|| refuse(format!("no column '{time}'")))?;
            let expr = match p.expr.get(position) {
                Some(Expr::Alias(alias)) => Some(alias.expr.as_ref()),
                other => other,
            };
            let source = match expr {
                Some(Expr::Column(c)) => c.name.clone(),
                _ => {
                    return Err(refuse(format!(
                        "the view computes its time column '{time}'"
                    )));
                }
            };
            let input = window_over_view(view, &p.input, &source, kind, function)?;
            let schema = input.schema();
            let n = schema.fields().len();
            let mut exprs = p.expr.clone();
            for i in n - WINDOW_COLUMNS.len()..n {
                exprs.push(Expr::Column(Column::from(schema.qualified_field(i))));
            }
            Ok(LogicalPlan::Projection(Projection::try_new(
                exprs,
                Arc::new(input),
            )?))
        }
        LogicalPlan::Filter(f) => Ok(LogicalPlan::Filter(Filter::try_new(
            f.predicate.clone(),
            Arc::new(window_over_view(view, &f.input, time, kind, function)?),
        )?)),
        LogicalPlan::SubqueryAlias(a) => Ok(LogicalPlan::SubqueryAlias(SubqueryAlias::try_new(
            Arc::new(window_over_view(view, &a.input, time, kind, function)?),
            a.alias.clone(),
        )?)),
        other => Err(refuse(format!("the view's query has {}", describe(other)))),
    }
}

/// What a plan node is, in SQL words.
fn describe(plan: &LogicalPlan) -> &'static str {
    match plan {
        LogicalPlan::Aggregate(_) => "an aggregate",
        LogicalPlan::Join(_) => "a join",
        LogicalPlan::Union(_) => "a UNION",
        LogicalPlan::Distinct(_) => "DISTINCT",
        LogicalPlan::Sort(_) => "ORDER BY",
        LogicalPlan::Limit(_) => "LIMIT",
        LogicalPlan::Window(_) => "an OVER window",
        LogicalPlan::Values(_) => "VALUES",
        LogicalPlan::EmptyRelation(_) => "no table",
        _ => "a construct other than projections and filters",
    }
}
