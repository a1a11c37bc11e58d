//! Secrets never leave the process. Everything preflight writes to stderr (log lines, argument
//! errors, a panic's message) passes through [`scrub`], which hides secrets by structure first:
//!
//! - the password in anything shaped like a URL with a user (`scheme://user:PW@host`, and the
//!   malformed `scheme:/user:PW@host` and `scheme:user:PW@host` that a URL parser rejects and an
//!   error message would quote);
//! - the value after a key that names a password (`password=`, `PGPASSWORD=`, `pwd=`, `pass=`,
//!   in any case);
//!
//! and then by value: every password preflight has parsed (a target's, a `password=` query
//! parameter's) is [registered](register), in its raw, percent-encoded and JSON-escaped forms,
//! so that a driver message quoting one bare is caught too. A value of [`LONG`] characters or
//! more is hidden wherever it occurs; a shorter one only where it stands as a whole token, so
//! that a password `p` does not turn `postgres` into `***ostgres` and show where it is.
//!
//! Commands preflight runs are logged as written, before `$VAR` expansion: an expanded value is
//! never printed, whatever its name (see `migrate::backup::expand`).

use std::borrow::Cow;
use std::sync::RwLock;

const MASK: &str = "***";

/// Values at least this long are hidden wherever they occur.
const LONG: usize = 8;

static SECRETS: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// Registers a secret value: from now on [`scrub`] hides it in every output.
pub fn register(secret: &str) {
    if secret.is_empty() {
        return;
    }
    let mut forms = vec![secret.to_owned()];
    let encoded =
        percent_encoding::utf8_percent_encode(secret, percent_encoding::NON_ALPHANUMERIC).to_string();
    // Some encoders write the hex digits in lower case (`%2c`).
    let lower = lowercase_escapes(&encoded);
    forms.push(encoded);
    forms.push(lower);
    if let Ok(json) = serde_json::to_string(secret) {
        forms.push(json[1..json.len() - 1].to_owned());
    }
    let mut secrets = SECRETS.write().unwrap_or_else(|e| e.into_inner());
    for form in forms {
        if !secrets.contains(&form) {
            secrets.push(form);
        }
    }
    // Longest first, so that a secret that contains another is hidden whole.
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
}

/// `%2C` → `%2c`: only the two hex digits after each `%`.
fn lowercase_escapes(encoded: &str) -> String {
    let mut out = String::with_capacity(encoded.len());
    let mut after_percent = 0;
    for c in encoded.chars() {
        if after_percent > 0 {
            out.push(c.to_ascii_lowercase());
            after_percent -= 1;
        } else {
            out.push(c);
            if c == '%' {
                after_percent = 2;
            }
        }
    }
    out
}

/// Registers the password of every URL among the raw arguments and environment values, before
/// anything is parsed: an argument error or a bad log flag is reported before the targets are,
/// and may quote a value that happens to be a password elsewhere on the command line.
pub fn register_from_raw<'a>(values: impl IntoIterator<Item = &'a str> + Clone) {
    register_by_structure(values.clone());
    for value in values {
        for word in value.split([',', ' ']).filter(|w| w.contains("://")) {
            if let Ok(url) = url::Url::parse(word.trim()) {
                if let Some(pw) = url.password() {
                    if let Ok(decoded) = percent_encoding::percent_decode_str(pw).decode_utf8() {
                        register(&decoded);
                    }
                    register(pw);
                }
                for (key, value) in url.query_pairs() {
                    if is_password_key(&key) {
                        register(&value);
                    }
                }
            }
        }
    }
}

/// The URL passwords among raw values, found by structure alone (no URL parser: the supervisor
/// process uses this, and keeps its code small), on each whole value and on each of its words:
/// a password may hold a `,`, a quote or a bracket, and a URL a parser refuses has one too.
pub fn register_by_structure<'a>(values: impl IntoIterator<Item = &'a str>) {
    for value in values {
        // Each word, and each tail that starts at a word: `a,http://u:p,w@h` holds `p,w`.
        let starts = value
            .char_indices()
            .filter(|&(_, c)| matches!(c, ',' | ' ' | '\t' | '\n' | '=' | '/'))
            .map(|(i, c)| i + c.len_utf8());
        // (Only tails that start with a scheme, and a bounded number: an environment value
        // can be long.)
        let tails = std::iter::once(0)
            .chain(starts)
            .map(|i| &value[i..])
            .filter(|t| {
                t.starts_with(|c: char| c.is_ascii_alphabetic()) && t.bytes().take(32).any(|b| b == b':')
            })
            .take(256);
        let candidates = tails.clone().chain(value.split([',', ' ', '\t', '\n']));
        for candidate in candidates {
            if let Some(pw) = raw_url_password(candidate) {
                register(pw);
                if let Ok(decoded) = percent_encoding::percent_decode_str(pw).decode_utf8() {
                    register(&decoded);
                }
            }
        }
    }
}

