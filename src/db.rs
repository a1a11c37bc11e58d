//! Connecting to a database target: the one place that turns a [`Target`] into a live
//! connection, for the wait phase's probe and the migration phase alike.
//!
//! A network database is reached by racing its freshly resolved addresses (see `net`), each racer
//! doing the whole login, so the first connection to succeed is the one we keep.

use std::time::Duration;

use sqlx::{ConnectOptions, Connection, MySqlConnection, PgConnection, SqliteConnection};

use crate::classify::{Class, Failure, classify_sqlx, describe_sqlx};
use crate::net::{host_string, race, resolve};
use crate::redact::scrub;
use crate::target::{Endpoint, Target, TargetKind};

/// A live connection to one of the supported databases.
pub enum DbConn {
    Pg(PgConnection),
    MySql(MySqlConnection),
    Sqlite(SqliteConnection),
}

impl DbConn {
    /// Closes the connection politely; a failed goodbye is of no consequence.
    pub async fn close(self) {
        let _ = match self {
            DbConn::Pg(c) => c.close().await,
            DbConn::MySql(c) => c.close().await,
            DbConn::Sqlite(c) => c.close().await,
        };
    }
}

/// Connects (and logs in) to a database target. Returns the connection and where it landed: an
/// address, a socket path or a file.
pub async fn connect(target: &Target, stagger: Duration) -> Result<(DbConn, String), Failure> {
    match &target.kind {
        TargetKind::Postgres { endpoint, options } => {
            let options = (**options).clone().disable_statement_logging();
            let (conn, at) = connect_network::<PgConnection, _>(
                endpoint,
                options,
                stagger,
                |o, addr| o.host(&host_string(&addr)).port(addr.port()),
                |o, path| o.socket(path),
            )
            .await?;
            Ok((DbConn::Pg(conn), at))
        }
        TargetKind::MySql { endpoint, options } => {
            let options = (**options).clone().disable_statement_logging();
            let (conn, at) = connect_network::<MySqlConnection, _>(
                endpoint,
                options,
                stagger,
                |o, addr| o.host(&host_string(&addr)).port(addr.port()),
                |o, path| o.socket(path),
            )
            .await?;
            Ok((DbConn::MySql(conn), at))
        }
        TargetKind::Sqlite { options, path, writable } => {
            if let Some(path) = path {
                check_directory(path, *writable)?;
            }
            let options = (**options).clone().disable_statement_logging();
            let conn = login::<SqliteConnection>(options).await?;
            let at = path.as_ref().map_or_else(|| ":memory:".into(), |p| p.display().to_string());
            Ok((DbConn::Sqlite(conn), at))
        }
        TargetKind::Tcp { .. }
        | TargetKind::Http { .. }
        | TargetKind::Redis { .. }
        | TargetKind::Unix { .. }
        | TargetKind::File { .. } => {
            Err(Failure::new(Class::Permanent(crate::classify::Permanent::Other), "not a database target"))
        }
    }
}

async fn connect_network<C, O>(
    endpoint: &Endpoint,
    options: O,
    stagger: Duration,
    at_addr: impl Fn(O, std::net::SocketAddr) -> O,
    at_socket: impl Fn(O, &std::path::Path) -> O,
) -> Result<(C, String), Failure>
where
    C: Connection<Options = O> + Send + 'static,
    O: Clone + Send + Sync + 'static,
{
    match endpoint {
        Endpoint::Unix(path) => {
            let conn = login::<C>(at_socket(options, path)).await?;
            Ok((conn, path.display().to_string()))
        }
        Endpoint::Tcp { host, port, verify_name } => {
            let addrs = resolve(host, *port).await?;
            if *verify_name {
                // TLS checks the certificate against the name, so the driver connects by name;
                // we resolved only to tell "no such name yet" from the rest.
                let conn = login::<C>(options).await?;
                return Ok((conn, format!("{host}:{port}")));
            }
            let (addr, conn) =
                race(addrs, stagger, |addr| login::<C>(at_addr(options.clone(), addr))).await?;
            Ok((conn, addr.to_string()))
        }
    }
}

/// Connects and logs in; the error is classified and scrubbed of secrets.
async fn login<C: Connection>(options: C::Options) -> Result<C, Failure> {
    C::connect_with(&options)
        .await
        .map_err(|e| Failure::new(classify_sqlx(&e), scrub(&describe_sqlx(&e)).into_owned()))
}

/// A database file on a volume: the directory must exist (the volume is mounted) and, unless
/// the URL asked for read-only, be writable by us, or SQLite cannot create its journal.
fn check_directory(path: &std::path::Path, writable: bool) -> Result<(), Failure> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => std::path::Path::new("."),
    };
    if !dir.is_dir() {
        return Err(Failure::new(
            Class::NotReady,
            format!("directory {} does not exist (is the volume mounted?)", dir.display()),
        ));
    }
    if writable && nix::unistd::access(dir, nix::unistd::AccessFlags::W_OK).is_err() {
        return Err(Failure::new(
            Class::NotReady,
            format!(
                "directory {} is not writable by uid {} (is the volume mounted with the right owner?)",
                dir.display(),
                nix::unistd::geteuid()
            ),
        ));
    }
    Ok(())
}
