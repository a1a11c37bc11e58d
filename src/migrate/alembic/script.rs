//! Reading an Alembic revision file without running Python.
//!
//! Alembic's template writes the identifiers as plain top-level assignments, optionally
//! annotated:
//!
//! ```python
//! """add users
//!
//! Revision ID: 1a2b3c
//! """
//! revision: str = "1a2b3c"
//! down_revision: Union[str, Sequence[str], None] = ("0f0f0f", "9e9e9e")
//! branch_labels = None
//! depends_on = None
//! ```
//!
//! A small tokenizer (strings in every quoting, comments, brackets spanning lines, backslash
//! continuations) finds the logical lines that start at column 0; an assignment to one of the
//! four names is read as a literal: a string, `None`, or a tuple or list of strings. Anything
//! else (a call, a name, an f-string) is refused with the file and line, since we would have to
//! guess what Python computes. The message is the first line of the module's docstring.

/// What a revision file declares.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Declared {
    pub revision: Option<String>,
    pub down_revision: Option<Vec<String>>,
    pub branch_labels: Vec<String>,
    pub depends_on: Vec<String>,
    /// The docstring's first line; empty without a docstring.
    pub message: String,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Str(String),
    Name(String),
    Op(String),
    Other,
}

#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    line: usize,
}

/// A logical line: its tokens and whether it starts at column 0.
struct Logical {
    top: bool,
    tokens: Vec<Token>,
}

/// Why a file could not be read; the caller adds the file's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptError(pub String);

pub fn read(source: &str) -> Result<Declared, ScriptError> {
    let lines = logical_lines(source.trim_start_matches('\u{feff}'))?;
    let mut out = Declared::default();
    let mut first_statement = true;
    for logical in lines {
        let tokens = &logical.tokens;
        if tokens.is_empty() {
            continue;
        }
        let is_first = std::mem::replace(&mut first_statement, false);
        if !logical.top {
            continue;
        }
        if is_first
            && let [Token { tok: Tok::Str(doc), .. }, rest @ ..] = tokens.as_slice()
            && rest.iter().all(|t| matches!(t.tok, Tok::Str(_)))
        {
            out.message = doc.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("").to_owned();
            continue;
        }
        let Tok::Name(name) = &tokens[0].tok else { continue };
        if !["revision", "down_revision", "branch_labels", "depends_on"].contains(&name.as_str()) {
            continue;
        }
        // `name = …` or `name: Annotation[…] = …`: the value follows the first `=` outside brackets.
        let mut depth = 0i32;
        let mut eq = None;
        for (i, t) in tokens.iter().enumerate().skip(1) {
            match &t.tok {
                Tok::Op(o) if o == "(" || o == "[" || o == "{" => depth += 1,
                Tok::Op(o) if o == ")" || o == "]" || o == "}" => depth -= 1,
                Tok::Op(o) if o == "=" && depth == 0 => {
                    eq = Some(i);
                    break;
                }
                _ => {}
            }
        }
        let Some(eq) = eq else {
            // `revision: str` alone, or `revision == x`: not an assignment.
            continue;
        };
        let annotated = matches!(&tokens[1].tok, Tok::Op(o) if o == ":");
        if eq != 1 && !annotated {
            // `revision.x = …`, `revision[0] = …`: not a declaration.
            continue;
        }
        let line = tokens[0].line;
        let value = literal(&tokens[eq + 1..]).ok_or_else(|| {
            ScriptError(format!(
                "line {line}: {name} is not a literal preflight can read without running Python: write it as \
                 a string, None, or a tuple of strings"
            ))
        })?;
        match name.as_str() {
            "revision" => match value {
                Value::One(s) => out.revision = Some(s),
                _ => {
                    return Err(ScriptError(format!("line {line}: revision must be one string")));
                }
            },
            "down_revision" => out.down_revision = Some(value.into_vec()),
            "branch_labels" => out.branch_labels = value.into_vec(),
            _ => out.depends_on = value.into_vec(),
        }
    }
    Ok(out)
}

enum Value {
    None,
    One(String),
    Many(Vec<String>),
}

impl Value {
    fn into_vec(self) -> Vec<String> {
        match self {
            Value::None => Vec::new(),
            Value::One(s) => vec![s],
            Value::Many(v) => v,
        }
    }
}

