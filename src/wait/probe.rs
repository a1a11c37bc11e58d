//! One attempt against one target: resolve, connect, and prove the dependency is usable.
//!
//! "Usable" is the strongest cheap check each kind allows: a TCP handshake for `tcp://`, a 2xx
//! answer for `http://`, a real login plus `SELECT 1` for a database, and for SQLite a writable
//! directory (a mounted volume) and a file that opens.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use http_body_util::Empty;
use hyper::body::Bytes;
use sqlx::{ConnectOptions, Connection};
use tokio::net::TcpStream;
use url::Url;

use super::classify::{Class, Failure, classify_io, classify_sqlx, describe_sqlx};
use super::connect::{host_string, race, resolve};
use crate::target::{Endpoint, Redactor, Target, TargetKind};

/// Runs one attempt. On success, says where the dependency answered (an address or a path).
pub async fn attempt(target: &Target, stagger: Duration) -> Result<String, Failure> {
    let redactor = &target.redactor;
    match &target.kind {
        TargetKind::Tcp { host, port } => {
            let addrs = resolve(host, *port).await?;
            let (addr, _stream) = race(addrs, stagger, |addr| async move {
                TcpStream::connect(addr).await.map_err(|e| io_failure(&e))
            })
            .await?;
            Ok(addr.to_string())
        }
        TargetKind::Http { url, host, port } => {
            let addrs = resolve(host, *port).await?;
            let url = url.clone();
            let (addr, ()) = race(addrs, stagger, |addr| http_get(addr, url.clone())).await?;
            Ok(addr.to_string())
        }
        TargetKind::Postgres { endpoint, options } => {
            let options = options.clone().disable_statement_logging();
            match endpoint {
                Endpoint::Unix(dir) => {
                    login::<sqlx::PgConnection>(options.socket(dir), redactor.clone()).await?;
                    Ok(dir.display().to_string())
                }
                Endpoint::Tcp {
                    host,
                    port,
                    verify_name,
                } => {
                    let addrs = resolve(host, *port).await?;
                    if *verify_name {
                        // TLS must check the certificate against the name, so the driver connects
                        // by name; we resolved only to tell "no such name yet" from the rest.
                        login::<sqlx::PgConnection>(options, redactor.clone()).await?;
                        return Ok(format!("{host}:{port}"));
                    }
                    let (addr, ()) = race(addrs, stagger, |addr| {
                        let opts = options.clone().host(&host_string(&addr)).port(addr.port());
                        login::<sqlx::PgConnection>(opts, redactor.clone())
                    })
                    .await?;
                    Ok(addr.to_string())
                }
            }
        }
        TargetKind::MySql { endpoint, options } => {
            let options = options.clone().disable_statement_logging();
            match endpoint {
                Endpoint::Unix(path) => {
                    login::<sqlx::MySqlConnection>(options.socket(path), redactor.clone()).await?;
                    Ok(path.display().to_string())
                }
                Endpoint::Tcp {
                    host,
                    port,
                    verify_name,
                } => {
                    let addrs = resolve(host, *port).await?;
                    if *verify_name {
                        login::<sqlx::MySqlConnection>(options, redactor.clone()).await?;
                        return Ok(format!("{host}:{port}"));
                    }
                    let (addr, ()) = race(addrs, stagger, |addr| {
                        let opts = options.clone().host(&host_string(&addr)).port(addr.port());
                        login::<sqlx::MySqlConnection>(opts, redactor.clone())
                    })
                    .await?;
                    Ok(addr.to_string())
                }
            }
        }
        TargetKind::Sqlite {
            options,
            path,
            writable,
        } => {
            if let Some(path) = path {
                check_directory(path, *writable)?;
            }
            let options = (**options).clone().disable_statement_logging();
            login::<sqlx::SqliteConnection>(options, redactor.clone()).await?;
            Ok(path
                .as_ref()
                .map_or_else(|| ":memory:".into(), |p| p.display().to_string()))
        }
    }
}

/// Logs in and runs `SELECT 1`, then closes the connection politely.
async fn login<C>(options: C::Options, redactor: Redactor) -> Result<(), Failure>
where
    C: Connection,
    for<'c> &'c mut C: sqlx::Executor<'c, Database = C::Database>,
{
    let fail =
        |e: sqlx::Error| Failure::new(classify_sqlx(&e), redactor.redact(&describe_sqlx(&e)));
    let mut conn = C::connect_with(&options).await.map_err(fail)?;
    sqlx::raw_sql("SELECT 1")
        .execute(&mut conn)
        .await
        .map_err(fail)?;
    // A failed goodbye does not make the database less ready.
    let _ = conn.close().await;
    Ok(())
}

fn io_failure(e: &std::io::Error) -> Failure {
    Failure::new(classify_io(e), e.to_string())
}

async fn http_get(addr: SocketAddr, url: Url) -> Result<(), Failure> {
    let stream = TcpStream::connect(addr).await.map_err(|e| io_failure(&e))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| Failure::new(Class::Network, e.to_string()))?;
    let authority = match url.port() {
        Some(port) => format!("{}:{port}", url.host_str().unwrap_or_default()),
        None => url.host_str().unwrap_or_default().to_owned(),
    };
    let path = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_owned(),
    };
    let request = hyper::Request::get(path)
        .header(hyper::header::HOST, authority)
        .header(
            hyper::header::USER_AGENT,
            concat!("preflight/", env!("CARGO_PKG_VERSION")),
        )
        .body(Empty::<Bytes>::new())
        .map_err(|e| {
            Failure::new(
                Class::Permanent(super::classify::Permanent::Other),
                e.to_string(),
            )
        })?;
    // The connection future does the I/O; it can finish (the server said `connection: close`)
    // just before the response is picked up, so finishing cleanly is not a failure.
    tokio::pin!(conn);
    let send = sender.send_request(request);
    tokio::pin!(send);
    let response = tokio::select! {
        r = &mut send => r,
        r = &mut conn => match r {
            Ok(()) => send.await,
            Err(e) => return Err(Failure::new(Class::Network, e.to_string())),
        },
    }
    .map_err(|e| Failure::new(Class::Network, e.to_string()))?;
    let status = response.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(Failure::new(Class::NotReady, format!("HTTP {status}")))
    }
}

/// A database file on a volume: the directory must exist (the volume is mounted) and, unless
/// the URL asked for read-only, be writable by us, or SQLite cannot create its journal.
fn check_directory(path: &Path, writable: bool) -> Result<(), Failure> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        return Err(Failure::new(
            Class::NotReady,
            format!(
                "directory {} does not exist (is the volume mounted?)",
                dir.display()
            ),
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
