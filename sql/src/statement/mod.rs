//! Splitting a script into statements and parsing Weir's own statements:
//! `CREATE TABLE` (with Flink's computed columns, `WATERMARK FOR` and
//! `WITH (…)` options), `CREATE VIEW`, `SET`, `INSERT INTO`, `EXPLAIN`,
//! `SHOW TABLES`, `SHOW VIEWS`, `DESCRIBE`, `DROP TABLE`, `DROP VIEW`.
//! Queries are handed to DataFusion as text.

use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan, Tokenizer, Word};

use crate::error::{Position, Result, SqlError};

mod create_table;
mod cursor;
mod view;

use create_table::parse_create_table;
use cursor::{Cursor, option_atom};
pub use view::CreateView;
use view::{parse_create_view, parse_drop_view};

/// One statement of a script, with where it starts.
#[derive(Debug, Clone, PartialEq)]
pub struct StatementText {
    /// The statement without its terminating `;`.
    pub text: String,
    /// Where it starts in the script.
    pub start: Position,
}

pub(crate) fn tokenize(sql: &str) -> Result<Vec<TokenWithSpan>> {
    let dialect = GenericDialect {};
    Tokenizer::new(&dialect, sql)
        .tokenize_with_location()
        .map_err(|e| SqlError::Parse {
            message: e.message.clone(),
            position: Some(Position {
                line: e.location.line,
                column: e.location.column,
            }),
        })
}

pub(crate) fn is_trivia(t: &Token) -> bool {
    matches!(t, Token::Whitespace(_))
}

/// Byte offset of a 1-based line/column in `text`.
pub(crate) fn offset_of(text: &str, line: u64, column: u64) -> usize {
    let mut offset = 0;
    for (i, l) in text.split_inclusive('\n').enumerate() {
        if i as u64 + 1 == line {
            return offset
                + l.char_indices()
                    .nth(column.saturating_sub(1) as usize)
                    .map_or(l.len(), |(b, _)| b);
        }
        offset += l.len();
    }
    text.len()
}

/// Splits a script at top-level semicolons, dropping empty statements and comments-only ones.
pub fn split_statements(script: &str) -> Result<Vec<StatementText>> {
    let tokens = tokenize(script)?;
    let mut out = Vec::new();
    let mut start: Option<Position> = None;
    let mut push = |start: &mut Option<Position>, end: usize| {
        if let Some(s) = start.take() {
            let begin = offset_of(script, s.line, s.column);
            out.push(StatementText {
                text: script[begin..end].trim_end().to_string(),
                start: s,
            });
        }
    };
    for t in &tokens {
        match &t.token {
            Token::SemiColon => {
                let end = offset_of(script, t.span.start.line, t.span.start.column);
                push(&mut start, end);
            }
            tok if is_trivia(tok) => {}
            Token::EOF => {}
            _ => {
                if start.is_none() {
                    start = Some(Position {
                        line: t.span.start.line,
                        column: t.span.start.column,
                    });
                }
            }
        }
    }
    push(&mut start, script.len());
    Ok(out)
}

/// A column of `CREATE TABLE`.
#[derive(Debug, Clone, PartialEq)]
pub enum ColumnDef {
    /// A column the connector reads or writes.
    Physical {
        /// Name.
        name: String,
        /// SQL type text.
        data_type: arrow::datatypes::DataType,
        /// Whether NULL is allowed.
        nullable: bool,
    },
    /// `name TYPE METADATA [FROM 'key'] [VIRTUAL]`: filled (or written) by
    /// the connector from the record's metadata, e.g. a Kafka record's timestamp.
    Metadata {
        /// Name.
        name: String,
        /// SQL type.
        data_type: arrow::datatypes::DataType,
        /// Whether NULL is allowed.
        nullable: bool,
        /// The connector's metadata key (the column name when FROM is absent).
        key: String,
        /// `VIRTUAL`: read-only, left out when writing.
        is_virtual: bool,
    },
    /// `name AS expr`: computed from other columns after reading.
    Computed {
        /// Name.
        name: String,
        /// The expression text.
        expr: String,
    },
}

