//! Postgres constructs in catalog queries, rewritten on the parsed
//! statement into SQL DataFusion plans with the same meaning:
//!
//! - `x::regclass`, `::regtype`, `::regnamespace`, `::regrole` become calls
//!   of the functions of the same name (a name reads as an oid, an oid
//!   prints as a name); `::oid` is a `BIGINT`, `::name` and `::"char"` text;
//! - `a OPERATOR(pg_catalog.~) b` is `a ~ b`; `COLLATE` goes (Weir's text
//!   compares bytewise, as the `C` collation does);
//! - `ARRAY(SELECT f(x) FROM unnest(a) x)` maps the array with a lambda;
//!   other `ARRAY(subquery)`s aggregate with `array_agg`;
//! - correlated scalar subqueries are put in the shape DataFusion
//!   decorrelates: conditions on the outer row alone move out into a
//!   `CASE`, an outer column equated to an inner one is replaced by it in
//!   the other conditions, and the value is aggregated (`first_value`),
//!   since a scalar subquery gives one row at most.

use std::collections::{HashMap, HashSet};
use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::helpers::attached_token::AttachedToken;

use datafusion::sql::sqlparser::ast::{
    BinaryOperator, CaseWhen, DataType, Expr, Function, FunctionArg, FunctionArgExpr,
    FunctionArgumentClause, FunctionArgumentList, FunctionArguments, GroupByExpr, Ident,
    LambdaFunction, LambdaFunctionParameter, LambdaSyntax, ObjectName, OneOrManyWithParens,
    OrderByKind, Query, Select, SelectItem, SetExpr, Statement, TableFactor, TableWithJoins, Value,
    visit_expressions, visit_expressions_mut,
};

/// The `reg*` types whose casts become function calls.
const REG_TYPES: [&str; 4] = ["regclass", "regtype", "regnamespace", "regrole"];

/// Aggregate functions: a subquery computing one already gives one row.
const AGGREGATES: [&str; 12] = [
    "count",
    "sum",
    "min",
    "max",
    "avg",
    "array_agg",
    "string_agg",
    "bool_and",
    "bool_or",
    "every",
    "first_value",
    "last_value",
];

/// Rewrites the Postgres constructs of `statement` in place.
pub(crate) fn rewrite(statement: &mut Statement) {
    let _ = visit_expressions_mut(statement, |expr| {
        rewrite_expr(expr);
        ControlFlow::<()>::Continue(())
    });
}

fn null() -> Expr {
    Expr::value(Value::Null)
}

fn ident_name(ident: &Ident) -> String {
    if ident.quote_style.is_some() {
        ident.value.clone()
    } else {
        ident.value.to_lowercase()
    }
}

fn last_name(name: &ObjectName) -> Option<String> {
    name.0
        .last()
        .and_then(|part| part.as_ident())
        .map(ident_name)
}

/// A call of `name` with `args`.
fn call(name: &str, args: Vec<Expr>, clauses: Vec<FunctionArgumentClause>) -> Expr {
    Expr::Function(Function {
        name: ObjectName::from(vec![Ident::new(name)]),
        uses_odbc_syntax: false,
        parameters: FunctionArguments::None,
        args: FunctionArguments::List(FunctionArgumentList {
            duplicate_treatment: None,
            args: args
                .into_iter()
                .map(|e| FunctionArg::Unnamed(FunctionArgExpr::Expr(e)))
                .collect(),
            clauses,
        }),
        filter: None,
        null_treatment: None,
        over: None,
        within_group: vec![],
    })
}

fn rewrite_expr(expr: &mut Expr) {
    match expr {
        Expr::Collate { expr: inner, .. } => {
            *expr = std::mem::replace(inner.as_mut(), null());
        }
        Expr::BinaryOp { op, .. } => {
            if let BinaryOperator::PGCustomBinaryOperator(parts) = op
                && let Some(builtin) = parts.last().and_then(|p| builtin_operator(p))
            {
                *op = builtin;
            }
        }
        Expr::Cast {
            expr: inner,
            data_type,
            ..
        } => match cast_target(data_type) {
            Some(CastTo::Function(name)) => {
                let operand = std::mem::replace(inner.as_mut(), null());
                *expr = call(name, vec![operand], vec![]);
            }
            Some(CastTo::Type(t)) => *data_type = t,
            None => {}
        },
        Expr::Function(f)
            if last_name(&f.name).as_deref() == Some("array")
                && matches!(f.args, FunctionArguments::Subquery(_)) =>
        {
            if let FunctionArguments::Subquery(query) =
                std::mem::replace(&mut f.args, FunctionArguments::None)
            {
                *expr = array_of(*query);
            }
        }
        _ => {}
    }
    decorrelate(expr);
}