/// `None`, one string (adjacent strings concatenate), or a tuple or list of strings.
fn literal(tokens: &[Token]) -> Option<Value> {
    let toks: Vec<&Tok> = tokens.iter().map(|t| &t.tok).collect();
    match toks.as_slice() {
        [Tok::Name(n)] if n == "None" => Some(Value::None),
        [Tok::Str(_), ..] => strings(&toks).map(Value::One),
        [Tok::Op(open), inner @ .., Tok::Op(close)]
            if (open == "(" && close == ")") || (open == "[" && close == "]") =>
        {
            let mut items = Vec::new();
            for part in inner.split(|t| matches!(t, Tok::Op(o) if o == ",")) {
                if part.is_empty() {
                    continue;
                }
                items.push(strings(part)?);
            }
            // `("a")` is a string in Python, `("a",)` a tuple; both mean the same here.
            Some(Value::Many(items))
        }
        _ => None,
    }
}

fn strings(toks: &[&Tok]) -> Option<String> {
    let mut out = String::new();
    for t in toks {
        let Tok::Str(s) = t else { return None };
        out.push_str(s);
    }
    Some(out)
}

fn logical_lines(src: &str) -> Result<Vec<Logical>, ScriptError> {
    let chars: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut tokens: Vec<Token> = Vec::new();
    let mut depth = 0i32;
    let mut line = 1usize;
    let mut at_line_start = true;
    let mut top = true;
    let mut k = 0;
    while k < chars.len() {
        let c = chars[k];
        if at_line_start {
            // The first token of a logical line decides whether it is at column 0.
            let mut col = k;
            while col < chars.len() && (chars[col] == ' ' || chars[col] == '\t' || chars[col] == '\x0c') {
                col += 1;
            }
            top = col == k;
            at_line_start = false;
            k = col;
            continue;
        }
        match c {
            '\n' => {
                line += 1;
                k += 1;
                if depth == 0 {
                    out.push(Logical { top, tokens: std::mem::take(&mut tokens) });
                    at_line_start = true;
                }
            }
            ' ' | '\t' | '\r' | '\x0c' => k += 1,
            '#' => {
                while k < chars.len() && chars[k] != '\n' {
                    k += 1;
                }
            }
            '\\' if chars.get(k + 1) == Some(&'\n') => {
                line += 1;
                k += 2;
            }
            ';' if depth == 0 => {
                out.push(Logical { top, tokens: std::mem::take(&mut tokens) });
                top = false;
                k += 1;
            }
            _ if c.is_alphabetic() || c == '_' => {
                let start = k;
                while k < chars.len() && (chars[k].is_alphanumeric() || chars[k] == '_') {
                    k += 1;
                }
                let word: String = chars[start..k].iter().collect();
                let prefix = word.to_ascii_lowercase();
                let is_prefix = word.len() <= 2 && prefix.chars().all(|p| "rubf".contains(p));
                if is_prefix && matches!(chars.get(k), Some('"' | '\'')) {
                    let (s, next, lines) = string(&chars, k, prefix.contains('r'), line)?;
                    let tok =
                        if prefix.contains('f') || prefix.contains('b') { Tok::Other } else { Tok::Str(s) };
                    tokens.push(Token { tok, line });
                    line += lines;
                    k = next;
                } else {
                    tokens.push(Token { tok: Tok::Name(word), line });
                }
            }
            '"' | '\'' => {
                let (s, next, lines) = string(&chars, k, false, line)?;
                tokens.push(Token { tok: Tok::Str(s), line });
                line += lines;
                k = next;
            }
            _ if c.is_ascii_digit() => {
                while k < chars.len() && (chars[k].is_alphanumeric() || chars[k] == '.' || chars[k] == '_') {
                    k += 1;
                }
                tokens.push(Token { tok: Tok::Other, line });
            }
            _ => {
                let two: String = chars[k..(k + 2).min(chars.len())].iter().collect();
                let op = if ["==", "!=", "<=", ">=", "->", ":=", "**", "//", "<<", ">>", "+=", "-=", "|="]
                    .contains(&two.as_str())
                {
                    two
                } else {
                    c.to_string()
                };
                match op.as_str() {
                    "(" | "[" | "{" => depth += 1,
                    ")" | "]" | "}" => depth = (depth - 1).max(0),
                    _ => {}
                }
                k += op.chars().count();
                tokens.push(Token { tok: Tok::Op(op), line });
            }
        }
    }
    if !tokens.is_empty() {
        out.push(Logical { top, tokens });
    }
    Ok(out)
}

