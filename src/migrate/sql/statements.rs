//! A SQL file's statements, found by a lexer that knows what a `;` inside something else looks
//! like: strings (`'…'` with `''`, PostgreSQL's `E'…'` with backslashes, MySQL's backslashes),
//! quoted identifiers (`"…"`, `` `…` ``), comments (`-- …`, `# …` on MySQL, `/* … */`, nested
//! on PostgreSQL), PostgreSQL's dollar quotes (`$body$ … $body$`), and the `BEGIN … END` bodies
//! of triggers and procedures (SQLite, MySQL, PostgreSQL's `BEGIN ATOMIC`).
//!
//! It serves two checks made before anything runs: a transactional migration must not hold
//! transaction control of its own (a `COMMIT` in it would end the migration's transaction half
//! way, and what follows would run outside it), and a `-- no-transaction` migration is run one
//! statement at a time (PostgreSQL runs a multi-statement query in one implicit transaction,
//! which `CREATE INDEX CONCURRENTLY` refuses).

/// Which dialect's quoting rules apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Postgres,
    MySql,
    Sqlite,
}

/// One statement, without its `;`, and the line it starts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    pub text: String,
    pub line: usize,
}

/// Splits `sql` into its statements; blank ones and comments-only ones are left out.
pub fn split(sql: &str, dialect: Dialect) -> Vec<Statement> {
    let b = sql.as_bytes();
    let mut out = Vec::new();
    let mut k = 0;
    let mut line = 1;
    let mut start = 0;
    let mut start_line = 1;
    // The statement's first word: a BEGIN or END there is transaction control, elsewhere it
    // opens or closes a body.
    let mut first_word: Option<String> = None;
    let mut depth = 0usize;
    let mut pending_end = false;
    let push = |from: usize, to: usize, at: usize, out: &mut Vec<Statement>| {
        let text = &sql[from..to];
        if let Some(code) = code_start(text, dialect) {
            out.push(Statement { text: text[code..].trim_end().to_owned(), line: at });
        }
    };
    while k < b.len() {
        let c = b[k];
        match c {
            b'\n' => {
                line += 1;
                k += 1;
            }
            b'-' if b.get(k + 1) == Some(&b'-') => k = line_end(b, k),
            b'#' if dialect == Dialect::MySql => k = line_end(b, k),
            b'/' if b.get(k + 1) == Some(&b'*') => {
                let (next, lines) = block_comment(b, k, dialect == Dialect::Postgres);
                line += lines;
                k = next;
            }
            b'\'' | b'"' | b'`' => {
                let backslashes = match dialect {
                    Dialect::MySql => c != b'`',
                    Dialect::Postgres => {
                        c == b'\''
                            && k > 0
                            && matches!(b[k - 1], b'E' | b'e')
                            && !is_word(b.get(k.wrapping_sub(2)).copied())
                    }
                    Dialect::Sqlite => false,
                };
                let (next, lines) = quoted(b, k, c, backslashes);
                line += lines;
                k = next;
            }
            b'$' if dialect == Dialect::Postgres && !is_word(k.checked_sub(1).map(|j| b[j])) => {
                match dollar_tag(b, k) {
                    Some(tag) => {
                        let body = k + tag.len();
                        let end = find(b, body, tag).map_or(b.len(), |e| e + tag.len());
                        line += b[k..end].iter().filter(|&&c| c == b'\n').count();
                        k = end;
                    }
                    None => k += 1,
                }
            }
            b';' if depth == 0 => {
                push(start, k, start_line, &mut out);
                k += 1;
                start = k;
                first_word = None;
                pending_end = false;
            }
            _ if c.is_ascii_alphabetic() || c == b'_' => {
                let from = k;
                while k < b.len() && is_word(Some(b[k])) {
                    k += 1;
                }
                let word = sql[from..k].to_ascii_uppercase();
                if first_word.is_none() {
                    start_line = line;
                    first_word = Some(word.clone());
                    pending_end = false;
                    continue;
                }
                // `END IF`, `END LOOP`… close what this lexer does not count.
                if pending_end {
                    pending_end = false;
                    if !matches!(word.as_str(), "IF" | "LOOP" | "WHILE" | "REPEAT") {
                        depth = depth.saturating_sub(1);
                    }
                    if word == "CASE" {
                        // `END CASE` closes the CASE opened below: already counted.
                        continue;
                    }
                }
                match word.as_str() {
                    "BEGIN" | "CASE" => depth += 1,
                    "END" => pending_end = true,
                    _ => {}
                }
            }
            _ => k += 1,
        }
        if pending_end && k < b.len() && !b[k].is_ascii_whitespace() && !b[k].is_ascii_alphabetic() {
            // `END;` or `END)`: a plain END.
            pending_end = false;
            depth = depth.saturating_sub(1);
        }
    }
    push(start, b.len(), start_line, &mut out);
    out
}

