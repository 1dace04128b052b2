//! Parsing Flink's `CREATE TABLE`: columns, computed columns,
//! `WATERMARK FOR`, `PRIMARY KEY … NOT ENFORCED` and `WITH (…)` options.

use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::Token;

use super::cursor::{Cursor, option_atom};
use super::{ColumnDef, CreateTable};
use crate::error::{Position, Result, SqlError};

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
    let mut watermark = None;
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
            parse_element(c, to, &mut columns, &mut watermark)?;
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
    Ok(CreateTable {
        name,
        if_not_exists,
        temporary: false,
        columns,
        watermark,
        option_positions: options.iter().map(|(_, _, at)| *at).collect(),
        options: options.into_iter().map(|(k, v, _)| (k, v)).collect(),
        with_position,
    })
}

fn parse_element(
    c: &mut Cursor<'_>,
    end: usize,
    columns: &mut Vec<ColumnDef>,
    watermark: &mut Option<(String, String)>,
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
        *watermark = Some((column, text_until_end(c)));
        return Ok(());
    }
    if c.peek_keyword(Keyword::PRIMARY) || c.peek_keyword(Keyword::CONSTRAINT) {
        // Keys are informational in an append-only stream, as Flink's NOT ENFORCED.
        return Ok(());
    }
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
    for i in type_start..end {
        if let Token::Word(w) = &c.tokens[i].token {
            if w.keyword == Keyword::NOT
                && matches!(c.tokens.get(i + 1).map(|t| &t.token), Some(Token::Word(n)) if n.keyword == Keyword::NULL)
            {
                nullable = false;
                type_end = type_end.min(i);
            } else if w.keyword == Keyword::NULL || w.keyword == Keyword::PRIMARY {
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
