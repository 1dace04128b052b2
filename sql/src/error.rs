//! The SQL layer's errors. Each says where in the statement the problem is
//! when that is known, and what the user can do about it.

use std::fmt;

use datafusion::common::SchemaError;
use datafusion::error::DataFusionError;
use datafusion::sql::sqlparser::keywords::Keyword;

use crate::messages::{self, Message};
use crate::view::UnusableView;
use crate::window_tvf::UnknownArgument;

/// Result alias for the SQL layer.
pub type Result<T, E = SqlError> = std::result::Result<T, E>;

/// A 1-based line and column in the statement text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// Line, from 1.
    pub line: u64,
    /// Column, from 1.
    pub column: u64,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}, column {}", self.line, self.column)
    }
}

/// The SQL construct an error is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Construct {
    /// A keyword: `ORDER` (of `ORDER BY`), `JOIN`, `OVER`.
    Keyword(Keyword),
    /// An unquoted word, in any case: `COLLATE`, `GROUPING`, `VALUES`.
    Word(String),
}

/// Errors from parsing, planning and lowering SQL.
#[derive(Debug, thiserror::Error)]
pub enum SqlError {
    /// The text is not valid SQL.
    #[error("SQL parse error{}: {message}", at(.position))]
    Parse {
        /// What is wrong.
        message: String,
        /// Where.
        position: Option<Position>,
    },
    /// Valid SQL that cannot be planned: unknown table or column, type errors…
    #[error("planning error{}: {message}", at(.position))]
    Plan {
        /// What is wrong, with a suggestion where one is close.
        message: String,
        /// Where.
        position: Option<Position>,
    },
    /// A column that no table in scope has.
    #[error("planning error{}: {message}", at(.position))]
    UnknownColumn {
        /// Which column, with a suggestion where one is close.
        message: String,
        /// Where.
        position: Option<Position>,
    },
    /// `CREATE TABLE` of a name already declared.
    #[error("planning error{}: table '{name}' already exists", at(.position))]
    TableExists {
        /// The table's name.
        name: String,
        /// Where.
        position: Option<Position>,
    },
    /// A table that is not declared (a name that does not resolve).
    #[error("planning error{}: table '{name}' not found{}", at(.position), did_you_mean(.suggestion))]
    UnknownTable {
        /// The name as written.
        name: String,
        /// A declared table whose name is close.
        suggestion: Option<String>,
        /// Where.
        position: Option<Position>,
    },
    /// `CREATE TABLE` or `CREATE VIEW` of a name a view has.
    #[error("planning error{}: view '{name}' already exists", at(.position))]
    ViewExists {
        /// The view's name.
        name: String,
        /// Where.
        position: Option<Position>,
    },
    /// A view that is not declared (`DROP VIEW`, `SHOW CREATE VIEW`).
    #[error("planning error{}: view '{name}' not found{}", at(.position), did_you_mean(.suggestion))]
    UnknownView {
        /// The name as written.
        name: String,
        /// A declared view whose name is close.
        suggestion: Option<String>,
        /// Where.
        position: Option<Position>,
    },
    /// A view whose query no longer plans: a table or view it reads was
    /// dropped or changed since it was created (as in Flink, the view stays
    /// and fails when used).
    #[error("planning error{}: view '{name}' cannot be used: its query no longer plans: {reason}", at(.position))]
    InvalidView {
        /// The view's name.
        name: String,
        /// Why its query does not plan.
        reason: String,
        /// Where the view is named in the statement.
        position: Option<Position>,
    },
    /// A construct Weir does not run on streams.
    #[error("not supported in streaming{}: {message}", at(.position))]
    Unsupported {
        /// What is not supported and what to do instead.
        message: String,
        /// Where.
        position: Option<Position>,
        /// The construct, to find it in the statement when the step that
        /// refused it did not know where it was.
        construct: Option<Construct>,
    },
    /// A table's options or a `SET` value are invalid.
    #[error("{0}")]
    Config(String),
    /// A `WITH` option of `CREATE TABLE` is unknown or has a bad value.
    #[error("configuration error{}: {message}", at(.position))]
    BadOption {
        /// What is wrong, naming the table and the option.
        message: String,
        /// Where the option is written.
        position: Option<Position>,
    },
    /// The engine rejected the job.
    #[error(transparent)]
    Engine(#[from] weir_engine::Error),
    /// A bug in Weir.
    #[error("internal error (this is a bug in Weir, please report it): {0}")]
    Internal(String),
}

fn at(position: &Option<Position>) -> String {
    position.map(|p| format!(" at {p}")).unwrap_or_default()
}

fn did_you_mean(suggestion: &Option<String>) -> String {
    suggestion
        .as_ref()
        .map(|s| format!(" (did you mean '{s}'?)"))
        .unwrap_or_default()
}

impl SqlError {
    /// A planning error without position.
    pub fn plan(message: impl Into<String>) -> Self {
        SqlError::Plan {
            message: message.into(),
            position: None,
        }
    }

    /// An unsupported-construct error without position.
    pub fn unsupported(message: impl Into<String>) -> Self {
        SqlError::Unsupported {
            message: message.into(),
            position: None,
            construct: None,
        }
    }

    /// An unsupported-construct error about `construct`, to be located in
    /// the statement later.
    pub fn unsupported_construct(construct: Construct, message: impl Into<String>) -> Self {
        SqlError::Unsupported {
            message: message.into(),
            position: None,
            construct: Some(construct),
        }
    }

