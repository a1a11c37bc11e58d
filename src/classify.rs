//! Turns what went wrong in one attempt into a decision: try again, or stop and say why.
//!
//! Pure functions of an error value, so the table below is tested without a network. The codes
//! come from the servers' documentation and were checked against PostgreSQL 15 and MariaDB 10.11
//! starting up (see FIELD-NOTES).

use std::fmt;
use std::io;

/// How far an attempt got. Ordered: a later class means the dependency is closer to ready, which
/// is what lets the wait loop reset its backoff when it sees progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Class {
    /// The name did not resolve (NXDOMAIN, or a temporary DNS failure). In Kubernetes a Service
    /// name may not exist yet, so this is "not yet".
    Dns,
    /// Nothing answered usefully: refused, reset, unreachable, timed out, closed mid-handshake.
    Network,
    /// The server answered and said "not yet": starting up, shutting down, too many connections,
    /// an HTTP status other than 2xx.
    NotReady,
    /// The server answered with something waiting will not fix.
    Permanent(Permanent),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Permanent {
    /// Wrong password, no pg_hba entry, host not allowed. Retried with `--retry-login-errors`.
    Login,
    /// The database does not exist. Retried with `--retry-login-errors`.
    NoDatabase,
    /// TLS could not be set up as configured.
    Tls,
    /// The driver rejected the configuration, or the server's error is of no retryable kind.
    Other,
}

impl Class {
    pub fn is_permanent(self) -> bool {
        matches!(self, Class::Permanent(_))
    }

    /// Errors that `--retry-login-errors` turns back into "not yet": a user or database that
    /// another process creates after the server is up.
    pub fn is_login(self) -> bool {
        matches!(self, Class::Permanent(Permanent::Login | Permanent::NoDatabase))
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Class::Dns => "dns",
            Class::Network => "network",
            Class::NotReady => "not_ready",
            Class::Permanent(Permanent::Login) => "login",
            Class::Permanent(Permanent::NoDatabase) => "no_database",
            Class::Permanent(Permanent::Tls) => "tls",
            Class::Permanent(Permanent::Other) => "permanent",
        }
    }
}

impl fmt::Display for Class {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The outcome of one failed attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub class: Class,
    /// What happened, in the server's or the OS's words, already scrubbed of secrets.
    pub message: String,
}

impl Failure {
    pub fn new(class: Class, message: impl Into<String>) -> Self {
        Failure { class, message: message.into() }
    }

    /// What to do about a permanent failure, for the one-line error.
    pub fn hint(&self) -> &'static str {
        match self.class {
            Class::Permanent(Permanent::Login) => {
                "check the user and password in the URL and the server's access rules \
                 (pg_hba.conf, or the MySQL user's host); pass --retry-login-errors if the user \
                 is created after the server starts"
            }
            Class::Permanent(Permanent::NoDatabase) => {
                "create the database or fix its name in the URL; pass --retry-login-errors if it \
                 is created after the server starts"
            }
            Class::Permanent(Permanent::Tls) => {
                "check the server's certificate and the URL's TLS settings (sslmode= / ssl-mode= \
                 for a database, ca=PATH or insecure=1 for https://)"
            }
            _ => "check the URL and the server's logs",
        }
    }
}

/// PostgreSQL SQLSTATEs.
pub fn classify_sqlstate(code: &str) -> Class {
    match code {
        // cannot_connect_now (starting up, shutting down, recovery), admin_shutdown,
        // crash_shutdown, too_many_connections and the rest of class 53.
        "57P03" | "57P01" | "57P02" => Class::NotReady,
        c if c.starts_with("53") => Class::NotReady,
        // Connection exceptions: the link broke, not the login.
        c if c.starts_with("08") => Class::Network,
        "28P01" | "28000" => Class::Permanent(Permanent::Login),
        "3D000" => Class::Permanent(Permanent::NoDatabase),
        _ => Class::Permanent(Permanent::Other),
    }
}

/// MySQL/MariaDB server error numbers.
pub fn classify_mysql(number: u16) -> Class {
    match number {
        // ER_CON_COUNT_ERROR, ER_SERVER_SHUTDOWN, ER_TOO_MANY_USER_CONNECTIONS
        1040 | 1053 | 1203 => Class::NotReady,
        // Client-side codes, should a server or proxy relay them.
        2002 | 2003 | 2006 | 2013 => Class::Network,
        2005 => Class::Dns,
        // ER_ACCESS_DENIED, ER_DBACCESS_DENIED, ER_HOST_NOT_PRIVILEGED, ER_HOST_IS_BLOCKED
        1045 | 1044 | 1130 | 1129 => Class::Permanent(Permanent::Login),
        1049 => Class::Permanent(Permanent::NoDatabase),
        _ => Class::Permanent(Permanent::Other),
    }
}

