//! Parsing Flink's `CREATE TABLE`: columns, computed columns,
//! `WATERMARK FOR`, `PRIMARY KEY … NOT ENFORCED` and `WITH (…)` options.

use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::Token;

use super::cursor::{Cursor, option_atom};
use super::{ColumnDef, CreateTable, PrimaryKey};
use crate::error::{Position, Result, SqlError};

/// What the elements of the column list declared besides columns.
#[derive(Default)]
struct Constraints {
    watermark: Option<(String, String)>,
    /// The primary key, and where it is declared.
    primary_key: Option<(PrimaryKey, Option<Position>)>,
}

/// The `(key = value, …)` of `WITH`, each key with where it is written.
fn parse_options(c: &mut Cursor<'_>) -> Result<Vec<(String, String, Position)>> {
    c.expect(Token::LParen, "'(' after WITH")?;
    let mut options = Vec::new();
    if matches!(c.peek().map(|t| &t.token), Some(Token::RParen)) {
        c.pos += 1;
        return Ok(options);
    }
    loop {
        let what = "an option key such as 'connector'";
        let Some(at) = c.peek().map(|t| Position {
            line: t.span.start.line,
            column: t.span.start.column,
        }) else {
            return Err(c.error(what));
        };
        let key = option_atom(c, what)?;
        c.expect(Token::Eq, "'=' after the option key")?;
        let value = option_atom(c, "a quoted option value")?;
        options.push((key, value, at));
        match c.peek().map(|t| &t.token) {
            Some(Token::Comma) => c.pos += 1,
            Some(Token::RParen) => {
                c.pos += 1;
                return Ok(options);
            }
            _ => return Err(c.error("',' or ')' in the WITH options")),
        }
    }
}

pub(super) fn parse_create_table(c: &mut Cursor<'_>) -> Result<CreateTable> {
    let if_not_exists = c.eat_keywords(&[Keyword::IF, Keyword::NOT, Keyword::EXISTS]);
    let name = c.name("a table name")?;
    let mut columns = Vec::new();
    let mut constraints = Constraints::default();
    if matches!(c.peek().map(|t| &t.token), Some(Token::LParen)) {
        c.pos += 1;
        let close = c.matching_paren()?;
        // Split the element list at top-level commas.
        let mut elements: Vec<(usize, usize)> = Vec::new();
        let (mut depth, mut begin) = (0, c.pos);
        for i in c.pos..close {
            match c.tokens[i].token {
                Token::LParen => depth += 1,
                Token::RParen => depth -= 1,
                Token::Comma if depth == 0 => {
                    elements.push((begin, i));
                    begin = i + 1;
                }
                _ => {}
            }
        }
        elements.push((begin, close));
        for (from, to) in elements {
            if from == to {
                c.pos = from;
                return Err(c.error("a column definition"));
            }
            c.pos = from;
            parse_element(c, to, &mut columns, &mut constraints)?;
        }
        c.pos = close + 1;
    }
    let with_position = c
        .peek_keyword(Keyword::WITH)
        .then(|| c.position())
        .flatten();
    let options = if c.eat_keyword(Keyword::WITH) {
        parse_options(c)?
    } else {
        Vec::new()
    };
    if c.peek().is_some() {
        return Err(c.error("end of CREATE TABLE"));
    }
    let primary_key = match constraints.primary_key {
        Some((key, _)) => Some(check_primary_key(key, &columns)?),
        None => None,
    };
    Ok(CreateTable {
        name,
        if_not_exists,
        temporary: false,
        columns,
        watermark: constraints.watermark,
        primary_key,
        option_positions: options.iter().map(|(_, _, at)| *at).collect(),
        options: options.into_iter().map(|(k, v, _)| (k, v)).collect(),
        with_position,
    })
}

