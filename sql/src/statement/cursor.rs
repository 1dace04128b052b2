//! A cursor over the tokens of one statement, for Weir's own parsers.

use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan};

use super::{is_trivia, offset_of, tokenize};
use crate::error::{Position, Result, SqlError};

/// Tokens of one statement (whitespace dropped) and the next one to read.
pub(super) struct Cursor<'a> {
    pub(super) sql: &'a str,
    pub(super) tokens: Vec<TokenWithSpan>,
    pub(super) pos: usize,
}

impl<'a> Cursor<'a> {
    pub(super) fn new(sql: &'a str) -> Result<Self> {
        let tokens = tokenize(sql)?
            .into_iter()
            .filter(|t| !is_trivia(&t.token) && t.token != Token::EOF)
            .collect();
        Ok(Self {
            sql,
            tokens,
            pos: 0,
        })
    }

    pub(super) fn peek(&self) -> Option<&TokenWithSpan> {
        self.tokens.get(self.pos)
    }

    pub(super) fn peek_keyword(&self, kw: Keyword) -> bool {
        matches!(self.peek(), Some(TokenWithSpan { token: Token::Word(w), .. }) if w.keyword == kw)
    }

    pub(super) fn eat_keyword(&mut self, kw: Keyword) -> bool {
        if self.peek_keyword(kw) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    pub(super) fn eat_word(&mut self, word: &str) -> bool {
        if matches!(self.peek(), Some(TokenWithSpan { token: Token::Word(w), .. }) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(word))
        {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    pub(super) fn eat_keywords(&mut self, kws: &[Keyword]) -> bool {
        let save = self.pos;
        for &kw in kws {
            if !self.eat_keyword(kw) {
                self.pos = save;
                return false;
            }
        }
        true
    }

    pub(super) fn position(&self) -> Option<Position> {
        self.peek()
            .or_else(|| self.tokens.last())
            .map(|t| Position {
                line: t.span.start.line,
                column: t.span.start.column,
            })
    }

    pub(super) fn error(&self, expected: &str) -> SqlError {
        let found = self.peek().map_or_else(
            || "end of statement".to_string(),
            |t| format!("'{}'", t.token),
        );
        SqlError::Parse {
            message: format!("expected {expected}, found {found}"),
            position: self.position(),
        }
    }

    pub(super) fn expect(&mut self, token: Token, what: &str) -> Result<()> {
        match self.peek() {
            Some(t) if t.token == token => {
                self.pos += 1;
                Ok(())
            }
            _ => Err(self.error(what)),
        }
    }

    /// A possibly dotted, possibly quoted name.
    pub(super) fn name(&mut self, what: &str) -> Result<String> {
        let mut parts = Vec::new();
        loop {
            match self.peek().map(|t| &t.token) {
                Some(Token::Word(w)) => {
                    parts.push(if w.quote_style.is_some() {
                        w.value.clone()
                    } else {
                        w.value.to_lowercase()
                    });
                    self.pos += 1;
                }
                _ => return Err(self.error(what)),
            }
            if matches!(self.peek().map(|t| &t.token), Some(Token::Period)) {
                self.pos += 1;
            } else {
                break;
            }
        }
        Ok(parts.join("."))
    }

    /// Byte offset where token `i` starts (or the end of text).
    pub(super) fn offset(&self, i: usize) -> usize {
        self.tokens.get(i).map_or(self.sql.len(), |t| {
            offset_of(self.sql, t.span.start.line, t.span.start.column)
        })
    }

    pub(super) fn rest_text(&self) -> &'a str {
        &self.sql[self.offset(self.pos)..]
    }

    /// Index of the token closing the parenthesis opened just before `self.pos`.
    pub(super) fn matching_paren(&self) -> Result<usize> {
        let mut depth = 1;
        for i in self.pos..self.tokens.len() {
            match self.tokens[i].token {
                Token::LParen => depth += 1,
                Token::RParen => {
                    depth -= 1;
                    if depth == 0 {
                        return Ok(i);
                    }
                }
                _ => {}
            }
        }
        Err(SqlError::Parse {
            message: "unbalanced parentheses: a '(' is never closed".into(),
            position: self.position(),
        })
    }
}

/// An option key or value: quoted string, number or bare (dotted) word.
pub(super) fn option_atom(c: &mut Cursor<'_>, what: &str) -> Result<String> {
    match c.peek().map(|t| t.token.clone()) {
        Some(Token::SingleQuotedString(s)) | Some(Token::DoubleQuotedString(s)) => {
            c.pos += 1;
            Ok(s)
        }
        Some(Token::Number(n, _)) => {
            c.pos += 1;
            Ok(n)
        }
        Some(Token::Word(_)) => {
            // Bare keys keep their case: Flink's option keys are case-sensitive.
            let mut parts = Vec::new();
            while let Some(Token::Word(w)) = c.peek().map(|t| t.token.clone()) {
                c.pos += 1;
                let mut part = w.value;
                // `number-of-rows`: hyphens join words within one part.
                while matches!(c.peek().map(|t| &t.token), Some(Token::Minus)) {
                    match c.tokens.get(c.pos + 1).map(|t| t.token.clone()) {
                        Some(Token::Word(next)) => {
                            part.push('-');
                            part.push_str(&next.value);
                            c.pos += 2;
                        }
                        _ => break,
                    }
                }
                parts.push(part);
                if matches!(c.peek().map(|t| &t.token), Some(Token::Period)) {
                    c.pos += 1;
                } else {
                    break;
                }
            }
            Ok(parts.join("."))
        }
        _ => Err(c.error(what)),
    }
}