/// The built-in operator a Postgres `OPERATOR(schema.op)` names.
fn builtin_operator(op: &str) -> Option<BinaryOperator> {
    Some(match op {
        "~" => BinaryOperator::PGRegexMatch,
        "~*" => BinaryOperator::PGRegexIMatch,
        "!~" => BinaryOperator::PGRegexNotMatch,
        "!~*" => BinaryOperator::PGRegexNotIMatch,
        "~~" => BinaryOperator::PGLikeMatch,
        "~~*" => BinaryOperator::PGILikeMatch,
        "!~~" => BinaryOperator::PGNotLikeMatch,
        "!~~*" => BinaryOperator::PGNotILikeMatch,
        "=" => BinaryOperator::Eq,
        "<>" | "!=" => BinaryOperator::NotEq,
        "<" => BinaryOperator::Lt,
        "<=" => BinaryOperator::LtEq,
        ">" => BinaryOperator::Gt,
        ">=" => BinaryOperator::GtEq,
        "+" => BinaryOperator::Plus,
        "-" => BinaryOperator::Minus,
        "*" => BinaryOperator::Multiply,
        "/" => BinaryOperator::Divide,
        "||" => BinaryOperator::StringConcat,
        _ => return None,
    })
}

enum CastTo {
    Function(&'static str),
    Type(DataType),
}

/// What a cast to a Postgres-only type becomes.
fn cast_target(data_type: &DataType) -> Option<CastTo> {
    let name = match data_type {
        DataType::Regclass => "regclass".to_string(),
        DataType::Custom(name, modifiers) if modifiers.is_empty() => last_name(name)?,
        _ => return None,
    };
    if let Some(reg) = REG_TYPES.iter().find(|r| **r == name) {
        return Some(CastTo::Function(reg));
    }
    match name.as_str() {
        "oid" | "xid" | "cid" => Some(CastTo::Type(DataType::BigInt(None))),
        "name" | "char" | "bpchar" => Some(CastTo::Type(DataType::Text)),
        _ => None,
    }
}

/// `ARRAY(subquery)` as an array expression.
fn array_of(query: Query) -> Expr {
    if let Some(mapped) = mapped_unnest(&query) {
        return mapped;
    }
    aggregated(query)
}

fn lambda(param: &str, body: Expr) -> Expr {
    Expr::Lambda(LambdaFunction {
        params: OneOrManyWithParens::One(LambdaFunctionParameter {
            name: Ident::new(param),
            data_type: None,
        }),
        body: Box::new(body),
        syntax: LambdaSyntax::Arrow,
    })
}

/// True when `select` is a plain `SELECT` (no grouping, `DISTINCT` …).
fn is_plain(select: &Select) -> bool {
    select.distinct.is_none()
        && select.having.is_none()
        && select.top.is_none()
        && matches!(&select.group_by, GroupByExpr::Expressions(e, m) if e.is_empty() && m.is_empty())
}

fn select_of(query: &Query) -> Option<&Select> {
    match query.body.as_ref() {
        SetExpr::Select(s) if query.limit_clause.is_none() && query.fetch.is_none() => Some(s),
        _ => None,
    }
}

fn single_item(select: &Select) -> Option<&Expr> {
    match select.projection.as_slice() {
        [SelectItem::UnnamedExpr(e)] | [SelectItem::ExprWithAlias { expr: e, .. }] => Some(e),
        _ => None,
    }
}

/// `ARRAY(SELECT f(x) FROM unnest(a) x [WHERE p(x)])` as
/// `array_transform(array_filter(a, x -> p(x)), x -> f(x))`.
fn mapped_unnest(query: &Query) -> Option<Expr> {
    let select = select_of(query)?;
    if query.order_by.is_some() || !is_plain(select) {
        return None;
    }
    let item = single_item(select)?;
    let [TableWithJoins { relation, joins }] = select.from.as_slice() else {
        return None;
    };
    if !joins.is_empty() {
        return None;
    }
    let (array, alias) = match relation {
        TableFactor::UNNEST {
            alias,
            array_exprs,
            with_offset: false,
            with_ordinality: false,
            ..
        } if array_exprs.len() == 1 => (array_exprs[0].clone(), alias),
        TableFactor::Function {
            name,
            args,
            alias,
            with_ordinality: false,
            ..
        } if last_name(name).as_deref() == Some("unnest") && args.len() == 1 => match &args[0] {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => (e.clone(), alias),
            _ => return None,
        },
        _ => return None,
    };
    // Postgres names the element after the alias's column, else the alias,
    // else the function.
    let element = match alias {
        Some(a) => a
            .columns
            .first()
            .map_or_else(|| ident_name(&a.name), |c| ident_name(&c.name)),
        None => "unnest".to_string(),
    };
    let filtered = match &select.selection {
        Some(p) => call(
            "array_filter",
            vec![array, lambda(&element, p.clone())],
            vec![],
        ),
        None => array,
    };
    Some(match item {
        Expr::Identifier(i) if ident_name(i) == element => filtered,
        _ => call(
            "array_transform",
            vec![filtered, lambda(&element, item.clone())],
            vec![],
        ),
    })
}

/// `ARRAY(SELECT e FROM … ORDER BY o)` as `(SELECT array_agg(e ORDER BY o)
/// FROM …)`; left as it is when it has another shape.
fn aggregated(query: Query) -> Expr {
    let Some(item) = select_of(&query)
        .filter(|s| is_plain(s))
        .and_then(single_item)
        .cloned()
    else {
        return array_call(query);
    };
    let mut query = query;
    let order = match query.order_by.take().map(|o| o.kind) {
        None => vec![],
        Some(OrderByKind::Expressions(mut items)) => {
            for o in &mut items {
                // `ORDER BY 1` is the one column.
                if matches!(&o.expr, Expr::Value(v) if v.value == Value::Number("1".into(), false))
                {
                    o.expr = item.clone();
                }
            }
            vec![FunctionArgumentClause::OrderBy(items)]
        }
        Some(other) => {
            query.order_by = Some(datafusion::sql::sqlparser::ast::OrderBy {
                kind: other,
                interpolate: None,
            });
            return array_call(query);
        }
    };
    if let SetExpr::Select(select) = query.body.as_mut() {
        select.projection = vec![SelectItem::UnnamedExpr(call(
            "array_agg",
            vec![item],
            order,
        ))];
    }
    Expr::Subquery(Box::new(query))
}

/// `ARRAY(query)` unchanged.
fn array_call(query: Query) -> Expr {
    Expr::Function(Function {
        name: ObjectName::from(vec![Ident::new("array")]),
        uses_odbc_syntax: false,
        parameters: FunctionArguments::None,
        args: FunctionArguments::Subquery(Box::new(query)),
        filter: None,
        null_treatment: None,
        over: None,
        within_group: vec![],
    })
}

/// The names a `FROM` clause binds: aliases, else table names.
fn bound_names(from: &[TableWithJoins]) -> HashSet<String> {
    let mut names = HashSet::new();
    let mut add = |factor: &TableFactor| {
        let name = match factor {
            TableFactor::Table { name, alias, .. } => match alias {
                Some(a) => Some(ident_name(&a.name)),
                None => last_name(name),
            },
            TableFactor::Derived { alias, .. }
            | TableFactor::UNNEST { alias, .. }
            | TableFactor::Function { alias, .. }
            | TableFactor::TableFunction { alias, .. }
            | TableFactor::NestedJoin { alias, .. } => alias.as_ref().map(|a| ident_name(&a.name)),
            _ => None,
        };
        names.extend(name);
    };
    for t in from {
        add(&t.relation);
        for j in &t.joins {
            add(&j.relation);
        }
    }
    names
}

/// Where a column reference points from inside a subquery.
#[derive(Default)]
struct Refs {
    inner: bool,
    outer: bool,
    subquery: bool,
}

fn is_outer(parts: &[Ident], inner: &HashSet<String>) -> bool {
    parts.len() >= 2 && !inner.contains(&ident_name(&parts[parts.len() - 2]))
}

fn refs(expr: &Expr, inner: &HashSet<String>) -> Refs {
    let mut found = Refs::default();
    let _ = visit_expressions(expr, |e| {
        match e {
            Expr::Identifier(_) => found.inner = true,
            Expr::CompoundIdentifier(parts) if is_outer(parts, inner) => found.outer = true,
            Expr::CompoundIdentifier(_) => found.inner = true,
            Expr::Subquery(_) | Expr::Exists { .. } | Expr::InSubquery { .. } => {
                found.subquery = true;
            }
            _ => {}
        }
        ControlFlow::<()>::Continue(())
    });
    found
}

/// `inner = outer` (either way round): the outer reference and the inner
/// column it equals.
fn binding(expr: &Expr, inner: &HashSet<String>) -> Option<(String, Expr)> {
    let Expr::BinaryOp {
        left,
        op: BinaryOperator::Eq,
        right,
    } = expr
    else {
        return None;
    };
    let key = |parts: &[Ident]| parts.iter().map(ident_name).collect::<Vec<_>>().join(".");
    match (left.as_ref(), right.as_ref()) {
        (Expr::CompoundIdentifier(o), i @ (Expr::CompoundIdentifier(_) | Expr::Identifier(_)))
        | (i @ (Expr::CompoundIdentifier(_) | Expr::Identifier(_)), Expr::CompoundIdentifier(o))
            if is_outer(o, inner) && !refs(i, inner).outer =>
        {
            Some((key(o), i.clone()))
        }
        _ => None,
    }
}

fn split_and(expr: Expr, out: &mut Vec<Expr>) {
    match expr {
        Expr::BinaryOp {
            left,
            op: BinaryOperator::And,
            right,
        } => {
            split_and(*left, out);
            split_and(*right, out);
        }
        Expr::Nested(inner)
            if matches!(
                inner.as_ref(),
                Expr::BinaryOp {
                    op: BinaryOperator::And,
                    ..
                }
            ) =>
        {
            split_and(*inner, out)
        }
        other => out.push(other),
    }
}

fn and_all(conjuncts: Vec<Expr>) -> Option<Expr> {
    conjuncts.into_iter().reduce(|a, b| Expr::BinaryOp {
        left: Box::new(a),
        op: BinaryOperator::And,
        right: Box::new(b),
    })
}

fn has_aggregate(expr: &Expr) -> bool {
    let mut found = false;
    let _ = visit_expressions(expr, |e| {
        if let Expr::Function(f) = e
            && f.over.is_none()
            && last_name(&f.name).is_some_and(|n| AGGREGATES.contains(&n.as_str()))
        {
            found = true;
        }
        ControlFlow::<()>::Continue(())
    });
    found
}

/// A correlated scalar subquery in the shape DataFusion decorrelates.
fn decorrelate(expr: &mut Expr) {
    let Expr::Subquery(query) = expr else {
        return;
    };
    let SetExpr::Select(select) = query.body.as_mut() else {
        return;
    };
    if !is_plain(select) || select.projection.len() != 1 {
        return;
    }
    let Some(selection) = select.selection.take() else {
        return;
    };
    let inner = bound_names(&select.from);
    let mut conjuncts = Vec::new();
    split_and(selection, &mut conjuncts);
    let bindings: HashMap<String, Expr> = conjuncts
        .iter()
        .filter_map(|c| binding(c, &inner))
        .collect();
    let mut outer_only = Vec::new();
    let mut kept = Vec::new();
    for mut c in conjuncts {
        let found = refs(&c, &inner);
        if found.subquery || !found.outer || binding(&c, &inner).is_some() {
            kept.push(c);
        } else if !found.inner {
            outer_only.push(c);
        } else {
            // An outer column equal to an inner one is that inner column.
            let _ = visit_expressions_mut(&mut c, |e| {
                if let Expr::CompoundIdentifier(parts) = e
                    && is_outer(parts, &inner)
                {
                    let key = parts.iter().map(ident_name).collect::<Vec<_>>().join(".");
                    if let Some(inner_column) = bindings.get(&key) {
                        *e = inner_column.clone();
                    }
                }
                ControlFlow::<()>::Continue(())
            });
            kept.push(c);
        }
    }
    let correlated = kept.iter().any(|c| refs(c, &inner).outer);
    select.selection = and_all(kept);
    if correlated {
        let item = match &mut select.projection[0] {
            SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => Some(e),
            _ => None,
        };
        if let Some(e) = item
            && !has_aggregate(e)
        {
            let value = std::mem::replace(e, null());
            *e = call("first_value", vec![value], vec![]);
        }
    }
    if let Some(condition) = and_all(outer_only) {
        let subquery = std::mem::replace(expr, null());
        *expr = Expr::Case {
            case_token: AttachedToken::empty(),
            end_token: AttachedToken::empty(),
            operand: None,
            conditions: vec![CaseWhen {
                condition,
                result: subquery,
            }],
            else_result: None,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;

    fn rewritten(sql: &str) -> String {
        let mut statements = Parser::parse_sql(&PostgreSqlDialect {}, sql).unwrap();
        rewrite(&mut statements[0]);
        statements[0].to_string()
    }

    #[test]
    fn casts_operators_and_collations() {
        assert_eq!(
            rewritten("SELECT c.oid::regclass, 't'::regclass, x::regtype::text, y::oid, z::name"),
            "SELECT regclass(c.oid), regclass('t'), regtype(x)::TEXT, y::BIGINT, z::TEXT"
        );
        assert_eq!(
            rewritten("SELECT 1 WHERE c.relname OPERATOR(~) '^(t)$' COLLATE default"),
            "SELECT 1 WHERE c.relname ~ '^(t)$'"
        );
    }

    #[test]
    fn correlated_subqueries_take_a_shape_datafusion_decorrelates() {
        assert_eq!(
            rewritten(
                "SELECT (SELECT pg_get_expr(d.adbin, d.adrelid, true) FROM pg_attrdef d \
                 WHERE d.adrelid = a.attrelid AND d.adnum = a.attnum AND a.atthasdef) \
                 FROM pg_attribute a"
            ),
            "SELECT CASE WHEN a.atthasdef THEN (SELECT first_value(pg_get_expr(d.adbin, \
             d.adrelid, true)) FROM pg_attrdef d WHERE d.adrelid = a.attrelid AND \
             d.adnum = a.attnum) END FROM pg_attribute a"
        );
        assert_eq!(
            rewritten(
                "SELECT (SELECT c.collname FROM pg_collation c, pg_type t \
                 WHERE c.oid = a.attcollation AND t.oid = a.atttypid \
                 AND a.attcollation <> t.typcollation) AS attcollation FROM pg_attribute a"
            ),
            "SELECT (SELECT first_value(c.collname) FROM pg_collation c, pg_type t \
             WHERE c.oid = a.attcollation AND t.oid = a.atttypid AND c.oid <> t.typcollation) \
             AS attcollation FROM pg_attribute a"
        );
        // Not correlated: left alone.
        assert_eq!(
            rewritten("SELECT (SELECT max(x) FROM t WHERE t.y = 1)"),
            "SELECT (SELECT max(x) FROM t WHERE t.y = 1)"
        );
    }

    #[test]
    fn array_subqueries() {
        assert_eq!(
            rewritten(
                "SELECT array_to_string(c.reloptions || \
                 array(select 'toast.' || x from unnest(tc.reloptions) x), ', ')"
            ),
            "SELECT array_to_string(c.reloptions || array_transform(tc.reloptions, \
             x -> 'toast.' || x), ', ')"
        );
        assert_eq!(
            rewritten("SELECT array(select rolname from pg_roles where oid > 1 order by 1)"),
            "SELECT (SELECT array_agg(rolname ORDER BY rolname) FROM pg_roles WHERE oid > 1)"
        );
    }
}
