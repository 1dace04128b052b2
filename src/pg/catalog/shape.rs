//! What a catalog query's text alone tells of its answer: the names
//! Postgres gives its columns, and whether it reads a relation that is
//! empty where no row can come out.

use datafusion::sql::sqlparser::ast::{
    DataType, Expr, Ident, JoinOperator, ObjectName, Query, SelectItem, SetExpr, SetOperator,
    Statement, TableFactor, TableWithJoins,
};

fn ident_name(ident: &Ident) -> String {
    if ident.quote_style.is_some() {
        ident.value.clone()
    } else {
        ident.value.to_lowercase()
    }
}

fn object_name(name: &ObjectName) -> Vec<String> {
    name.0
        .iter()
        .filter_map(|p| p.as_ident())
        .map(ident_name)
        .collect()
}

/// The leftmost `SELECT`'s items of a query.
fn first_items(body: &SetExpr) -> Option<&[SelectItem]> {
    match body {
        SetExpr::Select(s) => Some(&s.projection),
        SetExpr::Query(q) => first_items(&q.body),
        SetExpr::SetOperation { left, .. } => first_items(left),
        _ => None,
    }
}

/// The result column names Postgres gives `statement` (aliases, else the
/// column or function name, else `?column?`); `None` for a statement whose
/// columns the text does not tell (`SELECT *`, not a query).
pub(crate) fn column_names(statement: &Statement) -> Option<Vec<String>> {
    let Statement::Query(query) = statement else {
        return None;
    };
    query_names(query)
}

fn query_names(query: &Query) -> Option<Vec<String>> {
    first_items(&query.body)?
        .iter()
        .map(|item| match item {
            SelectItem::UnnamedExpr(e) => {
                Some(figure(e).map_or_else(|| "?column?".to_string(), |(name, _)| name))
            }
            SelectItem::ExprWithAlias { alias, .. } => Some(ident_name(alias)),
            _ => None,
        })
        .collect()
}

/// The name Postgres figures for an expression, and how strongly (a cast
/// of a name keeps the name; a cast of a constant is named by its type).
fn figure(expr: &Expr) -> Option<(String, u8)> {
    match expr {
        Expr::Identifier(i) => Some((ident_name(i), 2)),
        Expr::CompoundIdentifier(parts) => parts.last().map(|i| (ident_name(i), 2)),
        Expr::Function(f) => object_name(&f.name).pop().map(|n| (n, 2)),
        Expr::Cast {
            expr, data_type, ..
        } => match figure(expr) {
            Some((name, strength)) if strength > 1 => Some((name, strength)),
            _ => Some((type_name(data_type), 1)),
        },
        Expr::Collate { expr, .. } | Expr::Nested(expr) => figure(expr),
        Expr::Case { .. } => Some(("case".into(), 1)),
        Expr::Exists { .. } => Some(("exists".into(), 2)),
        Expr::Array(_) => Some(("array".into(), 2)),
        Expr::Subquery(q) => query_names(q)
            .and_then(|names| names.into_iter().next())
            .filter(|n| n != "?column?")
            .map(|n| (n, 2)),
        _ => None,
    }
}

fn type_name(data_type: &DataType) -> String {
    match data_type {
        DataType::Custom(name, _) => object_name(name).pop().unwrap_or_default(),
        other => other.to_string().to_lowercase(),
    }
}

/// True when `statement` is a query that cannot give a row because it
/// reads, with an inner join (or as the left side of a left join), a
/// relation `is_empty` says is empty.
pub(crate) fn reads_nothing(statement: &Statement, is_empty: &dyn Fn(&str) -> bool) -> bool {
    match statement {
        Statement::Query(q) => body_empty(&q.body, is_empty),
        _ => false,
    }
}

