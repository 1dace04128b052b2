//! The server's own errors, and Weir's SQL errors as Postgres
//! `ErrorResponse`s: a SQLSTATE, the message, the cursor position in the
//! query text and a hint where Weir has a suggestion.

use pgwire::error::{ErrorInfo, PgWireError};
use weir_engine::ErrorDomain;
use weir_sql::{Position, SqlError};

/// Why the Postgres server stopped.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// The listening socket keeps failing (external).
    #[error("cannot accept postgres connections: {0}")]
    Accept(#[source] std::io::Error),
}

/// An error for the client (boxed: `ErrorInfo` is large).
pub(crate) type Failure = Box<ErrorInfo>;

/// An `ErrorResponse` with `code` and `message`.
pub(crate) fn error_info(code: &str, message: impl Into<String>) -> Failure {
    Box::new(ErrorInfo::new("ERROR".into(), code.into(), message.into()))
}

/// The error as a pgwire error the client receives.
pub(crate) fn user(info: Failure) -> PgWireError {
    PgWireError::UserError(info)
}

/// The SQLSTATE of a Weir error.
fn sqlstate(error: &SqlError) -> &'static str {
    match error {
        SqlError::Parse { .. } => "42601",
        SqlError::UnknownTable { .. } => "42P01",
        SqlError::UnknownColumn { .. } => "42703",
        SqlError::TableExists { .. } | SqlError::ViewExists { .. } => "42P07",
        SqlError::UnknownView { .. } => "42P01",
        // Postgres' "invalid object definition".
        SqlError::InvalidView { .. } => "42P17",
        SqlError::Plan { .. } => "42000",
        SqlError::Unsupported { .. } => "0A000",
        SqlError::Config(_) => "22023",
        SqlError::BadOption { .. } => "22023",
        SqlError::Engine(e) => match e.domain() {
            ErrorDomain::User => "22000",
            ErrorDomain::Internal => "XX000",
            _ => "58000",
        },
        SqlError::Internal(_) => "XX000",
    }
}

/// The 1-based character index of `position` in `sql`, as Postgres counts
/// its error cursor.
pub(crate) fn char_index(sql: &str, position: Position) -> usize {
    let mut index = 0;
    for (n, line) in sql.split('\n').enumerate() {
        if n as u64 + 1 == position.line {
            let column = (position.column.max(1) - 1) as usize;
            return index + column.min(line.chars().count()) + 1;
        }
        index += line.chars().count() + 1;
    }
    index.max(1)
}

/// A Weir error about `sql` (the whole query string the client sent) as
/// an `ErrorResponse`.
pub(crate) fn sql_error(error: &SqlError, sql: &str) -> Failure {
    let mut message = error.to_string();
    if let Some(p) = error.position() {
        // The client draws the spot from the position field.
        message = message.replacen(&format!(" at {p}"), "", 1);
    }
    let mut info = error_info(sqlstate(error), message.clone());
    if let Some(p) = error.position() {
        info.position = Some(char_index(sql, p).to_string());
    }
    if let Some(start) = message.find("(did you mean ") {
        let hint = message[start + 1..].trim_end_matches([')', '.']);
        info.hint = Some(format!("{}{}", &hint[..1].to_uppercase(), &hint[1..]));
    }
    info
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_count_characters_across_lines() {
        let sql = "SELECT *\nFROM tabel";
        assert_eq!(char_index(sql, Position { line: 2, column: 6 }), 15);
        assert_eq!(char_index(sql, Position { line: 1, column: 1 }), 1);
    }

    #[test]
    fn codes_and_hints() {
        let e = SqlError::UnknownTable {
            name: "tabel".into(),
            suggestion: Some("table1".into()),
            position: None,
        };
        let info = sql_error(&e, "SELECT * FROM tabel");
        assert_eq!(info.code, "42P01");
        assert_eq!(info.hint.as_deref(), Some("Did you mean 'table1'?"));
        let e = SqlError::Parse {
            message: "Expected: an expression".into(),
            position: Some(Position { line: 1, column: 8 }),
        };
        let info = sql_error(&e, "SELECT FROM");
        assert_eq!(info.code, "42601");
        assert_eq!(info.message, "SQL parse error: Expected: an expression");
        assert_eq!(info.position.as_deref(), Some("8"));
    }
}
