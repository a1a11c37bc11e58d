//! What preflight waits for, parsed and validated once, up front.
//!
//! A database URL carries a password, so it never leaves this module as a plain string: the
//! parsed [`Target`] keeps the secret inside sqlx's connect options (which are never printed) and
//! exposes only a redacted display name. Its passwords are registered with `crate::redact`,
//! which scrubs them out of any output that might echo them back (a driver's error message,
//! say), as a second line of defence.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;

use sqlx::mysql::MySqlConnectOptions;
use sqlx::postgres::PgConnectOptions;
use sqlx::sqlite::SqliteConnectOptions;
use url::Url;

// Query parameters that carry a password (libpq's `password=`, and the like).
use crate::redact::is_password_key as is_secret_param;

/// A host as written by the user. Names are resolved afresh on every attempt; literals are not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    Name(String),
    /// An IP literal, with the zone of a link-local IPv6 address (`[fe80::1%eth0]`) kept as
    /// written: the interface may not exist yet, so its index is looked up at each attempt.
    Ip(IpAddr, Option<String>),
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Name(name) => f.write_str(name),
            Host::Ip(IpAddr::V6(ip), Some(zone)) => write!(f, "[{ip}%{zone}]"),
            Host::Ip(IpAddr::V6(ip), None) => write!(f, "[{ip}]"),
            Host::Ip(ip, _) => write!(f, "{ip}"),
        }
    }
}

/// Where a network database listens.
#[derive(Debug, Clone)]
pub enum Endpoint {
    Tcp {
        host: Host,
        port: u16,
        /// The TLS mode checks the certificate against the host name (`verify-full`,
        /// `VERIFY_IDENTITY`), so the driver must be given the name rather than the address we
        /// resolved: the connection then goes through the driver's own resolver.
        verify_name: bool,
    },
    /// A PostgreSQL unix-socket directory (`?host=/run/postgresql`).
    Unix(PathBuf),
}

/// One dependency to wait for.
#[derive(Clone)]
pub struct Target {
    /// The redacted form shown in logs and errors, e.g. `postgres://app:***@db:5432/app`.
    pub name: String,
    pub kind: TargetKind,
    /// The URL as the user wrote it, password included: only ever handed to the commands preflight
    /// runs (as their `DATABASE_URL`), never printed.
    pub url: SecretUrl,
}

/// A URL that may hold a password. Its `Debug` prints nothing of it, and it has no `Display`.
#[derive(Clone, Default)]
pub struct SecretUrl(String);

impl SecretUrl {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretUrl(***)")
    }
}

#[derive(Clone)]
pub enum TargetKind {
    Tcp {
        host: Host,
        port: u16,
    },
    /// `http://` or `https://`: a `GET` judged by `check` (status, body, TLS settings).
    Http {
        url: Url,
        host: Host,
        port: u16,
        check: crate::http::Check,
    },
    Postgres {
        endpoint: Endpoint,
        options: Box<PgConnectOptions>,
    },
    MySql {
        endpoint: Endpoint,
        options: Box<MySqlConnectOptions>,
    },
    /// `redis://[user:password@]host[:port][/db]`: ready when it logs in and answers PING.
    /// `rediss://` is the same over TLS (`tls`, from the URL's `ca=` / `insecure=`).
    Redis {
        host: Host,
        port: u16,
        user: Option<String>,
        password: Option<String>,
        db: u32,
        tls: Option<std::sync::Arc<tokio_rustls::rustls::ClientConfig>>,
    },
    /// `unix:///run/app.sock`: ready when a connection is accepted.
    Unix {
        path: PathBuf,
    },
    /// `file:///shared/ready`: ready when the path exists (a file another container writes).
    File {
        path: PathBuf,
    },
    Sqlite {
        options: Box<SqliteConnectOptions>,
        /// `None` for `:memory:`.
        path: Option<PathBuf>,
        /// False when the URL asked for `mode=ro`: then the directory need not be writable.
        writable: bool,
    },
}