/// The password of a value shaped like `[--flag=]scheme:[//]user:PASSWORD@host…`, read by
/// structure alone (no URL parser): from the user info's first `:` to the value's last `@`.
fn raw_url_password(value: &str) -> Option<&str> {
    let value = value.trim();
    let value = match value.strip_prefix("--").and_then(|v| v.split_once('=')) {
        Some((_, v)) => v,
        None => value,
    };
    let colon = value.find(':')?;
    let scheme = &value[..colon];
    let is_scheme = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !is_scheme {
        return None;
    }
    let rest = &value[colon + 1..];
    let rest = rest.strip_prefix("//").or_else(|| rest.strip_prefix('/')).unwrap_or(rest);
    let at = rest.rfind('@')?;
    let sep = rest[..at].find(':')?;
    Some(&rest[sep + 1..at]).filter(|pw| !pw.is_empty())
}

/// [`scrub`], as an owned string.
pub fn scrub_owned(text: &str) -> String {
    scrub(text).into_owned()
}

/// `text` with every secret hidden. Borrowed when there was nothing to hide.
pub fn scrub(text: &str) -> Cow<'_, str> {
    let mut out = Cow::Borrowed(text);
    // Known values first, whole: a structural rule that stops at a `,` inside one would leave
    // its tail, and the value would no longer be found.
    {
        let secrets = SECRETS.read().unwrap_or_else(|e| e.into_inner());
        for secret in secrets.iter() {
            if let Some(hidden) = hide_value(&out, secret) {
                out = Cow::Owned(hidden);
            }
        }
    }
    if let Some(hidden) = hide_url_passwords(&out) {
        out = Cow::Owned(hidden);
    }
    if let Some(hidden) = hide_password_values(&out) {
        out = Cow::Owned(hidden);
    }
    out
}

/// Replaces the default panic message (which would print whatever the panic carries) with a
/// scrubbed one. A panic is a bug; its message may still quote a value that holds a secret.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(no message)".to_owned());
        let at = info.location().map(|l| format!(" at {}:{}", l.file(), l.line())).unwrap_or_default();
        eprintln!("preflight: internal error (a bug, please report it){at}: {}", scrub(&message));
    }));
}

/// Ends a token that could hold a URL: whitespace, quotes and brackets that logs and messages
/// put around values.
fn ends_token(c: char) -> bool {
    c.is_whitespace() || matches!(c, '"' | '\'' | '`' | '<' | '>' | '(' | ')' | '[' | ']' | '{' | '}' | ',')
}

/// Replaces `[start, end)` ranges of `text` with the mask.
fn mask_ranges(text: &str, ranges: &[(usize, usize)]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for &(start, end) in ranges {
        out.push_str(&text[last..start]);
        out.push_str(MASK);
        last = end;
    }
    out.push_str(&text[last..]);
    out
}

/// `scheme:` `//`? `user:PASSWORD@…`: the password is between the first `:` of the user info
/// and the last `@` of the token (a password may hold an unencoded `@` or `/` in a URL that a
/// parser refused; hiding too much is the safe side).
fn hide_url_passwords(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut ranges = Vec::new();
    let mut i = 0;
    while let Some(colon) = text[i..].find(':').map(|k| i + k) {
        i = colon + 1;
        // A scheme: a letter then letters, digits, `+`, `-`, `.`, at the start of a token.
        let scheme_start = text[..colon]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
            .map_or(0, |k| k + 1);
        if scheme_start == colon || !bytes[scheme_start].is_ascii_alphabetic() {
            continue;
        }
        let mut start = colon + 1;
        while start < text.len() && start < colon + 3 && bytes[start] == b'/' {
            start += 1;
        }
        let end = text[start..].find(ends_token).map_or(text.len(), |k| start + k);
        let token = &text[start..end];
        let (Some(at), Some(sep)) = (token.rfind('@'), token.find(':')) else { continue };
        // Masked whole even when part of it already is (a registered value inside it).
        if sep < at && at > sep + 1 && &token[sep + 1..at] != MASK {
            ranges.push((start + sep + 1, start + at));
        }
        i = end.max(i);
    }
    (!ranges.is_empty()).then(|| mask_ranges(text, &ranges))
}

/// Whether a key names a password: `password`, `PGPASSWORD`, `db_passwd`, `pwd`, `pass`.
pub fn is_password_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    key.contains("password")
        || key.contains("passwd")
        || key == "pwd"
        || key == "pass"
        || key.ends_with("_pass")
}

/// `KEY=VALUE` where KEY names a password: the value, up to `&`, `;` or the end of the token.
fn hide_password_values(text: &str) -> Option<String> {
    let mut ranges = Vec::new();
    let mut i = 0;
    while let Some(eq) = text[i..].find('=').map(|k| i + k) {
        i = eq + 1;
        let key_start = text[..eq]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
            .map_or(0, |k| k + 1);
        if !is_password_key(&text[key_start..eq]) {
            continue;
        }
        // A quoted value (`password="a b"`, or `password=\"…\"` inside a JSON string) ends
        // at its closing quote only.
        let quote = ["\\\"", "\"", "'"].into_iter().find(|q| text[eq + 1..].starts_with(q));
        let start = eq + 1 + quote.map_or(0, str::len);
        let end = match quote {
            Some(q) => text[start..].find(q).map_or(text.len(), |k| start + k),
            // A password may hold a comma or a bracket: only a blank, a quote or a separator
            // of query parameters ends it.
            None => text[start..]
                .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '`' | '&' | ';'))
                .map_or(text.len(), |k| start + k),
        };
        if end > start && &text[start..end] != MASK {
            ranges.push((start, end));
        }
        i = end.max(i);
    }
    (!ranges.is_empty()).then(|| mask_ranges(text, &ranges))
}