/// Checks the key's columns against the table's: each a physical column,
/// once. Key columns become NOT NULL, as in Flink.
fn check_primary_key(key: PrimaryKey, columns: &[ColumnDef]) -> Result<PrimaryKey> {
    for (i, (column, at)) in key.columns.iter().zip(&key.positions).enumerate() {
        if key.columns[..i].contains(column) {
            return Err(SqlError::Plan {
                message: format!("PRIMARY KEY names column '{column}' twice"),
                position: Some(*at),
            });
        }
        let declared = columns.iter().find(|c| match c {
            ColumnDef::Physical { name, .. }
            | ColumnDef::Metadata { name, .. }
            | ColumnDef::Computed { name, .. } => name == column,
        });
        match declared {
            Some(ColumnDef::Physical { .. }) => {}
            Some(_) => {
                return Err(SqlError::Plan {
                    message: format!(
                        "PRIMARY KEY column '{column}' is a computed or METADATA column; \
                         a primary key is declared on physical columns"
                    ),
                    position: Some(*at),
                });
            }
            None => {
                let names = columns.iter().filter_map(|c| match c {
                    ColumnDef::Physical { name, .. } => Some(name.as_str()),
                    _ => None,
                });
                let hint = weir_engine::suggest::closest(column, names)
                    .map(|s| format!(" (did you mean '{s}'?)"))
                    .unwrap_or_default();
                return Err(SqlError::UnknownColumn {
                    message: format!(
                        "PRIMARY KEY column '{column}' is not a column of the table{hint}"
                    ),
                    position: Some(*at),
                });
            }
        }
    }
    Ok(key)
}

/// `[CONSTRAINT name] PRIMARY KEY [(a, b)] NOT ENFORCED` up to token `end`;
/// `column` is the column of the column form, which has no list.
fn parse_primary_key(
    c: &mut Cursor<'_>,
    end: usize,
    column: Option<(&str, Option<Position>)>,
    constraints: &mut Constraints,
) -> Result<()> {
    let at = c.position();
    let name = if c.eat_keyword(Keyword::CONSTRAINT) {
        Some(c.name("a constraint name after CONSTRAINT")?)
    } else {
        None
    };
    if !c.eat_keyword(Keyword::PRIMARY) {
        return Err(c.error("PRIMARY KEY (Weir knows no other constraint)"));
    }
    if !c.eat_keyword(Keyword::KEY) {
        return Err(c.error("KEY after PRIMARY"));
    }
    let (columns, positions) = match column {
        Some((name, position)) => (
            vec![name.to_string()],
            vec![position.or(at).unwrap_or(Position { line: 1, column: 1 })],
        ),
        None => {
            c.expect(Token::LParen, "'(' and the key's columns after PRIMARY KEY")?;
            let (mut columns, mut positions) = (Vec::new(), Vec::new());
            loop {
                let position = c.position();
                columns.push(c.name("a column name in PRIMARY KEY (…)")?);
                positions.push(position.unwrap_or(Position { line: 1, column: 1 }));
                match c.peek().map(|t| &t.token) {
                    Some(Token::Comma) => c.pos += 1,
                    Some(Token::RParen) => {
                        c.pos += 1;
                        break;
                    }
                    _ => return Err(c.error("',' or ')' in PRIMARY KEY (…)")),
                }
            }
            (columns, positions)
        }
    };
    let enforced_at = c.position();
    let not_enforced = c.eat_keyword(Keyword::NOT) && c.eat_word("enforced");
    if !not_enforced || c.pos < end {
        if not_enforced {
            return Err(c.error("',' or ')' after NOT ENFORCED"));
        }
        return Err(SqlError::Parse {
            message: "PRIMARY KEY must be declared NOT ENFORCED: as Flink, Weir does not own \
                      the data and cannot check the key, so write PRIMARY KEY (…) NOT ENFORCED"
                .into(),
            position: enforced_at,
        });
    }
    if let Some((_, first)) = &constraints.primary_key {
        return Err(SqlError::Parse {
            message: format!(
                "a table has one PRIMARY KEY, and one is already declared{}",
                first.map(|p| format!(" at {p}")).unwrap_or_default()
            ),
            position: at,
        });
    }
    constraints.primary_key = Some((
        PrimaryKey {
            name,
            columns,
            positions,
        },
        at,
    ));
    Ok(())
}

