//! DataFusion's messages in Weir's words: SQL type names instead of Arrow's
//! (`BIGINT`, not `Int64`), the SQL construct instead of a Rust debug dump of
//! the syntax tree (`COLLATE`, not `Collate { expr: …, collation: … }`), and
//! advice instead of a wildcard complaint for a query without a wildcard.

use datafusion::error::DataFusionError;
use weir_engine::sql_type_names_in;

/// How a DataFusion message reads to a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Message {
    /// A construct DataFusion does not plan, named in SQL, and the
    /// keyword the message starts with (`COLLATE is not supported`).
    Unsupported {
        message: String,
        construct: Option<String>,
    },
    /// Anything else.
    Plan(String),
}

/// Rewrites `message` (DataFusion's, its kind prefix removed) of `error`.
pub(crate) fn rewrite(error: &DataFusionError, message: &str) -> Message {
    let not_implemented = matches!(error.find_root(), DataFusionError::NotImplemented(_));
    if let Some(sql) = without_debug_dumps(message) {
        if not_implemented || sql.starts_with("Unsupported") {
            return unsupported(sql_type_names_in(&sql));
        }
        return Message::Plan(sql_type_names_in(&sql));
    }
    let message = group_by_advice(error, message)
        .unwrap_or_else(|| without_signature_attempts(message).to_string());
    if not_implemented {
        unsupported(sql_type_names_in(&message))
    } else {
        Message::Plan(sql_type_names_in(&message))
    }
}

/// DataFusion names what it does not plan only in its message's words: an
/// upper-case first word is the construct (`COLLATE is not supported`).
fn unsupported(message: String) -> Message {
    let construct = message
        .split_whitespace()
        .next()
        .filter(|w| w.len() > 1 && w.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
        .map(str::to_string);
    Message::Unsupported { message, construct }
}

/// DataFusion says a column missing from `GROUP BY` was found "while
/// expanding wildcard", also for queries without one; its diagnostic says
/// what is wrong and what to do.
fn group_by_advice(error: &DataFusionError, message: &str) -> Option<String> {
    if !message.contains("must appear in the GROUP BY clause") {
        return None;
    }
    let diagnostic = error.diagnostic()?;
    let mut advice = diagnostic.message.clone();
    for help in &diagnostic.helps {
        let mut chars = help.message.chars();
        if let Some(first) = chars.next() {
            advice.push_str("; ");
            advice.extend(first.to_lowercase());
            advice.push_str(chars.as_str());
        }
    }
    Some(advice)
}

/// DataFusion puts every signature it tried (as an "Internal error … a bug
/// in DataFusion's code") before saying that no function matches the
/// arguments; the latter is what the user needs.
fn without_signature_attempts(message: &str) -> &str {
    message
        .find("No function matches the given name")
        .map_or(message, |start| &message[start..])
}

/// `message` with each Rust debug dump (`Collate { … }`, `Identifier(Ident
/// { … })`, `[Ident { … }]`) replaced by the SQL it stands for; `None` when
/// it has none. "Unsupported ast node … X …" becomes "X is not supported".
fn without_debug_dumps(message: &str) -> Option<String> {
    let mut out = String::with_capacity(message.len());
    let mut constructs = Vec::new();
    let mut rest = message;
    let mut previous: Option<char> = None;
    while let Some(c) = rest.chars().next() {
        let at_word = !previous.is_some_and(|p| p.is_ascii_alphanumeric() || p == '_');
        if let Some(len) = debug_dump_len(rest).filter(|_| at_word) {
            let sql = describe_dump(&rest[..len]);
            out.push_str(&sql);
            constructs.push(sql);
            previous = rest[..len].chars().last();
            rest = &rest[len..];
            continue;
        }
        out.push(c);
        previous = Some(c);
        rest = &rest[c.len_utf8()..];
    }
    let first = constructs.first()?;
    if message.starts_with("Unsupported ast node") {
        return Some(format!("{first} is not supported"));
    }
    Some(out)
}

/// The length of the debug dump `text` starts with: `Name { … }`,
/// `Name(… { … } …)` or `[… { … } …]`, the brackets holding a `{`.
fn debug_dump_len(text: &str) -> Option<usize> {
    let first = text.chars().next()?;
    let open = if first == '[' {
        0
    } else if first.is_ascii_uppercase() {
        let name = text
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(text.len());
        match text[name..].strip_prefix(' ') {
            Some(after) if after.starts_with('{') => name + 1,
            _ if text[name..].starts_with('(') => name,
            _ => return None,
        }
    } else {
        return None;
    };
    let len = open + balanced_len(&text[open..])?;
    text[open..len].contains('{').then_some(len)
}

/// The length of the bracketed group `text` starts with, across `()`, `[]`
/// and `{}`.
fn balanced_len(text: &str) -> Option<usize> {
    let mut depth = 0usize;
    for (i, c) in structure(text) {
        match c {
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(i + 1);
                }
            }
            _ => {}
        }
    }
    None
}