/// SQLite primary result codes (the low byte of an extended code).
pub fn classify_sqlite(code: i32) -> Class {
    match code & 0xff {
        // BUSY, LOCKED, CANTOPEN (the volume is not mounted yet), READONLY, IOERR
        5 | 6 | 14 | 8 | 10 => Class::NotReady,
        _ => Class::Permanent(Permanent::Other),
    }
}

pub fn classify_io(err: &io::Error) -> Class {
    use io::ErrorKind::*;
    match err.kind() {
        ConnectionRefused | ConnectionReset | ConnectionAborted | TimedOut | NotConnected | BrokenPipe
        | UnexpectedEof | AddrNotAvailable | NotFound | HostUnreachable | NetworkUnreachable
        | NetworkDown | Interrupted | WouldBlock => Class::Network,
        _ if is_dns_error(err) => Class::Dns,
        _ => Class::Network,
    }
}

/// getaddrinfo failures reach us as `io::Error`s of kind `Other`/`Uncategorized` whose text
/// comes from `gai_strerror`; std prefixes them with this phrase.
pub fn is_dns_error(err: &io::Error) -> bool {
    err.to_string().contains("failed to lookup address")
}

pub fn classify_sqlx(err: &sqlx::Error) -> Class {
    match err {
        sqlx::Error::Io(io) => classify_io(io),
        sqlx::Error::Tls(_) => Class::Permanent(Permanent::Tls),
        sqlx::Error::Configuration(_) => Class::Permanent(Permanent::Other),
        sqlx::Error::Database(db) => {
            if let Some(my) = db.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>() {
                classify_mysql(my.number())
            } else if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
                let code = db.code().and_then(|c| c.parse().ok()).unwrap_or(0);
                classify_sqlite(code)
            } else {
                db.code().map_or(Class::Permanent(Permanent::Other), |c| classify_sqlstate(&c))
            }
        }
        // The server hung up mid-handshake, the pool or worker went away: all transient.
        _ => Class::Network,
    }
}

/// A one-line description of a driver error, with the SQLSTATE or MySQL number when there is
/// one, e.g. `password authentication failed for user "app" (SQLSTATE 28P01)`.
pub fn describe_sqlx(err: &sqlx::Error) -> String {
    match err {
        sqlx::Error::Database(db) => {
            if let Some(my) = db.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>() {
                format!("{} (MySQL error {})", my.message(), my.number())
            } else if let Some(code) = db.code() {
                format!("{} (SQLSTATE {code})", db.message())
            } else {
                db.message().to_owned()
            }
        }
        sqlx::Error::Io(io) => io.to_string(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_startup_codes_are_retried() {
        for code in ["57P03", "57P01", "53300", "08006"] {
            assert!(!classify_sqlstate(code).is_permanent(), "{code}");
        }
    }

    #[test]
    fn postgres_login_and_database_errors_fail_fast() {
        assert_eq!(classify_sqlstate("28P01"), Class::Permanent(Permanent::Login));
        assert_eq!(classify_sqlstate("28000"), Class::Permanent(Permanent::Login));
        assert_eq!(classify_sqlstate("3D000"), Class::Permanent(Permanent::NoDatabase));
        assert!(classify_sqlstate("42601").is_permanent());
    }

    #[test]
    fn mysql_codes() {
        for n in [1040, 1053, 2002, 2003, 2005, 2006, 2013] {
            assert!(!classify_mysql(n).is_permanent(), "{n}");
        }
        for n in [1045, 1044, 1130] {
            assert!(classify_mysql(n).is_login(), "{n}");
        }
        assert_eq!(classify_mysql(1049), Class::Permanent(Permanent::NoDatabase));
    }

    #[test]
    fn io_errors_are_transient() {
        use io::ErrorKind::*;
        for kind in [ConnectionRefused, ConnectionReset, TimedOut, UnexpectedEof] {
            assert_eq!(classify_io(&io::Error::from(kind)), Class::Network);
        }
        let dns = io::Error::other("failed to lookup address information: Name or service not known");
        assert_eq!(classify_io(&dns), Class::Dns);
    }

    #[test]
    fn classes_order_by_progress() {
        assert!(Class::Dns < Class::Network);
        assert!(Class::Network < Class::NotReady);
        assert!(Class::NotReady < Class::Permanent(Permanent::Login));
    }

    #[test]
    fn tls_is_permanent_but_not_a_login_error() {
        let c = classify_sqlx(&sqlx::Error::Tls("bad cert".into()));
        assert!(c.is_permanent() && !c.is_login());
    }
}