// Hand-written so that a `{:?}` anywhere up the stack can never print connect options, which
// hold the password.
impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Target").field("name", &self.name).finish_non_exhaustive()
    }
}

impl Target {
    /// The URL as SQLAlchemy should be given it: as written, except that a SQLite file is spelled
    /// the way SQLAlchemy reads paths (`sqlite:////abs/app.db`, `sqlite:///rel.db`, the `+driver`
    /// kept), naming the very file preflight opened, whichever convention the URL was written in.
    pub fn sqlalchemy_url(&self) -> String {
        match &self.kind {
            TargetKind::Sqlite { path, .. } => {
                let raw = self.url.expose();
                let scheme = raw.split_once(':').map_or("sqlite", |(s, _)| s);
                match path {
                    Some(p) => format!("{scheme}:///{}", p.display()),
                    None => format!("{scheme}://"),
                }
            }
            _ => self.url.expose().to_owned(),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

/// Why a target string was rejected. The message names the problem and the fix; it never
/// contains the password.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TargetError(pub String);

const SCHEMES: &str = "postgres://, postgresql://, mysql://, mariadb:// or sqlite:";

/// Parses a database URL (`--database-url`, `DATABASE_URL`, or a database `--wait-for`).
pub fn parse_database_url(raw: &str) -> Result<Target, TargetError> {
    let raw = raw.trim();
    let (scheme, rest) = raw
        .split_once(':')
        .ok_or_else(|| TargetError(format!("database URL has no scheme: start it with {SCHEMES}")))?;
    // SQLAlchemy spells the driver into the scheme (`postgresql+psycopg2://`); Alembic projects
    // share one DATABASE_URL with preflight, so accept and ignore the driver.
    let (base, driver) = match scheme.split_once('+') {
        Some((base, driver)) => (base.to_ascii_lowercase(), Some(driver)),
        None => (scheme.to_ascii_lowercase(), None),
    };
    let mut target = match base.as_str() {
        "postgres" | "postgresql" => parse_network_db("postgres", rest),
        "mysql" | "mariadb" => parse_network_db("mysql", rest),
        "sqlite" => parse_sqlite(raw, rest, driver.is_some()),
        _ => Err(TargetError(format!("unsupported database URL scheme '{scheme}': use {SCHEMES}"))),
    }?;
    target.url = SecretUrl(raw.to_owned());
    Ok(target)
}

/// Parses a `--wait-for` target: `tcp://host:port`, `http://…`, or a database URL.
pub fn parse_wait_for(raw: &str) -> Result<Target, TargetError> {
    let raw = raw.trim();
    let lower = raw.to_ascii_lowercase();
    if let Some(rest) = lower.strip_prefix("tcp://").map(|_| &raw["tcp://".len()..]) {
        let (url, zone) = parse_url_with_zone(&format!("tcp://{rest}"))?;
        if !url.username().is_empty() || url.password().is_some() || url.path().len() > 1 {
            return Err(TargetError(format!(
                "tcp target '{}' takes only host:port, like tcp://db:5432",
                redacted_url(&url)
            )));
        }
        let host = url_host(&url, zone)?;
        let port = url.port().ok_or_else(|| {
            TargetError(format!("tcp target '{raw}' has no port: write it as tcp://HOST:PORT"))
        })?;
        let name = format!("tcp://{}:{port}", host);
        return Ok(Target { name, kind: TargetKind::Tcp { host, port }, url: SecretUrl(raw.to_owned()) });
    }
    if lower.starts_with("http://") || lower.starts_with("https://") {
        let (mut url, zone) = parse_url_with_zone(raw)?;
        register_secrets(&url);
        let name = redacted_url(&url);
        let host = url_host(&url, zone)?;
        let port = url.port_or_known_default().unwrap_or(80);
        let check =
            crate::http::Check::from_url(&mut url).map_err(|e| TargetError(format!("{name}: {e}")))?;
        return Ok(Target {
            name,
            kind: TargetKind::Http { url, host, port, check },
            url: SecretUrl(raw.to_owned()),
        });
    }
    if lower.starts_with("redis://") || lower.starts_with("rediss://") {
        let (mut url, zone) = parse_url_with_zone(raw)?;
        register_secrets(&url);
        let tls = match url.scheme() {
            "rediss" => Some(
                crate::http::tls_from_url(&mut url)
                    .map_err(|e| TargetError(format!("{}: {e}", redacted_url(&url))))?,
            ),
            _ => None,
        };
        let host = url_host(&url, zone)?;
        let port = url.port().unwrap_or(6379);
        let decode = |s: &str| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned();
        let user = Some(decode(url.username())).filter(|u| !u.is_empty());
        let password = url.password().map(decode);
        let db = match url.path().trim_start_matches('/') {
            "" => 0,
            n => n.parse().map_err(|_| {
                TargetError(format!(
                    "redis target '{}': the path is the database number (redis://HOST:6379/0)",
                    redacted_url(&url)
                ))
            })?,
        };
        if user.is_some() && password.is_none() {
            return Err(TargetError(format!(
                "redis target '{}' names a user without a password: write redis://USER:PASSWORD@HOST, or \
                 redis://:PASSWORD@HOST without ACL users",
                redacted_url(&url)
            )));
        }
        let name = redacted_url(&url);
        return Ok(Target {
            name,
            kind: TargetKind::Redis { host, port, user, password, db, tls },
            url: SecretUrl(raw.to_owned()),
        });
    }
    for (scheme, unix) in [("unix://", true), ("file://", false)] {
        if lower.starts_with(scheme) {
            let path = &raw[scheme.len()..];
            if !path.starts_with('/') || path.len() < 2 {
                return Err(TargetError(format!(
                    "'{raw}' needs an absolute path after {scheme}: write {scheme}/path/to/{}",
                    if unix { "app.sock" } else { "file" }
                )));
            }
            let path = PathBuf::from(path);
            let kind = if unix { TargetKind::Unix { path } } else { TargetKind::File { path } };
            return Ok(Target { name: raw.to_owned(), kind, url: SecretUrl(raw.to_owned()) });
        }
    }
    parse_database_url(raw).map_err(|e| {
        if is_host_port(raw) {
            // wait-for-it's and dockerize's habit.
            return TargetError(format!("'{raw}' has no scheme: for a port, write tcp://{raw}"));
        }
        let scheme = raw.split_once(':').map(|(s, _)| s.to_ascii_lowercase());
        match scheme.as_deref() {
            Some("postgres" | "postgresql" | "mysql" | "mariadb" | "sqlite") => e,
            Some(scheme) if raw.contains("://") => {
                TargetError(format!("unsupported scheme '{scheme}': a target is {WAIT_FOR_SCHEMES}"))
            }
            _ => TargetError(format!("'{raw}' is not a URL: a target is {WAIT_FOR_SCHEMES}")),
        }
    })
}

const WAIT_FOR_SCHEMES: &str = "tcp://HOST:PORT, http(s)://HOST[:PORT]/PATH, redis(s)://[USER:PASSWORD@]HOST[:PORT][/DB], unix:///PATH (a socket), file:///PATH (exists), or a database URL (postgres://, postgresql://, mysql://, \
     mariadb:// or sqlite:)";

/// `db:5432`, `10.0.0.5:6379`, `[::1]:5432`: a host and a port, without a scheme.
fn is_host_port(raw: &str) -> bool {
    let Some((host, port)) = raw.rsplit_once(':') else { return false };
    let host_ok = if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        inner.parse::<std::net::Ipv6Addr>().is_ok()
    } else {
        !host.is_empty()
            && host.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_')
    };
    host_ok && !port.is_empty() && port.len() <= 5 && port.chars().all(|c| c.is_ascii_digit())
}

fn parse_network_db(scheme: &'static str, rest: &str) -> Result<Target, TargetError> {
    // Normalize the scheme to the one sqlx expects; the rest is passed through untouched.
    let mut normalized = format!("{scheme}:{rest}");
    // libpq's `postgres://user:pw@/db?host=/run/postgresql`: a user, no host, a socket. The URL
    // parser refuses an empty host after user info; the socket parameter decides anyway.
    let socket_key = if scheme == "postgres" { "host=/" } else { "socket=" };
    if let Some(at) = normalized.find("@/").or_else(|| normalized.find("@?")) {
        if normalized[at..].to_ascii_lowercase().contains(socket_key) {
            normalized.insert_str(at + 1, "localhost");
        } else if normalized.starts_with(&format!("{scheme}://")) {
            return Err(TargetError(format!(
                "the database URL has no host after its user: write {scheme}://USER:PASSWORD@HOST:PORT/DB{}",
                if scheme == "postgres" { ", or add ?host=/run/postgresql for a unix socket" } else { "" }
            )));
        }
    }
    let (url, zone) = parse_url_with_zone(&normalized)?;
    register_secrets(&url);
    let name = redacted_url(&url);
    let plain = strip_zone(&normalized);

    let param =
        |key: &str| url.query_pairs().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v.into_owned());
    let tls_mode = param(if scheme == "postgres" { "sslmode" } else { "ssl-mode" })
        .unwrap_or_default()
        .to_ascii_lowercase();
    let verify_name = matches!(tls_mode.as_str(), "verify-full" | "verify_identity");

    let socket = match scheme {
        "postgres" => param("host").filter(|h| h.starts_with('/')),
        _ => param("socket"),
    };
    let endpoint = match (url.host(), socket) {
        (_, Some(path)) => Endpoint::Unix(PathBuf::from(path)),
        (None, _) => {
            return Err(TargetError(format!(
                "database URL '{name}' has no host: write {scheme}://USER:PASSWORD@HOST:PORT/DB"
            )));
        }
        (Some(_), _) => Endpoint::Tcp {
            host: url_host(&url, zone)?,
            port: url.port().unwrap_or(if scheme == "postgres" { 5432 } else { 3306 }),
            verify_name,
        },
    };

    let sqlx_error = |e: sqlx::Error| {
        TargetError(
            crate::redact::scrub(&format!(
                "invalid database URL '{name}': {e}: see the driver's URL parameters"
            ))
            .into_owned(),
        )
    };
    let kind = if scheme == "postgres" {
        let options = PgConnectOptions::from_str(&plain).map_err(sqlx_error)?;
        let options = options.application_name(&application_name());
        TargetKind::Postgres { endpoint, options: Box::new(options) }
    } else {
        let options = MySqlConnectOptions::from_str(&plain).map_err(sqlx_error)?;
        TargetKind::MySql { endpoint, options: Box::new(options) }
    };
    Ok(Target { name, kind, url: SecretUrl::default() })
}

fn parse_sqlite(raw: &str, rest: &str, sqlalchemy: bool) -> Result<Target, TargetError> {
    // SQLAlchemy's `sqlite:///rel.db` is relative and `sqlite:////abs.db` absolute; sqlx reads
    // `sqlite:///abs.db` as absolute. A `+driver` scheme tells us which convention is meant.
    // Four slashes are absolute in both conventions: `sqlite:////data/app.db` is `/data/app.db`.
    let rest = if sqlalchemy {
        rest.strip_prefix("///").unwrap_or(rest)
    } else if rest.starts_with("////") {
        &rest[3..]
    } else {
        rest.strip_prefix("//").unwrap_or(rest)
    };
    let (path_part, query) = match rest.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (rest, None),
    };
    if path_part.is_empty() {
        return Err(TargetError("sqlite URL has no file: write sqlite:PATH, e.g. sqlite:data/app.db".into()));
    }
    let memory = path_part == ":memory:";
    let sqlx_url = match query {
        Some(q) => format!("sqlite:{path_part}?{q}"),
        None => format!("sqlite:{path_part}"),
    };
    let mut options = SqliteConnectOptions::from_str(&sqlx_url)
        .map_err(|e| TargetError(format!("invalid sqlite URL '{raw}': {e}")))?;
    // Create the file unless the URL chose a mode itself: the migration phase creates it anyway,
    // and a volume that is mounted but empty is the normal first boot.
    let explicit_mode = query.is_some_and(|q| q.split('&').any(|kv| kv.starts_with("mode=")));
    if !explicit_mode {
        options = options.create_if_missing(true);
    }
    let path = (!memory).then(|| options.get_filename().to_path_buf());
    let writable = !query.is_some_and(|q| q.split('&').any(|kv| kv == "mode=ro"));
    Ok(Target {
        name: raw.to_owned(),
        kind: TargetKind::Sqlite { options: Box::new(options), path, writable },
        url: SecretUrl::default(),
    })
}