/// `PRIMARY KEY (…) NOT ENFORCED` of `CREATE TABLE` (the table constraint,
/// or the column form `id BIGINT PRIMARY KEY NOT ENFORCED`).
#[derive(Debug, Clone, PartialEq)]
pub struct PrimaryKey {
    /// `CONSTRAINT name`, when given.
    pub name: Option<String>,
    /// The key's columns, in key order.
    pub columns: Vec<String>,
    /// Where each column is named, in the order of `columns`.
    pub positions: Vec<Position>,
}

/// A parsed `CREATE TABLE`.
#[derive(Debug, Clone, PartialEq)]
pub struct CreateTable {
    /// Table name.
    pub name: String,
    /// `IF NOT EXISTS` was given.
    pub if_not_exists: bool,
    /// `CREATE TEMPORARY TABLE`: the table stays in the session (Flink's
    /// temporary tables); otherwise a cluster keeps it in its catalog.
    pub temporary: bool,
    /// Columns in order; empty when the DDL declared none (a sink taking the query's schema).
    pub columns: Vec<ColumnDef>,
    /// `WATERMARK FOR column AS expr`.
    pub watermark: Option<(String, String)>,
    /// `PRIMARY KEY (…) NOT ENFORCED`, checked against the columns.
    pub primary_key: Option<PrimaryKey>,
    /// `WITH (…)` options.
    pub options: Vec<(String, String)>,
    /// Where each option's key is written, in the order of `options`.
    pub option_positions: Vec<Position>,
    /// Where `WITH` is written, when the statement has it.
    pub with_position: Option<Position>,
}

impl CreateTable {
    /// Where the option `key` is written, for errors about it: its key, or
    /// `WITH` when the option is missing.
    pub fn option_position(&self, key: &str) -> Option<Position> {
        self.options
            .iter()
            .zip(&self.option_positions)
            .find(|((k, _), _)| k == key)
            .map(|(_, p)| *p)
            .or(self.with_position)
    }
}

/// A statement as Weir understands it.
#[derive(Debug, Clone, PartialEq)]
pub enum Statement {
    /// `CREATE TABLE`.
    CreateTable(CreateTable),
    /// `DROP TABLE [IF EXISTS] name`.
    DropTable {
        /// Table.
        name: String,
        /// `IF EXISTS` was given.
        if_exists: bool,
    },
    /// `CREATE [TEMPORARY] VIEW`.
    CreateView(CreateView),
    /// `DROP [TEMPORARY] VIEW [IF EXISTS] name`.
    DropView {
        /// View.
        name: String,
        /// `IF EXISTS` was given.
        if_exists: bool,
    },
    /// `SHOW VIEWS`.
    ShowViews,
    /// `SHOW CREATE VIEW name`.
    ShowCreateView(String),
    /// `SET 'key' = 'value'`; `SET` alone lists the settings.
    Set(Option<(String, String)>),
    /// `RESET 'key'`.
    Reset(String),
    /// `INSERT INTO table <query>`.
    Insert {
        /// Target table.
        table: String,
        /// The query text.
        query: String,
        /// Where the query starts in the statement.
        query_start: Position,
    },
    /// A query (`SELECT`, `WITH`, `VALUES`).
    Query(String),
    /// `EXPLAIN [(FORMAT DOT)] statement`.
    Explain {
        /// Render as Graphviz DOT.
        dot: bool,
        /// The explained statement.
        statement: Box<Statement>,
    },
    /// `SHOW TABLES`: tables and views, as Flink lists them.
    ShowTables,
    /// `DESCRIBE table` / `DESC table` (also a view).
    Describe(String),
    /// `SHOW JOBS`.
    ShowJobs,
    /// `STOP JOB 'id'` (graceful, Flink's statement) or `CANCEL JOB 'id'`.
    StopJob {
        /// The job's id.
        id: String,
        /// Cancel at once instead of stopping gracefully.
        cancel: bool,
    },
}