    /// Who is at fault.
    pub fn domain(&self) -> weir_engine::ErrorDomain {
        match self {
            SqlError::Engine(e) => e.domain(),
            SqlError::Internal(_) => weir_engine::ErrorDomain::Internal,
            _ => weir_engine::ErrorDomain::User,
        }
    }

    /// The position, if the error has one.
    pub fn position(&self) -> Option<Position> {
        match self {
            SqlError::BadOption { position, .. }
            | SqlError::Parse { position, .. }
            | SqlError::Plan { position, .. }
            | SqlError::UnknownColumn { position, .. }
            | SqlError::TableExists { position, .. }
            | SqlError::UnknownTable { position, .. }
            | SqlError::ViewExists { position, .. }
            | SqlError::UnknownView { position, .. }
            | SqlError::InvalidView { position, .. }
            | SqlError::Unsupported { position, .. } => *position,
            _ => None,
        }
    }

    /// Shifts the position by where the statement starts in its script.
    pub fn offset_by(mut self, line_offset: u64, first_line_column_offset: u64) -> Self {
        if let SqlError::BadOption { position, .. }
        | SqlError::Parse { position, .. }
        | SqlError::Plan { position, .. }
        | SqlError::UnknownColumn { position, .. }
        | SqlError::TableExists { position, .. }
        | SqlError::UnknownTable { position, .. }
        | SqlError::ViewExists { position, .. }
        | SqlError::UnknownView { position, .. }
        | SqlError::InvalidView { position, .. }
        | SqlError::Unsupported { position, .. } = &mut self
            && let Some(p) = position
        {
            if p.line == 1 {
                p.column += first_line_column_offset;
            }
            p.line += line_offset;
        }
        self
    }
}

/// Parses sqlparser's "at Line: L, Column: C" suffix.
fn parser_position(message: &str) -> (String, Option<Position>) {
    if let Some(idx) = message.rfind(" at Line: ") {
        let tail = &message[idx + " at Line: ".len()..];
        let mut parts = tail.split(", Column: ");
        let line = parts.next().and_then(|l| l.trim().parse().ok());
        let column = parts.next().and_then(|c| c.trim().parse().ok());
        if let (Some(line), Some(column)) = (line, column) {
            return (message[..idx].to_string(), Some(Position { line, column }));
        }
    }
    (message.to_string(), None)
}

impl From<datafusion::sql::sqlparser::parser::ParserError> for SqlError {
    fn from(e: datafusion::sql::sqlparser::parser::ParserError) -> Self {
        let text = match e {
            datafusion::sql::sqlparser::parser::ParserError::ParserError(m)
            | datafusion::sql::sqlparser::parser::ParserError::TokenizerError(m) => m,
            other => other.to_string(),
        };
        let (message, position) = parser_position(&text);
        SqlError::Parse { message, position }
    }
}

impl From<DataFusionError> for SqlError {
    fn from(e: DataFusionError) -> Self {
        let position = e.diagnostic().and_then(|d| d.span).map(|s| Position {
            line: s.start.line,
            column: s.start.column,
        });
        let root = e.find_root();
        match root {
            DataFusionError::SQL(parse, _) => {
                let mut err = SqlError::from(parse.as_ref().clone());
                if let SqlError::Parse { position: p, .. } = &mut err {
                    *p = p.or(position);
                }
                err
            }
            DataFusionError::External(inner) => match inner.downcast_ref::<UnknownArgument>() {
                Some(UnknownArgument::Table { name, suggestion }) => SqlError::UnknownTable {
                    name: name.clone(),
                    suggestion: suggestion.clone(),
                    position,
                },
                Some(unknown @ UnknownArgument::Column { .. }) => SqlError::UnknownColumn {
                    message: unknown.to_string(),
                    position,
                },
                None => match inner.downcast_ref::<UnusableView>() {
                    Some(view) => SqlError::InvalidView {
                        name: view.name.clone(),
                        reason: view.reason.clone(),
                        position,
                    },
                    None => SqlError::Plan {
                        message: weir_engine::sql_type_names_in(&inner.to_string()),
                        position,
                    },
                },
            },
            DataFusionError::Internal(m) => SqlError::Internal(m.clone()),
            other => match messages::rewrite(&e, &strip_prefix(&other.strip_backtrace())) {
                Message::Unsupported { message, construct } => SqlError::Unsupported {
                    message,
                    position,
                    construct: construct.map(Construct::Word),
                },
                Message::Plan(message) if is_unknown_column(other) => {
                    SqlError::UnknownColumn { message, position }
                }
                Message::Plan(message) => SqlError::Plan { message, position },
            },
        }
    }
}

/// DataFusion's error for a column no table in scope has.
fn is_unknown_column(error: &DataFusionError) -> bool {
    matches!(
        error,
        DataFusionError::SchemaError(e, _) if matches!(e.as_ref(), SchemaError::FieldNotFound { .. })
    )
}

/// DataFusion prefixes messages with its error kind; users need the message.
fn strip_prefix(message: &str) -> String {
    const PREFIXES: [&str; 5] = [
        "Error during planning: ",
        "Schema error: ",
        "This feature is not implemented: ",
        "Execution error: ",
        "Optimizer rule ",
    ];
    let mut m = message.trim();
    for p in PREFIXES.iter().take(4) {
        if let Some(rest) = m.strip_prefix(p) {
            m = rest;
        }
    }
    m.to_string()
}

impl From<arrow::error::ArrowError> for SqlError {
    fn from(e: arrow::error::ArrowError) -> Self {
        SqlError::Internal(e.to_string())
    }
}
