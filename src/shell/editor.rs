//! Line editing for `weir sql`: a statement is complete once it ends with
//! `;` outside quotes and comments (or is a `\` command); tab completes
//! keywords, tables, columns, connector options and meta commands; SQL is
//! highlighted as it is typed.

use std::borrow::Cow;
use std::sync::{Arc, RwLock};

use rustyline::completion::{Completer, Pair};
use rustyline::highlight::{CmdKind, Highlighter};
use rustyline::hint::Hinter;
use rustyline::validate::{ValidationContext, ValidationResult, Validator};
use rustyline::{Context, Helper};

/// What completion knows of the catalog: each table and its columns.
pub type CatalogNames = Arc<RwLock<Vec<(String, Vec<String>)>>>;

const KEYWORDS: &[&str] = &[
    "SELECT",
    "FROM",
    "WHERE",
    "GROUP",
    "BY",
    "ORDER",
    "HAVING",
    "LIMIT",
    "INSERT",
    "INTO",
    "CREATE",
    "TABLE",
    "TEMPORARY",
    "DROP",
    "IF",
    "EXISTS",
    "NOT",
    "WITH",
    "AS",
    "AND",
    "OR",
    "ON",
    "JOIN",
    "LEFT",
    "RIGHT",
    "INNER",
    "OUTER",
    "UNION",
    "ALL",
    "DISTINCT",
    "CASE",
    "WHEN",
    "THEN",
    "ELSE",
    "END",
    "NULL",
    "IS",
    "IN",
    "BETWEEN",
    "LIKE",
    "CAST",
    "INTERVAL",
    "WATERMARK",
    "FOR",
    "SET",
    "RESET",
    "SHOW",
    "TABLES",
    "JOBS",
    "DESCRIBE",
    "EXPLAIN",
    "STOP",
    "CANCEL",
    "JOB",
    "COUNT",
    "SUM",
    "MIN",
    "MAX",
    "AVG",
    "TUMBLE",
    "HOP",
    "SESSION",
    "DESCRIPTOR",
    "BIGINT",
    "INT",
    "INTEGER",
    "SMALLINT",
    "DOUBLE",
    "FLOAT",
    "BOOLEAN",
    "STRING",
    "VARCHAR",
    "TIMESTAMP",
    "TIMESTAMP_LTZ",
    "DATE",
    "DECIMAL",
    "SECOND",
    "MINUTE",
    "HOUR",
    "DAY",
    "TRUE",
    "FALSE",
    "window_start",
    "window_end",
];

/// Connector names and the options their `WITH (…)` clauses take.
const CONNECTOR_OPTIONS: &[&str] = &[
    "connector",
    "datagen",
    "nexmark",
    "filesystem",
    "blackhole",
    "print",
    "format",
    "csv",
    "json",
    "parquet",
    "path",
    "number-of-rows",
    "rows-per-second",
    "scan.parallelism",
    "scan.batch-size",
    "sink.parallelism",
    "sink.rows-per-second",
    "sink.rolling-policy.file-size",
    "csv.field-delimiter",
    "csv.quote-character",
    "csv.allow-comments",
    "csv.ignore-first-line",
    "csv.null-literal",
    "csv.escape-character",
    "json.timestamp-format.standard",
    "nexmark.table.type",
    "nexmark.event.num",
    "nexmark.events.per.sec",
    "execution.checkpointing.interval",
    "execution.checkpointing.dir",
    "execution.checkpointing.num-retained",
    "parallelism.default",
    "pipeline.name",
    "restart-strategy.type",
];

/// The `\` commands.
pub const META_COMMANDS: &[(&str, &str)] = &[
    ("\\d [table]", "list tables, or describe one"),
    ("\\dt", "list tables (and views, as Flink lists them)"),
    ("\\dv", "list views"),
    ("\\jobs", "list jobs"),
    ("\\timing [on|off]", "show how long each statement took"),
    ("\\mode table|changelog", "how SELECT results are shown"),
    ("\\format table|csv|json", "how rows are printed"),
    ("\\i FILE", "run the statements of a file"),
    ("\\q", "quit"),
    ("\\?", "this help"),
];

/// True for the name of a `\` command the shell knows (`\d`, `\quit` …).
pub fn is_known_command(name: &str) -> bool {
    ["\\quit", "\\help"].contains(&name)
        || META_COMMANDS
            .iter()
            .any(|(usage, _)| usage.split_whitespace().next() == Some(name))
}