/// The first statement that controls the transaction itself (`BEGIN`, `START TRANSACTION`,
/// `COMMIT`, `END`, `ROLLBACK` but not `ROLLBACK TO SAVEPOINT`), with its line.
pub fn transaction_control(statements: &[Statement]) -> Option<&Statement> {
    statements.iter().find(|s| {
        let words: Vec<String> =
            s.text.split_whitespace().take(3).map(|w| w.trim_end_matches(';').to_ascii_uppercase()).collect();
        let w = |i: usize| words.get(i).map(String::as_str);
        match w(0) {
            Some("BEGIN") => matches!(
                w(1),
                None | Some(
                    "TRANSACTION" | "WORK" | "DEFERRED" | "IMMEDIATE" | "EXCLUSIVE" | "ISOLATION" | "READ"
                )
            ),
            Some("START") => w(1) == Some("TRANSACTION"),
            Some("COMMIT" | "END" | "ABORT") => true,
            // Two-phase commit ends the transaction too (PostgreSQL, and MySQL's XA).
            Some("PREPARE") => w(1) == Some("TRANSACTION"),
            Some("XA") => true,
            Some("ROLLBACK") => {
                !matches!(w(1), Some("TO"))
                    && !matches!((w(1), w(2)), (Some("WORK" | "TRANSACTION"), Some("TO")))
            }
            _ => false,
        }
    })
}

fn is_word(c: Option<u8>) -> bool {
    c.is_some_and(|c| c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80)
}

fn line_end(b: &[u8], k: usize) -> usize {
    memchr::memchr(b'\n', &b[k..]).map_or(b.len(), |n| k + n)
}

/// A `/* … */` comment from `k`; PostgreSQL nests them. Returns the end and the newlines.
fn block_comment(b: &[u8], mut k: usize, nested: bool) -> (usize, usize) {
    let mut depth = 0;
    let mut lines = 0;
    while k < b.len() {
        if b[k] == b'/' && b.get(k + 1) == Some(&b'*') {
            depth += 1;
            k += 2;
            if !nested && depth > 1 {
                depth = 1;
            }
        } else if b[k] == b'*' && b.get(k + 1) == Some(&b'/') {
            depth -= 1;
            k += 2;
            if depth == 0 {
                return (k, lines);
            }
        } else {
            if b[k] == b'\n' {
                lines += 1;
            }
            k += 1;
        }
    }
    (b.len(), lines)
}

/// A quoted string or identifier from `k`; a doubled quote is one quote, and with
/// `backslashes` a backslash escapes the next byte. Returns the end and the newlines.
fn quoted(b: &[u8], mut k: usize, quote: u8, backslashes: bool) -> (usize, usize) {
    let mut lines = 0;
    k += 1;
    while k < b.len() {
        match b[k] {
            b'\\' if backslashes => k += 2,
            c if c == quote => {
                if b.get(k + 1) == Some(&quote) {
                    k += 2;
                } else {
                    return (k + 1, lines);
                }
            }
            c => {
                if c == b'\n' {
                    lines += 1;
                }
                k += 1;
            }
        }
    }
    (b.len(), lines)
}

/// `$$` or `$tag$` at `k`.
fn dollar_tag(b: &[u8], k: usize) -> Option<&[u8]> {
    let mut j = k + 1;
    while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_' || b[j] >= 0x80) {
        j += 1;
    }
    let tag_ok = j == k + 1 || !b[k + 1].is_ascii_digit();
    (j < b.len() && b[j] == b'$' && tag_ok).then(|| &b[k..=j])
}

fn find(b: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(&b[from..], needle).map(|i| from + i)
}

