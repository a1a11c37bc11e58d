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

/// A logical line worth reading: its tokens, whether it starts at column 0, and whether it is
/// the module's first statement (where a docstring sits).
struct Logical {
    top: bool,
    first: bool,
    tokens: Vec<Token>,
}

/// Why a file could not be read; the caller adds the file's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptError(pub String);

pub fn read(source: &str) -> Result<Declared, ScriptError> {
    let lines = logical_lines(source.trim_start_matches('\u{feff}'))?;
    let mut out = Declared::default();
    for logical in lines {
        let tokens = &logical.tokens;
        if tokens.is_empty() || !logical.top {
            continue;
        }
        if logical.first
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
        if let Some(Tok::Op(op)) = tokens.get(1).map(|t| &t.tok)
            && op.len() == 2
            && op.ends_with('=')
            && !matches!(op.as_str(), "==" | "!=" | "<=" | ">=")
        {
            return Err(ScriptError(format!(
                "line {}: {name} is changed with `{op}`: write its whole value as one literal",
                tokens[0].line
            )));
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

/// `None`, one string (adjacent strings concatenate), or a tuple or list of strings, read as
/// Python reads them: a top-level comma makes a tuple (`"a", "b"`, `"a",`), parentheses alone
/// do not (`("a")` is a string, `(None)` is None), brackets always make a list.
fn literal(tokens: &[Token]) -> Option<Value> {
    let toks: Vec<&Tok> = tokens.iter().map(|t| &t.tok).collect();
    value(&toks)
}

fn value(toks: &[&Tok]) -> Option<Value> {
    let parts = split_commas(toks);
    if parts.len() > 1 {
        // A tuple; a trailing comma leaves an empty last part.
        let items: Option<Vec<String>> = parts.iter().filter(|p| !p.is_empty()).map(|p| strings(p)).collect();
        return items.map(Value::Many);
    }
    match toks {
        [Tok::Name(n)] if n == "None" => Some(Value::None),
        [Tok::Str(_), ..] => strings(toks).map(Value::One),
        [Tok::Op(open), inner @ .., Tok::Op(close)] if open == "(" && close == ")" => {
            if inner.is_empty() {
                Some(Value::Many(Vec::new()))
            } else {
                value(inner)
            }
        }
        [Tok::Op(open), inner @ .., Tok::Op(close)] if open == "[" && close == "]" => {
            let items: Option<Vec<String>> =
                split_commas(inner).iter().filter(|p| !p.is_empty()).map(|p| strings(p)).collect();
            items.map(Value::Many)
        }
        _ => None,
    }
}

/// Splits at the commas outside brackets.
fn split_commas<'a, 'b>(toks: &'b [&'a Tok]) -> Vec<&'b [&'a Tok]> {
    let mut parts = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, t) in toks.iter().enumerate() {
        match t {
            Tok::Op(o) if o == "(" || o == "[" || o == "{" => depth += 1,
            Tok::Op(o) if o == ")" || o == "]" || o == "}" => depth -= 1,
            Tok::Op(o) if o == "," && depth == 0 => {
                parts.push(&toks[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&toks[start..]);
    parts
}

fn strings(toks: &[&Tok]) -> Option<String> {
    let mut out = String::new();
    for t in toks {
        let Tok::Str(s) = t else { return None };
        out.push_str(s);
    }
    Some(out)
}

/// The names whose assignments are read.
const NAMES: [&str; 4] = ["revision", "down_revision", "branch_labels", "depends_on"];

/// Splits the source into logical lines and keeps the few that matter: a top-level line that
/// starts with one of [`NAMES`], and the first statement when it is a string. Every other line
/// is only scanned (for brackets, strings and continuations), not tokenized: a revision file's
/// body is most of it, and a service reads hundreds of them at every start.
fn logical_lines(src: &str) -> Result<Vec<Logical>, ScriptError> {
    let b = src.as_bytes();
    let mut out = Vec::new();
    let mut k = 0;
    let mut line = 1usize;
    let mut first = true;
    // Set when the last statement ended at a `;`: the next one starts on the same line, at the
    // same level (`a = 1; revision = "x"` assigns at the top level).
    let mut after_semicolon: Option<bool> = None;
    // Inside the body of a top-level compound statement, which runs at import.
    let mut in_block = false;
    while k < b.len() {
        // The start of a logical line: its indentation, or a line with no statement.
        let start = k;
        while k < b.len() && matches!(b[k], b' ' | b'\t' | b'\x0c') {
            k += 1;
        }
        match b.get(k) {
            None => break,
            Some(b'\n') => {
                line += 1;
                k += 1;
                after_semicolon = None;
                continue;
            }
            Some(b'\r') | Some(b'#') => {
                k = line_end(b, k);
                continue;
            }
            _ => {}
        }
        let top = after_semicolon.take().unwrap_or(k == start);
        let is_first = std::mem::replace(&mut first, false);
        let word_end = (k..b.len()).find(|&j| !is_ident(b[j])).unwrap_or(b.len());
        let word = &src[k..word_end];
        if top {
            // Code in an `if`, `for`, `try`… at the top level runs when the module loads;
            // a function's or a class's body does not (as far as the four names go).
            let lead =
                if word == "async" { src[word_end..].split_whitespace().next().unwrap_or("") } else { word };
            in_block = COMPOUND.contains(&lead);
            // `for revision in …:` assigns it too.
            let header = &src[k..line_end(b, k)];
            if lead == "for"
                && let Some(name) = header.split(" in ").next().and_then(|targets| {
                    targets
                        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                        .find(|w| NAMES.contains(w))
                })
            {
                return Err(ScriptError(format!(
                    "line {line}: {name} is assigned by a top-level `for`, and preflight cannot tell to what: \
                     assign it once, at the top level"
                )));
            }
        } else if in_block && NAMES.contains(&word) && assigns(&b[word_end..line_end(b, word_end)]) {
            return Err(ScriptError(format!(
                "line {line}: {word} is assigned inside a top-level `if`, `for`, `try` or `with` block, and \
                 preflight cannot tell whether that runs: assign it once, at the top level"
            )));
        }
        // Decide from the first token whether this line is kept.
        let keep = top && (NAMES.contains(&word) || (is_first && starts_string(b, k)));
        if !keep {
            let (next, lines, semicolon) = skip_logical(b, k, line)?;
            line += lines;
            k = next;
            if semicolon {
                after_semicolon = Some(top);
            }
            continue;
        }
        let mut tokens = Vec::new();
        let mut depth = 0i32;
        while let Some(&c) = b.get(k) {
            match c {
                b'\n' => {
                    line += 1;
                    k += 1;
                    if depth == 0 {
                        break;
                    }
                }
                b' ' | b'\t' | b'\r' | b'\x0c' => k += 1,
                b'#' => {
                    k = line_end(b, k);
                }
                b'\\' if b.get(k + 1) == Some(&b'\n') => {
                    line += 1;
                    k += 2;
                }
                b'\\' if b.get(k + 1) == Some(&b'\r') && b.get(k + 2) == Some(&b'\n') => {
                    line += 1;
                    k += 3;
                }
                b';' if depth == 0 => {
                    // `revision = "a"; down_revision = None`: the next statement follows.
                    k += 1;
                    after_semicolon = Some(top);
                    break;
                }
                b'"' | b'\'' => {
                    let (s, next, lines) = string(b, k, false, true, line)?;
                    tokens.push(Token { tok: Tok::Str(s), line });
                    line += lines;
                    k = next;
                }
                _ if is_ident(c) && !c.is_ascii_digit() => {
                    let start = k;
                    while k < b.len() && is_ident(b[k]) {
                        k += 1;
                    }
                    let word = &src[start..k];
                    let lower = word.to_ascii_lowercase();
                    let prefix = word.len() <= 2 && lower.bytes().all(|p| b"rubf".contains(&p));
                    if prefix && matches!(b.get(k), Some(b'"' | b'\'')) {
                        let (s, next, lines) = string(b, k, lower.contains('r'), true, line)?;
                        let tok =
                            if lower.contains('f') || lower.contains('b') { Tok::Other } else { Tok::Str(s) };
                        tokens.push(Token { tok, line });
                        line += lines;
                        k = next;
                    } else {
                        tokens.push(Token { tok: Tok::Name(word.to_owned()), line });
                    }
                }
                _ if c.is_ascii_digit() => {
                    while k < b.len() && (is_ident(b[k]) || b[k] == b'.') {
                        k += 1;
                    }
                    tokens.push(Token { tok: Tok::Other, line });
                }
                _ => {
                    let two = &b[k..(k + 2).min(b.len())];
                    let len = if TWO_CHAR_OPS.iter().any(|op| op.as_bytes() == two) { 2 } else { 1 };
                    match c {
                        b'(' | b'[' | b'{' => depth += 1,
                        b')' | b']' | b'}' => depth = (depth - 1).max(0),
                        _ => {}
                    }
                    let op = String::from_utf8_lossy(&b[k..k + len]).into_owned();
                    tokens.push(Token { tok: Tok::Op(op), line });
                    k += len;
                }
            }
        }
        if !tokens.is_empty() {
            out.push(Logical { top, first: is_first, tokens });
        }
    }
    Ok(out)
}

/// Top-level statements whose bodies run when the module is loaded.
const COMPOUND: [&str; 10] =
    ["if", "elif", "else", "for", "while", "with", "try", "except", "finally", "match"];

/// Whether what follows a name is an assignment to it: `=`, `: T =`, `+=` (not `==`).
fn assigns(rest: &[u8]) -> bool {
    let rest = std::str::from_utf8(rest).unwrap_or("").trim_start();
    (rest.starts_with('=') && !rest.starts_with("=="))
        || (rest.starts_with(':') && rest.contains('='))
        || ["+=", "-=", "|="].iter().any(|op| rest.starts_with(op))
}

const TWO_CHAR_OPS: [&str; 18] = [
    "==", "!=", "<=", ">=", "->", ":=", "**", "//", "<<", ">>", "+=", "-=", "|=", "*=", "/=", "%=", "&=",
    "^=",
];

/// Letters, digits, `_`, and any byte of a non-ASCII character (Python allows those in names).
fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80
}

/// Whether a string literal (with an optional prefix) starts at `k`.
fn starts_string(b: &[u8], k: usize) -> bool {
    let mut j = k;
    while j < b.len() && j < k + 2 && b"rRuUbBfF".contains(&b[j]) {
        j += 1;
    }
    matches!(b.get(j), Some(b'"' | b'\''))
}

/// Skips the rest of a statement from `k` (its strings and brackets included). Returns the
/// index after it, how many newlines were passed, and whether it ended at a `;` (another
/// statement follows on the same line).
fn skip_logical(b: &[u8], mut k: usize, line: usize) -> Result<(usize, usize, bool), ScriptError> {
    let mut depth = 0i32;
    let mut lines = 0;
    loop {
        // Only a few bytes matter to where a logical line ends; jump to the next one.
        match b[k..].iter().position(|&c| SPECIAL[usize::from(c)]) {
            Some(skip) => k += skip,
            None => return Ok((b.len(), lines, false)),
        }
        let c = b[k];
        match c {
            b'\n' => {
                lines += 1;
                k += 1;
                if depth == 0 {
                    break;
                }
            }
            b'#' => {
                k = line_end(b, k);
            }
            b'\\' if b.get(k + 1) == Some(&b'\n') => {
                lines += 1;
                k += 2;
            }
            b'\\' if b.get(k + 1) == Some(&b'\r') && b.get(k + 2) == Some(&b'\n') => {
                lines += 1;
                k += 3;
            }
            b'"' | b'\'' => {
                let (_, next, n) = string(b, k, false, false, line + lines)?;
                lines += n;
                k = next;
            }
            b'(' | b'[' | b'{' => {
                depth += 1;
                k += 1;
            }
            b')' | b']' | b'}' => {
                depth = (depth - 1).max(0);
                k += 1;
            }
            b';' if depth == 0 => return Ok((k + 1, lines, true)),
            _ => k += 1,
        }
    }
    Ok((k, lines, false))
}

/// The bytes [`skip_logical`] stops at.
static SPECIAL: [bool; 256] = {
    let mut t = [false; 256];
    let special = b"\n#\\\"'()[]{};";
    let mut i = 0;
    while i < special.len() {
        t[special[i] as usize] = true;
        i += 1;
    }
    t
};

/// The index of the end of the line that `k` is on (its `\n`, or the end of the source).
fn line_end(b: &[u8], k: usize) -> usize {
    memchr::memchr(b'\n', &b[k..]).map_or(b.len(), |n| k + n)
}

/// A string literal starting at `start` (its opening quote). Returns its value (empty unless
/// `decode`), the index after it, and how many newlines it spans.
fn string(
    b: &[u8],
    start: usize,
    raw: bool,
    decode: bool,
    line: usize,
) -> Result<(String, usize, usize), ScriptError> {
    let quote = b[start];
    let triple = b.get(start + 1) == Some(&quote) && b.get(start + 2) == Some(&quote);
    let mut k = start + if triple { 3 } else { 1 };
    let mut out: Vec<u8> = Vec::new();
    let mut lines = 0;
    let unclosed = || ScriptError(format!("line {line}: a string is never closed"));
    loop {
        // Jump to the next byte that can end the string, escape, or count a line.
        let Some(skip) = memchr::memchr3(quote, b'\n', b'\\', &b[k..]) else { return Err(unclosed()) };
        if decode {
            out.extend(b[k..k + skip].iter().filter(|&&c| c != b'\r' || !triple));
        }
        k += skip;
        let c = b[k];
        if c == quote && (!triple || (b.get(k + 1) == Some(&quote) && b.get(k + 2) == Some(&quote))) {
            let s = String::from_utf8_lossy(&out).into_owned();
            return Ok((s, k + if triple { 3 } else { 1 }, lines));
        }
        if c == b'\n' {
            if !triple {
                return Err(unclosed());
            }
            lines += 1;
        }
        if c == b'\\' && k + 1 < b.len() {
            let next = b[k + 1];
            if next == b'\n' {
                lines += 1;
            }
            if decode && raw {
                out.extend_from_slice(&[b'\\', next]);
            } else if decode {
                k += escape(b, k + 1, &mut out).ok_or_else(|| {
                    ScriptError(format!(
                        "line {line}: an escape preflight cannot read (\\N{{…}}, or a malformed \\x, \\u, \\U): \
                         write the character itself"
                    ))
                })?;
                continue;
            }
            k += 2;
            continue;
        }
        if decode {
            out.push(c);
        }
        k += 1;
    }
}

/// Decodes the escape whose letter is at `k` (after the backslash) into `out`, as Python does
/// in a str literal, and returns how many bytes it took, the backslash included. An escape
/// Python does not know is kept as written (Python warns and keeps it too).
fn escape(b: &[u8], k: usize, out: &mut Vec<u8>) -> Option<usize> {
    let simple = |c: u8| -> Option<u8> {
        Some(match c {
            b'n' => b'\n',
            b't' => b'\t',
            b'r' => b'\r',
            b'a' => 0x07,
            b'b' => 0x08,
            b'f' => 0x0c,
            b'v' => 0x0b,
            b'\\' | b'\'' | b'"' => c,
            _ => return None,
        })
    };
    let next = b[k];
    if next == b'\n' {
        return Some(2);
    }
    if let Some(c) = simple(next) {
        out.push(c);
        return Some(2);
    }
    let hex = |len: usize| -> Option<u32> {
        let digits = b.get(k + 1..k + 1 + len)?;
        u32::from_str_radix(std::str::from_utf8(digits).ok()?, 16).ok()
    };
    let (code, taken) = match next {
        b'x' => (hex(2), 2),
        b'u' => (hex(4), 4),
        b'U' => (hex(8), 8),
        b'0'..=b'7' => {
            let len = b[k..].iter().take(3).take_while(|c| (b'0'..=b'7').contains(c)).count();
            let digits = std::str::from_utf8(&b[k..k + len]).unwrap_or("0");
            (u32::from_str_radix(digits, 8).ok(), len - 1)
        }
        // Python refuses `\N{…}` only when the name is unknown; without its table of names
        // preflight cannot tell, so it refuses it whole.
        b'N' => return None,
        _ => {
            // An escape Python does not know is kept as written (Python warns and keeps it).
            out.extend_from_slice(&[b'\\', next]);
            return Some(2);
        }
    };
    // A malformed `\x`, `\u`, `\U` is a syntax error in Python.
    let c = code.and_then(char::from_u32)?;
    let mut buf = [0u8; 4];
    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
    Some(2 + taken)
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
        assert_eq!((d.revision.as_deref(), d.down_revision), (Some("b"), Some(vec!["a".to_owned()])));
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
    fn crlf_bom_and_tabs_are_read() {
        let src = "\u{feff}\"\"\"crlf message\r\n\r\nRevision ID: c\r\n\"\"\"\r\nrevision = 'c'\r\n\
                   down_revision = (\r\n\t'a',\r\n\t'b',\r\n)\r\ndef upgrade():\r\n\trevision = 'no'\r\n";
        let d = read(src).unwrap();
        assert_eq!(d.message, "crlf message");
        assert_eq!(d.revision.as_deref(), Some("c"));
        assert_eq!(d.down_revision, Some(vec!["a".to_owned(), "b".to_owned()]));
    }

    #[test]
    fn skipped_lines_hide_only_what_python_would_hide() {
        // A bracket, a string or a continuation keeps a logical line going: what is inside is
        // not an assignment at the top level. Whatever follows it is.
        let src = "revision = 'yes'\nx = dict(\nrevision = 'no',\n)\nhelp = '''\nrevision = 'no'\n'''\n\
                   y = 1 + \\\n2 # revision = 'no'\ns = \"it's \\\" # (\"\n\
                   down_revision = None # ( [ {\n";
        let d = read(src).unwrap();
        assert_eq!(d.revision.as_deref(), Some("yes"));
        assert_eq!(d.down_revision, Some(vec![]));
        // The last top-level assignment wins, as when Python runs the file.
        let d = read("revision = 'a'\ndef f():\n    pass\nrevision = 'b'\n").unwrap();
        assert_eq!(d.revision.as_deref(), Some("b"));
        // A string left open in a line that is only scanned is still named with its line.
        let err = read("revision = 'a'\n\ndef f():\n    x = '''never\n").unwrap_err().0;
        assert_eq!(err, "line 4: a string is never closed");
    }

    #[test]
    fn python_spellings_of_the_same_values_are_read_as_python_reads_them() {
        let d = read("revision: str = (\"a1\")\ndown_revision = (None)\ndepends_on = \"b2\",\n").unwrap();
        assert_eq!(d.revision.as_deref(), Some("a1"));
        assert_eq!(d.down_revision, Some(vec![]));
        assert_eq!(d.depends_on, ["b2"]);
        let d = read("revision = 'e\\x35\\u0066\\066'\ndown_revision = 'a', 'b'\n").unwrap();
        assert_eq!(d.revision.as_deref(), Some("e5f6"));
        assert_eq!(d.down_revision, Some(vec!["a".to_owned(), "b".to_owned()]));
        // Statements after `;` are statements too, and the last assignment wins.
        let d = read(
            "revision = \"b2\"; revision = \"b9\"; down_revision = \"a1\"\nx = 1; branch_labels = ('l',)\n",
        )
        .unwrap();
        assert_eq!(d.revision.as_deref(), Some("b9"));
        assert_eq!(d.down_revision, Some(vec!["a1".to_owned()]));
        assert_eq!(d.branch_labels, ["l"]);
        // ... but not inside a function.
        let d = read("revision = 'a'\ndef f():\n    x = 1; revision = 'no'\n").unwrap();
        assert_eq!(d.revision.as_deref(), Some("a"));
        assert!(read("revision = ('a', 'b')\n").is_err());
        // What Python refuses or computes is refused, not guessed.
        for src in [
            "revision = '\\N{LATIN SMALL LETTER A}'\n",
            "revision = '\\x4g'\n",
            "revision = 'x'\nrevision += 'y'\n",
        ] {
            assert!(read(src).unwrap_err().0.starts_with("line "), "{src}");
        }
        assert_eq!(read("revision = 'a\\d'\n").unwrap().revision.as_deref(), Some("a\\d"));
        // Inside a block that runs at import: refused. Inside a function or a class: not read.
        for src in [
            "revision = 'x'\nif True:\n    revision = 'zzz'\n",
            "revision = 'x'\ntry:\n    down_revision = None\nexcept Exception:\n    pass\n",
            "revision = 'x'\nfor revision in ['b']:\n    pass\n",
        ] {
            let err = read(src).unwrap_err().0;
            assert!(err.contains("a top-level `"), "{src}: {err}");
        }
        let d = read("revision = 'x'\ndef f():\n    revision = 'no'\nclass C:\n    revision = 'no'\nif revision == 'x':\n    pass\n").unwrap();
        assert_eq!(d.revision.as_deref(), Some("x"));
    }

    #[test]
    fn files_without_declarations_read_as_empty() {
        let d = read("import os\n\ndef helper():\n    return 1\n").unwrap();
        assert_eq!(d, Declared::default());
        // A comparison is not an assignment.
        assert_eq!(read("revision == 'a'\n").unwrap().revision, None);
    }
}
