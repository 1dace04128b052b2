//! Flink's legacy group windows, rewritten to the window table functions
//! before planning:
//!
//! ```text
//! SELECT k, TUMBLE_START(ts, INTERVAL '10' SECOND), COUNT(*)     SELECT k, window_start, COUNT(*)
//! FROM t                                                     =>  FROM tumble(t, ts, INTERVAL '10' SECOND)
//! GROUP BY k, TUMBLE(ts, INTERVAL '10' SECOND)                   GROUP BY k, window_start, window_end
//! ```
//!
//! `HOP(ts, slide, size)` and `SESSION(ts, gap)` likewise. `*_START` is
//! `window_start`, `*_END` is `window_end`, `*_ROWTIME` (and `*_PROCTIME`)
//! `window_end - INTERVAL '1' MILLISECOND`, Flink's `window_time`. The
//! rewrite works on the parsed statement, so the rest of the query keeps
//! its positions for error messages; what it cannot rewrite (a group window
//! over a join or a subquery, an auxiliary function without its group
//! window) is refused with the position of the function.

use std::ops::ControlFlow;

use datafusion::common::{Diagnostic, Span, plan_datafusion_err};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::SessionState;
use datafusion::logical_expr::LogicalPlan;
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::{
    Expr, FunctionArg, FunctionArgExpr, FunctionArguments, GroupByExpr, Ident, ObjectName, Query,
    Select, SelectItem, SetExpr, Spanned, TableFactor, TableFunctionArgs, VisitMut, VisitorMut,
    visit_expressions, visit_expressions_mut,
};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::Span as SqlSpan;

/// Plans `sql` as the session's `create_logical_plan` does, with legacy
/// group windows rewritten first.
pub async fn logical_plan(state: &SessionState, sql: &str) -> Result<LogicalPlan> {
    let dialect = state.config().options().sql_parser.dialect;
    let mut statement = state.sql_to_statement(sql, &dialect)?;
    if let DfStatement::Statement(inner) = &mut statement {
        rewrite_group_windows(inner)?;
    }
    state.statement_to_plan(statement).await
}

/// The legacy group window functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GroupWindow {
    Tumble,
    Hop,
    Session,
}

impl GroupWindow {
    fn of(name: &str) -> Option<Self> {
        match name.to_ascii_uppercase().as_str() {
            "TUMBLE" => Some(GroupWindow::Tumble),
            "HOP" => Some(GroupWindow::Hop),
            "SESSION" => Some(GroupWindow::Session),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            GroupWindow::Tumble => "TUMBLE",
            GroupWindow::Hop => "HOP",
            GroupWindow::Session => "SESSION",
        }
    }

    fn usage(self) -> &'static str {
        match self {
            GroupWindow::Tumble => "TUMBLE(time_column, size INTERVAL)",
            GroupWindow::Hop => "HOP(time_column, slide INTERVAL, size INTERVAL)",
            GroupWindow::Session => "SESSION(time_column, gap INTERVAL)",
        }
    }

    fn arity(self) -> usize {
        match self {
            GroupWindow::Hop => 3,
            GroupWindow::Tumble | GroupWindow::Session => 2,
        }
    }
}

/// What an auxiliary function (`TUMBLE_START`, …) of a group window gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Auxiliary {
    Start,
    End,
    Time,
}

/// `TUMBLE_START` and the like: the group window and which bound.
fn auxiliary(name: &str) -> Option<(GroupWindow, Auxiliary)> {
    let (window, bound) = name.split_once('_')?;
    let bound = match bound.to_ascii_uppercase().as_str() {
        "START" => Auxiliary::Start,
        "END" => Auxiliary::End,
        "ROWTIME" | "PROCTIME" => Auxiliary::Time,
        _ => return None,
    };
    Some((GroupWindow::of(window)?, bound))
}

/// The single-part name of a function, if it has one.
fn simple_name(name: &ObjectName) -> Option<&Ident> {
    match name.0.as_slice() {
        [part] => part.as_ident(),
        _ => None,
    }
}

/// The plain arguments of a function call, or `None` when it has others
/// (named ones, `DISTINCT`, a subquery).
fn plain_args(args: &FunctionArguments) -> Option<Vec<&Expr>> {
    let FunctionArguments::List(list) = args else {
        return Some(Vec::new());
    };
    if list.duplicate_treatment.is_some() || !list.clauses.is_empty() {
        return None;
    }
    list.args
        .iter()
        .map(|a| match a {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Some(e),
            _ => None,
        })
        .collect()
}