/// Parses one statement (without its `;`).
pub fn parse_statement(sql: &str) -> Result<Statement> {
    let mut c = Cursor::new(sql)?;
    if c.peek().is_none() {
        return Err(SqlError::Parse {
            message: "empty statement".into(),
            position: None,
        });
    }
    if c.eat_keyword(Keyword::EXPLAIN) {
        let mut dot = false;
        if matches!(c.peek().map(|t| &t.token), Some(Token::LParen)) {
            c.pos += 1;
            if !c.eat_keyword(Keyword::FORMAT) {
                return Err(c.error("FORMAT in EXPLAIN (FORMAT DOT|TEXT)"));
            }
            let format = c.name("DOT or TEXT")?;
            dot = match format.as_str() {
                "dot" => true,
                "text" => false,
                _ => {
                    c.pos -= 1;
                    return Err(c.error("DOT or TEXT"));
                }
            };
            c.expect(Token::RParen, "')'")?;
        }
        c.eat_keywords(&[Keyword::PLAN, Keyword::FOR]);
        let inner = c.rest_text();
        return Ok(Statement::Explain {
            dot,
            statement: Box::new(parse_statement(inner)?),
        });
    }
    if c.eat_keyword(Keyword::CREATE) {
        let temporary = c.eat_keyword(Keyword::TEMPORARY);
        if c.eat_keyword(Keyword::VIEW) {
            return Ok(Statement::CreateView(parse_create_view(&mut c, temporary)?));
        }
        if !c.eat_keyword(Keyword::TABLE) {
            return Err(c.error("TABLE or VIEW after CREATE"));
        }
        let mut create = parse_create_table(&mut c)?;
        create.temporary = temporary;
        return Ok(Statement::CreateTable(create));
    }
    if c.eat_keyword(Keyword::DROP) {
        let temporary = c.eat_keyword(Keyword::TEMPORARY);
        if c.eat_keyword(Keyword::VIEW) {
            return parse_drop_view(&mut c);
        }
        if temporary || !c.eat_keyword(Keyword::TABLE) {
            return Err(c.error(if temporary {
                "VIEW after DROP TEMPORARY"
            } else {
                "TABLE or VIEW after DROP"
            }));
        }
        let if_exists = c.eat_keywords(&[Keyword::IF, Keyword::EXISTS]);
        let name = c.name("a table name")?;
        return Ok(Statement::DropTable { name, if_exists });
    }
    if c.eat_keyword(Keyword::SET) {
        if c.peek().is_none() {
            return Ok(Statement::Set(None));
        }
        let key = option_atom(&mut c, "a quoted configuration key")?;
        if !matches!(c.peek().map(|t| &t.token), Some(Token::Eq)) && !c.eat_keyword(Keyword::TO) {
            return Err(c.error("'=' after the configuration key"));
        }
        if matches!(c.peek().map(|t| &t.token), Some(Token::Eq)) {
            c.pos += 1;
        }
        let value = option_atom(&mut c, "a quoted value")?;
        if c.peek().is_some() {
            return Err(c.error("end of SET"));
        }
        return Ok(Statement::Set(Some((key, value))));
    }
    if c.eat_keyword(Keyword::RESET) {
        return Ok(Statement::Reset(option_atom(
            &mut c,
            "a configuration key",
        )?));
    }
    if c.eat_keyword(Keyword::INSERT) {
        if !c.eat_keyword(Keyword::INTO) {
            return Err(c.error("INTO after INSERT"));
        }
        let table = c.name("a table name")?;
        if matches!(c.peek().map(|t| &t.token), Some(Token::LParen)) {
            return Err(SqlError::Unsupported {
                message: "an INSERT column list is not supported yet; select the columns in the sink's order".into(),
                position: c.position(),
                construct: None,
            });
        }
        let query_start = c
            .position()
            .ok_or_else(|| c.error("a query after INSERT INTO table"))?;
        return Ok(Statement::Insert {
            table,
            query: c.rest_text().to_string(),
            query_start,
        });
    }
    if c.eat_keyword(Keyword::SHOW) {
        if c.eat_keyword(Keyword::TABLES) {
            return Ok(Statement::ShowTables);
        }
        if c.eat_word("views") {
            return Ok(Statement::ShowViews);
        }
        if c.eat_word("jobs") {
            return Ok(Statement::ShowJobs);
        }
        if c.eat_keyword(Keyword::CREATE) {
            if !c.eat_keyword(Keyword::VIEW) {
                return Err(c.error("VIEW after SHOW CREATE"));
            }
            return Ok(Statement::ShowCreateView(c.name("a view name")?));
        }
        return Err(c.error("TABLES, VIEWS, CREATE VIEW or JOBS after SHOW"));
    }
    let stop = c.eat_word("stop");
    if stop || c.eat_word("cancel") {
        if !c.eat_word("job") {
            return Err(c.error("JOB"));
        }
        let id = option_atom(&mut c, "a job id")?;
        if c.peek().is_some() {
            return Err(c.error("end of statement after the job id"));
        }
        return Ok(Statement::StopJob { id, cancel: !stop });
    }
    if c.eat_keyword(Keyword::DESCRIBE) || c.eat_keyword(Keyword::DESC) {
        return Ok(Statement::Describe(c.name("a table name")?));
    }
    if c.peek_keyword(Keyword::SELECT)
        || c.peek_keyword(Keyword::WITH)
        || c.peek_keyword(Keyword::VALUES)
        || matches!(c.peek().map(|t| &t.token), Some(Token::LParen))
    {
        return Ok(Statement::Query(sql.to_string()));
    }
    Err(c.error(
        "a statement: CREATE TABLE, CREATE VIEW, INSERT INTO, SELECT, SET, EXPLAIN, SHOW TABLES, \
         SHOW VIEWS, DESCRIBE, DROP TABLE, DROP VIEW, SHOW JOBS or STOP JOB",
    ))
}