/// `url` cannot parse an IPv6 zone (`[fe80::1%eth0]`, or RFC 6874's `%25eth0`), so the zone is
/// cut out before parsing and handed back separately.
fn parse_url_with_zone(raw: &str) -> Result<(Url, Option<String>), TargetError> {
    let zone = extract_zone(raw);
    let plain = strip_zone(raw);
    let url = Url::parse(&plain).map_err(|e| {
        // The url crate's messages never echo the input, so this cannot leak a password.
        TargetError(format!(
            "malformed URL ({e}): check its syntax; IPv6 literals go in brackets, like [::1]:5432"
        ))
    })?;
    Ok((url, zone))
}

fn zone_span(raw: &str) -> Option<(usize, usize)> {
    let open = raw.find('[')?;
    let close = open + raw[open..].find(']')?;
    let pct = open + raw[open..close].find('%')?;
    Some((pct, close))
}

fn extract_zone(raw: &str) -> Option<String> {
    let (pct, close) = zone_span(raw)?;
    let zone = &raw[pct + 1..close];
    let zone = zone.strip_prefix("25").filter(|z| !z.is_empty()).unwrap_or(zone);
    Some(zone.to_owned())
}

fn strip_zone(raw: &str) -> String {
    match zone_span(raw) {
        Some((pct, close)) => format!("{}{}", &raw[..pct], &raw[close..]),
        None => raw.to_owned(),
    }
}