/// A string literal starting at `start` (its opening quote). Returns its value, the index after
/// it, and how many newlines it spans.
fn string(
    chars: &[char],
    start: usize,
    raw: bool,
    line: usize,
) -> Result<(String, usize, usize), ScriptError> {
    let quote = chars[start];
    let triple = chars.get(start + 1) == Some(&quote) && chars.get(start + 2) == Some(&quote);
    let mut k = start + if triple { 3 } else { 1 };
    let mut out = String::new();
    let mut lines = 0;
    loop {
        let Some(&c) = chars.get(k) else {
            return Err(ScriptError(format!("line {line}: a string is never closed")));
        };
        if c == quote && (!triple || (chars.get(k + 1) == Some(&quote) && chars.get(k + 2) == Some(&quote))) {
            return Ok((out, k + if triple { 3 } else { 1 }, lines));
        }
        if c == '\n' {
            if !triple {
                return Err(ScriptError(format!("line {line}: a string is never closed")));
            }
            lines += 1;
        }
        if c == '\\' && k + 1 < chars.len() {
            let next = chars[k + 1];
            if next == '\n' {
                lines += 1;
            }
            if raw {
                out.push('\\');
                out.push(next);
            } else {
                match next {
                    'n' => out.push('\n'),
                    't' => out.push('\t'),
                    '\n' => {}
                    '\\' | '\'' | '"' => out.push(next),
                    other => {
                        out.push('\\');
                        out.push(other);
                    }
                }
            }
            k += 2;
            continue;
        }
        out.push(c);
        k += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_modern_template_is_read() {
        let src = r#""""add users table

Revision ID: 1a2b3c
Revises: 0f0f0f
"""
from typing import Sequence, Union

from alembic import op

# revision identifiers, used by Alembic.
revision: str = "1a2b3c"
down_revision: Union[str, Sequence[str], None] = ("0f0f0f", '9e9e9e',)
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = 'other'


def upgrade() -> None:
    revision = "not this one"
    op.execute("""
        revision = 'nor this'
    """)
"#;
        let d = read(src).unwrap();
        assert_eq!(d.revision.as_deref(), Some("1a2b3c"));
        assert_eq!(d.down_revision, Some(vec!["0f0f0f".to_owned(), "9e9e9e".to_owned()]));
        assert!(d.branch_labels.is_empty());
        assert_eq!(d.depends_on, ["other"]);
        assert_eq!(d.message, "add users table");
    }

    #[test]
    fn the_old_template_and_odd_spellings_are_read() {
        let src = "# -*- coding: utf-8 -*-\n'''  first line\nmore'''\nrevision = 'a'\ndown_revision = None\n\
                   branch_labels = ('reports',)\ndepends_on = [\n  'x',  # a comment\n  \"y\"\n]\n";
        let d = read(src).unwrap();
        assert_eq!(d.revision.as_deref(), Some("a"));
        assert_eq!(d.down_revision, Some(vec![]));
        assert_eq!(d.branch_labels, ["reports"]);
        assert_eq!(d.depends_on, ["x", "y"]);
        assert_eq!(d.message, "first line");
        let d = read("revision = \\\n  'b'; down_revision = r'a'\n").unwrap();
        assert_eq!((d.revision.as_deref(), d.down_revision), (Some("b"), None));
    }

    #[test]
    fn computed_values_are_refused_with_the_line() {
        for src in [
            "revision = make_id()\n",
            "revision = f'{x}'\n",
            "x = 1\ndown_revision = OTHER\n",
            "revision = ('a', 'b')\n",
        ] {
            let err = read(src).unwrap_err().0;
            assert!(err.starts_with("line "), "{src}: {err}");
        }
        assert!(read("revision = 'a\n").unwrap_err().0.contains("never closed"));
    }

    #[test]
    fn files_without_declarations_read_as_empty() {
        let d = read("import os\n\ndef helper():\n    return 1\n").unwrap();
        assert_eq!(d, Declared::default());
        // A comparison is not an assignment.
        assert_eq!(read("revision == 'a'\n").unwrap().revision, None);
    }
}