fn parse_element(
    c: &mut Cursor<'_>,
    end: usize,
    columns: &mut Vec<ColumnDef>,
    constraints: &mut Constraints,
) -> Result<()> {
    let text_until_end = |c: &Cursor<'_>| c.sql[c.offset(c.pos)..c.offset(end)].trim().to_string();
    if c.eat_word("watermark") {
        if !c.eat_keyword(Keyword::FOR) {
            return Err(c.error("FOR after WATERMARK"));
        }
        let column = c.name("the event-time column after WATERMARK FOR")?;
        if !c.eat_keyword(Keyword::AS) {
            return Err(c.error("AS after the WATERMARK FOR column"));
        }
        if c.pos >= end {
            return Err(c.error("a watermark expression"));
        }
        constraints.watermark = Some((column, text_until_end(c)));
        return Ok(());
    }
    if c.peek_keyword(Keyword::PRIMARY) || c.peek_keyword(Keyword::CONSTRAINT) {
        return parse_primary_key(c, end, None, constraints);
    }
    let name_at = c.position();
    let name = c.name("a column name")?;
    if c.eat_keyword(Keyword::AS) {
        if c.pos >= end {
            return Err(c.error("an expression for the computed column"));
        }
        columns.push(ColumnDef::Computed {
            name,
            expr: text_until_end(c),
        });
        return Ok(());
    }
    let type_start = c.pos;
    let mut nullable = true;
    let mut type_end = end;
    let mut metadata_at = None;
    let mut key_at = None;
    for i in type_start..end {
        if let Token::Word(w) = &c.tokens[i].token {
            if (w.keyword == Keyword::PRIMARY || w.keyword == Keyword::CONSTRAINT)
                && key_at.is_none()
            {
                key_at = Some(i);
                type_end = type_end.min(i);
            } else if key_at.is_some() {
                // NOT ENFORCED is not NOT NULL.
            } else if w.keyword == Keyword::NOT
                && matches!(c.tokens.get(i + 1).map(|t| &t.token), Some(Token::Word(n)) if n.keyword == Keyword::NULL)
            {
                nullable = false;
                type_end = type_end.min(i);
            } else if w.keyword == Keyword::NULL {
                type_end = type_end.min(i);
            } else if w.keyword == Keyword::METADATA {
                metadata_at = Some(i);
                type_end = type_end.min(i);
                break;
            }
        }
    }
    if type_start >= type_end {
        return Err(c.error(&format!("a type for column '{name}'")));
    }
    // The text runs to the next token: leave out the white space before it.
    let type_text = c.sql[c.offset(type_start)..c.offset(type_end)].trim();
    c.pos = type_start;
    let data_type = crate::types::parse_type(type_text).map_err(|m| SqlError::Parse {
        message: format!("column '{name}': {m}"),
        position: c.position(),
    })?;
    if let Some(at) = key_at {
        if metadata_at.is_some() {
            return Err(SqlError::Plan {
                message: format!(
                    "PRIMARY KEY column '{name}' is a METADATA column; a primary key is declared on physical columns"
                ),
                position: name_at,
            });
        }
        c.pos = at;
        parse_primary_key(c, end, Some((&name, name_at)), constraints)?;
        c.pos = type_start;
    }
    if let Some(at) = metadata_at {
        // `METADATA [FROM 'key'] [VIRTUAL]`, as in Flink.
        c.pos = at + 1;
        let key = if c.eat_keyword(Keyword::FROM) {
            match c.peek().map(|t| t.token.clone()) {
                Some(Token::SingleQuotedString(k)) => {
                    c.pos += 1;
                    Some(k)
                }
                _ => return Err(c.error("the metadata key as a quoted string after FROM")),
            }
        } else {
            None
        };
        let is_virtual = c.eat_word("virtual");
        if c.pos < end {
            return Err(c.error("',' or ')' after the METADATA column"));
        }
        columns.push(ColumnDef::Metadata {
            key: key.unwrap_or_else(|| name.clone()),
            name,
            data_type,
            nullable,
            is_virtual,
        });
        return Ok(());
    }
    columns.push(ColumnDef::Physical {
        name,
        data_type,
        nullable,
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::{Statement, parse_statement};
    use super::*;

    fn create(sql: &str) -> Result<CreateTable> {
        match parse_statement(sql)? {
            Statement::CreateTable(c) => Ok(c),
            other => panic!("not a CREATE TABLE: {other:?}"),
        }
    }

    fn key_of(sql: &str) -> Vec<String> {
        create(sql)
            .unwrap()
            .primary_key
            .map(|k| k.columns)
            .unwrap_or_default()
    }

    #[test]
    fn primary_keys_in_every_form() {
        assert_eq!(
            key_of(
                "CREATE TABLE t (a BIGINT, b STRING, v BIGINT, PRIMARY KEY (a, b) NOT ENFORCED)"
            ),
            vec!["a", "b"]
        );
        let named = create(
            "CREATE TABLE t (a BIGINT, v BIGINT, CONSTRAINT pk PRIMARY KEY (a) NOT ENFORCED)",
        )
        .unwrap();
        let key = named.primary_key.unwrap();
        assert_eq!(
            (key.name.as_deref(), key.columns),
            (Some("pk"), vec!["a".to_string()])
        );
        assert_eq!(
            key_of("CREATE TABLE t (id BIGINT PRIMARY KEY NOT ENFORCED, v BIGINT)"),
            vec!["id"]
        );
        let column_form =
            create("CREATE TABLE t (id BIGINT NOT NULL PRIMARY KEY NOT ENFORCED, v STRING)")
                .unwrap();
        assert_eq!(
            column_form.columns[0],
            ColumnDef::Physical {
                name: "id".into(),
                data_type: arrow::datatypes::DataType::Int64,
                nullable: false,
            }
        );
        assert_eq!(column_form.columns.len(), 2);
        assert!(key_of("CREATE TABLE t (a BIGINT)").is_empty());
    }

    #[test]
    fn primary_key_errors_say_where_and_what() {
        let error = |sql: &str| create(sql).unwrap_err().to_string();
        let enforced = error("CREATE TABLE t (a BIGINT, PRIMARY KEY (a))");
        assert!(
            enforced.contains("must be declared NOT ENFORCED") && enforced.contains("column 42"),
            "{enforced}"
        );
        let enforced = error("CREATE TABLE t (a BIGINT PRIMARY KEY ENFORCED)");
        assert!(enforced.contains("NOT ENFORCED"), "{enforced}");
        let unknown = error("CREATE TABLE t (amount BIGINT, PRIMARY KEY (amuont) NOT ENFORCED)");
        assert!(
            unknown.contains("line 1, column 45")
                && unknown.contains("PRIMARY KEY column 'amuont' is not a column of the table")
                && unknown.contains("did you mean 'amount'?"),
            "{unknown}"
        );
        let twice = error(
            "CREATE TABLE t (a BIGINT PRIMARY KEY NOT ENFORCED, b BIGINT, PRIMARY KEY (b) NOT ENFORCED)",
        );
        assert!(twice.contains("one PRIMARY KEY"), "{twice}");
        let computed = error("CREATE TABLE t (a BIGINT, b AS a + 1, PRIMARY KEY (b) NOT ENFORCED)");
        assert!(computed.contains("physical columns"), "{computed}");
        let repeated = error("CREATE TABLE t (a BIGINT, PRIMARY KEY (a, a) NOT ENFORCED)");
        assert!(repeated.contains("twice"), "{repeated}");
        let other = error("CREATE TABLE t (a BIGINT, CONSTRAINT u UNIQUE (a))");
        assert!(other.contains("PRIMARY KEY"), "{other}");
    }
}