/// Where a top-level keyword first appears in a statement, for error positions.
pub fn keyword_position(sql: &str, keyword: Keyword) -> Option<Position> {
    first_word(sql, |w| w.keyword == keyword)
}

/// Where an unquoted word (any case) first appears in a statement, for
/// error positions.
pub fn word_position(sql: &str, word: &str) -> Option<Position> {
    first_word(sql, |w| {
        w.quote_style.is_none() && w.value.eq_ignore_ascii_case(word)
    })
}

fn first_word(sql: &str, matches: impl Fn(&Word) -> bool) -> Option<Position> {
    let tokens = tokenize(sql).ok()?;
    tokens.iter().find_map(|t| match &t.token {
        Token::Word(w) if matches(w) => Some(Position {
            line: t.span.start.line,
            column: t.span.start.column,
        }),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{DataType, TimeUnit};

    #[test]
    fn splits_scripts_at_semicolons_outside_strings() {
        let s = split_statements("SET 'a' = 'x;y';\n-- comment\nSELECT 1;  \n").unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].text, "SET 'a' = 'x;y'");
        assert_eq!(s[1].start, Position { line: 3, column: 1 });
    }

    #[test]
    fn parses_flink_create_table() {
        let sql = "CREATE TABLE bids (id BIGINT NOT NULL, price DECIMAL(10, 2), ts AS TO_TIMESTAMP_LTZ(id, 3), \
                   WATERMARK FOR ts AS ts - INTERVAL '5' SECOND) WITH ('connector' = 'datagen', fields.id.kind = 'sequence', number-of-rows = '10')";
        let Statement::CreateTable(t) = parse_statement(sql).unwrap() else {
            panic!("not a create table")
        };
        assert_eq!(t.name, "bids");
        assert_eq!(
            t.columns[0],
            ColumnDef::Physical {
                name: "id".into(),
                data_type: DataType::Int64,
                nullable: false
            }
        );
        assert_eq!(
            t.columns[2],
            ColumnDef::Computed {
                name: "ts".into(),
                expr: "TO_TIMESTAMP_LTZ(id, 3)".into()
            }
        );
        assert_eq!(
            t.watermark,
            Some(("ts".into(), "ts - INTERVAL '5' SECOND".into()))
        );
        assert_eq!(t.options[1], ("fields.id.kind".into(), "sequence".into()));
        assert_eq!(t.options[2], ("number-of-rows".into(), "10".into()));
        let with = t.with_position.expect("WITH has a position");
        let connector = t
            .option_position("connector")
            .expect("the key has a position");
        assert_eq!(
            (connector.line, connector.column),
            (with.line, with.column + 6)
        );
        assert_eq!(t.option_position("scan.parallelism"), Some(with));
        let _ = TimeUnit::Millisecond;
    }

    #[test]
    fn reports_positions() {
        let err = parse_statement("CREATE TABLE t (a BIGINT) WITH ('x' 'y')").unwrap_err();
        assert_eq!(
            err.position(),
            Some(Position {
                line: 1,
                column: 37
            })
        );
    }
}