/// An error pointing at `at` in the statement.
fn error_at(at: SqlSpan, message: String) -> DataFusionError {
    let span = Span::try_from_sqlparser_span(at);
    plan_datafusion_err!("{message}").with_diagnostic(Diagnostic::new_error(message, span))
}

/// A group window found in a `GROUP BY`.
struct Found {
    window: GroupWindow,
    /// The time column's name.
    time: Ident,
    /// The interval arguments.
    sizes: Vec<Expr>,
    /// The arguments as written, to match the auxiliary functions against.
    args_text: Vec<String>,
    /// The function's name as written (for its position).
    name: Ident,
}

/// Rewrites every `SELECT` of `statement` that groups by a legacy group
/// window, then refuses any auxiliary function left without one.
pub fn rewrite_group_windows(
    statement: &mut datafusion::sql::sqlparser::ast::Statement,
) -> Result<()> {
    if let ControlFlow::Break(e) = statement.visit(&mut Rewriter) {
        return Err(e);
    }
    let left = visit_expressions(statement, |e| match e {
        Expr::Function(f) => {
            match simple_name(&f.name).and_then(|n| auxiliary(&n.value).map(|a| (n, a))) {
                Some((name, (window, _))) => ControlFlow::Break(error_at(
                    name.span,
                    format!(
                        "{} is an auxiliary function of a group window: it needs the group window {} \
                     in the GROUP BY of the same SELECT, with the same arguments",
                        name.value.to_ascii_uppercase(),
                        window.usage()
                    ),
                )),
                None => ControlFlow::Continue(()),
            }
        }
        _ => ControlFlow::Continue(()),
    });
    match left {
        ControlFlow::Break(e) => Err(e),
        ControlFlow::Continue(()) => Ok(()),
    }
}

struct Rewriter;

impl VisitorMut for Rewriter {
    type Break = DataFusionError;

    fn pre_visit_query(&mut self, query: &mut Query) -> ControlFlow<DataFusionError> {
        let result = match query.body.as_mut() {
            // ORDER BY belongs to the query around the SELECT: rewrite it too.
            SetExpr::Select(select) => match rewrite_select(select) {
                Ok(Some(found)) => {
                    let mut failed = None;
                    let _ = visit_expressions_mut(&mut query.order_by, |e| {
                        if let Err(err) = replace_auxiliary(e, &found) {
                            failed = Some(err);
                            return ControlFlow::Break(());
                        }
                        ControlFlow::Continue(())
                    });
                    failed.map_or(Ok(()), Err)
                }
                Ok(None) => Ok(()),
                Err(e) => Err(e),
            },
            body => rewrite_set_expr(body),
        };
        match result {
            Ok(()) => ControlFlow::Continue(()),
            Err(e) => ControlFlow::Break(e),
        }
    }
}

/// The `SELECT`s of a set operation (their own queries are visited anyway).
fn rewrite_set_expr(body: &mut SetExpr) -> Result<()> {
    match body {
        SetExpr::Select(select) => rewrite_select(select).map(|_| ()),
        SetExpr::SetOperation { left, right, .. } => {
            rewrite_set_expr(left)?;
            rewrite_set_expr(right)
        }
        _ => Ok(()),
    }
}

/// The group window of a `GROUP BY`, checked, if there is one.
fn find_group_window(select: &Select) -> Result<Option<(usize, Found)>> {
    let GroupByExpr::Expressions(exprs, _) = &select.group_by else {
        return Ok(None);
    };
    let mut found: Option<(usize, Found)> = None;
    for (i, e) in exprs.iter().enumerate() {
        let Expr::Function(f) = e else { continue };
        let Some(name) = simple_name(&f.name) else {
            continue;
        };
        let Some(window) = GroupWindow::of(&name.value) else {
            continue;
        };
        if found.is_some() {
            return Err(error_at(
                name.span,
                "a GROUP BY can have one group window (TUMBLE, HOP or SESSION)".into(),
            ));
        }
        let args = plain_args(&f.args).unwrap_or_default();
        if args.len() != window.arity() {
            return Err(error_at(
                name.span,
                format!(
                    "the group window {} takes {} arguments: {}",
                    window.name(),
                    window.arity(),
                    window.usage()
                ),
            ));
        }
        let time = match args[0] {
            Expr::Identifier(id) => id.clone(),
            Expr::CompoundIdentifier(parts) if parts.len() == 2 => parts[1].clone(),
            other => {
                return Err(error_at(
                    other.span(),
                    format!(
                        "the first argument of the group window {} must be a time column: {}",
                        window.name(),
                        window.usage()
                    ),
                ));
            }
        };
        found = Some((
            i,
            Found {
                window,
                time,
                sizes: args[1..].iter().map(|e| (*e).clone()).collect(),
                args_text: args.iter().map(|e| e.to_string()).collect(),
                name: name.clone(),
            },
        ));
    }
    Ok(found)
}