fn body_empty(body: &SetExpr, is_empty: &dyn Fn(&str) -> bool) -> bool {
    match body {
        SetExpr::Select(s) => s.from.iter().any(|t| from_empty(t, is_empty)),
        SetExpr::Query(q) => body_empty(&q.body, is_empty),
        SetExpr::SetOperation {
            op, left, right, ..
        } => match op {
            SetOperator::Union => body_empty(left, is_empty) && body_empty(right, is_empty),
            SetOperator::Intersect => body_empty(left, is_empty) || body_empty(right, is_empty),
            SetOperator::Except | SetOperator::Minus => body_empty(left, is_empty),
        },
        _ => false,
    }
}

fn factor_empty(factor: &TableFactor, is_empty: &dyn Fn(&str) -> bool) -> bool {
    match factor {
        TableFactor::Table {
            name, args: None, ..
        } => is_empty(&object_name(name).join(".")),
        TableFactor::Derived { subquery, .. } => body_empty(&subquery.body, is_empty),
        TableFactor::NestedJoin {
            table_with_joins, ..
        } => from_empty(table_with_joins, is_empty),
        _ => false,
    }
}

fn from_empty(from: &TableWithJoins, is_empty: &dyn Fn(&str) -> bool) -> bool {
    // The first relation's rows survive every join but right and full ones.
    let left_kept = from.joins.iter().all(|j| {
        !matches!(
            j.join_operator,
            JoinOperator::Right(_)
                | JoinOperator::RightOuter(_)
                | JoinOperator::FullOuter(_)
                | JoinOperator::RightSemi(_)
                | JoinOperator::RightAnti(_)
        )
    });
    if left_kept && factor_empty(&from.relation, is_empty) {
        return true;
    }
    from.joins.iter().any(|j| {
        matches!(
            j.join_operator,
            JoinOperator::Join(_)
                | JoinOperator::Inner(_)
                | JoinOperator::CrossJoin(_)
                | JoinOperator::Semi(_)
                | JoinOperator::LeftSemi(_)
                | JoinOperator::StraightJoin(_)
        ) && factor_empty(&j.relation, is_empty)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;

    fn parse(sql: &str) -> Statement {
        Parser::parse_sql(&PostgreSqlDialect {}, sql)
            .unwrap()
            .remove(0)
    }

    #[test]
    fn columns_are_named_as_postgres_names_them() {
        let names = column_names(&parse(
            "SELECT c.relname, format_type(a.atttypid, a.atttypmod), 1, a.attname AS \"Name\", \
             'x'::regclass, c.oid::regclass, CASE WHEN true THEN 1 END, NULL, current_user \
             FROM pg_class c",
        ));
        assert_eq!(
            names.unwrap(),
            [
                "relname",
                "format_type",
                "?column?",
                "Name",
                "regclass",
                "oid",
                "case",
                "?column?",
                "current_user"
            ]
        );
        assert_eq!(column_names(&parse("SELECT * FROM pg_class")), None);
    }

    #[test]
    fn an_inner_join_with_an_empty_relation_reads_nothing() {
        let empty = |name: &str| name == "pg_policy" || name == "pg_inherits";
        let nothing = |sql: &str| reads_nothing(&parse(sql), &empty);
        assert!(nothing(
            "SELECT polname FROM pg_policy pol WHERE pol.polrelid = 1"
        ));
        assert!(nothing(
            "SELECT c.oid FROM pg_class c, pg_inherits i WHERE c.oid = i.inhparent"
        ));
        assert!(nothing(
            "SELECT 1 FROM pg_policy UNION SELECT 2 FROM pg_class JOIN pg_inherits ON true"
        ));
        assert!(!nothing(
            "SELECT 1 FROM pg_policy UNION SELECT 2 FROM pg_class"
        ));
        assert!(!nothing(
            "SELECT c.oid FROM pg_class c LEFT JOIN pg_inherits i ON c.oid = i.inhparent"
        ));
        assert!(!nothing(
            "SELECT 1 FROM pg_policy p RIGHT JOIN pg_class c ON p.polrelid = c.oid"
        ));
    }
}