/// Where the lexer is inside a statement.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Lex {
    Code,
    Single,
    Double,
    LineComment,
    BlockComment,
}

/// True when `text` holds complete statements: it ends with `;` outside
/// quotes and comments (whitespace and comments may follow).
pub fn statement_complete(text: &str) -> bool {
    let mut state = Lex::Code;
    let mut terminated = false;
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        match state {
            Lex::Code => match c {
                '\'' => state = Lex::Single,
                '"' => state = Lex::Double,
                '-' if next == Some('-') => state = Lex::LineComment,
                '/' if next == Some('*') => {
                    state = Lex::BlockComment;
                    i += 1;
                }
                ';' => terminated = true,
                c if c.is_whitespace() => {}
                _ => terminated = false,
            },
            Lex::Single if c == '\'' => state = Lex::Code,
            Lex::Double if c == '"' => state = Lex::Code,
            Lex::LineComment if c == '\n' => state = Lex::Code,
            Lex::BlockComment if c == '*' && next == Some('/') => {
                state = Lex::Code;
                i += 1;
            }
            _ => {}
        }
        if state != Lex::Code && state != Lex::LineComment && state != Lex::BlockComment {
            terminated = false;
        }
        i += 1;
    }
    terminated && state != Lex::Single && state != Lex::Double && state != Lex::BlockComment
}

/// True for input that is a `\` command rather than SQL.
pub fn is_meta(text: &str) -> bool {
    text.trim_start().starts_with('\\')
}

/// The shell's rustyline helper.
pub struct ShellHelper {
    catalog: CatalogNames,
    /// Colours on (a terminal that wants them).
    color: bool,
}

impl ShellHelper {
    pub fn new(catalog: CatalogNames, color: bool) -> Self {
        Self { catalog, color }
    }

    fn candidates(&self, line: &str, start: usize, word: &str) -> Vec<String> {
        if word.starts_with('\\') {
            return META_COMMANDS
                .iter()
                .map(|(c, _)| c.split(' ').next().unwrap_or(c).to_string())
                .filter(|c| c.starts_with(word))
                .collect();
        }
        let before = &line[..start];
        let quoted = before.chars().filter(|&c| c == '\'').count() % 2 == 1;
        if quoted {
            return CONNECTOR_OPTIONS
                .iter()
                .filter(|o| o.starts_with(word))
                .map(|o| o.to_string())
                .collect();
        }
        let lower = word.to_lowercase();
        let mut out: Vec<String> = Vec::new();
        let catalog = self.catalog.read().unwrap_or_else(|e| e.into_inner());
        let line_lower = line.to_lowercase();
        for (table, columns) in catalog.iter() {
            if table.starts_with(&lower) {
                out.push(table.clone());
            }
            // Columns of the tables the statement mentions.
            if line_lower.contains(table.as_str()) {
                out.extend(columns.iter().filter(|c| c.starts_with(&lower)).cloned());
            }
        }
        let upper = word.to_uppercase();
        let lowercase_input = !word.is_empty() && word.chars().all(|c| !c.is_uppercase());
        for k in KEYWORDS {
            if k.to_uppercase().starts_with(&upper) {
                out.push(if lowercase_input {
                    k.to_lowercase()
                } else {
                    k.to_string()
                });
            }
        }
        out.sort();
        out.dedup();
        out
    }
}

impl Completer for ShellHelper {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let start = line[..pos]
            .rfind(|c: char| !(c.is_alphanumeric() || "_.-\\".contains(c)))
            .map_or(0, |i| i + 1);
        let word = &line[start..pos];
        let pairs = self
            .candidates(line, start, word)
            .into_iter()
            .map(|c| Pair {
                display: c.clone(),
                replacement: c,
            })
            .collect();
        Ok((start, pairs))
    }
}

impl Hinter for ShellHelper {
    type Hint = String;
}

impl Validator for ShellHelper {
    fn validate(&self, ctx: &mut ValidationContext<'_>) -> rustyline::Result<ValidationResult> {
        let input = ctx.input();
        Ok(
            if input.trim().is_empty() || is_meta(input) || statement_complete(input) {
                ValidationResult::Valid(None)
            } else {
                ValidationResult::Incomplete
            },
        )
    }
}

impl Highlighter for ShellHelper {
    fn highlight<'l>(&self, line: &'l str, _pos: usize) -> Cow<'l, str> {
        if !self.color || is_meta(line) {
            return Cow::Borrowed(line);
        }
        Cow::Owned(highlight_sql(line))
    }

    fn highlight_char(&self, _line: &str, _pos: usize, _kind: CmdKind) -> bool {
        self.color
    }
}

