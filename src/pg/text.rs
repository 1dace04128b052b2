//! Token-level edits of SQL text: replace tokens in place, keeping the rest
//! of the text (and so the positions errors point at) as the client sent it.

use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::tokenizer::{Location, Token, TokenWithSpan, Tokenizer};

/// The tokens of `sql` with their spans; `None` when it does not tokenize
/// (the engine reports that error with its position).
pub(crate) fn tokens(sql: &str) -> Option<Vec<TokenWithSpan>> {
    Tokenizer::new(&PostgreSqlDialect {}, sql)
        .tokenize_with_location()
        .ok()
}

/// The byte offset of a 1-based line and column.
fn offset(sql: &str, at: Location) -> usize {
    let mut line_start = 0;
    for (n, line) in sql.split_inclusive('\n').enumerate() {
        if n as u64 + 1 == at.line {
            return line_start
                + line
                    .char_indices()
                    .nth((at.column.max(1) - 1) as usize)
                    .map_or(line.len(), |(i, _)| i);
        }
        line_start += line.len();
    }
    sql.len()
}

/// `sql` with the text of each token span replaced, left to right.
pub(crate) fn splice(sql: &str, edits: &[(Location, Location, String)]) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut done = 0;
    for (start, end, text) in edits {
        let (s, e) = (offset(sql, *start), offset(sql, *end));
        if s < done || e < s {
            continue;
        }
        out.push_str(&sql[done..s]);
        out.push_str(text);
        done = e;
    }
    out.push_str(&sql[done..]);
    out
}

/// The `$n` placeholders of `sql`: for each, its span and `n`.
pub(crate) fn placeholders(tokens: &[TokenWithSpan]) -> Vec<(Location, Location, usize)> {
    tokens
        .iter()
        .filter_map(|t| match &t.token {
            Token::Placeholder(p) => p
                .strip_prefix('$')
                .and_then(|n| n.parse::<usize>().ok())
                .filter(|n| *n > 0)
                .map(|n| (t.span.start, t.span.end, n)),
            _ => None,
        })
        .collect()
}

/// `sql` without its `pg_catalog.` qualifiers: Postgres finds its catalog
/// objects unqualified too, and so does the catalog context.
pub(crate) fn strip_pg_catalog(sql: &str) -> String {
    let Some(tokens) = tokens(sql) else {
        return sql.to_string();
    };
    let mut edits = Vec::new();
    for (i, t) in tokens.iter().enumerate() {
        if let Token::Word(w) = &t.token
            && w.value.eq_ignore_ascii_case("pg_catalog")
            && matches!(tokens.get(i + 1).map(|t| &t.token), Some(Token::Period))
        {
            let end = tokens[i + 1].span.end;
            edits.push((t.span.start, end, String::new()));
        }
    }
    splice(sql, &edits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_replaced_in_place() {
        let sql = "SELECT 'é$1', x\nFROM t WHERE a = $1 AND b = $2";
        let tokens = tokens(sql).unwrap();
        let edits: Vec<_> = placeholders(&tokens)
            .into_iter()
            .map(|(s, e, n)| (s, e, format!("<{n}>")))
            .collect();
        assert_eq!(
            splice(sql, &edits),
            "SELECT 'é$1', x\nFROM t WHERE a = <1> AND b = <2>"
        );
    }

    #[test]
    fn pg_catalog_qualifiers_go() {
        assert_eq!(
            strip_pg_catalog("SELECT pg_catalog.version() FROM pg_catalog.pg_class"),
            "SELECT version() FROM pg_class"
        );
    }
}
