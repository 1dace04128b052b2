//! Parsing Flink's view statements: `CREATE [TEMPORARY] VIEW [IF NOT
//! EXISTS] v [(col, …)] AS query` and `DROP [TEMPORARY] VIEW [IF EXISTS] v`.

use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::Token;

use super::Statement;
use super::cursor::Cursor;
use crate::error::{Position, Result};

/// A parsed `CREATE VIEW`.
#[derive(Debug, Clone, PartialEq)]
pub struct CreateView {
    /// The view's name.
    pub name: String,
    /// `IF NOT EXISTS` was given.
    pub if_not_exists: bool,
    /// `CREATE TEMPORARY VIEW`: the view stays in the session; otherwise a
    /// cluster keeps it in its catalog.
    pub temporary: bool,
    /// `v (a, b)`: names for the query's columns, in order; empty when not given.
    pub columns: Vec<String>,
    /// The query text.
    pub query: String,
    /// Where the query starts in the statement.
    pub query_start: Position,
}

/// After `CREATE [TEMPORARY] VIEW`.
pub(super) fn parse_create_view(c: &mut Cursor<'_>, temporary: bool) -> Result<CreateView> {
    let if_not_exists = c.eat_keywords(&[Keyword::IF, Keyword::NOT, Keyword::EXISTS]);
    let name = c.name("a view name")?;
    let mut columns = Vec::new();
    if matches!(c.peek().map(|t| &t.token), Some(Token::LParen)) {
        c.pos += 1;
        loop {
            columns.push(c.name("a column name")?);
            match c.peek().map(|t| &t.token) {
                Some(Token::Comma) => c.pos += 1,
                Some(Token::RParen) => {
                    c.pos += 1;
                    break;
                }
                _ => return Err(c.error("',' or ')' in the view's column list")),
            }
        }
    }
    if !c.eat_keyword(Keyword::AS) {
        return Err(c.error("AS and the view's query"));
    }
    let query_start = c
        .position()
        .filter(|_| c.peek().is_some())
        .ok_or_else(|| c.error("a query after AS"))?;
    Ok(CreateView {
        name,
        if_not_exists,
        temporary,
        columns,
        query: c.rest_text().to_string(),
        query_start,
    })
}

/// After `DROP [TEMPORARY] VIEW`.
pub(super) fn parse_drop_view(c: &mut Cursor<'_>) -> Result<Statement> {
    let if_exists = c.eat_keywords(&[Keyword::IF, Keyword::EXISTS]);
    let name = c.name("a view name")?;
    if c.peek().is_some() {
        return Err(c.error("end of DROP VIEW"));
    }
    Ok(Statement::DropView { name, if_exists })
}

#[cfg(test)]
mod tests {
    use crate::statement::{Statement, parse_statement};

    #[test]
    fn parses_create_and_drop_view() {
        let Statement::CreateView(v) = parse_statement(
            "CREATE TEMPORARY VIEW IF NOT EXISTS Big (a, \"B\") AS\n  SELECT x, y FROM t",
        )
        .unwrap() else {
            panic!("not a view")
        };
        assert_eq!(v.name, "big");
        assert!(v.temporary && v.if_not_exists);
        assert_eq!(v.columns, ["a", "B"]);
        assert_eq!(v.query, "SELECT x, y FROM t");
        assert_eq!((v.query_start.line, v.query_start.column), (2, 3));
        assert_eq!(
            parse_statement("DROP TEMPORARY VIEW IF EXISTS big").unwrap(),
            Statement::DropView {
                name: "big".into(),
                if_exists: true
            }
        );
        let err = parse_statement("CREATE VIEW v SELECT 1").unwrap_err();
        assert!(err.to_string().contains("expected AS"), "{err}");
    }
}
