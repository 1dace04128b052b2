//! The statements Postgres clients send on their own — `SET`/`SHOW` of
//! Postgres parameters, `BEGIN`/`COMMIT`/`ROLLBACK`, `DISCARD ALL` —
//! answered here, so that drivers and tools work without Weir knowing
//! them. Weir's own `SET 'key' = 'value'` (a quoted key), `SHOW TABLES`
//! and `SHOW JOBS` are left to the engine.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{ArrayRef, StringArray};
use arrow::record_batch::RecordBatch;
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};

use super::error::{Failure, error_info};

/// The Postgres version the server reports.
pub(crate) const SERVER_VERSION: &str = "16.6";

/// Postgres parameters: the defaults a client may `SHOW`.
const DEFAULTS: [(&str, &str); 22] = [
    ("application_name", ""),
    ("client_encoding", "UTF8"),
    ("client_min_messages", "notice"),
    ("DateStyle", "ISO, MDY"),
    ("default_transaction_isolation", "read committed"),
    ("default_transaction_read_only", "off"),
    ("extra_float_digits", "1"),
    ("integer_datetimes", "on"),
    ("IntervalStyle", "postgres"),
    ("is_superuser", "on"),
    ("lc_collate", "C"),
    ("lc_ctype", "C"),
    ("max_identifier_length", "63"),
    ("search_path", "\"$user\", public"),
    ("server_encoding", "UTF8"),
    ("server_version", SERVER_VERSION),
    ("server_version_num", "160006"),
    ("standard_conforming_strings", "on"),
    ("statement_timeout", "0"),
    ("TimeZone", "UTC"),
    ("transaction_isolation", "read committed"),
    ("transaction_read_only", "off"),
];

/// A connection's Postgres parameters.
#[derive(Debug, Clone)]
pub(crate) struct PgSettings {
    /// Lower-case name → (name as Postgres spells it, value).
    values: BTreeMap<String, (String, String)>,
}

impl Default for PgSettings {
    fn default() -> Self {
        Self {
            values: DEFAULTS
                .iter()
                .map(|(k, v)| (k.to_lowercase(), (k.to_string(), v.to_string())))
                .collect(),
        }
    }
}

impl PgSettings {
    /// The value of a parameter.
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.values
            .get(&name.to_lowercase())
            .map(|(_, v)| v.as_str())
    }

    /// Every parameter: name (as Postgres spells it) and value, by name.
    pub(crate) fn all(&self) -> Vec<(&str, &str)> {
        self.values
            .values()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }

    fn set(&mut self, name: &str, value: String) {
        let key = name.to_lowercase();
        let display = self
            .values
            .get(&key)
            .map_or_else(|| name.to_string(), |(d, _)| d.clone());
        self.values.insert(key, (display, value));
    }

    fn reset(&mut self, name: &str) {
        let key = name.to_lowercase();
        match DEFAULTS.iter().find(|(k, _)| k.to_lowercase() == key) {
            Some((k, v)) => {
                self.values.insert(key, (k.to_string(), v.to_string()));
            }
            None => {
                self.values.remove(&key);
            }
        }
    }
}

/// What a Postgres-only statement answers.
#[derive(Debug)]
pub(crate) enum Compat {
    /// Done (or nothing to do): the command tag.
    Done(&'static str),
    /// Rows to return (`SHOW`).
    Rows(RecordBatch),
}

/// The words and literals of `sql`, without whitespace and comments; a
/// quoted identifier or string is marked so that it is never a keyword.
fn words(sql: &str) -> Option<Vec<Word>> {
    let tokens = Tokenizer::new(&PostgreSqlDialect {}, sql).tokenize().ok()?;
    Some(
        tokens
            .into_iter()
            .filter_map(|t| match t {
                Token::Whitespace(_) | Token::SemiColon | Token::EOF => None,
                Token::Word(w) if w.quote_style.is_none() => Some(Word::Bare(w.value)),
                Token::Word(w) => Some(Word::Quoted(w.value)),
                Token::SingleQuotedString(s) => Some(Word::String(s)),
                other => Some(Word::Other(other.to_string())),
            })
            .collect(),
    )
}

#[derive(Debug, Clone, PartialEq)]
enum Word {
    Bare(String),
    Quoted(String),
    String(String),
    Other(String),
}

impl Word {
    fn is(&self, keyword: &str) -> bool {
        matches!(self, Word::Bare(w) if w.eq_ignore_ascii_case(keyword))
    }