/// The brackets and commas of a debug dump with their byte offsets,
/// skipping those inside string (`"…"`) and char (`'"'`) literals.
fn structure(text: &str) -> impl Iterator<Item = (usize, char)> + '_ {
    let mut chars = text.char_indices().peekable();
    std::iter::from_fn(move || {
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    while let Some((_, c)) = chars.next() {
                        match c {
                            '\\' => {
                                chars.next();
                            }
                            '"' => break,
                            _ => {}
                        }
                    }
                }
                '\'' => {
                    // A char literal (`'x'`, `'\''`) is skipped; a lone quote is text.
                    let mut literal = text[i + 1..].chars();
                    let body = if text[i + 1..].starts_with('\\') {
                        2
                    } else {
                        1
                    };
                    let len: usize = literal.by_ref().take(body).map(char::len_utf8).sum();
                    if literal.next() == Some('\'') {
                        let closing = i + 1 + len;
                        while chars.next_if(|&(j, _)| j <= closing).is_some() {}
                    }
                }
                '(' | '[' | '{' | ')' | ']' | '}' | ',' => return Some((i, c)),
                _ => {}
            }
        }
        None
    })
}

/// The SQL a debug dump stands for: an identifier's text, a list's items,
/// or the syntax node's name as SQL keywords (`AtTimeZone` → `AT TIME ZONE`).
fn describe_dump(dump: &str) -> String {
    if let Some(inner) = dump.strip_prefix('[').and_then(|d| d.strip_suffix(']')) {
        return top_level_items(inner)
            .into_iter()
            .map(|item| describe_dump(item.trim()))
            .collect::<Vec<_>>()
            .join(", ");
    }
    let name_len = dump
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(dump.len());
    let (name, body) = dump.split_at(name_len);
    if name == "Ident"
        && let Some(value) = quoted_field(body, "value")
    {
        return value;
    }
    if let Some(inner) = body.strip_prefix('(').and_then(|b| b.strip_suffix(')'))
        && matches!(name, "Some" | "Box" | "Identifier" | "Value")
        && debug_dump_len(inner.trim()).is_some()
    {
        return describe_dump(inner.trim());
    }
    keywords(name)
}

/// The items of a debug list, split at commas outside brackets and strings.
fn top_level_items(list: &str) -> Vec<&str> {
    let mut items = Vec::new();
    let (mut depth, mut start) = (0usize, 0);
    for (i, c) in structure(list) {
        match c {
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                items.push(&list[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if !list[start..].trim().is_empty() {
        items.push(&list[start..]);
    }
    items
}

/// The string value of `field: "…"` in a debug dump.
fn quoted_field(body: &str, field: &str) -> Option<String> {
    let start = body.find(&format!("{field}: \""))? + field.len() + 3;
    let mut value = String::new();
    let mut escaped = false;
    for c in body[start..].chars() {
        match c {
            _ if escaped => {
                value.push(c);
                escaped = false;
            }
            '\\' => escaped = true,
            '"' => return Some(value),
            _ => value.push(c),
        }
    }
    None
}

/// `AtTimeZone` as SQL keywords: `AT TIME ZONE`.
fn keywords(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    let mut previous: Option<char> = None;
    for c in name.chars() {
        if c.is_ascii_uppercase() && previous.is_some_and(|p| p.is_ascii_lowercase()) {
            out.push(' ');
        }
        out.push(c.to_ascii_uppercase());
        previous = Some(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_construct_of_an_unsupported_ast_node() {
        let message = "Unsupported ast node in sqltorel: Collate { expr: Identifier(Ident { \
                       value: \"channel\", quote_style: None, span: Span(Location(1,8)..Location(1,15)) }), \
                       collation: ObjectName([Identifier(Ident { value: \"C\", quote_style: Some('\"'), \
                       span: Span(Location(1,24)..Location(1,27)) })]) }";
        assert_eq!(
            without_debug_dumps(message).as_deref(),
            Some("COLLATE is not supported")
        );
        assert_eq!(
            without_debug_dumps("Unsupported ast node Pivot { table: x } in create_relation")
                .as_deref(),
            Some("PIVOT is not supported")
        );
    }

    #[test]
    fn replaces_dumps_inside_other_messages() {
        assert_eq!(
            without_debug_dumps("Unsupported JOIN operator AsOf { match_condition: x }").as_deref(),
            Some("Unsupported JOIN operator AS OF")
        );
        assert_eq!(
            without_debug_dumps(
                "compound identifier: [Ident { value: \"a\", quote_style: None }, Ident { value: \"b\" }]"
            )
            .as_deref(),
            Some("compound identifier: a, b")
        );
        assert_eq!(
            without_debug_dumps("got: Identifier(Ident { value: \"x\", quote_style: None })")
                .as_deref(),
            Some("got: x")
        );
    }

    #[test]
    fn leaves_messages_without_dumps_alone() {
        for message in [
            "No field named bidr. Did you mean 'bids.bidder'?",
            "Cannot cast Utf8 to Int64",
            "count(Int64(1)) and {braces} in text",
            "Invalid function 'sumx'.\nDid you mean 'sum'?",
        ] {
            assert_eq!(without_debug_dumps(message), None, "{message}");
        }
    }

    #[test]
    fn keywords_from_variant_names() {
        assert_eq!(keywords("AtTimeZone"), "AT TIME ZONE");
        assert_eq!(keywords("Collate"), "COLLATE");
        assert_eq!(keywords("IsNotDistinctFrom"), "IS NOT DISTINCT FROM");
    }
}