fn url_host(url: &Url, zone: Option<String>) -> Result<Host, TargetError> {
    match url.host() {
        Some(url::Host::Domain(d)) => Ok(Host::Name(d.to_owned())),
        Some(url::Host::Ipv4(ip)) => Ok(Host::Ip(IpAddr::V4(ip), None)),
        Some(url::Host::Ipv6(ip)) => Ok(Host::Ip(IpAddr::V6(ip), zone)),
        None => {
            Err(TargetError(format!("URL '{}' has no host: write scheme://HOST:PORT", redacted_url(url))))
        }
    }
}

/// Registers the URL's passwords with [`crate::redact`], so that any output quoting one (a
/// driver's error message) is scrubbed of it.
fn register_secrets(url: &Url) {
    let mut secrets = Vec::new();
    if let Some(encoded) = url.password().filter(|p| !p.is_empty()) {
        if let Ok(decoded) = percent_encoding::percent_decode_str(encoded).decode_utf8() {
            secrets.push(decoded.into_owned());
        }
        secrets.push(encoded.to_owned());
    }
    for (key, value) in url.query_pairs() {
        if is_secret_param(&key) && !value.is_empty() {
            secrets.push(value.into_owned());
        }
    }
    if let Some(query) = url.query() {
        for pair in query.split('&') {
            if let Some((key, raw)) = pair.split_once('=')
                && is_secret_param(key)
                && !raw.is_empty()
            {
                secrets.push(raw.to_owned());
            }
        }
    }
    for secret in &secrets {
        crate::redact::register(secret);
    }
}