/// Hides `secret` where it occurs: anywhere when it is long, as a whole token when short.
fn hide_value(text: &str, secret: &str) -> Option<String> {
    let whole_token_only = secret.chars().count() < LONG;
    let is_word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric());
    let mut ranges = Vec::new();
    let mut i = 0;
    while let Some(k) = text[i..].find(secret).map(|k| i + k) {
        let end = k + secret.len();
        let bounded = !is_word(text[..k].chars().next_back()) && !is_word(text[end..].chars().next());
        if !whole_token_only || bounded {
            ranges.push((k, end));
            i = end;
        } else {
            i = k + secret.chars().next().map_or(1, char::len_utf8);
        }
    }
    (!ranges.is_empty()).then(|| mask_ranges(text, &ranges))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_passwords_are_hidden_by_shape_even_in_malformed_urls() {
        for (text, want) in [
            ("postgres://u:PW@db:5432/app", "postgres://u:***@db:5432/app"),
            ("bad URL 'postgres:/u:PW@host/db': no host", "bad URL 'postgres:/u:***@host/db': no host"),
            ("postgres:u:PW@host", "postgres:u:***@host"),
            ("mysql://u:p@ss/w@rd@h/db?x=1", "mysql://u:***@h/db?x=1"),
            ("https://u:PW@example.com/x", "https://u:***@example.com/x"),
            (r#"{"target":"postgres://u:PW@h/d"}"#, r#"{"target":"postgres://u:***@h/d"}"#),
            ("-- app postgres://u:PW@db/app --flag", "-- app postgres://u:***@db/app --flag"),
        ] {
            assert_eq!(scrub(text), want, "{text}");
        }
        // Not URLs: a plain `key: value` and an address with no password.
        for text in ["error: connecting to app@host failed", "postgres://app@db/app", "at 12:30:45 UTC"] {
            assert_eq!(scrub(text), text);
        }
    }

    #[test]
    fn raw_values_register_passwords_by_structure() {
        // A comma, a quote and brackets inside a password, in URLs a parser refuses, in a flag's
        // `=` form and among comma-separated targets.
        register_from_raw([
            "--database-url=postgres:/u:Pa,ss')]w1@h/db",
            "tcp://a:1,http://u:S3c,r3t9@h/x",
            "mysql:u:Q(u)ote\"d9@h",
        ]);
        for (text, tail) in [
            ("bad URL 'postgres:/u:Pa,ss')]w1@h/db': no host", "ss')]w1"),
            ("unexpected 'S3c,r3t9'", "r3t9"),
            ("as JSON \"Q(u)ote\\\"d9\"", "ote"),
            ("encoded S3c%2cr3t9 in lower case", "r3t9"),
        ] {
            let out = scrub(text);
            assert!(out.contains(MASK) && !out.contains(tail), "{text} -> {out}");
        }
    }

    #[test]
    fn quoted_password_values_are_hidden_whole() {
        for (text, want) in [
            (r#"password="a b c" next"#, r#"password="***" next"#),
            ("PASSWORD='x y'", "PASSWORD='***'"),
            (r#"{"msg":"password=\"q r\" rest"}"#, r#"{"msg":"password=\"***\" rest"}"#),
        ] {
            assert_eq!(scrub(text), want, "{text}");
        }
    }

    #[test]
    fn password_keys_hide_their_values_in_any_case() {
        for (text, want) in [
            ("?sslmode=require&PASSWORD=PW&x=1", "?sslmode=require&PASSWORD=***&x=1"),
            ("PGPASSWORD=PW pg_dump", "PGPASSWORD=*** pg_dump"),
            ("host=/run password=PW dbname=app", "host=/run password=*** dbname=app"),
            ("pwd=PW;", "pwd=***;"),
        ] {
            assert_eq!(scrub(text), want, "{text}");
        }
        assert_eq!(scrub("passage=ok compass=ok"), "passage=ok compass=ok");
    }

    #[test]
    fn registered_values_are_hidden_short_ones_only_as_tokens() {
        register("Zq9-long-secret");
        register("p");
        assert_eq!(scrub("auth failed: Zq9-long-secretX"), "auth failed: ***X");
        assert_eq!(scrub("postgres said p is wrong"), "postgres said *** is wrong");
        assert_eq!(scrub("Zq9%2Dlong%2Dsecret"), "***");
        register("quo\"te\\");
        assert_eq!(scrub(r#"{"v":"quo\"te\\"}"#), r#"{"v":"***"}"#);
    }
}