    fn text(&self) -> &str {
        match self {
            Word::Bare(s) | Word::Quoted(s) | Word::String(s) | Word::Other(s) => s,
        }
    }
}

/// Answers `sql` when it is a statement only Postgres clients send; `None`
/// hands it to the engine.
pub(crate) fn answer(sql: &str, settings: &mut PgSettings) -> Option<Result<Compat, Failure>> {
    let words = words(sql)?;
    let first = words.first()?;
    let is_first = |k: &str| first.is(k);
    if ["begin", "start", "commit", "end", "rollback", "abort"]
        .iter()
        .any(|k| is_first(k))
    {
        let tag = match first.text().to_ascii_lowercase().as_str() {
            "begin" | "start" => "BEGIN",
            "commit" | "end" => "COMMIT",
            _ => "ROLLBACK",
        };
        return Some(Ok(Compat::Done(tag)));
    }
    if is_first("discard") {
        return Some(Ok(Compat::Done("DISCARD ALL")));
    }
    if is_first("deallocate") {
        return Some(Ok(Compat::Done("DEALLOCATE")));
    }
    if is_first("set") {
        return set(&words[1..], settings).map(Ok);
    }
    if is_first("reset") {
        return match words.get(1) {
            Some(w) if w.is("all") => {
                *settings = PgSettings::default();
                Some(Ok(Compat::Done("RESET")))
            }
            Some(Word::Bare(name)) if !name.contains('.') => {
                settings.reset(name);
                Some(Ok(Compat::Done("RESET")))
            }
            _ => None,
        };
    }
    if is_first("show") {
        return show(&words[1..], settings);
    }
    None
}

/// `SET [SESSION | LOCAL] name { = | TO } value`, `SET TIME ZONE …`,
/// `SET TRANSACTION …`: kept or accepted. A quoted key is Weir's `SET`.
fn set(words: &[Word], settings: &mut PgSettings) -> Option<Compat> {
    let words = match words.first() {
        Some(w) if w.is("session") || w.is("local") => &words[1..],
        _ => words,
    };
    let name = match words.first()? {
        Word::Bare(name) if !name.contains('.') => name.clone(),
        _ => return None,
    };
    if name.eq_ignore_ascii_case("transaction") || name.eq_ignore_ascii_case("characteristics") {
        return Some(Compat::Done("SET"));
    }
    let (name, rest) = if name.eq_ignore_ascii_case("time") && words.get(1)?.is("zone") {
        ("TimeZone".to_string(), &words[2..])
    } else if name.eq_ignore_ascii_case("names") {
        ("client_encoding".to_string(), &words[1..])
    } else {
        match words.get(1) {
            Some(w) if w.is("to") || w.text() == "=" => (name, &words[2..]),
            _ => return None,
        }
    };
    let value = rest
        .iter()
        .map(|w| w.text())
        .collect::<Vec<_>>()
        .join(" ")
        .replace(" , ", ", ");
    settings.set(&name, value);
    Some(Compat::Done("SET"))
}

/// `SHOW name`, `SHOW ALL`, `SHOW TRANSACTION ISOLATION LEVEL`; Weir's
/// `SHOW TABLES`, `SHOW VIEWS`, `SHOW CREATE VIEW` and `SHOW JOBS` go on to
/// the engine.
fn show(words: &[Word], settings: &PgSettings) -> Option<Result<Compat, Failure>> {
    let first = words.first()?;
    if first.is("tables") || first.is("views") || first.is("jobs") || first.is("create") {
        return None;
    }
    let one = |column: &str, value: &str| -> Result<Compat, Failure> {
        let array: ArrayRef = Arc::new(StringArray::from(vec![value.to_string()]));
        RecordBatch::try_from_iter([(column, array)])
            .map(Compat::Rows)
            .map_err(|e| error_info("XX000", e.to_string()))
    };
    if first.is("transaction") {
        let value = settings.get("transaction_isolation").unwrap_or_default();
        return Some(one("transaction_isolation", value));
    }
    if first.is("all") {
        let names: Vec<&str> = settings.values.values().map(|(k, _)| k.as_str()).collect();
        let values: Vec<&str> = settings.values.values().map(|(_, v)| v.as_str()).collect();
        let names: ArrayRef = Arc::new(StringArray::from(names));
        let values: ArrayRef = Arc::new(StringArray::from(values));
        return Some(
            RecordBatch::try_from_iter([("name", names), ("setting", values)])
                .map(Compat::Rows)
                .map_err(|e| error_info("XX000", e.to_string())),
        );
    }
    let name = match (first, words.get(1)) {
        (w, Some(z)) if w.is("time") && z.is("zone") => "TimeZone".to_string(),
        (Word::Bare(name), None) if !name.contains('.') => name.clone(),
        _ => return None,
    };
    Some(match settings.values.get(&name.to_lowercase()) {
        Some((display, value)) => one(&display.to_lowercase(), value),
        None => Err(error_info(
            "42704",
            format!("unrecognized configuration parameter \"{name}\""),
        )),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(sql: &str, settings: &mut PgSettings) -> String {
        match answer(sql, settings) {
            Some(Ok(Compat::Rows(b))) => b
                .column(0)
                .as_any()
                .downcast_ref::<StringArray>()
                .unwrap()
                .value(0)
                .to_string(),
            other => panic!("{sql}: {other:?}"),
        }
    }

    #[test]
    fn postgres_parameters_are_kept_per_connection() {
        let mut s = PgSettings::default();
        assert_eq!(shown("SHOW server_version", &mut s), SERVER_VERSION);
        assert_eq!(
            shown("show transaction isolation level", &mut s),
            "read committed"
        );
        assert!(matches!(
            answer("SET extra_float_digits = 3", &mut s),
            Some(Ok(Compat::Done("SET")))
        ));
        assert_eq!(shown("SHOW extra_float_digits", &mut s), "3");
        answer("SET TIME ZONE 'Europe/Paris'", &mut s);
        assert_eq!(shown("SHOW TimeZone", &mut s), "Europe/Paris");
        answer("SET SESSION search_path TO public, other", &mut s);
        assert_eq!(shown("SHOW search_path", &mut s), "public, other");
        answer("RESET ALL", &mut s);
        assert_eq!(shown("SHOW timezone", &mut s), "UTC");
        assert!(matches!(answer("SHOW nope", &mut s), Some(Err(e)) if e.code == "42704"));
    }

    #[test]
    fn weir_statements_go_to_the_engine() {
        let mut s = PgSettings::default();
        for sql in [
            "SET 'parallelism.default' = '2'",
            "SET",
            "SHOW TABLES",
            "SHOW VIEWS",
            "SHOW CREATE VIEW v",
            "SHOW JOBS",
            "SELECT 1",
            "RESET 'pipeline.name'",
        ] {
            assert!(answer(sql, &mut s).is_none(), "{sql}");
        }
        assert!(matches!(
            answer("BEGIN", &mut s),
            Some(Ok(Compat::Done("BEGIN")))
        ));
        assert!(matches!(
            answer("DISCARD ALL", &mut s),
            Some(Ok(Compat::Done(_)))
        ));
    }
}