/// Rewrites one `SELECT` with a group window; returns the window, so the
/// query's `ORDER BY` can be rewritten too.
fn rewrite_select(select: &mut Select) -> Result<Option<Found>> {
    let Some((position, found)) = find_group_window(select)? else {
        return Ok(None);
    };
    let refuse = || {
        error_at(
            found.name.span,
            format!(
                "the group window {} needs one table or view in FROM (not a join, a subquery \
                 or a table function); window the input with the table function {}(table, \
                 time_column, …) instead",
                found.window.name(),
                found.window.name()
            ),
        )
    };
    let [from] = select.from.as_mut_slice() else {
        return Err(refuse());
    };
    if !from.joins.is_empty() {
        return Err(refuse());
    }
    let TableFactor::Table { name, args, .. } = &mut from.relation else {
        return Err(refuse());
    };
    let table = match (args.as_ref(), simple_name(name)) {
        (None, Some(table)) => table.clone(),
        _ => return Err(refuse()),
    };
    let function = Ident::with_span(found.name.span, found.window.name().to_ascii_lowercase());
    let mut call = vec![
        Expr::Identifier(table),
        Expr::Identifier(found.time.clone()),
    ];
    call.extend(found.sizes.iter().cloned());
    *name = ObjectName::from(vec![function]);
    *args = Some(TableFunctionArgs {
        args: call
            .into_iter()
            .map(|e| FunctionArg::Unnamed(FunctionArgExpr::Expr(e)))
            .collect(),
        settings: None,
    });
    if let GroupByExpr::Expressions(exprs, _) = &mut select.group_by {
        let bound = |n: &str| Expr::Identifier(Ident::with_span(found.name.span, n));
        exprs.splice(
            position..=position,
            [bound("window_start"), bound("window_end")],
        );
    }
    for item in &mut select.projection {
        // An unnamed TUMBLE_START(…) is named after what it is.
        if let SelectItem::UnnamedExpr(e) = item
            && let Some(alias) = auxiliary_of(e, &found)?.map(column_name)
        {
            let mut expr = e.clone();
            replace_auxiliary(&mut expr, &found)?;
            *item = SelectItem::ExprWithAlias {
                expr,
                alias: Ident::new(alias),
            };
            continue;
        }
        let mut failed = None;
        let _ = visit_expressions_mut(item, |e| {
            if let Err(err) = replace_auxiliary(e, &found) {
                failed = Some(err);
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        });
        if let Some(e) = failed {
            return Err(e);
        }
    }
    if let Some(having) = &mut select.having {
        let mut failed = None;
        let _ = visit_expressions_mut(having, |e| {
            if let Err(err) = replace_auxiliary(e, &found) {
                failed = Some(err);
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        });
        if let Some(e) = failed {
            return Err(e);
        }
    }
    Ok(Some(found))
}

fn column_name(bound: Auxiliary) -> &'static str {
    match bound {
        Auxiliary::Start => "window_start",
        Auxiliary::End => "window_end",
        Auxiliary::Time => "window_time",
    }
}

/// Which bound `e` is, when it is an auxiliary function of `found`'s
/// window with its arguments; an error when it is one of another window
/// or with other arguments.
fn auxiliary_of(e: &Expr, found: &Found) -> Result<Option<Auxiliary>> {
    let Expr::Function(f) = e else {
        return Ok(None);
    };
    let Some(name) = simple_name(&f.name) else {
        return Ok(None);
    };
    let Some((window, bound)) = auxiliary(&name.value) else {
        return Ok(None);
    };
    let written = name.value.to_ascii_uppercase();
    if window != found.window {
        return Err(error_at(
            name.span,
            format!(
                "{written} does not belong to the group window {} of this GROUP BY",
                found.window.name()
            ),
        ));
    }
    let same_args = plain_args(&f.args).is_some_and(|args| {
        args.len() == found.args_text.len()
            && args
                .iter()
                .zip(&found.args_text)
                .all(|(a, b)| a.to_string().eq_ignore_ascii_case(b))
    });
    if !same_args {
        return Err(error_at(
            name.span,
            format!(
                "{written} must take the arguments of the group window: {}({})",
                found.window.name(),
                found.args_text.join(", ")
            ),
        ));
    }
    Ok(Some(bound))
}

/// Replaces `e` by the window column it stands for, if it is an
/// auxiliary function of `found`'s window.
fn replace_auxiliary(e: &mut Expr, found: &Found) -> Result<()> {
    let Some(bound) = auxiliary_of(e, found)? else {
        return Ok(());
    };
    let span = match e {
        Expr::Function(f) => f.name.span(),
        _ => e.span(),
    };
    *e = match bound {
        Auxiliary::Start => Expr::Identifier(Ident::with_span(span, "window_start")),
        Auxiliary::End => Expr::Identifier(Ident::with_span(span, "window_end")),
        Auxiliary::Time => Parser::new(&GenericDialect {})
            .try_with_sql("window_end - INTERVAL '1' MILLISECOND")
            .and_then(|mut p| p.parse_expr())
            .map_err(|e| DataFusionError::Internal(format!("window_time expression: {e}")))?,
    };
    Ok(())
}

#[cfg(test)]
mod tests {
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::parser::Parser;

    use super::rewrite_group_windows;

    fn rewritten(sql: &str) -> Result<String, String> {
        let mut statements =
            Parser::parse_sql(&GenericDialect {}, sql).map_err(|e| e.to_string())?;
        let statement = &mut statements[0];
        rewrite_group_windows(statement).map_err(|e| e.strip_backtrace())?;
        Ok(statement.to_string())
    }

    #[test]
    fn tumble_becomes_the_table_function() {
        assert_eq!(
            rewritten(
                "SELECT k, TUMBLE_START(ts, INTERVAL '10' SECOND), COUNT(*) FROM t \
                 GROUP BY k, TUMBLE(ts, INTERVAL '10' SECOND)"
            )
            .unwrap(),
            "SELECT k, window_start AS window_start, COUNT(*) FROM tumble(t, ts, INTERVAL '10' SECOND) \
             GROUP BY k, window_start, window_end"
        );
    }

    #[test]
    fn rowtime_is_the_last_millisecond_and_aliases_stay() {
        assert_eq!(
            rewritten(
                "SELECT HOP_ROWTIME(B.ts, INTERVAL '1' SECOND, INTERVAL '2' SECOND) AS rt FROM bid B \
                 GROUP BY HOP(B.ts, INTERVAL '1' SECOND, INTERVAL '2' SECOND) \
                 ORDER BY HOP_END(B.ts, INTERVAL '1' SECOND, INTERVAL '2' SECOND)"
            )
            .unwrap(),
            "SELECT window_end - INTERVAL '1' MILLISECOND AS rt \
             FROM hop(bid, ts, INTERVAL '1' SECOND, INTERVAL '2' SECOND) B \
             GROUP BY window_start, window_end ORDER BY window_end"
        );
    }

    #[test]
    fn inner_queries_are_rewritten_too() {
        let sql = rewritten(
            "SELECT s FROM (SELECT SESSION_START(ts, INTERVAL '5' SECOND) AS s FROM t \
             GROUP BY SESSION(ts, INTERVAL '5' SECOND)) x",
        )
        .unwrap();
        assert!(
            sql.contains("FROM session(t, ts, INTERVAL '5' SECOND)"),
            "{sql}"
        );
    }

    #[test]
    fn refuses_what_it_cannot_rewrite() {
        let err = rewritten(
            "SELECT COUNT(*) FROM a JOIN b ON a.k = b.k GROUP BY TUMBLE(ts, INTERVAL '1' SECOND)",
        )
        .unwrap_err();
        assert!(err.contains("needs one table or view in FROM"), "{err}");
        let err = rewritten("SELECT TUMBLE_END(ts, INTERVAL '1' SECOND) FROM t").unwrap_err();
        assert!(err.contains("it needs the group window TUMBLE("), "{err}");
        let err = rewritten(
            "SELECT TUMBLE_END(ts, INTERVAL '2' SECOND) FROM t GROUP BY TUMBLE(ts, INTERVAL '1' SECOND)",
        )
        .unwrap_err();
        assert!(
            err.contains("must take the arguments of the group window"),
            "{err}"
        );
        let err = rewritten(
            "SELECT HOP_END(ts, INTERVAL '1' SECOND) FROM t GROUP BY TUMBLE(ts, INTERVAL '1' SECOND)",
        )
        .unwrap_err();
        assert!(
            err.contains("does not belong to the group window TUMBLE"),
            "{err}"
        );
    }
}
