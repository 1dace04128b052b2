//! The window table functions `TUMBLE(t, ts, size)`, `HOP(t, ts, slide, size)`,
//! `CUMULATE(t, ts, step, size)` and `SESSION(t, ts, gap)`, as RisingWave
//! writes them: each returns the
//! table's rows with `window_start` and `window_end` appended. The relation
//! is named after its table ([`WindowRelationNamer`]), so `TUMBLE(bids, …)`
//! has columns `bids.price`, not DataFusion's `tumble().price`.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use arrow::datatypes::Schema;
use datafusion::catalog::view::ViewTable;
use datafusion::catalog::{TableFunctionArgs, TableFunctionImpl};
use datafusion::common::{Column, Diagnostic, ScalarValue, plan_datafusion_err, plan_err};
use datafusion::datasource::TableProvider;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::Expr;
use datafusion::logical_expr::planner::{
    RelationPlanner, RelationPlannerContext, RelationPlanning,
};
use datafusion::sql::sqlparser::ast::{
    Expr as SqlExpr, FunctionArg, FunctionArgExpr, Spanned, TableAlias, TableFactor,
};
use weir_engine::operator::WindowKind;
use weir_engine::sql_type_name;
use weir_engine::suggest::closest;
use weir_engine::time::is_event_time_type;

use crate::catalog::{StreamTable, StreamTableProvider, WindowSpec};
use crate::view::{SharedViews, UnusableView, window_over_view};

/// Tables by name, shared between the session and its table functions.
pub type SharedTables = Arc<RwLock<HashMap<String, Arc<StreamTable>>>>;

/// Which window function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowFunction {
    /// `TUMBLE(table, time_col, size)`.
    Tumble,
    /// `HOP(table, time_col, slide, size)`.
    Hop,
    /// `CUMULATE(table, time_col, step, size)`.
    Cumulate,
    /// `SESSION(table, time_col, gap)`.
    Session,
}

impl WindowFunction {
    fn name(self) -> &'static str {
        match self {
            WindowFunction::Tumble => "TUMBLE",
            WindowFunction::Hop => "HOP",
            WindowFunction::Cumulate => "CUMULATE",
            WindowFunction::Session => "SESSION",
        }
    }

    /// The function of a (case-insensitive) name.
    pub fn from_name(name: &str) -> Option<Self> {
        [
            WindowFunction::Tumble,
            WindowFunction::Hop,
            WindowFunction::Cumulate,
            WindowFunction::Session,
        ]
        .into_iter()
        .find(|f| f.name().eq_ignore_ascii_case(name))
    }

    /// How many arguments it takes.
    fn arity(self) -> usize {
        match self {
            WindowFunction::Hop | WindowFunction::Cumulate => 4,
            WindowFunction::Tumble | WindowFunction::Session => 3,
        }
    }

    fn usage(self) -> &'static str {
        match self {
            WindowFunction::Tumble => "TUMBLE(table, time_column, INTERVAL 'n' SECOND)",
            WindowFunction::Hop => "HOP(table, time_column, slide INTERVAL, size INTERVAL)",
            WindowFunction::Cumulate => {
                "CUMULATE(table, time_column, step INTERVAL, max size INTERVAL)"
            }
            WindowFunction::Session => "SESSION(table, time_column, gap INTERVAL)",
        }
    }
}

/// A window table function bound to the session's tables and views.
#[derive(Debug)]
pub struct WindowTableFunction {
    function: WindowFunction,
    tables: SharedTables,
    views: SharedViews,
}

impl WindowTableFunction {
    /// The function over these tables and views.
    pub fn new(function: WindowFunction, tables: SharedTables, views: SharedViews) -> Self {
        Self {
            function,
            tables,
            views,
        }
    }

    /// The window's kind and sizes from the arguments after the time column.
    fn kind(&self, sizes: &[Expr]) -> Result<WindowKind> {
        let f = self.function;
        let mut millis = Vec::new();
        for (i, e) in sizes.iter().enumerate() {
            match interval_millis(e) {
                Some(ms) if ms > 0 => millis.push(ms),
                _ => {
                    return plan_err!(
                        "argument {} of {} must be a positive INTERVAL such as INTERVAL '10' SECOND: {}",
                        i + 3,
                        f.name(),
                        f.usage()
                    );
                }
            }
        }
        Ok(match f {
            WindowFunction::Tumble => WindowKind::Tumble { size_ms: millis[0] },
            WindowFunction::Hop => WindowKind::Hop {
                slide_ms: millis[0],
                size_ms: millis[1],
            },
            WindowFunction::Cumulate => {
                let kind = WindowKind::Cumulate {
                    step_ms: millis[0],
                    size_ms: millis[1],
                };
                kind.validate()
                    .map_err(|e| plan_datafusion_err!("{}", config_message(e)))?;
                kind
            }
            WindowFunction::Session => WindowKind::Session { gap_ms: millis[0] },
        })
    }