fn redacted_url(url: &Url) -> String {
    let mut shown = url.clone();
    if shown.password().is_some() {
        // Cannot fail: the URL already has a password, hence an authority.
        let _ = shown.set_password(Some("***"));
    }
    if url.query_pairs().any(|(k, _)| is_secret_param(&k)) {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| {
                let v = if is_secret_param(&k) { "***".to_owned() } else { v.into_owned() };
                (k.into_owned(), v)
            })
            .collect();
        shown.query_pairs_mut().clear().extend_pairs(pairs);
    }
    shown.to_string()
}

/// `preflight/<hostname>/<pid>`: lets an operator tell, from `pg_stat_activity`, which replica
/// holds a connection or a lock.
pub fn application_name() -> String {
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "unknown".into());
    format!("preflight/{host}/{}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(t: &Target) -> &Endpoint {
        match &t.kind {
            TargetKind::Postgres { endpoint, .. } | TargetKind::MySql { endpoint, .. } => endpoint,
            _ => panic!("not a network database: {t}"),
        }
    }

    #[test]
    fn password_is_redacted_in_name_and_debug() {
        let t = parse_database_url("postgres://app:hunter2@db:5432/app").unwrap();
        assert_eq!(t.name, "postgres://app:***@db:5432/app");
        assert!(!format!("{t:?}").contains("hunter2"));
        assert_eq!(crate::redact::scrub("auth failed for hunter2"), "auth failed for ***");
    }

    #[test]
    fn percent_encoded_password_is_redacted_in_both_forms() {
        parse_database_url("mysql://u:p%40ss%2Fw@db/x").unwrap();
        assert_eq!(crate::redact::scrub("p@ss/w and p%40ss%2Fw"), "*** and ***");
    }

    #[test]
    fn password_in_the_query_is_redacted_too() {
        let t = parse_database_url("postgres:///app?host=/run/pg&user=u&password=hunter%212").unwrap();
        assert!(!t.name.contains("hunter"), "{}", t.name);
        assert_eq!(crate::redact::scrub("x hunter!2 y hunter%212"), "x *** y ***");
        assert!(matches!(endpoint(&t), Endpoint::Unix(_)));
    }

    #[test]
    fn mysql_socket_parameter_is_an_endpoint() {
        let t = parse_database_url("mysql://u:p@localhost/app?socket=/run/mysqld/mysqld.sock").unwrap();
        assert!(matches!(endpoint(&t), Endpoint::Unix(p) if p.ends_with("mysqld.sock")));
    }

    #[test]
    fn ipv6_literal_with_zone_is_parsed() {
        for raw in ["postgres://u@[fe80::1%eth0]:5433/d", "postgres://u@[fe80::1%25eth0]:5433/d"] {
            let t = parse_database_url(raw).unwrap();
            match endpoint(&t) {
                Endpoint::Tcp { host: Host::Ip(ip, Some(zone)), port: 5433, .. } => {
                    assert_eq!(ip.to_string(), "fe80::1");
                    assert_eq!(zone, "eth0");
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn loopback_v6_and_default_ports() {
        let t = parse_database_url("postgresql://u:p@[::1]/d").unwrap();
        assert!(matches!(endpoint(&t), Endpoint::Tcp { port: 5432, .. }));
        let t = parse_database_url("mariadb://u:p@127.0.0.1/d").unwrap();
        assert!(matches!(endpoint(&t), Endpoint::Tcp { port: 3306, .. }));
    }

    #[test]
    fn sqlalchemy_driver_suffix_is_accepted() {
        let t = parse_database_url("postgresql+psycopg2://u:p@db/d").unwrap();
        assert!(matches!(t.kind, TargetKind::Postgres { .. }));
        let t = parse_database_url("mysql+pymysql://u:p@db/d").unwrap();
        assert!(matches!(t.kind, TargetKind::MySql { .. }));
    }

    #[test]
    fn unix_socket_host_is_an_endpoint() {
        let t = parse_database_url("postgres:///app?host=/run/postgresql").unwrap();
        assert!(matches!(endpoint(&t), Endpoint::Unix(p) if p == &PathBuf::from("/run/postgresql")));
    }

    #[test]
    fn verify_full_keeps_the_name_for_tls() {
        let t = parse_database_url("postgres://u:p@db/d?sslmode=verify-full").unwrap();
        assert!(matches!(endpoint(&t), Endpoint::Tcp { verify_name: true, .. }));
        let t = parse_database_url("mysql://u:p@db/d?ssl-mode=REQUIRED").unwrap();
        assert!(matches!(endpoint(&t), Endpoint::Tcp { verify_name: false, .. }));
    }

    #[test]
    fn sqlite_paths_follow_sqlx_and_sqlalchemy_conventions() {
        let path = |raw: &str| match parse_database_url(raw).unwrap().kind {
            TargetKind::Sqlite { path, .. } => path,
            _ => panic!(),
        };
        assert_eq!(path("sqlite:data/app.db"), Some(PathBuf::from("data/app.db")));
        assert_eq!(path("sqlite:///data/app.db"), Some(PathBuf::from("/data/app.db")));
        assert_eq!(path("sqlite+pysqlite:///rel.db"), Some(PathBuf::from("rel.db")));
        assert_eq!(path("sqlite+aiosqlite:////abs.db"), Some(PathBuf::from("/abs.db")));
        // Four slashes mean an absolute path whichever convention the writer had in mind.
        assert_eq!(path("sqlite:////abs/path.db"), Some(PathBuf::from("/abs/path.db")));
        assert_eq!(path("sqlite:////abs.db?mode=rwc"), Some(PathBuf::from("/abs.db")));
        assert_eq!(path("sqlite::memory:"), None);
    }

    #[test]
    fn bad_urls_name_the_problem_without_the_password() {
        for raw in [
            "redis://u:hunter2@db/0",
            "postgres://u:hunter2@[::1/d",
            "postgres://u:hunter2@db:99999/d",
            "nonsense",
        ] {
            let err = parse_database_url(raw).unwrap_err().to_string();
            assert!(!err.contains("hunter2"), "{err}");
            assert!(err.contains(':'), "{err}");
        }
    }

    #[test]
    fn wait_for_forms() {
        let t = parse_wait_for("tcp://[::1]:6379").unwrap();
        assert!(matches!(t.kind, TargetKind::Tcp { port: 6379, .. }));
        assert_eq!(t.name, "tcp://[::1]:6379");
        let t = parse_wait_for("http://api:8080/healthz").unwrap();
        assert!(matches!(t.kind, TargetKind::Http { port: 8080, .. }));
        assert!(parse_wait_for("tcp://db").is_err());
        assert!(parse_wait_for("db:5432").is_err());
        assert!(matches!(parse_wait_for("mysql://u@db/x").unwrap().kind, TargetKind::MySql { .. }));
    }

    #[test]
    fn a_user_without_a_host_takes_the_socket_parameter() {
        let t = parse_database_url("postgres://app:pw@/db?host=/run/postgresql").unwrap();
        assert!(
            matches!(&t.kind, TargetKind::Postgres { endpoint: Endpoint::Unix(p), .. } if p == std::path::Path::new("/run/postgresql"))
        );
        let e = parse_database_url("postgres://app:pw@/db").unwrap_err().to_string();
        assert!(
            e.contains("no host after its user") && e.contains("?host=/run/postgresql") && !e.contains("pw"),
            "{e}"
        );
        let e = parse_database_url("mysql://app:pw@/db").unwrap_err().to_string();
        assert!(e.contains("no host after its user"), "{e}");
    }

    #[test]
    fn common_mistakes_get_the_fix() {
        for bare in ["db:5432", "10.0.0.5:6379", "[::1]:5432", "my-db.internal:5432"] {
            let e = parse_wait_for(bare).unwrap_err().to_string();
            assert_eq!(e, format!("'{bare}' has no scheme: for a port, write tcp://{bare}"));
        }
        let e = parse_wait_for("amqp://queue:5672").unwrap_err().to_string();
        assert!(e.starts_with("unsupported scheme 'amqp': a target is tcp://HOST:PORT, http(s)://"), "{e}");
        assert!(e.contains("mariadb://") && e.contains("sqlite:"), "{e}");
        let e = parse_wait_for("cache").unwrap_err().to_string();
        assert!(e.starts_with("'cache' is not a URL: a target is tcp://"), "{e}");
        // A database URL's own problem is kept, not replaced by the list.
        let e = parse_wait_for("postgres://u@").unwrap_err().to_string();
        assert!(!e.contains("a target is"), "{e}");
    }
}
