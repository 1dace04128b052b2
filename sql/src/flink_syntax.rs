//! Flink's window syntax: `TABLE(TUMBLE(TABLE t, DESCRIPTOR(ts), …))` is
//! rewritten to Weir's `tumble(t, ts, …)` before planning.

use datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan};

use crate::statement::{is_trivia, offset_of, tokenize};

/// Rewrites Flink's window syntax `TABLE(TUMBLE(TABLE t, DESCRIPTOR(ts), …))`
/// to Weir's `TUMBLE(t, ts, …)` (also `HOP`, `CUMULATE` and `SESSION`; a `PARTITION BY`
/// inside `SESSION` is dropped, as the `GROUP BY` keys define sessions).
/// Text without that syntax is returned unchanged.
pub fn rewrite_flink_windows(sql: &str) -> String {
    let Ok(all) = tokenize(sql) else {
        return sql.to_string();
    };
    let tokens: Vec<&TokenWithSpan> = all.iter().filter(|t| !is_trivia(&t.token)).collect();
    let word = |i: usize, w: &str| matches!(tokens.get(i).map(|t| &t.token), Some(Token::Word(x)) if x.quote_style.is_none() && x.value.eq_ignore_ascii_case(w));
    let is = |i: usize, tok: Token| tokens.get(i).is_some_and(|t| t.token == tok);
    let at = |i: usize| {
        tokens.get(i).map_or(sql.len(), |t| {
            offset_of(sql, t.span.start.line, t.span.start.column)
        })
    };
    let after = |i: usize| {
        tokens.get(i).map_or(sql.len(), |t| {
            offset_of(sql, t.span.end.line, t.span.end.column)
        })
    };
    // (start, end, replacement) byte edits, applied back to front.
    let mut edits: Vec<(usize, usize, String)> = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        let function = ["TUMBLE", "HOP", "SESSION", "CUMULATE"]
            .into_iter()
            .find(|f| word(i + 2, f));
        if !(word(i, "TABLE")
            && is(i + 1, Token::LParen)
            && function.is_some()
            && is(i + 3, Token::LParen)
            && word(i + 4, "TABLE"))
        {
            i += 1;
            continue;
        }
        // Find the matching ')' of TABLE( and the DESCRIPTOR(…) inside.
        let mut depth = 0;
        let mut close = None;
        for (j, t) in tokens.iter().enumerate().skip(i + 1) {
            match t.token {
                Token::LParen => depth += 1,
                Token::RParen => {
                    depth -= 1;
                    if depth == 0 {
                        close = Some(j);
                        break;
                    }
                }
                _ => {}
            }
        }
        let Some(close) = close else {
            return sql.to_string();
        };
        edits.push((at(i), at(i + 2), String::new())); // "TABLE("
        edits.push((at(i + 4), at(i + 5), String::new())); // inner "TABLE "
        let mut j = i + 5;
        while j < close {
            if word(j, "PARTITION") && word(j + 1, "BY") {
                let mut k = j + 2;
                while k < close && !is(k, Token::Comma) {
                    k += 1;
                }
                edits.push((at(j), at(k), String::new()));
                j = k;
            } else if word(j, "DESCRIPTOR") && is(j + 1, Token::LParen) && is(j + 3, Token::RParen)
            {
                edits.push((
                    at(j),
                    after(j + 3),
                    sql[at(j + 2)..after(j + 2)].to_string(),
                ));
                j += 4;
            } else {
                j += 1;
            }
        }
        edits.push((at(close), after(close), String::new()));
        i = close + 1;
    }
    // DataFusion looks table functions up by their exact name: normalise case.
    for (k, t) in tokens.iter().enumerate() {
        if let Token::Word(w) = &t.token {
            let lower = w.value.to_ascii_lowercase();
            if w.quote_style.is_none()
                && lower != w.value
                && ["tumble", "hop", "cumulate", "session"].contains(&lower.as_str())
                && is(k + 1, Token::LParen)
            {
                edits.push((at(k), after(k), lower));
            }
        }
    }
    if edits.is_empty() {
        return sql.to_string();
    }
    edits.sort_by_key(|e| std::cmp::Reverse(e.0));
    let mut out = sql.to_string();
    for (start, end, text) in edits {
        out.replace_range(start..end, &text);
    }
    out
}

#[cfg(test)]
mod flink_window_tests {
    use super::rewrite_flink_windows;

    #[test]
    fn rewrites_flink_window_table_functions() {
        assert_eq!(
            rewrite_flink_windows(
                "SELECT * FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(ts), INTERVAL '10' SECOND)) GROUP BY 1"
            ),
            "SELECT * FROM tumble(bid, ts, INTERVAL '10' SECOND) GROUP BY 1"
        );
        assert_eq!(
            rewrite_flink_windows(
                "FROM TABLE(SESSION(TABLE t PARTITION BY k, DESCRIPTOR(ts), INTERVAL '1' MINUTE))"
            ),
            "FROM session(t , ts, INTERVAL '1' MINUTE)"
        );
        assert_eq!(rewrite_flink_windows("SELECT 1"), "SELECT 1");
    }
}