    /// The index of the time column in `schema` of the table or view
    /// `relation`, checked to be an event-time type.
    fn time_column(&self, schema: &Schema, relation: &str, time_col: &Column) -> Result<usize> {
        let Some(index) = schema
            .fields()
            .iter()
            .position(|fl| fl.name() == &time_col.name)
        else {
            let unknown = UnknownArgument::Column {
                name: time_col.name.clone(),
                table: relation.to_string(),
                suggestion: closest(
                    &time_col.name,
                    schema.fields().iter().map(|fl| fl.name().as_str()),
                )
                .map(str::to_string),
            };
            return Err(at_column(time_col, unknown.to_string(), Some(unknown)));
        };
        let time_type = schema.field(index).data_type();
        if !is_event_time_type(time_type) {
            return Err(at_column(
                time_col,
                format!(
                    "{}: the time column '{}' must be a TIMESTAMP or BIGINT, not {}",
                    self.function.name(),
                    time_col.name,
                    sql_type_name(time_type)
                ),
                None,
            ));
        }
        Ok(index)
    }

    /// The window over the view `name`, if there is one.
    fn over_view(
        &self,
        name: &str,
        time_col: &Column,
        sizes: &[Expr],
    ) -> Result<Option<Arc<dyn TableProvider>>> {
        let views = self
            .views
            .read()
            .map_err(|_| DataFusionError::Internal("catalog lock poisoned".into()))?;
        let Some(view) = views.get(name) else {
            return Ok(None);
        };
        let plan = match &view.plan {
            Ok(plan) => plan,
            Err(_) => {
                return Err(UnusableView::error(view)
                    .unwrap_or_else(|| plan_datafusion_err!("view '{name}' cannot be used")));
            }
        };
        self.time_column(plan.schema().as_arrow(), name, time_col)?;
        let kind = self.kind(sizes)?;
        let windowed = window_over_view(name, plan, &time_col.name, kind, self.function.name())?;
        Ok(Some(Arc::new(ViewTable::new(windowed, None))))
    }
}

/// An engine configuration error's message, without its prefix.
fn config_message(e: weir_engine::Error) -> String {
    match e {
        weir_engine::Error::Config(m) => m,
        other => other.to_string(),
    }
}

/// Milliseconds of an interval literal.
pub fn interval_millis(expr: &Expr) -> Option<i64> {
    match expr {
        Expr::Literal(value, _) => match value {
            ScalarValue::IntervalMonthDayNano(Some(v)) if v.months == 0 => {
                Some(i64::from(v.days) * 86_400_000 + v.nanoseconds / 1_000_000)
            }
            ScalarValue::IntervalDayTime(Some(v)) => {
                Some(i64::from(v.days) * 86_400_000 + i64::from(v.milliseconds))
            }
            ScalarValue::IntervalYearMonth(_) => None,
            ScalarValue::DurationMillisecond(Some(v)) => Some(*v),
            ScalarValue::DurationSecond(Some(v)) => Some(v * 1000),
            _ => None,
        },
        Expr::Cast(c) => interval_millis(&c.expr),
        _ => None,
    }
}

impl TableFunctionImpl for WindowTableFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let exprs = args.exprs();
        let f = self.function;
        let expected = f.arity();
        if exprs.len() != expected {
            return plan_err!("{} takes {expected} arguments: {}", f.name(), f.usage());
        }
        let Expr::Column(table_col) = &exprs[0] else {
            return plan_err!(
                "the first argument of {} must be a table name: {}",
                f.name(),
                f.usage()
            );
        };
        let Expr::Column(time_col) = &exprs[1] else {
            return plan_err!(
                "the second argument of {} must be a time column: {}",
                f.name(),
                f.usage()
            );
        };
        let table = {
            let tables = self
                .tables
                .read()
                .map_err(|_| DataFusionError::Internal("catalog lock poisoned".into()))?;
            tables.get(&table_col.name).cloned()
        };
        let Some(table) = table else {
            if let Some(provider) = self.over_view(&table_col.name, time_col, &exprs[2..])? {
                return Ok(provider);
            }
            let tables = self
                .tables
                .read()
                .map_err(|_| DataFusionError::Internal("catalog lock poisoned".into()))?;
            let views = self
                .views
                .read()
                .map_err(|_| DataFusionError::Internal("catalog lock poisoned".into()))?;
            let names = tables.keys().chain(views.keys()).map(String::as_str);
            let unknown = UnknownArgument::Table {
                name: table_col.name.clone(),
                suggestion: closest(&table_col.name, names).map(str::to_string),
            };
            return Err(at_column(table_col, unknown.to_string(), Some(unknown)));
        };
        let time_column = self.time_column(&table.schema, table.name(), time_col)?;
        let kind = self.kind(&exprs[2..])?;
        Ok(Arc::new(StreamTableProvider::windowed(
            table,
            WindowSpec { kind, time_column },
        )))
    }
}