/// Where a piece's code starts, past blanks and comments; `None` when it has none.
fn code_start(text: &str, dialect: Dialect) -> Option<usize> {
    let b = text.as_bytes();
    let mut k = 0;
    while k < b.len() {
        match b[k] {
            c if c.is_ascii_whitespace() => k += 1,
            b'-' if b.get(k + 1) == Some(&b'-') => k = line_end(b, k),
            b'#' if dialect == Dialect::MySql => k = line_end(b, k),
            b'/' if b.get(k + 1) == Some(&b'*') => k = block_comment(b, k, dialect == Dialect::Postgres).0,
            _ => return Some(k),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(sql: &str, d: Dialect) -> Vec<String> {
        split(sql, d).into_iter().map(|s| s.text).collect()
    }

    #[test]
    fn semicolons_inside_strings_comments_and_bodies_do_not_split() {
        let sql = "CREATE TABLE a (v TEXT DEFAULT ';'); -- one; two\n\
                   INSERT INTO a VALUES ('it''s; fine'), (E'\\'; still');\n\
                   /* a; /* nested; */ comment; */\n\
                   CREATE FUNCTION f() RETURNS int AS $body$ BEGIN; COMMIT; END $body$ LANGUAGE plpgsql;\n\
                   CREATE FUNCTION g() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; SELECT 2; END;\n\
                   SELECT CASE WHEN true THEN 1 END;";
        let got = texts(sql, Dialect::Postgres);
        assert_eq!(got.len(), 5, "{got:#?}");
        assert!(got[3].starts_with("CREATE FUNCTION g()") && got[3].ends_with("END"), "{got:#?}");
        assert!(transaction_control(&split(sql, Dialect::Postgres)).is_none());
    }

    #[test]
    fn trigger_and_procedure_bodies_stay_whole() {
        let sqlite =
            "CREATE TRIGGER t AFTER INSERT ON a BEGIN UPDATE b SET n = n + 1; DELETE FROM c; END;\nSELECT 1;";
        assert_eq!(texts(sqlite, Dialect::Sqlite).len(), 2);
        let mysql = "CREATE PROCEDURE p() BEGIN\n  IF 1 THEN SELECT 'a;'; END IF;\n  WHILE 0 DO SELECT 1; END WHILE;\n  \
                     CASE 1 WHEN 1 THEN SELECT 2; END CASE;\nEND;\n# a comment; here\nSELECT `x;y` FROM t;";
        let got = texts(mysql, Dialect::MySql);
        assert_eq!(got.len(), 2, "{got:#?}");
        assert!(transaction_control(&split(mysql, Dialect::MySql)).is_none());
    }

    #[test]
    fn transaction_control_is_found_with_its_line() {
        for (sql, line) in [
            ("CREATE TABLE a (id INT);\nCOMMIT;\nSELECT 1/0;", 2),
            ("BEGIN;\nCREATE TABLE a (id INT);", 1),
            ("SELECT 1;\n\n  rollback;", 3),
            ("START TRANSACTION;", 1),
            ("CREATE TABLE a (id INT);\nEND;", 2),
            ("CREATE TABLE a (id INT);\nabort;", 2),
            ("CREATE TABLE a (id INT);\nPREPARE TRANSACTION 'x';", 2),
            ("XA START 'x';\nCREATE TABLE a (id INT);", 1),
            ("CREATE TABLE a (id INT);\n-- a comment; with a semicolon\n/* and another */ COMMIT;", 3),
        ] {
            let statements = split(sql, Dialect::Postgres);
            let found = transaction_control(&statements).unwrap_or_else(|| panic!("{sql}"));
            assert_eq!(found.line, line, "{sql}");
        }
        let ok = split(
            "SAVEPOINT s; SELECT 1; ROLLBACK TO SAVEPOINT s; RELEASE s; PREPARE q AS SELECT 1;",
            Dialect::Postgres,
        );
        assert!(transaction_control(&ok).is_none());
    }

    #[test]
    fn statements_run_one_by_one_keep_their_lines() {
        let got = split(
            "-- no-transaction\nCREATE INDEX CONCURRENTLY i ON a (x);\n\nCREATE INDEX CONCURRENTLY j ON a (y);\n",
            Dialect::Postgres,
        );
        assert_eq!(got.len(), 2);
        assert_eq!((got[0].line, got[1].line), (2, 4));
        assert!(got[0].text.ends_with("ON a (x)"));
    }
}