impl Helper for ShellHelper {}

const KEYWORD_STYLE: &str = "\x1b[1;34m";
const STRING_STYLE: &str = "\x1b[32m";
const NUMBER_STYLE: &str = "\x1b[33m";
const COMMENT_STYLE: &str = "\x1b[90m";
const RESET: &str = "\x1b[0m";

/// SQL with ANSI colours: keywords, strings, numbers, comments.
pub fn highlight_sql(line: &str) -> String {
    let chars: Vec<char> = line.chars().collect();
    let mut out = String::with_capacity(line.len() * 2);
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let take_while = |from: usize, f: &dyn Fn(char) -> bool| {
            let mut j = from;
            while j < chars.len() && f(chars[j]) {
                j += 1;
            }
            j
        };
        if c == '\'' || c == '"' {
            let end = chars[i + 1..]
                .iter()
                .position(|&d| d == c)
                .map_or(chars.len(), |p| i + 1 + p + 1);
            let text: String = chars[i..end].iter().collect();
            if c == '\'' {
                out.push_str(&format!("{STRING_STYLE}{text}{RESET}"));
            } else {
                out.push_str(&text);
            }
            i = end;
        } else if c == '-' && chars.get(i + 1) == Some(&'-') {
            let end = take_while(i, &|d| d != '\n');
            let text: String = chars[i..end].iter().collect();
            out.push_str(&format!("{COMMENT_STYLE}{text}{RESET}"));
            i = end;
        } else if c.is_ascii_digit() {
            let end = take_while(i, &|d| d.is_ascii_alphanumeric() || d == '.');
            let text: String = chars[i..end].iter().collect();
            out.push_str(&format!("{NUMBER_STYLE}{text}{RESET}"));
            i = end;
        } else if c.is_alphabetic() || c == '_' {
            let end = take_while(i, &|d| d.is_alphanumeric() || d == '_');
            let word: String = chars[i..end].iter().collect();
            if KEYWORDS
                .iter()
                .any(|k| k.eq_ignore_ascii_case(&word) && k.chars().all(|c| !c.is_lowercase()))
            {
                out.push_str(&format!("{KEYWORD_STYLE}{word}{RESET}"));
            } else {
                out.push_str(&word);
            }
            i = end;
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_end_at_a_semicolon_outside_quotes_and_comments() {
        assert!(statement_complete("SELECT 1;"));
        assert!(statement_complete("SELECT 1;  -- done\n"));
        assert!(statement_complete("SELECT\n  1\n;"));
        assert!(!statement_complete("SELECT 1"));
        assert!(!statement_complete("SELECT 'a;"));
        assert!(!statement_complete("SELECT 'a;' "));
        assert!(statement_complete("SELECT 'a;';"));
        assert!(!statement_complete("SELECT 1 -- ;"));
        assert!(!statement_complete("SELECT /* ; */ 1"));
        assert!(!statement_complete("SELECT 1; SELECT 2"));
    }

    #[test]
    fn completion_offers_keywords_tables_columns_options_and_commands() {
        let catalog: CatalogNames = Arc::new(RwLock::new(vec![(
            "bids".to_string(),
            vec!["price".to_string(), "bidder".to_string()],
        )]));
        let helper = ShellHelper::new(catalog, false);
        assert_eq!(helper.candidates("SEL", 0, "SEL"), vec!["SELECT"]);
        assert_eq!(helper.candidates("sel", 0, "sel"), vec!["select"]);
        assert_eq!(
            helper.candidates("SELECT * FROM bid", 14, "bid"),
            vec!["bids"]
        );
        assert_eq!(
            helper.candidates("SELECT pr FROM bids", 7, "pr"),
            vec!["price"]
        );
        assert_eq!(
            helper.candidates("WITH ('connector' = 'datag", 21, "datag"),
            vec!["datagen"]
        );
        assert_eq!(helper.candidates("\\jo", 0, "\\jo"), vec!["\\jobs"]);
    }

    #[test]
    fn highlighting_marks_keywords_and_strings() {
        let text = highlight_sql("SELECT 'x' FROM t");
        assert!(text.contains("\x1b[1;34mSELECT\x1b[0m"));
        assert!(text.contains("\x1b[32m'x'\x1b[0m"));
        assert!(text.ends_with(" t"));
    }
}