/// A planning error about an argument, pointing at where the column is
/// written when the planner recorded it.
/// A table or column a window function's arguments name that does not
/// exist; carried through DataFusion so that the SQL layer's error says
/// which kind it is.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum UnknownArgument {
    /// The table argument.
    #[error("table '{name}' not found{}", did_you_mean(.suggestion))]
    Table {
        name: String,
        suggestion: Option<String>,
    },
    /// The time column argument.
    #[error("column '{name}' not found in table '{table}'{}", did_you_mean(.suggestion))]
    Column {
        name: String,
        table: String,
        suggestion: Option<String>,
    },
}

fn did_you_mean(suggestion: &Option<String>) -> String {
    suggestion
        .as_ref()
        .map(|s| format!(" (did you mean '{s}'?)"))
        .unwrap_or_default()
}

/// An error about `column` of the query, pointing at it: `unknown` when it
/// names something that does not exist.
fn at_column(
    column: &Column,
    message: String,
    unknown: Option<UnknownArgument>,
) -> DataFusionError {
    let error = match unknown {
        Some(unknown) => DataFusionError::External(Box::new(unknown)),
        None => plan_datafusion_err!("{message}"),
    };
    match column.spans().first() {
        Some(span) => error.with_diagnostic(Diagnostic::new_error(message, Some(span))),
        None => error,
    }
}

/// Names the relation of `TUMBLE(bids, …)` (also `HOP`, `CUMULATE`,
/// `SESSION`) `bids` when the query gives it no alias. DataFusion would call
/// it `tumble()`, and that name would reach messages (`Did you mean
/// 'tumble().price'?`) and EXPLAIN (`sum(tumble().price)`).
///
/// It also checks what needs the SQL text to point at: a `CUMULATE` size
/// that is not a multiple of its step.
#[derive(Debug)]
pub struct WindowRelationNamer;

/// Checks that the size of `CUMULATE(t, ts, step, size)` is a multiple of
/// its step, pointing at the size when it is not.
fn check_cumulate_sizes(
    relation: &TableFactor,
    context: &mut dyn RelationPlannerContext,
) -> Result<()> {
    let TableFactor::Table {
        name,
        args: Some(args),
        ..
    } = relation
    else {
        return Ok(());
    };
    let is_cumulate = matches!(name.0.as_slice(), [f] if f.as_ident().is_some_and(|f| f.value.eq_ignore_ascii_case("cumulate")));
    let [_, _, step, size] = args.args.as_slice() else {
        return Ok(());
    };
    if !is_cumulate {
        return Ok(());
    }
    let millis = |arg: &FunctionArg, context: &mut dyn RelationPlannerContext| match arg {
        FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => context
            .sql_to_expr(e.clone(), &datafusion::common::DFSchema::empty())
            .ok()
            .and_then(|e| interval_millis(&e)),
        _ => None,
    };
    let (Some(step_ms), Some(size_ms)) = (millis(step, context), millis(size, context)) else {
        // Not intervals: the table function says what it takes.
        return Ok(());
    };
    if step_ms <= 0 || size_ms <= 0 || size_ms % step_ms == 0 {
        return Ok(());
    }
    let message = format!(
        "the size of a CUMULATE window ({size_ms}ms) must be a multiple of its step ({step_ms}ms)"
    );
    let span = datafusion::common::Span::try_from_sqlparser_span(size.span());
    Err(plan_datafusion_err!("{message}").with_diagnostic(Diagnostic::new_error(message, span)))
}

impl RelationPlanner for WindowRelationNamer {
    fn plan_relation(
        &self,
        mut relation: TableFactor,
        context: &mut dyn RelationPlannerContext,
    ) -> Result<RelationPlanning> {
        check_cumulate_sizes(&relation, context)?;
        if let TableFactor::Table {
            name,
            alias: alias @ None,
            args: Some(args),
            ..
        } = &mut relation
            && let [function] = name.0.as_slice()
            && function.as_ident().is_some_and(|f| {
                ["tumble", "hop", "cumulate", "session"]
                    .contains(&f.value.to_ascii_lowercase().as_str())
            })
            && let Some(FunctionArg::Unnamed(FunctionArgExpr::Expr(SqlExpr::Identifier(table)))) =
                args.args.first()
        {
            *alias = Some(TableAlias {
                explicit: false,
                name: table.clone(),
                columns: Vec::new(),
                at: None,
            });
        }
        Ok(RelationPlanning::Original(Box::new(relation)))
    }
}
